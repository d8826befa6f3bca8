//! Recovery: torn tails are truncated, damage is refused, the index is
//! rebuilt from the segments.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use audit::*;

use crate::support::*;

fn fill(dir: &Path, n: usize, opts: Options) -> Vec<Event> {
    let log = AuditLog::open(dir, opts).unwrap();
    let events: Vec<Event> = (0..n).map(|i| log.append(simple(i)).unwrap()).collect();
    log.shutdown();
    events
}

fn small_segments() -> Options {
    Options {
        max_segment_bytes: 2048,
        ..Options::default()
    }
}

#[test]
fn a_record_cut_mid_way_is_dropped_and_appends_continue() {
    let d = tempfile::tempdir().unwrap();
    let events = fill(d.path(), 20, Options::default());
    let seg = &segments(d.path())[0];
    let len = fs::metadata(seg).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(seg)
        .unwrap()
        .set_len(len - 30)
        .unwrap();
    let log = open(d.path());
    let got = all(&log);
    assert_eq!(got, events[..19].to_vec());
    assert_eq!(log.last_seq(), 19);
    let next = log.append(simple(99)).unwrap();
    assert_eq!((next.seq, next.log_index), (20, 19));
    log.shutdown();
    drop(log);
    assert_eq!(all(&open(d.path())).len(), 20);
}

#[test]
fn garbage_after_the_last_record_is_dropped() {
    let d = tempfile::tempdir().unwrap();
    let events = fill(d.path(), 20, Options::default());
    let seg = &segments(d.path())[0];
    let clean_len = fs::metadata(seg).unwrap().len();
    let mut f = OpenOptions::new().append(true).open(seg).unwrap();
    f.write_all(&[0xAB; 100]).unwrap();
    f.write_all(&[0; 4000]).unwrap();
    drop(f);
    let log = open(d.path());
    assert_eq!(all(&log), events);
    assert_eq!(fs::metadata(seg).unwrap().len(), clean_len);
    assert_eq!(log.append(simple(99)).unwrap().seq, 21);
}

#[test]
fn a_torn_header_of_a_new_segment_is_removed() {
    let d = tempfile::tempdir().unwrap();
    let events = fill(d.path(), 5, Options::default());
    let stray = d.path().join(files::segment_name(6));
    fs::write(&stray, &segment::encode_header(6)[..10]).unwrap();
    let log = open(d.path());
    assert!(!stray.exists());
    assert_eq!(all(&log), events);
    assert_eq!(log.append(simple(99)).unwrap().seq, 6);
}

#[test]
fn damage_in_a_sealed_segment_is_a_typed_corruption_error() {
    let d = tempfile::tempdir().unwrap();
    fill(d.path(), 30, small_segments());
    let segs = segments(d.path());
    assert!(segs.len() >= 3);
    let victim = &segs[1];
    let mut bytes = fs::read(victim).unwrap();
    let at = segment::HEADER_LEN + 8 + 20; // inside the first record's payload
    bytes[at] ^= 0x01;
    fs::write(victim, &bytes).unwrap();
    for _ in 0..2 {
        match AuditLog::open(d.path(), small_segments()) {
            Err(AuditError::Corrupt {
                path,
                offset,
                reason,
            }) => {
                assert_eq!(&path, victim);
                assert_eq!(offset, segment::HEADER_LEN as u64);
                assert!(reason.contains("checksum"), "{reason}");
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened a corrupt log"),
        }
    }
    // Nothing was "repaired" away.
    assert_eq!(fs::read(victim).unwrap(), bytes);
    assert!(matches!(
        AuditLog::open_read_only(d.path()),
        Err(AuditError::Corrupt { .. })
    ));
}

#[test]
fn damage_before_valid_records_of_the_last_segment_is_not_truncated() {
    let d = tempfile::tempdir().unwrap();
    fill(d.path(), 10, Options::default());
    let seg = &segments(d.path())[0];
    let mut bytes = fs::read(seg).unwrap();
    bytes[segment::HEADER_LEN + 8 + 5] ^= 0x20;
    fs::write(seg, &bytes).unwrap();
    match AuditLog::open(d.path(), Options::default()) {
        Err(AuditError::Corrupt { path, offset, .. }) => {
            assert_eq!(&path, seg);
            assert_eq!(offset, segment::HEADER_LEN as u64);
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened a corrupt log"),
    }
    assert_eq!(fs::read(seg).unwrap(), bytes);
}

#[test]
fn a_deleted_index_is_rebuilt() {
    let d = tempfile::tempdir().unwrap();
    let events = fill(d.path(), 25, small_segments());
    for p in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = fs::remove_file(d.path().join(p));
    }
    let log = AuditLog::open(d.path(), small_segments()).unwrap();
    assert_eq!(all(&log), events);
    let e = &events[7];
    assert_eq!(log.get(&e.log_key(), &e.id).unwrap().as_ref(), Some(e));
    let next = log.append(simple(1)).unwrap();
    assert_eq!((next.seq, next.log_index), (26, 25));
}

#[test]
fn a_garbage_index_is_rebuilt() {
    let d = tempfile::tempdir().unwrap();
    let events = fill(d.path(), 10, Options::default());
    for p in ["index.sqlite-wal", "index.sqlite-shm"] {
        let _ = fs::remove_file(d.path().join(p));
    }
    fs::write(d.path().join("index.sqlite"), vec![0x5A; 8192]).unwrap();
    let log = open(d.path());
    assert_eq!(all(&log), events);
}

#[test]
fn an_index_ahead_of_the_segments_is_rebuilt() {
    let d = tempfile::tempdir().unwrap();
    let events = fill(d.path(), 10, Options::default());
    // Lose the last record's bytes behind the index's back.
    let seg = &segments(d.path())[0];
    let starts = record_starts(seg);
    OpenOptions::new()
        .write(true)
        .open(seg)
        .unwrap()
        .set_len(starts[9])
        .unwrap();
    let log = open(d.path());
    assert_eq!(all(&log), events[..9].to_vec());
    assert_eq!(log.append(simple(1)).unwrap().seq, 10);
}

/// Offsets of the records (frame headers) of a segment.
fn record_starts(seg: &std::path::Path) -> Vec<u64> {
    let b = fs::read(seg).unwrap();
    let mut at = audit::segment::HEADER_LEN;
    let mut out = Vec::new();
    while at + 8 <= b.len() {
        out.push(at as u64);
        let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        at += 8 + len;
    }
    out
}

/// A data directory of an older Flightdeck (index schema version 4: text
/// in every row) opens: the index is rebuilt from the segments in the
/// current schema, and every search finds what it did. A read-only open
/// (the CLI) and `verify` ignore the old index instead of trusting it.
#[test]
fn an_index_of_schema_version_4_is_rebuilt() {
    let d = tempfile::tempdir().unwrap();
    let events = fill(d.path(), 30, Options::default());
    for p in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = fs::remove_file(d.path().join(p));
    }
    // Version 4's schema, with a watermark claiming every event and no
    // rows: trusted, it would hide them all.
    let c = rusqlite::Connection::open(d.path().join("index.sqlite")).unwrap();
    c.execute_batch(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
         CREATE TABLE logs (log TEXT PRIMARY KEY, next_index INTEGER NOT NULL) WITHOUT ROWID;
         CREATE TABLE events (seq INTEGER PRIMARY KEY, log TEXT NOT NULL,
             log_index INTEGER NOT NULL, id TEXT NOT NULL, id_key INTEGER NOT NULL,
             time_ns INTEGER NOT NULL, principal_id TEXT NOT NULL,
             principal_type TEXT NOT NULL, action TEXT NOT NULL, resource_type TEXT,
             resource_id TEXT, status TEXT NOT NULL, segment INTEGER NOT NULL,
             offset INTEGER NOT NULL, len INTEGER NOT NULL);
         CREATE INDEX ev_log_action ON events(log, action, seq);
         INSERT INTO meta(key, value) VALUES ('watermark', 30), ('last_time_ns', 0);
         PRAGMA user_version = 4;",
    )
    .unwrap();
    drop(c);

    let ro = AuditLog::open_read_only(d.path()).unwrap();
    assert_eq!(all(&ro), events, "read-only: the old index is not used");
    drop(ro);
    audit::fsck::check_store(d.path()).unwrap();

    let log = open(d.path());
    assert_eq!(all(&log), events);
    let e = &events[11];
    assert_eq!(log.get(&e.log_key(), &e.id).unwrap().as_ref(), Some(e));
    let q = Query {
        log: Some(e.log_key()),
        action: Some(e.action.clone()),
        limit: 100,
        ..Query::default()
    };
    let want: Vec<u64> = events
        .iter()
        .rev()
        .filter(|x| x.log_key() == e.log_key() && x.action == e.action)
        .map(|x| x.seq)
        .collect();
    let got: Vec<u64> = log
        .search(&q)
        .unwrap()
        .events
        .iter()
        .map(|x| x.seq)
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);
    log.shutdown();
    let c = rusqlite::Connection::open(d.path().join("index.sqlite")).unwrap();
    let version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 5);
    let rows: i64 = c
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 30);
}
