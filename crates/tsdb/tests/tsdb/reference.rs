//! The store against a naive reference (a sorted map of samples per
//! series) on random data: random series, timestamps with duplicates and
//! out-of-order samples, random ranges and matchers, with flushes and
//! reopens in between.

use std::collections::{BTreeMap, HashMap};

use model::{MatchOp, Matcher};
use tsdb::Options;

use crate::common::*;

/// The reference: what the store must hold, with the same acceptance rules.
type Pairs = Vec<(String, String)>;

#[derive(Default)]
struct Naive {
    series: BTreeMap<String, (Pairs, BTreeMap<i64, u64>)>,
    min_valid: i64,
}

impl Naive {
    fn append(
        &mut self,
        key: &str,
        pairs: &[(String, String)],
        t: i64,
        v: f64,
        window: i64,
    ) -> bool {
        let e = self
            .series
            .entry(key.to_string())
            .or_insert_with(|| (pairs.to_vec(), BTreeMap::new()));
        if t < self.min_valid {
            return false;
        }
        let last = e.1.keys().next_back().copied();
        if let Some(b) = e.1.get(&t) {
            return *b == v.to_bits();
        }
        if let Some(last) = last
            && t < last
            && t < last - window
        {
            return false;
        }
        if let Some(last) = last
            && t < last
            && window == 0
        {
            return false;
        }
        e.1.insert(t, v.to_bits());
        true
    }
}

fn run(seed: u64, window: i64) {
    let d = tempfile::tempdir().unwrap();
    let o = || Options {
        ooo_window_ms: window,
        block_duration_ms: 10_000,
        ..opts()
    };
    let mut db = open_with(d.path(), o()).unwrap();
    let mut rng = Rng(seed);
    let mut naive = Naive {
        min_valid: i64::MIN,
        ..Default::default()
    };
    let jobs = ["api", "db", "web"];
    let mut clock: HashMap<String, i64> = HashMap::new();
    for round in 0..40 {
        let mut b = Vec::new();
        let mut expect = 0;
        for _ in 0..rng.below(20) + 1 {
            let job = jobs[rng.below(3) as usize];
            let inst = rng.below(4).to_string();
            let mut pairs = vec![
                ("__name__".to_string(), "m".to_string()),
                ("job".into(), job.into()),
            ];
            if inst != "0" {
                pairs.push(("instance".into(), inst.clone()));
            }
            let labels = model::Labels::from_pairs(pairs.clone());
            let pairs: Vec<(String, String)> = labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect();
            let key = labels.to_string();
            let mut samples = Vec::new();
            for _ in 0..rng.below(5) {
                let c = clock.entry(key.clone()).or_insert(0);
                let t = match rng.below(6) {
                    0 => *c - rng.below(3000) as i64, // maybe out of order
                    1 => *c,                          // duplicate timestamp
                    _ => *c + 1 + rng.below(2000) as i64,
                };
                *c = (*c).max(t);
                let v = match rng.below(4) {
                    0 => model::stale_nan(),
                    1 => (rng.below(10)) as f64,
                    _ => f64::from_bits(rng.next() >> 2),
                };
                if naive.append(&key, &pairs, t, v, window) {
                    expect += 1;
                }
                samples.push((t, v));
            }
            b.push(model::TimeSeries {
                labels,
                samples: samples
                    .iter()
                    .map(|(t, v)| model::Sample { t: *t, v: *v })
                    .collect(),
                ..Default::default()
            });
        }
        let r = db.append("p", &batch(b)).unwrap();
        assert_eq!(
            r.accepted_samples, expect,
            "seed {seed} round {round}: {r:?}"
        );
        match rng.below(10) {
            0 => {
                db.flush().unwrap();
                naive.min_valid = db.stats("p").min_valid_time;
            }
            1 => {
                db.close().unwrap();
                db = open_with(d.path(), o()).unwrap();
            }
            2 => {
                db.maintain().unwrap();
                naive.min_valid = db.stats("p").min_valid_time;
            }
            _ => {}
        }
        if round % 5 == 0 {
            // A random range and matcher.
            let lo = rng.below(60_000) as i64 - 5000;
            let hi = lo + rng.below(60_000) as i64;
            let m = match rng.below(4) {
                0 => vec![eq("__name__", "m")],
                1 => vec![eq("job", jobs[rng.below(3) as usize])],
                2 => vec![Matcher::new(MatchOp::Regex, "instance", "1|2").unwrap()],
                _ => vec![eq("__name__", "m"), eq("instance", "")],
            };
            let got = dump(&db, "p", lo, hi, &m);
            let want: Vec<(String, Vec<(i64, u64)>)> = naive
                .series
                .values()
                .filter(|(pairs, _)| {
                    m.iter().all(|mm| {
                        mm.matches(
                            pairs
                                .iter()
                                .find(|(n, _)| *n == mm.name)
                                .map_or("", |(_, v)| v.as_str()),
                        )
                    })
                })
                .map(|(pairs, s)| {
                    let l = model::Labels::from_pairs(
                        pairs.iter().map(|(a, b)| (a.clone(), b.clone())),
                    );
                    (
                        l.to_string(),
                        s.range(lo..=hi).map(|(t, v)| (*t, *v)).collect::<Vec<_>>(),
                    )
                })
                .filter(|(_, v)| !v.is_empty())
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect();
            let got: Vec<_> = got
                .into_iter()
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect();
            assert_eq!(got, want, "seed {seed} round {round} [{lo}, {hi}] {m:?}");
        }
    }
}

#[test]
fn matches_naive_reference_in_order_only() {
    for seed in 1..9 {
        run(seed * 7919, 0);
    }
}

#[test]
fn matches_naive_reference_with_ooo_window() {
    for seed in 1..9 {
        run(seed * 104_729, 2500);
    }
}
