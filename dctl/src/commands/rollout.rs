//! `dctl rollout status|history|undo|pause|resume service/NAME`, as kubectl's.

use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use clap::{Args, Subcommand};
use dctl_apis::revision::template_hash;
use dctl_apis::service::RolloutState;
use dctl_apis::{Kind, Service, ServiceRevision};
use dctl_runtime::store::{Store, StoreError};
use dctl_runtime::ObjectKey;

use crate::commands::{namespace_for, parse_kind, wait};
use crate::connect;
use crate::exit::{CliError, Exit};
use crate::printers::{age, Table};

#[derive(Subcommand)]
pub enum RolloutCommand {
    /// Wait for a service's rollout to finish (exit 1 if it pauses or rolls back).
    Status {
        #[command(flatten)]
        target: Target,
        /// Give up after this long (`90s`, `5m`); by default wait as long as it takes.
        #[arg(long)]
        timeout: Option<dctl_apis::Duration>,
    },
    /// List a service's revisions, or show one with --revision.
    History {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        revision: Option<i64>,
    },
    /// Roll a service back to its previous revision, or to --to-revision.
    Undo {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        to_revision: Option<i64>,
    },
    /// Hold a service's rollout where it is; scaling and restarts go on.
    Pause {
        #[command(flatten)]
        target: Target,
    },
    /// Continue a paused rollout (paused by `pause` or by a failure).
    Resume {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Args)]
pub struct Target {
    /// `service/NAME` (or `NAME`).
    service: String,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

impl Target {
    fn key(&self) -> Result<ObjectKey, CliError> {
        let name = match self.service.split_once('/') {
            Some((kind, name)) => {
                if parse_kind(kind)? != Kind::Service {
                    return Err(CliError::usage(format!(
                        "{}: only services have rollouts",
                        self.service
                    )));
                }
                name
            }
            None => self.service.as_str(),
        };
        if name.is_empty() {
            return Err(CliError::usage("expected service/NAME"));
        }
        let namespace = namespace_for(Kind::Service, self.namespace.as_deref());
        Ok(ObjectKey::new(&namespace, name))
    }
}

pub async fn run(endpoints: &[String], command: RolloutCommand) -> Result<ExitCode, CliError> {
    let store = connect::store(endpoints).await?;
    match command {
        RolloutCommand::Status { target, timeout } => {
            let key = target.key()?;
            get_service(&store, &key).await?;
            wait::rollouts(&store, &[key], timeout.map(|t| t.as_std())).await?;
        }
        RolloutCommand::History { target, revision } => {
            let key = target.key()?;
            let service = get_service(&store, &key).await?;
            let revisions = revisions(&store, &service).await?;
            match revision {
                Some(number) => {
                    let revision = find(&revisions, number, &key)?;
                    print!("{}", dctl_apis::manifest::to_yaml(&revision.spec));
                }
                None => print!("{}", history_table(&service, &revisions)),
            }
        }
        RolloutCommand::Undo {
            target,
            to_revision,
        } => {
            let key = target.key()?;
            let service = get_service(&store, &key).await?;
            let revisions = revisions(&store, &service).await?;
            let current = template_hash(&service.spec.template, &service.spec.placement);
            let revision = match to_revision {
                Some(number) => find(&revisions, number, &key)?,
                None => revisions
                    .iter()
                    .find(|r| template_hash(&r.spec.template, &r.spec.placement) != current)
                    .ok_or_else(|| {
                        CliError::new(
                            Exit::NotFound,
                            format!("service/{}: no earlier revision to roll back to", key.name),
                        )
                    })?,
            };
            let number = revision.spec.revision;
            let mut changed = false;
            store
                .modify::<Service, _>(&key.namespace, &key.name, |service| {
                    changed = service.spec.template != revision.spec.template
                        || service.spec.placement != revision.spec.placement;
                    service.spec.template = revision.spec.template.clone();
                    service.spec.placement = revision.spec.placement.clone();
                    Ok(changed)
                })
                .await?;
            if changed {
                println!("service/{} rolled back to revision {number}", key.name);
            } else {
                println!(
                    "service/{} skipped rollback (it already runs revision {number})",
                    key.name
                );
            }
        }
        RolloutCommand::Pause { target } => {
            let key = target.key()?;
            set_paused(&store, &key, true).await?;
            println!("service/{} paused", key.name);
        }
        RolloutCommand::Resume { target } => {
            let key = target.key()?;
            set_paused(&store, &key, false).await?;
            resume_failed(&store, &key).await?;
            println!("service/{} resumed", key.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn get_service(store: &Store, key: &ObjectKey) -> Result<Service, CliError> {
    store
        .try_get::<Service>(&key.namespace, &key.name)
        .await?
        .ok_or_else(|| {
            CliError::new(
                Exit::NotFound,
                format!(
                    "service {:?} not found in namespace {:?}",
                    key.name, key.namespace
                ),
            )
        })
}

/// The service's revisions, newest first.
async fn revisions(store: &Store, service: &Service) -> Result<Vec<ServiceRevision>, CliError> {
    Ok(dctl_controllers::service::revisions::list(store, service).await?)
}

fn find<'a>(
    revisions: &'a [ServiceRevision],
    number: i64,
    key: &ObjectKey,
) -> Result<&'a ServiceRevision, CliError> {
    revisions
        .iter()
        .find(|r| r.spec.revision == number)
        .ok_or_else(|| {
            let kept: Vec<String> = revisions
                .iter()
                .map(|r| r.spec.revision.to_string())
                .collect();
            CliError::new(
                Exit::NotFound,
                format!(
                    "service/{} has no revision {number} (kept: {})",
                    key.name,
                    kept.join(", ")
                ),
            )
        })
}

fn history_table(service: &Service, revisions: &[ServiceRevision]) -> String {
    let header = ["REVISION", "IMAGE", "CHANGE-CAUSE", "AGE", ""];
    let mut table = Table::new(header.iter().map(ToString::to_string).collect());
    let current = service.status.as_ref().map_or(0, |s| s.revision);
    let now = Utc::now();
    let mut rows: Vec<&ServiceRevision> = revisions.iter().collect();
    rows.reverse();
    for revision in rows {
        let cause = &revision.spec.change_cause;
        table.push(vec![
            revision.spec.revision.to_string(),
            revision.spec.template.image.clone(),
            if cause.is_empty() {
                "<none>".into()
            } else {
                cause.clone()
            },
            age(&revision.metadata.creation_timestamp, now),
            if revision.spec.revision == current {
                "(current)".into()
            } else {
                String::new()
            },
        ]);
    }
    table.render_all()
}

async fn set_paused(store: &Store, key: &ObjectKey, paused: bool) -> Result<(), CliError> {
    store
        .modify::<Service, _>(&key.namespace, &key.name, |service| {
            let changed = service.spec.paused != paused;
            service.spec.paused = paused;
            Ok(changed)
        })
        .await?;
    Ok(())
}

/// A rollout paused by a failure goes on with its failures forgotten and its progress
/// deadline counted from now, as `docker service update` continues a paused update.
async fn resume_failed(store: &Store, key: &ObjectKey) -> Result<(), CliError> {
    for _ in 0..5 {
        let mut service = get_service(store, key).await?;
        let Some(rollout) = service.status.as_mut().and_then(|s| s.rollout.as_mut()) else {
            return Ok(());
        };
        rollout.state = match rollout.state {
            RolloutState::Paused => RolloutState::Updating,
            RolloutState::RollbackPaused => RolloutState::RollbackStarted,
            _ => return Ok(()),
        };
        rollout.failed_tasks.clear();
        rollout.message = "resumed".into();
        rollout.last_progress_at = Some(Utc::now());
        match store.update_status(&service).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => return Err(other.into()),
        }
    }
    Err(CliError::new(
        Exit::Conflict,
        format!("service/{}: status kept changing; try again", key.name),
    ))
}
