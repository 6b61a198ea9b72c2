//! Top-level `networks:` and `volumes:`: Network objects, and volume names for mounts.

use std::collections::BTreeMap;

use super::service::{Origin, Translator};
use super::yaml::{Key, Node};
use super::{normalize_name, project_labels};
use crate::meta::ObjectMeta;
use crate::network::{Network, NetworkSpec};
use crate::resource::AnyObject;

/// The network services join when they name none, as compose's `PROJECT_default`.
pub const DEFAULT_NETWORK: &str = "default";

impl Translator<'_> {
    /// The Networks of the file's `networks:` (and `default` when a service needs it and
    /// the file does not define it); records each compose name's dctl name.
    pub(super) fn networks(&mut self, root: &Node, need_default: bool) -> Vec<(AnyObject, Origin)> {
        let mut objects = Vec::new();
        let mut defined_default = false;
        if let Some(networks) = root.get("networks") {
            let Some(entries) = self.mapping(networks, "networks") else {
                return objects;
            };
            for (key, value) in entries {
                defined_default |= key.name == DEFAULT_NETWORK;
                if let Some(object) = self.network(key, value) {
                    objects.push(object);
                }
            }
        }
        if need_default && !defined_default {
            let key = Key {
                name: DEFAULT_NETWORK.to_string(),
                file: 0,
                line: 1,
            };
            let node = Node::new(1, super::yaml::Value::Null);
            if let Some(object) = self.network(&key, &node) {
                objects.push(object);
            }
        }
        objects
    }

    fn network(&mut self, key: &Key, node: &Node) -> Option<(AnyObject, Origin)> {
        let path = format!("networks.{}", key.name);
        let name = normalize_name(&key.name);
        self.networks.insert(key.name.clone(), name.clone());
        let mut spec = NetworkSpec {
            labels: project_labels(self.project),
            ..NetworkSpec::default()
        };
        if !node.is_null() {
            let entries = self.mapping(node, &path)?;
            for (field, value) in entries {
                let at = format!("{path}.{}", field.name);
                match field.name.as_str() {
                    "driver" => {
                        let driver = self.string(value, &at)?;
                        if driver == "overlay" {
                            self.diags.warn(
                                value,
                                &at,
                                "the overlay driver needs Swarm: dctl creates a bridge network on each node",
                            );
                        } else {
                            spec.driver = driver;
                        }
                    }
                    "internal" => spec.internal = self.boolean(value, &at)?,
                    "attachable" => spec.attachable = self.boolean(value, &at)?,
                    "labels" => {
                        for (label, v) in self.key_values(value, &at) {
                            spec.labels.insert(label, v);
                        }
                    }
                    "ipam" => self.ipam(value, &at, &mut spec),
                    "external" => {
                        if self.boolean(value, &at)? {
                            // Not created here: a Network of that name must exist in the
                            // namespace already (applied from another manifest).
                            return None;
                        }
                    }
                    "driver_opts" | "enable_ipv6" | "name" => {
                        self.diags.unsupported(field, &at, "")
                    }
                    _ => self.diags.unsupported(field, &at, "unknown network key"),
                }
            }
        }
        let mut meta = ObjectMeta::named(self.project, &name);
        meta.labels = project_labels(self.project);
        let origin = Origin::of_key(key, &path);
        Some((AnyObject::Network(Network::new(meta, spec)), origin))
    }

    fn ipam(&mut self, node: &Node, path: &str, spec: &mut NetworkSpec) {
        let Some(entries) = self.mapping(node, path) else {
            return;
        };
        for (field, value) in entries {
            let at = format!("{path}.{}", field.name);
            match field.name.as_str() {
                "driver" if value.as_str() == Some("default") => {}
                "config" => {
                    let Some(configs) = self.sequence(value, &at) else {
                        continue;
                    };
                    if configs.len() > 1 {
                        self.diags.warn(
                            value,
                            &at,
                            "dctl networks have one address pool: only the first is used",
                        );
                    }
                    let Some(config) = configs.first() else {
                        continue;
                    };
                    let Some(config_entries) = self.mapping(config, &format!("{at}[0]")) else {
                        continue;
                    };
                    for (k, v) in config_entries {
                        let at = format!("{at}[0].{}", k.name);
                        match k.name.as_str() {
                            "subnet" => spec.subnet = self.string(v, &at),
                            "gateway" => spec.gateway = self.string(v, &at),
                            "ip_range" => spec.ip_range = self.string(v, &at),
                            _ => self.diags.unsupported(k, &at, ""),
                        }
                    }
                }
                _ => self.diags.unsupported(field, &at, ""),
            }
        }
    }

    /// Records the file's `volumes:`: a named volume `data` is Docker volume
    /// `PROJECT_data` (as compose names it), or its own name when external.
    pub(super) fn volumes(&mut self, root: &Node) {
        let Some(volumes) = root.get("volumes") else {
            return;
        };
        let Some(entries) = self.mapping(volumes, "volumes") else {
            return;
        };
        let mut names = BTreeMap::new();
        for (key, value) in entries {
            let path = format!("volumes.{}", key.name);
            let mut docker_name = format!("{}_{}", self.project, key.name);
            if let Some(fields) = value.as_map() {
                let mut custom_name = None;
                for (field, v) in fields {
                    let at = format!("{path}.{}", field.name);
                    match field.name.as_str() {
                        "external" => {
                            if self.boolean(v, &at) == Some(true) {
                                docker_name = key.name.clone();
                            }
                        }
                        "name" => custom_name = self.string(v, &at),
                        "driver" if v.as_str() == Some("local") => {}
                        _ => self.diags.unsupported(
                            field,
                            &at,
                            "Docker creates named volumes with the local driver on first use",
                        ),
                    }
                }
                if let Some(name) = custom_name {
                    docker_name = name;
                }
            } else if !value.is_null() {
                self.diags.error(value, &path, "must be a mapping or empty");
            }
            names.insert(key.name.clone(), docker_name);
        }
        self.volumes = names;
    }
}
