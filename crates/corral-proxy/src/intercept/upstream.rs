//! The proxy's own TLS client towards the real server: the system roots plus the
//! operator's `--upstream-ca` files, nothing the sandbox can add.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, Context};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The proxy's TLS client configurations, built on first use: the system's roots are
/// loaded only when a tunnel is first terminated (reading and parsing them costs
/// milliseconds that a session that terminates nothing should not pay at start). The
/// operator's `--upstream-ca` files are read and checked at once, so a bad one is an error
/// at start.
pub struct UpstreamTls {
    extra: Vec<CertificateDer<'static>>,
    /// Offers `http/1.1` only: one connection per HTTP/1.1 request.
    http1: OnceLock<Arc<rustls::ClientConfig>>,
    /// Offers `h2` then `http/1.1`: the handshake made when a tunnel opens, whose answer
    /// decides what the client is offered.
    alpn: OnceLock<Arc<rustls::ClientConfig>>,
}

impl UpstreamTls {
    /// Reads each of `extra` (PEM bundles).
    pub fn new(extra: &[PathBuf]) -> anyhow::Result<UpstreamTls> {
        let mut certs = Vec::new();
        for path in extra {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading --upstream-ca {}", path.display()))?;
            let mut n = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| anyhow!("{}: not a PEM certificate: {e}", path.display()))?;
                // Checked now: a certificate the store would refuse is an error at start.
                rustls::RootCertStore::empty()
                    .add(cert.clone())
                    .map_err(|e| anyhow!("{}: {e}", path.display()))?;
                certs.push(cert);
                n += 1;
            }
            if n == 0 {
                anyhow::bail!("--upstream-ca {} holds no PEM certificate", path.display());
            }
        }
        Ok(UpstreamTls {
            extra: certs,
            http1: OnceLock::new(),
            alpn: OnceLock::new(),
        })
    }

    /// For HTTP/1.1 requests.
    pub fn http1(&self) -> Arc<rustls::ClientConfig> {
        self.http1
            .get_or_init(|| Arc::new(self.config(vec![b"http/1.1".to_vec()])))
            .clone()
    }

    /// For the handshake when a tunnel opens (`h2`, then `http/1.1`).
    pub fn alpn(&self) -> Arc<rustls::ClientConfig> {
        self.alpn
            .get_or_init(|| {
                let mut c = (*self.http1()).clone();
                c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                Arc::new(c)
            })
            .clone()
    }

    fn config(&self, alpn: Vec<Vec<u8>>) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(native.certs);
        for cert in &self.extra {
            // Checked in `new`.
            let _ = roots.add(cert.clone());
        }
        if added == 0 && self.extra.is_empty() {
            tracing::warn!("no system root certificates found: intercepted upstreams will fail verification unless --upstream-ca is given");
        }
        let mut config = rustls::ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn;
        config
    }
}

/// TLS to `host` over `tcp`, the certificate verified for `host`. The error is the reason
/// a person reads in the 502.
pub async fn connect(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, String> {
    let name = ServerName::try_from(host.trim_end_matches('.').to_string())
        .map_err(|e| format!("{host:?} is not a name TLS can verify: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!(
            "the TLS handshake with {host} failed: {e} (its certificate must chain to the system roots or an --upstream-ca file)"
        )),
        Err(_) => Err(format!("the TLS handshake with {host} timed out")),
    }
}
