//! Spanned YAML nodes → typed, validated [`Policy`].
//!
//! Every problem becomes a [`Diagnostic`] at the line and column of the offending
//! key or value. Validation does not stop at the first error: the user sees them all.

mod credentials;
mod ctx;
mod lint;
mod network;

use std::path::{Path, PathBuf};

use crate::diag::PolicyError;
use crate::model::{FilesystemPolicy, LandlockCompatibility, Loaded, Policy, ProcessPolicy};
use crate::yaml::{self, Kind, Node, Pos};

use ctx::Ctx;

const TOP_KEYS: &[&str] = &[
    "version",
    "network_policies",
    "filesystem_policy",
    "landlock",
    "process",
    "unix_sockets",
];

pub(crate) fn parse(source: &str, file_name: &str) -> Result<Loaded, PolicyError> {
    let mut ctx = Ctx {
        file: file_name,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let root = match yaml::parse(source) {
        Ok(Some(root)) => root,
        Ok(None) => {
            ctx.error(
                Pos { line: 1, col: 1 },
                "the policy file is empty",
                "start with `version: 1`, then `network_policies:`",
            );
            return Err(ctx.into_error());
        }
        Err(e) => {
            let help = match unclosed_bracket(source, e.pos) {
                Some((c, p)) => format!(
                    "the `{c}` at line {}, column {} is not closed; add `{}` at the end of that entry",
                    p.line,
                    p.col,
                    if c == '{' { '}' } else { ']' }
                ),
                None => "check the indentation and brackets around this line; quote values that contain `: ` or start with `*`, `&`, `!`, `{` or `[`".to_string(),
            };
            ctx.error(e.pos, e.message, help);
            return Err(ctx.into_error());
        }
    };
    if root.is_null() {
        ctx.error(
            root.pos,
            "the policy file is empty",
            "start with `version: 1`, then `network_policies:`",
        );
        return Err(ctx.into_error());
    }
    let policy = ctx.policy(&root, file_name);
    match policy {
        Some(policy) if ctx.errors.is_empty() => Ok(Loaded {
            policy,
            warnings: ctx.warnings,
        }),
        _ => Err(ctx.into_error()),
    }
}

impl Ctx<'_> {
    fn policy(&mut self, root: &Node, file_name: &str) -> Option<Policy> {
        let entries = self.mapping(
            root,
            "the policy file",
            TOP_KEYS,
            "version: 1\nnetwork_policies: {}",
        )?;
        let mut policy = Policy {
            file: file_name.to_string(),
            version: 0,
            network_policies: Vec::new(),
            filesystem: FilesystemPolicy::default(),
            landlock_compatibility: LandlockCompatibility::default(),
            process: ProcessPolicy::default(),
            unix_sockets: Vec::new(),
        };
        let mut saw_version = false;
        for e in &entries {
            match e.key {
                "version" => {
                    saw_version = true;
                    self.version(e.value, &mut policy);
                }
                "network_policies" => self.network_policies(e.value, &mut policy),
                "filesystem_policy" => {
                    if let Some(fs) = self.filesystem(e.value) {
                        policy.filesystem = fs;
                    }
                }
                "unix_sockets" => policy.unix_sockets = self.unix_sockets(e.value),
                "landlock" => {
                    if let Some(ents) = self.mapping(
                        e.value,
                        "`landlock`",
                        &["compatibility"],
                        "landlock:\n  compatibility: best_effort",
                    ) {
                        for le in ents {
                            if let Some(c) = self.enum_value(
                                le.value,
                                "compatibility",
                                &[
                                    ("best_effort", LandlockCompatibility::BestEffort),
                                    ("hard_requirement", LandlockCompatibility::HardRequirement),
                                ],
                            ) {
                                policy.landlock_compatibility = c;
                            }
                        }
                    }
                }
                "process" => {
                    if let Some(ents) = self.mapping(
                        e.value,
                        "`process`",
                        &["run_as_user", "run_as_group"],
                        "process:\n  run_as_user: sandbox",
                    ) {
                        for pe in ents {
                            let what = format!("process.{}", pe.key);
                            let v = self.string(pe.value, &what, &format!("{}: sandbox", pe.key));
                            self.warn(
                                pe.key_pos,
                                format!("`{what}` is not enforced by corral yet"),
                                "the agent runs as the user who starts `corral run`; create and use a dedicated account to get this effect",
                            );
                            if pe.key == "run_as_user" {
                                policy.process.run_as_user = v;
                            } else {
                                policy.process.run_as_group = v;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if !saw_version {
            self.error(
                Pos { line: 1, col: 1 },
                "the policy has no `version`",
                "add `version: 1` as the first line",
            );
        }
        Some(policy)
    }

    fn version(&mut self, node: &Node, policy: &mut Policy) {
        match &node.kind {
            Kind::Scalar { value, plain: true } if value == "1" => policy.version = 1,
            Kind::Scalar {
                value,
                plain: false,
            } if value == "1" => self.error(
                node.pos,
                "`version` must be the number 1, found the string \"1\"",
                "write `version: 1` without quotes",
            ),
            Kind::Scalar { value, .. } => self.error(
                node.pos,
                format!("unsupported policy version `{value}`"),
                "corral reads version 1 policies; write `version: 1`",
            ),
            _ => self.error(
                node.pos,
                format!("`version` must be the number 1, found {}", node.describe()),
                "write `version: 1`",
            ),
        }
    }

    fn path_list(&mut self, node: &Node, what: &str) -> Vec<PathBuf> {
        let example = format!("{what}:\n  - /usr\n  - /etc");
        let Some(items) = self.seq(node, what, &example) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for it in items {
            if let Some(s) = self.string(it, &format!("an entry of {what}"), &example) {
                let in_home = s == "~" || s.starts_with("~/") || s.starts_with("$HOME/");
                if !s.starts_with('/') && !in_home {
                    self.error(
                        it.pos,
                        format!("`{s}` in {what} is not an absolute path"),
                        "write a path starting with `/` (or `~/` for one in your home directory)",
                    );
                    continue;
                }
                out.push(PathBuf::from(s));
            }
        }
        out
    }

    /// `unix_sockets`: host sockets the sandbox may connect to (corral's addition).
    fn unix_sockets(&mut self, node: &Node) -> Vec<String> {
        let example = "unix_sockets:\n  - /run/user/*/gnupg/S.gpg-agent";
        let Some(items) = self.seq(node, "`unix_sockets`", example) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for it in items {
            let Some(s) = self.string(it, "an entry of `unix_sockets`", example) else {
                continue;
            };
            let home_relative = ["~/", "$HOME/", "${HOME}/"]
                .iter()
                .any(|p| s.starts_with(p));
            if !s.starts_with('/') && !home_relative {
                self.error(
                    it.pos,
                    format!("`{s}` in `unix_sockets` is not an absolute path"),
                    "write the socket's real path (`/run/…`, not a symlinked `/var/run/…`), or start it with `~/`",
                );
                continue;
            }
            const WAYS_OUT: &[(&str, &str)] = &[
                (
                    "docker.sock",
                    "a container engine starts containers with the host's network",
                ),
                (
                    "podman",
                    "a container engine starts containers with the host's network",
                ),
                (
                    "containerd",
                    "a container engine starts containers with the host's network",
                ),
                (
                    "nscd",
                    "a name-service cache resolves names: DNS queries carry data out",
                ),
                (
                    "io.systemd.Resolve",
                    "systemd-resolved resolves names: DNS queries carry data out",
                ),
                (
                    "system_bus_socket",
                    "the system bus reaches every system service, resolved included",
                ),
            ];
            if let Some((_, why)) = WAYS_OUT.iter().find(|(name, _)| s.contains(name)) {
                self.warn(
                    it.pos,
                    format!("`{s}` in `unix_sockets` is a way out of the sandbox"),
                    format!("{why}, and no proxy sees it; list it only if that is intended"),
                );
            }
            out.push(s);
        }
        out
    }

    fn filesystem(&mut self, node: &Node) -> Option<FilesystemPolicy> {
        let ents = self.mapping(
            node,
            "`filesystem_policy`",
            &["include_workdir", "read_only", "read_write"],
            "filesystem_policy:\n  include_workdir: true\n  read_only: [/usr, /etc]\n  read_write: [/tmp]",
        )?;
        let mut fs = FilesystemPolicy::default();
        for e in ents {
            match e.key {
                "include_workdir" => {
                    if let Some(b) = self.boolean(e.value, "filesystem_policy.include_workdir") {
                        fs.include_workdir = b;
                    }
                }
                "read_only" => {
                    fs.read_only = self.path_list(e.value, "filesystem_policy.read_only")
                }
                _ => fs.read_write = self.path_list(e.value, "filesystem_policy.read_write"),
            }
        }
        Some(fs)
    }
}

/// The innermost `{`/`[` opened before `at` and not closed by then (outside quotes
/// and comments), for a better hint on flow-collection syntax errors.
fn unclosed_bracket(source: &str, at: Pos) -> Option<(char, Pos)> {
    let mut stack: Vec<(char, Pos)> = Vec::new();
    for (li, line) in source.lines().enumerate() {
        let lno = li + 1;
        if lno > at.line {
            break;
        }
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        for (ci, c) in line.chars().enumerate() {
            if lno == at.line && ci + 1 >= at.col {
                break;
            }
            match quote {
                Some(q) => {
                    if c == q {
                        quote = None;
                    }
                }
                None => match c {
                    '#' if prev == ' ' || prev == '\t' || ci == 0 => break,
                    '"' | '\'' if matches!(prev, ' ' | '{' | '[' | ',' | ':') || ci == 0 => {
                        quote = Some(c)
                    }
                    '{' | '[' => stack.push((
                        c,
                        Pos {
                            line: lno,
                            col: ci + 1,
                        },
                    )),
                    '}' | ']' => {
                        stack.pop();
                    }
                    _ => {}
                },
            }
            prev = c;
        }
    }
    stack.pop()
}

impl Policy {
    /// Read + parse + validate. `Err` carries every error (file:line:col, what, what to write).
    pub fn load(path: &Path) -> Result<Loaded, PolicyError> {
        let source = std::fs::read_to_string(path).map_err(|e| PolicyError::Io {
            file: path.display().to_string(),
            message: e.to_string(),
        })?;
        Policy::parse(&source, &path.display().to_string())
    }

    /// Parse + validate a policy from text. Never panics, whatever the input.
    pub fn parse(source: &str, file_name: &str) -> Result<Loaded, PolicyError> {
        parse(source, file_name)
    }
}
