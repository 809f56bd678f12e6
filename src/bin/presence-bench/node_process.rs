//! The node under test: started by the benchmark (a child process killed on drop) or given.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct Target {
    /// A running node to drive (e.g. http://127.0.0.1:50051); default: start one.
    #[arg(long)]
    pub server: Option<String>,
    /// Pid of the node at --server, to read its RSS and CPU time.
    #[arg(long)]
    pub node_pid: Option<u32>,
    /// Extra flags for the node the benchmark starts.
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    pub node_args: Vec<String>,
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

fn free_port() -> Result<u16, String> {
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
    pub async fn start(target: &Target, defaults: &[&str]) -> Result<Self, String> {
        if let Some(url) = &target.server {
            return Ok(Self {
                url: url.clone(),
                pid: target.node_pid,
                child: None,
            });
        }
        let port = free_port()?;
        let child = Command::new(node_binary()?)
            .arg("--listen-addr")
            .arg(format!("127.0.0.1:{port}"))
            .args(defaults)
            .args(&target.node_args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start presence-node: {e}"))?;
        let node = Self {
            url: format!("http://127.0.0.1:{port}"),
            pid: Some(child.id()),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while presence_node::client::connect(&node.url).await.is_err() {
            if Instant::now() > deadline {
                return Err("the node did not start listening within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(node)
    }

    /// Resident set size of the node, from /proc.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// User + system CPU seconds of the node so far, from /proc.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid?)).ok()?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / 100.0)
    }
}
