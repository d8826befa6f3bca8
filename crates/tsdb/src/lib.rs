//! `tsdb`: Flightdeck's metric store — a write-ahead log with group commit,
//! an in-memory head of compressed chunks, and immutable on-disk blocks,
//! per project.
//!
//! # Life of a sample
//!
//! 1. **Append.** The server calls [`Db::append`] (from tokio's blocking
//!    pool) with a project and a decoded [`model::WriteBatch`].
//! 2. **Head, under a shard's mutex.** The batch's series are split by
//!    label hash over the project's 8 head shards. Each series is looked up
//!    by its label hash (one lookup per series per batch) or created: labels
//!    interned into the project's symbol table, the new ref added to the
//!    postings. Each sample is checked — too old (before the newest block),
//!    out of order (older than the series' last sample and outside the
//!    out-of-order window), duplicate timestamp with a different value — and
//!    appended to the series' open Gorilla chunk (or the out-of-order
//!    buffer). Rejections are collected in the [`AppendReport`]; they do not
//!    fail the batch (Mimir's semantics).
//!    Remote write 1.0 comes through [`Db::append_keyed`] instead: each
//!    series is first looked up by a keyed hash of the raw bytes its labels
//!    were sent in, in a per-project cache of series refs ([`keyed`]); a
//!    hit goes straight to the sample checks, without its labels being
//!    decoded, validated, hashed or compared.
//! 3. **WAL.** Still under the shard's mutex, the accepted samples (and the
//!    labels of new series) are encoded as checksummed WAL records and
//!    queued for the WAL writer thread; the mutex is released.
//! 4. **Fsync.** The writer thread writes everything queued by all
//!    concurrent appenders with one `write` and one `fdatasync` (group
//!    commit) and wakes them. Only now does `append` return `Ok`: an
//!    acknowledged sample survives `kill -9` and power loss. A failed write
//!    or fsync poisons the store.
//! 5. **Chunk.** A head chunk is closed at 120 samples or at a block-range
//!    boundary; closed chunks are shared with queries by reference count.
//! 6. **Block.** When a project's head spans more than 1.5 × the block
//!    duration (2 h), a background thread cuts the oldest aligned range into
//!    an immutable block (`chunks`, `index`, `meta`; written to a temporary
//!    directory, fsynced, renamed; float chunks re-encoded as decimal
//!    chunks where smaller), drops it from the head (and the series left
//!    without data), logs that truncation, and checkpoints the WAL (samples
//!    now in blocks are dropped from it).
//! 7. **Compaction and retention.** The same thread merges adjacent blocks
//!    into 3× longer ones and deletes whole blocks past the retention time
//!    or size.
//!
//! # Per-project isolation
//!
//! Each project has its own head (series, symbols, postings) and its own
//! block directory `p/<project>/`; a query is built for one project and
//! can only reach that project's head and blocks. The WAL is shared: one
//! fsync stream for the whole process makes group commit work across
//! projects (per-project WALs would multiply fsyncs), and every WAL record
//! carries its project's number.
//!
//! # What it is not
//!
//! No HTTP, no PromQL, no async runtime: plain threads, mutexes and
//! condition variables (calls block; run them on a blocking pool). It does
//! not validate label names or enforce ingest limits other than series per
//! project; the `ingest` crate does that.

mod block;
pub mod chunk;
mod db;
mod enc;
mod error;
pub mod files;
mod head;
pub mod keyed;
mod postings;
mod query;
mod wal;

use std::time::Duration;

pub use block::{BlockMeta, ReadAhead};
pub use db::Db;
pub use error::Error;
pub use head::MAX_LISTED_REJECTIONS;
pub use keyed::{KeyedBatch, KeyedSeries};
pub use query::{Histograms, Querier, Samples, Series, SeriesSet};
pub use wal::{SYNC_BUCKETS, SyncHistogram};

/// How the store behaves; [`Options::default`] is Prometheus-like.
#[derive(Clone, Debug)]
pub struct Options {
    /// Blocks whose newest sample is older than this (relative to the
    /// project's newest sample) are deleted.
    pub retention: Duration,
    /// Per project: oldest blocks are deleted while the project's blocks
    /// take more bytes than this.
    pub max_bytes: Option<u64>,
    /// Length of a block cut from the head, ms (Prometheus: 2 h).
    pub block_duration_ms: i64,
    /// Samples up to this much older than a series' newest sample are
    /// accepted out of order (0: none, Prometheus' default).
    pub ooo_window_ms: i64,
    /// Live series per project; a new series past it is rejected
    /// ([`RejectReason::SeriesLimit`]). When one batch brings more new series
    /// than fit, which of them get in is unspecified (the head is sharded).
    pub max_series_per_project: usize,
    /// How often the background thread checks for blocks to cut, compact
    /// and delete. `None`: no background thread (tests call
    /// [`Db::maintain`] themselves).
    pub maintenance_interval: Option<Duration>,
    /// Fault injection for tests.
    pub faults: diskio::Faults,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retention: Duration::from_secs(15 * 24 * 3600),
            max_bytes: None,
            block_duration_ms: 2 * 3600 * 1000,
            ooo_window_ms: 0,
            max_series_per_project: 1_000_000,
            maintenance_interval: Some(Duration::from_secs(30)),
            faults: diskio::Faults::disabled(),
        }
    }
}

/// How long a project's data is kept; see [`Db::set_retention`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Blocks whose newest sample is older than this, relative to the
    /// project's newest sample, are deleted.
    pub time: Duration,
    /// Oldest blocks are deleted while the project's blocks take more.
    pub max_bytes: Option<u64>,
}

/// Why a sample was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    /// Older than the series' newest sample, outside the out-of-order window.
    OutOfOrder,
    /// Older than the head's minimum valid time (already cut into a block).
    TooOld,
    /// Same timestamp as a stored sample, different value.
    DuplicateTimestamp,
    /// The project has its maximum number of series; this one is new.
    SeriesLimit,
    /// A native histogram that fails validation.
    InvalidHistogram,
}

impl RejectReason {
    pub const ALL: [RejectReason; 5] = [
        RejectReason::OutOfOrder,
        RejectReason::TooOld,
        RejectReason::DuplicateTimestamp,
        RejectReason::SeriesLimit,
        RejectReason::InvalidHistogram,
    ];

    /// A stable snake_case name (for metrics and messages).
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::OutOfOrder => "out_of_order",
            RejectReason::TooOld => "too_old",
            RejectReason::DuplicateTimestamp => "duplicate_timestamp",
            RejectReason::SeriesLimit => "series_limit",
            RejectReason::InvalidHistogram => "invalid_histogram",
        }
    }
}

/// One rejected sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub labels: model::Labels,
    pub t: i64,
}

/// What an append did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppendReport {
    /// Float samples stored (exact duplicates count as accepted).
    pub accepted_samples: usize,
    pub accepted_histograms: usize,
    /// Series created by this batch.
    pub new_series: usize,
    /// The first [`MAX_LISTED_REJECTIONS`] rejections.
    pub rejected: Vec<Rejection>,
    /// Rejections per reason, in [`RejectReason::ALL`] order.
    pub rejected_counts: [usize; 5],
}

impl AppendReport {
    pub(crate) fn reject(&mut self, reason: RejectReason, labels: &model::Labels, t: i64) {
        let i = RejectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.rejected_counts[i] += 1;
        if self.rejected.len() < MAX_LISTED_REJECTIONS {
            self.rejected.push(Rejection {
                reason,
                labels: labels.clone(),
                t,
            });
        }
    }

    /// Rejections for one reason.
    pub fn rejected_count(&self, reason: RejectReason) -> usize {
        RejectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.rejected_counts[i])
    }

    /// All rejections.
    pub fn rejected_total(&self) -> usize {
        self.rejected_counts.iter().sum()
    }
}

/// Usage figures of one project.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProjectStats {
    /// Series in the head (active series).
    pub head_series: usize,
    /// Samples (float and histogram) accepted since the process started,
    /// WAL replay included.
    pub samples_appended: u64,
    /// Samples held: in blocks plus in the head.
    pub samples_stored: u64,
    /// Bytes of the project's blocks on disk (the shared WAL not included).
    pub block_bytes: u64,
    pub blocks: usize,
    /// Approximate heap bytes of the project's head.
    pub head_bytes: usize,
    /// Samples older than this are rejected as too old (the end of the
    /// newest block cut from the head; `i64::MIN` if none).
    pub min_valid_time: i64,
    /// Head time range (`None` if empty).
    pub head_range: Option<(i64, i64)>,
    /// Metric names with the most head series, largest first.
    pub top_metrics: Vec<(String, usize)>,
}
