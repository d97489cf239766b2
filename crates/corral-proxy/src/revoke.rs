//! Revocation: an open tunnel or kept-alive connection was allowed by the policy of its
//! time; on every reload it is decided again, and cut when the new policy refuses it.

use std::net::IpAddr;

use corral_policy::{Decision, HttpRequestInfo, Identity, Report};

use crate::policy_handle::PolicyHandle;

/// What an open connection was allowed to reach.
#[derive(Clone)]
pub(crate) struct Grant {
    pub who: Identity,
    pub host: String,
    pub port: u16,
    pub method: Option<String>,
    pub path: Option<String>,
    /// The address dialled when it was classified against `allowed_ips` (not an operator's
    /// route, not a chained proxy): a new policy must still permit it.
    pub classified: Option<IpAddr>,
}

/// Resolves at the first reload after generation `decided` whose policy refuses `grant`,
/// with the `revoked` report and that policy's generation; never resolves while every new
/// policy still allows it.
pub(crate) async fn revoked(policy: PolicyHandle, grant: Grant, decided: u64) -> (Report, u64) {
    let mut changes = policy.changes();
    // A reload between the decision and this subscription is not missed.
    if policy.generation() != decided {
        if let Some(found) = refused_now(&policy, &grant) {
            return found;
        }
    }
    loop {
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
        if let Some(found) = refused_now(&policy, &grant) {
            return found;
        }
    }
}

/// The policy in force now, asked about `grant`: `Some` when it refuses it.
pub(crate) fn refused_now(policy: &PolicyHandle, grant: &Grant) -> Option<(Report, u64)> {
    let (matcher, generation) = policy.current();
    let info = match (&grant.method, &grant.path) {
        (Some(m), Some(p)) => Some(HttpRequestInfo { method: m, path: p }),
        _ => None,
    };
    let decision = matcher.decide(&grant.who, &grant.host, grant.port, info.as_ref());
    let mut report = Report::new(
        &grant.who,
        &grant.host,
        grant.port,
        info.as_ref(),
        &decision,
    );
    match &decision {
        Decision::Deny(_) => {}
        Decision::Allow(allow) => {
            let refused = crate::addr::permitted(grant.classified?, &allow.allowed_ips).err()?;
            report.error = Some("address_class_refused".into());
            report.reason = format!(
                "{} ({}) is no longer covered by the endpoint's allowed_ips",
                refused.addr, refused.class
            );
        }
    }
    report.decision = "revoked".into();
    report.reason = format!(
        "policy generation {generation} no longer allows this open connection, so it was closed: {}",
        report.reason
    );
    Some((report, generation))
}
