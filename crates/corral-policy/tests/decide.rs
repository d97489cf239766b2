//! Scenarios for the compiled matcher: who may reach what, and why not.

use std::path::PathBuf;

use corral_policy::{
    CompileOptions, Decision, DenyReason, HttpRequestInfo, Identity, Matcher, Policy, Report,
};

const POLICY: &str = r#"
version: 1
network_policies:
  github:
    endpoints:
      - { host: github.com, port: 443 }
      - { host: "*.githubusercontent.com", ports: [443, 8443] }
    binaries:
      - { path: /usr/bin/git }
      - { path: "/usr/lib/git-core/**" }
  corp:
    endpoints:
      - { host: "**.corp.example", port: 443 }
      - { host: 10.1.2.3, port: 5432 }
      - { host: "bücher.example", port: 443 }
    binaries:
      - { path: ~/.local/bin/claude }
      - { path: /opt/tools/launcher, children: inherit }
  pinned:
    endpoints:
      - { host: pinned.example, port: 443 }
    binaries:
      - { path: /usr/bin/curl, sha256: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" }
  api:
    endpoints:
      - host: api.example
        port: 80
        protocol: rest
        rules:
          - allow: { method: GET, path: "/repos/**" }
          - allow: { method: post, path: "/**/git-upload-pack" }
        deny_rules:
          - { method: "*", path: "/repos/secret/**" }
      - host: ro.example
        port: 80
        protocol: rest
        access: read-only
      - host: rw.example
        port: 80
        protocol: rest
        access: read-write
    binaries:
      - { path: /usr/bin/curl }
"#;

fn matcher() -> Matcher {
    Policy::parse(POLICY, "test.yaml")
        .expect("valid")
        .policy
        .compile(&CompileOptions {
            home: Some(PathBuf::from("/home/alice")),
        })
}

fn who(exe: &str) -> Identity {
    Identity::new(exe)
}

fn deny_reason(d: Decision) -> DenyReason {
    match d {
        Decision::Deny(d) => d.reason,
        Decision::Allow(a) => panic!("expected deny, got allow by {}", a.policy),
    }
}

#[test]
fn git_may_reach_github_and_is_attributed_to_the_group() {
    match matcher().decide(&who("/usr/bin/git"), "GitHub.com.", 443, None) {
        Decision::Allow(a) => {
            assert_eq!(a.policy, "github");
            assert_eq!(a.endpoint_host, "github.com");
        }
        d @ Decision::Deny(_) => panic!("{d:?}"),
    }
}

#[test]
fn globbed_binary_and_one_label_wildcard() {
    let m = matcher();
    let helper = who("/usr/lib/git-core/git-remote-https");
    assert!(m
        .decide(&helper, "raw.githubusercontent.com", 8443, None)
        .is_allow());
    // `*.` is exactly one label.
    assert_eq!(
        deny_reason(m.decide(&helper, "a.b.githubusercontent.com", 443, None)),
        DenyReason::NoEndpoint
    );
    assert_eq!(
        deny_reason(m.decide(&helper, "githubusercontent.com", 443, None)),
        DenyReason::NoEndpoint
    );
}

#[test]
fn home_expansion_any_depth_wildcard_ip_and_idn() {
    let m = matcher();
    let claude = who("/home/alice/.local/bin/claude");
    assert!(m.decide(&claude, "llm.corp.example", 443, None).is_allow());
    assert!(m
        .decide(&claude, "a.b.c.corp.example", 443, None)
        .is_allow());
    assert!(m.decide(&claude, "10.1.2.3", 5432, None).is_allow());
    assert!(m
        .decide(&claude, "xn--bcher-kva.example", 443, None)
        .is_allow());
    assert!(m.decide(&claude, "BÜCHER.example", 443, None).is_allow());
    assert_eq!(
        deny_reason(m.decide(&claude, "corp.example", 443, None)),
        DenyReason::NoEndpoint
    );
}

#[test]
fn wrong_port_lists_the_allowed_ports() {
    assert_eq!(
        deny_reason(matcher().decide(&who("/usr/bin/git"), "github.com", 22, None)),
        DenyReason::PortNotAllowed {
            allowed_ports: vec![443],
            policies: vec!["github".into()]
        }
    );
}

#[test]
fn unlisted_binary_lists_the_binaries_that_are_allowed() {
    let d = matcher().decide(&who("/usr/bin/python3"), "github.com", 443, None);
    let Decision::Deny(deny) = &d else { panic!() };
    assert_eq!(
        deny.reason,
        DenyReason::BinaryNotAllowed {
            policies: vec!["github".into()],
            binaries: vec!["/usr/bin/git".into(), "/usr/lib/git-core/**".into()]
        }
    );
    let r = Report::new(&who("/usr/bin/python3"), "github.com", 443, None, &d);
    assert_eq!(r.error.as_deref(), Some("binary_not_allowed"));
    assert_eq!(
        r.suggestion.as_deref(),
        Some("network_policies:\n  allow_python3_github_com:\n    endpoints:\n      - { host: github.com, port: 443 }\n    binaries:\n      - { path: /usr/bin/python3 }\n")
    );
}

#[test]
fn suggestion_never_widens_a_group_other_binaries_share() {
    // `github` lists git and the git-core helpers: appending gitlab.example there would
    // let the helpers through too, so git gets a group of its own.
    let d = matcher().decide(&who("/usr/bin/git"), "gitlab.example", 443, None);
    let r = Report::new(&who("/usr/bin/git"), "gitlab.example", 443, None, &d);
    assert_eq!(r.error.as_deref(), Some("no_endpoint"));
    let s = r.suggestion.unwrap();
    assert!(!s.contains("  github:"), "{s}");
    assert!(s.contains("      - { host: gitlab.example, port: 443 }\n    binaries:\n      - { path: /usr/bin/git }\n"), "{s}");
    // The suggestion is itself a valid policy fragment.
    let doc = format!(
        "version: 1\n{}",
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Policy::parse(&doc, "suggestion.yaml").unwrap();
}

#[test]
fn children_do_not_inherit_unless_the_entry_says_so() {
    let m = matcher();
    let mut child = who("/usr/bin/python3");
    child.ancestors = vec![PathBuf::from("/home/alice/.local/bin/claude")];
    assert!(!m.decide(&child, "llm.corp.example", 443, None).is_allow());
    child.ancestors.push(PathBuf::from("/opt/tools/launcher"));
    assert!(m.decide(&child, "llm.corp.example", 443, None).is_allow());
}

#[test]
fn sha256_pin_is_checked() {
    let m = matcher();
    let mut curl = who("/usr/bin/curl");
    assert_eq!(
        deny_reason(m.decide(&curl, "pinned.example", 443, None)),
        DenyReason::HashMismatch {
            policy: "pinned".into(),
            expected: "a".repeat(64),
            actual: "unknown".into()
        }
    );
    curl.sha256 = Some("b".repeat(64));
    assert_eq!(
        deny_reason(m.decide(&curl, "pinned.example", 443, None)).code(),
        "binary_hash_mismatch"
    );
    curl.sha256 = Some("A".repeat(64));
    assert!(m.decide(&curl, "pinned.example", 443, None).is_allow());
}

#[test]
fn l7_rules_allow_deny_and_presets() {
    let m = matcher();
    let curl = who("/usr/bin/curl");
    let req = |method, path| HttpRequestInfo { method, path };
    assert!(m.needs_l7("api.example", 80));
    assert!(!m.needs_l7("github.com", 443));
    // A tunnel to an endpoint that restricts requests is allowed only to be terminated,
    // so that each request inside it is decided like a plain-HTTP one.
    match m.decide(&curl, "api.example", 80, None) {
        Decision::Allow(a) => assert!(a.inspect, "{a:?}"),
        d => panic!("{d:?}"),
    }
    assert!(m
        .decide(
            &curl,
            "api.example",
            80,
            Some(&req("get", "/repos/a/b?x=1"))
        )
        .is_allow());
    assert!(m
        .decide(
            &curl,
            "api.example",
            80,
            Some(&req("POST", "/o/r.git/git-upload-pack"))
        )
        .is_allow());
    assert_eq!(
        deny_reason(m.decide(&curl, "api.example", 80, Some(&req("DELETE", "/repos/a")))),
        DenyReason::L7RuleNotMatched {
            policy: "api".into(),
            method: "DELETE".into(),
            path: "/repos/a".into()
        }
    );
    assert_eq!(
        deny_reason(m.decide(
            &curl,
            "api.example",
            80,
            Some(&req("GET", "/repos/secret/x"))
        ))
        .code(),
        "l7_rule_not_matched"
    );
    assert!(m
        .decide(&curl, "ro.example", 80, Some(&req("HEAD", "/x")))
        .is_allow());
    assert!(!m
        .decide(&curl, "ro.example", 80, Some(&req("POST", "/x")))
        .is_allow());
    let rw = |method| {
        m.decide(&curl, "rw.example", 80, Some(&req(method, "/x")))
            .is_allow()
    };
    assert!(rw("PATCH") && rw("post") && rw("GET"));
    assert!(!rw("DELETE") && !rw("PROPFIND"));
}

#[test]
fn report_json_has_the_documented_fields() {
    let d = matcher().decide(&who("/usr/bin/git"), "github.com", 22, None);
    let r = Report::new(&who("/usr/bin/git"), "github.com", 22, None, &d);
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["error"], "port_not_allowed");
    assert_eq!(v["binary"], "/usr/bin/git");
    assert_eq!(v["port"], 22);
    assert_eq!(v["policy"], "github");
    assert_eq!(
        v["reason"],
        "github.com is listed by policy `github` but only on port 443, not 22"
    );
    let back: Report = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
}

#[test]
fn symlinked_binary_paths_match_their_target_and_home_forms_expand() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("tool-1.2");
    std::fs::write(&real, "#!/bin/sh\n").unwrap();
    let link = dir.path().join("tool");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let src = format!(
        "version: 1\nnetwork_policies:\n  g:\n    endpoints:\n      - {{ host: a.example, port: 443 }}\n    binaries:\n      - {{ path: {} }}\n      - {{ path: $HOME/bin/x }}\n      - {{ path: ~/bin/y }}\n",
        link.display()
    );
    let policy = Policy::parse(&src, "p.yaml").unwrap().policy;
    let m = policy.compile(&CompileOptions {
        home: Some(PathBuf::from("/home/bob/")),
    });
    // The proxy sees the resolved executable; the literal path keeps matching too.
    let real = std::fs::canonicalize(&real).unwrap();
    assert!(m
        .decide(&Identity::new(&real), "a.example", 443, None)
        .is_allow());
    assert!(m
        .decide(&Identity::new(&link), "a.example", 443, None)
        .is_allow());
    assert!(m
        .decide(&who("/home/bob/bin/x"), "a.example", 443, None)
        .is_allow());
    assert!(m
        .decide(&who("/home/bob/bin/y"), "a.example", 443, None)
        .is_allow());
    // Without a home directory, `~/` entries match nothing.
    let m = policy.compile(&CompileOptions::default());
    assert!(!m
        .decide(&who("/home/bob/bin/y"), "a.example", 443, None)
        .is_allow());
}

#[test]
fn matcher_is_shareable_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Matcher>();
    send_sync::<corral_policy::PolicyWatcher>();
}

#[test]
fn opaque_tunnels_are_refused_only_where_requests_are_restricted() {
    let m = Policy::parse(
        r#"
version: 1
network_policies:
  readonly_api:
    endpoints:
      - { host: api.github.com, port: 443, protocol: rest, access: read-only }
      - { host: api.anthropic.com, port: 443, protocol: rest, access: full }
    binaries:
      - { path: /usr/bin/gh }
      - { path: /usr/bin/curl }
  curl_everything:
    endpoints:
      - { host: api.github.com, port: 443 }
    binaries:
      - { path: /usr/bin/curl }
"#,
        "t.yaml",
    )
    .expect("valid")
    .policy
    .compile(&CompileOptions::default());
    // gh may only read: its tunnel is terminated and each request decided.
    match m.decide(&who("/usr/bin/gh"), "api.github.com", 443, None) {
        Decision::Allow(a) => assert!(a.inspect && a.policy == "readonly_api", "{a:?}"),
        d => panic!("{d:?}"),
    }
    assert!(!m
        .decide(
            &who("/usr/bin/gh"),
            "api.github.com",
            443,
            Some(&HttpRequestInfo {
                method: "POST",
                path: "/repos"
            })
        )
        .is_allow());
    // curl is in both groups: the first (file order) terminates its tunnel, and each
    // request inside is allowed by whichever group allows it — here the one without rules.
    match m.decide(&who("/usr/bin/curl"), "api.github.com", 443, None) {
        Decision::Allow(a) => assert!(a.inspect && a.policy == "readonly_api", "{a:?}"),
        d => panic!("{d:?}"),
    }
    let post = HttpRequestInfo {
        method: "POST",
        path: "/repos",
    };
    match m.decide(&who("/usr/bin/curl"), "api.github.com", 443, Some(&post)) {
        Decision::Allow(a) => assert_eq!(a.policy, "curl_everything"),
        d @ Decision::Deny(_) => panic!("{d:?}"),
    }
    // `access: full` restricts nothing, so the tunnel is allowed and stays blind.
    match m.decide(&who("/usr/bin/gh"), "api.anthropic.com", 443, None) {
        Decision::Allow(a) => assert!(!a.inspect, "{a:?}"),
        d => panic!("{d:?}"),
    }
}

const L7_POLICY: &str = r#"
version: 1
network_policies:
  api:
    endpoints:
      - host: api.example
        port: 443
        protocol: rest
        rules:
          - allow: { method: GET, path: "/public/**" }
          - allow: { method: GET, path: "/search*", query: { q: "*", page: ["1", "2"] } }
        deny_rules:
          - { method: GET, path: "/public/secret/**" }
      - host: slash.example
        port: 443
        protocol: rest
        allow_encoded_slash: true
        rules:
          - allow: { method: GET, path: "/pkg/**" }
      - host: blind.example
        port: 443
        protocol: rest
        tls: passthrough
        access: read-only
      - host: term.example
        port: 443
        tls: terminate
      - host: audit.example
        port: 443
        protocol: rest
        enforcement: audit
        access: read-only
    binaries:
      - { path: /usr/bin/curl }
"#;

fn l7_matcher() -> Matcher {
    let loaded = Policy::parse(L7_POLICY, "l7.yaml").expect("valid");
    // The one warning: rules that a blind tunnel makes uncheckable.
    assert!(
        loaded.warnings.len() == 1 && loaded.warnings[0].message.contains("tls: passthrough"),
        "{:?}",
        loaded.warnings
    );
    loaded.policy.compile(&CompileOptions::default())
}

fn get(m: &Matcher, host: &str, path: &str) -> Decision {
    m.decide(
        &who("/usr/bin/curl"),
        host,
        443,
        Some(&HttpRequestInfo {
            method: "GET",
            path,
        }),
    )
}

#[test]
fn request_paths_are_canonical_before_rules_match() {
    let m = l7_matcher();
    assert!(get(&m, "api.example", "/public/a").is_allow());
    // Dot segments, duplicate slashes and escapes of unreserved characters cannot walk
    // out of an allowed prefix or into a denied one.
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public//..//admin",
        "/public/./secret/x",
        "//public/secret/x",
        "/public/%73ecret/x",
    ] {
        match get(&m, "api.example", path) {
            Decision::Deny(d) => assert_eq!(d.reason.code(), "l7_rule_not_matched", "{path}"),
            d => panic!("{path}: {d:?}"),
        }
    }
    assert!(get(&m, "api.example", "/x/../public/a").is_allow());
    assert!(get(&m, "api.example", "/%70ublic/a").is_allow());
    // The refusal names the canonical path it decided.
    match get(&m, "api.example", "/public/../admin") {
        Decision::Deny(d) => assert!(
            matches!(&d.reason, DenyReason::L7RuleNotMatched { path, .. } if path == "/admin"),
            "{d:?}"
        ),
        d => panic!("{d:?}"),
    }
}

#[test]
fn an_encoded_slash_is_refused_unless_the_endpoint_allows_it() {
    let m = l7_matcher();
    match get(&m, "api.example", "/public%2F..%2Fadmin") {
        Decision::Deny(d) => assert_eq!(d.reason.code(), "encoded_slash"),
        d => panic!("{d:?}"),
    }
    let d = get(&m, "api.example", "/public/a%2Fb");
    let r = Report::new(
        &who("/usr/bin/curl"),
        "api.example",
        443,
        Some(&HttpRequestInfo {
            method: "GET",
            path: "/public/a%2Fb",
        }),
        &d,
    );
    assert_eq!(r.error.as_deref(), Some("encoded_slash"));
    assert!(r.suggestion.unwrap().contains("allow_encoded_slash: true"));
    assert!(get(&m, "slash.example", "/pkg/@scope%2Fname").is_allow());
    match get(&m, "api.example", "/public/%zz") {
        Decision::Deny(d) => assert_eq!(d.reason.code(), "bad_path"),
        d => panic!("{d:?}"),
    }
}

#[test]
fn query_constraints_need_every_named_parameter() {
    let m = l7_matcher();
    assert!(get(&m, "api.example", "/search?q=x&page=1").is_allow());
    assert!(get(&m, "api.example", "/search?page=2&q=").is_allow());
    assert!(!get(&m, "api.example", "/search?q=x&page=3").is_allow());
    assert!(!get(&m, "api.example", "/search?page=1").is_allow());
    assert!(!get(&m, "api.example", "/search").is_allow());
}

#[test]
fn tls_modes_and_audit() {
    let m = l7_matcher();
    let curl = who("/usr/bin/curl");
    // `tls: passthrough` keeps the tunnel blind, so restricting rules refuse it.
    assert_eq!(
        deny_reason(m.decide(&curl, "blind.example", 443, None)).code(),
        "l7_not_inspectable"
    );
    // `tls: terminate` without rules: terminated, every request allowed.
    match m.decide(&curl, "term.example", 443, None) {
        Decision::Allow(a) => assert!(a.inspect),
        d => panic!("{d:?}"),
    }
    assert!(get(&m, "term.example", "/anything").is_allow());
    // `enforcement: audit`: the request goes through, the report says what enforcing
    // would have refused and the rule that would allow it.
    let post = HttpRequestInfo {
        method: "POST",
        path: "/x",
    };
    let d = m.decide(&curl, "audit.example", 443, Some(&post));
    match &d {
        Decision::Allow(a) => assert!(a.audited.is_some()),
        d => panic!("{d:?}"),
    }
    let r = Report::new(&curl, "audit.example", 443, Some(&post), &d);
    assert_eq!(r.decision, "allow");
    assert_eq!(r.error.as_deref(), Some("l7_rule_not_matched"));
    assert!(r.reason.starts_with("audit only"), "{}", r.reason);
    assert!(r.suggestion.unwrap().contains("method: POST"));
}

#[test]
fn unix_sockets_list_host_sockets_by_real_path_with_globs_and_home() {
    let yaml = "version: 1\nnetwork_policies: {}\nunix_sockets:\n  - /run/user/*/gnupg/S.gpg-agent\n  - ~/.ssh/agent.sock\n";
    let loaded = Policy::parse(yaml, "p.yaml").unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let m = loaded.policy.compile(&CompileOptions {
        home: Some(PathBuf::from("/home/alice")),
    });
    assert!(m.allows_unix_socket("/run/user/1000/gnupg/S.gpg-agent"));
    assert!(!m.allows_unix_socket("/run/user/1000/x/gnupg/S.gpg-agent"));
    assert!(m.allows_unix_socket("/home/alice/.ssh/agent.sock"));
    assert!(!m.allows_unix_socket("/run/docker.sock"));
    // Nothing listed: nothing reachable.
    let none = Policy::parse("version: 1\nnetwork_policies: {}\n", "p.yaml").unwrap();
    assert!(!none
        .policy
        .compile(&CompileOptions::default())
        .allows_unix_socket("/run/user/1000/gnupg/S.gpg-agent"));
}

#[test]
fn unix_sockets_reject_relative_paths_and_warn_about_ways_out() {
    let err = Policy::parse(
        "version: 1\nnetwork_policies: {}\nunix_sockets:\n  - run/docker.sock\n",
        "p.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("p.yaml:4:5"), "{err}");
    assert!(err.contains("not an absolute path"), "{err}");
    let loaded = Policy::parse(
        "version: 1\nnetwork_policies: {}\nunix_sockets: [/run/docker.sock]\n",
        "p.yaml",
    )
    .unwrap();
    let w = loaded
        .warnings
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(w.contains("way out of the sandbox"), "{w}");
    assert!(w.contains("host's network"), "{w}");
}
