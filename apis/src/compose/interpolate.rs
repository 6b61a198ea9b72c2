//! Variable interpolation as the compose specification defines it.
//!
//! `$VAR` and `${VAR}`, with `:-`/`-` defaults, `:?`/`?` required values, `:+`/`+`
//! alternatives (the colon forms also treat an empty value as unset), `$$` for a literal
//! `$`, and nested expressions inside a default (`${A:-${B}}`).

use super::yaml::{Node, Value};

/// Where variable values come from: the process environment first, then `.env`.
pub trait Variables {
    fn get(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Variables for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// What interpolating one string found besides its result.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// Variables used without a default that are not set (each becomes "").
    pub unset: Vec<String>,
}

/// Why a string cannot be interpolated.
#[derive(Debug, PartialEq, Eq)]
pub enum InterpolateError {
    /// `${VAR:?message}` or `${VAR?message}` with VAR missing.
    Required { variable: String, message: String },
    /// A `$` that starts no expression, or an unclosed or malformed `${`.
    Invalid { text: String, reason: String },
}

impl std::fmt::Display for InterpolateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InterpolateError::Required { variable, message } if message.is_empty() => {
                write!(f, "required variable {variable} is missing a value")
            }
            InterpolateError::Required { variable, message } => {
                write!(
                    f,
                    "required variable {variable} is missing a value: {message}"
                )
            }
            InterpolateError::Invalid { text, reason } => {
                write!(
                    f,
                    "invalid interpolation in {text:?}: {reason} (write $$ for a literal $)"
                )
            }
        }
    }
}

/// `text` with every expression replaced.
///
/// # Errors
/// A required variable that is missing, or a malformed expression.
pub fn interpolate(
    text: &str,
    vars: &dyn Variables,
    findings: &mut Findings,
) -> Result<String, InterpolateError> {
    let invalid = |reason: &str| InterpolateError::Invalid {
        text: text.to_string(),
        reason: reason.to_string(),
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(next) = after.strip_prefix('$') {
            out.push('$');
            rest = next;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = closing_brace(inner).ok_or_else(|| invalid("unclosed ${"))?;
            out.push_str(&braced(&inner[..end], vars, findings).map_err(|e| match e {
                InterpolateError::Invalid { reason, .. } => invalid(&reason),
                other => other,
            })?);
            rest = &inner[end + 1..];
        } else {
            let len = name_len(after);
            if len == 0 {
                return Err(invalid("a $ must start a variable name or ${"));
            }
            let name = &after[..len];
            out.push_str(&lookup(name, vars, findings));
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A variable used without a value, and the first place it was used.
#[derive(Debug, PartialEq, Eq)]
pub struct Unset {
    pub name: String,
    pub file: usize,
    pub line: usize,
}

/// Interpolates every scalar value (keys stay as written) under `node`, in place.
///
/// # Errors
/// Every failing value, with its node.
pub fn interpolate_tree(
    node: &mut Node,
    vars: &dyn Variables,
    unset: &mut Vec<Unset>,
    errors: &mut Vec<(usize, usize, InterpolateError)>,
) {
    match &mut node.value {
        Value::Null => {}
        Value::Scalar { text, .. } => {
            if text.contains('$') {
                let mut findings = Findings::default();
                match interpolate(text, vars, &mut findings) {
                    Ok(value) => *text = value,
                    Err(error) => errors.push((node.file, node.line, error)),
                }
                for name in findings.unset {
                    if !unset.iter().any(|u| u.name == name) {
                        unset.push(Unset {
                            name,
                            file: node.file,
                            line: node.line,
                        });
                    }
                }
            }
        }
        Value::Seq(items) => {
            for item in items {
                interpolate_tree(item, vars, unset, errors);
            }
        }
        Value::Map(entries) => {
            for (_, value) in entries {
                interpolate_tree(value, vars, unset, errors);
            }
        }
    }
}

fn lookup(name: &str, vars: &dyn Variables, findings: &mut Findings) -> String {
    vars.get(name).unwrap_or_else(|| {
        if !findings.unset.iter().any(|n| n == name) {
            findings.unset.push(name.to_string());
        }
        String::new()
    })
}

/// The length of the variable name `text` starts with.
fn name_len(text: &str) -> usize {
    let mut chars = text.char_indices();
    match chars.next() {
        Some((_, c)) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return 0,
    }
    chars
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map_or(text.len(), |(i, _)| i)
}

/// The index of the `}` closing an expression whose `${` came just before `text`.
fn closing_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// The value of `VAR`, `VAR:-default`, `VAR?message`… (the text between `${` and `}`).
fn braced(
    expr: &str,
    vars: &dyn Variables,
    findings: &mut Findings,
) -> Result<String, InterpolateError> {
    let len = name_len(expr);
    if len == 0 {
        return Err(InterpolateError::Invalid {
            text: String::new(),
            reason: format!("${{{expr}}} does not start with a variable name"),
        });
    }
    let (name, op) = expr.split_at(len);
    if op.is_empty() {
        return Ok(lookup(name, vars, findings));
    }
    let value = vars.get(name);
    let (colon, op) = match op.strip_prefix(':') {
        Some(op) => (true, op),
        None => (false, op),
    };
    // With a colon, an empty value counts as unset.
    let set = value.as_deref().is_some_and(|v| !colon || !v.is_empty());
    let mut operator = op.chars();
    let word = operator.as_str().get(1..).unwrap_or("");
    match operator.next() {
        Some('-') if set => Ok(value.unwrap_or_default()),
        Some('-') => interpolate(word, vars, findings),
        Some('+') if set => interpolate(word, vars, findings),
        Some('+') => Ok(String::new()),
        Some('?') if set => Ok(value.unwrap_or_default()),
        Some('?') => Err(InterpolateError::Required {
            variable: name.to_string(),
            message: interpolate(word, vars, findings)?,
        }),
        _ => Err(InterpolateError::Invalid {
            text: String::new(),
            reason: format!("unknown operator in ${{{expr}}}: expected :-, -, :?, ?, :+ or +"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn run(text: &str) -> Result<(String, Vec<String>), String> {
        let env: HashMap<&str, &str> = HashMap::from([
            ("SET", "value"),
            ("EMPTY", ""),
            ("PORT", "8080"),
            ("_U1", "u"),
        ]);
        let vars = |name: &str| env.get(name).map(ToString::to_string);
        let mut findings = Findings::default();
        interpolate(text, &vars, &mut findings)
            .map(|s| (s, findings.unset))
            .map_err(|e| e.to_string())
    }

    fn ok(text: &str) -> String {
        run(text).unwrap().0
    }

    #[test]
    fn forms() {
        let cases = [
            ("plain", "plain"),
            ("$SET", "value"),
            ("${SET}", "value"),
            ("a${SET}b", "avalueb"),
            ("$SET.x", "value.x"),
            ("$_U1-", "u-"),
            ("$$SET", "$SET"),
            ("$${SET}", "${SET}"),
            ("cost: $$5", "cost: $5"),
            ("${MISSING:-def}", "def"),
            ("${EMPTY:-def}", "def"),
            ("${EMPTY-def}", ""),
            ("${MISSING-def}", "def"),
            ("${SET:-def}", "value"),
            ("${SET:+alt}", "alt"),
            ("${EMPTY:+alt}", ""),
            ("${EMPTY+alt}", "alt"),
            ("${MISSING+alt}", ""),
            ("${SET:?boom}", "value"),
            ("${EMPTY?boom}", ""),
            ("${MISSING:-${PORT}}", "8080"),
            ("${MISSING:-${ALSO:-x${SET}}}", "xvalue"),
            ("${MISSING:-a b:c}", "a b:c"),
            ("${MISSING:-}", ""),
            ("host:${PORT}:80", "host:8080:80"),
        ];
        for (text, want) in cases {
            assert_eq!(ok(text), want, "{text}");
        }
    }

    #[test]
    fn unset_variables_become_empty_and_are_reported_once() {
        assert_eq!(
            run("$NOPE-${NOPE}-${ALSO}").unwrap(),
            (
                "--".to_string(),
                vec!["NOPE".to_string(), "ALSO".to_string()]
            )
        );
    }

    #[test]
    fn errors() {
        let cases = [
            ("${MISSING:?set MISSING to the db password}", "required variable MISSING is missing a value: set MISSING to the db password"),
            ("${EMPTY:?}", "required variable EMPTY is missing a value"),
            ("${MISSING?}", "required variable MISSING is missing a value"),
            ("${SET", "invalid interpolation in \"${SET\": unclosed ${ (write $$ for a literal $)"),
            ("price $5", "invalid interpolation in \"price $5\": a $ must start a variable name or ${ (write $$ for a literal $)"),
            ("end $", "invalid interpolation in \"end $\": a $ must start a variable name or ${ (write $$ for a literal $)"),
            ("${}", "invalid interpolation in \"${}\": ${} does not start with a variable name (write $$ for a literal $)"),
            ("${SET:x}", "invalid interpolation in \"${SET:x}\": unknown operator in ${SET:x}: expected :-, -, :?, ?, :+ or + (write $$ for a literal $)"),
        ];
        for (text, want) in cases {
            assert_eq!(run(text).unwrap_err(), want, "{text}");
        }
    }
}
