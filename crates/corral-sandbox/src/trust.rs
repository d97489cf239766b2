//! Which code may carry a grant: at each brokered connect, every file the caller has
//! mapped as code (its executable, the loader, every shared library — `/proc/PID/maps`
//! entries with `x`) must be one the sandbox cannot have written, or one whose SHA-256 is
//! vouched for: pinned by the policy (`sha256:`), recorded by `corral install` after it
//! checked the mirror's manifest, or the hash of corral's own binary.
//!
//! This does not depend on naming the ways to load code (`LD_PRELOAD`, `LD_LIBRARY_PATH`,
//! `OPENSSL_CONF` providers, `NODE_OPTIONS=--openssl-config`, `dlopen` from a plugin
//! path…): whatever the route, the library ends up mapped, and the map says from where.
//! It cannot see code that is not a file: an interpreter or JIT runtime (python, node, bun)
//! runs any script with its own mappings, so a grant to one covers every script it runs
//! (the remedy is request rules), and anonymous executable memory is not examined.
//!
//! "The sandbox can write" is the filesystem view's writable paths when Landlock enforces
//! it; without Landlock, anything under `HOME`, owned by the user (unless root), or in a
//! world-writable directory.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Decides whether a file the sandbox could write is vouched for by its hash.
pub type PinCheck = dyn Fn(&Path, &str) -> bool + Send + Sync;

/// What the supervisor trusts.
pub struct TrustRules {
    /// The view's writable paths, when Landlock enforces them.
    pub sandbox_writable: Option<Vec<PathBuf>>,
    pub home: Option<PathBuf>,
    /// `corral install`'s record (`claude-install.json`), read when needed: an upgrade
    /// during a session is trusted at once.
    pub install_record: Option<PathBuf>,
    /// SHA-256 of corral's own executable.
    pub own_sha: OwnHash,
    /// Whether the policy in force pins `path` to `sha`.
    pub pinned: Box<PinCheck>,
}

/// The SHA-256 of corral's own executable, computed the first time a decision needs it:
/// hashing a release binary (16 MB) at every start cost ~10 ms, and most sessions never
/// meet a file the sandbox can write whose hash could be corral's.
pub struct OwnHash {
    path: Option<PathBuf>,
    value: std::sync::OnceLock<Option<String>>,
}

impl OwnHash {
    /// The hash of the file at `path`, when asked.
    pub fn of(path: Option<PathBuf>) -> OwnHash {
        OwnHash {
            path,
            value: std::sync::OnceLock::new(),
        }
    }

    /// A hash known already (or none).
    pub fn known(sha: Option<String>) -> OwnHash {
        OwnHash {
            path: None,
            value: std::sync::OnceLock::from(sha),
        }
    }

    pub fn get(&self) -> Option<&str> {
        self.value
            .get_or_init(|| {
                let path = self.path.as_ref()?;
                File::open(path).and_then(|mut f| sha256_of(&mut f)).ok()
            })
            .as_deref()
    }
}

/// A mapped file that may not carry a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untrusted {
    pub path: String,
    pub why: String,
}

/// Code files by (dev, inode, size, mtime, ctime): the verdict for each, so a process's
/// libraries are judged once per session.
#[derive(Default)]
pub struct Verdicts {
    /// (file, mapped as the executable) → why it may not carry a grant.
    by_file: Mutex<HashMap<(FileKey, bool), Option<String>>>,
    /// Files (device, inode, mapped as the executable) the sandbox cannot write and that
    /// have no other name: their contents cannot change under the sandbox, so they are
    /// trusted on sight, without a `stat`.
    out_of_reach: Mutex<std::collections::HashSet<(u64, u64, bool)>>,
}

/// One executable file mapping of a `/proc/PID/maps` line.
#[derive(Debug, PartialEq, Eq)]
struct Mapped<'a> {
    path: &'a str,
    dev: u64,
    ino: u64,
}

/// (device, inode, size, mtime, ctime): a file's contents, as far as `stat` can tell.
type FileKey = (u64, u64, u64, i64, i64);

impl TrustRules {
    /// Trusts nothing that the sandbox could write (tests, and when no rules are given).
    pub fn strict() -> TrustRules {
        TrustRules {
            sandbox_writable: None,
            home: std::env::var_os("HOME").map(PathBuf::from),
            install_record: None,
            own_sha: OwnHash::known(None),
            pinned: Box::new(|_, _| false),
        }
    }

    /// Whether the sandbox could have written (or replaced) the file at `path`.
    pub fn sandbox_could_write(&self, path: &Path, meta: &std::fs::Metadata) -> bool {
        match &self.sandbox_writable {
            Some(writable) => writable.iter().any(|w| path.starts_with(w)),
            None => self.user_could_write(path, meta),
        }
    }

    /// Whether the user could have written the file at `path` (so a sandbox of an earlier
    /// session, with a wider view, could have): under `HOME`, owned by the user (unless
    /// root), or in a world-writable directory.
    pub fn user_could_write(&self, path: &Path, meta: &std::fs::Metadata) -> bool {
        let (uid, _) = crate::sys::ids();
        if self.home.as_deref().is_some_and(|h| path.starts_with(h)) {
            return true;
        }
        let user_may =
            |m: &std::fs::Metadata| (uid != 0 && m.uid() == uid) || m.mode() & 0o002 != 0;
        user_may(meta)
            || path
                .ancestors()
                .skip(1)
                .any(|d| std::fs::metadata(d).is_ok_and(|m| user_may(&m)))
    }

    /// Whether `sha` of `path` is vouched for.
    pub fn vouched(&self, path: &Path, sha: &str) -> bool {
        self.own_sha.get() == Some(sha)
            || (self.pinned)(path, sha)
            || self
                .install_record
                .as_deref()
                .is_some_and(|r| recorded_hashes(r).values().any(|h| h == sha))
    }

    /// Checks every file `pid` has mapped as code. The executable (`exe`) is held to the
    /// stricter rule: a program under a directory the user can write is trusted only by
    /// hash, since a sandbox of another session may have put it there.
    pub fn check_mappings(
        &self,
        pid: u32,
        exe: &Path,
        verdicts: &Verdicts,
    ) -> Result<(), MapsError> {
        let file = match std::fs::File::open(format!("/proc/{pid}/maps")) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(MapsError::Gone),
            Err(e) => return Err(MapsError::Unreadable(e.to_string())),
        };
        match crate::sys::procmap::exec_file_mappings(std::os::fd::AsFd::as_fd(&file)) {
            Ok(Some(mappings)) => return self.check_queried(pid, &file, &mappings, verdicts),
            Ok(None) => {}
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Err(MapsError::Gone),
            Err(e) => return Err(MapsError::Unreadable(e.to_string())),
        }
        // Without PROCMAP_QUERY (before Linux 6.11): the text of the maps.
        let mut seen: Vec<&str> = Vec::new();
        let mut lines = Vec::new();
        for line in io::BufReader::new(file).lines() {
            lines.push(line.map_err(|e| MapsError::Unreadable(e.to_string()))?);
        }
        let mut root: Option<File> = None;
        for line in &lines {
            let Some(mapped) = executable_file(line) else {
                continue;
            };
            if seen.contains(&mapped.path) {
                continue;
            }
            seen.push(mapped.path);
            let is_exe = Path::new(mapped.path) == exe;
            if let Some(why) = self.judge(pid, &mapped, is_exe, &mut root, verdicts) {
                return Err(MapsError::Untrusted(Untrusted {
                    path: mapped.path.trim_end_matches(" (deleted)").to_string(),
                    why,
                }));
            }
        }
        Ok(())
    }

    /// The check with the kernel's answers to `PROCMAP_QUERY`: a mapping's path is asked
    /// for only when its file is not yet known to be out of the sandbox's reach.
    fn check_queried(
        &self,
        pid: u32,
        maps: &File,
        mappings: &[crate::sys::procmap::ExecMapping],
        verdicts: &Verdicts,
    ) -> Result<(), MapsError> {
        let exe = std::fs::metadata(format!("/proc/{pid}/exe"))
            .map(|m| (m.dev(), m.ino()))
            .ok();
        let mut seen: Vec<(u64, u64)> = Vec::new();
        let mut root: Option<File> = None;
        for m in mappings {
            if seen.contains(&(m.dev, m.ino)) {
                continue;
            }
            seen.push((m.dev, m.ino));
            let is_exe = exe == Some((m.dev, m.ino));
            if lock(&verdicts.out_of_reach).contains(&(m.dev, m.ino, is_exe)) {
                continue;
            }
            let (path, dev, ino) =
                match crate::sys::procmap::mapping_name(std::os::fd::AsFd::as_fd(maps), m.start) {
                    Ok(v) => v,
                    // Unmapped since: what is mapped now is checked at the next connect.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Err(MapsError::Gone),
                    Err(e) => return Err(MapsError::Unreadable(e.to_string())),
                };
            let mapped = Mapped {
                path: &path,
                dev,
                ino,
            };
            let is_exe = exe == Some((dev, ino));
            if let Some(why) = self.judge(pid, &mapped, is_exe, &mut root, verdicts) {
                return Err(MapsError::Untrusted(Untrusted {
                    path: path.trim_end_matches(" (deleted)").to_string(),
                    why,
                }));
            }
        }
        Ok(())
    }

    /// `None` when the mapped file may carry a grant, else why not. The file is examined
    /// as the caller sees it — its path resolved below its root (`/proc/PID/root`, the
    /// sandbox's mount namespace) — and must be the very file mapped (device and inode).
    fn judge(
        &self,
        pid: u32,
        mapped: &Mapped,
        is_exe: bool,
        root: &mut Option<File>,
        verdicts: &Verdicts,
    ) -> Option<String> {
        let path = mapped.path;
        if path.ends_with(" (deleted)") || path.starts_with("/memfd:") {
            return Some("is not a file on disk any more (deleted, or an in-memory file)".into());
        }
        let sight = (mapped.dev, mapped.ino, is_exe);
        if lock(&verdicts.out_of_reach).contains(&sight) {
            return None;
        }
        let p = Path::new(path);
        // Fail closed: what cannot be examined cannot be vouched for.
        let unexamined = || {
            Some(format!(
                "cannot be examined from outside the sandbox (pid {pid})"
            ))
        };
        if root.is_none() {
            *root = File::open(format!("/proc/{pid}/root")).ok();
        }
        let Some(dir) = root.as_ref() else {
            return unexamined();
        };
        let Ok(rel) = std::ffi::CString::new(path.trim_start_matches('/')) else {
            return unexamined();
        };
        let Ok(fd) = crate::sys::open_path_beneath(std::os::fd::AsFd::as_fd(dir), &rel, true)
        else {
            return unexamined();
        };
        let opened = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        let Ok(meta) = std::fs::metadata(&opened) else {
            return unexamined();
        };
        if (meta.dev(), meta.ino()) != (mapped.dev, mapped.ino) {
            return Some(format!(
                "is not the file mapped at that path (pid {pid}: replaced since it was mapped)"
            ));
        }
        let key = (
            (
                meta.dev(),
                meta.ino(),
                meta.size(),
                meta.mtime(),
                meta.ctime(),
            ),
            is_exe,
        );
        if let Some(v) = lock(&verdicts.by_file).get(&key) {
            return v.clone();
        }
        let reachable = if is_exe {
            self.user_could_write(p, &meta) || self.sandbox_could_write(p, &meta)
        } else {
            self.sandbox_could_write(p, &meta)
        };
        let verdict = if !reachable {
            // A file with another name might be writable through it: judged each time.
            if meta.nlink() == 1 {
                lock(&verdicts.out_of_reach).insert(sight);
            }
            None
        } else {
            match std::fs::File::open(&opened).and_then(|mut f| sha256_of(&mut f)) {
                Ok(sha) if self.vouched(p, &sha) => None,
                Ok(_) => Some(format!(
                    "lies where {} can write, and no pin (the policy's sha256, corral install's record) vouches for its hash",
                    if is_exe { "you (and so a sandbox given write access there)" } else { "the sandbox" }
                )),
                Err(e) => Some(format!("cannot be read to check its hash ({e})")),
            }
        };
        lock(&verdicts.by_file).insert(key, verdict.clone());
        verdict
    }
}

/// Why the maps check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapsError {
    Gone,
    Unreadable(String),
    Untrusted(Untrusted),
}

/// The file of a `/proc/PID/maps` line mapped executable, if any.
fn executable_file(line: &str) -> Option<Mapped<'_>> {
    // address perms offset dev inode [path]; the path may contain spaces.
    let mut rest = line;
    let mut fields = Vec::with_capacity(5);
    for _ in 0..5 {
        rest = rest.trim_start();
        let end = rest.find(' ').unwrap_or(rest.len());
        fields.push(&rest[..end]);
        rest = &rest[end..];
    }
    let perms = fields.get(1)?;
    let inode = fields.get(4)?;
    if perms.as_bytes().get(2) != Some(&b'x') || *inode == "0" {
        return None;
    }
    let path = rest.trim_start();
    let (major, minor) = fields.get(3)?.split_once(':')?;
    let dev = libc::makedev(
        u32::from_str_radix(major, 16).ok()?,
        u32::from_str_radix(minor, 16).ok()?,
    );
    let ino = inode.parse().ok()?;
    (path.starts_with('/')).then_some(Mapped { path, dev, ino })
}

/// The hashes `corral install` recorded (`versions: {V: sha}`).
pub fn recorded_hashes(record: &Path) -> BTreeMap<String, String> {
    #[derive(serde::Deserialize)]
    struct Record {
        #[serde(default)]
        versions: BTreeMap<String, String>,
    }
    std::fs::read(record)
        .ok()
        .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
        .map(|r| r.versions)
        .unwrap_or_default()
}

/// Where `corral install` keeps its record.
pub fn install_record(home: Option<&Path>) -> Option<PathBuf> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home.map(|h| h.join(".local/share")))?;
    Some(data.join("corral/claude-install.json"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The SHA-256 of what `file` holds, in hex.
pub fn sha256_of(file: &mut File) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_executable_file_mappings_only() {
        let l = "7f1c2a000000-7f1c2a022000 r-xp 00002000 08:01 1234 /usr/lib/x86_64-linux-gnu/libc.so.6";
        assert_eq!(
            executable_file(l),
            Some(Mapped {
                path: "/usr/lib/x86_64-linux-gnu/libc.so.6",
                dev: libc::makedev(8, 1),
                ino: 1234
            })
        );
        let spaced =
            "7f1c2a000000-7f1c2a022000 r-xp 00000000 fd:1a 99 /tmp/a dir/evil.so (deleted)";
        assert_eq!(
            executable_file(spaced).map(|m| (m.path, m.dev)),
            Some(("/tmp/a dir/evil.so (deleted)", libc::makedev(0xfd, 0x1a)))
        );
        assert_eq!(
            executable_file(
                "7f1c2a000000-7f1c2a022000 r--p 00000000 08:01 1234 /usr/lib/libc.so.6"
            ),
            None
        );
        assert_eq!(
            executable_file("7ffd1a5f0000-7ffd1a5f2000 r-xp 00000000 00:00 0 [vdso]"),
            None
        );
        assert_eq!(executable_file("7f00-7f01 rwxp 00000000 00:00 0 "), None);
    }

    #[test]
    fn this_process_maps_only_code_outside_writable_paths() {
        let dir = tempfile::tempdir().unwrap();
        let rules = TrustRules {
            sandbox_writable: Some(vec![dir.path().to_path_buf()]),
            ..TrustRules::strict()
        };
        let v = Verdicts::default();
        let exe = std::env::current_exe().unwrap();
        // The test binary lives in target/, outside the writable path.
        assert_eq!(rules.check_mappings(std::process::id(), &exe, &v), Ok(()));
        let everything = TrustRules {
            sandbox_writable: Some(vec![PathBuf::from("/")]),
            ..TrustRules::strict()
        };
        match everything.check_mappings(std::process::id(), &exe, &Verdicts::default()) {
            Err(MapsError::Untrusted(u)) => assert!(u.why.contains("no pin"), "{u:?}"),
            other => panic!("{other:?}"),
        }
        let sha = sha256_of(&mut std::fs::File::open(&exe).unwrap()).unwrap();
        let pinned_all = TrustRules {
            sandbox_writable: Some(vec![PathBuf::from("/")]),
            pinned: Box::new(|_, _| true),
            ..TrustRules::strict()
        };
        assert_eq!(
            pinned_all.check_mappings(std::process::id(), &exe, &v),
            Ok(())
        );
        let own = TrustRules {
            sandbox_writable: Some(vec![exe.parent().unwrap().to_path_buf()]),
            own_sha: OwnHash::known(Some(sha)),
            ..TrustRules::strict()
        };
        assert_eq!(
            own.check_mappings(std::process::id(), &exe, &Verdicts::default()),
            Ok(())
        );
    }

    /// The per-connect cost of the maps check (run by hand: `cargo test -p corral-sandbox
    /// maps_check_cost -- --ignored --nocapture`; numbers go to docs/benchmarks.md).
    #[test]
    #[ignore]
    fn maps_check_cost() {
        let mut node = std::process::Command::new("node")
            .args(["-e", "setTimeout(() => {}, 10000)"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let rules = TrustRules {
            sandbox_writable: Some(vec![PathBuf::from("/tmp")]),
            ..TrustRules::strict()
        };
        for (who, pid) in [("this test", std::process::id()), ("node", node.id())] {
            let lines = std::fs::read_to_string(format!("/proc/{pid}/maps"))
                .unwrap()
                .lines()
                .count();
            let cold = std::time::Instant::now();
            rules
                .check_mappings(pid, Path::new("/"), &Verdicts::default())
                .unwrap();
            let cold = cold.elapsed();
            let warm_verdicts = Verdicts::default();
            rules
                .check_mappings(pid, Path::new("/"), &warm_verdicts)
                .unwrap();
            let n = 1000;
            let t = std::time::Instant::now();
            for _ in 0..n {
                rules
                    .check_mappings(pid, Path::new("/"), &warm_verdicts)
                    .unwrap();
            }
            println!(
                "{who}: {lines} map lines, first check {cold:?}, then {:?} per connect",
                t.elapsed() / n
            );
        }
        node.kill().unwrap();
        node.wait().unwrap();
    }
}
