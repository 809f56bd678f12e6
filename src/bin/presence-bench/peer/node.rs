//! The presence-node side: one `Session` per user, on a connection of its own (or, for the
//! multiplexed memory figure, over a few shared connections). `Hello` ONLINE, `Subscribe` to
//! the followed users, snapshot received; changes with `SetStatus` on the user's own
//! session; heartbeats at the interval the `Welcome` asks for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use presence_node::client::{Credentials, Session, SessionReceiver, SessionSender};
use presence_node::proto::{server_frame, Hello, Status};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::workload::{user_id, user_index, Tally};
use super::Fleet;
use crate::common::{connect, unix_us, Progress};

const STATUSES: [Status; 3] = [Status::Online, Status::Away, Status::Busy];

pub struct NodeFleet {
    senders: Vec<Option<SessionSender>>,
    receivers: Vec<Option<JoinHandle<()>>>,
    closing: Arc<AtomicBool>,
    heartbeat_every: Duration,
    since: Instant,
    heartbeats: u64,
}

impl NodeFleet {
    /// Opens a session per user of `tally.graph` on the node at `url`: each on a connection
    /// of its own (`shared_connections` None) or spread over that many.
    pub async fn open(
        url: &str,
        shared_connections: Option<usize>,
        tally: Arc<Tally>,
        concurrency: usize,
    ) -> Result<Self, String> {
        let mut shared = Vec::new();
        for _ in 0..shared_connections.unwrap_or(0) {
            shared.push(connect(url).await.map_err(|e| e.to_string())?);
        }
        let closing = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(Semaphore::new(concurrency.max(1)));
        let n = tally.graph.len();
        let mut opening = Vec::with_capacity(n);
        for i in 0..n {
            let permit = gate.clone().acquire_owned().await.expect("semaphore");
            let channel = (!shared.is_empty()).then(|| shared[i % shared.len()].clone());
            let (tally, url) = (tally.clone(), url.to_string());
            opening.push(tokio::spawn(async move {
                let opened = open_session(i, &url, channel, &tally).await;
                drop(permit);
                opened
            }));
        }
        let mut fleet = Self {
            senders: Vec::with_capacity(n),
            receivers: Vec::with_capacity(n),
            closing,
            heartbeat_every: Duration::from_secs(10),
            since: Instant::now(),
            heartbeats: 0,
        };
        let mut progress = Progress::new(Duration::from_secs(2));
        for (i, task) in opening.into_iter().enumerate() {
            let (sender, receiver, interval) = task
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("session u{i}: {e}"))?;
            fleet.heartbeat_every = interval;
            fleet.senders.push(Some(sender));
            fleet.receivers.push(Some(tokio::spawn(receive(
                i,
                receiver,
                tally.clone(),
                fleet.closing.clone(),
            ))));
            progress.tick(|| format!("node: {} sessions open", i + 1));
        }
        // Every session heartbeats once now (the opening may have taken a while); the
        // round-robin of `tick` goes on from here.
        for sender in fleet.senders.iter_mut().flatten() {
            sender.heartbeat().await.map_err(|e| e.to_string())?;
        }
        fleet.since = Instant::now();
        Ok(fleet)
    }
}

async fn open_session(
    i: usize,
    url: &str,
    channel: Option<Channel>,
    tally: &Tally,
) -> Result<(SessionSender, SessionReceiver, Duration), String> {
    let channel = match channel {
        Some(c) => c,
        None => connect(url).await.map_err(|e| e.to_string())?,
    };
    let hello = Hello {
        device: "bench".into(),
        status: Some(Status::Online as i32),
        status_text: String::new(),
    };
    let setup = async {
        let (mut session, welcome) = Session::open(channel, &Credentials::User(user_id(i)), hello)
            .await
            .map_err(|e| e.to_string())?;
        let ids = tally.graph[i]
            .iter()
            .map(|u| user_id(*u as usize))
            .collect();
        let r = session.subscribe(ids).await.map_err(|e| e.to_string())?;
        loop {
            match session.recv().await {
                Ok(Some(frame)) => match frame.kind {
                    Some(server_frame::Kind::Snapshot(s)) if s.r#ref == r => break,
                    Some(server_frame::Kind::Error(e)) => {
                        return Err(format!("subscribe refused: {}", e.message))
                    }
                    _ => {}
                },
                Ok(None) => return Err("session ended before its snapshot".into()),
                Err(status) => return Err(status.to_string()),
            }
        }
        let (sender, receiver) = session.split();
        Ok((
            sender,
            receiver,
            crate::common::heartbeat_interval(&welcome),
        ))
    };
    tokio::time::timeout(Duration::from_secs(30), setup)
        .await
        .map_err(|_| "no snapshot within 30 s".to_string())?
}

async fn receive(
    i: usize,
    mut receiver: SessionReceiver,
    tally: Arc<Tally>,
    closing: Arc<AtomicBool>,
) {
    loop {
        let kind = match receiver.recv().await {
            Ok(Some(frame)) => frame.kind,
            _ => {
                if !closing.load(Ordering::Relaxed) {
                    tally.failures.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        };
        match kind {
            Some(server_frame::Kind::Update(update)) => {
                let now = unix_us();
                for p in &update.presences {
                    if let Some(user) = user_index(&p.user_id) {
                        tally.received(i, user, &p.status_text, now);
                    }
                }
            }
            Some(server_frame::Kind::Ack(_)) => {
                tally.acks.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

impl Fleet for NodeFleet {
    async fn change(&mut self, user: usize, status: usize, text: String) -> Result<(), String> {
        let sender = self.senders[user].as_mut().ok_or("session closed")?;
        sender
            .set_status(STATUSES[status % STATUSES.len()], text)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Heartbeats round-robin, so each session beats once per interval.
    async fn tick(&mut self) {
        let n = self.senders.len() as u64;
        let due = (self.since.elapsed().as_secs_f64() * n as f64
            / self.heartbeat_every.as_secs_f64()) as u64;
        while self.heartbeats < due {
            if let Some(sender) = &mut self.senders[(self.heartbeats % n) as usize] {
                let _ = sender.heartbeat().await;
            }
            self.heartbeats += 1;
        }
    }

    async fn close(&mut self, from: usize, to: usize) {
        self.closing.store(true, Ordering::Relaxed);
        let to = to.min(self.senders.len());
        for slot in &mut self.senders[from..to] {
            if let Some(mut sender) = slot.take() {
                sender.close();
            }
        }
        let tasks = self.receivers[from..to].iter_mut().flat_map(Option::take);
        super::join_by(tasks.collect(), Duration::from_secs(10)).await;
        self.closing.store(false, Ordering::Relaxed);
    }
}
