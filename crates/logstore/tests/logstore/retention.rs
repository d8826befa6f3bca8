//! Retention by age and by size, per project.

use logstore::Retention;

use crate::common::*;

#[test]
fn retention_by_age_and_size_deletes_whole_old_segments() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let line = "x".repeat(200);
    for day in 0..4i64 {
        let es: Vec<(i64, &str)> = (0..50).map(|i| (day * 1000 + i, line.as_str())).collect();
        s.append("p", &[sb(&[("a", "1")], &es)]).unwrap();
        s.append("q", &[sb(&[("a", "1")], &es)]).unwrap();
        s.flush().unwrap();
    }
    let first = |s: &logstore::Store, p: &str| times(s, p, &[])[0].1[0];
    // Age: now = 3500, keep 1600 → segments whose newest entry is < 1900 go.
    let r = s
        .apply_retention(
            "p",
            &Retention {
                max_age_ns: Some(1600),
                max_bytes: None,
            },
            3500,
        )
        .unwrap();
    assert_eq!(r.segments, 2);
    assert_eq!(first(&s, "p"), 2000);
    assert_eq!(first(&s, "q"), 0, "another project's policy is its own");
    // Size: keep only what fits one segment.
    let one = std::fs::read_dir(d.path().join("p/q"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .max()
        .unwrap();
    let r = s
        .apply_retention(
            "q",
            &Retention {
                max_age_ns: None,
                max_bytes: Some(one + 10),
            },
            0,
        )
        .unwrap();
    assert_eq!(r.segments, 3);
    assert_eq!(times(&s, "q", &[])[0].1, (3000..3050).collect::<Vec<_>>());
    // Deleted for good, also after a reopen.
    s.close().unwrap();
    drop(s);
    let s = open(d.path());
    assert_eq!(first(&s, "p"), 2000);
    assert_eq!(times(&s, "q", &[])[0].1.len(), 50);
}

#[test]
fn compaction_merges_small_segments_and_survives_a_crash_before_cleanup() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    for k in 0..6i64 {
        let es: Vec<(i64, String)> = (0..30)
            .map(|i| (k * 100 + i, format!("line {k} {i}")))
            .collect();
        let es: Vec<(i64, &str)> = es.iter().map(|(t, l)| (*t, l.as_str())).collect();
        s.append(
            "p",
            &[
                sb(&[("a", "1")], &es),
                sb(&[("b", &k.to_string())], &es[..3]),
            ],
        )
        .unwrap();
        s.flush().unwrap();
    }
    let before = times(&s, "p", &[]);
    let files = |d: &std::path::Path| std::fs::read_dir(d.join("p/p")).unwrap().count();
    assert_eq!(files(d.path()), 6);
    let keep = d.path().join("keep");
    copy_dir(&d.path().join("p/p"), &keep);
    assert_eq!(s.compact("p", 1 << 20).unwrap(), 6);
    assert_eq!(files(d.path()), 1);
    assert_eq!(times(&s, "p", &[]), before);
    assert_eq!(s.compact("p", 1 << 20).unwrap(), 0, "nothing left to merge");
    s.close().unwrap();
    drop(s);
    assert_eq!(times(&open(d.path()), "p", &[]), before);
    // A crash after the output was written, before the inputs were deleted:
    // put the inputs back beside the output.
    for e in std::fs::read_dir(&keep).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), d.path().join("p/p").join(e.file_name())).unwrap();
    }
    assert_eq!(files(d.path()), 7);
    let s = open(d.path());
    assert_eq!(times(&s, "p", &[]), before, "no entry read twice");
    assert_eq!(files(d.path()), 1);
}

#[test]
fn flush_if_due_flushes_only_old_heads() {
    use std::time::Duration;
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    assert!(!s.flush_if_due(Duration::ZERO).unwrap(), "empty heads");
    s.append("p", &[sb(&[("a", "1")], &[(1, "x")])]).unwrap();
    assert!(!s.flush_if_due(Duration::from_secs(3600)).unwrap());
    assert!(s.disk_bytes().0 == 0, "nothing sealed yet");
    assert!(s.flush_if_due(Duration::ZERO).unwrap());
    assert!(s.disk_bytes().0 > 0, "sealed into a segment");
    assert!(
        !s.flush_if_due(Duration::ZERO).unwrap(),
        "heads empty again"
    );
}
