//! The code that runs in the sandbox child between `clone` and `exec`.
//!
//! The supervisor may already be multi-threaded when it forks (the test harness is), so the
//! child must not allocate or take locks: everything it needs is prepared by the parent in a
//! [`ChildPlan`], and it reports back over a `SOCK_SEQPACKET` socket with fixed messages:
//!
//! - `W<what>\0<errno:4>`: a warning, the child continues;
//! - `E<what>\0<errno:4>`: a fatal error, the child exits 127;
//! - `L` with the proxy listener created inside the sandbox's network namespace attached
//!   (namespace mode; sent before the filter exists, so `sendmsg` is not trapped yet);
//! - `R<killable:1><fd:4>`: the filter is installed and its notification listener is
//!   descriptor `fd` in the child. The supervisor takes it with `pidfd_getfd` (the child's
//!   own `sendmsg` would now be trapped, by a supervisor waiting for this very message) and
//!   answers `G` on the socket; only then does the child close its copy;
//! - end of stream: the command was executed (the socket is close-on-exec).
//!
//! After the filter is installed the child writes with `write(2)`, which is not trapped.
//!
//! The child then stays as the sandbox's "init": it forks the command, forwards the
//! signals the supervisor sends it, reaps orphans and exits with the command's status. In
//! namespace mode it is PID 1 of a new PID namespace, whose end kills everything in it. In
//! seccomp-only mode it is a child subreaper, so whatever the command leaves behind
//! (`setsid`, daemons) stays below it; it kills that whole tree when the command ends, and
//! when the supervisor dies (its parent-death signal, [`SUPERVISOR_GONE`]), so nothing of
//! the sandbox outlives corral.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::bpf::Insn;
use super::sysfs::Sysfs;
use super::{seccomp, send_with_fds, SUPERVISED_SIGNALS};

/// The parent-death signal of the seccomp-only init: the supervisor is gone.
const SUPERVISOR_GONE: libc::c_int = libc::SIGPWR;

/// Everything the child needs, prepared (and allocated) by the parent.
pub struct ChildPlan {
    /// New user, network, mount, PID and IPC namespaces (else: seccomp and Landlock only).
    pub namespaces: bool,
    exe: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    filter: Vec<Insn>,
    landlock: Option<OwnedFd>,
    /// Port of the proxy listener created inside the namespace.
    proxy_port: u16,
    /// In seccomp-only mode, the supervisor's pid (to detect its death before PDEATHSIG).
    supervisor_pid: libc::pid_t,
    /// Bind mounts made in the sandbox's mount namespace, in order.
    binds: Vec<Bind>,
    /// The private `/tmp` (namespace mode).
    tmp: Option<TmpPlan>,
    /// The view reads everything, so the sandbox's own `/sys` too (namespace mode).
    read_sys: bool,
}

/// A bind mount in the sandbox's mount namespace.
struct Bind {
    source: CString,
    target: CString,
    /// Remounted read-only (else only made a mount point, which cannot be renamed).
    read_only: bool,
    /// The locked flags of the source's mount, repeated in the remount.
    flags: libc::c_ulong,
    /// What the child reports if it fails.
    what: Vec<u8>,
}

/// How the child makes `/tmp` private ([`crate::private_tmp`]).
pub struct TmpPlan {
    /// `overlay` mount data (lower `/tmp`); `None`: use `bare` directly.
    pub overlay: Option<CString>,
    /// An empty directory bound on `/tmp` when the overlay cannot be mounted.
    pub bare: CString,
    /// Paths under `/tmp` carried over the new `/tmp` (the host's files, writable or
    /// readable as the view says), at most [`MAX_CARRIED`].
    pub carried: Vec<CString>,
    /// The Landlock rights granted on the new `/tmp` (and `/dev/shm`).
    pub access: u64,
    /// Also mount a tmpfs of the sandbox's own on `/dev/shm`.
    pub shm: bool,
}

/// How many paths under `/tmp` the child carries over the private `/tmp`.
pub const MAX_CARRIED: usize = 32;

/// `struct landlock_path_beneath_attr`.
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const LANDLOCK_RULE_PATH_BENEATH: libc::c_int = 1;
/// `LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR` (ABI 1).
const LANDLOCK_READ: u64 = (1 << 2) | (1 << 3);

// SAFETY: the raw pointers point into the CStrings owned by the same plan; they are only
// dereferenced by execve in the child.
unsafe impl Send for ChildPlan {}

impl ChildPlan {
    /// `exe` must be the absolute path to execute (PATH already searched).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        namespaces: bool,
        exe: CString,
        argv: Vec<CString>,
        envp: Vec<CString>,
        filter: Vec<Insn>,
        landlock: Option<OwnedFd>,
        proxy_port: u16,
    ) -> ChildPlan {
        let (uid, gid) = super::ids();
        let mut plan = ChildPlan {
            namespaces,
            exe,
            argv,
            envp,
            argv_ptrs: Vec::new(),
            envp_ptrs: Vec::new(),
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
            filter,
            landlock,
            proxy_port,
            supervisor_pid: std::process::id() as libc::pid_t,
            binds: Vec::new(),
            tmp: None,
            read_sys: false,
        };
        plan.argv_ptrs = plan.argv.iter().map(|s| s.as_ptr()).collect();
        plan.argv_ptrs.push(std::ptr::null());
        plan.envp_ptrs = plan.envp.iter().map(|s| s.as_ptr()).collect();
        plan.envp_ptrs.push(std::ptr::null());
        plan
    }
}

impl ChildPlan {
    /// Binds `path` read-only over itself in the sandbox (namespace mode); `flags` are the
    /// locked flags of its mount ([`super::locked_mount_flags`]).
    pub fn read_only(&mut self, path: CString, flags: libc::c_ulong) {
        let what = format!(
            "making {} read-only in the sandbox",
            String::from_utf8_lossy(path.as_bytes())
        );
        self.binds.push(Bind {
            source: path.clone(),
            target: path,
            read_only: true,
            flags,
            what: what.into_bytes(),
        });
    }

    /// Makes `path` a mount point (bound over itself, writable): it cannot be renamed,
    /// removed or replaced from inside.
    pub fn pin(&mut self, path: CString) {
        let what = format!(
            "pinning {} in the sandbox",
            String::from_utf8_lossy(path.as_bytes())
        );
        self.binds.push(Bind {
            source: path.clone(),
            target: path,
            read_only: false,
            flags: 0,
            what: what.into_bytes(),
        });
    }

    /// Binds the file `blank` read-only over the file `path`; `flags`: the locked flags of
    /// `blank`'s mount.
    pub fn hide(&mut self, path: CString, blank: CString, flags: libc::c_ulong) {
        let what = format!(
            "hiding {} from the sandbox",
            String::from_utf8_lossy(path.as_bytes())
        );
        self.binds.push(Bind {
            source: blank,
            target: path,
            read_only: true,
            flags,
            what: what.into_bytes(),
        });
    }

    /// Lets the sandbox read its own `/sys` (a view that reads everything).
    pub fn read_sys(&mut self) {
        self.read_sys = true;
    }

    /// Makes `/tmp` private to the sandbox (namespace mode).
    pub fn private_tmp(&mut self, tmp: TmpPlan) -> io::Result<()> {
        if tmp.carried.len() > MAX_CARRIED {
            return Err(io::Error::other(format!(
                "more than {MAX_CARRIED} paths under /tmp to carry into the sandbox"
            )));
        }
        self.tmp = Some(tmp);
        Ok(())
    }
}

/// The started child: its pid (in our namespace) and our end of the report socket.
pub struct Spawned {
    pub pid: u32,
    pub report: OwnedFd,
}

/// Starts the sandbox child. In namespace mode EPERM/EINVAL/ENOSPC/EUSERS from `clone`
/// mean the host does not let this user create namespaces.
pub fn spawn(plan: &ChildPlan) -> io::Result<Spawned> {
    let (parent_end, child_end) = super::seqpacket_pair()?;
    let flags = if plan.namespaces {
        libc::CLONE_NEWUSER
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWIPC
    } else {
        0
    } | libc::SIGCHLD;
    // SAFETY: a fork-like clone (no CLONE_VM, null stack: the child runs on a copy of our
    // stack). The child only runs `child_main`, which makes raw syscalls on memory the plan
    // prepared and never returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        child_main(plan, child_end.as_raw_fd());
    }
    drop(child_end);
    Ok(Spawned {
        pid: pid as u32,
        report: parent_end,
    })
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Sends `kind what \0 errno` without allocating.
fn report(fd: RawFd, kind: u8, what: &[u8], err: i32) {
    let mut buf = [0u8; 256];
    let n = what.len().min(240);
    buf[0] = kind;
    buf[1..1 + n].copy_from_slice(&what[..n]);
    buf[1 + n] = 0;
    buf[2 + n..6 + n].copy_from_slice(&err.to_le_bytes());
    // SAFETY: write of our stack buffer; on a SOCK_SEQPACKET socket it is one message.
    let _ = unsafe { libc::write(fd, buf.as_ptr().cast(), 6 + n) };
}

fn fail(fd: RawFd, what: &[u8], err: i32) -> ! {
    report(fd, b'E', what, err);
    // SAFETY: _exit never returns and runs no atexit handlers (which could allocate).
    unsafe { libc::_exit(127) }
}

fn write_file(path: &CStr, data: &[u8]) -> Result<(), i32> {
    // SAFETY: open/write/close on a NUL-terminated path and a buffer we own.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(errno());
        }
        let r = libc::write(fd, data.as_ptr().cast(), data.len());
        let e = errno();
        libc::close(fd);
        if r < 0 {
            return Err(e);
        }
    }
    Ok(())
}

#[repr(C)]
struct IfreqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn loopback_up() -> Result<(), i32> {
    // SAFETY: a datagram socket for interface ioctls, and SIOC[GS]IFFLAGS on a zeroed
    // struct ifreq (40 bytes, name + flags) we own.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(errno());
        }
        let mut ifr: IfreqFlags = std::mem::zeroed();
        ifr.name[..2].copy_from_slice(b"lo");
        let mut r = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr as *mut IfreqFlags);
        if r == 0 {
            ifr.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            r = libc::ioctl(s, libc::SIOCSIFFLAGS, &mut ifr as *mut IfreqFlags);
        }
        let e = errno();
        libc::close(s);
        if r != 0 {
            return Err(e);
        }
    }
    Ok(())
}

fn listen_loopback(port: u16) -> Result<RawFd, i32> {
    // SAFETY: socket/setsockopt/bind/listen with a sockaddr_in we build on the stack.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(errno());
        }
        let one: libc::c_int = 1;
        libc::setsockopt(
            s,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            },
            sin_zero: [0; 8],
        };
        if libc::bind(
            s,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
            || libc::listen(s, 4096) != 0
        {
            let e = errno();
            libc::close(s);
            return Err(e);
        }
        Ok(s)
    }
}

fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset on a sigset_t we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Mounts the private `/tmp`: the paths to carry are taken (as detached copies of their
/// mounts, with what is mounted below them) before it covers them, and put back on it
/// after; then the new `/tmp` gets its Landlock write rule (a rule on the host's `/tmp`
/// does not reach through the mount that covers it).
fn make_tmp_private(tmp: &TmpPlan, ruleset: Option<RawFd>, rep: RawFd) {
    let mut trees = [-1 as RawFd; MAX_CARRIED];
    for (i, path) in tmp.carried.iter().enumerate() {
        // SAFETY: open_tree with a NUL-terminated path the plan owns.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                path.as_ptr(),
                OPEN_TREE_CLONE | AT_RECURSIVE | libc::O_CLOEXEC as libc::c_uint,
            )
        };
        if fd < 0 {
            fail(
                rep,
                b"taking a path under /tmp into the private /tmp",
                errno(),
            );
        }
        trees[i] = fd as RawFd;
    }
    let overlaid = tmp.overlay.as_ref().is_some_and(|data| {
        // SAFETY: mount with NUL-terminated strings the plan owns, in our namespace.
        let r = unsafe {
            libc::mount(
                c"overlay".as_ptr(),
                c"/tmp".as_ptr(),
                c"overlay".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                data.as_ptr().cast(),
            )
        };
        if r != 0 {
            report(
                rep,
                b'W',
                b"mounting the private /tmp as an overlay (it is empty instead: the host's files there are not visible)",
                errno(),
            );
        }
        r == 0
    });
    // SAFETY: mount with NUL-terminated paths the plan owns, in our namespace.
    if !overlaid
        && unsafe {
            libc::mount(
                tmp.bare.as_ptr(),
                c"/tmp".as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV,
                std::ptr::null(),
            )
        } != 0
    {
        fail(rep, b"mounting the private /tmp", errno());
    }
    for (i, path) in tmp.carried.iter().enumerate() {
        // SAFETY: move_mount of a tree descriptor we opened onto a path the plan owns.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                trees[i],
                c"".as_ptr(),
                libc::AT_FDCWD,
                path.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if r != 0 {
            fail(
                rep,
                b"putting a path under /tmp back over the private /tmp",
                errno(),
            );
        }
        // SAFETY: our descriptor.
        unsafe { libc::close(trees[i]) };
    }
    // SAFETY: mount with literal strings, in our namespace.
    let shm = tmp.shm
        && unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                c"/dev/shm".as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"mode=1777".as_ptr().cast(),
            )
        } == 0;
    if tmp.shm && !shm {
        report(
            rep,
            b'W',
            b"mounting a private /dev/shm (POSIX shared memory is read-only in the sandbox)",
            errno(),
        );
    }
    let Some(ruleset) = ruleset else {
        return;
    };
    allow_beneath(ruleset, c"/tmp", tmp.access, rep);
    if shm {
        allow_beneath(ruleset, c"/dev/shm", tmp.access, rep);
    }
}

/// Adds a Landlock rule granting `access` below `path`, a mount made in the sandbox: a
/// rule on the host's directory there does not reach through it.
fn allow_beneath(ruleset: RawFd, path: &CStr, access: u64, rep: RawFd) {
    // SAFETY: open with a NUL-terminated path; the descriptor is ours.
    let dir = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir < 0 {
        fail(
            rep,
            b"opening a file system mounted for the sandbox",
            errno(),
        );
    }
    let attr = PathBeneathAttr {
        allowed_access: access,
        parent_fd: dir,
    };
    // SAFETY: landlock_add_rule reads the packed attribute struct on our stack.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            LANDLOCK_RULE_PATH_BENEATH,
            std::ptr::addr_of!(attr),
            0,
        )
    };
    if r != 0 {
        fail(
            rep,
            b"letting the sandbox write its private directories (Landlock)",
            errno(),
        );
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(dir) };
}

fn child_main(plan: &ChildPlan, rep: RawFd) -> ! {
    let mut supervised = sigset(SUPERVISED_SIGNALS);
    // SAFETY: sigaddset on the set we own.
    unsafe { libc::sigaddset(&mut supervised, SUPERVISOR_GONE) };
    // SAFETY: prctl and sigprocmask with integer/owned arguments.
    unsafe {
        libc::sigprocmask(libc::SIG_BLOCK, &supervised, std::ptr::null_mut());
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            fail(rep, b"setting the parent-death signal", errno());
        }
        if !plan.namespaces && libc::getppid() != plan.supervisor_pid {
            libc::_exit(127);
        }
    }
    if plan.namespaces {
        if let Err(e) = write_file(c"/proc/self/setgroups", b"deny") {
            if e != libc::ENOENT {
                fail(rep, b"writing /proc/self/setgroups", e);
            }
        }
        if let Err(e) = write_file(c"/proc/self/uid_map", &plan.uid_map) {
            fail(rep, b"writing /proc/self/uid_map", e);
        }
        if let Err(e) = write_file(c"/proc/self/gid_map", &plan.gid_map) {
            fail(rep, b"writing /proc/self/gid_map", e);
        }
        // SAFETY: mount with NUL-terminated literals; affects only our new mount namespace.
        unsafe {
            if libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                fail(rep, b"making the mount namespace private", errno());
            }
            if libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            ) != 0
            {
                report(
                    rep,
                    b'W',
                    b"mounting a /proc for the sandbox's PID namespace (the host's /proc stays visible)",
                    errno(),
                );
            }
        }
        let own_sysfs = match super::sysfs::mount_own() {
            Ok(Sysfs::Own) => true,
            Ok(Sysfs::OwnWithoutCgroups(e)) => {
                report(
                    rep,
                    b'W',
                    b"showing the cgroup tree in the sandbox's /sys",
                    e,
                );
                true
            }
            Ok(Sysfs::Hidden(e)) => {
                report(
                    rep,
                    b'W',
                    b"mounting a sysfs for the sandbox's network namespace (/sys is hidden instead)",
                    e,
                );
                false
            }
            Err(e) => fail(rep, b"hiding the host's /sys", e),
        };
        for bind in &plan.binds {
            // SAFETY: mount with NUL-terminated paths the plan owns; the namespace is
            // private (above), so nothing propagates to the host.
            unsafe {
                // MS_REC keeps what is mounted below visible (the remount makes only the
                // top read-only).
                if libc::mount(
                    bind.source.as_ptr(),
                    bind.target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ) != 0
                    || (bind.read_only
                        && libc::mount(
                            std::ptr::null(),
                            bind.target.as_ptr(),
                            std::ptr::null(),
                            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | bind.flags,
                            std::ptr::null(),
                        ) != 0)
                {
                    fail(rep, &bind.what, errno());
                }
            }
        }
        if let Some(tmp) = &plan.tmp {
            make_tmp_private(tmp, plan.landlock.as_ref().map(AsRawFd::as_raw_fd), rep);
        }
        // The /proc and /sys mounted above are new file systems, which the read rules made
        // on the host's (or on a `/` split around a hidden secret) do not reach: every view
        // reads /proc, and a view that reads everything reads /sys.
        if let Some(ruleset) = plan.landlock.as_ref().map(AsRawFd::as_raw_fd) {
            allow_beneath(ruleset, c"/proc", LANDLOCK_READ, rep);
            if plan.read_sys && own_sysfs {
                allow_beneath(ruleset, c"/sys", LANDLOCK_READ, rep);
            }
        }
        if let Err(e) = loopback_up() {
            fail(rep, b"bringing up the loopback interface", e);
        }
        // TCP Fast Open sends data in the SYN of a sendto/sendmsg, with no connect(2) call
        // for the broker to see.
        if let Err(e) = write_file(c"/proc/sys/net/ipv4/tcp_fastopen", b"0") {
            report(rep, b'W', b"disabling TCP Fast Open in the sandbox (MSG_FASTOPEN is refused by seccomp anyway)", e);
        }
        let listener = match listen_loopback(plan.proxy_port) {
            Ok(fd) => fd,
            Err(e) => fail(rep, b"listening on the proxy address inside the sandbox", e),
        };
        // Unix sockets belong to the network namespace they are created in: a sock_diag
        // socket made here lets the supervisor tell the sandbox's listeners from the host's.
        // SAFETY: socket() with constant arguments.
        let diag = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if diag < 0 {
            report(
                rep,
                b'W',
                b"opening sock_diag in the sandbox (every named unix socket will be refused)",
                errno(),
            );
        }
        let sent = if diag >= 0 {
            send_with_fds(rep, b"L", &[listener, diag])
        } else {
            send_with_fds(rep, b"L", &[listener])
        };
        if sent.is_err() {
            // The supervisor is gone: nothing may run unsupervised.
            // SAFETY: _exit never returns.
            unsafe { libc::_exit(127) }
        }
        // SAFETY: our descriptors; the supervisor holds its own copies now.
        unsafe {
            libc::close(listener);
            if diag >= 0 {
                libc::close(diag);
            }
        }
    }
    if let Some(ruleset) = &plan.landlock {
        // SAFETY: prctl and landlock_restrict_self with a ruleset descriptor we hold.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                fail(rep, b"setting no_new_privs", errno());
            }
            if libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0) != 0 {
                fail(rep, b"enforcing the Landlock ruleset", errno());
            }
            libc::close(ruleset.as_raw_fd());
        }
    }
    let (notifier, killable) = match seccomp::install_filter(&plan.filter) {
        Ok(v) => v,
        Err(e) => fail(
            rep,
            b"installing the seccomp filter",
            e.raw_os_error().unwrap_or(0),
        ),
    };
    let mut ready = [0u8; 6];
    ready[0] = b'R';
    ready[1] = u8::from(killable);
    ready[2..6].copy_from_slice(&notifier.as_raw_fd().to_le_bytes());
    // SAFETY: write/read on our socket with stack buffers.
    unsafe {
        let mut ack = [0u8; 1];
        if libc::write(rep, ready.as_ptr().cast(), ready.len()) != ready.len() as isize
            || libc::read(rep, ack.as_mut_ptr().cast(), 1) != 1
            || ack[0] != b'G'
        {
            // The supervisor is gone (or refused): nothing may run unsupervised.
            libc::_exit(127);
        }
    }
    // The sandbox must not keep a copy of the notifier: a listener that stays open in the
    // sandbox keeps trapped calls waiting forever after the supervisor dies; with the last
    // copy gone they fail with ENOSYS.
    drop(notifier);
    if !plan.namespaces {
        // SAFETY: prctl with integer arguments. Orphans of the sandbox re-parent to us.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
    }
    // SAFETY: a fork-like clone; the child only runs exec_command, which never returns.
    let cmd = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if cmd < 0 {
        fail(rep, b"starting the command", errno());
    }
    if cmd == 0 {
        exec_command(plan, rep);
    }
    // SAFETY: closing our copy of the report socket (the command's copy closes on exec),
    // and prctl with integer arguments: the sandbox's processes may not look into init, a
    // copy of the supervisor (the command, already forked, stays dumpable).
    unsafe {
        libc::close(rep);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    if !plan.namespaces {
        // SAFETY: prctl/getppid with integer arguments. From now on the supervisor's death
        // is a signal we handle (kill the tree) instead of our own SIGKILL; if it already
        // died, handle it now.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, SUPERVISOR_GONE, 0, 0, 0);
            if libc::getppid() != plan.supervisor_pid {
                kill_tree();
                libc::_exit(137);
            }
        }
    }
    run_init(cmd as libc::pid_t, &supervised, plan.namespaces)
}

/// The sandbox's init: forwards signals sent by the supervisor, reaps every orphan, and
/// exits with the command's status (128 + N for a signal). Without a PID namespace
/// (`namespaces` false) it kills the tree below it first, and at once if the supervisor
/// dies.
fn run_init(cmd: libc::pid_t, set: &libc::sigset_t, namespaces: bool) -> ! {
    loop {
        // SAFETY: sigwaitinfo/waitpid/kill/_exit with arguments we own.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigwaitinfo(set, &mut info);
            if sig < 0 {
                continue;
            }
            if sig == libc::SIGCHLD {
                loop {
                    let mut status = 0;
                    let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
                    if pid <= 0 {
                        break;
                    }
                    if pid == cmd {
                        let code = if libc::WIFSIGNALED(status) {
                            128 + libc::WTERMSIG(status)
                        } else {
                            libc::WEXITSTATUS(status)
                        };
                        if !namespaces {
                            kill_tree();
                        }
                        libc::_exit(code);
                    }
                }
            } else if sig == SUPERVISOR_GONE && !namespaces {
                kill_tree();
                libc::_exit(137);
            } else if info.si_code != libc::SI_KERNEL {
                // Terminal signals (SI_KERNEL) reached the command's process group already.
                libc::kill(cmd, sig);
            }
        }
    }
}

/// Kills every process below this one (the seccomp-only init, a child subreaper) and reaps
/// them. Direct children are killed; their own children then re-parent to us and are
/// killed on the next pass, until none is left. No allocation: this runs in a fork of a
/// multi-threaded process.
fn kill_tree() {
    for _ in 0..5000 {
        let mut found = false;
        // SAFETY: open/read/close/kill on a NUL-terminated literal path and a stack buffer.
        unsafe {
            let fd = libc::open(
                c"/proc/thread-self/children".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            );
            if fd >= 0 {
                let mut buf = [0u8; 1024];
                let (mut pid, mut digits) = (0 as libc::pid_t, false);
                loop {
                    let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                    if n <= 0 {
                        break;
                    }
                    for &b in &buf[..n as usize] {
                        if b.is_ascii_digit() {
                            pid = pid
                                .saturating_mul(10)
                                .saturating_add(libc::pid_t::from(b - b'0'));
                            digits = true;
                        } else if digits {
                            libc::kill(pid, libc::SIGKILL);
                            found = true;
                            (pid, digits) = (0, false);
                        }
                    }
                }
                if digits {
                    libc::kill(pid, libc::SIGKILL);
                    found = true;
                }
                libc::close(fd);
            }
        }
        let mut reaped = false;
        loop {
            let mut status = 0;
            // SAFETY: waitpid on our own children with a status we own.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid > 0 {
                reaped = true;
                continue;
            }
            if pid < 0 && !found {
                return; // ECHILD: nothing left below us.
            }
            break;
        }
        if !reaped {
            let pause = libc::timespec {
                tv_sec: 0,
                tv_nsec: 1_000_000,
            };
            // SAFETY: nanosleep with a timespec we own.
            unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
        }
    }
}

/// Last steps in the command's process, then `execve`.
fn exec_command(plan: &ChildPlan, rep: RawFd) -> ! {
    // SAFETY: prctl/capset/sigaction/sigprocmask/execve with arguments we own; the argv and
    // envp arrays are NULL-terminated and point into the plan's CStrings.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        // No capabilities survive into the command, even for root (in or out of the user
        // namespace).
        for cap in 0..64 {
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
        #[repr(C)]
        struct CapHeader {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        struct CapData {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut hdr = CapHeader {
            version: 0x2008_0522,
            pid: 0,
        };
        let data = [
            CapData {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            },
            CapData {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            },
        ];
        libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr());
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let empty = sigset(&[]);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(
            plan.exe.as_ptr(),
            plan.argv_ptrs.as_ptr(),
            plan.envp_ptrs.as_ptr(),
        );
        let e = errno();
        report(rep, b'E', b"executing the command", e);
        libc::_exit(if e == libc::ENOENT { 127 } else { 126 });
    }
}
