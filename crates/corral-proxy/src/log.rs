//! The decision log: one JSON object per line for every decision, allow and deny.
//! The format is documented in `docs/logs.md`; `corral policy suggest` reads it back.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use corral_logfile::LineLog;
use corral_policy::Report;
use serde::{Deserialize, Serialize};

/// One decision. The [`Report`] fields (`decision`, `error`, `binary`, `ancestors`, `host`,
/// `port`, `method`, `path`, `policy`, `reason`, `suggestion`) appear at the top level.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogRecord {
    /// RFC 3339 UTC time of the decision, millisecond precision.
    pub time: String,
    /// Where the record comes from: `connect` (a CONNECT tunnel), `http` (a forwarded plain
    /// HTTP request), `request` (a malformed or unattributed request), or `direct` (a
    /// connection the sandbox refused before it reached the proxy).
    pub kind: String,
    /// Per-process connection number; several `http` records can share one.
    pub conn: u64,
    #[serde(flatten)]
    pub report: Report,
    /// Executable's SHA-256 and PID, when the attribution knew them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Which policy version decided: 1 for the file loaded at start, +1 per reload.
    pub policy_generation: u64,
    /// HTTP status the proxy answered (200 for an established tunnel).
    pub status: u16,
    /// The upstream address dialled (or refused), when there was one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Bytes client → upstream and upstream → client (bodies and tunnel payload).
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// From the request head to the end of the tunnel/response (or to the refusal).
    pub duration_ms: f64,
}

/// Where decision records go: a file (appended) and/or stderr, plus optional one-line
/// notices of refusals for a person watching the terminal. Cheap to share.
pub struct DecisionLog {
    file: Option<LineLog>,
    stderr: bool,
    notices: Option<Notices>,
}

/// Human notices of refusals on stderr: each (binary, destination, reason) once, with the
/// command that turns the log into the fix.
struct Notices {
    fix: String,
    seen: Mutex<std::collections::HashSet<String>>,
}

impl DecisionLog {
    /// No decision log (metrics still count).
    pub fn disabled() -> DecisionLog {
        DecisionLog {
            file: None,
            stderr: false,
            notices: None,
        }
    }

    /// JSON lines on stderr.
    pub fn stderr() -> DecisionLog {
        DecisionLog {
            file: None,
            stderr: true,
            notices: None,
        }
    }

    /// Appends JSON lines to `path` (created with mode 0600 if missing), following log
    /// rotation.
    pub fn to_file(path: &Path) -> std::io::Result<DecisionLog> {
        Ok(DecisionLog {
            file: Some(LineLog::open(path, 0o600)?),
            stderr: false,
            notices: None,
        })
    }

    /// Also write to stderr.
    pub fn with_stderr(mut self, on: bool) -> DecisionLog {
        self.stderr = on;
        self
    }

    /// Also tell a person on stderr about each distinct refusal, once, ending with `fix`
    /// (the command that prints the policy lines, e.g. `corral policy suggest …`).
    pub fn with_notices(mut self, fix: String) -> DecisionLog {
        self.notices = Some(Notices {
            fix,
            seen: Mutex::new(Default::default()),
        });
        self
    }

    /// Writes one record as one line. Each line is a single `write` on an `O_APPEND` file, so
    /// concurrent writers (the sandbox and the proxy) never interleave within a line.
    pub fn record(&self, record: &LogRecord) {
        if let Some(n) = &self.notices {
            n.tell(record);
        }
        if self.file.is_none() && !self.stderr {
            return;
        }
        let mut line = match serde_json::to_vec(record) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot serialise a decision record: {e}");
                return;
            }
        };
        line.push(b'\n');
        if let Some(file) = &self.file {
            if let Err(e) = file.append(&line) {
                tracing::error!(
                    "cannot write the decision log {}: {e}",
                    file.path().display()
                );
            }
        }
        if self.stderr {
            let _ = std::io::stderr().lock().write_all(&line);
        }
    }
}

impl Notices {
    fn tell(&self, record: &LogRecord) {
        let r = &record.report;
        if r.decision != "deny" {
            return;
        }
        let code = r.error.as_deref().unwrap_or("refused");
        let key = format!("{}\0{}\0{}\0{code}", r.binary, r.host, r.port);
        let first = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key);
        if first {
            let dest = match r.port {
                0 => r.host.clone(),
                port => format!("{}:{port}", r.host),
            };
            let mut line = format!(
                "corral: refused {} -> {dest} [{code}]: {}\n",
                r.program(),
                r.reason
            );
            // Only a policy refusal has policy lines that fix it.
            if r.suggestion.is_some() {
                line.push_str(&format!("corral:   to allow it: {}\n", self.fix));
            }
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }
}

/// Current time as RFC 3339 UTC with milliseconds (`2026-11-27T03:45:14.123Z`).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_times_are_utc_rfc3339_with_milliseconds() {
        let t = now_rfc3339();
        assert_eq!(t.len(), "2026-11-27T03:45:14.123Z".len(), "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
        assert!(humantime::parse_rfc3339(&t).is_ok(), "{t}");
    }
}
