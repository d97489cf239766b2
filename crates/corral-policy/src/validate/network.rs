//! `network_policies`: groups, endpoints, request rules and binaries.

use crate::host::HostPattern;
use crate::model::{
    Access, BinaryRule, Children, Endpoint, L7Rule, NetworkPolicy, Policy, TlsMode,
};
use crate::yaml::{Kind, Node, Pos};

use super::ctx::{Ctx, Entry};

const GROUP_KEYS: &[&str] = &["name", "endpoints", "binaries", "credentials"];
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
    "allow_encoded_slash",
    "path",
];
/// Ports on which an L7 endpoint is assumed to carry plain HTTP the proxy can read.
const PLAIN_HTTP_PORTS: &[u16] = &[80, 8000, 8080];
const RULE_EXAMPLE_QUERY: &str = "query: { service: git-upload-pack }";
const BINARY_KEYS: &[&str] = &["path", "sha256", "children"];

const GROUP_EXAMPLE: &str = "network_policies:\n  github:\n    endpoints:\n      - { host: github.com, port: 443 }\n    binaries:\n      - { path: /usr/bin/git }";
const ENDPOINT_EXAMPLE: &str = "endpoints:\n  - { host: github.com, port: 443 }";
const BINARY_EXAMPLE: &str = "binaries:\n  - { path: /usr/bin/git }";

impl Ctx<'_> {
    pub(super) fn network_policies(&mut self, node: &Node, policy: &mut Policy) {
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
            credentials: Vec::new(),
            line: g.key_pos.line,
        };
        let (mut saw_endpoints, mut saw_binaries) = (false, false);
        let errors_before = self.errors.len();
        let mut binary_pos: Vec<Pos> = Vec::new();
        for e in ents {
            match e.key {
                "name" => np.name = self.string(e.value, &format!("{what}.name"), "name: github"),
                "credentials" => np.credentials = self.credentials(e.value, &what),
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
            audit: false,
            allow_encoded_slash: false,
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
                    ep.tls = self.enum_value(
                        e.value,
                        "tls",
                        &[
                            ("terminate", TlsMode::Terminate),
                            ("passthrough", TlsMode::Passthrough),
                            ("skip", TlsMode::Passthrough),
                        ],
                    );
                    ok &= ep.tls.is_some();
                }
                "enforcement" => {
                    let audit = self.enum_value(
                        e.value,
                        "enforcement",
                        &[("enforce", false), ("audit", true)],
                    );
                    ok &= audit.is_some();
                    ep.audit = audit.unwrap_or(false);
                }
                "allow_encoded_slash" => {
                    ep.allow_encoded_slash = self
                        .boolean(e.value, "`allow_encoded_slash`")
                        .unwrap_or(false);
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
            // A blind tunnel cannot have its requests checked: it is refused.
            if ep.restricts_requests() && ep.tls == Some(TlsMode::Passthrough) {
                if let Some(p) = ports.iter().find(|p| !PLAIN_HTTP_PORTS.contains(p)) {
                    self.warn(
                        l7_pos,
                        format!("`access`/`rules` with `tls: passthrough` cannot be checked on port {p}: TLS tunnels to this endpoint are refused"),
                        "remove `tls: passthrough` so that corral terminates TLS and checks each request",
                    );
                }
            }
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
                &[verb, "method", "path", "query"],
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
                let Some(x) = self.mapping(
                    v.value,
                    &format!("`{verb}`"),
                    &["method", "path", "query"],
                    &example,
                ) else {
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
            let mut query = Vec::new();
            for e in body {
                match e.key {
                    "query" => match self.query(e.value) {
                        Some(q) => query = q,
                        None => ok = false,
                    },
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
                (Some(method), Some(path)) => out.push(L7Rule {
                    method,
                    path,
                    query,
                }),
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

    /// `query: { name: GLOB }` or `query: { name: [GLOB, …] }`.
    fn query(&mut self, node: &Node) -> Option<Vec<(String, Vec<String>)>> {
        let ents = self.mapping(node, "`query`", &[], RULE_EXAMPLE_QUERY)?;
        let mut out = Vec::new();
        let mut ok = true;
        for e in ents {
            let globs = if let Kind::Seq(_) = e.value.kind {
                let items = self.seq(e.value, "a `query` value", RULE_EXAMPLE_QUERY)?;
                items
                    .iter()
                    .filter_map(|it| self.string(it, "a `query` value", RULE_EXAMPLE_QUERY))
                    .collect()
            } else {
                match self.string(e.value, "a `query` value", RULE_EXAMPLE_QUERY) {
                    Some(v) => vec![v],
                    None => {
                        ok = false;
                        continue;
                    }
                }
            };
            out.push((e.key.to_string(), globs));
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
