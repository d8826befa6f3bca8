//! Offline compression study of the HTTP bench's log mix (issue #7): what
//! zstd level, block size and long-distance matching give on the lines
//! `crates/flightdeck/benches/logs_push.rs` pushes (same generator, same
//! seeds, same streams: one per (job, host)), block by block as the store
//! seals them ([`logstore::block::build`]).
//!
//! `cargo run --release -p logstore --example mix_study -- [LINES] [LEVELS] [BLOCK_MIB]`
//! e.g. `… -- 600000 3,9,12,15,19 1,4`. Prints, per configuration, the
//! ratio of raw line bytes to compressed block bytes (blooms added in the
//! second figure), single-thread compress and decode speed in MB/s of raw
//! block layout, and the ratio per kind of line. A 4th argument `hex`
//! measures the prototype of layout version 2's hex packing, built here
//! beside the store's own (it was how the packing was chosen; the store's
//! `block::build` now packs the same runs) (hex ids packed apart; compress
//! time then counts that layout's build and zstd only, without the bloom;
//! decode is still the store's own layout's, and the
//! hex layout's decompress + rebuild of the lines is timed beside it).

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

/// Candidate layout (not the store's format): lowercase hex runs of at
/// least 16 digits (trace and request ids) are cut out of the lines and
/// packed two digits per byte at the end of the block; each line records
/// where its runs were (count, then offset from the previous run's end
/// and length in digit pairs, varints). Returns the uncompressed layout.
fn hex_layout(es: &[Entry]) -> Vec<u8> {
    fn uv(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let is_hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    let (mut text, mut pos, mut bin, mut lens) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    uv(&mut lens, es.len() as u64);
    let mut prev = 0i64;
    for e in es {
        uv(&mut lens, (e.ts - prev) as u64);
        prev = e.ts;
    }
    for e in es {
        let l = e.line.as_bytes();
        let mut runs = Vec::new();
        let mut i = 0;
        while i < l.len() {
            if is_hex(l[i]) {
                let mut j = i;
                while j < l.len() && is_hex(l[j]) {
                    j += 1;
                }
                let n = (j - i) & !1;
                if n >= 16 && l[i..j].iter().any(|c| c.is_ascii_alphabetic()) {
                    runs.push((i, n));
                }
                i = j;
            } else {
                i += 1;
            }
        }
        uv(&mut pos, runs.len() as u64);
        let mut last = 0;
        let mut kept = 0;
        for &(at, n) in &runs {
            text.extend_from_slice(&l[last..at]);
            kept += at - last;
            uv(&mut pos, (at - last) as u64);
            uv(&mut pos, (n / 2) as u64);
            for k in (at..at + n).step_by(2) {
                let h = |c: u8| {
                    if c.is_ascii_digit() {
                        c - b'0'
                    } else {
                        c - b'a' + 10
                    }
                };
                bin.push(h(l[k]) << 4 | h(l[k + 1]));
            }
            last = at + n;
        }
        text.extend_from_slice(&l[last..]);
        kept += l.len() - last;
        uv(&mut lens, kept as u64);
    }
    let mut out = lens;
    out.extend_from_slice(&text);
    out.extend_from_slice(&pos);
    out.extend_from_slice(&bin);
    out
}

/// Decompresses a [`hex_layout`] block and rebuilds its lines back to back
/// (what a scan needs), returning them.
fn hex_restore(data: &[u8], layout_len: usize, n_lines: usize) -> Vec<u8> {
    fn uv(b: &[u8], at: &mut usize) -> usize {
        let (mut v, mut shift) = (0usize, 0);
        loop {
            let c = b[*at];
            *at += 1;
            v |= ((c & 0x7f) as usize) << shift;
            if c < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let raw = zstd::bulk::decompress(data, layout_len).expect("zstd");
    let mut at = 0;
    let n = uv(&raw, &mut at);
    assert_eq!(n, n_lines);
    for _ in 0..n {
        uv(&raw, &mut at);
    }
    let kept: Vec<usize> = (0..n).map(|_| uv(&raw, &mut at)).collect();
    let text_at = at;
    let mut pos_at = text_at + kept.iter().sum::<usize>();
    // The packed bytes start after the positions: walk them once.
    let mut p = pos_at;
    for _ in 0..n {
        let runs = uv(&raw, &mut p);
        for _ in 0..2 * runs {
            uv(&raw, &mut p);
        }
    }
    let mut bin_at = p;
    let mut out = Vec::with_capacity(raw.len() * 2);
    let mut t = text_at;
    for &k in &kept {
        let runs = uv(&raw, &mut pos_at);
        let mut used = 0;
        for _ in 0..runs {
            let gap = uv(&raw, &mut pos_at);
            let pairs = uv(&raw, &mut pos_at);
            out.extend_from_slice(&raw[t..t + gap]);
            t += gap;
            used += gap;
            for &b in &raw[bin_at..bin_at + pairs] {
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
            bin_at += pairs;
        }
        out.extend_from_slice(&raw[t..t + (k - used)]);
        t += k - used;
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
    let hex = a.get(3).is_some_and(|s| s == "hex");
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
            let (mut ct, mut dt, mut hdt) = (0f64, 0f64, 0f64);
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
                    if !hex {
                        ct += t.elapsed().as_secs_f64();
                    }
                    let t = Instant::now();
                    let d = block::decode(&b.data, &b.meta).expect("round trip");
                    dt += t.elapsed().as_secs_f64();
                    assert_eq!(d.len(), end - start);
                    let data_len = if hex {
                        let t = Instant::now();
                        let lay = hex_layout(&es[start..end]);
                        let c = zstd::bulk::compress(&lay, level as i32).expect("zstd");
                        ct += t.elapsed().as_secs_f64();
                        let t = Instant::now();
                        let lines = hex_restore(&c, lay.len(), end - start);
                        hdt += t.elapsed().as_secs_f64();
                        let want: Vec<u8> =
                            es[start..end].iter().flat_map(|e| e.line.bytes()).collect();
                        assert!(lines == want, "hex layout round trip");
                        c.len()
                    } else {
                        b.data.len()
                    };
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
                "{}block {mib} MiB level {level:>2}: {blocks} blocks, ratio {:.2}x data / {:.2}x with blooms, compress {:.1} MB/s, decode {:.0} MB/s{}; {}",
                if hex { "hex-packed " } else { "" },
                raw_total as f64 / comp as f64,
                raw_total as f64 / (comp + bloom) as f64,
                layout as f64 / 1e6 / ct,
                layout as f64 / 1e6 / dt,
                if hex {
                    format!(
                        " (hex layout: decompress + rebuild {:.0} MB/s of lines)",
                        raw_total as f64 / 1e6 / hdt
                    )
                } else {
                    String::new()
                },
                per_kind.join(", ")
            );
        }
    }
}
