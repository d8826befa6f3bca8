//! Blocks: a run of one stream's entries sorted by time, zstd-compressed,
//! with the metadata a reader needs to skip it (time range, trigram bloom).
//!
//! Uncompressed layout, version 2 (all varints LEB128; see
//! docs/format/logstore.md):
//!
//! ```text
//! 0: uvarint | 2: uvarint | n: uvarint
//! | n × ts: zigzag varint (first absolute, then deltas ≥ 0)
//! | n × text_len: uvarint | texts, concatenated
//! | n × (run count: uvarint | runs × (gap: uvarint | pairs: uvarint))
//! | packed hex digits, two per byte
//! | n × (pair count: uvarint | pairs × (name: bytes | value: bytes))
//! ```
//!
//! A line's *text* is the line with its hex ids cut out: every run of at
//! least [`HEX_RUN_MIN`] lowercase hex digits holding a letter `a`–`f`
//! (trace ids, request ids, hashes) has its even-length prefix packed two
//! digits per byte after the runs; `gap` is the text between the previous
//! run (or the line's start) and this one. Random ids are what zstd codes
//! worst (about 4.7 bits per digit, and a broken match on each side); packed
//! they cost 4 bits and the text around them matches across lines (the
//! mix of the HTTP bench: 9.2× → 9.8× at the same level).
//!
//! Version 1 (still read) has no leading `0, 2`: `n` (never 0) comes first,
//! then timestamps, line lengths, whole lines, metadata.
//!
//! [`decode`] rebuilds the lines back to back, so a substring search runs
//! over one buffer (memchr's memmem) instead of line by line.

use memchr::memmem;

use crate::Entry;
use crate::bloom::{Bloom, TrigramSet};
use crate::enc::{Reader, put_bytes, put_uvarint, put_varint};

/// What the index keeps about a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockMeta {
    pub min_ts: i64,
    pub max_ts: i64,
    pub entries: u32,
    /// Sum of the lines' lengths (what Loki's stats call bytes).
    pub line_bytes: u64,
    /// Length of the uncompressed layout (bounds decompression).
    pub raw_len: u32,
    pub bloom: Bloom,
}

impl BlockMeta {
    /// Can this block hold an entry in `[start, end)`?
    pub fn overlaps(&self, start: i64, end: i64) -> bool {
        self.max_ts >= start && self.min_ts < end
    }

    /// Can a line of this block contain every one of `required`?
    pub fn may_match(&self, required: &[&[u8]]) -> bool {
        required.iter().all(|n| self.bloom.may_contain(n))
    }
}

/// A compressed block held in memory (head) with its meta.
#[derive(Debug)]
pub struct MemBlock {
    pub meta: BlockMeta,
    pub data: Vec<u8>,
}

/// Shortest run of hex digits [`build`] packs.
pub const HEX_RUN_MIN: usize = 16;
/// The layout [`build`] writes (see the module doc).
const LAYOUT_VERSION: u64 = 2;
const HEX: &[u8; 16] = b"0123456789abcdef";

fn is_hex(c: u8) -> bool {
    c.is_ascii_digit() || (b'a'..=b'f').contains(&c)
}

fn nibble(c: u8) -> u8 {
    if c.is_ascii_digit() {
        c - b'0'
    } else {
        c - b'a' + 10
    }
}

/// Appends `line`'s text to `texts`, its run list to `runs` and its packed
/// digits to `packed`; returns the text's length.
fn pack_line(line: &[u8], texts: &mut Vec<u8>, runs: &mut Vec<u8>, packed: &mut Vec<u8>) -> usize {
    let mut found: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < line.len() {
        if !is_hex(line[i]) {
            i += 1;
            continue;
        }
        let mut j = i;
        let mut letter = false;
        while j < line.len() && is_hex(line[j]) {
            letter |= line[j] >= b'a';
            j += 1;
        }
        let len = (j - i) & !1;
        if len >= HEX_RUN_MIN && letter {
            found.push((i, len));
        }
        i = j;
    }
    put_uvarint(runs, found.len() as u64);
    let mut last = 0;
    for &(at, len) in &found {
        texts.extend_from_slice(&line[last..at]);
        put_uvarint(runs, (at - last) as u64);
        put_uvarint(runs, (len / 2) as u64);
        packed.extend(
            line[at..at + len]
                .chunks_exact(2)
                .map(|d| nibble(d[0]) << 4 | nibble(d[1])),
        );
        last = at + len;
    }
    texts.extend_from_slice(&line[last..]);
    line.len() - found.iter().map(|r| r.1).sum::<usize>()
}

/// Encodes and compresses `entries` in time order (stable: equal times
/// keep their order in the slice). The slice itself is not reordered, so
/// a caller can seal a buffer it only borrows.
pub fn build(entries: &[Entry], level: i32, bloom_bits: u32) -> MemBlock {
    let mut order: Vec<u32> = (0..entries.len() as u32).collect();
    order.sort_by_key(|&i| entries[i as usize].ts);
    let sorted = || order.iter().map(|&i| &entries[i as usize]);
    let n = entries.len();
    let line_bytes: usize = entries.iter().map(|e| e.line.len()).sum();
    let mut raw = Vec::with_capacity(line_bytes + n * 6 + 8);
    put_uvarint(&mut raw, 0);
    put_uvarint(&mut raw, LAYOUT_VERSION);
    put_uvarint(&mut raw, n as u64);
    let mut prev = 0i64;
    for (i, e) in sorted().enumerate() {
        put_varint(
            &mut raw,
            if i == 0 {
                e.ts
            } else {
                e.ts.wrapping_sub(prev)
            },
        );
        prev = e.ts;
    }
    let mut tris = TrigramSet::default();
    let (mut texts, mut runs, mut packed) =
        (Vec::with_capacity(line_bytes), Vec::new(), Vec::new());
    for e in sorted() {
        let line = e.line.as_bytes();
        tris.add_line(line);
        let kept = pack_line(line, &mut texts, &mut runs, &mut packed);
        put_uvarint(&mut raw, kept as u64);
    }
    raw.extend_from_slice(&texts);
    raw.extend_from_slice(&runs);
    raw.extend_from_slice(&packed);
    for e in sorted() {
        put_uvarint(&mut raw, e.metadata.len() as u64);
        for (k, v) in &e.metadata {
            put_bytes(&mut raw, k.as_bytes());
            put_bytes(&mut raw, v.as_bytes());
        }
    }
    let data = zstd::bulk::compress(&raw, level)
        .unwrap_or_else(|e| panic!("bug: zstd failed to compress an in-memory buffer: {e}"));
    let first = order.first().map_or(0, |&i| entries[i as usize].ts);
    let last = order.last().map_or(0, |&i| entries[i as usize].ts);
    MemBlock {
        meta: BlockMeta {
            min_ts: first,
            max_ts: last,
            entries: n as u32,
            line_bytes: line_bytes as u64,
            raw_len: raw.len() as u32,
            bloom: tris.to_bloom(bloom_bits),
        },
        data,
    }
}

/// A decompressed block, ready to iterate.
#[derive(Debug)]
pub struct Decoded {
    raw: Vec<u8>,
    /// The lines back to back, rebuilt from a version-2 layout; `None`
    /// for version 1, whose lines sit in `raw` as they are.
    lines: Option<Vec<u8>>,
    pub ts: Vec<i64>,
    /// Line `i` is `text()[line_off[i]..line_off[i + 1]]`.
    line_off: Vec<usize>,
    /// Metadata of entry `i` starts at `raw[meta_off[i]..]`.
    meta_off: Vec<usize>,
}

/// Decompresses and parses a block. Errors describe the damage.
pub fn decode(data: &[u8], meta: &BlockMeta) -> Result<Decoded, String> {
    let raw =
        zstd::bulk::decompress(data, meta.raw_len as usize).map_err(|e| format!("zstd: {e}"))?;
    if raw.len() != meta.raw_len as usize {
        return Err(format!(
            "block decompressed to {} bytes, index says {}",
            raw.len(),
            meta.raw_len
        ));
    }
    let mut r = Reader::new(&raw);
    let mut n = r.usize_bounded(raw.len(), "entry count")?;
    let packed = n == 0;
    if packed {
        let v = r.uvarint("block layout version")?;
        if v != LAYOUT_VERSION {
            return Err(format!("unknown block layout version {v}"));
        }
        n = r.usize_bounded(raw.len(), "entry count")?;
    }
    if n != meta.entries as usize {
        return Err(format!(
            "block holds {n} entries, index says {}",
            meta.entries
        ));
    }
    let mut ts = Vec::with_capacity(n);
    let mut t = 0i64;
    for i in 0..n {
        let d = r.varint("timestamp")?;
        t = if i == 0 { d } else { t.wrapping_add(d) };
        ts.push(t);
    }
    let mut lens = Vec::with_capacity(n);
    let mut total = 0usize;
    for _ in 0..n {
        let l = r.usize_bounded(raw.len(), "line length")?;
        total += l;
        lens.push(l);
    }
    let start = raw.len() - r.remaining();
    let texts = r.bytes(total, "lines")?;
    let mut line_off = Vec::with_capacity(n + 1);
    let lines = if packed {
        // Run lists, then the packed digits they consume.
        let mut runs = Vec::new();
        let mut digits = 0usize;
        for &kept in &lens {
            let count = r.usize_bounded(kept + 1, "hex run count")?;
            let mut gaps = 0usize;
            runs.push((count, 0usize));
            for _ in 0..count {
                let gap = r.usize_bounded(kept - gaps, "hex run gap")?;
                let pairs = r.usize_bounded(raw.len(), "hex run length")?;
                gaps += gap;
                digits += pairs;
                runs.push((gap, pairs));
            }
        }
        let bin = r.bytes(digits, "packed hex digits")?;
        let mut out = Vec::with_capacity(total + 2 * digits);
        let (mut t, mut b, mut k) = (0usize, 0usize, 0usize);
        for &kept in &lens {
            line_off.push(out.len());
            let (count, _) = runs[k];
            k += 1;
            let mut used = 0;
            for _ in 0..count {
                let (gap, pairs) = runs[k];
                k += 1;
                out.extend_from_slice(&texts[t..t + gap]);
                t += gap;
                used += gap;
                for &x in &bin[b..b + pairs] {
                    out.push(HEX[(x >> 4) as usize]);
                    out.push(HEX[(x & 15) as usize]);
                }
                b += pairs;
            }
            out.extend_from_slice(&texts[t..t + (kept - used)]);
            t += kept - used;
        }
        line_off.push(out.len());
        Some(out)
    } else {
        let mut off = start;
        for &l in &lens {
            line_off.push(off);
            off += l;
        }
        line_off.push(off);
        None
    };
    let mut meta_off = Vec::with_capacity(n);
    for _ in 0..n {
        meta_off.push(raw.len() - r.remaining());
        let pairs = r.usize_bounded(r.remaining(), "metadata pair count")?;
        for _ in 0..pairs {
            r.str("metadata name")?;
            r.str("metadata value")?;
        }
    }
    if !r.is_empty() {
        return Err(format!("{} trailing bytes in block", r.remaining()));
    }
    Ok(Decoded {
        raw,
        lines,
        ts,
        line_off,
        meta_off,
    })
}

impl Decoded {
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// The lines back to back.
    fn text(&self) -> &[u8] {
        self.lines.as_deref().unwrap_or(&self.raw)
    }

    pub fn line(&self, i: usize) -> &[u8] {
        &self.text()[self.line_off[i]..self.line_off[i + 1]]
    }

    /// The entry at `i` as an owned [`Entry`].
    pub fn entry(&self, i: usize) -> Result<Entry, String> {
        let line = std::str::from_utf8(self.line(i))
            .map_err(|e| format!("line is not UTF-8: {e}"))?
            .to_string();
        let mut r = Reader::new(&self.raw[self.meta_off[i]..]);
        let pairs = r.usize_bounded(r.remaining(), "metadata pair count")?;
        let mut metadata = Vec::with_capacity(pairs);
        for _ in 0..pairs {
            let k = r.str("metadata name")?.to_string();
            let v = r.str("metadata value")?.to_string();
            metadata.push((k, v));
        }
        Ok(Entry {
            ts: self.ts[i],
            line,
            metadata,
        })
    }

    /// Indexes of the entries whose line contains every needle of
    /// `required`, in ascending order. The first needle is searched over
    /// all lines at once.
    pub fn matching(&self, required: &[&[u8]]) -> Vec<u32> {
        let n = self.len();
        let req: Vec<&[u8]> = required.iter().copied().filter(|x| !x.is_empty()).collect();
        let Some((first, rest)) = req.split_first() else {
            return (0..n as u32).collect();
        };
        let base = self.line_off[0];
        let lines = &self.text()[base..self.line_off[n]];
        let finder = memmem::Finder::new(first);
        let mut out = Vec::new();
        let mut i = 0usize;
        let mut from = 0usize;
        while i < n && from < lines.len() {
            let Some(p) = finder.find(&lines[from..]) else {
                break;
            };
            let at = base + from + p;
            // The line holding byte `at` (line_off is sorted).
            while self.line_off[i + 1] <= at {
                i += 1;
            }
            if at + first.len() <= self.line_off[i + 1] {
                let line = self.line(i);
                if rest.iter().all(|nd| memmem::find(line, nd).is_some()) {
                    out.push(i as u32);
                }
                from = self.line_off[i + 1] - base;
                i += 1;
            } else {
                // A match across a line boundary: go on just after its start.
                from += p + 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(ts: i64, line: &str) -> Entry {
        Entry {
            ts,
            line: line.into(),
            metadata: vec![],
        }
    }

    #[test]
    fn round_trip_sorted_with_metadata() {
        let mut es = vec![
            e(30, "c"),
            e(10, "a"),
            Entry {
                ts: 20,
                line: "b line".into(),
                metadata: vec![("trace_id".into(), "abc".into())],
            },
            e(10, "a2"),
            e(-5, ""),
        ];
        let b = build(&es, 3, 4);
        assert_eq!((b.meta.min_ts, b.meta.max_ts, b.meta.entries), (-5, 30, 5));
        let d = decode(&b.data, &b.meta).unwrap();
        let got: Vec<Entry> = (0..d.len()).map(|i| d.entry(i).unwrap()).collect();
        es.sort_by_key(|e| e.ts);
        assert_eq!(got, es);
        assert_eq!(got[1].line, "a", "stable for equal times");
        assert_eq!(d.matching(&[b"a"]), vec![1, 2]);
        assert_eq!(d.matching(&[b"line", b"b"]), vec![3]);
        assert_eq!(
            d.matching(&[b"ab"]),
            Vec::<u32>::new(),
            "no match across lines"
        );
        assert_eq!(d.matching(&[]).len(), 5);
        assert_eq!(d.matching(&[b""]).len(), 5);
    }

    /// Lines whose hex runs exercise every rule of the packing.
    fn hex_lines() -> Vec<String> {
        vec![
            // 32 digits at the end, as a JSON trace id.
            r#"{"msg":"ok","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#.into(),
            // At the start, odd length (17: 16 packed, the last digit kept).
            "0123456789abcdef0 tail".into(),
            // Exactly the minimum, and one short of it.
            "id=0123456789abcdef x=0123456789abcde".into(),
            // Digits only: not packed.
            "ts=12345678901234567890".into(),
            // Upper case is not packed; two runs back to back split by '-'.
            "A=0123456789ABCDEF0123 u=0123456789abcdef-fedcba9876543210".into(),
            // The whole line, with non-ASCII text around nothing.
            "deadbeefdeadbeefdeadbeefdeadbeef".into(),
            "héllo ünïcode 0123456789abcdefabcd ✓".into(),
            String::new(),
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into(),
        ]
    }

    #[test]
    fn hex_runs_round_trip_and_match() {
        let es: Vec<Entry> = hex_lines()
            .into_iter()
            .enumerate()
            .map(|(i, l)| Entry {
                ts: i as i64,
                line: l,
                metadata: vec![("k".into(), format!("v{i}"))],
            })
            .collect();
        let b = build(&es, 3, 4);
        let d = decode(&b.data, &b.meta).unwrap();
        let got: Vec<Entry> = (0..d.len()).map(|i| d.entry(i).unwrap()).collect();
        assert_eq!(got, es);
        assert_eq!(d.matching(&[b"4da6a3ce"]), vec![0]);
        assert_eq!(d.matching(&[b"f0 tail"]), vec![1]);
        assert_eq!(d.matching(&[b"ef-fedc"]), vec![4]);
        assert_eq!(d.matching(&["abcd ✓".as_bytes()]), vec![6]);
        assert!(b.meta.may_match(&[b"4da6a3ce"]), "bloom over the lines");
        // The layout really is the packed one: shorter than the lines.
        let line_bytes: usize = es.iter().map(|e| e.line.len()).sum();
        assert!((b.meta.raw_len as usize) < line_bytes, "{}", b.meta.raw_len);
    }

    /// Version 1 of the layout, as the store wrote it before hex packing.
    fn build_v1(es: &[Entry]) -> MemBlock {
        let mut raw = Vec::new();
        put_uvarint(&mut raw, es.len() as u64);
        let mut prev = 0;
        for (i, e) in es.iter().enumerate() {
            put_varint(&mut raw, if i == 0 { e.ts } else { e.ts - prev });
            prev = e.ts;
        }
        for e in es {
            put_uvarint(&mut raw, e.line.len() as u64);
        }
        for e in es {
            raw.extend_from_slice(e.line.as_bytes());
        }
        for e in es {
            put_uvarint(&mut raw, e.metadata.len() as u64);
            for (k, v) in &e.metadata {
                put_bytes(&mut raw, k.as_bytes());
                put_bytes(&mut raw, v.as_bytes());
            }
        }
        let mut b = build(es, 3, 4);
        b.meta.raw_len = raw.len() as u32;
        b.data = zstd::bulk::compress(&raw, 3).unwrap();
        b
    }

    #[test]
    fn version_1_blocks_still_read() {
        let es: Vec<Entry> = hex_lines()
            .into_iter()
            .enumerate()
            .map(|(i, l)| e(i as i64 * 10, &l))
            .collect();
        let b = build_v1(&es);
        let d = decode(&b.data, &b.meta).unwrap();
        let got: Vec<Entry> = (0..d.len()).map(|i| d.entry(i).unwrap()).collect();
        assert_eq!(got, es);
        assert_eq!(d.matching(&[b"4da6a3ce"]), vec![0]);
    }

    #[test]
    fn packing_random_ids_compresses_better() {
        let mut rng = model::XorShift64::new(0x9e37_79b9_7f4a_7c15);
        let mut next = move || rng.next_u64();
        let es: Vec<Entry> = (0..5000)
            .map(|i| {
                let l = format!(
                    r#"{{"level":"info","msg":"done","trace_id":"{:016x}{:016x}"}}"#,
                    next(),
                    next()
                );
                e(i, &l)
            })
            .collect();
        let (v2, v1) = (build(&es, 9, 2), build_v1(&es));
        let v1 = zstd::bulk::compress(&zstd::bulk::decompress(&v1.data, 1 << 24).unwrap(), 9)
            .unwrap()
            .len();
        assert!(
            v2.data.len() * 100 < v1 * 95,
            "packed {} bytes, plain {v1}",
            v2.data.len()
        );
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let mut es: Vec<Entry> = (0..100).map(|i| e(i, &format!("line {i}"))).collect();
        es.extend(
            hex_lines()
                .into_iter()
                .enumerate()
                .map(|(i, l)| e(100 + i as i64, &l)),
        );
        let b = build(&es, 3, 4);
        for i in 0..b.data.len() {
            let mut d = b.data.clone();
            d[i] ^= 0x55;
            if let Ok(dec) = decode(&d, &b.meta) {
                for j in 0..dec.len() {
                    let _ = dec.entry(j);
                }
                let _ = dec.matching(&[b"ab"]);
            }
        }
        let mut m = b.meta.clone();
        m.entries += 1;
        assert!(decode(&b.data, &m).is_err());
    }
}
