//! Measures the evaluator on synthetic nginx-style JSON lines held in [`MemStorage`]:
//! `|= "rare-token"` scan throughput (log and metric form) and
//! `sum by (status) (rate({job="nginx"} | json [5m]))` over one hour.
//!
//! `cargo run --release -p logql --example scan -- [lines]` (default 1,000,000).

use logql::{Engine, EngineOptions, MemStorage, QueryParams, QueryResult};
use std::time::Instant;

fn main() {
    let n: i64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let hour_ns: i64 = 3_600_000_000_000;
    let mut store = MemStorage::new();
    let paths = [
        "/api/v1/query",
        "/login",
        "/static/app.js",
        "/healthz",
        "/api/v1/push",
    ];
    let statuses = ["200", "200", "200", "201", "304", "404", "500"];
    let mut bytes = 0usize;
    let mut rng = model::XorShift64::new(0x2545_f491_4f6c_dd1d);
    for i in 0..n {
        // xorshift for cheap variety
        let x = rng.next_u64();
        let host = format!("web-{}", x % 4);
        let labels = model::Labels::from_pairs([("job", "nginx"), ("host", host.as_str())]);
        let ts = i * hour_ns / n;
        let line = format!(
            r#"{{"remote_addr":"10.{}.{}.{}","method":"GET","path":"{}","status":{},"bytes":{},"duration":"{}ms","user_agent":"Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/{}.0","req_id":"{:016x}"}}"#,
            x % 256,
            (x >> 8) % 256,
            (x >> 16) % 256,
            paths[(x >> 24) as usize % paths.len()],
            statuses[(x >> 32) as usize % statuses.len()],
            (x >> 40) % 50_000,
            (x >> 48) % 900,
            100 + (x >> 56) % 30,
            x
        );
        bytes += line.len();
        store.push(&labels, ts, &line, vec![]);
    }
    store.seal();
    let mb = bytes as f64 / 1e6;
    println!("{n} lines, {mb:.0} MB of log text, 4 streams, one hour");
    let eng = Engine::new(EngineOptions {
        max_series: 10_000,
        max_entries: 5000,
    });

    let t = Instant::now();
    let r = eng
        .query(
            &store,
            r#"{job="nginx"} |= "rare-token""#,
            &QueryParams::range(0, hour_ns, 0),
        )
        .expect("query");
    let el = t.elapsed().as_secs_f64();
    let QueryResult::Streams(s) = r else { panic!() };
    println!(
        "{{job=\"nginx\"}} |= \"rare-token\"                 : {:.3}s, {:.2} GB/s scanned, {} streams",
        el,
        mb / 1e3 / el,
        s.len()
    );

    let t = Instant::now();
    eng.query(
        &store,
        r#"sum(count_over_time({job="nginx"} |= "rare-token" [1h]))"#,
        &QueryParams::instant(hour_ns),
    )
    .expect("query");
    let el = t.elapsed().as_secs_f64();
    println!(
        "sum(count_over_time(… |= \"rare-token\" [1h]))    : {:.3}s, {:.2} GB/s scanned",
        el,
        mb / 1e3 / el
    );

    let t = Instant::now();
    eng.query(
        &store,
        r#"count_over_time({job="nginx"}[5m])"#,
        &QueryParams::range(0, hour_ns, 60_000_000_000),
    )
    .expect("query");
    let el = t.elapsed().as_secs_f64();
    println!(
        "count_over_time({{job=\"nginx\"}}[5m]) 1h/1m            : {:.3}s, {:.0} k lines/s",
        el,
        n as f64 / el / 1e3
    );

    let t = Instant::now();
    let r = eng
        .query(
            &store,
            r#"sum by (status) (rate({job="nginx"} | json [5m]))"#,
            &QueryParams::range(0, hour_ns, 60_000_000_000),
        )
        .expect("query");
    let el = t.elapsed().as_secs_f64();
    let QueryResult::Matrix(m) = r else { panic!() };
    println!(
        "sum by (status) (rate({{job=\"nginx\"}} | json [5m])) 1h/1m: {:.3}s, {:.0} k lines/s, {:.0} MB/s, {} series",
        el,
        n as f64 / el / 1e3,
        mb / el,
        m.len()
    );
}
