//! Retention: removing a log's oldest entries while its Merkle tree, every
//! checkpoint and every later proof keep verifying.
//!
//! Retention works in whole entry bundles (256 entries) and only below the
//! latest signed checkpoint. Applying a floor `F` to a log:
//!
//! 1. writes `F` to the tree directory's [`files::RETAINED`] (atomically):
//!    from here on, bundles below `F` are never written again;
//! 2. replaces each of the log's segment records below `F` by a
//!    [`Tombstone`] of the same length (leaf hash, stamps, log; nothing of
//!    the event), rewriting the sealed segment through a temporary file,
//!    fsync and rename — so every other record keeps its offset;
//! 3. deletes their search-index rows;
//! 4. deletes the entry bundles (full and partial) below `F`.
//!
//! Hash tiles and checkpoints stay. Every step is idempotent, and
//! [`crate::AuditLog::complete_retention`] redoes 2–4 for the floor on
//! disk, so a crash anywhere leaves at worst work for the next sweep.
//! Records in the segment being appended to are not rewritten: the floor is
//! capped below the first of them (they go once the segment is sealed).
//!
//! The caller decides the window and legal holds, and records the audit
//! event *before* applying (see `server`'s retention sweep).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use merkle::leaf_hash;
use merkle::tiles::BundleId;
use merkle::{Checkpoint, Note};

use crate::error::AuditError;
use crate::event::LogKey;
use crate::files;
use crate::personal;
use crate::segment::Tombstone;

/// What a retention pass would remove from one log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPlan {
    pub log: LogKey,
    /// The current floor (entries below it are already gone).
    pub from: u64,
    /// The new floor: entries `from..to` go.
    pub to: u64,
}

/// What applying a floor did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionDone {
    pub records_tombstoned: u64,
    pub segments_rewritten: u64,
    pub bundles_deleted: u64,
}

/// The size of the signed checkpoint in a tree directory (0 if none).
pub(crate) fn checkpoint_size(dir: &Path) -> u64 {
    fs::read(dir.join(files::CHECKPOINT))
        .ok()
        .and_then(|b| Note::parse(&b).ok())
        .and_then(|n| Checkpoint::parse(n.text()).ok())
        .map_or(0, |c| c.size())
}

/// Replaces the given records of one segment file by tombstones.
/// `rows`: `(offset, len, seq, log_index, time_ns)`.
pub(crate) fn tombstone_segment(
    audit_dir: &Path,
    segment_first: u64,
    project: Option<&str>,
    rows: &[(u64, usize, u64, u64, i64)],
) -> Result<u64, AuditError> {
    let path = audit_dir.join(files::segment_name(segment_first));
    let mut buf = fs::read(&path).map_err(|e| AuditError::io(&path, e))?;
    let mut changed = 0u64;
    for &(offset, len, seq, log_index, time_ns) in rows {
        let start = offset as usize + diskio::frame::HEADER_LEN;
        let Some(payload) = buf.get(start..start + len) else {
            return Err(AuditError::corrupt(
                &path,
                offset,
                "indexed record past the end of the segment",
            ));
        };
        if Tombstone::decode(payload).is_some() {
            continue;
        }
        let leaf = personal::split_payload(payload).0;
        let t = Tombstone {
            leaf_hash: leaf_hash(leaf),
            log_index,
            seq,
            time_ns,
            project: project.map(str::to_string),
        };
        let Some(bytes) = t.encode(len) else {
            return Err(AuditError::corrupt(
                &path,
                offset,
                "record too short for a tombstone",
            ));
        };
        let crc = diskio::frame::checksum(&bytes);
        buf[start..start + len].copy_from_slice(&bytes);
        buf[offset as usize + 4..offset as usize + 8].copy_from_slice(&crc.to_le_bytes());
        changed += 1;
    }
    if changed > 0 {
        diskio::atomic_write(&path, &buf, &diskio::Faults::disabled())
            .map_err(|e| AuditError::io(&path, e))?;
    }
    Ok(changed)
}

/// Groups index rows by segment: segment → `(offset, len, seq, log_index, time_ns)`.
#[allow(clippy::type_complexity)]
pub(crate) fn by_segment(
    rows: &[(u64, u64, u64, usize, u64, i64)],
) -> BTreeMap<u64, Vec<(u64, usize, u64, u64, i64)>> {
    let mut m: BTreeMap<u64, Vec<_>> = BTreeMap::new();
    for &(seq, seg, off, len, idx, t) in rows {
        m.entry(seg).or_default().push((off, len, seq, idx, t));
    }
    m
}

/// Deletes the entry bundles `[from/256, to/256)` of a tree directory,
/// full and partial. Returns how many files went.
pub(crate) fn delete_bundles(dir: &Path, from: u64, to: u64) -> Result<u64, AuditError> {
    let mut n = 0;
    for k in from / 256..to / 256 {
        let Ok(b) = BundleId::new(k, 256) else {
            continue;
        };
        let full = dir.join(b.path());
        match fs::remove_file(&full) {
            Ok(()) => n += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(AuditError::io(&full, e)),
        }
        let partials = dir.join(format!("{}.p", b.path()));
        if partials.is_dir() {
            for e in fs::read_dir(&partials).map_err(|e| AuditError::io(&partials, e))? {
                let p = e.map_err(|e| AuditError::io(&partials, e))?.path();
                fs::remove_file(&p).map_err(|e| AuditError::io(&p, e))?;
                n += 1;
            }
            fs::remove_dir(&partials).map_err(|e| AuditError::io(&partials, e))?;
        }
    }
    if n > 0 {
        let entries = dir.join("tile/entries");
        let _ = diskio::fsync_dir(&entries);
    }
    Ok(n)
}
