//! HTTP forwarding, one exchange per request: absolute-form plain HTTP, and origin-form
//! requests inside a terminated TLS tunnel (sent to the server over verified TLS). Body
//! framing preserved both ways, hop-by-hop headers dropped, keep-alive towards the client.

use std::time::Instant;

use corral_policy::Identity;
use tokio::io::AsyncWriteExt;

use super::{Conn, Outcome, Step};
use crate::head::{self, BodyFraming, RequestHead};
use crate::io::{Buffered, Stream, UpstreamStream};
use crate::relay;

impl Conn {
    /// One request: absolute-form plain HTTP, or origin-form inside a terminated tunnel.
    pub(crate) async fn forward(
        &mut self,
        who: &Identity,
        head: &RequestHead,
        started: Instant,
    ) -> Step {
        let framing = head::body_framing(&head.headers).unwrap_or(BodyFraming::None);
        let client_close = head::wants_close(head);
        let kind = self.http_kind();
        let tls = self.origin.is_some();
        // An unread body would be taken for the next request: close unless bodiless.
        let close = client_close || framing != BodyFraming::None;
        // Inside a tunnel, the connection the last request left open is reused if the
        // policy has not changed since it was dialled (its address was checked then) and
        // the server has not closed it; the request is decided all the same.
        let generation_now = self.ctx.policy().generation();
        let mut spare = self
            .spare
            .take()
            .filter(|s| tls && s.generation == generation_now);
        if let Some(s) = &mut spare {
            if !s.alive().await {
                spare = None;
            }
        }
        let decided = match spare {
            Some(s) => self
                .ctx
                .decide(who, head)
                .map(|(allow, report, generation)| (Reach::Open(s), report, generation, allow))
                .map_err(|r| *r),
            None => self.ctx.decide_and_dial(who, head, tls).await.map(
                |(d, report, generation, allow)| (Reach::Dialled(d), report, generation, allow),
            ),
        };
        let (reach, report, generation, allow) = match decided {
            Ok(d) => d,
            Err(r) => {
                self.refuse(kind, r, started, close).await;
                return if close { Step::Close } else { Step::Continue };
            }
        };
        let (ip_addr, classified) = match &reach {
            Reach::Open(s) => (s.addr, s.classified),
            Reach::Dialled(d) => (d.addr, d.classified),
        };
        let addr = ip_addr.to_string();
        let grant = self.ctx.grant(who, head, ip_addr, classified);
        // Secrets go only where the wire is protected: TLS, or a server on this host.
        let protected =
            tls || (ip_addr.ip().is_loopback() && self.config().upstream_proxy.is_none());
        let substituted = protected
            .then(|| crate::credentials::substitute(head, &allow.credentials))
            .flatten();
        let sent = substituted.as_ref().unwrap_or(head);
        let idle = self.config().limits.idle_timeout;
        let upstream = match reach {
            Reach::Open(s) => s.up,
            Reach::Dialled(dialled) if tls => {
                let config = self.config();
                let intercept = config.intercept.clone();
                let timeout = config.limits.connect_timeout;
                let connected = match intercept {
                    Some(i) => {
                        crate::intercept::upstream::connect(
                            i.upstream.http1(),
                            head.target.host(),
                            dialled.stream,
                            timeout,
                        )
                        .await
                    }
                    None => Err("the proxy has no CA to terminate TLS with".into()),
                };
                match connected {
                    Ok(s) => Buffered::new(Stream::Tls(Box::new(s)), idle),
                    Err(reason) => {
                        // Nothing of the request has been sent.
                        let mut r = self.ctx.refusal(502, "upstream_tls", &reason, Some(head));
                        r.generation = generation;
                        r.addresses = vec![addr];
                        self.refuse(kind, r, started, close).await;
                        return if close { Step::Close } else { Step::Continue };
                    }
                }
            }
            Reach::Dialled(dialled) => Buffered::new(Stream::Plain(dialled.stream), idle),
        };
        // A reload that refuses this request cuts its exchange (and the connection).
        let revoked = Box::pin(crate::revoke::revoked(
            self.ctx.policy().clone(),
            grant.clone(),
            generation,
        ));
        let exchanged = tokio::select! {
            x = Box::pin(self.exchange(upstream, sent, framing, client_close)) => x,
            (revoking, now) = revoked => {
                let _ = self.client.inner.shutdown().await;
                let outcome = Outcome {
                    status: 0,
                    generation: now,
                    addresses: vec![addr],
                    bytes: Default::default(),
                    started,
                };
                self.ctx.record(kind, revoking, outcome);
                return Step::Close;
            }
        };
        let (bytes, status, keep) = match exchanged {
            Ok((bytes, status, keep, reusable)) => {
                self.spare = reusable.map(|up| {
                    Box::new(Spare {
                        up,
                        addr: ip_addr,
                        classified,
                        generation,
                    })
                });
                (bytes, status, keep)
            }
            Err((bytes, started_response)) => {
                if !started_response {
                    let _ = self
                        .client
                        .inner
                        .write_all(
                            b"HTTP/1.1 502 Bad Gateway\r\nX-Corral-Error: upstream_failed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                }
                (bytes, 502, false)
            }
        };
        let outcome = Outcome {
            status,
            generation,
            addresses: vec![addr],
            bytes,
            started,
        };
        self.ctx.record(kind, report, outcome);
        if keep {
            self.kept = Some((grant, generation));
            Step::Continue
        } else {
            Step::Close
        }
    }

    /// Sends the request upstream and the response back: Ok((bytes, status, keep-alive,
    /// the upstream connection if it can carry the tunnel's next request)), or
    /// Err((bytes, whether the response had already started)).
    async fn exchange(
        &mut self,
        mut up: Buffered<UpstreamStream>,
        head: &RequestHead,
        framing: BodyFraming,
        client_close: bool,
    ) -> Result<Exchanged, (relay::Relayed, bool)> {
        let max = self.config().limits.max_header_bytes;
        let mut bytes = relay::Relayed::default();
        // Inside a terminated tunnel the upstream proxy (if any) carries a CONNECT tunnel,
        // so the request is origin-form and names no proxy.
        let proxy_auth = match self.origin {
            Some(_) => None,
            None => self
                .config()
                .upstream_proxy
                .as_ref()
                .map(|p| p.authorization.clone()),
        };
        let default_port = if self.origin.is_some() { 443 } else { 80 };
        let mut request = head::upstream_request(head, proxy_auth.is_some(), default_port);
        if let Some(Some(auth)) = proxy_auth {
            let at = request.len() - 2;
            request.splice(
                at..at,
                format!("Proxy-Authorization: {auth}\r\n").into_bytes(),
            );
        }
        if up.inner.write_all(&request).await.is_err() {
            return Err((bytes, false));
        }
        let sent = match framing {
            BodyFraming::None => Ok(0),
            BodyFraming::Length(n) => self.client.copy_exact(n, &mut up.inner).await,
            BodyFraming::Chunked => self.client.copy_chunked(&mut up.inner).await,
        };
        match sent {
            Ok(n) => bytes.up = n,
            Err(_) => return Err((bytes, false)),
        }
        let mut started_response = false;
        loop {
            // Response head; interim 1xx answers are passed on and the loop reads the next.
            let (status, resp_head, len, resp_framing, location, server_close) = loop {
                // Parsed in a sync helper so the header array never lives across an await
                // (it would sit in every connection's future).
                match parse_response(&up.buf, &head.method, client_close) {
                    Ok(Some(parsed)) => break parsed,
                    Ok(None) if up.buf.len() < max => {}
                    _ => return Err((bytes, started_response)),
                }
                match up.fill().await {
                    Ok(n) if n > 0 => {}
                    _ => return Err((bytes, started_response)),
                }
            };
            up.buf.drain(..len);
            if let (300..=399, Some(location)) = (status, &location) {
                self.ctx.redirect_hint(head, location);
            }
            if self.client.inner.write_all(&resp_head).await.is_err() {
                return Err((bytes, true));
            }
            started_response = true;
            if status == 101 {
                // Only an upgrade the client asked for (and the rules allowed, on its GET)
                // becomes a relay; the connection ends with it.
                if !head::websocket_upgrade(head) {
                    return Err((bytes, true));
                }
                let up_early = std::mem::take(&mut up.buf);
                let client_early = std::mem::take(&mut self.client.buf);
                if self.client.inner.write_all(&up_early).await.is_err()
                    || up.inner.write_all(&client_early).await.is_err()
                {
                    return Err((bytes, true));
                }
                // Silent both ways for the idle timeout: closed, like a blind tunnel.
                let idle = self.config().limits.idle_timeout;
                let (relayed, _) =
                    relay::relay_streams(&mut self.client.inner, &mut up.inner, idle).await;
                bytes.up += relayed.up + client_early.len() as u64;
                bytes.down += relayed.down + up_early.len() as u64;
                let _ = self.client.inner.shutdown().await;
                let _ = up.inner.shutdown().await;
                return Ok((bytes, status, false, None));
            }
            if (100..200).contains(&status) {
                continue;
            }
            let copied = match resp_framing {
                ResponseFraming::None => Ok(0),
                ResponseFraming::Length(n) => up.copy_exact(n, &mut self.client.inner).await,
                ResponseFraming::Chunked => up.copy_chunked(&mut self.client.inner).await,
                ResponseFraming::UntilClose => up.copy_to_end(&mut self.client.inner).await,
            };
            return match copied {
                Ok(n) => {
                    bytes.down = n;
                    let keep = !client_close && resp_framing != ResponseFraming::UntilClose;
                    if !keep {
                        let _ = self.client.inner.shutdown().await;
                    }
                    let reusable = self.origin.is_some()
                        && !server_close
                        && status != 101
                        && resp_framing != ResponseFraming::UntilClose
                        && up.buf.is_empty();
                    Ok((bytes, status, keep, reusable.then_some(up)))
                }
                Err(_) => Err((bytes, true)),
            };
        }
    }
}

/// A complete response head: (status, head for the client, length, body framing,
/// `Location`, whether the server closes the connection after it).
type ParsedResponse = (u16, Vec<u8>, usize, ResponseFraming, Option<String>, bool);

/// What one exchange did: bytes, status, client keep-alive, the reusable upstream.
type Exchanged = (relay::Relayed, u16, bool, Option<Buffered<UpstreamStream>>);

/// Where a request goes: a fresh connection, or the one the tunnel's last request left.
enum Reach {
    Dialled(crate::dial::Dialled),
    Open(Box<Spare>),
}

/// An upstream connection kept inside a terminated tunnel.
pub(crate) struct Spare {
    up: Buffered<UpstreamStream>,
    addr: std::net::SocketAddr,
    classified: bool,
    /// The policy generation it was dialled under.
    generation: u64,
}

impl Spare {
    /// False if the server closed it (or sent something unasked) while it waited.
    async fn alive(&mut self) -> bool {
        // One poll: a pending read means the connection is open and quiet. `fill` grows
        // the buffer before it reads, so a cancelled poll leaves it to be cut back.
        let had = self.up.buf.len();
        let pending = tokio::time::timeout(std::time::Duration::ZERO, self.up.fill())
            .await
            .is_err();
        self.up.buf.truncate(had);
        pending
    }
}

/// Ok(None) = need more bytes; Err = malformed.
fn parse_response(
    buf: &[u8],
    method: &str,
    client_close: bool,
) -> Result<Option<ParsedResponse>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; head::MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let status = resp.code.unwrap_or(502);
            let framing = response_framing(method, status, resp.headers);
            let close = client_close || framing == ResponseFraming::UntilClose;
            let location = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("location"))
                .map(|h| String::from_utf8_lossy(h.value).into_owned());
            let server_close = resp.version == Some(0)
                || resp.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("connection")
                        && String::from_utf8_lossy(h.value)
                            .split(',')
                            .any(|t| t.trim().eq_ignore_ascii_case("close"))
                });
            Ok(Some((
                status,
                rewrite_response(&resp, close),
                len,
                framing,
                location,
                server_close,
            )))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResponseFraming {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

fn response_framing(
    method: &str,
    status: u16,
    headers: &[httparse::Header<'_>],
) -> ResponseFraming {
    if method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304 {
        return ResponseFraming::None;
    }
    let mut length = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.split(',').next_back().map(str::trim) == Some("chunked") {
                return ResponseFraming::Chunked;
            }
            return ResponseFraming::UntilClose;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            if length.is_none() {
                return ResponseFraming::UntilClose;
            }
        }
    }
    match length {
        Some(n) => ResponseFraming::Length(n),
        None => ResponseFraming::UntilClose,
    }
}

/// The response head for the client: hop-by-hop headers dropped, our own `Connection`.
fn rewrite_response(resp: &httparse::Response<'_, '_>, close: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        resp.code.unwrap_or(502),
        resp.reason.unwrap_or("")
    )
    .into_bytes();
    let mut dropped: Vec<String> = vec![
        "connection".into(),
        "keep-alive".into(),
        "proxy-connection".into(),
    ];
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for t in String::from_utf8_lossy(h.value).split(',') {
                dropped.push(t.trim().to_ascii_lowercase());
            }
        }
    }
    let switching = resp.code == Some(101);
    for h in resp.headers.iter() {
        let lower = h.name.to_ascii_lowercase();
        if dropped.contains(&lower) && !(switching && lower == "upgrade") {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if switching {
        out.extend_from_slice(b"Connection: Upgrade\r\n\r\n");
    } else if (100..200).contains(&resp.code.unwrap_or(0)) {
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(if close {
            b"Connection: close\r\n\r\n"
        } else {
            b"Connection: keep-alive\r\n\r\n"
        });
    }
    out
}
