//! Real HTTP and HTTPS servers on loopback, driven by a closure, recording what they received.
//!
//! Each server runs on its own thread with its own runtime, so both synchronous and async
//! tests can use it, and stops when dropped.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent on the request line.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
}

impl Recorded {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the upstream answers.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Reply {
    /// `200 OK` with a text body.
    pub fn ok(body: impl Into<Bytes>) -> Reply {
        Reply::status(200, body)
    }

    pub fn status(status: u16, body: impl Into<Bytes>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.into(),
        }
    }

    /// `302 Found` to `location`.
    pub fn redirect(location: &str) -> Reply {
        Reply::status(302, "").header("location", location)
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

/// A running upstream server.
pub struct Upstream {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Plain HTTP on 127.0.0.1, answering with `handler`.
    pub fn http(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Upstream {
        Upstream::start(IpAddr::V4(Ipv4Addr::LOCALHOST), None, handler)
    }

    /// HTTPS on 127.0.0.1 with `leaf`'s certificate, answering with `handler`.
    pub fn https(
        leaf: &crate::tls::Leaf,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        Upstream::start(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(leaf.server_config()),
            handler,
        )
    }

    /// HTTPS offering HTTP/2 (ALPN `h2`, then `http/1.1`), answering with `handler`.
    pub fn https_h2(
        leaf: &crate::tls::Leaf,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        let mut config = (*leaf.server_config()).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Upstream::start(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(Arc::new(config)),
            handler,
        )
    }

    /// Answers every request with `hello from upstream: METHOD TARGET`.
    pub fn echo(tls: Option<&crate::tls::Leaf>) -> Upstream {
        let config = tls.map(|leaf| leaf.server_config());
        Upstream::start(IpAddr::V4(Ipv4Addr::LOCALHOST), config, |req| {
            Reply::ok(format!(
                "hello from upstream: {} {}\n",
                req.method, req.target
            ))
        })
    }

    /// A server on `ip` (any loopback address, or an address in a test's namespace), port 0.
    pub fn start(
        ip: IpAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        let std_listener =
            std::net::TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind upstream");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (tx, rx) = oneshot::channel();
        let recorded = requests.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("upstream runtime");
            runtime.block_on(serve(std_listener, tls, handler, recorded, rx));
        });
        Upstream {
            addr,
            requests,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("requests lock").clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: Arc<Handler>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    shutdown: oneshot::Receiver<()>,
) {
    serve_http(listener, tls, shutdown, move |request: Recorded| {
        let reply = handler(&request);
        recorded.lock().expect("requests lock").push(request);
        let mut response = hyper::Response::builder().status(reply.status);
        for (name, value) in &reply.headers {
            response = response.header(name, value);
        }
        response
            .body(Full::new(reply.body))
            .expect("valid response")
    })
    .await
}

/// The accept loop every test server shares: HTTP/1.1 (over TLS when `tls` is set) on
/// `listener` until `shutdown`; each request's body is read whole and handed to `respond`
/// as a [`Recorded`], whose answer may be any body (streamed ones included).
pub(crate) async fn serve_http<B>(
    listener: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut shutdown: oneshot::Receiver<()>,
    respond: impl Fn(Recorded) -> hyper::Response<B> + Send + Sync + 'static,
) where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let respond = Arc::new(respond);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let respond = respond.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<Incoming>| {
                let respond = respond.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let request = Recorded {
                        method: parts.method.to_string(),
                        target: parts
                            .uri
                            .path_and_query()
                            .map(|pq| pq.to_string())
                            .unwrap_or_else(|| "/".into()),
                        headers: parts
                            .headers
                            .iter()
                            .map(|(k, v)| {
                                (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into())
                            })
                            .collect(),
                        body,
                        version: format!("{:?}", parts.version),
                    };
                    Ok::<_, Infallible>(respond(request))
                }
            });
            let builder = hyper::server::conn::http1::Builder::new();
            match acceptor {
                Some(acceptor) => {
                    if let Ok(tls) = acceptor.accept(stream).await {
                        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                            let _ = hyper::server::conn::http2::Builder::new(
                                hyper_util::rt::TokioExecutor::new(),
                            )
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                        } else {
                            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                        }
                    }
                }
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
            }
        });
    }
}
