//! `dctl get`: lists objects as tables (or YAML, JSON, names), and with `-w` keeps
//! printing changes.

use std::collections::HashMap;
use std::process::ExitCode;

use clap::Args;
use dctl_apis::selector::LabelSelector;
use dctl_apis::{with_kind, Kind, Resource};
use dctl_runtime::store::Store;
use dctl_runtime::watcher::{self, Event};
use dctl_runtime::ObjectKey;
use futures::StreamExt;

use crate::commands::{namespace_for, parse_kind_and_names, stacks};
use crate::connect;
use crate::exit::{CliError, Exit};
use crate::printers::{OutputFormat, Printable, Printer};

#[derive(Args)]
pub struct GetArgs {
    /// The kind (`services`, `service`, `svc`, …), or KIND/NAME.
    kind: String,
    /// Only these objects.
    names: Vec<String>,
    /// The namespace to look in (default: `default`).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Look in every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,
    /// Only objects whose labels match: `app=web,tier!=db,env in (a,b),!legacy`.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// wide | yaml | json | name
    #[arg(short = 'o', long, value_enum)]
    output: Option<OutputFormat>,
    /// After listing, keep printing changes until interrupted.
    #[arg(short = 'w', long)]
    watch: bool,
}

impl GetArgs {
    /// `get nodes`, for `dctl node ls`.
    pub fn nodes(output: Option<OutputFormat>) -> Self {
        GetArgs {
            kind: "nodes".into(),
            names: Vec::new(),
            namespace: None,
            all_namespaces: false,
            selector: None,
            output,
            watch: false,
        }
    }
}

/// Which objects a `get` shows.
struct Filter {
    names: Vec<String>,
    selector: Option<LabelSelector>,
}

impl Filter {
    fn admits<K: Resource>(&self, object: &K) -> bool {
        let meta = object.meta();
        (self.names.is_empty() || self.names.contains(&meta.name))
            && self
                .selector
                .as_ref()
                .is_none_or(|s| s.matches(&meta.labels))
    }
}

pub async fn run(endpoints: &[String], args: GetArgs) -> Result<ExitCode, CliError> {
    if stacks::is_stack_kind(&args.kind) {
        let store = connect::store(endpoints).await?;
        return stacks::get(&store, &args.kind, &args.names).await;
    }
    let (kind, names) = parse_kind_and_names(&args.kind, &args.names)?;
    let selector = match &args.selector {
        Some(text) => Some(LabelSelector::parse(text).map_err(|err| {
            CliError::new(Exit::Invalid, format!("invalid selector {text:?}: {err}"))
        })?),
        None => None,
    };
    let scope = (kind.namespaced() && !args.all_namespaces)
        .then(|| namespace_for(kind, args.namespace.as_deref()));
    let printer = Printer::new(
        args.output.unwrap_or(OutputFormat::Table),
        kind.namespaced() && args.all_namespaces,
    );
    let filter = Filter { names, selector };
    let store = connect::store(endpoints).await?;
    with_kind!(kind, K => get_kind::<K>(&store, scope, &filter, printer, args.watch).await)
}

async fn get_kind<K: Printable>(
    store: &Store,
    scope: Option<String>,
    filter: &Filter,
    printer: Printer,
    watch: bool,
) -> Result<ExitCode, CliError> {
    if watch {
        return watch_kind::<K>(store, scope, filter, printer).await;
    }
    let list = store.list::<K>(scope.as_deref()).await?;
    let objects: Vec<K> = list
        .items
        .into_iter()
        .filter(|o| filter.admits(o))
        .collect();
    let missing: Vec<&String> = filter
        .names
        .iter()
        .filter(|name| !objects.iter().any(|o| &o.meta().name == *name))
        .collect();
    if objects.is_empty() && missing.is_empty() {
        eprintln!("{}", no_resources_message(K::KIND, scope.as_deref()));
    } else if !objects.is_empty() {
        print!("{}", printer.render(&objects, filter.names.len() == 1));
    }
    if missing.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for name in &missing {
        eprintln!(
            "error: {} \"{name}\" not found",
            K::KIND.as_str().to_ascii_lowercase()
        );
    }
    Ok(ExitCode::from(Exit::NotFound as u8))
}

/// `No resources found in demo namespace.`, as kubectl says it.
fn no_resources_message(kind: Kind, scope: Option<&str>) -> String {
    match scope {
        Some(ns) if kind.namespaced() => format!("No resources found in {ns} namespace."),
        _ => "No resources found".to_string(),
    }
}

/// Prints the current list, then a line per change. The watcher relists by itself after
/// an etcd compaction; a relist prints only what changed while the watch was cut off.
async fn watch_kind<K: Printable>(
    store: &Store,
    scope: Option<String>,
    filter: &Filter,
    mut printer: Printer,
) -> Result<ExitCode, CliError> {
    let mut config = watcher::Config::default();
    if let Some(ns) = scope.clone() {
        config = config.namespace(ns);
    }
    let mut events = watcher::watcher::<K>(store.clone(), config).boxed();
    // What has been printed: each object's resourceVersion.
    let mut printed: HashMap<ObjectKey, i64> = HashMap::new();
    let mut relist: Option<Vec<K>> = None;
    let mut first_list_done = false;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                eprintln!("warning: watch interrupted: {err}; retrying");
                continue;
            }
        };
        match event {
            Event::Init => relist = Some(Vec::new()),
            Event::InitApply(object) => relist.get_or_insert_with(Vec::new).push(object),
            Event::InitDone => {
                let mut listed: Vec<K> = relist
                    .take()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|o| filter.admits(o))
                    .collect();
                listed.sort_by_key(|o| ObjectKey::of(o));
                if !first_list_done {
                    first_list_done = true;
                    if listed.is_empty() {
                        eprintln!("{}", no_resources_message(K::KIND, scope.as_deref()));
                    }
                    print!("{}", printer.render_stream_start(&listed));
                    for object in &listed {
                        printed.insert(ObjectKey::of(object), revision(object));
                    }
                    continue;
                }
                // After a relist: print what changed or vanished while the watch was down.
                let mut seen = HashMap::new();
                for object in &listed {
                    let key = ObjectKey::of(object);
                    if printed.get(&key) != Some(&revision(object)) {
                        print!("{}", printer.render_stream_row(object));
                    }
                    seen.insert(key, revision(object));
                }
                printed.retain(|key, _| seen.contains_key(key));
                printed.extend(seen);
            }
            Event::Apply(object) => {
                if filter.admits(&object) {
                    printed.insert(ObjectKey::of(&object), revision(&object));
                    print!("{}", printer.render_stream_row(&object));
                }
            }
            Event::Delete(object) => {
                if printed.remove(&ObjectKey::of(&object)).is_some() {
                    print!("{}", printer.render_stream_row(&object));
                }
            }
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    Ok(ExitCode::SUCCESS)
}

fn revision<K: Resource>(object: &K) -> i64 {
    object.meta().resource_version.unwrap_or_default()
}
