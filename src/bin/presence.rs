//! `presence`: the command-line client of a presence node.
//!
//! ```text
//! presence --user bob watch alice carol     # snapshot, then one line per change
//! presence --user bob status busy "in a meeting"   # be busy until Ctrl-C
//! presence --user bob get alice carol       # one line per user
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use presence_node::client::format::{
    error_code_name, format_presence, format_time_of_day, now_ms, parse_status, status_name,
};
use presence_node::client::{self, ClientError, Credentials, Session, TlsOptions};
use presence_node::proto::{server_frame, Hello, Presence, Status, Welcome};
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a clean half-close waits for the server to end the stream.
const CLOSE_WAIT: Duration = Duration::from_secs(3);
/// How long reconnect attempts go on before giving up.
const RECONNECT_FOR: Duration = Duration::from_secs(60);
/// The wait before reconnecting after an UNAVAILABLE end that came without a `Reconnect`.
const UNAVAILABLE_RETRY: Duration = Duration::from_millis(1000);

#[derive(Parser, Debug)]
#[command(
    name = "presence",
    version,
    about = "Command-line client of a presence node: watch users, set your status, look users up"
)]
struct Cli {
    /// Presence node: http://host:port, https://host:port or host:port
    #[arg(
        long,
        global = true,
        env = "PRESENCE_SERVER",
        default_value = "http://127.0.0.1:50051",
        value_name = "ADDR"
    )]
    server: String,
    /// Your user id, sent as x-user-id (insecure auth mode). Exactly one of --user/--token
    #[arg(long, global = true, env = "PRESENCE_USER", value_name = "USER_ID")]
    user: Option<String>,
    /// Your JWT, sent as `authorization: Bearer` (jwt auth mode). Exactly one of --user/--token
    #[arg(
        long,
        global = true,
        env = "PRESENCE_TOKEN",
        hide_env_values = true,
        value_name = "JWT"
    )]
    token: Option<String>,
    /// PEM CA certificate(s) to trust for https:// (a private CA) instead of the public roots.
    /// With it (or a client certificate), a bare host:port means https://
    #[arg(long, global = true, env = "PRESENCE_CA_FILE", value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for a node that requires one (mTLS); with --client-key
    #[arg(
        long,
        global = true,
        env = "PRESENCE_CLIENT_CERT_FILE",
        value_name = "PEM"
    )]
    client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert
    #[arg(
        long,
        global = true,
        env = "PRESENCE_CLIENT_KEY_FILE",
        value_name = "PEM"
    )]
    client_key: Option<PathBuf>,
    /// Name the server certificate must carry when it is not the --server host (e.g. the
    /// Service name through kubectl port-forward)
    #[arg(
        long,
        global = true,
        env = "PRESENCE_TLS_SERVER_NAME",
        value_name = "NAME"
    )]
    tls_server_name: Option<String>,
    /// Device label of the session (sessions with the same label replace each other)
    #[arg(long, global = true, default_value = "cli")]
    device: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the presence of users, then one line per change, until Ctrl-C
    Watch {
        /// Users to watch
        #[arg(required = true, value_name = "USER")]
        users: Vec<String>,
    },
    /// Be STATUS (online, away, busy, invisible) until Ctrl-C
    Status {
        /// online, away, busy or invisible
        #[arg(value_parser = parse_status_arg)]
        status: Status,
        /// Status text, e.g. "at lunch"
        text: Option<String>,
    },
    /// Print the current presence of users, one line each
    Get {
        /// Users to look up
        #[arg(required = true, value_name = "USER")]
        users: Vec<String>,
    },
}

fn parse_status_arg(s: &str) -> Result<Status, String> {
    parse_status(s).ok_or_else(|| "expected online, away, busy or invisible".to_string())
}

/// Why the command stopped unsuccessfully.
enum Failure {
    /// Printed as one line `presence: ...`; exit 1.
    Msg(String),
    /// stdout was closed (e.g. `| head`): stop quietly.
    BrokenPipe,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Msg(e.to_string())
    }
}

fn main() -> ExitCode {
    let (cli, credentials) = parse_args();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(run(cli, credentials)) {
        Ok(()) | Err(Failure::BrokenPipe) => ExitCode::SUCCESS,
        Err(Failure::Msg(message)) => fail(&message),
    }
}

fn fail(message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "presence: {message}");
    ExitCode::FAILURE
}

/// Parses the command line; usage errors exit 2 the way clap does.
fn parse_args() -> (Cli, Credentials) {
    let mut command = Cli::command();
    let matches = command.clone().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match credentials(&cli, &matches) {
        Ok(credentials) => (cli, credentials),
        Err(message) => command
            .error(clap::error::ErrorKind::ArgumentConflict, message)
            .exit(),
    }
}

/// Exactly one of --user / --token. A flag given on the command line wins over the other one
/// coming from the environment.
fn credentials(cli: &Cli, matches: &ArgMatches) -> Result<Credentials, String> {
    let from_command_line = |id: &str| {
        let source = matches.value_source(id).or_else(|| {
            matches
                .subcommand()
                .and_then(|(_, sub)| sub.value_source(id))
        });
        source == Some(ValueSource::CommandLine)
    };
    match (&cli.user, &cli.token) {
        (Some(user), None) => Ok(Credentials::User(user.clone())),
        (None, Some(token)) => Ok(Credentials::Token(token.clone())),
        (Some(user), Some(token)) => {
            match (from_command_line("user"), from_command_line("token")) {
                (true, false) => Ok(Credentials::User(user.clone())),
                (false, true) => Ok(Credentials::Token(token.clone())),
                _ => Err("--user (PRESENCE_USER) and --token (PRESENCE_TOKEN) \
                          cannot be used together"
                    .into()),
            }
        }
        (None, None) => Err(
            "who are you? give --user USER_ID (or PRESENCE_USER) or --token JWT \
             (or PRESENCE_TOKEN)"
                .into(),
        ),
    }
}

async fn run(cli: Cli, credentials: Credentials) -> Result<(), Failure> {
    // Fail early, before any signal handling, on a bad address or bad credentials.
    let mut tls = TlsOptions::from_files(
        cli.ca_file.as_deref(),
        cli.client_cert.as_deref(),
        cli.client_key.as_deref(),
    )?;
    tls.server_name = cli.tls_server_name.clone();
    client::parse_server_with(&cli.server, &tls)?;
    client::attach(&credentials, &mut tonic::metadata::MetadataMap::new())?;
    match cli.command {
        // No signal handling: Ctrl-C just ends a lookup.
        Command::Get { users } => get(&cli.server, &tls, &credentials, users).await,
        Command::Watch { users } => {
            watch(Ctx::new(cli.server, tls, credentials, cli.device), users).await
        }
        Command::Status { status, text } => {
            let ctx = Ctx::new(cli.server, tls, credentials, cli.device);
            status_cmd(ctx, status, text.unwrap_or_default()).await
        }
    }
}

struct Ctx {
    server: String,
    tls: TlsOptions,
    credentials: Credentials,
    device: String,
    stop: watch::Receiver<bool>,
}

impl Ctx {
    /// Also starts listening to Ctrl-C / SIGTERM.
    fn new(server: String, tls: TlsOptions, credentials: Credentials, device: String) -> Ctx {
        Ctx {
            server,
            tls,
            credentials,
            device,
            stop: stop_signal(),
        }
    }

    /// Resolves once Ctrl-C (or SIGTERM) was received.
    async fn stopped(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|stopped| *stopped).await;
    }

    async fn open(&self, hello: Hello) -> Result<(Session, Welcome), ClientError> {
        let channel = client::connect_with(&self.server, &self.tls).await?;
        Session::open(channel, &self.credentials, hello).await
    }

    /// [`open`](Self::open), or `None` on Ctrl-C.
    async fn open_or_stop(&self, hello: Hello) -> Result<Option<(Session, Welcome)>, Failure> {
        tokio::select! {
            _ = self.stopped() => Ok(None),
            opened = self.open(hello) => Ok(Some(opened?)),
        }
    }
}

/// Ctrl-C or SIGTERM flips the flag; a second one exits at once (130).
fn stop_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let Some(mut signals) = Signals::listen() else {
            // Not listening: the default handlers still end the process.
            return;
        };
        while signals.next().await {
            if *tx.borrow() {
                std::process::exit(130);
            }
            let _ = tx.send(true);
        }
    });
    rx
}

/// Ctrl-C and SIGTERM.
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> Option<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Some(Signals {
                int: signal(SignalKind::interrupt()).ok()?,
                term: signal(SignalKind::terminate()).ok()?,
            })
        }
        #[cfg(not(unix))]
        {
            Some(Signals {})
        }
    }

    /// The next signal; false when no more can come.
    async fn next(&mut self) -> bool {
        #[cfg(unix)]
        {
            tokio::select! {
                s = self.int.recv() => s.is_some(),
                s = self.term.recv() => s.is_some(),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.is_ok()
        }
    }
}

/// One line to stdout.
fn emit(line: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::BrokenPipe),
        Err(e) => Err(Failure::Msg(format!("cannot write to stdout: {e}"))),
    }
}

/// One line to stdout, prefixed with the receive time.
fn emit_timed(line: &str) -> Result<(), Failure> {
    emit(&format!("{}  {line}", format_time_of_day(now_ms())))
}

async fn get(
    server: &str,
    tls: &TlsOptions,
    credentials: &Credentials,
    users: Vec<String>,
) -> Result<(), Failure> {
    let channel = client::connect_with(server, tls).await?;
    for presence in client::get_presence(channel, credentials, users).await? {
        emit(&format_presence(&presence))?;
    }
    Ok(())
}

/// How a live session ended.
enum Ended {
    /// Ctrl-C: the session was half-closed.
    Stopped,
    /// The server asked to reconnect (or went unavailable): try again at `at`
    /// (`delay` after the request arrived).
    Reconnect { delay: Duration, at: Instant },
}

/// Runs a live session: heartbeats at the `Welcome` interval, hands data frames to
/// `on_frame`, and half-closes cleanly on Ctrl-C, on `Reconnect` and on failure.
async fn drive(
    ctx: &Ctx,
    session: &mut Session,
    welcome: &Welcome,
    mut on_frame: impl FnMut(server_frame::Kind) -> Result<(), Failure>,
) -> Result<Ended, Failure> {
    let result = drive_inner(ctx, session, welcome, &mut on_frame).await;
    close_cleanly(session).await;
    result
}

async fn drive_inner(
    ctx: &Ctx,
    session: &mut Session,
    welcome: &Welcome,
    on_frame: &mut impl FnMut(server_frame::Kind) -> Result<(), Failure>,
) -> Result<Ended, Failure> {
    let period = heartbeat_period(welcome);
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.stopped() => return Ok(Ended::Stopped),
            _ = ticker.tick() => {
                // A closed queue means the call ended: the next recv tells how.
                let _ = session.heartbeat().await;
            }
            frame = session.recv() => match frame {
                Ok(Some(frame)) => match frame.kind {
                    Some(server_frame::Kind::Reconnect(r)) => {
                        let delay = Duration::from_millis(r.retry_after_ms);
                        let why = if r.reason.is_empty() { "server asked" } else { &r.reason };
                        emit_timed(&format!(
                            "reconnecting in {} ms ({why})",
                            delay.as_millis()
                        ))?;
                        return Ok(Ended::Reconnect { delay, at: Instant::now() + delay });
                    }
                    Some(server_frame::Kind::HeartbeatAck(_)) => {}
                    Some(server_frame::Kind::Welcome(_)) => {
                        return Err(ClientError::Protocol("a second welcome".into()).into())
                    }
                    Some(kind) => on_frame(kind)?,
                    // A frame kind newer than this client: nothing to do with it.
                    None => {}
                },
                Ok(None) => return Err(Failure::Msg("the server ended the session".into())),
                Err(status) if ClientError::Refused(status.clone()).is_transient() => {
                    let why = ClientError::Refused(status);
                    emit_timed(&format!(
                        "reconnecting in {} ms ({why})",
                        UNAVAILABLE_RETRY.as_millis()
                    ))?;
                    return Ok(Ended::Reconnect {
                        delay: UNAVAILABLE_RETRY,
                        at: Instant::now() + UNAVAILABLE_RETRY,
                    });
                }
                Err(status) => return Err(ClientError::Refused(status).into()),
            }
        }
    }
}

fn heartbeat_period(welcome: &Welcome) -> Duration {
    match welcome.heartbeat_interval_ms {
        0 => Duration::from_secs(10),
        ms => Duration::from_millis(ms.max(100)),
    }
}

/// Half-closes and waits (bounded) for the server to end the stream, so that the end of
/// stream really leaves before the process does: the session then stops counting at once.
async fn close_cleanly(session: &mut Session) {
    session.close();
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Ok(Some(_)) = session.recv().await {}
    })
    .await;
}

/// After `Ended::Reconnect`: waits until `at` (plus a little jitter), then opens a new
/// session on a new connection, retrying with backoff for up to [`RECONNECT_FOR`].
/// `None` on Ctrl-C.
async fn reconnect(
    ctx: &Ctx,
    delay: Duration,
    at: Instant,
    hello: &Hello,
) -> Result<Option<(Session, Welcome)>, Failure> {
    let give_up = at + RECONNECT_FOR;
    let mut wake = at + jitter(delay / 10);
    let mut backoff = Duration::from_millis(500);
    loop {
        tokio::select! {
            _ = ctx.stopped() => return Ok(None),
            _ = tokio::time::sleep_until(wake) => {}
        }
        let attempt = tokio::select! {
            _ = ctx.stopped() => return Ok(None),
            attempt = ctx.open(hello.clone()) => attempt,
        };
        match attempt {
            Ok(opened) => return Ok(Some(opened)),
            Err(e) if retryable(&e) && Instant::now() + backoff < give_up => {
                emit_timed(&format!(
                    "reconnect failed ({e}); retrying in {} ms",
                    backoff.as_millis()
                ))?;
                wake = Instant::now() + backoff + jitter(backoff / 5);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn retryable(e: &ClientError) -> bool {
    e.is_transient() || matches!(e, ClientError::Protocol(_))
}

fn jitter(max: Duration) -> Duration {
    let max_ms = max.as_millis() as u64;
    if max_ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::random_range(0..=max_ms))
}

async fn watch(ctx: Ctx, users: Vec<String>) -> Result<(), Failure> {
    let hello = Hello {
        device: ctx.device.clone(),
        ..Default::default()
    };
    // Last version printed per user: after a reconnect, only changes are printed again.
    let mut seen: std::collections::HashMap<String, u64> = Default::default();
    let mut opened = ctx.open_or_stop(hello.clone()).await?;
    let mut reconnected = false;
    while let Some((mut session, welcome)) = opened.take() {
        let sub_ref = session.subscribe(users.clone()).await?;
        if reconnected {
            emit_timed(&format!(
                "reconnected to {}; resubscribed to {} user{}",
                welcome.node_id,
                users.len(),
                if users.len() == 1 { "" } else { "s" }
            ))?;
        }
        let fresh = !reconnected;
        let ended = drive(&ctx, &mut session, &welcome, |kind| match kind {
            server_frame::Kind::Snapshot(snapshot) if snapshot.r#ref == sub_ref => {
                for p in &snapshot.presences {
                    if fresh || seen.get(&p.user_id) != Some(&p.version) {
                        print_presence(&mut seen, p)?;
                    }
                }
                Ok(())
            }
            server_frame::Kind::Update(update) => {
                for p in &update.presences {
                    print_presence(&mut seen, p)?;
                }
                Ok(())
            }
            server_frame::Kind::Error(error) if error.r#ref == sub_ref => {
                Err(ClientError::Rejected(error).into())
            }
            server_frame::Kind::Error(error) => {
                warn(&error);
                Ok(())
            }
            _ => Ok(()),
        })
        .await?;
        match ended {
            Ended::Stopped => return Ok(()),
            Ended::Reconnect { delay, at } => {
                opened = reconnect(&ctx, delay, at, &hello).await?;
                reconnected = true;
            }
        }
    }
    Ok(())
}

fn print_presence(
    seen: &mut std::collections::HashMap<String, u64>,
    p: &Presence,
) -> Result<(), Failure> {
    seen.insert(p.user_id.clone(), p.version);
    emit_timed(&format_presence(p))
}

fn warn(error: &presence_node::proto::Error) {
    let _ = writeln!(
        std::io::stderr(),
        "presence: frame {} refused: {}: {}",
        error.r#ref,
        error_code_name(error.code),
        error.message
    );
}

async fn status_cmd(ctx: Ctx, status: Status, text: String) -> Result<(), Failure> {
    // The status travels in the Hello: the session never shows another one first.
    let hello = Hello {
        device: ctx.device.clone(),
        status: Some(status as i32),
        status_text: text,
    };
    let Some((mut session, welcome)) = ctx.open_or_stop(hello.clone()).await? else {
        return Ok(());
    };
    confirm(&mut session).await?;
    emit(&format!(
        "you are {} as {} on {}; Ctrl-C to go offline",
        status_name(status as i32),
        welcome.user_id,
        welcome.node_id
    ))?;
    let mut opened = Some((session, welcome));
    while let Some((mut session, welcome)) = opened.take() {
        let ended = drive(&ctx, &mut session, &welcome, |kind| {
            if let server_frame::Kind::Error(error) = kind {
                warn(&error);
            }
            Ok(())
        })
        .await?;
        match ended {
            Ended::Stopped => return Ok(()),
            Ended::Reconnect { delay, at } => {
                // The Hello carries the status again: this command means "be STATUS while
                // it runs", even if the node lost the stored choice.
                opened = reconnect(&ctx, delay, at, &hello).await?;
                if let Some((session, welcome)) = opened.as_mut() {
                    confirm(session).await?;
                    emit_timed(&format!(
                        "reconnected to {}; you are {}",
                        welcome.node_id,
                        status_name(status as i32)
                    ))?;
                }
            }
        }
    }
    Ok(())
}

/// Makes sure the Hello was accepted: a heartbeat's ack comes after any `Error` answering
/// the Hello (frames are answered in order).
async fn confirm(session: &mut Session) -> Result<(), Failure> {
    let result = tokio::time::timeout(Duration::from_secs(10), async {
        let heartbeat_ref = session.heartbeat().await?;
        loop {
            match session.recv().await {
                Ok(Some(frame)) => match frame.kind {
                    Some(server_frame::Kind::HeartbeatAck(_)) => return Ok(()),
                    Some(server_frame::Kind::Error(error)) if error.r#ref < heartbeat_ref => {
                        return Err(ClientError::Rejected(error).into())
                    }
                    _ => {}
                },
                Ok(None) => return Err(Failure::Msg("the server ended the session".into())),
                Err(status) => return Err(ClientError::Refused(status).into()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        Err(ClientError::Protocol("no heartbeat ack within 10000 ms".into()).into())
    });
    if result.is_err() {
        close_cleanly(session).await;
    }
    result
}
