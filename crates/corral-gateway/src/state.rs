//! The gateway's shared state: configuration, keys, limits, audit log, metrics, models and
//! upstream clients — everything a request needs, built once and shared by every
//! connection. The server owns it; the request pipeline only reads it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::audit::AuditLog;
use crate::config::{Config, UpstreamKind};
use crate::keys::KeyStore;
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::routes::Models;
use crate::upstream::Upstream;

/// Everything a request needs, shared by all connections.
pub struct Gateway {
    pub config: Config,
    pub keys: KeyStore,
    pub limiter: Limiter,
    pub audit: AuditLog,
    pub metrics: Metrics,
    pub models: Models,
    upstreams: HashMap<String, Arc<Upstream>>,
    ready: AtomicBool,
}

impl Gateway {
    /// Opens the keys file and audit log and builds the upstream clients.
    pub fn new(config: Config) -> anyhow::Result<Gateway> {
        let keys = KeyStore::open(&config.keys_file)?;
        let audit = AuditLog::open(&config.audit.path, config.audit.fsync)?;
        let mut upstreams = HashMap::new();
        for (name, cfg) in &config.upstreams {
            upstreams.insert(name.clone(), Arc::new(Upstream::new(name, cfg)?));
        }
        Ok(Gateway {
            models: Models::new(config.models.clone()),
            config,
            keys,
            limiter: Limiter::new(),
            audit,
            metrics: Metrics::new(),
            upstreams,
            ready: AtomicBool::new(true),
        })
    }

    /// The upstream named by a route (validated at load time).
    pub fn upstream(&self, name: &str) -> Arc<Upstream> {
        self.upstreams[name].clone()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// `/readyz` answers unready from now on (shutdown has begun).
    pub fn stop_being_ready(&self) {
        self.ready.store(false, Ordering::Relaxed);
    }

    /// The region shown in inference-profile ARNs.
    pub fn region(&self) -> String {
        self.config
            .upstreams
            .values()
            .filter(|u| u.kind == UpstreamKind::Bedrock)
            .find_map(|u| u.region.clone())
            .unwrap_or_else(|| "us-east-1".into())
    }
}
