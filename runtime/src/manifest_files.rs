//! Reads the manifests `-f` names (files, directories, `-` for stdin), as kubectl does;
//! compose files among them are translated into the objects of their project.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use dctl_apis::compose::{self, SourceFile};
use dctl_apis::manifest::{check_duplicates, decode, Document, ManifestError};

/// The path that means standard input.
pub const STDIN: &str = "-";

/// The file name extensions a directory is searched for, as in kubectl.
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// How compose files among the manifests are translated (`-p`, `--env-file`, `--strict`).
#[derive(Clone, Debug, Default)]
pub struct ComposeOptions {
    /// The project (namespace); else the file's `name:`, else its directory's name.
    pub project: Option<String>,
    /// Instead of `.env` beside the first compose file.
    pub env_file: Option<PathBuf>,
    /// Keys dctl cannot honour are errors rather than warnings.
    pub strict: bool,
}

/// What `-f` named, read and translated.
#[derive(Debug, Default)]
pub struct Manifests {
    pub documents: Vec<Document>,
    /// What the compose translation could not honour (errors under `--strict`).
    pub warnings: Vec<ManifestError>,
    /// The compose project the files held, if any: its namespace and stack label.
    pub stack: Option<String>,
}

/// Every object in `paths`, in order: a file is read whole whatever its name; a directory
/// contributes its `*.yaml`, `*.yml` and `*.json` files sorted by name, and its
/// subdirectories' only when `recursive`; `-` reads standard input. Compose files are
/// translated with the default options; their warnings are dropped.
///
/// # Errors
/// Every problem at once: paths that do not exist or cannot be read, directories without
/// manifests, every decoding and validation error of every file, and objects defined twice.
pub fn read_manifests(
    paths: &[PathBuf],
    recursive: bool,
) -> Result<Vec<Document>, Vec<ManifestError>> {
    read_manifests_from(
        paths,
        recursive,
        &ComposeOptions::default(),
        &mut io::stdin().lock(),
    )
    .map(|manifests| manifests.documents)
}

/// `read_manifests`, translating compose files (several merge into one project, in the
/// order given, as `docker compose -f a -f b` does) with `compose`'s options.
///
/// # Errors
/// As `read_manifests`, plus every translation error of the compose files.
pub fn read_manifests_and_compose(
    paths: &[PathBuf],
    recursive: bool,
    compose: &ComposeOptions,
) -> Result<Manifests, Vec<ManifestError>> {
    read_manifests_from(paths, recursive, compose, &mut io::stdin().lock())
}

/// `read_manifests_and_compose` with standard input given, so tests can supply it.
fn read_manifests_from(
    paths: &[PathBuf],
    recursive: bool,
    compose: &ComposeOptions,
    stdin: &mut dyn Read,
) -> Result<Manifests, Vec<ManifestError>> {
    // Read results in the order given, so errors come out in the order of the files.
    let mut sources: Vec<Result<(String, String), ManifestError>> = Vec::new();
    for path in paths {
        if path.as_os_str() == STDIN {
            let mut text = String::new();
            match stdin.read_to_string(&mut text) {
                Ok(_) => sources.push(Ok(("<stdin>".to_string(), text))),
                Err(err) => sources.push(Err(ManifestError::file("<stdin>", describe(&err)))),
            }
            continue;
        }
        match fs::metadata(path) {
            Err(err) => sources.push(Err(ManifestError::file(shown(path), describe(&err)))),
            Ok(meta) if meta.is_dir() => {
                let mut files = Vec::new();
                let mut skipped_dirs = false;
                if let Err(err) = manifest_files(path, recursive, &mut files, &mut skipped_dirs) {
                    sources.push(Err(err));
                } else if files.is_empty() {
                    let hint = if skipped_dirs {
                        " (it has subdirectories: -R reads them too)"
                    } else {
                        ""
                    };
                    sources.push(Err(ManifestError::file(
                        shown(path),
                        format!("no *.yaml, *.yml or *.json files in this directory{hint}"),
                    )));
                }
                sources.extend(files.iter().map(|file| read_text(file)));
            }
            Ok(_) => sources.push(read_text(path)),
        }
    }

    let mut manifests = Manifests::default();
    let mut errors = Vec::new();
    let mut compose_files = Vec::new();
    for source in sources {
        match source {
            Ok((name, text)) if compose::is_compose(&text) => {
                compose_files.push(SourceFile { name, text });
            }
            Ok((name, text)) => match decode(&name, &text) {
                Ok(docs) => manifests.documents.extend(docs),
                Err(errs) => errors.extend(errs),
            },
            Err(err) => errors.push(err),
        }
    }
    if !compose_files.is_empty() {
        match translate_compose(&compose_files, compose) {
            Ok(translation) => {
                manifests.documents.extend(translation.documents);
                manifests.warnings = translation.warnings;
                manifests.stack = Some(translation.project);
            }
            Err(errs) => errors.extend(errs),
        }
    }
    errors.extend(check_duplicates(&manifests.documents));
    if errors.is_empty() {
        Ok(manifests)
    } else {
        Err(errors)
    }
}

/// Translates the compose files: variables from the process environment, then `.env`
/// beside the first file (or `--env-file`); paths relative to the first file's directory.
fn translate_compose(
    files: &[SourceFile],
    options: &ComposeOptions,
) -> Result<compose::Translation, Vec<ManifestError>> {
    let first = Path::new(&files[0].name);
    let directory = match first.parent() {
        Some(parent) if files[0].name != "<stdin>" && !parent.as_os_str().is_empty() => {
            parent.to_path_buf()
        }
        _ => PathBuf::from("."),
    };
    // The directory's own name is the default project: `.` must become its real name.
    let directory = fs::canonicalize(&directory).unwrap_or(directory);
    let dotenv_path = options
        .env_file
        .clone()
        .unwrap_or_else(|| directory.join(".env"));
    let dotenv = match fs::read(&dotenv_path) {
        Ok(bytes) => Some(SourceFile {
            name: shown(&dotenv_path),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }),
        // `.env` is optional; a named --env-file is not.
        Err(err) if options.env_file.is_some() => {
            return Err(vec![ManifestError::file(
                shown(&dotenv_path),
                describe(&err),
            )]);
        }
        Err(_) => None,
    };
    let environment = |name: &str| std::env::var(name).ok();
    let read_file = |path: &Path| fs::read_to_string(path).map_err(|err| describe(&err));
    let project = options.project.clone();
    compose::translate(
        files,
        &compose::Options {
            project,
            directory,
            environment: &environment,
            dotenv,
            read_file: &read_file,
            strict: options.strict,
        },
    )
}

/// Appends the manifest files under `dir` to `files` in kubectl's order (entries sorted by
/// name, a subdirectory's files where its name sorts). Symlinked directories are not
/// followed, so a link loop cannot recurse forever.
fn manifest_files(
    dir: &Path,
    recursive: bool,
    files: &mut Vec<PathBuf>,
    skipped_dirs: &mut bool,
) -> Result<(), ManifestError> {
    let read_error = |err: io::Error| ManifestError::file(shown(dir), describe(&err));
    let mut entries = fs::read_dir(dir)
        .map_err(read_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error)?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let is_dir = entry.file_type().map_err(read_error)?.is_dir();
        if is_dir {
            if recursive {
                manifest_files(&path, recursive, files, skipped_dirs)?;
            } else {
                *skipped_dirs = true;
            }
        } else if has_manifest_extension(&path) && path.is_file() {
            files.push(path);
        }
    }
    Ok(())
}

fn has_manifest_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| EXTENSIONS.contains(&ext))
}

/// The file's name as shown and its text.
fn read_text(path: &Path) -> Result<(String, String), ManifestError> {
    let bytes = fs::read(path).map_err(|err| ManifestError::file(shown(path), describe(&err)))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ManifestError::file(shown(path), "cannot read: the file is not UTF-8 text"))?;
    Ok((shown(path), text))
}

/// A path as the user wrote it (or as it was found under the directory they wrote).
fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// An I/O error in words that do not repeat the path.
fn describe(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::NotFound => "no such file or directory".to_string(),
        io::ErrorKind::PermissionDenied => "cannot read: permission denied".to_string(),
        _ => format!("cannot read: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(name: &str) -> String {
        format!("apiVersion: dctl/v1\nkind: Network\nmetadata: {{name: {name}}}\n")
    }

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn read(paths: &[PathBuf], recursive: bool) -> Result<Vec<Document>, Vec<String>> {
        read_manifests_from(
            paths,
            recursive,
            &ComposeOptions::default(),
            &mut io::empty(),
        )
        .map(|manifests| manifests.documents)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect())
    }

    /// (source relative to `dir`, object name) of each document.
    fn summary(dir: &Path, docs: &[Document]) -> Vec<(String, String)> {
        let prefix = format!("{}/", dir.display());
        docs.iter()
            .map(|d| {
                let source = d.source.strip_prefix(&prefix).unwrap_or(&d.source);
                (source.to_string(), d.object.meta().name.clone())
            })
            .collect()
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn directory_reads_manifest_files_sorted_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "b.yaml",
            &format!("{}---\n{}", network("b1"), network("b2")),
        );
        write(root, "a.yml", &network("a"));
        write(
            root,
            "c.json",
            r#"{"apiVersion": "dctl/v1", "kind": "Network", "metadata": {"name": "c"}}"#,
        );
        write(root, "notes.txt", "not a manifest");
        write(root, "sub/d.yaml", &network("d"));

        let docs = read(&[root.to_path_buf()], false).unwrap();
        assert_eq!(
            summary(root, &docs),
            owned(&[
                ("a.yml", "a"),
                ("b.yaml", "b1"),
                ("b.yaml", "b2"),
                ("c.json", "c")
            ])
        );
        assert_eq!(
            docs.iter().map(|d| d.index).collect::<Vec<_>>(),
            [1, 1, 2, 1]
        );

        let docs = read(&[root.to_path_buf()], true).unwrap();
        assert_eq!(
            summary(root, &docs),
            owned(&[
                ("a.yml", "a"),
                ("b.yaml", "b1"),
                ("b.yaml", "b2"),
                ("c.json", "c"),
                ("sub/d.yaml", "d"),
            ])
        );
    }

    #[test]
    fn a_named_file_is_read_whatever_its_extension() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "manifest.txt", &network("plain"));
        let docs = read(&[dir.path().join("manifest.txt")], false).unwrap();
        assert_eq!(
            summary(dir.path(), &docs),
            owned(&[("manifest.txt", "plain")])
        );
    }

    #[test]
    fn dash_reads_stdin() {
        let mut stdin = io::Cursor::new(network("from-stdin"));
        let docs = read_manifests_from(
            &[PathBuf::from("-")],
            false,
            &ComposeOptions::default(),
            &mut stdin,
        )
        .unwrap()
        .documents;
        assert_eq!(docs.len(), 1);
        assert_eq!(
            (docs[0].source.as_str(), docs[0].object.meta().name.as_str()),
            ("<stdin>", "from-stdin")
        );
    }

    #[test]
    fn missing_paths_and_empty_directories_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "only/sub/x.yaml", &network("x"));
        fs::create_dir(root.join("empty")).unwrap();
        let errors = read(
            &[
                root.join("nope.yaml"),
                root.join("only"),
                root.join("empty"),
            ],
            false,
        )
        .unwrap_err();
        let r = root.display();
        assert_eq!(
            errors,
            [
                format!("{r}/nope.yaml: no such file or directory"),
                format!(
                    "{r}/only: no *.yaml, *.yml or *.json files in this directory \
                     (it has subdirectories: -R reads them too)"
                ),
                format!("{r}/empty: no *.yaml, *.yml or *.json files in this directory"),
            ]
        );
        // With -R the subdirectory's file is found; the empty directory stays an error.
        let errors = read(&[root.join("only"), root.join("empty")], true).unwrap_err();
        assert_eq!(
            errors,
            [format!(
                "{r}/empty: no *.yaml, *.yml or *.json files in this directory"
            )]
        );
    }

    #[test]
    fn reports_errors_of_every_file_and_duplicates_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "a.yaml",
            &format!("{}---\n{}", network("web"), network("db")),
        );
        write(root, "b.yaml", &network("web"));
        write(
            root,
            "c.yaml",
            "apiVersion: dctl/v1\nkind: Netwrk\nmetadata: {name: x}\n",
        );
        write(root, "d.yaml", "just a string\n");
        fs::write(root.join("e.yaml"), [0xff, 0x00, 0x41]).unwrap();
        let errors = read(&[root.to_path_buf()], false).unwrap_err();
        let r = root.display();
        assert_eq!(
            errors,
            [
                format!(
                    "{r}/c.yaml: document 1 (line 2): kind: unknown kind \"Netwrk\", \
                     expected one of: Service, Task, Node, Network, Event, GitSync, Endpoints, ServiceRevision"
                ),
                format!(
                    "{r}/d.yaml: document 1 (line 1): a manifest must be an object with \
                     apiVersion, kind and metadata"
                ),
                format!("{r}/e.yaml: cannot read: the file is not UTF-8 text"),
                format!(
                    "{r}/b.yaml: document 1 (line 1): metadata.name: Network default/web is \
                     defined twice: first in {r}/a.yaml document 1 (line 1)"
                ),
            ]
        );
    }

    #[test]
    fn compose_files_merge_into_one_project_with_dotenv_beside_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("My_Shop");
        write(
            &root,
            "compose.yml",
            "services:\n  web:\n    image: web:${TAG}\n    env_file: web.env\n",
        );
        write(
            &root,
            "override.yml",
            "services:\n  web:\n    deploy: {replicas: 2}\n",
        );
        write(&root, ".env", "TAG=7\n");
        write(&root, "web.env", "GREETING=hi\n");
        write(&root, "extra.yaml", &network("other"));
        let paths = [
            root.join("compose.yml"),
            root.join("override.yml"),
            root.join("extra.yaml"),
        ];
        let manifests =
            read_manifests_from(&paths, false, &ComposeOptions::default(), &mut io::empty())
                .unwrap();
        assert_eq!(manifests.stack.as_deref(), Some("my-shop"));
        let names: Vec<(String, String)> = manifests
            .documents
            .iter()
            .map(|d| {
                let meta = d.object.meta();
                (meta.namespace().to_string(), meta.name.clone())
            })
            .collect();
        assert_eq!(
            names,
            [
                ("default".to_string(), "other".to_string()),
                ("my-shop".to_string(), "default".to_string()),
                ("my-shop".to_string(), "web".to_string()),
            ]
        );
        let dctl_apis::AnyObject::Service(web) = &manifests.documents[2].object else {
            panic!("not a service");
        };
        assert_eq!(web.spec.template.image, "web:7");
        assert_eq!(web.spec.replicas, Some(2));
        assert_eq!(web.spec.template.env[0].value, "hi");

        // -p and --env-file override; a named --env-file must exist.
        let options = ComposeOptions {
            project: Some("shop".into()),
            env_file: Some(root.join("missing.env")),
            strict: false,
        };
        let errors =
            read_manifests_from(&paths[..1], false, &options, &mut io::empty()).unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            format!(
                "{}: no such file or directory",
                root.join("missing.env").display()
            )
        );
    }
}
