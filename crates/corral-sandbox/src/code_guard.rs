//! Files inside writable directories that make programs *outside* the sandbox run code:
//!
//! - a repository's `.git`: the next `git status` on the host reads `.git/config`
//!   (`core.fsmonitor`, `core.hooksPath`, `core.sshCommand`, filters…) and `git commit`
//!   runs `.git/hooks/*` — or the directory `core.hooksPath` names (husky's `.husky` in
//!   the working tree);
//! - Claude Code's `settings.json` in its state directory: its `hooks`, `apiKeyHelper`,
//!   `statusLine` and MCP servers run when you start `claude` — outside corral too; and
//!   its `plugins/` (their hooks and servers) and `hooks/` (where hook scripts usually
//!   live). A script that `settings.json` names elsewhere in the state directory is not
//!   guarded: keep such scripts out of it.
//!
//! - In namespace mode those files are bound read-only, and `.git` itself is a mount
//!   point, so it cannot be renamed or replaced by a forged one; the rest of `.git`
//!   (objects, refs, the index) stays writable, so `git commit` works inside.
//! - Without a mount namespace Landlock cannot take a file out of a writable directory, so
//!   corral takes a [`Snapshot`] before the sandbox starts and, when the sandbox has ended
//!   (all of it: the whole tree is killed first), undoes every change to them and says so.
//!   Until then a git command run *on the host* in that repository would read what the
//!   sandbox wrote: that window is the price of having no mount namespace.
//!
//! Guarded: the `.git` of each writable grant and of the directories directly in it, with
//! its worktrees' `config.worktree` and its submodules' git directories. Not guarded: a
//! repository the sandbox creates (`git init`), and a submodule it plants (a `.git` file
//! and an index entry pointing git at a directory it wrote) — git on the host reads that
//! directory's config when it looks into the submodule. Both are files the sandbox wrote,
//! like any other: check them before running git there outside the sandbox.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What guards the code files of the writable directories.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodeGuard {
    /// `.git` directories to make mount points (bound over themselves, writable).
    pub pin: Vec<PathBuf>,
    /// Files and directories to bind read-only.
    pub read_only: Vec<PathBuf>,
    /// `hooks` directories that do not exist yet: made (empty) before the sandbox starts,
    /// or the sandbox could make them.
    pub create: Vec<PathBuf>,
    /// Settings files that do not exist yet: made (`{}`) before the sandbox starts.
    pub create_files: Vec<PathBuf>,
}

/// Git's files that configure or run code, relative to a `.git` directory.
const GIT_CODE: &[&str] = &["config", "config.worktree", "hooks"];

/// Claude Code's directories, in its state directory, whose files run outside it too:
/// installed plugins (their hooks and MCP servers) and the usual home of hook scripts.
pub const AGENT_CODE_DIRS: &[&str] = &["plugins", "hooks"];

/// The `.git` of each writable grant and of the directories directly in it, and the
/// agent's code files: its settings file (made as `{}` where missing) and those of
/// [`AGENT_CODE_DIRS`] that exist, in `agent_dir`.
pub fn guard(
    grants: &[PathBuf],
    agent_dir: Option<&Path>,
    agent_settings: Option<PathBuf>,
) -> CodeGuard {
    let mut g = CodeGuard::default();
    if let Some(settings) = agent_settings {
        if !settings.exists() {
            g.create_files.push(settings.clone());
        }
        g.read_only.push(settings);
    }
    for name in AGENT_CODE_DIRS {
        if let Some(d) = agent_dir.map(|a| a.join(name)).filter(|d| d.is_dir()) {
            g.read_only.push(d);
        }
    }
    let mut repos: Vec<PathBuf> = Vec::new();
    for grant in grants {
        repos.push(grant.join(".git"));
        if let Ok(entries) = std::fs::read_dir(grant) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    repos.push(e.path().join(".git"));
                }
            }
        }
    }
    repos.sort();
    repos.dedup();
    for dotgit in repos {
        let Ok(meta) = std::fs::symlink_metadata(&dotgit) else {
            continue;
        };
        if meta.is_file() {
            // `gitdir: …` of a worktree or submodule: rewritten, it would point git at a
            // forged repository.
            g.read_only.push(dotgit);
        } else if meta.is_dir() {
            guard_gitdir(&dotgit, 0, &mut g);
            // `core.hooksPath` pointing into the working tree (husky's `.husky`): those
            // hooks run on the host's next commit too.
            if let (Some(hooks), Some(worktree)) =
                (hooks_path(&dotgit.join("config")), dotgit.parent())
            {
                let hooks = worktree.join(hooks);
                if hooks.is_dir() && !g.read_only.contains(&hooks) {
                    g.read_only.push(hooks);
                }
            }
        }
    }
    g
}

/// `core.hooksPath` in a git config file, if set (relative to the working tree, or
/// absolute).
fn hooks_path(config: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(config).ok()?;
    let mut in_core = false;
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_core = line
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .eq_ignore_ascii_case("core");
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if in_core && key.trim().eq_ignore_ascii_case("hookspath") {
            let value = value.trim().trim_matches('"');
            if !value.is_empty() && !value.starts_with('~') {
                found = Some(PathBuf::from(value));
            }
        }
    }
    found
}

/// A git directory's code files, its worktrees' configs and its submodules' git
/// directories (`modules/NAME`, nested).
fn guard_gitdir(dir: &Path, depth: usize, g: &mut CodeGuard) {
    for name in GIT_CODE {
        let p = dir.join(name);
        if p.exists() {
            g.read_only.push(p);
        } else if *name == "hooks" {
            g.create.push(p.clone());
            g.read_only.push(p);
        }
    }
    g.pin.push(dir.to_path_buf());
    let subdirs = |name: &str| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join(name))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    };
    for wt in subdirs("worktrees") {
        let p = wt.join("config.worktree");
        if p.exists() {
            g.read_only.push(p);
        }
    }
    if depth < 3 {
        for module in subdirs("modules") {
            if module.join("config").is_file() {
                guard_gitdir(&module, depth + 1, g);
            }
        }
    }
}

/// The guarded files as they were before the sandbox started (seccomp-only mode).
#[derive(Debug, Default)]
pub struct Snapshot {
    files: Vec<(PathBuf, Option<Saved>)>,
    /// Guarded directories (`hooks`, Claude Code's `plugins`) and every file and link in
    /// them, recursively.
    trees: Vec<(PathBuf, Vec<(PathBuf, Saved)>)>,
    /// Directories too large to keep a copy of: not guarded (said at start).
    too_large: Vec<PathBuf>,
    /// Each pinned `.git` and its identity (device, inode).
    dirs: Vec<(PathBuf, (u64, u64))>,
}

/// How much of a guarded directory the snapshot keeps a copy of.
const TREE_FILES: usize = 4096;
const TREE_BYTES: usize = 64 << 20;

#[derive(Debug, PartialEq, Eq)]
enum Saved {
    File { bytes: Vec<u8>, mode: u32 },
    Link(PathBuf),
}

fn saved(path: &Path) -> Option<Saved> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_symlink() {
        return std::fs::read_link(path).ok().map(Saved::Link);
    }
    if !meta.is_file() {
        return None;
    }
    Some(Saved::File {
        bytes: std::fs::read(path).ok()?,
        mode: meta.mode() & 0o7777,
    })
}

/// Every file and link below `dir` (links not followed), or `None` past the bounds.
fn tree_in(dir: &Path) -> Option<Vec<(PathBuf, Saved)>> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(_) => {
                    if let Some(s) = saved(&p) {
                        if let Saved::File { bytes: b, .. } = &s {
                            bytes += b.len();
                        }
                        out.push((p, s));
                    }
                }
                Err(_) => {}
            }
            if out.len() > TREE_FILES || bytes > TREE_BYTES {
                return None;
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Some(out)
}

impl Snapshot {
    pub fn take(g: &CodeGuard) -> Snapshot {
        let mut s = Snapshot::default();
        for p in &g.read_only {
            if p.is_dir() {
                match tree_in(p) {
                    Some(tree) => s.trees.push((p.clone(), tree)),
                    None => s.too_large.push(p.clone()),
                }
            } else {
                s.files.push((p.clone(), saved(p)));
            }
        }
        for d in &g.pin {
            if let Ok(m) = std::fs::symlink_metadata(d) {
                s.dirs.push((d.clone(), (m.dev(), m.ino())));
            }
        }
        s
    }

    /// Guarded directories too large to keep a copy of: changes there are not undone.
    pub fn too_large(&self) -> &[PathBuf] {
        &self.too_large
    }

    /// Undoes what the sandbox changed; one line per change undone (or not undoable).
    /// Never follows a link the sandbox may have put in place of a file.
    pub fn restore(&self) -> Vec<String> {
        let mut done = Vec::new();
        for (dir, id) in &self.dirs {
            let now = std::fs::symlink_metadata(dir).map(|m| (m.dev(), m.ino()));
            if now.as_ref().ok() != Some(id) {
                done.push(format!(
                    "{} was replaced from inside the sandbox (the original was moved or removed); its config and hooks are restored below, but check the repository before running git there",
                    dir.display()
                ));
            }
        }
        let mut report = |path: &Path, what: &str, r: std::io::Result<()>| {
            done.push(match r {
                Ok(()) => format!("{} was {what} inside the sandbox: undone", path.display()),
                Err(e) => format!(
                    "{} was {what} inside the sandbox and could NOT be undone ({e}): check it before it runs outside",
                    path.display()
                ),
            });
        };
        for (path, before) in &self.files {
            if saved(path).as_ref() == before.as_ref() {
                continue;
            }
            let r = match before {
                Some(b) => put(path, b),
                None => remove(path),
            };
            report(path, "changed", r);
        }
        for (dir, before) in &self.trees {
            if is_link(dir) || (dir.exists() && !dir.is_dir()) {
                let _ = remove(dir);
            }
            let _ = std::fs::create_dir_all(dir);
            remove_extras(dir, before, &mut report);
            for (path, b) in before {
                if saved(path).as_ref() == Some(b) {
                    continue;
                }
                let r = path
                    .parent()
                    .map_or(Ok(()), |p| {
                        if is_link(p) || (p.exists() && !p.is_dir()) {
                            remove(p)?;
                        }
                        std::fs::create_dir_all(p)
                    })
                    .and_then(|()| put(path, b));
                report(path, "changed", r);
            }
        }
        done
    }
}

/// Removes what is below `dir` and not in `before` (a directory that holds none of
/// `before` goes whole).
fn remove_extras(
    dir: &Path,
    before: &[(PathBuf, Saved)],
    report: &mut impl FnMut(&Path, &str, std::io::Result<()>),
) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if before.iter().any(|(b, _)| *b == p) {
            continue;
        }
        let holds_saved = before.iter().any(|(b, _)| b.starts_with(&p));
        let real_dir = std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
        if holds_saved && real_dir {
            remove_extras(&p, before, report);
        } else {
            report(&p, "added", remove(&p));
        }
    }
}

fn is_link(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

/// Removes what is at `path` (a link as a link, a directory with its contents).
fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `saved` at `path` as a new file or link (whatever was there removed first,
/// never followed).
fn put(path: &Path, saved: &Saved) -> std::io::Result<()> {
    use std::io::Write as _;
    remove(path)?;
    match saved {
        Saved::Link(target) => std::os::unix::fs::symlink(target, path),
        Saved::File { bytes, mode } => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(*mode)
                .open(path)?;
            f.write_all(bytes)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_sandbox_changed_in_git_is_undone_without_following_links() {
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        let project = d.path().join("p");
        std::fs::create_dir_all(project.join(".git/hooks")).unwrap();
        std::fs::write(project.join(".git/config"), "[core]\n").unwrap();
        std::fs::write(project.join(".git/hooks/pre-push.sample"), "#!/bin/sh\n").unwrap();
        let victim = d.path().join("bashrc");
        std::fs::write(&victim, "# rc\n").unwrap();
        let g = guard(std::slice::from_ref(&project), None, None);
        let snap = Snapshot::take(&g);
        assert!(snap.restore().is_empty());

        std::fs::remove_file(project.join(".git/config")).unwrap();
        std::os::unix::fs::symlink(&victim, project.join(".git/config")).unwrap();
        std::fs::write(project.join(".git/hooks/pre-commit"), "#!/bin/sh\nevil\n").unwrap();
        std::fs::write(project.join(".git/hooks/pre-push.sample"), "evil").unwrap();
        let done = snap.restore();
        assert_eq!(done.len(), 3, "{done:?}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "# rc\n");
        assert!(!is_link(&project.join(".git/config")));
        assert_eq!(
            std::fs::read_to_string(project.join(".git/config")).unwrap(),
            "[core]\n"
        );
        assert!(!project.join(".git/hooks/pre-commit").exists());
        assert_eq!(
            std::fs::read_to_string(project.join(".git/hooks/pre-push.sample")).unwrap(),
            "#!/bin/sh\n"
        );

        // husky's hooks in the working tree, named by core.hooksPath.
        std::fs::create_dir_all(project.join(".husky")).unwrap();
        std::fs::write(
            project.join(".git/config"),
            "[core]\n\thooksPath = .husky\n",
        )
        .unwrap();
        let g2 = guard(std::slice::from_ref(&project), None, None);
        assert!(g2.read_only.contains(&project.join(".husky")), "{g2:?}");
        std::fs::write(project.join(".git/config"), "[core]\n").unwrap();

        // A forged .git in place of the original is named, and its code files reset.
        std::fs::rename(project.join(".git"), project.join(".git.moved")).unwrap();
        std::fs::create_dir_all(project.join(".git/hooks")).unwrap();
        std::fs::write(project.join(".git/config"), "[core]\n\tfsmonitor = evil\n").unwrap();
        let done = snap.restore();
        assert!(done[0].contains("was replaced"), "{done:?}");
        assert_eq!(
            std::fs::read_to_string(project.join(".git/config")).unwrap(),
            "[core]\n"
        );
    }
}
