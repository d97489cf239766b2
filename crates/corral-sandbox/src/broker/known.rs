//! Identities of processes that already connected, so a process's second connect costs a
//! `stat` of its executable, a read of its `stat`, its environment and its mappings, not
//! the full resolution (the executable's path and hash, its `argv[0]`, every ancestor).
//!
//! An entry is keyed by what the sandbox cannot choose: the caller's pid and start time
//! (one task: a reused pid has another start time) and the executable it runs now, by
//! device, inode, size, mtime and ctime. Executing another file, or the executable being
//! replaced, renamed, unlinked or written, changes the key (unlinking and renaming change
//! the ctime). What a process can change without executing another file is checked on
//! every call anyway ([`IdentityResolver::recheck`]: the environment it was started
//! with, which executing the same file again can change, and the code it maps).
//!
//! The ancestors are those the first connect saw. The chain can change afterwards only
//! when an ancestor exits (the process is re-parented to a subreaper or the sandbox's init,
//! which takes grants away, never adds them) or executes another program (the process was
//! still started by the one recorded). `invoked_as` is display only and is not re-read.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;

use corral_policy::Identity;

use crate::identity::{FileKey, IdentityError, IdentityResolver};
use crate::procfs;

/// How many processes are remembered; when full, the table starts over (an entry only
/// saves work, a miss is resolved in full).
const CAPACITY: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct ProcessKey {
    start_time: u64,
    exe: FileKey,
}

impl ProcessKey {
    /// Read while the caller is stopped in its call; the broker checks the notification is
    /// still valid afterwards (a process that executed meanwhile has lost the caller: the
    /// kernel kills every other thread on `exec`).
    fn of(pid: u32) -> Result<ProcessKey, IdentityError> {
        let gone = |e: io::Error| match e.kind() {
            io::ErrorKind::NotFound => IdentityError::Gone,
            _ => IdentityError::Unreadable(e.to_string()),
        };
        // Follows the link: the file the process runs, even if its path was replaced.
        let exe = std::fs::metadata(format!("/proc/{pid}/exe")).map_err(gone)?;
        let start_time = procfs::stat(pid).map_err(gone)?.start_time;
        Ok(ProcessKey {
            start_time,
            exe: FileKey::of(&exe),
        })
    }
}

/// The broker's memory of who connected, by pid.
#[derive(Default)]
pub(super) struct KnownProcesses {
    by_pid: Mutex<HashMap<u32, (ProcessKey, Identity)>>,
}

/// A resolved identity, and whether it may be remembered once the call proves still
/// valid.
pub(super) struct Resolved {
    pub identity: Identity,
    fresh: Option<ProcessKey>,
}

impl KnownProcesses {
    /// The identity of the stopped caller `pid`: remembered, or resolved in full.
    pub fn identity(
        &self,
        resolver: &IdentityResolver,
        pid: u32,
    ) -> Result<Resolved, IdentityError> {
        let key = ProcessKey::of(pid)?;
        let known = self
            .lock()
            .get(&pid)
            .and_then(|(k, identity)| (*k == key).then(|| identity.clone()));
        if let Some(identity) = known {
            resolver.recheck(pid, &identity.exe)?;
            return Ok(Resolved {
                identity,
                fresh: None,
            });
        }
        Ok(Resolved {
            identity: resolver.resolve(pid)?,
            fresh: Some(key),
        })
    }

    /// Remembers a fresh resolution. Call only after checking that the caller's
    /// notification is still valid: then the process has not executed anything since its
    /// key was read, and the identity is the one of the executable in the key.
    pub fn remember(&self, pid: u32, resolved: &Resolved) {
        let Some(key) = resolved.fresh else { return };
        let mut known = self.lock();
        if known.len() >= CAPACITY {
            known.clear();
        }
        known.insert(pid, (key, resolved.identity.clone()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, (ProcessKey, Identity)>> {
        self.by_pid.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};

    fn sleeper(exe: &std::path::Path, env: &[(&str, &str)]) -> Child {
        // A fresh copy can be busy for a moment: another test thread forking while the
        // copy was open for writing holds it until that child executes.
        let child = (0..100)
            .find_map(|_| {
                match Command::new(exe)
                    .arg("30")
                    .envs(env.iter().copied())
                    .spawn()
                {
                    Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        None
                    }
                    other => Some(other.unwrap()),
                }
            })
            .expect("the copy stayed busy");
        // Until the child has executed the file and the kernel has laid out its new
        // environment (the executable's link changes first; `environ` reads empty until
        // then).
        let pid = child.id();
        while std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .as_deref()
            != Some(exe)
            || procfs::read(&format!("/proc/{pid}/environ")).map_or(true, |e| e.is_empty())
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        child
    }

    fn stop(mut c: Child) {
        c.kill().unwrap();
        c.wait().unwrap();
    }

    #[test]
    fn a_known_process_is_remembered_until_its_executable_changes() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("tool");
        std::fs::copy("/usr/bin/sleep", &tool).unwrap();
        // Pinned (as a policy would): the copy lies where the test can write.
        let resolver = IdentityResolver::new(vec![]).with_trust(crate::identity::TrustRules {
            pinned: Box::new(|_, _| true),
            ..crate::identity::TrustRules::strict()
        });
        let known = KnownProcesses::default();
        let child = sleeper(&tool, &[]);
        let pid = child.id();
        let first = known.identity(&resolver, pid).unwrap();
        assert!(first.fresh.is_some(), "resolved in full the first time");
        assert_eq!(first.identity.exe, tool);
        known.remember(pid, &first);
        let again = known.identity(&resolver, pid).unwrap();
        assert!(again.fresh.is_none(), "remembered the second time");
        assert_eq!(again.identity, first.identity);

        // Renaming the running file changes its ctime: resolved again, and the new path
        // is what the process is known by.
        let moved = dir.path().join("moved");
        std::fs::rename(&tool, &moved).unwrap();
        let after = known.identity(&resolver, pid).unwrap();
        assert!(
            after.fresh.is_some(),
            "a renamed executable is not the one known"
        );
        assert_eq!(after.identity.exe, moved);
        stop(child);
        assert_eq!(
            known.identity(&resolver, pid).err(),
            Some(IdentityError::Gone)
        );
    }

    #[test]
    fn the_environment_is_checked_on_every_call() {
        let resolver = IdentityResolver::new(vec![]);
        let known = KnownProcesses::default();
        let sleep = std::fs::canonicalize("/usr/bin/sleep").unwrap();
        let clean = sleeper(&sleep, &[]);
        let r = known.identity(&resolver, clean.id()).unwrap();
        known.remember(clean.id(), &r);
        // A process that starts with an injection route under a pid the table knows
        // (forged here by copying the entry, as if the same process had executed the
        // same file again with LD_PRELOAD set): refused all the same.
        let injected = sleeper(&sleep, &[("LD_PRELOAD", "/nonexistent/evil.so")]);
        let key = ProcessKey::of(injected.id()).unwrap();
        known
            .lock()
            .insert(injected.id(), (key, r.identity.clone()));
        let got = known.identity(&resolver, injected.id()).map(|r| r.identity);
        assert!(matches!(got, Err(IdentityError::Injection(..))), "{got:?}");
        stop(clean);
        stop(injected);
    }
}
