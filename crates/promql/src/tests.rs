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
