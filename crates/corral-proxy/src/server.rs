//! The accept loop (back-pressure, descriptor exhaustion) and the admin endpoint.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::attribution::Attribution;
use crate::config::ProxyConfig;
use crate::conn::{self, Shared};
use crate::metrics::Metrics;
use crate::policy_handle::PolicyHandle;

/// Serves proxy clients on `listener` until `shutdown` completes. In-flight connections are
/// left to finish on their own tasks (the runtime's shutdown ends them).
///
/// At most `config.limits.max_connections` clients are served at once; beyond that the loop
/// stops accepting and clients wait in the kernel's listen backlog (back-pressure). When
/// the process runs out of file descriptors, a reserved descriptor is released to accept
/// the waiting client, answer `503`, and close it; the loop backs off and keeps serving.
pub async fn serve(
    listener: TcpListener,
    config: Arc<ProxyConfig>,
    policy: crate::PolicyHandle,
    attribution: Arc<dyn Attribution>,
    shutdown: impl Future,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let generation = policy.current().1;
    config.metrics.policy_generation.store(generation, Relaxed);
    let shared = Arc::new(Shared {
        config: config.clone(),
        policy,
        attribution,
        next_conn: std::sync::atomic::AtomicU64::new(1),
    });
    let permits = Arc::new(Semaphore::new(config.limits.max_connections.max(1)));
    let mut reserve = open_reserve();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            p = permits.clone().acquire_owned() => p?,
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let local = stream.local_addr().unwrap_or(local);
                let shared = shared.clone();
                config.metrics.connections_total.fetch_add(1, Relaxed);
                config.metrics.connections_active.fetch_add(1, Relaxed);
                tokio::spawn(async move {
                    conn::handle(shared.clone(), stream, peer, local).await;
                    shared
                        .config
                        .metrics
                        .connections_active
                        .fetch_sub(1, Relaxed);
                    drop(permit);
                });
            }
            Err(e) => {
                config.metrics.accept_errors_total.fetch_add(1, Relaxed);
                // EMFILE (24) or ENFILE (23).
                let out_of_fds = matches!(e.raw_os_error(), Some(24) | Some(23));
                if out_of_fds {
                    tracing::warn!("out of file descriptors; answering 503 and backing off");
                    if reserve.take().is_some() {
                        if let Ok((mut stream, _)) = listener.accept().await {
                            config
                                .metrics
                                .overload_rejections_total
                                .fetch_add(1, Relaxed);
                            let _ = stream
                                .write_all(b"HTTP/1.1 503 Service Unavailable\r\nX-Corral-Error: overloaded\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                                .await;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    reserve = reserve.or_else(open_reserve);
                } else {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// A descriptor kept in reserve for answering 503 when the process has none left.
fn open_reserve() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Serves `GET /metrics` (Prometheus text) and `GET /healthz` on `listener`.
pub async fn serve_admin(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    policy: PolicyHandle,
    shutdown: impl Future,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (mut stream, _): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
        };
        let metrics = metrics.clone();
        let policy = policy.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            let read = async {
                loop {
                    let n = stream.read(&mut buf[len..]).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    len += n;
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") || len == buf.len() {
                        return Some(());
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), read)
                .await
                .ok()
                .flatten()
                .is_none()
            {
                return;
            }
            let line = String::from_utf8_lossy(&buf[..len]);
            let target = line.split_whitespace().nth(1).unwrap_or("");
            let (status, ctype, body) = match target {
                "/metrics" => {
                    metrics.policy_generation.store(policy.current().1, Relaxed);
                    ("200 OK", "text/plain; version=0.0.4", metrics.render())
                }
                "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
                _ => (
                    "404 Not Found",
                    "text/plain",
                    "try /metrics or /healthz\n".to_string(),
                ),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
        });
    }
}
