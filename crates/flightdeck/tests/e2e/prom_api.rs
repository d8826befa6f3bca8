//! The Prometheus HTTP API endpoints beyond queries: `format_query`,
//! `parse_query`, `query_exemplars`, `status/runtimeinfo`, `status/flags`,
//! GET and POST where Prometheus takes both, gzip when asked, errors in
//! Prometheus' shape, and `metrics:read` required on each. The answers
//! whose Prometheus 2.42 counterpart is known are compared with it
//! (messages and shapes copied from that server's answers).

use std::io::Read as _;

use serde_json::{Value, json};

use crate::harness::{Resp, Server, call};
use crate::real_clients::enc;

fn get(s: &Server, token: &str, path: &str, extra: &[(&str, &str)]) -> Resp {
    let auth = format!("Bearer {token}");
    let mut h = vec![("authorization", auth.as_str())];
    h.extend_from_slice(extra);
    call("GET", &s.url(path), &h, None)
}

fn post_form(s: &Server, token: &str, path: &str, form: &str) -> Resp {
    call(
        "POST",
        &s.url(path),
        &[("authorization", &format!("Bearer {token}"))],
        Some((
            "application/x-www-form-urlencoded",
            form.as_bytes().to_vec(),
        )),
    )
}

fn ok_data(r: &Resp) -> Value {
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["status"], "success", "{}", r.body);
    v["data"].clone()
}

fn bad_data(r: &Resp) -> String {
    assert_eq!(r.status, 400, "{}", r.body);
    let v = r.json();
    assert_eq!(v["status"], "error", "{}", r.body);
    assert_eq!(v["errorType"], "bad_data", "{}", r.body);
    v["error"].as_str().unwrap().to_string()
}

#[test]
fn format_and_parse_query_by_get_and_post() {
    let s = Server::binary_with(&["--host-metrics", "false"]);
    let t = s.token.clone();
    let q = enc("sum(rate(x[5m]))by(job)");
    // Prometheus 2.42: {"status":"success","data":"sum by (job) (rate(x[5m]))"}
    let r = get(&s, &t, &format!("/api/v1/format_query?query={q}"), &[]);
    assert_eq!(
        r.body,
        r#"{"status":"success","data":"sum by (job) (rate(x[5m]))"}"#
    );
    let r = post_form(&s, &t, "/api/v1/format_query", &format!("query={q}"));
    assert_eq!(ok_data(&r), "sum by (job) (rate(x[5m]))");
    // Prometheus 2.42's messages for an empty query.
    assert_eq!(
        bad_data(&get(&s, &t, "/api/v1/format_query?query=", &[])),
        "invalid parameter \"query\": 1:1: parse error: no expression found in input"
    );
    assert!(
        bad_data(&get(
            &s,
            &t,
            &format!("/api/v1/format_query?query={}", enc("sum(")),
            &[]
        ))
        .starts_with("invalid parameter \"query\": ")
    );

    let r = post_form(
        &s,
        &t,
        "/api/v1/parse_query",
        &format!("query={}", enc("a + on(b) c")),
    );
    let ast = ok_data(&r);
    assert_eq!(ast["type"], "binaryExpr", "{ast}");
    assert_eq!(ast["op"], "+");
    assert_eq!(ast["lhs"]["type"], "vectorSelector");
    assert_eq!(ast["lhs"]["name"], "a");
    assert_eq!(ast["matching"]["on"], true, "{ast}");
    assert_eq!(ast["matching"]["labels"], json!(["b"]));
    let r = get(
        &s,
        &t,
        &format!("/api/v1/parse_query?query={}", enc("1")),
        &[],
    );
    assert_eq!(ok_data(&r)["type"], "numberLiteral");
    bad_data(&get(&s, &t, "/api/v1/parse_query?query=%7B", &[]));
}

#[test]
fn exemplars_are_empty_after_prometheus_checks() {
    let s = Server::binary_with(&["--host-metrics", "false"]);
    let t = s.token.clone();
    let r = get(
        &s,
        &t,
        "/api/v1/query_exemplars?query=up&start=10&end=20",
        &[],
    );
    assert_eq!(r.body, r#"{"status":"success","data":[]}"#);
    let r = post_form(&s, &t, "/api/v1/query_exemplars", "query=up");
    assert_eq!(ok_data(&r), json!([]));
    // Prometheus 2.42's message, word for word.
    assert_eq!(
        bad_data(&get(
            &s,
            &t,
            "/api/v1/query_exemplars?query=up&start=20&end=10",
            &[]
        )),
        "end timestamp must not be before start timestamp"
    );
    assert_eq!(
        bad_data(&get(
            &s,
            &t,
            "/api/v1/query_exemplars?query=up&start=x",
            &[]
        )),
        "invalid parameter \"start\": cannot parse \"x\" to a valid timestamp"
    );
    bad_data(&get(&s, &t, "/api/v1/query_exemplars?query=sum(", &[]));
}

#[test]
fn runtimeinfo_and_flags_show_the_effective_settings() {
    let s = Server::binary_with(&["--host-metrics", "false", "--metrics-retention", "30d"]);
    let t = s.token.clone();
    let d = ok_data(&get(&s, &t, "/api/v1/status/runtimeinfo", &[]));
    // Prometheus' field names and JSON types.
    for f in [
        "startTime",
        "CWD",
        "lastConfigTime",
        "GOGC",
        "GODEBUG",
        "storageRetention",
    ] {
        assert!(d[f].is_string(), "{f}: {d}");
    }
    for f in [
        "corruptionCount",
        "goroutineCount",
        "GOMAXPROCS",
        "GOMEMLIMIT",
    ] {
        assert!(d[f].is_i64(), "{f}: {d}");
    }
    assert_eq!(d["reloadConfigSuccess"], true);
    assert_eq!(d["storageRetention"], "30d");
    assert!(d["goroutineCount"].as_i64().unwrap() >= 1, "{d}");
    assert!(d["GOMAXPROCS"].as_i64().unwrap() >= 1, "{d}");
    let started = time::OffsetDateTime::parse(
        d["startTime"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("startTime is RFC 3339");
    let age = time::OffsetDateTime::now_utc() - started;
    assert!(
        age >= time::Duration::ZERO && age < time::Duration::minutes(5),
        "{d}"
    );
    assert!(!d["CWD"].as_str().unwrap().is_empty());

    let f = ok_data(&get(&s, &t, "/api/v1/status/flags", &[]));
    let m = f.as_object().expect("flags are an object");
    assert!(m.values().all(Value::is_string), "{f}");
    assert_eq!(m["storage.tsdb.retention.time"], "30d");
    assert_eq!(m["storage.tsdb.retention.size"], "0B");
    assert_eq!(m["query.lookback-delta"], "5m");
    assert_eq!(m["storage.tsdb.min-block-duration"], "2h");
    assert_eq!(m["web.enable-remote-write-receiver"], "true");
    assert!(
        m["storage.tsdb.path"].as_str().unwrap().ends_with("tsdb"),
        "{f}"
    );
    let keys: Vec<&String> = m.keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "keys sorted, as Go's JSON writes a map");
}

/// A GET over a raw socket, so that nothing decodes the answer (ureq
/// decompresses gzip transparently): (headers lowercased, body bytes).
fn raw_get(s: &Server, path: &str, extra: &[(&str, &str)]) -> (Vec<(String, String)>, Vec<u8>) {
    use std::io::Write as _;
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n",
        s.token
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes()).unwrap();
    let mut all = Vec::new();
    conn.read_to_end(&mut all).unwrap();
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header end");
    let head = String::from_utf8_lossy(&all[..split]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = all[split + 4..].to_vec();
    if let Some((_, n)) = headers.iter().find(|(k, _)| k == "content-length") {
        assert_eq!(body.len(), n.parse::<usize>().unwrap(), "{head}");
    }
    (headers, body)
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn gzip_when_asked_and_only_then() {
    let s = Server::binary_with(&["--host-metrics", "false"]);
    let path = "/api/v1/status/flags";
    let (h, plain) = raw_get(&s, path, &[]);
    assert_eq!(header(&h, "content-encoding"), None);
    assert!(plain.len() > 256, "the answer is big enough to compress");
    assert!(plain.starts_with(b"{\"status\":\"success\""));

    let (h, gz) = raw_get(&s, path, &[("Accept-Encoding", "deflate, gzip;q=0.8")]);
    assert_eq!(header(&h, "content-encoding"), Some("gzip"));
    assert_eq!(header(&h, "vary"), Some("accept-encoding"));
    assert_eq!(header(&h, "content-type"), Some("application/json"));
    assert!(gz.starts_with(&[0x1f, 0x8b]), "a gzip stream");
    let mut body = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut body)
        .unwrap();
    assert_eq!(body, plain);
    assert!(gz.len() < plain.len());

    // Refused, or not offered: plain.
    for refuse in ["gzip;q=0", "identity", "br"] {
        let (h, b) = raw_get(&s, path, &[("Accept-Encoding", refuse)]);
        assert_eq!(header(&h, "content-encoding"), None, "{refuse}");
        assert_eq!(b, plain, "{refuse}");
    }
    // Small answers go out plain (the gzip framing would outweigh them).
    let (h, b) = raw_get(
        &s,
        "/api/v1/query_exemplars?query=up",
        &[("Accept-Encoding", "gzip")],
    );
    assert_eq!(header(&h, "content-encoding"), None);
    assert_eq!(b, br#"{"status":"success","data":[]}"#);
}

#[test]
fn every_new_endpoint_needs_metrics_read() {
    let s = Server::binary_with(&["--host-metrics", "false"]);
    s.project("p");
    let (_, write_only) = s.token_in("p", &["metrics:write"]);
    let (_, reader) = s.token_in("p", &["metrics:read"]);
    for path in [
        "/api/v1/format_query?query=up",
        "/api/v1/parse_query?query=up",
        "/api/v1/query_exemplars?query=up",
        "/api/v1/status/runtimeinfo",
        "/api/v1/status/flags",
    ] {
        let r = get(&s, &write_only, path, &[]);
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        let v = r.json();
        assert_eq!(v["status"], "error", "{path}");
        assert_eq!(v["errorType"], "forbidden", "{path}");
        let r = call("GET", &s.url(path), &[], None);
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert_eq!(r.json()["errorType"], "unauthorized", "{path}");
        let r = get(&s, &reader, path, &[]);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
}
