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
    let accepting = async {
        if let Some(plaintext) = plaintext_kind(&tcp).await {
            tracing::debug!(?peer, plaintext, "plaintext on a TLS port; told to use TLS");
            tell_to_use_tls(tcp, plaintext).await;
            return Err("plaintext");
        }
        acceptor.accept(tcp).await.map_err(|e| {
            // A TCP check (load balancer, Kubernetes tcpSocket probe) connects and closes
            // without a byte: counted apart from real failures.
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                tracing::debug!(?peer, "connection closed before the TLS handshake ended");
                "closed"
            } else {
                tracing::debug!(?peer, error = %e, "TLS handshake failed");
                "error"
            }
        })
    };
    match tokio::time::timeout(timeout, accepting).await {
        Ok(result) => result,
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

/// What a client tells the peer on a TLS-only port when it speaks plaintext.
const USE_TLS: &str = "this port speaks TLS only: use https://";

/// `Some("h2")` or `Some("http1")` when the first bytes are a plaintext HTTP request rather
/// than a TLS record (a ClientHello starts with 0x16).
async fn plaintext_kind(tcp: &TcpStream) -> Option<&'static str> {
    let mut first = [0u8; 4];
    let n = tcp.peek(&mut first).await.ok()?;
    match &first[..n] {
        [b'P', b'R', b'I', ..] => Some("h2"),
        [c, ..] if c.is_ascii_uppercase() => Some("http1"),
        _ => None,
    }
}

/// Answers a plaintext client in its own protocol, so it reports why instead of a bare
/// "connection closed": an HTTP/2 GOAWAY whose debug data says to use TLS (gRPC clients show
/// it), or an HTTP/1.1 400. Then waits (bounded by the caller) for the client to hang up, so
/// the answer is not lost to a reset.
async fn tell_to_use_tls(mut tcp: TcpStream, kind: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let answer = match kind {
        "h2" => {
            // No SETTINGS (server preface) first: with one, a client takes the connection as
            // made and reconnects at once (grpcio C-core then loops without backoff until
            // its deadline); without it, the connection failed and the client backs off.
            let mut frames = Vec::new();
            // GOAWAY: last stream 0, PROTOCOL_ERROR, the reason as debug data.
            let payload_len = 8 + USE_TLS.len() as u32;
            frames.extend_from_slice(&payload_len.to_be_bytes()[1..]);
            frames.extend_from_slice(&[0x7, 0, 0, 0, 0, 0]);
            frames.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x1]);
            frames.extend_from_slice(USE_TLS.as_bytes());
            frames
        }
        _ => format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{USE_TLS}\n",
            USE_TLS.len() + 1
        )
        .into_bytes(),
    };
    if tcp.write_all(&answer).await.is_err() {
        return;
    }
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 1024];
    while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::certs::Ca;
    use tokio::io::AsyncReadExt;

    /// A TLS listener on 127.0.0.1 with a `timeout` handshake deadline; returns its address,
    /// the CA to trust and the stream of accepted connections.
    async fn listener(
        timeout: Duration,
    ) -> (
        std::net::SocketAddr,
        Ca,
        impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>>,
    ) {
        let ca = Ca::new("incoming CA").unwrap();
        let leaf = ca.leaf(&["127.0.0.1"], 1).unwrap();
        let pair =
            crate::tls::reload::parse_pair(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes())
                .unwrap();
        let resolver = Arc::new(crate::tls::ReloadingResolver::new(pair));
        let mut config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let stream =
            incoming_with_timeout(TcpIncoming::from(tcp), Arc::new(config), "test", timeout);
        (addr, ca, stream)
    }

    async fn tls_client(addr: std::net::SocketAddr, ca: &Ca) -> std::io::Result<()> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in crate::tls::parse_certificates(ca.cert_pem.as_bytes()).unwrap() {
            roots.add(cert).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map(|_| ())
    }

    #[tokio::test]
    async fn a_silent_client_neither_blocks_others_nor_stays_forever() {
        let (addr, ca, stream) = listener(Duration::from_millis(300)).await;
        let mut stream = Box::pin(stream);
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let started = tokio::time::Instant::now();
        // The accepting side must be polled for handshakes to progress, as tonic does.
        let (client, accepted) = tokio::join!(tls_client(addr, &ca), async {
            tokio::time::timeout(Duration::from_secs(5), stream.next()).await
        });
        client.unwrap();
        assert!(
            matches!(accepted, Ok(Some(Ok(_)))),
            "the second client got through"
        );
        assert!(
            started.elapsed() < Duration::from_millis(300),
            "not held up by the silent one"
        );
        // Meanwhile the silent connection is dropped at the deadline.
        let polling = async {
            loop {
                let _ = stream.next().await;
            }
        };
        let mut byte = [0u8; 1];
        let closed = tokio::select! {
            read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte)) => read,
            _ = polling => unreachable!(),
        };
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
