//! The one renderer of decisions: the proxy's 403 body and log line, and
//! `corral policy explain`, all print a [`Report`].

use crate::decision::{Decision, DenyReason};
use crate::identity::Identity;
use crate::matcher::HttpRequestInfo;

/// A decision, rendered for people (text) and programs (JSON).
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// `"allow"` or `"deny"`.
    pub decision: String,
    /// The reason code when denied (see [`DenyReason::code`]).
    pub error: Option<String>,
    /// The executable that asked.
    pub binary: String,
    /// The name it was started as, when that differs (`git-remote-https`); display only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoked_as: Option<String>,
    /// Its ancestors, parent first.
    pub ancestors: Vec<String>,
    /// The destination host as asked.
    pub host: String,
    /// The destination port.
    pub port: u16,
    /// The HTTP method, for L7 checks.
    pub method: Option<String>,
    /// The HTTP path, for L7 checks.
    pub path: Option<String>,
    /// The policy group that allowed (or, for L7/hash denials, refused) it.
    pub policy: Option<String>,
    /// One human sentence.
    pub reason: String,
    /// YAML that would allow exactly this (when denied).
    pub suggestion: Option<String>,
}

fn list(v: &[String]) -> String {
    v.iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Quote a YAML scalar when a plain one could be misread (JSON strings are valid
/// YAML double-quoted scalars).
fn yaml_scalar(s: &str) -> String {
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"/._-+@~".contains(&b);
    let plain = !s.is_empty()
        && s.bytes().all(safe)
        && !s.starts_with('-')
        && (!s.starts_with('~') || s.starts_with("~/"));
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
    }
}

/// A policy-group name derived from the binary and host: `allow_curl_example_org`.
fn group_name(binary: &str, host: &str) -> String {
    let base = binary.rsplit('/').next().unwrap_or(binary);
    let raw = format!("allow_{base}_{host}");
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_string()
}

fn host_for_yaml(host: &str) -> String {
    let h = host.trim_end_matches('.');
    let h = h
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h);
    let lower = h.to_ascii_lowercase();
    if lower.parse::<std::net::IpAddr>().is_ok() {
        return yaml_scalar(&lower);
    }
    yaml_scalar(&idna::domain_to_ascii(&lower).unwrap_or(lower))
}

fn suggestion(
    who: &Identity,
    host: &str,
    port: u16,
    reason: &DenyReason,
    binary_policy: Option<&str>,
) -> String {
    let exe = who.exe.to_string_lossy();
    let host_y = host_for_yaml(host);
    match reason {
        DenyReason::HashMismatch { policy, actual, .. } => {
            if actual == "unknown" {
                format!(
                    "# corral could not hash the executable; check that it is readable, or\n\
                     # remove the sha256 pin from this binary in network_policies.{policy}:\n\
                     - {{ path: {} }}\n",
                    yaml_scalar(&exe)
                )
            } else {
                format!(
                    "# if this executable is trusted, update the pin in network_policies.{policy}.binaries:\n\
                     - {{ path: {}, sha256: {actual} }}\n",
                    yaml_scalar(&exe)
                )
            }
        }
        DenyReason::PathRefused {
            policy,
            encoded_slash: true,
            ..
        } => format!(
            "# if the server at {host_y}:{port} treats %2F as data, not as a path separator,\n\
             # set on that endpoint in network_policies.{policy}:\n\
             allow_encoded_slash: true\n"
        ),
        DenyReason::PathRefused { .. } => {
            "# the request path is malformed; fix the client's URL\n".to_string()
        }
        DenyReason::RequestsNotVisible { policy } => {
            let g = group_name(&exe, host);
            format!(
                "# corral does not read requests inside this TLS tunnel (`tls: passthrough`, or a\n\
                 # proxy started without --ca-cert). Remove `tls: passthrough`, or, to let {exe} make ANY request\n\
                 # to {host_y}:{port}, remove access/rules/deny_rules from that endpoint in\n\
                 # network_policies.{policy}, or give it a group of its own without them:\n\
                 network_policies:\n  {g}:\n    endpoints:\n      - {{ host: {host_y}, port: {port} }}\n    binaries:\n      - {{ path: {} }}\n",
                yaml_scalar(&exe)
            )
        }
        DenyReason::L7RuleNotMatched {
            policy,
            method,
            path,
        } => {
            let (m, p) = (method.to_ascii_uppercase(), path.as_str());
            format!(
                "# add to the rules of the {host_y}:{port} endpoint in network_policies.{policy}:\n\
                 - allow: {{ method: {m}, path: {} }}\n",
                yaml_scalar(p)
            )
        }
        _ => match binary_policy {
            Some(g) => format!(
                "# {exe} is already in network_policies.{g}; add this endpoint to that group:\n\
                 network_policies:\n  {g}:\n    endpoints:\n      - {{ host: {host_y}, port: {port} }}\n"
            ),
            None => {
                let g = group_name(&exe, host);
                format!(
                    "network_policies:\n  {g}:\n    endpoints:\n      - {{ host: {host_y}, port: {port} }}\n    binaries:\n      - {{ path: {} }}\n",
                    yaml_scalar(&exe)
                )
            }
        },
    }
}

impl Report {
    /// Render `decision` for `who` asking for `host:port` (and `request`).
    pub fn new(
        who: &Identity,
        host: &str,
        port: u16,
        request: Option<&HttpRequestInfo<'_>>,
        decision: &Decision,
    ) -> Report {
        let exe = who.exe.to_string_lossy().into_owned();
        let dest = format!("{host}:{port}");
        let (decision_s, error, policy, reason, sugg) = match decision {
            Decision::Allow(a) => {
                let what = match request {
                    Some(r) => format!("{} {} on {dest}", r.method.to_ascii_uppercase(), r.path),
                    None => dest.clone(),
                };
                match &a.audited {
                    // `enforcement: audit`: allowed, and the log says what enforcing
                    // would have refused, with the rule that would allow it.
                    Some(r) => (
                        "allow",
                        Some(r.code().to_string()),
                        Some(a.policy.clone()),
                        format!(
                            "audit only (enforcement: audit): {}",
                            deny_text(r, &exe, host, port).1
                        ),
                        Some(suggestion(who, host, port, r, None)),
                    ),
                    None => (
                        "allow",
                        None,
                        Some(a.policy.clone()),
                        format!(
                            "policy `{}` allows {exe} to reach {what} (endpoint `{}`)",
                            a.policy, a.endpoint_host
                        ),
                        None,
                    ),
                }
            }
            Decision::Deny(d) => {
                let (policy, reason) = deny_text(&d.reason, &exe, host, port);
                (
                    "deny",
                    Some(d.reason.code().to_string()),
                    policy,
                    reason,
                    Some(suggestion(
                        who,
                        host,
                        port,
                        &d.reason,
                        d.binary_policy.as_deref(),
                    )),
                )
            }
        };
        Report {
            decision: decision_s.to_string(),
            error,
            binary: exe,
            invoked_as: who.invoked_as.clone(),
            ancestors: who
                .ancestors
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            host: host.to_string(),
            port,
            method: request.map(|r| r.method.to_string()),
            path: request.map(|r| r.path.to_string()),
            policy,
            reason,
            suggestion: sugg,
        }
    }

    /// Multi-line human form (for `corral policy explain` and stderr).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut what = format!("{} -> {}:{}", self.program(), self.host, self.port);
        if let (Some(m), Some(p)) = (&self.method, &self.path) {
            what.push_str(&format!(" {m} {p}"));
        }
        out.push_str(&format!("{}: {what}\n", self.decision));
        out.push_str(&format!("  reason: {}\n", self.reason));
        if let Some(code) = &self.error {
            out.push_str(&format!("  code: {code}\n"));
        }
        if let Some(p) = &self.policy {
            out.push_str(&format!("  policy: {p}\n"));
        }
        if !self.ancestors.is_empty() {
            out.push_str(&format!("  ancestors: {}\n", self.ancestors.join(" <- ")));
        }
        if let Some(s) = &self.suggestion {
            out.push_str("  to allow it:\n");
            for l in s.lines() {
                out.push_str("    ");
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// The binary, with the name it was started as when that differs:
    /// `/usr/lib/git-core/git-remote-http (started as git-remote-https)`.
    pub fn program(&self) -> String {
        match &self.invoked_as {
            Some(name) => format!("{} (started as {name})", self.binary),
            None => self.binary.clone(),
        }
    }

    /// Single-line JSON (the proxy's log line and 403 body).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }
}

/// The policy a refusal names, and one sentence saying why.
fn deny_text(reason: &DenyReason, exe: &str, host: &str, port: u16) -> (Option<String>, String) {
    let dest = format!("{host}:{port}");
    match reason {
                    DenyReason::NoEndpoint => {
                        (None, format!("no policy lists the host {host}"))
                    }
                    DenyReason::PortNotAllowed {
                        allowed_ports,
                        policies,
                    } => {
                        let ports = allowed_ports
                            .iter()
                            .map(u16::to_string)
                            .collect::<Vec<_>>()
                            .join(", ");
                        (
                            single(policies),
                            format!(
                                "{host} is listed by policy {} but only on port {ports}, not {port}",
                                list(policies)
                            ),
                        )
                    }
                    DenyReason::BinaryNotAllowed { policies, binaries } => (
                        single(policies),
                        format!(
                            "{dest} is listed by policy {} but not for {exe} (allowed binaries: {})",
                            list(policies),
                            if binaries.is_empty() {
                                "none".to_string()
                            } else {
                                binaries.join(", ")
                            }
                        ),
                    ),
                    DenyReason::L7RuleNotMatched {
                        policy,
                        method,
                        path,
                    } => (
                        Some(policy.clone()),
                        format!(
                            "policy `{policy}` lets {exe} reach {dest}, but no rule allows {} {path}",
                            method.to_ascii_uppercase()
                        ),
                    ),
                    DenyReason::PathRefused {
                        policy,
                        method,
                        path,
                        why,
                        ..
                    } => (
                        Some(policy.clone()),
                        format!(
                            "policy `{policy}` checks the requests {exe} makes to {dest}, and {} {path} cannot be checked: {why}",
                            method.to_ascii_uppercase()
                        ),
                    ),
                    DenyReason::RequestsNotVisible { policy } => (
                        Some(policy.clone()),
                        format!(
                            "policy `{policy}` lets {exe} make only some requests to {dest}, and corral does not read requests inside this tunnel (`tls: passthrough`, or no CA to terminate TLS with), so the tunnel is refused"
                        ),
                    ),
                    DenyReason::HashMismatch {
                        policy,
                        expected,
                        actual,
                    } => (
                        Some(policy.clone()),
                        format!(
                            "policy `{policy}` pins {exe} to sha256 {expected}, but the executable's sha256 is {actual}"
                        ),
                    ),
                }
}

fn single(v: &[String]) -> Option<String> {
    (v.len() == 1).then(|| v[0].clone())
}
