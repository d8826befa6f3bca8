//! The read side: [`Querier`], [`SeriesSet`], [`Series`] and their sample
//! iterators.
//!
//! A querier sees the project's blocks as they were when it was created
//! plus the head at the time of each call. `select` resolves the matchers
//! in every source, merges the series by labels, and keeps for each series
//! only *references* to its chunks (shared head bytes, or offsets in a
//! block's chunks file): samples are decoded when the caller iterates that
//! series, one chunk at a time. Where a series' chunks overlap in time
//! (out-of-order data, or a block cut in progress) that one series is
//! decoded whole and merged; on equal timestamps the later source (head
//! over blocks, newer block over older) wins.

use std::sync::Arc;

use model::{HistogramValue, Labels, Matcher, Sample};

use crate::Error;
use crate::block::{Block, ChunkMeta, ReadAhead};
use crate::chunk::{Encoding, HistIter, decode_floats, decode_floats_into};
use crate::db::Project;
use crate::head::MemChunk;

/// Where a chunk's bytes are.
#[derive(Clone)]
enum ChunkBytes {
    Mem(Arc<[u8]>),
    Disk(Arc<Block>, ChunkMeta),
}

#[derive(Clone)]
struct SrcChunk {
    enc: Encoding,
    mint: i64,
    maxt: i64,
    bytes: ChunkBytes,
}

impl SrcChunk {
    /// The error for a chunk whose bytes do not decode.
    fn decode_error(&self, d: String) -> Error {
        match &self.bytes {
            ChunkBytes::Disk(b, m) => Error::corrupt(
                b.dir().join(crate::files::BLOCK_CHUNKS),
                format!("chunk at byte {}: {d}", m.offset),
            ),
            ChunkBytes::Mem(_) => {
                Error::InvalidInput(format!("bug: head chunk does not decode: {d}"))
            }
        }
    }

    /// The chunk's bytes: shared head bytes, or a block's read through `ra`.
    fn bytes_via<'a>(&'a self, ra: &'a mut ReadAhead) -> Result<&'a [u8], Error> {
        match &self.bytes {
            ChunkBytes::Mem(b) => Ok(b),
            ChunkBytes::Disk(block, m) => block.read_chunk_via(m, ra),
        }
    }

    fn load(&self) -> Result<Arc<[u8]>, Error> {
        match &self.bytes {
            ChunkBytes::Mem(b) => Ok(b.clone()),
            ChunkBytes::Disk(block, m) => Ok(Arc::from(block.read_chunk(m)?)),
        }
    }
}

/// One series of a [`SeriesSet`]: its labels, and its samples in
/// `[mint, maxt]` through [`Series::samples`] and [`Series::histograms`].
#[derive(Clone)]
pub struct Series {
    pub labels: Labels,
    floats: Vec<SrcChunk>,
    hists: Vec<SrcChunk>,
    mint: i64,
    maxt: i64,
}

impl Series {
    /// Float samples in time order (stale NaNs included, as stored).
    pub fn samples(&self) -> Samples {
        Samples {
            inner: ChunkWalk::new(&self.floats, self.mint, self.maxt),
        }
    }

    /// Native histogram samples in time order.
    pub fn histograms(&self) -> Histograms {
        Histograms {
            inner: ChunkWalk::new(&self.hists, self.mint, self.maxt),
        }
    }

    /// Appends the float samples in range to `out`, in time order: the same samples as
    /// [`Series::samples`], decoded a chunk at a time straight into `out`. After each chunk
    /// `charge` is told how many samples it added; returning `false` stops early (the
    /// caller's sample budget ran out).
    pub fn floats_into(
        &self,
        out: &mut Vec<Sample>,
        charge: impl FnMut(usize) -> bool,
    ) -> Result<(), Error> {
        self.floats_into_via(&mut ReadAhead::default(), out, charge)
    }

    /// [`Series::floats_into`], reading block chunks through `ra`: keep one [`ReadAhead`]
    /// for all the series of a select, whose chunks mostly follow one another on disk.
    pub fn floats_into_via(
        &self,
        ra: &mut ReadAhead,
        out: &mut Vec<Sample>,
        mut charge: impl FnMut(usize) -> bool,
    ) -> Result<(), Error> {
        let mut order: Vec<&SrcChunk> = self.floats.iter().collect();
        order.sort_by_key(|c| c.mint);
        if !order.windows(2).all(|w| w[0].maxt < w[1].mint) {
            // Overlapping chunks: the merging walk decides which sample wins.
            let before = out.len();
            for x in self.samples() {
                out.push(x?);
            }
            charge(out.len() - before);
            return Ok(());
        }
        for c in order {
            if c.maxt < self.mint || c.mint > self.maxt {
                continue;
            }
            let before = out.len();
            let bytes = c.bytes_via(ra)?;
            decode_floats_into(c.enc, bytes, c.mint, self.mint, self.maxt, out)
                .map_err(|d| c.decode_error(d))?;
            if !charge(out.len() - before) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Whether the series has histogram chunks in range.
    pub fn has_histograms(&self) -> bool {
        !self.hists.is_empty()
    }
}

enum Decoded {
    F(i64, f64),
    H(i64, HistogramValue),
}

impl Decoded {
    fn t(&self) -> i64 {
        match self {
            Decoded::F(t, _) | Decoded::H(t, _) => *t,
        }
    }
}

/// Walks a series' chunks: streaming one chunk at a time when they are
/// disjoint, or merging everything once when they overlap.
struct ChunkWalk {
    chunks: Vec<SrcChunk>,
    next_chunk: usize,
    buf: std::vec::IntoIter<Decoded>,
    mint: i64,
    maxt: i64,
    failed: bool,
}

impl ChunkWalk {
    fn new(chunks: &[SrcChunk], mint: i64, maxt: i64) -> ChunkWalk {
        let mut chunks = chunks.to_vec();
        let disjoint = {
            let mut sorted = chunks.clone();
            sorted.sort_by_key(|c| c.mint);
            sorted.windows(2).all(|w| w[0].maxt < w[1].mint)
        };
        let mut w = ChunkWalk {
            chunks: Vec::new(),
            next_chunk: 0,
            buf: Vec::new().into_iter(),
            mint,
            maxt,
            failed: false,
        };
        if disjoint {
            chunks.sort_by_key(|c| c.mint);
            w.chunks = chunks;
        } else {
            // Overlap: decode all now, merge, later source wins ties.
            let mut all: Vec<(usize, Decoded)> = Vec::new();
            for (i, c) in chunks.iter().enumerate() {
                match w.decode(c) {
                    Ok(d) => all.extend(d.into_iter().map(|x| (i, x))),
                    Err(_) => {
                        // Surface the error when iterated: keep the chunk list.
                        w.chunks = chunks;
                        return w;
                    }
                }
            }
            all.sort_by_key(|(i, d)| (d.t(), std::cmp::Reverse(*i)));
            all.dedup_by_key(|(_, d)| d.t());
            w.buf = all
                .into_iter()
                .map(|(_, d)| d)
                .collect::<Vec<_>>()
                .into_iter();
        }
        w
    }

    fn decode(&self, c: &SrcChunk) -> Result<Vec<Decoded>, Error> {
        let bytes = c.load()?;
        let bad = |d: String| c.decode_error(d);
        let (lo, hi) = (self.mint, self.maxt);
        let mut out = Vec::new();
        match c.enc {
            Encoding::Xor | Encoding::Dec => {
                for (t, v) in decode_floats(c.enc, &bytes, c.mint).map_err(bad)? {
                    if t >= lo && t <= hi {
                        out.push(Decoded::F(t, v));
                    }
                }
            }
            Encoding::Histogram => {
                for r in HistIter::new(&bytes).map_err(bad)? {
                    let (t, h) = r.map_err(bad)?;
                    if t >= lo && t <= hi {
                        out.push(Decoded::H(t, h));
                    }
                }
            }
        }
        Ok(out)
    }

    fn next(&mut self) -> Option<Result<Decoded, Error>> {
        loop {
            if let Some(d) = self.buf.next() {
                return Some(Ok(d));
            }
            if self.failed || self.next_chunk >= self.chunks.len() {
                return None;
            }
            let c = self.chunks[self.next_chunk].clone();
            self.next_chunk += 1;
            match self.decode(&c) {
                Ok(d) => self.buf = d.into_iter(),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Iterator over a series' float samples; an `Err` (a damaged block chunk)
/// ends it.
pub struct Samples {
    inner: ChunkWalk,
}

impl Iterator for Samples {
    type Item = Result<Sample, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.inner.next()? {
                Ok(Decoded::F(t, v)) => return Some(Ok(Sample { t, v })),
                Ok(Decoded::H(..)) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Iterator over a series' histogram samples.
pub struct Histograms {
    inner: ChunkWalk,
}

impl Iterator for Histograms {
    type Item = Result<(i64, HistogramValue), Error>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.inner.next()? {
                Ok(Decoded::H(t, h)) => return Some(Ok((t, h))),
                Ok(Decoded::F(..)) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The series a select found, sorted by labels.
pub struct SeriesSet {
    inner: std::vec::IntoIter<Series>,
}

impl SeriesSet {
    pub fn len(&self) -> usize {
        self.inner.len()
    }
    pub fn is_empty(&self) -> bool {
        self.inner.len() == 0
    }
}

impl Iterator for SeriesSet {
    type Item = Series;
    fn next(&mut self) -> Option<Series> {
        self.inner.next()
    }
}

/// A read view of one project over `[mint, maxt]` (inclusive, ms).
pub struct Querier {
    pub(crate) project: Option<Arc<Project>>,
    pub(crate) blocks: Vec<Arc<Block>>,
    pub(crate) mint: i64,
    pub(crate) maxt: i64,
}

impl Querier {
    fn blocks_in_range(&self) -> impl Iterator<Item = &Arc<Block>> {
        self.blocks
            .iter()
            .filter(|b| b.meta.mint <= self.maxt && b.meta.maxt >= self.mint)
    }

    /// The project, if its head holds data in range. Like Prometheus, label
    /// names and values come from every head series when the head's time
    /// range overlaps the query's (series are not checked one by one).
    fn head_in_range(&self) -> Option<&Arc<Project>> {
        let p = self.project.as_ref()?;
        let (lo, hi) = p.head_range();
        (lo <= self.maxt && hi >= self.mint).then_some(p)
    }

    /// Series matching every matcher with data in range, sorted by labels.
    /// Samples are decoded only when a series is iterated.
    pub fn select(&self, matchers: &[Matcher]) -> Result<SeriesSet, Error> {
        let (mint, maxt) = (self.mint, self.maxt);
        let series = |labels: Labels| Series {
            labels,
            floats: Vec::new(),
            hists: Vec::new(),
            mint,
            maxt,
        };
        // Every source's series, blocks (oldest first) then the head; a stable sort by
        // labels keeps that order among equal label sets, so merging them appends chunks
        // oldest source first (later sources win ties when chunks overlap).
        let mut all: Vec<Series> = Vec::new();
        for b in self.blocks_in_range() {
            for (labels, metas) in b.select(matchers, mint, maxt)? {
                let mut s = series(labels);
                for m in metas {
                    let c = SrcChunk {
                        enc: m.enc,
                        mint: m.mint,
                        maxt: m.maxt,
                        bytes: ChunkBytes::Disk(b.clone(), m),
                    };
                    if m.enc.is_float() {
                        s.floats.push(c);
                    } else {
                        s.hists.push(c);
                    }
                }
                all.push(s);
            }
        }
        if let Some(p) = &self.project {
            let conv = |c: MemChunk| SrcChunk {
                enc: c.enc,
                mint: c.mint,
                maxt: c.maxt,
                bytes: ChunkBytes::Mem(c.data),
            };
            for i in 0..crate::head::SHARDS as usize {
                for d in p.shard(i).select(matchers, mint, maxt) {
                    let mut s = series(d.labels);
                    s.floats.extend(d.floats.into_iter().map(conv));
                    s.hists.extend(d.hists.into_iter().map(conv));
                    all.push(s);
                }
            }
        }
        all.sort_by(|a, b| a.labels.cmp(&b.labels));
        let mut merged: Vec<Series> = Vec::with_capacity(all.len());
        for s in all {
            match merged.last_mut() {
                Some(last) if last.labels == s.labels => {
                    last.floats.extend(s.floats);
                    last.hists.extend(s.hists);
                }
                _ => merged.push(s),
            }
        }
        Ok(SeriesSet {
            inner: merged.into_iter(),
        })
    }

    /// Label names of the matching series (of all series without matchers)
    /// in the blocks and head overlapping the range, sorted.
    pub fn label_names(&self, matchers: &[Matcher]) -> Result<Vec<String>, Error> {
        let mut v = Vec::new();
        for b in self.blocks_in_range() {
            v.extend(b.label_names(matchers)?);
        }
        if let Some(p) = self.head_in_range() {
            for i in 0..crate::head::SHARDS as usize {
                v.extend(p.shard(i).label_names(matchers));
            }
        }
        v.sort();
        v.dedup();
        Ok(v)
    }

    /// Values of label `name` among the matching series, sorted.
    pub fn label_values(&self, name: &str, matchers: &[Matcher]) -> Result<Vec<String>, Error> {
        let mut v = Vec::new();
        for b in self.blocks_in_range() {
            v.extend(b.label_values(name, matchers)?);
        }
        if let Some(p) = self.head_in_range() {
            for i in 0..crate::head::SHARDS as usize {
                v.extend(p.shard(i).label_values(name, matchers));
            }
        }
        v.sort();
        v.dedup();
        Ok(v)
    }

    /// Label sets of the matching series with data in range, sorted.
    pub fn series(&self, matchers: &[Matcher]) -> Result<Vec<Labels>, Error> {
        Ok(self.select(matchers)?.map(|s| s.labels).collect())
    }
}
