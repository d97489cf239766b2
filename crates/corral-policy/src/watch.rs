//! Reload primitive: watch a policy file and publish each new valid matcher.
//!
//! The watch is on the file's *directory*, not the file: editors save by writing a
//! temporary file and renaming it over the original, and Kubernetes updates a mounted
//! ConfigMap by swapping the `..data` symlink; both replace the inode a file watch
//! would be attached to. When the policy path is a symlink into another directory,
//! that directory is watched too. Bursts of events are debounced, the file is re-read
//! through any symlinks, and only a changed, valid policy is compiled and published.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use crate::diag::{Diagnostic, PolicyError};
use crate::matcher::Matcher;
use crate::model::{CompileOptions, Policy};

/// How long a burst of file events must be quiet before the file is re-read.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Watches a policy file; dropping it stops watching (and waits for the watcher
/// thread, so no callback runs after the drop returns).
pub struct PolicyWatcher {
    watcher: Option<RecommendedWatcher>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PolicyWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyWatcher").finish_non_exhaustive()
    }
}

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Directories whose changes can change what `path` reads as.
fn watch_dirs(path: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![parent_of(path)];
    if let Ok(real) = std::fs::canonicalize(path) {
        let d = parent_of(&real);
        if !dirs.contains(&d) && d != std::fs::canonicalize(&dirs[0]).unwrap_or_default() {
            dirs.push(d);
        }
    }
    dirs
}

/// File names whose changes matter: the policy file's own, its symlink target's, and
/// Kubernetes' `..data`-style entries (names starting with `..`).
fn relevant_names(path: &Path) -> Vec<std::ffi::OsString> {
    let mut names: Vec<std::ffi::OsString> =
        path.file_name().map(|n| n.to_owned()).into_iter().collect();
    if let Some(n) = std::fs::canonicalize(path)
        .ok()
        .and_then(|r| r.file_name().map(|n| n.to_owned()))
    {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

fn is_relevant(changed: &Path, names: &[std::ffi::OsString]) -> bool {
    match changed.file_name() {
        Some(n) => names.iter().any(|k| k == n) || n.to_string_lossy().starts_with(".."),
        None => true,
    }
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> PolicyError {
    PolicyError::Io {
        file: path.display().to_string(),
        message: e.to_string(),
    }
}

impl PolicyWatcher {
    /// Loads now (error if invalid), then watches. `on_change` receives each new valid
    /// `Arc<Matcher>` (with that policy's warnings); invalid files are reported via
    /// `on_error` (diagnostics carry file:line:column) and the last good matcher stays
    /// in force. Each distinct file content is reported once.
    pub fn spawn(
        path: PathBuf,
        opts: CompileOptions,
        on_change: impl Fn(Arc<Matcher>, &[Diagnostic]) + Send + 'static,
        on_error: impl Fn(&PolicyError) + Send + 'static,
    ) -> Result<(Arc<Matcher>, PolicyWatcher), PolicyError> {
        let source = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
        let loaded = Policy::parse(&source, &path.display().to_string())?;
        let first = Arc::new(loaded.policy.compile(&opts));

        let (tx, rx) = mpsc::channel::<()>();
        let relevant = relevant_names(&path);
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Only events that can change what the policy path reads as count: other
            // files in the directory (a busy decision log, say) must not hold back the
            // debounce, or reloads would wait until they are quiet.
            if let Ok(event) = res {
                if event.paths.is_empty() || event.paths.iter().any(|p| is_relevant(p, &relevant)) {
                    let _ = tx.send(());
                }
            }
        })
        .map_err(|e| io_error(&path, format!("cannot watch for changes: {e}")))?;
        for d in &watch_dirs(&path) {
            watcher
                .watch(d, RecursiveMode::NonRecursive)
                .map_err(|e| io_error(d, format!("cannot watch for changes: {e}")))?;
        }
        let worker_path = path.clone();
        let thread = std::thread::Builder::new()
            .name("corral-policy-watch".into())
            .spawn(move || {
                let mut last = source;
                run(&worker_path, &opts, &rx, &mut last, on_change, on_error);
            })
            .map_err(|e| io_error(&path, format!("cannot start the watcher thread: {e}")))?;
        Ok((
            first,
            PolicyWatcher {
                watcher: Some(watcher),
                thread: Some(thread),
            },
        ))
    }
}

fn run(
    path: &Path,
    opts: &CompileOptions,
    rx: &Receiver<()>,
    last: &mut String,
    on_change: impl Fn(Arc<Matcher>, &[Diagnostic]),
    on_error: impl Fn(&PolicyError),
) {
    let name = path.display().to_string();
    while rx.recv().is_ok() {
        // Debounce: wait until the directory has been quiet for DEBOUNCE.
        loop {
            match rx.recv_timeout(DEBOUNCE) {
                Ok(()) => continue,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let source = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(_) => {
                // A replace may be half done (unlinked, not yet renamed): look again.
                std::thread::sleep(DEBOUNCE);
                match std::fs::read_to_string(path) {
                    Ok(s) => s,
                    Err(e) => {
                        let marker = format!("\0io:{e}");
                        if *last != marker {
                            on_error(&io_error(path, e));
                            *last = marker;
                        }
                        continue;
                    }
                }
            }
        };
        let mut source = source;
        let mut result = Policy::parse(&source, &name);
        // A writer may be mid-way (truncated, half written): if the text is invalid,
        // give it one more quiet period and use the newer text if it changed.
        if result.is_err() {
            std::thread::sleep(DEBOUNCE);
            if let Ok(again) = std::fs::read_to_string(path) {
                if again != source {
                    result = Policy::parse(&again, &name);
                    source = again;
                }
            }
        }
        if source == *last {
            continue;
        }
        *last = source;
        match result {
            Ok(loaded) => on_change(Arc::new(loaded.policy.compile(opts)), &loaded.warnings),
            Err(e) => on_error(&e),
        }
    }
}

impl Drop for PolicyWatcher {
    fn drop(&mut self) {
        // Dropping the notify watcher drops the event sender, which ends the worker.
        drop(self.watcher.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
