//! The metric path end to end over HTTP: remote write 1.0 and 2.0 in, the
//! Prometheus read API out, exact values, timestamps and labels; tenancy
//! (a token reaches only its project's series); limits with Mimir's partial
//! semantics; hostile bodies that change nothing; the OTLP example file;
//! host metrics after `serve`; and no acknowledged sample lost to `kill -9`
//! during concurrent ingest.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ingest::remote_write::proto::{v1, v2};
use prost::Message;
use serde_json::{Value, json};

use crate::harness::{Resp, Server, call, now_ns, try_call};

fn label(n: &str, v: &str) -> v1::Label {
    v1::Label {
        name: n.as_bytes().to_vec(),
        value: v.as_bytes().to_vec(),
    }
}

/// A v1 series; labels are sorted here as the protocol requires.
fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> v1::TimeSeries {
    let mut l: Vec<v1::Label> = labels.iter().map(|(n, v)| label(n, v)).collect();
    l.sort_by(|a, b| a.name.cmp(&b.name));
    v1::TimeSeries {
        labels: l,
        samples: samples
            .iter()
            .map(|(t, v)| v1::Sample {
                value: *v,
                timestamp: *t,
            })
            .collect(),
        ..Default::default()
    }
}

fn snappy(raw: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(raw).unwrap()
}

fn write_v1(s: &Server, token: &str, ts: Vec<v1::TimeSeries>) -> Resp {
    let body = snappy(
        &v1::WriteRequest {
            timeseries: ts,
            ..Default::default()
        }
        .encode_to_vec(),
    );
    post_write(s, token, "application/x-protobuf", body)
}

fn post_write(s: &Server, token: &str, ct: &str, body: Vec<u8>) -> Resp {
    let auth = basic(token);
    call(
        "POST",
        &s.url("/api/v1/write"),
        &[
            ("authorization", &auth),
            ("content-encoding", "snappy"),
            ("x-prometheus-remote-write-version", "0.1.0"),
        ],
        Some((ct, body)),
    )
}

fn basic(token: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("prometheus:{token}"))
    )
}

fn get(s: &Server, token: &str, path_and_query: &str) -> Resp {
    call(
        "GET",
        &s.url(path_and_query),
        &[("authorization", &format!("Bearer {token}"))],
        None,
    )
}

fn query(s: &Server, token: &str, q: &str, t_ms: i64) -> Value {
    let r = get(
        s,
        token,
        &format!(
            "/api/v1/query?query={}&time={}",
            urlenc(q),
            t_ms as f64 / 1000.0
        ),
    );
    assert_eq!(r.status, 200, "{q}: {}", r.body);
    let v = r.json();
    assert_eq!(v["status"], "success", "{}", r.body);
    v["data"].clone()
}

fn urlenc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A sample time as Prometheus' JSON writes it: whole seconds as an
/// integer, otherwise a decimal.
fn ts(t_ms: i64) -> Value {
    if t_ms % 1000 == 0 {
        json!(t_ms / 1000)
    } else {
        json!(t_ms as f64 / 1000.0)
    }
}

/// A time close to now, aligned to the second, so the head accepts it.
fn base_ms() -> i64 {
    (now_ns() / 1_000_000_000 - 600) * 1000
}

#[test]
fn remote_write_round_trip_is_exact() {
    let s = Server::binary();
    let t0 = base_ms();
    let mut req = v1::WriteRequest {
        timeseries: vec![
            series(
                &[
                    ("__name__", "rt_total"),
                    ("job", "api"),
                    ("instance", "h1:9100"),
                    ("path", "/a \"b\"\n"),
                ],
                &[(t0, 1.0), (t0 + 15_000, 2.5), (t0 + 30_000, 1e-7)],
            ),
            series(
                &[("__name__", "rt_gauge"), ("job", "api")],
                &[
                    (t0, f64::INFINITY),
                    (t0 + 15_000, -1.5),
                    (t0 + 30_000, f64::NAN),
                ],
            ),
        ],
        ..Default::default()
    };
    req.metadata.push(v1::MetricMetadata {
        r#type: 1, // COUNTER
        metric_family_name: "rt_total".into(),
        help: "Round trips.".into(),
        unit: String::new(),
    });
    let r = post_write(
        &s,
        &s.token,
        "application/x-protobuf",
        snappy(&req.encode_to_vec()),
    );
    assert_eq!(r.status, 204, "{}", r.body);

    let m = query(&s, &s.token, "rt_total[1m]", t0 + 30_000);
    assert_eq!(m["resultType"], "matrix");
    assert_eq!(
        m["result"],
        json!([{
            "metric": {"__name__": "rt_total", "instance": "h1:9100", "job": "api", "path": "/a \"b\"\n"},
            "values": [[ts(t0), "1"], [ts(t0 + 15_000), "2.5"], [ts(t0 + 30_000), "1e-07"]]
        }])
    );
    let g = query(&s, &s.token, "rt_gauge[1m]", t0 + 30_000);
    assert_eq!(
        g["result"][0]["values"],
        json!([
            [ts(t0), "+Inf"],
            [ts(t0 + 15_000), "-1.5"],
            [ts(t0 + 30_000), "NaN"]
        ])
    );
    // An instant selector: the newest sample within the lookback, stamped with the query time.
    let v = query(&s, &s.token, r#"rt_total{job="api"}"#, t0 + 40_000);
    assert_eq!(v["result"][0]["value"], json!([ts(t0 + 40_000), "1e-07"]));
    assert_eq!(
        query(&s, &s.token, "rt_total", t0 + 30_000 + 301_000)["result"],
        json!([]),
        "beyond the 5m lookback"
    );

    let names = get(&s, &s.token, "/api/v1/label/__name__/values").json();
    let names: Vec<&str> = names["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        names.contains(&"rt_total") && names.contains(&"rt_gauge"),
        "{names:?}"
    );
    let ser = get(
        &s,
        &s.token,
        &format!("/api/v1/series?match[]={}", urlenc(r#"{job="api"}"#)),
    )
    .json();
    assert_eq!(ser["data"].as_array().unwrap().len(), 2, "{ser}");
    let lab = get(
        &s,
        &s.token,
        &format!("/api/v1/labels?match[]={}", urlenc("rt_total")),
    )
    .json();
    assert_eq!(lab["data"], json!(["__name__", "instance", "job", "path"]));
    let md = get(&s, &s.token, "/api/v1/metadata?metric=rt_total").json();
    assert_eq!(
        md["data"]["rt_total"],
        json!([{"type": "counter", "help": "Round trips.", "unit": ""}])
    );
    // PromQL beyond selectors: aggregations, functions, scalars, range queries.
    let sum = query(&s, &s.token, "sum by (job) (rt_total)", t0 + 30_000);
    assert_eq!(
        sum["result"],
        json!([{"metric": {"job": "api"}, "value": [ts(t0 + 30_000), "1e-07"]}])
    );
    let n = query(&s, &s.token, "count_over_time(rt_total[1m])", t0 + 30_000);
    assert_eq!(n["result"][0]["value"], json!([ts(t0 + 30_000), "3"]));
    let sc = query(&s, &s.token, "1 + 2", t0);
    assert_eq!(sc, json!({"resultType": "scalar", "result": [ts(t0), "3"]}));
    let rr = get(
        &s,
        &s.token,
        &format!(
            "/api/v1/query_range?query={}&start={}&end={}&step=15",
            urlenc("rt_total * 2"),
            t0 / 1000,
            (t0 + 30_000) / 1000
        ),
    );
    assert_eq!(rr.status, 200, "{}", rr.body);
    assert_eq!(
        rr.json()["data"],
        json!({"resultType": "matrix", "result": [{
            "metric": {"instance": "h1:9100", "job": "api", "path": "/a \"b\"\n"},
            "values": [[ts(t0), "2"], [ts(t0 + 15_000), "5"], [ts(t0 + 30_000), "2e-07"]]
        }]})
    );
    let many = get(
        &s,
        &s.token,
        "/api/v1/query_range?query=rt_total&start=0&end=100000&step=1",
    );
    assert_eq!(many.status, 400);
    assert_eq!(
        many.json()["error"],
        "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
    );
    // Errors in Prometheus' shape.
    let bad = get(
        &s,
        &s.token,
        &format!("/api/v1/query?query={}", urlenc("sum(rt_total")),
    );
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["errorType"], "bad_data");
    let m2m = get(
        &s,
        &s.token,
        &format!(
            "/api/v1/query?query={}&time={}",
            urlenc("rt_total + on() {job=\"api\"}"),
            t0 / 1000 + 30
        ),
    );
    assert_eq!(m2m.status, 422, "{}", m2m.body);
    assert_eq!(m2m.json()["errorType"], "execution");
    let bad = get(&s, &s.token, "/api/v1/series");
    assert_eq!(bad.json()["error"], "no match[] parameter provided");
}

#[test]
fn remote_write_2_answers_with_written_counts() {
    let s = Server::binary();
    let t0 = base_ms();
    let symbols: Vec<Vec<u8>> = ["", "__name__", "v2_metric", "job", "x", "help text"]
        .iter()
        .map(|x| x.as_bytes().to_vec())
        .collect();
    let req = v2::Request {
        symbols,
        timeseries: vec![v2::TimeSeries {
            labels_refs: vec![1, 2, 3, 4],
            samples: vec![
                v2::Sample {
                    value: 7.0,
                    timestamp: t0,
                    start_timestamp: 0,
                },
                v2::Sample {
                    value: 8.0,
                    timestamp: t0 + 1000,
                    start_timestamp: 0,
                },
            ],
            metadata: Some(v2::Metadata {
                r#type: 2,
                help_ref: 5,
                unit_ref: 0,
            }),
            ..Default::default()
        }],
    };
    let r = post_write(
        &s,
        &s.token,
        "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        snappy(&req.encode_to_vec()),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        r.header("x-prometheus-remote-write-samples-written"),
        Some("2")
    );
    assert_eq!(
        r.header("x-prometheus-remote-write-histograms-written"),
        Some("0")
    );
    let m = query(&s, &s.token, "v2_metric[1m]", t0 + 1000);
    assert_eq!(
        m["result"][0]["values"],
        json!([[ts(t0), "7"], [ts(t0 + 1000), "8"]])
    );
    let md = get(&s, &s.token, "/api/v1/metadata?metric=v2_metric").json();
    assert_eq!(md["data"]["v2_metric"][0]["help"], "help text");
    // A symbol reference out of range refuses the whole request.
    let bad = v2::Request {
        symbols: vec![b"".to_vec()],
        timeseries: vec![v2::TimeSeries {
            labels_refs: vec![1, 9],
            ..Default::default()
        }],
    };
    let r = post_write(
        &s,
        &s.token,
        "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        snappy(&bad.encode_to_vec()),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post_write(
        &s,
        &s.token,
        "application/x-protobuf;proto=io.prometheus.write.v9.Request",
        snappy(&bad.encode_to_vec()),
    );
    assert_eq!(r.status, 415, "{}", r.body);
}

#[test]
fn tokens_reach_only_their_own_project() {
    let s = Server::binary();
    s.project("blue");
    let (_, blue_rw) = s.token_in("blue", &["metrics:write", "metrics:read"]);
    let (_, default_ro) = s.token_in("default", &["metrics:read"]);
    let t0 = base_ms();
    assert_eq!(
        write_v1(
            &s,
            &blue_rw,
            vec![series(
                &[("__name__", "secret_metric"), ("team", "blue")],
                &[(t0, 42.0)]
            )]
        )
        .status,
        204
    );
    assert_eq!(
        write_v1(
            &s,
            &s.token,
            vec![series(&[("__name__", "open_metric")], &[(t0, 1.0)])]
        )
        .status,
        204
    );

    // The default project's readers see none of blue's series, by any path.
    assert_eq!(
        query(&s, &default_ro, "secret_metric", t0)["result"],
        json!([])
    );
    let names = get(&s, &default_ro, "/api/v1/label/__name__/values").body;
    assert!(
        !names.contains("secret_metric") && names.contains("open_metric"),
        "{names}"
    );
    let labels = get(&s, &default_ro, "/api/v1/labels").body;
    assert!(!labels.contains("team"), "{labels}");
    assert_eq!(
        query(&s, &blue_rw, "secret_metric", t0)["result"][0]["value"][1],
        "42"
    );
    assert_eq!(query(&s, &blue_rw, "open_metric", t0)["result"], json!([]));
    let blue_names = get(&s, &blue_rw, "/api/v1/label/__name__/values").body;
    assert!(
        blue_names.contains("secret_metric") && !blue_names.contains("open_metric"),
        "{blue_names}"
    );
    let blue_series = get(
        &s,
        &blue_rw,
        &format!("/api/v1/series?match[]={}", urlenc(r#"{__name__=~".+"}"#)),
    )
    .body;
    assert!(!blue_series.contains("open_metric"), "{blue_series}");
    // Naming another project in the tenant header does not cross over.
    let r = call(
        "GET",
        &s.url("/api/v1/query?query=secret_metric"),
        &[
            ("authorization", &format!("Bearer {default_ro}")),
            ("x-scope-orgid", "blue"),
        ],
        None,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    // Scopes: a read-only token cannot write; no token is 401; the refusals are audited.
    assert_eq!(
        write_v1(
            &s,
            &default_ro,
            vec![series(&[("__name__", "x")], &[(t0, 1.0)])]
        )
        .status,
        403
    );
    assert_eq!(
        call(
            "POST",
            &s.url("/api/v1/write"),
            &[],
            Some(("application/x-protobuf", vec![]))
        )
        .status,
        401
    );
    let denied = s.events(Some("default"), "action=metrics.write&result=failure");
    assert!(!denied.is_empty(), "the 403 is an audit event");
}

#[test]
fn limits_refuse_what_is_wrong_and_keep_the_rest() {
    let s = Server::binary();
    let t0 = base_ms();
    let long = "v".repeat(3000);
    let r = write_v1(
        &s,
        &s.token,
        vec![
            series(&[("__name__", "ok_metric")], &[(t0, 1.0)]),
            series(&[("__name__", "long_metric"), ("l", &long)], &[(t0, 1.0)]),
            series(&[("__name__", "bad-name")], &[(t0, 1.0)]),
        ],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("max_label_value_length") || r.body.contains("label_value_too_long"),
        "names the limit: {}",
        r.body
    );
    assert!(
        r.body.contains("long_metric"),
        "names the series: {}",
        r.body
    );
    assert!(r.body.contains("2 samples rejected"), "{}", r.body);
    assert_eq!(
        query(&s, &s.token, "ok_metric", t0)["result"][0]["value"][1],
        "1",
        "the valid series is stored"
    );
    assert_eq!(query(&s, &s.token, "long_metric", t0)["result"], json!([]));

    // Out of order: older than the series' newest sample.
    assert_eq!(
        write_v1(
            &s,
            &s.token,
            vec![series(&[("__name__", "ooo")], &[(t0 + 10_000, 1.0)])]
        )
        .status,
        204
    );
    let r = write_v1(
        &s,
        &s.token,
        vec![series(&[("__name__", "ooo")], &[(t0, 2.0)])],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("out_of_order") && r.body.contains("ooo"),
        "{}",
        r.body
    );
    // Same timestamp and value again: accepted silently, as Prometheus does.
    assert_eq!(
        write_v1(
            &s,
            &s.token,
            vec![series(&[("__name__", "ooo")], &[(t0 + 10_000, 1.0)])]
        )
        .status,
        204
    );
    let r = write_v1(
        &s,
        &s.token,
        vec![series(&[("__name__", "ooo")], &[(t0 + 10_000, 5.0)])],
    );
    assert!(
        r.status == 400 && r.body.contains("duplicate"),
        "{}",
        r.body
    );
    assert_eq!(
        query(&s, &s.token, "ooo[1h]", t0 + 10_000)["result"][0]["values"],
        json!([[ts(t0 + 10_000), "1"]])
    );
}

#[test]
fn hostile_bodies_change_nothing() {
    // No host metrics: their first batch would change the names under test.
    let s = Server::binary_with(&["--host-metrics", "false"]);
    let names_before = get(&s, &s.token, "/api/v1/label/__name__/values").body;
    // Not protobuf.
    let r = post_write(
        &s,
        &s.token,
        "application/x-protobuf",
        snappy(b"\xff\xff\xff garbage"),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    // Not snappy.
    let r = post_write(
        &s,
        &s.token,
        "application/x-protobuf",
        b"plain bytes".to_vec(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    // A snappy header that claims 4 GiB: refused before memory is spent.
    let mut bomb = vec![0x80, 0x80, 0x80, 0x80, 0x04]; // varint 2^30
    bomb.extend_from_slice(&[0u8; 64]);
    let r = post_write(&s, &s.token, "application/x-protobuf", bomb);
    assert_eq!(r.status, 413, "{}", r.body);
    // Unknown media type and encoding.
    assert_eq!(
        post_write(&s, &s.token, "text/plain", snappy(b"x")).status,
        415
    );
    let r = call(
        "POST",
        &s.url("/api/v1/write"),
        &[
            ("authorization", &basic(&s.token)),
            ("content-encoding", "br"),
        ],
        Some(("application/x-protobuf", vec![1, 2, 3])),
    );
    assert_eq!(r.status, 415, "{}", r.body);
    assert_eq!(
        get(&s, &s.token, "/api/v1/label/__name__/values").body,
        names_before
    );
}

#[test]
fn the_otlp_example_file_is_stored() {
    let s = Server::binary();
    let path = crate::conformance_file("otlp/metrics.json");
    let mut body: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    // Move the example's data points to now, so the head accepts them.
    let now = now_ns();
    shift_times(&mut body, now);
    let r = call(
        "POST",
        &s.url("/v1/metrics"),
        &[("authorization", &format!("Bearer {}", s.token))],
        Some(("application/json", serde_json::to_vec(&body).unwrap())),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let names = get(&s, &s.token, "/api/v1/label/__name__/values").json();
    let names: Vec<String> = names["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    for n in [
        "my_counter_total",
        "my_gauge_ratio",
        "my_histogram_bucket",
        "my_exponential_histogram",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing: {names:?}");
    }
    // service.name becomes `job`.
    let c = query(&s, &s.token, "my_counter_total[1h]", now / 1_000_000);
    assert!(c["result"][0]["metric"]["job"].is_string(), "{c}");
    // Protobuf with the same content-type rules; a wrong type is 415.
    let r = call(
        "POST",
        &s.url("/v1/metrics"),
        &[("authorization", &format!("Bearer {}", s.token))],
        Some(("text/plain", b"{}".to_vec())),
    );
    assert_eq!(r.status, 415);
}

/// Sets every `timeUnixNano` / `startTimeUnixNano` in an OTLP JSON body to `now`.
fn shift_times(v: &mut Value, now: i64) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "timeUnixNano" || k == "startTimeUnixNano" {
                    *x = json!(now.to_string());
                } else {
                    shift_times(x, now);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| shift_times(x, now)),
        _ => {}
    }
}

#[test]
fn host_metrics_are_there_after_serve() {
    let s = Server::binary();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = now_ns() / 1_000_000;
        let v = query(&s, &s.token, r#"node_cpu_seconds_total{mode="idle"}"#, now);
        if let Some(first) = v["result"].as_array().and_then(|a| a.first()) {
            assert_eq!(first["metric"]["job"], "flightdeck", "{first}");
            assert!(
                first["metric"]["cpu"].is_string() && first["metric"]["instance"].is_string(),
                "{first}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no host metrics 30 s after start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for name in [
        "node_memory_MemAvailable_bytes",
        "node_load1",
        "process_resident_memory_bytes",
    ] {
        let now = now_ns() / 1_000_000;
        let v = query(&s, &s.token, name, now);
        assert!(
            !v["result"].as_array().unwrap().is_empty(),
            "{name} missing"
        );
    }
    let m = get(&s, &s.token, "/metrics");
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    assert!(
        m.body.contains("# TYPE node_cpu_seconds_total counter"),
        "{}",
        &m.body[..500.min(m.body.len())]
    );
    assert!(
        m.body.contains(
            "flightdeck_http_request_duration_seconds_count{code=\"200\",method=\"GET\",route=\"/api/v1/query\"}"
        ),
        "request durations by route"
    );
    assert!(
        m.body
            .contains("# TYPE flightdeck_wal_fsync_duration_seconds histogram")
            && m.body
                .contains("flightdeck_wal_fsync_duration_seconds_bucket{le=\"+Inf\"}"),
        "WAL fsync latency histogram"
    );
}

/// Writers push without pause; the server is killed with SIGKILL in the
/// middle; after the restart every acknowledged sample is read back, value
/// for value. Three cycles on one data directory (the shared
/// `crash-metrics.sh` runs a hundred).
#[test]
fn kill9_loses_no_acknowledged_sample() {
    let mut s = Server::binary();
    let t0 = base_ms();
    for cycle in 0..3i64 {
        let acked: Arc<Mutex<Vec<(usize, i64)>>> = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..4usize {
            let (url, token, acked, stop) = (
                s.url("/api/v1/write"),
                s.token.clone(),
                acked.clone(),
                stop.clone(),
            );
            writers.push(std::thread::spawn(move || {
                let mut req_no = 0i64;
                while !stop.load(Ordering::SeqCst) && req_no < 10_000 {
                    // Writer w owns series crash{w, s}; timestamps unique per (cycle, request).
                    let t = t0 + cycle * 100_000_000 + req_no * 10;
                    let ts: Vec<v1::TimeSeries> = (0..50)
                        .map(|k| {
                            series(
                                &[
                                    ("__name__", "crash"),
                                    ("w", &w.to_string()),
                                    ("s", &k.to_string()),
                                ],
                                &[(t, (w * 1000 + k) as f64 + req_no as f64 / 1e4)],
                            )
                        })
                        .collect();
                    let body = snappy(
                        &v1::WriteRequest {
                            timeseries: ts,
                            ..Default::default()
                        }
                        .encode_to_vec(),
                    );
                    let r = try_call(
                        "POST",
                        &url,
                        &[
                            ("authorization", &basic(&token)),
                            ("content-encoding", "snappy"),
                        ],
                        Some(("application/x-protobuf", body)),
                    );
                    match r {
                        Ok(r) if r.status == 204 => acked.lock().unwrap().push((w, t)),
                        Ok(r) => panic!("write refused: {} {}", r.status, r.body),
                        Err(_) => break, // the server is gone
                    }
                    req_no += 1;
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(700 + 300 * cycle as u64));
        s.kill9();
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            w.join().unwrap();
        }
        s.restart();
        let acked = acked.lock().unwrap().clone();
        assert!(
            acked.len() > 10,
            "cycle {cycle}: too few writes acknowledged ({}) to test anything",
            acked.len()
        );
        // Read every writer's series back over the cycle's window.
        let (lo, hi) = (
            t0 + cycle * 100_000_000,
            t0 + cycle * 100_000_000 + 10_000 * 10,
        );
        for w in 0..4usize {
            let want: std::collections::BTreeSet<i64> = acked
                .iter()
                .filter(|(x, _)| *x == w)
                .map(|(_, t)| *t)
                .collect();
            for k in [0usize, 49] {
                let q = format!("crash{{w=\"{w}\",s=\"{k}\"}}[{}ms]", hi - lo + 1);
                let m = query(&s, &s.token, &q, hi);
                let got: std::collections::BTreeSet<i64> = m["result"]
                    .as_array()
                    .and_then(|a| a.first())
                    .map(|r| {
                        r["values"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|p| (p[0].as_f64().unwrap() * 1000.0).round() as i64)
                            .collect()
                    })
                    .unwrap_or_default();
                let lost: Vec<_> = want.difference(&got).collect();
                assert!(
                    lost.is_empty(),
                    "cycle {cycle} writer {w} series {k}: {} acknowledged samples lost, e.g. {:?}",
                    lost.len(),
                    &lost[..lost.len().min(5)]
                );
            }
        }
    }
}

#[test]
fn native_histograms_come_back_in_prometheus_json() {
    let s = Server::binary_with(&["--host-metrics", "false"]);
    let t0 = base_ms();
    use ingest::remote_write::proto::{BucketSpan, Histogram, histogram};
    let h = Histogram {
        count: Some(histogram::Count::CountInt(6)),
        sum: 11.5,
        schema: 0,
        zero_threshold: 0.001,
        zero_count: Some(histogram::ZeroCount::ZeroCountInt(1)),
        positive_spans: vec![
            BucketSpan {
                offset: 0,
                length: 2,
            },
            BucketSpan {
                offset: 1,
                length: 1,
            },
        ],
        positive_deltas: vec![2, -1, 1], // 2, 1, 2
        timestamp: t0,
        ..Default::default()
    };
    let mut hs = series(&[("__name__", "latency_seconds"), ("job", "api")], &[]);
    hs.histograms.push(h);
    let r = write_v1(&s, &s.token, vec![hs]);
    assert_eq!(r.status, 204, "{}", r.body);
    let v = query(&s, &s.token, "latency_seconds", t0 + 1000);
    // Buckets with schema 0: index i is (2^(i-1), 2^i]; the zero bucket is [-zt, zt].
    assert_eq!(
        v["result"][0]["histogram"],
        json!([ts(t0 + 1000), {"count": "6", "sum": "11.5", "buckets": [
            [3, "-0.001", "0.001", "1"],
            [0, "0.5", "1", "2"],
            [0, "1", "2", "1"],
            [0, "4", "8", "2"]
        ]}])
    );
    let m = query(&s, &s.token, "latency_seconds[1m]", t0 + 1000);
    assert_eq!(m["result"][0]["histograms"][0][1]["count"], "6");
}

#[test]
fn the_standalone_agent_pushes_host_metrics() {
    let s = Server::binary_with(&["--host-metrics", "false"]);
    let out = std::process::Command::new(crate::harness::bin())
        .args([
            "agent",
            "--push",
            &s.url("/api/v1/write"),
            "--token",
            &s.token,
            "--once",
            "--instance",
            "agent-host",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("pushed "),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let now = now_ns() / 1_000_000;
    let v = query(
        &s,
        &s.token,
        r#"node_load1{job="flightdeck",instance="agent-host"}"#,
        now,
    );
    assert_eq!(v["result"].as_array().unwrap().len(), 1, "{v}");
    let v = query(
        &s,
        &s.token,
        r#"process_resident_memory_bytes{instance="agent-host"}"#,
        now,
    );
    assert_eq!(v["result"].as_array().unwrap().len(), 1, "{v}");
    // A token without metrics:write is refused and not retried: exit 1.
    let (_, ro) = s.token_in("default", &["metrics:read"]);
    let out = std::process::Command::new(crate::harness::bin())
        .args([
            "agent",
            "--push",
            &s.url("/api/v1/write"),
            "--token",
            &ro,
            "--once",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_project_series_limit_refuses_new_series_only() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fd.toml");
    std::fs::write(
        &cfg,
        "[metrics]\nhost_metrics = false\n[metrics.projects.tiny]\nmax_series_per_project = 2\n",
    )
    .unwrap();
    let s = Server::binary_with(&["--config", cfg.to_str().unwrap()]);
    s.project("tiny");
    let (_, tiny) = s.token_in("tiny", &["metrics:write", "metrics:read"]);
    let t0 = base_ms();
    let two = vec![
        series(&[("__name__", "a")], &[(t0, 1.0)]),
        series(&[("__name__", "b")], &[(t0, 1.0)]),
    ];
    assert_eq!(write_v1(&s, &tiny, two).status, 204);
    let r = write_v1(&s, &tiny, vec![series(&[("__name__", "c")], &[(t0, 1.0)])]);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("series_limit: 1")
            && r.body.contains("max_series_per_project=2")
            && r.body.contains("c{}"),
        "{}",
        r.body
    );
    // Known series still take samples; the default project has its own limit.
    let r = write_v1(
        &s,
        &tiny,
        vec![series(&[("__name__", "a")], &[(t0 + 1000, 2.0)])],
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let many: Vec<_> = (0..5)
        .map(|i| series(&[("__name__", "d"), ("i", &i.to_string())], &[(t0, 1.0)]))
        .collect();
    assert_eq!(write_v1(&s, &s.token, many).status, 204);
}

#[test]
fn promqltest_cli_runs_scripts_and_counts_evals() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("x.test");
    std::fs::write(
        &script,
        "load 1m\n  up{job=\"a\"} 1+1x10\n\neval instant at 5m sum(up)\n  {} 6\n\neval instant at 5m up * 2\n  {job=\"a\"} 999\n\neval range from 0 to 2m step 1m rate(up[2m])\n  {job=\"a\"} _ 0.016666666666666666 0.016666666666666666\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flightdeck"))
        .arg("promqltest")
        .arg(&script)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().last(),
        Some("promqltest: 2 passed, 1 failed, 0 skipped"),
        "{stdout}"
    );
    assert!(stdout.contains("x.test:7: FAIL"), "{stdout}");
    assert!(!out.status.success());
}
