//! From an allowed name to a connected upstream socket: resolve once (override table or
//! DNS), classify every address (an operator's `--connect-to` route is trusted), dial exactly the addresses that passed — or, when chained,
//! hand the connection to the corporate upstream proxy.

use std::io;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::addr::{self, RefusedAddr};
use crate::config::{Overridden, ProxyConfig, UpstreamProxy};
use crate::head::host_port;

/// Why no upstream connection was made.
#[derive(Debug)]
pub enum DialError {
    /// The name did not resolve (or timed out resolving).
    Dns(String),
    /// Every address the name has is in a class the endpoint does not allow.
    AddressClass(Vec<RefusedAddr>),
    /// All permitted addresses refused the connection.
    Refused(Vec<SocketAddr>),
    /// Connecting timed out.
    Timeout(Vec<SocketAddr>),
    /// Some other connect failure (unreachable network…).
    Failed(String),
    /// The chained upstream proxy failed or refused.
    UpstreamProxy(String),
}

impl DialError {
    /// (HTTP status, reason code)
    pub fn status_code(&self) -> (u16, &'static str) {
        match self {
            DialError::Dns(_) => (502, "dns_failed"),
            DialError::AddressClass(_) => (403, "address_class_refused"),
            DialError::Refused(_) => (502, "connect_refused"),
            DialError::Timeout(_) => (504, "connect_timeout"),
            DialError::Failed(_) => (502, "connect_failed"),
            DialError::UpstreamProxy(_) => (502, "upstream_proxy_failed"),
        }
    }

    /// One human sentence.
    pub fn reason(&self, host: &str, port: u16) -> String {
        let list = |v: &[SocketAddr]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            DialError::Dns(e) => format!("{host} does not resolve: {e}"),
            DialError::AddressClass(refused) => {
                let shown: Vec<String> = refused
                    .iter()
                    .map(|r| format!("{} ({})", r.addr, r.class))
                    .collect();
                format!(
                    "{host} resolves only to addresses the endpoint's allowed_ips does not cover: {}",
                    shown.join(", ")
                )
            }
            DialError::Refused(a) => format!("{host}:{port} refused the connection ({})", list(a)),
            DialError::Timeout(a) => format!("connecting to {host}:{port} timed out ({})", list(a)),
            DialError::Failed(e) => format!("cannot connect to {host}:{port}: {e}"),
            DialError::UpstreamProxy(e) => format!("the upstream proxy failed: {e}"),
        }
    }
}

/// A connected upstream, and the address actually dialled (for the log).
pub struct Dialled {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    /// The address was classified against the endpoint's `allowed_ips` (not an operator's
    /// route, not a chained proxy), so a reload must still permit it.
    pub classified: bool,
}

/// Where a name led: addresses to classify, or an operator route that is trusted.
enum Resolved {
    Candidates(Vec<IpAddr>),
    Route(SocketAddr),
}

/// Resolves `host` (IP literal, override table, then DNS).
async fn resolve(config: &ProxyConfig, host: &str, port: u16) -> Result<Resolved, DialError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Resolved::Candidates(vec![ip]));
    }
    match config.overrides.lookup(host, port) {
        Some(Overridden::Answer(addrs)) => return Ok(Resolved::Candidates(addrs)),
        Some(Overridden::Route(to)) => return Ok(Resolved::Route(to)),
        None => {}
    }
    let lookup = tokio::net::lookup_host((host.trim_end_matches('.'), port));
    match tokio::time::timeout(config.limits.dns_timeout, lookup).await {
        Ok(Ok(addrs)) => {
            let mut out: Vec<IpAddr> = Vec::new();
            for a in addrs {
                if !out.contains(&a.ip()) {
                    out.push(a.ip());
                }
            }
            if out.is_empty() {
                Err(DialError::Dns("no addresses".into()))
            } else {
                Ok(Resolved::Candidates(out))
            }
        }
        Ok(Err(e)) => Err(DialError::Dns(e.to_string())),
        Err(_) => Err(DialError::Dns(format!(
            "no answer within {:?}",
            config.limits.dns_timeout
        ))),
    }
}

/// Keeps the addresses `allowed` permits (canonicalised); errors if none is left.
pub fn check_addresses(
    candidates: &[IpAddr],
    allowed: &[IpNet],
) -> Result<Vec<IpAddr>, Vec<RefusedAddr>> {
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for ip in candidates {
        match addr::permitted(*ip, allowed) {
            Ok(ip) => {
                if !ok.contains(&ip) {
                    ok.push(ip)
                }
            }
            Err(r) => refused.push(r),
        }
    }
    if ok.is_empty() {
        Err(refused)
    } else {
        Ok(ok)
    }
}

/// Resolves, classifies and connects directly.
pub async fn dial_direct(
    config: &ProxyConfig,
    host: &str,
    port: u16,
    allowed: &[IpNet],
) -> Result<Dialled, DialError> {
    let (targets, classified): (Vec<SocketAddr>, bool) = match resolve(config, host, port).await? {
        Resolved::Route(to) => (vec![to], false),
        Resolved::Candidates(candidates) => (
            check_addresses(&candidates, allowed)
                .map_err(DialError::AddressClass)?
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
            true,
        ),
    };
    let mut refused = Vec::new();
    let mut timed_out = Vec::new();
    let mut other = None;
    for sa in targets {
        match tokio::time::timeout(config.limits.connect_timeout, TcpStream::connect(sa)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(Dialled {
                    stream,
                    addr: sa,
                    classified,
                });
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => refused.push(sa),
            Ok(Err(e)) => other = Some(format!("{sa}: {e}")),
            Err(_) => timed_out.push(sa),
        }
    }
    Err(if !timed_out.is_empty() {
        DialError::Timeout(timed_out)
    } else if let Some(e) = other {
        DialError::Failed(e)
    } else {
        DialError::Refused(refused)
    })
}

/// Connects to the chained upstream proxy. IP-literal destinations are still classified
/// here; names are resolved (and guarded) by the upstream proxy, which is the point of it.
pub async fn dial_upstream_proxy(
    config: &ProxyConfig,
    proxy: &UpstreamProxy,
    host: &str,
    port: u16,
    allowed: &[IpNet],
    tunnel: bool,
) -> Result<Dialled, DialError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        check_addresses(&[ip], allowed).map_err(DialError::AddressClass)?;
    }
    let targets: Vec<SocketAddr> = match resolve(config, &proxy.host, proxy.port).await? {
        Resolved::Route(to) => vec![to],
        Resolved::Candidates(ips) => ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, proxy.port))
            .collect(),
    };
    let mut last = String::from("no address");
    let mut found = None;
    for sa in targets {
        match tokio::time::timeout(config.limits.connect_timeout, TcpStream::connect(sa)).await {
            Ok(Ok(s)) => {
                found = Some((s, sa));
                break;
            }
            Ok(Err(e)) => last = format!("{sa}: {e}"),
            Err(_) => last = format!("{sa}: connect timed out"),
        }
    }
    let (mut stream, addr) = found.ok_or(DialError::UpstreamProxy(last))?;
    let _ = stream.set_nodelay(true);
    if tunnel {
        let authority = host_port(host, port, 0);
        let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some(auth) = &proxy.authorization {
            req.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
        }
        req.push_str("\r\n");
        let fail = |e: io::Error| DialError::UpstreamProxy(e.to_string());
        stream.write_all(req.as_bytes()).await.map_err(fail)?;
        // Read the response head byte by byte so no tunnel bytes are swallowed.
        let mut head = Vec::new();
        let read = async {
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if head.len() > 16 * 1024 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "response head too large",
                    ));
                }
                if stream.read(&mut byte).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                head.push(byte[0]);
            }
            Ok(())
        };
        tokio::time::timeout(config.limits.connect_timeout, read)
            .await
            .map_err(|_| DialError::UpstreamProxy("no answer to CONNECT".into()))?
            .map_err(fail)?;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&head) {
            Ok(httparse::Status::Complete(_))
                if resp.code.is_some_and(|c| (200..300).contains(&c)) => {}
            Ok(httparse::Status::Complete(_)) => {
                return Err(DialError::UpstreamProxy(format!(
                    "it answered CONNECT {authority} with {} {}",
                    resp.code.unwrap_or(0),
                    resp.reason.unwrap_or("")
                )))
            }
            _ => {
                return Err(DialError::UpstreamProxy(
                    "malformed answer to CONNECT".into(),
                ))
            }
        }
    }
    Ok(Dialled {
        stream,
        addr,
        classified: false,
    })
}
