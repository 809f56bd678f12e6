//! API.md semantics 8 (every limit refuses the whole frame with the named error, and the
//! session goes on) and the per-session rate limits.

mod common;

use common::*;
use presence_node::client::get_presence;
use presence_node::proto::{server_frame, ErrorCode, Status};

const INVALID_ARGUMENT: i32 = ErrorCode::InvalidArgument as i32;
const INVALID_USER_ID: i32 = ErrorCode::InvalidUserId as i32;

async fn subscribe_answer(
    session: &mut presence_node::client::Session,
    users: Vec<String>,
) -> Result<usize, i32> {
    let r = session.subscribe(users).await.unwrap();
    recv_until(session, "subscribe answer", |k| match k {
        server_frame::Kind::Snapshot(s) if s.r#ref == r => Some(Ok(s.presences.len())),
        server_frame::Kind::Error(e) if e.r#ref == r => Some(Err(e.code)),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn user_ids_must_be_1_to_128_bytes_without_control_characters() {
    let node = TestNode::start(&[]).await;
    let (mut s, _) = node.session("alice", "ios").await;
    for bad in [
        String::new(),
        "x".repeat(129),
        "a\nb".into(),
        "tab\there".into(),
    ] {
        assert_eq!(
            subscribe_answer(&mut s, vec!["ok".into(), bad.clone()]).await,
            Err(INVALID_USER_ID),
            "{bad:?}"
        );
    }
    // 128 bytes of multi-byte UTF-8 is fine.
    assert_eq!(subscribe_answer(&mut s, vec!["é".repeat(64)]).await, Ok(1));
    // The refused frames were refused whole: only the last subscription counts.
    assert_eq!(node.node.sessions.len(), 1);
    // "ok" came in every refused frame: it must not be watched. It comes online, then a
    // user really watched does (the marker): alice is sent the marker's change and nothing
    // of "ok" before it.
    assert_eq!(subscribe_answer(&mut s, ids(&["marker"])).await, Ok(1));
    let (_ok, _) = node.session("ok", "ios").await;
    let (_marker, _) = node.session("marker", "ios").await;
    let seen = updates_until_marker(&mut s, "marker").await;
    assert!(
        seen.iter().all(|p| p.user_id != "ok"),
        "a refused subscribe left \"ok\" watched: {seen:?}"
    );
    let err = get_presence(
        node.channel().await,
        &user_creds("bob"),
        vec!["x".repeat(129)],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument));
}

#[tokio::test]
async fn status_text_is_at_most_256_bytes() {
    let node = TestNode::start(&[]).await;
    let (mut s, _) = node.session("alice", "ios").await;
    let r = s.set_status(Status::Away, "é".repeat(129)).await.unwrap();
    assert_eq!(answer(&mut s, r).await, Err(INVALID_ARGUMENT));
    let r = s.set_status(Status::Away, "a".repeat(256)).await.unwrap();
    assert_eq!(answer(&mut s, r).await, Ok(()));
}

#[tokio::test]
async fn offline_and_unspecified_cannot_be_chosen() {
    let node = TestNode::start(&[]).await;
    let (mut s, _) = node.session("alice", "ios").await;
    for status in [Status::Offline, Status::Unspecified] {
        let r = s.set_status(status, "").await.unwrap();
        assert_eq!(
            answer(&mut s, r).await,
            Err(ErrorCode::InvalidStatus as i32)
        );
    }
    let p = get_presence(node.channel().await, &user_creds("bob"), ids(&["alice"]))
        .await
        .unwrap();
    assert_eq!(
        status_of(&p[0]),
        Status::Online,
        "refused frames changed nothing"
    );
}

#[tokio::test]
async fn at_most_1000_ids_per_frame_and_request() {
    let node = TestNode::start(&["--subscribe-rate-burst", "100"]).await;
    let (mut s, _) = node.session("alice", "ios").await;
    let many: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    assert_eq!(
        subscribe_answer(&mut s, many.clone()).await,
        Err(INVALID_ARGUMENT)
    );
    assert_eq!(
        subscribe_answer(&mut s, many[..1000].to_vec()).await,
        Ok(1000)
    );
    let r = s.unsubscribe(many.clone()).await.unwrap();
    assert_eq!(answer(&mut s, r).await, Err(INVALID_ARGUMENT));
    let err = get_presence(node.channel().await, &user_creds("bob"), many.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument));
    let ok = get_presence(
        node.channel().await,
        &user_creds("bob"),
        many[..1000].to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(ok.len(), 1000);
}

#[tokio::test]
async fn watched_users_per_session_are_capped() {
    let node = TestNode::start(&["--max-subscriptions", "5"]).await;
    let (mut s, welcome) = node.session("alice", "ios").await;
    assert_eq!(welcome.max_subscriptions, 5);
    assert_eq!(subscribe_answer(&mut s, ids(&["a", "b", "c"])).await, Ok(3));
    // Re-subscribing to watched users does not count twice.
    assert_eq!(
        subscribe_answer(&mut s, ids(&["a", "b", "d", "e"])).await,
        Ok(4)
    );
    assert_eq!(
        subscribe_answer(&mut s, ids(&["f"])).await,
        Err(ErrorCode::TooManySubscriptions as i32)
    );
    let r = s.unsubscribe(ids(&["a"])).await.unwrap();
    assert_eq!(answer(&mut s, r).await, Ok(()));
    assert_eq!(subscribe_answer(&mut s, ids(&["f"])).await, Ok(1));
}

#[tokio::test]
async fn set_status_is_rate_limited_per_session() {
    let node = TestNode::start(&["--status-rate-per-s", "1", "--status-rate-burst", "3"]).await;
    let (mut s, _) = node.session("alice", "ios").await;
    let mut refs = Vec::new();
    for i in 0..10 {
        let status = if i % 2 == 0 {
            Status::Away
        } else {
            Status::Busy
        };
        refs.push(s.set_status(status, "").await.unwrap());
    }
    let mut answers = Vec::new();
    for r in refs {
        answers.push(answer(&mut s, r).await);
    }
    let accepted = answers.iter().filter(|a| a.is_ok()).count();
    let limited = answers
        .iter()
        .filter(|a| **a == Err(ErrorCode::RateLimited as i32))
        .count();
    assert!(accepted >= 3, "the burst is allowed: {answers:?}");
    assert!(limited >= 5, "the rest is refused: {answers:?}");
    assert_eq!(accepted + limited, 10);
    // Another session is not affected.
    let (mut other, _) = node.session("bob", "ios").await;
    let r = other.set_status(Status::Away, "").await.unwrap();
    assert_eq!(answer(&mut other, r).await, Ok(()));
}

#[tokio::test]
async fn subscribe_and_unsubscribe_are_rate_limited_per_session() {
    let node =
        TestNode::start(&["--subscribe-rate-per-s", "1", "--subscribe-rate-burst", "2"]).await;
    let (mut s, _) = node.session("alice", "ios").await;
    let mut results = Vec::new();
    for i in 0..8 {
        results.push(subscribe_answer(&mut s, vec![format!("u{i}")]).await);
    }
    assert!(
        results.iter().filter(|r| r.is_ok()).count() >= 2,
        "{results:?}"
    );
    assert!(
        results.contains(&Err(ErrorCode::RateLimited as i32)),
        "{results:?}"
    );
}
