//! The translator on a corpus of compose files (`testdata/`): each valid case is compared
//! with its `*.expected.yaml` (regenerate with `UPDATE_EXPECTED=1`, then read the diff),
//! each invalid one with its exact error text.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::manifest::to_yaml;
use crate::with_object;

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/compose/testdata");
/// Where the tests say the compose files are.
const PROJECT_DIR: &str = "/srv/compose-tests";

#[derive(Default)]
struct Case<'a> {
    files: &'a [&'a str],
    env: &'a [(&'a str, &'a str)],
    dotenv: Option<&'a str>,
    project: Option<&'a str>,
    strict: bool,
}

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(TESTDATA).join(name)).unwrap()
}

fn run(case: &Case) -> Result<Translation, Vec<String>> {
    let files: Vec<SourceFile> = case
        .files
        .iter()
        .map(|name| SourceFile {
            name: name.to_string(),
            text: read(name),
        })
        .collect();
    let env: HashMap<String, String> = case
        .env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let environment = move |name: &str| env.get(name).cloned();
    // The project lives at a fixed path so expected output is the same on every machine;
    // its files are read from the test data.
    let read_file = |path: &Path| {
        let name = path
            .strip_prefix(PROJECT_DIR)
            .map_err(|_| "outside the project".to_string())?;
        std::fs::read_to_string(Path::new(TESTDATA).join(name))
            .map_err(|_| "no such file or directory".to_string())
    };
    let options = Options {
        project: case.project.map(String::from),
        directory: PathBuf::from(PROJECT_DIR),
        environment: &environment,
        dotenv: case.dotenv.map(|name| SourceFile {
            name: name.to_string(),
            text: read(name),
        }),
        read_file: &read_file,
        strict: case.strict,
    };
    translate(&files, &options).map_err(|errors| errors.iter().map(ToString::to_string).collect())
}

/// The documents as one YAML stream.
fn rendered(translation: &Translation) -> String {
    let docs: Vec<String> = translation
        .documents
        .iter()
        .map(|doc| with_object!(&doc.object, o => to_yaml(o)))
        .collect();
    docs.join("---\n")
}

fn check_expected(name: &str, translation: &Translation) {
    let got = rendered(translation);
    let path = Path::new(TESTDATA).join(format!("{name}.expected.yaml"));
    if std::env::var_os("UPDATE_EXPECTED").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "{name}: translation differs from {}:\n{got}",
        path.display()
    );
}

fn warnings(translation: &Translation) -> Vec<String> {
    translation
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn compose_short_forms() {
    let translation = run(&Case {
        files: &["short.yml"],
        project: Some("demo"),
        ..Case::default()
    })
    .unwrap();
    assert_eq!(translation.project, "demo");
    check_expected("short", &translation);
    assert_eq!(
        warnings(&translation),
        [
            "short.yml: line 14: services.web.ports[1]: host_ip 127.0.0.1 ignored: dctl's proxy listens on every address of every node",
        ]
    );
}

#[test]
fn compose_long_forms() {
    let translation = run(&Case {
        files: &["long.yml"],
        env: &[("FROM_SHELL", "shell")],
        ..Case::default()
    })
    .unwrap();
    // `name:` names the project when -p does not.
    assert_eq!(translation.project, "shop");
    check_expected("long", &translation);
    assert_eq!(
        warnings(&translation),
        ["long.yml: line 9: services.api.platform: variant v8 ignored: nodes report an os and an architecture"]
    );
}

#[test]
fn compose_interpolation() {
    let translation = run(&Case {
        files: &["interpolation.yml"],
        env: &[("BOTH", "from-shell"), ("PORT", "9000")],
        dotenv: Some("interpolation.env"),
        project: Some("interp"),
        ..Case::default()
    })
    .unwrap();
    check_expected("interpolation", &translation);
    assert_eq!(
        warnings(&translation),
        ["interpolation.yml: line 13: variable NOT_SET is not set: using an empty string"]
    );
}

#[test]
fn compose_merge_of_two_files() {
    let translation = run(&Case {
        files: &["base.yml", "override.yml"],
        project: Some("merged"),
        ..Case::default()
    })
    .unwrap();
    check_expected("merge", &translation);
}

#[test]
fn compose_unsupported_keys_warn_and_strict_fails() {
    let case = Case {
        files: &["unsupported.yml"],
        project: Some("x"),
        ..Case::default()
    };
    let expected = [
        "unsupported.yml: line 4: services.web.container_name: not supported by dctl, ignored: dctl names containers dctl.PROJECT.TASK",
        "unsupported.yml: line 5: services.web.privileged: not supported by dctl, ignored",
        "unsupported.yml: line 6: services.web.secrets: not supported by dctl, ignored: dctl has no secrets yet; use environment or a bind mount",
        "unsupported.yml: line 7: services.web.logging: not supported by dctl, ignored: dctl logs reads Docker's default json-file logs",
        "unsupported.yml: line 11: services.web.ports[0].app_protocol: not supported by dctl, ignored",
        "unsupported.yml: line 13: services.web.deploy.endpoint_mode: not supported by dctl, ignored: dctl's proxy balances over Ready tasks (vip)",
        "unsupported.yml: line 14: secrets: not supported by dctl, ignored: dctl has no secrets or configs yet; use environment or a bind mount",
    ];
    assert_eq!(warnings(&run(&case).unwrap()), expected);
    let errors = run(&Case {
        strict: true,
        ..case
    })
    .unwrap_err();
    assert_eq!(errors, expected);
}

#[test]
fn compose_invalid_file_reports_every_error() {
    let errors = run(&Case {
        files: &["invalid.yml"],
        project: Some("bad"),
        ..Case::default()
    })
    .unwrap_err();
    assert_eq!(
        errors,
        [
            "invalid.yml: line 3: services.built.build: dctl runs images and does not build them: build it first (docker build -t NAME .) and set image: NAME",
            "invalid.yml: line 4: services.web (Service spec.template.stopSignal): invalid signal \"SIGNOPE\": expected a name like SIGTERM or TERM, or a number like 15",
            "invalid.yml: line 6: services.web.ports[0]: protocol \"sctp\" is not supported: dctl publishes tcp and udp",
            "invalid.yml: line 6: services.web.ports[1]: invalid port \"a:b\": expected [IP:][HOST:]CONTAINER[/PROTOCOL] with numbers or ranges",
            "invalid.yml: line 7: services.web.networks.nowhere: network \"nowhere\" is not defined under the top-level networks: (defined: default)",
            "invalid.yml: line 8: services.web.volumes[0]: volume \"undeclared\" is not declared under the top-level volumes:",
            "invalid.yml: line 9: services.web.depends_on.ghost: no service \"ghost\" in this project (services: a, b, built, web)",
            "invalid.yml: line 11: services.web.deploy.mode: replicated-job is not supported: dctl services run until stopped (use restart_policy: {condition: none} for a one-off)",
            "invalid.yml: line 12: services.web.deploy.replicas: must be a non-negative whole number",
            "invalid.yml: line 14: services.web.healthcheck.test: expected [CMD, arg…], [CMD-SHELL, command], [NONE] or a command string",
            "invalid.yml: line 18: services.a.depends_on: dependency cycle: a -> b -> a",
            "invalid.yml: line 21: services.b.depends_on: dependency cycle: b -> a -> b",
        ]
    );
}

#[test]
fn compose_missing_required_variable_names_it_and_its_line() {
    let errors = run(&Case {
        files: &["required.yml"],
        project: Some("db"),
        ..Case::default()
    })
    .unwrap_err();
    assert_eq!(
        errors,
        ["required.yml: line 5: required variable DB_PASSWORD is missing a value: set DB_PASSWORD in .env"]
    );
    // From the environment (or .env) it translates.
    run(&Case {
        files: &["required.yml"],
        project: Some("db"),
        env: &[("DB_PASSWORD", "s3cret")],
        ..Case::default()
    })
    .unwrap();
}

#[test]
fn compose_project_names() {
    assert_eq!(normalize_name("My_Project.v2"), "my-project-v2");
    assert_eq!(normalize_name("__x__"), "x");
    let errors = run(&Case {
        files: &["required.yml"],
        project: Some("Bad_Name"),
        env: &[("DB_PASSWORD", "x")],
        ..Case::default()
    })
    .unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("required.yml: project name \"Bad_Name\" (-p): "),
        "{errors:?}"
    );
    // Without -p or name:, the directory's name.
    let translation = run(&Case {
        files: &["required.yml"],
        env: &[("DB_PASSWORD", "x")],
        ..Case::default()
    })
    .unwrap();
    assert_eq!(translation.project, "compose-tests");
}

#[test]
fn compose_detection() {
    assert!(is_compose("services:\n  web:\n    image: x\n"));
    assert!(is_compose("version: '3.8'\nservices: {}\n"));
    assert!(!is_compose(
        "apiVersion: dctl/v1\nkind: Service\nmetadata: {name: x}\n"
    ));
    assert!(!is_compose("kind: List\nservices: []\n"));
    assert!(!is_compose("  services: nested\n"));
    assert!(is_compose(r#"{"services": {"web": {"image": "x"}}}"#));
    let json = services(r#"{"services": {"web": {"image": "x", "ports": ["80:8080"]}}}"#).unwrap();
    assert_eq!(json[0].spec.publish[0].port, 80);
    assert!(!is_compose(
        r#"{"apiVersion": "dctl/v1", "kind": "Network", "services": 1}"#
    ));
}

/// Translates one inline compose file (project `p`, no `.env`) into its Services.
fn services(yaml: &str) -> Result<Vec<crate::service::Service>, Vec<String>> {
    let files = [SourceFile {
        name: "compose.yml".into(),
        text: yaml.into(),
    }];
    let environment = |_: &str| None;
    let read_file = |_: &Path| Err("no such file or directory".to_string());
    let options = Options {
        project: Some("p".into()),
        directory: PathBuf::from(PROJECT_DIR),
        environment: &environment,
        dotenv: None,
        read_file: &read_file,
        strict: false,
    };
    let translation = translate(&files, &options)
        .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    Ok(translation
        .documents
        .into_iter()
        .filter_map(|d| match d.object {
            AnyObject::Service(s) => Some(s),
            _ => None,
        })
        .collect())
}

#[test]
fn compose_anchors_and_merge_keys() {
    let translation = run(&Case {
        files: &["anchors.yml"],
        project: Some("anchors"),
        ..Case::default()
    })
    .unwrap();
    check_expected("anchors", &translation);
}

#[test]
fn compose_restart_forms() {
    use crate::template::RestartCondition::{Any, None, OnFailure};
    let cases = [
        ("\"no\"", None, 0),
        ("always", Any, 0),
        ("unless-stopped", Any, 0),
        ("on-failure", OnFailure, 0),
        ("on-failure:3", OnFailure, 3),
    ];
    for (restart, condition, attempts) in cases {
        let yaml = format!("services:\n  a:\n    image: x\n    restart: {restart}\n");
        let policy = services(&yaml).unwrap()[0]
            .spec
            .template
            .restart_policy
            .clone();
        assert_eq!(
            (policy.condition, policy.max_attempts),
            (condition, attempts),
            "{restart}"
        );
    }
    // deploy.restart_policy wins over restart.
    let yaml = "services:\n  a:\n    image: x\n    restart: \"no\"\n    deploy: {restart_policy: {condition: any}}\n";
    assert_eq!(
        services(yaml).unwrap()[0]
            .spec
            .template
            .restart_policy
            .condition,
        Any
    );
}

#[test]
fn compose_healthcheck_forms() {
    let probe = |test: &str| {
        let yaml = format!("services:\n  a:\n    image: x\n    healthcheck:\n      test: {test}\n");
        services(&yaml).unwrap()[0].spec.template.probes.clone()
    };
    let command =
        |probes: crate::probe::Probes| probes.readiness.and_then(|p| p.exec).map(|e| e.command);
    let words = |w: &[&str]| Some(w.iter().map(ToString::to_string).collect::<Vec<_>>());
    assert_eq!(
        command(probe("[CMD, /check, now]")),
        words(&["/check", "now"])
    );
    assert_eq!(
        command(probe("[CMD-SHELL, \"pg_isready || exit 1\"]")),
        words(&["/bin/sh", "-c", "pg_isready || exit 1"])
    );
    assert_eq!(
        command(probe("curl -f localhost")),
        words(&["/bin/sh", "-c", "curl -f localhost"])
    );
    assert!(probe("[NONE]").is_empty());
    let yaml = "services:\n  a:\n    image: x\n    healthcheck: {test: [CMD, /c], disable: true}\n";
    assert!(services(yaml).unwrap()[0].spec.template.probes.is_empty());
}

#[test]
fn compose_file_level_errors_are_exact() {
    let cases = [
        ("services:\n  a: [1\n", "compose.yml: line 2: invalid YAML: unclosed bracket '['"),
        ("- services\n", "compose.yml: line 1: a compose file must be a mapping with services:"),
        ("services:\n  a: {image: x}\nvolume:\n  data:\n", "compose.yml: line 3: volume: unknown top-level key"),
        ("services: {}\n", "compose.yml: line 1: services: defines no service"),
        ("services:\n  a:\n    image: x\n    env_file: missing.env\n", "compose.yml: line 4: services.a.env_file[0]: cannot read env_file missing.env: no such file or directory"),
        ("services:\n  a:\n    image: x\n    ports: [{published: 80}]\n", "compose.yml: line 4: services.a.ports[0].target: required: one container port"),
        ("services:\n  a:\n    image: x\n    volumes: [{type: nfs, target: /x}]\n", "compose.yml: line 4: services.a.volumes[0].type: expected volume, bind or tmpfs"),
        ("services:\n  a:\n    image: x\n    deploy: {resources: {limits: {memory: lots}}}\n", "compose.yml: line 4: services.a.deploy.resources.limits.memory: invalid byte size \"lots\": expected a number with b, k, m or g"),
        ("services:\n  a:\n    image: x\n    depends_on: {b: {condition: service_ready}}\n  b: {image: y}\n", "compose.yml: line 4: services.a.depends_on.b.condition: expected service_started, service_healthy or service_completed_successfully"),
        ("services:\n  a:\n    image: x\n    user: [1]\n", "compose.yml: line 4: services.a.user: must be a string, got a list"),
        ("services:\n  a:\n    image: x\n    platform: /amd64\n", "compose.yml: line 4: services.a.platform: expected os[/architecture[/variant]], got \"/amd64\""),
        ("services:\n  a:\n    image: x\n    depends_on: [a]\n", "compose.yml: line 4: services.a.depends_on: dependency cycle: a -> a"),
        ("services:\n  Web_Front:\n    image: x\n  web-front:\n    image: y\n", "compose.yml: line 4: services.web-front: services \"Web_Front\" and \"web-front\" both become dctl service \"web-front\""),
    ];
    for (yaml, want) in cases {
        assert_eq!(services(yaml).unwrap_err(), [want], "{yaml}");
    }
}

#[test]
fn compose_dotenv_errors_name_the_env_file() {
    let files = [SourceFile {
        name: "compose.yml".into(),
        text: "services:\n  a: {image: x}\n".into(),
    }];
    let environment = |_: &str| None;
    let read_file = |_: &Path| Err(String::new());
    let options = Options {
        project: Some("p".into()),
        directory: PathBuf::from(PROJECT_DIR),
        environment: &environment,
        dotenv: Some(SourceFile {
            name: ".env".into(),
            text: "OK=1\nBAD LINE=2\n".into(),
        }),
        read_file: &read_file,
        strict: false,
    };
    let errors: Vec<String> = translate(&files, &options)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errors, [".env: line 2: invalid variable name \"BAD LINE\""]);
}
