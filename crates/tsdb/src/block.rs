//! Immutable blocks: one project's data for a time range, on disk.
//!
//! A block is a directory `b-<mint>-<end>-<seq>` holding three files
//! (layouts in docs/format/tsdb-block.md):
//!
//! - `chunks`: the compressed chunks, each with its own CRC-32;
//! - `index`: the symbol table, every series (labels as symbol ids, and its
//!   chunks' time ranges and offsets) sorted by labels, and the postings
//!   (label name and value → series ids), with a CRC-32 over the file;
//! - `meta`: a small text file: time range, counts, compaction level,
//!   parent blocks, size and CRC-32 of the other two files.
//!
//! A block is written into `tmp-…`, every file fsynced, the directory
//! fsynced and renamed to its final name, and the parent fsynced: a crash
//! leaves either no block or a whole one. It is never modified afterwards;
//! compaction writes a new block and deletes its parents.
//!
//! Reads use plain positioned reads (`pread`), no mmap (unsafe code is
//! forbidden in this workspace): the index is read into memory when the
//! block is opened (it is small next to the chunks), chunk bytes are read
//! on demand when a query iterates a series, and the page cache does the
//! caching.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use model::{Label, Labels, Matcher};

use crate::chunk::{Encoding, decode_floats, encode_dec};
use crate::enc::{Reader, put_uvarint, put_varint};
use crate::error::IoContext;
use crate::head::{IdMap, MemChunk};
use crate::postings::{self, Index};
use crate::{Error, files};

const INDEX_MAGIC: &[u8; 8] = b"FDTSIDX1";
const CHUNKS_MAGIC: &[u8; 8] = b"FDTSCHK1";
const META_MAGIC: &str = "flightdeck-tsdb-block 1";

/// What `meta` says about a block.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockMeta {
    /// Directory name.
    pub name: String,
    /// Oldest and newest sample time in the block (inclusive).
    pub mint: i64,
    pub maxt: i64,
    /// The block covers samples `< end` of its head cut: the head's minimum
    /// valid time after this block (and retention's notion of its end).
    pub end: i64,
    pub num_series: u64,
    pub num_samples: u64,
    pub num_chunks: u64,
    /// 1 for a block cut from the head, n+1 for one compacted from level-n blocks.
    pub level: u32,
    /// Blocks this one was compacted from (deleted once it exists).
    pub parents: Vec<String>,
    pub index_size: u64,
    pub index_crc: u32,
    pub chunks_size: u64,
    pub chunks_crc: u32,
}

impl BlockMeta {
    fn encode(&self) -> String {
        format!(
            "{META_MAGIC}\nmint={}\nmaxt={}\nend={}\nseries={}\nsamples={}\nchunks={}\nlevel={}\nparents={}\nindex={} {:08x}\nchunks_file={} {:08x}\n",
            self.mint,
            self.maxt,
            self.end,
            self.num_series,
            self.num_samples,
            self.num_chunks,
            self.level,
            self.parents.join(","),
            self.index_size,
            self.index_crc,
            self.chunks_size,
            self.chunks_crc
        )
    }

    fn decode(name: &str, text: &str) -> Result<BlockMeta, String> {
        let mut lines = text.lines();
        if lines.next() != Some(META_MAGIC) {
            return Err(format!("first line is not {META_MAGIC:?}"));
        }
        let mut kv = std::collections::HashMap::new();
        for l in lines {
            let (k, v) = l.split_once('=').ok_or_else(|| format!("bad line {l:?}"))?;
            kv.insert(k, v);
        }
        let get = |k: &str| kv.get(k).copied().ok_or_else(|| format!("missing {k}"));
        let int =
            |k: &str| -> Result<i64, String> { get(k)?.parse().map_err(|e| format!("{k}: {e}")) };
        let sized = |k: &str| -> Result<(u64, u32), String> {
            let v = get(k)?;
            let (s, c) = v
                .split_once(' ')
                .ok_or_else(|| format!("{k}: want 'size crc'"))?;
            Ok((
                s.parse().map_err(|e| format!("{k}: {e}"))?,
                u32::from_str_radix(c, 16).map_err(|e| format!("{k}: {e}"))?,
            ))
        };
        let (index_size, index_crc) = sized("index")?;
        let (chunks_size, chunks_crc) = sized("chunks_file")?;
        let parents = get("parents")?;
        Ok(BlockMeta {
            name: name.to_string(),
            mint: int("mint")?,
            maxt: int("maxt")?,
            end: int("end")?,
            num_series: int("series")? as u64,
            num_samples: int("samples")? as u64,
            num_chunks: int("chunks")? as u64,
            level: int("level")? as u32,
            parents: if parents.is_empty() {
                Vec::new()
            } else {
                parents.split(',').map(str::to_string).collect()
            },
            index_size,
            index_crc,
            chunks_size,
            chunks_crc,
        })
    }
}

/// One series handed to [`write_block`]: labels and chunks (time-ordered,
/// non-overlapping) of each kind.
pub(crate) struct BlockSeries {
    pub labels: Labels,
    pub floats: Vec<MemChunk>,
    pub hists: Vec<MemChunk>,
}

/// A chunk's place in a block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChunkMeta {
    pub enc: Encoding,
    pub mint: i64,
    pub maxt: i64,
    pub offset: u64,
    pub len: u32,
}

/// Writes a block into `parent` and returns it opened. `series` come in
/// label order and are consumed one at a time: only their labels and chunk
/// positions are kept (for the index), not their chunk bytes.
pub(crate) fn write_block(
    parent: &Path,
    name: &str,
    series: impl Iterator<Item = Result<BlockSeries, Error>>,
    end: i64,
    level: u32,
    parents: Vec<String>,
    faults: &diskio::Faults,
) -> Result<Block, Error> {
    let tmp = parent.join(format!("{}{name}", files::TMP_PREFIX));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).at(&tmp)?;

    // chunks: streamed to the file (a block can be large), CRC on the way.
    let chunks_path = tmp.join(files::BLOCK_CHUNKS);
    let chunks_file = File::create(&chunks_path).at(&chunks_path)?;
    let mut chunks = ChunkWriter {
        out: std::io::BufWriter::with_capacity(1 << 20, chunks_file),
        crc: crc32fast::Hasher::new(),
        len: 0,
        faults,
    };
    chunks.put(CHUNKS_MAGIC).at(&chunks_path)?;
    // Per series only ids and chunk positions are kept (a few dozen bytes,
    // where `Labels` took ~600): label strings are interned here in order
    // of first use and renumbered in string order once all are known.
    let mut local: std::collections::HashMap<Box<str>, u32> = Default::default();
    let mut strs: Vec<Box<str>> = Vec::new();
    let mut intern = |x: &str| -> u32 {
        if let Some(id) = local.get(x) {
            return *id;
        }
        let id = strs.len() as u32;
        strs.push(x.into());
        local.insert(x.into(), id);
        id
    };
    // Flattened: series i has pairs `label_ids[label_ends[i-1]..label_ends[i]]`
    // (name, value, name, value…) and chunks `metas[meta_ends[i-1]..meta_ends[i]]`.
    let mut label_ids: Vec<u32> = Vec::new();
    let mut label_ends: Vec<usize> = Vec::new();
    let mut metas: Vec<ChunkMeta> = Vec::new();
    let mut meta_ends: Vec<usize> = Vec::new();
    let (mut mint, mut maxt) = (i64::MAX, i64::MIN);
    let (mut num_samples, mut num_chunks) = (0u64, 0u64);
    let mut head = Vec::with_capacity(16);
    for s in series {
        let s = s?;
        for c in s.floats.iter().chain(&s.hists) {
            // Floats: the decimal encoding where it is smaller.
            let dec = (c.enc == Encoding::Xor)
                .then(|| {
                    decode_floats(c.enc, &c.data, c.mint)
                        .ok()
                        .and_then(|v| encode_dec(&v))
                })
                .flatten()
                .filter(|d| d.len() < c.data.len());
            let (enc, data): (Encoding, &[u8]) = match &dec {
                Some(d) => (Encoding::Dec, d),
                None => (c.enc, &c.data),
            };
            let offset = chunks.len;
            head.clear();
            head.push(enc as u8);
            put_uvarint(&mut head, data.len() as u64);
            let mut h = crc32fast::Hasher::new();
            h.update(&[enc as u8]);
            h.update(data);
            chunks.put(&head).at(&chunks_path)?;
            chunks.put(data).at(&chunks_path)?;
            chunks.put(&h.finalize().to_le_bytes()).at(&chunks_path)?;
            metas.push(ChunkMeta {
                enc,
                mint: c.mint,
                maxt: c.maxt,
                offset,
                len: (chunks.len - offset) as u32,
            });
            mint = mint.min(c.mint);
            maxt = maxt.max(c.maxt);
            num_chunks += 1;
            if c.data.len() >= 2 {
                num_samples += u64::from(u16::from_be_bytes([c.data[0], c.data[1]]));
            }
        }
        for l in &s.labels {
            label_ids.push(intern(&l.name));
            label_ids.push(intern(&l.value));
        }
        label_ends.push(label_ids.len());
        meta_ends.push(metas.len());
    }
    drop(local);
    let chunks_size = chunks.len;
    let chunks_crc = chunks.crc.clone().finalize();
    let chunks_file = chunks
        .out
        .into_inner()
        .map_err(|e| Error::io(&chunks_path, e.into_error()))?;
    diskio::sync_file(faults, &chunks_file, files::BLOCK_CHUNKS).at(&chunks_path)?;
    drop(chunks_file);

    // index: symbols
    // Ids in string order: `order[k]` is the local id of the k-th string.
    let mut order: Vec<u32> = (0..strs.len() as u32).collect();
    order.sort_unstable_by(|a, b| strs[*a as usize].cmp(&strs[*b as usize]));
    let mut sorted_id = vec![0u64; strs.len()];
    for (k, local_id) in order.iter().enumerate() {
        sorted_id[*local_id as usize] = k as u64;
    }
    let syms: Vec<&str> = order.iter().map(|i| &*strs[*i as usize]).collect();
    let mut index: Vec<u8> = Vec::new();
    index.extend_from_slice(INDEX_MAGIC);
    let sym_off = index.len() as u64;
    put_uvarint(&mut index, syms.len() as u64);
    for s in &syms {
        put_uvarint(&mut index, s.len() as u64);
        index.extend_from_slice(s.as_bytes());
    }
    // series
    let series_off = index.len() as u64;
    put_uvarint(&mut index, label_ends.len() as u64);
    // Chunk start times are stored relative to the block's oldest.
    let base = if mint == i64::MAX { 0 } else { mint };
    put_varint(&mut index, base);
    let mut postings: std::collections::HashMap<(u64, u64), Vec<u32>> = Default::default();
    for i in 0..label_ends.len() {
        let pairs = &label_ids[if i == 0 { 0 } else { label_ends[i - 1] }..label_ends[i]];
        put_uvarint(&mut index, (pairs.len() / 2) as u64);
        for p in pairs.chunks_exact(2) {
            let (n, v) = (sorted_id[p[0] as usize], sorted_id[p[1] as usize]);
            put_uvarint(&mut index, n);
            put_uvarint(&mut index, v);
            postings.entry((n, v)).or_default().push(i as u32);
        }
        let m = &metas[if i == 0 { 0 } else { meta_ends[i - 1] }..meta_ends[i]];
        put_uvarint(&mut index, m.len() as u64);
        for c in m {
            index.push(c.enc as u8);
            put_uvarint(&mut index, c.mint.wrapping_sub(base) as u64);
            put_uvarint(&mut index, c.maxt.wrapping_sub(c.mint) as u64);
            put_uvarint(&mut index, c.offset);
            put_uvarint(&mut index, u64::from(c.len));
        }
    }
    // postings, sorted by (name, value) symbol id = by string
    let postings_off = index.len() as u64;
    let mut postings: Vec<((u64, u64), Vec<u32>)> = postings.into_iter().collect();
    postings.sort_unstable_by_key(|x| x.0);
    put_uvarint(&mut index, postings.len() as u64);
    for ((n, v), list) in &postings {
        put_uvarint(&mut index, *n);
        put_uvarint(&mut index, *v);
        put_uvarint(&mut index, list.len() as u64);
        let mut prev = 0u32;
        for x in list {
            put_uvarint(&mut index, u64::from(x - prev));
            prev = *x;
        }
    }
    for off in [sym_off, series_off, postings_off] {
        index.extend_from_slice(&off.to_le_bytes());
    }
    let crc = crc32fast::hash(&index);
    index.extend_from_slice(&crc.to_le_bytes());

    let meta = BlockMeta {
        name: name.to_string(),
        mint,
        maxt,
        end,
        num_series: label_ends.len() as u64,
        num_samples,
        num_chunks,
        level,
        parents,
        index_size: index.len() as u64,
        index_crc: crc32fast::hash(&index),
        chunks_size,
        chunks_crc,
    };
    for (f, bytes) in [
        (files::BLOCK_INDEX, &index[..]),
        (files::BLOCK_META, meta.encode().as_bytes()),
    ] {
        let p = tmp.join(f);
        let mut file = File::create(&p).at(&p)?;
        diskio::write_all(faults, &mut file, bytes, f).at(&p)?;
        diskio::sync_file(faults, &file, f).at(&p)?;
    }
    diskio::fsync_dir(&tmp).at(&tmp)?;
    let fin = parent.join(name);
    fs::rename(&tmp, &fin).at(&fin)?;
    diskio::fsync_dir(parent).at(parent)?;
    drop(index);
    Block::open(&fin)
}

/// The chunks file being written: buffered, checksummed as it goes.
struct ChunkWriter<'a> {
    out: std::io::BufWriter<File>,
    crc: crc32fast::Hasher,
    len: u64,
    faults: &'a diskio::Faults,
}

impl ChunkWriter<'_> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.faults.check_write(files::BLOCK_CHUNKS)?;
        std::io::Write::write_all(&mut self.out, b)?;
        self.crc.update(b);
        self.len += b.len() as u64;
        Ok(())
    }
}

/// An open block.
pub struct Block {
    dir: PathBuf,
    pub(crate) meta: BlockMeta,
    index: IndexReader,
    chunks: File,
    /// Length of the chunks file (checked against the meta at open).
    chunks_len: u64,
    /// Unique per opened block in this process: what a [`ReadAhead`] window is of.
    id: u64,
    disk_bytes: u64,
}

/// Bytes a [`ReadAhead`] reads at once (or the chunk, if larger).
const READ_AHEAD: u64 = 128 * 1024;

/// Blocks a [`ReadAhead`] keeps a window of at once (a series spanning several blocks
/// reads a chunk from each in turn).
const READ_AHEAD_BLOCKS: usize = 8;

/// A reader's windows over block chunks files, one per block. Chunks of the series a
/// select returns lie mostly one after another in each file (series and their chunks are
/// written in label order), so one read of [`READ_AHEAD`] bytes serves many chunks instead
/// of one `pread` (and three copies) per chunk. Blocks never change once written, so the
/// bytes cannot go stale; a window is keyed by its block's process-unique id.
#[derive(Default)]
pub struct ReadAhead {
    windows: Vec<Window>,
    uses: u64,
}

#[derive(Default)]
struct Window {
    block: u64,
    start: u64,
    buf: Vec<u8>,
    last_use: u64,
}

struct IndexReader {
    bytes: Vec<u8>,
    /// Chunk start times are relative to this.
    base_mint: i64,
    syms: Vec<Box<str>>,
    /// Offset of each series entry in `bytes`.
    series: Vec<u32>,
    /// name symbol → (value symbol, offset of the postings list), by value.
    postings: IdMap<u32, Vec<(u32, u32)>>,
}

impl Block {
    /// Opens the block in `dir`: reads `meta`, reads and checks `index`.
    pub fn open(dir: &Path) -> Result<Block, Error> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let mp = dir.join(files::BLOCK_META);
        let text = fs::read_to_string(&mp).at(&mp)?;
        let meta = BlockMeta::decode(&name, &text).map_err(|d| Error::corrupt(&mp, d))?;
        let ip = dir.join(files::BLOCK_INDEX);
        let bytes = fs::read(&ip).at(&ip)?;
        if bytes.len() as u64 != meta.index_size || crc32fast::hash(&bytes) != meta.index_crc {
            return Err(Error::corrupt(
                &ip,
                format!(
                    "size {} / crc {:08x}, meta says {} / {:08x}",
                    bytes.len(),
                    crc32fast::hash(&bytes),
                    meta.index_size,
                    meta.index_crc
                ),
            ));
        }
        let index = IndexReader::parse(bytes).map_err(|d| Error::corrupt(&ip, d))?;
        let cp = dir.join(files::BLOCK_CHUNKS);
        let chunks = File::open(&cp).at(&cp)?;
        let clen = chunks.metadata().at(&cp)?.len();
        if clen != meta.chunks_size {
            return Err(Error::corrupt(
                &cp,
                format!("size {clen}, meta says {}", meta.chunks_size),
            ));
        }
        let disk_bytes = dir_size(dir);
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Ok(Block {
            dir: dir.to_path_buf(),
            meta,
            index,
            chunks,
            chunks_len: clen,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            disk_bytes,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// Reads one chunk's data and checks its CRC.
    pub(crate) fn read_chunk(&self, c: &ChunkMeta) -> Result<Vec<u8>, Error> {
        let mut buf = vec![0u8; c.len as usize];
        self.chunks
            .read_exact_at(&mut buf, c.offset)
            .at(&self.dir.join(files::BLOCK_CHUNKS))?;
        Ok(self.check_chunk(c, &buf)?.to_vec())
    }

    /// [`Block::read_chunk`] through `ra`: the chunk's data (checked) inside the window,
    /// which is refilled from the chunk's offset when it does not hold the chunk.
    pub(crate) fn read_chunk_via<'a>(
        &self,
        c: &ChunkMeta,
        ra: &'a mut ReadAhead,
    ) -> Result<&'a [u8], Error> {
        let len = u64::from(c.len);
        ra.uses += 1;
        let i = match ra.windows.iter().position(|w| w.block == self.id) {
            Some(i) => i,
            None if ra.windows.len() < READ_AHEAD_BLOCKS => {
                ra.windows.push(Window::default());
                ra.windows.len() - 1
            }
            None => {
                let lru = ra
                    .windows
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, w)| w.last_use);
                lru.map_or(0, |(i, _)| i)
            }
        };
        let w = &mut ra.windows[i];
        w.last_use = ra.uses;
        let held = w.block == self.id
            && c.offset >= w.start
            && c.offset + len <= w.start + w.buf.len() as u64;
        if !held {
            let want = len
                .max(READ_AHEAD)
                .min(self.chunks_len.saturating_sub(c.offset));
            if want < len {
                return Err(Error::corrupt(
                    self.dir.join(files::BLOCK_CHUNKS),
                    format!("chunk at byte {} runs past the end of the file", c.offset),
                ));
            }
            w.block = 0;
            w.buf.resize(want as usize, 0);
            self.chunks
                .read_exact_at(&mut w.buf, c.offset)
                .at(&self.dir.join(files::BLOCK_CHUNKS))?;
            (w.block, w.start) = (self.id, c.offset);
        }
        let at = (c.offset - w.start) as usize;
        self.check_chunk(c, &w.buf[at..at + c.len as usize])
    }

    /// A chunk's stored bytes (encoding, length, data, CRC) → its data, if the CRC and
    /// the encoding agree.
    fn check_chunk<'a>(&self, c: &ChunkMeta, buf: &'a [u8]) -> Result<&'a [u8], Error> {
        let bad = |d: String| {
            Error::corrupt(
                self.dir.join(files::BLOCK_CHUNKS),
                format!("chunk at byte {}: {d}", c.offset),
            )
        };
        let mut r = Reader::new(buf);
        let enc = r.u8("encoding").map_err(bad)?;
        let n = r.usize_bounded(buf.len(), "chunk length").map_err(bad)?;
        let start = r.pos();
        let data = r.bytes(n, "chunk data").map_err(bad)?;
        let crc = r.u32_le("chunk crc").map_err(bad)?;
        let mut h = crc32fast::Hasher::new();
        h.update(&buf[..1]);
        h.update(&buf[start..start + n]);
        if h.finalize() != crc || enc != c.enc as u8 {
            return Err(bad("checksum or encoding mismatch".into()));
        }
        Ok(data)
    }

    /// Series ids matching `matchers`.
    pub(crate) fn matching(&self, matchers: &[Matcher]) -> Vec<u32> {
        postings::resolve(&self.index, matchers)
    }

    /// Labels and chunk metas of series `id`.
    pub(crate) fn series(&self, id: u32) -> Result<(Labels, Vec<ChunkMeta>), Error> {
        self.index
            .series(id)
            .map_err(|d| Error::corrupt(self.dir.join(files::BLOCK_INDEX), d))
    }

    /// Matching series with chunks overlapping `[mint, maxt]`, by labels.
    pub(crate) fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<(Labels, Vec<ChunkMeta>)>, Error> {
        let mut out = Vec::new();
        for id in self.matching(matchers) {
            let (l, mut cs) = self.series(id)?;
            cs.retain(|c| c.mint <= maxt && c.maxt >= mint);
            if !cs.is_empty() {
                out.push((l, cs));
            }
        }
        Ok(out)
    }

    pub(crate) fn label_names(&self, matchers: &[Matcher]) -> Result<Vec<String>, Error> {
        if matchers.is_empty() {
            return Ok(self
                .index
                .postings
                .keys()
                .map(|n| self.index.syms[*n as usize].to_string())
                .collect());
        }
        let mut v = Vec::new();
        for id in self.matching(matchers) {
            v.extend(self.series(id)?.0.into_vec().into_iter().map(|l| l.name));
        }
        Ok(v)
    }

    pub(crate) fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
    ) -> Result<Vec<String>, Error> {
        if matchers.is_empty() {
            let Some(n) = self.index.sym(name) else {
                return Ok(Vec::new());
            };
            return Ok(self
                .index
                .postings
                .get(&n)
                .map(|vs| {
                    vs.iter()
                        .map(|(v, _)| self.index.syms[*v as usize].to_string())
                        .collect()
                })
                .unwrap_or_default());
        }
        let mut v = Vec::new();
        for id in self.matching(matchers) {
            if let Some(x) = self.series(id)?.0.get(name) {
                v.push(x.to_string());
            }
        }
        Ok(v)
    }

    /// Every series with its chunk metas (for compaction).
    pub(crate) fn all_series(&self) -> Result<Vec<(Labels, Vec<ChunkMeta>)>, Error> {
        (0..self.index.series.len() as u32)
            .map(|i| self.series(i))
            .collect()
    }
}

impl IndexReader {
    fn parse(bytes: Vec<u8>) -> Result<IndexReader, String> {
        if bytes.len() < 8 + 28 || &bytes[..8] != INDEX_MAGIC {
            return Err("not a tsdb index (bad magic or too short)".into());
        }
        let t = bytes.len() - 28;
        let mut tr = Reader::new(&bytes[t..]);
        let sym_off = tr.u64_le("symbols offset")? as usize;
        let series_off = tr.u64_le("series offset")? as usize;
        let postings_off = tr.u64_le("postings offset")? as usize;
        let crc = tr.u32_le("crc")?;
        if crc32fast::hash(&bytes[..t + 24]) != crc {
            return Err("index checksum mismatch".into());
        }
        if !(sym_off <= series_off && series_off <= postings_off && postings_off <= t) {
            return Err("section offsets out of order".into());
        }
        let mut r = Reader::new(&bytes[sym_off..series_off]);
        let n = r.usize_bounded(r.remaining(), "symbol count")?;
        let mut syms = Vec::with_capacity(n);
        for _ in 0..n {
            syms.push(Box::from(r.str("symbol")?));
        }
        let mut r = Reader::new(&bytes[series_off..postings_off]);
        let n = r.usize_bounded(r.remaining(), "series count")?;
        let base_mint = r.varint("base time")?;
        let mut series = Vec::with_capacity(n);
        for _ in 0..n {
            series.push((series_off + r.pos()) as u32);
            let nl = r.usize_bounded(r.remaining(), "label count")?;
            for _ in 0..nl * 2 {
                r.uvarint("label symbol")?;
            }
            let nc = r.usize_bounded(r.remaining(), "chunk count")?;
            for _ in 0..nc {
                r.u8("encoding")?;
                r.uvarint("mint")?;
                r.uvarint("range")?;
                r.uvarint("offset")?;
                r.uvarint("length")?;
            }
        }
        let mut r = Reader::new(&bytes[postings_off..t]);
        let n = r.usize_bounded(r.remaining(), "postings count")?;
        let mut postings: IdMap<u32, Vec<(u32, u32)>> = IdMap::default();
        for _ in 0..n {
            let name = r.u32v("postings name")?;
            let value = r.u32v("postings value")?;
            if name as usize >= syms.len() || value as usize >= syms.len() {
                return Err("postings symbol out of range".into());
            }
            postings
                .entry(name)
                .or_default()
                .push((value, (postings_off + r.pos()) as u32));
            let k = r.usize_bounded(r.remaining(), "postings length")?;
            for _ in 0..k {
                r.uvarint("posting")?;
            }
        }
        Ok(IndexReader {
            bytes,
            base_mint,
            syms,
            series,
            postings,
        })
    }

    fn sym(&self, s: &str) -> Option<u32> {
        self.syms
            .binary_search_by(|x| (**x).cmp(s))
            .ok()
            .map(|i| i as u32)
    }

    fn sym_str(&self, id: u64) -> Result<&str, String> {
        self.syms
            .get(id as usize)
            .map(|s| &**s)
            .ok_or_else(|| format!("symbol {id} out of range"))
    }

    fn series(&self, id: u32) -> Result<(Labels, Vec<ChunkMeta>), String> {
        let off = *self
            .series
            .get(id as usize)
            .ok_or("series id out of range")? as usize;
        let mut r = Reader::new(&self.bytes[off..]);
        let nl = r.usize_bounded(r.remaining(), "label count")?;
        let mut labels = Vec::with_capacity(nl);
        for _ in 0..nl {
            let n = self.sym_str(r.uvarint("label name")?)?;
            let v = self.sym_str(r.uvarint("label value")?)?;
            labels.push(Label::new(n, v));
        }
        let nc = r.usize_bounded(r.remaining(), "chunk count")?;
        let mut cs = Vec::with_capacity(nc);
        for _ in 0..nc {
            let e = r.u8("encoding")?;
            let enc = Encoding::from_u8(e).ok_or_else(|| format!("unknown chunk encoding {e}"))?;
            let mint = self.base_mint.wrapping_add(r.uvarint("mint")? as i64);
            let maxt = mint.wrapping_add(r.uvarint("range")? as i64);
            let offset = r.uvarint("offset")?;
            let len = r.u32v("length")?;
            cs.push(ChunkMeta {
                enc,
                mint,
                maxt,
                offset,
                len,
            });
        }
        Ok((Labels::from_sorted_unchecked(labels), cs))
    }

    fn postings_at(&self, off: u32) -> Vec<u32> {
        let mut r = Reader::new(&self.bytes[off as usize..]);
        let k = r.uvarint("postings length").unwrap_or(0) as usize;
        let mut out = Vec::with_capacity(k);
        let mut prev = 0u32;
        for _ in 0..k {
            // Validated by parse().
            prev = prev.wrapping_add(r.uvarint("posting").unwrap_or(0) as u32);
            out.push(prev);
        }
        out
    }
}

impl Index for IndexReader {
    fn values_where(&self, name: &str, pred: &dyn Fn(&str) -> bool) -> Vec<(u32, usize)> {
        let Some(vs) = self.sym(name).and_then(|n| self.postings.get(&n)) else {
            return Vec::new();
        };
        vs.iter()
            .filter(|(v, _)| pred(&self.syms[*v as usize]))
            .map(|&(v, off)| {
                let mut r = Reader::new(&self.bytes[off as usize..]);
                (v, r.uvarint("postings length").unwrap_or(0) as usize)
            })
            .collect()
    }

    fn value_id(&self, id: u32, name: &str) -> Option<u32> {
        let want = u64::from(self.sym(name)?);
        let off = *self.series.get(id as usize)? as usize;
        let mut r = Reader::new(&self.bytes[off..]);
        let nl = r.usize_bounded(r.remaining(), "label count").ok()?;
        for _ in 0..nl {
            let n = r.uvarint("label name").ok()?;
            let v = r.uvarint("label value").ok()?;
            if n == want {
                return u32::try_from(v)
                    .ok()
                    .filter(|&v| (v as usize) < self.syms.len());
            }
        }
        None
    }

    fn symbol(&self, sym: u32) -> &str {
        self.syms.get(sym as usize).map_or("", |s| &**s)
    }

    fn all(&self) -> Vec<u32> {
        (0..self.series.len() as u32).collect()
    }

    fn exact(&self, name: &str, value: &str) -> Vec<u32> {
        let (Some(n), Some(v)) = (self.sym(name), self.sym(value)) else {
            return Vec::new();
        };
        self.postings
            .get(&n)
            .and_then(|vs| vs.binary_search_by_key(&v, |x| x.0).ok().map(|i| vs[i].1))
            .map(|off| self.postings_at(off))
            .unwrap_or_default()
    }

    fn postings_of(&self, name: &str, values: &[u32]) -> Vec<Vec<u32>> {
        let Some(vs) = self.sym(name).and_then(|n| self.postings.get(&n)) else {
            return Vec::new();
        };
        values
            .iter()
            .filter_map(|v| vs.binary_search_by_key(v, |x| x.0).ok())
            .map(|i| self.postings_at(vs[i].1))
            .collect()
    }
}

/// Total bytes of the regular files under `dir` (recursively).
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Opens every block under a project directory, removing leftovers of
/// interrupted writes (`tmp-…`) and blocks superseded by a compacted block
/// whose parents they are. Sorted by `mint`.
pub(crate) fn open_blocks(pdir: &Path) -> Result<Vec<Arc<Block>>, Error> {
    let mut blocks = Vec::new();
    for e in fs::read_dir(pdir).at(pdir)? {
        let e = e.at(pdir)?;
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(files::TMP_PREFIX) {
            fs::remove_dir_all(e.path()).at(&e.path())?;
        } else if name.starts_with(files::BLOCK_PREFIX) {
            blocks.push(Block::open(&e.path())?);
        }
    }
    let parents: std::collections::HashSet<String> = blocks
        .iter()
        .flat_map(|b| b.meta.parents.iter().cloned())
        .collect();
    let mut kept = Vec::new();
    for b in blocks {
        if parents.contains(&b.meta.name) {
            fs::remove_dir_all(&b.dir).at(&b.dir)?;
        } else {
            kept.push(Arc::new(b));
        }
    }
    kept.sort_by_key(|b| (b.meta.mint, b.meta.end));
    Ok(kept)
}
