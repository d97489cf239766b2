//! Starting the sandboxed command: choosing the isolation mode, preparing the child's plan,
//! and reading what the child reports until it has executed the command.

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::sys;
use crate::sys::spawn::{ChildPlan, Spawned};

/// How the sandbox is isolated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// User + network + mount + PID namespaces (only loopback), seccomp broker, Landlock.
    Namespaces,
    /// seccomp broker and Landlock in the host's namespaces.
    SeccompOnly,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Namespaces => "namespaces",
            Mode::SeccompOnly => "seccomp-only",
        })
    }
}

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeRequest {
    /// Namespaces when the host allows them, else seccomp-only (said at start).
    Auto,
    /// Namespaces or refuse to run (`--require-netns`).
    RequireNamespaces,
    /// seccomp-only even where namespaces work (`--mode seccomp-only`, tests).
    SeccompOnly,
}

/// The documented proxy address inside the sandbox.
pub const PROXY_PORT: u16 = 3128;

/// Everything needed to start the command.
pub struct Launch {
    pub command: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub landlock: Option<OwnedFd>,
    /// Directories the sandbox may read but not change (namespace mode): the policy's and
    /// the decision log's.
    pub read_only: Vec<PathBuf>,
    /// What else namespace mode mounts: git's guard, hidden secrets, the private `/tmp`.
    pub mounts: NsMounts,
}

/// Mounts of namespace mode beyond the read-only directories (none in seccomp-only mode).
#[derive(Clone, Debug, Default)]
pub struct NsMounts {
    /// Made mount points, so they cannot be renamed (a repository's `.git`).
    pub pin: Vec<PathBuf>,
    /// Bound read-only after the pins (git's config and hooks).
    pub read_only: Vec<PathBuf>,
    /// Files covered by `blank` (credential secrets; Landlock refuses them too).
    pub hide: Vec<PathBuf>,
    /// An empty file no Landlock rule covers.
    pub blank: Option<PathBuf>,
    /// The private `/tmp`.
    pub tmp: Option<TmpMount>,
    /// The view reads everything: the sandbox's own `/sys` too.
    pub read_sys: bool,
}

/// The private `/tmp` of namespace mode ([`crate::private_tmp`]).
#[derive(Clone, Debug)]
pub struct TmpMount {
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Bound on `/tmp` when no overlay can be mounted.
    pub bare: PathBuf,
    /// Paths under `/tmp` carried over it.
    pub carried: Vec<PathBuf>,
    /// Landlock rights on the new `/tmp`.
    pub access: u64,
    /// A private `/dev/shm` too.
    pub shm: bool,
}

/// A started sandbox whose command may not have executed yet.
pub struct Started {
    pub mode: Mode,
    /// The sandbox's init, our child: it forks the command and holds the tree below it
    /// (PID 1 of the sandbox's PID namespace, or a child subreaper in seccomp-only mode).
    pub pid: u32,
    pub notifier: OwnedFd,
    /// The proxy listener created inside the sandbox (namespace mode).
    pub inner_listener: Option<OwnedFd>,
    /// A `sock_diag` socket created inside the sandbox's network namespace (namespace mode).
    pub inner_diag: Option<OwnedFd>,
    /// Whether the filter has `WAIT_KILLABLE_RECV`.
    pub killable: bool,
    pub warnings: Vec<String>,
    report: OwnedFd,
}

/// Why the sandbox could not start.
#[derive(Debug)]
pub struct StartError {
    pub message: String,
    /// The failure was in setting up namespaces (another mode may work).
    pub namespace_setup: bool,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Whether seccomp-only mode can hold the sandbox on this host. Without a PID namespace
/// the sandbox sees your other processes; without Landlock's guard on `/proc` (and
/// without Yama limiting ptrace-style access to descendants) it could write into their
/// memory through `/proc/PID/mem` and run outside the sandbox.
pub fn seccomp_only_is_safe(landlock: bool, yama_ptrace_scope: u8) -> Result<(), String> {
    if landlock || yama_ptrace_scope >= 1 {
        Ok(())
    } else {
        Err("seccomp-only mode is not safe on this host: without Landlock (and with Yama's ptrace_scope at 0) a sandboxed process could write into the memory of your other processes through /proc/PID/mem and run outside the sandbox; enable Landlock (Linux ≥ 5.13, `lsm=…,landlock`), set kernel.yama.ptrace_scope=1, or allow unprivileged user namespaces (`corral doctor`)".into())
    }
}

/// Finds `cmd` on `path` like a shell does (a name with a slash is used as is).
pub fn find_executable(cmd: &OsStr, path: Option<&OsStr>) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if cmd.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(cmd));
    }
    let path = path.unwrap_or_else(|| OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    std::env::split_paths(path)
        .map(|d| d.join(cmd))
        .find(|p| is_exec(p))
}

fn cstring(s: &OsStr) -> Result<CString, StartError> {
    CString::new(s.as_bytes()).map_err(|_| StartError {
        message: format!("{} contains a NUL byte", s.to_string_lossy()),
        namespace_setup: false,
    })
}

fn plan_mounts(plan: &mut ChildPlan, launch: &Launch) -> Result<(), StartError> {
    let locked = |path: &Path| {
        sys::locked_mount_flags(path).map_err(|e| StartError {
            message: format!("cannot protect {} in the sandbox: {e}", path.display()),
            namespace_setup: false,
        })
    };
    for dir in &launch.read_only {
        plan.read_only(cstring(dir.as_os_str())?, locked(dir)?);
    }
    let m = &launch.mounts;
    if m.read_sys {
        plan.read_sys();
    }
    for dir in &m.pin {
        plan.pin(cstring(dir.as_os_str())?);
    }
    for path in &m.read_only {
        plan.read_only(cstring(path.as_os_str())?, locked(path)?);
    }
    if let (Some(blank), false) = (&m.blank, m.hide.is_empty()) {
        let flags = locked(blank)?;
        for file in &m.hide {
            plan.hide(
                cstring(file.as_os_str())?,
                cstring(blank.as_os_str())?,
                flags,
            );
        }
    }
    if let Some(tmp) = &m.tmp {
        // Overlay options are separated by commas and colons; a path holding one (or a
        // backslash) would need escaping: such a host gets the empty private /tmp.
        let plain = |p: &Path| !p.as_os_str().as_bytes().iter().any(|b| b",:\\".contains(b));
        let overlay = (plain(&tmp.upper) && plain(&tmp.work)).then(|| {
            let mut data = OsString::from("lowerdir=/tmp,upperdir=");
            data.push(&tmp.upper);
            data.push(",workdir=");
            data.push(&tmp.work);
            data.push(",userxattr");
            data
        });
        for path in &tmp.carried {
            // The empty /tmp needs somewhere to put them back.
            if let Ok(rel) = path.strip_prefix("/tmp") {
                let stand_in = tmp.bare.join(rel);
                let made = if path.is_dir() {
                    std::fs::create_dir_all(&stand_in)
                } else {
                    stand_in
                        .parent()
                        .map_or(Ok(()), std::fs::create_dir_all)
                        .and_then(|()| std::fs::write(&stand_in, b""))
                };
                if let Err(e) = made {
                    return Err(StartError {
                        message: format!(
                            "preparing the private /tmp ({}): {e}",
                            stand_in.display()
                        ),
                        namespace_setup: false,
                    });
                }
            }
        }
        let carried = tmp
            .carried
            .iter()
            .map(|p| cstring(p.as_os_str()))
            .collect::<Result<Vec<_>, _>>()?;
        plan.private_tmp(sys::spawn::TmpPlan {
            overlay: overlay.map(|d| cstring(&d)).transpose()?,
            bare: cstring(tmp.bare.as_os_str())?,
            carried,
            access: tmp.access,
            shm: tmp.shm,
        })
        .map_err(|e| StartError {
            message: format!("preparing the private /tmp: {e}"),
            namespace_setup: false,
        })?;
    }
    Ok(())
}

/// Starts the command in one mode. In namespace mode the proxy listener is created inside;
/// in seccomp-only mode the caller provides its own on host loopback.
pub fn start(launch: &Launch, mode: Mode) -> Result<Started, StartError> {
    let path_var = launch
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_os_str());
    let cmd = launch.command.first().ok_or_else(|| StartError {
        message: "no command given".into(),
        namespace_setup: false,
    })?;
    let exe = find_executable(cmd, path_var).ok_or_else(|| StartError {
        message: format!("{}: command not found on PATH", cmd.to_string_lossy()),
        namespace_setup: false,
    })?;
    let argv = launch
        .command
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<Vec<_>, _>>()?;
    let mut envp = Vec::with_capacity(launch.env.len());
    for (k, v) in &launch.env {
        let mut kv = k.clone();
        kv.push("=");
        kv.push(v);
        envp.push(cstring(&kv)?);
    }
    let landlock = match &launch.landlock {
        Some(fd) => Some(fd.try_clone().map_err(|e| StartError {
            message: format!("duplicating the Landlock ruleset: {e}"),
            namespace_setup: false,
        })?),
        None => None,
    };
    let mut plan = ChildPlan::new(
        mode == Mode::Namespaces,
        cstring(exe.as_os_str())?,
        argv,
        envp,
        sys::bpf::sandbox_program(),
        landlock,
        PROXY_PORT,
    );
    if mode == Mode::Namespaces {
        plan_mounts(&mut plan, launch)?;
    }
    let Spawned { pid, report } = sys::spawn::spawn(&plan).map_err(|e| StartError {
        message: match (mode, e.raw_os_error()) {
            (Mode::Namespaces, Some(libc::EPERM | libc::EINVAL | libc::ENOSPC | libc::EUSERS)) => {
                format!(
                    "this host does not let {} create user namespaces ({e})",
                    whoami()
                )
            }
            _ => format!("starting the sandbox: {e}"),
        },
        namespace_setup: mode == Mode::Namespaces,
    })?;
    let mut warnings = Vec::new();
    let mut inner_listener = None;
    let mut inner_diag = None;
    loop {
        let msg = match sys::recv_with_fds(report.as_fd()) {
            Ok(Some(m)) => m,
            Ok(None) => {
                sys::wait_for(pid);
                return Err(StartError {
                    message: "the sandbox child exited during set-up".into(),
                    namespace_setup: mode == Mode::Namespaces,
                });
            }
            Err(e) => {
                sys::wait_for(pid);
                return Err(StartError {
                    message: format!("reading the sandbox child's report: {e}"),
                    namespace_setup: false,
                });
            }
        };
        let (data, mut fds) = msg;
        match data.first() {
            Some(b'W') => warnings.push(decode(&data[1..])),
            Some(b'E') => {
                sys::wait_for(pid);
                let what = decode(&data[1..]);
                return Err(StartError {
                    namespace_setup: mode == Mode::Namespaces
                        && !what.contains("seccomp")
                        && !what.contains("Landlock")
                        && !what.contains("read-only in the sandbox"),
                    message: what,
                });
            }
            Some(b'L') if !fds.is_empty() => {
                inner_listener = Some(fds.remove(0));
                inner_diag = fds.pop();
            }
            Some(b'R') if data.len() == 6 => {
                let killable = data[1] == 1;
                let target = i32::from_le_bytes([data[2], data[3], data[4], data[5]]);
                let notifier = match take_notifier(pid, target) {
                    Ok(fd) => fd,
                    Err(e) => {
                        let _ = sys::kill(pid, libc::SIGKILL);
                        sys::wait_for(pid);
                        return Err(StartError {
                            message: format!("taking the seccomp listener from the sandbox child: {e} (run `corral doctor`)"),
                            namespace_setup: false,
                        });
                    }
                };
                if let Err(e) = sys::write_message(report.as_fd(), b"G") {
                    sys::wait_for(pid);
                    return Err(StartError {
                        message: format!("releasing the sandbox child: {e}"),
                        namespace_setup: false,
                    });
                }
                return Ok(Started {
                    mode,
                    pid,
                    notifier,
                    inner_listener,
                    inner_diag,
                    killable,
                    warnings,
                    report,
                });
            }
            _ => {
                sys::wait_for(pid);
                return Err(StartError {
                    message: "the sandbox child sent an unexpected report".into(),
                    namespace_setup: false,
                });
            }
        }
    }
}

/// The child's notification listener, duplicated out of it (it cannot send it: its own
/// `sendmsg` would be trapped by the filter that listener serves).
fn take_notifier(pid: u32, target: i32) -> io::Result<OwnedFd> {
    let pidfd = sys::pidfd_open(pid)?;
    sys::pidfd_getfd(pidfd.as_fd(), target)
}

impl Started {
    /// Waits until the command has been executed. `Err` carries the reason it could not
    /// be (not found, permission, Landlock hiding it…).
    pub fn wait_for_exec(&self) -> Result<(), String> {
        loop {
            match sys::recv_with_fds(self.report.as_fd()) {
                Ok(None) => return Ok(()),
                Ok(Some((data, _))) if data.first() == Some(&b'E') => {
                    return Err(decode(&data[1..]))
                }
                Ok(Some(_)) => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(format!("reading the sandbox child's report: {e}")),
            }
        }
    }
}

/// `what\0errno` → "what: strerror".
fn decode(b: &[u8]) -> String {
    let nul = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let what = String::from_utf8_lossy(&b[..nul]);
    let errno = b
        .get(nul + 1..nul + 5)
        .and_then(|e| e.try_into().ok())
        .map(i32::from_le_bytes)
        .unwrap_or(0);
    if errno == 0 {
        what.into_owned()
    } else {
        format!("{what}: {}", io::Error::from_raw_os_error(errno))
    }
}

fn whoami() -> String {
    let (uid, _) = sys::ids();
    if uid == 0 {
        "root".into()
    } else {
        format!("uid {uid}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seccomp_only_needs_landlock_or_yama() {
        assert!(seccomp_only_is_safe(true, 0).is_ok());
        assert!(seccomp_only_is_safe(false, 1).is_ok());
        let why = seccomp_only_is_safe(false, 0).unwrap_err();
        assert!(
            why.contains("/proc/PID/mem") && why.contains("Landlock"),
            "{why}"
        );
    }

    #[test]
    fn finds_commands_like_a_shell() {
        assert_eq!(
            find_executable(OsStr::new("sh"), Some(OsStr::new("/nonexistent:/bin"))),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(
            find_executable(OsStr::new("no-such-tool-corral"), None),
            None
        );
        assert_eq!(
            find_executable(OsStr::new("./x"), None),
            Some(PathBuf::from("./x"))
        );
    }

    #[test]
    fn decodes_child_reports() {
        let mut m = b"writing /proc/self/uid_map\0".to_vec();
        m.extend(libc::EPERM.to_le_bytes());
        assert_eq!(
            decode(&m),
            format!(
                "writing /proc/self/uid_map: {}",
                io::Error::from_raw_os_error(libc::EPERM)
            )
        );
    }
}
