//! Compose stacks, first-class: `dctl get stacks` and `dctl describe stack NAME`.
//!
//! A stack is the set of Services and Networks labelled `dctl.io/stack=NAME` (the compose
//! project, which is also their namespace).

use std::collections::BTreeMap;
use std::process::ExitCode;

use chrono::Utc;
use dctl_apis::compose::LABEL_STACK;
use dctl_apis::meta::find_condition;
use dctl_apis::{ConditionStatus, Event, Network, Service};
use dctl_runtime::store::Store;

use crate::exit::{CliError, Exit};
use crate::printers::{age, Table};

/// Whether a `get`/`describe` kind argument names stacks.
pub fn is_stack_kind(kind: &str) -> bool {
    let kind = kind.split_once('/').map_or(kind, |(k, _)| k);
    matches!(kind, "stack" | "stacks")
}

/// `NAME` or `stack/NAME` arguments as names.
fn names(kind: &str, rest: &[String]) -> Vec<String> {
    let mut names: Vec<String> = kind
        .split_once('/')
        .map(|(_, n)| n.to_string())
        .into_iter()
        .collect();
    names.extend(
        rest.iter()
            .map(|n| n.split_once('/').map_or(n.as_str(), |(_, n)| n).to_string()),
    );
    names
}

/// A service counts as ready when as many of its tasks are Ready as it wants.
fn is_ready(service: &Service) -> bool {
    service
        .status
        .as_ref()
        .is_some_and(|s| s.replicas > 0 && s.ready_replicas >= s.replicas)
}

/// Every stack's services, by stack name.
async fn stacks(store: &Store) -> Result<BTreeMap<String, Vec<Service>>, CliError> {
    let mut stacks: BTreeMap<String, Vec<Service>> = BTreeMap::new();
    for service in store.list::<Service>(None).await?.items {
        if let Some(stack) = service.metadata.labels.get(LABEL_STACK) {
            stacks.entry(stack.clone()).or_default().push(service);
        }
    }
    Ok(stacks)
}

/// `dctl get stacks [NAME…]`: NAME, SERVICES, READY.
pub async fn get(store: &Store, kind: &str, rest: &[String]) -> Result<ExitCode, CliError> {
    let wanted = names(kind, rest);
    let stacks = stacks(store).await?;
    let mut table = Table::new(vec!["NAME".into(), "SERVICES".into(), "READY".into()]);
    let mut shown = 0;
    for (name, services) in &stacks {
        if !wanted.is_empty() && !wanted.contains(name) {
            continue;
        }
        let ready = services.iter().filter(|s| is_ready(s)).count();
        table.push(vec![
            name.clone(),
            services.len().to_string(),
            format!("{ready}/{} services ready", services.len()),
        ]);
        shown += 1;
    }
    if shown > 0 {
        print!("{}", table.render_all());
    } else if wanted.is_empty() {
        eprintln!("No stacks found.");
    }
    let missing: Vec<&String> = wanted.iter().filter(|n| !stacks.contains_key(*n)).collect();
    for name in &missing {
        eprintln!("Error from server (NotFound): stacks \"{name}\" not found");
    }
    Ok(if missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(Exit::NotFound as u8)
    })
}

/// `dctl describe stack NAME…`: its services with ready counts and what they wait for,
/// its networks, and the events of both.
pub async fn describe(store: &Store, kind: &str, rest: &[String]) -> Result<ExitCode, CliError> {
    let wanted = names(kind, rest);
    if wanted.is_empty() {
        return Err(CliError::usage(
            "name the stack to describe: dctl describe stack NAME",
        ));
    }
    let mut stacks = stacks(store).await?;
    let mut pages = Vec::new();
    for name in &wanted {
        let Some(services) = stacks.remove(name) else {
            return Err(CliError::new(
                Exit::NotFound,
                format!("stack \"{name}\" not found"),
            ));
        };
        pages.push(page(store, name, services).await?);
    }
    print!("{}", pages.join("\n\n"));
    Ok(ExitCode::SUCCESS)
}

async fn page(store: &Store, name: &str, mut services: Vec<Service>) -> Result<String, CliError> {
    let now = Utc::now();
    services.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let networks: Vec<Network> = store
        .list::<Network>(Some(name))
        .await?
        .items
        .into_iter()
        .filter(|n| n.metadata.labels.get(LABEL_STACK).map(String::as_str) == Some(name))
        .collect();
    let ready = services.iter().filter(|s| is_ready(s)).count();
    let mut out = format!(
        "Name:         {name}\nNamespace:    {name}\nReady:        {ready}/{} services ready\nServices:\n",
        services.len()
    );
    let mut table = Table::new(
        [
            "NAME",
            "MODE",
            "READY",
            "IMAGE",
            "DEPENDS ON",
            "WAITING FOR",
        ]
        .map(String::from)
        .to_vec(),
    );
    for service in &services {
        let status = service.status.clone().unwrap_or_default();
        let depends: Vec<String> = service
            .spec
            .depends_on
            .iter()
            .map(|d| format!("{} ({})", d.service, d.condition.as_str()))
            .collect();
        let waiting = find_condition(&status.conditions, "DependenciesReady")
            .filter(|c| c.status == ConditionStatus::False)
            .map(|c| c.message.trim_start_matches("waiting for ").to_string());
        table.push(vec![
            service.metadata.name.clone(),
            service.spec.mode.to_string(),
            format!("{}/{}", status.ready_replicas, status.replicas),
            service.spec.template.image.clone(),
            if depends.is_empty() {
                "-".into()
            } else {
                depends.join(", ")
            },
            waiting.unwrap_or_else(|| "-".into()),
        ]);
    }
    out.push_str(&indent(&table.render_all()));
    out.push_str("Networks:\n");
    if networks.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let mut table = Table::new(["NAME", "DRIVER", "SUBNET"].map(String::from).to_vec());
        for network in &networks {
            table.push(vec![
                network.metadata.name.clone(),
                network.spec.driver.clone(),
                network.spec.subnet.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        out.push_str(&indent(&table.render_all()));
    }
    // The stack's events: those of its services and networks, latest last.
    let events: Vec<Event> = store
        .list::<Event>(Some(name))
        .await?
        .items
        .into_iter()
        .filter(|e| {
            let involved = &e.spec.involved_object;
            match involved.kind.as_str() {
                "Service" => services.iter().any(|s| s.metadata.name == involved.name),
                "Network" => networks.iter().any(|n| n.metadata.name == involved.name),
                _ => false,
            }
        })
        .collect();
    let mut events = events;
    events.sort_by_key(|e| e.spec.last_timestamp);
    out.push_str("Events:");
    if events.is_empty() {
        out.push_str("       <none>\n");
        return Ok(out);
    }
    out.push('\n');
    let mut table = Table::new(
        ["TYPE", "REASON", "AGE", "OBJECT", "MESSAGE"]
            .map(String::from)
            .to_vec(),
    );
    for event in &events {
        let spec = &event.spec;
        table.push(vec![
            format!("{:?}", spec.type_),
            spec.reason.clone(),
            age(&spec.last_timestamp, now),
            format!(
                "{}/{}",
                spec.involved_object.kind.to_ascii_lowercase(),
                spec.involved_object.name
            ),
            spec.message.clone(),
        ]);
    }
    out.push_str(&indent(&table.render_all()));
    Ok(out)
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {}\n", l.trim_end()))
        .collect()
}
