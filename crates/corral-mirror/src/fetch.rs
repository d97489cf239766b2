//! The HTTP client used by `corral mirror sync` and `corral install`.
//!
//! rustls with the ring provider; trust anchors are the system store (which honours
//! `SSL_CERT_FILE` / `SSL_CERT_DIR`) plus an optional corporate CA file. `HTTPS_PROXY`,
//! `HTTP_PROXY` and `NO_PROXY` are honoured. Transient failures (connection errors, cut-off
//! bodies, 5xx, 429) are retried with exponential backoff; a cut-off download resumes with a
//! `Range` request when the server supports it. Every error names the URL.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::release::{Digester, PlatformEntry};

/// Attempts per request (first try included).
const ATTEMPTS: u32 = 4;

/// A configured client.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    backoff: Duration,
}

/// A non-success HTTP status (after redirects).
#[derive(Debug, thiserror::Error)]
#[error("{url}{via}: HTTP {status}{detail}")]
pub struct HttpStatus {
    pub url: String,
    pub via: String,
    pub status: u16,
    pub detail: String,
}

/// Whether `err` is (or wraps) a 404.
pub fn is_not_found(err: &anyhow::Error) -> bool {
    err.downcast_ref::<HttpStatus>()
        .is_some_and(|s| s.status == 404)
}

/// Why a download did not produce the expected file.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "{url}: size mismatch: the manifest says {expected} bytes, the download has {actual}{more}"
    )]
    Size {
        url: String,
        expected: u64,
        actual: u64,
        more: &'static str,
    },
    #[error("{url}: checksum mismatch: the manifest says sha256 {expected}, the download has sha256 {actual}")]
    Checksum {
        url: String,
        expected: String,
        actual: String,
    },
}

impl Fetcher {
    /// A client trusting the system roots plus `ca_file` (PEM, may hold several certificates).
    pub fn new(ca_file: Option<&Path>) -> anyhow::Result<Fetcher> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = ca_file {
            use rustls_pki_types::pem::PemObject;
            let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| anyhow!("cannot read CA file {}: {e}", path.display()))?;
            if certs.is_empty() {
                bail!("CA file {} holds no PEM certificate", path.display());
            }
            for cert in certs {
                roots
                    .add(cert)
                    .with_context(|| format!("CA file {}: unusable certificate", path.display()))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .user_agent(concat!("corral/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Fetcher {
            client,
            backoff: Duration::from_millis(300),
        })
    }

    /// GETs a small document (at most `max` bytes).
    pub async fn bytes(&self, url: &str, max: usize) -> anyhow::Result<Vec<u8>> {
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(self.backoff * 2u32.pow(attempt - 1)).await;
            }
            match self.try_bytes(url, max).await {
                Ok(bytes) => return Ok(bytes),
                Err(Failure::Permanent(e)) => return Err(e),
                Err(Failure::Transient(e)) => {
                    tracing::debug!("attempt {} for {url} failed: {e:#}", attempt + 1);
                    last = Some(e);
                }
            }
        }
        Err(last
            .expect("at least one attempt")
            .context(format!("gave up after {ATTEMPTS} attempts")))
    }

    /// GETs a small text document, trimmed.
    pub async fn text(&self, url: &str) -> anyhow::Result<String> {
        let bytes = self.bytes(url, 64 * 1024).await?;
        String::from_utf8(bytes).map_err(|_| anyhow!("{url}: response is not UTF-8 text"))
    }

    async fn try_bytes(&self, url: &str, max: usize) -> Result<Vec<u8>, Failure> {
        let mut resp = self.send(url, None).await?;
        let mut out = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| transient(url, e))? {
            out.extend_from_slice(&chunk);
            if out.len() > max {
                return Err(Failure::Permanent(anyhow!(
                    "{url}: response larger than {max} bytes; is this the right URL?"
                )));
            }
        }
        Ok(out)
    }

    async fn send(&self, url: &str, range_from: Option<u64>) -> Result<reqwest::Response, Failure> {
        let mut req = self.client.get(url);
        if let Some(from) = range_from {
            req = req.header(reqwest::header::RANGE, format!("bytes={from}-"));
        }
        let resp = req.send().await.map_err(|e| transient(url, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let final_url = resp.url().to_string();
        let via = if final_url != url {
            format!(" (redirected to {final_url})")
        } else {
            String::new()
        };
        let body = resp.text().await.unwrap_or_default();
        let first_line = body
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect::<String>();
        let err = HttpStatus {
            url: url.to_string(),
            via,
            status: status.as_u16(),
            detail: if first_line.is_empty() {
                String::new()
            } else {
                format!(": {first_line}")
            },
        };
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Err(Failure::Transient(err.into()))
        } else {
            Err(Failure::Permanent(err.into()))
        }
    }

    /// Downloads `url` into `dest` (created or truncated), checking size and SHA-256 against
    /// `expected` as the bytes arrive. On any error `dest` may hold a partial file: the caller
    /// removes it. `label` names the download on the progress bar (shown only on a terminal).
    pub async fn download_verified(
        &self,
        url: &str,
        dest: &Path,
        expected: &PlatformEntry,
        label: &str,
    ) -> anyhow::Result<()> {
        let mut file = tokio::fs::File::create(dest)
            .await
            .with_context(|| format!("cannot create {}", dest.display()))?;
        let mut progress = Progress::new(label, expected.size);
        let mut digester = Digester::default();
        let mut last: Option<anyhow::Error> = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(self.backoff * 2u32.pow(attempt - 1)).await;
            }
            let resume_from = (!digester.is_empty()).then(|| digester.len());
            let result = self
                .download_once(
                    url,
                    &mut file,
                    &mut digester,
                    resume_from,
                    expected,
                    &mut progress,
                )
                .await;
            match result {
                Ok(()) => {
                    progress.finish();
                    return finish(url, digester, expected);
                }
                Err(Failure::Permanent(e)) => {
                    progress.finish();
                    return Err(e);
                }
                Err(Failure::Transient(e)) => {
                    tracing::debug!("attempt {} for {url} failed: {e:#}", attempt + 1);
                    last = Some(e);
                }
            }
        }
        progress.finish();
        Err(last.expect("at least one attempt").context(format!(
            "download of {url} gave up after {ATTEMPTS} attempts"
        )))
    }

    async fn download_once(
        &self,
        url: &str,
        file: &mut tokio::fs::File,
        digester: &mut Digester,
        resume_from: Option<u64>,
        expected: &PlatformEntry,
        progress: &mut Progress,
    ) -> Result<(), Failure> {
        use tokio::io::{AsyncSeekExt, AsyncWriteExt};
        let mut resp = self.send(url, resume_from).await?;
        let resumed = resume_from.is_some()
            && resp.status() == reqwest::StatusCode::PARTIAL_CONTENT
            && resp
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok())
                == resume_from;
        if !resumed {
            // Start over: the server sent the whole file (or we had nothing yet).
            *digester = Digester::default();
            file.set_len(0).await.map_err(local)?;
            file.seek(std::io::SeekFrom::Start(0))
                .await
                .map_err(local)?;
        }
        while let Some(chunk) = resp.chunk().await.map_err(|e| transient(url, e))? {
            if digester.len() + chunk.len() as u64 > expected.size {
                return Err(Failure::Permanent(
                    VerifyError::Size {
                        url: url.to_string(),
                        expected: expected.size,
                        actual: digester.len() + chunk.len() as u64,
                        more: " or more",
                    }
                    .into(),
                ));
            }
            file.write_all(&chunk).await.map_err(local)?;
            digester.update(&chunk);
            progress.update(digester.len());
        }
        file.flush().await.map_err(local)?;
        file.sync_all().await.map_err(local)?;
        if digester.len() < expected.size {
            return Err(Failure::Transient(anyhow!(
                "{url}: connection closed after {} of {} bytes",
                digester.len(),
                expected.size
            )));
        }
        Ok(())
    }
}

fn finish(url: &str, digester: Digester, expected: &PlatformEntry) -> anyhow::Result<()> {
    let len = digester.len();
    if len != expected.size {
        return Err(VerifyError::Size {
            url: url.to_string(),
            expected: expected.size,
            actual: len,
            more: "",
        }
        .into());
    }
    let actual = digester.finish();
    if actual != expected.checksum {
        return Err(VerifyError::Checksum {
            url: url.to_string(),
            expected: expected.checksum.clone(),
            actual,
        }
        .into());
    }
    Ok(())
}

enum Failure {
    Transient(anyhow::Error),
    Permanent(anyhow::Error),
}

fn transient(url: &str, e: reqwest::Error) -> Failure {
    // reqwest's message names the URL it was fetching (after redirects), which is the host
    // a proxy refused in the seed's S3 story; keep the whole chain.
    let mut msg = format!("{url}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    Failure::Transient(anyhow!(msg))
}

fn local(e: std::io::Error) -> Failure {
    Failure::Permanent(anyhow!("writing the download to disk failed: {e}"))
}

/// A one-line progress bar on stderr, drawn only when stderr is a terminal.
struct Progress {
    label: String,
    total: u64,
    enabled: bool,
    last_draw: Option<Instant>,
    drawn: bool,
}

impl Progress {
    fn new(label: &str, total: u64) -> Progress {
        Progress {
            label: label.to_string(),
            total,
            enabled: std::io::stderr().is_terminal() && !label.is_empty(),
            last_draw: None,
            drawn: false,
        }
    }

    fn update(&mut self, done: u64) {
        if !self.enabled {
            return;
        }
        if self
            .last_draw
            .is_some_and(|t| t.elapsed() < Duration::from_millis(100) && done < self.total)
        {
            return;
        }
        self.last_draw = Some(Instant::now());
        let ratio = if self.total == 0 {
            1.0
        } else {
            (done as f64 / self.total as f64).min(1.0)
        };
        let width = 30;
        let filled = (ratio * width as f64) as usize;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{} [{}{}] {:>3}% {:.1}/{:.1} MB",
            self.label,
            "#".repeat(filled),
            " ".repeat(width - filled),
            (ratio * 100.0) as u32,
            done as f64 / 1e6,
            self.total as f64 / 1e6
        );
        let _ = err.flush();
        self.drawn = true;
    }

    fn finish(&mut self) {
        if self.drawn {
            let _ = writeln!(std::io::stderr());
            self.drawn = false;
        }
    }
}
