//! Configuration: one typed struct, every setting both a flag and an environment variable,
//! defaults as named constants, invariants checked at start. Bad configuration stops the
//! node with a message naming the setting and exit code 64 (EX_USAGE in sysexits.h).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{CommandFactory, Parser, ValueEnum};

use crate::auth::{Authenticator, JwtKey, JwtSettings};
use crate::presence::limits::{self, Limits};
use crate::secret::Secret;

/// Exit code for bad configuration.
pub const EXIT_BAD_CONFIG: i32 = 64;

pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:50051";
pub const DEFAULT_KEY_PREFIX: &str = "presence";
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 10_000;
pub const DEFAULT_SESSION_TTL_MS: u64 = 30_000;
pub const DEFAULT_HELLO_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_OFFLINE_GRACE_MS: u64 = 3_000;
pub const DEFAULT_STORM_WINDOW_MS: u64 = 1_000;
pub const DEFAULT_STORM_THRESHOLD: usize = 200;
pub const DEFAULT_STORM_GRACE_MS: u64 = 30_000;
pub const DEFAULT_NODE_LEASE_TTL_MS: u64 = 10_000;
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 20_000;
pub const DEFAULT_STATUS_RETENTION_MS: u64 = 30 * 24 * 3600 * 1000;
pub const DEFAULT_STATUS_RATE_PER_S: u32 = 20;
pub const DEFAULT_STATUS_RATE_BURST: u32 = 40;
pub const DEFAULT_SUBSCRIBE_RATE_PER_S: u32 = 20;
pub const DEFAULT_SUBSCRIBE_RATE_BURST: u32 = 40;
pub const DEFAULT_MAX_LINGERING_PER_USER: usize = 16;
pub const DEFAULT_SESSION_OPEN_RATE_PER_S: u32 = 2;
pub const DEFAULT_SESSION_OPEN_RATE_BURST: u32 = 20;
pub const DEFAULT_USER_CHANGE_RATE_PER_S: u32 = 5;
pub const DEFAULT_USER_CHANGE_RATE_BURST: u32 = 20;
pub const DEFAULT_GET_RATE_PER_S: u32 = 50;
pub const DEFAULT_GET_RATE_BURST: u32 = 100;
pub const DEFAULT_FRAME_RATE_PER_S: u32 = 50;
pub const DEFAULT_FRAME_RATE_BURST: u32 = 200;
pub const DEFAULT_MAX_UNREAD_FRAMES: usize = 256;
pub const DEFAULT_MAX_UNREAD_BYTES: usize = 1024 * 1024;
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1024;
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
pub const DEFAULT_KEEPALIVE_INTERVAL_MS: u64 = 20_000;
pub const DEFAULT_KEEPALIVE_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_CONNECTION_IDLE_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// A quarter of the default streams per connection: an L7 load balancer multiplexes many devices
/// on one upstream connection, and a reconnect burst opens hundreds of streams at once before
/// their hellos are read.
pub const DEFAULT_MAX_PENDING_HELLOS_PER_CONNECTION: usize = 256;
pub const DEFAULT_SWEEP_INTERVAL_MS: u64 = 250;
pub const DEFAULT_JWT_LEEWAY_MS: u64 = 5_000;
pub const DEFAULT_RESYNC_INTERVAL_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// The user id is the `x-user-id` metadata value. For development only.
    Insecure,
    /// `authorization: Bearer <JWT>`; the user id is the token's `sub`.
    Jwt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithm {
    #[value(name = "HS256")]
    Hs256,
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RedisMode {
    Standalone,
    Cluster,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// presence-node: real-time user presence over gRPC.
#[derive(Debug, Clone, Parser)]
#[command(name = "presence-node", version, about)]
pub struct Config {
    /// gRPC listen address.
    #[arg(long, env = "PRESENCE_LISTEN_ADDR", default_value = DEFAULT_LISTEN_ADDR)]
    pub listen_addr: SocketAddr,

    /// Unset: embedded in-memory store (single node). `redis://...`: cluster mode.
    #[arg(long, env = "PRESENCE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<Secret>,

    /// `standalone` (one Redis, or a primary behind a failover proxy) or `cluster` (Redis
    /// Cluster: PRESENCE_REDIS_URL may list several seed nodes, comma-separated).
    #[arg(
        long,
        env = "PRESENCE_REDIS_MODE",
        value_enum,
        default_value = "standalone"
    )]
    pub redis_mode: RedisMode,

    /// PEM file of the CA that signed the Redis server certificate, for `rediss://` with a
    /// private CA (default: the system's trusted roots).
    #[arg(long, env = "PRESENCE_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// Command connections to a standalone Redis; requests rotate over them, so a status
    /// write does not queue behind every bulk read (Redis Cluster: one per shard, unpooled).
    #[arg(long, env = "PRESENCE_REDIS_POOL_SIZE", default_value_t = crate::cluster::pool::DEFAULT_POOL_SIZE)]
    pub redis_pool_size: usize,

    /// Prefix of every Redis key and channel.
    #[arg(long, env = "PRESENCE_KEY_PREFIX", default_value = DEFAULT_KEY_PREFIX)]
    pub key_prefix: String,

    /// This node's id [default: hostname + random suffix].
    #[arg(long, env = "PRESENCE_NODE_ID")]
    pub node_id: Option<String>,

    /// How calls are authenticated.
    #[arg(long, env = "PRESENCE_AUTH", value_enum, default_value = "insecure")]
    pub auth: AuthMode,

    /// Allow `insecure` identity on a listen address that is not loopback (anyone who reaches
    /// the node can claim to be anyone: only on a private network, for development).
    #[arg(
        long,
        env = "PRESENCE_ALLOW_INSECURE",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub allow_insecure: bool,

    /// JWT signature algorithm (jwt mode).
    #[arg(
        long,
        env = "PRESENCE_JWT_ALGORITHM",
        value_enum,
        default_value = "HS256"
    )]
    pub jwt_algorithm: JwtAlgorithm,

    /// Shared secret for HS256 (jwt mode).
    #[arg(long, env = "PRESENCE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// PEM public key file for RS256 / ES256 (jwt mode).
    #[arg(long, env = "PRESENCE_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// Clock skew allowed on `exp` and `nbf`.
    #[arg(long, env = "PRESENCE_JWT_LEEWAY_MS", default_value_t = DEFAULT_JWT_LEEWAY_MS)]
    pub jwt_leeway_ms: u64,

    /// Required `iss` claim, if set.
    #[arg(long, env = "PRESENCE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim, if set.
    #[arg(long, env = "PRESENCE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Told to clients in `Welcome`: send a frame at least this often.
    #[arg(long, env = "PRESENCE_HEARTBEAT_INTERVAL_MS", default_value_t = DEFAULT_HEARTBEAT_INTERVAL_MS)]
    pub heartbeat_interval_ms: u64,

    /// A session with no frame for this long is dead.
    #[arg(long, env = "PRESENCE_SESSION_TTL_MS", default_value_t = DEFAULT_SESSION_TTL_MS)]
    pub session_ttl_ms: u64,

    /// A stream must send `hello` within this long.
    #[arg(long, env = "PRESENCE_HELLO_TIMEOUT_MS", default_value_t = DEFAULT_HELLO_TIMEOUT_MS)]
    pub hello_timeout_ms: u64,

    /// Wait before OFFLINE after an abrupt end.
    #[arg(long, env = "PRESENCE_OFFLINE_GRACE_MS", default_value_t = DEFAULT_OFFLINE_GRACE_MS)]
    pub offline_grace_ms: u64,

    /// Storms: this many abrupt ends on the node within PRESENCE_STORM_WINDOW_MS (a load
    /// balancer or network path restarting) make abrupt ends linger for
    /// PRESENCE_STORM_GRACE_MS instead, so the mass reconnect shows no flaps; 0: off.
    #[arg(long, env = "PRESENCE_STORM_THRESHOLD", default_value_t = DEFAULT_STORM_THRESHOLD)]
    pub storm_threshold: usize,

    /// The window in which PRESENCE_STORM_THRESHOLD abrupt ends make a storm.
    #[arg(long, env = "PRESENCE_STORM_WINDOW_MS", default_value_t = DEFAULT_STORM_WINDOW_MS)]
    pub storm_window_ms: u64,

    /// The grace of an abrupt end during a storm (the worst-case ghost time then); the storm
    /// lasts until this long after its last abrupt end.
    #[arg(long, env = "PRESENCE_STORM_GRACE_MS", default_value_t = DEFAULT_STORM_GRACE_MS)]
    pub storm_grace_ms: u64,

    /// A node that has not renewed its lease for this long is dead (cluster mode).
    #[arg(long, env = "PRESENCE_NODE_LEASE_TTL_MS", default_value_t = DEFAULT_NODE_LEASE_TTL_MS)]
    pub node_lease_ttl_ms: u64,

    /// Watched users per session.
    #[arg(long, env = "PRESENCE_MAX_SUBSCRIPTIONS", default_value_t = limits::DEFAULT_MAX_SUBSCRIPTIONS)]
    pub max_subscriptions: usize,

    /// Live sessions per user.
    #[arg(long, env = "PRESENCE_MAX_SESSIONS_PER_USER", default_value_t = limits::DEFAULT_MAX_SESSIONS_PER_USER)]
    pub max_sessions_per_user: usize,

    /// Ids per `Subscribe`, `Unsubscribe` or `GetPresence`.
    #[arg(long, env = "PRESENCE_MAX_IDS_PER_REQUEST", default_value_t = limits::DEFAULT_MAX_IDS_PER_REQUEST)]
    pub max_ids_per_request: usize,

    /// Longest user id, in bytes of UTF-8.
    #[arg(long, env = "PRESENCE_MAX_USER_ID_BYTES", default_value_t = limits::DEFAULT_MAX_USER_ID_BYTES)]
    pub max_user_id_bytes: usize,

    /// Longest `status_text`, in bytes of UTF-8.
    #[arg(long, env = "PRESENCE_MAX_STATUS_TEXT_BYTES", default_value_t = limits::DEFAULT_MAX_STATUS_TEXT_BYTES)]
    pub max_status_text_bytes: usize,

    /// Longest drain on SIGTERM.
    #[arg(long, env = "PRESENCE_SHUTDOWN_GRACE_MS", default_value_t = DEFAULT_SHUTDOWN_GRACE_MS)]
    pub shutdown_grace_ms: u64,

    /// How long a chosen status and last seen outlive the last session.
    #[arg(long, env = "PRESENCE_STATUS_RETENTION_MS", default_value_t = DEFAULT_STATUS_RETENTION_MS)]
    pub status_retention_ms: u64,

    /// `set_status` frames per second per session (sustained).
    #[arg(long, env = "PRESENCE_STATUS_RATE_PER_S", default_value_t = DEFAULT_STATUS_RATE_PER_S)]
    pub status_rate_per_s: u32,

    /// `set_status` frames allowed in a burst.
    #[arg(long, env = "PRESENCE_STATUS_RATE_BURST", default_value_t = DEFAULT_STATUS_RATE_BURST)]
    pub status_rate_burst: u32,

    /// `subscribe` + `unsubscribe` frames per second per session (sustained).
    #[arg(long, env = "PRESENCE_SUBSCRIBE_RATE_PER_S", default_value_t = DEFAULT_SUBSCRIBE_RATE_PER_S)]
    pub subscribe_rate_per_s: u32,

    /// `subscribe` + `unsubscribe` frames allowed in a burst.
    #[arg(long, env = "PRESENCE_SUBSCRIBE_RATE_BURST", default_value_t = DEFAULT_SUBSCRIBE_RATE_BURST)]
    pub subscribe_rate_burst: u32,

    /// Sessions of one user lingering in their grace at once; past it the oldest lingering
    /// session stops counting at once.
    #[arg(long, env = "PRESENCE_MAX_LINGERING_PER_USER", default_value_t = DEFAULT_MAX_LINGERING_PER_USER)]
    pub max_lingering_per_user: usize,

    /// New sessions per second per user, on this node (sustained).
    #[arg(long, env = "PRESENCE_SESSION_OPEN_RATE_PER_S", default_value_t = DEFAULT_SESSION_OPEN_RATE_PER_S)]
    pub session_open_rate_per_s: u32,

    /// New sessions per user allowed in a burst.
    #[arg(long, env = "PRESENCE_SESSION_OPEN_RATE_BURST", default_value_t = DEFAULT_SESSION_OPEN_RATE_BURST)]
    pub session_open_rate_burst: u32,

    /// Visible changes per second of one user, all its sessions together (sustained).
    #[arg(long, env = "PRESENCE_USER_CHANGE_RATE_PER_S", default_value_t = DEFAULT_USER_CHANGE_RATE_PER_S)]
    pub user_change_rate_per_s: u32,

    /// Visible changes of one user allowed in a burst.
    #[arg(long, env = "PRESENCE_USER_CHANGE_RATE_BURST", default_value_t = DEFAULT_USER_CHANGE_RATE_BURST)]
    pub user_change_rate_burst: u32,

    /// `GetPresence` calls per second per identity, on this node (sustained).
    #[arg(long, env = "PRESENCE_GET_RATE_PER_S", default_value_t = DEFAULT_GET_RATE_PER_S)]
    pub get_rate_per_s: u32,

    /// `GetPresence` calls per identity allowed in a burst.
    #[arg(long, env = "PRESENCE_GET_RATE_BURST", default_value_t = DEFAULT_GET_RATE_BURST)]
    pub get_rate_burst: u32,

    /// Frames of any kind per second per session (sustained); past it the node stops
    /// reading the stream until it is back under the rate.
    #[arg(long, env = "PRESENCE_FRAME_RATE_PER_S", default_value_t = DEFAULT_FRAME_RATE_PER_S)]
    pub frame_rate_per_s: u32,

    /// Frames per session allowed in a burst.
    #[arg(long, env = "PRESENCE_FRAME_RATE_BURST", default_value_t = DEFAULT_FRAME_RATE_BURST)]
    pub frame_rate_burst: u32,

    /// Replies (acks, snapshots, errors) a session may leave unread before it is ended with
    /// RESOURCE_EXHAUSTED. Updates do not count: they coalesce per user.
    #[arg(long, env = "PRESENCE_MAX_UNREAD_FRAMES", default_value_t = DEFAULT_MAX_UNREAD_FRAMES)]
    pub max_unread_frames: usize,

    /// Bytes of replies a session may leave unread (past it for the session TTL: ended with
    /// RESOURCE_EXHAUSTED, like PRESENCE_MAX_UNREAD_FRAMES). A view shared by several unread
    /// snapshots (a repeated subscribe) counts once.
    #[arg(long, env = "PRESENCE_MAX_UNREAD_BYTES", default_value_t = DEFAULT_MAX_UNREAD_BYTES)]
    pub max_unread_bytes: usize,

    /// HTTP/2 streams per connection (sessions multiplexed on one connection).
    #[arg(long, env = "PRESENCE_MAX_CONCURRENT_STREAMS", default_value_t = DEFAULT_MAX_CONCURRENT_STREAMS)]
    pub max_concurrent_streams: u32,

    /// Largest decoded client message.
    #[arg(long, env = "PRESENCE_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// HTTP/2 ping interval, so a dead peer is found even when it sends nothing.
    #[arg(long, env = "PRESENCE_KEEPALIVE_INTERVAL_MS", default_value_t = DEFAULT_KEEPALIVE_INTERVAL_MS)]
    pub keepalive_interval_ms: u64,

    /// A connection whose ping is not answered within this long is closed.
    #[arg(long, env = "PRESENCE_KEEPALIVE_TIMEOUT_MS", default_value_t = DEFAULT_KEEPALIVE_TIMEOUT_MS)]
    pub keepalive_timeout_ms: u64,

    /// TCP connections per listener (gRPC, admin); past it a new connection is closed at
    /// once. Unset: no limit.
    #[arg(long, env = "PRESENCE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// A connection with no open call for this long is closed with GOAWAY.
    #[arg(long, env = "PRESENCE_CONNECTION_IDLE_TIMEOUT_MS", default_value_t = DEFAULT_CONNECTION_IDLE_TIMEOUT_MS)]
    pub connection_idle_timeout_ms: u64,

    /// Largest HTTP/2 header list (all of a request's headers) on every listener.
    #[arg(long, env = "PRESENCE_MAX_HEADER_LIST_BYTES", default_value_t = DEFAULT_MAX_HEADER_LIST_BYTES)]
    pub max_header_list_bytes: u32,

    /// Session streams of one connection that have not sent their hello yet; past it a new
    /// session stream on that connection is refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "PRESENCE_MAX_PENDING_HELLOS_PER_CONNECTION", default_value_t = DEFAULT_MAX_PENDING_HELLOS_PER_CONNECTION)]
    pub max_pending_hellos_per_connection: usize,

    /// How often silent sessions and ended grace periods are looked for.
    #[arg(long, env = "PRESENCE_SWEEP_INTERVAL_MS", default_value_t = DEFAULT_SWEEP_INTERVAL_MS)]
    pub sweep_interval_ms: u64,

    /// Cluster mode: how often the node re-asserts its sessions and re-reads watched users
    /// (besides after every Redis reconnect).
    #[arg(long, env = "PRESENCE_RESYNC_INTERVAL_MS", default_value_t = DEFAULT_RESYNC_INTERVAL_MS)]
    pub resync_interval_ms: u64,

    /// Rebalancing: a session older than this (minus up to 10% jitter) is sent `Reconnect`,
    /// so long-lived streams spread over new replicas after a scale-out. Unset: never.
    #[arg(long, env = "PRESENCE_MAX_SESSION_AGE_MS")]
    pub max_session_age_ms: Option<u64>,

    /// Load shedding: sessions on this node beyond which new ones are refused with
    /// RESOURCE_EXHAUSTED and a retry hint. Unset: no cap.
    #[arg(long, env = "PRESENCE_MAX_SESSIONS")]
    pub max_sessions: Option<usize>,

    /// Prometheus metrics endpoint (`http://ADDR/metrics`). Unset: no endpoint.
    #[arg(long, env = "PRESENCE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Address of the web listener (HTTP/1.1 and HTTP/2, for browsers): `Session` over a
    /// WebSocket at `/v1/session`, gRPC-Web `GetPresence`, the demo page at `/`. Unset: not
    /// served.
    #[arg(long, env = "PRESENCE_WEB_ADDR")]
    pub web_addr: Option<SocketAddr>,

    /// Comma-separated origins (`https://app.example.com`) allowed to open sessions on the web
    /// listener and to call it cross-origin; a request with another `Origin` is refused with
    /// 403. Requests without `Origin` and the listener's own origin are always allowed.
    #[arg(long, env = "PRESENCE_WEB_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub web_allowed_origins: Vec<String>,

    /// Address of the admin API (`presence.v1.PresenceAdminService`). Unset: not served.
    #[arg(long, env = "PRESENCE_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,

    /// Bearer token every admin call must carry. Unset: the admin API is open to whoever
    /// reaches its address (logged loudly).
    #[arg(long, env = "PRESENCE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,

    /// PEM certificate chain. Set (with PRESENCE_TLS_KEY_FILE): every listener serves TLS
    /// only; the files are re-read when they change (rotation without a restart).
    #[arg(long, env = "PRESENCE_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of PRESENCE_TLS_CERT_FILE.
    #[arg(long, env = "PRESENCE_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// PEM CA bundle: gRPC (and web) clients must present a certificate it signed (mTLS).
    #[arg(long, env = "PRESENCE_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,

    /// PEM CA bundle: admin API clients must present a certificate it signed (mTLS).
    #[arg(long, env = "PRESENCE_ADMIN_CLIENT_CA_FILE")]
    pub admin_client_ca_file: Option<PathBuf>,

    /// Log format; the level comes from RUST_LOG [info].
    #[arg(long, env = "PRESENCE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    // Who may see whom (API.md "Who may see whom"); checked by `validate_watch_policy`.
    /// Who decides whether a caller may see a user (Subscribe and GetPresence).
    #[arg(
        long,
        env = "PRESENCE_WATCH_POLICY",
        value_enum,
        default_value = "open"
    )]
    pub watch_policy: WatchPolicyMode,

    /// `http://host:port` or `https://host:port` of the app's `presence.v1.WatchAuthorizer`
    /// (watch policy `authorizer`).
    #[arg(long, env = "PRESENCE_AUTHORIZER_URL")]
    pub authorizer_url: Option<String>,

    /// Sent as `authorization: Bearer <token>` on every `CheckWatch`, if set.
    #[arg(long, env = "PRESENCE_AUTHORIZER_TOKEN", hide_env_values = true)]
    pub authorizer_token: Option<Secret>,

    /// Longest wait for one `CheckWatch` call.
    #[arg(long, env = "PRESENCE_AUTHORIZER_TIMEOUT_MS", default_value_t = DEFAULT_AUTHORIZER_TIMEOUT_MS)]
    pub authorizer_timeout_ms: u64,

    /// How long a decision per (viewer, user) is reused.
    #[arg(long, env = "PRESENCE_AUTHORIZER_CACHE_MS", default_value_t = DEFAULT_AUTHORIZER_CACHE_MS)]
    pub authorizer_cache_ms: u64,

    /// Most (viewer, user) decisions one node keeps.
    #[arg(long, env = "PRESENCE_AUTHORIZER_CACHE_ENTRIES", default_value_t = DEFAULT_AUTHORIZER_CACHE_ENTRIES)]
    pub authorizer_cache_entries: usize,
}

pub const DEFAULT_AUTHORIZER_TIMEOUT_MS: u64 = 1_000;
pub const DEFAULT_AUTHORIZER_CACHE_MS: u64 = 60_000;
pub const DEFAULT_AUTHORIZER_CACHE_ENTRIES: usize = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WatchPolicyMode {
    /// Anyone with an identity may see anyone.
    Open,
    /// The viewer's JWT claim `presence_watch` lists whom it may see (PRESENCE_AUTH=jwt).
    Token,
    /// The app's backend decides (`presence.v1.WatchAuthorizer` at PRESENCE_AUTHORIZER_URL).
    Authorizer,
}

/// A Redis URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// A setting that is wrong, named as operators set it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad configuration: {setting}: {problem}")]
pub struct ConfigError {
    /// The environment variable name of the setting (or "arguments").
    pub setting: String,
    pub problem: String,
}

fn bad(setting: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting.to_owned(),
        problem: problem.into(),
    }
}

/// Turns a clap error into one naming the setting by its environment variable, so the
/// message helps whether the value came from a flag or from the environment.
fn from_clap(e: clap::Error) -> ConfigError {
    use clap::error::{ContextKind, ContextValue};
    let setting = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(flag)) => {
            let long = flag.trim_start_matches("--");
            let long = long.split_whitespace().next().unwrap_or(long);
            Config::command()
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .and_then(|a| a.get_env())
                .map(|env| env.to_string_lossy().into_owned())
        }
        _ => None,
    };
    let rendered = e.to_string();
    let first = rendered.lines().next().unwrap_or_default();
    bad(
        setting.as_deref().unwrap_or("arguments"),
        first.trim_start_matches("error: ").trim(),
    )
}

impl Config {
    /// Parses flags and environment; prints help/version and exits for those.
    pub fn from_args<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        match Self::try_parse_from(args) {
            Ok(config) => {
                config.validate()?;
                Ok(config)
            }
            Err(e) if !e.use_stderr() => e.exit(),
            Err(e) => Err(from_clap(e)),
        }
    }

    /// The defaults, as a newcomer gets them with no setting.
    pub fn defaults() -> Self {
        Self::try_parse_from(["presence-node"]).expect("defaults parse")
    }

    /// Checks the invariants between settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive: [(&str, u64); 9] = [
            ("PRESENCE_HEARTBEAT_INTERVAL_MS", self.heartbeat_interval_ms),
            ("PRESENCE_SESSION_TTL_MS", self.session_ttl_ms),
            ("PRESENCE_HELLO_TIMEOUT_MS", self.hello_timeout_ms),
            ("PRESENCE_NODE_LEASE_TTL_MS", self.node_lease_ttl_ms),
            ("PRESENCE_SHUTDOWN_GRACE_MS", self.shutdown_grace_ms),
            ("PRESENCE_STATUS_RETENTION_MS", self.status_retention_ms),
            ("PRESENCE_KEEPALIVE_INTERVAL_MS", self.keepalive_interval_ms),
            ("PRESENCE_KEEPALIVE_TIMEOUT_MS", self.keepalive_timeout_ms),
            ("PRESENCE_SWEEP_INTERVAL_MS", self.sweep_interval_ms),
        ];
        for (setting, value) in positive {
            if value == 0 {
                return Err(bad(setting, "must be greater than 0"));
            }
        }
        let counts: [(&str, u64); 12] = [
            ("PRESENCE_MAX_SUBSCRIPTIONS", self.max_subscriptions as u64),
            (
                "PRESENCE_MAX_SESSIONS_PER_USER",
                self.max_sessions_per_user as u64,
            ),
            (
                "PRESENCE_MAX_IDS_PER_REQUEST",
                self.max_ids_per_request as u64,
            ),
            ("PRESENCE_MAX_USER_ID_BYTES", self.max_user_id_bytes as u64),
            ("PRESENCE_STATUS_RATE_PER_S", self.status_rate_per_s as u64),
            ("PRESENCE_STATUS_RATE_BURST", self.status_rate_burst as u64),
            (
                "PRESENCE_SUBSCRIBE_RATE_PER_S",
                self.subscribe_rate_per_s as u64,
            ),
            (
                "PRESENCE_SUBSCRIBE_RATE_BURST",
                self.subscribe_rate_burst as u64,
            ),
            ("PRESENCE_MAX_UNREAD_FRAMES", self.max_unread_frames as u64),
            (
                "PRESENCE_MAX_CONCURRENT_STREAMS",
                self.max_concurrent_streams as u64,
            ),
            ("PRESENCE_MAX_MESSAGE_BYTES", self.max_message_bytes as u64),
            ("PRESENCE_REDIS_POOL_SIZE", self.redis_pool_size as u64),
        ];
        for (setting, value) in counts {
            if value == 0 {
                return Err(bad(setting, "must be at least 1"));
            }
        }
        // Unread replies in bytes: room for at least one reply of the largest kind.
        if self.max_unread_bytes < 4096 {
            return Err(bad(
                "PRESENCE_MAX_UNREAD_BYTES",
                format!("{} must be at least 4096", self.max_unread_bytes),
            ));
        }
        // Per-user and per-request bounds (API.md "What one caller can consume is bounded").
        let user_bounds: [(&str, u64); 9] = [
            (
                "PRESENCE_MAX_LINGERING_PER_USER",
                self.max_lingering_per_user as u64,
            ),
            (
                "PRESENCE_SESSION_OPEN_RATE_PER_S",
                self.session_open_rate_per_s as u64,
            ),
            (
                "PRESENCE_SESSION_OPEN_RATE_BURST",
                self.session_open_rate_burst as u64,
            ),
            (
                "PRESENCE_USER_CHANGE_RATE_PER_S",
                self.user_change_rate_per_s as u64,
            ),
            (
                "PRESENCE_USER_CHANGE_RATE_BURST",
                self.user_change_rate_burst as u64,
            ),
            ("PRESENCE_GET_RATE_PER_S", self.get_rate_per_s as u64),
            ("PRESENCE_GET_RATE_BURST", self.get_rate_burst as u64),
            ("PRESENCE_FRAME_RATE_PER_S", self.frame_rate_per_s as u64),
            ("PRESENCE_FRAME_RATE_BURST", self.frame_rate_burst as u64),
        ];
        for (setting, value) in user_bounds {
            if value == 0 {
                return Err(bad(setting, "must be at least 1"));
            }
        }
        // Connection-level bounds.
        let connection_bounds: [(&str, u64); 4] = [
            (
                "PRESENCE_MAX_CONNECTIONS",
                self.max_connections.unwrap_or(1) as u64,
            ),
            (
                "PRESENCE_CONNECTION_IDLE_TIMEOUT_MS",
                self.connection_idle_timeout_ms,
            ),
            (
                "PRESENCE_MAX_HEADER_LIST_BYTES",
                self.max_header_list_bytes as u64,
            ),
            (
                "PRESENCE_MAX_PENDING_HELLOS_PER_CONNECTION",
                self.max_pending_hellos_per_connection as u64,
            ),
        ];
        for (setting, value) in connection_bounds {
            if value == 0 {
                return Err(bad(setting, "must be at least 1"));
            }
        }
        if self.session_ttl_ms <= self.heartbeat_interval_ms {
            return Err(bad(
                "PRESENCE_SESSION_TTL_MS",
                format!(
                    "{} must be larger than PRESENCE_HEARTBEAT_INTERVAL_MS ({}), or healthy clients expire",
                    self.session_ttl_ms, self.heartbeat_interval_ms
                ),
            ));
        }
        if self.ids_frame_bytes() > self.max_message_bytes {
            return Err(bad(
                "PRESENCE_MAX_MESSAGE_BYTES",
                format!(
                    "{} is too small for a frame of PRESENCE_MAX_IDS_PER_REQUEST ids of PRESENCE_MAX_USER_ID_BYTES bytes ({} bytes)",
                    self.max_message_bytes,
                    self.ids_frame_bytes()
                ),
            ));
        }
        if self.key_prefix.is_empty() {
            return Err(bad("PRESENCE_KEY_PREFIX", "must not be empty"));
        }
        if let Some(id) = &self.node_id {
            if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control() || c == ':') {
                return Err(bad(
                    "PRESENCE_NODE_ID",
                    "must be 1..=128 bytes without control characters or ':'",
                ));
            }
        }
        if let Some(urls) = &self.redis_url {
            let urls: Vec<&str> = urls.expose().split(',').map(str::trim).collect();
            if urls.len() > 1 && self.redis_mode == RedisMode::Standalone {
                return Err(bad(
                    "PRESENCE_REDIS_URL",
                    "several URLs need PRESENCE_REDIS_MODE=cluster",
                ));
            }
            for url in urls {
                if !url.starts_with("redis://") && !url.starts_with("rediss://") {
                    return Err(bad(
                        "PRESENCE_REDIS_URL",
                        format!(
                            "{:?}: expected redis:// or rediss:// [user:password@]host:port[/db]",
                            redact(url)
                        ),
                    ));
                }
                redis::Client::open(url)
                    .map_err(|e| bad("PRESENCE_REDIS_URL", format!("{:?}: {e}", redact(url))))?;
            }
        }
        if let Some(path) = &self.redis_ca_file {
            std::fs::read(path).map_err(|e| {
                bad(
                    "PRESENCE_REDIS_CA_FILE",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
        }
        if self.max_session_age_ms == Some(0) {
            return Err(bad(
                "PRESENCE_MAX_SESSION_AGE_MS",
                "must be greater than 0 (or unset)",
            ));
        }
        if self.max_sessions == Some(0) {
            return Err(bad(
                "PRESENCE_MAX_SESSIONS",
                "must be at least 1 (or unset)",
            ));
        }
        if self.storm_threshold > 0 && self.storm_grace_ms < self.offline_grace_ms {
            return Err(bad(
                "PRESENCE_STORM_GRACE_MS",
                "must be at least PRESENCE_OFFLINE_GRACE_MS",
            ));
        }
        if self.storm_threshold > 0 && self.storm_window_ms == 0 {
            return Err(bad("PRESENCE_STORM_WINDOW_MS", "must be greater than 0"));
        }
        if self.resync_interval_ms == 0 {
            return Err(bad("PRESENCE_RESYNC_INTERVAL_MS", "must be greater than 0"));
        }
        self.authenticator()?;
        crate::web::origin::AllowedOrigins::parse(&self.web_allowed_origins)
            .map_err(|problem| bad("PRESENCE_WEB_ALLOWED_ORIGINS", problem))?;
        crate::tls::TlsSettings::from_config(self)?;
        self.validate_watch_policy()?;
        self.check_exposure(std::env::var_os("PRESENCE_ADMIN_TOKEN").is_some())
    }

    /// The safe defaults: nothing that lets anyone act as anyone, or reach the admin API,
    /// is served beyond loopback unless asked for explicitly. `admin_token_in_env`: the
    /// variable is set (clap takes an empty variable as unset, and an empty token must be
    /// refused, not taken as "no token").
    fn check_exposure(&self, admin_token_in_env: bool) -> Result<(), ConfigError> {
        if self.auth == AuthMode::Insecure
            && !self.allow_insecure
            && !self.listen_addr.ip().is_loopback()
        {
            return Err(bad(
                "PRESENCE_AUTH",
                format!(
                    "insecure identity (callers name themselves with x-user-id) on {}, which is not loopback; use PRESENCE_AUTH=jwt, listen on 127.0.0.1, or set PRESENCE_ALLOW_INSECURE=true on a private network",
                    self.listen_addr
                ),
            ));
        }
        if let Some(web) = self.web_addr {
            if self.auth == AuthMode::Insecure && !self.allow_insecure && !web.ip().is_loopback() {
                return Err(bad(
                    "PRESENCE_AUTH",
                    format!(
                        "insecure identity (callers name themselves with user_id / x-user-id) on the web listener {web}, which is not loopback; use PRESENCE_AUTH=jwt, set PRESENCE_WEB_ADDR to 127.0.0.1, or set PRESENCE_ALLOW_INSECURE=true on a private network"
                    ),
                ));
            }
        }
        if let Some(admin) = self.admin_addr {
            let token = self.admin_token.as_ref();
            if token.is_some_and(Secret::is_empty) || (token.is_none() && admin_token_in_env) {
                return Err(bad(
                    "PRESENCE_ADMIN_TOKEN",
                    "is set but empty: give a token, or unset it (loopback admin address only)",
                ));
            }
            if token.is_none() && self.admin_client_ca_file.is_none() && !admin.ip().is_loopback() {
                return Err(bad(
                    "PRESENCE_ADMIN_TOKEN",
                    format!("the admin API on {admin}, which is not loopback, needs a token or client certificates (PRESENCE_ADMIN_CLIENT_CA_FILE)"),
                ));
            }
        }
        Ok(())
    }

    /// The watch policy settings fit together (authorizer needs a URL, token needs jwt).
    fn validate_watch_policy(&self) -> Result<(), ConfigError> {
        match self.watch_policy {
            WatchPolicyMode::Open => {}
            WatchPolicyMode::Token => {
                if self.auth != AuthMode::Jwt {
                    return Err(bad(
                        "PRESENCE_WATCH_POLICY",
                        "token needs PRESENCE_AUTH=jwt (the policy reads the presence_watch claim)",
                    ));
                }
            }
            WatchPolicyMode::Authorizer => {
                let Some(url) = &self.authorizer_url else {
                    return Err(bad(
                        "PRESENCE_AUTHORIZER_URL",
                        "required for PRESENCE_WATCH_POLICY=authorizer",
                    ));
                };
                if !url.starts_with("http://") && !url.starts_with("https://") {
                    return Err(bad(
                        "PRESENCE_AUTHORIZER_URL",
                        format!("{url:?}: expected http://host:port or https://host:port"),
                    ));
                }
                crate::client::parse_server(url)
                    .map_err(|e| bad("PRESENCE_AUTHORIZER_URL", e.to_string()))?;
            }
        }
        if self.authorizer_timeout_ms == 0 {
            return Err(bad(
                "PRESENCE_AUTHORIZER_TIMEOUT_MS",
                "must be greater than 0",
            ));
        }
        if self.authorizer_cache_ms == 0 {
            return Err(bad(
                "PRESENCE_AUTHORIZER_CACHE_MS",
                "must be greater than 0",
            ));
        }
        if self.authorizer_cache_entries == 0 {
            return Err(bad(
                "PRESENCE_AUTHORIZER_CACHE_ENTRIES",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The storm rule (`presence::storm`) from these settings.
    pub fn storm_rule(&self) -> crate::presence::storm::StormRule {
        crate::presence::storm::StormRule {
            window_ms: self.storm_window_ms,
            threshold: self.storm_threshold,
            normal_grace_ms: self.offline_grace_ms,
            storm_grace_ms: self.storm_grace_ms,
        }
    }

    /// Encoded size of the largest legal subscribe frame, with protobuf overhead.
    fn ids_frame_bytes(&self) -> usize {
        self.max_ids_per_request * (self.max_user_id_bytes + 3) + 64
    }

    /// Where Redis is (cluster mode only).
    pub fn redis_endpoint(&self) -> crate::cluster::connection::Endpoint {
        use crate::cluster::connection::{Endpoint, Target};
        let urls: Vec<String> = self
            .redis_url
            .as_ref()
            .map(Secret::expose)
            .unwrap_or_default()
            .split(',')
            .map(|u| u.trim().to_owned())
            .collect();
        let target = match self.redis_mode {
            RedisMode::Standalone => {
                Target::Standalone(urls.into_iter().next().unwrap_or_default())
            }
            RedisMode::Cluster => Target::Cluster(urls),
        };
        Endpoint {
            target,
            // Checked readable at start; a file gone since then means the system roots.
            ca_pem: self
                .redis_ca_file
                .as_ref()
                .and_then(|path| std::fs::read(path).ok()),
            pool_size: self.redis_pool_size,
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_user_id_bytes: self.max_user_id_bytes,
            max_status_text_bytes: self.max_status_text_bytes,
            max_ids_per_request: self.max_ids_per_request,
            max_subscriptions: self.max_subscriptions,
            max_sessions_per_user: self.max_sessions_per_user,
            ..Limits::default()
        }
    }

    /// This node's id: the configured one, or hostname + random suffix.
    pub fn resolved_node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "node".into());
            let host: String = host.chars().filter(|c| *c != ':').collect();
            format!("{host}-{:06x}", rand::random::<u32>() & 0xff_ffff)
        })
    }

    /// The authenticator the settings describe.
    pub fn authenticator(&self) -> Result<Authenticator, ConfigError> {
        match self.auth {
            AuthMode::Insecure => Ok(Authenticator::insecure()),
            AuthMode::Jwt => {
                let (algorithm, key) = match self.jwt_algorithm {
                    JwtAlgorithm::Hs256 => {
                        let secret = self
                            .jwt_secret
                            .as_ref()
                            .map(Secret::expose)
                            .unwrap_or_default();
                        if secret.is_empty() {
                            return Err(bad(
                                "PRESENCE_JWT_SECRET",
                                "required for PRESENCE_AUTH=jwt with HS256",
                            ));
                        }
                        (
                            jsonwebtoken::Algorithm::HS256,
                            JwtKey::Secret(secret.as_bytes().to_vec()),
                        )
                    }
                    JwtAlgorithm::Rs256 | JwtAlgorithm::Es256 => {
                        let Some(path) = &self.jwt_public_key_file else {
                            return Err(bad(
                                "PRESENCE_JWT_PUBLIC_KEY_FILE",
                                "required for PRESENCE_AUTH=jwt with RS256 or ES256",
                            ));
                        };
                        let pem = std::fs::read(path).map_err(|e| {
                            bad(
                                "PRESENCE_JWT_PUBLIC_KEY_FILE",
                                format!("cannot read {}: {e}", path.display()),
                            )
                        })?;
                        let algorithm = if self.jwt_algorithm == JwtAlgorithm::Rs256 {
                            jsonwebtoken::Algorithm::RS256
                        } else {
                            jsonwebtoken::Algorithm::ES256
                        };
                        (algorithm, JwtKey::PublicKeyPem(pem))
                    }
                };
                Authenticator::jwt(JwtSettings {
                    algorithm,
                    key,
                    leeway_ms: self.jwt_leeway_ms,
                    issuer: self.jwt_issuer.clone(),
                    audience: self.jwt_audience.clone(),
                })
                .map_err(|e| {
                    let setting = if self.jwt_algorithm == JwtAlgorithm::Hs256 {
                        "PRESENCE_JWT_SECRET"
                    } else {
                        "PRESENCE_JWT_PUBLIC_KEY_FILE"
                    };
                    bad(setting, e)
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        Config::from_args(std::iter::once("presence-node").chain(args.iter().copied()))
    }

    #[test]
    fn exposure_rules() {
        let setting = |args: &[&str]| parse(args).err().map(|e| e.setting);
        let auth = Some("PRESENCE_AUTH".to_owned());
        let token = Some("PRESENCE_ADMIN_TOKEN".to_owned());
        assert_eq!(setting(&["--listen-addr", "0.0.0.0:1"]), auth);
        assert_eq!(setting(&["--listen-addr", "[::]:1"]), auth);
        assert_eq!(setting(&["--listen-addr", "10.1.2.3:1"]), auth);
        assert_eq!(
            setting(&["--listen-addr", "0.0.0.0:1", "--allow-insecure"]),
            None
        );
        assert_eq!(
            setting(&["--listen-addr", "0.0.0.0:1", "--allow-insecure", "false"]),
            auth
        );
        assert_eq!(
            setting(&[
                "--listen-addr",
                "0.0.0.0:1",
                "--auth",
                "jwt",
                "--jwt-secret",
                "s"
            ]),
            None
        );
        assert_eq!(setting(&["--listen-addr", "[::1]:1"]), None);
        assert_eq!(setting(&["--admin-addr", "0.0.0.0:2"]), token);
        assert_eq!(
            setting(&["--admin-addr", "127.0.0.1:2", "--admin-token", ""]),
            token
        );
        assert_eq!(setting(&["--admin-addr", "127.0.0.1:2"]), None);
        assert_eq!(
            setting(&["--admin-addr", "0.0.0.0:2", "--admin-token", "t"]),
            None
        );
        // The web listener names identities the same way: insecure only on loopback.
        assert_eq!(setting(&["--web-addr", "0.0.0.0:3"]), auth);
        assert_eq!(setting(&["--web-addr", "127.0.0.1:3"]), None);
        assert_eq!(
            setting(&["--web-addr", "0.0.0.0:3", "--allow-insecure"]),
            None
        );
    }

    #[test]
    fn web_origins_are_checked() {
        let setting = |args: &[&str]| parse(args).err().map(|e| e.setting);
        let origins = Some("PRESENCE_WEB_ALLOWED_ORIGINS".to_owned());
        assert_eq!(
            setting(&["--web-allowed-origins", "https://a.example,http://b:8080"]),
            None
        );
        assert_eq!(
            setting(&["--web-allowed-origins", "https://a.example/path"]),
            origins
        );
        assert_eq!(setting(&["--web-allowed-origins", "a.example"]), origins);
        assert_eq!(setting(&["--web-allowed-origins", "*"]), origins);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let config = parse(&[
            "--auth",
            "jwt",
            "--jwt-secret",
            "jwt-secret-value",
            "--admin-token",
            "admin-token-value",
            "--redis-url",
            "redis://:redis-password-value@127.0.0.1:6379",
        ])
        .unwrap();
        let debug = format!("{config:?}");
        assert!(debug.contains("jwt_secret"), "{debug}");
        for secret in [
            "jwt-secret-value",
            "admin-token-value",
            "redis-password-value",
        ] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
    }

    #[test]
    fn defaults_match_the_api_table() {
        let c = Config::defaults();
        assert_eq!(c.listen_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(c.key_prefix, "presence");
        assert_eq!(c.auth, AuthMode::Insecure);
        assert_eq!(c.heartbeat_interval_ms, 10_000);
        assert_eq!(c.session_ttl_ms, 30_000);
        assert_eq!(c.offline_grace_ms, 3_000);
        assert_eq!(c.node_lease_ttl_ms, 10_000);
        assert_eq!(c.max_subscriptions, 10_000);
        assert_eq!(c.max_sessions_per_user, 16);
        assert_eq!(c.shutdown_grace_ms, 20_000);
        assert_eq!(c.status_retention_ms, 2_592_000_000);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn ttl_must_exceed_heartbeat_interval() {
        let err = parse(&["--session-ttl-ms", "10000"]).unwrap_err();
        assert_eq!(err.setting, "PRESENCE_SESSION_TTL_MS");
    }

    #[test]
    fn unknown_values_are_refused_naming_the_setting() {
        let err = parse(&["--auth", "magic"]).unwrap_err();
        assert!(err.to_string().contains("magic"), "{err}");
        assert_eq!(err.setting, "PRESENCE_AUTH");
        assert!(parse(&["--max-subscriptions", "-1"]).is_err());
    }

    #[test]
    fn jwt_mode_needs_a_key() {
        assert_eq!(
            parse(&["--auth", "jwt"]).unwrap_err().setting,
            "PRESENCE_JWT_SECRET"
        );
        assert_eq!(
            parse(&["--auth", "jwt", "--jwt-algorithm", "RS256"])
                .unwrap_err()
                .setting,
            "PRESENCE_JWT_PUBLIC_KEY_FILE"
        );
        assert!(parse(&["--auth", "jwt", "--jwt-secret", "s3cret"]).is_ok());
    }

    #[test]
    fn zero_limits_are_refused() {
        assert_eq!(
            parse(&["--max-sessions-per-user", "0"])
                .unwrap_err()
                .setting,
            "PRESENCE_MAX_SESSIONS_PER_USER"
        );
    }

    #[test]
    fn watch_policy_combinations_are_checked() {
        assert_eq!(Config::defaults().watch_policy, WatchPolicyMode::Open);
        assert_eq!(Config::defaults().authorizer_timeout_ms, 1_000);
        assert_eq!(Config::defaults().authorizer_cache_ms, 60_000);
        assert_eq!(
            parse(&["--watch-policy", "authorizer"])
                .unwrap_err()
                .setting,
            "PRESENCE_AUTHORIZER_URL"
        );
        assert_eq!(
            parse(&[
                "--watch-policy",
                "authorizer",
                "--authorizer-url",
                "grpc://x:1"
            ])
            .unwrap_err()
            .setting,
            "PRESENCE_AUTHORIZER_URL"
        );
        assert!(parse(&[
            "--watch-policy",
            "authorizer",
            "--authorizer-url",
            "https://a:1"
        ])
        .is_ok());
        assert_eq!(
            parse(&["--watch-policy", "token"]).unwrap_err().setting,
            "PRESENCE_WATCH_POLICY"
        );
        assert!(parse(&[
            "--watch-policy",
            "token",
            "--auth",
            "jwt",
            "--jwt-secret",
            "s"
        ])
        .is_ok());
        let with_token = parse(&[
            "--watch-policy",
            "authorizer",
            "--authorizer-url",
            "http://127.0.0.1:1",
            "--authorizer-token",
            "tok-s3cret",
        ])
        .unwrap();
        assert!(!format!("{with_token:?}").contains("tok-s3cret"));
    }

    #[test]
    fn generated_node_ids_differ() {
        let c = Config::defaults();
        assert_ne!(c.resolved_node_id(), c.resolved_node_id());
    }
}
