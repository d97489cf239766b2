//! The tunnel relay: both directions at once, half-close aware, with an idle timeout and
//! byte counts. Buffers exist only while data flows, so idle tunnels cost almost nothing.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const BUF: usize = 32 * 1024;

/// Bytes relayed each way.
#[derive(Clone, Copy, Debug, Default)]
pub struct Relayed {
    pub up: u64,
    pub down: u64,
}

/// Relays between `client` and `upstream` until both directions end, either fails, or
/// nothing moved either way for `idle`.
pub async fn relay(client: TcpStream, upstream: TcpStream, idle: Duration) -> Relayed {
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let up = one_way(cr, uw, idle, start, last.clone());
    let down = one_way(ur, cw, idle, start, last);
    let (up, down) = tokio::join!(up, down);
    Relayed { up, down }
}

async fn one_way(
    from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    idle: Duration,
    start: Instant,
    last: Arc<AtomicU64>,
) -> u64 {
    let mut total = 0u64;
    let mut buf: Option<Vec<u8>> = None;
    loop {
        match tokio::time::timeout(idle, from.readable()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            Err(_) => {
                // Idle this way; carry on only if the other direction moved recently.
                let since = start.elapsed().as_millis() as u64 - last.load(Relaxed);
                if Duration::from_millis(since) >= idle {
                    break;
                }
                continue;
            }
        }
        let b = buf.get_or_insert_with(|| vec![0u8; BUF]);
        match from.try_read(b) {
            Ok(0) => {
                let _ = to.shutdown().await;
                return total;
            }
            Ok(n) => {
                if to.write_all(&b[..n]).await.is_err() {
                    break;
                }
                total += n as u64;
                last.store(start.elapsed().as_millis() as u64, Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Drained: give the buffer back while we wait.
                buf = None;
            }
            Err(_) => break,
        }
    }
    // Error or idle: end both directions (dropping the write half sends FIN; the reader
    // on the other task notices).
    let _ = to.shutdown().await;
    total
}
