//! The translator's value readers: each reports its own error (at the value's line, with
//! its key path) and returns nothing, so translation goes on and every error is found.

use super::service::Translator;
use super::values::{self, shell_words};
use super::yaml::{Key, Node, Value};
use crate::service::PlacementPlatform;

impl Translator<'_> {
    pub(super) fn mapping<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [(Key, Node)]> {
        if node.is_null() {
            return Some(&[]);
        }
        let entries = node.as_map();
        if entries.is_none() {
            self.diags.error(
                node,
                path,
                format!("must be a mapping, got {}", node.describe()),
            );
        }
        entries
    }

    pub(super) fn sequence<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        let items = node.as_seq();
        if items.is_none() {
            self.diags.error(
                node,
                path,
                format!("must be a list, got {}", node.describe()),
            );
        }
        items
    }

    pub(super) fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        let text = node.as_str().map(String::from);
        if text.is_none() {
            self.diags.error(
                node,
                path,
                format!("must be a string, got {}", node.describe()),
            );
        }
        text
    }

    /// `os[/architecture[/variant]]` (`linux/amd64`, `linux/arm64/v8`), as the tasks'
    /// placement platform; a variant cannot be told from what Docker reports of a node,
    /// so it is dropped with a warning.
    pub(super) fn platform(&mut self, node: &Node, path: &str) -> Option<PlacementPlatform> {
        let text = self.string(node, path)?;
        let mut parts = text.split('/');
        let os = parts.next().unwrap_or_default().to_string();
        let architecture = parts.next().unwrap_or_default().to_string();
        if let Some(variant) = parts.next() {
            self.diags.warn(
                node,
                path,
                format!("variant {variant} ignored: nodes report an os and an architecture"),
            );
        }
        if os.is_empty() || parts.next().is_some() {
            let message = format!("expected os[/architecture[/variant]], got {text:?}");
            self.diags.error(node, path, message);
            return None;
        }
        Some(PlacementPlatform { os, architecture })
    }

    /// A list of strings, or one string as a list of one.
    pub(super) fn strings(&mut self, node: &Node, path: &str) -> Vec<String> {
        match &node.value {
            Value::Scalar { text, .. } => vec![text.clone()],
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.string(item, &format!("{path}[{i}]")))
                .collect(),
            _ => {
                self.diags.error(
                    node,
                    path,
                    format!("must be a list of strings, got {}", node.describe()),
                );
                Vec::new()
            }
        }
    }

    pub(super) fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        let value = node.as_bool();
        if value.is_none() {
            self.diags.error(node, path, "must be true or false");
        }
        value
    }

    pub(super) fn number<T: std::str::FromStr>(&mut self, node: &Node, path: &str) -> Option<T> {
        let value = node.as_str().and_then(|s| s.parse().ok());
        if value.is_none() {
            self.diags
                .error(node, path, "must be a non-negative whole number");
        }
        value
    }

    pub(super) fn duration(
        &mut self,
        node: &Node,
        path: &str,
    ) -> Option<crate::duration::Duration> {
        let text = self.string(node, path)?;
        match values::duration(&text) {
            Ok(duration) => Some(duration),
            Err(message) => {
                self.diags.error(node, path, message);
                None
            }
        }
    }

    /// `labels`-like mappings (list forms are normalised to mappings before).
    pub(super) fn key_values(&mut self, node: &Node, path: &str) -> Vec<(String, String)> {
        let Some(entries) = self.mapping(node, path) else {
            return Vec::new();
        };
        entries
            .iter()
            .map(|(k, v)| (k.name.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect()
    }

    /// `command`/`entrypoint`: a list, or a string split into words as a shell would.
    pub(super) fn command(&mut self, node: &Node, path: &str) -> Vec<String> {
        match &node.value {
            Value::Null => Vec::new(),
            Value::Scalar { text, .. } => shell_words(text).unwrap_or_else(|message| {
                self.diags.error(node, path, message);
                Vec::new()
            }),
            _ => self.strings(node, path),
        }
    }
}
