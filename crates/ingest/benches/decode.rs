//! `cargo bench -p ingest --bench decode`: decode throughput of one
//! remote write 1.0 request holding 100 000 node-exporter-like series (one
//! sample each, as Prometheus sends them), in samples per second.
//!
//! Measured separately: snappy block decompression, protobuf + label
//! checks into a `WriteBatch` (`decode_v1`), the two together, the
//! allocation-free `visit_v1` (borrowed labels hashed per series, what a
//! store does for series it already knows), and `validate::apply`. Each
//! figure is the median of several runs after a warm-up; `BENCH_RUNS`
//! overrides the run count. Prints a markdown table.

use ingest::remote_write::proto::{v1, v2};
use prost::Message;
use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

const SERIES: usize = 100_000;

fn label(n: &str, v: &str) -> v1::Label {
    v1::Label {
        name: n.as_bytes().to_vec(),
        value: v.as_bytes().to_vec(),
    }
}

/// One host's series: (metric name, extra label pairs), ~750 per host, with
/// node_exporter's names and label shapes.
fn host_series() -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    for cpu in 0..8 {
        for mode in [
            "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
        ] {
            out.push((
                "node_cpu_seconds_total".to_string(),
                vec![
                    ("cpu".to_string(), cpu.to_string()),
                    ("mode".to_string(), mode.to_string()),
                ],
            ));
        }
    }
    for dev in ["eth0", "eth1", "lo", "docker0"] {
        for m in [
            "receive_bytes_total",
            "transmit_bytes_total",
            "receive_packets_total",
            "transmit_packets_total",
            "receive_errs_total",
            "transmit_errs_total",
            "receive_drop_total",
            "transmit_drop_total",
            "up",
            "mtu_bytes",
        ] {
            out.push((
                format!("node_network_{m}"),
                vec![("device".to_string(), dev.to_string())],
            ));
        }
    }
    for (dev, mp) in [
        ("/dev/sda1", "/"),
        ("/dev/sda2", "/var"),
        ("/dev/sdb1", "/data"),
        ("tmpfs", "/run"),
    ] {
        for m in [
            "avail_bytes",
            "free_bytes",
            "size_bytes",
            "files",
            "files_free",
            "readonly",
        ] {
            out.push((
                format!("node_filesystem_{m}"),
                vec![
                    ("device".to_string(), dev.to_string()),
                    ("fstype".to_string(), "ext4".to_string()),
                    ("mountpoint".to_string(), mp.to_string()),
                ],
            ));
        }
    }
    for disk in ["sda", "sdb", "nvme0n1"] {
        for m in [
            "reads_completed_total",
            "writes_completed_total",
            "read_bytes_total",
            "written_bytes_total",
            "io_time_seconds_total",
            "read_time_seconds_total",
            "write_time_seconds_total",
            "io_now",
        ] {
            out.push((
                format!("node_disk_{m}"),
                vec![("device".to_string(), disk.to_string())],
            ));
        }
    }
    // memory, vmstat, netstat … : plain gauges/counters without extra labels
    let mut i = 0;
    while out.len() < 700 {
        out.push((format!("node_memory_Metric{i}_bytes"), vec![]));
        i += 1;
    }
    // a classic histogram of the HTTP service
    for le in [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
    ] {
        for method in ["GET", "POST", "PUT", "DELETE"] {
            out.push((
                "http_request_duration_seconds_bucket".to_string(),
                vec![
                    ("handler".to_string(), "/api/v1/items".to_string()),
                    ("le".to_string(), le.to_string()),
                    ("method".to_string(), method.to_string()),
                ],
            ));
        }
    }
    out
}

fn request() -> v1::WriteRequest {
    let per_host = host_series();
    let mut ts = Vec::with_capacity(SERIES);
    let t0: i64 = 1_767_225_600_000;
    'outer: for host in 0.. {
        let instance = format!("host-{host:05}.example.internal:9100");
        for (k, (name, extra)) in per_host.iter().enumerate() {
            if ts.len() == SERIES {
                break 'outer;
            }
            let mut labels = vec![label("__name__", name)];
            labels.push(label("instance", &instance));
            labels.push(label("job", "node"));
            for (n, v) in extra {
                labels.push(label(n, v));
            }
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            ts.push(v1::TimeSeries {
                labels,
                samples: vec![v1::Sample {
                    value: (host * 7919 + k) as f64 * 1.37,
                    timestamp: t0 + (host as i64 % 15_000),
                }],
                ..Default::default()
            });
        }
    }
    v1::WriteRequest {
        timeseries: ts,
        metadata: vec![],
    }
}

/// The same series as a 2.0 request: symbol table, and metadata on every
/// series as Prometheus sends it.
fn request_v2(v1: &v1::WriteRequest) -> v2::Request {
    let mut symbols: Vec<Vec<u8>> = vec![Vec::new()];
    let mut index: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut sym = |b: &[u8]| -> u32 {
        *index.entry(b.to_vec()).or_insert_with(|| {
            symbols.push(b.to_vec());
            (symbols.len() - 1) as u32
        })
    };
    let help = sym(b"Help text of the metric family.");
    let timeseries = v1
        .timeseries
        .iter()
        .map(|t| {
            let counter = t.labels[0].value.ends_with(b"_total");
            v2::TimeSeries {
                labels_refs: t
                    .labels
                    .iter()
                    .flat_map(|l| [sym(&l.name), sym(&l.value)])
                    .collect(),
                samples: t
                    .samples
                    .iter()
                    .map(|s| v2::Sample {
                        value: s.value,
                        timestamp: s.timestamp,
                        start_timestamp: 0,
                    })
                    .collect(),
                metadata: Some(v2::Metadata {
                    r#type: if counter { 1 } else { 2 },
                    help_ref: help,
                    unit_ref: 0,
                }),
                ..Default::default()
            }
        })
        .collect();
    v2::Request {
        symbols,
        timeseries,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// CPU time of this thread (Linux `/proc/thread-self/schedstat`, first
/// field, ns): on a shared 2-core machine wall time also counts the time
/// other processes held the CPU. Falls back to wall time elsewhere.
fn cpu_now() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    black_box(f()); // warm-up
    median(
        (0..runs)
            .map(|_| {
                let (t, c) = (Instant::now(), cpu_now());
                black_box(f());
                match (c, cpu_now()) {
                    (Some(a), Some(b)) => b - a,
                    _ => t.elapsed(),
                }
            })
            .collect(),
    )
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let req = request();
    let pb = req.encode_to_vec();
    let body = snap::raw::Encoder::new()
        .compress_vec(&pb)
        .expect("snappy compress");
    let labels: usize = req.timeseries.iter().map(|t| t.labels.len()).sum();
    let check = ingest::remote_write::decode_v1(&pb).expect("decodes");
    assert_eq!(check.batch.series.len(), SERIES);
    assert!(check.rejected.is_empty());
    drop(check);

    let snappy = time(runs, || {
        ingest::decompress::snappy_block(&body, 64 << 20).expect("snappy")
    });
    let decode = time(runs, || {
        ingest::remote_write::decode_v1(&pb).expect("decode")
    });
    let both = time(runs, || {
        let pb = ingest::decompress::snappy_block(&body, 64 << 20).expect("snappy");
        ingest::remote_write::decode_v1(&pb).expect("decode")
    });
    // The allocation-free path: what a store does for series it already
    // has: hash the borrowed labels (FNV-1a, as model's stable_hash) and
    // take the samples.
    let visit = time(runs, || {
        let mut acc = 0u64;
        let v = ingest::remote_write::visit_v1(&pb, |s| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for (n, v) in s.labels {
                for b in n.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
                    h ^= u64::from(b);
                    h = h.wrapping_mul(0x0000_0100_0000_01b3);
                }
            }
            acc = acc.wrapping_add(h).wrapping_add(s.samples[0].t as u64);
        })
        .expect("visit");
        (acc, v)
    });
    let pb2 = request_v2(&req).encode_to_vec();
    let check = ingest::remote_write::decode_v2(&pb2).expect("decodes");
    assert_eq!(check.batch.series.len(), SERIES);
    drop(check);
    let decode2 = time(runs, || {
        ingest::remote_write::decode_v2(&pb2).expect("decode")
    });
    let visit2 = time(runs, || {
        let mut acc = 0usize;
        let v = ingest::remote_write::visit_v2(&pb2, |s| {
            acc += s.labels.len() + s.samples.len();
        })
        .expect("visit");
        (acc, v)
    });
    let visit_plain = time(runs, || {
        let mut acc = 0usize;
        let v = ingest::remote_write::visit_v1(&pb, |s| {
            acc += s.labels.len() + s.samples.len();
        })
        .expect("visit");
        (acc, v)
    });
    let limits = ingest::validate::Limits::default();
    let mut batch = ingest::remote_write::decode_v1(&pb).expect("decode").batch;
    let validate = time(runs, || {
        ingest::validate::apply(
            &mut batch,
            &ingest::validate::Limits {
                max_samples_per_request: 0,
                ..limits.clone()
            },
        )
        .expect("limits")
    });

    println!(
        "remote write 1.0 request: {SERIES} series, {SERIES} samples, {:.1} labels/series, \
         {} bytes protobuf, {} bytes snappy (2.0: {} bytes protobuf); median thread CPU time \
         of {runs} runs",
        labels as f64 / SERIES as f64,
        pb.len(),
        body.len(),
        pb2.len()
    );
    println!();
    println!("| step | time per request | ns/sample | samples/s |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, d) in [
        ("snappy block decompress", snappy),
        (
            "decode_v1 (protobuf + label checks → WriteBatch, incl. drop)",
            decode,
        ),
        ("decompress + decode_v1", both),
        (
            "visit_v1 (borrowed labels, nothing done with them)",
            visit_plain,
        ),
        ("visit_v1 + byte-wise FNV-1a of each series' labels", visit),
        ("decode_v2 (same series as 2.0, metadata on each)", decode2),
        ("visit_v2 (borrowed labels)", visit2),
        ("validate::apply (default limits)", validate),
    ] {
        let ns = d.as_nanos() as f64 / SERIES as f64;
        println!(
            "| {name} | {:.2} ms | {ns:.0} | {:.2} M |",
            d.as_secs_f64() * 1e3,
            SERIES as f64 / d.as_secs_f64() / 1e6
        );
    }
}
