//! The store: projects, the append path, flushes into segments, open and
//! replay, retention and live-tail subscriptions.
//!
//! # Locks
//!
//! - `gate` (`RwLock<()>`): an append holds it shared from WAL submission
//!   to head insertion; a flush holds it exclusively while it rotates the
//!   WAL and freezes the heads, so every record before the rotation is in
//!   the frozen heads and none after it. Held for a few milliseconds.
//! - `Project::state` (`RwLock`): stream table, postings, segments, frozen
//!   heads. Appends take it shared (exclusive only to add a stream).
//! - `Stream::head` (`Mutex`): one stream's head; block compression runs
//!   under it, so appenders to different streams compress in parallel.
//! - `flush_lock` (`Mutex`): one flush or retention pass at a time.
//!
//! std locks, not async ones: nothing here awaits, and the server calls
//! the store from blocking threads.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use diskio::DirLock;
use model::Labels;

use crate::error::IoContext;
use crate::head::HeadData;
use crate::segment::{self, Segment};
use crate::wal::{self, Wal};
use crate::{Entry, Error, Options, StreamBatch, files, is_valid_project};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}
pub(crate) fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

/// One stream of a project.
pub(crate) struct Stream {
    pub labels: Labels,
    /// The live head; see the module doc for the lock order.
    pub head: Mutex<HeadData>,
}

/// A segment as a project sees it.
pub(crate) struct SegView {
    pub seg: Arc<Segment>,
    /// Stream id (index in `ProjState::streams`) → index of that stream
    /// in `seg.streams`.
    pub pos: HashMap<u32, u32>,
}

/// Heads frozen by a running flush: `(stream id, data)`.
pub(crate) type Frozen = Vec<(u32, Arc<HeadData>)>;

pub(crate) struct ProjState {
    pub streams: Vec<Arc<Stream>>,
    pub by_labels: HashMap<Labels, u32>,
    /// Label name → value → stream ids (ascending): the label index.
    pub postings: BTreeMap<String, BTreeMap<String, Vec<u32>>>,
    /// Ordered by sequence number (oldest first).
    pub segments: Vec<SegView>,
    pub frozen: Option<Arc<Frozen>>,
    next_seq: u64,
    /// Largest WAL cut of the project's segments (replay skips below it).
    max_cut: u64,
}

pub(crate) struct Project {
    pub dir: PathBuf,
    pub state: RwLock<ProjState>,
}

impl ProjState {
    fn new() -> Self {
        ProjState {
            streams: Vec::new(),
            by_labels: HashMap::new(),
            postings: BTreeMap::new(),
            segments: Vec::new(),
            frozen: None,
            next_seq: 1,
            max_cut: 0,
        }
    }

    /// The stream id of `labels`, adding the stream if new.
    fn intern(&mut self, labels: &Labels) -> u32 {
        if let Some(&sid) = self.by_labels.get(labels) {
            return sid;
        }
        let sid = self.streams.len() as u32;
        self.streams.push(Arc::new(Stream {
            labels: labels.clone(),
            head: Mutex::new(HeadData::default()),
        }));
        self.by_labels.insert(labels.clone(), sid);
        for l in labels.iter() {
            self.postings
                .entry(l.name.clone())
                .or_default()
                .entry(l.value.clone())
                .or_default()
                .push(sid);
        }
        sid
    }

    fn add_segment(&mut self, seg: Segment) {
        let pos = seg
            .streams
            .iter()
            .enumerate()
            .map(|(i, s)| (self.intern(&s.labels), i as u32))
            .collect();
        self.next_seq = self.next_seq.max(seg.seq + 1);
        self.max_cut = self.max_cut.max(seg.wal_cut);
        self.segments.push(SegView {
            seg: Arc::new(seg),
            pos,
        });
    }
}

/// What an append stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendReport {
    pub entries: u64,
    pub bytes: u64,
}

/// A batch as live-tail subscribers get it (after it is durable).
pub type TailBatch = Arc<Vec<StreamBatch>>;

/// A project's retention policy; `None` keeps everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct Retention {
    /// Segments whose newest entry is older than `now - max_age_ns` go.
    pub max_age_ns: Option<i64>,
    /// Oldest segments go until the project's segments fit in this.
    pub max_bytes: Option<u64>,
}

/// What retention deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments: usize,
    pub bytes: u64,
}

/// The log store. Cheap to share (`Arc<Store>`); every method takes `&self`.
pub struct Store {
    dir: PathBuf,
    pub(crate) opts: Options,
    wal: Wal,
    gate: RwLock<()>,
    flush_lock: Mutex<()>,
    pub(crate) projects: RwLock<HashMap<String, Arc<Project>>>,
    /// Line bytes in live heads, all projects (drives automatic flushes).
    head_bytes: AtomicU64,
    /// When the oldest unflushed append happened: nanoseconds since
    /// `started` plus one, 0 when the heads are empty.
    head_since: AtomicU64,
    started: std::time::Instant,
    subscribers: Mutex<HashMap<String, Vec<SyncSender<TailBatch>>>>,
    /// Set when a flush failed after freezing heads: their entries are only
    /// in the WAL, which must then not be truncated, so the store refuses
    /// every write until restarted (replay recovers them).
    poisoned: Mutex<Option<String>>,
    _lock: DirLock,
}

impl Store {
    /// Opens (or creates) the store in `dir`: loads every segment's index,
    /// replays the WAL and flushes what it replayed into segments.
    pub fn open(dir: &Path, opts: Options) -> Result<Store, Error> {
        fs::create_dir_all(dir).at(dir)?;
        let dir_lock = DirLock::try_acquire(dir, files::LOCK)?;
        let pdir = dir.join(files::PROJECTS_DIR);
        fs::create_dir_all(&pdir).at(&pdir)?;
        fs::create_dir_all(dir.join(files::WAL_DIR)).at(&dir.join(files::WAL_DIR))?;
        // Make `p/` and `wal/` themselves durable before anything in them is.
        diskio::fsync_dir(dir).at(dir)?;
        let mut projects = HashMap::new();
        for e in fs::read_dir(&pdir).at(&pdir)? {
            let e = e.at(&pdir)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !e.file_type().at(&e.path())?.is_dir() || !is_valid_project(&name) {
                continue;
            }
            let p = load_project(&e.path())?;
            projects.insert(name, Arc::new(p));
        }
        let mut replayed = 0u64;
        let max_cut = projects
            .values()
            .map(|p| read(&p.state).max_cut)
            .max()
            .unwrap_or(0);
        let wal = Wal::open(
            &dir.join(files::WAL_DIR),
            opts.faults.clone(),
            max_cut,
            |seg, payload| {
                let (project, batches) = wal::decode_append(payload).map_err(|d| {
                    Error::corrupt(
                        dir.join(files::WAL_DIR).join(files::wal_segment_name(seg)),
                        format!("undecodable record: {d}"),
                    )
                })?;
                let p = projects
                    .entry(project.clone())
                    .or_insert_with(|| Arc::new(new_project(&pdir, &project)));
                let mut st = write(&p.state);
                if seg < st.max_cut {
                    return Ok(());
                }
                for b in &batches {
                    let sid = st.intern(&b.labels);
                    let mut h = lock(&st.streams[sid as usize].head);
                    replayed += h.push(&b.entries, &opts) as u64;
                }
                Ok(())
            },
        )?;
        let store = Store {
            dir: dir.to_path_buf(),
            opts,
            wal,
            gate: RwLock::new(()),
            flush_lock: Mutex::new(()),
            projects: RwLock::new(projects),
            head_bytes: AtomicU64::new(replayed),
            head_since: AtomicU64::new(0),
            started: std::time::Instant::now(),
            subscribers: Mutex::new(HashMap::new()),
            poisoned: Mutex::new(None),
            _lock: dir_lock,
        };
        // Seal what was replayed and drop the WAL segments it came from, so
        // later retention cannot resurrect deleted data from an old WAL.
        store.flush()?;
        Ok(store)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn project(&self, name: &str) -> Option<Arc<Project>> {
        read(&self.projects).get(name).cloned()
    }

    fn project_or_create(&self, name: &str) -> Arc<Project> {
        if let Some(p) = self.project(name) {
            return p;
        }
        let pdir = self.dir.join(files::PROJECTS_DIR);
        write(&self.projects)
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(new_project(&pdir, name)))
            .clone()
    }

    /// Stores the batches of `project`; returns once they are durable
    /// (fsynced in the WAL). Fails without storing anything if the project
    /// slug or a line breaks a rule.
    pub fn append(&self, project: &str, batches: &[StreamBatch]) -> Result<AppendReport, Error> {
        if !is_valid_project(project) {
            return Err(Error::InvalidInput(format!(
                "project {project:?} is not a slug ([a-z0-9][a-z0-9_-]*, at most 64 bytes)"
            )));
        }
        let mut report = AppendReport::default();
        for b in batches {
            for e in &b.entries {
                if e.line.len() > self.opts.max_line_bytes {
                    return Err(Error::InvalidInput(format!(
                        "line of {} bytes in stream {} exceeds the max line size of {} bytes",
                        e.line.len(),
                        b.labels,
                        self.opts.max_line_bytes
                    )));
                }
                report.entries += 1;
                report.bytes += e.line.len() as u64;
            }
        }
        if let Some(p) = lock(&self.poisoned).clone() {
            return Err(Error::Poisoned(p));
        }
        if report.entries == 0 {
            return Ok(report);
        }
        let mut payload = Vec::with_capacity(report.bytes as usize + 64 * batches.len() + 64);
        wal::encode_append(&mut payload, project, batches);
        let mut framed = Vec::with_capacity(payload.len() + 8);
        diskio::encode_record(&mut framed, &payload).map_err(|e| {
            Error::InvalidInput(format!("append too large for one WAL record: {e}"))
        })?;
        drop(payload);
        let p = self.project_or_create(project);
        let ticket = {
            let _g = read(&self.gate);
            let ticket = self.wal.submit(&framed)?;
            drop(framed);
            let streams = self.streams_for(&p, batches);
            for (b, s) in batches.iter().zip(streams) {
                lock(&s.head).push(&b.entries, &self.opts);
            }
            ticket
        };
        let total = self.head_bytes.fetch_add(report.bytes, Ordering::Relaxed) + report.bytes;
        let now = self.started.elapsed().as_nanos() as u64 + 1;
        let _ = self
            .head_since
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        self.wal.wait(ticket)?;
        self.publish(project, batches);
        if total >= self.opts.flush_bytes as u64
            && let Ok(_guard) = self.flush_lock.try_lock()
        {
            // This append is durable whatever the flush does; a failed
            // flush poisons the store, so the next append reports it.
            let _ = self.flush_locked();
        }
        Ok(report)
    }

    fn streams_for(&self, p: &Project, batches: &[StreamBatch]) -> Vec<Arc<Stream>> {
        {
            let st = read(&p.state);
            let found: Option<Vec<_>> = batches
                .iter()
                .map(|b| {
                    st.by_labels
                        .get(&b.labels)
                        .map(|&i| st.streams[i as usize].clone())
                })
                .collect();
            if let Some(v) = found {
                return v;
            }
        }
        let mut st = write(&p.state);
        batches
            .iter()
            .map(|b| {
                let sid = st.intern(&b.labels);
                st.streams[sid as usize].clone()
            })
            .collect()
    }

    fn publish(&self, project: &str, batches: &[StreamBatch]) {
        let mut subs = lock(&self.subscribers);
        let Some(list) = subs.get_mut(project) else {
            return;
        };
        let batch: TailBatch = Arc::new(batches.to_vec());
        // A subscriber that is full (too slow) or gone is dropped: the
        // append path never waits for a reader.
        list.retain(|tx| match tx.try_send(batch.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        });
        if list.is_empty() {
            subs.remove(project);
        }
    }

    /// A live tail of `project`: every batch appended from now on, once
    /// durable. A subscriber more than [`Options::tail_queue`] batches
    /// behind is dropped (its receiver then reports disconnection).
    pub fn subscribe(&self, project: &str) -> Receiver<TailBatch> {
        let (tx, rx) = std::sync::mpsc::sync_channel(self.opts.tail_queue.max(1));
        lock(&self.subscribers)
            .entry(project.to_string())
            .or_default()
            .push(tx);
        rx
    }

    /// Flushes when the heads hold an entry appended more than `max_age`
    /// ago (for a timer in the server: bounds WAL size and replay time
    /// under a light load). Returns whether it flushed.
    pub fn flush_if_due(&self, max_age: std::time::Duration) -> Result<bool, Error> {
        let since = self.head_since.load(Ordering::Relaxed);
        if since == 0 {
            return Ok(false);
        }
        let age = (self.started.elapsed().as_nanos() as u64 + 1).saturating_sub(since);
        if age < max_age.as_nanos() as u64 {
            return Ok(false);
        }
        self.flush()?;
        Ok(true)
    }

    /// Seals every head into segment files (one per project with data)
    /// and deletes the WAL segments they came from.
    pub fn flush(&self) -> Result<(), Error> {
        let _g = lock(&self.flush_lock);
        self.flush_locked()
    }

    fn flush_locked(&self) -> Result<(), Error> {
        if let Some(p) = lock(&self.poisoned).clone() {
            return Err(Error::Poisoned(p));
        }
        let r = self.flush_inner();
        if let Err(e) = &r {
            *lock(&self.poisoned) = Some(format!("flush failed: {e}"));
        }
        r
    }

    fn flush_inner(&self) -> Result<(), Error> {
        let projects: Vec<(String, Arc<Project>)> = read(&self.projects)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // Rotate and freeze atomically with respect to appends.
        let (cut, frozen) = {
            let _g = write(&self.gate);
            let cut = self.wal.rotate()?;
            let mut all = Vec::new();
            for (name, p) in &projects {
                let mut st = write(&p.state);
                let mut fr: Frozen = Vec::new();
                for (sid, s) in st.streams.iter().enumerate() {
                    let mut h = lock(&s.head);
                    if !h.is_empty() {
                        fr.push((sid as u32, Arc::new(std::mem::take(&mut *h))));
                    }
                }
                if !fr.is_empty() {
                    let fr = Arc::new(fr);
                    st.frozen = Some(fr.clone());
                    all.push((name.clone(), p.clone(), fr));
                }
            }
            self.head_bytes.store(0, Ordering::Relaxed);
            self.head_since.store(0, Ordering::Relaxed);
            (cut, all)
        };
        for (_name, p, fr) in frozen {
            let (labels, seq): (Vec<Labels>, u64) = {
                let st = read(&p.state);
                (
                    fr.iter()
                        .map(|(sid, _)| st.streams[*sid as usize].labels.clone())
                        .collect(),
                    st.next_seq,
                )
            };
            let mut streams = Vec::with_capacity(fr.len());
            for ((_, data), labels) in fr.iter().zip(labels) {
                let mut blocks = data.blocks.clone();
                if !data.open.is_empty() {
                    blocks.push(Arc::new(crate::block::build(
                        &data.open,
                        self.opts.zstd_level,
                        self.opts.bloom_bits_per_trigram,
                    )));
                }
                streams.push((labels, blocks));
            }
            fs::create_dir_all(&p.dir).at(&p.dir)?;
            let parent = self.dir.join(files::PROJECTS_DIR);
            diskio::fsync_dir(&parent).at(&parent)?;
            let seg = segment::write(&p.dir, seq, cut, &[], &streams, &self.opts.faults)?;
            let mut st = write(&p.state);
            st.add_segment(seg);
            st.frozen = None;
        }
        self.wal.delete_before(cut)
    }

    /// Applies `policy` to `project` at time `now_ns`: deletes whole
    /// segments older than the age limit, then the oldest segments until
    /// the rest fit the size limit. Entries still in the head are kept
    /// until flushed.
    pub fn apply_retention(
        &self,
        project: &str,
        policy: &Retention,
        now_ns: i64,
    ) -> Result<RetentionReport, Error> {
        let _g = lock(&self.flush_lock);
        let Some(p) = self.project(project) else {
            return Ok(RetentionReport::default());
        };
        let doomed: Vec<Arc<Segment>> = {
            let mut st = write(&p.state);
            let mut keep = Vec::new();
            let mut doomed = Vec::new();
            for v in std::mem::take(&mut st.segments) {
                let old = policy
                    .max_age_ns
                    .is_some_and(|age| v.seg.max_ts < now_ns.saturating_sub(age));
                if old {
                    doomed.push(v.seg)
                } else {
                    keep.push(v)
                }
            }
            if let Some(max) = policy.max_bytes {
                let mut total: u64 = keep.iter().map(|v| v.seg.file_bytes).sum();
                // Oldest first by newest entry, then by sequence.
                keep.sort_by_key(|v| (v.seg.max_ts, v.seg.seq));
                let mut rest = Vec::new();
                for v in keep {
                    if total > max {
                        total -= v.seg.file_bytes;
                        doomed.push(v.seg);
                    } else {
                        rest.push(v);
                    }
                }
                rest.sort_by_key(|v| v.seg.seq);
                keep = rest;
            }
            st.segments = keep;
            doomed
        };
        let mut report = RetentionReport::default();
        for s in &doomed {
            // Readers holding the segment keep their open file handle.
            fs::remove_file(&s.path).at(&s.path)?;
            report.segments += 1;
            report.bytes += s.file_bytes;
        }
        if !doomed.is_empty() {
            diskio::fsync_dir(&p.dir).at(&p.dir)?;
        }
        Ok(report)
    }

    /// Merges `project`'s segments smaller than `target_bytes`, oldest
    /// first, into segments of about `target_bytes` (blocks are copied, not
    /// recompressed). Fewer, larger files mean fewer open files and a
    /// shorter open; retention then works at the coarser granularity.
    ///
    /// Crash-safe: the output is durable before the inputs are deleted, and
    /// it names them (`replaces`), so an open after a crash in between
    /// deletes them instead of reading their blocks twice. Returns how many
    /// input segments were merged.
    pub fn compact(&self, project: &str, target_bytes: u64) -> Result<usize, Error> {
        let _g = lock(&self.flush_lock);
        let Some(p) = self.project(project) else {
            return Ok(0);
        };
        let small: Vec<Arc<Segment>> = read(&p.state)
            .segments
            .iter()
            .filter(|v| v.seg.file_bytes < target_bytes)
            .map(|v| v.seg.clone())
            .collect();
        let mut groups: Vec<Vec<Arc<Segment>>> = vec![Vec::new()];
        let mut size = 0;
        for s in small {
            if size >= target_bytes {
                groups.push(Vec::new());
                size = 0;
            }
            size += s.file_bytes;
            groups.last_mut().expect("never empty").push(s);
        }
        let mut merged = 0;
        for group in groups.into_iter().filter(|g| g.len() >= 2) {
            merged += group.len();
            self.merge(&p, &group)?;
        }
        Ok(merged)
    }

    fn merge(&self, p: &Project, group: &[Arc<Segment>]) -> Result<(), Error> {
        let mut order: Vec<Labels> = Vec::new();
        let mut by_labels: HashMap<Labels, Vec<Arc<crate::block::MemBlock>>> = HashMap::new();
        for seg in group {
            for st in &seg.streams {
                let blocks = by_labels.entry(st.labels.clone()).or_insert_with(|| {
                    order.push(st.labels.clone());
                    Vec::new()
                });
                for b in &st.blocks {
                    blocks.push(Arc::new(crate::block::MemBlock {
                        meta: b.meta.clone(),
                        data: seg.read_block(b)?,
                    }));
                }
            }
        }
        let streams: Vec<(Labels, Vec<Arc<crate::block::MemBlock>>)> = order
            .into_iter()
            .map(|l| {
                let b = by_labels.remove(&l).unwrap_or_default();
                (l, b)
            })
            .collect();
        let cut = group.iter().map(|s| s.wal_cut).max().unwrap_or(0);
        let replaces: Vec<u64> = group.iter().map(|s| s.seq).collect();
        let seq = read(&p.state).next_seq;
        let out = segment::write(&p.dir, seq, cut, &replaces, &streams, &self.opts.faults)?;
        {
            let mut st = write(&p.state);
            st.segments.retain(|v| !replaces.contains(&v.seg.seq));
            st.add_segment(out);
        }
        for s in group {
            fs::remove_file(&s.path).at(&s.path)?;
        }
        diskio::fsync_dir(&p.dir).at(&p.dir)
    }

    /// Reads every block of every segment of `project` and checks it.
    pub fn verify(&self, project: &str) -> Result<(), Error> {
        let Some(p) = self.project(project) else {
            return Ok(());
        };
        let segs: Vec<Arc<Segment>> = read(&p.state)
            .segments
            .iter()
            .map(|v| v.seg.clone())
            .collect();
        segs.iter().try_for_each(|s| s.verify())
    }

    /// Projects with data.
    pub fn projects(&self) -> Vec<String> {
        let mut v: Vec<String> = read(&self.projects).keys().cloned().collect();
        v.sort();
        v
    }

    /// Group commits the WAL did (tests and metrics).
    pub fn wal_syncs(&self) -> u64 {
        self.wal.syncs()
    }

    /// Bytes on disk: `(segments of all projects, WAL)`.
    pub fn disk_bytes(&self) -> (u64, u64) {
        let segs = read(&self.projects)
            .values()
            .map(|p| {
                read(&p.state)
                    .segments
                    .iter()
                    .map(|v| v.seg.file_bytes)
                    .sum::<u64>()
            })
            .sum();
        (segs, self.wal.disk_bytes())
    }

    /// Stops the WAL writer after writing what is pending. Heads are not
    /// flushed (the WAL holds them; the next open replays them).
    pub fn close(&self) -> Result<(), Error> {
        self.wal.close()
    }
}

fn new_project(pdir: &Path, name: &str) -> Project {
    Project {
        dir: pdir.join(name),
        state: RwLock::new(ProjState::new()),
    }
}

fn load_project(dir: &Path) -> Result<Project, Error> {
    let mut segs = Vec::new();
    for e in fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(files::TMP_SUFFIX) {
            fs::remove_file(e.path()).at(&e.path())?;
        } else if let Some(seq) = files::parse_segment_name(&name) {
            segs.push((seq, e.path()));
        }
    }
    segs.sort();
    let mut opened = Vec::with_capacity(segs.len());
    for (seq, path) in segs {
        opened.push(Segment::open(&path, seq)?);
    }
    // A compaction that died after writing its output but before deleting
    // its inputs: the output holds their blocks, so the inputs go now.
    let replaced: std::collections::HashSet<u64> = opened
        .iter()
        .flat_map(|s| s.replaces.iter().copied())
        .collect();
    let mut st = ProjState::new();
    let mut removed = false;
    for seg in opened {
        if replaced.contains(&seg.seq) {
            fs::remove_file(&seg.path).at(&seg.path)?;
            removed = true;
        } else {
            st.add_segment(seg);
        }
    }
    if removed {
        diskio::fsync_dir(dir).at(dir)?;
    }
    Ok(Project {
        dir: dir.to_path_buf(),
        state: RwLock::new(st),
    })
}

/// Entries of `h` in `[start, end)` whose lines hold every `required`
/// needle, sorted by time (append order among equal times).
pub(crate) fn open_entries(open: &[Entry], start: i64, end: i64, required: &[&[u8]]) -> Vec<Entry> {
    let mut v: Vec<Entry> = open
        .iter()
        .filter(|e| {
            e.ts >= start
                && e.ts < end
                && required
                    .iter()
                    .all(|n| memchr::memmem::find(e.line.as_bytes(), n).is_some())
        })
        .cloned()
        .collect();
    v.sort_by_key(|e| e.ts);
    v
}
