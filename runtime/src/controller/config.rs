//! How a controller runs: its parallelism, resync period and error backoff.

use std::time::Duration;

/// A controller's settings, built by value; the defaults suit a cluster controller.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// How many distinct keys are reconciled at once; one key never runs twice at once.
    /// Default 4; 0 counts as 1.
    pub concurrency: usize,
    /// How often every cached key is queued again, to catch what no event announces (a
    /// container removed by hand). Default 5 minutes; `None` disables the resync.
    pub resync_period: Option<Duration>,
    /// The delay before the first retry of a failed key. Default 100 ms.
    pub backoff_min: Duration,
    /// The ceiling the delay grows to (before jitter). Default 60 s.
    pub backoff_max: Duration,
    /// What each further failure multiplies the delay by. Default 2.
    pub backoff_factor: f32,
    /// Whether to add a random part of up to the delay itself, so keys that failed
    /// together do not retry in lockstep. Default on.
    pub backoff_jitter: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            concurrency: 4,
            resync_period: Some(Duration::from_secs(5 * 60)),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(60),
            backoff_factor: 2.0,
            backoff_jitter: true,
        }
    }
}

impl Config {
    #[must_use]
    pub fn concurrency(mut self, workers: usize) -> Self {
        self.concurrency = workers;
        self
    }

    #[must_use]
    pub fn resync_period(mut self, period: Option<Duration>) -> Self {
        self.resync_period = period;
        self
    }

    /// The first retry delay and the ceiling of the exponential backoff.
    #[must_use]
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    #[must_use]
    pub fn backoff_factor(mut self, factor: f32) -> Self {
        self.backoff_factor = factor;
        self
    }

    #[must_use]
    pub fn backoff_jitter(mut self, jitter: bool) -> Self {
        self.backoff_jitter = jitter;
        self
    }

    /// The worker count actually used.
    pub(crate) fn workers(&self) -> usize {
        self.concurrency.max(1)
    }
}
