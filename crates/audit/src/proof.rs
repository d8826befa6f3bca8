//! Inclusion and consistency proofs, and receipts, generated from one log's
//! tlog-tiles files on disk (`docs/format/audit-tlog.md`): the same
//! `checkpoint`, hash tiles and entry bundles that the API serves and that
//! `flightdeck audit verify` reads, never an in-memory copy of the leaves.
//!
//! # How a proof is read
//!
//! 1. The log's `checkpoint` is read once: its size `L` is the largest
//!    size that may be proven (asking for more is [`ProofError::TreeSizeTooLarge`]).
//! 2. `merkle`'s proof generation asks [`merkle::TileNodes`] for the
//!    perfect nodes it needs at the requested size `S ≤ L`; each comes from
//!    the hash tile that holds it. The tile is read at the width it has at
//!    `L` (that file exists: a checkpoint is written only after its tiles,
//!    and tiles are never deleted) and cut to its width at `S` (a tile's
//!    first hashes never change as it grows).
//! 3. Proofs against the latest checkpoint are checked against its signed
//!    root before they are returned, and a receipt's entry (read from its
//!    entry bundle) against its leaf hash: a damaged file gives
//!    [`ProofError::Corrupt`] naming it, never a proof that does not verify.
//!
//! Cost: one read of the checkpoint, and of each tile holding a proof node
//! (about `⌈log2(S) / 8⌉ + 1` files of at most 8 KiB), plus one entry bundle
//! for a receipt; O(log S) hashing. No lock is taken: files are write-once
//! and the checkpoint is replaced atomically, so a proof never sees a
//! half-written file, even while the checkpointer runs.

use std::path::{Path, PathBuf};

use merkle::tiles::{BundleId, TileId, decode_entry_bundle};
use merkle::{Checkpoint, Hash, NodeId, NodeSource, Note, ProveError, TileNodes, TileSourceError};

use crate::error::AuditError;
use crate::files;
use crate::receipt::Receipt;

/// A signed checkpoint as read from disk (or just written): the note bytes
/// and what its text says. The signature is the log's own and is not
/// re-verified here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The C2SP signed-note bytes, exactly as served at `<base>checkpoint`.
    pub note: Vec<u8>,
    /// Origin line.
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
}

impl SignedCheckpoint {
    /// Reads the note's text (not its signature); `None` if it is not a
    /// signed tlog checkpoint.
    pub fn parse(note: Vec<u8>) -> Option<SignedCheckpoint> {
        let cp = Checkpoint::parse(Note::parse(&note).ok()?.text()).ok()?;
        Some(SignedCheckpoint {
            origin: cp.origin().to_string(),
            size: cp.size(),
            root: *cp.root(),
            note,
        })
    }

    /// The note as text (it is UTF-8: signed notes are).
    pub fn note_text(&self) -> String {
        String::from_utf8_lossy(&self.note).into_owned()
    }
}

/// Which entry: its position in the log, or the event id (resolved through
/// the search index to its `log_index`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryRef {
    /// A `log_index`.
    Index(u64),
    /// An event id.
    Id(String),
}

/// An RFC 9162 inclusion proof of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// The entry's `log_index`.
    pub index: u64,
    /// The tree size the proof is for.
    pub tree_size: u64,
    /// The entry's leaf hash, `SHA-256(0x00 ‖ entry)`.
    pub leaf_hash: Hash,
    /// The audit path, the leaf's sibling first.
    pub hashes: Vec<Hash>,
    /// The signed checkpoint of size `tree_size`, when that is the latest
    /// one (the default); `None` for an older size (only the latest
    /// checkpoint is kept: verify against one you saved).
    pub checkpoint: Option<SignedCheckpoint>,
}

/// An RFC 9162 consistency proof between two tree sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyProof {
    /// Older size.
    pub from: u64,
    /// Newer size.
    pub to: u64,
    /// The proof hashes (empty when `from == to`).
    pub hashes: Vec<Hash>,
    /// The signed checkpoint of size `to`, when that is the latest one.
    pub checkpoint: Option<SignedCheckpoint>,
}

/// Why a proof or receipt could not be made. Client mistakes (sizes,
/// indexes, ids) carry the input and say how to fix it; `Corrupt` and `Io`
/// are the server's.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The log has no checkpoint yet.
    #[error(
        "the audit log {log} has no signed checkpoint yet: it has no events, or its first event is less than a checkpoint interval (1 s) old"
    )]
    NoCheckpoint {
        /// The log's name (`org`, `p/<slug>`).
        log: String,
    },
    /// A tree size above the latest checkpoint's.
    #[error(
        "{param} {requested} is larger than the latest signed checkpoint of this log (size {latest}); omit it to use the latest"
    )]
    TreeSizeTooLarge {
        /// The parameter (`tree_size`, `to`).
        param: &'static str,
        /// Size asked for.
        requested: u64,
        /// Size of the latest checkpoint.
        latest: u64,
    },
    /// A proof in (or from) the empty tree.
    #[error("{param} must be at least 1: the empty tree has no entries and no proofs")]
    EmptyTree {
        /// The parameter that was 0 (`tree_size`, `from`).
        param: &'static str,
    },
    /// A consistency proof from a larger to a smaller size.
    #[error("from ({from}) must not be larger than to ({to})")]
    SizeOrder {
        /// Older size asked for.
        from: u64,
        /// Newer size asked for.
        to: u64,
    },
    /// An index at or past an explicitly given tree size.
    #[error("{} is not in the tree of size {size}: pick a tree_size above it", entry_name(.index, .id.as_deref()))]
    IndexBeyondTree {
        /// The entry's `log_index`.
        index: u64,
        /// The event id, when the entry was named by id.
        id: Option<String>,
        /// The tree size given.
        size: u64,
    },
    /// An index not covered by the latest checkpoint.
    #[error(
        "log entry {index} is not in the latest signed checkpoint (size {size}): there is no such entry, or it was appended less than a checkpoint interval (1 s) ago"
    )]
    NoSuchIndex {
        /// The index asked for.
        index: u64,
        /// Size of the latest checkpoint.
        size: u64,
    },
    /// The entry was removed by retention: its hash is still in the tree
    /// (inclusion proofs work), its bytes are gone (no receipt).
    #[error(
        "log entry {index} was removed by retention (entries below {floor} are gone; their hashes stay in the tree, so inclusion and consistency proofs still work)"
    )]
    Retained {
        /// The index asked for.
        index: u64,
        /// The log's retention floor.
        floor: u64,
    },
    /// No event with this id in this log.
    #[error("audit event '{id}' not found in this log")]
    NoSuchEvent {
        /// The id asked for.
        id: String,
    },
    /// An event appended after the latest checkpoint.
    #[error(
        "audit event '{id}' (log_index {index}) is not yet in a signed checkpoint (latest size {size}); checkpoints follow appends within 1 s: retry"
    )]
    NotYetCheckpointed {
        /// The event id.
        id: String,
        /// Its `log_index`.
        index: u64,
        /// Size of the latest checkpoint.
        size: u64,
    },
    /// Resolving an id through the search index failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// A tlog file is missing or damaged.
    #[error("audit tlog file {} is missing or damaged: {reason} (check the log with `flightdeck audit verify`)", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A tlog file could not be read.
    #[error("cannot read audit tlog file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn entry_name(index: &u64, id: Option<&str>) -> String {
    match id {
        Some(id) => format!("audit event '{id}' (log_index {index})"),
        None => format!("log entry {index}"),
    }
}

/// Number of hashes at tile level `level` in a tree of `size` leaves.
fn hashes_at_level(size: u64, level: u8) -> u64 {
    size.checked_shr(8 * u32::from(level)).unwrap_or(0)
}

/// One log's tlog-tiles directory (`<data>/audit/tlog/org`,
/// `<data>/audit/tlog/p/<slug>`), read to make proofs and receipts.
#[derive(Debug, Clone)]
pub struct LogFiles {
    dir: PathBuf,
    /// The directory's name under `tlog/`, for messages.
    name: String,
}

impl LogFiles {
    /// The log whose tree directory is `dir`; `name` (e.g. `p/default`)
    /// only appears in messages.
    pub fn new(dir: PathBuf, name: impl Into<String>) -> LogFiles {
        LogFiles {
            dir,
            name: name.into(),
        }
    }

    /// The tree directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, ProofError> {
        let path = self.dir.join(rel);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ProofError::Io { path, source: e }),
        }
    }

    fn corrupt(&self, rel: &str, reason: impl Into<String>) -> ProofError {
        ProofError::Corrupt {
            path: self.dir.join(rel),
            reason: reason.into(),
        }
    }

    /// The latest signed checkpoint.
    pub fn latest(&self) -> Result<SignedCheckpoint, ProofError> {
        let note = self
            .read(files::CHECKPOINT)?
            .ok_or_else(|| ProofError::NoCheckpoint {
                log: self.name.clone(),
            })?;
        SignedCheckpoint::parse(note)
            .ok_or_else(|| self.corrupt(files::CHECKPOINT, "not a signed tlog checkpoint"))
    }

    /// A node source for the tree of `size` leaves, reading each tile at
    /// its width at `latest` (a checkpointed size `>= size`).
    fn nodes(
        &self,
        latest: u64,
        size: u64,
    ) -> TileNodes<impl FnMut(TileId) -> Result<Vec<u8>, ProofError> + '_> {
        TileNodes::new(size, move |t: TileId| {
            let at_latest = hashes_at_level(latest, t.level()) - t.index() * 256;
            let stored = TileId::new(t.level(), t.index(), at_latest.min(256))
                .map_err(|e| self.corrupt(&t.path(), e.to_string()))?;
            let rel = stored.path();
            let mut data = crate::tlog::read_tile(&self.dir, &merkle::TilePath::Hash(stored))
                .map_err(ProofError::Audit)?
                .ok_or_else(|| self.corrupt(&rel, "missing, but the checkpoint needs it"))?;
            if data.len() != stored.byte_len() {
                return Err(self.corrupt(
                    &rel,
                    format!("{} bytes, expected {}", data.len(), stored.byte_len()),
                ));
            }
            data.truncate(t.byte_len());
            Ok(data)
        })
    }

    /// The entry at `index`, from its entry bundle at its width at `latest`.
    fn entry(&self, index: u64, latest: u64) -> Result<Vec<u8>, ProofError> {
        let floor = crate::tlog::read_retained(&self.dir).map_err(ProofError::Audit)?;
        if index < floor {
            return Err(ProofError::Retained { index, floor });
        }
        let n = index / 256;
        let bundle = BundleId::new(n, (latest - n * 256).min(256))
            .map_err(|e| self.corrupt("tile/entries", e.to_string()))?;
        let rel = bundle.path();
        let data = crate::tlog::read_tile(&self.dir, &merkle::TilePath::Entries(bundle))
            .map_err(ProofError::Audit)?
            .ok_or_else(|| self.corrupt(&rel, "missing, but the checkpoint needs it"))?;
        let entries = decode_entry_bundle(&data).map_err(|e| self.corrupt(&rel, e.to_string()))?;
        if entries.len() as u64 != bundle.width() {
            return Err(self.corrupt(
                &rel,
                format!("{} entries, expected {}", entries.len(), bundle.width()),
            ));
        }
        Ok(entries[(index % 256) as usize].to_vec())
    }

    /// The size to prove at: `requested`, or the latest checkpoint's.
    fn size(&self, latest: &SignedCheckpoint, requested: Option<u64>) -> Result<u64, ProofError> {
        match requested {
            None => Ok(latest.size),
            Some(0) => Err(ProofError::EmptyTree { param: "tree_size" }),
            Some(s) if s > latest.size => Err(ProofError::TreeSizeTooLarge {
                param: "tree_size",
                requested: s,
                latest: latest.size,
            }),
            Some(s) => Ok(s),
        }
    }

    fn source_error(&self, e: ProveError<TileSourceError<ProofError>>) -> ProofError {
        match e {
            ProveError::Source(TileSourceError::Fetch(e)) => e,
            ProveError::Source(TileSourceError::Tile(e)) => self.corrupt("tile", e.to_string()),
            ProveError::Request(e) => {
                self.corrupt(".", format!("bug: a proof request passed the checks: {e}"))
            }
        }
    }

    /// The inclusion proof of entry `index` in the tree of `tree_size`
    /// (default: the latest checkpoint's size). `id` names the entry in
    /// messages when it was asked for by event id.
    pub fn inclusion(
        &self,
        index: u64,
        id: Option<&str>,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof, ProofError> {
        let latest = self.latest()?;
        let size = self.size(&latest, tree_size)?;
        check_index(index, id, size, tree_size.is_some())?;
        let mut nodes = self.nodes(latest.size, size);
        let hashes =
            merkle::inclusion_proof(index, size, &mut nodes).map_err(|e| self.source_error(e))?;
        let leaf_hash = nodes
            .node_hash(NodeId::leaf(index))
            .map_err(|e| self.source_error(ProveError::Source(e)))?;
        let checkpoint = (size == latest.size).then_some(latest);
        if let Some(cp) = &checkpoint {
            self.self_check(index, size, &leaf_hash, &hashes, cp)?;
        }
        Ok(InclusionProof {
            index,
            tree_size: size,
            leaf_hash,
            hashes,
            checkpoint,
        })
    }

    /// The consistency proof from size `from` to `to` (default: the latest
    /// checkpoint's size).
    pub fn consistency(&self, from: u64, to: Option<u64>) -> Result<ConsistencyProof, ProofError> {
        let latest = self.latest()?;
        if from == 0 {
            return Err(ProofError::EmptyTree { param: "from" });
        }
        let to_size = match to {
            Some(0) => return Err(ProofError::EmptyTree { param: "to" }),
            Some(t) if t > latest.size => {
                return Err(ProofError::TreeSizeTooLarge {
                    param: "to",
                    requested: t,
                    latest: latest.size,
                });
            }
            Some(t) => t,
            None => latest.size,
        };
        if from > to_size {
            return Err(ProofError::SizeOrder { from, to: to_size });
        }
        let mut nodes = self.nodes(latest.size, to_size);
        let hashes = merkle::consistency_proof(from, to_size, &mut nodes)
            .map_err(|e| self.source_error(e))?;
        let checkpoint = (to_size == latest.size).then_some(latest);
        if let Some(cp) = &checkpoint {
            // The proof must lead from the tiles' root at `from` to the
            // signed root: else a tile on the way is damaged.
            let old = merkle::root_at(from, &mut nodes)
                .map_err(|e| self.source_error(ProveError::Source(e)))?;
            if merkle::verify_consistency(from, to_size, &hashes, &old, &cp.root).is_err() {
                return Err(self.corrupt(
                    "tile",
                    format!(
                        "the hash tiles do not prove size {from} consistent with the signed checkpoint of size {to_size}"
                    ),
                ));
            }
        }
        Ok(ConsistencyProof {
            from,
            to: to_size,
            hashes,
            checkpoint,
        })
    }

    /// A receipt for entry `index` against the latest checkpoint.
    pub fn receipt(&self, index: u64, id: Option<&str>) -> Result<Receipt, ProofError> {
        let latest = self.latest()?;
        check_index(index, id, latest.size, false)?;
        self.receipt_at(index, &latest)
    }

    /// A receipt for entry `index` against `checkpoint`, a checkpoint of
    /// this log (the latest, or one the checkpointer just handed out) that
    /// covers it.
    pub fn receipt_at(
        &self,
        index: u64,
        checkpoint: &SignedCheckpoint,
    ) -> Result<Receipt, ProofError> {
        let size = checkpoint.size;
        check_index(index, None, size, true)?;
        // Files are read at the widths of whichever checkpoint is newer.
        let latest = match self.latest() {
            Ok(l) if l.size > size => l.size,
            _ => size,
        };
        let mut nodes = self.nodes(latest, size);
        let hashes =
            merkle::inclusion_proof(index, size, &mut nodes).map_err(|e| self.source_error(e))?;
        let entry = self.entry(index, latest)?;
        let leaf = merkle::leaf_hash(&entry);
        self.self_check(index, size, &leaf, &hashes, checkpoint)?;
        Ok(Receipt {
            entry,
            index,
            hashes,
            checkpoint: checkpoint.note.clone(),
        })
    }

    fn self_check(
        &self,
        index: u64,
        size: u64,
        leaf: &Hash,
        hashes: &[Hash],
        cp: &SignedCheckpoint,
    ) -> Result<(), ProofError> {
        merkle::verify_inclusion(index, size, leaf, hashes, &cp.root).map_err(|e| {
            ProofError::Corrupt {
                path: self.dir.clone(),
                reason: format!(
                    "entry {index} and the hash tiles do not prove it in the signed checkpoint of size {size} ({e}); a tile or entry bundle on its path is damaged"
                ),
            }
        })
    }
}

/// `index` must be inside `size`; `explicit` says whether the caller chose
/// the size (else it is the latest checkpoint's).
fn check_index(index: u64, id: Option<&str>, size: u64, explicit: bool) -> Result<(), ProofError> {
    if index < size {
        return Ok(());
    }
    Err(match (explicit, id) {
        (true, _) => ProofError::IndexBeyondTree {
            index,
            id: id.map(str::to_string),
            size,
        },
        (false, Some(id)) => ProofError::NotYetCheckpointed {
            id: id.to_string(),
            index,
            size,
        },
        (false, None) => ProofError::NoSuchIndex { index, size },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_input() {
        let e = ProofError::IndexBeyondTree {
            index: 7,
            id: Some("abc".into()),
            size: 5,
        };
        assert_eq!(
            e.to_string(),
            "audit event 'abc' (log_index 7) is not in the tree of size 5: pick a tree_size above it"
        );
        let e = ProofError::TreeSizeTooLarge {
            param: "tree_size",
            requested: 9,
            latest: 3,
        };
        assert!(e.to_string().starts_with("tree_size 9 is larger"));
    }
}
