//! Throughput of the file tailer: writes N lines (about 120 bytes each,
//! nginx-like) into a temporary file, then polls a [`Tailer`] with a sink
//! that only counts — or, with `--store`, appends durably to a
//! `logstore::Store` the way `flightdeck serve` does — until every line is
//! acknowledged (positions file written after each poll, as in production).
//!
//! `cargo run --release -p agent --example tail_bench -- [lines] [--store]`

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use agent::logs::LogStream;
use agent::logs::files::{FileGroup, FilesConfig, ReadFrom, Tailer};

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let to_store = std::env::args().any(|a| a == "--store");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("access.log");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    for i in 0..n {
        writeln!(
            f,
            "10.0.{}.{} - - [27/Nov/2026:00:00:00 +0000] \"GET /api/v1/items/{i} HTTP/1.1\" {} {} \"-\" \"curl/8.5\"",
            i % 250,
            i % 7,
            [200, 200, 200, 404, 500][i % 5],
            i % 10_000
        )
        .expect("write");
    }
    f.flush().expect("flush");
    drop(f);
    let bytes = std::fs::metadata(&path).expect("stat").len();
    let mut cfg = FilesConfig::new(
        vec![FileGroup {
            include: vec![path.to_string_lossy().into_owned()],
            job: "bench".into(),
        }],
        dir.path().join("positions.json"),
    );
    cfg.read_from = ReadFrom::Beginning;
    let mut t = Tailer::new(cfg).expect("tailer");
    let count = AtomicUsize::new(0);
    let store = to_store.then(|| {
        logstore::Store::open(&dir.path().join("store"), logstore::Options::default())
            .expect("open store")
    });
    let sink = |s: &[LogStream]| -> Result<(), String> {
        if let Some(store) = &store {
            let batches: Vec<logstore::StreamBatch> = s
                .iter()
                .map(|s| logstore::StreamBatch {
                    labels: s.labels.clone(),
                    entries: s
                        .entries
                        .iter()
                        .map(|e| logstore::Entry::new(e.ts, e.line.clone()))
                        .collect(),
                })
                .collect();
            store
                .append("default", &batches)
                .map_err(|e| e.to_string())?;
        }
        count.fetch_add(s.iter().map(|s| s.entries.len()).sum(), Ordering::Relaxed);
        Ok(())
    };
    let start = Instant::now();
    let mut polls = 0;
    while count.load(Ordering::Relaxed) < n {
        t.poll(&sink);
        polls += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} {n} lines, {:.1} MB in {secs:.2} s over {polls} polls: {:.0} lines/s, {:.1} MB/s",
        if to_store {
            "into logstore:"
        } else {
            "counting sink:"
        },
        bytes as f64 / 1e6,
        n as f64 / secs,
        bytes as f64 / 1e6 / secs
    );
}
