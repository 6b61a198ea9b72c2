//! Builds the Docker container for a Task: the one way a task's template becomes a container.
//!
//! [`plan`] is a pure function: the task runtime resolves the task's networks to Docker
//! network names first, then creates the container from [`ContainerPlan::create`] under
//! [`ContainerPlan::name`] and connects [`ContainerPlan::connect`] before starting it.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, Mount, MountType, NetworkingConfig,
    PortBinding, PortMap, ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum,
};
use dctl_apis::task::TaskPort;
use dctl_apis::template::MountType as TaskMountType;
use dctl_apis::{QuantityError, Task, TaskTemplate};

/// Every container dctl creates carries it, `true`.
pub const LABEL_MANAGED: &str = "dctl.managed";
/// The node whose agent owns the container; agents touch only their own.
pub const LABEL_NODE: &str = "dctl.node";
pub const LABEL_NAMESPACE: &str = "dctl.namespace";
pub const LABEL_SERVICE: &str = "dctl.service";
pub const LABEL_TASK: &str = "dctl.task";
/// The key a restarted agent adopts its containers by.
pub const LABEL_TASK_UID: &str = "dctl.task.uid";

/// Linux refuses longer host names; Docker passes the error on at start.
const MAX_HOSTNAME: usize = 63;

/// What to create, and what to connect before start.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerPlan {
    /// `dctl.<namespace>.<task>`: unique per engine, so a second create of the same task
    /// fails with a conflict instead of making a duplicate.
    pub name: String,
    pub create: ContainerCreateBody,
    /// The task's networks after the first, which Docker only attaches at create.
    pub connect: Vec<NetworkJoin>,
}

/// A Docker network a container joins, and its DNS aliases there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkJoin {
    pub network: String,
    pub aliases: Vec<String>,
}

impl NetworkJoin {
    pub fn endpoint(&self) -> EndpointSettings {
        EndpointSettings {
            aliases: Some(self.aliases.clone()),
            ..Default::default()
        }
    }
}

/// Why a task cannot become a container; validation normally refuses these earlier.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("task {task}: template.resources.limits.{field}: {source}")]
    Quantity {
        task: String,
        field: &'static str,
        #[source]
        source: QuantityError,
    },
    #[error("task {task}: template.resources.limits.{field}: {value} is too large for Docker")]
    TooLarge {
        task: String,
        field: &'static str,
        value: u64,
    },
    #[error(
        "task {task}: {resolved} Docker networks given for {wanted} template networks (a bug)"
    )]
    Networks {
        task: String,
        wanted: usize,
        resolved: usize,
    },
}

/// `dctl.<namespace>.<task-name>`, the container name of a task.
pub fn container_name(namespace: &str, task_name: &str) -> String {
    format!("dctl.{namespace}.{task_name}")
}

/// The contract's labels (docs/task-lifecycle.md) over the template's and the agent's extra
/// labels: neither can hide which node and task a container belongs to.
pub fn labels(
    task: &Task,
    node_name: &str,
    extra: &BTreeMap<String, String>,
) -> HashMap<String, String> {
    let meta = &task.metadata;
    let mut labels: HashMap<String, String> =
        task.spec.template.labels.clone().into_iter().collect();
    labels.extend(extra.clone());
    labels.extend([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_NODE.to_string(), node_name.to_string()),
        (LABEL_NAMESPACE.to_string(), meta.namespace().to_string()),
        (LABEL_SERVICE.to_string(), task.spec.service_name.clone()),
        (LABEL_TASK.to_string(), meta.name.clone()),
        (LABEL_TASK_UID.to_string(), meta.uid.clone()),
    ]);
    labels
}

/// The container for `task` on `node_name`. `networks[i]` is the Docker name of the
/// template's `networks[i]`; a task without networks runs on Docker's default bridge.
///
/// # Errors
/// A resource limit that does not parse or does not fit Docker's fields, or a `networks`
/// list that does not match the template's.
pub fn plan(
    task: &Task,
    node_name: &str,
    extra_labels: &BTreeMap<String, String>,
    networks: &[String],
) -> Result<ContainerPlan, PlanError> {
    let template = &task.spec.template;
    let task_name = &task.metadata.name;
    if networks.len() != template.networks.len() {
        return Err(PlanError::Networks {
            task: task_name.clone(),
            wanted: template.networks.len(),
            resolved: networks.len(),
        });
    }
    let mut joins = template
        .networks
        .iter()
        .zip(networks)
        .map(|(attachment, network)| {
            // The service name first, so peers find every task of a service by its name.
            let mut aliases = vec![task.spec.service_name.clone()];
            for alias in &attachment.aliases {
                if !aliases.contains(alias) {
                    aliases.push(alias.clone());
                }
            }
            aliases.retain(|a| !a.is_empty());
            NetworkJoin {
                network: network.clone(),
                aliases,
            }
        });
    let first = joins.next();
    let connect: Vec<NetworkJoin> = joins.collect();

    let non_empty = |list: &[String]| (!list.is_empty()).then(|| list.to_vec());
    let stop_timeout = template.stop_grace_period.map(|grace| {
        let grace = grace.as_std();
        // Docker counts whole seconds; round up so the task gets at least its period.
        let seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        i64::try_from(seconds).unwrap_or(i64::MAX)
    });
    let create = ContainerCreateBody {
        image: Some(template.image.clone()),
        hostname: Some(
            template
                .hostname
                .clone()
                .unwrap_or_else(|| hostname(task_name)),
        ),
        working_dir: template.working_dir.clone(),
        entrypoint: non_empty(&template.command),
        cmd: non_empty(&template.args),
        env: non_empty(
            &template
                .env
                .iter()
                .map(|var| format!("{}={}", var.name, var.value))
                .collect::<Vec<_>>(),
        ),
        exposed_ports: non_empty(
            &template
                .ports
                .iter()
                .map(|port| format!("{}/{}", port.container_port, port.protocol))
                .collect::<Vec<_>>(),
        ),
        user: template.user.clone().filter(|u| !u.is_empty()),
        stop_signal: template.stop_signal.clone(),
        stop_timeout,
        labels: Some(labels(task, node_name, extra_labels)),
        host_config: Some(host_config(
            task_name,
            template,
            &task.spec.published_ports,
            first.as_ref(),
        )?),
        networking_config: first.map(|join| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(join.network.clone(), join.endpoint())])),
        }),
        ..Default::default()
    };
    Ok(ContainerPlan {
        name: container_name(task.metadata.namespace(), task_name),
        create,
        connect,
    })
}

fn host_config(
    task_name: &str,
    template: &TaskTemplate,
    published: &[TaskPort],
    first_network: Option<&NetworkJoin>,
) -> Result<HostConfig, PlanError> {
    let limits = &template.resources.limits;
    let quantity = |field: &'static str, value: Result<Option<u64>, QuantityError>| {
        let value = value.map_err(|source| PlanError::Quantity {
            task: task_name.to_string(),
            field,
            source,
        })?;
        value
            .map(|v| {
                i64::try_from(v).map_err(|_| PlanError::TooLarge {
                    task: task_name.to_string(),
                    field,
                    value: v,
                })
            })
            .transpose()
    };
    let non_empty = |list: &[String]| (!list.is_empty()).then(|| list.to_vec());
    let mounts: Vec<Mount> = template
        .mounts
        .iter()
        .map(|mount| Mount {
            typ: Some(match mount.type_ {
                TaskMountType::Volume => MountType::VOLUME,
                TaskMountType::Bind => MountType::BIND,
                TaskMountType::Tmpfs => MountType::TMPFS,
            }),
            // An empty volume source is an anonymous volume; tmpfs has none.
            source: (!mount.source.is_empty()).then(|| mount.source.clone()),
            target: Some(mount.target.clone()),
            read_only: mount.read_only.then_some(true),
            ..Default::default()
        })
        .collect();
    Ok(HostConfig {
        nano_cpus: quantity("cpus", limits.nano_cpus())?,
        memory: quantity("memory", limits.memory_bytes())?,
        // Swarm's mapping of reservations: Docker's soft memory limit.
        memory_reservation: quantity("memory", template.resources.reservations.memory_bytes())?,
        mounts: (!mounts.is_empty()).then_some(mounts),
        // The first network is the container's primary one; without it Docker would put
        // the container on the default bridge and ignore the endpoint settings.
        network_mode: first_network.map(|join| join.network.clone()),
        port_bindings: port_bindings(published),
        // A task is never restarted in place: the service controller replaces it.
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        extra_hosts: non_empty(&template.extra_hosts),
        init: template.init,
        readonly_rootfs: template.read_only.then_some(true),
        ulimits: (!template.ulimits.is_empty()).then(|| {
            template
                .ulimits
                .iter()
                .map(|u| ResourcesUlimits {
                    name: Some(u.name.clone()),
                    soft: Some(u.soft),
                    hard: Some(u.hard),
                })
                .collect()
        }),
        sysctls: (!template.sysctls.is_empty())
            .then(|| template.sysctls.clone().into_iter().collect()),
        cap_add: non_empty(&template.cap_add),
        cap_drop: non_empty(&template.cap_drop),
        ..Default::default()
    })
}

/// Every template port published on an ephemeral port of the host's IPv4 addresses
/// (Docker picks it; the task runtime reports it in `Task.status.hostPorts`), for the
/// proxy to reach the task from any node. `0.0.0.0`, not the empty address: Docker 20.10
/// would pick different ports for IPv4 and IPv6.
/// The host bindings of the published ports: an ephemeral host port for the routing mesh,
/// the fixed one for a `host` mode publish (a container port may have both).
fn port_bindings(published: &[TaskPort]) -> Option<PortMap> {
    let mut bindings = PortMap::new();
    for port in published {
        let binding = PortBinding {
            host_ip: Some("0.0.0.0".to_string()),
            host_port: Some(port.host_port.map_or_else(String::new, |p| p.to_string())),
        };
        let key = format!("{}/{}", port.container_port, port.protocol);
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(binding);
    }
    (!bindings.is_empty()).then_some(bindings)
}

/// The task name, cut to what Linux accepts as a host name.
fn hostname(task_name: &str) -> String {
    let mut end = task_name.len().min(MAX_HOSTNAME);
    while !task_name.is_char_boundary(end) {
        end -= 1;
    }
    task_name[..end].trim_end_matches(['.', '-']).to_string()
}

#[cfg(test)]
mod tests {
    use dctl_apis::template::Protocol;
    use dctl_apis::Resource;
    use serde_json::json;

    use super::*;

    fn task(template: serde_json::Value) -> Task {
        let mut task: Task = serde_json::from_value(json!({
            "apiVersion": "dctl/v1", "kind": "Task",
            "metadata": {"name": "web.1.abcde", "namespace": "demo", "uid": "u-1"},
            "spec": {"template": template, "serviceName": "web", "slot": 1, "nodeName": "n1"},
        }))
        .unwrap();
        task.apply_defaults();
        task
    }

    fn plan_of(template: serde_json::Value, networks: &[&str]) -> ContainerPlan {
        let networks: Vec<String> = networks.iter().map(ToString::to_string).collect();
        plan(&task(template), "n1", &BTreeMap::new(), &networks).unwrap()
    }

    #[test]
    fn a_minimal_task() {
        let plan = plan_of(json!({"image": "web:1"}), &[]);
        assert_eq!(plan.name, "dctl.demo.web.1.abcde");
        let create = &plan.create;
        assert_eq!(create.image.as_deref(), Some("web:1"));
        assert_eq!(create.hostname.as_deref(), Some("web.1.abcde"));
        // The image's own entrypoint and command stay when the template sets none.
        assert_eq!((&create.entrypoint, &create.cmd), (&None, &None));
        assert_eq!(create.stop_signal.as_deref(), Some("SIGTERM"));
        assert_eq!(create.stop_timeout, Some(10));
        assert_eq!(create.networking_config, None);
        let host = create.host_config.as_ref().unwrap();
        assert_eq!(
            (host.nano_cpus, host.memory, &host.mounts),
            (None, None, &None)
        );
        assert_eq!(host.network_mode, None);
        assert_eq!(
            host.restart_policy.as_ref().unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
        assert!(plan.connect.is_empty());
    }

    #[test]
    fn command_args_env_ports_user_and_stop_settings() {
        let cases: Vec<(serde_json::Value, ContainerCreateBody)> = vec![
            (
                json!({"image": "x", "command": ["/web"], "args": ["--port", "8080"]}),
                ContainerCreateBody {
                    entrypoint: Some(vec!["/web".into()]),
                    cmd: Some(vec!["--port".into(), "8080".into()]),
                    ..Default::default()
                },
            ),
            (
                json!({"image": "x", "args": ["--port", "9090"], "env": [{"name": "A", "value": "1"}, {"name": "EMPTY"}]}),
                ContainerCreateBody {
                    cmd: Some(vec!["--port".into(), "9090".into()]),
                    env: Some(vec!["A=1".into(), "EMPTY=".into()]),
                    ..Default::default()
                },
            ),
            (
                json!({"image": "x", "ports": [{"containerPort": 8080}, {"containerPort": 53, "protocol": "udp"}],
                       "user": "1000:1000", "stopSignal": "SIGINT", "stopGracePeriod": "1500ms"}),
                ContainerCreateBody {
                    exposed_ports: Some(vec!["8080/tcp".into(), "53/udp".into()]),
                    user: Some("1000:1000".into()),
                    stop_signal: Some("SIGINT".into()),
                    stop_timeout: Some(2),
                    ..Default::default()
                },
            ),
            (
                json!({"image": "x", "stopGracePeriod": "0s"}),
                ContainerCreateBody {
                    stop_timeout: Some(0),
                    ..Default::default()
                },
            ),
        ];
        for (template, expected) in cases {
            let create = plan_of(template.clone(), &[]).create;
            let seen = (
                &create.entrypoint,
                &create.cmd,
                &create.env,
                &create.exposed_ports,
                &create.user,
            );
            let wanted = (
                &expected.entrypoint,
                &expected.cmd,
                &expected.env,
                &expected.exposed_ports,
                &expected.user,
            );
            assert_eq!(seen, wanted, "{template}");
            if expected.stop_signal.is_some() {
                assert_eq!(create.stop_signal, expected.stop_signal, "{template}");
            }
            // The default grace period (10s) unless the case sets one.
            let timeout = expected.stop_timeout.or(Some(10));
            assert_eq!(create.stop_timeout, timeout, "{template}");
        }
    }

    #[test]
    fn resource_limits() {
        // Resources, then the NanoCpus, Memory and MemoryReservation Docker gets.
        type Case = (serde_json::Value, Option<i64>, Option<i64>, Option<i64>);
        let cases: Vec<Case> = vec![
            (json!({}), None, None, None),
            (
                json!({"limits": {"cpus": "0.5", "memory": "128Mi"}}),
                Some(500_000_000),
                Some(128 << 20),
                None,
            ),
            (
                json!({"limits": {"cpus": "250m", "memory": "1G"}, "reservations": {"cpus": "100m", "memory": "32Mi"}}),
                Some(250_000_000),
                Some(1_000_000_000),
                Some(32 << 20),
            ),
            (
                json!({"limits": {"cpus": 2}}),
                Some(2_000_000_000),
                None,
                None,
            ),
        ];
        for (resources, cpus, memory, reservation) in cases {
            let plan = plan_of(json!({"image": "x", "resources": resources}), &[]);
            let host = plan.create.host_config.unwrap();
            assert_eq!(
                (host.nano_cpus, host.memory, host.memory_reservation),
                (cpus, memory, reservation),
                "{resources}"
            );
        }
        let bad = task(json!({"image": "x", "resources": {"limits": {"memory": "128m"}}}));
        let error = plan(&bad, "n1", &BTreeMap::new(), &[]).unwrap_err();
        assert!(
            error.to_string().starts_with(
                "task web.1.abcde: template.resources.limits.memory: invalid quantity \"128m\""
            ),
            "{error}"
        );
    }

    #[test]
    fn mounts() {
        let plan = plan_of(
            json!({"image": "x", "mounts": [
                {"type": "volume", "source": "data", "target": "/data"},
                {"target": "/cache"},
                {"type": "bind", "source": "/etc/ssl", "target": "/ssl", "readOnly": true},
                {"type": "tmpfs", "target": "/tmp"},
            ]}),
            &[],
        );
        let mounts = plan.create.host_config.unwrap().mounts.unwrap();
        let seen: Vec<_> = mounts
            .iter()
            .map(|m| {
                (
                    m.typ.unwrap(),
                    m.source.as_deref(),
                    m.target.as_deref().unwrap(),
                    m.read_only,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (MountType::VOLUME, Some("data"), "/data", None),
                (MountType::VOLUME, None, "/cache", None),
                (MountType::BIND, Some("/etc/ssl"), "/ssl", Some(true)),
                (MountType::TMPFS, None, "/tmp", None),
            ]
        );
    }

    #[test]
    fn labels_tie_the_container_to_its_task_and_node() {
        let extra = BTreeMap::from([
            ("dctl.test".to_string(), "run-1".to_string()),
            // An extra label cannot claim the container for another node.
            (LABEL_NODE.to_string(), "elsewhere".to_string()),
        ]);
        let plan = plan(&task(json!({"image": "x"})), "n1", &extra, &[]).unwrap();
        let labels: BTreeMap<_, _> = plan.create.labels.unwrap().into_iter().collect();
        let expected: BTreeMap<String, String> = [
            ("dctl.managed", "true"),
            ("dctl.node", "n1"),
            ("dctl.namespace", "demo"),
            ("dctl.service", "web"),
            ("dctl.task", "web.1.abcde"),
            ("dctl.task.uid", "u-1"),
            ("dctl.test", "run-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(labels, expected);
    }

    #[test]
    fn networks_and_aliases() {
        let template = json!({"image": "x", "networks": [
            {"name": "backend", "aliases": ["api", "web"]},
            {"name": "frontend"},
            {"name": "metrics", "aliases": ["scrape"]},
        ]});
        let planned = plan_of(
            template.clone(),
            &["demo_backend", "demo_frontend", "demo_metrics"],
        );
        let host = planned.create.host_config.as_ref().unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("demo_backend"));
        let endpoints = planned
            .create
            .networking_config
            .unwrap()
            .endpoints_config
            .unwrap();
        assert_eq!(
            endpoints.len(),
            1,
            "Docker attaches only one network at create"
        );
        // The service name comes first and is not repeated.
        assert_eq!(
            endpoints["demo_backend"].aliases,
            Some(vec!["web".to_string(), "api".to_string()])
        );
        assert_eq!(
            planned.connect,
            [
                NetworkJoin {
                    network: "demo_frontend".into(),
                    aliases: vec!["web".into()]
                },
                NetworkJoin {
                    network: "demo_metrics".into(),
                    aliases: vec!["web".into(), "scrape".into()]
                },
            ]
        );
        let error = plan(&task(template), "n1", &BTreeMap::new(), &["one".into()]).unwrap_err();
        assert!(matches!(
            error,
            PlanError::Networks {
                wanted: 3,
                resolved: 1,
                ..
            }
        ));
    }

    #[test]
    fn container_settings_beyond_the_process() {
        let plan = plan_of(
            json!({"image": "x", "workingDir": "/app", "hostname": "db-primary",
                   "extraHosts": ["gw:10.0.0.1"], "init": true, "readOnly": true,
                   "ulimits": [{"name": "nofile", "soft": 1024, "hard": 2048}],
                   "sysctls": {"net.core.somaxconn": "1024"},
                   "capAdd": ["NET_ADMIN"], "capDrop": ["ALL"]}),
            &[],
        );
        let create = &plan.create;
        assert_eq!(create.working_dir.as_deref(), Some("/app"));
        assert_eq!(create.hostname.as_deref(), Some("db-primary"));
        let host = create.host_config.as_ref().unwrap();
        assert_eq!(host.extra_hosts, Some(vec!["gw:10.0.0.1".to_string()]));
        assert_eq!((host.init, host.readonly_rootfs), (Some(true), Some(true)));
        assert_eq!(
            host.ulimits,
            Some(vec![ResourcesUlimits {
                name: Some("nofile".into()),
                soft: Some(1024),
                hard: Some(2048)
            }])
        );
        assert_eq!(
            host.sysctls,
            Some(HashMap::from([(
                "net.core.somaxconn".to_string(),
                "1024".to_string()
            )]))
        );
        assert_eq!(
            (&host.cap_add, &host.cap_drop),
            (
                &Some(vec!["NET_ADMIN".to_string()]),
                &Some(vec!["ALL".to_string()])
            )
        );
        let bare = plan_of(json!({"image": "x"}), &[]).create;
        let host = bare.host_config.unwrap();
        assert_eq!(
            (
                bare.working_dir,
                host.init,
                host.readonly_rootfs,
                host.cap_add
            ),
            (None, None, None, None)
        );
    }

    #[test]
    fn host_names_fit_linux() {
        assert_eq!(hostname("web.1.abcde"), "web.1.abcde");
        let long = format!("{}.1.abcde", "s".repeat(70));
        assert_eq!(hostname(&long), "s".repeat(63));
        let dotted = format!("{}.1.abcde", "s".repeat(62));
        assert_eq!(hostname(&dotted), "s".repeat(62));
    }

    #[test]
    fn only_published_ports_get_host_ports() {
        let template = json!({"image": "x", "ports": [
            {"containerPort": 8080}, {"containerPort": 9090}, {"containerPort": 53, "protocol": "udp"}]});
        let mut task = task(template.clone());
        task.spec.published_ports = vec![
            TaskPort {
                container_port: 8080,
                protocol: Protocol::Tcp,
                host_port: None,
            },
            TaskPort {
                container_port: 8080,
                protocol: Protocol::Tcp,
                host_port: Some(80),
            },
            TaskPort {
                container_port: 53,
                protocol: Protocol::Udp,
                host_port: None,
            },
        ];
        let plan = plan(&task, "n1", &BTreeMap::new(), &[]).unwrap();
        let bindings = plan.create.host_config.unwrap().port_bindings.unwrap();
        let ephemeral = Some(vec![PortBinding {
            host_ip: Some("0.0.0.0".into()),
            host_port: Some(String::new()),
        }]);
        let mesh_and_host = Some(vec![
            ephemeral.clone().unwrap().remove(0),
            PortBinding {
                host_ip: Some("0.0.0.0".into()),
                host_port: Some("80".into()),
            },
        ]);
        // 9090 (a metrics port, say) stays unreachable from outside the host.
        assert_eq!(
            bindings,
            PortMap::from([
                ("8080/tcp".to_string(), mesh_and_host),
                ("53/udp".to_string(), ephemeral),
            ])
        );
        let unpublished = plan_of(template, &[]).create.host_config.unwrap();
        assert_eq!(unpublished.port_bindings, None);
    }
}
