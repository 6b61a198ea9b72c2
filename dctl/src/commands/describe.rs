//! `dctl describe`: one object for a human: metadata, spec, status, conditions, events.

use std::fmt::Write;
use std::process::ExitCode;

use chrono::Utc;
use clap::Args;
use dctl_apis::event::ObjectReference;
use dctl_apis::{manifest, with_kind, Condition, Resource};
use dctl_runtime::events;
use dctl_runtime::store::Store;
use serde_json::Value;

use crate::commands::{namespace_for, parse_kind_and_names, stacks};
use crate::connect;
use crate::exit::CliError;
use crate::printers::{age, Table};

#[derive(Args)]
pub struct DescribeArgs {
    /// The kind, or KIND/NAME.
    kind: String,
    /// The objects to describe.
    names: Vec<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

pub async fn run(endpoints: &[String], args: DescribeArgs) -> Result<ExitCode, CliError> {
    if stacks::is_stack_kind(&args.kind) {
        let store = connect::store(endpoints).await?;
        return stacks::describe(&store, &args.kind, &args.names).await;
    }
    let (kind, names) = parse_kind_and_names(&args.kind, &args.names)?;
    if names.is_empty() {
        return Err(CliError::usage(format!(
            "name the {} to describe: dctl describe {} NAME",
            kind.as_str().to_ascii_lowercase(),
            kind.as_str().to_ascii_lowercase()
        )));
    }
    let namespace = namespace_for(kind, args.namespace.as_deref());
    let store = connect::store(endpoints).await?;
    let mut pages = Vec::new();
    for name in &names {
        let page = with_kind!(kind, K => describe::<K>(&store, &namespace, name).await)?;
        pages.push(page);
    }
    print!("{}", pages.join("\n\n"));
    Ok(ExitCode::SUCCESS)
}

async fn describe<K: Resource>(
    store: &Store,
    namespace: &str,
    name: &str,
) -> Result<String, CliError> {
    let object: K = store.get(namespace, name).await?;
    let events = events::list_for(store, &ObjectReference::to(&object)).await?;
    let now = Utc::now();
    let meta = object.meta();
    let value = serde_json::to_value(&object).expect("resources serialize");

    let mut out = String::new();
    field(&mut out, "Name", &meta.name);
    if K::KIND.namespaced() {
        field(&mut out, "Namespace", meta.namespace());
    }
    field(&mut out, "Kind", K::KIND.as_str());
    map_field(&mut out, "Labels", &meta.labels);
    map_field(&mut out, "Annotations", &meta.annotations);
    let created = match meta.creation_timestamp {
        Some(t) => format!("{} ({} ago)", t.to_rfc3339(), age(&Some(t), now)),
        None => "<unknown>".into(),
    };
    field(&mut out, "Created", &created);
    field(&mut out, "UID", &meta.uid);
    field(&mut out, "Generation", &meta.generation.to_string());
    if let Some(t) = meta.deletion_timestamp {
        field(&mut out, "Deleting since", &t.to_rfc3339());
    }
    if !meta.finalizers.is_empty() {
        field(&mut out, "Finalizers", &meta.finalizers.join(", "));
    }
    for owner in &meta.owner_references {
        field(
            &mut out,
            "Owned by",
            &format!("{}/{}", owner.kind.to_ascii_lowercase(), owner.name),
        );
    }

    out.push_str("Spec:\n");
    out.push_str(&indented(&manifest::to_yaml(&value["spec"])));

    let mut status = value.get("status").cloned().unwrap_or(Value::Null);
    let conditions: Vec<Condition> = status
        .get("conditions")
        .cloned()
        .and_then(|c| serde_json::from_value(c).ok())
        .unwrap_or_default();
    if let Some(map) = status.as_object_mut() {
        map.remove("conditions");
    }
    match &status {
        Value::Object(map) if !map.is_empty() => {
            out.push_str("Status:\n");
            out.push_str(&indented(&manifest::to_yaml(&status)));
        }
        _ => out.push_str("Status:       <none>\n"),
    }

    out.push_str("Conditions:\n");
    if conditions.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let mut rows = vec![vec![
            "Type".to_string(),
            "Status".into(),
            "Reason".into(),
            "Age".into(),
            "Message".into(),
        ]];
        for c in &conditions {
            rows.push(vec![
                c.type_.clone(),
                format!("{:?}", c.status),
                c.reason.clone(),
                age(&Some(c.last_transition_time), now),
                c.message.clone(),
            ]);
        }
        out.push_str(&aligned(&rows));
    }

    out.push_str("Events:");
    if events.is_empty() {
        out.push_str("       <none>\n");
    } else {
        out.push('\n');
        let mut rows = vec![vec![
            "Type".to_string(),
            "Reason".into(),
            "Age".into(),
            "From".into(),
            "Message".into(),
        ]];
        for event in &events {
            let spec = &event.spec;
            let seen = if spec.count > 1 {
                format!(
                    "{} (x{} over {})",
                    age(&spec.last_timestamp, now),
                    spec.count,
                    age(&spec.first_timestamp, now)
                )
            } else {
                age(&spec.last_timestamp, now)
            };
            rows.push(vec![
                format!("{:?}", spec.type_),
                spec.reason.clone(),
                seen,
                spec.source.component.clone(),
                spec.message.clone(),
            ]);
        }
        out.push_str(&aligned(&rows));
    }
    Ok(out)
}

fn field(out: &mut String, name: &str, value: &str) {
    let _ = writeln!(out, "{:<14}{}", format!("{name}:"), value);
}

fn map_field(out: &mut String, name: &str, map: &std::collections::BTreeMap<String, String>) {
    if map.is_empty() {
        return field(out, name, "<none>");
    }
    for (i, (k, v)) in map.iter().enumerate() {
        let title = if i == 0 {
            format!("{name}:")
        } else {
            String::new()
        };
        let _ = writeln!(out, "{title:<14}{k}={v}");
    }
}

fn indented(text: &str) -> String {
    text.lines().map(|line| format!("  {line}\n")).collect()
}

/// Rows indented by two spaces under an underlined header (kubectl describe's layout).
fn aligned(rows: &[Vec<String>]) -> String {
    let Some((header, body)) = rows.split_first() else {
        return String::new();
    };
    let mut table = Table::new(header.clone());
    table.push(
        header
            .iter()
            .map(|h| "-".repeat(h.chars().count()))
            .collect(),
    );
    for row in body {
        table.push(row.clone());
    }
    table
        .render_all()
        .lines()
        .map(|line| format!("  {}\n", line.trim_end()))
        .collect()
}
