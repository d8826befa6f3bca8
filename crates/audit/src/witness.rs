//! Witness cosignatures of the transparency logs: which pushed
//! cosignatures a log accepts, where they are kept, and the checkpoints
//! served with them.
//!
//! A witness (`flightdeck audit monitor --witness-key`) verifies a log,
//! cosigns its checkpoint (C2SP tlog-cosignature, `merkle::cosignature`)
//! and pushes the cosigned note. The log accepts it only when
//!
//! - the note's text is byte for byte a checkpoint this log signed: the
//!   current one, or one signed in the last [`RECENT_WINDOW`] by this
//!   process (at most [`RECENT_MAX`] per log) — so a witness may take a
//!   while to verify, but nobody gets a cosignature stored for a tree head
//!   the log never published;
//! - it carries at least one cosignature by a configured witness key, every
//!   line of a configured key verifies, and no timestamp is more than
//!   [`MAX_CLOCK_SKEW_S`] in the future.
//!
//! # Storage
//!
//! `<log dir>/cosigned/<size>` holds the checkpoint of that size as the log
//! signed it, followed by the accepted cosignature lines (one per witness
//! key, the latest timestamp), a signed note replaced atomically. Only
//! files that are some witness key's newest are kept (at most one per
//! witness), so the directory stays small however often witnesses run.
//! Cosignatures are not derived data: unlike the tiles they cannot be
//! rebuilt from the segments.
//!
//! # Serving
//!
//! `checkpoint` is the current checkpoint with the cosignatures accepted
//! for exactly that text appended (extra signature lines of the same note,
//! which note verifiers that do not know the witnesses ignore);
//! `witnessed/<key ID, 8 hex digits>` is the newest checkpoint that witness
//! key cosigned, with every cosignature on it.
//!
//! Why per witness: a push is an audit event of the log it cosigns, so the
//! log moves on within a second of every push, and witnesses running on
//! their own schedules rarely cosign the same checkpoint. A verifier's
//! quorum therefore asks for N witnesses each having cosigned *some*
//! checkpoint that its verified tree extends; the log is witnessed up to
//! the smallest of the N newest such sizes (see `verify.rs`, check 8).

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use merkle::cosignature::cosignature_timestamp;
use merkle::{Cosignature, CosignatureVerifier, Note, NoteError, NoteSignature};

use crate::error::AuditError;
use crate::files;

/// How long after signing a checkpoint the log accepts cosignatures of it
/// (besides the current one).
pub const RECENT_WINDOW: Duration = Duration::from_secs(600);
/// Most recent checkpoints remembered per log.
pub const RECENT_MAX: usize = 1024;
/// Cosignature timestamps further in the future than this are refused.
pub const MAX_CLOCK_SKEW_S: u64 = 600;

/// Signed checkpoint notes with the time they were signed, oldest first.
type Signed = VecDeque<(Instant, Vec<u8>)>;

/// A stored cosigned checkpoint: its size, path, and the (name, key ID) of
/// each cosignature line.
type CosignedFile = (u64, PathBuf, Vec<(String, u32)>);

/// The checkpoints each log signed recently (log directory name → notes):
/// written by the checkpointer, read by cosignature pushes.
#[derive(Default)]
pub(crate) struct Recent {
    logs: Mutex<HashMap<String, Signed>>,
}

impl Recent {
    /// Remembers a checkpoint note `log` just signed.
    pub(crate) fn record(&self, log: &str, note: Vec<u8>) {
        let Ok(mut logs) = self.logs.lock() else {
            return;
        };
        let q = logs.entry(log.to_string()).or_default();
        let now = Instant::now();
        while q
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RECENT_WINDOW)
            || q.len() >= RECENT_MAX
        {
            q.pop_front();
        }
        q.push_back((now, note));
    }

    /// The note `log` signed recently whose text is `text`.
    pub(crate) fn find(&self, log: &str, text: &str) -> Option<Vec<u8>> {
        let logs = self.logs.lock().ok()?;
        let now = Instant::now();
        logs.get(log)?
            .iter()
            .rev()
            .filter(|(t, _)| now.duration_since(*t) <= RECENT_WINDOW)
            .find(|(_, n)| Note::parse(n).is_ok_and(|n| n.text() == text))
            .map(|(_, n)| n.clone())
    }
}

/// Why a pushed cosignature was refused.
#[derive(Debug, thiserror::Error)]
pub enum CosignRefusal {
    /// The body is not a signed note.
    #[error("not a cosigned checkpoint note: {0}")]
    Malformed(String),
    /// The text is not the current checkpoint nor a recent one of this log.
    #[error(
        "this log did not sign that checkpoint recently (size {size}); fetch `checkpoint` again, verify it and cosign that"
    )]
    UnknownCheckpoint { size: String },
    /// The server has no witness keys configured.
    #[error(
        "this server accepts no cosignatures: no witness keys are configured (audit.witnesses)"
    )]
    NoWitnessesConfigured,
    /// No line comes from a configured witness key.
    #[error(
        "no cosignature by a witness key this server trusts (signed by {signers}); add the witness's verifier key to audit.witnesses"
    )]
    UnknownWitness { signers: String },
    /// A line of a configured witness key does not verify.
    #[error("the cosignature by witness {name}+{key_id:08x} does not verify for this checkpoint")]
    InvalidCosignature { name: String, key_id: u32 },
    /// A cosignature timestamp too far in the future.
    #[error(
        "the cosignature by witness {name} is dated {timestamp}, more than {MAX_CLOCK_SKEW_S} s in the future; check the witness's clock"
    )]
    FutureTimestamp { name: String, timestamp: u64 },
    /// The cosignatures could not be stored.
    #[error(transparent)]
    Storage(#[from] AuditError),
}

/// A stored cosignature push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosigned {
    pub origin: String,
    pub size: u64,
    /// The cosignatures this push added or refreshed.
    pub added: Vec<Cosignature>,
    /// Every cosignature by a configured witness now on that checkpoint.
    pub cosignatures: Vec<Cosignature>,
}

fn cosigned_path(log_dir: &Path, size: u64) -> PathBuf {
    log_dir.join(files::COSIGNED_DIR).join(size.to_string())
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, AuditError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AuditError::io(path, e)),
    }
}

fn cosignature_lines(note: &Note) -> impl Iterator<Item = &NoteSignature> {
    note.signatures()
        .iter()
        .filter(|s| cosignature_timestamp(s).is_some())
}

/// The cosigned checkpoints of a log, newest first: (size, path, the
/// (name, key ID) of each cosignature line).
fn cosigned_files(log_dir: &Path) -> Result<Vec<CosignedFile>, AuditError> {
    let dir = log_dir.join(files::COSIGNED_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AuditError::io(dir, e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|err| AuditError::io(&dir, err))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(size) = name.parse::<u64>() else {
            continue; // temp files of atomic writes
        };
        if size.to_string() != name {
            continue;
        }
        let path = e.path();
        let Some(bytes) = read_opt(&path)? else {
            continue;
        };
        let note = Note::parse(&bytes).map_err(|err| {
            AuditError::corrupt(&path, 0, format!("not a cosigned checkpoint: {err}"))
        })?;
        let keys = cosignature_lines(&note)
            .map(|s| (s.name.clone(), s.key_id))
            .collect();
        out.push((size, path, keys));
    }
    out.sort_by_key(|(s, _, _)| std::cmp::Reverse(*s));
    Ok(out)
}

/// The current checkpoint of the log in `log_dir` with the cosignatures
/// accepted for it; `None` while the log has no checkpoint.
pub fn served_checkpoint(log_dir: &Path) -> Result<Option<Vec<u8>>, AuditError> {
    let cp_path = log_dir.join(files::CHECKPOINT);
    let Some(mut current) = read_opt(&cp_path)? else {
        return Ok(None);
    };
    let Ok(note) = Note::parse(&current) else {
        return Ok(Some(current));
    };
    let Some(size) = merkle::Checkpoint::parse(note.text())
        .ok()
        .map(|c| c.size())
    else {
        return Ok(Some(current));
    };
    let path = cosigned_path(log_dir, size);
    if let Some(stored) = read_opt(&path)? {
        let stored = Note::parse(&stored)
            .map_err(|e| AuditError::corrupt(&path, 0, format!("not a note: {e}")))?;
        if stored.text() == note.text() {
            for line in cosignature_lines(&stored) {
                if !note.signatures().contains(line) {
                    current.extend_from_slice(line.to_line().as_bytes());
                }
            }
        }
    }
    Ok(Some(current))
}

/// The newest checkpoint of the log in `log_dir` that the witness key with
/// ID `key_id` cosigned, as the log signed it plus every cosignature on it.
pub fn witnessed_by(log_dir: &Path, key_id: u32) -> Result<Option<Vec<u8>>, AuditError> {
    for (_, path, keys) in cosigned_files(log_dir)? {
        if keys.iter().any(|(_, id)| *id == key_id) {
            return read_opt(&path);
        }
    }
    Ok(None)
}

/// Validates the cosignatures of `pushed` against `witnesses` and stores
/// them with `ours` (the note this log signed with the same text). See the
/// module documentation. `now_s` is the server's clock in POSIX seconds.
pub(crate) fn add(
    log_dir: &Path,
    ours: &[u8],
    pushed: &Note,
    witnesses: &[CosignatureVerifier],
    now_s: u64,
) -> Result<Cosigned, CosignRefusal> {
    let bad_note = |p: &Path, e: NoteError| AuditError::corrupt(p, 0, format!("not a note: {e}"));
    let ours_note = Note::parse(ours).map_err(|e| bad_note(&log_dir.join("checkpoint"), e))?;
    let cp = merkle::Checkpoint::parse(ours_note.text())
        .map_err(|e| AuditError::corrupt(log_dir, 0, e.to_string()))?;
    if witnesses.is_empty() {
        return Err(CosignRefusal::NoWitnessesConfigured);
    }
    let added = merkle::verify_cosignatures(pushed, witnesses).map_err(|e| match e {
        NoteError::InvalidSignature { name, key_id } => {
            CosignRefusal::InvalidCosignature { name, key_id }
        }
        other => CosignRefusal::Malformed(other.to_string()),
    })?;
    if added.is_empty() {
        let signers: Vec<String> = pushed
            .signatures()
            .iter()
            .filter(|s| !ours_note.signatures().contains(s))
            .map(|s| format!("{}+{:08x}", s.name, s.key_id))
            .collect();
        return Err(CosignRefusal::UnknownWitness {
            signers: if signers.is_empty() {
                "nobody but the log".into()
            } else {
                signers.join(", ")
            },
        });
    }
    if let Some(c) = added
        .iter()
        .find(|c| c.timestamp > now_s.saturating_add(MAX_CLOCK_SKEW_S))
    {
        return Err(CosignRefusal::FutureTimestamp {
            name: c.name.clone(),
            timestamp: c.timestamp,
        });
    }

    // Merge with what is stored for this text: per witness key, the
    // latest line.
    let path = cosigned_path(log_dir, cp.size());
    let mut lines: Vec<NoteSignature> = Vec::new();
    if let Some(stored) = read_opt(&path)? {
        let stored = Note::parse(&stored).map_err(|e| bad_note(&path, e))?;
        if stored.text() == ours_note.text() {
            lines.extend(cosignature_lines(&stored).cloned());
        }
    }
    let accepted = pushed
        .signatures()
        .iter()
        .filter(|s| witnesses.iter().any(|w| w.matches(s)));
    for line in accepted {
        let ts = cosignature_timestamp(line);
        match lines
            .iter_mut()
            .find(|l| l.name == line.name && l.key_id == line.key_id)
        {
            Some(l) if cosignature_timestamp(l) < ts => *l = line.clone(),
            Some(_) => {}
            None => lines.push(line.clone()),
        }
    }
    lines.sort_by(|a, b| (&a.name, a.key_id).cmp(&(&b.name, b.key_id)));
    let mut note = ours_note;
    for l in lines {
        note.add_signature(l)
            .map_err(|e| CosignRefusal::Malformed(e.to_string()))?;
    }
    let dir = log_dir.join(files::COSIGNED_DIR);
    if !dir.is_dir() {
        // A new directory is durable once its parent is fsynced too.
        fs::create_dir_all(&dir).map_err(|e| AuditError::io(&dir, e))?;
        diskio::fsync_dir(log_dir).map_err(|e| AuditError::io(log_dir, e))?;
    }
    diskio::atomic_write(&path, &note.to_bytes(), &diskio::Faults::disabled())
        .map_err(|e| AuditError::io(&path, e))?;
    prune(log_dir)?;
    let cosignatures = merkle::verify_cosignatures(&note, witnesses)
        .map_err(|e| AuditError::corrupt(&path, 0, e.to_string()))?;
    Ok(Cosigned {
        origin: cp.origin().to_string(),
        size: cp.size(),
        added,
        cosignatures,
    })
}

/// Deletes every cosigned checkpoint that is no witness key's newest.
fn prune(log_dir: &Path) -> Result<(), AuditError> {
    let mut seen: Vec<(String, u32)> = Vec::new();
    for (_, path, keys) in cosigned_files(log_dir)? {
        if keys.iter().all(|k| seen.contains(k)) {
            fs::remove_file(&path).map_err(|e| AuditError::io(&path, e))?;
        } else {
            seen.extend(keys);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use merkle::{Checkpoint, CosignatureSigner, Hash, SignerKey};

    fn signed(log: &SignerKey, size: u64) -> Vec<u8> {
        Checkpoint::new("fd/org", size, Hash([size as u8; 32]))
            .unwrap()
            .sign(&[log])
            .unwrap()
    }

    fn push(ours: &[u8], w: &CosignatureSigner, ts: u64) -> Note {
        let mut n = Note::parse(ours).unwrap();
        n.add_signature(w.cosign(n.text(), ts).unwrap()).unwrap();
        n
    }

    #[test]
    fn store_merge_serve_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let log = SignerKey::from_seed("fd", &[1; 32]).unwrap();
        let w1 = CosignatureSigner::from_seed("w1", &[2; 32]).unwrap();
        let w2 = CosignatureSigner::from_seed("w2", &[3; 32]).unwrap();
        let ws = [w1.verifier(), w2.verifier()];
        let cp5 = signed(&log, 5);
        std::fs::write(d.join("checkpoint"), &cp5).unwrap();
        assert_eq!(served_checkpoint(d).unwrap().unwrap(), cp5);
        assert_eq!(witnessed_by(d, w1.key_id()).unwrap(), None);

        // Two witnesses on size 5, one refreshing its line.
        let r = add(d, &cp5, &push(&cp5, &w1, 100), &ws, 100).unwrap();
        assert_eq!((r.size, r.cosignatures.len()), (5, 1));
        add(d, &cp5, &push(&cp5, &w2, 100), &ws, 100).unwrap();
        let r = add(d, &cp5, &push(&cp5, &w1, 150), &ws, 150).unwrap();
        let ts: Vec<u64> = r.cosignatures.iter().map(|c| c.timestamp).collect();
        assert_eq!(ts, [150, 100]);
        let served = served_checkpoint(d).unwrap().unwrap();
        assert!(served.starts_with(&cp5));
        assert_eq!(Note::parse(&served).unwrap().signatures().len(), 3);

        // The log moves on; w1 cosigns size 9: w1's newest is 9, w2's still 5.
        let cp9 = signed(&log, 9);
        std::fs::write(d.join("checkpoint"), &cp9).unwrap();
        assert_eq!(served_checkpoint(d).unwrap().unwrap(), cp9);
        add(d, &cp9, &push(&cp9, &w1, 200), &ws, 200).unwrap();
        let by1 = witnessed_by(d, w1.key_id()).unwrap().unwrap();
        assert!(by1.starts_with(&cp9));
        let by2 = witnessed_by(d, w2.key_id()).unwrap().unwrap();
        assert!(by2.starts_with(&cp5));
        assert_eq!(Note::parse(&by2).unwrap().signatures().len(), 3);
        assert_eq!(witnessed_by(d, 0x1234_5678).unwrap(), None);
        // w2 on 9 too: size 5 is nobody's newest now and pruned.
        add(d, &cp9, &push(&cp9, &w2, 200), &ws, 200).unwrap();
        assert!(!cosigned_path(d, 5).exists());
        assert!(
            witnessed_by(d, w2.key_id())
                .unwrap()
                .unwrap()
                .starts_with(&cp9)
        );
    }

    #[test]
    fn refusals() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let log = SignerKey::from_seed("fd", &[1; 32]).unwrap();
        let w1 = CosignatureSigner::from_seed("w1", &[2; 32]).unwrap();
        let stranger = CosignatureSigner::from_seed("w9", &[9; 32]).unwrap();
        let cp = signed(&log, 5);
        let ws = [w1.verifier()];
        assert!(matches!(
            add(d, &cp, &push(&cp, &w1, 1), &[], 1),
            Err(CosignRefusal::NoWitnessesConfigured)
        ));
        assert!(matches!(
            add(d, &cp, &push(&cp, &stranger, 1), &ws, 1),
            Err(CosignRefusal::UnknownWitness { signers }) if signers.starts_with("w9+")
        ));
        assert!(matches!(
            add(d, &cp, &Note::parse(&cp).unwrap(), &ws, 1),
            Err(CosignRefusal::UnknownWitness { signers }) if signers == "nobody but the log"
        ));
        let mut bad = Note::parse(&cp).unwrap();
        let mut line = w1.cosign(bad.text(), 1).unwrap();
        line.signature[30] ^= 1;
        bad.add_signature(line).unwrap();
        assert!(matches!(
            add(d, &cp, &bad, &ws, 1),
            Err(CosignRefusal::InvalidCosignature { .. })
        ));
        assert!(matches!(
            add(d, &cp, &push(&cp, &w1, 10_000), &ws, 1),
            Err(CosignRefusal::FutureTimestamp {
                timestamp: 10_000,
                ..
            })
        ));
        assert!(!d.join(files::COSIGNED_DIR).exists());
    }

    #[test]
    fn recent_finds_by_text() {
        let log = SignerKey::from_seed("fd", &[1; 32]).unwrap();
        let r = Recent::default();
        for s in 1..=3 {
            r.record("org", signed(&log, s));
        }
        let two = signed(&log, 2);
        let text = Note::parse(&two).unwrap().text().to_string();
        assert_eq!(r.find("org", &text), Some(two));
        assert_eq!(r.find("p/x", &text), None);
    }
}
