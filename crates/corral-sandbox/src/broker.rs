//! The connect broker: the supervisor's side of the seccomp user notifications.
//!
//! One thread receives notifications and hands each to a small pool of workers, so a
//! blocking connect never stalls other callers (broker notes, gotcha 4). Per trapped call,
//! while the caller is stopped:
//!
//! 1. `pidfd_open` the caller (a thread id is retried with `PIDFD_THREAD`), check the
//!    notification is still valid, duplicate its socket with `pidfd_getfd`;
//! 2. netlink sockets: the kernel performs the call (`CONTINUE`); unix sockets: only the
//!    sandbox's own listeners may be reached ([`crate::unix_guard`]), a host socket is
//!    refused (`unix_socket`);
//! 3. `connect` of a TCP socket to the proxy's documented address: resolve the caller's
//!    [`Identity`](corral_policy::Identity), bind the duplicate to an ephemeral loopback
//!    port, record `port → identity` in the [`AttributionTable`], then connect the
//!    duplicate to the real proxy listener and answer with the result. The address the
//!    supervisor connects to is its own, so rewriting the caller's buffer changes nothing;
//! 4. any other inet destination, and every datagram with a destination (`dns_lookup` when it
//!    goes to port 53), is refused and
//!    reported as a [`Refusal`].

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::attribution::AttributionTable;
use crate::identity::{IdentityError, IdentityResolver};
use crate::sys;
use crate::sys::net::{RawDestination, SocketKind};
use crate::sys::seccomp::{Notification, Verdict};
use crate::unix_guard::{UnixCheck, UnixGuard};

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

/// A refused direct connection or datagram, for the decision log.
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
    /// `unsupported_socket`, or an identity code.
    pub code: &'static str,
    /// One sentence for humans.
    pub reason: String,
}

/// Receives refusals (the CLI logs them through the proxy's decision log).
pub type RefusalSink = Arc<dyn Fn(&Refusal) + Send + Sync>;

/// How long the supervisor waits for a brokered connect to the proxy to complete.
const CONNECT_WAIT_MS: i32 = 10_000;
/// Longest socket address read from a caller.
const MAX_SOCKADDR: usize = 128;

pub struct Broker {
    listener: OwnedFd,
    table: Arc<AttributionTable>,
    identities: Arc<IdentityResolver>,
    proxy: ProxyAddresses,
    refusals: RefusalSink,
    unix: UnixGuard,
}

impl Broker {
    pub fn new(
        listener: OwnedFd,
        table: Arc<AttributionTable>,
        identities: Arc<IdentityResolver>,
        proxy: ProxyAddresses,
        refusals: RefusalSink,
        unix: UnixGuard,
    ) -> Broker {
        Broker {
            listener,
            table,
            identities,
            proxy,
            refusals,
            unix,
        }
    }

    /// Starts the receiving thread and `workers` worker threads. They run until the process
    /// exits (or every sandboxed process is gone and the listener reports an error).
    pub fn spawn(self, workers: usize) -> io::Result<()> {
        let _ = sys::seccomp::set_sync_wake_up(self.listener.as_fd());
        let broker = Arc::new(self);
        let (tx, rx) = mpsc::channel::<Notification>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            let b = broker.clone();
            std::thread::Builder::new()
                .name(format!("corral-broker-{i}"))
                .spawn(move || loop {
                    let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    match next {
                        Ok(n) => b.handle(&n),
                        Err(_) => return,
                    }
                })?;
        }
        std::thread::Builder::new()
            .name("corral-broker".into())
            .spawn(move || loop {
                match sys::seccomp::receive(broker.listener.as_fd()) {
                    Ok(n) => {
                        if tx.send(n).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!("seccomp listener closed: {e}");
                        return;
                    }
                }
            })?;
        Ok(())
    }

    fn handle(&self, n: &Notification) {
        let Some(verdict) = self.decide(n) else {
            return;
        };
        if let Err(e) = sys::seccomp::respond(self.listener.as_fd(), n.id, verdict) {
            tracing::warn!("answering a trapped call of pid {}: {e}", n.pid);
        }
    }

    fn valid(&self, n: &Notification) -> bool {
        sys::seccomp::id_valid(self.listener.as_fd(), n.id)
    }

    /// The answer for one notification, or `None` when the caller is already gone.
    fn decide(&self, n: &Notification) -> Option<Verdict> {
        let nr = i64::from(n.data.nr);
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
        match kind.domain {
            libc::AF_NETLINK => return Some(Verdict::Continue),
            libc::AF_UNIX => return Some(self.unix(n, nr, sock.as_fd())),
            libc::AF_INET | libc::AF_INET6 => {}
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
                return Some(Verdict::Fail(libc::EACCES));
            }
        }
        let verdict = if nr == libc::SYS_connect {
            self.connect(n, sock.as_fd(), kind)
        } else {
            self.send(n, nr, kind)
        };
        Some(verdict)
    }

    fn read_sockaddr(&self, n: &Notification, addr: u64, len: u64) -> Result<RawDestination, i32> {
        Ok(sys::net::parse_sockaddr(
            &self.sockaddr_bytes(n, addr, len)?,
        ))
    }

    fn sockaddr_bytes(&self, n: &Notification, addr: u64, len: u64) -> Result<Vec<u8>, i32> {
        let len = (len as usize).min(MAX_SOCKADDR);
        let bytes = sys::read_process_memory(n.pid, addr, len).map_err(|_| libc::EFAULT)?;
        if !self.valid(n) {
            return Err(libc::ESRCH);
        }
        Ok(bytes)
    }

    /// A unix-domain socket: see [`crate::unix_guard`]. A connect to a socket of the
    /// sandbox is performed here, on the descriptor that was checked; a datagram to one is
    /// sent by the kernel (the address is read again then: a swapped symlink could send it
    /// elsewhere, which is a datagram on the host, never a connection).
    fn unix(&self, n: &Notification, nr: i64, sock: BorrowedFd<'_>) -> Verdict {
        let named = if nr == libc::SYS_connect {
            Some((n.data.args[1], n.data.args[2]))
        } else if nr == libc::SYS_sendto {
            Some((n.data.args[4], n.data.args[5])).filter(|(p, l)| *p != 0 && *l != 0)
        } else {
            match self.msghdr_name(n) {
                Ok(v) => v,
                Err(e) => return Verdict::Fail(e),
            }
        };
        let Some((ptr, len)) = named else {
            // A send on a connected socket: its peer was checked when it connected.
            return Verdict::Continue;
        };
        let bytes = match self.sockaddr_bytes(n, ptr, len) {
            Ok(b) => b,
            Err(e) => return Verdict::Fail(e),
        };
        let Some(addr) = sys::net::parse_unix_sockaddr(&bytes) else {
            return Verdict::Fail(libc::EINVAL);
        };
        match self.unix.check(n.pid, &addr) {
            UnixCheck::Continue => Verdict::Continue,
            UnixCheck::Refuse {
                target,
                reason,
                errno,
            } => {
                if errno == libc::EACCES {
                    self.refuse_unix(n, syscall_name(nr), target, reason);
                }
                Verdict::Fail(errno)
            }
            UnixCheck::Reach(file) if nr == libc::SYS_connect => {
                let path = format!("/proc/self/fd/{}", file.as_raw_fd());
                match sys::net::connect_unix(sock, path.as_bytes()) {
                    Ok(()) => Verdict::Return(0),
                    Err(e) => Verdict::Fail(e.raw_os_error().unwrap_or(libc::ECONNREFUSED)),
                }
            }
            UnixCheck::Reach(_) => Verdict::Continue,
        }
    }

    fn connect(&self, n: &Notification, sock: BorrowedFd<'_>, kind: SocketKind) -> Verdict {
        let dest = match self.read_sockaddr(n, n.data.args[1], n.data.args[2]) {
            Ok(d) => d,
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
        let identity = match self.identities.resolve(n.pid) {
            Ok(i) => i,
            Err(IdentityError::Gone) => return Verdict::Fail(libc::ESRCH),
            Err(e) => {
                self.refuse(n, "connect", Some(addr), e.code(), e.to_string());
                return Verdict::Fail(libc::EACCES);
            }
        };
        if !self.valid(n) {
            return Verdict::Fail(libc::ESRCH);
        }
        self.connect_to_proxy(sock, kind, identity, addr)
    }

    fn connect_to_proxy(
        &self,
        sock: BorrowedFd<'_>,
        kind: SocketKind,
        identity: corral_policy::Identity,
        requested: SocketAddr,
    ) -> Verdict {
        let v6 = kind.domain == libc::AF_INET6;
        if v6 && sys::net::is_v6only(sock).unwrap_or(false) {
            // The proxy listens on IPv4; a v6-only socket cannot reach it (gotcha 6).
            return Verdict::Fail(libc::ENETUNREACH);
        }
        let (bind_to, target) = if v6 {
            let mapped = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
                v6 => v6,
            };
            (
                SocketAddr::new(mapped(IpAddr::V4(Ipv4Addr::LOCALHOST)), 0),
                SocketAddr::new(mapped(self.proxy.actual.ip()), self.proxy.actual.port()),
            )
        } else {
            (
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
                self.proxy.actual,
            )
        };
        match sys::net::bind(sock, &bind_to) {
            Ok(()) => {}
            // Already bound by the caller: its port is known already.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Verdict::Fail(e.raw_os_error().unwrap_or(libc::EADDRNOTAVAIL)),
        }
        let port = match sys::net::local_addr(sock) {
            Ok(a) if a.port() != 0 => a.port(),
            Ok(_) => return Verdict::Fail(libc::EINVAL),
            Err(e) => return Verdict::Fail(e.raw_os_error().unwrap_or(libc::EINVAL)),
        };
        // Recorded before the connect: the proxy can never accept it unattributed.
        self.table.record(port, identity, requested);
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
                    self.table.forget(port);
                }
                Verdict::Fail(e)
            }
        }
    }

    /// A non-blocking connect in progress (gotcha 3): wait for it here, on a worker.
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

    /// `sendto`/`sendmsg`/`sendmmsg` on an inet socket.
    fn send(&self, n: &Notification, nr: i64, kind: SocketKind) -> Verdict {
        if is_tcp(kind) {
            // A TCP socket ignores a send's address unless MSG_FASTOPEN is set, which the
            // filter refuses before we are asked; so the kernel may perform it.
            return Verdict::Continue;
        }
        let dest = match nr {
            n_ if n_ == libc::SYS_sendto => {
                self.read_sockaddr(n, n.data.args[4], n.data.args[5]).ok()
            }
            _ => self.msghdr_destination(n).ok().flatten(),
        };
        let dest = match dest {
            Some(RawDestination::Inet(a)) => Some(a),
            _ => None,
        };
        self.refuse_datagram(n, syscall_name(nr), dest);
        Verdict::Fail(libc::EACCES)
    }

    /// Logs a refused datagram (or non-TCP connect). Port 53 is a name lookup: told apart,
    /// because proxy-aware clients that look names up anyway (Bun does) need no answer.
    fn refuse_datagram(&self, n: &Notification, syscall: &'static str, dest: Option<SocketAddr>) {
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

    /// The destination of the first message of a `sendmsg`/`sendmmsg` call.
    fn msghdr_destination(&self, n: &Notification) -> Result<Option<RawDestination>, i32> {
        match self.msghdr_name(n)? {
            Some((name, len)) => self.read_sockaddr(n, name, len).map(Some),
            None => Ok(None),
        }
    }

    /// Where the first message of a `sendmsg`/`sendmmsg` names its destination, if it does.
    fn msghdr_name(&self, n: &Notification) -> Result<Option<(u64, u64)>, i32> {
        // struct msghdr starts with { void *msg_name; socklen_t msg_namelen; … }, and so does
        // the first struct mmsghdr.
        let head = sys::read_process_memory(n.pid, n.data.args[1], 12).map_err(|_| libc::EFAULT)?;
        if head.len() < 12 {
            return Err(libc::EFAULT);
        }
        let name = u64::from_ne_bytes(head[0..8].try_into().unwrap_or_default());
        let len = u32::from_ne_bytes(head[8..12].try_into().unwrap_or_default());
        Ok((name != 0 && len != 0).then_some((name, u64::from(len))))
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

    fn refuse(
        &self,
        n: &Notification,
        syscall: &'static str,
        destination: Option<SocketAddr>,
        code: &'static str,
        reason: String,
    ) {
        self.report(n, syscall, destination, None, code, reason)
    }

    fn refuse_unix(&self, n: &Notification, syscall: &'static str, target: String, reason: String) {
        self.report(n, syscall, None, Some(target), "unix_socket", reason)
    }

    fn report(
        &self,
        n: &Notification,
        syscall: &'static str,
        destination: Option<SocketAddr>,
        unix: Option<String>,
        code: &'static str,
        reason: String,
    ) {
        let binary = self
            .identities
            .executable(n.pid)
            .ok()
            .or_else(|| std::fs::read_link(format!("/proc/{}/exe", n.pid)).ok());
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

fn is_tcp(kind: SocketKind) -> bool {
    const IPPROTO_MPTCP: i32 = 262;
    kind.ty == libc::SOCK_STREAM
        && (kind.protocol == libc::IPPROTO_TCP || kind.protocol == IPPROTO_MPTCP)
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

fn syscall_name(nr: i64) -> &'static str {
    match nr {
        libc::SYS_connect => "connect",
        libc::SYS_sendto => "sendto",
        libc::SYS_sendmsg => "sendmsg",
        libc::SYS_sendmmsg => "sendmmsg",
        _ => "syscall",
    }
}
