//! The proxy's configuration: everything except the policy and the attribution.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::prelude::{Engine as _, BASE64_STANDARD};

use crate::log::DecisionLog;
use crate::metrics::Metrics;

/// Everything `serve` needs besides the policy and the attribution.
pub struct ProxyConfig {
    /// Where names are, consulted before DNS (`--resolve`, `--connect-to`).
    pub overrides: Overrides,
    /// Send every allowed connection through this corporate proxy instead of dialling.
    pub upstream_proxy: Option<UpstreamProxy>,
    pub limits: Limits,
    pub log: DecisionLog,
    pub metrics: Arc<Metrics>,
    /// The CA and TLS client for endpoints whose requests are checked inside TLS;
    /// without it such CONNECTs are refused (`l7_not_inspectable`).
    pub intercept: Option<Arc<crate::intercept::Intercept>>,
}

impl ProxyConfig {
    /// Defaults: no overrides, no upstream proxy, default limits, no decision log.
    pub fn new(log: DecisionLog) -> ProxyConfig {
        ProxyConfig {
            overrides: Overrides::default(),
            upstream_proxy: None,
            limits: Limits::default(),
            metrics: Arc::new(Metrics::of_log(&log)),
            log,
            intercept: None,
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

/// Where the operator says a name is, consulted before DNS. Two kinds of entry:
///
/// - `--resolve HOST:PORT:ADDR[,ADDR…]` stands in for DNS (air-gapped hosts, tests): the
///   addresses are classified like any DNS answer, so a private or loopback address still
///   needs `allowed_ips` on the endpoint;
/// - `--connect-to HOST:PORT:ADDR:PORT` routes a name to one socket address the operator
///   vouches for (a gateway on this host, a mirror behind a port map): it is not refused by
///   address class. The policy still decides whether the name may be reached at all, and
///   nothing inside a sandbox can add an entry.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Keyed by lower-case host without trailing dot.
    entries: HashMap<String, Vec<Entry>>,
}

/// One override: a port (`None` = any) and where it leads.
#[derive(Clone, Debug)]
struct Entry {
    port: Option<u16>,
    target: Target,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Answer(Vec<IpAddr>),
    Route(SocketAddr),
}

/// What the table says about `host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Overridden {
    /// Addresses to use instead of DNS, dialled on the requested port and classified.
    Answer(Vec<IpAddr>),
    /// The one socket address the operator routed this name to; trusted.
    Route(SocketAddr),
}

impl Overrides {
    /// Adds a `--resolve` entry.
    pub fn insert(&mut self, host: &str, port: Option<u16>, addrs: Vec<IpAddr>) {
        self.push(host, port, Target::Answer(addrs));
    }

    /// Adds a `--connect-to` entry.
    pub fn route(&mut self, host: &str, port: Option<u16>, to: SocketAddr) {
        self.push(host, port, Target::Route(to));
    }

    fn push(&mut self, host: &str, port: Option<u16>, target: Target) {
        self.entries
            .entry(normalise(host))
            .or_default()
            .push(Entry { port, target });
    }

    /// The entry for `host:port`, if any (an exact port wins over `*`).
    pub fn lookup(&self, host: &str, port: u16) -> Option<Overridden> {
        let list = self.entries.get(&normalise(host))?;
        let entry = list
            .iter()
            .find(|e| e.port == Some(port))
            .or_else(|| list.iter().find(|e| e.port.is_none()))?;
        Some(match &entry.target {
            Target::Answer(a) => Overridden::Answer(a.clone()),
            Target::Route(to) => Overridden::Route(*to),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Parses a `--resolve` value: `host:port:addr[,addr…]` (`port` may be `*`; IPv6
    /// addresses may be bracketed).
    pub fn parse_entry(&mut self, text: &str) -> Result<(), String> {
        let usage = || {
            format!("--resolve {text:?}: expected HOST:PORT:ADDR[,ADDR…] (PORT may be '*'), e.g. mirror.corp.example:443:10.0.0.7")
        };
        let (host, port, addrs) = split_host_port(text).ok_or_else(usage)?;
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

    /// Parses a `--connect-to` value: `host:port:addr:port` (`port` may be `*`; an IPv6
    /// address is bracketed: `gw.test:443:[::1]:8443`).
    pub fn parse_route(&mut self, text: &str) -> Result<(), String> {
        let usage = || {
            format!("--connect-to {text:?}: expected HOST:PORT:ADDR:PORT (the first PORT may be '*'), e.g. llm-gateway.corp.example:443:127.0.0.1:8443")
        };
        let (host, port, to) = split_host_port(text).ok_or_else(usage)?;
        let to: SocketAddr = to.trim().parse().map_err(|_| {
            format!("--connect-to {text:?}: {to:?} is not an IP address and port (write [::1]:8443 for IPv6)")
        })?;
        if to.port() == 0 {
            return Err(usage());
        }
        self.route(host, port, to);
        Ok(())
    }
}

/// `host:port:rest` → (host, port or `*`, rest).
fn split_host_port(text: &str) -> Option<(&str, Option<u16>, &str)> {
    let (host, rest) = text.split_once(':')?;
    let (port, rest) = rest.split_once(':')?;
    if host.is_empty() || rest.is_empty() {
        return None;
    }
    let port = match port {
        "*" => None,
        p => Some(p.parse::<u16>().ok().filter(|p| *p != 0)?),
    };
    Some((host, port, rest))
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
        let authorization = auth.map(|a| format!("Basic {}", BASE64_STANDARD.encode(a)));
        Ok(UpstreamProxy {
            host,
            port,
            authorization,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse_and_match() {
        let mut o = Overrides::default();
        o.parse_entry("Mirror.Test:443:127.0.0.2").unwrap();
        o.parse_entry("mirror.test:*:127.0.0.3,[::1]").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            o.lookup("mirror.test.", 443),
            Some(Overridden::Answer(vec![ip("127.0.0.2")]))
        );
        assert_eq!(
            o.lookup("MIRROR.test", 80),
            Some(Overridden::Answer(vec![ip("127.0.0.3"), ip("::1")]))
        );
        assert!(o.lookup("other.test", 443).is_none());
        assert!(o.parse_entry("mirror.test:443").is_err());
        assert!(o.parse_entry("mirror.test:0:127.0.0.1").is_err());
        assert!(o.parse_entry("mirror.test:443:not-an-ip").is_err());
        assert!(o.parse_entry(":443:127.0.0.1").is_err());
    }

    #[test]
    fn routes_parse_and_win_by_port() {
        let mut o = Overrides::default();
        o.parse_route("gw.test:443:127.0.0.1:8443").unwrap();
        o.parse_route("gw.test:*:[::1]:9000").unwrap();
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            o.lookup("GW.test.", 443),
            Some(Overridden::Route(sa("127.0.0.1:8443")))
        );
        assert_eq!(
            o.lookup("gw.test", 80),
            Some(Overridden::Route(sa("[::1]:9000")))
        );
        for bad in [
            "gw.test:443:127.0.0.1",
            "gw.test:443:127.0.0.1:0",
            "gw.test:443:::1:80",
            "gw.test:443:name.test:80",
            "gw.test:x:127.0.0.1:80",
        ] {
            assert!(o.parse_route(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upstream_proxy_urls() {
        let p = UpstreamProxy::parse("http://user:pa55@proxy.corp.example:3128/").unwrap();
        assert_eq!(p.host, "proxy.corp.example");
        assert_eq!(p.port, 3128);
        assert_eq!(p.authorization.as_deref(), Some("Basic dXNlcjpwYTU1"));
        assert!(UpstreamProxy::parse("https://proxy:3128").is_err());
    }
}
