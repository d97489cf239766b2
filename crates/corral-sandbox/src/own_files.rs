//! corral's own files — the policy and the decision log — are out of the sandbox's reach.
//!
//! A sandbox that could write its policy would widen it (the watcher reloads within a
//! second); one that could write the decision log could hide its refusals, or forge one so
//! that `corral policy suggest --apply` grants what it wants. In namespace mode the
//! directories holding them are bound read-only inside the sandbox: whole directories,
//! because a file bound on its own is unbound by the kernel as soon as an editor on the
//! host renames a new version over it. So the directory must be one the sandbox does not
//! need to write: not `HOME`, not the working directory or a parent of it, not a
//! world-writable one like `/tmp`. The policy watcher and the log read and write through
//! the directories as opened at start, so moving a directory away does not redirect them.
//!
//! In seccomp-only mode there is no mount namespace: when the sandbox could rewrite the
//! policy, it is not reloaded (the caller says so).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::bail;

/// Which of corral's files a directory holds (for messages).
#[derive(Clone, Copy)]
enum Holds {
    Policy,
    Log,
}

/// The directories to bind read-only in namespace mode: the policy's (and, when the policy
/// path is a symlink, the directory of the file it points to) and the decision log's.
/// Refuses a directory the sandbox needs to write, saying where to put the file instead.
pub fn protected_dirs(
    policy: Option<&Path>,
    log: &Path,
    home: Option<&Path>,
    cwd: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut found: Vec<(PathBuf, Holds, PathBuf)> = Vec::new();
    if let Some(p) = policy {
        let abs = cwd.join(p);
        found.push((parent(&abs), Holds::Policy, p.to_path_buf()));
        if let Ok(real) = std::fs::canonicalize(&abs) {
            found.push((parent(&real), Holds::Policy, p.to_path_buf()));
        }
    }
    found.push((parent(&cwd.join(log)), Holds::Log, log.to_path_buf()));
    let home = home.and_then(|h| std::fs::canonicalize(h).ok());
    let cwd = std::fs::canonicalize(cwd).unwrap_or_else(|_| cwd.to_path_buf());
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (dir, holds, file) in found {
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        if dirs.contains(&dir) {
            continue;
        }
        let why = if home.as_deref() == Some(dir.as_path()) {
            Some("it is your home directory")
        } else if cwd.starts_with(&dir) {
            Some("it holds the working directory")
        } else if std::fs::metadata(&dir).is_ok_and(|m| m.mode() & 0o002 != 0) {
            Some("anyone may write it")
        } else {
            None
        };
        if let Some(why) = why {
            let (what, instead) = match holds {
                Holds::Policy => ("the policy", "move it to a directory of its own, e.g. ~/.config/corral/policy.yaml"),
                Holds::Log => ("the decision log", "pass --log in a directory of its own, or use the default ~/.local/state/corral/decisions.jsonl"),
            };
            bail!(
                "{what} {} is in {}, which the sandbox must be free to write ({why}); corral keeps {what} out of the sandbox's reach by making its directory read-only there, so {instead}",
                file.display(),
                dir.display()
            );
        }
        dirs.push(dir);
    }
    Ok(dirs)
}

/// The files the sandbox may never write, whatever the filesystem view grants: the policy
/// (and the file a symlinked policy points to) and the decision log's directory. (corral's
/// own executable is the third; `corral run` protects it per isolation mode.)
pub fn trust_anchors(policy: Option<&Path>, log: &Path, cwd: &Path) -> Vec<PathBuf> {
    let mut anchors = Vec::new();
    if let Some(p) = policy {
        let abs = cwd.join(p);
        if let Ok(real) = std::fs::canonicalize(&abs) {
            anchors.push(real);
        }
        anchors.push(abs);
    }
    anchors.push(parent(&cwd.join(log)));
    anchors
}

/// Whether a process of the sandbox — same user, no capabilities, no mount namespace —
/// could change what `policy` reads as: write the file, or replace it in its directory
/// (or the file a symlink points to). An owner can always `chmod` first.
pub fn writable_without_namespaces(policy: &Path) -> bool {
    let (uid, _) = crate::sys::ids();
    let may_write = |p: &Path| match std::fs::metadata(p) {
        Ok(m) => m.uid() == uid || m.mode() & 0o022 != 0,
        Err(_) => true,
    };
    let mut paths = vec![policy.to_path_buf(), parent(policy)];
    if let Ok(real) = std::fs::canonicalize(policy) {
        paths.push(parent(&real));
        paths.push(real);
    }
    paths.iter().any(|p| may_write(p))
}

fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_the_sandbox_writes_are_refused_and_others_are_protected() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        let conf = h.join(".config/corral");
        let state = h.join(".local/state/corral");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        let policy = conf.join("policy.yaml");
        std::fs::write(&policy, "version: 1\n").unwrap();
        let log = state.join("decisions.jsonl");
        let dirs = protected_dirs(Some(&policy), &log, Some(h), h).unwrap();
        let real = |p: &Path| std::fs::canonicalize(p).unwrap();
        assert_eq!(dirs, vec![real(&conf), real(&state)]);

        // In HOME, in the working directory, or in a world-writable one: refused.
        let in_home = h.join("policy.yaml");
        std::fs::write(&in_home, "version: 1\n").unwrap();
        let e = protected_dirs(Some(&in_home), &log, Some(h), &conf).unwrap_err();
        assert!(e.to_string().contains("your home directory"), "{e}");
        assert!(
            e.to_string().contains("~/.config/corral/policy.yaml"),
            "{e}"
        );
        let e = protected_dirs(Some(&policy), &log, Some(h), &conf.join("sub")).unwrap_err();
        assert!(e.to_string().contains("working directory"), "{e}");
        let e = protected_dirs(None, &h.join("decisions.jsonl"), Some(h), &conf).unwrap_err();
        assert!(e.to_string().contains("the decision log"), "{e}");
        let open = h.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
            .unwrap();
        let e = protected_dirs(None, &open.join("d.jsonl"), Some(h), &conf).unwrap_err();
        assert!(e.to_string().contains("anyone may write it"), "{e}");

        // A policy that is a symlink: the link's directory and the target's.
        let dotfiles = h.join("dotfiles");
        std::fs::create_dir(&dotfiles).unwrap();
        std::fs::write(dotfiles.join("p.yaml"), "version: 1\n").unwrap();
        std::fs::remove_file(&policy).unwrap();
        std::os::unix::fs::symlink(dotfiles.join("p.yaml"), &policy).unwrap();
        let dirs = protected_dirs(Some(&policy), &log, Some(h), h).unwrap();
        assert_eq!(dirs, vec![real(&conf), real(&dotfiles), real(&state)]);
    }

    #[test]
    fn a_policy_of_ones_own_is_writable_without_namespaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("policy.yaml");
        std::fs::write(&p, "version: 1\n").unwrap();
        assert!(writable_without_namespaces(&p));
    }
}
