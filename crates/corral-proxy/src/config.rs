//! The proxy's configuration: everything except the policy and the attribution.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::log::DecisionLog;
use crate::metrics::Metrics;

/// Everything `serve` needs besides the policy and the attribution.
pub struct ProxyConfig {
    /// Host → addresses, consulted before DNS (like curl's `--resolve`).
    pub overrides: Overrides,
    /// Send every allowed connection through this corporate proxy instead of dialling.
    pub upstream_proxy: Option<UpstreamProxy>,
    pub limits: Limits,
    pub log: DecisionLog,
    pub metrics: Arc<Metrics>,
}

impl ProxyConfig {
    /// Defaults: no overrides, no upstream proxy, default limits, no decision log.
    pub fn new(log: DecisionLog) -> ProxyConfig {
        ProxyConfig {
            overrides: Overrides::default(),
            upstream_proxy: None,
            limits: Limits::default(),
            log,
            metrics: Arc::new(Metrics::default()),
        }
    }
}

/// Time and size limits. Defaults suit an agent on a developer machine.
#[derive(Clone, Debug)]
pub struct Limits {
    /// From the start of a request head to its last byte (slow clients get 408).
    pub header_read_timeout: Duration,
    /// Request heads larger than this get 431.
    pub max_header_bytes: usize,
    /// A kept-alive client connection with no new request is closed after this.
    pub keepalive_timeout: Duration,
    /// A tunnel or response with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// DNS resolution of an allowed name.
    pub dns_timeout: Duration,
    /// TCP connect to the upstream (each address).
    pub connect_timeout: Duration,
    /// Client connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 32 * 1024,
            keepalive_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(600),
            dns_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            max_connections: 10_000,
        }
    }
}

/// Host → addresses table (like curl's `--resolve host:port:addr`). Overridden addresses
/// are NOT trusted more than DNS answers: they are classified like any other, so mapping
/// a name to 127.0.0.1 still needs `allowed_ips: [127.0.0.0/8]` on the endpoint.
/// One override: a port (`None` = any) and its addresses.
type PortAddrs = (Option<u16>, Vec<IpAddr>);

#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Keyed by lower-case host without trailing dot; `None` port = every port.
    entries: HashMap<String, Vec<PortAddrs>>,
}

impl Overrides {
    pub fn insert(&mut self, host: &str, port: Option<u16>, addrs: Vec<IpAddr>) {
        self.entries
            .entry(normalise(host))
            .or_default()
            .push((port, addrs));
    }

    /// Addresses for `host:port`, if overridden (an exact port wins over `*`).
    pub fn lookup(&self, host: &str, port: u16) -> Option<&[IpAddr]> {
        let list = self.entries.get(&normalise(host))?;
        list.iter()
            .find(|(p, _)| *p == Some(port))
            .or_else(|| list.iter().find(|(p, _)| p.is_none()))
            .map(|(_, a)| a.as_slice())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Parses `host:port:addr[,addr…]` (`port` may be `*`; IPv6 addresses may be bracketed).
    pub fn parse_entry(&mut self, text: &str) -> Result<(), String> {
        let usage = || {
            format!("--resolve {text:?}: expected HOST:PORT:ADDR[,ADDR…] (PORT may be '*'), e.g. mirror.corp.example:443:10.0.0.7")
        };
        let (host, rest) = text.split_once(':').ok_or_else(usage)?;
        let (port, addrs) = rest.split_once(':').ok_or_else(usage)?;
        if host.is_empty() {
            return Err(usage());
        }
        let port = match port {
            "*" => None,
            p => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(usage)?,
            ),
        };
        let mut list = Vec::new();
        for a in addrs.split(',') {
            let a = a.trim().trim_start_matches('[').trim_end_matches(']');
            list.push(
                a.parse::<IpAddr>()
                    .map_err(|_| format!("--resolve {text:?}: {a:?} is not an IP address"))?,
            );
        }
        self.insert(host, port, list);
        Ok(())
    }
}

fn normalise(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// A corporate HTTP proxy to chain to (`http://host:port`, optionally with `user:pass@`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamProxy {
    pub host: String,
    pub port: u16,
    /// `Proxy-Authorization` value, when the URL carried credentials.
    pub authorization: Option<String>,
}

impl UpstreamProxy {
    pub fn parse(url: &str) -> Result<UpstreamProxy, String> {
        let bad = |why: &str| format!("--upstream-proxy {url:?}: {why}; expected http://HOST:PORT");
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// upstream proxies are supported"))?;
        let rest = rest.trim_end_matches('/');
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (host, port) =
            crate::head::parse_authority(hostport, Some(80)).map_err(|e| bad(&e.to_string()))?;
        let authorization = auth.map(|a| format!("Basic {}", base64(a.as_bytes())));
        Ok(UpstreamProxy {
            host,
            port,
            authorization,
        })
    }
}

fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse_and_match() {
        let mut o = Overrides::default();
        o.parse_entry("Mirror.Test:443:127.0.0.2").unwrap();
        o.parse_entry("mirror.test:*:127.0.0.3,[::1]").unwrap();
        assert_eq!(
            o.lookup("mirror.test.", 443).unwrap(),
            &["127.0.0.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(o.lookup("MIRROR.test", 80).unwrap().len(), 2);
        assert!(o.lookup("other.test", 443).is_none());
        assert!(o.parse_entry("mirror.test:443").is_err());
        assert!(o.parse_entry("mirror.test:0:127.0.0.1").is_err());
        assert!(o.parse_entry("mirror.test:443:not-an-ip").is_err());
    }

    #[test]
    fn upstream_proxy_urls() {
        let p = UpstreamProxy::parse("http://user:pa55@proxy.corp.example:3128/").unwrap();
        assert_eq!(p.host, "proxy.corp.example");
        assert_eq!(p.port, 3128);
        assert_eq!(p.authorization.as_deref(), Some("Basic dXNlcjpwYTU1"));
        assert!(UpstreamProxy::parse("https://proxy:3128").is_err());
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }
}
