//! A real `redis-server` per test, on a free port, killed on drop; its log is printed when
//! the test fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    /// Serves TLS only (rediss://), with the test certificates in tests/fixtures/redis-tls.
    tls: bool,
}

/// The test TLS material (CA, server certificate and key for 127.0.0.1).
pub fn tls_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/redis-tls")
        .join(name)
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A redis-server that only speaks TLS.
    pub fn start_tls() -> Self {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Self {
        let port = super::free_port();
        let dir =
            std::env::temp_dir().join(format!("presence-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            port,
            child: None,
            dir,
            tls,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        if self.tls {
            command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(tls_fixture("cert.pem"))
                .arg("--tls-key-file")
                .arg(tls_fixture("key.pem"))
                .arg("--tls-ca-cert-file")
                .arg(tls_fixture("ca.pem"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            command.args(["--port", &self.port.to_string()]);
        }
        let child = command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(client) = self.client() {
                if let Ok(mut conn) = client.get_connection() {
                    if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn client(&self) -> redis::RedisResult<redis::Client> {
        if self.tls {
            redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(tls_fixture("ca.pem")).unwrap()),
                },
            )
        } else {
            redis::Client::open(self.url())
        }
    }

    /// SIGKILL: the data is gone (no persistence).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port, empty.
    pub fn restart_empty(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn connection(&self) -> redis::Connection {
        self.client().unwrap().get_connection().unwrap()
    }

    /// `INFO commandstats` calls per command (lowercase names).
    pub fn command_calls(&self) -> std::collections::HashMap<String, u64> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.connection())
            .unwrap();
        info.lines()
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
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(log) = std::fs::read_to_string(self.dir.join("redis.log")) {
                eprintln!("---- redis-server log (port {}) ----\n{log}", self.port);
            }
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
