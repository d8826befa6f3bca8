//! The transparency logs: one RFC 6962 tree per [`LogKey`] over the stored
//! canonical bytes of its events in `log_index` order, kept on disk as C2SP
//! tlog-tiles (`docs/format/audit-tlog.md`) and signed as C2SP checkpoints.
//!
//! # Flow
//!
//! The indexer thread hands every durable batch (log, `log_index`, bytes)
//! to the checkpointer thread (a plain thread: no tokio in this crate).
//! The checkpointer appends the leaves to each log's compact range; the
//! append visitor hands it every completed node at a tile level, so full
//! hash tiles and full entry bundles are known the moment they fill. At
//! most [`crate::Options::checkpoint_interval`] after the first unflushed
//! leaf it writes, per changed log: the new full tiles and bundles
//! (write-once), the partial ones at the new size (separate files, named
//! by width, so also write-once), then the signed checkpoint (replaced
//! atomically). A checkpoint therefore never names a size whose tiles are
//! not on disk.
//!
//! # Recovery
//!
//! Tiles are a pure function of the leaves, so they are derived data: on
//! open every event is read back from the segments and replayed through
//! the same code, writing only files that are missing. A file that exists
//! with bytes other than the ones computed is never replaced; writing it
//! fails with [`AuditError::Corrupt`] (logged; retried every interval). A
//! checkpoint on disk larger than the segments' tree means the segments
//! lost acknowledged entries: that log's tree is frozen (an error is
//! logged, no more checkpoints are signed for it, appends go on) rather
//! than signing a fork.
//! Cost: one read of the segments at open, O(events).
//!
//! # Names
//!
//! The signer key name is [`crate::Options::tlog_name`] when the key is
//! created (default `flightdeck`) and stays the one stored in the key file.
//! Origins are `<tlog_name>/org` and `<tlog_name>/p/<slug>`: the same
//! relative names as the tree directories ([`files::tlog_log_dir`]).

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use diskio::Faults;
use merkle::tiles::{BundleId, TileId, encode_entry_bundle, encode_tile};
use merkle::{Checkpoint, CompactRange, Hash, Note, SignerKey, leaf_hash};

use crate::error::AuditError;
use crate::event::LogKey;
use crate::files;
use crate::index;
use crate::segment::{self, Repair};

/// Durable events handed to the checkpointer together.
pub(crate) struct Leaves {
    /// When they were durable (about when they are acknowledged): the
    /// checkpoint covering them is due `checkpoint_interval` after this.
    pub durable_at: Instant,
    pub leaves: Vec<Leaf>,
}

/// Most threads writing a flush's full tiles and bundles...
const WRITE_THREADS: usize = 4;
/// ... one per this many files.
const FILES_PER_THREAD: usize = 16;

/// One durable event, as the checkpointer needs it.
pub(crate) struct Leaf {
    /// [`index::log_text`] of the event's log.
    pub log: String,
    pub index: u64,
    pub bytes: Vec<u8>,
}

/// Loads the signer key of `audit_dir`, creating it (mode 0600, seed from
/// the OS) when absent. The key is never logged.
pub(crate) fn load_or_create_key(audit_dir: &Path, name: &str) -> Result<SignerKey, AuditError> {
    let path = audit_dir.join(files::SIGNING_KEY);
    match read_key(&path)? {
        Some(k) => Ok(k),
        None => {
            let mut seed = [0u8; 32];
            rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut seed).map_err(|e| {
                AuditError::io(&path, std::io::Error::other(format!("OS randomness: {e}")))
            })?;
            let key = SignerKey::from_seed(name, &seed).map_err(|e| {
                AuditError::corrupt(&path, 0, format!("bad signer key name {name:?}: {e}"))
            })?;
            let mut text = key.to_skey_string();
            text.push('\n');
            let tmp = audit_dir.join(format!("{}.tmp", files::SIGNING_KEY));
            let _ = fs::remove_file(&tmp);
            let write = || -> std::io::Result<()> {
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(text.as_bytes())?;
                f.sync_all()?;
                fs::rename(&tmp, &path)?;
                diskio::fsync_dir(audit_dir)
            };
            write().map_err(|e| AuditError::io(&path, e))?;
            Ok(key)
        }
    }
}

fn read_key(path: &Path) -> Result<Option<SignerKey>, AuditError> {
    match fs::read_to_string(path) {
        Ok(text) => SignerKey::parse(text.trim_end())
            .map(Some)
            .map_err(|e| AuditError::corrupt(path, 0, format!("not a signer key: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AuditError::io(path, e)),
    }
}

/// The verifier key string (`<name>+<hex id>+<base64 key>`) of the signing
/// key in `audit_dir`, without creating one: for tools reading a data
/// directory.
pub fn read_verifier_key(audit_dir: &Path) -> Result<Option<String>, AuditError> {
    Ok(read_key(&audit_dir.join(files::SIGNING_KEY))?.map(|k| k.verifier().to_string()))
}

/// The origin line of `log`'s checkpoints.
pub fn origin(tlog_name: &str, log: &LogKey) -> String {
    format!("{tlog_name}/{}", files::tlog_log_dir(log))
}

/// Writes `bytes` at `path` unless an identical file is there; a file with
/// other bytes is never replaced. With `trust_existing`, an existing file
/// is not read back (replay at open, where re-reading every tile would
/// double the cost). The new name is durable only once `path`'s directory,
/// added to `dirs`, is fsynced ([`sync_dirs`]): a flush writes many files
/// into a few directories and fsyncs each directory once.
fn write_once(
    path: &Path,
    bytes: &[u8],
    faults: &Faults,
    trust_existing: bool,
    dirs: &mut Vec<PathBuf>,
) -> Result<(), AuditError> {
    match fs::read(path) {
        Ok(_) if trust_existing => return Ok(()),
        Ok(old) if old == bytes => return Ok(()),
        Ok(_) => {
            return Err(AuditError::corrupt(
                path,
                0,
                "a write-once tlog file exists with other bytes than its leaves give; it was left alone",
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(AuditError::io(path, e)),
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| AuditError::io(parent, e))?;
        if !dirs.iter().any(|d| d == parent) {
            dirs.push(parent.to_path_buf());
        }
    }
    diskio::atomic_write_defer_dir_sync(path, bytes, faults).map_err(|e| AuditError::io(path, e))
}

/// Fsyncs every directory [`write_once`] wrote into, making the new names
/// durable.
fn sync_dirs(dirs: Vec<PathBuf>, faults: &Faults) -> Result<(), AuditError> {
    for d in dirs {
        faults
            .check_fsync(&d.display().to_string())
            .and_then(|()| diskio::fsync_dir(&d))
            .map_err(|e| AuditError::io(&d, e))?;
    }
    Ok(())
}

/// One log's tree: the compact range and the right edge of every tile
/// level. Owned by the checkpointer thread (or by `open` before it starts).
struct Tree {
    dir: PathBuf,
    origin: String,
    range: CompactRange,
    /// Per tile level, the hashes of its incomplete (rightmost) tile.
    levels: Vec<Vec<Hash>>,
    /// Entries of the incomplete (rightmost) entry bundle.
    entries: Vec<Vec<u8>>,
    /// Full tiles and bundles not yet on disk: relative path and bytes.
    pending: Vec<(String, Vec<u8>)>,
    /// Tree size of the checkpoint on disk (`None`: no checkpoint yet).
    checkpointed: Option<u64>,
    /// Set at open when the checkpoint on disk covers more entries than
    /// the segments hold: the log lost acknowledged events. Signing a
    /// smaller tree would be a fork, so this log's tree is frozen (no
    /// more tiles or checkpoints) until an operator restores the segments.
    frozen: bool,
}

impl Tree {
    fn new(tlog_dir: &Path, tlog_name: &str, log: &LogKey) -> Result<Tree, AuditError> {
        let dir = tlog_dir.join(files::tlog_log_dir(log));
        let cp_path = dir.join(files::CHECKPOINT);
        let checkpointed = match fs::read(&cp_path) {
            Ok(bytes) => {
                let size = Note::parse(&bytes)
                    .ok()
                    .and_then(|n| Checkpoint::parse(n.text()).ok())
                    .map(|c| c.size())
                    .ok_or_else(|| {
                        AuditError::corrupt(&cp_path, 0, "not a signed tlog checkpoint")
                    })?;
                Some(size)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(AuditError::io(&cp_path, e)),
        };
        Ok(Tree {
            dir,
            origin: origin(tlog_name, log),
            range: CompactRange::new(0),
            levels: Vec::new(),
            entries: Vec::new(),
            pending: Vec::new(),
            checkpointed,
            frozen: false,
        })
    }

    fn size(&self) -> u64 {
        self.range.end()
    }

    fn push(&mut self, index: u64, bytes: Vec<u8>) -> Result<(), String> {
        if index != self.size() {
            return Err(format!(
                "log_index {index} arrived while the tree has {} leaves",
                self.size()
            ));
        }
        let (levels, pending) = (&mut self.levels, &mut self.pending);
        self.range
            .append_with(leaf_hash(&bytes), |id, h| {
                if id.level % 8 != 0 {
                    return;
                }
                let l = usize::from(id.level / 8);
                if levels.len() <= l {
                    levels.resize(l + 1, Vec::new());
                }
                levels[l].push(*h);
                if levels[l].len() == 256 {
                    if let Ok(t) = TileId::new(id.level / 8, id.index / 256, 256) {
                        pending.push((t.path(), encode_tile(&levels[l])));
                    }
                    levels[l].clear();
                }
            })
            .map_err(|e| e.to_string())?;
        self.entries.push(bytes);
        if self.entries.len() == 256 {
            let b = BundleId::new(index / 256, 256).map_err(|e| e.to_string())?;
            let data = encode_entry_bundle(&self.entries).map_err(|e| e.to_string())?;
            self.pending.push((b.path(), data));
            self.entries.clear();
        }
        Ok(())
    }

    /// Writes the full tiles and bundles completed so far.
    fn write_full(&mut self, faults: &Faults, trust_existing: bool) -> Result<(), AuditError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // Each file costs an fsync, which mostly waits for the device: a
        // few writer threads overlap those waits when there are many (a
        // busy log fills ~200 files a second).
        let dir = &self.dir;
        let write = |files: &[(String, Vec<u8>)]| {
            let mut dirs = Vec::new();
            let res = files.iter().try_for_each(|(rel, bytes)| {
                write_once(&dir.join(rel), bytes, faults, trust_existing, &mut dirs)
            });
            (res, dirs)
        };
        let threads = WRITE_THREADS.min(self.pending.len().div_ceil(FILES_PER_THREAD));
        let results: Vec<(Result<(), AuditError>, Vec<PathBuf>)> = if threads <= 1 {
            vec![write(&self.pending)]
        } else {
            let chunk = self.pending.len().div_ceil(threads);
            std::thread::scope(|s| {
                let handles: Vec<_> = self
                    .pending
                    .chunks(chunk)
                    .map(|files| s.spawn(move || write(files)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| match h.join() {
                        Ok(r) => r,
                        Err(_) => (
                            Err(AuditError::corrupt(
                                dir,
                                0,
                                "bug: a tile writer thread panicked",
                            )),
                            Vec::new(),
                        ),
                    })
                    .collect()
            })
        };
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut first_err = None;
        for (res, ds) in results {
            for d in ds {
                if !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
            if let Err(e) = res {
                first_err.get_or_insert(e);
            }
        }
        // What was renamed into place is made durable even if another file
        // failed; then all stay pending (rewriting an identical file is a
        // no-op) until a flush writes every one.
        let synced = sync_dirs(dirs, faults);
        if let Some(e) = first_err {
            return Err(e);
        }
        synced?;
        self.pending.clear();
        Ok(())
    }

    /// Writes the partial tile of every level and the partial bundle at
    /// the current size (each name carries its width, so these are
    /// write-once files too).
    fn write_partials(&self, faults: &Faults, trust_existing: bool) -> Result<(), AuditError> {
        let size = self.size();
        let mut dirs = Vec::new();
        for (l, hashes) in self.levels.iter().enumerate() {
            if hashes.is_empty() {
                continue;
            }
            let at_level = size >> (8 * l);
            let tile = TileId::new(l as u8, at_level / 256, hashes.len() as u64)
                .map_err(|e| AuditError::corrupt(&self.dir, size, e.to_string()))?;
            write_once(
                &self.dir.join(tile.path()),
                &encode_tile(hashes),
                faults,
                trust_existing,
                &mut dirs,
            )?;
        }
        if !self.entries.is_empty() {
            let b = BundleId::new(size / 256, self.entries.len() as u64)
                .map_err(|e| AuditError::corrupt(&self.dir, size, e.to_string()))?;
            let data = encode_entry_bundle(&self.entries)
                .map_err(|e| AuditError::corrupt(&self.dir, size, e.to_string()))?;
            write_once(
                &self.dir.join(b.path()),
                &data,
                faults,
                trust_existing,
                &mut dirs,
            )?;
        }
        sync_dirs(dirs, faults)
    }

    /// Brings the files up to the current size: full and partial tiles and
    /// bundles, then the signed checkpoint.
    fn flush(&mut self, signer: &SignerKey, faults: &Faults) -> Result<(), AuditError> {
        if self.frozen {
            return Ok(());
        }
        self.write_full(faults, false)?;
        let size = self.size();
        if self.checkpointed == Some(size) || size == 0 {
            return Ok(());
        }
        self.write_partials(faults, false)?;
        let bad = |e: String| AuditError::corrupt(&self.dir, size, e);
        let root = self.range.root().map_err(|e| bad(e.to_string()))?;
        let note = Checkpoint::new(&self.origin, size, root)
            .and_then(|c| c.sign(&[signer]))
            .map_err(|e| bad(e.to_string()))?;
        let path = self.dir.join(files::CHECKPOINT);
        diskio::atomic_write(&path, &note, faults).map_err(|e| AuditError::io(&path, e))?;
        self.checkpointed = Some(size);
        Ok(())
    }
}

/// Every log's tree, and how to sign and write them.
pub(crate) struct Trees {
    tlog_dir: PathBuf,
    tlog_name: String,
    signer: SignerKey,
    faults: Faults,
    trees: HashMap<String, Tree>,
}

impl Trees {
    /// Rebuilds every tree from the segments of `audit_dir` (already
    /// repaired), writing missing full tiles and bundles on the way.
    pub(crate) fn recover(
        audit_dir: &Path,
        tlog_name: &str,
        signer: SignerKey,
        faults: Faults,
    ) -> Result<Trees, AuditError> {
        let mut trees = Trees {
            tlog_dir: audit_dir.join(files::TLOG_DIR),
            tlog_name: tlog_name.to_string(),
            signer,
            faults,
            trees: HashMap::new(),
        };
        let faults = trees.faults.clone();
        segment::walk(audit_dir, 0, Repair::ReadOnly, |f| {
            let log = index::log_text(&LogKey::of(f.event.project.as_deref()));
            let seg_path = audit_dir.join(files::segment_name(f.segment));
            let tree = trees.tree(&log)?;
            tree.push(f.event.log_index, f.bytes)
                .map_err(|reason| AuditError::corrupt(&seg_path, f.offset, reason))?;
            // Existing files are trusted here (a tree that lost entries
            // has all its full files below its old checkpoint already).
            tree.write_full(&faults, true)
        })?;
        for tree in trees.trees.values_mut() {
            if let Some(cp) = tree.checkpointed
                && cp > tree.size()
            {
                tracing::error!(
                    log = %tree.origin,
                    checkpoint = cp,
                    entries = tree.size(),
                    "the signed checkpoint covers more entries than the audit segments hold: acknowledged events were lost; this log gets no new checkpoints until the segments are restored"
                );
                tree.frozen = true;
                tree.pending.clear();
                continue;
            }
            tree.write_partials(&faults, true)?;
        }
        Ok(trees)
    }

    fn tree(&mut self, log_text: &str) -> Result<&mut Tree, AuditError> {
        if !self.trees.contains_key(log_text) {
            let log = index::parse_log_text(log_text).ok_or_else(|| {
                AuditError::corrupt(&self.tlog_dir, 0, format!("bad log name {log_text:?}"))
            })?;
            let t = Tree::new(&self.tlog_dir, &self.tlog_name, &log)?;
            self.trees.insert(log_text.to_string(), t);
        }
        match self.trees.get_mut(log_text) {
            Some(t) => Ok(t),
            None => unreachable!("bug: the tree was inserted just above"),
        }
    }

    fn dirty(&self) -> bool {
        self.trees
            .values()
            .any(|t| !t.frozen && (t.checkpointed != Some(t.size()) || !t.pending.is_empty()))
    }

    /// Flushes every changed tree; on failure the others are still tried
    /// and the failed ones retried next time.
    fn flush_all(&mut self) -> bool {
        let started = Instant::now();
        let mut ok = true;
        for t in self.trees.values_mut() {
            if let Err(e) = t.flush(&self.signer, &self.faults) {
                tracing::error!(error = %e, log = %t.origin, "could not write the audit transparency log; retrying");
                ok = false;
            }
        }
        tracing::debug!(
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            ok,
            "audit transparency logs flushed"
        );
        ok
    }

    /// The checkpointer thread: appends leaves as they come and flushes at
    /// most `interval` after the first unflushed one was durable; flushes
    /// once more when the indexer hangs up. Before a flush it takes every
    /// batch already queued, so that leaves that arrived while the previous
    /// flush was writing are covered by the next one without waiting
    /// another interval (and a busy queue never postpones a due flush).
    pub(crate) fn run(mut self, rx: Receiver<Leaves>, interval: Duration) {
        let mut due = self.dirty().then(Instant::now);
        loop {
            let got = match due {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
            };
            match got {
                Ok(batch) => self.take(batch, interval, &mut due),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush_all();
                    return;
                }
            }
            if due.is_some_and(|d| d <= Instant::now()) {
                while let Ok(batch) = rx.try_recv() {
                    self.take(batch, interval, &mut due);
                }
                due = (!self.flush_all()).then(|| Instant::now() + interval);
            }
        }
    }

    /// Appends a batch's leaves; the flush is due `interval` after the
    /// earliest unflushed leaf was durable.
    fn take(&mut self, batch: Leaves, interval: Duration, due: &mut Option<Instant>) {
        for l in batch.leaves {
            let res = self
                .tree(&l.log)
                .map_err(|e| e.to_string())
                .and_then(|t| t.push(l.index, l.bytes));
            if let Err(e) = res {
                tracing::error!(error = %e, "bug: the audit transparency log skipped an event");
            }
        }
        let d = batch.durable_at + interval;
        *due = Some(due.map_or(d, |x| x.min(d)));
    }
}
