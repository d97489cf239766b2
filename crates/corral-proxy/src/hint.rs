//! A redirect to a host the same binary may not reach is logged as a hint, with the
//! policy change that would allow it, when the `3xx` passes through — before the client
//! follows it and meets a refusal whose cause (a pre-signed URL on another host, say) is
//! no longer on screen.

use std::time::Instant;

use corral_policy::{Decision, Report};

use crate::conn::{Ctx, Outcome};
use crate::head::{self, RequestHead};

impl Ctx {
    /// Checks `location` (a `Location` header value) of a response to `request`.
    pub(crate) fn redirect_hint(&self, request: &RequestHead, location: &str) {
        let Ok(who) = self.who() else {
            return;
        };
        let Some((host, port)) = redirect_target(location) else {
            return;
        };
        if host == request.target.host() && port == request.target.port() {
            return;
        }
        let (matcher, generation) = self.policy().current();
        let decision = matcher.decide(who, &host, port, None);
        drop(matcher);
        if decision.is_allow() {
            return;
        }
        let from = head::host_port(request.target.host(), request.target.port(), 0);
        let mut report = Report::new(who, &host, port, None, &decision);
        if let Decision::Deny(_) = decision {
            report.decision = "hint".into();
            report.reason = format!(
                "{from} redirected {} to {location}, which it may not reach: {}",
                report.binary, report.reason
            );
        }
        let outcome = Outcome::without_upstream(0, generation, Instant::now());
        self.record("redirect_hint", report, outcome);
    }
}

/// The host and port an absolute (`https://h[:p]/…`) or scheme-relative (`//h/…`)
/// redirect leads to; `None` for a relative one (same host).
fn redirect_target(location: &str) -> Option<(String, u16)> {
    let loc = location.trim();
    let lower = loc.get(..8).unwrap_or(loc).to_ascii_lowercase();
    let (rest, default) = if lower.starts_with("https://") {
        (&loc[8..], 443)
    } else if lower.starts_with("http://") {
        (&loc[7..], 80)
    } else if let Some(r) = loc.strip_prefix("//") {
        (r, 443)
    } else {
        return None;
    };
    let auth = rest.split(['/', '?', '#']).next().unwrap_or("");
    head::parse_authority(auth, Some(default)).ok()
}

#[cfg(test)]
mod tests {
    use super::redirect_target;

    #[test]
    fn redirect_targets() {
        assert_eq!(
            redirect_target("https://bucket.s3.test/k?sig=1"),
            Some(("bucket.s3.test".into(), 443))
        );
        assert_eq!(
            redirect_target("HTTP://a.test:8080"),
            Some(("a.test".into(), 8080))
        );
        assert_eq!(
            redirect_target("//cdn.test/x"),
            Some(("cdn.test".into(), 443))
        );
        assert_eq!(redirect_target("/relative"), None);
        assert_eq!(redirect_target("https://u@evil.test/"), None);
    }
}
