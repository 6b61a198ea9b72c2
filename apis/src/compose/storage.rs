//! `volumes:` and `tmpfs:` of a service → mounts.

use super::service::Translator;
use super::yaml::{Node, Value};
use crate::template::{Mount, MountType};

impl Translator<'_> {
    /// Short (`data:/data:ro`, `./src:/app`, `/cache`) and long (`{type, source, target,
    /// read_only}`) volume syntax.
    pub(super) fn service_volumes(&mut self, node: &Node, path: &str, mounts: &mut Vec<Mount>) {
        let Some(items) = self.sequence(node, path) else {
            return;
        };
        for (i, item) in items.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let mount = match &item.value {
                Value::Scalar { text, .. } => self.short_volume(item, &at, text),
                Value::Map(fields) => {
                    let mut mount = Mount::default();
                    let mut type_ = None;
                    for (field, v) in fields {
                        let at = format!("{at}.{}", field.name);
                        match field.name.as_str() {
                            "type" => type_ = self.string(v, &at),
                            "source" => mount.source = self.string(v, &at).unwrap_or_default(),
                            "target" => mount.target = self.string(v, &at).unwrap_or_default(),
                            "read_only" => mount.read_only = self.boolean(v, &at).unwrap_or(false),
                            "bind" | "volume" | "tmpfs" | "consistency" => {
                                self.diags.unsupported(field, &at, "")
                            }
                            _ => self.diags.unsupported(field, &at, "unknown volume key"),
                        }
                    }
                    match type_.as_deref() {
                        Some("volume") => {
                            mount.type_ = MountType::Volume;
                            mount.source = self.volume_name(item, &at, &mount.source);
                        }
                        Some("bind") => {
                            mount.type_ = MountType::Bind;
                            mount.source = self.host_path(&mount.source);
                        }
                        Some("tmpfs") => mount.type_ = MountType::Tmpfs,
                        _ => {
                            self.diags.error(
                                item,
                                &format!("{at}.type"),
                                "expected volume, bind or tmpfs",
                            );
                            continue;
                        }
                    }
                    Some(mount)
                }
                _ => {
                    self.diags.error(
                        item,
                        &at,
                        "expected SOURCE:TARGET[:MODE] or {type, source, target}",
                    );
                    None
                }
            };
            mounts.extend(mount);
        }
    }

    fn short_volume(&mut self, item: &Node, path: &str, text: &str) -> Option<Mount> {
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, mode) = match parts.as_slice() {
            [target] => ("", *target, ""),
            [source, target] => (*source, *target, ""),
            [source, target, mode] => (*source, *target, *mode),
            _ => {
                self.diags.error(
                    item,
                    path,
                    format!("invalid volume {text:?}: expected SOURCE:TARGET[:MODE]"),
                );
                return None;
            }
        };
        let mut read_only = false;
        for option in mode.split(',').filter(|o| !o.is_empty()) {
            match option {
                "ro" => read_only = true,
                "rw" => {}
                other => self
                    .diags
                    .warn(item, path, format!("volume option {other:?} ignored")),
            }
        }
        let is_path = source.starts_with(['/', '.', '~']);
        let mount = if source.is_empty() {
            Mount {
                type_: MountType::Volume,
                source: String::new(),
                target: target.to_string(),
                read_only,
            }
        } else if is_path {
            Mount {
                type_: MountType::Bind,
                source: self.host_path(source),
                target: target.to_string(),
                read_only,
            }
        } else {
            let source = self.volume_name(item, path, source);
            Mount {
                type_: MountType::Volume,
                source,
                target: target.to_string(),
                read_only,
            }
        };
        Some(mount)
    }

    /// The Docker volume of a named volume, which the file must declare.
    fn volume_name(&mut self, item: &Node, path: &str, name: &str) -> String {
        if name.is_empty() {
            return String::new();
        }
        match self.volumes.get(name) {
            Some(docker_name) => docker_name.clone(),
            None => {
                self.diags.error(
                    item,
                    path,
                    format!("volume {name:?} is not declared under the top-level volumes:"),
                );
                String::new()
            }
        }
    }

    /// A bind mount's host path: relative paths are relative to the first file's directory.
    fn host_path(&mut self, source: &str) -> String {
        if let Some(rest) = source.strip_prefix('~') {
            // The home directory is the reader's; keep the path as written for validation
            // to name, rather than guess.
            return format!("~{rest}");
        }
        let path = self.options.directory.join(source);
        // `./x` and `../x` as the path they name, without touching the filesystem.
        let mut clean = std::path::PathBuf::new();
        for component in path.components() {
            match component {
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir => {
                    clean.pop();
                }
                other => clean.push(other),
            }
        }
        clean.display().to_string()
    }

    /// `tmpfs: /run` or a list, each `PATH[:OPTIONS]`.
    pub(super) fn tmpfs(&mut self, node: &Node, path: &str, mounts: &mut Vec<Mount>) {
        for entry in self.strings(node, path) {
            let (target, options) = entry.split_once(':').unwrap_or((&entry, ""));
            if !options.is_empty() {
                self.diags
                    .warn(node, path, format!("tmpfs options {options:?} ignored"));
            }
            mounts.push(Mount {
                type_: MountType::Tmpfs,
                source: String::new(),
                target: target.to_string(),
                read_only: false,
            });
        }
    }
}
