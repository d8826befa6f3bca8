//! Log clients we did not write, pinned in `.ci/run`: Python's
//! `python-logging-loki` handler (Loki push v1, JSON, basic auth with the
//! token as password) and the OpenTelemetry Python SDK's OTLP/HTTP
//! protobuf log exporter, each pushing to its token's project. What they
//! sent is read back from the store once the server is stopped (see
//! [`crate::logs::stored`]). Missing clients follow the real-client rule
//! (`REAL CLIENT MISSING`, fatal under CI).

use std::process::Command;
use std::time::Duration;

use crate::harness::Server;
use crate::logs::stored;
use crate::real_clients::{Proc, python, script};

fn meta<'a>(m: &'a [(String, String)], name: &str) -> Option<&'a str> {
    m.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[test]
fn python_logging_loki_handler_pushes_json() {
    let Some(py) = python(&["logging_loki"]) else {
        return;
    };
    let mut s = Server::binary_with(&["--host-metrics", "false"]);
    s.project("shop");
    let (_, token) = s.token_in("shop", &["logs:write"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(py);
    cmd.arg(script("loki_logging.py")).arg(&s.url).arg(&token);
    let mut p = Proc::spawn("loki_logging.py", cmd, tmp.path());
    p.wait_success(Duration::from_secs(60));
    s.kill9();
    let rows = stored(&s.data_dir, "shop");
    let got: Vec<(String, String)> = rows.iter().map(|r| (r.0.clone(), r.2.clone())).collect();
    assert_eq!(
        got,
        vec![
            (
                r#"{application="shop-api", logger="shop.orders", order_id="42", severity="error"}"#.to_string(),
                "payment failed".to_string()
            ),
            (
                r#"{application="shop-api", logger="shop.orders", severity="info"}"#.to_string(),
                "order 1 placed".to_string()
            ),
            (
                r#"{application="shop-api", logger="shop.orders", severity="warning"}"#.to_string(),
                "payment slow: 950 ms".to_string()
            ),
        ],
        "{}",
        p.log()
    );
    let now = crate::harness::now_ns();
    for r in &rows {
        assert!(
            (now - r.1).abs() < 600_000_000_000,
            "timestamp {} far from now",
            r.1
        );
    }
}

#[test]
fn otel_python_sdk_exports_logs_over_otlp_http_protobuf() {
    let Some(py) = python(&[
        "opentelemetry.sdk._logs",
        "opentelemetry.exporter.otlp.proto.http._log_exporter",
    ]) else {
        return;
    };
    let mut s = Server::binary_with(&["--host-metrics", "false"]);
    s.project("shop");
    let (_, token) = s.token_in("shop", &["logs:write"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(py);
    cmd.arg(script("otel_logs.py")).arg(&s.url).arg(&token);
    let mut p = Proc::spawn("otel_logs.py", cmd, tmp.path());
    p.wait_success(Duration::from_secs(60));
    let out = p.log();
    let ids = out
        .lines()
        .find(|l| l.starts_with("trace_id="))
        .unwrap_or_else(|| panic!("no ids printed: {out}"));
    let (trace, span) = ids.split_once(' ').unwrap();
    let (trace, span) = (&trace["trace_id=".len()..], &span["span_id=".len()..]);
    s.kill9();
    let rows = stored(&s.data_dir, "shop");
    assert_eq!(rows.len(), 2, "{rows:?}\n{out}");
    for r in &rows {
        assert_eq!(
            r.0,
            r#"{deployment_environment="prod", service_instance_id="pod-7", service_name="checkout", service_namespace="shop"}"#
        );
        assert_eq!(meta(&r.3, "host_name"), Some("node-7"), "{:?}", r.3);
        assert_eq!(
            meta(&r.3, "scope_name"),
            Some("fd.e2e.checkout"),
            "{:?}",
            r.3
        );
        assert_eq!(
            meta(&r.3, "telemetry_sdk_language"),
            Some("python"),
            "{:?}",
            r.3
        );
    }
    let (a, b) = if rows[0].2 == "cart opened" {
        (&rows[0], &rows[1])
    } else {
        (&rows[1], &rows[0])
    };
    assert_eq!(a.2, "cart opened");
    assert_eq!(meta(&a.3, "cart_items"), Some("3"));
    assert_eq!(meta(&a.3, "level"), Some("info"));
    assert_eq!(meta(&a.3, "severity_text"), Some("INFO"));
    assert_eq!(meta(&a.3, "trace_id"), None);
    assert_eq!(b.2, "card declined");
    assert_eq!(meta(&b.3, "level"), Some("warn"));
    assert_eq!(meta(&b.3, "severity_number"), Some("13"));
    assert_eq!(meta(&b.3, "trace_id"), Some(trace));
    assert_eq!(meta(&b.3, "span_id"), Some(span));
}
