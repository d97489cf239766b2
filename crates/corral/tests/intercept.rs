//! TLS termination inside `corral run`: endpoints whose requests the policy checks are
//! intercepted with the session CA (which the sandbox's tools trust through their
//! environment, with no flag), every request inside is decided, and every other CONNECT
//! stays a blind tunnel. Real clients, real TLS upstreams on loopback, both isolation
//! modes, as the current user and (as root) an ordinary one.

use std::process::Output;

use corral_testsupport::sandbox::{runners, stdout, Sandbox, MODES};
use corral_testsupport::tls::TestCa;
use corral_testsupport::upstream::{Reply, Upstream};
use serde_json::Value;

/// An HTTPS upstream for `api.test` and `other.test`, answering with what it received.
struct Api {
    ca: TestCa,
    https: Upstream,
}

fn api() -> Api {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["api.test", "other.test"]);
    let https = Upstream::https(&leaf, |req| {
        Reply::ok(format!("upstream saw {} {}\n", req.method, req.target))
    });
    Api { ca, https }
}

impl Api {
    fn port(&self) -> u16 {
        self.https.port()
    }
    fn resolve(&self) -> Vec<String> {
        let p = self.port();
        vec![
            format!("api.test:{p}:127.0.0.1"),
            format!("other.test:{p}:127.0.0.1"),
        ]
    }
    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.port())
    }
}

/// `api.test` with request rules (so it is terminated); `other.test` without (a blind
/// tunnel).
fn rules_policy(port: u16, binaries: &[&str]) -> String {
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
fn run(sb: &Sandbox<'_>, ca: &TestCa, argv: &[&str]) -> Output {
    let mut c = sb.command(argv);
    c.env("CORRAL_UPSTREAM_CA", ca.ca_path());
    c.output().expect("run corral")
}

fn body_json(sb: &Sandbox<'_>, out: &Output) -> Value {
    let body = stdout(out);
    let json_part = body.split("\nSTATUS").next().unwrap_or("");
    serde_json::from_str(json_part)
        .unwrap_or_else(|e| panic!("403 body is JSON ({e}): {}", sb.context(out)))
}

fn https_records(sb: &Sandbox<'_>) -> Vec<Value> {
    sb.log()
        .into_iter()
        .filter(|r| r["kind"] == "https")
        .collect()
}

#[test]
fn curl_get_is_allowed_and_post_refused_by_rules_inside_tls_with_a_403_naming_method_and_path() {
    let up = api();
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(
                &runner,
                mode,
                &rules_policy(up.port(), &["/usr/bin/curl"]),
                &up.resolve(),
            );
            // No --cacert: curl trusts the session CA through CURL_CA_BUNDLE.
            let out = run(
                &sb,
                &up.ca,
                &["/usr/bin/curl", "-sS", &up.url("api.test", "/x")],
            );
            assert!(out.status.success(), "{}", sb.context(&out));
            assert_eq!(
                stdout(&out),
                "upstream saw GET /x\n",
                "{}",
                sb.context(&out)
            );

            let url = up.url("api.test", "/x");
            let out = run(
                &sb,
                &up.ca,
                &[
                    "/usr/bin/curl",
                    "-sS",
                    "-X",
                    "POST",
                    "-d",
                    "secret=1",
                    "-w",
                    "\nSTATUS %{http_code}",
                    &url,
                ],
            );
            assert!(stdout(&out).ends_with("STATUS 403"), "{}", sb.context(&out));
            let json = body_json(&sb, &out);
            assert_eq!(json["error"], "l7_rule_not_matched", "{}", sb.context(&out));
            assert_eq!(json["binary"], "/usr/bin/curl");
            assert_eq!(json["host"], "api.test");
            assert_eq!(json["port"], up.port());
            assert_eq!(json["method"], "POST");
            assert_eq!(json["path"], "/x");
            let suggestion = json["suggestion"].as_str().unwrap_or("");
            assert!(
                suggestion.contains("- allow: { method: POST, path: /x }"),
                "{suggestion}"
            );
            // The decision log records method and path, for the allowed and the refused.
            let recs = https_records(&sb);
            assert!(
                recs.iter()
                    .any(|r| r["decision"] == "allow" && r["method"] == "GET" && r["path"] == "/x"),
                "{}",
                sb.context(&out)
            );
            assert!(
                recs.iter().any(|r| r["decision"] == "deny"
                    && r["method"] == "POST"
                    && r["path"] == "/x"
                    && r["status"] == 403),
                "{}",
                sb.context(&out)
            );
        }
    }
    // Nothing of the refused request reached the server.
    assert!(up.https.requests().iter().all(|r| r.method == "GET"));
}
