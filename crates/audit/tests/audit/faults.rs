//! Fault injection: a failed write or fsync fails its batch, poisons the
//! log, and leaves nothing behind that looks acknowledged.

use std::path::Path;

use audit::*;
use diskio::Faults;

use crate::support::*;

fn check_failure(arm: impl Fn(&Faults), max_segment_bytes: u64) {
    let d = tempfile::tempdir().unwrap();
    let faults = Faults::enabled();
    let opts = Options {
        faults: faults.clone(),
        max_segment_bytes,
        ..Options::default()
    };
    let log = AuditLog::open(d.path(), opts).unwrap();
    let acked: Vec<Event> = (0..10).map(|i| log.append(simple(i)).unwrap()).collect();
    arm(&faults);
    // A batch of concurrent appends: every one of them must fail.
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..50 {
        let tx = tx.clone();
        log.append_with(simple(100 + i), Box::new(move |r| tx.send(r).unwrap()));
    }
    drop(tx);
    let results: Vec<_> = rx.iter().collect();
    assert_eq!(results.len(), 50);
    assert!(results.iter().all(Result::is_err), "{results:?}");
    assert!(
        matches!(results[0], Err(AuditError::Io { .. })),
        "{:?}",
        results[0]
    );
    assert!(log.is_poisoned());
    faults.clear();
    assert!(matches!(
        log.append(simple(1000)),
        Err(AuditError::Poisoned)
    ));
    assert_eq!(log.last_seq(), 10);
    log.shutdown();
    drop(log);
    reopen_and_check(d.path(), &acked);
}

fn reopen_and_check(dir: &Path, acked: &[Event]) {
    let log = open(dir);
    assert_eq!(all(&log), acked);
    assert_eq!(log.last_seq(), acked.len() as u64);
    assert_eq!(log.append(simple(7)).unwrap().seq, acked.len() as u64 + 1);
}

#[test]
fn failed_write() {
    check_failure(Faults::fail_next_write, 64 << 20);
}

#[test]
fn failed_fsync() {
    check_failure(Faults::fail_next_fsync, 64 << 20);
}

#[test]
fn torn_write() {
    check_failure(|f| f.tear_next_write(100), 64 << 20);
}

#[test]
fn failed_fsync_while_creating_a_segment() {
    // Every batch after the first ten events rolls into a new segment.
    check_failure(Faults::fail_all_fsyncs, 1);
}

#[test]
fn failed_write_while_creating_a_segment() {
    check_failure(Faults::fail_all_writes, 1);
}
