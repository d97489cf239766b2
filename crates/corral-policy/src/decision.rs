//! The answer of the matcher: allow (with what matched) or deny (with a typed reason).

/// The outcome of [`crate::Matcher::decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The connection (or request) may go ahead.
    Allow(Allow),
    /// It may not; the reason says why.
    Deny(Deny),
}

impl Decision {
    /// True for [`Decision::Allow`].
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// What allowed a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allow {
    /// The `network_policies` key that matched (e.g. `"github"`).
    pub policy: String,
    /// The endpoint host pattern that matched, as written in the policy.
    pub endpoint_host: String,
    /// The endpoint's `allowed_ips` (empty = only public addresses may be dialled).
    pub allowed_ips: Vec<ipnet::IpNet>,
    /// A TLS connection (no request yet) that the proxy must terminate to decide each
    /// request inside it (see [`crate::model::Endpoint::inspects`]).
    pub inspect: bool,
    /// `enforcement: audit`: the refusal the rules would have given this request.
    pub audited: Option<DenyReason>,
    /// The group's `credentials`: placeholders the proxy replaces in this request.
    pub credentials: Vec<std::sync::Arc<Substitution>>,
}

/// A secret the proxy puts in place of a placeholder. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Substitution {
    /// What the sandbox holds.
    pub placeholder: String,
    /// What the server gets.
    pub secret: String,
    /// Lower-case header names where the placeholder is replaced.
    pub headers: Vec<String>,
}

impl std::fmt::Debug for Substitution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Substitution")
            .field("placeholder", &self.placeholder)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl Substitution {
    /// The header value with the placeholder replaced, if `name` is one of the headers
    /// and the value holds it.
    pub fn apply(&self, name: &str, value: &[u8]) -> Option<Vec<u8>> {
        if !self.headers.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            return None;
        }
        let text = std::str::from_utf8(value).ok()?;
        text.contains(&self.placeholder)
            .then(|| text.replace(&self.placeholder, &self.secret).into_bytes())
    }
}

/// Why a connection was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deny {
    /// The typed reason.
    pub reason: DenyReason,
    /// A policy group that lists this binary and no other, if there is one: the report's
    /// suggestion then adds the endpoint to that group instead of creating a new one (a
    /// shared group would let its other binaries through too). Filled by the matcher;
    /// `None` is always safe.
    pub binary_policy: Option<String>,
}

impl Deny {
    /// A denial with no suggestion target.
    pub fn new(reason: DenyReason) -> Deny {
        Deny {
            reason,
            binary_policy: None,
        }
    }
}

/// Why a connection was refused, most specific first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// No endpoint in any policy matches the host. Code `no_endpoint`.
    NoEndpoint,
    /// The host is listed, but not on this port. Code `port_not_allowed`.
    PortNotAllowed {
        /// Every port listed for this host (sorted, deduplicated).
        allowed_ports: Vec<u16>,
        /// The policies that list the host.
        policies: Vec<String>,
    },
    /// host:port is listed, but not for this binary. Code `binary_not_allowed`.
    BinaryNotAllowed {
        /// The policies that list host:port.
        policies: Vec<String>,
        /// The binary patterns those policies allow, as written.
        binaries: Vec<String>,
    },
    /// The endpoint has L7 rules and none allows this request (or a deny rule matched).
    /// Code `l7_rule_not_matched`.
    L7RuleNotMatched {
        /// The policy whose endpoint was checked.
        policy: String,
        /// The request method.
        method: String,
        /// The request path (with query).
        path: String,
    },
    /// The request path cannot be decided: an encoded slash on an endpoint without
    /// `allow_encoded_slash`, or a malformed escape. Code `encoded_slash` or `bad_path`.
    PathRefused {
        /// The policy whose endpoint was checked.
        policy: String,
        /// The request method.
        method: String,
        /// The request path as sent.
        path: String,
        /// True for `%2F`.
        encoded_slash: bool,
        /// What is wrong with it.
        why: String,
    },
    /// The endpoint allows only some requests (`rules`, `deny_rules`, `access`) and the
    /// connection is an opaque tunnel whose requests corral cannot see (`tls:
    /// passthrough`, or a proxy without a CA), so it is refused rather than let through
    /// unchecked. Code `l7_not_inspectable`.
    RequestsNotVisible {
        /// The policy whose endpoint restricts requests.
        policy: String,
    },
    /// The binary is listed with a `sha256` pin that does not match. Code `binary_hash_mismatch`.
    HashMismatch {
        /// The policy with the pin.
        policy: String,
        /// The pinned hash.
        expected: String,
        /// The executable's actual hash (`"unknown"` when it could not be computed).
        actual: String,
    },
}

impl DenyReason {
    /// Stable machine-readable code, used in the JSON report and logs.
    pub fn code(&self) -> &'static str {
        match self {
            DenyReason::NoEndpoint => "no_endpoint",
            DenyReason::PortNotAllowed { .. } => "port_not_allowed",
            DenyReason::BinaryNotAllowed { .. } => "binary_not_allowed",
            DenyReason::L7RuleNotMatched { .. } => "l7_rule_not_matched",
            DenyReason::PathRefused {
                encoded_slash: true,
                ..
            } => "encoded_slash",
            DenyReason::PathRefused { .. } => "bad_path",
            DenyReason::HashMismatch { .. } => "binary_hash_mismatch",
            DenyReason::RequestsNotVisible { .. } => "l7_not_inspectable",
        }
    }
}
