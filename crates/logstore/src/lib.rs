//! `logstore`: Flightdeck's durable, compressed log store, per project.
//!
//! A project (a slug) holds *streams*, each identified by its label set
//! ([`model::Labels`]); a stream holds *entries*: a nanosecond timestamp,
//! a line and structured metadata. Entries of a stream may arrive out of
//! order (as Loki ≥ 2.4 accepts).
//!
//! # Life of a log line
//!
//! 1. [`Store::append`] encodes the batch as one WAL record and queues it
//!    on the [`wal::Wal`]; the record joins the next *group commit* (one
//!    `write` + one `fdatasync` for every concurrent appender).
//! 2. The entries go into their stream's *head* ([`head`]): an open buffer
//!    that is sorted, encoded and zstd-compressed into an in-memory block
//!    ([`block`]) with a trigram bloom filter ([`bloom`]) once it reaches
//!    [`Options::block_bytes`] or [`Options::block_entries`].
//! 3. `append` returns once the WAL fsync covering its record returned:
//!    the line is durable. Live-tail subscribers ([`Store::subscribe`])
//!    get the batch then.
//! 4. [`Store::flush`] (called when heads exceed [`Options::flush_bytes`],
//!    at open, or by the owner's timer through [`Store::flush_if_due`])
//!    rotates the WAL, freezes every head, and
//!    writes each project's frozen blocks into one immutable *segment*
//!    file ([`segment`]: tmp + fsync + rename + directory fsync). Then the
//!    WAL segments before the rotation are deleted.
//! 5. Queries ([`Store::select`] and friends, in [`read`]) merge segment
//!    blocks, frozen heads and live heads per stream, in time order, and
//!    skip blocks outside the time range or whose bloom rules out a
//!    required substring. Retention ([`Store::apply_retention`]) deletes
//!    whole segments by age and by size; [`Store::compact`] merges small
//!    segments (blocks copied as they are).
//!
//! After a crash, [`Store::open`] loads the segments' indexes and replays
//! the WAL, skipping a project's records that a segment already holds (each
//! segment records its *WAL cut*), then flushes.
//!
//! It is *not* a query engine (no LogQL: a `logql` evaluator reads through
//! the narrow interface in [`read`]), knows no HTTP and no async runtime,
//! and does not depend on the metric store.

pub mod block;
pub mod bloom;
mod enc;
mod error;
pub mod files;
pub mod head;
pub mod read;
pub mod segment;
mod store;
pub mod wal;

pub use error::Error;
pub use read::{Direction, Query, Stats, StreamIter};
pub use store::{AppendReport, Retention, RetentionReport, Store, TailBatch};

use diskio::Faults;

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Nanoseconds since the Unix epoch.
    pub ts: i64,
    pub line: String,
    /// Structured metadata (Loki 3's name/value pairs beside the line).
    pub metadata: Vec<(String, String)>,
}

impl Entry {
    pub fn new(ts: i64, line: impl Into<String>) -> Entry {
        Entry {
            ts,
            line: line.into(),
            metadata: Vec::new(),
        }
    }
}

/// Entries for one stream, as a push request carries them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamBatch {
    pub labels: model::Labels,
    pub entries: Vec<Entry>,
}

/// How the store is tuned. [`Options::default`] is what production uses.
#[derive(Clone, Debug)]
pub struct Options {
    /// A head block is sealed (compressed) once its lines reach this many
    /// bytes …
    pub block_bytes: usize,
    /// … or this many entries.
    pub block_entries: usize,
    /// zstd level of blocks (bench/results/logs-zstd-2026-11-27.md has
    /// level vs ratio and speed: 12 gives the HTTP bench's mix 10.0× for
    /// ~10 % more ingest CPU than 9).
    pub zstd_level: i32,
    /// Bloom filter bits per distinct trigram of a block.
    pub bloom_bits_per_trigram: u32,
    /// Longest line accepted, in bytes; a longer one fails the append.
    pub max_line_bytes: usize,
    /// Heads are flushed into segments once their lines exceed this many
    /// bytes (all projects together).
    pub flush_bytes: usize,
    /// Queue length of a live-tail subscriber; one that falls this many
    /// batches behind is dropped.
    pub tail_queue: usize,
    pub faults: Faults,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            block_bytes: 1 << 20,
            block_entries: 65_536,
            zstd_level: 12,
            bloom_bits_per_trigram: 2,
            max_line_bytes: 256 << 10,
            flush_bytes: 256 << 20,
            tail_queue: 1024,
            faults: Faults::disabled(),
        }
    }
}

/// Is `s` a valid project slug (`[a-z0-9][a-z0-9_-]*`, at most 64 bytes)?
/// Slugs name directories, so nothing else is accepted.
pub fn is_valid_project(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}
