//! `dctl describe`: one object for a human: metadata, spec, status, conditions, events.

use std::fmt::Write;
use std::process::ExitCode;

use chrono::Utc;
use clap::Args;
use dctl_apis::event::ObjectReference;
use dctl_apis::gitsync::{InventoryEntry, SyncError};
use dctl_apis::{manifest, with_kind, Condition, Kind, Resource};
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
    // A GitSync's inventory may name hundreds of objects: summed up below instead.
    let gitsync = if K::KIND == Kind::GitSync {
        gitsync_sections(&mut status)
    } else {
        String::new()
    };
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

    out.push_str(&gitsync);

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

/// How many inventory entries of each kind `describe gitsync` lists before summing up.
const INVENTORY_SHOWN: usize = 10;

/// A GitSync's `Errors:` and `Inventory:` sections, taken out of its status.
fn gitsync_sections(status: &mut Value) -> String {
    let Some(map) = status.as_object_mut() else {
        return String::new();
    };
    let errors: Vec<SyncError> = map
        .remove("errors")
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let inventory: Vec<InventoryEntry> = map
        .remove("inventory")
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let mut out = String::from("Errors:");
    if errors.is_empty() {
        out.push_str("       <none>\n");
    } else {
        out.push('\n');
        for error in &errors {
            let _ = writeln!(out, "  {error}");
        }
    }
    let _ = write!(out, "Inventory:    {} objects", inventory.len());
    let mut by_kind: std::collections::BTreeMap<Kind, Vec<&InventoryEntry>> = Default::default();
    for entry in &inventory {
        by_kind.entry(entry.kind).or_default().push(entry);
    }
    let counts: Vec<String> = by_kind
        .iter()
        .map(|(kind, entries)| format!("{} {}", entries.len(), kind.plural()))
        .collect();
    if !counts.is_empty() {
        let _ = write!(out, " ({})", counts.join(", "));
    }
    out.push('\n');
    for entries in by_kind.values() {
        for entry in entries.iter().take(INVENTORY_SHOWN) {
            let _ = writeln!(out, "  {entry}");
        }
        if entries.len() > INVENTORY_SHOWN {
            let _ = writeln!(out, "  … and {} more", entries.len() - INVENTORY_SHOWN);
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitsync_status_shows_errors_and_sums_up_its_inventory() {
        let mut inventory: Vec<Value> = (0..12)
            .map(|i| serde_json::json!({"kind": "Service", "namespace": "demo", "name": format!("s{i:02}")}))
            .collect();
        inventory
            .push(serde_json::json!({"kind": "Network", "namespace": "demo", "name": "backend"}));
        let mut status = serde_json::json!({
            "lastAppliedRevision": "main@abc",
            "errors": [{"file": "web.yaml", "document": 1, "line": 3, "field": "spec.replicas",
                        "message": "invalid"}],
            "inventory": inventory,
        });
        let text = gitsync_sections(&mut status);
        assert_eq!(
            status,
            serde_json::json!({"lastAppliedRevision": "main@abc"})
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Errors:");
        assert_eq!(
            lines[1],
            "  web.yaml: document 1 (line 3): spec.replicas: invalid"
        );
        assert_eq!(
            lines[2],
            "Inventory:    13 objects (12 services, 1 networks)"
        );
        assert_eq!(lines[3], "  service/demo/s00");
        assert_eq!(lines[13], "  … and 2 more");
        assert_eq!(lines[14], "  network/demo/backend");
    }
}
