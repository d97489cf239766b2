//! The decision about one connection or request, then the dial: one policy snapshot
//! decides (and a terminated-TLS endpoint without a CA is refused), the allowed name is
//! dialled, and what was allowed is kept to be decided again on reload.

use std::time::Instant;

use corral_policy::{Decision, Deny, DenyReason, HttpRequestInfo, Identity, Report};

use crate::conn::{request_parts, Ctx, Refusal};
use crate::dial::{self, DialError, Dialled};
use crate::head::RequestHead;
use crate::revoke::Grant;

impl Ctx {
    /// What an allowed request may reach, to decide it again on reload.
    pub(crate) fn grant(
        &self,
        who: &Identity,
        head: &RequestHead,
        addr: std::net::SocketAddr,
        classified: bool,
    ) -> Grant {
        let (method, path) = request_parts(head);
        Grant {
            who: who.clone(),
            host: head.target.host().to_string(),
            port: head.target.port(),
            method,
            path,
            classified: classified.then(|| addr.ip()),
        }
    }

    /// Decides for `host:port` (and the request, for plain HTTP or inside a terminated
    /// tunnel) with one policy snapshot: the allow, its report and the generation.
    pub(crate) fn decide(
        &self,
        who: &Identity,
        head: &RequestHead,
    ) -> Result<(corral_policy::Allow, Report, u64), Box<Refusal>> {
        let host = head.target.host();
        let port = head.target.port();
        let (method, path) = request_parts(head);
        let info = match (&method, &path) {
            (Some(m), Some(p)) => Some(HttpRequestInfo { method: m, path: p }),
            _ => None,
        };
        let decide_start = Instant::now();
        let (matcher, generation) = self.policy().current();
        let mut decision = matcher.decide(who, host, port, info.as_ref());
        drop(matcher);
        // Requests that must be decided one by one cannot cross a proxy without a CA.
        if let Decision::Allow(a) = &decision {
            if a.inspect && self.config().intercept.is_none() {
                decision = Decision::Deny(Deny {
                    binary_policy: Some(a.policy.clone()),
                    reason: DenyReason::RequestsNotVisible {
                        policy: a.policy.clone(),
                    },
                });
            }
        }
        let report = Report::new(who, host, port, info.as_ref(), &decision);
        match decision {
            Decision::Deny(_) => {
                self.config()
                    .metrics
                    .setup_seconds
                    .observe(decide_start.elapsed());
                Err(Box::new(Refusal {
                    status: 403,
                    report,
                    generation,
                    addresses: Vec::new(),
                }))
            }
            Decision::Allow(allow) => Ok((allow, report, generation)),
        }
    }

    /// [`Ctx::decide`], then dials; Ok carries what allowed it. Ok carries whether a CONNECT must be
    /// terminated to decide its requests.
    pub(crate) async fn decide_and_dial(
        &self,
        who: &Identity,
        head: &RequestHead,
        tunnel: bool,
    ) -> Result<(Dialled, Report, u64, corral_policy::Allow), Refusal> {
        let host = head.target.host();
        let port = head.target.port();
        let decide_start = Instant::now();
        let (allow, mut report, generation) = self.decide(who, head).map_err(|r| *r)?;
        let metrics = &self.config().metrics;
        let config = self.config();
        let dialled = match &config.upstream_proxy {
            Some(up) => {
                dial::dial_upstream_proxy(config, up, host, port, &allow.allowed_ips, tunnel).await
            }
            None => dial::dial_direct(config, host, port, &allow.allowed_ips).await,
        };
        metrics.setup_seconds.observe(decide_start.elapsed());
        match dialled {
            Ok(d) => Ok((d, report, generation, allow)),
            Err(e) => {
                let (status, code) = e.status_code();
                let addresses = match &e {
                    DialError::AddressClass(r) => r.iter().map(|r| r.addr.to_string()).collect(),
                    DialError::Refused(a) | DialError::Timeout(a) => {
                        a.iter().map(ToString::to_string).collect()
                    }
                    _ => Vec::new(),
                };
                report.decision = "deny".into();
                report.error = Some(code.into());
                report.reason = e.reason(host, port);
                report.suggestion = match &e {
                    DialError::AddressClass(refused) => Some(allowed_ips_suggestion(
                        &allow.policy,
                        &allow.endpoint_host,
                        port,
                        refused,
                    )),
                    _ => None,
                };
                Err(Refusal {
                    status,
                    report,
                    generation,
                    addresses,
                })
            }
        }
    }
}

/// The YAML that would let the endpoint reach the refused addresses.
fn allowed_ips_suggestion(
    policy: &str,
    endpoint: &str,
    port: u16,
    refused: &[crate::addr::RefusedAddr],
) -> String {
    let mut nets: Vec<String> = Vec::new();
    for r in refused {
        let net = match r.addr {
            std::net::IpAddr::V4(v4) => format!("{v4}/32"),
            std::net::IpAddr::V6(v6) => format!("{v6}/128"),
        };
        if !nets.contains(&net) {
            nets.push(net);
        }
    }
    format!(
        "network_policies:\n  {policy}:\n    endpoints:\n      - host: {endpoint}\n        port: {port}\n        allowed_ips: [{}]\n",
        nets.join(", ")
    )
}
