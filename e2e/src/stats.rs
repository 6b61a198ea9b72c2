//! The few statistics the benchmarks print.

use std::time::Duration;

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The middle value (the upper one of an even count); `None` when there is none.
pub fn median(mut values: Vec<Duration>) -> Option<Duration> {
    values.sort();
    values.get(values.len() / 2).copied()
}

/// The value `share` (0 to 1) of the way up the sorted values, nearest-rank; zero when
/// there is none. Sorts `values`.
pub fn percentile(values: &mut [Duration], share: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort();
    let rank = (share * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut values: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut values, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&mut values, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&mut values, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&mut [], 0.5), Duration::ZERO);
        assert_eq!(
            median(vec![Duration::from_millis(3), Duration::from_millis(1)]),
            Some(Duration::from_millis(3))
        );
    }
}
