//! How long `/loki/api/v1/patterns` takes over its cap of lines: the log benchmarks' mix
//! (`bench/logmix.rs`: nginx JSON access logs, JSON app logs, logfmt) written into a
//! `logstore` in a temporary directory and sealed into segments, then timed twice: the
//! clustering alone (one `Drain` over lines already in memory), and the whole request
//! (`find_patterns`: the store read through the `logql` engine, newest lines first, each
//! line's level, and one clustering per level). Prints a Markdown table and the top patterns.
//!
//! Run: `cargo bench -p server --bench patterns [-- --lines 100000] [--runs 5]`.

use std::time::{Duration, Instant};

use server::loki::drain::Drain;
use server::loki::patterns::{MAX_LINES, MAX_PATTERNS, PatternsRequest, find_patterns};

#[path = "../../../bench/logmix.rs"]
mod logmix;

const SECOND: i64 = 1_000_000_000;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let n = arg("--lines", MAX_LINES).max(1);
    let runs = arg("--runs", 5).max(1);
    // One hour of lines, the newest just before `end`.
    let end = 1_800_000_000 * SECOND;
    let start = end - 3_600 * SECOND;
    let gap = 3_600 * SECOND / n as i64;
    let mut rng = logmix::Rng(0x5eed);
    let lines: Vec<(i64, &'static str, String)> = (0..n)
        .map(|i| {
            let (job, line) = logmix::line(&mut rng, i, false);
            (start + i as i64 * gap, job, line)
        })
        .collect();
    let raw: usize = lines.iter().map(|l| l.2.len()).sum();

    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = logstore::Store::open(dir.path(), logstore::Options::default()).expect("open");
    for chunk in lines.chunks(10_000) {
        let mut by_job: std::collections::BTreeMap<&str, Vec<logstore::Entry>> = Default::default();
        for (ts, job, line) in chunk {
            by_job
                .entry(job)
                .or_default()
                .push(logstore::Entry::new(*ts, line.clone()));
        }
        let batches: Vec<logstore::StreamBatch> = by_job
            .into_iter()
            .map(|(job, entries)| logstore::StreamBatch {
                labels: model::Labels::from_pairs([("job", job)]),
                entries,
            })
            .collect();
        store.append("bench", &batches).expect("append");
    }
    store.flush().expect("flush");

    // Grafana's step for one hour (range / 250, in whole seconds).
    let step = 14 * SECOND;
    let mut drain_times = Vec::new();
    let mut found = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let mut d = Drain::new(step);
        for (ts, _, line) in &lines {
            d.add(*ts, line);
        }
        found = d.patterns(MAX_PATTERNS).len();
        drain_times.push(t.elapsed());
    }
    let req = PatternsRequest {
        query: "{job=~\".+\"}".into(),
        start,
        end,
        step,
    };
    let mut request_times = Vec::new();
    let mut patterns = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        patterns = find_patterns(&store, "bench", &req, MAX_LINES, None).expect("patterns");
        request_times.push(t.elapsed());
    }
    let counted: u64 = patterns.iter().map(|p| p.pattern.total).sum();
    let (d, r) = (median(drain_times), median(request_times));
    let per_s = |t: Duration| n as f64 / t.as_secs_f64();
    println!(
        "| lines | raw MB | patterns | clustering ms (lines/s) | whole request ms (lines/s) |"
    );
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {:.1} | {found} | {:.1} ({:.0}) | {:.1} ({:.0}) |",
        raw as f64 / 1e6,
        d.as_secs_f64() * 1e3,
        per_s(d),
        r.as_secs_f64() * 1e3,
        per_s(r),
    );
    println!("\nmedian of {runs} runs; lines in the answer's patterns: {counted}\n");
    println!("top patterns:");
    for p in patterns.iter().take(12) {
        println!(
            "{:>7}  {:<7}  {}",
            p.pattern.total, p.level, p.pattern.pattern
        );
    }
}
