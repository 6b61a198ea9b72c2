//! Translates compose files into dctl objects: a compose project becomes a namespace of
//! Services and Networks.
//!
//! Pure: the caller reads the files (`.env`, `env_file`s through `Options::read_file`)
//! and applies the result. Every problem is reported at once, each at its file, line and
//! key; nothing is returned to apply while any error remains.

mod depends_on;
mod deploy;
mod dotenv;
mod healthcheck;
pub mod interpolate;
mod merge;
mod network;
mod ports;
mod readers;
mod service;
mod storage;
#[cfg(test)]
mod tests;
mod values;
mod warnings;
pub mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::manifest::{Document, ManifestError};
use crate::resource::AnyObject;
use crate::validation::check_dns1123_label;
use interpolate::{interpolate_tree, Variables};
use warnings::Diagnostics;
use yaml::{Node, Value};

/// Every translated object carries it: the compose project, as `docker compose` labels.
pub const LABEL_PROJECT: &str = "com.docker.compose.project";
/// Every translated object carries it: the stack (= project = namespace), which
/// `dctl get stacks` and `dctl apply --prune` select by.
pub const LABEL_STACK: &str = "dctl.io/stack";
/// The compose service a translated Service came from.
pub const LABEL_SERVICE: &str = "com.docker.compose.service";

/// One compose file (or `.env` file) as read: its name as the user gave it and its text.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

/// What a translation needs besides the files.
pub struct Options<'a> {
    /// `-p`: overrides the file's `name:` and the directory name.
    pub project: Option<String>,
    /// The directory of the first file, absolute: the default project name, and what
    /// relative bind mounts and `env_file` paths are relative to.
    pub directory: PathBuf,
    /// The process environment, which wins over `.env`.
    pub environment: &'a dyn Variables,
    /// `.env` beside the first file, or `--env-file`.
    pub dotenv: Option<SourceFile>,
    /// Reads an `env_file` (an absolute path); an error is a message without the path.
    pub read_file: &'a dyn Fn(&Path) -> Result<String, String>,
    /// Warnings become errors.
    pub strict: bool,
}

/// The objects of a compose project, in apply order (networks first), with the warnings
/// about what dctl does not honour.
#[derive(Debug)]
pub struct Translation {
    pub project: String,
    pub documents: Vec<Document>,
    pub warnings: Vec<ManifestError>,
}

/// Whether `text` is a compose file rather than dctl manifests: a mapping with a top-level
/// `services:` and no `kind`.
pub fn is_compose(text: &str) -> bool {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Cheap checks first: a YAML compose file has `services:` at the start of a line; a
    // JSON one (`{"services": …}`) is parsed.
    let json = text.trim_start().starts_with('{');
    if !json && !text.lines().any(|l| l.starts_with("services:")) {
        return false;
    }
    match yaml::parse(text, 0) {
        Ok(root) => root.get("services").is_some() && root.get("kind").is_none(),
        // A broken file with a top-level `services:` is a broken compose file.
        Err(_) => !text.lines().any(|l| l.starts_with("kind:")),
    }
}

/// Translates `files` (merged in order) into dctl objects in the project's namespace.
///
/// # Errors
/// Every problem: YAML syntax, a missing required variable, a key dctl cannot translate
/// (`build:` without `image:`), a value that does not parse, an object that does not
/// validate, and under `Options::strict` every warning.
pub fn translate(
    files: &[SourceFile],
    options: &Options,
) -> Result<Translation, Vec<ManifestError>> {
    let mut diags = Diagnostics::new(files.iter().map(|f| f.name.clone()).collect());
    let dotenv = read_dotenv(options, &mut diags);
    let lookup = |name: &str| {
        options
            .environment
            .get(name)
            .or_else(|| dotenv.get(name).cloned())
    };
    let Some(root) = read_files(files, &lookup, &mut diags) else {
        return Err(diags.errors);
    };
    let project = project_name(&root, options, &mut diags);
    let mut objects: Vec<(AnyObject, service::Origin)> = Vec::new();
    if let Some(project) = &project {
        let mut translator = service::Translator {
            project,
            diags: &mut diags,
            options,
            variables: &lookup,
            networks: BTreeMap::new(),
            volumes: BTreeMap::new(),
            services: BTreeMap::new(),
        };
        objects = translator.translate(&root);
    }
    for (object, origin) in &mut objects {
        object.apply_defaults();
        let kind = object.kind();
        for error in object.validate() {
            // A missing image is reported by the translator, with what to do about `build:`.
            if error.path.as_str() == "spec.template.image" {
                continue;
            }
            let path = format!("{} ({kind} {})", origin.path, error.path.as_str());
            diags.error(&origin.node(), &path, error.message);
        }
    }
    if options.strict {
        diags.make_strict();
    }
    diags.sort();
    let project = match project {
        Some(project) if diags.errors.is_empty() => project,
        _ => return Err(diags.errors),
    };
    let documents = objects
        .into_iter()
        .map(|(object, origin)| Document {
            source: diags.file_name(origin.file).to_string(),
            index: 1,
            line: origin.line,
            object,
        })
        .collect();
    Ok(Translation {
        project,
        documents,
        warnings: diags.warnings,
    })
}

/// The variables of `.env` (or `--env-file`), each resolved against the environment.
fn read_dotenv(options: &Options, diags: &mut Diagnostics) -> BTreeMap<String, String> {
    let Some(file) = &options.dotenv else {
        return BTreeMap::new();
    };
    match dotenv::parse(&file.text, options.environment) {
        Ok(vars) => vars.into_iter().collect(),
        Err(error) => {
            diags
                .errors
                .push(line_error(&file.name, error.line, error.message));
            BTreeMap::new()
        }
    }
}

/// A problem at a line of a file that is not a compose file's key (`.env`, syntax).
fn line_error(source: &str, line: usize, message: String) -> ManifestError {
    ManifestError {
        source: source.to_string(),
        document: 0,
        line: Some(line),
        column: None,
        path: None,
        message,
    }
}

/// Top-level keys a compose file may have.
const TOP_LEVEL: [&str; 5] = ["version", "name", "services", "networks", "volumes"];

/// Parses, interpolates and merges the files; `None` when any cannot be read.
fn read_files(files: &[SourceFile], vars: &dyn Variables, diags: &mut Diagnostics) -> Option<Node> {
    let mut merged: Option<Node> = None;
    let mut unset = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let text = file.text.strip_prefix('\u{feff}').unwrap_or(&file.text);
        let mut root = match yaml::parse(text, index) {
            Ok(root) => root,
            Err(error) => {
                let message = format!("invalid YAML: {}", error.message);
                diags
                    .errors
                    .push(line_error(&file.name, error.line, message));
                continue;
            }
        };
        let mut errors = Vec::new();
        interpolate_tree(&mut root, vars, &mut unset, &mut errors);
        for (file, line, error) in errors {
            diags.error(
                &Node {
                    file,
                    line,
                    value: Value::Null,
                },
                "",
                error.to_string(),
            );
        }
        let Value::Map(entries) = &mut root.value else {
            diags.error(&root, "", "a compose file must be a mapping with services:");
            continue;
        };
        for (key, value) in entries.iter_mut() {
            match key.name.as_str() {
                "services" => {
                    if let Value::Map(services) = &mut value.value {
                        for (_, service) in services {
                            merge::normalize_service(service);
                        }
                    }
                }
                name if TOP_LEVEL.contains(&name) || name.starts_with("x-") => {}
                "secrets" | "configs" => diags.unsupported(
                    key,
                    &key.name,
                    "dctl has no secrets or configs yet; use environment or a bind mount",
                ),
                "include" => diags.unsupported(key, "include", "pass each file with -f"),
                other => diags.key_error(key, other, "unknown top-level key"),
            }
        }
        match &mut merged {
            None => merged = Some(root),
            Some(base) => merge::merge_files(base, root),
        }
    }
    for var in unset {
        let node = Node {
            file: var.file,
            line: var.line,
            value: Value::Null,
        };
        diags.warn(
            &node,
            "",
            format!("variable {} is not set: using an empty string", var.name),
        );
    }
    if !diags.errors.is_empty() {
        return None;
    }
    merged
}

/// `-p`, else `name:`, else the directory's name, normalised as compose does (lowercase,
/// only letters, digits, `-` and `_`) and then to a DNS label (`_` → `-`): the namespace.
fn project_name(root: &Node, options: &Options, diags: &mut Diagnostics) -> Option<String> {
    if let Some(project) = &options.project {
        return match check_dns1123_label(project) {
            Ok(()) => Some(project.clone()),
            Err(message) => {
                diags.file_error(format!("project name {project:?} (-p): {message}"));
                None
            }
        };
    }
    if let Some(name) = root.get("name") {
        let Some(text) = name.as_str() else {
            diags.error(name, "name", "must be a string");
            return None;
        };
        return match check_dns1123_label(text) {
            Ok(()) => Some(text.to_string()),
            Err(message) => {
                diags.error(name, "name", format!("project name {text:?}: {message}"));
                None
            }
        };
    }
    let directory = options
        .directory
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let normalized = normalize_name(&directory);
    match check_dns1123_label(&normalized) {
        Ok(()) => Some(normalized),
        Err(_) => {
            diags.file_error(format!(
                "cannot name the project after the directory {directory:?}: set name: in the file or pass -p NAME"
            ));
            None
        }
    }
}

/// A compose name as a DNS-1123 label: lowercase, `_` and `.` as `-`, other characters
/// dropped, no leading or trailing `-`.
pub fn normalize_name(name: &str) -> String {
    let mapped: String = name
        .to_ascii_lowercase()
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => Some(c),
            '_' | '.' => Some('-'),
            _ => None,
        })
        .collect();
    mapped.trim_matches('-').to_string()
}

/// The labels of every translated object of `project`.
fn project_labels(project: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_PROJECT.to_string(), project.to_string()),
        (LABEL_STACK.to_string(), project.to_string()),
    ])
}

/// The names in a set, for messages: `a, b, c`.
fn listed(names: &BTreeSet<String>) -> String {
    names.iter().cloned().collect::<Vec<_>>().join(", ")
}
