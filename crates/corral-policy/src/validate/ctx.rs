//! The validation context: collects diagnostics and converts YAML nodes to typed values
//! with precise, actionable errors.

use crate::diag::{Diagnostic, PolicyError, Severity};
use crate::yaml::{Kind, Node, Pos};

pub(crate) struct Ctx<'f> {
    pub file: &'f str,
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
pub(super) struct Entry<'n> {
    pub key: &'n str,
    pub key_pos: Pos,
    pub value: &'n Node,
}

pub(super) fn type_help(expected: &str, example: &str) -> String {
    format!("write {expected}, for example:\n{example}")
}

impl<'f> Ctx<'f> {
    /// The entries of a mapping, with unknown/duplicate keys reported.
    pub(super) fn mapping<'n>(
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

    pub(super) fn string(&mut self, node: &Node, what: &str, example: &str) -> Option<String> {
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

    pub(super) fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
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

    pub(super) fn seq<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        example: &str,
    ) -> Option<&'n [Node]> {
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

    pub(super) fn port(&mut self, node: &Node, what: &str) -> Option<u16> {
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
    pub(super) fn enum_value<T: Copy>(
        &mut self,
        node: &Node,
        key: &str,
        values: &[(&str, T)],
    ) -> Option<T> {
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

impl Ctx<'_> {
    pub(super) fn into_error(self) -> PolicyError {
        PolicyError::Invalid {
            errors: self.errors,
            warnings: self.warnings,
        }
    }
}
