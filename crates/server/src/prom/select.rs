//! Bare selectors, until the PromQL engine lands (issue #6): parses a
//! query with `promql-parser`, accepts only an instant vector selector
//! (`up{job="x"}`, with `offset`/`@`) or a range vector selector
//! (`metric{a=~"b.*"}[5m]`), and evaluates it over raw series the way
//! Prometheus does: an instant selector takes, per series, the newest
//! sample in the lookback window `(t − 5m, t]` unless it is a staleness
//! marker; a range selector takes every sample in `(t − range, t]` except
//! staleness markers. Anything else is a 400 that says so.

use std::time::UNIX_EPOCH;

use model::{MatchOp, Matcher, Sample, is_stale_nan};
use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{self, AtModifier, Expr, Offset, VectorSelector};

use super::api::PromError;

/// Prometheus' default lookback delta.
pub const LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// A parsed bare selector.
#[derive(Debug, Clone)]
pub struct Selection {
    pub matchers: Vec<Matcher>,
    /// `Some(range)` for a range vector selector.
    pub range_ms: Option<i64>,
    /// `offset` in ms (positive looks back).
    pub offset_ms: i64,
    /// `@` modifier: a fixed evaluation time, or the query's start/end.
    pub at: Option<At>,
}

#[derive(Debug, Clone, Copy)]
pub enum At {
    Time(i64),
    Start,
    End,
}

impl Selection {
    /// The evaluation time for query time `t` of a query spanning `start..=end`.
    pub fn eval_time(&self, t: i64, start: i64, end: i64) -> i64 {
        let base = match self.at {
            None => t,
            Some(At::Time(x)) => x,
            Some(At::Start) => start,
            Some(At::End) => end,
        };
        base - self.offset_ms
    }
}

/// Converts `promql-parser`'s matchers to ours (anchored regexes, as Prometheus).
pub fn convert_matchers(vs: &VectorSelector) -> Result<Vec<Matcher>, PromError> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(PromError::bad_data(
            "'or' inside a selector is not supported",
        ));
    }
    let mut out = Vec::with_capacity(vs.matchers.matchers.len() + 1);
    if let Some(name) = &vs.name
        && !vs
            .matchers
            .matchers
            .iter()
            .any(|m| m.name == model::METRIC_NAME)
    {
        out.push(Matcher::equal(model::METRIC_NAME, name.clone()));
    }
    for m in &vs.matchers.matchers {
        let op = match m.op {
            PMatchOp::Equal => MatchOp::Equal,
            PMatchOp::NotEqual => MatchOp::NotEqual,
            PMatchOp::Re(_) => MatchOp::Regex,
            PMatchOp::NotRe(_) => MatchOp::NotRegex,
        };
        out.push(
            Matcher::new(op, m.name.clone(), m.value.clone())
                .map_err(|e| PromError::bad_data(e.to_string()))?,
        );
    }
    // Prometheus refuses selectors that match every series, e.g. `{a=""}`.
    if out.iter().all(|m| m.matches_empty()) {
        return Err(PromError::bad_data(
            "vector selector must contain at least one non-empty matcher",
        ));
    }
    Ok(out)
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

fn at_of(a: &Option<AtModifier>) -> Option<At> {
    match a {
        None => None,
        Some(AtModifier::Start) => Some(At::Start),
        Some(AtModifier::End) => Some(At::End),
        Some(AtModifier::At(t)) => Some(At::Time(match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i64,
            Err(e) => -(e.duration().as_millis() as i64),
        })),
    }
}

/// Parses a query that must be a bare selector.
pub fn parse_selection(query: &str) -> Result<Selection, PromError> {
    check_query_shape("query", query)?;
    let expr = parser::parse(query)
        .map_err(|e| PromError::bad_data(format!("invalid parameter \"query\": {e}")))?;
    match expr {
        Expr::VectorSelector(vs) => Ok(Selection {
            matchers: convert_matchers(&vs)?,
            range_ms: None,
            offset_ms: offset_ms(&vs.offset),
            at: at_of(&vs.at),
        }),
        Expr::MatrixSelector(ms) => Ok(Selection {
            matchers: convert_matchers(&ms.vs)?,
            range_ms: Some(ms.range.as_millis() as i64),
            offset_ms: offset_ms(&ms.vs.offset),
            at: at_of(&ms.vs.at),
        }),
        _ => Err(PromError::bad_data(
            "only bare selectors (`metric{label=\"v\"}` or `metric{…}[5m]`) can be evaluated yet: \
             the PromQL engine comes with issue #6",
        )),
    }
}

/// Parses one `match[]` parameter: it must be a vector selector.
pub fn parse_match(m: &str) -> Result<Vec<Matcher>, PromError> {
    check_query_shape("match[]", m)?;
    match parser::parse(m) {
        Ok(Expr::VectorSelector(vs)) => convert_matchers(&vs),
        Ok(_) => Err(PromError::bad_data(format!(
            "invalid parameter \"match[]\": {m:?} is not a vector selector"
        ))),
        Err(e) => Err(PromError::bad_data(format!(
            "invalid parameter \"match[]\": {e}"
        ))),
    }
}

/// Longest query text accepted, in bytes (VictoriaMetrics' default
/// `-search.maxQueryLen`; Prometheus has none).
pub const MAX_QUERY_BYTES: usize = 16 * 1024;
/// Deepest nesting of `(`, `[` and `{`.
pub const MAX_QUERY_NESTING: usize = 256;
/// Most arithmetic operator signs (`+ - * / % ^`) outside strings.
pub const MAX_QUERY_OPERATORS: usize = 2048;

/// Refuses query texts the parser cannot take safely, before it sees
/// them. `promql-parser` recurses once per nesting level and per operator
/// of a chain (building and dropping the tree), and parses long operator
/// chains in quadratic time: 100,000 nested parentheses overflowed a
/// server thread's stack and aborted the process, and `a+a+…` with 30,000
/// terms takes half a minute. Real queries are far inside these bounds.
/// Quoted strings (label values, regexes) and `#` comments are skipped.
pub fn check_query_shape(param: &str, q: &str) -> Result<(), PromError> {
    let refuse = |what: String| {
        Err(PromError::bad_data(format!(
            "invalid parameter \"{param}\": {what}; split or simplify the query"
        )))
    };
    if q.len() > MAX_QUERY_BYTES {
        return refuse(format!(
            "the query is {} bytes long, the limit is {MAX_QUERY_BYTES}",
            q.len()
        ));
    }
    let (mut depth, mut operators) = (0usize, 0usize);
    let mut chars = q.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
            }
            '`' => {
                for d in chars.by_ref() {
                    if d == '`' {
                        break;
                    }
                }
            }
            '#' => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_QUERY_NESTING {
                    return refuse(format!(
                        "brackets nest more than {MAX_QUERY_NESTING} levels deep"
                    ));
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            '+' | '-' | '*' | '/' | '%' | '^' => {
                operators += 1;
                if operators > MAX_QUERY_OPERATORS {
                    return refuse(format!(
                        "more than {MAX_QUERY_OPERATORS} arithmetic operators"
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The instant-vector value at `t`: the newest sample in `(t − lookback, t]`,
/// none if that sample is a staleness marker. `samples` are in time order.
pub fn instant_value(samples: &[Sample], t: i64, lookback: i64) -> Option<Sample> {
    let end = samples.partition_point(|s| s.t <= t);
    let s = *samples[..end].last()?;
    (s.t > t - lookback && !is_stale_nan(s.v)).then_some(s)
}

/// The range-vector samples at `t`: `(t − range, t]` without staleness markers.
pub fn range_values(samples: &[Sample], t: i64, range: i64) -> Vec<Sample> {
    let lo = samples.partition_point(|s| s.t <= t - range);
    let hi = samples.partition_point(|s| s.t <= t);
    samples[lo..hi]
        .iter()
        .copied()
        .filter(|s| !is_stale_nan(s.v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: i64, v: f64) -> Sample {
        Sample { t, v }
    }

    /// Hostile shapes are refused before parsing, quickly and with 400;
    /// brackets, quotes and signs inside strings do not count.
    #[test]
    fn query_shapes_the_parser_cannot_take() {
        let deep = format!("{}up{}", "(".repeat(100_000), ")".repeat(100_000));
        let chain = format!("a{}", "+a".repeat(3000));
        let neg = format!("{}up", "-".repeat(5000));
        let long = format!("up{{a=\"{}\"}}", "x".repeat(MAX_QUERY_BYTES));
        for (q, why) in [
            (&deep, "bytes long"),
            (
                &format!("{}up{}", "(".repeat(300), ")".repeat(300)),
                "levels deep",
            ),
            (
                &format!("{}up{}", "abs(".repeat(257), ")".repeat(257)),
                "levels deep",
            ),
            (&chain, "arithmetic operators"),
            (&neg, "arithmetic operators"),
            (&long, "bytes long"),
        ] {
            let e = parse_selection(q).unwrap_err();
            assert!(e.message.contains(why), "{}", e.message);
            assert!(
                e.message.starts_with("invalid parameter \"query\""),
                "{}",
                e.message
            );
            assert!(parse_match(q).unwrap_err().message.contains(why));
        }
        let nested_ok = format!("{}up{}", "(".repeat(256), ")".repeat(256));
        assert!(check_query_shape("query", &nested_ok).is_ok());
        let strings = format!(
            r#"up{{a="{}", b='{}', c=~`{}`}} # {}"#,
            "((\\\"".repeat(300),
            "[-".repeat(1500),
            "{+".repeat(1500),
            "(".repeat(300)
        );
        check_query_shape("query", &strings).unwrap();
    }

    #[test]
    fn selections() {
        let sel = parse_selection(r#"up{job=~"a.*"} offset 1m"#).unwrap();
        assert_eq!(sel.matchers.len(), 2);
        assert_eq!(sel.matchers[0].to_string(), r#"__name__="up""#);
        assert_eq!(sel.offset_ms, 60_000);
        assert!(sel.range_ms.is_none());
        let sel = parse_selection(r#"x[5m] @ 100"#).unwrap();
        assert_eq!(sel.range_ms, Some(300_000));
        assert_eq!(sel.eval_time(999, 0, 0), 100_000);
        assert!(
            parse_selection("sum(up)")
                .unwrap_err()
                .message
                .contains("issue #6")
        );
        assert!(
            parse_selection("up{")
                .unwrap_err()
                .message
                .starts_with("invalid parameter \"query\"")
        );
        assert!(
            parse_selection(r#"{a=""}"#)
                .unwrap_err()
                .message
                .contains("non-empty matcher")
        );
        assert!(parse_match("rate(x[5m])").is_err());
        assert_eq!(parse_match(r#"{__name__="a", b!="c"}"#).unwrap().len(), 2);
    }

    #[test]
    fn lookback_and_staleness() {
        let v = [
            s(0, 1.0),
            s(10_000, 2.0),
            s(20_000, model::stale_nan()),
            s(400_000, 4.0),
        ];
        assert_eq!(instant_value(&v, 15_000, LOOKBACK_MS), Some(s(10_000, 2.0)));
        assert_eq!(
            instant_value(&v, 25_000, LOOKBACK_MS),
            None,
            "stale marker hides the series"
        );
        assert_eq!(instant_value(&v, 399_999, LOOKBACK_MS), None);
        assert_eq!(
            instant_value(&v, 699_999, LOOKBACK_MS),
            Some(s(400_000, 4.0))
        );
        assert_eq!(
            instant_value(&v, 700_000, 300_000),
            None,
            "lookback window is left-open"
        );
        assert_eq!(
            range_values(&v, 20_000, 20_000),
            vec![s(10_000, 2.0)],
            "left-open, markers dropped"
        );
        assert_eq!(
            range_values(&v, 20_000, 20_001),
            vec![s(0, 1.0), s(10_000, 2.0)]
        );
    }
}
