//! The only module with raw system calls: one netlink `sock_diag` query that maps a TCP
//! connection to its socket's inode and creator uid without reading all of
//! `/proc/net/tcp` (used by [`crate::ProcResolver`], and by `corral run`'s attribution
//! table, which checks that an accepted connection is the socket it brokered), and the
//! limit on open descriptors.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
/// Offset of `idiag_uid` in a reply: nlmsghdr (16) + family/state/timer/retrans (4) +
/// inet_diag_sockid (48) + expires/rqueue/wqueue (12).
const UID_OFFSET: usize = NLMSG_HDRLEN + 4 + 48 + 12;
/// `idiag_inode` follows `idiag_uid`.
const INODE_OFFSET: usize = UID_OFFSET + 4;

/// A socket as the kernel describes it: its inode (what `/proc/PID/fd` links name) and the
/// user that created it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketOwner {
    pub inode: u64,
    pub uid: u32,
}

/// A `NETLINK_SOCK_DIAG` socket in the caller's network namespace.
pub fn sock_diag_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call with constant arguments; the result is checked and
    // immediately owned by an OwnedFd, which closes it.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a valid, freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The TCP socket whose local end is `src` and remote end is `dst`, looked up in the
/// caller's network namespace. `Ok(None)` when the kernel has no such socket.
#[cfg(test)]
pub fn tcp_socket_owner(src: SocketAddr, dst: SocketAddr) -> io::Result<Option<SocketOwner>> {
    use std::os::fd::AsFd;
    tcp_socket_owner_on(sock_diag_socket()?.as_fd(), src, dst)
}

/// [`tcp_socket_owner`] asked through `diag`, a `sock_diag` socket of the network namespace
/// where the connection lives (one query at a time: the caller serialises).
pub fn tcp_socket_owner_on(
    diag: BorrowedFd<'_>,
    src: SocketAddr,
    dst: SocketAddr,
) -> io::Result<Option<SocketOwner>> {
    let request = build_request(src, dst);
    // SAFETY: `request` is a live buffer of `request.len()` bytes for the duration of the
    // call; the kernel reads it only. A null destination means the connected default
    // (the kernel, for netlink).
    let sent = unsafe { libc::send(diag.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut reply = [0u8; 8192];
    // SAFETY: `reply` is a writable buffer of `reply.len()` bytes that outlives the call;
    // the kernel writes at most that many bytes.
    let got = unsafe { libc::recv(diag.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    parse_reply(&reply[..got as usize])
}

/// The client socket of a TCP connection whose client end is `peer` and server end
/// `local`, asked through `diag`: as an IPv4 socket, then as an IPv6 socket with v4-mapped
/// addresses (which is how a dual-stack client reaches an IPv4 listener).
pub fn tcp_client_owner(
    diag: BorrowedFd<'_>,
    peer: SocketAddr,
    local: SocketAddr,
) -> io::Result<Option<SocketOwner>> {
    let canonical = |a: SocketAddr| SocketAddr::new(crate::addr::canonical(a.ip()), a.port());
    let (peer, local) = (canonical(peer), canonical(local));
    let mut tries = vec![(peer, local)];
    if let (SocketAddr::V4(p), SocketAddr::V4(l)) = (peer, local) {
        let mapped = |a: std::net::SocketAddrV4| {
            SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port())
        };
        tries.push((mapped(p), mapped(l)));
    }
    for (src, dst) in tries {
        if let Some(owner) = tcp_socket_owner_on(diag, src, dst)? {
            return Ok(Some(owner));
        }
    }
    Ok(None)
}

/// The inode of the client socket of a TCP connection (see [`tcp_client_owner`]).
pub fn tcp_client_inode(
    diag: BorrowedFd<'_>,
    peer: SocketAddr,
    local: SocketAddr,
) -> io::Result<Option<u64>> {
    Ok(tcp_client_owner(diag, peer, local)?.map(|o| o.inode))
}

/// The soft limit on open descriptors (`RLIMIT_NOFILE`), or `None` when it is unlimited
/// or cannot be read.
pub fn open_files_limit() -> Option<usize> {
    let (soft, _) = nofile()?;
    (soft != libc::RLIM_INFINITY).then(|| usize::try_from(soft).unwrap_or(usize::MAX))
}

/// Raises the soft limit on open descriptors to the hard limit, as servers that hold one
/// descriptor per connection do (Go's runtime, nginx's `worker_rlimit_nofile`): the
/// usual soft default of 1024 would cap the proxy at a few hundred tunnels. Returns the
/// soft limit in force afterwards.
pub fn raise_open_files_limit() -> Option<usize> {
    let (soft, hard) = nofile()?;
    if soft < hard {
        let raised = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: `raised` is a valid rlimit that lives for the call; the kernel only
        // reads it. Raising the soft limit up to the hard one needs no privilege.
        let _ = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) };
    }
    open_files_limit()
}

fn nofile() -> Option<(libc::rlim_t, libc::rlim_t)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a writable rlimit that outlives the call; the kernel fills it.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0).then_some((limit.rlim_cur, limit.rlim_max))
}

fn build_request(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let family = match src.ip() {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    };
    let mut req = Vec::with_capacity(NLMSG_HDRLEN + 56);
    req.extend_from_slice(&((NLMSG_HDRLEN + 56) as u32).to_ne_bytes()); // nlmsg_len
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes()); // nlmsg_type
    req.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes()); // nlmsg_flags
    req.extend_from_slice(&1u32.to_ne_bytes()); // nlmsg_seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid
    req.push(family); // sdiag_family
    req.push(libc::IPPROTO_TCP as u8); // sdiag_protocol
    req.push(0); // idiag_ext
    req.push(0); // pad
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // idiag_states: all
    req.extend_from_slice(&src.port().to_be_bytes()); // idiag_sport
    req.extend_from_slice(&dst.port().to_be_bytes()); // idiag_dport
    for addr in [src.ip(), dst.ip()] {
        let mut bytes = [0u8; 16];
        match addr {
            IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => bytes.copy_from_slice(&v6.octets()),
        }
        req.extend_from_slice(&bytes);
    }
    req.extend_from_slice(&0u32.to_ne_bytes()); // idiag_if
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // cookie: INET_DIAG_NOCOOKIE
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    req
}

fn parse_reply(reply: &[u8]) -> io::Result<Option<SocketOwner>> {
    if reply.len() < NLMSG_HDRLEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "short netlink reply",
        ));
    }
    let kind = u16::from_ne_bytes([reply[4], reply[5]]);
    if kind == NLMSG_ERROR {
        let code = reply
            .get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4)
            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0);
        if code == -libc::ENOENT {
            return Ok(None);
        }
        return Err(io::Error::from_raw_os_error(-code));
    }
    if kind != SOCK_DIAG_BY_FAMILY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected netlink message type {kind}"),
        ));
    }
    let word = |at: usize| {
        reply
            .get(at..at + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short sock_diag reply"))
    };
    let (uid, inode) = (word(UID_OFFSET)?, word(INODE_OFFSET)?);
    Ok((inode != 0).then_some(SocketOwner {
        inode: u64::from(inode),
        uid,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn finds_the_inode_and_uid_of_a_live_connection_and_nothing_for_a_missing_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(server).unwrap();
        let (_accepted, peer) = listener.accept().unwrap();
        let owner = tcp_socket_owner(peer, server)
            .unwrap()
            .expect("socket found");
        let fd = client.as_raw_fd();
        let meta = std::fs::metadata(format!("/proc/self/fd/{fd}")).unwrap();
        assert_eq!(owner.inode, meta.ino());
        let me = std::fs::metadata("/proc/self").unwrap().uid();
        assert_eq!(owner.uid, me);
        let gone: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(tcp_socket_owner(gone, server).unwrap(), None);
    }
}
