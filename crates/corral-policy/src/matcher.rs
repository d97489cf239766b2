//! The compiled matcher: indexes a [`Policy`] so one lookup answers
//! "may this identity reach host:port (and this request)?".
//!
//! Lookup order: host index (exact names and IPs in hash maps; `*.suffix` by the
//! host minus its first label; `**.suffix` by each proper suffix of the host), then the
//! candidate endpoints' ports, then the candidate policies' binary sets (a hash set of
//! exact paths plus a short list of globs). The cost depends on the number of
//! candidate endpoints for the host, not on the size of the policy.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use crate::decision::{Allow, Decision, Deny, DenyReason, Substitution};
use crate::glob::Glob;
use crate::host::{normalize_host, HostKind, NormalHost};
use crate::identity::Identity;
use crate::model::{Access, Children, CompileOptions, L7Rule, Policy};
use crate::path::{canonical_path, query_pairs, PathError};

impl Policy {
    /// Compile into the matcher. `home` expands `~/` and `$HOME/` in binary paths.
    pub fn compile(&self, opts: &CompileOptions) -> Matcher {
        Matcher::compile(self, opts)
    }
}

/// An HTTP request seen by the proxy, for endpoints with L7 rules.
#[derive(Clone, Copy, Debug)]
pub struct HttpRequestInfo<'a> {
    /// Method (any case).
    pub method: &'a str,
    /// Path with query string (`/a/b?c=d`).
    pub path: &'a str,
}

/// Immutable, `Send + Sync`; shared as `Arc<Matcher>`; replaced whole on reload.
#[derive(Debug)]
pub struct Matcher {
    policies: Vec<CPolicy>,
    endpoints: Vec<CEndpoint>,
    exact: HashMap<String, Vec<u32>>,
    ips: HashMap<IpAddr, Vec<u32>>,
    one_label: HashMap<String, Vec<u32>>,
    any_labels: HashMap<String, Vec<u32>>,
    /// `pre*post.suffix` patterns, by suffix, with their compiled label glob.
    label_globs: HashMap<String, Vec<(Glob, u32)>>,
    /// Exact binary path → policies listing it (for suggestions).
    binary_exact: HashMap<String, Vec<u32>>,
    /// (glob, policy) for suggestions.
    binary_globs: Vec<(Glob, u32)>,
    /// `unix_sockets`, home-expanded.
    unix_sockets: Vec<Glob>,
}

#[derive(Debug)]
struct CPolicy {
    key: String,
    binaries: Vec<CBinary>,
    exact: HashMap<String, Vec<u32>>,
    globs: Vec<(Glob, u32)>,
    any_inherit: bool,
    credentials: Vec<std::sync::Arc<Substitution>>,
}

#[derive(Debug)]
struct CBinary {
    written: String,
    sha256: Option<String>,
    inherit: bool,
}

#[derive(Debug)]
struct CEndpoint {
    policy: u32,
    host_written: String,
    ports: Vec<u16>,
    allowed_ips: Vec<ipnet::IpNet>,
    /// See [`crate::model::Endpoint::inspects`].
    inspect: bool,
    allow_encoded_slash: bool,
    l7: Option<CL7>,
}

#[derive(Debug)]
struct CL7 {
    /// See [`crate::model::Endpoint::restricts_requests`].
    restricts: bool,
    /// `enforcement: audit`: a request the rules refuse is logged and let through.
    audit: bool,
    access: Option<Access>,
    rules: Vec<CRule>,
    deny: Vec<CRule>,
}

#[derive(Debug)]
struct CRule {
    method: String,
    path: Glob,
    query: Vec<(String, Vec<Glob>)>,
}

impl CRule {
    fn matches(&self, method: &str, path: &str) -> bool {
        (self.method == "*" || self.method.eq_ignore_ascii_case(method))
            && self.path.matches(path)
            && self.query.iter().all(|(name, globs)| {
                query_pairs(path).any(|(k, v)| k == name && globs.iter().any(|g| g.matches(v)))
            })
    }
}

/// Expand `~/`, `$HOME/`, `${HOME}/` at the start of a binary path.
pub(crate) fn expand_home(path: &str, home: Option<&Path>) -> Option<String> {
    let rest = path
        .strip_prefix("~/")
        .or_else(|| path.strip_prefix("$HOME/"))
        .or_else(|| path.strip_prefix("${HOME}/"));
    match rest {
        None => Some(path.to_string()),
        Some(rest) => {
            let home = home?.to_str()?.trim_end_matches('/');
            Some(format!("{home}/{rest}"))
        }
    }
}

fn compile_rules(rules: &[L7Rule]) -> Vec<CRule> {
    rules
        .iter()
        .map(|r| CRule {
            method: r.method.to_ascii_uppercase(),
            path: Glob::new(&r.path),
            query: r
                .query
                .iter()
                .map(|(k, v)| (k.clone(), v.iter().map(|g| Glob::new(g)).collect()))
                .collect(),
        })
        .collect()
}

fn rule_matches(rules: &[CRule], method: &str, path: &str) -> bool {
    rules.iter().any(|r| r.matches(method, path))
}

impl CL7 {
    fn allows(&self, req: &HttpRequestInfo<'_>) -> bool {
        if rule_matches(&self.deny, req.method, req.path) {
            return false;
        }
        if !self.rules.is_empty() {
            return rule_matches(&self.rules, req.method, req.path);
        }
        let m = req.method.to_ascii_uppercase();
        match self.access {
            Some(Access::ReadOnly) => matches!(m.as_str(), "GET" | "HEAD" | "OPTIONS"),
            Some(Access::ReadWrite) => matches!(
                m.as_str(),
                "GET" | "HEAD" | "OPTIONS" | "POST" | "PUT" | "PATCH"
            ),
            Some(Access::Full) | None => true,
        }
    }
}

enum BinaryMatch {
    None,
    /// Matched rule index.
    Rule(u32),
}

impl CPolicy {
    fn match_path(&self, path: &str, inherit_only: bool) -> Option<u32> {
        if let Some(ids) = self.exact.get(path) {
            for &i in ids {
                if !inherit_only || self.binaries[i as usize].inherit {
                    return Some(i);
                }
            }
        }
        self.globs
            .iter()
            .find(|(g, i)| (!inherit_only || self.binaries[*i as usize].inherit) && g.matches(path))
            .map(|(_, i)| *i)
    }

    fn match_identity(&self, who: &Identity) -> BinaryMatch {
        let exe = who.exe.to_string_lossy();
        if let Some(i) = self.match_path(&exe, false) {
            return BinaryMatch::Rule(i);
        }
        if self.any_inherit {
            for a in &who.ancestors {
                if let Some(i) = self.match_path(&a.to_string_lossy(), true) {
                    return BinaryMatch::Rule(i);
                }
            }
        }
        BinaryMatch::None
    }
}

impl Matcher {
    /// Build the indexes. Exact binary paths that are symlinks on this host also match
    /// the file they point to (resolved now); the literal path keeps matching too.
    pub fn compile(policy: &Policy, opts: &CompileOptions) -> Matcher {
        let mut m = Matcher {
            policies: Vec::new(),
            endpoints: Vec::new(),
            exact: HashMap::new(),
            ips: HashMap::new(),
            one_label: HashMap::new(),
            any_labels: HashMap::new(),
            label_globs: HashMap::new(),
            binary_exact: HashMap::new(),
            binary_globs: Vec::new(),
            unix_sockets: policy
                .unix_sockets
                .iter()
                .filter_map(|p| expand_home(p, opts.home.as_deref()))
                .map(|p| Glob::new(&p))
                .collect(),
        };
        // realpath() once per distinct exact binary path.
        let mut resolved: HashMap<String, Option<String>> = HashMap::new();
        for (pi, np) in policy.network_policies.iter().enumerate() {
            let pi = pi as u32;
            let mut cp = CPolicy {
                key: np.key.clone(),
                binaries: Vec::new(),
                exact: HashMap::new(),
                globs: Vec::new(),
                any_inherit: false,
                credentials: np.credentials.iter().filter_map(load_secret).collect(),
            };
            for (bi, b) in np.binaries.iter().enumerate() {
                let bi = bi as u32;
                let inherit = b.children == Children::Inherit;
                cp.any_inherit |= inherit;
                cp.binaries.push(CBinary {
                    written: b.path.clone(),
                    sha256: b.sha256.clone(),
                    inherit,
                });
                let Some(path) = expand_home(&b.path, opts.home.as_deref()) else {
                    continue;
                };
                if Glob::is_pattern(&path) {
                    cp.globs.push((Glob::new(&path), bi));
                    m.binary_globs.push((Glob::new(&path), pi));
                } else {
                    let mut forms = vec![path.clone()];
                    let real = resolved.entry(path.clone()).or_insert_with(|| {
                        std::fs::canonicalize(&path)
                            .ok()
                            .map(|r| r.to_string_lossy().into_owned())
                            .filter(|r| *r != path)
                    });
                    if let Some(real) = real {
                        forms.push(real.clone());
                    }
                    for f in forms {
                        cp.exact.entry(f.clone()).or_default().push(bi);
                        let e = m.binary_exact.entry(f).or_default();
                        if !e.contains(&pi) {
                            e.push(pi);
                        }
                    }
                }
            }
            m.policies.push(cp);
            for ep in &np.endpoints {
                let id = m.endpoints.len() as u32;
                let l7 = ep.has_l7().then(|| CL7 {
                    restricts: ep.restricts_requests(),
                    audit: ep.audit,
                    access: ep.access,
                    rules: compile_rules(&ep.rules),
                    deny: compile_rules(&ep.deny_rules),
                });
                m.endpoints.push(CEndpoint {
                    policy: pi,
                    host_written: ep.host.written.clone(),
                    ports: ep.ports.clone(),
                    allowed_ips: ep.allowed_ips.clone(),
                    inspect: ep.inspects(),
                    allow_encoded_slash: ep.allow_encoded_slash,
                    l7,
                });
                match &ep.host.kind {
                    HostKind::Exact(h) => m.exact.entry(h.clone()).or_default().push(id),
                    HostKind::Ip(ip) => m.ips.entry(*ip).or_default().push(id),
                    HostKind::OneLabel(s) => m.one_label.entry(s.clone()).or_default().push(id),
                    HostKind::AnyLabels(s) => m.any_labels.entry(s.clone()).or_default().push(id),
                    HostKind::LabelGlob { label, suffix } => m
                        .label_globs
                        .entry(suffix.clone())
                        .or_default()
                        .push((Glob::new(label), id)),
                }
            }
        }
        m
    }

    /// Endpoint ids whose host pattern matches, in file order.
    fn candidates(&self, host: &NormalHost) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        match host {
            NormalHost::Ip(ip) => {
                if let Some(v) = self.ips.get(ip) {
                    out.extend_from_slice(v);
                }
            }
            NormalHost::Name(name) => {
                if let Some(v) = self.exact.get(name.as_str()) {
                    out.extend_from_slice(v);
                }
                if let Some((first, rest)) = name.split_once('.') {
                    if let Some(v) = self.one_label.get(rest) {
                        out.extend_from_slice(v);
                    }
                    if let Some(v) = self.label_globs.get(rest) {
                        out.extend(
                            v.iter()
                                .filter(|(g, _)| g.matches(first))
                                .map(|(_, id)| *id),
                        );
                    }
                }
                if !self.any_labels.is_empty() {
                    let mut rest = name.as_str();
                    while let Some((_, r)) = rest.split_once('.') {
                        if let Some(v) = self.any_labels.get(r) {
                            out.extend_from_slice(v);
                        }
                        rest = r;
                    }
                }
            }
        }
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
        out
    }

    /// Whether the policy's `unix_sockets` lists the host socket at `path` (its real path,
    /// symlinks resolved: a pattern never matches through a link).
    pub fn allows_unix_socket(&self, path: &str) -> bool {
        self.unix_sockets.iter().any(|g| g.matches(path))
    }

    /// Decide whether `who` may reach `host:port` (and, for endpoints with L7 rules,
    /// make `request`). With `request: None` the connection is an opaque tunnel: an
    /// endpoint whose rules restrict requests then refuses it (`l7_not_inspectable`),
    /// since nobody could check what goes through. Plain-HTTP requests are decided one
    /// by one with `Some(request)`.
    /// `host` may be a name (any case, trailing dot, IDN) or an IP literal.
    pub fn decide(
        &self,
        who: &Identity,
        host: &str,
        port: u16,
        request: Option<&HttpRequestInfo<'_>>,
    ) -> Decision {
        let Some(norm) = normalize_host(host) else {
            return self.deny(who, DenyReason::NoEndpoint);
        };
        let cands = self.candidates(&norm);
        if cands.is_empty() {
            return self.deny(who, DenyReason::NoEndpoint);
        }
        let mut on_port = cands
            .iter()
            .copied()
            .filter(|&id| self.endpoints[id as usize].ports.contains(&port))
            .peekable();
        if on_port.peek().is_none() {
            let mut allowed_ports: Vec<u16> = Vec::new();
            let mut policies: Vec<String> = Vec::new();
            for &id in &cands {
                let ep = &self.endpoints[id as usize];
                allowed_ports.extend_from_slice(&ep.ports);
                push_unique(&mut policies, &self.policies[ep.policy as usize].key);
            }
            allowed_ports.sort_unstable();
            allowed_ports.dedup();
            return self.deny(
                who,
                DenyReason::PortNotAllowed {
                    allowed_ports,
                    policies,
                },
            );
        }
        let mut hash_fail: Option<DenyReason> = None;
        let mut l7_fail: Option<DenyReason> = None;
        let mut opaque_fail: Option<DenyReason> = None;
        let mut listed_by: Vec<u32> = Vec::new();
        for id in on_port {
            let ep = &self.endpoints[id as usize];
            let pol = &self.policies[ep.policy as usize];
            if !listed_by.contains(&ep.policy) {
                listed_by.push(ep.policy);
            }
            let BinaryMatch::Rule(bi) = pol.match_identity(who) else {
                continue;
            };
            let rule = &pol.binaries[bi as usize];
            if let Some(expected) = &rule.sha256 {
                let actual = who.sha256.as_deref().map(str::to_ascii_lowercase);
                if actual.as_deref() != Some(expected.as_str()) {
                    hash_fail.get_or_insert_with(|| DenyReason::HashMismatch {
                        policy: pol.key.clone(),
                        expected: expected.clone(),
                        actual: actual.unwrap_or_else(|| "unknown".to_string()),
                    });
                    continue;
                }
            }
            let mut audited = None;
            if let Some(l7) = &ep.l7 {
                match request {
                    Some(req) => {
                        if let Err(refused) = l7_check(l7, ep, &pol.key, req) {
                            if !l7.audit {
                                l7_fail.get_or_insert(refused);
                                continue;
                            }
                            audited = Some(refused);
                        }
                    }
                    // Fail closed: rules that cannot be checked must not widen into
                    // "anything goes inside the tunnel".
                    None if l7.restricts && !ep.inspect => {
                        opaque_fail.get_or_insert_with(|| DenyReason::RequestsNotVisible {
                            policy: pol.key.clone(),
                        });
                        continue;
                    }
                    None => {}
                }
            }
            return Decision::Allow(Allow {
                policy: pol.key.clone(),
                endpoint_host: ep.host_written.clone(),
                allowed_ips: ep.allowed_ips.clone(),
                inspect: request.is_none() && ep.inspect,
                audited,
                credentials: pol.credentials.clone(),
            });
        }
        if let Some(r) = hash_fail.or(l7_fail).or(opaque_fail) {
            return self.deny(who, r);
        }
        let mut policies = Vec::new();
        let mut binaries = Vec::new();
        for pi in listed_by {
            let pol = &self.policies[pi as usize];
            policies.push(pol.key.clone());
            for b in &pol.binaries {
                push_unique(&mut binaries, &b.written);
            }
        }
        self.deny(who, DenyReason::BinaryNotAllowed { policies, binaries })
    }

    fn deny(&self, who: &Identity, reason: DenyReason) -> Decision {
        let binary_policy = match &reason {
            DenyReason::L7RuleNotMatched { policy, .. }
            | DenyReason::PathRefused { policy, .. }
            | DenyReason::RequestsNotVisible { policy }
            | DenyReason::HashMismatch { policy, .. } => Some(policy.clone()),
            _ => self.policy_listing_binary(&who.exe.to_string_lossy()),
        };
        Decision::Deny(Deny {
            reason,
            binary_policy,
        })
    }

    /// The first group (file order) that lists `exe` and no other binary: the one a new
    /// endpoint for `exe` can be appended to without letting any other program through.
    fn policy_listing_binary(&self, exe: &str) -> Option<String> {
        self.binary_exact
            .get(exe)?
            .iter()
            .find(|&&pi| self.policies[pi as usize].binaries.len() == 1)
            .map(|&pi| self.policies[pi as usize].key.clone())
    }

    /// True if some endpoint for host:port has L7 rules (`rules`, `deny_rules` or
    /// `access`), so the proxy must see requests to enforce them.
    pub fn needs_l7(&self, host: &str, port: u16) -> bool {
        let Some(norm) = normalize_host(host) else {
            return false;
        };
        self.candidates(&norm).iter().any(|&id| {
            let ep = &self.endpoints[id as usize];
            ep.l7.is_some() && ep.ports.contains(&port)
        })
    }

    /// Whether some group lists `exe` (by its exact path, or the path a listed symlink
    /// resolved to) with the `sha256` pin `sha`.
    pub fn pins(&self, exe: &Path, sha: &str) -> bool {
        let exe = exe.to_string_lossy();
        self.policies.iter().any(|p| {
            p.exact.get(exe.as_ref()).is_some_and(|ids| {
                ids.iter().any(|&i| {
                    p.binaries[i as usize]
                        .sha256
                        .as_deref()
                        .is_some_and(|h| h.eq_ignore_ascii_case(sha))
                })
            })
        })
    }

    /// Number of compiled endpoints.
    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }
}

/// Reads a credential's secret (first line, trailing whitespace dropped). Unreadable, or
/// holding a control character (it goes into a header line): no substitution, and the
/// request keeps its placeholder (`corral policy check` warns about an unreadable file).
fn load_secret(c: &crate::model::Credential) -> Option<std::sync::Arc<Substitution>> {
    let text = std::fs::read_to_string(&c.secret_file).ok()?;
    let secret = text.lines().next()?.trim_end().to_string();
    if secret.is_empty() || secret.bytes().any(|b| b.is_ascii_control()) {
        return None;
    }
    Some(std::sync::Arc::new(Substitution {
        placeholder: c.placeholder.clone(),
        secret,
        headers: c.headers.clone(),
    }))
}

/// Checks one request against an endpoint's rules, on its canonical path.
fn l7_check(
    l7: &CL7,
    ep: &CEndpoint,
    policy: &str,
    req: &HttpRequestInfo<'_>,
) -> Result<(), DenyReason> {
    let path = match canonical_path(req.path, ep.allow_encoded_slash) {
        Ok(p) => p,
        Err(e) => {
            return Err(DenyReason::PathRefused {
                policy: policy.to_string(),
                method: req.method.to_string(),
                path: req.path.to_string(),
                encoded_slash: e == PathError::EncodedSlash,
                why: e.to_string(),
            })
        }
    };
    let canonical = HttpRequestInfo {
        method: req.method,
        path: &path,
    };
    if l7.allows(&canonical) {
        Ok(())
    } else {
        Err(DenyReason::L7RuleNotMatched {
            policy: policy.to_string(),
            method: req.method.to_string(),
            path,
        })
    }
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}
