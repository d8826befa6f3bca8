//! Torn WAL tails, damaged WAL and segment files, and write failures.

use std::fs;
use std::path::{Path, PathBuf};

use diskio::Faults;
use logstore::{Direction, Error, Options, Query, Store};

use crate::common::*;

fn wal_segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn segment_files(dir: &Path, project: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("p").join(project))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn count(s: &Store) -> usize {
    times(s, "p", &[]).iter().map(|x| x.1.len()).sum()
}

#[test]
fn torn_wal_tail_at_every_offset_keeps_whole_appends() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    for i in 0..5 {
        s.append("p", &[sb(&[("a", "1")], &[(i, "an entry")])])
            .unwrap();
    }
    let seg = wal_segments(d.path()).pop().unwrap();
    let before = fs::metadata(&seg).unwrap().len();
    s.append(
        "p",
        &[
            sb(&[("a", "1")], &[(5, "last")]),
            sb(&[("a", "2")], &[(6, "other stream")]),
        ],
    )
    .unwrap();
    s.close().unwrap();
    drop(s);
    let full = fs::metadata(&seg).unwrap().len();
    assert!(full > before);
    for cut in before..=full {
        let c = tempfile::tempdir().unwrap();
        copy_dir(d.path(), c.path());
        let cseg = c.path().join("wal").join(seg.file_name().unwrap());
        fs::OpenOptions::new()
            .write(true)
            .open(&cseg)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let s = open(c.path());
        let n = count(&s);
        let want = if cut == full { 7 } else { 5 };
        assert_eq!(n, want, "cut at {cut} of {before}..{full}");
        // The torn tail is gone for good: more appends and a reopen work.
        s.append("p", &[sb(&[("a", "1")], &[(9, "after")])])
            .unwrap();
        s.close().unwrap();
        drop(s);
        assert_eq!(count(&open(c.path())), want + 1, "cut {cut}");
    }
}

#[test]
fn damage_inside_the_wal_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    for i in 0..3 {
        s.append("p", &[sb(&[("a", "1")], &[(i, "entry entry entry")])])
            .unwrap();
    }
    s.close().unwrap();
    drop(s);
    let seg = wal_segments(d.path()).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    bytes[8 + 8 + 4] ^= 0xff; // inside the first record's payload
    fs::write(&seg, bytes).unwrap();
    match open_with(d.path(), small_opts()) {
        Err(Error::Corrupt { path, detail }) => {
            assert_eq!(path, seg);
            assert!(detail.contains("damage"), "{detail}");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened a damaged WAL"),
    }
}

fn flushed_store(dir: &Path) -> PathBuf {
    let s = open(dir);
    for i in 0..64 {
        s.append("p", &[sb(&[("a", "1")], &[(i, "GET /index.html 200")])])
            .unwrap();
    }
    s.flush().unwrap();
    s.close().unwrap();
    segment_files(dir, "p").pop().unwrap()
}

#[test]
fn damaged_segment_block_is_detected_on_read_and_verify() {
    let d = tempfile::tempdir().unwrap();
    let seg = flushed_store(d.path());
    let mut bytes = fs::read(&seg).unwrap();
    bytes[8 + 5] ^= 0x01; // inside the first block's data
    fs::write(&seg, bytes).unwrap();
    let s = open(d.path());
    match s.verify("p") {
        Err(Error::Corrupt { path, detail }) => {
            assert_eq!(path, seg);
            assert!(detail.contains("checksum"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    let m = [eq("a", "1")];
    let q = Query {
        matchers: &m,
        start: 0,
        end: 100,
        direction: Direction::Forward,
        limit: 0,
        required: &[],
    };
    assert!(matches!(s.query("p", &q), Err(Error::Corrupt { .. })));
}

#[test]
fn damaged_segment_index_or_footer_refuses_to_open() {
    let d = tempfile::tempdir().unwrap();
    let seg = flushed_store(d.path());
    let good = fs::read(&seg).unwrap();
    let n = good.len();
    // In the index (just before the 24-byte footer), the footer, the magic.
    for at in [n - 30, n - 20, n - 3, 2] {
        let mut bytes = good.clone();
        bytes[at] ^= 0x10;
        fs::write(&seg, &bytes).unwrap();
        match open_with(d.path(), small_opts()) {
            Err(Error::Corrupt { path, .. }) => assert_eq!(path, seg),
            Err(e) => panic!("byte {at}: {e}"),
            Ok(_) => panic!("byte {at}: opened a damaged segment"),
        }
    }
    fs::write(&seg, &good[..n - 1]).unwrap();
    assert!(matches!(
        open_with(d.path(), small_opts()),
        Err(Error::Corrupt { .. })
    ));
    fs::write(&seg, &good).unwrap();
    assert_eq!(count(&open(d.path())), 64);
}

#[test]
fn a_failed_wal_fsync_poisons_the_store() {
    let d = tempfile::tempdir().unwrap();
    let faults = Faults::enabled();
    let s = open_with(
        d.path(),
        Options {
            faults: faults.clone(),
            ..small_opts()
        },
    )
    .unwrap();
    s.append("p", &[sb(&[("a", "1")], &[(1, "kept")])]).unwrap();
    faults.fail_next_fsync();
    assert!(
        s.append("p", &[sb(&[("a", "1")], &[(2, "lost?")])])
            .is_err()
    );
    match s.append("p", &[sb(&[("a", "1")], &[(3, "refused")])]) {
        Err(Error::Poisoned(_)) => {}
        other => panic!("{other:?}"),
    }
    drop(s);
    let s = open(d.path());
    let got = &times(&s, "p", &[])[0].1;
    assert!(got == &vec![1] || got == &vec![1, 2], "{got:?}");
}

#[test]
fn a_failed_segment_write_keeps_the_wal_and_poisons() {
    let d = tempfile::tempdir().unwrap();
    let faults = Faults::enabled();
    let s = open_with(
        d.path(),
        Options {
            faults: faults.clone(),
            ..small_opts()
        },
    )
    .unwrap();
    for i in 0..40 {
        s.append("p", &[sb(&[("a", "1")], &[(i, "entry")])])
            .unwrap();
    }
    // Nothing is pending in the WAL, so the first fsync the flush asks
    // through `faults` is the new segment file's.
    faults.fail_next_fsync();
    let r = s.flush();
    assert!(r.is_err(), "flush with a failing fsync");
    assert!(s.append("p", &[sb(&[("a", "1")], &[(99, "x")])]).is_err());
    // Frozen heads stay readable until the restart.
    assert_eq!(count(&s), 40);
    drop(s);
    let s = open(d.path());
    assert_eq!(count(&s), 40);
}

#[test]
fn a_lost_wal_directory_does_not_hide_new_appends() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    s.append("p", &[sb(&[("a", "1")], &[(1, "one")])]).unwrap();
    s.flush().unwrap();
    s.flush().unwrap();
    s.close().unwrap();
    drop(s);
    // Segments record a WAL cut; a fresh WAL must number past it, or its
    // records would be taken for ones the segments already hold.
    fs::remove_dir_all(d.path().join("wal")).unwrap();
    let s = open(d.path());
    s.append("p", &[sb(&[("a", "1")], &[(2, "two")])]).unwrap();
    s.close().unwrap();
    drop(s);
    assert_eq!(times(&open(d.path()), "p", &[])[0].1, vec![1, 2]);
}

/// A WAL segment holding only a prefix of its magic (a power cut while it
/// was created) holds no record: open drops it, wherever it is in the
/// sequence, and leftover `.tmp` files go too.
#[test]
fn wal_segment_cut_short_at_creation_is_dropped() {
    for stub in [&b""[..], b"FDLO"] {
        let d = tempfile::tempdir().unwrap();
        let s = open(d.path());
        s.append("p", &[sb(&[("a", "1")], &[(1, "one")])]).unwrap();
        s.close().unwrap();
        drop(s);
        let wal = d.path().join("wal");
        let newest: u64 = fs::read_dir(&wal)
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
            .max()
            .unwrap();
        fs::write(wal.join(format!("{:08}", newest + 1)), stub).unwrap();
        fs::write(wal.join(format!("{:08}.tmp", newest + 2)), b"FD").unwrap();
        for t in 2..4 {
            let s = open(d.path());
            s.append("p", &[sb(&[("a", "1")], &[(t, "more")])]).unwrap();
            s.close().unwrap();
        }
        let s = open(d.path());
        assert_eq!(times(&s, "p", &[])[0].1, vec![1, 2, 3], "stub {stub:?}");
        let tmp: Vec<_> = fs::read_dir(&wal)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(tmp.is_empty(), "{tmp:?}");
    }
}
