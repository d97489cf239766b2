//! Who is asking: the process identity a decision is made for.

use std::path::PathBuf;

/// Who is asking. Built by the sandbox broker (exact) or the proxy's `/proc` resolver.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// Canonical path of the executable (`/proc/PID/exe`).
    pub exe: PathBuf,
    /// The parent's executable first, then the grandparent's, and so on.
    pub ancestors: Vec<PathBuf>,
    /// Lowercase hex SHA-256 of the executable, when known.
    pub sha256: Option<String>,
    /// Process id, when known (informational only).
    pub pid: Option<u32>,
}

impl Identity {
    /// An identity with just an executable path (no ancestors, hash or pid).
    pub fn new(exe: impl Into<PathBuf>) -> Identity {
        Identity {
            exe: exe.into(),
            ancestors: Vec::new(),
            sha256: None,
            pid: None,
        }
    }
}
