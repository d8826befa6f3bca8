//! Parse throughput of the exposition parser on a node-exporter-like body.
//!
//! `cargo run --release -p ingest --example parse_bench [SERIES] [ROUNDS]`
//! prints lines/s and MB/s for text 0.0.4 and OpenMetrics. A program to
//! rerun, not a timed test.

use std::time::Instant;

use ingest::exposition::{Format, parse_format};

/// About `series` sample lines in families of 16, with HELP/TYPE lines, the
/// label shapes of node_exporter (`cpu`, `mode`, `device`, …).
fn body(series: usize, om: bool) -> String {
    let mut s = String::new();
    let modes = [
        "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
    ];
    let mut n = 0;
    let mut fam = 0;
    while n < series {
        // OpenMetrics names the family without `_total`, text 0.0.4 with it.
        let family = if om {
            format!("node_family_{fam}_seconds")
        } else {
            format!("node_family_{fam}_seconds_total")
        };
        let name = format!("node_family_{fam}_seconds_total");
        s += &format!("# HELP {family} Seconds spent in family {fam}.\n");
        s += &format!("# TYPE {family} counter\n");
        for i in 0..16 {
            s += &format!(
                "{name}{{cpu=\"{}\",mode=\"{}\",device=\"nvme0n1p{}\"}} {}.{}\n",
                i / 8,
                modes[i % 8],
                fam % 4,
                1_000_000 + n * 37,
                n % 100
            );
            n += 1;
        }
        fam += 1;
    }
    if om {
        s += "# EOF\n";
    }
    s
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let series = args.first().copied().unwrap_or(100_000);
    let rounds = args.get(1).copied().unwrap_or(20);
    for (label, format, om) in [
        ("text 0.0.4", Format::PrometheusText, false),
        ("openmetrics", Format::OpenMetrics, true),
    ] {
        let b = body(series, om);
        let mut best = f64::MAX;
        let mut samples = 0;
        for _ in 0..rounds {
            let t = Instant::now();
            let parsed = parse_format(b.as_bytes(), format).expect("generated body parses");
            best = best.min(t.elapsed().as_secs_f64());
            samples = parsed.samples.len();
        }
        println!(
            "{label:12} {samples} samples, {:.1} MB: best of {rounds}: {:.1} ms, {:.2} M samples/s, {:.0} MB/s",
            b.len() as f64 / 1e6,
            best * 1e3,
            samples as f64 / best / 1e6,
            b.len() as f64 / best / 1e6
        );
    }
}
