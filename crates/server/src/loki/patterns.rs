//! `GET|POST /loki/api/v1/patterns` (scope `logs:read`, per project): the patterns of the
//! lines a query selects, each with its count per step, as Grafana's Logs Drilldown
//! "Patterns" tab reads them.
//!
//! Loki computes patterns in its ingesters as lines arrive; Flightdeck computes them when
//! asked: the newest [`MAX_LINES`] lines of the query in `[start, end)` (read through the
//! `logql` engine, so line filters and other pipeline stages apply) are fed oldest first
//! into a [`Drain`] clustering per level (as Loki keeps patterns per detected level: from a
//! `level`-like label or metadata, else from the line; `unknown` when none says), and the
//! [`MAX_PATTERNS`] patterns with the most lines are answered, most first:
//!
//! ```json
//! {"status":"success","data":[{"pattern":"level=info msg=\"GET <_>\"","samples":[[1764217800,12],…],"level":"info"}]}
//! ```
//!
//! Samples are `[unix seconds of the step's start, lines]`, only for steps with lines, in
//! time order; steps are aligned to multiples of `step` (whole seconds, at least 1 s;
//! default the range / 250 as for `query_range`). A range holding more lines than the cap
//! is summarised from its newest part only.

use std::collections::BTreeMap;
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
    BlockCounts, CancelOnDrop, LokiError, MAX_SERIES, QUERY_TIMEOUT, StoreView, engine_err,
    is_log_query, log_store, params, query_param, range_window, reply,
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
    // Samples are in whole seconds: a step rounds up to one.
    let (start, end, step) = range_window(p, now_ns, SECOND)?;
    Ok(PatternsRequest {
        query,
        start,
        end,
        step,
    })
}

/// A pattern of the lines of one level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelPattern {
    /// `trace`, `debug`, `info`, `warn`, `error`, `fatal`, `critical` or `unknown`.
    pub level: &'static str,
    pub pattern: Pattern,
}

/// Reads the request's newest `max_lines` lines ([`MAX_LINES`] for the endpoint) from one
/// project and clusters them, one clustering per [detected level](detect_level) as Loki
/// keeps them (blocking). At most [`MAX_PATTERNS`], most lines first.
pub fn find_patterns(
    store: &logstore::Store,
    project: &str,
    req: &PatternsRequest,
    max_lines: usize,
    cancel: Option<Arc<AtomicBool>>,
) -> Result<Vec<LevelPattern>, LokiError> {
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
    let mut lines: Vec<(i64, &'static str, &str)> = Vec::new();
    for s in &streams {
        // The stream's labels hold its structured metadata and parsed labels too.
        let known = level_of_labels(&s.labels);
        for e in &s.entries {
            let level = known.or_else(|| level_in_line(&e.line)).unwrap_or(UNKNOWN);
            lines.push((e.ts_ns, level, &e.line));
        }
    }
    lines.sort_by_key(|(ts, _, _)| *ts);
    let mut drains: BTreeMap<&'static str, Drain> = BTreeMap::new();
    for (ts, level, line) in lines {
        drains
            .entry(level)
            .or_insert_with(|| Drain::new(req.step))
            .add(ts, line);
    }
    let mut out: Vec<LevelPattern> = drains
        .into_iter()
        .flat_map(|(level, d)| {
            d.patterns(MAX_PATTERNS)
                .into_iter()
                .map(move |pattern| LevelPattern { level, pattern })
        })
        .collect();
    out.sort_by(|a, b| {
        (b.pattern.total, a.level, &a.pattern.pattern).cmp(&(
            a.pattern.total,
            b.level,
            &b.pattern.pattern,
        ))
    });
    out.truncate(MAX_PATTERNS);
    Ok(out)
}

// ------------------------------------------------------------------ levels

const UNKNOWN: &str = "unknown";

/// Label (and structured metadata) names that state a line's level, most telling first.
const LEVEL_LABELS: [&str; 6] = [
    "detected_level",
    "level",
    "lvl",
    "severity",
    "log_level",
    "loglevel",
];

/// A level name or abbreviation, in Loki's normalised spelling.
fn normalize_level(v: &str) -> Option<&'static str> {
    Some(match v.to_ascii_lowercase().as_str() {
        "trace" | "trc" => "trace",
        "debug" | "dbg" => "debug",
        "info" | "inf" | "information" | "informational" | "notice" => "info",
        "warn" | "warning" | "wrn" => "warn",
        "error" | "err" | "eror" => "error",
        "fatal" | "ftl" => "fatal",
        "critical" | "crit" | "panic" | "alert" | "emerg" | "emergency" => "critical",
        _ => return None,
    })
}

fn level_of_labels(labels: &[(String, String)]) -> Option<&'static str> {
    LEVEL_LABELS.iter().find_map(|name| {
        labels
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| normalize_level(v))
    })
}

/// The level a line states in its first 1 KiB: a `level`, `lvl` or `severity` key
/// (logfmt `level=warn`, JSON `"level":"warn"`), else the first word that is a level's
/// full name (`[ERROR] disk full`).
fn level_in_line(line: &str) -> Option<&'static str> {
    let mut cut = line.len().min(1024);
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = &line[..cut];
    let b = head.as_bytes();
    for key in ["level", "lvl", "severity"] {
        let mut from = 0;
        while let Some(i) = head[from..].find(key) {
            let at = from + i;
            from = at + key.len();
            if at > 0 && !matches!(b[at - 1], b' ' | b'\t' | b'"' | b'{' | b',') {
                continue;
            }
            let after = &head[from..];
            let Some(value) = after
                .strip_prefix('=')
                .or_else(|| after.strip_prefix("\":").map(str::trim_start))
            else {
                continue;
            };
            let value = value.trim_start_matches('"');
            let end = value
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(value.len());
            if let Some(l) = normalize_level(&value[..end]) {
                return Some(l);
            }
        }
    }
    const NAMES: [&str; 8] = [
        "trace", "debug", "info", "warn", "warning", "error", "fatal", "critical",
    ];
    head.split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| (4..=8).contains(&w.len()))
        .find_map(|w| NAMES.iter().find(|n| w.eq_ignore_ascii_case(n)))
        .and_then(|n| normalize_level(n))
}

/// `{"status":"success","data":[{"pattern":…,"samples":[[<s>,<n>],…],"level":…},…]}`.
pub fn render(patterns: &[LevelPattern]) -> String {
    let mut out = String::from("{\"status\":\"success\",\"data\":[");
    for (i, LevelPattern { level, pattern: p }) in patterns.iter().enumerate() {
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
        out.push_str("],\"level\":");
        json_str(&mut out, level);
        out.push('}');
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
                {"pattern": "GET <_> took <_>", "samples": [[100, 4], [120, 4]],
                 "level": "unknown"},
                {"pattern": "slow query on orders", "samples": [[100, 1]], "level": "unknown"},
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
        assert_eq!(
            ps[0].pattern.samples,
            vec![(100 * SECOND, 3), (120 * SECOND, 3)]
        );
        // Over the cap, the newest lines are the ones counted.
        // (the six lines at 105…130 s: 115, 120, 125 and 130)
        let ps = find_patterns(&store, "p", &r, 4, None).unwrap();
        assert_eq!(
            ps[0].pattern.samples,
            vec![(100 * SECOND, 1), (120 * SECOND, 3)]
        );
        assert_eq!(ps[0].pattern.total, 4);
    }

    /// The level of lines: labels and metadata first, then a key in the line, then a
    /// level's name as a word; one pattern per level even when the text is the same.
    #[test]
    fn levels_come_from_labels_then_the_line() {
        let l = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(level_of_labels(&l(&[("level", "WARNING")])), Some("warn"));
        assert_eq!(
            level_of_labels(&l(&[("detected_level", "err"), ("level", "info")])),
            Some("error")
        );
        assert_eq!(
            level_of_labels(&l(&[("level", "loud"), ("job", "x")])),
            None
        );
        for (line, want) in [
            ("level=info msg=ok", Some("info")),
            ("ts=1 lvl=dbg msg=ok", Some("debug")),
            (r#"{"msg":"x","level":"Error"}"#, Some("error")),
            (r#"{"severity": "CRITICAL", "msg": "x"}"#, Some("critical")),
            ("sublevel=9 [WARN] disk almost full", Some("warn")),
            ("2026-11-27 04:00:00 FATAL out of memory", Some("fatal")),
            ("nothing to say", None),
            ("errors: 0", None),
        ] {
            assert_eq!(level_in_line(line), want, "{line}");
        }
        let dir = tempfile::tempdir().unwrap();
        let store = logstore::Store::open(dir.path(), logstore::Options::default()).unwrap();
        let entry = |t: i64, line: &str| logstore::Entry::new(t * SECOND, line.to_string());
        let mut tagged = entry(3, "cache refreshed");
        tagged.metadata = vec![("level".into(), "debug".into())];
        store
            .append(
                "p",
                &[
                    logstore::StreamBatch {
                        labels: model::Labels::from_pairs([("app", "a")]),
                        entries: vec![
                            entry(1, "level=error msg=\"cache refreshed\""),
                            entry(2, "level=info msg=\"cache refreshed\""),
                            entry(4, "level=info msg=\"cache refreshed\""),
                            tagged,
                        ],
                    },
                    logstore::StreamBatch {
                        labels: model::Labels::from_pairs([("app", "b"), ("level", "warn")]),
                        entries: vec![entry(5, "level=info msg=\"cache refreshed\"")],
                    },
                ],
            )
            .unwrap();
        let r = PatternsRequest {
            query: "{app=~\".+\"}".into(),
            start: 0,
            end: 100 * SECOND,
            step: 10 * SECOND,
        };
        let got: Vec<(&str, String, u64)> = find_patterns(&store, "p", &r, MAX_LINES, None)
            .unwrap()
            .into_iter()
            .map(|p| (p.level, p.pattern.pattern, p.pattern.total))
            .collect();
        assert_eq!(
            got,
            vec![
                ("info", r#"level=info msg="cache refreshed""#.to_string(), 2),
                ("debug", "cache refreshed".to_string(), 1),
                (
                    "error",
                    r#"level=error msg="cache refreshed""#.to_string(),
                    1
                ),
                ("warn", r#"level=info msg="cache refreshed""#.to_string(), 1),
            ]
        );
    }
}
