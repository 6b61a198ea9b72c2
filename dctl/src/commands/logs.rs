//! `dctl logs`: a service's or a task's container output, read from the agents of their nodes.
//!
//! The CLI never talks to Docker: each task's log comes from the agent of the node it ran
//! on, at the address that Node advertises (`status.agentAddress`), as kubectl reads a
//! pod's log through its kubelet. A service's lines carry Swarm's prefix
//! (`web.1.abcde@node1    | …`); one task's are printed as they are, as `kubectl logs`
//! prints one pod's. Following a service follows its tasks that start later too, as
//! `docker service logs -f` does.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use dctl_apis::task::TaskState;
use dctl_apis::{Kind, Node, Service, Task};
use dctl_controllers::node::log_access;
use dctl_controllers::node::log_server::{self, LogOptions, LogRequest};
use dctl_runtime::store::Store;
use dctl_runtime::watcher::{self, Event};
use futures::stream::FuturesUnordered;
use futures::StreamExt;

use crate::commands::{namespace_for, parse_kind};
use crate::connect;
use crate::exit::{CliError, Exit};

#[derive(Args)]
pub struct LogsArgs {
    /// `service/NAME` (every task of the service that has a container, history
    /// included) or `task/NAME`. A bare NAME is a service, else a task.
    target: String,
    /// Keep printing new lines: of a service until interrupted or the service is deleted,
    /// its tasks that start meanwhile included; of a task until its container stops.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only the last N lines of each task.
    #[arg(long, value_name = "N")]
    tail: Option<u64>,
    /// Put the time each line was written (RFC 3339) in front of it.
    #[arg(short = 't', long)]
    timestamps: bool,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

/// What the command line names.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Service(String),
    Task(String),
    /// A bare name: a service of that name, else a task (as `docker service logs`).
    Either(String),
}

fn parse_target(text: &str) -> Result<Target, CliError> {
    let (kind, name) = match text.split_once('/') {
        Some((kind, name)) => (Some(parse_kind(kind)?), name),
        None => (None, text),
    };
    if name.is_empty() {
        return Err(CliError::usage(format!(
            "{text}: expected service/NAME or task/NAME"
        )));
    }
    match kind {
        None => Ok(Target::Either(name.to_string())),
        Some(Kind::Service) => Ok(Target::Service(name.to_string())),
        Some(Kind::Task) => Ok(Target::Task(name.to_string())),
        Some(other) => Err(CliError::usage(format!(
            "{text}: only services and tasks have logs, not {}s",
            other.as_str().to_ascii_lowercase()
        ))),
    }
}

/// One task whose log is printed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Source {
    task: String,
    node: String,
    /// `web.1.abcde@node1    | `, for lines of a service; none for a single task.
    prefix: Option<String>,
    /// Its container has been started ([`has_started`]).
    started: bool,
}

/// Swarm's `<task>@<node>` labels, padded to one width so the `|` line up.
fn prefixes(labels: &[String]) -> Vec<String> {
    let width = labels.iter().map(String::len).max().unwrap_or(0);
    labels.iter().map(|label| prefix(label, width)).collect()
}

fn prefix(label: &str, width: usize) -> String {
    format!("{label:<width$}    | ")
}

/// `<task>@<node>`, the label of a service's task in front of its lines.
fn label(task: &Task) -> String {
    format!("{}@{}", task.metadata.name, node_of(task))
}

/// Whether `task` is one of `service`'s and got as far as a container: only those have a log.
fn has_log(task: &Task, service: &str) -> bool {
    task.spec.service_name == service
        && task.spec.node_name.is_some()
        && task
            .status
            .as_ref()
            .is_some_and(|s| s.container_id.is_some())
}

/// Whether `task`'s container has been started (it may have ended since).
fn has_started(task: &Task) -> bool {
    task.status
        .as_ref()
        .is_some_and(|s| s.state >= TaskState::Running)
}

/// Cuts a byte stream into lines; a line split across chunks is kept until its end comes.
#[derive(Debug, Default)]
struct LineBuffer {
    partial: Vec<u8>,
}

impl LineBuffer {
    /// The lines `chunk` completes, each with `prefix` in front and its `\n`, as one buffer
    /// (one write keeps another task's lines from landing in the middle of them).
    fn push(&mut self, prefix: &str, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            self.partial.extend_from_slice(piece);
            if piece.ends_with(b"\n") {
                out.extend_from_slice(prefix.as_bytes());
                out.append(&mut self.partial);
            }
        }
        out
    }

    /// The last line when the log ended without a newline, completed with one.
    fn finish(&mut self, prefix: &str) -> Vec<u8> {
        if self.partial.is_empty() {
            return Vec::new();
        }
        let mut out = prefix.as_bytes().to_vec();
        out.append(&mut self.partial);
        out.push(b'\n');
        out
    }
}

pub async fn run(endpoints: &[String], args: LogsArgs) -> Result<ExitCode, CliError> {
    let target = parse_target(&args.target)?;
    let namespace = namespace_for(Kind::Task, args.namespace.as_deref());
    let store = connect::store(endpoints).await?;
    let found = sources(&store, &namespace, target).await?;
    let options = LogOptions {
        follow: args.follow,
        tail: args.tail,
        timestamps: args.timestamps,
    };
    let addresses = agent_addresses(&store, &found.sources).await?;
    let token: Arc<str> = log_access::cluster_token(&store).await?.into();
    if args.follow {
        return follow(&store, &namespace, found, addresses, token, options).await;
    }
    // One task after the other.
    let mut all_read = true;
    for source in &found.sources {
        let request = LogRequest::new(&namespace, &source.task, options);
        match copy_log(source, &addresses[&source.node], &token, request).await {
            Ok(read) => all_read &= read,
            Err(err) => return output_error(err),
        }
    }
    Ok(exit_code(all_read))
}

fn exit_code(all_read: bool) -> ExitCode {
    if all_read {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(Exit::Failure as u8)
    }
}

/// Prints every source's lines as they come. For a service, a task that gets a container
/// later joins with its whole log, and following ends when the service is deleted (once
/// its containers' logs have ended); for a task, when its container stops.
async fn follow(
    store: &Store,
    namespace: &str,
    found: Found,
    mut addresses: HashMap<String, Result<String, String>>,
    token: Arc<str>,
    options: LogOptions,
) -> Result<ExitCode, CliError> {
    // A service's task whose container is created but not started yet joins once it has
    // started, through the watch below: a followed log of it would end at once.
    let for_service = found.service.is_some();
    let now: Vec<Source> = found
        .sources
        .into_iter()
        .filter(|s| s.started || !for_service)
        .collect();
    let mut followed: HashSet<String> = now.iter().map(|s| s.task.clone()).collect();
    let mut copies = FuturesUnordered::new();
    for source in now {
        let address = addresses[&source.node].clone();
        let request = LogRequest::new(namespace, &source.task, options);
        copies.push(copy_owned(source, address, token.clone(), request));
    }
    let mut all_read = true;
    if let Some(service) = found.service {
        let config = watcher::Config::default().namespace(namespace);
        let tasks = watcher::watcher::<Task>(store.clone(), config.clone());
        let services = watcher::watcher::<Service>(store.clone(), config);
        tokio::pin!(tasks, services);
        loop {
            tokio::select! {
                Some(read) = copies.next() => match read {
                    Ok(read) => all_read &= read,
                    Err(err) => return output_error(err),
                },
                Some(event) = tasks.next() => {
                    let task = match event {
                        Ok(Event::Apply(task) | Event::InitApply(task)) => task,
                        Ok(_) => continue,
                        // The watch retries with backoff; say why no new task can join.
                        Err(err) => {
                            eprintln!("warning: cannot watch the service's tasks: {err}; retrying");
                            continue;
                        }
                    };
                    // Not before its container has started: Docker ends a followed log of
                    // a container that is only created at once, and its lines would be lost.
                    if !has_log(&task, &service)
                        || !has_started(&task)
                        || followed.contains(&task.metadata.name)
                    {
                        continue;
                    }
                    let source = Source {
                        task: task.metadata.name.clone(),
                        node: node_of(&task).to_string(),
                        prefix: Some(prefix(&label(&task), found.label_width)),
                        started: true,
                    };
                    if !addresses.contains_key(&source.node) {
                        addresses.extend(agent_addresses(store, std::slice::from_ref(&source)).await?);
                    }
                    followed.insert(source.task.clone());
                    // It started after following began: all its output is new.
                    let request = LogRequest::new(namespace, &source.task, LogOptions { tail: None, ..options });
                    let address = addresses[&source.node].clone();
                    copies.push(copy_owned(source, address, token.clone(), request));
                },
                Some(event) = services.next() => {
                    if matches!(&event, Ok(Event::Delete(gone)) if gone.metadata.name == service) {
                        break;
                    }
                },
            }
        }
    }
    while let Some(read) = copies.next().await {
        match read {
            Ok(read) => all_read &= read,
            Err(err) => return output_error(err),
        }
    }
    Ok(exit_code(all_read))
}

/// Standard output closed under us (`dctl logs … | head`): a normal way to stop.
fn output_error(err: io::Error) -> Result<ExitCode, CliError> {
    if err.kind() == io::ErrorKind::BrokenPipe {
        return Ok(ExitCode::SUCCESS);
    }
    Err(CliError::internal(format!("cannot write the log: {err}")))
}

/// The tasks whose logs are read: the one named, or those of the service named.
struct Found {
    /// The service named, if a service was.
    service: Option<String>,
    sources: Vec<Source>,
    /// The longest `<task>@<node>` label, so tasks that join later line up with these.
    label_width: usize,
}

/// The tasks to read: the one named, or every task of the service named that has a
/// container (prefixed).
async fn sources(store: &Store, namespace: &str, target: Target) -> Result<Found, CliError> {
    let not_found = |kind: &str, name: &str| {
        let message = format!("{kind} \"{name}\" not found in namespace \"{namespace}\"");
        CliError::new(Exit::NotFound, message)
    };
    let (service, task) = match target {
        Target::Service(name) => (Some(name), None),
        Target::Task(name) => (None, Some(name)),
        Target::Either(name) => match store.try_get::<Service>(namespace, &name).await? {
            Some(_) => (Some(name), None),
            None => (None, Some(name)),
        },
    };
    if let Some(name) = task {
        let task: Task = store
            .try_get(namespace, &name)
            .await?
            .ok_or_else(|| not_found("task", &name))?;
        let started = has_started(&task);
        let Some(node) = task.spec.node_name else {
            return Err(CliError::internal(format!(
                "task {name} is not scheduled to a node yet: it has no log"
            )));
        };
        let source = Source {
            task: name,
            node,
            prefix: None,
            started,
        };
        return Ok(Found {
            service: None,
            sources: vec![source],
            label_width: 0,
        });
    }
    let name = service.expect("a service when not a task");
    if store.try_get::<Service>(namespace, &name).await?.is_none() {
        return Err(not_found("service", &name));
    }
    let mut tasks: Vec<Task> = store
        .list::<Task>(Some(namespace))
        .await?
        .items
        .into_iter()
        .filter(|t| has_log(t, &name))
        .collect();
    tasks.sort_by(|a, b| {
        let order = |t: &Task| {
            (
                t.spec.slot,
                t.spec.node.clone(),
                t.metadata.creation_timestamp,
            )
        };
        order(a).cmp(&order(b))
    });
    let labels: Vec<String> = tasks.iter().map(label).collect();
    let sources = tasks
        .iter()
        .zip(prefixes(&labels))
        .map(|(task, prefix)| Source {
            task: task.metadata.name.clone(),
            node: node_of(task).to_string(),
            prefix: Some(prefix),
            started: has_started(task),
        })
        .collect();
    Ok(Found {
        service: Some(name),
        label_width: labels.iter().map(String::len).max().unwrap_or(0),
        sources,
    })
}

fn node_of(task: &Task) -> &str {
    task.spec.node_name.as_deref().unwrap_or_default()
}

/// Each node's advertised agent address, or why there is none to ask.
async fn agent_addresses(
    store: &Store,
    sources: &[Source],
) -> Result<HashMap<String, Result<String, String>>, CliError> {
    let mut addresses = HashMap::new();
    for source in sources {
        if addresses.contains_key(&source.node) {
            continue;
        }
        let node = &source.node;
        let address = match store.try_get::<Node>("", node).await? {
            None => Err(format!(
                "node {node} is not registered (see dctl get nodes)"
            )),
            Some(found) => found.status.and_then(|s| s.agent_address).ok_or_else(|| {
                format!(
                    "node {node} advertises no agent address (status.agentAddress): its \
                         agent has not reported one yet, or predates dctl logs"
                )
            }),
        };
        addresses.insert(node.clone(), address);
    }
    Ok(addresses)
}

/// [`copy_log`] owning what it reads, for logs followed side by side.
async fn copy_owned(
    source: Source,
    address: Result<String, String>,
    token: Arc<str>,
    request: LogRequest,
) -> io::Result<bool> {
    copy_log(&source, &address, &token, request).await
}

/// Prints one task's log; `Ok(false)` when it could not be read (said on stderr), `Err`
/// only when standard output fails.
async fn copy_log(
    source: &Source,
    address: &Result<String, String>,
    token: &str,
    request: LogRequest,
) -> io::Result<bool> {
    let failed = |reason: &dyn std::fmt::Display| {
        eprintln!(
            "error: cannot read the log of task {} from node {}: {reason}",
            source.task, source.node
        );
        Ok(false)
    };
    let address = match address {
        Ok(address) => address,
        Err(reason) => return failed(reason),
    };
    let mut log = match log_server::fetch(address, token, &request).await {
        Ok(log) => log,
        // The container of a finished task was removed since: nothing left to show.
        Err(err) if source.prefix.is_some() && err.is_not_found() => return Ok(true),
        Err(err) => return failed(&err),
    };
    let mut lines = LineBuffer::default();
    let prefix = source.prefix.as_deref();
    while let Some(chunk) = log.chunk().await {
        match chunk {
            Ok(bytes) => match prefix {
                Some(prefix) => write_out(&lines.push(prefix, &bytes))?,
                // A single task's output goes through untouched, partial lines included.
                None => write_out(&bytes)?,
            },
            Err(err) => {
                write_out(&lines.finish(prefix.unwrap_or_default()))?;
                return failed(&format!("the log was cut short: {err}"));
            }
        }
    }
    write_out(&lines.finish(prefix.unwrap_or_default()))?;
    Ok(true)
}

/// One write and a flush: whole lines reach the terminal together and at once.
fn write_out(bytes: &[u8]) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let mut stdout = io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_take_kubectl_and_swarm_spellings() {
        let service = |n: &str| Target::Service(n.into());
        assert_eq!(parse_target("service/web").unwrap(), service("web"));
        assert_eq!(parse_target("svc/web").unwrap(), service("web"));
        let task = Target::Task("web.1.abcde".into());
        assert_eq!(parse_target("task/web.1.abcde").unwrap(), task);
        assert_eq!(parse_target("tasks/web.1.abcde").unwrap(), task);
        assert_eq!(parse_target("web").unwrap(), Target::Either("web".into()));
        for bad in ["node/n1", "service/", "", "nokind/web"] {
            let err = parse_target(bad).unwrap_err();
            assert_eq!(err.exit, Exit::Usage, "{bad}");
        }
    }

    #[test]
    fn prefixes_line_up_like_docker_service_logs() {
        let labels = ["web.1.abcde@node1".to_string(), "web.10.fghij@n2".into()];
        assert_eq!(
            prefixes(&labels),
            ["web.1.abcde@node1    | ", "web.10.fghij@n2      | "]
        );
        assert!(prefixes(&[]).is_empty());
    }

    #[test]
    fn lines_split_across_chunks_are_joined_before_their_prefix() {
        let mut lines = LineBuffer::default();
        let p = "t@n | ";
        assert_eq!(lines.push(p, b"one\ntw"), b"t@n | one\n");
        assert_eq!(lines.push(p, b"o"), b"");
        assert_eq!(
            lines.push(p, b"\n\nthree\nfo"),
            b"t@n | two\nt@n | \nt@n | three\n"
        );
        assert_eq!(lines.finish(p), b"t@n | fo\n");
        assert_eq!(lines.finish(p), b"");
        // Bytes that are not UTF-8 pass through as they are.
        assert_eq!(lines.push("", b"\xff\xfe\n"), b"\xff\xfe\n");
    }
}
