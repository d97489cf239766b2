//! The syscall layer: every `unsafe` block of the sandbox lives under this module, behind
//! small safe functions, so the rest of the crate never touches raw pointers or `libc`
//! structures.
//!
//! - [`bpf`]: the seccomp program (plain data, no `unsafe`);
//! - [`seccomp`]: installing it and speaking the user-notification protocol;
//! - [`net`]: socket operations on duplicated descriptors, the loopback interface;
//! - [`spawn`]: the code that runs in the child between `clone` and `exec`;
//! - [`sysfs`]: the sandbox's own `/sys`, mounted by that child;
//! - this file: processes, signals, descriptors.

pub mod bpf;
pub mod net;
pub mod procmap;
pub mod seccomp;
pub mod spawn;
pub mod sysfs;

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Turns a `-1`-style return into an `io::Error` from errno.
fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Retries a call while it fails with EINTR.
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// `PIDFD_THREAD` (Linux 6.9): a pidfd for a thread that is not a thread-group leader.
const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;

/// A pidfd for `pid`. A notification names the calling *thread*; a thread that is not its
/// group's leader needs `PIDFD_THREAD`, tried when the plain call refuses the id.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let open = |flags: libc::c_uint| -> io::Result<OwnedFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, flags) })?;
        // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    };
    match open(0) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)) => {
            open(PIDFD_THREAD)
        }
        other => other,
    }
}

/// A duplicate of descriptor `target` of the process behind `pidfd`.
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, target: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number in that process and flags (0).
    let fd = cvt(unsafe {
        libc::syscall(
            libc::SYS_pidfd_getfd,
            pidfd.as_raw_fd(),
            target,
            0 as libc::c_uint,
        )
    })?;
    // SAFETY: the kernel just installed this descriptor in our table; we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Reads `len` bytes at `addr` in process `pid` (the supervisor is outside the sandbox, so
/// the sandbox's own ban on process_vm_readv does not apply to it).
pub fn read_process_memory(pid: u32, addr: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    if len == 0 {
        return Ok(buf);
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: `local` points at `len` writable bytes we own; the remote range is only read
    // by the kernel in the other process, which checks it.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Writes `data` at `addr` in process `pid` (the result field of a call the supervisor
/// performed for it, e.g. `msg_len` of `sendmmsg`).
pub fn write_process_memory(pid: u32, addr: u64, data: &[u8]) -> io::Result<()> {
    let local = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: `local` points at `data.len()` readable bytes; the kernel checks the remote
    // range in the other process.
    let n = unsafe { libc::process_vm_writev(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != data.len() {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    Ok(())
}

/// Opens `path` `O_PATH` below the directory `dir` with `openat2`: with `in_root`, `dir`
/// is treated as the root (absolute symlinks and `..` stay inside it), as a process whose
/// root it is would resolve the path; magic links (`/proc/PID/fd/N`, which would jump to
/// another process's files) are never followed.
pub fn open_path_beneath(
    dir: BorrowedFd<'_>,
    path: &std::ffi::CStr,
    in_root: bool,
) -> io::Result<OwnedFd> {
    const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
    const RESOLVE_IN_ROOT: u64 = 0x10;
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_NO_MAGICLINKS | if in_root { RESOLVE_IN_ROOT } else { 0 },
    };
    let fd = retry(|| {
        // SAFETY: openat2 reads the NUL-terminated path and our open_how of the given size.
        cvt(unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        })
    })?;
    // SAFETY: a new descriptor the kernel just returned to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)`: orphaned descendants are re-parented to us.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    cvt(libc::c_long::from(unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    }))?;
    Ok(())
}

/// Makes this process non-dumpable: processes of the same user without `CAP_SYS_PTRACE`
/// (the sandbox's, in seccomp-only mode) can then neither read nor write its memory
/// through `/proc/PID/mem`, nor read its environment or descriptors. Call it after the
/// sandbox child is cloned: the child inherits the flag, and a non-dumpable process cannot
/// write its own `/proc/self/uid_map`.
pub fn set_not_dumpable() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    cvt(libc::c_long::from(unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0)
    }))?;
    Ok(())
}

/// Signals the supervisor handles itself (forwarding, reaping) instead of by default action.
pub const SUPERVISED_SIGNALS: &[libc::c_int] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGCHLD,
];

/// A set of signals (`sigset_t`).
#[derive(Clone, Copy)]
pub struct SigSet(libc::sigset_t);

impl SigSet {
    pub fn of(signals: &[libc::c_int]) -> SigSet {
        // SAFETY: sigemptyset/sigaddset initialise and modify a sigset_t we own.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &s in signals {
                libc::sigaddset(&mut set, s);
            }
            SigSet(set)
        }
    }

    /// Blocks these signals in the calling thread (threads spawned later inherit the mask).
    pub fn block(&self) -> io::Result<()> {
        // SAFETY: pthread_sigmask reads our initialised set.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &self.0, std::ptr::null_mut()) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(())
    }

    /// Waits for one of these (blocked) signals.
    pub fn wait(&self) -> io::Result<SignalInfo> {
        retry(|| {
            // SAFETY: sigwaitinfo fills a siginfo_t we own.
            unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                let sig = libc::sigwaitinfo(&self.0, &mut info);
                if sig < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(SignalInfo {
                    signal: sig,
                    from_kernel: info.si_code == libc::SI_KERNEL,
                })
            }
        })
    }
}

/// What `sigwaitinfo` said about a signal.
#[derive(Clone, Copy, Debug)]
pub struct SignalInfo {
    pub signal: libc::c_int,
    /// Sent by the kernel (a terminal's ^C/^\ or hang-up reaches the whole foreground
    /// process group, so the sandboxed command has received it too).
    pub from_kernel: bool,
}

/// `kill(pid, sig)`; a vanished process is not an error.
pub fn kill(pid: u32, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill with integer arguments.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    Ok(())
}

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention: the code, or 128 + the signal number.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }

    fn from_raw(status: libc::c_int) -> Option<ExitStatus> {
        if libc::WIFEXITED(status) {
            Some(ExitStatus::Code(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(ExitStatus::Signal(libc::WTERMSIG(status)))
        } else {
            None
        }
    }
}

/// Reaps any child that has ended, without waiting. `Ok(None)` when none is ready (or
/// there are no children).
pub fn reap_any() -> io::Result<Option<(u32, ExitStatus)>> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into our integer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid == 0 {
            return Ok(None);
        }
        if pid < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ECHILD) => Ok(None),
                Some(libc::EINTR) => continue,
                _ => Err(e),
            };
        }
        if let Some(st) = ExitStatus::from_raw(status) {
            return Ok(Some((pid as u32, st)));
        }
    }
}

/// The process ids of our direct children (every thread's list), from procfs.
pub fn children_of_self() -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// A connected `SOCK_SEQPACKET` pair, close-on-exec.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: socketpair writes two descriptors into our array.
    cvt(libc::c_long::from(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    }))?;
    // SAFETY: both descriptors are new and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

const MAX_PASSED_FDS: usize = 4;

/// Sends `data` and `fds` (SCM_RIGHTS) as one message. Returns without error only if the
/// peer still exists. Does not allocate (the child uses it after `clone`).
pub(crate) fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    assert!(fds.len() <= MAX_PASSED_FDS);
    // A control buffer big enough for MAX_PASSED_FDS descriptors, suitably aligned.
    let mut cbuf = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; every pointer we set points at live buffers above, and
    // CMSG_* compute offsets inside `cbuf`, which is large enough (checked by the assert).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            let space = libc::CMSG_SPACE(std::mem::size_of_val(fds) as u32) as usize;
            debug_assert!(space <= std::mem::size_of_val(&cbuf));
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast(), fds.len());
        }
        loop {
            let r = libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
            if r >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }
}

/// Writes one message on a `SOCK_SEQPACKET` socket.
pub fn write_message(sock: BorrowedFd<'_>, data: &[u8]) -> io::Result<()> {
    retry(|| {
        // SAFETY: write of a buffer we own.
        let n = cvt(
            unsafe { libc::write(sock.as_raw_fd(), data.as_ptr().cast(), data.len()) }
                as libc::c_long,
        )?;
        if n as usize != data.len() {
            return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
        }
        Ok(())
    })
}

/// Receives one message and any descriptors passed with it. `Ok(None)` at end of stream.
pub fn recv_with_fds(sock: BorrowedFd<'_>) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut data = vec![0u8; 4096];
    let mut cbuf = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: as in send_with_fds; the kernel writes at most msg_controllen bytes into
    // `cbuf` and at most iov_len into `data`; we walk the control messages with CMSG_*.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        let n = retry(|| {
            let r = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(r as usize)
            }
        })?;
        let mut fds = Vec::new();
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let payload = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let count = payload / std::mem::size_of::<RawFd>();
                let p = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(p.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        if n == 0 && fds.is_empty() {
            return Ok(None);
        }
        data.truncate(n);
        Ok(Some((data, fds)))
    }
}

/// `uname -r`.
pub fn kernel_release() -> String {
    // SAFETY: uname fills a utsname we own; release is NUL-terminated by the kernel.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return "unknown".into();
        }
        CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

/// The Landlock ABI version the kernel offers (0 when Landlock is unavailable).
pub fn landlock_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) only returns the ABI version.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if r < 0 {
        0
    } else {
        r as i32
    }
}

/// The flags of the mount holding `path` that a user namespace may not clear (`nosuid`,
/// `nodev`, `noexec`, the atime mode), as `MS_*` bits: a read-only remount of a bind of it
/// must repeat them or the kernel refuses it.
pub fn locked_mount_flags(path: &std::path::Path) -> io::Result<libc::c_ulong> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        st
    };
    let pairs = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    Ok(pairs
        .iter()
        .filter(|(st_flag, _)| st.f_flag & *st_flag != 0)
        .fold(0, |acc, (_, ms)| acc | ms))
}

/// Yama's `ptrace_scope` (0 when Yama is absent: classic same-user rules).
pub fn yama_ptrace_scope() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Current effective uid and gid.
pub fn ids() -> (u32, u32) {
    // SAFETY: geteuid/getegid cannot fail.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// Our process id.
pub fn getpid() -> u32 {
    std::process::id()
}

/// Waits for child `pid` to end (and reaps it).
pub fn wait_for(pid: u32) -> Option<ExitStatus> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into our integer.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        if r < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return None;
        }
        if let Some(st) = ExitStatus::from_raw(status) {
            return Some(st);
        }
    }
}
