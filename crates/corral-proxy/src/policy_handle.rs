//! The policy currently in force, swapped whole on reload.

use std::sync::{Arc, RwLock};

use corral_policy::Matcher;
use tokio::sync::watch;

/// Shared handle on the current [`Matcher`]. Each decision takes one snapshot
/// ([`PolicyHandle::current`]) and decides with it alone, so every decision is made entirely
/// by the old policy or entirely by the new one — never a mix, never neither. Open
/// connections follow [`PolicyHandle::changes`] to be decided again on every reload.
#[derive(Clone)]
pub struct PolicyHandle {
    inner: Arc<RwLock<Current>>,
    changes: Arc<watch::Sender<u64>>,
}

struct Current {
    matcher: Arc<Matcher>,
    generation: u64,
}

impl PolicyHandle {
    /// Starts at generation 1.
    pub fn new(matcher: Arc<Matcher>) -> PolicyHandle {
        PolicyHandle {
            inner: Arc::new(RwLock::new(Current {
                matcher,
                generation: 1,
            })),
            changes: Arc::new(watch::channel(1).0),
        }
    }

    /// The matcher in force now and its generation (1 + number of reloads).
    pub fn current(&self) -> (Arc<Matcher>, u64) {
        let cur = self.inner.read().unwrap_or_else(|p| p.into_inner());
        (cur.matcher.clone(), cur.generation)
    }

    /// The generation in force now.
    pub fn generation(&self) -> u64 {
        self.current().1
    }

    /// Puts `matcher` in force for every decision from now on; returns its generation.
    pub fn replace(&self, matcher: Arc<Matcher>) -> u64 {
        let generation = {
            let mut cur = self.inner.write().unwrap_or_else(|p| p.into_inner());
            cur.matcher = matcher;
            cur.generation += 1;
            cur.generation
        };
        self.changes.send_replace(generation);
        generation
    }

    /// Wakes on every reload after this call (the value is the new generation).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
