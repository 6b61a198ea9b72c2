//! Kubernetes resource quantities (`128Mi`, `1Gi`, `500M`, `0.5`, `500m`) for cpus and memory.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A quantity as the user wrote it.
///
/// It is kept as a string and parsed on use because the same text means bytes for memory
/// and nano-cpus for cpus, and because validation must report a bad one with its field
/// path rather than fail the whole document. A bare number (`cpus: 0.5` in YAML) is
/// accepted and kept as its decimal text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Quantity(String);

/// Why a quantity does not parse; every variant names the quantity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "invalid quantity {0:?}: expected a number with an optional suffix \
         (Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E)"
    )]
    Syntax(String),
    #[error("invalid quantity {0:?}: must not be negative")]
    Negative(String),
    #[error("invalid quantity {0:?}: too large")]
    TooLarge(String),
    #[error("invalid quantity {quantity:?}: not a whole number of {unit}{hint}")]
    Fractional {
        quantity: String,
        unit: &'static str,
        hint: String,
    },
}

const BINARY_SUFFIXES: [(&str, u32); 6] = [
    ("Ki", 10),
    ("Mi", 20),
    ("Gi", 30),
    ("Ti", 40),
    ("Pi", 50),
    ("Ei", 60),
];

const DECIMAL_SUFFIXES: [(&str, i64); 10] = [
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("", 0),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

/// A quantity's value as `mantissa × 10^exp10 × 2^exp2`, exact (no floating point).
struct Parsed {
    mantissa: u128,
    exp10: i64,
    exp2: u32,
}

impl Quantity {
    pub fn new(text: impl Into<String>) -> Self {
        Quantity(text.into())
    }

    /// `8Gi` for 8 GiB: the largest binary suffix that divides the value exactly.
    pub fn from_bytes(bytes: u64) -> Self {
        for &(suffix, shift) in BINARY_SUFFIXES.iter().rev() {
            if bytes != 0 && bytes.is_multiple_of(1u64 << shift) {
                return Quantity(format!("{}{suffix}", bytes >> shift));
            }
        }
        Quantity(bytes.to_string())
    }

    /// `2` for two cpus, `500m` for half of one, `1n` for one nano-cpu.
    pub fn from_nano_cpus(nano_cpus: u64) -> Self {
        const PER_CPU: u64 = 1_000_000_000;
        const PER_MILLI: u64 = 1_000_000;
        if nano_cpus.is_multiple_of(PER_CPU) {
            Quantity((nano_cpus / PER_CPU).to_string())
        } else if nano_cpus.is_multiple_of(PER_MILLI) {
            Quantity(format!("{}m", nano_cpus / PER_MILLI))
        } else {
            Quantity(format!("{nano_cpus}n"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The quantity as a number of bytes (memory).
    ///
    /// # Errors
    /// A malformed, negative or too large quantity, or one that is not a whole number of
    /// bytes: `128m` is 0.128 bytes, almost always a Docker habit meaning `128Mi`, so it
    /// is refused instead of being rounded to 1 byte as Kubernetes does.
    pub fn to_bytes(&self) -> Result<u64, QuantityError> {
        self.scaled(0, "bytes", || {
            let number = self.0.trim_end_matches('m');
            format!("; write {number}Mi for mebibytes or {number}M for megabytes")
        })
    }

    /// The quantity as nano-cpus (cpus): `0.5` and `500m` are both 500 000 000.
    ///
    /// # Errors
    /// A malformed, negative or too large quantity, or one finer than a nano-cpu.
    pub fn to_nano_cpus(&self) -> Result<u64, QuantityError> {
        self.scaled(9, "nano-cpus", String::new)
    }

    /// The value times `10^unit_exp10`, which must be a whole number that fits a `u64`.
    fn scaled(
        &self,
        unit_exp10: i64,
        unit: &'static str,
        hint: impl FnOnce() -> String,
    ) -> Result<u64, QuantityError> {
        let too_large = || QuantityError::TooLarge(self.0.clone());
        let parsed = parse(&self.0)?;
        let mut value = parsed
            .mantissa
            .checked_mul(1u128 << parsed.exp2)
            .ok_or_else(too_large)?;
        let exp10 = parsed.exp10 + unit_exp10;
        if value != 0 && exp10 >= 0 {
            let factor = u32::try_from(exp10)
                .ok()
                .and_then(|e| 10u128.checked_pow(e))
                .ok_or_else(too_large)?;
            value = value.checked_mul(factor).ok_or_else(too_large)?;
        } else if value != 0 {
            let divisor = u32::try_from(-exp10)
                .ok()
                .and_then(|e| 10u128.checked_pow(e))
                .filter(|d| value % d == 0);
            value = match divisor {
                Some(divisor) => value / divisor,
                None => {
                    return Err(QuantityError::Fractional {
                        quantity: self.0.clone(),
                        unit,
                        hint: hint(),
                    })
                }
            };
        }
        u64::try_from(value).map_err(|_| too_large())
    }
}

/// Parses `[+]digits[.digits][suffix]`, the suffix being binary, decimal or an exponent
/// (`1e3`); `E` alone is exa, as in Kubernetes.
fn parse(text: &str) -> Result<Parsed, QuantityError> {
    let syntax = || QuantityError::Syntax(text.to_string());
    if let Some(rest) = text.strip_prefix('-') {
        return match parse(rest) {
            Ok(parsed) if parsed.mantissa == 0 => Ok(parsed),
            Ok(_) => Err(QuantityError::Negative(text.to_string())),
            Err(_) => Err(syntax()),
        };
    }
    let body = text.strip_prefix('+').unwrap_or(text);
    let number_len = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(syntax());
    }
    let mut mantissa: u128 = 0;
    for digit in whole.bytes().chain(fraction.bytes()) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(digit - b'0')))
            .ok_or_else(|| QuantityError::TooLarge(text.to_string()))?;
    }
    let fraction_digits = i64::try_from(fraction.len()).map_err(|_| syntax())?;
    let (exp10, exp2) = parse_suffix(suffix).ok_or_else(syntax)?;
    Ok(Parsed {
        mantissa,
        exp10: exp10 - fraction_digits,
        exp2,
    })
}

/// The suffix's power of ten and power of two.
fn parse_suffix(suffix: &str) -> Option<(i64, u32)> {
    if let Some(&(_, shift)) = BINARY_SUFFIXES.iter().find(|(s, _)| *s == suffix) {
        return Some((0, shift));
    }
    if let Some(&(_, exp)) = DECIMAL_SUFFIXES.iter().find(|(s, _)| *s == suffix) {
        return Some((exp, 0));
    }
    let exponent = suffix.strip_prefix(['e', 'E'])?;
    let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((exponent.parse().ok()?, 0))
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Quantity {
    fn from(text: &str) -> Self {
        Quantity::new(text)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl de::Visitor<'_> for Visitor {
            type Value = Quantity;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as \"128Mi\" or \"0.5\"")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Quantity, E> {
                Ok(Quantity::new(text))
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Quantity, E> {
                Ok(Quantity(n.to_string()))
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Quantity, E> {
                Ok(Quantity(n.to_string()))
            }

            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Quantity, E> {
                Ok(Quantity(n.to_string()))
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bytes() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("128", 128),
            ("128Mi", 128 << 20),
            ("1Gi", 1 << 30),
            ("0.5Gi", 1 << 29),
            ("1.5Ki", 1536),
            ("500M", 500_000_000),
            ("1k", 1000),
            ("2G", 2_000_000_000),
            ("1e3", 1000),
            ("1E3", 1000),
            ("1E", 1_000_000_000_000_000_000),
            ("+4Ki", 4096),
            ("1000m", 1),
            ("-0", 0),
            ("15Ei", 15 << 60),
        ];
        for &(text, expected) in cases {
            assert_eq!(Quantity::new(text).to_bytes(), Ok(expected), "{text}");
        }
    }

    #[test]
    fn parses_nano_cpus() {
        let cases: &[(&str, u64)] = &[
            ("1", 1_000_000_000),
            ("0.5", 500_000_000),
            ("500m", 500_000_000),
            ("0.1", 100_000_000),
            ("2.25", 2_250_000_000),
            ("250u", 250_000),
            ("7n", 7),
            (".5", 500_000_000),
            ("1.", 1_000_000_000),
        ];
        for &(text, expected) in cases {
            assert_eq!(Quantity::new(text).to_nano_cpus(), Ok(expected), "{text}");
        }
    }

    #[test]
    fn rejects_invalid_quantities() {
        let syntax = "expected a number with an optional suffix \
                      (Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E)";
        let cases: &[(&str, String)] = &[
            ("", format!("invalid quantity \"\": {syntax}")),
            ("12x", format!("invalid quantity \"12x\": {syntax}")),
            ("1.2.3", format!("invalid quantity \"1.2.3\": {syntax}")),
            ("Mi", format!("invalid quantity \"Mi\": {syntax}")),
            ("1 Gi", format!("invalid quantity \"1 Gi\": {syntax}")),
            ("1mi", format!("invalid quantity \"1mi\": {syntax}")),
            (".", format!("invalid quantity \".\": {syntax}")),
            (
                "-1Gi",
                "invalid quantity \"-1Gi\": must not be negative".into(),
            ),
            ("16Ei", "invalid quantity \"16Ei\": too large".into()),
            ("1e30", "invalid quantity \"1e30\": too large".into()),
            (
                "128m",
                "invalid quantity \"128m\": not a whole number of bytes; \
                 write 128Mi for mebibytes or 128M for megabytes"
                    .into(),
            ),
            (
                "0.5",
                "invalid quantity \"0.5\": not a whole number of bytes; \
                 write 0.5Mi for mebibytes or 0.5M for megabytes"
                    .into(),
            ),
        ];
        for (text, expected) in cases {
            let error = Quantity::new(*text).to_bytes().unwrap_err();
            assert_eq!(&error.to_string(), expected, "{text}");
        }
        assert_eq!(
            Quantity::new("0.1n")
                .to_nano_cpus()
                .unwrap_err()
                .to_string(),
            "invalid quantity \"0.1n\": not a whole number of nano-cpus"
        );
    }

    #[test]
    fn formats_canonical_quantities() {
        assert_eq!(Quantity::from_bytes(8 << 30).as_str(), "8Gi");
        assert_eq!(Quantity::from_bytes(1536).as_str(), "1536");
        assert_eq!(Quantity::from_bytes(3 << 20).as_str(), "3Mi");
        assert_eq!(Quantity::from_bytes(0).as_str(), "0");
        assert_eq!(Quantity::from_nano_cpus(4_000_000_000).as_str(), "4");
        assert_eq!(Quantity::from_nano_cpus(500_000_000).as_str(), "500m");
        assert_eq!(Quantity::from_nano_cpus(1).as_str(), "1n");
        for n in [0, 7, 1_500_000_000, 250_000] {
            assert_eq!(Quantity::from_nano_cpus(n).to_nano_cpus(), Ok(n));
            assert_eq!(Quantity::from_bytes(n).to_bytes(), Ok(n));
        }
    }

    #[test]
    fn deserializes_strings_and_numbers() {
        let q: Vec<Quantity> = serde_json::from_str(r#"["128Mi", 0.5, 2, -1]"#).unwrap();
        let texts: Vec<&str> = q.iter().map(Quantity::as_str).collect();
        assert_eq!(texts, ["128Mi", "0.5", "2", "-1"]);
        assert_eq!(serde_json::to_string(&q[0]).unwrap(), r#""128Mi""#);
        assert!(serde_json::from_str::<Quantity>("true").is_err());
    }
}
