//! What probe verdicts and Docker health mean for a task's `Started`, `Live` and `Ready`.

use dctl_apis::probe::ProbeKind;
use dctl_apis::task::{CONDITION_LIVE, CONDITION_READY, CONDITION_STARTED};
use dctl_apis::{Condition, ConditionStatus, Time};

use super::health::Health;
use super::prober::Verdict;

/// `Started` after the startup probe passed.
pub const REASON_STARTUP_SUCCEEDED: &str = "StartupProbeSucceeded";
pub const REASON_STARTUP_FAILED: &str = "StartupProbeFailed";
pub const REASON_LIVENESS_FAILED: &str = "LivenessProbeFailed";
pub const REASON_READINESS_SUCCEEDED: &str = "ReadinessProbeSucceeded";
pub const REASON_READINESS_FAILED: &str = "ReadinessProbeFailed";
/// Docker's HEALTHCHECK has not passed yet: out of traffic.
pub const REASON_HEALTH_STARTING: &str = "HealthStarting";
/// Docker's HEALTHCHECK says unhealthy: out of traffic (and killed by the liveness loop).
pub const REASON_HEALTH_UNHEALTHY: &str = "HealthUnhealthy";
/// Ready without a readiness probe: started, and Docker's HEALTHCHECK (if any) healthy.
pub const REASON_STARTED: &str = "TaskStarted";
/// Written by the task runtime before it stops a task; no prober overwrites it.
pub use crate::endpoints::build::REASON_TERMINATING;

/// A condition as the probers write it.
pub fn condition(
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time: now,
        observed_generation: None,
    }
}

/// `Ready` as the readiness probe's verdict (`None`: the task has no readiness probe) and
/// Docker's health make it; `None` while undecided (the probe has neither passed nor
/// failed enough yet), when the current condition stays as it is.
pub fn readiness(verdict: Option<&Verdict>, health: &Health, now: Time) -> Option<Condition> {
    let not_ready = |reason: &str, message: &str| {
        Some(condition(
            CONDITION_READY,
            ConditionStatus::False,
            reason,
            message,
            now,
        ))
    };
    match health {
        Health::Starting => {
            return not_ready(REASON_HEALTH_STARTING, "Docker HEALTHCHECK is starting")
        }
        Health::Unhealthy(output) => return not_ready(REASON_HEALTH_UNHEALTHY, output),
        Health::None | Health::Healthy => {}
    }
    let ready = |reason: &str| {
        Some(condition(
            CONDITION_READY,
            ConditionStatus::True,
            reason,
            "",
            now,
        ))
    };
    match verdict {
        None => ready(REASON_STARTED),
        Some(Verdict::Unknown) => None,
        Some(Verdict::Passing) => ready(REASON_READINESS_SUCCEEDED),
        Some(Verdict::Failing(output)) => not_ready(REASON_READINESS_FAILED, output),
    }
}

/// What a startup or liveness failure beyond its threshold writes before the container is
/// stopped: the probe's own condition `False`, and `Ready` `False` so traffic stops first.
pub fn fatal_failure(kind: ProbeKind, output: &str, now: Time) -> Vec<Condition> {
    let (type_, reason) = match kind {
        ProbeKind::Startup => (CONDITION_STARTED, REASON_STARTUP_FAILED),
        ProbeKind::Liveness | ProbeKind::Readiness => (CONDITION_LIVE, REASON_LIVENESS_FAILED),
    };
    [type_, CONDITION_READY]
        .into_iter()
        .map(|type_| condition(type_, ConditionStatus::False, reason, output, now))
        .collect()
}

/// `Startup`, `Liveness`, `Readiness`: how events name a probe.
pub fn title(kind: ProbeKind) -> &'static str {
    match kind {
        ProbeKind::Startup => "Startup",
        ProbeKind::Liveness => "Liveness",
        ProbeKind::Readiness => "Readiness",
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    /// (probe verdict, health, the Ready written as (status, reason, message)).
    type Case<'a> = (
        Option<&'a Verdict>,
        Health,
        Option<(ConditionStatus, &'a str, &'a str)>,
    );

    #[test]
    fn readiness_combines_the_probe_and_docker_health() {
        use ConditionStatus::{False, True};
        let now = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let failing = Verdict::Failing("HTTP 503".into());
        let unhealthy = Health::Unhealthy("Docker HEALTHCHECK unhealthy".into());
        let cases: Vec<Case<'_>> = vec![
            (None, Health::None, Some((True, REASON_STARTED, ""))),
            (None, Health::Healthy, Some((True, REASON_STARTED, ""))),
            (
                None,
                Health::Starting,
                Some((
                    False,
                    REASON_HEALTH_STARTING,
                    "Docker HEALTHCHECK is starting",
                )),
            ),
            (
                None,
                unhealthy.clone(),
                Some((
                    False,
                    REASON_HEALTH_UNHEALTHY,
                    "Docker HEALTHCHECK unhealthy",
                )),
            ),
            (Some(&Verdict::Unknown), Health::None, None),
            (
                Some(&Verdict::Unknown),
                Health::Starting,
                Some((
                    False,
                    REASON_HEALTH_STARTING,
                    "Docker HEALTHCHECK is starting",
                )),
            ),
            (
                Some(&Verdict::Passing),
                Health::None,
                Some((True, REASON_READINESS_SUCCEEDED, "")),
            ),
            (
                Some(&Verdict::Passing),
                Health::Starting,
                Some((
                    False,
                    REASON_HEALTH_STARTING,
                    "Docker HEALTHCHECK is starting",
                )),
            ),
            (
                Some(&failing),
                Health::Healthy,
                Some((False, REASON_READINESS_FAILED, "HTTP 503")),
            ),
        ];
        for (verdict, health, expected) in cases {
            let got = readiness(verdict, &health, now);
            let got = got
                .as_ref()
                .map(|c| (c.status, c.reason.as_str(), c.message.as_str()));
            assert_eq!(got, expected, "{verdict:?} {health:?}");
        }
    }

    #[test]
    fn fatal_failures_clear_the_probes_condition_and_ready() {
        let now = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let written = fatal_failure(ProbeKind::Startup, "connection refused", now);
        let summary: Vec<(&str, &str)> = written
            .iter()
            .map(|c| (c.type_.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (CONDITION_STARTED, REASON_STARTUP_FAILED),
                (CONDITION_READY, REASON_STARTUP_FAILED)
            ]
        );
        let written = fatal_failure(ProbeKind::Liveness, "HTTP 500", now);
        assert_eq!(written[0].type_, CONDITION_LIVE);
        assert!(written.iter().all(|c| c.status == ConditionStatus::False));
        assert!(written.iter().all(|c| c.message == "HTTP 500"));
    }
}
