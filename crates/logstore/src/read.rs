//! The read interface a LogQL evaluator adapts: select streams by
//! matchers, iterate their entries in time order (either direction) with a
//! limit, skipping blocks outside the range or whose bloom filter rules
//! out a required substring; label names and values, series, and stats in
//! Loki's `/index/stats` shape.
//!
//! # Contract
//!
//! - Time ranges are `[start, end)` in nanoseconds.
//! - Matchers all must match, with Prometheus semantics (an absent label
//!   matches as `""`).
//! - `required`: only entries whose line contains *every* needle (bytes,
//!   case-sensitive) are returned. An evaluator passes the literal
//!   substrings of its `|=` filters; it still applies its full pipeline.
//! - Within a stream, entries come in time order (forward: ascending,
//!   backward: descending); entries with equal timestamps keep append order
//!   within one block, and are otherwise in no specified order.
//! - Entries of a stream with the same timestamp *and* line are returned
//!   once (as Loki does: a client retrying a push must not double lines);
//!   the first one's metadata is kept. Stats count stored entries.
//! - A read sees every entry whose append returned before the read began.
//! - Blocks are decompressed lazily: a block is opened only when the merge
//!   may need its entries next, so a limit stops the reading early.

use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use model::{Labels, MatchOp, Matcher};

use crate::block::{self, MemBlock};
use crate::segment::Segment;
use crate::store::{ProjState, lock, open_entries, read};
use crate::{Entry, Error, Store};

/// Time order of a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    Forward,
    Backward,
}

/// A log selection: which streams, which time range, which order.
#[derive(Clone, Debug)]
pub struct Query<'a> {
    pub matchers: &'a [Matcher],
    pub start: i64,
    pub end: i64,
    pub direction: Direction,
    /// Most entries returned (per stream by [`Store::select`], in all by
    /// [`Store::query`]); 0 means no limit.
    pub limit: usize,
    /// Substrings every returned line contains.
    pub required: &'a [&'a [u8]],
}

/// Loki's `/loki/api/v1/index/stats` figures. Sealed blocks count whole
/// when they overlap the range (block granularity, as Loki counts chunks);
/// unsealed head entries count exactly, and count as one chunk per stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub streams: u64,
    pub chunks: u64,
    pub entries: u64,
    pub bytes: u64,
}

enum Src {
    /// Block `.2` of stream `.1` of a segment.
    File(Arc<Segment>, u32, u32),
    Mem(Arc<MemBlock>),
    Sorted(Vec<Entry>),
}

struct Pending {
    lo: i64,
    hi: i64,
    src: Src,
}

/// The entries of one stream, lazily, in time order; see the module doc.
pub struct StreamIter {
    /// Sources not opened yet; the next to open is last.
    pending: Vec<Pending>,
    /// Opened sources' remaining entries, in iteration order.
    active: Vec<VecDeque<Entry>>,
    direction: Direction,
    start: i64,
    end: i64,
    required: Vec<Vec<u8>>,
    remaining: usize,
    failed: bool,
    blocks_read: u64,
    blocks_skipped: u64,
    /// Entries in range of the sources opened, and their lines' bytes, before the
    /// `required` filter (what a query processed).
    lines_scanned: u64,
    bytes_scanned: u64,
    /// Timestamp of the last entry returned, and the lines returned at it
    /// when more entries at that time were pending (for de-duplication).
    dup_ts: i64,
    dup_lines: Vec<String>,
}

impl StreamIter {
    /// Blocks decompressed so far.
    pub fn blocks_read(&self) -> u64 {
        self.blocks_read
    }

    /// Entries in range of the blocks opened so far (matching `required` or not).
    pub fn lines_scanned(&self) -> u64 {
        self.lines_scanned
    }

    /// The bytes of the lines [`StreamIter::lines_scanned`] counts.
    pub fn bytes_scanned(&self) -> u64 {
        self.bytes_scanned
    }

    /// Blocks of the range never read because their bloom filter ruled a
    /// required substring out.
    pub fn blocks_skipped(&self) -> u64 {
        self.blocks_skipped
    }

    /// Blocks of the range neither read nor skipped (yet): still pending
    /// when a limit or the caller stopped the read.
    pub fn blocks_unopened(&self) -> u64 {
        self.pending
            .iter()
            .filter(|p| !matches!(p.src, Src::Sorted(_)))
            .count() as u64
    }

    fn open(&mut self, p: Pending) -> Result<(), Error> {
        let req: Vec<&[u8]> = self.required.iter().map(|v| v.as_slice()).collect();
        let (start, end) = (self.start, self.end);
        let (mut entries, scanned): (VecDeque<Entry>, Scanned) = match p.src {
            Src::Sorted(v) => {
                let bytes = v.iter().map(|e| e.line.len() as u64).sum();
                let lines = v.len() as u64;
                (v.into(), Scanned { lines, bytes })
            }
            Src::Mem(b) => {
                self.blocks_read += 1;
                decode_range(&b.data, &b.meta, start, end, &req)
                    .map_err(|d| Error::corrupt("<head block>", format!("bug: {d}")))?
            }
            Src::File(seg, si, bi) => {
                self.blocks_read += 1;
                let b = &seg.streams[si as usize].blocks[bi as usize];
                let data = seg.read_block(b)?;
                decode_range(&data, &b.meta, start, end, &req).map_err(|d| {
                    Error::corrupt(&seg.path, format!("block at byte {}: {d}", b.offset))
                })?
            }
        };
        self.lines_scanned += scanned.lines;
        self.bytes_scanned += scanned.bytes;
        if self.direction == Direction::Backward {
            entries.make_contiguous().reverse();
        }
        if !entries.is_empty() {
            self.active.push(entries);
        }
        Ok(())
    }

    /// Index of the active source whose next entry comes first.
    fn best(&self) -> Option<(usize, i64)> {
        let mut best: Option<(usize, i64)> = None;
        for (i, a) in self.active.iter().enumerate() {
            let t = a[0].ts;
            let better = match (best, self.direction) {
                (None, _) => true,
                (Some((_, b)), Direction::Forward) => t < b,
                (Some((_, b)), Direction::Backward) => t > b,
            };
            if better {
                best = Some((i, t));
            }
        }
        best
    }

    fn step(&mut self) -> Result<Option<Entry>, Error> {
        loop {
            let best = self.best();
            let open_next = match (self.pending.last(), best) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(p), Some((_, t))) => match self.direction {
                    Direction::Forward => p.lo <= t,
                    Direction::Backward => p.hi >= t,
                },
            };
            if open_next {
                let p = self.pending.pop().expect("checked above");
                self.open(p)?;
                continue;
            }
            let Some((i, _)) = best else { return Ok(None) };
            let e = self.active[i]
                .pop_front()
                .expect("active sources are non-empty");
            if self.active[i].is_empty() {
                self.active.swap_remove(i);
            }
            if e.ts == self.dup_ts && self.dup_lines.contains(&e.line) {
                continue;
            }
            if e.ts != self.dup_ts {
                self.dup_ts = e.ts;
                self.dup_lines.clear();
            }
            // Every source that can hold this time is open now, so only an
            // active one can return it again; remember the line only then
            // (rare: clones no line when timestamps differ).
            if self.best().is_some_and(|(_, t)| t == e.ts) {
                self.dup_lines.push(e.line.clone());
            }
            return Ok(Some(e));
        }
    }
}

impl Iterator for StreamIter {
    type Item = Result<Entry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.remaining == 0 {
            return None;
        }
        match self.step() {
            Ok(Some(e)) => {
                self.remaining -= 1;
                Some(Ok(e))
            }
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Entries and line bytes looked at in one source.
struct Scanned {
    lines: u64,
    bytes: u64,
}

fn decode_range(
    data: &[u8],
    meta: &block::BlockMeta,
    start: i64,
    end: i64,
    req: &[&[u8]],
) -> Result<(VecDeque<Entry>, Scanned), String> {
    let d = block::decode(data, meta)?;
    let mut scanned = Scanned { lines: 0, bytes: 0 };
    for (i, &t) in d.ts.iter().enumerate() {
        if t >= start && t < end {
            scanned.lines += 1;
            scanned.bytes += d.line(i).len() as u64;
        }
    }
    let mut out = VecDeque::new();
    for i in d.matching(req) {
        let t = d.ts[i as usize];
        if t >= start && t < end {
            out.push_back(d.entry(i as usize)?);
        }
    }
    Ok((out, scanned))
}

/// Stream ids of `st` matching all `matchers`, ascending.
fn matching_sids(st: &ProjState, matchers: &[Matcher]) -> Vec<u32> {
    let mut cand: Option<Vec<u32>> = None;
    for m in matchers {
        let values: Vec<String> = match m.op {
            MatchOp::Equal if !m.value.is_empty() => vec![m.value.clone()],
            MatchOp::Regex => match m.set_matches() {
                Some(v) if v.iter().all(|s| !s.is_empty()) => v,
                _ => continue,
            },
            _ => continue,
        };
        let mut ids: Vec<u32> = values
            .iter()
            .filter_map(|v| st.postings.get(&m.name)?.get(v))
            .flatten()
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        cand = Some(match cand {
            None => ids,
            Some(c) => c
                .into_iter()
                .filter(|x| ids.binary_search(x).is_ok())
                .collect(),
        });
    }
    let all = || (0..st.streams.len() as u32).collect();
    cand.unwrap_or_else(all)
        .into_iter()
        .filter(|&sid| {
            let l = &st.streams[sid as usize].labels;
            matchers
                .iter()
                .all(|m| m.matches(l.get(&m.name).unwrap_or("")))
        })
        .collect()
}

/// One part of a stream's data, as [`for_each_part`] visits it.
enum Part<'a> {
    Block(&'a block::BlockMeta, Src),
    /// Entries not sealed in a block (append order).
    Open(&'a [Entry]),
}

/// Visits the sealed blocks of stream `sid` overlapping `[start, end)`
/// (segments, frozen heads, live head) and the frozen and live open
/// entries.
fn for_each_part(st: &ProjState, sid: u32, start: i64, end: i64, mut f: impl FnMut(Part)) {
    for v in &st.segments {
        if v.seg.max_ts < start || v.seg.min_ts >= end {
            continue;
        }
        if let Some(&si) = v.pos.get(&sid) {
            for (bi, b) in v.seg.streams[si as usize].blocks.iter().enumerate() {
                if b.meta.overlaps(start, end) {
                    f(Part::Block(
                        &b.meta,
                        Src::File(v.seg.clone(), si, bi as u32),
                    ));
                }
            }
        }
    }
    if let Some(fr) = &st.frozen
        && let Ok(i) = fr.binary_search_by_key(&sid, |(s, _)| *s)
    {
        let data = &fr[i].1;
        for b in &data.blocks {
            if b.meta.overlaps(start, end) {
                f(Part::Block(&b.meta, Src::Mem(b.clone())));
            }
        }
        f(Part::Open(&data.open));
    }
    let h = lock(&st.streams[sid as usize].head);
    for b in &h.blocks {
        if b.meta.overlaps(start, end) {
            f(Part::Block(&b.meta, Src::Mem(b.clone())));
        }
    }
    f(Part::Open(&h.open));
}

fn stream_iter(st: &ProjState, sid: u32, q: &Query) -> StreamIter {
    let mut pending = Vec::new();
    let mut skipped = 0;
    for_each_part(st, sid, q.start, q.end, |part| match part {
        Part::Block(m, src) => {
            if m.may_match(q.required) {
                pending.push(Pending {
                    lo: m.min_ts,
                    hi: m.max_ts,
                    src,
                });
            } else {
                skipped += 1;
            }
        }
        Part::Open(open) => {
            let v = open_entries(open, q.start, q.end, q.required);
            if let (Some(f), Some(l)) = (v.first(), v.last()) {
                let (lo, hi) = (f.ts, l.ts);
                pending.push(Pending {
                    lo,
                    hi,
                    src: Src::Sorted(v),
                });
            }
        }
    });
    // The next source to open goes last.
    match q.direction {
        Direction::Forward => pending.sort_by_key(|p| std::cmp::Reverse(p.lo)),
        Direction::Backward => pending.sort_by_key(|p| p.hi),
    }
    StreamIter {
        pending,
        active: Vec::new(),
        direction: q.direction,
        start: q.start,
        end: q.end,
        required: q.required.iter().map(|n| n.to_vec()).collect(),
        remaining: if q.limit == 0 { usize::MAX } else { q.limit },
        failed: false,
        blocks_read: 0,
        blocks_skipped: skipped,
        lines_scanned: 0,
        bytes_scanned: 0,
        dup_ts: i64::MIN,
        dup_lines: Vec::new(),
    }
}

fn stream_in_range(st: &ProjState, sid: u32, start: i64, end: i64) -> bool {
    let mut any = false;
    for_each_part(st, sid, start, end, |part| {
        any = any
            || match part {
                Part::Block(..) => true,
                Part::Open(open) => open.iter().any(|e| e.ts >= start && e.ts < end),
            }
    });
    any
}

#[derive(PartialEq, Eq)]
struct HeapItem {
    key: i64,
    stream: usize,
}
impl Ord for HeapItem {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // Max-heap: the largest key pops first; ties by lower stream index.
        self.key.cmp(&o.key).then(o.stream.cmp(&self.stream))
    }
}
impl PartialOrd for HeapItem {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Store {
    /// The streams of `project` matching `q.matchers` with their entry
    /// iterators (each limited to `q.limit`), ordered by label set. Streams
    /// with no block or head entry in the range are left out.
    pub fn select(&self, project: &str, q: &Query) -> Vec<(Labels, StreamIter)> {
        let Some(p) = read(&self.projects).get(project).cloned() else {
            return Vec::new();
        };
        let st = read(&p.state);
        let mut out: Vec<(Labels, StreamIter)> = matching_sids(&st, q.matchers)
            .into_iter()
            .filter(|&sid| stream_in_range(&st, sid, q.start, q.end))
            .map(|sid| {
                (
                    st.streams[sid as usize].labels.clone(),
                    stream_iter(&st, sid, q),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Entries of all matching streams merged in time order, at most
    /// `q.limit` in all (the oldest forward, the newest backward), grouped
    /// per stream (streams ordered by label set, empty ones left out).
    pub fn query(&self, project: &str, q: &Query) -> Result<Vec<(Labels, Vec<Entry>)>, Error> {
        let mut streams = self.select(
            project,
            &Query {
                limit: 0,
                ..q.clone()
            },
        );
        let mut heads: Vec<Option<Entry>> = Vec::with_capacity(streams.len());
        let mut heap = BinaryHeap::new();
        let key = |t: i64| match q.direction {
            Direction::Forward => -t,
            Direction::Backward => t,
        };
        for (i, (_, it)) in streams.iter_mut().enumerate() {
            let e = it.next().transpose()?;
            if let Some(e) = &e {
                heap.push(HeapItem {
                    key: key(e.ts),
                    stream: i,
                });
            }
            heads.push(e);
        }
        let mut out: Vec<Vec<Entry>> = vec![Vec::new(); streams.len()];
        let mut left = if q.limit == 0 { usize::MAX } else { q.limit };
        while left > 0 {
            let Some(HeapItem { stream, .. }) = heap.pop() else {
                break;
            };
            let e = heads[stream].take().expect("a heap item has a head entry");
            out[stream].push(e);
            left -= 1;
            if let Some(n) = streams[stream].1.next().transpose()? {
                heap.push(HeapItem {
                    key: key(n.ts),
                    stream,
                });
                heads[stream] = Some(n);
            }
        }
        Ok(streams
            .into_iter()
            .zip(out)
            .filter(|(_, v)| !v.is_empty())
            .map(|((l, _), v)| (l, v))
            .collect())
    }

    /// Label sets of the streams matching `matchers` with data in the
    /// range, sorted.
    pub fn series(&self, project: &str, matchers: &[Matcher], start: i64, end: i64) -> Vec<Labels> {
        let Some(p) = read(&self.projects).get(project).cloned() else {
            return Vec::new();
        };
        let st = read(&p.state);
        let mut v: Vec<Labels> = matching_sids(&st, matchers)
            .into_iter()
            .filter(|&sid| stream_in_range(&st, sid, start, end))
            .map(|sid| st.streams[sid as usize].labels.clone())
            .collect();
        v.sort();
        v
    }

    /// Label names of the streams with data in the range, sorted.
    pub fn labels(&self, project: &str, start: i64, end: i64) -> Vec<String> {
        let mut names: Vec<String> = self
            .series(project, &[], start, end)
            .iter()
            .flat_map(|l| l.iter().map(|l| l.name.clone()).collect::<Vec<_>>())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Values of label `name` among the streams matching `matchers` with
    /// data in the range, sorted.
    pub fn label_values(
        &self,
        project: &str,
        name: &str,
        start: i64,
        end: i64,
        matchers: &[Matcher],
    ) -> Vec<String> {
        let mut vals: Vec<String> = self
            .series(project, matchers, start, end)
            .iter()
            .filter_map(|l| l.get(name).map(str::to_string))
            .collect();
        vals.sort();
        vals.dedup();
        vals
    }

    /// Loki's index stats for the matching streams in the range.
    pub fn stats(&self, project: &str, matchers: &[Matcher], start: i64, end: i64) -> Stats {
        let Some(p) = read(&self.projects).get(project).cloned() else {
            return Stats::default();
        };
        let st = read(&p.state);
        let mut s = Stats::default();
        for sid in matching_sids(&st, matchers) {
            let before = s;
            for_each_part(&st, sid, start, end, |part| match part {
                Part::Block(m, _) => {
                    s.chunks += 1;
                    s.entries += u64::from(m.entries);
                    s.bytes += m.line_bytes;
                }
                Part::Open(open) => {
                    let mut any = false;
                    for e in open.iter().filter(|e| e.ts >= start && e.ts < end) {
                        any = true;
                        s.entries += 1;
                        s.bytes += e.line.len() as u64;
                    }
                    s.chunks += u64::from(any);
                }
            });
            if s != before {
                s.streams += 1;
            }
        }
        s
    }
}
