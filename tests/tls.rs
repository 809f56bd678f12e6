//! TLS and mTLS on the node's listeners, against real nodes over real sockets, with
//! certificates made at test time (a private CA per test, files in a temporary directory).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use presence_node::client::{self, ClientIdentity, Session, TlsOptions};
use presence_node::proto::presence_admin_service_client::PresenceAdminServiceClient;
use presence_node::proto::{StatsRequest, Status};
use presence_node::tls::certs::{Ca, Leaf};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "presence-tls-{name}-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    /// Writes `contents` to `file`; returns its path as a string (for flags).
    fn write(&self, file: &str, contents: &str) -> String {
        let path = self.path(file);
        std::fs::write(&path, contents).unwrap();
        path.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn s(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A CA, the node's certificate files signed by it, and the CA file clients trust.
struct Pki {
    dir: TempDir,
    ca: Ca,
    cert: String,
    key: String,
    ca_file: String,
}

impl Pki {
    fn new(name: &str) -> Self {
        let dir = TempDir::new(name);
        let ca = Ca::new(&format!("{name} test CA")).unwrap();
        let leaf = ca.leaf(&["127.0.0.1", "localhost"], 1).unwrap();
        let cert = dir.write("tls.crt", &leaf.cert_pem);
        let key = dir.write("tls.key", &leaf.key_pem);
        let ca_file = dir.write("ca.crt", &ca.cert_pem);
        Self {
            dir,
            ca,
            cert,
            key,
            ca_file,
        }
    }

    fn node_args(&self) -> Vec<String> {
        vec![
            "--tls-cert-file".into(),
            self.cert.clone(),
            "--tls-key-file".into(),
            self.key.clone(),
        ]
    }

    fn trust(&self) -> TlsOptions {
        TlsOptions {
            ca_pem: Some(self.ca.cert_pem.clone().into_bytes()),
            client_identity: None,
            server_name: None,
        }
    }

    fn trust_with(&self, client: &Leaf) -> TlsOptions {
        TlsOptions {
            ca_pem: Some(self.ca.cert_pem.clone().into_bytes()),
            client_identity: Some(ClientIdentity {
                cert_pem: client.cert_pem.clone().into_bytes(),
                key_pem: client.key_pem.clone().into_bytes(),
            }),
            server_name: None,
        }
    }
}

async fn start(args: &[String]) -> TestNode {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestNode::start(&args).await
}

fn https(node: &TestNode) -> String {
    format!("https://{}", node.addr)
}

/// A session of `user` over TLS with `options`.
async fn tls_session(
    url: &str,
    options: &TlsOptions,
    user: &str,
) -> Result<Session, client::ClientError> {
    let opening = async {
        let channel = client::connect_with(url, options).await?;
        Session::open(channel, &user_creds(user), hello("laptop")).await
    };
    tokio::time::timeout(patience(), opening)
        .await
        .expect("the session opens or fails within the patience")
        .map(|(session, _)| session)
}

fn der(pem: &str) -> CertificateDer<'static> {
    presence_node::tls::parse_certificates(pem.as_bytes())
        .unwrap()
        .remove(0)
}

/// The leaf certificate the node at `addr` serves to a new connection (a raw rustls client
/// trusting `ca_pem`), or the handshake error.
async fn served_certificate(
    addr: std::net::SocketAddr,
    ca_pem: &str,
) -> Result<CertificateDer<'static>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(ca_pem)).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(presence_node::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, connection) = tls.get_ref();
        connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| cert.clone().into_owned())
            .ok_or_else(|| "no certificate".to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), handshake)
        .await
        .map_err(|_| "handshake timed out".to_string())?
}

/// Polls until new connections get `want`; returns how long that took from `since`.
async fn until_served(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    want: &CertificateDer<'static>,
    since: Instant,
) -> Duration {
    eventually("the new certificate to be served", || async {
        (served_certificate(addr, ca_pem).await.ok().as_ref() == Some(want))
            .then(|| since.elapsed())
    })
    .await
}

#[tokio::test]
async fn a_session_over_tls_with_a_private_ca() {
    let pki = Pki::new("session");
    let node = start(&pki.node_args()).await;
    let url = https(&node);

    let mut bob = tls_session(&url, &pki.trust(), "bob").await.unwrap();
    assert_eq!(
        status_of(&subscribe(&mut bob, &["alice"]).await[0]),
        Status::Offline
    );
    let mut alice = tls_session(&url, &pki.trust(), "alice").await.unwrap();
    let reference = alice
        .set_status(Status::Busy, "in a meeting")
        .await
        .unwrap();
    assert_eq!(answer(&mut alice, reference).await, Ok(()));
    while status_of(&next_update_of(&mut bob, "alice").await) != Status::Busy {}
    heartbeat_acked(&mut bob).await;

    // Unary calls too, on a bare host:port (TLS options make it https).
    let channel = client::connect_with(&node.addr.to_string(), &pki.trust())
        .await
        .unwrap();
    let got = client::get_presence(channel, &user_creds("carol"), ids(&["alice"]))
        .await
        .unwrap();
    assert_eq!(status_of(&got[0]), Status::Busy);

    // A server name other than the URL's host (kubectl port-forward): the certificate
    // must carry that name.
    let named = |name: &str| TlsOptions {
        server_name: Some(name.to_string()),
        ..pki.trust()
    };
    let mut via_name = tls_session(&url, &named("localhost"), "dave")
        .await
        .unwrap();
    heartbeat_acked(&mut via_name).await;
    let err = tls_session(&url, &named("elsewhere.example"), "eve")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not valid for name"), "{err}");

    // The webpki roots do not know the private CA.
    let err = tls_session(&url, &TlsOptions::default(), "mallory")
        .await
        .unwrap_err();
    eprintln!("unknown CA: {err}");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
}

#[tokio::test]
async fn plaintext_to_a_tls_port_fails_and_the_node_goes_on() {
    let pki = Pki::new("plaintext");
    let node = start(&pki.node_args()).await;
    let err = tls_session(&node.url(), &TlsOptions::default(), "bob")
        .await
        .unwrap_err();
    let text = err.to_string();
    eprintln!("plaintext to a TLS port: {text}");
    assert!(!text.contains('\n'), "{text}");
    assert!(text.contains("TLS only: use https://"), "{text}");
    assert!(err.is_transient(), "a connection error: {err:?}");
    // HTTP/1.1 (curl http://...) gets a 400 saying the same.
    let answer = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = TcpStream::connect(node.addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        answer
    };
    let answer = tokio::time::timeout(patience(), answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("TLS only"), "{answer}");
    // A client that connects and never says anything does not hold up the others.
    let _silent = TcpStream::connect(node.addr).await.unwrap();
    let mut bob = tls_session(&https(&node), &pki.trust(), "bob")
        .await
        .unwrap();
    heartbeat_acked(&mut bob).await;
    // TLS options with an http:// URL are refused before connecting.
    let refused = client::connect_with(&node.url(), &pki.trust())
        .await
        .unwrap_err();
    assert!(
        matches!(refused, client::ClientError::BadServer { .. }),
        "{refused:?}"
    );
}

#[tokio::test]
async fn rotated_files_are_served_to_new_connections_and_open_sessions_go_on() {
    let pki = Pki::new("rotation");
    let node = start(&pki.node_args()).await;
    let first = der(&std::fs::read_to_string(&pki.cert).unwrap());
    assert_eq!(
        served_certificate(node.addr, &pki.ca.cert_pem).await,
        Ok(first.clone())
    );
    let mut before = tls_session(&https(&node), &pki.trust(), "bob")
        .await
        .unwrap();

    // cert-manager style: both files rewritten, the certificate first.
    let second = pki.ca.leaf(&["127.0.0.1"], 2).unwrap();
    let changed = Instant::now();
    pki.dir.write("tls.crt", &second.cert_pem);
    pki.dir.write("tls.key", &second.key_pem);
    let took = until_served(node.addr, &pki.ca.cert_pem, &der(&second.cert_pem), changed).await;
    eprintln!("rotation (cert then key): new certificate served after {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");

    // The key first: for a while the files do not match; the previous pair stays served.
    let third = pki.ca.leaf(&["127.0.0.1"], 3).unwrap();
    pki.dir.write("tls.key", &third.key_pem);
    let watch_until =
        Instant::now() + presence_node::tls::RELOAD_INTERVAL * 2 + Duration::from_millis(500);
    while Instant::now() < watch_until {
        assert_eq!(
            served_certificate(node.addr, &pki.ca.cert_pem).await,
            Ok(der(&second.cert_pem)),
            "an inconsistent pair must not replace the served one"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let changed = Instant::now();
    pki.dir.write("tls.crt", &third.cert_pem);
    let took = until_served(node.addr, &pki.ca.cert_pem, &der(&third.cert_pem), changed).await;
    eprintln!(
        "rotation (key, then cert): new certificate served {took:?} after the cert was written"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");

    // The session opened before any rotation is untouched.
    heartbeat_acked(&mut before).await;
    let mut after = tls_session(&https(&node), &pki.trust(), "carol")
        .await
        .unwrap();
    heartbeat_acked(&mut after).await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_secret_volume_symlink_swap_is_served() {
    use std::os::unix::fs::symlink;
    // The kubelet's layout: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>, swapped
    // at once by renaming a new ..data link over the old one.
    let dir = TempDir::new("secret");
    let ca = Ca::new("secret test CA").unwrap();
    let version = |name: &str, leaf: &Leaf| {
        std::fs::create_dir_all(dir.path(name)).unwrap();
        std::fs::write(dir.path(name).join("tls.crt"), &leaf.cert_pem).unwrap();
        std::fs::write(dir.path(name).join("tls.key"), &leaf.key_pem).unwrap();
    };
    let first = ca.leaf(&["127.0.0.1"], 1).unwrap();
    version("..v1", &first);
    symlink("..v1", dir.path("..data")).unwrap();
    symlink("..data/tls.crt", dir.path("tls.crt")).unwrap();
    symlink("..data/tls.key", dir.path("tls.key")).unwrap();
    let node = start(&[
        "--tls-cert-file".into(),
        s(&dir.path("tls.crt")),
        "--tls-key-file".into(),
        s(&dir.path("tls.key")),
    ])
    .await;
    assert_eq!(
        served_certificate(node.addr, &ca.cert_pem).await,
        Ok(der(&first.cert_pem))
    );
    let second = ca.leaf(&["127.0.0.1"], 2).unwrap();
    version("..v2", &second);
    symlink("..v2", dir.path("..data_tmp")).unwrap();
    let changed = Instant::now();
    std::fs::rename(dir.path("..data_tmp"), dir.path("..data")).unwrap();
    let took = until_served(node.addr, &ca.cert_pem, &der(&second.cert_pem), changed).await;
    eprintln!("rotation (symlink swap): new certificate served after {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test]
async fn mtls_on_the_grpc_port() {
    let pki = Pki::new("mtls");
    let mut args = pki.node_args();
    args.extend(["--tls-client-ca-file".into(), pki.ca_file.clone()]);
    let node = start(&args).await;
    let url = https(&node);

    let err = tls_session(&url, &pki.trust(), "anonymous")
        .await
        .unwrap_err();
    eprintln!("no client certificate: {err}");
    assert!(err.is_transient(), "refused by the TLS layer: {err:?}");

    let other = Ca::new("another CA").unwrap();
    let stranger = other.leaf(&["device-1"], 7).unwrap();
    let err = tls_session(&url, &pki.trust_with(&stranger), "stranger")
        .await
        .unwrap_err();
    assert!(err.is_transient(), "refused by the TLS layer: {err:?}");

    let device = pki.ca.leaf(&["device-1"], 8).unwrap();
    let mut bob = tls_session(&url, &pki.trust_with(&device), "bob")
        .await
        .unwrap();
    heartbeat_acked(&mut bob).await;
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// `Stats` on the admin API at `addr` with `options`, within the patience.
async fn admin_stats(addr: &str, options: &TlsOptions) -> Result<(), String> {
    let call = async {
        let channel = client::connect_with(&format!("https://{addr}"), options)
            .await
            .map_err(|e| e.to_string())?;
        PresenceAdminServiceClient::new(channel)
            .stats(StatsRequest {})
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(patience(), call)
        .await
        .expect("the call ends within the patience")
}

#[tokio::test]
async fn mtls_on_the_admin_port_only() {
    let pki = Pki::new("admin");
    let admin_ca = Ca::new("admin CA").unwrap();
    let admin_ca_file = pki.dir.write("admin-ca.crt", &admin_ca.cert_pem);
    let admin_addr = free_addr();
    let mut args = pki.node_args();
    args.extend([
        "--admin-addr".into(),
        admin_addr.clone(),
        "--admin-client-ca-file".into(),
        admin_ca_file,
    ]);
    let node = start(&args).await;

    let backend = admin_ca.leaf(&["backend"], 11).unwrap();
    eventually("the admin API to answer the backend", || async {
        admin_stats(&admin_addr, &pki.trust_with(&backend))
            .await
            .ok()
    })
    .await;
    let err = admin_stats(&admin_addr, &pki.trust()).await.unwrap_err();
    eprintln!("admin without a client certificate: {err}");
    assert!(!err.is_empty());
    // A device certificate (signed by the node's CA, not the admin CA) is not enough.
    let device = pki.ca.leaf(&["device-1"], 12).unwrap();
    admin_stats(&admin_addr, &pki.trust_with(&device))
        .await
        .unwrap_err();
    // The device-facing port asks for no client certificate.
    let mut bob = tls_session(&https(&node), &pki.trust(), "bob")
        .await
        .unwrap();
    heartbeat_acked(&mut bob).await;
}

/// Runs `presence-node` with `args` and returns its exit code and stderr.
async fn node_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_presence-node"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PRESENCE_") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .args(["--listen-addr", &free_addr()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + patience();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            return (status.code(), stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("presence-node {args:?} did not exit");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn bad_tls_settings_exit_64_naming_the_setting() {
    let pki = Pki::new("config");
    let missing = s(&pki.dir.path("missing.crt"));
    let garbage = pki.dir.write("garbage.crt", "not a certificate\n");
    let other_key = pki.dir.write(
        "other.key",
        &pki.ca.leaf(&["127.0.0.1"], 9).unwrap().key_pem,
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--tls-key-file", &pki.key], "PRESENCE_TLS_CERT_FILE"),
        (vec!["--tls-cert-file", &pki.cert], "PRESENCE_TLS_KEY_FILE"),
        (
            vec!["--tls-client-ca-file", &pki.ca_file],
            "PRESENCE_TLS_CLIENT_CA_FILE",
        ),
        (
            vec!["--admin-client-ca-file", &pki.ca_file],
            "PRESENCE_ADMIN_CLIENT_CA_FILE",
        ),
        (
            vec!["--tls-cert-file", &missing, "--tls-key-file", &pki.key],
            "PRESENCE_TLS_CERT_FILE",
        ),
        (
            vec!["--tls-cert-file", &garbage, "--tls-key-file", &pki.key],
            "PRESENCE_TLS_CERT_FILE",
        ),
        (
            vec!["--tls-cert-file", &pki.cert, "--tls-key-file", &other_key],
            "PRESENCE_TLS_KEY_FILE",
        ),
        (
            vec![
                "--tls-cert-file",
                &pki.cert,
                "--tls-key-file",
                &pki.key,
                "--tls-client-ca-file",
                &garbage,
            ],
            "PRESENCE_TLS_CLIENT_CA_FILE",
        ),
    ];
    for (args, setting) in cases {
        let (code, stderr) = node_exit(&args).await;
        assert_eq!(code, Some(64), "{args:?}: {stderr}");
        assert!(
            stderr.contains(setting),
            "{args:?} should name {setting}: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    // The environment works as the flags do.
    let (code, stderr) = {
        let mut command = Command::new(env!("CARGO_BIN_EXE_presence-node"));
        let output = command
            .args(["--listen-addr", &free_addr()])
            .env("PRESENCE_TLS_KEY_FILE", &pki.key)
            .env_remove("PRESENCE_TLS_CERT_FILE")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("PRESENCE_TLS_CERT_FILE"), "{stderr}");
}

#[test]
fn credentials_do_not_leak_into_debug() {
    let leaf = Ca::new("debug CA").unwrap().leaf(&["x"], 1).unwrap();
    let options = TlsOptions {
        ca_pem: None,
        client_identity: Some(ClientIdentity {
            cert_pem: leaf.cert_pem.clone().into_bytes(),
            key_pem: leaf.key_pem.clone().into_bytes(),
        }),
        server_name: None,
    };
    let shown = format!("{options:?} {leaf:?}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
}

/// Runs the `presence` CLI with `args` (no PRESENCE_* from the environment).
async fn cli(args: Vec<String>) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_presence"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PRESENCE_") {
            command.env_remove(key);
        }
    }
    let output = command.args(args).kill_on_drop(true).output();
    tokio::time::timeout(patience(), output)
        .await
        .expect("the CLI exits within the patience")
        .unwrap()
}

#[tokio::test]
async fn the_cli_speaks_tls_and_mtls() {
    let pki = Pki::new("cli");
    let mut args = pki.node_args();
    args.extend(["--tls-client-ca-file".into(), pki.ca_file.clone()]);
    let node = start(&args).await;
    let dir = &pki.dir;
    let client = pki.ca.leaf(&["cli"], 21).unwrap();
    let client_cert = dir.write("client.crt", &client.cert_pem);
    let client_key = dir.write("client.key", &client.key_pem);
    let get = |extra: &[&str]| {
        let mut all: Vec<String> = vec!["--server".into(), node.addr.to_string()];
        all.extend(extra.iter().map(|a| a.to_string()));
        all.extend(["--user", "bob", "get", "alice"].map(String::from));
        all
    };

    let out = cli(get(&[
        "--ca-file",
        &pki.ca_file,
        "--client-cert",
        &client_cert,
        "--client-key",
        &client_key,
    ]))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.starts_with("alice  offline"), "{stdout}");

    // No client certificate: one line, exit 1.
    let out = cli(get(&["--ca-file", &pki.ca_file])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("presence: "), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // A certificate without its key is refused before connecting.
    let out = cli(get(&[
        "--ca-file",
        &pki.ca_file,
        "--client-cert",
        &client_cert,
    ]))
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--client-key"), "{stderr}");
}

/// Runs `presence-bench` with `args` (it starts its own TLS node) and returns its JSON.
async fn bench(args: &[&str]) -> serde_json::Value {
    let dir = TempDir::new("bench");
    let out = dir.path("out.json");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_presence-bench"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PRESENCE_") {
            command.env_remove(key);
        }
    }
    let run = command
        .args(args)
        .arg("--out")
        .arg(&out)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the bench ends")
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

#[tokio::test]
async fn the_bench_drives_tls_nodes() {
    let idle = bench(&[
        "idle",
        "--tls",
        "--sessions",
        "40",
        "--connections",
        "4",
        "--watch",
        "3",
        "--hold-s",
        "0.3",
    ])
    .await;
    assert_eq!(idle["sessions"], 40, "{idle}");
    assert_eq!(idle["errors"], 0, "{idle}");
    // Storm's proxy passes TLS through.
    let storm = bench(&[
        "storm",
        "--tls",
        "--sessions",
        "30",
        "--connections",
        "3",
        "--reconnect-window-s",
        "0.3",
        "--offline-grace-ms",
        "1000",
        "--watchers",
        "2",
        "--watch",
        "10",
    ])
    .await;
    assert_eq!(storm["sessions"], 30, "{storm}");
    assert_eq!(storm["errors"], 0, "{storm}");
}
