//! The proxy's own TLS client towards the real server: the system roots plus the
//! operator's `--upstream-ca` files, nothing the sandbox can add.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The client configuration: system roots, then each of `extra` (PEM bundles).
pub fn client_config(extra: &[PathBuf]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    for path in extra {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading --upstream-ca {}", path.display()))?;
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.map_err(|e| anyhow!("{}: not a PEM certificate: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| anyhow!("{}: {e}", path.display()))?;
            n += 1;
        }
        if n == 0 {
            anyhow::bail!("--upstream-ca {} holds no PEM certificate", path.display());
        }
    }
    if added == 0 && extra.is_empty() {
        tracing::warn!("no system root certificates found: intercepted upstreams will fail verification unless --upstream-ca is given");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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
