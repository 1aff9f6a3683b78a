//! TLS for `tls://` drains (RFC 5425): the collector's certificate is
//! verified against a CA file (the system bundle unless `ca_file` says
//! otherwise), optionally with a client certificate (mTLS). TLS 1.2 and 1.3
//! only; a collector that does not verify is an error, never a reason to
//! send in the clear.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The CA bundle used when a drain names none (Debian's ca-certificates).
pub use crate::config::SYSTEM_CA_FILE;

/// Everything needed to open a verified TLS connection to a collector.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    /// `host:port` to dial.
    pub addr: String,
    /// The name the certificate must carry (the URL's host: DNS name or IP).
    pub server_name: ServerName<'static>,
    pub config: Arc<ClientConfig>,
    /// The files it came from, for comparisons and messages.
    pub ca_file: PathBuf,
    pub client_cert: Option<PathBuf>,
}

impl PartialEq for TlsTarget {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr
            && self.server_name == other.server_name
            && self.ca_file == other.ca_file
            && self.client_cert == other.client_cert
    }
}
impl Eq for TlsTarget {}

/// Builds the target for `tls://HOST:PORT`. Errors say which file and why.
pub fn target(
    host_port: &str,
    ca_file: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<TlsTarget, TlsError> {
    let (host, _) = host_port
        .rsplit_once(':')
        .ok_or_else(|| TlsError::Url(format!("\"{host_port}\" has no port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let server_name = ServerName::try_from(host.to_string())
        .map_err(|_| TlsError::Url(format!("\"{host}\" is not a host name or IP address")))?;
    Ok(TlsTarget {
        addr: host_port.to_string(),
        server_name,
        config: client_config(ca_file, client)?,
        ca_file: ca_file.to_path_buf(),
        client_cert: client.map(|(c, _)| c.to_path_buf()),
    })
}

/// The TLS cryptography this build has (the crate's `aws-lc-rs` or `ring`
/// feature, the same as SSH's).
#[cfg(feature = "aws-lc-rs")]
pub fn provider() -> tokio_rustls::rustls::crypto::CryptoProvider {
    tokio_rustls::rustls::crypto::aws_lc_rs::default_provider()
}

#[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
pub fn provider() -> tokio_rustls::rustls::crypto::CryptoProvider {
    tokio_rustls::rustls::crypto::ring::default_provider()
}

/// A client that trusts the CAs in `ca_file` and, with `client`, presents
/// that certificate and key. Errors say which file and why.
pub fn client_config(
    ca_file: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    let certs = read_certs(ca_file).map_err(TlsError::CaFile)?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::CaFile(format!(
            "{}: no usable CA certificate in it",
            ca_file.display()
        )));
    }
    let provider = Arc::new(provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Client(e.to_string()))?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = read_certs(cert).map_err(TlsError::ClientCert)?;
            if chain.is_empty() {
                return Err(TlsError::ClientCert(format!(
                    "{}: no certificate in it",
                    cert.display()
                )));
            }
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                TlsError::ClientKey(format!("{}: {}", key.display(), pem_error(&e)))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::ClientKey(format!("does not fit the certificate: {e}")))?
        }
    };
    Ok(Arc::new(config))
}

/// A server presenting the chain in `cert` with `key` (the HTTP API's
/// HTTPS), TLS 1.2 and 1.3, speaking HTTP/1.1. Errors say which file.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certs(cert).map_err(TlsError::ClientCert)?;
    if chain.is_empty() {
        return Err(TlsError::ClientCert(format!(
            "{}: no certificate in it",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::ClientKey(format!("{}: {}", key.display(), pem_error(&e))))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Client(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::ClientKey(format!("does not fit the certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What is wrong with a TLS drain's settings; the variant names the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsError {
    Url(String),
    CaFile(String),
    ClientCert(String),
    ClientKey(String),
    Client(String),
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {}", path.display(), pem_error(&e)))?;
    iter.collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {}", path.display(), pem_error(&e)))
}

fn pem_error(e: &tokio_rustls::rustls::pki_types::pem::Error) -> String {
    use tokio_rustls::rustls::pki_types::pem::Error as E;
    match e {
        E::Io(io) => io.to_string(),
        E::NoItemsFound => "no PEM item of the expected kind in it".into(),
        other => format!("not valid PEM ({other:?})"),
    }
}

/// Connects and completes the handshake; the error says what failed
/// (connect, or the certificate check with rustls's reason).
pub async fn connect(
    t: &TlsTarget,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(&t.addr).await?;
    let _ = tcp.set_nodelay(true);
    let connector = tokio_rustls::TlsConnector::from(t.config.clone());
    connector
        .connect(t.server_name.clone(), tcp)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("TLS handshake: {e}")))
}
