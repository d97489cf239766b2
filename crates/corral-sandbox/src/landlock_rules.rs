//! The Landlock ruleset built from the policy's `filesystem_policy`, prepared by the
//! supervisor (paths opened, warnings collected) and enforced by the child before `exec`.
//!
//! - File system: when the policy lists `read_only` or `read_write` paths, everything else
//!   is inaccessible. `include_workdir` adds the working directory read-write. corral adds
//!   the device files every program expects ([`IMPLICIT_READ_WRITE`],
//!   [`IMPLICIT_READ_ONLY`]). A policy that lists no paths leaves the file system alone,
//!   except `/proc`: nothing under it is opened for writing, so a process cannot patch the
//!   memory of another (`/proc/PID/mem`) and borrow its grants ([`guard_proc`]).
//! - Network (Landlock ABI ≥ 4): TCP `connect` is handled with no port allowed, so even a
//!   path around the seccomp broker could not open a TCP connection; the supervisor (outside
//!   the Landlock domain) makes the brokered connects.
//! - Scopes (ABI ≥ 6): signals and abstract unix sockets do not cross the sandbox's edge.
//! - `hard_requirement` turns every unsupported right or missing path into an error;
//!   `best_effort` warns once per skipped path and runs with what the kernel offers.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, Scope, ABI,
};

/// Device files opened read-write by ordinary programs.
pub const IMPLICIT_READ_WRITE: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/tty",
    "/dev/pts",
    "/dev/ptmx",
];
/// Read-only additions: randomness and the process's own view of /proc.
pub const IMPLICIT_READ_ONLY: &[&str] = &["/dev/urandom", "/dev/random", "/proc"];

/// What to enforce.
#[derive(Clone, Debug, Default)]
pub struct FsSpec {
    pub read_only: Vec<PathBuf>,
    pub read_write: Vec<PathBuf>,
    /// The working directory, added read-write (`include_workdir`).
    pub workdir: Option<PathBuf>,
    /// `landlock.compatibility: hard_requirement`.
    pub hard_requirement: bool,
    /// Refuse direct TCP connects (when the kernel supports Landlock network rules).
    pub deny_tcp_connect: bool,
}

/// A ruleset ready for the child, and what the user should be told.
pub struct Prepared {
    pub ruleset: Option<OwnedFd>,
    pub warnings: Vec<String>,
    /// One line for the start banner, e.g. "landlock ABI 7: filesystem (12 paths), tcp connect".
    pub summary: String,
}

const FS_ABI: ABI = ABI::V5;

pub fn prepare(spec: &FsSpec) -> anyhow::Result<Prepared> {
    let kernel_abi = crate::sys::landlock_abi();
    let mut warnings = Vec::new();
    let restrict_fs = !spec.read_only.is_empty() || !spec.read_write.is_empty();
    // With paths listed, /proc is already read-only (IMPLICIT_READ_ONLY).
    let guard_proc = !restrict_fs;
    let restrict_net = spec.deny_tcp_connect && kernel_abi >= 4;
    if kernel_abi == 0 {
        if spec.hard_requirement {
            bail!("this kernel does not offer Landlock, and the policy says `landlock: {{compatibility: hard_requirement}}`; enable Landlock (boot with lsm=...,landlock) or use best_effort");
        }
        if restrict_fs {
            warnings.push("Landlock is not available on this kernel: filesystem_policy is NOT enforced (best_effort)".into());
        }
        return Ok(Prepared {
            ruleset: None,
            warnings,
            summary: "landlock unavailable".into(),
        });
    }
    let compat = if spec.hard_requirement {
        CompatLevel::HardRequirement
    } else {
        CompatLevel::BestEffort
    };
    let mut ruleset = Ruleset::default().set_compatibility(compat);
    if restrict_fs {
        ruleset = ruleset
            .handle_access(AccessFs::from_all(FS_ABI))
            .context("preparing the Landlock filesystem rules")?;
    } else if guard_proc {
        ruleset = ruleset
            .handle_access(AccessFs::WriteFile)
            .context("preparing the Landlock rule for /proc")?;
    }
    if restrict_net {
        ruleset = ruleset
            .handle_access(AccessNet::ConnectTcp)
            .context("preparing the Landlock network rule")?;
    }
    // ABI 6: no signal to a process outside the sandbox (the user's other processes, and
    // the supervisor in seccomp-only mode), no connect to an abstract unix socket made
    // outside it (the unix guard's second fence).
    let scoped = kernel_abi >= 6;
    if scoped {
        ruleset = ruleset
            .scope(Scope::from_all(ABI::V6))
            .context("preparing the Landlock scopes")?;
    }
    let mut created = ruleset.create().context("creating the Landlock ruleset")?;
    let mut count = 0usize;
    if restrict_fs {
        let mut rules: Vec<(PathBuf, bool, bool)> = Vec::new();
        for p in &spec.read_only {
            rules.push((p.clone(), false, true));
        }
        for p in &spec.read_write {
            rules.push((p.clone(), true, true));
        }
        if let Some(w) = &spec.workdir {
            rules.push((w.clone(), true, true));
        }
        for p in IMPLICIT_READ_WRITE {
            rules.push((PathBuf::from(p), true, false));
        }
        for p in IMPLICIT_READ_ONLY {
            rules.push((PathBuf::from(p), false, false));
        }
        for (path, write, from_policy) in rules {
            let fd = match PathFd::new(&path) {
                Ok(fd) => fd,
                Err(e) => {
                    if !from_policy {
                        continue;
                    }
                    if spec.hard_requirement {
                        bail!("filesystem_policy path {} cannot be opened ({e}); with `hard_requirement` every listed path must exist", path.display());
                    }
                    warnings.push(format!(
                        "filesystem_policy path {} skipped: {}",
                        path.display(),
                        short_error(&e.to_string())
                    ));
                    continue;
                }
            };
            let access = if write {
                AccessFs::from_all(FS_ABI)
            } else {
                AccessFs::from_read(FS_ABI)
            };
            let access = if is_dir(&path) {
                access
            } else {
                access & file_rights()
            };
            created = created
                .add_rule(PathBeneath::new(fd, access))
                .with_context(|| format!("adding the Landlock rule for {}", path.display()))?;
            count += 1;
        }
    }
    if guard_proc {
        for path in guard_proc_rules() {
            if let Ok(fd) = PathFd::new(&path) {
                created = created
                    .add_rule(PathBeneath::new(fd, AccessFs::WriteFile))
                    .with_context(|| format!("adding the Landlock rule for {}", path.display()))?;
            }
        }
    }
    let mut parts = Vec::new();
    if restrict_fs {
        parts.push(format!("filesystem ({count} paths)"));
    }
    if guard_proc {
        parts.push("no writes under /proc".to_string());
    }
    if restrict_net {
        parts.push("no direct TCP connect".to_string());
    }
    if scoped {
        parts.push("signals and abstract sockets kept inside".to_string());
    }
    if spec.hard_requirement || kernel_abi >= 5 {
    } else if restrict_fs {
        warnings.push(format!(
            "Landlock ABI {kernel_abi} is older than the rules corral asks for (ABI 5); some rights are not enforced (best_effort)"
        ));
    }
    let fd: Option<OwnedFd> = created.into();
    Ok(Prepared {
        ruleset: fd,
        warnings,
        summary: format!("landlock ABI {kernel_abi}: {}", parts.join(", ")),
    })
}

/// Where files may still be opened for writing when the policy restricts no paths: beneath
/// every top-level entry of `/` but `/proc`. Writing `/proc/PID/mem` is how one process
/// patches another it may trace (same user, no Yama): it would let a script take over an
/// allowed client it started, and connect as that client. `ptrace`,
/// `process_vm_writev` and `pidfd_getfd` are refused by the seccomp filter for the same
/// reason. Files opened through `/proc/self/fd/N` are checked at their real path, and
/// pipes and sockets are not subject to Landlock, so `> /dev/stdout` still works.
fn guard_proc_rules() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/") else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name() != "proc")
        .map(|e| e.path())
        .collect();
    paths.sort();
    paths
}

fn is_dir(p: &Path) -> bool {
    std::fs::metadata(p).map(|m| m.is_dir()).unwrap_or(false)
}

/// Rights that apply to a file (not a directory) in a path-beneath rule.
fn file_rights() -> landlock::BitFlags<AccessFs> {
    AccessFs::Execute
        | AccessFs::WriteFile
        | AccessFs::ReadFile
        | AccessFs::Truncate
        | AccessFs::IoctlDev
}

fn short_error(e: &str) -> String {
    e.lines().next().unwrap_or(e).to_string()
}
