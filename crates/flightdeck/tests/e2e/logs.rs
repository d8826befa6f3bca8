//! Log ingest over HTTP against the real binary: Loki push (JSON, gzip
//! JSON, protobuf + snappy) and OTLP/HTTP logs (JSON and protobuf) with a
//! `logs:write` token; limits and bad bodies answered 4xx with nothing of a
//! refused body stored; tokens confined to their project; and every line
//! acknowledged before a `kill -9` present after it.
//!
//! The query API is not part of this path yet, so what was stored is read
//! by opening `<data dir>/logs` with `logstore` once the server is gone.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;

use crate::harness::{Server, call, now_ns, try_call};

/// One stored line: `labels | ts | line | metadata`.
pub type Row = (String, i64, String, Vec<(String, String)>);

/// Every entry of `project` in the store under `data_dir`, in label then
/// time order. The server must be stopped (the store takes a lock).
///
/// Waits out a lock that was just released: other tests of this binary spawn child
/// processes, and between its fork and exec a child holds a copy of every descriptor, so
/// for a moment the `flock` of a store this process dropped (an earlier call) still reads
/// as taken. A real second holder would keep it for good; this waits up to 2 s.
pub fn stored(data_dir: &Path, project: &str) -> Vec<Row> {
    let dir = data_dir.join("logs");
    let open = || logstore::Store::open(&dir, logstore::Options::default());
    let mut r = open();
    for _ in 0..200 {
        if !matches!(r, Err(logstore::Error::Locked(_))) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        r = open();
    }
    let store = r.expect("open the log store");
    let q = logstore::Query {
        matchers: &[],
        start: i64::MIN,
        end: i64::MAX,
        direction: logstore::Direction::Forward,
        limit: 0,
        required: &[],
    };
    let mut out = Vec::new();
    for (labels, entries) in store.query(project, &q).unwrap() {
        for e in entries {
            out.push((labels.to_string(), e.ts, e.line, e.metadata));
        }
    }
    store.close().unwrap();
    out
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn push(
    s: &Server,
    token: &str,
    ct: &str,
    enc: Option<&str>,
    body: Vec<u8>,
) -> crate::harness::Resp {
    let auth = format!("Bearer {token}");
    let mut h = vec![("authorization", auth.as_str())];
    if let Some(e) = enc {
        h.push(("content-encoding", e));
    }
    call("POST", &s.url("/loki/api/v1/push"), &h, Some((ct, body)))
}

fn pb_push(labels: &str, entries: &[(i64, &str)]) -> Vec<u8> {
    let req = ingest::loki::PushRequest {
        streams: vec![ingest::loki::PbStream {
            labels: labels.into(),
            entries: entries
                .iter()
                .map(|(t, l)| ingest::loki::PbEntry {
                    timestamp: Some(ingest::loki::PbTimestamp {
                        seconds: t.div_euclid(1_000_000_000),
                        nanos: t.rem_euclid(1_000_000_000) as i32,
                    }),
                    line: l.to_string(),
                    structured_metadata: vec![ingest::loki::PbLabelPair {
                        name: "via".into(),
                        value: "pb".into(),
                    }],
                })
                .collect(),
            hash: 0,
        }],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap()
}

fn config(dir: &Path, text: &str) -> String {
    let p = dir.join("fd.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn loki_and_otlp_pushes_are_stored_and_limits_refuse_with_4xx() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        "[logs]\nmax_line_size = 1000\nmax_request_bytes = 100000\n\
         [logs.projects.tiny]\nmax_streams_per_project = 2\n\
         ingestion_rate_mb = 0.01\ningestion_burst_size_mb = 0.01\n",
    );
    let mut s = Server::binary_with(&["--host-metrics", "false", "--config", &cfg]);
    s.project("shop");
    s.project("other");
    s.project("tiny");
    let (_, w) = s.token_in("shop", &["logs:write"]);
    let (_, metrics_only) = s.token_in("shop", &["metrics:write"]);
    let (_, tiny) = s.token_in("tiny", &["logs:write"]);
    let t0 = now_ns() - 60_000_000_000;

    // JSON, out of order within the stream, with structured metadata.
    let body = format!(
        r#"{{"streams":[{{"stream":{{"job":"api","env":"prod"}},"values":[
            ["{}","json two"],["{}","json one",{{"trace_id":"t1"}}]]}}]}}"#,
        t0 + 2,
        t0 + 1
    );
    let r = push(&s, &w, "application/json", None, body.into_bytes());
    assert_eq!(r.status, 204, "{}", r.body);
    // gzip JSON
    let body = format!(
        r#"{{"streams":[{{"stream":{{"job":"api","env":"prod"}},"values":[["{}","gzip three"]]}}]}}"#,
        t0 + 3
    );
    let r = push(
        &s,
        &w,
        "application/json",
        Some("gzip"),
        gz(body.as_bytes()),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    // protobuf + snappy, no Content-Encoding (as promtail sends it)
    let r = push(
        &s,
        &w,
        "application/x-protobuf",
        None,
        pb_push(r#"{job="worker"}"#, &[(t0 + 4, "pb four")]),
    );
    assert_eq!(r.status, 204, "{}", r.body);

    // Undecodable bodies: 4xx, nothing stored.
    let bad: Vec<(&str, Option<&str>, Vec<u8>, u16)> = vec![
        (
            "application/json",
            None,
            b"{\"streams\":[{\"stream\":{\"job\":\"bad\"},\"values\":[[\"x\",\"l\"]]}]}".to_vec(),
            400,
        ),
        ("application/json", Some("gzip"), b"not gzip".to_vec(), 400),
        (
            "application/x-protobuf",
            None,
            b"\x01\x02\x03 not snappy".to_vec(),
            400,
        ),
        ("text/plain", None, b"hello".to_vec(), 415),
        ("application/json", Some("br"), b"{}".to_vec(), 415),
        ("application/json", None, vec![b' '; 200_000], 413),
        (
            "application/x-protobuf",
            None,
            pb_push("job=\"bad\"", &[(t0, "bad labels")]),
            400,
        ),
    ];
    for (ct, enc, body, want) in bad {
        let r = push(&s, &w, ct, enc, body);
        assert_eq!(r.status, want, "{ct} {enc:?}: {}", r.body);
    }
    // Partial: the valid entries are stored, the others named in a 400.
    let body = format!(
        r#"{{"streams":[
            {{"stream":{{"job":"api","env":"prod"}},"values":[["{ok}","partial ok"],["{ok}","{long}"],["{old}","too old"]]}},
            {{"stream":{{"bad.name":"x"}},"values":[["{ok}","bad label"]]}},
            {{"stream":{{}},"values":[["{ok}","no labels"]]}}
        ]}}"#,
        ok = t0 + 5,
        long = "x".repeat(1001),
        old = t0 - 8 * 86_400_000_000_000,
    );
    let r = push(&s, &w, "application/json", None, body.into_bytes());
    assert_eq!(r.status, 400, "{}", r.body);
    for needle in [
        "4 log lines rejected",
        "line_too_long: 1",
        "max_line_size=1000",
        "greater_than_max_sample_age: 1",
        "invalid_labels: 1",
        "\"bad.name\"",
        "missing_labels: 1",
    ] {
        assert!(r.body.contains(needle), "{needle:?} not in {}", r.body);
    }
    // A token without logs:write, and a token aimed at another project.
    let ok_body =
        format!(r#"{{"streams":[{{"stream":{{"job":"x"}},"values":[["{t0}","denied"]]}}]}}"#);
    let r = push(
        &s,
        &metrics_only,
        "application/json",
        None,
        ok_body.clone().into_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let auth = format!("Bearer {w}");
    let r = call(
        "POST",
        &s.url("/loki/api/v1/push"),
        &[("authorization", &auth), ("x-scope-orgid", "other")],
        Some(("application/json", ok_body.clone().into_bytes())),
    );
    assert!(
        r.status == 403 || r.status == 404,
        "{}: {}",
        r.status,
        r.body
    );
    let r = call(
        "POST",
        &s.url("/loki/api/v1/push"),
        &[],
        Some(("application/json", ok_body.into_bytes())),
    );
    assert_eq!(r.status, 401, "{}", r.body);

    // Per-project limits: streams, then the rate.
    let tiny_push = |job: &str, line: &str| {
        let body = format!(
            r#"{{"streams":[{{"stream":{{"job":"{job}"}},"values":[["{}","{line}"]]}}]}}"#,
            t0 + 6
        );
        push(&s, &tiny, "application/json", None, body.into_bytes())
    };
    assert_eq!(tiny_push("a", "1").status, 204);
    assert_eq!(tiny_push("b", "2").status, 204);
    // A new stream over the limit: 429, as Loki answers its stream limit.
    let r = tiny_push("c", "3");
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("stream_limit: 1"), "{}", r.body);
    assert!(r.body.contains("max_streams_per_project=2"), "{}", r.body);
    // Refused streams and invalid lines in one push: still 429, each reason counted, and
    // the admitted stream's valid line stored.
    let body = format!(
        r#"{{"streams":[
            {{"stream":{{"job":"b"}},"values":[["{t}","mixed ok"],["{t}","{long}"]]}},
            {{"stream":{{"job":"d"}},"values":[["{t}","new d"],["{t}","new d again"]]}}
        ]}}"#,
        t = t0 + 6,
        long = "z".repeat(1001),
    );
    let r = push(&s, &tiny, "application/json", None, body.into_bytes());
    assert_eq!(r.status, 429, "{}", r.body);
    for needle in [
        "3 log lines rejected",
        "line_too_long: 1",
        "stream_limit: 2",
        "max_streams_per_project=2",
    ] {
        assert!(r.body.contains(needle), "{needle:?} not in {}", r.body);
    }
    assert_eq!(
        tiny_push("a", "4").status,
        204,
        "a known stream still takes lines"
    );
    let big = "y".repeat(900);
    let mut limited = None;
    for _ in 0..20 {
        let r = tiny_push("a", &big);
        if r.status != 204 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("the 10 KiB bucket must run dry within 18 KB");
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("ingestion_rate_mb"), "{}", r.body);

    // OTLP/HTTP: the conformance sample as JSON, and as protobuf.
    let json = std::fs::read(crate::conformance_file("otlp/logs.json")).unwrap();
    let otlp = |ct: &str, body: Vec<u8>| {
        call(
            "POST",
            &s.url("/v1/logs"),
            &[("authorization", &auth)],
            Some((ct, body)),
        )
    };
    let r = otlp("application/json", json);
    // The sample is from 2018: older than 168h, so refused per entry with
    // partial success, not stored.
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("greater_than_max_sample_age"), "{}", r.body);
    assert!(
        r.body.contains("\"rejectedLogRecords\":\"1\""),
        "{}",
        r.body
    );
    let pb = std::fs::read(crate::conformance_file("otlp/logs.binpb")).unwrap();
    let r = otlp("application/x-protobuf", pb);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.bytes.is_empty(), "partial_success expected");
    // A current OTLP/JSON record is stored.
    let rec = format!(
        r#"{{"resourceLogs":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"checkout"}}}}]}},
            "scopeLogs":[{{"logRecords":[{{"timeUnixNano":"{}","severityNumber":13,"body":{{"stringValue":"otlp seven"}},
            "attributes":[{{"key":"http.method","value":{{"stringValue":"GET"}}}}]}}]}}]}}]}}"#,
        t0 + 7
    );
    let r = otlp("application/json", gz(rec.as_bytes()));
    assert_eq!(r.status, 400, "gzip needs its Content-Encoding: {}", r.body);
    let r = call(
        "POST",
        &s.url("/v1/logs"),
        &[("authorization", &auth), ("content-encoding", "gzip")],
        Some(("application/json", gz(rec.as_bytes()))),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "{}");
    let r = otlp("application/x-protobuf", b"\xff\xff\xff".to_vec());
    assert_eq!(r.status, 400, "{}", r.body);

    // The read side sees the pushed lines (logs:read; logs:write alone is not enough).
    let (_, reader) = s.token_in("shop", &["logs:read"]);
    let q = format!(
        "/loki/api/v1/query_range?query=%7Bjob%3D%22api%22%7D&start={}&end={}&direction=forward&limit=100",
        t0,
        t0 + 10
    );
    let r = call(
        "GET",
        &s.url(&q),
        &[("authorization", &format!("Bearer {reader}"))],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // (metadata splits the stream in Loki's JSON: merge, then order by time)
    let mut values: Vec<(String, String)> = r.json()["data"]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.body))
        .iter()
        .flat_map(|st| st["values"].as_array().unwrap().clone())
        .map(|v| {
            (
                v[0].as_str().unwrap().to_string(),
                v[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    values.sort();
    let lines: Vec<String> = values.into_iter().map(|v| v.1).collect();
    assert_eq!(
        lines,
        ["json one", "json two", "gzip three", "partial ok"],
        "{}",
        r.body
    );
    let r = call("GET", &s.url(&q), &[("authorization", &auth)], None);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(call("GET", &s.url("/ready"), &[], None).status, 200);

    s.kill9();
    let rows = stored(&s.data_dir, "shop");
    let got: Vec<(String, i64, String)> = rows
        .iter()
        .map(|(l, t, line, _)| (l.clone(), t - t0, line.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                r#"{env="prod", job="api"}"#.to_string(),
                1,
                "json one".to_string()
            ),
            (
                r#"{env="prod", job="api"}"#.to_string(),
                2,
                "json two".to_string()
            ),
            (
                r#"{env="prod", job="api"}"#.to_string(),
                3,
                "gzip three".to_string()
            ),
            (
                r#"{env="prod", job="api"}"#.to_string(),
                5,
                "partial ok".to_string()
            ),
            (r#"{job="worker"}"#.to_string(), 4, "pb four".to_string()),
            (
                r#"{service_name="checkout"}"#.to_string(),
                7,
                "otlp seven".to_string()
            ),
        ]
    );
    assert_eq!(rows[0].3, vec![("trace_id".to_string(), "t1".to_string())]);
    assert_eq!(rows[4].3, vec![("via".to_string(), "pb".to_string())]);
    assert_eq!(
        rows[5].3,
        vec![
            ("http_method".to_string(), "GET".to_string()),
            ("severity_number".to_string(), "13".to_string()),
            ("level".to_string(), "warn".to_string()),
        ]
    );
    assert!(
        stored(&s.data_dir, "other").is_empty(),
        "nothing in project other"
    );
    let tiny = stored(&s.data_dir, "tiny");
    assert!(
        tiny.iter()
            .any(|r| r.0 == r#"{job="b"}"# && r.1 == t0 + 6 && r.2 == "mixed ok"),
        "the admitted stream's line of the 429 push is stored"
    );
    let tiny_rows: BTreeSet<String> = tiny.into_iter().map(|r| r.0).collect();
    assert_eq!(
        tiny_rows.into_iter().collect::<Vec<_>>(),
        vec![r#"{job="a"}"#.to_string(), r#"{job="b"}"#.to_string()]
    );
}

const WRITERS: usize = 6;

#[test]
fn acknowledged_lines_survive_sigkill_during_concurrent_pushes() {
    let mut s = Server::binary_with(&["--host-metrics", "false"]);
    let (_, w) = s.token_in("default", &["logs:write"]);
    let acked: Arc<Mutex<Vec<(String, i64, String)>>> = Arc::default();
    let t0 = now_ns() - 3_600_000_000_000;
    for (cycle, delay) in [350u64, 600, 200].into_iter().enumerate() {
        let stop = Instant::now() + Duration::from_millis(delay);
        let mut threads = Vec::new();
        for writer in 0..WRITERS {
            let (url, token, acked) = (s.url.clone(), w.clone(), acked.clone());
            threads.push(std::thread::spawn(move || {
                let mut i: i64 = 0;
                while Instant::now() < stop + Duration::from_millis(300) {
                    i += 1;
                    let job = format!("w{writer}");
                    let ts = t0 + (cycle as i64) * 1_000_000_000_000 + i * 1000 + writer as i64;
                    let lines: Vec<String> = (0..10)
                        .map(|k| format!("c{cycle} w{writer} i{i} k{k}"))
                        .collect();
                    let values: Vec<serde_json::Value> = lines
                        .iter()
                        .enumerate()
                        .map(|(k, l)| serde_json::json!([(ts + k as i64).to_string(), l]))
                        .collect();
                    let body =
                        serde_json::json!({"streams":[{"stream":{"job": job},"values": values}]});
                    let r = try_call(
                        "POST",
                        &format!("{url}/loki/api/v1/push"),
                        &[("authorization", &format!("Bearer {token}"))],
                        Some(("application/json", body.to_string().into_bytes())),
                    );
                    match r {
                        Ok(r) if r.status == 204 => {
                            let mut a = acked.lock().unwrap();
                            for (k, l) in lines.into_iter().enumerate() {
                                a.push((format!("{{job=\"{job}\"}}"), ts + k as i64, l));
                            }
                        }
                        _ => break,
                    }
                }
            }));
        }
        std::thread::sleep(stop.saturating_duration_since(Instant::now()));
        s.kill9();
        for t in threads {
            let _ = t.join();
        }
        s.restart();
    }
    // One more push after the last restart: the server still takes writes.
    let body =
        format!(r#"{{"streams":[{{"stream":{{"job":"after"}},"values":[["{t0}","after"]]}}]}}"#);
    let r = push(&s, &w, "application/json", None, body.into_bytes());
    assert_eq!(r.status, 204, "{}", r.body);
    s.kill9();
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "logs crash: {} lines acknowledged across 3 kills",
        acked.len()
    );
    assert!(
        acked.len() > 500,
        "too few acknowledged lines: {}",
        acked.len()
    );
    let rows = stored(&s.data_dir, "default");
    let have: BTreeSet<(String, i64, String)> = rows
        .into_iter()
        .map(|(l, t, line, _)| (l, t, line))
        .collect();
    let missing: Vec<_> = acked.iter().filter(|r| !have.contains(*r)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged lines lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(3)]
    );
    assert!(have.contains(&(r#"{job="after"}"#.to_string(), t0, "after".to_string())));
}
