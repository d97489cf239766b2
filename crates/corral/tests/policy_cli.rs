//! End-to-end: `corral policy check` and `corral policy explain`, run as a user would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn corral() -> Command {
    Command::new(env!("CARGO_BIN_EXE_corral"))
}

fn run(args: &[&str]) -> Output {
    corral().args(args).output().expect("run corral")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Binaries here are fictional paths, so the host's symlinks cannot change the answers.
const POLICY: &str = r#"version: 1
network_policies:
  tools:
    endpoints:
      - { host: api.corral.example, port: 443 }
      - host: rest.corral.example
        port: 80
        protocol: rest
        rules:
          - allow: { method: GET, path: "/repos/**" }
    binaries:
      - { path: /opt/corral-e2e/bin/tool }
  pinned:
    endpoints:
      - { host: pinned.corral.example, port: 443 }
    binaries:
      - { path: /opt/corral-e2e/bin/pinned, sha256: "0000000000000000000000000000000000000000000000000000000000000000" }
"#;

fn write_policy(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

/// Its gateway key is `~/.config/corral/gateway-key` of the user running corral: once
/// stored, no warning; before, a warning that requests keep the placeholder.
#[test]
fn check_accepts_the_corporate_example_with_exit_0() {
    let ex = repo_root().join("examples/policies/corporate.yaml");
    let home = tempfile::tempdir().unwrap();
    let check = || {
        corral()
            .args(["policy", "check", ex.to_str().unwrap()])
            .env("HOME", home.path())
            .output()
            .unwrap()
    };
    let out = check();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("corporate.yaml: ok (5 network policies, 1 warning"),
        "{}",
        text(&out.stdout)
    );
    let key = home.path().join(".config/corral/gateway-key");
    assert!(
        text(&out.stderr).contains(&format!(
            "secret_file {} cannot be read: requests keep the placeholder",
            key.display()
        )),
        "{}",
        text(&out.stderr)
    );
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, "cgw_alice_0123\n").unwrap();
    let out = check();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("corporate.yaml: ok (5 network policies, 0 warnings)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn check_reports_errors_with_line_column_and_help_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write_policy(
        dir.path(),
        "bad.yaml",
        "version: 1\nnetwork_policies:\n  g:\n    endpoints:\n      - { host: \"*\", prot: 443 }\n    binaries:\n      - { path: /usr/bin/curl }\n",
    );
    let out = run(&["policy", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let f = bad.display();
    assert!(
        err.contains(&format!(
            "{f}:5:17: error: host `*` would allow every host on the internet"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("{f}:5:22: error: unknown key `prot` in an endpoint of network_policies.g\n  help: did you mean `port`?")), "{err}");
    assert!(text(&out.stdout).contains("bad.yaml: invalid (2 errors)"));
}

#[test]
fn check_prints_warnings_but_exits_0_unless_deny_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_policy(
        dir.path(),
        "warn.yaml",
        "version: 1\nprocess:\n  run_as_user: sandbox\nnetwork_policies:\n  g:\n    endpoints:\n      - { host: \"**.corral.example\", port: 443 }\n    binaries:\n      - { path: /usr/bin/python3 }\n",
    );
    let out = run(&["policy", "check", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains("warn.yaml:3:3: warning: `process.run_as_user` is not enforced by corral yet"),
        "{err}"
    );
    assert!(err.contains("warn.yaml:9:9: warning: interpreter `/usr/bin/python3` may reach the wildcard host `**.corral.example`"), "{err}");
    let out = run(&["policy", "check", "--deny-warnings", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn check_of_a_missing_file_exits_1_and_names_it() {
    let out = run(&["policy", "check", "/nonexistent/corral-policy.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/corral-policy.yaml: cannot read policy"));
}

struct Explain {
    code: Option<i32>,
    stdout: String,
}

fn explain(policy: &Path, args: &[&str]) -> Explain {
    let mut all = vec!["policy", "explain", policy.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = run(&all);
    Explain {
        code: out.status.code(),
        stdout: text(&out.stdout),
    }
}

fn explain_json(policy: &Path, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut a = args.to_vec();
    a.push("--json");
    let e = explain(policy, &a);
    let v = serde_json::from_str(&e.stdout).unwrap_or_else(|err| panic!("{err}: {}", e.stdout));
    (e.code, v)
}

#[test]
fn explain_allows_with_exit_0_and_names_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_policy(dir.path(), "p.yaml", POLICY);
    let e = explain(
        &p,
        &[
            "--binary",
            "/opt/corral-e2e/bin/tool",
            "--dest",
            "API.corral.example:443",
        ],
    );
    assert_eq!(e.code, Some(0));
    assert!(
        e.stdout
            .starts_with("allow: /opt/corral-e2e/bin/tool -> API.corral.example:443\n"),
        "{}",
        e.stdout
    );
    assert!(e.stdout.contains("policy: tools"));
}

#[test]
fn explain_each_deny_reason_exits_3_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_policy(dir.path(), "p.yaml", POLICY);
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--binary",
                "/opt/corral-e2e/bin/tool",
                "--dest",
                "example.org:443",
            ],
            "no_endpoint",
        ),
        (
            &[
                "--binary",
                "/opt/corral-e2e/bin/tool",
                "--dest",
                "api.corral.example:8443",
            ],
            "port_not_allowed",
        ),
        (
            &[
                "--binary",
                "/opt/corral-e2e/bin/other",
                "--dest",
                "api.corral.example:443",
            ],
            "binary_not_allowed",
        ),
        (
            &[
                "--binary",
                "/opt/corral-e2e/bin/tool",
                "--dest",
                "rest.corral.example:80",
                "--method",
                "DELETE",
                "--path",
                "/repos/x",
            ],
            "l7_rule_not_matched",
        ),
        (
            &[
                "--binary",
                "/opt/corral-e2e/bin/pinned",
                "--dest",
                "pinned.corral.example:443",
                "--sha256",
                &"1".repeat(64),
            ],
            "binary_hash_mismatch",
        ),
    ];
    for (args, code) in cases {
        let (exit, v) = explain_json(&p, args);
        assert_eq!(exit, Some(3), "{code}");
        assert_eq!(v["decision"], "deny");
        assert_eq!(v["error"], *code, "{v}");
        assert!(
            v["suggestion"].as_str().is_some_and(|s| !s.is_empty()),
            "{v}"
        );
    }
}

#[test]
fn explain_deny_text_names_binary_host_port_and_lists_what_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_policy(dir.path(), "p.yaml", POLICY);
    let e = explain(
        &p,
        &[
            "--binary",
            "/opt/corral-e2e/bin/other",
            "--dest",
            "api.corral.example:443",
        ],
    );
    assert_eq!(e.code, Some(3));
    assert_eq!(
        e.stdout,
        "deny: /opt/corral-e2e/bin/other -> api.corral.example:443\n\
         \x20 reason: api.corral.example:443 is listed by policy `tools` but not for /opt/corral-e2e/bin/other (allowed binaries: /opt/corral-e2e/bin/tool)\n\
         \x20 code: binary_not_allowed\n\
         \x20 policy: tools\n\
         \x20 to allow it:\n\
         \x20   network_policies:\n\
         \x20     allow_other_api_corral_example:\n\
         \x20       endpoints:\n\
         \x20         - { host: api.corral.example, port: 443 }\n\
         \x20       binaries:\n\
         \x20         - { path: /opt/corral-e2e/bin/other }\n"
    );
}

#[test]
fn explain_l7_allow_and_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_policy(dir.path(), "p.yaml", POLICY);
    let (exit, v) = explain_json(
        &p,
        &[
            "--binary",
            "/opt/corral-e2e/bin/tool",
            "--dest",
            "rest.corral.example:80",
            "--method",
            "GET",
            "--path",
            "/repos/a/b?page=2",
            "--ancestor",
            "/opt/corral-e2e/bin/shell",
        ],
    );
    assert_eq!(exit, Some(0));
    assert_eq!(
        v,
        serde_json::json!({
            "decision": "allow",
            "error": null,
            "binary": "/opt/corral-e2e/bin/tool",
            "ancestors": ["/opt/corral-e2e/bin/shell"],
            "host": "rest.corral.example",
            "port": 80,
            "method": "GET",
            "path": "/repos/a/b?page=2",
            "policy": "tools",
            "reason": "policy `tools` allows /opt/corral-e2e/bin/tool to reach GET /repos/a/b?page=2 on rest.corral.example:80 (endpoint `rest.corral.example`)",
            "suggestion": null
        })
    );
}

#[test]
fn explain_with_an_invalid_policy_or_bad_dest_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write_policy(dir.path(), "bad.yaml", "version: 2\n");
    let out = run(&[
        "policy",
        "explain",
        bad.to_str().unwrap(),
        "--binary",
        "/x",
        "--dest",
        "a.example:443",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("bad.yaml:1:10: error: unsupported policy version `2`"),
        "{}",
        text(&out.stderr)
    );
    let good = write_policy(dir.path(), "p.yaml", POLICY);
    let out = run(&[
        "policy",
        "explain",
        good.to_str().unwrap(),
        "--binary",
        "/x",
        "--dest",
        "a.example",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("has no port"));
}

#[test]
fn explain_corporate_example_git_to_github() {
    let ex = repo_root().join("examples/policies/corporate.yaml");
    let e = explain(
        &ex,
        &[
            "--binary",
            "/usr/lib/git-core/git-remote-https",
            "--dest",
            "github.com:443",
        ],
    );
    assert_eq!(e.code, Some(0), "{}", e.stdout);
    let e = explain(
        &ex,
        &[
            "--binary",
            "/usr/lib/git-core/git-remote-https",
            "--dest",
            "example.org:443",
        ],
    );
    assert_eq!(e.code, Some(3));
    assert!(
        // github lists git too: the fix is a group of the helper's own.
        e.stdout.contains("allow_git_remote_http_example_org:")
            && !e.stdout.contains("network_policies.github;"),
        "{}",
        e.stdout
    );
}
