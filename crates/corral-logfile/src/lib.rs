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

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
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
    file: Mutex<File>,
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
        })
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
        debug_assert!(line.ends_with(b"\n"), "a log line ends with a newline");
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        self.follow_rotation(&mut file)?;
        file.write_all(line)?;
        if self.fsync {
            file.sync_data()?;
        }
        Ok(())
    }

    /// When the file at the path is no longer the one open (renamed away, removed,
    /// replaced), opens the one at the path instead.
    fn follow_rotation(&self, file: &mut File) -> io::Result<()> {
        let open = file.metadata().map(|m| (m.dev(), m.ino()))?;
        match std::fs::metadata(&self.pinned) {
            Ok(m) if (m.dev(), m.ino()) == open => Ok(()),
            _ => {
                *file = open_append(&self.pinned, self.mode)?;
                Ok(())
            }
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

    #[test]
    fn a_missing_directory_is_an_error_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let err = LineLog::open(&dir.path().join("no/such/x.log"), 0o600).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
