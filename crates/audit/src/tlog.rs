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
//! # Waiting for a checkpoint
//!
//! [`crate::AuditLog::when_checkpointed`] registers a callback per log and
//! size in [`Waiters`] (a std mutex around a map: registration and the
//! checkpointer's publication are both a few map operations, and no thread
//! ever blocks on it for I/O). After writing a checkpoint, the checkpointer
//! publishes it and calls, outside the lock, every callback whose size it
//! covers; a registration that the latest published checkpoint already
//! covers is answered at once. No thread is parked per waiter, so any
//! number of callers (the server: one oneshot each) can wait.
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

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use diskio::Faults;
use merkle::tiles::{BundleId, TileId, encode_entry_bundle, encode_tile};
use merkle::{Checkpoint, CompactRange, Hash, Note, SignerKey, leaf_hash};

use crate::error::AuditError;
use crate::event::LogKey;
use crate::files;
use crate::index;
use crate::keys::{self, Keyring};
use crate::proof::SignedCheckpoint;
use crate::segment::{self, Repair};
use crate::witness::{self, Recent};

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

/// The verifier key string (`<name>+<hex id>+<base64 key>`) of the signing
/// key in `audit_dir`, without creating one: for tools reading a data
/// directory.
pub fn read_verifier_key(audit_dir: &Path) -> Result<Option<String>, AuditError> {
    Ok(keys::read_signer(&audit_dir.join(files::SIGNING_KEY))?.map(|k| k.verifier().to_string()))
}

/// The retention floor of a tree directory ([`files::RETAINED`]; 0 when
/// absent).
pub(crate) fn read_retained(dir: &Path) -> Result<u64, AuditError> {
    let path = dir.join(files::RETAINED);
    match fs::read_to_string(&path) {
        Ok(s) => s
            .trim_end()
            .parse()
            .map_err(|_| AuditError::corrupt(&path, 0, "not a decimal entry index")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(AuditError::io(&path, e)),
    }
}

/// A file of the public read layout of the log in `log_dir` (a directory
/// under `tlog/`): `checkpoint` (with its cosignatures), `retained` (the
/// retention floor, when retention removed entries),
/// `witnessed/<key ID, 8 lower-case hex digits>` (the newest checkpoint
/// that witness cosigned), or a canonical tile or entry bundle path.
/// `Ok(None)` when absent or when `rel` is none of these, so nothing else
/// can be named. The server serves exactly this, and `verify::dir_fetcher`
/// reads through it, so a data directory and its server look the same to
/// a verifier.
pub fn read_log_file(log_dir: &Path, rel: &str) -> Result<Option<Vec<u8>>, AuditError> {
    if rel == files::CHECKPOINT {
        return witness::served_checkpoint(log_dir);
    }
    if rel == files::RETAINED {
        return match fs::read(log_dir.join(files::RETAINED)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AuditError::io(log_dir.join(files::RETAINED), e)),
        };
    }
    if let Some(id) = rel.strip_prefix(WITNESSED_PREFIX) {
        let canonical = id.len() == 8 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        return match u32::from_str_radix(id, 16) {
            Ok(id) if canonical => witness::witnessed_by(log_dir, id),
            _ => Ok(None),
        };
    }
    match merkle::tiles::parse_tile_path(rel) {
        Ok(path) => read_tile(log_dir, &path),
        Err(_) => Ok(None),
    }
}

/// A hash tile or entry bundle of the log in `log_dir`. A partial one that
/// is gone because its full tile was written since (see
/// [`Tree::write_full`]) is read as the prefix of that full tile: the first
/// `W` hashes or entries of a tile are the same at every width, so the
/// bytes are those the partial file held.
pub(crate) fn read_tile(
    log_dir: &Path,
    path: &merkle::TilePath,
) -> Result<Option<Vec<u8>>, AuditError> {
    let read = |rel: String| {
        let full = log_dir.join(rel);
        match fs::read(&full) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AuditError::io(full, e)),
        }
    };
    match path {
        merkle::TilePath::Hash(t) => {
            if let Some(b) = read(t.path())? {
                return Ok(Some(b));
            }
            if t.width() == 256 {
                return Ok(None);
            }
            let Ok(full) = TileId::new(t.level(), t.index(), 256) else {
                return Ok(None);
            };
            Ok(read(full.path())?
                .filter(|b| b.len() == full.byte_len())
                .map(|mut b| {
                    b.truncate(t.byte_len());
                    b
                }))
        }
        merkle::TilePath::Entries(bundle) => {
            if let Some(b) = read(bundle.path())? {
                return Ok(Some(b));
            }
            if bundle.width() == 256 {
                return Ok(None);
            }
            let Ok(full) = BundleId::new(bundle.index(), 256) else {
                return Ok(None);
            };
            let Some(data) = read(full.path())? else {
                return Ok(None);
            };
            let corrupt = |e: String| AuditError::corrupt(log_dir.join(full.path()), 0, e);
            let entries =
                merkle::tiles::decode_entry_bundle(&data).map_err(|e| corrupt(e.to_string()))?;
            let Some(prefix) = entries.get(..bundle.width() as usize) else {
                return Ok(None);
            };
            encode_entry_bundle(prefix)
                .map(Some)
                .map_err(|e| corrupt(e.to_string()))
        }
    }
}

/// Public path prefix of a witness's newest cosigned checkpoint.
pub const WITNESSED_PREFIX: &str = "witnessed/";

/// The origin line of `log`'s checkpoints.
pub fn origin(tlog_name: &str, log: &LogKey) -> String {
    format!("{tlog_name}/{}", files::tlog_log_dir(log))
}

/// Writes the tlog-tiles directory of `log` under `audit_dir` from its
/// entries (in `log_index` order) with the checkpointer's own code: the
/// write-once full and partial tiles and bundles, then a checkpoint signed
/// by `signer` with origin `<tlog_name>/org` or `<tlog_name>/p/<slug>`.
/// The files are those a log holds after these entries were appended; no
/// segment or index is written. For benchmarks and tools that need a large
/// log quickly. The log must have no checkpoint yet.
pub fn write_log(
    audit_dir: &Path,
    tlog_name: &str,
    signer: &SignerKey,
    log: &LogKey,
    entries: impl IntoIterator<Item = Vec<u8>>,
) -> Result<SignedCheckpoint, AuditError> {
    let mut tree = Tree::new(&audit_dir.join(files::TLOG_DIR), tlog_name, log)?;
    if tree.checkpointed.is_some() {
        return Err(AuditError::corrupt(
            tree.dir.join(files::CHECKPOINT),
            0,
            "write_log needs a log without files; this one has a checkpoint",
        ));
    }
    let faults = Faults::disabled();
    for (i, entry) in (0u64..).zip(entries) {
        tree.push(i, entry)
            .map_err(|reason| AuditError::corrupt(&tree.dir, i, reason))?;
        if !tree.pending.is_empty() {
            tree.write_full(&faults, false)?;
        }
    }
    tree.flush(signer, &Recent::default(), &faults)?
        .ok_or_else(|| AuditError::corrupt(&tree.dir, 0, "write_log got no entries"))
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
    if let Some(parent) = path.parent()
        && !dirs.iter().any(|d| d == parent)
    {
        fs::create_dir_all(parent).map_err(|e| AuditError::io(parent, e))?;
        dirs.push(parent.to_path_buf());
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

/// Removes the directory of a full tile's or bundle's partial versions
/// (`<path>.p/`), if there is one. Best effort and not fsynced: a partial
/// file that survives (or comes back after a crash) holds the right bytes
/// and is removed with the next write of its full tile (at the latest on
/// the replay at open).
fn remove_partials(dir: &Path) {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!(path = %dir.display(), error = %e, "could not list superseded partial tiles");
            return;
        }
    };
    for e in entries.flatten() {
        if let Err(err) = fs::remove_file(e.path()) {
            tracing::warn!(path = %e.path().display(), error = %err, "could not delete a superseded partial tile");
        }
    }
    if let Err(e) = fs::remove_dir(dir) {
        tracing::warn!(path = %dir.display(), error = %e, "could not delete a superseded partial tile directory");
    }
}

/// One log's tree: the compact range and the right edge of every tile
/// level. Owned by the checkpointer thread (or by `open` before it starts).
struct Tree {
    dir: PathBuf,
    /// The directory name under `tlog/` (`org`, `p/<slug>`).
    rel: String,
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
    /// Entries below this index were removed by retention: their bundles
    /// are never (re)written.
    retained_from: u64,
    /// The checkpoint found on disk at open, until it is published.
    on_disk: Option<SignedCheckpoint>,
    /// Key ID of the signature on the checkpoint on disk: when it is not
    /// the current signer's (a key rotation), the checkpoint is re-signed.
    signed_by: Option<u32>,
    /// Set at open when the checkpoint on disk covers more entries than
    /// the segments hold: the log lost acknowledged events. Signing a
    /// smaller tree would be a fork, so this log's tree is frozen (no
    /// more tiles or checkpoints) until an operator restores the segments.
    frozen: bool,
}

impl Tree {
    fn new(tlog_dir: &Path, tlog_name: &str, log: &LogKey) -> Result<Tree, AuditError> {
        let rel = files::tlog_log_dir(log);
        let dir = tlog_dir.join(&rel);
        let cp_path = dir.join(files::CHECKPOINT);
        let (on_disk, signed_by) = match fs::read(&cp_path) {
            Ok(bytes) => {
                let by = Note::parse(&bytes)
                    .ok()
                    .and_then(|n| n.signatures().first().map(|s| s.key_id));
                let cp = SignedCheckpoint::parse(bytes).ok_or_else(|| {
                    AuditError::corrupt(&cp_path, 0, "not a signed tlog checkpoint")
                })?;
                (Some(cp), by)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None),
            Err(e) => return Err(AuditError::io(&cp_path, e)),
        };
        let checkpointed = on_disk.as_ref().map(|c| c.size);
        let retained_from = read_retained(&dir)?;
        Ok(Tree {
            retained_from,
            dir,
            rel,
            origin: origin(tlog_name, log),
            range: CompactRange::new(0),
            levels: Vec::new(),
            entries: Vec::new(),
            pending: Vec::new(),
            checkpointed,
            on_disk,
            signed_by,
            frozen: false,
        })
    }

    fn size(&self) -> u64 {
        self.range.end()
    }

    fn push(&mut self, index: u64, bytes: Vec<u8>) -> Result<(), String> {
        self.push_leaf(index, leaf_hash(&bytes), Some(bytes))
    }

    /// Appends a leaf; `bytes` is `None` for an entry retention removed
    /// (only its hash is left), whose bundle is then not written.
    fn push_leaf(&mut self, index: u64, hash: Hash, bytes: Option<Vec<u8>>) -> Result<(), String> {
        if index != self.size() {
            return Err(format!(
                "log_index {index} arrived while the tree has {} leaves",
                self.size()
            ));
        }
        let (levels, pending) = (&mut self.levels, &mut self.pending);
        self.range
            .append_with(hash, |id, h| {
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
        let Some(bytes) = bytes.filter(|_| index >= self.retained_from) else {
            // Retention removed this bundle; keep nothing of it.
            self.entries.clear();
            return Ok(());
        };
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
        // Each full file is durable now: its partial versions may go
        // (C2SP tlog-tiles: a log "MAY delete any partial tile once the
        // corresponding full tile is available"). Readers that still ask
        // for one get the prefix of the full file ([`read_tile`]).
        for (rel, _) in self.pending.drain(..) {
            remove_partials(&self.dir.join(format!("{rel}.p")));
        }
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

    /// Whether the checkpoint on disk needs writing: a new size, or the
    /// same size signed by a key that is no longer the signer.
    fn needs_checkpoint(&self, signer: u32) -> bool {
        let size = self.size();
        !self.frozen
            && size > 0
            && (self.checkpointed != Some(size) || self.signed_by != Some(signer))
    }

    /// Brings the files up to the current size: full and partial tiles and
    /// bundles, then the signed checkpoint (also re-signed, same text, when
    /// the signing key changed), which it returns when it wrote one.
    /// Remembers the new checkpoint in `recent`.
    fn flush(
        &mut self,
        signer: &SignerKey,
        recent: &Recent,
        faults: &Faults,
    ) -> Result<Option<SignedCheckpoint>, AuditError> {
        if self.frozen {
            return Ok(None);
        }
        self.write_full(faults, false)?;
        let size = self.size();
        if !self.needs_checkpoint(signer.key_id()) {
            return Ok(None);
        }
        if self.checkpointed != Some(size) {
            self.write_partials(faults, false)?;
        }
        let bad = |e: String| AuditError::corrupt(&self.dir, size, e);
        let root = self.range.root().map_err(|e| bad(e.to_string()))?;
        let note = Checkpoint::new(&self.origin, size, root)
            .and_then(|c| c.sign(&[signer]))
            .map_err(|e| bad(e.to_string()))?;
        let path = self.dir.join(files::CHECKPOINT);
        diskio::atomic_write(&path, &note, faults).map_err(|e| AuditError::io(&path, e))?;
        self.checkpointed = Some(size);
        self.signed_by = Some(signer.key_id());
        recent.record(&self.rel, note.clone());
        Ok(Some(SignedCheckpoint {
            note,
            origin: self.origin.clone(),
            size,
            root,
        }))
    }
}

/// Every log's tree, and how to sign and write them.
pub(crate) struct Trees {
    tlog_dir: PathBuf,
    tlog_name: String,
    /// Shared with [`crate::AuditLog`], which may rotate the key: every
    /// flush signs with the current signer.
    keys: Arc<Mutex<Keyring>>,
    recent: Arc<Recent>,
    faults: Faults,
    trees: HashMap<String, Tree>,
    /// Callbacks waiting for checkpoints, shared with [`crate::AuditLog`].
    waiters: Arc<Waiters>,
    /// Set once every tree of the segments is rebuilt.
    recovered: bool,
}

/// Compares a rebuilt tree with the checkpoint found on disk: if the
/// checkpoint covers more entries than the tree holds, acknowledged events
/// were lost and the tree is frozen (see [`Tree::frozen`]); else that
/// checkpoint is published to the waiters. Returns whether the tree may go on.
fn settle(log: &str, tree: &mut Tree, waiters: &Waiters) -> bool {
    let on_disk = tree.on_disk.take();
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
        waiters.freeze(log);
        return false;
    }
    if let Some(cp) = on_disk {
        waiters.publish(log, cp);
    }
    true
}

impl Trees {
    /// Rebuilds every tree from the segments of `audit_dir` (already
    /// repaired), writing missing full tiles and bundles on the way.
    pub(crate) fn recover(
        audit_dir: &Path,
        tlog_name: &str,
        keys: Arc<Mutex<Keyring>>,
        recent: Arc<Recent>,
        faults: Faults,
        waiters: Arc<Waiters>,
    ) -> Result<Trees, AuditError> {
        let mut trees = Trees {
            tlog_dir: audit_dir.join(files::TLOG_DIR),
            tlog_name: tlog_name.to_string(),
            keys,
            recent,
            faults,
            trees: HashMap::new(),
            waiters,
            recovered: false,
        };
        let faults = trees.faults.clone();
        segment::walk(audit_dir, 0, Repair::ReadOnly, |f| {
            let log = index::log_text(&LogKey::of(f.event.project.as_deref()));
            let seg_path = audit_dir.join(files::segment_name(f.segment));
            let tree = trees.tree(&log)?;
            match f.expired {
                Some(h) => tree.push_leaf(f.event.log_index, h, None),
                None => tree.push(
                    f.event.log_index,
                    crate::personal::split_payload(&f.bytes).0.to_vec(),
                ),
            }
            .map_err(|reason| AuditError::corrupt(&seg_path, f.offset, reason))?;
            // Existing files are trusted here (a tree that lost entries
            // has all its full files below its old checkpoint already).
            tree.write_full(&faults, true)
        })?;
        for (log, tree) in trees.trees.iter_mut() {
            if settle(log, tree, &trees.waiters) {
                tree.write_partials(&faults, true)?;
            }
        }
        trees.recovered = true;
        Ok(trees)
    }

    fn tree(&mut self, log_text: &str) -> Result<&mut Tree, AuditError> {
        if !self.trees.contains_key(log_text) {
            let log = index::parse_log_text(log_text).ok_or_else(|| {
                AuditError::corrupt(&self.tlog_dir, 0, format!("bad log name {log_text:?}"))
            })?;
            let mut t = Tree::new(&self.tlog_dir, &self.tlog_name, &log)?;
            if self.recovered {
                // A log first seen after recovery had no event in the
                // segments: a checkpoint on disk means it lost them all.
                settle(log_text, &mut t, &self.waiters);
            }
            self.trees.insert(log_text.to_string(), t);
        }
        match self.trees.get_mut(log_text) {
            Some(t) => Ok(t),
            None => unreachable!("bug: the tree was inserted just above"),
        }
    }

    fn signer(&self) -> Option<SignerKey> {
        match self.keys.lock() {
            Ok(k) => Some(k.current.clone()),
            Err(_) => {
                tracing::error!("bug: the signing keyring lock is poisoned; no checkpoints");
                None
            }
        }
    }

    fn dirty(&self) -> bool {
        let id = self.signer().map(|s| s.key_id());
        self.trees.values().any(|t| {
            !t.frozen && (id.is_some_and(|id| t.needs_checkpoint(id)) || !t.pending.is_empty())
        })
    }

    /// Flushes every changed tree; on failure the others are still tried
    /// and the failed ones retried next time.
    fn flush_all(&mut self) -> bool {
        let Some(signer) = self.signer() else {
            return false;
        };
        let started = Instant::now();
        let mut ok = true;
        for (log, t) in self.trees.iter_mut() {
            match t.flush(&signer, &self.recent, &self.faults) {
                Ok(Some(cp)) => self.waiters.publish(log, cp),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, log = %t.origin, "could not write the audit transparency log; retrying");
                    ok = false;
                }
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
    /// An empty batch is a wake-up (after a key rotation: re-sign every
    /// checkpoint).
    pub(crate) fn run(mut self, rx: Receiver<Leaves>, interval: Duration) {
        // However the thread ends, nobody is left waiting for a checkpoint.
        let _close = CloseWaiters(self.waiters.clone());
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

/// A log's name in messages: its tree directory (`org`, `p/<slug>`).
fn shown(log_text: &str) -> String {
    index::parse_log_text(log_text)
        .map_or_else(|| log_text.to_string(), |k| files::tlog_log_dir(&k))
}

/// Closes [`Waiters`] when the checkpointer ends, however it ends.
struct CloseWaiters(Arc<Waiters>);

impl Drop for CloseWaiters {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A callback of [`crate::AuditLog::when_checkpointed`]: called once, with
/// the first signed checkpoint of the log whose size is at least the one
/// asked for, or with the reason none will come.
pub type CheckpointDone = Box<dyn FnOnce(Result<SignedCheckpoint, AuditError>) + Send>;

/// Callbacks waiting for checkpoints, per log (keyed by
/// [`index::log_text`]), and the latest checkpoint published per log.
/// Shared by [`crate::AuditLog`] (registration) and the checkpointer
/// (publication); the mutex is held only for map operations, never while
/// a callback runs.
#[derive(Default)]
pub(crate) struct Waiters {
    state: Mutex<WaitState>,
}

#[derive(Default)]
struct WaitState {
    /// The latest checkpoint published per log.
    latest: HashMap<String, SignedCheckpoint>,
    /// Callbacks per log, with the size each waits for.
    waiting: HashMap<String, Vec<(u64, CheckpointDone)>>,
    /// Logs that get no new checkpoints (see [`Tree::frozen`]).
    frozen: HashSet<String>,
    /// Set when the checkpointer has ended: no checkpoint will come.
    closed: bool,
}

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, WaitState> {
        // A callback never runs under the lock, so a poisoned lock only
        // means a panic in a map operation: the state is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls `done` with the first checkpoint of `log` of at least `size`:
    /// at once if the latest one is, else when the checkpointer writes it.
    pub(crate) fn register(&self, log: String, size: u64, done: CheckpointDone) {
        let answer = {
            let mut st = self.lock();
            if st.frozen.contains(&log) {
                Err(AuditError::LogFrozen { log: shown(&log) })
            } else {
                match st.latest.get(&log) {
                    Some(cp) if cp.size >= size => Ok(cp.clone()),
                    _ if st.closed => Err(AuditError::Closed),
                    _ => {
                        st.waiting.entry(log).or_default().push((size, done));
                        return;
                    }
                }
            }
        };
        done(answer);
    }

    /// A new checkpoint of `log`: answers every callback it covers.
    pub(crate) fn publish(&self, log: &str, cp: SignedCheckpoint) {
        let ready: Vec<CheckpointDone> = {
            let mut st = self.lock();
            let ready = match st.waiting.get_mut(log) {
                Some(w) => {
                    let (ready, rest): (Vec<_>, Vec<_>) =
                        w.drain(..).partition(|(size, _)| *size <= cp.size);
                    *w = rest;
                    ready.into_iter().map(|(_, d)| d).collect()
                }
                None => Vec::new(),
            };
            st.latest.insert(log.to_string(), cp.clone());
            ready
        };
        for done in ready {
            done(Ok(cp.clone()));
        }
    }

    /// `log` gets no more checkpoints: its waiters fail now and later.
    pub(crate) fn freeze(&self, log: &str) {
        let waiting = {
            let mut st = self.lock();
            st.frozen.insert(log.to_string());
            st.waiting.remove(log).unwrap_or_default()
        };
        for (_, done) in waiting {
            done(Err(AuditError::LogFrozen { log: shown(log) }));
        }
    }

    /// No checkpoint will come any more: every waiter fails with `Closed`.
    pub(crate) fn close(&self) {
        let waiting: Vec<_> = {
            let mut st = self.lock();
            st.closed = true;
            st.waiting.drain().flat_map(|(_, w)| w).collect()
        };
        for (_, done) in waiting {
            done(Err(AuditError::Closed));
        }
    }
}
