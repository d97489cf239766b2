//! Refusals: what the broker logs when it fails a call, and the names it logs them by.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{Broker, Refusal};
use crate::sys;
use crate::sys::seccomp::{Notification, Verdict};

impl Broker {
    /// A `socket`/`socketpair` the filter did not let through: log it and fail it.
    pub(super) fn refuse_socket(&self, n: &Notification, nr: i64) -> Verdict {
        let [domain, ty, protocol, ..] = n.data.args.map(|a| a as i32);
        let inet = domain == libc::AF_INET || domain == libc::AF_INET6;
        let what = describe_socket(domain, ty, protocol);
        let syscall = if nr == libc::SYS_socket {
            "socket"
        } else {
            "socketpair"
        };
        self.refuse(n, syscall, None, "unsupported_socket", format!(
            "{syscall}({what}) refused: the sandbox may use unix and netlink sockets, and inet sockets only as plain TCP or UDP, which the broker can reason about"
        ));
        Verdict::Fail(if inet && nr == libc::SYS_socket {
            libc::EPROTONOSUPPORT
        } else {
            libc::EAFNOSUPPORT
        })
    }

    /// `ioctl(TIOCSTI/TIOCLINUX)`: pushing input into the terminal would have the user's
    /// shell run it after corral exits, outside the sandbox.
    pub(super) fn refuse_terminal_input(&self, n: &Notification) -> Verdict {
        let name = if n.data.args[1] as u32 == sys::bpf::TIOCSTI {
            "TIOCSTI"
        } else {
            "TIOCLINUX"
        };
        self.refuse(n, "ioctl", None, "terminal_injection", format!(
            "ioctl {name} refused: it pushes input into the terminal, which your shell would run outside the sandbox"
        ));
        Verdict::Fail(libc::EPERM)
    }

    /// Logs a refused datagram (or non-TCP connect). Port 53 is a name lookup: told apart,
    /// because proxy-aware clients that look names up anyway (Bun does) need no answer.
    pub(super) fn refuse_datagram(
        &self,
        n: &Notification,
        syscall: &'static str,
        dest: Option<SocketAddr>,
    ) {
        let proxy = self.proxy.advertised;
        match dest {
            Some(a) if a.port() == 53 => self.refuse(n, syscall, dest, "dns_lookup", format!(
                "name lookup sent to {a} refused: the sandbox has no DNS; programs that use the proxy at {proxy} (HTTPS_PROXY) do not need it, the proxy resolves names"
            )),
            Some(a) => self.refuse(n, syscall, dest, "datagram", format!(
                "datagram to {a} refused: the sandbox reaches the network only through the proxy at {proxy}"
            )),
            None => self.refuse(n, syscall, None, "datagram", format!(
                "datagram refused: the sandbox reaches the network only through the proxy at {proxy}"
            )),
        }
    }

    pub(super) fn refuse(
        &self,
        n: &Notification,
        syscall: &'static str,
        destination: Option<SocketAddr>,
        code: &'static str,
        reason: String,
    ) {
        self.report(n, syscall, destination, None, code, reason, None)
    }

    pub(super) fn refuse_unix(
        &self,
        n: &Notification,
        syscall: &'static str,
        target: String,
        reason: String,
    ) {
        self.report(n, syscall, None, Some(target), "unix_socket", reason, None)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn report(
        &self,
        n: &Notification,
        syscall: &'static str,
        destination: Option<SocketAddr>,
        unix: Option<String>,
        code: &'static str,
        reason: String,
        binary: Option<PathBuf>,
    ) {
        let binary = binary.or_else(|| {
            self.identities
                .executable(n.pid)
                .ok()
                .or_else(|| std::fs::read_link(format!("/proc/{}/exe", n.pid)).ok())
        });
        let refusal = Refusal {
            pid: n.pid,
            invoked_as: binary
                .as_deref()
                .and_then(|b| corral_policy::identity::invoked_as(n.pid, b)),
            binary,
            ancestors: self.identities.ancestors(n.pid),
            syscall,
            destination,
            unix,
            code,
            reason,
        };
        (self.refusals)(&refusal);
    }
}

/// `AF_INET, SOCK_STREAM, IPPROTO_MPTCP` for the log, with names where known.
fn describe_socket(domain: i32, ty: i32, protocol: i32) -> String {
    let family = match domain {
        libc::AF_INET => "AF_INET".to_string(),
        libc::AF_INET6 => "AF_INET6".to_string(),
        libc::AF_PACKET => "AF_PACKET".to_string(),
        libc::AF_VSOCK => "AF_VSOCK".to_string(),
        libc::AF_XDP => "AF_XDP".to_string(),
        libc::AF_TIPC => "AF_TIPC".to_string(),
        libc::AF_ALG => "AF_ALG".to_string(),
        other => format!("family {other}"),
    };
    let kind = match ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) {
        libc::SOCK_STREAM => "SOCK_STREAM".to_string(),
        libc::SOCK_DGRAM => "SOCK_DGRAM".to_string(),
        libc::SOCK_RAW => "SOCK_RAW".to_string(),
        libc::SOCK_SEQPACKET => "SOCK_SEQPACKET".to_string(),
        other => format!("type {other}"),
    };
    let proto = match protocol {
        262 => "IPPROTO_MPTCP".to_string(),
        libc::IPPROTO_SCTP => "IPPROTO_SCTP".to_string(),
        libc::IPPROTO_UDPLITE => "IPPROTO_UDPLITE".to_string(),
        libc::IPPROTO_ICMP => "IPPROTO_ICMP".to_string(),
        other => other.to_string(),
    };
    format!("{family}, {kind}, {proto}")
}

pub(super) fn syscall_name(nr: i64) -> &'static str {
    match nr {
        libc::SYS_connect => "connect",
        libc::SYS_sendto => "sendto",
        libc::SYS_sendmsg => "sendmsg",
        libc::SYS_sendmmsg => "sendmmsg",
        libc::SYS_ioctl => "ioctl",
        libc::SYS_listen => "listen",
        _ => "syscall",
    }
}
