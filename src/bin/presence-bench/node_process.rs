//! The nodes under test and their Redis: started by the benchmark (child processes killed on
//! drop: k nodes sharing one `redis-server` on a free loopback port, or one node on its
//! embedded store) or given (`--server`, repeated; `--redis-url`).

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct Target {
    /// A running node to drive (e.g. http://127.0.0.1:50051), repeated for several nodes;
    /// default: start them.
    #[arg(long = "server")]
    pub servers: Vec<String>,
    /// Pid of the node at the --server of the same position, to read its RSS and CPU time.
    #[arg(long = "node-pid")]
    pub node_pids: Vec<u32>,
    /// Extra flags for the node(s) the benchmark starts.
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    pub node_args: Vec<String>,
    /// Nodes to start; more than one shares a redis-server (cluster mode).
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Run a single started node on Redis too (default: its embedded store).
    #[arg(long)]
    pub redis: bool,
    /// An existing Redis (redis://127.0.0.1:PORT): started nodes use it instead of a
    /// redis-server of their own; with --server, only its `INFO commandstats` is read.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Started nodes serve TLS, with a certificate made for the run by a private CA that
    /// the benchmark's connections trust.
    #[arg(long)]
    pub tls: bool,
    /// PEM CA to trust for `--server https://...` nodes (default: the public roots).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

/// A node to drive: its URL and pid.
pub struct NodeUnderTest {
    pub url: String,
    pub pid: Option<u32>,
    child: Option<Child>,
}

impl Drop for NodeUnderTest {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn node_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.with_file_name("presence-node");
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found; build it (cargo build --release) or pass --server",
            path.display()
        ))
    }
}

impl NodeUnderTest {
    /// Starts a node with `args` on a free loopback port and waits until it answers
    /// `GetPresence` (in cluster mode: once it reached Redis).
    async fn spawn(args: &[String], scheme: &str) -> Result<Self, String> {
        let port = free_port()?;
        let mut command = Command::new(node_binary()?);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PRESENCE_") {
                command.env_remove(key);
            }
        }
        let child = command
            .arg("--listen-addr")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start presence-node: {e}"))?;
        let node = Self {
            url: format!("{scheme}://127.0.0.1:{port}"),
            pid: Some(child.id()),
            child: Some(child),
        };
        node.wait_ready(Duration::from_secs(20)).await?;
        Ok(node)
    }

    async fn wait_ready(&self, patience: Duration) -> Result<(), String> {
        let deadline = Instant::now() + patience;
        let who = presence_node::client::Credentials::User("presence-bench".into());
        loop {
            if let Ok(channel) = crate::common::connect(&self.url).await {
                let ids = vec!["presence-bench-ready".to_string()];
                if presence_node::client::get_presence(channel, &who, ids)
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the node at {} did not answer within {} s",
                    self.url,
                    patience.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Resident set size of the node, from /proc.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_bytes(self.pid?)
    }

    /// User + system CPU seconds of the node so far, from /proc.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid?)
    }
}

/// Resident set size of a process, from /proc/<pid>/status.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// User + system CPU seconds of a process so far, from /proc/<pid>/stat.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Clock ticks of 1/100 s (USER_HZ on Linux).
    Some((utime + stime) / 100.0)
}

/// A `redis-server` of the benchmark's own: a free loopback port, no persistence, its files
/// in a temporary directory; killed (and the directory removed) on drop.
pub struct RedisServer {
    pub url: String,
    pub pid: u32,
    child: Child,
    dir: PathBuf,
}

impl RedisServer {
    pub fn start() -> Result<Self, String> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!(
            "presence-bench-redis-{port}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--maxclients", "1000"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server (is Redis 7 installed?): {e}"))?;
        let server = Self {
            url: format!("redis://127.0.0.1:{port}"),
            pid: child.id(),
            child,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while command_calls(&server.url).is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not start within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `INFO commandstats` of the Redis at `url`: calls per command (lower-case names).
pub fn command_calls(url: &str) -> Result<HashMap<String, u64>, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .map_err(|e| e.to_string())?;
    Ok(info
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("cmdstat_")?;
            let (name, stats) = rest.split_once(':')?;
            let calls = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect())
}

/// Commands run inside the node's Lua scripts (so not requests of their own) and the
/// benchmark's own `INFO`.
const NOT_REQUESTS: &[&str] = &[
    "hget",
    "time",
    "hset",
    "pexpire",
    "publish",
    "spublish",
    "zadd",
    "zrangebyscore",
    "set",
    "info",
];

/// What Redis did between two `INFO commandstats` readings.
#[derive(Debug, Clone, Default)]
pub struct RedisDelta {
    /// Calls per command (the benchmark's `INFO` left out).
    pub by_command: Vec<(String, u64)>,
    /// Every command, those run inside scripts included.
    pub commands: u64,
    /// Requests the nodes sent (round trips, pipelined commands counted one by one): the
    /// commands that scripts run and `INFO` left out.
    pub requests: u64,
}

impl RedisDelta {
    pub fn between(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> Self {
        let mut by_command: Vec<(String, u64)> = after
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .map(|(name, calls)| {
                (
                    name.clone(),
                    calls.saturating_sub(*before.get(name).unwrap_or(&0)),
                )
            })
            .filter(|(_, calls)| *calls > 0)
            .collect();
        by_command.sort();
        let commands = by_command.iter().map(|(_, c)| c).sum();
        let requests = by_command
            .iter()
            .filter(|(name, _)| !NOT_REQUESTS.contains(&name.as_str()))
            .map(|(_, c)| c)
            .sum();
        Self {
            by_command,
            commands,
            requests,
        }
    }

    /// Calls per unit (e.g. per change) for each command, as JSON.
    pub fn per(&self, units: u64) -> serde_json::Value {
        let units = units.max(1) as f64;
        serde_json::Value::Object(
            self.by_command
                .iter()
                .map(|(name, calls)| (name.clone(), serde_json::json!(*calls as f64 / units)))
                .collect(),
        )
    }
}

/// The nodes under test (and the Redis they share, if the benchmark started one).
pub struct Deployment {
    pub nodes: Vec<NodeUnderTest>,
    /// The Redis the nodes use, when known (started here or given with --redis-url).
    pub redis_url: Option<String>,
    redis: Option<RedisServer>,
    /// The certificate files of `--tls`, removed on drop.
    tls_dir: Option<TlsDir>,
}

/// The node certificate of a `--tls` run, in a temporary directory removed on drop.
struct TlsDir(PathBuf);

impl TlsDir {
    /// A private CA and a certificate for 127.0.0.1 it signed: the files, and the client
    /// options trusting the CA.
    fn create() -> Result<(Self, presence_node::client::TlsOptions), String> {
        let ca = presence_node::tls::certs::Ca::new("presence-bench CA")?;
        let leaf = ca.leaf(&["127.0.0.1", "localhost"], 1)?;
        let dir = std::env::temp_dir().join(format!(
            "presence-bench-tls-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let write = |name: &str, contents: &str| {
            std::fs::write(dir.join(name), contents).map_err(|e| format!("{name}: {e}"))
        };
        write("tls.crt", &leaf.cert_pem)?;
        write("tls.key", &leaf.key_pem)?;
        let options = presence_node::client::TlsOptions {
            ca_pem: Some(ca.cert_pem.into_bytes()),
            client_identity: None,
            server_name: None,
        };
        Ok((Self(dir), options))
    }

    fn node_args(&self) -> Vec<String> {
        vec![
            "--tls-cert-file".into(),
            self.0.join("tls.crt").to_string_lossy().into_owned(),
            "--tls-key-file".into(),
            self.0.join("tls.key").to_string_lossy().into_owned(),
        ]
    }
}

impl Drop for TlsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Deployment {
    /// Starts what `target` asks for: `--nodes k` nodes (k > 1, `--redis` or `--redis-url`:
    /// cluster mode on a shared Redis, a redis-server of our own unless `--redis-url`), or
    /// takes the given `--server`s. `defaults` are node flags put before `--node-arg`s (a
    /// flag given twice: the last wins).
    pub async fn start(target: &Target, defaults: &[&str]) -> Result<Self, String> {
        if let Some(path) = &target.ca_file {
            let options = presence_node::client::TlsOptions::from_files(Some(path), None, None)
                .map_err(|e| e.to_string())?;
            crate::common::set_tls(options);
        }
        if !target.servers.is_empty() {
            let nodes = target
                .servers
                .iter()
                .enumerate()
                .map(|(i, url)| NodeUnderTest {
                    url: url.clone(),
                    pid: target.node_pids.get(i).copied(),
                    child: None,
                })
                .collect();
            return Ok(Self {
                nodes,
                redis_url: target.redis_url.clone(),
                redis: None,
                tls_dir: None,
            });
        }
        if target.nodes == 0 {
            return Err("--nodes must be at least 1".into());
        }
        let clustered = target.nodes > 1 || target.redis || target.redis_url.is_some();
        let (redis, redis_url) = match (&target.redis_url, clustered) {
            (Some(url), _) => (None, Some(url.clone())),
            (None, true) => {
                let server = RedisServer::start()?;
                let url = server.url.clone();
                (Some(server), Some(url))
            }
            (None, false) => (None, None),
        };
        let tls_dir = match target.tls {
            true => {
                let (dir, options) = TlsDir::create()?;
                crate::common::set_tls(options);
                Some(dir)
            }
            false => None,
        };
        let scheme = if tls_dir.is_some() { "https" } else { "http" };
        let prefix = format!("bench{}x{:x}", std::process::id(), rand::random::<u32>());
        let mut nodes = Vec::new();
        for i in 0..target.nodes {
            let mut args: Vec<String> = defaults.iter().map(|s| s.to_string()).collect();
            if let Some(url) = &redis_url {
                args.extend([
                    "--redis-url".to_string(),
                    url.clone(),
                    "--key-prefix".to_string(),
                    prefix.clone(),
                    "--node-id".to_string(),
                    format!("{prefix}-n{i}"),
                ]);
            }
            if let Some(dir) = &tls_dir {
                args.extend(dir.node_args());
            }
            args.extend(target.node_args.iter().cloned());
            nodes.push(NodeUnderTest::spawn(&args, scheme).await?);
        }
        Ok(Self {
            nodes,
            redis_url,
            redis,
            tls_dir,
        })
    }

    /// One line describing what runs, for progress output.
    pub fn describe(&self) -> String {
        let store = match (&self.redis_url, &self.redis) {
            (Some(_), Some(_)) => "on a redis-server started here".to_string(),
            (Some(url), None) => format!("on Redis at {url}"),
            (None, _) => "embedded store".to_string(),
        };
        let tls = if self.tls_dir.is_some() {
            ", TLS (a certificate made for the run)"
        } else {
            ""
        };
        format!(
            "{} node(s) ({}), {store}{tls}",
            self.nodes.len(),
            self.nodes
                .iter()
                .map(|n| n.url.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// Summed RSS of the nodes (None if any is unknown).
    pub fn rss_bytes(&self) -> Option<u64> {
        self.nodes.iter().map(NodeUnderTest::rss_bytes).sum()
    }

    /// Summed CPU seconds of the nodes (None if any is unknown).
    pub fn cpu_seconds(&self) -> Option<f64> {
        self.nodes.iter().map(NodeUnderTest::cpu_seconds).sum()
    }

    /// CPU seconds of the redis-server started here.
    pub fn redis_cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.redis.as_ref()?.pid)
    }

    /// `INFO commandstats` of the nodes' Redis, if there is one.
    pub fn redis_calls(&self) -> Option<HashMap<String, u64>> {
        command_calls(self.redis_url.as_deref()?).ok()
    }
}

/// The soft limit on open files of this process (from /proc/self/limits).
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Warns when `needed` file descriptors may not fit under the soft limit.
pub fn check_open_files(needed: u64) {
    if let Some(limit) = open_files_limit() {
        if needed + 64 > limit {
            eprintln!(
                "warning: about {needed} file descriptors needed but the soft limit is {limit}; \
                 raise it first (ulimit -n 20000)"
            );
        }
    }
}
