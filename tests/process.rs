//! The shipped programs as real processes: `presence-node` (configuration errors, draining on
//! SIGTERM, gRPC reflection) and the `presence` command-line client.
//!
//! Every process runs on a free port of 127.0.0.1 with its output captured; the output is
//! printed when a test fails, and the process is killed when its guard is dropped.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::node_process::{NodeProcess, Process, NODE_BIN};
use common::{
    end_of, eventually, eventually_within, free_addr, hello, patience, recv_until, subscribe,
    user_creds,
};
use presence_node::client::{self, ClientError, Session};
use presence_node::proto::{server_frame, Status as PresenceStatus};
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const CLI_BIN: &str = env!("CARGO_BIN_EXE_presence");
const SERVICE: &str = "presence.v1.PresenceService";
/// The node's default `--offline-grace-ms`.
const OFFLINE_GRACE_MS: u64 = 3_000;

async fn health_of(health: &mut HealthClient<Channel>) -> Result<ServingStatus, tonic::Status> {
    let response = health
        .check(HealthCheckRequest {
            service: SERVICE.into(),
        })
        .await?;
    Ok(ServingStatus::try_from(response.into_inner().status).expect("known serving status"))
}

/// Runs the CLI to completion (within the patience).
async fn cli(args: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::new(CLI_BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PRESENCE_") {
            command.env_remove(key);
        }
    }
    command.args(args).stdin(Stdio::null()).kill_on_drop(true);
    tokio::time::timeout(patience(), command.output())
        .await
        .unwrap_or_else(|_| panic!("`presence {}` did not finish", args.join(" ")))
        .expect("the presence CLI runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------------------
// Bad configuration: exit code 64, the message names the setting.

async fn assert_bad_config(args: &[&str], envs: &[(&str, &str)], setting: &str) {
    // A free port, so that a node that wrongly starts does not fight over 50051.
    let listen = free_addr();
    let mut all = vec!["--listen-addr", listen.as_str()];
    all.extend_from_slice(args);
    let mut node = Process::spawn(NODE_BIN, &all, envs);
    let status = node
        .wait_exit(patience())
        .await
        .unwrap_or_else(|| panic!("presence-node kept running with {args:?} {envs:?}"));
    let stderr = node.stderr();
    println!("{args:?} {envs:?}: {status}; stderr:\n{stderr}");
    assert_eq!(status.code(), Some(64), "exit code; stderr: {stderr}");
    assert!(
        stderr.contains(setting),
        "the message does not name {setting}: {stderr:?}"
    );
}

#[tokio::test]
async fn ttl_not_above_heartbeat_interval_exits_64() {
    assert_bad_config(
        &[
            "--session-ttl-ms",
            "5000",
            "--heartbeat-interval-ms",
            "10000",
        ],
        &[],
        "PRESENCE_SESSION_TTL_MS",
    )
    .await;
}

#[tokio::test]
async fn unknown_auth_mode_from_the_environment_exits_64() {
    assert_bad_config(&[], &[("PRESENCE_AUTH", "magic")], "PRESENCE_AUTH").await;
}

#[tokio::test]
async fn jwt_without_a_secret_exits_64() {
    assert_bad_config(&["--auth", "jwt"], &[], "PRESENCE_JWT_SECRET").await;
}

// ---------------------------------------------------------------------------------------
// SIGTERM: drain within the shutdown grace.

const SHUTDOWN_GRACE_MS: u64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_within_the_grace() {
    let mut node = NodeProcess::start(&["--shutdown-grace-ms", "2000"]).await;
    // A device that never closes its session (but keeps reading).
    let (mut alice, _) = Session::open(node.channel().await, &user_creds("alice"), hello("ios"))
        .await
        .unwrap();
    let mut health = HealthClient::new(node.channel().await);
    assert_eq!(
        health_of(&mut health).await.unwrap(),
        ServingStatus::Serving
    );

    let signalled = Instant::now();
    node.proc.signal(libc::SIGTERM);

    let reconnect = recv_until(&mut alice, "a Reconnect frame", |kind| match kind {
        server_frame::Kind::Reconnect(r) => Some(r.clone()),
        _ => None,
    })
    .await;
    println!("Reconnect after {:?}: {reconnect:?}", signalled.elapsed());
    assert!(
        reconnect.retry_after_ms <= OFFLINE_GRACE_MS,
        "retry_after_ms {} beyond the offline grace {OFFLINE_GRACE_MS}",
        reconnect.retry_after_ms
    );

    // The node drains: health says NOT_SERVING.
    let not_serving = eventually_within(Duration::from_millis(SHUTDOWN_GRACE_MS), || {
        let mut health = health.clone();
        async move {
            matches!(health_of(&mut health).await, Ok(ServingStatus::NotServing)).then_some(())
        }
    })
    .await;
    assert!(
        not_serving.is_some(),
        "health still answers {:?} during the drain",
        health_of(&mut health).await
    );
    println!("health NOT_SERVING after {:?}", signalled.elapsed());

    // A new session is refused: UNAVAILABLE, or no connection at all.
    match client::connect(&node.url()).await {
        Err(e @ ClientError::Unreachable { .. }) => println!("new connection refused: {e}"),
        Err(e) => panic!("unexpected connect error: {e:?}"),
        Ok(channel) => match Session::open(channel, &user_creds("bob"), hello("web")).await {
            Err(ClientError::Refused(status)) => {
                println!("new session refused: {status:?}");
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            }
            Err(other) => panic!("new session failed without UNAVAILABLE: {other:?}"),
            Ok((_, welcome)) => panic!("a session opened during the drain: {welcome:?}"),
        },
    }

    // alice never closed: her stream is ended with UNAVAILABLE when the grace runs out.
    let end = end_of(&mut alice).await;
    println!(
        "alice's stream ended after {:?}: {end:?}",
        signalled.elapsed()
    );
    assert_eq!(
        end.as_ref().map_err(|s| s.code()),
        Err(Code::Unavailable),
        "{end:?}"
    );

    let limit = Duration::from_millis(SHUTDOWN_GRACE_MS + 2_000);
    let status = node
        .proc
        .wait_exit(limit.saturating_sub(signalled.elapsed()))
        .await;
    let took = signalled.elapsed();
    println!("presence-node exited after {took:?} (limit {limit:?}): {status:?}");
    let status = status.unwrap_or_else(|| panic!("still running {took:?} after SIGTERM"));
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_within_the_grace_despite_a_client_that_stopped_reading() {
    // Large texts and no rate limit, so a few changes fill the stalled client's HTTP/2
    // windows and the node has frames it cannot deliver when the drain starts.
    let mut node = NodeProcess::start(
        &[
            &[
                "--shutdown-grace-ms",
                "2000",
                "--max-status-text-bytes",
                "200000",
            ],
            common::NO_CHANGE_LIMITS,
        ]
        .concat(),
    )
    .await;
    let (mut carol, _) = Session::open(node.channel().await, &user_creds("carol"), hello("web"))
        .await
        .unwrap();
    let (mut alice, _) = Session::open(node.channel().await, &user_creds("alice"), hello("ios"))
        .await
        .unwrap();
    subscribe(&mut carol, &["alice"]).await;
    // From here on carol never reads again; her connection and stream stay open.

    // 100 changes of ~200 kB each: ~20 MB for carol, far beyond her stream window (2 MB)
    // and the socket buffers.
    let big = "x".repeat(199_990);
    for i in 0..100u32 {
        let status = if i % 2 == 0 {
            PresenceStatus::Busy
        } else {
            PresenceStatus::Away
        };
        let reference = alice
            .set_status(status, format!("{i:05}{big}"))
            .await
            .unwrap();
        assert_eq!(
            common::answer(&mut alice, reference).await,
            Ok(()),
            "frame {i}"
        );
    }
    alice.close();

    let signalled = Instant::now();
    node.proc.signal(libc::SIGTERM);
    let limit = Duration::from_millis(SHUTDOWN_GRACE_MS + 2_000);
    let status = node.proc.wait_exit(limit).await;
    let took = signalled.elapsed();
    println!("presence-node exited after {took:?} (limit {limit:?}): {status:?}");
    let status = status.unwrap_or_else(|| panic!("still running {took:?} after SIGTERM"));
    assert!(status.success(), "exit status {status}");

    // What carol's client had buffered: the node could not push her the 100 changes (her
    // windows hold about ten), so it held (coalesced) the rest; what she got is in order,
    // each a state of alice newer than the one before, and her stream ends with the node.
    let mut updates = 0;
    let mut last: Option<(u64, String)> = None;
    let end = loop {
        match tokio::time::timeout(patience(), carol.recv()).await {
            Ok(Ok(Some(frame))) => {
                if let Some(server_frame::Kind::Update(update)) = frame.kind {
                    for p in update.presences.iter().filter(|p| p.user_id == "alice") {
                        updates += 1;
                        // The text starts with the change's number, zero-padded: in order.
                        let number = p.status_text.get(..5).unwrap_or_default().to_string();
                        if let Some((version, previous)) = &last {
                            // (An OFFLINE view has no text: only its version counts.)
                            assert!(
                                p.version > *version && (number.is_empty() || number > *previous),
                                "an older state after a newer one: {number} (v{}) after \
                                 {previous} (v{version})",
                                p.version
                            );
                        }
                        last = Some((p.version, number));
                    }
                }
            }
            Ok(other) => break Ok(format!("{other:?}")),
            Err(_) => break Err("no end within the patience"),
        }
    };
    println!("the stalled client had {updates} updates buffered; then {end:?}");
    let end = end.expect("carol's stream ends once the node has exited");
    assert!(
        updates < 100,
        "all 100 changes reached the stalled client ({updates} updates): the scenario did not \
         stall it; then {end}"
    );
    drop(carol);
}

// ---------------------------------------------------------------------------------------
// The `presence` CLI.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_get_prints_an_offline_user() {
    let node = NodeProcess::start(&[]).await;
    let output = cli(&["--server", &node.url(), "--user", "bob", "get", "alice"]).await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    println!(
        "status {}\nstdout:\n{stdout}stderr:\n{stderr}",
        output.status
    );
    assert!(output.status.success(), "{}: {stderr}", output.status);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line per user: {stdout:?}");
    assert!(lines[0].starts_with("alice"), "{stdout:?}");
    assert!(lines[0].contains("offline"), "{stdout:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_get_from_an_unreachable_server_fails_with_one_line() {
    let output = cli(&[
        "--server",
        "http://127.0.0.1:1",
        "--user",
        "bob",
        "get",
        "alice",
    ])
    .await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    println!(
        "status {}\nstdout:\n{stdout}stderr:\n{stderr}",
        output.status
    );
    assert!(!output.status.success(), "exit status {}", output.status);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr: {stderr:?}");
    assert!(lines[0].starts_with("presence:"), "{stderr:?}");
    assert!(stdout.is_empty(), "nothing on stdout: {stdout:?}");
}

/// Runs `presence get alice` (as bob) until its line for alice satisfies `want`.
async fn cli_get_until(url: &str, what: &str, want: impl Fn(&str) -> bool) -> String {
    let last = std::sync::Mutex::new(String::new());
    let found = eventually_within(patience(), || async {
        let output = cli(&["--server", url, "--user", "bob", "get", "alice"]).await;
        let stdout = text(&output.stdout);
        if output.status.success() && want(stdout.trim_end()) {
            return Some(stdout);
        }
        *last.lock().unwrap() = format!("{} {stdout:?} {:?}", output.status, text(&output.stderr));
        None
    })
    .await;
    found.unwrap_or_else(|| {
        panic!(
            "`presence get alice` never showed {what}; last: {}",
            last.lock().unwrap()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_status_is_visible_until_interrupted() {
    let node = NodeProcess::start(&[]).await;
    let url = node.url();
    let mut status = Process::spawn(
        CLI_BIN,
        &[
            "--server",
            &url,
            "--user",
            "alice",
            "status",
            "busy",
            "in a meeting",
        ],
        &[],
    );

    // It says so once its session is confirmed; only then does Ctrl-C mean "go offline"
    // (before that it abandons a half-open call).
    eventually("`presence status` to confirm", || async {
        assert!(
            status.exited().is_none(),
            "`presence status` stopped on its own"
        );
        status
            .stdout()
            .contains("you are busy as alice")
            .then_some(())
    })
    .await;
    let line = cli_get_until(&url, "alice busy \"in a meeting\"", |line| {
        line.starts_with("alice") && line.contains("busy") && line.contains("\"in a meeting\"")
    })
    .await;
    println!("while `presence status` runs: {line}");
    assert!(
        status.exited().is_none(),
        "`presence status` stopped on its own"
    );

    // Ctrl-C: it half-closes cleanly and exits 0.
    let interrupted = Instant::now();
    status.signal(libc::SIGINT);
    let exit = status
        .wait_exit(patience())
        .await
        .expect("`presence status` exits after SIGINT");
    println!(
        "`presence status` exited after {:?}: {exit}; stdout: {:?}",
        interrupted.elapsed(),
        status.stdout()
    );
    assert!(
        exit.success(),
        "exit status {exit}; stderr {:?}",
        status.stderr()
    );

    // A clean half-close ends the session at once: alice is offline, well before an abrupt
    // end's offline grace would have let her go.
    let line = cli_get_until(&url, "alice offline", |line| {
        line.starts_with("alice") && line.contains("offline")
    })
    .await;
    let offline_after = interrupted.elapsed();
    println!("after SIGINT: offline after {offline_after:?}: {line}");
    assert!(
        offline_after < Duration::from_millis(OFFLINE_GRACE_MS),
        "offline only after {offline_after:?}: the session lingered (not a clean half-close)"
    );
    assert!(
        !line.contains("in a meeting"),
        "offline shows no text: {line}"
    );
}

// ---------------------------------------------------------------------------------------
// gRPC reflection.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let node = NodeProcess::start(&[]).await;
    let mut reflection = ServerReflectionClient::new(node.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let response = tokio::time::timeout(patience(), responses.message())
        .await
        .expect("a reflection response within the patience")
        .expect("reflection response")
        .expect("one response");
    let services: Vec<String> = match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("expected a service list, got {other:?}"),
    };
    println!("reflection lists: {services:?}");
    for wanted in [SERVICE, "grpc.health.v1.Health"] {
        assert!(
            services.iter().any(|s| s == wanted),
            "{wanted} missing from {services:?}"
        );
    }
}
