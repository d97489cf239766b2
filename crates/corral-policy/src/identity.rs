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
    /// The name the program was started as (its `argv[0]`), when that differs from the
    /// executable's file name — `git-remote-https` for `/usr/lib/git-core/git-remote-http`.
    /// Shown to people so they recognise the program; never decided on.
    pub invoked_as: Option<String>,
}

impl Identity {
    /// An identity with just an executable path (no ancestors, hash or pid).
    pub fn new(exe: impl Into<PathBuf>) -> Identity {
        Identity {
            exe: exe.into(),
            ancestors: Vec::new(),
            sha256: None,
            pid: None,
            invoked_as: None,
        }
    }
}

/// `argv[0]` of process `pid` when its file name differs from `exe`'s (see
/// [`Identity::invoked_as`]). Read from `/proc/PID/cmdline`, which the process controls:
/// for display only.
pub fn invoked_as(pid: u32, exe: &std::path::Path) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv0 = cmdline.split(|b| *b == 0).next()?;
    let argv0 = String::from_utf8_lossy(argv0);
    let name = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
    let exe_name = exe.file_name()?.to_string_lossy().into_owned();
    let shown = name(&argv0);
    (!shown.is_empty() && shown != exe_name && !shown.contains(char::is_control))
        .then(|| argv0.into_owned())
}

/// Why an executable cannot carry an identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unidentifiable {
    /// An anonymous memory file (`memfd:`): code with no file a policy could name.
    Memfd,
    /// A file deleted from disk: the path names something else now, or nothing.
    Deleted,
    /// The dynamic loader run directly: `ld-linux… /any/program` runs any code as the loader.
    Loader,
}

/// Classifies the executable a process runs (its `/proc/PID/exe` link): `None` when it can
/// carry an identity. The one rule for `corral run`'s broker and the standalone proxy.
pub fn classify_executable(link: &std::path::Path) -> Option<Unidentifiable> {
    let text = link.to_string_lossy();
    if text.starts_with("/memfd:") || text.starts_with("memfd:") {
        return Some(Unidentifiable::Memfd);
    }
    if text.ends_with(" (deleted)") {
        return Some(Unidentifiable::Deleted);
    }
    let name = link
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let loader = name.starts_with("ld-linux")
        || name.starts_with("ld64.so")
        || (name.starts_with("ld-") && name.contains(".so"));
    loader.then_some(Unidentifiable::Loader)
}

/// Why the executable a process runs cannot carry an identity, as a sentence, or `None`
/// when it can (see [`classify_executable`]).
pub fn unidentifiable_executable(link: &std::path::Path) -> Option<String> {
    let text = link.to_string_lossy();
    Some(match classify_executable(link)? {
        Unidentifiable::Memfd => {
            format!("the process runs an anonymous memory file ({text}), which no policy can name")
        }
        Unidentifiable::Deleted => {
            format!("the process runs an executable that was deleted from disk ({text})")
        }
        Unidentifiable::Loader => format!(
            "the process is the dynamic loader run directly ({text}); run the program itself instead"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn executables_without_an_identity_are_named() {
        for refused in [
            "/memfd:payload (deleted)",
            "/tmp/tool (deleted)",
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        ] {
            assert!(
                unidentifiable_executable(Path::new(refused)).is_some(),
                "{refused}"
            );
        }
        assert_eq!(unidentifiable_executable(Path::new("/usr/bin/curl")), None);
        assert_eq!(unidentifiable_executable(Path::new("/usr/bin/ld")), None);
    }
}
