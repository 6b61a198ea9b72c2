//! Table tests for Service defaulting and validation.

use serde_json::json;

use super::*;
use crate::resource::Resource;

fn service(spec: serde_json::Value) -> Service {
    let object = json!({
        "apiVersion": "dctl/v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": spec,
    });
    serde_json::from_value(object).unwrap()
}

fn errors(spec: serde_json::Value) -> Vec<String> {
    let mut service = service(spec);
    service.apply_defaults();
    service.validate().iter().map(ToString::to_string).collect()
}

#[test]
fn a_minimal_service_gets_every_default() {
    let mut web = service(json!({
        "template": {
            "image": "web:1",
            "probes": {"liveness": {"httpGet": {"port": 8080}}},
        }
    }));
    web.apply_defaults();
    let expected = json!({
        "apiVersion": "dctl/v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "mode": "replicated",
            "replicas": 1,
            "template": {
                "image": "web:1",
                "stopSignal": "SIGTERM",
                "stopGracePeriod": "10s",
                "probes": {"liveness": {
                    "httpGet": {"path": "/", "port": 8080, "scheme": "HTTP"},
                    "initialDelaySeconds": 0,
                    "periodSeconds": 10,
                    "timeoutSeconds": 1,
                    "successThreshold": 1,
                    "failureThreshold": 3,
                }},
                "restartPolicy": {"condition": "any", "delay": "5s", "maxAttempts": 0, "window": "0s"},
            },
            "update": {
                "parallelism": 1, "delay": "0s", "order": "stop-first", "failureAction": "pause",
                "monitor": "5s", "maxFailureRatio": 0.0, "progressDeadline": "10m",
            },
            "rollback": {
                "parallelism": 1, "delay": "0s", "order": "stop-first", "failureAction": "pause",
                "monitor": "5s", "maxFailureRatio": 0.0, "progressDeadline": "10m",
            },
        },
    });
    assert_eq!(serde_json::to_value(&web).unwrap(), expected);
    assert_eq!(web.validate(), vec![]);

    // Defaulting is idempotent and the stored form reads back to the same object.
    let mut again = web.clone();
    again.apply_defaults();
    assert_eq!(again, web);
    let stored = serde_json::to_string(&web).unwrap();
    assert_eq!(serde_json::from_str::<Service>(&stored).unwrap(), web);
}

#[test]
fn a_global_service_gets_no_replica_count() {
    let mut agent = service(json!({"mode": "global", "template": {"image": "agent:1"}}));
    agent.apply_defaults();
    assert_eq!(agent.spec.replicas, None);
    for mode in [ServiceMode::Replicated, ServiceMode::Global] {
        assert_eq!(serde_json::to_value(mode).unwrap(), mode.to_string());
    }
    assert_eq!(agent.validate(), vec![]);
}

#[test]
fn the_design_example_is_valid() {
    let spec = json!({
        "mode": "replicated",
        "replicas": 3,
        "template": {
            "image": "dctl-demo/web:1",
            "command": ["/web"],
            "args": ["--port", "8080"],
            "env": [{"name": "GREETING", "value": "hello"}],
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "tcp"}],
            "resources": {
                "limits": {"cpus": "0.5", "memory": "128Mi"},
                "reservations": {"cpus": "0.1", "memory": "32Mi"},
            },
            "probes": {
                "startup": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1, "failureThreshold": 30},
                "liveness": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5},
                "readiness": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1},
            },
            "restartPolicy": {"condition": "any", "delay": "5s", "maxAttempts": 0, "window": "0s"},
            "stopSignal": "SIGTERM",
            "stopGracePeriod": "10s",
            "networks": [{"name": "backend", "aliases": ["web"]}],
            "mounts": [{"type": "volume", "source": "data", "target": "/data"}],
        },
        "placement": {
            "constraints": ["node.labels.tier == frontend", "node.role != manager"],
            "preferences": [{"spread": "node.labels.zone"}],
            "maxReplicasPerNode": 2,
        },
        "update": {
            "parallelism": 1, "delay": "0s", "order": "start-first", "failureAction": "rollback",
            "monitor": "5s", "maxFailureRatio": 0, "progressDeadline": "600s",
        },
        "rollback": {"parallelism": 1, "order": "stop-first"},
        "publish": [{"port": 8080, "targetPort": "http", "protocol": "tcp"}],
    });
    assert_eq!(errors(spec), Vec::<String>::new());
}

#[test]
fn validation_reports_every_error_with_its_path() {
    let label = "must be a lowercase RFC 1123 label (a-z, 0-9 and '-', starting and ending \
                 with a letter or digit, at most 63 characters)";
    let cases: Vec<(serde_json::Value, Vec<String>)> = vec![
        (json!({}), vec!["spec.template.image: required".into()]),
        (
            json!({"placement": {"constraints": ["node.role == worker", "node.labels.zone = a"]},
                   "template": {"image": "x"}}),
            vec![r#"spec.placement.constraints[1]: invalid constraint "node.labels.zone = a": expected == or !="#.into()],
        ),
        (
            json!({"template": {"image": "x", "probes": {"liveness": {"periodSeconds": 5}}}}),
            vec!["spec.template.probes.liveness: must specify exactly one of httpGet, tcpSocket, exec".into()],
        ),
        (
            json!({"template": {"image": "x", "ports": [{"name": "http", "containerPort": 80}],
                   "probes": {"readiness": {"httpGet": {"port": "metrics"}}}}}),
            vec![r#"spec.template.probes.readiness.httpGet.port: no port named "metrics" in spec.template.ports"#.into()],
        ),
        (
            json!({"template": {"image": "x"},
                   "placement": {"platforms": [{"os": "linux"}, {}]}}),
            vec!["spec.placement.platforms[1]: name an os, an architecture or both".into()],
        ),
        (
            json!({"mode": "global", "replicas": 2, "placement": {"maxReplicasPerNode": 1},
                   "template": {"image": "x"}}),
            vec![
                "spec.replicas: not allowed when mode is global".into(),
                "spec.placement.maxReplicasPerNode: not allowed when mode is global".into(),
            ],
        ),
        (
            // Several errors at once, across the template, placement, update and publish.
            json!({
                "template": {
                    "image": " ",
                    "env": [{"value": "x"}, {"name": "A=B"}],
                    "ports": [
                        {"name": "http", "containerPort": 0},
                        {"name": "http", "containerPort": 8080, "protocol": "udp"},
                        {"name": "Metrics_Port", "containerPort": 9090},
                    ],
                    "resources": {
                        "limits": {"cpus": "half", "memory": "4Mi"},
                        "reservations": {"memory": "128m"},
                    },
                    "mounts": [
                        {"source": "data", "target": "data"},
                        {"type": "bind", "source": "./conf", "target": "/conf"},
                        {"type": "tmpfs", "source": "x", "target": "/conf/"},
                        {"source": "/srv", "target": "/srv"},
                    ],
                    "networks": [{"name": "Backend"}, {"name": "front", "aliases": [""]}, {"name": "front"}],
                    "stopSignal": "SIGTREM",
                    "probes": {"startup": {"tcpSocket": {"port": "grpc"}, "successThreshold": 3}},
                },
                "placement": {"preferences": [{"spread": "zone"}]},
                "update": {"maxFailureRatio": 1.5},
                "rollback": {"failureAction": "rollback"},
                "publish": [
                    {"port": 8080, "targetPort": "http"},
                    {"port": 8080, "targetPort": 8080},
                    {"port": 8080, "targetPort": 8080, "protocol": "udp"},
                    {"port": 70000, "targetPort": "admin"},
                ],
            }),
            vec![
                "spec.template.image: required".into(),
                "spec.template.env[0].name: required".into(),
                "spec.template.env[1].name: must not contain '='".into(),
                "spec.template.ports[0].containerPort: must be between 1 and 65535, got 0".into(),
                r#"spec.template.ports[1].name: duplicate port name "http""#.into(),
                r#"spec.template.ports[2].name: invalid port name "Metrics_Port": must be at most 15 characters of a-z, 0-9 and '-', with at least one letter, no '--', starting and ending with a letter or digit"#.into(),
                r#"spec.template.resources.limits.cpus: invalid quantity "half": expected a number with an optional suffix (Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E)"#.into(),
                r#"spec.template.resources.reservations.memory: invalid quantity "128m": not a whole number of bytes; write 128Mi for mebibytes or 128M for megabytes"#.into(),
                "spec.template.resources.limits.memory: must be at least 6Mi (Docker's minimum)".into(),
                r#"spec.template.mounts[0].target: must be an absolute path, got "data""#.into(),
                r#"spec.template.mounts[1].source: a bind mount needs an absolute host path, got "./conf""#.into(),
                r#"spec.template.mounts[2].target: duplicate mount target "/conf/""#.into(),
                "spec.template.mounts[2].source: must be empty for a tmpfs mount".into(),
                r#"spec.template.mounts[3].source: a volume mount's source is a volume name, got "/srv" (use type: bind for a host path)"#.into(),
                format!(r#"spec.template.networks[0].name: invalid name "Backend": {label}"#),
                "spec.template.networks[1].aliases[0]: must not be empty".into(),
                r#"spec.template.networks[2].name: duplicate network "front""#.into(),
                r#"spec.template.stopSignal: invalid signal "SIGTREM": expected a name like SIGTERM or TERM, or a number like 15"#.into(),
                r#"spec.template.probes.startup.tcpSocket.port: no port named "grpc" in spec.template.ports"#.into(),
                "spec.template.probes.startup.successThreshold: must be 1".into(),
                r#"spec.placement.preferences[0].spread: expected node.labels.<name> or engine.labels.<name>, got "zone""#.into(),
                "spec.update.maxFailureRatio: must be between 0 and 1, got 1.5".into(),
                "spec.rollback.failureAction: must be pause or continue for a rollback".into(),
                "spec.publish[1].port: duplicate published port 8080/tcp".into(),
                "spec.publish[3].port: must be between 1 and 65535, got 70000".into(),
                r#"spec.publish[3].targetPort: no port named "admin" in spec.template.ports"#.into(),
            ],
        ),
        (
            json!({"template": {"image": "x", "resources": {
                "limits": {"cpus": "500m", "memory": "64Mi"},
                "reservations": {"cpus": "1", "memory": "64Mi"},
            }}}),
            vec![r#"spec.template.resources.reservations.cpus: must not exceed limits.cpus (500m)"#.into()],
        ),
    ];
    for (spec, expected) in cases {
        assert_eq!(errors(spec.clone()), expected, "{spec}");
    }
}

#[test]
fn unknown_fields_and_bad_values_fail_to_parse() {
    let cases: &[(serde_json::Value, &str)] = &[
        (json!({"replica": 2}), "unknown field `replica`"),
        (
            json!({"template": {"image": "x", "imagee": "y"}}),
            "unknown field `imagee`",
        ),
        (json!({"mode": "daemon"}), "unknown variant `daemon`"),
        (
            json!({"update": {"delay": "5 sec"}}),
            r#"invalid duration "5 sec""#,
        ),
        (
            json!({"update": {"order": "random"}}),
            "unknown variant `random`",
        ),
        (
            json!({"publish": [{"port": 80, "targetPort": 80, "mode": "vip"}]}),
            "unknown variant `vip`",
        ),
        (
            json!({"template": {"ports": [{"containerPort": 80, "protocol": "sctp"}]}}),
            "unknown variant `sctp`",
        ),
    ];
    for (spec, expected) in cases {
        let object = json!({"apiVersion": "dctl/v1", "kind": "Service", "metadata": {"name": "web"}, "spec": spec});
        let error = serde_json::from_value::<Service>(object)
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{spec}: {error}");
    }
}

#[test]
fn an_undefaulted_service_validates_without_panicking() {
    let web = service(
        json!({"template": {"image": "x", "probes": {"readiness": {"exec": {"command": ["/c"]}}}}}),
    );
    let errors: Vec<String> = web.validate().iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "spec.template.probes.readiness.periodSeconds: must be at least 1, got 0",
            "spec.template.probes.readiness.timeoutSeconds: must be at least 1, got 0",
            "spec.template.probes.readiness.successThreshold: must be at least 1, got 0",
            "spec.template.probes.readiness.failureThreshold: must be at least 1, got 0",
        ]
    );
}

#[test]
fn placement_helpers() {
    let placement = Placement {
        constraints: vec!["node.labels.zone == eu".into()],
        preferences: vec![
            PlacementPreference {
                spread: "node.labels.zone".into(),
            },
            PlacementPreference {
                spread: "engine.labels.disk".into(),
            },
            PlacementPreference {
                spread: "node.labels.".into(),
            },
        ],
        max_replicas_per_node: 0,
        platforms: Vec::new(),
    };
    assert_eq!(
        placement.parsed_constraints().unwrap()[0].to_string(),
        "node.labels.zone == eu"
    );
    let labels: Vec<_> = placement
        .preferences
        .iter()
        .map(PlacementPreference::label)
        .collect();
    assert_eq!(
        labels,
        [
            Some((SpreadOver::NodeLabel, "zone")),
            Some((SpreadOver::EngineLabel, "disk")),
            None
        ]
    );
}

#[test]
fn platforms_match_with_either_architecture_name_and_any_case() {
    let platform = |os: &str, architecture: &str| PlacementPlatform {
        os: os.into(),
        architecture: architecture.into(),
    };
    assert!(platform("linux", "amd64").matches("linux", "x86_64"));
    assert!(platform("Linux", "aarch64").matches("linux", "arm64"));
    assert!(platform("", "arm64").matches("windows", "ARM64"));
    assert!(!platform("linux", "arm64").matches("linux", "x86_64"));
    assert!(!platform("windows", "").matches("linux", "x86_64"));
    assert!(platform_fits(&[], "linux", "x86_64"), "none means any");
    let either = [platform("windows", ""), platform("linux", "amd64")];
    assert!(platform_fits(&either, "linux", "x86_64"));
    assert_eq!(platform("linux", "").to_string(), "linux/*");
}

#[test]
fn published_task_ports_resolve_names_and_keep_protocol() {
    let cases = [
        (json!({"template": {"image": "x"}}), vec![]),
        (
            json!({"template": {"image": "x", "ports": [{"containerPort": 8080}, {"containerPort": 9090}]},
                   "publish": [{"port": 80, "targetPort": 8080}]}),
            vec![(8080, Protocol::Tcp, None)],
        ),
        (
            json!({"template": {"image": "x", "ports": [{"name": "dns", "containerPort": 53, "protocol": "udp"}]},
                   "publish": [{"port": 53, "targetPort": "dns", "protocol": "udp"},
                               {"port": 54, "targetPort": 53, "protocol": "udp"}]}),
            vec![(53, Protocol::Udp, None)],
        ),
        (
            json!({"template": {"image": "x", "ports": [{"containerPort": 53}]},
                   "publish": [{"port": 54, "targetPort": 53, "protocol": "udp"},
                               {"port": 53, "targetPort": 53}]}),
            vec![(53, Protocol::Tcp, None), (53, Protocol::Udp, None)],
        ),
        // Host mode binds the published port itself, beside the mesh's ephemeral one.
        (
            json!({"template": {"image": "x", "ports": [{"name": "http", "containerPort": 8080}]},
                   "publish": [{"port": 80, "targetPort": "http"},
                               {"port": 8080, "targetPort": "http", "mode": "host"}]}),
            vec![
                (8080, Protocol::Tcp, None),
                (8080, Protocol::Tcp, Some(8080)),
            ],
        ),
    ];
    for (spec, expected) in cases {
        let service = service(spec.clone());
        let ports: Vec<_> = service
            .spec
            .published_task_ports()
            .into_iter()
            .map(|port| (port.container_port, port.protocol, port.host_port))
            .collect();
        assert_eq!(ports, expected, "{spec}");
    }
}
