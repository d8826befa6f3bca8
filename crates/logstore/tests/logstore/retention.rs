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
