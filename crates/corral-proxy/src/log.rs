//! The decision log: one JSON object per line for every decision, allow and deny.
//! The format is documented in `docs/logs.md`; `corral policy suggest` reads it back.
//!
//! The log is bounded, because a sandbox can make refusals as fast as it likes: identical
//! refusals fold into one summary line per window (`fold.rs`), the file rotates by size
//! (keeping one previous file), and the terminal notices are rate-limited (`notices.rs`).
//! Nothing goes silently: what was folded, rotated away or could not be written is counted
//! in the log itself and in the metrics ([`LogStats`]).

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use corral_logfile::{LineLog, Rotation};

use crate::fold::{Folds, Offer};
use crate::notices::Notices;
pub use crate::record::{now_rfc3339, refusal, LogRecord, Repeated};
use serde::Serialize;

/// The file's default size bound: it rotates to `FILE.1` past this, so the log takes at
/// most about twice this on disk.
pub const DEFAULT_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// What the log did besides writing records one by one (exposed by `/metrics`).
#[derive(Debug, Default)]
pub struct LogStats {
    /// Refusals folded into a summary line instead of written one by one.
    pub folded: AtomicU64,
    /// Size rotations of the file.
    pub rotations: AtomicU64,
    /// Records removed from the disk by a rotation (the replaced `FILE.1`).
    pub discarded: AtomicU64,
    /// Records that could not be written (an I/O error such as a full disk).
    pub lost: AtomicU64,
    /// Terminal notices held back by their rate bound.
    pub notices_held: AtomicU64,
}

/// A line about the log itself: a rotation, or records a write error lost.
#[derive(Serialize)]
struct LogEvent<'a> {
    time: String,
    kind: &'a str,
    reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    discarded_records: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lost_records: Option<u64>,
}

impl LogEvent<'_> {
    fn line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// Where decision records go: a file (appended, size-bounded) and/or stderr, plus optional
/// one-line notices of refusals for a person watching the terminal. Shared by reference
/// (the proxy's configuration holds it; `corral run`'s broker writes through the same one,
/// so folding and the size bound see both).
pub struct DecisionLog {
    file: Option<LineLog>,
    stderr: bool,
    notices: Option<Notices>,
    folds: Folds,
    stats: Arc<LogStats>,
    /// Records lost since the last line that reached the file.
    gap: AtomicU64,
    /// A size rotation failed (said once).
    rotation_failed: std::sync::atomic::AtomicBool,
}

impl DecisionLog {
    fn with(file: Option<LineLog>, stderr: bool) -> DecisionLog {
        DecisionLog {
            file,
            stderr,
            notices: None,
            folds: Folds::new(crate::fold::WINDOW, crate::fold::MAX_OPEN),
            stats: Arc::default(),
            gap: AtomicU64::new(0),
            rotation_failed: Default::default(),
        }
    }

    /// No decision log (metrics still count).
    pub fn disabled() -> DecisionLog {
        DecisionLog::with(None, false)
    }

    /// JSON lines on stderr.
    pub fn stderr() -> DecisionLog {
        DecisionLog::with(None, true)
    }

    /// Appends JSON lines to `path` (created with mode 0600 if missing), following log
    /// rotation, and rotating it past [`DEFAULT_MAX_BYTES`] (see [`with_max_bytes`]).
    ///
    /// [`with_max_bytes`]: DecisionLog::with_max_bytes
    pub fn to_file(path: &Path) -> std::io::Result<DecisionLog> {
        let file = LineLog::open(path, 0o600)?.with_max_bytes(Some(DEFAULT_MAX_BYTES));
        Ok(DecisionLog::with(Some(file), false))
    }

    /// The file's size bound (`0` = none: rotation is left to logrotate).
    pub fn with_max_bytes(mut self, max: u64) -> DecisionLog {
        self.file = self.file.take().map(|f| f.with_max_bytes(Some(max)));
        self
    }

    /// Also write to stderr.
    pub fn with_stderr(mut self, on: bool) -> DecisionLog {
        self.stderr = on;
        self
    }

    /// Also tell a person on stderr about each distinct refusal, once and at a bounded
    /// rate, ending with `fix` (the command that prints the policy lines, e.g.
    /// `corral policy suggest …`).
    pub fn with_notices(mut self, fix: String) -> DecisionLog {
        self.notices = Some(Notices::new(fix));
        self
    }

    /// The counters `/metrics` shows.
    pub fn stats(&self) -> Arc<LogStats> {
        self.stats.clone()
    }

    /// Records one decision: written as one line, or folded into a later summary if it
    /// repeats a refusal of the current window. Each line is a single `write` on an
    /// `O_APPEND` file, so concurrent writers never interleave within a line.
    pub fn record(&self, record: &LogRecord) {
        let now = Instant::now();
        if let Some(n) = &self.notices {
            let (text, held) = n.tell(record, now);
            if held {
                self.stats.notices_held.fetch_add(1, Relaxed);
            }
            say(&text);
        }
        if self.file.is_none() && !self.stderr {
            return;
        }
        match self.folds.offer(record, now) {
            Offer::Folded => {
                self.stats.folded.fetch_add(1, Relaxed);
            }
            Offer::Write(summaries) => {
                for s in &summaries {
                    self.write(s);
                }
                self.write(record);
            }
        }
    }

    /// Writes the summaries of fold windows that have ended and what the notices held
    /// back. The proxy calls it about once a second.
    pub fn tick(&self) {
        let now = Instant::now();
        for s in self.folds.expire(Some(now)) {
            self.write(&s);
        }
        if let Some(n) = &self.notices {
            say(&n.tick(Some(now)));
        }
    }

    /// Writes every pending summary and held-back count now (at the end of a session).
    pub fn flush(&self) {
        for s in self.folds.expire(None) {
            self.write(&s);
        }
        if let Some(n) = &self.notices {
            say(&n.tick(None));
        }
    }

    fn write(&self, record: &LogRecord) {
        let mut line = match serde_json::to_vec(record) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot serialise a decision record: {e}");
                return;
            }
        };
        line.push(b'\n');
        if let Some(file) = &self.file {
            self.append(file, line.clone());
        }
        if self.stderr {
            let _ = std::io::stderr().lock().write_all(&line);
        }
    }

    /// Appends one record's line, preceded by a line for records lost since the last
    /// successful write; counts a rotation's discarded records and a failed write.
    fn append(&self, file: &LineLog, line: Vec<u8>) {
        let gap = self.gap.swap(0, Relaxed);
        let mut out = Vec::new();
        if gap > 0 {
            out = LogEvent {
                time: now_rfc3339(),
                kind: "log_gap",
                reason: format!("{gap} record(s) could not be written to this log"),
                previous: None,
                discarded_records: None,
                lost_records: Some(gap),
            }
            .line();
        }
        out.extend_from_slice(&line);
        let marker = |r: &Rotation| {
            LogEvent {
                time: now_rfc3339(),
                kind: "log_rotated",
                reason: format!(
                    "the log reached its size bound and was renamed to {}; the file it replaced held {} record(s), now gone",
                    r.previous.display(),
                    r.discarded_lines
                ),
                previous: Some(r.previous.display().to_string()),
                discarded_records: Some(r.discarded_lines),
                lost_records: None,
            }
            .line()
        };
        match file.append_rotating(&out, marker) {
            Ok(Some(Ok(r))) => {
                self.stats.rotations.fetch_add(1, Relaxed);
                self.stats.discarded.fetch_add(r.discarded_lines, Relaxed);
            }
            Ok(Some(Err(e))) => {
                // The record is kept past the bound rather than lost; said once.
                if !self.rotation_failed.swap(true, Relaxed) {
                    tracing::error!(
                        "cannot rotate the decision log {}: {e}; it now grows past its size bound (check that its directory is writable)",
                        file.path().display()
                    );
                }
            }
            Ok(None) => {}
            Err(e) => {
                self.gap.fetch_add(gap + 1, Relaxed);
                self.stats.lost.fetch_add(1, Relaxed);
                // Said once per run of failures, not once per record.
                if gap == 0 {
                    tracing::error!(
                        "cannot write the decision log {}: {e}; records are counted until writing works again",
                        file.path().display()
                    );
                }
            }
        }
    }
}

impl Drop for DecisionLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Prints terminal notices (already whole lines).
fn say(text: &str) {
    if !text.is_empty() {
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_policy::Report;

    #[test]
    fn log_times_are_utc_rfc3339_with_milliseconds() {
        let t = now_rfc3339();
        assert_eq!(t.len(), "2026-11-27T03:45:14.123Z".len(), "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
        assert!(humantime::parse_rfc3339(&t).is_ok(), "{t}");
    }

    #[test]
    fn a_flood_of_refusals_stays_within_the_bound_and_says_what_it_folded_and_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        let bound = 48 * 1024;
        let log = DecisionLog::to_file(&path).unwrap().with_max_bytes(bound);
        for port in 0..2000u16 {
            for _ in 0..5 {
                log.record(&LogRecord::new(
                    "direct",
                    Report {
                        binary: "/usr/bin/python3".into(),
                        host: "127.0.0.1".into(),
                        port: port % 100,
                        ..refusal("direct_connect", "a connection aimed elsewhere")
                    },
                ));
            }
        }
        log.flush();
        let stats = log.stats();
        // 100 distinct refusals, each written once; the other 9,900 folded.
        assert_eq!(stats.folded.load(Relaxed), 9_900);
        let text = std::fs::read_to_string(&path).unwrap();
        let previous = std::fs::read_to_string(dir.path().join("d.jsonl.1")).unwrap();
        assert!(text.len() < bound as usize + 1024 && previous.len() < bound as usize + 1024);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .chain(previous.lines())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let summarised: u64 = lines
            .iter()
            .filter_map(|l| l["repeated"]["count"].as_u64())
            .sum();
        assert_eq!(
            summarised, 9_900,
            "every folded refusal is in a summary line"
        );
        // 200 lines of about 330 bytes: one rotation, which replaced nothing.
        assert_eq!(stats.rotations.load(Relaxed), 1);
        assert_eq!(stats.discarded.load(Relaxed), 0);
        assert!(text
            .lines()
            .next()
            .unwrap()
            .contains("\"kind\":\"log_rotated\""));
    }
}
