//! A message a trapped caller asked to send, copied out of its memory before anything is
//! decided. The supervisor sends the copy on its duplicate of the caller's socket, so
//! another thread of the caller rewriting the buffers, or swapping the descriptor, after
//! the check changes nothing.

use crate::sys;

/// Most data copied for one send. A stream socket takes a partial send (the caller sends
/// the rest); a datagram larger than this fails with `EMSGSIZE`.
pub const MAX_DATA: usize = 256 * 1024;
/// Longest socket address (`sizeof(struct sockaddr_storage)`): the kernel refuses longer.
pub const MAX_NAME: usize = 128;
const MAX_CONTROL: usize = 4096;
/// `UIO_MAXIOV`: the kernel refuses more.
const MAX_IOV: usize = 1024;
/// `struct msghdr` on a 64-bit ABI, and `struct mmsghdr`'s `msg_len` right after it.
const MSGHDR_LEN: usize = 56;
pub const MMSGHDR_LEN_OFFSET: u64 = 56;
const CMSG_HEADER: usize = 16;

/// One control message (`struct cmsghdr` and its data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Control {
    pub level: i32,
    pub kind: i32,
    pub data: Vec<u8>,
}

/// A copied message.
#[derive(Debug, Default)]
pub struct Message {
    /// The destination address, when the caller named one.
    pub name: Option<Vec<u8>>,
    pub data: Vec<u8>,
    /// The caller asked to send more than [`MAX_DATA`].
    pub truncated: bool,
    pub control: Vec<Control>,
}

fn read(pid: u32, addr: u64, len: usize) -> Result<Vec<u8>, i32> {
    let b = sys::read_process_memory(pid, addr, len).map_err(|_| libc::EFAULT)?;
    if b.len() != len {
        return Err(libc::EFAULT);
    }
    Ok(b)
}

fn word(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

/// A socket address of `len` bytes at `addr` (none if the pointer or length is zero).
pub fn read_name(pid: u32, addr: u64, len: u64) -> Result<Option<Vec<u8>>, i32> {
    if addr == 0 || len == 0 {
        return Ok(None);
    }
    if len > MAX_NAME as u64 {
        return Err(libc::EINVAL);
    }
    read(pid, addr, len as usize).map(Some)
}

/// The message of a trapped `sendto`, `sendmsg`, or the first one of a `sendmmsg`, from
/// the call's arguments.
pub fn read_call(pid: u32, nr: i64, args: &[u64; 6]) -> Result<Message, i32> {
    if nr == libc::SYS_sendto {
        read_sendto(pid, args)
    } else {
        read_msghdr(pid, args[1])
    }
}

/// `sendto(fd, buf, len, flags, addr, addrlen)`.
pub fn read_sendto(pid: u32, args: &[u64; 6]) -> Result<Message, i32> {
    let want = args[2] as usize;
    let take = want.min(MAX_DATA);
    let data = if take == 0 {
        Vec::new()
    } else {
        read(pid, args[1], take)?
    };
    Ok(Message {
        name: read_name(pid, args[4], args[5])?,
        data,
        truncated: want > take,
        control: Vec::new(),
    })
}

/// The `struct msghdr` at `addr` (`sendmsg`, or the first message of `sendmmsg`).
pub fn read_msghdr(pid: u32, addr: u64) -> Result<Message, i32> {
    let h = read(pid, addr, MSGHDR_LEN)?;
    let (name_ptr, name_len) = (word(&h, 0), u64::from(word(&h, 8) as u32));
    let (iov_ptr, iov_len) = (word(&h, 16), word(&h, 24) as usize);
    let (control_ptr, control_len) = (word(&h, 32), word(&h, 40) as usize);
    if iov_len > MAX_IOV {
        return Err(libc::EMSGSIZE);
    }
    let mut msg = Message {
        name: read_name(pid, name_ptr, name_len)?,
        ..Message::default()
    };
    let iovs = if iov_len == 0 {
        Vec::new()
    } else {
        read(pid, iov_ptr, iov_len * 16)?
    };
    for iov in iovs.chunks_exact(16) {
        let (base, len) = (word(iov, 0), word(iov, 8) as usize);
        let room = MAX_DATA - msg.data.len();
        if len > room {
            msg.truncated = true;
        }
        let take = len.min(room);
        if take > 0 {
            msg.data.extend(read(pid, base, take)?);
        }
    }
    if control_len > 0 && control_ptr != 0 {
        if control_len > MAX_CONTROL {
            return Err(libc::ENOBUFS);
        }
        msg.control = parse_control(&read(pid, control_ptr, control_len)?)?;
    }
    Ok(msg)
}

/// Splits cmsg bytes (64-bit layout: `size_t len; int level; int type;` then data, each
/// message padded to 8 bytes) the way the kernel walks them.
pub fn parse_control(b: &[u8]) -> Result<Vec<Control>, i32> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + CMSG_HEADER <= b.len() {
        let len = word(b, off) as usize;
        if len < CMSG_HEADER || len > b.len() - off {
            return Err(libc::EINVAL);
        }
        out.push(Control {
            level: i32::from_ne_bytes(b[off + 8..off + 12].try_into().unwrap_or_default()),
            kind: i32::from_ne_bytes(b[off + 12..off + 16].try_into().unwrap_or_default()),
            data: b[off + CMSG_HEADER..off + len].to_vec(),
        });
        off += len.div_ceil(8) * 8;
    }
    Ok(out)
}

/// Lays control messages out as `sendmsg` expects them.
pub fn control_bytes(control: &[Control]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in control {
        let len = CMSG_HEADER + c.data.len();
        out.extend_from_slice(&(len as u64).to_ne_bytes());
        out.extend_from_slice(&c.level.to_ne_bytes());
        out.extend_from_slice(&c.kind.to_ne_bytes());
        out.extend_from_slice(&c.data);
        out.resize(out.len().div_ceil(8) * 8, 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_round_trip_in_the_kernel_layout() {
        let rights = Control {
            level: libc::SOL_SOCKET,
            kind: libc::SCM_RIGHTS,
            data: [3i32, 4, 5].iter().flat_map(|f| f.to_ne_bytes()).collect(),
        };
        let other = Control {
            level: 41,
            kind: 7,
            data: vec![1; 8],
        };
        let bytes = control_bytes(&[rights.clone(), other.clone()]);
        // 16 + 12 padded to 32, then 16 + 8.
        assert_eq!(bytes.len(), 32 + 24);
        assert_eq!(parse_control(&bytes).unwrap(), vec![rights, other]);
        assert_eq!(parse_control(&bytes[..12]).unwrap().len(), 0);
        assert_eq!(parse_control(&bytes[..20]), Err(libc::EINVAL));
        let mut bad = bytes.clone();
        bad[0] = 200;
        assert_eq!(parse_control(&bad), Err(libc::EINVAL));
    }

    #[test]
    fn a_message_is_copied_out_of_the_callers_memory() {
        let (a, b) = (b"hello ".to_vec(), b"world".to_vec());
        let ptr = |v: &[u8]| v.as_ptr() as u64;
        let mut iov = Vec::new();
        for v in [&a, &b] {
            iov.extend((ptr(v)).to_ne_bytes());
            iov.extend((v.len() as u64).to_ne_bytes());
        }
        let name = b"\x01\x00/tmp/x.sock".to_vec();
        let header = |iovlen: u64| {
            let mut h = Vec::new();
            for w in [ptr(&name), name.len() as u64, ptr(&iov), iovlen, 0, 0, 0] {
                h.extend(w.to_ne_bytes());
            }
            h
        };
        let me = std::process::id();
        let h = header(2);
        let m = read_msghdr(me, ptr(&h)).unwrap();
        assert_eq!(m.data, b"hello world");
        assert_eq!(m.name.as_deref(), Some(&name[..]));
        assert!(!m.truncated && m.control.is_empty());
        let h = header(5000);
        assert_eq!(read_msghdr(me, ptr(&h)).unwrap_err(), libc::EMSGSIZE);
    }
}
