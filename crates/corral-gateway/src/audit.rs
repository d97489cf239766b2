//! The audit log: one JSON line per request.
//!
//! The file is opened with `O_APPEND` and each record is handed to the kernel with a single
//! `write(2)` before the response is allowed to complete (for a stream: before its last
//! byte is released to the client). A `kill -9` of the gateway therefore cannot lose or tear
//! a record whose response completed; a record for a request still in flight is simply
//! absent. With `fsync = true` each record is also `fsync`ed, which extends the guarantee to
//! power loss at the cost of a disk flush per request. Secrets never reach this file: key
//! ids are logged, keys are not, and request headers are not logged at all.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use corral_logfile::LineLog;

use serde::Serialize;

/// One request, as the audit log records it.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Record {
    pub time: String,
    pub request_id: String,
    pub key_id: Option<String>,
    pub owner: Option<String>,
    pub team: Option<String>,
    pub client: String,
    /// `anthropic` or `bedrock`.
    pub surface: &'static str,
    /// `messages`, `invoke`, `invoke-stream`, `converse`, `converse-stream`, `count-tokens`…
    pub operation: &'static str,
    pub requested_model: Option<String>,
    pub upstream: Option<String>,
    pub upstream_model: Option<String>,
    pub stream: bool,
    pub status: u16,
    /// Why the gateway refused or failed the request, if it did.
    pub error: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub stop_reason: Option<String>,
    pub latency_ms: u64,
    pub ttfb_ms: Option<u64>,
    pub upstream_request_id: Option<String>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Only with `[audit] bodies = true`, after redaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_body: Option<serde_json::Value>,
}

pub struct AuditLog {
    /// Mode 0640; rotation is followed (`corral-logfile`).
    file: LineLog,
    /// False after a failed write, true again after a successful one. While false the
    /// gateway refuses model calls (fail closed: no unaudited use) and `/readyz` says so.
    healthy: AtomicBool,
}

impl AuditLog {
    pub fn open(path: &Path, fsync: bool) -> anyhow::Result<AuditLog> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("cannot create audit log directory {}: {e}", dir.display())
            })?;
        }
        let file = LineLog::open(path, 0o640)
            .map_err(|e| anyhow::anyhow!("cannot open audit log {}: {e}", path.display()))?
            .with_fsync(fsync);
        Ok(AuditLog {
            file,
            healthy: AtomicBool::new(true),
        })
    }

    /// Appends `record` (one write of one whole line).
    pub fn write(&self, record: &Record) {
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!("audit record could not be serialised: {e}");
                return;
            }
        };
        line.push(b'\n');
        match self.file.append(&line) {
            Ok(()) => self.healthy.store(true, Ordering::Relaxed),
            Err(e) => {
                tracing::error!(
                    path = %self.file.path().display(),
                    "audit log write failed: {e}; refusing model calls until a write succeeds"
                );
                self.healthy.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Whether the last write succeeded.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// Replaces the values of `fields` (at any depth) by `"[redacted]"`.
pub fn redact(value: &mut serde_json::Value, fields: &[String]) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if fields.iter().any(|f| f == k) {
                    *v = serde_json::Value::String("[redacted]".into());
                } else {
                    redact(v, fields);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| redact(v, fields)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_whole_lines_and_redaction_reaches_nested_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/audit.jsonl");
        let log = AuditLog::open(&path, true).unwrap();
        for i in 0..3 {
            log.write(&Record {
                request_id: format!("r{i}"),
                status: 200,
                ..Default::default()
            });
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        // logrotate-style rename: later records go to a new file at the configured path.
        std::fs::rename(&path, dir.path().join("a/audit.jsonl.1")).unwrap();
        log.write(&Record {
            request_id: "after-rotation".into(),
            ..Default::default()
        });
        let fresh = std::fs::read_to_string(&path).unwrap();
        assert!(fresh.contains("after-rotation") && fresh.lines().count() == 1);
        let mut v = serde_json::json!({"messages":[{"content":"secret plan"}],"system":"s"});
        redact(&mut v, &["content".into()]);
        assert_eq!(v["messages"][0]["content"], "[redacted]");
        assert_eq!(v["system"], "s");
    }
}
