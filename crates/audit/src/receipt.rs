//! Audit receipts: a self-contained proof that one audit entry is in a
//! log's signed tree, verifiable offline with nothing but the log's
//! verifier key — and the verifier behind `flightdeck audit verify-receipt`.
//!
//! A receipt is a C2SP tlog-proof ([`merkle::TlogProof`], c2sp.org/tlog-proof)
//! whose `extra` line carries the entry: the exact bytes of the leaf (the
//! event's stored canonical JSON, as in the entry bundle), base64. The
//! entry is authenticated by hashing it (`SHA-256(0x00 ‖ entry)`) and
//! checking the inclusion proof against the signed checkpoint's root; the
//! receipt needs no other file. Format: `docs/format/audit-tlog.md`.
//!
//! The entry is otherwise opaque here. Parsing it as an [`Event`] is only
//! used to show it and to name a failure precisely (an entry of another log
//! than the checkpoint's, an index that differs from the entry's own
//! `log_index`); an entry that does not parse is still verified.

use merkle::{
    Checkpoint, Hash, Note, NoteError, TlogProof, TlogProofError, VerifierKey, Verifiers,
};

use crate::event::{Event, LogKey};

/// A receipt: the entry, its index, its inclusion proof and the signed
/// checkpoint the proof leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The leaf bytes, exactly as stored in the entry bundle.
    pub entry: Vec<u8>,
    /// The entry's `log_index`.
    pub index: u64,
    /// Inclusion proof in the checkpoint's tree, the leaf's sibling first.
    pub hashes: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: Vec<u8>,
}

impl Receipt {
    /// The receipt as a C2SP tlog-proof text (`.tlog-proof`).
    pub fn to_bytes(&self) -> Vec<u8> {
        TlogProof {
            extra: Some(self.entry.clone()),
            index: self.index,
            hashes: self.hashes.clone(),
            checkpoint: self.checkpoint.clone(),
        }
        .to_bytes()
    }

    /// Parses a receipt (verifies nothing).
    pub fn parse(bytes: &[u8]) -> Result<Receipt, ReceiptError> {
        let p = TlogProof::parse(bytes).map_err(ReceiptError::Format)?;
        let entry = p.extra.ok_or(ReceiptError::NoEntry)?;
        Ok(Receipt {
            entry,
            index: p.index,
            hashes: p.hashes,
            checkpoint: p.checkpoint,
        })
    }
}

/// A receipt that verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The checkpoint's origin: which log.
    pub origin: String,
    /// The entry's index.
    pub index: u64,
    /// The checkpoint's tree size.
    pub tree_size: u64,
    /// The checkpoint's root.
    pub root: Hash,
    /// The key that signed it (`<name>+<hex id>`).
    pub signer: String,
    /// The entry's bytes.
    pub entry: Vec<u8>,
    /// The entry parsed as an audit event, when it is one.
    pub event: Option<Event>,
}

impl std::fmt::Display for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OK: entry {} of {} is in its signed tree of size {} (root {}), checkpoint signed by {}",
            self.index,
            self.origin,
            self.tree_size,
            self.root.to_base64(),
            self.signer
        )
    }
}

/// Why a receipt did not verify. Each variant names the failing part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Not a tlog-proof.
    #[error("not a receipt: {0}")]
    Format(TlogProofError),
    /// A tlog-proof without the entry.
    #[error("not an audit receipt: it has no `extra` line carrying the entry bytes")]
    NoEntry,
    /// The checkpoint part is not a signed checkpoint.
    #[error("checkpoint: {0}")]
    CheckpointFormat(String),
    /// A signature by the key that does not verify.
    #[error(
        "checkpoint: signature does not verify with key {key}: the checkpoint text was altered"
    )]
    BadSignature {
        /// The key given.
        key: String,
    },
    /// No signature by the key.
    #[error(
        "checkpoint: no signature by key {key} (signed by {signers}): wrong key, or another log's checkpoint"
    )]
    OtherSigner {
        /// The key given.
        key: String,
        /// Who signed it.
        signers: String,
    },
    /// An origin that is no Flightdeck audit log under the key's name.
    #[error(
        "checkpoint: origin {origin:?} is not an audit log of key {key_name} ({key_name}/org or {key_name}/p/<slug>)"
    )]
    ForeignOrigin {
        /// The checkpoint's origin.
        origin: String,
        /// The key's name.
        key_name: String,
    },
    /// The checkpoint is of another log than expected.
    #[error("checkpoint is of log {origin:?}, but {why} {expected:?}: a checkpoint of another log")]
    OtherLog {
        /// The checkpoint's origin.
        origin: String,
        /// The log expected.
        expected: String,
        /// Where the expectation comes from.
        why: &'static str,
    },
    /// The receipt's index is not the entry's own `log_index`.
    #[error(
        "index {index} in the receipt, but the entry's log_index is {entry}: the index was changed"
    )]
    IndexMismatch {
        /// The receipt's index line.
        index: u64,
        /// The entry's `log_index`.
        entry: u64,
    },
    /// An index outside the checkpoint's tree.
    #[error("index {index} is not in the checkpoint's tree of size {size}")]
    IndexBeyondTree {
        /// The receipt's index.
        index: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// The proof has the wrong number of hashes.
    #[error(
        "inclusion proof has {got} hashes, but index {index} in a tree of size {size} needs {want}: the proof or the index was changed"
    )]
    ProofLength {
        /// Hashes given.
        got: usize,
        /// Hashes needed.
        want: usize,
        /// The receipt's index.
        index: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// The proof leads to another root.
    #[error(
        "inclusion proof does not lead to the checkpoint's root (computed {computed}, signed {signed}): the entry bytes, the index or a proof hash were altered"
    )]
    RootMismatch {
        /// Root the proof gives.
        computed: String,
        /// Root in the checkpoint.
        signed: String,
    },
}

/// Verifies a receipt offline: the checkpoint's signature by `key`, its
/// origin (`origin` if given, else any `<key name>/org` or
/// `<key name>/p/<slug>`, and the entry's own log when it is an audit
/// event), the entry's `log_index` (when it is an event), and the inclusion
/// of the entry's leaf hash at the index in the signed tree.
pub fn verify_receipt(
    bytes: &[u8],
    key: &VerifierKey,
    origin: Option<&str>,
) -> Result<Verified, ReceiptError> {
    let r = Receipt::parse(bytes)?;
    let note = Note::parse(&r.checkpoint)
        .map_err(|e| ReceiptError::CheckpointFormat(format!("not a signed note: {e}")))?;
    let shown_key = key.to_string();
    match note.verify(&Verifiers::new([key.clone()])) {
        Ok(_) => {}
        Err(NoteError::InvalidSignature { .. }) => {
            return Err(ReceiptError::BadSignature { key: shown_key });
        }
        Err(NoteError::UnknownSigner) => {
            let signers: Vec<String> = note
                .signatures()
                .iter()
                .map(|s| format!("{}+{:08x}", s.name, s.key_id))
                .collect();
            return Err(ReceiptError::OtherSigner {
                key: shown_key,
                signers: signers.join(", "),
            });
        }
        Err(e) => return Err(ReceiptError::CheckpointFormat(e.to_string())),
    }
    let cp = Checkpoint::parse(note.text())
        .map_err(|e| ReceiptError::CheckpointFormat(format!("not a tlog checkpoint: {e}")))?;

    match origin {
        Some(o) if cp.origin() != o => {
            return Err(ReceiptError::OtherLog {
                origin: cp.origin().to_string(),
                expected: o.to_string(),
                why: "the expected origin is",
            });
        }
        Some(_) => {}
        None => {
            let ours = cp
                .origin()
                .strip_prefix(key.name())
                .and_then(|r| r.strip_prefix('/'))
                .and_then(crate::verify::log_of_dir);
            if ours.is_none() {
                return Err(ReceiptError::ForeignOrigin {
                    origin: cp.origin().to_string(),
                    key_name: key.name().to_string(),
                });
            }
        }
    }
    let event = Event::from_bytes(&r.entry).ok();
    if let Some(e) = &event {
        let want = crate::tlog::origin(key.name(), &LogKey::of(e.project.as_deref()));
        if origin.is_none() && cp.origin() != want {
            return Err(ReceiptError::OtherLog {
                origin: cp.origin().to_string(),
                expected: want,
                why: "the entry is an event of",
            });
        }
        if e.log_index != r.index {
            return Err(ReceiptError::IndexMismatch {
                index: r.index,
                entry: e.log_index,
            });
        }
    }
    let size = cp.size();
    if r.index >= size {
        return Err(ReceiptError::IndexBeyondTree {
            index: r.index,
            size,
        });
    }
    let leaf = merkle::leaf_hash(&r.entry);
    let computed = merkle::root_from_inclusion_proof(r.index, size, &leaf, &r.hashes).map_err(
        |e| match e {
            merkle::VerifyError::ProofLength { got, want } => ReceiptError::ProofLength {
                got,
                want,
                index: r.index,
                size,
            },
            _ => ReceiptError::IndexBeyondTree {
                index: r.index,
                size,
            },
        },
    )?;
    if computed != *cp.root() {
        return Err(ReceiptError::RootMismatch {
            computed: computed.to_base64(),
            signed: cp.root().to_base64(),
        });
    }
    Ok(Verified {
        origin: cp.origin().to_string(),
        index: r.index,
        tree_size: size,
        root: *cp.root(),
        signer: format!("{}+{:08x}", key.name(), key.key_id()),
        entry: r.entry,
        event,
    })
}
