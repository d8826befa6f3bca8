//! `GET|POST /loki/api/v1/patterns` (scope `logs:read`, per project): the patterns of the
//! lines a query selects, each with its count per step, as Grafana's Logs Drilldown
//! "Patterns" tab reads them.
//!
//! Loki computes patterns in its ingesters as lines arrive; Flightdeck computes them when
//! asked: the newest [`MAX_LINES`] lines of the query in `[start, end)` (read through the
//! `logql` engine, so line filters and other pipeline stages apply) are fed oldest first
//! into a [`Drain`] clustering, and the [`MAX_PATTERNS`] patterns with the most lines are
//! answered, most first:
//!
//! ```json
//! {"status":"success","data":[{"pattern":"level=info msg=\"GET <_>\"","samples":[[1764217800,12],…]}]}
//! ```
//!
//! Samples are `[unix seconds of the step's start, lines]`, only for steps with lines, in
//! time order; steps are aligned to multiples of `step` (whole seconds, at least 1 s;
//! default the range / 250 as for `query_range`). A range holding more lines than the cap
//! is summarised from its newest part only.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use logql::{Direction, QueryResult};

use super::drain::{Drain, Pattern};
use super::read::{
    BlockCounts, CancelOnDrop, DEFAULT_RANGE_NS, LokiError, MAX_SERIES, QUERY_TIMEOUT, StoreView,
    default_step, engine_err, is_log_query, log_store, params, parse_step, query_param, reply,
    time_param,
};
use crate::AppState;
use crate::prom::DataCaller;
use crate::prom::api::{Params, json_str};

/// Most lines one request clusters: the newest of its range.
pub const MAX_LINES: usize = 100_000;
/// Most patterns one answer holds.
pub const MAX_PATTERNS: usize = 300;

const SECOND: i64 = 1_000_000_000;

/// What a patterns request asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct PatternsRequest {
    pub query: String,
    pub start: i64,
    pub end: i64,
    /// Whole seconds, in nanoseconds.
    pub step: i64,
}

/// Reads `query` (a log query: a selector, optionally with line filters), `start`, `end`
/// (default the hour up to now) and `step`.
pub fn patterns_request(p: &Params, now_ns: i64) -> Result<PatternsRequest, LokiError> {
    let query = query_param(p)?;
    if !is_log_query(&query)? {
        return Err(LokiError::bad(format!(
            "a log query (a stream selector, optionally with line filters) is expected \
             here, not a metric query: {query}"
        )));
    }
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
                "invalid step \"{raw}\": zero or negative query resolution step widths are \
                 not accepted. Try a positive integer"
            ))
        })?,
    };
    // Samples are in whole seconds: a step rounds up to one.
    let step = ((step + SECOND - 1) / SECOND).max(1) * SECOND;
    if (end - start) / step > logql::eval::MAX_POINTS {
        return Err(LokiError::bad(
            "exceeded maximum resolution of 11,000 points per timeseries. Try increasing \
             the value of the step parameter",
        ));
    }
    Ok(PatternsRequest {
        query,
        start,
        end,
        step,
    })
}

/// Reads the request's newest `max_lines` lines ([`MAX_LINES`] for the endpoint) from one
/// project and clusters them (blocking).
pub fn find_patterns(
    store: &logstore::Store,
    project: &str,
    req: &PatternsRequest,
    max_lines: usize,
    cancel: Option<Arc<AtomicBool>>,
) -> Result<Vec<Pattern>, LokiError> {
    let view = StoreView {
        store,
        project,
        blocks: BlockCounts::default(),
    };
    let engine = logql::Engine::new(logql::EngineOptions {
        max_series: MAX_SERIES,
        max_entries: max_lines,
    });
    let mut params = logql::QueryParams::range(req.start, req.end, req.step);
    params.limit = max_lines;
    params.direction = Direction::Backward;
    params.deadline = Some(Instant::now() + QUERY_TIMEOUT);
    params.cancel = cancel;
    let QueryResult::Streams(streams) = engine
        .query(&view, &req.query, &params)
        .map_err(engine_err)?
    else {
        return Err(LokiError::bad("a log query is expected here"));
    };
    let mut lines: Vec<(i64, &str)> = streams
        .iter()
        .flat_map(|s| s.entries.iter().map(|e| (e.ts_ns, e.line.as_str())))
        .collect();
    lines.sort_by_key(|(ts, _)| *ts);
    let mut drain = Drain::new(req.step);
    for (ts, line) in lines {
        drain.add(ts, line);
    }
    Ok(drain.patterns(MAX_PATTERNS))
}

/// `{"status":"success","data":[{"pattern":…,"samples":[[<s>,<n>],…]},…]}`.
pub fn render(patterns: &[Pattern]) -> String {
    let mut out = String::from("{\"status\":\"success\",\"data\":[");
    for (i, p) in patterns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"pattern\":");
        json_str(&mut out, &p.pattern);
        out.push_str(",\"samples\":[");
        for (j, (t, n)) in p.samples.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(&format!("[{},{n}]", t.div_euclid(SECOND)));
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    out
}

/// `GET|POST /loki/api/v1/patterns`
pub async fn patterns(
    State(st): State<AppState>,
    Extension(dc): Extension<DataCaller>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = params(q, &headers, &body);
    let r = async {
        let store = log_store(&st)?;
        let req = patterns_request(&p, st.now())?;
        let project = dc.project.name.clone();
        // A client that goes away stops the read.
        let guard = CancelOnDrop(Arc::new(AtomicBool::new(false)));
        let cancel = guard.0.clone();
        let r = tokio::task::spawn_blocking(move || {
            find_patterns(&store, &project, &req, MAX_LINES, Some(cancel)).map(|ps| render(&ps))
        })
        .await
        .map_err(LokiError::internal)?;
        drop(guard);
        r
    }
    .await;
    reply(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(q: &str) -> Result<PatternsRequest, LokiError> {
        patterns_request(&Params::parse(Some(q), None), 7_200 * SECOND)
    }

    #[test]
    fn parameters_are_read_as_loki_reads_them() {
        assert_eq!(
            req("query=%7Ba%3D%22b%22%7D").unwrap(),
            PatternsRequest {
                query: "{a=\"b\"}".into(),
                start: 3_600 * SECOND,
                end: 7_200 * SECOND,
                step: 14 * SECOND,
            }
        );
        let r = req("query=%7Ba%3D%22b%22%7D+%7C%3D+%22x%22&start=0&end=600&step=1m").unwrap();
        assert_eq!((r.start, r.end, r.step), (0, 600 * SECOND, 60 * SECOND));
        assert_eq!(
            req("query=%7Ba%3D%22b%22%7D&step=0.2").unwrap().step,
            SECOND
        );
        for (q, needle) in [
            ("", "query parameter is required"),
            ("query=%7Ba%3D", "parse error"),
            (
                "query=rate(%7Ba%3D%22b%22%7D%5B1m%5D)",
                "not a metric query",
            ),
            ("query=%7Ba%3D%22b%22%7D&start=10&end=5", "end timestamp"),
            ("query=%7Ba%3D%22b%22%7D&step=-1", "invalid step"),
            ("query=%7Ba%3D%22b%22%7D&start=yesterday", "invalid start"),
            (
                "query=%7Ba%3D%22b%22%7D&start=0&end=100000&step=1",
                "11,000",
            ),
        ] {
            let e = req(q).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(e.message.contains(needle), "{q}: {}", e.message);
        }
    }

    #[test]
    fn patterns_of_a_project_render_as_loki() {
        let dir = tempfile::tempdir().unwrap();
        let store = logstore::Store::open(dir.path(), logstore::Options::default()).unwrap();
        let batch = |app: &str, lines: Vec<(i64, String)>| logstore::StreamBatch {
            labels: model::Labels::from_pairs([("app", app)]),
            entries: lines
                .into_iter()
                .map(|(t, l)| logstore::Entry::new(t * SECOND, l))
                .collect(),
        };
        let web: Vec<(i64, String)> = (0..8)
            .map(|i| (100 + i * 5, format!("GET /items/{i} took {i}ms")))
            .collect();
        let db = vec![(101, "slow query on orders".to_string())];
        store
            .append("p", &[batch("web", web), batch("db", db)])
            .unwrap();
        store
            .append(
                "other",
                &[batch("web", vec![(100, "GET /x took 1ms".into())])],
            )
            .unwrap();
        let r = PatternsRequest {
            query: "{app=~\".+\"}".into(),
            start: 0,
            end: 1_000 * SECOND,
            step: 20 * SECOND,
        };
        let ps = find_patterns(&store, "p", &r, MAX_LINES, None).unwrap();
        let v: serde_json::Value = serde_json::from_str(&render(&ps)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"status": "success", "data": [
                {"pattern": "GET <_> took <_>", "samples": [[100, 4], [120, 4]]},
                {"pattern": "slow query on orders", "samples": [[100, 1]]},
            ]})
        );
        // Line filters apply before clustering; the range is [start, end).
        let r = PatternsRequest {
            query: "{app=\"web\"} != \"/items/0\"".into(),
            start: 105 * SECOND,
            end: 135 * SECOND,
            step: 20 * SECOND,
        };
        let ps = find_patterns(&store, "p", &r, MAX_LINES, None).unwrap();
        assert_eq!(ps.len(), 1);
        assert_eq!(ps[0].samples, vec![(100 * SECOND, 3), (120 * SECOND, 3)]);
        // Over the cap, the newest lines are the ones counted.
        // (the six lines at 105…130 s: 115, 120, 125 and 130)
        let ps = find_patterns(&store, "p", &r, 4, None).unwrap();
        assert_eq!(ps[0].samples, vec![(100 * SECOND, 1), (120 * SECOND, 3)]);
        assert_eq!(ps[0].total, 4);
    }
}
