//! Compose's value forms: commands as strings, durations, byte sizes, port specs.

use crate::duration::Duration;
use crate::template::Protocol;

/// Splits a command string into words as compose does (shell quoting, no expansion).
///
/// # Errors
/// An unclosed quote.
pub fn shell_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed ' in {text:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unclosed \" in {text:?}")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed \" in {text:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// A compose duration (`1m30s`, `10s`, `1h`, `500ms`; a bare number is seconds).
///
/// # Errors
/// A message naming the text.
pub fn duration(text: &str) -> Result<Duration, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Duration::from_secs(
            text.parse()
                .map_err(|_| format!("invalid duration {text:?}"))?,
        ));
    }
    Duration::parse(text).map_err(|e| e.to_string())
}

/// Whole seconds for a probe field, rounded up, at least 1.
pub fn probe_seconds(duration: Duration) -> i32 {
    let d = duration.as_std();
    let seconds = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(seconds.max(1)).unwrap_or(i32::MAX)
}

/// A compose byte size: a number with an optional unit b, k/kb, m/mb, g/gb (binary, any
/// case), as Docker reads `memory: 512m`.
///
/// # Errors
/// A message naming the text.
pub fn bytes(text: &str) -> Result<u64, String> {
    let invalid = || format!("invalid byte size {text:?}: expected a number with b, k, m or g");
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let scale: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(invalid()),
    };
    Ok((number * scale as f64).round() as u64)
}

/// One port or a range `8000-8005`.
///
/// # Errors
/// A message naming the text.
pub fn port_range(text: &str) -> Result<Vec<i32>, String> {
    let invalid =
        || format!("invalid port {text:?}: expected a number or a range such as 8000-8005");
    let parse = |s: &str| s.trim().parse::<i32>().map_err(|_| invalid());
    match text.split_once('-') {
        None => Ok(vec![parse(text)?]),
        Some((from, to)) => {
            let (from, to) = (parse(from)?, parse(to)?);
            if from > to {
                return Err(invalid());
            }
            Ok((from..=to).collect())
        }
    }
}

/// A port mapping in compose's short syntax, e.g. `127.0.0.1:8080-8081:80-81/udp`.
#[derive(Debug, PartialEq, Eq)]
pub struct ShortPort {
    pub host_ip: Option<String>,
    /// Empty when the port is not published.
    pub published: Vec<i32>,
    pub targets: Vec<i32>,
    pub protocol: Protocol,
}

/// Reads `[[IP:](HOST[-HOST]):](CONTAINER[-CONTAINER])[/PROTOCOL]`.
///
/// # Errors
/// A message naming the text.
pub fn short_port(text: &str) -> Result<ShortPort, String> {
    let (rest, protocol) = match text.rsplit_once('/') {
        Some((rest, p)) => (rest, protocol(p)?),
        None => (text, Protocol::Tcp),
    };
    // An IPv6 address is written in brackets: `[::1]:8080:80`.
    let (host_ip, rest) = match rest.strip_prefix('[') {
        Some(after) => {
            let (ip, rest) = after
                .split_once("]:")
                .ok_or_else(|| format!("invalid port {text:?}: unclosed [ in the host address"))?;
            (Some(ip.to_string()), rest)
        }
        None => (None, rest),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, published, target) = match (host_ip, parts.as_slice()) {
        (None, [target]) => (None, "", *target),
        (None, [published, target]) => (None, *published, *target),
        (None, [ip, published, target]) => (Some(ip.to_string()), *published, *target),
        (Some(ip), [published, target]) => (Some(ip), *published, *target),
        _ => {
            return Err(format!(
                "invalid port {text:?}: expected [IP:][HOST:]CONTAINER[/PROTOCOL]"
            ))
        }
    };
    let shape = |_| {
        format!("invalid port {text:?}: expected [IP:][HOST:]CONTAINER[/PROTOCOL] with numbers or ranges")
    };
    let targets = port_range(target).map_err(shape)?;
    let published = if published.is_empty() {
        Vec::new()
    } else {
        port_range(published).map_err(shape)?
    };
    if !published.is_empty() && published.len() != targets.len() && targets.len() != 1 {
        return Err(format!(
            "invalid port {text:?}: the published range and the container range differ in size"
        ));
    }
    Ok(ShortPort {
        host_ip: ip.filter(|ip| !ip.is_empty()),
        published,
        targets,
        protocol,
    })
}

/// `tcp` or `udp`.
///
/// # Errors
/// Any other protocol (`sctp`).
pub fn protocol(text: &str) -> Result<Protocol, String> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        other => Err(format!(
            "protocol {other:?} is not supported: dctl publishes tcp and udp"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_split_as_compose() {
        let cases: [(&str, &[&str]); 5] = [
            ("echo hello", &["echo", "hello"]),
            (
                "sh -c 'echo $HOME && ls'",
                &["sh", "-c", "echo $HOME && ls"],
            ),
            (r#"say "a \"b\" c"  d"#, &["say", "a \"b\" c", "d"]),
            (r"a\ b c", &["a b", "c"]),
            ("x ''", &["x", ""]),
        ];
        for (text, want) in cases {
            assert_eq!(shell_words(text).unwrap(), want, "{text}");
        }
        assert_eq!(shell_words("a 'b").unwrap_err(), "unclosed ' in \"a 'b\"");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(bytes("512m"), Ok(512 << 20));
        assert_eq!(bytes("1G"), Ok(1 << 30));
        assert_eq!(bytes("1.5gb"), Ok(3 << 29));
        assert_eq!(bytes("2048"), Ok(2048));
        assert_eq!(
            bytes("12x").unwrap_err(),
            "invalid byte size \"12x\": expected a number with b, k, m or g"
        );
        assert_eq!(duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(probe_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(probe_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn short_ports() {
        let port = |ip: Option<&str>, published: &[i32], targets: &[i32], protocol| ShortPort {
            host_ip: ip.map(String::from),
            published: published.to_vec(),
            targets: targets.to_vec(),
            protocol,
        };
        let cases = [
            ("3000", port(None, &[], &[3000], Protocol::Tcp)),
            (
                "3000-3002",
                port(None, &[], &[3000, 3001, 3002], Protocol::Tcp),
            ),
            ("8000:80", port(None, &[8000], &[80], Protocol::Tcp)),
            (
                "9090-9091:8080-8081",
                port(None, &[9090, 9091], &[8080, 8081], Protocol::Tcp),
            ),
            (
                "127.0.0.1:8001:8001",
                port(Some("127.0.0.1"), &[8001], &[8001], Protocol::Tcp),
            ),
            (
                "127.0.0.1::5000",
                port(Some("127.0.0.1"), &[], &[5000], Protocol::Tcp),
            ),
            ("6060:6060/udp", port(None, &[6060], &[6060], Protocol::Udp)),
            (
                "[::1]:6001:6001",
                port(Some("::1"), &[6001], &[6001], Protocol::Tcp),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(short_port(text).unwrap(), want, "{text}");
        }
        assert_eq!(
            short_port("80:80/sctp").unwrap_err(),
            "protocol \"sctp\" is not supported: dctl publishes tcp and udp"
        );
        assert_eq!(
            short_port("8000-8002:80-81").unwrap_err(),
            "invalid port \"8000-8002:80-81\": the published range and the container range differ in size"
        );
        assert_eq!(
            short_port("a:b:c:d").unwrap_err(),
            "invalid port \"a:b:c:d\": expected [IP:][HOST:]CONTAINER[/PROTOCOL]"
        );
    }
}
