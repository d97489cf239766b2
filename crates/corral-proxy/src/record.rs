//! One line of the decision log: the [`LogRecord`] every decision becomes, and the one
//! constructor of a refusal that no policy decision produced. Shared by the log, its
//! folding and its terminal notices.

use std::time::SystemTime;

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
    /// On a summary line: the identical refusals folded into it (`fold.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeated: Option<Repeated>,
}

/// How many identical refusals a summary line stands for, and when they happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repeated {
    /// Refusals not written one by one.
    pub count: u64,
    /// Times of the first and the last of them.
    pub first: String,
    pub last: String,
}

impl LogRecord {
    /// The one constructor: `report` decided now, and nothing else known yet — the caller
    /// fills in what it knows (connection, pid, status, bytes…).
    pub fn new(kind: &str, report: Report) -> LogRecord {
        LogRecord {
            time: now_rfc3339(),
            kind: kind.to_string(),
            conn: 0,
            report,
            sha256: None,
            pid: None,
            peer: None,
            policy_generation: 0,
            status: 0,
            addresses: Vec::new(),
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0.0,
            repeated: None,
        }
    }
}

/// The one constructor of a refusal that no policy decision produced — a malformed or
/// unattributed request, a connect the sandbox refused: `deny`, the reason `code` and
/// sentence; the caller adds who asked and for what by struct update
/// (`Report { binary, host, port, ..refusal(code, reason) }`). A policy's own refusals come
/// from [`Report::new`].
pub fn refusal(code: &str, reason: impl Into<String>) -> Report {
    Report {
        decision: "deny".into(),
        error: Some(code.into()),
        reason: reason.into(),
        ..Report::default()
    }
}

/// Current time as RFC 3339 UTC with milliseconds (`2026-11-27T03:45:14.123Z`).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
