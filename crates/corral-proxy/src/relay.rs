//! The tunnel relay: both directions at once, half-close aware, with an idle timeout and
//! byte counts. Buffers exist only while data flows, so idle tunnels cost almost nothing.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Buffer sizes: small for interactive traffic, large once a read fills the small one.
const SMALL_BUF: usize = 2 * 1024;
const BUF: usize = 64 * 1024;
/// How long a direction keeps its buffer after the last byte.
const KEEP_BUFFER: Duration = Duration::from_secs(1);

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
        // While data flows the buffer is kept; after a second of silence it is released,
        // so an idle tunnel holds no buffer at all.
        let wait = if buf.is_some() { KEEP_BUFFER } else { idle };
        match tokio::time::timeout(wait, from.readable()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            Err(_) if buf.is_some() => {
                buf = None;
                continue;
            }
            Err(_) => {
                // Idle this way; carry on only if the other direction moved recently.
                let since = (start.elapsed().as_millis() as u64).saturating_sub(last.load(Relaxed));
                if Duration::from_millis(since) >= idle {
                    break;
                }
                continue;
            }
        }
        let b = buf.get_or_insert_with(|| vec![0u8; SMALL_BUF]);
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
                // A full small buffer means bulk data: switch to the large one.
                if n == b.len() && b.len() < BUF {
                    *b = vec![0u8; BUF];
                }
                last.store(start.elapsed().as_millis() as u64, Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    // Error or idle: end both directions (dropping the write half sends FIN; the reader
    // on the other task notices).
    let _ = to.shutdown().await;
    total
}
