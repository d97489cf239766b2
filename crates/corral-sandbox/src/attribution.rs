//! The attribution table: `local port → who connected`, filled by the broker *before* it
//! connects a caller's socket to the proxy, read (once) by the proxy when it accepts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use corral_policy::Identity;

/// One brokered connection.
#[derive(Clone, Debug)]
pub struct Attributed {
    pub identity: Identity,
    /// The destination the caller asked for (today always the proxy's documented address;
    /// transparent capture will record real destinations here).
    pub requested: SocketAddr,
    recorded: Instant,
}

/// Entries are used once; unused ones (a connect that failed after recording, a caller
/// killed mid-call) expire after this long.
const TTL: Duration = Duration::from_secs(120);

/// Per-sandbox table keyed by the client port of the brokered socket. Within one sandbox a
/// bound local port identifies one socket, so the key is exact.
#[derive(Default)]
pub struct AttributionTable {
    entries: Mutex<HashMap<u16, Attributed>>,
}

impl AttributionTable {
    pub fn new() -> AttributionTable {
        AttributionTable::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Attributed>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records who owns the socket bound to local `port`.
    pub fn record(&self, port: u16, identity: Identity, requested: SocketAddr) {
        let now = Instant::now();
        let mut e = self.lock();
        if e.len() >= 1024 {
            e.retain(|_, a| now.duration_since(a.recorded) < TTL);
        }
        e.insert(
            port,
            Attributed {
                identity,
                requested,
                recorded: now,
            },
        );
    }

    /// Drops the entry for `port` (the broker's connect failed).
    pub fn forget(&self, port: u16) {
        self.lock().remove(&port);
    }

    /// Takes the entry for an accepted connection whose client address is `peer`.
    pub fn take(&self, peer: SocketAddr) -> Option<Attributed> {
        let a = self.lock().remove(&peer.port())?;
        (a.recorded.elapsed() < TTL).then_some(a)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The proxy's view: each accepted connection is looked up by its client port, once.
impl corral_proxy::Attribution for AttributionTable {
    fn identify(
        &self,
        peer: SocketAddr,
        _local: SocketAddr,
    ) -> Result<Identity, corral_proxy::Unattributed> {
        self.take(peer).map(|a| a.identity).ok_or_else(|| {
            corral_proxy::Unattributed::new(format!(
                "no sandboxed process connected from {peer}: only connections brokered by corral run are served"
            ))
        })
    }

    fn may_block(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(exe: &str) -> Identity {
        Identity {
            pid: Some(7),
            ..Identity::new(exe)
        }
    }

    #[test]
    fn entries_are_used_once() {
        let t = AttributionTable::new();
        let proxy: SocketAddr = "127.0.0.1:3128".parse().unwrap();
        t.record(40000, who("/usr/bin/curl"), proxy);
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert_eq!(
            t.take(peer).unwrap().identity.exe,
            std::path::Path::new("/usr/bin/curl")
        );
        assert!(t.take(peer).is_none());
        t.record(40001, who("/usr/bin/git"), proxy);
        t.forget(40001);
        assert!(t.is_empty());
    }
}
