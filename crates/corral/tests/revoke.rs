//! A reload that removes a grant closes what the grant kept open: a tunnel the new policy
//! refuses is cut with a `revoked` record, in `corral proxy` and inside `corral run`, and a
//! tunnel the new policy still allows carries on.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use corral_testsupport::process::Background;
use corral_testsupport::proxy::Proxy;
use corral_testsupport::sandbox::{runners, Sandbox, MODES};
use corral_testsupport::upstream::Upstream;
use corral_testsupport::user::{chown, Runner};
use serde_json::Value;

/// Opens a tunnel to `cut.test` and one to `kept.test` (both the echo server), pings the
/// first until the proxy cuts it, then checks the second still echoes. A minute without a
/// cut ends it (so a missing revocation fails instead of hanging).
const CLIENT_PY: &str = r#"
import socket, sys, time
proxy_host, proxy_port, port = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def tunnel(host):
    s = socket.create_connection((proxy_host, proxy_port), timeout=60)
    s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(1)
        if not d:
            sys.exit(f"{host}: the proxy closed before answering")
        head += d
    if not head.startswith(b"HTTP/1.1 200"):
        sys.exit(f"{host}: {head!r}")
    return s
def echo(s, text):
    s.sendall(text.encode() + b"\n")
    got = b""
    while not got.endswith(b"\n"):
        d = s.recv(4096)
        if not d:
            return None
        got += d
    return got.decode().strip()
cut, kept = tunnel("cut.test"), tunnel("kept.test")
assert echo(cut, "one") == "one" and echo(kept, "one") == "one"
print("open", flush=True)
give_up = time.time() + 60
try:
    while echo(cut, "ping") == "ping":
        if time.time() > give_up:
            sys.exit("the tunnel to cut.test was never cut")
        time.sleep(0.05)
except (ConnectionResetError, BrokenPipeError):
    pass
print("cut", flush=True)
print("kept", echo(kept, "after"), flush=True)
"#;

/// A TCP echo server on loopback (the slow, long-lived upstream).
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut writer = stream;
                let mut reader = writer.try_clone().unwrap();
                let mut buf = [0u8; 4096];
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 || writer.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

fn group(name: &str, host: &str, port: u16, binary: &str) -> String {
    format!(
        "  {name}:\n    endpoints:\n      - {{ host: {host}, port: {port}, allowed_ips: [127.0.0.0/8] }}\n    binaries:\n      - {{ path: {binary} }}\n"
    )
}

/// Both hosts allowed (`both`), or only `kept.test`.
fn policy(port: u16, binary: &str, both: bool) -> String {
    let mut p = format!(
        "version: 1\nnetwork_policies:\n{}",
        group("kept", "kept.test", port, binary)
    );
    if both {
        p.push_str(&group("cut", "cut.test", port, binary));
    }
    p
}

fn resolve(port: u16) -> Vec<String> {
    vec![
        format!("cut.test:{port}:127.0.0.1"),
        format!("kept.test:{port}:127.0.0.1"),
    ]
}

/// Waits (bounded) for the client to say `needle` on stdout.
fn wait_for_stdout(bg: &mut Background, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !bg.stdout().contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            bg.stdout(),
            bg.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The log's records, once it has one for `host` with `decision`.
fn wait_for_record(log: &Path, host: &str, decision: &str) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let records: Vec<Value> = std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if records
            .iter()
            .any(|r| r["host"] == host && r["decision"] == decision)
        {
            return records;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {decision} record for {host}: {records:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the client printed and the log says after the grant for `cut.test` was removed.
fn assert_revoked(stdout: &str, log: &Path) {
    assert!(stdout.contains("open\ncut\nkept after\n"), "{stdout}");
    let records = wait_for_record(log, "kept.test", "allow");
    let revoked: Vec<&Value> = records
        .iter()
        .filter(|r| r["decision"] == "revoked")
        .collect();
    assert_eq!(revoked.len(), 1, "{records:#?}");
    let r = revoked[0];
    assert_eq!(r["host"], "cut.test");
    assert_eq!(r["kind"], "connect");
    assert_eq!(r["error"], "no_endpoint");
    assert_eq!(r["policy_generation"], 2);
    assert!(r["bytes_down"].as_u64().unwrap() > 0, "{r}");
    assert!(
        r["reason"].as_str().unwrap().contains("no longer allows"),
        "{r}"
    );
}

#[test]
fn a_reload_cuts_the_tunnels_it_no_longer_allows_in_corral_proxy() {
    let port = echo_server();
    let python = std::fs::canonicalize("/usr/bin/python3").unwrap();
    let python = python.to_str().unwrap();
    let mut proxy = Proxy::start(&policy(port, python, true), python, &resolve(port), &[]);
    let mut client = Command::new(python);
    client
        .args(["-c", CLIENT_PY, "127.0.0.1"])
        .arg(proxy.listen.port().to_string())
        .arg(port.to_string());
    let mut client = Background::spawn("python client", client);
    wait_for_stdout(&mut client, "open");
    proxy.reload(&policy(port, python, false));
    let status = client.wait();
    assert!(status.success(), "{}\n{}", client.stdout(), client.stderr());
    assert_revoked(&client.stdout(), &proxy.log);
}

/// Sends `GET http://cut.test:PORT{path}` through the proxy on a connection of its own
/// and reads until the answer contains `until`; returns the connection, still open.
fn get_cut_test(proxy: &Proxy, port: u16, path: &str, until: &str) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(proxy.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let request =
        format!("GET http://cut.test:{port}{path} HTTP/1.1\r\nHost: cut.test:{port}\r\n\r\n");
    s.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(until) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    s
}

/// The one `revoked` record of the log, for a plain HTTP request to `path`.
fn assert_http_revoked(log: &Path, path: &str) {
    let records = wait_for_record(log, "cut.test", "revoked");
    let revoked: Vec<&Value> = records
        .iter()
        .filter(|r| r["decision"] == "revoked")
        .collect();
    assert_eq!(revoked.len(), 1, "{records:#?}");
    assert_eq!(revoked[0]["kind"], "http");
    assert_eq!(revoked[0]["path"], path);
    assert_eq!(revoked[0]["error"], "no_endpoint");
    assert_eq!(revoked[0]["policy_generation"], 2);
}

/// An idle kept-alive plain HTTP connection whose last request a reload refuses is closed
/// (the next request would be decided afresh anyway; an administrator revoking access
/// expects nothing of it left open).
#[test]
fn a_reload_closes_a_kept_alive_connection_whose_last_request_it_refuses() {
    let up = Upstream::echo(None);
    let port = up.port();
    let curl = "/usr/bin/curl";
    let mut proxy = Proxy::start(&policy(port, curl, true), curl, &resolve(port), &[]);
    let mut s = get_cut_test(&proxy, port, "/a", "hello from upstream: GET /a");
    proxy.reload(&policy(port, curl, false));
    // The proxy closes the connection: end of stream, not the read timeout.
    assert_eq!(s.read(&mut [0u8; 64]).unwrap(), 0);
    assert_http_revoked(&proxy.log, "/a");
}

/// A plain HTTP server on loopback that answers any request with a chunked body that never
/// ends: a chunk every 50 ms, as long as the client reads.
fn endless_http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                while stream.write_all(b"5\r\ntick\n\r\n").is_ok() {
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
    });
    port
}

/// A plain HTTP response still streaming when a reload refuses its request is cut.
#[test]
fn a_reload_cuts_a_plain_http_response_in_flight_it_no_longer_allows() {
    let port = endless_http_server();
    let curl = "/usr/bin/curl";
    let mut proxy = Proxy::start(&policy(port, curl, true), curl, &resolve(port), &[]);
    let mut s = get_cut_test(&proxy, port, "/stream", "tick");
    proxy.reload(&policy(port, curl, false));
    // Ticks keep coming until the cut, then the stream ends (a minute of ticks: never cut).
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    while s.read(&mut [0u8; 4096]).unwrap() > 0 {
        assert!(
            std::time::Instant::now() < give_up,
            "the response was never cut"
        );
    }
    assert_http_revoked(&proxy.log, "/stream");
}

/// In seccomp-only mode corral reloads only a policy the sandbox cannot write: one in a
/// directory that belongs to another user, with no group or other write. `None` when no
/// other user is at hand (not running as root).
fn policy_out_of_reach(runner: &Runner, yaml: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    let (uid, gid) = match (runner, Runner::ordinary()) {
        (Runner::Ordinary(_), _) => (0, 0),
        (Runner::Current, Runner::Ordinary(u)) => (u.uid, u.gid),
        (Runner::Current, Runner::Current) => return None,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, yaml).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    chown(dir.path(), uid, gid);
    Some((dir, path))
}

#[test]
fn a_reload_cuts_the_tunnels_it_no_longer_allows_inside_corral_run() {
    let port = echo_server();
    let before = policy(port, "/usr/bin/python3", true);
    for runner in runners() {
        for mode in MODES {
            let mut sb = Sandbox::new(&runner, mode, &before, &resolve(port));
            let _held = match mode {
                "seccomp-only" => match policy_out_of_reach(&runner, &before) {
                    Some((dir, path)) => {
                        sb.policy = path;
                        Some(dir)
                    }
                    None => {
                        eprintln!("not root: no policy out of the sandbox's reach, so no seccomp-only reload to test");
                        continue;
                    }
                },
                _ => None,
            };
            let port_arg = port.to_string();
            let argv = [
                "/usr/bin/python3",
                "-c",
                CLIENT_PY,
                "127.0.0.1",
                "3128",
                &port_arg,
            ];
            let mut bg = Background::spawn("corral run", sb.command(&argv));
            wait_for_stdout(&mut bg, "open");
            std::fs::write(&sb.policy, policy(port, "/usr/bin/python3", false)).unwrap();
            let status = bg.wait();
            assert!(
                status.success(),
                "[{mode}] {}\n{}",
                bg.stdout(),
                bg.stderr()
            );
            assert!(bg.stderr().contains("policy reloaded"), "{}", bg.stderr());
            assert_revoked(&bg.stdout(), &sb.log);
        }
    }
}
