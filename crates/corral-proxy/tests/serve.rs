//! The library API as `corral run` embeds it: `serve` with a custom attribution and a
//! `PolicyHandle` swapped in place.

use std::net::SocketAddr;
use std::sync::Arc;

use corral_policy::{Identity, Policy};
use corral_proxy::{
    serve, Attribution, DecisionLog, Overrides, PolicyHandle, ProxyConfig, Unattributed,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Attributes only connections from one peer port; every other one is unattributed.
struct OnePort(std::sync::Mutex<Option<u16>>);

impl Attribution for OnePort {
    fn identify(&self, peer: SocketAddr, _local: SocketAddr) -> Result<Identity, Unattributed> {
        if Some(peer.port()) == *self.0.lock().unwrap() {
            Ok(Identity::new("/usr/bin/curl"))
        } else {
            Err(Unattributed::new(format!(
                "no broker record for port {}",
                peer.port()
            )))
        }
    }
    fn may_block(&self) -> bool {
        false
    }
}

fn matcher(host: &str, port: u16) -> Arc<corral_policy::Matcher> {
    let yaml = format!(
        "version: 1\nnetwork_policies:\n  g:\n    endpoints:\n      - {{ host: {host}, port: {port}, allowed_ips: [127.0.0.0/8] }}\n    binaries:\n      - {{ path: /usr/bin/curl }}\n"
    );
    Arc::new(
        Policy::parse(&yaml, "t.yaml")
            .unwrap()
            .policy
            .compile(&Default::default()),
    )
}

async fn upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                    .await;
            });
        }
    });
    addr
}

async fn request(s: &mut TcpStream, host: &str, port: u16) -> String {
    s.write_all(
        format!("GET http://{host}:{port}/ HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unattributed_connections_are_refused_and_a_replaced_policy_applies_to_the_next_request() {
    let up = upstream().await;
    let mut overrides = Overrides::default();
    overrides.insert("a.test", None, vec![up.ip()]);
    overrides.insert("b.test", None, vec![up.ip()]);
    let mut config = ProxyConfig::new(DecisionLog::disabled());
    config.overrides = overrides;
    let config = Arc::new(config);
    let policy = PolicyHandle::new(matcher("a.test", up.port()));
    let attribution = Arc::new(OnePort(std::sync::Mutex::new(None)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        config.clone(),
        policy.clone(),
        attribution.clone(),
        async move {
            let _ = stopped.await;
        },
    ));

    // Unattributed: refused, fail closed.
    let mut stranger = TcpStream::connect(addr).await.unwrap();
    let answer = request(&mut stranger, "a.test", up.port()).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("X-Corral-Error: unattributed"), "{answer}");

    // Attributed, kept alive. (The broker records the port before the connection reaches
    // the proxy.)
    let attributed = || async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        *attribution.0.lock().unwrap() = Some(socket.local_addr().unwrap().port());
        socket.connect(addr).await.unwrap()
    };
    let mut client = attributed().await;
    let first = request(&mut client, "a.test", up.port()).await;
    assert!(
        first.starts_with("HTTP/1.1 200") && first.ends_with("ok\n"),
        "{first}"
    );
    // The replaced policy refuses the kept-alive connection's last request: the proxy
    // closes it (revoked). The next requests are decided by the replaced policy.
    assert_eq!(policy.replace(matcher("b.test", up.port())), 2);
    let mut byte = [0u8; 1];
    assert_eq!(client.read(&mut byte).await.unwrap(), 0, "not closed");
    let mut client = attributed().await;
    let second = request(&mut client, "a.test", up.port()).await;
    assert!(second.starts_with("HTTP/1.1 403"), "{second}");
    let third = request(&mut client, "b.test", up.port()).await;
    assert!(third.starts_with("HTTP/1.1 200"), "{third}");
    // b.test stays allowed: this connection survives another reload of the same policy.
    assert_eq!(policy.replace(matcher("b.test", up.port())), 3);
    let fourth = request(&mut client, "b.test", up.port()).await;
    assert!(fourth.starts_with("HTTP/1.1 200"), "{fourth}");

    let metrics = config.metrics.render();
    assert!(metrics.contains("reason=\"unattributed\"} 1"), "{metrics}");
    assert!(
        metrics.contains("decision=\"revoked\",reason=\"no_endpoint\"} 1"),
        "{metrics}"
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
