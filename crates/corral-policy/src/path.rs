//! Request paths in one canonical form, so a rule sees the path the server will act on:
//! `/public/../admin`, `//admin` and `/%61dmin` are all `/admin` before any rule matches.

use std::fmt;

/// Why a request path cannot be decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathError {
    /// `%2F` (an encoded `/`): servers disagree on whether it separates segments, so a rule
    /// could be checked against one path and the server act on another.
    EncodedSlash,
    /// A `%` not followed by two hex digits, or a path that is not origin-form.
    Malformed(String),
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::EncodedSlash => f.write_str("the path contains an encoded slash (%2F)"),
            PathError::Malformed(m) => f.write_str(m),
        }
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decodes unreserved characters (RFC 3986 §6.2.2.2) and upper-cases the hex of
/// every other escape. `%2F` is an error unless `keep_slash`.
fn normalise_escapes(s: &str, keep_slash: bool) -> Result<String, PathError> {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            out.push(b[i] as char);
            i += 1;
            continue;
        }
        let (Some(h), Some(l)) = (
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::Malformed(format!(
                "`%` not followed by two hex digits in {s:?}"
            )));
        };
        let byte = h * 16 + l;
        if byte == b'/' && !keep_slash {
            return Err(PathError::EncodedSlash);
        }
        if unreserved(byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
        i += 3;
    }
    Ok(out)
}

/// RFC 3986 §5.2.4 over `/`-separated segments, after collapsing empty ones.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "" => trailing = i == last,
            "." => trailing = i == last,
            ".." => {
                out.pop();
                trailing = i == last;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut p = String::with_capacity(path.len());
    for s in &out {
        p.push('/');
        p.push_str(s);
    }
    if trailing || p.is_empty() {
        p.push('/');
    }
    p
}

/// The canonical form of an origin-form target (`/path?query`): escapes of unreserved
/// characters decoded, duplicate slashes collapsed, dot segments removed. The query keeps
/// its text (escapes normalised the same way; `%2F` is harmless there). `%2F` in the path
/// is refused unless `allow_encoded_slash`.
pub fn canonical_path(target: &str, allow_encoded_slash: bool) -> Result<String, PathError> {
    if !target.starts_with('/') {
        return Err(PathError::Malformed(format!(
            "the request path {target:?} does not start with `/`"
        )));
    }
    if target.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'#') {
        return Err(PathError::Malformed(
            "the request path contains a control character, a space or `#`".into(),
        ));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let path = normalise_escapes(path, allow_encoded_slash)?;
    let mut out = remove_dot_segments(&path);
    if let Some(q) = query {
        out.push('?');
        out.push_str(&normalise_escapes(q, true)?);
    }
    Ok(out)
}

/// The `key=value` pairs of a canonical target's query (values as written, `+` kept).
pub fn query_pairs(target: &str) -> impl Iterator<Item = (&str, &str)> {
    target
        .split_once('?')
        .map_or("", |(_, q)| q)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(p: &str) -> String {
        canonical_path(p, false).unwrap()
    }

    #[test]
    fn dot_segments_duplicate_slashes_and_escapes() {
        assert_eq!(c("/a/b/../c"), "/a/c");
        assert_eq!(c("/public/../admin"), "/admin");
        assert_eq!(c("/../../etc"), "/etc");
        assert_eq!(c("//admin"), "/admin");
        assert_eq!(c("/a//b///c/"), "/a/b/c/");
        assert_eq!(c("/a/./b/."), "/a/b/");
        assert_eq!(c("/%61dmin"), "/admin");
        assert_eq!(c("/public/%2e%2e/admin"), "/admin");
        assert_eq!(c("/a%20b"), "/a%20b");
        assert_eq!(c("/a%3fb"), "/a%3Fb");
        assert_eq!(c("/%252e%252e/x"), "/%252e%252e/x");
        assert_eq!(c("/"), "/");
        assert_eq!(c("/x?a=/../b&c=%41"), "/x?a=/../b&c=A");
        assert_eq!(c("/a/..?q"), "/?q");
    }

    #[test]
    fn encoded_slash_and_bad_escapes() {
        assert_eq!(
            canonical_path("/a%2Fb", false),
            Err(PathError::EncodedSlash)
        );
        assert_eq!(
            canonical_path("/a%2fb", false),
            Err(PathError::EncodedSlash)
        );
        assert_eq!(canonical_path("/a%2fb", true).unwrap(), "/a%2Fb");
        assert_eq!(canonical_path("/x?p=a%2Fb", false).unwrap(), "/x?p=a%2Fb");
        assert!(canonical_path("/a%zz", false).is_err());
        assert!(canonical_path("/a%2", false).is_err());
        assert!(canonical_path("a", false).is_err());
        assert!(canonical_path("/a b", false).is_err());
    }

    #[test]
    fn query_pairs_split() {
        let v: Vec<_> = query_pairs("/x?a=1&b&c=2=3").collect();
        assert_eq!(v, [("a", "1"), ("b", ""), ("c", "2=3")]);
        assert_eq!(query_pairs("/x").count(), 0);
    }
}
