//! The gateway's configuration file (TOML), validated into the model the server uses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on, e.g. `0.0.0.0:8443` or `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// TLS certificate and key; without them the gateway speaks plain HTTP (loopback only).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Allow plain HTTP on a non-loopback address (not recommended).
    #[serde(default)]
    pub allow_plain_http: bool,
    pub keys_file: PathBuf,
    pub audit: AuditConfig,
    /// Answer model listings (`GET /inference-profiles`, `GET /v1/models`) without a key.
    /// Claude Code's Bedrock mode with `CLAUDE_CODE_SKIP_BEDROCK_AUTH=1` sends no credential
    /// on its profile lookup.
    #[serde(default)]
    pub public_model_list: bool,
    /// Largest request body accepted (bytes); larger gets 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Seconds to let in-flight requests and streams finish after SIGTERM/SIGINT.
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub models: Vec<ModelRoute>,
}

fn default_max_body() -> usize {
    20 * 1024 * 1024
}
fn default_grace() -> u64 {
    300
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// JSON-lines file, opened with O_APPEND.
    pub path: PathBuf,
    /// fsync after each record (survives power loss, not only a killed process).
    #[serde(default)]
    pub fsync: bool,
    /// Include request bodies in the record.
    #[serde(default)]
    pub bodies: bool,
    /// JSON object keys whose values are replaced by "[redacted]" in logged bodies.
    #[serde(default)]
    pub redact_fields: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    /// AWS Bedrock runtime (or anything speaking its invoke API).
    Bedrock,
    /// The Anthropic Messages API, or any compatible base URL.
    Anthropic,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamAuth {
    /// AWS SigV4 with credentials from the environment variables named below.
    Sigv4,
    /// `Authorization: Bearer <token>` (a Bedrock API key, or a compatible gateway's key).
    Bearer,
    /// `x-api-key: <token>` (the Anthropic API).
    XApiKey,
    /// No credential.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub kind: UpstreamKind,
    /// Base URL. Bedrock default: `https://bedrock-runtime.<region>.amazonaws.com`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// AWS region (Bedrock).
    #[serde(default)]
    pub region: Option<String>,
    /// Default: sigv4 for Bedrock, x-api-key for Anthropic.
    #[serde(default)]
    pub auth: Option<UpstreamAuth>,
    /// Environment variable holding the bearer token or API key.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Environment variables holding AWS credentials (defaults: the standard AWS names).
    #[serde(default)]
    pub access_key_id_env: Option<String>,
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
    #[serde(default)]
    pub session_token_env: Option<String>,
    /// Extra CA certificates (PEM) trusted besides the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Outbound proxy URL (`http://proxy:3128`).
    #[serde(default)]
    pub proxy: Option<String>,
    /// Seconds allowed for the whole upstream exchange.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Seconds allowed to connect and receive response headers.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: u64,
}

fn default_timeout() -> u64 {
    900
}
fn default_header_timeout() -> u64 {
    120
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRoute {
    /// The id clients use (and keys' `models` patterns match).
    pub id: String,
    /// Other ids clients may send for this model (Bedrock ids, ARNs, dated ids).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Name of an `[upstreams.NAME]` table.
    pub upstream: String,
    /// The id sent upstream (default: `id`).
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// Shown by `GET /v1/models`.
    #[serde(default)]
    pub display_name: Option<String>,
}

impl ModelRoute {
    pub fn upstream_model(&self) -> &str {
        self.upstream_model.as_deref().unwrap_or(&self.id)
    }
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read gateway config {}: {e}", path.display()))?;
        Config::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Config> {
        let mut config: Config = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("gateway config {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.validate(path)?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.keys_file);
        fix(&mut self.audit.path);
        if let Some(tls) = &mut self.tls {
            fix(&mut tls.cert);
            fix(&mut tls.key);
        }
        for up in self.upstreams.values_mut() {
            if let Some(ca) = &mut up.ca_file {
                fix(ca);
            }
        }
    }

    fn validate(&self, path: &Path) -> anyhow::Result<()> {
        let at = path.display();
        if self.tls.is_none() && !self.listen.ip().is_loopback() && !self.allow_plain_http {
            anyhow::bail!(
                "gateway config {at}: listen = {} is not loopback and [tls] is missing: keys would cross the network in clear. Add [tls] cert/key, or set allow_plain_http = true if a TLS terminator sits in front",
                self.listen
            );
        }
        if self.models.is_empty() {
            anyhow::bail!("gateway config {at}: no [[models]] routes: add at least one");
        }
        let mut seen = std::collections::HashSet::new();
        for m in &self.models {
            for id in std::iter::once(&m.id).chain(&m.aliases) {
                if !seen.insert(id.clone()) {
                    anyhow::bail!("gateway config {at}: model id {id:?} is routed twice");
                }
            }
            if !self.upstreams.contains_key(&m.upstream) {
                anyhow::bail!(
                    "gateway config {at}: model {:?} uses upstream {:?}, but there is no [upstreams.{}] table (known: {})",
                    m.id,
                    m.upstream,
                    m.upstream,
                    self.upstreams.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
        }
        for (name, up) in &self.upstreams {
            if up.kind == UpstreamKind::Bedrock && up.region.is_none() && up.base_url.is_none() {
                anyhow::bail!("gateway config {at}: [upstreams.{name}] is bedrock: set region (and optionally base_url)");
            }
            if up.kind == UpstreamKind::Anthropic && up.base_url.is_none() {
                anyhow::bail!("gateway config {at}: [upstreams.{name}] is anthropic: set base_url (https://api.anthropic.com for the Anthropic API)");
            }
            if let Some(url) = &up.base_url {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    anyhow::bail!("gateway config {at}: [upstreams.{name}] base_url {url:?} must start with https:// or http://");
                }
            }
            let auth = up.auth();
            if matches!(auth, UpstreamAuth::Bearer | UpstreamAuth::XApiKey)
                && up.token_env.is_none()
            {
                anyhow::bail!("gateway config {at}: [upstreams.{name}] auth needs token_env = \"VARIABLE\" naming the environment variable that holds the credential");
            }
            if auth == UpstreamAuth::Sigv4 && up.region.is_none() {
                anyhow::bail!("gateway config {at}: [upstreams.{name}] uses sigv4: set region");
            }
        }
        Ok(())
    }
}

impl UpstreamConfig {
    pub fn auth(&self) -> UpstreamAuth {
        self.auth.unwrap_or(match self.kind {
            UpstreamKind::Bedrock => UpstreamAuth::Sigv4,
            UpstreamKind::Anthropic => UpstreamAuth::XApiKey,
        })
    }

    pub fn base_url(&self) -> String {
        match (&self.base_url, &self.region) {
            (Some(url), _) => url.trim_end_matches('/').to_string(),
            (None, Some(region)) => format!("https://bedrock-runtime.{region}.amazonaws.com"),
            (None, None) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:0"
keys_file = "keys.toml"
[audit]
path = "audit.jsonl"
[upstreams.test]
kind = "anthropic"
base_url = "http://127.0.0.1:9"
auth = "none"
[[models]]
id = "claude-test"
upstream = "test"
"#;

    #[test]
    fn relative_paths_are_resolved_against_the_config_file() {
        let c = Config::parse(GOOD, Path::new("/etc/corral/gateway.toml")).unwrap();
        assert_eq!(c.keys_file, Path::new("/etc/corral/keys.toml"));
        assert_eq!(c.audit.path, Path::new("/etc/corral/audit.jsonl"));
    }

    #[test]
    fn mistakes_are_named() {
        let bad = GOOD.replace("upstream = \"test\"", "upstream = \"nope\"");
        let e = Config::parse(&bad, Path::new("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no [upstreams.nope]"), "{e}");
        let bad = GOOD.replace("127.0.0.1:0", "0.0.0.0:8443");
        let e = Config::parse(&bad, Path::new("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[tls]"), "{e}");
        let bad = GOOD.replace("listen", "listn");
        let e = Config::parse(&bad, Path::new("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listn"), "{e}");
    }
}
