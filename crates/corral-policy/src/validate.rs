//! Spanned YAML nodes → typed, validated [`Policy`].
//!
//! Every problem becomes a [`Diagnostic`] at the line and column of the offending
//! key or value. Validation does not stop at the first error: the user sees them all.

use std::path::PathBuf;

use crate::diag::{Diagnostic, PolicyError, Severity};
use crate::host::HostPattern;
use crate::model::{
    Access, BinaryRule, Children, Endpoint, FilesystemPolicy, L7Rule, LandlockCompatibility,
    Loaded, NetworkPolicy, Policy, ProcessPolicy,
};
use crate::yaml::{self, Kind, Node, Pos};

pub(crate) struct Ctx<'f> {
    file: &'f str,
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn diag(
        &self,
        severity: Severity,
        pos: Pos,
        message: String,
        help: Option<String>,
    ) -> Diagnostic {
        Diagnostic {
            severity,
            file: self.file.to_string(),
            line: pos.line.max(1),
            column: pos.col.max(1),
            message,
            help,
        }
    }

    pub fn error(&mut self, pos: Pos, message: impl Into<String>, help: impl Into<String>) {
        let help = help.into();
        let d = self.diag(
            Severity::Error,
            pos,
            message.into(),
            (!help.is_empty()).then_some(help),
        );
        self.errors.push(d);
    }

    pub fn warn(&mut self, pos: Pos, message: impl Into<String>, help: impl Into<String>) {
        let help = help.into();
        let d = self.diag(
            Severity::Warning,
            pos,
            message.into(),
            (!help.is_empty()).then_some(help),
        );
        self.warnings.push(d);
    }
}

/// The closest candidate within a small edit distance, for "did you mean".
pub(crate) fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let w = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(&w, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// A mapping entry with its key as text.
struct Entry<'n> {
    key: &'n str,
    key_pos: Pos,
    value: &'n Node,
}

fn type_help(expected: &str, example: &str) -> String {
    format!("write {expected}, for example:\n{example}")
}

impl<'f> Ctx<'f> {
    /// The entries of a mapping, with unknown/duplicate keys reported.
    fn mapping<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        known: &[&str],
        example: &str,
    ) -> Option<Vec<Entry<'n>>> {
        let Kind::Map(pairs) = &node.kind else {
            self.error(
                node.pos,
                format!("{what} must be a mapping, found {}", node.describe()),
                type_help("a mapping of `key: value` lines", example),
            );
            return None;
        };
        let mut out: Vec<Entry<'n>> = Vec::new();
        for (k, v) in pairs {
            let Kind::Scalar { value: key, .. } = &k.kind else {
                self.error(
                    k.pos,
                    format!("keys in {what} must be plain words, found {}", k.describe()),
                    "",
                );
                continue;
            };
            if let Some(prev) = out.iter().find(|e| e.key == key) {
                let (line, col) = (prev.key_pos.line, prev.key_pos.col);
                self.error(
                    k.pos,
                    format!("duplicate key `{key}` in {what} (first at line {line}, column {col})"),
                    "remove one of them; YAML keeps only one",
                );
                continue;
            }
            if !known.is_empty() && !known.contains(&key.as_str()) {
                let help = match did_you_mean(key, known) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("known keys here: {}", known.join(", ")),
                };
                self.error(k.pos, format!("unknown key `{key}` in {what}"), help);
                continue;
            }
            out.push(Entry {
                key,
                key_pos: k.pos,
                value: v,
            });
        }
        Some(out)
    }

    fn string(&mut self, node: &Node, what: &str, example: &str) -> Option<String> {
        match &node.kind {
            Kind::Scalar { value, .. } if !node.is_null() => Some(value.clone()),
            _ => {
                self.error(
                    node.pos,
                    format!("{what} must be a string, found {}", node.describe()),
                    type_help("a single value", example),
                );
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match &node.kind {
            Kind::Scalar { value, plain: true } => match value.as_str() {
                "true" | "True" | "TRUE" => return Some(true),
                "false" | "False" | "FALSE" => return Some(false),
                _ => {}
            },
            Kind::Scalar {
                value,
                plain: false,
            } if value == "true" || value == "false" => {
                self.error(
                    node.pos,
                    format!("{what} must be a boolean, found the quoted string \"{value}\""),
                    format!("remove the quotes: `{value}`"),
                );
                return None;
            }
            _ => {}
        }
        self.error(
            node.pos,
            format!(
                "{what} must be `true` or `false`, found {}",
                node.describe()
            ),
            "write `true` or `false`",
        );
        None
    }

    fn seq<'n>(&mut self, node: &'n Node, what: &str, example: &str) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::Seq(items) => Some(items),
            _ if node.is_null() => Some(&[]),
            _ => {
                self.error(
                    node.pos,
                    format!("{what} must be a list, found {}", node.describe()),
                    type_help("a list", example),
                );
                None
            }
        }
    }

    fn port(&mut self, node: &Node, what: &str) -> Option<u16> {
        let help = "ports are whole numbers from 1 to 65535, e.g. `port: 443`";
        match &node.kind {
            Kind::Scalar { value, plain } => match value.trim().parse::<i64>() {
                Ok(p) if (1..=65535).contains(&p) => {
                    if !plain {
                        self.error(
                            node.pos,
                            format!("{what} must be a number, found the quoted string \"{value}\""),
                            format!("remove the quotes: `{value}`"),
                        );
                        return None;
                    }
                    Some(p as u16)
                }
                Ok(p) => {
                    self.error(node.pos, format!("{what} {p} is out of range"), help);
                    None
                }
                Err(_) => {
                    self.error(
                        node.pos,
                        format!(
                            "{what} must be a number, found {} `{value}`",
                            node.describe()
                        ),
                        help,
                    );
                    None
                }
            },
            _ => {
                self.error(
                    node.pos,
                    format!("{what} must be a number, found {}", node.describe()),
                    help,
                );
                None
            }
        }
    }

    /// A string that must be one of `values`; `key` is the bare key name.
    fn enum_value<T: Copy>(&mut self, node: &Node, key: &str, values: &[(&str, T)]) -> Option<T> {
        let names: Vec<&str> = values.iter().map(|(n, _)| *n).collect();
        let s = self.string(node, &format!("`{key}`"), &format!("{key}: {}", names[0]))?;
        if let Some((_, v)) = values.iter().find(|(n, _)| *n == s) {
            return Some(*v);
        }
        let help = match did_you_mean(&s.replace('-', "_"), &names)
            .or_else(|| did_you_mean(&s.replace('_', "-"), &names))
        {
            Some(m) => format!("did you mean `{m}`? (one of: {})", names.join(", ")),
            None => format!("write one of: {}", names.join(", ")),
        };
        self.error(node.pos, format!("`{key}: {s}` is not a known value"), help);
        None
    }
}

const TOP_KEYS: &[&str] = &[
    "version",
    "network_policies",
    "filesystem_policy",
    "landlock",
    "process",
];
const GROUP_KEYS: &[&str] = &["name", "endpoints", "binaries"];
const ENDPOINT_KEYS: &[&str] = &[
    "host",
    "port",
    "ports",
    "protocol",
    "tls",
    "enforcement",
    "access",
    "rules",
    "deny_rules",
    "allowed_ips",
    "path",
];
const BINARY_KEYS: &[&str] = &["path", "sha256", "children"];

const GROUP_EXAMPLE: &str = "network_policies:\n  github:\n    endpoints:\n      - { host: github.com, port: 443 }\n    binaries:\n      - { path: /usr/bin/git }";
const ENDPOINT_EXAMPLE: &str = "endpoints:\n  - { host: github.com, port: 443 }";
const BINARY_EXAMPLE: &str = "binaries:\n  - { path: /usr/bin/git }";

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
    fn into_error(self) -> PolicyError {
        PolicyError::Invalid {
            errors: self.errors,
            warnings: self.warnings,
        }
    }

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
                if !s.starts_with('/') {
                    self.error(
                        it.pos,
                        format!("`{s}` in {what} is not an absolute path"),
                        "write a path starting with `/`",
                    );
                    continue;
                }
                out.push(PathBuf::from(s));
            }
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

    fn network_policies(&mut self, node: &Node, policy: &mut Policy) {
        if node.is_null() {
            return;
        }
        let Some(groups) = self.mapping(node, "`network_policies`", &[], GROUP_EXAMPLE) else {
            return;
        };
        for g in groups {
            if let Some(np) = self.group(&g) {
                policy.network_policies.push(np);
            }
        }
    }

    fn group(&mut self, g: &Entry<'_>) -> Option<NetworkPolicy> {
        let what = format!("network_policies.{}", g.key);
        let ents = self.mapping(g.value, &format!("`{what}`"), GROUP_KEYS, GROUP_EXAMPLE)?;
        let mut np = NetworkPolicy {
            key: g.key.to_string(),
            name: None,
            endpoints: Vec::new(),
            binaries: Vec::new(),
            line: g.key_pos.line,
        };
        let (mut saw_endpoints, mut saw_binaries) = (false, false);
        let errors_before = self.errors.len();
        let mut binary_pos: Vec<Pos> = Vec::new();
        for e in ents {
            match e.key {
                "name" => np.name = self.string(e.value, &format!("{what}.name"), "name: github"),
                "endpoints" => {
                    saw_endpoints = true;
                    if let Some(items) =
                        self.seq(e.value, &format!("{what}.endpoints"), ENDPOINT_EXAMPLE)
                    {
                        for it in items {
                            if let Some(ep) = self.endpoint(it, &what) {
                                np.endpoints.push(ep);
                            }
                        }
                    }
                }
                _ => {
                    saw_binaries = true;
                    if let Some(items) =
                        self.seq(e.value, &format!("{what}.binaries"), BINARY_EXAMPLE)
                    {
                        for it in items {
                            if let Some(b) = self.binary(it, &what) {
                                np.binaries.push(b);
                                binary_pos.push(it.pos);
                            }
                        }
                    }
                }
            }
        }
        let clean = self.errors.len() == errors_before;
        if clean {
            self.lint_group(&np, &binary_pos);
        }
        if !saw_endpoints || (np.endpoints.is_empty() && clean) {
            self.warn(
                g.key_pos,
                format!(
                    "policy group `{}` lists no endpoints, so it allows nothing",
                    g.key
                ),
                format!("add endpoints, e.g.\n{ENDPOINT_EXAMPLE}"),
            );
        }
        if !saw_binaries || (np.binaries.is_empty() && clean) {
            self.warn(
                g.key_pos,
                format!(
                    "policy group `{}` lists no binaries, so no program may use its endpoints",
                    g.key
                ),
                format!("add the programs that need these endpoints, e.g.\n{BINARY_EXAMPLE}"),
            );
        }
        Some(np)
    }

    fn endpoint(&mut self, node: &Node, group: &str) -> Option<Endpoint> {
        let what = format!("an endpoint of {group}");
        let errors_before = self.errors.len();
        let ents = self.mapping(node, &what, ENDPOINT_KEYS, ENDPOINT_EXAMPLE)?;
        let mut ok = self.errors.len() == errors_before;
        let mut host: Option<HostPattern> = None;
        let mut ports: Vec<u16> = Vec::new();
        let mut port_key: Option<(&str, Pos)> = None;
        let mut ep = Endpoint {
            host: HostPattern {
                written: String::new(),
                kind: crate::host::HostKind::Exact(String::new()),
            },
            ports: Vec::new(),
            protocol: None,
            tls: None,
            enforcement: None,
            access: None,
            rules: Vec::new(),
            deny_rules: Vec::new(),
            allowed_ips: Vec::new(),
            line: node.pos.line,
        };
        let mut access_pos = None;
        let mut rules_pos = None;
        for e in &ents {
            match e.key {
                "host" => {
                    let s = self.string(e.value, "`host`", "host: api.example.com");
                    match s.map(|s| HostPattern::parse(&s)) {
                        Some(Ok(h)) => host = Some(h),
                        Some(Err(err)) => {
                            self.error(e.value.pos, err.message, err.help);
                            ok = false;
                        }
                        None => ok = false,
                    }
                }
                "port" | "ports" => {
                    if let Some((other, _)) = port_key {
                        self.error(
                            e.key_pos,
                            format!("an endpoint has both `{other}` and `{}`", e.key),
                            "keep one: `port: 443` or `ports: [80, 443]`",
                        );
                        ok = false;
                        continue;
                    }
                    port_key = Some((e.key, e.key_pos));
                    if e.key == "port" {
                        if let Kind::Seq(_) = e.value.kind {
                            self.error(
                                e.value.pos,
                                "`port` takes one number, found a list",
                                "write `ports: [80, 443]` for several ports",
                            );
                            ok = false;
                        } else if let Some(p) = self.port(e.value, "`port`") {
                            ports.push(p);
                        } else {
                            ok = false;
                        }
                    } else if let Kind::Scalar { .. } = e.value.kind {
                        self.error(
                            e.value.pos,
                            format!("`ports` takes a list, found {}", e.value.describe()),
                            "write `ports: [443]`, or `port: 443` for one port",
                        );
                        ok = false;
                    } else if let Some(items) = self.seq(e.value, "`ports`", "ports: [80, 443]") {
                        if items.is_empty() {
                            self.error(
                                e.value.pos,
                                "`ports` is empty",
                                "list at least one port: `ports: [443]`",
                            );
                            ok = false;
                        }
                        for it in items {
                            match self.port(it, "an entry of `ports`") {
                                Some(p) => ports.push(p),
                                None => ok = false,
                            }
                        }
                    }
                }
                "protocol" => {
                    ep.protocol = self.string(e.value, "`protocol`", "protocol: rest");
                    if let Some(p) = &ep.protocol {
                        if !matches!(p.as_str(), "rest" | "tcp" | "http" | "https") {
                            self.warn(
                                e.value.pos,
                                format!("`protocol: {p}` is not known to corral; the endpoint is checked by host and port only"),
                                "corral knows `rest` (HTTP requests checked against `access`/`rules`) and `tcp`",
                            );
                        }
                    }
                }
                "tls" => {
                    ep.tls = self.string(e.value, "`tls`", "tls: terminate");
                    if let Some(t) = ep.tls.as_deref().filter(|t| *t != "passthrough") {
                        self.warn(
                            e.key_pos,
                            format!("`tls: {t}` is not enforced by corral yet"),
                            "corral does not terminate TLS yet: HTTPS traffic to this endpoint is relayed unmodified and checked by host, port and binary",
                        );
                    }
                }
                "enforcement" => {
                    ep.enforcement = self.string(e.value, "`enforcement`", "enforcement: enforce");
                    if let Some(t) = ep.enforcement.as_deref().filter(|t| *t != "enforce") {
                        self.warn(
                            e.key_pos,
                            format!("`enforcement: {t}` is not supported by corral yet"),
                            "corral always enforces: traffic that the policy does not allow is refused",
                        );
                    }
                }
                "access" => {
                    access_pos = Some(e.key_pos);
                    ep.access = self.enum_value(
                        e.value,
                        "access",
                        &[
                            ("read-only", Access::ReadOnly),
                            ("read-write", Access::ReadWrite),
                            ("full", Access::Full),
                        ],
                    );
                    ok &= ep.access.is_some();
                }
                "rules" => {
                    rules_pos = Some(e.key_pos);
                    match self.rules(e.value, "`rules`", "allow") {
                        Some(r) => ep.rules = r,
                        None => ok = false,
                    }
                }
                "deny_rules" => match self.rules(e.value, "`deny_rules`", "deny") {
                    Some(r) => ep.deny_rules = r,
                    None => ok = false,
                },
                "allowed_ips" => {
                    let ex = "allowed_ips:\n  - 10.0.0.0/8";
                    if let Some(items) = self.seq(e.value, "`allowed_ips`", ex) {
                        for it in items {
                            let Some(s) = self.string(it, "an entry of `allowed_ips`", ex) else {
                                ok = false;
                                continue;
                            };
                            let net = s
                                .parse::<ipnet::IpNet>()
                                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
                            match net {
                                Ok(n) => {
                                    self.lint_allowed_ip(&n, it.pos);
                                    ep.allowed_ips.push(n.trunc());
                                }
                                Err(_) => {
                                    self.error(
                                        it.pos,
                                        format!("`{s}` is not an IP address or CIDR range"),
                                        "write an address such as `10.1.2.3` or a range such as `10.0.0.0/8`",
                                    );
                                    ok = false;
                                }
                            }
                        }
                    }
                }
                _ => {
                    // `path` on an endpoint.
                    let _ = self.string(e.value, "`path`", "path: /");
                    self.warn(
                        e.key_pos,
                        "endpoint `path` is not enforced by corral yet",
                        "to restrict request paths, use `rules: [{ allow: { method: GET, path: \"/x/**\" } }]`",
                    );
                }
            }
        }
        if let (Some(a), Some(_)) = (access_pos, rules_pos) {
            self.error(
                a,
                "an endpoint has both `access` and `rules`",
                "use `access` for a preset (read-only, read-write, full) or `rules` for exact method/path rules, not both",
            );
            ok = false;
        }
        if host.is_none() && ok && !ents.iter().any(|e| e.key == "host") {
            self.error(
                node.pos,
                "endpoint has no `host`",
                "add `host: api.example.com`",
            );
            ok = false;
        }
        if port_key.is_none() && ok {
            self.error(
                node.pos,
                "endpoint has no `port`",
                "add `port: 443` (or `ports: [80, 443]`)",
            );
            ok = false;
        }
        if ep.has_l7() {
            let l7_pos = rules_pos.or(access_pos).unwrap_or(node.pos);
            if ep.protocol.as_deref() != Some("rest") {
                self.warn(
                    l7_pos,
                    "request rules apply to `protocol: rest` endpoints; this endpoint has no `protocol: rest`",
                    "add `protocol: rest` so it is clear that HTTP requests are checked",
                );
            }
            self.warn(
                l7_pos,
                "`access`/`rules` are enforced only for plain-HTTP requests that the proxy can read",
                "corral does not terminate TLS yet, so HTTPS (CONNECT) traffic to this endpoint is checked by host, port and binary only",
            );
        }
        if !ok {
            return None;
        }
        ep.host = host?;
        ports.sort_unstable();
        ports.dedup();
        ep.ports = ports;
        Some(ep)
    }

    fn rules(&mut self, node: &Node, what: &str, verb: &str) -> Option<Vec<L7Rule>> {
        let example = format!(
            "{}:\n  - {verb}: {{ method: GET, path: \"/repos/**\" }}",
            what.trim_matches('`')
        );
        let items = self.seq(node, what, &example)?;
        let mut out = Vec::new();
        let mut ok = true;
        for it in items {
            let Some(ents) = self.mapping(
                it,
                &format!("an entry of {what}"),
                &[verb, "method", "path"],
                &example,
            ) else {
                ok = false;
                continue;
            };
            // Either `{ allow: { method, path } }` or (for deny_rules also) `{ method, path }`.
            let inner: Vec<Entry<'_>>;
            let (body, body_pos) = if let Some(v) = ents.iter().find(|e| e.key == verb) {
                if ents.len() > 1 {
                    self.error(
                        v.key_pos,
                        format!("`{verb}` must be the only key of a rule"),
                        example.clone(),
                    );
                    ok = false;
                    continue;
                }
                let Some(x) =
                    self.mapping(v.value, &format!("`{verb}`"), &["method", "path"], &example)
                else {
                    ok = false;
                    continue;
                };
                inner = x;
                (&inner, v.value.pos)
            } else if verb == "deny" && !ents.is_empty() {
                (&ents, it.pos)
            } else {
                self.error(it.pos, format!("a rule needs `{verb}:`"), example.clone());
                ok = false;
                continue;
            };
            let mut method = None;
            let mut path = None;
            for e in body {
                match e.key {
                    "method" => method = self.string(e.value, "`method`", "method: GET"),
                    "path" => {
                        path = self.string(e.value, "`path`", "path: \"/repos/**\"");
                        if let Some(p) = &path {
                            if !p.starts_with('/') && !p.starts_with('*') {
                                self.error(
                                    e.value.pos,
                                    format!("rule path `{p}` does not start with `/`"),
                                    "request paths start with `/`, e.g. `path: \"/v1/**\"`",
                                );
                                ok = false;
                            }
                        }
                    }
                    _ => {}
                }
            }
            let method = method.map(|m| m.to_ascii_uppercase());
            if let Some(m) = &method {
                if m != "*" && !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                    self.error(
                        body_pos,
                        format!("`{m}` is not an HTTP method"),
                        "write a method such as `GET` or `POST`, or `*` for any",
                    );
                    ok = false;
                }
            }
            match (method, path) {
                (Some(method), Some(path)) => out.push(L7Rule { method, path }),
                (m, p) => {
                    let missing = if m.is_none() { "method" } else { "path" };
                    let _ = p;
                    self.error(
                        body_pos,
                        format!("rule has no `{missing}`"),
                        example.clone(),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn binary(&mut self, node: &Node, group: &str) -> Option<BinaryRule> {
        // Accept the short form `- /usr/bin/git` too.
        if let Kind::Scalar { .. } = node.kind {
            let s = self.string(node, "a binary", BINARY_EXAMPLE)?;
            self.error(
                node.pos,
                format!("binaries are mappings with a `path`, found the bare string `{s}`"),
                format!("write `- {{ path: {s} }}`"),
            );
            return None;
        }
        let ents = self.mapping(
            node,
            &format!("a binary of {group}"),
            BINARY_KEYS,
            BINARY_EXAMPLE,
        )?;
        let mut path = None;
        let mut sha256 = None;
        let mut children = Children::Deny;
        let mut ok = true;
        let mut sha_pos = node.pos;
        for e in &ents {
            match e.key {
                "path" => {
                    let Some(p) = self.string(e.value, "`path`", "path: /usr/bin/git") else {
                        ok = false;
                        continue;
                    };
                    let abs = p.starts_with('/')
                        || p.starts_with("~/")
                        || p.starts_with("$HOME/")
                        || p.starts_with("${HOME}/");
                    if !abs {
                        self.error(
                            e.value.pos,
                            format!("binary path `{p}` is not absolute"),
                            "write the full path, e.g. `/usr/bin/git` or `~/.local/bin/claude` (find it with `command -v NAME`)",
                        );
                        ok = false;
                    }
                    path = Some(p);
                }
                "sha256" => {
                    sha_pos = e.value.pos;
                    let Some(h) = self.string(e.value, "`sha256`", "sha256: <64 hex digits>")
                    else {
                        ok = false;
                        continue;
                    };
                    let h = h.trim().to_ascii_lowercase();
                    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                        self.error(
                            e.value.pos,
                            "`sha256` must be 64 hexadecimal digits",
                            "compute it with `sha256sum /path/to/binary`",
                        );
                        ok = false;
                    }
                    sha256 = Some(h);
                }
                _ => {
                    match self.enum_value(
                        e.value,
                        "children",
                        &[("inherit", Children::Inherit), ("deny", Children::Deny)],
                    ) {
                        Some(c) => children = c,
                        None => ok = false,
                    }
                }
            }
        }
        let Some(path) = path else {
            if ok {
                self.error(
                    node.pos,
                    "binary has no `path`",
                    "write `- { path: /usr/bin/git }`",
                );
            }
            return None;
        };
        if sha256.is_some() && path.contains('*') {
            self.error(
                sha_pos,
                "a `sha256` pin needs an exact binary path, not a glob",
                "list the binary by its exact path, or remove the pin",
            );
            ok = false;
        }
        if sha256.is_some() && children == Children::Inherit {
            self.error(
                sha_pos,
                "`sha256` cannot be combined with `children: inherit`",
                "corral knows the hash of the connecting executable only, not of its ancestors; keep one of the two",
            );
            ok = false;
        }
        ok.then_some(BinaryRule {
            path,
            sha256,
            children,
            line: node.pos.line,
        })
    }
}

/// Interpreters: a grant to one of these is a grant to any script it runs.
const INTERPRETERS: &[&str] = &[
    "python",
    "node",
    "nodejs",
    "bash",
    "sh",
    "dash",
    "zsh",
    "ksh",
    "fish",
    "perl",
    "ruby",
    "php",
    "lua",
    "deno",
    "bun",
    "pwsh",
    "tclsh",
    "busybox",
    "env",
    "osascript",
];

fn is_interpreter(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '*');
    INTERPRETERS.contains(&stem)
}

impl Ctx<'_> {
    /// Warnings for grants that are valid but risky.
    fn lint_group(&mut self, np: &NetworkPolicy, binary_pos: &[Pos]) {
        let wild: Vec<&str> = np
            .endpoints
            .iter()
            .filter(|e| e.host.is_wildcard())
            .map(|e| e.host.written.as_str())
            .collect();
        for (b, pos) in np.binaries.iter().zip(binary_pos) {
            let any_binary = b.path == "/**" || b.path == "/*" || b.path == "/**/*";
            if any_binary {
                self.warn(
                    *pos,
                    format!(
                        "`{}` lets every program in the sandbox use the endpoints of `{}`",
                        b.path, np.key
                    ),
                    "list the programs that need these endpoints instead, e.g. `- { path: /usr/bin/redis-cli }`",
                );
            } else if is_interpreter(&b.path) && !wild.is_empty() {
                self.warn(
                    *pos,
                    format!(
                        "interpreter `{}` may reach the wildcard host `{}`: any script it runs can send data anywhere under that domain",
                        b.path, wild[0]
                    ),
                    "list the exact hosts the scripts need, or allow the specific program instead of the interpreter",
                );
            }
        }
    }

    /// Warn when `allowed_ips` opens cloud metadata or loopback addresses.
    fn lint_allowed_ip(&mut self, net: &ipnet::IpNet, pos: Pos) {
        use std::net::IpAddr;
        let metadata: [IpAddr; 2] = [
            IpAddr::from([169, 254, 169, 254]),
            "fd00:ec2::254".parse().unwrap_or(IpAddr::from([0u8; 16])),
        ];
        if let Some(m) = metadata.iter().find(|m| net.contains(*m)) {
            self.warn(
                pos,
                format!("`allowed_ips: {net}` includes the cloud metadata address {m}"),
                "metadata services hand out cloud credentials; narrow the range so it excludes 169.254.169.254 and fd00:ec2::254",
            );
        }
        let loopback: [ipnet::IpNet; 2] = [
            ipnet::IpNet::from(ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::LOCALHOST, 8)),
            ipnet::IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
        ];
        if loopback
            .iter()
            .any(|l| l.contains(&net.network()) || net.contains(&l.network()))
        {
            self.warn(
                pos,
                format!("`allowed_ips: {net}` includes loopback addresses"),
                "loopback reaches services on the host itself (including corral's own proxy and gateway); allow only the addresses you need",
            );
        }
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
