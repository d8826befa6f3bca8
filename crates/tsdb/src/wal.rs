//! The write-ahead log: every accepted sample is written and fsynced here
//! before its append is acknowledged.
//!
//! # Crash contract
//!
//! When [`Wal::wait`] returns `Ok` for a ticket, the records submitted
//! under that ticket and every earlier ticket are on disk (`fdatasync`
//! returned). After a crash (process kill or power cut) replay yields
//! exactly a prefix of the submitted records that contains at least every
//! acknowledged one; a record is either replayed whole or not at all
//! (each is a checksummed [`diskio::frame`]). A torn tail of the last
//! segment is truncated on open; damage followed by a valid record is
//! [`Error::Corrupt`] and nothing is repaired.
//!
//! A failed write or fsync poisons the log: every later submission fails
//! with [`Error::Poisoned`], because after a failed fsync the kernel may
//! have dropped the dirty pages and a retry could report success for data
//! that is gone.
//!
//! # Group commit
//!
//! Appenders call [`Wal::submit`] (cheap: copy the framed bytes into a
//! shared buffer under a mutex, get a ticket) and then [`Wal::wait`]. One
//! writer thread takes everything pending, writes it with one `write`, and
//! calls `fdatasync` once, then wakes every waiter whose ticket is covered.
//! While one fsync runs, the next group accumulates. A dedicated thread
//! (rather than leader/follower among the appenders) keeps the appenders'
//! threads — tokio's blocking pool — free of the fsync and the code simple.
//!
//! # Files
//!
//! Segments `wal/00000001`, `wal/00000002`, … hold framed records (format in
//! docs/format/tsdb-wal.md). A new segment starts at open, when one exceeds
//! [`SEGMENT_BYTES`], and on [`Wal::rotate`]; it is created under a
//! temporary name and renamed once its magic is fsynced, so a kill never
//! leaves a segment without one. [`Wal::checkpoint`] condenses
//! the segments before a given one into `wal/checkpoint.N/00000000`
//! (dropping samples already in blocks) and deletes them.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use diskio::{Faults, ScanEnd};
use model::{HistogramValue, Metadata, MetricType};

use crate::Error;
use crate::chunk::{decode_histogram, encode_histogram};
use crate::enc::{Reader, put_f64, put_str, put_uvarint, put_varint};
use crate::error::IoContext;
use crate::files;

/// A segment is closed and a new one started past this size.
pub const SEGMENT_BYTES: u64 = 128 << 20;
/// The first bytes of every segment and checkpoint file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"FDTSWAL1";
/// Largest record payload accepted on replay.
pub const MAX_RECORD: usize = 1 << 30;

const REC_PROJECT: u8 = 1;
const REC_SERIES: u8 = 2;
const REC_SAMPLES: u8 = 3;
const REC_HISTOGRAMS: u8 = 4;
const REC_METADATA: u8 = 5;
const REC_TRUNCATE: u8 = 6;

/// One decoded WAL record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Declares project number `id` (used by the other records).
    Project { id: u32, name: String },
    /// New series of a project: `(ref, labels as name/value pairs)`.
    Series {
        project: u32,
        series: Vec<(u32, Vec<(String, String)>)>,
    },
    /// Float samples: `(ref, t, v)` in append order.
    Samples {
        project: u32,
        samples: Vec<(u32, i64, f64)>,
    },
    /// Histogram samples: `(ref, t, h)`.
    Histograms {
        project: u32,
        histograms: Vec<(u32, i64, HistogramValue)>,
    },
    Metadata {
        project: u32,
        metric: String,
        meta: Metadata,
    },
    /// The project's head dropped everything before `before` (it went into
    /// a block) and removed the series left without data. Replay does the
    /// same at the same point, so series refs come out as they were.
    Truncate { project: u32, before: i64 },
}

// ------------------------------------------------------------ encoding

pub fn encode_project(out: &mut Vec<u8>, id: u32, name: &str) {
    out.push(REC_PROJECT);
    put_uvarint(out, u64::from(id));
    put_str(out, name);
}

/// Encodes a series record; `series` yields `(ref, pairs)`.
pub fn encode_series<'a>(
    out: &mut Vec<u8>,
    project: u32,
    series: impl ExactSizeIterator<Item = (u32, Vec<(&'a str, &'a str)>)>,
) {
    out.push(REC_SERIES);
    put_uvarint(out, u64::from(project));
    put_uvarint(out, series.len() as u64);
    for (r, pairs) in series {
        put_uvarint(out, u64::from(r));
        put_uvarint(out, pairs.len() as u64);
        for (n, v) in pairs {
            put_str(out, n);
            put_str(out, v);
        }
    }
}

/// Builds a samples record incrementally: samples are grouped in runs per
/// series (`ref, n`, then per sample `Δt` as a zigzag varint and `v` as 8
/// bytes). Timestamps are deltas within a run; a run's first is relative to
/// the record's base time (its first sample's), so it is short too.
#[derive(Default)]
pub struct SamplesEncoder {
    buf: Vec<u8>,
    /// The open run's samples (its count must be written before them).
    run: Vec<u8>,
    run_ref: u32,
    runs: u64,
    run_len: u64,
    last_t: i64,
    base_t: Option<i64>,
    max_t: i64,
    total: usize,
}

impl SamplesEncoder {
    pub fn begin_series(&mut self, r: u32) {
        self.end_run();
        self.run_ref = r;
        self.run_len = 0;
        self.last_t = self.base_t.unwrap_or(0);
    }

    fn end_run(&mut self) {
        if self.run_len == 0 {
            return;
        }
        put_uvarint(&mut self.buf, u64::from(self.run_ref));
        put_uvarint(&mut self.buf, self.run_len);
        self.buf.extend_from_slice(&self.run);
        self.run.clear();
        self.run_len = 0;
        self.runs += 1;
    }

    /// Adds a sample to the run begun last.
    pub fn push(&mut self, t: i64, v: f64) {
        if self.base_t.is_none() {
            self.base_t = Some(t);
            self.last_t = t;
        }
        put_varint(&mut self.run, t.wrapping_sub(self.last_t));
        put_f64(&mut self.run, v);
        self.last_t = t;
        self.max_t = if self.total == 0 {
            t
        } else {
            self.max_t.max(t)
        };
        self.run_len += 1;
        self.total += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Writes the record (type, project, newest time, base time, run
    /// count, runs).
    pub fn finish(mut self, project: u32, out: &mut Vec<u8>) {
        self.end_run();
        out.push(REC_SAMPLES);
        put_uvarint(out, u64::from(project));
        put_varint(out, self.max_t);
        put_varint(out, self.base_t.unwrap_or(0));
        put_uvarint(out, self.runs);
        out.extend_from_slice(&self.buf);
    }
}

pub fn encode_histograms(out: &mut Vec<u8>, project: u32, h: &[(u32, i64, &HistogramValue)]) {
    out.push(REC_HISTOGRAMS);
    put_uvarint(out, u64::from(project));
    put_uvarint(out, h.len() as u64);
    for (r, t, v) in h {
        put_uvarint(out, u64::from(*r));
        put_varint(out, *t);
        encode_histogram(out, v);
    }
}

pub fn encode_metadata(out: &mut Vec<u8>, project: u32, metric: &str, m: &Metadata) {
    out.push(REC_METADATA);
    put_uvarint(out, u64::from(project));
    put_str(out, metric);
    put_str(out, m.metric_type.as_str());
    put_str(out, &m.help);
    put_str(out, &m.unit);
}

pub fn encode_truncate(out: &mut Vec<u8>, project: u32, before: i64) {
    out.push(REC_TRUNCATE);
    put_uvarint(out, u64::from(project));
    put_varint(out, before);
}

/// For a Samples record: its project and newest timestamp, read from the
/// header alone (a checkpoint skips records wholly older than what it keeps
/// without decoding them).
pub fn samples_header(payload: &[u8]) -> Option<(u32, i64)> {
    let mut r = Reader::new(payload);
    if r.u8("record type").ok()? != REC_SAMPLES {
        return None;
    }
    Some((r.u32v("project id").ok()?, r.varint("newest time").ok()?))
}

/// Decodes one record payload.
pub fn decode(payload: &[u8]) -> Result<Record, String> {
    let mut r = Reader::new(payload);
    let kind = r.u8("record type")?;
    let rec = match kind {
        REC_PROJECT => Record::Project {
            id: r.u32v("project id")?,
            name: r.str("project name")?.to_string(),
        },
        REC_SERIES => {
            let project = r.u32v("project id")?;
            let n = r.usize_bounded(r.remaining(), "series count")?;
            let mut series = Vec::with_capacity(n);
            for _ in 0..n {
                let sref = r.u32v("series ref")?;
                let nl = r.usize_bounded(r.remaining(), "label count")?;
                let mut pairs = Vec::with_capacity(nl);
                for _ in 0..nl {
                    let name = r.str("label name")?.to_string();
                    let value = r.str("label value")?.to_string();
                    pairs.push((name, value));
                }
                series.push((sref, pairs));
            }
            Record::Series { project, series }
        }
        REC_SAMPLES => {
            let project = r.u32v("project id")?;
            let _newest = r.varint("newest time")?;
            let base = r.varint("base time")?;
            let runs = r.usize_bounded(r.remaining(), "run count")?;
            let mut samples = Vec::new();
            for _ in 0..runs {
                let sref = r.u32v("series ref")?;
                let n = r.usize_bounded(r.remaining() / 9, "sample count")?;
                let mut t = base;
                for _ in 0..n {
                    t = t.wrapping_add(r.varint("timestamp")?);
                    samples.push((sref, t, r.f64("value")?));
                }
            }
            Record::Samples { project, samples }
        }
        REC_HISTOGRAMS => {
            let project = r.u32v("project id")?;
            let n = r.usize_bounded(r.remaining(), "histogram count")?;
            let mut histograms = Vec::with_capacity(n);
            for _ in 0..n {
                let sref = r.u32v("series ref")?;
                let t = r.varint("timestamp")?;
                histograms.push((sref, t, decode_histogram(&mut r)?));
            }
            Record::Histograms {
                project,
                histograms,
            }
        }
        REC_METADATA => {
            let project = r.u32v("project id")?;
            let metric = r.str("metric name")?.to_string();
            let t = r.str("metric type")?;
            let metric_type = MetricType::parse(t).ok_or_else(|| format!("unknown type {t:?}"))?;
            let help = r.str("help")?.to_string();
            let unit = r.str("unit")?.to_string();
            Record::Metadata {
                project,
                metric,
                meta: Metadata {
                    metric_type,
                    help,
                    unit,
                },
            }
        }
        REC_TRUNCATE => Record::Truncate {
            project: r.u32v("project id")?,
            before: r.varint("truncation time")?,
        },
        k => return Err(format!("unknown record type {k}")),
    };
    if !r.is_empty() {
        return Err(format!("{} trailing bytes after record", r.remaining()));
    }
    Ok(rec)
}

/// Re-encodes a decoded record (used by checkpoints).
pub fn encode(out: &mut Vec<u8>, rec: &Record) {
    match rec {
        Record::Project { id, name } => encode_project(out, *id, name),
        Record::Series { project, series } => encode_series(
            out,
            *project,
            series.iter().map(|(r, p)| {
                (
                    *r,
                    p.iter()
                        .map(|(n, v)| (n.as_str(), v.as_str()))
                        .collect::<Vec<_>>(),
                )
            }),
        ),
        Record::Samples { project, samples } => {
            let mut e = SamplesEncoder::default();
            let mut cur = None;
            for (r, t, v) in samples {
                if cur != Some(*r) {
                    e.begin_series(*r);
                    cur = Some(*r);
                }
                e.push(*t, *v);
            }
            e.finish(*project, out);
        }
        Record::Histograms {
            project,
            histograms,
        } => {
            let v: Vec<(u32, i64, &HistogramValue)> =
                histograms.iter().map(|(r, t, h)| (*r, *t, h)).collect();
            encode_histograms(out, *project, &v);
        }
        Record::Metadata {
            project,
            metric,
            meta,
        } => encode_metadata(out, *project, metric, meta),
        Record::Truncate { project, before } => encode_truncate(out, *project, *before),
    }
}

// ------------------------------------------------------------ the log

/// A ticket from [`Wal::submit`]: wait on it for durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

struct State {
    /// Framed records submitted and not yet taken by the writer.
    pending: Vec<u8>,
    /// Ticket of the last submission.
    next: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    poisoned: Option<String>,
    shutdown: bool,
    /// A rotation asked for and not yet done: the number it asked at.
    rotate_asked: u64,
    rotate_done: u64,
    /// Current segment number (updated by the writer).
    segment: u64,
    /// Fsyncs done, for tests and stats.
    syncs: u64,
    /// Durations of write + fdatasync per group commit.
    sync_hist: SyncHistogram,
}

/// Upper bounds (seconds) of the WAL sync latency histogram.
pub const SYNC_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How long the WAL's group commits (one write + one fdatasync) took:
/// counts per bucket of [`SYNC_BUCKETS`] (not cumulative), their sum and count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncHistogram {
    pub buckets: [u64; SYNC_BUCKETS.len()],
    /// Observations above the last bucket bound.
    pub overflow: u64,
    pub sum_seconds: f64,
    pub count: u64,
}

impl SyncHistogram {
    fn observe(&mut self, secs: f64) {
        match SYNC_BUCKETS.iter().position(|b| secs <= *b) {
            Some(i) => self.buckets[i] += 1,
            None => self.overflow += 1,
        }
        self.sum_seconds += secs;
        self.count += 1;
    }
}

struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    work: Condvar,
    done: Condvar,
    faults: Faults,
}

/// The write-ahead log. See the module doc for the crash contract.
pub struct Wal {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock is a bug elsewhere; the data it
    // guards (byte buffers, counters) is still consistent enough to go on.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn list_segments(dir: &Path) -> Result<(Vec<u64>, Option<u64>), Error> {
    let mut segs = Vec::new();
    let mut checkpoint: Option<u64> = None;
    for e in fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(n) = name.strip_prefix(files::CHECKPOINT_PREFIX) {
            if let Ok(n) = n.parse::<u64>() {
                checkpoint = Some(checkpoint.map_or(n, |c| c.max(n)));
            }
        } else if name.starts_with(files::TMP_PREFIX) {
            let p = e.path();
            let _ = fs::remove_dir_all(&p).or_else(|_| fs::remove_file(&p));
        } else if let Ok(n) = name.parse::<u64>() {
            segs.push(n);
        }
    }
    segs.sort_unstable();
    Ok((segs, checkpoint))
}

/// Capacity over which the writer replaces its buffer by a small one
/// after a write.
const RETAINED_BUFFER_BYTES: usize = 8 << 20;

/// Suffix of a segment being created (see `create_segment`).
const SEGMENT_TMP_SUFFIX: &str = ".tmp";

/// A segment file cut short while its header was being written: shorter
/// than the magic and a prefix of it.
fn is_headless(buf: &[u8]) -> bool {
    buf.len() < SEGMENT_MAGIC.len() && SEGMENT_MAGIC.starts_with(buf)
}

/// Bytes of a segment held in memory at a time while it is read (a record
/// longer than this is read whole).
const READ_WINDOW: usize = 8 << 20;

/// Reads one segment; a torn tail is truncated when `truncate_torn`, and is
/// corruption otherwise.
///
/// The file is read a window at a time, so replaying or checkpointing a
/// 128 MiB segment holds a few MiB. A record cut by the window's end looks
/// like a torn tail to the scan; that is only believed at the end of the
/// file: before it, the rest of the record is read and the scan goes on
/// (and a bad record is judged with the whole rest of the file in memory,
/// exactly as a scan of the whole file would judge it).
fn read_segment(
    path: &Path,
    truncate_torn: bool,
    skip: &dyn Fn(&[u8]) -> bool,
    apply: &mut dyn FnMut(Record) -> Result<(), Error>,
) -> Result<(), Error> {
    read_segment_windowed(path, READ_WINDOW, truncate_torn, skip, apply)
}

/// [`read_segment`] with a given window (tests use small ones).
fn read_segment_windowed(
    path: &Path,
    window: usize,
    truncate_torn: bool,
    skip: &dyn Fn(&[u8]) -> bool,
    apply: &mut dyn FnMut(Record) -> Result<(), Error>,
) -> Result<(), Error> {
    let window = window.max(SEGMENT_MAGIC.len());
    let mut f = File::open(path).at(path)?;
    let len = f.metadata().at(path)?.len();
    let mut buf: Vec<u8> = Vec::new();
    let read_to = |f: &mut File, buf: &mut Vec<u8>, want: usize| -> Result<(), Error> {
        let have = buf.len();
        if want > have {
            buf.resize(want, 0);
            let mut filled = have;
            while filled < want {
                let n = f.read(&mut buf[filled..]).at(path)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            buf.truncate(filled);
        }
        Ok(())
    };
    // `pos`: the file offset of `buf[0]`; `file_read`: bytes read so far.
    read_to(&mut f, &mut buf, window.min(len as usize))?;
    let mut file_read = buf.len() as u64;
    if is_headless(&buf) && file_read == len {
        // Created, header not (wholly) written: no record can be in it.
        // (Stores written before segments were created by rename can hold
        // such a file before other segments; `Wal::open` removes it.)
        return Ok(());
    }
    if !buf.starts_with(SEGMENT_MAGIC) {
        return Err(Error::corrupt(
            path,
            format!(
                "does not start with the WAL segment magic {:?}",
                String::from_utf8_lossy(SEGMENT_MAGIC)
            ),
        ));
    }
    let mut pos = 0usize;
    let mut start = SEGMENT_MAGIC.len();
    loop {
        let at_eof = file_read == len;
        let base = pos + start;
        let mut it = diskio::scan(&buf[start..], MAX_RECORD);
        for rec in it.by_ref() {
            if skip(rec.payload) {
                continue;
            }
            let r = decode(rec.payload).map_err(|d| {
                Error::corrupt(path, format!("record at byte {}: {d}", base + rec.offset))
            })?;
            apply(r)?;
        }
        let good = it.good_end();
        let end = it.finish();
        let more = match &end {
            ScanEnd::Clean | ScanEnd::Torn { .. } => !at_eof,
            ScanEnd::Corrupt { .. } => false,
        };
        if more {
            // Keep the unread tail, then read the next window, or (when the
            // tail is one record longer than a window, or a bad one) all
            // that is left of the file.
            let keep_from = start + good;
            buf.drain(..keep_from);
            pos += keep_from;
            start = 0;
            let want = if good == 0 && !matches!(end, ScanEnd::Clean) {
                buf.len() + (len - file_read) as usize
            } else {
                window.max(buf.len())
            };
            let before = buf.len();
            read_to(&mut f, &mut buf, want)?;
            file_read += (buf.len() - before) as u64;
            if buf.len() == before && file_read < len {
                return Err(Error::corrupt(path, "the file shrank while it was read"));
            }
            continue;
        }
        return match end {
            ScanEnd::Clean => Ok(()),
            ScanEnd::Torn { good_end, reason } if truncate_torn => {
                let f = OpenOptions::new().write(true).open(path).at(path)?;
                f.set_len((base + good_end) as u64).at(path)?;
                f.sync_all().at(path)?;
                let _ = reason;
                Ok(())
            }
            ScanEnd::Torn { good_end, reason } => Err(Error::corrupt(
                path,
                format!(
                    "bad record at byte {} in a segment that is not the last: {reason}",
                    base + good_end
                ),
            )),
            ScanEnd::Corrupt {
                offset,
                next_valid,
                reason,
            } => Err(Error::corrupt(
                path,
                format!(
                    "bad record at byte {} ({reason}) followed by a valid one at byte {}: damage, not a torn write",
                    base + offset,
                    base + next_valid
                ),
            )),
        };
    }
}

impl Wal {
    /// Opens the log in `dir` (created if missing): hands every record to
    /// `apply` in order (the checkpoint's, then each segment's; one file in
    /// memory at a time), truncates a torn tail, and starts a fresh segment
    /// and the writer thread.
    pub fn open(
        dir: &Path,
        faults: Faults,
        mut apply: impl FnMut(Record) -> Result<(), Error>,
    ) -> Result<Wal, Error> {
        fs::create_dir_all(dir).at(dir)?;
        for e in fs::read_dir(dir).at(dir)? {
            let e = e.at(dir)?;
            if e.file_name()
                .to_string_lossy()
                .ends_with(SEGMENT_TMP_SUFFIX)
            {
                fs::remove_file(e.path()).at(&e.path())?;
            }
        }
        let (segs, checkpoint) = list_segments(dir)?;
        let first_seg = if let Some(c) = checkpoint {
            let cdir = dir.join(format!("{}{c:08}", files::CHECKPOINT_PREFIX));
            read_segment(
                &cdir.join(files::segment_name(0)),
                false,
                &|_| false,
                &mut apply,
            )?;
            // Older checkpoints and segments a checkpoint covers are leftovers
            // of a checkpoint interrupted after its rename.
            for e in fs::read_dir(dir).at(dir)? {
                let e = e.at(dir)?;
                let name = e.file_name().to_string_lossy().to_string();
                if let Some(n) = name.strip_prefix(files::CHECKPOINT_PREFIX)
                    && n.parse::<u64>().is_ok_and(|n| n < c)
                {
                    fs::remove_dir_all(e.path()).at(&e.path())?;
                }
            }
            c
        } else {
            0
        };
        let mut last = 0;
        for (i, &s) in segs.iter().enumerate() {
            let p = dir.join(files::segment_name(s));
            if s < first_seg {
                fs::remove_file(&p).at(&p)?;
                continue;
            }
            read_segment(&p, i + 1 == segs.len(), &|_| false, &mut apply)?;
            last = s;
            if fs::metadata(&p).at(&p)?.len() < SEGMENT_MAGIC.len() as u64 {
                // Headless (read_segment checked it holds no record).
                fs::remove_file(&p).at(&p)?;
                diskio::fsync_dir(dir).at(dir)?;
            }
        }
        let segment = last.max(first_seg) + 1;
        let file = create_segment(dir, segment)?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                pending: Vec::with_capacity(1 << 20),
                next: 0,
                durable: 0,
                poisoned: None,
                shutdown: false,
                rotate_asked: 0,
                rotate_done: 0,
                segment,
                syncs: 0,
                sync_hist: SyncHistogram::default(),
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            faults,
        });
        let s2 = shared.clone();
        let handle = std::thread::Builder::new()
            .name("tsdb-wal".into())
            .spawn(move || writer(s2, file, segment))
            .map_err(|e| Error::io(dir, e))?;
        Ok(Wal {
            shared,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Queues framed records (`bytes` as built by [`diskio::encode_record`])
    /// and returns the ticket to wait on.
    pub fn submit(&self, bytes: &[u8]) -> Result<Ticket, Error> {
        let mut st = lock(&self.shared.state);
        if let Some(p) = &st.poisoned {
            return Err(Error::Poisoned(p.clone()));
        }
        if st.shutdown {
            return Err(Error::Closed);
        }
        st.pending.extend_from_slice(bytes);
        st.next += 1;
        let t = Ticket(st.next);
        drop(st);
        self.shared.work.notify_one();
        Ok(t)
    }

    /// A ticket covering everything submitted so far, without adding
    /// anything (an append whose samples were all exact duplicates must
    /// still not return before the originals are durable).
    pub fn barrier(&self) -> Result<Ticket, Error> {
        let st = lock(&self.shared.state);
        if let Some(p) = &st.poisoned {
            return Err(Error::Poisoned(p.clone()));
        }
        Ok(Ticket(st.next))
    }

    /// Blocks until the ticket's records are fsynced.
    pub fn wait(&self, t: Ticket) -> Result<(), Error> {
        let mut st = lock(&self.shared.state);
        loop {
            if st.durable >= t.0 {
                return Ok(());
            }
            if let Some(p) = &st.poisoned {
                return Err(Error::Poisoned(p.clone()));
            }
            st = self.shared.done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Closes the current segment and starts a new one; returns the new
    /// segment's number. Everything submitted before the call is in
    /// segments before it.
    pub fn rotate(&self) -> Result<u64, Error> {
        let mut st = lock(&self.shared.state);
        st.rotate_asked += 1;
        let want = st.rotate_asked;
        self.shared.work.notify_one();
        loop {
            if let Some(p) = &st.poisoned {
                return Err(Error::Poisoned(p.clone()));
            }
            if st.rotate_done >= want {
                return Ok(st.segment);
            }
            st = self.shared.done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Replaces every segment before `before` (and any older checkpoint)
    /// by `checkpoint.<before>`, holding the records `keep` returns for the
    /// records of those files. Crash-safe: the checkpoint is written to a
    /// temporary directory, fsynced and renamed before anything is deleted.
    ///
    /// `skip_samples(project, newest)` drops a Samples record without
    /// decoding it.
    pub fn checkpoint(
        &self,
        before: u64,
        skip_samples: impl Fn(u32, i64) -> bool,
        mut keep: impl FnMut(Record) -> Option<Record>,
    ) -> Result<(), Error> {
        let skip =
            |p: &[u8]| samples_header(p).is_some_and(|(proj, newest)| skip_samples(proj, newest));
        let dir = &self.shared.dir;
        let (segs, old_cp) = list_segments(dir)?;
        let name = format!("{}{before:08}", files::CHECKPOINT_PREFIX);
        let tmp = dir.join(format!("{}{name}", files::TMP_PREFIX));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).at(&tmp)?;
        let seg = tmp.join(files::segment_name(0));
        let mut f = File::create(&seg).at(&seg)?;
        let faults = &self.shared.faults;
        // Streamed: one input file and a few MiB of output in memory.
        let mut out = SEGMENT_MAGIC.to_vec();
        let mut payload = Vec::new();
        let mut sink = |r: Record| -> Result<(), Error> {
            if let Some(r) = keep(r) {
                payload.clear();
                encode(&mut payload, &r);
                diskio::encode_record(&mut out, &payload)
                    .map_err(|e| Error::InvalidInput(e.to_string()))?;
                if out.len() >= 8 << 20 {
                    diskio::write_all(faults, &mut f, &out, "wal checkpoint").at(&seg)?;
                    out.clear();
                }
            }
            Ok(())
        };
        if let Some(c) = old_cp {
            let p = dir
                .join(format!("{}{c:08}", files::CHECKPOINT_PREFIX))
                .join(files::segment_name(0));
            read_segment(&p, false, &skip, &mut sink)?;
        }
        let old: Vec<u64> = segs.into_iter().filter(|s| *s < before).collect();
        for s in &old {
            read_segment(&dir.join(files::segment_name(*s)), false, &skip, &mut sink)?;
        }
        diskio::write_all(faults, &mut f, &out, "wal checkpoint").at(&seg)?;
        diskio::sync_file(&self.shared.faults, &f, "wal checkpoint").at(&seg)?;
        drop(f);
        diskio::fsync_dir(&tmp).at(&tmp)?;
        let fin = dir.join(&name);
        fs::rename(&tmp, &fin).at(&fin)?;
        diskio::fsync_dir(dir).at(dir)?;
        for s in old {
            let p = dir.join(files::segment_name(s));
            fs::remove_file(&p).at(&p)?;
        }
        if let Some(c) = old_cp.filter(|c| *c != before) {
            let p = dir.join(format!("{}{c:08}", files::CHECKPOINT_PREFIX));
            fs::remove_dir_all(&p).at(&p)?;
        }
        diskio::fsync_dir(dir).at(dir)?;
        Ok(())
    }

    /// Number of fsyncs the writer did (group commit makes this far
    /// smaller than the number of appends).
    pub fn syncs(&self) -> u64 {
        lock(&self.shared.state).syncs
    }

    /// The latency histogram of the group commits so far.
    pub fn sync_histogram(&self) -> SyncHistogram {
        lock(&self.shared.state).sync_hist.clone()
    }

    /// The poison message, if a write failed.
    pub fn poisoned(&self) -> Option<String> {
        lock(&self.shared.state).poisoned.clone()
    }

    /// Bytes of WAL files on disk.
    pub fn disk_bytes(&self) -> u64 {
        crate::block::dir_size(&self.shared.dir)
    }

    /// Writes what is pending, stops the writer thread.
    pub fn close(&self) -> Result<(), Error> {
        {
            let mut st = lock(&self.shared.state);
            st.shutdown = true;
        }
        self.shared.work.notify_one();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
        match lock(&self.shared.state).poisoned.clone() {
            Some(p) => Err(Error::Poisoned(p)),
            None => Ok(()),
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Creates segment `n` holding only its header. Written under a temporary
/// name and renamed, so a crash never leaves a segment without its magic.
fn create_segment(dir: &Path, n: u64) -> Result<File, Error> {
    let p = dir.join(files::segment_name(n));
    // Not `TMP_PREFIX`: a checkpoint's listing removes those, and may run
    // while the writer creates a segment. `Wal::open` removes leftovers.
    let tmp = dir.join(format!("{}{SEGMENT_TMP_SUFFIX}", files::segment_name(n)));
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp)
        .at(&tmp)?;
    std::io::Write::write_all(&mut f, SEGMENT_MAGIC).at(&tmp)?;
    f.sync_all().at(&tmp)?;
    fs::rename(&tmp, &p).at(&p)?;
    diskio::fsync_dir(dir).at(dir)?;
    Ok(f)
}

fn writer(shared: Arc<Shared>, mut file: File, mut segment: u64) {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut size: u64 = 0;
    loop {
        let (upto, rotate) = {
            let mut st = lock(&shared.state);
            while st.pending.is_empty() && !st.shutdown && st.rotate_asked == st.rotate_done {
                st = shared.work.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.poisoned.is_some() {
                // Refuse to write anything more; waiters see the poison.
                st.pending.clear();
                if st.shutdown {
                    return;
                }
                st.rotate_done = st.rotate_asked;
                shared.done.notify_all();
                continue;
            }
            if st.pending.is_empty() && st.shutdown {
                return;
            }
            std::mem::swap(&mut buf, &mut st.pending);
            (st.next, st.rotate_asked)
        };
        let what = "wal segment";
        let mut result = Ok(());
        let mut took = None;
        if !buf.is_empty() {
            let started = std::time::Instant::now();
            result = diskio::write_all(&shared.faults, &mut file, &buf, what)
                .and_then(|()| diskio::sync_file(&shared.faults, &file, what));
            took = Some(started.elapsed().as_secs_f64());
            size += buf.len() as u64;
        }
        let mut rotated = false;
        if result.is_ok() && (size >= SEGMENT_BYTES || rotate != lock(&shared.state).rotate_done) {
            match create_segment(&shared.dir, segment + 1) {
                Ok(f) => {
                    file = f;
                    segment += 1;
                    size = 0;
                    rotated = true;
                }
                Err(e) => result = Err(std::io::Error::other(e.to_string())),
            }
        }
        buf.clear();
        if buf.capacity() > RETAINED_BUFFER_BYTES {
            // A burst (a million new series' records at once) must not
            // pin its peak in memory: `buf` and `pending` swap, so both
            // pass here.
            buf = Vec::with_capacity(1 << 20);
        }
        let mut st = lock(&shared.state);
        match result {
            Ok(()) => {
                st.durable = upto;
                st.syncs += 1;
                if let Some(t) = took {
                    st.sync_hist.observe(t);
                }
                if rotated {
                    st.segment = segment;
                    st.rotate_done = rotate;
                }
            }
            Err(e) => {
                st.poisoned = Some(format!("{} segment {segment}: {e}", shared.dir.display()));
            }
        }
        drop(st);
        shared.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `bytes` as a segment with the given window: the records, or the
    /// error, and the file's length afterwards.
    fn read_with(
        bytes: &[u8],
        window: usize,
        truncate: bool,
    ) -> (Result<Vec<Record>, String>, u64) {
        // One path for every call (they run one after another), so that
        // errors naming it compare equal.
        let dir = std::env::temp_dir().join(format!("fd-wal-window-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("seg");
        fs::write(&path, bytes).unwrap();
        let mut got = Vec::new();
        let r = read_segment_windowed(&path, window, truncate, &|_| false, &mut |rec| {
            got.push(rec);
            Ok(())
        });
        let len = fs::metadata(&path).unwrap().len();
        fs::remove_dir_all(&dir).unwrap();
        (r.map(|()| got).map_err(|e| e.to_string()), len)
    }

    #[test]
    fn reading_by_windows_gives_what_reading_whole_gives() {
        let mut seg = SEGMENT_MAGIC.to_vec();
        let mut ends = Vec::new();
        for i in 0..40u32 {
            let rec = Record::Samples {
                project: 1,
                samples: (0..(i % 7) * 9 + 1)
                    .map(|k| (k, i64::from(i), f64::from(k)))
                    .collect(),
            };
            let mut payload = Vec::new();
            encode(&mut payload, &rec);
            diskio::encode_record(&mut seg, &payload).unwrap();
            ends.push(seg.len());
        }
        let whole = read_with(&seg, 1 << 30, false);
        assert_eq!(whole.0.as_ref().map(Vec::len), Ok(40));
        // Torn: the last record cut short. Damage: a byte of an early record
        // flipped (valid records follow).
        let torn = &seg[..seg.len() - 5];
        let mut damaged = seg.clone();
        damaged[ends[3] + 10] ^= 0x40;
        for window in [1, 9, 64, 300, 4096] {
            assert_eq!(read_with(&seg, window, false), whole, "window {window}");
            for case in [torn, &damaged[..]] {
                for truncate in [false, true] {
                    assert_eq!(
                        read_with(case, window, truncate),
                        read_with(case, 1 << 30, truncate),
                        "window {window}, truncate {truncate}"
                    );
                }
            }
        }
        // What those cases are, read whole: 39 records and a truncated tail;
        // an error naming damage.
        assert_eq!(read_with(torn, 1 << 30, true).1, ends[38] as u64);
        let err = read_with(&damaged, 1 << 30, false).0.unwrap_err();
        assert!(err.contains("damage, not a torn write"), "{err}");
    }

    #[test]
    fn records_round_trip() {
        let recs = vec![
            Record::Project {
                id: 3,
                name: "acme".into(),
            },
            Record::Series {
                project: 3,
                series: vec![(0, vec![("__name__".into(), "up".into())]), (1, vec![])],
            },
            Record::Samples {
                project: 3,
                samples: vec![
                    (0, 10, 1.0),
                    (0, 5, 2.0),
                    (1, -7, f64::INFINITY),
                    (0, 20, 0.5),
                ],
            },
            Record::Metadata {
                project: 3,
                metric: "up".into(),
                meta: Metadata {
                    metric_type: MetricType::Gauge,
                    help: "h".into(),
                    unit: "".into(),
                },
            },
            Record::Truncate {
                project: 3,
                before: -5,
            },
        ];
        for r in recs {
            let mut b = Vec::new();
            encode(&mut b, &r);
            assert_eq!(decode(&b).unwrap(), r);
            for cut in 0..b.len() {
                assert!(decode(&b[..cut]).is_err(), "cut {cut} of {r:?}");
            }
        }
    }
}
