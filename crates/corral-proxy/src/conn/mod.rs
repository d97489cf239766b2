//! One client connection: read a request head, decide, then tunnel (CONNECT) or forward
//! (plain HTTP, in `forward.rs`: keep-alive, a fresh decision per request); a tunnel the
//! policy terminates goes on in `intercepted.rs` (HTTP/1.1) and `h2.rs` (HTTP/2), request
//! by request.

mod forward;
mod h2;
mod intercepted;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use corral_policy::{Identity, Report};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::attribution::{Attribution, Unattributed};
use crate::config::ProxyConfig;
use crate::dial::Dialled;
use crate::head::{self, HeadError, Parsed, RequestHead, Target};
use crate::io::{Buffered, ClientStream, Stream};
use crate::log::{self, LogRecord};
use crate::policy_handle::PolicyHandle;
use crate::relay;
use crate::revoke::{self, Grant};

/// State shared by every connection of one `serve`.
pub(crate) struct Shared {
    pub config: Arc<ProxyConfig>,
    pub policy: PolicyHandle,
    pub attribution: Arc<dyn Attribution>,
    pub next_conn: std::sync::atomic::AtomicU64,
}

/// Why reading a request head ended without a head.
enum HeadFail {
    /// Clean end (EOF or keep-alive timeout before any byte): just close.
    Closed,
    Timeout,
    Bad(HeadError),
}

/// What the connection knows about itself, apart from the socket.
pub(crate) struct Ctx {
    shared: Arc<Shared>,
    id: u64,
    peer: SocketAddr,
    who: Result<Identity, Unattributed>,
}

pub(crate) struct Conn {
    pub(crate) ctx: Ctx,
    pub(crate) client: Buffered<ClientStream>,
    /// The last plain HTTP request allowed on this kept-alive connection, with the
    /// generation that allowed it: a reload that refuses it closes the idle connection.
    pub(crate) kept: Option<(Grant, u64)>,
    /// Inside a terminated TLS tunnel: its CONNECT target. Requests are then origin-form
    /// for that authority, and go upstream over TLS.
    pub(crate) origin: Option<(String, u16)>,
    /// Inside a terminated tunnel: the upstream connection the last request left open,
    /// for the next one (each request is still decided first).
    pub(crate) spare: Option<Box<forward::Spare>>,
}

/// How a request ended, for its record.
pub(crate) struct Outcome {
    pub(crate) status: u16,
    pub(crate) generation: u64,
    pub(crate) addresses: Vec<String>,
    pub(crate) bytes: relay::Relayed,
    pub(crate) started: Instant,
}

impl Outcome {
    /// An exchange that reached no upstream, or whose upstream is not recorded here: no
    /// addresses, no bytes.
    pub(crate) fn without_upstream(status: u16, generation: u64, started: Instant) -> Outcome {
        Outcome {
            status,
            generation,
            addresses: Vec::new(),
            bytes: Default::default(),
            started,
        }
    }
}

/// What happens after one request.
pub(crate) enum Step {
    Continue,
    Close,
    Tunnel(Box<Tunnel>),
}

/// An allowed CONNECT.
pub(crate) struct Tunnel {
    pub(crate) dialled: Dialled,
    pub(crate) report: Report,
    pub(crate) generation: u64,
    pub(crate) started: Instant,
    /// The proxy terminates its TLS and decides each request.
    pub(crate) inspect: bool,
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
) {
    let id = shared.next_conn.fetch_add(1, Relaxed);
    let _ = stream.set_nodelay(true);
    let attribution = shared.attribution.clone();
    let who = match attribution.identify_known(peer, local) {
        Some(known) => known,
        None if attribution.may_block() => {
            tokio::task::spawn_blocking(move || attribution.identify(peer, local))
                .await
                .unwrap_or_else(|_| Err(Unattributed::new("the attribution task failed")))
        }
        None => attribution.identify(peer, local),
    };
    let idle = shared.config.limits.idle_timeout;
    let conn = Conn {
        ctx: Ctx {
            shared,
            id,
            peer,
            who,
        },
        client: Buffered::new(Stream::Plain(stream), idle),
        kept: None,
        origin: None,
        spare: None,
    };
    conn.run().await;
}

impl Ctx {
    pub(crate) fn config(&self) -> &ProxyConfig {
        &self.shared.config
    }

    pub(crate) fn who(&self) -> Result<&Identity, &Unattributed> {
        self.who.as_ref()
    }

    fn binary(&self) -> (String, Vec<String>) {
        match &self.who {
            Ok(w) => (
                w.exe.display().to_string(),
                w.ancestors
                    .iter()
                    .map(|a| a.display().to_string())
                    .collect(),
            ),
            Err(_) => (String::new(), Vec::new()),
        }
    }

    pub(crate) fn policy(&self) -> &PolicyHandle {
        &self.shared.policy
    }

    /// Records one decision about this connection.
    pub(crate) fn record(&self, kind: &str, report: Report, outcome: Outcome) {
        let metrics = &self.config().metrics;
        metrics.decision(&report.decision, report.error.as_deref().unwrap_or(""));
        metrics.bytes_up_total.fetch_add(outcome.bytes.up, Relaxed);
        metrics
            .bytes_down_total
            .fetch_add(outcome.bytes.down, Relaxed);
        let (sha256, pid) = match &self.who {
            Ok(w) => (w.sha256.clone(), w.pid),
            Err(_) => (None, None),
        };
        let rec = LogRecord {
            conn: self.id,
            sha256,
            pid,
            peer: Some(self.peer.to_string()),
            policy_generation: outcome.generation,
            status: outcome.status,
            addresses: outcome.addresses,
            bytes_up: outcome.bytes.up,
            bytes_down: outcome.bytes.down,
            duration_ms: outcome.started.elapsed().as_secs_f64() * 1000.0,
            ..LogRecord::new(kind, report)
        };
        self.config().log.record(&rec);
    }

    /// A refusal no policy decision produced (`code`, `reason`), about `head` if there is
    /// one, answered with `status`.
    pub(crate) fn refusal(
        &self,
        status: u16,
        code: &str,
        reason: &str,
        head: Option<&RequestHead>,
    ) -> Refusal {
        let (binary, ancestors) = self.binary();
        let (method, path) = head.map(request_parts).unwrap_or_default();
        let report = Report {
            binary,
            ancestors,
            host: head
                .map(|h| h.target.host().to_string())
                .unwrap_or_default(),
            port: head.map_or(0, |h| h.target.port()),
            method,
            path,
            ..log::refusal(code, reason)
        };
        Refusal {
            status,
            report,
            generation: self.shared.policy.generation(),
            addresses: Vec::new(),
        }
    }
}

/// A refused request: what to answer and log.
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) report: Report,
    pub(crate) generation: u64,
    pub(crate) addresses: Vec<String>,
}

impl Conn {
    pub(crate) fn config(&self) -> &ProxyConfig {
        self.ctx.config()
    }

    pub(crate) async fn run(mut self) {
        let mut first = true;
        loop {
            let policy = self.ctx.policy().clone();
            let revocation = self
                .kept
                .take()
                .map(|(grant, generation)| Box::pin(revoke::revoked(policy, grant, generation)));
            let read = tokio::select! {
                h = self.read_head(first) => h,
                Some((report, generation)) = async {
                    match revocation {
                        Some(r) => Some(r.await),
                        None => None,
                    }
                } => {
                    self.revoke_idle(report, generation).await;
                    return;
                }
            };
            let head = match read {
                Ok(h) => h,
                Err(HeadFail::Closed) => {
                    // A connection nobody owns is logged even when it asks nothing: in
                    // seccomp-only mode it is a process outside the sandbox probing the proxy.
                    if let (true, Err(u)) = (first, &self.ctx.who) {
                        let reason =
                            format!("the connection could not be attributed to a process: {u}");
                        self.log_unattributed(&reason);
                    }
                    return;
                }
                Err(HeadFail::Timeout) => {
                    self.refuse_request(
                        408,
                        "header_timeout",
                        "the request head did not arrive in time",
                    )
                    .await;
                    return;
                }
                Err(HeadFail::Bad(e)) => {
                    self.refuse_request(e.status(), e.code(), &e.to_string())
                        .await;
                    return;
                }
            };
            first = false;
            let started = Instant::now();
            let who = match &self.ctx.who {
                Ok(who) => who.clone(),
                Err(u) => {
                    let reason =
                        format!("the connection could not be attributed to a process: {u}");
                    self.refuse_unattributed(&head, &reason, started).await;
                    return;
                }
            };
            let step = match &head.target {
                Target::Connect { .. } => self.connect(&who, &head, started).await,
                // Boxed like a tunnel: the exchange and its revocation watch stay off the
                // future every idle connection holds.
                Target::Forward { .. } => Box::pin(self.forward(&who, &head, started)).await,
            };
            match step {
                Step::Continue => {}
                Step::Close => return,
                Step::Tunnel(t) if t.inspect => {
                    // Boxed (and type-erased: the session runs this same loop).
                    self.intercept(*t).await;
                    return;
                }
                Step::Tunnel(t) => {
                    // Boxed: only an established tunnel pays for its relay's state.
                    let Tunnel {
                        dialled,
                        report,
                        generation,
                        started,
                        ..
                    } = *t;
                    Box::pin(self.tunnel(dialled, report, generation, started)).await;
                    return;
                }
            }
        }
    }

    async fn read_head(&mut self, first: bool) -> Result<RequestHead, HeadFail> {
        let limits = self.config().limits.clone();
        // The first request's clock starts at accept; a kept-alive one's at its first byte.
        let mut deadline = first.then(|| tokio::time::Instant::now() + limits.header_read_timeout);
        loop {
            if !self.client.buf.is_empty() {
                let parsed = match &self.origin {
                    Some((host, port)) => head::parse_origin_request(
                        &self.client.buf,
                        limits.max_header_bytes,
                        host,
                        *port,
                    ),
                    None => head::parse_request(&self.client.buf, limits.max_header_bytes),
                };
                match parsed {
                    Ok(Parsed::Complete(h, len)) => {
                        self.client.buf.drain(..len);
                        return Ok(h);
                    }
                    Ok(Parsed::Partial) => {}
                    Err(e) => return Err(HeadFail::Bad(e)),
                }
                if deadline.is_none() {
                    deadline = Some(tokio::time::Instant::now() + limits.header_read_timeout);
                }
            }
            let wait = match deadline {
                Some(d) => d.saturating_duration_since(tokio::time::Instant::now()),
                None => limits.keepalive_timeout,
            };
            let had = self.client.buf.len();
            self.client.idle = wait;
            let res = self.client.fill().await;
            self.client.idle = limits.idle_timeout;
            match res {
                Ok(0) => return Err(HeadFail::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(if had == 0 && !first {
                        HeadFail::Closed
                    } else {
                        HeadFail::Timeout
                    });
                }
                Err(_) => return Err(HeadFail::Closed),
            }
        }
    }

    /// A malformed or timed-out request: no policy decision was possible.
    async fn refuse_request(&mut self, status: u16, code: &str, reason: &str) {
        let mut r = self.ctx.refusal(status, code, reason, None);
        if let Some((host, port)) = &self.origin {
            r.report.host = host.clone();
            r.report.port = *port;
        }
        let kind = self.http_kind();
        self.refuse(kind, r, Instant::now(), true).await;
    }

    /// The record kind of a request on this connection: `https` inside a terminated
    /// tunnel, `http` for plain forwarding.
    pub(crate) fn http_kind(&self) -> &'static str {
        if self.origin.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Records an unattributed connection that closed before sending a request (nothing
    /// to answer: status 0).
    fn log_unattributed(&self, reason: &str) {
        let r = self.ctx.refusal(0, "unattributed", reason, None);
        let outcome = Outcome {
            status: r.status,
            generation: r.generation,
            addresses: r.addresses,
            bytes: Default::default(),
            started: Instant::now(),
        };
        self.ctx.record("request", r.report, outcome);
    }

    async fn refuse_unattributed(&mut self, head: &RequestHead, reason: &str, started: Instant) {
        let r = self.ctx.refusal(403, "unattributed", reason, Some(head));
        self.refuse(kind_of(head), r, started, true).await;
    }

    /// Records a refusal and answers it: every refusal of the proxy ends here. Logged
    /// before answering: a client holding its 403 finds the record written.
    pub(crate) async fn refuse(&mut self, kind: &str, r: Refusal, started: Instant, close: bool) {
        let outcome = Outcome {
            status: r.status,
            generation: r.generation,
            addresses: r.addresses,
            bytes: Default::default(),
            started,
        };
        self.ctx.record(kind, r.report.clone(), outcome);
        self.send_report(r.status, &r.report, close).await;
    }

    /// A reload refused the last request of this idle kept-alive connection: close it.
    async fn revoke_idle(mut self, report: Report, generation: u64) {
        let outcome = Outcome::without_upstream(0, generation, Instant::now());
        let kind = self.http_kind();
        self.ctx.record(kind, report, outcome);
        let _ = self.client.inner.shutdown().await;
    }

    /// Writes an error answer: status, `X-Corral-Error`, the report as JSON.
    pub(crate) async fn send_report(&mut self, status: u16, report: &Report, close: bool) {
        let body = report_body(report);
        let code = report.error.as_deref().unwrap_or("error");
        let head = format!(
            "HTTP/1.1 {status} {}\r\nX-Corral-Error: {code}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: {}\r\n\r\n",
            reason_phrase(status),
            body.len(),
            if close { "close" } else { "keep-alive" }
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(&body);
        let _ = self.client.inner.write_all(&out).await;
        if close {
            let _ = self.client.inner.shutdown().await;
        }
    }

    async fn connect(&mut self, who: &Identity, head: &RequestHead, started: Instant) -> Step {
        match self.ctx.decide_and_dial(who, head, true).await {
            Err(r) => {
                self.refuse("connect", r, started, false).await;
                Step::Continue
            }
            Ok((dialled, report, generation, allow)) => Step::Tunnel(Box::new(Tunnel {
                dialled,
                report,
                generation,
                started,
                inspect: allow.inspect,
            })),
        }
    }

    async fn tunnel(self, mut dialled: Dialled, report: Report, generation: u64, started: Instant) {
        let Conn { ctx, client, .. } = self;
        let Stream::Plain(tcp) = client.inner else {
            // A CONNECT inside a terminated tunnel is refused by its head parser.
            return;
        };
        let mut client = Buffered {
            inner: tcp,
            buf: client.buf,
            idle: client.idle,
        };
        let mut report = report;
        let mut decided = generation;
        let ok = b"HTTP/1.1 200 Connection Established\r\n\r\n";
        let metrics = ctx.config().metrics.clone();
        let mut bytes = relay::Relayed::default();
        // Bytes the client pipelined after the CONNECT head (e.g. a TLS ClientHello).
        let early = std::mem::take(&mut client.buf);
        bytes.up += early.len() as u64;
        let forwarded = client.inner.write_all(ok).await.is_ok()
            && (early.is_empty() || dialled.stream.write_all(&early).await.is_ok());
        // The head buffer is not needed for the tunnel's lifetime.
        drop(early);
        let addr = dialled.addr.to_string();
        if let (true, Ok(who)) = (forwarded, &ctx.who) {
            let grant = Grant {
                who: who.clone(),
                host: report.host.clone(),
                port: report.port,
                method: None,
                path: None,
                classified: dialled.classified.then(|| dialled.addr.ip()),
            };
            let revoked = Box::pin(revoke::revoked(ctx.policy().clone(), grant, generation));
            let mut revocation = None;
            metrics.tunnels_active.fetch_add(1, Relaxed);
            // Boxed: a tunnel's relay state lives on the heap, not in every connection's future.
            let (r, _) = Box::pin(relay::relay_until(
                client.inner,
                dialled.stream,
                ctx.config().limits.idle_timeout,
                async { revocation = Some(revoked.await) },
            ))
            .await;
            metrics.tunnels_active.fetch_sub(1, Relaxed);
            bytes.up += r.up;
            bytes.down += r.down;
            if let Some((revoking, generation)) = revocation {
                report = revoking;
                decided = generation;
            }
        }
        let outcome = Outcome {
            status: 200,
            generation: decided,
            addresses: vec![addr],
            bytes,
            started,
        };
        ctx.record("connect", report, outcome);
    }
}

/// The body of every refusal the proxy answers: the report as pretty JSON.
pub(crate) fn report_body(report: &Report) -> Vec<u8> {
    let mut body = serde_json::to_vec_pretty(report).unwrap_or_default();
    body.push(b'\n');
    body
}

pub(crate) fn request_parts(head: &RequestHead) -> (Option<String>, Option<String>) {
    match &head.target {
        Target::Forward { path, .. } => (Some(head.method.clone()), Some(path.clone())),
        Target::Connect { .. } => (None, None),
    }
}

fn kind_of(head: &RequestHead) -> &'static str {
    match head.target {
        Target::Connect { .. } => "connect",
        Target::Forward { .. } => "http",
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every open tunnel holds one of these futures: keep it small (5,000 idle tunnels
    /// should fit in a few tens of MiB).
    #[tokio::test]
    async fn a_connection_future_stays_small() {
        let yaml = "version: 1\nnetwork_policies: {}\n";
        let policy = corral_policy::Policy::parse(yaml, "t.yaml").unwrap().policy;
        let shared = Arc::new(Shared {
            config: Arc::new(ProxyConfig::new(crate::DecisionLog::disabled())),
            policy: PolicyHandle::new(Arc::new(policy.compile(&Default::default()))),
            attribution: Arc::new(crate::FixedIdentity::exe("/usr/bin/true")),
            next_conn: Default::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let fut = handle(shared, stream, peer, addr);
        let size = std::mem::size_of_val(&fut);
        eprintln!("connection future: {size} bytes");
        assert!(size < 4096, "connection future is {size} bytes");
    }
}
