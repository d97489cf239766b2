//! Reload primitive: watch a policy file and publish each new valid matcher.
//!
//! The watch is on the file's *directory*, not the file: editors save by writing a
//! temporary file and renaming it over the original, and Kubernetes updates a mounted
//! ConfigMap by swapping the `..data` symlink; both replace the inode a file watch
//! would be attached to. When the policy path is a symlink into another directory,
//! that directory is watched too. Bursts of events are debounced, the file is re-read
//! through any symlinks, and only a changed, valid policy is compiled and published.
//!
//! Binary paths listed as symlinks (`~/.local/bin/claude`) are watched too: when an
//! upgrade re-points one, the unchanged policy is recompiled so that it matches the new
//! target, with no edit and no restart.
//!
//! The inotify instance is created [`WATCH_DELAY`] after start, not at once: closing one
//! waits for a kernel grace period (SRCU, in `fsnotify_destroy_group`; up to ~20 ms on a
//! busy host), and that close happens on the way out — at the latest when the process
//! exits — so a short `corral run -- CMD` would pay it on every run. What changed in the
//! meantime is found by comparing the file's and the links' state with the one at start,
//! without opening the file.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use crate::diag::{Diagnostic, PolicyError};
use crate::matcher::Matcher;
use crate::model::{CompileOptions, Policy};

/// How long a burst of file events must be quiet before the file is re-read.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// How long after start the watch begins (see the module's comment). An edit made before
/// is published then: it is never lost, only later.
pub const WATCH_DELAY: Duration = Duration::from_secs(1);

/// The notify watcher, once the worker created it; owned here so that a drop ends it.
type Slot = Arc<Mutex<Option<RecommendedWatcher>>>;

/// Watches a policy file; dropping it stops watching (and waits for the watcher
/// thread, so no callback runs after the drop returns).
pub struct PolicyWatcher {
    watcher: Option<Slot>,
    /// Dropped to tell a worker still waiting out [`WATCH_DELAY`] to stop.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PolicyWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyWatcher").finish_non_exhaustive()
    }
}

/// The policy file, read through its directory as it was opened at start: renaming the
/// directory or one of its parents (from inside a sandbox, say) and putting another file
/// at the old path does not redirect a reload. A symlink in the directory is still
/// followed (relative targets from that same directory), so an editor's rename or a
/// Kubernetes `..data` swap is picked up.
struct PinnedFile {
    /// `/proc/self/fd/N/NAME` while the directory is held open, else the path itself.
    read_path: PathBuf,
    /// Keeps the directory (and so `read_path`) valid.
    _dir: Option<std::fs::File>,
}

impl PinnedFile {
    fn new(path: &Path) -> PinnedFile {
        use std::os::fd::AsRawFd;
        let dir = std::fs::File::open(parent_of(path)).ok();
        let read_path = match (&dir, path.file_name()) {
            (Some(d), Some(name)) => {
                let pinned = PathBuf::from(format!("/proc/self/fd/{}", d.as_raw_fd())).join(name);
                if pinned.exists() {
                    pinned
                } else {
                    path.to_path_buf()
                }
            }
            _ => path.to_path_buf(),
        };
        PinnedFile {
            read_path,
            _dir: dir,
        }
    }

    fn read(&self) -> std::io::Result<String> {
        std::fs::read_to_string(&self.read_path)
    }

    /// The directory as opened at start (`/proc/self/fd/N`), to watch that very directory.
    fn dir(&self) -> Option<PathBuf> {
        self.read_path
            .starts_with("/proc/self/fd")
            .then(|| parent_of(&self.read_path))
    }

    /// What the path reads as, without opening it: any write or replacement changes it.
    fn state(&self) -> Option<FileState> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&self.read_path).ok()?;
        Some((
            m.dev(),
            m.ino(),
            m.size(),
            (m.mtime(), m.mtime_nsec()),
            (m.ctime(), m.ctime_nsec()),
        ))
    }
}

/// (dev, inode, size, mtime, ctime) of the policy file.
type FileState = (u64, u64, u64, (i64, i64), (i64, i64));

/// Where each listed binary link points now.
fn link_targets(links: &[PathBuf]) -> Vec<Option<PathBuf>> {
    links.iter().map(|l| std::fs::read_link(l).ok()).collect()
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

/// Whether an event can mean new content. Opening or reading a file is not a change, and
/// counting it would make the watcher's own re-read trigger the next one, forever.
/// Closing a file opened for writing ends an in-place write, so it counts.
fn may_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

fn is_relevant(changed: &Path, names: &[std::ffi::OsString]) -> bool {
    match changed.file_name() {
        Some(n) => names.iter().any(|k| k == n) || n.to_string_lossy().starts_with(".."),
        None => true,
    }
}

/// What a file event may have changed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    /// The policy file (or what its path resolves to).
    Policy,
    /// A symlink listed as a binary path (`~/.local/bin/claude`): an upgrade re-points it,
    /// and the matcher must follow without the policy being edited.
    BinaryLink,
}

/// Exact binary paths (after `~` expansion) that are symlinks on this host now.
fn linked_binaries(policy: &Policy, opts: &CompileOptions) -> Vec<PathBuf> {
    let mut links = Vec::new();
    for np in &policy.network_policies {
        for b in &np.binaries {
            let Some(path) = crate::matcher::expand_home(&b.path, opts.home.as_deref()) else {
                continue;
            };
            if crate::glob::Glob::is_pattern(&path) {
                continue;
            }
            let path = PathBuf::from(path);
            let is_link = std::fs::symlink_metadata(&path)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false);
            if is_link && !links.contains(&path) {
                links.push(path);
            }
        }
    }
    links
}

/// Watches the directories of `links` (once each) and remembers the links.
fn watch_links(
    watcher: &mut Option<RecommendedWatcher>,
    watched: &mut Vec<PathBuf>,
    shared: &Mutex<Vec<PathBuf>>,
    links: Vec<PathBuf>,
) {
    let Some(w) = watcher.as_mut() else { return };
    for link in &links {
        let dir = parent_of(link);
        if !watched.contains(&dir) && w.watch(&dir, RecursiveMode::NonRecursive).is_ok() {
            watched.push(dir);
        }
    }
    *shared.lock().unwrap_or_else(|e| e.into_inner()) = links;
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
        PolicyWatcher::spawn_loaded(path, source, &loaded.policy, opts, on_change, on_error)
    }

    /// Like [`PolicyWatcher::spawn`], for a policy the caller already read (`source`) and
    /// parsed (`policy`), so one reading of the file decides everything at start-up. An edit
    /// made after that reading and before the watch is in place is picked up at once.
    pub fn spawn_loaded(
        path: PathBuf,
        source: String,
        policy: &Policy,
        opts: CompileOptions,
        on_change: impl Fn(Arc<Matcher>, &[Diagnostic]) + Send + 'static,
        on_error: impl Fn(&PolicyError) + Send + 'static,
    ) -> Result<(Arc<Matcher>, PolicyWatcher), PolicyError> {
        let first = Arc::new(policy.compile(&opts));
        let file = PinnedFile::new(&path);

        let (tx, rx) = mpsc::channel::<Change>();
        let mut watched = watch_dirs(&path);
        if let Some(pinned) = file.dir() {
            watched[0] = pinned;
        }
        let links = linked_binaries(policy, &opts);
        let at_start = Start {
            file: file.state(),
            targets: link_targets(&links),
            links,
            relevant: relevant_names(&path),
        };
        if file.read().ok().as_deref() != Some(source.as_str()) {
            let _ = tx.send(Change::Policy);
        }
        let slot: Slot = Arc::default();
        let (stop, stopped) = mpsc::channel::<()>();
        // The worker holds the watcher weakly: dropping PolicyWatcher drops the watcher,
        // which closes the event channel and ends the worker.
        let state = Worker {
            path: path.clone(),
            file,
            opts,
            watcher: Arc::downgrade(&slot),
            watched,
            links: Arc::default(),
        };
        let thread = std::thread::Builder::new()
            .name("corral-policy-watch".into())
            .spawn(move || {
                if stopped.recv_timeout(WATCH_DELAY) != Err(RecvTimeoutError::Timeout) {
                    return;
                }
                let mut state = state;
                if let Err(e) = state.start_watching(tx, at_start) {
                    on_error(&e);
                    return;
                }
                let mut last = source;
                state.run(&rx, &mut last, on_change, on_error);
            })
            .map_err(|e| io_error(&path, format!("cannot start the watcher thread: {e}")))?;
        Ok((
            first,
            PolicyWatcher {
                watcher: Some(slot),
                stop: Some(stop),
                thread: Some(thread),
            },
        ))
    }
}

/// What the watched files looked like at start.
struct Start {
    file: Option<FileState>,
    links: Vec<PathBuf>,
    targets: Vec<Option<PathBuf>>,
    relevant: Vec<std::ffi::OsString>,
}

/// The watcher thread's state.
struct Worker {
    path: PathBuf,
    file: PinnedFile,
    opts: CompileOptions,
    watcher: Weak<Mutex<Option<RecommendedWatcher>>>,
    watched: Vec<PathBuf>,
    links: Arc<Mutex<Vec<PathBuf>>>,
}

impl Worker {
    /// Creates the inotify watch and reports what changed since start. `tx` moves into the
    /// watcher, so the event channel closes when the watcher is dropped.
    fn start_watching(&mut self, tx: mpsc::Sender<Change>, at: Start) -> Result<(), PolicyError> {
        let Some(slot) = self.watcher.upgrade() else {
            return Ok(());
        };
        let recheck = tx.clone();
        let links = self.links.clone();
        let relevant = at.relevant;
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            if !may_change(&event.kind) {
                return;
            }
            // Only events that can change what the policy path reads as count: other
            // files in the directory (a busy decision log, say) must not hold back the
            // debounce, or reloads would wait until they are quiet.
            if event.paths.is_empty() || event.paths.iter().any(|p| is_relevant(p, &relevant)) {
                let _ = tx.send(Change::Policy);
            } else {
                let links = links.lock().unwrap_or_else(|e| e.into_inner());
                if event.paths.iter().any(|p| links.contains(p)) {
                    let _ = tx.send(Change::BinaryLink);
                }
            }
        })
        .map_err(|e| io_error(&self.path, format!("cannot watch for changes: {e}")))?;
        for d in &self.watched {
            watcher
                .watch(d, RecursiveMode::NonRecursive)
                .map_err(|e| io_error(d, format!("cannot watch for changes: {e}")))?;
        }
        let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        *guard = Some(watcher);
        watch_links(&mut guard, &mut self.watched, &self.links, at.links.clone());
        drop(guard);
        if self.file.state() != at.file {
            let _ = recheck.send(Change::Policy);
        }
        if link_targets(&at.links) != at.targets {
            let _ = recheck.send(Change::BinaryLink);
        }
        Ok(())
    }

    fn run(
        &mut self,
        rx: &Receiver<Change>,
        last: &mut String,
        on_change: impl Fn(Arc<Matcher>, &[Diagnostic]),
        on_error: impl Fn(&PolicyError),
    ) {
        let path = self.path.clone();
        let path = path.as_path();
        let opts = self.opts.clone();
        let opts = &opts;
        let name = path.display().to_string();
        while let Ok(first) = rx.recv() {
            // Debounce: wait until the relevant files have been quiet for DEBOUNCE.
            let mut relink = first == Change::BinaryLink;
            loop {
                match rx.recv_timeout(DEBOUNCE) {
                    Ok(change) => relink |= change == Change::BinaryLink,
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            let source = match self.file.read() {
                Ok(s) => s,
                Err(_) => {
                    // A replace may be half done (unlinked, not yet renamed): look again.
                    std::thread::sleep(DEBOUNCE);
                    match self.file.read() {
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
                if let Ok(again) = self.file.read() {
                    if again != source {
                        result = Policy::parse(&again, &name);
                        source = again;
                    }
                }
            }
            // An unchanged policy is recompiled only when a listed binary link moved.
            if source == *last && !(relink && result.is_ok()) {
                continue;
            }
            *last = source;
            match result {
                Ok(loaded) => {
                    if let Some(w) = self.watcher.upgrade() {
                        let links = linked_binaries(&loaded.policy, opts);
                        let mut guard = w.lock().unwrap_or_else(|e| e.into_inner());
                        watch_links(&mut guard, &mut self.watched, &self.links, links);
                    }
                    on_change(Arc::new(loaded.policy.compile(opts)), &loaded.warnings)
                }
                Err(e) => on_error(&e),
            }
        }
    }
}

impl Drop for PolicyWatcher {
    fn drop(&mut self) {
        // A worker still waiting to start stops at once; dropping the notify watcher drops
        // the event sender, which ends a running one.
        drop(self.stop.take());
        drop(self.watcher.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
