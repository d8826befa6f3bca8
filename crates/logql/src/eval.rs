//! The evaluator: log queries (streams, limit and direction across streams) and metric
//! queries (instant and range), over any [`LogStorage`].
//!
//! A range aggregation reads its selector **once** for the whole query range, runs each line
//! through the compiled pipeline, and keeps one `(ts, value)` per kept line in the series its
//! labels name; each step then aggregates the window `(t - offset - range, t - offset]`.
//! Everything above range aggregations (vector aggregations, binary operators,
//! `label_replace`) works step by step on instant vectors.

use crate::Error;
use crate::ast::*;
use crate::pipeline::{ERROR_LABEL, LabelPairs, LabelsBuilder, Pipeline, PostFilters};
use crate::storage::{Direction, LogStorage, SelectRequest};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtOrd};
use std::time::Instant;

/// Most steps of a range query (Loki's and Prometheus' 11,000 points per series).
pub const MAX_POINTS: i64 = 11_000;

/// Limits that hold for every query of an engine.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Most series a metric query may produce at any level (Loki's `max_query_series`).
    pub max_series: usize,
    /// Most entries a log query may return (Loki's `max_entries_limit_per_query`).
    pub max_entries: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_series: 500,
            max_entries: 5000,
        }
    }
}

/// One query's parameters.
#[derive(Clone, Debug, Default)]
pub struct QueryParams {
    pub start_ns: i64,
    pub end_ns: i64,
    /// 0 for an instant query (evaluated at `end_ns`).
    pub step_ns: i64,
    /// Log queries: most entries returned (0 = `max_entries`).
    pub limit: usize,
    pub direction: Direction,
    pub deadline: Option<Instant>,
    pub cancel: Option<Arc<AtomicBool>>,
}

impl QueryParams {
    pub fn instant(t_ns: i64) -> Self {
        QueryParams {
            start_ns: t_ns,
            end_ns: t_ns,
            ..Default::default()
        }
    }
    pub fn range(start_ns: i64, end_ns: i64, step_ns: i64) -> Self {
        QueryParams {
            start_ns,
            end_ns,
            step_ns,
            ..Default::default()
        }
    }
}

/// One log line of a streams result.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    pub ts_ns: i64,
    pub line: String,
    /// The entry's structured metadata as stored (also part of the stream's labels, as Loki
    /// returns them by default; kept apart for the `categorize-labels` encoding).
    pub metadata: Vec<(String, String)>,
    /// The labels of the stream the entry was read from, before the pipeline (for the
    /// `categorize-labels` encoding, which groups entries by them).
    pub stream: Arc<LabelPairs>,
}

/// The lines of one label set.
#[derive(Clone, Debug, PartialEq)]
pub struct Stream {
    pub labels: LabelPairs,
    pub entries: Vec<LogEntry>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: LabelPairs,
    pub value: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: LabelPairs,
    /// `(ts_ns, value)`, ascending.
    pub points: Vec<(i64, f64)>,
}

/// A query's result, shaped like Loki's `resultType`s.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryResult {
    Streams(Vec<Stream>),
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
    Scalar(f64),
}

/// Aligns a range query's start and end down to a multiple of `step` (what Loki's query
/// frontend does with `align_queries_with_step`), so that consecutive dashboard refreshes hit
/// the same step timestamps. The engine itself evaluates exactly the steps it is given.
pub fn align_to_step(start_ns: i64, end_ns: i64, step_ns: i64) -> (i64, i64) {
    if step_ns <= 0 {
        return (start_ns, end_ns);
    }
    (
        start_ns.div_euclid(step_ns) * step_ns,
        end_ns.div_euclid(step_ns) * step_ns,
    )
}

/// Formats labels like Prometheus' `labels.String()` (`{a="b", c="d"}`, values Go-quoted).
pub fn format_labels(l: &[(String, String)]) -> String {
    let parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}={}", crate::duration::go_quote(v)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// Evaluates LogQL queries.
#[derive(Clone, Debug, Default)]
pub struct Engine {
    pub opts: EngineOptions,
}

struct Guard<'a> {
    deadline: Option<Instant>,
    cancel: Option<&'a AtomicBool>,
    n: u32,
}

impl Guard<'_> {
    fn tick(&mut self) -> Result<(), Error> {
        self.n = self.n.wrapping_add(1);
        if self.n.is_multiple_of(1024) {
            self.check()?;
        }
        Ok(())
    }
    fn check(&self) -> Result<(), Error> {
        if self.cancel.is_some_and(|c| c.load(AtOrd::Relaxed)) {
            return Err(Error::Canceled);
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::Timeout);
        }
        Ok(())
    }
}

type Vector = Vec<(Arc<LabelPairs>, f64)>;

enum Val {
    Scalar(f64),
    /// One vector per step.
    Vectors(Vec<Vector>),
}

struct Ctx<'a> {
    store: &'a dyn LogStorage,
    steps: Vec<i64>,
    guard: Guard<'a>,
    max_series: usize,
    instant: bool,
}

impl Engine {
    pub fn new(opts: EngineOptions) -> Self {
        Engine { opts }
    }

    /// Parses and evaluates `query`.
    pub fn query(
        &self,
        store: &dyn LogStorage,
        query: &str,
        p: &QueryParams,
    ) -> Result<QueryResult, Error> {
        let e = crate::parse(query)?;
        self.eval(store, &e, p)
    }

    pub fn eval(
        &self,
        store: &dyn LogStorage,
        e: &Expr,
        p: &QueryParams,
    ) -> Result<QueryResult, Error> {
        let guard = Guard {
            deadline: p.deadline,
            cancel: p.cancel.as_deref(),
            n: 0,
        };
        guard.check()?;
        match e {
            Expr::Log(l) => self.eval_log(store, l, p, guard),
            Expr::Sample(s) => {
                let instant = p.step_ns <= 0 || p.start_ns == p.end_ns;
                let steps: Vec<i64> = if instant {
                    vec![p.end_ns]
                } else {
                    if p.end_ns < p.start_ns {
                        return Err(Error::BadQuery(
                            "invalid query, end must be after start".into(),
                        ));
                    }
                    let n = (p.end_ns - p.start_ns) / p.step_ns;
                    if n >= MAX_POINTS {
                        return Err(Error::BadQuery(format!(
                            "exceeded maximum resolution of {MAX_POINTS} points per timeseries. Try increasing the value of the step parameter"
                        )));
                    }
                    (0..=n)
                        .map(|i| p.start_ns.saturating_add(i * p.step_ns))
                        .collect()
                };
                let mut ctx = Ctx {
                    store,
                    steps,
                    guard,
                    max_series: self.opts.max_series,
                    instant,
                };
                let v = eval_sample(&mut ctx, s)?;
                Ok(match (v, instant) {
                    (Val::Scalar(x), true) => QueryResult::Scalar(x),
                    (Val::Scalar(x), false) => QueryResult::Matrix(vec![Series {
                        labels: vec![],
                        points: ctx.steps.iter().map(|t| (*t, x)).collect(),
                    }]),
                    (Val::Vectors(mut vs), true) => QueryResult::Vector(
                        vs.pop()
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(l, v)| Sample {
                                labels: (*l).clone(),
                                value: v,
                            })
                            .collect(),
                    ),
                    (Val::Vectors(vs), false) => {
                        let mut idx: HashMap<Arc<LabelPairs>, usize> = HashMap::new();
                        let mut out: Vec<Series> = Vec::new();
                        for (t, vec) in ctx.steps.iter().zip(vs) {
                            for (l, v) in vec {
                                let i = *idx.entry(l.clone()).or_insert_with(|| {
                                    out.push(Series {
                                        labels: (*l).clone(),
                                        points: vec![],
                                    });
                                    out.len() - 1
                                });
                                out[i].points.push((*t, v));
                            }
                        }
                        out.sort_by(|a, b| a.labels.cmp(&b.labels));
                        QueryResult::Matrix(out)
                    }
                })
            }
        }
    }

    fn eval_log(
        &self,
        store: &dyn LogStorage,
        l: &LogExpr,
        p: &QueryParams,
        mut guard: Guard<'_>,
    ) -> Result<QueryResult, Error> {
        let pipeline = Pipeline::compile(&l.stages)?;
        let limit = if p.limit == 0 {
            self.opts.max_entries
        } else {
            p.limit
        };
        if limit > self.opts.max_entries {
            return Err(Error::Limit(format!(
                "max entries limit per query exceeded, limit > max_entries_limit ({limit} > {})",
                self.opts.max_entries
            )));
        }
        let (start, end) = if p.start_ns == p.end_ns {
            (p.start_ns, p.end_ns.saturating_add(1))
        } else {
            (p.start_ns, p.end_ns)
        };
        let req = SelectRequest {
            matchers: &l.matchers,
            start_ns: start,
            end_ns: end,
            direction: p.direction,
            line_hints: pipeline.hints(),
        };
        let mut cursors = store
            .select(&req)
            .map_err(|e| Error::Storage(e.to_string()))?;
        let streams: Vec<Arc<LabelPairs>> = cursors
            .iter()
            .map(|c| Arc::new(pairs_of(c.labels())))
            .collect();
        let mut lb = LabelsBuilder::default();
        let mut buf = String::new();
        // Per cursor, the next entry the pipeline keeps.
        let mut next_kept = |i: usize,
                             cursors: &mut Vec<Box<dyn crate::storage::StreamCursor + '_>>,
                             lb: &mut LabelsBuilder,
                             guard: &mut Guard<'_>|
         -> Result<Option<Head>, Error> {
            lb.set_stream(streams[i].clone());
            while let Some(e) = cursors[i]
                .next_entry()
                .map_err(|e| Error::Storage(e.to_string()))?
            {
                guard.tick()?;
                lb.reset(e.metadata);
                if let Some(line) = pipeline.process(e.ts_ns, e.line, lb, &mut buf) {
                    return Ok(Some(Head {
                        stream: streams[i].clone(),
                        ts: e.ts_ns,
                        backward: p.direction == Direction::Backward,
                        cursor: i,
                        line: line.to_string(),
                        labels: lb.labels(),
                        metadata: e.metadata.to_vec(),
                    }));
                }
            }
            Ok(None)
        };
        let mut heap = BinaryHeap::new();
        for i in 0..cursors.len() {
            if let Some(h) = next_kept(i, &mut cursors, &mut lb, &mut guard)? {
                heap.push(h);
            }
        }
        let mut out: Vec<Stream> = Vec::new();
        let mut idx: HashMap<LabelPairs, usize> = HashMap::new();
        let mut n = 0;
        while let Some(h) = heap.pop() {
            if n >= limit {
                break;
            }
            let c = h.cursor;
            if !pipeline.distinct_keeps(&h.labels) {
                if let Some(h) = next_kept(c, &mut cursors, &mut lb, &mut guard)? {
                    heap.push(h);
                }
                continue;
            }
            n += 1;
            let si = match idx.get(&h.labels) {
                Some(i) => *i,
                None => {
                    out.push(Stream {
                        labels: h.labels.clone(),
                        entries: vec![],
                    });
                    idx.insert(h.labels.clone(), out.len() - 1);
                    out.len() - 1
                }
            };
            out[si].entries.push(LogEntry {
                ts_ns: h.ts,
                line: h.line,
                metadata: h.metadata,
                stream: h.stream,
            });
            if let Some(h) = next_kept(c, &mut cursors, &mut lb, &mut guard)? {
                heap.push(h);
            }
        }
        Ok(QueryResult::Streams(out))
    }
}

struct Head {
    stream: Arc<LabelPairs>,
    ts: i64,
    backward: bool,
    cursor: usize,
    line: String,
    labels: LabelPairs,
    metadata: Vec<(String, String)>,
}

impl PartialEq for Head {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Head {
    /// The heap pops the greatest: the oldest (forward) or newest (backward) entry.
    fn cmp(&self, o: &Self) -> Ordering {
        let by_ts = if self.backward {
            self.ts.cmp(&o.ts)
        } else {
            o.ts.cmp(&self.ts)
        };
        by_ts.then_with(|| o.cursor.cmp(&self.cursor))
    }
}

fn pairs_of(l: &model::Labels) -> LabelPairs {
    l.iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// metric queries

fn eval_sample(ctx: &mut Ctx<'_>, e: &SampleExpr) -> Result<Val, Error> {
    ctx.guard.check()?;
    match e {
        SampleExpr::Literal(v) => Ok(Val::Scalar(*v)),
        SampleExpr::Vector(v) => Ok(Val::Vectors(
            ctx.steps
                .iter()
                .map(|_| vec![(Arc::new(Vec::new()), *v)])
                .collect(),
        )),
        SampleExpr::Range {
            op,
            param,
            range,
            grouping,
        } => eval_range(ctx, *op, *param, range, grouping.as_ref(), None).map(Val::Vectors),
        SampleExpr::Aggregate {
            op,
            param,
            grouping,
            expr,
        } => {
            if *op == AggOp::ApproxTopk && !ctx.instant {
                return Err(Error::BadQuery(
                    "approx_topk is only supported on instant queries".into(),
                ));
            }
            let by_nothing = Grouping {
                without: false,
                labels: vec![],
            };
            let inner = match &**expr {
                SampleExpr::Range {
                    op: rop,
                    param: rp,
                    range,
                    grouping: None,
                } if *op == AggOp::Sum
                    && matches!(
                        rop,
                        RangeOp::CountOverTime
                            | RangeOp::Rate
                            | RangeOp::BytesOverTime
                            | RangeOp::BytesRate
                            | RangeOp::SumOverTime
                    ) =>
                {
                    let g = grouping.as_ref().unwrap_or(&by_nothing);
                    Val::Vectors(eval_range(ctx, *rop, *rp, range, None, Some(g))?)
                }
                _ => eval_sample(ctx, expr)?,
            };
            let Val::Vectors(vs) = inner else {
                return Err(Error::BadQuery(format!(
                    "unexpected literal for {} aggregation",
                    op.as_str()
                )));
            };
            let out = vs
                .into_iter()
                .map(|v| aggregate(*op, *param, grouping.as_ref(), v))
                .collect::<Vec<_>>();
            check_series(ctx, &out)?;
            Ok(Val::Vectors(out))
        }
        SampleExpr::LabelReplace {
            expr,
            dst,
            replacement,
            src,
            regex,
        } => {
            let re = regex::Regex::new(&format!("^(?s:{regex})$")).map_err(|e| {
                Error::BadQuery(format!(
                    "invalid regular expression in label_replace(): {e}"
                ))
            })?;
            let Val::Vectors(vs) = eval_sample(ctx, expr)? else {
                return Err(Error::BadQuery("label_replace needs a vector".into()));
            };
            let mut cache: HashMap<Arc<LabelPairs>, Arc<LabelPairs>> = HashMap::new();
            let out = vs
                .into_iter()
                .map(|v| {
                    v.into_iter()
                        .map(|(l, x)| {
                            let nl = cache
                                .entry(l.clone())
                                .or_insert_with(|| {
                                    Arc::new(label_replace(&l, &re, dst, replacement, src))
                                })
                                .clone();
                            (nl, x)
                        })
                        .collect()
                })
                .collect::<Vec<Vector>>();
            for v in &out {
                let mut seen = std::collections::HashSet::new();
                for (l, _) in v {
                    if !seen.insert(l.clone()) {
                        return Err(Error::Execution(
                            "vector cannot contain metrics with the same labelset".into(),
                        ));
                    }
                }
            }
            Ok(Val::Vectors(out))
        }
        SampleExpr::Binary {
            op,
            lhs,
            rhs,
            return_bool,
            matching,
        } => {
            let l = eval_sample(ctx, lhs)?;
            let r = eval_sample(ctx, rhs)?;
            binary(ctx, *op, l, r, *return_bool, matching.as_ref())
        }
    }
}

fn check_series(ctx: &Ctx<'_>, vs: &[Vector]) -> Result<(), Error> {
    if vs.iter().any(|v| v.len() > ctx.max_series) {
        return Err(Error::Limit(format!(
            "maximum of series ({}) reached for a single query",
            ctx.max_series
        )));
    }
    Ok(())
}

fn label_replace(
    l: &LabelPairs,
    re: &regex::Regex,
    dst: &str,
    repl: &str,
    src: &str,
) -> LabelPairs {
    let v = l
        .iter()
        .find(|(k, _)| k == src)
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let Some(c) = re.captures(v) else {
        return l.clone();
    };
    let mut out = String::new();
    c.expand(repl, &mut out);
    let mut nl: LabelPairs = l.iter().filter(|(k, _)| k != dst).cloned().collect();
    if !out.is_empty() {
        nl.push((dst.to_string(), out));
        nl.sort();
    }
    nl
}

/// The per-series samples of a range aggregation's selector.
struct RangeSeries {
    labels: Arc<LabelPairs>,
    /// Every sample, for the aggregations that need them all (quantile, rate_counter).
    samples: Vec<(i64, f64)>,
    /// Per time segment (see [`Segments`]), a mergeable summary; for all other aggregations.
    segs: Vec<(u32, Agg)>,
    segs_unsorted: bool,
}

/// The boundaries of every step's window, sorted: the time line cut into segments
/// `(b[j], b[j+1]]` such that each window is a run of whole segments. A series then keeps
/// one summary per non-empty segment instead of one entry per line, so memory is bounded by
/// series × steps, not by the number of lines read.
struct Segments {
    bounds: Vec<i64>,
}

impl Segments {
    fn new(windows: impl Iterator<Item = (i64, i64)>) -> Self {
        let mut bounds: Vec<i64> = windows.flat_map(|(a, b)| [a, b]).collect();
        bounds.sort_unstable();
        bounds.dedup();
        Segments { bounds }
    }
    /// The segment holding `ts`, if any window covers it.
    fn of(&self, ts: i64) -> Option<u32> {
        let j = self.bounds.partition_point(|b| *b < ts);
        (j >= 1 && j < self.bounds.len()).then(|| (j - 1) as u32)
    }
    /// Index of a window boundary.
    fn index(&self, b: i64) -> u32 {
        self.bounds.partition_point(|x| *x < b) as u32
    }
}

/// A mergeable summary of samples: count, compensated sum, min, max, first, last, and the
/// running mean and squared deviations (Chan et al.'s parallel variance).
#[derive(Clone, Copy, Debug)]
struct Agg {
    n: f64,
    sum: f64,
    comp: f64,
    min: f64,
    max: f64,
    first: (i64, f64),
    last: (i64, f64),
    mean: f64,
    m2: f64,
    has_inf: bool,
    non_finite: bool,
}

impl Agg {
    fn one(ts: i64, v: f64) -> Agg {
        Agg {
            n: 1.0,
            sum: v,
            comp: 0.0,
            min: v,
            max: v,
            first: (ts, v),
            last: (ts, v),
            mean: v,
            m2: 0.0,
            has_inf: v.is_infinite(),
            non_finite: !v.is_finite(),
        }
    }

    fn merge(&mut self, o: &Agg) {
        let t = self.sum + o.sum;
        if self.sum.abs() >= o.sum.abs() {
            self.comp += (self.sum - t) + o.sum;
        } else {
            self.comp += (o.sum - t) + self.sum;
        }
        self.sum = t;
        self.comp += o.comp;
        if o.min < self.min || self.min.is_nan() {
            self.min = o.min;
        }
        if o.max > self.max || self.max.is_nan() {
            self.max = o.max;
        }
        if o.first.0 < self.first.0 {
            self.first = o.first;
        }
        if o.last.0 >= self.last.0 {
            self.last = o.last;
        }
        let n = self.n + o.n;
        let delta = o.mean - self.mean;
        self.mean += delta * o.n / n;
        self.m2 += o.m2 + delta * delta * self.n * o.n / n;
        self.n = n;
        self.has_inf |= o.has_inf;
        self.non_finite |= o.non_finite;
    }

    fn total(&self) -> f64 {
        let s = self.sum + self.comp;
        if s.is_finite() { s } else { self.sum }
    }

    fn value(&self, op: RangeOp, range_s: f64) -> f64 {
        match op {
            RangeOp::CountOverTime => self.n,
            RangeOp::Rate | RangeOp::BytesRate => self.total() / range_s,
            RangeOp::BytesOverTime | RangeOp::SumOverTime => self.total(),
            RangeOp::AvgOverTime => {
                if self.has_inf {
                    self.sum / self.n
                } else {
                    self.mean
                }
            }
            RangeOp::MaxOverTime => self.max,
            RangeOp::MinOverTime => self.min,
            // one infinite or NaN sample makes the variance NaN, as Welford's update does
            RangeOp::StdvarOverTime if self.non_finite => f64::NAN,
            RangeOp::StddevOverTime if self.non_finite => f64::NAN,
            RangeOp::StdvarOverTime => self.m2 / self.n,
            RangeOp::StddevOverTime => (self.m2 / self.n).sqrt(),
            RangeOp::FirstOverTime => self.first.1,
            RangeOp::LastOverTime => self.last.1,
            RangeOp::AbsentOverTime => 1.0,
            RangeOp::QuantileOverTime | RangeOp::RateCounter => f64::NAN,
        }
    }
}

fn eval_range(
    ctx: &mut Ctx<'_>,
    op: RangeOp,
    param: Option<f64>,
    r: &LogRange,
    grouping: Option<&Grouping>,
    pushdown: Option<&Grouping>,
) -> Result<Vec<Vector>, Error> {
    let pipeline = Pipeline::compile(&r.log.stages)?;
    if pipeline.has_distinct() {
        return Err(Error::BadQuery(
            "distinct is only supported in log queries, not in metric queries".into(),
        ));
    }
    let post = match &r.unwrap {
        Some(u) => Some(PostFilters::compile(&u.post_filters)?),
        None => None,
    };
    let first = ctx.steps[0];
    let last = *ctx.steps.last().unwrap_or(&first);
    let req = SelectRequest {
        matchers: &r.log.matchers,
        start_ns: first
            .saturating_sub(r.offset_ns)
            .saturating_sub(r.range_ns)
            .saturating_add(1),
        end_ns: last.saturating_sub(r.offset_ns).saturating_add(1),
        direction: Direction::Forward,
        line_hints: pipeline.hints(),
    };
    let mut cursors = ctx
        .store
        .select(&req)
        .map_err(|e| Error::Storage(e.to_string()))?;
    let mut series: Vec<RangeSeries> = Vec::new();
    let mut by_hash: HashMap<u64, Vec<usize>> = HashMap::new();
    let whole = matches!(op, RangeOp::QuantileOverTime | RangeOp::RateCounter);
    let segments = Segments::new(ctx.steps.iter().map(|t| {
        let end = t.saturating_sub(r.offset_ns);
        (end.saturating_sub(r.range_ns), end)
    }));
    let mut lb = LabelsBuilder::default();
    let mut buf = String::new();
    // Series are keyed by the grouped labels for an unwrapped `… by (…)`, and for a range
    // aggregation whose sums the enclosing `sum by (…)` merges anyway (so
    // `sum by (status) (rate({…} | json [5m]))` keeps one series per status, not per line).
    let key_grouping = if r.unwrap.is_some() && grouping.is_some() {
        grouping
    } else {
        pushdown
    };
    // Label hints: when series keep only `by` labels, parsers need extract only those plus
    // what the label filters and unwrap read.
    if let Some(g) = key_grouping.filter(|g| !g.without)
        && let Some(mut names) = pipeline.label_names_used()
    {
        names.extend(g.labels.iter().cloned());
        if let Some(u) = &r.unwrap {
            names.push(u.label.clone());
        }
        if let Some(p) = &post {
            names.extend(p.names());
        }
        lb.set_wanted(Some(Arc::new(names)));
    }
    for c in cursors.iter_mut() {
        lb.set_stream(Arc::new(pairs_of(c.labels())));
        while let Some(e) = c.next_entry().map_err(|e| Error::Storage(e.to_string()))? {
            ctx.guard.tick()?;
            lb.reset(e.metadata);
            let Some(line) = pipeline.process(e.ts_ns, e.line, &mut lb, &mut buf) else {
                continue;
            };
            let value = match &r.unwrap {
                None => match op {
                    RangeOp::BytesOverTime | RangeOp::BytesRate => line.len() as f64,
                    _ => 1.0,
                },
                Some(u) => {
                    // a line without the unwrapped label has no value: skipped
                    let Some(raw) = lb.get(&u.label) else {
                        continue;
                    };
                    let conv = match u.conv {
                        UnwrapConv::None => crate::duration::parse_go_float(raw),
                        UnwrapConv::Duration => crate::duration::parse_duration(raw, false)
                            .map(|ns| ns as f64 / 1e9)
                            .map_err(|e| e.to_string()),
                        UnwrapConv::Bytes => {
                            crate::duration::parse_bytes_human(raw).map(|b| b as f64)
                        }
                    };
                    let v = match conv {
                        Ok(v) => v,
                        Err(msg) => {
                            lb.set_err(crate::pipeline::ERR_SAMPLE_EXTRACTION, &msg);
                            0.0
                        }
                    };
                    if let Some(p) = &post
                        && !p.process(&mut lb)
                    {
                        continue;
                    }
                    // the unwrapped label is the value now, not part of the series
                    lb.del(&u.label);
                    v
                }
            };
            // find or create the series
            let g = lb.effective_grouping(key_grouping);
            let h = lb.grouped_hash(g);
            let cands = by_hash.entry(h).or_default();
            let idx = match cands.iter().find(|i| lb.grouped_eq(g, &series[**i].labels)) {
                Some(i) => *i,
                None => {
                    let labels = if g.is_some() {
                        lb.grouped(g)
                    } else {
                        lb.labels()
                    };
                    series.push(RangeSeries {
                        labels: Arc::new(labels),
                        samples: vec![],
                        segs: vec![],
                        segs_unsorted: false,
                    });
                    cands.push(series.len() - 1);
                    series.len() - 1
                }
            };
            let s = &mut series[idx];
            if whole {
                s.samples.push((e.ts_ns, value));
            } else if let Some(seg) = segments.of(e.ts_ns) {
                match s.segs.last_mut() {
                    Some((last, agg)) if *last == seg => agg.merge(&Agg::one(e.ts_ns, value)),
                    last => {
                        if last.is_some_and(|(l, _)| *l > seg) {
                            s.segs_unsorted = true;
                        }
                        s.segs.push((seg, Agg::one(e.ts_ns, value)));
                    }
                }
            }
        }
    }
    for s in &mut series {
        if s.samples.windows(2).any(|w| w[0].0 > w[1].0) {
            s.samples.sort_by_key(|(t, _)| *t);
        }
        if s.segs_unsorted {
            s.segs.sort_by_key(|(k, _)| *k);
            let mut merged: Vec<(u32, Agg)> = Vec::with_capacity(s.segs.len());
            for (k, a) in s.segs.drain(..) {
                match merged.last_mut() {
                    Some((lk, la)) if *lk == k => la.merge(&a),
                    _ => merged.push((k, a)),
                }
            }
            s.segs = merged;
        }
    }
    // step windows
    let range_s = r.range_ns as f64 / 1e9;
    let mut out: Vec<Vector> = Vec::with_capacity(ctx.steps.len());
    let mut los = vec![0usize; series.len()];
    let mut his = vec![0usize; series.len()];
    for &t in &ctx.steps {
        let end = t.saturating_sub(r.offset_ns);
        let start = end.saturating_sub(r.range_ns);
        let mut vec: Vector = Vec::new();
        let mut any = false;
        let (seg_lo, seg_hi) = (segments.index(start), segments.index(end));
        for (i, s) in series.iter().enumerate() {
            if !whole {
                let sg = &s.segs;
                while los[i] < sg.len() && sg[los[i]].0 < seg_lo {
                    los[i] += 1;
                }
                if his[i] < los[i] {
                    his[i] = los[i];
                }
                while his[i] < sg.len() && sg[his[i]].0 < seg_hi {
                    his[i] += 1;
                }
                let w = &sg[los[i]..his[i]];
                let Some(((_, first), rest)) = w.split_first() else {
                    continue;
                };
                any = true;
                if op == RangeOp::AbsentOverTime {
                    continue;
                }
                let mut agg = *first;
                for (_, a) in rest {
                    agg.merge(a);
                }
                if s.labels.iter().any(|(k, _)| k == ERROR_LABEL) {
                    return Err(pipeline_error(&s.labels));
                }
                vec.push((s.labels.clone(), agg.value(op, range_s)));
                continue;
            }
            let smp = &s.samples;
            while los[i] < smp.len() && smp[los[i]].0 <= start {
                los[i] += 1;
            }
            if his[i] < los[i] {
                his[i] = los[i];
            }
            while his[i] < smp.len() && smp[his[i]].0 <= end {
                his[i] += 1;
            }
            let w = &smp[los[i]..his[i]];
            if w.is_empty() {
                continue;
            }
            any = true;
            if op == RangeOp::AbsentOverTime {
                continue;
            }
            if let Some(v) = range_value(op, param, w, range_s, start, end) {
                if s.labels.iter().any(|(k, _)| k == ERROR_LABEL) {
                    return Err(pipeline_error(&s.labels));
                }
                vec.push((s.labels.clone(), v));
            }
        }
        if op == RangeOp::AbsentOverTime && !any {
            let labels: LabelPairs = {
                let mut l: LabelPairs = r
                    .log
                    .matchers
                    .iter()
                    .filter(|m| m.op == model::MatchOp::Equal)
                    .map(|m| (m.name.clone(), m.value.clone()))
                    .collect();
                l.sort();
                l.dedup_by(|a, b| a.0 == b.0);
                l
            };
            vec.push((Arc::new(labels), 1.0));
        }
        if vec.len() > ctx.max_series {
            return Err(Error::Limit(format!(
                "maximum of series ({}) reached for a single query",
                ctx.max_series
            )));
        }
        out.push(vec);
    }
    Ok(out)
}

fn group_labels(l: &LabelPairs, g: Option<&Grouping>) -> LabelPairs {
    match g {
        None => l.clone(),
        Some(g) => l
            .iter()
            .filter(|(k, _)| g.labels.iter().any(|x| x == k) != g.without)
            .cloned()
            .collect(),
    }
}

fn pipeline_error(l: &LabelPairs) -> Error {
    let err = l
        .iter()
        .find(|(k, _)| k == ERROR_LABEL)
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    Error::Execution(format!(
        "pipeline error: '{err}' for series: '{}'.\nUse a label filter to intentionally skip this error. (e.g | __error__!=\"{err}\").\nTo skip all potential errors you can match empty errors.(e.g __error__=\"\")\nThe label filter can also be specified after unwrap. (e.g | unwrap latency | __error__=\"\" )\n",
        format_labels(l)
    ))
}

/// A range aggregation over every sample of a window: what quantile_over_time and
/// rate_counter use, and the reference the segment summaries ([`Agg`]) are tested against.
fn range_value(
    op: RangeOp,
    param: Option<f64>,
    w: &[(i64, f64)],
    range_s: f64,
    start: i64,
    end: i64,
) -> Option<f64> {
    let n = w.len() as f64;
    let sum = || kahan_sum(w.iter().map(|(_, v)| *v));
    Some(match op {
        RangeOp::CountOverTime => n,
        RangeOp::Rate => sum() / range_s,
        RangeOp::BytesOverTime => sum(),
        RangeOp::BytesRate => sum() / range_s,
        RangeOp::AbsentOverTime => 1.0,
        RangeOp::SumOverTime => sum(),
        RangeOp::AvgOverTime => {
            // incremental mean, like Prometheus, to survive large values
            let mut mean = 0.0;
            for (i, (_, v)) in w.iter().enumerate() {
                if v.is_infinite() {
                    return Some(w.iter().map(|(_, v)| *v).sum::<f64>() / n);
                }
                mean += (v - mean) / (i as f64 + 1.0);
            }
            mean
        }
        RangeOp::MaxOverTime => w
            .iter()
            .map(|(_, v)| *v)
            .fold(f64::NAN, |m, v| if v > m || m.is_nan() { v } else { m }),
        RangeOp::MinOverTime => w
            .iter()
            .map(|(_, v)| *v)
            .fold(f64::NAN, |m, v| if v < m || m.is_nan() { v } else { m }),
        RangeOp::StdvarOverTime | RangeOp::StddevOverTime => {
            let (mut count, mut mean, mut m2) = (0.0, 0.0, 0.0);
            for (_, v) in w {
                count += 1.0;
                let d = v - mean;
                mean += d / count;
                m2 += d * (v - mean);
            }
            let var = m2 / count;
            if op == RangeOp::StddevOverTime {
                var.sqrt()
            } else {
                var
            }
        }
        RangeOp::QuantileOverTime => {
            let mut vals: Vec<f64> = w.iter().map(|(_, v)| *v).collect();
            quantile(param.unwrap_or(0.0), &mut vals)
        }
        RangeOp::FirstOverTime => w[0].1,
        RangeOp::LastOverTime => w[w.len() - 1].1,
        RangeOp::RateCounter => return extrapolated_rate(w, start, end, range_s),
    })
}

fn kahan_sum(it: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut c) = (0.0f64, 0.0f64);
    for v in it {
        let t = sum + v;
        if sum.abs() >= v.abs() {
            c += (sum - t) + v;
        } else {
            c += (v - t) + sum;
        }
        sum = t;
    }
    if (sum + c).is_finite() { sum + c } else { sum }
}

/// Prometheus' `quantile` (linear interpolation between closest ranks).
fn quantile(q: f64, vals: &mut [f64]) -> f64 {
    if vals.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    vals.sort_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
    let n = vals.len() as f64;
    let rank = q * (n - 1.0);
    let lo = rank.floor().max(0.0) as usize;
    let hi = (lo + 1).min(vals.len() - 1);
    let wt = rank - rank.floor();
    vals[lo] * (1.0 - wt) + vals[hi] * wt
}

/// Prometheus' counter-aware, extrapolated `rate`.
fn extrapolated_rate(w: &[(i64, f64)], start: i64, end: i64, range_s: f64) -> Option<f64> {
    if w.len() < 2 {
        return Some(0.0);
    }
    let (ft, fv) = w[0];
    let (lt, lv) = w[w.len() - 1];
    let mut result = lv - fv;
    let mut prev = fv;
    for (_, v) in &w[1..] {
        if *v < prev {
            result += prev;
        }
        prev = *v;
    }
    let mut to_start = (ft - start) as f64 / 1e9;
    let mut to_end = (end - lt) as f64 / 1e9;
    let sampled = (lt - ft) as f64 / 1e9;
    let avg = sampled / (w.len() as f64 - 1.0);
    let threshold = avg * 1.1;
    // cap at half an interval first, then at the counter's zero point
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    if result > 0.0 && fv >= 0.0 {
        let to_zero = sampled * (fv / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let interval = sampled + to_start + to_end;
    Some(result * (interval / sampled) / range_s)
}

// ---------------------------------------------------------------------------------------------
// vector aggregation

fn aggregate(op: AggOp, param: Option<f64>, g: Option<&Grouping>, v: Vector) -> Vector {
    // group key: the grouped label set
    let mut groups: Vec<(Arc<LabelPairs>, Vector)> = Vec::new();
    let mut idx: HashMap<LabelPairs, usize> = HashMap::new();
    for (l, x) in v {
        let key = match g {
            None => Vec::new(),
            Some(g) => group_labels(&l, Some(g)),
        };
        let i = match idx.get(&key) {
            Some(i) => *i,
            None => {
                idx.insert(key.clone(), groups.len());
                groups.push((Arc::new(key), Vec::new()));
                groups.len() - 1
            }
        };
        groups[i].1.push((l, x));
    }
    let mut out: Vector = Vec::new();
    match op {
        AggOp::Sort | AggOp::SortDesc => {
            let mut all: Vector = groups.into_iter().flat_map(|(_, m)| m).collect();
            all.sort_by(|a, b| {
                let o = cmp_nan_last(a.1, b.1, op == AggOp::SortDesc);
                o.then_with(|| a.0.cmp(&b.0))
            });
            return all;
        }
        AggOp::Topk | AggOp::Bottomk | AggOp::ApproxTopk => {
            let k = param.unwrap_or(0.0).max(0.0) as usize;
            for (_, mut members) in groups {
                members.sort_by(|a, b| cmp_nan_last(a.1, b.1, op != AggOp::Bottomk));
                members.truncate(k);
                out.extend(members);
            }
            return out;
        }
        _ => {}
    }
    for (key, members) in groups {
        let vals: Vec<f64> = members.iter().map(|(_, v)| *v).collect();
        let n = vals.len() as f64;
        let v = match op {
            AggOp::Sum => kahan_sum(vals.iter().copied()),
            AggOp::Avg => {
                let mut mean = 0.0;
                let mut inf = false;
                for (i, v) in vals.iter().enumerate() {
                    if v.is_infinite() {
                        inf = true;
                    }
                    mean += (v - mean) / (i as f64 + 1.0);
                }
                if inf {
                    vals.iter().sum::<f64>() / n
                } else {
                    mean
                }
            }
            AggOp::Count => n,
            AggOp::Min => vals
                .iter()
                .fold(f64::NAN, |m, v| if *v < m || m.is_nan() { *v } else { m }),
            AggOp::Max => vals
                .iter()
                .fold(f64::NAN, |m, v| if *v > m || m.is_nan() { *v } else { m }),
            AggOp::Stddev | AggOp::Stdvar => {
                let (mut c, mut mean, mut m2) = (0.0, 0.0, 0.0);
                for v in &vals {
                    c += 1.0;
                    let d = v - mean;
                    mean += d / c;
                    m2 += d * (v - mean);
                }
                let var = m2 / c;
                if op == AggOp::Stddev { var.sqrt() } else { var }
            }
            _ => unreachable!("handled above"),
        };
        out.push((key, v));
    }
    out
}

/// Descending (or ascending) by value with NaN always last.
fn cmp_nan_last(a: f64, b: f64, desc: bool) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => {
            let o = a.partial_cmp(&b).unwrap_or(Ordering::Equal);
            if desc { o.reverse() } else { o }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// binary operators

/// Applies an arithmetic or comparison operator to two numbers; comparisons give 1/0 when
/// `as_bool`, else `Some(lhs)`/`None` (filter). Division and modulo by zero give NaN, as in
/// Loki.
pub fn scalar_binop(op: BinOp, a: f64, b: f64, as_bool: bool) -> Option<f64> {
    let cmp = |c: bool| {
        if as_bool {
            Some(if c { 1.0 } else { 0.0 })
        } else if c {
            Some(a)
        } else {
            None
        }
    };
    match op {
        BinOp::Add => Some(a + b),
        BinOp::Sub => Some(a - b),
        BinOp::Mul => Some(a * b),
        BinOp::Div => Some(if b == 0.0 { f64::NAN } else { a / b }),
        BinOp::Mod => Some(if b == 0.0 { f64::NAN } else { a % b }),
        BinOp::Pow => Some(a.powf(b)),
        BinOp::Eq => cmp(a == b),
        BinOp::Ne => cmp(a != b),
        BinOp::Gt => cmp(a > b),
        BinOp::Ge => cmp(a >= b),
        BinOp::Lt => cmp(a < b),
        BinOp::Le => cmp(a <= b),
        BinOp::And | BinOp::Or | BinOp::Unless => None,
    }
}

fn signature(l: &LabelPairs, m: Option<&VectorMatching>) -> LabelPairs {
    match m {
        None => l.clone(),
        Some(m) => l
            .iter()
            .filter(|(k, _)| m.labels.iter().any(|x| x == k) == m.on)
            .cloned()
            .collect(),
    }
}

fn binary(
    ctx: &Ctx<'_>,
    op: BinOp,
    l: Val,
    r: Val,
    as_bool: bool,
    m: Option<&VectorMatching>,
) -> Result<Val, Error> {
    match (l, r) {
        (Val::Scalar(a), Val::Scalar(b)) => Ok(Val::Scalar(
            scalar_binop(op, a, b, true).unwrap_or(f64::NAN),
        )),
        (Val::Vectors(vs), Val::Scalar(b)) => Ok(Val::Vectors(
            vs.into_iter()
                .map(|v| {
                    v.into_iter()
                        .filter_map(|(l, a)| {
                            let r = scalar_binop(op, a, b, as_bool)?;
                            Some((l, r))
                        })
                        .collect()
                })
                .collect(),
        )),
        (Val::Scalar(a), Val::Vectors(vs)) => Ok(Val::Vectors(
            vs.into_iter()
                .map(|v| {
                    v.into_iter()
                        .filter_map(|(l, b)| {
                            let r = scalar_binop(op, a, b, as_bool)?;
                            // a comparison filter keeps the vector's value
                            let r = if op.is_comparison() && !as_bool { b } else { r };
                            Some((l, r))
                        })
                        .collect()
                })
                .collect(),
        )),
        (Val::Vectors(lv), Val::Vectors(rv)) => {
            let mut out = Vec::with_capacity(lv.len());
            for (a, b) in lv.into_iter().zip(rv) {
                let v = if op.is_set() {
                    set_op(op, a, b, m)
                } else {
                    vector_vector(op, a, b, as_bool, m)?
                };
                out.push(v);
            }
            check_series(ctx, &out)?;
            Ok(Val::Vectors(out))
        }
    }
}

fn set_op(op: BinOp, a: Vector, b: Vector, m: Option<&VectorMatching>) -> Vector {
    let rsigs: std::collections::HashSet<LabelPairs> =
        b.iter().map(|(l, _)| signature(l, m)).collect();
    match op {
        BinOp::And => a
            .into_iter()
            .filter(|(l, _)| rsigs.contains(&signature(l, m)))
            .collect(),
        BinOp::Unless => a
            .into_iter()
            .filter(|(l, _)| !rsigs.contains(&signature(l, m)))
            .collect(),
        _ => {
            let lsigs: std::collections::HashSet<LabelPairs> =
                a.iter().map(|(l, _)| signature(l, m)).collect();
            let mut out = a;
            out.extend(
                b.into_iter()
                    .filter(|(l, _)| !lsigs.contains(&signature(l, m))),
            );
            out
        }
    }
}

fn vector_vector(
    op: BinOp,
    lhs: Vector,
    rhs: Vector,
    as_bool: bool,
    m: Option<&VectorMatching>,
) -> Result<Vector, Error> {
    let group_right = m.and_then(|m| m.group_right);
    // `many` side is the side whose samples are iterated; `one` side is indexed.
    let (many, one, swapped) = match group_right {
        Some(true) => (rhs, lhs, true),
        _ => (lhs, rhs, false),
    };
    let card_one_to_one = group_right.is_none();
    let one_side_name = if swapped { "left" } else { "right" };
    let mut index: HashMap<LabelPairs, (Arc<LabelPairs>, f64)> = HashMap::new();
    for (l, v) in &one {
        let sig = signature(l, m);
        if let Some((prev, _)) = index.get(&sig) {
            return Err(Error::Execution(format!(
                "found duplicate series on the {one_side_name} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                format_labels(prev),
                format_labels(l)
            )));
        }
        index.insert(sig, (l.clone(), *v));
    }
    let mut out: Vector = Vec::new();
    let mut seen_one_to_one: HashMap<LabelPairs, ()> = HashMap::new();
    let mut seen_result: std::collections::HashSet<Arc<LabelPairs>> = Default::default();
    for (l, v) in many {
        let sig = signature(&l, m);
        let Some((ol, ov)) = index.get(&sig) else {
            continue;
        };
        if card_one_to_one && seen_one_to_one.insert(sig.clone(), ()).is_some() {
            return Err(Error::Execution(format!(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right): {}",
                format_labels(&l)
            )));
        }
        let (a, b) = if swapped { (*ov, v) } else { (v, *ov) };
        let Some(r) = scalar_binop(op, a, b, as_bool) else {
            continue;
        };
        let labels = result_labels(&l, ol, m, card_one_to_one);
        let labels = Arc::new(labels);
        if !card_one_to_one && !seen_result.insert(labels.clone()) {
            return Err(Error::Execution(
                "multiple matches for labels: grouping labels must ensure unique matches".into(),
            ));
        }
        out.push((labels, r));
    }
    Ok(out)
}

fn result_labels(
    many: &LabelPairs,
    one: &LabelPairs,
    m: Option<&VectorMatching>,
    one_to_one: bool,
) -> LabelPairs {
    let Some(m) = m else {
        return many.clone();
    };
    let mut out: LabelPairs = if one_to_one {
        many.iter()
            .filter(|(k, _)| m.labels.iter().any(|x| x == k) == m.on)
            .cloned()
            .collect()
    } else {
        many.clone()
    };
    if !one_to_one {
        for inc in &m.include {
            out.retain(|(k, _)| k != inc);
            if let Some((_, v)) = one.iter().find(|(k, _)| k == inc)
                && !v.is_empty()
            {
                out.push((inc.clone(), v.clone()));
            }
        }
        out.sort();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Merging per-segment summaries gives what aggregating every sample gives.
    #[test]
    fn segment_summaries_match_every_sample() {
        let mut rng = model::XorShift64::new(0x1234_5678_9abc_def1);
        let mut rnd = move || rng.next_u64();
        for round in 0..300 {
            let n = 1 + (rnd() % 40) as usize;
            let mut w: Vec<(i64, f64)> = (0..n)
                .map(|i| {
                    let v = match rnd() % 20 {
                        0 if round % 3 == 0 => f64::INFINITY,
                        1 if round % 5 == 0 => f64::NAN,
                        k => (rnd() % 1000) as f64 / 7.0 - 50.0 + k as f64,
                    };
                    (i as i64 * 1000 + (rnd() % 3) as i64, v)
                })
                .collect();
            w.sort_by_key(|(t, _)| *t);
            // cut into 1..=4 consecutive segments, then merge their summaries in order
            let cuts = 1 + (rnd() % 4) as usize;
            let mut aggs: Vec<Agg> = Vec::new();
            for (i, (t, v)) in w.iter().enumerate() {
                let seg = i * cuts / n;
                if aggs.len() <= seg {
                    aggs.push(Agg::one(*t, *v));
                } else {
                    aggs[seg].merge(&Agg::one(*t, *v));
                }
            }
            let mut total = aggs[0];
            for a in &aggs[1..] {
                total.merge(a);
            }
            for op in RangeOp::ALL {
                if matches!(op, RangeOp::QuantileOverTime | RangeOp::RateCounter) {
                    continue;
                }
                let want = range_value(op, None, &w, 60.0, 0, 60_000).unwrap();
                let got = total.value(op, 60.0);
                let same = (want.is_nan() && got.is_nan())
                    || want == got
                    || (want - got).abs() <= 1e-9 * want.abs().max(1.0);
                assert!(same, "{op:?} round {round}: samples {want}, segments {got}");
            }
        }
    }

    #[test]
    fn quantiles_and_rates() {
        assert_eq!(quantile(0.5, &mut [1.0, 3.0, 2.0]), 2.0);
        assert_eq!(quantile(0.25, &mut [1.0, 2.0, 3.0, 4.0, 5.0]), 2.0);
        assert!(quantile(-1.0, &mut [1.0]).is_infinite());
        let w = [
            (10_000_000_000, 1.0),
            (20_000_000_000, 2.0),
            (30_000_000_000, 3.0),
        ];
        // counter from 1 to 3 over 20s of samples in a 30s window; to-zero limits start
        let r = extrapolated_rate(&w, 0, 30_000_000_000, 30.0).unwrap();
        assert!((r - 3.0 / 30.0).abs() < 1e-9, "{r}");
        assert_eq!(
            scalar_binop(BinOp::Div, 1.0, 0.0, true).map(f64::is_nan),
            Some(true)
        );
    }
}
