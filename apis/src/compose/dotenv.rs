//! Reads `.env` and `env_file` files: `KEY=value` lines, as compose reads them.

use super::interpolate::{interpolate, Findings, Variables};

/// One `.env` line's problem.
#[derive(Debug, PartialEq, Eq)]
pub struct DotenvError {
    pub line: usize,
    pub message: String,
}

/// The variables of a `.env` text, in order. Blank lines and `#` comments are skipped;
/// `export ` is allowed; values may be single-quoted (literal), double-quoted (with
/// `\n`, `\t`, `\"` and `\\` escapes, and interpolated) or bare (interpolated, an
/// unquoted ` #` starts a comment). A line with no `=` (`KEY`) is skipped, as compose does
/// for a name without a value. `vars` resolves `${…}` in values after the variables
/// defined on earlier lines.
///
/// # Errors
/// A line whose name is not a variable name, an unclosed quote, or a bad `${…}`.
pub fn parse(text: &str, vars: &dyn Variables) -> Result<Vec<(String, String)>, DotenvError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, raw)) = lines.next() {
        let line = index + 1;
        let error = |message: String| DotenvError { line, message };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let trimmed = trimmed
            .strip_prefix("export ")
            .unwrap_or(trimmed)
            .trim_start();
        let Some((name, value)) = trimmed.split_once('=') else {
            continue;
        };
        let name = name.trim();
        let valid_name = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid_name {
            return Err(error(format!("invalid variable name {name:?}")));
        }
        let value = value.trim_start();
        let earlier = |n: &str| {
            out.iter()
                .rev()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .or_else(|| vars.get(n))
        };
        let mut findings = Findings::default();
        let value = if let Some(rest) = value.strip_prefix('\'') {
            let end = rest
                .find('\'')
                .ok_or_else(|| error("unclosed single quote".into()))?;
            rest[..end].to_string()
        } else if let Some(rest) = value.strip_prefix('"') {
            // A double-quoted value may span lines.
            let mut body = rest.to_string();
            while closing_quote(&body).is_none() {
                let (_, next) = lines
                    .next()
                    .ok_or_else(|| error("unclosed double quote".into()))?;
                body.push('\n');
                body.push_str(next);
            }
            let end = closing_quote(&body).unwrap_or(body.len());
            let unescaped = unescape(&body[..end]);
            interpolate(&unescaped, &earlier, &mut findings).map_err(|e| error(e.to_string()))?
        } else {
            let bare = match value.find(" #") {
                Some(at) => &value[..at],
                None => value,
            };
            interpolate(bare.trim_end(), &earlier, &mut findings)
                .map_err(|e| error(e.to_string()))?
        };
        out.retain(|(k, _)| k != name);
        out.push((name.to_string(), value));
    }
    Ok(out)
}

/// The index of the first `"` not escaped by a backslash.
fn closing_quote(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<(String, String)>, DotenvError> {
        let vars = |name: &str| (name == "HOME").then(|| "/home/me".to_string());
        parse(text, &vars)
    }

    #[test]
    fn forms() {
        let text = "# comment\n\nA=1\nexport B = two words \nC='lit $HOME'\nD=\"line\\nnext ${A}\"\nE=x #comment\nF=${HOME}/x\nG=\nNOVALUE\nH=\"multi\nline\"\nA=again\n";
        let got = read(text).unwrap();
        let want = [
            ("B", "two words"),
            ("C", "lit $HOME"),
            ("D", "line\nnext 1"),
            ("E", "x"),
            ("F", "/home/me/x"),
            ("G", ""),
            ("H", "multi\nline"),
            ("A", "again"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn errors() {
        assert_eq!(
            read("A=1\n1X=2\n").unwrap_err(),
            DotenvError {
                line: 2,
                message: "invalid variable name \"1X\"".into()
            }
        );
        assert_eq!(read("A='x\n").unwrap_err().message, "unclosed single quote");
        assert_eq!(
            read("A=\"x\n").unwrap_err().message,
            "unclosed double quote"
        );
    }
}
