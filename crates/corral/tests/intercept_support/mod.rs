//! Shared by the interception tests: an HTTPS upstream for `api.test`/`other.test`, a
//! policy with request rules, and running a sandbox whose proxy trusts the upstream.

#![allow(dead_code)]

use std::process::Output;

use corral_testsupport::sandbox::{stdout, Sandbox};
use corral_testsupport::tls::TestCa;
use corral_testsupport::upstream::{Reply, Upstream};
use serde_json::Value;

/// An HTTPS upstream for `api.test` and `other.test`, answering with what it received.
pub struct Api {
    pub ca: TestCa,
    pub https: Upstream,
}

pub fn api() -> Api {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["api.test", "other.test"]);
    let https = Upstream::https(&leaf, |req| {
        if req.target == "/public/go" {
            return Reply::redirect("https://bucket.elsewhere.test/key?sig=1");
        }
        Reply::ok(format!("upstream saw {} {}\n", req.method, req.target))
    });
    Api { ca, https }
}

impl Api {
    pub fn port(&self) -> u16 {
        self.https.port()
    }
    pub fn resolve(&self) -> Vec<String> {
        let p = self.port();
        vec![
            format!("api.test:{p}:127.0.0.1"),
            format!("other.test:{p}:127.0.0.1"),
        ]
    }
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.port())
    }
}

/// `api.test` with request rules (so it is terminated); `other.test` without (a blind
/// tunnel).
pub fn rules_policy(port: u16, binaries: &[&str]) -> String {
    let bins: String = binaries
        .iter()
        .map(|b| format!("      - path: {b}\n"))
        .collect();
    format!(
        r#"version: 1
network_policies:
  api:
    endpoints:
      - host: api.test
        port: {port}
        protocol: rest
        allowed_ips: [127.0.0.0/8]
        rules:
          - allow: {{ method: GET, path: "/public/**" }}
          - allow: {{ method: GET, path: "/x" }}
        deny_rules:
          - {{ method: GET, path: "/public/secret/**" }}
      - host: other.test
        port: {port}
        allowed_ips: [127.0.0.0/8]
    binaries:
{bins}"#
    )
}

/// Runs `argv` in a sandbox whose proxy trusts `ca` for upstream servers.
pub fn run(sb: &Sandbox<'_>, ca: &TestCa, argv: &[&str]) -> Output {
    let mut c = sb.command(argv);
    c.env("CORRAL_UPSTREAM_CA", ca.ca_path());
    c.output().expect("run corral")
}

pub fn body_json(sb: &Sandbox<'_>, out: &Output) -> Value {
    let body = stdout(out);
    let json_part = body.split("\nSTATUS").next().unwrap_or("");
    serde_json::from_str(json_part)
        .unwrap_or_else(|e| panic!("403 body is JSON ({e}): {}", sb.context(out)))
}

pub fn https_records(sb: &Sandbox<'_>) -> Vec<Value> {
    sb.log()
        .into_iter()
        .filter(|r| r["kind"] == "https")
        .collect()
}
