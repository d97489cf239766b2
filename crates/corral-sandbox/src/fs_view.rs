//! What the sandbox may read and write: the filesystem view, built from the policy's
//! `filesystem_policy` on top of corral's default, and enforced by Landlock in both
//! isolation modes.
//!
//! # The default (no `filesystem_policy`, or one that lists no paths)
//!
//! Everything is readable; the sandbox may write only
//! - the working directory (`include_workdir`, default true): the project the agent works on;
//! - temporary files, private to the session ([`crate::private_tmp`]): `/tmp` as an
//!   overlay in namespace mode, a private `TMPDIR` (and `/tmp` read-only) without one;
//! - the agent's own state: Claude Code's `~/.claude` (or `$CLAUDE_CONFIG_DIR`). Claude Code
//!   also rewrites `~/.claude.json` by creating a temporary file and a lock directory next
//!   to it, in `HOME` itself, which no rule can allow without allowing all of `HOME`; so
//!   the sandbox runs it with `CLAUDE_CONFIG_DIR=~/.claude`, where it keeps that file too.
//!
//! Shell start-up files, `~/.ssh`, `~/.config/corral`, `~/.local/bin` and the rest of
//! [`PROTECTED`] run or configure code outside the sandbox: they stay read-only even when
//! a writable directory holds them (the working directory is `HOME`, or a `read_write`
//! entry is `~`). Such a grant is *split*: the directory itself gets no write right, each
//! entry in it but the protected one is granted whole, recursively down to the protected
//! path. Landlock grants rights to whole hierarchies and cannot subtract, so the price is
//! that nothing new can be created directly in a split directory.
//!
//! A credential's `secret_file` is *hidden*: every read rule that would cover it is split
//! around it the same way (the directories above it may only be listed).
//!
//! # What a policy changes
//!
//! - `read_write: [P…]` widens: each P is writable too (split around what is protected
//!   inside it; naming a protected path, e.g. `~/.local/bin`, grants it deliberately).
//! - `read_only: [P…]` narrows reads the OpenShell way: with the list present, only the
//!   listed paths (plus the writable ones and the device files every program opens) are
//!   visible. A default writable path (`/tmp`, the agent's state) that a `read_only`
//!   entry covers becomes read-only.
//! - `include_workdir: false` takes the working directory off the writable list.
//!
//! # Trust anchors
//!
//! The policy file (and the file a symlinked policy points to), the decision log's
//! directory and corral's own executable are never writable: every grant, even one naming
//! them, is split around them. A split directory has no right to remove or rename what it
//! holds, so the directories above an anchor cannot be renamed either.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use corral_policy::model::FilesystemPolicy;

use crate::code_guard::{guard, CodeGuard};

/// Paths under `HOME` that configure or run code outside the sandbox.
pub const PROTECTED: &[&str] = &[
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".profile",
    ".zshrc",
    ".zshenv",
    ".zprofile",
    ".zlogin",
    ".zlogout",
    ".config/fish",
    ".inputrc",
    ".pam_environment",
    ".ssh",
    ".gnupg",
    ".gitconfig",
    ".config/git",
    ".config/systemd",
    ".config/autostart",
    ".config/corral",
    ".local/bin",
    "bin",
    ".local/share/claude",
    ".local/share/corral",
    ".local/state/corral",
];

/// Why a path is writable (shown by `--explain-fs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Workdir,
    Tmp,
    /// `/dev/shm`.
    Shm,
    AgentState,
    Policy,
}

impl Origin {
    fn label(self) -> &'static str {
        match self {
            Origin::Workdir => "working directory",
            Origin::Tmp => "temporary files, private to the session",
            Origin::Shm => {
                "POSIX shared memory: the session's own in namespace mode, the host's without one"
            }
            Origin::AgentState => "agent state (Claude Code)",
            Origin::Policy => "policy read_write",
        }
    }
}

/// What a Landlock rule grants beneath its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Listing directories only (a directory split around a hidden file).
    List,
    /// Reading and executing.
    Read,
    /// Everything.
    Write,
}

/// One Landlock rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub path: PathBuf,
    pub access: Access,
}

impl Rule {
    pub fn writes(&self) -> bool {
        self.access == Access::Write
    }
}

/// Where the sandbox's temporary files go ([`crate::private_tmp`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tmp {
    /// Namespace mode: `/tmp` is an overlay private to the session.
    Overlay,
    /// Seccomp-only mode: `TMPDIR` is this private directory, `/tmp` is read-only.
    Dir(PathBuf),
    /// No private directory could be made: `/tmp` is read-only, `TMPDIR` unchanged.
    Unavailable,
}

/// What `corral run` needs to know about its environment to build the view.
pub struct Inputs<'a> {
    pub policy: &'a FilesystemPolicy,
    pub home: Option<&'a Path>,
    pub cwd: &'a Path,
    /// Files and directories that must never be writable (policy, log directory, corral).
    pub anchors: Vec<PathBuf>,
    /// `CLAUDE_CONFIG_DIR` as set for `corral run`, if any.
    pub claude_config_dir: Option<PathBuf>,
    /// Where temporary files go.
    pub tmp: Tmp,
    /// Files the sandbox may not even read: the secrets of the policy's `credentials`.
    pub hidden: Vec<PathBuf>,
}

/// The effective view.
#[derive(Debug)]
pub struct View {
    /// "default" or "policy".
    pub source: &'static str,
    /// Everything is readable (no `read_only` list).
    pub read_everything: bool,
    /// Paths readable because the policy lists them (`read_only`).
    pub readable: Vec<PathBuf>,
    /// Writable grants as asked, with their origin (before splitting).
    pub grants: Vec<(PathBuf, Origin)>,
    /// The Landlock rules (after splitting).
    pub rules: Vec<Rule>,
    /// Protected paths and anchors that a grant held and that stay read-only.
    pub kept: Vec<PathBuf>,
    /// Directories whose grant was split (nothing new can be created directly in them).
    pub split: Vec<PathBuf>,
    /// Variables the sandboxed command gets.
    pub env: Vec<(OsString, OsString)>,
    /// Directories to create before the sandbox starts (a Landlock rule needs a path).
    pub create: Vec<PathBuf>,
    /// Namespace mode with a private `/tmp` overlay: the paths under `/tmp` that are
    /// carried over it (so that writing them writes the host's files).
    pub tmp_overlay: Option<Vec<PathBuf>>,
    /// Files the sandbox may not read.
    pub hidden: Vec<PathBuf>,
    /// Files in writable directories that run code outside: git's, Claude Code's
    /// ([`crate::code_guard`]).
    pub code: CodeGuard,
    /// Where temporary files go (as asked).
    pub tmp: Tmp,
    pub warnings: Vec<String>,
}

/// Builds the view. Pure but for reading directories being split.
pub fn build(inp: &Inputs) -> View {
    let fs = inp.policy;
    let home = inp.home.map(canonical);
    let expand = |p: &Path| -> Option<PathBuf> {
        let s = p.to_str()?;
        let rest = s
            .strip_prefix("~/")
            .or_else(|| s.strip_prefix("$HOME/"))
            .or((s == "~").then_some(""));
        Some(match rest {
            Some(r) => home.as_ref()?.join(r),
            None => p.to_path_buf(),
        })
    };
    let mut warnings = Vec::new();
    let mut listed = |list: &[PathBuf]| -> Vec<PathBuf> {
        list.iter()
            .filter_map(|p| {
                let e = expand(p);
                if e.is_none() {
                    warnings.push(format!(
                        "filesystem_policy path {} skipped: HOME is not set",
                        p.display()
                    ));
                }
                e.map(|e| canonical(&e))
            })
            .collect()
    };
    let read_only = listed(&fs.read_only);
    let read_write = listed(&fs.read_write);
    let source = if read_only.is_empty() && read_write.is_empty() {
        "default"
    } else {
        "policy"
    };
    let covered_by_read_only = |p: &Path| read_only.iter().any(|r| p.starts_with(r));

    let mut grants: Vec<(PathBuf, Origin)> = Vec::new();
    let mut env = Vec::new();
    let mut create = Vec::new();
    if fs.include_workdir {
        grants.push((canonical(inp.cwd), Origin::Workdir));
    }
    // `/tmp` itself, or a parent of it, named by `read_write` or being the working
    // directory: the host's /tmp, shared (an overlay would make the project's files vanish
    // with the session).
    let shared_tmp = read_write.iter().any(|p| Path::new("/tmp").starts_with(p))
        || (fs.include_workdir && Path::new("/tmp").starts_with(canonical(inp.cwd)));
    let mut overlay = false;
    if !shared_tmp && !covered_by_read_only(Path::new("/tmp")) {
        match &inp.tmp {
            Tmp::Overlay => {
                overlay = true;
                grants.push((PathBuf::from("/tmp"), Origin::Tmp));
                env.push((OsString::from("TMPDIR"), OsString::from("/tmp")));
            }
            Tmp::Dir(d) => {
                grants.push((d.clone(), Origin::Tmp));
                env.push((OsString::from("TMPDIR"), d.clone().into_os_string()));
            }
            Tmp::Unavailable => warnings.push(
                "no private temporary directory could be made: /tmp is read-only in the sandbox"
                    .into(),
            ),
        }
    }
    // POSIX shared memory and semaphores (Python's multiprocessing, browsers): a tmpfs of
    // the session's own in namespace mode, the host's without a mount namespace.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && !covered_by_read_only(shm) && !read_write.iter().any(|p| shm.starts_with(p))
    {
        grants.push((shm.to_path_buf(), Origin::Shm));
    }
    let agent = match (&inp.claude_config_dir, &home) {
        (Some(d), _) => Some(canonical(d)),
        (None, Some(h)) => Some(h.join(".claude")),
        (None, None) => None,
    };
    if let Some(agent) = agent.filter(|a| !covered_by_read_only(a)) {
        if inp.claude_config_dir.is_none() {
            env.push((
                OsString::from("CLAUDE_CONFIG_DIR"),
                agent.clone().into_os_string(),
            ));
        }
        if !agent.exists() {
            create.push(agent.clone());
        }
        grants.push((agent, Origin::AgentState));
    }
    for p in &read_write {
        // Naming a file that does not exist yet inside a writable directory (an installer
        // policy's `~/.claude/settings.json`) only lifts its guard: the directory's rule
        // covers it.
        if !p.exists() && grants.iter().any(|(g, _)| p.starts_with(g)) {
            continue;
        }
        grants.push((p.clone(), Origin::Policy));
    }

    let protected: Vec<PathBuf> = home
        .iter()
        .flat_map(|h| PROTECTED.iter().map(move |p| h.join(p)))
        .collect();
    let anchors: Vec<PathBuf> = inp.anchors.iter().map(|a| canonical(a)).collect();
    let hidden: Vec<PathBuf> = inp.hidden.iter().map(|h| canonical(h)).collect();

    let mut rules = Vec::new();
    let mut kept = Vec::new();
    let mut split = Vec::new();
    for (path, origin) in &grants {
        if anchors.iter().any(|a| path.starts_with(a)) {
            warnings.push(format!(
                "filesystem_policy: {} is one of corral's own files, which the sandbox may never write; it stays read-only",
                path.display()
            ));
            continue;
        }
        // A protected path is granted only when named (by the policy) at or below it.
        let inside: Vec<&PathBuf> = anchors
            .iter()
            .chain(&hidden)
            .chain(
                protected
                    .iter()
                    .filter(|p| !(*origin == Origin::Policy && path.starts_with(p))),
            )
            .filter(|p| p.starts_with(path) && *p != path)
            .collect();
        if *origin == Origin::Workdir && !inside.is_empty() {
            warnings.push(format!(
                "the working directory {} holds files corral keeps read-only (shell start-up files, ~/.ssh, its own files): the sandbox may change the entries already in it but create nothing directly in it; run corral from a project directory",
                path.display()
            ));
        }
        grant_around(path, &inside, &mut rules, &mut kept, &mut split);
    }
    kept.sort();
    kept.dedup();
    split.sort();
    split.dedup();
    let mut readable = Vec::new();
    if read_only.is_empty() {
        rules.push(Rule {
            path: PathBuf::from("/"),
            access: Access::Read,
        });
    } else {
        readable = read_only.clone();
        for p in &read_only {
            rules.push(Rule {
                path: p.clone(),
                access: Access::Read,
            });
        }
    }
    let rules = hide(rules, &hidden);
    let tmp_overlay = overlay.then(|| {
        let under_tmp: Vec<PathBuf> = grants
            .iter()
            .filter(|(_, o)| !matches!(o, Origin::Tmp | Origin::Shm))
            .map(|(p, _)| p.clone())
            .chain(readable.iter().cloned())
            .filter(|p| p.starts_with("/tmp") && p != Path::new("/tmp"))
            .collect();
        outermost(under_tmp)
    });
    // Claude Code's settings run code when `claude` starts (hooks, apiKeyHelper…): read-only
    // unless the policy names the file itself (an installer session writes it).
    let agent_dir = grants
        .iter()
        .find(|(_, o)| *o == Origin::AgentState)
        .map(|(p, _)| p.clone());
    let agent_settings = agent_dir
        .as_ref()
        .map(|a| a.join("settings.json"))
        .filter(|s| !read_write.contains(s));
    let code = guard(
        &grants
            .iter()
            .filter(|(_, o)| matches!(o, Origin::Workdir | Origin::Policy))
            .map(|(p, _)| p.clone())
            .collect::<Vec<_>>(),
        agent_dir.as_deref(),
        agent_settings,
    );
    // A path the policy names in `read_write` is granted deliberately (an installer).
    let mut code = code;
    code.read_only.retain(|p| !read_write.contains(p));
    View {
        source,
        read_everything: read_only.is_empty(),
        readable,
        grants,
        rules,
        kept,
        split,
        env,
        create,
        tmp_overlay,
        hidden,
        code,
        tmp: inp.tmp.clone(),
        warnings,
    }
}

/// The paths of `paths` that no other one holds.
pub(crate) fn outermost(mut paths: Vec<PathBuf>) -> Vec<PathBuf> {
    paths.sort();
    paths.dedup();
    let all = paths.clone();
    paths.retain(|p| !all.iter().any(|q| q != p && p.starts_with(q)));
    paths
}

/// `rules` with every read right that would cover a hidden file split around it: the
/// directories above it may be listed, their other entries keep the rule's right.
fn hide(rules: Vec<Rule>, hidden: &[PathBuf]) -> Vec<Rule> {
    if hidden.is_empty() {
        return rules;
    }
    let mut out = Vec::new();
    for rule in rules {
        let inside: Vec<&PathBuf> = hidden
            .iter()
            .filter(|h| h.starts_with(&rule.path) && **h != rule.path)
            .collect();
        if hidden.contains(&rule.path) {
            continue;
        }
        if inside.is_empty() || rule.access == Access::List {
            out.push(rule);
            continue;
        }
        split_read(&rule.path, rule.access, &inside, &mut out);
    }
    out
}

fn split_read(path: &Path, access: Access, inside: &[&PathBuf], out: &mut Vec<Rule>) {
    out.push(Rule {
        path: path.to_path_buf(),
        access: Access::List,
    });
    let (entries, _) = split_entries(path, inside);
    for (entry, below) in entries {
        if below.is_empty() {
            out.push(Rule {
                path: entry,
                access,
            });
        } else {
            split_read(&entry, access, &below, out);
        }
    }
}

/// Grants `path` for writing, except the paths in `inside` (all strictly below it).
fn grant_around(
    path: &Path,
    inside: &[&PathBuf],
    rules: &mut Vec<Rule>,
    kept: &mut Vec<PathBuf>,
    split: &mut Vec<PathBuf>,
) {
    if inside.is_empty() {
        rules.push(Rule {
            path: path.to_path_buf(),
            access: Access::Write,
        });
        return;
    }
    split.push(path.to_path_buf());
    // Reading the split directory itself is covered by the read rules.
    rules.push(Rule {
        path: path.to_path_buf(),
        access: Access::Read,
    });
    let (entries, excluded) = split_entries(path, inside);
    kept.extend(excluded);
    for (entry, below) in entries {
        grant_around(&entry, &below, rules, kept, split);
    }
    // Protected paths that do not exist yet cannot be created: the directory is split.
    for p in inside {
        if p.parent() == Some(path) && !p.exists() {
            kept.push((*p).clone());
        }
    }
}

/// A split of directory `path` around `inside` (paths strictly below it): its entries
/// that get a rule of their own, in order, each with the paths of `inside` below it; and
/// the entries that are in `inside` themselves. Symlinks get no rule: one would grant its
/// target, wherever that is — a hidden file included.
fn split_entries<'a>(
    path: &Path,
    inside: &[&'a PathBuf],
) -> (Vec<(PathBuf, Vec<&'a PathBuf>)>, Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(path) else {
        return (Vec::new(), Vec::new());
    };
    let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    names.sort();
    let mut granted = Vec::new();
    let mut excluded = Vec::new();
    for entry in names {
        if inside.iter().any(|p| **p == entry) {
            excluded.push(entry);
            continue;
        }
        if std::fs::symlink_metadata(&entry).is_ok_and(|m| m.file_type().is_symlink()) {
            continue;
        }
        let below: Vec<&PathBuf> = inside
            .iter()
            .copied()
            .filter(|p| p.starts_with(&entry))
            .collect();
        granted.push((entry, below));
    }
    (granted, excluded)
}

/// The absolute, symlink-free form of `p` where it exists (else `p` made absolute and
/// cleaned of `.` and `..`, with its longest existing prefix resolved).
pub fn canonical(p: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut clean = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    match (clean.parent(), clean.file_name()) {
        (Some(parent), Some(name)) if parent != clean => canonical(parent).join(name),
        _ => clean,
    }
}

impl View {
    /// Whether the sandbox could write `path` (or replace it) under this view.
    pub fn writable(&self, path: &Path) -> bool {
        self.rules
            .iter()
            .filter(|r| r.writes())
            .any(|r| path.starts_with(&r.path))
    }

    /// One phrase for the start-up line.
    pub fn summary(&self) -> String {
        let mut writable: Vec<String> = Vec::new();
        for (p, origin) in &self.grants {
            let shown = match origin {
                Origin::Workdir => "the working directory".to_string(),
                _ => p.display().to_string(),
            };
            if !writable.contains(&shown) {
                writable.push(shown);
            }
        }
        format!(
            "files: {} view, {} readable, writable: {}{} (`corral run --explain-fs`)",
            self.source,
            if self.read_everything {
                "everything"
            } else {
                "listed paths"
            },
            writable.join(", "),
            match self.kept.iter().filter(|p| p.exists()).count() {
                0 => String::new(),
                n => format!(" (split around {n} protected paths)"),
            }
        )
    }

    /// The effective rules, for `corral run --explain-fs`.
    pub fn explain(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "filesystem view: {}", self.source);
        if self.read_everything {
            let _ = writeln!(s, "  read:  everything (/)");
        } else {
            let _ = writeln!(
                s,
                "  read:  only the listed paths, the writable ones, /dev devices and /proc"
            );
            for p in &self.readable {
                let _ = writeln!(s, "         {}", p.display());
            }
        }
        for (p, origin) in &self.grants {
            let _ = writeln!(s, "  write: {} ({})", p.display(), origin.label());
        }
        for p in &self.split {
            let _ = writeln!(
                s,
                "  split: {} (holds protected paths: its other entries are writable, nothing new can be created directly in it)",
                p.display()
            );
        }
        for p in &self.kept {
            let _ = writeln!(s, "  kept read-only: {}", p.display());
        }
        match (&self.tmp, &self.tmp_overlay) {
            (Tmp::Overlay, Some(carried)) => {
                let _ = writeln!(
                    s,
                    "  tmp:   /tmp is private: an overlay (the host's files show through, what the sandbox writes stays in the session and is removed when it ends)"
                );
                for p in carried {
                    let _ = writeln!(
                        s,
                        "         carried over it, as the host's: {}",
                        p.display()
                    );
                }
            }
            (Tmp::Dir(d), _) if self.grants.iter().any(|(g, _)| g == d) => {
                let _ = writeln!(
                    s,
                    "  tmp:   /tmp is read-only; TMPDIR={} is private to the session (removed when it ends)",
                    d.display()
                );
            }
            _ => {}
        }
        for p in &self.hidden {
            let _ = writeln!(
                s,
                "  hidden: {} (a credential's secret: not readable)",
                p.display()
            );
        }
        let how = match self.tmp {
            Tmp::Overlay => "read-only; a .git cannot be renamed",
            Tmp::Dir(_) => {
                "writable (no mount namespace): corral undoes changes when the sandbox ends"
            }
            Tmp::Unavailable => {
                "read-only in namespace mode; in seccomp-only mode undone when the sandbox ends"
            }
        };
        for p in &self.code.read_only {
            let _ = writeln!(s, "  code:  {} ({how})", p.display());
        }
        for (k, v) in &self.env {
            let _ = writeln!(
                s,
                "  env:   {}={}",
                k.to_string_lossy(),
                v.to_string_lossy()
            );
        }
        let _ = writeln!(
            s,
            "  always: /dev/null, /dev/zero, /dev/full, /dev/tty, /dev/pts, /dev/ptmx writable; nothing under /proc writable"
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Homes under /var/tmp: /tmp is writable by default and would hold them.
    fn view(home: &Path, cwd: &Path, fs: FilesystemPolicy, anchors: Vec<PathBuf>) -> View {
        build(&Inputs {
            policy: &fs,
            home: Some(home),
            cwd,
            anchors,
            claude_config_dir: None,
            tmp: Tmp::Overlay,
            hidden: vec![],
        })
    }

    #[test]
    fn without_a_mount_namespace_tmp_is_read_only_and_tmpdir_is_private() {
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        let home = canonical(d.path());
        let private = home.join("session-tmp");
        std::fs::create_dir(&private).unwrap();
        let v = build(&Inputs {
            policy: &FilesystemPolicy::default(),
            home: Some(&home),
            cwd: &home.join("project"),
            anchors: vec![],
            claude_config_dir: None,
            tmp: Tmp::Dir(private.clone()),
            hidden: vec![],
        });
        assert!(!v.writable(Path::new("/tmp/x")));
        assert!(v.writable(&private.join("x")));
        assert!(v.tmp_overlay.is_none());
        assert!(v
            .env
            .contains(&(OsString::from("TMPDIR"), private.into_os_string())));
    }

    #[test]
    fn a_hidden_file_is_neither_readable_nor_writable_and_its_siblings_are() {
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        let home = canonical(d.path());
        for dir in [".config/corral", "project"] {
            std::fs::create_dir_all(home.join(dir)).unwrap();
        }
        let secret = home.join(".config/corral/gateway.key");
        std::fs::write(&secret, "sk").unwrap();
        std::fs::write(home.join(".config/corral/policy.yaml"), "").unwrap();
        std::os::unix::fs::symlink(&secret, home.join("key-link")).unwrap();
        let v = build(&Inputs {
            policy: &FilesystemPolicy::default(),
            home: Some(&home),
            cwd: &home,
            anchors: vec![],
            claude_config_dir: None,
            tmp: Tmp::Overlay,
            hidden: vec![secret.clone()],
        });
        let covers = |p: &Path| {
            v.rules
                .iter()
                .filter(|r| r.access != Access::List)
                .any(|r| p.starts_with(&r.path))
        };
        assert!(!covers(&secret), "{:#?}", v.rules);
        // A link to it beside the split path gets no rule (one would grant its target).
        assert!(
            !v.rules.iter().any(|r| r.path == home.join("key-link")),
            "{:#?}",
            v.rules
        );
        assert!(covers(&home.join(".config/corral/policy.yaml")));
        assert!(covers(Path::new("/usr/bin/env")));
        assert!(v.writable(&home.join("project/x")));
        assert!(!v
            .rules
            .iter()
            .any(|r| r.path == Path::new("/") && r.access != Access::List));
    }

    #[test]
    fn git_code_in_a_writable_repository_is_guarded() {
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        let home = canonical(d.path());
        let project = home.join("project");
        std::fs::create_dir_all(project.join(".git/objects")).unwrap();
        std::fs::write(project.join(".git/config"), "").unwrap();
        std::fs::create_dir_all(project.join("vendored/.git/hooks")).unwrap();
        std::fs::create_dir_all(project.join("worktree")).unwrap();
        std::fs::write(project.join("worktree/.git"), "gitdir: /elsewhere\n").unwrap();
        std::fs::create_dir_all(project.join(".git/modules/sub/hooks")).unwrap();
        std::fs::write(project.join(".git/modules/sub/config"), "").unwrap();
        std::fs::create_dir_all(project.join(".git/worktrees/wt")).unwrap();
        std::fs::write(project.join(".git/worktrees/wt/config.worktree"), "").unwrap();
        let v = view(&home, &project, FilesystemPolicy::default(), vec![]);
        assert_eq!(
            v.code.pin,
            vec![
                project.join(".git"),
                project.join(".git/modules/sub"),
                project.join("vendored/.git")
            ]
        );
        assert!(v
            .code
            .read_only
            .contains(&project.join(".git/modules/sub/config")));
        assert!(v
            .code
            .read_only
            .contains(&project.join(".git/modules/sub/hooks")));
        assert!(v
            .code
            .read_only
            .contains(&project.join(".git/worktrees/wt/config.worktree")));
        assert!(v.code.read_only.contains(&project.join(".git/config")));
        assert!(v.code.read_only.contains(&project.join(".git/hooks")));
        assert!(v
            .code
            .read_only
            .contains(&project.join("vendored/.git/hooks")));
        assert!(v.code.read_only.contains(&project.join("worktree/.git")));
        assert_eq!(v.code.create, vec![project.join(".git/hooks")]);
    }

    #[test]
    fn paths_under_tmp_that_the_view_names_are_carried_over_the_overlay() {
        let d = tempfile::tempdir().unwrap();
        let project = canonical(d.path()).join("p");
        std::fs::create_dir_all(project.join("src")).unwrap();
        let home = tempfile::tempdir_in("/var/tmp").unwrap();
        let v = view(home.path(), &project, FilesystemPolicy::default(), vec![]);
        assert_eq!(v.tmp_overlay, Some(vec![project.clone()]));
        // Named by read_write, the host's /tmp is shared: no overlay.
        let fs = FilesystemPolicy {
            read_write: vec![PathBuf::from("/tmp")],
            ..FilesystemPolicy::default()
        };
        let v = view(home.path(), &project, fs, vec![]);
        assert!(v.tmp_overlay.is_none());
        assert!(v.writable(Path::new("/tmp/x")));
        // So is working in /tmp itself: what the agent writes there must stay.
        let v = view(
            home.path(),
            Path::new("/tmp"),
            FilesystemPolicy::default(),
            vec![],
        );
        assert!(v.tmp_overlay.is_none());
        assert!(v.writable(Path::new("/tmp/x")));
    }

    #[test]
    fn the_default_writes_the_project_tmp_and_claudes_state_only() {
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        let home = canonical(d.path());
        let project = home.join("project");
        std::fs::create_dir_all(&project).unwrap();
        let v = view(&home, &project, FilesystemPolicy::default(), vec![]);
        assert_eq!(v.source, "default");
        assert!(v.read_everything);
        assert!(v.writable(&project.join("src/main.rs")));
        assert!(v.writable(Path::new("/tmp/x")));
        assert!(v.writable(&home.join(".claude/settings.json")));
        assert!(!v.writable(&home.join(".bashrc")));
        assert!(!v.writable(&home.join(".claude.json")));
        assert_eq!(v.create, vec![home.join(".claude")]);
        assert!(v.env.contains(&(
            OsString::from("CLAUDE_CONFIG_DIR"),
            home.join(".claude").into_os_string()
        )));
    }

    #[test]
    fn a_grant_holding_protected_paths_is_split_around_them() {
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        let home = canonical(d.path());
        for dir in [".config/corral", ".config/nvim", ".local/bin", "src"] {
            std::fs::create_dir_all(home.join(dir)).unwrap();
        }
        std::fs::write(home.join(".bashrc"), "").unwrap();
        std::fs::write(home.join("notes"), "").unwrap();
        let policy = home.join(".config/corral/policy.yaml");
        std::fs::write(&policy, "version: 1\n").unwrap();
        // The working directory is HOME itself.
        let v = view(
            &home,
            &home,
            FilesystemPolicy::default(),
            vec![policy.clone()],
        );
        assert!(v.writable(&home.join("src/lib.rs")));
        assert!(v.writable(&home.join("notes")));
        assert!(v.writable(&home.join(".config/nvim/init.lua")));
        assert!(!v.writable(&home.join(".bashrc")));
        assert!(!v.writable(&home.join(".local/bin/curl")));
        assert!(!v.writable(&policy));
        assert!(
            !v.writable(&home.join(".config")),
            "its parent could be renamed"
        );
        assert!(!v.writable(&home.join("new-file")));
        assert!(v.split.contains(&home) && v.split.contains(&home.join(".config")));

        // Named, a protected path is granted; a trust anchor never is.
        let fs = FilesystemPolicy {
            read_write: vec![PathBuf::from("~/.local/bin"), policy.clone()],
            ..FilesystemPolicy::default()
        };
        let v = view(&home, &home.join("src"), fs, vec![policy.clone()]);
        assert!(v.writable(&home.join(".local/bin/tool")));
        assert!(!v.writable(&policy));
        assert!(v.warnings.iter().any(|w| w.contains("never write")));
    }

    #[test]
    fn read_only_narrows_reads_and_default_writes() {
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        let home = canonical(d.path());
        let fs = FilesystemPolicy {
            include_workdir: false,
            read_only: vec![PathBuf::from("/usr"), PathBuf::from("/tmp")],
            read_write: vec![],
        };
        let v = view(&home, &home, fs, vec![]);
        assert!(!v.read_everything);
        assert!(!v.writable(Path::new("/tmp/x")));
        assert!(!v.writable(&home.join("x")));
        assert!(v.writable(&home.join(".claude/x")));
    }
}
