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
//! from the segments' canonical bytes; [`verify`] checks one of them from
//! its public tlog-tiles files alone, and [`bundle`] copies one into an
//! auditor's folder.

pub mod bundle;
mod canonical;
pub mod error;
pub mod event;
pub mod files;
mod index;
pub mod log;
pub mod query;
pub mod segment;
pub mod tlog;
pub mod verify;

pub use error::AuditError;
pub use event::*;
pub use log::{AuditLog, Clock, Done, Export, Options, Stats};
pub use query::{DEFAULT_LIMIT, MAX_LIMIT, Order, Page, Query};
pub use segment::MAX_EVENT_BYTES;

/// Case-insensitive substring test used by [`Query::text`], exposed so
/// tests and tools can check results against it.
pub fn text_matches(event_json: &[u8], needle: &str) -> bool {
    index::icontains(event_json, &needle.to_lowercase())
}
