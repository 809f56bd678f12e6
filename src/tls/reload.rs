//! The certificate being served, and the task that swaps in a rotated one.
//!
//! Rotation is found by reading the files again every [`RELOAD_INTERVAL`] and comparing
//! their contents: that sees a Kubernetes Secret volume swapping its `..data` symlink and
//! cert-manager rewriting the files (in any order) alike, and needs no inotify. A new pair
//! is swapped in only once the certificate and key parse and match each other; until then
//! the old pair keeps being served. Connections already open are never touched: the
//! certificate only matters during a handshake.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::{info, warn};

/// How often the certificate and key files are read again.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Serves whatever pair was loaded last; shared by every listener's TLS configuration.
#[derive(Debug)]
pub struct ReloadingResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingResolver {
    pub fn new(initial: Arc<CertifiedKey>) -> Self {
        Self {
            current: RwLock::new(initial),
        }
    }

    /// The pair new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn replace(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Where the pair is read from.
#[derive(Debug, Clone)]
pub struct PairFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Reads and parses the pair: the chain, the key, and that they belong together.
pub fn load_pair(files: &PairFiles) -> Result<(Arc<CertifiedKey>, u64), PairError> {
    let cert =
        std::fs::read(&files.cert).map_err(|e| PairError::Cert(read_error(&files.cert, e)))?;
    let key = std::fs::read(&files.key).map_err(|e| PairError::Key(read_error(&files.key, e)))?;
    let digest = digest(&cert, &key);
    Ok((parse_pair(&cert, &key)?, digest))
}

/// What is wrong with a pair: the certificate file, the key file, or the two together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    #[error("{0}")]
    Cert(String),
    #[error("{0}")]
    Key(String),
    #[error("the private key does not match the certificate")]
    Mismatch,
}

fn read_error(path: &std::path::Path, e: std::io::Error) -> String {
    format!("cannot read {}: {e}", path.display())
}

/// A digest of the files' contents, to notice a change without keeping a copy of the key.
fn digest(cert: &[u8], key: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    cert.hash(&mut hasher);
    key.hash(&mut hasher);
    hasher.finish()
}

pub(crate) fn parse_pair(cert: &[u8], key: &[u8]) -> Result<Arc<CertifiedKey>, PairError> {
    let chain = super::parse_certificates(cert).map_err(PairError::Cert)?;
    let key = super::parse_private_key(key).map_err(PairError::Key)?;
    let provider = super::provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| PairError::Key(format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(Arc::new(certified)),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(PairError::Mismatch)
        }
        // The provider cannot tell (no public key known): take the pair, as rustls does.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(Arc::new(certified))
        }
        Err(e) => Err(PairError::Cert(format!("unusable certificate: {e}"))),
    }
}

/// Re-reads `files` every [`RELOAD_INTERVAL`] and swaps a changed, consistent pair into
/// `resolver`. `loaded` is the digest of the pair the resolver holds. Runs until aborted.
pub async fn run(resolver: Arc<ReloadingResolver>, files: PairFiles, loaded: u64) {
    let mut tick = tokio::time::interval(RELOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    // The digest of the contents last looked at (served or refused), so a refused pair is
    // reported once, not every tick.
    let mut seen = loaded;
    loop {
        tick.tick().await;
        let read_files = files.clone();
        let read = tokio::task::spawn_blocking(move || {
            let cert = std::fs::read(&read_files.cert);
            let key = std::fs::read(&read_files.key);
            (cert, key)
        })
        .await;
        let (cert, key) = match read {
            Ok((Ok(cert), Ok(key))) => (cert, key),
            // Mid-rotation a file may be missing for a moment: try again next tick.
            Ok((Err(e), _)) => {
                tracing::debug!(file = %files.cert.display(), error = %e, "TLS certificate file unreadable; keeping the current certificate");
                continue;
            }
            Ok((_, Err(e))) => {
                tracing::debug!(file = %files.key.display(), error = %e, "TLS key file unreadable; keeping the current certificate");
                continue;
            }
            Err(_) => continue,
        };
        let now = digest(&cert, &key);
        if now == seen {
            continue;
        }
        seen = now;
        match parse_pair(&cert, &key) {
            Ok(pair) => {
                resolver.replace(pair);
                metrics::counter!(crate::metrics::TLS_RELOADS, "result" => "loaded").increment(1);
                info!(cert = %files.cert.display(), "TLS certificate reloaded; new connections get it");
            }
            Err(e) => {
                metrics::counter!(crate::metrics::TLS_RELOADS, "result" => "refused").increment(1);
                // Expected for a moment when the files are rewritten one after the other.
                warn!(cert = %files.cert.display(), key = %files.key.display(), error = %e, "changed TLS files not usable (yet); still serving the previous certificate");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::certs::Ca;

    #[test]
    fn a_pair_must_parse_and_match() {
        let ca = Ca::new("unit CA").unwrap();
        let one = ca.leaf(&["127.0.0.1"], 1).unwrap();
        let two = ca.leaf(&["127.0.0.1"], 2).unwrap();
        assert!(parse_pair(one.cert_pem.as_bytes(), one.key_pem.as_bytes()).is_ok());
        assert_eq!(
            parse_pair(one.cert_pem.as_bytes(), two.key_pem.as_bytes()).unwrap_err(),
            PairError::Mismatch
        );
        assert!(matches!(
            parse_pair(b"garbage", one.key_pem.as_bytes()),
            Err(PairError::Cert(_))
        ));
        assert!(matches!(
            parse_pair(one.cert_pem.as_bytes(), b""),
            Err(PairError::Key(_))
        ));
        // A half-written certificate file (rotation in progress) is refused, not half-read.
        let half = &one.cert_pem.as_bytes()[..one.cert_pem.len() / 2];
        assert!(parse_pair(half, one.key_pem.as_bytes()).is_err());
    }

    #[test]
    fn the_resolver_serves_the_latest_pair() {
        let ca = Ca::new("unit CA").unwrap();
        let pair = |serial| {
            let leaf = ca.leaf(&["127.0.0.1"], serial).unwrap();
            parse_pair(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes()).unwrap()
        };
        let (first, second) = (pair(1), pair(2));
        let resolver = ReloadingResolver::new(first.clone());
        assert!(Arc::ptr_eq(&resolver.current(), &first));
        resolver.replace(second.clone());
        assert!(Arc::ptr_eq(&resolver.current(), &second));
    }
}
