//! The connect broker: the supervisor's side of the seccomp user notifications.
//!
//! A small pool of workers takes turns receiving notifications, each answering the one it
//! received (`workers`): a notification blocks only the calling thread, and a connect
//! that waits for its peer must not stall every other caller. Per trapped call, while the caller is stopped:
//!
//! 1. `pidfd_open` the caller (a thread id is retried with `PIDFD_THREAD`), check the
//!    notification is still valid, duplicate its socket with `pidfd_getfd`;
//! 2. every call the broker allows is *performed here*, on that duplicate, with addresses
//!    and data copied out of the caller's memory first: the kernel never acts on a
//!    descriptor number or a buffer the caller could still change (another thread can
//!    `dup2` a different socket over the number, or rewrite the address, between a check
//!    and the kernel's action). Nothing is answered with "continue";
//! 3. `connect` of a TCP socket to the proxy's documented address: resolve the caller's
//!    [`Identity`](corral_policy::Identity) (remembered per process and executable,
//!    `known`), bind the duplicate to an ephemeral port of a random loopback address
//!    port, record `client address → identity, socket inode` in the [`AttributionTable`],
//!    then connect the duplicate to the real proxy listener and answer with the result;
//! 4. unix sockets reach only the sandbox's own listeners ([`crate::unix_guard`]), netlink
//!    sockets the kernel; both are connected and sent on here (`deliver`); sends on a TCP
//!    socket are performed here without their (meaningless) address;
//! 5. any other inet destination, and every datagram on an inet socket (`dns_lookup` when
//!    it goes to port 53), is refused and reported as a [`Refusal`]; so are sockets the
//!    filter sends here (families and protocols the broker cannot reason about) and
//!    terminal input injection (`TIOCSTI`, `TIOCLINUX`);
//! 6. `listen`: performed here; in seccomp-only mode an inet socket must be bound to a
//!    loopback address (a public one would take connections from the network).

mod deliver;
mod known;
mod refuse;
mod workers;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;

use crate::attribution::AttributionTable;
use crate::identity::{IdentityError, IdentityResolver};
use crate::sys;
use crate::sys::net::{RawDestination, SocketKind};
use crate::sys::seccomp::{Notification, Verdict};
use crate::unix_guard::UnixGuard;
use refuse::syscall_name;

/// Where callers must connect (inside the sandbox) and where the supervisor really
/// connects their sockets.
#[derive(Clone, Copy, Debug)]
pub struct ProxyAddresses {
    /// The documented address, e.g. `127.0.0.1:3128`.
    pub advertised: SocketAddr,
    /// The listener the duplicates are connected to (`advertised` itself in namespace mode,
    /// where the listener lives in the sandbox's network namespace).
    pub actual: SocketAddr,
}

/// A refused call, for the decision log.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub pid: u32,
    /// The caller's executable, when it could be read.
    pub binary: Option<PathBuf>,
    /// The name it was started as, when that differs (display only).
    pub invoked_as: Option<String>,
    pub ancestors: Vec<PathBuf>,
    pub syscall: &'static str,
    /// The destination the caller named, when it had one.
    pub destination: Option<SocketAddr>,
    /// The unix socket it named (`unix:/run/docker.sock`, `unix:@name`), for `unix_socket`.
    pub unix: Option<String>,
    /// Short code: `direct_connect`, `datagram`, `dns_lookup`, `unix_socket`,
    /// `unsupported_socket`, `terminal_injection`, `attribution_collision`,
    /// `inbound_listener`, `netlink_destination`, or an identity code.
    pub code: &'static str,
    /// One sentence for humans.
    pub reason: String,
}

/// Receives refusals (the CLI logs them through the proxy's decision log).
pub type RefusalSink = Arc<dyn Fn(&Refusal) + Send + Sync>;

/// How long the supervisor waits for a brokered connect to the proxy to complete.
const CONNECT_WAIT_MS: i32 = 10_000;

pub struct Broker {
    listener: OwnedFd,
    table: Arc<AttributionTable>,
    identities: Arc<IdentityResolver>,
    known: known::KnownProcesses,
    proxy: ProxyAddresses,
    refusals: RefusalSink,
    unix: UnixGuard,
    /// Inet listeners only on loopback (seccomp-only mode, where the sandbox shares the
    /// host's network: a listener on a public address is reachable from anywhere).
    loopback_listeners_only: bool,
}

impl Broker {
    pub fn new(
        listener: OwnedFd,
        table: Arc<AttributionTable>,
        identities: Arc<IdentityResolver>,
        proxy: ProxyAddresses,
        refusals: RefusalSink,
        unix: UnixGuard,
        loopback_listeners_only: bool,
    ) -> Broker {
        Broker {
            listener,
            table,
            identities,
            known: known::KnownProcesses::default(),
            proxy,
            refusals,
            unix,
            loopback_listeners_only,
        }
    }

    fn valid(&self, n: &Notification) -> bool {
        sys::seccomp::id_valid(self.listener.as_fd(), n.id)
    }

    /// The answer for one notification, or `None` when the caller is already gone.
    fn decide(&self, n: &Notification) -> Option<Verdict> {
        let nr = i64::from(n.data.nr);
        match nr {
            libc::SYS_socket | libc::SYS_socketpair => return Some(self.refuse_socket(n, nr)),
            libc::SYS_ioctl => return Some(self.refuse_terminal_input(n)),
            libc::SYS_connect
            | libc::SYS_sendto
            | libc::SYS_sendmsg
            | libc::SYS_sendmmsg
            | libc::SYS_listen => {}
            _ => return Some(Verdict::Fail(libc::ENOSYS)),
        }
        let pidfd = match sys::pidfd_open(n.pid) {
            Ok(fd) => fd,
            // Gone: the notification died with it and needs no answer.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return None,
            // Anything else must still be answered (fail closed), or the caller would wait
            // forever.
            Err(e) => {
                tracing::warn!("cannot open a pidfd for pid {}: {e}", n.pid);
                return Some(Verdict::Fail(libc::EACCES));
            }
        };
        if !self.valid(n) {
            return None;
        }
        let target = n.data.args[0] as RawFd;
        let sock = match sys::pidfd_getfd(pidfd.as_fd(), target) {
            Ok(s) => s,
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => {
                return Some(Verdict::Fail(libc::EBADF))
            }
            Err(e) => {
                tracing::warn!("cannot duplicate descriptor {target} of pid {}: {e}", n.pid);
                return Some(Verdict::Fail(libc::EACCES));
            }
        };
        let kind = match sys::net::socket_kind(sock.as_fd()) {
            Ok(k) => k,
            Err(e) => return Some(Verdict::Fail(e.raw_os_error().unwrap_or(libc::ENOTSOCK))),
        };
        if nr == libc::SYS_listen {
            return Some(self.listen(n, sock.as_fd(), kind));
        }
        let verdict = match kind.domain {
            libc::AF_NETLINK | libc::AF_UNIX => {
                self.local(n, nr, pidfd.as_fd(), sock.as_fd(), kind)
            }
            libc::AF_INET | libc::AF_INET6 if nr == libc::SYS_connect => {
                self.connect(n, sock.as_fd(), kind)
            }
            libc::AF_INET | libc::AF_INET6 => self.send_inet(n, nr, sock.as_fd(), kind),
            _ => {
                self.refuse(
                    n,
                    syscall_name(nr),
                    None,
                    "unsupported_socket",
                    format!(
                        "sockets of address family {} cannot be used in the sandbox",
                        kind.domain
                    ),
                );
                Verdict::Fail(libc::EACCES)
            }
        };
        Some(verdict)
    }

    /// `listen`, performed here. In seccomp-only mode an inet socket must be bound to a
    /// loopback address first: one on a public address (or unbound, which `listen` binds to
    /// every address) would accept connections from the network that no proxy sees.
    fn listen(&self, n: &Notification, sock: BorrowedFd<'_>, kind: SocketKind) -> Verdict {
        let inet = kind.domain == libc::AF_INET || kind.domain == libc::AF_INET6;
        if inet && self.loopback_listeners_only {
            let bound = sys::net::local_addr(sock).ok();
            let loopback = bound.is_some_and(|a| {
                a.port() != 0
                    && match a.ip() {
                        IpAddr::V6(v6) => v6
                            .to_ipv4_mapped()
                            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
                        v4 => v4.is_loopback(),
                    }
            });
            if !loopback {
                let shown = bound.map_or("an unbound socket".to_string(), |a| a.to_string());
                self.refuse(n, "listen", bound, "inbound_listener", format!(
                    "listening on {shown} refused: in seccomp-only mode the sandbox shares the host's network, so only loopback addresses may be served (bind to 127.0.0.1 first)"
                ));
                return Verdict::Fail(libc::EACCES);
            }
        }
        match sys::net::listen(sock, n.data.args[1] as i32) {
            Ok(()) => Verdict::Return(0),
            Err(e) => Verdict::Fail(e.raw_os_error().unwrap_or(libc::EINVAL)),
        }
    }

    /// The address a `connect` names, copied out of the caller's memory.
    fn connect_name(&self, n: &Notification) -> Result<Vec<u8>, i32> {
        let len = n.data.args[2].min(crate::message::MAX_NAME as u64);
        let bytes = crate::message::read_name(n.pid, n.data.args[1], len)?.unwrap_or_default();
        if !self.valid(n) {
            return Err(libc::ESRCH);
        }
        Ok(bytes)
    }

    fn connect(&self, n: &Notification, sock: BorrowedFd<'_>, kind: SocketKind) -> Verdict {
        let dest = match self.connect_name(n) {
            Ok(d) => sys::net::parse_sockaddr(&d),
            Err(e) => return Verdict::Fail(e),
        };
        let addr = match dest {
            RawDestination::Unspecified => {
                // Dissolving an association: perform it on the shared file description.
                return match sys::net::connect_unspecified(sock) {
                    Ok(()) => Verdict::Return(0),
                    Err(e) => Verdict::Fail(e.raw_os_error().unwrap_or(libc::EINVAL)),
                };
            }
            RawDestination::Invalid { family: None } => return Verdict::Fail(libc::EINVAL),
            RawDestination::Invalid { family: Some(_) } => {
                return Verdict::Fail(libc::EAFNOSUPPORT)
            }
            RawDestination::Inet(a) => a,
        };
        if !is_tcp(kind) {
            self.refuse_datagram(n, "connect", Some(addr));
            return Verdict::Fail(libc::EACCES);
        }
        if !self.is_proxy(addr) {
            self.refuse(n, "connect", Some(addr), "direct_connect", format!(
                "direct connection to {addr} refused: the sandbox reaches the network only through the proxy at {} (HTTP_PROXY/HTTPS_PROXY are set)",
                self.proxy.advertised
            ));
            return Verdict::Fail(libc::ECONNREFUSED);
        }
        let resolved = match self.known.identity(&self.identities, n.pid) {
            Ok(r) => r,
            Err(IdentityError::Gone) => return Verdict::Fail(libc::ESRCH),
            Err(e) => {
                // The executable the refused identity is about, not a second reading of
                // the link (the caller may have executed another program meanwhile).
                let binary = e.executable().map(|p| p.to_path_buf());
                self.report(
                    n,
                    "connect",
                    Some(addr),
                    None,
                    e.code(),
                    e.to_string(),
                    binary,
                );
                return Verdict::Fail(libc::EACCES);
            }
        };
        if !self.valid(n) {
            return Verdict::Fail(libc::ESRCH);
        }
        self.known.remember(n.pid, &resolved);
        self.connect_to_proxy(n, sock, kind, resolved.identity, addr)
    }

    fn connect_to_proxy(
        &self,
        n: &Notification,
        sock: BorrowedFd<'_>,
        kind: SocketKind,
        identity: corral_policy::Identity,
        requested: SocketAddr,
    ) -> Verdict {
        let v6 = kind.domain == libc::AF_INET6;
        if v6 && sys::net::is_v6only(sock).unwrap_or(false) {
            // The proxy listens on IPv4, which a v6-only socket cannot reach (not even as a
            // v4-mapped address).
            return Verdict::Fail(libc::ENETUNREACH);
        }
        let mapped = |ip: Ipv4Addr| {
            if v6 {
                IpAddr::V6(ip.to_ipv6_mapped())
            } else {
                IpAddr::V4(ip)
            }
        };
        let target = match self.proxy.actual.ip() {
            IpAddr::V4(ip) => SocketAddr::new(mapped(ip), self.proxy.actual.port()),
            IpAddr::V6(_) => self.proxy.actual,
        };
        // A random address of 127.0.0.0/8 as the client's: the ephemeral port is then
        // found at once even when the host's loopback is full of TIME-WAIT sockets on
        // 127.0.0.1 (seccomp-only mode shares it), which made every connect take 1.4 ms.
        let mut bound = false;
        for ip in [random_loopback(), Ipv4Addr::LOCALHOST] {
            match sys::net::bind(sock, &SocketAddr::new(mapped(ip), 0)) {
                Ok(()) => {
                    bound = true;
                    break;
                }
                // Already bound by the caller: its port is known already.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    bound = true;
                    break;
                }
                Err(_) if ip != Ipv4Addr::LOCALHOST => {}
                Err(e) => return Verdict::Fail(e.raw_os_error().unwrap_or(libc::EADDRNOTAVAIL)),
            }
        }
        if !bound {
            return Verdict::Fail(libc::EADDRNOTAVAIL);
        }
        let client = match sys::net::local_addr(sock) {
            Ok(a) if a.port() != 0 => a,
            Ok(_) => return Verdict::Fail(libc::EINVAL),
            Err(e) => return Verdict::Fail(e.raw_os_error().unwrap_or(libc::EINVAL)),
        };
        let inode = match sys::net::socket_inode(sock) {
            Ok(i) => i,
            Err(e) => return Verdict::Fail(e.raw_os_error().unwrap_or(libc::EINVAL)),
        };
        // Recorded before the connect: the proxy can never accept it unattributed. A record
        // for the same client address that is still pending is never replaced.
        if self
            .table
            .record(client, inode, identity, requested)
            .is_err()
        {
            self.refuse(
                n,
                "connect",
                Some(requested),
                "attribution_collision",
                format!(
                "a connection from {client} to the proxy is already pending attribution: refused"
            ),
            );
            return Verdict::Fail(libc::EADDRINUSE);
        }
        let result = match sys::net::connect(sock, &target) {
            Ok(()) => Ok(()),
            Err(e) => match e.raw_os_error() {
                Some(libc::EINPROGRESS) => self.finish_pending(sock),
                Some(libc::EISCONN) => {
                    if sys::net::peer_addr(sock)
                        .map(|p| same_endpoint(p, target))
                        .unwrap_or(false)
                    {
                        Ok(())
                    } else {
                        Err(libc::EISCONN)
                    }
                }
                other => Err(other.unwrap_or(libc::ECONNREFUSED)),
            },
        };
        match result {
            Ok(()) => Verdict::Return(0),
            Err(libc::EINPROGRESS) => Verdict::Fail(libc::EINPROGRESS),
            Err(e) => {
                if e != libc::EALREADY {
                    self.table.forget(client);
                }
                Verdict::Fail(e)
            }
        }
    }

    /// A connect in progress: the duplicate shares the caller's file description, so a
    /// non-blocking caller's connect returns `EINPROGRESS` here too. Wait for it, on a
    /// worker, so the caller gets the real result.
    fn finish_pending(&self, sock: BorrowedFd<'_>) -> Result<(), i32> {
        match sys::net::wait_writable(sock, CONNECT_WAIT_MS) {
            Ok(true) => match sys::net::take_error(sock) {
                Ok(None) => Ok(()),
                Ok(Some(e)) => Err(e.raw_os_error().unwrap_or(libc::ECONNREFUSED)),
                Err(e) => Err(e.raw_os_error().unwrap_or(libc::ECONNREFUSED)),
            },
            Ok(false) => {
                if sys::net::is_nonblocking(sock).unwrap_or(false) {
                    Err(libc::EINPROGRESS)
                } else {
                    Err(libc::ETIMEDOUT)
                }
            }
            Err(e) => Err(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    }

    /// `sendto`/`sendmsg`/`sendmmsg` on an inet socket. On TCP the kernel ignores the
    /// address (`MSG_FASTOPEN`, the one exception, is refused by the filter), so the copied
    /// data is sent here without one; anything else is a datagram, refused.
    fn send_inet(
        &self,
        n: &Notification,
        nr: i64,
        sock: BorrowedFd<'_>,
        kind: SocketKind,
    ) -> Verdict {
        let msg = match crate::message::read_call(n.pid, nr, &n.data.args) {
            Ok(m) => m,
            Err(e) => return Verdict::Fail(e),
        };
        if !is_tcp(kind) {
            let dest = match msg.name.as_deref().map(sys::net::parse_sockaddr) {
                Some(RawDestination::Inet(a)) => Some(a),
                _ => None,
            };
            self.refuse_datagram(n, syscall_name(nr), dest);
            return Verdict::Fail(libc::EACCES);
        }
        if !msg.control.is_empty() {
            // Control messages would be applied with the supervisor's privileges.
            return Verdict::Fail(libc::EINVAL);
        }
        if !self.valid(n) {
            return Verdict::Fail(libc::ESRCH);
        }
        self.deliver(n, nr, sock, kind, None, &msg, &[])
    }

    fn is_proxy(&self, addr: SocketAddr) -> bool {
        if addr.port() != self.proxy.advertised.port() {
            return false;
        }
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        ip == self.proxy.advertised.ip()
            || ip.is_loopback() && self.proxy.advertised.ip().is_loopback()
    }
}

/// Plain TCP: what the proxy speaks and Landlock's TCP rules cover (MPTCP is neither, and
/// the filter refuses it at `socket()`).
fn is_tcp(kind: SocketKind) -> bool {
    kind.ty == libc::SOCK_STREAM && kind.protocol == libc::IPPROTO_TCP
}

fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    let norm = |s: SocketAddr| match s.ip() {
        IpAddr::V6(v6) => (
            v6.to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            s.port(),
        ),
        v4 => (v4, s.port()),
    };
    norm(a) == norm(b)
}

/// An address of 127.0.0.0/8 other than the network and broadcast ones, chosen at random.
fn random_loopback() -> Ipv4Addr {
    use std::hash::{BuildHasher, Hasher};
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let [_, a, b, c, ..] = h.finish().to_le_bytes();
    let c = c.clamp(1, 254);
    Ipv4Addr::new(127, a, b, c)
}
