//! Unix-domain sockets: the sandbox reaches the ones its own processes listen on, and none
//! of the host's. A host socket is a way out that no proxy sees: a container engine's
//! socket starts containers with the host's network, a name-service cache or the system
//! bus resolves names (DNS carries data), an agent socket signs for you.
//!
//! Who listens is asked of the kernel, never guessed from paths:
//! - namespace mode: unix sockets belong to the network namespace they were created in, so
//!   the child opens a `sock_diag` socket inside the sandbox's namespace; a listener found
//!   through it is the sandbox's;
//! - seccomp-only mode: the host's `sock_diag` names the listening socket, and one of the
//!   processes holding it must descend from the supervisor.
//!
//! The path is resolved as the caller would resolve it, but by the supervisor and once:
//! `openat2` below the caller's root (`/proc/PID/root`, with `RESOLVE_IN_ROOT`) or working
//! directory, never through a magic link, opened `O_PATH`. The supervisor then connects (or
//! sends on) the caller's socket itself, addressed to `/proc/self/fd/N` of the file it
//! checked, so swapping a symlink after the check changes nothing. Abstract names are per
//! network namespace: allowed in namespace mode, refused in seccomp-only mode (they would
//! be the host's); the supervisor then addresses the name it copied, which the kernel
//! looks up in the network namespace of the caller's socket.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::sync::Arc;

use crate::sys::net::{sock_diag_socket, unix_socket_bound_at, DiagSocket, UnixAddress};

/// How the guard tells the sandbox's sockets from the host's.
pub enum UnixScope {
    /// A `sock_diag` socket created inside the sandbox's network namespace.
    SandboxNamespace(Arc<DiagSocket>),
    /// The host's `sock_diag`; holders must descend from `supervisor`.
    Descendants { diag: DiagSocket, supervisor: u32 },
    /// Nothing to ask: every named socket is refused.
    Unknown,
}

impl UnixScope {
    /// Seccomp-only mode: the host's diagnostics and the supervisor's descendants.
    pub fn descendants_of(supervisor: u32) -> UnixScope {
        match sock_diag_socket() {
            Ok(diag) => UnixScope::Descendants {
                diag: DiagSocket::new(diag),
                supervisor,
            },
            Err(e) => {
                tracing::warn!("no sock_diag socket ({e}): unix sockets will be refused");
                UnixScope::Unknown
            }
        }
    }
}

/// What to do with a unix-domain destination.
pub enum UnixCheck {
    /// Address the call to what the caller wrote, copied (no name, or an abstract name in
    /// the sandbox's own namespace).
    AsWritten,
    /// A socket of the sandbox, or a host socket the policy's `unix_sockets` lists: perform
    /// the call on this `O_PATH` descriptor of it.
    Reach(File),
    /// Refused, with the path (or name) for the log, a sentence, and the errno to return.
    Refuse {
        target: String,
        reason: String,
        errno: i32,
    },
}

/// Whether the policy in force lists a host socket (its real path) under `unix_sockets`.
pub type HostAllowList = Box<dyn Fn(&str) -> bool + Send + Sync>;

pub struct UnixGuard {
    scope: UnixScope,
    listed: HostAllowList,
}

impl UnixGuard {
    pub fn new(scope: UnixScope, listed: HostAllowList) -> UnixGuard {
        UnixGuard { scope, listed }
    }

    /// Decides on `addr`, named by process `pid` (a relative path is relative to its
    /// working directory, an absolute one to its root).
    pub fn check(&self, pid: u32, addr: &UnixAddress) -> UnixCheck {
        let path = match addr {
            UnixAddress::Unnamed => return UnixCheck::AsWritten,
            UnixAddress::Abstract(name) => {
                return match self.scope {
                    UnixScope::SandboxNamespace(_) => UnixCheck::AsWritten,
                    _ => UnixCheck::Refuse {
                        target: format!("unix:@{}", String::from_utf8_lossy(name)),
                        reason: "abstract unix sockets are the host's in seccomp-only mode: refused (namespace mode gives the sandbox its own)".into(),
                        errno: libc::EACCES,
                    },
                };
            }
            UnixAddress::Path(p) => p,
        };
        let shown = format!("unix:{}", String::from_utf8_lossy(path));
        let refuse = |reason: String, errno: i32| UnixCheck::Refuse {
            target: shown.clone(),
            reason,
            errno,
        };
        let file = match open_as(pid, path) {
            Ok(f) => f,
            // What the caller's own connect would have said.
            Err(e) => {
                return refuse(
                    format!("{shown}: {e}"),
                    e.raw_os_error().unwrap_or(libc::ENOENT),
                )
            }
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => return refuse(format!("{shown}: {e}"), libc::EACCES),
        };
        if !meta.file_type().is_socket() {
            return refuse(format!("{shown} is not a socket"), libc::ECONNREFUSED);
        }
        match self.owned_by_sandbox(meta.dev(), meta.ino()) {
            Ok(true) => UnixCheck::Reach(file),
            Ok(false) => {
                // The file actually checked, symlinks resolved: what a pattern must name.
                let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if !real.is_empty() && (self.listed)(&real) {
                    return UnixCheck::Reach(file);
                }
                refuse(
                    format!("{shown} is a socket of the host ({real}), not of a process in the sandbox: refused, since host services reached through unix sockets bypass the proxy; if this one must be reachable, list `{real}` under `unix_sockets:` in the policy"),
                    libc::EACCES,
                )
            }
            Err(e) => refuse(
                format!("{shown}: cannot tell who listens on it ({e}): refused"),
                libc::EACCES,
            ),
        }
    }

    fn owned_by_sandbox(&self, dev: u64, ino: u64) -> io::Result<bool> {
        match &self.scope {
            UnixScope::SandboxNamespace(diag) => Ok(diag
                .with(|fd| unix_socket_bound_at(fd, dev, ino))?
                .is_some()),
            UnixScope::Descendants { diag, supervisor } => {
                match diag.with(|fd| unix_socket_bound_at(fd, dev, ino))? {
                    Some(sock) => Ok(descendants(*supervisor)
                        .into_iter()
                        .any(|pid| holds(pid, sock))),
                    None => Ok(false),
                }
            }
            UnixScope::Unknown => Ok(false),
        }
    }
}

/// Opens `path` as process `pid` would resolve it, without opening the socket itself: an
/// absolute path below its root (its mount namespace's view, absolute symlinks kept below
/// it), a relative one below its working directory (an absolute symlink met there resolves
/// from the supervisor's root: the same files, since the sandbox cannot change its root).
/// Magic links are never followed. Whatever is resolved, the file checked is the file
/// connected to.
fn open_as(pid: u32, path: &[u8]) -> io::Result<File> {
    let (base, rest, in_root) = match path.strip_prefix(b"/") {
        Some(rest) => (format!("/proc/{pid}/root"), rest, true),
        None => (format!("/proc/{pid}/cwd"), path, false),
    };
    let rest = if rest.is_empty() { &b"."[..] } else { rest };
    let rest = CString::new(rest).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(base)?;
    let fd = crate::sys::open_path_beneath(std::os::fd::AsFd::as_fd(&dir), &rest, in_root)?;
    Ok(File::from(fd))
}

/// Every process below `root` (children of every thread, recursively). The sandbox is a
/// handful of processes, so this is much cheaper than scanning all of `/proc`.
fn descendants(root: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            for child in children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
            {
                if !found.contains(&child) && found.len() < 65_536 {
                    found.push(child);
                    queue.push(child);
                }
            }
        }
    }
    found
}

/// Whether process `pid` holds socket inode `sock` among its descriptors.
fn holds(pid: u32, sock: u32) -> bool {
    let want = format!("socket:[{sock}]");
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn descendants_include_grandchildren_and_not_ourselves() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & wait"])
            .spawn()
            .unwrap();
        let me = std::process::id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut below = descendants(me);
        while below.len() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
            below = descendants(me);
        }
        assert!(below.contains(&child.id()), "{below:?}");
        assert!(below.len() >= 2, "the grandchild too: {below:?}");
        assert!(!below.contains(&me));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn own_listeners_are_the_sandboxs_and_a_stranger_s_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours.sock");
        let _l = std::os::unix::net::UnixListener::bind(&ours).unwrap();
        let me = std::process::id();
        // "The sandbox" = descendants of our parent: we are one, so our listener counts.
        let parent = std::os::unix::process::parent_id();
        let guard = UnixGuard::new(UnixScope::descendants_of(parent), Box::new(|_| false));
        let addr = UnixAddress::Path(ours.as_os_str().as_bytes().to_vec());
        assert!(matches!(guard.check(me, &addr), UnixCheck::Reach(_)));
        // Descendants of a process that is not our ancestor: our listener is foreign.
        let mut other = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let guard = UnixGuard::new(UnixScope::descendants_of(other.id()), Box::new(|_| false));
        assert!(matches!(
            guard.check(me, &addr),
            UnixCheck::Refuse {
                errno: libc::EACCES,
                ..
            }
        ));
        // … unless the policy lists its real path.
        let real = std::fs::canonicalize(&ours).unwrap();
        let listed = UnixGuard::new(
            UnixScope::descendants_of(other.id()),
            Box::new(move |p| p == real.to_str().unwrap()),
        );
        assert!(matches!(listed.check(me, &addr), UnixCheck::Reach(_)));
        other.kill().unwrap();
        other.wait().unwrap();
        // Missing paths and non-sockets answer like the kernel would.
        let missing = UnixAddress::Path(b"/nonexistent/x.sock".to_vec());
        assert!(matches!(
            guard.check(me, &missing),
            UnixCheck::Refuse {
                errno: libc::ENOENT,
                ..
            }
        ));
        let file = UnixAddress::Path(b"/etc/hostname".to_vec());
        assert!(matches!(
            guard.check(me, &file),
            UnixCheck::Refuse {
                errno: libc::ECONNREFUSED,
                ..
            }
        ));
        // Abstract names are the host's in this scope.
        assert!(matches!(
            guard.check(me, &UnixAddress::Abstract(b"x".to_vec())),
            UnixCheck::Refuse { .. }
        ));
        assert!(matches!(
            guard.check(me, &UnixAddress::Unnamed),
            UnixCheck::AsWritten
        ));
    }
}
