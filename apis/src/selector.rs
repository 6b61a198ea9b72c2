//! Label selectors as `kubectl get -l` takes them: `app=web,tier in (a,b),!canary`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use crate::validation::{check_label_key, check_label_value};

/// A conjunction of requirements; the empty selector matches every object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// Sorted by key, so equal selectors compare and print equal whatever their order.
    requirements: Vec<Requirement>,
}

/// One condition on one label.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// One value for `=` and `!=`, one or more for `in` and `notin`, none otherwise.
    pub values: BTreeSet<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operator {
    /// `key=value` or `key==value`
    Equals,
    /// `key!=value`: also true when the label is absent, as in Kubernetes.
    NotEquals,
    /// `key in (a,b)`
    In,
    /// `key notin (a,b)`: also true when the label is absent.
    NotIn,
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
}

/// Why a selector does not parse, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {selector:?}: column {column}: {message}")]
pub struct SelectorError {
    pub selector: String,
    /// 1-based, in characters, of the offending token.
    pub column: usize,
    /// The offending token, or `end of input`.
    pub token: String,
    pub message: String,
}

impl LabelSelector {
    /// The selector that matches everything (what an empty `-l ""` means).
    pub fn everything() -> Self {
        LabelSelector::default()
    }

    /// Parses kubectl's selector syntax: requirements separated by commas, each one of
    /// `k=v`, `k==v`, `k!=v`, `k in (v1,v2)`, `k notin (v1)`, `k`, `!k`.
    ///
    /// # Errors
    /// A `SelectorError` naming the column and the token where parsing failed, or the
    /// label key or value that is not a valid one.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let tokens = lex(text);
        let mut parser = SelectorParser {
            text,
            tokens,
            next: 0,
        };
        let mut requirements = Vec::new();
        if parser.peek().kind != TokenKind::End {
            loop {
                requirements.push(parser.requirement()?);
                let token = parser.take();
                match token.kind {
                    TokenKind::End => break,
                    TokenKind::Comma => continue,
                    _ => return Err(parser.unexpected(&token, "',' or the end")),
                }
            }
        }
        requirements.sort();
        Ok(LabelSelector { requirements })
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl Requirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => {
                !value.is_some_and(|v| self.values.contains(v))
            }
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LabelSelector::parse(s)
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = || self.values.iter().cloned().collect::<Vec<_>>().join(",");
        match self.operator {
            Operator::Equals => write!(f, "{}={}", self.key, values()),
            Operator::NotEquals => write!(f, "{}!={}", self.key, values()),
            Operator::In => write!(f, "{} in ({})", self.key, values()),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, values()),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
        }
    }
}

/// The canonical text, which parses back to an equal selector.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum TokenKind {
    Word(String),
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    Comma,
    Open,
    Close,
    /// `<` or `>`: Kubernetes' numeric comparisons, which dctl does not offer.
    Compare,
    End,
}

#[derive(Clone, Debug)]
struct Token {
    kind: TokenKind,
    /// Character offset of the token's first character.
    at: usize,
    text: String,
}

/// Splits as the Kubernetes lexer does: operators and parentheses are tokens, anything else
/// up to whitespace or an operator is a word (`in` and `notin` are words the parser knows).
fn lex(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let special = |c: char| c.is_whitespace() || "!=,()<>".contains(c);
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let (kind, len) = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '!' if next == Some('=') => (TokenKind::NotEquals, 2),
            '!' => (TokenKind::Not, 1),
            '=' if next == Some('=') => (TokenKind::DoubleEquals, 2),
            '=' => (TokenKind::Equals, 1),
            ',' => (TokenKind::Comma, 1),
            '(' => (TokenKind::Open, 1),
            ')' => (TokenKind::Close, 1),
            '<' | '>' => (TokenKind::Compare, 1),
            _ => {
                let len = chars[i..].iter().take_while(|c| !special(**c)).count();
                (TokenKind::Word(chars[i..i + len].iter().collect()), len)
            }
        };
        tokens.push(Token {
            kind,
            at: i,
            text: chars[i..i + len].iter().collect(),
        });
        i += len;
    }
    tokens.push(Token {
        kind: TokenKind::End,
        at: chars.len(),
        text: String::new(),
    });
    tokens
}

/// A token as an error names it.
fn shown(token: &Token) -> String {
    match token.kind {
        TokenKind::End => "end of input".to_string(),
        _ => format!("{:?}", token.text),
    }
}

struct SelectorParser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    next: usize,
}

impl SelectorParser<'_> {
    fn peek(&self) -> &Token {
        &self.tokens[self.next.min(self.tokens.len() - 1)]
    }

    fn take(&mut self) -> Token {
        let token = self.peek().clone();
        self.next += 1;
        token
    }

    /// An error at `token` with `message` as is (for a bad key or value).
    fn error(&self, token: &Token, message: impl Into<String>) -> SelectorError {
        SelectorError {
            selector: self.text.to_string(),
            column: token.at + 1,
            token: match token.kind {
                TokenKind::End => "end of input".to_string(),
                _ => token.text.clone(),
            },
            message: message.into(),
        }
    }

    /// `expected X, found "y"`.
    fn unexpected(&self, token: &Token, expected: &str) -> SelectorError {
        self.error(
            token,
            format!("expected {expected}, found {}", shown(token)),
        )
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let first = self.take();
        let (negated, key_token) = match first.kind {
            TokenKind::Not => (true, self.take()),
            _ => (false, first),
        };
        let TokenKind::Word(key) = key_token.kind.clone() else {
            return Err(self.unexpected(&key_token, "a label key"));
        };
        check_label_key(&key).map_err(|why| self.error(&key_token, why))?;
        let requirement = |operator, values: BTreeSet<String>| Requirement {
            key: key.clone(),
            operator,
            values,
        };
        if negated {
            return Ok(requirement(Operator::DoesNotExist, BTreeSet::new()));
        }
        let op = self.take();
        match &op.kind {
            TokenKind::Comma | TokenKind::End => {
                // Not consumed: the caller reads the separator.
                self.next -= 1;
                Ok(requirement(Operator::Exists, BTreeSet::new()))
            }
            TokenKind::Equals | TokenKind::DoubleEquals | TokenKind::NotEquals => {
                let operator = if op.kind == TokenKind::NotEquals {
                    Operator::NotEquals
                } else {
                    Operator::Equals
                };
                // `app=` selects the empty value, as in Kubernetes.
                let value = match self.peek().kind.clone() {
                    TokenKind::Comma | TokenKind::End => String::new(),
                    TokenKind::Word(value) => {
                        let token = self.take();
                        check_label_value(&value).map_err(|why| self.error(&token, why))?;
                        value
                    }
                    _ => {
                        let token = self.peek().clone();
                        return Err(self.unexpected(&token, "a label value"));
                    }
                };
                Ok(requirement(operator, BTreeSet::from([value])))
            }
            TokenKind::Word(word) if word == "in" || word == "notin" => {
                let operator = if word == "in" {
                    Operator::In
                } else {
                    Operator::NotIn
                };
                Ok(requirement(operator, self.value_set(word)?))
            }
            TokenKind::Compare => Err(self.error(&op, "numeric comparisons are not supported")),
            _ => Err(self.unexpected(&op, "one of =, ==, !=, in, notin, ',' or the end")),
        }
    }

    /// `(a, b, c)` after `in` or `notin`.
    fn value_set(&mut self, operator: &str) -> Result<BTreeSet<String>, SelectorError> {
        let open = self.take();
        if open.kind != TokenKind::Open {
            return Err(self.unexpected(&open, &format!("'(' after {operator:?}")));
        }
        let mut values = BTreeSet::new();
        loop {
            let token = self.take();
            let TokenKind::Word(value) = &token.kind else {
                return Err(self.unexpected(&token, "a label value"));
            };
            check_label_value(value).map_err(|why| self.error(&token, why))?;
            values.insert(value.clone());
            let separator = self.take();
            match separator.kind {
                TokenKind::Comma => continue,
                TokenKind::Close => return Ok(values),
                _ => return Err(self.unexpected(&separator, "',' or ')'")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_to_canonical_text() {
        let cases = [
            ("", ""),
            ("  ", ""),
            ("app=web", "app=web"),
            ("app==web", "app=web"),
            ("app = web", "app=web"),
            ("app!=web", "app!=web"),
            ("app=", "app="),
            ("tier in (b, a)", "tier in (a,b)"),
            ("tier in(a)", "tier in (a)"),
            ("tier notin (x)", "tier notin (x)"),
            ("canary", "canary"),
            ("!canary", "!canary"),
            ("! canary", "!canary"),
            ("zone=eu,app=web", "app=web,zone=eu"),
            (
                "app.kubernetes.io/name=web,!canary,tier notin (db,cache)",
                "app.kubernetes.io/name=web,!canary,tier notin (cache,db)",
            ),
        ];
        for (text, canonical) in cases {
            let selector = LabelSelector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(selector.to_string(), canonical, "{text}");
            // The canonical text is a fixed point.
            assert_eq!(LabelSelector::parse(canonical).unwrap(), selector, "{text}");
        }
    }

    #[test]
    fn parse_builds_requirements() {
        let selector: LabelSelector = "tier in (a,b),app!=web".parse().unwrap();
        assert_eq!(
            selector.requirements(),
            [
                Requirement {
                    key: "app".into(),
                    operator: Operator::NotEquals,
                    values: BTreeSet::from(["web".to_string()]),
                },
                Requirement {
                    key: "tier".into(),
                    operator: Operator::In,
                    values: BTreeSet::from(["a".to_string(), "b".to_string()]),
                },
            ]
        );
        assert!(LabelSelector::parse("").unwrap().is_everything());
    }

    #[test]
    fn rejects_bad_selectors_with_column_and_token() {
        // (input, column, token, message)
        let cases = [
            (
                "app=web,",
                9,
                "end of input",
                "expected a label key, found end of input",
            ),
            (",app", 1, ",", "expected a label key, found \",\""),
            (
                "app web",
                5,
                "web",
                "expected one of =, ==, !=, in, notin, ',' or the end, found \"web\"",
            ),
            ("app=web=x", 8, "=", "expected ',' or the end, found \"=\""),
            (
                "tier in a",
                9,
                "a",
                "expected '(' after \"in\", found \"a\"",
            ),
            (
                "tier in (a",
                11,
                "end of input",
                "expected ',' or ')', found end of input",
            ),
            ("tier in ()", 10, ")", "expected a label value, found \")\""),
            (
                "tier notin (a,)",
                15,
                ")",
                "expected a label value, found \")\"",
            ),
            (
                "!",
                2,
                "end of input",
                "expected a label key, found end of input",
            ),
            ("!app=web", 5, "=", "expected ',' or the end, found \"=\""),
            ("app=(x)", 5, "(", "expected a label value, found \"(\""),
            (
                "replicas>2",
                9,
                ">",
                "numeric comparisons are not supported",
            ),
        ];
        for (text, column, token, message) in cases {
            let err = LabelSelector::parse(text).expect_err(text);
            assert_eq!(
                (err.column, err.token.as_str(), err.message.as_str()),
                (column, token, message),
                "{text}"
            );
            assert_eq!(err.selector, text);
        }
    }

    #[test]
    fn rejects_invalid_keys_and_values() {
        let cases = [
            ("-app=web", 1, "-app"),
            ("app=-web", 5, "-web"),
            ("Example.com/app=web", 1, "Example.com/app"),
            ("a/b/c", 1, "a/b/c"),
            ("/app", 1, "/app"),
            ("tier in (a, b_)", 13, "b_"),
        ];
        for (text, column, token) in cases {
            let err = LabelSelector::parse(text).expect_err(text);
            assert_eq!((err.column, err.token.as_str()), (column, token), "{text}");
            assert!(
                err.message.starts_with("invalid label"),
                "{text}: {}",
                err.message
            );
        }
        let long = "a".repeat(64);
        assert!(LabelSelector::parse(&long).is_err());
        assert!(LabelSelector::parse(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn error_display_names_selector_and_column() {
        let err = LabelSelector::parse("tier in a").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid label selector \"tier in a\": column 9: expected '(' after \"in\", found \"a\""
        );
    }

    #[test]
    fn matches_labels() {
        let web = labels(&[("app", "web"), ("tier", "front"), ("empty", "")]);
        let none = labels(&[]);
        // (selector, matches web, matches an object without labels)
        let cases = [
            ("", true, true),
            ("app=web", true, false),
            ("app==db", false, false),
            ("app!=db", true, true),
            ("app!=web", false, true),
            ("tier in (front,back)", true, false),
            ("tier in (back)", false, false),
            ("tier notin (back)", true, true),
            ("tier notin (front)", false, true),
            ("app", true, false),
            ("!app", false, true),
            ("!canary", true, true),
            ("empty=", true, false),
            ("empty", true, false),
            ("app=web,tier=front", true, false),
            ("app=web,tier=back", false, false),
            ("app=web,!canary,tier notin (db)", true, false),
        ];
        for (text, on_web, on_none) in cases {
            let selector = LabelSelector::parse(text).unwrap();
            assert_eq!(selector.matches(&web), on_web, "{text} on web");
            assert_eq!(selector.matches(&none), on_none, "{text} on no labels");
        }
    }
}
