//! The client side: TLS with a leaf for the CONNECT target, refused when the ClientHello
//! names another server (no domain fronting through an allowed tunnel).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::Intercept;

/// A TCP stream with bytes already read from it (pipelined after the CONNECT head) put
/// back in front.
pub struct Prefixed {
    prefix: Vec<u8>,
    at: usize,
    inner: TcpStream,
}

impl Prefixed {
    pub fn new(prefix: Vec<u8>, inner: TcpStream) -> Prefixed {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why the client's TLS did not start: (code, reason).
pub type AcceptError = (&'static str, String);

/// Completes the client's handshake for `host` (the CONNECT target), offering HTTP/2
/// when `h2` (the server chose it).
pub async fn accept(
    intercept: &Intercept,
    host: &str,
    h2: bool,
    stream: Prefixed,
    timeout: Duration,
) -> Result<TlsStream<Prefixed>, AcceptError> {
    let want = host.trim_end_matches('.').to_ascii_lowercase();
    let handshake = async {
        let acceptor =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
        let start = acceptor
            .await
            .map_err(|e| ("tls_handshake", format!("no TLS ClientHello: {e}")))?;
        if let Some(sni) = start.client_hello().server_name() {
            let sni = sni.trim_end_matches('.').to_ascii_lowercase();
            if sni != want {
                return Err((
                    "sni_mismatch",
                    format!(
                        "the TLS server name {sni:?} is not the CONNECT target {want:?}: one tunnel reaches one host"
                    ),
                ));
            }
        }
        let config = intercept
            .leaves
            .get(&intercept.ca, &want, h2)
            .map_err(|e| ("tls_handshake", format!("no certificate for {want}: {e}")))?;
        start.into_stream(config).await.map_err(|e| {
            (
                "tls_handshake",
                format!("the client's TLS handshake failed: {e}"),
            )
        })
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(r) => r,
        Err(_) => Err((
            "tls_handshake",
            "the client's TLS handshake did not finish in time".into(),
        )),
    }
}
