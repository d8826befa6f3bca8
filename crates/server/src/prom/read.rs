//! Read handlers in Prometheus' shapes: `/api/v1/query` and `query_range`
//! (evaluated by the `promql` engine over [`TsdbStorage`], see `engine.rs`),
//! `series`, `labels`, `label/<name>/values`, `metadata`, `status/tsdb`
//! (head statistics and the cardinality view), `status/buildinfo`,
//! `targets`, and `/metrics` (the server's own metrics).
//!
//! Reads run on tokio's blocking pool and see one project only: the
//! querier is built for [`DataCaller::project`].

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use model::{FloatHistogram, Matcher};

use super::api::{
    MAX_TIME_MS, MIN_TIME_MS, Params, PromError, format_value, json_labels, json_str,
    parse_duration, parse_time, success,
};
use super::engine::{self, TsdbStorage};
use super::select;
use super::{DataCaller, is_form, store};
use crate::AppState;

/// Prometheus' limit of points per series in a range query.
pub const MAX_POINTS: i64 = 11_000;

fn params(q: Option<String>, headers: &HeaderMap, body: &Bytes) -> Params {
    Params::parse(q.as_deref(), is_form(headers).then_some(&body[..]))
}

fn now_ms(st: &AppState) -> i64 {
    st.now() / 1_000_000
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PromError> + Send + 'static,
) -> Result<T, PromError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(PromError::internal)?
}

fn tsdb_err(e: tsdb::Error) -> PromError {
    PromError::internal(e)
}

fn respond(r: Result<String, PromError>) -> Response {
    match r {
        Ok(data) => success(&data, &[]),
        Err(e) => e.into_response(),
    }
}

/// Sets the query's cancel flag when dropped: axum drops the handler's future when the
/// client goes away, and the engine, running on the blocking pool, then stops.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Evaluates on the blocking pool: an instant query when `range` is `None`.
/// `timeout` (a duration) shortens the server's query timeout for one query, as in
/// Prometheus; it never lengthens it.
async fn evaluate(
    m: Arc<super::MetricsStore>,
    project: String,
    query: String,
    at: i64,
    range: Option<(i64, i64)>,
    lookback_ms: Option<i64>,
    timeout_ms: Option<i64>,
) -> Result<String, PromError> {
    let guard = CancelOnDrop(Arc::new(AtomicBool::new(false)));
    let qopts = promql::QueryOptions {
        cancel: Some(guard.0.clone()),
        lookback_delta_ms: lookback_ms,
    };
    let r = blocking(move || {
        let timeout = match timeout_ms {
            Some(t) => m
                .query
                .timeout
                .min(std::time::Duration::from_millis(t.max(0) as u64)),
            None => m.query.timeout,
        };
        let engine = promql::Engine::new(promql::EngineOptions {
            lookback_delta_ms: m.lookback_ms,
            timeout,
            ..m.query.clone()
        });
        let storage = TsdbStorage {
            db: &m.db,
            project: &project,
        };
        let res = match range {
            None => engine.instant(&storage, &query, at, &qopts),
            Some((end, step)) => engine.range(&storage, &query, at, end, step, &qopts),
        }
        .map_err(engine::to_prom_error)?;
        Ok(engine::envelope_value(res.value, &res.warnings, &res.infos))
    })
    .await;
    drop(guard);
    r
}

fn respond_body(r: Result<String, PromError>) -> Response {
    match r {
        Ok(body) => super::api::json_response(StatusCode::OK, body),
        Err(e) => e.into_response(),
    }
}

fn query_param(p: &Params) -> Result<String, PromError> {
    p.get("query")
        .filter(|q| !q.trim().is_empty())
        .map(str::to_string)
        .ok_or_else(|| PromError::bad_data("invalid parameter \"query\": query must not be empty"))
}

/// `GET|POST /api/v1/query`
pub async fn query(
    State(st): State<AppState>,
    Extension(dc): Extension<DataCaller>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = params(q, &headers, &body);
    let now = now_ms(&st);
    let r = async {
        let m = store(&st)?;
        let query = query_param(&p)?;
        let t = parse_time(&p, "time", now)?;
        let lookback = parse_duration(&p, "lookback_delta")?;
        let timeout = parse_duration(&p, "timeout")?;
        evaluate(
            m,
            dc.project.name.clone(),
            query,
            t,
            None,
            lookback,
            timeout,
        )
        .await
    }
    .await;
    respond_body(r)
}

/// `GET|POST /api/v1/query_range`
pub async fn query_range(
    State(st): State<AppState>,
    Extension(dc): Extension<DataCaller>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = params(q, &headers, &body);
    let r = async {
        let m = store(&st)?;
        let query = query_param(&p)?;
        p.get("start").ok_or_else(|| PromError::bad_data("invalid parameter \"start\": missing"))?;
        p.get("end").ok_or_else(|| PromError::bad_data("invalid parameter \"end\": missing"))?;
        let start = parse_time(&p, "start", 0)?;
        let end = parse_time(&p, "end", 0)?;
        if end < start {
            return Err(PromError::bad_data("invalid parameter \"end\": end timestamp must not be before start time"));
        }
        let step = parse_duration(&p, "step")?
            .ok_or_else(|| PromError::bad_data("invalid parameter \"step\": cannot parse \"\" to a valid duration"))?;
        if step <= 0 {
            return Err(PromError::bad_data(
                "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
            ));
        }
        if (end - start) / step > MAX_POINTS {
            return Err(PromError::bad_data(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
            ));
        }
        let lookback = parse_duration(&p, "lookback_delta")?;
        let timeout = parse_duration(&p, "timeout")?;
        evaluate(m, dc.project.name.clone(), query, start, Some((end, step)), lookback, timeout).await
    }
    .await;
    respond_body(r)
}

/// The matcher sets of `match[]` (at least one when `required`).
fn match_sets(p: &Params, required: bool) -> Result<Vec<Vec<Matcher>>, PromError> {
    let ms = p.all("match[]");
    if ms.is_empty() && required {
        return Err(PromError::bad_data("no match[] parameter provided"));
    }
    ms.into_iter().map(select::parse_match).collect()
}

fn limit(p: &Params) -> Result<usize, PromError> {
    match p.get("limit").filter(|s| !s.is_empty()) {
        None => Ok(0),
        Some(s) => s.parse::<usize>().map_err(|_| {
            PromError::bad_data(format!(
                "invalid parameter \"limit\": cannot parse \"{s}\" to a non-negative integer"
            ))
        }),
    }
}

/// The shared part of `series`, `labels` and `label/<name>/values`: the
/// `match[]` sets (one empty set when none are given and none are
/// required), `start`/`end` (default: all time), `limit`; `each` runs per
/// set on the caller's project, the union is sorted, deduplicated, cut to
/// the limit and rendered by `render`.
async fn list<T: Ord + Send + 'static>(
    st: &AppState,
    dc: &DataCaller,
    p: &Params,
    match_required: bool,
    each: impl Fn(&tsdb::Querier, &[Matcher]) -> Result<Vec<T>, tsdb::Error> + Send + 'static,
    render: impl Fn(&mut String, &T) + Send + 'static,
) -> Result<String, PromError> {
    let m = store(st)?;
    let mut sets = match_sets(p, match_required)?;
    if sets.is_empty() {
        sets.push(Vec::new());
    }
    let (start, end) = (
        parse_time(p, "start", MIN_TIME_MS)?,
        parse_time(p, "end", MAX_TIME_MS)?,
    );
    let lim = limit(p)?;
    let project = dc.project.name.clone();
    blocking(move || {
        let q = m.db.querier(&project, start, end);
        let mut all = Vec::new();
        for ms in &sets {
            all.extend(each(&q, ms).map_err(tsdb_err)?);
        }
        all.sort();
        all.dedup();
        let mut out = String::from("[");
        for (i, x) in all
            .iter()
            .take(if lim == 0 { usize::MAX } else { lim })
            .enumerate()
        {
            if i > 0 {
                out.push(',');
            }
            render(&mut out, x);
        }
        out.push(']');
        Ok(out)
    })
    .await
}

#[allow(clippy::ptr_arg)] // the list item type is `String`
fn render_str(out: &mut String, s: &String) {
    json_str(out, s);
}

/// `GET|POST /api/v1/series`
pub async fn series(
    State(st): State<AppState>,
    Extension(dc): Extension<DataCaller>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = params(q, &headers, &body);
    respond(list(&st, &dc, &p, true, |q, ms| q.series(ms), json_labels).await)
}

/// `GET|POST /api/v1/labels`
pub async fn labels(
    State(st): State<AppState>,
    Extension(dc): Extension<DataCaller>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = params(q, &headers, &body);
    respond(list(&st, &dc, &p, false, |q, ms| q.label_names(ms), render_str).await)
}

/// `GET /api/v1/label/<name>/values`
pub async fn label_values(
    State(st): State<AppState>,
    Extension(dc): Extension<DataCaller>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let p = Params::parse(q.as_deref(), None);
    if !model::is_valid_label_name(&name) && name != model::METRIC_NAME {
        return PromError::bad_data(format!("invalid label name: {name:?}")).into_response();
    }
    respond(
        list(
            &st,
            &dc,
            &p,
            false,
            move |q, ms| q.label_values(&name, ms),
            render_str,
        )
        .await,
    )
}

/// `GET /api/v1/metadata`
pub async fn metadata(
    State(st): State<AppState>,
    Extension(dc): Extension<DataCaller>,
    RawQuery(q): RawQuery,
) -> Response {
    let p = Params::parse(q.as_deref(), None);
    let r = (|| {
        let m = store(&st)?;
        let lim = limit(&p)?;
        let md =
            m.db.metadata(&dc.project.name, p.get("metric").filter(|s| !s.is_empty()));
        let mut out = String::from("{");
        for (i, (name, meta)) in md
            .iter()
            .take(if lim == 0 { usize::MAX } else { lim })
            .enumerate()
        {
            if i > 0 {
                out.push(',');
            }
            json_str(&mut out, name);
            out.push_str(":[{\"type\":");
            json_str(&mut out, meta.metric_type.as_str());
            out.push_str(",\"help\":");
            json_str(&mut out, &meta.help);
            out.push_str(",\"unit\":");
            json_str(&mut out, &meta.unit);
            out.push_str("}]");
        }
        out.push('}');
        Ok(out)
    })();
    respond(r)
}

/// `GET /api/v1/status/buildinfo` (Grafana reads it to tell the flavour).
pub async fn buildinfo() -> Response {
    let mut out = String::from("{\"version\":");
    json_str(&mut out, env!("CARGO_PKG_VERSION"));
    out.push_str(",\"revision\":\"\",\"branch\":\"\",\"buildUser\":\"\",\"buildDate\":\"\",\"goVersion\":\"\"}");
    success(&out, &[])
}

/// `GET /api/v1/status/tsdb`: head statistics and the top metric names by
/// series (Prometheus' cardinality view), plus Flightdeck's usage figures.
pub async fn tsdb_status(
    State(st): State<AppState>,
    Extension(dc): Extension<DataCaller>,
) -> Response {
    let r = (|| {
        let m = store(&st)?;
        let s = m.db.stats(&dc.project.name);
        let mut out = String::from("{\"headStats\":{");
        let (mint, maxt) = s.head_range.unwrap_or((0, 0));
        let _ = write!(
            out,
            "\"numSeries\":{},\"chunkCount\":0,\"minTime\":{mint},\"maxTime\":{maxt}}},",
            s.head_series
        );
        out.push_str("\"seriesCountByMetricName\":[");
        for (i, (name, n)) in s.top_metrics.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"name\":");
            json_str(&mut out, name);
            let _ = write!(out, ",\"value\":{n}}}");
        }
        out.push_str("],\"labelValueCountByLabelName\":[],\"memoryInBytesByLabelName\":[],\"seriesCountByLabelValuePair\":[],");
        let _ = write!(
            out,
            "\"flightdeckUsage\":{{\"samplesAppended\":{},\"samplesStored\":{},\"blockBytes\":{},\"blocks\":{},\"headBytes\":{}}}}}",
            s.samples_appended, s.samples_stored, s.block_bytes, s.blocks, s.head_bytes
        );
        Ok(out)
    })();
    respond(r)
}

/// `GET /metrics`: host, process and `flightdeck_*` metrics as text 0.0.4.
pub async fn self_metrics(State(st): State<AppState>) -> Response {
    let st2 = st.clone();
    let text = tokio::task::spawn_blocking(move || {
        let mut c = crate::telemetry::collect_all(&st2);
        c.series.sort_by(|a, b| a.0.cmp(&b.0));
        agent::text::render(&c)
    })
    .await
    .unwrap_or_default();
    let mut r = (StatusCode::OK, text).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(agent::text::CONTENT_TYPE),
    );
    r
}

/// `GET /api/v1/targets`: the scrape targets of this project.
pub async fn targets(State(st): State<AppState>, Extension(dc): Extension<DataCaller>) -> Response {
    let r = (|| {
        let m = store(&st)?;
        let targets = m.scrape.as_ref().map(|s| s.targets()).unwrap_or_default();
        let mut out = String::from("{\"activeTargets\":[");
        let mut first = true;
        for t in targets.iter().filter(|t| t.project == dc.project.name) {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str("{\"discoveredLabels\":");
            json_labels(&mut out, &t.discovered_labels);
            out.push_str(",\"labels\":");
            json_labels(&mut out, &t.labels);
            out.push_str(",\"scrapePool\":");
            json_str(&mut out, &t.job);
            out.push_str(",\"scrapeUrl\":");
            json_str(&mut out, &t.scrape_url);
            out.push_str(",\"globalUrl\":");
            json_str(&mut out, &t.scrape_url);
            out.push_str(",\"lastError\":");
            json_str(&mut out, t.last_error.as_deref().unwrap_or(""));
            out.push_str(",\"lastScrape\":");
            json_str(
                &mut out,
                &t.last_scrape_ms
                    .map(super::api::rfc3339_ms)
                    .unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            );
            let _ = write!(
                out,
                ",\"lastScrapeDuration\":{},",
                t.last_scrape_duration.map_or(0.0, |d| d.as_secs_f64())
            );
            out.push_str("\"health\":");
            json_str(&mut out, t.health.as_str());
            let _ = write!(
                out,
                ",\"scrapeInterval\":\"{}\",\"scrapeTimeout\":\"{}\"}}",
                agent::scrape::format_duration(t.interval),
                agent::scrape::format_duration(t.timeout)
            );
        }
        out.push_str("],\"droppedTargets\":[");
        let dropped = m
            .scrape
            .as_ref()
            .map(|s| s.dropped_targets())
            .unwrap_or_default();
        let mut first = true;
        for d in dropped
            .iter()
            .filter(|d| m.job_project(&d.job) == Some(dc.project.name.as_str()))
        {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str("{\"discoveredLabels\":");
            json_labels(&mut out, &d.discovered_labels);
            out.push('}');
        }
        out.push_str("]}");
        Ok(out)
    })();
    respond(r)
}

/// One bucket: (boundary rule, lower, upper, count). Rules as Prometheus:
/// 0 = (lower, upper], 1 = [lower, upper), 3 = [lower, upper].
fn buckets(f: &FloatHistogram) -> Vec<(u8, f64, f64, f64)> {
    let mut out = Vec::new();
    let bound = |i: i32| -> f64 {
        if f.schema == model::CUSTOM_BUCKETS_SCHEMA {
            match usize::try_from(i) {
                Ok(i) if i < f.custom_values.len() => f.custom_values[i],
                Ok(_) => f64::INFINITY,
                Err(_) => f64::NEG_INFINITY,
            }
        } else {
            // upper bound of bucket i: 2^(i · 2^-schema)
            (f64::from(i) * (-f64::from(f.schema)).exp2()).exp2()
        }
    };
    let walk = |spans: &[model::Span], counts: &[f64]| -> Vec<(i32, f64)> {
        let mut v = Vec::new();
        let mut idx = 0i32;
        let mut k = 0usize;
        // Each span's offset counts from the previous span's end (the
        // first from index 0).
        for s in spans {
            idx += s.offset;
            for _ in 0..s.length {
                if let Some(c) = counts.get(k) {
                    v.push((idx, *c));
                }
                idx += 1;
                k += 1;
            }
        }
        v
    };
    let neg = walk(&f.negative_spans, &f.negative_buckets);
    for (i, c) in neg.iter().rev() {
        if *c != 0.0 {
            out.push((1, -bound(*i), -bound(i - 1), *c));
        }
    }
    if f.zero_count != 0.0 {
        out.push((3, -f.zero_threshold, f.zero_threshold, f.zero_count));
    }
    for (i, c) in walk(&f.positive_spans, &f.positive_buckets) {
        if c != 0.0 {
            out.push((0, bound(i - 1), bound(i), c));
        }
    }
    out
}

pub(super) fn json_histogram(out: &mut String, f: &FloatHistogram) {
    out.push_str("{\"count\":\"");
    out.push_str(&format_value(f.count));
    out.push_str("\",\"sum\":\"");
    out.push_str(&format_value(f.sum));
    out.push('"');
    let b = buckets(f);
    if !b.is_empty() {
        out.push_str(",\"buckets\":[");
        for (i, (rule, lo, hi, c)) in b.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "[{rule},\"{}\",\"{}\",\"{}\"]",
                format_value(*lo),
                format_value(*hi),
                format_value(*c)
            );
        }
        out.push(']');
    }
    out.push('}');
}
