//! A compose service → a dctl Service: the translator's core and the container's keys;
//! ports, storage, healthcheck, deploy and depends_on have files of their own.

use std::collections::{BTreeMap, BTreeSet};

use super::interpolate::Variables;
use super::network::DEFAULT_NETWORK;
use super::warnings::Diagnostics;
use super::yaml::{Key, Node, Value};
use super::{listed, normalize_name, project_labels, Options, LABEL_SERVICE};
use crate::meta::ObjectMeta;
use crate::resource::AnyObject;
use crate::service::{Service, ServiceSpec};
use crate::template::{EnvVar, NetworkAttachment, Ulimit};

/// Where a translated object came from: validation errors are reported there.
#[derive(Clone, Debug)]
pub struct Origin {
    pub file: usize,
    pub line: usize,
    /// `services.web`
    pub path: String,
}

impl Origin {
    pub fn of_key(key: &Key, path: &str) -> Self {
        Origin {
            file: key.file,
            line: key.line,
            path: path.to_string(),
        }
    }

    pub fn node(&self) -> Node {
        Node {
            file: self.file,
            line: self.line,
            value: Value::Null,
        }
    }
}

/// Service keys read elsewhere or deliberately without effect.
const IGNORED: [&str; 2] = ["build", "pull_policy"];

/// Keys dctl cannot honour, with what to do instead.
const UNSUPPORTED: [(&str, &str); 25] = [
    ("container_name", "dctl names containers dctl.PROJECT.TASK"),
    ("network_mode", "tasks join the service's networks"),
    (
        "links",
        "services reach each other by name on a shared network",
    ),
    ("external_links", ""),
    (
        "secrets",
        "dctl has no secrets yet; use environment or a bind mount",
    ),
    ("configs", "dctl has no configs yet; use a bind mount"),
    ("privileged", ""),
    ("devices", ""),
    ("dns", ""),
    ("dns_search", ""),
    ("dns_opt", ""),
    ("logging", "dctl logs reads Docker's default json-file logs"),
    ("profiles", "every service is applied"),
    ("security_opt", ""),
    ("shm_size", ""),
    ("stdin_open", ""),
    ("tty", ""),
    ("pid", ""),
    ("ipc", ""),
    ("domainname", ""),
    ("mac_address", ""),
    ("volumes_from", "name the volumes in each service"),
    ("extends", "merge files with several -f instead"),
    ("develop", ""),
    ("annotations", ""),
];

pub(super) struct Translator<'a> {
    pub project: &'a str,
    pub diags: &'a mut Diagnostics,
    pub options: &'a Options<'a>,
    pub variables: &'a dyn Variables,
    /// Compose network name → dctl Network name, for the networks the project defines.
    pub networks: BTreeMap<String, String>,
    /// Compose volume name → Docker volume name.
    pub volumes: BTreeMap<String, String>,
    /// Compose service name → dctl Service name.
    pub services: BTreeMap<String, String>,
}

impl Translator<'_> {
    /// Every object of the project: networks first, then services.
    pub fn translate(&mut self, root: &Node) -> Vec<(AnyObject, Origin)> {
        let Some(services) = root.get("services") else {
            self.diags.file_error("no services: defined");
            return Vec::new();
        };
        let Some(entries) = self.mapping(services, "services") else {
            return Vec::new();
        };
        if entries.is_empty() {
            self.diags.error(services, "services", "defines no service");
        }
        let mut taken = BTreeMap::new();
        for (key, _) in entries {
            let name = normalize_name(&key.name);
            if let Err(message) = crate::validation::check_dns1123_label(&name) {
                let path = format!("services.{}", key.name);
                self.diags.key_error(
                    key,
                    &path,
                    format!("service name {:?}: {message}", key.name),
                );
            } else if let Some(other) = taken.insert(name.clone(), key.name.clone()) {
                let path = format!("services.{}", key.name);
                let message = format!(
                    "services {other:?} and {:?} both become dctl service {name:?}",
                    key.name
                );
                self.diags.key_error(key, &path, message);
            }
            self.services.insert(key.name.clone(), name);
        }
        let need_default = entries.iter().any(|(_, s)| s.get("networks").is_none());
        self.volumes(root);
        let mut objects = self.networks(root, need_default);
        for (key, node) in entries {
            if let Some(object) = self.service(key, node) {
                objects.push(object);
            }
        }
        self.check_cycles(entries);
        super::depends_on::run_once_by_default(&mut objects, entries);
        objects
    }

    fn service(&mut self, key: &Key, node: &Node) -> Option<(AnyObject, Origin)> {
        let path = format!("services.{}", key.name);
        let entries = self.mapping(node, &path)?;
        let name = self.services.get(&key.name)?.clone();
        let mut spec = ServiceSpec::default();
        let mut meta = ObjectMeta::named(self.project, &name);
        meta.labels = project_labels(self.project);
        meta.labels
            .insert(LABEL_SERVICE.to_string(), key.name.clone());
        spec.template.labels = meta.labels.clone();
        let mut env_file_vars: Vec<(String, String)> = Vec::new();
        let mut environment: Vec<(String, String)> = Vec::new();
        let mut restart = None;
        let mut networks_seen = false;
        if node.get("image").is_none() {
            match node.get("build") {
                Some(build) => self.diags.error(
                    build,
                    &format!("{path}.build"),
                    "dctl runs images and does not build them: build it first (docker build -t NAME .) and set image: NAME",
                ),
                None => self.diags.error(node, &format!("{path}.image"), "required: the image the service runs"),
            }
        }
        for (field, value) in entries {
            let at = format!("{path}.{}", field.name);
            let template = &mut spec.template;
            match field.name.as_str() {
                "image" => template.image = self.string(value, &at).unwrap_or_default(),
                "entrypoint" => template.command = self.command(value, &at),
                "command" => template.args = self.command(value, &at),
                "environment" => environment = self.environment(value, &at),
                "env_file" => env_file_vars = self.env_files(value, &at),
                "labels" => {
                    for (label, v) in self.key_values(value, &at) {
                        template.labels.insert(label, v);
                    }
                }
                "ports" => self.ports(value, &at, &mut spec),
                "expose" => self.expose(value, &at, &mut spec.template.ports),
                "networks" => {
                    networks_seen = true;
                    spec.template.networks = self.service_networks(value, &at);
                }
                "volumes" => self.service_volumes(value, &at, &mut spec.template.mounts),
                "tmpfs" => self.tmpfs(value, &at, &mut spec.template.mounts),
                "healthcheck" => spec.template.probes = self.healthcheck(value, &at),
                "deploy" => self.deploy(value, &at, &mut spec, &mut meta),
                "restart" => restart = Some((value, at)),
                "depends_on" => spec.depends_on = self.depends_on(value, &at),
                "scale" => spec.replicas = self.number(value, &at),
                "user" => template.user = self.string(value, &at),
                "working_dir" => template.working_dir = self.string(value, &at),
                "stop_signal" => template.stop_signal = self.string(value, &at),
                "stop_grace_period" => template.stop_grace_period = self.duration(value, &at),
                "hostname" => template.hostname = self.string(value, &at),
                "extra_hosts" => template.extra_hosts = self.extra_hosts(value, &at),
                "init" => template.init = self.boolean(value, &at),
                "read_only" => template.read_only = self.boolean(value, &at).unwrap_or(false),
                "ulimits" => template.ulimits = self.ulimits(value, &at),
                "sysctls" => template.sysctls = self.key_values(value, &at).into_iter().collect(),
                "cap_add" => template.cap_add = self.strings(value, &at),
                "cap_drop" => template.cap_drop = self.strings(value, &at),
                "platform" => {
                    if let Some(platform) = self.platform(value, &at) {
                        spec.placement.platforms = vec![platform];
                    }
                }
                "mem_limit" | "mem_reservation" | "cpus" => {
                    self.legacy_resources(field, value, &at, &mut spec)
                }
                name if IGNORED.contains(&name) || name.starts_with("x-") => {}
                name => match UNSUPPORTED.iter().find(|(key, _)| *key == name) {
                    Some((_, why)) => self.diags.unsupported(field, &at, why),
                    None => self.diags.unsupported(field, &at, "unknown service key"),
                },
            }
        }
        if let Some((value, at)) = restart {
            // deploy.restart_policy, when given, wins (as in Swarm).
            if node
                .get("deploy")
                .and_then(|d| d.get("restart_policy"))
                .is_none()
            {
                self.restart(value, &at, &mut spec.template.restart_policy);
            }
        }
        // environment: wins over env_file, key by key.
        let mut env: Vec<(String, String)> = env_file_vars;
        for (name, value) in environment {
            env.retain(|(n, _)| *n != name);
            env.push((name, value));
        }
        spec.template.env = env
            .into_iter()
            .map(|(name, value)| EnvVar { name, value })
            .collect();
        if !networks_seen && self.networks.contains_key(DEFAULT_NETWORK) {
            spec.template.networks = vec![NetworkAttachment {
                name: self.networks[DEFAULT_NETWORK].clone(),
                aliases: Vec::new(),
            }];
        }
        // Peers know a service by its compose name too, where it differs from dctl's.
        if name != key.name {
            for network in &mut spec.template.networks {
                if !network.aliases.contains(&key.name) {
                    network.aliases.insert(0, key.name.clone());
                }
            }
        }
        let origin = Origin::of_key(key, &path);
        Some((AnyObject::Service(Service::new(meta, spec)), origin))
    }

    /// `environment` (a mapping once normalised); a name without a value takes the
    /// variable's value, and is left out when the variable is not set (as compose does).
    fn environment(&mut self, node: &Node, path: &str) -> Vec<(String, String)> {
        let Some(entries) = self.mapping(node, path) else {
            return Vec::new();
        };
        let mut env = Vec::new();
        for (key, value) in entries {
            let value = match &value.value {
                Value::Null => match self.variables.get(&key.name) {
                    Some(value) => value,
                    None => continue,
                },
                Value::Scalar { text, .. } => text.clone(),
                _ => {
                    self.diags.error(
                        value,
                        &format!("{path}.{}", key.name),
                        "must be a string, number or boolean",
                    );
                    continue;
                }
            };
            env.push((key.name.clone(), value));
        }
        env
    }

    /// The variables of every `env_file`, later files winning.
    fn env_files(&mut self, node: &Node, path: &str) -> Vec<(String, String)> {
        let items: Vec<Node> = match &node.value {
            Value::Seq(items) => items.clone(),
            _ => vec![node.clone()],
        };
        let mut vars: Vec<(String, String)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let (file, required) = match (&item.value, item.get("path")) {
                (Value::Scalar { text, .. }, _) => (text.clone(), true),
                (Value::Map(_), Some(p)) => {
                    let required = item.get("required").and_then(Node::as_bool).unwrap_or(true);
                    (p.as_str().unwrap_or_default().to_string(), required)
                }
                _ => {
                    self.diags
                        .error(item, &at, "expected a file name or {path, required}");
                    continue;
                }
            };
            let full = self.options.directory.join(&file);
            let text = match (self.options.read_file)(&full) {
                Ok(text) => text,
                Err(_) if !required => continue,
                Err(message) => {
                    self.diags
                        .error(item, &at, format!("cannot read env_file {file}: {message}"));
                    continue;
                }
            };
            match super::dotenv::parse(&text, &|_: &str| None) {
                Ok(parsed) => {
                    for (name, value) in parsed {
                        vars.retain(|(n, _)| *n != name);
                        vars.push((name, value));
                    }
                }
                Err(error) => self.diags.error(
                    item,
                    &at,
                    format!("{file}: line {}: {}", error.line, error.message),
                ),
            }
        }
        vars
    }

    /// `networks` (a mapping once normalised), with aliases.
    fn service_networks(&mut self, node: &Node, path: &str) -> Vec<NetworkAttachment> {
        let Some(entries) = self.mapping(node, path) else {
            return Vec::new();
        };
        let mut attachments = Vec::new();
        for (key, value) in entries {
            let at = format!("{path}.{}", key.name);
            let name = match self.networks.get(&key.name) {
                Some(name) => name.clone(),
                None => {
                    let known: BTreeSet<String> = self.networks.keys().cloned().collect();
                    self.diags.key_error(key, &at, format!("network {:?} is not defined under the top-level networks: (defined: {})", key.name, listed(&known)));
                    continue;
                }
            };
            let mut aliases = Vec::new();
            if let Some(fields) = value.as_map() {
                for (field, v) in fields {
                    let at = format!("{at}.{}", field.name);
                    match field.name.as_str() {
                        "aliases" => aliases = self.strings(v, &at),
                        _ => self.diags.unsupported(field, &at, ""),
                    }
                }
            }
            attachments.push(NetworkAttachment { name, aliases });
        }
        attachments
    }

    fn extra_hosts(&mut self, node: &Node, path: &str) -> Vec<String> {
        // A mapping `host: ip`, or a list of `host:ip` / `host=ip`.
        if let Some(entries) = node.as_map() {
            return entries
                .iter()
                .map(|(k, v)| format!("{}:{}", k.name, v.as_str().unwrap_or_default()))
                .collect();
        }
        self.strings(node, path)
            .into_iter()
            .map(|entry| match entry.split_once('=') {
                Some((host, ip)) => format!("{host}:{ip}"),
                None => entry,
            })
            .collect()
    }

    /// `nofile: 1024` or `nofile: {soft: 1024, hard: 2048}`.
    fn ulimits(&mut self, node: &Node, path: &str) -> Vec<Ulimit> {
        let Some(entries) = self.mapping(node, path) else {
            return Vec::new();
        };
        let mut ulimits = Vec::new();
        for (key, value) in entries {
            let at = format!("{path}.{}", key.name);
            let (soft, hard) = match value.as_map() {
                Some(_) => (
                    value.get("soft").and_then(|v| v.as_str()?.parse().ok()),
                    value.get("hard").and_then(|v| v.as_str()?.parse().ok()),
                ),
                None => {
                    let n = value.as_str().and_then(|s| s.parse().ok());
                    (n, n)
                }
            };
            match (soft, hard) {
                (Some(soft), Some(hard)) => ulimits.push(Ulimit {
                    name: key.name.clone(),
                    soft,
                    hard,
                }),
                _ => self
                    .diags
                    .error(value, &at, "expected a number or {soft, hard}"),
            }
        }
        ulimits
    }
}
