//! The hand-written wire decoders (`decode_v1`, `decode_v2`) checked
//! against a naive reference built on prost and `model`'s own label checks,
//! on random requests (valid and invalid labels, NaN payloads) and on
//! byte-mutated encodings of them: both must accept and refuse the same
//! bodies, and keep and reject the same series with the same samples.

use crate::common::Rng;
use ingest::remote_write::proto::{v1, v2};
use ingest::remote_write::{decode_v1, decode_v2};
use model::{Label, Labels};
use prost::Message;

const NAMES: &[&[u8]] = &[
    b"__name__",
    b"__name__",
    b"job",
    b"instance",
    b"a",
    b"b",
    b"le",
    b"a-b",
    b"",
    b"9x",
    b"\xff",
];
const VALUES: &[&[u8]] = &[
    b"up",
    b"node_cpu_seconds_total",
    b"x",
    b"",
    b"my.metric",
    b"h:9100",
    b"\xc3",
    b"caf\xc3\xa9",
];

/// A label set: usually sorted and unique with a name, sometimes not.
fn random_pairs(rng: &mut Rng) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut v: Vec<(Vec<u8>, Vec<u8>)> = (0..rng.below(5))
        .map(|_| (rng.pick(NAMES).to_vec(), rng.pick(VALUES).to_vec()))
        .collect();
    if rng.below(4) > 0 {
        v.sort();
        v.dedup_by(|a, b| a.0 == b.0);
    }
    v
}

fn random_samples(rng: &mut Rng) -> Vec<(i64, f64)> {
    (0..rng.below(4))
        .map(|_| {
            let v = match rng.below(5) {
                0 => model::stale_nan(),
                1 => f64::from_bits(rng.next()),
                _ => rng.below(1000) as f64 / 7.0,
            };
            (rng.next() as i64 >> rng.below(60), v)
        })
        .collect()
}

fn random_v1(rng: &mut Rng) -> Vec<u8> {
    v1::WriteRequest {
        timeseries: (0..rng.below(6))
            .map(|_| v1::TimeSeries {
                labels: random_pairs(rng)
                    .into_iter()
                    .map(|(name, value)| v1::Label { name, value })
                    .collect(),
                samples: random_samples(rng)
                    .into_iter()
                    .map(|(timestamp, value)| v1::Sample { value, timestamp })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    }
    .encode_to_vec()
}

fn random_v2(rng: &mut Rng) -> Vec<u8> {
    let mut symbols: Vec<Vec<u8>> = vec![Vec::new()];
    let mut sym = |b: &[u8]| -> u32 {
        if let Some(i) = symbols.iter().position(|s| s == b) {
            return i as u32;
        }
        symbols.push(b.to_vec());
        (symbols.len() - 1) as u32
    };
    let timeseries = (0..rng.below(6))
        .map(|_| {
            let refs = random_pairs(rng)
                .iter()
                .flat_map(|(n, v)| [sym(n), sym(v)])
                .collect();
            v2::TimeSeries {
                labels_refs: refs,
                samples: random_samples(rng)
                    .into_iter()
                    .map(|(timestamp, value)| v2::Sample {
                        value,
                        timestamp,
                        start_timestamp: timestamp >> 3,
                    })
                    .collect(),
                metadata: Some(v2::Metadata {
                    r#type: 1,
                    help_ref: 0,
                    unit_ref: 0,
                }),
                ..Default::default()
            }
        })
        .collect();
    v2::Request {
        symbols,
        timeseries,
    }
    .encode_to_vec()
}

/// Prometheus' rules, written plainly: UTF-8, valid names, sorted and
/// unique (model's `from_sorted_checked`), a valid non-empty `__name__`.
fn reference_labels(pairs: &[(Vec<u8>, Vec<u8>)]) -> Option<Labels> {
    let mut labels = Vec::new();
    for (n, v) in pairs {
        let n = String::from_utf8(n.clone()).ok()?;
        let v = String::from_utf8(v.clone()).ok()?;
        if !model::is_valid_label_name(&n) {
            return None;
        }
        labels.push(Label::new(n, v));
    }
    let l = Labels::from_sorted_checked(labels).ok()?;
    model::is_valid_metric_name(l.metric_name()?).then_some(l)
}

/// (accepted series as text, rejected count, samples) or None for a body
/// that must be refused; `None` inside when a histogram makes the
/// reference unable to judge the series (only acceptance is compared).
type Outcome = Option<Option<(Vec<String>, usize)>>;

fn line(l: &Labels, samples: &[(i64, u64)], ct: i64) -> String {
    format!("{l} {samples:?} ct={ct}")
}

fn reference_v1(pb: &[u8]) -> Outcome {
    let req = v1::WriteRequest::decode(pb).ok()?;
    let mut lines = Vec::new();
    let mut rejected = 0;
    for ts in &req.timeseries {
        if !ts.histograms.is_empty() {
            return Some(None);
        }
        let pairs: Vec<_> = ts
            .labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect();
        match reference_labels(&pairs) {
            Some(l) => {
                let s: Vec<_> = ts
                    .samples
                    .iter()
                    .map(|s| (s.timestamp, s.value.to_bits()))
                    .collect();
                lines.push(line(&l, &s, 0));
            }
            None => rejected += 1,
        }
    }
    Some(Some((lines, rejected)))
}

fn reference_v2(pb: &[u8]) -> Outcome {
    let req = v2::Request::decode(pb).ok()?;
    if req.symbols.first().is_some_and(|s| !s.is_empty()) {
        return None;
    }
    let sym = |r: u32| req.symbols.get(r as usize).cloned();
    let mut lines = Vec::new();
    let mut rejected = 0;
    let mut judged = true;
    for ts in &req.timeseries {
        if ts.labels_refs.len() % 2 == 1 {
            return None;
        }
        let mut pairs = Vec::new();
        for p in ts.labels_refs.chunks(2) {
            pairs.push((sym(p[0])?, sym(p[1])?));
        }
        for e in &ts.exemplars {
            for r in &e.labels_refs {
                sym(*r)?;
            }
        }
        if let Some(m) = &ts.metadata {
            sym(m.help_ref)?;
            sym(m.unit_ref)?;
        }
        if !ts.histograms.is_empty() {
            judged = false;
            continue;
        }
        match reference_labels(&pairs) {
            Some(l) => {
                let s: Vec<_> = ts
                    .samples
                    .iter()
                    .map(|s| (s.timestamp, s.value.to_bits()))
                    .collect();
                let ct = ts
                    .samples
                    .iter()
                    .map(|s| s.start_timestamp)
                    .rfind(|t| *t != 0)
                    .unwrap_or(0);
                lines.push(line(&l, &s, ct));
            }
            None => rejected += 1,
        }
    }
    Some(judged.then_some((lines, rejected)))
}

fn compare(
    what: &str,
    pb: &[u8],
    fast: Result<ingest::remote_write::Decoded, ingest::DecodeError>,
    reference: Outcome,
) {
    match (fast, reference) {
        (Err(_), None) => {}
        (Ok(d), Some(r)) => {
            if let Some((lines, rejected)) = r {
                let got: Vec<String> = d
                    .batch
                    .series
                    .iter()
                    .map(|s| {
                        let samples: Vec<_> =
                            s.samples.iter().map(|x| (x.t, x.v.to_bits())).collect();
                        line(&s.labels, &samples, s.created_timestamp)
                    })
                    .collect();
                assert_eq!(got, lines, "{what}: series differ on {pb:02x?}");
                assert_eq!(
                    d.rejected.len(),
                    rejected,
                    "{what}: rejections differ on {pb:02x?}"
                );
            }
        }
        (fast, reference) => panic!(
            "{what}: the decoder says {:?}, the reference {}, on {pb:02x?}",
            fast.map(|d| d.batch.series.len()),
            if reference.is_some() {
                "accepts"
            } else {
                "refuses"
            }
        ),
    }
}

fn mutations(pb: &[u8], rng: &mut Rng, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut m = pb.to_vec();
        match rng.below(3) {
            0 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] = rng.next() as u8;
            }
            1 if !m.is_empty() => m.truncate(rng.below(m.len())),
            _ => {
                let i = rng.below(m.len() + 1);
                m.insert(i, rng.next() as u8);
            }
        }
        out.push(m);
    }
    out
}

#[test]
fn v1_matches_the_prost_reference() {
    let mut rng = Rng(7);
    for _ in 0..2000 {
        let pb = random_v1(&mut rng);
        compare("v1", &pb, decode_v1(&pb), reference_v1(&pb));
        for m in mutations(&pb, &mut rng, 10) {
            compare("v1 mutated", &m, decode_v1(&m), reference_v1(&m));
        }
    }
}

#[test]
fn v2_matches_the_prost_reference() {
    let mut rng = Rng(11);
    for _ in 0..2000 {
        let pb = random_v2(&mut rng);
        compare("v2", &pb, decode_v2(&pb), reference_v2(&pb));
        for m in mutations(&pb, &mut rng, 10) {
            compare("v2 mutated", &m, decode_v2(&m), reference_v2(&m));
        }
    }
}
