//! Socket operations on descriptors duplicated out of the sandbox, and address parsing.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

use super::{cvt, retry};

/// A socket's family and type (`SO_DOMAIN`, `SO_TYPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketKind {
    pub domain: i32,
    pub ty: i32,
    pub protocol: i32,
}

fn getsockopt_int(fd: BorrowedFd<'_>, level: i32, name: i32) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into our int.
    cvt(libc::c_long::from(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    }))?;
    Ok(v)
}

/// Family and type of a socket; ENOTSOCK for other descriptors.
pub fn socket_kind(fd: BorrowedFd<'_>) -> io::Result<SocketKind> {
    Ok(SocketKind {
        domain: getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)?,
        ty: getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)?,
        protocol: getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)?,
    })
}

/// Whether an inet6 socket refuses v4-mapped addresses.
pub fn is_v6only(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(getsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)? != 0)
}

/// Whether the open file description is non-blocking (shared with the caller's descriptor).
pub fn is_nonblocking(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: fcntl(F_GETFL) on a descriptor we hold.
    let fl = cvt(libc::c_long::from(unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_GETFL)
    }))?;
    Ok(fl as i32 & libc::O_NONBLOCK != 0)
}

/// The pending error of a socket (`SO_ERROR`), cleared by reading it.
pub fn take_error(fd: BorrowedFd<'_>) -> io::Result<Option<io::Error>> {
    let e = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)?;
    Ok((e != 0).then(|| io::Error::from_raw_os_error(e)))
}

fn to_raw(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// A socket address as the caller wrote it in its memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawDestination {
    Inet(SocketAddr),
    /// `AF_UNSPEC`: dissolve the association.
    Unspecified,
    /// Any other family, or a truncated address.
    Invalid {
        family: Option<u16>,
    },
}

/// Parses a `struct sockaddr` of `bytes.len()` bytes (the caller's `addrlen`).
pub fn parse_sockaddr(bytes: &[u8]) -> RawDestination {
    if bytes.len() < 2 {
        return RawDestination::Invalid { family: None };
    }
    let family = u16::from_ne_bytes([bytes[0], bytes[1]]);
    let be16 = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
    match i32::from(family) {
        libc::AF_UNSPEC => RawDestination::Unspecified,
        libc::AF_INET if bytes.len() >= 16 => {
            let ip = Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]);
            RawDestination::Inet(SocketAddr::V4(SocketAddrV4::new(ip, be16(2))))
        }
        // The kernel accepts the 24-byte RFC 2133 form without a scope id.
        libc::AF_INET6 if bytes.len() >= 24 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&bytes[8..24]);
            let flow = u32::from_ne_bytes(bytes[4..8].try_into().unwrap_or_default());
            let scope = if bytes.len() >= 28 {
                u32::from_ne_bytes(bytes[24..28].try_into().unwrap_or_default())
            } else {
                0
            };
            RawDestination::Inet(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(o),
                be16(2),
                flow,
                scope,
            )))
        }
        _ => RawDestination::Invalid {
            family: Some(family),
        },
    }
}

/// `bind(fd, addr)`.
pub fn bind(fd: BorrowedFd<'_>, addr: &SocketAddr) -> io::Result<()> {
    let (ss, len) = to_raw(addr);
    // SAFETY: `ss` holds a valid sockaddr of `len` bytes.
    cvt(libc::c_long::from(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    }))?;
    Ok(())
}

/// `connect(fd, addr)`, EINTR retried (a retried connect reports EALREADY/EISCONN, which
/// the broker handles).
pub fn connect(fd: BorrowedFd<'_>, addr: &SocketAddr) -> io::Result<()> {
    let (ss, len) = to_raw(addr);
    // SAFETY: `ss` holds a valid sockaddr of `len` bytes.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    cvt(libc::c_long::from(r)).map(drop)
}

/// `connect(fd, {AF_UNSPEC})`: dissolves a datagram association / aborts a stream.
pub fn connect_unspecified(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a zeroed sockaddr with family AF_UNSPEC (0).
    let sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    let r = unsafe {
        // SAFETY: `sa` is a valid sockaddr of the given size.
        libc::connect(
            fd.as_raw_fd(),
            &sa,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    cvt(libc::c_long::from(r)).map(drop)
}

fn name_of(
    fd: BorrowedFd<'_>,
    f: unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int,
) -> io::Result<SocketAddr> {
    // SAFETY: zeroed storage is valid; `f` (getsockname/getpeername) writes at most `len`.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    cvt(libc::c_long::from(unsafe {
        f(
            fd.as_raw_fd(),
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    }))?;
    // SAFETY: the kernel wrote `len` bytes of a sockaddr into `ss`.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&ss as *const libc::sockaddr_storage).cast::<u8>(),
            len as usize,
        )
    };
    match parse_sockaddr(bytes) {
        RawDestination::Inet(a) => Ok(a),
        _ => Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
    }
}

/// `getsockname`.
pub fn local_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    name_of(fd, libc::getsockname)
}

/// `getpeername`.
pub fn peer_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    name_of(fd, libc::getpeername)
}

/// Waits until `fd` is writable (a pending connect finished) or `timeout_ms` passes.
pub fn wait_writable(fd: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let n = retry(|| {
        // SAFETY: poll on one pollfd we own.
        cvt(libc::c_long::from(unsafe {
            libc::poll(&mut p, 1, timeout_ms)
        }))
    })?;
    Ok(n > 0)
}

/// The bytes of `addr` as the kernel lays a `struct sockaddr` out.
#[cfg(test)]
fn raw_bytes(addr: &SocketAddr) -> Vec<u8> {
    let (ss, len) = to_raw(addr);
    // SAFETY: `ss` is initialised and at least `len` bytes long.
    unsafe {
        std::slice::from_raw_parts(
            (&ss as *const libc::sockaddr_storage).cast::<u8>(),
            len as usize,
        )
    }
    .to_vec()
}

/// The address of a unix-domain `sockaddr_un`, as the caller wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnixAddress {
    /// A filesystem path (without its terminating NUL).
    Path(Vec<u8>),
    /// An abstract name (the bytes after the leading NUL).
    Abstract(Vec<u8>),
    /// No name at all (`addrlen == sizeof(sa_family_t)`).
    Unnamed,
}

/// Parses a `struct sockaddr_un` of `bytes.len()` bytes; `None` if it is not `AF_UNIX`.
pub fn parse_unix_sockaddr(bytes: &[u8]) -> Option<UnixAddress> {
    if bytes.len() < 2 || u16::from_ne_bytes([bytes[0], bytes[1]]) != libc::AF_UNIX as u16 {
        return None;
    }
    let path = &bytes[2..];
    Some(match path.first() {
        None => UnixAddress::Unnamed,
        Some(0) => UnixAddress::Abstract(path[1..].to_vec()),
        Some(_) => {
            // The kernel stops at the first NUL.
            let end = path.iter().position(|b| *b == 0).unwrap_or(path.len());
            UnixAddress::Path(path[..end].to_vec())
        }
    })
}

/// `listen(fd, backlog)`.
pub fn listen(fd: BorrowedFd<'_>, backlog: i32) -> io::Result<()> {
    // SAFETY: listen with a descriptor we hold and an integer.
    cvt(libc::c_long::from(unsafe {
        libc::listen(fd.as_raw_fd(), backlog)
    }))
    .map(drop)
}

/// `connect(fd, addr)` with an address exactly as the caller wrote it (copied out of its
/// memory before anything is decided, so the caller cannot change it afterwards).
pub fn connect_raw(fd: BorrowedFd<'_>, addr: &[u8]) -> io::Result<()> {
    let len = libc::socklen_t::try_from(addr.len())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: the kernel reads at most `len` bytes of our buffer and copies them into a
    // sockaddr_storage of its own (so alignment does not matter).
    let r = unsafe { libc::connect(fd.as_raw_fd(), addr.as_ptr().cast(), len) };
    cvt(libc::c_long::from(r)).map(drop)
}

/// `sendmsg` of one copied message: `name` (raw address bytes, or none), `data`, and
/// `control` (cmsg bytes laid out by [`crate::message::control_bytes`]).
pub fn send_message(
    fd: BorrowedFd<'_>,
    name: Option<&[u8]>,
    data: &[u8],
    control: &[u8],
    flags: i32,
) -> io::Result<usize> {
    // u64 storage keeps the cmsg headers aligned as the kernel expects.
    let mut cbuf = vec![0u64; control.len().div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data (zero is valid); every pointer set below points at a
    // buffer that outlives the call, with its true length; the kernel only reads them.
    unsafe {
        std::ptr::copy_nonoverlapping(
            control.as_ptr(),
            cbuf.as_mut_ptr().cast::<u8>(),
            control.len(),
        );
        let mut msg: libc::msghdr = std::mem::zeroed();
        if let Some(name) = name {
            msg.msg_name = name.as_ptr() as *mut libc::c_void;
            msg.msg_namelen = name.len() as libc::socklen_t;
        }
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !control.is_empty() {
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = control.len() as _;
        }
        let n = libc::sendmsg(fd.as_raw_fd(), &msg, flags);
        cvt(n as libc::c_long).map(|n| n as usize)
    }
}

/// The inode of a socket (what `sock_diag` reports as its identity).
pub fn socket_inode(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: fstat fills a stat we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a descriptor we hold, writing into `st`.
    cvt(libc::c_long::from(unsafe {
        libc::fstat(fd.as_raw_fd(), &mut st)
    }))?;
    Ok(st.st_ino)
}

/// A `sock_diag` socket shared by threads. Replies to concurrent queries on one netlink
/// socket would interleave, so queries take turns.
pub struct DiagSocket(std::sync::Mutex<std::os::fd::OwnedFd>);

impl DiagSocket {
    pub fn new(fd: std::os::fd::OwnedFd) -> DiagSocket {
        DiagSocket(std::sync::Mutex::new(fd))
    }

    /// Runs one query on the socket, alone.
    pub fn with<T>(&self, query: impl FnOnce(BorrowedFd<'_>) -> T) -> T {
        let fd = self.0.lock().unwrap_or_else(|p| p.into_inner());
        query(std::os::fd::AsFd::as_fd(&*fd))
    }
}

/// A `NETLINK_SOCK_DIAG` socket in the calling thread's network namespace.
pub fn sock_diag_socket() -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: socket() with constant arguments; the result is a new descriptor we own.
    let fd = cvt(libc::c_long::from(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    }))?;
    // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const UDIAG_SHOW_VFS: u32 = 0x2;
const UNIX_DIAG_VFS: u16 = 1;

/// Asks the unix-socket diagnostics of `diag`'s network namespace for a socket bound at the
/// file `(dev, ino)` (as `stat` reports them); returns the socket's own inode.
pub fn unix_socket_bound_at(diag: BorrowedFd<'_>, dev: u64, ino: u64) -> io::Result<Option<u32>> {
    // nlmsghdr (16) + unix_diag_req (24).
    let mut req = Vec::with_capacity(40);
    req.extend_from_slice(&40u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
    req.push(libc::AF_UNIX as u8);
    req.push(0); // protocol
    req.extend_from_slice(&0u16.to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req.extend_from_slice(&0u32.to_ne_bytes()); // any inode
    req.extend_from_slice(&UDIAG_SHOW_VFS.to_ne_bytes());
    req.extend_from_slice(&[0u8; 8]); // cookie
                                      // SAFETY: sending our buffer of req.len() bytes on a descriptor we hold.
    cvt(
        unsafe { libc::send(diag.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } as libc::c_long,
    )?;
    // The kernel reports the device in its internal encoding (major << 20 | minor); `stat`
    // gives glibc's.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let want_dev = ((major << 20) | (minor & 0xf_ffff)) as u32;
    let mut found = None;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = retry(|| {
            // SAFETY: recv writes at most buf.len() bytes into our buffer.
            cvt(
                unsafe { libc::recv(diag.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) }
                    as libc::c_long,
            )
        })? as usize;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
            if len < 16 || off + len > n {
                return Err(io::Error::from_raw_os_error(libc::EBADMSG));
            }
            match ty {
                t if t == libc::NLMSG_DONE as u16 => return Ok(found),
                t if t == libc::NLMSG_ERROR as u16 => {
                    let errno =
                        i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap_or([0; 4]));
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                SOCK_DIAG_BY_FAMILY if found.is_none() => {
                    found = vfs_match(&buf[off + 16..off + len], want_dev, ino);
                }
                _ => {}
            }
            off += (len + 3) & !3;
        }
    }
}

/// In one `unix_diag_msg` (+ attributes): the socket inode if its VFS attribute is
/// `(dev, ino)`.
fn vfs_match(msg: &[u8], dev: u32, ino: u64) -> Option<u32> {
    if msg.len() < 16 {
        return None;
    }
    let sock_ino = u32::from_ne_bytes(msg[4..8].try_into().ok()?);
    let mut off = 16;
    while off + 4 <= msg.len() {
        let len = u16::from_ne_bytes(msg[off..off + 2].try_into().ok()?) as usize;
        let ty = u16::from_ne_bytes(msg[off + 2..off + 4].try_into().ok()?);
        if len < 4 || off + len > msg.len() {
            return None;
        }
        if ty == UNIX_DIAG_VFS && len >= 12 {
            let vfs_ino = u32::from_ne_bytes(msg[off + 4..off + 8].try_into().ok()?);
            let vfs_dev = u32::from_ne_bytes(msg[off + 8..off + 12].try_into().ok()?);
            if u64::from(vfs_ino) == ino && vfs_dev == dev {
                return Some(sock_ino);
            }
        }
        off += (len + 3) & !3;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn parses_inet_addresses_as_the_kernel_lays_them_out() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        assert_eq!(parse_sockaddr(&raw_bytes(&a)), RawDestination::Inet(a));
        assert_eq!(local_addr(l.as_fd()).unwrap(), a);
        let v6: SocketAddr = "[::1]:443".parse().unwrap();
        let bytes = raw_bytes(&v6);
        assert_eq!(parse_sockaddr(&bytes), RawDestination::Inet(v6));
        assert_eq!(
            parse_sockaddr(&bytes[..20]),
            RawDestination::Invalid { family: Some(10) }
        );
        assert_eq!(parse_sockaddr(&[0, 0]), RawDestination::Unspecified);
    }

    #[test]
    fn unix_addresses_parse_like_the_kernel_reads_them() {
        let mut b = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        assert_eq!(parse_unix_sockaddr(&b), Some(UnixAddress::Unnamed));
        b.extend_from_slice(b"/run/x.sock\0garbage");
        assert_eq!(
            parse_unix_sockaddr(&b),
            Some(UnixAddress::Path(b"/run/x.sock".to_vec()))
        );
        let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(b"\0name");
        assert_eq!(
            parse_unix_sockaddr(&a),
            Some(UnixAddress::Abstract(b"name".to_vec()))
        );
        assert_eq!(parse_unix_sockaddr(&[2, 0, 0, 80]), None);
    }

    #[test]
    fn the_diag_query_finds_a_listener_by_its_file_and_nothing_else() {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let diag = sock_diag_socket().unwrap();
        let found = unix_socket_bound_at(diag.as_fd(), meta.dev(), meta.ino()).unwrap();
        assert!(found.is_some());
        let other = std::fs::metadata(dir.path()).unwrap();
        assert_eq!(
            unix_socket_bound_at(diag.as_fd(), other.dev(), other.ino()).unwrap(),
            None
        );
    }
}
