//! The `git` program, run in a cache of its own per GitSync: fetch, resolve a ref, export.
//!
//! dctl drives the `git` program rather than a library: gix's fetch over ssh and its
//! checkout are less complete than git's, and `git` is what users debug with — the same
//! URL, credentials helper and `~/.ssh/config` that work for `git clone` work here.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// What went wrong running git: the command (without the URL's credentials, if any) and
/// what git said.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git {command}: {message}")]
    Failed { command: String, message: String },
    #[error("git {command}: no answer within {timeout:?}")]
    TimedOut { command: String, timeout: Duration },
    #[error("cannot run git {command}: {source} (is the git program installed?)")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no branch, tag or commit {reference:?} in {repo}")]
    UnknownRef { reference: String, repo: String },
}

/// One GitSync's bare repository and its exported commits, under its own directory.
#[derive(Clone, Debug)]
pub struct Mirror {
    dir: PathBuf,
    timeout: Duration,
}

impl Mirror {
    /// The mirror kept in `dir` (created on first fetch); each git command may take up to
    /// `timeout`.
    pub fn new(dir: PathBuf, timeout: Duration) -> Mirror {
        Mirror { dir, timeout }
    }

    /// The directory the mirror lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn git_dir(&self) -> PathBuf {
        self.dir.join("repo.git")
    }

    /// Fetches every branch and tag of `repo` into the mirror (creating it first).
    ///
    /// # Errors
    /// When git cannot be run, the remote does not answer in time, or git fails.
    pub async fn fetch(&self, repo: &str) -> Result<(), GitError> {
        let git_dir = self.git_dir();
        if !git_dir.join("HEAD").exists() {
            let dir = git_dir.display().to_string();
            tokio::fs::create_dir_all(&git_dir)
                .await
                .map_err(|source| GitError::Io {
                    path: dir.clone(),
                    source,
                })?;
            self.git(&["init", "--quiet", "--bare", &dir], "init", None)
                .await?;
        }
        self.git(
            &[
                "fetch",
                "--quiet",
                "--force",
                "--prune",
                "--no-tags",
                "--",
                repo,
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ],
            &format!("fetch {}", redacted(repo)),
            None,
        )
        .await?;
        Ok(())
    }

    /// The commit `reference` names: a branch, then a tag, then a commit id.
    ///
    /// # Errors
    /// `UnknownRef` when none matches; other git failures.
    pub async fn resolve(&self, reference: &str, repo: &str) -> Result<String, GitError> {
        let mut candidates = vec![
            format!("refs/remotes/origin/{reference}"),
            format!("refs/tags/{reference}"),
        ];
        let hex = reference.len() >= 4 && reference.chars().all(|c| c.is_ascii_hexdigit());
        if hex {
            candidates.push(reference.to_string());
        }
        for candidate in candidates {
            let spec = format!("{candidate}^{{commit}}");
            match self
                .git(
                    &["rev-parse", "--verify", "--quiet", &spec],
                    "rev-parse",
                    None,
                )
                .await
            {
                Ok(sha) => return Ok(sha.trim().to_string()),
                Err(GitError::Failed { .. }) => continue,
                Err(other) => return Err(other),
            }
        }
        Err(GitError::UnknownRef {
            reference: reference.to_string(),
            repo: redacted(repo),
        })
    }

    /// The files of commit `sha`, exported once into a directory of their own (not a git
    /// work tree: nothing there can drift from the commit).
    ///
    /// # Errors
    /// When git fails or the directory cannot be written.
    pub async fn checkout(&self, sha: &str) -> Result<PathBuf, GitError> {
        let checkouts = self.dir.join("checkouts");
        let dest = checkouts.join(sha);
        if dest.is_dir() {
            return Ok(dest);
        }
        let tmp = checkouts.join(format!("{sha}.tmp"));
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| GitError::Io { path, source }
        };
        if tmp.exists() {
            tokio::fs::remove_dir_all(&tmp).await.map_err(io(&tmp))?;
        }
        tokio::fs::create_dir_all(&tmp).await.map_err(io(&tmp))?;
        // A private index, so the bare repository's own state never matters.
        let index = checkouts.join(format!("{sha}.index"));
        self.git(&["read-tree", sha], "read-tree", Some(&index))
            .await?;
        let work_tree = tmp.display().to_string();
        self.git(
            &[
                "--work-tree",
                &work_tree,
                "checkout-index",
                "--all",
                "--force",
            ],
            "checkout-index",
            Some(&index),
        )
        .await?;
        let _ = tokio::fs::remove_file(&index).await;
        tokio::fs::rename(&tmp, &dest).await.map_err(io(&dest))?;
        Ok(dest)
    }

    /// Removes exported commits other than `keep`.
    pub async fn forget_checkouts_except(&self, keep: &[&str]) {
        let Ok(mut entries) = tokio::fs::read_dir(self.dir.join("checkouts")).await else {
            return;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().to_string();
            if !keep.contains(&name.as_str()) {
                let path = entry.path();
                let _ = if path.is_dir() {
                    tokio::fs::remove_dir_all(&path).await
                } else {
                    tokio::fs::remove_file(&path).await
                };
            }
        }
    }

    /// Runs `git --git-dir MIRROR args…` and returns its standard output.
    async fn git(
        &self,
        args: &[&str],
        shown: &str,
        index: Option<&Path>,
    ) -> Result<String, GitError> {
        let mut command = Command::new("git");
        command
            .arg("--git-dir")
            .arg(self.git_dir())
            .args(args)
            // Never wait for a password or a host key prompt: fail and say so.
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if std::env::var_os("GIT_SSH_COMMAND").is_none() {
            command.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
        }
        if let Some(index) = index {
            command.env("GIT_INDEX_FILE", index);
        }
        let child = command.spawn().map_err(|source| GitError::Spawn {
            command: shown.to_string(),
            source,
        })?;
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| GitError::TimedOut {
                command: shown.to_string(),
                timeout: self.timeout,
            })?
            .map_err(|source| GitError::Spawn {
                command: shown.to_string(),
                source,
            })?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = stderr
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        Err(GitError::Failed {
            command: shown.to_string(),
            message: if message.is_empty() {
                format!("exited with {}", output.status)
            } else {
                message
            },
        })
    }
}

/// `https://user:secret@host/x` → `https://user@host/x`: a URL as it may be shown.
pub fn redacted(repo: &str) -> String {
    if let Some((scheme, rest)) = repo.split_once("://") {
        if let Some((userinfo, host)) = rest.split_once('@') {
            if let Some((user, _secret)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}@{host}");
            }
        }
    }
    repo.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_not_shown() {
        assert_eq!(
            redacted("https://bot:s3cret@example.com/ops.git"),
            "https://bot@example.com/ops.git"
        );
        assert_eq!(
            redacted("git@example.com:ops.git"),
            "git@example.com:ops.git"
        );
        assert_eq!(redacted("/srv/git/ops"), "/srv/git/ops");
    }
}
