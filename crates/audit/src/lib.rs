//! `audit`: Flightdeck's audit log — the event schema, sequencing, durable
//! group-committed append to checksummed segments, crash recovery, a SQLite
//! search index derived from the segments, and streaming export.
//!
//! Entry point: [`AuditLog`]. On-disk format: `docs/format/audit-segment.md`.
//! Crash contract: see the [`log`] module.
//!
//! It is *not* an HTTP layer (no axum, hyper or tokio here: the server
//! bridges `append_with` into async), and not a metadata store. The
//! transparency logs ([`tlog`]: tiles and signed checkpoints) are derived
//! from the segments' leaves, signed with the keys of [`keys`] (rotatable)
//! and cosigned by witnesses ([`witness`]); [`proof`] makes inclusion and
//! consistency proofs and receipts from their files; [`verify`] checks one
//! log from its public tlog-tiles files alone, [`monitor`] only what changed
//! since its last run, and [`receipt`] one receipt with nothing but the
//! verifier key; [`bundle`] copies one log into an auditor's folder.
//! Personal values are sealed beside the leaves
//! ([`personal`]); [`retention`] trims old entries and [`fsck`] checks the
//! private copies against the signed trees.

pub mod bundle;
mod canonical;
pub mod error;
pub mod event;
pub mod files;
pub mod fsck;
mod index;
pub mod keys;
pub mod log;
pub mod monitor;
pub mod personal;
pub mod proof;
pub mod query;
pub mod receipt;
pub mod retention;
pub mod rng;
pub mod segment;
pub mod tlog;
pub mod verify;
pub mod witness;

pub use error::AuditError;
pub use event::*;
pub use log::{Acked, AckedDone, AuditLog, BatchDone, Clock, Done, Export, Options, Stats};
/// The hash type of proofs and checkpoints (`merkle`'s).
pub use merkle::Hash;
pub use proof::{
    ConsistencyProof, EntryRef, InclusionProof, LogFiles, ProofError, SignedCheckpoint,
};
pub use query::{DEFAULT_LIMIT, MAX_LIMIT, Order, Page, Query};
pub use receipt::{Receipt, ReceiptError, Verified, verify_receipt};
pub use segment::MAX_EVENT_BYTES;
pub use tlog::CheckpointDone;

/// Case-insensitive substring test used by [`Query::text`], exposed so
/// tests and tools can check results against it.
pub fn text_matches(event_json: &[u8], needle: &str) -> bool {
    index::icontains(event_json, &needle.to_lowercase())
}
