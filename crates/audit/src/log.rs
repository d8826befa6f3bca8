//! [`AuditLog`]: open/recover, the group-commit writer, the indexer, reads.
//!
//! # Crash contract
//!
//! An event is acknowledged (its `append` returns `Ok`, its `append_with`
//! callback gets `Ok`) only after the segment bytes holding it were
//! fsynced (and, for a new segment, the directory too) and the search
//! index holds it. After a crash at any point, reopening yields every
//! acknowledged event, with the same seq, and possibly some events that
//! were written but never acknowledged (the caller got an error or never
//! heard back). A torn tail of the last segment is truncated on open.
//! If a write or fsync fails, the log is *poisoned*: that batch fails,
//! every later append fails with [`AuditError::Poisoned`], and the batch's
//! bytes are truncated away (best effort) so that they do not reappear.
//!
//! # Threads
//!
//! ```text
//! callers ──mpsc──▶ writer thread ──sync_channel(16)──▶ indexer thread ──▶ callbacks
//!                  stamp, frame, write,              one SQLite txn
//!                  ONE fsync per batch               per (merged) batch
//! ```
//!
//! Two stages so that fsyncing batch N+1 overlaps indexing batch N (the
//! machine has two cores). Both are plain threads: the crate must not
//! depend on tokio; the server bridges with a oneshot in `append_with`.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use diskio::{DirLock, Faults, LockError};

use crate::error::AuditError;
use crate::event::{Event, EventDraft, LogKey, format_time, time_from_ns};
use crate::files;
use crate::index::{self, IndexWriter, Readers, Row};
use crate::query::{Page, Query};
use crate::segment::{self, Found, MAX_EVENT_BYTES, Repair};

/// Largest number of events committed by one fsync.
const MAX_BATCH_EVENTS: usize = 4096;
/// Largest number of framed bytes committed by one fsync.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// Largest number of events indexed in one SQLite transaction.
const MAX_INDEX_BATCH: usize = 16384;
/// Rows per transaction while catching the index up at open.
const CATCH_UP_ROWS: usize = 8192;
/// Page size [`Export`] fetches internally.
const EXPORT_PAGE: usize = 500;

/// A clock in unix nanoseconds.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// A completion callback of [`AuditLog::append_with`].
pub type Done = Box<dyn FnOnce(Result<Event, AuditError>) + Send>;

/// How to open a log for writing.
#[derive(Clone)]
pub struct Options {
    /// A segment is sealed and a new one started once it reaches this size.
    pub max_segment_bytes: u64,
    /// Fault injection for tests; [`Faults::disabled`] in production.
    pub faults: Faults,
    /// Unix nanoseconds; `None` = the system clock. The log makes it
    /// non-decreasing (`max(now, last)`), so it may go backwards.
    pub clock: Option<Clock>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_segment_bytes: 64 << 20,
            faults: Faults::disabled(),
            clock: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("max_segment_bytes", &self.max_segment_bytes)
            .field("faults", &self.faults)
            .field("clock", &self.clock.as_ref().map(|_| "custom"))
            .finish()
    }
}

/// Counters of the writer, for benchmarks and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events made durable.
    pub events: u64,
    /// Batches committed (each one fsync of the segment).
    pub batches: u64,
    /// fsync calls: segment files and directories.
    pub fsyncs: u64,
    /// Bytes written to segments (headers and frames).
    pub bytes_written: u64,
}

#[derive(Default)]
struct StatCounters {
    events: AtomicU64,
    batches: AtomicU64,
    fsyncs: AtomicU64,
    bytes_written: AtomicU64,
}

/// The audit log of one data directory: cheap to clone, shareable across
/// threads. The writer and indexer threads stop when [`AuditLog::shutdown`]
/// is called or the last clone is dropped, after draining queued appends.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// Queue to the writer thread. `None` when read-only or shut down.
    /// Read-locked by every append (the `Sender` is `Sync`), write-locked
    /// only to take it at shutdown.
    tx: RwLock<Option<Sender<Pending>>>,
    /// Writer and indexer threads, joined at shutdown.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Set once by whichever thread sees a failure; read without locks.
    poisoned: Arc<AtomicBool>,
    /// Highest acknowledged seq (durable and indexed); only grows.
    last_seq: Arc<AtomicU64>,
    stats: Arc<StatCounters>,
    readers: Readers,
    read_only: bool,
}

struct Pending {
    draft: EventDraft,
    done: Done,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    fn stop(&self) {
        if let Ok(mut tx) = self.tx.write() {
            tx.take();
        }
        let threads = match self.threads.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(_) => Vec::new(),
        };
        for t in threads {
            if t.join().is_err() {
                tracing::error!("bug: an audit log thread panicked");
                self.poisoned.store(true, Ordering::SeqCst);
            }
        }
    }
}

fn index_paths(dir: &Path) -> Vec<PathBuf> {
    let mut v = vec![dir.join(files::INDEX)];
    v.extend(files::INDEX_COMPANIONS.iter().map(|n| dir.join(n)));
    v
}

fn remove_index(dir: &Path) -> Result<(), AuditError> {
    for p in index_paths(dir) {
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(AuditError::io(p, e)),
        }
    }
    Ok(())
}

/// Walks the segments, feeding events above the index watermark into it.
fn catch_up(
    dir: &Path,
    index: &mut IndexWriter,
    watermark: u64,
    repair: Repair,
) -> Result<segment::Walked, AuditError> {
    let mut buf: Vec<Found> = Vec::new();
    let flush = |buf: &mut Vec<Found>, index: &mut IndexWriter| -> Result<(), AuditError> {
        let rows: Vec<Row<'_>> = buf
            .iter()
            .map(|f| Row {
                event: &f.event,
                bytes: &f.bytes,
                time_ns: f.time_ns,
                segment: f.segment,
                offset: f.offset,
            })
            .collect();
        index.insert(&rows)?;
        buf.clear();
        Ok(())
    };
    let walked = segment::walk(dir, watermark, repair, |f| {
        buf.push(f);
        if buf.len() >= CATCH_UP_ROWS {
            flush(&mut buf, index)?;
        }
        Ok(())
    })?;
    flush(&mut buf, index)?;
    Ok(walked)
}

fn system_clock() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

impl AuditLog {
    /// Opens (creating if needed) the log in `dir`, takes the directory
    /// lock, recovers (truncates a torn tail of the last segment; never
    /// drops a whole record), brings the search index up to date from the
    /// segments (rebuilding it if missing or unreadable), and starts the
    /// writer and indexer threads.
    pub fn open(dir: &Path, opts: Options) -> Result<AuditLog, AuditError> {
        fs::create_dir_all(dir).map_err(|e| AuditError::io(dir, e))?;
        let lock = DirLock::try_acquire(dir, files::LOCK).map_err(|e| match e {
            LockError::Locked { path } => AuditError::Locked { path },
            LockError::Io { path, source } => AuditError::Io { path, source },
        })?;
        let index_path = dir.join(files::INDEX);

        let open_index = || -> Result<(IndexWriter, u64), rusqlite::Error> {
            let ix = IndexWriter::open(&index_path)?;
            let wm = ix.counters()?.watermark;
            Ok((ix, wm))
        };
        let (mut index, watermark) = match open_index() {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(path = %index_path.display(), error = %e, "audit index unusable; rebuilding it from the segments");
                remove_index(dir)?;
                open_index()?
            }
        };
        let mut walked = catch_up(dir, &mut index, watermark, Repair::Truncate)?;
        if watermark > walked.last_seq {
            tracing::warn!(
                watermark,
                last_seq = walked.last_seq,
                "audit index is ahead of the segments; rebuilding it"
            );
            drop(index);
            remove_index(dir)?;
            index = open_index()?.0;
            walked = catch_up(dir, &mut index, 0, Repair::Truncate)?;
        }
        let counters = index.counters()?;
        let last_seq = walked.last_seq;

        let segment = match walked.last_segment {
            Some((first_seq, path, len)) => Some(OpenSegment {
                file: segment::open_append(&path)?,
                first_seq,
                len,
                path,
            }),
            None => None,
        };

        let poisoned = Arc::new(AtomicBool::new(false));
        let last_seq_shared = Arc::new(AtomicU64::new(last_seq));
        let stats = Arc::new(StatCounters::default());
        let (tx, rx) = mpsc::channel::<Pending>();
        let (itx, irx) = mpsc::sync_channel::<Committed>(16);

        let writer = Writer {
            dir: dir.to_path_buf(),
            faults: opts.faults,
            clock: opts.clock.unwrap_or_else(|| Arc::new(system_clock)),
            max_segment_bytes: opts.max_segment_bytes.max(1),
            next_seq: last_seq + 1,
            last_time_ns: counters.last_time_ns,
            next_index: counters.next_index,
            segment,
            poisoned: poisoned.clone(),
            stats: stats.clone(),
            to_indexer: itx,
            carry: VecDeque::new(),
            _lock: lock,
        };
        let indexer = Indexer {
            index,
            poisoned: poisoned.clone(),
            last_seq: last_seq_shared.clone(),
            failed: false,
        };
        let spawn = |name: &str| std::thread::Builder::new().name(name.to_string());
        let wt = spawn("audit-writer")
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::io(dir, e))?;
        let it = spawn("audit-indexer")
            .spawn(move || indexer.run(irx))
            .map_err(|e| AuditError::io(dir, e))?;

        Ok(AuditLog {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                tx: RwLock::new(Some(tx)),
                threads: Mutex::new(vec![wt, it]),
                poisoned,
                last_seq: last_seq_shared,
                stats,
                readers: Readers::file(index_path),
                read_only: false,
            }),
        })
    }

    /// Opens for reading only (a CLI reading a data directory, possibly
    /// while a server writes it): no lock, no repair, reads up to the last
    /// valid record. Uses the index file when it covers every event found
    /// in the segments, else builds a private in-memory index from them.
    /// [`AuditLog::last_seq`] is fixed at open.
    pub fn open_read_only(dir: &Path) -> Result<AuditLog, AuditError> {
        if !dir.is_dir() {
            return Err(AuditError::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no audit log directory here"),
            ));
        }
        let index_path = dir.join(files::INDEX);
        let mut readers = None;
        let mut last_seq = 0;
        if let Some(wm) = index::read_only_watermark(&index_path) {
            let walked = segment::walk(dir, u64::MAX, Repair::ReadOnly, |_| Ok(()))?;
            last_seq = walked.last_seq;
            // A writer may be between fsync and index commit: give it a moment.
            let mut wm = wm;
            for _ in 0..5 {
                if wm >= last_seq {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
                wm = index::read_only_watermark(&index_path).unwrap_or(0);
            }
            if wm >= last_seq {
                readers = Some(Readers::file(index_path));
            }
        }
        let readers = match readers {
            Some(r) => r,
            None => {
                let mut ix = IndexWriter::in_memory()?;
                last_seq = catch_up(dir, &mut ix, 0, Repair::ReadOnly)?.last_seq;
                Readers::Memory(Mutex::new(ix.into_connection()))
            }
        };
        Ok(AuditLog {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                tx: RwLock::new(None),
                threads: Mutex::new(Vec::new()),
                poisoned: Arc::new(AtomicBool::new(false)),
                last_seq: Arc::new(AtomicU64::new(last_seq)),
                stats: Arc::new(StatCounters::default()),
                readers,
                read_only: true,
            }),
        })
    }

    /// Appends one event and blocks until it is fsynced and searchable;
    /// returns it as stamped (id, seq, log_index, time).
    pub fn append(&self, draft: EventDraft) -> Result<Event, AuditError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.append_with(
            draft,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(AuditError::Closed))
    }

    /// Like [`AuditLog::append`] without blocking: `done` is called once,
    /// from the indexer thread (or right here on an immediate error), when
    /// the event is durable and indexed or has failed. Keep `done` short:
    /// it runs on the log's own thread.
    pub fn append_with(&self, draft: EventDraft, done: Done) {
        if self.is_poisoned() {
            return done(Err(AuditError::Poisoned));
        }
        let Ok(guard) = self.inner.tx.read() else {
            return done(Err(AuditError::Closed));
        };
        match guard.as_ref() {
            None if self.inner.read_only => done(Err(AuditError::ReadOnly)),
            None => done(Err(AuditError::Closed)),
            Some(tx) => {
                if let Err(mpsc::SendError(p)) = tx.send(Pending { draft, done }) {
                    (p.done)(Err(AuditError::Closed));
                }
            }
        }
    }

    /// One page of events matching `q`.
    pub fn search(&self, q: &Query) -> Result<Page, AuditError> {
        self.inner.readers.search(q)
    }

    /// The event `id` of log `log`; `None` if absent or in another log.
    pub fn get(&self, log: &LogKey, id: &str) -> Result<Option<Event>, AuditError> {
        self.inner.readers.get(log, id)
    }

    /// Every event matching `q` (ignoring `q.limit`), fetched page by page
    /// as the iterator is consumed; never buffers the whole result.
    pub fn export(&self, q: Query) -> Export {
        Export {
            log: self.clone(),
            query: q,
            page: Vec::new().into_iter(),
            done: false,
        }
    }

    /// Highest acknowledged seq (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.inner.last_seq.load(Ordering::SeqCst)
    }

    /// Whether a write, fsync or index failure has stopped all appends.
    pub fn is_poisoned(&self) -> bool {
        self.inner.poisoned.load(Ordering::SeqCst)
    }

    /// Writer counters since open.
    pub fn stats(&self) -> Stats {
        let s = &self.inner.stats;
        Stats {
            events: s.events.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            fsyncs: s.fsyncs.load(Ordering::Relaxed),
            bytes_written: s.bytes_written.load(Ordering::Relaxed),
        }
    }

    /// The directory this log lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The SQLite plan for `q` (diagnostics, tests, the bench).
    pub fn explain(&self, q: &Query) -> Result<String, AuditError> {
        self.inner.readers.explain(q)
    }

    /// Stops the writer after draining pending appends and releases the
    /// directory lock. Later appends fail with [`AuditError::Closed`];
    /// reads keep working.
    pub fn shutdown(&self) {
        self.inner.stop();
    }
}

/// Streams the events of a query; see [`AuditLog::export`].
pub struct Export {
    log: AuditLog,
    query: Query,
    page: std::vec::IntoIter<Event>,
    done: bool,
}

impl Iterator for Export {
    type Item = Result<Event, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(e) = self.page.next() {
                return Some(Ok(e));
            }
            if self.done {
                return None;
            }
            let mut q = self.query.clone();
            q.limit = EXPORT_PAGE;
            match self.log.search(&q) {
                Ok(page) => {
                    self.done = page.next_cursor.is_none();
                    self.query.cursor = page.next_cursor;
                    self.page = page.events.into_iter();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// The segment the writer appends to.
struct OpenSegment {
    file: File,
    first_seq: u64,
    /// Bytes in the file known durable (before the batch in flight).
    len: u64,
    path: PathBuf,
}

/// An event made durable, on its way to the index.
struct Stamped {
    event: Event,
    bytes: Vec<u8>,
    time_ns: i64,
    segment: u64,
    offset: u64,
    done: Done,
}

/// A durable batch handed from the writer to the indexer.
struct Committed {
    events: Vec<Stamped>,
}

/// Bytes of one batch destined for one segment.
struct Chunk {
    first_seq: u64,
    /// A segment this batch creates (header included in `buf`).
    new: bool,
    /// File length before this batch.
    start_len: u64,
    buf: Vec<u8>,
}

/// The sequencer and segment writer; owns all write-side state, so none of
/// it needs a lock. Holds the directory lock until the thread ends.
struct Writer {
    dir: PathBuf,
    faults: Faults,
    clock: Clock,
    max_segment_bytes: u64,
    next_seq: u64,
    last_time_ns: i64,
    next_index: HashMap<LogKey, u64>,
    segment: Option<OpenSegment>,
    poisoned: Arc<AtomicBool>,
    stats: Arc<StatCounters>,
    to_indexer: SyncSender<Committed>,
    /// Appends taken from the queue that did not fit the previous batch.
    carry: VecDeque<Pending>,
    _lock: DirLock,
}

/// Poisons the log if the thread holding it unwinds (a bug).
struct PoisonOnPanic(Arc<AtomicBool>);

impl Drop for PoisonOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

impl Writer {
    fn run(mut self, rx: Receiver<Pending>) {
        let _guard = PoisonOnPanic(self.poisoned.clone());
        loop {
            let first = match self.carry.pop_front() {
                Some(p) => p,
                None => match rx.recv() {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH_EVENTS {
                match self
                    .carry
                    .pop_front()
                    .map_or_else(|| rx.try_recv().ok(), Some)
                {
                    Some(p) => batch.push(p),
                    None => break,
                }
            }
            self.commit(batch);
        }
    }

    fn commit(&mut self, batch: Vec<Pending>) {
        if self.poisoned.load(Ordering::SeqCst) {
            for p in batch {
                (p.done)(Err(AuditError::Poisoned));
            }
            return;
        }
        let mut stamped: Vec<Stamped> = Vec::with_capacity(batch.len());
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut framed = 0usize;
        let mut rest = batch.into_iter();
        for p in rest.by_ref() {
            let log = LogKey::of(p.draft.project.as_deref());
            let log_index = self.next_index.get(&log).copied().unwrap_or(0);
            let now = (self.clock)().max(self.last_time_ns);
            let seq = self.next_seq;
            let event = Event::from_draft(
                p.draft,
                uuid::Uuid::now_v7().to_string(),
                seq,
                log_index,
                format_time(time_from_ns(now)),
            );
            let bytes = event.canonical_bytes();
            if bytes.len() > MAX_EVENT_BYTES {
                (p.done)(Err(AuditError::EventTooLarge {
                    bytes: bytes.len(),
                    max: MAX_EVENT_BYTES,
                }));
                continue;
            }
            self.next_seq += 1;
            self.next_index.insert(log, log_index + 1);
            self.last_time_ns = now;

            let frame_len = (diskio::frame::HEADER_LEN + bytes.len()) as u64;
            let (seg_first, seg_len) = match (chunks.last(), &self.segment) {
                (Some(c), _) => (c.first_seq, c.start_len + c.buf.len() as u64),
                (None, Some(s)) => (s.first_seq, s.len),
                (None, None) => (0, 0),
            };
            let has_records = seg_len > segment::HEADER_LEN as u64;
            let need_new =
                seg_len == 0 || (has_records && seg_len + frame_len > self.max_segment_bytes);
            if need_new {
                chunks.push(Chunk {
                    first_seq: seq,
                    new: true,
                    start_len: 0,
                    buf: segment::encode_header(seq).to_vec(),
                });
            } else if chunks.is_empty() {
                chunks.push(Chunk {
                    first_seq: seg_first,
                    new: false,
                    start_len: seg_len,
                    buf: Vec::new(),
                });
            }
            let Some(chunk) = chunks.last_mut() else {
                unreachable!("bug: a chunk was pushed just above");
            };
            let offset = chunk.start_len + chunk.buf.len() as u64;
            if let Err(e) = diskio::encode_record(&mut chunk.buf, &bytes) {
                unreachable!("bug: a non-empty event under 60 KiB always frames: {e}");
            }
            framed += frame_len as usize;
            stamped.push(Stamped {
                event,
                bytes,
                time_ns: now,
                segment: chunk.first_seq,
                offset,
                done: p.done,
            });
            if framed >= MAX_BATCH_BYTES {
                break;
            }
        }
        self.carry.extend(rest);
        if stamped.is_empty() {
            return;
        }
        match self.write_chunks(&chunks) {
            Ok(()) => {
                self.stats
                    .events
                    .fetch_add(stamped.len() as u64, Ordering::Relaxed);
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                if let Err(mpsc::SendError(c)) = self.to_indexer.send(Committed { events: stamped })
                {
                    self.poisoned.store(true, Ordering::SeqCst);
                    for s in c.events {
                        (s.done)(Err(AuditError::Closed));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "audit log write failed; poisoning the log");
                self.poisoned.store(true, Ordering::SeqCst);
                self.roll_back(&chunks);
                for s in stamped {
                    (s.done)(Err(e.duplicate()));
                }
            }
        }
    }

    /// Writes each chunk with one write call, then fsyncs every touched file
    /// once, and the directory if a segment was created.
    fn write_chunks(&mut self, chunks: &[Chunk]) -> Result<(), AuditError> {
        let mut touched: Vec<OpenSegment> = Vec::new();
        let mut created = false;
        for c in chunks {
            let mut seg = if c.new {
                let path = self.dir.join(files::segment_name(c.first_seq));
                let file = OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| AuditError::io(&path, e))?;
                created = true;
                OpenSegment {
                    file,
                    first_seq: c.first_seq,
                    len: 0,
                    path,
                }
            } else {
                match self.segment.take() {
                    Some(s) => s,
                    None => unreachable!("bug: a chunk continues a segment that is not open"),
                }
            };
            let what = seg.path.display().to_string();
            let res = diskio::write_all(&self.faults, &mut seg.file, &c.buf, &what)
                .map_err(|e| AuditError::io(&seg.path, e));
            seg.len = c.start_len + c.buf.len() as u64;
            touched.push(seg);
            res?;
            self.stats
                .bytes_written
                .fetch_add(c.buf.len() as u64, Ordering::Relaxed);
        }
        for seg in &touched {
            let what = seg.path.display().to_string();
            diskio::sync_file(&self.faults, &seg.file, &what)
                .map_err(|e| AuditError::io(&seg.path, e))?;
            self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        if created {
            self.faults
                .check_fsync(&self.dir.display().to_string())
                .and_then(|()| diskio::fsync_dir(&self.dir))
                .map_err(|e| AuditError::io(&self.dir, e))?;
            self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        self.segment = touched.pop();
        Ok(())
    }

    /// After a failed batch: cut its bytes off again (best effort), so
    /// events the callers were told failed do not reappear after restart.
    fn roll_back(&mut self, chunks: &[Chunk]) {
        self.segment = None;
        for c in chunks {
            let path = self.dir.join(files::segment_name(c.first_seq));
            let res = if c.new {
                fs::remove_file(&path)
            } else {
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(c.start_len).and_then(|()| f.sync_all()))
            };
            if let Err(e) = res {
                tracing::error!(path = %path.display(), error = %e, "could not roll back a failed audit batch; its events may reappear after restart although their callers got an error");
            }
        }
        let _ = diskio::fsync_dir(&self.dir);
    }
}

/// Indexes durable batches, then acknowledges them.
struct Indexer {
    index: IndexWriter,
    poisoned: Arc<AtomicBool>,
    last_seq: Arc<AtomicU64>,
    /// Set after an index failure: later batches are durable but cannot be
    /// made searchable, so they fail (and are indexed at the next open).
    failed: bool,
}

impl Indexer {
    fn run(mut self, rx: Receiver<Committed>) {
        let _guard = PoisonOnPanic(self.poisoned.clone());
        while let Ok(mut batch) = rx.recv() {
            // When indexing falls behind, merge the durable batches waiting
            // behind this one: one SQLite transaction per merged batch keeps
            // the per-event cost low exactly when it matters.
            while batch.events.len() < MAX_INDEX_BATCH {
                match rx.try_recv() {
                    Ok(more) => batch.events.extend(more.events),
                    Err(_) => break,
                }
            }
            if self.failed {
                for s in batch.events {
                    (s.done)(Err(AuditError::Poisoned));
                }
                continue;
            }
            let rows: Vec<Row<'_>> = batch
                .events
                .iter()
                .map(|s| Row {
                    event: &s.event,
                    bytes: &s.bytes,
                    time_ns: s.time_ns,
                    segment: s.segment,
                    offset: s.offset,
                })
                .collect();
            match self.index.insert(&rows) {
                Ok(()) => {
                    if let Some(last) = batch.events.last() {
                        self.last_seq.store(last.event.seq, Ordering::SeqCst);
                    }
                    for s in batch.events {
                        (s.done)(Ok(s.event));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit index update failed; poisoning the log");
                    self.failed = true;
                    self.poisoned.store(true, Ordering::SeqCst);
                    let err = AuditError::Index(format!(
                        "{e} (the event is durable and will be indexed when the log is reopened)"
                    ));
                    for s in batch.events {
                        (s.done)(Err(err.duplicate()));
                    }
                }
            }
        }
    }
}
