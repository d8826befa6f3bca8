//! Every file name the audit store creates in its directory, in one place.
//!
//! ```text
//! <data>/audit/
//!   LOCK                          exclusive writer lock (flock), content unused
//!   00000000000000000001.seg      segment: events from seq 1 (see docs/format/audit-segment.md)
//!   00000000000000004097.seg      next segment, named by its first seq
//!   index.sqlite                  search index (derived; rebuilt from segments if lost)
//!   index.sqlite-wal, -shm        SQLite's WAL-mode companions
//!   subjects.sqlite[-wal|-shm]    subject keys sealing personal values (not derived; erasure deletes keys)
//!   signing-key                   Ed25519 checkpoint signer key (mode 0600, signed-note skey form)
//!   signing-keys                  every public signing key and when it was in use (see keys.rs)
//!   signing-key.new               the next signer key while a rotation is in progress
//!   tlog/org/                     the organization log as a C2SP tlog-tiles tree
//!   tlog/p/<slug>/                one project's log (see docs/format/audit-tlog.md)
//!     checkpoint                  latest signed checkpoint (replaced atomically)
//!     retained                    first entry index kept by retention (bundles below it deleted)
//!     cosigned/<size>             that checkpoint with the witness cosignatures accepted for it
//!     tile/<L>/<N>[.p/<W>]        hash tiles (write-once)
//!     tile/entries/<N>[.p/<W>]    entry bundles (write-once)
//!
//! an auditor bundle (`flightdeck audit bundle --out DIR`):
//! DIR/checkpoint, DIR/tile/...    one log's files as above, for its checkpoint's size
//! DIR/key                         the verifier key string
//! DIR/README.md                   how to verify it
//! ```

/// Lock file held by the one process writing the directory.
pub const LOCK: &str = "LOCK";

/// Suffix of segment files; the stem is the first seq, zero-padded to 20 digits.
pub const SEGMENT_SUFFIX: &str = ".seg";

/// Width of the zero-padded first seq in a segment name (fits `u64::MAX`).
pub const SEGMENT_DIGITS: usize = 20;

/// The subject keys sealing personal values (not derived: losing it loses
/// every personal value; erasure deletes keys from it). See `personal.rs`.
pub const SUBJECTS: &str = "subjects.sqlite";

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

/// The checkpoint signer key, in signed-note `PRIVATE+KEY+...` form.
pub const SIGNING_KEY: &str = "signing-key";

/// Every public signing key and its span of use, one line each.
pub const SIGNING_KEYS: &str = "signing-keys";

/// The next signer key, present only while a rotation is in progress.
pub const SIGNING_KEY_NEW: &str = "signing-key.new";

/// Directory of a log holding cosigned checkpoints, one file per tree size.
pub const COSIGNED_DIR: &str = "cosigned";

/// Directory holding one tlog-tiles tree per log.
pub const TLOG_DIR: &str = "tlog";

/// A log's latest signed checkpoint, relative to its tree directory.
pub const CHECKPOINT: &str = "checkpoint";

/// In a tree directory: the first entry index retention kept (decimal and
/// a newline; absent = 0). Entry bundles below it were deleted on purpose;
/// hash tiles and checkpoints stay.
pub const RETAINED: &str = "retained";

/// In an auditor bundle (`flightdeck audit bundle`, [`crate::bundle`]),
/// beside `checkpoint` and `tile/`: the verifier key string, one line...
pub const BUNDLE_KEY: &str = "key";

/// ... and how to verify the bundle.
pub const BUNDLE_README: &str = "README.md";

/// The tree directory of a log, relative to [`TLOG_DIR`]: `org` for the
/// organization log, `p/<slug>` for a project. A slug that is not made of
/// `[A-Za-z0-9._-]` only (or is `.` / `..`) is written as `p/~<hex of its
/// bytes>`, so that no log name can leave the directory; `~` never occurs
/// in a plain slug, so the two forms cannot collide.
pub fn tlog_log_dir(log: &crate::LogKey) -> String {
    match log {
        crate::LogKey::Organization => "org".to_string(),
        crate::LogKey::Project(slug) => {
            let plain = !slug.is_empty()
                && slug != "."
                && slug != ".."
                && slug
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if plain {
                format!("p/{slug}")
            } else {
                format!("p/~{}", hex::encode(slug.as_bytes()))
            }
        }
    }
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

    #[test]
    fn tlog_dirs_stay_inside() {
        use crate::LogKey;
        assert_eq!(tlog_log_dir(&LogKey::Organization), "org");
        assert_eq!(tlog_log_dir(&LogKey::Project("web-1".into())), "p/web-1");
        assert_eq!(tlog_log_dir(&LogKey::Project("..".into())), "p/~2e2e");
        assert_eq!(tlog_log_dir(&LogKey::Project("a/b".into())), "p/~612f62");
    }
}
