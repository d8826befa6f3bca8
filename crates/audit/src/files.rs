//! Every file name the audit store creates in its directory, in one place.
//!
//! ```text
//! <data>/audit/
//!   LOCK                          exclusive writer lock (flock), content unused
//!   00000000000000000001.seg      segment: events from seq 1 (see docs/format/audit-segment.md)
//!   00000000000000004097.seg      next segment, named by its first seq
//!   index.sqlite                  search index (derived; rebuilt from segments if lost)
//!   index.sqlite-wal, -shm        SQLite's WAL-mode companions
//! ```

/// Lock file held by the one process writing the directory.
pub const LOCK: &str = "LOCK";

/// Suffix of segment files; the stem is the first seq, zero-padded to 20 digits.
pub const SEGMENT_SUFFIX: &str = ".seg";

/// Width of the zero-padded first seq in a segment name (fits `u64::MAX`).
pub const SEGMENT_DIGITS: usize = 20;

/// The SQLite search index.
pub const INDEX: &str = "index.sqlite";

/// SQLite's companions of [`INDEX`] in WAL mode (removed with it on rebuild).
pub const INDEX_COMPANIONS: [&str; 2] = ["index.sqlite-wal", "index.sqlite-shm"];

/// The file name of the segment whose first event has `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!(
        "{first_seq:0width$}{SEGMENT_SUFFIX}",
        width = SEGMENT_DIGITS
    )
}

/// Parses a segment file name back into its first seq; `None` for any
/// other file.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    if stem.len() != SEGMENT_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_sort() {
        assert_eq!(segment_name(1), "00000000000000000001.seg");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert!(segment_name(9) < segment_name(10));
        for bad in [
            "1.seg",
            "0000000000000000000x.seg",
            "00000000000000000001.seg.tmp",
            "LOCK",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }
}
