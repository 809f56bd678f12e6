//! The presence node: parse settings, set up logging, listen, serve until SIGTERM/SIGINT.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;

use presence_node::clock::SystemClock;
use presence_node::config::{Config, EXIT_BAD_CONFIG};
use presence_node::{server, telemetry};

/// jemalloc instead of glibc malloc: glibc's arena locks were contended between the tokio
/// workers (futex waits in the profile of a bulk read); with jemalloc's per-thread caches
/// node CPU per 1,000-id GetPresence fell from 1.64 to 1.12 ms (BENCHMARKS.md), and an idle
/// session costs about the same memory.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let config = match Config::from_args(std::env::args_os()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("presence-node: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG as u8);
        }
    };
    telemetry::init(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("presence-node: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen_addr)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen_addr))?;
        server::run(config, listener, Arc::new(SystemClock), shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    });
    // Do not wait for tasks still attached to abandoned connections.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("presence-node: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received");
}
