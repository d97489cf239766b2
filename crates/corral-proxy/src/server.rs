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

/// Descriptors a served client holds at once: its own socket and its upstream's.
const FDS_PER_CONNECTION: usize = 2;
/// Descriptors kept free beyond the clients' share: for accepting a client only to answer
/// `503`, for attribution's `/proc` and netlink lookups, name resolution, the decision log
/// and policy reloads.
const FD_HEADROOM: usize = 16;

/// The answer to a client the proxy has no room for.
const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nX-Corral-Error: overloaded\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Serves proxy clients on `listener` until `shutdown` completes. In-flight connections are
/// left to finish on their own tasks (the runtime's shutdown ends them).
///
/// At most `config.limits.max_connections` clients are served at once; beyond that the loop
/// stops accepting and clients wait in the kernel's listen backlog (back-pressure).
///
/// Running out of file descriptors must not leave a client waiting for an answer that
/// never comes, so descriptors are budgeted: once the clients being served hold all the
/// process may give them (its limit, less what was open at start and [`FD_HEADROOM`]), a
/// new client is accepted from the headroom, answered `503`, and closed. Should the
/// process still run out (a burst of lookups), one descriptor kept in reserve is released
/// to accept and answer the waiting client the same way.
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
    // Summaries of folded refusals are written when their window ends, traffic or not.
    let ticking = Arc::downgrade(&config);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            match ticking.upgrade() {
                Some(config) => config.log.tick(),
                None => return,
            }
        }
    });
    let permits = Arc::new(Semaphore::new(config.limits.max_connections.max(1)));
    let mut reserve = open_reserve();
    let budget = descriptor_budget();
    tracing::debug!("descriptors allow {budget} clients at once");
    let mut warned = false;
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
            Ok((stream, _)) if config.metrics.connections_active.load(Relaxed) >= budget => {
                if !std::mem::replace(&mut warned, true) {
                    tracing::warn!(
                        "{budget} clients hold all the descriptors the limit allows; answering 503 until some finish (raise `ulimit -n`)"
                    );
                }
                refuse_overloaded(stream, &config).await;
            }
            Ok((stream, peer)) => {
                warned = false;
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
                if matches!(e.raw_os_error(), Some(24) | Some(23)) {
                    tracing::warn!("out of file descriptors; answering 503");
                    // The reserve's descriptor is the one the waiting client gets.
                    drop(reserve.take());
                    if let Ok((stream, _)) = listener.accept().await {
                        refuse_overloaded(stream, &config).await;
                    }
                    reserve = open_reserve();
                    if reserve.is_none() {
                        // Not even one descriptor came back: wait for clients to finish.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                } else {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// How many clients the descriptor limit lets the process serve at once (compared with
/// the `connections_active` gauge).
fn descriptor_budget() -> i64 {
    let Some(limit) = crate::sys::open_files_limit() else {
        return i64::MAX;
    };
    // The directory's own descriptor is among the entries.
    let open = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().saturating_sub(1))
        .unwrap_or(0);
    let budget = (limit.saturating_sub(open + FD_HEADROOM) / FDS_PER_CONNECTION).max(1);
    i64::try_from(budget).unwrap_or(i64::MAX)
}

async fn refuse_overloaded(mut stream: tokio::net::TcpStream, config: &ProxyConfig) {
    config
        .metrics
        .overload_rejections_total
        .fetch_add(1, Relaxed);
    // A fresh socket's send buffer takes these bytes at once; the stream closes on drop.
    let _ = stream.write_all(OVERLOADED).await;
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
