//! Waits for services' rollouts to finish, for `dctl rollout status` and `dctl apply
//! --wait`: a live line per service on a terminal ("2/3 updated, 3/3 ready"), a plain line
//! per change otherwise, and an exit code that says whether every rollout succeeded.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use dctl_apis::revision::template_hash;
use dctl_apis::service::{RolloutState, ServiceMode};
use dctl_apis::Service;
use dctl_runtime::store::Store;
use dctl_runtime::ObjectKey;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::exit::{CliError, Exit};

/// How often the services are read again (kubectl's rollout status watches; a read every
/// quarter second costs etcd nothing and survives its restarts without a resumable watch).
const POLL: Duration = Duration::from_millis(250);

/// Where one service's rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Still going; the text says how far.
    Rolling(String),
    Done(String),
    /// Paused, rolled back, or gone: the rollout did not reach its template.
    Failed(String),
}

/// Reads where `service`'s rollout stands from its status.
pub fn progress(service: &Service) -> Progress {
    let Some(status) = service.status.as_ref() else {
        return Progress::Rolling("waiting for the service controller".into());
    };
    if status.observed_generation < service.metadata.generation
        || status.revision_hash != template_hash(&service.spec.template, &service.spec.placement)
    {
        return Progress::Rolling("waiting for the service controller to see the change".into());
    }
    let desired = match service.spec.mode {
        ServiceMode::Replicated => service.spec.replicas.unwrap_or(1),
        ServiceMode::Global => status.replicas,
    };
    let counts = format!(
        "{}/{desired} updated, {}/{desired} ready",
        status.updated_replicas.min(desired),
        status.ready_replicas.min(desired)
    );
    let rollout = status
        .rollout
        .as_ref()
        .filter(|r| r.target == status.revision_hash);
    match rollout.map(|r| (r.state, r.message.as_str())) {
        Some((RolloutState::Completed, _)) | None
            if status.updated_replicas >= desired && status.ready_replicas >= desired =>
        {
            Progress::Done(format!(
                "{counts}: rolled out (revision {})",
                status.revision
            ))
        }
        Some((RolloutState::Paused | RolloutState::RollbackPaused, message)) => {
            Progress::Failed(format!("{counts}: {message}"))
        }
        Some((RolloutState::RollbackCompleted, message)) => {
            Progress::Failed(format!("{counts}: {message}"))
        }
        Some((RolloutState::RollbackStarted, message)) => {
            Progress::Rolling(format!("{counts}: {message}"))
        }
        _ => Progress::Rolling(counts),
    }
}

/// Waits until every service in `services` has finished rolling out (or `timeout`, when
/// set, runs out), showing progress on standard output. Succeeds only if all succeeded.
///
/// # Errors
/// A rollout that paused or rolled back, a service deleted meanwhile, the timeout, and
/// store errors.
pub async fn rollouts(
    store: &Store,
    services: &[ObjectKey],
    timeout: Option<Duration>,
) -> Result<(), CliError> {
    let started = Instant::now();
    let mut display = Display::new(services);
    let mut finished: BTreeMap<ObjectKey, Progress> = BTreeMap::new();
    loop {
        for key in services {
            if finished.contains_key(key) {
                continue;
            }
            let service = store.try_get::<Service>(&key.namespace, &key.name).await?;
            let progress = match service {
                Some(service) => progress(&service),
                None => Progress::Failed("deleted while waiting".into()),
            };
            display.show(key, &progress);
            if !matches!(progress, Progress::Rolling(_)) {
                finished.insert(key.clone(), progress);
            }
        }
        if finished.len() == services.len() {
            break;
        }
        if timeout.is_some_and(|timeout| started.elapsed() >= timeout) {
            display.finish();
            return Err(CliError::new(
                Exit::Failure,
                format!(
                    "timed out after {} waiting for rollouts",
                    dctl_apis::Duration::from(timeout.unwrap_or_default())
                ),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    display.finish();
    let failed: Vec<String> = finished
        .iter()
        .filter_map(|(key, progress)| match progress {
            Progress::Failed(why) => Some(format!("service/{}: {why}", key.name)),
            _ => None,
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::new(
            Exit::Failure,
            format!("rollout failed: {}", failed.join("; ")),
        ))
    }
}

/// Progress lines: redrawn in place on a terminal, printed when they change otherwise.
struct Display {
    bars: Option<(MultiProgress, BTreeMap<ObjectKey, ProgressBar>)>,
    last: BTreeMap<ObjectKey, String>,
}

impl Display {
    fn new(services: &[ObjectKey]) -> Self {
        let bars = std::io::stdout().is_terminal().then(|| {
            let multi = MultiProgress::new();
            let style = ProgressStyle::with_template("{spinner} {prefix}: {wide_msg}")
                .expect("a valid template");
            let bars = services
                .iter()
                .map(|key| {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(style.clone());
                    bar.set_prefix(format!("service/{}", key.name));
                    bar.enable_steady_tick(Duration::from_millis(120));
                    (key.clone(), bar)
                })
                .collect();
            (multi, bars)
        });
        Display {
            bars,
            last: BTreeMap::new(),
        }
    }

    fn show(&mut self, key: &ObjectKey, progress: &Progress) {
        let text = match progress {
            Progress::Rolling(text) => text.clone(),
            Progress::Done(text) => text.clone(),
            Progress::Failed(text) => format!("FAILED: {text}"),
        };
        if self.last.get(key) == Some(&text) {
            return;
        }
        match &self.bars {
            Some((_, bars)) => {
                let bar = &bars[key];
                if matches!(progress, Progress::Rolling(_)) {
                    bar.set_message(text.clone());
                } else {
                    bar.finish_with_message(text.clone());
                }
            }
            None => println!("service/{}: {text}", key.name),
        }
        self.last.insert(key.clone(), text);
    }

    fn finish(&self) {
        if let Some((_, bars)) = &self.bars {
            for bar in bars.values().filter(|bar| !bar.is_finished()) {
                bar.abandon();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use dctl_apis::service::{RolloutStatus, ServiceSpec, ServiceStatus};
    use dctl_apis::ObjectMeta;

    use super::*;

    fn service(status: impl FnOnce(&mut ServiceStatus, &str)) -> Service {
        let mut service = Service::new(ObjectMeta::named("demo", "web"), ServiceSpec::default());
        service.spec.replicas = Some(3);
        service.metadata.generation = 2;
        let hash = template_hash(&service.spec.template, &service.spec.placement);
        let mut s = ServiceStatus {
            observed_generation: 2,
            revision: 2,
            revision_hash: hash.clone(),
            ..ServiceStatus::default()
        };
        status(&mut s, &hash);
        service.status = Some(s);
        service
    }

    fn rollout(state: RolloutState, target: &str, message: &str) -> Option<RolloutStatus> {
        Some(RolloutStatus {
            state,
            message: message.into(),
            revision: 2,
            target: target.into(),
            started_at: None,
            completed_at: None,
            last_progress_at: None,
            slots: 3,
            progress: 0,
            failed_tasks: Vec::new(),
        })
    }

    #[test]
    fn progress_reads_the_rollout_and_the_counts() {
        let rolling = service(|s, hash| {
            s.updated_replicas = 2;
            s.ready_replicas = 3;
            s.rollout = rollout(RolloutState::Updating, hash, "");
        });
        assert_eq!(
            progress(&rolling),
            Progress::Rolling("2/3 updated, 3/3 ready".into())
        );
        let done = service(|s, hash| {
            (s.updated_replicas, s.ready_replicas) = (3, 3);
            s.rollout = rollout(RolloutState::Completed, hash, "");
        });
        assert!(matches!(progress(&done), Progress::Done(_)));
        let new_service = service(|s, _| (s.updated_replicas, s.ready_replicas) = (3, 3));
        assert!(matches!(progress(&new_service), Progress::Done(_)));
        let paused = service(|s, hash| {
            s.rollout = rollout(RolloutState::Paused, hash, "paused: task x failed");
        });
        assert_eq!(
            progress(&paused),
            Progress::Failed("0/3 updated, 0/3 ready: paused: task x failed".into())
        );
        let rolled_back = service(|s, hash| {
            (s.updated_replicas, s.ready_replicas) = (3, 3);
            s.rollout = rollout(RolloutState::RollbackCompleted, hash, "rollback completed");
        });
        assert!(matches!(progress(&rolled_back), Progress::Failed(_)));
        let unseen = service(|s, _| s.observed_generation = 1);
        assert!(matches!(progress(&unseen), Progress::Rolling(_)));
    }
}
