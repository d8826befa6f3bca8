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
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diskio::Faults;
use merkle::tiles::{BundleId, TileId, encode_entry_bundle, encode_tile};
use merkle::{Checkpoint, CompactRange, Hash, Note, SignerKey, leaf_hash};

use crate::error::AuditError;
use crate::event::LogKey;
use crate::files;
use crate::index;
use crate::keys::{self, Keyring};
use crate::segment::{self, Repair};
use crate::witness::{self, Recent};

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

/// A file of the public read layout of the log in `log_dir` (a directory
/// under `tlog/`): `checkpoint` (with its cosignatures),
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
    if let Some(id) = rel.strip_prefix(WITNESSED_PREFIX) {
        let canonical = id.len() == 8 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        return match u32::from_str_radix(id, 16) {
            Ok(id) if canonical => witness::witnessed_by(log_dir, id),
            _ => Ok(None),
        };
    }
    let rel = match merkle::tiles::parse_tile_path(rel) {
        Ok(merkle::TilePath::Hash(t)) => t.path(),
        Ok(merkle::TilePath::Entries(b)) => b.path(),
        Err(_) => return Ok(None),
    };
    let full = log_dir.join(rel);
    match fs::read(&full) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AuditError::io(full, e)),
    }
}

/// Public path prefix of a witness's newest cosigned checkpoint.
pub const WITNESSED_PREFIX: &str = "witnessed/";

/// The origin line of `log`'s checkpoints.
pub fn origin(tlog_name: &str, log: &LogKey) -> String {
    format!("{tlog_name}/{}", files::tlog_log_dir(log))
}

/// Writes `bytes` at `path` unless an identical file is there; a file with
/// other bytes is never replaced. With `trust_existing`, an existing file
/// is not read back (replay at open, where re-reading every tile would
/// double the cost).
fn write_once(
    path: &Path,
    bytes: &[u8],
    faults: &Faults,
    trust_existing: bool,
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
    }
    diskio::atomic_write(path, bytes, faults).map_err(|e| AuditError::io(path, e))
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
        let (checkpointed, signed_by) = match fs::read(&cp_path) {
            Ok(bytes) => {
                let note = Note::parse(&bytes).ok();
                let size = note
                    .as_ref()
                    .and_then(|n| Checkpoint::parse(n.text()).ok())
                    .map(|c| c.size())
                    .ok_or_else(|| {
                        AuditError::corrupt(&cp_path, 0, "not a signed tlog checkpoint")
                    })?;
                let by = note.and_then(|n| n.signatures().first().map(|s| s.key_id));
                (Some(size), by)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None),
            Err(e) => return Err(AuditError::io(&cp_path, e)),
        };
        Ok(Tree {
            dir,
            rel,
            origin: origin(tlog_name, log),
            range: CompactRange::new(0),
            levels: Vec::new(),
            entries: Vec::new(),
            pending: Vec::new(),
            checkpointed,
            signed_by,
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
        while let Some((rel, bytes)) = self.pending.first() {
            write_once(&self.dir.join(rel), bytes, faults, trust_existing)?;
            self.pending.remove(0);
        }
        Ok(())
    }

    /// Writes the partial tile of every level and the partial bundle at
    /// the current size (each name carries its width, so these are
    /// write-once files too).
    fn write_partials(&self, faults: &Faults, trust_existing: bool) -> Result<(), AuditError> {
        let size = self.size();
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
            )?;
        }
        if !self.entries.is_empty() {
            let b = BundleId::new(size / 256, self.entries.len() as u64)
                .map_err(|e| AuditError::corrupt(&self.dir, size, e.to_string()))?;
            let data = encode_entry_bundle(&self.entries)
                .map_err(|e| AuditError::corrupt(&self.dir, size, e.to_string()))?;
            write_once(&self.dir.join(b.path()), &data, faults, trust_existing)?;
        }
        Ok(())
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
    /// the signing key changed). Remembers the new checkpoint in `recent`.
    fn flush(
        &mut self,
        signer: &SignerKey,
        recent: &Recent,
        faults: &Faults,
    ) -> Result<(), AuditError> {
        if self.frozen {
            return Ok(());
        }
        self.write_full(faults, false)?;
        let size = self.size();
        if !self.needs_checkpoint(signer.key_id()) {
            return Ok(());
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
        recent.record(&self.rel, note);
        Ok(())
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
    ) -> Result<Trees, AuditError> {
        let mut trees = Trees {
            tlog_dir: audit_dir.join(files::TLOG_DIR),
            tlog_name: tlog_name.to_string(),
            keys,
            recent,
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
        let mut ok = true;
        for t in self.trees.values_mut() {
            if let Err(e) = t.flush(&signer, &self.recent, &self.faults) {
                tracing::error!(error = %e, log = %t.origin, "could not write the audit transparency log; retrying");
                ok = false;
            }
        }
        ok
    }

    /// The checkpointer thread: appends leaves as they come and flushes at
    /// most `interval` after the first unflushed one; flushes once more
    /// when the indexer hangs up. An empty batch is a wake-up (after a key
    /// rotation: re-sign every checkpoint).
    pub(crate) fn run(mut self, rx: Receiver<Vec<Leaf>>, interval: Duration) {
        let mut due = self.dirty().then(Instant::now);
        loop {
            let got = match due {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
            };
            match got {
                Ok(leaves) => {
                    for l in leaves {
                        let res = self
                            .tree(&l.log)
                            .map_err(|e| e.to_string())
                            .and_then(|t| t.push(l.index, l.bytes));
                        if let Err(e) = res {
                            tracing::error!(error = %e, "bug: the audit transparency log skipped an event");
                        }
                    }
                    due.get_or_insert_with(|| Instant::now() + interval);
                }
                Err(RecvTimeoutError::Timeout) => {
                    due = (!self.flush_all()).then(|| Instant::now() + interval);
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush_all();
                    return;
                }
            }
        }
    }
}
