//! An allowed CONNECT whose requests the policy checks: answer 200, terminate the
//! client's TLS, then run the connection's ordinary request loop over it — each request
//! (keep-alive ones too) is decided, dialled and forwarded by the same code as plain HTTP,
//! with TLS towards the server.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;

use tokio::io::AsyncWriteExt;

use super::{Conn, Outcome, Tunnel};
use crate::intercept::accept::{self, Prefixed};
use crate::intercept::upstream;
use crate::io::{Buffered, Stream};

impl Conn {
    /// Type-erased: the session runs [`Conn::run`], which called this.
    pub(crate) fn intercept(self, t: Tunnel) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(self.intercept_inner(t))
    }

    async fn intercept_inner(self, t: Tunnel) {
        let Conn { ctx, client, .. } = self;
        let Tunnel {
            dialled,
            report,
            generation,
            started,
            ..
        } = t;
        let dialled = dialled;
        let Some(intercept) = ctx.config().intercept.clone() else {
            return;
        };
        let Stream::Plain(mut tcp) = client.inner else {
            return;
        };
        let host = report.host.clone();
        let port = report.port;
        let ok = tcp
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .is_ok();
        let outcome = |status| Outcome::without_upstream(status, generation, started);
        if !ok {
            return;
        }
        // The server is asked first: HTTP/2 is offered to the client only if the server
        // chose it. If this handshake fails, the session speaks HTTP/1.1 and each request
        // reports the failure (a 502 naming it) when it tries its own connection.
        let limits = ctx.config().limits.clone();
        let dialled_at = (dialled.addr, dialled.classified);
        let upstream_h2 = upstream::connect(
            intercept.upstream.alpn(),
            &host,
            dialled.stream,
            limits.connect_timeout,
        )
        .await
        .ok()
        .filter(|tls| tls.get_ref().1.alpn_protocol() == Some(b"h2"));
        let h2 = upstream_h2.is_some();
        let timeout = limits.header_read_timeout;
        let tls = match accept::accept(
            &intercept,
            &host,
            h2,
            Prefixed::new(client.buf, tcp),
            timeout,
        )
        .await
        {
            Ok(tls) => tls,
            Err((code, reason)) => {
                // Nothing can be answered in HTTP before the handshake: record it and close.
                let mut r = ctx.refusal(0, code, &reason, None);
                r.report.host = host;
                r.report.port = port;
                ctx.record("connect", r.report, outcome(0));
                return;
            }
        };
        ctx.record("connect", report, outcome(200));
        let metrics = ctx.config().metrics.clone();
        metrics.tunnels_active.fetch_add(1, Relaxed);
        if let (Some(upstream), Some(b"h2")) = (upstream_h2, tls.get_ref().1.alpn_protocol()) {
            super::h2::serve(ctx, tls, upstream, host, port, dialled_at).await;
            metrics.tunnels_active.fetch_sub(1, Relaxed);
            return;
        }
        let idle = ctx.config().limits.idle_timeout;
        let session = Conn {
            ctx,
            client: Buffered::new(Stream::Tls(Box::new(tls)), idle),
            kept: None,
            origin: Some((host, port)),
            spare: None,
        };
        let run: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(session.run());
        run.await;
        metrics.tunnels_active.fetch_sub(1, Relaxed);
    }
}
