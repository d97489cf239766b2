//! The few `/proc/PID` files the broker reads while a caller is stopped, read the cheap way.
//!
//! `std::fs::read` sizes its buffer from the file's length, which procfs reports as 0, and
//! then reads in growing steps (32, 32, 64, 128… bytes): a 3 KiB environment took eight
//! `read` calls, and each read of `environ` or `status` walks the target's memory or
//! task again. These read in one call into a buffer big enough for the usual file.

use std::fs::File;
use std::io::{self, Read};

/// The whole of `path` (a procfs file), in as few reads as its size allows.
pub fn read(path: &str) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(16 << 10);
    File::open(path)?.read_to_end(&mut buf)?;
    Ok(buf)
}

/// What `/proc/PID/stat` says about a process (or thread).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// The parent's pid, in our PID namespace.
    pub ppid: u32,
    /// When the task started, in clock ticks since boot: with the pid, it names one task
    /// (a pid is reused, a pid and its start time are not). The task cannot change it.
    pub start_time: u64,
}

pub fn stat(pid: u32) -> io::Result<Stat> {
    let mut buf = [0u8; 1024];
    let n = File::open(format!("/proc/{pid}/stat"))?.read(&mut buf)?;
    parse_stat(&buf[..n]).ok_or_else(|| io::Error::other(format!("unexpected /proc/{pid}/stat")))
}

/// `pid (comm) state ppid … starttime …`: the command name may contain anything,
/// spaces and parentheses included, so the fields are counted from its last `)`.
fn parse_stat(text: &[u8]) -> Option<Stat> {
    let close = text.iter().rposition(|b| *b == b')')?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    // Fields 3 (state) and 4 (ppid), then 22 (starttime).
    let ppid = fields.nth(1)?.parse().ok()?;
    let start_time = fields.nth(17)?.parse().ok()?;
    Some(Stat { ppid, start_time })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = b"4242 (a) b) (c) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200 ...";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                ppid: 17,
                start_time: 987654
            })
        );
        assert_eq!(parse_stat(b"4242 (x"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = stat(std::process::id()).unwrap();
        assert_eq!(me.ppid, std::os::unix::process::parent_id());
        assert!(me.start_time > 0);
        assert_eq!(stat(std::process::id()).unwrap(), me);
        let path = format!("/proc/{}/environ", std::process::id());
        assert_eq!(read(&path).unwrap(), std::fs::read(&path).unwrap());
    }
}
