//! Inside-out consistency check of a data directory's audit store: the
//! private copies (segments, search index, sealed personal values) must
//! agree with the public, signed tree.
//!
//! [`crate::verify`] checks the tlog-tiles files against a signed
//! checkpoint from the outside; this module then checks, for a directory
//! the operator holds, that
//!
//! 1. every segment record's leaf is the entry the tree holds at its
//!    `log_index` (its leaf hash equals the level-0 tile hash), up to the
//!    size of the log's checkpoint;
//! 2. every search-index row describes the record it points at (seq, log,
//!    id, time, principal, action, resource, status, place and length), so
//!    an edited index cannot make searches show events that disagree with
//!    the log;
//! 3. every sealed envelope that opens reveals values whose salted
//!    commitments match the leaf, and names a key the keystore knows
//!    (erased keys are expected; a key missing altogether is not).
//!
//! It reads only; it is safe beside a running server (it may report an
//! index row being written as missing, never as wrong).

use std::collections::HashMap;
use std::path::Path;

use merkle::tiles::{TileId, tile_hashes, tiles_for_size};
use merkle::{Checkpoint, Hash, Note, leaf_hash};
use rusqlite::{Connection, OpenFlags};

use crate::error::AuditError;
use crate::event::Event;
use crate::files;
use crate::index::{self, RowKeys};
use crate::personal::{self, Keystore};
use crate::segment::{self, Repair};

/// What a clean check covered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FsckReport {
    pub events: u64,
    /// Leaves compared with the signed trees' level-0 tiles.
    pub leaves_checked: u64,
    pub index_rows: u64,
    pub envelopes_opened: u64,
    pub envelopes_erased: u64,
    /// Records removed by retention (tombstones).
    pub expired: u64,
}

/// The first disagreement found, with its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {reason}")]
pub struct FsckFailure {
    pub place: String,
    pub reason: String,
}

fn fail<T>(place: impl Into<String>, reason: impl Into<String>) -> Result<T, FsckFailure> {
    Err(FsckFailure {
        place: place.into(),
        reason: reason.into(),
    })
}

/// One record as the segments hold it.
struct Rec {
    keys: RowKeys,
    id: String,
    time_ns: i64,
    segment: u64,
    offset: u64,
    len: u64,
}

/// Checks the audit store in `audit_dir` (`<data>/audit`).
pub fn check_store(audit_dir: &Path) -> Result<FsckReport, FsckFailure> {
    let io = |e: AuditError| FsckFailure {
        place: audit_dir.display().to_string(),
        reason: e.to_string(),
    };
    // The index first: it only ever holds events already durable in the
    // segments, so read before the walk it can be checked against it even
    // while a server appends.
    let index_path = audit_dir.join(files::INDEX);
    let index = read_index(&index_path)?;
    let keys = Keystore::open_read_only(&audit_dir.join(files::SUBJECTS)).map_err(io)?;
    let mut report = FsckReport::default();
    let mut records: HashMap<u64, Rec> = HashMap::new();
    let mut leaves: HashMap<String, Vec<Hash>> = HashMap::new();
    let mut failure: Option<FsckFailure> = None;
    let mut expired: std::collections::HashSet<u64> = std::collections::HashSet::new();
    segment::walk(audit_dir, 0, Repair::ReadOnly, |f| {
        if failure.is_some() {
            return Ok(());
        }
        if let Some(h) = f.expired {
            // Removed by retention: only the leaf hash is left.
            let log = index::log_text(&f.event.log_key());
            leaves.entry(log).or_default().push(h);
            expired.insert(f.event.seq);
            report.events += 1;
            report.expired += 1;
            return Ok(());
        }
        let (leaf, envelope) = personal::split_payload(&f.bytes);
        let place = format!(
            "event seq {} (segment {}, offset {})",
            f.event.seq,
            files::segment_name(f.segment),
            f.offset
        );
        if let Err(e) = check_envelope(&keys, &f.event, envelope, &mut report) {
            failure = Some(FsckFailure { place, reason: e });
            return Ok(());
        }
        let keys = RowKeys::of_event(&f.event);
        leaves
            .entry(keys.log.clone())
            .or_default()
            .push(leaf_hash(leaf));
        records.insert(
            f.event.seq,
            Rec {
                keys,
                id: f.event.id.clone(),
                time_ns: f.time_ns,
                segment: f.segment,
                offset: f.offset,
                len: f.bytes.len() as u64,
            },
        );
        report.events += 1;
        Ok(())
    })
    .map_err(io)?;
    if let Some(f) = failure {
        return Err(f);
    }
    check_trees(&audit_dir.join(files::TLOG_DIR), &leaves, &mut report)?;
    if let Some((watermark, rows)) = index {
        check_index(
            &index_path,
            watermark,
            &rows,
            &records,
            &expired,
            &mut report,
        )?;
    }
    Ok(report)
}

fn check_envelope(
    keys: &Keystore,
    e: &Event,
    sealed: Option<&[u8]>,
    report: &mut FsckReport,
) -> Result<(), String> {
    match (e.personal.is_empty(), sealed) {
        (true, None) => return Ok(()),
        (true, Some(_)) => {
            return Err(
                "a sealed envelope follows a leaf that commits to no personal field".into(),
            );
        }
        (false, None) => {
            return Err(
                "the leaf commits to personal fields but no sealed envelope follows it".into(),
            );
        }
        (false, Some(_)) => {}
    }
    let opened = keys.open_all(sealed.unwrap_or_default());
    if let Some(Err(why)) = opened
        .values()
        .find(|v| matches!(v, Err(w) if *w != personal::ERASED))
    {
        return Err(format!(
            "the sealed personal values cannot be opened ({why}): their key is missing from {} or the envelope was altered",
            files::SUBJECTS
        ));
    }
    let erased = opened.values().any(|v| *v == Err(personal::ERASED));
    for (field, commitment) in &e.personal {
        match opened.get(field) {
            Some(Ok((salt, value))) => {
                if personal::commitment(salt, value) != *commitment {
                    return Err(format!(
                        "the sealed value of {field} does not match the leaf's commitment (side store edited)"
                    ));
                }
            }
            _ if erased => {}
            _ => {
                return Err(format!(
                    "the sealed values lack the committed field {field}"
                ));
            }
        }
    }
    if erased {
        report.envelopes_erased += 1;
    } else {
        report.envelopes_opened += 1;
    }
    Ok(())
}

/// Each log's segment leaves against the level-0 tiles of its signed tree.
fn check_trees(
    tlog_dir: &Path,
    leaves: &HashMap<String, Vec<Hash>>,
    report: &mut FsckReport,
) -> Result<(), FsckFailure> {
    let mut logs: Vec<_> = leaves.keys().collect();
    logs.sort();
    for log in logs {
        let Some(key) = index::parse_log_text(log) else {
            continue;
        };
        let dir = tlog_dir.join(files::tlog_log_dir(&key));
        let cp_path = dir.join(files::CHECKPOINT);
        let Ok(cp) = std::fs::read(&cp_path) else {
            // Not checkpointed yet (a fresh log): nothing signed to compare.
            continue;
        };
        let place = cp_path.display().to_string();
        let size = Note::parse(&cp)
            .ok()
            .and_then(|n| Checkpoint::parse(n.text()).ok())
            .map(|c| c.size());
        let Some(size) = size else {
            return fail(place, "not a signed checkpoint");
        };
        let ours = &leaves[log];
        if (ours.len() as u64) < size {
            return fail(
                place,
                format!(
                    "the tree holds {size} entries but the segments only {}",
                    ours.len()
                ),
            );
        }
        let tiles: Vec<TileId> = tiles_for_size(size)
            .into_iter()
            .filter(|t| t.level() == 0)
            .collect();
        for t in tiles {
            let path = dir.join(t.path());
            let place = path.display().to_string();
            let Ok(data) = std::fs::read(&path) else {
                return fail(place, "missing");
            };
            let Ok(hashes) = tile_hashes(&t, &data) else {
                return fail(place, "not a hash tile of its width");
            };
            for (i, h) in hashes.iter().enumerate() {
                let n = t.index() * 256 + i as u64;
                if ours[n as usize] != *h {
                    return fail(
                        format!("{} entry {n}", dir.display()),
                        "the segment record at this log index is not the entry the signed tree holds",
                    );
                }
                report.leaves_checked += 1;
            }
        }
    }
    Ok(())
}

/// One row of the index, as stored.
struct IndexRowText {
    seq: i64,
    text: [Option<String>; 8],
    ints: [i64; 4],
}

/// The index's watermark and rows, or `None` when there is no index.
fn read_index(path: &Path) -> Result<Option<(i64, Vec<IndexRowText>)>, FsckFailure> {
    if !path.exists() {
        return Ok(None);
    }
    let db = |e: rusqlite::Error| FsckFailure {
        place: path.display().to_string(),
        reason: format!("cannot be read: {e}"),
    };
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(db)?;
    let tx = conn.unchecked_transaction().map_err(db)?;
    // An index of another schema version (an older Flightdeck's) is never
    // read: every open rebuilds it from the segments (or reads them into
    // memory), so it is as good as absent.
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db)?;
    if version != index::SCHEMA_VERSION {
        return Ok(None);
    }
    let watermark: i64 = tx
        .query_row("SELECT value FROM meta WHERE key = 'watermark'", [], |r| {
            r.get(0)
        })
        .map_err(db)?;
    let mut stmt = tx
        .prepare(
            // String columns hold `strings` codes (schema version 5): a
            // code edited to another string's, or to none, reads as that
            // string or as NULL, and disagrees with the record.
            "SELECT e.seq, l.s, e.id, pi.s, pt.s, a.s, rt.s, ri.s, st.s,
                    e.time_ns, e.segment, e.offset, e.len
             FROM events e
             LEFT JOIN strings l ON l.id = e.log
             LEFT JOIN strings pi ON pi.id = e.principal_id
             LEFT JOIN strings pt ON pt.id = e.principal_type
             LEFT JOIN strings a ON a.id = e.action
             LEFT JOIN strings rt ON rt.id = e.resource_type
             LEFT JOIN strings ri ON ri.id = e.resource_id
             LEFT JOIN strings st ON st.id = e.status
             ORDER BY e.seq",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(IndexRowText {
                seq: r.get(0)?,
                text: [
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ],
                ints: [r.get(9)?, r.get(10)?, r.get(11)?, r.get(12)?],
            })
        })
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db)?;
    Ok(Some((watermark, rows)))
}

/// Every index row against the record it points at; rows `1..=watermark`
/// all present.
fn check_index(
    path: &Path,
    watermark: i64,
    rows: &[IndexRowText],
    records: &HashMap<u64, Rec>,
    expired: &std::collections::HashSet<u64>,
    report: &mut FsckReport,
) -> Result<(), FsckFailure> {
    let place = |seq: i64| format!("{} row seq {seq}", path.display());
    // Seqs retention removed have no row.
    let skip_expired = |mut s: i64| {
        while u64::try_from(s).is_ok_and(|u| expired.contains(&u)) {
            s += 1;
        }
        s
    };
    let mut expect = skip_expired(1);
    for r in rows {
        let seq = r.seq;
        let Some(rec) = u64::try_from(seq).ok().and_then(|s| records.get(&s)) else {
            return fail(place(seq), "indexes an event the segments do not hold");
        };
        if seq != expect {
            return fail(
                place(expect),
                format!("missing from the index (next row is seq {seq})"),
            );
        }
        expect = skip_expired(expect + 1);
        let k = &rec.keys;
        let t = |i: usize| r.text[i].as_deref();
        let checks: [(&str, bool); 12] = [
            ("log", t(0) == Some(k.log.as_str())),
            ("id", t(1) == Some(rec.id.as_str())),
            ("principal_id", t(2) == Some(k.principal_id.as_str())),
            ("principal_type", t(3) == Some(k.principal_type.as_str())),
            ("action", t(4) == Some(k.action.as_str())),
            ("resource_type", t(5) == k.resource_type.as_deref()),
            ("resource_id", t(6) == k.resource_id.as_deref()),
            ("status", t(7) == Some(k.status.as_str())),
            ("time_ns", r.ints[0] == rec.time_ns),
            (
                "segment",
                u64::try_from(r.ints[1]).ok() == Some(rec.segment),
            ),
            ("offset", u64::try_from(r.ints[2]).ok() == Some(rec.offset)),
            ("len", u64::try_from(r.ints[3]).ok() == Some(rec.len)),
        ];
        if let Some((col, _)) = checks.iter().find(|(_, ok)| !ok) {
            return fail(
                place(seq),
                format!("column {col} disagrees with the event in the segments (index edited)"),
            );
        }
        report.index_rows += 1;
    }
    if expect <= watermark {
        return fail(
            place(expect),
            format!("missing from the index (its watermark says it holds up to seq {watermark})"),
        );
    }
    Ok(())
}
