//! Ingest benchmark: node-exporter-like series appended in-process by
//! concurrent writers, every append fsynced (group commit), then a flush.
//!
//! `cargo bench -p tsdb --bench ingest` — knobs in the environment:
//! `SERIES` (100000), `SAMPLES` per series (120), `WRITERS` (16),
//! `BATCH` series per append (one sample each; default 10000 or the writer's
//! share of the series if smaller: each writer owns a disjoint share, as the
//! 16 shards × 10000-sample requests of `shared/bench`'s load generator do),
//! `DIR` (a temporary directory).
//!
//! Prints samples/s, fsyncs, RSS per series (peak, and the growth during
//! ingest), bytes per sample on disk after the flush (`du -sb`-style: all
//! files under the store), and a breakdown by value kind of the chunk bytes.
//! The values follow what node_exporter exposes: counters with decimal
//! increments, quantised gauges, constants, and full-entropy floats.

use std::sync::Arc;
use std::time::Instant;

use model::{Labels, Sample, TimeSeries, WriteBatch};
use tsdb::{Db, Options};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn f(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy)]
enum Kind {
    /// Monotonic, increments around `rate` per scrape, `dec` decimals.
    Counter {
        rate: f64,
        dec: i32,
    },
    /// Random walk in [lo, hi], quantised to `q`.
    Gauge {
        lo: f64,
        hi: f64,
        q: f64,
    },
    Const,
    /// A fresh value every scrape (durations, timestamps with fractions).
    Noise,
}

struct Gen {
    kind: Kind,
    v: f64,
}

impl Gen {
    fn step(&mut self, r: &mut Rng) -> f64 {
        match self.kind {
            Kind::Counter { rate, dec } => {
                self.v += rate * (0.5 + r.f());
                let p = 10f64.powi(dec);
                (self.v * p).floor() / p
            }
            Kind::Gauge { lo, hi, q } => {
                self.v = (self.v + (hi - lo) * 0.02 * (r.f() - 0.5)).clamp(lo, hi);
                (self.v / q).round() * q
            }
            Kind::Const => self.v,
            Kind::Noise => r.f() * 0.1 * 10f64.powi((r.next() % 4) as i32),
        }
    }
}

fn make_series(n: usize, r: &mut Rng) -> Vec<(Labels, Gen)> {
    let modes = [
        "idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice",
    ];
    let mut out = Vec::with_capacity(n);
    let per_host = 750;
    for i in 0..n {
        let host = i / per_host;
        let j = i % per_host;
        let inst = format!("host-{host:05}:9100");
        let (name, extra, kind): (String, Vec<(&str, String)>, Kind) = match j {
            0..=255 => (
                "node_cpu_seconds_total".into(),
                vec![
                    ("cpu", (j / 8).to_string()),
                    ("mode", modes[j % 8].to_string()),
                ],
                Kind::Counter {
                    rate: 15.0 * r.f(),
                    dec: 2,
                },
            ),
            256..=399 => (
                format!(
                    "node_network_{}_total",
                    [
                        "receive_bytes",
                        "transmit_bytes",
                        "receive_packets",
                        "transmit_packets"
                    ][j % 4]
                ),
                vec![("device", format!("eth{}", (j - 256) / 4))],
                Kind::Counter {
                    rate: 1e5 * r.f(),
                    dec: 0,
                },
            ),
            400..=499 => (
                format!(
                    "node_memory_{}_bytes",
                    ["MemAvailable", "Cached", "Buffers", "Active", "Inactive"][j % 5]
                ),
                vec![("slot", ((j - 400) / 5).to_string())],
                Kind::Gauge {
                    lo: 1e9,
                    hi: 8e9,
                    q: 4096.0,
                },
            ),
            500..=599 => (
                format!(
                    "node_filesystem_{}_bytes",
                    ["avail", "size", "free", "files"][j % 4]
                ),
                vec![
                    ("mountpoint", format!("/mnt/{}", (j - 500) / 4)),
                    ("device", format!("sd{}", (j - 500) / 4)),
                ],
                if j % 4 == 1 {
                    Kind::Const
                } else {
                    Kind::Gauge {
                        lo: 1e10,
                        hi: 1e11,
                        q: 4096.0,
                    }
                },
            ),
            600..=679 => (
                format!("node_info_{}", j % 16),
                vec![("k", (j - 600).to_string())],
                Kind::Const,
            ),
            680..=719 => (
                "node_load1".to_string(),
                vec![("n", (j - 680).to_string())],
                Kind::Gauge {
                    lo: 0.0,
                    hi: 8.0,
                    q: 0.01,
                },
            ),
            _ => (
                "http_request_duration_seconds".to_string(),
                vec![("handler", format!("/api/{}", j - 720))],
                Kind::Noise,
            ),
        };
        let mut pairs: Vec<(&str, String)> = vec![
            ("__name__", name),
            ("instance", inst),
            ("job", "node".into()),
            ("region", format!("r{}", host % 4)),
        ];
        pairs.extend(extra);
        let v = match kind {
            Kind::Counter { rate, .. } => rate * 1e4 * r.f(),
            Kind::Gauge { lo, hi, .. } => lo + (hi - lo) * r.f(),
            Kind::Const => (r.next() % 1_000_000) as f64,
            Kind::Noise => 0.0,
        };
        out.push((Labels::from_pairs(pairs), Gen { kind, v }));
    }
    out
}

fn proc_status(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// utime + stime of this process, seconds.
fn cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = 100.0; // USER_HZ on Linux
    let u: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    let st: f64 = f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    (u + st) / tick
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is parsed.
    if std::env::var("STUDY").is_ok() {
        study(env("SERIES", 100_000));
        return;
    }
    let n_series = env("SERIES", 100_000);
    let n_samples = env("SAMPLES", 120);
    let writers = env("WRITERS", 16);
    let batch = env("BATCH", 10_000.min(n_series.div_ceil(writers)));
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = std::env::var("DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| tmp.path().join("tsdb"));
    let rss0 = proc_status("VmRSS:");

    let mut r = Rng(0x5eed);
    let all = make_series(n_series, &mut r);
    // Per writer: a disjoint share of the series, in batches (labels fixed,
    // values overwritten per scrape).
    let share = n_series.div_ceil(writers);
    let mut per_writer: Vec<Vec<(WriteBatch, Vec<Gen>)>> =
        (0..writers).map(|_| Vec::new()).collect();
    let mut it = all.into_iter().enumerate().peekable();
    while let Some((i, _)) = it.peek() {
        let w = i / share;
        let mut wb = WriteBatch::default();
        let mut gens = Vec::new();
        while let Some((_, (labels, g))) =
            it.next_if(|(j, _)| j / share == w && wb.series.len() < batch)
        {
            wb.series.push(TimeSeries {
                labels,
                samples: vec![Sample { t: 0, v: 0.0 }],
                ..Default::default()
            });
            gens.push(g);
        }
        per_writer[w].push((wb, gens));
    }
    let rss_data = proc_status("VmRSS:");
    let n_batches: usize = per_writer.iter().map(Vec::len).sum();

    let db = Arc::new(
        Db::open(
            &dir,
            Options {
                maintenance_interval: None,
                ..Options::default()
            },
        )
        .expect("open"),
    );
    let t0: i64 = 1_700_000_000_000 / 7_200_000 * 7_200_000 + 60_000;
    let start = Instant::now();
    let cpu0 = cpu_secs();
    let handles: Vec<_> = per_writer
        .into_iter()
        .enumerate()
        .map(|(wi, mut batches)| {
            let db = db.clone();
            std::thread::spawn(move || {
                let mut r = Rng(wi as u64 + 1);
                let mut accepted = 0usize;
                for step in 0..n_samples {
                    let t = t0 + step as i64 * 15_000;
                    for (wb, gens) in &mut batches {
                        for (ts, g) in wb.series.iter_mut().zip(gens.iter_mut()) {
                            ts.samples[0] = Sample {
                                t,
                                v: g.step(&mut r),
                            };
                        }
                        let rep = db.append("bench", wb).expect("append");
                        accepted += rep.accepted_samples;
                    }
                }
                accepted
            })
        })
        .collect();
    let accepted: usize = handles.into_iter().map(|h| h.join().expect("writer")).sum();
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let rss_ingest = proc_status("VmRSS:");
    let hwm = proc_status("VmHWM:");
    let stats = db.stats("bench");
    let wal_bytes = db.wal_bytes();
    let syncs = db.wal_syncs();
    let q_head = query_all(&db, "node_cpu_seconds_total");
    // Restart: replay the WAL (what a crash recovery costs).
    let Ok(db) = Arc::try_unwrap(db) else {
        panic!("bug: writers still hold the store")
    };
    db.close().expect("close");
    let rp = Instant::now();
    let db = Db::open(
        &dir,
        Options {
            maintenance_interval: None,
            ..Options::default()
        },
    )
    .expect("reopen");
    let replay_secs = rp.elapsed().as_secs_f64();
    assert_eq!(
        db.stats("bench").samples_stored,
        stats.samples_stored,
        "replay lost samples"
    );
    let fl = Instant::now();
    db.flush().expect("flush");
    let flush_secs = fl.elapsed().as_secs_f64();
    let disk = dir_size(&dir);
    let q_block = query_all(&db, "node_cpu_seconds_total");
    let stats2 = db.stats("bench");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    println!(
        "series {n_series}, samples/series {n_samples}, writers {writers}, batch {batch} series"
    );
    println!(
        "accepted {accepted} samples in {secs:.2} s: {:.0} samples/s; process CPU {cpu:.2} s = {:.2} CPU s per million samples (writers' value generation included)",
        accepted as f64 / secs,
        cpu / (accepted as f64 / 1e6)
    );
    println!(
        "appends {}, WAL fsyncs {syncs} ({:.1} appends per fsync), WAL bytes before flush {wal_bytes} ({:.2} B/sample)",
        n_samples * n_batches,
        (n_samples * n_batches) as f64 / syncs as f64,
        wal_bytes as f64 / accepted as f64
    );
    println!(
        "RSS: start {} MiB, with generator data {} MiB, after ingest {} MiB, peak {} MiB",
        rss0 >> 20,
        rss_data >> 20,
        rss_ingest >> 20,
        hwm >> 20
    );
    println!(
        "RSS per series: peak/series {:.0} B, growth during ingest/series {:.0} B, head estimate {:.0} B/series",
        hwm as f64 / n_series as f64,
        (rss_ingest.saturating_sub(rss_data)) as f64 / n_series as f64,
        stats.head_bytes as f64 / n_series as f64
    );
    println!(
        "flush {flush_secs:.2} s; on disk after flush {disk} bytes = {:.3} B/sample (blocks {} B = {:.3} B/sample)",
        disk as f64 / accepted as f64,
        stats2.block_bytes,
        stats2.block_bytes as f64 / accepted as f64
    );
    println!(
        "restart: WAL replay {replay_secs:.2} s ({:.0} samples/s)",
        accepted as f64 / replay_secs
    );
    for (where_, (series, samples, secs)) in [("head", q_head), ("block", q_block)] {
        println!(
            "select node_cpu_seconds_total from the {where_}: {series} series, {samples} samples in {secs:.3} s ({:.0} samples/s decoded)",
            samples as f64 / secs
        );
    }
    println!("loadavg {}", load.trim());
    drop(tmp);
}

/// Selects one metric name over all time and decodes every sample.
fn query_all(db: &Db, name: &str) -> (usize, usize, f64) {
    let t = Instant::now();
    let q = db.querier("bench", i64::MIN, i64::MAX);
    let set = q
        .select(&[model::Matcher::equal("__name__", name)])
        .expect("select");
    let (mut series, mut samples) = (0, 0);
    for s in set {
        series += 1;
        for x in s.samples() {
            x.expect("sample");
            samples += 1;
        }
    }
    (series, samples, t.elapsed().as_secs_f64())
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Bytes per sample of each value kind, XOR (Gorilla) against the decimal
/// encoding, on 120-sample chunks of the generated data.
pub fn study(n_series: usize) {
    let mut r = Rng(0x5eed);
    let all = make_series(n_series, &mut r);
    let mut by_kind: std::collections::BTreeMap<&str, (usize, usize, usize, usize)> =
        Default::default();
    let t0: i64 = 1_700_000_000_000;
    for (_, mut g) in all {
        let name = match g.kind {
            Kind::Counter { dec: 0, .. } => "counter, integer",
            Kind::Counter { .. } => "counter, 2 decimals",
            Kind::Gauge { .. } => "gauge, quantised",
            Kind::Const => "constant",
            Kind::Noise => "full-entropy float",
        };
        let samples: Vec<(i64, f64)> = (0..120)
            .map(|i| (t0 + i * 15_000, g.step(&mut r)))
            .collect();
        let mut x = tsdb::chunk::XorAppender::default();
        for (t, v) in &samples {
            x.append(*t, *v);
        }
        let xor = x.bytes().len();
        let dec = tsdb::chunk::encode_dec(&samples).map_or(xor, |d| d.len().min(xor));
        let e = by_kind.entry(name).or_default();
        e.0 += 1;
        e.1 += xor;
        e.2 += dec;
        e.3 += 120;
    }
    println!("| kind | series | XOR B/sample | best of XOR/decimal B/sample |");
    println!("|---|---|---|---|");
    for (k, (n, x, d, s)) in by_kind {
        println!(
            "| {k} | {n} | {:.2} | {:.2} |",
            x as f64 / s as f64,
            d as f64 / s as f64
        );
    }
}
