//! Calls to the upstreams: AWS Bedrock (SigV4 or bearer) and the Anthropic Messages API
//! (or any compatible base URL). One HTTP client per upstream, with its own trust roots
//! (system roots plus an optional CA file) and optional outbound proxy.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Map, Value};

use crate::client::{Client, Response};
use crate::clock;
use crate::config::{UpstreamAuth, UpstreamConfig, UpstreamKind};
use crate::sigv4;

pub const BEDROCK_ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// A failed upstream exchange, before any byte went to the client.
#[derive(Debug)]
pub enum UpstreamError {
    /// Could not connect, TLS failed, connection reset…
    Unreachable(String),
    /// No response headers in time.
    Timeout,
    /// A non-2xx answer.
    Status {
        status: u16,
        message: String,
        request_id: Option<String>,
        retry_after: Option<String>,
    },
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Unreachable(e) => write!(f, "upstream unreachable: {e}"),
            UpstreamError::Timeout => write!(f, "upstream did not answer in time"),
            UpstreamError::Status {
                status, message, ..
            } => {
                write!(f, "upstream answered {status}: {message}")
            }
        }
    }
}

pub struct Upstream {
    pub name: String,
    pub kind: UpstreamKind,
    base_url: String,
    host: String,
    base_path: String,
    region: String,
    auth: UpstreamAuth,
    token: Option<String>,
    creds: Option<sigv4::Credentials>,
    client: Client,
    header_timeout: Duration,
    timeout: Duration,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Upstream {
    pub fn new(name: &str, cfg: &UpstreamConfig) -> anyhow::Result<Upstream> {
        let base_url = cfg.base_url();
        let url = url::Url::parse(&base_url)
            .map_err(|e| anyhow::anyhow!("[upstreams.{name}] base_url {base_url:?}: {e}"))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => anyhow::bail!("[upstreams.{name}] base_url {base_url:?} has no host"),
        };
        let base_path = url.path().trim_end_matches('/').to_string();
        let auth = cfg.auth();
        let token = match auth {
            UpstreamAuth::Bearer | UpstreamAuth::XApiKey => {
                let var = cfg.token_env.as_deref().unwrap_or_default();
                Some(env(var).ok_or_else(|| {
                    anyhow::anyhow!(
                        "[upstreams.{name}] needs its credential in ${var}, which is not set"
                    )
                })?)
            }
            _ => None,
        };
        let creds = if auth == UpstreamAuth::Sigv4 {
            let id_var = cfg
                .access_key_id_env
                .as_deref()
                .unwrap_or("AWS_ACCESS_KEY_ID");
            let secret_var = cfg
                .secret_access_key_env
                .as_deref()
                .unwrap_or("AWS_SECRET_ACCESS_KEY");
            let token_var = cfg
                .session_token_env
                .as_deref()
                .unwrap_or("AWS_SESSION_TOKEN");
            Some(sigv4::Credentials {
                access_key_id: env(id_var).ok_or_else(|| {
                    anyhow::anyhow!("[upstreams.{name}] signs with SigV4 but ${id_var} is not set")
                })?,
                secret_access_key: env(secret_var).ok_or_else(|| {
                    anyhow::anyhow!(
                        "[upstreams.{name}] signs with SigV4 but ${secret_var} is not set"
                    )
                })?,
                session_token: env(token_var),
            })
        } else {
            None
        };
        let tls = client_tls(name, cfg)?;
        // Redirects are never followed; the environment's proxy variables are ignored.
        let client = Client::new(
            tls,
            cfg.proxy.as_deref(),
            Duration::from_secs(30),
            Duration::from_secs(60),
        )
        .map_err(|e| anyhow::anyhow!("[upstreams.{name}] {e}"))?;
        Ok(Upstream {
            name: name.to_string(),
            kind: cfg.kind,
            base_url,
            host,
            base_path,
            region: cfg.region.clone().unwrap_or_default(),
            auth,
            token,
            creds,
            client,
            header_timeout: Duration::from_secs(cfg.header_timeout_secs),
            timeout: Duration::from_secs(cfg.timeout_secs),
        })
    }

    /// Sends a Messages request. `body` has no `model`/`stream`/`anthropic_version`.
    pub async fn messages(
        &self,
        model: &str,
        mut body: Map<String, Value>,
        betas: &[String],
        version: Option<&str>,
        stream: bool,
    ) -> Result<Response, UpstreamError> {
        match self.kind {
            UpstreamKind::Bedrock => {
                body.insert("anthropic_version".into(), json!(BEDROCK_ANTHROPIC_VERSION));
                if !betas.is_empty() {
                    body.insert("anthropic_beta".into(), json!(betas));
                }
                let action = if stream {
                    "invoke-with-response-stream"
                } else {
                    "invoke"
                };
                let accept = if stream {
                    "application/vnd.amazon.eventstream"
                } else {
                    "application/json"
                };
                let path = format!("/model/{}/{action}", sigv4::uri_encode(model));
                self.post(&path, &Value::Object(body), accept, &[]).await
            }
            UpstreamKind::Anthropic => {
                let mut full = Map::new();
                full.insert("model".into(), json!(model));
                full.extend(body);
                if stream {
                    full.insert("stream".into(), json!(true));
                }
                let mut headers = vec![(
                    "anthropic-version",
                    version.unwrap_or(DEFAULT_ANTHROPIC_VERSION).to_string(),
                )];
                if !betas.is_empty() {
                    headers.push(("anthropic-beta", betas.join(",")));
                }
                let accept = if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                };
                self.post("/v1/messages", &Value::Object(full), accept, &headers)
                    .await
            }
        }
    }

    /// Counts the input tokens of a Messages body.
    pub async fn count_tokens(
        &self,
        model: &str,
        mut body: Map<String, Value>,
        betas: &[String],
        version: Option<&str>,
    ) -> Result<u64, UpstreamError> {
        let resp = match self.kind {
            UpstreamKind::Bedrock => {
                body.insert("anthropic_version".into(), json!(BEDROCK_ANTHROPIC_VERSION));
                if !betas.is_empty() {
                    body.insert("anthropic_beta".into(), json!(betas));
                }
                let inner = base64::engine::general_purpose::STANDARD
                    .encode(Value::Object(body).to_string());
                let req = json!({"input": {"invokeModel": {"body": inner}}});
                let path = format!("/model/{}/count-tokens", sigv4::uri_encode(model));
                self.post(&path, &req, "application/json", &[]).await?
            }
            UpstreamKind::Anthropic => {
                body.remove("max_tokens");
                let mut full = Map::new();
                full.insert("model".into(), json!(model));
                full.extend(body);
                let mut headers = vec![(
                    "anthropic-version",
                    version.unwrap_or(DEFAULT_ANTHROPIC_VERSION).to_string(),
                )];
                if !betas.is_empty() {
                    headers.push(("anthropic-beta", betas.join(",")));
                }
                self.post(
                    "/v1/messages/count_tokens",
                    &Value::Object(full),
                    "application/json",
                    &headers,
                )
                .await?
            }
        };
        let bytes = resp.bytes().await.map_err(|e| {
            UpstreamError::Unreachable(format!("count-tokens answer unreadable: {e}"))
        })?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            UpstreamError::Unreachable(format!("count-tokens answer is not JSON: {e}"))
        })?;
        v.get("input_tokens")
            .or_else(|| v.get("inputTokens"))
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                UpstreamError::Unreachable(format!("count-tokens answer without a count: {v}"))
            })
    }

    async fn post(
        &self,
        path: &str,
        body: &Value,
        accept: &str,
        extra: &[(&str, String)],
    ) -> Result<Response, UpstreamError> {
        let payload = body.to_string().into_bytes();
        let full_path = format!("{}{path}", self.base_path);
        let url = format!("{}{path}", self.base_url);
        let mut req = http::Request::post(&url)
            .header("content-type", "application/json")
            .header("accept", accept);
        for (k, v) in extra {
            req = req.header(*k, v);
        }
        match self.auth {
            UpstreamAuth::Bearer => {
                req = req.header(
                    "authorization",
                    format!("Bearer {}", self.token.as_deref().unwrap_or_default()),
                );
            }
            UpstreamAuth::XApiKey => {
                req = req.header("x-api-key", self.token.as_deref().unwrap_or_default());
            }
            UpstreamAuth::Sigv4 => {
                if let Some(creds) = &self.creds {
                    let signed = sigv4::sign(
                        creds,
                        &self.region,
                        "bedrock",
                        &clock::amz_date(clock::now_secs()),
                        &sigv4::Request {
                            method: "POST",
                            host: &self.host,
                            path: &full_path,
                            query: "",
                            headers: &[("content-type", "application/json"), ("accept", accept)],
                            payload: &payload,
                        },
                        false,
                    );
                    req = req
                        .header("x-amz-date", signed.amz_date)
                        .header("authorization", signed.authorization);
                    if let Some(t) = signed.security_token {
                        req = req.header("x-amz-security-token", t);
                    }
                }
            }
            UpstreamAuth::None => {}
        }
        let req = req
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| UpstreamError::Unreachable(format!("invalid request to {url}: {e}")))?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let send = self.client.send(req, deadline);
        let resp = match tokio::time::timeout(self.header_timeout.min(self.timeout), send).await {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(Err(e)) if is_timeout(e.as_ref()) => return Err(UpstreamError::Timeout),
            Ok(Err(e)) => return Err(UpstreamError::Unreachable(error_chain(e.as_ref()))),
            Ok(Ok(resp)) => resp,
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let request_id = request_id(resp.headers());
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .or_else(|| v.get("message"))
                    .or_else(|| v.get("Message"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| text.chars().take(500).collect());
        Err(UpstreamError::Status {
            status,
            message,
            request_id,
            retry_after,
        })
    }
}

/// The upstream's request id header, whichever API it is.
pub fn request_id(headers: &http::HeaderMap) -> Option<String> {
    ["request-id", "x-amzn-requestid", "x-request-id"]
        .iter()
        .find_map(|h| headers.get(*h))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Whether a connect or a request ran out of time somewhere down the error chain.
fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

fn client_tls(name: &str, cfg: &UpstreamConfig) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &cfg.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("[upstreams.{name}] ca_file {}: {e}", path.display()))?;
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| {
                anyhow::anyhow!("[upstreams.{name}] ca_file {}: {e}", path.display())
            })?;
            roots.add(cert).map_err(|e| {
                anyhow::anyhow!("[upstreams.{name}] ca_file {}: {e}", path.display())
            })?;
            n += 1;
        }
        if n == 0 {
            anyhow::bail!(
                "[upstreams.{name}] ca_file {} holds no PEM certificate",
                path.display()
            );
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
