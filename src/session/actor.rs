//! The session actor: one per `Session` call.
//!
//! It owns the device's session: its identity, device label, watch list (in the outbox),
//! rate limiters and how it ends. A reader task forwards inbound frames and waits for each
//! to be handled, so a flooding client is slowed down instead of queueing without bound.
//! How a session ends decides when it stops counting (API.md, semantics 3).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::stream::{BoxStream, StreamExt};
use governor::clock::MonotonicClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;
use tonic::{Status, Streaming};
use tracing::debug;

use super::end::{close_session, End, Linger};
use super::outbox::{Outbox, Overflow};
use super::table::SessionSlot;
use crate::auth::Identity;
use crate::errors;
use crate::node::Node;
use crate::policy::Decision;
use crate::presence::{LimitError, SessionEntry, UserRecord};
use crate::proto::{
    client_frame, server_frame, Ack, ClientFrame, Error as ErrorFrame, ErrorCode, Heartbeat,
    HeartbeatAck, Hello, Reconnect, SetStatus, Subscribe, Unsubscribe, Welcome,
};
use crate::registry::{RegistryMsg, SessionKey};
use crate::store::Op;
use crate::transport::request_end::{Ending, RequestEnd};

pub enum SessionMsg {
    /// A frame from the device; the reader waits for the reply before reading the next.
    Frame(ClientFrame, RpcReplyPort<()>),
    /// The inbound stream ended: `None` for a clean half-close, else the transport error.
    InboundEnded(Option<tonic::Status>),
    /// The sweeper found the session past a deadline.
    Expire(Expiry),
    /// The node is draining: tell the device to reconnect elsewhere.
    Drain { retry_after_ms: u64 },
    /// The shutdown grace is over: end now with UNAVAILABLE.
    Shutdown,
    /// An operator ends the session (`reconnect`: the device is asked to reconnect).
    Disconnect { reason: String, reconnect: bool },
    /// The watch policy no longer lets this session see these users (revalidation):
    /// each watched one gets a last OFFLINE update and is unwatched.
    Revoke(Vec<(String, Decision)>),
    /// Makes the actor panic, to test supervision.
    #[cfg(test)]
    Crash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No frame within the TTL (or no hello within the hello timeout).
    Silent,
    /// The credential (JWT) expired.
    CredentialExpired,
    /// The session reached the max session age: ask it to reconnect (rebalancing).
    MaxAge,
}

impl From<Overflow> for End {
    fn from(_: Overflow) -> Self {
        End::SlowConsumer
    }
}

pub struct SessionArgs {
    pub node: Arc<Node>,
    pub key: SessionKey,
    pub session_id: String,
    pub identity: Identity,
    pub outbox: Arc<Outbox>,
    pub inbound: Inbound,
}

/// A session's inbound frames, whatever carries them (a gRPC stream, a WebSocket): the
/// transport only converts frames, the actor does the rest.
pub struct Inbound {
    /// The device's frames; an error ends the session abruptly with that status.
    pub frames: BoxStream<'static, Result<ClientFrame, Status>>,
    /// How the stream ended, when the transport can tell a clean end from an abrupt one
    /// (tonic reports a client's reset as a clean end); `None`: every end is clean.
    pub end: Option<RequestEnd>,
}

impl Inbound {
    /// A gRPC `Session` call's request stream.
    pub fn grpc(streaming: Streaming<ClientFrame>, end: Option<RequestEnd>) -> Self {
        Self {
            frames: streaming.boxed(),
            end,
        }
    }
}

pub struct SessionActor;

pub struct SessionState {
    node: Arc<Node>,
    key: SessionKey,
    user_id: String,
    /// Who the session is, as the watch policy sees it (scope, watch claim).
    identity: Identity,
    session_id: String,
    /// Set once `hello` was accepted and the session counts in the store.
    device: Option<String>,
    outbox: Arc<Outbox>,
    status_limiter: Limiter,
    subscribe_limiter: Limiter,
    reader: Option<JoinHandle<()>>,
    ended: bool,
    /// Told to reconnect (drain, rebalance): however the stream then ends, the session
    /// lingers, so the device's reconnect is invisible.
    moving: bool,
}

/// Whether `limiter` refuses one more frame of kind `frame` (counted in the metrics).
fn limited(limiter: &Limiter, frame: &'static str) -> bool {
    let refused = limiter.check().is_err();
    if refused {
        metrics::counter!(crate::metrics::RATE_LIMITED, "frame" => frame).increment(1);
    }
    refused
}

/// A per-session rate limiter on the std monotonic clock. (governor's default clock builds a
/// calibrated `quanta` clock per limiter, which runs CPUID: measured at 8% of node CPU
/// during a reconnect storm in a VM.)
type Limiter = RateLimiter<
    NotKeyed,
    InMemoryState,
    MonotonicClock,
    NoOpMiddleware<<MonotonicClock as governor::clock::Clock>::Instant>,
>;

fn limiter(per_second: u32, burst: u32) -> Limiter {
    let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(per_second);
    RateLimiter::direct_with_clock(
        Quota::per_second(per_second).allow_burst(burst),
        MonotonicClock,
    )
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        let node = args.node;
        let config = &node.config;
        let deadline = Arc::new(AtomicU64::new(node.now_ms() + config.hello_timeout_ms));
        node.sessions.insert(
            args.key,
            SessionSlot {
                user_id: args.identity.user_id.clone(),
                session_id: args.session_id.clone(),
                actor: myself.clone(),
                outbox: args.outbox.clone(),
                deadline_ms: deadline.clone(),
                credential_expires_ms: args.identity.expires_at_ms,
                rebalance_at_ms: AtomicU64::new(match config.max_session_age_ms {
                    // Jittered by up to a tenth, so sessions opened together do not all
                    // reconnect together.
                    Some(age) => node.now_ms() + age - rand::random_range(0..=age / 10),
                    None => u64::MAX,
                }),
                watch_exempt: !node.policy.applies_to(&args.identity)
                    || node.policy.cache().is_none(),
            },
        );
        let reader = tokio::spawn(read_frames(args.inbound, myself, deadline, node.clone()));
        Ok(SessionState {
            status_limiter: limiter(config.status_rate_per_s, config.status_rate_burst),
            subscribe_limiter: limiter(config.subscribe_rate_per_s, config.subscribe_rate_burst),
            key: args.key,
            user_id: args.identity.user_id.clone(),
            identity: args.identity,
            session_id: args.session_id,
            device: None,
            outbox: args.outbox,
            reader: Some(reader),
            ended: false,
            moving: false,
            node,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        if state.ended {
            return Ok(());
        }
        let outcome = match message {
            SessionMsg::Frame(frame, reply) => {
                // Boxed: the frame handlers' futures are large, and inline they would make
                // every idle session's actor task that large for its whole life.
                let outcome = Box::pin(state.on_frame(frame)).await;
                let _ = reply.send(());
                outcome
            }
            SessionMsg::InboundEnded(None) => Err(End::Clean),
            SessionMsg::InboundEnded(Some(status)) => Err(End::Abrupt(status)),
            SessionMsg::Expire(Expiry::Silent) => Err(End::Silent),
            SessionMsg::Expire(Expiry::CredentialExpired) => Err(End::CredentialExpired),
            // After a scale-out, long-lived streams stay where they are unless asked to move:
            // the device reconnects (through the load balancer) after a short jittered wait;
            // its session lingers meanwhile, so watchers see nothing.
            SessionMsg::Expire(Expiry::MaxAge) => {
                let retry_after_ms = rand::random_range(0..=state.node.config.offline_grace_ms / 2);
                state.ask_to_reconnect("rebalance: max session age reached", retry_after_ms)
            }
            SessionMsg::Drain { retry_after_ms } => {
                state.ask_to_reconnect("node draining", retry_after_ms)
            }
            SessionMsg::Shutdown => Err(End::ShutdownGraceOver),
            SessionMsg::Revoke(users) => state.revoke(&users),
            SessionMsg::Disconnect { reason, reconnect } => {
                if reconnect {
                    let retry_after_ms =
                        rand::random_range(0..=state.node.config.offline_grace_ms / 2);
                    state.ask_to_reconnect(&reason, retry_after_ms)
                } else {
                    Err(End::Kicked(reason))
                }
            }
            #[cfg(test)]
            SessionMsg::Crash => panic!("crash requested by a test"),
        };
        if let Err(end) = outcome {
            Box::pin(state.finish(end)).await;
            myself.stop(None);
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        Box::pin(state.finish(End::Stopped)).await;
        Ok(())
    }
}

/// Reads the device's frames and hands each to the actor, waiting for it to be handled.
/// Past the frame rate it does not read the next frame until the session is back under it:
/// the stream's HTTP/2 window fills and flow control holds the client back, at no cost here.
async fn read_frames(
    inbound: Inbound,
    actor: ActorRef<SessionMsg>,
    deadline: Arc<AtomicU64>,
    node: Arc<Node>,
) {
    let ttl = node.config.session_ttl_ms;
    let frames = crate::limiter::direct(node.config.frame_rate_per_s, node.config.frame_rate_burst);
    let Inbound {
        frames: mut inbound,
        end: inbound_end,
    } = inbound;
    loop {
        if crate::limiter::wait_for(&frames).await {
            metrics::counter!(crate::metrics::REFUSED, "reason" => "frame_rate").increment(1);
        }
        match inbound.next().await {
            Some(Ok(frame)) => {
                // Any frame counts as liveness, one read late (past the frame rate) too.
                deadline.store(node.now_ms() + ttl, Ordering::Relaxed);
                match actor
                    .call(|reply| SessionMsg::Frame(frame, reply), None)
                    .await
                {
                    Ok(CallResult::Success(())) => {}
                    _ => return,
                }
            }
            None => {
                let reset = inbound_end
                    .as_ref()
                    .is_some_and(|end| end.ending() == Ending::Abrupt);
                let status = reset.then(errors::session::cancelled);
                let _ = actor.cast(SessionMsg::InboundEnded(status));
                return;
            }
            Some(Err(status)) => {
                let _ = actor.cast(SessionMsg::InboundEnded(Some(status)));
                return;
            }
        }
    }
}

/// The allowed ids (in order) and the refused ones with their decision.
fn split_allowed(
    ids: &[String],
    decisions: &[Decision],
) -> (Vec<String>, std::collections::HashMap<String, Decision>) {
    let mut allowed = Vec::with_capacity(ids.len());
    let mut refused = std::collections::HashMap::new();
    for (id, decision) in ids.iter().zip(decisions) {
        match decision {
            Decision::Allow => allowed.push(id.clone()),
            other => {
                refused.insert(id.clone(), *other);
            }
        }
    }
    (allowed, refused)
}

fn error_frame(reference: u64, code: ErrorCode, message: impl Into<String>) -> server_frame::Kind {
    server_frame::Kind::Error(ErrorFrame {
        r#ref: reference,
        code: code as i32,
        message: message.into(),
    })
}

impl SessionState {
    /// Sends `Reconnect`; from now on the session lingers however it ends.
    fn ask_to_reconnect(&mut self, reason: &str, retry_after_ms: u64) -> Result<(), End> {
        self.moving = true;
        Ok(self.outbox.push(server_frame::Kind::Reconnect(Reconnect {
            reason: reason.into(),
            retry_after_ms,
        }))?)
    }

    /// Handles one frame; `Err` ends the session.
    async fn on_frame(&mut self, frame: ClientFrame) -> Result<(), End> {
        let reference = frame.r#ref;
        let kind_label = match &frame.kind {
            Some(client_frame::Kind::Hello(_)) => "hello",
            Some(client_frame::Kind::Heartbeat(_)) => "heartbeat",
            Some(client_frame::Kind::SetStatus(_)) => "set_status",
            Some(client_frame::Kind::Subscribe(_)) => "subscribe",
            Some(client_frame::Kind::Unsubscribe(_)) => "unsubscribe",
            None => "empty",
        };
        metrics::counter!(crate::metrics::FRAMES_RECEIVED, "kind" => kind_label).increment(1);
        let Some(kind) = frame.kind else {
            if self.device.is_none() {
                // Before hello nothing but hello is accepted, or empty frames could hold
                // a session that never said hello (and never counted) open.
                return Err(End::Refused(errors::hello_expected()));
            }
            return self
                .refuse(reference, ErrorCode::InvalidArgument, "empty frame")
                .await;
        };
        if self.device.is_none() {
            return match kind {
                client_frame::Kind::Hello(hello) => self.on_hello(hello).await,
                _ => Err(End::Refused(errors::hello_expected())),
            };
        }
        match kind {
            client_frame::Kind::Hello(_) => {
                self.refuse(
                    reference,
                    ErrorCode::FailedPrecondition,
                    "hello was already received",
                )
                .await
            }
            client_frame::Kind::Heartbeat(Heartbeat {}) => {
                Ok(self
                    .outbox
                    .push(server_frame::Kind::HeartbeatAck(HeartbeatAck {
                        server_time_ms: self.node.now_ms(),
                    }))?)
            }
            client_frame::Kind::SetStatus(set) => self.on_set_status(reference, set).await,
            client_frame::Kind::Subscribe(sub) => self.on_subscribe(reference, sub).await,
            client_frame::Kind::Unsubscribe(unsub) => self.on_unsubscribe(reference, unsub).await,
        }
    }

    /// Answers a frame with an `Error`; the session goes on.
    async fn refuse(
        &self,
        reference: u64,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Result<(), End> {
        self.reply(error_frame(reference, code, message)).await
    }

    async fn refuse_limit(&self, reference: u64, err: LimitError) -> Result<(), End> {
        self.refuse(reference, err.code(), err.to_string()).await
    }

    /// Queues a reply, waiting (and so not reading further frames) while the device has
    /// too many unread replies.
    async fn reply(&self, frame: server_frame::Kind) -> Result<(), End> {
        self.outbox.reserve(self.slow_consumer_patience()).await?;
        Ok(self.outbox.push(frame)?)
    }

    /// How long a device may leave its replies unread: as long as it may stay silent.
    fn slow_consumer_patience(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.node.config.session_ttl_ms)
    }

    async fn on_hello(&mut self, hello: Hello) -> Result<(), End> {
        let limits = &self.node.limits;
        let invalid = |e: LimitError| End::Refused(errors::invalid_argument(e));
        limits.check_device(&hello.device).map_err(invalid)?;
        let initial = match hello.status {
            Some(status) => Some((
                limits
                    .check_choice(status, &hello.status_text)
                    .map_err(invalid)?,
                hello.status_text,
            )),
            None => None,
        };
        if self.node.is_draining() {
            return Err(End::Refused(errors::draining()));
        }
        let now = self.node.now_ms();
        let op = Op::Open {
            user_id: self.user_id.clone(),
            session: SessionEntry {
                session_id: self.session_id.clone(),
                device: hello.device.clone(),
                node_id: self.node.node_id.clone(),
                connected_at_ms: now,
                linger_until_ms: None,
            },
            initial,
            max_live_sessions: limits.max_sessions_per_user,
        };
        if let Err(e) = self.node.write(op).await {
            return Err(End::Refused(errors::store(&e)));
        }
        self.device = Some(hello.device);
        // A session opening counts toward the user's change rate but is never refused by it.
        self.node.rates.count_change(&self.user_id);
        metrics::counter!(crate::metrics::SESSIONS_OPENED).increment(1);
        debug!(user = %self.user_id, session = %self.session_id, "session opened");
        let config = &self.node.config;
        self.reply(server_frame::Kind::Welcome(Welcome {
            session_id: self.session_id.clone(),
            user_id: self.user_id.clone(),
            node_id: self.node.node_id.clone(),
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            session_ttl_ms: config.session_ttl_ms,
            max_subscriptions: u32::try_from(config.max_subscriptions).unwrap_or(u32::MAX),
        }))
        .await
    }

    async fn on_set_status(&mut self, reference: u64, set: SetStatus) -> Result<(), End> {
        if limited(&self.status_limiter, "set_status") {
            return self
                .refuse(
                    reference,
                    ErrorCode::RateLimited,
                    "too many set_status frames",
                )
                .await;
        }
        let status = match self.node.limits.check_choice(set.status, &set.status_text) {
            Ok(status) => status,
            Err(e) => return self.refuse_limit(reference, e).await,
        };
        // Visible changes of the user, all its sessions on this node together.
        if self.node.rates.change(&self.user_id).is_err() {
            metrics::counter!(crate::metrics::REFUSED, "reason" => "user_change_rate").increment(1);
            return self
                .refuse(
                    reference,
                    ErrorCode::RateLimited,
                    "too many changes of this user",
                )
                .await;
        }
        let op = Op::SetStatus {
            user_id: self.user_id.clone(),
            status,
            text: set.status_text,
        };
        if let Err(e) = self.node.write(op).await {
            return self
                .refuse(reference, ErrorCode::Unavailable, e.to_string())
                .await;
        }
        self.reply(server_frame::Kind::Ack(Ack { r#ref: reference }))
            .await
    }

    async fn on_subscribe(&mut self, reference: u64, sub: Subscribe) -> Result<(), End> {
        if limited(&self.subscribe_limiter, "subscribe") {
            return self
                .refuse(
                    reference,
                    ErrorCode::RateLimited,
                    "too many subscribe frames",
                )
                .await;
        }
        let limits = &self.node.limits;
        let ids = match limits.check_ids(&sub.user_ids) {
            Ok(ids) => ids,
            Err(e) => return self.refuse_limit(reference, e).await,
        };
        // Who may see whom is decided before anything reaches the registry or the store.
        let decisions = match self
            .node
            .policy
            .check(&self.identity, &ids, self.node.now_ms())
            .await
        {
            Ok(decisions) => decisions,
            Err(e) => {
                return self
                    .refuse(reference, ErrorCode::Unavailable, e.to_string())
                    .await
            }
        };
        let requested = ids;
        let (ids, refused) = split_allowed(&requested, &decisions);
        if !refused.is_empty() {
            // Watched before and refused now: a fresh subscription starts afresh.
            let refused_ids: Vec<String> = refused.keys().cloned().collect();
            let removed = self.outbox.unwatch(&refused_ids);
            if !removed.is_empty() {
                let _ = self.node.registry.cast(RegistryMsg::Unwatch {
                    session: self.key,
                    user_ids: removed,
                });
            }
        }
        let would_watch = self.outbox.watch_count() + self.outbox.count_unwatched(&ids);
        if would_watch > limits.max_subscriptions {
            let err = LimitError::TooManySubscriptions {
                would_watch,
                max: limits.max_subscriptions,
            };
            return self.refuse_limit(reference, err).await;
        }
        // Register before reading, so no change between the read and the registration is
        // missed; the outbox drops what the snapshot already covers.
        let added = self.outbox.begin_watch(&ids);
        if !added.is_empty() {
            let registered = self
                .node
                .registry
                .call(
                    |reply| RegistryMsg::Watch {
                        session: self.key,
                        outbox: self.outbox.clone(),
                        user_ids: added.clone(),
                        reply,
                    },
                    None,
                )
                .await;
            if !matches!(registered, Ok(CallResult::Success(()))) {
                self.outbox.cancel_watch(&ids, &added);
                return self
                    .refuse(reference, ErrorCode::Unavailable, "node stopping")
                    .await;
            }
        }
        let read = if ids.is_empty() {
            Ok(Vec::new())
        } else {
            self.node.store.get(&ids, self.node.now_ms()).await
        };
        let records = match read {
            Ok(records) => records,
            Err(e) => {
                self.outbox.cancel_watch(&ids, &added);
                let _ = self.node.registry.cast(RegistryMsg::Unwatch {
                    session: self.key,
                    user_ids: added,
                });
                return self
                    .refuse(reference, ErrorCode::Unavailable, e.to_string())
                    .await;
            }
        };
        let records: std::collections::HashMap<&str, UserRecord> = ids
            .iter()
            .zip(records)
            .filter_map(|(id, record)| Some((id.as_str(), record?)))
            .collect();
        let mut denied = Vec::new();
        let views = requested
            .iter()
            .map(|id| {
                let owner = *id == self.user_id;
                match refused.get(id) {
                    // DENY and HIDE look exactly like a never-seen user; DENY is listed.
                    Some(decision) => {
                        if *decision == Decision::Deny {
                            denied.push(id.clone());
                        }
                        UserRecord::new(id.as_str()).view(false)
                    }
                    None => match records.get(id.as_str()) {
                        Some(record) => record.view(owner),
                        None => UserRecord::new(id.as_str()).view(owner),
                    },
                }
            })
            .collect();
        // Not held while waiting for room in the outbox.
        drop(records);
        self.outbox.reserve(self.slow_consumer_patience()).await?;
        Ok(self.outbox.complete_snapshot(reference, views, denied)?)
    }

    /// Revocation by the watch policy (see `SessionMsg::Revoke`).
    fn revoke(&mut self, users: &[(String, Decision)]) -> Result<(), End> {
        let users: Vec<(String, bool)> = users
            .iter()
            .filter(|(id, decision)| *decision != Decision::Allow && *id != self.user_id)
            .map(|(id, decision)| (id.clone(), *decision == Decision::Deny))
            .collect();
        let removed = self.outbox.revoke(&users)?;
        if !removed.is_empty() {
            metrics::counter!(crate::metrics::WATCH_REVOKED).increment(removed.len() as u64);
            let _ = self.node.registry.cast(RegistryMsg::Unwatch {
                session: self.key,
                user_ids: removed,
            });
        }
        Ok(())
    }

    async fn on_unsubscribe(&mut self, reference: u64, unsub: Unsubscribe) -> Result<(), End> {
        if limited(&self.subscribe_limiter, "subscribe") {
            return self
                .refuse(
                    reference,
                    ErrorCode::RateLimited,
                    "too many unsubscribe frames",
                )
                .await;
        }
        let ids = match self.node.limits.check_ids(&unsub.user_ids) {
            Ok(ids) => ids,
            Err(e) => return self.refuse_limit(reference, e).await,
        };
        let removed = self.outbox.unwatch(&ids);
        if !removed.is_empty() {
            let _ = self.node.registry.cast(RegistryMsg::Unwatch {
                session: self.key,
                user_ids: removed,
            });
        }
        self.reply(server_frame::Kind::Ack(Ack { r#ref: reference }))
            .await
    }

    /// Ends the session once (see `close_session`); an operator's END means gone now, even
    /// for a session told to move.
    async fn finish(&mut self, end: End) {
        if self.ended {
            return;
        }
        self.ended = true;
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
        // Taken already: the supervisor cleaned up after a crash.
        let Some(slot) = self.node.sessions.remove(self.key) else {
            return;
        };
        let linger = if matches!(end, End::Kicked(_)) {
            Linger::No
        } else if self.moving || self.node.is_draining() {
            Linger::Grace
        } else if end.lingers() {
            Linger::Abrupt
        } else {
            Linger::No
        };
        let counted = self.device.is_some();
        if counted {
            // Counts toward the user's change rate; never refused.
            self.node.rates.count_change(&self.user_id);
        }
        metrics::counter!(crate::metrics::SESSIONS_CLOSED, "reason" => end.label()).increment(1);
        debug!(user = %self.user_id, session = %self.session_id, end = ?end, "session ended");
        close_session(
            &self.node,
            self.key,
            slot,
            counted,
            linger,
            end.stream_result(),
        )
        .await;
    }
}
