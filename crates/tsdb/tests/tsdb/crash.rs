//! Crash safety: a torn WAL tail at every byte offset, and a child process
//! killed with SIGKILL during concurrent ingest.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::common::*;

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else if e.file_name() != "LOCK" {
            fs::copy(e.path(), &dst).unwrap();
        }
    }
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && fs::metadata(p).unwrap().len() > 0)
        .collect();
    v.sort();
    v
}

#[test]
fn torn_tail_at_every_offset_keeps_whole_records() {
    let d = tempfile::tempdir().unwrap();
    let db = open(d.path());
    for i in 0..5 {
        db.append(
            "p",
            &batch(vec![series(&[("__name__", "a")], &[(i, i as f64)])]),
        )
        .unwrap();
    }
    let seg = segments(d.path()).pop().unwrap();
    let before = fs::metadata(&seg).unwrap().len();
    // The last append: a new series and two samples, three records.
    db.append(
        "p",
        &batch(vec![
            series(&[("__name__", "a")], &[(5, 5.0)]),
            series(&[("__name__", "b")], &[(5, 50.0)]),
        ]),
    )
    .unwrap();
    db.close().unwrap();
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
        let db = open(c.path());
        let a = dump(&db, "p", 0, 100, &[eq("__name__", "a")]);
        let n = a[0].1.len();
        assert!(n == 5 || n == 6, "cut {cut}: {n} samples of a");
        if cut == full {
            assert_eq!(n, 6);
            assert_eq!(dump(&db, "p", 0, 100, &[eq("__name__", "b")]).len(), 1);
        }
        // The torn tail is gone for good: appending and reopening works.
        db.append("p", &batch(vec![series(&[("__name__", "a")], &[(7, 7.0)])]))
            .unwrap();
        db.close().unwrap();
        let db = open(c.path());
        assert_eq!(
            dump(&db, "p", 0, 100, &[eq("__name__", "a")])[0].1.len(),
            n + 1,
            "cut {cut}"
        );
    }
}

#[test]
fn damage_before_a_valid_record_is_corruption() {
    let d = tempfile::tempdir().unwrap();
    let db = open(d.path());
    for i in 0..3 {
        db.append(
            "p",
            &batch(vec![series(&[("__name__", "a")], &[(i, i as f64)])]),
        )
        .unwrap();
    }
    db.close().unwrap();
    let seg = segments(d.path()).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    bytes[20] ^= 0xff; // inside the first record's payload (after the 8-byte magic)
    fs::write(&seg, bytes).unwrap();
    match open_with(d.path(), opts()) {
        Err(tsdb::Error::Corrupt { path, detail }) => {
            assert_eq!(path, seg);
            assert!(detail.contains("damage"), "{detail}");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened a damaged WAL"),
    }
}

/// A kill while a segment file was being created (before its header was
/// fsynced) left an empty or header-prefix file; the next open must accept
/// it wherever it ends up in the sequence, not only as the last segment.
#[test]
fn segment_cut_short_at_creation_opens_after_more_segments() {
    for stub in [&b""[..], b"FDTS"] {
        let d = tempfile::tempdir().unwrap();
        let db = open(d.path());
        db.append("p", &batch(vec![series(&[("__name__", "a")], &[(1, 1.0)])]))
            .unwrap();
        db.close().unwrap();
        let wal = d.path().join("wal");
        let newest: u64 = fs::read_dir(&wal)
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
            .max()
            .unwrap();
        fs::write(wal.join(format!("{:08}", newest + 1)), stub).unwrap();
        // A segment being created when the process died.
        fs::write(wal.join(format!("{:08}.tmp", newest + 2)), b"FD").unwrap();
        // Opened with the stub as last segment, then more segments after it.
        for t in 2..5 {
            let db = open(d.path());
            db.append(
                "p",
                &batch(vec![series(&[("__name__", "a")], &[(t, t as f64)])]),
            )
            .unwrap();
            db.close().unwrap();
        }
        let db = open(d.path());
        let got = dump(&db, "p", 0, i64::MAX, &[eq("__name__", "a")]);
        assert_eq!(
            got[0].1.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![1, 2, 3, 4],
            "stub {stub:?}"
        );
        let left: Vec<String> = fs::read_dir(&wal)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

const CHILD_ENV: &str = "TSDB_CRASH_CHILD_DIR";
const WRITERS: usize = 4;

/// Not a test of its own: the body of the child process that
/// `kill9_loses_no_acknowledged_sample` starts (and kills). Without the
/// environment variable it returns at once.
#[test]
fn crash_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let db = Arc::new(open(Path::new(&dir)));
    let start: i64 = std::env::var("TSDB_CRASH_START").unwrap().parse().unwrap();
    // Cuts and WAL checkpoints race with the writers (and with the kill).
    {
        let db = db.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(7));
                db.flush().unwrap();
            }
        });
    }
    let hs: Vec<_> = (0..WRITERS)
        .map(|w| {
            let db = db.clone();
            std::thread::spawn(move || {
                let mut t = start;
                while t < i64::MAX {
                    t += 1;
                    // 20 series per writer, one sample each per batch.
                    let b = batch(
                        (0..20)
                            .map(|s| {
                                series(
                                    &[
                                        ("__name__", "k"),
                                        ("w", &w.to_string()),
                                        ("s", &s.to_string()),
                                    ],
                                    &[(t, t as f64)],
                                )
                            })
                            .collect(),
                    );
                    let r = db.append("crash", &b).unwrap();
                    // Acknowledged (unless a flush made it too old): tell the parent.
                    if r.accepted_samples == 20 {
                        println!("ack {w} {t}");
                    }
                }
            })
        })
        .collect();
    // The writers loop until the parent kills the process.
    for h in hs {
        let _ = h.join();
    }
}

#[test]
fn kill9_loses_no_acknowledged_sample() {
    let d = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut start = 0i64;
    for cycle in 0..6 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash::crash_child_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, d.path())
            .env("TSDB_CRASH_START", start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(d.path().join(format!("child-{cycle}.stderr"))).unwrap(),
            ))
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut acked: HashMap<usize, i64> = HashMap::new();
        let mut line = String::new();
        let want = 50 + cycle * 37;
        let mut n = 0;
        while n < want {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                let err = std::fs::read_to_string(d.path().join(format!("child-{cycle}.stderr")))
                    .unwrap_or_default();
                let head: String = err.lines().take(12).collect::<Vec<_>>().join("\n");
                panic!("child ended early (cycle {cycle}); its stderr begins:\n{head}");
            }
            if let Some(rest) = line.strip_prefix("ack ") {
                let mut it = rest.split_whitespace();
                let w: usize = it.next().unwrap().parse().unwrap();
                let t: i64 = it.next().unwrap().parse().unwrap();
                acked.insert(w, t);
                n += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
        // Acks printed before the kill still count.
        for l in out.lines() {
            let l = l.unwrap();
            if let Some(rest) = l.strip_prefix("ack ") {
                let mut it = rest.split_whitespace();
                let w: usize = it.next().unwrap().parse().unwrap();
                let t: i64 = it.next().unwrap().parse().unwrap();
                let e = acked.entry(w).or_insert(t);
                *e = (*e).max(t);
            }
        }
        child.wait().unwrap();
        let db = open(d.path());
        let mut max_seen = start;
        for w in 0..WRITERS {
            let got = dump(&db, "crash", 0, i64::MAX, &[eq("w", &w.to_string())]);
            let acked_t = acked.get(&w).copied().unwrap_or(start);
            for s in 0..20 {
                let name = format!(r#"k{{s="{s}", w="{w}"}}"#);
                let samples = got
                    .iter()
                    .find(|(l, _)| *l == name)
                    .map(|x| x.1.clone())
                    .unwrap_or_default();
                let last = samples.last().map_or(i64::MIN, |x| x.0);
                assert!(
                    last >= acked_t,
                    "cycle {cycle}: {name} has samples up to {last}, {acked_t} was acknowledged"
                );
                assert!(
                    samples.windows(2).all(|w| w[0].0 < w[1].0),
                    "cycle {cycle}: {name}"
                );
                max_seen = max_seen.max(last);
            }
        }
        db.close().unwrap();
        start = max_seen;
    }
}
