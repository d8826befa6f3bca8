//! Unit tests of the engine's API: limits, cancellation, result shapes and error kinds.
//! The language itself is tested by the promqltest conformance scripts.

use crate::{Engine, EngineOptions, Error, ErrorKind, MemStorage, QueryOptions, Value};
use model::Labels;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

fn store() -> MemStorage {
    let mut s = MemStorage::new();
    for i in 0..10 {
        let l = Labels::from_pairs([("__name__", "m"), ("i", &*i.to_string())]);
        for t in 0..100 {
            s.add_float(l.clone(), t * 15_000, (t * i) as f64);
        }
    }
    s
}

fn engine(max_samples: usize) -> Engine {
    Engine::new(EngineOptions {
        max_samples,
        ..EngineOptions::default()
    })
}

#[test]
fn too_many_samples_is_an_execution_error() {
    let e = engine(500)
        .instant(
            &store(),
            "sum(rate(m[30m]))",
            1_500_000,
            &QueryOptions::default(),
        )
        .unwrap_err();
    assert_eq!(e, Error::TooManySamples { max_samples: 500 });
    assert_eq!(e.kind(), ErrorKind::Execution);
    assert_eq!(
        e.to_string(),
        "query processing would load too many samples into memory in query execution"
    );
}

#[test]
fn a_range_query_loads_each_selector_once() {
    // 10 series x 100 samples: one select for the whole range stays under 1000 + 0.
    let r = engine(1000)
        .range(
            &store(),
            "rate(m[1m])",
            0,
            1_485_000,
            15_000,
            &QueryOptions::default(),
        )
        .unwrap();
    let Value::Matrix(m) = r.value else {
        panic!("a range query returns a matrix")
    };
    assert_eq!(m.len(), 10);
    assert!(m.windows(2).all(|w| w[0].metric < w[1].metric));
    assert!(m[0].metric.get("__name__").is_none());
}

#[test]
fn a_canceled_query_stops() {
    let cancel = Arc::new(AtomicBool::new(true));
    let q = QueryOptions {
        cancel: Some(cancel),
        ..QueryOptions::default()
    };
    let e = engine(1 << 20)
        .range(&store(), "sum by (i) (m)", 0, 1_485_000, 1_000, &q)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Canceled);
}

#[test]
fn a_range_vector_is_no_range_query() {
    let e = engine(1 << 20)
        .range(
            &store(),
            "m[5m]",
            0,
            60_000,
            15_000,
            &QueryOptions::default(),
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector"
    );
    assert_eq!(e.kind(), ErrorKind::BadData);
}

#[test]
fn many_to_many_matching_is_refused_with_prometheus_message() {
    let e = engine(1 << 20)
        .instant(&store(), "m + on() m", 60_000, &QueryOptions::default())
        .unwrap_err();
    assert!(e.to_string().starts_with("found duplicate series for the match group {} on the right hand-side of the operation: ["), "{e}");
    assert!(
        e.to_string().ends_with(
            ";many-to-many matching not allowed: matching labels must be unique on one side"
        ),
        "{e}"
    );
}

#[test]
fn a_parse_error_is_bad_data() {
    let e = engine(1 << 20)
        .instant(&store(), "sum(m", 0, &QueryOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadData);
}

/// A range query of a range function or selector builds its series directly; where two
/// series end with the same labels (names dropped) it takes the step-by-step path, which
/// merges them when they never meet and refuses them when they do, as Prometheus does.
#[test]
fn direct_range_results_fall_back_on_equal_label_sets() {
    let range = |s: &MemStorage, q: &str| {
        engine(1_000_000).range(s, q, 0, 1_800_000, 60_000, &QueryOptions::default())
    };
    let mut s = MemStorage::new();
    let a = Labels::from_pairs([("__name__", "a"), ("x", "1")]);
    let b = Labels::from_pairs([("__name__", "b"), ("x", "1")]);
    for t in 0..=40 {
        s.add_float(a.clone(), t * 15_000, t as f64);
        s.add_float(b.clone(), 1_200_000 + t * 15_000, 2.0 * t as f64);
    }
    let Value::Matrix(m) = range(&s, r#"rate({__name__=~"a|b"}[1m])"#).unwrap().value else {
        panic!("a matrix")
    };
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0].metric, Labels::from_pairs([("x", "1")]));
    assert_eq!(
        m[0].floats.len(),
        20,
        "minutes 1–10 from a, 21–30 from b, merged"
    );
    // The direct path and the step-by-step one (`+ 0` goes through it) agree.
    for q in ["rate(a[2m])", "max_over_time(a[5m])", "a"] {
        let direct = range(&s, q).unwrap().value;
        let stepwise = range(&s, &format!("{q} + 0")).unwrap().value;
        let (Value::Matrix(d), Value::Matrix(w)) = (direct, stepwise) else {
            panic!("matrices")
        };
        assert_eq!(d.len(), w.len(), "{q}");
        for (d, w) in d.iter().zip(&w) {
            assert_eq!(d.floats, w.floats, "{q}");
        }
    }
    // Overlapping in time: the duplicate-labelset error.
    for t in 0..=40 {
        s.add_float(b.clone(), t * 15_000, t as f64);
    }
    let e = range(&s, r#"rate({__name__=~"a|b"}[1m])"#).unwrap_err();
    assert_eq!(
        e.to_string(),
        "vector cannot contain metrics with the same labelset"
    );
}

/// Many series: range functions and selectors computed on two threads (see `par`) give
/// the answer one thread gives, bit for bit, warnings in the same order, for float series
/// with resets, NaNs and stale markers, and for series mixing floats and histograms.
#[test]
fn two_threads_answer_what_one_thread_answers() {
    let mut s = MemStorage::new();
    let mut rng = model::XorShift64::new(0x9e37_79b9_7f4a_7c15);
    let mut rnd = move || rng.next_u64();
    for i in 0..1500u64 {
        let l = Labels::from_pairs([
            ("__name__", "c_total"),
            ("i", &*i.to_string()),
            ("job", &*(i % 7).to_string()),
        ]);
        let mut v = 0.0;
        for t in 0..120i64 {
            v += (rnd() % 100) as f64;
            let r = rnd() % 200;
            let val = match r {
                0 => {
                    v = 0.0;
                    0.0
                }
                1 => f64::NAN,
                2 => model::stale_nan(),
                _ => v,
            };
            if r == 3 && i % 50 == 0 {
                let h = model::FloatHistogram {
                    count: v,
                    sum: v * 2.0,
                    ..Default::default()
                };
                s.add_histogram(l.clone(), t * 15_000 + 7, h);
            }
            s.add_float(l.clone(), t * 15_000 + (i as i64 % 13) * 100, val);
        }
    }
    let e = engine(50_000_000);
    for q in [
        "c_total",
        "rate(c_total[5m])",
        "increase(c_total[3m])",
        "irate(c_total[2m])",
        "deriv(c_total[10m])",
        "predict_linear(c_total[10m], 600)",
        "max_over_time(c_total[5m])",
        "avg_over_time(c_total[5m])",
        "quantile_over_time(0.9, c_total[5m])",
        "changes(c_total[5m])",
        "sum by (job) (rate(c_total[5m]))",
        "count by (job) (c_total)",
        "topk(3, rate(c_total[5m]))",
        "rate(c_total[5m] offset 1m) / 2",
    ] {
        let run = || e.range(&s, q, 300_000, 1_785_000, 15_000, &QueryOptions::default());
        let two = run().unwrap();
        let one = crate::par::one_thread(run).unwrap();
        // Debug output shows each float exactly (shortest round-trip digits).
        assert_eq!(format!("{two:?}"), format!("{one:?}"), "{q}");
    }
    assert!(
        crate::par::parallel() || std::thread::available_parallelism().map_or(1, |n| n.get()) == 1
    );
}
