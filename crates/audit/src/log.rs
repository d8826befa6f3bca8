//! [`AuditLog`]: open/recover, the group-commit writer, the indexer, reads.
//!
//! # Crash contract
//!
//! An event is acknowledged (its `append` returns `Ok`, its `append_with`
//! callback gets `Ok`) only after the segment bytes holding it were
//! fsynced (and, for a new segment, the directory too) and it is visible
//! to `search` and `get` (in the index's in-memory tail, later in SQLite).
//! After a crash at any point, reopening yields every
//! acknowledged event, with the same seq, and possibly some events that
//! were written but never acknowledged (the caller got an error or never
//! heard back). A torn tail of the last segment is truncated on open.
//! If a write or fsync fails, the log is *poisoned*: that batch fails,
//! every later append fails with [`AuditError::Poisoned`], and the batch's
//! bytes are truncated away (best effort) so that they do not reappear.
//! If moving the tail into SQLite fails, the log is poisoned too; the
//! events concerned stay searchable in memory and are indexed from the
//! segments when the log is reopened.
//!
//! # Threads
//!
//! ```text
//! callers ──mpsc──▶ writer thread ──sync_channel(16)──▶ indexer thread ──▶ callbacks
//!  canonicalize    stamp, splice, frame,      push the batch onto the
//!  (own thread)    write, ONE fsync/batch     in-memory tail (searchable)
//!                                                     │
//!                                                     ▼
//!                                             flusher thread: tail → SQLite,
//!                                             one transaction per ≥16k rows
//!                                             (or every 0.5 s)
//! ```
//!
//! Callers serialize their draft canonically (all but the four stamped
//! fields) in their own thread, so the writer only splices. Writer and
//! indexer are two stages so that fsyncing batch N+1 overlaps acknowledging
//! batch N (the machine has two cores). An event is searchable once it is
//! in the tail ([`crate::index`] merges tail and SQLite), so SQLite commits
//! are off the acknowledgement path and large. All are plain threads: the
//! crate must not depend on tokio; the server bridges with a oneshot in
//! `append_with`.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use diskio::{DirLock, Faults, LockError};

use crate::canonical::Prepared;
use crate::error::AuditError;
use crate::event::{Event, EventDraft, LogKey, format_time_ns};
use crate::files;
use crate::index::{self, IndexRow, IndexWriter, Readers, RowKeys, TailShared};
use crate::query::{Page, Query};
use crate::segment::{self, MAX_EVENT_BYTES, Repair};
use crate::tlog;

/// Largest number of events committed by one fsync.
const MAX_BATCH_EVENTS: usize = 4096;
/// Largest number of framed bytes committed by one fsync.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// The flusher moves the tail into SQLite once it holds this many rows...
const FLUSH_ROWS: usize = 16384;
/// ... or once its oldest row has waited this long.
const FLUSH_AFTER: Duration = Duration::from_millis(500);
/// Largest number of rows moved in one SQLite transaction.
const MAX_FLUSH_ROWS: usize = 32768;
/// Acknowledgements wait while the tail holds this many rows (SQLite has
/// fallen behind): bounds memory (~1 KiB a row) and absorbs bursts.
const MAX_TAIL_ROWS: usize = 131_072;
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
    /// Longest time between an append and the signed checkpoint covering
    /// it (plus the time to write the tiles).
    pub checkpoint_interval: Duration,
    /// Name of the checkpoint signing key when it is created, and prefix of
    /// every log's origin line (`<name>/org`, `<name>/p/<slug>`); see
    /// [`crate::tlog`]. Must not contain `+` or whitespace.
    pub tlog_name: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_segment_bytes: 64 << 20,
            faults: Faults::disabled(),
            clock: None,
            checkpoint_interval: Duration::from_millis(500),
            tlog_name: "flightdeck".to_string(),
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("max_segment_bytes", &self.max_segment_bytes)
            .field("faults", &self.faults)
            .field("clock", &self.clock.as_ref().map(|_| "custom"))
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("tlog_name", &self.tlog_name)
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
    /// Verifier key string of the checkpoint signer (empty when a
    /// read-only open found no key). Immutable.
    verifier: String,
}

struct Pending {
    draft: EventDraft,
    /// The draft's canonical bytes minus the stamps, made by the caller.
    prepared: Prepared,
    /// The draft's filterable fields, made by the caller.
    keys: RowKeys,
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
    let mut buf: Vec<IndexRow> = Vec::new();
    let flush = |buf: &mut Vec<IndexRow>, index: &mut IndexWriter| -> Result<(), AuditError> {
        index.insert(buf.iter())?;
        buf.clear();
        Ok(())
    };
    let walked = segment::walk(dir, watermark, repair, |f| {
        buf.push(IndexRow::of_found(f));
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

        let signer = tlog::load_or_create_key(dir, &opts.tlog_name)?;
        let verifier = signer.verifier().to_string();
        // The tlog writes get no injected faults: those target the segment writer.
        let trees = tlog::Trees::recover(dir, &opts.tlog_name, signer, Faults::disabled())?;
        let (ttx, trx) = mpsc::channel::<tlog::Leaves>();
        let checkpoint_interval = opts.checkpoint_interval;

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
        let tail = TailShared::new(last_seq + 1);
        let next_index = counters
            .next_index
            .iter()
            .map(|(k, v)| (index::log_text(k), *v))
            .collect();

        let writer = Writer {
            dir: dir.to_path_buf(),
            faults: opts.faults,
            clock: opts.clock.unwrap_or_else(|| Arc::new(system_clock)),
            max_segment_bytes: opts.max_segment_bytes.max(1),
            next_seq: last_seq + 1,
            last_time_ns: counters.last_time_ns,
            next_index,
            segment,
            poisoned: poisoned.clone(),
            stats: stats.clone(),
            to_indexer: itx,
            carry: VecDeque::new(),
            _lock: lock,
        };
        let indexer = Indexer {
            tail: tail.clone(),
            poisoned: poisoned.clone(),
            last_seq: last_seq_shared.clone(),
            to_tlog: ttx,
        };
        let flusher = Flusher {
            index,
            tail: tail.clone(),
            poisoned: poisoned.clone(),
        };
        let spawn = |name: &str| std::thread::Builder::new().name(name.to_string());
        let wt = spawn("audit-writer")
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::io(dir, e))?;
        let it = spawn("audit-indexer")
            .spawn(move || indexer.run(irx))
            .map_err(|e| AuditError::io(dir, e))?;
        let ft = spawn("audit-flusher")
            .spawn(move || flusher.run())
            .map_err(|e| AuditError::io(dir, e))?;
        let ct = spawn("audit-checkpointer")
            .spawn(move || trees.run(trx, checkpoint_interval))
            .map_err(|e| AuditError::io(dir, e))?;

        Ok(AuditLog {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                tx: RwLock::new(Some(tx)),
                threads: Mutex::new(vec![wt, it, ft, ct]),
                poisoned,
                last_seq: last_seq_shared,
                stats,
                readers: Readers::file(index_path, dir.to_path_buf(), tail),
                read_only: false,
                verifier,
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
        let mut found = None;
        if let Some(wm) = index::read_only_watermark(&index_path) {
            // The index file covers seqs up to its watermark (a live writer
            // may move it on: queries of the file stop below `wm + 1`);
            // the events after it are read from the segments into a tail.
            let mut rows = Vec::new();
            let walked = segment::walk(dir, wm, Repair::ReadOnly, |f| {
                rows.push(IndexRow::of_found(f));
                Ok(())
            })?;
            if wm <= walked.last_seq {
                let tail = TailShared::new(wm + 1);
                tail.push(rows, usize::MAX);
                found = Some((
                    Readers::file(index_path, dir.to_path_buf(), tail),
                    walked.last_seq,
                ));
            }
        }
        let (readers, last_seq) = match found {
            Some(v) => v,
            None => {
                let mut ix = IndexWriter::in_memory()?;
                let last_seq = catch_up(dir, &mut ix, 0, Repair::ReadOnly)?.last_seq;
                let tail = TailShared::new(last_seq + 1);
                (
                    Readers::memory(ix.into_connection(), dir.to_path_buf(), tail),
                    last_seq,
                )
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
                // A missing or unreadable key must not stop reading events.
                verifier: tlog::read_verifier_key(dir)
                    .ok()
                    .flatten()
                    .unwrap_or_default(),
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
    /// the event is durable and searchable or has failed. Keep `done`
    /// short: it runs on the log's own thread. The draft is serialized
    /// (canonically, minus the stamps) here, in the caller's thread.
    ///
    /// A poisoned log answers [`AuditError::Poisoned`] from the writer
    /// thread, so callbacks see the failure of the batch that poisoned it
    /// before any `Poisoned`.
    pub fn append_with(&self, draft: EventDraft, done: Done) {
        if self.inner.read_only {
            return done(Err(AuditError::ReadOnly));
        }
        let prepared = Prepared::of_draft(&draft);
        let keys = RowKeys::of_draft(&draft);
        let Ok(guard) = self.inner.tx.read() else {
            return done(Err(AuditError::Closed));
        };
        let closed = || {
            if self.is_poisoned() {
                AuditError::Poisoned
            } else {
                AuditError::Closed
            }
        };
        match guard.as_ref() {
            None => done(Err(closed())),
            Some(tx) => {
                let pending = Pending {
                    draft,
                    prepared,
                    keys,
                    done,
                };
                if let Err(mpsc::SendError(p)) = tx.send(pending) {
                    (p.done)(Err(closed()));
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

    /// The latest signed checkpoint of `log` (C2SP signed-note bytes), or
    /// `None` while the log has no checkpoint yet.
    pub fn checkpoint(&self, log: &LogKey) -> Option<Vec<u8>> {
        let path = self.tlog_dir(log).join(files::CHECKPOINT);
        match fs::read(&path) {
            Ok(b) => Some(b),
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read audit checkpoint");
                }
                None
            }
        }
    }

    /// A tlog-tiles file of `log` at `path` relative to the log's base
    /// (`tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`). `Ok(None)`
    /// when absent or when `path` is not a canonical tile path (so nothing
    /// outside the log's tiles can be named).
    pub fn tlog_file(&self, log: &LogKey, path: &str) -> Result<Option<Vec<u8>>, AuditError> {
        let rel = match merkle::tiles::parse_tile_path(path) {
            Ok(merkle::TilePath::Hash(t)) => t.path(),
            Ok(merkle::TilePath::Entries(b)) => b.path(),
            Err(_) => return Ok(None),
        };
        let full = self.tlog_dir(log).join(rel);
        match fs::read(&full) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AuditError::io(full, e)),
        }
    }

    /// The checkpoint verifier key (`<name>+<hex key id>+<base64 key>`);
    /// empty for a read-only open of a directory without a signing key.
    pub fn verifier_key(&self) -> String {
        self.inner.verifier.clone()
    }

    fn tlog_dir(&self, log: &LogKey) -> PathBuf {
        self.inner
            .dir
            .join(files::TLOG_DIR)
            .join(files::tlog_log_dir(log))
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

/// A durable batch handed from the writer to the indexer: the stamped
/// events with their callbacks, and their index rows (same order).
struct Committed {
    acks: Vec<(Event, Done)>,
    rows: Vec<IndexRow>,
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
    /// Next `log_index` per log, keyed by [`index::log_text`].
    next_index: HashMap<String, u64>,
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
        let mut acks: Vec<(Event, Done)> = Vec::with_capacity(batch.len());
        let mut rows: Vec<IndexRow> = Vec::with_capacity(batch.len());
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut framed = 0usize;
        let mut rest = batch.into_iter();
        let mut id_buf = uuid::Uuid::encode_buffer();
        for p in rest.by_ref() {
            let log_index = self.next_index.get(&p.keys.log).copied().unwrap_or(0);
            let now = (self.clock)().max(self.last_time_ns);
            let seq = self.next_seq;
            let id = uuid::Uuid::now_v7()
                .hyphenated()
                .encode_lower(&mut id_buf)
                .to_string();
            let time = format_time_ns(now);
            let mut bytes = Vec::with_capacity(p.prepared.len() + 128);
            p.prepared.splice(&id, log_index, seq, &time, &mut bytes);
            if bytes.len() > MAX_EVENT_BYTES {
                (p.done)(Err(AuditError::EventTooLarge {
                    bytes: bytes.len(),
                    max: MAX_EVENT_BYTES,
                }));
                continue;
            }
            self.next_seq += 1;
            match self.next_index.get_mut(&p.keys.log) {
                Some(n) => *n = log_index + 1,
                None => {
                    self.next_index.insert(p.keys.log.clone(), log_index + 1);
                }
            }
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
                    buf: Vec::with_capacity(MAX_BATCH_BYTES.min(256 << 10)),
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
            let event = Event::from_draft(p.draft, id.clone(), seq, log_index, time);
            rows.push(IndexRow {
                keys: p.keys,
                seq,
                log_index,
                id,
                time_ns: now,
                segment: chunk.first_seq,
                offset,
                bytes,
            });
            acks.push((event, p.done));
            if framed >= MAX_BATCH_BYTES {
                break;
            }
        }
        self.carry.extend(rest);
        if acks.is_empty() {
            return;
        }
        match self.write_chunks(&chunks) {
            Ok(()) => {
                self.stats
                    .events
                    .fetch_add(acks.len() as u64, Ordering::Relaxed);
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                if let Err(mpsc::SendError(c)) = self.to_indexer.send(Committed { acks, rows }) {
                    self.poisoned.store(true, Ordering::SeqCst);
                    for (_, done) in c.acks {
                        done(Err(AuditError::Closed));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "audit log write failed; poisoning the log");
                self.poisoned.store(true, Ordering::SeqCst);
                self.roll_back(&chunks);
                for (_, done) in acks {
                    done(Err(e.duplicate()));
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

/// Makes durable batches searchable (the tail), then acknowledges them.
struct Indexer {
    tail: Arc<TailShared>,
    poisoned: Arc<AtomicBool>,
    last_seq: Arc<AtomicU64>,
    /// Durable events for the checkpointer (dropped when the indexer ends,
    /// which makes it flush and stop).
    to_tlog: Sender<tlog::Leaves>,
}

/// Closes the tail when the indexer ends, however it ends, so that the
/// flusher drains it and stops.
struct CloseOnDrop(Arc<TailShared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Indexer {
    fn run(self, rx: Receiver<Committed>) {
        let _guard = PoisonOnPanic(self.poisoned.clone());
        let _close = CloseOnDrop(self.tail.clone());
        while let Ok(batch) = rx.recv() {
            let Some(last) = batch.rows.last().map(|r| r.seq) else {
                continue;
            };
            let leaves = batch
                .rows
                .iter()
                .map(|r| tlog::Leaf {
                    log: r.keys.log.clone(),
                    index: r.log_index,
                    bytes: r.bytes.clone(),
                })
                .collect();
            // A gone checkpointer (it only ends after us, or on a bug that
            // it logged) must not stop acknowledgements.
            let _ = self.to_tlog.send(tlog::Leaves {
                durable_at: Instant::now(),
                leaves,
            });
            self.tail.push(batch.rows, MAX_TAIL_ROWS);
            self.last_seq.store(last, Ordering::SeqCst);
            for (event, done) in batch.acks {
                done(Ok(event));
            }
        }
    }
}

/// Moves the tail into SQLite in large transactions.
struct Flusher {
    index: IndexWriter,
    tail: Arc<TailShared>,
    poisoned: Arc<AtomicBool>,
}

/// Marks the tail failed if the flusher unwinds (a bug), so that an
/// acknowledgement waiting for room in the tail does not wait forever.
struct FailTailOnPanic(Arc<TailShared>);

impl Drop for FailTailOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.lock().failed = true;
            self.0.cond.notify_all();
        }
    }
}

impl Flusher {
    fn run(mut self) {
        let _guard = PoisonOnPanic(self.poisoned.clone());
        let _fail = FailTailOnPanic(self.tail.clone());
        loop {
            let batch: Vec<Arc<Vec<IndexRow>>> = {
                let mut t = self.tail.lock();
                loop {
                    let due = t.closed
                        || t.rows >= FLUSH_ROWS
                        || t.since.is_some_and(|s| s.elapsed() >= FLUSH_AFTER);
                    if due && t.rows > 0 {
                        break;
                    }
                    if t.closed {
                        return;
                    }
                    let wait = t
                        .since
                        .map_or(FLUSH_AFTER, |s| FLUSH_AFTER.saturating_sub(s.elapsed()));
                    t = match self.tail.cond.wait_timeout(t, wait) {
                        Ok((t, _)) => t,
                        Err(e) => e.into_inner().0,
                    };
                }
                let mut n = 0;
                t.chunks
                    .iter()
                    .take_while(|c| {
                        let take = n < MAX_FLUSH_ROWS;
                        n += c.len();
                        take
                    })
                    .cloned()
                    .collect()
            };
            let rows: usize = batch.iter().map(|c| c.len()).sum();
            let next_lo = batch.last().and_then(|c| c.last()).map_or(0, |r| r.seq + 1);
            match self.index.insert(batch.iter().flat_map(|c| c.iter())) {
                Ok(()) => {
                    let mut t = self.tail.lock();
                    t.chunks.drain(..batch.len());
                    t.rows -= rows;
                    t.lo = next_lo;
                    t.since = (!t.chunks.is_empty()).then(Instant::now);
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit index update failed; poisoning the log (the events stay searchable in memory and are indexed when the log is reopened)");
                    self.poisoned.store(true, Ordering::SeqCst);
                    self.tail.lock().failed = true;
                    self.tail.cond.notify_all();
                    return;
                }
            }
            self.tail.cond.notify_all();
        }
    }
}
