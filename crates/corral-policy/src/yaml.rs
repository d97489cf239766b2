//! A small spanned YAML tree built from yaml-rust2's event parser, so that every
//! diagnostic can name the line and column of the value it is about.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Pos {
    pub line: usize,
    pub col: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Pos {
        Pos {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Kind {
    /// A scalar and whether it was quoted/block (then it is always a string).
    Scalar {
        value: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub kind: Kind,
    pub pos: Pos,
}

impl Node {
    /// What this node is, for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
            Kind::Scalar { value, plain } => {
                if !plain {
                    "a string"
                } else if is_null(value) {
                    "an empty value"
                } else if value.parse::<i64>().is_ok() {
                    "a number"
                } else if matches!(
                    value.as_str(),
                    "true" | "false" | "True" | "False" | "TRUE" | "FALSE"
                ) {
                    "a boolean"
                } else {
                    "a string"
                }
            }
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, plain: true } if is_null(value))
    }
}

fn is_null(v: &str) -> bool {
    matches!(v, "" | "~" | "null" | "Null" | "NULL")
}

/// A YAML syntax problem.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Hard cap on nodes (guards against alias expansion bombs).
const MAX_NODES: usize = 200_000;
/// Hard cap on nesting depth (guards against stack exhaustion).
const MAX_DEPTH: usize = 64;

struct Builder<'a> {
    parser: Parser<std::str::Chars<'a>>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
}

/// Parse one YAML document. `Ok(None)` for an empty stream.
pub(crate) fn parse(source: &str) -> Result<Option<Node>, SyntaxError> {
    let mut b = Builder {
        parser: Parser::new_from_str(source),
        anchors: HashMap::new(),
        nodes: 0,
    };
    let mut doc: Option<Node> = None;
    loop {
        let (ev, mark) = b.next()?;
        match ev {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => return Ok(doc),
            Event::DocumentStart => {
                let (ev, mark) = b.next()?;
                if matches!(ev, Event::DocumentEnd) {
                    continue;
                }
                if doc.is_some() {
                    return Err(SyntaxError {
                        pos: mark.into(),
                        message:
                            "a policy file holds one YAML document; found a second one (`---`)"
                                .into(),
                    });
                }
                doc = Some(b.node(ev, mark, 0)?);
            }
            _ => {
                return Err(SyntaxError {
                    pos: mark.into(),
                    message: "unexpected YAML event outside a document".into(),
                })
            }
        }
    }
}

impl Builder<'_> {
    fn next(&mut self) -> Result<(Event, Marker), SyntaxError> {
        self.parser.next_token().map_err(|e| SyntaxError {
            pos: (*e.marker()).into(),
            message: format!("invalid YAML: {}", e.info()),
        })
    }

    fn count(&mut self, pos: Pos) -> Result<(), SyntaxError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(SyntaxError {
                pos,
                message: format!(
                    "the document has more than {MAX_NODES} values (alias expansion?)"
                ),
            });
        }
        Ok(())
    }

    fn node(&mut self, ev: Event, mark: Marker, depth: usize) -> Result<Node, SyntaxError> {
        let pos: Pos = mark.into();
        if depth > MAX_DEPTH {
            return Err(SyntaxError {
                pos,
                message: format!("the document is nested more than {MAX_DEPTH} levels deep"),
            });
        }
        self.count(pos)?;
        let (node, anchor) = match ev {
            Event::Scalar(value, style, anchor, _tag) => (
                Node {
                    kind: Kind::Scalar {
                        value,
                        plain: style == TScalarStyle::Plain,
                    },
                    pos,
                },
                anchor,
            ),
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, m) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(ev, m, depth + 1)?);
                }
                (
                    Node {
                        kind: Kind::Seq(items),
                        pos,
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, _) => {
                let mut entries = Vec::new();
                loop {
                    let (ev, m) = self.next()?;
                    if matches!(ev, Event::MappingEnd) {
                        break;
                    }
                    let k = self.node(ev, m, depth + 1)?;
                    let (ev, m) = self.next()?;
                    let v = self.node(ev, m, depth + 1)?;
                    entries.push((k, v));
                }
                (
                    Node {
                        kind: Kind::Map(entries),
                        pos,
                    },
                    anchor,
                )
            }
            Event::Alias(id) => {
                let Some(n) = self.anchors.get(&id) else {
                    return Err(SyntaxError {
                        pos,
                        message: "alias refers to an unknown anchor".into(),
                    });
                };
                let n = n.clone();
                let size = count_nodes(&n);
                self.nodes += size;
                if self.nodes > MAX_NODES {
                    return Err(SyntaxError {
                        pos,
                        message: format!(
                            "the document has more than {MAX_NODES} values (alias expansion?)"
                        ),
                    });
                }
                return Ok(Node { kind: n.kind, pos });
            }
            other => {
                return Err(SyntaxError {
                    pos,
                    message: format!("unexpected YAML event {other:?}"),
                })
            }
        };
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }
}

fn count_nodes(n: &Node) -> usize {
    match &n.kind {
        Kind::Scalar { .. } => 1,
        Kind::Seq(v) => 1 + v.iter().map(count_nodes).sum::<usize>(),
        Kind::Map(v) => {
            1 + v
                .iter()
                .map(|(k, v)| count_nodes(k) + count_nodes(v))
                .sum::<usize>()
        }
    }
}
