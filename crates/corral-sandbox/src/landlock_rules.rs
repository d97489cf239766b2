//! The Landlock ruleset that carries the filesystem view ([`crate::fs_view`]), prepared
//! by the supervisor (paths opened, warnings collected) and enforced by the child before
//! `exec`, in both isolation modes.
//!
//! - File system: every right is handled; the view's rules grant reading (and executing)
//!   everything — or only the `read_only` paths — and writing the view's writable paths.
//!   corral adds the device files every program expects ([`IMPLICIT_READ_WRITE`],
//!   [`IMPLICIT_READ_ONLY`]). Nothing under `/proc` is writable, so a process cannot patch
//!   the memory of another (`/proc/PID/mem`) and borrow its grants.
//! - Network (Landlock ABI ≥ 4): TCP `connect` is handled with no port allowed, so even a
//!   path around the seccomp broker could not open a TCP connection; the supervisor (outside
//!   the Landlock domain) makes the brokered connects.
//! - Scopes (ABI ≥ 6): signals and abstract unix sockets do not cross the sandbox's edge.
//! - `hard_requirement` turns every unsupported right or missing path into an error;
//!   `best_effort` warns once per skipped path and runs with what the kernel offers.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::fs_view::Access as Grant;
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
    /// The view's rules (reading everything is a rule on `/`).
    pub rules: Vec<crate::fs_view::Rule>,
    /// Everything is readable (no `read_only` list): no implicit read-only paths needed.
    pub read_everything: bool,
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
    /// The rights of a writable path, as this kernel's ruleset handles them (for a rule
    /// the child adds itself: the private `/tmp`).
    pub write_access: u64,
}

const FS_ABI: ABI = ABI::V5;

pub fn prepare(spec: &FsSpec) -> anyhow::Result<Prepared> {
    let kernel_abi = crate::sys::landlock_abi();
    let mut warnings = Vec::new();
    let restrict_net = spec.deny_tcp_connect && kernel_abi >= 4;
    if kernel_abi == 0 {
        if spec.hard_requirement {
            bail!("this kernel does not offer Landlock, and the policy says `landlock: {{compatibility: hard_requirement}}`; enable Landlock (boot with lsm=...,landlock) or use best_effort");
        }
        warnings.push("Landlock is not available on this kernel: the filesystem view is NOT enforced, the sandbox can write whatever you can (best_effort; see `corral doctor`)".into());
        return Ok(Prepared {
            ruleset: None,
            warnings,
            summary: "landlock unavailable: files NOT confined".into(),
            write_access: 0,
        });
    }
    let compat = if spec.hard_requirement {
        CompatLevel::HardRequirement
    } else {
        CompatLevel::BestEffort
    };
    let mut ruleset = Ruleset::default()
        .set_compatibility(compat)
        .handle_access(AccessFs::from_all(FS_ABI))
        .context("preparing the Landlock filesystem rules")?;
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
    // (path, access, listed by the view — a missing one is worth a warning)
    let mut rules: Vec<(PathBuf, Grant, bool)> = Vec::new();
    for r in &spec.rules {
        rules.push((r.path.clone(), r.access, r.path != Path::new("/")));
    }
    for p in IMPLICIT_READ_WRITE {
        rules.push((PathBuf::from(p), Grant::Write, false));
    }
    if !spec.read_everything {
        for p in IMPLICIT_READ_ONLY {
            rules.push((PathBuf::from(p), Grant::Read, false));
        }
    }
    for (path, access, listed) in rules {
        let fd = match PathFd::new(&path) {
            Ok(fd) => fd,
            Err(e) => {
                if !listed {
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
        let access = match access {
            Grant::Write => AccessFs::from_all(FS_ABI),
            Grant::Read => AccessFs::from_read(FS_ABI),
            Grant::List => AccessFs::ReadDir.into(),
        };
        let access = if is_dir(&path) {
            access
        } else {
            access & file_rights()
        };
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .with_context(|| format!("adding the Landlock rule for {}", path.display()))?;
    }
    let mut parts = vec!["files".to_string()];
    if restrict_net {
        parts.push("no direct TCP connect".to_string());
    }
    if scoped {
        parts.push("signals and abstract sockets kept inside".to_string());
    }
    if !spec.hard_requirement && kernel_abi < 5 {
        warnings.push(format!(
            "Landlock ABI {kernel_abi} is older than the rules corral asks for (ABI 5); some rights are not enforced (best_effort)"
        ));
    }
    let fd: Option<OwnedFd> = created.into();
    Ok(Prepared {
        ruleset: fd,
        warnings,
        summary: format!("landlock ABI {kernel_abi}: {}", parts.join(", ")),
        write_access: AccessFs::from_all(ABI::from(kernel_abi.min(5))).bits(),
    })
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
