//! The Loki HTTP API's read side, per project (scope `logs:read`): `query`, `query_range`,
//! `labels`, `label/<name>/values`, `series`, `index/stats`, `detected_labels`, `tail`
//! (WebSocket), `/ready` and `status/buildinfo`, answering in Loki's JSON so that Grafana's
//! Loki data source works unchanged. `patterns` is [`super::patterns`], with the
//! parameter readers here.
//!
//! Queries run in the `logql` engine over [`StoreView`], which adapts one project of the
//! `logstore` (the engine never sees the store). Parameters are read as Loki reads them:
//! times as RFC 3339, float seconds or integer nanoseconds (10 digits or fewer: seconds);
//! `step` as a duration or float seconds (default: the range / 250, at least 1 s); `limit`
//! (100) and `direction` (`backward`). Errors are plain text with a 4xx/5xx status, as
//! Loki answers them.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use logql::{Direction, LabelPairs, QueryResult};
use model::{Labels, Matcher};

use crate::AppState;
use crate::prom::DataCaller;
use crate::prom::api::{Params, json_point, json_str};

/// A refusal in Loki's shape: a status and a plain-text message.
#[derive(Debug)]
pub struct LokiError {
    pub status: StatusCode,
    pub message: String,
}

impl LokiError {
    pub fn bad(message: impl Into<String>) -> Self {
        LokiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub(crate) fn internal(message: impl std::fmt::Display) -> Self {
        LokiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.to_string(),
        }
    }
}

impl IntoResponse for LokiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.message),
        )
            .into_response()
    }
}

/// The engine's error as Loki answers it.
pub(crate) fn engine_err(e: logql::Error) -> LokiError {
    let status = match &e {
        logql::Error::Parse { .. }
        | logql::Error::BadQuery(_)
        | logql::Error::Limit(_)
        | logql::Error::Execution(_) => StatusCode::BAD_REQUEST,
        logql::Error::Timeout => StatusCode::SERVICE_UNAVAILABLE,
        // Nginx's "client closed request", as Loki uses it.
        logql::Error::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        logql::Error::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    LokiError {
        status,
        message: e.to_string(),
    }
}

/// Default and largest `limit` of a log query (Loki's `max_entries_limit_per_query`).
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_ENTRIES: usize = 5000;
/// Most series a metric query may return (Loki's `max_query_series`).
pub const MAX_SERIES: usize = 500;
/// How long a query may run.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(120);
/// Default range of a query without `start`.
pub(crate) const DEFAULT_RANGE_NS: i64 = 3_600 * 1_000_000_000;

// ------------------------------------------------------------------ parameters

/// A Loki time parameter: RFC 3339, float seconds (with a `.`), or an integer that is unix
/// seconds when it has at most 10 digits and nanoseconds otherwise. In nanoseconds.
pub fn parse_time(raw: &str) -> Option<i64> {
    let raw = raw.trim();
    if raw.contains('.')
        && let Ok(f) = raw.parse::<f64>()
    {
        if !f.is_finite() {
            return None;
        }
        let secs = f.trunc();
        let frac = ((f - secs) * 1000.0).round() / 1000.0;
        return Some((secs as i64).checked_mul(1_000_000_000)? + (frac * 1e9) as i64);
    }
    match raw.parse::<i64>() {
        Ok(n) if raw.trim_start_matches('-').len() <= 10 => n.checked_mul(1_000_000_000),
        Ok(n) => Some(n),
        Err(_) => {
            let t =
                time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
                    .ok()?;
            i64::try_from(t.unix_timestamp_nanos()).ok()
        }
    }
}

pub(crate) fn time_param(p: &Params, name: &str, default: i64) -> Result<i64, LokiError> {
    match p.get(name).filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(raw) => parse_time(raw).ok_or_else(|| {
            LokiError::bad(format!(
                "invalid {name} parameter: cannot parse \"{raw}\" as a timestamp"
            ))
        }),
    }
}

/// A `step`: a duration (`15s`, `1m30s`) or float seconds. In nanoseconds.
pub fn parse_step(raw: &str) -> Option<i64> {
    let raw = raw.trim();
    if let Ok(f) = raw.parse::<f64>() {
        return (f.is_finite() && f > 0.0).then_some((f * 1e9) as i64);
    }
    logql::duration::parse_duration(raw, false)
        .ok()
        .filter(|d| *d > 0)
}

/// Loki's default step: the range over 250 points, at least one second.
pub(crate) fn default_step(start: i64, end: i64) -> i64 {
    (((end - start) / 1_000_000_000) / 250).max(1) * 1_000_000_000
}

fn direction(p: &Params) -> Result<Direction, LokiError> {
    match p.get("direction").map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("backward") => Ok(Direction::Backward),
        Some("forward") => Ok(Direction::Forward),
        Some(other) => Err(LokiError::bad(format!(
            "invalid direction \"{other}\": must be forward or backward"
        ))),
    }
}

fn limit(p: &Params) -> Result<usize, LokiError> {
    let n = match p.get("limit").filter(|s| !s.is_empty()) {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .trim()
            .parse::<usize>()
            .map_err(|_| LokiError::bad(format!("invalid limit \"{raw}\": not a number")))?,
    };
    if n == 0 {
        return Err(LokiError::bad("limit must be a positive value"));
    }
    if n > MAX_ENTRIES {
        return Err(LokiError::bad(format!(
            "max entries limit per query exceeded, limit > max_entries_limit_per_query ({n} > {MAX_ENTRIES})"
        )));
    }
    Ok(n)
}

pub(crate) fn query_param(p: &Params) -> Result<String, LokiError> {
    p.get("query")
        .filter(|q| !q.trim().is_empty())
        .map(str::to_string)
        .ok_or_else(|| LokiError::bad("query parameter is required"))
}

/// The matchers of a stream selector (`{job="x"}`, optionally with a pipeline).
fn selector(q: &str) -> Result<Vec<Matcher>, LokiError> {
    match logql::parse(q).map_err(engine_err)? {
        logql::Expr::Log(l) => Ok(l.matchers),
        logql::Expr::Sample(_) => Err(LokiError::bad(format!(
            "a stream selector is expected here, not a metric query: {q}"
        ))),
    }
}

// ------------------------------------------------------------------ the store, as the engine sees it

/// One project of the log store, as [`logql::LogStorage`].
pub struct StoreView<'a> {
    pub store: &'a logstore::Store,
    pub project: &'a str,
    /// Blocks the query's cursors met, added up as each cursor is dropped.
    pub blocks: BlockCounts,
}

/// Blocks (Loki's chunks) of a query: those in its streams and range, and
/// those decompressed; the rest were ruled out by their bloom filter or
/// never needed (a limit stopped the read). Reported in the response's
/// `stats.querier.store` as `totalChunksRef` and `totalChunksDownloaded`.
/// Also the lines in range (and their bytes) of those blocks, before any
/// filter: Loki's `totalLinesProcessed`/`totalBytesProcessed`, which Grafana
/// shows as what a query processed.
#[derive(Debug, Default)]
pub struct BlockCounts {
    pub refs: AtomicU64,
    pub read: AtomicU64,
    pub lines: AtomicU64,
    pub bytes: AtomicU64,
}

struct Cursor<'a> {
    labels: Labels,
    iter: logstore::StreamIter,
    cur: Option<logstore::Entry>,
    blocks: &'a BlockCounts,
}

impl Drop for Cursor<'_> {
    fn drop(&mut self) {
        let (read, skipped, unopened) = (
            self.iter.blocks_read(),
            self.iter.blocks_skipped(),
            self.iter.blocks_unopened(),
        );
        self.blocks
            .refs
            .fetch_add(read + skipped + unopened, Ordering::Relaxed);
        self.blocks.read.fetch_add(read, Ordering::Relaxed);
        self.blocks
            .lines
            .fetch_add(self.iter.lines_scanned(), Ordering::Relaxed);
        self.blocks
            .bytes
            .fetch_add(self.iter.bytes_scanned(), Ordering::Relaxed);
    }
}

impl logql::StreamCursor for Cursor<'_> {
    fn labels(&self) -> &Labels {
        &self.labels
    }

    fn next_entry(&mut self) -> Result<Option<logql::EntryRef<'_>>, logql::StorageError> {
        self.cur = match self.iter.next() {
            None => None,
            Some(Ok(e)) => Some(e),
            Some(Err(e)) => return Err(logql::StorageError(e.to_string())),
        };
        Ok(self.cur.as_ref().map(|e| logql::EntryRef {
            ts_ns: e.ts,
            line: &e.line,
            metadata: &e.metadata,
        }))
    }
}

impl logql::LogStorage for StoreView<'_> {
    fn select<'s>(
        &'s self,
        req: &logql::SelectRequest<'_>,
    ) -> Result<Vec<Box<dyn logql::StreamCursor + 's>>, logql::StorageError> {
        let required: Vec<&[u8]> = req.line_hints.iter().map(|h| h.as_bytes()).collect();
        let q = logstore::Query {
            matchers: req.matchers,
            start: req.start_ns,
            end: req.end_ns,
            direction: match req.direction {
                Direction::Forward => logstore::Direction::Forward,
                Direction::Backward => logstore::Direction::Backward,
            },
            limit: 0,
            required: &required,
        };
        Ok(self
            .store
            .select(self.project, &q)
            .into_iter()
            .map(|(labels, iter)| {
                Box::new(Cursor {
                    labels,
                    iter,
                    cur: None,
                    blocks: &self.blocks,
                }) as Box<dyn logql::StreamCursor + 's>
            })
            .collect())
    }
}

// ------------------------------------------------------------------ rendering

fn json_pairs(out: &mut String, l: &[(String, String)]) {
    out.push('{');
    for (i, (k, v)) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, k);
        out.push(':');
        json_str(out, v);
    }
    out.push('}');
}

fn json_labels_model(out: &mut String, l: &Labels) {
    out.push('{');
    for (i, x) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, &x.name);
        out.push(':');
        json_str(out, &x.value);
    }
    out.push('}');
}

/// Log streams in the `categorize-labels` encoding (see [`render_with`]); returns how many
/// entries were written.
fn render_categorized(out: &mut String, streams: &[logql::Stream], backward: bool) -> usize {
    // Entries by the stream they were read from, streams in order of first appearance.
    let mut order: Vec<&LabelPairs> = Vec::new();
    let mut groups: std::collections::HashMap<&LabelPairs, Vec<(&logql::LogEntry, &LabelPairs)>> =
        std::collections::HashMap::new();
    for s in streams {
        for e in &s.entries {
            let key: &LabelPairs = &e.stream;
            groups
                .entry(key)
                .or_insert_with(|| {
                    order.push(key);
                    Vec::new()
                })
                .push((e, &s.labels));
        }
    }
    let mut returned = 0;
    out.push_str("\"streams\",\"encodingFlags\":[\"categorize-labels\"],\"result\":[");
    for (i, key) in order.iter().enumerate() {
        let mut entries = groups.remove(*key).unwrap_or_default();
        // Each output stream was in the query's order; merged, they are sorted again.
        entries.sort_by_key(|(e, _)| e.ts_ns);
        if backward {
            entries.reverse();
        }
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"stream\":");
        json_pairs(out, key);
        out.push_str(",\"values\":[");
        for (j, (e, labels)) in entries.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            let _ = write!(out, "[\"{}\",", e.ts_ns);
            json_str(out, &e.line);
            out.push_str(",{");
            let mut first = true;
            if !e.metadata.is_empty() {
                out.push_str("\"structuredMetadata\":");
                json_pairs(out, &e.metadata);
                first = false;
            }
            // What the pipeline extracted or changed: neither the stream's own pair nor
            // structured metadata.
            let parsed: LabelPairs = labels
                .iter()
                .filter(|(k, v)| {
                    !key.iter().any(|(sk, sv)| sk == k && sv == v)
                        && !e.metadata.iter().any(|(mk, mv)| mk == k && mv == v)
                })
                .cloned()
                .collect();
            if !parsed.is_empty() {
                if !first {
                    out.push(',');
                }
                out.push_str("\"parsed\":");
                json_pairs(out, &parsed);
            }
            out.push_str("}]");
        }
        returned += entries.len();
        out.push_str("]}");
    }
    out.push(']');
    returned
}

/// `{"status":"success","data":{"resultType":…,"result":…,"stats":…}}`.
/// `t_ns` is when an instant query was evaluated (the time of vector and scalar samples).
pub fn render(res: &QueryResult, t_ns: i64, exec: Duration, blocks: &BlockCounts) -> String {
    render_with(res, t_ns, exec, blocks, None)
}

/// [`render`]; with `categorize` (the query's direction), log results in Loki's
/// `categorize-labels` encoding: entries grouped by the labels of the stream they were read
/// from, each with `{"structuredMetadata":{…},"parsed":{…}}` (the labels the pipeline
/// added or changed) as a third element, and `"encodingFlags":["categorize-labels"]`.
pub fn render_with(
    res: &QueryResult,
    t_ns: i64,
    exec: Duration,
    blocks: &BlockCounts,
    categorize: Option<Direction>,
) -> String {
    let mut out = String::from("{\"status\":\"success\",\"data\":{\"resultType\":");
    let mut returned = 0usize;
    match res {
        QueryResult::Streams(streams) if categorize.is_some() => {
            let backward = categorize == Some(Direction::Backward);
            returned = render_categorized(&mut out, streams, backward);
        }
        QueryResult::Streams(streams) => {
            out.push_str("\"streams\",\"result\":[");
            for (i, s) in streams.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"stream\":");
                json_pairs(&mut out, &s.labels);
                out.push_str(",\"values\":[");
                for (j, e) in s.entries.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "[\"{}\",", e.ts_ns);
                    json_str(&mut out, &e.line);
                    out.push(']');
                }
                returned += s.entries.len();
                out.push_str("]}");
            }
            out.push(']');
        }
        QueryResult::Vector(v) => {
            out.push_str("\"vector\",\"result\":[");
            for (i, s) in v.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                json_pairs(&mut out, &s.labels);
                out.push_str(",\"value\":");
                json_point(&mut out, t_ns.div_euclid(1_000_000), s.value);
                out.push('}');
            }
            out.push(']');
        }
        QueryResult::Matrix(m) => {
            out.push_str("\"matrix\",\"result\":[");
            for (i, s) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                json_pairs(&mut out, &s.labels);
                out.push_str(",\"values\":[");
                for (j, (t, v)) in s.points.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    json_point(&mut out, t.div_euclid(1_000_000), *v);
                }
                out.push_str("]}");
            }
            out.push(']');
        }
        QueryResult::Scalar(value) => {
            out.push_str("\"scalar\",\"result\":");
            json_point(&mut out, t_ns.div_euclid(1_000_000), *value);
        }
    }
    let secs = exec.as_secs_f64();
    let (lines, bytes) = (
        blocks.lines.load(Ordering::Relaxed),
        blocks.bytes.load(Ordering::Relaxed),
    );
    let per_sec = |n: u64| {
        if secs > 0.0 {
            (n as f64 / secs) as u64
        } else {
            0
        }
    };
    let _ = write!(
        out,
        ",\"stats\":{{\"summary\":{{\"execTime\":{secs},\"totalEntriesReturned\":{returned},\
         \"totalLinesProcessed\":{lines},\"totalBytesProcessed\":{bytes},\
         \"linesProcessedPerSecond\":{},\"bytesProcessedPerSecond\":{}}},\
         \"querier\":{{\"store\":{{\"totalChunksRef\":{},\"totalChunksDownloaded\":{}}}}}}}}}}}",
        per_sec(lines),
        per_sec(bytes),
        blocks.refs.load(Ordering::Relaxed),
        blocks.read.load(Ordering::Relaxed),
    );
    out
}

fn json_ok(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// `{"status":"success","data":[…strings]}`.
fn string_list(v: &[String]) -> String {
    let mut out = String::from("{\"status\":\"success\",\"data\":[");
    for (i, s) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(&mut out, s);
    }
    out.push_str("]}");
    out
}

// ------------------------------------------------------------------ evaluation

/// Raises its flag when dropped: a query whose client went away stops.
pub(crate) struct CancelOnDrop(pub(crate) Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What a query asks for.
#[derive(Debug)]
pub struct Request {
    pub query: String,
    pub params: logql::QueryParams,
    /// The client asked for the `categorize-labels` encoding
    /// (`X-Loki-Response-Encoding-Flags`).
    pub categorize: bool,
}

/// Whether the request's `X-Loki-Response-Encoding-Flags` holds `categorize-labels`
/// (comma-separated flags, as Grafana sends them).
pub fn wants_categorized(headers: &HeaderMap) -> bool {
    headers
        .get_all("x-loki-response-encoding-flags")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|f| f.trim() == "categorize-labels")
}

/// Runs a query on the blocking pool against one project.
async fn run(
    store: Arc<logstore::Store>,
    project: String,
    mut req: Request,
) -> Result<String, LokiError> {
    let guard = CancelOnDrop(Arc::new(AtomicBool::new(false)));
    req.params.cancel = Some(guard.0.clone());
    req.params.deadline = Some(Instant::now() + QUERY_TIMEOUT);
    let r = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let view = StoreView {
            store: &store,
            project: &project,
            blocks: BlockCounts::default(),
        };
        let engine = logql::Engine::new(logql::EngineOptions {
            max_series: MAX_SERIES,
            max_entries: MAX_ENTRIES,
        });
        let res = engine
            .query(&view, &req.query, &req.params)
            .map_err(engine_err)?;
        let categorize = req.categorize.then_some(req.params.direction);
        Ok(render_with(
            &res,
            req.params.end_ns,
            started.elapsed(),
            &view.blocks,
            categorize,
        ))
    })
    .await
    .map_err(LokiError::internal)?;
    drop(guard);
    r
}

/// Whether `q` is a log query (streams) rather than a metric query.
pub(crate) fn is_log_query(q: &str) -> Result<bool, LokiError> {
    Ok(matches!(
        logql::parse(q).map_err(engine_err)?,
        logql::Expr::Log(_)
    ))
}

/// `start`, `end` (default: the hour up to now) and `step` (default from the range,
/// rounded up to a multiple of `step_unit` ns) of a range request, checked as Loki checks
/// them (order, a positive step, at most 11,000 points).
pub(crate) fn range_window(
    p: &Params,
    now_ns: i64,
    step_unit: i64,
) -> Result<(i64, i64, i64), LokiError> {
    let end = time_param(p, "end", now_ns)?;
    let start = time_param(p, "start", end - DEFAULT_RANGE_NS)?;
    if end < start {
        return Err(LokiError::bad(
            "end timestamp must not be before or equal to start time",
        ));
    }
    let step = match p.get("step").filter(|s| !s.is_empty()) {
        None => default_step(start, end),
        Some(raw) => parse_step(raw).ok_or_else(|| {
            LokiError::bad(format!(
                "invalid step \"{raw}\": zero or negative query resolution step widths are not accepted. Try a positive integer"
            ))
        })?,
    };
    let unit = step_unit.max(1);
    let step = (step.saturating_add(unit - 1) / unit).max(1) * unit;
    if (end - start) / step > logql::eval::MAX_POINTS {
        return Err(LokiError::bad(
            "exceeded maximum resolution of 11,000 points per timeseries. Try increasing the value of the step parameter",
        ));
    }
    Ok((start, end, step))
}

/// The request of `GET|POST /loki/api/v1/query_range`.
pub fn range_request(p: &Params, now_ns: i64) -> Result<Request, LokiError> {
    let query = query_param(p)?;
    let (start, end, step) = range_window(p, now_ns, 1)?;
    let mut params = logql::QueryParams::range(start, end, step);
    params.limit = limit(p)?;
    params.direction = direction(p)?;
    Ok(Request {
        query,
        params,
        categorize: false,
    })
}

/// The request of `GET|POST /loki/api/v1/query` (metric queries only, as Loki 3).
pub fn instant_request(p: &Params, now_ns: i64) -> Result<Request, LokiError> {
    let query = query_param(p)?;
    if is_log_query(&query)? {
        return Err(LokiError::bad(
            "log queries are not supported as an instant query type, please change your query to a range query type",
        ));
    }
    let t = time_param(p, "time", now_ns)?;
    let mut params = logql::QueryParams::instant(t);
    params.limit = limit(p)?;
    params.direction = direction(p)?;
    Ok(Request {
        query,
        params,
        categorize: false,
    })
}

// ------------------------------------------------------------------ handlers

pub(crate) fn params(q: Option<String>, headers: &HeaderMap, body: &Bytes) -> Params {
    Params::parse(
        q.as_deref(),
        crate::prom::is_form(headers).then_some(&body[..]),
    )
}

/// The project's log store, or 503 when logs are not enabled.
pub(crate) fn log_store(st: &AppState) -> Result<Arc<logstore::Store>, LokiError> {
    st.logs
        .as_ref()
        .map(|l| l.store.clone())
        .ok_or_else(|| LokiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the log store is not enabled on this server".into(),
        })
}

pub(crate) fn reply(r: Result<String, LokiError>) -> Response {
    match r {
        Ok(body) => json_ok(body),
        Err(e) => e.into_response(),
    }
}

/// `GET|POST /loki/api/v1/query_range`
pub async fn query_range(
    State(st): State<AppState>,
    Extension(dc): Extension<DataCaller>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = params(q, &headers, &body);
    let r = async {
        let store = log_store(&st)?;
        let mut req = range_request(&p, st.now())?;
        req.categorize = wants_categorized(&headers);
        run(store, dc.project.name.clone(), req).await
    }
    .await;
    reply(r)
}

/// `GET|POST /loki/api/v1/query`
pub async fn query(
    State(st): State<AppState>,
    Extension(dc): Extension<DataCaller>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = params(q, &headers, &body);
    let r = async {
        let store = log_store(&st)?;
        let req = instant_request(&p, st.now())?;
        run(store, dc.project.name.clone(), req).await
    }
    .await;
    reply(r)
}

/// `start`/`end` of the metadata endpoints (default: the last 6 hours, like Loki).
fn meta_range(p: &Params, now: i64) -> Result<(i64, i64), LokiError> {
    let end = time_param(p, "end", now)?;
    let start = time_param(p, "start", end - 6 * DEFAULT_RANGE_NS)?;
    if end < start {
        return Err(LokiError::bad(
            "end timestamp must not be before start time",
        ));
    }
    // Inclusive end for the store's half-open ranges.
    Ok((start, end.saturating_add(1)))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LokiError> + Send + 'static,
) -> Result<T, LokiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(LokiError::internal)?
}

/// What a metadata endpoint reads: the store, the caller's project, the range.
struct Meta<'a> {
    store: &'a logstore::Store,
    project: &'a str,
    start: i64,
    end: i64,
}

/// The skeleton every metadata endpoint shares: parameters (query string or form), the
/// store, `start`/`end` (default the last 6 h), then `f` on the blocking pool; its
/// `Ok` is the JSON body.
async fn metadata(
    st: &AppState,
    dc: &DataCaller,
    q: Option<String>,
    headers: &HeaderMap,
    body: &Bytes,
    f: impl FnOnce(&Params, Meta<'_>) -> Result<String, LokiError> + Send + 'static,
) -> Response {
    let p = params(q, headers, body);
    let r = async {
        let store = log_store(st)?;
        let (start, end) = meta_range(&p, st.now())?;
        let project = dc.project.name.clone();
        blocking(move || {
            f(
                &p,
                Meta {
                    store: &store,
                    project: &project,
                    start,
                    end,
                },
            )
        })
        .await
    }
    .await;
    reply(r)
}

/// The matchers of an optional `query` selector (none: every stream).
fn optional_selector(p: &Params) -> Result<Vec<Matcher>, LokiError> {
    match p.get("query").filter(|q| !q.trim().is_empty()) {
        Some(q) => selector(q),
        None => Ok(Vec::new()),
    }
}

/// `GET|POST /loki/api/v1/labels`
pub async fn labels(
    State(st): State<AppState>,
    Extension(dc): Extension<DataCaller>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    metadata(&st, &dc, q, &headers, &body, |p, m| {
        let ms = optional_selector(p)?;
        let names = if ms.is_empty() {
            m.store.labels(m.project, m.start, m.end)
        } else {
            let mut names: Vec<String> = m
                .store
                .series(m.project, &ms, m.start, m.end)
                .iter()
                .flat_map(|l| l.iter().map(|x| x.name.clone()).collect::<Vec<_>>())
                .collect();
            names.sort();
            names.dedup();
            names
        };
        Ok(string_list(&names))
    })
    .await
}

/// `GET|POST /loki/api/v1/label/<name>/values`
pub async fn label_values(
    State(st): State<AppState>,
    Extension(dc): Extension<DataCaller>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    metadata(&st, &dc, q, &headers, &body, move |p, m| {
        let ms = optional_selector(p)?;
        Ok(string_list(
            &m.store.label_values(m.project, &name, m.start, m.end, &ms),
        ))
    })
    .await
}

/// The union of the streams every `match[]` selects.
fn matching_series(m: &Meta<'_>, selectors: &[Vec<Matcher>]) -> Vec<Labels> {
    let mut all: Vec<Labels> = selectors
        .iter()
        .flat_map(|ms| m.store.series(m.project, ms, m.start, m.end))
        .collect();
    all.sort();
    all.dedup();
    all
}

fn match_params(p: &Params) -> Result<Vec<Vec<Matcher>>, LokiError> {
    let mut sels: Vec<&str> = p.all("match[]");
    sels.extend(p.all("match"));
    if sels.is_empty() {
        return Err(LokiError::bad("at least one match[] argument required"));
    }
    sels.into_iter().map(selector).collect()
}

/// `GET|POST /loki/api/v1/series`
pub async fn series(
    State(st): State<AppState>,
    Extension(dc): Extension<DataCaller>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    metadata(&st, &dc, q, &headers, &body, |p, m| {
        let sels = match_params(p)?;
        let mut out = String::from("{\"status\":\"success\",\"data\":[");
        for (i, l) in matching_series(&m, &sels).iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_labels_model(&mut out, l);
        }
        out.push_str("]}");
        Ok(out)
    })
    .await
}

/// `GET|POST /loki/api/v1/index/stats` (no envelope, as Loki answers it).
pub async fn index_stats(
    State(st): State<AppState>,
    Extension(dc): Extension<DataCaller>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    metadata(&st, &dc, q, &headers, &body, |p, m| {
        let ms = selector(&query_param(p)?)?;
        let s = m.store.stats(m.project, &ms, m.start, m.end);
        Ok(format!(
            "{{\"streams\":{},\"chunks\":{},\"entries\":{},\"bytes\":{}}}",
            s.streams, s.chunks, s.entries, s.bytes
        ))
    })
    .await
}

/// `GET /loki/api/v1/detected_labels`: each label of the matching streams with the number
/// of distinct values it takes.
pub async fn detected_labels(
    State(st): State<AppState>,
    Extension(dc): Extension<DataCaller>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    metadata(&st, &dc, q, &headers, &body, |p, m| {
        let ms = optional_selector(p)?;
        let mut values: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
            Default::default();
        for l in m.store.series(m.project, &ms, m.start, m.end) {
            for x in l.iter() {
                values
                    .entry(x.name.clone())
                    .or_default()
                    .insert(x.value.clone());
            }
        }
        let mut out = String::from("{\"detectedLabels\":[");
        for (i, (name, vals)) in values.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"label\":");
            json_str(&mut out, name);
            let _ = write!(out, ",\"cardinality\":{}}}", vals.len());
        }
        out.push_str("]}");
        Ok(out)
    })
    .await
}

/// `GET /loki/api/v1/status/buildinfo`
pub async fn buildinfo() -> Response {
    json_ok(format!(
        "{{\"version\":\"{}\",\"revision\":\"\",\"branch\":\"\",\"buildUser\":\"\",\"buildDate\":\"\",\"goVersion\":\"\"}}",
        env!("CARGO_PKG_VERSION")
    ))
}

/// `GET /ready`
pub async fn ready(State(st): State<AppState>) -> Response {
    match log_store(&st) {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => e.into_response(),
    }
}

// ------------------------------------------------------------------ live tail

/// Most entries a tail sends first from the past (`limit`, default 100).
const TAIL_LIMIT: usize = 100;

/// `GET /loki/api/v1/tail` (WebSocket): first up to `limit` entries since `start` (default:
/// the last hour), oldest first, then every new entry of a matching stream as it becomes
/// durable, each as `{"streams":[{"stream":…,"values":[["<ns>","<line>"]]}]}`.
pub async fn tail(
    State(st): State<AppState>,
    Extension(dc): Extension<DataCaller>,
    RawQuery(q): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let p = Params::parse(q.as_deref(), None);
    let prepared = (|| -> Result<_, LokiError> {
        let store = log_store(&st)?;
        let query = query_param(&p)?;
        let tq = logql::TailQuery::new(&query).map_err(engine_err)?;
        let now = st.now();
        let start = time_param(&p, "start", now - DEFAULT_RANGE_NS)?;
        let limit = match p.get("limit").filter(|s| !s.is_empty()) {
            None => TAIL_LIMIT,
            Some(_) => limit(&p)?,
        };
        Ok((store, query, tq, start, limit))
    })();
    let (store, query, tq, start, limit) = match prepared {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let project = dc.project.name.clone();
    ws.on_upgrade(move |socket| tail_session(socket, store, project, query, tq, start, limit))
}

fn tail_message(entries: &[(LabelPairs, i64, String)]) -> String {
    let mut out = String::from("{\"streams\":[");
    for (i, (labels, ts, line)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"stream\":");
        json_pairs(&mut out, labels);
        let _ = write!(out, ",\"values\":[[\"{ts}\",");
        json_str(&mut out, line);
        out.push_str("]]}");
    }
    out.push_str("],\"dropped_entries\":null}");
    out
}

async fn tail_session(
    mut socket: WebSocket,
    store: Arc<logstore::Store>,
    project: String,
    query: String,
    tq: logql::TailQuery,
    start: i64,
    limit: usize,
) {
    // Subscribe first, so nothing falls between the history and the live part.
    let rx = store.subscribe(&project);
    let history = {
        let store = store.clone();
        let project = project.clone();
        tokio::task::spawn_blocking(move || {
            let view = StoreView {
                store: &store,
                project: &project,
                blocks: BlockCounts::default(),
            };
            let mut params = logql::QueryParams::range(start, i64::MAX / 2, 0);
            params.limit = limit;
            params.direction = Direction::Backward;
            params.deadline = Some(Instant::now() + QUERY_TIMEOUT);
            logql::Engine::default().query(&view, &query, &params)
        })
        .await
    };
    let mut last_ts = i64::MIN;
    if let Ok(Ok(QueryResult::Streams(streams))) = history {
        let mut all: Vec<(LabelPairs, i64, String)> = streams
            .into_iter()
            .flat_map(|s| {
                let labels = s.labels;
                s.entries
                    .into_iter()
                    .map(move |e| (labels.clone(), e.ts_ns, e.line))
            })
            .collect();
        all.sort_by_key(|e| e.1);
        last_ts = all.last().map_or(i64::MIN, |e| e.1);
        if !all.is_empty()
            && socket
                .send(Message::Text(tail_message(&all).into()))
                .await
                .is_err()
        {
            return;
        }
    }
    // The store's subscription is a std channel: a blocking thread forwards what matches.
    let (tx, mut arx) = tokio::sync::mpsc::channel::<String>(64);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let forward = tokio::task::spawn_blocking(move || {
        while !stop2.load(Ordering::Relaxed) {
            let batch = match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(b) => b,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut out: Vec<(LabelPairs, i64, String)> = Vec::new();
            for sb in batch.iter() {
                if !tq.matches_stream(&sb.labels) {
                    continue;
                }
                for e in &sb.entries {
                    // History already sent these (entries at or before its newest).
                    if e.ts <= last_ts {
                        continue;
                    }
                    if let Some(t) = tq.process(&sb.labels, e.ts, &e.line, &e.metadata) {
                        out.push((t.labels, e.ts, t.line));
                    }
                }
            }
            if !out.is_empty() && tx.blocking_send(tail_message(&out)).is_err() {
                break;
            }
        }
    });
    loop {
        tokio::select! {
            msg = arx.recv() => match msg {
                Some(m) => {
                    if socket.send(Message::Text(m.into())).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = forward.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_as_loki_reads_them() {
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000_000_000_000));
        assert_eq!(
            parse_time("1700000000000000000"),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(parse_time("1700000000.5"), Some(1_700_000_000_500_000_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_step("15s"), Some(15_000_000_000));
        assert_eq!(parse_step("0.5"), Some(500_000_000));
        assert_eq!(parse_step("0"), None);
        assert_eq!(default_step(0, 3_600_000_000_000), 14_000_000_000);
        assert_eq!(default_step(0, 60_000_000_000), 1_000_000_000);
    }

    #[test]
    fn limits_and_directions_are_checked() {
        let p = Params::parse(Some("limit=6000"), None);
        assert!(
            limit(&p)
                .unwrap_err()
                .message
                .contains("max_entries_limit_per_query")
        );
        let p = Params::parse(Some("direction=sideways"), None);
        assert!(direction(&p).is_err());
        let p = Params::parse(Some("query=%7Ba%3D%22b%22%7D&start=10&end=5"), None);
        assert!(range_request(&p, 0).is_err());
        let p = Params::parse(
            Some("query=%7Ba%3D%22b%22%7D&start=0&end=100000&step=1"),
            None,
        );
        assert!(range_request(&p, 0).unwrap_err().message.contains("11,000"));
        let p = Params::parse(Some("query=%7Ba%3D%22b%22%7D"), None);
        assert!(
            instant_request(&p, 0)
                .unwrap_err()
                .message
                .contains("range query")
        );
    }

    /// `categorize-labels`: entries grouped by their stream's labels, structured metadata and
    /// parsed labels apart in a third element, newest first for a backward query, and the
    /// flag echoed; the default encoding is unchanged.
    #[test]
    fn categorized_labels_keep_stream_metadata_and_parsed_apart() {
        let dir = std::env::temp_dir().join(format!("fd-loki-cat-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = logstore::Store::open(&dir, logstore::Options::default()).unwrap();
        let s = 1_000_000_000i64;
        let entry = |t: i64, line: &str, trace: &str| logstore::Entry {
            ts: t * s,
            line: line.to_string(),
            metadata: vec![("trace_id".to_string(), trace.to_string())],
        };
        store
            .append(
                "p1",
                &[logstore::StreamBatch {
                    labels: Labels::from_pairs([("app", "a")]),
                    entries: vec![
                        entry(1, "level=info msg=one", "t1"),
                        entry(2, "level=error msg=two", "t2"),
                        entry(3, "level=info msg=three", "t3"),
                    ],
                }],
            )
            .unwrap();
        let view = StoreView {
            store: &store,
            project: "p1",
            blocks: BlockCounts::default(),
        };
        let engine = logql::Engine::default();
        let params = logql::QueryParams::range(0, 10 * s, s);
        let res = engine
            .query(&view, "{app=\"a\"} | logfmt", &params)
            .unwrap();
        let cat = render_with(
            &res,
            10 * s,
            Duration::ZERO,
            &view.blocks,
            Some(Direction::Backward),
        );
        let v: serde_json::Value = serde_json::from_str(&cat).unwrap();
        assert_eq!(v["data"]["encodingFlags"][0], "categorize-labels");
        let result = v["data"]["result"].as_array().unwrap();
        assert_eq!(
            result.len(),
            1,
            "one stream read, one stream answered: {cat}"
        );
        assert_eq!(result[0]["stream"], serde_json::json!({"app": "a"}));
        let values = result[0]["values"].as_array().unwrap();
        let times: Vec<&str> = values.iter().map(|x| x[0].as_str().unwrap()).collect();
        assert_eq!(times, ["3000000000", "2000000000", "1000000000"]);
        assert_eq!(
            values[1][2],
            serde_json::json!({
                "structuredMetadata": {"trace_id": "t2"},
                "parsed": {"level": "error", "msg": "two"}
            })
        );
        // The default encoding: one stream per final label set, no third element.
        let plain: serde_json::Value =
            serde_json::from_str(&render(&res, 10 * s, Duration::ZERO, &view.blocks)).unwrap();
        assert!(plain["data"].get("encodingFlags").is_none());
        assert_eq!(plain["data"]["result"].as_array().unwrap().len(), 3);
        assert_eq!(
            plain["data"]["result"][0]["values"][0]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let mut h = HeaderMap::new();
        assert!(!wants_categorized(&h));
        h.insert(
            "x-loki-response-encoding-flags",
            "other, categorize-labels".parse().unwrap(),
        );
        assert!(wants_categorized(&h));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn queries_read_a_project_of_the_store_and_render_as_loki() {
        let dir = std::env::temp_dir().join(format!("fd-loki-read-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = logstore::Store::open(&dir, logstore::Options::default()).unwrap();
        let s = 1_000_000_000i64;
        let batch = |app: &str, n: i64| logstore::StreamBatch {
            labels: Labels::from_pairs([("app", app)]),
            entries: (0..n)
                .map(|i| logstore::Entry::new(i * s, format!("line {i} of {app} status=500")))
                .collect(),
        };
        store
            .append("p1", &[batch("a", 10), batch("b", 5)])
            .unwrap();
        store.append("p2", &[batch("a", 3)]).unwrap();
        let view = StoreView {
            store: &store,
            project: "p1",
            blocks: BlockCounts::default(),
        };
        let engine = logql::Engine::default();
        let mut params = logql::QueryParams::range(0, 10 * s, s);
        params.limit = 3;
        params.direction = Direction::Backward;
        let res = engine
            .query(&view, "{app=\"a\"} |= \"status=500\"", &params)
            .unwrap();
        let body = render(&res, 10 * s, Duration::from_millis(1), &view.blocks);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["data"]["resultType"], "streams");
        let values = v["data"]["result"][0]["values"].as_array().unwrap();
        assert_eq!(values.len(), 3);
        assert_eq!(values[0][0], "9000000000");
        assert_eq!(values[0][1], "line 9 of a status=500");
        assert_eq!(v["data"]["stats"]["summary"]["totalEntriesReturned"], 3);
        // A metric query over the other project sees only its own lines.
        let view2 = StoreView {
            store: &store,
            project: "p2",
            blocks: BlockCounts::default(),
        };
        let res = engine
            .query(
                &view2,
                "sum(count_over_time({app=~\".+\"}[10s]))",
                &logql::QueryParams::instant(2 * s),
            )
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&render(&res, 2 * s, Duration::ZERO, &view2.blocks)).unwrap();
        assert_eq!(v["data"]["resultType"], "vector");
        // The window is (t - 10s, t]: p2's lines at 0, 1 and 2 s, none of p1's.
        assert_eq!(v["data"]["result"][0]["value"][0], 2);
        assert_eq!(v["data"]["result"][0]["value"][1], "3");
        // Sealed into segments: a token no line holds is ruled out by the blocks' bloom
        // filters (referenced, none decompressed); a present one reads its block.
        store.flush().unwrap();
        let stats = |q: &str| {
            let view = StoreView {
                store: &store,
                project: "p1",
                blocks: BlockCounts::default(),
            };
            let res = engine
                .query(&view, q, &logql::QueryParams::range(0, 10 * s, s))
                .unwrap();
            let v: serde_json::Value =
                serde_json::from_str(&render(&res, 10 * s, Duration::ZERO, &view.blocks)).unwrap();
            let st = &v["data"]["stats"]["querier"]["store"];
            let sum = &v["data"]["stats"]["summary"];
            (
                st["totalChunksRef"].as_u64().unwrap(),
                st["totalChunksDownloaded"].as_u64().unwrap(),
                sum["totalLinesProcessed"].as_u64().unwrap(),
                sum["totalBytesProcessed"].as_u64().unwrap(),
            )
        };
        let (refs, read, lines, bytes) = stats("{app=~\".+\"} |= \"nowhere-at-all\"");
        assert!(refs >= 2, "one block per stream at least: {refs}");
        assert_eq!((read, lines, bytes), (0, 0, 0));
        let (refs, read, lines, bytes) = stats("{app=\"b\"} |= \"line 3 of b\"");
        assert!(refs >= 1 && read >= 1, "{refs} {read}");
        // Every line of the blocks read is processed, the filter's misses included.
        assert!(
            lines > 1 && bytes >= lines * "line 3 of b".len() as u64,
            "{lines} {bytes}"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
