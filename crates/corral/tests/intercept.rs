//! TLS termination inside `corral run`: endpoints whose requests the policy checks are
//! intercepted with the session CA (which the sandbox's tools trust through their
//! environment, with no flag), every request inside is decided, and every other CONNECT
//! stays a blind tunnel. Real clients, real TLS upstreams on loopback, both isolation
//! modes, as the current user and (as root) an ordinary one. Wire-level shapes (smuggling,
//! HTTP/2, keep-alive, WebSocket) are in intercept_wire.rs.

mod intercept_support;

use corral_testsupport::sandbox::{runners, stdout, Sandbox, MODES};
use corral_testsupport::tls::TestCa;
use intercept_support::{api, body_json, https_records, rules_policy, run};

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
            // `corral policy suggest` turns the refusal into the rule line.
            let suggested = std::process::Command::new(corral_testsupport::process::corral_bin())
                .args(["policy", "suggest", "--from"])
                .arg(&sb.log)
                .output()
                .unwrap();
            let text = stdout(&suggested);
            assert!(
                text.contains("network_policies.api:\n- allow: { method: POST, path: /x }"),
                "{text}"
            );
        }
    }
    // Nothing of the refused request reached the server.
    assert!(up.https.requests().iter().all(|r| r.method == "GET"));
}

#[test]
fn paths_are_canonical_before_rules_and_an_encoded_slash_is_refused() {
    let up = api();
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(
                &runner,
                mode,
                &rules_policy(up.port(), &["/usr/bin/curl"]),
                &up.resolve(),
            );
            let get = |path: &str| {
                let url = up.url("api.test", path);
                let out = run(
                    &sb,
                    &up.ca,
                    &[
                        "/usr/bin/curl",
                        "-sS",
                        "--path-as-is",
                        "-w",
                        "\nSTATUS %{http_code}",
                        &url,
                    ],
                );
                (stdout(&out), sb.context(&out))
            };
            // Out of the allowed prefix by dot segments: refused, naming the path decided.
            let (body, ctx) = get("/public/../admin");
            assert!(body.ends_with("STATUS 403"), "{ctx}");
            assert!(body.contains("\"path\": \"/admin\""), "{ctx}");
            // Into the denied prefix by an escaped letter and a duplicate slash.
            let (body, ctx) = get("/public//%73ecret/k");
            assert!(body.ends_with("STATUS 403"), "{ctx}");
            // The server gets the path that was decided, not the one that was sent.
            let (body, ctx) = get("/public/%2e%2e/x");
            assert_eq!(body, "upstream saw GET /x\n\nSTATUS 200", "{ctx}");
            let (body, ctx) = get("/public/a/../b");
            assert_eq!(body, "upstream saw GET /public/b\n\nSTATUS 200", "{ctx}");
            let (body, ctx) = get("/public/a%2F..%2F..%2Fadmin");
            assert!(body.ends_with("STATUS 403"), "{ctx}");
            assert!(body.contains("encoded_slash"), "{ctx}");
        }
    }
    let seen: Vec<String> = up
        .https
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert!(
        seen.iter().all(|t| t == "/x" || t == "/public/b"),
        "{seen:?}"
    );
}

#[test]
fn a_tunnel_to_an_endpoint_without_rules_is_not_intercepted() {
    let up = api();
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(
                &runner,
                mode,
                &rules_policy(up.port(), &["/usr/bin/curl"]),
                &up.resolve(),
            );
            let url = up.url("other.test", "/y");
            // The client sees the upstream's own certificate: trusted with the test CA…
            let ca = up.ca.ca_path().display().to_string();
            let out = run(
                &sb,
                &up.ca,
                &["/usr/bin/curl", "-sS", "-v", "--cacert", &ca, &url],
            );
            assert!(out.status.success(), "{}", sb.context(&out));
            assert_eq!(
                stdout(&out),
                "upstream saw GET /y\n",
                "{}",
                sb.context(&out)
            );
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(err.contains("corral test CA"), "{}", sb.context(&out));
            // …and not by the session CA's bundle alone.
            let out = run(&sb, &up.ca, &["/usr/bin/curl", "-sS", &url]);
            assert!(!out.status.success(), "{}", sb.context(&out));
            let log = sb.log();
            assert!(
                !log.iter()
                    .any(|r| r["kind"] == "https" && r["host"] == "other.test"),
                "{}",
                sb.context(&out)
            );
        }
    }
}

#[test]
fn an_untrusted_upstream_is_a_502_with_the_reason_and_gets_nothing() {
    let up = api();
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(
                &runner,
                mode,
                &rules_policy(up.port(), &["/usr/bin/curl"]),
                &up.resolve(),
            );
            // No --upstream-ca: the test CA is not among the system roots.
            let url = up.url("api.test", "/public/untrusted");
            let out = sb.run(&["/usr/bin/curl", "-sS", "-w", "\nSTATUS %{http_code}", &url]);
            assert!(stdout(&out).ends_with("STATUS 502"), "{}", sb.context(&out));
            let json = body_json(&sb, &out);
            assert_eq!(json["error"], "upstream_tls", "{}", sb.context(&out));
            let reason = json["reason"].as_str().unwrap_or("");
            assert!(reason.contains("certificate"), "{reason}");
            assert!(reason.contains("--upstream-ca"), "{reason}");
        }
    }
    assert!(
        up.https
            .requests()
            .iter()
            .all(|r| !r.target.contains("untrusted")),
        "the untrusted server received the request"
    );
}

#[test]
fn python_requests_get_is_allowed_and_post_refused_by_rules() {
    let up = api();
    let python = corral_testsupport::deps::python();
    let python = python.to_str().unwrap();
    let script = r#"
import sys, requests
base = sys.argv[1]
r = requests.get(base + "/public/a")
print("GET", r.status_code, r.text.strip())
r = requests.post(base + "/public/a", data="x")
j = r.json()
print("POST", r.status_code, j["error"], j["method"], j["path"], j["binary"])
"#;
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(
                &runner,
                mode,
                &rules_policy(up.port(), &[python]),
                &up.resolve(),
            );
            let base = format!("https://api.test:{}", up.port());
            // No verify= argument: requests trusts the session CA through REQUESTS_CA_BUNDLE.
            let out = run(&sb, &up.ca, &[python, "-c", script, &base]);
            assert!(out.status.success(), "{}", sb.context(&out));
            let text = stdout(&out);
            assert!(
                text.contains("GET 200 upstream saw GET /public/a"),
                "{}",
                sb.context(&out)
            );
            let real = std::fs::canonicalize(python).unwrap();
            assert!(
                text.contains(&format!(
                    "POST 403 l7_rule_not_matched POST /public/a {}",
                    real.display()
                )),
                "{}",
                sb.context(&out)
            );
        }
    }
}

#[test]
fn git_clone_is_allowed_and_push_refused_by_rules_inside_tls() {
    use corral_testsupport::git_server::GitServer;
    let ca = TestCa::new();
    let git = GitServer::start(&ca, &["git.test"]);
    let port = git.port();
    let resolve = vec![format!("git.test:{port}:127.0.0.1")];
    let url = format!("https://git.test:{port}/repo.git");
    // Fetching only: the discovery request must ask for upload-pack.
    let policy = format!(
        r#"version: 1
network_policies:
  git:
    endpoints:
      - host: git.test
        port: {port}
        protocol: rest
        allowed_ips: [127.0.0.0/8]
        rules:
          - allow: {{ method: GET, path: "/**/info/refs*", query: {{ service: git-upload-pack }} }}
          - allow: {{ method: POST, path: "/**/git-upload-pack" }}
    binaries:
      - path: /usr/bin/git
      - path: /usr/lib/git-core/git-remote-https
"#
    );
    let script = format!(
        "G=/usr/bin/git; $G clone -q {url} c && cd c && $G -c user.email=a@b.test -c user.name=a commit -q --allow-empty -m x && $G push -q origin HEAD:refs/heads/pushed"
    );
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, &policy, &resolve);
            let mut c = sb.command(&["/bin/sh", "-c", &script]);
            c.env("CORRAL_UPSTREAM_CA", ca.ca_path());
            let out = c.output().unwrap();
            // Cloned (GIT_SSL_CAINFO is the session bundle), then the push is refused.
            assert!(sb.work.join("c/README.md").exists(), "{}", sb.context(&out));
            assert!(!out.status.success(), "{}", sb.context(&out));
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(err.contains("403"), "{}", sb.context(&out));
            assert!(
                sb.log().iter().any(|r| r["decision"] == "deny"
                    && r["method"] == "GET"
                    && r["path"] == "/repo.git/info/refs?service=git-receive-pack"),
                "{}",
                sb.context(&out)
            );
        }
    }
    assert!(
        !git.requests()
            .iter()
            .any(|r| r.target.contains("receive-pack")),
        "the server saw a push"
    );
}

#[test]
fn a_redirect_to_a_host_the_binary_may_not_reach_is_logged_as_a_hint() {
    let up = api();
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(
                &runner,
                mode,
                &rules_policy(up.port(), &["/usr/bin/curl"]),
                &up.resolve(),
            );
            let url = up.url("api.test", "/public/go");
            let out = run(
                &sb,
                &up.ca,
                &["/usr/bin/curl", "-sS", "-w", "%{http_code}", &url],
            );
            assert_eq!(stdout(&out), "302", "{}", sb.context(&out));
            let log = sb.log();
            let hint = log
                .iter()
                .find(|r| r["kind"] == "redirect_hint")
                .unwrap_or_else(|| panic!("no hint: {}", sb.context(&out)));
            assert_eq!(hint["decision"], "hint");
            assert_eq!(hint["host"], "bucket.elsewhere.test");
            assert_eq!(hint["port"], 443);
            assert!(
                hint["suggestion"]
                    .as_str()
                    .is_some_and(|s| s.contains("host: bucket.elsewhere.test, port: 443")),
                "{hint}"
            );
        }
    }
}

/// The standalone proxy terminates with the CA it is given (`--ca-cert`/`--ca-key`), and
/// without one refuses tunnels whose requests it would have to check.
#[test]
fn corral_proxy_terminates_with_the_ca_from_files_and_refuses_without_one() {
    use corral_testsupport::process::output;
    use corral_testsupport::proxy::Proxy;
    let up = api();
    let proxy_ca = TestCa::new();
    let (cert, key) = (proxy_ca.ca_path().to_path_buf(), proxy_ca.key_path());
    let policy = rules_policy(up.port(), &["/usr/bin/curl"]);
    let flags = [
        "--ca-cert",
        cert.to_str().unwrap(),
        "--ca-key",
        key.to_str().unwrap(),
        "--upstream-ca",
        up.ca.ca_path().to_str().unwrap(),
    ];
    let proxy = Proxy::start(&policy, "/usr/bin/curl", &up.resolve(), &flags);
    let curl = |proxy: &Proxy, method: &str, ca: &std::path::Path| {
        output(
            std::process::Command::new("/usr/bin/curl")
                .args([
                    "-sS",
                    "-w",
                    "\nSTATUS %{http_code}",
                    "-X",
                    method,
                    "--cacert",
                ])
                .arg(ca)
                .arg("--proxy")
                .arg(format!("http://{}", proxy.listen))
                .arg(up.url("api.test", "/x")),
        )
    };
    let out = curl(&proxy, "GET", proxy_ca.ca_path());
    assert_eq!(stdout(&out), "upstream saw GET /x\n\nSTATUS 200", "{out:?}");
    let out = curl(&proxy, "DELETE", proxy_ca.ca_path());
    assert!(stdout(&out).contains("\"method\": \"DELETE\""), "{out:?}");
    assert!(stdout(&out).ends_with("STATUS 403"), "{out:?}");
    drop(proxy);

    let blind = Proxy::start(&policy, "/usr/bin/curl", &up.resolve(), &[]);
    let out = curl(&blind, "GET", up.ca.ca_path());
    assert!(!out.status.success(), "{out:?}");
    let log = std::fs::read_to_string(&blind.log).unwrap();
    assert!(log.contains("\"error\":\"l7_not_inspectable\""), "{log}");
}

/// The sandbox holds a placeholder; the proxy puts the secret in its place only in
/// requests of the group's binaries to the group's endpoints. The secret file is outside
/// what the filesystem policy lets the sandbox read.
#[test]
fn credentials_are_substituted_for_the_bound_binary_and_destination_only() {
    let up = api();
    // Not under /tmp: the sandbox's default view makes /tmp writable (and so readable).
    let secrets = tempfile::Builder::new()
        .prefix("corral-secrets-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(
        secrets.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let secret_file = secrets.path().join("api.key");
    corral_testsupport::fs::write_readable(&secret_file, b"s3cret-value\n");
    let port = up.port();
    let policy = format!(
        r#"version: 1
filesystem_policy:
  read_only: [/usr, /etc, /lib]
network_policies:
  api:
    endpoints:
      - host: api.test
        port: {port}
        protocol: rest
        allowed_ips: [127.0.0.0/8]
        rules:
          - allow: {{ method: GET, path: "/x" }}
    binaries:
      - path: /usr/bin/curl
    credentials:
      - placeholder: corral-placeholder-api-key
        secret_file: {}
  python_api:
    endpoints:
      - host: api.test
        port: {port}
        tls: terminate
        allowed_ips: [127.0.0.0/8]
    binaries:
      - path: /usr/bin/python3
"#,
        secret_file.display()
    );
    let script = format!(
        r#"/usr/bin/cat {secret} >/dev/null 2>&1 && echo SECRET-READABLE
/usr/bin/env | /usr/bin/grep -q s3cret && echo SECRET-IN-ENV
/usr/bin/curl -sS -H "Authorization: Bearer corral-placeholder-api-key" https://api.test:{port}/x
/usr/bin/python3 -c 'import urllib.request as u; r=u.Request("https://api.test:{port}/x", headers={{"Authorization": "Bearer corral-placeholder-api-key"}}); print(u.urlopen(r).read().decode().strip())'
"#,
        secret = secret_file.display()
    );
    for runner in runners() {
        for mode in MODES {
            let before = up.https.requests().len();
            let sb = Sandbox::new(&runner, mode, &policy, &up.resolve());
            let out = run(&sb, &up.ca, &["/bin/sh", "-c", &script]);
            let text = stdout(&out);
            assert!(!text.contains("SECRET"), "{}", sb.context(&out));
            assert_eq!(
                text.matches("upstream saw GET /x").count(),
                2,
                "{}",
                sb.context(&out)
            );
            let seen: Vec<String> = up.https.requests()[before..]
                .iter()
                .map(|r| r.header("authorization").unwrap_or("").to_string())
                .collect();
            // curl (bound) got the secret in; python (another group) did not.
            assert_eq!(
                seen,
                ["Bearer s3cret-value", "Bearer corral-placeholder-api-key"],
                "{}",
                sb.context(&out)
            );
            assert!(!std::fs::read_to_string(&sb.log).unwrap().contains("s3cret"));
        }
    }
}
