//! Search: every filter against a naive reference, both orders, cursors,
//! get, export.

use audit::*;

use crate::support::*;

const ACTIONS: [&str; 5] = [
    "iam.token.create",
    "iam.token.delete",
    "iam.user.login",
    "project.create",
    "iamx.other",
];
const PROJECTS: [Option<&str>; 3] = [Some("alpha"), Some("beta"), None];

/// 240 events, 1 ms apart, spread over logs and actions.
fn fixture() -> (tempfile::TempDir, AuditLog, TestClock, Vec<Event>) {
    let d = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0);
    let log = AuditLog::open(d.path(), clock.options()).unwrap();
    let mut events = Vec::new();
    for n in 0..240 {
        clock.advance(1_000_000);
        events.push(
            log.append(draft(PROJECTS[n % 3], ACTIONS[n % 5], n))
                .unwrap(),
        );
    }
    (d, log, clock, events)
}

/// The reference: a plain filter over every event.
fn naive(events: &[Event], q: &Query) -> Vec<u64> {
    let ns = |e: &Event| parse_time_ns(&e.time).unwrap();
    let mut out: Vec<u64> = events
        .iter()
        .filter(|e| q.log.as_ref().is_none_or(|l| &e.log_key() == l))
        .filter(|e| q.principal_id.as_ref().is_none_or(|p| &e.principal.id == p))
        .filter(|e| q.principal_type.is_none_or(|k| e.principal.kind == k))
        .filter(|e| q.action.as_ref().is_none_or(|a| &e.action == a))
        .filter(|e| {
            q.action_prefix
                .as_ref()
                .is_none_or(|a| e.action.starts_with(a.as_str()))
        })
        .filter(|e| {
            q.resource_type
                .as_ref()
                .is_none_or(|t| e.resource.as_ref().is_some_and(|r| &r.kind == t))
        })
        .filter(|e| {
            q.resource_id.as_ref().is_none_or(|t| {
                e.resource
                    .as_ref()
                    .is_some_and(|r| r.id.as_ref() == Some(t))
            })
        })
        .filter(|e| q.status.is_none_or(|s| e.result.status == s))
        .filter(|e| {
            q.source_ip
                .as_ref()
                .is_none_or(|ip| e.source_ip.as_ref() == Some(ip))
        })
        .filter(|e| q.from_ns.is_none_or(|f| ns(e) >= f))
        .filter(|e| q.to_ns.is_none_or(|t| ns(e) < t))
        .filter(|e| {
            q.text.as_ref().is_none_or(|t| {
                // Text search covers the leaf: personal values are not in it.
                String::from_utf8(e.leaf_bytes())
                    .unwrap()
                    .to_lowercase()
                    .contains(&t.to_lowercase())
            })
        })
        .map(|e| e.seq)
        .collect();
    if q.order == Order::NewestFirst {
        out.reverse();
    }
    out
}

/// Pages through `q` with a small page size and compares with the reference.
fn check(q: Query) {
    let (_d, log, _clock, events) = fixture();
    check_on(&log, &events, q);
}

fn check_on(log: &AuditLog, events: &[Event], q: Query) {
    for order in [Order::NewestFirst, Order::OldestFirst] {
        let mut q = Query {
            order,
            limit: 7,
            ..q.clone()
        };
        let expected = naive(events, &q);
        let mut got = Vec::new();
        loop {
            let page = log.search(&q).unwrap();
            assert!(page.events.len() <= 7);
            got.extend(page.events.iter().map(|e| e.seq));
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(got, expected, "{q:?}");
        let ex: Vec<u64> = log
            .export(Query {
                cursor: None,
                ..q.clone()
            })
            .map(|e| e.unwrap().seq)
            .collect();
        assert_eq!(ex, expected, "export {q:?}");
    }
}

#[test]
fn no_filter() {
    check(Query::default());
}

#[test]
fn every_filter_matches_the_reference() {
    let (_d, log, _clock, events) = fixture();
    for q in queries() {
        check_on(&log, &events, q);
    }
}

/// The same queries when the older events come from SQLite and the newer
/// ones from the in-memory tail (a reopen flushes everything to SQLite;
/// what is appended after it waits in the tail), and from a read-only open.
#[test]
fn every_filter_matches_the_reference_across_sqlite_and_the_tail() {
    let (d, log, clock, mut events) = fixture();
    log.shutdown();
    drop(log);
    let log = AuditLog::open(d.path(), clock.options()).unwrap();
    for q in queries() {
        check_on(&log, &events, q);
    }
    for n in 240..330 {
        clock.advance(1_000_000);
        events.push(
            log.append(draft(PROJECTS[n % 3], ACTIONS[n % 5], n))
                .unwrap(),
        );
    }
    for q in queries() {
        check_on(&log, &events, q);
    }
    for e in [&events[5], &events[300]] {
        assert_eq!(log.get(&e.log_key(), &e.id).unwrap().as_ref(), Some(e));
    }
    let ro = AuditLog::open_read_only(d.path()).unwrap();
    assert_eq!(ro.last_seq(), 330);
    for q in queries() {
        check_on(&ro, &events, q);
    }
}

fn queries() -> Vec<Query> {
    let ms = 1_000_000;
    vec![
        Query {
            log: Some(LogKey::Project("alpha".into())),
            ..Query::default()
        },
        Query {
            log: Some(LogKey::Organization),
            ..Query::default()
        },
        Query {
            log: Some(LogKey::Project("nope".into())),
            ..Query::default()
        },
        Query {
            principal_id: Some("u3".into()),
            ..Query::default()
        },
        Query {
            principal_type: Some(PrincipalKind::Token),
            ..Query::default()
        },
        Query {
            action: Some("iam.token.delete".into()),
            ..Query::default()
        },
        Query {
            action_prefix: Some("iam.".into()),
            ..Query::default()
        },
        Query {
            action_prefix: Some("iam".into()),
            ..Query::default()
        },
        Query {
            action_prefix: Some("iam.token.".into()),
            ..Query::default()
        },
        Query {
            resource_type: Some("token".into()),
            ..Query::default()
        },
        Query {
            resource_id: Some("r4".into()),
            ..Query::default()
        },
        Query {
            status: Some(Status::Failure),
            ..Query::default()
        },
        Query {
            source_ip: Some("10.0.0.2".into()),
            ..Query::default()
        },
        Query {
            from_ns: Some(T0 + 100 * ms),
            ..Query::default()
        },
        Query {
            to_ns: Some(T0 + 100 * ms),
            ..Query::default()
        },
        Query {
            from_ns: Some(T0 + 50 * ms),
            to_ns: Some(T0 + 60 * ms),
            ..Query::default()
        },
        Query {
            from_ns: Some(T0 + 500 * ms),
            ..Query::default()
        },
        Query {
            to_ns: Some(T0),
            ..Query::default()
        },
        Query {
            from_ns: Some(T0 + 60 * ms),
            to_ns: Some(T0 + 50 * ms),
            ..Query::default()
        },
        Query {
            text: Some("NEEDLE".into()),
            ..Query::default()
        },
        Query {
            text: Some("größe ärger".into()),
            ..Query::default()
        },
        Query {
            text: Some("req-17\"".into()),
            ..Query::default()
        },
        Query {
            text: Some("no such text".into()),
            ..Query::default()
        },
        Query {
            log: Some(LogKey::Project("beta".into())),
            action: Some("iam.user.login".into()),
            from_ns: Some(T0 + 20 * ms),
            to_ns: Some(T0 + 200 * ms),
            ..Query::default()
        },
        Query {
            log: Some(LogKey::Project("alpha".into())),
            action_prefix: Some("iam.".into()),
            status: Some(Status::Success),
            principal_type: Some(PrincipalKind::User),
            text: Some("name-".into()),
            ..Query::default()
        },
        Query {
            from_ns: Some(T0 + 230 * ms),
            to_ns: Some(T0 + 260 * ms),
            ..Query::default()
        },
        Query {
            log: Some(LogKey::Project("beta".into())),
            principal_id: Some("u2".into()),
            resource_id: Some("r3".into()),
            ..Query::default()
        },
    ]
}

#[test]
fn pages_stay_stable_while_events_are_appended() {
    let (_d, log, _clock, _events) = fixture();
    for order in [Order::NewestFirst, Order::OldestFirst] {
        let q = Query {
            log: Some(LogKey::Project("alpha".into())),
            order,
            limit: 10,
            ..Query::default()
        };
        let before = naive(&all(&log), &q);
        let mut q = q;
        let mut got = Vec::new();
        let mut appended = Vec::new();
        loop {
            let page = log.search(&q).unwrap();
            got.extend(page.events.iter().map(|e| e.seq));
            // Appends between pages, into the same log.
            appended.push(
                log.append(draft(Some("alpha"), "iam.token.create", 1))
                    .unwrap()
                    .seq,
            );
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        let mut dedup = got.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(dedup.len(), got.len(), "a page repeated an event");
        match order {
            // Newest first: exactly the snapshot at the first page.
            Order::NewestFirst => assert_eq!(got, before),
            // Oldest first: the snapshot, then whatever was appended meanwhile.
            Order::OldestFirst => {
                assert_eq!(&got[..before.len()], &before[..]);
                assert!(got[before.len()..].iter().all(|s| appended.contains(s)));
            }
        }
    }
}

#[test]
fn bad_cursors_are_typed_errors() {
    let (_d, log, _clock, _events) = fixture();
    let page = log
        .search(&Query {
            limit: 5,
            ..Query::default()
        })
        .unwrap();
    let good = page.next_cursor.unwrap();
    for bad in [
        "",
        "garbage",
        "v1.n.",
        "v1.n.-1",
        "v1.x.5",
        "v1.n.184467440737095516160",
        "\u{0}",
    ] {
        let q = Query {
            cursor: Some(bad.into()),
            ..Query::default()
        };
        assert!(
            matches!(log.search(&q), Err(AuditError::BadCursor(_))),
            "{bad:?}"
        );
    }
    let other_order = Query {
        cursor: Some(good),
        order: Order::OldestFirst,
        ..Query::default()
    };
    assert!(matches!(
        log.search(&other_order),
        Err(AuditError::BadCursor(_))
    ));
}

#[test]
fn get_finds_by_id_only_within_its_log() {
    let (_d, log, _clock, events) = fixture();
    let e = &events[4]; // project beta
    assert_eq!(e.log_key(), LogKey::Project("beta".into()));
    assert_eq!(log.get(&e.log_key(), &e.id).unwrap().as_ref(), Some(e));
    assert_eq!(
        log.get(&LogKey::Project("alpha".into()), &e.id).unwrap(),
        None
    );
    assert_eq!(log.get(&LogKey::Organization, &e.id).unwrap(), None);
    assert_eq!(log.get(&e.log_key(), "not-an-id").unwrap(), None);
}

#[test]
fn limits_default_and_clamp() {
    let (_d, log, _clock, _events) = fixture();
    assert_eq!(
        log.search(&Query::default()).unwrap().events.len(),
        DEFAULT_LIMIT
    );
    let all = log
        .search(&Query {
            limit: usize::MAX,
            ..Query::default()
        })
        .unwrap();
    assert_eq!(all.events.len(), 240);
    assert_eq!(all.next_cursor, None);
}

#[test]
fn export_streams_more_than_one_internal_page() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    std::thread::scope(|s| {
        for t in 0..8 {
            let log = log.clone();
            s.spawn(move || {
                for i in 0..150 {
                    log.append(draft(PROJECTS[(t + i) % 3], ACTIONS[i % 5], i))
                        .unwrap();
                }
            });
        }
    });
    let q = Query {
        action_prefix: Some("iam.".into()),
        limit: 3,
        ..Query::default()
    };
    let n = log
        .export(q.clone())
        .map(|e| e.unwrap())
        .filter(|e| e.action.starts_with("iam."))
        .count();
    assert_eq!(n, 1200 * 3 / 5);
    let seqs: Vec<u64> = log.export(q).map(|e| e.unwrap().seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]));
}

#[test]
fn the_main_query_walks_one_composite_index() {
    let (_d, log, _clock, _events) = fixture();
    let q = Query {
        log: Some(LogKey::Project("beta".into())),
        action: Some("iam.user.login".into()),
        from_ns: Some(T0),
        to_ns: Some(T0 + 1),
        ..Query::default()
    };
    let plan = log.explain(&q).unwrap();
    assert!(plan.contains("ev_log_action"), "{plan}");
    assert!(!plan.contains("TEMP B-TREE"), "{plan}");
}

/// Searches racing the background moves of the tail into SQLite: every
/// listing is a gap-free prefix of the log holding at least what was
/// acknowledged before it started.
#[test]
fn searches_stay_consistent_while_the_tail_is_flushed() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    let total = 40_000;
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            for i in 0..total {
                let tx = tx.clone();
                log.append_with(
                    draft(PROJECTS[i % 3], ACTIONS[i % 5], i),
                    Box::new(move |r| tx.send(r.map(|_| ())).unwrap()),
                );
            }
            drop(tx);
            assert_eq!(rx.iter().filter(Result::is_ok).count(), total);
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut rounds = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) || rounds < 3 {
            rounds += 1;
            let acked = log.last_seq();
            for order in [Order::OldestFirst, Order::NewestFirst] {
                let mut seqs: Vec<u64> = log
                    .export(Query {
                        order,
                        ..Query::default()
                    })
                    .map(|e| e.unwrap().seq)
                    .collect();
                if order == Order::NewestFirst {
                    seqs.reverse();
                }
                assert!(seqs.len() as u64 >= acked, "{} < {acked}", seqs.len());
                assert!(
                    seqs.iter().enumerate().all(|(i, s)| *s == i as u64 + 1),
                    "a listing has a gap or a repeat"
                );
            }
        }
    });
    assert_gap_free(&all(&log));
}
