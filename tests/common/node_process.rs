//! The shipped programs as real processes (for tests that signal or kill nodes, read their
//! memory from /proc, or run the CLI): a child with its output captured, printed when the
//! test fails, killed on drop; and a `presence-node` on a free port of 127.0.0.1.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tonic::transport::Channel;

pub const NODE_BIN: &str = env!("CARGO_BIN_EXE_presence-node");

/// A child process with captured output, killed on drop; its output is printed when the
/// test is failing.
pub struct Process {
    name: String,
    /// In a mutex so that a shared guard can be polled for the exit (`eventually`).
    child: Mutex<Child>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

fn capture(pipe: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => into.lock().unwrap().push_str(&line),
            }
        }
    })
}

impl Process {
    /// Starts `program` with `args` and `envs` (and no `PRESENCE_*` variable of the
    /// environment the tests run in).
    pub fn spawn(program: &str, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut command = Command::new(program);
        // Settings of the environment the tests run in must not leak into the programs.
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
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            capture(child.stdout.take().unwrap(), stdout.clone()),
            capture(child.stderr.take().unwrap(), stderr.clone()),
        ];
        let name = std::path::Path::new(program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| program.to_string());
        Self {
            name: format!("{name} {}", args.join(" ")),
            child: Mutex::new(child),
            stdout,
            stderr,
            readers,
        }
    }

    /// The child (still usable after a test panicked while holding it).
    fn child(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child().id() as libc::pid_t
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on the pid of a child this guard owns and has not reaped yet.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// SIGKILL, as the OOM killer or a lost machine would; waits until it is gone.
    pub fn kill(&self) {
        let mut child = self.child();
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn exited(&self) -> Option<ExitStatus> {
        self.child().try_wait().expect("try_wait")
    }

    /// Polls for the exit until `within` has passed; `None` if still running.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let this = &*self;
        let status = super::eventually_within(within, || async move { this.exited() }).await?;
        // The pipes close with the process: the output is complete after this.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Some(status)
    }

    pub fn dump(&self) {
        eprintln!(
            "----- {} (pid {}) stdout -----\n{}----- stderr -----\n{}-----",
            self.name,
            self.pid(),
            self.stdout(),
            self.stderr()
        );
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump();
        }
        self.kill();
    }
}

/// A `presence-node` process serving gRPC on its own port of 127.0.0.1.
pub struct NodeProcess {
    pub proc: Process,
    pub port: u16,
    pub url: String,
}

impl NodeProcess {
    /// Starts a node with `args` and waits until it accepts connections.
    pub async fn start(args: &[&str]) -> Self {
        Self::start_with(args, &[]).await
    }

    /// The same with environment variables `envs`.
    pub async fn start_with(args: &[&str], envs: &[(&str, &str)]) -> Self {
        let port = super::free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut all = vec!["--listen-addr", listen.as_str()];
        all.extend_from_slice(args);
        let node = Self {
            proc: Process::spawn(NODE_BIN, &all, envs),
            port,
            url: format!("http://{listen}"),
        };
        let starting = &node;
        let started = super::eventually_within(super::patience(), || async move {
            if let Some(status) = starting.proc.exited() {
                panic!("presence-node exited before serving: {status}");
            }
            presence_node::client::connect(&starting.url)
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        assert!(
            started.is_some(),
            "presence-node did not accept connections on {listen} within the patience"
        );
        node
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub async fn channel(&self) -> Channel {
        presence_node::client::connect(&self.url)
            .await
            .expect("connect")
    }

    /// SIGKILL, as the OOM killer or a lost machine would.
    pub fn kill(&self) {
        self.proc.kill();
    }

    /// Resident set size of the node, from /proc/<pid>/status.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.proc.pid()))
            .expect("read /proc/<pid>/status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|n| n.trim().parse().ok())
            .expect("a VmRSS line in kB");
        kib * 1024
    }
}
