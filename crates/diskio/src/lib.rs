//! `diskio`: the small, storage-agnostic disk toolkit the stores build on.
//!
//! - [`atomic_write`] and [`fsync_dir`]: replace a file so that a crash leaves
//!   either the old or the new content, never a mix;
//! - [`enc`]: LEB128 varints, zigzag, length-prefixed strings and a
//!   bounds-checked reader, the byte vocabulary of the stores' formats;
//! - [`frame`]: checksummed record framing (`len | crc32 | payload`) and a
//!   reader that tells a torn tail (truncate it) from corruption (refuse);
//! - [`DirLock`]: an exclusive, process-wide lock on a store directory;
//! - [`Faults`]: fault-injection switches that writing code consults before
//!   each write and fsync, so tests can make the disk fail on demand.
//!
//! It is *not* a storage engine: it knows nothing about metrics, logs or
//! audit events, has no threads and no async, and never interprets payloads.

pub mod enc;
pub mod faults;
pub mod frame;
pub mod fsutil;
pub mod lock;

pub use faults::Faults;
pub use frame::{FrameError, Record, Records, ScanEnd, encode_record, scan};
pub use fsutil::{atomic_write, atomic_write_defer_dir_sync, fsync_dir, sync_file, write_all};
pub use lock::{DirLock, LockError};
