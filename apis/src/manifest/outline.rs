//! Where each document and field of a YAML stream sits, from the parser's events.
//!
//! serde errors carry a position but no field path, and validation errors carry a field path
//! but no position; this index translates between the two, and tells the codec where each
//! document (and each `List` item) starts and ends so it can be decoded on its own.

use serde_saphyr::granit_parser::{Event, Marker, Parser, ScalarStyle};

/// A place in the text: line 1-based, column 0-based in characters (the parser's counting),
/// byte offset into the text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Pos {
    pub line: usize,
    pub col: usize,
    pub byte: usize,
}

impl Pos {
    fn from_marker(marker: &Marker, text: &str) -> Pos {
        // `Parser::new_from_str` always records byte offsets; the fallback only guards
        // against a parser that did not.
        let byte = marker.byte_offset().unwrap_or_else(|| {
            text.char_indices()
                .nth(marker.index())
                .map_or(text.len(), |(b, _)| b)
        });
        Pos {
            line: marker.line(),
            col: marker.col(),
            byte,
        }
    }
}

/// One step of a field path: a mapping key or a sequence index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Segment {
    Key(String),
    Index(usize),
}

impl Segment {
    /// Whether `self` (from a validation path) names `other` (from the YAML). `ports[0]` is
    /// an index in the YAML but `labels[0]` would be a key, so a number matches both.
    fn names(&self, other: &Segment) -> bool {
        match (self, other) {
            (Segment::Index(i), Segment::Key(k)) | (Segment::Key(k), Segment::Index(i)) => {
                k.parse::<usize>() == Ok(*i)
            }
            _ => self == other,
        }
    }
}

/// Parses a `FieldPath` string (`spec.template.ports[0].containerPort`,
/// `metadata.labels[app.kubernetes.io/name]`) into segments.
pub(super) fn parse_path(path: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']').unwrap_or(inner.len());
            let content = &inner[..end];
            segments.push(match content.parse::<usize>() {
                Ok(i) => Segment::Index(i),
                Err(_) => Segment::Key(content.to_string()),
            });
            rest = inner.get(end + 1..).unwrap_or("");
        } else {
            let rest_trimmed = rest.strip_prefix('.').unwrap_or(rest);
            let end = rest_trimmed.find(['.', '[']).unwrap_or(rest_trimmed.len());
            segments.push(Segment::Key(rest_trimmed[..end].to_string()));
            rest = &rest_trimmed[end..];
        }
    }
    segments
}

/// Renders segments as a `FieldPath` does; keys that are not plain words go in brackets.
pub(super) fn format_path(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
            Segment::Key(k) => {
                let plain = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !plain {
                    out.push_str(&format!("[{k}]"));
                } else {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
            }
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// The key of a mapping entry; its path ends with the key's own name.
    Key,
    /// A value: the document root, a mapping entry's value, or a sequence element.
    Value,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Shape {
    /// A scalar's text, and whether it is an untagged plain null (`~`, `null`, empty).
    Scalar {
        text: String,
        null: bool,
    },
    Mapping,
    Sequence,
    Alias,
}

/// One node of a document, in document order (a parent before its children).
#[derive(Clone, Debug)]
pub(super) struct Node {
    pub path: Vec<Segment>,
    pub role: Role,
    pub shape: Shape,
    pub start: Pos,
    pub end: Pos,
}

/// Every node of one document; `nodes[0]` is the root (absent for an empty stream).
#[derive(Clone, Debug, Default)]
pub(super) struct DocumentOutline {
    /// 1-based position among all documents the parser saw, empty ones included.
    pub index: usize,
    pub nodes: Vec<Node>,
}

/// Which node to report when several start at the same place (a block mapping starts
/// where its first key does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Prefer {
    Key,
    /// The outermost value starting there: a field whose whole value is wrong.
    Value,
}

impl DocumentOutline {
    pub fn root(&self) -> Option<&Node> {
        self.nodes.first()
    }

    /// Empty, comment-only and `null` documents are skipped, as kubectl skips them.
    pub fn is_empty(&self) -> bool {
        match self.root() {
            None => true,
            Some(root) => matches!(root.shape, Shape::Scalar { null: true, .. }),
        }
    }

    /// The value node at exactly `path`.
    pub fn value(&self, path: &[Segment]) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|n| n.role == Role::Value && n.path == path)
    }

    /// The node a `(line, col)` position points into, by exact start first, then by the
    /// innermost node whose span contains it.
    pub fn node_at(&self, line: usize, col: usize, prefer: Prefer) -> Option<&Node> {
        let at = |n: &&Node| n.start.line == line && n.start.col == col;
        let exact = match prefer {
            Prefer::Key => self
                .nodes
                .iter()
                .filter(at)
                .find(|n| n.role == Role::Key)
                .or_else(|| self.nodes.iter().find(at)),
            Prefer::Value => self
                .nodes
                .iter()
                .filter(at)
                .find(|n| n.role == Role::Value)
                .or_else(|| self.nodes.iter().find(at)),
        };
        exact.or_else(|| {
            let here = (line, col);
            self.nodes
                .iter()
                .filter(|n| (n.start.line, n.start.col) <= here && here < (n.end.line, n.end.col))
                .max_by_key(|n| (n.start, n.path.len()))
        })
    }

    /// The node a validation path names (its key where it has one, so the line shows the
    /// field's name), or else the nearest ancestor present, with `false` for "not exact".
    pub fn locate(&self, path: &[Segment]) -> Option<(&Node, bool)> {
        (0..=path.len()).rev().find_map(|len| {
            let wanted = &path[..len];
            let matches = |n: &&Node| {
                n.path.len() == wanted.len() && wanted.iter().zip(&n.path).all(|(w, p)| w.names(p))
            };
            let node = self
                .nodes
                .iter()
                .filter(matches)
                .find(|n| n.role == Role::Key)
                .or_else(|| self.nodes.iter().find(matches))?;
            Some((node, len == path.len()))
        })
    }
}

/// A YAML syntax error: where, and in which document.
#[derive(Clone, Debug)]
pub(super) struct SyntaxError {
    pub document: usize,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// The documents of a stream, up to the first syntax error if there is one.
#[derive(Debug, Default)]
pub(super) struct Outline {
    pub documents: Vec<DocumentOutline>,
    pub syntax_error: Option<SyntaxError>,
}

/// The container a node event lands in while the outline is being built.
struct Frame {
    node: usize,
    path: Vec<Segment>,
    state: FrameState,
}

enum FrameState {
    /// `key` is the pending entry's key once read; `None` while a key is expected.
    Mapping {
        key: Option<String>,
    },
    Sequence {
        next: usize,
    },
}

impl Outline {
    pub fn parse(text: &str) -> Outline {
        let mut outline = Outline::default();
        let mut current: Option<DocumentOutline> = None;
        let mut stack: Vec<Frame> = Vec::new();
        let mut count = 0;
        for next in Parser::new_from_str(text) {
            let (event, span) = match next {
                Ok(next) => next,
                Err(err) => {
                    outline.syntax_error = Some(SyntaxError {
                        // An error between documents belongs to the one about to start.
                        document: current.as_ref().map_or(count + 1, |d| d.index),
                        line: err.marker().line(),
                        col: err.marker().col(),
                        message: err.info(),
                    });
                    break;
                }
            };
            let start = Pos::from_marker(&span.start, text);
            let end = Pos::from_marker(&span.end, text);
            let shape = match event {
                Event::DocumentStart(..) => {
                    count += 1;
                    current = Some(DocumentOutline {
                        index: count,
                        nodes: Vec::new(),
                    });
                    stack.clear();
                    continue;
                }
                Event::DocumentEnd => {
                    outline.documents.extend(current.take());
                    continue;
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    if let (Some(frame), Some(doc)) = (stack.pop(), current.as_mut()) {
                        doc.nodes[frame.node].end = end;
                    }
                    continue;
                }
                Event::Scalar(text, style, _, tag) => Shape::Scalar {
                    null: style == ScalarStyle::Plain
                        && tag.is_none()
                        && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL"),
                    text: text.into_owned(),
                },
                Event::MappingStart(..) => Shape::Mapping,
                Event::SequenceStart(..) => Shape::Sequence,
                Event::Alias(_) | Event::UnresolvedAlias(_) => Shape::Alias,
                _ => continue,
            };
            let Some(doc) = current.as_mut() else {
                continue;
            };
            let (path, role) = place(&mut stack, &shape);
            let container = matches!(shape, Shape::Mapping | Shape::Sequence);
            doc.nodes.push(Node {
                path: path.clone(),
                role,
                shape,
                start,
                end,
            });
            if container {
                let state = if doc.nodes.last().map(|n| &n.shape) == Some(&Shape::Mapping) {
                    FrameState::Mapping { key: None }
                } else {
                    FrameState::Sequence { next: 0 }
                };
                stack.push(Frame {
                    node: doc.nodes.len() - 1,
                    path,
                    state,
                });
            }
        }
        // A document cut short by a syntax error is left out: half an object is never decoded.
        outline
    }
}

/// The path and role of the next node in the innermost open container, advancing that
/// container's state.
fn place(stack: &mut [Frame], shape: &Shape) -> (Vec<Segment>, Role) {
    let Some(frame) = stack.last_mut() else {
        return (Vec::new(), Role::Value);
    };
    let mut path = frame.path.clone();
    match &mut frame.state {
        FrameState::Mapping { key } => match key.take() {
            None => {
                // A complex key (a mapping used as a key) gets a placeholder name.
                let name = match shape {
                    Shape::Scalar { text, .. } => text.clone(),
                    _ => "?".to_string(),
                };
                path.push(Segment::Key(name.clone()));
                *key = Some(name);
                (path, Role::Key)
            }
            Some(name) => {
                path.push(Segment::Key(name));
                (path, Role::Value)
            }
        },
        FrameState::Sequence { next } => {
            path.push(Segment::Index(*next));
            *next += 1;
            (path, Role::Value)
        }
    }
}
