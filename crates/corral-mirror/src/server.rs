//! `corral mirror serve`: the mirror listener and, in redirect mode, the storage listener.
//!
//! Accept loop → per-connection task (TLS if configured) → [`respond`] → access-log line.
//! Both listeners serve the same directory; the mirror listener answers binary downloads with
//! a `302` to a signed storage link when redirect mode is on, and the storage listener serves
//! only requests carrying a valid, unexpired signature.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::body::MirrorBody;
use crate::files::{serve_file, text};
use crate::script::ScriptSettings;
use crate::sign::{now_unix, SigningKey};

/// Everything `serve` needs.
pub struct ServeConfig {
    pub root: PathBuf,
    pub listen: SocketAddr,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The URL clients use to reach the mirror (baked into install.sh). Derived from each
    /// request's Host header when absent.
    pub public_url: Option<String>,
    pub redirect: Option<RedirectConfig>,
    pub script: ScriptSettings,
    /// Where access-log lines go; stdout when absent.
    pub access_log: Option<PathBuf>,
}

/// Redirect mode: binaries are fetched from a storage endpoint through signed links.
pub struct RedirectConfig {
    pub storage_listen: SocketAddr,
    /// Base URL of the storage endpoint as clients see it (e.g. `https://storage.test:9443`).
    pub storage_url: String,
    pub key: SigningKey,
    pub ttl: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Mirror,
    Storage,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Mirror => "mirror",
            Role::Storage => "storage",
        }
    }
}

struct Shared {
    root: PathBuf,
    tls: bool,
    public_url: Option<String>,
    redirect: Option<RedirectConfig>,
    script: ScriptSettings,
    /// The access log; stdout when `None`.
    log: Option<corral_logfile::LineLog>,
}

/// Binds the listeners (failing fast with the address on error), then serves until SIGINT or
/// SIGTERM.
pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let root = config.root.canonicalize().with_context(|| {
        format!(
            "mirror directory {} does not exist (create it with `corral mirror add`)",
            config.root.display()
        )
    })?;
    let log = match &config.access_log {
        Some(path) => Some(
            corral_logfile::LineLog::open(path, 0o640)
                .with_context(|| format!("cannot open access log {}", path.display()))?,
        ),
        None => None,
    };
    let mirror = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let storage = match &config.redirect {
        Some(r) => Some(
            tokio::net::TcpListener::bind(r.storage_listen)
                .await
                .with_context(|| format!("cannot listen on {} (storage)", r.storage_listen))?,
        ),
        None => None,
    };
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        "corral mirror: serving {} on {scheme}://{}",
        root.display(),
        mirror.local_addr()?
    );
    if let (Some(listener), Some(r)) = (&storage, &config.redirect) {
        tracing::info!(
            "corral mirror: storage endpoint on {scheme}://{} (links signed for {}, valid {}s)",
            listener.local_addr()?,
            r.storage_url,
            r.ttl.as_secs()
        );
    }
    let acceptor = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let shared = Arc::new(Shared {
        root,
        tls: config.tls.is_some(),
        public_url: config
            .public_url
            .map(|u| u.trim_end_matches('/').to_string()),
        redirect: config.redirect,
        script: config.script,
        log,
    });
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(accept_loop(
        mirror,
        acceptor.clone(),
        shared.clone(),
        Role::Mirror,
    ));
    if let Some(listener) = storage {
        tasks.spawn(accept_loop(listener, acceptor, shared, Role::Storage));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install a SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = tasks.join_next() => {}
    }
    tracing::info!("corral mirror: shutting down");
    Ok(())
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    role: Role,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept on {} listener failed: {e}", role.name());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move {
                    let started = Instant::now();
                    let (response, note) = respond(&shared, role, &req).await;
                    shared.log_line(role, peer, &req, &response, note, started);
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let builder = hyper::server::conn::http1::Builder::new();
            let result = match acceptor {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => builder.serve_connection(TokioIo::new(tls), service).await,
                    Err(e) => {
                        tracing::debug!("TLS handshake with {peer} failed: {e}");
                        return;
                    }
                },
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
}

impl Shared {
    fn log_line(
        &self,
        role: Role,
        peer: SocketAddr,
        req: &Request<Incoming>,
        response: &Response<MirrorBody>,
        note: Option<String>,
        started: Instant,
    ) {
        let header = |name: header::HeaderName| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let bytes = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|_| req.method() != Method::HEAD)
            .unwrap_or(0);
        // The query string is left out: on the storage listener it is a credential.
        let line = serde_json::json!({
            "ts": crate::store::rfc3339_now(),
            "listener": role.name(),
            "remote": peer.to_string(),
            "method": req.method().as_str(),
            "path": req.uri().path(),
            "status": response.status().as_u16(),
            "bytes": bytes,
            "range": header(header::RANGE),
            "user_agent": header(header::USER_AGENT),
            "note": note,
            "ttfb_ms": started.elapsed().as_secs_f64() * 1000.0,
        });
        let mut line = line.to_string().into_bytes();
        line.push(b'\n');
        let written = match &self.log {
            Some(file) => file.append(&line),
            None => std::io::stdout().lock().write_all(&line),
        };
        if let Err(e) = written {
            tracing::error!("cannot write the access log: {e}");
        }
    }

    fn base_url(&self, req: &Request<Incoming>) -> String {
        if let Some(url) = &self.public_url {
            return url.clone();
        }
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{host}")
    }
}

/// The whole decision for one request: a response, and an optional note for the access log.
async fn respond(
    shared: &Shared,
    role: Role,
    req: &Request<Incoming>,
) -> (Response<MirrorBody>, Option<String>) {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return (resp, None);
    }
    let path = req.uri().path();
    if role == Role::Storage {
        let key = &shared
            .redirect
            .as_ref()
            .expect("storage implies redirect")
            .key;
        if let Err(e) = key.check(path, req.uri().query(), now_unix()) {
            return (
                text(StatusCode::FORBIDDEN, &format!("{e}\n")),
                Some(e.to_string()),
            );
        }
    }
    if role == Role::Mirror && path == "/install.sh" {
        let script = shared.script.render(&shared.base_url(req));
        let mut resp = text(StatusCode::OK, &script);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/x-shellscript; charset=utf-8"),
        );
        return (head_strip(req, resp), None);
    }
    let Some(file_path) = resolve(&shared.root, path) else {
        return (
            text(StatusCode::NOT_FOUND, &format!("{path}: not found\n")),
            None,
        );
    };
    let meta = match tokio::fs::metadata(&file_path).await {
        Ok(meta) if meta.is_file() => meta,
        _ => {
            return (
                text(StatusCode::NOT_FOUND, &format!("{path}: not found\n")),
                None,
            )
        }
    };
    if role == Role::Mirror {
        if let Some(redirect) = shared.redirect.as_ref().filter(|_| is_binary(path)) {
            let expires = now_unix() + redirect.ttl.as_secs();
            let location = format!(
                "{}{path}?{}",
                redirect.storage_url.trim_end_matches('/'),
                redirect.key.query(path, expires)
            );
            let mut resp = text(StatusCode::FOUND, "redirecting to storage\n");
            if let Ok(value) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, value);
            }
            return (head_strip(req, resp), Some("redirect".into()));
        }
    }
    serve_file(req, &file_path, &meta).await
}

/// Maps a URL path to a file under `root`: plain components only, none hidden.
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = path.strip_prefix('/')?;
    if rel.is_empty() || rel.contains('%') || rel.contains('\\') {
        return None;
    }
    let mut out = root.to_path_buf();
    for part in rel.split('/') {
        if part.is_empty() || part.starts_with('.') {
            return None;
        }
        let mut components = Path::new(part).components();
        match (components.next(), components.next()) {
            (Some(Component::Normal(c)), None) => out.push(c),
            _ => return None,
        }
    }
    Some(out)
}

/// Binary downloads (the ones redirect mode sends to storage): anything but the small
/// metadata files.
fn is_binary(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or("");
    let depth = path.trim_start_matches('/').split('/').count();
    depth >= 3 && name != "manifest.json" && !name.ends_with(".sha256")
}

fn head_strip(req: &Request<Incoming>, mut resp: Response<MirrorBody>) -> Response<MirrorBody> {
    if req.method() == Method::HEAD {
        *resp.body_mut() = MirrorBody::empty();
    }
    resp
}

/// Loads a certificate chain and private key (PEM files) into a server config with the ring
/// provider, ALPN `http/1.1`.
pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("cannot read certificate chain {}: {e}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("cannot read private key {}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("certificate and key do not form a usable pair")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any URL path maps to nothing, or to a plain path strictly inside the root.
        #[test]
        fn resolved_paths_never_leave_the_root(path in "/[a-z./%\\\\-]{0,30}") {
            let root = Path::new("/srv/m");
            if let Some(p) = resolve(root, &path) {
                proptest::prop_assert!(p.starts_with(root) && p != root);
                proptest::prop_assert!(p.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_))));
            }
        }
    }

    #[test]
    fn paths_stay_inside_the_root() {
        let root = Path::new("/srv/m");
        assert_eq!(
            resolve(root, "/1.0/linux-x64/claude"),
            Some(PathBuf::from("/srv/m/1.0/linux-x64/claude"))
        );
        for bad in [
            "/",
            "/../etc/passwd",
            "/a/../b",
            "/.corral-mirror.lock",
            "/a//b",
            "/%2e%2e/x",
            "/1.0/.claude.tmp-1",
        ] {
            assert_eq!(resolve(root, bad), None, "{bad}");
        }
    }

    #[test]
    fn binaries_are_what_redirect_mode_redirects() {
        assert!(is_binary("/2.1.0/linux-x64/claude"));
        assert!(is_binary("/corral/0.1.0/linux-x64/corral"));
        assert!(!is_binary("/corral/0.1.0/linux-x64/corral.sha256"));
        assert!(!is_binary("/2.1.0/manifest.json"));
        assert!(!is_binary("/stable"));
        assert!(!is_binary("/corral/latest"));
    }
}
