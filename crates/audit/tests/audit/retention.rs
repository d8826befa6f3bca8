//! Retention: a log's oldest whole bundles are removed (segment records
//! become tombstones, index rows and entry bundles go), hash tiles and
//! checkpoints stay, and the log keeps verifying — also after a reopen
//! and with new events. Removal without a recording event is caught.

use std::path::Path;
use std::time::Duration;

use audit::verify::{Expect, dir_fetcher, verify};
use audit::*;

use crate::support::{T0, TestClock, draft};
use crate::tlog::wait_for_size;

const DAY: i64 = 86_400 * 1_000_000_000;

fn opts(clock: &TestClock) -> Options {
    Options {
        checkpoint_interval: Duration::from_millis(20),
        max_segment_bytes: 64 << 10,
        ..clock.options()
    }
}

fn expect(dir: &Path) -> Expect {
    let vkey = AuditLog::open_read_only(dir).unwrap().verifier_key();
    Expect::new(
        vec![merkle::VerifierKey::parse(&vkey).unwrap()],
        "flightdeck/p/p1",
        Some(LogKey::Project("p1".into())),
    )
}

fn append(log: &AuditLog, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            log.append(draft(Some("p1"), "iam.token.create", i))
                .unwrap()
        })
        .collect()
}

/// Records the retention event and waits until it is checkpointed.
fn record(log: &AuditLog, plan: &retention::RetentionPlan) {
    let mut d = draft(Some("p1"), "audit.retention.apply", 0);
    d.principal = Principal::system();
    d.source_ip = None;
    d.user_agent = None;
    d.request_parameters = Some(serde_json::json!({
        "entries_from": plan.from, "entries_to": plan.to,
    }));
    let e = log.append(d).unwrap();
    wait_for_size(log, &plan.log, e.log_index + 1);
}

#[test]
fn retention_removes_whole_old_bundles_and_the_log_still_verifies() {
    let d = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let p1 = LogKey::Project("p1".into());
    let log = AuditLog::open(d.path(), opts(&clock)).unwrap();
    let old = append(&log, 600);
    clock.advance(500 * DAY);
    let new = append(&log, 100);
    wait_for_size(&log, &p1, 700);
    let tlog = d.path().join("tlog/p/p1");

    assert_eq!(
        log.retention_plan(&p1, T0 - DAY).unwrap(),
        None,
        "nothing is that old"
    );
    // The plan reads SQLite, which the flusher fills within 0.5 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let plan = loop {
        let p = log.retention_plan(&p1, T0 + 100 * DAY).unwrap();
        if p.as_ref().is_some_and(|p| p.to == 512) || std::time::Instant::now() > deadline {
            break p.expect("a plan");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        (plan.from, plan.to),
        (0, 512),
        "whole bundles of the 600 old entries"
    );
    record(&log, &plan);
    let done = log.apply_retention(&plan).unwrap();
    assert_eq!(done.records_tombstoned, 512);
    assert!(
        done.bundles_deleted >= 2,
        "two full bundles and their partials: {done:?}"
    );
    assert!(!tlog.join("tile/entries/000").exists());
    assert!(tlog.join("tile/entries/001").exists() || tlog.join("tile/entries/002.p").is_dir());
    assert!(
        !tlog.join("tile/entries/001").exists(),
        "bundle 1 (entries 256..512) went too"
    );
    assert!(tlog.join("tile/0/000").exists(), "hash tiles stay");
    // Idempotent.
    assert_eq!(
        log.complete_retention(&p1).unwrap(),
        retention::RetentionDone::default()
    );

    // Gone from search and get; kept events read as before.
    assert_eq!(log.get(&p1, &old[0].id).unwrap(), None);
    assert_eq!(log.get(&p1, &old[511].id).unwrap(), None);
    assert_eq!(
        log.get(&p1, &old[512].id).unwrap().as_ref(),
        Some(&old[512])
    );
    assert_eq!(log.get(&p1, &new[99].id).unwrap().as_ref(), Some(&new[99]));
    let q = Query {
        log: Some(p1.clone()),
        order: Order::OldestFirst,
        limit: 1000,
        ..Query::default()
    };
    let page = log.search(&q).unwrap();
    assert_eq!(page.events.first().map(|e| e.log_index), Some(512));
    // Nothing of the removed events is left in the segments.
    let needle = old[3].id.clone();
    for seg in crate::support::segments(d.path()) {
        let b = std::fs::read(&seg).unwrap();
        assert!(!b.windows(needle.len()).any(|w| w == needle.as_bytes()));
    }

    // The log verifies (tiles stand in for the removed bundles), the store
    // check agrees, and a reopen rebuilds the same tree.
    let r = verify(dir_fetcher(tlog.clone()), &expect(d.path())).unwrap();
    assert_eq!((r.retained_from, r.entries), (512, r.size - 512));
    let f = fsck::check_store(d.path()).unwrap();
    assert_eq!(f.expired, 512);
    log.shutdown();
    drop(log);
    let log = AuditLog::open(d.path(), opts(&clock)).unwrap();
    append(&log, 300);
    let size = 701 + 300;
    wait_for_size(&log, &p1, size);
    assert!(
        !tlog.join("tile/entries/000").exists(),
        "not rewritten at open"
    );
    let r = verify(dir_fetcher(tlog.clone()), &expect(d.path())).unwrap();
    assert_eq!(r.size, size);
    fsck::check_store(d.path()).unwrap();
    log.shutdown();
    drop(log);

    // Bundles removed without a recording event are caught, and so is a
    // missing bundle above the floor.
    std::fs::write(tlog.join("retained"), "768\n").unwrap();
    std::fs::remove_file(tlog.join("tile/entries/002")).unwrap();
    let err = verify(dir_fetcher(tlog.clone()), &expect(d.path())).unwrap_err();
    assert!(
        err.place == "retained" && err.reason.contains("no audit.retention.apply"),
        "{err}"
    );
    std::fs::write(tlog.join("retained"), "512\n").unwrap();
    let err = verify(dir_fetcher(tlog.clone()), &expect(d.path())).unwrap_err();
    assert_eq!(err.place, "tile/entries/002", "{err}");
}
