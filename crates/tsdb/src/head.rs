//! The head: one project's recent data in memory, as compressed chunks.
//!
//! A [`Head`] holds its project's series (labels interned as symbol ids),
//! a postings index (label name → value → sorted series refs), and per
//! series a list of closed chunks plus one open chunk being appended to,
//! for floats (Gorilla XOR) and for native histograms, and a small sorted
//! out-of-order buffer.
//!
//! A project's head is split into [`SHARDS`] shards by label hash, each a
//! [`Head`] behind its own mutex (owned by [`crate::db`]), so appends of
//! one project run on several cores. An append takes each shard it
//! touches once, does one hash lookup per series (the hash is computed
//! before the lock) and no allocation per sample (the open chunk's byte
//! vector grows amortised), and queues its WAL records while still holding
//! that shard, so the WAL's order of samples per series is the head's
//! order and replay rebuilds the same head.
//!
//! Series refs are dense indexes into a shard's `series`, never reused. A
//! series whose data all went into blocks is removed at the cut (its slot
//! becomes `None`, its symbols and postings are rebuilt away); if it gets a
//! sample again it is created anew with a new ref. WAL records name series
//! by `local ref × SHARDS + shard`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use model::{HistogramValue, Label, Labels, Matcher};

use crate::chunk::{
    Encoding, HistAppender, HistIter, SAMPLES_PER_CHUNK, XorAppender, XorIter, decode_floats,
    encode_dec,
};
use crate::postings::{self, Index};
use crate::wal::{self, SamplesEncoder};
use crate::{AppendReport, RejectReason};

/// Hasher for keys that are already hashes (series label hashes).
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b) ^ (self.0 >> 56);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = u64::from(v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Appends a series' key — its labels as `name 0xff value 0xff …` —
/// to `out`. `0xff` never occurs in UTF-8, so keys are equal exactly when
/// label sets are; the head keeps each series' key in one allocation, so
/// checking a hash hit is one comparison of adjacent bytes.
pub(crate) fn series_key(l: &Labels, out: &mut Vec<u8>) {
    for x in l {
        out.extend_from_slice(x.name.as_bytes());
        out.push(0xff);
        out.extend_from_slice(x.value.as_bytes());
        out.push(0xff);
    }
}

/// The pairs of a key written by [`series_key`].
fn key_pairs(key: &[u8]) -> impl Iterator<Item = (&str, &str)> {
    let mut parts = key.split(|b| *b == 0xff);
    std::iter::from_fn(move || {
        let n = parts.next().filter(|n| !n.is_empty())?;
        let v = parts.next()?;
        // Keys are built from `String`s: always UTF-8.
        Some((
            std::str::from_utf8(n).unwrap_or_default(),
            std::str::from_utf8(v).unwrap_or_default(),
        ))
    })
}

/// Appends `v` to `out` as an unsigned LEB128 varint.
fn put_id(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The (name, value) symbol-id pairs of a series' [`MemSeries::labels`].
fn id_pairs(ids: &[u8]) -> impl Iterator<Item = (u32, u32)> + '_ {
    let mut i = 0;
    let mut next = move || {
        let mut v = 0u32;
        let mut shift = 0;
        loop {
            let b = ids[i];
            i += 1;
            v |= u32::from(b & 0x7f) << shift;
            if b < 0x80 {
                return (v, i);
            }
            shift += 7;
        }
    };
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= ids.len() {
            return None;
        }
        let (n, _) = next();
        let (v, end) = next();
        at = end;
        Some((n, v))
    })
}

/// The head's series hash over a [`series_key`]: 8 bytes per step, only
/// ever used in memory and to pick a shard. It decides the shard a WAL ref
/// names, so changing it is a WAL format change.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = K ^ key.len() as u64;
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(a)).wrapping_mul(K).rotate_left(31);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut a = [0u8; 8];
        a[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(a)).wrapping_mul(K).rotate_left(31);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// [`key_hash`] of a label set's key.
pub(crate) fn label_hash(l: &Labels) -> u64 {
    let mut k = Vec::new();
    series_key(l, &mut k);
    key_hash(&k)
}

/// The keys and hashes of a batch's series, computed before any lock.
pub(crate) struct BatchKeys {
    buf: Vec<u8>,
    ends: Vec<usize>,
    pub hashes: Vec<u64>,
}

impl BatchKeys {
    pub fn new(batch: &model::WriteBatch) -> BatchKeys {
        let mut buf = Vec::with_capacity(batch.series.len() * 128);
        let mut ends = Vec::with_capacity(batch.series.len());
        let mut hashes = Vec::with_capacity(batch.series.len());
        for ts in &batch.series {
            let start = buf.len();
            series_key(&ts.labels, &mut buf);
            hashes.push(key_hash(&buf[start..]));
            ends.push(buf.len());
        }
        BatchKeys { buf, ends, hashes }
    }

    pub fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }
}

/// Interned strings: each distinct label name or value is stored once.
#[derive(Default)]
pub(crate) struct Symbols {
    map: HashMap<Arc<str>, u32>,
    strs: Vec<Arc<str>>,
}

impl Symbols {
    pub fn intern(&mut self, s: &str) -> u32 {
        if let Some(id) = self.map.get(s) {
            return *id;
        }
        let a: Arc<str> = Arc::from(s);
        let id = self.strs.len() as u32;
        self.strs.push(a.clone());
        self.map.insert(a, id);
        id
    }
    pub fn get(&self, s: &str) -> Option<u32> {
        self.map.get(s).copied()
    }
    pub fn str(&self, id: u32) -> &str {
        &self.strs[id as usize]
    }
}

/// A closed chunk, shared with queries by reference count.
#[derive(Clone, Debug)]
pub(crate) struct MemChunk {
    pub enc: Encoding,
    pub mint: i64,
    pub maxt: i64,
    pub data: Arc<[u8]>,
}

/// Native histogram state of a series (boxed: most series have none).
#[derive(Default)]
pub(crate) struct HistSeries {
    closed: Vec<MemChunk>,
    open: Option<HistAppender>,
    open_mint: i64,
    last_t: Option<i64>,
    last: Option<HistogramValue>,
}

/// One series in the head. Guarded by the head's mutex; nothing is read
/// without it.
pub(crate) struct MemSeries {
    /// Its labels as (name, value) ids of the shard's [`Symbols`], varints
    /// (see [`id_pairs`]): a few bytes per label, where the strings
    /// themselves (already interned for the postings) would take ~130.
    labels: Box<[u8]>,
    /// Closed chunks, oldest first (a boxed slice: one word less than a
    /// `Vec`, reallocated once per closed chunk).
    closed: Box<[MemChunk]>,
    open: Option<XorAppender>,
    open_mint: i64,
    /// Newest in-order float timestamp and value bits (`i64::MIN`: none yet).
    last_t: i64,
    last_v: u64,
    /// Accepted out-of-order samples, sorted by time.
    ooo: Ooo,
    hist: Option<Box<HistSeries>>,
}

/// Out-of-order samples of a series, sorted by time: one pointer while
/// empty, as for almost every series. Together with the boxed `closed`
/// this keeps [`MemSeries`] at 128 bytes, an allocator size class below
/// the 160 it took with two `Vec`s.
#[derive(Default)]
#[expect(
    clippy::box_collection,
    reason = "one pointer in every series instead of a three-word Vec"
)]
struct Ooo(Option<Box<Vec<(i64, f64)>>>);

impl std::ops::Deref for Ooo {
    type Target = [(i64, f64)];
    fn deref(&self) -> &[(i64, f64)] {
        self.0.as_deref().map_or(&[], |v| v.as_slice())
    }
}

impl Ooo {
    fn insert(&mut self, i: usize, x: (i64, f64)) {
        self.0.get_or_insert_default().insert(i, x);
    }
    fn retain(&mut self, keep: impl FnMut(&(i64, f64)) -> bool) {
        if let Some(v) = &mut self.0 {
            v.retain(keep);
            if v.is_empty() {
                self.0 = None;
            }
        }
    }
}

/// Appends a closed chunk to a series' boxed slice of them.
fn push_chunk(closed: &mut Box<[MemChunk]>, c: MemChunk) {
    let mut v = std::mem::take(closed).into_vec();
    v.push(c);
    *closed = v.into_boxed_slice();
}

/// Data of one series for a query: labels and the chunks that overlap the
/// range (shared bytes, not decoded).
pub(crate) struct SeriesData {
    pub labels: Labels,
    pub floats: Vec<MemChunk>,
    pub hists: Vec<MemChunk>,
}

/// One series' data before a cut point, as taken under the shard's lock.
pub(crate) struct Snapshot {
    key: Box<[u8]>,
    floats: Vec<MemChunk>,
    hists: Vec<MemChunk>,
    before: i64,
}

impl Snapshot {
    /// Orders snapshots as their label sets ([`Labels`]' order).
    pub fn cmp_labels(&self, other: &Snapshot) -> std::cmp::Ordering {
        key_pairs(&self.key).cmp(key_pairs(&other.key))
    }

    /// Labels, and chunks holding exactly the samples before the cut
    /// (out-of-order ones merged in); `None` if nothing is left.
    pub fn finish(self) -> Option<SeriesData> {
        let floats = rechunk_floats(&self.floats, self.before, true);
        let hists = rechunk_hists(&self.hists, self.before, true);
        if floats.is_empty() && hists.is_empty() {
            return None;
        }
        Some(SeriesData {
            labels: Labels::from_sorted_unchecked(
                key_pairs(&self.key)
                    .map(|(n, v)| Label::new(n, v))
                    .collect(),
            ),
            floats,
            hists,
        })
    }
}

/// Limits and windows the head enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeadLimits {
    pub ooo_window_ms: i64,
    pub max_series: usize,
    pub block_duration_ms: i64,
}

/// Heads per project. Each is a shard of the project's series (by label
/// hash) behind its own mutex, so concurrent appends of one project run
/// in parallel. Part of the WAL format (refs encode their shard), so
/// changing it means a new WAL version; so does changing [`label_hash`].
pub const SHARDS: u32 = 8;

/// How many rejections an [`AppendReport`] lists one by one.
pub const MAX_LISTED_REJECTIONS: usize = 10;

/// One project's head.
pub(crate) struct Head {
    pub project_id: u32,
    /// This head's shard number (`< SHARDS`).
    shard: u32,
    limits: HeadLimits,
    syms: Symbols,
    /// By ref; `None` once garbage-collected (refs are never reused, so
    /// WAL records stay unambiguous).
    series: Vec<Option<Box<MemSeries>>>,
    live: usize,
    by_hash: IdMap<u64, u32>,
    /// Further series whose label hash collides with the one in `by_hash`.
    collisions: IdMap<u64, Vec<u32>>,
    postings: IdMap<u32, IdMap<u32, Vec<u32>>>,
    /// Which values of a label regex matchers matched (see [`postings::MatchCache`]);
    /// emptied when [`Head::gc`] renumbers the symbols.
    match_cache: postings::MatchCache,
    /// Samples older than this are rejected as too old: it is the end of
    /// the newest block cut from this head.
    pub min_valid_t: i64,
    /// Time range of the data in the head (`i64::MAX, i64::MIN` if none).
    pub mint: i64,
    pub maxt: i64,
    /// Samples accepted since the process started (replay included).
    pub samples_appended: u64,
}

fn new_chunk_needed(open: &Option<XorAppender>, open_mint: i64, t: i64, block: i64) -> bool {
    match open {
        None => true,
        Some(a) => {
            a.count() >= SAMPLES_PER_CHUNK || t.div_euclid(block) != open_mint.div_euclid(block)
        }
    }
}

impl Head {
    pub fn new(project_id: u32, shard: u32, limits: HeadLimits, min_valid_t: i64) -> Head {
        Head {
            project_id,
            shard,
            limits,
            syms: Symbols::default(),
            series: Vec::new(),
            live: 0,
            by_hash: IdMap::default(),
            collisions: IdMap::default(),
            postings: IdMap::default(),
            match_cache: postings::MatchCache::default(),
            min_valid_t,
            mint: i64::MAX,
            maxt: i64::MIN,
            samples_appended: 0,
        }
    }

    /// The ref the next new series gets; the series limit (for `keyed`).
    pub(crate) fn next_ref(&self) -> u32 {
        self.series.len() as u32
    }
    pub(crate) fn max_series(&self) -> usize {
        self.limits.max_series
    }

    /// Live series.
    /// Changes the project's series limit this shard enforces.
    pub fn set_max_series(&mut self, n: usize) {
        self.limits.max_series = n;
    }

    pub fn num_series(&self) -> usize {
        self.live
    }

    fn get(&self, r: u32) -> &MemSeries {
        self.series[r as usize]
            .as_deref()
            .expect("bug: a dead series ref was used")
    }

    fn get_mut(&mut self, r: u32) -> &mut MemSeries {
        self.series[r as usize]
            .as_deref_mut()
            .expect("bug: a dead series ref was used")
    }

    /// Refs of the live series, in order.
    pub fn live_refs(&self) -> Vec<u32> {
        (0..self.series.len() as u32)
            .filter(|r| self.series[*r as usize].is_some())
            .collect()
    }

    pub(crate) fn lookup(&self, hash: u64, key: &[u8]) -> Option<u32> {
        let r = *self.by_hash.get(&hash)?;
        if self.key_matches(&self.get(r).labels, key) {
            return Some(r);
        }
        self.collisions
            .get(&hash)?
            .iter()
            .copied()
            .find(|r| self.key_matches(&self.get(*r).labels, key))
    }

    /// Whether a series' label ids spell `key` (a [`series_key`]).
    fn key_matches(&self, ids: &[u8], mut key: &[u8]) -> bool {
        for (n, v) in id_pairs(ids) {
            for id in [n, v] {
                let s = self.syms.str(id).as_bytes();
                match key.strip_prefix(s).and_then(|k| k.split_first()) {
                    Some((0xff, rest)) => key = rest,
                    _ => return false,
                }
            }
        }
        key.is_empty()
    }

    /// A series' labels as (name, value) strings, in order.
    fn pairs<'a>(&'a self, ids: &'a [u8]) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        id_pairs(ids).map(|(n, v)| (self.syms.str(n), self.syms.str(v)))
    }

    /// The [`series_key`] of series `r`.
    fn key_of(&self, r: u32) -> Box<[u8]> {
        let mut k = Vec::new();
        for (n, v) in self.pairs(&self.get(r).labels) {
            k.extend_from_slice(n.as_bytes());
            k.push(0xff);
            k.extend_from_slice(v.as_bytes());
            k.push(0xff);
        }
        k.into_boxed_slice()
    }

    /// Creates series `r` (a new ref: at or past the end); the caller
    /// checked that the labels do not exist.
    pub(crate) fn create(&mut self, r: u32, hash: u64, key: &[u8]) -> u32 {
        while self.series.len() < r as usize {
            self.series.push(None);
        }
        let mut ids = Vec::with_capacity(32);
        for (n, v) in key_pairs(key) {
            let n = self.syms.intern(n);
            let v = self.syms.intern(v);
            put_id(&mut ids, n);
            put_id(&mut ids, v);
            self.postings
                .entry(n)
                .or_default()
                .entry(v)
                .or_default()
                .push(r);
        }
        self.live += 1;
        self.series.push(Some(Box::new(MemSeries {
            labels: ids.into_boxed_slice(),
            closed: Box::default(),
            open: None,
            open_mint: 0,
            last_t: i64::MIN,
            last_v: 0,
            ooo: Ooo::default(),
            hist: None,
        })));
        match self.by_hash.entry(hash) {
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collisions.entry(hash).or_default().push(r);
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(r);
            }
        }
        r
    }

    pub fn labels(&self, r: u32) -> Labels {
        Labels::from_sorted_unchecked(
            self.pairs(&self.get(r).labels)
                .map(|(n, v)| Label::new(n, v))
                .collect(),
        )
    }

    fn note_time(&mut self, t: i64) {
        self.mint = self.mint.min(t);
        self.maxt = self.maxt.max(t);
    }

    /// Appends a float sample to series `r`, or says why not. `Ok(false)`:
    /// an exact duplicate, accepted without storing it again.
    pub fn append_float(&mut self, r: u32, t: i64, v: f64) -> Result<bool, RejectReason> {
        if t < self.min_valid_t {
            return Err(RejectReason::TooOld);
        }
        let block = self.limits.block_duration_ms;
        let window = self.limits.ooo_window_ms;
        let s = self.series[r as usize]
            .as_deref_mut()
            .expect("bug: a dead series ref was used");
        if s.last_t == i64::MIN || t > s.last_t {
            if new_chunk_needed(&s.open, s.open_mint, t, block) {
                if let Some(a) = s.open.take() {
                    push_chunk(&mut s.closed, close_float_chunk(a, s.open_mint, s.last_t));
                }
                s.open = Some(XorAppender::default());
                s.open_mint = t;
            }
            if let Some(a) = s.open.as_mut() {
                a.append(t, v);
            }
            s.last_t = t;
            s.last_v = v.to_bits();
        } else if t == s.last_t {
            return if v.to_bits() == s.last_v {
                Ok(false)
            } else {
                Err(RejectReason::DuplicateTimestamp)
            };
        } else if window > 0 && t >= s.last_t.saturating_sub(window) {
            if let Some(bits) = in_order_value(s, t) {
                return if bits == v.to_bits() {
                    Ok(false)
                } else {
                    Err(RejectReason::DuplicateTimestamp)
                };
            }
            match s.ooo.binary_search_by_key(&t, |x| x.0) {
                Ok(i) => {
                    return if s.ooo[i].1.to_bits() == v.to_bits() {
                        Ok(false)
                    } else {
                        Err(RejectReason::DuplicateTimestamp)
                    };
                }
                Err(i) => s.ooo.insert(i, (t, v)),
            }
        } else {
            return Err(RejectReason::OutOfOrder);
        }
        self.note_time(t);
        self.samples_appended += 1;
        Ok(true)
    }

    /// Appends a histogram sample (no out-of-order window for histograms).
    pub fn append_hist(
        &mut self,
        r: u32,
        t: i64,
        h: &HistogramValue,
    ) -> Result<bool, RejectReason> {
        if t < self.min_valid_t {
            return Err(RejectReason::TooOld);
        }
        let valid = match h {
            HistogramValue::Int(h) => h.validate().is_ok(),
            HistogramValue::Float(h) => h.validate().is_ok(),
        };
        if !valid {
            return Err(RejectReason::InvalidHistogram);
        }
        let block = self.limits.block_duration_ms;
        let hs = self.get_mut(r).hist.get_or_insert_with(Default::default);
        match hs.last_t {
            Some(last) if t < last => return Err(RejectReason::OutOfOrder),
            Some(last) if t == last => {
                return if hs.last.as_ref() == Some(h) {
                    Ok(false)
                } else {
                    Err(RejectReason::DuplicateTimestamp)
                };
            }
            _ => {}
        }
        let cut = match &hs.open {
            None => true,
            Some(a) => {
                a.count() >= SAMPLES_PER_CHUNK
                    || t.div_euclid(block) != hs.open_mint.div_euclid(block)
            }
        };
        if cut {
            if let (Some(a), Some(last)) = (hs.open.take(), hs.last_t) {
                hs.closed.push(MemChunk {
                    enc: Encoding::Histogram,
                    mint: hs.open_mint,
                    maxt: last,
                    data: Arc::from(a.finish()),
                });
            }
            hs.open = Some(HistAppender::default());
            hs.open_mint = t;
        }
        if let Some(a) = hs.open.as_mut() {
            a.append(t, h);
        }
        hs.last_t = Some(t);
        hs.last = Some(h.clone());
        self.note_time(t);
        self.samples_appended += 1;
        Ok(true)
    }

    /// Appends a batch: finds or creates each series, appends each sample,
    /// and writes the WAL records of what was accepted (framed) to `wal_out`.
    /// The caller validated the batch (non-empty label sets).
    /// `hashes[i]` is [`label_hash`] of series `i` (computed by the caller
    /// before taking the head's lock).
    ///
    /// Only the series at `indexes` of the batch are this shard's. `total`
    /// counts the project's live series across shards (for the limit).
    pub fn append_batch(
        &mut self,
        batch: &model::WriteBatch,
        indexes: &[usize],
        keys: &BatchKeys,
        total: &AtomicUsize,
        report: &mut AppendReport,
        wal_out: &mut Vec<u8>,
    ) {
        let mut new_series: Vec<u32> = Vec::new();
        let mut samples = SamplesEncoder::default();
        let mut hists: Vec<(u32, i64, &HistogramValue)> = Vec::new();
        for &i in indexes {
            let (ts, hash, key) = (&batch.series[i], keys.hashes[i], keys.key(i));
            let r = match self.lookup(hash, key) {
                Some(r) => r,
                None => {
                    if total.fetch_add(1, Ordering::Relaxed) >= self.limits.max_series {
                        total.fetch_sub(1, Ordering::Relaxed);
                        for s in &ts.samples {
                            report.reject(RejectReason::SeriesLimit, &ts.labels, s.t);
                        }
                        for h in &ts.histograms {
                            report.reject(RejectReason::SeriesLimit, &ts.labels, h.t);
                        }
                        continue;
                    }
                    let r = self.create(self.series.len() as u32, hash, key);
                    new_series.push(r);
                    report.new_series += 1;
                    r
                }
            };
            let mut begun = false;
            for s in &ts.samples {
                match self.append_float(r, s.t, s.v) {
                    Ok(stored) => {
                        report.accepted_samples += 1;
                        if stored {
                            if !begun {
                                samples.begin_series(self.wal_ref(r));
                                begun = true;
                            }
                            samples.push(s.t, s.v);
                        }
                    }
                    Err(reason) => report.reject(reason, &ts.labels, s.t),
                }
            }
            for h in &ts.histograms {
                match self.append_hist(r, h.t, &h.h) {
                    Ok(stored) => {
                        report.accepted_histograms += 1;
                        if stored {
                            hists.push((self.wal_ref(r), h.t, &h.h));
                        }
                    }
                    Err(reason) => report.reject(reason, &ts.labels, h.t),
                }
            }
        }
        let mut payload = Vec::new();
        let mut frame = |payload: &mut Vec<u8>| {
            // Payloads are never empty (a type byte at least); a record over
            // 4 GiB cannot come from a bounded request.
            diskio::encode_record(wal_out, payload).expect("bug: WAL record empty or over 4 GiB");
            payload.clear();
        };
        if !new_series.is_empty() {
            let list: Vec<(u32, Vec<(&str, &str)>)> = new_series
                .iter()
                .map(|r| {
                    let s = self.get(*r);
                    (self.wal_ref(*r), self.pairs(&s.labels).collect())
                })
                .collect();
            wal::encode_series(&mut payload, self.project_id, list.into_iter());
            frame(&mut payload);
        }
        if !samples.is_empty() {
            samples.finish(self.project_id, &mut payload);
            frame(&mut payload);
        }
        if !hists.is_empty() {
            wal::encode_histograms(&mut payload, self.project_id, &hists);
            frame(&mut payload);
        }
    }

    /// The ref a series of this shard has in WAL records: its local ref
    /// times the shard count, plus the shard.
    pub fn wal_ref(&self, r: u32) -> u32 {
        r * SHARDS + self.shard
    }

    /// Replay: a series record (local ref). Refs are dense; a ref seen
    /// again (in a checkpoint and a segment) is ignored. `Ok(true)` if the
    /// series was created.
    pub fn replay_series(&mut self, r: u32, labels: &Labels) -> Result<bool, String> {
        if (r as usize) < self.series.len() {
            return Ok(false);
        }
        let mut key = Vec::new();
        series_key(labels, &mut key);
        let hash = key_hash(&key);
        if self.lookup(hash, &key).is_some() {
            return Err(format!(
                "series ref {} repeats the labels of a live series: {labels}",
                self.wal_ref(r)
            ));
        }
        self.create(r, hash, &key);
        Ok(true)
    }

    pub fn has_series(&self, r: u32) -> bool {
        self.series.get(r as usize).is_some_and(|s| s.is_some())
    }

    /// Series refs matching `matchers`.
    pub fn matching(&self, matchers: &[Matcher]) -> Vec<u32> {
        postings::resolve(self, matchers)
    }

    /// The data of the matching series that overlaps `[mint, maxt]`,
    /// sorted by labels. Series without data in range are left out.
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesData> {
        let mut out = Vec::new();
        for r in self.matching(matchers) {
            let (floats, hists) = self.chunks(r, mint, maxt);
            if floats.is_empty() && hists.is_empty() {
                continue;
            }
            out.push(SeriesData {
                labels: self.labels(r),
                floats,
                hists,
            });
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    /// The series' chunks overlapping `[mint, maxt]` (the open chunk and the
    /// out-of-order buffer copied into chunks of their own).
    fn chunks(&self, r: u32, mint: i64, maxt: i64) -> (Vec<MemChunk>, Vec<MemChunk>) {
        let s = self.get(r);
        let overlaps = |c: &&MemChunk| c.mint <= maxt && c.maxt >= mint;
        let mut floats: Vec<MemChunk> = s.closed.iter().filter(overlaps).cloned().collect();
        if let Some(a) = &s.open
            && s.open_mint <= maxt
            && s.last_t >= mint
        {
            floats.push(MemChunk {
                enc: Encoding::Xor,
                mint: s.open_mint,
                maxt: s.last_t,
                data: Arc::from(a.bytes()),
            });
        }
        let ooo: Vec<&(i64, f64)> = s
            .ooo
            .iter()
            .filter(|(t, _)| *t >= mint && *t <= maxt)
            .collect();
        for part in ooo.chunks(SAMPLES_PER_CHUNK as usize) {
            let mut a = XorAppender::default();
            for (t, v) in part {
                a.append(*t, *v);
            }
            floats.push(MemChunk {
                enc: Encoding::Xor,
                mint: part[0].0,
                maxt: part[part.len() - 1].0,
                data: Arc::from(a.finish()),
            });
        }
        let mut hists = Vec::new();
        if let Some(hs) = &s.hist {
            hists.extend(hs.closed.iter().filter(overlaps).cloned());
            if let (Some(a), Some(last)) = (&hs.open, hs.last_t)
                && hs.open_mint <= maxt
                && last >= mint
            {
                hists.push(MemChunk {
                    enc: Encoding::Histogram,
                    mint: hs.open_mint,
                    maxt: last,
                    data: Arc::from(a.bytes()),
                });
            }
        }
        (floats, hists)
    }

    /// Label names of the matching series (all series if no matcher), sorted.
    pub fn label_names(&self, matchers: &[Matcher]) -> Vec<String> {
        if matchers.is_empty() {
            let mut v: Vec<String> = self
                .postings
                .keys()
                .map(|n| self.syms.str(*n).to_string())
                .collect();
            v.sort();
            return v;
        }
        let mut names: std::collections::BTreeSet<&str> = Default::default();
        for r in self.matching(matchers) {
            names.extend(self.pairs(&self.get(r).labels).map(|p| p.0));
        }
        names.into_iter().map(str::to_string).collect()
    }

    /// Values of label `name` among the matching series, sorted.
    pub fn label_values(&self, name: &str, matchers: &[Matcher]) -> Vec<String> {
        let Some(nid) = self.syms.get(name) else {
            return Vec::new();
        };
        let mut v: Vec<String> = if matchers.is_empty() {
            self.postings
                .get(&nid)
                .map(|m| m.keys().map(|v| self.syms.str(*v).to_string()).collect())
                .unwrap_or_default()
        } else {
            let values: std::collections::BTreeSet<&str> = self
                .matching(matchers)
                .into_iter()
                .filter_map(|r| {
                    self.pairs(&self.get(r).labels)
                        .find(|p| p.0 == name)
                        .map(|p| p.1)
                })
                .collect();
            values.into_iter().map(str::to_string).collect()
        };
        v.sort();
        v
    }

    /// Series counts per metric name, largest first.
    pub fn top_metrics(&self, n: usize) -> Vec<(String, usize)> {
        let Some(nid) = self.syms.get(model::METRIC_NAME) else {
            return Vec::new();
        };
        let mut v: Vec<(String, usize)> = self
            .postings
            .get(&nid)
            .map(|m| {
                m.iter()
                    .map(|(v, p)| (self.syms.str(*v).to_string(), p.len()))
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// Samples held in the head (chunk headers summed).
    pub fn sample_count(&self) -> u64 {
        let n = |b: &[u8]| u64::from(u16::from_be_bytes([b[0], b[1]]));
        let mut total = 0u64;
        for s in self.series.iter().flatten() {
            total += s.closed.iter().map(|c| n(&c.data)).sum::<u64>();
            total += s.open.as_ref().map_or(0, |a| u64::from(a.count()));
            total += s.ooo.len() as u64;
            if let Some(h) = &s.hist {
                total += h.closed.iter().map(|c| n(&c.data)).sum::<u64>();
                total += h.open.as_ref().map_or(0, |a| u64::from(a.count()));
            }
        }
        total
    }

    /// Approximate heap bytes of the head (chunks and series structs).
    pub fn approx_bytes(&self) -> usize {
        let mut b = self.series.capacity() * 8;
        for s in self.series.iter().flatten() {
            b += std::mem::size_of::<MemSeries>();
            b += s.labels.len();
            b += s.closed.iter().map(|c| c.data.len() + 48).sum::<usize>();
            b += s.open.as_ref().map_or(0, |a| a.capacity());
            b += s.ooo.len() * 16;
        }
        b
    }

    // ------------------------------------------------------------ cutting

    /// Everything with `t < before`, per series, for a block. Also raises
    /// `min_valid_t` to `before`, so the data returned cannot change.
    ///
    /// Quick (the shard is locked meanwhile): it only collects each series'
    /// key and chunk references; [`Snapshot::finish`] does the rest outside
    /// the lock.
    pub fn snapshot_before(&mut self, before: i64) -> Vec<Snapshot> {
        self.min_valid_t = self.min_valid_t.max(before);
        let mut out = Vec::new();
        for r in self.live_refs() {
            let (floats, hists) = self.chunks(r, i64::MIN, before - 1);
            if floats.is_empty() && hists.is_empty() {
                continue;
            }
            out.push(Snapshot {
                key: self.key_of(r),
                floats,
                hists,
                before,
            });
        }
        out
    }

    /// Drops everything with `t < before` (it is now in a block), then the
    /// series left without data; returns how many series went.
    pub fn drop_before(&mut self, before: i64) -> usize {
        let mut mint = i64::MAX;
        for s in self.series.iter_mut().flatten() {
            let mut keep: Vec<MemChunk> = Vec::with_capacity(s.closed.len());
            for c in std::mem::take(&mut s.closed).into_vec() {
                if c.mint >= before {
                    keep.push(c);
                } else if c.maxt >= before {
                    keep.extend(rechunk_floats(&[c], before, false));
                }
            }
            s.closed = keep.into_boxed_slice();
            if s.open.is_some() && s.open_mint < before {
                let old = s.open.take().map(|a| a.finish()).unwrap_or_default();
                let mut a = XorAppender::default();
                let mut first = None;
                for (t, v) in XorIter::new(&old).into_iter().flatten().flatten() {
                    if t >= before {
                        first.get_or_insert(t);
                        a.append(t, v);
                    }
                }
                if let Some(f) = first {
                    s.open = Some(a);
                    s.open_mint = f;
                }
            }
            s.ooo.retain(|(t, _)| *t >= before);
            if let Some(hs) = &mut s.hist {
                let mut keep = Vec::new();
                for c in hs.closed.drain(..) {
                    if c.mint >= before {
                        keep.push(c);
                    } else if c.maxt >= before {
                        keep.extend(rechunk_hists(&[c], before, false));
                    }
                }
                hs.closed = keep;
                if hs.open.is_some() && hs.open_mint < before {
                    let old = hs.open.take().map(|a| a.finish()).unwrap_or_default();
                    let mut a = HistAppender::default();
                    let mut first = None;
                    for (t, h) in HistIter::new(&old).into_iter().flatten().flatten() {
                        if t >= before {
                            first.get_or_insert(t);
                            a.append(t, &h);
                        }
                    }
                    if let Some(f) = first {
                        hs.open = Some(a);
                        hs.open_mint = f;
                    }
                }
                for c in &hs.closed {
                    mint = mint.min(c.mint);
                }
                if hs.open.is_some() {
                    mint = mint.min(hs.open_mint);
                }
            }
            for c in &s.closed {
                mint = mint.min(c.mint);
            }
            if s.open.is_some() {
                mint = mint.min(s.open_mint);
            }
            if let Some((t, _)) = s.ooo.first() {
                mint = mint.min(*t);
            }
        }
        self.mint = mint;
        if mint == i64::MAX {
            self.maxt = i64::MIN;
        }
        self.gc()
    }

    /// Removes series that hold no data any more (all of it went into
    /// blocks), then rebuilds the symbol table and postings from the live
    /// series so that nothing of the dead ones stays in memory. A removed
    /// series that gets a sample again is created anew, with a new ref.
    fn gc(&mut self) -> usize {
        let mut removed = 0;
        for (r, slot) in self.series.iter_mut().enumerate() {
            let empty = slot.as_ref().is_some_and(|s| {
                s.closed.is_empty()
                    && s.open.is_none()
                    && s.ooo.is_empty()
                    && s.hist
                        .as_ref()
                        .is_none_or(|h| h.closed.is_empty() && h.open.is_none())
            });
            if empty {
                *slot = None;
                removed += 1;
                let _ = r;
            }
        }
        if removed == 0 {
            return 0;
        }
        self.live -= removed;
        let old = std::mem::take(&mut self.syms);
        let mut syms = Symbols::default();
        let mut key = Vec::new();
        let mut ids = Vec::new();
        let mut postings: IdMap<u32, IdMap<u32, Vec<u32>>> = IdMap::default();
        let mut by_hash: IdMap<u64, u32> = IdMap::default();
        let mut collisions: IdMap<u64, Vec<u32>> = IdMap::default();
        for (r, slot) in self.series.iter_mut().enumerate() {
            let Some(s) = slot.as_deref_mut() else {
                continue;
            };
            key.clear();
            ids.clear();
            for (n, v) in id_pairs(&s.labels) {
                let (n, v) = (old.str(n), old.str(v));
                for x in [n, v] {
                    key.extend_from_slice(x.as_bytes());
                    key.push(0xff);
                }
                let (n, v) = (syms.intern(n), syms.intern(v));
                put_id(&mut ids, n);
                put_id(&mut ids, v);
                postings
                    .entry(n)
                    .or_default()
                    .entry(v)
                    .or_default()
                    .push(r as u32);
            }
            s.labels = ids.as_slice().into();
            let hash = key_hash(&key);
            match by_hash.entry(hash) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    collisions.entry(hash).or_default().push(r as u32)
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(r as u32);
                }
            }
        }
        self.syms = syms;
        self.postings = postings;
        self.match_cache.clear();
        self.by_hash = by_hash;
        self.collisions = collisions;
        removed
    }
}

/// Closes a float chunk: kept in the decimal encoding when that is smaller
/// (counters and gauges usually are: about 1–3 bytes per sample against
/// 3–7 for XOR), else as XOR.
fn close_float_chunk(a: XorAppender, mint: i64, maxt: i64) -> MemChunk {
    let xor = a.finish();
    let dec = decode_floats(Encoding::Xor, &xor, mint)
        .ok()
        .and_then(|v| encode_dec(&v))
        .filter(|d| d.len() < xor.len());
    let (enc, data) = match dec {
        Some(d) => (Encoding::Dec, d),
        None => (Encoding::Xor, xor),
    };
    MemChunk {
        enc,
        mint,
        maxt,
        data: Arc::from(data),
    }
}

/// The value bits of an in-order sample of `s` at exactly `t`, if any
/// (decodes the one chunk whose range holds `t`; used for out-of-order
/// samples only).
fn in_order_value(s: &MemSeries, t: i64) -> Option<u64> {
    let find = |data: &[u8]| {
        XorIter::new(data)
            .ok()?
            .flatten()
            .find(|(x, _)| *x == t)
            .map(|(_, v)| v.to_bits())
    };
    if let Some(a) = &s.open
        && t >= s.open_mint
    {
        return find(a.bytes());
    }
    s.closed
        .iter()
        .rev()
        .find(|c| c.mint <= t && t <= c.maxt)
        .and_then(|c| decode_floats(c.enc, &c.data, c.mint).ok())
        .and_then(|v| v.iter().find(|x| x.0 == t).map(|x| x.1.to_bits()))
}

/// Re-encodes float chunks keeping samples `< at` (`below`) or `>= at`,
/// merged in time order (a later chunk wins a timestamp tie), in chunks of
/// at most [`SAMPLES_PER_CHUNK`].
pub(crate) fn rechunk_floats(chunks: &[MemChunk], at: i64, below: bool) -> Vec<MemChunk> {
    let sorted_disjoint = chunks.windows(2).all(|w| w[0].maxt < w[1].mint);
    let all_inside = chunks
        .iter()
        .all(|c| if below { c.maxt < at } else { c.mint >= at });
    if sorted_disjoint && all_inside {
        return chunks.to_vec();
    }
    let mut samples: Vec<(i64, usize, f64)> = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        for (t, v) in decode_floats(c.enc, &c.data, c.mint).unwrap_or_default() {
            if (t < at) == below {
                samples.push((t, i, v));
            }
        }
    }
    samples.sort_by_key(|x| (x.0, std::cmp::Reverse(x.1)));
    samples.dedup_by_key(|x| x.0);
    let mut out = Vec::new();
    for part in samples.chunks(SAMPLES_PER_CHUNK as usize) {
        let mut a = XorAppender::default();
        for (t, _, v) in part {
            a.append(*t, *v);
        }
        out.push(MemChunk {
            enc: Encoding::Xor,
            mint: part[0].0,
            maxt: part[part.len() - 1].0,
            data: Arc::from(a.finish()),
        });
    }
    out
}

/// [`rechunk_floats`] for histogram chunks.
pub(crate) fn rechunk_hists(chunks: &[MemChunk], at: i64, below: bool) -> Vec<MemChunk> {
    let sorted_disjoint = chunks.windows(2).all(|w| w[0].maxt < w[1].mint);
    let all_inside = chunks
        .iter()
        .all(|c| if below { c.maxt < at } else { c.mint >= at });
    if sorted_disjoint && all_inside {
        return chunks.to_vec();
    }
    let mut samples: Vec<(i64, usize, HistogramValue)> = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        for (t, h) in HistIter::new(&c.data).into_iter().flatten().flatten() {
            if (t < at) == below {
                samples.push((t, i, h));
            }
        }
    }
    samples.sort_by_key(|x| (x.0, std::cmp::Reverse(x.1)));
    samples.dedup_by_key(|x| x.0);
    let mut out = Vec::new();
    for part in samples.chunks(SAMPLES_PER_CHUNK as usize) {
        let mut a = HistAppender::default();
        for (t, _, h) in part {
            a.append(*t, h);
        }
        out.push(MemChunk {
            enc: Encoding::Histogram,
            mint: part[0].0,
            maxt: part[part.len() - 1].0,
            data: Arc::from(a.finish()),
        });
    }
    out
}

impl Index for Head {
    fn values_where(&self, name: &str, pred: &dyn Fn(&str) -> bool) -> Vec<(u32, usize)> {
        let Some(m) = self.syms.get(name).and_then(|n| self.postings.get(&n)) else {
            return Vec::new();
        };
        m.iter()
            .filter(|(v, _)| pred(self.syms.str(**v)))
            .map(|(v, p)| (*v, p.len()))
            .collect()
    }

    fn value_id(&self, id: u32, name: &str) -> Option<u32> {
        let want = self.syms.get(name)?;
        let s = self.series.get(id as usize)?.as_deref()?;
        id_pairs(&s.labels)
            .find(|&(n, _)| n == want)
            .map(|(_, v)| v)
    }

    fn symbol(&self, sym: u32) -> &str {
        self.syms.str(sym)
    }

    fn all(&self) -> Vec<u32> {
        self.live_refs()
    }

    fn exact(&self, name: &str, value: &str) -> Vec<u32> {
        let (Some(n), Some(v)) = (self.syms.get(name), self.syms.get(value)) else {
            return Vec::new();
        };
        self.postings
            .get(&n)
            .and_then(|m| m.get(&v))
            .cloned()
            .unwrap_or_default()
    }

    fn values_for(&self, m: &Matcher) -> Vec<(u32, usize)> {
        let Some(vals) = self.syms.get(&m.name).and_then(|n| self.postings.get(&n)) else {
            return Vec::new();
        };
        let empty = m.matches_empty();
        let ids = self.match_cache.get_or(m, vals.len(), || {
            vals.keys()
                .copied()
                .filter(|v| m.matches(self.syms.str(*v)) != empty)
                .collect()
        });
        ids.into_iter()
            .filter_map(|v| vals.get(&v).map(|p| (v, p.len())))
            .collect()
    }

    fn postings_of(&self, name: &str, values: &[u32]) -> Vec<Vec<u32>> {
        let Some(m) = self.syms.get(name).and_then(|n| self.postings.get(&n)) else {
            return Vec::new();
        };
        values.iter().filter_map(|v| m.get(v).cloned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_struct_stays_in_the_128_byte_size_class() {
        // One per series: at a million series each 8 bytes over a size
        // class costs tens of MiB (see `Ooo`).
        assert!(
            std::mem::size_of::<MemSeries>() <= 128,
            "{}",
            std::mem::size_of::<MemSeries>()
        );
    }

    #[test]
    fn snapshots_sort_like_label_sets() {
        // Prefixes and bytes above the separator's position are where
        // comparing raw keys would differ from comparing labels.
        let sets: Vec<Labels> = [
            &[("a", "x")][..],
            &[("a", "x"), ("b", "")],
            &[("a", "x"), ("b", "y")],
            &[("ab", "x")],
            &[("a", "xy")],
            &[("a", "x\u{7f}")],
            &[("a", "é")],
            &[("a", "")],
            &[("a", "x"), ("ab", "y")],
            &[("b", "a")],
        ]
        .iter()
        .map(|p| Labels::from_pairs(p.iter().copied()))
        .collect();
        let snap = |l: &Labels| {
            let mut key = Vec::new();
            series_key(l, &mut key);
            Snapshot {
                key: key.into_boxed_slice(),
                floats: Vec::new(),
                hists: Vec::new(),
                before: 0,
            }
        };
        for a in &sets {
            for b in &sets {
                assert_eq!(snap(a).cmp_labels(&snap(b)), a.cmp(b), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn label_ids_round_trip_and_match_keys() {
        let limits = HeadLimits {
            ooo_window_ms: 0,
            max_series: 10,
            block_duration_ms: 7_200_000,
        };
        let mut h = Head::new(0, 0, limits, i64::MIN);
        // Enough symbols for multi-byte ids.
        for i in 0..300 {
            h.syms.intern(&format!("pad{i}"));
        }
        let l = Labels::from_pairs([("__name__", "up"), ("a", "pad299"), ("zz", "")]);
        let mut key = Vec::new();
        series_key(&l, &mut key);
        let hash = key_hash(&key);
        let r = h.create(0, hash, &key);
        assert_eq!(h.labels(r), l);
        assert_eq!(h.lookup(hash, &key), Some(r));
        assert_eq!(&*h.key_of(r), key.as_slice());
        for cut in 0..key.len() {
            assert!(!h.key_matches(&h.get(r).labels, &key[..cut]), "{cut}");
        }
        let mut longer = key.clone();
        longer.extend_from_slice(b"b\xffc\xff");
        assert!(!h.key_matches(&h.get(r).labels, &longer));
    }
}
