//! `corral gateway serve` as the tests run it: the real binary over real TLS on loopback,
//! with its own CA, keys file, audit log and a test LLM upstream standing in for Bedrock
//! and the Anthropic API.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::llm_upstream::{LlmUpstream, Script};
use crate::process::{corral_bin, output, Background};
use crate::tls::TestCa;

/// What the test upstream answers (its default [`Script`]).
pub const ANSWER: &str = "Hello from the corral test upstream!";
pub const SONNET_BEDROCK: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";
pub const HAIKU_BEDROCK: &str = "us.anthropic.claude-haiku-4-5-20251001-v1:0";
pub const OPUS_BEDROCK: &str = "us.anthropic.claude-opus-4-1-20250805-v1:0";
pub const UPSTREAM_API_KEY: &str = "upstream-secret-never-shown-to-clients";

/// How the test upstream is reached.
#[derive(Clone, Copy)]
pub enum UpstreamTls {
    Plain,
    /// HTTPS, with the test CA named in the upstream's `ca_file`.
    TrustedCa,
    /// HTTPS, with a certificate the gateway has no reason to trust.
    UnknownCa,
}

/// A running gateway with its own CA, keys file, audit log and test upstream.
pub struct Gateway {
    pub process: Background,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The configuration, keys file and audit log.
    pub dir: tempfile::TempDir,
    /// Signs the gateway's certificate (for `gateway.test` and `127.0.0.1`).
    pub ca: TestCa,
    pub upstream: LlmUpstream,
}

impl Gateway {
    pub fn start(script: Script) -> Gateway {
        Gateway::start_with(script, "")
    }

    /// `extra` is TOML inserted at the top level of the config.
    pub fn start_with(script: Script, extra: &str) -> Gateway {
        Gateway::start_full(script, extra, UpstreamTls::Plain)
    }

    pub fn start_full(script: Script, extra: &str, upstream_tls: UpstreamTls) -> Gateway {
        Gateway::start_custom(script, extra, upstream_tls, "")
    }

    /// `upstream_toml` is added to both upstream tables.
    pub fn start_custom(
        script: Script,
        extra: &str,
        upstream_tls: UpstreamTls,
        upstream_toml: &str,
    ) -> Gateway {
        let ca = TestCa::new();
        let (upstream, upstream_extra) = match upstream_tls {
            UpstreamTls::Plain => (LlmUpstream::start(script), String::new()),
            UpstreamTls::TrustedCa | UpstreamTls::UnknownCa => {
                let leaf = ca.leaf(&["127.0.0.1"]);
                let up = LlmUpstream::start_on(
                    std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                    Some(leaf.server_config()),
                    script,
                );
                let extra = match upstream_tls {
                    UpstreamTls::TrustedCa => format!("ca_file = \"{}\"", ca.ca_path().display()),
                    _ => String::new(),
                };
                (up, extra)
            }
        };
        let upstream_extra = format!("{upstream_extra}\n{upstream_toml}");
        let leaf = ca.leaf(&["gateway.test", "127.0.0.1"]);
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"
listen = "127.0.0.1:0"
keys_file = "keys.toml"
shutdown_grace_secs = 30
{extra}

[tls]
cert = "{cert}"
key = "{key}"

[audit]
path = "audit.jsonl"

# The test upstream plays AWS Bedrock (signed with SigV4) ...
[upstreams.bedrock]
kind = "bedrock"
region = "us-east-1"
base_url = "{up}"
{upstream_extra}

# ... and the Anthropic API (x-api-key).
[upstreams.anthropic]
kind = "anthropic"
base_url = "{up}"
token_env = "TEST_UPSTREAM_KEY"
{upstream_extra}

[[models]]
id = "claude-sonnet-4-5"
aliases = ["{SONNET_BEDROCK}", "claude-sonnet-4-5-20250929"]
upstream = "bedrock"
upstream_model = "{SONNET_BEDROCK}"

[[models]]
id = "claude-opus-4-1"
aliases = ["{OPUS_BEDROCK}", "claude-opus-4-1-20250805"]
upstream = "bedrock"
upstream_model = "{OPUS_BEDROCK}"

[[models]]
id = "claude-haiku-4-5"
aliases = ["{HAIKU_BEDROCK}", "claude-haiku-4-5-20251001"]
upstream = "anthropic"
upstream_model = "claude-haiku-4-5-20251001"
"#,
            cert = leaf.cert_path.display(),
            key = leaf.key_path.display(),
            up = upstream.url(),
        );
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, config).unwrap();
        std::fs::write(dir.path().join("keys.toml"), "").unwrap();
        let mut cmd = Command::new(corral_bin());
        cmd.args(["gateway", "serve", "--config"])
            .arg(&config_path)
            .env("AWS_ACCESS_KEY_ID", "AKIDCORRALTEST")
            .env("AWS_SECRET_ACCESS_KEY", "corral-test-secret")
            .env_remove("AWS_SESSION_TOKEN")
            .env("TEST_UPSTREAM_KEY", UPSTREAM_API_KEY);
        let mut process = Background::spawn("corral gateway", cmd);
        let stderr = process.wait_for_stderr("listening on ", Duration::from_secs(30));
        let url = stderr
            .lines()
            .find_map(|l| l.split("listening on ").nth(1))
            .unwrap()
            .trim()
            .to_string();
        Gateway {
            process,
            url,
            dir,
            ca,
            upstream,
        }
    }

    pub fn keys_file(&self) -> PathBuf {
        self.dir.path().join("keys.toml")
    }

    /// `corral gateway keys add --owner OWNER ARGS…`; returns the printed key.
    pub fn add_key(&self, owner: &str, args: &[&str]) -> String {
        let out = output(
            Command::new(corral_bin())
                .args(["gateway", "keys", "add", "--keys-file"])
                .arg(self.keys_file())
                .args(["--owner", owner])
                .args(args),
        );
        assert!(
            out.status.success(),
            "keys add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub fn audit(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
            .collect()
    }

    /// Runs a Python client with the gateway's CA trusted; returns its stdout as JSON.
    pub fn python(&self, script: &str, env: &[(&str, &str)]) -> Value {
        let mut cmd = Command::new(crate::deps::python());
        cmd.arg("-c")
            .arg(script)
            .env("GATEWAY_URL", &self.url)
            .env("AWS_CA_BUNDLE", self.ca.ca_path())
            .env("SSL_CERT_FILE", self.ca.ca_path())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("HTTPS_PROXY")
            .env_remove("HTTP_PROXY")
            .env_remove("ALL_PROXY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = output(&mut cmd);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "python failed\n--- stdout ---\n{stdout}\n--- stderr ---\n{}\n--- gateway ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.process.stderr()
        );
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("python output {stdout:?}: {e}"))
    }

    /// One request with curl: `(status, headers, body)`.
    pub fn curl(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: Option<&str>,
    ) -> (u16, String, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-D", "-", "-X", method, "--cacert"])
            .arg(self.ca.ca_path())
            .arg(format!("{}{path}", self.url));
        for h in headers {
            cmd.args(["-H", h]);
        }
        if let Some(b) = body {
            cmd.args(["-H", "content-type: application/json", "--data-binary", b]);
        }
        let out = output(&mut cmd);
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, head.to_ascii_lowercase(), body.to_string())
    }
}

pub fn records_for<'a>(audit: &'a [Value], key_id: &str) -> Vec<&'a Value> {
    audit.iter().filter(|r| r["key_id"] == key_id).collect()
}

impl Gateway {
    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("no port in the gateway URL {}", self.url))
    }

    /// The gateway's audit log.
    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }
}

/// The environment that keeps Claude Code to the gateway alone (no update check, no
/// telemetry, no marketplace) and pins every model tier (so it does not probe for
/// models): Bedrock model ids, or the first-party ones.
pub fn claude_quiet_env(first_party: bool) -> Vec<(&'static str, &'static str)> {
    let (sonnet, opus, haiku) = if first_party {
        (
            "claude-sonnet-4-5-20250929",
            "claude-opus-4-1-20250805",
            "claude-haiku-4-5-20251001",
        )
    } else {
        (SONNET_BEDROCK, OPUS_BEDROCK, HAIKU_BEDROCK)
    };
    vec![
        ("DISABLE_AUTOUPDATER", "1"),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        ("CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL", "1"),
        ("ANTHROPIC_MODEL", sonnet),
        ("ANTHROPIC_DEFAULT_SONNET_MODEL", sonnet),
        ("ANTHROPIC_DEFAULT_OPUS_MODEL", opus),
        ("ANTHROPIC_DEFAULT_HAIKU_MODEL", haiku),
    ]
}
