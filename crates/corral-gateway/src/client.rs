//! The HTTP/1.1 client the upstreams use: pooled connections, TLS with our own roots, an
//! optional outbound proxy, and an immediate ACK for every answer.
//!
//! Why not a stock client: a pooled connection's socket is in the kernel's "interactive"
//! mode (it sends a request soon after receiving an answer), so it delays its ACKs by up to
//! 40 ms. An upstream that writes its answer in two pieces — head, then body: Python's
//! `http.server`, many small frameworks — has its second piece held back by Nagle's algorithm
//! until that ACK arrives, and every request after the first on a connection waited ~42 ms.
//! Re-arming `TCP_QUICKACK` after each read ACKs at once whatever the upstream does. No stock
//! client exposes its socket, so this one owns its connector.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::HeaderMap;
use http::{StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One upstream's client (cheap to clone: the pool is shared).
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
}

impl Client {
    /// `proxy`: an `http://[user:password@]host:port` forward proxy, or none.
    pub fn new(
        tls: rustls::ClientConfig,
        proxy: Option<&str>,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> anyhow::Result<Client> {
        let proxy = proxy.map(Proxy::parse).transpose()?.map(Arc::new);
        let connector = Connector {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            proxy,
            connect_timeout,
        };
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(idle_timeout)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Client { inner })
    }

    /// Sends `req`; the answer's body must be read before `deadline`.
    pub async fn send(
        &self,
        req: http::Request<Full<Bytes>>,
        deadline: tokio::time::Instant,
    ) -> Result<Response, BoxError> {
        let resp = self.inner.request(req).await?;
        let (parts, body) = resp.into_parts();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
            deadline,
        })
    }
}

/// An upstream's answer, its body read under the request's overall deadline.
pub struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: hyper::body::Incoming,
    deadline: tokio::time::Instant,
}

impl Response {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The next piece of the body as it arrives; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, BoxError> {
        loop {
            let frame = tokio::time::timeout_at(self.deadline, self.body.frame())
                .await
                .map_err(|_| "the upstream's answer took longer than the request timeout")?;
            match frame {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// The whole body.
    pub async fn bytes(self) -> Result<Bytes, BoxError> {
        let collected = tokio::time::timeout_at(self.deadline, self.body.collect())
            .await
            .map_err(|_| "the upstream's answer took longer than the request timeout")??;
        Ok(collected.to_bytes())
    }

    /// The whole body as text (lossy).
    pub async fn text(self) -> Result<String, BoxError> {
        Ok(String::from_utf8_lossy(&self.bytes().await?).into_owned())
    }
}

struct Proxy {
    /// `host:port` to connect to.
    authority: String,
    /// `Basic …` when the URL carries credentials.
    authorization: Option<String>,
}

impl Proxy {
    fn parse(url: &str) -> anyhow::Result<Proxy> {
        let uri: Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("proxy {url:?}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            anyhow::bail!("proxy {url:?}: only http:// proxies are supported");
        }
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow::anyhow!("proxy {url:?} has no host"))?
            .as_str();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let port = uri.port_u16().unwrap_or(80);
        let host = hostport
            .rsplit_once(':')
            .filter(|(_, p)| p.parse::<u16>().is_ok())
            .map_or(hostport, |(h, _)| h);
        Ok(Proxy {
            authority: format!("{host}:{port}"),
            authorization: userinfo.map(|u| {
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(u)
                )
            }),
        })
    }
}

#[derive(Clone)]
struct Connector {
    tls: tokio_rustls::TlsConnector,
    proxy: Option<Arc<Proxy>>,
    connect_timeout: Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Conn>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            tokio::time::timeout(this.connect_timeout, this.connect(dst))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
        })
    }
}

impl Connector {
    async fn connect(self, dst: Uri) -> io::Result<Conn> {
        let https = match dst.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(invalid(format!("unsupported URL scheme in {dst}"))),
        };
        let host = dst
            .host()
            .ok_or_else(|| invalid(format!("no host in {dst}")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = dst.port_u16().unwrap_or(if https { 443 } else { 80 });
        let mut tcp = match &self.proxy {
            Some(p) => TcpStream::connect(p.authority.as_str()).await?,
            None => TcpStream::connect((host.as_str(), port)).await?,
        };
        tcp.set_nodelay(true)?;
        if !https {
            return Ok(Conn {
                io: TokioIo::new(Io::Plain(QuickAck(tcp))),
                proxied: self.proxy.is_some(),
            });
        }
        if let Some(p) = &self.proxy {
            tunnel(&mut tcp, &host, port, p).await?;
        }
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|e| invalid(format!("{host}: {e}")))?;
        let tls = self.tls.connect(name, QuickAck(tcp)).await?;
        Ok(Conn {
            io: TokioIo::new(Io::Tls(Box::new(tls))),
            proxied: false,
        })
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Asks the proxy for a tunnel (`CONNECT`) and waits for its `2xx`.
async fn tunnel(tcp: &mut TcpStream, host: &str, port: u16, proxy: &Proxy) -> io::Result<()> {
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(auth) = &proxy.authorization {
        head.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).await?;
    // Read byte by byte up to the blank line: nothing of the tunnel's own bytes may be taken.
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\n") {
        if answer.len() > 8192 {
            return Err(io::Error::other(
                "the proxy's answer to CONNECT is too long",
            ));
        }
        answer.push(tcp.read_u8().await?);
    }
    let status_line = String::from_utf8_lossy(&answer);
    let status_line = status_line.lines().next().unwrap_or_default();
    match status_line.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        _ => Err(io::Error::other(format!(
            "the proxy refused the tunnel to {target}: {status_line}"
        ))),
    }
}

/// A TCP stream that ACKs every answer at once (see the module's comment). The kernel leaves
/// quick-ACK mode again by itself, so it is re-armed after each read that brought data.
struct QuickAck(TcpStream);

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            // Best effort: a socket that refuses only loses the optimisation.
            let _ = socket2::SockRef::from(&self.0).set_tcp_quickack(true);
        }
        polled
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

enum Io {
    Plain(QuickAck),
    Tls(Box<tokio_rustls::client::TlsStream<QuickAck>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A pooled connection; `proxied` makes the client send absolute-form targets, which a
/// forward proxy needs for plain HTTP.
struct Conn {
    io: TokioIo<Io>,
    proxied: bool,
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new().proxy(self.proxied)
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
