//! Tests of the manifest codec: positions, paths, and round trips.

use super::*;
use crate::meta::ObjectMeta;
use crate::node::NodeAvailability;
use crate::validation;

/// Joins lines with `\n`, so a line's number in a test is its index + 1.
fn lines(lines: &[&str]) -> String {
    lines.join("\n") + "\n"
}

fn decode_ok(text: &str) -> Vec<Document> {
    decode("test.yaml", text).unwrap_or_else(|errors| {
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("unexpected errors:\n{}", shown.join("\n"))
    })
}

fn decode_err(text: &str) -> Vec<ManifestError> {
    match decode("test.yaml", text) {
        Ok(docs) => panic!("expected errors, decoded {} documents", docs.len()),
        Err(errors) => errors,
    }
}

fn shown(errors: &[ManifestError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

/// A valid Service per DESIGN §2, with all three probes; starts on line 1.
const WEB: &str = "\
apiVersion: dctl/v1
kind: Service
metadata:
  name: web
  namespace: demo
  labels: {app: web}
spec:
  replicas: 3
  template:
    image: dctl-demo/web:1
    args: [\"--port\", \"8080\"]
    env:
      - {name: GREETING, value: hello}
    ports:
      - {name: http, containerPort: 8080, protocol: tcp}
    probes:
      startup:   {httpGet: {path: /healthz, port: http}, periodSeconds: 1, failureThreshold: 30}
      liveness:  {httpGet: {path: /healthz, port: http}, periodSeconds: 5}
      readiness: {tcpSocket: {port: 8080}, periodSeconds: 1}
    stopGracePeriod: 10s
  update: {parallelism: 1, order: start-first, failureAction: rollback}
  publish:
    - {port: 8080, targetPort: http, protocol: tcp}
";

#[test]
fn decodes_each_document_with_its_index_and_start_line() {
    let text = lines(&[
        "# demo objects",                             // 1
        "---",                                        // 2  document 1
        "apiVersion: dctl/v1",                        // 3
        "kind: Network",                              // 4
        "metadata: {name: backend, namespace: demo}", // 5
        "---",                                        // 6  document 2: only a comment
        "# nothing here yet",                         // 7
        "---",                                        // 8  document 3
        "",                                           // 9
        "apiVersion: dctl/v1",                        // 10
        "kind: Node",                                 // 11
        "metadata:",                                  // 12
        "  name: host-1",                             // 13
        "spec:",                                      // 14
        "  availability: drain",                      // 15
        "---",                                        // 16 document 4: empty
        "---",                                        // 17 document 5
        "apiVersion: dctl/v1",                        // 18
        "kind: Network",                              // 19
        "metadata: {name: frontend}",                 // 20
        "...",                                        // 21 explicit end
    ]);
    let docs = decode_ok(&text);
    let summary: Vec<_> = docs
        .iter()
        .map(|d| {
            let meta = d.object.meta();
            (
                d.index,
                d.line,
                d.object.kind(),
                meta.namespace().to_string(),
                meta.name.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                1,
                3,
                Kind::Network,
                "demo".to_string(),
                "backend".to_string()
            ),
            (3, 10, Kind::Node, String::new(), "host-1".to_string()),
            // Defaulting ran: the namespace the manifest left out.
            (
                5,
                18,
                Kind::Network,
                "default".to_string(),
                "frontend".to_string()
            ),
        ]
    );
    assert!(docs.iter().all(|d| d.source == "test.yaml"));
    let AnyObject::Node(node) = &docs[1].object else {
        panic!("document 3 is a Node");
    };
    assert_eq!(node.spec.availability, NodeAvailability::Drain);
}

#[test]
fn empty_and_comment_only_input_decodes_to_nothing() {
    assert_eq!(decode_ok(""), []);
    assert_eq!(decode_ok("# just a comment\n---\n---\n# another\n"), []);
    assert_eq!(decode_ok("---\n~\n---\nnull\n"), []);
}

#[test]
fn unknown_field_names_document_line_column_and_path() {
    let text = lines(&[
        "apiVersion: dctl/v1",  // 1
        "kind: Network",        // 2
        "metadata: {name: a}",  // 3
        "---",                  // 4
        "apiVersion: dctl/v1",  // 5
        "kind: Node",           // 6
        "metadata:",            // 7
        "  name: host-1",       // 8
        "  lables: {zone: eu}", // 9
    ]);
    let errors = decode_err(&text);
    assert_eq!(errors.len(), 1, "{:?}", shown(&errors));
    let err = &errors[0];
    assert_eq!(
        (
            err.source.as_str(),
            err.document,
            err.line,
            err.column,
            err.path.as_deref()
        ),
        ("test.yaml", 2, Some(9), Some(3), Some("metadata.lables"))
    );
    assert!(
        err.message
            .starts_with("unknown field, expected one of: name, namespace, uid, labels"),
        "{}",
        err.message
    );
    assert!(err.to_string().starts_with(
        "test.yaml: document 2 (line 9): metadata.lables: unknown field, expected one of: name,"
    ));
}

#[test]
fn typo_in_a_service_template_is_reported_at_its_field() {
    let text = WEB.replace("    image: dctl-demo/web:1", "    imagee: dctl-demo/web:1");
    let errors = decode_err(&text);
    assert_eq!(errors.len(), 1, "{:?}", shown(&errors));
    let err = &errors[0];
    assert_eq!(
        (err.document, err.line, err.column, err.path.as_deref()),
        (1, Some(10), Some(5), Some("spec.template.imagee"))
    );
    assert!(
        err.message
            .starts_with("unknown field, expected one of: image,"),
        "{}",
        err.message
    );
}

#[test]
fn bad_enum_value_and_bad_number_name_their_field() {
    let text = WEB
        .replace("  replicas: 3", "  mode: replicatd")
        .replace("containerPort: 8080", "containerPort: 70000");
    // Deserialization stops at the first problem of a document; the mode comes first.
    let errors = decode_err(&text);
    assert_eq!(
        shown(&errors),
        ["test.yaml: document 1 (line 8): spec.mode: unknown value \"replicatd\", expected one of: replicated, global"]
    );
    assert_eq!(errors[0].column, Some(9));

    let text = WEB.replace("containerPort: 8080", "containerPort: 70000");
    let errors = decode_err(&text);
    assert_eq!(errors.len(), 1, "{:?}", shown(&errors));
    assert_eq!(
        (errors[0].line, errors[0].path.as_deref()),
        (Some(15), Some("spec.template.ports[0].containerPort"))
    );
    assert!(errors[0].message.contains("70000"), "{}", errors[0].message);
}

#[test]
fn wrong_api_version_and_unknown_kind_name_file_and_document() {
    let text = lines(&[
        "apiVersion: apps/v1", // 1
        "kind: Network",       // 2
        "metadata: {name: a}", // 3
        "---",                 // 4
        "apiVersion: dctl/v1", // 5
        "kind: Deployment",    // 6
        "metadata: {name: b}", // 7
        "---",                 // 8
        "apiVersion: dctl/v1", // 9
        "kind: service",       // 10
        "metadata: {name: c}", // 11
        "---",                 // 12
        "metadata: {name: d}", // 13
    ]);
    let errors = decode_err(&text);
    assert_eq!(
        shown(&errors),
        [
            "test.yaml: document 1 (line 1): apiVersion: unsupported apiVersion \"apps/v1\", this API serves dctl/v1",
            "test.yaml: document 2 (line 6): kind: unknown kind \"Deployment\", expected one of: Service, Task, Node, Network, Event, GitSync, Endpoints, ServiceRevision",
            "test.yaml: document 3 (line 10): kind: unknown kind \"service\" (did you mean Service?), expected one of: Service, Task, Node, Network, Event, GitSync, Endpoints, ServiceRevision",
            "test.yaml: document 4 (line 13): apiVersion: required field is missing (this API serves dctl/v1)",
            "test.yaml: document 4 (line 13): kind: required field is missing, expected one of: Service, Task, Node, Network, Event, GitSync, Endpoints, ServiceRevision",
        ]
    );
}

#[test]
fn one_invalid_document_returns_errors_only() {
    let text = lines(&[
        "apiVersion: dctl/v1",          // 1
        "kind: Network",                // 2
        "metadata: {name: a}",          // 3
        "---",                          // 4
        "apiVersion: dctl/v1",          // 5
        "kind: Node",                   // 6
        "metadata: {name: host-1}",     // 7
        "---",                          // 8
        "apiVersion: dctl/v1",          // 9
        "kind: Node",                   // 10
        "metadata: {name: host-2}",     // 11
        "spec: {availability: paused}", // 12
    ]);
    let errors = decode("test.yaml", &text).expect_err("document 3 is invalid");
    assert_eq!(
        shown(&errors),
        ["test.yaml: document 3 (line 12): spec.availability: unknown value \"paused\", expected one of: active, pause, drain"]
    );
}

#[test]
fn reports_every_error_of_every_document() {
    let text = lines(&[
        "apiVersion: dctl/v1",         // 1
        "kind: Network",               // 2
        "metadata: {name: Backend_1}", // 3  invalid name (validation)
        "---",                         // 4
        "apiVersion: dctl/v1",         // 5
        "kind: Node",                  // 6
        "metadata:",                   // 7
        "  name: host-1",              // 8
        "  namespace: demo",           // 9  ignored: Nodes are cluster-scoped
        "  labels: {\"-zone\": eu}",   // 10 invalid key
        "---",                         // 11
        "apiVersion: dctl/v1",         // 12
        "kind: Nodes",                 // 13 unknown kind
        "---",                         // 14
        "apiVersion: dctl/v1",         // 15
        "kind: Network",               // 16
        "metadata: {name: ok}",        // 17
        "spek: {}",                    // 18 unknown field
    ]);
    let errors = decode_err(&text);
    let summary: Vec<_> = errors
        .iter()
        .map(|e| (e.document, e.line, e.path.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        summary,
        [
            (1, Some(3), "metadata.name".to_string()),
            (2, Some(10), "metadata.labels[-zone]".to_string()),
            (3, Some(13), "kind".to_string()),
            (4, Some(18), "spek".to_string()),
        ],
        "{:#?}",
        shown(&errors)
    );
}

#[test]
fn json_decodes_and_its_errors_carry_lines() {
    let json = r#"{
  "apiVersion": "dctl/v1",
  "kind": "Node",
  "metadata": {"name": "host-1", "labels": {"zone": "eu"}},
  "spec": {"availability": "pause"}
}"#;
    let docs = decode("node.json", json).unwrap();
    assert_eq!((docs.len(), docs[0].index, docs[0].line), (1, 1, 1));
    assert_eq!(docs[0].object.meta().labels["zone"], "eu");

    let bad = json.replace(
        r#""availability": "pause""#,
        r#""availability": "pause", "rol": "manager""#,
    );
    let errors = decode("node.json", &bad).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(
        (errors[0].line, errors[0].column, errors[0].path.as_deref()),
        (Some(5), Some(37), Some("spec.rol"))
    );
    assert!(errors[0]
        .to_string()
        .starts_with("node.json: document 1 (line 5): spec.rol: unknown field"));

    let broken = json.replace(r#""kind": "Node","#, r#""kind": "Node""#);
    let errors = decode("node.json", &broken).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(
        (errors[0].document, errors[0].line),
        (1, Some(4)),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].message.starts_with("invalid YAML: "),
        "{}",
        errors[0]
    );
}

#[test]
fn json_and_yaml_lists_contribute_their_items() {
    let json = r#"{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "dctl/v1", "kind": "Network", "metadata": {"name": "a"}},
  {"apiVersion": "dctl/v1", "kind": "Node",
   "metadata": {"name": "host-1"}, "spec": {"role": "boss"}}
]}"#;
    let errors = decode("list.json", json).unwrap_err();
    assert_eq!(
        shown(&errors),
        ["list.json: document 1 (line 4): items[1].spec.role: unknown value \"boss\", expected one of: worker, manager"]
    );
    let docs = decode("list.json", &json.replace("boss", "manager")).unwrap();
    let names: Vec<_> = docs
        .iter()
        .map(|d| (d.index, d.line, d.object.meta().name.as_str()))
        .collect();
    assert_eq!(names, [(1, 2, "a"), (1, 3, "host-1")]);

    let yaml = lines(&[
        "apiVersion: v1",
        "kind: List",
        "items:",
        "- apiVersion: dctl/v1",
        "  kind: Network",
        "  metadata: {name: Bad}",
    ]);
    let errors = decode_err(&yaml);
    assert_eq!(
        (errors[0].line, errors[0].path.as_deref()),
        (Some(6), Some("items[0].metadata.name"))
    );
}

#[test]
fn syntax_errors_and_non_objects_are_errors() {
    let text = lines(&[
        "apiVersion: dctl/v1", // 1
        "kind: Network",       // 2
        "metadata: {name: a}", // 3
        "---",                 // 4
        "- just",              // 5
        "- a list",            // 6
        "---",                 // 7
        "apiVersion: dctl/v1", // 8
        "kind: Network",       // 9
        "metadata: {name: b",  // 10 unclosed
    ]);
    let errors = decode_err(&text);
    let summary: Vec<_> = errors.iter().map(|e| (e.document, e.line)).collect();
    assert_eq!(
        summary,
        [(2, Some(5)), (3, Some(10))],
        "{:#?}",
        shown(&errors)
    );
    assert_eq!(
        errors[0].message,
        "a manifest must be an object with apiVersion, kind and metadata"
    );
    assert!(errors[1].message.starts_with("invalid YAML: "));
}

#[test]
fn duplicate_keys_are_errors() {
    let text = lines(&[
        "apiVersion: dctl/v1",
        "kind: Node",
        "metadata: {name: host-1}",
        "spec:",
        "  role: manager",
        "  role: worker",
    ]);
    let errors = decode_err(&text);
    assert_eq!(
        shown(&errors),
        ["test.yaml: document 1 (line 6): spec.role: field is set twice"]
    );
}

#[test]
fn duplicate_objects_point_at_the_first_definition() {
    let text = lines(&[
        "apiVersion: dctl/v1",                        // 1
        "kind: Network",                              // 2
        "metadata: {name: backend}",                  // 3
        "---",                                        // 4
        "apiVersion: dctl/v1",                        // 5
        "kind: Network",                              // 6
        "metadata: {name: backend, namespace: demo}", // 7 another namespace: fine
        "---",                                        // 8
        "apiVersion: dctl/v1",                        // 9
        "kind: Node",                                 // 10
        "metadata: {name: backend}",                  // 11 another kind: fine
    ]);
    let mut docs = decode_ok(&text);
    assert_eq!(check_duplicates(&docs), []);
    let mut again = decode(
        "more.yaml",
        "apiVersion: dctl/v1\nkind: Network\nmetadata:\n  name: backend\n  namespace: default\n",
    )
    .unwrap();
    docs.append(&mut again);
    assert_eq!(
        shown(&check_duplicates(&docs)),
        ["more.yaml: document 1 (line 1): metadata.name: Network default/backend is defined twice: first in test.yaml document 1 (line 1)"]
    );
}

#[test]
fn display_names_file_document_line_and_path() {
    let err = ManifestError {
        source: "manifests/web.yaml".into(),
        document: 3,
        line: Some(41),
        column: Some(24),
        path: Some("spec.template.ports[0].containerPort".into()),
        message: "must be between 1 and 65535".into(),
    };
    assert_eq!(
        err.to_string(),
        "manifests/web.yaml: document 3 (line 41): spec.template.ports[0].containerPort: must be between 1 and 65535"
    );
    assert_eq!(
        ManifestError::file("manifests/", "no *.yaml, *.yml or *.json files").to_string(),
        "manifests/: no *.yaml, *.yml or *.json files"
    );
}

#[test]
fn service_with_probes_round_trips_through_yaml_and_json() {
    let decoded = decode_ok(WEB);
    assert_eq!(decoded.len(), 1);
    let object = decoded[0].object.clone();

    let yaml = to_yaml(&object);
    let again = decode("web.yaml", &yaml).unwrap_or_else(|e| panic!("{:?}\n{yaml}", shown(&e)));
    assert_eq!(again[0].object, object, "{yaml}");

    let json = to_json_pretty(&object);
    let again = decode("web.json", &json).unwrap_or_else(|e| panic!("{:?}\n{json}", shown(&e)));
    assert_eq!(again[0].object, object, "{json}");
}

#[test]
fn every_kind_round_trips_through_yaml_and_json() {
    let created = "2025-03-01T12:00:00Z".parse().unwrap();
    let meta = ObjectMeta {
        name: "x-1".into(),
        namespace: Some("demo".into()),
        uid: "0b6f8c1e-1".into(),
        labels: [("app".to_string(), "web".to_string())].into(),
        annotations: [("note".to_string(), "a: b # not a comment".to_string())].into(),
        resource_version: Some(42),
        generation: 3,
        creation_timestamp: Some(created),
        ..Default::default()
    };
    let objects = [
        AnyObject::Service(crate::Service::new(meta.clone(), Default::default())),
        AnyObject::Task(crate::Task::new(meta.clone(), Default::default())),
        AnyObject::Node(crate::Node::new(meta.clone(), Default::default())),
        AnyObject::Network(crate::Network::new(meta.clone(), Default::default())),
        AnyObject::Event(crate::Event::new(meta.clone(), Default::default())),
        AnyObject::GitSync(crate::GitSync::new(meta.clone(), Default::default())),
        AnyObject::Endpoints(crate::Endpoints::new(meta.clone(), Default::default())),
    ];
    for mut object in objects {
        object.apply_defaults();
        let yaml = to_yaml(&object);
        let back = deserialize_kind(object.kind(), &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(back, object, "{yaml}");
        let json = to_json_pretty(&object);
        let back = deserialize_kind(object.kind(), &json).unwrap_or_else(|e| panic!("{e}\n{json}"));
        assert_eq!(back, object, "{json}");
    }
}

#[test]
fn an_object_too_large_to_store_is_refused_at_the_field_that_holds_most_of_it() {
    // Documents 1 and 3 are fine; document 2 would be refused by etcd, so none is applied.
    let greeting = |length: usize| {
        let value = "x".repeat(length);
        WEB.replace(
            "{name: GREETING, value: hello}",
            &format!("{{name: GREETING, value: {value}}}"),
        )
    };
    let large = greeting(validation::MAX_OBJECT_BYTES);
    let text = [
        WEB,
        large.as_str(),
        WEB.replace("name: web", "name: web2").as_str(),
    ]
    .join("---\n");
    let errors = decode_err(&text);
    assert_eq!(errors.len(), 1, "{:?}", shown(&errors));
    let err = &errors[0];
    assert_eq!(
        (err.document, err.path.as_deref()),
        (2, Some("spec.template.env[0].value"))
    );
    assert!(
        err.message.starts_with("the object is 52")
            && err
                .message
                .contains("more than the 524288 an object may have"),
        "{}",
        err.message
    );
    // Just under the limit, with its defaults, it decodes.
    assert_eq!(decode_ok(&greeting(500_000)).len(), 1);
}

#[test]
fn annotations_are_limited_to_256_kib_in_all_as_in_kubernetes() {
    // `note` is 4 bytes of key: a value of `length` bytes makes `length + 4` in all.
    let noted = |length: usize| {
        let note = "x".repeat(length);
        WEB.replace(
            "  labels: {app: web}",
            &format!("  labels: {{app: web}}\n  annotations: {{note: {note}}}"),
        )
    };
    let errors = decode_err(&noted(validation::MAX_ANNOTATION_BYTES));
    assert_eq!(errors.len(), 1, "{:?}", shown(&errors));
    assert_eq!(errors[0].path.as_deref(), Some("metadata.annotations"));
    assert_eq!(errors[0].line, Some(7));
    assert_eq!(
        errors[0].message,
        "too long: 262148 bytes of keys and values, at most 262144 (256 KiB, as in Kubernetes)"
    );
    assert_eq!(
        decode_ok(&noted(validation::MAX_ANNOTATION_BYTES - 4)).len(),
        1
    );
}
