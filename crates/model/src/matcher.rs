//! Label matchers (`=`, `!=`, `=~`, `!~`) with Prometheus' semantics.
//!
//! Regular expressions are fully anchored (`^(?:re)$`), and a label that is
//! absent matches as the empty string: `{a=""}` selects series without `a`,
//! `{a=~".*"}` matches every series.

use regex::Regex;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

/// A compiled `=~`/`!~` pattern: the anchored regex, and the literal prefixes one of which
/// begins every value it matches, when there are such (`(web|api)-0.*`: `web-0`, `api-0`).
/// Checking those first spares the regex engine's call (a few hundred ns even for a value
/// that fails at its first byte) for most values of a label with thousands.
#[derive(Clone, Debug)]
struct Compiled {
    re: Regex,
    prefixes: Option<Arc<[Box<[u8]>]>>,
}

impl Compiled {
    fn is_match(&self, value: &str) -> bool {
        if let Some(p) = &self.prefixes
            && !p.iter().any(|p| value.as_bytes().starts_with(p))
        {
            return false;
        }
        self.re.is_match(value)
    }
}

/// The literal prefixes of `pattern` (as it is matched: whole value, `.` matching newlines),
/// `None` when a match may begin with anything (or the set is too large to be worth it).
fn literal_prefixes(pattern: &str) -> Option<Arc<[Box<[u8]>]>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    const MAX_PREFIXES: usize = 16;
    let hir = regex_syntax::Parser::new()
        .parse(&format!("(?s:{pattern})"))
        .ok()?;
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    let lits = seq.literals()?;
    if lits.is_empty() || lits.len() > MAX_PREFIXES || lits.iter().any(|l| l.is_empty()) {
        return None;
    }
    Some(lits.iter().map(|l| Box::from(l.as_bytes())).collect())
}

/// Compiled patterns by pattern: dashboards send the same matchers again and again, and
/// compiling one (the regex crate may build a whole DFA) cost a tenth of a small query.
/// Bounded: emptied when full. Holds compiled programs only, never an answer.
fn compile(value: &str) -> Result<Compiled, regex::Error> {
    const MAX: usize = 1024;
    static CACHE: OnceLock<Mutex<HashMap<String, Compiled>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().ok().and_then(|c| c.get(value).cloned()) {
        return Ok(c);
    }
    let compiled = Compiled {
        re: Regex::new(&format!("^(?s:{value})$"))?,
        prefixes: literal_prefixes(value),
    };
    if let Ok(mut c) = cache.lock() {
        if c.len() >= MAX {
            c.clear();
        }
        c.insert(value.to_string(), compiled.clone());
    }
    Ok(compiled)
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
    re: Option<Compiled>,
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

    /// The prefix check never changes an answer: every pattern, with and without it, over
    /// values that start with the prefixes, nearly do, or do not; and it exists for the
    /// patterns dashboards use.
    #[test]
    fn literal_prefixes_only_rule_out_non_matches() {
        let patterns = [
            "(web|api)-0[0-1].*",
            "web-.*",
            "eth.*",
            "/api/.*",
            "5..",
            "a|b",
            "(?i)get",
            "foo(bar)?baz.*",
            "x*y",
            ".*x",
            "",
            "(a|)b",
            "[a-c]d.+",
            "é.*",
            "a\\.b.*",
            "(?i)web-.*",
            "line\nbreak.*",
        ];
        let values = [
            "",
            "web-001:9100",
            "web-011:9100",
            "web-021:9100",
            "api-00",
            "api-0",
            "db-001",
            "eth0",
            "eth",
            "lo",
            "/api/v1",
            "/apx",
            "500",
            "404",
            "a",
            "b",
            "ab",
            "GET",
            "gEt",
            "foobaz",
            "foobarbaz1",
            "fooba",
            "xxy",
            "y",
            "zx",
            "b",
            "ad1",
            "cd",
            "éa",
            "a.b!",
            "a-b",
            "WEB-1",
            "line\nbreak!",
        ];
        let mut with_prefixes = 0;
        for p in patterns {
            let c = compile(p).unwrap();
            with_prefixes += usize::from(c.prefixes.is_some());
            for v in values {
                assert_eq!(c.is_match(v), c.re.is_match(v), "{p:?} on {v:?}");
            }
        }
        assert!(with_prefixes >= 8, "{with_prefixes}");
        let c = compile("(web|api)-0[0-1].*").unwrap();
        let mut p: Vec<&[u8]> = c
            .prefixes
            .as_deref()
            .unwrap()
            .iter()
            .map(|b| &b[..])
            .collect();
        p.sort();
        assert_eq!(p, [&b"api-00"[..], b"api-01", b"web-00", b"web-01"]);
        assert!(compile(".*x").unwrap().prefixes.is_none());
        assert!(compile("(a|)b").unwrap().prefixes.is_some());
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
