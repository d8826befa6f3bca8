//! Float native-histogram arithmetic for the evaluator: schema alignment, `+`/`-`/scaling,
//! counter-reset detection, and the histogram functions' math (quantile, fraction, stdvar).
//!
//! Buckets are handled as `index → population` maps; a result is rebuilt into compact spans.
//! Histograms of different exponential schemas are added at the coarser schema; custom-bucket
//! histograms (schema −53) with different bounds are first merged onto the bounds they share.

use crate::SampleValue;
use model::{CounterResetHint, FloatHistogram, Span};
use std::collections::BTreeMap;
use std::sync::Arc;

const CUSTOM: i32 = model::CUSTOM_BUCKETS_SCHEMA;

fn expand(spans: &[Span], buckets: &[f64]) -> BTreeMap<i32, f64> {
    let mut m = BTreeMap::new();
    let mut idx = 0i32;
    let mut k = 0usize;
    for s in spans {
        idx += s.offset;
        for _ in 0..s.length {
            if let Some(&v) = buckets.get(k) {
                *m.entry(idx).or_insert(0.0) += v;
            }
            k += 1;
            idx += 1;
        }
    }
    m
}

fn collapse(m: &BTreeMap<i32, f64>) -> (Vec<Span>, Vec<f64>) {
    let mut spans: Vec<Span> = Vec::new();
    let mut buckets = Vec::new();
    let mut next: Option<i32> = None;
    for (&i, &v) in m {
        if v == 0.0 {
            continue;
        }
        match next {
            Some(n) if n == i => spans.last_mut().expect("a span exists").length += 1,
            _ => {
                let offset = match next {
                    None => i,
                    Some(n) => i - n,
                };
                spans.push(Span { offset, length: 1 });
            }
        }
        buckets.push(v);
        next = Some(i + 1);
    }
    (spans, buckets)
}

fn reduce(m: BTreeMap<i32, f64>, from: i32, to: i32) -> BTreeMap<i32, f64> {
    if from == to || from == CUSTOM {
        return m;
    }
    let d = from - to;
    let mut out = BTreeMap::new();
    for (i, v) in m {
        *out.entry(((i - 1) >> d) + 1).or_insert(0.0) += v;
    }
    out
}

struct Parts {
    pos: BTreeMap<i32, f64>,
    neg: BTreeMap<i32, f64>,
}

fn parts(h: &FloatHistogram, schema: i32) -> Parts {
    Parts {
        pos: reduce(
            expand(&h.positive_spans, &h.positive_buckets),
            h.schema,
            schema,
        ),
        neg: reduce(
            expand(&h.negative_spans, &h.negative_buckets),
            h.schema,
            schema,
        ),
    }
}

fn build(
    template: &FloatHistogram,
    schema: i32,
    p: Parts,
    zc: f64,
    count: f64,
    sum: f64,
) -> FloatHistogram {
    let (ps, pb) = collapse(&p.pos);
    let (ns, nb) = collapse(&p.neg);
    FloatHistogram {
        counter_reset_hint: CounterResetHint::Unknown,
        schema,
        zero_threshold: template.zero_threshold,
        zero_count: zc,
        count,
        sum,
        positive_spans: ps,
        positive_buckets: pb,
        negative_spans: ns,
        negative_buckets: nb,
        custom_values: template.custom_values.clone(),
    }
}

/// `h` with its custom buckets merged onto `bounds`, a subset of its own bounds: each bucket
/// goes to the first new bucket whose upper bound is at least its own.
fn rebucket(h: &FloatHistogram, bounds: &[f64]) -> FloatHistogram {
    let mut m = BTreeMap::new();
    for (i, v) in expand(&h.positive_spans, &h.positive_buckets) {
        let upper = usize::try_from(i)
            .ok()
            .and_then(|i| h.custom_values.get(i))
            .copied()
            .unwrap_or(f64::INFINITY);
        let j = bounds.partition_point(|&b| b < upper);
        let j = i32::try_from(j).expect("bucket count fits i32");
        *m.entry(j).or_insert(0.0) += v;
    }
    let (spans, buckets) = collapse(&m);
    FloatHistogram {
        positive_spans: spans,
        positive_buckets: buckets,
        custom_values: bounds.to_vec(),
        ..h.clone()
    }
}

/// Two custom-bucket histograms with different bounds, both rebucketed onto the bounds they
/// share (Prometheus' reconciliation of mismatched custom buckets); `None` when the bounds match.
fn reconcile(a: &FloatHistogram, b: &FloatHistogram) -> Option<(FloatHistogram, FloatHistogram)> {
    if a.schema != CUSTOM || b.schema != CUSTOM || a.custom_values == b.custom_values {
        return None;
    }
    let common: Vec<f64> = a
        .custom_values
        .iter()
        .copied()
        .filter(|v| b.custom_values.contains(v))
        .collect();
    Some((rebucket(a, &common), rebucket(b, &common)))
}

/// `a + sign·b`, or `None` if the two cannot be combined (custom with exponential buckets).
fn combine(a: &FloatHistogram, b: &FloatHistogram, sign: f64) -> Option<FloatHistogram> {
    if (a.schema == CUSTOM) != (b.schema == CUSTOM) {
        return None;
    }
    if let Some((a, b)) = reconcile(a, b) {
        return combine(&a, &b, sign);
    }
    let schema = a.schema.min(b.schema);
    let mut pa = parts(a, schema);
    let pb = parts(b, schema);
    for (i, v) in pb.pos {
        *pa.pos.entry(i).or_insert(0.0) += sign * v;
    }
    for (i, v) in pb.neg {
        *pa.neg.entry(i).or_insert(0.0) += sign * v;
    }
    let mut t = a.clone();
    t.zero_threshold = a.zero_threshold.max(b.zero_threshold);
    let mut r = build(
        &t,
        schema,
        pa,
        a.zero_count + sign * b.zero_count,
        a.count + sign * b.count,
        a.sum + sign * b.sum,
    );
    if a.counter_reset_hint == CounterResetHint::Gauge
        || b.counter_reset_hint == CounterResetHint::Gauge
    {
        r.counter_reset_hint = CounterResetHint::Gauge;
    }
    Some(r)
}

pub(crate) fn add(a: &FloatHistogram, b: &FloatHistogram) -> Option<FloatHistogram> {
    combine(a, b, 1.0)
}

pub(crate) fn sub(a: &FloatHistogram, b: &FloatHistogram) -> Option<FloatHistogram> {
    let mut r = combine(a, b, -1.0)?;
    r.counter_reset_hint = CounterResetHint::Gauge;
    Some(r)
}

pub(crate) fn scale(h: &FloatHistogram, f: f64) -> FloatHistogram {
    let mut r = h.clone();
    r.zero_count *= f;
    r.count *= f;
    r.sum *= f;
    r.positive_buckets.iter_mut().for_each(|b| *b *= f);
    r.negative_buckets.iter_mut().for_each(|b| *b *= f);
    if f < 0.0 {
        r.counter_reset_hint = CounterResetHint::Gauge;
    }
    r
}

/// Every field of a histogram as a number: buckets by index, zero count, count, sum.
struct Fields {
    pos: BTreeMap<i32, f64>,
    neg: BTreeMap<i32, f64>,
    zc: f64,
    count: f64,
    sum: f64,
}

/// The compensated field-wise sum of `scale·h` over `hs` (already on one bucket layout).
fn kahan_fold(hs: &[(Parts, &FloatHistogram)], scale: f64) -> Fields {
    fn inc(acc: &mut (f64, f64), x: f64) {
        crate::functions::kahan_add(&mut acc.0, &mut acc.1, x);
    }
    let (mut pos, mut neg) = (BTreeMap::new(), BTreeMap::new());
    let (mut zc, mut count, mut sum) = ((0.0, 0.0), (0.0, 0.0), (0.0, 0.0));
    for (p, h) in hs {
        for (&i, &v) in &p.pos {
            inc(pos.entry(i).or_insert((0.0, 0.0)), v * scale);
        }
        for (&i, &v) in &p.neg {
            inc(neg.entry(i).or_insert((0.0, 0.0)), v * scale);
        }
        inc(&mut zc, h.zero_count * scale);
        inc(&mut count, h.count * scale);
        inc(&mut sum, h.sum * scale);
    }
    let done = |m: BTreeMap<i32, (f64, f64)>| m.into_iter().map(|(i, (v, c))| (i, v + c)).collect();
    Fields {
        pos: done(pos),
        neg: done(neg),
        zc: zc.0 + zc.1,
        count: count.0 + count.1,
        sum: sum.0 + sum.1,
    }
}

/// `hs` on one bucket layout: the coarsest exponential schema, or the custom bounds all share
/// (mismatched custom buckets are reconciled); `None` when custom and exponential mix.
fn align<'a>(
    hs: &[&'a FloatHistogram],
) -> Option<(FloatHistogram, Vec<(Parts, &'a FloatHistogram)>)> {
    let first = *hs.first()?;
    let custom = first.schema == CUSTOM;
    if hs.iter().any(|h| (h.schema == CUSTOM) != custom) {
        return None;
    }
    let mut template = first.clone();
    template.zero_threshold = hs.iter().map(|h| h.zero_threshold).fold(0.0, f64::max);
    if custom {
        let common: Vec<f64> = first
            .custom_values
            .iter()
            .copied()
            .filter(|v| hs.iter().all(|h| h.custom_values.contains(v)))
            .collect();
        template.custom_values = common.clone();
        let parts = hs
            .iter()
            .map(|&h| {
                let p = if h.custom_values == common {
                    parts(h, CUSTOM)
                } else {
                    parts(&rebucket(h, &common), CUSTOM)
                };
                (p, h)
            })
            .collect();
        return Some((template, parts));
    }
    template.schema = hs.iter().map(|h| h.schema).min().unwrap_or(first.schema);
    let parts = hs.iter().map(|&h| (parts(h, template.schema), h)).collect();
    Some((template, parts))
}

/// The hint of an aggregate: gauge if any input is a gauge, not-reset if every input is,
/// else unknown.
fn aggregate_hint(hs: &[&FloatHistogram]) -> CounterResetHint {
    if hs
        .iter()
        .any(|h| h.counter_reset_hint == CounterResetHint::Gauge)
    {
        CounterResetHint::Gauge
    } else if hs
        .iter()
        .all(|h| h.counter_reset_hint == CounterResetHint::NotCounterReset)
    {
        CounterResetHint::NotCounterReset
    } else {
        CounterResetHint::Unknown
    }
}

/// `sum` / `sum_over_time` of histograms, compensated (Kahan) field by field like Prometheus'.
pub(crate) fn sum(hs: &[&FloatHistogram]) -> Option<FloatHistogram> {
    let (t, ps) = align(hs)?;
    let f = kahan_fold(&ps, 1.0);
    let mut r = build(
        &t,
        t.schema,
        Parts {
            pos: f.pos,
            neg: f.neg,
        },
        f.zc,
        f.count,
        f.sum,
    );
    r.counter_reset_hint = aggregate_hint(hs);
    Some(r)
}

/// `avg` / `avg_over_time` of histograms: the compensated sum divided by the count, or, for a
/// field whose sum overflows, the compensated sum of each value divided by the count first.
pub(crate) fn avg(hs: &[&FloatHistogram]) -> Option<FloatHistogram> {
    let (t, ps) = align(hs)?;
    let n = hs.len() as f64;
    let direct = kahan_fold(&ps, 1.0);
    let scaled = kahan_fold(&ps, 1.0 / n);
    let pick = |s: f64, x: f64| if s.is_finite() { s / n } else { x };
    let merge = |d: BTreeMap<i32, f64>, x: &BTreeMap<i32, f64>| -> BTreeMap<i32, f64> {
        d.into_iter()
            .map(|(i, v)| (i, pick(v, x.get(&i).copied().unwrap_or(0.0))))
            .collect()
    };
    let mut r = build(
        &t,
        t.schema,
        Parts {
            pos: merge(direct.pos, &scaled.pos),
            neg: merge(direct.neg, &scaled.neg),
        },
        pick(direct.zc, scaled.zc),
        pick(direct.count, scaled.count),
        pick(direct.sum, scaled.sum),
    );
    r.counter_reset_hint = aggregate_hint(hs);
    Some(r)
}

/// A counter reset between `prev` and `cur`: an explicit hint, or any population decreasing.
pub(crate) fn is_reset(prev: &FloatHistogram, cur: &FloatHistogram) -> bool {
    match cur.counter_reset_hint {
        CounterResetHint::CounterReset => return true,
        CounterResetHint::NotCounterReset | CounterResetHint::Gauge => return false,
        CounterResetHint::Unknown => {}
    }
    if cur.count < prev.count || cur.zero_count < prev.zero_count {
        return true;
    }
    if (cur.schema == CUSTOM) != (prev.schema == CUSTOM) {
        return true;
    }
    if let Some((p, c)) = reconcile(prev, cur) {
        return is_reset(&p, &c);
    }
    if cur.schema > prev.schema || cur.zero_threshold != prev.zero_threshold {
        return true;
    }
    let s = cur.schema.min(prev.schema);
    let (p, c) = (parts(prev, s), parts(cur, s));
    p.pos
        .iter()
        .any(|(i, v)| c.pos.get(i).copied().unwrap_or(0.0) < *v)
        || p.neg
            .iter()
            .any(|(i, v)| c.neg.get(i).copied().unwrap_or(0.0) < *v)
}

/// The increase over `hs` (last − first, plus what was lost at each reset for counters).
pub(crate) fn histogram_rate(hs: &[&FloatHistogram], counter: bool) -> Option<FloatHistogram> {
    let first = hs[0];
    let last = hs[hs.len() - 1];
    let mut r = sub(last, first)?;
    if counter {
        let mut prev = first;
        for cur in &hs[1..] {
            if is_reset(prev, cur) {
                r = add(&r, prev)?;
            }
            prev = cur;
        }
    }
    r.counter_reset_hint = CounterResetHint::Gauge;
    Some(r)
}

/// `h / s`; dividing by zero keeps count, sum and zero count (now ±Inf or NaN) and removes all
/// buckets, as Prometheus does.
fn div(h: &FloatHistogram, s: f64) -> FloatHistogram {
    let mut r = h.clone();
    r.zero_count /= s;
    r.count /= s;
    r.sum /= s;
    if s == 0.0 {
        r.positive_spans.clear();
        r.positive_buckets.clear();
        r.negative_spans.clear();
        r.negative_buckets.clear();
    } else {
        r.positive_buckets.iter_mut().for_each(|b| *b /= s);
        r.negative_buckets.iter_mut().for_each(|b| *b /= s);
    }
    if s < 0.0 {
        r.counter_reset_hint = CounterResetHint::Gauge;
    }
    r
}

pub(crate) fn binop_scalar(
    op: &str,
    h: &Arc<FloatHistogram>,
    s: f64,
    scalar_left: bool,
) -> Option<SampleValue> {
    match (op, scalar_left) {
        ("*", _) => Some(SampleValue::Histogram(Arc::new(scale(h, s)))),
        ("/", false) => Some(SampleValue::Histogram(Arc::new(div(h, s)))),
        _ => None,
    }
}

pub(crate) fn binop_values(
    op: &str,
    l: &SampleValue,
    r: &SampleValue,
) -> Option<(SampleValue, bool)> {
    match (l, r) {
        (SampleValue::Histogram(a), SampleValue::Histogram(b)) => match op {
            "+" => Some((SampleValue::Histogram(Arc::new(add(a, b)?)), true)),
            "-" => Some((SampleValue::Histogram(Arc::new(sub(a, b)?)), true)),
            "==" => Some((l.clone(), equal(a, b))),
            "!=" => Some((l.clone(), !equal(a, b))),
            _ => None,
        },
        (SampleValue::Histogram(a), SampleValue::Float(f)) => match op {
            "*" => Some((SampleValue::Histogram(Arc::new(scale(a, *f))), true)),
            "/" => Some((SampleValue::Histogram(Arc::new(div(a, *f))), true)),
            _ => None,
        },
        (SampleValue::Float(f), SampleValue::Histogram(b)) => match op {
            "*" => Some((SampleValue::Histogram(Arc::new(scale(b, *f))), true)),
            _ => None,
        },
        _ => None,
    }
}

pub(crate) fn equal(a: &FloatHistogram, b: &FloatHistogram) -> bool {
    let (pa, pb) = (parts(a, a.schema), parts(b, b.schema));
    let clean = |m: BTreeMap<i32, f64>| -> Vec<(i32, f64)> {
        m.into_iter().filter(|x| x.1 != 0.0).collect()
    };
    a.schema == b.schema
        && a.count == b.count
        && a.sum == b.sum
        && a.zero_count == b.zero_count
        && a.zero_threshold == b.zero_threshold
        && a.custom_values == b.custom_values
        && clean(pa.pos) == clean(pb.pos)
        && clean(pa.neg) == clean(pb.neg)
}

/// Prometheus' text form of a histogram (used as a `count_values` label value).
pub(crate) fn to_string(h: &FloatHistogram) -> String {
    format!("{{count:{}, sum:{}}}", h.count, h.sum)
}

/// One bucket: lower, upper bound and population, ascending by bound.
fn buckets(h: &FloatHistogram) -> Vec<(f64, f64, f64)> {
    let mut out = Vec::new();
    if h.schema == CUSTOM {
        for (i, v) in expand(&h.positive_spans, &h.positive_buckets) {
            let i = i as usize;
            let lower = if i == 0 {
                f64::NEG_INFINITY
            } else {
                h.custom_values.get(i - 1).copied().unwrap_or(f64::INFINITY)
            };
            let upper = h.custom_values.get(i).copied().unwrap_or(f64::INFINITY);
            out.push((lower, upper, v));
        }
        return out;
    }
    let base = 2f64.powf(2f64.powi(-h.schema));
    let bound = |i: i32| base.powi(i);
    let neg = expand(&h.negative_spans, &h.negative_buckets);
    for (&i, &v) in neg.iter().rev() {
        out.push((-bound(i), -bound(i - 1), v));
    }
    if h.zero_count > 0.0 || h.zero_threshold > 0.0 {
        out.push((-h.zero_threshold, h.zero_threshold, h.zero_count));
    }
    for (i, v) in expand(&h.positive_spans, &h.positive_buckets) {
        out.push((bound(i - 1), bound(i), v));
    }
    out
}

/// `histogram_quantile` on a native histogram.
pub(crate) fn quantile(q: f64, h: &FloatHistogram) -> f64 {
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    if h.count == 0.0 || q.is_nan() {
        return f64::NAN;
    }
    let bs = buckets(h);
    let rank = q * h.count;
    let mut cum = 0.0;
    let has_neg = !h.negative_buckets.is_empty();
    let has_pos = !h.positive_buckets.is_empty();
    // NaN observations (a NaN sum) are counted but in no bucket: a rank past the buckets'
    // total falls among them.
    let total: f64 = bs.iter().map(|b| b.2).sum();
    if h.sum.is_nan() && rank > total {
        return f64::NAN;
    }
    for (k, &(mut lo, up, c)) in bs.iter().enumerate() {
        if c == 0.0 {
            continue;
        }
        if cum + c >= rank || k == bs.len() - 1 {
            let mut frac = ((rank - cum) / c).clamp(0.0, 1.0);
            if h.schema == CUSTOM {
                if lo == f64::NEG_INFINITY {
                    if up <= 0.0 {
                        return up;
                    }
                    lo = 0.0;
                }
                if up == f64::INFINITY {
                    return lo;
                }
                return lo + (up - lo) * frac;
            }
            let zero_bucket = lo == -h.zero_threshold && up == h.zero_threshold;
            if zero_bucket {
                // One-sided histograms bound the zero bucket at 0; else it straddles zero.
                let mut up = up;
                if !has_neg && has_pos {
                    lo = 0.0;
                } else if has_neg && !has_pos {
                    up = 0.0;
                }
                return lo + (up - lo) * frac;
            }
            if lo > 0.0 {
                let (ll, lu) = (lo.log2(), up.log2());
                return (ll + (lu - ll) * frac).exp2();
            }
            frac = 1.0 - frac;
            let (ll, lu) = (lo.abs().log2(), up.abs().log2());
            return -(lu + (ll - lu) * frac).exp2();
        }
        cum += c;
    }
    f64::NAN
}

/// `histogram_fraction`: the share of observations between `lo` and `hi`.
///
/// Walks the buckets in ascending order accumulating a rank and interpolates the rank of
/// each limit inside the bucket that holds it: linearly in the zero bucket and in custom
/// buckets, exponentially (in log2 space) in the standard exponential buckets, so it is the
/// inverse of [`quantile`].
pub(crate) fn fraction(lo: f64, hi: f64, h: &FloatHistogram) -> f64 {
    if h.count == 0.0 || lo.is_nan() || hi.is_nan() {
        return f64::NAN;
    }
    if lo >= hi {
        return 0.0;
    }
    let only_pos = h.negative_buckets.is_empty() && !h.positive_buckets.is_empty();
    let only_neg = h.positive_buckets.is_empty() && !h.negative_buckets.is_empty();
    let mut rank = 0.0;
    let mut lower_rank = None;
    let mut upper_rank = None;
    for (mut bl, mut bu, c) in buckets(h) {
        let zero_bucket = bl <= 0.0 && bu >= 0.0;
        if zero_bucket {
            if only_pos {
                bl = 0.0;
            } else if only_neg {
                bu = 0.0;
            }
        }
        // A bucket of infinite width counts whole when the range reaches its infinity, else
        // not at all: a finite limit inside it sits at its finite end.
        let interpolate = |v: f64| -> f64 {
            if bl == f64::NEG_INFINITY {
                return rank + c;
            }
            if bu == f64::INFINITY {
                return rank;
            }
            if h.schema == CUSTOM || zero_bucket {
                return rank + c * (v - bl) / (bu - bl);
            }
            let (log_lo, log_up, log_v) = (bl.abs().log2(), bu.abs().log2(), v.abs().log2());
            let f = if v > 0.0 {
                (log_v - log_lo) / (log_up - log_lo)
            } else {
                1.0 - (log_v - log_up) / (log_lo - log_up)
            };
            rank + c * f
        };
        if lower_rank.is_none() && bl >= lo {
            lower_rank = Some(rank);
        }
        if upper_rank.is_none() && bl >= hi {
            upper_rank = Some(rank);
        }
        if lower_rank.is_some() && upper_rank.is_some() {
            break;
        }
        if lower_rank.is_none() && bl < lo && bu > lo {
            lower_rank = Some(interpolate(lo));
        }
        if upper_rank.is_none() && bl < hi && bu > hi {
            upper_rank = Some(interpolate(hi));
        }
        if lower_rank.is_some() && upper_rank.is_some() {
            break;
        }
        rank += c;
    }
    // NaN observations are counted but in no bucket: a limit past the last bucket takes the
    // buckets' total, so they are excluded from every fraction.
    let cap = |r: Option<f64>| r.unwrap_or(rank).min(h.count);
    (cap(upper_rank) - cap(lower_rank)) / h.count
}

/// `histogram_stdvar`: the variance estimated from bucket midpoints.
pub(crate) fn stdvar(h: &FloatHistogram) -> f64 {
    if h.count == 0.0 {
        return f64::NAN;
    }
    let mean = h.sum / h.count;
    let mut v = 0.0;
    for (lo, up, c) in buckets(h) {
        if c == 0.0 {
            continue;
        }
        let mid = if lo == -h.zero_threshold && up == h.zero_threshold {
            0.0
        } else if h.schema == CUSTOM {
            if up == f64::INFINITY {
                lo
            } else if lo == f64::NEG_INFINITY {
                up
            } else {
                (lo + up) / 2.0
            }
        } else if lo > 0.0 {
            (lo * up).sqrt()
        } else {
            -(lo * up).sqrt()
        };
        let d = mid - mean;
        v += c * d * d;
    }
    v / h.count
}

/// Positive and negative populations by bucket index, empty buckets removed (for comparing
/// histograms regardless of span layout).
pub(crate) fn bucket_map(h: &FloatHistogram) -> (BTreeMap<i32, f64>, BTreeMap<i32, f64>) {
    let clean = |m: BTreeMap<i32, f64>| m.into_iter().filter(|x| x.1 != 0.0).collect();
    (
        clean(expand(&h.positive_spans, &h.positive_buckets)),
        clean(expand(&h.negative_spans, &h.negative_buckets)),
    )
}

#[cfg(test)]
mod unit {
    use super::*;

    fn custom(bounds: &[f64], buckets: &[f64]) -> FloatHistogram {
        FloatHistogram {
            schema: CUSTOM,
            count: buckets.iter().sum(),
            positive_spans: vec![Span {
                offset: 0,
                length: u32::try_from(buckets.len()).expect("few buckets"),
            }],
            positive_buckets: buckets.to_vec(),
            custom_values: bounds.to_vec(),
            ..FloatHistogram::default()
        }
    }

    #[test]
    fn mismatched_custom_bounds_merge_onto_shared_bounds() {
        let a = custom(&[5.0], &[1.0, 2.0]);
        let b = custom(&[2.0, 5.0, 10.0], &[1.0, 1.0, 1.0, 1.0]);
        let s = add(&a, &b).expect("custom histograms combine");
        assert_eq!(s.custom_values, vec![5.0]);
        assert_eq!(s.positive_buckets, vec![3.0, 4.0]);
        assert_eq!(s.count, 7.0);
        // Growing after reconciliation is no counter reset.
        assert!(!is_reset(&a, &b));
        assert!(is_reset(&b, &custom(&[5.0], &[1.0, 1.0])));
    }

    #[test]
    fn fraction_interpolates_exponentially_and_inverts_quantile() {
        // schema 0, one bucket (1, 2] holding all 4 observations.
        let h = FloatHistogram {
            count: 4.0,
            positive_spans: vec![Span {
                offset: 1,
                length: 1,
            }],
            positive_buckets: vec![4.0],
            ..FloatHistogram::default()
        };
        let median = quantile(0.5, &h);
        assert!((median - 2f64.sqrt()).abs() < 1e-12, "{median}");
        assert!((fraction(0.0, median, &h) - 0.5).abs() < 1e-12);
        // A finite range inside the +Inf custom bucket counts nothing; up to +Inf it counts whole.
        let c = custom(&[1.0], &[1.0, 3.0]);
        assert_eq!(fraction(4.0, 5.0, &c), 0.0);
        assert_eq!(fraction(4.0, f64::INFINITY, &c), 0.75);
    }
}
