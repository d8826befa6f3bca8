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

use std::borrow::Cow;
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
use crate::event::{Event, EventDraft, LogKey, Principal, format_time_ns};
use crate::files;
use crate::index::{self, IndexRow, IndexWriter, Readers, RowKeys, TailShared};
use crate::keys::{self, KeyRecord, Keyring};
use crate::personal::{self, Keystore};
use crate::proof::{
    ConsistencyProof, EntryRef, InclusionProof, LogFiles, ProofError, SignedCheckpoint,
};
use crate::query::{Page, Query};
use crate::receipt::Receipt;
use crate::segment::{self, MAX_EVENT_BYTES, Repair};
use crate::tlog::{self, CheckpointDone, Waiters};
use crate::witness::{self, CosignRefusal, Cosigned, Recent};

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

/// A completion callback of [`AuditLog::append_all_with`]: the event with
/// its canonical bytes ready to write.
pub type AckedDone = Box<dyn FnOnce(Result<Acked, AuditError>) + Send>;

/// An acknowledged (durable, searchable) event of
/// [`AuditLog::append_all_with`], with its canonical encoding prepared by
/// the caller's thread together with its leaf: writing it costs a copy,
/// not a second encoding.
pub struct Acked {
    pub event: Event,
    /// The event's canonical bytes minus the stamps (which `event` holds).
    canonical: Prepared,
}

impl Acked {
    /// Appends the event's canonical bytes to `out`: exactly
    /// [`Event::canonical_bytes`] of [`Acked::event`].
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        let e = &self.event;
        self.canonical
            .splice(&e.id, e.log_index, e.seq, &e.time, out);
    }
}

/// The completion callback of [`AuditLog::append_batch_with`]: every
/// event of the batch acknowledged, in the order given, or the first
/// failure.
pub type BatchDone = Box<dyn FnOnce(Result<Vec<Acked>, AuditError>) + Send>;

/// Who to tell about an append, and in which form.
enum Reply {
    Event(Done),
    /// With the event's own canonical form (prepared with the leaf).
    Acked(AckedDone, Prepared),
    /// Event `.1` of a batch with one callback for all of them.
    Part(Arc<Mutex<BatchAck>>, usize, Prepared),
}

/// The acknowledgements of an [`AuditLog::append_batch_with`] so far.
struct BatchAck {
    acked: Vec<Option<Acked>>,
    missing: usize,
    /// Taken by the last acknowledgement or the first failure.
    done: Option<BatchDone>,
}

impl BatchAck {
    fn lock(b: &Mutex<BatchAck>) -> std::sync::MutexGuard<'_, BatchAck> {
        // Every update is a few assignments: a panic cannot leave it torn.
        b.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Reply {
    fn fail(self, e: AuditError) {
        match self {
            Reply::Event(done) => done(Err(e)),
            Reply::Acked(done, _) => done(Err(e)),
            Reply::Part(batch, _, _) => {
                let done = BatchAck::lock(&batch).done.take();
                if let Some(done) = done {
                    done(Err(e));
                }
            }
        }
    }

    fn ok(self, event: Event) {
        match self {
            Reply::Event(done) => done(Ok(event)),
            Reply::Acked(done, canonical) => done(Ok(Acked { event, canonical })),
            Reply::Part(batch, i, canonical) => {
                let mut b = BatchAck::lock(&batch);
                b.acked[i] = Some(Acked { event, canonical });
                b.missing -= 1;
                if b.missing > 0 {
                    return;
                }
                let Some(done) = b.done.take() else {
                    return; // an earlier event failed and said so
                };
                let acked = b.acked.drain(..).flatten().collect();
                drop(b);
                done(Ok(acked));
            }
        }
    }
}

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
    tx: RwLock<Option<Sender<Vec<Pending>>>>,
    /// Writer and indexer threads, joined at shutdown.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Set once by whichever thread sees a failure; read without locks.
    poisoned: Arc<AtomicBool>,
    /// Highest acknowledged seq (durable and indexed); only grows.
    last_seq: Arc<AtomicU64>,
    stats: Arc<StatCounters>,
    readers: Readers,
    /// Subject keys: seal on append, reveal on read, delete on erasure.
    subjects: Arc<Keystore>,
    read_only: bool,
    /// Callbacks waiting for checkpoints; the checkpointer answers them.
    waiters: Arc<Waiters>,
    /// The signing keys (writers only; read-only opens read the files).
    /// Locked briefly by the checkpointer to sign, and by a rotation.
    keys: Option<Arc<Mutex<Keyring>>>,
    /// Checkpoints signed recently, for cosignature pushes.
    recent: Arc<Recent>,
    /// Serializes cosignature pushes (read-merge-write of `cosigned/`).
    cosign_lock: Mutex<()>,
    /// Wakes the checkpointer (an empty batch) after a key rotation.
    /// Dropped at shutdown, before the threads are joined, so that the
    /// checkpointer sees its channel close.
    to_tlog: Mutex<Option<Sender<tlog::Leaves>>>,
}

/// The most the four stamps add to a prepared event's bytes:
/// `,"id":"<36>"` (43), `,"log_index":<20 digits>` (33), `,"seq":<20>` (27),
/// `,"time":"<30>"` (39), rounded up. [`AuditLog::append_all_with`] checks
/// the size limit with it before submitting anything.
const MAX_STAMP_BYTES: usize = 150;

/// A draft ready for the writer, before its `done` is attached.
struct Prepare {
    draft: EventDraft,
    commitments: std::collections::BTreeMap<String, String>,
    envelope: Option<Vec<u8>>,
    prepared: Prepared,
    /// The event's own canonical form minus the stamps, when asked for.
    canonical: Option<Prepared>,
    keys: RowKeys,
}

struct Pending {
    /// The draft with its personal values in clear (what the caller gets
    /// back, stamped).
    draft: EventDraft,
    /// `personal` commitments of the leaf.
    commitments: std::collections::BTreeMap<String, String>,
    /// Sealed personal values, stored after the leaf.
    envelope: Option<Vec<u8>>,
    /// The draft's canonical bytes minus the stamps, made by the caller.
    prepared: Prepared,
    /// The draft's filterable fields, made by the caller.
    keys: RowKeys,
    done: Reply,
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
        if let Ok(mut t) = self.to_tlog.lock() {
            t.take();
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
        let subjects = Arc::new(Keystore::open(&dir.join(files::SUBJECTS))?);

        let now_ns = opts.clock.as_ref().map_or_else(system_clock, |c| c());
        let keys = Arc::new(Mutex::new(keys::load_or_create(
            dir,
            &opts.tlog_name,
            now_ns,
        )?));
        let recent = Arc::new(Recent::default());
        // The tlog writes get no injected faults: those target the segment writer.
        let waiters = Arc::new(Waiters::default());
        let trees = tlog::Trees::recover(
            dir,
            &opts.tlog_name,
            keys.clone(),
            recent.clone(),
            Faults::disabled(),
            waiters.clone(),
        )?;
        let (ttx, trx) = mpsc::channel::<tlog::Leaves>();
        let wake_tlog = ttx.clone();
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
        let (tx, rx) = mpsc::channel::<Vec<Pending>>();
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
            subjects: subjects.clone(),
            carry: VecDeque::new(),
            spare: Vec::new(),
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
                readers: Readers::file(index_path, dir.to_path_buf(), tail, subjects.clone()),
                subjects,
                read_only: false,
                waiters,
                keys: Some(keys),
                recent,
                cosign_lock: Mutex::new(()),
                to_tlog: Mutex::new(Some(wake_tlog)),
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
        let subjects = Arc::new(Keystore::open_read_only(&dir.join(files::SUBJECTS))?);
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
                    Readers::file(index_path, dir.to_path_buf(), tail, subjects.clone()),
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
                    Readers::memory(
                        ix.into_connection(),
                        dir.to_path_buf(),
                        tail,
                        subjects.clone(),
                    ),
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
                subjects,
                read_only: true,
                waiters: Arc::new(Waiters::default()),
                keys: None,
                recent: Arc::new(Recent::default()),
                cosign_lock: Mutex::new(()),
                to_tlog: Mutex::new(None),
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
        match self.prepare(draft, false) {
            Ok(p) => self.submit(vec![(p, Reply::Event(done))]),
            Err(e) => done(Err(e)),
        }
    }

    /// Appends several events as one unit of admission, each with its own
    /// `done` (called as by [`AuditLog::append_with`], with the event's
    /// canonical form ready to write: see [`Acked`]). Every draft is
    /// sealed, encoded and checked against [`MAX_EVENT_BYTES`] (with the
    /// largest possible stamps) *before* any is submitted: if one fails,
    /// nothing is submitted, no `done` is called, and the error comes back
    /// with the draft's position. Otherwise they are submitted back to back
    /// in order — increasing `seq` and `log_index`, usually one group commit
    /// — and each is acknowledged once durable. What stays per event: a
    /// failed fsync fails (and poisons) the batch it hits, which may be
    /// after earlier events of these were acknowledged.
    pub fn append_all_with(
        &self,
        items: Vec<(EventDraft, AckedDone)>,
    ) -> Result<(), (usize, AuditError)> {
        if self.inner.read_only {
            return Err((0, AuditError::ReadOnly));
        }
        let mut ready = Vec::with_capacity(items.len());
        for (i, (draft, done)) in items.into_iter().enumerate() {
            let (p, canonical) = self.admit(draft).map_err(|e| (i, e))?;
            ready.push((p, Reply::Acked(done, canonical)));
        }
        self.submit(ready);
        Ok(())
    }

    /// Like [`AuditLog::append_all_with`] with one callback for the whole
    /// batch: `done` gets every event, in the order given, once the last
    /// is durable and searchable — or the first failure (a failed fsync
    /// may come after some of them were made durable: they stay in the
    /// log). Admission is the same: all or nothing, checked before any is
    /// submitted; `Err((i, e))` names the draft that failed, and then
    /// `done` is never called. The events go to the writer as one unit,
    /// so they get consecutive seqs (and `log_index`es per log).
    pub fn append_batch_with(
        &self,
        drafts: Vec<EventDraft>,
        done: BatchDone,
    ) -> Result<(), (usize, AuditError)> {
        if self.inner.read_only {
            return Err((0, AuditError::ReadOnly));
        }
        let mut admitted = Vec::with_capacity(drafts.len());
        for (i, draft) in drafts.into_iter().enumerate() {
            admitted.push(self.admit(draft).map_err(|e| (i, e))?);
        }
        if admitted.is_empty() {
            done(Ok(Vec::new()));
            return Ok(());
        }
        let batch = Arc::new(Mutex::new(BatchAck {
            acked: (0..admitted.len()).map(|_| None).collect(),
            missing: admitted.len(),
            done: Some(done),
        }));
        let ready = admitted
            .into_iter()
            .enumerate()
            .map(|(i, (p, canonical))| (p, Reply::Part(batch.clone(), i, canonical)))
            .collect();
        self.submit(ready);
        Ok(())
    }

    /// Prepares a draft of a batch (with its own canonical form) and checks
    /// it against the size limits with the largest possible stamps.
    fn admit(&self, draft: EventDraft) -> Result<(Prepare, Prepared), AuditError> {
        let mut p = self.prepare(draft, true)?;
        let bound =
            p.prepared.len() + MAX_STAMP_BYTES + p.envelope.as_ref().map_or(0, |e| 1 + e.len());
        if p.prepared.len() + MAX_STAMP_BYTES > MAX_EVENT_BYTES || bound > segment::MAX_FRAME_BYTES
        {
            return Err(AuditError::EventTooLarge {
                bytes: bound,
                max: MAX_EVENT_BYTES,
            });
        }
        let canonical = p.canonical.take().unwrap_or_default();
        Ok((p, canonical))
    }

    /// Seals a draft's personal values and encodes its leaf (minus the
    /// stamps), in the caller's thread; with `canonical`, the event's own
    /// canonical form too, in the same pass.
    fn prepare(&self, draft: EventDraft, canonical: bool) -> Result<Prepare, AuditError> {
        let mut keys = RowKeys::of_draft(&draft);
        let sealed = self
            .inner
            .subjects
            .seal(&keys.log, &draft, system_clock())?;
        // The leaf's principal and resource: the draft's own unless a
        // personal value was taken out of them (no copy then).
        let name_sealed = sealed.commitments.contains_key("principal.name");
        let leaf_principal = if name_sealed || sealed.leaf_principal_id != draft.principal.id {
            Cow::Owned(Principal {
                id: sealed.leaf_principal_id.clone(),
                name: if name_sealed {
                    String::new()
                } else {
                    draft.principal.name.clone()
                },
                ..draft.principal.clone()
            })
        } else {
            Cow::Borrowed(&draft.principal)
        };
        let leaf_resource = match &draft.resource {
            Some(r) if sealed.commitments.contains_key("resource.name") => {
                Some(Cow::Owned(crate::Resource {
                    name: None,
                    ..r.clone()
                }))
            }
            other => other.as_ref().map(Cow::Borrowed),
        };
        let (prepared, canonical) = if canonical {
            let (leaf, full) = Prepared::of_draft_both(
                &draft,
                &sealed.commitments,
                &leaf_principal,
                leaf_resource.as_deref(),
            );
            (leaf, Some(full))
        } else {
            let leaf = Prepared::of_draft_leaf(
                &draft,
                &sealed.commitments,
                &leaf_principal,
                leaf_resource.as_deref(),
            );
            (leaf, None)
        };
        keys.principal_id = sealed.leaf_principal_id;
        Ok(Prepare {
            draft,
            commitments: sealed.commitments,
            envelope: sealed.envelope,
            prepared,
            canonical,
            keys,
        })
    }

    /// Hands prepared events to the writer, in order.
    fn submit(&self, items: Vec<(Prepare, Reply)>) {
        let closed = || {
            if self.is_poisoned() {
                AuditError::Poisoned
            } else {
                AuditError::Closed
            }
        };
        let Ok(guard) = self.inner.tx.read() else {
            for (_, done) in items {
                done.fail(AuditError::Closed);
            }
            return;
        };
        let Some(tx) = guard.as_ref() else {
            for (_, done) in items {
                done.fail(closed());
            }
            return;
        };
        // One message for all of them: they stay back to back, and the
        // writer is woken once.
        let pending = items
            .into_iter()
            .map(|(p, done)| Pending {
                draft: p.draft,
                commitments: p.commitments,
                envelope: p.envelope,
                prepared: p.prepared,
                keys: p.keys,
                done,
            })
            .collect();
        if let Err(mpsc::SendError(ps)) = tx.send(pending) {
            for p in ps {
                p.done.fail(closed());
            }
        }
    }

    /// Erases the personal values of a person (crypto-shredding): deletes
    /// the subject keys of `principal_id` — as `user:`, `token:` and the
    /// `name:` a failed login claimed — and of the `source_ips` of their
    /// anonymous requests, in every log except `held` ones. Their events
    /// stay, byte for byte (tiles, checkpoints and proofs keep verifying);
    /// reads show [`personal::ERASED`] in place of each value. The caller
    /// records the erasure itself in the log.
    pub fn erase(
        &self,
        principal_id: &str,
        source_ips: &[String],
        held: &[LogKey],
    ) -> Result<personal::Erasure, AuditError> {
        if self.inner.read_only {
            return Err(AuditError::ReadOnly);
        }
        let mut who = vec![
            format!("user:{principal_id}"),
            format!("token:{principal_id}"),
            format!("name:{principal_id}"),
        ];
        who.extend(source_ips.iter().map(|ip| format!("ip:{ip}")));
        let held: Vec<String> = held.iter().map(index::log_text).collect();
        self.inner.subjects.erase(&who, &held, system_clock())
    }

    /// What retention would remove from `log` for a window ending at
    /// `before_ns` (events strictly older go): whole bundles of 256
    /// entries, below the signed checkpoint and outside the segment being
    /// appended to. `None` when nothing would go. See [`crate::retention`].
    pub fn retention_plan(
        &self,
        log: &LogKey,
        before_ns: i64,
    ) -> Result<Option<crate::retention::RetentionPlan>, AuditError> {
        let dir = self.tlog_dir(log);
        let from = tlog::read_retained(&dir)?;
        let Some(last_old) = self.inner.readers.max_index_before(log, before_ns)? else {
            return Ok(None);
        };
        let mut to = (last_old + 1) / 256 * 256;
        to = to.min(crate::retention::checkpoint_size(&dir) / 256 * 256);
        // Never below a record of the segment being appended to.
        if let Some((active, _)) = segment::list(&self.inner.dir)?.last() {
            let rows = self.inner.readers.rows_below(log, to)?;
            if let Some(first) = rows.iter().find(|r| r.1 == *active) {
                to = to.min(first.4 / 256 * 256);
            }
        }
        Ok((to > from).then(|| crate::retention::RetentionPlan {
            log: log.clone(),
            from,
            to,
        }))
    }

    /// Applies a retention plan: floor on disk, then
    /// [`AuditLog::complete_retention`]. Record the audit event first.
    pub fn apply_retention(
        &self,
        plan: &crate::retention::RetentionPlan,
    ) -> Result<crate::retention::RetentionDone, AuditError> {
        if self.inner.read_only {
            return Err(AuditError::ReadOnly);
        }
        let dir = self.tlog_dir(&plan.log);
        if tlog::read_retained(&dir)? < plan.to {
            let path = dir.join(files::RETAINED);
            diskio::atomic_write(
                &path,
                format!("{}\n", plan.to).as_bytes(),
                &Faults::disabled(),
            )
            .map_err(|e| AuditError::io(&path, e))?;
        }
        self.complete_retention(&plan.log)
    }

    /// Makes the segments, the index and the entry bundles of `log` agree
    /// with the retention floor on disk (idempotent; after a crash, the
    /// next call finishes the work).
    pub fn complete_retention(
        &self,
        log: &LogKey,
    ) -> Result<crate::retention::RetentionDone, AuditError> {
        use crate::retention::{by_segment, delete_bundles, tombstone_segment};
        if self.inner.read_only {
            return Err(AuditError::ReadOnly);
        }
        let dir = self.tlog_dir(log);
        let floor = tlog::read_retained(&dir)?;
        let mut done = crate::retention::RetentionDone::default();
        if floor == 0 {
            return Ok(done);
        }
        let rows = self.inner.readers.rows_below(log, floor)?;
        let active = segment::list(&self.inner.dir)?.last().map(|(s, _)| *s);
        let project = match log {
            LogKey::Project(p) => Some(p.as_str()),
            LogKey::Organization => None,
        };
        let mut gone = Vec::new();
        for (seg, recs) in by_segment(&rows) {
            if Some(seg) == active {
                continue;
            }
            let n = tombstone_segment(&self.inner.dir, seg, project, &recs)?;
            self.inner.readers.forget_segment(seg);
            if n > 0 {
                done.segments_rewritten += 1;
                done.records_tombstoned += n;
            }
            gone.extend(recs.iter().map(|r| r.2));
        }
        if !gone.is_empty() {
            let path = self.inner.dir.join(files::INDEX);
            let db = |e: rusqlite::Error| AuditError::Index(format!("removing retained rows: {e}"));
            let mut conn = rusqlite::Connection::open(&path).map_err(db)?;
            conn.busy_timeout(Duration::from_secs(30)).map_err(db)?;
            let tx = conn.transaction().map_err(db)?;
            {
                let mut del = tx
                    .prepare("DELETE FROM events WHERE seq = ?1")
                    .map_err(db)?;
                for seq in &gone {
                    del.execute([i64::try_from(*seq).unwrap_or(i64::MAX)])
                        .map_err(db)?;
                }
            }
            tx.commit().map_err(db)?;
        }
        done.bundles_deleted = delete_bundles(&dir, 0, floor)?;
        Ok(done)
    }

    /// The retention floor of `log`: entries below it were removed.
    pub fn retained_from(&self, log: &LogKey) -> Result<u64, AuditError> {
        tlog::read_retained(&self.tlog_dir(log))
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

    /// A file of `log`'s public read layout at `path` relative to the log's
    /// base: `checkpoint` (with its witness cosignatures),
    /// `witnessed/<witness key id>`, `tile/<L>/<N>[.p/<W>]` or
    /// `tile/entries/<N>[.p/<W>]`; see [`tlog::read_log_file`]. `Ok(None)`
    /// when absent or when `path` is none of these (so nothing outside the
    /// log's files can be named).
    pub fn tlog_file(&self, log: &LogKey, path: &str) -> Result<Option<Vec<u8>>, AuditError> {
        tlog::read_log_file(&self.tlog_dir(log), path)
    }

    /// The current checkpoint verifier key (`<name>+<hex key id>+<base64
    /// key>`); empty for a read-only open of a directory without a key.
    pub fn verifier_key(&self) -> String {
        match &self.inner.keys {
            Some(k) => k
                .lock()
                .map(|k| k.current.verifier().to_string())
                .unwrap_or_default(),
            // A missing or unreadable key must not stop reading events.
            None => tlog::read_verifier_key(&self.inner.dir)
                .ok()
                .flatten()
                .unwrap_or_default(),
        }
    }

    /// Every public signing key this log ever used, oldest first, with
    /// when each was the signer (see [`crate::keys`]).
    pub fn signing_keys(&self) -> Result<Vec<KeyRecord>, AuditError> {
        match &self.inner.keys {
            Some(k) => k
                .lock()
                .map(|k| k.history.clone())
                .map_err(|_| AuditError::Poisoned),
            None => keys::read_public(&self.inner.dir),
        }
    }

    /// Replaces the signing key by a new one (same name) while the log
    /// runs; the old public key stays listed. Every log's checkpoint is
    /// re-signed with the new key within the checkpoint interval. Crash
    /// safety: see [`crate::keys`]. Returns the new key's record.
    pub fn rotate_key(&self, now_ns: i64) -> Result<KeyRecord, AuditError> {
        let Some(keys_lock) = &self.inner.keys else {
            return Err(AuditError::ReadOnly);
        };
        let mut ring = keys_lock.lock().map_err(|_| AuditError::Poisoned)?;
        let next = keys::rotate(&self.inner.dir, &ring, now_ns)?;
        *ring = next;
        let record =
            ring.history.last().cloned().ok_or_else(|| {
                AuditError::corrupt(&self.inner.dir, 0, "bug: no key after rotation")
            })?;
        drop(ring);
        if let Ok(t) = self.inner.to_tlog.lock()
            && let Some(t) = t.as_ref()
        {
            let _ = t.send(tlog::Leaves {
                leaves: Vec::new(),
                durable_at: Instant::now(),
            });
        }
        Ok(record)
    }

    /// Accepts the witness cosignatures of a pushed note for `log` (see
    /// [`crate::witness`]): its text must be a checkpoint this log signed
    /// (the current one or a recent one), and it must carry a valid
    /// cosignature by one of `witnesses`. `now_s` is the server's clock.
    pub fn add_cosignatures(
        &self,
        log: &LogKey,
        pushed: &[u8],
        witnesses: &[merkle::CosignatureVerifier],
        now_s: u64,
    ) -> Result<Cosigned, CosignRefusal> {
        let pushed =
            merkle::Note::parse(pushed).map_err(|e| CosignRefusal::Malformed(e.to_string()))?;
        let size = merkle::Checkpoint::parse(pushed.text())
            .map_err(|e| CosignRefusal::Malformed(e.to_string()))?
            .size();
        let dir = self.tlog_dir(log);
        let _guard = self
            .inner
            .cosign_lock
            .lock()
            .map_err(|_| AuditError::Poisoned)?;
        let current = self
            .checkpoint(log)
            .filter(|c| merkle::Note::parse(c).is_ok_and(|n| n.text() == pushed.text()));
        let ours = current
            .or_else(|| {
                self.inner
                    .recent
                    .find(&files::tlog_log_dir(log), pushed.text())
            })
            .ok_or(CosignRefusal::UnknownCheckpoint {
                size: size.to_string(),
            })?;
        witness::add(&dir, &ours, &pushed, witnesses, now_s)
    }

    /// Calls `done` once with the first signed checkpoint of `log` whose
    /// size is at least `size` (so that covers `log_index < size`): at once
    /// if the latest one does, else from the checkpointer thread right after
    /// it writes one (at most [`Options::checkpoint_interval`] after the
    /// append, plus write time). Fails with [`AuditError::LogFrozen`] for a
    /// log that gets no new checkpoints, [`AuditError::Closed`] once the log
    /// shuts down, [`AuditError::ReadOnly`] on a read-only open. Keep `done`
    /// short: it may run on the checkpointer thread. Nothing blocks per
    /// waiter, so any number may wait.
    pub fn when_checkpointed(&self, log: &LogKey, size: u64, done: CheckpointDone) {
        if self.inner.read_only {
            return done(Err(AuditError::ReadOnly));
        }
        self.inner
            .waiters
            .register(index::log_text(log), size, done);
    }

    /// The tlog-tiles files of `log`, to make proofs and receipts from.
    pub fn log_files(&self, log: &LogKey) -> LogFiles {
        LogFiles::new(self.tlog_dir(log), files::tlog_log_dir(log))
    }

    /// The entry's `log_index` (an id is looked up in `log` only) and, for
    /// an id, the id.
    fn resolve(&self, log: &LogKey, entry: &EntryRef) -> Result<(u64, Option<String>), ProofError> {
        match entry {
            EntryRef::Index(i) => Ok((*i, None)),
            EntryRef::Id(id) => match self.get(log, id)? {
                Some(e) => Ok((e.log_index, Some(id.clone()))),
                None => Err(ProofError::NoSuchEvent { id: id.clone() }),
            },
        }
    }

    /// The inclusion proof of an entry of `log` in the tree of `tree_size`
    /// (default: the latest signed checkpoint's size), from the tiles on
    /// disk (see [`crate::proof`]).
    pub fn inclusion_proof(
        &self,
        log: &LogKey,
        entry: &EntryRef,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof, ProofError> {
        let (index, id) = self.resolve(log, entry)?;
        self.log_files(log)
            .inclusion(index, id.as_deref(), tree_size)
    }

    /// The consistency proof of `log` from size `from` to `to` (default:
    /// the latest signed checkpoint's size).
    pub fn consistency_proof(
        &self,
        log: &LogKey,
        from: u64,
        to: Option<u64>,
    ) -> Result<ConsistencyProof, ProofError> {
        self.log_files(log).consistency(from, to)
    }

    /// A receipt for an entry of `log` against the latest signed checkpoint.
    pub fn receipt(&self, log: &LogKey, entry: &EntryRef) -> Result<Receipt, ProofError> {
        let (index, id) = self.resolve(log, entry)?;
        self.log_files(log).receipt(index, id.as_deref())
    }

    /// A receipt for entry `index` of `log` against `checkpoint` (e.g. the
    /// one [`AuditLog::when_checkpointed`] handed out).
    pub fn receipt_at(
        &self,
        log: &LogKey,
        index: u64,
        checkpoint: &SignedCheckpoint,
    ) -> Result<Receipt, ProofError> {
        self.log_files(log).receipt_at(index, checkpoint)
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
    acks: Vec<(Event, Reply)>,
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
    /// Subject keys: new ones are made durable before each batch is written.
    subjects: Arc<Keystore>,
    /// Appends received but not committed yet, oldest first (what did not
    /// fit the previous batch, the rest of a message larger than a batch).
    carry: VecDeque<Pending>,
    /// The previous batch's frame buffer, emptied, for the next one: a
    /// fresh 256 KiB buffer per batch cost page faults on fresh memory (a
    /// huge page zeroed per batch: ~7 % of the server's CPU at 20k
    /// events/s).
    spare: Vec<u8>,
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
    fn run(mut self, rx: Receiver<Vec<Pending>>) {
        let _guard = PoisonOnPanic(self.poisoned.clone());
        loop {
            if self.carry.is_empty() {
                match rx.recv() {
                    Ok(ps) => self.carry.extend(ps),
                    Err(_) => break,
                }
            }
            let mut batch = Vec::with_capacity(self.carry.len().min(MAX_BATCH_EVENTS));
            loop {
                let take = self.carry.len().min(MAX_BATCH_EVENTS - batch.len());
                batch.extend(self.carry.drain(..take));
                if batch.len() >= MAX_BATCH_EVENTS {
                    break;
                }
                match rx.try_recv() {
                    Ok(ps) => self.carry.extend(ps),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    fn commit(&mut self, batch: Vec<Pending>) {
        if self.poisoned.load(Ordering::SeqCst) {
            for p in batch {
                p.done.fail(AuditError::Poisoned);
            }
            return;
        }
        let mut acks: Vec<(Event, Reply)> = Vec::with_capacity(batch.len());
        let mut rows: Vec<IndexRow> = Vec::with_capacity(batch.len());
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut framed = 0usize;
        let mut rest = batch.into_iter();
        let mut id_buf = uuid::Uuid::encode_buffer();
        for p in rest.by_ref() {
            let log_index = self.next_index.get(&p.keys.log).copied().unwrap_or(0);
            let now = (self.clock)().max(self.last_time_ns);
            let seq = self.next_seq;
            // Random bits from the thread-local CSPRNG: no syscall on the
            // writer thread per event.
            let id = crate::rng::uuid_v7(now)
                .hyphenated()
                .encode_lower(&mut id_buf)
                .to_string();
            let time = format_time_ns(now);
            let mut bytes = Vec::with_capacity(p.prepared.len() + 128);
            p.prepared.splice(&id, log_index, seq, &time, &mut bytes);
            let leaf_len = bytes.len();
            if let Some(env) = &p.envelope {
                bytes.push(personal::SEPARATOR);
                bytes.extend_from_slice(env);
            }
            if leaf_len > MAX_EVENT_BYTES || bytes.len() > segment::MAX_FRAME_BYTES {
                p.done.fail(AuditError::EventTooLarge {
                    bytes: leaf_len.max(bytes.len()),
                    max: MAX_EVENT_BYTES,
                });
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
                let mut buf = std::mem::take(&mut self.spare);
                buf.clear();
                buf.reserve(MAX_BATCH_BYTES.min(256 << 10));
                chunks.push(Chunk {
                    first_seq: seg_first,
                    new: false,
                    start_len: seg_len,
                    buf,
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
            let mut event = Event::from_draft(p.draft, id.clone(), seq, log_index, time);
            event.personal = p.commitments;
            rows.push(IndexRow {
                keys: p.keys,
                seq,
                log_index,
                id,
                time_ns: now,
                segment: chunk.first_seq,
                offset,
                bytes,
                expired: false,
            });
            acks.push((event, p.done));
            if framed >= MAX_BATCH_BYTES {
                break;
            }
        }
        // What did not fit goes first next time (older than what waits).
        for p in rest.rev() {
            self.carry.push_front(p);
        }
        if acks.is_empty() {
            return;
        }
        // Subject keys created for these envelopes go to disk first, all in
        // one SQLite commit: no envelope is written, let alone acknowledged,
        // before the key that opens it is durable.
        if let Err(e) = self.subjects.flush_new_keys() {
            tracing::error!(error = %e, "storing new subject keys failed; poisoning the log");
            self.poisoned.store(true, Ordering::SeqCst);
            for (_, done) in acks {
                done.fail(e.duplicate());
            }
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
                        done.fail(AuditError::Closed);
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "audit log write failed; poisoning the log");
                self.poisoned.store(true, Ordering::SeqCst);
                self.roll_back(&chunks);
                for (_, done) in acks {
                    done.fail(e.duplicate());
                }
            }
        }
        if let Some(c) = chunks.pop() {
            self.spare = c.buf;
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
                    bytes: personal::split_payload(&r.bytes).0.to_vec(),
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
                done.ok(event);
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
