//! `healthcheck:` → exec probes: readiness and liveness, and a startup window for
//! `start_period`.

use super::service::Translator;
use super::values::probe_seconds;
use super::yaml::{Node, Value};
use crate::duration::Duration;
use crate::probe::{ExecAction, Probe, Probes};

/// Docker's healthcheck defaults.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RETRIES: i32 = 3;

impl Translator<'_> {
    /// Docker marks a container unhealthy after `retries` failed checks, and Swarm replaces
    /// an unhealthy task: that is a liveness probe. Compose's `service_healthy` and traffic
    /// wait for the first passing check: that is readiness. Failures during `start_period`
    /// do not count: a startup probe that allows that many periods before the retries.
    pub(super) fn healthcheck(&mut self, node: &Node, path: &str) -> Probes {
        let Some(entries) = self.mapping(node, path) else {
            return Probes::default();
        };
        let mut command = None;
        let mut interval = DEFAULT_INTERVAL;
        let mut timeout = DEFAULT_TIMEOUT;
        let mut retries = DEFAULT_RETRIES;
        let mut start_period = Duration::ZERO;
        let mut disabled = false;
        for (key, value) in entries {
            let at = format!("{path}.{}", key.name);
            match key.name.as_str() {
                "test" => match self.health_test(value, &at) {
                    Some(Some(test)) => command = Some(test),
                    Some(None) => disabled = true,
                    None => {}
                },
                "interval" => interval = self.duration(value, &at).unwrap_or(interval),
                "timeout" => timeout = self.duration(value, &at).unwrap_or(timeout),
                "retries" => retries = self.number(value, &at).unwrap_or(retries),
                "start_period" => start_period = self.duration(value, &at).unwrap_or_default(),
                "disable" => disabled |= self.boolean(value, &at).unwrap_or(false),
                "start_interval" => {
                    self.diags
                        .unsupported(key, &at, "the startup window probes every interval")
                }
                _ => self.diags.unsupported(key, &at, "unknown healthcheck key"),
            }
        }
        if disabled {
            return Probes::default();
        }
        let Some(command) = command else {
            self.diags.warn(
                node,
                path,
                "no test: dctl translates a healthcheck only with its test",
            );
            return Probes::default();
        };
        let period = probe_seconds(interval);
        let probe = Probe {
            exec: Some(ExecAction { command }),
            period_seconds: period,
            timeout_seconds: probe_seconds(timeout),
            failure_threshold: retries.max(1),
            success_threshold: 1,
            ..Probe::default()
        };
        let startup = (!start_period.is_zero()).then(|| {
            let window = probe_seconds(start_period);
            Probe {
                failure_threshold: (window + period - 1) / period + retries.max(1),
                ..probe.clone()
            }
        });
        Probes {
            startup,
            liveness: Some(probe.clone()),
            readiness: Some(probe),
        }
    }

    /// The probe command of `test`; `Some(None)` for `NONE` (disabled).
    fn health_test(&mut self, node: &Node, path: &str) -> Option<Option<Vec<String>>> {
        let shell = |cmd: &str| vec!["/bin/sh".to_string(), "-c".to_string(), cmd.to_string()];
        match &node.value {
            Value::Scalar { text, .. } => Some(Some(shell(text))),
            Value::Seq(_) => {
                let words = self.strings(node, path);
                match words.split_first() {
                    Some((first, rest)) if first == "CMD" && !rest.is_empty() => {
                        Some(Some(rest.to_vec()))
                    }
                    Some((first, rest)) if first == "CMD-SHELL" && rest.len() == 1 => {
                        Some(Some(shell(&rest[0])))
                    }
                    Some((first, _)) if first == "NONE" => Some(None),
                    _ => {
                        self.diags.error(node, path, "expected [CMD, arg…], [CMD-SHELL, command], [NONE] or a command string");
                        None
                    }
                }
            }
            _ => {
                self.diags
                    .error(node, path, "expected a list or a command string");
                None
            }
        }
    }
}
