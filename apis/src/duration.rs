//! A span of time written as Go-style strings in manifests: `500ms`, `5s`, `1m30s`, `0s`.

use std::fmt;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative span of time. It reads what Go's `time.ParseDuration` reads (units `ns`,
/// `us`, `ms`, `s`, `m`, `h`, fractions like `1.5h`, a bare `0`) and prints the shortest
/// form that reads back to the same value (`90s` prints as `1m30s`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

/// Why a duration does not parse; the message names the text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    pub input: String,
    pub reason: String,
}

const UNITS_HELP: &str = "expected ns, us, ms, s, m or h";

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Units longest first, so `ms` is tried before `m`.
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("h", 3600 * NANOS_PER_SEC),
];

impl Duration {
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);

    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Self {
        Duration(std::time::Duration::from_millis(millis))
    }

    pub const fn as_std(self) -> std::time::Duration {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// Reads `1m30s`, `500ms`, `1.5h` or `0`.
    ///
    /// # Errors
    /// Empty text, a negative duration, a number without a unit, an unknown unit, or a
    /// duration too large for `std::time::Duration`.
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let error = |reason: String| DurationError {
            input: text.to_string(),
            reason,
        };
        if text.is_empty() {
            return Err(error("empty".into()));
        }
        if text.starts_with('-') {
            return Err(error("must not be negative".into()));
        }
        let body = text.strip_prefix('+').unwrap_or(text);
        if body == "0" {
            return Ok(Duration::ZERO);
        }
        let mut nanos: u128 = 0;
        let mut rest = body;
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let (number, after) = rest.split_at(number_len);
            let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
            if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
                return Err(error(format!("expected a number at {rest:?}")));
            }
            let unit_len = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let (unit, next) = after.split_at(unit_len);
            if unit.is_empty() {
                return Err(error(format!("missing unit after {number} ({UNITS_HELP})")));
            }
            let Some(&(_, unit_nanos)) = UNITS.iter().find(|(name, _)| *name == unit) else {
                return Err(error(format!("unknown unit {unit:?} ({UNITS_HELP})")));
            };
            let too_large = || error("too large".into());
            let whole_value = if whole.is_empty() {
                0
            } else {
                whole.parse::<u128>().map_err(|_| too_large())?
            };
            nanos = whole_value
                .checked_mul(unit_nanos)
                .and_then(|n| n.checked_add(fraction_nanos(fraction, unit_nanos)))
                .and_then(|n| n.checked_add(nanos))
                .ok_or_else(too_large)?;
            rest = next;
        }
        let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| error("too large".into()))?;
        let subsec = (nanos % NANOS_PER_SEC) as u32;
        Ok(Duration(std::time::Duration::new(secs, subsec)))
    }
}

/// `0.5` of a unit in nanoseconds, truncated as Go truncates; digits past the eighteenth
/// cannot change the result and are ignored so the arithmetic cannot overflow.
fn fraction_nanos(fraction: &str, unit_nanos: u128) -> u128 {
    let (mut value, mut scale) = (0u128, 1u128);
    for digit in fraction.bytes().take(18) {
        value = value * 10 + u128::from(digit - b'0');
        scale *= 10;
    }
    value * unit_nanos / scale
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
        let secs = self.0.as_secs();
        let (hours, minutes, seconds) = (secs / 3600, secs % 3600 / 60, secs % 60);
        for (value, unit) in [(hours, "h"), (minutes, "m"), (seconds, "s")] {
            if value > 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        let subsec = self.0.subsec_nanos();
        if subsec == 0 {
            Ok(())
        } else if subsec.is_multiple_of(1_000_000) {
            write!(f, "{}ms", subsec / 1_000_000)
        } else if subsec.is_multiple_of(1_000) {
            write!(f, "{}us", subsec / 1_000)
        } else {
            write!(f, "{subsec}ns")
        }
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Duration::parse(text)
    }
}

impl From<std::time::Duration> for Duration {
    fn from(duration: std::time::Duration) -> Self {
        Duration(duration)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(duration: Duration) -> Self {
        duration.0
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl de::Visitor<'_> for Visitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"5s\" or \"1m30s\"")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
                Duration::parse(text).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000 * MS;

    fn nanos(d: Duration) -> u128 {
        d.as_std().as_nanos()
    }

    #[test]
    fn parses_valid_durations() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("0s", 0),
            ("500ms", 500 * MS),
            ("5s", 5 * SEC),
            ("1m30s", 90 * SEC),
            ("600s", 600 * SEC),
            ("1h", 3600 * SEC),
            ("1.5h", 5400 * SEC),
            ("1h2m3s4ms5us6ns", 3723 * SEC + 4 * MS + 5_006),
            ("2µs", 2_000),
            (".5s", 500 * MS),
            ("1s500ms", 1500 * MS),
            ("+3s", 3 * SEC),
            ("0.1234567891s", 123_456_789),
        ];
        for &(text, expected) in cases {
            let parsed = Duration::parse(text);
            assert_eq!(parsed.map(nanos), Ok(u128::from(expected)), "{text}");
        }
    }

    #[test]
    fn rejects_invalid_durations() {
        let cases: &[(&str, &str)] = &[
            ("", "invalid duration \"\": empty"),
            ("-5s", "invalid duration \"-5s\": must not be negative"),
            (
                "5",
                "invalid duration \"5\": missing unit after 5 (expected ns, us, ms, s, m or h)",
            ),
            (
                "5 sec",
                "invalid duration \"5 sec\": unknown unit \" sec\" (expected ns, us, ms, s, m or h)",
            ),
            (
                "1d",
                "invalid duration \"1d\": unknown unit \"d\" (expected ns, us, ms, s, m or h)",
            ),
            ("s", "invalid duration \"s\": expected a number at \"s\""),
            ("1..5s", "invalid duration \"1..5s\": expected a number at \"1..5s\""),
            (
                "99999999999999999999999h",
                "invalid duration \"99999999999999999999999h\": too large",
            ),
        ];
        for &(text, expected) in cases {
            assert_eq!(Duration::parse(text).unwrap_err().to_string(), expected);
        }
    }

    #[test]
    fn display_round_trips() {
        let cases: &[(u64, &str)] = &[
            (0, "0s"),
            (500 * MS, "500ms"),
            (5 * SEC, "5s"),
            (90 * SEC, "1m30s"),
            (600 * SEC, "10m"),
            (3605 * SEC, "1h5s"),
            (1500 * MS, "1s500ms"),
            (1_500, "1500ns"),
            (2_000, "2us"),
        ];
        for &(n, text) in cases {
            let duration = Duration::from(std::time::Duration::from_nanos(n));
            assert_eq!(duration.to_string(), text);
            assert_eq!(Duration::parse(text), Ok(duration));
        }
    }

    #[test]
    fn serde_uses_strings_and_names_a_bad_value() {
        let d: Duration = serde_json::from_str(r#""1m30s""#).unwrap();
        assert_eq!(d, Duration::from_secs(90));
        assert_eq!(serde_json::to_string(&d).unwrap(), r#""1m30s""#);
        let error = serde_json::from_str::<Duration>(r#""5 sec""#).unwrap_err();
        assert!(
            error.to_string().contains(r#"invalid duration "5 sec""#),
            "{error}"
        );
        let error = serde_json::from_str::<Duration>("5").unwrap_err();
        assert!(
            error.to_string().contains("a duration string such as"),
            "{error}"
        );
    }
}
