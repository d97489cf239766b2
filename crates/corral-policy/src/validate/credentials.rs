//! `credentials` on a group (corral): the secret stays with corral; the sandbox holds a
//! placeholder, which the proxy replaces in requests of the group's binaries to the
//! group's endpoints — bound to destination and binary both.

use std::path::PathBuf;

use crate::model::Credential;
use crate::yaml::{Kind, Node};

use super::ctx::Ctx;

const KEYS: &[&str] = &["placeholder", "secret_file", "headers"];
const EXAMPLE: &str = "credentials:\n  - placeholder: corral-placeholder-gateway-key\n    secret_file: /etc/corral/gateway.key\n    headers: [authorization, x-api-key]";
/// Where a placeholder is replaced when `headers` is not given: the API-key headers of
/// Anthropic and OpenAI style APIs, and bearer tokens (Bedrock's included).
pub(crate) const DEFAULT_HEADERS: &[&str] = &["authorization", "x-api-key"];
/// Shorter placeholders could occur by chance in a header.
const MIN_PLACEHOLDER: usize = 12;

impl Ctx<'_> {
    pub(super) fn credentials(&mut self, node: &Node, group: &str) -> Vec<Credential> {
        let what = format!("{group}.credentials");
        let Some(items) = self.seq(node, &format!("`{what}`"), EXAMPLE) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for it in items {
            let Some(ents) = self.mapping(it, &format!("an entry of `{what}`"), KEYS, EXAMPLE)
            else {
                continue;
            };
            let mut placeholder = None;
            let mut secret_file = None;
            let mut headers: Vec<String> = DEFAULT_HEADERS.iter().map(|h| h.to_string()).collect();
            let mut ok = true;
            for e in &ents {
                match e.key {
                    "placeholder" => {
                        let Some(p) = self.string(e.value, "`placeholder`", EXAMPLE) else {
                            ok = false;
                            continue;
                        };
                        if p.len() < MIN_PLACEHOLDER || !p.bytes().all(|b| b.is_ascii_graphic()) {
                            self.error(
                                e.value.pos,
                                format!("placeholder `{p}` is too short or has spaces"),
                                format!("use at least {MIN_PLACEHOLDER} visible characters, e.g. `corral-placeholder-gateway-key`"),
                            );
                            ok = false;
                        }
                        placeholder = Some(p);
                    }
                    "secret_file" => {
                        let Some(p) = self.string(e.value, "`secret_file`", EXAMPLE) else {
                            ok = false;
                            continue;
                        };
                        // `~/` is the home of the user running corral (who reads the
                        // file), expanded here: what hides the file from the sandbox and
                        // what reads it see one absolute path.
                        let home = std::env::var_os("HOME").map(PathBuf::from);
                        let expanded = crate::matcher::expand_home(&p, home.as_deref());
                        match expanded.filter(|x| x.starts_with('/')) {
                            Some(x) => secret_file = Some(PathBuf::from(x)),
                            None => {
                                self.error(
                                    e.value.pos,
                                    format!("secret_file `{p}` is not absolute"),
                                    "write the full path of a file the sandbox cannot read, or one starting with `~/` (HOME must then be set)",
                                );
                                ok = false;
                            }
                        }
                    }
                    _ => {
                        if let Kind::Seq(_) = e.value.kind {
                            let items = self.seq(e.value, "`headers`", EXAMPLE).unwrap_or_default();
                            headers = items
                                .iter()
                                .filter_map(|h| self.string(h, "a header name", EXAMPLE))
                                .map(|h| h.to_ascii_lowercase())
                                .collect();
                        } else {
                            self.error(e.value.pos, "`headers` takes a list", EXAMPLE);
                            ok = false;
                        }
                    }
                }
            }
            match (placeholder, secret_file) {
                (Some(placeholder), Some(secret_file)) if ok => {
                    if std::fs::File::open(&secret_file).is_err() {
                        self.warn(
                            it.pos,
                            format!("secret_file {} cannot be read: requests keep the placeholder", secret_file.display()),
                            "corral reads the secret when it loads the policy; make the file readable by the user running corral (and not by the sandbox: keep it outside what filesystem_policy lists)",
                        );
                    }
                    out.push(Credential {
                        placeholder,
                        secret_file,
                        headers,
                        line: it.pos.line,
                    })
                }
                (p, f) if ok => {
                    let missing = if p.is_none() {
                        "placeholder"
                    } else {
                        "secret_file"
                    };
                    let _ = f;
                    self.error(it.pos, format!("credential has no `{missing}`"), EXAMPLE);
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::model::Policy;

    fn policy(secret_file: &str) -> String {
        format!(
            "version: 1\nnetwork_policies:\n  gw:\n    endpoints:\n      - {{ host: gw.example, port: 443, tls: terminate }}\n    binaries:\n      - {{ path: /usr/bin/curl }}\n    credentials:\n      - {{ placeholder: corral-placeholder-gateway-key, secret_file: \"{secret_file}\" }}\n"
        )
    }

    #[test]
    fn a_secret_file_in_home_is_expanded_once_and_a_relative_one_refused() {
        let home = std::env::var("HOME").expect("HOME is set for the tests");
        let loaded = Policy::parse(&policy("~/.config/corral/gateway-key"), "p.yaml").unwrap();
        let c = &loaded.policy.network_policies[0].credentials[0];
        assert_eq!(
            c.secret_file,
            std::path::Path::new(&home).join(".config/corral/gateway-key")
        );
        assert_eq!(c.headers, ["authorization", "x-api-key"]);
        let err = Policy::parse(&policy("keys/gateway-key"), "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not absolute"), "{err}");
    }
}
