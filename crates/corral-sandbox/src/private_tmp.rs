//! The session's own temporary files: a directory per `corral run`, removed when it ends.
//!
//! The sandbox does not write the host's `/tmp`: files there are shared with every other
//! program of the host (its sockets, its lock files, the scripts it runs from there), so a
//! sandbox that could write them could plant what a process outside later trusts. Instead
//!
//! - in namespace mode `/tmp` is an overlay: the host's files show through, read-only, and
//!   what the sandbox writes lands in this directory's `upper/` — private to the session
//!   and gone when it ends (the working directory and the policy's paths that lie under
//!   `/tmp` are carried over the overlay, so writing them writes the host's files);
//! - in seccomp-only mode (no mount namespace) `/tmp` stays read-only and `TMPDIR` points
//!   at this directory's `tmp/`, which every well-behaved tool uses instead.
//!
//! The directory is `/var/tmp/corral-UID/PID` (or under `~/.cache/corral` when `/var/tmp`
//! cannot be used): not under `/tmp`, since an overlay's upper layer may not lie inside
//! its lower one. The parent `corral-UID` must be this user's and closed to others, or it
//! is not used (another user could have planted it in the shared `/var/tmp`). Directories
//! of sessions whose supervisor is gone are removed at the next start.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A session's private temporary directory; removed on drop.
#[derive(Debug)]
pub struct PrivateTmp {
    root: PathBuf,
}

impl PrivateTmp {
    /// Creates the session's directory with its `tmp/`, `upper/` and `work/`.
    pub fn create(home: Option<&Path>) -> io::Result<PrivateTmp> {
        let uid = crate::sys::ids().0;
        let mut bases = vec![PathBuf::from(format!("/var/tmp/corral-{uid}"))];
        if let Some(h) = home {
            bases.push(h.join(".cache/corral/sessions"));
        }
        let mut last = io::Error::other("no place for the session's temporary files");
        for base in bases {
            match Self::create_in(&base, uid) {
                Ok(t) => return Ok(t),
                Err(e) => {
                    last = io::Error::new(e.kind(), format!("{}: {e}", base.display()));
                }
            }
        }
        Err(last)
    }

    fn create_in(base: &Path, uid: u32) -> io::Result<PrivateTmp> {
        match std::fs::DirBuilder::new().mode(0o700).create(base) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .recursive(true)
                    .create(base)?;
            }
            Err(e) => return Err(e),
        }
        let meta = std::fs::symlink_metadata(base)?;
        if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "exists and is not a directory of this user's closed to others",
            ));
        }
        remove_stale(base);
        let root = base.join(std::process::id().to_string());
        if std::fs::symlink_metadata(&root).is_ok() {
            // A previous process with our pid did not clean up.
            remove_tree(&root);
        }
        std::fs::DirBuilder::new().mode(0o700).create(&root)?;
        let t = PrivateTmp { root };
        // Three directories, no more: on a journaling file system each one costs a tenth
        // of a millisecond to make and as much to remove, on every `corral run`.
        for sub in ["tmp", "upper", "work"] {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(t.root.join(sub))?;
        }
        // The sandbox's /tmp has the host's /tmp's mode (sticky, writable by all).
        std::fs::set_permissions(t.tmp(), std::fs::Permissions::from_mode(0o1777))?;
        Ok(t)
    }

    /// `TMPDIR` in seccomp-only mode (and the fallback `/tmp` in namespace mode).
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The overlay's upper layer: what the sandbox writes under `/tmp`.
    pub fn upper(&self) -> PathBuf {
        self.root.join("upper")
    }

    /// The overlay's work directory.
    pub fn work(&self) -> PathBuf {
        self.root.join("work")
    }

    /// An empty file, bound over hidden files in namespace mode: no Landlock rule covers
    /// it, so reading it is refused like reading what it covers. Made when first asked.
    pub fn blank(&self) -> io::Result<PathBuf> {
        let path = self.root.join("blank");
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&path)
        {
            Ok(_) => Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(path),
            Err(e) => Err(e),
        }
    }

    /// The empty `/tmp` of namespace mode where no overlay can be mounted: `tmp/`, which
    /// only seccomp-only mode uses otherwise.
    pub fn bare(&self) -> PathBuf {
        self.tmp()
    }
}

impl Drop for PrivateTmp {
    fn drop(&mut self) {
        remove_tree(&self.root);
    }
}

/// Removes session directories under `base` whose supervisor is gone.
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            remove_tree(&e.path());
        }
    }
}

/// Removes a tree the sandbox wrote, symlinks included as links (never followed), opening
/// directories the overlay left closed (`work/work` is created with mode 0).
pub(crate) fn remove_tree(path: &Path) {
    if std::fs::remove_dir_all(path).is_ok() {
        return;
    }
    fn open_up(p: &Path) {
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            return;
        };
        if !meta.is_dir() {
            return;
        }
        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(p) {
            for e in entries.flatten() {
                open_up(&e.path());
            }
        }
    }
    open_up(path);
    let _ = std::fs::remove_dir_all(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_directory_is_private_and_removed_with_what_it_holds() {
        let home = tempfile::tempdir_in("/var/tmp").unwrap();
        let t = PrivateTmp::create(Some(home.path())).unwrap();
        let root = t.root.clone();
        let base = root.parent().unwrap();
        assert_eq!(std::fs::metadata(base).unwrap().mode() & 0o777, 0o700);
        std::fs::create_dir_all(t.tmp().join("a/b")).unwrap();
        std::fs::write(t.tmp().join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", t.tmp().join("link")).unwrap();
        let closed = t.work().join("work");
        std::fs::create_dir(&closed).unwrap();
        std::fs::create_dir(closed.join("inner")).unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o000)).unwrap();
        drop(t);
        assert!(!root.exists());
        assert!(Path::new("/etc/passwd").exists(), "a link is not followed");
    }

    #[test]
    fn a_base_that_is_not_closed_is_not_used() {
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        let base = d.path().join("open");
        std::fs::create_dir(&base).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = PrivateTmp::create_in(&base, crate::sys::ids().0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
    }
}
