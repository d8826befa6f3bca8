//! Segment files: a project's sealed blocks, written once and never
//! changed (until retention deletes the whole file).
//!
//! ```text
//! magic "FDLOGSG1" | block data (zstd frames, back to back) | index
//! | footer: index_offset u64 LE | index_len u32 LE | index_crc u32 LE | "FDLOGEND"
//! ```
//!
//! The index (CRC-32 in the footer) lists the segment's streams (label
//! sets) and, per stream, its blocks: offset, length and CRC-32 of the
//! compressed bytes, time range, counts and trigram bloom. Opening reads
//! only the footer and index; a block's CRC is checked each time it is
//! read. docs/format/logstore.md has the byte layout.
//!
//! Written as `seg-….tmp`, fsynced, renamed, directory fsynced: after a
//! crash the segment is absent or whole.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use diskio::Faults;
use model::{Label, Labels};

use crate::block::{BlockMeta, MemBlock};
use crate::bloom::Bloom;
use crate::enc::{Reader, put_bytes, put_uvarint, put_varint};
use crate::error::IoContext;
use crate::{Error, files};

pub const MAGIC: &[u8; 8] = b"FDLOGSG1";
pub const FOOTER_MAGIC: &[u8; 8] = b"FDLOGEND";
const FOOTER_LEN: u64 = 24;
const INDEX_VERSION: u64 = 1;

/// Where a block sits in its segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRef {
    pub meta: BlockMeta,
    pub offset: u64,
    pub len: u32,
    pub crc: u32,
}

/// One stream of a segment.
#[derive(Debug)]
pub struct SegStream {
    pub labels: Labels,
    pub blocks: Vec<BlockRef>,
}

/// An open segment: its index in memory, its file kept open for reads.
#[derive(Debug)]
pub struct Segment {
    pub path: PathBuf,
    file: File,
    pub seq: u64,
    /// The first WAL segment whose entries are *not* in this segment (for
    /// its project): replay skips the project's records before it.
    pub wal_cut: u64,
    /// Sequence numbers of the segments this one was compacted from (their
    /// files are deleted after this one is durable; open finishes the job).
    pub replaces: Vec<u64>,
    pub min_ts: i64,
    pub max_ts: i64,
    pub file_bytes: u64,
    pub streams: Vec<SegStream>,
}

/// Writes segment `seq` of a project into `dir` from in-memory blocks,
/// durably (tmp + fsync + rename + directory fsync), and opens it.
pub fn write(
    dir: &Path,
    seq: u64,
    wal_cut: u64,
    replaces: &[u64],
    streams: &[(Labels, Vec<std::sync::Arc<MemBlock>>)],
    faults: &Faults,
) -> Result<Segment, Error> {
    let path = dir.join(files::segment_name(seq));
    let tmp = dir.join(format!("{}{}", files::segment_name(seq), files::TMP_SUFFIX));
    let what = path.display().to_string();
    let result = (|| -> Result<(), Error> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .at(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        faults.check_write(&what).at(&tmp)?;
        w.write_all(MAGIC).at(&tmp)?;
        let mut offset = MAGIC.len() as u64;
        let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
        let mut index = Vec::new();
        put_uvarint(&mut index, INDEX_VERSION);
        put_uvarint(&mut index, wal_cut);
        put_uvarint(&mut index, replaces.len() as u64);
        for r in replaces {
            put_uvarint(&mut index, *r);
        }
        let mut body = Vec::new();
        put_uvarint(&mut body, streams.len() as u64);
        for (labels, blocks) in streams {
            put_uvarint(&mut body, labels.len() as u64);
            for l in labels.iter() {
                put_bytes(&mut body, l.name.as_bytes());
                put_bytes(&mut body, l.value.as_bytes());
            }
            put_uvarint(&mut body, blocks.len() as u64);
            for b in blocks {
                faults.check_write(&what).at(&tmp)?;
                w.write_all(&b.data).at(&tmp)?;
                let m = &b.meta;
                min_ts = min_ts.min(m.min_ts);
                max_ts = max_ts.max(m.max_ts);
                put_uvarint(&mut body, offset);
                put_uvarint(&mut body, b.data.len() as u64);
                body.extend_from_slice(&crc32fast::hash(&b.data).to_le_bytes());
                put_varint(&mut body, m.min_ts);
                put_varint(&mut body, m.max_ts);
                put_uvarint(&mut body, u64::from(m.entries));
                put_uvarint(&mut body, m.line_bytes);
                put_uvarint(&mut body, u64::from(m.raw_len));
                let mut bl = Vec::with_capacity(m.bloom.byte_len());
                m.bloom.encode(&mut bl);
                put_bytes(&mut body, &bl);
                offset += b.data.len() as u64;
            }
        }
        put_varint(&mut index, min_ts);
        put_varint(&mut index, max_ts);
        index.extend_from_slice(&body);
        let index_len = u32::try_from(index.len()).map_err(|_| {
            Error::InvalidInput(format!(
                "segment index of {} bytes exceeds 4 GiB",
                index.len()
            ))
        })?;
        faults.check_write(&what).at(&tmp)?;
        w.write_all(&index).at(&tmp)?;
        let mut footer = Vec::with_capacity(FOOTER_LEN as usize);
        footer.extend_from_slice(&offset.to_le_bytes());
        footer.extend_from_slice(&index_len.to_le_bytes());
        footer.extend_from_slice(&crc32fast::hash(&index).to_le_bytes());
        footer.extend_from_slice(FOOTER_MAGIC);
        w.write_all(&footer).at(&tmp)?;
        let f = w
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
        diskio::sync_file(faults, &f, &what).at(&tmp)?;
        drop(f);
        fs::rename(&tmp, &path).at(&path)?;
        diskio::fsync_dir(dir).at(dir)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Segment::open(&path, seq)
}

impl Segment {
    /// Opens a segment: reads and checks its footer and index.
    pub fn open(path: &Path, seq: u64) -> Result<Segment, Error> {
        let file = File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len();
        let bad = |d: String| Error::corrupt(path, d);
        if len < MAGIC.len() as u64 + FOOTER_LEN {
            return Err(bad(format!("{len} bytes is too short for a segment")));
        }
        let mut head = [0u8; 8];
        file.read_exact_at(&mut head, 0).at(path)?;
        if &head != MAGIC {
            return Err(bad("bad segment magic".into()));
        }
        let mut footer = [0u8; FOOTER_LEN as usize];
        file.read_exact_at(&mut footer, len - FOOTER_LEN).at(path)?;
        let mut r = Reader::new(&footer);
        let index_off = r.u64_le("index offset").map_err(bad)?;
        let index_len = r.u32_le("index length").map_err(bad)?;
        let index_crc = r.u32_le("index checksum").map_err(bad)?;
        if r.bytes(8, "footer magic").map_err(bad)? != FOOTER_MAGIC {
            return Err(bad("bad segment footer magic".into()));
        }
        if index_off < MAGIC.len() as u64 || index_off + u64::from(index_len) != len - FOOTER_LEN {
            return Err(bad(format!(
                "index at {index_off}+{index_len} does not end at the footer ({})",
                len - FOOTER_LEN
            )));
        }
        let mut index = vec![0u8; index_len as usize];
        file.read_exact_at(&mut index, index_off).at(path)?;
        let actual = crc32fast::hash(&index);
        if actual != index_crc {
            return Err(bad(format!(
                "index checksum mismatch (stored {index_crc:08x}, computed {actual:08x})"
            )));
        }
        let (wal_cut, replaces, min_ts, max_ts, streams) =
            decode_index(&index, index_off).map_err(|d| bad(format!("index: {d}")))?;
        Ok(Segment {
            path: path.to_path_buf(),
            file,
            seq,
            wal_cut,
            replaces,
            min_ts,
            max_ts,
            file_bytes: len,
            streams,
        })
    }

    /// Reads a block's compressed bytes and checks its CRC.
    pub fn read_block(&self, b: &BlockRef) -> Result<Vec<u8>, Error> {
        let mut buf = vec![0u8; b.len as usize];
        self.file.read_exact_at(&mut buf, b.offset).at(&self.path)?;
        let actual = crc32fast::hash(&buf);
        if actual != b.crc {
            return Err(Error::corrupt(
                &self.path,
                format!(
                    "block at byte {}: checksum mismatch (stored {:08x}, computed {actual:08x})",
                    b.offset, b.crc
                ),
            ));
        }
        Ok(buf)
    }

    /// Reads and checks every block (CRC and decoding): a full scrub.
    pub fn verify(&self) -> Result<(), Error> {
        for s in &self.streams {
            for b in &s.blocks {
                let data = self.read_block(b)?;
                crate::block::decode(&data, &b.meta).map_err(|d| {
                    Error::corrupt(&self.path, format!("block at byte {}: {d}", b.offset))
                })?;
            }
        }
        Ok(())
    }
}

type Index = (u64, Vec<u64>, i64, i64, Vec<SegStream>);

fn decode_index(index: &[u8], data_end: u64) -> Result<Index, String> {
    let mut r = Reader::new(index);
    let v = r.uvarint("index version")?;
    if v != INDEX_VERSION {
        return Err(format!("unknown index version {v}"));
    }
    let wal_cut = r.uvarint("wal cut")?;
    let nr = r.usize_bounded(r.remaining(), "replaced segment count")?;
    let mut replaces = Vec::with_capacity(nr);
    for _ in 0..nr {
        replaces.push(r.uvarint("replaced segment")?);
    }
    let min_ts = r.varint("min time")?;
    let max_ts = r.varint("max time")?;
    let n = r.usize_bounded(r.remaining(), "stream count")?;
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let nl = r.usize_bounded(r.remaining(), "label count")?;
        let mut labels = Vec::with_capacity(nl);
        for _ in 0..nl {
            let name = r.str("label name")?.to_string();
            let value = r.str("label value")?.to_string();
            labels.push(Label { name, value });
        }
        let labels = Labels::from_sorted_checked(labels).map_err(|e| e.to_string())?;
        let nb = r.usize_bounded(r.remaining(), "block count")?;
        let mut blocks = Vec::with_capacity(nb);
        for _ in 0..nb {
            let offset = r.uvarint("block offset")?;
            let len = r.uvarint("block length")?;
            if offset.checked_add(len).is_none_or(|e| e > data_end) || len > u64::from(u32::MAX) {
                return Err(format!("block {offset}+{len} lies outside the data"));
            }
            let crc = r.u32_le("block checksum")?;
            let meta = BlockMeta {
                min_ts: r.varint("block min time")?,
                max_ts: r.varint("block max time")?,
                entries: u32::try_from(r.uvarint("entry count")?).map_err(|e| e.to_string())?,
                line_bytes: r.uvarint("line bytes")?,
                raw_len: u32::try_from(r.uvarint("raw length")?).map_err(|e| e.to_string())?,
                bloom: Bloom::decode(r.len_bytes("bloom filter")?)?,
            };
            blocks.push(BlockRef {
                meta,
                offset,
                len: len as u32,
                crc,
            });
        }
        streams.push(SegStream { labels, blocks });
    }
    if !r.is_empty() {
        return Err(format!("{} trailing bytes", r.remaining()));
    }
    Ok((wal_cut, replaces, min_ts, max_ts, streams))
}
