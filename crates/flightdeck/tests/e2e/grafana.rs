//! Grafana's Prometheus data source against Flightdeck: the requests it
//! sends, byte for byte in method, path, parameters and headers, and the
//! answers checked field by field the way Grafana reads them.
//!
//! Where the requests come from (grafana/grafana):
//! - "Save & test": `pkg/promlib/healthcheck.go` runs the instant query
//!   `1+1` over the time range (1 s, 4 s), which `pkg/promlib/client/client.go`
//!   (`QueryInstant`) sends as `query=1+1&time=4`, by POST with
//!   `Content-Type: application/x-www-form-urlencoded` (the data source's
//!   default HTTP method); then `pkg/promlib/heuristics.go` GETs
//!   `api/v1/status/buildinfo` and calls the server "Prometheus" when
//!   `data.features` is empty, "Mimir" otherwise.
//! - Label browser: `packages/grafana-prometheus/src/language_provider.ts`
//!   — `fetchLabelValues('__name__')` → `/api/v1/label/__name__/values`
//!   with `start`/`end` (whole seconds); `fetchLabels` → `/api/v1/labels`;
//!   `fetchSeriesValuesWithMatch` → `/api/v1/label/<name>/values` with
//!   `match[]`; `fetchSeriesLabels` → `/api/v1/series` with `match[]` and
//!   `limit=40000`; `fetchSeriesLabelsMatch` → `/api/v1/labels` with
//!   `match[]`; `loadMetricsMetadata` → `/api/v1/metadata`. They go through
//!   the backend's `QueryResource` (client.go), which POSTs them as a form
//!   except the GET-only paths (`api/v1/label/`, `api/v1/metadata`,
//!   `api/v1/status/*`, …) and retries a POST answered 400/405 as a GET.
//! - Time series panel: `QueryRange` (client.go) POSTs `query`, `start`,
//!   `end` and `step` (seconds, `strconv.FormatFloat`), and
//!   `QueryExemplars` POSTs `query`, `start`, `end` when exemplars are on.
//! - Answers are read by `pkg/promlib/converter/prom.go`: `status`, then
//!   `data` (`resultType` and `result`), `error`/`errorType` (shown as
//!   "errorType: error"), `warnings`/`infos`; each sample is `[<number>,
//!   "<float string>"]`, parsed with `strconv.ParseFloat`.
//!
//! The Go backend's HTTP client asks for gzip itself (Go's transport adds
//! `Accept-Encoding: gzip` and decodes; the test client, ureq, decodes
//! such answers transparently the same way, so the compressed bytes
//! themselves are checked in `prom_api.rs`), and Grafana identifies itself in
//! `User-Agent`; both are sent here. Authentication is basic auth with
//! the token as password, as the README configures the data source.
//!
//! `grafana_needs_engine_*` need the PromQL engine (issue #6) and fail
//! until it is merged; the others pass without it.

use std::io::Read as _;

use serde_json::Value;

use crate::harness::{Server, call, now_ns};
use crate::promql_side_by_side::{Series, write_bodies};
use crate::real_clients::enc;

/// What Grafana 11's backend sends as `User-Agent`.
const USER_AGENT: &str = "Grafana/11.3.0";

/// A data source configured against a Flightdeck project.
struct Grafana {
    s: Server,
    auth: String,
    /// The dashboard's time range, whole seconds (Grafana snaps it).
    from_s: i64,
    to_s: i64,
}

/// An answer as Grafana's backend sees it: gzip decoded.
struct Answer {
    status: u16,
    json: Value,
}

impl Grafana {
    /// Flightdeck with a project `grafana`, a token for it, and the last
    /// 30 minutes of `http_requests_total{job="api"}` (two codes, exactly
    /// +15 per 15 s, so a rate of 1/s), a gauge and a classic histogram.
    fn start() -> Grafana {
        let s = Server::binary_with(&["--host-metrics", "false"]);
        s.project("grafana");
        let (_, token) = s.token_in("grafana", &["metrics:read", "metrics:write"]);
        use base64::Engine;
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("grafana:{token}"))
        );
        let now_s = now_ns() / 1_000_000_000;
        let end_ms = (now_s - 15) * 1000;
        let start_ms = end_ms - 30 * 60_000;
        let times = || {
            (0..)
                .map(move |i| start_ms + i * 15_000)
                .take_while(move |t| *t <= end_ms)
        };
        let labels = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let mut data = Vec::new();
        for (code, base) in [("200", 1000.0), ("500", 7.0)] {
            data.push(Series {
                labels: labels(&[
                    ("__name__", "http_requests_total"),
                    ("job", "api"),
                    ("instance", "api-0:8080"),
                    ("code", code),
                ]),
                samples: times()
                    .enumerate()
                    .map(|(i, t)| (t, base + 15.0 * i as f64))
                    .collect(),
            });
        }
        for inst in ["node-0:9100", "node-1:9100", "node-2:9100"] {
            data.push(Series {
                labels: labels(&[
                    ("__name__", "node_memory_free_bytes"),
                    ("job", "node"),
                    ("instance", inst),
                ]),
                samples: times().map(|t| (t, 4e9 + (t % 7_000) as f64)).collect(),
            });
        }
        for (le, share) in [("0.1", 0.5), ("0.5", 0.9), ("+Inf", 1.0)] {
            data.push(Series {
                labels: labels(&[
                    ("__name__", "http_request_duration_seconds_bucket"),
                    ("job", "api"),
                    ("instance", "api-0:8080"),
                    ("le", le),
                ]),
                samples: times()
                    .enumerate()
                    .map(|(i, t)| (t, (100.0 * share * i as f64).round()))
                    .collect(),
            });
        }
        for body in write_bodies(&data) {
            let r = call(
                "POST",
                &s.url("/api/v1/write"),
                &[
                    ("authorization", &auth),
                    ("content-encoding", "snappy"),
                    ("x-prometheus-remote-write-version", "0.1.0"),
                ],
                Some(("application/x-protobuf", body)),
            );
            assert_eq!(r.status, 204, "{}", r.body);
        }
        Grafana {
            s,
            auth,
            from_s: now_s - 3600,
            to_s: now_s,
        }
    }

    fn range(&self) -> String {
        format!("start={}&end={}", self.from_s, self.to_s)
    }

    fn send(&self, method: &str, path: &str, form: &str) -> Answer {
        let headers = vec![
            ("authorization", self.auth.as_str()),
            ("user-agent", USER_AGENT),
            ("accept-encoding", "gzip"),
        ];
        let (url, body) = if method == "GET" {
            let sep = if form.is_empty() { "" } else { "?" };
            (self.s.url(&format!("{path}{sep}{form}")), None)
        } else {
            // `call` sets the Content-Type of a body.
            (self.s.url(path), Some(form.as_bytes().to_vec()))
        };
        let r = call(
            method,
            &url,
            &headers,
            body.map(|b| ("application/x-www-form-urlencoded", b)),
        );
        let bytes = if r.header("content-encoding") == Some("gzip") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&r.bytes[..])
                .read_to_end(&mut out)
                .expect("a valid gzip body");
            out
        } else {
            r.bytes.clone()
        };
        let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        Answer {
            status: r.status,
            json,
        }
    }

    fn get(&self, path: &str, query: &str) -> Answer {
        self.send("GET", path, query)
    }

    fn post(&self, path: &str, form: &str) -> Answer {
        self.send("POST", path, form)
    }
}

/// `{"status":"success","data":…}` as `ReadPrometheusStyleResult` wants
/// it; returns `data`.
fn success(a: &Answer, what: &str) -> Value {
    assert_eq!(a.status, 200, "{what}: {}", a.json);
    assert_eq!(a.json["status"], "success", "{what}: {}", a.json);
    assert!(a.json.get("error").is_none(), "{what}: {}", a.json);
    a.json["data"].clone()
}

/// A list of strings (label names or values), sorted as Prometheus sorts.
fn strings(v: &Value, what: &str) -> Vec<String> {
    let arr = v
        .as_array()
        .unwrap_or_else(|| panic!("{what}: not an array: {v}"));
    let out: Vec<String> = arr
        .iter()
        .map(|x| {
            x.as_str()
                .unwrap_or_else(|| panic!("{what}: {x} is not a string"))
                .to_string()
        })
        .collect();
    let mut sorted = out.clone();
    sorted.sort();
    assert_eq!(out, sorted, "{what}: not sorted");
    out
}

/// A `[<number>, "<float>"]` pair as `readTimeValuePair` reads it.
fn time_value(p: &Value, what: &str) -> (f64, f64) {
    let a = p
        .as_array()
        .unwrap_or_else(|| panic!("{what}: {p} is not a pair"));
    assert_eq!(a.len(), 2, "{what}: {p}");
    let t = a[0]
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: time {} is not a number", a[0]));
    let v = a[1]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: value {} is not a string", a[1]));
    let v: f64 = match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other
            .parse()
            .unwrap_or_else(|_| panic!("{what}: {other:?} is not a float")),
    };
    (t, v)
}

/// A matrix answer of a range query: every series has a `metric` object
/// of strings and `values` on the step grid, ascending, in `[start, end]`.
/// Returns (labels, points) per series.
fn matrix(
    data: &Value,
    start: i64,
    end: i64,
    step: i64,
    what: &str,
) -> Vec<(Value, Vec<(f64, f64)>)> {
    assert_eq!(data["resultType"], "matrix", "{what}: {data}");
    let result = data["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: result is not an array"));
    result
        .iter()
        .map(|r| {
            let metric = &r["metric"];
            assert!(
                metric
                    .as_object()
                    .is_some_and(|m| m.values().all(Value::is_string)),
                "{what}: metric {metric}"
            );
            let pts: Vec<(f64, f64)> = r["values"]
                .as_array()
                .unwrap_or_else(|| panic!("{what}: no values in {r}"))
                .iter()
                .map(|p| time_value(p, what))
                .collect();
            assert!(!pts.is_empty(), "{what}: empty series {r}");
            for w in pts.windows(2) {
                assert!(w[0].0 < w[1].0, "{what}: times not ascending in {r}");
            }
            for (t, _) in &pts {
                let t = *t as i64;
                assert!(
                    t >= start && t <= end && (t - start) % step == 0,
                    "{what}: time {t} off the grid {start}..{end} step {step}"
                );
            }
            (metric.clone(), pts)
        })
        .collect()
}

/// "Save & test", the part that needs no engine: the build info that
/// tells Grafana which flavour of server this is.
#[test]
fn grafana_save_and_test_buildinfo() {
    let g = Grafana::start();
    let a = g.get("/api/v1/status/buildinfo", "");
    let d = success(&a, "buildinfo");
    // `BuildInfoResponseData`: every field a string (a number would make
    // Grafana's json.Unmarshal fail), and no `features`, so Grafana treats
    // it as Prometheus (no ruler API).
    for f in [
        "version",
        "revision",
        "branch",
        "buildUser",
        "buildDate",
        "goVersion",
    ] {
        assert!(d[f].is_string(), "buildinfo.{f}: {d}");
    }
    assert!(!d["version"].as_str().unwrap().is_empty());
    assert!(
        d.get("features")
            .is_none_or(|f| f.as_object().is_some_and(|m| m.is_empty())),
        "{d}"
    );
}

/// "Save & test": `1+1` at time 4 must answer the scalar 2.
#[test]
fn grafana_needs_engine_save_and_test() {
    let g = Grafana::start();
    let a = g.post("/api/v1/query", "query=1%2B1&time=4");
    let d = success(&a, "1+1");
    assert_eq!(d["resultType"], "scalar", "{d}");
    assert_eq!(time_value(&d["result"], "1+1"), (4.0, 2.0));
}

/// The label browser and the query editor's completion.
#[test]
fn grafana_label_browser() {
    let g = Grafana::start();
    let range = g.range();

    // Metric names (GET: `api/v1/label/` is a GET-only path for Grafana).
    let names = strings(
        &success(
            &g.get("/api/v1/label/__name__/values", &range),
            "__name__ values",
        ),
        "__name__ values",
    );
    assert_eq!(
        names,
        [
            "http_request_duration_seconds_bucket",
            "http_requests_total",
            "node_memory_free_bytes"
        ]
    );

    // Label names over the time range (POST form).
    let labels = strings(
        &success(&g.post("/api/v1/labels", &range), "labels"),
        "labels",
    );
    assert_eq!(labels, ["__name__", "code", "instance", "job", "le"]);

    // Label names of one metric (`fetchSeriesLabelsMatch`).
    let m = enc("http_requests_total");
    let labels = strings(
        &success(
            &g.post("/api/v1/labels", &format!("{range}&match[]={m}")),
            "labels of a metric",
        ),
        "labels of a metric",
    );
    assert_eq!(labels, ["__name__", "code", "instance", "job"]);

    // Values of a label for a selector (`fetchSeriesValuesWithMatch`).
    let sel = enc("http_requests_total{job=\"api\"}");
    let codes = strings(
        &success(
            &g.get(
                "/api/v1/label/code/values",
                &format!("{range}&match[]={sel}"),
            ),
            "code values",
        ),
        "code values",
    );
    assert_eq!(codes, ["200", "500"]);
    let jobs = strings(
        &success(
            &g.get(
                "/api/v1/label/job/values",
                &format!("{range}&match[]={}", enc("{__name__=~\"node_.*\"}")),
            ),
            "job values",
        ),
        "job values",
    );
    assert_eq!(jobs, ["node"]);

    // Series of a selector (`fetchSeriesLabels`, limit 40000), then
    // turned into label → values by Grafana's `processLabels`.
    let a = g.post(
        "/api/v1/series",
        &format!(
            "{range}&match[]={}&limit=40000",
            enc("{__name__=~\"http_.+\", job=\"api\"}")
        ),
    );
    let series = success(&a, "series");
    let series = series.as_array().expect("series is an array");
    assert_eq!(series.len(), 5, "{series:?}");
    for s in series {
        let m = s.as_object().expect("a series is a label object");
        assert!(m.values().all(Value::is_string), "{s}");
        assert_eq!(m["job"], "api");
    }

    // Metadata (`loadMetricsMetadata`): an object of metric → entries
    // (none were sent with this data, so empty).
    let md = success(&g.get("/api/v1/metadata", ""), "metadata");
    assert!(md.is_object(), "{md}");

    // A POST answered 400 is retried as GET by Grafana; both must agree.
    let get = g.get("/api/v1/labels", &range);
    assert_eq!(get.json, g.post("/api/v1/labels", &range).json);
}

/// A time series panel over a bare selector, exemplars on, and a typo in
/// the query as Grafana shows it.
#[test]
fn grafana_time_series_panel() {
    let g = Grafana::start();
    let (start, end, step) = (g.to_s - 1800, g.to_s, 15);
    let q = enc("http_requests_total{job=\"api\"}");
    let form = format!("query={q}&start={start}&end={end}&step={step}");
    let d = success(&g.post("/api/v1/query_range", &form), "panel");
    let series = matrix(&d, start, end, step, "panel");
    assert_eq!(series.len(), 2);
    let codes: Vec<&str> = series
        .iter()
        .map(|(m, _)| m["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["200", "500"], "series are sorted by labels");
    for (m, pts) in &series {
        assert_eq!(m["__name__"], "http_requests_total");
        assert!(pts.len() > 100, "{} points", pts.len());
        for w in pts.windows(2) {
            assert!(w[1].1 >= w[0].1, "a counter never falls: {pts:?}");
        }
    }

    // The same panel as an instant query (the "Instant" toggle, or a
    // table panel): a vector of `[time, "value"]`.
    let d = success(
        &g.post("/api/v1/query", &format!("query={q}&time={end}")),
        "instant",
    );
    assert_eq!(d["resultType"], "vector");
    let result = d["result"].as_array().unwrap();
    assert_eq!(result.len(), 2);
    for r in result {
        let (t, v) = time_value(&r["value"], "instant");
        assert_eq!(t, end as f64);
        assert!(v >= 7.0, "{r}");
    }

    // Exemplars are on by default in new panels: an empty list, not an error.
    let d = success(
        &g.post(
            "/api/v1/query_exemplars",
            &format!("query={q}&start={start}&end={end}"),
        ),
        "exemplars",
    );
    assert_eq!(d, serde_json::json!([]));

    // A typo: Grafana shows "<errorType>: <error>".
    let a = g.post(
        "/api/v1/query_range",
        &format!(
            "query={}&start={start}&end={end}&step={step}",
            enc("sum(http_requests_total")
        ),
    );
    assert_eq!(a.status, 400, "{}", a.json);
    assert_eq!(a.json["status"], "error");
    assert_eq!(a.json["errorType"], "bad_data");
    assert!(
        a.json["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("invalid parameter \"query\"")),
        "{}",
        a.json
    );
}

/// Panels that need the engine: a rate summed by label, and a quantile
/// from the classic histogram.
#[test]
fn grafana_needs_engine_panel() {
    let g = Grafana::start();
    let (start, end, step) = (g.to_s - 1200, g.to_s - 60, 30);
    let q = enc("sum by (code) (rate(http_requests_total{job=\"api\"}[1m]))");
    let d = success(
        &g.post(
            "/api/v1/query_range",
            &format!("query={q}&start={start}&end={end}&step={step}"),
        ),
        "rate panel",
    );
    let series = matrix(&d, start, end, step, "rate panel");
    assert_eq!(series.len(), 2, "{d}");
    for (m, pts) in &series {
        assert!(m.get("__name__").is_none(), "{m}");
        assert_eq!(m.as_object().unwrap().len(), 1, "only `code` is left: {m}");
        for (t, v) in pts {
            assert!((v - 1.0).abs() < 1e-9, "rate at {t} is {v}, want 1");
        }
    }
    let q = enc(
        "histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[1m])))",
    );
    let d = success(
        &g.post(
            "/api/v1/query_range",
            &format!("query={q}&start={start}&end={end}&step={step}"),
        ),
        "quantile panel",
    );
    let series = matrix(&d, start, end, step, "quantile panel");
    assert_eq!(series.len(), 1, "{d}");
    // 90 % of the requests are at most 0.5 s, 50 % at most 0.1 s: the
    // 0.9 quantile is the top of the (0.1, 0.5] bucket.
    for (t, v) in &series[0].1 {
        assert!((v - 0.5).abs() < 1e-9, "p90 at {t} is {v}, want 0.5");
    }
}

/// `timeout` shortens the server's query timeout for one query, as in Prometheus: a
/// query given none answers, the same query given `timeout=0s` is a 503 "timeout".
#[test]
fn a_query_timeout_parameter_cuts_a_query_short() {
    let g = Grafana::start();
    let q = format!("query=http_requests_total&{}&step=1", g.range());
    let a = g.get("/api/v1/query_range", &q);
    assert_eq!(a.status, 200, "{}", a.json);
    let a = g.get("/api/v1/query_range", &format!("{q}&timeout=0s"));
    assert_eq!(a.status, 503, "{}", a.json);
    assert_eq!(a.json["errorType"], "timeout", "{}", a.json);
    let a = g.get("/api/v1/query_range", &format!("{q}&timeout=soon"));
    assert_eq!(a.status, 400, "{}", a.json);
}
