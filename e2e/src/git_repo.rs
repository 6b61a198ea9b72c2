//! A git repository in a temporary directory, committed to with the `git` program as a
//! user would: what the gitsync tests and benchmark sync from.

use std::path::Path;
use std::process::Command;

pub struct GitRepo {
    dir: tempfile::TempDir,
}

impl GitRepo {
    /// An empty repository on branch `main`, with a committer configured.
    pub fn new() -> GitRepo {
        let repo = GitRepo {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        repo.git(&["init", "--quiet", "--initial-branch", "main"]);
        repo.git(&["config", "user.name", "dctl test"]);
        repo.git(&["config", "user.email", "test@dctl.invalid"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The repository as `spec.repo` names it: its absolute path.
    pub fn url(&self) -> String {
        self.path().display().to_string()
    }

    /// Runs `git ARGS` in the repository and returns its output; panics if git fails.
    pub fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("git runs");
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    pub fn write(&self, file: &str, text: &str) {
        let path = self.path().join(file);
        std::fs::create_dir_all(path.parent().expect("a file has a parent"))
            .expect("create folder");
        std::fs::write(path, text).expect("write file");
    }

    pub fn remove(&self, file: &str) {
        self.git(&["rm", "--quiet", file]);
    }

    /// Commits everything and returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }
}

impl Default for GitRepo {
    fn default() -> Self {
        GitRepo::new()
    }
}
