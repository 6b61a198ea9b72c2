//! One probe's state machine: when to probe next, and when its results change its verdict.
//!
//! Pure: it is fed results and instants, and says what changed; the loops around it do
//! the probing and the writing. Kubernetes' rules: no probe before `initialDelaySeconds`,
//! one every `periodSeconds`, and the verdict flips only after `successThreshold`
//! consecutive successes or `failureThreshold` consecutive failures.

use std::time::Duration;

use dctl_apis::probe::{Probe, ProbeKind};
use tokio::time::Instant;

/// A probe's timings, defaults filled in (a zero means unset, as in Kubernetes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timings {
    pub fn of(probe: &Probe) -> Timings {
        let seconds = |value: i32, default: i32| {
            let value = if value > 0 { value } else { default };
            Duration::from_secs(u64::from(value.unsigned_abs()))
        };
        let count = |value: i32, default: i32| {
            let value = if value > 0 { value } else { default };
            value.unsigned_abs()
        };
        Timings {
            initial_delay: seconds(probe.initial_delay_seconds, 0),
            period: seconds(probe.period_seconds, Probe::DEFAULT_PERIOD_SECONDS),
            timeout: seconds(probe.timeout_seconds, Probe::DEFAULT_TIMEOUT_SECONDS),
            success_threshold: count(probe.success_threshold, Probe::DEFAULT_SUCCESS_THRESHOLD),
            failure_threshold: count(probe.failure_threshold, Probe::DEFAULT_FAILURE_THRESHOLD),
        }
    }
}

/// What one probe attempt found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeResult {
    Success,
    /// With the probe's output for humans: `HTTP 503`, `connection refused`.
    Failure(String),
}

/// Where a probe stands after its results so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not decided yet: a startup probe that has not passed, a readiness probe that has
    /// not passed nor failed enough times.
    Unknown,
    Passing,
    /// With the output of the failure that crossed the threshold.
    Failing(String),
}

/// One probe of one container.
#[derive(Clone, Debug)]
pub struct Prober {
    timings: Timings,
    next_probe: Instant,
    successes: u32,
    failures: u32,
    verdict: Verdict,
}

impl Prober {
    /// A prober for a container whose probing starts at `start`: the first probe is due
    /// `initialDelaySeconds` later. Liveness starts `Passing` (a container is alive until
    /// shown otherwise), startup and readiness `Unknown`.
    pub fn new(kind: ProbeKind, timings: Timings, start: Instant) -> Prober {
        let verdict = match kind {
            ProbeKind::Liveness => Verdict::Passing,
            ProbeKind::Startup | ProbeKind::Readiness => Verdict::Unknown,
        };
        Prober {
            timings,
            next_probe: start + timings.initial_delay,
            successes: 0,
            failures: 0,
            verdict,
        }
    }

    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// When the next probe is due.
    pub fn next_probe_at(&self) -> Instant {
        self.next_probe
    }

    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// Counts the result of the probe that was due, schedules the next one a period after
    /// `now`, and returns the new verdict when it changed.
    pub fn record(&mut self, result: ProbeResult, now: Instant) -> Option<Verdict> {
        self.next_probe = now + self.timings.period;
        let next = match result {
            ProbeResult::Success => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                (self.successes >= self.timings.success_threshold).then_some(Verdict::Passing)
            }
            ProbeResult::Failure(output) => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                (self.failures >= self.timings.failure_threshold)
                    .then_some(Verdict::Failing(output))
            }
        }?;
        // A run of failures with changing output is still one failing verdict.
        let changed = !matches!(
            (&self.verdict, &next),
            (Verdict::Passing, Verdict::Passing) | (Verdict::Failing(_), Verdict::Failing(_))
        );
        changed.then(|| {
            self.verdict = next.clone();
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timings(initial: u64, period: u64, success: u32, failure: u32) -> Timings {
        Timings {
            initial_delay: Duration::from_secs(initial),
            period: Duration::from_secs(period),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    fn fail(output: &str) -> ProbeResult {
        ProbeResult::Failure(output.to_string())
    }

    /// Feeds `results`, each at the instant the prober said it was due; returns the
    /// changes as (seconds since start, new verdict).
    fn run(prober: &mut Prober, start: Instant, results: &[ProbeResult]) -> Vec<(u64, Verdict)> {
        let mut changes = Vec::new();
        for result in results {
            let now = prober.next_probe_at();
            if let Some(verdict) = prober.record(result.clone(), now) {
                changes.push(((now - start).as_secs(), verdict));
            }
        }
        changes
    }

    #[test]
    fn defaults_fill_zero_timings() {
        let probe: Probe = serde_json::from_str(r#"{"tcpSocket": {"port": 80}}"#).unwrap();
        assert_eq!(Timings::of(&probe), timings(0, 10, 1, 3));
        let probe: Probe = serde_json::from_str(
            r#"{"tcpSocket": {"port": 80}, "initialDelaySeconds": 5, "periodSeconds": 1,
                "timeoutSeconds": 2, "successThreshold": 2, "failureThreshold": 10}"#,
        )
        .unwrap();
        let expected = Timings {
            timeout: Duration::from_secs(2),
            ..timings(5, 1, 2, 10)
        };
        assert_eq!(Timings::of(&probe), expected);
    }

    /// (name, kind, timings, results, changes as (seconds, verdict)).
    type Case<'a> = (
        &'a str,
        ProbeKind,
        Timings,
        Vec<ProbeResult>,
        Vec<(u64, Verdict)>,
    );

    #[test]
    fn verdicts_follow_thresholds() {
        use ProbeKind::*;
        use Verdict::*;
        let ok = ProbeResult::Success;
        let failing = |s: &str| Failing(s.to_string());
        let cases: Vec<Case<'_>> = vec![
            (
                "the initial delay postpones the first probe",
                Readiness,
                timings(5, 1, 1, 3),
                vec![ok.clone()],
                vec![(5, Passing)],
            ),
            (
                "readiness fails after failureThreshold in a row, recovers on one success",
                Readiness,
                timings(0, 1, 1, 3),
                vec![
                    ok.clone(),
                    fail("HTTP 503"),
                    fail("HTTP 503"),
                    fail("HTTP 503"),
                    fail("x"),
                    ok.clone(),
                ],
                vec![(0, Passing), (3, failing("HTTP 503")), (5, Passing)],
            ),
            (
                "a success in between resets the failure run",
                Liveness,
                timings(0, 10, 1, 3),
                vec![
                    fail("a"),
                    fail("b"),
                    ok.clone(),
                    fail("c"),
                    fail("d"),
                    fail("e"),
                ],
                vec![(50, failing("e"))],
            ),
            (
                "successThreshold above 1 needs that many successes in a row",
                Readiness,
                timings(0, 1, 2, 1),
                vec![
                    ok.clone(),
                    fail("HTTP 500"),
                    ok.clone(),
                    ok.clone(),
                    ok.clone(),
                ],
                vec![(1, failing("HTTP 500")), (3, Passing)],
            ),
            (
                "startup: window initialDelay + period x threshold",
                Startup,
                timings(2, 1, 1, 3),
                vec![
                    fail("connection refused"),
                    fail("connection refused"),
                    fail("timeout after 1s"),
                ],
                vec![(4, failing("timeout after 1s"))],
            ),
            (
                "startup passes on its first success",
                Startup,
                timings(0, 1, 1, 10),
                vec![
                    fail("connection refused"),
                    fail("connection refused"),
                    ok.clone(),
                ],
                vec![(2, Passing)],
            ),
            (
                "liveness starts passing: successes change nothing",
                Liveness,
                timings(0, 1, 1, 3),
                vec![ok.clone(), ok.clone(), fail("x"), ok.clone()],
                vec![],
            ),
        ];
        for (name, kind, timings, results, expected) in cases {
            let start = Instant::now();
            let mut prober = Prober::new(kind, timings, start);
            assert_eq!(run(&mut prober, start, &results), expected, "{name}");
        }
    }

    #[test]
    fn a_late_probe_schedules_the_next_a_period_after_it() {
        let start = Instant::now();
        let mut prober = Prober::new(ProbeKind::Readiness, timings(0, 10, 1, 3), start);
        assert_eq!(prober.next_probe_at(), start);
        let late = start + Duration::from_secs(3);
        prober.record(ProbeResult::Success, late);
        assert_eq!(prober.next_probe_at(), late + Duration::from_secs(10));
        assert_eq!(prober.verdict(), &Verdict::Passing);
    }
}
