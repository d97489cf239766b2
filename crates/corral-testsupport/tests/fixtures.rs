//! The fixtures themselves work with real clients: curl trusts the test CA for a name mapped
//! to loopback, and the upstream records what it was sent.

use std::process::Command;

use corral_testsupport::process::output;
use corral_testsupport::tls::TestCa;
use corral_testsupport::upstream::{Reply, Upstream};

#[test]
fn curl_reaches_an_https_upstream_named_through_resolve_and_trusts_the_test_ca() {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["mirror.corp.example"]);
    let upstream = Upstream::https(&leaf, |req| Reply::ok(format!("saw {}", req.target)));
    let out = output(Command::new("curl").args([
        "-sS",
        "--noproxy",
        "*",
        "--cacert",
        ca.ca_path().to_str().unwrap(),
        "--resolve",
        &format!("mirror.corp.example:{}:127.0.0.1", upstream.port()),
        &format!("https://mirror.corp.example:{}/latest?x=1", upstream.port()),
    ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "saw /latest?x=1");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        seen[0].header("host"),
        Some(format!("mirror.corp.example:{}", upstream.port()).as_str())
    );
}

#[test]
fn curl_refuses_an_upstream_whose_certificate_names_another_host() {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["other.example"]);
    let upstream = Upstream::https(&leaf, |_| Reply::ok("never"));
    let out = output(Command::new("curl").args([
        "-sS",
        "--noproxy",
        "*",
        "--cacert",
        ca.ca_path().to_str().unwrap(),
        "--resolve",
        &format!("mirror.corp.example:{}:127.0.0.1", upstream.port()),
        &format!("https://mirror.corp.example:{}/", upstream.port()),
    ]));
    assert!(!out.status.success());
    assert!(upstream.requests().is_empty());
}

#[test]
fn the_ordinary_user_is_not_root_and_owns_its_temp_home() {
    let Some(user) = corral_testsupport::user::ordinary_user() else {
        eprintln!("not root: the current user is already ordinary");
        return;
    };
    assert_ne!(user.uid, 0);
    let home = user.temp_home();
    let out = output(
        user.command("sh")
            .args(["-c", "id -u; touch \"$HOME/x\" && echo wrote"])
            .env("HOME", home.path()),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [user.uid.to_string().as_str(), "wrote"]
    );
}

#[test]
fn a_network_namespace_has_only_loopback() {
    if !corral_testsupport::user::is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let ns = corral_testsupport::netns::NetNs::new();
    let out = output(ns.command("ip").args(["-o", "link"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(": lo:"), "{text}");
}
