//! What `corral run` decides before the sandbox starts: the policy as first read, the
//! decision log, the filesystem view per isolation mode and the Landlock rulesets that
//! carry it, and what the identity check trusts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context};
use corral_policy::Policy;
use corral_proxy::{DecisionLog, PolicyHandle, ProxyConfig};

use crate::args::{RunArgs, DEFAULT_POLICY};
use crate::fs_view;
use crate::identity::TrustRules;
use crate::landlock_rules::{self, FsSpec};
use crate::launch::{Mode, NsMounts, TmpMount};
use crate::own_files;
use crate::private_tmp::PrivateTmp;

/// The policy as read at start: that reading decides the filesystem view and the first
/// network policy; the watcher then takes over from it.
pub(crate) struct StartPolicy {
    /// The file and its text (`None`: the embedded default).
    pub(crate) file: Option<(PathBuf, String)>,
    pub(crate) loaded: corral_policy::Loaded,
}

pub(crate) fn load_policy(path: Option<&Path>) -> anyhow::Result<StartPolicy> {
    let file = match path {
        Some(path) => Some((
            path.to_path_buf(),
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the policy {}", path.display()))?,
        )),
        None => None,
    };
    let loaded = match &file {
        Some((path, text)) => Policy::parse(text, &path.display().to_string()),
        None => {
            eprintln!(
                "corral: no --policy given: the embedded default policy allows no connection; \
                 each refusal names what to add (see `corral policy suggest`)"
            );
            Policy::parse(DEFAULT_POLICY, "<embedded default policy>")
        }
    }
    .map_err(|e| anyhow!("{e}"))?;
    for w in &loaded.warnings {
        eprintln!("corral: warning: {w}");
    }
    Ok(StartPolicy { file, loaded })
}

/// Everything decided before the sandbox starts.
pub(crate) struct Setting {
    pub(crate) home: Option<PathBuf>,
    pub(crate) log_path: PathBuf,
    /// The filesystem view in namespace mode and in seccomp-only mode (they differ in
    /// where temporary files go, and in corral's executable when a grant holds it).
    pub(crate) fs_namespaces: FsSetting,
    pub(crate) fs_seccomp: FsSetting,
    /// Directories (and corral's executable, when a grant holds it) bound read-only in
    /// namespace mode.
    pub(crate) read_only: Vec<PathBuf>,
    /// The other mounts of namespace mode (git's guard, hidden secrets, private `/tmp`).
    pub(crate) ns_mounts: NsMounts,
    /// The session's temporary files, removed when the setting is dropped.
    pub(crate) _private_tmp: Option<PrivateTmp>,
    /// The embedded proxy's configuration, with the decision log opened before the sandbox
    /// starts. The broker and the proxy write through this one log, so its folding and
    /// size bound cover both.
    pub(crate) proxy: Arc<ProxyConfig>,
}

/// A filesystem view and the Landlock ruleset that carries it.
pub(crate) struct FsSetting {
    pub(crate) view: fs_view::View,
    pub(crate) landlock: landlock_rules::Prepared,
}

impl Setting {
    pub(crate) fn fs(&self, mode: Mode) -> &FsSetting {
        match mode {
            Mode::SeccompOnly => &self.fs_seccomp,
            Mode::Namespaces => &self.fs_namespaces,
        }
    }
}

/// corral's own executable is a trust anchor. In namespace mode it is bound read-only over
/// itself (a mount point cannot be removed or renamed over), so a grant that holds it
/// (an installer's `~/.local/bin`) stays whole; without a mount namespace the grant is
/// split around it, like around the other anchors.
pub(crate) fn fs_settings(
    args: &RunArgs,
    policy: &StartPolicy,
    home: Option<&Path>,
    cwd: &Path,
    log_path: &Path,
    private_tmp: Option<&PrivateTmp>,
) -> anyhow::Result<(FsSetting, FsSetting, Option<PathBuf>)> {
    let anchors = own_files::trust_anchors(args.policy.as_deref(), log_path, cwd);
    let own_exe = std::env::current_exe().ok().map(|e| fs_view::canonical(&e));
    let hidden = secret_files(&policy.loaded.policy, home);
    let build = |with_exe: bool, tmp: fs_view::Tmp| {
        let mut anchors = anchors.clone();
        if with_exe {
            anchors.extend(own_exe.clone());
        }
        fs_view::build(&fs_view::Inputs {
            policy: &policy.loaded.policy.filesystem,
            home,
            cwd,
            anchors,
            claude_config_dir: std::env::var_os("CLAUDE_CONFIG_DIR")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
            tmp,
            hidden: hidden.clone(),
        })
    };
    let prepare = |view: fs_view::View| -> anyhow::Result<FsSetting> {
        let landlock = landlock_rules::prepare(&FsSpec {
            rules: view.rules.clone(),
            read_everything: view.read_everything,
            hard_requirement: policy.loaded.policy.landlock_compatibility
                == corral_policy::model::LandlockCompatibility::HardRequirement,
            deny_tcp_connect: true,
        })?;
        Ok(FsSetting { view, landlock })
    };
    let namespaces = build(
        false,
        match private_tmp {
            Some(_) => fs_view::Tmp::Overlay,
            None => fs_view::Tmp::Unavailable,
        },
    );
    if !args.explain_fs {
        create_state_dirs(&namespaces.create);
        create_state_dirs(&namespaces.code.create);
        for file in &namespaces.code.create_files {
            // Where its directory could not be made, the sandbox cannot make it either.
            if !file.parent().is_some_and(Path::is_dir) {
                continue;
            }
            if let Err(e) = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(file)
                .and_then(|mut f| std::io::Write::write_all(&mut f, b"{}\n"))
            {
                eprintln!(
                    "corral: warning: cannot create {} ({e}); the sandbox could create it",
                    file.display()
                );
            }
        }
    }
    let exe_reachable = own_exe
        .as_deref()
        .filter(|e| namespaces.writable(e))
        .map(Path::to_path_buf);
    let seccomp = build(
        exe_reachable.is_some(),
        match private_tmp {
            Some(t) => fs_view::Tmp::Dir(t.tmp()),
            None => fs_view::Tmp::Unavailable,
        },
    );
    Ok((prepare(namespaces)?, prepare(seccomp)?, exe_reachable))
}

/// The secrets of the policy's `credentials`: the sandbox may not read them.
fn secret_files(policy: &Policy, home: Option<&Path>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = policy
        .network_policies
        .iter()
        .flat_map(|g| &g.credentials)
        .filter_map(|c| match (c.secret_file.strip_prefix("~"), home) {
            (Ok(rest), Some(h)) => Some(h.join(rest)),
            (Ok(_), None) => None,
            (Err(_), _) => Some(c.secret_file.clone()),
        })
        .collect();
    files.sort();
    files.dedup();
    files
}

/// Host sockets under `/tmp` that the policy lists under `unix_sockets` (a glob matched
/// against what exists at start): carried over the private `/tmp` as the host's, since a
/// socket reached through an overlay is not the one bound below it. Each socket alone,
/// not its directory, which the sandbox could then write.
fn listed_sockets_under_tmp(policy: &Policy, home: Option<&Path>) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let is_socket =
        |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket());
    let mut found = Vec::new();
    for entry in &policy.unix_sockets {
        let expanded = match (entry.strip_prefix("~/"), home) {
            (Some(rest), Some(h)) => h.join(rest).display().to_string(),
            (Some(_), None) => continue,
            (None, _) => entry.clone(),
        };
        if !expanded.starts_with("/tmp/") {
            continue;
        }
        if !corral_policy::glob::Glob::is_pattern(&expanded) {
            if is_socket(Path::new(&expanded)) {
                found.push(PathBuf::from(expanded));
            }
            continue;
        }
        let glob = corral_policy::glob::Glob::new(&expanded);
        let fixed: PathBuf = Path::new(&expanded)
            .components()
            .take_while(|c| {
                !corral_policy::glob::Glob::is_pattern(&c.as_os_str().to_string_lossy())
            })
            .collect();
        let mut dirs = vec![(fixed, 0)];
        let mut seen = 0;
        while let Some((dir, depth)) = dirs.pop() {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                seen += 1;
                if seen > 10_000 {
                    break;
                }
                let p = e.path();
                match e.file_type() {
                    Ok(t) if t.is_dir() && depth < 4 => dirs.push((p, depth + 1)),
                    Ok(t) if t.is_socket() && glob.matches(&p.display().to_string()) => {
                        found.push(p);
                    }
                    _ => {}
                }
            }
        }
    }
    found
}

/// Namespace mode's mounts for a view.
fn ns_mounts(fs: &FsSetting, private_tmp: Option<&PrivateTmp>, sockets: Vec<PathBuf>) -> NsMounts {
    let view = &fs.view;
    NsMounts {
        // What cannot be reached (a HOME this user may not enter) needs no guard.
        pin: view
            .code
            .pin
            .iter()
            .filter(|p| p.exists())
            .cloned()
            .collect(),
        read_only: view
            .code
            .read_only
            .iter()
            .filter(|p| p.exists())
            .cloned()
            .collect(),
        hide: view
            .hidden
            .iter()
            .filter(|h| h.is_file())
            .cloned()
            .collect(),
        blank: private_tmp
            .filter(|_| view.hidden.iter().any(|h| h.is_file()))
            .and_then(|t| t.blank().ok()),
        read_sys: view.read_everything,
        tmp: match (&view.tmp_overlay, private_tmp) {
            (Some(carried), Some(t)) => Some(TmpMount {
                upper: t.upper(),
                work: t.work(),
                bare: t.bare(),
                carried: fs_view::outermost(carried.iter().cloned().chain(sockets).collect()),
                access: fs.landlock.write_access,
                shm: view.grants.iter().any(|(_, o)| *o == fs_view::Origin::Shm),
            }),
            _ => None,
        },
    }
}

/// Creates the agent's state directory before the ruleset is made: a Landlock rule needs
/// a path that exists.
pub(crate) fn create_state_dirs(dirs: &[PathBuf]) {
    for dir in dirs {
        if let Err(e) = std::os::unix::fs::DirBuilderExt::mode(
            std::fs::DirBuilder::new().recursive(true),
            0o700,
        )
        .create(dir)
        {
            eprintln!(
                "corral: warning: cannot create {} for the sandbox ({e}); it stays read-only inside",
                dir.display()
            );
        }
    }
}

pub(crate) fn prepare_session(args: &RunArgs, policy: &StartPolicy) -> anyhow::Result<Setting> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let log_path = match &args.log {
        Some(p) => p.clone(),
        None => default_log_path()?,
    };
    let private_tmp = match PrivateTmp::create(home.as_deref()) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("corral: warning: cannot make the session's private temporary directory ({e}): /tmp is read-only in the sandbox");
            None
        }
    };
    let (fs_namespaces, fs_seccomp, exe_reachable) = fs_settings(
        args,
        policy,
        home.as_deref(),
        &cwd,
        &log_path,
        private_tmp.as_ref(),
    )?;
    let ns_mounts = ns_mounts(
        &fs_namespaces,
        private_tmp.as_ref(),
        listed_sockets_under_tmp(&policy.loaded.policy, home.as_deref()),
    );
    let view = &fs_namespaces.view;
    for w in &view.warnings {
        eprintln!("corral: warning: {w}");
    }
    for w in &fs_namespaces.landlock.warnings {
        eprintln!("corral: warning: {w}");
    }
    let fix = suggest_command(&log_path, args.policy.as_deref());
    // The log exists before the sandbox starts, in a directory the sandbox cannot change.
    let mut proxy = ProxyConfig::new(open_log(&log_path, args, &fix)?);
    proxy.overrides = args.names.table()?;
    let mut read_only =
        own_files::protected_dirs(args.policy.as_deref(), &log_path, home.as_deref(), &cwd)?;
    read_only.extend(exe_reachable);
    Ok(Setting {
        home,
        log_path,
        fs_namespaces,
        fs_seccomp,
        read_only,
        ns_mounts,
        _private_tmp: private_tmp,
        proxy: Arc::new(proxy),
    })
}

fn open_log(path: &Path, args: &RunArgs, fix: &str) -> anyhow::Result<DecisionLog> {
    let log = DecisionLog::to_file(path)
        .with_context(|| format!("opening the decision log {}", path.display()))?
        .with_max_bytes(args.log_max_bytes);
    Ok(if args.quiet {
        log
    } else {
        log.with_notices(fix.to_string())
    })
}

/// What the identity check trusts: code the sandbox cannot have written, or code whose
/// hash the policy pins or `corral install` recorded.
pub(crate) fn trust_rules(setting: &Setting, mode: Mode, policy: PolicyHandle) -> TrustRules {
    let fs = setting.fs(mode);
    let writable: Vec<PathBuf> = fs
        .view
        .rules
        .iter()
        .filter(|r| r.writes())
        .map(|r| r.path.clone())
        .collect();
    let own_sha = crate::trust::OwnHash::of(std::env::current_exe().ok());
    TrustRules {
        sandbox_writable: fs.landlock.ruleset.is_some().then_some(writable),
        home: setting.home.clone(),
        install_record: crate::trust::install_record(setting.home.as_deref()),
        own_sha,
        pinned: Box::new(move |path: &Path, sha: &str| policy.current().0.pins(path, sha)),
    }
}

/// The command that turns this session's refusals into policy lines.
pub(crate) fn suggest_command(log: &Path, policy: Option<&Path>) -> String {
    let quote = |p: &Path| {
        let s = p.to_string_lossy();
        if s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@%,=".contains(&b))
        {
            s.into_owned()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    let mut cmd = format!("corral policy suggest --from {}", quote(log));
    if let Some(p) = policy {
        let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        cmd.push_str(&format!(" --policy {}", quote(&p)));
    }
    cmd
}

pub(crate) fn default_log_path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_STATE_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(
            std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set; pass --log FILE"))?,
        )
        .join(".local/state"),
    };
    let dir = base.join("corral");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.join("decisions.jsonl"))
}
