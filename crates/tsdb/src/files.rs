//! Every file and directory name the store creates, in one place.
//!
//! ```text
//! <data>/tsdb/
//!   LOCK                      DirLock: one process per data dir
//!   wal/
//!     00000001 …              WAL segments (docs/format/tsdb-wal.md)
//!     checkpoint.00000007/    series/metadata records + samples still in the head
//!       00000000              (same record format as a segment)
//!   p/<project>/              one directory per project
//!     b-<mint>-<maxt>-<seq>/  an immutable block (docs/format/tsdb-block.md)
//!       chunks  index  meta
//!     tmp-…                   a block being written (deleted on open)
//! ```

/// Lock file inside the tsdb directory.
pub const LOCK: &str = "LOCK";
/// Directory of WAL segments and checkpoints.
pub const WAL_DIR: &str = "wal";
/// Prefix of a checkpoint directory (`checkpoint.<first kept segment>`).
pub const CHECKPOINT_PREFIX: &str = "checkpoint.";
/// Directory holding one directory per project.
pub const PROJECTS_DIR: &str = "p";
/// Prefix of a finished block directory.
pub const BLOCK_PREFIX: &str = "b-";
/// Prefix of anything being written (a block, a checkpoint); removed on open.
pub const TMP_PREFIX: &str = "tmp-";
/// A block's chunk data.
pub const BLOCK_CHUNKS: &str = "chunks";
/// A block's index (symbols, series, postings).
pub const BLOCK_INDEX: &str = "index";
/// A block's meta file (time range, stats, checksums of the other files).
pub const BLOCK_META: &str = "meta";

/// A WAL segment's file name: its number, zero-padded to 8 digits.
pub fn segment_name(n: u64) -> String {
    format!("{n:08}")
}

/// A block directory's name.
pub fn block_name(mint: i64, maxt: i64, seq: u64) -> String {
    format!("{BLOCK_PREFIX}{mint}-{maxt}-{seq}")
}
