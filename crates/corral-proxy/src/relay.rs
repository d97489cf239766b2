//! The tunnel relay: both directions at once, half-close aware, with an idle timeout and
//! byte counts. Buffers exist only while data flows, so idle tunnels cost almost nothing.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
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
    relay_until(client, upstream, idle, std::future::pending::<()>())
        .await
        .0
}

/// [`relay`], cut short when `stop` completes first (both sockets are then closed); the
/// flag says whether it was.
pub async fn relay_until(
    client: TcpStream,
    upstream: TcpStream,
    idle: Duration,
    stop: impl std::future::Future,
) -> (Relayed, bool) {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (up_total, down_total) = (AtomicU64::new(0), AtomicU64::new(0));
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let stopped = {
        let up = one_way(cr, uw, idle, start, &last, &up_total);
        let down = one_way(ur, cw, idle, start, &last, &down_total);
        tokio::select! {
            _ = async { tokio::join!(up, down) } => false,
            _ = stop => true,
        }
    };
    let bytes = Relayed {
        up: up_total.load(Relaxed),
        down: down_total.load(Relaxed),
    };
    (bytes, stopped)
}

async fn one_way(
    from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    idle: Duration,
    start: Instant,
    last: &AtomicU64,
    total: &AtomicU64,
) {
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
                return;
            }
            Ok(n) => {
                if to.write_all(&b[..n]).await.is_err() {
                    break;
                }
                total.fetch_add(n as u64, Relaxed);
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
}

/// Relays between two streams of any kind (TLS included) until both directions end,
/// either fails, or nothing moved either way for `idle`: an upgraded connection
/// (WebSocket) inside a terminated tunnel. Returns the bytes each way (`up`: read from
/// `client`) and whether the idle timeout ended it.
pub(crate) async fn relay_streams<A, B>(
    client: &mut A,
    upstream: &mut B,
    idle: Duration,
) -> (Relayed, bool)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
{
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut a = Touched {
        inner: client,
        start,
        last: &last,
        total: &up,
    };
    let mut b = Touched {
        inner: upstream,
        start,
        last: &last,
        total: &down,
    };
    let watch = async {
        loop {
            let quiet = start
                .elapsed()
                .saturating_sub(Duration::from_millis(last.load(Relaxed)));
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    let idled = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => false,
        () = watch => true,
    };
    let bytes = Relayed {
        up: up.load(Relaxed),
        down: down.load(Relaxed),
    };
    (bytes, idled)
}

/// A stream whose reads count bytes and note when data last moved.
struct Touched<'a, S: ?Sized> {
    inner: &'a mut S,
    start: Instant,
    last: &'a AtomicU64,
    total: &'a AtomicU64,
}

impl<S: tokio::io::AsyncRead + Unpin + ?Sized> tokio::io::AsyncRead for Touched<'_, S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut *this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.total.fetch_add(n as u64, Relaxed);
            this.last
                .store(this.start.elapsed().as_millis() as u64, Relaxed);
        }
        polled
    }
}

impl<S: tokio::io::AsyncWrite + Unpin + ?Sized> tokio::io::AsyncWrite for Touched<'_, S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut *self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}
