//! A real 3-master Redis Cluster built from redis-server processes by `redis-cli --cluster
//! create`, on free ports, killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

/// Ports for cluster nodes. A node also listens on its bus port (port + 10000); both are
/// taken below the kernel's ephemeral range (32768+), from a counter, so clusters of
/// concurrent tests (and the ports the OS hands out) never collide with each other. Each
/// test process starts at its own block of 10 (nextest runs every test in a process of its
/// own), chosen by its pid among 990.
fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        12_000 + (std::process::id() % 990) as u16 * 10,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    let mut ports = Vec::new();
    while ports.len() < n {
        let p = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(p < 22_700, "ran out of test ports");
        let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free(p) && free(p + 10_000) {
            ports.push(p);
        }
    }
    ports
}

impl RedisCluster {
    pub fn start() -> Self {
        let ports = free_ports(3);
        let dir = std::env::temp_dir().join(format!(
            "presence-cluster-{}-{}",
            ports[0],
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut children = Vec::new();
        for port in &ports {
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            children.push(
                Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args([
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                    ])
                    .args([
                        "--cluster-node-timeout",
                        "2000",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ])
                    .arg("--dir")
                    .arg(&node_dir)
                    .arg("--logfile")
                    .arg(node_dir.join("redis.log"))
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("redis-server"),
            );
        }
        let cluster = Self {
            ports,
            children,
            dir,
        };
        for port in &cluster.ports {
            cluster.wait_ping(*port);
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.wait_ok();
        cluster
    }

    fn wait_ping(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.conn(port).is_none() {
            assert!(
                Instant::now() < deadline,
                "redis-server {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = self.ports.iter().all(|p| {
                self.conn(*p)
                    .and_then(|mut c| {
                        redis::cmd("CLUSTER")
                            .arg("INFO")
                            .query::<String>(&mut c)
                            .ok()
                    })
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "cluster did not become ok");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn conn(&self, port: u16) -> Option<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .ok()?
            .get_connection()
            .ok()
    }

    /// Seed URLs, comma-separated, as PRESENCE_REDIS_URL takes them.
    pub fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn node_id(&self, port: u16) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.conn(port).unwrap())
            .unwrap()
    }

    /// The port of the master serving `slot`.
    pub fn owner_of(&self, slot: u16) -> u16 {
        let slots: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut self.conn(self.ports[0]).unwrap())
            .unwrap();
        let redis::Value::Array(ranges) = slots else {
            panic!("CLUSTER SLOTS")
        };
        for range in ranges {
            let redis::Value::Array(fields) = range else {
                continue;
            };
            let start: u16 = redis::from_redis_value(fields[0].clone()).unwrap();
            let end: u16 = redis::from_redis_value(fields[1].clone()).unwrap();
            if (start..=end).contains(&slot) {
                let redis::Value::Array(master) = fields[2].clone() else {
                    continue;
                };
                return redis::from_redis_value(master[1].clone()).unwrap();
            }
        }
        panic!("slot {slot} not served");
    }

    pub fn slot_of(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.conn(self.ports[0]).unwrap())
            .unwrap()
    }

    /// Moves `slot` (and its keys) to the master on `to`, as `redis-cli --cluster reshard`
    /// does: IMPORTING / MIGRATING, MIGRATE the keys, then SETSLOT NODE everywhere.
    pub fn migrate_slot(&self, slot: u16, to: u16) {
        let from = self.owner_of(slot);
        assert_ne!(from, to);
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let mut src = self.conn(from).unwrap();
        let mut dst = self.conn(to).unwrap();
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("IMPORTING")
            .arg(&from_id)
            .query(&mut dst)
            .unwrap();
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("MIGRATING")
            .arg(&to_id)
            .query(&mut src)
            .unwrap();
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut src)
                .unwrap();
            if keys.is_empty() {
                break;
            }
            let _: () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query(&mut src)
                .unwrap();
        }
        for port in &self.ports {
            let _: () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("NODE")
                .arg(&to_id)
                .query(&mut self.conn(*port).unwrap())
                .unwrap();
        }
        self.wait_ok();
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for port in &self.ports {
                if let Ok(log) =
                    std::fs::read_to_string(self.dir.join(port.to_string()).join("redis.log"))
                {
                    let tail: Vec<&str> = log.lines().rev().take(30).collect();
                    eprintln!("---- redis cluster node {port} (last lines) ----");
                    for line in tail.iter().rev() {
                        eprintln!("{line}");
                    }
                }
            }
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
