//! presence-bench: drives real nodes through the public API and prints (and saves) numbers.
//!
//! Scenarios: `idle` (many held sessions: establish time, node RSS per session).
//! (`churn`, `storm` and `bulk` are still to come.)
//! By default it starts the node itself (the `presence-node` binary next to this one) on a
//! free loopback port; `--server URL --node-pid PID` targets a running node instead.
#![forbid(unsafe_code)]

mod idle;
mod node_process;
mod report;

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
