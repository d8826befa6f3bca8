//! [`Db`]: the store's entry point — projects, appends, queries, and the
//! maintenance that cuts blocks, checkpoints the WAL, compacts and deletes.
//!
//! Locks, from outermost: `maint` (one maintenance pass at a time) →
//! `projects` (the registry) → a project's `head` → the WAL's state. A
//! project's `blocks` lock is only taken on its own, for a moment. All are
//! `std::sync` locks: the store is called from blocking threads and never
//! holds a lock across an await or an fsync (the append waits for its fsync
//! after releasing the head).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;

use model::{Labels, Metadata, WriteBatch};

use crate::block::{self, Block, BlockSeries};
use crate::error::IoContext;
use crate::head::{
    BatchKeys, Head, HeadLimits, MemChunk, SHARDS, label_hash, rechunk_floats, rechunk_hists,
};
use crate::query::Querier;
use crate::wal::{self, Record, Wal};
use crate::{AppendReport, Error, Options, ProjectStats, files};

/// One project: its head (in [`SHARDS`] shards by label hash) and its
/// blocks.
pub(crate) struct Project {
    pub name: String,
    pub id: u32,
    pub dir: PathBuf,
    shards: Box<[Mutex<Head>]>,
    /// Live series across the shards (for the series limit). Changed by a
    /// shard under its own lock; read without any.
    pub(crate) series_total: AtomicUsize,
    /// Raw-key → series cache of [`Db::append_keyed`]; emptied by
    /// [`Project::truncate`] when series are collected.
    pub(crate) keyed: crate::keyed::Cache,
    /// Metadata per metric name; its own lock (appends touch it rarely).
    metadata: Mutex<HashMap<String, Metadata>>,
    /// Sorted by `mint`. Replaced whole (copy on write) by maintenance.
    blocks: RwLock<Arc<Vec<Arc<Block>>>>,
}

impl Project {
    fn new(
        name: &str,
        id: u32,
        dir: PathBuf,
        limits: HeadLimits,
        min_valid: i64,
        blocks: Vec<Arc<Block>>,
    ) -> Arc<Project> {
        Arc::new(Project {
            name: name.to_string(),
            id,
            dir,
            shards: (0..SHARDS)
                .map(|i| Mutex::new(Head::new(id, i, limits, min_valid)))
                .collect(),
            series_total: AtomicUsize::new(0),
            keyed: Default::default(),
            metadata: Mutex::new(HashMap::new()),
            blocks: RwLock::new(Arc::new(blocks)),
        })
    }

    /// The shard a series with this [`label_hash`] lives in.
    pub fn shard_of(hash: u64) -> usize {
        (hash % u64::from(SHARDS)) as usize
    }

    pub fn shard(&self, i: usize) -> MutexGuard<'_, Head> {
        lock(&self.shards[i])
    }

    /// Every shard, locked in order (the only order any code takes them in).
    pub fn lock_all(&self) -> Vec<MutexGuard<'_, Head>> {
        self.shards.iter().map(lock).collect()
    }

    /// The head's time range over all shards (`mint > maxt` if empty).
    pub fn head_range(&self) -> (i64, i64) {
        (0..self.shards.len()).fold((i64::MAX, i64::MIN), |(lo, hi), i| {
            let h = self.shard(i);
            (lo.min(h.mint), hi.max(h.maxt))
        })
    }

    fn min_valid(&self) -> i64 {
        self.shard(0).min_valid_t
    }

    /// Drops everything before `before` from every (locked) shard and
    /// counts the removed series out.
    fn truncate(&self, heads: &mut [MutexGuard<'_, Head>], before: i64) {
        for h in heads.iter_mut() {
            h.min_valid_t = h.min_valid_t.max(before);
            let gone = h.drop_before(before);
            self.series_total.fetch_sub(gone, Ordering::Relaxed);
            if gone > 0 {
                // Under the shard's lock (see `keyed`).
                self.keyed.invalidate();
            }
        }
    }

    /// Queues the metadata that changed for the WAL; the ticket if any.
    pub(crate) fn store_metadata(
        &self,
        wal: &Wal,
        metadata: &[(String, Metadata)],
    ) -> Result<Option<wal::Ticket>, Error> {
        if metadata.is_empty() {
            return Ok(None);
        }
        let mut meta = lock(&self.metadata);
        let mut framed = Vec::new();
        let mut payload = Vec::new();
        for (metric, m) in metadata {
            if meta.get(metric) != Some(m) {
                meta.insert(metric.clone(), m.clone());
                payload.clear();
                wal::encode_metadata(&mut payload, self.id, metric, m);
                diskio::encode_record(&mut framed, &payload)
                    .map_err(|e| Error::InvalidInput(e.to_string()))?;
            }
        }
        if framed.is_empty() {
            return Ok(None);
        }
        Ok(Some(wal.submit(&framed)?))
    }

    fn blocks(&self) -> Arc<Vec<Arc<Block>>> {
        self.blocks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_blocks(&self, v: Vec<Arc<Block>>) {
        *self.blocks.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(v);
    }
}

struct Inner {
    dir: PathBuf,
    opts: Options,
    _lock: diskio::DirLock,
    wal: Wal,
    projects: RwLock<HashMap<String, Arc<Project>>>,
    next_project_id: AtomicU64,
    block_seq: AtomicU64,
    maint: Mutex<()>,
    /// Per-project retention set by [`Db::set_retention`] (else the options').
    retention: RwLock<HashMap<String, crate::Retention>>,
    /// Per-project series limits set by [`Db::set_series_limit`] (else the options').
    series_limits: RwLock<HashMap<String, usize>>,
    stop: Mutex<bool>,
    stop_cv: Condvar,
    /// The background pass's last failure, cleared by a pass that works.
    maint_error: Mutex<Option<String>>,
}

/// The metric store of one data directory (`<data>/tsdb/`), every project
/// inside. `Send + Sync`; share it with an `Arc`.
pub struct Db {
    inner: Arc<Inner>,
    bg: Option<JoinHandle<()>>,
}

/// Project names become directory names: keep them plain.
fn check_project(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "project name {name:?} must be 1–128 characters of A–Z a–z 0–9 _ - . (and not . or ..)"
        )))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Db {
    /// Opens (or creates) the store in `dir`: opens every block, replays the
    /// WAL (truncating a torn tail), starts the WAL writer and, if
    /// configured, the maintenance thread.
    pub fn open(dir: &Path, opts: Options) -> Result<Db, Error> {
        if opts.block_duration_ms <= 0 || opts.ooo_window_ms < 0 {
            return Err(Error::InvalidInput(format!(
                "block_duration_ms ({}) must be > 0 and ooo_window_ms ({}) >= 0",
                opts.block_duration_ms, opts.ooo_window_ms
            )));
        }
        fs::create_dir_all(dir).at(dir)?;
        let dir_lock = diskio::DirLock::try_acquire(dir, files::LOCK)?;
        let pdir = dir.join(files::PROJECTS_DIR);
        fs::create_dir_all(&pdir).at(&pdir)?;
        let limits = HeadLimits {
            ooo_window_ms: opts.ooo_window_ms,
            max_series: opts.max_series_per_project,
            block_duration_ms: opts.block_duration_ms,
        };

        // Blocks of every project on disk.
        let mut on_disk: HashMap<String, Vec<Arc<Block>>> = HashMap::new();
        for e in fs::read_dir(&pdir).at(&pdir)? {
            let e = e.at(&pdir)?;
            let name = e.file_name().to_string_lossy().to_string();
            if check_project(&name).is_err() || !e.path().is_dir() {
                continue;
            }
            on_disk.insert(name, block::open_blocks(&e.path())?);
        }
        let mut seq = 0u64;
        for b in on_disk.values().flatten() {
            if let Some(s) = b
                .meta
                .name
                .rsplit('-')
                .next()
                .and_then(|s| s.parse::<u64>().ok())
            {
                seq = seq.max(s + 1);
            }
        }

        let wal_path = dir.join(files::WAL_DIR);
        // Replay starts with no minimum valid time: the WAL's own truncation
        // records drop what went into blocks at the points where it happened
        // (so series refs come out as they were); whatever is still older
        // than the newest block goes after.
        let make = |name: &str, id: u32, blocks: Vec<Arc<Block>>| {
            Project::new(name, id, pdir.join(name), limits, i64::MIN, blocks)
        };
        let mut projects: HashMap<String, Arc<Project>> = HashMap::new();
        let mut by_id: HashMap<u32, Arc<Project>> = HashMap::new();
        let mut next_id = 0u32;
        let corrupt = |d: String| Error::corrupt(&wal_path, d);
        // Applied to each record as the WAL is read, one segment in memory
        // at a time.
        let apply = |rec: Record| -> Result<(), Error> {
            let pid = match &rec {
                Record::Project { id, name } => {
                    if check_project(name).is_err() {
                        return Err(corrupt(format!("invalid project name {name:?}")));
                    }
                    let p = match projects.get(name) {
                        Some(p) if p.id == *id => p.clone(),
                        Some(p) => {
                            return Err(corrupt(format!(
                                "project {name:?} declared as {id} and as {}",
                                p.id
                            )));
                        }
                        None => {
                            let p = make(name, *id, on_disk.remove(name).unwrap_or_default());
                            projects.insert(name.clone(), p.clone());
                            p
                        }
                    };
                    by_id.insert(*id, p);
                    next_id = next_id.max(id + 1);
                    return Ok(());
                }
                Record::Series { project, .. }
                | Record::Samples { project, .. }
                | Record::Histograms { project, .. }
                | Record::Metadata { project, .. }
                | Record::Truncate { project, .. } => *project,
            };
            let p = by_id
                .get(&pid)
                .ok_or_else(|| corrupt(format!("record of undeclared project {pid}")))?;
            let mut heads = p.lock_all();
            // A WAL ref is `local ref × SHARDS + shard`.
            let split = |r: u32| ((r % SHARDS) as usize, r / SHARDS);
            match rec {
                Record::Series { series, .. } => {
                    for (r, pairs) in series {
                        let (shard, local) = split(r);
                        let labels = Labels::from_sorted_unchecked(
                            pairs.iter().map(|(n, v)| model::Label::new(n, v)).collect(),
                        );
                        if Project::shard_of(label_hash(&labels)) != shard {
                            return Err(corrupt(format!(
                                "series {r} ({labels}) is in shard {shard} but hashes to another: written by an incompatible version"
                            )));
                        }
                        if heads[shard]
                            .replay_series(local, &labels)
                            .map_err(&corrupt)?
                        {
                            p.series_total.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Record::Samples { samples, .. } => {
                    for (r, t, v) in samples {
                        let (shard, local) = split(r);
                        if !heads[shard].has_series(local) {
                            return Err(corrupt(format!("sample of unknown series {r}")));
                        }
                        // Rejections are expected here: samples already in
                        // blocks (too old) and duplicates.
                        let _ = heads[shard].append_float(local, t, v);
                    }
                }
                Record::Histograms { histograms, .. } => {
                    for (r, t, h) in histograms {
                        let (shard, local) = split(r);
                        if !heads[shard].has_series(local) {
                            return Err(corrupt(format!("histogram of unknown series {r}")));
                        }
                        let _ = heads[shard].append_hist(local, t, &h);
                    }
                }
                Record::Metadata { metric, meta, .. } => {
                    lock(&p.metadata).insert(metric, meta);
                }
                Record::Truncate { before, .. } => p.truncate(&mut heads, before),
                Record::Project { .. } => {}
            }
            Ok(())
        };
        let wal = Wal::open(&wal_path, opts.faults.clone(), apply)?;
        // Projects with blocks but nothing in the WAL.
        let mut declare = Vec::new();
        for (name, blocks) in on_disk {
            let p = make(&name, next_id, blocks);
            next_id += 1;
            let mut payload = Vec::new();
            wal::encode_project(&mut payload, p.id, &name);
            declare.push(payload);
            projects.insert(name, p);
        }
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            opts: opts.clone(),
            _lock: dir_lock,
            wal,
            projects: RwLock::new(projects),
            next_project_id: AtomicU64::new(u64::from(next_id)),
            block_seq: AtomicU64::new(seq),
            maint: Mutex::new(()),
            retention: RwLock::new(HashMap::new()),
            series_limits: RwLock::new(HashMap::new()),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
            maint_error: Mutex::new(None),
        });
        for p in inner.all_projects() {
            let end = p.blocks().iter().map(|b| b.meta.end).max();
            let mut heads = p.lock_all();
            if let Some(end) = end.filter(|e| *e > heads[0].min_valid_t) {
                // A cut whose truncation record did not reach the WAL.
                p.truncate(&mut heads, end);
                let mut payload = Vec::new();
                wal::encode_truncate(&mut payload, p.id, end);
                declare.push(payload);
            }
        }
        let mut framed = Vec::new();
        for payload in declare {
            diskio::encode_record(&mut framed, &payload)
                .map_err(|e| Error::InvalidInput(e.to_string()))?;
        }
        if !framed.is_empty() {
            let t = inner.wal.submit(&framed)?;
            inner.wal.wait(t)?;
        }
        let bg = match opts.maintenance_interval {
            Some(every) => {
                let i2 = inner.clone();
                Some(
                    std::thread::Builder::new()
                        .name("tsdb-maint".into())
                        .spawn(move || {
                            loop {
                                let stop = lock(&i2.stop);
                                let (stop, _) = i2
                                    .stop_cv
                                    .wait_timeout(stop, every)
                                    .unwrap_or_else(|p| p.into_inner());
                                if *stop {
                                    return;
                                }
                                drop(stop);
                                // Kept for `maintenance_error`; the next pass
                                // retries (a failed block write leaves the
                                // head as it was).
                                let r = i2.maintain(false);
                                *lock(&i2.maint_error) = r.err().map(|e| e.to_string());
                            }
                        })
                        .map_err(|e| Error::io(dir, e))?,
                )
            }
            None => None,
        };
        Ok(Db { inner, bg })
    }

    /// Appends a batch to a project (created on first use). Blocks until
    /// every accepted sample is fsynced. Per-sample rejections are in the
    /// report; `Err` means nothing is acknowledged (I/O failure, poisoned
    /// store, or an invalid batch — then nothing was stored).
    pub fn append(&self, project: &str, batch: &WriteBatch) -> Result<AppendReport, Error> {
        check_project(project)?;
        if let Some(p) = self.inner.wal.poisoned() {
            return Err(Error::Poisoned(p));
        }
        for (i, ts) in batch.series.iter().enumerate() {
            if ts.labels.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "series {i} of the batch has no labels; every series needs at least a metric name"
                )));
            }
            if let Some(l) = ts.labels.iter().find(|l| l.name.is_empty()) {
                return Err(Error::InvalidInput(format!(
                    "series {i} ({}) has a label with an empty name (value {:?})",
                    ts.labels, l.value
                )));
            }
        }
        let p = self.inner.project(project, true)?.ok_or(Error::Closed)?;
        let mut report = AppendReport::default();
        let mut framed = Vec::new();
        // Keys and hashes read every label byte: build them before any lock.
        let keys = BatchKeys::new(batch);
        let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); SHARDS as usize];
        for (i, h) in keys.hashes.iter().enumerate() {
            by_shard[Project::shard_of(*h)].push(i);
        }
        let mut ticket = None;
        for (shard, indexes) in by_shard.iter().enumerate() {
            if indexes.is_empty() {
                continue;
            }
            let mut head = p.shard(shard);
            head.append_batch(
                batch,
                indexes,
                &keys,
                &p.series_total,
                &mut report,
                &mut framed,
            );
            // Queued under the shard's lock: the WAL holds each series'
            // samples in the order the head took them.
            if !framed.is_empty() {
                ticket = Some(self.inner.wal.submit(&framed)?);
                framed.clear();
            }
        }
        if let Some(t) = p.store_metadata(&self.inner.wal, &batch.metadata)? {
            ticket = Some(t);
        }
        // Tickets are ordered: the last covers the earlier ones. With
        // nothing new to write (all exact duplicates), still wait for what
        // is queued: the originals may not be durable yet.
        let ticket = match ticket {
            Some(t) => t,
            None => self.inner.wal.barrier()?,
        };
        self.inner.wal.wait(ticket)?;
        Ok(report)
    }

    /// [`Db::append`] for series keyed by the raw bytes of their labels
    /// (see [`crate::keyed`]): a series whose key the project's cache knows
    /// is appended without its labels; for the others `labels_of(i)` is
    /// called (before any lock, in batch order) for the labels of series
    /// `i`, or `None` to leave it out (the caller records why). Same
    /// semantics, report, WAL records and durability as [`Db::append`].
    pub fn append_keyed(
        &self,
        project: &str,
        batch: &crate::KeyedBatch<'_>,
        labels_of: &mut dyn FnMut(usize) -> Option<Labels>,
    ) -> Result<AppendReport, Error> {
        check_project(project)?;
        if let Some(p) = self.inner.wal.poisoned() {
            return Err(Error::Poisoned(p));
        }
        let p = self.inner.project(project, true)?.ok_or(Error::Closed)?;
        crate::keyed::append(&p, &self.inner.wal, batch, labels_of)
    }

    /// Entries in `project`'s [`Db::append_keyed`] cache (0 if unknown).
    pub fn keyed_cache_len(&self, project: &str) -> usize {
        self.inner
            .project(project, false)
            .ok()
            .flatten()
            .map_or(0, |p| p.keyed.len())
    }

    /// A read view of `project` over `[mint, maxt]` (ms, inclusive). An
    /// unknown project yields an empty querier.
    pub fn querier(&self, project: &str, mint: i64, maxt: i64) -> Querier {
        let p = self.inner.project(project, false).ok().flatten();
        let blocks = p.as_ref().map(|p| p.blocks().to_vec()).unwrap_or_default();
        Querier {
            project: p,
            blocks,
            mint,
            maxt,
        }
    }

    /// Cuts every project's whole head into blocks now and checkpoints the
    /// WAL. Samples older than what was cut are rejected afterwards as too
    /// old.
    pub fn flush(&self) -> Result<(), Error> {
        self.inner.maintain(true)
    }

    /// One maintenance pass (what the background thread does): cut blocks
    /// from heads spanning more than 1.5 block durations, checkpoint the
    /// WAL, compact, apply retention.
    pub fn maintain(&self) -> Result<(), Error> {
        self.inner.maintain(false)
    }

    /// Sets a project's retention (time and size), replacing the default
    /// from [`Options`] for it; applied by the next maintenance pass. Not
    /// stored: the caller sets it again after every open (from its config).
    /// Sets a project's maximum number of active series (new series over
    /// it are refused with [`crate::RejectReason::SeriesLimit`]); applies
    /// at once to an open project and to one created later. Not persisted:
    /// the server sets it from its configuration after every open.
    pub fn set_series_limit(&self, project: &str, max_series: usize) {
        self.inner
            .series_limits
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(project.to_string(), max_series);
        if let Ok(Some(p)) = self.inner.project(project, false) {
            for shard in p.shards.iter() {
                shard
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .set_max_series(max_series);
            }
        }
    }

    pub fn set_retention(&self, project: &str, retention: crate::Retention) {
        self.inner
            .retention
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(project.to_string(), retention);
    }

    /// Why the last background maintenance pass failed, if it did (for
    /// the server's health and metrics; the next pass retries).
    pub fn maintenance_error(&self) -> Option<String> {
        lock(&self.inner.maint_error).clone()
    }

    /// Usage figures of a project (zeros for an unknown one).
    pub fn stats(&self, project: &str) -> ProjectStats {
        let Some(p) = self.inner.project(project, false).ok().flatten() else {
            return ProjectStats::default();
        };
        let blocks = p.blocks();
        let mut st = ProjectStats {
            samples_stored: blocks.iter().map(|b| b.meta.num_samples).sum::<u64>(),
            block_bytes: blocks.iter().map(|b| b.disk_bytes()).sum(),
            blocks: blocks.len(),
            min_valid_time: p.min_valid(),
            ..Default::default()
        };
        let (mut mint, mut maxt) = (i64::MAX, i64::MIN);
        let mut top: HashMap<String, usize> = HashMap::new();
        for i in 0..SHARDS as usize {
            let head = p.shard(i);
            st.head_series += head.num_series();
            st.samples_appended += head.samples_appended;
            st.samples_stored += head.sample_count();
            st.head_bytes += head.approx_bytes();
            mint = mint.min(head.mint);
            maxt = maxt.max(head.maxt);
            for (name, n) in head.top_metrics(usize::MAX) {
                *top.entry(name).or_default() += n;
            }
        }
        st.head_range = (mint <= maxt).then_some((mint, maxt));
        let mut top: Vec<(String, usize)> = top.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(20);
        st.top_metrics = top;
        st
    }

    /// Metadata per metric name (all, or the one asked for), sorted by name.
    pub fn metadata(&self, project: &str, metric: Option<&str>) -> Vec<(String, Metadata)> {
        let Some(p) = self.inner.project(project, false).ok().flatten() else {
            return Vec::new();
        };
        let meta = lock(&p.metadata);
        let mut v: Vec<(String, Metadata)> = meta
            .iter()
            .filter(|(k, _)| metric.is_none_or(|m| m == k.as_str()))
            .map(|(k, m)| (k.clone(), m.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Names of the projects with data.
    pub fn projects(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .inner
            .projects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Bytes of WAL on disk (shared by all projects).
    pub fn wal_bytes(&self) -> u64 {
        self.inner.wal.disk_bytes()
    }

    /// Number of WAL fsyncs so far (group commit: far fewer than appends).
    pub fn wal_syncs(&self) -> u64 {
        self.inner.wal.syncs()
    }

    /// Latency of the WAL's group commits (write + fdatasync) since open.
    pub fn wal_sync_histogram(&self) -> crate::SyncHistogram {
        self.inner.wal.sync_histogram()
    }

    /// Blocks of a project (metadata), oldest first.
    pub fn blocks(&self, project: &str) -> Vec<crate::BlockMeta> {
        self.inner
            .project(project, false)
            .ok()
            .flatten()
            .map(|p| p.blocks().iter().map(|b| b.meta.clone()).collect())
            .unwrap_or_default()
    }

    /// Stops the maintenance thread, writes what is pending, closes the WAL.
    pub fn close(mut self) -> Result<(), Error> {
        self.stop_bg();
        self.inner.wal.close()
    }

    fn stop_bg(&mut self) {
        *lock(&self.inner.stop) = true;
        self.inner.stop_cv.notify_all();
        if let Some(h) = self.bg.take() {
            let _ = h.join();
        }
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.stop_bg();
    }
}

impl Inner {
    /// The project, created (and declared in the WAL) if `create`.
    fn project(&self, name: &str, create: bool) -> Result<Option<Arc<Project>>, Error> {
        if let Some(p) = self
            .projects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(Some(p.clone()));
        }
        if !create {
            return Ok(None);
        }
        check_project(name)?;
        let mut w = self.projects.write().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = w.get(name) {
            return Ok(Some(p.clone()));
        }
        let id = self.next_project_id.fetch_add(1, Ordering::SeqCst) as u32;
        let dir = self.dir.join(files::PROJECTS_DIR).join(name);
        fs::create_dir_all(&dir).at(&dir)?;
        let parent = self.dir.join(files::PROJECTS_DIR);
        diskio::fsync_dir(&parent).at(&parent)?;
        let mut payload = Vec::new();
        wal::encode_project(&mut payload, id, name);
        let mut framed = Vec::new();
        diskio::encode_record(&mut framed, &payload)
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
        // Queued before any record of the project; the first append's
        // ticket covers it.
        self.wal.submit(&framed)?;
        let limits = HeadLimits {
            ooo_window_ms: self.opts.ooo_window_ms,
            max_series: self.series_limit_of(name),
            block_duration_ms: self.opts.block_duration_ms,
        };
        let p = Project::new(name, id, dir, limits, i64::MIN, Vec::new());
        w.insert(name.to_string(), p.clone());
        Ok(Some(p))
    }

    fn series_limit_of(&self, project: &str) -> usize {
        self.series_limits
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(project)
            .copied()
            .unwrap_or(self.opts.max_series_per_project)
    }

    fn all_projects(&self) -> Vec<Arc<Project>> {
        let mut v: Vec<Arc<Project>> = self
            .projects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn retention_of(&self, project: &str) -> crate::Retention {
        self.retention
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(project)
            .copied()
            .unwrap_or(crate::Retention {
                time: self.opts.retention,
                max_bytes: self.opts.max_bytes,
            })
    }

    fn next_block_name(&self, mint: i64, end: i64) -> String {
        files::block_name(mint, end, self.block_seq.fetch_add(1, Ordering::SeqCst))
    }

    fn maintain(&self, flush: bool) -> Result<(), Error> {
        let _g = lock(&self.maint);
        if let Some(p) = self.wal.poisoned() {
            return Err(Error::Poisoned(p));
        }
        let bd = self.opts.block_duration_ms;
        let mut cut_any = false;
        for p in self.all_projects() {
            loop {
                let (mint, maxt) = p.head_range();
                if mint > maxt {
                    break;
                }
                let before = if flush {
                    maxt.saturating_add(1)
                } else if (maxt - mint) as f64 > 1.5 * bd as f64 {
                    mint.div_euclid(bd) * bd + bd
                } else {
                    break;
                };
                let mut raw = Vec::new();
                for i in 0..SHARDS as usize {
                    raw.extend(p.shard(i).snapshot_before(before));
                }
                // Sorted as keys and finished one at a time while the block
                // is written: a million series' labels and re-cut chunks
                // are never all in memory at once.
                raw.sort_by(|a, b| a.cmp_labels(b));
                if !raw.is_empty() {
                    let series = raw.into_iter().filter_map(|s| s.finish()).map(|d| {
                        Ok(BlockSeries {
                            labels: d.labels,
                            floats: d.floats,
                            hists: d.hists,
                        })
                    });
                    let name = self.next_block_name(mint, before);
                    let b = block::write_block(
                        &p.dir,
                        &name,
                        series,
                        before,
                        1,
                        Vec::new(),
                        &self.opts.faults,
                    )?;
                    let mut v = p.blocks().to_vec();
                    v.push(Arc::new(b));
                    v.sort_by_key(|b| (b.meta.mint, b.meta.end));
                    p.set_blocks(v);
                }
                {
                    // Under the head lock, so the record sits at the same
                    // place among the project's appends as the truncation.
                    let mut heads = p.lock_all();
                    p.truncate(&mut heads, before);
                    let mut payload = Vec::new();
                    wal::encode_truncate(&mut payload, p.id, before);
                    let mut framed = Vec::new();
                    diskio::encode_record(&mut framed, &payload)
                        .map_err(|e| Error::InvalidInput(e.to_string()))?;
                    self.wal.submit(&framed)?;
                }
                cut_any = true;
                if flush {
                    break;
                }
            }
        }
        if cut_any {
            self.checkpoint()?;
        }
        for p in self.all_projects() {
            self.compact(&p)?;
            self.retention(&p)?;
        }
        Ok(())
    }

    /// Starts a new WAL segment and condenses the older ones: series,
    /// metadata and project records are kept, samples older than their
    /// project's minimum valid time (now in blocks) dropped.
    fn checkpoint(&self) -> Result<(), Error> {
        let seg = self.wal.rotate()?;
        let mut min_valid: HashMap<u32, i64> = HashMap::new();
        let mut live: HashMap<u32, std::collections::HashSet<u32>> = HashMap::new();
        for p in self.all_projects() {
            min_valid.insert(p.id, p.min_valid());
            let set = live.entry(p.id).or_default();
            for i in 0..SHARDS as usize {
                let h = p.shard(i);
                set.extend(h.live_refs().into_iter().map(|r| h.wal_ref(r)));
            }
        }
        // Series created after this point are in segments >= seg, which
        // the checkpoint does not touch.
        let skip =
            |project: u32, newest: i64| min_valid.get(&project).is_some_and(|mv| newest < *mv);
        self.wal.checkpoint(seg, skip, |rec| match rec {
            Record::Samples { project, samples } => {
                let mv = min_valid.get(&project).copied().unwrap_or(i64::MIN);
                let samples: Vec<_> = samples.into_iter().filter(|s| s.1 >= mv).collect();
                (!samples.is_empty()).then_some(Record::Samples { project, samples })
            }
            Record::Histograms {
                project,
                histograms,
            } => {
                let mv = min_valid.get(&project).copied().unwrap_or(i64::MIN);
                let histograms: Vec<_> = histograms.into_iter().filter(|s| s.1 >= mv).collect();
                (!histograms.is_empty()).then_some(Record::Histograms {
                    project,
                    histograms,
                })
            }
            // History: the checkpoint holds the state after these.
            Record::Truncate { .. } => None,
            Record::Series { project, series } => {
                let bits = live.get(&project);
                let series: Vec<_> = series
                    .into_iter()
                    .filter(|(r, _)| bits.is_some_and(|b| b.contains(r)))
                    .collect();
                (!series.is_empty()).then_some(Record::Series { project, series })
            }
            other => Some(other),
        })
    }

    /// Merges adjacent blocks that fall in the same window of 3× the
    /// level's range (2 h → 6 h → 18 h → …, aligned to the epoch), once the
    /// window is complete (the head's minimum valid time is past it).
    fn compact(&self, p: &Project) -> Result<(), Error> {
        let bd = self.opts.block_duration_ms;
        loop {
            let blocks = p.blocks();
            let min_valid = p.min_valid();
            let mut plan: Option<Vec<Arc<Block>>> = None;
            // Like Prometheus, a block spans at most a tenth of the retention,
            // so retention (which deletes whole blocks) stays fine-grained.
            let max_range = (self.retention_of(&p.name).time.as_millis() as i64 / 10).max(bd);
            let mut range = bd;
            'levels: for _ in 0..8 {
                range = range.saturating_mul(3);
                if range > max_range {
                    break;
                }
                let mut groups: std::collections::BTreeMap<i64, Vec<Arc<Block>>> =
                    Default::default();
                for b in blocks.iter() {
                    let w = b.meta.mint.div_euclid(range);
                    // Whole block inside one window, and smaller than it.
                    if b.meta.maxt.div_euclid(range) == w && b.meta.end - b.meta.mint < range {
                        groups.entry(w).or_default().push(b.clone());
                    }
                }
                for (w, g) in groups {
                    if g.len() >= 2 && (w + 1).saturating_mul(range) <= min_valid {
                        plan = Some(g);
                        break 'levels;
                    }
                }
            }
            let Some(group) = plan else {
                return Ok(());
            };
            let merged = merge_blocks(&group)?;
            let mint = group.iter().map(|b| b.meta.mint).min().unwrap_or(0);
            let end = group.iter().map(|b| b.meta.end).max().unwrap_or(0);
            let level = group.iter().map(|b| b.meta.level).max().unwrap_or(1) + 1;
            let parents: Vec<String> = group.iter().map(|b| b.meta.name.clone()).collect();
            let name = self.next_block_name(mint, end);
            let nb = block::write_block(
                &p.dir,
                &name,
                merged,
                end,
                level,
                parents.clone(),
                &self.opts.faults,
            )?;
            let mut v: Vec<Arc<Block>> = p
                .blocks()
                .iter()
                .filter(|b| !parents.contains(&b.meta.name))
                .cloned()
                .collect();
            v.push(Arc::new(nb));
            v.sort_by_key(|b| (b.meta.mint, b.meta.end));
            p.set_blocks(v);
            for b in &group {
                fs::remove_dir_all(b.dir()).at(b.dir())?;
            }
            diskio::fsync_dir(&p.dir).at(&p.dir)?;
        }
    }

    /// Deletes whole blocks past the retention time (measured from the
    /// project's newest sample) or beyond the size limit, oldest first.
    fn retention(&self, p: &Project) -> Result<(), Error> {
        let blocks = p.blocks();
        if blocks.is_empty() {
            return Ok(());
        }
        let head_max = p.head_range().1;
        let newest = blocks
            .iter()
            .map(|b| b.meta.maxt)
            .max()
            .unwrap_or(i64::MIN)
            .max(head_max);
        let ret = self.retention_of(&p.name);
        let keep_from = newest.saturating_sub(ret.time.as_millis() as i64);
        let mut keep: Vec<Arc<Block>> = blocks
            .iter()
            .filter(|b| b.meta.maxt >= keep_from)
            .cloned()
            .collect();
        if let Some(max) = ret.max_bytes {
            let mut total: u64 = keep.iter().map(|b| b.disk_bytes()).sum();
            while total > max && !keep.is_empty() {
                total -= keep[0].disk_bytes();
                keep.remove(0);
            }
        }
        if keep.len() == blocks.len() {
            return Ok(());
        }
        let gone: Vec<Arc<Block>> = blocks
            .iter()
            .filter(|b| !keep.iter().any(|k| k.meta.name == b.meta.name))
            .cloned()
            .collect();
        p.set_blocks(keep);
        for b in gone {
            fs::remove_dir_all(b.dir()).at(b.dir())?;
        }
        diskio::fsync_dir(&p.dir).at(&p.dir)?;
        Ok(())
    }
}

/// Merges the series of `blocks` by labels. Only labels and chunk
/// positions are read up front; each series' chunk bytes are read when the
/// block writer takes it, copied as they are, or re-encoded where they
/// overlap.
fn merge_blocks(
    blocks: &[Arc<Block>],
) -> Result<impl Iterator<Item = Result<BlockSeries, Error>> + '_, Error> {
    type Refs = Vec<(usize, crate::block::ChunkMeta)>;
    let mut map: std::collections::BTreeMap<Labels, Refs> = Default::default();
    for (i, b) in blocks.iter().enumerate() {
        for (labels, metas) in b.all_series()? {
            map.entry(labels)
                .or_default()
                .extend(metas.into_iter().map(|m| (i, m)));
        }
    }
    Ok(map.into_iter().map(move |(labels, refs)| {
        let (mut floats, mut hists) = (Vec::new(), Vec::new());
        for (i, m) in refs {
            let c = MemChunk {
                enc: m.enc,
                mint: m.mint,
                maxt: m.maxt,
                data: Arc::from(blocks[i].read_chunk(&m)?),
            };
            if m.enc.is_float() {
                floats.push(c);
            } else {
                hists.push(c);
            }
        }
        Ok(BlockSeries {
            labels,
            floats: rechunk_floats(&floats, i64::MAX, true),
            hists: rechunk_hists(&hists, i64::MAX, true),
        })
    }))
}
