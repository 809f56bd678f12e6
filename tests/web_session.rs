//! The web listener against a node process, with tokio-tungstenite as the WebSocket client:
//! the `Session` protocol over a WebSocket drives the same sessions as gRPC, upgraded sockets
//! stay bounded by the connection cap, and past the frame rate the node stops reading (API.md,
//! "Browsers: the web listener"). Python's `websockets` covers the rest from outside
//! (tests/conformance/test_web.py).

mod common;

use std::time::Duration;

use common::node_process::NodeProcess;
use common::*;
use futures::{SinkExt, StreamExt};
use presence_node::client::Session;
use presence_node::proto::{
    client_frame, server_frame, ClientFrame, Heartbeat, ServerFrame, Status,
};
use prost::Message as _;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn web_node(args: &[&str]) -> (NodeProcess, String) {
    let web = free_addr();
    let mut all = vec!["--web-addr", web.as_str()];
    all.extend_from_slice(args);
    let node = NodeProcess::start(&all).await;
    let addr = web.clone();
    eventually("the web listener", || {
        let addr = addr.clone();
        async move { tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ()) }
    })
    .await;
    (node, web)
}

/// A WebSocket session of `user` with the binary subprotocol.
async fn open(web: &str, user: &str) -> Ws {
    try_open(web, user).await.expect("upgraded")
}

/// [`open`], `None` when the upgrade fails.
async fn try_open(web: &str, user: &str) -> Option<Ws> {
    let mut request = format!("ws://{web}/v1/session?user_id={user}")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "presence.v1.proto".parse().unwrap(),
    );
    let (ws, response) =
        tokio::time::timeout(patience(), tokio_tungstenite::connect_async(request))
            .await
            .expect("upgrade within the patience")
            .ok()?;
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "presence.v1.proto"
    );
    Some(ws)
}

async fn send(ws: &mut Ws, kind: client_frame::Kind) {
    let frame = ClientFrame {
        r#ref: 1,
        kind: Some(kind),
    };
    ws.send(Message::Binary(frame.encode_to_vec().into()))
        .await
        .unwrap();
}

/// The next server frame (pings skipped), within `within`; `None` when the socket closed.
async fn recv_within(ws: &mut Ws, within: Duration) -> Option<Option<ServerFrame>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next()).await.ok()?;
        match message {
            Some(Ok(Message::Binary(bytes))) => {
                return Some(Some(ServerFrame::decode(bytes.as_ref()).unwrap()))
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Some(None),
            Some(Ok(_)) => {}
        }
    }
}

async fn hello(ws: &mut Ws) {
    send(ws, client_frame::Kind::Hello(common::hello("web"))).await;
    let frame = recv_within(ws, patience())
        .await
        .flatten()
        .expect("welcome");
    assert!(matches!(frame.kind, Some(server_frame::Kind::Welcome(_))));
}

#[tokio::test]
async fn a_websocket_session_is_a_session_for_grpc_watchers() {
    let (node, web) = web_node(&["--offline-grace-ms", "10000"]).await;
    let (mut bob, _) = Session::open(
        node.channel().await,
        &user_creds("bob"),
        common::hello("desk"),
    )
    .await
    .unwrap();
    assert_eq!(
        subscribe(&mut bob, &["alice"]).await[0].status,
        Status::Offline as i32
    );
    let mut alice = open(&web, "alice").await;
    hello(&mut alice).await;
    assert_eq!(
        next_update_of(&mut bob, "alice").await.status,
        Status::Online as i32
    );
    send(
        &mut alice,
        client_frame::Kind::SetStatus(presence_node::proto::SetStatus {
            status: Status::Busy as i32,
            status_text: "in a call".into(),
        }),
    )
    .await;
    let busy = next_update_of(&mut bob, "alice").await;
    assert_eq!(
        (busy.status, busy.status_text.as_str()),
        (Status::Busy as i32, "in a call")
    );
    // A close frame is a clean end: OFFLINE at once, not after the 10 s grace.
    alice.close(None).await.unwrap();
    let offline = tokio::time::timeout(Duration::from_secs(5), next_update_of(&mut bob, "alice"))
        .await
        .expect("OFFLINE well before the grace");
    assert_eq!(offline.status, Status::Offline as i32);
}

#[tokio::test]
async fn an_upgraded_socket_still_counts_toward_the_connection_cap() {
    let (_node, web) = web_node(&["--max-connections", "1"]).await;
    // The listener's readiness probe may hold the one slot for a moment.
    let addr = web.clone();
    let mut alice = eventually("a first session", || {
        let addr = addr.clone();
        async move { try_open(&addr, "alice").await }
    })
    .await;
    hello(&mut alice).await;
    // hyper let go of the upgraded connection; the cap must still count it.
    let mut second = tokio::net::TcpStream::connect(&web).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(patience(), second.read(&mut buf))
        .await
        .expect("the connection over the cap is closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "closed, not served");
    alice.close(None).await.unwrap();
    drop(alice);
    // Once the session's socket is gone, the slot is free again.
    let addr = web.clone();
    eventually("a new session after the first ended", || {
        let addr = addr.clone();
        async move {
            let mut ws = try_open(&addr, "bob").await?;
            send(&mut ws, client_frame::Kind::Hello(common::hello("web"))).await;
            recv_within(&mut ws, Duration::from_millis(500))
                .await
                .flatten()
                .map(|_| ())
        }
    })
    .await;
}

#[tokio::test]
async fn past_the_frame_rate_the_node_stops_reading_and_the_session_lives() {
    let (_node, web) = web_node(&["--frame-rate-per-s", "2", "--frame-rate-burst", "2"]).await;
    let mut alice = open(&web, "alice").await;
    hello(&mut alice).await;
    for _ in 0..20 {
        send(&mut alice, client_frame::Kind::Heartbeat(Heartbeat {})).await;
    }
    // 20 heartbeats at once, read at 2 per second: about 3 acks in the first second.
    let mut acks = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1200);
    while let Some(Some(frame)) =
        recv_within(&mut alice, deadline - tokio::time::Instant::now()).await
    {
        assert!(matches!(
            frame.kind,
            Some(server_frame::Kind::HeartbeatAck(_))
        ));
        acks += 1;
    }
    assert!(
        (1..=6).contains(&acks),
        "{acks} acks in 1.2 s at 2 frames/s"
    );
    // Not refused, only slowed: the rest are answered later on the same session.
    let more = recv_within(&mut alice, patience()).await.flatten();
    assert!(matches!(
        more.and_then(|f| f.kind),
        Some(server_frame::Kind::HeartbeatAck(_))
    ));
}
