//! Log ingest and query over HTTP, end to end: the release binary in a child process on a
//! fresh data directory, `--writers` threads (default 8) pushing Loki JSON (`--batch` lines
//! per request, default 1000) over keep-alive connections with the admin token, every push
//! acknowledged only once durable. The lines are a realistic mix (seeded per request, so
//! every run pushes the same lines): nginx access logs in JSON (job `nginx`, 60 %), JSON
//! application logs (job `app`, 25 %) and logfmt (job `api`, 15 %), over 4 hosts, spread
//! evenly over the last hour. `--rare N` (default 10) of them, evenly spread, carry a token
//! found nowhere else.
//!
//! Up to 4M lines the request bodies are generated before the clock starts (as in the first
//! runs); above that (`--gb 10` ≈ 55M lines) each writer generates its next request on the
//! fly, so memory stays flat and the generator's CPU (reported: bench process CPU) competes
//! with the server for the same cores.
//!
//! Reported: lines/s and MB/s of the push (acks inside the wall time), request latency
//! p50/p99, server CPU seconds per million lines, then through `/loki/api/v1/query_range`
//! the time of `{job=~".+"} |= "<rare token>"` (the bench fails unless it returns exactly
//! the injected lines) and of `{job=~".+"} |= "<absent token>"` over the hour (raw GB/s
//! scanned or skipped: raw bytes of the range / wall time), with the blocks read and skipped
//! when the response's `stats` carry them; of `{job=~".+"} |~ "<rare token>"`, which no
//! bloom filter can help (every block decompressed, every line matched); and of
//! `sum by (status) (rate({job="nginx"} | json [5m]))` (1 h, 1 m steps); the server's peak
//! RSS (VmHWM) after the push and after the queries, its RSS after the queries; and, after a
//! stop and a restart (whose open seals the WAL's unflushed tail into a segment), the bytes
//! of the segments (`data/logs/p`) against the raw line bytes (compression ratio; label
//! index, blooms and framing included, the indexes' share shown).
//!
//! The project's ingestion rate limit is lifted for the run (a config file beside the data).
//!
//! Run: `cargo bench -p flightdeck --bench logs_push [-- --lines 2000000 | --gb 10]
//! [--writers 8] [--batch 1000] [--rare 10] [--nginx-only] [--dir PARENT] [--keep]
//! [--out FILE]`. `--dir` is where
//! the temporary data directory goes (default: the system's temp dir; a 10 GB run wants a
//! real disk: about 1 GB of segments plus up to 256 MiB of WAL).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[path = "../../../bench/logmix.rs"]
mod logmix;
use logmix::{Rng, line};

struct Args {
    lines: usize,
    /// Raw gigabytes to push instead of `lines` (lines = GB / mean line length).
    gb: Option<f64>,
    writers: usize,
    batch: usize,
    rare: usize,
    dir: Option<String>,
    /// Keep the data directory (printed) instead of deleting it.
    keep: bool,
    /// Push only nginx access logs (compression of that kind alone).
    nginx_only: bool,
    out: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        lines: 2_000_000,
        gb: None,
        writers: 8,
        batch: 1000,
        rare: 10,
        dir: None,
        keep: false,
        nginx_only: false,
        out: None,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        let next = || v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--lines" => a.lines = next().parse().expect("--lines N"),
            "--writers" => a.writers = next().parse().expect("--writers N"),
            "--batch" => a.batch = next().parse().expect("--batch N"),
            "--gb" => a.gb = Some(next().parse().expect("--gb N")),
            "--rare" => a.rare = next().parse().expect("--rare N"),
            "--dir" => a.dir = Some(next()),
            "--keep" => {
                a.keep = true;
                i += 1;
                continue;
            }
            "--nginx-only" => {
                a.nginx_only = true;
                i += 1;
                continue;
            }
            "--out" => a.out = Some(next()),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The token of the `--rare` lines: none of its trigrams occurs in the generated mix, so
/// only the blocks holding those lines can pass a bloom check.
const RARE: &str = "xyzzy-plugh-qwv";
/// A token in no line.
const ABSENT: &str = "token-that-is-nowhere";

/// What every request is cut from: `lines` lines, `batch` per request, line `i` stamped
/// `start_ns + i * step_ns`.
struct Plan {
    lines: usize,
    batch: usize,
    rare: usize,
    nginx_only: bool,
    start_ns: i64,
    step_ns: i64,
}

impl Plan {
    fn requests(&self) -> usize {
        self.lines.div_ceil(self.batch)
    }

    /// Whether line `i` carries [`RARE`]: the middle line of each of `rare` equal slices.
    fn is_rare(&self, i: usize) -> bool {
        let slice = self.lines / self.rare.max(1);
        self.rare > 0 && slice > 0 && i / slice < self.rare && i % slice == slice / 2
    }

    /// Request `b`'s body (Loki JSON), the raw bytes of its lines and how many carry
    /// [`RARE`]. Seeded by `b` alone, so any writer can build any request.
    fn body(&self, b: usize) -> (String, usize, usize) {
        let mut r =
            Rng((0x9e37_79b9_7f4a_7c15 ^ (b as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9)) | 1);
        let first = b * self.batch;
        let n = self.batch.min(self.lines - first);
        let (mut raw, mut rare) = (0, 0);
        // Per request, one stream per (job, host).
        let mut streams: std::collections::BTreeMap<(&str, usize), String> = Default::default();
        for i in first..first + n {
            let (job, mut l) = line(&mut r, i, self.nginx_only);
            if self.is_rare(i) {
                rare += 1;
                if l.starts_with('{') {
                    l.insert_str(1, &format!(r#""tag":"{RARE}","#));
                } else {
                    l.push_str(&format!(" tag={RARE}"));
                }
            }
            raw += l.len();
            let ts = self.start_ns + i as i64 * self.step_ns;
            let values = streams.entry((job, i % 4)).or_default();
            if !values.is_empty() {
                values.push(',');
            }
            values.push_str(&format!("[\"{ts}\",{}]", quote(&l)));
        }
        let parts: Vec<String> = streams
            .into_iter()
            .map(|((job, host), values)| {
                format!(
                    r#"{{"stream":{{"job":"{job}","host":"host-{host}","env":"prod"}},"values":[{values}]}}"#
                )
            })
            .collect();
        (format!(r#"{{"streams":[{}]}}"#, parts.join(",")), raw, rare)
    }
}

/// Mean raw line length of the mix (from the first 20 requests' worth of lines).
fn mean_line_len() -> f64 {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let n = 20_000;
    (0..n)
        .map(|i| line(&mut r, i, false).1.len())
        .sum::<usize>() as f64
        / n as f64
}

fn proc_field(pid: u32, file: &str, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0.0)
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = match e.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            n += if m.is_dir() {
                dir_bytes(&e.path())
            } else {
                m.len()
            };
        }
    }
    n
}

/// Bytes of the segments' indexes (label sets, block refs, trigram blooms) under `p`: each
/// segment's footer ends `index_offset u64 LE | index_len u32 LE | crc u32 | "FDLOGEND"`
/// (docs/format/logstore.md).
fn index_bytes(p: &std::path::Path) -> u64 {
    let mut n = 0;
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    for e in rd.flatten() {
        let path = e.path();
        if path.is_dir() {
            n += index_bytes(&path);
            continue;
        }
        use std::os::unix::fs::FileExt as _;
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        let len = file.metadata().map_or(0, |m| m.len());
        let mut f = [0u8; 24];
        if len >= 24 && file.read_at(&mut f, len - 24).is_ok() && f.ends_with(b"FDLOGEND") {
            n += u64::from(u32::from_le_bytes(f[8..12].try_into().expect("4 bytes")));
        }
    }
    n
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

/// Blocks (Loki: chunks) referenced and decompressed by a query, from the response's
/// `data.stats.querier.store` when the server fills them.
fn store_stats(v: &serde_json::Value) -> Option<(u64, u64)> {
    let st = &v["data"]["stats"]["querier"]["store"];
    Some((
        st["totalChunksRef"].as_u64()?,
        st["totalChunksDownloaded"].as_u64()?,
    ))
}

/// Entries in a `streams` result.
fn entries(v: &serde_json::Value) -> usize {
    v["data"]["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|s| s["values"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0)
}

/// "N read / M skipped" of a query's blocks, or "n/a" when the response has no store stats.
fn blocks(v: &serde_json::Value) -> String {
    match store_stats(v) {
        Some((refs, read)) => format!("{read} read / {} skipped", refs.saturating_sub(read)),
        None => "n/a".into(),
    }
}

/// Starts the server on `data` and returns it with its address once it listens. The store is
/// open by then: an open replays the WAL and seals what it replayed into a segment.
fn serve(config: &std::path::Path, data: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flightdeck"))
        .args(["serve", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--host-metrics", "false"])
        .args(["--log-level", "warn,flightdeck=info"])
        .env("FLIGHTDECK_LOGS_FILES", "false")
        .env("FLIGHTDECK_LOGS_JOURNAL", "false")
        .env("FLIGHTDECK_LOGS_SELF_LOGS", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flightdeck");
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    std::thread::spawn(move || {
        for l in stderr.lines().map_while(Result::ok) {
            if let Some(i) = l.find("address=") {
                let _ = tx.send(
                    l[i + 8..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_string(),
                );
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(600)).expect("address");
    (child, addr)
}

/// Up to 4M lines, bodies are built before the clock starts; above, on the fly.
const PREBUILD_MAX_LINES: usize = 4_000_000;

fn main() {
    let mut a = args();
    if let Some(gb) = a.gb {
        a.lines = (gb * 1e9 / mean_line_len()) as usize;
    }
    let dir = match &a.dir {
        Some(d) => tempfile::Builder::new()
            .prefix("logs-push-")
            .tempdir_in(d)
            .expect("tempdir in --dir"),
        None => tempfile::tempdir().expect("tempdir"),
    };
    let data = dir.path().join("data");
    // The default ingestion rate (4 MB/s per project, as Loki's) would cap the bench.
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        "[logs]\ningestion_rate_mb = 100000\ningestion_burst_size_mb = 100000\n",
    )
    .expect("config");
    let (mut child, addr) = serve(&config, &data);
    let mut token = String::new();
    for l in BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let l = l.expect("line");
        if let Some(t) = l.strip_prefix("admin token: ") {
            token = t.to_string();
            break;
        }
    }
    let base = format!("http://{addr}");
    let pid = child.id();
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64;
    let span_ns = 3_600_000_000_000i64;
    let plan = Plan {
        lines: a.lines,
        batch: a.batch,
        rare: a.rare,
        nginx_only: a.nginx_only,
        start_ns: now_ns - span_ns,
        step_ns: span_ns / a.lines as i64,
    };
    let prebuilt: Option<Vec<(String, usize, usize)>> = (a.lines <= PREBUILD_MAX_LINES)
        .then(|| (0..plan.requests()).map(|b| plan.body(b)).collect());
    let next = AtomicUsize::new(0);
    let raw = AtomicUsize::new(0);
    let rare = AtomicUsize::new(0);
    let me = std::process::id();
    let (cpu0, self0) = (cpu_seconds(pid), cpu_seconds(me));
    let t0 = Instant::now();
    let lat: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..a.writers)
            .map(|_| {
                let (plan, prebuilt, base, token) = (&plan, &prebuilt, &base, &token);
                let (next, raw, rare) = (&next, &raw, &rare);
                s.spawn(move || {
                    let agent = ureq::Agent::new_with_defaults();
                    let mut lat = Vec::new();
                    loop {
                        let b = next.fetch_add(1, Ordering::Relaxed);
                        if b >= plan.requests() {
                            break;
                        }
                        let built;
                        let (body, r, k) = match prebuilt {
                            Some(v) => &v[b],
                            None => {
                                built = plan.body(b);
                                &built
                            }
                        };
                        raw.fetch_add(*r, Ordering::Relaxed);
                        rare.fetch_add(*k, Ordering::Relaxed);
                        let t = Instant::now();
                        let resp = agent
                            .post(&format!("{base}/loki/api/v1/push"))
                            .header("authorization", &format!("Bearer {token}"))
                            .header("content-type", "application/json")
                            .send(body.as_str())
                            .expect("push");
                        assert_eq!(resp.status().as_u16(), 204);
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    lat
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("writer"))
            .collect()
    });
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    // VmHWM only grows: read now, it is the push's peak.
    let push_hwm_mib = proc_field(pid, "status", "VmHWM:") / 1024.0;
    let bench_cpu = cpu_seconds(me) - self0;
    drop(prebuilt);
    let (raw, rare) = (raw.into_inner(), rare.into_inner());
    let mut lat = lat;
    let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
    let agent = ureq::Agent::new_with_defaults();
    let query = |q: &str, step: &str| -> (f64, serde_json::Value) {
        let t = Instant::now();
        let mut r = agent
            .get(&format!("{base}/loki/api/v1/query_range"))
            .header("authorization", &format!("Bearer {token}"))
            .query("query", q)
            .query("start", (now_ns - span_ns).to_string())
            .query("end", (now_ns + 1).to_string())
            .query("limit", "100")
            .query("step", step)
            .config()
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .call()
            .expect("query");
        let body = r.body_mut().read_to_string().expect("body");
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        (
            ms,
            serde_json::from_str(&body).expect("query response is JSON"),
        )
    };
    let (rare_ms, rare_v) = query(&format!(r#"{{job=~".+"}} |= "{RARE}""#), "60");
    let found = entries(&rare_v);
    assert_eq!(found, rare, "|= rare token: {rare_v}");
    // A regex filter gives the store no substring to test blooms with: every block of
    // the range is decompressed and every line matched.
    let (full_ms, full_v) = query(&format!(r#"{{job=~".+"}} |~ "{RARE}""#), "60");
    assert_eq!(entries(&full_v), rare, "|~ rare token: {full_v}");
    let (scan_ms, scan_v) = query(&format!(r#"{{job=~".+"}} |= "{ABSENT}""#), "60");
    assert_eq!(entries(&scan_v), 0, "{scan_v}");
    let (agg_ms, agg_v) = query(r#"sum by (status) (rate({job="nginx"} | json [5m]))"#, "60");
    assert!(
        agg_v["data"]["result"]
            .as_array()
            .is_some_and(|r| r.iter().any(|s| s["metric"]["status"] == "200")),
        "{agg_v}"
    );
    let hwm_mib = proc_field(pid, "status", "VmHWM:") / 1024.0;
    let rss_mib = proc_field(pid, "status", "VmRSS:") / 1024.0;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    // A stop leaves the unflushed heads in the WAL (up to 256 MiB of lines); the next open
    // replays them and seals them into a segment. So: stop, start again, stop, and only then
    // weigh the segments, which now hold every line.
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();
    let (mut again, _) = serve(&config, &data);
    let _ = Command::new("kill").arg(again.id().to_string()).status();
    let _ = again.wait();
    let disk = dir_bytes(&data.join("logs").join("p"));
    let index = index_bytes(&data.join("logs").join("p"));
    let mb = raw as f64 / 1e6;
    let gbps = |ms: f64| mb / 1000.0 / (ms / 1000.0);
    let row = format!(
        "| {} lines{} ({:.2} GB raw), {} writers × {}/request, bodies {} | {:.0} s | {:.0} | {:.1} | {:.1} / {:.1} | {:.2} | {:.0} % | {:.1} ({:.1} GB/s; {found}/{rare} found; {}) | {:.1} ({:.1} GB/s; {}) | {:.1} ({:.2} GB/s; {}) | {:.1} | {:.0} / {:.0} | {:.0} | {:.1}× ({:.0} % index) | {} |",
        a.lines,
        if a.nginx_only { " of nginx only" } else { "" },
        mb / 1000.0,
        a.writers,
        a.batch,
        if a.lines <= PREBUILD_MAX_LINES {
            "prebuilt"
        } else {
            "on the fly"
        },
        wall,
        a.lines as f64 / wall,
        mb / wall,
        p50,
        p99,
        cpu / (a.lines as f64 / 1e6),
        bench_cpu / wall * 100.0,
        rare_ms,
        gbps(rare_ms),
        blocks(&rare_v),
        scan_ms,
        gbps(scan_ms),
        blocks(&scan_v),
        full_ms,
        gbps(full_ms),
        blocks(&full_v),
        agg_ms,
        push_hwm_mib,
        hwm_mib,
        rss_mib,
        raw as f64 / disk.max(1) as f64,
        index as f64 * 100.0 / disk.max(1) as f64,
        load.join(" "),
    );
    if a.keep {
        eprintln!("data kept in {}", dir.keep().display());
    }
    let head = "| run | push wall | lines/s | MB/s | push p50 / p99 (ms) | server CPU s per 1M lines | bench process CPU (generator + clients) | `|= rare` over 1 h, ms | `|= absent` over 1 h, ms | `|~ rare` over 1 h (no bloom), ms | `sum by (status)(rate(… \\| json [5m]))` 1 h @ 1 m, ms | peak RSS MiB: push / whole run | RSS after queries MiB | compression | load avg after |\n|---|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|---:|---:|---|";
    println!("{head}\n{row}");
    if let Some(f) = &a.out {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f)
            .expect("--out file");
        writeln!(f, "{row}").expect("write");
    }
}
