//! HTTP/2 inside a terminated tunnel, when the server chose `h2` and so did the client:
//! one upstream connection carries every stream, and each request is decided on its own
//! (method, canonical path) by the same decision as HTTP/1.1 before it is sent — with the
//! policy in force when the stream starts, so after a reload the open connection carries
//! only what the new policy allows. A stream still in flight when a reload refuses its
//! request is reset (its response cut), like an HTTP/1.1 exchange; the connection and its
//! other streams go on.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use corral_policy::Report;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::{report_body, Ctx, Outcome, Refusal};
use crate::head::{self, RequestHead, Target};
use crate::intercept::Prefixed;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;
type Upstream = hyper::client::conn::http2::SendRequest<Incoming>;

/// Headers that describe one hop (RFC 9113 §8.2.2 forbids them in HTTP/2 anyway).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "transfer-encoding",
    "upgrade",
    "host",
];

pub(crate) async fn serve(
    ctx: Ctx,
    client: tokio_rustls::server::TlsStream<Prefixed>,
    upstream: tokio_rustls::client::TlsStream<TcpStream>,
    host: String,
    port: u16,
    dialled: (SocketAddr, bool),
) {
    let Ok((send, connection)) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(upstream)).await
    else {
        return;
    };
    let driver = tokio::spawn(connection);
    let ctx = Arc::new(ctx);
    let target = Arc::new((host, port));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (ctx, send, target) = (ctx.clone(), send.clone(), target.clone());
        async move { Ok::<_, Infallible>(exchange(&ctx, send, req, &target.0, target.1, dialled).await) }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(client), service)
        .await;
    driver.abort();
}

async fn exchange(
    ctx: &Arc<Ctx>,
    mut send: Upstream,
    req: Request<Incoming>,
    host: &str,
    port: u16,
    (addr, classified): (SocketAddr, bool),
) -> Response<Body> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let method = parts.method.to_string();
    let raw_path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let refuse = |status: u16, code: &str, reason: String| {
        let mut r = ctx.refusal(status, code, &reason, None);
        r.report.host = host.to_string();
        r.report.port = port;
        r.report.method = Some(method.clone());
        r.report.path = Some(raw_path.clone());
        answer(ctx, r, started)
    };
    // `:authority` (or `Host`) must name the tunnel's target: no domain fronting.
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
    let matches = authority
        .as_deref()
        .and_then(|a| head::parse_authority(a, Some(443)).ok())
        .is_some_and(|(h, p)| h.trim_end_matches('.') == host.trim_end_matches('.') && p == port);
    if !matches {
        return refuse(
            400,
            "host_mismatch",
            format!(
                "the request's authority ({}) is not the tunnel's target {host}:{port}",
                authority.as_deref().unwrap_or("none")
            ),
        );
    }
    let path = match corral_policy::canonical_path(&raw_path, true) {
        Ok(p) => p,
        Err(e) => return refuse(400, "bad_target", e.to_string()),
    };
    let head = RequestHead {
        method: method.clone(),
        target: Target::Forward {
            host: host.to_string(),
            port,
            path: path.clone(),
        },
        version: 1,
        headers: Vec::new(),
    };
    let who = match ctx.who() {
        Ok(w) => w.clone(),
        Err(_) => return refuse(403, "unattributed", "the connection has no owner".into()),
    };
    let (allow, report, generation) = match ctx.decide(&who, &head) {
        Ok(decided) => decided,
        Err(r) => return answer(ctx, *r, started),
    };
    let mut upstream = Request::builder()
        .method(parts.method)
        .uri(format!(
            "https://{}{path}",
            head::host_port(host, port, 443)
        ))
        .version(http::Version::HTTP_2);
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || (n == "te" && value != "trailers") {
            continue;
        }
        let substituted = allow
            .credentials
            .iter()
            .find_map(|c| c.apply(n, value.as_bytes()))
            .and_then(|v| http::HeaderValue::from_bytes(&v).ok());
        upstream = upstream.header(name, substituted.unwrap_or_else(|| value.clone()));
    }
    let Ok(upstream) = upstream.body(body) else {
        return refuse(400, "bad_request", "the request cannot be forwarded".into());
    };
    // A reload that refuses this request ends its stream, whether the answer has begun or
    // not.
    let grant = ctx.grant(&who, &head, addr, classified);
    let mut revoked: Revoked = Box::pin(crate::revoke::revoked(
        ctx.policy().clone(),
        grant,
        generation,
    ));
    let sent = tokio::select! {
        sent = send.send_request(upstream) => sent,
        (report, now) = &mut revoked => {
            let r = Refusal { status: 403, report, generation: now, addresses: Vec::new() };
            return answer(ctx, r, started);
        }
    };
    match sent {
        Ok(resp) => {
            let status = resp.status().as_u16();
            if let (300..=399, Some(location)) = (
                status,
                resp.headers()
                    .get(http::header::LOCATION)
                    .and_then(|v| v.to_str().ok()),
            ) {
                ctx.redirect_hint(&head, location);
            }
            let outcome = Outcome::without_upstream(status, generation, started);
            ctx.record("https", report, outcome);
            resp.map(|body| {
                Revocable {
                    body,
                    revoked: Some(revoked),
                    ctx: ctx.clone(),
                    started,
                }
                .boxed_unsync()
            })
        }
        Err(e) => refuse(
            502,
            "upstream_failed",
            format!("the server did not answer the request: {e}"),
        ),
    }
}

/// Records a refusal and renders it as the HTTP/1.1 path does (status, `X-Corral-Error`,
/// the report as JSON).
fn answer(ctx: &Ctx, r: Refusal, started: Instant) -> Response<Body> {
    let code = r.report.error.clone().unwrap_or_else(|| "error".into());
    let body = report_body(&r.report);
    let status = r.status;
    let outcome = Outcome {
        status,
        generation: r.generation,
        addresses: r.addresses,
        bytes: Default::default(),
        started,
    };
    ctx.record("https", r.report, outcome);
    Response::builder()
        .status(status)
        .header("x-corral-error", code)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .unwrap_or_else(|_| {
            Response::new(
                http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
        })
}

type Revoked = Pin<Box<dyn Future<Output = (Report, u64)> + Send>>;

/// A response body that ends in an error (the client's stream is reset, the server's
/// cancelled) when a reload refuses the request it answers; the cut is recorded like an
/// HTTP/1.1 revocation.
struct Revocable {
    body: Incoming,
    revoked: Option<Revoked>,
    ctx: Arc<Ctx>,
    started: Instant,
}

impl hyper::body::Body for Revocable {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(Poll::Ready((report, now))) = this.revoked.as_mut().map(|r| r.as_mut().poll(cx))
        {
            this.revoked = None;
            let outcome = Outcome::without_upstream(0, now, this.started);
            this.ctx.record("https", report, outcome);
            return Poll::Ready(Some(Err(
                "the request was revoked by a policy reload".into()
            )));
        }
        Pin::new(&mut this.body).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
