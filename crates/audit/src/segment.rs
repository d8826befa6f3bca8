//! Segment files: the durable, append-only home of audit events.
//!
//! Byte layout, checksums and recovery rules are specified in
//! `docs/format/audit-segment.md`; this module is its implementation.
//! A segment is a 32-byte header followed by `diskio` frames, one per event,
//! each payload being the event's canonical (RFC 8785) JSON bytes (the
//! Merkle leaf), followed for schema version 2 events with personal data by
//! a newline and their sealed envelope ([`crate::personal`]), in seq order
//! without gaps. The file is named by the seq of its first event.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use diskio::ScanEnd;

use crate::error::AuditError;
use crate::event::{Event, parse_time_ns};
use crate::files;

/// First 8 bytes of every segment.
pub const MAGIC: [u8; 8] = *b"FDAUDSEG";
/// Format version written by this code; the only one it reads.
pub const VERSION: u32 = 1;
/// Size of the segment header.
pub const HEADER_LEN: usize = 32;
/// Largest event, in canonical bytes, the log accepts (fits one 64 KiB
/// tlog-tiles entry with room to spare).
pub const MAX_EVENT_BYTES: usize = 60 * 1024;
/// Largest frame payload a reader accepts: a length field above this is
/// treated as a bad frame, not as an allocation request.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Encodes the header of a segment whose first event has `first_seq`.
pub fn encode_header(first_seq: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    // 12..16: flags, zero in version 1.
    h[16..24].copy_from_slice(&first_seq.to_le_bytes());
    let crc = diskio::frame::checksum(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    // 28..32: reserved, zero.
    h
}

/// Decodes a header: the first seq, or why the bytes are not a header.
pub fn decode_header(buf: &[u8]) -> Result<u64, String> {
    let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
        return Err(format!(
            "header cut short ({} of {HEADER_LEN} bytes)",
            buf.len()
        ));
    };
    if h[0..8] != MAGIC {
        return Err(format!(
            "bad magic {:02x?} (expected {:02x?})",
            &h[0..8],
            MAGIC
        ));
    }
    let word = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let stored_crc = word(24);
    let crc = diskio::frame::checksum(&h[0..24]);
    if stored_crc != crc {
        return Err(format!(
            "header checksum mismatch (stored {stored_crc:08x}, computed {crc:08x})"
        ));
    }
    let version = word(8);
    if version != VERSION {
        return Err(format!(
            "unsupported segment format version {version} (this build reads {VERSION})"
        ));
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&h[16..24]);
    Ok(u64::from_le_bytes(seq))
}

/// The segment files in `dir`, sorted by first seq.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, AuditError> {
    let rd = fs::read_dir(dir).map_err(|e| AuditError::io(dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| AuditError::io(dir, e))?;
        let name = entry.file_name();
        if let Some(first) = name.to_str().and_then(files::parse_segment_name) {
            out.push((first, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// First byte of a tombstone record (JSON never starts with it).
pub const TOMBSTONE_MAGIC: u8 = 0x00;
/// Tombstone format version (second byte).
const TOMBSTONE_V1: u8 = 1;

/// What retention leaves of a record: enough to rebuild the Merkle tree and
/// the counters, nothing of the event itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    pub leaf_hash: merkle::Hash,
    pub log_index: u64,
    pub seq: u64,
    pub time_ns: i64,
    /// `project` of the event (`None`: organization log).
    pub project: Option<String>,
}

impl Tombstone {
    /// The record payload, zero-padded to `len` bytes (so every other
    /// record keeps its offset); `None` if it does not fit.
    pub fn encode(&self, len: usize) -> Option<Vec<u8>> {
        let project = self.project.as_deref().unwrap_or("");
        let mut b = Vec::with_capacity(len);
        b.push(TOMBSTONE_MAGIC);
        b.push(TOMBSTONE_V1);
        b.extend_from_slice(self.leaf_hash.as_bytes());
        b.extend_from_slice(&self.log_index.to_le_bytes());
        b.extend_from_slice(&self.seq.to_le_bytes());
        b.extend_from_slice(&self.time_ns.to_le_bytes());
        b.push(u8::from(self.project.is_some()));
        b.extend_from_slice(&u16::try_from(project.len()).ok()?.to_le_bytes());
        b.extend_from_slice(project.as_bytes());
        if b.len() > len {
            return None;
        }
        b.resize(len, 0);
        Some(b)
    }

    /// Decodes a tombstone payload; `None` if it is not one.
    pub fn decode(p: &[u8]) -> Option<Tombstone> {
        if p.first() != Some(&TOMBSTONE_MAGIC) || p.get(1) != Some(&TOMBSTONE_V1) {
            return None;
        }
        let u64_at = |at: usize| Some(u64::from_le_bytes(p.get(at..at + 8)?.try_into().ok()?));
        let leaf_hash = merkle::Hash::from_slice(p.get(2..34)?).ok()?;
        let has_project = *p.get(58)? == 1;
        let plen = usize::from(u16::from_le_bytes(p.get(59..61)?.try_into().ok()?));
        let project = std::str::from_utf8(p.get(61..61 + plen)?).ok()?;
        Some(Tombstone {
            leaf_hash,
            log_index: u64_at(34)?,
            seq: u64_at(42)?,
            time_ns: i64::from_le_bytes(p.get(50..58)?.try_into().ok()?),
            project: has_project.then(|| project.to_string()),
        })
    }

    /// A stand-in event for code that walks records: the stamps and the
    /// log are real, everything else is empty; `action` says what it is.
    fn stub(&self) -> Event {
        let mut e = Event::from_draft(
            crate::event::EventDraft::system("", self.project.as_deref(), "audit.entry.expired"),
            String::new(),
            self.seq,
            self.log_index,
            crate::event::format_time_ns(self.time_ns),
        );
        e.schema_version = 0;
        e
    }
}

/// An event found while walking the segments, with where it lives.
pub struct Found {
    /// Parsed from the leaf: personal values not revealed. For a
    /// tombstone, a stand-in with the real stamps (see `expired`).
    pub event: Event,
    /// Set for a record retention replaced by a tombstone: the leaf hash
    /// it keeps (the event's bytes are gone).
    pub expired: Option<merkle::Hash>,
    /// The whole record payload: leaf, and the sealed envelope if any.
    pub bytes: Vec<u8>,
    pub time_ns: i64,
    pub segment: u64,
    pub offset: u64,
}

/// What to do with a torn tail of the last segment.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Repair {
    /// Truncate it (and delete a last segment whose header is torn).
    Truncate,
    /// Leave files alone; just stop reading at the last valid record.
    ReadOnly,
}

/// The outcome of [`walk`].
#[derive(Debug, Default)]
pub struct Walked {
    /// Seq of the last valid event (0 if none).
    pub last_seq: u64,
    /// The last segment still on disk: first seq, path, valid length.
    pub last_segment: Option<(u64, PathBuf, u64)>,
    /// Bytes dropped from a torn tail (0 if none).
    pub truncated_bytes: u64,
}

/// Reads every segment in `dir` in order, checking headers, checksums and
/// seq continuity. Events with seq above `watermark` are parsed and handed
/// to `found` (events at or below it are only checksummed). A torn tail of
/// the last segment is repaired according to `repair`; anything else wrong
/// is [`AuditError::Corrupt`] naming the file and offset.
pub fn walk(
    dir: &Path,
    watermark: u64,
    repair: Repair,
    mut found: impl FnMut(Found) -> Result<(), AuditError>,
) -> Result<Walked, AuditError> {
    let segments = list(dir)?;
    let mut expected = 1u64;
    let mut out = Walked::default();
    let count = segments.len();
    for (i, (name_seq, path)) in segments.into_iter().enumerate() {
        let is_last = i + 1 == count;
        let buf = fs::read(&path).map_err(|e| AuditError::io(&path, e))?;
        let first = match decode_header(&buf) {
            Ok(first) => first,
            Err(reason) => {
                let body = buf.get(HEADER_LEN..).unwrap_or(&[]);
                let holds_records = match diskio::scan(body, MAX_FRAME_BYTES).finish() {
                    ScanEnd::Clean => !body.is_empty(),
                    ScanEnd::Torn { good_end, .. } => good_end > 0,
                    ScanEnd::Corrupt { .. } => true,
                };
                if is_last && !holds_records {
                    // A segment whose creation was cut short: no record in
                    // it was ever acknowledged (the header is fsynced with
                    // the first batch), so it is dropped.
                    if repair == Repair::Truncate {
                        tracing::warn!(path = %path.display(), %reason, "removing a segment whose header is torn");
                        fs::remove_file(&path).map_err(|e| AuditError::io(&path, e))?;
                        diskio::fsync_dir(dir).map_err(|e| AuditError::io(dir, e))?;
                    }
                    out.truncated_bytes += buf.len() as u64;
                    break;
                }
                return Err(AuditError::corrupt(&path, 0, reason));
            }
        };
        if first != name_seq || first != expected {
            return Err(AuditError::corrupt(
                &path,
                16,
                format!(
                    "segment starts at seq {first}, but its name says {name_seq} and the previous segment ends at {}",
                    expected - 1
                ),
            ));
        }
        let body = &buf[HEADER_LEN..];
        let mut records = diskio::scan(body, MAX_FRAME_BYTES);
        for rec in records.by_ref() {
            let seq = expected;
            expected += 1;
            if seq <= watermark {
                continue;
            }
            let offset = (HEADER_LEN + rec.offset) as u64;
            let bad = |reason: String| AuditError::corrupt(&path, offset, reason);
            if let Some(t) = Tombstone::decode(rec.payload) {
                if t.seq != seq {
                    return Err(bad(format!(
                        "tombstone holds seq {} where seq {seq} belongs",
                        t.seq
                    )));
                }
                found(Found {
                    event: t.stub(),
                    expired: Some(t.leaf_hash),
                    bytes: rec.payload.to_vec(),
                    time_ns: t.time_ns,
                    segment: first,
                    offset,
                })?;
                continue;
            }
            let (leaf, _) = crate::personal::split_payload(rec.payload);
            let event = Event::from_bytes(leaf)
                .map_err(|e| bad(format!("record with a valid checksum is not an event: {e}")))?;
            if event.seq != seq {
                return Err(bad(format!(
                    "record holds seq {} where seq {seq} belongs",
                    event.seq
                )));
            }
            let time_ns = parse_time_ns(&event.time).ok_or_else(|| {
                bad(format!(
                    "event {seq} has an unparsable time {:?}",
                    event.time
                ))
            })?;
            found(Found {
                event,
                expired: None,
                bytes: rec.payload.to_vec(),
                time_ns,
                segment: first,
                offset,
            })?;
        }
        let good_end = (HEADER_LEN + records.good_end()) as u64;
        match records.finish() {
            ScanEnd::Clean => {}
            ScanEnd::Torn { reason, .. } if is_last => {
                let dropped = buf.len() as u64 - good_end;
                tracing::warn!(path = %path.display(), good_end, dropped, %reason, "torn tail in the last audit segment");
                if repair == Repair::Truncate {
                    truncate(&path, good_end)?;
                }
                out.truncated_bytes += dropped;
            }
            ScanEnd::Torn { reason, .. } => {
                return Err(AuditError::corrupt(
                    &path,
                    good_end,
                    format!("{reason} in a sealed segment (a later segment exists)"),
                ));
            }
            ScanEnd::Corrupt {
                offset,
                next_valid,
                reason,
            } => {
                return Err(AuditError::corrupt(
                    &path,
                    (HEADER_LEN + offset) as u64,
                    format!(
                        "{reason}; a valid record follows at offset {}, so this is damage, not a torn tail",
                        HEADER_LEN + next_valid
                    ),
                ));
            }
        }
        out.last_segment = Some((first, path, good_end));
    }
    out.last_seq = expected - 1;
    Ok(out)
}

fn truncate(path: &Path, len: u64) -> Result<(), AuditError> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| AuditError::io(path, e))?;
    f.set_len(len).map_err(|e| AuditError::io(path, e))?;
    f.sync_all().map_err(|e| AuditError::io(path, e))
}

/// Opens an existing segment for appending.
pub fn open_append(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| AuditError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = encode_header(4097);
        assert_eq!(decode_header(&h), Ok(4097));
        assert!(decode_header(&h[..31]).unwrap_err().contains("cut short"));
        let mut bad = h;
        bad[0] = b'X';
        assert!(decode_header(&bad).unwrap_err().contains("magic"));
        let mut bad = h;
        bad[17] ^= 1;
        assert!(decode_header(&bad).unwrap_err().contains("checksum"));
    }
}
