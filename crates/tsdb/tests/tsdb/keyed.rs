//! `Db::append_keyed` against `Db::append` (itself checked against a naive
//! reference in `reference.rs`): two stores fed the same random batches —
//! series under several keys each, refused series, duplicates within a
//! batch, out-of-order and duplicate samples, histograms, the series limit,
//! flushes (which collect every series and must empty the cache) and a
//! reopen — must give equal reports after every batch and hold equal data.

use model::{Histogram, HistogramSample, HistogramValue, Labels, Sample, TimeSeries};
use tsdb::{KeyedBatch, KeyedSeries, Options};

use crate::common::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Label sets by number; every fifth is "invalid" (its caller refuses it).
fn labels_of(n: u64) -> Option<Labels> {
    (n % 5 != 4).then(|| labels(&[("__name__", "m"), ("i", &format!("{}", n % 40))]))
}

/// Series `n`'s key under encoding `variant`: different bytes, same labels.
fn key(n: u64, variant: u64) -> Vec<u8> {
    format!("{n}/{variant}").into_bytes()
}

fn dump_all(db: &tsdb::Db) -> Vec<(String, Vec<(i64, u64)>)> {
    dump(db, "p", i64::MIN, i64::MAX, &[eq("__name__", "m")])
}

fn run(seed: u64, window: i64) {
    let opts = Options {
        ooo_window_ms: window,
        max_series_per_project: 30,
        ..opts()
    };
    let (da, db_) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut slow = open_with(da.path(), opts.clone()).unwrap();
    let mut fast = open_with(db_.path(), opts.clone()).unwrap();
    let mut rng = Rng(seed);
    let mut now = 1_000_000i64;
    let mut hits_seen = false;
    for round in 0..120 {
        // (label set number, key variant, samples, histograms)
        let mut items = Vec::new();
        for _ in 0..rng.below(40) {
            let n = rng.below(48);
            let samples: Vec<Sample> = (0..rng.below(3))
                .map(|_| Sample {
                    t: now - rng.below(3000) as i64 + 1000,
                    v: rng.below(4) as f64,
                })
                .collect();
            let histograms: Vec<HistogramSample> = if rng.below(10) == 0 {
                vec![HistogramSample {
                    t: now + rng.below(100) as i64,
                    h: HistogramValue::Int(Histogram {
                        count: rng.below(2),
                        zero_count: rng.below(2),
                        ..Default::default()
                    }),
                }]
            } else {
                Vec::new()
            };
            items.push((n, rng.below(3), samples, histograms));
        }
        now += 500;
        let batch = batch(
            items
                .iter()
                .filter_map(|(n, _, s, h)| {
                    Some(TimeSeries {
                        labels: labels_of(*n)?,
                        samples: s.clone(),
                        histograms: h.clone(),
                        created_timestamp: 0,
                    })
                })
                .collect(),
        );
        let want = slow.append("p", &batch).unwrap();
        let keys: Vec<Vec<u8>> = items.iter().map(|(n, v, ..)| key(*n, *v)).collect();
        let kb = KeyedBatch {
            salt: b"test",
            series: items
                .iter()
                .zip(&keys)
                .map(|((_, _, s, h), k)| KeyedSeries {
                    key: k,
                    samples: s,
                    histograms: h,
                })
                .collect(),
            metadata: Vec::new(),
        };
        let mut asked = Vec::new();
        let got = fast
            .append_keyed("p", &kb, &mut |i| {
                asked.push(i);
                labels_of(items[i].0)
            })
            .unwrap();
        assert_eq!(got, want, "seed {seed} round {round}");
        // Labels are asked for misses only, in batch order.
        assert!(asked.windows(2).all(|w| w[0] < w[1]));
        hits_seen |= asked.len() < items.len();
        if round % 40 == 39 {
            slow.flush().unwrap();
            fast.flush().unwrap();
            // The cut collected every series: nothing cached may survive.
            assert_eq!(fast.keyed_cache_len("p"), 0, "seed {seed} round {round}");
            now += 10_000;
        }
        if round == 100 {
            drop((slow, fast));
            slow = open_with(da.path(), opts.clone()).unwrap();
            fast = open_with(db_.path(), opts.clone()).unwrap();
        }
    }
    assert!(hits_seen, "the cache was never used");
    assert_eq!(dump_all(&fast), dump_all(&slow));
    drop((slow, fast));
    // The WAL holds the same: reopened, both hold the same data again.
    let slow = open_with(da.path(), opts.clone()).unwrap();
    let fast = open_with(db_.path(), opts).unwrap();
    assert_eq!(dump_all(&fast), dump_all(&slow));
}

#[test]
fn keyed_appends_match_plain_appends() {
    for seed in 1..=4 {
        run(seed, 0);
        run(seed + 100, 2000);
    }
}

#[test]
fn keys_with_equal_labels_name_one_series() {
    let d = tempfile::tempdir().unwrap();
    let db = open(d.path());
    let l = labels(&[("__name__", "up"), ("job", "x")]);
    let one = |k: &[u8], t: i64| {
        let s = [Sample { t, v: 1.0 }];
        let b = KeyedBatch {
            salt: b"",
            series: vec![KeyedSeries {
                key: k,
                samples: &s,
                histograms: &[],
            }],
            metadata: Vec::new(),
        };
        let mut asked = 0;
        let r = db
            .append_keyed("p", &b, &mut |_| {
                asked += 1;
                Some(l.clone())
            })
            .unwrap();
        (r, asked)
    };
    let (r, asked) = one(b"a", 10);
    assert_eq!((r.new_series, r.accepted_samples, asked), (1, 1, 1));
    let (r, asked) = one(b"b", 20);
    assert_eq!((r.new_series, r.accepted_samples, asked), (0, 1, 1));
    // Both keys are known now; the series' rejections name its labels.
    let (r, asked) = one(b"a", 5);
    assert_eq!(asked, 0);
    assert_eq!(r.rejected_total(), 1);
    assert_eq!(r.rejected[0].labels, l);
    let (_, asked) = one(b"b", 30);
    assert_eq!(asked, 0);
    assert_eq!(db.keyed_cache_len("p"), 2);
    assert_eq!(
        dump(&db, "p", 0, 100, &[eq("job", "x")]),
        vec![(
            l.to_string(),
            vec![
                (10, 1f64.to_bits()),
                (20, 1f64.to_bits()),
                (30, 1f64.to_bits())
            ]
        )]
    );
    db.flush().unwrap();
    assert_eq!(db.keyed_cache_len("p"), 0);
    // After the collection the key resolves anew (new ref).
    let (r, asked) = one(b"a", 9_000_000);
    assert_eq!((r.new_series, asked), (1, 1));
}
