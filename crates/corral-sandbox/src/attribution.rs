//! The attribution table: `client address → who connected`, filled by the broker *before*
//! it connects a caller's socket to the proxy, read (once) by the proxy when it accepts.
//!
//! An entry is claimed only by the very socket the broker connected:
//! - the key is the whole client address (ip and port), and the accepted connection must
//!   arrive on the proxy listener the broker connected to;
//! - an entry is used once, never overwritten (a second record for the same address is
//!   refused), and expires unused;
//! - the kernel is asked (`sock_diag`, in the network namespace where the client lives)
//!   which socket is at the client end of the accepted connection; its inode must be the
//!   one the broker recorded. In seccomp-only mode the proxy listens on the host's loopback,
//!   where any process of the host can connect: such connections have no entry, or not the
//!   recorded socket, and are refused (and logged by the proxy as `unattributed`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_policy::Identity;

use crate::sys::net::DiagSocket;

/// One brokered connection.
#[derive(Clone, Debug)]
pub struct Attributed {
    pub identity: Identity,
    /// The destination the caller asked for (today always the proxy's documented address;
    /// transparent capture will record real destinations here).
    pub requested: SocketAddr,
    /// The inode of the socket the broker connected.
    inode: u64,
    recorded: Instant,
}

/// Entries are used once; unused ones (a connect that failed after recording, a caller
/// killed mid-call) expire after this long.
const TTL: Duration = Duration::from_secs(120);

/// A second record for a client address that already has one.
#[derive(Debug, PartialEq, Eq)]
pub struct Collision;

/// Per-sandbox table keyed by the client address of the brokered socket.
pub struct AttributionTable {
    entries: Mutex<HashMap<SocketAddr, Attributed>>,
    /// The proxy listener the broker connects sockets to.
    listener: SocketAddr,
    /// `sock_diag` in the client sockets' network namespace; without it nothing is served.
    diag: Option<Arc<DiagSocket>>,
}

fn canonical(a: SocketAddr) -> SocketAddr {
    let ip = match a.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    SocketAddr::new(ip, a.port())
}

impl AttributionTable {
    pub fn new(listener: SocketAddr, diag: Option<Arc<DiagSocket>>) -> AttributionTable {
        AttributionTable {
            entries: Mutex::new(HashMap::new()),
            listener: canonical(listener),
            diag,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Attributed>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records who owns socket `inode`, bound at `client`. Refused if `client` has an entry.
    pub fn record(
        &self,
        client: SocketAddr,
        inode: u64,
        identity: Identity,
        requested: SocketAddr,
    ) -> Result<(), Collision> {
        let now = Instant::now();
        let mut e = self.lock();
        if e.len() >= 1024 {
            e.retain(|_, a| now.duration_since(a.recorded) < TTL);
        }
        let key = canonical(client);
        if e.get(&key)
            .is_some_and(|old| now.duration_since(old.recorded) < TTL)
        {
            return Err(Collision);
        }
        e.insert(
            key,
            Attributed {
                identity,
                requested,
                inode,
                recorded: now,
            },
        );
        Ok(())
    }

    /// Drops the entry for `client` (the broker's connect failed).
    pub fn forget(&self, client: SocketAddr) {
        self.lock().remove(&canonical(client));
    }

    /// Takes the entry for an accepted connection from `peer` on `local`, after checking
    /// with the kernel that the client socket is the one recorded.
    pub fn take(&self, peer: SocketAddr, local: SocketAddr) -> Result<Attributed, String> {
        let a = self.lock().remove(&canonical(peer)).ok_or_else(|| {
            format!("no socket of the sandbox was connected from {peer} by corral's broker: only brokered connections are served")
        })?;
        if a.recorded.elapsed() >= TTL {
            return Err(format!(
                "the record for {peer} expired before the proxy accepted it"
            ));
        }
        if canonical(local) != self.listener {
            return Err(format!(
                "{peer} connected to {local}, not to the proxy listener {}",
                self.listener
            ));
        }
        let Some(diag) = &self.diag else {
            return Err("no sock_diag socket to check the client socket with: refused".into());
        };
        match diag.with(|fd| corral_proxy::tcp_client_inode(fd, peer, local)) {
            Ok(Some(inode)) if inode == a.inode => Ok(a),
            Ok(Some(other)) => Err(format!(
                "the client socket of {peer} (inode {other}) is not the one corral's broker connected (inode {}): refused",
                a.inode
            )),
            // Closed before the proxy asked (or never in the sandbox): a closed socket's
            // buffered request could be anyone's, so it is not served either.
            Ok(None) => Err(format!(
                "no open client socket {peer} -> {local} (closed before the proxy accepted it, or not the sandbox's)"
            )),
            Err(e) => Err(format!("cannot ask the kernel who connected from {peer}: {e}")),
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The proxy's view: each accepted connection is looked up by its client address, once.
impl corral_proxy::Attribution for AttributionTable {
    fn identify(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Result<Identity, corral_proxy::Unattributed> {
        self.take(peer, local)
            .map(|a| a.identity)
            .map_err(corral_proxy::Unattributed::new)
    }

    /// The kernel check is one `sock_diag` request for an exact socket, answered inline
    /// while the request is sent (nothing waits for another process): a few microseconds,
    /// less than the hand-over to tokio's blocking pool that `true` would cost on every
    /// accepted connection.
    fn may_block(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    fn who(exe: &str) -> Identity {
        Identity {
            pid: Some(7),
            ..Identity::new(exe)
        }
    }

    fn inode(s: &TcpStream) -> u64 {
        crate::sys::net::socket_inode(s.as_fd()).unwrap()
    }

    #[test]
    fn only_the_recorded_socket_claims_its_entry_once() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = listener.local_addr().unwrap();
        let diag = Arc::new(DiagSocket::new(
            crate::sys::net::sock_diag_socket().unwrap(),
        ));
        let t = AttributionTable::new(proxy, Some(diag));
        let curl = TcpStream::connect(proxy).unwrap();
        let (_a, peer) = listener.accept().unwrap();
        t.record(peer, inode(&curl), who("/usr/bin/curl"), proxy)
            .unwrap();
        assert_eq!(
            t.record(peer, 1, who("/usr/bin/python3"), proxy),
            Err(Collision),
            "an entry is never overwritten"
        );
        let got = t.take(peer, proxy).unwrap();
        assert_eq!(got.identity.exe, std::path::Path::new("/usr/bin/curl"));
        assert!(t.take(peer, proxy).is_err(), "used once");

        // Same port, another loopback address: not the entry's.
        let other = TcpStream::connect(proxy).unwrap();
        let (_b, other_peer) = listener.accept().unwrap();
        t.record(other_peer, inode(&other), who("/usr/bin/curl"), proxy)
            .unwrap();
        let moved = SocketAddr::new("127.0.0.9".parse().unwrap(), other_peer.port());
        assert!(t.take(moved, proxy).is_err());

        // The right address, but the kernel says another socket sits there.
        let third = TcpStream::connect(proxy).unwrap();
        let (_c, third_peer) = listener.accept().unwrap();
        t.record(third_peer, inode(&curl), who("/usr/bin/curl"), proxy)
            .unwrap();
        let why = t.take(third_peer, proxy).unwrap_err();
        assert!(why.contains("not the one"), "{why}");
        drop(third);

        // Accepted elsewhere than on the proxy listener.
        let fourth = TcpStream::connect(proxy).unwrap();
        let (_d, fourth_peer) = listener.accept().unwrap();
        t.record(fourth_peer, inode(&fourth), who("/usr/bin/curl"), proxy)
            .unwrap();
        let elsewhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(t.take(fourth_peer, elsewhere).is_err());
        t.forget(other_peer);
        assert!(t.is_empty());
    }

    #[test]
    fn without_a_way_to_ask_the_kernel_nothing_is_served() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = listener.local_addr().unwrap();
        let t = AttributionTable::new(proxy, None);
        let s = TcpStream::connect(proxy).unwrap();
        let (_a, peer) = listener.accept().unwrap();
        t.record(peer, inode(&s), who("/usr/bin/curl"), proxy)
            .unwrap();
        assert!(t.take(peer, proxy).is_err());
    }
}
