//! Serving a listener's connections ourselves, so that each connection is bounded.
//!
//! tonic's `serve_with_incoming` owns its connections and cannot close an idle one, count
//! them or carry per-connection state, so [`serve`] does what it did (hyper's HTTP/2 server
//! with the same settings, every connection shut down gracefully on `stop`) and adds:
//!
//! - a cap on live connections per listener (`PRESENCE_MAX_CONNECTIONS`): past it a new
//!   connection is closed at once and counted (`presence_refused_total{reason="max_connections"}`);
//! - an idle timeout (`PRESENCE_CONNECTION_IDLE_TIMEOUT_MS`): a connection with no open call for
//!   this long is shut down gracefully (GOAWAY; dropped if it has not closed
//!   [`IDLE_GOAWAY_GRACE`] later). The check runs at most an idle timeout apart, so an idle
//!   connection closes between one and two idle timeouts after its last call;
//! - an HTTP/2 header-list size limit (`PRESENCE_MAX_HEADER_LIST_BYTES`);
//! - a per-connection cap on session streams that have not sent their first message (the
//!   hello) yet (`PRESENCE_MAX_PENDING_HELLOS_PER_CONNECTION`): past it a new session stream is
//!   refused with `RESOURCE_EXHAUSTED` (`reason="pending_hellos"`) before it reaches the service;
//! - tonic's "message too large" (`OUT_OF_RANGE` from its decoder) answered as
//!   `RESOURCE_EXHAUSTED` (API.md: a larger message, on any service, is refused with it).
//!
//! The accepted connections live in a `JoinSet` owned by the future [`serve`] returns, so
//! dropping (aborting) that future abandons every connection still open.
//!
//! A listener that also speaks HTTP/1.1 (the web listener) can upgrade a connection to a
//! WebSocket; hyper then hands the socket over and stops serving it, so every request carries
//! a [`ConnectionLease`] whose [`ConnectionLease::hold`] keeps the connection counted (cap)
//! and busy (never idle) for as long as the upgraded socket lives.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{Stream, StreamExt};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::codegen::http::{HeaderValue, Request, Response};
use tonic::service::Routes;
use tower_service::Service;

/// The session method: its streams count as pending until their first message arrives.
pub const SESSION_PATH: &str = "/presence.v1.PresenceService/Session";

/// How long an idle connection told GOAWAY may take to close before it is dropped.
pub const IDLE_GOAWAY_GRACE: Duration = Duration::from_secs(5);

/// What bounds one listener's connections.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// Names the listener in logs and metrics (`grpc`, `admin`, `web`).
    pub listener: &'static str,
    /// Also serve HTTP/1.1 (with upgrades); otherwise HTTP/2 only.
    pub http1: bool,
    /// Live connections at once; `None`: no limit.
    pub max_connections: Option<usize>,
    /// No open call for this long: GOAWAY.
    pub idle_timeout: Duration,
    /// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`.
    pub max_header_list_bytes: u32,
    /// Session streams per connection that have not sent their first message.
    pub max_pending_hellos: usize,
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Option<Duration>,
    pub max_concurrent_streams: Option<u32>,
}

impl ConnectionSettings {
    /// The node's settings for `listener`.
    pub fn from_config(config: &crate::config::Config, listener: &'static str) -> Self {
        Self {
            listener,
            http1: false,
            max_connections: config.max_connections,
            idle_timeout: Duration::from_millis(config.connection_idle_timeout_ms),
            max_header_list_bytes: config.max_header_list_bytes,
            max_pending_hellos: config.max_pending_hellos_per_connection,
            keepalive_interval: None,
            keepalive_timeout: None,
            max_concurrent_streams: None,
        }
    }
}

/// Serves every connection of `incoming` with `routes` until `stop` completes; then shuts each
/// connection down gracefully and returns when all are closed. Accept errors (out of file
/// descriptors, a failed TLS handshake already counted) are logged and skipped.
pub async fn serve<I, IO, E>(
    incoming: I,
    routes: Routes,
    settings: ConnectionSettings,
    stop: impl Future<Output = ()>,
) where
    I: Stream<Item = Result<IO, E>>,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    E: std::fmt::Display,
{
    serve_service(incoming, routes.prepare(), settings, stop).await
}

/// [`serve`] with any service (the web listener's router).
pub async fn serve_service<I, IO, E, S>(
    incoming: I,
    service: S,
    settings: ConnectionSettings,
    stop: impl Future<Output = ()>,
) where
    I: Stream<Item = Result<IO, E>>,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    E: std::fmt::Display,
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let settings = Arc::new(settings);
    let mut builder = Builder::new(TokioExecutor::new());
    if settings.http1 {
        // Headers bounded as on HTTP/2 (hyper's read buffer holds the request head; 8 KiB is
        // its minimum), and a slow request head dropped after hyper's 30 s.
        builder
            .http1()
            .timer(TokioTimer::new())
            .max_buf_size((settings.max_header_list_bytes as usize).max(8192));
    } else {
        builder = builder.http2_only();
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_concurrent_streams)
        .keep_alive_interval(settings.keepalive_interval)
        .keep_alive_timeout(
            settings
                .keepalive_timeout
                .unwrap_or(Duration::from_secs(20)),
        )
        .max_header_list_size(settings.max_header_list_bytes);
    let builder = Arc::new(builder);
    let live = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    {
        let mut incoming = std::pin::pin!(incoming);
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = incoming.next() => match accepted {
                    Some(Ok(io)) => {
                        if settings.max_connections.is_some_and(|max| live.load(Ordering::Acquire) >= max) {
                            // Closed at once: dropping the stream closes the socket.
                            drop(io);
                            refused("max_connections");
                            tracing::debug!(listener = settings.listener, "connection over the cap closed");
                            continue;
                        }
                        let guard = Arc::new(LiveGuard::new(live.clone()));
                        connections.spawn(serve_one(
                            io,
                            service.clone(),
                            builder.clone(),
                            settings.clone(),
                            stop_rx.clone(),
                            guard,
                        ));
                    }
                    Some(Err(e)) => {
                        tracing::debug!(listener = settings.listener, error = %e, "accept failed");
                    }
                    None => break,
                },
            }
        }
        // `incoming` is dropped here: the listening socket closes before the drain.
    }
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
}

fn refused(reason: &'static str) {
    metrics::counter!(crate::metrics::REFUSED, "reason" => reason).increment(1);
}

/// Counts one live connection while it is held.
struct LiveGuard(Arc<AtomicUsize>);

impl LiveGuard {
    fn new(live: Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::AcqRel);
        Self(live)
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What one connection's calls share: its open calls, when the last one ended, its session
/// streams still waiting for their first message.
#[derive(Debug)]
pub struct ConnectionState {
    started: Instant,
    open_calls: AtomicUsize,
    /// Milliseconds since `started` when the open-call count last changed.
    last_change_ms: AtomicU64,
    pending_hellos: AtomicUsize,
    max_pending_hellos: usize,
}

impl ConnectionState {
    fn new(max_pending_hellos: usize) -> Self {
        Self {
            started: Instant::now(),
            open_calls: AtomicUsize::new(0),
            last_change_ms: AtomicU64::new(0),
            pending_hellos: AtomicUsize::new(0),
            max_pending_hellos,
        }
    }

    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_change_ms.store(ms, Ordering::Release);
    }

    /// When the connection is idle long enough to close: `None` while a call is open.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.open_calls.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.last_change_ms.load(Ordering::Acquire));
        Some(self.started + since + idle)
    }

    /// Takes a pending-hello slot, or `None` when the connection has none left.
    fn take_pending(self: &Arc<Self>) -> Option<PendingGuard> {
        let mut current = self.pending_hellos.load(Ordering::Acquire);
        loop {
            if current >= self.max_pending_hellos {
                return None;
            }
            match self.pending_hellos.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(PendingGuard(Some(self.clone()))),
                Err(now) => current = now,
            }
        }
    }
}

async fn serve_one<IO, S>(
    io: IO,
    inner: S,
    builder: Arc<Builder<TokioExecutor>>,
    settings: Arc<ConnectionSettings>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    live: Arc<LiveGuard>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let state = Arc::new(ConnectionState::new(settings.max_pending_hellos));
    let service = TowerToHyperService::new(Bounded {
        inner,
        state: state.clone(),
        lease: ConnectionLease {
            state: state.clone(),
            live,
        },
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let mut shutting_down = false;
    // After an idle GOAWAY, a peer that never completes the graceful close (hyper waits for
    // its PING ack) is dropped: it has no call open to lose.
    let mut force_close: Option<Instant> = None;
    let far = || Instant::now() + Duration::from_secs(24 * 3600);
    let mut idle_check = state
        .idle_deadline(settings.idle_timeout)
        .unwrap_or_else(far);
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(listener = settings.listener, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep_until(force_close.unwrap_or_else(far)), if force_close.is_some() => {
                tracing::debug!(listener = settings.listener, "idle connection did not close after its GOAWAY; dropped");
                return;
            }
            changed = stop.changed(), if !shutting_down => {
                let _ = changed;
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(idle_check), if !shutting_down => {
                match state.idle_deadline(settings.idle_timeout) {
                    Some(deadline) if deadline <= Instant::now() => {
                        tracing::debug!(listener = settings.listener, "idle connection closed with GOAWAY");
                        shutting_down = true;
                        force_close = Some(Instant::now() + IDLE_GOAWAY_GRACE);
                        conn.as_mut().graceful_shutdown();
                    }
                    Some(deadline) => idle_check = deadline,
                    // A call is open: look again an idle timeout later (the call's end moves
                    // the deadline forward anyway).
                    None => idle_check = Instant::now() + settings.idle_timeout,
                }
            }
        }
    }
}

/// gRPC reflection (v1 and v1alpha): its messages are watched for the 16 KiB bound.
const REFLECTION_PATH_PREFIX: &str = "/grpc.reflection.";

/// A connection as one of its requests sees it: [`ConnectionLease::hold`] keeps it counted and
/// busy after hyper let go of it (an upgrade to a WebSocket).
#[derive(Clone)]
pub struct ConnectionLease {
    state: Arc<ConnectionState>,
    live: Arc<LiveGuard>,
}

impl ConnectionLease {
    /// Counts the connection live and its call open until the returned value is dropped.
    pub fn hold(&self) -> HeldConnection {
        HeldConnection {
            _call: CallGuard::new(self.state.clone()),
            _live: self.live.clone(),
        }
    }
}

/// See [`ConnectionLease::hold`].
pub struct HeldConnection {
    _call: CallGuard,
    _live: Arc<LiveGuard>,
}

/// The per-connection service: counts open calls, holds pending hellos, converts
/// `OUT_OF_RANGE` to `RESOURCE_EXHAUSTED`, hands each request the connection's lease.
#[derive(Clone)]
struct Bounded<S> {
    inner: S,
    state: Arc<ConnectionState>,
    lease: ConnectionLease,
}

impl<S> Service<Request<Incoming>> for Bounded<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.lease.clone());
        let call = CallGuard::new(self.state.clone());
        let pending = if request.uri().path() == SESSION_PATH {
            match self.state.take_pending() {
                Some(pending) => Some(pending),
                None => {
                    refused("pending_hellos");
                    let status =
                        crate::errors::too_many_pending_hellos(self.state.max_pending_hellos);
                    let response = status.into_http::<Body>();
                    return Box::pin(async move {
                        drop(call);
                        Ok(response)
                    });
                }
            }
        } else {
            None
        };
        let oversized = request
            .uri()
            .path()
            .starts_with(REFLECTION_PATH_PREFIX)
            .then(|| Arc::new(AtomicBool::new(false)));
        let request = request.map(|body| {
            Body::new(FirstMessage {
                inner: body,
                first: FirstMessageLength::default(),
                pending,
                oversized: oversized.clone().map(|seen| Oversized {
                    lengths: MessageLengths::default(),
                    max: crate::server::UNAUTHENTICATED_MAX_MESSAGE_BYTES,
                    seen,
                }),
            })
        });
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            let (mut parts, body) = response.into_parts();
            convert_status(&mut parts.headers);
            Ok(Response::from_parts(
                parts,
                Body::new(Answer {
                    inner: body,
                    _call: call,
                    oversized,
                }),
            ))
        })
    }
}

/// One open call on the connection while held (the response body holds it to its end).
struct CallGuard(Arc<ConnectionState>);

impl CallGuard {
    fn new(state: Arc<ConnectionState>) -> Self {
        state.open_calls.fetch_add(1, Ordering::AcqRel);
        state.touch();
        Self(state)
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.open_calls.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

/// A pending-hello slot, given back once.
struct PendingGuard(Option<Arc<ConnectionState>>);

impl PendingGuard {
    fn release(&mut self) {
        if let Some(state) = self.0.take() {
            state.pending_hellos.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.release();
    }
}

/// A request body that gives back its pending-hello slot once its first whole gRPC message
/// (5-byte prefix and payload) has arrived, or when it ends or is dropped.
struct FirstMessage {
    inner: Incoming,
    first: FirstMessageLength,
    /// The slot, until the first message is whole.
    pending: Option<PendingGuard>,
    /// Reflection calls: every message's length, checked against the 16 KiB bound.
    oversized: Option<Oversized>,
}

/// Watches a streaming call's messages for one over `max` bytes. tonic-reflection ends its
/// answer stream with OK when its decoder refuses a request (it drops the error), so the
/// bound is seen here and the answer's trailers say RESOURCE_EXHAUSTED.
struct Oversized {
    lengths: MessageLengths,
    max: usize,
    seen: Arc<AtomicBool>,
}

/// Follows a gRPC body's bytes message by message (5-byte prefix, then the payload),
/// whatever the DATA frames' boundaries.
#[derive(Debug, Default)]
struct MessageLengths {
    prefix: [u8; 5],
    /// Prefix bytes of the current message seen.
    have: usize,
    /// Payload bytes of the current message still to come.
    remaining: usize,
}

impl MessageLengths {
    /// Takes the next bytes of the body; the largest message length whose prefix they end.
    fn observe(&mut self, mut data: &[u8]) -> Option<usize> {
        let mut largest = None;
        while !data.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(data.len());
                self.remaining -= skip;
                data = &data[skip..];
                continue;
            }
            self.prefix[self.have] = data[0];
            self.have += 1;
            data = &data[1..];
            if self.have == 5 {
                let [_, a, b, c, d] = self.prefix;
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                largest = largest.max(Some(len));
                self.remaining = len;
                self.have = 0;
            }
        }
        largest
    }
}

/// Follows a gRPC body's bytes until its first message (5-byte prefix, then the length the
/// prefix gives) is whole, whatever the DATA frames' boundaries.
#[derive(Debug, Default)]
struct FirstMessageLength {
    /// Bytes of the body seen so far (until the first message is whole).
    seen: usize,
    /// The first message's full length, once its prefix has been seen.
    needed: Option<usize>,
    /// The first message's prefix, as far as seen.
    prefix: [u8; 5],
}

impl FirstMessageLength {
    /// Takes the next bytes of the body; true once the first message is whole.
    fn observe(&mut self, mut data: &[u8]) -> bool {
        while self.seen < 5 && !data.is_empty() {
            self.prefix[self.seen] = data[0];
            self.seen += 1;
            data = &data[1..];
        }
        if self.seen >= 5 && self.needed.is_none() {
            let [_, a, b, c, d] = self.prefix;
            self.needed = Some(5 + u32::from_be_bytes([a, b, c, d]) as usize);
        }
        if self.seen >= 5 {
            self.seen = self.seen.saturating_add(data.len());
        }
        self.needed.is_some_and(|needed| self.seen >= needed)
    }
}

impl HttpBody for FirstMessage {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &polled {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if self.pending.is_some() && self.first.observe(data) {
                        // The hello (or whatever came first) is whole: no longer pending.
                        self.pending = None;
                    }
                    if let Some(watch) = &mut self.oversized {
                        if watch
                            .lengths
                            .observe(data)
                            .is_some_and(|len| len > watch.max)
                        {
                            watch.seen.store(true, Ordering::Release);
                        }
                    }
                }
            }
            _ => self.pending = None,
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that holds its call open until it ends, and converts `OUT_OF_RANGE` in
/// its trailers.
struct Answer {
    inner: Body,
    _call: CallGuard,
    /// Set when a reflection request was over the bound (see `Oversized`).
    oversized: Option<Arc<AtomicBool>>,
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let polled = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        Poll::Ready(polled.map(|frame| {
            frame.map(|frame| match frame.into_trailers() {
                Ok(mut trailers) => {
                    if self
                        .oversized
                        .as_ref()
                        .is_some_and(|seen| seen.load(Ordering::Acquire))
                    {
                        trailers.insert("grpc-status", HeaderValue::from_static("11"));
                    }
                    convert_status(&mut trailers);
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `OUT_OF_RANGE` (11) is what tonic's decoder answers to a message over the limit; the node
/// itself never answers it, so every one becomes `RESOURCE_EXHAUSTED` (8) with a message
/// that echoes nothing of the request.
fn convert_status(headers: &mut tonic::codegen::http::HeaderMap) {
    if headers.get("grpc-status").map(HeaderValue::as_bytes) == Some(b"11") {
        headers.insert("grpc-status", HeaderValue::from_static("8"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static(crate::errors::MESSAGE_TOO_LARGE),
        );
        refused("message_too_large");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32) -> Vec<u8> {
        let mut framed = vec![0u8];
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend(std::iter::repeat_n(7u8, len as usize));
        framed
    }

    #[test]
    fn the_first_message_is_whole_whatever_the_frame_boundaries() {
        let framed = message(300);
        for split in [1, 2, 4, 5, 6, 100, 304] {
            let mut first = FirstMessageLength::default();
            let (a, b) = framed.split_at(split);
            assert!(!first.observe(a), "split at {split}: not whole yet");
            assert!(first.observe(b), "split at {split}: whole");
        }
        let mut bytewise = FirstMessageLength::default();
        let whole: Vec<bool> = framed.iter().map(|b| bytewise.observe(&[*b])).collect();
        assert_eq!(whole.iter().position(|w| *w), Some(framed.len() - 1));
    }

    #[test]
    fn every_message_length_is_seen_whatever_the_frame_boundaries() {
        let mut body = message(3);
        body.extend(message(40_000));
        body.extend(message(0));
        body.extend(message(7));
        for chunk in [1, 2, 5, 6, 1000, body.len()] {
            let mut lengths = MessageLengths::default();
            let largest = body.chunks(chunk).filter_map(|c| lengths.observe(c)).max();
            assert_eq!(largest, Some(40_000), "chunks of {chunk}");
            assert_eq!(
                (lengths.have, lengths.remaining),
                (0, 0),
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn an_empty_message_is_whole_at_its_prefix() {
        assert!(FirstMessageLength::default().observe(&message(0)));
        let mut first = FirstMessageLength::default();
        assert!(!first.observe(&[]));
        assert!(!first.observe(&[0, 0, 0]));
        assert!(first.observe(&[0, 0]));
    }

    #[test]
    fn pending_slots_are_capped_and_given_back() {
        let state = Arc::new(ConnectionState::new(2));
        let a = state.take_pending().expect("first");
        let _b = state.take_pending().expect("second");
        assert!(state.take_pending().is_none(), "past the cap");
        drop(a);
        assert!(state.take_pending().is_some(), "a slot given back");
    }

    #[test]
    fn a_connection_is_idle_only_with_no_call_open() {
        let state = Arc::new(ConnectionState::new(1));
        let idle = Duration::from_secs(60);
        assert!(state.idle_deadline(idle).is_some());
        let call = CallGuard::new(state.clone());
        assert!(state.idle_deadline(idle).is_none());
        drop(call);
        assert!(state.idle_deadline(idle).is_some());
    }
}
