//! A read buffer over a stream, with the body-framing copies the forwarder needs.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// A connection that is plain TCP, or TLS the proxy terminates or originates.
pub enum Stream<T> {
    Plain(TcpStream),
    Tls(Box<T>),
}

/// The client's side: TLS when the proxy terminates it.
pub type ClientStream = Stream<tokio_rustls::server::TlsStream<crate::intercept::Prefixed>>;
/// The server's side: TLS when the request was intercepted.
pub type UpstreamStream = Stream<tokio_rustls::client::TlsStream<TcpStream>>;

impl<T: AsyncRead + Unpin> AsyncRead for Stream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

const READ_CHUNK: usize = 16 * 1024;
/// Longest chunk-size or trailer line accepted in a chunked body.
const MAX_LINE: usize = 8 * 1024;

/// A stream plus the bytes read from it but not consumed yet.
pub struct Buffered<S> {
    pub inner: S,
    pub buf: Vec<u8>,
    /// Every read waits at most this long (the idle timeout).
    pub idle: Duration,
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "idle timeout")
}

impl<S: AsyncRead + Unpin> Buffered<S> {
    pub fn new(inner: S, idle: Duration) -> Buffered<S> {
        Buffered {
            inner,
            buf: Vec::new(),
            idle,
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    pub async fn fill(&mut self) -> io::Result<usize> {
        let start = self.buf.len();
        self.buf.resize(start + READ_CHUNK, 0);
        let res = tokio::time::timeout(self.idle, self.inner.read(&mut self.buf[start..])).await;
        let n = match res {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                self.buf.truncate(start);
                return Err(e);
            }
            Err(_) => {
                self.buf.truncate(start);
                return Err(timed_out());
            }
        };
        self.buf.truncate(start + n);
        Ok(n)
    }

    /// One line including its CRLF.
    async fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                return Ok(self.buf.drain(..=i).collect());
            }
            if self.buf.len() > MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "chunk line too long",
                ));
            }
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Copies exactly `n` bytes to `w`.
    pub async fn copy_exact<W: AsyncWrite + Unpin>(
        &mut self,
        mut n: u64,
        w: &mut W,
    ) -> io::Result<u64> {
        let total = n;
        while n > 0 {
            if self.buf.is_empty() && self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let take = self.buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            w.write_all(&self.buf[..take]).await?;
            self.buf.drain(..take);
            n -= take as u64;
        }
        Ok(total)
    }

    /// Copies a chunked body verbatim (chunk lines, data, trailers), stopping right after it.
    pub async fn copy_chunked<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            let line = self.read_line().await?;
            let text = std::str::from_utf8(&line)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "chunk size not ASCII"))?;
            let size_text = text.split(';').next().unwrap_or("").trim();
            if size_text.is_empty() || size_text.len() > 16 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"));
            }
            let size = u64::from_str_radix(size_text, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            w.write_all(&line).await?;
            total += line.len() as u64;
            if size == 0 {
                loop {
                    let trailer = self.read_line().await?;
                    w.write_all(&trailer).await?;
                    total += trailer.len() as u64;
                    if trailer == b"\r\n" || trailer == b"\n" {
                        return Ok(total);
                    }
                }
            }
            total += self.copy_exact(size, w).await?;
            let crlf = self.read_line().await?;
            if crlf != b"\r\n" && crlf != b"\n" {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "missing CRLF after chunk",
                ));
            }
            w.write_all(&crlf).await?;
            total += crlf.len() as u64;
        }
    }

    /// Copies everything until the stream ends.
    pub async fn copy_to_end<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> io::Result<u64> {
        let mut total = 0;
        loop {
            if self.buf.is_empty() && self.fill().await? == 0 {
                return Ok(total);
            }
            w.write_all(&self.buf).await?;
            total += self.buf.len() as u64;
            self.buf.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunked_copy_stops_at_the_end_of_the_body() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let mut r = Buffered::new(&body[..], Duration::from_secs(5));
        let mut out = Vec::new();
        let n = r.copy_chunked(&mut out).await.unwrap();
        assert_eq!(n as usize, out.len());
        assert_eq!(&out[..], &body[..body.len() - 4]);
        assert_eq!(r.buf, b"NEXT");
    }

    #[tokio::test]
    async fn bad_chunks_are_errors() {
        for body in [&b"zz\r\n"[..], b"4\r\nWikiXX", b"4\r\nWi"] {
            let mut r = Buffered::new(body, Duration::from_secs(5));
            assert!(r.copy_chunked(&mut Vec::new()).await.is_err());
        }
    }
}
