//! Log store benchmark: compression (zstd level and bloom size vs ratio
//! and speed), durable append throughput from concurrent writers, and a
//! rare-token substring scan over about 1 GB of raw logs, with peak RSS.
//!
//! `cargo bench -p logstore` — knobs in the environment: `WRITERS` (8),
//! `APPEND_LINES` (2000000), `BATCH` lines per append (500), `SCAN_MB`
//! raw MB stored before the scan (1024), `STUDY_MB` raw MB per log kind in
//! the compression study (32), `DIR` (a temporary directory).
//!
//! The lines are synthetic but shaped like real ones: nginx combined
//! access logs (5,000 client IPs with a skewed popularity, ~40 route
//! templates with numeric ids, 20 user agents, weighted status codes,
//! sizes, latencies), JSON application logs (levels, loggers, messages,
//! ids, durations, 128-bit trace ids) and logfmt lines (request ids).

use std::sync::Arc;
use std::time::Instant;

use logstore::{Direction, Entry, Options, Query, Store, StreamBatch, block};
use model::{Labels, Matcher};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const UAS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.43 Mobile Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "curl/8.4.0",
    "python-requests/2.31.0",
    "Go-http-client/1.1",
    "Prometheus/2.48.0",
    "kube-probe/1.28",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36 Edg/119.0.2151.97",
    "okhttp/4.12.0",
    "Apache-HttpClient/4.5.14 (Java/17.0.9)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
    "axios/1.6.2",
    "Wget/1.21.4",
];
const ROUTES: &[&str] = &[
    "/",
    "/login",
    "/logout",
    "/healthz",
    "/metrics",
    "/favicon.ico",
    "/robots.txt",
    "/api/v1/users/{}",
    "/api/v1/users/{}/orders",
    "/api/v1/orders/{}",
    "/api/v1/orders/{}/items",
    "/api/v1/products/{}",
    "/api/v1/products?page={}",
    "/api/v1/search?q=item{}",
    "/api/v1/cart",
    "/api/v1/cart/items/{}",
    "/api/v2/inventory/{}",
    "/static/js/app.{}.js",
    "/static/css/main.{}.css",
    "/static/img/p{}.webp",
    "/products/{}",
    "/category/{}",
    "/checkout",
    "/account/settings",
    "/api/v1/sessions",
    "/api/v1/notifications?since={}",
    "/ws/updates",
    "/graphql",
];
const STATUS: &[(u16, u32)] = &[
    (200, 780),
    (304, 60),
    (301, 30),
    (404, 60),
    (401, 20),
    (500, 15),
    (502, 10),
    (201, 25),
];
const MONTHS: &[&str] = &[
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const LOGGERS: &[&str] = &[
    "api.orders",
    "api.users",
    "worker.email",
    "db.pool",
    "cache",
    "auth",
    "billing.invoices",
];
const MSGS: &[&str] = &[
    "order created",
    "user logged in",
    "cache miss",
    "payment authorised",
    "retrying request",
    "connection acquired",
    "slow query",
    "email sent",
    "token refreshed",
    "invoice generated",
];

struct Gen {
    rng: StdRng,
    ips: Vec<String>,
    t: i64,
}

fn civil(ts_ns: i64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let secs = ts_ns.div_euclid(1_000_000_000);
    let ms = (ts_ns.rem_euclid(1_000_000_000) / 1_000_000) as u32;
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400) as u32;
    let (y, m, d) = model::civil::civil_from_days(days);
    (y, m, d, sod / 3600, sod / 60 % 60, sod % 60, ms)
}

impl Gen {
    fn new(seed: u64) -> Gen {
        let mut rng = StdRng::seed_from_u64(seed);
        let ips = (0..5000)
            .map(|_| {
                format!(
                    "{}.{}.{}.{}",
                    [10, 172, 192, 81, 93, 185][rng.random_range(0..6)],
                    rng.random_range(0..256),
                    rng.random_range(0..256),
                    rng.random_range(1..255)
                )
            })
            .collect();
        Gen {
            rng,
            ips,
            t: 1_764_000_000_000_000_000,
        }
    }

    fn tick(&mut self) -> i64 {
        self.t += self.rng.random_range(0..2_000_000);
        self.t
    }

    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from_digit(self.rng.random_range(0..16), 16).unwrap())
            .collect()
    }

    fn nginx(&mut self) -> String {
        let t = self.tick();
        let (y, mo, d, h, mi, s, _) = civil(t);
        // Skewed popularity: a few clients send most requests.
        let u: f64 = self.rng.random();
        let ip = &self.ips[(u * u * u * self.ips.len() as f64) as usize];
        let route = ROUTES[(self.rng.random::<f64>().powi(2) * ROUTES.len() as f64) as usize];
        // Resource ids are Zipf-like: popular products and users recur.
        let u: f64 = self.rng.random();
        let id = (100_000f64.powf(u * u) as u64).max(1);
        let path = route.replace("{}", &id.to_string());
        let mut pick = self.rng.random_range(0..1000);
        let status = STATUS.iter().find(|(_, w)| {
            let hit = pick < *w;
            pick = pick.saturating_sub(*w);
            hit
        });
        let status = status.map_or(200, |x| x.0);
        let method = if self.rng.random_bool(0.85) {
            "GET"
        } else {
            ["POST", "PUT", "DELETE"][self.rng.random_range(0..3)]
        };
        // A resource's size is mostly its own (static files, cached pages);
        // dynamic routes vary a little.
        let bytes = match status {
            304 => 0,
            200 | 201 => {
                let base = 120 + (id.wrapping_mul(2_654_435_761) ^ route.len() as u64) % 48_000;
                if route.starts_with("/api") {
                    base + self.rng.random_range(0..64)
                } else {
                    base
                }
            }
            _ => [153, 162, 548, 0][self.rng.random_range(0..4)],
        };
        let referer = if self.rng.random_bool(0.6) {
            "-".to_string()
        } else {
            format!(
                "https://shop.example.com{}",
                ROUTES[self.rng.random_range(0..ROUTES.len())].replace("{}", "1")
            )
        };
        let ua = UAS[(self.rng.random::<f64>().powi(2) * UAS.len() as f64) as usize];
        let rt = self.rng.random_range(0.0005f64..0.05).powf(1.0)
            * if self.rng.random_bool(0.02) {
                40.0
            } else {
                1.0
            };
        format!(
            "{ip} - - [{d:02}/{}/{y}:{h:02}:{mi:02}:{s:02} +0000] \"{method} {path} HTTP/1.1\" {status} {bytes} \"{referer}\" \"{ua}\" {rt:.3}",
            MONTHS[(mo - 1) as usize]
        )
    }

    fn json(&mut self) -> String {
        let t = self.tick();
        let (y, mo, d, h, mi, s, ms) = civil(t);
        let level = ["info", "info", "info", "debug", "warn", "error"][self.rng.random_range(0..6)];
        let logger = LOGGERS[self.rng.random_range(0..LOGGERS.len())];
        let msg = MSGS[self.rng.random_range(0..MSGS.len())];
        let trace = self.hex(32);
        format!(
            "{{\"time\":\"{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z\",\"level\":\"{level}\",\"logger\":\"{logger}\",\"msg\":\"{msg}\",\"user_id\":\"u-{}\",\"order_id\":{},\"duration_ms\":{:.2},\"trace_id\":\"{trace}\"}}",
            self.rng.random_range(1..20_000),
            self.rng.random_range(100_000..999_999),
            self.rng.random_range(0.1f64..250.0)
        )
    }

    fn logfmt(&mut self) -> String {
        let t = self.tick();
        let (y, mo, d, h, mi, s, ms) = civil(t);
        let level = ["info", "info", "debug", "warn", "error"][self.rng.random_range(0..5)];
        let route = ROUTES[self.rng.random_range(7..17)].replace("{}", ":id");
        let rid = self.hex(16);
        format!(
            "time={y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z level={level} caller=server.go:{} msg=\"request served\" method=GET path={route} status={} duration={:.1}ms request_id={rid}",
            self.rng.random_range(80..400),
            [200, 200, 200, 404, 500][self.rng.random_range(0..5)],
            self.rng.random_range(0.2f64..300.0)
        )
    }

    fn kind(&mut self, k: usize) -> String {
        match k {
            0 => self.nginx(),
            1 => self.json(),
            _ => self.logfmt(),
        }
    }

    /// The mix: 60 % nginx, 25 % JSON, 15 % logfmt.
    fn mixed_kind(&mut self) -> usize {
        match self.rng.random_range(0..100) {
            0..60 => 0,
            60..85 => 1,
            _ => 2,
        }
    }
}

fn peak_rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn compression_study(study_mb: usize) {
    println!(
        "\n## Compression (block = {} KiB of lines, {study_mb} MB raw per kind)\n",
        env("BLOCK_KB", 1024)
    );
    println!(
        "| kind | zstd level | ratio (data) | ratio (data + bloom 2 b/tri) | compress MB/s | decompress MB/s |"
    );
    println!("|---|---|---|---|---|---|");
    let mut g = Gen::new(1);
    let kinds = ["nginx", "json", "logfmt", "mix"];
    let mut sets: Vec<Vec<String>> = Vec::new();
    for k in 0..4 {
        let mut lines = Vec::new();
        let mut bytes = 0;
        while bytes < study_mb << 20 {
            let kk = if k == 3 { g.mixed_kind() } else { k };
            let l = g.kind(kk);
            bytes += l.len();
            lines.push(l);
        }
        sets.push(lines);
    }
    let block_bytes = env("BLOCK_KB", 1024) << 10;
    let blocks_of = |lines: &[String], level: i32, bits: u32| {
        let mut out = Vec::new();
        let mut cur = Vec::new();
        let mut cur_bytes = 0;
        for (i, l) in lines.iter().enumerate() {
            cur_bytes += l.len();
            cur.push(Entry::new(i as i64, l.clone()));
            if cur_bytes >= block_bytes {
                out.push(block::build(&cur, level, bits));
                cur.clear();
                cur_bytes = 0;
            }
        }
        if !cur.is_empty() {
            out.push(block::build(&cur, level, bits));
        }
        out
    };
    for (k, lines) in sets.iter().enumerate() {
        let raw: usize = lines.iter().map(|l| l.len()).sum();
        for level in [1, 3, 6, 9, 19] {
            let t = Instant::now();
            let blocks = blocks_of(lines, level, 2);
            let ct = t.elapsed().as_secs_f64();
            let data: usize = blocks.iter().map(|b| b.data.len()).sum();
            let bloom: usize = blocks.iter().map(|b| b.meta.bloom.byte_len()).sum();
            let t = Instant::now();
            for b in &blocks {
                let d = block::decode(&b.data, &b.meta).unwrap();
                assert_eq!(d.len(), b.meta.entries as usize);
            }
            let dt = t.elapsed().as_secs_f64();
            println!(
                "| {} | {level} | {:.1}x | {:.1}x | {:.0} | {:.0} |",
                kinds[k],
                raw as f64 / data as f64,
                raw as f64 / (data + bloom) as f64,
                raw as f64 / 1e6 / ct,
                raw as f64 / 1e6 / dt
            );
        }
    }
    println!("\n## Trigram bloom: size cost and skip rate (zstd 9)\n");
    println!(
        "Skip rate = share of blocks a needle absent from the data lets a query skip; 200 random needles per length.\n"
    );
    println!(
        "| kind | bits/trigram | bloom / compressed data | skip, 6-byte needles | skip, 10-byte | skip, 16-byte | skip, an IP present in some blocks |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut rng = StdRng::seed_from_u64(7);
    for (k, lines) in sets.iter().enumerate() {
        for bits in [1, 2, 4, 8] {
            let blocks = blocks_of(lines, 9, bits);
            let data: usize = blocks.iter().map(|b| b.data.len()).sum();
            let bloom: usize = blocks.iter().map(|b| b.meta.bloom.byte_len()).sum();
            let mut cells = Vec::new();
            for len in [6, 10, 16] {
                let mut skipped = 0usize;
                let mut total = 0usize;
                for _ in 0..200 {
                    // Realistic alphabet (lowercase and digits): absent ids.
                    let needle: Vec<u8> = (0..len)
                        .map(|_| b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)])
                        .collect();
                    for b in &blocks {
                        total += 1;
                        skipped += usize::from(!b.meta.bloom.may_contain(&needle));
                    }
                }
                cells.push(format!("{:.1} %", 100.0 * skipped as f64 / total as f64));
            }
            let ip = if k == 1 || k == 2 {
                "u-4242\"".to_string()
            } else {
                format!("{} - -", g.ips[1234])
            };
            let skipped = blocks
                .iter()
                .filter(|b| !b.meta.bloom.may_contain(ip.as_bytes()))
                .count();
            let present = blocks
                .iter()
                .filter(|b| {
                    let d = block::decode(&b.data, &b.meta).unwrap();
                    !d.matching(&[ip.as_bytes()]).is_empty()
                })
                .count();
            println!(
                "| {} | {bits} | {:.1} % | {} | {} | {} | {:.1} % ({} of {} blocks hold it) |",
                kinds[k],
                100.0 * bloom as f64 / data as f64,
                cells[0],
                cells[1],
                cells[2],
                100.0 * skipped as f64 / blocks.len() as f64,
                present,
                blocks.len()
            );
        }
    }
}

/// Pre-generated lines, per stream, shared by the writers.
struct Corpus {
    streams: Vec<(Labels, usize)>,
    lines: Vec<Vec<String>>,
}

fn corpus(n_per_stream: usize) -> Corpus {
    let mut streams = Vec::new();
    for h in 0..4 {
        streams.push((
            Labels::from_pairs([("job", "nginx"), ("host", &format!("web-{h}"))]),
            0,
        ));
    }
    for svc in ["orders", "users", "billing"] {
        streams.push((Labels::from_pairs([("job", "api"), ("service", svc)]), 1));
    }
    for svc in ["gateway", "auth"] {
        streams.push((Labels::from_pairs([("job", "edge"), ("service", svc)]), 2));
    }
    let mut g = Gen::new(2);
    let lines = streams
        .iter()
        .map(|(_, k)| (0..n_per_stream).map(|_| g.kind(*k)).collect())
        .collect();
    Corpus { streams, lines }
}

fn append_bench(
    store: &Arc<Store>,
    c: &Arc<Corpus>,
    writers: usize,
    total: usize,
    batch: usize,
    ts0: i64,
) -> (f64, f64, usize) {
    let per_writer = total / writers;
    let t = Instant::now();
    let hs: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            let c = c.clone();
            std::thread::spawn(move || {
                let mut done = 0usize;
                let mut bytes = 0usize;
                let mut i = w * 7919;
                while done < per_writer {
                    // One stream per append, like one Loki stream in a push.
                    let s = (w + done / batch) % c.streams.len();
                    let pool = &c.lines[s];
                    let entries: Vec<Entry> = (0..batch)
                        .map(|j| {
                            let l = &pool[(i + j) % pool.len()];
                            bytes += l.len();
                            Entry::new(ts0 + ((done + j) * writers + w) as i64 * 1000, l.clone())
                        })
                        .collect();
                    i += batch;
                    store
                        .append(
                            "bench",
                            &[StreamBatch {
                                labels: c.streams[s].0.clone(),
                                entries,
                            }],
                        )
                        .unwrap();
                    done += batch;
                }
                (done, bytes)
            })
        })
        .collect();
    let (mut lines, mut bytes) = (0, 0);
    for h in hs {
        let (l, b) = h.join().unwrap();
        lines += l;
        bytes += b;
    }
    let secs = t.elapsed().as_secs_f64();
    (lines as f64 / secs, bytes as f64 / 1e6 / secs, bytes)
}

fn main() {
    let writers = env("WRITERS", 8);
    let total = env("APPEND_LINES", 2_000_000);
    let batch = env("BATCH", 500);
    let scan_mb = env("SCAN_MB", 1024);
    let study_mb = env("STUDY_MB", 32);
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir =
        std::env::var("DIR").map_or_else(|_| tmp.path().to_path_buf(), std::path::PathBuf::from);
    println!("# logstore bench\n");
    compression_study(study_mb);
    println!(
        "\nPeak RSS after the compression study: {:.0} MB",
        peak_rss_mb()
    );

    // Distinct lines per stream: 9 streams × 60k ≈ 540k lines (≈ 120 MB),
    // cycled by the writers.
    let c = Arc::new(corpus(60_000));
    let store = Arc::new(Store::open(&dir, Options::default()).unwrap());
    let syncs0 = store.wal_syncs();
    let (lps, mbps, bytes) = append_bench(&store, &c, writers, total, batch, 0);
    let syncs = store.wal_syncs() - syncs0;
    println!("\n## Durable append\n");
    println!(
        "{writers} writers, {batch} lines per append (one stream), every append acknowledged after its WAL fdatasync (group commit).\n"
    );
    println!("| lines | raw MB | lines/s | MB/s | group commits | appends per commit |");
    println!("|---|---|---|---|---|---|");
    let appends = total / batch;
    println!(
        "| {total} | {:.0} | {lps:.0} | {mbps:.1} | {syncs} | {:.1} |",
        bytes as f64 / 1e6,
        appends as f64 / syncs.max(1) as f64
    );
    println!(
        "\nPeak RSS after append (includes the ~120 MB corpus): {:.0} MB",
        peak_rss_mb()
    );

    // Fill up to SCAN_MB of raw lines, with a rare token in 5 lines.
    let mut stored = bytes;
    let mut ts = (total as i64 + 1) * 1000 * writers as i64;
    while stored < scan_mb << 20 {
        let (_, _, b) = append_bench(&store, &c, 2, 400_000, 1000, ts);
        stored += b;
        ts += 400_000 * 1000 * 2 + 1000;
    }
    for k in 0..5 {
        let s = &c.streams[k % c.streams.len()].0;
        let line = format!(
            "10.9.8.7 - - GET /api/v1/users/42 HTTP/1.1 500 0 - - rare-token-q7zx{k} 0.001"
        );
        store
            .append(
                "bench",
                &[StreamBatch {
                    labels: s.clone(),
                    entries: vec![Entry::new(ts / 3 * (k as i64 + 1) / 2, line)],
                }],
            )
            .unwrap();
    }
    store.flush().unwrap();
    let (seg_bytes, _) = store.disk_bytes();
    println!(
        "\n## Scan of {:.2} GB raw ({:.0} MB of segments on disk, ratio {:.1}x)\n",
        stored as f64 / 1e9,
        seg_bytes as f64 / 1e6,
        stored as f64 / seg_bytes as f64
    );
    println!(
        "| query | matches | blocks read | blocks skipped | ms | GB/s of raw logs scanned or skipped |"
    );
    println!("|---|---|---|---|---|---|");
    let all: Vec<Matcher> = vec![];
    for (name, needle) in [
        ("|= \"rare-token-q7zx3\"", &b"rare-token-q7zx3"[..]),
        ("|= \"10.9.8.7\" (rare IP)", &b"10.9.8.7"[..]),
        (
            "|= \"zq\" (2 bytes: no bloom help, full decompress + memmem)",
            &b"zq"[..],
        ),
    ] {
        let t = Instant::now();
        let req = [needle];
        let q = Query {
            matchers: &all,
            start: i64::MIN,
            end: i64::MAX,
            direction: Direction::Backward,
            limit: 0,
            required: &req,
        };
        let mut read = 0;
        let mut skipped = 0;
        let mut n = 0;
        for (_, mut it) in store.select("bench", &q) {
            for e in it.by_ref() {
                e.unwrap();
                n += 1;
            }
            read += it.blocks_read();
            skipped += it.blocks_skipped();
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "| `{name}` | {n} | {read} | {skipped} | {:.2} | {:.1} |",
            secs * 1e3,
            stored as f64 / 1e9 / secs
        );
    }
    println!("\nPeak RSS at the end: {:.0} MB", peak_rss_mb());
    store.close().unwrap();
}
