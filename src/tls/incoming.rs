//! Accepted TCP connections to TLS connections, handshakes running side by side.
//!
//! A client that connects and then sends nothing (or trickles its ClientHello) must not hold
//! up everyone behind it, so each handshake is its own future with a deadline, polled
//! together with the listener; a listener with [`MAX_PENDING_HANDSHAKES`] unfinished
//! handshakes stops accepting until one ends. Failed handshakes are logged at debug and
//! counted; they never stop the listener.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::TcpIncoming;

/// Longest TLS handshake; a slower client is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress per listener beyond which accepting waits.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

type Handshake = BoxFuture<'static, Result<TlsStream<TcpStream>, &'static str>>;

struct State {
    tcp: TcpIncoming,
    acceptor: TlsAcceptor,
    handshakes: FuturesUnordered<Handshake>,
    listener: &'static str,
    timeout: Duration,
}

/// The TLS connections of `tcp` (which keeps its TCP options: TCP_NODELAY, keepalive), made
/// with `config`; `listener` names the listener in logs and metrics (`grpc`, `admin`, ...).
/// Dropping the stream closes the listening socket and abandons unfinished handshakes.
pub fn incoming(
    tcp: TcpIncoming,
    config: Arc<rustls::ServerConfig>,
    listener: &'static str,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send + 'static {
    incoming_with_timeout(tcp, config, listener, HANDSHAKE_TIMEOUT)
}

/// [`incoming`] with another handshake deadline.
pub fn incoming_with_timeout(
    tcp: TcpIncoming,
    config: Arc<rustls::ServerConfig>,
    listener: &'static str,
    timeout: Duration,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send + 'static {
    let state = State {
        tcp,
        acceptor: TlsAcceptor::from(config),
        handshakes: FuturesUnordered::new(),
        listener,
        timeout,
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            let room = state.handshakes.len() < MAX_PENDING_HANDSHAKES;
            tokio::select! {
                accepted = state.tcp.next(), if room => match accepted {
                    Some(Ok(tcp)) => {
                        let handshake = handshake(state.acceptor.clone(), tcp, state.timeout);
                        state.handshakes.push(Box::pin(handshake));
                    }
                    // Accept errors (e.g. out of file descriptors) go to the server, which
                    // logs them and keeps accepting.
                    Some(Err(e)) => return Some((Err(e), state)),
                    None => return None,
                },
                Some(done) = state.handshakes.next(), if !state.handshakes.is_empty() => match done {
                    Ok(tls) => return Some((Ok(tls), state)),
                    Err(reason) => {
                        metrics::counter!(
                            crate::metrics::TLS_HANDSHAKE_FAILURES,
                            "listener" => state.listener,
                            "reason" => reason
                        )
                        .increment(1);
                    }
                },
            }
        }
    })
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, &'static str> {
    let peer = tcp.peer_addr().ok();
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Ok(tls),
        // A TCP check (load balancer, Kubernetes tcpSocket probe) connects and closes
        // without a byte: counted apart from real failures.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            tracing::debug!(?peer, "connection closed before the TLS handshake ended");
            Err("closed")
        }
        Ok(Err(e)) => {
            tracing::debug!(?peer, error = %e, "TLS handshake failed");
            Err("error")
        }
        Err(_) => {
            tracing::debug!(
                ?peer,
                timeout_ms = timeout.as_millis() as u64,
                "TLS handshake timed out"
            );
            Err("timeout")
        }
    }
}
