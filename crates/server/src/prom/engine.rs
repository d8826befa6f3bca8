//! The PromQL engine behind `/api/v1/query` and `/api/v1/query_range`: [`TsdbStorage`]
//! adapts one project of the `tsdb` store to [`promql::Storage`], and [`render`] writes a
//! [`promql::Value`] in Prometheus' JSON (`resultType`, string-encoded values, histograms).
//!
//! The engine never sees `tsdb`; this file is the only place the two meet. Samples are
//! charged to the query's [`SampleBudget`] while a series is decoded, so a query over too
//! much data stops with "too many samples" before it holds them all.

use std::fmt::Write as _;
use std::sync::Arc;

use model::{FloatHistogram, HistogramValue, Matcher};
use promql::{SampleBudget, SampleValue, Series, Value};

use super::api::{ErrorType, PromError, json_labels, json_point, json_str, json_time};
use super::read::json_histogram;

/// One project of the store, as the engine reads it.
pub struct TsdbStorage<'a> {
    pub db: &'a tsdb::Db,
    pub project: &'a str,
}

fn storage_err(e: tsdb::Error) -> promql::Error {
    promql::Error::Storage(e.to_string())
}

impl promql::Storage for TsdbStorage<'_> {
    fn select_each(
        &self,
        matchers: &[Matcher],
        mint_ms: i64,
        maxt_ms: i64,
        budget: &Arc<SampleBudget>,
        f: &mut dyn FnMut(usize, Series) -> Result<(), promql::Error>,
    ) -> Result<(), promql::Error> {
        // Sorted by labels, each label set once (tsdb's `select` merges its sources).
        let set = self
            .db
            .querier(self.project, mint_ms, maxt_ms)
            .select(matchers)
            .map_err(storage_err)?;
        let n = set.len();
        // Many series: chunks are decoded on two threads (each with its own read-ahead),
        // and `f` still sees the series one at a time in label order.
        let budget = budget.clone();
        promql::par::ordered(
            set.collect(),
            DECODE_BATCH,
            Arc::new(move |ra: &mut tsdb::ReadAhead, mut s: tsdb::Series| {
                load(&mut s, ra, &budget)
            }),
            |r| match r? {
                Some(x) => f(n, x),
                None => Ok(()),
            },
        )
    }
}

/// Series per batch when two threads decode a select (a batch's chunks mostly lie
/// together on disk, so each thread's read-ahead window serves its own batch).
const DECODE_BATCH: usize = 64;

/// One series' samples in the querier's range, charged to `budget`; `None` when it has none.
fn load(
    s: &mut tsdb::Series,
    ra: &mut tsdb::ReadAhead,
    budget: &Arc<SampleBudget>,
) -> Result<Option<Series>, promql::Error> {
    let mut floats = Vec::new();
    let mut over = None;
    s.floats_into_via(ra, &mut floats, |n| match budget.take(n) {
        Ok(()) => true,
        Err(e) => {
            over = Some(e);
            false
        }
    })
    .map_err(storage_err)?;
    if let Some(e) = over {
        return Err(e);
    }
    let mut histograms = Vec::new();
    if s.has_histograms() {
        for x in s.histograms() {
            let (t, h) = x.map_err(storage_err)?;
            let f = match h {
                HistogramValue::Int(h) => h.to_float(),
                HistogramValue::Float(f) => f,
            };
            histograms.push((t, Arc::new(f)));
        }
        budget.take(histograms.len())?;
    }
    if floats.is_empty() && histograms.is_empty() {
        return Ok(None);
    }
    Ok(Some(Series {
        metric: std::mem::take(&mut s.labels),
        floats,
        histograms,
    }))
}

/// The engine's error as Prometheus answers it (one `match`: kind → `errorType`).
pub fn to_prom_error(e: promql::Error) -> PromError {
    let kind = match e.kind() {
        promql::ErrorKind::BadData => ErrorType::BadData,
        promql::ErrorKind::Execution => ErrorType::Execution,
        promql::ErrorKind::Timeout => ErrorType::Timeout,
        promql::ErrorKind::Canceled => ErrorType::Canceled,
        promql::ErrorKind::Internal => ErrorType::Internal,
    };
    let message = match &e {
        promql::Error::Parse { message, .. } => format!("invalid parameter \"query\": {message}"),
        other => other.to_string(),
    };
    PromError::new(kind, message)
}

fn hist_point(out: &mut String, t: i64, h: &FloatHistogram) {
    out.push('[');
    json_time(out, t);
    out.push(',');
    json_histogram(out, h);
    out.push(']');
}

/// `{"resultType":…,"result":…}` for a query's value.
pub fn render(v: Value) -> String {
    let mut out = String::new();
    render_into(&mut out, v);
    out
}

/// A range query's series rendered per batch of about this many points (on two threads
/// when there are many).
const RENDER_BATCH_POINTS: usize = 4096;

/// One series of a matrix, `{"metric":…,"values":[…],"histograms":[…]}`, appended to `out`.
fn render_series(out: &mut String, s: &Series) {
    out.push_str("{\"metric\":");
    json_labels(out, &s.metric);
    if !s.floats.is_empty() {
        out.push_str(",\"values\":[");
        for (k, p) in s.floats.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            json_point(out, p.t, p.v);
        }
        out.push(']');
    }
    if !s.histograms.is_empty() {
        out.push_str(",\"histograms\":[");
        for (k, (t, h)) in s.histograms.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            hist_point(out, *t, h);
        }
        out.push(']');
    }
    out.push('}');
}

/// [`render`], appended to `out`.
pub fn render_into(out: &mut String, v: Value) {
    match &v {
        Value::Scalar { t, v } => {
            out.push_str("{\"resultType\":\"scalar\",\"result\":");
            json_point(out, *t, *v);
        }
        Value::String { t, v } => {
            out.push_str("{\"resultType\":\"string\",\"result\":[");
            json_time(out, *t);
            out.push(',');
            json_str(out, v);
            out.push(']');
        }
        Value::Vector(samples) => {
            out.push_str("{\"resultType\":\"vector\",\"result\":[");
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                json_labels(out, &s.metric);
                match &s.value {
                    SampleValue::Float(f) => {
                        out.push_str(",\"value\":");
                        json_point(out, s.t, *f);
                    }
                    SampleValue::Histogram(h) => {
                        out.push_str(",\"histogram\":");
                        hist_point(out, s.t, h);
                    }
                }
                out.push('}');
            }
            out.push(']');
        }
        // Below, where the value can be taken apart.
        Value::Matrix(_) => {}
    }
    if let Value::Matrix(series) = v {
        render_matrix(out, series);
    }
    out.push('}');
}

/// A matrix's `"resultType":"matrix","result":[…]`, appended to `out`. The text of one
/// series needs nothing from the others: written on two threads when there are many
/// points (the series shared with the helper), appended here in order.
fn render_matrix(out: &mut String, series: Vec<Series>) {
    out.push_str("{\"resultType\":\"matrix\",\"result\":[");
    let points: usize = series
        .iter()
        .map(|s| s.floats.len() + s.histograms.len())
        .sum();
    // About 30 bytes a float point: one allocation instead of a doubling series.
    out.reserve(points.saturating_mul(30).min(1 << 30));
    let per_series = points / series.len().max(1) + 1;
    let mut first = true;
    let series = Arc::new(series);
    let shared = series.clone();
    let r = promql::par::ordered(
        (0..series.len()).collect(),
        (RENDER_BATCH_POINTS / per_series).max(1),
        Arc::new(move |_: &mut (), i: usize| {
            let s = &shared[i];
            let mut text = String::with_capacity(64 + 30 * s.floats.len());
            render_series(&mut text, s);
            text
        }),
        |text| {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&text);
            Ok(())
        },
    );
    debug_assert!(r.is_ok(), "appending text cannot fail");
    out.push(']');
}

/// Prometheus' success envelope around a query's value, with `warnings` and `infos` when
/// there are: the value is written straight into the answer's buffer.
pub fn envelope_value(v: Value, warnings: &[String], infos: &[String]) -> String {
    let mut body = String::from("{\"status\":\"success\",\"data\":");
    render_into(&mut body, v);
    annotations(&mut body, warnings, infos);
    body
}

/// Prometheus' success envelope with `warnings` and `infos` when there are.
pub fn envelope(data: &str, warnings: &[String], infos: &[String]) -> String {
    let mut body = String::with_capacity(data.len() + 64);
    body.push_str("{\"status\":\"success\",\"data\":");
    body.push_str(data);
    annotations(&mut body, warnings, infos);
    body
}

/// `,"warnings":[…],"infos":[…]` (each only when not empty) and the closing brace.
fn annotations(body: &mut String, warnings: &[String], infos: &[String]) {
    for (key, list) in [("warnings", warnings), ("infos", infos)] {
        if list.is_empty() {
            continue;
        }
        let _ = write!(body, ",\"{key}\":[");
        for (i, w) in list.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            json_str(body, w);
        }
        body.push(']');
    }
    body.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Labels, Sample};

    /// A matrix big enough to be written on two threads reads the same as written on one:
    /// series in order, separated by commas, nothing lost or doubled.
    #[test]
    fn matrix_text_is_the_same_on_two_threads() {
        let series: Vec<Series> = (0..3000)
            .map(|i| Series {
                metric: Labels::from_pairs([("__name__", "m"), ("i", &*i.to_string())]),
                floats: (0..(i % 40))
                    .map(|k| Sample {
                        t: 1_700_000_000_000 + k * 15_001,
                        v: (i * k) as f64 / 7.0,
                    })
                    .collect(),
                histograms: Vec::new(),
            })
            .collect();
        let v = Value::Matrix(series);
        let two = envelope_value(v.clone(), &["w".into()], &[]);
        let one = promql::par::one_thread(|| envelope_value(v, &["w".into()], &[]));
        assert_eq!(two, one);
        let parsed: serde_json::Value = serde_json::from_str(&two).unwrap();
        let result = parsed["data"]["result"].as_array().unwrap();
        assert_eq!(result.len(), 3000);
        assert_eq!(result[2999]["metric"]["i"], "2999");
        assert_eq!(result[41]["values"].as_array().unwrap().len(), 1);
        assert_eq!(parsed["warnings"][0], "w");
    }
}
