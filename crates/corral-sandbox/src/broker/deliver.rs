//! Calls on unix and netlink sockets, and sends on TCP sockets, performed by the supervisor
//! on its duplicate of the caller's socket with what it copied out of the caller's memory.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use super::{syscall_name, Broker};
use crate::message::{self, Control, Message};
use crate::sys;
use crate::sys::net::SocketKind;
use crate::sys::seccomp::{Notification, Verdict};
use crate::unix_guard::UnixCheck;

/// How long one wait for room in a blocking socket lasts before the caller's notification
/// is checked again (a caller interrupted by a signal stops the wait).
const SEND_WAIT_MS: i32 = 200;

/// Where a unix or netlink call goes, once checked.
enum Destination {
    /// The address the caller wrote, copied.
    AsWritten(Vec<u8>),
    /// A socket file the guard checked, addressed through `/proc/self/fd/N`.
    Checked(std::fs::File),
}

impl Destination {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Destination::AsWritten(b) => b.clone(),
            Destination::Checked(f) => {
                let path = format!("/proc/self/fd/{}", f.as_raw_fd());
                let mut v = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
                v.extend_from_slice(path.as_bytes());
                v.push(0);
                v
            }
        }
    }
}

fn errno(e: std::io::Error, otherwise: i32) -> i32 {
    e.raw_os_error().unwrap_or(otherwise)
}

impl Broker {
    /// `connect`, `sendto`, `sendmsg`, `sendmmsg` on a unix or netlink socket.
    pub(super) fn local(
        &self,
        n: &Notification,
        nr: i64,
        pidfd: BorrowedFd<'_>,
        sock: BorrowedFd<'_>,
        kind: SocketKind,
    ) -> Verdict {
        let unix = kind.domain == libc::AF_UNIX;
        if nr == libc::SYS_connect {
            let name = match self.connect_name(n) {
                Ok(b) => b,
                Err(e) => return Verdict::Fail(e),
            };
            let dest = if unix {
                match self.unix_destination(n, nr, name) {
                    Ok(d) => d,
                    Err(v) => return v,
                }
            } else {
                match self.netlink_destination(n, nr, name) {
                    Ok(d) => d,
                    Err(v) => return v,
                }
            };
            return match sys::net::connect_raw(sock, &dest.bytes()) {
                Ok(()) => Verdict::Return(0),
                Err(e) => Verdict::Fail(errno(e, libc::ECONNREFUSED)),
            };
        }
        let msg = match message::read_call(n.pid, nr, &n.data.args) {
            Ok(m) => m,
            Err(e) => return Verdict::Fail(e),
        };
        let dest = match msg.name.clone() {
            None => None,
            Some(name) if unix => match self.unix_destination(n, nr, name) {
                Ok(d) => Some(d),
                Err(v) => return v,
            },
            Some(name) => match self.netlink_destination(n, nr, name) {
                Ok(d) => Some(d),
                Err(v) => return v,
            },
        };
        // The descriptors stay open until the message is sent.
        let (control, _passed) = match passed_control(pidfd, &msg.control, unix) {
            Ok(c) => c,
            Err(e) => return Verdict::Fail(e),
        };
        if !self.valid(n) {
            return Verdict::Fail(libc::ESRCH);
        }
        let name = dest.as_ref().map(Destination::bytes);
        self.deliver(n, nr, sock, kind, name.as_deref(), &msg, &control)
    }

    fn unix_destination(
        &self,
        n: &Notification,
        nr: i64,
        name: Vec<u8>,
    ) -> Result<Destination, Verdict> {
        let Some(addr) = sys::net::parse_unix_sockaddr(&name) else {
            return Err(Verdict::Fail(libc::EINVAL));
        };
        match self.unix.check(n.pid, &addr) {
            UnixCheck::AsWritten => Ok(Destination::AsWritten(name)),
            UnixCheck::Reach(file) => Ok(Destination::Checked(file)),
            UnixCheck::Refuse {
                target,
                reason,
                errno,
            } => {
                if errno == libc::EACCES {
                    self.refuse_unix(n, syscall_name(nr), target, reason);
                }
                Err(Verdict::Fail(errno))
            }
        }
    }

    /// A netlink address the supervisor may use for the caller: the kernel only (port 0, no
    /// multicast groups). The kernel checks a request against the credentials of the
    /// socket's opener (the caller), but a message to another process, or a group
    /// subscription, would be checked against the supervisor's, and carry them.
    fn netlink_destination(
        &self,
        n: &Notification,
        nr: i64,
        name: Vec<u8>,
    ) -> Result<Destination, Verdict> {
        let word = |at: usize| {
            name.get(at..at + 4)
                .map(|b| u32::from_ne_bytes(b.try_into().unwrap_or_default()))
        };
        let family = name.get(0..2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
        if family == Some(libc::AF_UNSPEC as u16) && nr == libc::SYS_connect {
            return Ok(Destination::AsWritten(name));
        }
        if family != Some(libc::AF_NETLINK as u16) || name.len() < 12 {
            return Err(Verdict::Fail(libc::EINVAL));
        }
        if word(4) != Some(0) || word(8) != Some(0) {
            self.refuse(n, syscall_name(nr), None, "netlink_destination", format!(
                "netlink to port {} / groups {:#x} refused: the sandbox may address the kernel only",
                word(4).unwrap_or(0),
                word(8).unwrap_or(0)
            ));
            return Err(Verdict::Fail(libc::EPERM));
        }
        Ok(Destination::AsWritten(name))
    }

    /// Sends the copied message on the duplicate, as the caller would have: its flags
    /// apply, and a blocking caller waits here for room, in short rounds that end when it
    /// is interrupted.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn deliver(
        &self,
        n: &Notification,
        nr: i64,
        sock: BorrowedFd<'_>,
        kind: SocketKind,
        name: Option<&[u8]>,
        msg: &Message,
        control: &[u8],
    ) -> Verdict {
        if nr == libc::SYS_sendmmsg && n.data.args[2] as u32 == 0 {
            return Verdict::Return(0);
        }
        if msg.truncated && kind.ty != libc::SOCK_STREAM {
            return Verdict::Fail(libc::EMSGSIZE);
        }
        let flags = n.data.args[if nr == libc::SYS_sendmsg { 2 } else { 3 }] as i32;
        let blocking =
            flags & libc::MSG_DONTWAIT == 0 && !sys::net::is_nonblocking(sock).unwrap_or(true);
        // Never a SIGPIPE in the supervisor: the caller gets it below if it asked for it.
        // Never MSG_ZEROCOPY: the kernel would send from the supervisor's copy after it is
        // freed and reused, i.e. the supervisor's memory.
        let ours = (flags & !libc::MSG_ZEROCOPY) | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        loop {
            match sys::net::send_message(sock, name, &msg.data, control, ours) {
                Ok(sent) => return self.sent(n, nr, sent),
                Err(e) => match errno(e, libc::EIO) {
                    libc::EAGAIN if blocking => {
                        let _ = sys::net::wait_writable(sock, SEND_WAIT_MS);
                        if !self.valid(n) {
                            return Verdict::Fail(libc::EINTR);
                        }
                        // Room enough for poll may not be room enough for a datagram.
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    libc::EPIPE if flags & libc::MSG_NOSIGNAL == 0 => {
                        let _ = sys::kill(n.pid, libc::SIGPIPE);
                        return Verdict::Fail(libc::EPIPE);
                    }
                    e => return Verdict::Fail(e),
                },
            }
        }
    }

    /// The answer to a performed send; for `sendmmsg`, one message went, and its
    /// `msg_len` is written back.
    fn sent(&self, n: &Notification, nr: i64, sent: usize) -> Verdict {
        if nr != libc::SYS_sendmmsg {
            return Verdict::Return(sent as i64);
        }
        let at = n.data.args[1] + message::MMSGHDR_LEN_OFFSET;
        match sys::write_process_memory(n.pid, at, &(sent as u32).to_ne_bytes()) {
            Ok(()) => Verdict::Return(1),
            Err(_) => Verdict::Fail(libc::EFAULT),
        }
    }
}

/// The caller's control messages as the supervisor sends them. Descriptors passed with
/// `SCM_RIGHTS` on a unix socket are taken from the caller (`pidfd_getfd`) and passed as
/// ours. Nothing else is sent: it would carry the supervisor's credentials or privileges
/// instead of the caller's (`SCM_CREDENTIALS`, or `SO_MARK` on inet sockets).
fn passed_control(
    pidfd: BorrowedFd<'_>,
    control: &[Control],
    unix: bool,
) -> Result<(Vec<u8>, Vec<OwnedFd>), i32> {
    let mut held = Vec::new();
    let mut out = Vec::new();
    for c in control {
        let rights = c.level == libc::SOL_SOCKET && c.kind == libc::SCM_RIGHTS;
        if !(unix && rights) {
            let creds = c.level == libc::SOL_SOCKET && c.kind == libc::SCM_CREDENTIALS;
            return Err(if creds { libc::EPERM } else { libc::EINVAL });
        }
        let mut data = Vec::new();
        for fd in c.data.chunks_exact(4) {
            let fd = i32::from_ne_bytes(fd.try_into().unwrap_or_default());
            let taken = sys::pidfd_getfd(pidfd, fd).map_err(|e| errno(e, libc::EBADF))?;
            data.extend(taken.as_raw_fd().to_ne_bytes());
            held.push(taken);
        }
        out.push(Control {
            level: c.level,
            kind: c.kind,
            data,
        });
    }
    Ok((message::control_bytes(&out), held))
}
