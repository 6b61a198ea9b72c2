//! Per-key exponential backoff with jitter after failed reconciles, reset by a success.

use std::collections::HashMap;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use super::Config;
use crate::object_key::ObjectKey;

/// One backoff sequence per failing key; a key that never failed, or last succeeded, has
/// none, so the map holds only the keys currently in trouble.
#[derive(Debug)]
pub(crate) struct KeyBackoff {
    builder: ExponentialBuilder,
    max: Duration,
    failing: HashMap<ObjectKey, ExponentialBackoff>,
}

impl KeyBackoff {
    pub(crate) fn new(config: &Config) -> Self {
        let mut builder = ExponentialBuilder::default()
            .with_min_delay(config.backoff_min)
            .with_max_delay(config.backoff_max)
            .with_factor(config.backoff_factor)
            // A controller retries a failing key for as long as the key exists.
            .without_max_times();
        if config.backoff_jitter {
            builder = builder.with_jitter();
        }
        KeyBackoff {
            builder,
            max: config.backoff_max,
            failing: HashMap::new(),
        }
    }

    /// How long to wait before retrying `key` after one more failure.
    pub(crate) fn next_delay(&mut self, key: &ObjectKey) -> Duration {
        let builder = &self.builder;
        self.failing
            .entry(key.clone())
            .or_insert_with(|| builder.build())
            .next()
            // Unreachable without max_times or total_delay; the cap is the sane fallback.
            .unwrap_or(self.max)
    }

    /// Forgets `key`'s failures: its next failure waits the minimum delay again.
    pub(crate) fn reset(&mut self, key: &ObjectKey) {
        self.failing.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(jitter: bool) -> Config {
        Config {
            backoff_jitter: jitter,
            ..Config::default()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn without_jitter_the_delay_doubles_from_min_to_max() {
        let mut backoff = KeyBackoff::new(&config(false));
        let key = ObjectKey::new("demo", "web");
        // backon multiplies in f32: compare whole milliseconds.
        let delays: Vec<_> = (0..12)
            .map(|_| backoff.next_delay(&key).as_millis())
            .collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 60000, 60000]
        );
    }

    #[test]
    fn jitter_adds_at_most_the_delay_itself() {
        let mut backoff = KeyBackoff::new(&config(true));
        let key = ObjectKey::new("demo", "web");
        for base in [100, 200, 400, 800, 1600] {
            let delay = backoff.next_delay(&key);
            assert!(
                delay >= ms(base) && delay < ms(2 * base),
                "{delay:?} outside [{base} ms, {} ms)",
                2 * base
            );
        }
    }

    #[test]
    fn keys_back_off_independently_and_reset_on_success() {
        let mut backoff = KeyBackoff::new(&config(false));
        let (a, b) = (ObjectKey::new("demo", "a"), ObjectKey::new("demo", "b"));
        backoff.next_delay(&a);
        backoff.next_delay(&a);
        assert_eq!(backoff.next_delay(&a).as_millis(), 400);
        assert_eq!(backoff.next_delay(&b).as_millis(), 100);

        backoff.reset(&a);
        assert_eq!(backoff.next_delay(&a).as_millis(), 100);
        assert_eq!(backoff.next_delay(&b).as_millis(), 200);
    }
}
