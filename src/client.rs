//! The client side of `presence.v1`: the one way the `presence` CLI, the benchmark tool and the
//! integration tests speak the protocol.
//!
//! - [`parse_server`] / [`connect`]: a server address (`http://host:port`, `https://host:port`
//!   or bare `host:port`) to a [`Channel`]. One channel is one HTTP/2 connection; many
//!   [`Session`]s and [`get_presence`] calls can share it (clone the channel).
//! - [`Credentials`] / [`attach`]: the identity metadata of a call (`x-user-id` for the
//!   insecure mode, `authorization: Bearer ...` for the jwt mode).
//! - [`Session`]: one `Session` bidi stream. [`Session::open`] sends `Hello` and waits for the
//!   `Welcome`; then frames are sent with increasing `ref`s and received one by one.
//!   [`Session::split`] gives a [`SessionSender`] and a [`SessionReceiver`] that can live in
//!   different tasks.
//! - [`status_name`], [`parse_status`], [`format_presence`], [`format_rfc3339`]: the readable
//!   forms the CLI prints.

use std::error::Error as _;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::Uri;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Streaming};

use crate::proto::presence_service_client::PresenceServiceClient;
use crate::proto::{
    client_frame, server_frame, ClientFrame, GetPresenceRequest, Heartbeat, Hello, Presence,
    ServerFrame, SetStatus, Status as PresenceStatus, Subscribe, Unsubscribe, Welcome,
};

/// How long [`connect`] waits for the TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Session::open`] waits for the `Welcome` after sending `Hello`.
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 receive window per stream (session).
pub const STREAM_WINDOW_BYTES: u32 = 64 * 1024;
/// HTTP/2 receive window per connection (shared by multiplexed sessions).
pub const CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// Capacity of a session's outbound frame queue; [`SessionSender::send`] waits when it is full.
pub const OUTBOUND_QUEUE: usize = 64;

/// Everything that can go wrong when talking to a presence node. `Display` is one line.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server address could not be understood.
    #[error("bad server address {server:?}: {reason}")]
    BadServer { server: String, reason: String },
    /// The connection could not be made (refused, timed out, DNS, TLS, ...).
    #[error("cannot reach {server}: {reason}")]
    Unreachable { server: String, reason: String },
    /// The call ended with a gRPC status (code and message kept): one the server sent
    /// (shown as `refused: CODE: message`), or one tonic made of a transport failure under
    /// the call (shown as `connection lost: ...`, see [`is_connection_error`]).
    #[error("{}", describe_status(.0))]
    Refused(tonic::Status),
    /// The server answered `Hello` with an `Error` frame instead of a `Welcome`.
    #[error("refused: {}: {}", error_code_name(.0.code), .0.message)]
    Rejected(crate::proto::Error),
    /// The credentials cannot travel as call metadata.
    #[error("bad credentials: {0}")]
    BadCredentials(String),
    /// The server broke the protocol (unexpected or missing frame).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A frame was sent on a session that is closed (half-closed by us, or ended by the server).
    #[error("session is closed")]
    Closed,
}

impl ClientError {
    /// The gRPC status code of a [`ClientError::Refused`].
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Refused(status) => Some(status.code()),
            _ => None,
        }
    }

    /// Whether trying again later (on a new connection) may work: the server could not be
    /// reached, the connection broke, or the server is `UNAVAILABLE` (e.g. draining).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Refused(status) => {
                status.code() == Code::Unavailable || is_connection_error(status)
            }
            _ => false,
        }
    }
}

/// Whether a status that ended a call was made by tonic of a transport failure (connection
/// reset or broken, HTTP/2 error, keep-alive timeout) rather than sent by the server.
pub fn is_connection_error(status: &tonic::Status) -> bool {
    status.source().is_some() || status.message().starts_with("h2 protocol error")
}

/// The identity of a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// Insecure mode: the user id, sent as `x-user-id`.
    User(String),
    /// JWT mode: the token, sent as `authorization: Bearer <token>`.
    Token(String),
}

/// Puts the identity into call metadata (`x-user-id` or `authorization: Bearer ...`).
///
/// Fails with [`ClientError::BadCredentials`] for an empty value or one that is not visible
/// ASCII (gRPC metadata values are ASCII).
pub fn attach(credentials: &Credentials, metadata: &mut MetadataMap) -> Result<(), ClientError> {
    match credentials {
        Credentials::User(user) => {
            if user.is_empty() {
                return Err(ClientError::BadCredentials("the user id is empty".into()));
            }
            let value = ascii_value(user).ok_or_else(|| {
                ClientError::BadCredentials(format!(
                    "user id {user:?} cannot be sent as x-user-id metadata \
                     (only visible ASCII characters are allowed)"
                ))
            })?;
            metadata.insert("x-user-id", value);
        }
        Credentials::Token(token) => {
            // Accept a value that already carries the scheme.
            let token = token.trim();
            let token = token
                .strip_prefix("Bearer ")
                .or_else(|| token.strip_prefix("bearer "))
                .unwrap_or(token)
                .trim();
            if token.is_empty() {
                return Err(ClientError::BadCredentials("the token is empty".into()));
            }
            let value = ascii_value(&format!("Bearer {token}")).ok_or_else(|| {
                ClientError::BadCredentials(
                    "the token cannot be sent as authorization metadata \
                     (only visible ASCII characters are allowed)"
                        .into(),
                )
            })?;
            metadata.insert("authorization", value);
        }
    }
    Ok(())
}

fn ascii_value(s: &str) -> Option<AsciiMetadataValue> {
    if !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    s.parse().ok()
}

fn request<T>(credentials: &Credentials, message: T) -> Result<Request<T>, ClientError> {
    let mut request = Request::new(message);
    attach(credentials, request.metadata_mut())?;
    Ok(request)
}

/// Parses a server address: `http://host:port`, `https://host:port` (TLS, webpki roots) or a
/// bare `host:port` (plain http). The endpoint has a connect timeout and `TCP_NODELAY`.
pub fn parse_server(s: &str) -> Result<Endpoint, ClientError> {
    let input = s.trim();
    let bad = |reason: &str| ClientError::BadServer {
        server: s.to_string(),
        reason: reason.to_string(),
    };
    if input.is_empty() {
        return Err(bad("empty"));
    }
    let (tls, full) = match input.split_once("://") {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => (false, input.to_string()),
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => (true, input.to_string()),
        Some((scheme, _)) => {
            return Err(bad(&format!(
                "unsupported scheme {scheme:?} (use http://, https:// or host:port)"
            )))
        }
        None => (false, format!("http://{input}")),
    };
    let uri: Uri = full
        .parse()
        .map_err(|e: tonic::codegen::http::uri::InvalidUri| bad(&e.to_string()))?;
    let host = uri.host().unwrap_or("");
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    if !input.contains("://") && uri.port().is_none() {
        return Err(bad("missing port (expected host:port)"));
    }
    if let Some(pq) = uri.path_and_query() {
        if pq.as_str() != "/" && !pq.as_str().is_empty() {
            return Err(bad("must not have a path or query"));
        }
    }
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
    if authority.contains('@') {
        return Err(bad("must not carry user info"));
    }
    let origin = format!("{}://{}", if tls { "https" } else { "http" }, authority);
    let mut endpoint = Endpoint::from_shared(origin)
        .map_err(|e| bad(&error_chain(&e)))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(false)
        // A small per-stream window: a session that stops reading leaves its updates on the
        // node, where they coalesce to the latest per user, instead of thousands of tiny
        // frames piling up here (h2 closes the whole connection past a frame count). The
        // connection window stays large so many multiplexed sessions never starve each other.
        .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES));
    if tls {
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().with_webpki_roots())
            .map_err(|e| bad(&error_chain(&e)))?;
    }
    Ok(endpoint)
}

/// `scheme://host:port` of an endpoint, as shown in messages.
pub fn endpoint_name(endpoint: &Endpoint) -> String {
    let uri = endpoint.uri();
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
        _ => uri.to_string(),
    }
}

/// Parses `server` and opens one connection to it.
pub async fn connect(server: &str) -> Result<Channel, ClientError> {
    let endpoint = parse_server(server)?;
    endpoint
        .connect()
        .await
        .map_err(|e| ClientError::Unreachable {
            server: endpoint_name(&endpoint),
            reason: error_chain(&e),
        })
}

/// `GetPresence`: one [`Presence`] per requested id, in request order.
pub async fn get_presence(
    channel: Channel,
    credentials: &Credentials,
    user_ids: Vec<String>,
) -> Result<Vec<Presence>, ClientError> {
    let wanted = user_ids.len();
    let request = request(credentials, GetPresenceRequest { user_ids })?;
    let response = PresenceServiceClient::new(channel)
        .get_presence(request)
        .await
        .map_err(ClientError::Refused)?;
    let presences = response.into_inner().presences;
    if presences.len() != wanted {
        return Err(ClientError::Protocol(format!(
            "asked for {wanted} users, got {} presences",
            presences.len()
        )));
    }
    Ok(presences)
}

/// One `Session` bidi stream: a [`SessionSender`] and a [`SessionReceiver`].
#[derive(Debug)]
pub struct Session {
    sender: SessionSender,
    receiver: SessionReceiver,
}

/// The sending half of a [`Session`]: assigns increasing `ref`s, starting at 1 (the `Hello`).
#[derive(Debug)]
pub struct SessionSender {
    tx: Option<mpsc::Sender<ClientFrame>>,
    next_ref: u64,
}

/// The receiving half of a [`Session`].
#[derive(Debug)]
pub struct SessionReceiver {
    inbound: Streaming<ServerFrame>,
}

impl Session {
    /// Starts a `Session` call on `channel` (a clone shares the connection), sends `hello`
    /// as the first frame (ref 1) and waits for the `Welcome`.
    ///
    /// Fails with [`ClientError::Refused`] when the server ends the call with a status (e.g.
    /// `UNAUTHENTICATED`) or when the connection fails under the call, [`ClientError::Rejected`] when it answers with an `Error` frame, and
    /// [`ClientError::Protocol`] for any other first frame, an end without a status, or no
    /// `Welcome` within [`WELCOME_TIMEOUT`].
    pub async fn open(
        channel: Channel,
        credentials: &Credentials,
        hello: Hello,
    ) -> Result<(Session, Welcome), ClientError> {
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let mut sender = SessionSender {
            tx: Some(tx),
            next_ref: 1,
        };
        // Queued before the call starts: a server that reads the hello before answering with
        // headers must find it there.
        sender.send(client_frame::Kind::Hello(hello)).await?;
        let request = request(credentials, ReceiverStream::new(rx))?;
        let opening = async {
            let response = PresenceServiceClient::new(channel)
                .session(request)
                .await
                .map_err(ClientError::Refused)?;
            let mut receiver = SessionReceiver {
                inbound: response.into_inner(),
            };
            let first = receiver.recv().await.map_err(ClientError::Refused)?;
            match first.and_then(|f| f.kind) {
                Some(server_frame::Kind::Welcome(welcome)) => Ok((receiver, welcome)),
                Some(server_frame::Kind::Error(error)) => Err(ClientError::Rejected(error)),
                Some(other) => Err(ClientError::Protocol(format!(
                    "expected welcome, got {}",
                    server_frame_name(&other)
                ))),
                None => Err(ClientError::Protocol(
                    "the server ended the session before its welcome".into(),
                )),
            }
        };
        let (receiver, welcome) = tokio::time::timeout(WELCOME_TIMEOUT, opening)
            .await
            .map_err(|_| {
                ClientError::Protocol(format!(
                    "no welcome within {} ms",
                    WELCOME_TIMEOUT.as_millis()
                ))
            })??;
        Ok((Session { sender, receiver }, welcome))
    }

    /// Sends one frame; returns the `ref` it was given.
    pub async fn send(&mut self, kind: client_frame::Kind) -> Result<u64, ClientError> {
        self.sender.send(kind).await
    }

    /// Sends a `Heartbeat`.
    pub async fn heartbeat(&mut self) -> Result<u64, ClientError> {
        self.sender.heartbeat().await
    }

    /// Sends `SetStatus`.
    pub async fn set_status(
        &mut self,
        status: PresenceStatus,
        text: impl Into<String>,
    ) -> Result<u64, ClientError> {
        self.sender.set_status(status, text).await
    }

    /// Sends `Subscribe`; the server answers with a `Snapshot` carrying the returned ref.
    pub async fn subscribe(&mut self, user_ids: Vec<String>) -> Result<u64, ClientError> {
        self.sender.subscribe(user_ids).await
    }

    /// Sends `Unsubscribe`; the server answers with an `Ack` carrying the returned ref.
    pub async fn unsubscribe(&mut self, user_ids: Vec<String>) -> Result<u64, ClientError> {
        self.sender.unsubscribe(user_ids).await
    }

    /// The next frame: `Ok(None)` when the server ended the stream cleanly, `Err` with the
    /// gRPC status that ended it otherwise.
    pub async fn recv(&mut self) -> Result<Option<ServerFrame>, tonic::Status> {
        self.receiver.recv().await
    }

    /// Clean half-close: the server sees end-of-stream (the session stops counting at once).
    /// Receiving stays possible until the server ends the stream.
    pub fn close(&mut self) {
        self.sender.close();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// The two halves, to read and write from different tasks.
    pub fn split(self) -> (SessionSender, SessionReceiver) {
        (self.sender, self.receiver)
    }

    /// Joins halves from [`split`](Self::split) again.
    pub fn unsplit(sender: SessionSender, receiver: SessionReceiver) -> Session {
        Session { sender, receiver }
    }
}

impl SessionSender {
    /// Sends one frame; returns the `ref` it was given. Waits while the outbound queue is
    /// full; fails with [`ClientError::Closed`] after [`close`](Self::close) or once the call
    /// has ended.
    pub async fn send(&mut self, kind: client_frame::Kind) -> Result<u64, ClientError> {
        let tx = self.tx.as_ref().ok_or(ClientError::Closed)?;
        let r#ref = self.next_ref;
        tx.send(ClientFrame {
            r#ref,
            kind: Some(kind),
        })
        .await
        .map_err(|_| ClientError::Closed)?;
        self.next_ref += 1;
        Ok(r#ref)
    }

    /// Sends a `Heartbeat`.
    pub async fn heartbeat(&mut self) -> Result<u64, ClientError> {
        self.send(client_frame::Kind::Heartbeat(Heartbeat {})).await
    }

    /// Sends `SetStatus`.
    pub async fn set_status(
        &mut self,
        status: PresenceStatus,
        text: impl Into<String>,
    ) -> Result<u64, ClientError> {
        self.send(client_frame::Kind::SetStatus(SetStatus {
            status: status as i32,
            status_text: text.into(),
        }))
        .await
    }

    /// Sends `Subscribe`.
    pub async fn subscribe(&mut self, user_ids: Vec<String>) -> Result<u64, ClientError> {
        self.send(client_frame::Kind::Subscribe(Subscribe { user_ids }))
            .await
    }

    /// Sends `Unsubscribe`.
    pub async fn unsubscribe(&mut self, user_ids: Vec<String>) -> Result<u64, ClientError> {
        self.send(client_frame::Kind::Unsubscribe(Unsubscribe { user_ids }))
            .await
    }

    /// Clean half-close (drops the queue's sender; frames already queued still go out first).
    pub fn close(&mut self) {
        self.tx = None;
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.tx.is_none()
    }
}

impl SessionReceiver {
    /// The next frame: `Ok(None)` when the server ended the stream cleanly, `Err` with the
    /// gRPC status that ended it otherwise.
    pub async fn recv(&mut self) -> Result<Option<ServerFrame>, tonic::Status> {
        self.inbound.message().await
    }
}

/// The name of a server frame variant, for messages.
pub fn server_frame_name(kind: &server_frame::Kind) -> &'static str {
    match kind {
        server_frame::Kind::Welcome(_) => "welcome",
        server_frame::Kind::Snapshot(_) => "snapshot",
        server_frame::Kind::Update(_) => "update",
        server_frame::Kind::HeartbeatAck(_) => "heartbeat_ack",
        server_frame::Kind::Ack(_) => "ack",
        server_frame::Kind::Error(_) => "error",
        server_frame::Kind::Reconnect(_) => "reconnect",
    }
}

/// The canonical upper-case name of a gRPC status code, e.g. `UNAUTHENTICATED`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The name of an `ErrorCode` without its prefix, e.g. `INVALID_STATUS`.
pub fn error_code_name(code: i32) -> &'static str {
    match crate::proto::ErrorCode::try_from(code) {
        Ok(code) => {
            let name = code.as_str_name();
            name.strip_prefix("ERROR_CODE_").unwrap_or(name)
        }
        Err(_) => "UNKNOWN_ERROR_CODE",
    }
}

/// `refused: CODE: message` for a status the server sent, `connection lost: cause` for one
/// made of a transport failure.
fn describe_status(status: &tonic::Status) -> String {
    if is_connection_error(status) {
        format!("connection lost: {}", status_message(status))
    } else {
        format!(
            "refused: {}: {}",
            code_name(status.code()),
            status_message(status)
        )
    }
}

/// A status message on one line; when the status carries a transport error, its cause.
fn status_message(status: &tonic::Status) -> String {
    let mut message = status.message().to_string();
    if let Some(source) = status.source() {
        let cause = error_chain(source);
        if !cause.is_empty() && !message.contains(&cause) {
            if message.is_empty() {
                message = cause;
            } else {
                message = format!("{message}: {cause}");
            }
        }
    }
    if message.is_empty() {
        message = "(no message)".into();
    }
    one_line(&message)
}

/// The most useful one-line reason of an error chain: its deepest cause, readable
/// (`connection refused`, `timed out`, ...).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut deepest: &(dyn std::error::Error + 'static) = error;
    while let Some(source) = deepest.source() {
        deepest = source;
    }
    if let Some(io) = deepest.downcast_ref::<std::io::Error>() {
        use std::io::ErrorKind::*;
        let known = match io.kind() {
            ConnectionRefused => Some("connection refused"),
            ConnectionReset => Some("connection reset"),
            ConnectionAborted => Some("connection aborted"),
            TimedOut => Some("timed out"),
            AddrNotAvailable => Some("address not available"),
            _ => None,
        };
        if let Some(known) = known {
            return known.to_string();
        }
    }
    let mut text = deepest.to_string();
    // "Connection refused (os error 111)" -> "Connection refused"
    if let Some(i) = text.find(" (os error ") {
        text.truncate(i);
    }
    if text.is_empty() {
        text = error.to_string();
    }
    // Lower-case a leading capital of a sentence ("Name or service" -> "name or service").
    let mut chars = text.chars();
    let text = match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if first.is_uppercase() && second.is_lowercase() => {
            first.to_lowercase().collect::<String>() + &text[first.len_utf8()..]
        }
        _ => text,
    };
    one_line(&text)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The lower-case name of a `Status` value: "online", "away", "busy", "invisible", "offline",
/// "unspecified" (and "unknown" for a value this client does not know).
pub fn status_name(status: i32) -> &'static str {
    match PresenceStatus::try_from(status) {
        Ok(PresenceStatus::Unspecified) => "unspecified",
        Ok(PresenceStatus::Offline) => "offline",
        Ok(PresenceStatus::Online) => "online",
        Ok(PresenceStatus::Away) => "away",
        Ok(PresenceStatus::Busy) => "busy",
        Ok(PresenceStatus::Invisible) => "invisible",
        Err(_) => "unknown",
    }
}

/// Parses a status name, case-insensitively: online, away, busy, invisible, and offline (so
/// that the server can refuse it). A `STATUS_` prefix is accepted.
pub fn parse_status(s: &str) -> Option<PresenceStatus> {
    let lower = s.trim().to_ascii_lowercase();
    let name = lower.strip_prefix("status_").unwrap_or(&lower);
    match name {
        "online" => Some(PresenceStatus::Online),
        "away" => Some(PresenceStatus::Away),
        "busy" => Some(PresenceStatus::Busy),
        "invisible" => Some(PresenceStatus::Invisible),
        "offline" => Some(PresenceStatus::Offline),
        _ => None,
    }
}

/// One readable line, e.g.
/// `alice  online  "at lunch"  devices=ios,web  since=2026-11-29T10:15:02Z  v=12`;
/// an offline user shows `last_seen=...` or `never seen` instead.
pub fn format_presence(p: &Presence) -> String {
    let mut parts: Vec<String> = vec![p.user_id.clone(), status_name(p.status).to_string()];
    let offline = p.status == PresenceStatus::Offline as i32;
    if !p.status_text.is_empty() {
        // Debug quoting escapes quotes and control characters: always one line.
        parts.push(format!("{:?}", p.status_text));
    }
    if !p.devices.is_empty() {
        parts.push(format!("devices={}", p.devices.join(",")));
    }
    if offline {
        if p.last_seen_ms > 0 {
            parts.push(format!("last_seen={}", format_rfc3339(p.last_seen_ms)));
        } else {
            parts.push("never seen".to_string());
        }
    } else if p.since_ms > 0 {
        parts.push(format!("since={}", format_rfc3339(p.since_ms)));
    }
    parts.push(format!("v={}", p.version));
    parts.join("  ")
}

/// Unix milliseconds as an RFC 3339 UTC time with second precision:
/// `2026-11-29T10:15:02Z`.
pub fn format_rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The UTC time of day of unix milliseconds as `HH:MM:SS.mmm`.
pub fn format_time_of_day(unix_ms: u64) -> String {
    let ms_of_day = unix_ms % 86_400_000;
    let secs = ms_of_day / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        ms_of_day % 1000
    )
}

/// The current time as unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_server_forms() {
        let e = parse_server("http://127.0.0.1:50051").unwrap();
        assert_eq!(endpoint_name(&e), "http://127.0.0.1:50051");
        assert_eq!(e.get_connect_timeout(), Some(CONNECT_TIMEOUT));
        assert!(e.get_tcp_nodelay());

        let e = parse_server("localhost:50051").unwrap();
        assert_eq!(endpoint_name(&e), "http://localhost:50051");

        let e = parse_server("  [::1]:7000 ").unwrap();
        assert_eq!(endpoint_name(&e), "http://[::1]:7000");

        let e = parse_server("https://presence.example.com:443").unwrap();
        assert_eq!(endpoint_name(&e), "https://presence.example.com:443");

        let e = parse_server("HTTP://h:1/").unwrap();
        assert_eq!(endpoint_name(&e), "http://h:1");

        let e = parse_server("https://presence.example.com").unwrap();
        assert_eq!(endpoint_name(&e), "https://presence.example.com");
    }

    #[test]
    fn parse_server_rejects() {
        for bad in [
            "",
            "   ",
            "localhost",
            "grpc://h:1",
            "http://",
            "http://h:1/path",
            "h:notaport",
            "h:99999",
            "http://u@h:1",
            "a b:1",
        ] {
            let err = parse_server(bad).unwrap_err();
            assert!(
                matches!(err, ClientError::BadServer { .. }),
                "{bad:?}: {err:?}"
            );
            let text = err.to_string();
            assert!(text.starts_with("bad server address"), "{text}");
            assert!(!text.contains('\n'), "{text}");
        }
        assert_eq!(
            parse_server("grpc://h:1").unwrap_err().to_string(),
            "bad server address \"grpc://h:1\": unsupported scheme \"grpc\" \
             (use http://, https:// or host:port)"
        );
    }

    #[tokio::test]
    async fn connect_refused_is_one_line() {
        // Bind then drop a listener: the port is very likely free and refuses.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = connect(&format!("127.0.0.1:{port}")).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot reach http://127.0.0.1:{port}: connection refused")
        );
    }

    #[test]
    fn attach_metadata() {
        let mut md = MetadataMap::new();
        attach(&Credentials::User("alice".into()), &mut md).unwrap();
        assert_eq!(md.get("x-user-id").unwrap(), "alice");

        let mut md = MetadataMap::new();
        attach(&Credentials::Token("abc.def.ghi".into()), &mut md).unwrap();
        assert_eq!(md.get("authorization").unwrap(), "Bearer abc.def.ghi");

        let mut md = MetadataMap::new();
        attach(&Credentials::Token("Bearer abc".into()), &mut md).unwrap();
        assert_eq!(md.get("authorization").unwrap(), "Bearer abc");

        for bad in [
            Credentials::User(String::new()),
            Credentials::User("zoë".into()),
            Credentials::User("a\nb".into()),
            Credentials::Token(" ".into()),
            Credentials::Token("x\u{7f}y".into()),
        ] {
            let err = attach(&bad, &mut MetadataMap::new()).unwrap_err();
            assert!(matches!(err, ClientError::BadCredentials(_)), "{bad:?}");
        }
    }

    #[test]
    fn refused_display() {
        let err = ClientError::Refused(tonic::Status::unauthenticated("missing x-user-id"));
        assert_eq!(
            err.to_string(),
            "refused: UNAUTHENTICATED: missing x-user-id"
        );
        assert_eq!(err.code(), Some(Code::Unauthenticated));
        assert!(!err.is_transient());
        let sent = ClientError::Refused(tonic::Status::unavailable("draining"));
        assert!(sent.is_transient());
        assert_eq!(sent.to_string(), "refused: UNAVAILABLE: draining");
        let broken = tonic::Status::from_error(Box::new(std::io::Error::from(
            std::io::ErrorKind::BrokenPipe,
        )));
        let lost = ClientError::Refused(broken);
        assert!(lost.is_transient());
        assert_eq!(lost.to_string(), "connection lost: broken pipe");
        let err = ClientError::Rejected(crate::proto::Error {
            r#ref: 1,
            code: crate::proto::ErrorCode::InvalidStatus as i32,
            message: "offline cannot be chosen".into(),
        });
        assert_eq!(
            err.to_string(),
            "refused: INVALID_STATUS: offline cannot be chosen"
        );
    }

    #[test]
    fn status_names_and_parsing() {
        assert_eq!(status_name(PresenceStatus::Online as i32), "online");
        assert_eq!(status_name(PresenceStatus::Away as i32), "away");
        assert_eq!(status_name(PresenceStatus::Busy as i32), "busy");
        assert_eq!(status_name(PresenceStatus::Invisible as i32), "invisible");
        assert_eq!(status_name(PresenceStatus::Offline as i32), "offline");
        assert_eq!(status_name(0), "unspecified");
        assert_eq!(status_name(99), "unknown");

        assert_eq!(parse_status("online"), Some(PresenceStatus::Online));
        assert_eq!(parse_status("AWAY"), Some(PresenceStatus::Away));
        assert_eq!(parse_status("Busy"), Some(PresenceStatus::Busy));
        assert_eq!(parse_status("invisible"), Some(PresenceStatus::Invisible));
        assert_eq!(parse_status("offline"), Some(PresenceStatus::Offline));
        assert_eq!(parse_status("STATUS_ONLINE"), Some(PresenceStatus::Online));
        assert_eq!(parse_status("unspecified"), None);
        assert_eq!(parse_status("dnd"), None);
        assert_eq!(parse_status(""), None);
    }

    #[test]
    fn time_formatting() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(1_709_251_199_999), "2024-02-29T23:59:59Z");
        assert_eq!(format_rfc3339(1_795_947_302_123), "2026-11-29T10:15:02Z");
        assert_eq!(format_rfc3339(4_102_444_800_000), "2100-01-01T00:00:00Z");
        assert_eq!(format_time_of_day(1_795_947_302_123), "10:15:02.123");
        assert_eq!(format_time_of_day(0), "00:00:00.000");
        // Every day of 1970..2100 round-trips against a naive calendar walk.
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        for days in 0..47_482i64 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ][m as usize - 1];
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    fn presence(user: &str, status: PresenceStatus) -> Presence {
        Presence {
            user_id: user.into(),
            status: status as i32,
            ..Default::default()
        }
    }

    #[test]
    fn format_presence_lines() {
        let mut p = presence("alice", PresenceStatus::Online);
        p.status_text = "at lunch".into();
        p.devices = vec!["ios".into(), "web".into()];
        p.since_ms = 1_795_947_302_000;
        p.version = 12;
        assert_eq!(
            format_presence(&p),
            "alice  online  \"at lunch\"  devices=ios,web  since=2026-11-29T10:15:02Z  v=12"
        );

        let mut p = presence("bob", PresenceStatus::Offline);
        p.last_seen_ms = 1_795_947_302_000;
        p.since_ms = 1_795_947_302_000;
        p.version = 3;
        assert_eq!(
            format_presence(&p),
            "bob  offline  last_seen=2026-11-29T10:15:02Z  v=3"
        );

        let p = presence("carol", PresenceStatus::Offline);
        assert_eq!(format_presence(&p), "carol  offline  never seen  v=0");

        let mut p = presence("dave", PresenceStatus::Busy);
        p.status_text = "say \"hi\"\nlater".into();
        p.devices = vec!["cli".into()];
        p.version = 7;
        assert_eq!(
            format_presence(&p),
            "dave  busy  \"say \\\"hi\\\"\\nlater\"  devices=cli  v=7"
        );
    }
}
