//! Issue 11, connection level (API.md "What one caller can consume is bounded"): the
//! connection cap, the idle GOAWAY, the header-list limit, 16 KiB health/reflection messages
//! (larger messages refused with RESOURCE_EXHAUSTED on any service), the per-connection cap on
//! streams that have not said hello, and garbage on many connections.
//!
//! Each attack runs against a real `presence-node` process while a well-behaved user on the
//! same node (a watcher and the user it watches, on a connection opened before the attack)
//! keeps working: the watcher gets each of the user's changes within [`GOOD_P99`] at the 99th
//! percentile. Each test prints `ATTACK <name>: rss_before=.. rss_peak=.. cpu_s=.. good_p99_ms=..`.

mod common;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::node_process::NodeProcess;
use common::{hello, patience, recv_until, subscribe, user_creds};
use presence_node::client::{self, Session};
use presence_node::proto::presence_service_client::PresenceServiceClient;
use presence_node::proto::{server_frame, ClientFrame, GetPresenceRequest, Status as PStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The well-behaved user's bound: a change reaches its watcher within this at p99.
const GOOD_P99: Duration = Duration::from_millis(1000);
/// A well-behaved session opens within this.
const GOOD_OPEN: Duration = Duration::from_secs(3);

/// Loose per-session limits, so the probe measures the node, not its rate limits (unknown
/// settings in the environment are ignored by a node that does not have them).
const ENVS: &[(&str, &str)] = &[
    ("PRESENCE_USER_CHANGE_RATE_PER_S", "1000"),
    ("PRESENCE_USER_CHANGE_RATE_BURST", "1000"),
    ("PRESENCE_FRAME_RATE_PER_S", "1000"),
    ("PRESENCE_FRAME_RATE_BURST", "1000"),
];
const BASE_ARGS: &[&str] = &["--status-rate-per-s", "1000", "--status-rate-burst", "1000"];

async fn start(args: &[&str]) -> NodeProcess {
    let mut all = BASE_ARGS.to_vec();
    all.extend_from_slice(args);
    NodeProcess::start_with(&all, ENVS).await
}

fn cpu_seconds(node: &NodeProcess) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", node.proc.pid())).unwrap();
    // Fields after the command (which may hold spaces) start at state (field 3).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields[11].parse().unwrap();
    let stime: f64 = fields[12].parse().unwrap();
    (utime + stime) / CLOCK_TICKS_PER_S
}

/// `_SC_CLK_TCK`: 100 on Linux on every architecture this runs on.
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// Samples the node's RSS every 20 ms while it runs; the peak and what was seen before.
struct Meter {
    rss_before: u64,
    cpu_before: f64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Meter {
    fn start(node: &NodeProcess) -> Self {
        let rss_before = node.rss_bytes();
        let peak = Arc::new(AtomicU64::new(rss_before));
        let stop = Arc::new(AtomicBool::new(false));
        let pid = node.proc.pid();
        let task = tokio::spawn({
            let peak = peak.clone();
            let stop = stop.clone();
            async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = rss_of(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Self {
            rss_before,
            cpu_before: cpu_seconds(node),
            peak,
            stop,
            task,
        }
    }

    /// Stops sampling; prints the ATTACK line; returns the peak RSS.
    async fn report(self, node: &NodeProcess, name: &str, good_p99: Duration) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.task).await;
        let peak = self.peak.load(Ordering::Relaxed).max(node.rss_bytes());
        println!(
            "ATTACK {name}: rss_before={:.1}MiB rss_peak={:.1}MiB cpu_s={:.2} good_p99_ms={}",
            mib(self.rss_before),
            mib(peak),
            cpu_seconds(node) - self.cpu_before,
            good_p99.as_millis()
        );
        peak
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn rss_of(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|n| n.trim().parse().ok())?;
    Some(kib * 1024)
}

/// The well-behaved user: `good-b` changes its status text every 100 ms; `good-a` watches it
/// and records how long each change took to arrive, and how long its heartbeats take to be
/// acked. Both share one connection opened before the attack, and run on their own thread and
/// runtime, so the attacker's tasks in this process do not slow the measurement.
struct Probe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Duration>>,
}

impl Probe {
    async fn start(node: &NodeProcess) -> Self {
        let url = node.url();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(probe(url, stop, ready_tx))
            }
        });
        tokio::time::timeout(patience(), ready_rx)
            .await
            .expect("the probe's sessions open")
            .expect("the probe started");
        Self { stop, thread }
    }

    /// Stops; the p99 of the latencies (checked against the bound by [`Probe::check`]).
    async fn finish(self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread;
        let mut latencies = tokio::task::spawn_blocking(move || thread.join())
            .await
            .unwrap()
            .expect("the probe did not fail");
        assert!(!latencies.is_empty(), "the probe measured something");
        latencies.sort();
        latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
    }

    fn check(p99: Duration) {
        assert!(
            p99 <= GOOD_P99,
            "the well-behaved user's p99 {p99:?} is over {GOOD_P99:?}"
        );
    }
}

async fn probe(
    url: String,
    stop: Arc<AtomicBool>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Vec<Duration> {
    let channel = client::connect(&url).await.unwrap();
    let (mut watcher, _) = Session::open(channel.clone(), &user_creds("good-a"), hello("a"))
        .await
        .unwrap();
    let (mut watched, _) = Session::open(channel, &user_creds("good-b"), hello("b"))
        .await
        .unwrap();
    subscribe(&mut watcher, &["good-b"]).await;
    let _ = ready.send(());
    let mut latencies = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let text = format!("n={i}");
        let sent = Instant::now();
        watched
            .set_status(PStatus::Online, text.clone())
            .await
            .unwrap();
        recv_until(&mut watcher, "the good user's change", |kind| match kind {
            server_frame::Kind::Update(u) => u
                .presences
                .iter()
                .any(|p| p.user_id == "good-b" && p.status_text == text)
                .then_some(()),
            _ => None,
        })
        .await;
        latencies.push(sent.elapsed());
        let sent = Instant::now();
        common::heartbeat_acked(&mut watcher).await;
        latencies.push(sent.elapsed());
        // Drain the watched session's acks so its replies never pile up.
        while let Ok(Ok(Some(_))) =
            tokio::time::timeout(Duration::from_millis(1), watched.recv()).await
        {}
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    latencies
}

/// Another user opens a session normally, on a new connection, within [`GOOD_OPEN`].
async fn another_user_opens(node: &NodeProcess, user: &str) {
    let opening = async {
        let channel = client::connect(&node.url()).await.unwrap();
        Session::open(channel, &user_creds(user), hello("d"))
            .await
            .unwrap()
    };
    tokio::time::timeout(GOOD_OPEN, opening)
        .await
        .expect("another user opens within the bound");
}

/// The HTTP/2 client preface and an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Reads HTTP/2 frames until the connection closes or `within` passes, answering PINGs as a
/// client does (a graceful shutdown waits for one); returns whether a GOAWAY came and whether
/// the connection was closed.
async fn frames_until_close(tcp: &mut TcpStream, within: Duration) -> (bool, bool) {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = Vec::new();
    let mut goaway = false;
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Err(_) => return (goaway, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (goaway, true),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == 0x7 {
                goaway = true;
            }
            if buf[3] == 0x6 && buf[4] & 0x1 == 0 && len == 8 {
                let mut ack = vec![0, 0, 8, 0x6, 0x1, 0, 0, 0, 0];
                ack.extend_from_slice(&buf[9..17]);
                let _ = tcp.write_all(&ack).await;
            }
            buf.drain(..9 + len);
        }
    }
}

/// The node's `presence_refused_total{reason}` from its metrics endpoint.
async fn refused(metrics_addr: &str, reason: &str) -> u64 {
    let mut tcp = tokio::time::timeout(patience(), TcpStream::connect(metrics_addr))
        .await
        .unwrap()
        .unwrap();
    tcp.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {metrics_addr}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut body = String::new();
    tokio::time::timeout(patience(), tcp.read_to_string(&mut body))
        .await
        .unwrap()
        .unwrap();
    let wanted = format!("presence_refused_total{{reason=\"{reason}\"}}");
    body.lines()
        .find_map(|l| l.strip_prefix(&wanted))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once() {
    const CAP: usize = 20;
    const ATTACK: usize = 200;
    let metrics = common::free_addr();
    let cap = CAP.to_string();
    let node = start(&["--max-connections", &cap, "--metrics-addr", &metrics]).await;
    let probe = Probe::start(&node).await;
    let meter = Meter::start(&node);

    let mut held = Vec::new();
    let mut closed = 0;
    let mut accepted = 0;
    for _ in 0..ATTACK {
        let mut tcp = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
        let _ = tcp.write_all(PREFACE).await;
        // An accepted connection gets the server's SETTINGS; one past the cap is closed.
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut byte)).await {
            Ok(Ok(n)) if n > 0 => accepted += 1,
            Ok(_) => closed += 1,
            Err(_) => panic!("a connection was neither served nor closed within 2 s"),
        }
        held.push(tcp);
    }
    // The probe's connection is one of the CAP (the start check's may still be closing).
    assert!(accepted < CAP, "at most the cap is served: {accepted}");
    assert!(
        closed >= ATTACK - CAP,
        "the connections past the cap were closed: {closed}"
    );
    let counted = refused(&metrics, "max_connections").await;
    assert!(counted >= closed as u64, "refusals counted: {counted}");
    let p99 = probe.finish().await;
    meter.report(&node, "max_connections", p99).await;
    Probe::check(p99);

    // Once the attacker lets go, new connections are served again.
    drop(held);
    common::eventually("a new connection is served after the attack", || async {
        let opening = async {
            let channel = client::connect(&node.url()).await.ok()?;
            Session::open(channel, &user_creds("later"), hello("d"))
                .await
                .ok()
        };
        tokio::time::timeout(Duration::from_secs(2), opening)
            .await
            .ok()
            .flatten()
            .map(|_| ())
    })
    .await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_with_goaway_and_one_with_a_session_is_not() {
    const IDLE_MS: u64 = 500;
    let idle = IDLE_MS.to_string();
    let node = start(&["--connection-idle-timeout-ms", &idle]).await;
    let probe = Probe::start(&node).await;
    let meter = Meter::start(&node);

    // A session on its own connection, kept over several idle timeouts.
    let channel = client::connect(&node.url()).await.unwrap();
    let (mut session, _) = Session::open(channel, &user_creds("busy"), hello("d"))
        .await
        .unwrap();

    let opened = Instant::now();
    let mut tcp = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    tcp.write_all(PREFACE).await.unwrap();
    let (goaway, closed) = frames_until_close(&mut tcp, patience()).await;
    assert!(goaway, "the idle connection got a GOAWAY");
    assert!(closed, "and was closed");
    assert!(
        opened.elapsed() >= Duration::from_millis(IDLE_MS),
        "not before the idle timeout: {:?}",
        opened.elapsed()
    );

    // The session's connection outlived several idle timeouts: it still answers.
    while opened.elapsed() < Duration::from_millis(4 * IDLE_MS) {
        common::heartbeat_acked(&mut session).await;
        tokio::time::sleep(Duration::from_millis(IDLE_MS / 2)).await;
    }
    common::heartbeat_acked(&mut session).await;
    another_user_opens(&node, "other").await;
    let p99 = probe.finish().await;
    meter.report(&node, "idle_connection", p99).await;
    Probe::check(p99);
}

#[tokio::test]
async fn a_header_list_past_the_limit_is_refused_and_the_node_keeps_serving() {
    let node = start(&["--max-header-list-bytes", "16384"]).await;
    let probe = Probe::start(&node).await;
    let meter = Meter::start(&node);
    // 200 requests with 32 KiB of headers each, on 20 connections.
    for _ in 0..20 {
        let channel = client::connect(&node.url()).await.unwrap();
        for _ in 0..10 {
            let mut request = tonic::Request::new(HealthCheckRequest { service: "".into() });
            request
                .metadata_mut()
                .insert("x-padding", "p".repeat(32 * 1024).parse().unwrap());
            let answer = tokio::time::timeout(
                patience(),
                HealthClient::new(channel.clone()).check(request),
            )
            .await
            .expect("an answer");
            let status = answer.expect_err("32 KiB of headers refused");
            // hyper answers HTTP 431, which gRPC clients report as UNKNOWN.
            assert!(status.message().contains("431"), "{status:?}");
        }
    }
    another_user_opens(&node, "other").await;
    let p99 = probe.finish().await;
    meter.report(&node, "header_list", p99).await;
    Probe::check(p99);
}

#[tokio::test]
async fn the_admin_listener_has_its_own_connection_cap() {
    const CAP: usize = 5;
    const ATTACK: usize = 40;
    let admin = common::free_addr();
    let cap = CAP.to_string();
    let node = start(&["--max-connections", &cap, "--admin-addr", &admin]).await;
    let probe = Probe::start(&node).await;
    let meter = Meter::start(&node);
    let (mut accepted, mut closed) = (0, 0);
    let mut held = Vec::new();
    for _ in 0..ATTACK {
        let mut tcp = TcpStream::connect(admin.as_str()).await.unwrap();
        let _ = tcp.write_all(PREFACE).await;
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut byte)).await {
            Ok(Ok(n)) if n > 0 => accepted += 1,
            Ok(_) => closed += 1,
            Err(_) => panic!("an admin connection was neither served nor closed within 2 s"),
        }
        held.push(tcp);
    }
    assert!(accepted <= CAP, "at most the cap is served: {accepted}");
    assert!(closed >= ATTACK - CAP, "past the cap closed: {closed}");
    // The gRPC listener's cap is its own: the admin attack does not take its room.
    another_user_opens(&node, "other").await;
    let p99 = probe.finish().await;
    meter.report(&node, "admin_max_connections", p99).await;
    Probe::check(p99);
}

#[tokio::test]
async fn a_1_mib_health_request_is_refused_with_resource_exhausted() {
    let metrics = common::free_addr();
    let node = start(&["--metrics-addr", &metrics]).await;
    let probe = Probe::start(&node).await;
    let meter = Meter::start(&node);
    let channel = client::connect(&node.url()).await.unwrap();
    let big = "x".repeat(1024 * 1024);
    for _ in 0..20 {
        let answer = tokio::time::timeout(
            patience(),
            HealthClient::new(channel.clone()).check(HealthCheckRequest {
                service: big.clone(),
            }),
        )
        .await
        .expect("an answer");
        let status = answer.expect_err("refused");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            !status.message().contains("xxxx") && status.message().len() < 200,
            "the error echoes nothing: {}",
            status.message()
        );
    }
    // Reflection takes at most 16 KiB per message too.
    {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        let request = ServerReflectionRequest {
            host: big.clone(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let answer = tokio::time::timeout(patience(), async {
            let mut stream = ServerReflectionClient::new(channel.clone())
                .server_reflection_info(tokio_stream::iter(vec![request]))
                .await?
                .into_inner();
            stream.message().await
        })
        .await
        .expect("an answer");
        let status = answer.expect_err("a 1 MiB reflection request is refused");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(!status.message().contains("xxxx"), "{}", status.message());
    }
    // A health check that fits is answered.
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest { service: "".into() })
        .await
        .unwrap();
    // Past the message limit on the presence service, too: RESOURCE_EXHAUSTED.
    let mut request = tonic::Request::new(GetPresenceRequest {
        user_ids: vec!["u".repeat(2 * 1024 * 1024)],
    });
    client::attach(&user_creds("asker"), request.metadata_mut()).unwrap();
    let answer = tokio::time::timeout(
        patience(),
        PresenceServiceClient::new(channel).get_presence(request),
    )
    .await
    .expect("an answer");
    let status = answer.expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(!status.message().contains("uuuu"), "{}", status.message());
    assert_eq!(
        refused(&metrics, "message_too_large").await,
        22,
        "refusals counted"
    );
    another_user_opens(&node, "other").await;
    let p99 = probe.finish().await;
    meter.report(&node, "health_1mib", p99).await;
    Probe::check(p99);
}

#[tokio::test]
async fn streams_that_never_say_hello_are_capped_per_connection_and_time_out() {
    const CONNECTIONS: usize = 20;
    const STREAMS_PER_CONNECTION: usize = 150;
    const PENDING_CAP: usize = 16;
    const HELLO_TIMEOUT_MS: u64 = 3000;
    let hello_timeout = HELLO_TIMEOUT_MS.to_string();
    let cap = PENDING_CAP.to_string();
    let metrics = common::free_addr();
    let node = start(&[
        "--hello-timeout-ms",
        &hello_timeout,
        "--max-pending-hellos-per-connection",
        &cap,
        "--metrics-addr",
        &metrics,
    ])
    .await;
    let probe = Probe::start(&node).await;
    let meter = Meter::start(&node);

    let mut calls = tokio::task::JoinSet::new();
    for c in 0..CONNECTIONS {
        let channel = client::connect(&node.url()).await.unwrap();
        for s in 0..STREAMS_PER_CONNECTION {
            let channel = channel.clone();
            calls.spawn(async move {
                let mut request = tonic::Request::new(futures::stream::pending::<ClientFrame>());
                client::attach(
                    &user_creds(&format!("mute-{c}-{s}")),
                    request.metadata_mut(),
                )
                .unwrap();
                let call = async {
                    match PresenceServiceClient::new(channel).session(request).await {
                        Err(status) => status.code(),
                        Ok(response) => {
                            let mut inbound = response.into_inner();
                            loop {
                                match inbound.message().await {
                                    Ok(Some(_)) => continue,
                                    Ok(None) => return Code::Ok,
                                    Err(status) => return status.code(),
                                }
                            }
                        }
                    }
                };
                tokio::time::timeout(Duration::from_millis(HELLO_TIMEOUT_MS) + patience(), call)
                    .await
                    .expect("every stream ends")
            });
        }
    }
    // While they hang: another user opens normally.
    another_user_opens(&node, "other").await;
    let mut timed_out = 0;
    let mut refused = 0;
    while let Some(code) = calls.join_next().await {
        match code.unwrap() {
            Code::DeadlineExceeded => timed_out += 1,
            Code::ResourceExhausted => refused += 1,
            other => panic!("a stream that never said hello ended with {other:?}"),
        }
    }
    let total = CONNECTIONS * STREAMS_PER_CONNECTION;
    assert_eq!(timed_out + refused, total);
    assert!(
        timed_out <= CONNECTIONS * PENDING_CAP,
        "at most the cap per connection waited: {timed_out}"
    );
    assert!(timed_out > 0, "the admitted ones ended DEADLINE_EXCEEDED");
    assert!(
        refused >= total - CONNECTIONS * PENDING_CAP,
        "the others were refused with RESOURCE_EXHAUSTED: {refused}"
    );
    let counted = self::refused(&metrics, "pending_hellos").await;
    assert_eq!(counted, refused as u64, "refusals counted");
    println!("never_hello: {timed_out} ended DEADLINE_EXCEEDED, {refused} refused");
    let p99 = probe.finish().await;
    let peak = meter.report(&node, "never_hello_3000", p99).await;
    Probe::check(p99);
    assert!(
        peak < 256 * 1024 * 1024,
        "node RSS stayed bounded: {:.1} MiB",
        mib(peak)
    );
}

/// A one-shot request body of raw bytes (a gRPC body the client crafts itself).
struct Raw(Option<Bytes>);

impl http_body::Body for Raw {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// Sends `body` as a gRPC request to `path` over `channel`; the answer's grpc-status.
async fn raw_call(channel: tonic::transport::Channel, path: &str, body: Bytes) -> Option<String> {
    use tower_service::Service as _;
    let mut channel = channel;
    let request = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-user-id", "garbage")
        .body(tonic::body::Body::new(Raw(Some(body))))
        .unwrap();
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .ok()?;
    let response = channel.call(request).await.ok()?;
    if let Some(status) = response.headers().get("grpc-status") {
        return Some(status.to_str().unwrap_or("?").to_owned());
    }
    let mut body = response.into_body();
    loop {
        let frame =
            std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)).await?;
        if let Ok(frame) = frame {
            if let Some(trailers) = frame.trailers_ref() {
                return trailers
                    .get("grpc-status")
                    .map(|v| v.to_str().unwrap_or("?").to_owned());
            }
        } else {
            return None;
        }
    }
}

#[tokio::test]
async fn garbage_on_200_connections_leaves_a_normal_session_getting_its_acks() {
    const CONNECTIONS: usize = 200;
    let node = start(&[]).await;
    let probe = Probe::start(&node).await;
    let meter = Meter::start(&node);
    let channel = client::connect(&node.url()).await.unwrap();
    let (mut session, _) = Session::open(channel, &user_creds("steady"), hello("d"))
        .await
        .unwrap();

    let mut attacks = tokio::task::JoinSet::new();
    for i in 0..CONNECTIONS {
        let port = node.port;
        let url = node.url();
        attacks.spawn(async move {
            let noise: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
            match i % 5 {
                // Random bytes instead of HTTP/2.
                0 => {
                    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                    let _ = tcp.write_all(&noise).await;
                    let (_, closed) = frames_until_close(&mut tcp, patience()).await;
                    assert!(closed, "random bytes: the connection is closed");
                }
                // A valid preface, then frames of garbage. The first frame header claims more
                // than the largest frame, so the node must refuse the connection at once (random
                // bytes could instead start a frame that never completes: a stalled peer, which
                // the idle timeout closes, not this test's patience).
                1 => {
                    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                    let mut frames = noise.clone();
                    frames[..3].copy_from_slice(&[0xff, 0xff, 0xff]);
                    let _ = tcp.write_all(PREFACE).await;
                    let _ = tcp.write_all(&frames).await;
                    let (_, closed) = frames_until_close(&mut tcp, patience()).await;
                    assert!(closed, "bad HTTP/2: the connection is closed");
                }
                // Bad gRPC framing: a length prefix promising more than the body holds, and
                // a compressed flag with no compression agreed.
                2 | 3 => {
                    let channel = client::connect(&url).await.unwrap();
                    let body = if i % 5 == 2 {
                        Bytes::from_static(b"\x00\x00\x00\x10\x00abc")
                    } else {
                        Bytes::from_static(b"\x01\x00\x00\x00\x03abc")
                    };
                    let status = tokio::time::timeout(
                        patience(),
                        raw_call(channel, "/presence.v1.PresenceService/Session", body),
                    )
                    .await
                    .expect("an answer");
                    assert_ne!(status.as_deref(), Some("0"), "bad framing is not OK");
                }
                // Undecodable protobuf, on the session and on GetPresence.
                _ => {
                    let channel = client::connect(&url).await.unwrap();
                    let mut framed = vec![0u8];
                    framed.extend_from_slice(&(noise.len() as u32).to_be_bytes());
                    framed.extend_from_slice(&noise);
                    let framed = Bytes::from(framed);
                    for path in [
                        "/presence.v1.PresenceService/Session",
                        "/presence.v1.PresenceService/GetPresence",
                    ] {
                        let status = tokio::time::timeout(
                            patience(),
                            raw_call(channel.clone(), path, framed.clone()),
                        )
                        .await
                        .expect("an answer");
                        assert_ne!(status.as_deref(), Some("0"), "garbage protobuf is not OK");
                    }
                }
            }
        });
    }
    // Meanwhile the probe's sessions keep getting their updates and heartbeat acks, and so
    // does a session of this thread.
    while let Some(done) = attacks.join_next().await {
        done.expect("an attack connection behaved as expected");
    }
    common::heartbeat_acked(&mut session).await;
    let p99 = probe.finish().await;
    meter.report(&node, "garbage_200_connections", p99).await;
    Probe::check(p99);
    assert!(node.proc.exited().is_none(), "the node is still running");
    assert!(
        !node.proc.stderr().contains("panicked"),
        "no panic: {}",
        node.proc.stderr()
    );
    another_user_opens(&node, "other").await;
}
