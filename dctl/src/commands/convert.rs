//! `dctl convert`: the dctl manifests a compose file translates to, as YAML.

use std::process::ExitCode;

use clap::Args;
use dctl_apis::{manifest, with_object};

use crate::commands::read_manifests;
use crate::exit::CliError;
use crate::FileArgs;

#[derive(Args)]
pub struct ConvertArgs {
    #[command(flatten)]
    files: FileArgs,
}

/// Prints every object, compose translations and plain manifests alike, defaulted, as one
/// YAML stream that `dctl apply -f -` takes back.
///
/// # Errors
/// Every problem of every file (exit 3).
pub fn run(args: ConvertArgs) -> Result<ExitCode, CliError> {
    let files = &args.files;
    let manifests = read_manifests(&files.files, files.recursive, &files.compose)?;
    let documents: Vec<String> = manifests
        .documents
        .iter()
        .map(|d| with_object!(&d.object, o => manifest::to_yaml(o)))
        .collect();
    print!("{}", documents.join("---\n"));
    Ok(ExitCode::SUCCESS)
}
