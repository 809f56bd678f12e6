//! presence-bench: drives real nodes through the public API and prints (and saves) numbers.
//!
//! Scenarios:
//! - `idle`: many held sessions: establish time, node RSS per session (and, on Redis, the
//!   Redis commands heartbeats cost);
//! - `churn`: sessions watching each other while statuses change: delivery latency, loss,
//!   node CPU per delivery, Redis commands per change;
//! - `storm`: sessions dropping at once and reconnecting: time to welcome, errors, flaps;
//! - `idle` and `churn` take `--transport grpc|ws|both`: sessions over gRPC, over the web
//!   listener's WebSocket, or both one after the other (a node each), one report each;
//! - `bulk`: `GetPresence` of 1,000 ids at a concurrency: latency and throughput;
//! - `hot`: one user watched by 100,000 sessions changing 10 times a second;
//! - `peer` (with `--features peer`): the same workload against Mosquitto and the node, with
//!   the ratios.
//!
//! By default it starts the node(s) itself (the `presence-node` binary next to this one) on
//! free loopback ports, and a `redis-server` for `--nodes k` > 1 or `--redis`;
//! `--server URL --node-pid PID` (repeated) targets running nodes instead. `--tls` makes the
//! started nodes serve TLS with a certificate made for the run (`--ca-file` trusts a private
//! CA of `--server https://...` nodes).
//! Every scenario prints progress and a table, `--out FILE` saves JSON, `--plot FILE.svg`
//! draws the latency distribution. Many sessions need many file descriptors: run it after
//! `ulimit -n 20000`.
#![forbid(unsafe_code)]

mod bulk;
mod churn;
mod common;
mod hot;
mod idle;
mod node_process;
#[cfg(feature = "peer")]
mod peer;
mod plot;
mod report;
mod storm;
mod ws;

/// The load generator shares the machine with the node: jemalloc (as in the node) keeps
/// its own allocation cost, and so its share of the two cores, low.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "presence-bench",
    about = "Load generator and benchmarks for presence-node"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// N sessions held open over C connections, heartbeating: establish time and node RSS.
    Idle(idle::IdleArgs),
    /// N sessions watching W others each while a driver changes statuses at R/s:
    /// delivery latency, loss, node CPU per delivery, Redis commands per change.
    Churn(churn::ChurnArgs),
    /// N sessions drop at once and reconnect within T s, watched by others: time to
    /// welcome, errors, OFFLINE/ONLINE flaps.
    Storm(storm::StormArgs),
    /// GetPresence of 1,000 ids at a concurrency: latency percentiles and throughput.
    Bulk(bulk::BulkArgs),
    /// One user watched by very many sessions changes often: time until the last watcher
    /// has each change, node CPU per delivery, other users' latency meanwhile.
    Hot(hot::HotArgs),
    /// The same presence workload against Mosquitto and presence-node, one connection per
    /// client, in one run: memory per client, delivery latency, CPU per delivery, ratios
    /// (needs `--features peer`: `scripts/bench.sh peer`).
    #[cfg(feature = "peer")]
    Peer(peer::PeerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.scenario {
            Scenario::Idle(args) => idle::run(args).await,
            Scenario::Churn(args) => churn::run(args).await,
            Scenario::Storm(args) => storm::run(args).await,
            Scenario::Bulk(args) => bulk::run(args).await,
            Scenario::Hot(args) => hot::run(args).await,
            #[cfg(feature = "peer")]
            Scenario::Peer(args) => peer::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("presence-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
