//! A real `presence.v1.WatchAuthorizer` over gRPC on 127.0.0.1:0 that the test controls:
//! decisions per (viewer, user), a delay, wrong answers, failures, and a record of every
//! call (with its `authorization` metadata) so tests can count what the node asked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use presence_node::proto::watch_authorizer_server::{WatchAuthorizer, WatchAuthorizerServer};
use presence_node::proto::{CheckWatchRequest, CheckWatchResponse, Decision};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

/// One `CheckWatch` the node made.
#[derive(Debug, Clone)]
pub struct Call {
    pub viewer_id: String,
    pub user_ids: Vec<String>,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct Rules {
    decisions: HashMap<(String, String), Decision>,
    /// For pairs not in `decisions` [ALLOW].
    default: Option<Decision>,
    delay: Duration,
    /// Answer one decision too few.
    wrong_count: bool,
    /// Answer with an error status.
    failing: bool,
    calls: Vec<Call>,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Rules>>);

#[tonic::async_trait]
impl WatchAuthorizer for Shared {
    async fn check_watch(
        &self,
        request: Request<CheckWatchRequest>,
    ) -> Result<Response<CheckWatchResponse>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let req = request.into_inner();
        let (delay, answer) = {
            let mut rules = self.0.lock().unwrap();
            rules.calls.push(Call {
                viewer_id: req.viewer_id.clone(),
                user_ids: req.user_ids.clone(),
                authorization,
            });
            let mut decisions: Vec<i32> = req
                .user_ids
                .iter()
                .map(|u| {
                    let key = (req.viewer_id.clone(), u.clone());
                    rules
                        .decisions
                        .get(&key)
                        .copied()
                        .or(rules.default)
                        .unwrap_or(Decision::Allow) as i32
                })
                .collect();
            if rules.wrong_count {
                decisions.pop();
            }
            let answer = if rules.failing {
                Err(Status::internal("authorizer failing on purpose"))
            } else {
                Ok(Response::new(CheckWatchResponse { decisions }))
            };
            (rules.delay, answer)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        answer
    }
}

pub struct TestAuthorizer {
    pub addr: SocketAddr,
    shared: Shared,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestAuthorizer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let service = WatchAuthorizerServer::new(shared.clone());
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
        });
        Self {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn rules(&self) -> std::sync::MutexGuard<'_, Rules> {
        self.shared.0.lock().unwrap()
    }

    pub fn set(&self, viewer: &str, user: &str, decision: Decision) {
        self.rules()
            .decisions
            .insert((viewer.into(), user.into()), decision);
    }

    pub fn set_default(&self, decision: Decision) {
        self.rules().default = Some(decision);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.rules().delay = delay;
    }

    pub fn set_wrong_count(&self, on: bool) {
        self.rules().wrong_count = on;
    }

    pub fn set_failing(&self, on: bool) {
        self.rules().failing = on;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.rules().calls.clone()
    }

    pub fn call_count(&self) -> usize {
        self.rules().calls.len()
    }

    /// Stops serving (the port then refuses connections): an authorizer that is down.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Graceful: the server sends GOAWAY and closes its connections, so the node's
        // next call finds the port closed.
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(super::patience(), task).await;
        }
    }
}

impl Drop for TestAuthorizer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
