//! The read interface: order and limits across block, segment and head
//! boundaries, out-of-order appends, label queries, stats, isolation and
//! live tail.

use logstore::{Direction, Entry, Options, Query, Stats, Store, StreamBatch};
use model::{MatchOp, Matcher};

use crate::common::*;

fn q<'a>(m: &'a [Matcher], dir: Direction, limit: usize, req: &'a [&'a [u8]]) -> Query<'a> {
    Query {
        matchers: m,
        start: i64::MIN,
        end: i64::MAX,
        direction: dir,
        limit,
        required: req,
    }
}

/// 100 entries of one stream appended out of order, 20 at a time, a flush
/// after the second and fourth append: segments, head blocks and the open
/// buffer all hold some, with overlapping time ranges.
fn mixed_store(dir: &std::path::Path) -> Store {
    let s = open(dir);
    let order: Vec<i64> = (0..100).map(|i| (i * 37) % 100).collect();
    for (k, chunk) in order.chunks(20).enumerate() {
        let es: Vec<(i64, String)> = chunk.iter().map(|&t| (t, format!("line {t}"))).collect();
        let es: Vec<(i64, &str)> = es.iter().map(|(t, l)| (*t, l.as_str())).collect();
        s.append("p", &[sb(&[("app", "a")], &es)]).unwrap();
        if k == 1 || k == 3 {
            s.flush().unwrap();
        }
    }
    s
}

#[test]
fn out_of_order_entries_come_back_in_order_both_ways() {
    let d = tempfile::tempdir().unwrap();
    let s = mixed_store(d.path());
    let m = [eq("app", "a")];
    let fwd = times(&s, "p", &m);
    assert_eq!(fwd[0].1, (0..100).collect::<Vec<_>>());
    let sel = s.select("p", &q(&m, Direction::Backward, 0, &[]));
    let back: Vec<i64> = sel
        .into_iter()
        .next()
        .unwrap()
        .1
        .map(|e| e.unwrap().ts)
        .collect();
    assert_eq!(back, (0..100).rev().collect::<Vec<_>>());
    // And after a reopen (WAL replay of the unflushed part).
    s.close().unwrap();
    drop(s);
    let s = open(d.path());
    assert_eq!(times(&s, "p", &m)[0].1, (0..100).collect::<Vec<_>>());
}

#[test]
fn limits_and_ranges_cut_across_boundaries() {
    let d = tempfile::tempdir().unwrap();
    let s = mixed_store(d.path());
    let m = [eq("app", "a")];
    for limit in [1, 7, 16, 17, 33, 99, 100, 150] {
        for (start, end) in [(0, 100), (13, 71), (50, 51), (99, 200)] {
            let query = Query {
                start,
                end,
                ..q(&m, Direction::Forward, limit, &[])
            };
            let got: Vec<i64> = s
                .query("p", &query)
                .unwrap()
                .into_iter()
                .flat_map(|x| x.1)
                .map(|e| e.ts)
                .collect();
            let want: Vec<i64> = (start..end.min(100)).take(limit).collect();
            assert_eq!(got, want, "forward limit {limit} [{start},{end})");
            let query = Query {
                direction: Direction::Backward,
                ..query
            };
            let got: Vec<i64> = s
                .query("p", &query)
                .unwrap()
                .into_iter()
                .flat_map(|x| x.1)
                .map(|e| e.ts)
                .collect();
            let want: Vec<i64> = (start..end.min(100)).rev().take(limit).collect();
            assert_eq!(got, want, "backward limit {limit} [{start},{end})");
        }
    }
}

#[test]
fn a_limit_stops_decompression_early() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    for k in 0..10 {
        let es: Vec<(i64, String)> = (0..64).map(|i| (k * 64 + i, format!("e{i}"))).collect();
        let es: Vec<(i64, &str)> = es.iter().map(|(t, l)| (*t, l.as_str())).collect();
        s.append("p", &[sb(&[("a", "1")], &es)]).unwrap();
    }
    s.flush().unwrap();
    let m = [eq("a", "1")];
    let mut it = s
        .select("p", &q(&m, Direction::Backward, 3, &[]))
        .pop()
        .unwrap()
        .1;
    let got: Vec<i64> = it.by_ref().map(|e| e.unwrap().ts).collect();
    assert_eq!(got, vec![639, 638, 637]);
    assert_eq!(it.blocks_read(), 1, "40 blocks, only the newest needed");
}

#[test]
fn metadata_round_trips_through_wal_head_and_segment() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let e = Entry {
        ts: 5,
        line: "msg".into(),
        metadata: vec![("trace_id".into(), "0af7651916cd43dd".into())],
    };
    let b = StreamBatch {
        labels: labels(&[("a", "1")]),
        entries: vec![e.clone()],
    };
    s.append("p", std::slice::from_ref(&b)).unwrap();
    let check = |s: &Store| {
        let got = dump(s, "p", &[eq("a", "1")], 0, 10, Direction::Forward);
        assert_eq!(got[0].1, vec![e.clone()]);
    };
    check(&s);
    s.close().unwrap();
    drop(s);
    let s = open(d.path()); // replayed, then flushed into a segment
    check(&s);
}

#[test]
fn labels_values_series_and_stats() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    s.append(
        "p",
        &[
            sb(
                &[("job", "nginx"), ("host", "a")],
                &[(10, "GET /"), (20, "GET /x")],
            ),
            sb(&[("job", "nginx"), ("host", "b")], &[(30, "POST /y")]),
            sb(&[("job", "api"), ("env", "prod")], &[(100, "started")]),
        ],
    )
    .unwrap();
    s.flush().unwrap();
    s.append(
        "p",
        &[sb(&[("job", "api"), ("env", "prod")], &[(110, "ok")])],
    )
    .unwrap();
    assert_eq!(s.labels("p", 0, 1000), vec!["env", "host", "job"]);
    assert_eq!(s.labels("p", 0, 50), vec!["host", "job"]);
    assert_eq!(
        s.label_values("p", "job", 0, 1000, &[]),
        vec!["api", "nginx"]
    );
    let re = Matcher::new(MatchOp::Regex, "host", "a|b").unwrap();
    assert_eq!(
        s.label_values("p", "host", 0, 1000, std::slice::from_ref(&re)),
        vec!["a", "b"]
    );
    assert_eq!(s.label_values("p", "host", 25, 1000, &[]), vec!["b"]);
    assert_eq!(
        s.series("p", &[eq("job", "nginx")], 0, 1000),
        vec![
            labels(&[("host", "a"), ("job", "nginx")]),
            labels(&[("host", "b"), ("job", "nginx")])
        ]
    );
    let ne = Matcher::new(MatchOp::NotEqual, "job", "nginx").unwrap();
    assert_eq!(
        s.series("p", &[ne], 0, 1000),
        vec![labels(&[("env", "prod"), ("job", "api")])]
    );
    // Absent label matches "": {env=""} selects the nginx streams.
    assert_eq!(s.series("p", &[eq("env", "")], 0, 1000).len(), 2);
    assert_eq!(
        s.stats("p", &[eq("job", "nginx")], 0, 1000),
        Stats {
            streams: 2,
            chunks: 2,
            entries: 3,
            bytes: 5 + 6 + 7
        }
    );
    // The api stream: one sealed block in a segment, one head entry.
    assert_eq!(
        s.stats("p", &[eq("job", "api")], 0, 1000),
        Stats {
            streams: 1,
            chunks: 2,
            entries: 2,
            bytes: 7 + 2
        }
    );
    assert_eq!(
        s.stats("p", &[eq("job", "api")], 105, 1000),
        Stats {
            streams: 1,
            chunks: 1,
            entries: 1,
            bytes: 2
        }
    );
    assert_eq!(
        s.stats("p", &[eq("job", "none")], 0, 1000),
        Stats::default()
    );
}

#[test]
fn projects_never_see_each_other() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let rx_b = s.subscribe("b");
    s.append("a", &[sb(&[("job", "x")], &[(1, "secret of a")])])
        .unwrap();
    s.append("b", &[sb(&[("job", "x")], &[(2, "data of b")])])
        .unwrap();
    s.flush().unwrap();
    s.append("a", &[sb(&[("job", "y")], &[(3, "more of a")])])
        .unwrap();
    for (p, want) in [("a", vec![1, 3]), ("b", vec![2])] {
        let got: Vec<i64> = times(&s, p, &[]).into_iter().flat_map(|x| x.1).collect();
        assert_eq!(got, want, "project {p}");
    }
    assert_eq!(s.label_values("b", "job", 0, 10, &[]), vec!["x"]);
    assert_eq!(s.stats("b", &[], 0, 10).entries, 1);
    assert!(times(&s, "c", &[]).is_empty());
    let got: Vec<String> = rx_b
        .try_iter()
        .flat_map(|b| {
            b.iter()
                .flat_map(|s| s.entries.iter().map(|e| e.line.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(got, vec!["data of b"]);
    s.close().unwrap();
    drop(s);
    let s = open(d.path());
    assert_eq!(
        times(&s, "b", &[])
            .into_iter()
            .flat_map(|x| x.1)
            .collect::<Vec<_>>(),
        vec![2]
    );
    assert!(
        s.append("../etc", &[sb(&[("a", "b")], &[(1, "x")])])
            .is_err()
    );
}

#[test]
fn live_tail_gets_durable_batches_and_drops_slow_subscribers() {
    let d = tempfile::tempdir().unwrap();
    let s = open_with(
        d.path(),
        Options {
            tail_queue: 2,
            ..small_opts()
        },
    )
    .unwrap();
    let fast = s.subscribe("p");
    let slow = s.subscribe("p");
    for i in 0..4 {
        s.append("p", &[sb(&[("a", "1")], &[(i, "x")])]).unwrap();
        assert_eq!(fast.recv().unwrap()[0].entries[0].ts, i);
    }
    let got: Vec<i64> = slow.iter().map(|b| b[0].entries[0].ts).collect();
    assert_eq!(got, vec![0, 1], "queue of 2, then dropped (disconnected)");
}

#[test]
fn long_lines_and_bad_projects_are_refused_with_the_limit() {
    let d = tempfile::tempdir().unwrap();
    let s = open_with(
        d.path(),
        Options {
            max_line_bytes: 10,
            ..small_opts()
        },
    )
    .unwrap();
    let e = s
        .append(
            "p",
            &[sb(&[("a", "1")], &[(1, "short"), (2, "much too long")])],
        )
        .unwrap_err();
    assert!(e.to_string().contains("max line size of 10 bytes"), "{e}");
    assert!(
        times(&s, "p", &[]).is_empty(),
        "nothing of a refused append is stored"
    );
    assert!(
        s.append("Bad Slug", &[sb(&[("a", "1")], &[(1, "x")])])
            .is_err()
    );
}

/// Readers racing appends and flushes (heads frozen, written, swapped for
/// segments) see every entry acknowledged before the read began, in order,
/// never twice.
#[test]
fn reads_during_appends_and_flushes_see_each_acknowledged_entry_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(open(d.path()));
    let acked = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (s, acked) = (s.clone(), acked.clone());
        std::thread::spawn(move || {
            for t in 1..=3000i64 {
                s.append("p", &[sb(&[("a", "1")], &[(t, "entry")])])
                    .unwrap();
                acked.store(t, Ordering::SeqCst);
            }
        })
    };
    let flusher = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                s.flush().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    let m = [eq("a", "1")];
    let mut reads = 0;
    loop {
        let before = acked.load(Ordering::SeqCst);
        let got = times(&s, "p", &m);
        let ts = got.first().map(|x| x.1.clone()).unwrap_or_default();
        assert!(
            ts.len() as i64 >= before,
            "read {reads}: {} entries, {before} acknowledged",
            ts.len()
        );
        assert_eq!(
            ts,
            (1..=ts.len() as i64).collect::<Vec<_>>(),
            "read {reads}"
        );
        reads += 1;
        if before == 3000 {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    flusher.join().unwrap();
    assert!(reads > 10, "{reads} reads");
}

#[test]
fn a_retried_push_is_returned_once() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let b = sb(&[("a", "1")], &[(5, "same"), (5, "other"), (6, "next")]);
    s.append("p", std::slice::from_ref(&b)).unwrap();
    s.flush().unwrap(); // the first copy in a segment, the retry in the head
    s.append("p", std::slice::from_ref(&b)).unwrap();
    s.append(
        "p",
        &[sb(&[("a", "1")], &[(5, "same"), (6, "next"), (7, "new")])],
    )
    .unwrap();
    for dir in [Direction::Forward, Direction::Backward] {
        let got = dump(&s, "p", &[eq("a", "1")], 0, 10, dir);
        let mut lines: Vec<(i64, String)> =
            got[0].1.iter().map(|e| (e.ts, e.line.clone())).collect();
        lines.sort();
        assert_eq!(
            lines,
            vec![
                (5, "other".into()),
                (5, "same".into()),
                (6, "next".into()),
                (7, "new".into())
            ],
            "{dir:?}"
        );
    }
}
