//! The egress proxy, end to end: the real `corral proxy` binary, real clients (curl, wget,
//! git, python, node), real TLS upstreams on loopback given names by `--resolve`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use corral_testsupport::git_server::GitServer;
use corral_testsupport::netns::NetNs;
use corral_testsupport::process::{corral_bin, free_port, output, Background};
use corral_testsupport::tls::TestCa;
use corral_testsupport::upstream::{Reply, Upstream};
use serde_json::Value;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A running `corral proxy` with its policy file and decision log.
struct Proxy {
    process: Background,
    addr: SocketAddr,
    admin: SocketAddr,
    dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts the proxy with `policy`, attributing every connection to `identity` (or, with
    /// `None`, resolving the client through /proc), and `resolve` entries.
    fn start(policy: &str, identity: Option<&str>, resolve: &[String], extra: &[&str]) -> Proxy {
        Proxy::start_in(None, policy, identity, resolve, extra)
    }

    fn start_in(
        netns: Option<&NetNs>,
        policy: &str,
        identity: Option<&str>,
        resolve: &[String],
        extra: &[&str],
    ) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let policy_path = dir.path().join("policy.yaml");
        std::fs::write(&policy_path, policy).unwrap();
        let port = free_port(LOCALHOST);
        let admin_port = free_port(LOCALHOST);
        let addr = SocketAddr::new(LOCALHOST, port);
        let admin = SocketAddr::new(LOCALHOST, admin_port);
        let mut cmd = match netns {
            Some(ns) => ns.command(corral_bin()),
            None => Command::new(corral_bin()),
        };
        cmd.arg("proxy")
            .arg("--policy")
            .arg(&policy_path)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--admin")
            .arg(admin.to_string())
            .arg("--log")
            .arg(log_path(&dir));
        if let Some(exe) = identity {
            cmd.arg("--identity-exe").arg(exe);
        }
        for r in resolve {
            cmd.arg("--resolve").arg(r);
        }
        cmd.args(extra);
        let mut process = Background::spawn("corral proxy", cmd);
        if netns.is_some() {
            process.wait_for_stderr("corral proxy listening", Duration::from_secs(20));
        } else {
            process.wait_for_port(addr, Duration::from_secs(20));
        }
        Proxy {
            process,
            addr,
            admin,
            dir,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn policy_path(&self) -> PathBuf {
        self.dir.path().join("policy.yaml")
    }

    fn log_path(&self) -> PathBuf {
        log_path(&self.dir)
    }

    /// Every decision record so far.
    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad log line {l}: {e}")))
            .collect()
    }

    /// The records for `host`, waiting briefly for them to be written (a tunnel's record is
    /// written when it closes, which may be just after the client exits).
    fn records_for(&self, host: &str) -> Vec<Value> {
        for _ in 0..250 {
            let found: Vec<Value> = self
                .records()
                .into_iter()
                .filter(|r| r["host"] == host)
                .collect();
            if !found.is_empty() {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no decision record for {host}\n--- log ---\n{}\n--- stderr ---\n{}",
            std::fs::read_to_string(self.log_path()).unwrap_or_default(),
            self.process.stderr()
        );
    }
}

/// The decision log lives apart from the policy: the policy watcher waits for its
/// directory to be quiet, which a busy log in the same directory would prevent.
fn log_path(dir: &tempfile::TempDir) -> PathBuf {
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    logs.join("decisions.log")
}

fn resolve(host: &str, addr: SocketAddr) -> String {
    format!("{host}:{}:{}", addr.port(), addr.ip())
}

/// A command with no proxy settings inherited from the environment.
fn clean(program: impl AsRef<std::ffi::OsStr>) -> Command {
    without_proxy_env(Command::new(program))
}

/// `cmd` without the proxy settings of this environment.
fn without_proxy_env(mut cmd: Command) -> Command {
    for var in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn policy(groups: &str) -> String {
    format!("version: 1\nnetwork_policies:\n{groups}")
}

/// One group allowing `binary` to reach each (host, port), loopback addresses permitted.
fn group(name: &str, binary: &str, endpoints: &[(&str, u16)]) -> String {
    let mut s = format!("  {name}:\n    endpoints:\n");
    for (h, p) in endpoints {
        s.push_str(&format!(
            "      - {{ host: {h}, port: {p}, allowed_ips: [127.0.0.0/8] }}\n"
        ));
    }
    s.push_str(&format!("    binaries:\n      - {{ path: {binary} }}\n"));
    s
}

/// Sends raw bytes to the proxy and returns everything it answers before closing.
fn raw(proxy: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

#[test]
fn curl_reaches_the_allowed_mirror_and_is_refused_elsewhere_with_a_403_naming_it() {
    let ca = TestCa::new();
    let mirror = Upstream::https(&ca.leaf(&["mirror.test"]), |_| Reply::ok("release bits\n"));
    let other = Upstream::echo(None);
    let proxy = Proxy::start(
        &policy(&group(
            "mirror",
            "/usr/bin/curl",
            &[("mirror.test", mirror.port())],
        )),
        Some("/usr/bin/curl"),
        &[
            resolve("mirror.test", mirror.addr()),
            resolve("example.test", other.addr()),
        ],
        &[],
    );
    let ok = output(
        clean("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(ca.ca_path())
            .args(["-x", &proxy.url()])
            .arg(format!("https://mirror.test:{}/release", mirror.port())),
    );
    assert!(ok.status.success(), "{}", text(&ok));
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "release bits\n");

    // Plain HTTP through the proxy shows the refusal body and header.
    let denied = output(
        clean("curl")
            .args(["-sS", "-D", "-", "-x", &proxy.url()])
            .arg(format!("http://example.test:{}/x", other.port())),
    );
    let out = String::from_utf8_lossy(&denied.stdout).into_owned();
    assert!(out.starts_with("HTTP/1.1 403"), "{}", text(&denied));
    assert!(out.contains("X-Corral-Error: no_endpoint"), "{out}");
    let body: Value = serde_json::from_str(&out[out.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["error"], "no_endpoint");
    assert_eq!(body["binary"], "/usr/bin/curl");
    assert_eq!(body["host"], "example.test");
    assert_eq!(body["port"], other.port());
    assert!(
        body["suggestion"]
            .as_str()
            .unwrap()
            .contains("example.test"),
        "{body}"
    );
    assert!(
        other.requests().is_empty(),
        "a refused request reached the upstream"
    );

    // CONNECT refused too; curl reports the proxy's 403.
    let tunnel = output(
        clean("curl")
            .args(["-sS", "--cacert"])
            .arg(ca.ca_path())
            .args(["-x", &proxy.url()])
            .arg(format!("https://example.test:{}/", other.port())),
    );
    assert!(!tunnel.status.success());
    assert!(
        String::from_utf8_lossy(&tunnel.stderr).contains("403"),
        "{}",
        text(&tunnel)
    );

    let allowed = proxy.records_for("mirror.test");
    assert_eq!(allowed[0]["decision"], "allow");
    assert_eq!(allowed[0]["kind"], "connect");
    assert_eq!(allowed[0]["policy"], "mirror");
    assert!(allowed[0]["bytes_down"].as_u64().unwrap() > 0);
    let refused = proxy.records_for("example.test");
    assert_eq!(refused.len(), 2);
    assert!(refused
        .iter()
        .all(|r| r["decision"] == "deny" && r["binary"] == "/usr/bin/curl"));
}

#[test]
fn wget_python_and_node_are_allowed_and_refused_as_the_policy_says() {
    let ca = TestCa::new();
    let api = Upstream::https(&ca.leaf(&["api.test"]), |req| {
        Reply::ok(format!("api says hi to {}\n", req.target))
    });
    let python = corral_testsupport::deps::python();
    let python_exe = std::fs::canonicalize(&python).unwrap();
    let groups = [
        group("wget", "/usr/bin/wget", &[("api.test", api.port())]),
        group(
            "python",
            python_exe.to_str().unwrap(),
            &[("api.test", api.port())],
        ),
        group("node", "/usr/bin/node", &[("api.test", api.port())]),
    ]
    .concat();
    let resolves = [
        resolve("api.test", api.addr()),
        resolve("blocked.test", api.addr()),
    ];
    let url = format!("https://api.test:{}/v1", api.port());
    let blocked = format!("https://blocked.test:{}/v1", api.port());

    // wget
    let proxy = Proxy::start(&policy(&groups), Some("/usr/bin/wget"), &resolves, &[]);
    let wget = |target: &str| {
        output(
            clean("wget")
                .args(["-q", "-O", "-", "--ca-certificate"])
                .arg(ca.ca_path())
                .env("https_proxy", proxy.url())
                .arg(target),
        )
    };
    let ok = wget(&url);
    assert!(ok.status.success(), "{}", text(&ok));
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "api says hi to /v1\n");
    let no = wget(&blocked);
    assert!(!no.status.success(), "{}", text(&no));
    assert_eq!(
        proxy.records_for("blocked.test")[0]["binary"],
        "/usr/bin/wget"
    );
    drop(proxy);

    // python requests
    let proxy = Proxy::start(&policy(&groups), python_exe.to_str(), &resolves, &[]);
    let script = r#"
import sys, requests
try:
    r = requests.get(sys.argv[1], proxies={"https": sys.argv[2]}, verify=sys.argv[3], timeout=30)
    print("status", r.status_code, r.text.strip())
except requests.exceptions.ProxyError as e:
    print("proxy error", e)
"#;
    let py = |target: &str| {
        output(
            clean(&python)
                .args(["-c", script, target, &proxy.url()])
                .arg(ca.ca_path()),
        )
    };
    let ok = py(&url);
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "status 200 api says hi to /v1",
        "{}",
        text(&ok)
    );
    let no = py(&blocked);
    let out = String::from_utf8_lossy(&no.stdout);
    assert!(
        out.contains("proxy error") && out.contains("403"),
        "{}",
        text(&no)
    );
    drop(proxy);

    // node: CONNECT by hand with an http.Agent-free request (node 20 has no env proxy).
    let proxy = Proxy::start(&policy(&groups), Some("/usr/bin/node"), &resolves, &[]);
    let script = r#"
const http = require('http'), tls = require('tls'), fs = require('fs');
const [proxyHost, proxyPort, host, port, ca] = process.argv.slice(1);
const req = http.request({ host: proxyHost, port: +proxyPort, method: 'CONNECT', path: `${host}:${port}` });
req.on('connect', (res, socket) => {
  if (res.statusCode !== 200) { console.log('connect', res.statusCode, res.headers['x-corral-error']); socket.destroy(); return; }
  const s = tls.connect({ socket, servername: host, ca: fs.readFileSync(ca) }, () => {
    s.write(`GET /v1 HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
  });
  let data = ''; s.on('data', d => data += d); s.on('end', () => console.log(data.split('\r\n\r\n')[1].trim()));
});
req.on('error', e => console.log('error', e.message));
req.end();
"#;
    let node = |host: &str| {
        output(
            clean("node")
                .args(["-e", script])
                .arg(proxy.addr.ip().to_string())
                .arg(proxy.addr.port().to_string())
                .arg(host)
                .arg(api.port().to_string())
                .arg(ca.ca_path()),
        )
    };
    let ok = node("api.test");
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "api says hi to /v1",
        "{}",
        text(&ok)
    );
    let no = node("blocked.test");
    assert_eq!(
        String::from_utf8_lossy(&no.stdout).trim(),
        "connect 403 no_endpoint",
        "{}",
        text(&no)
    );
}

#[test]
fn git_clones_an_allowed_repository_over_https_and_is_refused_another_host() {
    let ca = TestCa::new();
    let server = GitServer::start(&ca, &["git.corp.test", "mirror-git.test"]);
    let git_remote = "/usr/lib/git-core/git-remote-https";
    let proxy = Proxy::start(
        &policy(&group(
            "github",
            git_remote,
            &[("git.corp.test", server.port())],
        )),
        Some(git_remote),
        &[
            resolve("git.corp.test", server.addr()),
            resolve("mirror-git.test", server.addr()),
        ],
        &[],
    );
    let work = tempfile::tempdir().unwrap();
    let clone = |host: &str, dest: &str| {
        output(
            clean("git")
                .current_dir(work.path())
                .env("GIT_SSL_CAINFO", ca.ca_path())
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("HOME", work.path())
                .env("GIT_TERMINAL_PROMPT", "0")
                .args(["-c", &format!("http.proxy={}", proxy.url())])
                .args(["clone", "-q"])
                .arg(format!("https://{host}:{}/repo.git", server.port()))
                .arg(dest),
        )
    };
    let ok = clone("git.corp.test", "ok");
    assert!(ok.status.success(), "{}", text(&ok));
    assert_eq!(
        std::fs::read_to_string(work.path().join("ok/README.md")).unwrap(),
        corral_testsupport::git_server::README.1
    );
    let before = server.requests().len();
    let no = clone("mirror-git.test", "no");
    assert!(!no.status.success());
    assert!(
        String::from_utf8_lossy(&no.stderr).contains("403"),
        "{}",
        text(&no)
    );
    assert_eq!(
        server.requests().len(),
        before,
        "the refused clone reached the server"
    );
    assert_eq!(
        proxy.records_for("mirror-git.test")[0]["binary"],
        git_remote
    );
}

#[test]
fn a_redirect_to_a_storage_host_missing_from_the_policy_is_refused_and_suggest_adds_exactly_it() {
    let ca = TestCa::new();
    let storage = Upstream::https(&ca.leaf(&["storage.test"]), |_| Reply::ok("signed blob\n"));
    let storage_url = format!("https://storage.test:{}/blob?sig=abc", storage.port());
    let mirror = Upstream::https(&ca.leaf(&["mirror.test"]), move |_| {
        Reply::redirect(&storage_url)
    });
    let proxy = Proxy::start(
        &policy(&format!(
            "  # the release mirror\n{}",
            group(
                "mirror_downloads",
                "/usr/bin/curl",
                &[("mirror.test", mirror.port())]
            )
        )),
        Some("/usr/bin/curl"),
        &[
            resolve("mirror.test", mirror.addr()),
            resolve("storage.test", storage.addr()),
        ],
        &[],
    );
    let fetch = || {
        output(
            clean("curl")
                .args(["-sS", "-L", "--fail", "--cacert"])
                .arg(ca.ca_path())
                .args(["-x", &proxy.url()])
                .arg(format!(
                    "https://mirror.test:{}/claude/latest",
                    mirror.port()
                )),
        )
    };
    let out = fetch();
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(
        mirror.requests().len(),
        1,
        "the mirror answered the first request"
    );
    assert!(storage.requests().is_empty());
    let refused = proxy.records_for("storage.test");
    assert_eq!(refused[0]["decision"], "deny");
    assert_eq!(refused[0]["error"], "no_endpoint");
    assert_eq!(refused[0]["port"], storage.port());

    // Suggest: exactly the storage host, merged into the group that already lists curl.
    let suggest = |apply: bool| {
        let mut cmd = Command::new(corral_bin());
        cmd.args(["policy", "suggest", "--from"])
            .arg(proxy.log_path())
            .arg("--policy")
            .arg(proxy.policy_path());
        if apply {
            cmd.arg("--apply");
        }
        output(&mut cmd)
    };
    let out = suggest(false);
    assert!(out.status.success(), "{}", text(&out));
    let yaml = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        yaml,
        format!(
            "network_policies:\n  mirror_downloads:  # existing group: append to its endpoints; lets through: /usr/bin/curl only\n    endpoints:\n      - {{ host: storage.test, port: {} }}\n",
            storage.port()
        )
    );
    let out = suggest(true);
    assert!(out.status.success(), "{}", text(&out));
    let edited = std::fs::read_to_string(proxy.policy_path()).unwrap();
    assert!(
        edited.contains("  # the release mirror\n"),
        "comments are kept:\n{edited}"
    );
    assert!(edited.contains(&format!(
        "      - {{ host: storage.test, port: {} }}\n",
        storage.port()
    )));
    // A second run has nothing left to add.
    let out = suggest(false);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already allowed"),
        "{}",
        text(&out)
    );
    // The applied policy is valid for a fresh proxy, and the redirect chain now works.
    // (Storage is loopback: the group's allowed_ips does not cover it, so add it to the edit.)
    let edited = edited.replace(
        &format!("{{ host: storage.test, port: {} }}", storage.port()),
        &format!(
            "{{ host: storage.test, port: {}, allowed_ips: [127.0.0.0/8] }}",
            storage.port()
        ),
    );
    std::fs::write(proxy.policy_path(), &edited).unwrap();
    let proxy2 = Proxy::start(
        &edited,
        Some("/usr/bin/curl"),
        &[
            resolve("mirror.test", mirror.addr()),
            resolve("storage.test", storage.addr()),
        ],
        &[],
    );
    let out = output(
        clean("curl")
            .args(["-sS", "-L", "--fail", "--cacert"])
            .arg(ca.ca_path())
            .args(["-x", &proxy2.url()])
            .arg(format!(
                "https://mirror.test:{}/claude/latest",
                mirror.port()
            )),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "signed blob\n");
}

#[test]
fn allowed_names_that_resolve_to_special_addresses_are_refused_unless_allowed_ips_covers_them() {
    // The proxy and its clients run in a fresh network namespace with only loopback, so even
    // a broken guard could not send a packet off this machine.
    let ns = NetNs::new();
    let web_root = tempfile::tempdir().unwrap();
    let mut inside = ns.command(corral_testsupport::deps::python());
    inside
        .args(["-u", "-c", "import http.server as h; h.test(HandlerClass=h.SimpleHTTPRequestHandler, port=18080, bind='127.0.0.2')"])
        .current_dir(web_root.path());
    let web = Background::spawn("python http.server", inside);
    for _ in 0..500 {
        if web.stdout().contains("Serving HTTP") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        web.stdout().contains("Serving HTTP"),
        "web server in the namespace: {}",
        web.stderr()
    );
    let names = [
        ("loop.test", "127.0.0.2"),
        ("meta.test", "169.254.169.254"),
        ("private.test", "10.1.2.3"),
        ("mapped.test", "[::ffff:127.0.0.2]"),
        ("cgnat.test", "100.64.0.9"),
        ("ula.test", "[fd00:ec2::254]"),
        ("nat64.test", "[64:ff9b::7f00:2]"),
        ("trusted.test", "127.0.0.2"),
    ];
    let mut groups = String::from("  internal:\n    endpoints:\n");
    for (name, _) in &names[..7] {
        groups.push_str(&format!("      - {{ host: {name}, port: 18080 }}\n"));
    }
    groups.push_str("      - { host: trusted.test, port: 18080, allowed_ips: [127.0.0.0/8] }\n");
    groups.push_str("      - { host: 127.0.0.2, port: 18080 }\n");
    // An operator's --connect-to route is trusted: no allowed_ips needed (the policy still
    // has to list the name).
    groups.push_str("      - { host: routed.test, port: 80 }\n");
    groups.push_str("    binaries:\n      - { path: /usr/bin/curl }\n");
    let resolves: Vec<String> = names
        .iter()
        .map(|(n, a)| format!("{n}:18080:{a}"))
        .collect();
    let proxy = Proxy::start_in(
        Some(&ns),
        &policy(&groups),
        Some("/usr/bin/curl"),
        &resolves,
        &[
            "--connect-to",
            "routed.test:80:127.0.0.2:18080",
            "--connect-to",
            "unlisted-route.test:80:127.0.0.2:18080",
        ],
    );
    let curl = |url: &str| {
        let mut cmd = without_proxy_env(ns.command("curl"));
        let out = output(
            cmd.args(["-sS", "-o", "/dev/null", "-D", "-", "-x", &proxy.url()])
                .arg(url),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The guard lets through what allowed_ips covers.
    let trusted = curl("http://trusted.test:18080/");
    assert!(
        trusted.starts_with("HTTP/1.1 200"),
        "trusted.test: {trusted}"
    );
    for (name, addr) in &names[..7] {
        let head = curl(&format!("http://{name}:18080/"));
        assert!(head.starts_with("HTTP/1.1 403"), "{name} -> {addr}: {head}");
        assert!(
            head.contains("X-Corral-Error: address_class_refused"),
            "{name}: {head}"
        );
    }
    // An IP literal gets the same classification.
    let head = curl("http://127.0.0.2:18080/");
    assert!(head.starts_with("HTTP/1.1 403"), "literal: {head}");
    let routed = curl("http://routed.test/");
    assert!(routed.starts_with("HTTP/1.1 200"), "routed.test: {routed}");
    assert_eq!(
        proxy.records_for("routed.test")[0]["addresses"][0],
        "127.0.0.2:18080",
        "the log shows where the route led"
    );
    let unlisted = curl("http://unlisted-route.test/");
    assert!(
        unlisted.contains("X-Corral-Error: no_endpoint"),
        "a route does not allow a name the policy does not list: {unlisted}"
    );
    let meta = proxy.records_for("meta.test");
    assert_eq!(meta[0]["addresses"][0], "169.254.169.254");
    assert!(meta[0]["suggestion"]
        .as_str()
        .unwrap()
        .contains("allowed_ips"));
    let mapped = proxy.records_for("mapped.test");
    assert_eq!(
        mapped[0]["addresses"][0], "127.0.0.2",
        "mapped addresses are canonicalised"
    );
}

/// logrotate renames the decision log (no signal, no copytruncate): the next record goes
/// to a new file at the configured path.
#[test]
fn the_decision_log_follows_logrotate() {
    let up = Upstream::echo(None);
    let proxy = Proxy::start(
        &policy(&group("g", "/usr/bin/curl", &[("echo.test", up.port())])),
        Some("/usr/bin/curl"),
        &[resolve("echo.test", up.addr())],
        &[],
    );
    let get = |path: &str| {
        let answer = raw(
            proxy.addr,
            format!(
                "GET http://echo.test:{0}/{path} HTTP/1.1\r\nHost: echo.test:{0}\r\nConnection: close\r\n\r\n",
                up.port()
            )
            .as_bytes(),
        );
        assert_eq!(status_of(&answer), 200, "{answer}");
    };
    let logged = |file: &Path, path: &str| {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .contains(&format!("\"path\":\"/{path}\""))
    };
    let wait_logged = |file: &Path, path: &str| {
        for _ in 0..250 {
            if logged(file, path) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("/{path} never logged in {}", file.display());
    };
    get("before-rotation");
    wait_logged(&proxy.log_path(), "before-rotation");
    let rotated = proxy.log_path().with_extension("log.1");
    std::fs::rename(proxy.log_path(), &rotated).unwrap();
    get("after-rotation");
    wait_logged(&proxy.log_path(), "after-rotation");
    assert!(!logged(&rotated, "after-rotation"));
    assert!(!logged(&proxy.log_path(), "before-rotation"));
    let mode = std::fs::metadata(proxy.log_path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the new log is as private as the first");
}

#[test]
fn malformed_requests_get_400_408_or_431_and_the_proxy_keeps_serving() {
    let up = Upstream::echo(None);
    let proxy = Proxy::start(
        &policy(&group("g", "/usr/bin/curl", &[("echo.test", up.port())])),
        Some("/usr/bin/curl"),
        &[resolve("echo.test", up.addr())],
        &["--header-timeout", "1", "--max-header-bytes", "4096"],
    );
    let cases: [(&[u8], u16); 7] = [
        (b"HELLO\r\n\r\n", 400),
        (b"GET /relative HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"CONNECT echo.test:0 HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT echo.test: HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT echo.test HTTP/1.1\r\n\r\n", 400),
        (b"GET https://echo.test/ HTTP/1.1\r\n\r\n", 400),
        (
            b"GET http://echo.test/ HTTP/1.1\r\nHost: other.test\r\n\r\n",
            400,
        ),
    ];
    for (request, want) in cases {
        let answer = raw(proxy.addr, request);
        assert_eq!(
            status_of(&answer),
            want,
            "{:?} -> {answer}",
            String::from_utf8_lossy(request)
        );
        assert!(answer.contains("X-Corral-Error: "), "{answer}");
    }
    let huge = format!(
        "GET http://echo.test/ HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(8000)
    );
    assert_eq!(status_of(&raw(proxy.addr, huge.as_bytes())), 431);
    // Slow headers: half a head, then silence.
    let slow = raw(proxy.addr, b"GET http://echo.test/ HTTP/1.1\r\nX-Slow:");
    assert_eq!(status_of(&slow), 408);
    // Still serving; keep-alive carries a fresh decision per request on one connection.
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let port = up.port();
    s.write_all(
        format!("GET http://echo.test:{port}/one HTTP/1.1\r\nHost: echo.test:{port}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let first = read_response(&mut s);
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        first.ends_with("hello from upstream: GET /one\n"),
        "{first}"
    );
    s.write_all(format!("GET http://nope.test:{port}/two HTTP/1.1\r\nHost: nope.test:{port}\r\n\r\nGET http://echo.test:{port}/three HTTP/1.1\r\n\r\n").as_bytes()).unwrap();
    let second = read_response(&mut s);
    assert!(second.starts_with("HTTP/1.1 403"), "{second}");
    let third = read_response(&mut s);
    assert!(
        third.ends_with("hello from upstream: GET /three\n"),
        "{third}"
    );
    let recorded = up.requests();
    assert_eq!(recorded.len(), 2);
    assert_eq!(
        recorded[0].header("host"),
        Some(format!("echo.test:{port}").as_str())
    );
    assert!(recorded[0].header("proxy-connection").is_none());
}

/// Reads one response with a Content-Length body.
fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "connection closed mid-head: {buf:?}"
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    buf.extend_from_slice(&body);
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn the_proc_resolver_names_the_real_client_executable() {
    let up = Upstream::echo(None);
    let curl = std::fs::canonicalize("/usr/bin/curl").unwrap();
    let proxy = Proxy::start(
        &policy(&group(
            "g",
            curl.to_str().unwrap(),
            &[("echo.test", up.port())],
        )),
        None,
        &[resolve("echo.test", up.addr())],
        &[],
    );
    let out = output(
        clean("curl")
            .args(["-sS", "--fail", "-x", &proxy.url()])
            .arg(format!("http://echo.test:{}/who", up.port())),
    );
    assert!(out.status.success(), "{}", text(&out));
    let rec = &proxy.records_for("echo.test")[0];
    assert_eq!(rec["binary"], curl.to_str().unwrap());
    assert_eq!(rec["decision"], "allow");
    assert!(rec["pid"].as_u64().is_some());
    let sum = output(Command::new("sha256sum").arg(&curl));
    let sum = String::from_utf8_lossy(&sum.stdout);
    assert_eq!(
        rec["sha256"],
        sum.split_whitespace().next().unwrap(),
        "{rec}"
    );
    assert!(!rec["ancestors"].as_array().unwrap().is_empty(), "{rec}");
    // python is not in the policy: refused, and named.
    let py = output(clean(corral_testsupport::deps::python()).args([
        "-c",
        &format!(
            "import urllib.request as u\nh=u.ProxyHandler({{'http':'{}'}})\ntry:\n  u.build_opener(h).open('http://echo.test:{}/')\nexcept Exception as e:\n  print(e.code)",
            proxy.url(),
            up.port()
        ),
    ]));
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        "403",
        "{}",
        text(&py)
    );
    let recs = proxy.records_for("echo.test");
    let py_exe = std::fs::canonicalize(corral_testsupport::deps::python()).unwrap();
    assert!(
        recs.iter()
            .any(|r| r["decision"] == "deny" && r["binary"] == py_exe.to_str().unwrap()),
        "{recs:?}"
    );
}

#[test]
fn metrics_count_connections_and_decisions() {
    let up = Upstream::echo(None);
    let proxy = Proxy::start(
        &policy(&group("g", "/usr/bin/curl", &[("echo.test", up.port())])),
        Some("/usr/bin/curl"),
        &[resolve("echo.test", up.addr())],
        &[],
    );
    for host in ["echo.test", "nope.test"] {
        let _ = output(
            clean("curl")
                .args(["-sS", "-x", &proxy.url()])
                .arg(format!("http://{host}:{}/", up.port())),
        );
    }
    proxy.records_for("echo.test");
    proxy.records_for("nope.test");
    let metrics = raw(proxy.admin, b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("corral_proxy_decisions_total{decision=\"allow\",reason=\"\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("corral_proxy_decisions_total{decision=\"deny\",reason=\"no_endpoint\"} 1"),
        "{metrics}"
    );
    // Two clients, plus the readiness probe of Proxy::start.
    assert!(
        metrics.contains("corral_proxy_connections_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("corral_proxy_setup_seconds_count 2"),
        "{metrics}"
    );
}

/// The policy generation the proxy reports on /metrics.
fn generation(admin: SocketAddr) -> u64 {
    raw(admin, b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n")
        .lines()
        .find_map(|l| l.strip_prefix("corral_proxy_policy_generation "))
        .and_then(|v| v.trim().parse().ok())
        .expect("policy generation on /metrics")
}

#[test]
fn reloading_under_load_never_allows_what_the_policy_in_force_refused() {
    let up = Upstream::echo(None);
    let a = policy(&group("g", "/usr/bin/curl", &[("a.test", up.port())]));
    let b = policy(&group("g", "/usr/bin/curl", &[("b.test", up.port())]));
    let proxy = Proxy::start(
        &a,
        Some("/usr/bin/curl"),
        &[resolve("a.test", up.addr()), resolve("b.test", up.addr())],
        &[],
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = up.port();
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let stop = stop.clone();
            let addr = proxy.addr;
            std::thread::spawn(move || {
                // Kept-alive connections: every request is decided afresh.
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let host = if (n + i) % 2 == 0 { "a.test" } else { "b.test" };
                    let sent = s.write_all(
                        format!(
                            "GET http://{host}:{port}/{n} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"
                        )
                        .as_bytes(),
                    );
                    // A reload that refuses a kept-alive connection's last request closes
                    // it (docs/proxy.md): like any HTTP client, open another and resend.
                    let mut probe = [0u8; 1];
                    if sent.is_err() || !matches!(s.peek(&mut probe), Ok(1)) {
                        s = TcpStream::connect(addr).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                        continue;
                    }
                    let answer = read_response(&mut s);
                    let status = status_of(&answer);
                    assert!(status == 200 || status == 403, "{answer}");
                    n += 1;
                }
                n
            })
        })
        .collect();
    // generation → which policy (true = a). Each switch waits until the proxy reports it.
    let mut in_force: Vec<(u64, bool)> = vec![(1, true)];
    let mut current = 1;
    for round in 0..6 {
        let to_a = round % 2 == 1;
        let tmp = proxy.dir.path().join("policy.yaml.tmp");
        std::fs::write(&tmp, if to_a { &a } else { &b }).unwrap();
        std::fs::rename(&tmp, proxy.policy_path()).unwrap();
        let mut waited = 0;
        while generation(proxy.admin) == current {
            waited += 1;
            assert!(
                waited < 1500,
                "the proxy never reloaded the policy\n--- stderr ---\n{}\n--- log tail ---\n{:?}",
                proxy.process.stderr(),
                proxy.records().iter().rev().take(5).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        current = generation(proxy.admin);
        in_force.push((current, to_a));
        std::thread::sleep(Duration::from_millis(150));
    }
    // An invalid file keeps the last good policy (b, after six switches) in force.
    std::fs::write(
        proxy.policy_path(),
        "version: 1\nnetwork_policies:\n  g: [\n",
    )
    .unwrap();
    let mut process = proxy.process;
    let stderr = process.wait_for_stderr("keeping the last good policy", Duration::from_secs(30));
    assert!(
        stderr.contains("policy.yaml:"),
        "the error names file:line:col\n{stderr}"
    );
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(total > 0);
    assert_eq!(
        generation(proxy.admin),
        current,
        "the invalid file was not applied"
    );

    // Identical refusals fold into summary lines, the last written when the proxy stops.
    process.signal(15);
    process.wait();
    let proxy = Proxy { process, ..proxy };
    let records = proxy.records();
    let mut checked = 0;
    for r in records.iter().filter(|r| r["kind"] == "http") {
        let generation = r["policy_generation"].as_u64().unwrap();
        // A closed kept-alive connection's record: the policy of its generation refuses
        // the connection's last request.
        let revoked = r["decision"] == "revoked";
        let is_a = in_force
            .iter()
            .rev()
            .find(|(g, _)| *g <= generation)
            .map(|(_, a)| *a)
            .unwrap();
        let host = r["host"].as_str().unwrap();
        let should_allow = (host == "a.test") == is_a;
        assert_eq!(
            r["decision"] == "allow",
            should_allow,
            "generation {generation} ({}) decided {r}",
            if is_a { "policy a" } else { "policy b" }
        );
        if !revoked {
            checked += r["repeated"]["count"].as_u64().unwrap_or(1) as usize;
        }
    }
    assert_eq!(checked, total);
    let generations: std::collections::BTreeSet<u64> = records
        .iter()
        .filter_map(|r| r["policy_generation"].as_u64())
        .collect();
    assert!(generations.len() >= 2, "requests saw only {generations:?}");
}

#[test]
fn allowed_connections_are_chained_through_a_corporate_upstream_proxy() {
    // tinyproxy plays the corporate proxy. Destinations are IP literals, so that nothing
    // (neither corral nor tinyproxy) ever asks DNS.
    let ca = TestCa::new();
    let secure = Upstream::https(&ca.leaf(&["127.0.0.1"]), |_| Reply::ok("via corp\n"));
    let plain = Upstream::echo(None);
    let dir = tempfile::tempdir().unwrap();
    let tp_port = free_port(LOCALHOST);
    let conf = dir.path().join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "User nobody\nGroup nogroup\nPort {tp_port}\nListen 127.0.0.1\nLogLevel Critical\n"
        ),
    )
    .unwrap();
    let mut tinyproxy = Command::new("tinyproxy");
    tinyproxy.arg("-d").arg("-c").arg(&conf);
    let mut corp = Background::spawn("tinyproxy", tinyproxy);
    corp.wait_for_port(SocketAddr::new(LOCALHOST, tp_port), Duration::from_secs(20));
    let groups = format!(
        "  corp:\n    endpoints:\n      - {{ host: 127.0.0.1, ports: [{}, {}], allowed_ips: [127.0.0.0/8] }}\n      - {{ host: 169.254.169.254, port: 80 }}\n    binaries:\n      - {{ path: /usr/bin/curl }}\n",
        secure.port(),
        plain.port()
    );
    let proxy = Proxy::start(
        &policy(&groups),
        Some("/usr/bin/curl"),
        &[],
        &["--upstream-proxy", &format!("http://127.0.0.1:{tp_port}")],
    );
    let tunnel = output(
        clean("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(ca.ca_path())
            .args(["-x", &proxy.url()])
            .arg(format!("https://127.0.0.1:{}/", secure.port())),
    );
    assert!(tunnel.status.success(), "{}", text(&tunnel));
    assert_eq!(String::from_utf8_lossy(&tunnel.stdout), "via corp\n");
    let forward = output(
        clean("curl")
            .args(["-sS", "--fail", "-x", &proxy.url()])
            .arg(format!("http://127.0.0.1:{}/chained", plain.port())),
    );
    assert!(forward.status.success(), "{}", text(&forward));
    assert_eq!(
        String::from_utf8_lossy(&forward.stdout),
        "hello from upstream: GET /chained\n"
    );
    // The dialled address is the corporate proxy's.
    let records = proxy.records_for("127.0.0.1");
    assert!(records
        .iter()
        .all(|r| r["addresses"][0] == format!("127.0.0.1:{tp_port}")));
    // Policy and address classes still apply before anything is chained.
    let metadata = output(
        clean("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-x",
                &proxy.url(),
            ])
            .arg("http://169.254.169.254/latest/meta-data/"),
    );
    assert_eq!(String::from_utf8_lossy(&metadata.stdout), "403");
    let refused = proxy.records_for("169.254.169.254");
    assert_eq!(refused[0]["error"], "address_class_refused");
}

#[test]
fn out_of_file_descriptors_the_proxy_answers_503_or_502_and_recovers() {
    let up = Upstream::echo(None);
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.yaml");
    std::fs::write(
        &policy_path,
        policy(&group("g", "/usr/bin/curl", &[("echo.test", up.port())])),
    )
    .unwrap();
    let addr = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
    // A proxy with only 64 descriptors: a couple of dozen tunnels exhaust it.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" proxy --policy \"$1\" --listen \"$2\" --identity-exe /usr/bin/curl --resolve \"$3\" --log /dev/null")
        .arg(corral_bin())
        .arg(&policy_path)
        .arg(addr.to_string())
        .arg(resolve("echo.test", up.addr()));
    let mut proxy = Background::spawn("corral proxy (64 fds)", cmd);
    proxy.wait_for_port(addr, Duration::from_secs(20));
    let connect = format!(
        "CONNECT echo.test:{0} HTTP/1.1\r\nHost: echo.test:{0}\r\n\r\n",
        up.port()
    );
    let mut tunnels = Vec::new();
    let mut answers = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(connect.as_bytes()).unwrap();
        let mut head = [0u8; 12];
        let status = match s.read_exact(&mut head) {
            Ok(()) => status_of(&String::from_utf8_lossy(&head)),
            Err(e) => panic!("no answer from an exhausted proxy: {e}"),
        };
        *answers.entry(status).or_insert(0) += 1;
        tunnels.push(s);
    }
    eprintln!("answers with 64 descriptors: {answers:?}");
    assert!(
        answers.keys().all(|s| [200, 502, 503].contains(s)),
        "{answers:?}"
    );
    assert!(answers.get(&200).copied().unwrap_or(0) > 5, "{answers:?}");
    assert!(
        answers.get(&503).copied().unwrap_or(0) + answers.get(&502).copied().unwrap_or(0) > 0,
        "64 descriptors cannot hold 40 tunnels: {answers:?}"
    );
    assert!(
        proxy.stderr().contains("raise `ulimit -n`"),
        "the operator is not told why clients get 503\n{}",
        proxy.stderr()
    );
    // Descriptors free up: the proxy serves again.
    drop(tunnels);
    let mut served = false;
    for _ in 0..100 {
        let answer = raw(
            addr,
            format!(
                "GET http://echo.test:{0}/again HTTP/1.1\r\nHost: echo.test:{0}\r\nConnection: close\r\n\r\n",
                up.port()
            )
            .as_bytes(),
        );
        if answer.starts_with("HTTP/1.1 200") {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(served, "the proxy did not recover\n{}", proxy.stderr());
    proxy.signal(15);
    let _ = proxy.wait();
}

#[test]
fn a_private_address_is_reachable_only_for_the_endpoint_whose_allowed_ips_covers_it() {
    // Two namespaces joined by a veth pair: the proxy in one, an "internal" web server on
    // 10.200.0.2 in the other. Nothing here can reach a real network.
    let proxy_ns = NetNs::new();
    let internal_ns = NetNs::new();
    proxy_ns.link(&internal_ns, "10.200.0.1/24", "10.200.0.2/24");
    let web_root = tempfile::tempdir().unwrap();
    std::fs::write(web_root.path().join("index.html"), "internal wiki\n").unwrap();
    let mut server = internal_ns.command(corral_testsupport::deps::python());
    server
        .args(["-u", "-m", "http.server", "--bind", "10.200.0.2", "18081"])
        .current_dir(web_root.path());
    let web = Background::spawn("internal web server", server);
    for _ in 0..500 {
        if web.stdout().contains("Serving HTTP") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let groups = "  intranet:\n    endpoints:\n      - { host: wiki.corp.test, port: 18081, allowed_ips: [10.200.0.0/24] }\n      - { host: other.corp.test, port: 18081 }\n    binaries:\n      - { path: /usr/bin/curl }\n";
    let proxy = Proxy::start_in(
        Some(&proxy_ns),
        &policy(groups),
        Some("/usr/bin/curl"),
        &[
            "wiki.corp.test:18081:10.200.0.2".to_string(),
            "other.corp.test:18081:10.200.0.2".to_string(),
        ],
        &[],
    );
    let curl = |url: &str| {
        let mut cmd = without_proxy_env(proxy_ns.command("curl"));
        let out = output(cmd.args(["-sS", "-i", "-x", &proxy.url()]).arg(url));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let wiki = curl("http://wiki.corp.test:18081/");
    assert!(wiki.starts_with("HTTP/1.1 200"), "{wiki}");
    assert!(wiki.ends_with("internal wiki\n"), "{wiki}");
    let other = curl("http://other.corp.test:18081/");
    assert!(other.starts_with("HTTP/1.1 403"), "{other}");
    assert!(other.contains("10.200.0.2 (private)"), "{other}");
}
