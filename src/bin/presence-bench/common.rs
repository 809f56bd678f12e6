//! What the scenarios share: output flags, connections, latency histograms, held sessions,
//! and a connection that can be killed abruptly.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use clap::Args;
use presence_node::client::{self, Session};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::Channel;

/// `--out` and `--plot`, the same for every scenario.
#[derive(Debug, Clone, Args)]
pub struct Output {
    /// Write the results as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Draw the latency distribution here (SVG).
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// Unix time in microseconds (every process of a run is on this machine: clocks agree).
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub fn new_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::<u64>::new(3).expect("histogram")
}

/// Latencies recorded from many tasks: a few locked histograms, merged at the end.
pub struct Histograms {
    shards: Vec<Mutex<hdrhistogram::Histogram<u64>>>,
}

impl Histograms {
    pub fn new() -> Self {
        Self {
            shards: (0..32).map(|_| Mutex::new(new_histogram())).collect(),
        }
    }

    /// Records microseconds; `key` picks the shard (e.g. the recording session's index).
    pub fn record(&self, key: usize, us: u64) {
        let mut shard = self.shards[key % self.shards.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let _ = shard.record(us.max(1));
    }

    pub fn merged(&self) -> hdrhistogram::Histogram<u64> {
        let mut all = new_histogram();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let _ = all.add(&*shard);
        }
        all
    }
}

/// How the benchmark's connections are secured (set once, by `Deployment::start`).
static TLS: std::sync::OnceLock<client::TlsOptions> = std::sync::OnceLock::new();

/// Sets the TLS options of every later [`connect`] (`--tls`, `--ca-file`).
pub fn set_tls(options: client::TlsOptions) {
    let _ = TLS.set(options);
}

/// One connection to `url`, with the run's TLS options.
pub async fn connect(url: &str) -> Result<Channel, client::ClientError> {
    match TLS.get() {
        Some(options) => client::connect_with(url, options).await,
        None => client::connect(url).await,
    }
}

/// `count` connections spread round-robin over `urls`.
pub async fn connect_spread(urls: &[String], count: usize) -> Result<Vec<Channel>, String> {
    let mut channels = Vec::with_capacity(count);
    for i in 0..count {
        let url = &urls[i % urls.len()];
        channels.push(connect(url).await.map_err(|e| format!("{url}: {e}"))?);
    }
    Ok(channels)
}

/// Keeps a session alive until `stop`: heartbeats at `interval` (first one jittered), reads
/// and drops whatever arrives. Returns false if the session ended before `stop`.
pub async fn hold(
    mut session: Session,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> bool {
    let mut next = tokio::time::Instant::now() + interval.mul_f64(rand::random_range(0.0..1.0));
    loop {
        if *stop.borrow() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                if session.heartbeat().await.is_err() {
                    return false;
                }
                next += interval;
            }
            frame = session.recv() => {
                if !matches!(frame, Ok(Some(_))) {
                    return false;
                }
            }
            _ = stop.changed() => {}
        }
    }
}

/// The heartbeat interval a `Welcome` asks for (at least 100 ms).
pub fn heartbeat_interval(welcome: &presence_node::proto::Welcome) -> Duration {
    Duration::from_millis(welcome.heartbeat_interval_ms.max(100))
}

/// A loopback TCP proxy in front of a node whose connections can all be killed at once:
/// both sockets are dropped with no HTTP/2 GOAWAY and no end of stream, as when a network
/// or an app dies. (The node sees its connection end abruptly.)
pub struct CuttableProxy {
    pub url: String,
    accept: tokio::task::JoinHandle<()>,
    pipes: std::sync::Arc<tokio::sync::Mutex<JoinSet<()>>>,
}

impl CuttableProxy {
    /// A proxy forwarding to the node at `node_url` (`http://127.0.0.1:PORT`, or `https://`:
    /// TLS passes through it).
    pub async fn start(node_url: &str) -> Result<Self, String> {
        let (scheme, target) = node_url.split_once("://").unwrap_or(("http", node_url));
        let scheme = scheme.to_string();
        let target = target.trim_end_matches('/').to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let pipes = std::sync::Arc::new(tokio::sync::Mutex::new(JoinSet::new()));
        let accept_pipes = pipes.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                accept_pipes.lock().await.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = outbound.set_nodelay(true);
                        let _ = inbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(Self {
            url: format!("{scheme}://{addr}"),
            accept,
            pipes,
        })
    }

    /// Kills every connection through the proxy at once and stops accepting; returns once
    /// every socket is closed (so nothing a client sends afterwards, such as the end of
    /// stream of a dropped session, can reach the node).
    pub async fn cut(&self) {
        self.accept.abort();
        let mut pipes = self.pipes.lock().await;
        pipes.abort_all();
        while pipes.join_next().await.is_some() {}
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Prints `line` at most every `every` (progress output).
pub struct Progress {
    every: Duration,
    last: std::time::Instant,
}

impl Progress {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: std::time::Instant::now(),
        }
    }

    pub fn tick(&mut self, line: impl FnOnce() -> String) {
        if self.last.elapsed() >= self.every {
            self.last = std::time::Instant::now();
            println!("  {}", line());
        }
    }
}

/// An open-loop schedule of changes at `rate`/s, on the millisecond ticks the driver wakes
/// at: change k is due at `floor(k * 1000 / rate)` ms after the start. Latency is measured
/// from that moment, so a driver (or a runtime) that falls behind counts its lateness (no
/// coordinated omission), and the schedule asks nothing finer than the timer can do.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    rate: f64,
    start_us: u64,
    start: std::time::Instant,
}

impl Schedule {
    pub fn start(rate: f64) -> Self {
        Self {
            rate,
            start_us: unix_us(),
            start: std::time::Instant::now(),
        }
    }

    /// How many changes are due by now (changes 0..due).
    pub fn due(&self) -> u64 {
        let elapsed_ms = self.start.elapsed().as_millis() as f64;
        ((elapsed_ms + 1.0) * self.rate / 1000.0).ceil() as u64
    }

    /// When change k was due (unix microseconds).
    pub fn scheduled_us(&self, k: u64) -> u64 {
        self.start_us + ((k as f64 * 1000.0 / self.rate).floor() as u64) * 1000
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}
