//! What a translation found wrong or could not honour, each at its file, line and key.

use super::yaml::{Key, Node};
use crate::manifest::ManifestError;

/// The warnings and errors of one translation, as manifest errors (file, line, key path,
/// message) so the CLI prints them as it prints a manifest's.
#[derive(Debug, Default)]
pub struct Diagnostics {
    /// The files' names as the user gave them, by index.
    files: Vec<String>,
    pub warnings: Vec<ManifestError>,
    pub errors: Vec<ManifestError>,
}

impl Diagnostics {
    pub fn new(files: Vec<String>) -> Self {
        Diagnostics {
            files,
            ..Diagnostics::default()
        }
    }

    pub fn file_name(&self, file: usize) -> &str {
        self.files.get(file).map_or("<compose>", String::as_str)
    }

    fn at(&self, file: usize, line: usize, path: &str, message: String) -> ManifestError {
        ManifestError {
            source: self.file_name(file).to_string(),
            document: 0,
            line: Some(line),
            column: None,
            path: (!path.is_empty()).then(|| path.to_string()),
            message,
        }
    }

    /// An error about the value `node` at `path`.
    pub fn error(&mut self, node: &Node, path: &str, message: impl Into<String>) {
        let error = self.at(node.file, node.line, path, message.into());
        self.errors.push(error);
    }

    /// An error about the key `key` at `path`.
    pub fn key_error(&mut self, key: &Key, path: &str, message: impl Into<String>) {
        let error = self.at(key.file, key.line, path, message.into());
        self.errors.push(error);
    }

    /// An error about the whole project, at the first file.
    pub fn file_error(&mut self, message: impl Into<String>) {
        let error = ManifestError::file(self.file_name(0), message);
        self.errors.push(error);
    }

    pub fn warn(&mut self, node: &Node, path: &str, message: impl Into<String>) {
        let warning = self.at(node.file, node.line, path, message.into());
        self.warnings.push(warning);
    }

    /// The one warning for a key dctl does not honour; `why` says what to do instead,
    /// or what dctl does.
    pub fn unsupported(&mut self, key: &Key, path: &str, why: &str) {
        let message = if why.is_empty() {
            "not supported by dctl, ignored".to_string()
        } else {
            format!("not supported by dctl, ignored: {why}")
        };
        let warning = self.at(key.file, key.line, path, message);
        self.warnings.push(warning);
    }

    /// Under `--strict`, every warning becomes an error.
    pub fn make_strict(&mut self) {
        self.errors.append(&mut self.warnings);
    }

    /// In file order, then line order (stable: one line's problems keep their order).
    pub fn sort(&mut self) {
        let position = |e: &ManifestError| {
            let file = self
                .files
                .iter()
                .position(|f| *f == e.source)
                .unwrap_or(usize::MAX);
            (file, e.line.unwrap_or(0))
        };
        self.errors.sort_by_key(position);
        self.warnings.sort_by_key(position);
    }
}
