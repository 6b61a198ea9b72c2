//! The CLI's errors and its stable exit codes.

use std::process::ExitCode;

use dctl_apis::manifest::ManifestError;
use dctl_runtime::store::StoreError;

/// Exit codes scripts can rely on. `diff` alone also uses 1 for "differences found".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Something went wrong that fits no other code.
    Failure = 1,
    /// The command line itself was wrong (clap uses 2 as well).
    Usage = 2,
    /// A manifest or an argument did not validate; nothing was written.
    Invalid = 3,
    /// The object does not exist.
    NotFound = 4,
    /// Someone else changed the object first; re-read and retry.
    Conflict = 5,
    /// etcd could not be reached.
    Unavailable = 6,
}

#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
}

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        CliError {
            exit,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        CliError::new(Exit::Usage, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        CliError::new(Exit::Failure, message)
    }

    /// Every manifest problem on its own line; nothing was applied.
    pub fn manifests(errors: &[ManifestError]) -> Self {
        let lines: Vec<String> = errors.iter().map(|e| format!("error: {e}")).collect();
        CliError::new(Exit::Invalid, lines.join("\n"))
    }

    /// Prints the error to stderr and returns its exit code.
    pub fn report(&self) -> ExitCode {
        if self.message.starts_with("error: ") {
            eprintln!("{}", self.message);
        } else {
            eprintln!("error: {}", self.message);
        }
        ExitCode::from(self.exit as u8)
    }
}

impl From<StoreError> for CliError {
    fn from(err: StoreError) -> Self {
        let exit = match &err {
            StoreError::Unavailable { .. } => Exit::Unavailable,
            StoreError::NotFound { .. } => Exit::NotFound,
            StoreError::Conflict { .. } => Exit::Conflict,
            StoreError::AlreadyExists { .. } => Exit::Conflict,
            StoreError::Invalid { .. } => Exit::Invalid,
            _ => Exit::Failure,
        };
        CliError::new(exit, err.to_string())
    }
}
