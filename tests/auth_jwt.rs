//! JWT mode (API.md, Identity): the identity is the `sub` of a valid `authorization: Bearer`
//! token; anything else fails the call with UNAUTHENTICATED before any frame is read, for
//! the `Session` stream and for `GetPresence` alike. A session whose token lapses while it is
//! connected is ended with UNAUTHENTICATED and its user goes OFFLINE for watchers.
//!
//! Token times are relative to the node's manual clock (`common::T0`, unix ms); the node
//! runs with the default 5 s leeway on `exp` and `nbf`.

mod common;

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use presence_node::client::{self, ClientError, Credentials, Session};
use presence_node::proto::presence_service_client::PresenceServiceClient;
use presence_node::proto::{
    client_frame, server_frame, ClientFrame, GetPresenceRequest, Status as PresenceStatus,
};
use serde::Serialize;
use tonic::Code;

const SECRET: &str = "presence-test-secret-7f3a9c1e5b";
const OTHER_SECRET: &str = "someone-elses-secret-0d4e8b2a6c";
/// The node's default `--jwt-leeway-ms`.
const LEEWAY_MS: u64 = 5_000;

/// `T0` as a JWT NumericDate (whole seconds).
const T0_S: u64 = T0 / 1000;

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
}

fn claims(sub: &str, exp_s: u64) -> Claims<'_> {
    Claims {
        sub,
        iat: T0_S,
        exp: exp_s,
        nbf: None,
    }
}

fn hs256(claims: &Claims<'_>, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .expect("token encodes")
}

/// A token valid for an hour of node time.
fn token(sub: &str) -> Credentials {
    Credentials::Token(hs256(&claims(sub, T0_S + 3600), SECRET))
}

async fn jwt_node() -> TestNode {
    TestNode::start(&["--auth", "jwt", "--jwt-secret", SECRET]).await
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Opens a session that must be refused; returns the status it was refused with.
async fn refused_session(node: &TestNode, credentials: &Credentials) -> tonic::Status {
    match Session::open(node.channel().await, credentials, hello("web")).await {
        Err(ClientError::Refused(status)) => status,
        Err(other) => panic!("expected a gRPC status, got {other:?}"),
        Ok((_, welcome)) => panic!("session accepted: {welcome:?}"),
    }
}

/// A `GetPresence` that must be refused; returns the status it was refused with.
async fn refused_get(node: &TestNode, credentials: &Credentials) -> tonic::Status {
    match client::get_presence(node.channel().await, credentials, ids(&["alice"])).await {
        Err(ClientError::Refused(status)) => status,
        Err(other) => panic!("expected a gRPC status, got {other:?}"),
        Ok(presences) => panic!("GetPresence answered: {presences:?}"),
    }
}

/// Both calls fail with UNAUTHENTICATED, and the message never echoes the token.
async fn assert_unauthenticated(node: &TestNode, what: &str, credentials: &Credentials) {
    let session = refused_session(node, credentials).await;
    let get = refused_get(node, credentials).await;
    for (call, status) in [("Session", &session), ("GetPresence", &get)] {
        println!(
            "{what}: {call} -> {:?}: {}",
            status.code(),
            status.message()
        );
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{what}: {call}: {status:?}"
        );
        if let Credentials::Token(token) = credentials {
            if token.len() >= 8 {
                assert!(
                    !status.message().contains(token.as_str()),
                    "{what}: {call}: the message echoes the token: {}",
                    status.message()
                );
            }
        }
    }
}

#[tokio::test]
async fn valid_token_identifies_the_user_by_sub() {
    let node = jwt_node().await;
    let (_alice, welcome) = Session::open(node.channel().await, &token("alice"), hello("ios"))
        .await
        .expect("a valid token opens a session");
    assert_eq!(welcome.user_id, "alice");

    // GetPresence with a valid token of another user sees alice online (public view).
    let presences = client::get_presence(node.channel().await, &token("bob"), ids(&["alice"]))
        .await
        .expect("a valid token may call GetPresence");
    assert_eq!(presences.len(), 1);
    assert_eq!(presences[0].user_id, "alice");
    assert_eq!(status_of(&presences[0]), PresenceStatus::Online);
    assert_eq!(presences[0].devices, vec!["ios".to_string()]);
}

#[tokio::test]
async fn expired_token_is_unauthenticated() {
    let node = jwt_node().await;
    // One second beyond the leeway: expired.
    let expired = hs256(&claims("alice", T0_S - LEEWAY_MS / 1000 - 1), SECRET);
    assert_unauthenticated(&node, "expired", &Credentials::Token(expired)).await;

    // Within the leeway the token is still accepted (clock skew), so the refusal above is
    // about the expiry and not something else in the token.
    let within = hs256(&claims("alice", T0_S - LEEWAY_MS / 1000 + 1), SECRET);
    let (_session, welcome) = Session::open(
        node.channel().await,
        &Credentials::Token(within),
        hello("web"),
    )
    .await
    .expect("a token expired by less than the leeway is accepted");
    assert_eq!(welcome.user_id, "alice");
}

#[tokio::test]
async fn token_not_valid_yet_is_unauthenticated() {
    let node = jwt_node().await;
    let mut early = claims("alice", T0_S + 3600);
    early.nbf = Some(T0_S + 60);
    let early = hs256(&early, SECRET);
    assert_unauthenticated(&node, "nbf in the future", &Credentials::Token(early)).await;

    // An nbf within the leeway is fine.
    let mut skewed = claims("alice", T0_S + 3600);
    skewed.nbf = Some(T0_S + LEEWAY_MS / 1000 - 1);
    let skewed = Credentials::Token(hs256(&skewed, SECRET));
    let presences = client::get_presence(node.channel().await, &skewed, ids(&["alice"]))
        .await
        .expect("an nbf within the leeway is accepted");
    assert_eq!(status_of(&presences[0]), PresenceStatus::Offline);
}

#[tokio::test]
async fn token_signed_with_another_secret_is_unauthenticated() {
    let node = jwt_node().await;
    let forged = hs256(&claims("alice", T0_S + 3600), OTHER_SECRET);
    assert_unauthenticated(&node, "other secret", &Credentials::Token(forged)).await;

    // A valid token with its claims swapped for another user's keeps a signature that no
    // longer matches.
    let mallory = hs256(&claims("mallory", T0_S + 3600), SECRET);
    let alice = hs256(&claims("alice", T0_S + 3600), SECRET);
    let m: Vec<&str> = mallory.split('.').collect();
    let a: Vec<&str> = alice.split('.').collect();
    let spliced = format!("{}.{}.{}", m[0], a[1], m[2]);
    assert_unauthenticated(&node, "spliced claims", &Credentials::Token(spliced)).await;
}

#[tokio::test]
async fn garbage_token_is_unauthenticated() {
    let node = jwt_node().await;
    for garbage in [
        "not-a-jwt",
        "a.b.c",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9",
        "....",
    ] {
        assert_unauthenticated(&node, garbage, &Credentials::Token(garbage.into())).await;
    }
}

#[tokio::test]
async fn missing_authorization_is_unauthenticated() {
    let node = jwt_node().await;

    // Only the insecure mode's header: in jwt mode it identifies nobody.
    assert_unauthenticated(&node, "x-user-id only", &Credentials::User("alice".into())).await;

    // No metadata at all, with the generated client directly.
    let mut raw = PresenceServiceClient::new(node.channel().await);
    let get = raw
        .get_presence(GetPresenceRequest {
            user_ids: ids(&["alice"]),
        })
        .await
        .expect_err("GetPresence without credentials is refused");
    println!("no metadata: GetPresence -> {get:?}");
    assert_eq!(get.code(), Code::Unauthenticated);

    let frames = tokio_stream::iter(vec![ClientFrame {
        r#ref: 1,
        kind: Some(client_frame::Kind::Hello(hello("web"))),
    }]);
    let opened = tokio::time::timeout(patience(), raw.session(frames))
        .await
        .expect("the Session call answered within the patience");
    let session = match opened {
        Err(status) => status,
        // The status may also arrive as the end of the response stream.
        Ok(response) => {
            let mut stream = response.into_inner();
            let first = tokio::time::timeout(patience(), stream.message())
                .await
                .expect("the Session stream answered within the patience");
            match first {
                Err(status) => status,
                Ok(frame) => panic!("session without credentials answered: {frame:?}"),
            }
        }
    };
    println!("no metadata: Session -> {session:?}");
    assert_eq!(session.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn session_ends_when_its_token_expires() {
    let node = jwt_node().await;
    let exp_s = T0_S + 20;
    let lapses_at_ms = exp_s * 1000 + LEEWAY_MS;

    // bob's token outlives the test; alice's expires at T0 + 20 s (+ the leeway).
    let (mut bob, _) = Session::open(node.channel().await, &token("bob"), hello("web"))
        .await
        .unwrap();
    let alice_token = Credentials::Token(hs256(&claims("alice", exp_s), SECRET));
    let (mut alice, welcome) = Session::open(node.channel().await, &alice_token, hello("ios"))
        .await
        .unwrap();
    assert_eq!(welcome.user_id, "alice");
    let snapshot = subscribe(&mut bob, &["alice"]).await;
    assert_eq!(status_of(&snapshot[0]), PresenceStatus::Online);

    // Keep both sessions live (the TTL is 30 s) and move to 1 ms before the credential
    // lapses. A sweep at that instant must not end alice's session.
    node.advance(lapses_at_ms - 1 - T0);
    presence_node::sweeper::sweep(&node.node).await;
    alice.heartbeat().await.unwrap();
    recv_until(
        &mut alice,
        "alice's heartbeat ack before exp + leeway",
        |kind| matches!(kind, server_frame::Kind::HeartbeatAck(_)).then_some(()),
    )
    .await;

    // Past exp + leeway: the sweeper ends the session with UNAUTHENTICATED.
    node.advance(2);
    let end = end_of(&mut alice)
        .await
        .expect_err("the session ends with a status");
    println!("alice's session ended: {end:?}");
    assert_eq!(end.code(), Code::Unauthenticated, "{end:?}");

    // bob watches alice go OFFLINE (at once: no grace for a lapsed credential).
    let update = next_update_of(&mut bob, "alice").await;
    assert_eq!(status_of(&update), PresenceStatus::Offline, "{update:?}");
    assert!(update.version > snapshot[0].version, "{update:?}");
    assert!(update.devices.is_empty(), "{update:?}");

    // And a fresh lookup agrees.
    let presences = client::get_presence(node.channel().await, &token("bob"), ids(&["alice"]))
        .await
        .unwrap();
    assert_eq!(status_of(&presences[0]), PresenceStatus::Offline);
}

#[tokio::test]
async fn rs256_tokens_verify_with_the_public_key() {
    let public_key = fixture("rsa_public.pem");
    let node = TestNode::start(&[
        "--auth",
        "jwt",
        "--jwt-algorithm",
        "RS256",
        "--jwt-public-key-file",
        &public_key,
    ])
    .await;

    let private_pem = std::fs::read(fixture("rsa_private.pem")).unwrap();
    let signed = encode(
        &Header::new(Algorithm::RS256),
        &claims("carol", T0_S + 3600),
        &EncodingKey::from_rsa_pem(&private_pem).unwrap(),
    )
    .unwrap();
    let signed = Credentials::Token(signed);
    let (_carol, welcome) = Session::open(node.channel().await, &signed, hello("web"))
        .await
        .expect("an RS256 token signed with the private key is accepted");
    assert_eq!(welcome.user_id, "carol");
    let presences = client::get_presence(node.channel().await, &signed, ids(&["carol"]))
        .await
        .expect("GetPresence with the RS256 token");
    // Her own lookup: the owner view, online on "web".
    assert_eq!(status_of(&presences[0]), PresenceStatus::Online);

    // Algorithm confusion: an HS256 token whose "secret" is the public key must not pass.
    let public_pem = std::fs::read_to_string(&public_key).unwrap();
    let confused = hs256(&claims("carol", T0_S + 3600), &public_pem);
    assert_unauthenticated(
        &node,
        "HS256 with the public key",
        &Credentials::Token(confused),
    )
    .await;
    // Nor an HS256 token with any secret.
    let hs = hs256(&claims("carol", T0_S + 3600), SECRET);
    assert_unauthenticated(&node, "HS256 on an RS256 node", &Credentials::Token(hs)).await;
}
