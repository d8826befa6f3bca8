//! Every file and directory name the log store creates, in one place.
//!
//! ```text
//! <dir>/
//!   LOCK                         DirLock: one process per store directory
//!   wal/
//!     00000001 …                 WAL segments (docs/format/logstore.md)
//!     00000009.tmp               a segment being created (removed on open)
//!   p/<project>/                 one directory per project (slug)
//!     seg-0000000000000001       immutable segment files (docs/format/logstore.md)
//!     seg-….tmp                  a segment being written (removed on open)
//! ```

/// Lock file in the store directory.
pub const LOCK: &str = "LOCK";
/// Directory of WAL segments.
pub const WAL_DIR: &str = "wal";
/// Directory holding one directory per project.
pub const PROJECTS_DIR: &str = "p";
/// Prefix of a segment file name.
pub const SEGMENT_PREFIX: &str = "seg-";
/// Suffix of any file being written; such files are removed on open.
pub const TMP_SUFFIX: &str = ".tmp";

/// A WAL segment's file name: its number, zero-padded to 8 digits.
pub fn wal_segment_name(n: u64) -> String {
    format!("{n:08}")
}

/// A project segment's file name.
pub fn segment_name(seq: u64) -> String {
    format!("{SEGMENT_PREFIX}{seq:016}")
}

/// The sequence number of a segment file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let n = name.strip_prefix(SEGMENT_PREFIX)?;
    if n.len() != 16 {
        return None;
    }
    n.parse().ok()
}
