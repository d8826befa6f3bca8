//! The evaluator: turns a parsed query into a [`Value`] for one instant or for every step
//! of a range query.
//!
//! Every sub-expression is evaluated for **all** steps at once: a selector is loaded once for
//! the union of its windows, then each step reads from memory. Instant-vector results are
//! kept as one vector per step ([`Res::Vector`]), so binary operators and aggregations work
//! step by step; range-vector arguments (matrix selectors, subqueries) are kept as series
//! ([`RangeData`]) that functions slide a window over.
//!
//! Metric names are removed late, as Prometheus does with delayed name removal: operations
//! that drop the name only set [`Smp::drop_name`], and the name goes when the result is
//! produced (which is when duplicate label sets become an error).

use crate::functions;
use crate::memo::{AddrHashMap, ByLabels, Interner, Stamps};
use crate::storage::SampleBudget;
use crate::value::format_labels;
use crate::{Error, Sample, SampleValue, Series, Storage, Value};
use model::{FloatHistogram, Labels, LabelsBuilder, METRIC_NAME, Sample as FloatSample};
use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{
    AggregateExpr, AtModifier, BinaryExpr, Call, Expr, LabelModifier, Offset, SubqueryExpr,
    VectorMatchCardinality, VectorSelector,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Engine settings (Prometheus' `--query.*` flags).
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample (`--query.lookback-delta`, 5m).
    pub lookback_delta_ms: i64,
    /// Most samples a query may load (`--query.max-samples`, 50M).
    pub max_samples: usize,
    /// Longest a query may run (`--query.timeout`, 2m).
    pub timeout: Duration,
    /// Step of a subquery written `[5m:]` without one (1m).
    pub default_subquery_step_ms: i64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta_ms: 5 * 60 * 1000,
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            default_subquery_step_ms: 60 * 1000,
        }
    }
}

/// Per-query settings.
#[derive(Clone, Debug, Default)]
pub struct QueryOptions {
    /// Set to `true` (e.g. when the client disconnects) to stop the query with
    /// [`Error::Canceled`].
    pub cancel: Option<Arc<AtomicBool>>,
    /// Overrides the engine's lookback delta for this query.
    pub lookback_delta_ms: Option<i64>,
}

/// A query's value and its annotations (Prometheus' `warnings` and `infos`).
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    pub value: Value,
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
}

/// Evaluates PromQL; cheap to share, holds only settings.
#[derive(Clone, Debug, Default)]
pub struct Engine {
    opts: EngineOptions,
}

impl Engine {
    pub fn new(opts: EngineOptions) -> Self {
        Engine { opts }
    }

    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Parses `query`, with the position of a syntax error in the message.
    pub fn parse(query: &str) -> Result<Expr, Error> {
        promql_parser::parser::parse(query).map_err(|message| Error::Parse {
            query: query.to_string(),
            message,
        })
    }

    /// Evaluates `query` at `t_ms`.
    pub fn instant(
        &self,
        storage: &dyn Storage,
        query: &str,
        t_ms: i64,
        qopts: &QueryOptions,
    ) -> Result<QueryResult, Error> {
        let expr = Self::parse(query)?;
        self.run(storage, &expr, t_ms, t_ms, 1, true, qopts)
    }

    /// Evaluates `query` at `start_ms, start_ms + step_ms, …` up to `end_ms`.
    pub fn range(
        &self,
        storage: &dyn Storage,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        qopts: &QueryOptions,
    ) -> Result<QueryResult, Error> {
        let expr = Self::parse(query)?;
        self.range_expr(storage, &expr, start_ms, end_ms, step_ms, qopts)
    }

    /// [`Engine::range`] for an already parsed query.
    pub fn range_expr(
        &self,
        storage: &dyn Storage,
        expr: &Expr,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        qopts: &QueryOptions,
    ) -> Result<QueryResult, Error> {
        if step_ms <= 0 {
            return Err(Error::BadData(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end_ms < start_ms {
            return Err(Error::BadData(
                "end timestamp must not be before start time".into(),
            ));
        }
        let vt = expr.value_type().to_string();
        if vt != "scalar" && vt != "vector" {
            return Err(Error::BadData(format!(
                "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                type_word(&vt)
            )));
        }
        self.run(storage, expr, start_ms, end_ms, step_ms, false, qopts)
    }

    /// [`Engine::instant`] for an already parsed query.
    pub fn instant_expr(
        &self,
        storage: &dyn Storage,
        expr: &Expr,
        t_ms: i64,
        qopts: &QueryOptions,
    ) -> Result<QueryResult, Error> {
        self.run(storage, expr, t_ms, t_ms, 1, true, qopts)
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        storage: &dyn Storage,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
        instant: bool,
        qopts: &QueryOptions,
    ) -> Result<QueryResult, Error> {
        let budget = Arc::new(SampleBudget::new(self.opts.max_samples));
        let mut ev = Evaluator {
            storage,
            budget: &budget,
            lookback: qopts
                .lookback_delta_ms
                .unwrap_or(self.opts.lookback_delta_ms),
            sub_step: self.opts.default_subquery_step_ms,
            deadline: Instant::now() + self.opts.timeout,
            cancel: qopts.cancel.clone(),
            query_start: start,
            query_end: end,
            query_step: if instant { 0 } else { step },
            warnings: Vec::new(),
            infos: Vec::new(),
            ticks: 0,
        };
        let mut ts = Vec::new();
        let mut t = start;
        while t <= end {
            ts.push(t);
            t += step;
        }
        if !instant && let Some(series) = ev.series_direct(expr, &ts)? {
            ev.warnings.dedup();
            ev.infos.dedup();
            return Ok(QueryResult {
                value: Value::Matrix(series),
                warnings: ev.warnings,
                infos: ev.infos,
            });
        }
        let res = ev.eval(expr, &ts)?;
        let value = if instant {
            match res {
                Res::Scalar(v) => Value::Scalar { t: start, v: v[0] },
                Res::Str(s) => Value::String { t: start, v: s },
                Res::Vector(mut steps) => {
                    let v = std::mem::take(&mut steps[0]);
                    Value::Vector(finish_vector(v, start)?)
                }
                Res::Range(rd) => Value::Matrix(rd.window_series(0)),
            }
        } else {
            match res {
                Res::Scalar(v) => Value::Matrix(vec![Series {
                    metric: Labels::new(),
                    floats: ts
                        .iter()
                        .zip(v)
                        .map(|(&t, v)| FloatSample { t, v })
                        .collect(),
                    histograms: Vec::new(),
                }]),
                Res::Vector(steps) => Value::Matrix(steps_to_matrix(steps, &ts)?),
                Res::Str(_) | Res::Range(_) => {
                    return Err(Error::BadData(
                        "invalid expression type for range query, must be Scalar or instant Vector"
                            .into(),
                    ));
                }
            }
        };
        ev.warnings.dedup();
        ev.infos.dedup();
        Ok(QueryResult {
            value,
            warnings: ev.warnings,
            infos: ev.infos,
        })
    }
}

fn type_word(vt: &str) -> &'static str {
    match vt {
        "matrix" => "range vector",
        "string" => "string",
        "scalar" => "scalar",
        _ => "instant vector",
    }
}

/// Drops flagged metric names and rejects duplicate label sets.
fn finish_vector(v: Vec<Smp>, t: i64) -> Result<Vec<Sample>, Error> {
    let mut out = Vec::with_capacity(v.len());
    let any_drop = v.iter().any(|s| s.drop_name);
    let mut seen = std::collections::HashSet::new();
    for s in v {
        let metric = if s.drop_name {
            drop_name(&s.m)
        } else {
            (*s.m).clone()
        };
        if any_drop && !seen.insert(metric.clone()) {
            return Err(dup_labelset());
        }
        out.push(Sample {
            metric,
            t,
            value: s.v,
        });
    }
    Ok(out)
}

pub(crate) fn dup_labelset() -> Error {
    Error::Execution("vector cannot contain metrics with the same labelset".into())
}

fn steps_to_matrix(steps: Vec<Vec<Smp>>, ts: &[i64]) -> Result<Vec<Series>, Error> {
    // Output series by (labels `Arc`, name dropped or not), worked out once per series;
    // series whose final label sets are equal share one output id, so that two of them in
    // the same step are the duplicate Prometheus refuses.
    let mut kept: ByLabels<u32> = ByLabels::default();
    let mut dropped: ByLabels<u32> = ByLabels::default();
    let mut ids: Interner<Labels> = Interner::default();
    let mut out: Vec<Series> = Vec::new();
    let mut seen = Stamps::default();
    for (i, step) in steps.into_iter().enumerate() {
        seen.next_round();
        kept.next_round();
        dropped.next_round();
        for s in step {
            let table = if s.drop_name { &mut dropped } else { &mut kept };
            let pos = table.round_len();
            let id = table.get_at(pos, &s.m, |m| {
                ids.intern(if s.drop_name { drop_name(m) } else { m.clone() })
            });
            if seen.set(id, 0).is_some() {
                return Err(dup_labelset());
            }
            if id as usize == out.len() {
                out.push(Series {
                    metric: ids.get(id).clone(),
                    ..Series::default()
                });
            }
            let e = &mut out[id as usize];
            match s.v {
                SampleValue::Float(v) => e.floats.push(FloatSample { t: ts[i], v }),
                SampleValue::Histogram(h) => e.histograms.push((ts[i], h)),
            }
        }
    }
    out.sort_by(|a, b| a.metric.cmp(&b.metric));
    Ok(out)
}

pub(crate) fn drop_name(l: &Labels) -> Labels {
    if l.get(METRIC_NAME).is_none() {
        return l.clone();
    }
    let mut b = l.builder();
    b.del(METRIC_NAME);
    b.build()
}

/// One element of an intermediate instant vector.
#[derive(Clone, Debug)]
pub(crate) struct Smp {
    pub m: Arc<Labels>,
    pub v: SampleValue,
    /// The metric name is to be removed when the result is produced.
    pub drop_name: bool,
}

impl Smp {
    pub fn float(&self) -> Option<f64> {
        match self.v {
            SampleValue::Float(f) => Some(f),
            SampleValue::Histogram(_) => None,
        }
    }
}

/// A series of a range vector (matrix selector or subquery), stale markers removed.
#[derive(Clone, Debug)]
pub(crate) struct RSeries {
    pub m: Arc<Labels>,
    pub drop_name: bool,
    pub pts: Points,
}

/// A range-vector series' samples in time order: floats only (nearly every series, kept
/// as stored, 16 bytes a sample), or floats and histograms.
#[derive(Clone, Debug)]
pub(crate) enum Points {
    Floats(Vec<FloatSample>),
    Mixed(Vec<(i64, SampleValue)>),
}

impl Points {
    /// `pts` as [`Points::Floats`] when every sample is a float.
    pub fn from_mixed(pts: Vec<(i64, SampleValue)>) -> Points {
        if pts.iter().all(|p| matches!(p.1, SampleValue::Float(_))) {
            Points::Floats(
                pts.into_iter()
                    .map(|(t, v)| FloatSample {
                        t,
                        v: v.float().unwrap_or(f64::NAN),
                    })
                    .collect(),
            )
        } else {
            Points::Mixed(pts)
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Points::Floats(f) => f.len(),
            Points::Mixed(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many samples are at or before `t`.
    pub fn count_le(&self, t: i64) -> usize {
        match self {
            Points::Floats(f) => f.partition_point(|p| p.t <= t),
            Points::Mixed(m) => m.partition_point(|p| p.0 <= t),
        }
    }

    /// The samples as (time, value) pairs: borrowed when mixed, else built in `buf`.
    pub fn as_pairs<'a>(
        &'a self,
        buf: &'a mut Vec<(i64, SampleValue)>,
    ) -> &'a [(i64, SampleValue)] {
        match self {
            Points::Mixed(m) => m,
            Points::Floats(f) => {
                buf.clear();
                buf.extend(f.iter().map(|p| (p.t, SampleValue::Float(p.v))));
                buf
            }
        }
    }
}

/// A range-vector argument: series, and for each step the end of its window.
#[derive(Debug)]
pub(crate) struct RangeData {
    pub series: Vec<RSeries>,
    pub range: i64,
    /// Window end (step time or `@` time, minus offset) per step; windows are `(end-range, end]`.
    pub ends: Vec<i64>,
    /// The step (or `@`) time before the offset, per step (for `predict_linear`).
    pub at: Vec<i64>,
}

impl RangeData {
    /// Step `i`'s window of `s` as indices into its samples.
    pub fn window(&self, s: &RSeries, i: usize) -> (usize, usize) {
        let end = self.ends[i];
        let lo = s.pts.count_le(end - self.range);
        let hi = s.pts.count_le(end);
        (lo, hi.max(lo))
    }

    /// A cursor for [`RangeData::bounds`], to be used for one series, steps in order.
    pub fn cursor(&self) -> WindowCursor {
        WindowCursor {
            lo: 0,
            hi: 0,
            sliding: self.ends.is_sorted(),
        }
    }

    /// Step `i`'s window of `s` as indices into its samples: the same as
    /// [`RangeData::window`]. When window ends never decrease (always, but for `@`), the
    /// bounds slide forward from the previous step's instead of being searched for.
    pub fn bounds(&self, s: &RSeries, i: usize, cur: &mut WindowCursor) -> (usize, usize) {
        if !cur.sliding {
            return self.window(s, i);
        }
        let end = self.ends[i];
        let start = end - self.range;
        match &s.pts {
            Points::Floats(f) => cur.slide(f, |p| p.t, start, end),
            Points::Mixed(m) => cur.slide(m, |p| p.0, start, end),
        }
    }

    fn window_series(&self, i: usize) -> Vec<Series> {
        let mut out = Vec::new();
        for s in &self.series {
            let (lo, hi) = self.window(s, i);
            if lo == hi {
                continue;
            }
            let mut ser = Series {
                metric: if s.drop_name {
                    drop_name(&s.m)
                } else {
                    (*s.m).clone()
                },
                ..Series::default()
            };
            match &s.pts {
                Points::Floats(f) => ser.floats.extend_from_slice(&f[lo..hi]),
                Points::Mixed(m) => {
                    for (t, v) in &m[lo..hi] {
                        match v {
                            SampleValue::Float(f) => ser.floats.push(FloatSample { t: *t, v: *f }),
                            SampleValue::Histogram(h) => ser.histograms.push((*t, h.clone())),
                        }
                    }
                }
            }
            out.push(ser);
        }
        out.sort_by(|a, b| a.metric.cmp(&b.metric));
        out
    }
}

/// Where the previous step's window of one series was (see [`RangeData::bounds`]).
pub(crate) struct WindowCursor {
    lo: usize,
    hi: usize,
    sliding: bool,
}

impl WindowCursor {
    fn slide<P>(
        &mut self,
        pts: &[P],
        t: impl Fn(&P) -> i64,
        start: i64,
        end: i64,
    ) -> (usize, usize) {
        let n = pts.len();
        while self.lo < n && t(&pts[self.lo]) <= start {
            self.lo += 1;
        }
        self.hi = self.hi.max(self.lo);
        while self.hi < n && t(&pts[self.hi]) <= end {
            self.hi += 1;
        }
        (self.lo, self.hi)
    }
}

/// The value of a sub-expression over all steps.
#[derive(Debug)]
pub(crate) enum Res {
    Scalar(Vec<f64>),
    Str(String),
    Vector(Vec<Vec<Smp>>),
    Range(RangeData),
}

pub(crate) struct Evaluator<'a> {
    storage: &'a dyn Storage,
    budget: &'a Arc<SampleBudget>,
    pub lookback: i64,
    sub_step: i64,
    deadline: Instant,
    cancel: Option<Arc<AtomicBool>>,
    query_start: i64,
    query_end: i64,
    /// The range query's step (0 for an instant query), for `step()`.
    query_step: i64,
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
    ticks: u32,
}

pub(crate) fn millis(d: &Duration) -> i64 {
    d.as_millis() as i64
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => millis(d),
        Some(Offset::Neg(d)) => -millis(d),
    }
}

fn systime_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

impl<'a> Evaluator<'a> {
    /// Fails when the deadline has passed or the query was canceled; cheap to call often.
    pub fn check(&mut self) -> Result<(), Error> {
        self.check_cost(64)
    }

    /// [`Evaluator::check`] after work worth `cost` (e.g. the number of steps just
    /// evaluated for one series): the clock and the cancel flag are read about every 4096
    /// units of work.
    pub fn check_cost(&mut self, cost: usize) -> Result<(), Error> {
        self.ticks = self
            .ticks
            .saturating_add(cost.min(u32::MAX as usize) as u32);
        if self.ticks < 4096 {
            return Ok(());
        }
        self.ticks = 0;
        if let Some(c) = &self.cancel
            && c.load(Ordering::Relaxed)
        {
            return Err(Error::Canceled);
        }
        if Instant::now() > self.deadline {
            return Err(Error::Timeout);
        }
        Ok(())
    }

    /// The outer query's start and end (what `start()` and `end()` mean).
    pub fn query_bounds(&self) -> (i64, i64) {
        (self.query_start, self.query_end)
    }

    pub fn query_step(&self) -> i64 {
        self.query_step
    }

    fn at_ms(&self, at: &Option<AtModifier>) -> Option<i64> {
        match at {
            None => None,
            Some(AtModifier::Start) => Some(self.query_start),
            Some(AtModifier::End) => Some(self.query_end),
            Some(AtModifier::At(t)) => Some(systime_ms(t)),
        }
    }

    pub fn eval(&mut self, expr: &Expr, ts: &[i64]) -> Result<Res, Error> {
        self.check()?;
        match expr {
            Expr::NumberLiteral(n) => Ok(Res::Scalar(vec![n.val; ts.len()])),
            Expr::StringLiteral(s) => Ok(Res::Str(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, ts),
            Expr::Unary(u) => match self.eval(&u.expr, ts)? {
                Res::Scalar(v) => Ok(Res::Scalar(v.into_iter().map(|x| -x).collect())),
                Res::Vector(steps) => Ok(Res::Vector(
                    steps
                        .into_iter()
                        .map(|st| {
                            st.into_iter()
                                .map(|s| Smp {
                                    v: match s.v {
                                        SampleValue::Float(f) => SampleValue::Float(-f),
                                        SampleValue::Histogram(h) => SampleValue::Histogram(
                                            Arc::new(crate::histogram::scale(&h, -1.0)),
                                        ),
                                    },
                                    drop_name: true,
                                    m: s.m,
                                })
                                .collect()
                        })
                        .collect(),
                )),
                _ => Err(Error::BadData(
                    "unary expression only allowed on expressions of type scalar or instant vector"
                        .into(),
                )),
            },
            Expr::VectorSelector(vs) => self.vector_selector(vs, ts, false),
            Expr::MatrixSelector(ms) => Ok(Res::Range(self.matrix_selector(
                &ms.vs,
                millis(&ms.range),
                ts,
            )?)),
            Expr::Subquery(sq) => Ok(Res::Range(self.subquery(sq, ts)?)),
            Expr::Binary(b) => self.binary(b, ts),
            Expr::Aggregate(a) => self.aggregate(a, ts),
            Expr::Call(c) => self.call(c, ts),
            Expr::Extension(_) => Err(Error::BadData(
                "extension expressions are not supported".into(),
            )),
        }
    }

    pub fn eval_scalar(&mut self, expr: &Expr, ts: &[i64]) -> Result<Vec<f64>, Error> {
        match self.eval(expr, ts)? {
            Res::Scalar(v) => Ok(v),
            other => Err(Error::BadData(format!(
                "expected a scalar, got {}",
                res_type(&other)
            ))),
        }
    }

    pub fn eval_vector(&mut self, expr: &Expr, ts: &[i64]) -> Result<Vec<Vec<Smp>>, Error> {
        match self.eval(expr, ts)? {
            Res::Vector(v) => Ok(v),
            other => Err(Error::BadData(format!(
                "expected an instant vector, got {}",
                res_type(&other)
            ))),
        }
    }

    pub fn eval_range(&mut self, expr: &Expr, ts: &[i64]) -> Result<RangeData, Error> {
        match expr {
            Expr::Paren(p) => self.eval_range(&p.expr, ts),
            _ => match self.eval(expr, ts)? {
                Res::Range(r) => Ok(r),
                other => Err(Error::BadData(format!(
                    "expected a range vector, got {}",
                    res_type(&other)
                ))),
            },
        }
    }

    fn matchers(&self, vs: &VectorSelector) -> Result<Vec<Vec<model::Matcher>>, Error> {
        let conv = |ms: &[promql_parser::label::Matcher]| -> Result<Vec<model::Matcher>, Error> {
            let mut out = Vec::new();
            if let Some(n) = &vs.name {
                out.push(model::Matcher::equal(METRIC_NAME, n.clone()));
            }
            for m in ms {
                let op = match m.op {
                    PMatchOp::Equal => model::MatchOp::Equal,
                    PMatchOp::NotEqual => model::MatchOp::NotEqual,
                    PMatchOp::Re(_) => model::MatchOp::Regex,
                    PMatchOp::NotRe(_) => model::MatchOp::NotRegex,
                };
                out.push(
                    model::Matcher::new(op, m.name.clone(), m.value.clone())
                        .map_err(|e| Error::BadData(e.to_string()))?,
                );
            }
            Ok(out)
        };
        if vs.matchers.or_matchers.is_empty() {
            Ok(vec![conv(&vs.matchers.matchers)?])
        } else {
            vs.matchers
                .or_matchers
                .iter()
                .map(|ms| conv(ms))
                .collect::<Result<_, _>>()
        }
    }

    fn select(&mut self, vs: &VectorSelector, mint: i64, maxt: i64) -> Result<Vec<Series>, Error> {
        let sets = self.matchers(vs)?;
        if sets.len() == 1 {
            return self.storage.select(&sets[0], mint, maxt, self.budget);
        }
        let mut all: Vec<Series> = Vec::new();
        for ms in sets {
            for s in self.storage.select(&ms, mint, maxt, self.budget)? {
                if !all.iter().any(|x| x.metric == s.metric) {
                    all.push(s);
                }
            }
        }
        all.sort_by(|a, b| a.metric.cmp(&b.metric));
        Ok(all)
    }

    /// Hands `f` the series `vs` selects in `[mint, maxt]`, one at a time, in label order,
    /// with the number of series to expect (see [`Storage::select_each`]).
    fn select_each(
        &mut self,
        vs: &VectorSelector,
        mint: i64,
        maxt: i64,
        f: &mut dyn FnMut(&mut Self, usize, Series) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let sets = self.matchers(vs)?;
        let (storage, budget) = (self.storage, self.budget);
        if sets.len() == 1 {
            return storage.select_each(&sets[0], mint, maxt, budget, &mut |n, s| f(self, n, s));
        }
        let all = self.select(vs, mint, maxt)?;
        let n = all.len();
        for s in all {
            f(self, n, s)?;
        }
        Ok(())
    }

    /// Merges a stored series' float and histogram samples into one time-ordered list.
    fn merge_points(s: Series, drop_stale: bool) -> Vec<(i64, SampleValue)> {
        if s.histograms.is_empty() {
            // Float series, nearly all of them: no merge to decide per sample.
            let keep = |f: &&FloatSample| !(drop_stale && model::is_stale_nan(f.v));
            let mut pts = Vec::with_capacity(s.floats.len());
            pts.extend(
                s.floats
                    .iter()
                    .filter(keep)
                    .map(|f| (f.t, SampleValue::Float(f.v))),
            );
            return pts;
        }
        let mut pts = Vec::with_capacity(s.floats.len() + s.histograms.len());
        let (mut i, mut j) = (0, 0);
        while i < s.floats.len() || j < s.histograms.len() {
            let take_float = j >= s.histograms.len()
                || (i < s.floats.len() && s.floats[i].t <= s.histograms[j].0);
            if take_float {
                let f = s.floats[i];
                i += 1;
                if drop_stale && model::is_stale_nan(f.v) {
                    continue;
                }
                pts.push((f.t, SampleValue::Float(f.v)));
            } else {
                let (t, h) = &s.histograms[j];
                j += 1;
                pts.push((*t, SampleValue::Histogram(h.clone())));
            }
        }
        pts
    }

    /// `want_ts`: the value is the sample's timestamp in seconds (for `timestamp()`).
    pub fn vector_selector(
        &mut self,
        vs: &VectorSelector,
        ts: &[i64],
        want_ts: bool,
    ) -> Result<Res, Error> {
        let mut sink = StepVecs::new(ts.len());
        self.vector_selector_into(vs, ts, want_ts, &mut sink)?;
        Ok(Res::Vector(sink.finish()))
    }

    /// [`Evaluator::vector_selector`], handing each series' samples to `sink`.
    pub(crate) fn vector_selector_into(
        &mut self,
        vs: &VectorSelector,
        ts: &[i64],
        want_ts: bool,
        sink: &mut dyn Sink,
    ) -> Result<(), Error> {
        let off = offset_ms(&vs.offset);
        let at = self.at_ms(&vs.at);
        let eff: Vec<i64> = ts.iter().map(|&t| at.unwrap_or(t) - off).collect();
        let (Some(&lo), Some(&hi)) = (eff.iter().min(), eff.iter().max()) else {
            return Ok(());
        };
        let sliding = eff.is_sorted();
        let lookback = self.lookback;
        self.select_each(vs, lo - lookback + 1, hi, &mut |ev, n, mut s| {
            ev.check_cost(eff.len())?;
            let m = Arc::new(std::mem::take(&mut s.metric));
            sink.begin(&m, false, n);
            if s.histograms.is_empty() && sliding {
                // The usual case: floats only, steps in time order; the newest sample at or
                // before each step is found by sliding forward.
                let f = &s.floats;
                let mut idx = 0;
                for (i, &t) in eff.iter().enumerate() {
                    while idx < f.len() && f[idx].t <= t {
                        idx += 1;
                    }
                    let Some(p) = idx.checked_sub(1).map(|k| f[k]) else {
                        continue;
                    };
                    if p.t <= t - lookback || model::is_stale_nan(p.v) {
                        continue;
                    }
                    sink.push(
                        i,
                        SampleValue::Float(if want_ts { p.t as f64 / 1000.0 } else { p.v }),
                    );
                }
                return Ok(());
            }
            let pts = Self::merge_points(s, false);
            for (i, &t) in eff.iter().enumerate() {
                let idx = pts.partition_point(|p| p.0 <= t);
                if idx == 0 {
                    continue;
                }
                let (pt, pv) = &pts[idx - 1];
                if *pt <= t - lookback {
                    continue;
                }
                if let SampleValue::Float(f) = pv
                    && model::is_stale_nan(*f)
                {
                    continue;
                }
                sink.push(
                    i,
                    if want_ts {
                        SampleValue::Float(*pt as f64 / 1000.0)
                    } else {
                        pv.clone()
                    },
                );
            }
            Ok(())
        })
    }

    fn matrix_selector(
        &mut self,
        vs: &VectorSelector,
        range: i64,
        ts: &[i64],
    ) -> Result<RangeData, Error> {
        let off = offset_ms(&vs.offset);
        let at = self.at_ms(&vs.at);
        let at_t: Vec<i64> = ts.iter().map(|&t| at.unwrap_or(t)).collect();
        let ends: Vec<i64> = at_t.iter().map(|&t| t - off).collect();
        let (Some(&lo), Some(&hi)) = (ends.iter().min(), ends.iter().max()) else {
            return Ok(RangeData {
                series: Vec::new(),
                range,
                ends,
                at: at_t,
            });
        };
        let mut series: Vec<RSeries> = Vec::new();
        self.select_each(vs, lo - range + 1, hi, &mut |_, n, mut s| {
            series.reserve(n.saturating_sub(series.len()));
            let m = Arc::new(std::mem::take(&mut s.metric));
            let pts = if s.histograms.is_empty() {
                let mut f = s.floats;
                f.retain(|p| !model::is_stale_nan(p.v));
                Points::Floats(f)
            } else {
                Points::Mixed(Self::merge_points(s, true))
            };
            if !pts.is_empty() {
                series.push(RSeries {
                    m,
                    drop_name: false,
                    pts,
                });
            }
            Ok(())
        })?;
        Ok(RangeData {
            series,
            range,
            ends,
            at: at_t,
        })
    }

    fn subquery(&mut self, sq: &SubqueryExpr, ts: &[i64]) -> Result<RangeData, Error> {
        let off = offset_ms(&sq.offset);
        let at = self.at_ms(&sq.at);
        let range = millis(&sq.range);
        let step = sq
            .step
            .as_ref()
            .map(millis)
            .filter(|s| *s > 0)
            .unwrap_or(self.sub_step);
        let at_t: Vec<i64> = ts.iter().map(|&t| at.unwrap_or(t)).collect();
        let ends: Vec<i64> = at_t.iter().map(|&t| t - off).collect();
        let (Some(&lo), Some(&hi)) = (ends.iter().min(), ends.iter().max()) else {
            return Ok(RangeData {
                series: Vec::new(),
                range,
                ends,
                at: at_t,
            });
        };
        let mut start = (lo - range).div_euclid(step) * step;
        if start <= lo - range {
            start += step;
        }
        let mut inner_ts = Vec::new();
        let mut t = start;
        while t <= hi {
            inner_ts.push(t);
            t += step;
        }
        // `start()`/`end()` inside a subquery still mean the outer query's bounds.
        let inner = self.eval_vector(&sq.expr, &inner_ts)?;
        let mut kept: ByLabels<usize> = ByLabels::default();
        let mut dropped: ByLabels<usize> = ByLabels::default();
        // Per output series: labels, whether the name is dropped, its points.
        type Building = (Arc<Labels>, bool, Vec<(i64, SampleValue)>);
        let mut series: Vec<Building> = Vec::new();
        for (i, step_v) in inner.into_iter().enumerate() {
            for s in step_v {
                let table = if s.drop_name { &mut dropped } else { &mut kept };
                let idx = *table.get_or_insert_with(&s.m, |_| {
                    series.push((s.m.clone(), s.drop_name, Vec::new()));
                    series.len() - 1
                });
                // Subquery points are not adjacent samples: "not a reset since the previous
                // sample" says nothing about the previous point, so resets are detected anew.
                let v = match s.v {
                    SampleValue::Histogram(h)
                        if h.counter_reset_hint == model::CounterResetHint::NotCounterReset =>
                    {
                        let mut h = (*h).clone();
                        h.counter_reset_hint = model::CounterResetHint::Unknown;
                        SampleValue::Histogram(Arc::new(h))
                    }
                    v => v,
                };
                series[idx].2.push((inner_ts[i], v));
            }
        }
        let mut series: Vec<RSeries> = series
            .into_iter()
            .map(|(m, drop_name, pts)| RSeries {
                m,
                drop_name,
                pts: Points::from_mixed(pts),
            })
            .collect();
        series.sort_by(|a, b| a.m.cmp(&b.m));
        Ok(RangeData {
            series,
            range,
            ends,
            at: at_t,
        })
    }

    fn binary(&mut self, b: &BinaryExpr, ts: &[i64]) -> Result<Res, Error> {
        let op = b.op.to_string();
        let ret_bool = b.return_bool();
        let lhs = self.eval(&b.lhs, ts)?;
        let rhs = self.eval(&b.rhs, ts)?;
        match (lhs, rhs) {
            (Res::Scalar(l), Res::Scalar(r)) => {
                let v = l
                    .iter()
                    .zip(&r)
                    .map(|(&a, &b)| {
                        let (v, keep) = functions::binop_float(&op, a, b);
                        if is_comparison(&op) {
                            if keep { 1.0 } else { 0.0 }
                        } else {
                            v
                        }
                    })
                    .collect();
                Ok(Res::Scalar(v))
            }
            (Res::Vector(l), Res::Scalar(r)) => Ok(Res::Vector(
                self.vector_scalar(&op, l, &r, false, ret_bool)?,
            )),
            (Res::Scalar(l), Res::Vector(r)) => {
                Ok(Res::Vector(self.vector_scalar(&op, r, &l, true, ret_bool)?))
            }
            (Res::Vector(l), Res::Vector(r)) => {
                let card = b
                    .modifier
                    .as_ref()
                    .map(|m| m.card.clone())
                    .unwrap_or(VectorMatchCardinality::OneToOne);
                let matching = b.modifier.as_ref().and_then(|m| m.matching.clone());
                let mut out = Vec::with_capacity(ts.len());
                let mut memo = MatchMemo::default();
                for (ls, rs) in l.into_iter().zip(r) {
                    self.check()?;
                    let v = match op.as_str() {
                        "and" => memo.set_op(ls, rs, &matching, SetOp::And),
                        "or" => memo.set_op(ls, rs, &matching, SetOp::Or),
                        "unless" => memo.set_op(ls, rs, &matching, SetOp::Unless),
                        _ => {
                            self.vector_vector(&mut memo, &op, ls, rs, &card, &matching, ret_bool)?
                        }
                    };
                    out.push(v);
                }
                Ok(Res::Vector(out))
            }
            (l, r) => Err(Error::BadData(format!(
                "binary expression must contain only scalar and instant vector types, got {} and {}",
                res_type(&l),
                res_type(&r)
            ))),
        }
    }

    fn vector_scalar(
        &mut self,
        op: &str,
        v: Vec<Vec<Smp>>,
        s: &[f64],
        scalar_left: bool,
        ret_bool: bool,
    ) -> Result<Vec<Vec<Smp>>, Error> {
        let cmp = is_comparison(op);
        let mut out = Vec::with_capacity(v.len());
        for (step, &sv) in v.into_iter().zip(s) {
            let mut o = Vec::with_capacity(step.len());
            for smp in step {
                let res = match &smp.v {
                    SampleValue::Float(f) => {
                        let (a, b) = if scalar_left { (sv, *f) } else { (*f, sv) };
                        let (val, keep) = functions::binop_float(op, a, b);
                        let val = if cmp { *f } else { val };
                        Some((SampleValue::Float(val), keep))
                    }
                    SampleValue::Histogram(h) => {
                        match crate::histogram::binop_scalar(op, h, sv, scalar_left) {
                            Some(r) => Some((r, true)),
                            None => {
                                self.infos.push(format!(
                                    "PromQL info: incompatible sample types encountered for binary operator \"{op}\": float and histogram"
                                ));
                                None
                            }
                        }
                    }
                };
                let Some((val, keep)) = res else { continue };
                if cmp {
                    if ret_bool {
                        o.push(Smp {
                            m: smp.m,
                            v: SampleValue::Float(if keep { 1.0 } else { 0.0 }),
                            drop_name: true,
                        });
                    } else if keep {
                        o.push(Smp {
                            m: smp.m,
                            v: val,
                            drop_name: smp.drop_name,
                        });
                    }
                } else {
                    o.push(Smp {
                        m: smp.m,
                        v: val,
                        drop_name: true,
                    });
                }
            }
            out.push(o);
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn vector_vector(
        &mut self,
        memo: &mut MatchMemo,
        op: &str,
        lhs: Vec<Smp>,
        rhs: Vec<Smp>,
        card: &VectorMatchCardinality,
        matching: &Option<LabelModifier>,
        ret_bool: bool,
    ) -> Result<Vec<Smp>, Error> {
        let cmp = is_comparison(op);
        let one_to_many = matches!(card, VectorMatchCardinality::OneToMany(_));
        let (lhs, rhs) = if one_to_many { (rhs, lhs) } else { (lhs, rhs) };
        let include: &[String] = match card {
            VectorMatchCardinality::ManyToOne(l) | VectorMatchCardinality::OneToMany(l) => {
                &l.labels
            }
            _ => &[],
        };
        // The "one" side, by signature.
        memo.right.next_round();
        for (i, s) in rhs.iter().enumerate() {
            let sig = memo.sig(&s.m, matching);
            if let Some(j) = memo.right.set(sig, i as u32) {
                let side = if one_to_many { "left" } else { "right" };
                return Err(Error::Execution(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    sig_string(memo.sigs.get(sig)),
                    format_labels(&rhs[i].m),
                    format_labels(&rhs[j as usize].m),
                )));
            }
        }
        let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
        memo.matched.next_round();
        memo.out_seen.next_round();
        let mut out = Vec::new();
        for ls in &lhs {
            let sig = memo.sig(&ls.m, matching);
            let Some(ri) = memo.right.get(sig) else {
                continue;
            };
            let rs = &rhs[ri as usize];
            let (l, r) = if one_to_many {
                (&rs.v, &ls.v)
            } else {
                (&ls.v, &rs.v)
            };
            let (val, keep) = match (l, r) {
                (SampleValue::Float(a), SampleValue::Float(b)) => {
                    let (v, k) = functions::binop_float(op, *a, *b);
                    (SampleValue::Float(if cmp { *a } else { v }), k)
                }
                _ => match crate::histogram::binop_values(op, l, r) {
                    Some(x) => x,
                    None => {
                        self.infos.push(format!(
                            "PromQL info: incompatible sample types encountered for binary operator \"{op}\""
                        ));
                        continue;
                    }
                },
            };
            let drop = !cmp || ret_bool;
            if one_to_one && memo.matched.set(sig, 0).is_some() {
                return Err(Error::Execution(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
                ));
            }
            if cmp && !ret_bool && !keep {
                continue;
            }
            let drop_out = drop || ls.drop_name;
            let pair = memo
                .pairs
                .entry((Arc::as_ptr(&ls.m) as usize, Arc::as_ptr(&rs.m) as usize))
                .or_insert_with(|| {
                    let m = result_metric(&ls.m, &rs.m, card, matching, include);
                    (Arc::new(m), [None, None])
                });
            let metric = pair.0.clone();
            if !one_to_one {
                let key = *pair.1[usize::from(drop_out)].get_or_insert_with(|| {
                    memo.out_keys.intern(if drop_out {
                        drop_name(&metric)
                    } else {
                        (*metric).clone()
                    })
                });
                if memo.out_seen.set(key, 0).is_some() {
                    return Err(Error::Execution(
                        "multiple matches for labels: grouping labels must ensure unique matches"
                            .into(),
                    ));
                }
            }
            let v = if cmp && ret_bool {
                SampleValue::Float(if keep { 1.0 } else { 0.0 })
            } else {
                val
            };
            out.push(Smp {
                m: metric,
                v,
                drop_name: drop_out,
            });
        }
        Ok(out)
    }

    fn aggregate(&mut self, a: &AggregateExpr, ts: &[i64]) -> Result<Res, Error> {
        let op = a.op.to_string();
        let param = match &a.param {
            None => None,
            Some(p) => Some(self.eval(p, ts)?),
        };
        let streamable = AccOp::of(&op);
        if let Some(acc_op) = streamable
            && let Some(out) = self.fused_aggregate(acc_op, a, ts)?
        {
            return Ok(Res::Vector(out));
        }
        let input = self.eval_vector(&a.expr, ts)?;
        // A series' group is worked out once: its labels' `Arc` → group id → the group's
        // labels, shared by every step's output.
        let mut group_of: ByLabels<u32> = ByLabels::default();
        let mut keys: Interner<Arc<Labels>> = Interner::default();
        let mut slot = Stamps::default();
        // `streamable` ops reduce a float group as its samples come, without collecting them.
        let mut out = Vec::with_capacity(ts.len());
        for (i, step) in input.into_iter().enumerate() {
            self.check()?;
            let p = match &param {
                Some(Res::Scalar(v)) => Some(AggParam::Num(v[i])),
                Some(Res::Str(s)) => Some(AggParam::Str(s.clone())),
                None => None,
                Some(_) => {
                    return Err(Error::BadData(format!(
                        "invalid parameter for aggregation {op}"
                    )));
                }
            };
            slot.next_round();
            group_of.next_round();
            if let Some(acc_op) = streamable
                && step.iter().all(|s| matches!(s.v, SampleValue::Float(_)))
            {
                let mut accs: Vec<FloatAcc> = Vec::new();
                for (pos, s) in step.into_iter().enumerate() {
                    let g = group_of.get_at(pos, &s.m, |m| {
                        keys.intern(Arc::new(functions::group_key(m, &a.modifier)))
                    });
                    let at = match slot.get(g) {
                        Some(at) => at as usize,
                        None => {
                            slot.set(g, accs.len() as u32);
                            accs.push(FloatAcc::new(g));
                            accs.len() - 1
                        }
                    };
                    let SampleValue::Float(v) = s.v else {
                        unreachable!("checked: floats only")
                    };
                    accs[at].add(acc_op, v, s.drop_name);
                }
                out.push(
                    accs.into_iter()
                        .map(|acc| {
                            let m = keys.get(acc.group).clone();
                            Smp {
                                drop_name: acc.any_drop && m.get(METRIC_NAME).is_some(),
                                v: SampleValue::Float(acc.finish(acc_op)),
                                m,
                            }
                        })
                        .collect(),
                );
                continue;
            }
            let mut groups: Vec<(Arc<Labels>, Vec<Smp>)> = Vec::new();
            for (pos, s) in step.into_iter().enumerate() {
                let g = group_of.get_at(pos, &s.m, |m| {
                    keys.intern(Arc::new(functions::group_key(m, &a.modifier)))
                });
                let at = match slot.get(g) {
                    Some(at) => at as usize,
                    None => {
                        slot.set(g, groups.len() as u32);
                        groups.push((keys.get(g).clone(), Vec::new()));
                        groups.len() - 1
                    }
                };
                groups[at].1.push(s);
            }
            out.push(functions::aggregate_step(self, &op, p, groups)?);
        }
        Ok(Res::Vector(out))
    }

    /// `sum`, `avg`, `count`, `group`, `min` or `max` straight over a selector or a range
    /// function, without building the argument's per-step vectors: each series' samples go
    /// into its group's accumulator for that step as they are produced. `None` when the
    /// argument is of another kind, holds histograms, or has too many groups for this to
    /// pay; the caller then evaluates the ordinary way (the budget charged here is given
    /// back first).
    fn fused_aggregate(
        &mut self,
        op: AccOp,
        a: &AggregateExpr,
        ts: &[i64],
    ) -> Result<Option<Vec<Vec<Smp>>>, Error> {
        let mut inner = &*a.expr;
        while let Expr::Paren(p) = inner {
            inner = &p.expr;
        }
        let mut sink = AggSink::new(op, &a.modifier, ts.len());
        let before = self.budget.used();
        match inner {
            Expr::VectorSelector(vs) => self.vector_selector_into(vs, ts, false, &mut sink)?,
            Expr::Call(c) if functions::is_range_function(c.func.name) => {
                functions::range_function_into(self, c, ts, &mut sink)?
            }
            _ => return Ok(None),
        }
        if sink.poisoned {
            self.budget
                .release(self.budget.used().saturating_sub(before));
            return Ok(None);
        }
        Ok(Some(sink.finish()))
    }

    fn call(&mut self, c: &Call, ts: &[i64]) -> Result<Res, Error> {
        functions::call(self, c, ts)
    }

    /// A range query whose expression is a selector or a range function: its result
    /// series straight from the sink, without per-step vectors regrouped into series
    /// (for a per-series `rate` panel that regrouping was a third of the query). `None`
    /// when the expression is anything else, or when two series end up with the same
    /// labels (the name dropped): the step-by-step path then decides, as Prometheus does,
    /// between merging them and the duplicate-labelset error, and this attempt's samples,
    /// warnings and infos are given back.
    fn series_direct(&mut self, expr: &Expr, ts: &[i64]) -> Result<Option<Vec<Series>>, Error> {
        let mut inner = expr;
        while let Expr::Paren(p) = inner {
            inner = &p.expr;
        }
        let (used, warnings, infos) = (self.budget.used(), self.warnings.len(), self.infos.len());
        let mut sink = SeriesSink::new(ts);
        match inner {
            Expr::VectorSelector(vs) => self.vector_selector_into(vs, ts, false, &mut sink)?,
            Expr::Call(c) if functions::is_range_function(c.func.name) => {
                functions::range_function_into(self, c, ts, &mut sink)?
            }
            _ => return Ok(None),
        }
        let series = sink.finish();
        if series.is_none() {
            self.budget.release(self.budget.used().saturating_sub(used));
            self.warnings.truncate(warnings);
            self.infos.truncate(infos);
        }
        Ok(series)
    }
}

/// Receives a selector's or range function's result one series at a time: `begin` names
/// the series (and how many to expect in all), `push` gives its value at a step.
pub(crate) trait Sink {
    fn begin(&mut self, m: &Arc<Labels>, drop_name: bool, hint: usize);
    fn push(&mut self, step: usize, v: SampleValue);
}

/// The ordinary result: one vector per step.
pub(crate) struct StepVecs {
    steps: usize,
    out: Vec<Vec<Smp>>,
    m: Arc<Labels>,
    drop_name: bool,
}

impl StepVecs {
    pub fn new(steps: usize) -> Self {
        StepVecs {
            steps,
            out: Vec::new(),
            m: Arc::default(),
            drop_name: false,
        }
    }

    pub fn finish(mut self) -> Vec<Vec<Smp>> {
        if self.out.is_empty() {
            self.out = vec![Vec::new(); self.steps];
        }
        self.out
    }
}

impl Sink for StepVecs {
    fn begin(&mut self, m: &Arc<Labels>, drop_name: bool, hint: usize) {
        if self.out.is_empty() {
            self.out = functions::step_vectors(self.steps, hint);
        }
        self.m = m.clone();
        self.drop_name = drop_name;
    }

    fn push(&mut self, step: usize, v: SampleValue) {
        self.out[step].push(Smp {
            m: self.m.clone(),
            v,
            drop_name: self.drop_name,
        });
    }
}

/// A range query's result series, filled one series at a time (see
/// `Evaluator::series_direct`).
struct SeriesSink<'t> {
    ts: &'t [i64],
    out: Vec<Series>,
}

impl<'t> SeriesSink<'t> {
    fn new(ts: &'t [i64]) -> Self {
        SeriesSink {
            ts,
            out: Vec::new(),
        }
    }

    /// The series with samples, sorted by labels; `None` if two have the same labels.
    fn finish(self) -> Option<Vec<Series>> {
        let mut out = self.out;
        out.retain(|s| !s.floats.is_empty() || !s.histograms.is_empty());
        out.sort_by(|a, b| a.metric.cmp(&b.metric));
        if out.windows(2).any(|w| w[0].metric == w[1].metric) {
            return None;
        }
        Some(out)
    }
}

impl Sink for SeriesSink<'_> {
    fn begin(&mut self, m: &Arc<Labels>, drop_name: bool, hint: usize) {
        if self.out.is_empty() {
            self.out.reserve(hint);
        }
        self.out.push(Series {
            metric: if drop_name {
                self::drop_name(m)
            } else {
                (**m).clone()
            },
            ..Series::default()
        });
    }

    fn push(&mut self, step: usize, v: SampleValue) {
        let Some(s) = self.out.last_mut() else {
            return;
        };
        let t = self.ts[step];
        match v {
            SampleValue::Float(v) => s.floats.push(FloatSample { t, v }),
            SampleValue::Histogram(h) => s.histograms.push((t, h)),
        }
    }
}

/// Most accumulators (groups × steps) a fused aggregation keeps before giving up.
const FUSED_MAX_ACCS: usize = 1 << 20;

/// A fused aggregation (see `Evaluator::fused_aggregate`): per group and step an
/// accumulator, and per step the groups in order of first appearance, so the result is
/// the one the step-by-step path gives, in the same order, with the same arithmetic.
struct AggSink<'m> {
    op: AccOp,
    modifier: &'m Option<LabelModifier>,
    steps: usize,
    /// Group ids by [`functions::group_key_bytes`], and each group's labels.
    by_key: std::collections::HashMap<Box<[u8]>, u32>,
    groups: Vec<Arc<Labels>>,
    scratch: Vec<u8>,
    /// By group, then step.
    accs: Vec<Option<FloatAcc>>,
    order: Vec<Vec<u32>>,
    group: u32,
    drop_name: bool,
    /// A histogram sample, or too many groups: the caller falls back.
    poisoned: bool,
}

impl<'m> AggSink<'m> {
    fn new(op: AccOp, modifier: &'m Option<LabelModifier>, steps: usize) -> Self {
        AggSink {
            op,
            modifier,
            steps,
            by_key: Default::default(),
            groups: Vec::new(),
            scratch: Vec::new(),
            accs: Vec::new(),
            order: vec![Vec::new(); steps],
            group: 0,
            drop_name: false,
            poisoned: false,
        }
    }

    fn finish(self) -> Vec<Vec<Smp>> {
        let AggSink {
            op,
            steps,
            groups,
            accs,
            order,
            ..
        } = self;
        order
            .into_iter()
            .enumerate()
            .map(|(i, step_groups)| {
                step_groups
                    .into_iter()
                    .map(|g| {
                        let acc = accs[g as usize * steps + i]
                            .as_ref()
                            .expect("every listed group has an accumulator");
                        let m = groups[g as usize].clone();
                        Smp {
                            drop_name: acc.any_drop && m.get(METRIC_NAME).is_some(),
                            v: SampleValue::Float(acc.finish(op)),
                            m,
                        }
                    })
                    .collect()
            })
            .collect()
    }
}

impl Sink for AggSink<'_> {
    fn begin(&mut self, m: &Arc<Labels>, drop_name: bool, _hint: usize) {
        if self.poisoned {
            return;
        }
        functions::group_key_bytes(m, self.modifier, &mut self.scratch);
        let g = match self.by_key.get(self.scratch.as_slice()) {
            Some(&g) => g,
            None => {
                let g = self.groups.len() as u32;
                self.groups
                    .push(Arc::new(functions::group_key(m, self.modifier)));
                self.by_key.insert(self.scratch.as_slice().into(), g);
                g
            }
        };
        let need = (g as usize + 1) * self.steps;
        if need > self.accs.len() {
            if need > FUSED_MAX_ACCS {
                self.poisoned = true;
                return;
            }
            self.accs.resize_with(need, || None);
        }
        self.group = g;
        self.drop_name = drop_name;
    }

    fn push(&mut self, step: usize, v: SampleValue) {
        if self.poisoned {
            return;
        }
        let SampleValue::Float(f) = v else {
            self.poisoned = true;
            return;
        };
        let slot = &mut self.accs[self.group as usize * self.steps + step];
        let acc = slot.get_or_insert_with(|| {
            self.order[step].push(self.group);
            FloatAcc::new(self.group)
        });
        acc.add(self.op, f, self.drop_name);
    }
}

/// The aggregations [`FloatAcc`] reduces, chosen once per query rather than by name per
/// sample.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum AccOp {
    Sum,
    Avg,
    Count,
    Group,
    Min,
    Max,
}

impl AccOp {
    /// The accumulator of an aggregation that reduces its samples as they come (`sum`,
    /// `avg`, `count`, `group`, `min`, `max`), if it is one.
    fn of(op: &str) -> Option<AccOp> {
        Some(match op {
            "sum" => AccOp::Sum,
            "avg" => AccOp::Avg,
            "count" => AccOp::Count,
            "group" => AccOp::Group,
            "min" => AccOp::Min,
            "max" => AccOp::Max,
            _ => return None,
        })
    }
}

/// The running state of one group of a float-only `sum`, `avg`, `count`, `group`, `min`
/// or `max` step: the same arithmetic, in the same order, as the collecting path in
/// `functions::aggregate_step` (Kahan sums; `avg` switching to an incremental mean when
/// the sum overflows, and non-finite inputs deciding the mean on their own).
struct FloatAcc {
    group: u32,
    n: usize,
    sum: f64,
    comp: f64,
    incremental: bool,
    mean: f64,
    mean_comp: f64,
    nan: bool,
    pos_inf: bool,
    neg_inf: bool,
    extreme: f64,
    any_drop: bool,
}

impl FloatAcc {
    fn new(group: u32) -> Self {
        FloatAcc {
            group,
            n: 0,
            sum: 0.0,
            comp: 0.0,
            incremental: false,
            mean: 0.0,
            mean_comp: 0.0,
            nan: false,
            pos_inf: false,
            neg_inf: false,
            extreme: 0.0,
            any_drop: false,
        }
    }

    fn add(&mut self, op: AccOp, v: f64, drop_name: bool) {
        self.any_drop |= drop_name;
        let i = self.n;
        self.n += 1;
        match op {
            AccOp::Sum => functions::kahan_add(&mut self.sum, &mut self.comp, v),
            AccOp::Min | AccOp::Max => {
                let better = if op == AccOp::Max {
                    self.extreme < v
                } else {
                    self.extreme > v
                };
                if i == 0 || better || self.extreme.is_nan() {
                    self.extreme = v;
                }
            }
            AccOp::Avg => {
                self.nan |= v.is_nan();
                self.pos_inf |= v == f64::INFINITY;
                self.neg_inf |= v == f64::NEG_INFINITY;
                if !self.incremental {
                    let (s, c) = functions::kahan_inc(v, self.sum, self.comp);
                    if !s.is_infinite() {
                        (self.sum, self.comp) = (s, c);
                        return;
                    }
                    self.incremental = true;
                    self.mean = self.sum / i as f64;
                    self.mean_comp = self.comp / i as f64;
                }
                let count = (i + 1) as f64;
                if self.mean.is_infinite() {
                    if v.is_infinite() && (self.mean > 0.0) == (v > 0.0) {
                        return;
                    }
                    if !v.is_infinite() && !v.is_nan() {
                        return;
                    }
                }
                let q = (count - 1.0) / count;
                (self.mean, self.mean_comp) =
                    functions::kahan_inc(v / count, q * self.mean, q * self.mean_comp);
            }
            AccOp::Count | AccOp::Group => {}
        }
    }

    fn finish(&self, op: AccOp) -> f64 {
        match op {
            AccOp::Sum if self.sum.is_infinite() => self.sum,
            AccOp::Sum => self.sum + self.comp,
            AccOp::Count => self.n as f64,
            AccOp::Group => 1.0,
            AccOp::Min | AccOp::Max => self.extreme,
            AccOp::Avg => {
                if self.nan || (self.pos_inf && self.neg_inf) {
                    f64::NAN
                } else if self.pos_inf {
                    f64::INFINITY
                } else if self.neg_inf {
                    f64::NEG_INFINITY
                } else if self.incremental {
                    self.mean + self.mean_comp
                } else {
                    let n = self.n as f64;
                    self.sum / n + self.comp / n
                }
            }
        }
    }
}

pub(crate) enum AggParam {
    Num(f64),
    Str(String),
}

pub(crate) fn res_type(r: &Res) -> &'static str {
    match r {
        Res::Scalar(_) => "scalar",
        Res::Str(_) => "string",
        Res::Vector(_) => "instant vector",
        Res::Range(_) => "range vector",
    }
}

pub(crate) fn is_comparison(op: &str) -> bool {
    matches!(op, "==" | "!=" | ">" | "<" | ">=" | "<=")
}

/// The labels two samples must agree on to match.
fn signature(m: &Labels, matching: &Option<LabelModifier>) -> Vec<(String, String)> {
    match matching {
        Some(LabelModifier::Include(on)) => {
            let mut v: Vec<(String, String)> = on
                .labels
                .iter()
                .filter_map(|n| m.get(n).map(|v| (n.clone(), v.to_string())))
                .collect();
            v.sort();
            v.dedup();
            v
        }
        Some(LabelModifier::Exclude(ign)) => m
            .iter()
            .filter(|l| l.name != METRIC_NAME && !ign.labels.contains(&l.name))
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect(),
        None => m
            .iter()
            .filter(|l| l.name != METRIC_NAME)
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect(),
    }
}

fn sig_string(sig: &[(String, String)]) -> String {
    let l = Labels::from_pairs(sig.iter().map(|(a, b)| (a.clone(), b.clone())));
    format_labels(&l)
}

fn result_metric(
    l: &Labels,
    r: &Labels,
    card: &VectorMatchCardinality,
    matching: &Option<LabelModifier>,
    include: &[String],
) -> Labels {
    let mut b: LabelsBuilder = l.builder();
    if matches!(card, VectorMatchCardinality::OneToOne) {
        match matching {
            Some(LabelModifier::Include(on)) => {
                b.retain(|n| on.labels.iter().any(|x| x == n) || n == METRIC_NAME);
            }
            Some(LabelModifier::Exclude(ign)) => {
                for n in &ign.labels {
                    b.del(n);
                }
            }
            None => {}
        }
    }
    for n in include {
        match r.get(n) {
            Some(v) => {
                b.set(n.clone(), v);
            }
            None => {
                b.del(n);
            }
        }
    }
    b.build()
}

/// Which set operator a `MatchMemo::set_op` call applies.
#[derive(Clone, Copy)]
enum SetOp {
    And,
    Or,
    Unless,
}

/// A matched pair's result labels, and the ids of its output key with the name kept /
/// dropped (filled in when first needed).
type PairResult = (Arc<Labels>, [Option<u32>; 2]);

/// What a binary operator between two vectors works out once per series (or pair of
/// series) and reuses at every step: matching signatures, result label sets, and the
/// per-step bookkeeping of which signatures were seen.
#[derive(Default)]
struct MatchMemo {
    sig_of: ByLabels<u32>,
    sigs: Interner<Vec<(String, String)>>,
    /// (left labels, right labels) → result labels, and the id of its output key with the
    /// name kept / dropped (for the "unique matches" check).
    pairs: AddrHashMap<(usize, usize), PairResult>,
    out_keys: Interner<Labels>,
    right: Stamps,
    matched: Stamps,
    out_seen: Stamps,
}

impl MatchMemo {
    fn sig(&mut self, m: &Arc<Labels>, matching: &Option<LabelModifier>) -> u32 {
        let sigs = &mut self.sigs;
        *self
            .sig_of
            .get_or_insert_with(m, |m| sigs.intern(signature(m, matching)))
    }

    fn set_op(
        &mut self,
        l: Vec<Smp>,
        r: Vec<Smp>,
        matching: &Option<LabelModifier>,
        op: SetOp,
    ) -> Vec<Smp> {
        // `or`: the left side, then right-side samples whose signature the left lacks;
        // `and` / `unless`: left-side samples whose signature the right has / lacks.
        self.right.next_round();
        let marked = if matches!(op, SetOp::Or) { &l } else { &r };
        let mut sigs = Vec::with_capacity(marked.len());
        for s in marked {
            sigs.push(self.sig(&s.m, matching));
        }
        for sig in sigs {
            self.right.set(sig, 0);
        }
        let mut seen = |s: &Smp| {
            let sig = self.sig(&s.m, matching);
            self.right.get(sig).is_some()
        };
        match op {
            SetOp::Or => {
                let extra: Vec<Smp> = r.into_iter().filter(|s| !seen(s)).collect();
                let mut out = l;
                out.extend(extra);
                out
            }
            SetOp::And => l.into_iter().filter(|s| seen(s)).collect(),
            SetOp::Unless => l.into_iter().filter(|s| !seen(s)).collect(),
        }
    }
}

/// A histogram helper for callers that need an owned float histogram.
pub(crate) fn hist(v: &SampleValue) -> Option<&FloatHistogram> {
    match v {
        SampleValue::Histogram(h) => Some(h),
        SampleValue::Float(_) => None,
    }
}
