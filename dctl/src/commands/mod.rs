//! One module per CLI verb.

pub mod apply;
pub mod convert;
pub mod delete;
pub mod describe;
pub mod diff;
pub mod get;
pub mod gitsync;
pub mod logs;
pub mod node;
pub mod prune;
pub mod rollout;
pub mod scale;
pub mod stacks;
pub mod wait;

use std::path::PathBuf;

use dctl_apis::{meta::DEFAULT_NAMESPACE, Kind};
use dctl_runtime::manifest_files::{self, ComposeOptions, Manifests};

use crate::exit::{CliError, Exit};
use crate::ComposeArgs;

/// Reads and translates what `-f` names, printing the compose translation's warnings to
/// stderr (one per key dctl cannot honour).
///
/// # Errors
/// Every problem of every file, as exit code 3 (nothing was written).
pub fn read_manifests(
    files: &[PathBuf],
    recursive: bool,
    compose: &ComposeArgs,
) -> Result<Manifests, CliError> {
    let options = ComposeOptions {
        project: compose.project.clone(),
        env_file: compose.env_file.clone(),
        strict: compose.strict,
    };
    let manifests = manifest_files::read_manifests_and_compose(files, recursive, &options)
        .map_err(|errors| CliError::manifests(&errors))?;
    for warning in &manifests.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(manifests)
}

/// The kind named on the command line: singular, plural or short name (`svc`, `no`).
pub fn parse_kind(name: &str) -> Result<Kind, CliError> {
    Kind::from_name(name).ok_or_else(|| {
        let known: Vec<String> = Kind::ALL
            .iter()
            .map(|k| format!("{} ({})", k.plural(), k.short_names().join(", ")))
            .collect();
        CliError::new(
            Exit::Usage,
            format!(
                "the server doesn't have a resource type \"{name}\"; known kinds: {}",
                known.join(", ")
            ),
        )
    })
}

/// `KIND NAME…` or `KIND/NAME …`, as kubectl accepts them.
pub fn parse_kind_and_names(first: &str, rest: &[String]) -> Result<(Kind, Vec<String>), CliError> {
    match first.split_once('/') {
        Some((kind, name)) => {
            let kind = parse_kind(kind)?;
            let mut names = vec![name.to_string()];
            for other in rest {
                match other.split_once('/') {
                    Some((k, n)) if parse_kind(k)? == kind => names.push(n.to_string()),
                    Some(_) => {
                        return Err(CliError::usage(format!(
                            "{other}: all KIND/NAME arguments must be of the same kind"
                        )))
                    }
                    None => {
                        return Err(CliError::usage(format!(
                            "{other}: there is no need to specify a kind as a separate argument when passing arguments in KIND/NAME form"
                        )))
                    }
                }
            }
            Ok((kind, names))
        }
        None => Ok((parse_kind(first)?, rest.to_vec())),
    }
}

/// The namespace a command works in: `-n`, else `default`; cluster-scoped kinds have none.
pub fn namespace_for(kind: Kind, flag: Option<&str>) -> String {
    if !kind.namespaced() {
        return String::new();
    }
    flag.filter(|ns| !ns.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
        .to_string()
}

/// `service/web`, as kubectl prints an object it acted on.
pub fn object_name(kind: Kind, name: &str) -> String {
    format!("{}/{}", kind.as_str().to_ascii_lowercase(), name)
}
