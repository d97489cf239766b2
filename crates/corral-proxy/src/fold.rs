//! Folding identical refusals: a sandbox that retries a refused connection in a loop must
//! not fill the disk with copies of one line.
//!
//! Two refusals are *identical* when they have the same record kind, executable, host (as
//! the client wrote it), port, reason code and deciding policy generation. The process,
//! connection, client address and time may differ: a loop that forks a new `curl` each
//! round is still one refusal. The
//! first refusal of a key is written at once (so a person, and `corral policy suggest`, sees
//! it immediately) and opens a window; identical refusals inside the window are only
//! counted. When the window ends one summary line — the last of them, with
//! `repeated: {count, first, last}` — says how many were folded and when. Allowed decisions
//! are never folded: each is a line of the audit trail.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::record::{LogRecord, Repeated};

/// How long identical refusals fold into one summary.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);
/// Distinct refusals followed at once; beyond that a new refusal is written unfolded
/// (the file's size bound still holds).
pub(crate) const MAX_OPEN: usize = 4096;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    kind: String,
    binary: String,
    host: String,
    port: u16,
    code: String,
    generation: u64,
}

impl Key {
    fn of(r: &LogRecord) -> Key {
        Key {
            kind: r.kind.clone(),
            binary: r.report.binary.clone(),
            host: r.report.host.clone(),
            port: r.report.port,
            code: r.report.error.clone().unwrap_or_default(),
            generation: r.policy_generation,
        }
    }
}

/// One key's window.
struct Open {
    opened: Instant,
    folded: u64,
    first: String,
    last: Option<LogRecord>,
}

impl Open {
    fn new(opened: Instant) -> Open {
        Open {
            opened,
            folded: 0,
            first: String::new(),
            last: None,
        }
    }

    /// The summary line of a window that folded anything.
    fn summary(self) -> Option<LogRecord> {
        let mut last = self.last?;
        last.repeated = Some(Repeated {
            count: self.folded,
            first: self.first,
            last: last.time.clone(),
        });
        Some(last)
    }
}

/// What to do with an offered record.
#[derive(Debug)]
pub(crate) enum Offer {
    /// Counted into an open window: write nothing now.
    Folded,
    /// Write these summaries of ended windows, then the record.
    Write(Vec<LogRecord>),
}

/// The open windows of one decision log.
pub(crate) struct Folds {
    window: Duration,
    max_open: usize,
    open: Mutex<HashMap<Key, Open>>,
}

impl Folds {
    pub(crate) fn new(window: Duration, max_open: usize) -> Folds {
        Folds {
            window,
            max_open,
            open: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn offer(&self, record: &LogRecord, now: Instant) -> Offer {
        if record.report.decision != "deny" || record.repeated.is_some() {
            return Offer::Write(Vec::new());
        }
        let key = Key::of(record);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = open.get_mut(&key) {
            if now.duration_since(o.opened) < self.window {
                o.folded += 1;
                if o.folded == 1 {
                    o.first = record.time.clone();
                }
                o.last = Some(record.clone());
                return Offer::Folded;
            }
            let ended = std::mem::replace(o, Open::new(now));
            return Offer::Write(ended.summary().into_iter().collect());
        }
        let mut summaries = Vec::new();
        if open.len() >= self.max_open {
            summaries = self.take_ended(&mut open, Some(now));
        }
        if open.len() < self.max_open {
            open.insert(key, Open::new(now));
        }
        Offer::Write(summaries)
    }

    /// Closes the windows that have ended by `now` (all of them for `None`) and returns
    /// their summaries.
    pub(crate) fn expire(&self, now: Option<Instant>) -> Vec<LogRecord> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        self.take_ended(&mut open, now)
    }

    fn take_ended(&self, open: &mut HashMap<Key, Open>, now: Option<Instant>) -> Vec<LogRecord> {
        let ended: Vec<Key> = open
            .iter()
            .filter(|(_, o)| now.is_none_or(|n| n.duration_since(o.opened) >= self.window))
            .map(|(k, _)| k.clone())
            .collect();
        let mut summaries: Vec<LogRecord> = ended
            .into_iter()
            .filter_map(|k| open.remove(&k)?.summary())
            .collect();
        summaries.sort_by(|a, b| a.time.cmp(&b.time));
        summaries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_policy::Report;

    fn refusal(binary: &str, port: u16, code: &str, time: &str) -> LogRecord {
        let mut r = LogRecord::new(
            "connect",
            Report {
                binary: binary.into(),
                host: "denied.test".into(),
                port,
                ..crate::record::refusal(code, "r")
            },
        );
        r.time = time.into();
        r
    }

    fn written(o: Offer) -> Option<Vec<LogRecord>> {
        match o {
            Offer::Folded => None,
            Offer::Write(s) => Some(s),
        }
    }

    #[test]
    fn identical_refusals_fold_into_one_summary_per_window() {
        let f = Folds::new(Duration::from_secs(10), 16);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(
            written(f.offer(&refusal("/c", 1, "no_endpoint", "a"), at(0)))
                .unwrap()
                .len(),
            0
        );
        // Another pid or time is the same refusal; another port, binary or code is not.
        for (i, t) in ["b", "c", "d"].iter().enumerate() {
            let mut r = refusal("/c", 1, "no_endpoint", t);
            r.pid = Some(i as u32);
            assert!(written(f.offer(&r, at(1 + i as u64))).is_none());
        }
        assert!(written(f.offer(&refusal("/c", 2, "no_endpoint", "x"), at(1))).is_some());
        assert!(written(f.offer(&refusal("/p", 1, "no_endpoint", "x"), at(1))).is_some());
        assert!(written(f.offer(&refusal("/c", 1, "port_not_allowed", "x"), at(1))).is_some());
        assert!(f.expire(Some(at(9))).is_empty(), "the window is still open");
        let s = f.expire(Some(at(10)));
        assert_eq!(
            s.len(),
            1,
            "only the window that folded something has a summary"
        );
        let rep = s[0].repeated.clone().unwrap();
        assert_eq!(
            (rep.count, rep.first.as_str(), rep.last.as_str()),
            (3, "b", "d")
        );
        assert_eq!(s[0].pid, Some(2), "the summary is the last refusal");
        // After the window the next one is written again and opens a new window.
        assert_eq!(
            written(f.offer(&refusal("/c", 1, "no_endpoint", "e"), at(11)))
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn an_ended_window_is_summarised_before_the_next_refusal_and_on_flush() {
        let f = Folds::new(Duration::from_secs(10), 16);
        let t0 = Instant::now();
        f.offer(&refusal("/c", 1, "no_endpoint", "a"), t0);
        f.offer(&refusal("/c", 1, "no_endpoint", "b"), t0);
        let w = written(f.offer(&refusal("/c", 1, "no_endpoint", "c"), t0 + WINDOW)).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].repeated.as_ref().unwrap().count, 1);
        f.offer(&refusal("/c", 1, "no_endpoint", "d"), t0 + WINDOW);
        let flushed = f.expire(None);
        assert_eq!(flushed.len(), 1, "a flush writes every open summary");
        assert_eq!(flushed[0].repeated.as_ref().unwrap().first, "d");
    }

    #[test]
    fn allowed_decisions_are_never_folded_and_a_full_table_writes_unfolded() {
        let f = Folds::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        let mut allow = refusal("/c", 1, "no_endpoint", "a");
        allow.report.decision = "allow".into();
        for _ in 0..3 {
            assert!(written(f.offer(&allow, t0)).is_some());
        }
        f.offer(&refusal("/c", 1, "no_endpoint", "a"), t0);
        f.offer(&refusal("/c", 2, "no_endpoint", "a"), t0);
        // The table is full: a third distinct refusal, and its repeats, are written.
        for _ in 0..3 {
            assert!(written(f.offer(&refusal("/c", 3, "no_endpoint", "a"), t0)).is_some());
        }
        assert!(written(f.offer(&refusal("/c", 1, "no_endpoint", "b"), t0)).is_none());
    }
}
