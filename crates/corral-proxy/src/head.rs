//! Parsing the request head a client sends to the proxy (untrusted input).
//!
//! Only two request forms are accepted: `CONNECT host:port` (authority form) and
//! absolute-form `http://host[:port]/path` requests. Everything else is a precise
//! [`HeadError`] that the connection answers with 400, 405 or 431 — never a panic.

use std::fmt;

/// Upper bound on the number of header lines (httparse needs a fixed array).
pub const MAX_HEADERS: usize = 128;

/// A parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: Target,
    /// HTTP minor version (0 or 1).
    pub version: u8,
    /// Header lines in order, as received (names keep their case).
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Where the client wants to go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `CONNECT host:port`.
    Connect { host: String, port: u16 },
    /// `GET http://host:port/path?query`: `path` is origin-form (always starts with `/`).
    Forward {
        host: String,
        port: u16,
        path: String,
    },
}

impl Target {
    pub fn host(&self) -> &str {
        match self {
            Target::Connect { host, .. } | Target::Forward { host, .. } => host,
        }
    }
    pub fn port(&self) -> u16 {
        match self {
            Target::Connect { port, .. } | Target::Forward { port, .. } => *port,
        }
    }
}

/// What is wrong with a request head. `status()` is the answer the client gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The head is larger than the configured limit.
    TooLarge,
    /// More header lines than [`MAX_HEADERS`].
    TooManyHeaders,
    /// Not HTTP/1.x at all, or broken syntax.
    Malformed(String),
    /// A request target we do not accept (origin-form, `*`, https:// in forward form…).
    BadTarget(String),
    /// Host header disagrees with the absolute URI's authority.
    HostMismatch { uri: String, header: String },
    /// The body framing is ambiguous (request smuggling guard).
    BadFraming(String),
}

impl HeadError {
    /// Reason code for `X-Corral-Error` and logs.
    pub fn code(&self) -> &'static str {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => "header_too_large",
            HeadError::Malformed(_) => "bad_request",
            HeadError::BadTarget(_) => "bad_target",
            HeadError::HostMismatch { .. } => "host_mismatch",
            HeadError::BadFraming(_) => "bad_framing",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            _ => 400,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::TooLarge => f.write_str("the request head is larger than the proxy accepts"),
            HeadError::TooManyHeaders => write!(f, "more than {MAX_HEADERS} header lines"),
            HeadError::Malformed(m) => write!(f, "malformed request: {m}"),
            HeadError::BadTarget(m) => f.write_str(m),
            HeadError::HostMismatch { uri, header } => write!(
                f,
                "the Host header ({header}) does not match the request URI's authority ({uri})"
            ),
            HeadError::BadFraming(m) => write!(f, "ambiguous request body framing: {m}"),
        }
    }
}

/// Result of trying to parse a buffer that may hold a partial head.
#[derive(Debug)]
pub enum Parsed {
    /// A complete head of `len` bytes.
    Complete(RequestHead, usize),
    /// Need more bytes.
    Partial,
}

/// Parses a request head from `buf`. `max` bounds the head size.
pub fn parse_request(buf: &[u8], max: usize) -> Result<Parsed, HeadError> {
    parse(buf, max, None)
}

/// Parses a request head read inside a terminated TLS tunnel to `host:port`: origin-form
/// (`GET /path`), with a `Host` that names the tunnel's target (no domain fronting), and
/// the path in canonical form (what is decided is what is sent).
pub fn parse_origin_request(
    buf: &[u8],
    max: usize,
    host: &str,
    port: u16,
) -> Result<Parsed, HeadError> {
    parse(buf, max, Some((host, port)))
}

fn parse(buf: &[u8], max: usize, origin: Option<(&str, u16)>) -> Result<Parsed, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    let len = match status {
        httparse::Status::Partial => {
            if buf.len() >= max {
                return Err(HeadError::TooLarge);
            }
            return Ok(Parsed::Partial);
        }
        httparse::Status::Complete(len) => len,
    };
    if len > max {
        return Err(HeadError::TooLarge);
    }
    // A bare LF ends a line for some servers and not for others: a request smuggling
    // vector, so every line must end in CRLF.
    if buf[..len]
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'\n' && (i == 0 || buf[i - 1] != b'\r'))
    {
        return Err(HeadError::Malformed(
            "a line ends in a bare LF, not CRLF".into(),
        ));
    }
    let method = req.method.unwrap_or_default().to_string();
    let raw_target = req.path.unwrap_or_default();
    let version = req.version.unwrap_or(1);
    let headers: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect();
    let target = match origin {
        Some((host, port)) => {
            if !raw_target.starts_with('/') {
                return Err(HeadError::BadTarget(format!(
                    "inside a TLS tunnel to {host}:{port} requests are origin-form (`{method} /path`), got {:?}",
                    truncate(raw_target, 80)
                )));
            }
            let path = corral_policy::canonical_path(raw_target, true)
                .map_err(|e| HeadError::BadTarget(e.to_string()))?;
            if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
                return Err(HeadError::Malformed("no Host header".into()));
            }
            Target::Forward {
                host: host.to_string(),
                port,
                path,
            }
        }
        None if method == "CONNECT" => {
            let (host, port) = parse_authority(raw_target, None)?;
            Target::Connect { host, port }
        }
        None => parse_absolute(raw_target)?,
    };
    if let Target::Forward { host, port, .. } = &target {
        let default_port = if origin.is_some() { 443 } else { 80 };
        check_host_header(&headers, host, *port, default_port)?;
        check_framing(&headers)?;
    }
    Ok(Parsed::Complete(
        RequestHead {
            method,
            target,
            version,
            headers,
        },
        len,
    ))
}

/// `host:port` (CONNECT) or `host[:port]` with a default (absolute URI). IPv6 in brackets.
/// Hosts come back lower-case, brackets removed, trailing dot kept (the matcher handles it).
pub fn parse_authority(auth: &str, default_port: Option<u16>) -> Result<(String, u16), HeadError> {
    if auth.is_empty() {
        return Err(HeadError::BadTarget("empty host".into()));
    }
    if auth.contains('@') {
        return Err(HeadError::BadTarget(
            "user information in the request target is not accepted".into(),
        ));
    }
    let (host, port_text) = if let Some(rest) = auth.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(|| {
            HeadError::BadTarget(format!("unterminated IPv6 literal in {auth:?}"))
        })?;
        let host = &rest[..end];
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(HeadError::BadTarget(format!(
                "{host:?} is not an IPv6 address"
            )));
        }
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => {
                return Err(HeadError::BadTarget(format!(
                    "junk after IPv6 literal in {auth:?}"
                )))
            }
        };
        (host, port)
    } else {
        match auth.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (auth, None),
        }
    };
    let port = match port_text {
        Some("") => {
            return Err(HeadError::BadTarget(format!(
                "{auth:?} has a ':' but no port number"
            )))
        }
        Some(p) => {
            if p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HeadError::BadTarget(format!("{p:?} is not a port number")));
            }
            p.parse::<u16>()
                .map_err(|_| HeadError::BadTarget(format!("{p:?} is not a port number")))?
        }
        None => match default_port {
            Some(d) => d,
            None => {
                return Err(HeadError::BadTarget(format!(
                    "CONNECT needs host:port, got {auth:?}"
                )))
            }
        },
    };
    if port == 0 {
        return Err(HeadError::BadTarget("port 0 is not a destination".into()));
    }
    if host.is_empty() {
        return Err(HeadError::BadTarget(format!("no host in {auth:?}")));
    }
    let valid = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'));
    if !valid || (host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err()) {
        return Err(HeadError::BadTarget(format!("{host:?} is not a host name")));
    }
    Ok((host.to_ascii_lowercase(), port))
}

fn parse_absolute(target: &str) -> Result<Target, HeadError> {
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err(HeadError::BadTarget(
            "https:// URLs cannot be sent to the proxy in forward form; use CONNECT (set HTTPS_PROXY / https_proxy)".into(),
        ));
    }
    let Some(rest) = target.get(7..).filter(|_| lower.starts_with("http://")) else {
        return Err(HeadError::BadTarget(format!(
            "the proxy needs an absolute http:// URL or CONNECT host:port, got {:?}",
            truncate(target, 80)
        )));
    };
    let (auth, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = path.split('#').next().unwrap_or("/");
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    let (host, port) = parse_authority(auth, Some(80))?;
    Ok(Target::Forward { host, port, path })
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> impl Iterator<Item = &'a [u8]> + 'a {
    let name = name.to_string();
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(&name))
        .map(|(_, v)| v.as_slice())
}

fn check_host_header(
    headers: &[(String, Vec<u8>)],
    host: &str,
    port: u16,
    default_port: u16,
) -> Result<(), HeadError> {
    let values: Vec<&[u8]> = header(headers, "host").collect();
    if values.len() > 1 {
        return Err(HeadError::Malformed("more than one Host header".into()));
    }
    let Some(value) = values.first() else {
        return Ok(());
    };
    let text = std::str::from_utf8(value)
        .map_err(|_| HeadError::Malformed("Host header is not ASCII".into()))?
        .trim();
    let shown = |h: &str, p: u16| {
        if h.contains(':') {
            format!("[{h}]:{p}")
        } else {
            format!("{h}:{p}")
        }
    };
    match parse_authority(text, Some(default_port)) {
        Ok((h, p)) if h.trim_end_matches('.') == host.trim_end_matches('.') && p == port => Ok(()),
        _ => Err(HeadError::HostMismatch {
            uri: shown(host, port),
            header: text.to_string(),
        }),
    }
}

/// How the request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

fn check_framing(headers: &[(String, Vec<u8>)]) -> Result<(), HeadError> {
    body_framing(headers).map(|_| ())
}

/// The request body framing, refusing anything ambiguous (RFC 9112 §6.3: both
/// Transfer-Encoding and Content-Length, differing Content-Lengths, unknown codings).
pub fn body_framing(headers: &[(String, Vec<u8>)]) -> Result<BodyFraming, HeadError> {
    let te: Vec<&[u8]> = header(headers, "transfer-encoding").collect();
    let cl: Vec<&[u8]> = header(headers, "content-length").collect();
    if !te.is_empty() {
        if !cl.is_empty() {
            return Err(HeadError::BadFraming(
                "both Transfer-Encoding and Content-Length".into(),
            ));
        }
        let joined = te
            .iter()
            .map(|v| String::from_utf8_lossy(v).to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(",");
        let codings: Vec<&str> = joined
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if codings != ["chunked"] {
            return Err(HeadError::BadFraming(format!(
                "unsupported Transfer-Encoding {joined:?}"
            )));
        }
        return Ok(BodyFraming::Chunked);
    }
    let mut length = None;
    for value in cl {
        for part in String::from_utf8_lossy(value).split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HeadError::BadFraming(format!("Content-Length {part:?}")));
            }
            let n: u64 = part
                .parse()
                .map_err(|_| HeadError::BadFraming(format!("Content-Length {part:?}")))?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::BadFraming(
                    "differing Content-Length values".into(),
                ));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) | None => BodyFraming::None,
        Some(n) => BodyFraming::Length(n),
    })
}

/// Headers that describe one hop only (RFC 9110 §7.6.1) and are never forwarded, plus
/// whatever the `Connection` header names.
fn hop_by_hop(headers: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut names: Vec<String> = [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for value in header(headers, "connection") {
        for token in String::from_utf8_lossy(value).split(',') {
            let token = token.trim().to_ascii_lowercase();
            if !token.is_empty() && token != "close" && token != "keep-alive" {
                names.push(token);
            }
        }
    }
    names
}

/// Is this a WebSocket upgrade (`Upgrade: websocket` named by `Connection`)?
pub fn websocket_upgrade(head: &RequestHead) -> bool {
    let upgrade = header(&head.headers, "upgrade").any(|v| {
        String::from_utf8_lossy(v)
            .trim()
            .eq_ignore_ascii_case("websocket")
    });
    let named = header(&head.headers, "connection").any(|v| {
        String::from_utf8_lossy(v)
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    upgrade && named && head.method == "GET"
}

/// Does the client want the connection closed after this request?
pub fn wants_close(head: &RequestHead) -> bool {
    let mut close = head.version == 0;
    for name in ["connection", "proxy-connection"] {
        for value in header(&head.headers, name) {
            for token in String::from_utf8_lossy(value).split(',') {
                match token.trim().to_ascii_lowercase().as_str() {
                    "close" => return true,
                    "keep-alive" => close = false,
                    _ => {}
                }
            }
        }
    }
    close
}

/// The request as it goes upstream: origin-form target, hop-by-hop and `Proxy-*` headers
/// removed, `Host` set from the URI, `Connection: close` (one upstream connection per request).
/// With `via_proxy`, the absolute form is kept for a chained upstream proxy. `default_port`
/// is the scheme's (80, or 443 inside a terminated TLS tunnel, where the upstream
/// connection is kept for the tunnel's next request: no `Connection: close`).
pub fn upstream_request(head: &RequestHead, via_proxy: bool, default_port: u16) -> Vec<u8> {
    let Target::Forward { host, port, path } = &head.target else {
        return Vec::new();
    };
    let authority = host_port(host, *port, default_port);
    let mut out = Vec::with_capacity(512);
    let target = if via_proxy {
        format!("http://{authority}{path}")
    } else {
        path.clone()
    };
    out.extend_from_slice(format!("{} {} HTTP/1.1\r\n", head.method, target).as_bytes());
    out.extend_from_slice(format!("Host: {authority}\r\n").as_bytes());
    let websocket = websocket_upgrade(head);
    let drop = hop_by_hop(&head.headers);
    for (name, value) in &head.headers {
        let lower = name.to_ascii_lowercase();
        let kept = websocket && lower == "upgrade";
        if !kept && (lower == "host" || lower.starts_with("proxy-") || drop.contains(&lower)) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if websocket {
        out.extend_from_slice(b"Connection: Upgrade\r\n\r\n");
    } else if default_port == 443 {
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(b"Connection: close\r\n\r\n");
    }
    out
}

/// `host:port` for a Host header or log line; IPv6 in brackets; default port omitted.
pub fn host_port(host: &str, port: u16, default_port: u16) -> String {
    let h = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port == default_port {
        h
    } else {
        format!("{h}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RequestHead, HeadError> {
        match parse_request(text.as_bytes(), 16 * 1024)? {
            Parsed::Complete(head, _) => Ok(head),
            Parsed::Partial => panic!("partial"),
        }
    }

    #[test]
    fn connect_targets() {
        let h =
            parse("CONNECT Example.Test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n").unwrap();
        assert_eq!(
            h.target,
            Target::Connect {
                host: "example.test".into(),
                port: 443
            }
        );
        let h = parse("CONNECT [::1]:8443 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(h.target.host(), "::1");
        for bad in [
            "CONNECT example.test HTTP/1.1\r\n\r\n",
            "CONNECT example.test: HTTP/1.1\r\n\r\n",
            "CONNECT example.test:0 HTTP/1.1\r\n\r\n",
            "CONNECT example.test:65536 HTTP/1.1\r\n\r\n",
            "CONNECT example.test:+443 HTTP/1.1\r\n\r\n",
            "CONNECT :443 HTTP/1.1\r\n\r\n",
            "CONNECT user@example.test:443 HTTP/1.1\r\n\r\n",
            "CONNECT [::1:443 HTTP/1.1\r\n\r\n",
            "CONNECT a/b:443 HTTP/1.1\r\n\r\n",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.status(), 400, "{bad:?}: {err}");
        }
    }

    #[test]
    fn forward_targets() {
        let h = parse(
            "GET http://Mirror.Test:8080/a/b?c=d#frag HTTP/1.1\r\nHost: mirror.test:8080\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            h.target,
            Target::Forward {
                host: "mirror.test".into(),
                port: 8080,
                path: "/a/b?c=d".into()
            }
        );
        let h = parse("GET http://mirror.test?x HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(h.target.port(), 80);
        if let Target::Forward { path, .. } = &h.target {
            assert_eq!(path, "/?x");
        }
        let err = parse("GET https://mirror.test/ HTTP/1.1\r\n\r\n").unwrap_err();
        assert!(err.to_string().contains("CONNECT"));
        assert_eq!(
            parse("GET /local HTTP/1.1\r\n\r\n").unwrap_err().code(),
            "bad_target"
        );
        let err = parse("GET http://a.test/ HTTP/1.1\r\nHost: b.test\r\n\r\n").unwrap_err();
        assert_eq!(err.code(), "host_mismatch");
        assert!(parse("GET http://a.test/ HTTP/1.1\r\nHost: A.test:80\r\n\r\n").is_ok());
    }

    #[test]
    fn malformed_and_oversized() {
        assert_eq!(parse("GARBAGE\r\n\r\n").unwrap_err().status(), 400);
        assert_eq!(
            parse("GET http://a.test/ HTTP/9.9\r\n\r\n")
                .unwrap_err()
                .status(),
            400
        );
        let big = format!(
            "GET http://a.test/ HTTP/1.1\r\nX: {}\r\n",
            "a".repeat(20_000)
        );
        assert_eq!(
            parse_request(big.as_bytes(), 16 * 1024).unwrap_err(),
            HeadError::TooLarge
        );
        let many: String = (0..200).map(|i| format!("X-{i}: y\r\n")).collect();
        let req = format!("GET http://a.test/ HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(&req).unwrap_err().status(), 431);
        assert!(matches!(
            parse_request(b"GET http://a.test/ HTTP/1.1\r\nX: y", 1024),
            Ok(Parsed::Partial)
        ));
    }

    #[test]
    fn framing_is_unambiguous() {
        let cl_te = "POST http://a.test/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse(cl_te).unwrap_err().code(), "bad_framing");
        let two = "POST http://a.test/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(parse(two).unwrap_err().code(), "bad_framing");
        let gzip = "POST http://a.test/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(parse(gzip).unwrap_err().code(), "bad_framing");
        let h = parse("POST http://a.test/ HTTP/1.1\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert_eq!(body_framing(&h.headers).unwrap(), BodyFraming::Length(3));
    }

    #[test]
    fn upstream_request_strips_hop_by_hop() {
        let h = parse(
            "GET http://a.test:8080/x HTTP/1.1\r\nHost: a.test:8080\r\nProxy-Authorization: Basic Zm9v\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nAccept: */*\r\nProxy-Connection: keep-alive\r\n\r\n",
        )
        .unwrap();
        let out = String::from_utf8(upstream_request(&h, false, 80)).unwrap();
        assert_eq!(
            out,
            "GET /x HTTP/1.1\r\nHost: a.test:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let out = String::from_utf8(upstream_request(&h, true, 80)).unwrap();
        assert!(out.starts_with("GET http://a.test:8080/x HTTP/1.1\r\n"));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // A cheap deterministic fuzz: every prefix and a set of byte mutations of real heads.
        let seeds = [
            "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n",
            "GET http://[::1]:80/p?q HTTP/1.1\r\nHost: [::1]\r\nTransfer-Encoding: chunked\r\n\r\n",
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for seed in seeds {
            let bytes = seed.as_bytes();
            for cut in 0..bytes.len() {
                let _ = parse_request(&bytes[..cut], 1024);
            }
            for _ in 0..5000 {
                let mut m = bytes.to_vec();
                for _ in 0..3 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let i = (state as usize) % m.len();
                    m[i] = (state >> 32) as u8;
                }
                let _ = parse_request(&m, 1024);
            }
        }
    }
}
