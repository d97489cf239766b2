//! Who is asking: mapping an accepted connection to the [`Identity`] behind it.
//!
//! `corral run` attributes connections exactly, at connect time (its broker fills a table
//! the sandbox hands to the proxy as an [`Attribution`]). The standalone `corral proxy`
//! uses [`ProcResolver`], which looks the client socket up in `/proc`.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use corral_policy::Identity;

/// Why a connection could not be attributed. The proxy refuses such connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unattributed {
    pub reason: String,
}

impl Unattributed {
    pub fn new(reason: impl Into<String>) -> Unattributed {
        Unattributed {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Unattributed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Unattributed {}

/// Maps an accepted connection to its owner.
pub trait Attribution: Send + Sync + 'static {
    /// Who owns the connection whose peer (client) address is `peer`, accepted on `local`?
    /// `Err` means unattributed: the proxy refuses (fail closed).
    fn identify(&self, peer: SocketAddr, local: SocketAddr) -> Result<Identity, Unattributed>;

    /// Whether `identify` may block (file system, netlink). Blocking implementations are run
    /// on tokio's blocking pool; cheap in-memory ones (the default answer is `true`, to be
    /// safe) should return `false` to save the thread hop.
    fn may_block(&self) -> bool {
        true
    }

    /// The answer for a client seen before, from a few quick system calls, or `None` when
    /// only [`identify`](Attribution::identify) can tell (then run as `may_block` says).
    /// Called on the proxy's async workers.
    fn identify_known(
        &self,
        _peer: SocketAddr,
        _local: SocketAddr,
    ) -> Option<Result<Identity, Unattributed>> {
        None
    }
}

/// Every connection is this identity (tests; `corral proxy --identity-exe`).
pub struct FixedIdentity(pub Identity);

impl FixedIdentity {
    /// An identity with just an executable path.
    pub fn exe(path: impl Into<PathBuf>) -> FixedIdentity {
        FixedIdentity(Identity::new(path))
    }
}

impl Attribution for FixedIdentity {
    fn identify(&self, _peer: SocketAddr, _local: SocketAddr) -> Result<Identity, Unattributed> {
        Ok(self.0.clone())
    }
    fn may_block(&self) -> bool {
        false
    }
}

/// Standalone attribution through `/proc`: the client socket's inode and creator's uid
/// from a netlink `sock_diag` query (falling back to `/proc/net/tcp{,6}`; the proxy's
/// network namespace), a process holding that inode in `/proc/PID/fd`, its executable from
/// `/proc/PID/exe`, ancestors through `PPid`.
///
/// The holder is searched where it most likely is, each step exact (the inode must be one
/// of the process's descriptors): the process that held the last connection from the same
/// client address, then the processes running as the socket's uid, newest first, then every
/// other one. A client that keeps connecting costs one process's descriptors, not the
/// host's; a new one costs the processes newer than it of its uid.
///
/// Limits, stated plainly: it sees only processes in the proxy's network and PID namespaces
/// whose `/proc/PID/fd` it may read (same user, or root); a process that exits between its
/// connect and our look-up is unattributed (and refused). It names a process holding the
/// socket when the proxy looks, which may not be the one that connected (a descriptor can
/// be inherited or passed on). A socket held by the process found and by one of its
/// ancestors running a different executable (inherited across `fork` + `exec`) is refused;
/// the proxy's own ancestors, which started it, and other holders are not looked at. Executables without an identity (deleted,
/// `memfd:`, the dynamic loader run directly) are refused.
pub struct ProcResolver {
    proc_root: PathBuf,
    /// SHA-256 by executable file identity (dev, inode, size, mtime): hashed once each.
    hashes: Mutex<HashMap<FileKey, String>>,
    /// The process that held the last attributed connection from each client address.
    last_owner: Mutex<HashMap<IpAddr, u32>>,
    /// The proxy's own ancestors: when read, under which parent, and the chain.
    own: Mutex<Option<OwnLineage>>,
    /// Clients resolved already, by pid.
    known: Mutex<HashMap<u32, Known>>,
}

/// A client process resolved once: valid while its start time, executable file and
/// ancestors are the same.
struct Known {
    start: u64,
    exe: FileKey,
    lineage: Vec<u32>,
    identity: Identity,
}

/// How many client processes [`ProcResolver`] remembers (cleared when full).
const KNOWN_PROCESSES: usize = 4096;

type OwnLineage = (std::time::Instant, u32, Vec<u32>);

/// How many client addresses [`ProcResolver`] remembers a last owner for (a proxy serves a
/// host or a few; the map is cleared when it fills).
const LAST_OWNERS: usize = 1024;

/// (dev, inode, size, mtime seconds, mtime nanoseconds) of an executable file.
type FileKey = (u64, u64, u64, i64, i64);

fn file_key(m: &std::fs::Metadata) -> FileKey {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec())
}

/// SHA-256 (lowercase hex) of the file at `path`.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

impl Default for ProcResolver {
    fn default() -> Self {
        ProcResolver::new()
    }
}

impl ProcResolver {
    pub fn new() -> ProcResolver {
        ProcResolver {
            proc_root: PathBuf::from("/proc"),
            hashes: Mutex::new(HashMap::new()),
            last_owner: Mutex::new(HashMap::new()),
            own: Mutex::new(None),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The client socket's inode and the uid that created it (`None` when unknown).
    fn socket_owner(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Result<(u64, Option<u32>), Unattributed> {
        if let Some(found) = self.socket_owner_diag(peer, local) {
            return Ok(found);
        }
        // Fallback: read the tables.
        let peer = canonical(peer);
        let local = canonical(local);
        for table in ["net/tcp", "net/tcp6"] {
            let path = self.proc_root.join(table);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if let Some((inode, uid)) = find_inode(&text, peer, local) {
                return Ok((inode, Some(uid)));
            }
        }
        Err(Unattributed::new(format!(
            "no socket {peer} -> {local} in /proc/net/tcp{{,6}} (client in another network namespace, or already gone)"
        )))
    }

    /// The client socket's inode and creator uid from netlink `sock_diag`: one exact
    /// lookup (as IPv4, then as a v4-mapped IPv6 socket).
    fn socket_owner_diag(&self, peer: SocketAddr, local: SocketAddr) -> Option<(u64, Option<u32>)> {
        if self.proc_root != Path::new("/proc") {
            return None;
        }
        // One netlink socket per thread, kept: opening one per connection cost more than
        // the query.
        thread_local! {
            static DIAG: std::cell::OnceCell<Option<std::os::fd::OwnedFd>> =
                const { std::cell::OnceCell::new() };
        }
        DIAG.with(|d| {
            let diag = d
                .get_or_init(|| crate::sys::sock_diag_socket().ok())
                .as_ref()?;
            let owner = crate::sys::tcp_client_owner(diag.as_fd(), peer, local).ok()??;
            Some((owner.inode, Some(owner.uid)))
        })
    }

    /// The processes holding socket `inode` (see [`ProcResolver`]), with the ancestors of
    /// the first: that one — the last owner from this client, else the newest process of
    /// the socket's uid, else the newest of the others — and those of its ancestors that
    /// hold it too (a program that hands its socket to an allowed one it starts is its
    /// ancestor), except the proxy's own ancestors. The proxy itself is never one.
    fn owners(&self, inode: u64, uid: Option<u32>, client: IpAddr) -> Option<(Vec<u32>, Vec<u32>)> {
        let needle = format!("socket:[{inode}]");
        let me = std::process::id();
        let first = self.first_holder(&needle, uid, client)?;
        let lineage = match self.known_lineage(first) {
            Some((lineage, _)) => lineage,
            None => self.lineage(first),
        };
        // The proxy's own ancestors started it and could start it otherwise (with
        // `--identity-exe`, say): a socket they hold changes nothing, and skipping them
        // spares reading their descriptors (shells, terminals, service managers) each time.
        let trusted = self.own_lineage();
        let mut holders = vec![first];
        holders.extend(
            lineage.iter().filter(|p| {
                **p > 1 && **p != me && !trusted.contains(p) && self.holds(**p, &needle)
            }),
        );
        Some((holders, lineage))
    }

    /// `pid`'s start time and parent, from one read of `/proc/PID/stat` (much cheaper for
    /// the kernel to produce than `status`): `PID (COMM) STATE PPID …`, where COMM may hold
    /// spaces and ')'.
    fn start_and_parent(&self, pid: u32) -> Option<(u64, u32)> {
        let stat =
            std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("stat")).ok()?;
        let (_, after_comm) = stat.rsplit_once(')')?;
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        // After the name: state(0) ppid(1) … starttime(19).
        Some((fields.get(19)?.parse().ok()?, fields.get(1)?.parse().ok()?))
    }

    /// The ancestors remembered for `pid` when it is the same process (start time) with the
    /// same parent as when they were read.
    /// Also `pid`'s start time, read to tell.
    fn known_lineage(&self, pid: u32) -> Option<(Vec<u32>, u64)> {
        let (start, ppid) = self.start_and_parent(pid)?;
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let k = known.get(&pid)?;
        (k.start == start && k.lineage.first() == Some(&ppid)).then(|| (k.lineage.clone(), start))
    }

    /// `pid`'s identity, remembered per process (start time) and executable file: a client
    /// that keeps connecting is resolved in full once.
    fn identity_cached(&self, pid: u32, lineage: &[u32]) -> Result<Identity, String> {
        let start = self.start_and_parent(pid).map(|(s, _)| s);
        let (exe_key, hit) = match start {
            Some(start) => self.identity_known(pid, start, lineage),
            None => (None, None),
        };
        if let Some(identity) = hit {
            return Ok(identity);
        }
        let identity = self.identity_of(pid, lineage)?;
        if let (Some(exe), Some(start)) = (exe_key, start) {
            let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            if known.len() >= KNOWN_PROCESSES {
                known.clear();
            }
            known.insert(
                pid,
                Known {
                    start,
                    exe,
                    lineage: lineage.to_vec(),
                    identity: identity.clone(),
                },
            );
        }
        Ok(identity)
    }

    /// `pid`'s executable file key, and its remembered identity when that key, its start
    /// time (`start`, read by the caller) and its ancestors are the same as when it was
    /// resolved.
    fn identity_known(
        &self,
        pid: u32,
        start: u64,
        lineage: &[u32],
    ) -> (Option<FileKey>, Option<Identity>) {
        let exe_key = std::fs::metadata(self.proc_root.join(pid.to_string()).join("exe"))
            .ok()
            .map(|m| file_key(&m));
        let hit = exe_key.and_then(|exe_key| {
            let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            known
                .get(&pid)
                .filter(|k| k.start == start && k.exe == exe_key && k.lineage == lineage)
                .map(|k| k.identity.clone())
        });
        (exe_key, hit)
    }

    /// The proxy's own ancestors, read again when its parent changes or after a second
    /// (an ancestor that exits frees its pid for another process).
    fn own_lineage(&self) -> Vec<u32> {
        let ppid = std::os::unix::process::parent_id();
        let mut cached = self.own.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, parent, chain)) = cached.as_ref() {
            if *parent == ppid && at.elapsed() < std::time::Duration::from_secs(1) {
                return chain.clone();
            }
        }
        let chain = self.lineage(std::process::id());
        *cached = Some((std::time::Instant::now(), ppid, chain.clone()));
        chain
    }

    /// `pid`'s parent, grandparent… up to init (at most 64).
    fn lineage(&self, pid: u32) -> Vec<u32> {
        let mut chain = Vec::new();
        let mut cur = pid;
        while chain.len() < 64 {
            match self.parent(cur) {
                Some(p) if p > 0 => {
                    chain.push(p);
                    if p == 1 {
                        break;
                    }
                    cur = p;
                }
                _ => break,
            }
        }
        chain
    }

    fn first_holder(&self, needle: &str, uid: Option<u32>, client: IpAddr) -> Option<u32> {
        let me = std::process::id();
        let last = self.lock_last().get(&client).copied();
        if let Some(pid) = last.filter(|p| *p != me) {
            if self.holds(pid, needle) {
                return Some(pid);
            }
        }
        let mut pids: Vec<u32> = std::fs::read_dir(&self.proc_root)
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| *pid != me && Some(*pid) != last)
            .collect();
        // Newest first: a client that just started is most likely the one connecting. Pids
        // wrap around, so "newest" counts back from the last one the kernel handed out.
        let last_pid = std::fs::read_to_string(self.proc_root.join("loadavg"))
            .ok()
            .and_then(|l| l.split_whitespace().nth(4)?.parse::<u32>().ok())
            .unwrap_or(u32::MAX);
        pids.sort_unstable_by_key(|pid| (*pid > last_pid, std::cmp::Reverse(*pid)));
        // The directory of a process belongs to its effective uid (root when it is not
        // dumpable): a cheap guess at who runs it, which only orders the search.
        let (likely, rest): (Vec<u32>, Vec<u32>) = pids.into_iter().partition(|pid| {
            use std::os::unix::fs::MetadataExt;
            uid.is_some()
                && std::fs::metadata(self.proc_root.join(pid.to_string()))
                    .is_ok_and(|m| Some(m.uid()) == uid)
        });
        likely
            .into_iter()
            .chain(rest)
            .find(|pid| self.holds(*pid, needle))
    }

    /// Whether one of `pid`'s descriptors is the socket `needle` (`socket:[INODE]`).
    fn holds(&self, pid: u32, needle: &str) -> bool {
        let Ok(fds) = std::fs::read_dir(self.proc_root.join(pid.to_string()).join("fd")) else {
            return false;
        };
        fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|t| t.as_os_str().as_encoded_bytes() == needle.as_bytes())
        })
    }

    fn lock_last(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        self.last_owner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, client: IpAddr, pid: u32) {
        let mut last = self.lock_last();
        if last.len() >= LAST_OWNERS && !last.contains_key(&client) {
            last.clear();
        }
        last.insert(client, pid);
    }

    fn exe(&self, pid: u32) -> Option<PathBuf> {
        let link = std::fs::read_link(self.proc_root.join(pid.to_string()).join("exe")).ok()?;
        // A replaced binary reads as "/path (deleted)"; keep it visible as such.
        Some(link)
    }

    /// The parent's pid.
    fn parent(&self, pid: u32) -> Option<u32> {
        self.start_and_parent(pid).map(|(_, parent)| parent)
    }

    /// The executable's SHA-256, read through `/proc/PID/exe` (so a replaced or deleted
    /// file is hashed as it runs), cached by file identity.
    fn sha256(&self, pid: u32) -> Option<String> {
        let link = self.proc_root.join(pid.to_string()).join("exe");
        let before = file_key(&std::fs::metadata(&link).ok()?);
        if let Some(h) = self
            .hashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&before)
        {
            return Some(h.clone());
        }
        let hash = sha256_file(&link).ok()?;
        // Only cache when the file did not change while it was read.
        if std::fs::metadata(&link).ok().map(|m| file_key(&m)) == Some(before) {
            self.hashes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(before, hash.clone());
        }
        Some(hash)
    }

    /// `pid`'s identity; `lineage` is its ancestors' pids, parent first.
    fn identity_of(&self, pid: u32, lineage: &[u32]) -> Result<Identity, String> {
        let exe = self
            .exe(pid)
            .ok_or_else(|| format!("process {pid}'s executable cannot be read"))?;
        if let Some(problem) = corral_policy::identity::unidentifiable_executable(&exe) {
            return Err(format!("process {pid}: {problem}"));
        }
        let sha256 = self.sha256(pid);
        let ancestors = lineage.iter().map_while(|p| self.exe(*p)).collect();
        Ok(Identity {
            invoked_as: corral_policy::identity::invoked_as(pid, &exe),
            exe,
            ancestors,
            sha256,
            pid: Some(pid),
        })
    }
}

impl Attribution for ProcResolver {
    /// A client that connected before: the socket through `sock_diag`, held by the process
    /// that held the last connection from its address, with the same ancestors (none of
    /// which holds it) and executable as when it was resolved. Anything else, or a socket
    /// its ancestors share, is left to [`identify`](Attribution::identify).
    fn identify_known(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Option<Result<Identity, Unattributed>> {
        let (inode, _) = self.socket_owner_diag(peer, local)?;
        let client = canonical(peer).ip();
        let pid = self.lock_last().get(&client).copied()?;
        let needle = format!("socket:[{inode}]");
        let me = std::process::id();
        if pid == me || !self.holds(pid, &needle) {
            return None;
        }
        let (lineage, start) = self.known_lineage(pid)?;
        let trusted = self.own_lineage();
        if lineage
            .iter()
            .any(|p| *p > 1 && *p != me && !trusted.contains(p) && self.holds(*p, &needle))
        {
            return None;
        }
        self.identity_known(pid, start, &lineage).1.map(Ok)
    }

    fn identify(&self, peer: SocketAddr, local: SocketAddr) -> Result<Identity, Unattributed> {
        let (inode, uid) = self.socket_owner(peer, local)?;
        let client = canonical(peer).ip();
        let Some((pids, lineage)) = self.owners(inode, uid, client) else {
            return Err(Unattributed::new(format!(
                "no process (readable by the proxy) holds the socket of {peer}"
            )));
        };
        // The first holder keeps its place: its identity is the answer when all agree.
        let mut by_exe: Vec<(PathBuf, Identity)> = Vec::new();
        for pid in &pids {
            let above = match lineage.iter().position(|p| p == pid) {
                Some(i) => &lineage[i + 1..],
                None => &lineage[..],
            };
            let resolved = if Some(pid) == pids.first() {
                self.identity_cached(*pid, above)
            } else {
                self.identity_of(*pid, above)
            };
            match resolved {
                Ok(id) => {
                    if !by_exe.iter().any(|(exe, _)| *exe == id.exe) {
                        by_exe.push((id.exe.clone(), id));
                    }
                }
                Err(why) => {
                    return Err(Unattributed::new(format!(
                        "{why}; it holds the socket of {peer}"
                    )))
                }
            }
        }
        if by_exe.len() > 1 {
            let names: Vec<String> = by_exe
                .iter()
                .map(|(p, _)| p.display().to_string())
                .collect();
            return Err(Unattributed::new(format!(
                "the socket of {peer} is shared by processes running different executables ({})",
                names.join(", ")
            )));
        }
        let (_, identity) = by_exe
            .into_iter()
            .next()
            .ok_or_else(|| Unattributed::new("no owner"))?;
        if let Some(pid) = identity.pid {
            self.remember(client, pid);
        }
        Ok(identity)
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(crate::addr::canonical(addr.ip()), addr.port())
}

/// Finds the inode and uid of the socket whose local address is `peer` and remote is
/// `local`.
fn find_inode(table: &str, peer: SocketAddr, local: SocketAddr) -> Option<(u64, u32)> {
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 {
            continue;
        }
        let (Some(l), Some(r)) = (parse_proc_addr(fields[1]), parse_proc_addr(fields[2])) else {
            continue;
        };
        if canonical(l) == peer && canonical(r) == local {
            if let (Ok(inode), Ok(uid)) = (fields[9].parse::<u64>(), fields[7].parse::<u32>()) {
                if inode != 0 {
                    return Some((inode, uid));
                }
            }
        }
    }
    None
}

/// `0100007F:1F90` or a 32-hex-digit IPv6 address; each 32-bit word is printed in host
/// byte order by the kernel, the port in host order.
fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(&ip[i * 8..i * 8 + 8])?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_tcp_lines() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:D431 0100007F:0CEA 01 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0000000000000000 20 4 30 10 -1\n";
        let peer: SocketAddr = "127.0.0.1:54321".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:3306".parse().unwrap();
        assert_eq!(find_inode(table, peer, local), Some((123456, 1000)));
        assert_eq!(find_inode(table, local, peer), None);
        let v6 = parse_proc_addr("00000000000000000000000001000000:0050").unwrap();
        assert_eq!(v6, "[::1]:80".parse().unwrap());
        let mapped = parse_proc_addr("0000000000000000FFFF00000100007F:0050").unwrap();
        assert_eq!(canonical(mapped), "127.0.0.1:80".parse().unwrap());
    }

    #[test]
    fn resolves_a_real_client_in_this_process_tree() {
        // A child process (sleep via sh) cannot easily connect; use this test process itself
        // through a helper thread and check that the resolver skips the proxy's own pid:
        // the owner is this very process, which the resolver excludes, so it must refuse.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(local).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(client.local_addr().unwrap(), peer);
        let err = ProcResolver::new().identify(peer, local).unwrap_err();
        assert!(err.reason.contains("no process"), "{err}");
    }
}
