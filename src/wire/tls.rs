//! TLS settings ([`TlsConfig`]) and the rustls client configuration built from them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// TLS for every server of a client (memcached `-Z`, managed services with in-transit
/// encryption), with rustls.
///
/// # Default
///
/// | setting | default |
/// |---|---|
/// | trusted roots | the system's (`ca_file` replaces them) |
/// | client certificate (mTLS) | none |
/// | server name checked | the host of each server entry (`localhost` for a unix socket) |
/// | certificate checks | on |
///
/// # Examples
///
/// ```
/// use memsem::{Client, TlsConfig};
///
/// let tls = TlsConfig::new()
///     .ca_file("/etc/memcached/ca.pem")
///     .client_cert("/etc/memsem/client.pem", "/etc/memsem/client.key")
///     .server_name("cache.internal");
/// let builder = Client::builder().servers("10.0.0.1:11211").tls(tls);
/// # let _ = builder;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    ca_file: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
    server_name: Option<String>,
    insecure: bool,
}

impl TlsConfig {
    /// TLS with the system's trusted roots and no client certificate.
    ///
    /// # Examples
    ///
    /// ```
    /// let tls = memsem::TlsConfig::new();
    /// # let _ = tls;
    /// ```
    pub fn new() -> TlsConfig {
        TlsConfig::default()
    }

    /// Trusts the certificates of this PEM file instead of the system's roots.
    ///
    /// # Examples
    ///
    /// ```
    /// let tls = memsem::TlsConfig::new().ca_file("ca.pem");
    /// # let _ = tls;
    /// ```
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> TlsConfig {
        self.ca_file = Some(path.into());
        self
    }

    /// Presents this client certificate chain and private key (PEM files) for mutual TLS
    /// (memcached's `ssl_verify_mode=3`).
    ///
    /// # Examples
    ///
    /// ```
    /// let tls = memsem::TlsConfig::new().client_cert("client.pem", "client.key");
    /// # let _ = tls;
    /// ```
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsConfig {
        self.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// The name the servers' certificates must carry, instead of each server's host (for
    /// servers dialed by IP address or through a unix socket).
    ///
    /// # Examples
    ///
    /// ```
    /// let tls = memsem::TlsConfig::new().server_name("memcached.internal");
    /// # let _ = tls;
    /// ```
    pub fn server_name(mut self, name: impl Into<String>) -> TlsConfig {
        self.server_name = Some(name.into());
        self
    }

    /// Accepts any certificate, for tests only: the connection is encrypted but anybody
    /// in the path can read it.
    ///
    /// # Examples
    ///
    /// ```
    /// let tls = memsem::TlsConfig::new().danger_accept_invalid_certs(true);
    /// # let _ = tls;
    /// ```
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> TlsConfig {
        self.insecure = accept;
        self
    }

    /// Reads the files and builds the rustls configuration.
    pub(crate) fn connector(&self) -> Result<Connector, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("TLS: {error}"))?;
        let builder = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(
                    provider.signature_verification_algorithms,
                )))
        } else {
            builder.with_root_certificates(self.roots()?)
        };
        let config = match &self.client_cert {
            Some((cert, key)) => {
                let chain = certificates(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|error| format!("TLS key {}: {error}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|error| format!("TLS client certificate: {error}"))?
            }
            None => builder.with_no_client_auth(),
        };
        let server_name = match &self.server_name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|_| format!("TLS server name {name:?} is not a valid name"))?,
            ),
            None => None,
        };
        Ok(Connector {
            config: Arc::new(config),
            server_name,
        })
    }

    fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                for cert in certificates(path)? {
                    roots
                        .add(cert)
                        .map_err(|error| format!("TLS CA {}: {error}", path.display()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(
                        "TLS: no trusted root certificates found on this system (give a CA file)"
                            .into(),
                    );
                }
            }
        }
        Ok(roots)
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("TLS certificates {}: {error}", path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "TLS certificates {}: no certificate in the file",
            path.display()
        ));
    }
    Ok(chain)
}

/// A built TLS configuration, shared by every connection of a client.
#[derive(Debug)]
pub(crate) struct Connector {
    pub(crate) config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl Connector {
    /// The name a server's certificate must carry.
    pub(crate) fn name_for(&self, host: &str) -> std::io::Result<ServerName<'static>> {
        match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => ServerName::try_from(host.to_string()).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{host:?} is not a valid TLS server name"),
                )
            }),
        }
    }
}

/// Accepts every certificate (but still checks the handshake's signatures).
#[derive(Debug)]
struct AcceptAny(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
