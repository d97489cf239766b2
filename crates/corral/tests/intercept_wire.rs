//! TLS termination on the wire: request-smuggling shapes and domain fronting refused
//! inside the tunnel, HTTP/2 on both sides, every request of a kept-alive tunnel decided,
//! WebSocket upgrades where the rules allow them. Both isolation modes, as the current
//! user and (as root) an ordinary one.

mod intercept_support;

use corral_testsupport::sandbox::{runners, stdout, Sandbox, MODES};
use corral_testsupport::tls::TestCa;
use corral_testsupport::upstream::{Reply, Upstream};
use intercept_support::{api, https_records, rules_policy, run, Api};

/// Raw requests through a terminated tunnel, from Python's ssl module: each line of
/// output is `NAME: first response line` (or the handshake error).
const RAW_CLIENT: &str = r#"
import os, socket, ssl, sys
port = int(sys.argv[1])
ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
def tunnel(sni, raw):
    s = socket.create_connection(("127.0.0.1", 3128))
    s.sendall(f"CONNECT api.test:{port} HTTP/1.1\r\nHost: api.test:{port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    try:
        t = ctx.wrap_socket(s, server_hostname=sni)
    except (ssl.SSLError, OSError) as e:
        return "handshake failed"
    t.sendall(raw.encode())
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = t.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ssl.SSLError, OSError):
        pass
    return data.split(b"\r\n")[0].decode() or "closed"
host = f"api.test:{port}"
shapes = {
    "ok": f"GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
    "cl_te": f"POST /x HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "dup_cl": f"POST /x HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "obs_fold": f"GET /x HTTP/1.1\r\nHost: {host}\r\nX-A: a\r\n b\r\n\r\n",
    "bare_lf": f"GET /x HTTP/1.1\nHost: {host}\n\n",
    "host_mismatch": f"GET /x HTTP/1.1\r\nHost: other.test:{port}\r\n\r\n",
    "absolute_form": f"GET https://other.test:{port}/x HTTP/1.1\r\nHost: {host}\r\n\r\n",
}
for name, raw in shapes.items():
    print(f"{name}: {tunnel('api.test', raw)}")
print(f"sni_mismatch: {tunnel('other.test', shapes['ok'])}")
"#;

#[test]
fn smuggling_shapes_and_domain_fronting_are_refused_inside_the_tunnel() {
    let up = api();
    let python = "/usr/bin/python3";
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(
                &runner,
                mode,
                &rules_policy(up.port(), &[python]),
                &up.resolve(),
            );
            let port = up.port().to_string();
            let out = run(&sb, &up.ca, &[python, "-c", RAW_CLIENT, &port]);
            assert!(out.status.success(), "{}", sb.context(&out));
            let text = stdout(&out);
            let line = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                    .unwrap_or_else(|| panic!("no {name} line: {}", sb.context(&out)))
                    .to_string()
            };
            assert!(
                line("ok").starts_with("HTTP/1.1 200"),
                "{}",
                sb.context(&out)
            );
            for shape in [
                "cl_te",
                "dup_cl",
                "obs_fold",
                "bare_lf",
                "host_mismatch",
                "absolute_form",
            ] {
                assert!(
                    line(shape).starts_with("HTTP/1.1 400"),
                    "{shape}: {}",
                    sb.context(&out)
                );
            }
            assert_eq!(
                line("sni_mismatch"),
                "handshake failed",
                "{}",
                sb.context(&out)
            );
            let log = sb.log();
            assert!(
                log.iter().any(|r| r["error"] == "sni_mismatch"),
                "{}",
                sb.context(&out)
            );
            assert!(
                log.iter()
                    .any(|r| r["error"] == "host_mismatch" && r["kind"] == "https"),
                "{}",
                sb.context(&out)
            );
        }
    }
    // Only the well-formed request reached the server.
    assert!(up
        .https
        .requests()
        .iter()
        .all(|r| r.method == "GET" && r.target == "/x"));
}

#[test]
fn http2_on_both_sides_when_the_server_offers_it_with_each_stream_decided() {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["api.test", "other.test"]);
    let h2 = Upstream::https_h2(&leaf, |req| {
        Reply::ok(format!(
            "upstream saw {} {} over {}\n",
            req.method, req.target, req.version
        ))
    });
    let up = Api { ca, https: h2 };
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(
                &runner,
                mode,
                &rules_policy(up.port(), &["/usr/bin/curl"]),
                &up.resolve(),
            );
            let curl = |extra: &[&str], path: &str| {
                let url = up.url("api.test", path);
                let mut argv = vec![
                    "/usr/bin/curl",
                    "-sS",
                    "--http2",
                    "-w",
                    "\nHTTP %{http_version} STATUS %{http_code}",
                ];
                argv.extend_from_slice(extra);
                argv.push(&url);
                let out = run(&sb, &up.ca, &argv);
                (stdout(&out), sb.context(&out))
            };
            let (body, ctx) = curl(&[], "/public/../x");
            assert_eq!(
                body, "upstream saw GET /x over HTTP/2.0\n\nHTTP 2 STATUS 200",
                "{ctx}"
            );
            let (body, ctx) = curl(&["-X", "POST", "-d", "a=1"], "/x");
            assert!(body.ends_with("HTTP 2 STATUS 403"), "{ctx}");
            assert!(body.contains("\"method\": \"POST\""), "{ctx}");
            assert!(body.contains("\"path\": \"/x\""), "{ctx}");
            let host = format!("Host: other.test:{}", up.port());
            let (body, ctx) = curl(&["-H", &host], "/x");
            assert!(body.ends_with("HTTP 2 STATUS 400"), "{ctx}");
            assert!(body.contains("host_mismatch"), "{ctx}");
            assert!(
                https_records(&sb)
                    .iter()
                    .any(|r| r["decision"] == "deny" && r["method"] == "POST" && r["path"] == "/x"),
                "{ctx}"
            );
        }
    }
    assert!(up
        .https
        .requests()
        .iter()
        .all(|r| r.method == "GET" && r.target == "/x" && r.version == "HTTP/2.0"));
}

#[test]
fn every_request_on_a_kept_alive_tunnel_is_decided() {
    let up = api();
    let python = "/usr/bin/python3";
    let script = r#"
import http.client, os, ssl, sys
ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
c = http.client.HTTPSConnection("127.0.0.1", 3128, context=ctx)
c.set_tunnel("api.test", int(sys.argv[1]))
for m, p in [("GET", "/x"), ("DELETE", "/x"), ("GET", "/public/a"), ("GET", "/public/secret/k"), ("GET", "/x")]:
    c.request(m, p)
    r = c.getresponse()
    r.read()
    print(m, p, r.status)
"#;
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(
                &runner,
                mode,
                &rules_policy(up.port(), &[python]),
                &up.resolve(),
            );
            let port = up.port().to_string();
            let out = run(&sb, &up.ca, &[python, "-c", script, &port]);
            assert_eq!(
                stdout(&out),
                "GET /x 200\nDELETE /x 403\nGET /public/a 200\nGET /public/secret/k 403\nGET /x 200\n",
                "{}",
                sb.context(&out)
            );
            let log = sb.log();
            let connects = log.iter().filter(|r| r["kind"] == "connect").count();
            assert_eq!(connects, 1, "one tunnel: {}", sb.context(&out));
            assert_eq!(https_records(&sb).len(), 5, "{}", sb.context(&out));
        }
    }
}

/// A TLS server that answers any request with `101` and then echoes what it receives.
const WS_SERVER: &str = r#"
import socket, ssl, sys, threading
port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv = socket.create_server(("127.0.0.1", port))
def serve(c):
    try:
        t = ctx.wrap_socket(c, server_side=True)
        head = b""
        while b"\r\n\r\n" not in head:
            head += t.recv(1)
        if b"upgrade: websocket" not in head.lower():
            t.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        t.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
        while True:
            d = t.recv(4096)
            if not d:
                break
            t.sendall(b"echo:" + d)
    except Exception:
        pass
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

const WS_CLIENT: &str = r#"
import os, socket, ssl, sys
port = int(sys.argv[1])
ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
for path in ["/ws/chat", "/other"]:
    s = socket.create_connection(("127.0.0.1", 3128))
    s.sendall(f"CONNECT ws.test:{port} HTTP/1.1\r\nHost: ws.test:{port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    t = ctx.wrap_socket(s, server_hostname="ws.test")
    t.sendall(f"GET {path} HTTP/1.1\r\nHost: ws.test:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += t.recv(1)
    print(path, head.split(b"\r\n")[0].decode())
    if b" 101 " in head:
        t.sendall(b"hello")
        print(path, t.recv(100).decode())
"#;

/// The echoing WebSocket server on a free loopback port, its CA, and the port.
fn ws_server() -> (corral_testsupport::process::Background, TestCa, u16) {
    use corral_testsupport::process::{free_port, Background};
    let ca = TestCa::new();
    let leaf = ca.leaf(&["ws.test"]);
    let localhost = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    let port = free_port(localhost);
    let mut server_cmd = std::process::Command::new("/usr/bin/python3");
    server_cmd
        .args(["-c", WS_SERVER, &port.to_string()])
        .arg(&leaf.cert_path)
        .arg(&leaf.key_path);
    let mut server = Background::spawn("websocket server", server_cmd);
    server.wait_for_port(
        std::net::SocketAddr::new(localhost, port),
        std::time::Duration::from_secs(20),
    );
    (server, ca, port)
}

fn ws_policy(port: u16) -> String {
    format!(
        r#"version: 1
network_policies:
  ws:
    endpoints:
      - host: ws.test
        port: {port}
        protocol: rest
        allowed_ips: [127.0.0.0/8]
        rules:
          - allow: {{ method: GET, path: "/ws/**" }}
    binaries:
      - path: /usr/bin/python3
"#
    )
}

#[test]
fn a_websocket_upgrade_passes_where_the_rules_allow_its_path() {
    let (_server, ca, port) = ws_server();
    let policy = ws_policy(port);
    let resolve = vec![format!("ws.test:{port}:127.0.0.1")];
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, &policy, &resolve);
            let out = run(
                &sb,
                &ca,
                &["/usr/bin/python3", "-c", WS_CLIENT, &port.to_string()],
            );
            assert_eq!(
                stdout(&out),
                "/ws/chat HTTP/1.1 101 Switching Protocols\n/ws/chat echo:hello\n/other HTTP/1.1 403 Forbidden\n",
                "{}",
                sb.context(&out)
            );
        }
    }
}

/// An upgraded connection, once silent both ways, is closed after the idle timeout like a
/// blind tunnel (it would otherwise hold its sockets for ever). The client itself waits
/// far longer than the proxy's timeout: only the proxy can end its wait.
const WS_IDLE_CLIENT: &str = r#"
import socket, ssl, sys
proxy, port, cafile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
s = socket.create_connection(("127.0.0.1", proxy))
s.sendall(f"CONNECT ws.test:{port} HTTP/1.1\r\nHost: ws.test:{port}\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
t = ctx.wrap_socket(s, server_hostname="ws.test")
t.sendall(f"GET /ws/idle HTTP/1.1\r\nHost: ws.test:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    head += t.recv(1)
print(head.split(b"\r\n")[0].decode())
t.sendall(b"hello")
print(t.recv(100).decode())
t.settimeout(300)
try:
    d = t.recv(100)
    print("closed" if not d else "data " + d.decode())
except socket.timeout:
    print("still open")
except (ssl.SSLError, OSError):
    print("closed")
"#;

#[test]
fn a_silent_websocket_is_closed_after_the_idle_timeout() {
    use corral_testsupport::process::output;
    use corral_testsupport::proxy::Proxy;
    let (_server, ca, port) = ws_server();
    let proxy_ca = TestCa::new();
    let key = proxy_ca.key_path();
    let flags = [
        "--ca-cert",
        proxy_ca.ca_path().to_str().unwrap(),
        "--ca-key",
        key.to_str().unwrap(),
        "--upstream-ca",
        ca.ca_path().to_str().unwrap(),
        "--idle-timeout",
        "1",
    ];
    let resolve = vec![format!("ws.test:{port}:127.0.0.1")];
    let proxy = Proxy::start(&ws_policy(port), "/usr/bin/python3", &resolve, &flags);
    let out = output(
        std::process::Command::new("/usr/bin/python3")
            .args(["-c", WS_IDLE_CLIENT])
            .arg(proxy.listen.port().to_string())
            .arg(port.to_string())
            .arg(proxy_ca.ca_path()),
    );
    assert_eq!(
        stdout(&out),
        "HTTP/1.1 101 Switching Protocols\necho:hello\nclosed\n",
        "{out:?}\n--- proxy ---\n{}",
        proxy.process.stderr()
    );
    let log = std::fs::read_to_string(&proxy.log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("\"path\":\"/ws/idle\"") && l.contains("\"status\":101")),
        "{log}"
    );
}

/// Node's http2 client on one connection through the tunnel: `/x`, then (once the file
/// `gate` exists, after the test's reload) `/x` and `/public/a` again on the same session.
/// Each line: path, status, `x-corral-error` (or `-`).
const H2_RELOAD_CLIENT: &str = r#"
const http = require('http'), http2 = require('http2'), tls = require('tls'), fs = require('fs');
const [proxyPort, host, port, ca, gate] = process.argv.slice(1);
const connect = http.request({ host: '127.0.0.1', port: +proxyPort, method: 'CONNECT', path: `${host}:${port}` });
connect.on('connect', (res, socket) => {
  const session = http2.connect(`https://${host}:${port}`, { createConnection: () =>
    tls.connect({ socket, servername: host, ALPNProtocols: ['h2'], ca: fs.readFileSync(ca) }) });
  session.on('error', (e) => console.log('session error', e.code));
  const get = (path, then) => {
    const req = session.request({ ':path': path });
    let status, error;
    req.on('response', (h) => { status = h[':status']; error = h['x-corral-error'] || '-'; });
    req.on('data', () => {});
    req.on('end', () => { console.log(path, status, error); then(); });
    req.on('error', (e) => console.log(path, 'stream error', e.code));
    req.end();
  };
  get('/x', () => {
    console.log('ready');
    const wait = setInterval(() => {
      if (!fs.existsSync(gate)) return;
      clearInterval(wait);
      get('/x', () => get('/public/a', () => session.close()));
    }, 20);
  });
});
connect.on('error', (e) => console.log('proxy error', e.message));
connect.end();
"#;

/// HTTP/2 multiplexes requests on one connection that stays open across a reload: every
/// stream is decided on its own, with the policy in force when it starts, so a reload that
/// narrows the rules refuses the next forbidden stream on the open connection, while the
/// streams the new policy allows still pass on it.
#[test]
fn a_reload_that_narrows_the_rules_refuses_the_next_stream_on_an_open_h2_connection() {
    use corral_testsupport::process::Background;
    use corral_testsupport::proxy::Proxy;
    let ca = TestCa::new();
    let leaf = ca.leaf(&["api.test", "other.test"]);
    let h2 = Upstream::https_h2(&leaf, |req| {
        Reply::ok(format!("upstream saw {} {}\n", req.method, req.target))
    });
    let up = Api { ca, https: h2 };
    let proxy_ca = TestCa::new();
    let key = proxy_ca.key_path();
    let flags = [
        "--ca-cert",
        proxy_ca.ca_path().to_str().unwrap(),
        "--ca-key",
        key.to_str().unwrap(),
        "--upstream-ca",
        up.ca.ca_path().to_str().unwrap(),
    ];
    let wide = rules_policy(up.port(), &["/usr/bin/node"]);
    let narrow = wide.replace("          - allow: { method: GET, path: \"/x\" }\n", "");
    assert_ne!(wide, narrow);
    let mut proxy = Proxy::start(&wide, "/usr/bin/node", &up.resolve(), &flags);
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("reloaded");
    let mut cmd = std::process::Command::new("/usr/bin/node");
    cmd.args(["-e", H2_RELOAD_CLIENT])
        .arg(proxy.listen.port().to_string())
        .arg("api.test")
        .arg(up.port().to_string())
        .arg(proxy_ca.ca_path())
        .arg(&gate);
    let mut client = Background::spawn("node http2 client", cmd);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !client.stdout().contains("ready") {
        assert!(
            std::time::Instant::now() < deadline,
            "node never got its first answer: {}\n{}\n--- proxy ---\n{}",
            client.stdout(),
            client.stderr(),
            proxy.process.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    proxy.reload(&narrow);
    std::fs::write(&gate, b"").unwrap();
    let status = client.wait();
    assert!(status.success(), "{}", client.stderr());
    assert_eq!(
        client.stdout(),
        "/x 200 -\nready\n/x 403 l7_rule_not_matched\n/public/a 200 -\n",
        "{}\n--- proxy ---\n{}",
        client.stderr(),
        proxy.process.stderr()
    );
    // The server saw the two allowed streams over HTTP/2, and not the refused one.
    let seen: Vec<(String, String)> = up
        .https
        .requests()
        .iter()
        .map(|r| (r.target.clone(), r.version.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            ("/x".to_string(), "HTTP/2.0".to_string()),
            ("/public/a".to_string(), "HTTP/2.0".to_string())
        ]
    );
}

/// Node's http2 client streams one answer through the tunnel and says how the stream
/// ended: `complete` (the whole answer arrived) or `reset` (cut before its end).
const H2_STREAM_CLIENT: &str = r#"
const http = require('http'), http2 = require('http2'), tls = require('tls'), fs = require('fs');
const [proxyPort, host, port, ca] = process.argv.slice(1);
const connect = http.request({ host: '127.0.0.1', port: +proxyPort, method: 'CONNECT', path: `${host}:${port}` });
connect.on('connect', (res, socket) => {
  const session = http2.connect(`https://${host}:${port}`, { createConnection: () =>
    tls.connect({ socket, servername: host, ALPNProtocols: ['h2'], ca: fs.readFileSync(ca) }) });
  session.on('error', () => {});
  const req = session.request({ ':method': 'POST', ':path': '/v1/messages', 'content-type': 'application/json' });
  let body = '', first = true;
  req.on('response', (h) => console.log('status', h[':status']));
  req.on('data', (d) => { body += d; if (first) { first = false; console.log('streaming'); } });
  req.on('error', () => {});
  req.on('close', () => {
    console.log(body.includes('message_stop') ? 'complete' : 'reset');
    session.close();
  });
  req.end(JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 10, stream: true, messages: [{ role: 'user', content: 'hi' }] }));
});
connect.on('error', (e) => console.log('proxy error', e.message));
connect.end();
"#;

/// A stream still answering when a reload refuses its request is cut (reset), as an
/// HTTP/1.1 exchange would be; the cut is logged as `revoked`. Without the reload the same
/// stream runs to its end.
#[test]
fn a_reload_that_refuses_an_h2_stream_in_flight_resets_it() {
    use corral_testsupport::llm_upstream::{LlmUpstream, Script};
    use corral_testsupport::process::Background;
    use corral_testsupport::proxy::Proxy;
    let ca = TestCa::new();
    let leaf = ca.leaf(&["llm.test"]);
    let mut tls = (*leaf.server_config()).clone();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let slow = Script {
        event_delay: std::time::Duration::from_millis(1500),
        ..Script::default()
    };
    let up = LlmUpstream::start_on(
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        Some(std::sync::Arc::new(tls)),
        slow,
    );
    let port = up.addr().port();
    let policy = |path: &str| {
        format!(
            r#"version: 1
network_policies:
  llm:
    endpoints:
      - host: llm.test
        port: {port}
        protocol: rest
        allowed_ips: [127.0.0.0/8]
        rules:
          - allow: {{ method: POST, path: "{path}" }}
    binaries:
      - path: /usr/bin/node
"#
        )
    };
    let proxy_ca = TestCa::new();
    let key = proxy_ca.key_path();
    let flags = [
        "--ca-cert",
        proxy_ca.ca_path().to_str().unwrap(),
        "--ca-key",
        key.to_str().unwrap(),
        "--upstream-ca",
        ca.ca_path().to_str().unwrap(),
    ];
    let resolve = vec![format!("llm.test:{port}:127.0.0.1")];
    let mut proxy = Proxy::start(&policy("/v1/messages"), "/usr/bin/node", &resolve, &flags);
    let stream = |proxy: &Proxy| {
        let mut cmd = std::process::Command::new("/usr/bin/node");
        cmd.args(["-e", H2_STREAM_CLIENT])
            .arg(proxy.listen.port().to_string())
            .arg("llm.test")
            .arg(port.to_string())
            .arg(proxy_ca.ca_path());
        Background::spawn("node http2 stream", cmd)
    };
    // Untouched, the stream runs to its end.
    let mut whole = stream(&proxy);
    assert!(whole.wait().success(), "{}", whole.stderr());
    assert_eq!(
        whole.stdout(),
        "status 200\nstreaming\ncomplete\n",
        "{}",
        proxy.process.stderr()
    );
    // A reload that no longer allows it, once the answer has begun: cut.
    let mut cut = stream(&proxy);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !cut.stdout().contains("streaming") {
        assert!(
            std::time::Instant::now() < deadline,
            "no answer began: {}\n{}\n--- proxy ---\n{}",
            cut.stdout(),
            cut.stderr(),
            proxy.process.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    proxy.reload(&policy("/v1/other"));
    assert!(cut.wait().success(), "{}", cut.stderr());
    assert_eq!(
        cut.stdout(),
        "status 200\nstreaming\nreset\n",
        "{}",
        proxy.process.stderr()
    );
    let log = std::fs::read_to_string(&proxy.log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("\"decision\":\"revoked\"")
                && l.contains("\"path\":\"/v1/messages\"")),
        "{log}"
    );
}
