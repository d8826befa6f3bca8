//! Blocks: a run of one stream's entries sorted by time, zstd-compressed,
//! with the metadata a reader needs to skip it (time range, trigram bloom).
//!
//! Uncompressed layout (all varints LEB128; see docs/format/logstore.md):
//!
//! ```text
//! n: uvarint | n × ts: zigzag varint (first absolute, then deltas ≥ 0)
//! | n × line_len: uvarint | lines, concatenated
//! | n × (pair count: uvarint | pairs × (name: bytes | value: bytes))
//! ```
//!
//! Lines sit back to back so a substring search runs over one buffer
//! (memchr's memmem) instead of line by line.

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
    for e in sorted() {
        put_uvarint(&mut raw, e.line.len() as u64);
    }
    let mut tris = TrigramSet::default();
    for e in sorted() {
        raw.extend_from_slice(e.line.as_bytes());
        tris.add_line(e.line.as_bytes());
    }
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
    pub ts: Vec<i64>,
    /// Line `i` is `raw[line_off[i]..line_off[i + 1]]`.
    line_off: Vec<usize>,
    /// Metadata of entry `i` starts at `meta_off[i]`.
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
    let n = r.usize_bounded(raw.len(), "entry count")?;
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
    r.bytes(total, "lines")?;
    let mut line_off = Vec::with_capacity(n + 1);
    let mut off = start;
    for l in lens {
        line_off.push(off);
        off += l;
    }
    line_off.push(off);
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

    pub fn line(&self, i: usize) -> &[u8] {
        &self.raw[self.line_off[i]..self.line_off[i + 1]]
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
        let lines = &self.raw[base..self.line_off[n]];
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

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let es: Vec<Entry> = (0..100).map(|i| e(i, &format!("line {i}"))).collect();
        let b = build(&es, 3, 4);
        for i in 0..b.data.len() {
            let mut d = b.data.clone();
            d[i] ^= 0x55;
            if let Ok(dec) = decode(&d, &b.meta) {
                for j in 0..dec.len() {
                    let _ = dec.entry(j);
                }
            }
        }
        let mut m = b.meta.clone();
        m.entries += 1;
        assert!(decode(&b.data, &m).is_err());
    }
}
