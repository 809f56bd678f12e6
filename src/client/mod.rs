//! The client side of `presence.v1`: the one way the `presence` CLI, the benchmark tool and the
//! integration tests speak the protocol.
//!
//! - [`parse_server`] / [`connect`]: a server address (`http://host:port`, `https://host:port`
//!   or bare `host:port`) to a [`Channel`]. One channel is one HTTP/2 connection; many
//!   [`Session`]s and [`get_presence`] calls can share it (clone the channel).
//!   [`connect_with`] / [`TlsOptions`] (`tls`): a private CA and a client certificate (mTLS).
//! - [`Credentials`] / [`attach`]: the identity metadata of a call (`x-user-id` for the
//!   insecure mode, `authorization: Bearer ...` for the jwt mode).
//! - [`Session`]: one `Session` bidi stream. [`Session::open`] sends `Hello` and waits for the
//!   `Welcome`; then frames are sent with increasing `ref`s and received one by one.
//!   [`Session::split`] gives a [`SessionSender`] and a [`SessionReceiver`] that can live in
//!   different tasks.
//! - [`format`]: the readable forms the CLI prints (status names, presence lines, times).

pub mod format;
pub mod tls;

pub use tls::{ClientIdentity, TlsOptions};

use format::{error_code_name, server_frame_name};

use std::error::Error as _;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::Uri;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};
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
    /// The TLS options cannot be used (unreadable file, bad PEM, incomplete identity).
    #[error("bad TLS settings: {0}")]
    BadTls(String),
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
    parse_server_with(s, &TlsOptions::default())
}

/// [`parse_server`] with TLS options for `https://`: a private CA, a client certificate.
/// With options set, a bare `host:port` means `https://`, and `http://` is refused.
pub fn parse_server_with(s: &str, options: &TlsOptions) -> Result<Endpoint, ClientError> {
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
        None if options.is_set() => (true, format!("https://{input}")),
        None => (false, format!("http://{input}")),
    };
    if !tls && options.is_set() {
        return Err(bad(
            "a CA file or client certificate needs an https:// server",
        ));
    }
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
            .tls_config(options.client_config())
            .map_err(|e| ClientError::BadTls(error_chain(&e)))?;
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
    connect_with(server, &TlsOptions::default()).await
}

/// [`connect`] with TLS options (see [`parse_server_with`]).
pub async fn connect_with(server: &str, options: &TlsOptions) -> Result<Channel, ClientError> {
    let endpoint = parse_server_with(server, options)?;
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
}
