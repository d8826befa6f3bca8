//! The Loki HTTP API's read side against the real binary, with the requests Grafana's Loki
//! data source sends: "Save & test" (`vector(1)+vector(1)` and the labels call), Explore's
//! logs panel (a backward `query_range` with a limit) with its log volume histogram
//! (`sum by (level) (count_over_time(…))`), the label browser (labels, label values,
//! series, index stats), live tail over a WebSocket and Logs Drilldown's patterns; errors
//! as Loki gives them, and one project's token never reading another project's lines.

use serde_json::{Value, json};

use crate::harness::{Resp, Server, call, now_ns};
use crate::real_clients::enc;

fn push(s: &Server, token: &str, body: Value) {
    let r = call(
        "POST",
        &s.url("/loki/api/v1/push"),
        &[("authorization", &format!("Bearer {token}"))],
        Some(("application/json", body.to_string().into_bytes())),
    );
    assert_eq!(r.status, 204, "{}", r.body);
}

fn get(s: &Server, token: &str, path: &str) -> Resp {
    call(
        "GET",
        &s.url(path),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-query-tags", "Source=grafana"),
        ],
        None,
    )
}

fn ok(r: &Resp) -> Value {
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["status"], "success", "{}", r.body);
    v["data"].clone()
}

/// A server with project `shop` holding 60 lines over the last minute from two streams
/// (`app=web` info lines, `app=db` with every third line an error), and project `other`
/// holding one secret line.
fn loaded() -> (Server, String, i64) {
    let s = Server::binary_with(&["--host-metrics", "false"]);
    s.project("shop");
    s.project("other");
    let (_, t) = s.token_in("shop", &["logs:read", "logs:write"]);
    let (_, other) = s.token_in("other", &["logs:read", "logs:write"]);
    let now = now_ns();
    let base = now - 60_000_000_000;
    let lines = |app: &str| -> Vec<Value> {
        (0..30)
            .map(|i| {
                let level = if app == "db" && i % 3 == 0 {
                    "error"
                } else {
                    "info"
                };
                json!([
                    (base + i * 2_000_000_000).to_string(),
                    format!(
                        "level={level} app={app} msg=\"request {i}\" status={}",
                        200 + i % 2 * 300
                    )
                ])
            })
            .collect()
    };
    push(
        &s,
        &t,
        json!({"streams": [
            {"stream": {"app": "web", "env": "prod"}, "values": lines("web")},
            {"stream": {"app": "db", "env": "prod"}, "values": lines("db")},
        ]}),
    );
    push(
        &s,
        &other,
        json!({"streams": [{"stream": {"app": "web", "env": "prod"},
            "values": [[now.to_string(), "secret of another project"]]}]}),
    );
    (s, t, now)
}

#[test]
fn grafana_loki_save_and_test() {
    let (s, t, now) = loaded();
    // Grafana 10+: an instant `vector(1)+vector(1)` must answer 2.
    let d = ok(&get(
        &s,
        &t,
        &format!(
            "/loki/api/v1/query?query={}&time={now}",
            enc("vector(1)+vector(1)")
        ),
    ));
    assert_eq!(d["resultType"], "vector", "{d}");
    assert_eq!(d["result"][0]["value"][1], "2", "{d}");
    // Older Grafana: the labels of the last hour.
    let d = ok(&get(
        &s,
        &t,
        &format!(
            "/loki/api/v1/labels?start={}&end={now}",
            now - 3_600_000_000_000
        ),
    ));
    assert_eq!(d, json!(["app", "env"]));
    assert!(get(&s, &t, "/loki/api/v1/status/buildinfo").json()["version"].is_string());
    assert_eq!(get(&s, &t, "/ready").status, 200);
}

#[test]
fn grafana_explore_logs_and_volume() {
    let (s, t, now) = loaded();
    let start = now - 3_600_000_000_000;
    // The logs panel: newest first, at most `limit` lines, a line filter and a parser.
    let q = enc("{env=\"prod\"} |= \"status=500\" | logfmt | level=\"info\"");
    let d = ok(&get(
        &s,
        &t,
        &format!(
            "/loki/api/v1/query_range?direction=backward&end={now}&limit=5&query={q}&start={start}&step=2s"
        ),
    ));
    assert_eq!(d["resultType"], "streams", "{d}");
    let mut got: Vec<(String, String)> = Vec::new();
    for st in d["result"].as_array().unwrap() {
        // Parsed labels join the stream's (as Loki returns them by default).
        assert_eq!(st["stream"]["level"], "info", "{st}");
        for v in st["values"].as_array().unwrap() {
            got.push((
                v[0].as_str().unwrap().to_string(),
                v[1].as_str().unwrap().to_string(),
            ));
        }
    }
    assert_eq!(got.len(), 5, "{d}");
    got.sort();
    // The 5 newest: odd i (status=500) that are info; web i=29,27,25,23,21 vs db's
    // (i % 3 != 0) 29, 25, 23 — by time the newest five of both.
    assert!(
        got.iter()
            .all(|(_, l)| l.contains("status=500") && l.contains("level=info"))
    );
    assert!(
        got.iter()
            .any(|(_, l)| l.contains("app=web msg=\"request 29\"")),
        "{got:?}"
    );
    // Forward: the oldest first.
    let d = ok(&get(
        &s,
        &t,
        &format!(
            "/loki/api/v1/query_range?direction=forward&end={now}&limit=2&query={}&start={start}",
            enc("{app=\"db\"}")
        ),
    ));
    let values = d["result"][0]["values"].as_array().unwrap();
    assert_eq!(values.len(), 2);
    assert!(
        values[0][1].as_str().unwrap().contains("request 0\""),
        "{d}"
    );
    // The log volume histogram Grafana draws beside the lines.
    let q = enc("sum by (level) (count_over_time({env=\"prod\"} | logfmt | drop __error__ [1m]))");
    let d = ok(&get(
        &s,
        &t,
        &format!("/loki/api/v1/query_range?query={q}&start={start}&end={now}&step=60"),
    ));
    assert_eq!(d["resultType"], "matrix", "{d}");
    let mut last: Vec<(String, f64)> = d["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let v = s["values"].as_array().unwrap();
            let total: f64 = v
                .iter()
                .map(|p| p[1].as_str().unwrap().parse::<f64>().unwrap())
                .sum();
            (s["metric"]["level"].as_str().unwrap().to_string(), total)
        })
        .collect();
    last.sort_by(|a, b| a.0.cmp(&b.0));
    // Steps 60 s apart with 1m windows tile the hour: every line is counted once.
    assert_eq!(
        last,
        vec![("error".to_string(), 10.0), ("info".to_string(), 50.0)]
    );
    // Errors come as Loki gives them: plain text, 400.
    let r = get(
        &s,
        &t,
        &format!("/loki/api/v1/query_range?query={}", enc("{app=")),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("parse error"), "{}", r.body);
    let r = get(
        &s,
        &t,
        &format!("/loki/api/v1/query?query={}", enc("{app=\"db\"}")),
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("range query"), "{}", r.body);
}

#[test]
fn grafana_label_browser_and_isolation() {
    let (s, t, now) = loaded();
    let start = now - 3_600_000_000_000;
    let d = ok(&get(
        &s,
        &t,
        &format!("/loki/api/v1/label/app/values?start={start}&end={now}"),
    ));
    assert_eq!(d, json!(["db", "web"]));
    let d = ok(&get(
        &s,
        &t,
        &format!(
            "/loki/api/v1/label/app/values?start={start}&end={now}&query={}",
            enc("{app=\"db\"}")
        ),
    ));
    assert_eq!(d, json!(["db"]));
    let d = ok(&get(
        &s,
        &t,
        &format!(
            "/loki/api/v1/series?match[]={}&start={start}&end={now}",
            enc("{env=\"prod\"}")
        ),
    ));
    assert_eq!(
        d,
        json!([{"app": "db", "env": "prod"}, {"app": "web", "env": "prod"}])
    );
    let r = get(
        &s,
        &t,
        &format!(
            "/loki/api/v1/index/stats?query={}&start={start}&end={now}",
            enc("{app=\"web\"}")
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["streams"], 1, "{v}");
    assert_eq!(v["entries"], 30, "{v}");
    assert!(v["bytes"].as_u64().unwrap() > 30 * 40, "{v}");
    let r = get(
        &s,
        &t,
        &format!(
            "/loki/api/v1/detected_labels?query={}&start={start}&end={now}",
            enc("{env=\"prod\"}")
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["detectedLabels"],
        json!([{"label": "app", "cardinality": 2}, {"label": "env", "cardinality": 1}])
    );
    // The other project's line is never visible to shop's token, and a token without
    // logs:read gets 403.
    let d = ok(&get(
        &s,
        &t,
        &format!(
            "/loki/api/v1/query_range?query={}&start={start}&end={}&limit=1000",
            enc("{app=\"web\"} |= \"secret\""),
            now + 1
        ),
    ));
    assert_eq!(d["result"], json!([]), "{d}");
    let (_, metrics_only) = s.token_in("shop", &["metrics:read"]);
    let r = get(
        &s,
        &metrics_only,
        &format!("/loki/api/v1/labels?start={start}&end={now}"),
    );
    assert_eq!(r.status, 403, "{}", r.body);
}

#[test]
fn live_tail_sends_history_then_new_lines() {
    let (s, t, now) = loaded();
    let url = s
        .url(&format!(
            "/loki/api/v1/tail?query={}&start={}&limit=3&delay_for=0",
            enc("{app=\"db\"} |= \"level=error\""),
            now - 3_600_000_000_000
        ))
        .replacen("http://", "ws://", 1);
    let mut req =
        tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {t}").parse().unwrap());
    let (mut ws, _) = tungstenite::connect(req).expect("websocket");
    let read = |ws: &mut tungstenite::WebSocket<_>| -> Vec<String> {
        let msg = ws.read().expect("a message");
        let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["values"].as_array().unwrap().clone())
            .map(|p| p[1].as_str().unwrap().to_string())
            .collect()
    };
    // History: the 3 newest matching lines, oldest first.
    let first = read(&mut ws);
    assert_eq!(first.len(), 3, "{first:?}");
    assert!(first[2].contains("request 27\""), "{first:?}");
    // New lines: one matching, one not.
    push(
        &s,
        &t,
        json!({"streams": [{"stream": {"app": "db", "env": "prod"}, "values": [
            [(now_ns()).to_string(), "level=info app=db msg=\"quiet\""],
            [(now_ns() + 1).to_string(), "level=error app=db msg=\"live one\""],
        ]}]}),
    );
    let live = read(&mut ws);
    assert_eq!(
        live,
        vec!["level=error app=db msg=\"live one\"".to_string()]
    );
    let _ = ws.close(None);
}

/// Logs Drilldown's "Patterns" tab: `/loki/api/v1/patterns` over a selector's lines (three
/// templates with varying fields, in two streams), then the `|>` filter Grafana builds when
/// a pattern is picked.
#[test]
fn grafana_patterns() {
    let s = Server::binary_with(&["--host-metrics", "false"]);
    s.project("shop");
    let (_, t) = s.token_in("shop", &["logs:read", "logs:write"]);
    let (_, write_only) = s.token_in("shop", &["logs:write"]);
    let sec = 1_000_000_000i64;
    // A whole minute, ten minutes ago: the 30 s steps start at t0.
    let t0 = (now_ns() / (60 * sec) - 10) * 60 * sec;
    let at = |dt: i64, line: String| json!([(t0 + dt * sec).to_string(), line]);
    let mut shop: Vec<Value> = (0..12)
        .map(|i| {
            at(
                5 * i,
                format!(
                    "level=info msg=\"GET /api/items/{}\" status=200 took={}ms",
                    100 + i,
                    3 + i
                ),
            )
        })
        .collect();
    for (i, dt) in [10, 40, 70, 75].into_iter().enumerate() {
        shop.push(at(
            dt,
            format!("level=error msg=\"payment declined\" order=ord-{i}{i}{i} code=card_declined"),
        ));
    }
    let cache: Vec<Value> = [20, 50, 80]
        .into_iter()
        .map(|dt| {
            at(
                dt,
                format!(
                    r#"{{"level":"debug","msg":"cache refreshed","keys":{}}}"#,
                    dt * 3
                ),
            )
        })
        .collect();
    push(
        &s,
        &t,
        json!({"streams": [
            {"stream": {"app": "shop"}, "values": shop},
            {"stream": {"app": "cache"}, "values": cache},
        ]}),
    );
    let range = format!("start={t0}&end={}&step=30s", t0 + 120 * sec);
    let ts = |dt: i64| t0 / sec + dt;
    let info = r#"level=info msg="GET <_>" status=<_> took=<_>"#;
    let error = r#"level=error msg="payment declined" order=<_> code=card_declined"#;
    let d = ok(&get(
        &s,
        &t,
        &format!(
            "/loki/api/v1/patterns?query={}&{range}",
            enc(r#"{app=~"shop|cache"}"#)
        ),
    ));
    assert_eq!(
        d,
        json!([
            {"pattern": info, "samples": [[ts(0), 6], [ts(30), 6]], "level": "info"},
            {"pattern": error, "samples": [[ts(0), 1], [ts(30), 1], [ts(60), 2]],
             "level": "error"},
            {"pattern": r#"{"level":"debug","msg":"cache refreshed","keys":<_>}"#,
             "samples": [[ts(0), 1], [ts(30), 1], [ts(60), 1]], "level": "debug"},
        ])
    );
    // POST with a form, and a line filter applied before clustering.
    let r = call(
        "POST",
        &s.url("/loki/api/v1/patterns"),
        &[("authorization", &format!("Bearer {t}"))],
        Some((
            "application/x-www-form-urlencoded",
            format!("query={}&{range}", enc(r#"{app="shop"} |= "declined""#)).into_bytes(),
        )),
    );
    assert_eq!(
        ok(&r),
        json!([{"pattern": error, "samples": [[ts(0), 1], [ts(30), 1], [ts(60), 2]],
                "level": "error"}])
    );
    // Picking a pattern: Grafana filters with `|>`, which takes exactly its lines.
    for (pattern, want) in [(info, 12), (error, 4)] {
        let q = enc(&format!("{{app=\"shop\"}} |> `{pattern}`"));
        let d = ok(&get(
            &s,
            &t,
            &format!("/loki/api/v1/query_range?query={q}&{range}&limit=100"),
        ));
        let n: usize = d["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|st| st["values"].as_array().unwrap().len())
            .sum();
        assert_eq!(n, want, "{pattern}: {d}");
    }
    // Errors as Loki gives them; logs:read is needed.
    let r = get(
        &s,
        &t,
        &format!(
            "/loki/api/v1/patterns?query={}&{range}",
            enc(r#"rate({app="shop"}[1m])"#)
        ),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("not a metric query"), "{}", r.body);
    let r = get(
        &s,
        &t,
        &format!(
            "/loki/api/v1/patterns?query={}&step=-5",
            enc(r#"{app="shop"}"#)
        ),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = get(
        &s,
        &write_only,
        &format!("/loki/api/v1/patterns?query={}", enc(r#"{app="shop"}"#)),
    );
    assert_eq!(r.status, 403, "{}", r.body);
}
