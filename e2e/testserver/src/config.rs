//! Reads the server's settings from its flags, then its environment, then the defaults.

use std::collections::BTreeMap;
use std::time::Duration;

/// What the server does; every field has a flag and an environment variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `--port` / `PORT`; 8080 by default.
    pub port: u16,
    /// `--startup-delay` / `STARTUP_DELAY`: the port is not even opened until then, so a
    /// startup probe has something to wait for.
    pub startup_delay: Duration,
    /// `--crash-after` / `CRASH_AFTER`: exit 1 after this long, for restart-policy tests.
    pub crash_after: Option<Duration>,
    /// `READY=false` starts the server not ready (`/ready` answers 503).
    pub ready: bool,
    /// `--upstream` / `UPSTREAM`: a base URL (`http://api:9090`) that `GET /upstream`
    /// fetches `/` from, to show one service reaching another by its network alias.
    pub upstream: Option<String>,
    /// Who `GET /` says it is: `TASK_NAME`, else the hostname.
    pub name: String,
    /// `VERSION`; `1` by default, so a rollout's progress shows in the answers.
    pub version: String,
    /// `GREETING`; `hello` by default.
    pub greeting: String,
}

/// Reads `args` (without the program name) over `env`.
///
/// # Errors
/// A message naming the flag or variable whose value is wrong, or the unknown flag.
pub fn parse(args: &[String], env: &BTreeMap<String, String>) -> Result<Config, String> {
    let mut flags: BTreeMap<&str, String> = BTreeMap::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            return Err(USAGE.to_string());
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument {arg:?}\n{USAGE}"));
        };
        let (name, value) = match flag.split_once('=') {
            Some((name, value)) => (name, value.to_string()),
            None => {
                let value = args
                    .next()
                    .ok_or_else(|| format!("--{flag} needs a value\n{USAGE}"))?;
                (flag, value.clone())
            }
        };
        let known = ["port", "startup-delay", "crash-after", "upstream"];
        let Some(name) = known.into_iter().find(|k| *k == name) else {
            return Err(format!("unknown flag --{name}\n{USAGE}"));
        };
        flags.insert(name, value);
    }
    // A flag wins over its variable, as with most servers.
    let setting = |flag: &str, var: &str| {
        flags
            .get(flag)
            .map(|v| (format!("--{flag}"), v.clone()))
            .or_else(|| env.get(var).map(|v| (var.to_string(), v.clone())))
    };
    let port = match setting("port", "PORT") {
        Some((source, value)) => value
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{source}: invalid port {value:?}"))?,
        None => 8080,
    };
    let duration = |flag: &str, var: &str| -> Result<Option<Duration>, String> {
        setting(flag, var)
            .map(|(source, value)| parse_duration(&value).map_err(|e| format!("{source}: {e}")))
            .transpose()
    };
    let startup_delay = duration("startup-delay", "STARTUP_DELAY")?.unwrap_or_default();
    let crash_after = duration("crash-after", "CRASH_AFTER")?;
    let ready = match env.get("READY").map(|v| v.to_ascii_lowercase()) {
        None => true,
        Some(v) if ["true", "1", "yes"].contains(&v.as_str()) => true,
        Some(v) if ["false", "0", "no"].contains(&v.as_str()) => false,
        Some(v) => return Err(format!("READY: expected true or false, got {v:?}")),
    };
    let nonempty = |var: &str| env.get(var).filter(|v| !v.is_empty()).cloned();
    Ok(Config {
        port,
        startup_delay,
        crash_after,
        ready,
        upstream: setting("upstream", "UPSTREAM").map(|(_, v)| v),
        name: nonempty("TASK_NAME")
            .or_else(|| nonempty("HOSTNAME"))
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| "unknown".to_string()),
        version: nonempty("VERSION").unwrap_or_else(|| "1".to_string()),
        greeting: nonempty("GREETING").unwrap_or_else(|| "hello".to_string()),
    })
}

const USAGE: &str = "usage: dctl-testserver [--port N] [--startup-delay 3s] [--crash-after 10s] \
[--upstream http://host:port]
environment: PORT, STARTUP_DELAY, CRASH_AFTER, UPSTREAM, READY=false, TASK_NAME, VERSION, GREETING";

/// `500ms`, `3s`, `1m30s`, `2h`, or a bare number of seconds.
///
/// # Errors
/// A message naming the text.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?}: expected e.g. 500ms, 3s or 1m30s");
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        let part = unit
            .checked_mul(u32::try_from(number).map_err(|_| invalid())?)
            .ok_or_else(invalid)?;
        total = total.checked_add(part).ok_or_else(invalid)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    fn env(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let config = parse(&[], &env(&[("HOSTNAME", "c0ffee")])).unwrap();
        assert_eq!(
            config,
            Config {
                port: 8080,
                startup_delay: Duration::ZERO,
                crash_after: None,
                ready: true,
                upstream: None,
                name: "c0ffee".into(),
                version: "1".into(),
                greeting: "hello".into(),
            }
        );
    }

    #[test]
    fn flags_win_over_the_environment() {
        let config = parse(
            &args(&[
                "--port",
                "9090",
                "--startup-delay=1500ms",
                "--upstream",
                "http://api:9090",
            ]),
            &env(&[
                ("PORT", "1"),
                ("STARTUP_DELAY", "9s"),
                ("CRASH_AFTER", "1m30s"),
                ("READY", "false"),
                ("TASK_NAME", "web.1.abcde"),
                ("HOSTNAME", "c0ffee"),
                ("VERSION", "2"),
            ]),
        )
        .unwrap();
        assert_eq!(config.port, 9090);
        assert_eq!(config.startup_delay, Duration::from_millis(1500));
        assert_eq!(config.crash_after, Some(Duration::from_secs(90)));
        assert!(!config.ready);
        assert_eq!(config.upstream.as_deref(), Some("http://api:9090"));
        assert_eq!(
            (config.name.as_str(), config.version.as_str()),
            ("web.1.abcde", "2")
        );
    }

    #[test]
    fn errors_name_the_setting() {
        // Flags, environment, and how the error begins.
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (&["--port", "x"], &[], "--port: invalid port \"x\""),
            (&[], &[("PORT", "0")], "PORT: invalid port \"0\""),
            (&["--bogus", "1"], &[], "unknown flag --bogus"),
            (&["--port"], &[], "--port needs a value"),
            (
                &[],
                &[("CRASH_AFTER", "soon")],
                "CRASH_AFTER: invalid duration",
            ),
            (&[], &[("READY", "maybe")], "READY: expected true or false"),
        ];
        for (flags, vars, expected) in cases {
            let error = parse(&args(flags), &env(vars)).unwrap_err();
            assert!(
                error.starts_with(expected),
                "{error:?} for {flags:?} {vars:?}"
            );
        }
    }

    #[test]
    fn durations() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("3s", Some(Duration::from_secs(3))),
            ("3", Some(Duration::from_secs(3))),
            ("250ms", Some(Duration::from_millis(250))),
            ("1m30s", Some(Duration::from_secs(90))),
            ("1h", Some(Duration::from_secs(3600))),
            ("", None),
            ("s", None),
            ("3x", None),
            ("-1s", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text).ok(), *expected, "{text:?}");
        }
    }
}
