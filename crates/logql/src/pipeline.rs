//! Compiled log pipelines: line filters (memchr substring search, regexes, patterns, IPs),
//! parsers (json, logfmt, regexp, pattern, unpack), label filters, formatters and
//! keep/drop, run line by line over a reusable [`LabelsBuilder`].
//!
//! Labels of a line come from three sources, resolved as Loki does: the stream's labels win
//! the base name over structured metadata, which wins over parsed labels; a value that loses
//! its name goes to `<name>_extracted` (there parsed beats metadata beats stream). Parse and
//! conversion failures set `__error__` (and `__error_details__`) instead of dropping the line.

use crate::Error;
use crate::ast::*;
use crate::duration::{parse_bytes_human, parse_duration, parse_go_float};
use crate::template::{Data, Template};
use memchr::memmem;
use regex::Regex;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub const ERROR_LABEL: &str = "__error__";
pub const ERROR_DETAILS_LABEL: &str = "__error_details__";
pub const ERR_JSON: &str = "JSONParserErr";
pub const ERR_LOGFMT: &str = "LogfmtParserErr";
pub const ERR_LABEL_FILTER: &str = "LabelFilterErr";
pub const ERR_SAMPLE_EXTRACTION: &str = "SampleExtractionErr";
pub const ERR_TEMPLATE: &str = "TemplateFormatErr";

/// A label set that may hold empty values (Loki keeps `name=""` from `--keep-empty`),
/// sorted by name.
pub type LabelPairs = Vec<(String, String)>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cat {
    Metadata,
    Parsed,
}

/// The labels of the line being processed; reused from line to line.
#[derive(Default, Debug, Clone)]
pub struct LabelsBuilder {
    stream: Arc<LabelPairs>,
    add: Vec<(String, String, Cat)>,
    deleted: Vec<String>,
    err: String,
    err_details: String,
    /// Strings of earlier lines' labels, reused so that parsing a line rarely allocates.
    pool: Vec<String>,
    /// When set, parsers extract only these labels (the query needs no others).
    wanted: Option<Arc<Vec<String>>>,
}

impl LabelsBuilder {
    pub fn new(stream: Arc<LabelPairs>) -> Self {
        LabelsBuilder {
            stream,
            ..Default::default()
        }
    }

    /// Starts a new line of the same stream, with its structured metadata.
    pub fn reset(&mut self, metadata: &[(String, String)]) {
        let pool = &mut self.pool;
        for (k, v, _) in self.add.drain(..) {
            if pool.len() < 256 {
                pool.push(k);
                pool.push(v);
            }
        }
        self.deleted.clear();
        self.err.clear();
        self.err_details.clear();
        for (k, v) in metadata {
            let name = if self.stream_get(k).is_some() {
                format!("{k}_extracted")
            } else {
                k.clone()
            };
            self.add.push((name, v.clone(), Cat::Metadata));
        }
    }

    /// Restricts what parsers extract to `names` (Loki's label hints): only for callers that
    /// will look at no other label.
    pub fn set_wanted(&mut self, names: Option<Arc<Vec<String>>>) {
        self.wanted = names;
    }

    pub fn set_stream(&mut self, stream: Arc<LabelPairs>) {
        self.stream = stream;
    }

    fn stream_get(&self, name: &str) -> Option<&str> {
        self.stream
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| self.stream[i].1.as_str())
    }

    /// Is `name` a stream or structured-metadata label (so a parsed value goes to
    /// `name_extracted`)?
    fn base_has(&self, name: &str) -> bool {
        (self.stream_get(name).is_some() && !self.deleted.iter().any(|d| d == name))
            || self
                .add
                .iter()
                .any(|(k, _, c)| *c == Cat::Metadata && k == name)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        if name == ERROR_LABEL {
            return (!self.err.is_empty()).then_some(self.err.as_str());
        }
        if name == ERROR_DETAILS_LABEL {
            return (!self.err_details.is_empty()).then_some(self.err_details.as_str());
        }
        if let Some((_, v, _)) = self.add.iter().rev().find(|(k, _, _)| k == name) {
            return Some(v);
        }
        if self.deleted.iter().any(|d| d == name) {
            return None;
        }
        self.stream_get(name)
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.set_cat(name, value, Cat::Parsed);
    }

    fn set_cat(&mut self, name: &str, value: &str, cat: Cat) {
        if name == ERROR_LABEL {
            self.err = value.to_string();
            return;
        }
        if name == ERROR_DETAILS_LABEL {
            self.err_details = value.to_string();
            return;
        }
        if let Some(e) = self.add.iter_mut().find(|(k, _, _)| k == name) {
            e.1.clear();
            e.1.push_str(value);
            e.2 = cat;
        } else {
            let mut k = self.pool.pop().unwrap_or_default();
            k.clear();
            k.push_str(name);
            let mut v = self.pool.pop().unwrap_or_default();
            v.clear();
            v.push_str(value);
            self.add.push((k, v, cat));
        }
    }

    /// A parser's label: `name_extracted` when a stream or metadata label has the name; the
    /// first value a parser extracts for a name wins.
    fn set_parsed(&mut self, name: &str, value: &str) {
        if let Some(w) = &self.wanted {
            let needed = w.iter().any(|x| {
                x == name
                    || x.strip_suffix("_extracted")
                        .is_some_and(|base| base == name)
            });
            if !needed {
                return;
            }
        }
        let extracted;
        let name = if self.base_has(name) {
            extracted = format!("{name}_extracted");
            if self
                .add
                .iter()
                .any(|(k, _, c)| *c == Cat::Parsed && *k == extracted)
            {
                return;
            }
            extracted.as_str()
        } else {
            if self
                .add
                .iter()
                .any(|(k, _, c)| *c == Cat::Parsed && k == name)
            {
                return;
            }
            name
        };
        self.set_cat(name, value, Cat::Parsed);
    }

    pub fn del(&mut self, name: &str) {
        if name == ERROR_LABEL {
            self.err.clear();
            return;
        }
        if name == ERROR_DETAILS_LABEL {
            self.err_details.clear();
            return;
        }
        self.add.retain(|(k, _, _)| k != name);
        if self.stream_get(name).is_some() && !self.deleted.iter().any(|d| d == name) {
            self.deleted.push(name.to_string());
        }
    }

    pub fn has_err(&self) -> bool {
        !self.err.is_empty()
    }

    pub fn set_err(&mut self, err: &str, details: &str) {
        self.err = err.to_string();
        if self.err_details.is_empty() {
            self.err_details = details.to_string();
        }
    }

    /// Every current label, in any order (error labels last).
    pub fn for_each(&self, mut f: impl FnMut(&str, &str)) {
        for (k, v) in self.stream.iter() {
            if self.deleted.iter().any(|d| d == k) || self.add.iter().any(|(a, _, _)| a == k) {
                continue;
            }
            f(k, v);
        }
        for (i, (k, v, _)) in self.add.iter().enumerate() {
            // the last entry of a name wins (names are unique in `add`, but be safe)
            if self.add[i + 1..].iter().any(|(a, _, _)| a == k) {
                continue;
            }
            f(k, v);
        }
        if !self.err.is_empty() {
            f(ERROR_LABEL, &self.err);
        }
        if !self.err_details.is_empty() {
            f(ERROR_DETAILS_LABEL, &self.err_details);
        }
    }

    /// The current label set, sorted.
    pub fn labels(&self) -> LabelPairs {
        let mut v = Vec::with_capacity(self.stream.len() + self.add.len() + 2);
        self.for_each(|k, val| v.push((k.to_string(), val.to_string())));
        v.sort();
        v
    }

    /// The labels for a grouped range aggregation: only `by` labels, or all but the
    /// `without` ones (a line with an error keeps all its labels so the error shows).
    pub fn grouped(&self, g: Option<&Grouping>) -> LabelPairs {
        let Some(g) = g else {
            return self.labels();
        };
        if self.has_err() {
            return self.labels();
        }
        let mut v = Vec::new();
        self.for_each(|k, val| {
            let listed = g.labels.iter().any(|l| l == k);
            if listed != g.without {
                v.push((k.to_string(), val.to_string()));
            }
        });
        v.sort();
        v
    }

    /// The grouping that applies to this line: none when it carries an error (its labels
    /// stay whole so the error shows).
    pub fn effective_grouping<'g>(&self, g: Option<&'g Grouping>) -> Option<&'g Grouping> {
        if self.has_err() { None } else { g }
    }

    /// [`LabelsBuilder::hash`] of the labels `g` keeps, without allocating.
    pub fn grouped_hash(&self, g: Option<&Grouping>) -> u64 {
        let mut acc: u64 = 0;
        self.for_each(|k, v| {
            if g.is_none_or(|g| g.labels.iter().any(|l| l == k) != g.without) {
                acc = acc.wrapping_add(pair_hash(k, v));
            }
        });
        acc
    }

    /// Are the labels `g` keeps exactly `l` (sorted)? Does not allocate.
    pub fn grouped_eq(&self, g: Option<&Grouping>, l: &[(String, String)]) -> bool {
        let mut n = 0;
        let mut ok = true;
        self.for_each(|k, v| {
            if !ok || g.is_some_and(|g| g.labels.iter().any(|x| x == k) == g.without) {
                return;
            }
            n += 1;
            ok = l
                .binary_search_by(|(a, _)| a.as_str().cmp(k))
                .is_ok_and(|i| l[i].1 == v);
        });
        ok && n == l.len()
    }

    /// A hash of the current labels that does not allocate (order-independent).
    pub fn hash(&self) -> u64 {
        let mut acc: u64 = 0;
        self.for_each(|k, v| {
            acc = acc.wrapping_add(pair_hash(k, v));
        });
        acc
    }
}

/// An order-independent-combinable hash of one label.
pub fn pair_hash(k: &str, v: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in k.bytes().chain([0xffu8]).chain(v.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // final mix so that sums of hashes do not collide trivially
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// The hash [`LabelsBuilder::hash`] gives for a materialized label set.
pub fn labels_hash(l: &[(String, String)]) -> u64 {
    l.iter()
        .fold(0u64, |acc, (k, v)| acc.wrapping_add(pair_hash(k, v)))
}

// ---------------------------------------------------------------------------------------------
// line filters

#[derive(Debug)]
enum LineMatcher {
    Contains(Box<memmem::Finder<'static>>),
    Regex(Regex),
    Pattern(PatternMatcher),
    Ip(IpMatcher),
}

impl LineMatcher {
    fn matches(&self, line: &str) -> bool {
        match self {
            LineMatcher::Contains(f) => f.find(line.as_bytes()).is_some(),
            LineMatcher::Regex(r) => r.is_match(line),
            LineMatcher::Pattern(p) => p.matches(line),
            LineMatcher::Ip(m) => m.line_contains(line),
        }
    }
}

#[derive(Debug)]
struct CompiledLineFilter {
    negate: bool,
    alts: Vec<LineMatcher>,
}

impl CompiledLineFilter {
    fn compile(lf: &LineFilter) -> Result<Self, Error> {
        let mut alts = Vec::new();
        for v in &lf.values {
            let m = match (lf.op, v) {
                (LineFilterOp::Contains | LineFilterOp::NotContains, FilterValue::Str(s)) => {
                    LineMatcher::Contains(Box::new(memmem::Finder::new(s.as_bytes()).into_owned()))
                }
                (LineFilterOp::Match | LineFilterOp::NotMatch, FilterValue::Str(s)) => {
                    LineMatcher::Regex(Regex::new(s).map_err(|e| {
                        Error::BadQuery(format!("error parsing regexp: {}", regex_err(&e)))
                    })?)
                }
                (LineFilterOp::Pattern | LineFilterOp::NotPattern, FilterValue::Str(s)) => {
                    let p = PatternMatcher::parse_filter(s)?;
                    if p.names().next().is_some() {
                        return Err(Error::BadQuery(
                            "invalid pattern filter: named captures are not allowed".into(),
                        ));
                    }
                    LineMatcher::Pattern(p)
                }
                (LineFilterOp::Contains | LineFilterOp::NotContains, FilterValue::Ip(s)) => {
                    LineMatcher::Ip(IpMatcher::parse(s)?)
                }
                (_, FilterValue::Ip(s)) => {
                    IpMatcher::parse(s)?;
                    return Err(Error::BadQuery(format!(
                        "ip: invalid operation: only |= and != are supported with ip({})",
                        crate::duration::go_quote(s)
                    )));
                }
            };
            alts.push(m);
        }
        Ok(CompiledLineFilter {
            negate: lf.op.negated(),
            alts,
        })
    }

    fn keep(&self, line: &str) -> bool {
        self.alts.iter().any(|m| m.matches(line)) != self.negate
    }
}

fn regex_err(e: &regex::Error) -> String {
    e.to_string()
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// ip matching

#[derive(Debug, Clone)]
enum IpMatcher {
    Single(IpAddr),
    Cidr(IpAddr, u8),
    Range(IpAddr, IpAddr),
}

fn ip_bits(ip: &IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v) => (u128::from(u32::from(*v)), 32),
        IpAddr::V6(v) => (u128::from(*v), 128),
    }
}

impl IpMatcher {
    fn parse(s: &str) -> Result<Self, Error> {
        let bad = || Error::BadQuery(format!("ip: invalid pattern: {s:?}"));
        let t = s.trim();
        if let Some((a, b)) = t.split_once('-') {
            let a: IpAddr = a.trim().parse().map_err(|_| bad())?;
            let b: IpAddr = b.trim().parse().map_err(|_| bad())?;
            if a.is_ipv4() != b.is_ipv4() {
                return Err(bad());
            }
            return Ok(IpMatcher::Range(a, b));
        }
        if let Some((a, n)) = t.split_once('/') {
            let a: IpAddr = a.parse().map_err(|_| bad())?;
            let n: u8 = n.parse().map_err(|_| bad())?;
            if n > ip_bits(&a).1 {
                return Err(bad());
            }
            return Ok(IpMatcher::Cidr(a, n));
        }
        Ok(IpMatcher::Single(t.parse().map_err(|_| bad())?))
    }

    fn matches(&self, ip: &IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v) => v.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(*ip),
            v4 => *v4,
        };
        match self {
            IpMatcher::Single(a) => *a == ip,
            IpMatcher::Cidr(net, n) => {
                if net.is_ipv4() != ip.is_ipv4() {
                    return false;
                }
                let (a, w) = ip_bits(net);
                let (b, _) = ip_bits(&ip);
                let shift = u32::from(w - n);
                if shift >= 128 {
                    return true;
                }
                (a >> shift) == (b >> shift)
            }
            IpMatcher::Range(lo, hi) => {
                if lo.is_ipv4() != ip.is_ipv4() {
                    return false;
                }
                let v = ip_bits(&ip).0;
                ip_bits(lo).0 <= v && v <= ip_bits(hi).0
            }
        }
    }

    /// Does any IP-looking token of the line match?
    fn line_contains(&self, line: &str) -> bool {
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if c.is_ascii_hexdigit() || c == b':' {
                let st = i;
                while i < b.len() && (b[i].is_ascii_hexdigit() || b[i] == b'.' || b[i] == b':') {
                    i += 1;
                }
                let tok = line[st..i].trim_end_matches(['.', ':']);
                if tok.contains(['.', ':']) {
                    // `1.2.3.4:80`: also try without the port
                    let no_port = tok
                        .rsplit_once(':')
                        .map(|(a, _)| a)
                        .filter(|a| a.contains('.'));
                    for cand in [Some(tok), no_port].into_iter().flatten() {
                        if let Ok(ip) = cand.parse::<IpAddr>()
                            && self.matches(&ip)
                        {
                            return true;
                        }
                    }
                }
            } else {
                i += 1;
            }
        }
        false
    }
}

// ---------------------------------------------------------------------------------------------
// pattern

#[derive(Debug, Clone)]
enum PatPart {
    Lit(String),
    Cap(Option<String>),
}

/// Loki's pattern expressions: literals and `<name>`/`<_>` captures.
#[derive(Debug, Clone)]
pub struct PatternMatcher {
    parts: Vec<PatPart>,
}

impl PatternMatcher {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let p = Self::parse_filter(s)?;
        if !p.parts.iter().any(|p| matches!(p, PatPart::Cap(_))) {
            return Err(Error::BadQuery(
                "invalid pattern: at least one capture is required".into(),
            ));
        }
        Ok(p)
    }

    /// A pattern for `|>`/`!>`: captures optional.
    pub fn parse_filter(s: &str) -> Result<Self, Error> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('<') {
                let end = r.find('>');
                let name = end.map(|e| &r[..e]);
                if let Some(n) = name.filter(|n| {
                    !n.is_empty()
                        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        && !n.starts_with(|c: char| c.is_ascii_digit())
                }) {
                    if !lit.is_empty() {
                        parts.push(PatPart::Lit(std::mem::take(&mut lit)));
                    }
                    if matches!(parts.last(), Some(PatPart::Cap(_))) {
                        return Err(Error::BadQuery(
                            "invalid pattern: consecutive captures are not allowed".into(),
                        ));
                    }
                    parts.push(PatPart::Cap((n != "_").then(|| n.to_string())));
                    rest = &r[n.len() + 1..];
                    continue;
                }
            }
            let c = rest.chars().next().unwrap_or(' ');
            lit.push(c);
            rest = &rest[c.len_utf8()..];
        }
        if !lit.is_empty() {
            parts.push(PatPart::Lit(lit));
        }
        let mut seen = Vec::new();
        for p in &parts {
            if let PatPart::Cap(Some(n)) = p {
                if seen.contains(&n) {
                    return Err(Error::BadQuery(format!(
                        "invalid pattern: duplicate capture name ({n})"
                    )));
                }
                seen.push(n);
            }
        }
        Ok(PatternMatcher { parts })
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            PatPart::Cap(Some(n)) => Some(n.as_str()),
            _ => None,
        })
    }

    /// Runs the pattern; calls `emit` for each named capture; returns whether every
    /// literal was found.
    fn run<'l>(&self, line: &'l str, mut emit: impl FnMut(&str, &'l str)) -> bool {
        let mut pos = 0;
        let mut pending: Option<&Option<String>> = None;
        for (i, p) in self.parts.iter().enumerate() {
            match p {
                PatPart::Lit(l) => {
                    let found = if i == 0 {
                        line.starts_with(l.as_str()).then_some(0)
                    } else {
                        line[pos..].find(l.as_str()).map(|k| pos + k)
                    };
                    let Some(at) = found else {
                        if let Some(Some(n)) = pending {
                            emit(n, &line[pos..]);
                        }
                        return false;
                    };
                    if let Some(Some(n)) = pending.take() {
                        emit(n, &line[pos..at]);
                    }
                    pending = None;
                    pos = at + l.len();
                }
                PatPart::Cap(c) => pending = Some(c),
            }
        }
        if let Some(Some(n)) = pending {
            emit(n, &line[pos..]);
        }
        true
    }

    /// The `|>` filter: the whole line must match (literals at the ends are anchored).
    fn matches(&self, line: &str) -> bool {
        let n = self.parts.len();
        let mut pos = 0;
        for (i, p) in self.parts.iter().enumerate() {
            let PatPart::Lit(l) = p else { continue };
            if i == 0 {
                if !line.starts_with(l.as_str()) {
                    return false;
                }
                pos = l.len();
                if n == 1 {
                    return line.len() == l.len();
                }
            } else if i == n - 1 {
                return line.len() >= pos + l.len() && line.ends_with(l.as_str());
            } else {
                match line[pos..].find(l.as_str()) {
                    Some(k) => pos += k + l.len(),
                    None => return false,
                }
            }
        }
        true
    }
}

// ---------------------------------------------------------------------------------------------
// json

#[derive(Debug, Clone)]
enum PathSeg {
    Key(String),
    Index(usize),
}

fn parse_json_path(expr: &str) -> Result<Vec<PathSeg>, Error> {
    let bad = || Error::BadQuery(format!("cannot parse expression [{expr}]: syntax error"));
    let mut segs = Vec::new();
    let b: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let mut key = String::new();
    while i < b.len() {
        match b[i] {
            '.' => {
                if key.is_empty()
                    && !matches!(segs.last(), Some(PathSeg::Index(_)) | Some(PathSeg::Key(_)))
                {
                    return Err(bad());
                }
                if !key.is_empty() {
                    segs.push(PathSeg::Key(std::mem::take(&mut key)));
                }
                i += 1;
            }
            '[' => {
                if !key.is_empty() {
                    segs.push(PathSeg::Key(std::mem::take(&mut key)));
                }
                let end = b[i..].iter().position(|c| *c == ']').ok_or_else(bad)? + i;
                let inner: String = b[i + 1..end].iter().collect();
                let inner = inner.trim();
                if let Some(q) = inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                    segs.push(PathSeg::Key(q.to_string()));
                } else {
                    segs.push(PathSeg::Index(inner.parse().map_err(|_| bad())?));
                }
                i = end + 1;
            }
            c => {
                key.push(c);
                i += 1;
            }
        }
    }
    if !key.is_empty() {
        segs.push(PathSeg::Key(key));
    }
    if segs.is_empty() {
        return Err(bad());
    }
    Ok(segs)
}

/// Loki's label-name sanitizing for parsed keys.
fn sanitize_key(k: &str, out: &mut String) {
    if k.starts_with(|c: char| c.is_ascii_digit()) && out.is_empty() {
        out.push('_');
    }
    for c in k.chars() {
        out.push(if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        });
    }
}

fn json_flatten(prefix: &mut String, v: &serde_json::Value, lb: &mut LabelsBuilder) {
    if let serde_json::Value::Object(m) = v {
        for (k, val) in m {
            let len = prefix.len();
            if !prefix.is_empty() {
                prefix.push('_');
            }
            sanitize_key(k, prefix);
            match val {
                serde_json::Value::Object(_) => json_flatten(prefix, val, lb),
                serde_json::Value::String(s) => lb.set_parsed(prefix, s),
                serde_json::Value::Number(n) => lb.set_parsed(prefix, &n.to_string()),
                serde_json::Value::Bool(b) => {
                    lb.set_parsed(prefix, if *b { "true" } else { "false" })
                }
                _ => {}
            }
            prefix.truncate(len);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// logfmt

/// Scans logfmt pairs; `Err` (with go-logfmt's message) on malformed input, after emitting the
/// pairs before the problem.
fn logfmt_scan<'l>(
    line: &'l str,
    mut emit: impl FnMut(&'l str, std::borrow::Cow<'l, str>),
) -> Result<(), String> {
    let b = line.as_bytes();
    let mut i = 0;
    let n = b.len();
    let mut first_err: Option<String> = None;
    while i < n {
        while i < n && b[i] <= b' ' {
            i += 1;
        }
        if i >= n {
            break;
        }
        let ks = i;
        while i < n && b[i] > b' ' && b[i] != b'=' && b[i] != b'"' {
            i += 1;
        }
        let key = &line[ks..i];
        if key.is_empty() {
            first_err.get_or_insert_with(|| {
                format!(
                    "logfmt syntax error at pos {}: unexpected '{}'",
                    i + 1,
                    b[i] as char
                )
            });
            // skip the offending token
            while i < n && b[i] > b' ' {
                i += 1;
            }
            continue;
        }
        if i < n && b[i] == b'"' {
            first_err.get_or_insert_with(|| {
                format!("logfmt syntax error at pos {}: unexpected '\"'", i + 1)
            });
            while i < n && b[i] > b' ' {
                i += 1;
            }
            continue;
        }
        if i >= n || b[i] != b'=' {
            emit(key, std::borrow::Cow::Borrowed(""));
            continue;
        }
        i += 1; // '='
        if i < n && b[i] == b'"' {
            let vs = i + 1;
            let mut j = vs;
            let mut escaped = false;
            while j < n && b[j] != b'"' {
                if b[j] == b'\\' {
                    escaped = true;
                    j += 1;
                }
                j += 1;
            }
            if j >= n {
                first_err.get_or_insert_with(|| {
                    format!(
                        "logfmt syntax error at pos {}: unterminated quoted value",
                        n + 1
                    )
                });
                break;
            }
            let raw = &line[vs..j];
            let v = if escaped {
                std::borrow::Cow::Owned(unescape_go(raw))
            } else {
                std::borrow::Cow::Borrowed(raw)
            };
            emit(key, v);
            i = j + 1;
            continue;
        }
        let vs = i;
        while i < n && b[i] > b' ' && b[i] != b'"' && b[i] != b'=' {
            i += 1;
        }
        if i < n && (b[i] == b'"' || b[i] == b'=') {
            first_err.get_or_insert_with(|| {
                format!(
                    "logfmt syntax error at pos {}: unexpected '{}'",
                    i + 1,
                    b[i] as char
                )
            });
            while i < n && b[i] > b' ' {
                i += 1;
            }
            continue;
        }
        emit(key, std::borrow::Cow::Borrowed(&line[vs..i]));
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn unescape_go(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(o) => out.push(o),
            None => {}
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// label filters

#[derive(Debug)]
enum CLabelFilter {
    And(Box<CLabelFilter>, Box<CLabelFilter>),
    Or(Box<CLabelFilter>, Box<CLabelFilter>),
    Str(model::Matcher),
    Number {
        name: String,
        op: CmpOp,
        value: f64,
    },
    Duration {
        name: String,
        op: CmpOp,
        value: f64,
    },
    Bytes {
        name: String,
        op: CmpOp,
        value: u64,
    },
    Ip {
        name: String,
        negate: bool,
        m: IpMatcher,
    },
}

/// A label a converting (number, duration, bytes) filter can read: not the error labels.
fn readable<'b>(lb: &'b LabelsBuilder, name: &str) -> Option<&'b str> {
    if name == ERROR_LABEL || name == ERROR_DETAILS_LABEL {
        return None;
    }
    lb.get(name)
}

impl CLabelFilter {
    fn names(&self, out: &mut Vec<String>) {
        match self {
            CLabelFilter::And(a, b) | CLabelFilter::Or(a, b) => {
                a.names(out);
                b.names(out);
            }
            CLabelFilter::Str(m) => out.push(m.name.clone()),
            CLabelFilter::Number { name, .. }
            | CLabelFilter::Duration { name, .. }
            | CLabelFilter::Bytes { name, .. }
            | CLabelFilter::Ip { name, .. } => out.push(name.clone()),
        }
    }

    fn compile(f: &LabelFilter) -> Result<Self, Error> {
        Ok(match f {
            LabelFilter::And(a, b) => {
                CLabelFilter::And(Box::new(Self::compile(a)?), Box::new(Self::compile(b)?))
            }
            LabelFilter::Or(a, b) => {
                CLabelFilter::Or(Box::new(Self::compile(a)?), Box::new(Self::compile(b)?))
            }
            LabelFilter::Paren(a) => Self::compile(a)?,
            LabelFilter::Str(m) => CLabelFilter::Str(m.clone()),
            LabelFilter::Number { name, op, value } => CLabelFilter::Number {
                name: name.clone(),
                op: *op,
                value: *value,
            },
            LabelFilter::Duration {
                name, op, value, ..
            } => CLabelFilter::Duration {
                name: name.clone(),
                op: *op,
                value: *value,
            },
            LabelFilter::Bytes {
                name, op, value, ..
            } => CLabelFilter::Bytes {
                name: name.clone(),
                op: *op,
                value: *value,
            },
            LabelFilter::Ip {
                name,
                negate,
                pattern,
            } => CLabelFilter::Ip {
                name: name.clone(),
                negate: *negate,
                m: IpMatcher::parse(pattern)?,
            },
        })
    }

    fn process(&self, lb: &mut LabelsBuilder) -> bool {
        match self {
            CLabelFilter::And(a, b) => {
                let l = a.process(lb);
                let r = b.process(lb);
                l && r
            }
            CLabelFilter::Or(a, b) => a.process(lb) || b.process(lb),
            CLabelFilter::Str(m) => m.matches(lb.get(&m.name).unwrap_or("")),
            CLabelFilter::Number { name, op, value } => {
                converting_filter(lb, name, |x| op.apply(x, *value), parse_go_float)
            }
            CLabelFilter::Duration { name, op, value } => converting_filter(
                lb,
                name,
                |x| op.apply(x, *value),
                |v| {
                    parse_duration(v, false)
                        .map(|ns| ns as f64 / 1e9)
                        .map_err(|e| e.to_string())
                },
            ),
            CLabelFilter::Bytes { name, op, value } => {
                converting_filter(lb, name, |x| op.apply(x, *value), parse_bytes_human)
            }
            CLabelFilter::Ip { name, negate, m } => {
                if lb.has_err() {
                    return true;
                }
                let Some(v) = lb.get(name) else { return false };
                let hit = m.line_contains(v);
                hit != *negate
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// stages

#[derive(Debug)]
enum CLabelFmt {
    Rename { dst: String, src: String },
    Template { dst: String, t: Template },
}

#[derive(Debug)]
enum CStage {
    Filter(CompiledLineFilter),
    Decolorize,
    Json(Option<Vec<(String, Vec<PathSeg>)>>),
    Logfmt {
        strict: bool,
        keep_empty: bool,
        params: Option<Vec<(String, String)>>,
    },
    Regexp(Regex),
    Pattern(PatternMatcher),
    Unpack,
    LabelFilter(CLabelFilter),
    LineFormat(Template),
    LabelFormat(Vec<CLabelFmt>),
    Keep(Vec<NameOrMatcher>),
    Drop(Vec<NameOrMatcher>),
}

/// `| distinct a, b`: passes an entry the first time its combination of these labels'
/// values is seen (absent labels count as absent, not as ""). Applied where entries are
/// emitted in the query's order (after the merge of streams), so "first" is the oldest
/// for a forward query and the newest for a backward one.
#[derive(Debug)]
pub struct DistinctFilter {
    names: Vec<String>,
    seen: Mutex<HashSet<Vec<Option<String>>>>,
}

/// Distinct value combinations a filter remembers at most (a live tail runs for long):
/// past this, entries with combinations not seen yet pass.
const DISTINCT_MAX: usize = 100_000;

impl DistinctFilter {
    /// Whether this is the first entry with these labels' values (and remember them).
    pub fn first_time(&self, labels: &LabelPairs) -> bool {
        let key: Vec<Option<String>> = self
            .names
            .iter()
            .map(|n| labels.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()))
            .collect();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&key) {
            return false;
        }
        if seen.len() < DISTINCT_MAX {
            seen.insert(key);
        }
        true
    }
}

/// A compiled pipeline.
#[derive(Debug)]
pub struct Pipeline {
    stages: Vec<CStage>,
    /// `| distinct` filters, applied by the caller where entries are emitted in order.
    distinct: Vec<DistinctFilter>,
    /// Substrings every kept line contains (leading `|= "…"` filters): storage hints.
    hints: Vec<String>,
    /// The wall clock when the pipeline was compiled (ns): templates' `now`, one value for
    /// the whole query.
    now_ns: i64,
}

fn template_err(e: String) -> Error {
    Error::BadQuery(e)
}

impl Pipeline {
    pub fn compile(stages: &[Stage]) -> Result<Pipeline, Error> {
        let mut out = Vec::new();
        let mut hints = Vec::new();
        let mut distinct = Vec::new();
        let mut leading = true;
        for s in stages {
            let c = match s {
                Stage::LineFilter(lf) => {
                    if leading
                        && lf.op == LineFilterOp::Contains
                        && lf.values.len() == 1
                        && let FilterValue::Str(v) = &lf.values[0]
                        && !v.is_empty()
                    {
                        hints.push(v.clone());
                    }
                    CStage::Filter(CompiledLineFilter::compile(lf)?)
                }
                Stage::Decolorize => CStage::Decolorize,
                Stage::Json(params) if params.is_empty() => CStage::Json(None),
                Stage::Json(params) => CStage::Json(Some(
                    params
                        .iter()
                        .map(|(n, e)| Ok((n.clone(), parse_json_path(e)?)))
                        .collect::<Result<_, Error>>()?,
                )),
                Stage::Logfmt {
                    strict,
                    keep_empty,
                    params,
                } => CStage::Logfmt {
                    strict: *strict,
                    keep_empty: *keep_empty,
                    params: (!params.is_empty()).then(|| params.clone()),
                },
                Stage::Regexp(r) => {
                    let re = Regex::new(r).map_err(|e| {
                        let m = regex_err(&e);
                        if m.contains("duplicate capture group name") {
                            Error::BadQuery(format!("duplicate extracted label name: {m}"))
                        } else {
                            Error::BadQuery(format!("error parsing regexp: {m}"))
                        }
                    })?;
                    let names: Vec<&str> = re.capture_names().flatten().collect();
                    if names.is_empty() {
                        return Err(Error::BadQuery(
                            "at least one named capture must be supplied".into(),
                        ));
                    }
                    for (i, n) in names.iter().enumerate() {
                        if names[..i].contains(n) {
                            return Err(Error::BadQuery(format!(
                                "duplicate extracted label name {n}"
                            )));
                        }
                        if !model::is_valid_label_name(n) {
                            return Err(Error::BadQuery(format!(
                                "invalid extracted label name '{n}'"
                            )));
                        }
                    }
                    CStage::Regexp(re)
                }
                Stage::Pattern(p) => CStage::Pattern(PatternMatcher::parse(p)?),
                Stage::Unpack => CStage::Unpack,
                Stage::LabelFilter(f) => CStage::LabelFilter(CLabelFilter::compile(f)?),
                Stage::LineFormat(t) => {
                    CStage::LineFormat(Template::parse(t).map_err(template_err)?)
                }
                Stage::LabelFormat(items) => {
                    let mut seen: Vec<&str> = Vec::new();
                    let mut c = Vec::new();
                    for it in items {
                        let dst = match it {
                            LabelFmt::Rename { dst, .. } | LabelFmt::Template { dst, .. } => dst,
                        };
                        if seen.contains(&dst.as_str()) {
                            return Err(Error::BadQuery(format!(
                                "multiple label name '{dst}' not allowed in a single format operation"
                            )));
                        }
                        seen.push(dst);
                        c.push(match it {
                            LabelFmt::Rename { dst, src } => CLabelFmt::Rename {
                                dst: dst.clone(),
                                src: src.clone(),
                            },
                            LabelFmt::Template { dst, template } => CLabelFmt::Template {
                                dst: dst.clone(),
                                t: Template::parse(template).map_err(template_err)?,
                            },
                        });
                    }
                    CStage::LabelFormat(c)
                }
                Stage::Distinct(names) => {
                    distinct.push(DistinctFilter {
                        names: names.clone(),
                        seen: Mutex::new(HashSet::new()),
                    });
                    continue;
                }
                Stage::Keep(i) => CStage::Keep(i.clone()),
                Stage::Drop(i) => CStage::Drop(i.clone()),
            };
            if !matches!(c, CStage::Filter(_)) {
                leading = false;
            }
            out.push(c);
        }
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        Ok(Pipeline {
            stages: out,
            distinct,
            hints,
            now_ns,
        })
    }

    /// Whether an entry with these final labels passes every `| distinct` (each one
    /// remembers what it passed).
    pub fn distinct_keeps(&self, labels: &LabelPairs) -> bool {
        self.distinct.iter().all(|d| d.first_time(labels))
    }

    /// Whether the pipeline has a `| distinct` (log queries only).
    pub fn has_distinct(&self) -> bool {
        !self.distinct.is_empty()
    }

    /// The labels the pipeline's label filters read, or `None` when a stage may read or
    /// rewrite any label (formatters, keep, drop): then parsers must extract everything.
    pub fn label_names_used(&self) -> Option<Vec<String>> {
        let mut out = Vec::new();
        for st in &self.stages {
            match st {
                CStage::LineFormat(_)
                | CStage::LabelFormat(_)
                | CStage::Keep(_)
                | CStage::Drop(_) => return None,
                CStage::LabelFilter(f) => f.names(&mut out),
                _ => {}
            }
        }
        for d in &self.distinct {
            out.extend(d.names.iter().cloned());
        }
        Some(out)
    }

    /// Line-filter substrings for the storage (advisory).
    pub fn hints(&self) -> &[String] {
        &self.hints
    }

    /// Does the pipeline change nothing (no stages)?
    pub fn is_noop(&self) -> bool {
        self.stages.is_empty()
    }

    /// Runs the pipeline on one line. `lb` must have been [`LabelsBuilder::reset`] for this
    /// line. Returns the (possibly rewritten) line, or `None` when a stage drops it.
    pub fn process<'a>(
        &self,
        ts: i64,
        line: &'a str,
        lb: &mut LabelsBuilder,
        buf: &'a mut String,
    ) -> Option<&'a str> {
        let mut in_buf = false;
        let mut tmp = String::new();
        for st in &self.stages {
            let cur: &str = if in_buf { buf.as_str() } else { line };
            match st {
                CStage::Filter(f) => {
                    if !f.keep(cur) {
                        return None;
                    }
                }
                CStage::Decolorize => {
                    tmp.clear();
                    decolorize(cur, &mut tmp);
                    std::mem::swap(buf, &mut tmp);
                    in_buf = true;
                }
                CStage::Json(params) => parse_json(cur, params.as_deref(), lb),
                CStage::Logfmt {
                    strict,
                    keep_empty,
                    params,
                } => {
                    let mut seen_err = None;
                    let r = logfmt_scan(cur, |k, v| {
                        if v.is_empty() && !keep_empty {
                            return;
                        }
                        match params {
                            None if model::is_valid_label_name(k) => lb.set_parsed(k, &v),
                            None => {
                                let mut key = String::with_capacity(k.len() + 1);
                                sanitize_key(k, &mut key);
                                lb.set_parsed(&key, &v);
                            }
                            Some(ps) => {
                                for (name, src) in ps {
                                    if src == k {
                                        lb.set_parsed(name, &v);
                                    }
                                }
                            }
                        }
                    });
                    if let Err(e) = r {
                        seen_err = Some(e);
                    }
                    if let (Some(e), true) = (seen_err, *strict) {
                        lb.set_err(ERR_LOGFMT, &e);
                    }
                }
                CStage::Regexp(re) => {
                    if let Some(c) = re.captures(cur) {
                        for name in re.capture_names().flatten() {
                            if let Some(m) = c.name(name) {
                                lb.set_parsed(name, m.as_str());
                            }
                        }
                    }
                }
                CStage::Pattern(p) => {
                    p.run(cur, |n, v| lb.set_parsed(n, v));
                }
                CStage::Unpack => match serde_json::from_str::<serde_json::Value>(cur) {
                    Ok(serde_json::Value::Object(m)) => {
                        let mut entry = None;
                        for (k, v) in &m {
                            if let serde_json::Value::String(s) = v {
                                if k == "_entry" {
                                    entry = Some(s.clone());
                                } else {
                                    lb.set_parsed(k, s);
                                }
                            }
                        }
                        if let Some(e) = entry {
                            *buf = e;
                            in_buf = true;
                        }
                    }
                    Ok(_) => lb.set_err(
                        ERR_JSON,
                        "Value looks like object, but can't find closing '}' symbol",
                    ),
                    Err(e) => lb.set_err(ERR_JSON, &e.to_string()),
                },
                CStage::LabelFilter(f) => {
                    if !f.process(lb) {
                        return None;
                    }
                }
                CStage::LineFormat(t) => {
                    tmp.clear();
                    let res = {
                        let lbr: &LabelsBuilder = lb;
                        let get = |n: &str| lbr.get(n).map(str::to_string);
                        let each = |f: &mut dyn FnMut(&str, &str)| lbr.for_each(f);
                        t.render(
                            &Data {
                                labels: &get,
                                each_label: &each,
                                line: cur,
                                ts_ns: ts,
                                now_ns: self.now_ns,
                            },
                            &mut tmp,
                        )
                    };
                    match res {
                        Ok(()) => {
                            std::mem::swap(buf, &mut tmp);
                            in_buf = true;
                        }
                        Err(e) => lb.set_err(ERR_TEMPLATE, &e),
                    }
                }
                CStage::LabelFormat(items) => {
                    let mut results: Vec<(String, Option<String>)> =
                        Vec::with_capacity(items.len());
                    for it in items {
                        match it {
                            CLabelFmt::Rename { dst, src } => {
                                results.push((dst.clone(), lb.get(src).map(str::to_string)));
                            }
                            CLabelFmt::Template { dst, t } => {
                                let mut out = String::new();
                                let res = {
                                    let lbr: &LabelsBuilder = lb;
                                    let get = |n: &str| lbr.get(n).map(str::to_string);
                                    let each = |f: &mut dyn FnMut(&str, &str)| lbr.for_each(f);
                                    t.render(
                                        &Data {
                                            labels: &get,
                                            each_label: &each,
                                            line: cur,
                                            ts_ns: ts,
                                            now_ns: self.now_ns,
                                        },
                                        &mut out,
                                    )
                                };
                                match res {
                                    Ok(()) => results.push((dst.clone(), Some(out))),
                                    Err(e) => {
                                        lb.set_err(ERR_TEMPLATE, &e);
                                        results.push((dst.clone(), None));
                                    }
                                }
                            }
                        }
                    }
                    for (it, (dst, v)) in items.iter().zip(results) {
                        if let CLabelFmt::Rename { src, .. } = it
                            && v.is_some()
                            && src != &dst
                        {
                            lb.del(src);
                        }
                        if let Some(v) = v {
                            lb.set(&dst, &v);
                        }
                    }
                }
                CStage::Keep(items) => {
                    let mut drop = Vec::new();
                    lb.for_each(|k, v| {
                        if k == ERROR_LABEL || k == ERROR_DETAILS_LABEL {
                            return;
                        }
                        let keep = items.iter().any(|i| match i {
                            NameOrMatcher::Name(n) => n == k,
                            NameOrMatcher::Matcher(m) => m.name == k && m.matches(v),
                        });
                        if !keep {
                            drop.push(k.to_string());
                        }
                    });
                    for d in drop {
                        lb.del(&d);
                    }
                }
                CStage::Drop(items) => {
                    for i in items {
                        match i {
                            NameOrMatcher::Name(n) => lb.del(n),
                            NameOrMatcher::Matcher(m) => {
                                if let Some(v) = lb.get(&m.name)
                                    && m.matches(v)
                                {
                                    lb.del(&m.name.clone());
                                }
                            }
                        }
                    }
                }
            }
        }
        Some(if in_buf { buf.as_str() } else { line })
    }
}

/// A borrowing JSON scanner that flattens objects into labels (`a_b` for `{"a":{"b":…}}`),
/// skipping arrays and nulls; the first value of a repeated key wins.
struct JsonScan<'a> {
    b: &'a [u8],
    s: &'a str,
    i: usize,
}

impl<'a> JsonScan<'a> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }
    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at offset {}", self.i))
    }
    fn string(&mut self) -> Result<std::borrow::Cow<'a, str>, String> {
        // at '"'
        self.i += 1;
        let st = self.i;
        let mut escaped = false;
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'"' => {
                    let raw = &self.s[st..self.i];
                    self.i += 1;
                    return Ok(if escaped {
                        std::borrow::Cow::Owned(json_unescape(raw)?)
                    } else {
                        std::borrow::Cow::Borrowed(raw)
                    });
                }
                b'\\' => {
                    escaped = true;
                    self.i += 2;
                }
                _ => self.i += 1,
            }
        }
        self.err("Value is not a string: unterminated string")
    }
    fn scalar_end(&mut self) -> &'a str {
        let st = self.i;
        while self.i < self.b.len()
            && !matches!(
                self.b[self.i],
                b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'
            )
        {
            self.i += 1;
        }
        &self.s[st..self.i]
    }
    fn skip_value(&mut self, depth: usize) -> Result<(), String> {
        if depth > 64 {
            return self.err("too deeply nested");
        }
        self.ws();
        match self.b.get(self.i) {
            Some(b'"') => self.string().map(|_| ()),
            Some(b'{') | Some(b'[') => {
                let close = if self.b[self.i] == b'{' { b'}' } else { b']' };
                let obj = close == b'}';
                self.i += 1;
                self.ws();
                if self.b.get(self.i) == Some(&close) {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    if obj {
                        if self.b.get(self.i) != Some(&b'"') {
                            return self.err("Key path not found");
                        }
                        self.string()?;
                        self.ws();
                        if self.b.get(self.i) != Some(&b':') {
                            return self.err("Malformed value");
                        }
                        self.i += 1;
                    }
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(c) if *c == close => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => {
                            return self
                                .err("Value looks like object, but can't find closing '}' symbol");
                        }
                    }
                }
            }
            Some(_) => {
                let v = self.scalar_end();
                if v.is_empty()
                    || !(v == "true" || v == "false" || v == "null" || v.parse::<f64>().is_ok())
                {
                    return self.err("Unknown value type");
                }
                Ok(())
            }
            None => self.err("Malformed JSON error"),
        }
    }
    fn object(
        &mut self,
        prefix: &mut String,
        lb: &mut LabelsBuilder,
        depth: usize,
    ) -> Result<(), String> {
        if depth > 64 {
            return self.err("too deeply nested");
        }
        // at '{'
        self.i += 1;
        self.ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            if self.b.get(self.i) != Some(&b'"') {
                return self.err("Value looks like object, but can't find closing '}' symbol");
            }
            let key = self.string()?;
            self.ws();
            if self.b.get(self.i) != Some(&b':') {
                return self.err("Malformed value");
            }
            self.i += 1;
            self.ws();
            let len = prefix.len();
            if !prefix.is_empty() {
                prefix.push('_');
            }
            sanitize_key(&key, prefix);
            match self.b.get(self.i) {
                Some(b'{') => self.object(prefix, lb, depth + 1)?,
                Some(b'[') => self.skip_value(depth + 1)?,
                Some(b'"') => {
                    let v = self.string()?;
                    lb.set_parsed(prefix, &v);
                }
                Some(_) => {
                    let v = self.scalar_end();
                    match v {
                        "null" => {}
                        "true" | "false" => lb.set_parsed(prefix, v),
                        _ if !v.is_empty() && v.parse::<f64>().is_ok() => lb.set_parsed(prefix, v),
                        _ => {
                            prefix.truncate(len);
                            return self.err("Unknown value type");
                        }
                    }
                }
                None => return self.err("Malformed JSON error"),
            }
            prefix.truncate(len);
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return self.err("Value looks like object, but can't find closing '}' symbol"),
            }
        }
    }
}

fn json_unescape(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut it = raw.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\x08'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let h: String = it.by_ref().take(4).collect();
                let mut cp =
                    u32::from_str_radix(&h, 16).map_err(|_| "invalid escape".to_string())?;
                if (0xD800..0xDC00).contains(&cp) {
                    let rest: String = it.clone().take(6).collect();
                    if let Some(lo) = rest
                        .strip_prefix("\\u")
                        .and_then(|x| u32::from_str_radix(x, 16).ok())
                        && (0xDC00..0xE000).contains(&lo)
                    {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        for _ in 0..6 {
                            it.next();
                        }
                    }
                }
                out.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
            }
            Some(o) => out.push(o),
            None => return Err("invalid escape".into()),
        }
    }
    Ok(out)
}

fn parse_json(line: &str, params: Option<&[(String, Vec<PathSeg>)]>, lb: &mut LabelsBuilder) {
    if params.is_none() {
        let mut sc = JsonScan {
            b: line.as_bytes(),
            s: line,
            i: 0,
        };
        sc.ws();
        if sc.b.get(sc.i) != Some(&b'{') {
            lb.set_err(
                ERR_JSON,
                "Value looks like object, but can't find closing '}' symbol",
            );
            return;
        }
        let mut prefix = String::new();
        if let Err(e) = sc.object(&mut prefix, lb, 0) {
            lb.set_err(ERR_JSON, &e);
        }
        return;
    }
    let v: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            lb.set_err(ERR_JSON, &e.to_string());
            return;
        }
    };
    if !v.is_object() {
        lb.set_err(
            ERR_JSON,
            "Value looks like object, but can't find closing '}' symbol",
        );
        return;
    }
    match params {
        None => json_flatten(&mut String::new(), &v, lb),
        Some(ps) => {
            for (name, path) in ps {
                let mut cur = Some(&v);
                for seg in path {
                    cur = match (cur, seg) {
                        (Some(serde_json::Value::Object(m)), PathSeg::Key(k)) => m.get(k),
                        (Some(serde_json::Value::Array(a)), PathSeg::Index(i)) => a.get(*i),
                        _ => None,
                    };
                }
                let val = match cur {
                    None | Some(serde_json::Value::Null) => String::new(),
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                };
                lb.set_parsed(name, &val);
            }
        }
    }
}

/// Removes ANSI escape sequences (`ESC [ … letter` and other `ESC x` pairs).
fn decolorize(s: &str, out: &mut String) {
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match it.peek() {
            Some('[') => {
                it.next();
                for d in it.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
            Some(_) => {
                it.next();
            }
            None => {}
        }
    }
}

/// Checks every pipeline of a parsed query (the errors Loki raises when it builds them).
pub fn validate(e: &Expr) -> Result<(), Error> {
    match e {
        Expr::Log(l) => Pipeline::compile(&l.stages).map(|_| ()),
        Expr::Sample(s) => validate_sample(s),
    }
}

fn validate_sample(s: &SampleExpr) -> Result<(), Error> {
    match s {
        SampleExpr::Range { range, .. } => {
            if Pipeline::compile(&range.log.stages)?.has_distinct() {
                return Err(Error::BadQuery(
                    "distinct is only supported in log queries, not in metric queries".into(),
                ));
            }
            if let Some(u) = &range.unwrap {
                for f in &u.post_filters {
                    CLabelFilter::compile(f)?;
                }
            }
            Ok(())
        }
        SampleExpr::Aggregate { expr, .. } | SampleExpr::LabelReplace { expr, .. } => {
            validate_sample(expr)
        }
        SampleExpr::Binary { lhs, rhs, .. } => {
            validate_sample(lhs)?;
            validate_sample(rhs)
        }
        SampleExpr::Literal(_) | SampleExpr::Vector(_) => Ok(()),
    }
}

/// The post-unwrap label filters, compiled.
pub struct PostFilters(Vec<CLabelFilter>);

impl PostFilters {
    pub fn compile(f: &[LabelFilter]) -> Result<Self, Error> {
        Ok(PostFilters(
            f.iter()
                .map(CLabelFilter::compile)
                .collect::<Result<_, _>>()?,
        ))
    }
    pub fn process(&self, lb: &mut LabelsBuilder) -> bool {
        self.0.iter().all(|f| f.process(lb))
    }

    /// The labels these filters read.
    pub fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for f in &self.0 {
            f.names(&mut out);
        }
        out
    }
}

/// A label filter that converts the label's value first (number, duration in seconds,
/// bytes): an absent (or unreadable) label fails the filter; a value that does not convert
/// keeps the line and sets `__error__` (as Loki does).
fn converting_filter<T, E: AsRef<str>>(
    lb: &mut LabelsBuilder,
    name: &str,
    keep: impl Fn(T) -> bool,
    convert: impl Fn(&str) -> Result<T, E>,
) -> bool {
    let Some(v) = readable(lb, name) else {
        return false;
    };
    match convert(v) {
        Ok(x) => keep(x),
        Err(e) => {
            lb.set_err(ERR_LABEL_FILTER, e.as_ref());
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stages: &str, line: &str, stream: &[(&str, &str)]) -> Option<(String, LabelPairs)> {
        let q = format!("{{x=\"y\"}} {stages}");
        let Expr::Log(l) = crate::parse(&q).unwrap() else {
            panic!()
        };
        let p = Pipeline::compile(&l.stages).unwrap();
        let mut s: LabelPairs = stream
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        s.sort();
        let mut lb = LabelsBuilder::new(Arc::new(s));
        lb.reset(&[]);
        let mut buf = String::new();
        let out = p.process(0, line, &mut lb, &mut buf)?;
        Some((out.to_string(), lb.labels()))
    }

    fn l(p: &[(&str, &str)]) -> LabelPairs {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn filters() {
        assert!(run(r#"|= "err""#, "an error", &[]).is_some());
        assert!(run(r#"|= "err" != "an""#, "an error", &[]).is_none());
        assert!(run(r#"|~ "(?i)ERR""#, "an error", &[]).is_some());
        assert!(run(r#"|= "x" or "error""#, "an error", &[]).is_some());
        assert!(run(r#"!= "x" or "error""#, "an error", &[]).is_none());
        assert!(run(r#"|> "<_> error""#, "an error", &[]).is_some());
        assert!(run(r#"!> "<_> error""#, "an error", &[]).is_none());
        assert!(run(r#"|= ip("10.0.0.0/8")"#, "from 10.1.2.3:80", &[]).is_some());
        assert!(run(r#"|= ip("10.0.0.0/8")"#, "from 11.1.2.3", &[]).is_none());
    }

    #[test]
    fn parsers_and_labels() {
        let (_, labels) = run(r#"| logfmt"#, r#"a=1 b="x y" a=2 c="#, &[("a", "s")]).unwrap();
        assert_eq!(labels, l(&[("a", "s"), ("a_extracted", "1"), ("b", "x y")]));
        let (_, labels) = run(r#"| json"#, r#"{"a":{"b":1},"c":"d","e":[1]}"#, &[]).unwrap();
        assert_eq!(labels, l(&[("a_b", "1"), ("c", "d")]));
        let (_, labels) = run(r#"| json"#, r#"{"a"#, &[]).unwrap();
        assert_eq!(labels[0], (ERROR_LABEL.to_string(), ERR_JSON.to_string()));
        let (_, labels) = run(r#"| json v="a.b[1]""#, r#"{"a":{"b":[1,{"c":2}]}}"#, &[]).unwrap();
        assert_eq!(labels, l(&[("v", r#"{"c":2}"#)]));
        let (_, labels) = run(r#"| pattern "<ip> - <_> <code>""#, "1.2.3.4 - x 200", &[]).unwrap();
        assert_eq!(labels, l(&[("code", "200"), ("ip", "1.2.3.4")]));
        let (_, labels) = run(r#"| regexp "(?P<m>\\w+) (?P<p>\\S+)""#, "GET /a", &[]).unwrap();
        assert_eq!(labels, l(&[("m", "GET"), ("p", "/a")]));
        let (line, labels) = run(r#"| unpack"#, r#"{"_entry":"msg","k":"v"}"#, &[]).unwrap();
        assert_eq!((line.as_str(), labels), ("msg", l(&[("k", "v")])));
    }

    #[test]
    fn label_filters_formatters_keep_drop() {
        assert!(run(r#"| logfmt | d > 1s and n >= 5"#, "d=2s n=5", &[]).is_some());
        assert!(run(r#"| logfmt | d > 1s and n >= 5"#, "d=2s n=4", &[]).is_none());
        assert!(run(r#"| logfmt | s < 2KB or n=~"a.*""#, "s=1.5kB n=b", &[]).is_some());
        let (_, labels) = run(r#"| logfmt | d > 1s"#, "d=5", &[]).unwrap();
        assert!(labels.contains(&(ERROR_LABEL.into(), ERR_LABEL_FILTER.into())));
        let (line, _) = run(
            r#"| logfmt | line_format "{{.a | ToUpper}}-{{__line__}}""#,
            "a=b",
            &[],
        )
        .unwrap();
        assert_eq!(line, "B-a=b");
        let (_, labels) = run(r#"| logfmt | label_format c=a, d="{{.a}}!""#, "a=b", &[]).unwrap();
        assert_eq!(labels, l(&[("c", "b"), ("d", "b!")]));
        let (_, labels) = run(r#"| logfmt | keep a, b="2""#, "a=1 b=1 c=1", &[("s", "t")]).unwrap();
        assert_eq!(labels, l(&[("a", "1")]));
        let (_, labels) = run(r#"| logfmt | drop a, b="2""#, "a=1 b=2 c=1", &[]).unwrap();
        assert_eq!(labels, l(&[("c", "1")]));
        let (line, _) = run("| decolorize", "\x1b[31mred\x1b[0m", &[]).unwrap();
        assert_eq!(line, "red");
    }
}
