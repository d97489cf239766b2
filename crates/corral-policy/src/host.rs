//! Host patterns: `example.com`, `*.example.com` (one label), `**.example.com`
//! (one or more labels), or an IP literal. Compared case-insensitively, trailing dot
//! ignored, internationalised names in punycode.

use std::net::IpAddr;

/// A validated host pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    /// As written in the policy.
    pub written: String,
    /// The normalised form.
    pub kind: HostKind,
}

/// The normalised shape of a [`HostPattern`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// One exact name (lowercase ASCII, no trailing dot).
    Exact(String),
    /// `*.SUFFIX`: exactly one label before the suffix.
    OneLabel(String),
    /// `**.SUFFIX`: one or more labels before the suffix.
    AnyLabels(String),
    /// `PRE*POST.SUFFIX`: exactly one label, matching the glob `label`, before the suffix.
    LabelGlob {
        /// The first label's glob (`*` matches any run of characters in the label).
        label: String,
        /// The rest of the name.
        suffix: String,
    },
    /// An IP address literal.
    Ip(IpAddr),
}

/// Why a host pattern was rejected: a message and what to write instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostError {
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub help: String,
}

/// A name or IP as seen at runtime, normalised for lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NormalHost {
    /// Lowercase ASCII name without trailing dot.
    Name(String),
    /// An IP literal.
    Ip(IpAddr),
}

/// Normalise a runtime host (name in any case, trailing dot, IDN, or IP literal,
/// optionally bracketed). `None` if it is not a valid host name.
pub fn normalize_host(host: &str) -> Option<NormalHost> {
    let h = host.trim();
    let unbracketed = h
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(h);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Some(NormalHost::Ip(ip));
    }
    normalize_name(h).map(NormalHost::Name)
}

/// Lowercase, strip one trailing dot, convert IDN to punycode; `None` if invalid.
pub fn normalize_name(name: &str) -> Option<String> {
    let n = name.strip_suffix('.').unwrap_or(name);
    if n.is_empty() || n.len() > 253 {
        return None;
    }
    let ascii = if n.is_ascii() {
        n.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(n).ok()?
    };
    if ascii.is_empty() || ascii.split('.').any(|l| !valid_label(l)) {
        return None;
    }
    Some(ascii)
}

fn valid_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl HostPattern {
    /// Validate a host pattern as written in a policy.
    pub fn parse(written: &str) -> Result<HostPattern, HostError> {
        let w = written.trim();
        let err = |message: String, help: &str| HostError {
            message,
            help: help.to_string(),
        };
        if w.is_empty() {
            return Err(err(
                "host is empty".into(),
                "write a host name such as `api.example.com`",
            ));
        }
        if w == "*" || w == "**" {
            return Err(err(
                format!("host `{w}` would allow every host on the internet"),
                "list the hosts you need, or a domain wildcard such as `*.example.com` (one label) or `**.example.com` (any depth)",
            ));
        }
        let unbracketed = w
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(w);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(HostPattern {
                written: written.to_string(),
                kind: HostKind::Ip(ip),
            });
        }
        if w.contains("://") || w.contains('/') {
            return Err(err(
                format!("host `{w}` looks like a URL"),
                "write only the host name (e.g. `api.example.com`); put the port in `port:`",
            ));
        }
        if let Some((h, p)) = w.rsplit_once(':') {
            if p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() {
                return Err(err(
                    format!("host `{w}` includes a port"),
                    &format!("write `host: {h}` and `port: {p}`"),
                ));
            }
        }
        if let Some((first, rest)) = w.split_once('.') {
            if first.contains('*')
                && first != "*"
                && first != "**"
                && !first.contains("**")
                && !rest.contains('*')
            {
                let label_ok = first
                    .bytes()
                    .all(|b| b == b'*' || b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                let Some(suffix) = normalize_name(rest).filter(|_| label_ok) else {
                    return Err(err(
                        format!("host `{w}` is not a valid host pattern"),
                        "write a DNS name, optionally with a wildcard first label such as `*.example.com` or `*-api.example.com`",
                    ));
                };
                if !suffix.contains('.') {
                    return Err(err(
                        format!("host `{w}` is a wildcard over a whole top-level domain"),
                        &format!(
                            "name the organisation's domain too, e.g. `{first}.example.{suffix}`"
                        ),
                    ));
                }
                return Ok(HostPattern {
                    written: written.to_string(),
                    kind: HostKind::LabelGlob {
                        label: first.to_ascii_lowercase(),
                        suffix,
                    },
                });
            }
        }
        let (kind_ctor, rest): (fn(String) -> HostKind, &str) =
            if let Some(rest) = w.strip_prefix("**.") {
                (HostKind::AnyLabels, rest)
            } else if let Some(rest) = w.strip_prefix("*.") {
                (HostKind::OneLabel, rest)
            } else {
                (HostKind::Exact, w)
            };
        if rest.contains('*') {
            return Err(err(
                format!("host `{w}` has a `*` that is not a whole leading label"),
                "wildcards are only allowed in the first label: `*.example.com` (exactly one label), `*-api.example.com` (part of one label) or `**.example.com` (one or more labels)",
            ));
        }
        let Some(norm) = normalize_name(rest) else {
            return Err(err(
                format!("host `{w}` is not a valid host name"),
                "write a DNS name made of letters, digits and `-` separated by dots, or an IP address",
            ));
        };
        let is_wild = !matches!(kind_ctor(String::new()), HostKind::Exact(_));
        if is_wild && !norm.contains('.') {
            let star = if w.starts_with("**") { "**" } else { "*" };
            return Err(err(
                format!("host `{w}` is a wildcard over a whole top-level domain"),
                &format!("name the organisation's domain too, e.g. `{star}.example.{norm}`"),
            ));
        }
        Ok(HostPattern {
            written: written.to_string(),
            kind: kind_ctor(norm),
        })
    }

    /// True for `*.x` / `**.x` patterns.
    pub fn is_wildcard(&self) -> bool {
        !matches!(self.kind, HostKind::Exact(_) | HostKind::Ip(_))
    }

    /// Does this pattern match the normalised host?
    pub fn matches(&self, host: &NormalHost) -> bool {
        match (&self.kind, host) {
            (HostKind::Ip(a), NormalHost::Ip(b)) => a == b,
            (HostKind::Exact(a), NormalHost::Name(b)) => a == b,
            (HostKind::OneLabel(s), NormalHost::Name(b)) => match strip_label_suffix(b, s) {
                Some(prefix) => !prefix.contains('.'),
                None => false,
            },
            (HostKind::AnyLabels(s), NormalHost::Name(b)) => strip_label_suffix(b, s).is_some(),
            (HostKind::LabelGlob { label, suffix }, NormalHost::Name(b)) => {
                match strip_label_suffix(b, suffix) {
                    Some(prefix) => {
                        !prefix.contains('.') && crate::glob::Glob::new(label).matches(prefix)
                    }
                    None => false,
                }
            }
            _ => false,
        }
    }
}

/// If `name` is `PREFIX.suffix` with a non-empty PREFIX, return PREFIX.
pub(crate) fn strip_label_suffix<'a>(name: &'a str, suffix: &str) -> Option<&'a str> {
    let prefix = name.strip_suffix(suffix)?.strip_suffix('.')?;
    (!prefix.is_empty()).then_some(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(p: &str) -> HostKind {
        HostPattern::parse(p).unwrap().kind
    }

    #[test]
    fn patterns_normalise() {
        assert_eq!(kind("GitHub.COM."), HostKind::Exact("github.com".into()));
        assert_eq!(
            kind("*.Example.com"),
            HostKind::OneLabel("example.com".into())
        );
        assert_eq!(
            kind("**.example.com"),
            HostKind::AnyLabels("example.com".into())
        );
        assert_eq!(
            kind("bücher.example"),
            HostKind::Exact("xn--bcher-kva.example".into())
        );
        assert_eq!(kind("[::1]"), HostKind::Ip("::1".parse().unwrap()));
        assert_eq!(kind("10.0.0.1"), HostKind::Ip("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn broad_or_malformed_patterns_are_rejected() {
        for bad in [
            "*",
            "**",
            "*.com",
            "**.org",
            "*-x.com",
            "a.*.example.com",
            "",
            "exa mple.com",
            "https://x.example",
        ] {
            assert!(
                HostPattern::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn label_glob_matches_one_label() {
        let p = HostPattern::parse("*-aiplatform.googleapis.com").unwrap();
        let m = |h: &str| p.matches(&normalize_host(h).unwrap());
        assert!(m("us-central1-aiplatform.googleapis.com"));
        assert!(!m("aiplatform.googleapis.com"));
        assert!(!m("a.b-aiplatform.googleapis.com"));
    }
}
