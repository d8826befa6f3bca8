//! PromQL's functions, aggregations and float operator semantics, as Prometheus defines
//! them (`promql/functions.go`, `promql/engine.go`): extrapolated `rate`, Kahan-compensated
//! sums, Go's `math.Max`/`math.Min` NaN rules, bucket quantiles.

use crate::eval::{
    AggParam, Evaluator, Points, RSeries, RangeData, Res, Sink, Smp, StepVecs, drop_name,
    dup_labelset, hist, res_type,
};
use crate::histogram as h;
use crate::{Error, SampleValue};
use model::civil::civil_from_days as civil;
use model::{Labels, METRIC_NAME, Sample as FloatSample};
use promql_parser::parser::{Call, Expr, LabelModifier};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Go's `math.Max`: NaN wins.
pub(crate) fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

pub(crate) fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Applies a float operator; for comparisons the bool says whether the pair passes.
pub(crate) fn binop_float(op: &str, a: f64, b: f64) -> (f64, bool) {
    match op {
        "+" => (a + b, true),
        "-" => (a - b, true),
        "*" => (a * b, true),
        "/" => (a / b, true),
        "%" => (a % b, true),
        "^" => (a.powf(b), true),
        "atan2" => (a.atan2(b), true),
        "==" => (a, a == b),
        "!=" => (a, a != b),
        ">" => (a, a > b),
        "<" => (a, a < b),
        ">=" => (a, a >= b),
        "<=" => (a, a <= b),
        _ => (f64::NAN, false),
    }
}

/// Prometheus' `kahanSumInc`: `(sum + inc, compensation)`.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let (mut sum, mut c) = (sum, c);
    kahan_add(&mut sum, &mut c, inc);
    (sum, c)
}

/// [`kahan_inc`] in place. Hot loops use this form: the sum and its compensation stay two
/// separate dependency chains (through a returned tuple the compiler packed them into one
/// vector register, which serialised every step on both; `mean` over 20-sample windows
/// was half of an `avg_over_time` query).
#[inline(always)]
pub(crate) fn kahan_add(sum: &mut f64, c: &mut f64, inc: f64) {
    let t = *sum + inc;
    if t.is_infinite() {
        *c = 0.0;
    } else if sum.abs() >= inc.abs() {
        *c += (*sum - t) + inc;
    } else {
        *c += (inc - t) + *sum;
    }
    *sum = t;
}

/// A Kahan sum (Prometheus' `kahanSumInc` steps).
fn kahan_sum(vals: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut c) = (0.0f64, 0.0f64);
    for v in vals {
        kahan_add(&mut s, &mut c, v);
    }
    if s.is_infinite() { s } else { s + c }
}

/// Mean as Prometheus computes it: a Kahan sum, or an incremental mean if the sum overflows;
/// non-finite inputs decide the result on their own. One pass: the flags for NaN and the
/// infinities are gathered beside the sums, which are then ignored if a flag decides.
fn mean(vals: &[f64]) -> f64 {
    let mut flags = NonFinite::default();
    let (mut s, mut c) = (0.0f64, 0.0f64);
    for (i, &v) in vals.iter().enumerate() {
        if !v.is_finite() {
            flags.see(v);
            continue;
        }
        if (s + v).is_infinite() {
            return mean_after_overflow(vals, i, s, c, flags);
        }
        kahan_add(&mut s, &mut c, v);
    }
    let n = vals.len() as f64;
    // `black_box` keeps the compiler from pairing the two divisions in one vector register,
    // which made it carry `s` and `c` packed through the loop and serialised their chains
    // again (the value is the same either way).
    flags
        .decide()
        .unwrap_or_else(|| s / n + std::hint::black_box(c) / n)
}

/// NaN and infinities met by [`mean`]: when any is, it alone decides the mean.
#[derive(Default, Clone, Copy)]
struct NonFinite {
    nan: bool,
    pos_inf: bool,
    neg_inf: bool,
}

impl NonFinite {
    fn see(&mut self, v: f64) {
        self.nan |= v.is_nan();
        self.pos_inf |= v == f64::INFINITY;
        self.neg_inf |= v == f64::NEG_INFINITY;
    }

    fn decide(self) -> Option<f64> {
        if self.nan || (self.pos_inf && self.neg_inf) {
            Some(f64::NAN)
        } else if self.pos_inf {
            Some(f64::INFINITY)
        } else if self.neg_inf {
            Some(f64::NEG_INFINITY)
        } else {
            None
        }
    }
}

/// [`mean`] from the value at `i` on, once adding it would overflow the Kahan sum `s, c`
/// of the finite values before it: Prometheus' incremental mean. Out of line, so that its
/// divisions do not shape the common loop's code.
#[cold]
#[inline(never)]
fn mean_after_overflow(vals: &[f64], i: usize, s: f64, c: f64, mut flags: NonFinite) -> f64 {
    let (mut m, mut mc) = (s / i as f64, c / i as f64);
    for (k, &v) in vals.iter().enumerate().skip(i) {
        if !v.is_finite() {
            flags.see(v);
            continue;
        }
        let count = (k + 1) as f64;
        if m.is_infinite() {
            continue;
        }
        let q = (count - 1.0) / count;
        (m, mc) = kahan_inc(v / count, q * m, q * mc);
    }
    flags.decide().unwrap_or(m + mc)
}

fn variance(vals: &[f64]) -> f64 {
    let (mut count, mut mean, mut cmean, mut aux, mut caux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &v in vals {
        count += 1.0;
        let delta = v - (mean + cmean);
        (mean, cmean) = kahan_inc(delta / count, mean, cmean);
        (aux, caux) = kahan_inc(delta * (v - (mean + cmean)), aux, caux);
    }
    (aux + caux) / count
}

/// Prometheus' `quantile` over a set of floats.
pub(crate) fn quantile(q: f64, vals: &mut [f64]) -> f64 {
    if vals.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    vals.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = vals.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let w = rank - rank.floor();
    vals[lower as usize] * (1.0 - w) + vals[upper as usize] * w
}

fn format_go_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f == f64::INFINITY {
        "+Inf".into()
    } else if f == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{f}")
    }
}

/// The label set of the group a sample with labels `m` falls into.
pub(crate) fn group_key(m: &Labels, modifier: &Option<LabelModifier>) -> Labels {
    // With delayed name removal, `by (__name__)` still sees the name of a sample whose
    // name is due to be dropped; the group inherits the flag (see `aggregate_step`).
    let keep: Vec<model::Label> = match modifier {
        Some(LabelModifier::Include(by)) => m
            .iter()
            .filter(|l| by.labels.contains(&l.name))
            .cloned()
            .collect(),
        Some(LabelModifier::Exclude(without)) => m
            .iter()
            .filter(|l| l.name != METRIC_NAME && !without.labels.contains(&l.name))
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    // A subset of a sorted, duplicate-free label set is sorted and duplicate-free.
    Labels::from_sorted_unchecked(keep)
}

/// The label pairs of `m`'s group ([`group_key`]) written as `name 0xff value 0xff …`
/// into `out` (0xff never occurs in UTF-8, so equal bytes mean equal groups): a lookup key
/// that costs no allocation.
pub(crate) fn group_key_bytes(m: &Labels, modifier: &Option<LabelModifier>, out: &mut Vec<u8>) {
    out.clear();
    let mut put = |l: &model::Label| {
        out.extend_from_slice(l.name.as_bytes());
        out.push(0xff);
        out.extend_from_slice(l.value.as_bytes());
        out.push(0xff);
    };
    match modifier {
        Some(LabelModifier::Include(by)) => m
            .iter()
            .filter(|l| by.labels.contains(&l.name))
            .for_each(&mut put),
        Some(LabelModifier::Exclude(without)) => m
            .iter()
            .filter(|l| l.name != METRIC_NAME && !without.labels.contains(&l.name))
            .for_each(&mut put),
        None => {}
    }
}

/// Aggregates one step. `groups` holds each group's label set and members, in order of
/// first appearance in the step (the caller groups, so that a series' group is worked out
/// once per query, not once per step).
pub(crate) fn aggregate_step(
    ev: &mut Evaluator<'_>,
    op: &str,
    param: Option<AggParam>,
    groups: Vec<(Arc<Labels>, Vec<Smp>)>,
) -> Result<Vec<Smp>, Error> {
    let mut out = Vec::new();
    let num = |p: &Option<AggParam>| match p {
        Some(AggParam::Num(n)) => Ok(*n),
        _ => Err(Error::BadData(format!(
            "aggregation {op} needs a number parameter"
        ))),
    };
    for (m, members) in groups {
        let group_drop = m.get(METRIC_NAME).is_some() && members.iter().any(|s| s.drop_name);
        let floats: Vec<f64> = members.iter().filter_map(|s| s.float()).collect();
        let hists: Vec<&model::FloatHistogram> =
            members.iter().filter_map(|s| hist(&s.v)).collect();
        let mixed = !floats.is_empty() && !hists.is_empty();
        let one = |v: f64| Smp {
            m: m.clone(),
            v: SampleValue::Float(v),
            drop_name: group_drop,
        };
        match op {
            "sum" | "avg" => {
                if mixed {
                    ev.warnings.push("PromQL warning: encountered a mix of histograms and floats for aggregation".into());
                    continue;
                }
                if !hists.is_empty() {
                    let r = if op == "sum" {
                        h::sum(&hists)
                    } else {
                        h::avg(&hists)
                    };
                    match r {
                        Some(x) => out.push(Smp {
                            m: m.clone(),
                            v: SampleValue::Histogram(Arc::new(x)),
                            drop_name: false,
                        }),
                        None => ev.warnings.push(
                            "PromQL warning: vector contains histograms with incompatible schemas"
                                .into(),
                        ),
                    }
                    continue;
                }
                let v = if op == "sum" {
                    kahan_sum(floats.iter().copied())
                } else {
                    mean(&floats)
                };
                out.push(one(v));
            }
            "count" => out.push(one(members.len() as f64)),
            "group" => out.push(one(1.0)),
            "min" | "max" => {
                if floats.is_empty() {
                    continue;
                }
                let mut acc = floats[0];
                for &f in &floats[1..] {
                    let better = if op == "max" { acc < f } else { acc > f };
                    if better || acc.is_nan() {
                        acc = f;
                    }
                }
                out.push(one(acc));
            }
            "stddev" | "stdvar" => {
                if floats.is_empty() {
                    continue;
                }
                let v = variance(&floats);
                out.push(one(if op == "stddev" { v.sqrt() } else { v }));
            }
            "quantile" => {
                if floats.is_empty() {
                    continue;
                }
                let mut f = floats.clone();
                out.push(one(quantile(num(&param)?, &mut f)));
            }
            "count_values" => {
                let Some(AggParam::Str(label)) = &param else {
                    return Err(Error::BadData("count_values needs a label name".into()));
                };
                if !model::is_valid_label_name(label) {
                    return Err(Error::Execution(format!("invalid label name {label:?}")));
                }
                let mut counts: Vec<(String, f64)> = Vec::new();
                for s in &members {
                    let k = match &s.v {
                        SampleValue::Float(f) => format_go_float(*f),
                        SampleValue::Histogram(x) => h::to_string(x),
                    };
                    match counts.iter_mut().find(|c| c.0 == k) {
                        Some(c) => c.1 += 1.0,
                        None => counts.push((k, 1.0)),
                    }
                }
                for (k, c) in counts {
                    let mut b = m.builder();
                    b.set(label.clone(), k);
                    out.push(Smp {
                        m: Arc::new(b.build()),
                        v: SampleValue::Float(c),
                        drop_name: false,
                    });
                }
            }
            "topk" | "bottomk" | "limitk" => {
                let k = num(&param)?;
                if k.is_nan() {
                    return Err(Error::Execution(format!("Parameter value is NaN for {op}")));
                }
                if k < 1.0 {
                    continue;
                }
                let k = if k > 9e18 { usize::MAX } else { k as usize };
                let mut ms: Vec<Smp> = members;
                if op == "limitk" {
                    ms.truncate(k);
                } else {
                    ms.retain(|s| s.float().is_some());
                    ms = select_k(ms, k, op == "topk");
                }
                out.extend(ms);
            }
            "limit_ratio" => {
                let r = num(&param)?;
                if r.is_nan() {
                    return Err(Error::Execution("Ratio value is NaN".into()));
                }
                let r = r.clamp(-1.0, 1.0);
                for s in members {
                    let x = ratio_hash(&s.m);
                    if (r >= 0.0 && x < r) || (r < 0.0 && x >= 1.0 + r) {
                        out.push(s);
                    }
                }
            }
            _ => return Err(Error::BadData(format!("unknown aggregation {op}"))),
        }
    }
    Ok(out)
}

/// The `k` largest (`top`) or smallest float samples, chosen exactly as
/// Prometheus does: a binary heap of the first `k` (Go's `container/heap`
/// with NaN below everything), each later sample replacing the heap's root
/// when strictly better. Which of several equal values survive depends on
/// the heap's layout, so only this procedure gives Prometheus' answer
/// when values tie. The result is best first, like Prometheus' output.
fn select_k(ms: Vec<Smp>, k: usize, top: bool) -> Vec<Smp> {
    let v = |s: &Smp| s.float().unwrap_or(f64::NAN);
    // Go's `Less(i, j)` of vectorByValueHeap / vectorByReverseValueHeap.
    let less = |a: f64, b: f64| a.is_nan() || if top { a < b } else { a > b };
    let mut h: Vec<Smp> = Vec::with_capacity(k.min(ms.len()));
    for s in ms {
        if h.len() < k {
            h.push(s);
            // up
            let mut j = h.len() - 1;
            while j > 0 {
                let i = (j - 1) / 2;
                if !less(v(&h[j]), v(&h[i])) {
                    break;
                }
                h.swap(i, j);
                j = i;
            }
            continue;
        }
        let (root, x) = (v(&h[0]), v(&s));
        let better = if top { root < x } else { root > x };
        if better || (root.is_nan() && !x.is_nan()) {
            h[0] = s;
            // down from the root (Fix(0); `up` from the root is a no-op)
            let n = h.len();
            let mut i = 0;
            loop {
                let j1 = 2 * i + 1;
                if j1 >= n {
                    break;
                }
                let mut j = j1;
                if j1 + 1 < n && less(v(&h[j1 + 1]), v(&h[j1])) {
                    j = j1 + 1;
                }
                if !less(v(&h[j]), v(&h[i])) {
                    break;
                }
                h.swap(i, j);
                i = j;
            }
        }
    }
    // Best first (Prometheus sorts the heap in reverse); NaN last.
    h.sort_by(|a, b| {
        let (x, y) = (v(a), v(b));
        let o = x.is_nan().cmp(&y.is_nan());
        o.then_with(|| {
            let o = x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
            if top { o.reverse() } else { o }
        })
    });
    h
}

/// A deterministic value in [0, 1) per label set (Prometheus uses the label hash).
fn ratio_hash(l: &Labels) -> f64 {
    let mut b = l.builder();
    b.del(METRIC_NAME);
    let h = b.build().stable_hash();
    (h as f64) / (u64::MAX as f64 + 1.0)
}

fn arg(c: &Call, i: usize) -> Option<&Expr> {
    c.args.args.get(i).map(|b| b.as_ref())
}

fn req(c: &Call, i: usize) -> Result<&Expr, Error> {
    arg(c, i).ok_or_else(|| {
        Error::BadData(format!(
            "function {}() is not supported by this engine with {} arguments",
            c.func.name,
            c.args.args.len()
        ))
    })
}

fn scalar_arg(
    ev: &mut Evaluator<'_>,
    c: &Call,
    i: usize,
    ts: &[i64],
    default: f64,
) -> Result<Vec<f64>, Error> {
    match arg(c, i) {
        None => Ok(vec![default; ts.len()]),
        Some(e) => ev.eval_scalar(e, ts),
    }
}

fn string_arg(c: &Call, i: usize) -> Result<String, Error> {
    let mut e = arg(c, i);
    while let Some(Expr::Paren(p)) = e {
        e = Some(&p.expr);
    }
    match e {
        Some(Expr::StringLiteral(s)) => Ok(s.val.clone()),
        _ => Err(Error::BadData(format!(
            "{}: argument {} must be a string literal",
            c.func.name,
            i + 1
        ))),
    }
}

fn map_floats(v: Vec<Vec<Smp>>, keep_name: bool, f: impl Fn(f64) -> f64) -> Res {
    Res::Vector(
        v.into_iter()
            .map(|st| {
                st.into_iter()
                    .filter_map(|s| match s.v {
                        SampleValue::Float(x) => Some(Smp {
                            m: s.m,
                            v: SampleValue::Float(f(x)),
                            drop_name: s.drop_name || !keep_name,
                        }),
                        SampleValue::Histogram(_) => None,
                    })
                    .collect()
            })
            .collect(),
    )
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn date_part(name: &str, secs: f64) -> f64 {
    if !secs.is_finite() {
        return f64::NAN;
    }
    let s = secs.floor() as i64;
    let days = s.div_euclid(86_400);
    let sod = s.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    let dim = [
        31,
        if is_leap(y) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    match name {
        "year" => y as f64,
        "month" => m as f64,
        "day_of_month" => d as f64,
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_year" => (dim[..(m as usize - 1)].iter().sum::<i64>() + d as i64) as f64,
        "days_in_month" => dim[m as usize - 1] as f64,
        "hour" => (sod / 3600) as f64,
        "minute" => ((sod % 3600) / 60) as f64,
        _ => f64::NAN,
    }
}

pub(crate) fn call(ev: &mut Evaluator<'_>, c: &Call, ts: &[i64]) -> Result<Res, Error> {
    let name = c.func.name;
    let n = ts.len();
    match name {
        "time" => Ok(Res::Scalar(ts.iter().map(|&t| t as f64 / 1000.0).collect())),
        "pi" => Ok(Res::Scalar(vec![std::f64::consts::PI; n])),
        "start" => Ok(Res::Scalar(vec![ev_start(ev); n])),
        "end" => Ok(Res::Scalar(vec![ev_end(ev); n])),
        "step" => Ok(Res::Scalar(vec![ev.query_step() as f64 / 1000.0; n])),
        "range" => Ok(Res::Scalar(vec![ev_end(ev) - ev_start(ev); n])),
        "min_of" | "max_of" => {
            let mut acc: Option<Vec<f64>> = None;
            for i in 0..c.args.args.len() {
                let v = ev.eval_scalar(req(c, i)?, ts)?;
                acc = Some(match acc {
                    None => v,
                    Some(a) => a
                        .into_iter()
                        .zip(v)
                        .map(|(x, y)| {
                            if name == "min_of" {
                                go_min(x, y)
                            } else {
                                go_max(x, y)
                            }
                        })
                        .collect(),
                });
            }
            Ok(Res::Scalar(acc.unwrap_or_else(|| vec![f64::NAN; n])))
        }
        "vector" => {
            let v = ev.eval_scalar(req(c, 0)?, ts)?;
            let m = Arc::new(Labels::new());
            Ok(Res::Vector(
                v.into_iter()
                    .map(|x| {
                        vec![Smp {
                            m: m.clone(),
                            v: SampleValue::Float(x),
                            drop_name: false,
                        }]
                    })
                    .collect(),
            ))
        }
        "scalar" => {
            let v = ev.eval_vector(req(c, 0)?, ts)?;
            Ok(Res::Scalar(
                v.into_iter()
                    .map(|st| {
                        if st.len() == 1 {
                            st[0].float().unwrap_or(f64::NAN)
                        } else {
                            f64::NAN
                        }
                    })
                    .collect(),
            ))
        }
        "timestamp" => {
            let mut e = req(c, 0)?;
            while let Expr::Paren(p) = e {
                e = &p.expr;
            }
            let v = match e {
                Expr::VectorSelector(vs) => match ev.vector_selector(vs, ts, true)? {
                    Res::Vector(v) => v,
                    _ => unreachable!("a vector selector yields a vector"),
                },
                _ => {
                    let v = ev.eval_vector(e, ts)?;
                    v.into_iter()
                        .zip(ts)
                        .map(|(st, &t)| {
                            st.into_iter()
                                .map(|s| Smp {
                                    v: SampleValue::Float(t as f64 / 1000.0),
                                    ..s
                                })
                                .collect()
                        })
                        .collect()
                }
            };
            Ok(Res::Vector(
                v.into_iter()
                    .map(|st| {
                        st.into_iter()
                            .map(|s| Smp {
                                drop_name: true,
                                ..s
                            })
                            .collect()
                    })
                    .collect(),
            ))
        }
        "abs" | "ceil" | "floor" | "exp" | "sqrt" | "ln" | "log2" | "log10" | "sgn" | "sin"
        | "cos" | "tan" | "asin" | "acos" | "atan" | "sinh" | "cosh" | "tanh" | "asinh"
        | "acosh" | "atanh" | "deg" | "rad" => {
            let v = ev.eval_vector(req(c, 0)?, ts)?;
            let f: fn(f64) -> f64 = match name {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                "exp" => f64::exp,
                "sqrt" => f64::sqrt,
                "ln" => f64::ln,
                "log2" => f64::log2,
                "log10" => f64::log10,
                "sgn" => |x: f64| {
                    if x > 0.0 {
                        1.0
                    } else if x < 0.0 {
                        -1.0
                    } else {
                        x
                    }
                },
                "sin" => f64::sin,
                "cos" => f64::cos,
                "tan" => f64::tan,
                "asin" => f64::asin,
                "acos" => f64::acos,
                "atan" => f64::atan,
                "sinh" => f64::sinh,
                "cosh" => f64::cosh,
                "tanh" => f64::tanh,
                "asinh" => f64::asinh,
                "acosh" => f64::acosh,
                "atanh" => f64::atanh,
                "deg" => |x: f64| x * 180.0 / std::f64::consts::PI,
                _ => |x: f64| x * std::f64::consts::PI / 180.0,
            };
            Ok(map_floats(v, false, f))
        }
        "round" => {
            let v = ev.eval_vector(req(c, 0)?, ts)?;
            let to = scalar_arg(ev, c, 1, ts, 1.0)?;
            Ok(per_step_floats(v, false, |i, x| {
                let inv = 1.0 / to[i];
                (x * inv + 0.5).floor() / inv
            }))
        }
        "clamp" | "clamp_min" | "clamp_max" => {
            let v = ev.eval_vector(req(c, 0)?, ts)?;
            let a = scalar_arg(ev, c, 1, ts, f64::NAN)?;
            let b = scalar_arg(ev, c, 2, ts, f64::NAN)?;
            if name == "clamp" {
                let v: Vec<Vec<Smp>> = v
                    .into_iter()
                    .enumerate()
                    .map(|(i, st)| if b[i] < a[i] { Vec::new() } else { st })
                    .collect();
                return Ok(per_step_floats(v, false, |i, x| {
                    go_max(a[i], go_min(b[i], x))
                }));
            }
            let max = name == "clamp_max";
            Ok(per_step_floats(v, false, |i, x| {
                if max {
                    go_min(a[i], x)
                } else {
                    go_max(a[i], x)
                }
            }))
        }
        "year" | "month" | "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month"
        | "hour" | "minute" => {
            let v = match arg(c, 0) {
                Some(e) => ev.eval_vector(e, ts)?,
                None => {
                    let m = Arc::new(Labels::new());
                    ts.iter()
                        .map(|&t| {
                            vec![Smp {
                                m: m.clone(),
                                v: SampleValue::Float(t as f64 / 1000.0),
                                drop_name: false,
                            }]
                        })
                        .collect()
                }
            };
            Ok(map_floats(v, false, |x| date_part(name, x)))
        }
        "sort" | "sort_desc" => {
            let v = ev.eval_vector(req(c, 0)?, ts)?;
            let desc = name == "sort_desc";
            Ok(Res::Vector(
                v.into_iter()
                    .map(|mut st| {
                        st.retain(|s| s.float().is_some());
                        st.sort_by(|a, b| {
                            let (x, y) = (a.float().unwrap_or(0.0), b.float().unwrap_or(0.0));
                            match (x.is_nan(), y.is_nan()) {
                                (true, true) => std::cmp::Ordering::Equal,
                                (true, false) => std::cmp::Ordering::Greater,
                                (false, true) => std::cmp::Ordering::Less,
                                _ => {
                                    let o = x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
                                    if desc { o.reverse() } else { o }
                                }
                            }
                        });
                        st
                    })
                    .collect(),
            ))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let v = ev.eval_vector(req(c, 0)?, ts)?;
            let mut labels = Vec::new();
            for i in 1..c.args.args.len() {
                labels.push(string_arg(c, i)?);
            }
            let desc = name == "sort_by_label_desc";
            Ok(Res::Vector(
                v.into_iter()
                    .map(|mut st| {
                        st.sort_by(|a, b| {
                            let mut o = std::cmp::Ordering::Equal;
                            for l in &labels {
                                o = natural_cmp(a.m.get(l).unwrap_or(""), b.m.get(l).unwrap_or(""));
                                if o != std::cmp::Ordering::Equal {
                                    break;
                                }
                            }
                            if o == std::cmp::Ordering::Equal {
                                o = a.m.cmp(&b.m);
                            }
                            if desc { o.reverse() } else { o }
                        });
                        st
                    })
                    .collect(),
            ))
        }
        "label_replace" => {
            let v = ev.eval_vector(req(c, 0)?, ts)?;
            let dst = string_arg(c, 1)?;
            let repl = string_arg(c, 2)?;
            let src = string_arg(c, 3)?;
            let re_s = string_arg(c, 4)?;
            let re = regex::Regex::new(&format!("^(?s:{re_s})$")).map_err(|e| {
                Error::Execution(format!(
                    "invalid regular expression in label_replace(): {re_s}: {e}"
                ))
            })?;
            if !model::is_valid_label_name(&dst) {
                return Err(Error::Execution(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            let mut out = Vec::with_capacity(n);
            for st in v {
                let mut o = Vec::with_capacity(st.len());
                for s in st {
                    let sv = s.m.get(&src).unwrap_or("");
                    if let Some(caps) = re.captures(sv) {
                        let mut res = String::new();
                        caps.expand(&repl, &mut res);
                        o.push(with_label(s, &dst, res));
                    } else {
                        o.push(s);
                    }
                }
                check_dups(&o)?;
                out.push(o);
            }
            Ok(Res::Vector(out))
        }
        "label_join" => {
            let v = ev.eval_vector(req(c, 0)?, ts)?;
            let dst = string_arg(c, 1)?;
            let sep = string_arg(c, 2)?;
            let mut srcs = Vec::new();
            for i in 3..c.args.args.len() {
                srcs.push(string_arg(c, i)?);
            }
            if !model::is_valid_label_name(&dst) {
                return Err(Error::Execution(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            let mut out = Vec::with_capacity(n);
            for st in v {
                let mut o = Vec::with_capacity(st.len());
                for s in st {
                    let joined: Vec<&str> = srcs.iter().map(|l| s.m.get(l).unwrap_or("")).collect();
                    let value = joined.join(&sep);
                    o.push(with_label(s, &dst, value));
                }
                check_dups(&o)?;
                out.push(o);
            }
            Ok(Res::Vector(out))
        }
        "absent" => {
            let e = req(c, 0)?;
            let v = ev.eval_vector(e, ts)?;
            let m = Arc::new(absent_labels(e));
            Ok(Res::Vector(
                v.into_iter()
                    .map(|st| {
                        if st.is_empty() {
                            vec![Smp {
                                m: m.clone(),
                                v: SampleValue::Float(1.0),
                                drop_name: false,
                            }]
                        } else {
                            Vec::new()
                        }
                    })
                    .collect(),
            ))
        }
        "absent_over_time" => {
            let e = req(c, 0)?;
            let rd = ev.eval_range(e, ts)?;
            let m = Arc::new(absent_labels(e));
            Ok(Res::Vector(
                (0..n)
                    .map(|i| {
                        if rd.series.iter().any(|s| {
                            let (lo, hi) = rd.window(s, i);
                            lo < hi
                        }) {
                            Vec::new()
                        } else {
                            vec![Smp {
                                m: m.clone(),
                                v: SampleValue::Float(1.0),
                                drop_name: false,
                            }]
                        }
                    })
                    .collect(),
            ))
        }
        "histogram_quantile" => {
            let q = ev.eval_scalar(req(c, 0)?, ts)?;
            let v = ev.eval_vector(req(c, 1)?, ts)?;
            let mut out = Vec::with_capacity(n);
            for (i, st) in v.into_iter().enumerate() {
                out.push(histogram_quantile_step(ev, q[i], st)?);
            }
            Ok(Res::Vector(out))
        }
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
        | "histogram_stdvar" => {
            let v = ev.eval_vector(req(c, 0)?, ts)?;
            Ok(Res::Vector(
                v.into_iter()
                    .map(|st| {
                        st.into_iter()
                            .filter_map(|s| {
                                let x = hist(&s.v)?;
                                let f = match name {
                                    "histogram_count" => x.count,
                                    "histogram_sum" => x.sum,
                                    "histogram_avg" => x.sum / x.count,
                                    "histogram_stddev" => h::stdvar(x).sqrt(),
                                    _ => h::stdvar(x),
                                };
                                Some(Smp {
                                    m: s.m,
                                    v: SampleValue::Float(f),
                                    drop_name: true,
                                })
                            })
                            .collect()
                    })
                    .collect(),
            ))
        }
        "histogram_fraction" => {
            let lo = ev.eval_scalar(req(c, 0)?, ts)?;
            let hi = ev.eval_scalar(req(c, 1)?, ts)?;
            let v = ev.eval_vector(req(c, 2)?, ts)?;
            let mut out = Vec::with_capacity(n);
            for (i, st) in v.into_iter().enumerate() {
                let mut o = Vec::new();
                let mut groups: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
                let mut index: HashMap<Labels, usize> = HashMap::new();
                for s in st {
                    match &s.v {
                        SampleValue::Histogram(x) => o.push(Smp {
                            v: SampleValue::Float(h::fraction(lo[i], hi[i], x)),
                            m: s.m,
                            drop_name: true,
                        }),
                        SampleValue::Float(f) => {
                            let Some(le) = s.m.get("le").and_then(parse_le) else {
                                continue;
                            };
                            let mut b = s.m.builder();
                            b.del("le");
                            b.del(METRIC_NAME);
                            let key = b.build();
                            let k = *index.entry(key.clone()).or_insert_with(|| {
                                groups.push((key, Vec::new()));
                                groups.len() - 1
                            });
                            groups[k].1.push((le, *f));
                        }
                    }
                }
                for (key, mut b) in groups {
                    o.push(Smp {
                        m: Arc::new(key),
                        v: SampleValue::Float(bucket_fraction(lo[i], hi[i], &mut b)),
                        drop_name: false,
                    });
                }
                out.push(o);
            }
            Ok(Res::Vector(out))
        }
        _ => range_function(ev, c, ts),
    }
}

fn ev_start(ev: &Evaluator<'_>) -> f64 {
    ev.query_bounds().0 as f64 / 1000.0
}

fn ev_end(ev: &Evaluator<'_>) -> f64 {
    ev.query_bounds().1 as f64 / 1000.0
}

/// `s` with label `dst` set to `value` (what `label_replace` and
/// `label_join` do per sample): writing `__name__` keeps the name even
/// where it would otherwise be dropped.
fn with_label(s: Smp, dst: &str, value: String) -> Smp {
    let mut b = s.m.builder();
    b.set(dst.to_string(), value);
    Smp {
        m: Arc::new(b.build()),
        v: s.v,
        drop_name: dst != METRIC_NAME && s.drop_name,
    }
}

fn check_dups(v: &[Smp]) -> Result<(), Error> {
    let mut seen = std::collections::HashSet::new();
    for s in v {
        let key = if s.drop_name {
            drop_name(&s.m)
        } else {
            (*s.m).clone()
        };
        if !seen.insert(key) {
            return Err(dup_labelset());
        }
    }
    Ok(())
}

/// Compares strings with embedded numbers in numeric order (Prometheus' `sort_by_label`).
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        if ab[i].is_ascii_digit() && bb[j].is_ascii_digit() {
            let si = i;
            while i < ab.len() && ab[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < bb.len() && bb[j].is_ascii_digit() {
                j += 1;
            }
            let x = a[si..i].trim_start_matches('0');
            let y = b[sj..j].trim_start_matches('0');
            let o = x.len().cmp(&y.len()).then_with(|| x.cmp(y));
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        } else {
            let o = ab[i].cmp(&bb[j]);
            if o != std::cmp::Ordering::Equal {
                return o;
            }
            i += 1;
            j += 1;
        }
    }
    (ab.len() - i).cmp(&(bb.len() - j))
}

/// The labels `absent(sel)` reports: the selector's equality matchers on labels named once.
fn absent_labels(e: &Expr) -> Labels {
    let mut e = e;
    loop {
        match e {
            Expr::Paren(p) => e = &p.expr,
            Expr::MatrixSelector(ms) => return selector_labels(&ms.vs),
            Expr::VectorSelector(vs) => return selector_labels(vs),
            _ => return Labels::new(),
        }
    }
}

fn selector_labels(vs: &promql_parser::parser::VectorSelector) -> Labels {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for m in &vs.matchers.matchers {
        *count.entry(m.name.as_str()).or_default() += 1;
    }
    let mut b = Labels::new().builder();
    for m in &vs.matchers.matchers {
        if m.name != METRIC_NAME
            && count[m.name.as_str()] == 1
            && matches!(m.op, promql_parser::label::MatchOp::Equal)
        {
            b.set(m.name.clone(), m.value.clone());
        }
    }
    b.build()
}

fn per_step_floats(v: Vec<Vec<Smp>>, keep_name: bool, f: impl Fn(usize, f64) -> f64) -> Res {
    Res::Vector(
        v.into_iter()
            .enumerate()
            .map(|(i, st)| {
                st.into_iter()
                    .filter_map(|s| match s.v {
                        SampleValue::Float(x) => Some(Smp {
                            m: s.m,
                            v: SampleValue::Float(f(i, x)),
                            drop_name: s.drop_name || !keep_name,
                        }),
                        SampleValue::Histogram(_) => None,
                    })
                    .collect()
            })
            .collect(),
    )
}

/// `histogram_quantile` for one step: classic `le` buckets and native histograms.
fn histogram_quantile_step(
    ev: &mut Evaluator<'_>,
    q: f64,
    st: Vec<Smp>,
) -> Result<Vec<Smp>, Error> {
    let mut out = Vec::new();
    let mut groups: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut native_keys = std::collections::HashSet::new();
    for s in &st {
        if let SampleValue::Histogram(x) = &s.v {
            let key = drop_name(&s.m);
            native_keys.insert(key.clone());
            out.push(Smp {
                m: Arc::new(key),
                v: SampleValue::Float(h::quantile(q, x)),
                drop_name: false,
            });
        }
    }
    for s in st {
        let Some(f) = s.float() else { continue };
        let Some(le) = s.m.get("le").and_then(parse_le) else {
            ev.warnings.push(format!(
                "PromQL warning: bucket label \"le\" is missing or has a malformed value of \"{}\" for metric name \"{}\"",
                s.m.get("le").unwrap_or(""),
                s.m.get(METRIC_NAME).unwrap_or("")
            ));
            continue;
        };
        let mut b = s.m.builder();
        b.del("le");
        b.del(METRIC_NAME);
        let key = b.build();
        let i = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push((le, f));
    }
    for (key, mut buckets) in groups {
        if native_keys.contains(&key) {
            ev.warnings.push(
                "PromQL warning: vector contains a mix of classic and native histograms".into(),
            );
            continue;
        }
        let (v, forced) = bucket_quantile(q, &mut buckets);
        if forced {
            ev.infos.push("PromQL info: input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile)".into());
        }
        out.push(Smp {
            m: Arc::new(key),
            v: SampleValue::Float(v),
            drop_name: false,
        });
    }
    Ok(out)
}

fn parse_le(s: &str) -> Option<f64> {
    let t = s.trim();
    match t.to_ascii_lowercase().as_str() {
        "+inf" | "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => t.parse().ok(),
    }
}

/// Prometheus' `BucketQuantile`; the bool says monotonicity had to be forced.
pub(crate) fn bucket_quantile(q: f64, b: &mut [(f64, f64)]) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    b.sort_by(|x, y| x.0.partial_cmp(&y.0).unwrap_or(std::cmp::Ordering::Equal));
    if b.last().is_none_or(|l| l.0 != f64::INFINITY) {
        return (f64::NAN, false);
    }
    // Coalesce equal bounds.
    let mut c: Vec<(f64, f64)> = Vec::with_capacity(b.len());
    for &(u, n) in b.iter() {
        match c.last_mut() {
            Some(l) if l.0 == u => l.1 += n,
            _ => c.push((u, n)),
        }
    }
    let mut forced = false;
    let mut prev = c[0].1;
    for x in c.iter_mut().skip(1) {
        let cur = x.1;
        if cur == prev {
            continue;
        }
        if (prev - cur).abs() <= 1e-12 * prev.abs().max(cur.abs()) {
            x.1 = prev;
            continue;
        }
        if cur < prev {
            x.1 = prev;
            forced = true;
            continue;
        }
        prev = cur;
    }
    if c.len() < 2 {
        return (f64::NAN, forced);
    }
    let obs = c[c.len() - 1].1;
    if obs == 0.0 {
        return (f64::NAN, forced);
    }
    let mut rank = q * obs;
    let idx = c[..c.len() - 1].partition_point(|x| x.1 < rank);
    if idx == c.len() - 1 {
        return (c[c.len() - 2].0, forced);
    }
    if idx == 0 && c[0].0 <= 0.0 {
        return (c[0].0, forced);
    }
    let (mut start, end, mut count) = (0.0, c[idx].0, c[idx].1);
    if idx > 0 {
        start = c[idx - 1].0;
        count -= c[idx - 1].1;
        rank -= c[idx - 1].1;
    }
    (start + (end - start) * (rank / count), forced)
}

/// Prometheus' `BucketFraction` over classic `le` buckets.
fn bucket_fraction(lower: f64, upper: f64, b: &mut [(f64, f64)]) -> f64 {
    b.sort_by(|x, y| x.0.partial_cmp(&y.0).unwrap_or(std::cmp::Ordering::Equal));
    if b.last().is_none_or(|l| l.0 != f64::INFINITY) {
        return f64::NAN;
    }
    let mut c: Vec<(f64, f64)> = Vec::with_capacity(b.len());
    for &(u, n) in b.iter() {
        match c.last_mut() {
            Some(l) if l.0 == u => l.1 += n,
            _ => c.push((u, n)),
        }
    }
    let count = c[c.len() - 1].1;
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    for (i, &(ub, cnt)) in c.iter().enumerate() {
        let lb = if i > 0 {
            c[i - 1].0
        } else if ub > 0.0 {
            0.0
        } else {
            f64::NEG_INFINITY
        };
        // A bucket of infinite width counts whole when the range reaches its infinity, else
        // not at all: a finite limit inside it sits at its finite end.
        let interp = |v: f64| {
            if lb == f64::NEG_INFINITY {
                cnt
            } else if ub == f64::INFINITY {
                rank
            } else {
                rank + (cnt - rank) * (v - lb) / (ub - lb)
            }
        };
        if !lower_set && lb >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && lb >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && lb < lower && ub > lower {
            lower_rank = interp(lower);
            lower_set = true;
        }
        if !upper_set && lb < upper && ub > upper {
            upper_rank = interp(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank = cnt;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    (upper_rank - lower_rank) / count
}

/// A window's float samples (histograms skipped), written into `buf`.
fn fill_floats<'b>(buf: &'b mut Vec<FloatSample>, w: &[(i64, SampleValue)]) -> &'b [FloatSample] {
    buf.clear();
    buf.extend(w.iter().filter_map(|(t, v)| match v {
        SampleValue::Float(f) => Some(FloatSample { t: *t, v: *f }),
        SampleValue::Histogram(_) => None,
    }));
    buf
}

/// A window's float values (histograms skipped), written into `buf`.
fn fill_vals<'b>(buf: &'b mut Vec<f64>, w: &[(i64, SampleValue)]) -> &'b mut [f64] {
    buf.clear();
    buf.extend(w.iter().filter_map(|(_, v)| v.float()));
    buf
}

/// Prometheus' `linearRegression`: the slope and the intercept at `intercept_t` of the
/// least-squares line through the samples, from Kahan sums of x (seconds from
/// `intercept_t`), y, xy and x².
fn linear_regression(s: &[FloatSample], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init = s[0].v;
    let mut const_y = true;
    for (i, &FloatSample { t, v }) in s.iter().enumerate() {
        if const_y && i > 0 && v != init {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_t) as f64 / 1e3;
        kahan_add(&mut sx, &mut cx, x);
        kahan_add(&mut sy, &mut cy, v);
        kahan_add(&mut sxy, &mut cxy, x * v);
        kahan_add(&mut sx2, &mut cx2, x * x);
    }
    if const_y {
        return const_line(init);
    }
    line_from_sums(n, sx + cx, sy + cy, sxy + cxy, sx2 + cx2)
}

/// The regression's answer when every y is the same.
fn const_line(y: f64) -> (f64, f64) {
    if y.is_infinite() {
        (f64::NAN, f64::NAN)
    } else {
        (0.0, y)
    }
}

/// The regression's slope and intercept from its (compensated) sums.
fn line_from_sums(n: f64, sx: f64, sy: f64, sxy: f64, sx2: f64) -> (f64, f64) {
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

/// Largest magnitude below which every integer is a float, and sums of them exact.
const EXACT: i128 = 1 << 53;

/// A float series' running integer sums for [`linear_regression`] over any of its windows
/// without a pass over the window, when that gives Prometheus' answer bit for bit.
///
/// That is so when the samples lie whole seconds apart (scrapes on a fixed interval: the
/// x of every sample is then an integer) and every partial sum of x and x² stays below
/// 2^53: each Kahan step then adds exactly, its compensation stays zero, and the sums
/// are the integer sums. When the values are integers too (bytes, counts) and the sums of
/// |y| and |xy| stay below 2^53 as well (2^(53+k) when every value is a multiple of 2^k,
/// as byte counts in pages are), the same holds for y and xy, and a window costs
/// a few subtractions; otherwise y and xy are still summed per sample, without x's
/// division. Windows (or series) outside these bounds take [`linear_regression`].
#[derive(Default)]
struct RegressionSums {
    /// The first sample's time: x is counted in seconds from it.
    t0: i64,
    /// Prefix sums (index k: samples before k) of u = (t - t0) / 1000 and of u².
    u: Vec<i128>,
    u2: Vec<i128>,
    /// When every value is an integer below 2^53: prefix sums of y, |y| and u·y, and for
    /// each sample the index of the next one with another value.
    y: Vec<i128>,
    abs_y: Vec<i128>,
    uy: Vec<i128>,
    next_change: Vec<usize>,
    integral: bool,
    /// Every value is a multiple of 2^y_twos (bytes counted in pages, say): so are the
    /// sums of y and xy, which are then exact up to 2^(53 + y_twos).
    y_twos: u32,
}

impl RegressionSums {
    /// The sums for `f`, or `false` when its samples are not whole seconds apart.
    fn fill(&mut self, f: &[FloatSample]) -> bool {
        let Some(first) = f.first() else {
            return false;
        };
        self.t0 = first.t;
        // Samples in time order: a span under 2^40 s bounds every difference below (and
        // keeps the i128 sums far from overflow).
        let span = f[f.len() - 1].t.checked_sub(first.t);
        if span.is_none_or(|s| s > (1 << 40) * 1000)
            || f.iter().any(|p| (p.t - first.t) % 1000 != 0)
        {
            return false;
        }
        // Integers below 2^62 (exact in i128, and the running sums of u·y far from its
        // bound), and the power of two that divides them all.
        self.integral = f.len() < 1 << 24
            && f.iter()
                .all(|p| p.v.fract() == 0.0 && p.v.abs() < (1u64 << 62) as f64);
        self.y_twos = 62;
        if self.integral {
            for p in f {
                if p.v != 0.0 {
                    self.y_twos = self.y_twos.min((p.v as i128).trailing_zeros());
                }
            }
        }
        for v in [
            &mut self.u,
            &mut self.u2,
            &mut self.y,
            &mut self.abs_y,
            &mut self.uy,
        ] {
            v.clear();
            v.push(0);
        }
        let (mut u, mut u2, mut y, mut ay, mut uy) = (0i128, 0i128, 0i128, 0i128, 0i128);
        for p in f {
            let k = i128::from((p.t - first.t) / 1000);
            u += k;
            u2 += k * k;
            self.u.push(u);
            self.u2.push(u2);
            if self.integral {
                let v = p.v as i128;
                y += v;
                ay += v.abs();
                uy += k * v;
                self.y.push(y);
                self.abs_y.push(ay);
                self.uy.push(uy);
            }
        }
        self.next_change.clear();
        if self.integral {
            self.next_change.resize(f.len(), f.len());
            for k in (0..f.len().saturating_sub(1)).rev() {
                self.next_change[k] = if f[k + 1].v != f[k].v {
                    k + 1
                } else {
                    self.next_change[k + 1]
                };
            }
        }
        true
    }

    /// [`linear_regression`] of `f[lo..hi]` (at least one sample) at `intercept_t`, the
    /// same bits, or `None` when this window needs the general path.
    fn regression(
        &self,
        f: &[FloatSample],
        lo: usize,
        hi: usize,
        intercept_t: i64,
    ) -> Option<(f64, f64)> {
        let off = intercept_t.checked_sub(self.t0)?;
        if off % 1000 != 0 {
            return None;
        }
        let a = i128::from(off / 1000);
        let n = (hi - lo) as i128;
        // x = u - a is monotone in the window: its largest magnitude is at an end.
        let u_at = |k: usize| i128::from((f[k].t - self.t0) / 1000);
        let max_x = (u_at(lo) - a).abs().max((u_at(hi - 1) - a).abs());
        // Every x and x² exact, as are t - intercept_t (milliseconds) and the partial sums.
        if n * max_x >= EXACT || n * max_x * max_x >= EXACT || max_x * 1000 >= EXACT {
            return None;
        }
        let su = self.u[hi] - self.u[lo];
        let sx = su - n * a;
        let sx2 = (self.u2[hi] - self.u2[lo]) - 2 * a * su + n * a * a;
        if self.integral {
            let sum_abs_y = self.abs_y[hi] - self.abs_y[lo];
            let limit = EXACT << self.y_twos;
            if sum_abs_y < limit && max_x * sum_abs_y < limit {
                if self.next_change[lo] >= hi {
                    return Some(const_line(f[lo].v));
                }
                let sy = self.y[hi] - self.y[lo];
                let sxy = (self.uy[hi] - self.uy[lo]) - a * sy;
                return Some(line_from_sums(
                    n as f64, sx as f64, sy as f64, sxy as f64, sx2 as f64,
                ));
            }
        }
        // Exact x sums; y and xy by Kahan steps as Prometheus makes them (x is exact, so
        // x·y is the product Prometheus forms).
        let w = &f[lo..hi];
        let init = w[0].v;
        let mut const_y = true;
        let (mut sy, mut cy, mut sxy, mut cxy) = (0.0, 0.0, 0.0, 0.0);
        for (k, p) in w.iter().enumerate() {
            if const_y && k > 0 && p.v != init {
                const_y = false;
            }
            let x = (u_at(lo + k) - a) as f64;
            kahan_add(&mut sy, &mut cy, p.v);
            kahan_add(&mut sxy, &mut cxy, x * p.v);
        }
        if const_y {
            return Some(const_line(init));
        }
        Some(line_from_sums(
            n as f64,
            sx as f64,
            sy + cy,
            sxy + cxy,
            sx2 as f64,
        ))
    }
}

/// `rate`, `increase`, `delta` with Prometheus' extrapolation.
#[allow(clippy::too_many_arguments)] // mirrors Prometheus' extrapolatedRate
fn extrapolated(
    warnings: &mut Vec<String>,
    w: &[(i64, SampleValue)],
    range_start: i64,
    range_end: i64,
    range: i64,
    counter: bool,
    is_rate: bool,
    fname: &str,
) -> Option<SampleValue> {
    if w.len() < 2 {
        return None;
    }
    let nh = w
        .iter()
        .filter(|p| matches!(p.1, SampleValue::Histogram(_)))
        .count();
    if nh > 0 && nh < w.len() {
        warnings.push(format!(
            "PromQL warning: encountered a mix of histograms and floats for metric name in {fname}"
        ));
        return None;
    }
    let first_t = w[0].0;
    let last_t = w[w.len() - 1].0;
    let (result, first_v) = if nh > 0 {
        let hs: Vec<&model::FloatHistogram> = w.iter().filter_map(|p| hist(&p.1)).collect();
        let r = h::histogram_rate(&hs, counter)?;
        (SampleValue::Histogram(Arc::new(r)), 0.0)
    } else {
        let mut r = w[w.len() - 1].1.float()? - w[0].1.float()?;
        if counter {
            let mut prev = w[0].1.float()?;
            for p in &w[1..] {
                let c = p.1.float()?;
                if c < prev {
                    r += prev;
                }
                prev = c;
            }
        }
        (SampleValue::Float(r), w[0].1.float()?)
    };
    let span = Span {
        first_t,
        last_t,
        n: w.len(),
        range_start,
        range_end,
        range,
    };
    let float_result = match result {
        SampleValue::Float(r) => Some(r),
        SampleValue::Histogram(_) => None,
    };
    let factor = extrapolation(&span, float_result, first_v, counter, is_rate);
    Some(match result {
        SampleValue::Float(r) => SampleValue::Float(r * factor),
        SampleValue::Histogram(x) => SampleValue::Histogram(Arc::new(h::scale(&x, factor))),
    })
}

/// Where a window's samples sit in its range (for the extrapolation of `rate` & co.).
struct Span {
    first_t: i64,
    last_t: i64,
    /// Samples in the window (at least 2).
    n: usize,
    range_start: i64,
    range_end: i64,
    range: i64,
}

/// Prometheus' extrapolation factor for `rate`, `increase` and `delta`: the sampled
/// interval is stretched towards the window's edges (by at most half an average sample
/// interval, and for counters not below zero), and divided by the range for `rate`.
/// `float_result` is the raw float increase (`None` for histograms).
fn extrapolation(
    span: &Span,
    float_result: Option<f64>,
    first_v: f64,
    counter: bool,
    is_rate: bool,
) -> f64 {
    let mut to_start = (span.first_t - span.range_start) as f64 / 1000.0;
    let mut to_end = (span.range_end - span.last_t) as f64 / 1000.0;
    let sampled = (span.last_t - span.first_t) as f64 / 1000.0;
    let avg = sampled / (span.n - 1) as f64;
    let threshold = avg * 1.1;
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    if let Some(r) = float_result
        && counter
        && r > 0.0
        && first_v >= 0.0
    {
        let to_zero = sampled * (first_v / r);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= span.range as f64 / 1000.0;
    }
    factor
}

/// `rate`, `increase` and `delta` over a float-only series, for every step: the same
/// arithmetic as [`extrapolated`], but a window's counter resets are found through a
/// running count per sample (a window without resets, the usual case, costs O(1); one
/// with resets adds them up in order, as Prometheus does).
fn float_rate_steps(rd: &RangeData, s: &RSeries, name: &str, mut emit: impl FnMut(usize, f64)) {
    let counter = name != "delta";
    let is_rate = name == "rate";
    let Points::Floats(f) = &s.pts else {
        unreachable!("float-only series")
    };
    let v = |k: usize| f[k].v;
    // resets[k]: counter resets among samples 0..=k.
    let resets: Vec<u32> = if counter {
        let mut n = 0u32;
        (0..f.len())
            .map(|k| {
                if k > 0 && v(k) < v(k - 1) {
                    n += 1;
                }
                n
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut cur = rd.cursor();
    for i in 0..rd.ends.len() {
        let (lo, hi) = rd.bounds(s, i, &mut cur);
        if hi - lo < 2 {
            continue;
        }
        let first_v = v(lo);
        let mut r = v(hi - 1) - first_v;
        if counter && resets[hi - 1] != resets[lo] {
            let mut prev = first_v;
            for k in lo + 1..hi {
                let c = v(k);
                if c < prev {
                    r += prev;
                }
                prev = c;
            }
        }
        let end = rd.ends[i];
        let span = Span {
            first_t: f[lo].t,
            last_t: f[hi - 1].t,
            n: hi - lo,
            range_start: end - rd.range,
            range_end: end,
            range: rd.range,
        };
        emit(
            i,
            r * extrapolation(&span, Some(r), first_v, counter, is_rate),
        );
    }
}

/// The `*_over_time` functions [`float_over_time_steps`] computes.
#[derive(Clone, Copy)]
enum OverTime {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Present,
    First,
    Last,
    StdDev,
    StdVar,
}

fn over_time_op(name: &str) -> Option<OverTime> {
    Some(match name {
        "sum_over_time" => OverTime::Sum,
        "avg_over_time" => OverTime::Avg,
        "min_over_time" => OverTime::Min,
        "max_over_time" => OverTime::Max,
        "count_over_time" => OverTime::Count,
        "present_over_time" => OverTime::Present,
        "first_over_time" => OverTime::First,
        "last_over_time" => OverTime::Last,
        "stddev_over_time" => OverTime::StdDev,
        "stdvar_over_time" => OverTime::StdVar,
        _ => return None,
    })
}

/// A `*_over_time` function over a float-only series: each step's window is a slice of
/// the series' values (taken out once into `vals`), with the function chosen once, instead
/// of a copy of every window and a match on the name per step. The arithmetic is that of
/// the general path in [`range_function_into`] (the conformance suite runs both).
fn float_over_time_steps(
    rd: &RangeData,
    s: &RSeries,
    op: OverTime,
    vals: &mut Vec<f64>,
    mut emit: impl FnMut(usize, f64),
) {
    vals.clear();
    let Points::Floats(f) = &s.pts else {
        unreachable!("float-only series")
    };
    vals.extend(f.iter().map(|p| p.v));
    if matches!(op, OverTime::Min | OverTime::Max) && rd.ends.is_sorted() {
        return sliding_extreme_steps(rd, s, vals, matches!(op, OverTime::Max), emit);
    }
    if matches!(op, OverTime::Sum | OverTime::Avg) {
        return paired_sum_steps(rd, s, vals, matches!(op, OverTime::Avg), emit);
    }
    let mut cur = rd.cursor();
    for i in 0..rd.ends.len() {
        let (lo, hi) = rd.bounds(s, i, &mut cur);
        let w = &vals[lo..hi];
        let Some((&first, rest)) = w.split_first() else {
            continue;
        };
        let v = match op {
            OverTime::Sum => kahan_sum(w.iter().copied()),
            OverTime::Avg => mean(w),
            OverTime::Min | OverTime::Max => {
                let max = matches!(op, OverTime::Max);
                let mut best = first;
                for &p in rest {
                    let better = if max { p > best } else { p < best };
                    if better || best.is_nan() {
                        best = p;
                    }
                }
                best
            }
            OverTime::Count => w.len() as f64,
            OverTime::Present => 1.0,
            OverTime::First => first,
            OverTime::Last => w[w.len() - 1],
            OverTime::StdDev => variance(w).sqrt(),
            OverTime::StdVar => variance(w),
        };
        emit(i, v);
    }
}

/// `sum_over_time` or (`avg`) `avg_over_time` of a float-only series, two steps' windows
/// at a time: each window's Kahan sum is its own chain of dependent additions, so running
/// two side by side lets the processor overlap them (a window's additions are the ones
/// [`kahan_sum`] and [`mean`] make, in the same order, so the values are theirs bit for
/// bit). A window that meets a NaN, an infinity or an overflow is summed again by those
/// functions, whose rules then decide.
fn paired_sum_steps(
    rd: &RangeData,
    s: &RSeries,
    vals: &[f64],
    avg: bool,
    mut emit: impl FnMut(usize, f64),
) {
    let finish = |w: &[f64], sum: f64, c: f64| {
        if !sum.is_finite() {
            // Something non-finite came in (it stays in the sum): the general rules.
            return if avg {
                mean(w)
            } else {
                kahan_sum(w.iter().copied())
            };
        }
        if avg {
            let n = w.len() as f64;
            sum / n + c / n
        } else {
            sum + c
        }
    };
    let mut cur = rd.cursor();
    let steps = rd.ends.len();
    let mut i = 0;
    while i < steps {
        let (lo, hi) = rd.bounds(s, i, &mut cur);
        let a = &vals[lo..hi];
        if i + 1 == steps {
            if !a.is_empty() {
                let (sum, c) = kahan_plain(a);
                emit(i, finish(a, sum, c));
            }
            break;
        }
        let (lo2, hi2) = rd.bounds(s, i + 1, &mut cur);
        let b = &vals[lo2..hi2];
        let ((sa, ca), (sb, cb)) = kahan_two(a, b);
        if !a.is_empty() {
            emit(i, finish(a, sa, ca));
        }
        if !b.is_empty() {
            emit(i + 1, finish(b, sb, cb));
        }
        i += 2;
    }
}

/// One step of Prometheus' `kahanSumInc` for finite values (its infinity case left to
/// the caller, which sees the sum turn non-finite): no branch, so two of these in one loop
/// run side by side.
#[inline(always)]
fn kahan_step(sum: &mut f64, c: &mut f64, v: f64) {
    let t = *sum + v;
    let (big, small) = if sum.abs() >= v.abs() {
        (*sum, v)
    } else {
        (v, *sum)
    };
    *c += (big - t) + small;
    *sum = t;
}

/// The Kahan sum and compensation of `w` by [`kahan_step`].
fn kahan_plain(w: &[f64]) -> (f64, f64) {
    let (mut s, mut c) = (0.0, 0.0);
    for &v in w {
        kahan_step(&mut s, &mut c, v);
    }
    (s, c)
}

/// [`kahan_plain`] of two windows at once.
fn kahan_two(a: &[f64], b: &[f64]) -> ((f64, f64), (f64, f64)) {
    let m = a.len().min(b.len());
    let (a2, b2) = (&a[..m], &b[..m]);
    let (mut s0, mut c0, mut s1, mut c1) = (0.0, 0.0, 0.0, 0.0);
    for k in 0..m {
        kahan_step(&mut s0, &mut c0, a2[k]);
        kahan_step(&mut s1, &mut c1, b2[k]);
    }
    for &v in &a[m..] {
        kahan_step(&mut s0, &mut c0, v);
    }
    for &v in &b[m..] {
        kahan_step(&mut s1, &mut c1, v);
    }
    ((s0, c0), (s1, c1))
}

/// `max_over_time` (`max`) or `min_over_time` of a float-only series when the windows only
/// move forward: a queue of the window's candidates (indices of non-NaN values, best first,
/// each better than every later one or equal to it) gives each step's answer in amortised
/// O(1) instead of a pass over the window. The answer is the one of the general path: the
/// earliest of the window's best non-NaN values (which decides between 0 and -0), or NaN
/// when every value is NaN.
fn sliding_extreme_steps(
    rd: &RangeData,
    s: &RSeries,
    vals: &[f64],
    max: bool,
    mut emit: impl FnMut(usize, f64),
) {
    let better = |a: f64, b: f64| if max { a > b } else { a < b };
    let mut queue: VecDeque<usize> = VecDeque::new();
    let mut next = 0;
    let mut cur = rd.cursor();
    for i in 0..rd.ends.len() {
        let (lo, hi) = rd.bounds(s, i, &mut cur);
        next = next.max(lo);
        while next < hi {
            let v = vals[next];
            if !v.is_nan() {
                while queue.back().is_some_and(|&b| better(v, vals[b])) {
                    queue.pop_back();
                }
                queue.push_back(next);
            }
            next += 1;
        }
        while queue.front().is_some_and(|&f| f < lo) {
            queue.pop_front();
        }
        if lo < hi {
            emit(i, queue.front().map_or(vals[hi - 1], |&f| vals[f]));
        }
    }
}

/// One empty vector per step for a function's results, sized for `series` samples each
/// when that is small enough to reserve up front (a step's vector otherwise grows, copying
/// itself several times).
pub(crate) fn step_vectors(steps: usize, series: usize) -> Vec<Vec<Smp>> {
    const RESERVE_UP_TO: usize = 1 << 23;
    let per_step = if steps.saturating_mul(series) <= RESERVE_UP_TO {
        series
    } else {
        0
    };
    (0..steps).map(|_| Vec::with_capacity(per_step)).collect()
}

/// Whether `name` is one of the functions [`range_function_into`] evaluates (a function of
/// a range vector, one result per series and step).
pub(crate) fn is_range_function(name: &str) -> bool {
    matches!(
        name,
        "rate"
            | "increase"
            | "delta"
            | "irate"
            | "idelta"
            | "deriv"
            | "predict_linear"
            | "holt_winters"
            | "double_exponential_smoothing"
            | "changes"
            | "resets"
            | "count_over_time"
            | "present_over_time"
            | "last_over_time"
            | "first_over_time"
            | "sum_over_time"
            | "avg_over_time"
            | "min_over_time"
            | "max_over_time"
            | "ts_of_min_over_time"
            | "ts_of_max_over_time"
            | "ts_of_first_over_time"
            | "ts_of_last_over_time"
            | "stddev_over_time"
            | "stdvar_over_time"
            | "quantile_over_time"
            | "mad_over_time"
    )
}

fn range_function(ev: &mut Evaluator<'_>, c: &Call, ts: &[i64]) -> Result<Res, Error> {
    let mut sink = StepVecs::new(ts.len());
    range_function_into(ev, c, ts, &mut sink)?;
    Ok(Res::Vector(sink.finish()))
}

/// Evaluates a range function, handing each series' results to `sink`.
pub(crate) fn range_function_into(
    ev: &mut Evaluator<'_>,
    c: &Call,
    ts: &[i64],
    sink: &mut dyn Sink,
) -> Result<(), Error> {
    let name = c.func.name;
    let (ri, other) = match name {
        "quantile_over_time" => (1, Some(0)),
        "predict_linear" => (0, Some(1)),
        _ => (0, None),
    };
    let e = req(c, ri)?;
    let rd: RangeData = ev.eval_range(e, ts)?;
    let param = match other {
        Some(i) => ev.eval_scalar(req(c, i)?, ts)?,
        None => Vec::new(),
    };
    let (sf, tf) = if matches!(name, "holt_winters" | "double_exponential_smoothing") {
        (
            ev.eval_scalar(req(c, 1)?, ts)?,
            ev.eval_scalar(req(c, 2)?, ts)?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let keep_name = matches!(name, "last_over_time" | "first_over_time");
    let n = rd.series.len();
    let batch = series_batch(
        &rd,
        matches!(
            name,
            "rate"
                | "increase"
                | "delta"
                | "min_over_time"
                | "max_over_time"
                | "count_over_time"
                | "present_over_time"
                | "first_over_time"
                | "last_over_time"
        ),
    );
    // Each series' values need nothing from the others: computed on two threads when
    // there are many (the helper gets its own handles on the data), handed to the sink in
    // series order on this one.
    let owned = Arc::new(OwnedStepArgs {
        rd,
        name,
        over_time: over_time_op(name),
        param,
        sf,
        tf,
    });
    let steps = ts.len();
    let work = {
        let owned = owned.clone();
        Arc::new(move |scratch: &mut StepScratch, i: usize| {
            let args = owned.args();
            let mut out = SeriesSteps::with_steps(steps);
            let r = series_steps(&args, &owned.rd.series[i], scratch, &mut out);
            (i, r.map(|()| out))
        })
    };
    crate::par::ordered((0..n).collect(), batch, work, |(i, r)| {
        ev.check_cost(ts.len())?;
        let mut out = r?;
        ev.warnings.append(&mut out.warnings);
        let s = &owned.rd.series[i];
        sink.begin(&s.m, s.drop_name || !keep_name, n);
        out.drain_into(sink);
        Ok(())
    })
}

/// What a range function's per-series work needs, owned, so that a kept helper thread can
/// hold it: see [`StepArgs`].
struct OwnedStepArgs {
    rd: RangeData,
    name: &'static str,
    over_time: Option<OverTime>,
    param: Vec<f64>,
    sf: Vec<f64>,
    tf: Vec<f64>,
}

impl OwnedStepArgs {
    fn args(&self) -> StepArgs<'_> {
        StepArgs {
            rd: &self.rd,
            name: self.name,
            over_time: self.over_time,
            param: &self.param,
            sf: &self.sf,
            tf: &self.tf,
        }
    }
}

/// Series per batch when a range function's series are shared between two threads: about
/// [`BATCH_WORK`] sample visits each, so that a batch is worth handing over (a thread's
/// hand-over costs some microseconds) whether a series costs one pass over its samples
/// (`one_pass`: `rate` & co., `min/max_over_time` and the `*_over_time` that look at a
/// window's ends or length) or a pass over its window at every step (`avg_over_time`,
/// `deriv`, `quantile_over_time`…).
fn series_batch(rd: &RangeData, one_pass: bool) -> usize {
    const BATCH_WORK: usize = 16 * 1024;
    let n = rd.series.len().max(1);
    let per_series = rd.series.iter().map(|s| s.pts.len()).sum::<usize>() / n;
    let steps = rd.ends.len();
    let cost = if one_pass {
        per_series + steps
    } else {
        // The share of a series' samples in one window, times the steps.
        let (lo, hi) = (rd.ends.iter().min(), rd.ends.iter().max());
        let span = match (lo, hi) {
            (Some(lo), Some(hi)) => (hi - lo + rd.range).max(1),
            _ => 1,
        };
        let per_window = (per_series as u128 * rd.range.max(0) as u128 / span as u128) as usize;
        steps * per_window.max(1)
    };
    (BATCH_WORK / cost.max(1)).clamp(2, 512)
}

/// One series' values at the steps that have one, and the warnings computing them raised.
#[derive(Default)]
struct SeriesSteps {
    /// The values while all are floats (nearly always), 16 bytes a step, no drop work.
    floats: Vec<(u32, f64)>,
    /// All values, in step order, once one is not a float (`floats` is then empty).
    vals: Vec<(u32, SampleValue)>,
    warnings: Vec<String>,
}

impl SeriesSteps {
    /// Room for a value at each of `steps` steps.
    fn with_steps(steps: usize) -> SeriesSteps {
        SeriesSteps {
            floats: Vec::with_capacity(steps),
            ..SeriesSteps::default()
        }
    }

    fn push_float(&mut self, step: usize, v: f64) {
        if self.vals.is_empty() {
            self.floats.push((step as u32, v));
        } else {
            self.vals.push((step as u32, SampleValue::Float(v)));
        }
    }

    fn push(&mut self, step: usize, v: SampleValue) {
        match v {
            SampleValue::Float(f) => self.push_float(step, f),
            v => {
                if self.vals.is_empty() {
                    self.vals.extend(
                        self.floats
                            .drain(..)
                            .map(|(i, f)| (i, SampleValue::Float(f))),
                    );
                }
                self.vals.push((step as u32, v));
            }
        }
    }

    /// Every value, in step order, to `sink`.
    fn drain_into(self, sink: &mut dyn Sink) {
        for (i, f) in self.floats {
            sink.push(i as usize, SampleValue::Float(f));
        }
        for (i, v) in self.vals {
            sink.push(i as usize, v);
        }
    }
}

/// Buffers one thread reuses from series to series.
#[derive(Default)]
struct StepScratch {
    pairs: Vec<FloatSample>,
    vals: Vec<f64>,
    over_time_vals: Vec<f64>,
    /// A float-only series as (time, value) pairs, for the general path.
    mixed: Vec<(i64, SampleValue)>,
    regression: RegressionSums,
}

/// What [`series_steps`] needs besides the series: the range data and the function's
/// other arguments (one value per step).
struct StepArgs<'a> {
    rd: &'a RangeData,
    name: &'a str,
    over_time: Option<OverTime>,
    param: &'a [f64],
    sf: &'a [f64],
    tf: &'a [f64],
}

/// A range function's value for one series at every step that has one, in step order.
fn series_steps(
    args: &StepArgs<'_>,
    s: &RSeries,
    scratch: &mut StepScratch,
    out: &mut SeriesSteps,
) -> Result<(), Error> {
    let StepArgs {
        rd,
        name,
        over_time,
        param,
        sf,
        tf,
    } = *args;
    let ts = &rd.ends;
    let floats = matches!(s.pts, Points::Floats(_));
    if floats && matches!(name, "rate" | "increase" | "delta") {
        float_rate_steps(rd, s, name, |i, v| out.push_float(i, v));
        return Ok(());
    }
    if let Some(op) = over_time
        && floats
    {
        float_over_time_steps(rd, s, op, &mut scratch.over_time_vals, |i, v| {
            out.push_float(i, v)
        });
        return Ok(());
    }
    let mut cur = rd.cursor();
    // Scratch for a window's floats, reused from step to step and series to series.
    if let Points::Floats(f) = &s.pts
        && matches!(name, "deriv" | "predict_linear")
    {
        // The regression straight over each window's slice of the stored samples, from
        // running sums when the samples allow.
        let sums = &mut scratch.regression;
        let exact = sums.fill(f);
        let mut cur = rd.cursor();
        for (i, &at) in rd.at.iter().enumerate() {
            let (lo, hi) = rd.bounds(s, i, &mut cur);
            let w = &f[lo..hi];
            if w.len() < 2 {
                continue;
            }
            let icpt = if name == "deriv" { w[0].t } else { at };
            let (slope, intercept) = exact
                .then(|| sums.regression(f, lo, hi, icpt))
                .flatten()
                .unwrap_or_else(|| linear_regression(w, icpt));
            let v = if name == "deriv" {
                slope
            } else {
                slope * param[i] + intercept
            };
            out.push_float(i, v);
        }
        return Ok(());
    }
    let StepScratch {
        pairs, vals, mixed, ..
    } = scratch;
    let pts = s.pts.as_pairs(mixed);
    for i in 0..ts.len() {
        let (lo, hi) = rd.bounds(s, i, &mut cur);
        let w = &pts[lo..hi];
        if w.is_empty() {
            continue;
        }
        let end = rd.ends[i];
        let v: Option<SampleValue> = match name {
            "rate" | "increase" | "delta" => extrapolated(
                &mut out.warnings,
                w,
                end - rd.range,
                end,
                rd.range,
                name != "delta",
                name == "rate",
                name,
            ),
            "irate" | "idelta" => {
                if w.len() < 2 {
                    None
                } else {
                    let (pt, pv) = &w[w.len() - 2];
                    let (lt, lv) = &w[w.len() - 1];
                    match (pv, lv) {
                        (SampleValue::Float(p), SampleValue::Float(l)) => {
                            let mut r = l - p;
                            if name == "irate" && l < p {
                                r = *l;
                            }
                            let dt = (lt - pt) as f64 / 1000.0;
                            if dt == 0.0 {
                                None
                            } else if name == "irate" {
                                Some(SampleValue::Float(r / dt))
                            } else {
                                Some(SampleValue::Float(r))
                            }
                        }
                        (SampleValue::Histogram(p), SampleValue::Histogram(l)) => {
                            let dt = (lt - pt) as f64 / 1000.0;
                            let d = if name == "irate" && h::is_reset(p, l) {
                                Some((**l).clone())
                            } else {
                                h::sub(l, p)
                            };
                            if name == "irate" {
                                d.map(|mut d| {
                                    d.counter_reset_hint = model::CounterResetHint::Gauge;
                                    SampleValue::Histogram(Arc::new(h::scale(&d, 1.0 / dt)))
                                })
                            } else {
                                d.map(|d| SampleValue::Histogram(Arc::new(d)))
                            }
                        }
                        _ => None,
                    }
                }
            }
            "deriv" => {
                let f = fill_floats(pairs, w);
                if f.len() < 2 {
                    None
                } else {
                    Some(SampleValue::Float(linear_regression(f, f[0].t).0))
                }
            }
            "predict_linear" => {
                let f = fill_floats(pairs, w);
                if f.len() < 2 {
                    None
                } else {
                    let (slope, icpt) = linear_regression(f, rd.at[i]);
                    Some(SampleValue::Float(slope * param[i] + icpt))
                }
            }
            "holt_winters" | "double_exponential_smoothing" => {
                let (a, b) = (sf[i], tf[i]);
                if a <= 0.0 || a >= 1.0 {
                    return Err(Error::Execution(format!(
                        "invalid smoothing factor. Expected: 0 < sf < 1, got: {a}"
                    )));
                }
                if b <= 0.0 || b >= 1.0 {
                    return Err(Error::Execution(format!(
                        "invalid trend factor. Expected: 0 < tf < 1, got: {b}"
                    )));
                }
                let f = fill_floats(pairs, w);
                if f.len() < 2 {
                    None
                } else {
                    let (mut s0, mut s1) = (0.0, f[0].v);
                    let mut tr = f[1].v - f[0].v;
                    for (k, p) in f.iter().enumerate().skip(1) {
                        let x = a * p.v;
                        if k > 1 {
                            tr = b * (s1 - s0) + (1.0 - b) * tr;
                        }
                        let y = (1.0 - a) * (s1 + tr);
                        s0 = s1;
                        s1 = x + y;
                    }
                    Some(SampleValue::Float(s1))
                }
            }
            "changes" | "resets" => {
                let mut n = 0;
                for k in 1..w.len() {
                    let hit = match (&w[k - 1].1, &w[k].1) {
                        (SampleValue::Float(p), SampleValue::Float(c)) => {
                            if name == "changes" {
                                p != c && !(p.is_nan() && c.is_nan())
                            } else {
                                c < p
                            }
                        }
                        (SampleValue::Histogram(p), SampleValue::Histogram(c)) => {
                            if name == "changes" {
                                !h::equal(p, c)
                            } else {
                                h::is_reset(p, c)
                            }
                        }
                        // A switch between float and histogram is a change, not a reset.
                        _ => name == "changes",
                    };
                    if hit {
                        n += 1;
                    }
                }
                Some(SampleValue::Float(n as f64))
            }
            "count_over_time" => Some(SampleValue::Float(w.len() as f64)),
            "present_over_time" => Some(SampleValue::Float(1.0)),
            "last_over_time" => Some(w[w.len() - 1].1.clone()),
            "first_over_time" => Some(w[0].1.clone()),
            "ts_of_last_over_time" => Some(SampleValue::Float(w[w.len() - 1].0 as f64 / 1000.0)),
            "ts_of_first_over_time" => Some(SampleValue::Float(w[0].0 as f64 / 1000.0)),
            "sum_over_time" | "avg_over_time" => {
                let nh = w
                    .iter()
                    .filter(|p| matches!(p.1, SampleValue::Histogram(_)))
                    .count();
                if nh == w.len() {
                    let hs: Vec<&model::FloatHistogram> =
                        w.iter().filter_map(|p| hist(&p.1)).collect();
                    let r = if name == "sum_over_time" {
                        h::sum(&hs)
                    } else {
                        h::avg(&hs)
                    };
                    r.map(|x| SampleValue::Histogram(Arc::new(x)))
                } else if nh > 0 {
                    out.warnings.push(format!("PromQL warning: encountered a mix of histograms and floats for metric name in {name}"));
                    None
                } else {
                    let f = fill_vals(vals, w);
                    Some(SampleValue::Float(if name == "sum_over_time" {
                        kahan_sum(f.iter().copied())
                    } else {
                        mean(f)
                    }))
                }
            }
            "min_over_time" | "max_over_time" | "ts_of_min_over_time" | "ts_of_max_over_time" => {
                let f = fill_floats(pairs, w);
                if f.is_empty() {
                    None
                } else {
                    let max = name.contains("max");
                    let ts_of = name.starts_with("ts_of");
                    let mut best = f[0];
                    for &p in &f[1..] {
                        let better = if max { p.v > best.v } else { p.v < best.v };
                        let tie = ts_of && p.v == best.v;
                        if better || tie || best.v.is_nan() {
                            best = p;
                        }
                    }
                    if name.starts_with("ts_of") {
                        Some(SampleValue::Float(best.t as f64 / 1000.0))
                    } else {
                        Some(SampleValue::Float(best.v))
                    }
                }
            }
            "stddev_over_time" | "stdvar_over_time" => {
                let f = fill_vals(vals, w);
                if f.is_empty() {
                    None
                } else {
                    let v = variance(f);
                    Some(SampleValue::Float(if name == "stddev_over_time" {
                        v.sqrt()
                    } else {
                        v
                    }))
                }
            }
            "quantile_over_time" => {
                let f = fill_vals(vals, w);
                if f.is_empty() {
                    None
                } else {
                    Some(SampleValue::Float(quantile(param[i], f)))
                }
            }
            "mad_over_time" => {
                let f = fill_vals(vals, w);
                if f.is_empty() {
                    None
                } else {
                    let med = quantile(0.5, f);
                    let mut d: Vec<f64> = f.iter().map(|x| (x - med).abs()).collect();
                    Some(SampleValue::Float(quantile(0.5, &mut d)))
                }
            }
            other => {
                return Err(Error::BadData(format!(
                    "function {other}() is not supported by this engine (argument type {})",
                    res_type(&Res::Range(RangeData {
                        series: Vec::new(),
                        range: 0,
                        ends: Vec::new(),
                        at: Vec::new()
                    }))
                )));
            }
        };
        if let Some(v) = v {
            out.push(i, v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smp(name: &str, v: f64) -> Smp {
        Smp {
            m: Arc::new(Labels::from_pairs([("s", name)])),
            v: SampleValue::Float(v),
            drop_name: false,
        }
    }

    /// `(step, value bits)` with every NaN written as one NaN, to compare results.
    fn canon_nan(v: Vec<(usize, u64)>) -> Vec<(usize, u64)> {
        v.into_iter()
            .map(|(i, b)| {
                (
                    i,
                    if f64::from_bits(b).is_nan() {
                        0x7ff8 << 48
                    } else {
                        b
                    },
                )
            })
            .collect()
    }

    /// A float series over `ends` with windows of `range`, and its values.
    fn one_series(
        pts: Vec<(i64, SampleValue)>,
        range: i64,
        ends: Vec<i64>,
    ) -> (RangeData, RSeries, Vec<f64>) {
        let rd = RangeData {
            series: Vec::new(),
            range,
            at: ends.clone(),
            ends,
        };
        let vals: Vec<f64> = pts.iter().filter_map(|p| p.1.float()).collect();
        let s = RSeries {
            m: Arc::new(Labels::default()),
            drop_name: true,
            pts: Points::from_mixed(pts),
        };
        (rd, s, vals)
    }

    fn names(v: &[Smp]) -> Vec<&str> {
        v.iter().map(|s| s.m.get("s").unwrap_or("")).collect()
    }

    /// The byte key the fused aggregation looks groups up by separates exactly the label
    /// sets `group_key` separates.
    #[test]
    fn group_key_bytes_agree_with_group_key() {
        use promql_parser::parser::{Expr, LabelModifier};
        let sets: Vec<Labels> = [
            vec![("__name__", "a"), ("job", "x"), ("i", "1")],
            vec![("__name__", "b"), ("job", "x"), ("i", "1")],
            vec![("__name__", "a"), ("job", "x"), ("i", "2")],
            vec![("__name__", "a"), ("job", "xi"), ("i", "")],
            vec![("__name__", "a"), ("jobx", ""), ("i", "1")],
            vec![("job", "x")],
        ]
        .into_iter()
        .map(|p| Labels::from_pairs(p.into_iter().filter(|(_, v)| !v.is_empty())))
        .collect();
        let modifier = |q: &str| -> Option<LabelModifier> {
            match promql_parser::parser::parse(q).unwrap() {
                Expr::Aggregate(a) => a.modifier,
                _ => unreachable!(),
            }
        };
        for q in [
            "sum by (job) (m)",
            "sum without (i) (m)",
            "sum(m)",
            "sum by (__name__, i) (m)",
        ] {
            let md = modifier(q);
            for a in &sets {
                for b in &sets {
                    let (mut ka, mut kb) = (Vec::new(), Vec::new());
                    group_key_bytes(a, &md, &mut ka);
                    group_key_bytes(b, &md, &mut kb);
                    assert_eq!(
                        ka == kb,
                        group_key(a, &md) == group_key(b, &md),
                        "{q}: {a:?} vs {b:?}"
                    );
                }
            }
        }
    }

    /// The sliding `min/max_over_time` answers what a pass over each window answers (the
    /// general path's loop), with NaNs, zeros of both signs, repeats and gaps.
    #[test]
    fn sliding_extremes_match_a_pass_over_each_window() {
        let mut rng = model::XorShift64::new(0x2545_f491_4f6c_dd1d);
        let mut rnd = move || rng.next_u64();
        let pick = [f64::NAN, 0.0, -0.0, 1.0, -1.0, 2.0, 2.0, 3.5];
        for _ in 0..300 {
            let mut t = 0;
            let pts: Vec<(i64, SampleValue)> = (0..(rnd() % 60) as usize)
                .map(|_| {
                    t += 1 + (rnd() % 40) as i64 * 1000;
                    (t, SampleValue::Float(pick[(rnd() % 8) as usize]))
                })
                .collect();
            let range = 1000 * (1 + (rnd() % 90) as i64);
            let ends: Vec<i64> = (0..40).map(|i| i * 15_000).collect();
            let (rd, s, vals) = one_series(pts, range, ends);
            for max in [true, false] {
                let mut got = Vec::new();
                sliding_extreme_steps(&rd, &s, &vals, max, |i, v| got.push((i, v.to_bits())));
                let mut want = Vec::new();
                for i in 0..rd.ends.len() {
                    let (lo, hi) = rd.window(&s, i);
                    let w = &vals[lo..hi];
                    let Some(&first) = w.first() else { continue };
                    let mut best = first;
                    for &p in &w[1..] {
                        if (if max { p > best } else { p < best }) || best.is_nan() {
                            best = p;
                        }
                    }
                    want.push((i, best.to_bits()));
                }
                assert_eq!(canon_nan(got), canon_nan(want), "max={max} range={range}");
            }
        }
    }

    /// Two windows summed side by side give each window's `kahan_sum` and `mean` bit for
    /// bit, also when a window holds NaN, infinities, huge values that overflow the sum,
    /// signed zeros or nothing, and when the windows of two steps differ in length.
    #[test]
    fn paired_sums_match_one_window_at_a_time() {
        let mut rng = model::XorShift64::new(0x9e37_79b9_7f4a_7c15);
        let mut rnd = move || rng.next_u64();
        for round in 0..400 {
            let mut t = 0;
            let pts: Vec<(i64, SampleValue)> = (0..(rnd() % 80) as usize)
                .map(|_| {
                    t += 1 + (rnd() % 30) as i64 * 1000;
                    let v = match rnd() % 16 {
                        0 if round % 3 == 0 => f64::NAN,
                        1 if round % 5 == 0 => f64::INFINITY,
                        2 if round % 7 == 0 => f64::NEG_INFINITY,
                        3 if round % 2 == 0 => f64::MAX * 0.75,
                        4 => -0.0,
                        5 => 1e16,
                        6 => -1e-3,
                        _ => (rnd() % 10_000) as f64 / 100.0,
                    };
                    (t, SampleValue::Float(v))
                })
                .collect();
            let range = 1000 * (1 + (rnd() % 120) as i64);
            let steps = 1 + (rnd() % 41) as i64;
            let ends: Vec<i64> = (0..steps)
                .map(|i| i * (1000 + (rnd() % 3) as i64 * 7000))
                .collect();
            let mut ends = ends;
            ends.sort();
            let (rd, s, vals) = one_series(pts, range, ends);
            for avg in [true, false] {
                let mut got = Vec::new();
                paired_sum_steps(&rd, &s, &vals, avg, |i, v| got.push((i, v.to_bits())));
                let mut want = Vec::new();
                for i in 0..rd.ends.len() {
                    let (lo, hi) = rd.window(&s, i);
                    let w = &vals[lo..hi];
                    if w.is_empty() {
                        continue;
                    }
                    let v = if avg {
                        mean(w)
                    } else {
                        kahan_sum(w.iter().copied())
                    };
                    want.push((i, v.to_bits()));
                }
                assert_eq!(canon_nan(got), canon_nan(want), "avg={avg} round={round}");
            }
        }
    }

    /// The regression from running sums is `linear_regression`'s bit for bit wherever it
    /// answers: whole and odd seconds apart, integer and fractional values, values near
    /// the 2^53 bound, constant runs, NaN and infinities, intercepts at the window's first
    /// sample (`deriv`) and at other times (`predict_linear`); and it does answer most
    /// whole-second windows.
    #[test]
    fn regression_sums_match_linear_regression() {
        let mut rng = model::XorShift64::new(0x5851_f42d_4c95_7f2d);
        let mut rnd = move || rng.next_u64();
        let (mut exact, mut windows) = (0, 0);
        for round in 0..600 {
            let odd_times = round % 7 == 0;
            let kind = round % 7;
            let mut t = (rnd() % 1_000_000) as i64 * 1000 - 500_000_000;
            let mut v = 0.0f64;
            let f: Vec<FloatSample> = (0..2 + (rnd() % 90) as usize)
                .map(|_| {
                    t += 1000 * (1 + (rnd() % 30) as i64)
                        + if odd_times { (rnd() % 999) as i64 } else { 0 };
                    v = match (kind, rnd() % 10) {
                        (_, 0) => v, // a run of equal values
                        (0, _) => (rnd() % 1_000_000) as f64 * 4096.0,
                        (1, _) => (rnd() % 100) as f64 / 100.0,
                        (2, _) => ((rnd() % 2_000) as f64 - 1_000.0) * 1e12,
                        (3, 1) if round % 3 == 0 => f64::NAN,
                        (3, 2) if round % 4 == 0 => f64::INFINITY,
                        (3, _) => (rnd() % 50) as f64 - 25.0,
                        // Free bytes in 4 KiB pages: sums past 2^53, exact as multiples.
                        (4, _) => ((rnd() % 1_000_000) + 50_000_000) as f64 * 4096.0,
                        // Multiples of 8 near 2^56: sums past 2^56, not exact.
                        (5, _) => ((1u64 << 53) - (rnd() % 1000)) as f64 * 8.0,
                        _ => 9.007e15 - (rnd() % 10) as f64,
                    };
                    FloatSample { t, v }
                })
                .collect();
            let mut sums = RegressionSums::default();
            if !sums.fill(&f) {
                assert!(odd_times);
                continue;
            }
            for _ in 0..20 {
                let lo = (rnd() as usize) % (f.len() - 1);
                let hi = lo + 2 + (rnd() as usize) % (f.len() - lo - 1);
                let at = match rnd() % 3 {
                    0 => f[lo].t,
                    1 => f[hi - 1].t + 60_000 * (rnd() % 100) as i64,
                    _ => f[lo].t + (rnd() % 100_000) as i64,
                };
                windows += 1;
                let Some(got) = sums.regression(&f, lo, hi, at) else {
                    continue;
                };
                exact += 1;
                let want = linear_regression(&f[lo..hi], at);
                let bits = |(a, b): (f64, f64)| {
                    let c = |x: f64| {
                        if x.is_nan() {
                            0x7ff8 << 48
                        } else {
                            x.to_bits()
                        }
                    };
                    (c(a), c(b))
                };
                assert_eq!(
                    bits(got),
                    bits(want),
                    "round {round} window {lo}..{hi} at {at}"
                );
            }
        }
        assert!(
            exact * 2 > windows,
            "{exact} of {windows} windows answered from sums"
        );
    }

    #[test]
    fn topk_ties_resolve_through_prometheus_heap() {
        // Go's heap holds [a=5, b=5] with a at the root; 7 replaces the
        // root, so Prometheus answers {7, b} — a stable sort would keep a.
        let got = select_k(vec![smp("a", 5.0), smp("b", 5.0), smp("c", 7.0)], 2, true);
        assert_eq!(names(&got), ["c", "b"]);
        let got = select_k(vec![smp("a", 5.0), smp("b", 5.0), smp("c", 3.0)], 2, false);
        assert_eq!(names(&got), ["c", "b"]);
        // NaN is below every number for topk and is replaced first.
        let got = select_k(
            vec![smp("n", f64::NAN), smp("a", 1.0), smp("b", 2.0)],
            2,
            true,
        );
        assert_eq!(names(&got), ["b", "a"]);
    }
}
