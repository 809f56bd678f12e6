//! The safe defaults (API.md "Transport security and safe defaults"): what a node refuses to
//! start with (exit 64, naming the setting), and secrets that never show in logs (at
//! RUST_LOG=debug), `--help` or error messages. Real node processes; a real redis-server with
//! a password.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{hello, patience};
use presence_node::client::{self, Credentials, Session};
use presence_node::proto::presence_admin_service_client::PresenceAdminServiceClient;
use presence_node::proto::StatsRequest;
use tokio::process::Command;

const NODE_BIN: &str = env!("CARGO_BIN_EXE_presence-node");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The node binary with no PRESENCE_ setting inherited from the test's environment.
fn node_command(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut command = Command::new(NODE_BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PRESENCE_") {
            command.env_remove(key);
        }
    }
    command
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn assert_exit_64(args: &[&str], envs: &[(&str, &str)], setting: &str) {
    let output = tokio::time::timeout(patience(), node_command(args, envs).output())
        .await
        .unwrap_or_else(|_| panic!("presence-node kept running with {args:?} {envs:?}"))
        .expect("run presence-node");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(64),
        "{args:?} {envs:?}: {stderr}"
    );
    assert!(
        stderr.contains(setting),
        "{args:?} {envs:?}: the message does not name {setting}: {stderr}"
    );
}

#[tokio::test]
async fn insecure_identity_on_a_public_address_exits_64() {
    assert_exit_64(&["--listen-addr", "0.0.0.0:0"], &[], "PRESENCE_AUTH").await;
    assert_exit_64(&[], &[("PRESENCE_LISTEN_ADDR", "[::]:0")], "PRESENCE_AUTH").await;
}

#[tokio::test]
async fn insecure_on_a_public_address_starts_with_the_explicit_opt_in() {
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let mut node = node_command(
        &["--listen-addr", &listen],
        &[("PRESENCE_ALLOW_INSECURE", "true")],
    )
    .spawn()
    .expect("start presence-node");
    let url = format!("http://127.0.0.1:{port}");
    let served = common::eventually("the opted-in node serves", || async {
        let channel = client::connect(&url).await.ok()?;
        client::get_presence(channel, &Credentials::User("bob".into()), vec!["a".into()])
            .await
            .ok()
    })
    .await;
    assert_eq!(served.len(), 1);
    node.kill().await.unwrap();
}

#[tokio::test]
async fn an_empty_admin_token_exits_64() {
    let admin = format!("127.0.0.1:{}", free_port());
    assert_exit_64(
        &["--admin-addr", &admin],
        &[("PRESENCE_ADMIN_TOKEN", "")],
        "PRESENCE_ADMIN_TOKEN",
    )
    .await;
    assert_exit_64(
        &["--admin-addr", &admin, "--admin-token", ""],
        &[],
        "PRESENCE_ADMIN_TOKEN",
    )
    .await;
}

#[tokio::test]
async fn a_public_admin_address_without_a_token_exits_64() {
    assert_exit_64(&["--admin-addr", "0.0.0.0:0"], &[], "PRESENCE_ADMIN_TOKEN").await;
}

/// A redis-server that requires a password, killed on drop.
struct PasswordRedis {
    port: u16,
    child: std::process::Child,
}

impl PasswordRedis {
    fn start(password: &str) -> Self {
        let port = free_port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                password,
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        Self { port, child }
    }
}

impl Drop for PasswordRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hs256(sub: &str, secret: &str) -> String {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        exp: u64,
    }
    let exp = client::format::now_ms() / 1000 + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &Claims { sub, exp },
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn secrets_never_reach_the_logs_at_debug_level() {
    let jwt_secret = "jwt-secret-0123456789abcdef";
    let admin_token = "admin-token-0123456789abcdef";
    let redis_password = "redis-password-0123456789";
    let redis = PasswordRedis::start(redis_password);
    let redis_url = format!("redis://:{redis_password}@127.0.0.1:{}", redis.port);
    let port = free_port();
    let admin_port = free_port();
    let node = node_command(
        &[
            "--listen-addr",
            &format!("127.0.0.1:{port}"),
            "--admin-addr",
            &format!("127.0.0.1:{admin_port}"),
            "--auth",
            "jwt",
        ],
        &[
            ("RUST_LOG", "debug"),
            ("PRESENCE_JWT_SECRET", jwt_secret),
            ("PRESENCE_ADMIN_TOKEN", admin_token),
            ("PRESENCE_REDIS_URL", &redis_url),
        ],
    )
    .spawn()
    .expect("start presence-node");

    let url = format!("http://127.0.0.1:{port}");
    let token = hs256("alice", jwt_secret);
    let alice = Credentials::Token(token.clone());
    let (mut session, welcome) = common::eventually("the node takes a session", || async {
        let channel = client::connect(&url).await.ok()?;
        Session::open(channel, &alice, hello("ios")).await.ok()
    })
    .await;
    assert_eq!(welcome.user_id, "alice");
    common::subscribe(&mut session, &["bob"]).await;
    // A wrong token, and the admin API with the right and a wrong token.
    let channel = client::connect(&url).await.unwrap();
    let wrong = Credentials::Token(hs256("mallory", "not-the-secret"));
    assert!(client::get_presence(channel, &wrong, vec!["alice".into()])
        .await
        .is_err());
    let admin_channel = client::connect(&format!("http://127.0.0.1:{admin_port}"))
        .await
        .unwrap();
    let mut admin = PresenceAdminServiceClient::new(admin_channel);
    for given in [admin_token, "a-wrong-admin-token"] {
        let mut request = tonic::Request::new(StatsRequest {});
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {given}").parse().unwrap());
        let answered = tokio::time::timeout(patience(), admin.stats(request))
            .await
            .expect("admin answers");
        assert_eq!(answered.is_ok(), given == admin_token);
    }
    session.close();

    // Stop it (SIGTERM: the drain logs too) and read everything it wrote.
    let pid = node.id().expect("running") as i32;
    send_signal(pid, libc::SIGTERM);
    let output = tokio::time::timeout(Duration::from_secs(30), node.wait_with_output())
        .await
        .expect("node stops after SIGTERM")
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(log.contains("DEBUG"), "not a debug log:\n{log}");
    for (what, secret) in [
        ("the JWT secret", jwt_secret),
        ("the admin token", admin_token),
        ("the Redis password", redis_password),
        ("a caller's JWT", token.as_str()),
    ] {
        assert!(!log.contains(secret), "{what} is in the log");
    }
}

fn send_signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped yet.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}

#[tokio::test]
async fn secrets_never_show_in_help() {
    let output = tokio::time::timeout(
        patience(),
        node_command(
            &["--help"],
            &[
                ("PRESENCE_JWT_SECRET", "help-jwt-secret-42"),
                ("PRESENCE_ADMIN_TOKEN", "help-admin-token-42"),
                (
                    "PRESENCE_REDIS_URL",
                    "redis://:help-redis-pw-42@127.0.0.1:1",
                ),
            ],
        )
        .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("PRESENCE_JWT_SECRET"), "{help}");
    for secret in [
        "help-jwt-secret-42",
        "help-admin-token-42",
        "help-redis-pw-42",
    ] {
        assert!(!help.contains(secret), "{secret} in --help:\n{help}");
    }
}
