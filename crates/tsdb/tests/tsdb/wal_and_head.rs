//! Appends, rejections, isolation, label queries, replay, group commit and
//! poisoning.

use std::sync::Arc;

use model::{MatchOp, Matcher, Metadata, MetricType, stale_nan};
use tsdb::{Db, Error, Options, RejectReason};

use crate::common::*;

#[test]
fn round_trip_and_replay() {
    let d = tempfile::tempdir().unwrap();
    let db = open(d.path());
    let b = batch(vec![
        series(
            &[("__name__", "up"), ("job", "a")],
            &[(1000, 1.0), (2000, 0.0), (3000, stale_nan())],
        ),
        series(&[("__name__", "up"), ("job", "b")], &[(1000, 1.0)]),
    ]);
    let r = db.append("default", &b).unwrap();
    assert_eq!(
        (r.accepted_samples, r.new_series, r.rejected_total()),
        (4, 2, 0)
    );
    let want = vec![
        (
            r#"up{job="a"}"#.to_string(),
            vec![
                (1000, 1f64.to_bits()),
                (2000, 0f64.to_bits()),
                (3000, model::STALE_NAN_BITS),
            ],
        ),
        (r#"up{job="b"}"#.to_string(), vec![(1000, 1f64.to_bits())]),
    ];
    assert_eq!(
        dump(&db, "default", 0, 10_000, &[eq("__name__", "up")]),
        want
    );
    // Inclusive bounds.
    assert_eq!(
        dump(&db, "default", 2000, 2000, &[eq("job", "a")]),
        vec![(r#"up{job="a"}"#.to_string(), vec![(2000, 0f64.to_bits())])]
    );
    db.close().unwrap();
    let db = open(d.path());
    assert_eq!(
        dump(&db, "default", 0, 10_000, &[eq("__name__", "up")]),
        want
    );
    // Appending after replay continues the same series.
    let r = db
        .append(
            "default",
            &batch(vec![series(
                &[("__name__", "up"), ("job", "a")],
                &[(4000, 2.0)],
            )]),
        )
        .unwrap();
    assert_eq!(r.new_series, 0);
    db.close().unwrap();
    let db = open(d.path());
    assert_eq!(
        dump(&db, "default", 0, 10_000, &[eq("job", "a")])[0]
            .1
            .len(),
        4
    );
}

#[test]
fn projects_are_isolated() {
    let d = tempfile::tempdir().unwrap();
    let db = open(d.path());
    db.append(
        "alpha",
        &batch(vec![series(
            &[("__name__", "m"), ("who", "alpha")],
            &[(1, 1.0)],
        )]),
    )
    .unwrap();
    db.append(
        "beta",
        &batch(vec![series(
            &[("__name__", "m"), ("who", "beta")],
            &[(1, 2.0)],
        )]),
    )
    .unwrap();
    let check = |db: &Db, head_series| {
        for (p, other) in [("alpha", "beta"), ("beta", "alpha")] {
            let q = db.querier(p, 0, 10);
            let all = Matcher::new(MatchOp::Regex, "__name__", ".+").unwrap();
            let s = q.series(&[all]).unwrap();
            assert_eq!(s.len(), 1, "{p}");
            assert_eq!(s[0].get("who"), Some(p));
            assert_eq!(q.label_values("who", &[]).unwrap(), vec![p.to_string()]);
            assert!(q.series(&[eq("who", other)]).unwrap().is_empty());
            assert_eq!(db.stats(p).head_series, head_series);
        }
        assert!(
            db.querier("gamma", 0, 10)
                .series(&[eq("__name__", "m")])
                .unwrap()
                .is_empty()
        );
    };
    check(&db, 1);
    db.flush().unwrap();
    // Flushed: the series left the head for a block.
    check(&db, 0);
    db.close().unwrap();
    let db = open(d.path());
    check(&db, 0);
}

#[test]
fn out_of_order_duplicates_and_limits() {
    let d = tempfile::tempdir().unwrap();
    let db = open_with(
        d.path(),
        Options {
            max_series_per_project: 2,
            ..opts()
        },
    )
    .unwrap();
    let a = &[("__name__", "a")];
    db.append("p", &batch(vec![series(a, &[(100, 1.0), (200, 2.0)])]))
        .unwrap();
    let r = db
        .append(
            "p",
            &batch(vec![
                // older than last: out of order; same t same v: accepted; same t other v: rejected
                series(a, &[(150, 9.0), (200, 2.0), (200, 3.0), (300, 3.0)]),
                series(&[("__name__", "b")], &[(1, 1.0)]),
            ]),
        )
        .unwrap();
    assert_eq!(r.accepted_samples, 3, "{r:?}"); // 200 (exact duplicate), 300, b@1
    assert_eq!(r.rejected_count(RejectReason::OutOfOrder), 1);
    assert_eq!(r.rejected_count(RejectReason::DuplicateTimestamp), 1);
    // The third series is one too many; a and b still take samples.
    let r = db
        .append(
            "p",
            &batch(vec![
                series(&[("__name__", "c")], &[(1, 1.0), (2, 2.0)]),
                series(&[("__name__", "b")], &[(2, 1.0)]),
            ]),
        )
        .unwrap();
    assert_eq!(r.accepted_samples, 1, "{r:?}");
    assert_eq!(r.rejected_count(RejectReason::SeriesLimit), 2);
    assert_eq!(db.stats("p").head_series, 2);
    let limit = r
        .rejected
        .iter()
        .find(|x| x.reason == RejectReason::SeriesLimit)
        .unwrap();
    assert_eq!(limit.labels.to_string(), "c{}");
    assert_eq!(
        dump(&db, "p", 0, 1000, &[eq("__name__", "a")])[0].1,
        vec![
            (100, 1f64.to_bits()),
            (200, 2f64.to_bits()),
            (300, 3f64.to_bits())
        ]
    );
    // After a flush, anything before the cut is too old.
    db.flush().unwrap();
    let r = db
        .append("p", &batch(vec![series(a, &[(250, 1.0), (400, 4.0)])]))
        .unwrap();
    assert_eq!(r.rejected_count(RejectReason::TooOld), 1);
    assert_eq!(r.accepted_samples, 1);
}

#[test]
fn out_of_order_window_accepts_and_merges() {
    let d = tempfile::tempdir().unwrap();
    let db = open_with(
        d.path(),
        Options {
            ooo_window_ms: 1000,
            ..opts()
        },
    )
    .unwrap();
    let a = &[("__name__", "a")];
    db.append("p", &batch(vec![series(a, &[(1000, 1.0), (2000, 2.0)])]))
        .unwrap();
    let r = db
        .append(
            "p",
            &batch(vec![series(
                a,
                &[
                    (1500, 1.5),
                    (500, 0.5),
                    (1500, 1.5),
                    (1500, 7.0),
                    (1200, 1.2),
                ],
            )]),
        )
        .unwrap();
    assert_eq!(r.accepted_samples, 3, "{r:?}"); // 1500, dup 1500, 1200
    assert_eq!(r.rejected_count(RejectReason::OutOfOrder), 1); // 500 is outside the window
    assert_eq!(r.rejected_count(RejectReason::DuplicateTimestamp), 1);
    let want: Vec<(i64, u64)> = [(1000, 1.0), (1200, 1.2), (1500, 1.5), (2000, 2.0)]
        .iter()
        .map(|(t, v): &(i64, f64)| (*t, v.to_bits()))
        .collect();
    assert_eq!(dump(&db, "p", 0, 5000, &[eq("__name__", "a")])[0].1, want);
    db.close().unwrap();
    let db = open_with(
        d.path(),
        Options {
            ooo_window_ms: 1000,
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(dump(&db, "p", 0, 5000, &[eq("__name__", "a")])[0].1, want);
    db.flush().unwrap();
    assert_eq!(dump(&db, "p", 0, 5000, &[eq("__name__", "a")])[0].1, want);
}

#[test]
fn label_queries_and_empty_matchers() {
    let d = tempfile::tempdir().unwrap();
    let db = open(d.path());
    db.append(
        "p",
        &batch(vec![
            series(
                &[("__name__", "up"), ("job", "a"), ("zone", "eu")],
                &[(1, 1.0)],
            ),
            series(&[("__name__", "up"), ("job", "b")], &[(1, 1.0)]),
            series(&[("__name__", "down"), ("job", "a")], &[(1, 1.0)]),
        ]),
    )
    .unwrap();
    for flushed in [false, true] {
        let q = db.querier("p", 0, 10);
        assert_eq!(
            q.label_names(&[]).unwrap(),
            vec!["__name__", "job", "zone"],
            "{flushed}"
        );
        assert_eq!(
            q.label_names(&[eq("job", "b")]).unwrap(),
            vec!["__name__", "job"]
        );
        assert_eq!(q.label_values("job", &[]).unwrap(), vec!["a", "b"]);
        assert_eq!(
            q.label_values("job", &[eq("__name__", "down")]).unwrap(),
            vec!["a"]
        );
        let no_zone: Vec<String> = q
            .series(&[eq("__name__", "up"), eq("zone", "")])
            .unwrap()
            .iter()
            .map(|l| l.to_string())
            .collect();
        assert_eq!(no_zone, vec![r#"up{job="b"}"#]);
        // Nothing in [100, 200]: no names, no values.
        assert!(
            db.querier("p", 100, 200)
                .label_names(&[])
                .unwrap()
                .is_empty()
        );
        assert!(
            db.querier("p", 100, 200)
                .label_values("job", &[])
                .unwrap()
                .is_empty()
        );
        let re = Matcher::new(MatchOp::Regex, "job", "a|c").unwrap();
        let names: Vec<String> = q
            .series(&[re])
            .unwrap()
            .iter()
            .map(|l| l.to_string())
            .collect();
        assert_eq!(names, vec![r#"down{job="a"}"#, r#"up{job="a", zone="eu"}"#]);
        db.flush().unwrap();
    }
}

#[test]
fn metadata_and_stats() {
    let d = tempfile::tempdir().unwrap();
    let db = open(d.path());
    let mut b = batch(vec![series(
        &[("__name__", "reqs_total"), ("code", "200")],
        &[(1, 1.0)],
    )]);
    b.metadata.push((
        "reqs_total".into(),
        Metadata {
            metric_type: MetricType::Counter,
            help: "Requests.".into(),
            unit: "".into(),
        },
    ));
    db.append("p", &b).unwrap();
    let check = |db: &Db| {
        let m = db.metadata("p", Some("reqs_total"));
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].1.metric_type, MetricType::Counter);
        assert!(db.metadata("p", Some("nope")).is_empty());
        let s = db.stats("p");
        assert_eq!(s.head_series, 1);
        assert_eq!(s.top_metrics, vec![("reqs_total".to_string(), 1)]);
    };
    check(&db);
    db.close().unwrap();
    let db = open(d.path());
    check(&db);
    assert_eq!(db.stats("p").samples_stored, 1);
}

#[test]
fn invalid_input_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let db = open(d.path());
    let b = batch(vec![
        series(&[("__name__", "a")], &[(1, 1.0)]),
        series(&[], &[(1, 1.0)]),
    ]);
    match db.append("p", &b) {
        Err(Error::InvalidInput(m)) => assert!(m.contains("series 1"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(
        db.querier("p", 0, 10)
            .series(&[eq("__name__", "a")])
            .unwrap()
            .is_empty()
    );
    for bad in ["", "..", "a/b", "x y"] {
        assert!(
            matches!(db.append(bad, &batch(vec![])), Err(Error::InvalidInput(_))),
            "{bad:?}"
        );
    }
    // A second store on the same directory is refused.
    assert!(matches!(Db::open(d.path(), opts()), Err(Error::Locked(_))));
}

#[test]
fn concurrent_appenders_share_fsyncs() {
    let d = tempfile::tempdir().unwrap();
    let db = Arc::new(open(d.path()));
    let threads = 8;
    let per = 200;
    let hs: Vec<_> = (0..threads)
        .map(|th| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    let b = batch(vec![series(
                        &[("__name__", "c"), ("th", &th.to_string())],
                        &[(i as i64 * 10, i as f64)],
                    )]);
                    let r = db
                        .append(if th % 2 == 0 { "even" } else { "odd" }, &b)
                        .unwrap();
                    assert_eq!(r.accepted_samples, 1);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let syncs = db.wal_syncs();
    assert!(
        syncs < (threads * per) as u64,
        "{syncs} fsyncs for {} appends",
        threads * per
    );
    let db = Arc::try_unwrap(db).ok().unwrap();
    db.close().unwrap();
    let db = open(d.path());
    for p in ["even", "odd"] {
        let got = dump(&db, p, 0, i64::MAX, &[eq("__name__", "c")]);
        assert_eq!(got.len(), threads / 2);
        assert!(got.iter().all(|(_, v)| v.len() == per), "{p}");
    }
}

#[test]
fn failed_fsync_poisons() {
    let d = tempfile::tempdir().unwrap();
    let faults = diskio::Faults::enabled();
    let db = open_with(
        d.path(),
        Options {
            faults: faults.clone(),
            ..opts()
        },
    )
    .unwrap();
    let b = |t| batch(vec![series(&[("__name__", "a")], &[(t, 1.0)])]);
    db.append("p", &b(1)).unwrap();
    faults.fail_next_fsync();
    assert!(matches!(db.append("p", &b(2)), Err(Error::Poisoned(_))));
    // No silent retry: every later append fails, even with the disk fine.
    faults.clear();
    assert!(matches!(db.append("p", &b(3)), Err(Error::Poisoned(_))));
    assert!(matches!(db.flush(), Err(Error::Poisoned(_))));
    assert!(db.close().is_err());
    // A restart recovers what was acknowledged.
    // (t=2 was written before its fsync failed: it may or may not be back;
    // t=3 was never written.)
    let db = open(d.path());
    let got = &dump(&db, "p", 0, 10, &[eq("__name__", "a")])[0].1;
    assert_eq!(got[0], (1, 1f64.to_bits()));
    assert!(got.iter().all(|(t, _)| *t != 3), "{got:?}");
}

#[test]
fn appends_race_with_cuts_and_queries() {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    let d = tempfile::tempdir().unwrap();
    let db = Arc::new(
        open_with(
            d.path(),
            Options {
                block_duration_ms: 1000,
                ..opts()
            },
        )
        .unwrap(),
    );
    let clock = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (db, clock, stop) = (db.clone(), clock.clone(), stop.clone());
            std::thread::spawn(move || {
                // Accepted samples per series label text.
                let mut accepted: HashMap<String, usize> = HashMap::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = clock.fetch_add(10, Ordering::SeqCst);
                    let b = batch(
                        (0..10)
                            .map(|s| {
                                series(
                                    &[
                                        ("__name__", "r"),
                                        ("w", &w.to_string()),
                                        ("s", &s.to_string()),
                                    ],
                                    &[(t, t as f64)],
                                )
                            })
                            .collect(),
                    );
                    let r = db.append("p", &b).unwrap();
                    // A cut may land between the shards of one batch: some of
                    // its series get in, the rest are too old (all listed).
                    assert_eq!(
                        r.accepted_samples + r.rejected_count(RejectReason::TooOld),
                        10,
                        "{r:?}"
                    );
                    for ts in &b.series {
                        if !r.rejected.iter().any(|x| x.labels == ts.labels) {
                            *accepted.entry(ts.labels.to_string()).or_default() += 1;
                        }
                    }
                }
                accepted
            })
        })
        .collect();
    for i in 0..30 {
        if i % 3 == 0 {
            db.flush().unwrap();
        } else {
            db.maintain().unwrap();
        }
        let q = db.querier("p", 0, i64::MAX);
        for s in q.select(&[eq("__name__", "r")]).unwrap() {
            let ts: Vec<i64> = s.samples().map(|x| x.unwrap().t).collect();
            assert!(ts.windows(2).all(|w| w[0] < w[1]), "{}", s.labels);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let mut want: HashMap<String, usize> = HashMap::new();
    for h in writers {
        want.extend(h.join().unwrap());
    }
    let check = |db: &Db| {
        let got: HashMap<String, usize> = dump(db, "p", 0, i64::MAX, &[eq("__name__", "r")])
            .into_iter()
            .map(|(l, v)| (l, v.len()))
            .collect();
        assert_eq!(got, want);
    };
    check(&db);
    let db = Arc::try_unwrap(db).ok().unwrap();
    db.close().unwrap();
    let db = open(d.path());
    check(&db);
}

#[test]
fn the_store_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Db>();
    assert_send_sync::<tsdb::Querier>();
    fn assert_send<T: Send>() {}
    assert_send::<tsdb::SeriesSet>();
    assert_send::<tsdb::Samples>();
}

/// A regex matcher run again after the label got new values sees them (the head
/// remembers which values a regex matched only while the label's values stay the same),
/// for `=~` and `!~`, alone and after an exact matcher, and across many values.
#[test]
fn regex_selects_see_values_added_since_the_last_query() {
    let d = tempfile::tempdir().unwrap();
    let db = open(d.path());
    let names = |ms: &[Matcher]| -> Vec<String> {
        dump(&db, "default", 0, 10_000, ms)
            .into_iter()
            .map(|(l, _)| l)
            .collect()
    };
    let re = |op, v: &str| Matcher::new(op, "instance", v).unwrap();
    let add = |inst: &str| {
        db.append(
            "default",
            &batch(vec![series(
                &[("__name__", "up"), ("instance", inst)],
                &[(1000, 1.0)],
            )]),
        )
        .unwrap();
    };
    for i in 0..300 {
        add(&format!("db-{i:03}"));
    }
    add("web-001");
    let web = [re(MatchOp::Regex, "web-0.*")];
    let not_web = [eq("__name__", "up"), re(MatchOp::NotRegex, "web-.*|db-.*")];
    assert_eq!(names(&web), [r#"up{instance="web-001"}"#]);
    assert!(names(&not_web).is_empty());
    add("web-002");
    add("api-001");
    assert_eq!(
        names(&web),
        [r#"up{instance="web-001"}"#, r#"up{instance="web-002"}"#]
    );
    assert_eq!(names(&not_web), [r#"up{instance="api-001"}"#]);
    // The same answers as a scan of every series by the matchers' definition.
    let all = names(&[eq("__name__", "up")]);
    assert_eq!(all.len(), 303);
    for ms in [&web[..], &not_web[..]] {
        let want: Vec<&String> = all
            .iter()
            .filter(|l| {
                let inst = l.split('"').nth(1).unwrap();
                ms.iter().all(|m| m.name != "instance" || m.matches(inst))
            })
            .collect();
        assert_eq!(names(ms).iter().collect::<Vec<_>>(), want);
    }
}
