//! Server configurations per host, each presenting a leaf signed by the session CA,
//! cached in a bounded LRU: a host the sandbox talks to often costs one signature.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::ca::CertAuthority;

/// How many hosts keep their leaf.
pub const DEFAULT_CAPACITY: usize = 1024;

pub struct LeafCache {
    capacity: usize,
    inner: Mutex<Lru>,
}

#[derive(Default)]
struct Lru {
    tick: u64,
    map: HashMap<String, (Arc<rustls::ServerConfig>, u64)>,
}

impl LeafCache {
    pub fn new(capacity: usize) -> LeafCache {
        LeafCache {
            capacity: capacity.max(1),
            inner: Mutex::new(Lru::default()),
        }
    }

    /// The configuration for `host` (lower-case, no trailing dot), minted on a miss;
    /// with `h2` it offers HTTP/2 before HTTP/1.1.
    pub fn get(
        &self,
        ca: &CertAuthority,
        host: &str,
        h2: bool,
    ) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let key = if h2 {
            format!("h2 {host}")
        } else {
            host.to_string()
        };
        if let Some(hit) = self.lookup(&key) {
            return Ok(hit);
        }
        // Signed outside the lock: two first requests for one host may both sign.
        let leaf = ca.leaf(host)?;
        let mut config = rustls::ServerConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(leaf.chain, leaf.key)?;
        config.alpn_protocols = if h2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let config = Arc::new(config);
        let mut lru = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        lru.tick += 1;
        let tick = lru.tick;
        if lru.map.len() >= self.capacity && !lru.map.contains_key(&key) {
            // O(capacity) eviction on a miss only; a miss already costs a signature.
            if let Some(oldest) = lru
                .map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone())
            {
                lru.map.remove(&oldest);
            }
        }
        lru.map.insert(key, (config.clone(), tick));
        Ok(config)
    }

    fn lookup(&self, host: &str) -> Option<Arc<rustls::ServerConfig>> {
        let mut lru = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        lru.tick += 1;
        let tick = lru.tick;
        let entry = lru.map.get_mut(host)?;
        entry.1 = tick;
        Some(entry.0.clone())
    }

    /// Hosts with a cached leaf.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |l| l.map.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_are_shared_and_the_least_recent_host_is_evicted() {
        let ca = CertAuthority::mint("t").unwrap();
        let cache = LeafCache::new(2);
        let a = cache.get(&ca, "a.test", false).unwrap();
        assert!(Arc::ptr_eq(&a, &cache.get(&ca, "a.test", false).unwrap()));
        cache.get(&ca, "b.test", false).unwrap();
        // a.test was used more recently than b.test by this lookup.
        cache.get(&ca, "a.test", false).unwrap();
        cache.get(&ca, "c.test", false).unwrap();
        assert_eq!(cache.len(), 2);
        assert!(Arc::ptr_eq(&a, &cache.get(&ca, "a.test", false).unwrap()));
        assert!(cache.lookup("b.test").is_none());
    }
}
