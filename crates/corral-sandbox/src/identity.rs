//! Who a trapped caller is: its executable, ancestors and the executable's SHA-256.
//!
//! The executable is read through `/proc/PID/exe` while the caller is stopped in its
//! syscall. The link's target is the kernel's canonical path (symlinks resolved); the file
//! is opened through the link, so the bytes hashed are the bytes the process runs, even if
//! the path has since been replaced.
//!
//! Integrity: the first SHA-256 seen for a path during a session is remembered; a later
//! process whose executable at that path hashes differently is refused ("binary changed
//! since first use"), whatever the policy says. Hashes are cached by
//! (device, inode, size, mtime, ctime), so an unchanged file is hashed once.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use corral_policy::identity::Unidentifiable;
use corral_policy::Identity;

pub use crate::trust::TrustRules;
use crate::trust::{sha256_of, MapsError, Verdicts};

/// Why a caller cannot be given an identity (its connect is refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the process runs an anonymous in-memory executable ({0}); corral only lets files on disk make connections")]
    Memfd(String),
    #[error("the process runs an executable that was deleted from disk ({0})")]
    Deleted(String),
    #[error(
        "the process is the dynamic loader run directly ({0}); run the program itself instead"
    )]
    Loader(String),
    #[error("{path} changed since it was first used in this session (sha256 {first} then {now}); restart corral run if the change is legitimate")]
    Changed {
        path: String,
        first: String,
        now: String,
    },
    #[error("the process was started with {0}, which can load foreign code into {1} and borrow its grants; its connections are refused (unset the variable, or run the program without it)")]
    Injection(String, String),
    #[error("the executable {0} {1}; pin it in the policy (`sha256:`), install it with `corral install`, or keep it where the sandbox cannot write")]
    UntrustedBinary(String, String),
    #[error("{exe} runs code from {library}, which {why}; its connections are refused (a library loaded through LD_PRELOAD, LD_LIBRARY_PATH, OPENSSL_CONF, NODE_OPTIONS or a plugin path borrows the program's grants)")]
    ForeignCode {
        exe: String,
        library: String,
        why: String,
    },
    #[error("the process is gone")]
    Gone,
    #[error("cannot read the process's executable: {0}")]
    Unreadable(String),
}

impl IdentityError {
    /// The executable the error is about, when it names one read from the caller.
    pub fn executable(&self) -> Option<&Path> {
        match self {
            IdentityError::Changed { path, .. } => Some(Path::new(path)),
            _ => None,
        }
    }

    /// A short code for logs.
    pub fn code(&self) -> &'static str {
        match self {
            IdentityError::Memfd(_) => "memfd_executable",
            IdentityError::Deleted(_) => "deleted_executable",
            IdentityError::Loader(_) => "loader_as_executable",
            IdentityError::Changed { .. } => "binary_changed",
            IdentityError::Injection(..) => "injection_vector",
            IdentityError::UntrustedBinary(..) => "untrusted_binary",
            IdentityError::ForeignCode { .. } => "foreign_code",
            IdentityError::Gone => "process_gone",
            IdentityError::Unreadable(_) => "executable_unreadable",
        }
    }
}

/// What `stat` tells of a file's contents: device, inode, size, modification and change
/// times.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    pub(crate) fn of(m: &std::fs::Metadata) -> FileKey {
        FileKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

#[derive(Default)]
struct Hashes {
    by_file: HashMap<FileKey, String>,
    first_by_path: HashMap<PathBuf, String>,
}

/// Resolves callers to identities; shared by the broker's workers.
pub struct IdentityResolver {
    /// The ancestor walk stops at this pid (the sandbox's root, outside the command tree).
    stop_at: Vec<u32>,
    hashes: Mutex<Hashes>,
    trust: TrustRules,
    verdicts: Verdicts,
}

/// How deep the ancestor walk goes.
const MAX_ANCESTORS: usize = 32;

impl IdentityResolver {
    /// `stop_at`: pids (in our namespace) at which the ancestor walk ends, exclusive —
    /// the supervisor and the sandbox's init.
    pub fn new(stop_at: Vec<u32>) -> IdentityResolver {
        IdentityResolver {
            stop_at,
            hashes: Mutex::new(Hashes::default()),
            trust: TrustRules::strict(),
            verdicts: Verdicts::default(),
        }
    }

    /// What code may carry a grant (see [`crate::trust`]).
    pub fn with_trust(mut self, trust: TrustRules) -> IdentityResolver {
        self.trust = trust;
        self
    }

    /// The identity of process (or thread) `pid`.
    pub fn resolve(&self, pid: u32) -> Result<Identity, IdentityError> {
        // One open of the executable: the path and the hash are of the same file even if
        // the process executes another program meanwhile.
        let mut file = match File::open(format!("/proc/{pid}/exe")) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(IdentityError::Gone),
            Err(e) => return Err(IdentityError::Unreadable(e.to_string())),
        };
        let exe = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(|e| IdentityError::Unreadable(e.to_string()))?;
        check_executable(&exe)?;
        let sha = self.hash_of(&mut file, &exe)?;
        self.recheck(pid, &exe)?;
        Ok(Identity {
            invoked_as: corral_policy::identity::invoked_as(pid, &exe),
            exe,
            ancestors: self.ancestors(pid),
            sha256: Some(sha),
            pid: Some(pid),
        })
    }

    /// The checks a process must pass on every call, even when its identity is already
    /// known (the broker keeps identities per process and executable, see
    /// `broker::known`): whatever the process can change without executing another file —
    /// the environment's injection routes (executing the same file again changes it) and
    /// the code it maps (`dlopen`).
    pub fn recheck(&self, pid: u32, exe: &Path) -> Result<(), IdentityError> {
        if let Some(var) = injection_vector(pid) {
            return Err(IdentityError::Injection(var, exe.display().to_string()));
        }
        self.check_code(pid, exe)
    }

    /// The executable path of `pid`, checked as an identity (for refusal logs even when the
    /// hash cannot be taken).
    pub fn executable(&self, pid: u32) -> Result<PathBuf, IdentityError> {
        executable_path(pid)
    }

    /// Every file mapped as code must be out of the sandbox's reach or vouched for.
    fn check_code(&self, pid: u32, exe: &Path) -> Result<(), IdentityError> {
        match self.trust.check_mappings(pid, exe, &self.verdicts) {
            Ok(()) => Ok(()),
            Err(MapsError::Gone) => Err(IdentityError::Gone),
            Err(MapsError::Unreadable(e)) => Err(IdentityError::Unreadable(e)),
            Err(MapsError::Untrusted(u)) if Path::new(&u.path) == exe => {
                Err(IdentityError::UntrustedBinary(u.path, u.why))
            }
            Err(MapsError::Untrusted(u)) => Err(IdentityError::ForeignCode {
                exe: exe.display().to_string(),
                library: u.path,
                why: u.why,
            }),
        }
    }

    fn hash_of(&self, file: &mut File, exe: &Path) -> Result<String, IdentityError> {
        let meta = file
            .metadata()
            .map_err(|e| IdentityError::Unreadable(e.to_string()))?;
        let key = FileKey::of(&meta);
        let cached = self.lock().by_file.get(&key).cloned();
        let sha = match cached {
            Some(s) => s,
            None => {
                let s = sha256_of(file).map_err(|e| IdentityError::Unreadable(e.to_string()))?;
                self.lock().by_file.insert(key, s.clone());
                s
            }
        };
        let mut h = self.lock();
        let first = h
            .first_by_path
            .entry(exe.to_path_buf())
            .or_insert_with(|| sha.clone());
        if *first != sha {
            return Err(IdentityError::Changed {
                path: exe.display().to_string(),
                first: first.clone(),
                now: sha,
            });
        }
        Ok(sha)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Hashes> {
        self.hashes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parent's executable first, then the grandparent's…, stopping before the sandbox root.
    /// Best effort: a parent that exits meanwhile ends the walk.
    pub fn ancestors(&self, pid: u32) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut cur = pid;
        while out.len() < MAX_ANCESTORS {
            let Some(ppid) = parent_of(cur) else { break };
            if ppid <= 1 || self.stop_at.contains(&ppid) {
                break;
            }
            match std::fs::read_link(format!("/proc/{ppid}/exe")) {
                Ok(p) => out.push(p),
                Err(_) => break,
            }
            cur = ppid;
        }
        out
    }
}

fn executable_path(pid: u32) -> Result<PathBuf, IdentityError> {
    let link = match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(IdentityError::Gone),
        Err(e) => return Err(IdentityError::Unreadable(e.to_string())),
    };
    check_executable(&link)?;
    Ok(link)
}

/// Refuses executables that cannot carry an identity (the rule is corral-policy's, shared
/// with the standalone proxy).
pub fn check_executable(link: &Path) -> Result<(), IdentityError> {
    let text = || link.to_string_lossy().into_owned();
    match corral_policy::identity::classify_executable(link) {
        None => Ok(()),
        Some(Unidentifiable::Memfd) => Err(IdentityError::Memfd(text())),
        Some(Unidentifiable::Deleted) => Err(IdentityError::Deleted(text())),
        Some(Unidentifiable::Loader) => Err(IdentityError::Loader(text())),
    }
}

/// The first known code-injection route in the environment `pid` was started with:
/// `LD_PRELOAD`/`LD_AUDIT` (the dynamic loader), `NODE_OPTIONS` with `--require`,
/// `--import` or a loader (Node), `BUN_OPTIONS` with `--preload` (Bun, i.e. Claude Code),
/// and `PYTHONSTARTUP`. An executable running with one of them is not only itself, so it
/// cannot be given that executable's grants.
///
/// This reads `/proc/PID/environ`, the environment block as the process received it. A
/// process that already runs foreign code can overwrite that block, so this is a guard
/// against the easy route (`LD_PRELOAD=evil.so curl …` from a shell in the sandbox), not
/// a proof of integrity.
fn injection_vector(pid: u32) -> Option<String> {
    let environ = crate::procfs::read(&format!("/proc/{pid}/environ")).ok()?;
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| {
            let (name, value) = kv.split_once('=')?;
            injects(name, value).then(|| format!("{name}={value}"))
        })
}

fn injects(name: &str, value: &str) -> bool {
    let has = |flags: &[&str]| {
        value.split_whitespace().any(|word| {
            flags
                .iter()
                .any(|f| word == *f || word.starts_with(&format!("{f}=")))
        })
    };
    match name {
        "LD_PRELOAD" | "LD_AUDIT" | "PYTHONSTARTUP" => !value.trim().is_empty(),
        "NODE_OPTIONS" => has(&[
            "--require",
            "-r",
            "--import",
            "--loader",
            "--experimental-loader",
        ]),
        "BUN_OPTIONS" => has(&["--preload", "-r", "--require"]),
        _ => false,
    }
}

fn parent_of(pid: u32) -> Option<u32> {
    crate::procfs::stat(pid).ok().map(|s| s.ppid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_injection_routes_are_recognised_and_ordinary_settings_are_not() {
        assert!(injects("LD_PRELOAD", "/tmp/evil.so"));
        assert!(injects("LD_AUDIT", "x.so"));
        assert!(!injects("LD_PRELOAD", ""));
        assert!(injects(
            "NODE_OPTIONS",
            "--max-old-space-size=4096 --require /tmp/x.js"
        ));
        assert!(injects("NODE_OPTIONS", "--import=/tmp/x.mjs"));
        assert!(!injects("NODE_OPTIONS", "--max-old-space-size=4096"));
        assert!(injects("BUN_OPTIONS", "--preload ./evil.ts"));
        assert!(!injects("BUN_OPTIONS", "--smol"));
        assert!(injects("PYTHONSTARTUP", "/tmp/x.py"));
        assert!(!injects("LD_LIBRARY_PATH", "/opt/lib"));
    }

    #[test]
    fn refuses_executables_without_an_identity() {
        assert!(matches!(
            check_executable(Path::new("/memfd:payload (deleted)")),
            Err(IdentityError::Memfd(_))
        ));
        assert!(matches!(
            check_executable(Path::new("/tmp/tool (deleted)")),
            Err(IdentityError::Deleted(_))
        ));
        assert!(matches!(
            check_executable(Path::new("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")),
            Err(IdentityError::Loader(_))
        ));
        assert!(check_executable(Path::new("/usr/bin/curl")).is_ok());
        assert!(check_executable(Path::new("/usr/bin/ld")).is_ok());
    }

    #[test]
    fn resolves_this_process_with_a_stable_hash() {
        let r = IdentityResolver::new(vec![]);
        let me = std::process::id();
        let a = r.resolve(me).unwrap();
        assert_eq!(a.exe, std::env::current_exe().unwrap());
        assert_eq!(a.sha256.as_ref().unwrap().len(), 64);
        let b = r.resolve(me).unwrap();
        assert_eq!(a.sha256, b.sha256);
        assert!(!a.ancestors.is_empty(), "the test runner has a parent");
    }

    #[test]
    fn a_changed_file_at_a_known_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("tool");
        std::fs::copy("/usr/bin/sleep", &tool).unwrap();
        // Pinned (as a policy would), so that only the change is in question.
        let r = IdentityResolver::new(vec![]).with_trust(TrustRules {
            pinned: Box::new(|_, _| true),
            ..TrustRules::strict()
        });
        let run = |r: &IdentityResolver| {
            let mut child = std::process::Command::new(&tool).arg("30").spawn().unwrap();
            // Wait until the child has exec'd the tool.
            let exe = loop {
                if let Ok(p) = std::fs::read_link(format!("/proc/{}/exe", child.id())) {
                    if p == tool {
                        break p;
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            };
            let got = r.resolve(child.id());
            child.kill().unwrap();
            child.wait().unwrap();
            (exe, got)
        };
        let (exe, first) = run(&r);
        assert_eq!(first.unwrap().exe, exe);
        // Same behaviour, different bytes: an appended byte leaves an ELF runnable.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&tool)
            .unwrap();
        std::io::Write::write_all(&mut f, b"x").unwrap();
        drop(f);
        let (_, second) = run(&r);
        assert!(
            matches!(second, Err(IdentityError::Changed { .. })),
            "{second:?}"
        );
    }
}
