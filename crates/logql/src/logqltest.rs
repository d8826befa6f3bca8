//! A runner for the `.logqltest` script format (Loki's declarative LogQL test scripts):
//! `clear`, `load` blocks of generated log lines, and `eval instant|range` blocks with their
//! expected results, evaluated on a [`MemStorage`]. Times are Go durations from the script
//! epoch 2026-01-01T00:00:00Z. See the conformance README for the format.

use crate::duration::parse_duration;
use crate::eval::{Engine, QueryParams, QueryResult};
use crate::pipeline::LabelPairs;
use crate::storage::MemStorage;

/// 2026-01-01T00:00:00Z in Unix nanoseconds.
pub const EPOCH_NS: i64 = 1_767_225_600 * 1_000_000_000;

/// What happened to one `eval`.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    Passed,
    Failed(String),
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub file: String,
    /// 1-based line of the `eval`.
    pub line: usize,
    pub query: String,
    pub status: Status,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
}

pub fn summarize(o: &[Outcome]) -> Summary {
    let mut s = Summary::default();
    for x in o {
        match x.status {
            Status::Passed => s.passed += 1,
            Status::Failed(_) => s.failed += 1,
        }
    }
    s
}

/// Removes a trailing `# comment` that is outside `"…"` and `` `…` ``.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '`' => quote = Some(c),
            None if c == '#' => return &line[..i],
            None => {}
        }
    }
    line
}

fn dur(s: &str) -> Result<i64, String> {
    parse_duration(s, false).map_err(|e| e.to_string())
}

/// Parses `{a="b", c=""}` (values taken literally between quotes; a `\"` escape is
/// honoured), returning the pairs and the rest of the text.
fn parse_label_set(s: &str) -> Result<(LabelPairs, &str), String> {
    let s = s.trim_start();
    let body = s.strip_prefix('{').ok_or("expected '{'")?;
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('}') {
            out.sort();
            return Ok((out, r));
        }
        let (name, r) = take_name(rest)?;
        let r = r.trim_start().strip_prefix('=').ok_or("expected '='")?;
        let (value, r) = take_quoted(r.trim_start())?;
        out.push((name, value));
        rest = r.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        }
    }
}

fn take_name(s: &str) -> Result<(String, &str), String> {
    if s.starts_with('"') {
        return take_quoted(s);
    }
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(s.len());
    if end == 0 {
        return Err(format!("expected a label name at {s:?}"));
    }
    Ok((s[..end].to_string(), &s[end..]))
}

fn take_quoted(s: &str) -> Result<(String, &str), String> {
    let q = s.chars().next().ok_or("expected a quoted string")?;
    if q != '"' && q != '`' {
        return Err(format!("expected a quoted string at {s:?}"));
    }
    let mut out = String::new();
    let mut it = s[1..].char_indices();
    while let Some((i, c)) = it.next() {
        if c == q {
            return Ok((out, &s[1 + i + 1..]));
        }
        if c == '\\' && q == '"' {
            if let Some((_, n)) = it.next() {
                match n {
                    '"' | '\\' => out.push(n),
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    Err("unterminated string".into())
}

/// The log line of a load entry: literal, no escapes.
fn take_literal(s: &str) -> Result<(String, &str), String> {
    let q = s.chars().next().ok_or("expected a log line")?;
    if q != '"' && q != '`' {
        return Err(format!("expected a quoted log line at {s:?}"));
    }
    let end = s[1..].find(q).ok_or("unterminated log line")?;
    Ok((s[1..1 + end].to_string(), &s[1 + end + 1..]))
}

fn load_line(store: &mut MemStorage, line: &str) -> Result<(), String> {
    let (labels, rest) = parse_label_set(line)?;
    let (text, rest) = take_literal(rest.trim_start())?;
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('@').ok_or("expected '@'")?.trim_start();
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let start = dur(&rest[..end])?;
    let mut rest = rest[end..].trim_start();
    let (mut step, mut count) = (0i64, 1i64);
    let mut metadata = Vec::new();
    while let Some(r) = rest.strip_prefix('[') {
        let close = r.find(']').ok_or("unclosed '['")?;
        let inner = r[..close].trim();
        rest = r[close + 1..].trim_start();
        if let Some(rep) = inner.strip_prefix("repeat") {
            let parts: Vec<&str> = rep.split_whitespace().collect();
            match parts.as_slice() {
                ["every", s, "for", n] => {
                    step = dur(s)?;
                    count = n.parse().map_err(|_| format!("bad count {n:?}"))?;
                }
                _ => return Err(format!("bad repeat clause {inner:?}")),
            }
        } else if let Some(md) = inner.strip_prefix("metadata") {
            let mut r = md.trim_start();
            while !r.is_empty() {
                let (k, r2) = take_name(r)?;
                let r2 = r2
                    .trim_start()
                    .strip_prefix('=')
                    .ok_or("expected '=' in metadata")?;
                let (v, r3) = take_quoted(r2.trim_start())?;
                metadata.push((k, v));
                r = r3.trim_start().trim_start_matches(',').trim_start();
            }
        } else {
            return Err(format!("unknown clause [{inner}]"));
        }
    }
    if !rest.is_empty() {
        return Err(format!("unexpected text {rest:?}"));
    }
    let model_labels = model::Labels::from_pairs(labels);
    for i in 0..count {
        let ts = EPOCH_NS + start + i * step;
        let l = text.replace("{{.i}}", &i.to_string());
        store.push(&model_labels, ts, &l, metadata.clone());
    }
    Ok(())
}

fn parse_value(tok: &str) -> Result<Vec<Option<f64>>, String> {
    let num = |s: &str| -> Result<f64, String> {
        match s {
            "NaN" => Ok(f64::NAN),
            "Inf" | "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            _ => s.parse().map_err(|_| format!("bad value {s:?}")),
        }
    };
    if tok == "_" {
        return Ok(vec![None]);
    }
    if let Some((base, n)) = tok.split_once('x')
        && (!base.starts_with("0") || base.len() > 1 || !n.is_empty())
        && let Ok(n) = n.parse::<usize>()
    {
        if base == "_" {
            return Ok(vec![None; n + 1]);
        }
        // a+b, a-b or a
        let split = base[1..].rfind(['+', '-']).map(|i| i + 1);
        let (a, b) = match split {
            Some(i) if !base[..i].ends_with(['e', 'E']) => (num(&base[..i])?, num(&base[i..])?),
            _ => (num(base)?, 0.0),
        };
        return Ok((0..=n).map(|k| Some(a + b * k as f64)).collect());
    }
    Ok(vec![Some(num(tok)?)])
}

fn floats_equal(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a.is_infinite() || b.is_infinite() {
        return a == b;
    }
    let d = (a - b).abs();
    d <= 1e-9 || d / a.abs().max(b.abs()) <= 1e-9
}

enum Expect {
    Fail {
        msg: Option<String>,
        regex: Option<String>,
    },
    Empty,
    Scalar(f64),
    Series {
        ordered: bool,
        series: Vec<(LabelPairs, Vec<Option<f64>>)>,
    },
    /// Our extension for log queries: `{labels} <time> "line"`, per stream in result order.
    Entries(Vec<(LabelPairs, i64, String)>),
}

struct EvalCmd {
    logs: bool,
    query: String,
    params: QueryParams,
    instant: bool,
    n_steps: usize,
}

fn parse_eval(line: &str) -> Result<EvalCmd, String> {
    let rest = line.strip_prefix("eval").ok_or("not an eval")?.trim_start();
    if let Some(r) = rest.strip_prefix("instant") {
        let r = r
            .trim_start()
            .strip_prefix("at")
            .ok_or("expected 'at'")?
            .trim_start();
        let end = r.find(char::is_whitespace).ok_or("missing query")?;
        let t = dur(&r[..end])?;
        return Ok(EvalCmd {
            logs: false,
            query: r[end..].trim().to_string(),
            params: QueryParams::instant(EPOCH_NS + t),
            instant: true,
            n_steps: 1,
        });
    }
    if let Some(r) = rest.strip_prefix("range") {
        let parts: Vec<&str> = r.trim_start().splitn(7, char::is_whitespace).collect();
        match parts.as_slice() {
            ["from", a, "to", b, "step", s, q] => {
                let (a, b, s) = (dur(a)?, dur(b)?, dur(s)?);
                if s <= 0 {
                    return Err("step must be positive".into());
                }
                let n = ((b - a) / s) as usize + 1;
                return Ok(EvalCmd {
                    logs: false,
                    query: q.trim().to_string(),
                    params: QueryParams::range(EPOCH_NS + a, EPOCH_NS + b, s),
                    instant: false,
                    n_steps: n,
                });
            }
            _ => return Err(format!("bad range eval {line:?}")),
        }
    }
    if let Some(r) = rest.strip_prefix("logs") {
        // eval logs from <t0> to <t1> [limit N] [forward|backward] <query>
        let mut words = r.trim_start();
        let next = |w: &mut &str| -> Option<String> {
            let t = w.trim_start();
            let end = t.find(char::is_whitespace)?;
            let tok = t[..end].to_string();
            *w = &t[end..];
            Some(tok)
        };
        let (Some(f), Some(a), Some(t), Some(b)) = (
            next(&mut words),
            next(&mut words),
            next(&mut words),
            next(&mut words),
        ) else {
            return Err(format!("bad logs eval {line:?}"));
        };
        if f != "from" || t != "to" {
            return Err(format!("bad logs eval {line:?}"));
        }
        let mut params = QueryParams::range(EPOCH_NS + dur(&a)?, EPOCH_NS + dur(&b)?, 0);
        loop {
            let t = words.trim_start();
            if let Some(r) = t.strip_prefix("limit ") {
                words = r;
                let n = next(&mut words).ok_or("limit needs a number")?;
                params.limit = n.parse().map_err(|_| format!("bad limit {n:?}"))?;
            } else if let Some(r) = t.strip_prefix("forward ") {
                words = r;
                params.direction = crate::storage::Direction::Forward;
            } else if let Some(r) = t.strip_prefix("backward ") {
                words = r;
                params.direction = crate::storage::Direction::Backward;
            } else {
                break;
            }
        }
        return Ok(EvalCmd {
            logs: true,
            query: words.trim().to_string(),
            params,
            instant: false,
            n_steps: 0,
        });
    }
    Err(format!("bad eval {line:?}"))
}

fn parse_entries(lines: &[&str]) -> Result<Vec<(LabelPairs, i64, String)>, String> {
    let mut out = Vec::new();
    for l in lines {
        let l = l.trim();
        if l.is_empty() {
            continue;
        }
        let (labels, rest) = parse_label_set(l)?;
        let rest = rest.trim_start();
        let end = rest
            .find(char::is_whitespace)
            .ok_or("entry needs a time and a line")?;
        let t = dur(&rest[..end])?;
        let (text, tail) = take_literal(rest[end..].trim_start())?;
        if !tail.trim().is_empty() {
            return Err(format!("unexpected text {tail:?}"));
        }
        out.push((labels, t, text));
    }
    Ok(out)
}

fn parse_expect(lines: &[&str]) -> Result<Expect, String> {
    let mut ordered = false;
    let mut series = Vec::new();
    let mut other = None;
    for l in lines {
        let l = l.trim();
        if l.is_empty() || l.starts_with("skip values-comparison") {
            continue;
        }
        if l == "expect ordered" {
            ordered = true;
        } else if l == "expect empty" {
            other = Some(Expect::Empty);
        } else if let Some(r) = l.strip_prefix("expect fail") {
            let r = r.trim();
            other = Some(if let Some(m) = r.strip_prefix("msg:") {
                Expect::Fail {
                    msg: Some(m.trim().to_string()),
                    regex: None,
                }
            } else if let Some(m) = r.strip_prefix("regex:") {
                Expect::Fail {
                    msg: None,
                    regex: Some(m.trim().to_string()),
                }
            } else {
                Expect::Fail {
                    msg: None,
                    regex: None,
                }
            });
        } else if l.starts_with('{') {
            let (labels, rest) = parse_label_set(l)?;
            let mut vals = Vec::new();
            for t in rest.split_whitespace() {
                vals.extend(parse_value(t)?);
            }
            series.push((labels, vals));
        } else {
            let v = parse_value(l)?;
            match v.as_slice() {
                [Some(x)] => other = Some(Expect::Scalar(*x)),
                _ => return Err(format!("bad expectation {l:?}")),
            }
        }
    }
    if let Some(o) = other {
        return Ok(o);
    }
    if series.is_empty() {
        return Err("eval without expectation".into());
    }
    Ok(Expect::Series { ordered, series })
}

fn check(cmd: &EvalCmd, exp: &Expect, got: Result<QueryResult, crate::Error>) -> Status {
    let fail = |s: String| Status::Failed(s);
    match (exp, got) {
        (Expect::Fail { msg, regex }, Err(e)) => {
            let text = e.to_string();
            if let Some(m) = msg
                && !text.contains(m.as_str())
            {
                return fail(format!("error {text:?} does not contain {m:?}"));
            }
            if let Some(r) = regex {
                match regex::Regex::new(r) {
                    Ok(re) if re.is_match(&text) => {}
                    _ => return fail(format!("error {text:?} does not match /{r}/")),
                }
            }
            Status::Passed
        }
        (Expect::Fail { .. }, Ok(r)) => fail(format!("expected failure, got {}", brief(&r))),
        (_, Err(e)) => fail(format!("unexpected error: {e}")),
        (Expect::Entries(want), Ok(QueryResult::Streams(got))) => {
            let got: Vec<(LabelPairs, i64, String)> = got
                .into_iter()
                .flat_map(|s| {
                    let labels = s.labels;
                    s.entries
                        .into_iter()
                        .map(move |e| (labels.clone(), e.ts_ns - EPOCH_NS, e.line))
                })
                .collect();
            // streams may come in any order; entries within a stream must keep theirs
            let per_stream = |v: &[(LabelPairs, i64, String)]| {
                let mut m: std::collections::BTreeMap<LabelPairs, Vec<(i64, String)>> =
                    Default::default();
                for (l, t, x) in v {
                    m.entry(l.clone()).or_default().push((*t, x.clone()));
                }
                m
            };
            if per_stream(&got) == per_stream(want) {
                Status::Passed
            } else {
                fail(format!("log entries differ: got {got:?}"))
            }
        }
        (Expect::Entries(_), Ok(r)) => fail(format!("expected log entries, got {}", brief(&r))),
        (Expect::Empty, Ok(r)) => match &r {
            QueryResult::Streams(s) if s.is_empty() => Status::Passed,
            QueryResult::Vector(v) if v.is_empty() => Status::Passed,
            QueryResult::Matrix(m) if m.is_empty() => Status::Passed,
            _ => fail(format!("expected empty, got {}", brief(&r))),
        },
        (Expect::Scalar(x), Ok(r)) => match &r {
            QueryResult::Scalar(v) if floats_equal(*v, *x) => Status::Passed,
            QueryResult::Matrix(m)
                if m.len() == 1
                    && m[0].labels.is_empty()
                    && m[0].points.iter().all(|(_, v)| floats_equal(*v, *x)) =>
            {
                Status::Passed
            }
            _ => fail(format!("expected scalar {x}, got {}", brief(&r))),
        },
        (Expect::Series { ordered, series }, Ok(r)) => {
            let got: Vec<(LabelPairs, Vec<Option<f64>>)> = match r {
                QueryResult::Vector(v) => v
                    .into_iter()
                    .map(|s| (s.labels, vec![Some(s.value)]))
                    .collect(),
                QueryResult::Scalar(x) => vec![(vec![], vec![Some(x)])],
                QueryResult::Matrix(m) => m
                    .into_iter()
                    .map(|s| {
                        let mut vals = vec![None; cmd.n_steps];
                        for (t, v) in s.points {
                            let i =
                                ((t - cmd.params.start_ns) / cmd.params.step_ns.max(1)) as usize;
                            if i < vals.len() {
                                vals[i] = Some(v);
                            }
                        }
                        (s.labels, vals)
                    })
                    .collect(),
                QueryResult::Streams(_) => return fail("got a streams result".into()),
            };
            if got.len() != series.len() {
                return fail(format!(
                    "expected {} series, got {}: {}",
                    series.len(),
                    got.len(),
                    fmt_series(&got)
                ));
            }
            for (i, (el, ev)) in series.iter().enumerate() {
                let found = if *ordered && cmd.instant {
                    (got[i].0 == *el).then_some(&got[i])
                } else {
                    got.iter().find(|(l, _)| l == el)
                };
                let Some((_, gv)) = found else {
                    return fail(format!(
                        "expected series {} not found in {}",
                        crate::eval::format_labels(el),
                        fmt_series(&got)
                    ));
                };
                let want_len = if cmd.instant { 1 } else { cmd.n_steps };
                if ev.len() != want_len {
                    return fail(format!(
                        "expectation for {} has {} values, want {want_len}",
                        crate::eval::format_labels(el),
                        ev.len()
                    ));
                }
                for (k, (a, b)) in ev.iter().zip(gv.iter()).enumerate() {
                    let ok = match (a, b) {
                        (None, None) => true,
                        (Some(x), Some(y)) => floats_equal(*x, *y),
                        _ => false,
                    };
                    if !ok {
                        return fail(format!(
                            "series {} step {k}: expected {a:?}, got {b:?} (all: {gv:?})",
                            crate::eval::format_labels(el)
                        ));
                    }
                }
            }
            Status::Passed
        }
    }
}

fn fmt_series(s: &[(LabelPairs, Vec<Option<f64>>)]) -> String {
    let v: Vec<String> = s
        .iter()
        .take(6)
        .map(|(l, v)| format!("{} {v:?}", crate::eval::format_labels(l)))
        .collect();
    v.join("; ")
}

fn brief(r: &QueryResult) -> String {
    match r {
        QueryResult::Scalar(x) => format!("scalar {x}"),
        QueryResult::Vector(v) => format!(
            "vector of {}: {}",
            v.len(),
            v.iter()
                .take(4)
                .map(|s| format!("{} {}", crate::eval::format_labels(&s.labels), s.value))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        QueryResult::Matrix(m) => format!("matrix of {}", m.len()),
        QueryResult::Streams(s) => format!("{} streams", s.len()),
    }
}

/// Runs one script; errors only for a script the runner cannot read.
pub fn run_script(file: &str, text: &str, engine: &Engine) -> Result<Vec<Outcome>, String> {
    run_script_opts(file, text, engine, false)
}

/// [`run_script`]; with `check_printed`, each query that parses is also run in its printed
/// (canonical) form, and an eval whose printed form fares differently fails.
pub fn run_script_opts(
    file: &str,
    text: &str,
    engine: &Engine,
    check_printed: bool,
) -> Result<Vec<Outcome>, String> {
    let lines: Vec<&str> = text.lines().map(strip_comment).collect();
    let mut store = MemStorage::new();
    let mut out = Vec::new();
    let mut i = 0;
    let indented = |l: &str| l.starts_with(' ') || l.starts_with('\t');
    while i < lines.len() {
        let l = lines[i].trim_end();
        let lineno = i + 1;
        i += 1;
        if l.trim().is_empty() {
            continue;
        }
        if l == "clear" {
            store.clear();
            continue;
        }
        if l == "load" {
            while i < lines.len() && indented(lines[i]) {
                let b = lines[i].trim();
                if !b.is_empty() {
                    load_line(&mut store, b).map_err(|e| format!("{file}:{}: {e}", i + 1))?;
                }
                i += 1;
            }
            store.seal();
            continue;
        }
        if l.starts_with("eval") {
            let mut block = Vec::new();
            while i < lines.len() && indented(lines[i]) {
                block.push(lines[i]);
                i += 1;
            }
            let cmd = parse_eval(l);
            let exp = match &cmd {
                Ok(c) if c.logs && !block.iter().any(|b| b.trim().starts_with("expect")) => {
                    parse_entries(&block).map(Expect::Entries)
                }
                _ => parse_expect(&block),
            };
            let status = match (cmd, exp) {
                (Ok(cmd), Ok(exp)) => {
                    let got = engine.query(&store, &cmd.query, &cmd.params);
                    let mut st = check(&cmd, &exp, got);
                    if let (true, Ok(e)) = (check_printed, crate::parse(&cmd.query)) {
                        let printed = e.to_string();
                        let again = engine.query(&store, &printed, &cmd.params);
                        let st2 = check(&cmd, &exp, again);
                        if st2 != st {
                            st = Status::Failed(format!(
                                "printed form {printed:?} gives {st2:?}, the query {st:?}"
                            ));
                        }
                    }
                    out.push(Outcome {
                        file: file.to_string(),
                        line: lineno,
                        query: cmd.query.clone(),
                        status: st,
                    });
                    continue;
                }
                (Err(e), _) | (_, Err(e)) => Status::Failed(format!("cannot read eval: {e}")),
            };
            out.push(Outcome {
                file: file.to_string(),
                line: lineno,
                query: l.to_string(),
                status,
            });
            continue;
        }
        return Err(format!("{file}:{lineno}: unknown command {l:?}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_a_small_script() {
        let script = r##"
# comment
clear
load
  {app="a"} "level=info v={{.i}}" @ 10s [repeat every 10s for 6]
  {app="b"} `x # not a comment` @ 15s [metadata k="m"]

eval instant at 60s count_over_time({app="a"}[1m])
  {app="a"} 6
eval range from 20s to 60s step 20s sum_over_time({app="a"} | logfmt | unwrap v [20s])
  {app="a", level="info"} 1 5 9
eval instant at 60s count_over_time({app="b"} |= "#" [1m])
  {app="b", k="m"} 1
eval instant at 60s count_over_time({app="zzz"}[1m])
  expect empty
eval instant at 60s sum(
  expect fail msg: syntax error
eval instant at 60s 1 + 1
  2
eval instant at 60s count_over_time({app="a"}[1m])
  {app="a"} 7
"##;
        let out = run_script("t", script, &Engine::default()).unwrap();
        let st: Vec<&Status> = out.iter().map(|o| &o.status).collect();
        assert_eq!(out.len(), 7);
        for s in &st[..6] {
            assert_eq!(**s, Status::Passed, "{out:?}");
        }
        assert!(
            matches!(st[6], Status::Failed(_)),
            "a wrong expectation must fail"
        );
    }

    #[test]
    fn values() {
        assert_eq!(
            parse_value("1+2x2").unwrap(),
            vec![Some(1.0), Some(3.0), Some(5.0)]
        );
        assert_eq!(parse_value("5-1x1").unwrap(), vec![Some(5.0), Some(4.0)]);
        assert_eq!(parse_value("_").unwrap(), vec![None]);
        assert_eq!(parse_value("-Inf").unwrap(), vec![Some(f64::NEG_INFINITY)]);
    }
}
