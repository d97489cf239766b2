//! Append-only line logs: the gateway's audit log, the proxy's decision log, the mirror's
//! access log.
//!
//! - Each line reaches the kernel in one `write(2)` on an `O_APPEND` file, so lines from
//!   several threads — or several processes sharing the file, like `corral run`'s broker
//!   and proxy — never interleave, and a `kill -9` never leaves half a line behind.
//! - Rotation is followed: when logrotate (or anyone) renames or removes the file, the next
//!   line goes to a new file at the configured path, not into the renamed or unlinked one.
//!   No signal, no `copytruncate`. The path is looked up in the directory opened at start,
//!   so moving that directory (or a parent) away and making another at the old path does
//!   not send later lines to a file someone else prepared.
//! - With [`LineLog::with_fsync`] every line is also flushed to disk before
//!   [`LineLog::append`] returns.
//! - With [`LineLog::with_max_bytes`] the file is rotated by size: a line that would take
//!   it past the bound first renames it to `PATH.1` (replacing the previous one), so the
//!   log never holds more than about twice the bound on disk. What the replaced `PATH.1`
//!   held is counted and handed to the caller ([`LineLog::append_rotating`]), which says so
//!   in the new file: records are never discarded silently.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;

/// An append-only file of lines that follows log rotation.
#[derive(Debug)]
pub struct LineLog {
    path: PathBuf,
    /// The file's name in its directory as opened at start (`/proc/self/fd/N/NAME`), or
    /// the path when the directory cannot be held open.
    pinned: PathBuf,
    _dir: Option<File>,
    mode: u32,
    fsync: bool,
    /// Rotate before a line would take the file past this many bytes.
    max_bytes: Option<u64>,
    /// A rotation of the open file failed: not retried (each try reads the previous
    /// file) until another file is open.
    rotation_failed: AtomicBool,
    file: Mutex<File>,
}

/// A size rotation: the file reached the bound and was renamed to `PATH.1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// Where the full file went.
    pub previous: PathBuf,
    /// Lines of the older `PATH.1` the rename replaced (gone from the disk).
    pub discarded_lines: u64,
}

impl LineLog {
    /// Opens `path` for appending, creating it with permission bits `mode` if missing (the
    /// directory must exist).
    pub fn open(path: &Path, mode: u32) -> io::Result<LineLog> {
        use std::os::fd::AsRawFd;
        let file = open_append(path, mode)?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => File::open(d).ok(),
            _ => File::open(".").ok(),
        };
        let pinned = match (&dir, path.file_name()) {
            (Some(d), Some(name)) => {
                PathBuf::from(format!("/proc/self/fd/{}", d.as_raw_fd())).join(name)
            }
            _ => path.to_path_buf(),
        };
        let pinned = if pinned.exists() {
            pinned
        } else {
            path.to_path_buf()
        };
        Ok(LineLog {
            file: Mutex::new(file),
            path: path.to_path_buf(),
            pinned,
            _dir: dir,
            mode,
            fsync: false,
            max_bytes: None,
            rotation_failed: AtomicBool::new(false),
        })
    }

    /// Rotates the file by size (see the crate documentation); `None` = unbounded. A single
    /// line longer than the bound is still written whole, so a file can exceed the bound by
    /// at most one line.
    pub fn with_max_bytes(mut self, max: Option<u64>) -> LineLog {
        self.max_bytes = max.filter(|m| *m > 0);
        self
    }

    /// Also `fsync` each line before [`append`](Self::append) returns: the line then
    /// survives a power loss, at the cost of a disk flush per line.
    pub fn with_fsync(mut self, on: bool) -> LineLog {
        self.fsync = on;
        self
    }

    /// The configured path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `line`, which must be one whole line ending in `\n`, in one write.
    pub fn append(&self, line: &[u8]) -> io::Result<()> {
        self.append_rotating(line, |_| Vec::new()).map(|_| ())
    }

    /// Appends `line` like [`append`](Self::append); when the size bound makes it rotate
    /// first, the new file starts with the line(s) `marker` makes of the rotation.
    ///
    /// `Ok(None)`: no rotation was due; `Ok(Some(Ok(_)))`: the file was rotated;
    /// `Ok(Some(Err(_)))`: a rotation was due and failed (say, the directory is not
    /// writable), and the line went to the current file anyway — a record is worth more
    /// than the bound, and the caller is told so it can say it.
    pub fn append_rotating(
        &self,
        line: &[u8],
        marker: impl FnOnce(&Rotation) -> Vec<u8>,
    ) -> io::Result<Option<io::Result<Rotation>>> {
        debug_assert!(line.ends_with(b"\n"), "a log line ends with a newline");
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        self.follow_rotation(&mut file)?;
        let rotation = match self.max_bytes {
            Some(max) if !self.rotation_failed.load(Relaxed) => {
                let size = file.metadata()?.len();
                if size > 0 && size + line.len() as u64 > max {
                    let r = self.rotate(&mut file).transpose();
                    if matches!(r, Some(Err(_))) {
                        self.rotation_failed.store(true, Relaxed);
                    }
                    r
                } else {
                    None
                }
            }
            _ => None,
        };
        let mut out = match &rotation {
            Some(Ok(r)) => marker(r),
            _ => Vec::new(),
        };
        out.extend_from_slice(line);
        file.write_all(&out)?;
        if self.fsync {
            file.sync_data()?;
        }
        Ok(rotation)
    }

    /// Renames the full file to `PATH.1` and opens a new one. Another process sharing the
    /// file may have rotated it a moment ago: then the file at the path is already new and
    /// is only followed.
    fn rotate(&self, file: &mut File) -> io::Result<Option<Rotation>> {
        let open = file.metadata().map(|m| (m.dev(), m.ino()))?;
        match std::fs::metadata(&self.pinned) {
            Ok(m) if (m.dev(), m.ino()) == open => {}
            _ => {
                *file = open_append(&self.pinned, self.mode)?;
                return Ok(None);
            }
        }
        let mut previous = self.pinned.clone().into_os_string();
        previous.push(".1");
        let previous = PathBuf::from(previous);
        let max = self.max_bytes.unwrap_or(u64::MAX);
        let discarded_lines = count_lines(&previous, max.saturating_mul(4))?;
        std::fs::rename(&self.pinned, &previous)?;
        *file = open_append(&self.pinned, self.mode)?;
        let mut shown = self.path.clone().into_os_string();
        shown.push(".1");
        Ok(Some(Rotation {
            previous: PathBuf::from(shown),
            discarded_lines,
        }))
    }

    /// When the file at the path is no longer the one open (renamed away, removed,
    /// replaced), opens the one at the path instead.
    fn follow_rotation(&self, file: &mut File) -> io::Result<()> {
        let open = file.metadata().map(|m| (m.dev(), m.ino()))?;
        match std::fs::metadata(&self.pinned) {
            Ok(m) if (m.dev(), m.ino()) == open => Ok(()),
            _ => {
                *file = open_append(&self.pinned, self.mode)?;
                self.rotation_failed.store(false, Relaxed);
                Ok(())
            }
        }
    }
}

/// Lines in the first `limit` bytes of the regular file at `path` (0 when there is none).
/// Anything else found there (a FIFO would block the reader, a device never end) is not
/// read: whoever could put it in the log's directory did not get it from this log.
fn count_lines(path: &Path, limit: u64) -> io::Result<u64> {
    use std::io::Read;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Ok(0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    }
    let mut f = File::open(path)?.take(limit);
    let mut buf = vec![0u8; 64 * 1024];
    let mut lines = 0u64;
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(lines),
            n => lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64,
        }
    }
}

fn open_append(path: &Path, mode: u32) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(mode)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn lines_follow_a_rename_and_a_removal_and_new_files_get_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        let log = LineLog::open(&path, 0o600).unwrap().with_fsync(true);
        log.append(b"one\n").unwrap();
        std::fs::rename(&path, dir.path().join("x.jsonl.1")).unwrap();
        log.append(b"two\n").unwrap();
        std::fs::remove_file(&path).unwrap();
        log.append(b"three\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("x.jsonl.1")).unwrap(),
            "one\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_file_replaced_at_the_path_is_written_in_place_of_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let log = LineLog::open(&path, 0o640).unwrap();
        log.append(b"old\n").unwrap();
        std::fs::write(dir.path().join("new"), "header\n").unwrap();
        std::fs::rename(dir.path().join("new"), &path).unwrap();
        log.append(b"next\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "header\nnext\n");
    }

    #[test]
    fn concurrent_writers_never_interleave_within_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let log = std::sync::Arc::new(LineLog::open(&path, 0o600).unwrap());
        let other = LineLog::open(&path, 0o600).unwrap();
        let writers: Vec<_> = (0..4u8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut line = vec![b'a' + t; 3000];
                    line.push(b'\n');
                    for _ in 0..200 {
                        log.append(&line).unwrap();
                    }
                })
            })
            .collect();
        let mut line = vec![b'z'; 5000];
        line.push(b'\n');
        for _ in 0..200 {
            other.append(&line).unwrap();
        }
        writers.into_iter().for_each(|w| w.join().unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1000);
        for l in text.lines() {
            let first = l.as_bytes()[0];
            assert!(l.bytes().all(|b| b == first), "a torn line");
        }
    }

    #[test]
    fn a_directory_moved_away_and_replaced_does_not_receive_the_lines() {
        let root = tempfile::tempdir().unwrap();
        let logs = root.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let log = LineLog::open(&logs.join("x.log"), 0o600).unwrap();
        log.append(b"one\n").unwrap();
        let moved = root.path().join("logs.moved");
        std::fs::rename(&logs, &moved).unwrap();
        std::fs::create_dir(&logs).unwrap();
        std::fs::write(logs.join("x.log"), "").unwrap();
        log.append(b"two\n").unwrap();
        // The file itself is rotated in its real directory: a new one starts there.
        std::fs::rename(moved.join("x.log"), moved.join("x.log.1")).unwrap();
        log.append(b"three\n").unwrap();
        assert_eq!(std::fs::read_to_string(logs.join("x.log")).unwrap(), "");
        assert_eq!(
            std::fs::read_to_string(moved.join("x.log.1")).unwrap(),
            "one\ntwo\n"
        );
        assert_eq!(
            std::fs::read_to_string(moved.join("x.log")).unwrap(),
            "three\n"
        );
    }

    /// A log rotated past `max` bytes, in a directory of its own.
    fn bounded(max: u64) -> (tempfile::TempDir, PathBuf, LineLog) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        let log = LineLog::open(&path, 0o600)
            .unwrap()
            .with_max_bytes(Some(max));
        (dir, path, log)
    }

    #[test]
    fn the_size_bound_rotates_to_one_previous_file_and_counts_what_it_replaces() {
        let (dir, path, log) = bounded(100);
        let line = [vec![b'x'; 39], vec![b'\n']].concat();
        let marker = |r: &Rotation| format!("rotated {}\n", r.discarded_lines).into_bytes();
        let mut rotations = Vec::new();
        for _ in 0..12 {
            if let Some(r) = log.append_rotating(&line, marker).unwrap() {
                rotations.push(r.unwrap().discarded_lines);
            }
        }
        // Two lines fit (then a marker and two); each rotation replaces the previous file.
        assert_eq!(rotations, vec![0, 2, 3, 3, 3]);
        let now = std::fs::read_to_string(&path).unwrap();
        let prev = std::fs::read_to_string(dir.path().join("d.jsonl.1")).unwrap();
        assert_eq!(now.lines().collect::<Vec<_>>()[0], "rotated 3");
        assert_eq!(prev.lines().count(), 3);
        for text in [&now, &prev] {
            assert!(text.len() <= 100 + line.len(), "{}", text.len());
        }
        let entries = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(entries, 2, "only PATH and PATH.1");
    }

    #[test]
    fn a_line_longer_than_the_bound_is_written_whole() {
        let (dir, path, log) = bounded(10);
        log.append(b"a long line indeed\n").unwrap();
        log.append(b"and another one\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "and another one\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("d.jsonl.1")).unwrap(),
            "a long line indeed\n"
        );
    }

    #[test]
    fn a_rotation_that_fails_still_writes_the_line_and_says_so() {
        let (dir, path, log) = bounded(10);
        // A non-empty directory at PATH.1 cannot be renamed over.
        std::fs::create_dir_all(dir.path().join("d.jsonl.1/x")).unwrap();
        log.append(b"first line\n").unwrap();
        let failed = log.append_rotating(b"second\n", |_| Vec::new()).unwrap();
        assert!(matches!(failed, Some(Err(_))), "{failed:?}");
        // Not retried for this file: the next line is written without a try.
        assert!(log
            .append_rotating(b"third\n", |_| Vec::new())
            .unwrap()
            .is_none());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "first line\nsecond\nthird\n"
        );
    }

    #[test]
    fn a_missing_directory_is_an_error_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let err = LineLog::open(&dir.path().join("no/such/x.log"), 0o600).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
