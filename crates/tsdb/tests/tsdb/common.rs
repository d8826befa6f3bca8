//! Helpers shared by the test modules.

use std::path::Path;

use model::{Labels, Matcher, Sample, TimeSeries, WriteBatch};
use tsdb::{Db, Options};

pub fn opts() -> Options {
    Options {
        maintenance_interval: None,
        ..Options::default()
    }
}

/// Opens with [`opts`]. Retries briefly while the directory is locked: a
/// child process that another test is starting holds copies of this
/// process' descriptors (and so of a just-released lock) between its fork
/// and its exec.
pub fn open(dir: &Path) -> Db {
    open_with(dir, opts()).unwrap()
}

/// [`Db::open`], with the retry of [`open`].
pub fn open_with(dir: &Path, o: Options) -> Result<Db, tsdb::Error> {
    for _ in 0..200 {
        match Db::open(dir, o.clone()) {
            Err(tsdb::Error::Locked(_)) => std::thread::sleep(std::time::Duration::from_millis(10)),
            other => return other,
        }
    }
    Db::open(dir, o)
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

pub fn series(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries {
        labels: labels(pairs),
        samples: samples
            .iter()
            .map(|(t, v)| Sample { t: *t, v: *v })
            .collect(),
        ..Default::default()
    }
}

pub fn batch(series: Vec<TimeSeries>) -> WriteBatch {
    WriteBatch {
        series,
        metadata: Vec::new(),
    }
}

pub fn eq(name: &str, value: &str) -> Matcher {
    Matcher::equal(name, value)
}

/// Every float sample of every matching series: `(labels text, [(t, v bits)])`.
pub fn dump(
    db: &Db,
    project: &str,
    mint: i64,
    maxt: i64,
    ms: &[Matcher],
) -> Vec<(String, Vec<(i64, u64)>)> {
    db.querier(project, mint, maxt)
        .select(ms)
        .unwrap()
        .map(|s| {
            let v = s
                .samples()
                .map(|r| r.map(|x| (x.t, x.v.to_bits())).unwrap())
                .collect();
            (s.labels.to_string(), v)
        })
        .filter(|(_, v): &(String, Vec<(i64, u64)>)| !v.is_empty())
        .collect()
}

/// A small deterministic PRNG (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
