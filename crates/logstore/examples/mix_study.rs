//! Offline compression study of the HTTP bench's log mix (issue #7): what
//! zstd level and block size give on the lines
//! `crates/flightdeck/benches/logs_push.rs` pushes (same generator, same
//! seeds, same streams: one per (job, host)), block by block as the store
//! seals them ([`logstore::block::build`]).
//!
//! `cargo run --release -p logstore --example mix_study -- [LINES] [LEVELS] [BLOCK_MIB]`
//! e.g. `… -- 600000 3,9,12,15,19 1,4`. Prints, per configuration, the
//! ratio of raw line bytes to compressed block bytes (blooms added in the
//! second figure), single-thread compress and decode speed in MB/s of raw
//! block layout (the store's own: version 2, hex ids packed), and the ratio
//! per kind of line. (A prototype of the hex packing lived here until the
//! store's `block::build` took it over; bench/results/logs-zstd-2026-11-27.md
//! has its figures.)

use std::collections::BTreeMap;
use std::time::Instant;

use logstore::Entry;
use logstore::block;

#[path = "../../../bench/logmix.rs"]
mod logmix;
use logmix::Rng;

/// The bench's streams: (job, host) → entries in push order, 1000 lines per
/// request seeded by the request number, one line every 1.8 ms.
fn streams(lines: usize) -> BTreeMap<(&'static str, usize), Vec<Entry>> {
    let mut out: BTreeMap<(&'static str, usize), Vec<Entry>> = BTreeMap::new();
    let batch = 1000;
    for b in 0..lines.div_ceil(batch) {
        let mut r =
            Rng((0x9e37_79b9_7f4a_7c15 ^ (b as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9)) | 1);
        for i in b * batch..(b * batch + batch).min(lines) {
            let (job, l) = logmix::line(&mut r, i, false);
            out.entry((job, i % 4)).or_default().push(Entry::new(
                1_700_000_000_000_000_000 + i as i64 * 1_800_000,
                l,
            ));
        }
    }
    out
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let lines: usize = a.first().and_then(|s| s.parse().ok()).unwrap_or(600_000);
    let list = |i: usize, d: &str| -> Vec<i64> {
        a.get(i)
            .map_or(d, |s| s.as_str())
            .split(',')
            .map(|x| x.parse().expect("a number"))
            .collect()
    };
    let levels = list(1, "3,9,12,15,19");
    let sizes = list(2, "1,4");
    let all = streams(lines);
    let raw_total: usize = all.values().flatten().map(|e| e.line.len()).sum();
    println!(
        "{lines} lines, {:.1} MB raw, {} streams",
        raw_total as f64 / 1e6,
        all.len()
    );
    for &mib in &sizes {
        for &level in &levels {
            let (mut comp, mut bloom, mut layout, mut blocks) = (0usize, 0usize, 0usize, 0usize);
            let (mut ct, mut dt) = (0f64, 0f64);
            let mut kind: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
            for ((job, _), es) in &all {
                let mut start = 0;
                while start < es.len() {
                    let mut end = start;
                    let mut bytes = 0;
                    while end < es.len() && bytes < (mib as usize) << 20 && end - start < 65_536 {
                        bytes += es[end].line.len();
                        end += 1;
                    }
                    let t = Instant::now();
                    let b = block::build(&es[start..end], level as i32, 2);
                    ct += t.elapsed().as_secs_f64();
                    let t = Instant::now();
                    let d = block::decode(&b.data, &b.meta).expect("round trip");
                    dt += t.elapsed().as_secs_f64();
                    assert_eq!(d.len(), end - start);
                    let data_len = b.data.len();
                    comp += data_len;
                    bloom += b.meta.bloom.byte_len();
                    layout += b.meta.raw_len as usize;
                    blocks += 1;
                    let k = kind.entry(job).or_default();
                    k.0 += bytes;
                    k.1 += data_len;
                    start = end;
                }
            }
            let per_kind: Vec<String> = kind
                .iter()
                .map(|(k, (r, c))| format!("{k} {:.1}x", *r as f64 / *c as f64))
                .collect();
            println!(
                "block {mib} MiB level {level:>2}: {blocks} blocks, ratio {:.2}x data / {:.2}x with blooms, compress {:.1} MB/s, decode {:.0} MB/s; {}",
                raw_total as f64 / comp as f64,
                raw_total as f64 / (comp + bloom) as f64,
                layout as f64 / 1e6 / ct,
                layout as f64 / 1e6 / dt,
                per_kind.join(", ")
            );
        }
    }
}
