//! Appending: stamping, gap-freeness, time, segments, limits, locking.

use audit::*;

use crate::support::*;

#[test]
fn round_trip_through_segment_and_reopen() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    let e = log.append(simple(1)).unwrap();
    assert_eq!(
        (e.seq, e.log_index, e.schema_version),
        (1, 0, SCHEMA_VERSION)
    );
    assert_eq!(uuid::Uuid::parse_str(&e.id).unwrap().get_version_num(), 7);
    assert_eq!(e.action, "iam.token.create");
    assert_eq!(
        log.get(&LogKey::Project("default".into()), &e.id).unwrap(),
        Some(e.clone())
    );
    assert_eq!(log.last_seq(), 1);
    // The segment holds the leaf's canonical bytes exactly, then the
    // sealed personal values; the leaf holds no personal value.
    let seg = std::fs::read(&segments(d.path())[0]).unwrap();
    let leaf = e.leaf_bytes();
    let payload = &seg[audit::segment::HEADER_LEN + 8..];
    assert_eq!(&payload[..leaf.len()], &leaf[..]);
    assert_eq!(payload[leaf.len()], b'\n');
    let text = String::from_utf8_lossy(&leaf);
    for personal in ["User 1", "10.0.0.1", "curl/8"] {
        assert!(!text.contains(personal), "{personal} in the leaf: {text}");
        assert!(
            !seg.windows(personal.len())
                .any(|w| w == personal.as_bytes()),
            "{personal} in clear in the segment"
        );
    }
    assert_eq!(
        e.personal.keys().collect::<Vec<_>>(),
        ["principal.name", "source_ip", "user_agent"]
    );
    log.shutdown();
    drop(log);
    let log = open(d.path());
    assert_eq!(all(&log), vec![e]);
    assert_eq!(log.append(simple(2)).unwrap().seq, 2);
}

#[test]
fn seq_and_log_index_are_gap_free_across_logs_and_threads() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    let projects = [Some("a"), Some("b"), None];
    std::thread::scope(|s| {
        for t in 0..6 {
            let log = log.clone();
            s.spawn(move || {
                for i in 0..40 {
                    log.append(draft(projects[(t + i) % 3], "x.y.z", i))
                        .unwrap();
                }
            });
        }
    });
    let events = all(&log);
    assert_eq!(events.len(), 240);
    assert_gap_free(&events);
    log.shutdown();
    drop(log);
    let log = open(d.path());
    let e = log.append(draft(Some("a"), "x.y.z", 0)).unwrap();
    assert_eq!(e.seq, 241);
    let a_count = events
        .iter()
        .filter(|e| e.project.as_deref() == Some("a"))
        .count() as u64;
    assert_eq!(e.log_index, a_count);
}

#[test]
fn time_never_goes_backwards_even_when_the_clock_does() {
    let d = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let log = AuditLog::open(d.path(), clock.options()).unwrap();
    let a = log.append(simple(1)).unwrap();
    clock.set(T0 - 5_000_000_000);
    let b = log.append(simple(2)).unwrap();
    clock.set(T0 + 7);
    let c = log.append(simple(3)).unwrap();
    assert_eq!(a.time, "2026-01-01T00:00:00.000000000Z");
    assert_eq!(b.time, a.time);
    assert_eq!(c.time, "2026-01-01T00:00:00.000000007Z");
    // The floor survives a restart.
    log.shutdown();
    drop(log);
    clock.set(T0 - 1);
    let log = AuditLog::open(d.path(), clock.options()).unwrap();
    assert_eq!(log.append(simple(4)).unwrap().time, c.time);
}

#[test]
fn segments_roll_past_the_size_limit_and_are_named_by_first_seq() {
    let d = tempfile::tempdir().unwrap();
    let opts = Options {
        max_segment_bytes: 4096,
        ..Options::default()
    };
    let log = AuditLog::open(d.path(), opts.clone()).unwrap();
    let mut firsts = Vec::new();
    for i in 0..40 {
        let e = log.append(simple(i)).unwrap();
        firsts.push(e.seq);
    }
    let segs = segments(d.path());
    assert!(segs.len() >= 5, "{segs:?}");
    for p in &segs {
        let len = std::fs::metadata(p).unwrap().len();
        assert!(len <= 4096, "{} is {len} bytes", p.display());
        let first = files::parse_segment_name(p.file_name().unwrap().to_str().unwrap()).unwrap();
        let bytes = std::fs::read(p).unwrap();
        assert_eq!(segment::decode_header(&bytes), Ok(first));
    }
    log.shutdown();
    drop(log);
    let log = AuditLog::open(d.path(), opts).unwrap();
    let events = all(&log);
    assert_eq!(events.len(), 40);
    assert_gap_free(&events);
    assert_eq!(log.append(simple(99)).unwrap().seq, 41);
}

#[test]
fn too_large_events_are_refused_without_using_a_seq() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    log.append(simple(1)).unwrap();
    let mut big = simple(2);
    big.request_parameters = Some(serde_json::json!({ "blob": "x".repeat(MAX_EVENT_BYTES) }));
    match log.append(big) {
        Err(AuditError::EventTooLarge { bytes, max }) => {
            assert!(bytes > max && max == MAX_EVENT_BYTES)
        }
        other => panic!("{other:?}"),
    }
    assert!(!log.is_poisoned());
    assert_eq!(log.append(simple(3)).unwrap().seq, 2);
}

/// `append_all_with` refuses the whole batch, before writing anything, when
/// one draft is too large; otherwise every event is appended in order.
#[test]
fn a_batch_is_admitted_whole_or_not_at_all() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    log.append(simple(1)).unwrap();
    let submit = |drafts: Vec<EventDraft>| {
        let (tx, rx) = std::sync::mpsc::channel();
        let items = drafts
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                let tx = tx.clone();
                let done: AckedDone = Box::new(move |r| {
                    let _ = tx.send((i, r));
                });
                (d, done)
            })
            .collect();
        log.append_all_with(items).map(|()| {
            drop(tx);
            let mut got: Vec<(usize, Result<Acked, AuditError>)> = rx.iter().collect();
            got.sort_by_key(|(i, _)| *i);
            got.into_iter().map(|(_, r)| r.unwrap()).collect::<Vec<_>>()
        })
    };
    let mut drafts: Vec<EventDraft> = (2..6).map(simple).collect();
    drafts[2].request_parameters = Some(serde_json::json!({ "blob": "x".repeat(MAX_EVENT_BYTES) }));
    match submit(drafts) {
        Err((2, AuditError::EventTooLarge { bytes, max })) => {
            assert!(bytes > max && max == MAX_EVENT_BYTES)
        }
        Err((i, e)) => panic!("draft {i}: {e:?}"),
        Ok(_) => panic!("a batch with a too-large event was admitted"),
    }
    assert_eq!(
        log.last_seq(),
        1,
        "nothing of the refused batch was written"
    );
    let acked = submit((2..6).map(simple).collect()).unwrap();
    let seqs: Vec<u64> = acked.iter().map(|a| a.event.seq).collect();
    assert_eq!(seqs, [2, 3, 4, 5]);
    let stored = all(&log);
    assert_eq!(stored.len(), 5);
    // The canonical form handed back (prepared with the leaf) is the
    // event's own encoding, and the event is the one stored.
    for a in &acked {
        let mut written = Vec::new();
        a.write_canonical(&mut written);
        assert_eq!(written, a.event.canonical_bytes());
        let s = stored.iter().find(|e| e.seq == a.event.seq).unwrap();
        assert_eq!(s.canonical_bytes(), written, "seq {}", a.event.seq);
    }
}

/// `append_batch_with`: the same admission (whole or nothing, the failing
/// draft named, `done` never called), then one callback with every event
/// in order, on consecutive seqs even while other batches race it.
#[test]
fn a_batch_with_one_callback_is_acknowledged_whole_and_in_order() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    log.append(simple(1)).unwrap();
    let submit = |drafts: Vec<EventDraft>| {
        let (tx, rx) = std::sync::mpsc::channel();
        let done: BatchDone = Box::new(move |r| {
            let _ = tx.send(r);
        });
        log.append_batch_with(drafts, done)
            .map(|()| rx.recv().unwrap().unwrap())
            .map_err(|(i, e)| {
                assert!(rx.try_recv().is_err(), "done called for a refused batch");
                (i, e)
            })
    };
    let mut drafts: Vec<EventDraft> = (2..6).map(simple).collect();
    drafts[1].request_parameters = Some(serde_json::json!({ "blob": "x".repeat(MAX_EVENT_BYTES) }));
    match submit(drafts) {
        Err((1, AuditError::EventTooLarge { bytes, max })) => {
            assert!(bytes > max && max == MAX_EVENT_BYTES)
        }
        Err((i, e)) => panic!("draft {i}: {e:?}"),
        Ok(_) => panic!("a batch with a too-large event was admitted"),
    }
    assert_eq!(
        log.last_seq(),
        1,
        "nothing of the refused batch was written"
    );
    assert!(submit(Vec::new()).unwrap().is_empty());

    // Eight threads, 50 batches of 20 each: every batch's seqs are
    // consecutive and in the order given, and the events are the stored ones.
    let batches: Vec<Vec<Acked>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let submit = &submit;
                s.spawn(move || {
                    (0..50)
                        .map(|b| {
                            submit((0..20).map(|i| simple(t * 10_000 + b * 20 + i)).collect())
                                .unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .flat_map(|h| h.join().unwrap())
            .collect();
        handles
    });
    let stored = all(&log);
    assert_eq!(stored.len(), 1 + 8 * 50 * 20);
    for acked in &batches {
        assert_eq!(acked.len(), 20);
        let first = acked[0].event.seq;
        for (k, a) in acked.iter().enumerate() {
            assert_eq!(
                a.event.seq,
                first + k as u64,
                "a batch's seqs are consecutive"
            );
            let mut written = Vec::new();
            a.write_canonical(&mut written);
            let s = stored.iter().find(|e| e.seq == a.event.seq).unwrap();
            assert_eq!(s.canonical_bytes(), written, "seq {}", a.event.seq);
        }
        // In the order given: `simple(n)` has request id `req-<n>`.
        let n: Vec<u64> = acked
            .iter()
            .map(|a| a.event.request_id.as_deref().unwrap()[4..].parse().unwrap())
            .collect();
        assert!(n.windows(2).all(|w| w[1] == w[0] + 1), "{n:?}");
    }
}

#[test]
fn a_second_writer_is_locked_out_until_shutdown() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    match AuditLog::open(d.path(), Options::default()) {
        Err(AuditError::Locked { path }) => assert_eq!(path, d.path().join(files::LOCK)),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("second open succeeded"),
    }
    log.append(simple(1)).unwrap();
    log.shutdown();
    assert!(matches!(log.append(simple(2)), Err(AuditError::Closed)));
    // Reads keep working after shutdown; the lock is gone.
    assert_eq!(all(&log).len(), 1);
    let again = open(d.path());
    assert_eq!(again.append(simple(3)).unwrap().seq, 2);
}

#[test]
fn read_only_open_sees_a_live_writer_and_cannot_append() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    for i in 0..5 {
        log.append(simple(i)).unwrap();
    }
    let ro = AuditLog::open_read_only(d.path()).unwrap();
    assert_eq!(ro.last_seq(), 5);
    assert_eq!(all(&ro).len(), 5);
    assert!(matches!(ro.append(simple(9)), Err(AuditError::ReadOnly)));
    // Without the index file it builds its own in memory.
    log.shutdown();
    drop(log);
    for p in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = std::fs::remove_file(d.path().join(p));
    }
    let ro = AuditLog::open_read_only(d.path()).unwrap();
    let events = all(&ro);
    assert_eq!(events.len(), 5);
    assert_gap_free(&events);
    assert!(!d.path().join("index.sqlite").exists());
    assert!(AuditLog::open_read_only(&d.path().join("missing")).is_err());
}

#[test]
fn concurrent_callers_share_fsyncs() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..2000 {
        let tx = tx.clone();
        log.append_with(
            simple(i),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
    }
    drop(tx);
    let results: Vec<_> = rx.iter().collect();
    assert_eq!(results.len(), 2000);
    assert!(results.iter().all(Result::is_ok));
    let stats = log.stats();
    assert_eq!(stats.events, 2000);
    assert!(stats.batches < 2000, "{stats:?}");
    assert!(stats.fsyncs <= stats.batches + 1, "{stats:?}");
    assert_gap_free(&all(&log));
}
