//! The OpenTelemetry Python SDK (`opentelemetry-sdk` with the OTLP/HTTP
//! protobuf exporter, pinned in `.ci/run`) exporting to `/v1/metrics`
//! with a project token: a counter, a gauge, an explicit-bucket histogram
//! and an exponential histogram become the Prometheus series the
//! compatibility spec names — unit suffixes, `_total`, `job`/`instance`
//! from the service attributes, the scope labels, `target_info` for the
//! other resource attributes, a native histogram — with their metadata,
//! in the token's project only.

use std::process::Command;
use std::time::Duration;

use crate::harness::Server;
use crate::real_clients::{Proc, SeriesKey, fd_get, fd_instant, key, python, script};

#[test]
fn otel_python_sdk_metrics_become_prometheus_series() {
    let Some(py) = python(&[
        "opentelemetry.sdk.metrics",
        "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    ]) else {
        return;
    };
    let s = Server::binary_with(&["--host-metrics", "false"]);
    s.project("shop");
    let (_, token) = s.token_in("shop", &["metrics:write", "metrics:read"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(py);
    cmd.arg(script("otel_export.py")).arg(&s.url).arg(&token);
    let mut export = Proc::spawn("otel_export.py", cmd, tmp.path());
    export.wait_success(Duration::from_secs(60));

    let id = [
        ("job", "shop/checkout"),
        ("instance", "pod-7"),
        ("otel_scope_name", "fd.e2e"),
        ("otel_scope_version", "1.2.3"),
    ];
    let with = |name: &str, extra: &[(&str, &str)]| -> SeriesKey {
        let mut l = id.to_vec();
        l.extend_from_slice(extra);
        key(name, &l)
    };
    let value = |query: &str| -> Vec<(SeriesKey, String)> {
        fd_instant(&s, &token, query)
            .into_iter()
            .map(|(k, p)| (k, p.last().unwrap().1.clone()))
            .collect()
    };

    // Counter: `{request}` is an annotation (no unit suffix), `_total` added.
    assert_eq!(
        value("http_requests_total"),
        [
            (
                with("http_requests_total", &[("method", "GET")]),
                "5".into()
            ),
            (
                with("http_requests_total", &[("method", "POST")]),
                "2".into()
            ),
        ]
    );
    // Gauge with unit `By`.
    assert_eq!(
        value("queue_depth_bytes"),
        [(with("queue_depth_bytes", &[("queue", "a")]), "4096".into())]
    );
    // Explicit buckets: cumulative `_bucket{le}`, `_sum`, `_count`.
    let route = ("route", "/buy");
    let mut buckets = value("http_server_duration_seconds_bucket");
    buckets.sort_by_key(|(_, v)| v.parse::<u32>().unwrap());
    assert_eq!(
        buckets,
        [("0.1", "1"), ("0.5", "2"), ("1", "3"), ("+Inf", "4")].map(|(le, n)| (
            with("http_server_duration_seconds_bucket", &[route, ("le", le)]),
            n.to_string()
        ))
    );
    let sum: f64 = [0.05, 0.2, 0.7, 3.0].iter().sum();
    let got = value("http_server_duration_seconds_sum");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, with("http_server_duration_seconds_sum", &[route]));
    assert_eq!(got[0].1.parse::<f64>().unwrap(), sum, "{got:?}");
    assert_eq!(
        value("http_server_duration_seconds_count"),
        [(
            with("http_server_duration_seconds_count", &[route]),
            "4".into()
        )]
    );

    // Exponential histogram: one native histogram series.
    let answer = fd_get(&s, &token, "/api/v1/query?query=payload_size_bytes");
    let result = answer["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{answer}");
    let series: SeriesKey = serde_json::from_value(result[0]["metric"].clone()).unwrap();
    assert_eq!(series, with("payload_size_bytes", &[]));
    let h = &result[0]["histogram"][1];
    assert_eq!(h["count"], "4", "{answer}");
    assert_eq!(h["sum"], "1007", "{answer}");
    let buckets: Vec<(f64, f64, u64)> = h["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let f = |i: usize| b[i].as_str().unwrap().parse::<f64>().unwrap();
            (f(1), f(2), b[3].as_str().unwrap().parse::<u64>().unwrap())
        })
        .collect();
    assert_eq!(buckets.iter().map(|b| b.2).sum::<u64>(), 4, "{answer}");
    for v in [1.0, 2.0, 4.0, 1000.0] {
        // Exponential buckets are (lower, upper]; allow for rounding of
        // the rendered bounds.
        let eps = 1e-9 * v;
        assert!(
            buckets
                .iter()
                .any(|(lo, hi, n)| *n > 0 && *lo < v - eps && v <= *hi + eps),
            "no bucket holds {v}: {buckets:?}"
        );
    }

    // target_info: the other resource attributes, at the same job/instance.
    let info = value("target_info");
    assert_eq!(info.len(), 1, "{info:?}");
    let (labels, v) = &info[0];
    assert_eq!(v, "1");
    assert_eq!(labels["job"], "shop/checkout");
    assert_eq!(labels["instance"], "pod-7");
    assert_eq!(labels["deployment_environment"], "e2e");
    assert_eq!(labels["telemetry_sdk_language"], "python");
    assert_eq!(labels["telemetry_sdk_name"], "opentelemetry");
    assert!(!labels.contains_key("service_name"), "{labels:?}");
    assert!(!labels.contains_key("otel_scope_name"), "{labels:?}");

    // Metadata by Prometheus family name: type, help, translated unit.
    let md = fd_get(&s, &token, "/api/v1/metadata")["data"].clone();
    let one = |name: &str| md[name][0].clone();
    assert_eq!(
        one("http_server_duration_seconds"),
        serde_json::json!({"type": "histogram", "help": "Request time.", "unit": "seconds"}),
        "{md}"
    );
    assert_eq!(one("http_requests_total")["type"], "counter", "{md}");
    assert_eq!(one("queue_depth_bytes")["unit"], "bytes", "{md}");
    assert_eq!(one("payload_size_bytes")["type"], "histogram", "{md}");

    // Only in the token's project: the default project has none of it.
    let other = fd_instant(&s, &s.token, "{job=\"shop/checkout\"}");
    assert!(
        other.is_empty(),
        "leaked into the default project: {other:?}"
    );
}
