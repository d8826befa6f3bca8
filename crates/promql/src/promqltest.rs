//! A runner for Prometheus' `promqltest` scripts (`load`, `clear`, `eval instant at`,
//! `eval range from … to … step …`, `expect fail/ordered/string/range vector`), over a
//! [`MemStorage`]. The format is described in `../shared/conformance/promql/FORMAT.md`.
//!
//! Each `eval` yields an [`Outcome`]: passed, failed (with the reason), or skipped (start
//! timestamps, which our storage does not keep). Annotation expectations (`expect warn`,
//! `expect info`, `no_warn`, `no_info`) are **not** checked; [`Outcome::annotations_unchecked`]
//! says when an eval had some. The optional "strict" extras of FORMAT.md §7 are not run.

use crate::histogram;
use crate::{Engine, Error, MemStorage, QueryOptions, SampleValue, Series, Value};
use model::{CounterResetHint, FloatHistogram, Labels, LabelsBuilder, METRIC_NAME, Span};
use std::collections::BTreeMap;

/// A script line the runner cannot read.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{file}:{line}: {message} (in {text:?}; see FORMAT.md for the script syntax)")]
pub struct ScriptError {
    pub file: String,
    pub line: usize,
    pub text: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Passed,
    Failed(String),
    Skipped(String),
}

/// The result of one `eval` statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub file: String,
    /// 1-based line of the `eval` header.
    pub line: usize,
    pub status: Status,
    /// Uses only stable PromQL: not in an experimental-feature file, no experimental function.
    pub stable: bool,
    pub annotations_unchecked: bool,
}

/// Files that exercise only experimental Prometheus features (FORMAT.md §9).
pub const EXPERIMENTAL_FILES: &[&str] = &[
    "start_timestamps.test",
    "info.test",
    "type_and_unit.test",
    "fill-modifier.test",
    "extended_vectors.test",
    "duration_expression.test",
];

/// Functions behind Prometheus' `--enable-feature=promql-experimental-functions` (FORMAT.md §8).
pub const EXPERIMENTAL_FUNCTIONS: &[&str] = &[
    "sort_by_label",
    "sort_by_label_desc",
    "limitk",
    "limit_ratio",
    "mad_over_time",
    "double_exponential_smoothing",
    "info",
    "ts_of_min_over_time",
    "ts_of_max_over_time",
    "ts_of_first_over_time",
    "ts_of_last_over_time",
    "histogram_quantiles",
    "min_of",
    "max_of",
    "start",
    "end",
    "range",
    "step",
];

/// Experimental syntax: the native-histogram trim operators.
pub const EXPERIMENTAL_SYNTAX: &[&str] = &["</", ">/"];

fn uses_experimental(q: &str) -> bool {
    EXPERIMENTAL_SYNTAX.iter().any(|s| q.contains(s))
        || EXPERIMENTAL_FUNCTIONS.iter().any(|f| {
            q.match_indices(f).any(|(i, _)| {
                let before_ok = i == 0 || {
                    let c = q.as_bytes()[i - 1];
                    !(c.is_ascii_alphanumeric() || c == b'_')
                };
                let rest = q[i + f.len()..].trim_start();
                before_ok && rest.starts_with('(')
            })
        })
}

#[derive(Debug)]
enum Slot {
    Empty,
    Float(f64),
    Hist(FloatHistogram, bool),
}

#[derive(Debug)]
struct Expected {
    labels: Labels,
    slots: Vec<Slot>,
}

#[derive(Debug)]
enum EvalKind {
    Instant(i64),
    Range(i64, i64, i64),
}

#[derive(Debug, Default)]
struct Expect {
    fail: Option<FailMatch>,
    ordered: bool,
    string: Option<String>,
    range_vector: Option<(i64, i64, i64)>,
    scalar: Option<f64>,
    series: Vec<Expected>,
    annotations: bool,
}

#[derive(Debug)]
enum FailMatch {
    Any,
    Msg(String),
    Regex(String),
}

/// Parses a promqltest duration (`1m30s`, `0`, `10s53ms`) into milliseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    if s == "0" {
        return Some(0);
    }
    let mut total = 0i64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let v: i64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let (unit, len) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            let u = match rest.as_bytes().first()? {
                b'y' => 365 * 86_400_000,
                b'w' => 7 * 86_400_000,
                b'd' => 86_400_000,
                b'h' => 3_600_000,
                b'm' => 60_000,
                b's' => 1000,
                _ => return None,
            };
            (u, 1)
        };
        total += v * unit;
        rest = &rest[len..];
    }
    Some(total)
}

/// Go's `ParseFloat` for the forms the scripts use (plus hex integers).
pub fn parse_number(s: &str) -> Option<f64> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let v = if lower == "inf" || lower == "infinity" {
        f64::INFINITY
    } else if lower == "nan" {
        f64::NAN
    } else if let Some(hex) = lower.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()? as f64
    } else {
        if body.is_empty()
            || !body
                .bytes()
                .all(|b| b.is_ascii_digit() || b"._eE+-".contains(&b))
        {
            return None;
        }
        body.parse::<f64>().ok()?
    };
    Some(if neg { -v } else { v })
}

fn unquote(s: &str) -> Option<(String, usize)> {
    let q = s.chars().next()?;
    if q == '`' {
        let end = s[1..].find('`')?;
        return Some((s[1..1 + end].to_string(), end + 2));
    }
    if q != '"' && q != '\'' {
        return None;
    }
    let mut out = String::new();
    let mut it = s.char_indices().skip(1);
    while let Some((i, c)) = it.next() {
        if c == q {
            return Some((out, i + 1));
        }
        if c == '\\' {
            let (_, e) = it.next()?;
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                '\'' => out.push('\''),
                'a' => out.push('\x07'),
                'b' => out.push('\x08'),
                'f' => out.push('\x0c'),
                'v' => out.push('\x0b'),
                'x' | 'u' | 'U' => {
                    let n = match e {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let mut h = String::new();
                    for _ in 0..n {
                        h.push(it.next()?.1);
                    }
                    out.push(char::from_u32(u32::from_str_radix(&h, 16).ok()?)?);
                }
                d if d.is_digit(8) => {
                    let mut o = String::from(d);
                    for _ in 0..2 {
                        o.push(it.next()?.1);
                    }
                    out.push(char::from_u32(u32::from_str_radix(&o, 8).ok()?)?);
                }
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        } else {
            out.push(c);
        }
    }
    None
}

/// Parses `name{l="v", …}` and returns the labels and the rest of the line.
fn parse_series(s: &str) -> Result<(Labels, &str), String> {
    let s = s.trim_start();
    let name_len = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    let mut b = LabelsBuilder::default();
    if name_len > 0 {
        b.set(METRIC_NAME, &s[..name_len]);
    }
    let mut rest = &s[name_len..];
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let (name, r) = if let Some((n, len)) = unquote(rest) {
                (n, &rest[len..])
            } else {
                let l = rest
                    .find(|c: char| {
                        !(c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '.')
                    })
                    .unwrap_or(rest.len());
                if l == 0 {
                    return Err(format!("bad label name at {rest:?}"));
                }
                (rest[..l].to_string(), &rest[l..])
            };
            let r = r.trim_start();
            if let Some(r) = r.strip_prefix('=') {
                let r = r.trim_start();
                let (v, len) = unquote(r).ok_or_else(|| format!("bad label value at {r:?}"))?;
                b.set(name, v);
                rest = &r[len..];
            } else {
                b.set(METRIC_NAME, name);
                rest = r;
            }
        }
    }
    Ok((b.build(), rest))
}

fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '{' && b.get(i + 1) == Some(&'{') {
            depth += 1;
            cur.push_str("{{");
            i += 2;
            continue;
        }
        if c == '}' && b.get(i + 1) == Some(&'}') && depth > 0 {
            depth -= 1;
            cur.push_str("}}");
            i += 2;
            continue;
        }
        if c.is_whitespace() && depth == 0 {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
        i += 1;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn parse_hist(s: &str) -> Result<(FloatHistogram, bool), String> {
    let inner = s
        .strip_prefix("{{")
        .and_then(|x| x.strip_suffix("}}"))
        .ok_or_else(|| format!("bad histogram {s:?}"))?;
    let mut h = FloatHistogram::default();
    let mut has_hint = false;
    let (mut buckets, mut nbuckets) = (Vec::new(), Vec::new());
    let (mut off, mut noff) = (0i32, 0i32);
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let colon = rest
            .find(':')
            .ok_or_else(|| format!("bad histogram field at {rest:?}"))?;
        let key = rest[..colon].trim();
        rest = rest[colon + 1..].trim_start();
        let val;
        if rest.starts_with('[') {
            let end = rest.find(']').ok_or("unclosed [")?;
            val = &rest[1..end];
            rest = rest[end + 1..].trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            val = &rest[..end];
            rest = rest[end..].trim_start();
        }
        let num = |v: &str| parse_number(v).ok_or_else(|| format!("bad number {v:?}"));
        let list =
            |v: &str| -> Result<Vec<f64>, String> { v.split_whitespace().map(num).collect() };
        match key {
            "schema" => h.schema = num(val)? as i32,
            "sum" => h.sum = num(val)?,
            "count" => h.count = num(val)?,
            "z_bucket" => h.zero_count = num(val)?,
            "z_bucket_w" => h.zero_threshold = num(val)?,
            "buckets" => buckets = list(val)?,
            "n_buckets" => nbuckets = list(val)?,
            "offset" => off = num(val)? as i32,
            "n_offset" => noff = num(val)? as i32,
            "custom_values" => h.custom_values = list(val)?,
            "counter_reset_hint" => {
                has_hint = true;
                h.counter_reset_hint = match val {
                    "unknown" => CounterResetHint::Unknown,
                    "reset" => CounterResetHint::CounterReset,
                    "not_reset" => CounterResetHint::NotCounterReset,
                    "gauge" => CounterResetHint::Gauge,
                    o => return Err(format!("bad counter_reset_hint {o:?}")),
                }
            }
            o => return Err(format!("unknown histogram field {o:?}")),
        }
    }
    if !buckets.is_empty() {
        h.positive_spans = vec![Span {
            offset: off,
            length: buckets.len() as u32,
        }];
        h.positive_buckets = buckets;
    }
    if !nbuckets.is_empty() {
        h.negative_spans = vec![Span {
            offset: noff,
            length: nbuckets.len() as u32,
        }];
        h.negative_buckets = nbuckets;
    }
    Ok((h, has_hint))
}

fn parse_values(s: &str) -> Result<Vec<Slot>, String> {
    let mut out = Vec::new();
    for tok in tokens(s) {
        if tok == "_" {
            out.push(Slot::Empty);
        } else if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("bad repeat {tok:?}"))?;
            out.extend((0..n).map(|_| Slot::Empty));
        } else if tok == "stale" {
            out.push(Slot::Float(model::stale_nan()));
        } else if tok.starts_with("{{") {
            let close = tok.find("}}").ok_or("unclosed histogram")? + 2;
            let (a, hint) = parse_hist(&tok[..close])?;
            let rest = &tok[close..];
            if rest.is_empty() {
                out.push(Slot::Hist(a, hint));
                continue;
            }
            let (b, times) = if let Some(n) = rest.strip_prefix('x') {
                (None, n)
            } else {
                let sign = if rest.starts_with('+') { 1.0 } else { -1.0 };
                let r = &rest[1..];
                let c2 = r.find("}}").ok_or("unclosed histogram")? + 2;
                let (b, _) = parse_hist(&r[..c2])?;
                (
                    Some((sign, b)),
                    r[c2..].strip_prefix('x').ok_or("expected x")?,
                )
            };
            let n: usize = times.parse().map_err(|_| format!("bad repeat {tok:?}"))?;
            let mut cur = a.clone();
            for i in 0..=n {
                if i > 0
                    && let Some((sign, b)) = &b
                {
                    let mut next = if *sign > 0.0 {
                        histogram::add(&cur, b)
                    } else {
                        histogram::sub(&cur, b)
                    }
                    .ok_or("incompatible histograms in series")?;
                    next.counter_reset_hint = a.counter_reset_hint;
                    cur = next;
                }
                out.push(Slot::Hist(cur.clone(), hint));
            }
        } else if let Some(v) = parse_number(&tok) {
            out.push(Slot::Float(v));
        } else {
            let xi = tok.rfind('x').ok_or_else(|| format!("bad value {tok:?}"))?;
            let n: usize = tok[xi + 1..]
                .parse()
                .map_err(|_| format!("bad repeat {tok:?}"))?;
            let expr = &tok[..xi];
            let bytes = expr.as_bytes();
            let split = (1..bytes.len()).find(|&i| {
                (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E')
            });
            let (a, d) = match split {
                None => (
                    parse_number(expr).ok_or_else(|| format!("bad value {tok:?}"))?,
                    0.0,
                ),
                Some(i) => {
                    let a = parse_number(&expr[..i]).ok_or_else(|| format!("bad value {tok:?}"))?;
                    let d =
                        parse_number(&expr[i + 1..]).ok_or_else(|| format!("bad value {tok:?}"))?;
                    (a, if bytes[i] == b'-' { -d } else { d })
                }
            };
            let mut cur = a;
            for i in 0..=n {
                if i > 0 {
                    cur += d;
                }
                out.push(Slot::Float(cur));
            }
        }
    }
    Ok(out)
}

/// Runs one script; `name` is used in outcomes and errors.
pub fn run_script(name: &str, text: &str, engine: &Engine) -> Result<Vec<Outcome>, ScriptError> {
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let t = l.trim();
            if t.starts_with('#') {
                String::new()
            } else {
                t.to_string()
            }
        })
        .collect();
    let base = name.rsplit('/').next().unwrap_or(name);
    let experimental_file = EXPERIMENTAL_FILES.contains(&base);
    let start_ts = lines.iter().any(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|w| w.ends_with("@st"))
    });
    let mut storage = MemStorage::new();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |line: usize, msg: String| ScriptError {
        file: name.to_string(),
        line: line + 1,
        text: lines.get(line).cloned().unwrap_or_default(),
        message: msg,
    };
    while i < lines.len() {
        let l = &lines[i];
        if l.is_empty() {
            i += 1;
            continue;
        }
        let kw = l
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut end = i + 1;
        while end < lines.len() && !lines[end].is_empty() {
            end += 1;
        }
        if kw == "clear" {
            storage.clear();
            // `clear` is a one-line command; a `load` may follow without a blank line.
            end = i + 1;
        } else if kw.starts_with("load") {
            let step = l
                .split_whitespace()
                .nth(1)
                .and_then(parse_duration)
                .ok_or_else(|| err(i, "load needs a step duration".into()))?;
            let nhcb = kw == "load_with_nhcb";
            let mut block: BTreeMap<Labels, Vec<Slot>> = BTreeMap::new();
            let mut order = Vec::new();
            for (k, line) in lines.iter().enumerate().take(end).skip(i + 1) {
                let (labels, rest) = parse_series(line).map_err(|m| err(k, m))?;
                if labels.iter().any(|l| l.name.ends_with("@st"))
                    || line
                        .split_whitespace()
                        .next()
                        .is_some_and(|w| w.ends_with("@st"))
                {
                    continue;
                }
                let slots = parse_values(rest).map_err(|m| err(k, m))?;
                if !block.contains_key(&labels) {
                    order.push(labels.clone());
                }
                block.insert(labels, slots);
            }
            if nhcb {
                convert_nhcb(&block, step, &mut storage);
            }
            for labels in order {
                let slots = &block[&labels];
                for (k, s) in slots.iter().enumerate() {
                    let t = k as i64 * step;
                    match s {
                        Slot::Empty => {}
                        Slot::Float(v) => storage.add_float(labels.clone(), t, *v),
                        Slot::Hist(h, _) => storage.add_histogram(labels.clone(), t, h.clone()),
                    }
                }
            }
        } else if kw.starts_with("eval") {
            let o = run_eval(
                name,
                &lines,
                i,
                end,
                &storage,
                engine,
                experimental_file,
                start_ts,
            )?;
            out.push(o);
        } else {
            return Err(err(i, "invalid command".into()));
        }
        i = end;
    }
    Ok(out)
}

/// A classic histogram family of one load block: `(le, slots)` per bucket, `_count`, `_sum`.
type Family<'a> = (
    Vec<(f64, &'a Vec<Slot>)>,
    Option<&'a Vec<Slot>>,
    Option<&'a Vec<Slot>>,
);

/// `load_with_nhcb`: each classic histogram family also becomes a custom-bucket histogram.
fn convert_nhcb(block: &BTreeMap<Labels, Vec<Slot>>, step: i64, storage: &mut MemStorage) {
    // base labels -> (buckets by bound, _count slots, _sum slots)
    let mut fams: BTreeMap<Labels, Family<'_>> = BTreeMap::new();
    for (l, slots) in block {
        let Some(name) = l.metric_name() else {
            continue;
        };
        let (base, kind) = if let Some(b) = name.strip_suffix("_bucket") {
            (b, 0)
        } else if let Some(b) = name.strip_suffix("_count") {
            (b, 1)
        } else if let Some(b) = name.strip_suffix("_sum") {
            (b, 2)
        } else {
            continue;
        };
        let mut b = l.builder();
        b.set(METRIC_NAME, base);
        b.del("le");
        let key = b.build();
        let e = fams.entry(key).or_default();
        match kind {
            0 => {
                let Some(le) = l.get("le").and_then(parse_number) else {
                    continue;
                };
                if le.is_nan() {
                    continue;
                }
                e.0.push((le, slots));
            }
            1 => e.1 = Some(slots),
            _ => e.2 = Some(slots),
        }
    }
    for (key, (mut buckets, count, sum)) in fams {
        if buckets.is_empty() {
            continue;
        }
        buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        let n = buckets.iter().map(|b| b.1.len()).max().unwrap_or(0);
        let fv = |s: Option<&Vec<Slot>>, k: usize| match s.and_then(|s| s.get(k)) {
            Some(Slot::Float(v)) => Some(*v),
            _ => None,
        };
        for k in 0..n {
            let mut cum = Vec::new();
            let mut ok = true;
            for b in &buckets {
                match fv(Some(b.1), k) {
                    Some(v) if !model::is_stale_nan(v) => cum.push((b.0, v)),
                    _ => ok = false,
                }
            }
            if !ok {
                continue;
            }
            let bounds: Vec<f64> = cum.iter().map(|c| c.0).filter(|b| b.is_finite()).collect();
            let mut pops = Vec::new();
            let mut prev = 0.0;
            for c in &cum {
                pops.push(c.1 - prev);
                prev = c.1;
            }
            let total = fv(count, k).unwrap_or(prev);
            let h = FloatHistogram {
                schema: model::CUSTOM_BUCKETS_SCHEMA,
                count: total,
                sum: fv(sum, k).unwrap_or(0.0),
                positive_spans: vec![Span {
                    offset: 0,
                    length: pops.len() as u32,
                }],
                positive_buckets: pops,
                custom_values: bounds,
                ..FloatHistogram::default()
            };
            storage.add_histogram(key.clone(), k as i64 * step, h);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_eval(
    file: &str,
    lines: &[String],
    start: usize,
    end: usize,
    storage: &MemStorage,
    engine: &Engine,
    experimental_file: bool,
    start_ts: bool,
) -> Result<Outcome, ScriptError> {
    let header = &lines[start];
    let err = |line: usize, msg: String| ScriptError {
        file: file.to_string(),
        line: line + 1,
        text: lines[line].clone(),
        message: msg,
    };
    let mut words = header.splitn(2, char::is_whitespace);
    let kw = words.next().unwrap_or("").to_ascii_lowercase();
    let rest = words.next().unwrap_or("").trim_start();
    let mut ex = Expect::default();
    match kw.as_str() {
        "eval_fail" => ex.fail = Some(FailMatch::Any),
        "eval_ordered" => ex.ordered = true,
        "eval_warn" | "eval_info" => ex.annotations = true,
        _ => {}
    }
    let (kind, query) = if let Some(r) = rest.strip_prefix("instant") {
        let r = r
            .trim_start()
            .strip_prefix("at")
            .ok_or_else(|| err(start, "expected `at`".into()))?
            .trim_start();
        let (t, q) = r
            .split_once(char::is_whitespace)
            .ok_or_else(|| err(start, "missing query".into()))?;
        let t = parse_duration(t).ok_or_else(|| err(start, format!("bad time {t:?}")))?;
        (EvalKind::Instant(t), q.trim())
    } else if let Some(r) = rest.strip_prefix("range") {
        let w: Vec<&str> = r.trim_start().splitn(7, char::is_whitespace).collect();
        if w.len() < 7 || w[0] != "from" || w[2] != "to" || w[4] != "step" {
            return Err(err(
                start,
                "expected `range from T to T step D QUERY`".into(),
            ));
        }
        let p =
            |s: &str| parse_duration(s).ok_or_else(|| err(start, format!("bad duration {s:?}")));
        (EvalKind::Range(p(w[1])?, p(w[3])?, p(w[5])?), w[6].trim())
    } else {
        return Err(err(start, "expected `instant` or `range`".into()));
    };
    for (k, line) in lines.iter().enumerate().take(end).skip(start + 1) {
        if let Some(r) = line.strip_prefix("expect range vector from ") {
            let w: Vec<&str> = r.split_whitespace().collect();
            let p =
                |s: &str| parse_duration(s).ok_or_else(|| err(k, format!("bad duration {s:?}")));
            if w.len() != 5 {
                return Err(err(k, "expected `from T to T step D`".into()));
            }
            ex.range_vector = Some((p(w[0])?, p(w[2])?, p(w[4])?));
        } else if let Some(r) = line.strip_prefix("expect string ") {
            let (s, _) = unquote(r.trim()).ok_or_else(|| err(k, "bad string".into()))?;
            ex.string = Some(s);
        } else if let Some(r) = line.strip_prefix("expect ") {
            let (what, tail) = r.split_once(char::is_whitespace).unwrap_or((r, ""));
            let tail = tail.trim_start();
            match what {
                "fail" => {
                    ex.fail = Some(if let Some(m) = tail.strip_prefix("msg:") {
                        FailMatch::Msg(m.trim().to_string())
                    } else if let Some(m) = tail.strip_prefix("regex:") {
                        FailMatch::Regex(m.trim().to_string())
                    } else {
                        FailMatch::Any
                    })
                }
                "warn" | "info" | "no_warn" | "no_info" => ex.annotations = true,
                "ordered" => ex.ordered = true,
                o => return Err(err(k, format!("unknown expectation {o:?}"))),
            }
        } else if let Some(v) = parse_number(line) {
            ex.scalar = Some(v);
            break;
        } else {
            let (labels, rest) = parse_series(line).map_err(|m| err(k, m))?;
            let slots = parse_values(rest).map_err(|m| err(k, m))?;
            ex.series.push(Expected { labels, slots });
        }
    }
    let stable = !experimental_file && !uses_experimental(query);
    let mut outcome = Outcome {
        file: file.to_string(),
        line: start + 1,
        status: Status::Passed,
        stable,
        annotations_unchecked: ex.annotations,
    };
    if start_ts {
        outcome.status = Status::Skipped("start timestamps (@st) are not stored".into());
        return Ok(outcome);
    }
    let expr = match Engine::parse(query) {
        Ok(e) => e,
        Err(e) => {
            outcome.status = Status::Failed(format!("promql-parser 0.11 cannot parse: {e}"));
            return Ok(outcome);
        }
    };
    let opts = QueryOptions::default();
    let res = match kind {
        EvalKind::Instant(t) => engine.instant_expr(storage, &expr, t, &opts),
        EvalKind::Range(s, e, st) => engine.range_expr(storage, &expr, s, e, st, &opts),
    };
    outcome.status = match check(&ex, &kind, res) {
        Ok(()) => Status::Passed,
        Err(m) => Status::Failed(m),
    };
    Ok(outcome)
}

/// FORMAT.md §6 float equality.
pub fn float_eq(a: f64, b: f64) -> bool {
    if model::is_stale_nan(a) || model::is_stale_nan(b) {
        return model::is_stale_nan(a) && model::is_stale_nan(b);
    }
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    if a.is_infinite() || b.is_infinite() || a.is_nan() || b.is_nan() {
        return false;
    }
    if a == 0.0 || b == 0.0 {
        return (a - b).abs() < 1e-6 * 2.2250738585072014e-308;
    }
    (a - b).abs() / (a.abs() + b.abs()) < 1e-6
}

fn hist_eq(exp: &FloatHistogram, check_hint: bool, got: &FloatHistogram) -> bool {
    let b = |h: &FloatHistogram| histogram::bucket_map(h);
    let (ep, en) = b(exp);
    let (gp, gn) = b(got);
    let maps_eq = |x: &BTreeMap<i32, f64>, y: &BTreeMap<i32, f64>| {
        x.len() == y.len()
            && x.iter()
                .zip(y)
                .all(|((i, a), (j, b))| i == j && float_eq(*a, *b))
    };
    exp.schema == got.schema
        && float_eq(exp.count, got.count)
        && float_eq(exp.sum, got.sum)
        && float_eq(exp.zero_count, got.zero_count)
        && exp.zero_threshold == got.zero_threshold
        && (exp.schema != model::CUSTOM_BUCKETS_SCHEMA || exp.custom_values == got.custom_values)
        && maps_eq(&ep, &gp)
        && maps_eq(&en, &gn)
        && (!check_hint || exp.counter_reset_hint == got.counter_reset_hint)
}

fn slot_eq(s: &Slot, v: &SampleValue) -> bool {
    match (s, v) {
        (Slot::Float(a), SampleValue::Float(b)) => float_eq(*a, *b),
        (Slot::Hist(a, hint), SampleValue::Histogram(b)) => hist_eq(a, *hint, b),
        _ => false,
    }
}

fn check(
    ex: &Expect,
    kind: &EvalKind,
    res: Result<crate::QueryResult, Error>,
) -> Result<(), String> {
    if let Some(f) = &ex.fail {
        return match (f, res) {
            (_, Ok(_)) => Err("expected an error, got a result".into()),
            (FailMatch::Any, Err(_)) => Ok(()),
            (FailMatch::Msg(m), Err(e)) => {
                if e.to_string() == *m {
                    Ok(())
                } else {
                    Err(format!("error {:?}, expected {m:?}", e.to_string()))
                }
            }
            (FailMatch::Regex(r), Err(e)) => {
                let re = regex::Regex::new(r).map_err(|e| format!("bad regex in script: {e}"))?;
                if re.is_match(&e.to_string()) {
                    Ok(())
                } else {
                    Err(format!("error {:?} does not match {r:?}", e.to_string()))
                }
            }
        };
    }
    let value = res.map_err(|e| format!("unexpected error: {e}"))?.value;
    if let Some(s) = &ex.string {
        return match value {
            Value::String { v, .. } if v == *s => Ok(()),
            other => Err(format!("expected string {s:?}, got {other:?}")),
        };
    }
    if let Some(x) = ex.scalar {
        return match value {
            Value::Scalar { v, .. } if float_eq(v, x) => Ok(()),
            other => Err(format!("expected scalar {x}, got {}", short(&other))),
        };
    }
    match (kind, value) {
        (EvalKind::Instant(_), Value::Matrix(m)) => {
            let Some((s, _, st)) = ex.range_vector else {
                return Err("got a range vector, no `expect range vector`".into());
            };
            check_matrix(ex, &m, s, st)
        }
        (EvalKind::Instant(_), Value::Vector(v)) => {
            if ex.series.len() != v.len() {
                return Err(format!(
                    "expected {} samples, got {}: {}",
                    ex.series.len(),
                    v.len(),
                    short(&Value::Vector(v))
                ));
            }
            for (k, e) in ex.series.iter().enumerate() {
                if e.slots.len() != 1 {
                    return Err("an instant expectation needs exactly one value".into());
                }
                let found = if ex.ordered {
                    (v[k].metric == e.labels).then_some(&v[k])
                } else {
                    v.iter().find(|s| s.metric == e.labels)
                };
                let Some(s) = found else {
                    return Err(format!(
                        "expected series {} not returned (ordered: {}); got {}",
                        crate::format_labels(&e.labels),
                        ex.ordered,
                        short(&Value::Vector(v.clone()))
                    ));
                };
                if !slot_eq(&e.slots[0], &s.value) {
                    return Err(format!(
                        "{}: expected {:?}, got {:?}",
                        crate::format_labels(&e.labels),
                        e.slots[0],
                        s.value
                    ));
                }
            }
            Ok(())
        }
        (EvalKind::Range(s, _, st), Value::Matrix(m)) => check_matrix(ex, &m, *s, *st),
        (_, Value::Scalar { v, .. }) if ex.series.is_empty() => {
            Err(format!("unexpected scalar {v}"))
        }
        (_, other) => Err(format!(
            "unexpected result type {}: {}",
            other.type_name(),
            short(&other)
        )),
    }
}

fn check_matrix(ex: &Expect, m: &[Series], start: i64, step: i64) -> Result<(), String> {
    if m.windows(2).any(|w| w[0].metric > w[1].metric) {
        return Err("matrix not sorted by labels".into());
    }
    if ex.series.len() != m.len() {
        return Err(format!(
            "expected {} series, got {}: {}",
            ex.series.len(),
            m.len(),
            short(&Value::Matrix(m.to_vec()))
        ));
    }
    for e in &ex.series {
        let Some(s) = m.iter().find(|s| s.metric == e.labels) else {
            return Err(format!(
                "expected series {} not returned",
                crate::format_labels(&e.labels)
            ));
        };
        let mut pts: Vec<(i64, SampleValue)> = s
            .floats
            .iter()
            .map(|f| (f.t, SampleValue::Float(f.v)))
            .collect();
        pts.extend(
            s.histograms
                .iter()
                .map(|(t, h)| (*t, SampleValue::Histogram(h.clone()))),
        );
        pts.sort_by_key(|p| p.0);
        let exp: Vec<(i64, &Slot)> = e
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !matches!(s, Slot::Empty))
            .map(|(i, s)| (start + i as i64 * step, s))
            .collect();
        if exp.len() != pts.len() {
            return Err(format!(
                "{}: expected {} points, got {}: {:?}",
                crate::format_labels(&e.labels),
                exp.len(),
                pts.len(),
                pts.iter().map(|p| p.0).collect::<Vec<_>>()
            ));
        }
        for ((t, slot), (gt, gv)) in exp.iter().zip(&pts) {
            if t != gt || !slot_eq(slot, gv) {
                return Err(format!(
                    "{}: at {t} expected {slot:?}, got {gv:?} at {gt}",
                    crate::format_labels(&e.labels)
                ));
            }
        }
    }
    Ok(())
}

fn short(v: &Value) -> String {
    let s = format!("{v:?}");
    if s.len() > 300 {
        format!(
            "{}…",
            &s[..s
                .char_indices()
                .take_while(|(i, _)| *i < 300)
                .last()
                .map_or(0, |x| x.0)]
        )
    } else {
        s
    }
}

/// Totals over outcomes.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub stable_passed: usize,
    pub stable_total: usize,
}

pub fn summarize(outcomes: &[Outcome]) -> Summary {
    let mut s = Summary::default();
    for o in outcomes {
        match o.status {
            Status::Passed => s.passed += 1,
            Status::Failed(_) => s.failed += 1,
            Status::Skipped(_) => s.skipped += 1,
        }
        if o.stable && !matches!(o.status, Status::Skipped(_)) {
            s.stable_total += 1;
            if o.status == Status::Passed {
                s.stable_passed += 1;
            }
        }
    }
    s
}
