//! Native histograms end to end: integer and float, exponential and custom
//! buckets, through head, WAL replay, blocks and compaction.

use model::{
    CUSTOM_BUCKETS_SCHEMA, CounterResetHint, FloatHistogram, Histogram, HistogramSample,
    HistogramValue, Span, TimeSeries,
};
use tsdb::RejectReason;

use crate::common::*;

fn int_h(i: u64) -> HistogramValue {
    HistogramValue::Int(Histogram {
        counter_reset_hint: CounterResetHint::NotCounterReset,
        schema: 1,
        zero_threshold: 0.001,
        zero_count: i,
        count: i + 3 * (i + 1),
        sum: 1.5 * i as f64,
        positive_spans: vec![
            Span {
                offset: -1,
                length: 2,
            },
            Span {
                offset: 2,
                length: 1,
            },
        ],
        positive_buckets: vec![i as i64 + 1, 0, 0], // i+1, i+1, i+1
        ..Default::default()
    })
}

fn custom_h(i: u64) -> HistogramValue {
    HistogramValue::Float(FloatHistogram {
        schema: CUSTOM_BUCKETS_SCHEMA,
        count: 2.5 * i as f64,
        sum: 10.0,
        positive_spans: vec![Span {
            offset: 0,
            length: 2,
        }],
        positive_buckets: vec![1.5 * i as f64, i as f64],
        custom_values: vec![0.25, 1.0],
        ..Default::default()
    })
}

fn hs(name: &str, f: fn(u64) -> HistogramValue, range: std::ops::Range<u64>) -> TimeSeries {
    TimeSeries {
        labels: labels(&[("__name__", name)]),
        histograms: range
            .map(|i| HistogramSample {
                t: i as i64 * 15_000,
                h: f(i),
            })
            .collect(),
        ..Default::default()
    }
}

fn read(db: &tsdb::Db, name: &str) -> Vec<(i64, HistogramValue)> {
    let mut s = db
        .querier("p", 0, i64::MAX)
        .select(&[eq("__name__", name)])
        .unwrap();
    let s = s.next().unwrap();
    assert!(s.has_histograms());
    assert_eq!(s.samples().count(), 0);
    s.histograms().map(|r| r.unwrap()).collect()
}

#[test]
fn histograms_survive_replay_blocks_and_compaction() {
    let d = tempfile::tempdir().unwrap();
    let db = open(d.path());
    let r = db
        .append(
            "p",
            &batch(vec![hs("lat", int_h, 0..300), hs("cust", custom_h, 1..50)]),
        )
        .unwrap();
    assert_eq!(r.accepted_histograms, 349);
    let want_lat: Vec<_> = (0..300).map(|i| (i as i64 * 15_000, int_h(i))).collect();
    let want_cust: Vec<_> = (1..50).map(|i| (i as i64 * 15_000, custom_h(i))).collect();
    let check = |db: &tsdb::Db| {
        assert_eq!(read(db, "lat"), want_lat);
        assert_eq!(read(db, "cust"), want_cust);
    };
    check(&db);
    // Out of order, duplicate (same and different), invalid.
    let mut bad = hs("lat", int_h, 10..11);
    bad.histograms.push(HistogramSample {
        t: 299 * 15_000,
        h: int_h(299),
    });
    bad.histograms.push(HistogramSample {
        t: 299 * 15_000,
        h: int_h(1),
    });
    let mut invalid = int_h(400);
    if let HistogramValue::Int(h) = &mut invalid {
        h.count = 1;
    }
    bad.histograms.push(HistogramSample {
        t: 400 * 15_000,
        h: invalid,
    });
    let r = db.append("p", &batch(vec![bad])).unwrap();
    assert_eq!(r.accepted_histograms, 1);
    assert_eq!(r.rejected_count(RejectReason::OutOfOrder), 1);
    assert_eq!(r.rejected_count(RejectReason::DuplicateTimestamp), 1);
    assert_eq!(r.rejected_count(RejectReason::InvalidHistogram), 1);
    db.close().unwrap();
    let db = open(d.path());
    check(&db);
    db.flush().unwrap();
    check(&db);
    db.append("p", &batch(vec![hs("lat", int_h, 300..310)]))
        .unwrap();
    db.flush().unwrap();
    db.close().unwrap();
    let db = open(d.path());
    let mut all = want_lat.clone();
    all.extend((300..310).map(|i| (i as i64 * 15_000, int_h(i))));
    assert_eq!(read(&db, "lat"), all);
}

#[test]
fn a_series_can_hold_floats_and_histograms() {
    let d = tempfile::tempdir().unwrap();
    let db = open(d.path());
    let mut ts = hs("mixed", int_h, 0..3);
    ts.samples = vec![model::Sample { t: 5, v: 1.0 }];
    db.append("p", &batch(vec![ts])).unwrap();
    let s = db
        .querier("p", 0, i64::MAX)
        .select(&[eq("__name__", "mixed")])
        .unwrap()
        .next()
        .unwrap();
    assert_eq!(s.samples().count(), 1);
    assert_eq!(s.histograms().count(), 3);
}
