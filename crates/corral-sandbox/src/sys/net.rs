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
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    } as libc::c_long)?;
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
    let fl = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) } as libc::c_long)?;
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
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    } as libc::c_long)?;
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
    cvt(r as libc::c_long).map(drop)
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
    cvt(r as libc::c_long).map(drop)
}

fn name_of(
    fd: BorrowedFd<'_>,
    f: unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int,
) -> io::Result<SocketAddr> {
    // SAFETY: zeroed storage is valid; `f` (getsockname/getpeername) writes at most `len`.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    cvt(unsafe {
        f(
            fd.as_raw_fd(),
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    } as libc::c_long)?;
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
        cvt(unsafe { libc::poll(&mut p, 1, timeout_ms) } as libc::c_long)
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
}
