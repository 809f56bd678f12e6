//! Sessions over the web listener's WebSocket (`presence.v1.proto`), next to gRPC ones, so a
//! scenario can measure both transports in one run (`--transport ws|grpc|both`).

use futures::{SinkExt, StreamExt};
use presence_node::client::{Credentials, Session};
use presence_node::proto::{
    client_frame, server_frame, ClientFrame, Heartbeat, Hello, ServerFrame, Subscribe, Welcome,
};
use prost::Message as _;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Which transport the sessions of a scenario use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Grpc,
    Ws,
    /// gRPC first, then WebSocket, each on a node of its own, one report each.
    Both,
}

impl Transport {
    /// The transports one run measures, in order.
    pub fn each(self) -> Vec<Transport> {
        match self {
            Transport::Both => vec![Transport::Grpc, Transport::Ws],
            one => vec![one],
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Ws => "ws",
            Transport::Both => "both",
        }
    }
}

/// One session on either transport.
pub enum AnySession {
    Grpc(Session),
    Ws(WsSession),
}

impl AnySession {
    pub async fn heartbeat(&mut self) -> Result<(), String> {
        match self {
            AnySession::Grpc(s) => s.heartbeat().await.map(|_| ()).map_err(|e| e.to_string()),
            AnySession::Ws(s) => s.send(client_frame::Kind::Heartbeat(Heartbeat {})).await,
        }
    }

    pub async fn subscribe(&mut self, user_ids: Vec<String>) -> Result<(), String> {
        match self {
            AnySession::Grpc(s) => s
                .subscribe(user_ids)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            AnySession::Ws(s) => {
                s.send(client_frame::Kind::Subscribe(Subscribe { user_ids }))
                    .await
            }
        }
    }

    /// The next frame; `Ok(None)` once the session ended cleanly.
    pub async fn recv(&mut self) -> Result<Option<ServerFrame>, String> {
        match self {
            AnySession::Grpc(s) => s.recv().await.map_err(|e| e.to_string()),
            AnySession::Ws(s) => s.recv().await,
        }
    }

    pub async fn close(&mut self) {
        match self {
            AnySession::Grpc(s) => s.close(),
            AnySession::Ws(s) => {
                let _ = s.ws.close(None).await;
            }
        }
    }
}

/// A `Session` over a WebSocket to `ws://ADDR/v1/session`.
pub struct WsSession {
    ws: Socket,
    next_ref: u64,
}

impl WsSession {
    /// Connects as `user` (insecure identity, `user_id`), says `hello` and waits for welcome.
    pub async fn open(
        web_addr: &str,
        user: &Credentials,
        hello: Hello,
    ) -> Result<(Self, Welcome), String> {
        let query = match user {
            Credentials::User(id) => format!("user_id={id}"),
            Credentials::Token(token) => format!("access_token={token}"),
        };
        let mut request = format!("ws://{web_addr}/v1/session?{query}")
            .into_client_request()
            .map_err(|e| e.to_string())?;
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "presence.v1.proto".parse().expect("a header value"),
        );
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| e.to_string())?;
        let mut session = Self { ws, next_ref: 1 };
        session.send(client_frame::Kind::Hello(hello)).await?;
        loop {
            match session.recv().await? {
                Some(ServerFrame {
                    kind: Some(server_frame::Kind::Welcome(welcome)),
                }) => return Ok((session, welcome)),
                Some(_) => {}
                None => return Err("closed before welcome".into()),
            }
        }
    }

    pub async fn send(&mut self, kind: client_frame::Kind) -> Result<(), String> {
        let frame = ClientFrame {
            r#ref: self.next_ref,
            kind: Some(kind),
        };
        self.next_ref += 1;
        self.ws
            .send(Message::Binary(frame.encode_to_vec().into()))
            .await
            .map_err(|e| e.to_string())
    }

    pub async fn recv(&mut self) -> Result<Option<ServerFrame>, String> {
        next_frame(&mut self.ws).await
    }
}

/// The sending half of a session on either transport (churn's driver).
pub enum AnySender {
    Grpc(presence_node::client::SessionSender),
    Ws(WsSender),
}

/// The receiving half of a session on either transport (one per session, held for the run:
/// the size difference does not matter).
#[allow(clippy::large_enum_variant)]
pub enum AnyReceiver {
    Grpc(presence_node::client::SessionReceiver),
    Ws(WsReceiver),
}

impl AnySession {
    /// Separate halves, so one task can send while another receives.
    pub fn split(self) -> (AnySender, AnyReceiver) {
        match self {
            AnySession::Grpc(s) => {
                let (tx, rx) = s.split();
                (AnySender::Grpc(tx), AnyReceiver::Grpc(rx))
            }
            AnySession::Ws(s) => {
                let (sink, stream) = s.ws.split();
                (
                    AnySender::Ws(WsSender {
                        sink,
                        next_ref: s.next_ref,
                    }),
                    AnyReceiver::Ws(WsReceiver { stream }),
                )
            }
        }
    }

    /// Sends a frame; returns its `ref`.
    pub async fn send(&mut self, kind: client_frame::Kind) -> Result<u64, String> {
        match self {
            AnySession::Grpc(s) => s.send(kind).await.map_err(|e| e.to_string()),
            AnySession::Ws(s) => {
                let r = s.next_ref;
                s.send(kind).await.map(|()| r)
            }
        }
    }
}

impl AnySender {
    /// Sends a frame; returns its `ref`.
    pub async fn send(&mut self, kind: client_frame::Kind) -> Result<u64, String> {
        match self {
            AnySender::Grpc(s) => s.send(kind).await.map_err(|e| e.to_string()),
            AnySender::Ws(s) => {
                let r = s.next_ref;
                s.next_ref += 1;
                let frame = ClientFrame {
                    r#ref: r,
                    kind: Some(kind),
                };
                s.sink
                    .send(Message::Binary(frame.encode_to_vec().into()))
                    .await
                    .map(|()| r)
                    .map_err(|e| e.to_string())
            }
        }
    }

    pub async fn heartbeat(&mut self) -> Result<u64, String> {
        self.send(client_frame::Kind::Heartbeat(Heartbeat {})).await
    }

    pub async fn set_status(
        &mut self,
        status: presence_node::proto::Status,
        text: String,
    ) -> Result<u64, String> {
        self.send(client_frame::Kind::SetStatus(
            presence_node::proto::SetStatus {
                status: status as i32,
                status_text: text,
            },
        ))
        .await
    }
}

impl AnyReceiver {
    pub async fn recv(&mut self) -> Result<Option<ServerFrame>, String> {
        match self {
            AnyReceiver::Grpc(r) => r.recv().await.map_err(|e| e.to_string()),
            AnyReceiver::Ws(r) => next_frame(&mut r.stream).await,
        }
    }
}

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

pub struct WsSender {
    sink: futures::stream::SplitSink<Socket, Message>,
    next_ref: u64,
}

pub struct WsReceiver {
    stream: futures::stream::SplitStream<Socket>,
}

/// The next server frame of a WebSocket (pings skipped); `Ok(None)` for a normal close.
async fn next_frame<S>(stream: &mut S) -> Result<Option<ServerFrame>, String>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match stream.next().await {
            Some(Ok(Message::Binary(bytes))) => {
                return ServerFrame::decode(bytes.as_ref())
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
            Some(Ok(Message::Close(frame))) => {
                return match frame {
                    Some(f) if u16::from(f.code) >= 4000 => {
                        Err(format!("closed {}: {}", u16::from(f.code), f.reason))
                    }
                    _ => Ok(None),
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Ok(None),
        }
    }
}
