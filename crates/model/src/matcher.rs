//! Label matchers (`=`, `!=`, `=~`, `!~`) with Prometheus' semantics.
//!
//! Regular expressions are fully anchored (`^(?:re)$`), and a label that is
//! absent matches as the empty string: `{a=""}` selects series without `a`,
//! `{a=~".*"}` matches every series.

use regex::Regex;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};

/// Compiled regexes by pattern: dashboards send the same matchers again and again, and
/// compiling one (the regex crate may build a whole DFA) cost a tenth of a small query.
/// Bounded: emptied when full. Holds compiled programs only, never an answer.
fn compile(value: &str) -> Result<Regex, regex::Error> {
    const MAX: usize = 1024;
    static CACHE: OnceLock<Mutex<HashMap<String, Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(re) = cache.lock().ok().and_then(|c| c.get(value).cloned()) {
        return Ok(re);
    }
    let re = Regex::new(&format!("^(?s:{value})$"))?;
    if let Ok(mut c) = cache.lock() {
        if c.len() >= MAX {
            c.clear();
        }
        c.insert(value.to_string(), re.clone());
    }
    Ok(re)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl MatchOp {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// One matcher: `name op "value"`.
#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    /// The anchored regex for `=~` and `!~`.
    re: Option<Regex>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid regular expression {value:?} in matcher for label {name:?}: {reason}")]
pub struct MatcherError {
    pub name: String,
    pub value: String,
    pub reason: String,
}

impl Matcher {
    pub fn new(
        op: MatchOp,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, MatcherError> {
        let (name, value) = (name.into(), value.into());
        let re = match op {
            MatchOp::Regex | MatchOp::NotRegex => {
                Some(compile(&value).map_err(|e| MatcherError {
                    name: name.clone(),
                    value: value.clone(),
                    reason: e.to_string(),
                })?)
            }
            _ => None,
        };
        Ok(Matcher {
            name,
            op,
            value,
            re,
        })
    }

    /// `name="value"`, which cannot fail.
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
            re: None,
        }
    }

    /// Does a label value (`""` when the label is absent) match?
    pub fn matches(&self, value: &str) -> bool {
        match self.op {
            MatchOp::Equal => self.value == value,
            MatchOp::NotEqual => self.value != value,
            MatchOp::Regex => self.re.as_ref().is_some_and(|r| r.is_match(value)),
            MatchOp::NotRegex => !self.re.as_ref().is_some_and(|r| r.is_match(value)),
        }
    }

    /// Does this matcher accept a series that lacks the label?
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }

    /// For `=~` of a plain alternation of literals (`a|b|c`), the literals,
    /// so an index can look them up instead of scanning every value.
    pub fn set_matches(&self) -> Option<Vec<String>> {
        if self.op != MatchOp::Regex {
            return None;
        }
        let special = |c: char| "\\.+*?()[]{}^$".contains(c);
        if self.value.chars().any(special) {
            return None;
        }
        Some(self.value.split('|').map(str::to_string).collect())
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}\"{}\"",
            self.name,
            self.op.as_str(),
            self.value.escape_default()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(op: MatchOp, v: &str) -> Matcher {
        Matcher::new(op, "a", v).unwrap()
    }

    #[test]
    fn semantics() {
        assert!(m(MatchOp::Equal, "x").matches("x"));
        assert!(!m(MatchOp::Equal, "x").matches("xy"));
        assert!(m(MatchOp::NotEqual, "x").matches(""));
        // anchored
        assert!(m(MatchOp::Regex, "x.*").matches("xyz"));
        assert!(!m(MatchOp::Regex, "y").matches("xyz"));
        assert!(!m(MatchOp::Regex, "a|b").matches("ab"));
        assert!(m(MatchOp::NotRegex, "a|b").matches("ab"));
        // absent label = ""
        assert!(m(MatchOp::Equal, "").matches_empty());
        assert!(m(MatchOp::Regex, ".*").matches_empty());
        assert!(!m(MatchOp::Regex, ".+").matches_empty());
        // dot matches newline, as in Prometheus
        assert!(m(MatchOp::Regex, "a.b").matches("a\nb"));
    }

    #[test]
    fn bad_regex_is_an_error() {
        let e = Matcher::new(MatchOp::Regex, "job", "(").unwrap_err();
        assert!(e.to_string().contains("job"), "{e}");
    }

    #[test]
    fn set_matches() {
        assert_eq!(
            m(MatchOp::Regex, "a|bc").set_matches(),
            Some(vec!["a".into(), "bc".into()])
        );
        assert_eq!(m(MatchOp::Regex, "a.*").set_matches(), None);
        assert_eq!(m(MatchOp::Equal, "a").set_matches(), None);
    }
}
