//! Reads a compose file into a tree of values that remember their line.
//!
//! Compose files are untyped YAML with anchors, aliases and `<<` merge keys; the
//! translator needs each value's line for its warnings and errors, which serde drops.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};

/// A YAML value, the file it came from (an index into the files given) and the line
/// (1-based) it starts on.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub file: usize,
    pub line: usize,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    /// The scalar's text; `quoted` scalars are never read as numbers, booleans or null.
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Entries in file order; keys are unique (a later duplicate replaces the earlier).
    Map(Vec<(Key, Node)>),
}

/// A mapping key and its line.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    pub file: usize,
    pub line: usize,
}

/// A YAML syntax error at a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

impl Node {
    pub fn new(line: usize, value: Value) -> Self {
        Node {
            file: 0,
            line,
            value,
        }
    }

    /// A node at the same place as `self`.
    pub fn here(&self, value: Value) -> Self {
        Node {
            file: self.file,
            line: self.line,
            value,
        }
    }

    /// The text of a scalar (a number or boolean as written); `None` for null and
    /// collections.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(items) => Some(items),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        self.value == Value::Null
    }

    /// The value under `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    /// A YAML boolean (`true`/`false` in any case, as YAML 1.2 core schema).
    pub fn as_bool(&self) -> Option<bool> {
        match self.as_str()?.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }

    /// What kind of value this is, for error messages.
    pub fn describe(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Parses the document of `text`, the `file`-th file; an empty document is `Null`.
///
/// # Errors
/// The first syntax error, an alias to an unknown anchor, or a second document.
pub fn parse(text: &str, file: usize) -> Result<Node, SyntaxError> {
    let mut builder = Builder {
        file,
        ..Builder::default()
    };
    for next in Parser::new_from_str(text) {
        let (event, span) = next.map_err(|err| SyntaxError {
            line: err.marker().line(),
            message: err.info(),
        })?;
        let line = span.start.line();
        match event {
            Event::DocumentStart(..) => {
                builder.documents += 1;
                if builder.documents > 1 {
                    return Err(SyntaxError {
                        line,
                        message: "a compose file holds one YAML document".into(),
                    });
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let quoted = style != ScalarStyle::Plain || tag.is_some();
                let value =
                    if !quoted && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL") {
                        Value::Null
                    } else {
                        Value::Scalar {
                            text: text.into_owned(),
                            quoted,
                        }
                    };
                builder.push(builder.node(line, value), anchor)?;
            }
            Event::SequenceStart(_, anchor, _) => {
                builder.open(line, Value::Seq(Vec::new()), anchor);
            }
            Event::MappingStart(_, anchor, _) => {
                builder.open(line, Value::Map(Vec::new()), anchor);
            }
            Event::SequenceEnd | Event::MappingEnd => builder.close()?,
            Event::Alias(id) => {
                let node = builder.anchors.get(&id).cloned().ok_or(SyntaxError {
                    line,
                    message: "alias to an unknown anchor".into(),
                })?;
                builder.push(Node { line, ..node }, 0)?;
            }
            Event::UnresolvedAlias(name) => {
                return Err(SyntaxError {
                    line,
                    message: format!("alias *{name} has no anchor"),
                })
            }
            _ => {}
        }
    }
    let empty = builder.node(1, Value::Null);
    Ok(builder.root.unwrap_or(empty))
}

#[derive(Default)]
struct Builder {
    file: usize,
    documents: usize,
    /// Open collections, each with its anchor id and, for a mapping, the pending key.
    stack: Vec<(Node, usize, Option<Key>)>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
}

impl Builder {
    fn node(&self, line: usize, value: Value) -> Node {
        Node {
            file: self.file,
            line,
            value,
        }
    }

    fn open(&mut self, line: usize, value: Value, anchor: usize) {
        let node = self.node(line, value);
        self.stack.push((node, anchor, None));
    }

    fn close(&mut self) -> Result<(), SyntaxError> {
        let (node, anchor, _) = self.stack.pop().expect("the parser balances collections");
        self.push(node, anchor)
    }

    fn push(&mut self, node: Node, anchor: usize) -> Result<(), SyntaxError> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some((parent, _, pending)) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        match &mut parent.value {
            Value::Seq(items) => items.push(node),
            Value::Map(entries) => match pending.take() {
                None => {
                    let name = match &node.value {
                        Value::Scalar { text, .. } => text.clone(),
                        Value::Null => String::new(),
                        _ => {
                            return Err(SyntaxError {
                                line: node.line,
                                message: "a mapping key must be a scalar".into(),
                            })
                        }
                    };
                    *pending = Some(Key {
                        name,
                        file: node.file,
                        line: node.line,
                    });
                }
                Some(key) if key.name == "<<" => merge_key(entries, &key, node)?,
                Some(key) => insert(entries, key, node),
            },
            _ => unreachable!("only collections are pushed on the stack"),
        }
        Ok(())
    }
}

fn insert(entries: &mut Vec<(Key, Node)>, key: Key, node: Node) {
    match entries.iter_mut().find(|(k, _)| k.name == key.name) {
        Some(entry) => *entry = (key, node),
        None => entries.push((key, node)),
    }
}

/// YAML's `<<: *base` (or a list of them): the base's entries that the mapping does not
/// set itself. Keys written after the merge key still replace the merged ones.
fn merge_key(entries: &mut Vec<(Key, Node)>, key: &Key, node: Node) -> Result<(), SyntaxError> {
    let bases = match node.value {
        Value::Map(_) => vec![node],
        Value::Seq(items) => items,
        _ => {
            return Err(SyntaxError {
                line: key.line,
                message: "<< must merge a mapping or a list of mappings".into(),
            })
        }
    };
    for base in bases {
        let Value::Map(base_entries) = base.value else {
            return Err(SyntaxError {
                line: key.line,
                message: "<< must merge a mapping or a list of mappings".into(),
            });
        };
        for (k, v) in base_entries {
            if !entries.iter().any(|(existing, _)| existing.name == k.name) {
                entries.push((k, v));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_anchors_and_merge_keys() {
        let text = "x-base: &base\n  image: a\n  user: \"1\"\nservices:\n  web:\n    <<: *base\n    image: b\n    ports: [80, '81']\n    empty:\n";
        let root = parse(text, 0).unwrap();
        let web = root.get("services").unwrap().get("web").unwrap();
        assert_eq!(web.line, 6);
        assert_eq!(web.get("image").unwrap().as_str(), Some("b"));
        assert_eq!(web.get("user").unwrap().as_str(), Some("1"));
        assert!(web.get("empty").unwrap().is_null());
        let ports = web.get("ports").unwrap().as_seq().unwrap();
        assert_eq!(
            ports[1].value,
            Value::Scalar {
                text: "81".into(),
                quoted: true
            }
        );
        assert_eq!(ports[0].line, 8);
    }

    #[test]
    fn errors() {
        assert!(parse("a: [1\n", 0).is_err());
        assert!(parse("a: 1\n---\nb: 2\n", 0)
            .unwrap_err()
            .message
            .contains("one YAML document"));
        assert_eq!(parse("", 0).unwrap().value, Value::Null);
    }
}
