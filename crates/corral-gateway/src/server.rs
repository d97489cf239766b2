//! The server: accept loop → per-connection task (TLS handshake, HTTP/1.1) → [`handle`] per
//! request. Shutdown stops accepting, marks `/readyz` unready and lets in-flight requests and
//! streams finish within the grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::handler::handle;
use crate::state::Gateway;

fn server_tls(config: &Config) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let cert_pem = std::fs::read(&tls.cert)
        .map_err(|e| anyhow::anyhow!("cannot read TLS certificate {}: {e}", tls.cert.display()))?;
    let key_pem = std::fs::read(&tls.key)
        .map_err(|e| anyhow::anyhow!("cannot read TLS key {}: {e}", tls.key.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("TLS certificate {}: {e}", tls.cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "TLS certificate {} holds no PEM certificate",
            tls.cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| anyhow::anyhow!("TLS key {}: {e}", tls.key.display()))?;
    let mut sc = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| anyhow::anyhow!("TLS: {e}"))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| {
        anyhow::anyhow!(
            "TLS certificate {} and key {} do not form a usable pair: {e}",
            tls.cert.display(),
            tls.key.display()
        )
    })?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(sc))))
}

/// A bound, ready-to-run gateway.
pub struct Server {
    gateway: Arc<Gateway>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Server {
    /// Builds the gateway and binds its listener (must run inside a tokio runtime).
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        let tls = server_tls(&config)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let gateway = Arc::new(Gateway::new(config)?);
        Ok(Server {
            gateway,
            listener,
            tls,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.gateway.config.listen)
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr())
    }

    pub fn gateway(&self) -> Arc<Gateway> {
        self.gateway.clone()
    }

    /// Serves until `shutdown` resolves, then drains for up to the configured grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let grace = Duration::from_secs(self.gateway.config.shutdown_grace_secs);
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let gw = self.gateway.clone();
            let tls = self.tls.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let gw = gw.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(gw, req, peer).await) }
                });
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .keep_alive(true);
                let result = match tls {
                    Some(acceptor) => {
                        let tls_stream = match tokio::time::timeout(
                            Duration::from_secs(15),
                            acceptor.accept(stream),
                        )
                        .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(client = %peer, "TLS handshake failed: {e}");
                                return;
                            }
                            Err(_) => return,
                        };
                        let conn = builder.serve_connection(TokioIo::new(tls_stream), service);
                        watcher.watch(conn).await
                    }
                    None => {
                        let conn = builder.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(conn).await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(client = %peer, "connection ended: {e}");
                }
            });
        }
        self.gateway.stop_being_ready();
        tracing::info!(
            "shutting down: letting in-flight requests and streams finish (up to {} s)",
            grace.as_secs()
        );
        drop(self.listener);
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("grace period over: closing the remaining connections");
        }
        Ok(())
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
