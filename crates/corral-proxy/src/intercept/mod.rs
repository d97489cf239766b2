//! TLS termination for endpoints whose requests the policy checks (`tls: terminate`, or
//! `rules`/`access` on a TLS port): the proxy answers the client's TLS with a leaf signed
//! by its CA, decides each request inside like a plain-HTTP one, and speaks TLS to the
//! real server, verified against the system roots and the operator's `--upstream-ca`.
//! Every other CONNECT stays a blind tunnel.
//!
//! One file per job: `ca` (the authority), `leaves` (per-host leaf cache), `accept` (the
//! client's handshake, SNI checked), `upstream` (the verified client). The connection's
//! request loop inside a terminated tunnel is the connection's: `conn/intercepted.rs`
//! and `conn/h2.rs`.

pub(crate) mod accept;
pub mod ca;
mod leaves;
pub mod upstream;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

pub use accept::Prefixed;
pub use ca::CertAuthority;
pub use leaves::LeafCache;

/// What the proxy needs to terminate TLS.
pub struct Intercept {
    pub ca: Arc<CertAuthority>,
    pub leaves: LeafCache,
    /// The TLS client towards the real servers.
    pub upstream: upstream::UpstreamTls,
}

impl Intercept {
    pub fn new(ca: Arc<CertAuthority>, upstream_ca: &[PathBuf]) -> anyhow::Result<Intercept> {
        Ok(Intercept {
            ca,
            leaves: LeafCache::new(leaves::DEFAULT_CAPACITY),
            upstream: upstream::UpstreamTls::new(upstream_ca)?,
        })
    }
}

/// `--ca-cert`, `--ca-key`, `--upstream-ca` (flattened into `corral proxy`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct InterceptArgs {
    /// CA certificate (PEM) that signs the leaf certificates of intercepted hosts
    /// (endpoints with `tls: terminate` or request rules on a TLS port). Clients must
    /// trust it; see docs/proxy.md. Without it such endpoints are refused.
    #[arg(long, value_name = "FILE", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// The CA's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// Also trust this CA bundle (PEM) for intercepted upstream servers, besides the
    /// system roots. Repeatable.
    #[arg(long = "upstream-ca", value_name = "FILE")]
    pub upstream_ca: Vec<PathBuf>,
}

impl InterceptArgs {
    /// The interception set up from files, or `None` without `--ca-cert`.
    pub fn load(&self) -> anyhow::Result<Option<Arc<Intercept>>> {
        let (Some(cert), Some(key)) = (&self.ca_cert, &self.ca_key) else {
            return Ok(None);
        };
        let cert_pem = std::fs::read_to_string(cert)
            .with_context(|| format!("reading --ca-cert {}", cert.display()))?;
        let key_pem = std::fs::read_to_string(key)
            .with_context(|| format!("reading --ca-key {}", key.display()))?;
        let ca = CertAuthority::from_pem(&cert_pem, &key_pem)
            .with_context(|| format!("loading the CA {} / {}", cert.display(), key.display()))?;
        Ok(Some(Arc::new(Intercept::new(
            Arc::new(ca),
            &self.upstream_ca,
        )?)))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
