//! `corral policy suggest`: from refusals in a decision log to the smallest policy change
//! that allows them ("follow the errors").
//!
//! Each refused (binary, host, port) becomes one endpoint, and the change lets exactly
//! that binary through: the endpoint is appended to an existing group only when that group
//! lists no other binary (a group's endpoints are open to all its binaries, so appending
//! to a shared group would grant the host to every one of them); otherwise the binary gets
//! a new group of its own holding exactly its refused endpoints. Adding a binary to an
//! existing group is never suggested, for the same reason. The rendering says, per group,
//! which binaries the change lets through.
//!
//! `--apply` edits the file as text: it appends lines, so comments, order and formatting
//! of everything else stay as they were. It refuses (and says why) when the structure it
//! must append to is written in flow style (`endpoints: [...]`), and it re-validates the
//! result with the policy crate — and checks that each refusal is now allowed — before
//! replacing the file atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{CompileOptions, Decision, Identity, Policy};
use anyhow::{bail, Context};

/// Reason codes a policy edit can fix.
const FIXABLE: [&str; 3] = ["no_endpoint", "port_not_allowed", "binary_not_allowed"];

/// One refused destination for one binary.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Refused {
    pub binary: String,
    pub host: String,
    pub port: u16,
}

/// One request refused by an endpoint's rules (`l7_rule_not_matched`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRefused {
    pub policy: String,
    pub host: String,
    pub port: u16,
    pub method: String,
    pub path: String,
}

/// What the log held.
#[derive(Debug, Default)]
pub struct Harvest {
    /// Fixable refusals, deduplicated, in order of first appearance.
    pub refused: Vec<Refused>,
    /// Requests refused by rules, deduplicated: each becomes a rule line.
    pub rules: Vec<RuleRefused>,
    /// Refusals a policy edit cannot fix directly, by code (e.g. `unattributed`).
    pub other: BTreeMap<String, usize>,
    /// Lines that were not decision records.
    pub skipped: usize,
}

/// Reads decision-log lines.
pub fn harvest(text: &str) -> Harvest {
    let mut h = Harvest::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            h.skipped += 1;
            continue;
        };
        if v.get("decision").and_then(|d| d.as_str()) != Some("deny") {
            continue;
        }
        let code = v.get("error").and_then(|e| e.as_str()).unwrap_or("");
        let binary = v.get("binary").and_then(|e| e.as_str()).unwrap_or("");
        let host = v.get("host").and_then(|e| e.as_str()).unwrap_or("");
        let port = v.get("port").and_then(|e| e.as_u64()).unwrap_or(0);
        let text = |k: &str| v.get(k).and_then(|e| e.as_str()).unwrap_or("").to_string();
        if code == "l7_rule_not_matched" && !text("method").is_empty() && !text("path").is_empty() {
            let r = RuleRefused {
                policy: text("policy"),
                host: host.trim_end_matches('.').to_ascii_lowercase(),
                port: u16::try_from(port).unwrap_or(0),
                method: text("method").to_ascii_uppercase(),
                path: text("path"),
            };
            if !h.rules.contains(&r) {
                h.rules.push(r);
            }
            continue;
        }
        if !FIXABLE.contains(&code) || binary.is_empty() || host.is_empty() || port == 0 {
            *h.other.entry(code.to_string()).or_insert(0) += 1;
            continue;
        }
        let r = Refused {
            binary: binary.to_string(),
            host: host.trim_end_matches('.').to_ascii_lowercase(),
            port: u16::try_from(port).unwrap_or(0),
        };
        if !h.refused.contains(&r) {
            h.refused.push(r);
        }
    }
    h
}

/// A new group: (key, binary, endpoints as (host, port)).
pub type NewGroup = (String, String, Vec<(String, u16)>);

/// The change to make: endpoints to append to existing groups, and new groups.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Existing group key → endpoints (host, port) to append. Each such group lists only
    /// the refused binary.
    pub append: Vec<(String, Vec<(String, u16)>)>,
    /// Existing group key → the binary its new endpoints let through.
    pub append_binary: Vec<(String, String)>,
    /// New groups: (key, binary, endpoints).
    pub new_groups: Vec<NewGroup>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.append.is_empty() && self.new_groups.is_empty()
    }
}

fn push_unique<K: PartialEq, V: PartialEq>(list: &mut Vec<(K, Vec<V>)>, key: K, value: V) {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some((_, vs)) => {
            if !vs.contains(&value) {
                vs.push(value)
            }
        }
        None => list.push((key, vec![value])),
    }
}

/// Plans the change. `policy` is the current policy, if any; `home` expands `~/` entries.
pub fn plan(refused: &[Refused], policy: Option<&Policy>, home: Option<&Path>) -> Change {
    let mut change = Change::default();
    let mut per_binary: Vec<(String, Vec<(String, u16)>)> = Vec::new();
    let mut used_names: Vec<String> = policy
        .map(|p| p.network_policies.iter().map(|g| g.key.clone()).collect())
        .unwrap_or_default();
    for r in refused {
        let group = policy.and_then(|p| {
            let listing: Vec<_> = p
                .network_policies
                .iter()
                .filter(|g| {
                    g.binaries
                        .iter()
                        .any(|b| same_binary(&b.path, &r.binary, home))
                })
                .collect();
            // Only a group of this binary alone: prefer one that already talks to this
            // host (a port is what's missing).
            let own: Vec<_> = listing
                .into_iter()
                .filter(|g| {
                    g.binaries
                        .iter()
                        .all(|b| same_binary(&b.path, &r.binary, home))
                })
                .collect();
            own.iter()
                .find(|g| {
                    g.endpoints
                        .iter()
                        .any(|e| e.host.written.eq_ignore_ascii_case(&r.host))
                })
                .or_else(|| own.first())
                .map(|g| g.key.clone())
        });
        match group {
            Some(key) => {
                if !change.append_binary.iter().any(|(k, _)| *k == key) {
                    change.append_binary.push((key.clone(), r.binary.clone()));
                }
                push_unique(&mut change.append, key, (r.host.clone(), r.port))
            }
            None => push_unique(&mut per_binary, r.binary.clone(), (r.host.clone(), r.port)),
        }
    }
    for (binary, endpoints) in per_binary {
        let base = group_name(&binary);
        let mut name = base.clone();
        let mut n = 2;
        while used_names.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        used_names.push(name.clone());
        change.new_groups.push((name, binary, endpoints));
    }
    change
}

fn same_binary(written: &str, exe: &str, home: Option<&Path>) -> bool {
    if written == exe {
        return true;
    }
    let rest = written
        .strip_prefix("~/")
        .or_else(|| written.strip_prefix("$HOME/"));
    match (rest, home) {
        (Some(rest), Some(home)) => home.join(rest) == Path::new(exe),
        _ => false,
    }
}

/// `allow_<basename>`, letters, digits and `_` only.
fn group_name(binary: &str) -> String {
    let base = binary.rsplit('/').next().unwrap_or(binary);
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("allow_{}", clean.trim_matches('_'))
}

fn yaml_scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'+' | b'@')
        })
        && !s.starts_with('-');
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
    }
}

fn host_yaml(host: &str) -> String {
    if host.contains(':') {
        format!("\"{host}\"")
    } else {
        yaml_scalar(host)
    }
}

fn endpoint_line(host: &str, port: u16) -> String {
    format!("- {{ host: {}, port: {port} }}", host_yaml(host))
}

/// The change as a YAML fragment for people to read (and paste).
pub fn render(change: &Change) -> String {
    let mut out = String::from("network_policies:\n");
    for (key, endpoints) in &change.append {
        let who = change
            .append_binary
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, b)| b.as_str())
            .unwrap_or("its binaries");
        out.push_str(&format!(
            "  {key}:  # existing group: append to its endpoints; lets through: {who} only\n    endpoints:\n"
        ));
        for (h, p) in endpoints {
            out.push_str(&format!("      {}\n", endpoint_line(h, *p)));
        }
    }
    for (key, binary, endpoints) in &change.new_groups {
        out.push_str(&format!(
            "  {key}:  # new group; lets through: {binary} only\n    endpoints:\n"
        ));
        for (h, p) in endpoints {
            out.push_str(&format!("      {}\n", endpoint_line(h, *p)));
        }
        out.push_str(&format!(
            "    binaries:\n      - {{ path: {} }}\n",
            yaml_scalar(binary)
        ));
    }
    out
}

/// The rule lines that would allow requests refused by rules, grouped by endpoint. They
/// are printed, not applied: where a rule belongs (which endpoint, how wide its glob)
/// is for a person to judge.
pub fn render_rules(rules: &[RuleRefused]) -> String {
    let mut out = String::new();
    let mut endpoints: Vec<(&str, &str, u16)> = Vec::new();
    for r in rules {
        if !endpoints.contains(&(r.policy.as_str(), r.host.as_str(), r.port)) {
            endpoints.push((&r.policy, &r.host, r.port));
        }
    }
    for (policy, host, port) in endpoints {
        out.push_str(&format!(
            "# add to the `rules:` of the {}:{port} endpoint in network_policies.{policy}:\n",
            host_yaml(host)
        ));
        for r in rules
            .iter()
            .filter(|r| r.policy == policy && r.host == host && r.port == port)
        {
            out.push_str(&format!(
                "- allow: {{ method: {}, path: {} }}\n",
                r.method,
                yaml_scalar(&r.path)
            ));
        }
    }
    out
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// Finds `key:` as a block mapping key at exactly `indent` within lines[from..to].
fn find_key(lines: &[&str], from: usize, to: usize, indent: usize, key: &str) -> Option<usize> {
    (from..to).find(|&i| {
        let l = lines[i];
        if is_blank_or_comment(l) || indent_of(l) != indent {
            return false;
        }
        let t = l.trim_start();
        let name = t
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches(['"', '\'']);
        name == key && t[t.find(':').map_or(t.len(), |i| i)..].starts_with(':')
    })
}

/// End (exclusive) of the block that starts at `start` (a key line at indent `indent`):
/// the first later non-blank, non-comment line indented `<= indent`.
fn block_end(lines: &[&str], start: usize, indent: usize) -> usize {
    let mut end = start + 1;
    let mut last_content = start;
    while end < lines.len() {
        let l = lines[end];
        if !is_blank_or_comment(l) {
            if indent_of(l) <= indent {
                break;
            }
            last_content = end;
        }
        end += 1;
    }
    last_content + 1
}

fn value_after_colon(line: &str) -> &str {
    let t = line.trim_start();
    let rest = &t[t.find(':').map_or(t.len(), |i| i + 1)..];
    rest.split(" #").next().unwrap_or("").trim()
}

/// Applies `change` to the policy text, appending lines only. Errors say why it is unsafe.
pub fn apply_to_text(text: &str, change: &Change) -> anyhow::Result<String> {
    let l: Vec<&str> = text.lines().collect();
    // Insertions are computed against the original text and applied bottom-up.
    let mut inserts: Vec<(usize, Vec<String>)> = Vec::new();
    let np = find_key(&l, 0, l.len(), 0, "network_policies");
    let (np_start, np_end, group_indent) = match np {
        Some(i) => {
            let v = value_after_colon(l[i]);
            if !v.is_empty() {
                bail!("`network_policies:` is written in flow style ({v}); corral can only append to block-style YAML — paste the suggestion by hand");
            }
            let end = block_end(&l, i, 0);
            let gi = (i + 1..end)
                .find(|&j| !is_blank_or_comment(l[j]))
                .map(|j| indent_of(l[j]))
                .unwrap_or(2);
            (Some(i), end, gi)
        }
        None => (None, l.len(), 2),
    };
    for (key, endpoints) in &change.append {
        let Some(np_start) = np_start else {
            bail!("no network_policies block to add to");
        };
        let g = find_key(&l, np_start + 1, np_end, group_indent, key)
            .with_context(|| format!("cannot find the group `{key}:` in the file"))?;
        if !value_after_colon(l[g]).is_empty() {
            bail!("group `{key}` is written in flow style; paste the suggestion by hand");
        }
        let g_end = block_end(&l, g, group_indent);
        let field_indent = (g + 1..g_end)
            .find(|&j| !is_blank_or_comment(l[j]))
            .map(|j| indent_of(l[j]))
            .unwrap_or(group_indent + 2);
        let e = find_key(&l, g + 1, g_end, field_indent, "endpoints")
            .with_context(|| format!("group `{key}` has no block `endpoints:` key"))?;
        let v = value_after_colon(l[e]);
        if !v.is_empty() {
            bail!("`{key}.endpoints` is written in flow style ({v}); paste the suggestion by hand");
        }
        // Items are `- ` lines at some indent >= field_indent (YAML allows equal).
        let item = (e + 1..g_end).find(|&j| !is_blank_or_comment(l[j]));
        let item_indent = match item {
            Some(j) if l[j].trim_start().starts_with('-') => indent_of(l[j]),
            _ => field_indent + 2,
        };
        let mut end = e + 1;
        let mut j = e + 1;
        while j < g_end {
            let line = l[j];
            if !is_blank_or_comment(line) {
                let ind = indent_of(line);
                let is_item = ind == item_indent && line.trim_start().starts_with('-');
                if !(is_item || ind > item_indent) {
                    break;
                }
                end = j + 1;
            }
            j += 1;
        }
        let pad = " ".repeat(item_indent);
        let new: Vec<String> = endpoints
            .iter()
            .map(|(h, p)| format!("{pad}{}", endpoint_line(h, *p)))
            .collect();
        inserts.push((end, new));
    }
    if !change.new_groups.is_empty() {
        let pad = " ".repeat(group_indent);
        let mut new = Vec::new();
        if np_start.is_none() {
            new.push("network_policies:".to_string());
        }
        for (key, binary, endpoints) in &change.new_groups {
            new.push(format!("{pad}{key}:"));
            new.push(format!("{pad}  endpoints:"));
            for (h, p) in endpoints {
                new.push(format!("{pad}    {}", endpoint_line(h, *p)));
            }
            new.push(format!("{pad}  binaries:"));
            new.push(format!("{pad}    - {{ path: {} }}", yaml_scalar(binary)));
        }
        inserts.push((np_end, new));
    }
    inserts.sort_by_key(|i| std::cmp::Reverse(i.0));
    let mut lines: Vec<String> = l.iter().map(|s| s.to_string()).collect();
    for (at, new) in inserts {
        for (k, line) in new.into_iter().enumerate() {
            lines.insert(at + k, line);
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    Ok(out)
}

/// Checks that `text` is a valid policy that allows every refusal.
pub fn verify(
    text: &str,
    file_name: &str,
    refused: &[Refused],
    home: Option<PathBuf>,
) -> anyhow::Result<()> {
    let loaded = Policy::parse(text, file_name)
        .map_err(|e| anyhow::anyhow!("the edited policy does not validate:\n{e}"))?;
    let matcher = loaded.policy.compile(&CompileOptions { home });
    for r in refused {
        let who = Identity::new(&r.binary);
        if let Decision::Deny(d) = matcher.decide(&who, &r.host, r.port, None) {
            bail!(
                "after the edit, {} -> {}:{} would still be refused ({})",
                r.binary,
                r.host,
                r.port,
                d.reason.code()
            );
        }
    }
    Ok(())
}

/// Replaces `path` with `text` atomically (temp file in the same directory, then rename),
/// keeping the file's permissions.
pub fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("policy");
    let tmp = dir.join(format!(".{name}.corral-suggest.{}", std::process::id()));
    let perms = std::fs::metadata(path).map(|m| m.permissions()).ok();
    let result = (|| -> anyhow::Result<()> {
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        if let Some(p) = perms {
            std::fs::set_permissions(&tmp, p)?;
        }
        std::fs::rename(&tmp, path).with_context(|| format!("replace {}", path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = r#"{"time":"t","kind":"connect","conn":1,"decision":"allow","error":null,"binary":"/usr/bin/curl","ancestors":[],"host":"mirror.test","port":443,"method":null,"path":null,"policy":"mirror","reason":"r","suggestion":null,"policy_generation":1,"status":200,"bytes_up":1,"bytes_down":2,"duration_ms":1.0}
{"time":"t","kind":"connect","conn":2,"decision":"deny","error":"no_endpoint","binary":"/usr/bin/curl","ancestors":[],"host":"storage.test","port":443,"method":null,"path":null,"policy":null,"reason":"r","suggestion":"s","policy_generation":1,"status":403,"bytes_up":0,"bytes_down":0,"duration_ms":1.0}
{"time":"t","kind":"connect","conn":3,"decision":"deny","error":"no_endpoint","binary":"/usr/bin/curl","ancestors":[],"host":"storage.test","port":443,"method":null,"path":null,"policy":null,"reason":"r","suggestion":"s","policy_generation":1,"status":403,"bytes_up":0,"bytes_down":0,"duration_ms":1.0}
{"time":"t","kind":"connect","conn":4,"decision":"deny","error":"no_endpoint","binary":"/usr/bin/wget","ancestors":[],"host":"example.test","port":8443,"method":null,"path":null,"policy":null,"reason":"r","suggestion":"s","policy_generation":1,"status":403,"bytes_up":0,"bytes_down":0,"duration_ms":1.0}
{"time":"t","kind":"request","conn":5,"decision":"deny","error":"unattributed","binary":"","ancestors":[],"host":"x.test","port":443,"method":null,"path":null,"policy":null,"reason":"r","suggestion":null,"policy_generation":1,"status":403,"bytes_up":0,"bytes_down":0,"duration_ms":1.0}
not json
"#;

    #[test]
    fn rule_refusals_become_rule_lines_per_endpoint() {
        let log = r#"{"decision":"deny","error":"l7_rule_not_matched","binary":"/usr/bin/curl","host":"api.test","port":443,"method":"POST","path":"/x","policy":"api"}
{"decision":"deny","error":"l7_rule_not_matched","binary":"/usr/bin/curl","host":"api.test","port":443,"method":"POST","path":"/x","policy":"api"}
{"decision":"deny","error":"l7_rule_not_matched","binary":"/usr/bin/git","host":"api.test","port":443,"method":"get","path":"/a b?c=1","policy":"api"}"#;
        let h = harvest(log);
        assert_eq!(h.rules.len(), 2);
        assert!(h.refused.is_empty() && h.other.is_empty());
        assert_eq!(
            render_rules(&h.rules),
            "# add to the `rules:` of the api.test:443 endpoint in network_policies.api:\n- allow: { method: POST, path: /x }\n- allow: { method: GET, path: \"/a b?c=1\" }\n"
        );
    }

    #[test]
    fn harvests_denials_once_each() {
        let h = harvest(LOG);
        assert_eq!(h.refused.len(), 2);
        assert_eq!(h.refused[0].host, "storage.test");
        assert_eq!(h.other.get("unattributed"), Some(&1));
        assert_eq!(h.skipped, 1);
    }

    #[test]
    fn appends_to_block_style_groups_keeping_comments() {
        let text = "version: 1\n# the mirror\nnetwork_policies:\n  mirror:\n    endpoints:\n      # primary\n      - { host: mirror.test, port: 443 }\n    binaries:\n      - { path: /usr/bin/curl }\n  # trailing comment\nfilesystem_policy:\n  include_workdir: true\n";
        let change = Change {
            append: vec![("mirror".into(), vec![("storage.test".into(), 443)])],
            new_groups: vec![(
                "allow_wget".into(),
                "/usr/bin/wget".into(),
                vec![("example.test".into(), 8443)],
            )],
            ..Change::default()
        };
        let out = apply_to_text(text, &change).unwrap();
        assert_eq!(
            out,
            "version: 1\n# the mirror\nnetwork_policies:\n  mirror:\n    endpoints:\n      # primary\n      - { host: mirror.test, port: 443 }\n      - { host: storage.test, port: 443 }\n    binaries:\n      - { path: /usr/bin/curl }\n  allow_wget:\n    endpoints:\n      - { host: example.test, port: 8443 }\n    binaries:\n      - { path: /usr/bin/wget }\n  # trailing comment\nfilesystem_policy:\n  include_workdir: true\n"
        );
    }

    #[test]
    fn appends_after_multi_line_endpoints() {
        let text = "network_policies:\n  github:\n    endpoints:\n      - host: github.test\n        port: 443\n        rules:\n          - allow: { method: GET, path: \"/**\" }\n    binaries:\n      - path: /usr/bin/git\n";
        let change = Change {
            append: vec![("github".into(), vec![("codeload.github.test".into(), 443)])],
            new_groups: vec![],
            ..Change::default()
        };
        let out = apply_to_text(text, &change).unwrap();
        assert!(out.contains("          - allow: { method: GET, path: \"/**\" }\n      - { host: codeload.github.test, port: 443 }\n    binaries:"), "{out}");
    }

    #[test]
    fn refuses_flow_style() {
        let change = Change {
            append: vec![("g".into(), vec![("a.test".into(), 443)])],
            new_groups: vec![],
            ..Change::default()
        };
        let err = apply_to_text(
            "network_policies:\n  g:\n    endpoints: [{ host: b.test, port: 443 }]\n",
            &change,
        )
        .unwrap_err();
        assert!(err.to_string().contains("flow style"));
    }

    #[test]
    fn new_file_gets_a_network_policies_block() {
        let change = Change {
            append: vec![],
            new_groups: vec![(
                "allow_curl".into(),
                "/usr/bin/curl".into(),
                vec![("a.test".into(), 443)],
            )],
            ..Change::default()
        };
        let out = apply_to_text("version: 1\n", &change).unwrap();
        assert_eq!(out, "version: 1\nnetwork_policies:\n  allow_curl:\n    endpoints:\n      - { host: a.test, port: 443 }\n    binaries:\n      - { path: /usr/bin/curl }\n");
    }

    #[test]
    fn a_shared_group_is_never_widened_and_the_change_names_who_it_lets_through() {
        let text = "version: 1\nnetwork_policies:\n  shared:\n    endpoints:\n      - { host: mirror.test, port: 443 }\n    binaries:\n      - { path: /usr/bin/curl }\n      - { path: /usr/bin/wget }\n  git_only:\n    endpoints:\n      - { host: git.test, port: 443 }\n    binaries:\n      - { path: /usr/bin/git }\n";
        let policy = Policy::parse(text, "p.yaml").unwrap().policy;
        let refused = vec![
            Refused {
                binary: "/usr/bin/curl".into(),
                host: "evil.test".into(),
                port: 443,
            },
            Refused {
                binary: "/usr/bin/git".into(),
                host: "git.test".into(),
                port: 8443,
            },
        ];
        let change = plan(&refused, Some(&policy), None);
        assert_eq!(
            change.append,
            vec![("git_only".to_string(), vec![("git.test".to_string(), 8443)])]
        );
        assert_eq!(change.new_groups.len(), 1, "{change:?}");
        assert_eq!(change.new_groups[0].1, "/usr/bin/curl");
        let shown = render(&change);
        assert!(
            shown.contains("lets through: /usr/bin/curl only"),
            "{shown}"
        );
        assert!(shown.contains("lets through: /usr/bin/git only"), "{shown}");
        // Applied, wget (in the shared group) still cannot reach the new host.
        let edited = apply_to_text(text, &change).unwrap();
        let m = Policy::parse(&edited, "p.yaml")
            .unwrap()
            .policy
            .compile(&CompileOptions::default());
        assert!(m
            .decide(&Identity::new("/usr/bin/curl"), "evil.test", 443, None)
            .is_allow());
        assert!(!m
            .decide(&Identity::new("/usr/bin/wget"), "evil.test", 443, None)
            .is_allow());
    }
}
