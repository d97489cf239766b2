//! Installing the filter and speaking the seccomp user-notification protocol.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::bpf::Insn;

const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
const SECCOMP_GET_ACTION_AVAIL: libc::c_uint = 2;
const SECCOMP_GET_NOTIF_SIZES: libc::c_uint = 3;
pub const FILTER_FLAG_NEW_LISTENER: libc::c_uint = 1 << 3;
pub const FILTER_FLAG_WAIT_KILLABLE_RECV: libc::c_uint = 1 << 5;
const USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;

// _IOWR('!', 0, struct seccomp_notif), _IOWR('!', 1, struct seccomp_notif_resp),
// _IOW('!', 2, __u64), _IOW('!', 4, __u64)
const IOCTL_NOTIF_RECV: libc::c_ulong = 0xc050_2100;
const IOCTL_NOTIF_SEND: libc::c_ulong = 0xc018_2101;
const IOCTL_NOTIF_ID_VALID: libc::c_ulong = 0x4008_2102;
const IOCTL_NOTIF_SET_FLAGS: libc::c_ulong = 0x4008_2104;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SeccompData {
    pub nr: i32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

/// `struct seccomp_notif`: one trapped syscall.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Notification {
    pub id: u64,
    /// The caller's thread id, in the supervisor's PID namespace.
    pub pid: u32,
    pub flags: u32,
    pub data: SeccompData,
}

#[repr(C)]
#[derive(Default)]
struct Response {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct NotifSizes {
    notif: u16,
    resp: u16,
    data: u16,
}

/// Installs `prog` on the calling thread and returns the notification listener.
/// Sets no_new_privs first. Tries `WAIT_KILLABLE_RECV` (Linux 5.19) and falls back without
/// it; the second value says whether it was accepted. Does not allocate (runs in the child
/// between `clone` and `exec`).
pub fn install_filter(prog: &[Insn]) -> io::Result<(OwnedFd, bool)> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let fprog = libc::sock_fprog {
        len: prog.len() as libc::c_ushort,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    let attempt = |flags: libc::c_uint| -> io::Result<OwnedFd> {
        // SAFETY: `fprog` points at `prog`, which outlives the call; Insn is repr(C) with the
        // same layout as sock_filter (asserted in the tests below).
        let fd = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                flags,
                &fprog as *const libc::sock_fprog,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new listener descriptor that we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    };
    match attempt(FILTER_FLAG_NEW_LISTENER | FILTER_FLAG_WAIT_KILLABLE_RECV) {
        Ok(fd) => Ok((fd, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            attempt(FILTER_FLAG_NEW_LISTENER).map(|fd| (fd, false))
        }
        Err(e) => Err(e),
    }
}

/// Whether the kernel offers the user-notification action and our struct sizes match.
pub fn user_notification_available() -> io::Result<()> {
    let action: u32 = super::bpf::RET_USER_NOTIF;
    // SAFETY: GET_ACTION_AVAIL reads a u32 we own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_GET_ACTION_AVAIL,
            0,
            &action as *const u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut sizes = NotifSizes::default();
    // SAFETY: GET_NOTIF_SIZES writes into our struct of three u16.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_GET_NOTIF_SIZES,
            0,
            &mut sizes as *mut NotifSizes,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if usize::from(sizes.notif) > std::mem::size_of::<Notification>()
        || usize::from(sizes.resp) > std::mem::size_of::<Response>()
    {
        return Err(io::Error::other(format!(
            "the kernel's seccomp notification structures ({} / {} bytes) are larger than corral's",
            sizes.notif, sizes.resp
        )));
    }
    Ok(())
}

/// Asks the kernel to wake the caller on the supervisor's CPU when answered (Linux 6.6);
/// a pure optimisation, errors are ignored by callers.
pub fn set_sync_wake_up(listener: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: ioctl with an integer flags argument.
    let r = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            IOCTL_NOTIF_SET_FLAGS,
            USER_NOTIF_FD_SYNC_WAKE_UP,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits for the next notification. ENOENT means the caller vanished before we read it
/// (we wait again) — or that no process uses the filter any more: then the kernel answers
/// every `RECV` at once, and waiting again would spin, so the listener's `POLLHUP` ends
/// it. Other errors mean the listener is unusable.
pub fn receive(listener: BorrowedFd<'_>) -> io::Result<Notification> {
    loop {
        let mut n = Notification::default();
        // SAFETY: RECV fills a zeroed seccomp_notif we own (its size checked against the
        // kernel's in `user_notification_available`).
        let r = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                IOCTL_NOTIF_RECV,
                &mut n as *mut Notification,
            )
        };
        if r == 0 {
            return Ok(n);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ENOENT) if !hung_up(listener) => continue,
            _ => return Err(e),
        }
    }
}

/// Whether the filter behind `listener` has no process left (`POLLHUP`).
fn hung_up(listener: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: poll on one pollfd we own, without waiting.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && p.revents & libc::POLLHUP != 0
}

/// Whether notification `id` is still pending (its caller has not died and the pid was not
/// reused): checked after reading anything keyed by the caller's pid.
pub fn id_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    // SAFETY: ID_VALID reads a u64 we own.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            IOCTL_NOTIF_ID_VALID,
            &id as *const u64,
        ) == 0
    }
}

/// What the supervisor tells the kernel to do with a trapped call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The call returns this value (0 = success).
    Return(i64),
    /// The call fails with this errno.
    Fail(i32),
    // No "continue" (SECCOMP_USER_NOTIF_FLAG_CONTINUE): the kernel would act on the
    // descriptor number and the memory the caller can still change after the check. The
    // supervisor performs what it allows itself.
}

/// Answers notification `id`. ENOENT (the caller was killed meanwhile) is reported as
/// `Ok(false)`.
pub fn respond(listener: BorrowedFd<'_>, id: u64, verdict: Verdict) -> io::Result<bool> {
    let mut resp = Response {
        id,
        ..Default::default()
    };
    match verdict {
        Verdict::Return(v) => resp.val = v,
        Verdict::Fail(e) => resp.error = -e,
    }
    loop {
        // SAFETY: SEND reads a seccomp_notif_resp we own.
        let r = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                IOCTL_NOTIF_SEND,
                &mut resp as *mut Response,
            )
        };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ENOENT) => return Ok(false),
            _ => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structures_have_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<SeccompData>(), 64);
        assert_eq!(std::mem::size_of::<Notification>(), 80);
        assert_eq!(std::mem::size_of::<Response>(), 24);
        assert_eq!(
            std::mem::size_of::<Insn>(),
            std::mem::size_of::<libc::sock_filter>()
        );
        assert_eq!(
            std::mem::align_of::<Insn>(),
            std::mem::align_of::<libc::sock_filter>()
        );
    }
}
