//! TLS options of a connection: the CA to trust (a private CA instead of the webpki roots)
//! and the client certificate to present (mTLS).

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::ClientError;

/// How an `https://` connection is secured. The default trusts the webpki roots and
/// presents no client certificate.
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// PEM CA certificates to trust instead of the webpki roots (a private CA).
    pub ca_pem: Option<Vec<u8>>,
    /// The certificate chain and key presented to the server (mTLS).
    pub client_identity: Option<ClientIdentity>,
    /// The name the server certificate must carry, when it is not the URL's host (e.g.
    /// through `kubectl port-forward` to 127.0.0.1).
    pub server_name: Option<String>,
}

/// A client certificate chain and its private key, PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca_pem", &self.ca_pem.as_ref().map(|pem| pem.len()))
            .field("client_identity", &self.client_identity.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsOptions {
    /// Whether anything differs from the default (then a bare `host:port` means TLS).
    pub fn is_set(&self) -> bool {
        self.ca_pem.is_some() || self.client_identity.is_some() || self.server_name.is_some()
    }

    /// Options from PEM files: `ca` to trust, `cert` + `key` to present (both or neither).
    pub fn from_files(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let read = |path: &Path| {
            std::fs::read(path)
                .map_err(|e| ClientError::BadTls(format!("cannot read {}: {e}", path.display())))
        };
        let client_identity = match (cert, key) {
            (Some(cert), Some(key)) => Some(ClientIdentity {
                cert_pem: read(cert)?,
                key_pem: read(key)?,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ClientError::BadTls(
                    "a client certificate needs its key (--client-key)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(ClientError::BadTls(
                    "a client key needs its certificate (--client-cert)".into(),
                ))
            }
        };
        Ok(Self {
            ca_pem: ca.map(read).transpose()?,
            client_identity,
            server_name: None,
        })
    }

    /// The tonic configuration these options describe.
    pub fn client_config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca_pem {
            Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
            None => config.with_webpki_roots(),
        };
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        if let Some(identity) = &self.client_identity {
            config = config.identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem));
        }
        config
    }
}
