//! Blocks: flush, automatic cuts, queries across blocks and head, reopen,
//! compaction and retention, and damaged block files.

use std::time::Duration;

use tsdb::{Db, Error, Options};

use crate::common::*;

const H: i64 = 3600 * 1000;

fn o() -> Options {
    Options {
        block_duration_ms: 2 * H,
        ..opts()
    }
}

/// One sample per minute for `series` series over `[from, to)`.
fn fill(db: &Db, project: &str, n_series: usize, from: i64, to: i64) {
    let mut t = from;
    while t < to {
        let b = batch(
            (0..n_series)
                .map(|i| {
                    series(
                        &[("__name__", "g"), ("i", &i.to_string())],
                        &[(t, (t / 60_000 + i as i64) as f64)],
                    )
                })
                .collect(),
        );
        let r = db.append(project, &b).unwrap();
        assert_eq!(r.rejected_total(), 0, "{r:?}");
        t += 60_000;
    }
}

fn count(db: &Db, project: &str, mint: i64, maxt: i64) -> usize {
    dump(db, project, mint, maxt, &[eq("__name__", "g")])
        .iter()
        .map(|s| s.1.len())
        .sum()
}

#[test]
fn head_is_cut_into_aligned_blocks_and_queries_span_both() {
    let d = tempfile::tempdir().unwrap();
    let db = open_with(d.path(), o()).unwrap();
    fill(&db, "p", 3, 0, 5 * H);
    db.maintain().unwrap();
    let blocks = db.blocks("p");
    // Head spanned 5 h > 3 h: [0, 2h) is cut, 3 h stay (not more than 1.5 × 2 h).
    assert_eq!(
        blocks.iter().map(|b| (b.mint, b.end)).collect::<Vec<_>>(),
        vec![(0, 2 * H)]
    );
    assert_eq!(db.stats("p").min_valid_time, 2 * H);
    assert_eq!(count(&db, "p", 0, 5 * H), 3 * 300);
    assert_eq!(count(&db, "p", H, 3 * H), 3 * 121);
    let want = dump(&db, "p", 0, 5 * H, &[eq("i", "1")]);
    db.close().unwrap();
    let db = open_with(d.path(), o()).unwrap();
    assert_eq!(dump(&db, "p", 0, 5 * H, &[eq("i", "1")]), want);
    assert_eq!(count(&db, "p", 0, 5 * H), 3 * 300);
    // The WAL was checkpointed: samples now in blocks are not replayed.
    assert_eq!(db.stats("p").samples_stored, 3 * 300);
}

#[test]
fn compaction_merges_complete_windows() {
    let d = tempfile::tempdir().unwrap();
    let db = open_with(d.path(), o()).unwrap();
    fill(&db, "p", 2, 0, 30 * H);
    let want = dump(&db, "p", 0, 30 * H, &[eq("__name__", "g")]);
    db.maintain().unwrap();
    // 2 h blocks up to 28 h; [0, 18h) became one level-3 block, [18h, 24h)
    // one level-2 block; [24h, 28h) waits for its 6 h window to complete.
    let got: Vec<(i64, i64, u32)> = db
        .blocks("p")
        .iter()
        .map(|b| (b.mint, b.end, b.level))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, 18 * H, 3),
            (18 * H, 24 * H, 2),
            (24 * H, 26 * H, 1),
            (26 * H, 28 * H, 1)
        ]
    );
    assert_eq!(dump(&db, "p", 0, 30 * H, &[eq("__name__", "g")]), want);
    db.flush().unwrap();
    assert_eq!(db.stats("p").head_range, None);
    assert_eq!(dump(&db, "p", 0, 30 * H, &[eq("__name__", "g")]), want);
    db.close().unwrap();
    let db = open_with(d.path(), o()).unwrap();
    assert_eq!(dump(&db, "p", 0, 30 * H, &[eq("__name__", "g")]), want);
    // No leftovers of block writes or of compacted parents.
    let pdir = d.path().join(tsdb::files::PROJECTS_DIR).join("p");
    let names: Vec<String> = std::fs::read_dir(pdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.starts_with(tsdb::files::BLOCK_PREFIX)),
        "{names:?}"
    );
    assert_eq!(names.len(), db.blocks("p").len());
}

#[test]
fn time_retention_deletes_whole_old_blocks() {
    let d = tempfile::tempdir().unwrap();
    let db = open_with(
        d.path(),
        Options {
            retention: Duration::from_secs(20 * 3600),
            ..o()
        },
    )
    .unwrap();
    fill(&db, "p", 2, 0, 30 * H);
    db.maintain().unwrap();
    // Blocks stay at 2 h (a block may span at most a tenth of the
    // retention); those ending more than 20 h before the newest sample go.
    let blocks = db.blocks("p");
    assert!(blocks.iter().all(|b| b.level == 1), "{blocks:?}");
    assert_eq!(blocks[0].mint, 8 * H);
    assert_eq!(count(&db, "p", 0, 30 * H), 2 * (22 * 60));
}

#[test]
fn retention_is_per_project() {
    let d = tempfile::tempdir().unwrap();
    let db = open_with(
        d.path(),
        Options {
            retention: Duration::from_secs(20 * 3600),
            ..o()
        },
    )
    .unwrap();
    db.set_retention(
        "short",
        tsdb::Retention {
            time: Duration::from_secs(10 * 3600),
            max_bytes: None,
        },
    );
    fill(&db, "short", 2, 0, 30 * H);
    fill(&db, "long", 2, 0, 30 * H);
    db.maintain().unwrap();
    assert_eq!(db.blocks("short")[0].mint, 18 * H);
    assert_eq!(db.blocks("long")[0].mint, 8 * H);
}

#[test]
fn size_retention_deletes_oldest_blocks() {
    let d = tempfile::tempdir().unwrap();
    let db = open_with(
        d.path(),
        Options {
            retention: Duration::from_secs(10 * 3600),
            ..o()
        },
    )
    .unwrap();
    fill(&db, "p", 5, 0, 9 * H);
    db.maintain().unwrap();
    let before = db.blocks("p");
    let total = db.stats("p").block_bytes;
    db.close().unwrap();
    // (A retention of 10 h keeps blocks at 2 h: no compaction here.)
    let db = open_with(
        d.path(),
        Options {
            max_bytes: Some(total - 1),
            retention: Duration::from_secs(10 * 3600),
            ..o()
        },
    )
    .unwrap();
    db.maintain().unwrap();
    let after = db.blocks("p");
    assert_eq!(before.len(), 3);
    assert_eq!(after.len(), 2);
    assert!(db.stats("p").block_bytes < total);
    assert_eq!(after.last().map(|b| b.end), before.last().map(|b| b.end));
}

#[test]
fn damaged_block_is_reported_with_its_path() {
    let d = tempfile::tempdir().unwrap();
    let db = open_with(d.path(), o()).unwrap();
    fill(&db, "p", 2, 0, 10 * 60_000);
    db.flush().unwrap();
    let b = db.blocks("p")[0].name.clone();
    db.close().unwrap();
    let bdir = d.path().join(tsdb::files::PROJECTS_DIR).join("p").join(&b);
    // A flipped bit in the chunks: open works, reading the chunk says where.
    let cp = bdir.join(tsdb::files::BLOCK_CHUNKS);
    let mut bytes = std::fs::read(&cp).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&cp, &bytes).unwrap();
    let db = open_with(d.path(), o()).unwrap();
    let s = db
        .querier("p", 0, H)
        .select(&[eq("__name__", "g")])
        .unwrap();
    let errs: Vec<Error> = s
        .flat_map(|s| s.samples().filter_map(Result::err).collect::<Vec<_>>())
        .collect();
    assert!(
        matches!(&errs[0], Error::Corrupt { path, .. } if *path == cp),
        "{errs:?}"
    );
    db.close().unwrap();
    // A damaged index: open refuses, naming the file.
    let ip = bdir.join(tsdb::files::BLOCK_INDEX);
    let mut bytes = std::fs::read(&ip).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&ip, &bytes).unwrap();
    match open_with(d.path(), o()) {
        Err(Error::Corrupt { path, .. }) => assert_eq!(path, ip),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened a damaged index"),
    }
}

/// Reading a select's series through one shared `ReadAhead` (windows refilled many times
/// over a chunks file of several windows, and a window of another block in between) gives
/// each series the samples its own iterator gives; a flipped bit read through a window is
/// reported with the file.
#[test]
fn read_ahead_reads_what_the_iterators_read() {
    let d = tempfile::tempdir().unwrap();
    let db = open_with(d.path(), o()).unwrap();
    fill(&db, "p", 3000, 0, 90 * 60_000);
    db.flush().unwrap();
    fill(&db, "p", 3000, 2 * H, 2 * H + 30 * 60_000);
    db.flush().unwrap();
    let blocks = db.blocks("p");
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    let set = db
        .querier("p", 0, 3 * H)
        .select(&[eq("__name__", "g")])
        .unwrap();
    let mut ra = tsdb::ReadAhead::default();
    let mut n = 0;
    for s in set {
        let want: Vec<_> = s.samples().map(Result::unwrap).collect();
        let mut got = Vec::new();
        s.floats_into_via(&mut ra, &mut got, |_| true).unwrap();
        assert_eq!(got, want, "{:?}", s.labels);
        assert_eq!(got.len(), 120);
        n += 1;
    }
    assert_eq!(n, 3000);
    db.close().unwrap();
    let cp = d
        .path()
        .join(tsdb::files::PROJECTS_DIR)
        .join("p")
        .join(&blocks[1].name)
        .join(tsdb::files::BLOCK_CHUNKS);
    let mut bytes = std::fs::read(&cp).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&cp, &bytes).unwrap();
    let db = open_with(d.path(), o()).unwrap();
    let set = db
        .querier("p", 0, 3 * H)
        .select(&[eq("__name__", "g")])
        .unwrap();
    let mut ra = tsdb::ReadAhead::default();
    let errs: Vec<Error> = set
        .filter_map(|s| s.floats_into_via(&mut ra, &mut Vec::new(), |_| true).err())
        .collect();
    assert!(
        matches!(&errs[..], [Error::Corrupt { path, .. }] if *path == cp),
        "{errs:?}"
    );
}

#[test]
fn failed_block_write_keeps_the_data_and_retries() {
    let d = tempfile::tempdir().unwrap();
    let faults = diskio::Faults::enabled();
    let db = open_with(
        d.path(),
        Options {
            faults: faults.clone(),
            ..o()
        },
    )
    .unwrap();
    fill(&db, "p", 3, 0, 30 * 60_000);
    faults.fail_next_fsync();
    assert!(matches!(db.flush(), Err(Error::Io { .. })));
    assert!(db.blocks("p").is_empty());
    assert_eq!(count(&db, "p", 0, H), 3 * 30);
    // Not poisoned: the WAL is fine; the next pass writes the block.
    db.flush().unwrap();
    assert_eq!(db.blocks("p").len(), 1);
    assert_eq!(count(&db, "p", 0, H), 3 * 30);
    db.close().unwrap();
    let db = open_with(d.path(), o()).unwrap();
    assert_eq!(count(&db, "p", 0, H), 3 * 30);
}

#[test]
fn the_background_thread_cuts_blocks() {
    let d = tempfile::tempdir().unwrap();
    let db = open_with(
        d.path(),
        Options {
            maintenance_interval: Some(Duration::from_millis(10)),
            ..o()
        },
    )
    .unwrap();
    fill(&db, "p", 2, 0, 4 * H);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while db.blocks("p").is_empty() {
        assert!(std::time::Instant::now() < deadline, "no block cut in 20 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(db.blocks("p")[0].end, 2 * H);
    assert_eq!(db.maintenance_error(), None);
    assert_eq!(count(&db, "p", 0, 4 * H), 2 * 240);
    db.close().unwrap();
}
