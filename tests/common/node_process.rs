//! A `presence-node` process (for tests that kill nodes with SIGKILL or SIGTERM), on a free
//! port, its log printed when the test fails, killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NodeProcess {
    pub url: String,
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl NodeProcess {
    pub async fn start(args: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::env::temp_dir().join(format!("presence-node-{port}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_presence-node"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PRESENCE_") {
                command.env_remove(key);
            }
        }
        let child = command
            .args(["--listen-addr", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start presence-node");
        let node = Self {
            url: format!("http://127.0.0.1:{port}"),
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while presence_node::client::connect(&node.url).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "node did not start:\n{}",
                node.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        node
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as the OOM killer or a lost machine would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn signal_term(&self) {
        let pid = self.pid() as i32;
        // SAFETY-free: libc::kill is an FFI call; tests may use unsafe.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }

    /// Waits for exit (after SIGTERM) up to `patience`; returns whether it exited 0.
    pub fn wait_exit(&mut self, patience: Duration) -> Option<bool> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + patience;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status.success());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- presence-node log ({}) ----\n{}", self.url, self.log());
        }
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}
