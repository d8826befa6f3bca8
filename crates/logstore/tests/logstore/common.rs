//! Helpers shared by the test modules.

use std::path::Path;

use logstore::{Direction, Entry, Options, Query, Store, StreamBatch};
use model::{Labels, Matcher};

/// Small blocks so a few hundred entries cross many block boundaries.
pub fn small_opts() -> Options {
    Options {
        block_bytes: 2048,
        block_entries: 16,
        flush_bytes: usize::MAX,
        ..Options::default()
    }
}

pub fn open(dir: &Path) -> Store {
    open_with(dir, small_opts()).unwrap()
}

/// `Store::open`, waiting out a lock that was just released. Other tests of this binary
/// spawn child processes (the kill -9 test); between its fork and exec a child holds a copy
/// of every descriptor, so for a moment the `flock` of a store dropped here still reads as
/// taken. A real second holder would keep it for good; this waits up to 2 s.
pub fn open_with(dir: &Path, opts: Options) -> Result<Store, logstore::Error> {
    for _ in 0..200 {
        match Store::open(dir, opts.clone()) {
            Err(logstore::Error::Locked(_)) => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => return other,
        }
    }
    Store::open(dir, opts)
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

pub fn sb(pairs: &[(&str, &str)], entries: &[(i64, &str)]) -> StreamBatch {
    StreamBatch {
        labels: labels(pairs),
        entries: entries.iter().map(|(t, l)| Entry::new(*t, *l)).collect(),
    }
}

pub fn eq(n: &str, v: &str) -> Matcher {
    Matcher::equal(n, v)
}

/// Every entry of the matching streams in `[start, end)`, per stream.
pub fn dump(
    s: &Store,
    project: &str,
    matchers: &[Matcher],
    start: i64,
    end: i64,
    direction: Direction,
) -> Vec<(Labels, Vec<Entry>)> {
    s.query(
        project,
        &Query {
            matchers,
            start,
            end,
            direction,
            limit: 0,
            required: &[],
        },
    )
    .unwrap()
}

/// Timestamps of every entry of a project, per stream (forward).
pub fn times(s: &Store, project: &str, matchers: &[Matcher]) -> Vec<(String, Vec<i64>)> {
    dump(s, project, matchers, i64::MIN, i64::MAX, Direction::Forward)
        .into_iter()
        .map(|(l, es)| (l.to_string(), es.iter().map(|e| e.ts).collect()))
        .collect()
}

/// Copies a store directory (without its lock file).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}
