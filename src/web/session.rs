//! `GET /v1/session`: a WebSocket carrying the `Session` protocol, driving the same session
//! actor as the gRPC call (admitted by `session::admission`). This adapter only moves frames:
//! client messages become the actor's inbound stream, the outbox's frames become messages,
//! and the session's result becomes the close.
//!
//! One task owns the socket. It reads a client message only when the actor's reader has
//! room for it (a channel of one, its slot reserved before reading), so a session past its
//! frame rate is not read and TCP pushes back, as HTTP/2 flow control does on the gRPC port.
//! How the client went away decides how the session ends: a close frame is a clean
//! half-close (OFFLINE at once if last), a connection lost without one is an abrupt end (the
//! offline grace), as an `END_STREAM` and an `RST_STREAM` are on gRPC. WebSocket pings are
//! answered (by tungstenite) but are not frames: they never keep a session alive.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::debug;

use super::close;
use super::codec::Subprotocol;
use super::identity;
use super::WebState;
use crate::auth::Identity;
use crate::session::admission::{self, Transport};
use crate::session::outbox::OutboxStream;
use crate::session::Inbound;
use crate::transport::connections::{ConnectionLease, HeldConnection};
use crate::transport::request_end::RequestEnd;

/// How long the node waits for the client's answer to its close (reading and dropping
/// whatever else arrives, so the close is not lost to a reset) before dropping the socket.
const CLOSE_PATIENCE: Duration = Duration::from_secs(2);

/// The WebSocket read buffer of a session (it grows for a larger message, up to the max).
const WS_READ_BUFFER_BYTES: usize = 4096;

type FrameResult = Result<crate::proto::ClientFrame, Status>;

/// The upgrade: subprotocol, identity, then the WebSocket. Refusals before the upgrade are
/// HTTP answers (400 no subprotocol, 401 no valid identity); admission refusals after it are
/// closes with their code (draining 4014, rate 4008), as a browser sees only closes.
pub async fn upgrade(State(state): State<Arc<WebState>>, request: Request) -> Response {
    let offered = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let Some(protocol) = Subprotocol::choose(offered) else {
        metrics::counter!(crate::metrics::REFUSED, "reason" => "web_subprotocol").increment(1);
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "name a subprotocol: Sec-WebSocket-Protocol: {} or {}\n",
                super::codec::PROTO,
                super::codec::JSON
            ),
        )
            .into_response();
    };
    let identity = match identity::metadata(request.headers(), request.uri())
        .map_err(Status::unauthenticated)
        .and_then(|metadata| admission::identify(&state.node, &metadata))
    {
        Ok(identity) => identity,
        Err(status) => {
            metrics::counter!(crate::metrics::REFUSED, "reason" => "web_identity").increment(1);
            return (StatusCode::UNAUTHORIZED, format!("{}\n", status.message())).into_response();
        }
    };
    let held = request
        .extensions()
        .get::<ConnectionLease>()
        .map(ConnectionLease::hold);
    let (mut parts, _body) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let max = state.node.config.max_message_bytes;
    // Small buffers: tungstenite's defaults (128 KiB each way, allocated up front) would be
    // most of an idle session's memory. Reads grow past 4 KiB only for a larger message;
    // writes go out at once (every reply is flushed anyway).
    upgrade
        .protocols([protocol.name()])
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .on_upgrade(move |socket| run(socket, state, identity, protocol, held))
}

/// One WebSocket session, from the upgrade to the close.
async fn run(
    mut socket: WebSocket,
    state: Arc<WebState>,
    identity: Identity,
    protocol: Subprotocol,
    _held: Option<HeldConnection>,
) {
    let (tx, rx) = mpsc::channel::<FrameResult>(1);
    let end = RequestEnd::default();
    let inbound = Inbound {
        frames: ReceiverStream::new(rx).boxed(),
        end: Some(end.clone()),
    };
    let opened = admission::open(
        &state.node,
        &state.supervisor,
        identity,
        inbound,
        Transport::WebSocket,
    )
    .await;
    let outbox = match opened {
        Ok(outbox) => outbox,
        Err(status) => {
            debug!(code = ?status.code(), "web session refused at admission");
            finish(&mut socket, Err(&status)).await;
            return;
        }
    };
    let ttl = Duration::from_millis(state.node.config.session_ttl_ms);
    let mut outbound = OutboxStream::new(outbox);
    let mut tx = Some(tx);
    let mut permit: Option<mpsc::OwnedPermit<FrameResult>> = None;
    loop {
        let reading = tx.is_some();
        tokio::select! {
            frame = outbound.next() => match frame {
                Some(Ok(frame)) => {
                    // A client that does not read is dropped after the session TTL (its
                    // replies pile up in the outbox meanwhile, which bounds them).
                    let sent = tokio::time::timeout(ttl, socket.send(protocol.encode(&frame))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        end.record_abrupt();
                        return;
                    }
                }
                Some(Err(status)) => {
                    finish(&mut socket, Err(&status)).await;
                    return;
                }
                None => {
                    finish(&mut socket, Ok(())).await;
                    return;
                }
            },
            reserved = reserve(tx.clone()), if reading && permit.is_none() => match reserved {
                Some(reserved) => permit = Some(reserved),
                // The actor's reader is gone: the session is ending; its result follows.
                None => tx = None,
            },
            message = socket.recv(), if reading && permit.is_some() => {
                match message {
                    Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                        let frame = protocol.decode(&message).map_err(Status::invalid_argument);
                        let bad = frame.is_err();
                        if let Some(permit) = permit.take() {
                            permit.send(frame);
                        }
                        if bad {
                            // The session ends with this status; nothing more is read.
                            tx = None;
                        }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) => {
                        end.record_clean();
                        permit = None;
                        tx = None;
                        // Sends tungstenite's answer to the close now.
                        let _ = socket.flush().await;
                    }
                    Some(Err(e)) => match bad_input(&e) {
                        Some(reason) => {
                            if let Some(permit) = permit.take() {
                                permit.send(Err(Status::invalid_argument(reason)));
                            }
                            tx = None;
                        }
                        None => {
                            end.record_abrupt();
                            permit = None;
                            tx = None;
                        }
                    },
                    None => {
                        end.record_abrupt();
                        permit = None;
                        tx = None;
                    }
                }
            }
        }
    }
}

/// A slot for one frame in the actor's inbound channel; `None` once the reader is gone.
async fn reserve(tx: Option<mpsc::Sender<FrameResult>>) -> Option<mpsc::OwnedPermit<FrameResult>> {
    match tx {
        Some(tx) => tx.reserve_owned().await.ok(),
        None => std::future::pending().await,
    }
}

/// What a read error says about the client's input: `Some(reason)` for a message the node
/// refuses (too large, not WebSocket, not UTF-8 text), `None` for a lost connection.
fn bad_input(error: &axum::Error) -> Option<String> {
    use std::error::Error as _;
    let mut source: Option<&(dyn std::error::Error + 'static)> = error.source();
    while let Some(e) = source {
        if let Some(e) = e.downcast_ref::<tungstenite::Error>() {
            return match e {
                tungstenite::Error::Capacity(e) => Some(format!("message too large: {e}")),
                // The connection ended without a close: lost, not bad input.
                tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                ) => None,
                tungstenite::Error::Protocol(e) => Some(format!("WebSocket protocol error: {e}")),
                tungstenite::Error::Utf8(_) => Some("text message is not UTF-8".to_owned()),
                _ => None,
            };
        }
        source = e.source();
    }
    None
}

/// Sends the close for `result` and waits (bounded) for the client's answer, dropping what
/// else it sends: closing the socket with unread input would reset the connection, and the
/// client could lose the close and its code.
async fn finish(socket: &mut WebSocket, result: Result<(), &Status>) {
    let _ = tokio::time::timeout(CLOSE_PATIENCE, async {
        if socket.send(close::message(result)).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}
