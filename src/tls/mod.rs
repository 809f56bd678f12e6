//! TLS and mTLS on every listener the node opens.
//!
//! - [`TlsSettings::from_config`]: the `PRESENCE_TLS_*` / `PRESENCE_ADMIN_CLIENT_CA_FILE`
//!   settings checked and their files read, at start (bad files fail fast, exit 64).
//! - [`Tls`]: one certificate, served by every listener and re-read when the files change
//!   (`reload`); one `rustls::ServerConfig` per listener kind, each with its own client
//!   verification and ALPN list ([`Tls::device_config`], [`Tls::admin_config`]).
//! - [`incoming()`]: a listener's TCP connections to TLS connections for tonic, handshakes
//!   concurrent and bounded in time (`incoming`).
//! - [`certs`]: a private CA and leaf certificates made on the spot (bench, tests).

pub mod certs;
mod incoming;
pub mod reload;

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{Config, ConfigError};

pub use incoming::{incoming, incoming_with_timeout, HANDSHAKE_TIMEOUT, MAX_PENDING_HANDSHAKES};
pub use reload::{ReloadingResolver, RELOAD_INTERVAL};

/// ALPN of the gRPC and admin listeners.
pub const ALPN_H2: &[&[u8]] = &[b"h2"];
/// ALPN of a listener that also speaks HTTP/1.1 (a web listener).
pub const ALPN_H2_HTTP1: &[&[u8]] = &[b"h2", b"http/1.1"];

pub const CERT_SETTING: &str = "PRESENCE_TLS_CERT_FILE";
pub const KEY_SETTING: &str = "PRESENCE_TLS_KEY_FILE";
pub const CLIENT_CA_SETTING: &str = "PRESENCE_TLS_CLIENT_CA_FILE";
pub const ADMIN_CLIENT_CA_SETTING: &str = "PRESENCE_ADMIN_CLIENT_CA_FILE";

/// The crypto of every TLS configuration here: ring, as tonic's `tls-ring`.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file's contents, in order (a chain: the leaf first).
pub fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if chain.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    Ok(chain)
}

/// The private key of a PEM file's contents (PKCS#8, PKCS#1 or SEC1).
pub fn parse_private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no usable PEM private key: {e}"))
}

fn bad(setting: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting.to_owned(),
        problem: problem.into(),
    }
}

fn read(setting: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| bad(setting, format!("cannot read {}: {e}", path.display())))
}

/// A client CA bundle to a verifier that requires a certificate it signed.
fn client_verifier(setting: &str, path: &Path) -> Result<Arc<dyn ClientCertVerifier>, ConfigError> {
    let pem = read(setting, path)?;
    let certs =
        parse_certificates(&pem).map_err(|e| bad(setting, format!("{}: {e}", path.display())))?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| {
            bad(
                setting,
                format!("{}: not a usable CA certificate: {e}", path.display()),
            )
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| bad(setting, format!("{}: {e}", path.display())))
}

/// The TLS settings, checked, with their files read and parsed.
pub struct TlsSettings {
    pub files: reload::PairFiles,
    initial: Arc<rustls::sign::CertifiedKey>,
    initial_digest: u64,
    device_verifier: Option<Arc<dyn ClientCertVerifier>>,
    admin_verifier: Option<Arc<dyn ClientCertVerifier>>,
}

impl TlsSettings {
    /// `None` without `PRESENCE_TLS_CERT_FILE` (plaintext listeners). Errors name the
    /// setting: one of cert and key without the other, a client CA without the certificate,
    /// a file that cannot be read or parsed, a key that does not match the certificate.
    pub fn from_config(config: &Config) -> Result<Option<Self>, ConfigError> {
        let cert = config.tls_cert_file.as_ref();
        let key = config.tls_key_file.as_ref();
        let (cert, key) = match (cert, key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            (None, Some(_)) => {
                return Err(bad(
                    CERT_SETTING,
                    format!("required when {KEY_SETTING} is set"),
                ))
            }
            (Some(_), None) => {
                return Err(bad(
                    KEY_SETTING,
                    format!("required when {CERT_SETTING} is set"),
                ))
            }
            (None, None) => {
                for (setting, file) in [
                    (CLIENT_CA_SETTING, &config.tls_client_ca_file),
                    (ADMIN_CLIENT_CA_SETTING, &config.admin_client_ca_file),
                ] {
                    if file.is_some() {
                        return Err(bad(
                            setting,
                            format!("client certificates need TLS: set {CERT_SETTING} and {KEY_SETTING} too"),
                        ));
                    }
                }
                return Ok(None);
            }
        };
        let files = reload::PairFiles { cert, key };
        let (initial, initial_digest) = reload::load_pair(&files).map_err(|e| match e {
            reload::PairError::Cert(problem) => bad(CERT_SETTING, problem),
            reload::PairError::Key(problem) => bad(KEY_SETTING, problem),
            reload::PairError::Mismatch => bad(
                KEY_SETTING,
                format!(
                    "{} does not match the certificate in {}",
                    files.key.display(),
                    files.cert.display()
                ),
            ),
        })?;
        let device_verifier = config
            .tls_client_ca_file
            .as_deref()
            .map(|path| client_verifier(CLIENT_CA_SETTING, path))
            .transpose()?;
        let admin_verifier = config
            .admin_client_ca_file
            .as_deref()
            .map(|path| client_verifier(ADMIN_CLIENT_CA_SETTING, path))
            .transpose()?;
        Ok(Some(Self {
            files,
            initial,
            initial_digest,
            device_verifier,
            admin_verifier,
        }))
    }
}

/// TLS for a running node: the served certificate (kept up to date with the files by a
/// task that ends when this is dropped) and the client verification of each listener kind.
pub struct Tls {
    resolver: Arc<ReloadingResolver>,
    device_verifier: Option<Arc<dyn ClientCertVerifier>>,
    admin_verifier: Option<Arc<dyn ClientCertVerifier>>,
    reload: tokio::task::JoinHandle<()>,
}

impl Drop for Tls {
    fn drop(&mut self) {
        self.reload.abort();
    }
}

impl Tls {
    /// Reads the settings (as [`TlsSettings::from_config`]) and starts watching the files.
    /// `None`: no TLS configured. Call inside the runtime.
    pub fn from_config(config: &Config) -> Result<Option<Self>, ConfigError> {
        Ok(TlsSettings::from_config(config)?.map(Self::start))
    }

    /// Starts serving `settings`' certificate and watching its files.
    pub fn start(settings: TlsSettings) -> Self {
        let resolver = Arc::new(ReloadingResolver::new(settings.initial));
        let reload = tokio::spawn(reload::run(
            resolver.clone(),
            settings.files,
            settings.initial_digest,
        ));
        Self {
            resolver,
            device_verifier: settings.device_verifier,
            admin_verifier: settings.admin_verifier,
            reload,
        }
    }

    /// The certificate new handshakes get.
    pub fn resolver(&self) -> &Arc<ReloadingResolver> {
        &self.resolver
    }

    /// For a device-facing listener (gRPC, web): clients verified against
    /// `PRESENCE_TLS_CLIENT_CA_FILE` when set; `alpn` in order of preference.
    pub fn device_config(&self, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        self.config(self.device_verifier.clone(), alpn)
    }

    /// For the admin listener: clients verified against `PRESENCE_ADMIN_CLIENT_CA_FILE`
    /// when set (never against the device CA).
    pub fn admin_config(&self) -> Arc<ServerConfig> {
        self.config(self.admin_verifier.clone(), ALPN_H2)
    }

    fn config(
        &self,
        verifier: Option<Arc<dyn ClientCertVerifier>>,
        alpn: &[&[u8]],
    ) -> Arc<ServerConfig> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports TLS 1.2 and 1.3");
        let builder = match verifier {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}
