//! Log ingest and query over HTTP, end to end: the release binary in a child process on a
//! fresh data directory, `--writers` threads (default 8) pushing Loki JSON (`--batch` lines
//! per request, default 1000) over keep-alive connections with the admin token, every push
//! acknowledged only once durable. The lines are a realistic mix generated up front
//! (seeded): nginx access logs in JSON (job `nginx`, 60 %), JSON application logs (job
//! `app`, 25 %) and logfmt (job `api`, 15 %), over 4 hosts, spread over the last hour.
//!
//! Reported: lines/s and MB/s of the push (acks inside the wall time), request latency
//! p50/p99, server CPU seconds per million lines, then through `/loki/api/v1/query_range`
//! the time of `{job=~".+"} |= "<absent token>"` over the hour (raw GB/s scanned or
//! skipped) and of `sum by (status) (rate({job="nginx"} | json [5m]))` (1 h, 1 m steps),
//! the server's peak RSS (VmHWM), and after a clean stop (which seals every head into
//! segments) the bytes of the segments (`data/logs/p`) against the raw line bytes
//! (compression ratio; label index, blooms and framing included).
//!
//! The project's ingestion rate limit is lifted for the run (a config file beside the data).
//!
//! Run: `cargo bench -p flightdeck --bench logs_push [-- --lines 2000000 --writers 8
//! --batch 1000] [--out FILE]`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Args {
    lines: usize,
    writers: usize,
    batch: usize,
    out: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        lines: 2_000_000,
        writers: 8,
        batch: 1000,
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

/// xorshift64*: a small seeded generator, so every run pushes the same lines.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Skewed towards small values (popular IPs, routes).
    fn skewed(&mut self, n: u64) -> u64 {
        let a = self.below(n);
        self.below(a + 1)
    }
}

const ROUTES: [&str; 12] = [
    "/",
    "/api/v1/cart",
    "/api/v1/items",
    "/api/v1/items/{id}",
    "/api/v1/users/{id}",
    "/login",
    "/logout",
    "/static/app.js",
    "/static/app.css",
    "/healthz",
    "/search",
    "/api/v1/orders/{id}",
];
const AGENTS: [&str; 5] = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "curl/8.5.0",
    "Go-http-client/1.1",
    "Prometheus/2.42.0",
];

/// One line of job `job`, and the job.
fn line(r: &mut Rng, i: usize) -> (&'static str, String) {
    match r.below(100) {
        0..=59 => {
            let status = match r.below(100) {
                0..=84 => 200,
                85..=89 => 304,
                90..=94 => 404,
                95..=97 => 500,
                _ => 503,
            };
            let route = ROUTES[r.skewed(ROUTES.len() as u64) as usize]
                .replace("{id}", &r.skewed(5000).to_string());
            (
                "nginx",
                format!(
                    r#"{{"remote_addr":"10.{}.{}.{}","method":"{}","uri":"{route}","status":{status},"body_bytes_sent":{},"request_time":{:.3},"http_user_agent":"{}"}}"#,
                    r.skewed(4),
                    r.skewed(64),
                    r.skewed(250),
                    if r.below(10) < 8 { "GET" } else { "POST" },
                    200 + r.skewed(40_000),
                    r.skewed(2000) as f64 / 1000.0,
                    AGENTS[r.skewed(AGENTS.len() as u64) as usize],
                ),
            )
        }
        60..=84 => (
            "app",
            format!(
                r#"{{"level":"{}","logger":"orders.service","msg":"order {} processed","user_id":{},"duration_ms":{},"trace_id":"{:016x}{:016x}"}}"#,
                ["info", "info", "info", "warn", "error"][r.below(5) as usize],
                100_000 + i,
                r.skewed(20_000),
                r.skewed(900),
                r.next(),
                r.next()
            ),
        ),
        _ => (
            "api",
            format!(
                "level={} caller=handler.go:{} method={} path={} status={} duration={}ms request_id={:016x}",
                ["debug", "info", "info", "warn"][r.below(4) as usize],
                80 + r.below(40),
                if r.below(2) == 0 { "GET" } else { "PUT" },
                ROUTES[r.skewed(ROUTES.len() as u64) as usize],
                [200, 200, 200, 201, 400, 500][r.below(6) as usize],
                r.skewed(1500),
                r.next()
            ),
        ),
    }
}

fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Push bodies (Loki JSON) and the raw bytes of their lines.
fn bodies(a: &Args, now_ns: i64) -> (Vec<String>, usize) {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let span_ns = 3_600_000_000_000i64;
    let step = span_ns / a.lines as i64;
    let mut out = Vec::new();
    let mut raw = 0usize;
    let mut i = 0usize;
    while i < a.lines {
        let n = a.batch.min(a.lines - i);
        // Per request, one stream per (job, host).
        let mut streams: std::collections::BTreeMap<(&str, u64), Vec<String>> = Default::default();
        for k in 0..n {
            let (job, l) = line(&mut r, i + k);
            raw += l.len();
            let ts = now_ns - span_ns + (i + k) as i64 * step;
            streams
                .entry((job, (i + k) as u64 % 4))
                .or_default()
                .push(format!("[\"{ts}\",{}]", quote(&l)));
        }
        let parts: Vec<String> = streams
            .into_iter()
            .map(|((job, host), values)| {
                format!(
                    r#"{{"stream":{{"job":"{job}","host":"host-{host}","env":"prod"}},"values":[{}]}}"#,
                    values.join(",")
                )
            })
            .collect();
        out.push(format!(r#"{{"streams":[{}]}}"#, parts.join(",")));
        i += n;
    }
    (out, raw)
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

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

fn main() {
    let a = args();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // The default ingestion rate (4 MB/s per project, as Loki's) would cap the bench.
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        "[logs]\ningestion_rate_mb = 100000\ningestion_burst_size_mb = 100000\n",
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_flightdeck"))
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0", "--host-metrics", "false"])
        .args(["--log-level", "warn,flightdeck=info"])
        .env("FLIGHTDECK_LOGS_FILES", "false")
        .env("FLIGHTDECK_LOGS_JOURNAL", "false")
        .env("FLIGHTDECK_LOGS_SELF_LOGS", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flightdeck");
    let mut token = String::new();
    for l in BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let l = l.expect("line");
        if let Some(t) = l.strip_prefix("admin token: ") {
            token = t.to_string();
            break;
        }
    }
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
    let addr = rx.recv_timeout(Duration::from_secs(60)).expect("address");
    let base = format!("http://{addr}");
    let pid = child.id();
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64;
    let (bodies, raw) = bodies(&a, now_ns);
    let queue = std::sync::Mutex::new(bodies.iter().collect::<Vec<_>>());
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let lat: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..a.writers)
            .map(|_| {
                let (queue, base, token) = (&queue, &base, &token);
                s.spawn(move || {
                    let agent = ureq::Agent::new_with_defaults();
                    let mut lat = Vec::new();
                    loop {
                        let Some(b) = queue.lock().expect("queue").pop() else {
                            break;
                        };
                        let t = Instant::now();
                        let r = agent
                            .post(&format!("{base}/loki/api/v1/push"))
                            .header("authorization", &format!("Bearer {token}"))
                            .header("content-type", "application/json")
                            .send(b.as_str())
                            .expect("push");
                        assert_eq!(r.status().as_u16(), 204);
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
    let mut lat = lat;
    let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
    let agent = ureq::Agent::new_with_defaults();
    let query = |q: &str, step: &str| -> (f64, String) {
        let t = Instant::now();
        let mut r = agent
            .get(&format!("{base}/loki/api/v1/query_range"))
            .header("authorization", &format!("Bearer {token}"))
            .query("query", q)
            .query("start", (now_ns - 3_600_000_000_000).to_string())
            .query("end", (now_ns + 1).to_string())
            .query("limit", "100")
            .query("step", step)
            .call()
            .expect("query");
        let body = r.body_mut().read_to_string().expect("body");
        (t.elapsed().as_secs_f64() * 1000.0, body)
    };
    let (scan_ms, scan_body) = query(r#"{job=~".+"} |= "token-that-is-nowhere""#, "60");
    assert!(scan_body.contains("\"result\":[]"), "{scan_body}");
    let (agg_ms, agg_body) = query(r#"sum by (status) (rate({job="nginx"} | json [5m]))"#, "60");
    assert!(agg_body.contains("\"status\":\"200\""), "{agg_body}");
    let hwm_mib = proc_field(pid, "status", "VmHWM:") / 1024.0;
    // A clean stop seals every head into segments.
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();
    // Segments only: the WAL is truncated at the next flush, not at a stop.
    let disk = dir_bytes(&data.join("logs").join("p"));
    let mb = raw as f64 / 1e6;
    let row = format!(
        "| {} lines, {} writers × {}/request | {:.0} | {:.1} | {:.1} / {:.1} | {:.2} | {:.1} ({:.1} GB/s) | {:.1} | {:.0} | {:.1}× |",
        a.lines,
        a.writers,
        a.batch,
        a.lines as f64 / wall,
        mb / wall,
        p50,
        p99,
        cpu / (a.lines as f64 / 1e6),
        scan_ms,
        mb / 1000.0 / (scan_ms / 1000.0),
        agg_ms,
        hwm_mib,
        raw as f64 / disk.max(1) as f64,
    );
    let head = "| run | lines/s | MB/s | push p50 / p99 (ms) | server CPU s per 1M lines | `|= absent` over 1 h, ms | `sum by (status)(rate(… \\| json [5m]))` 1 h @ 1 m, ms | peak RSS MiB | compression |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|";
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
