//! `remote_write::keyed::KeyedV1` checked against `decode_limited` (itself
//! checked against a prost reference in `reference.rs`): on random 1.0
//! requests — valid and invalid labels, valid and invalid histograms,
//! metadata, labels interleaved with samples, tight limits — and on
//! byte-mutated encodings of them, asking every series for its labels must
//! give the same errors, the same series with the same samples, the same
//! rejections in the same order and the same metadata. Also: the key is
//! the label fields' bytes, and equal labels encoded otherwise get another
//! key.

use crate::common::Rng;
use ingest::remote_write::keyed::{KeyedV1, Rejections};
use ingest::remote_write::proto::{self, v1};
use ingest::remote_write::{Version, decode_limited};
use ingest::validate::Limits;
use model::TimeSeries;
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
    b"\xff",
    b"long_label_name",
];
const VALUES: &[&[u8]] = &[
    b"up",
    b"node_cpu_seconds_total",
    b"x",
    b"",
    b"my.metric",
    b"\xc3",
    b"a value longer than twenty bytes",
];

fn label(name: &[u8], value: &[u8]) -> Vec<u8> {
    v1::Label {
        name: name.to_vec(),
        value: value.to_vec(),
    }
    .encode_to_vec()
}

/// Appends field `field` (length-delimited) holding `msg`.
fn field(out: &mut Vec<u8>, field: u8, msg: &[u8]) {
    out.push(field << 3 | 2);
    prost::encoding::encode_varint(msg.len() as u64, out);
    out.extend_from_slice(msg);
}

fn histogram(rng: &mut Rng) -> Vec<u8> {
    proto::Histogram {
        count: Some(proto::histogram::Count::CountInt(0)),
        zero_count: Some(proto::histogram::ZeroCount::ZeroCountInt(0)),
        // schema 99 is invalid
        schema: if rng.below(3) == 0 { 99 } else { 0 },
        timestamp: rng.below(1000) as i64,
        ..Default::default()
    }
    .encode_to_vec()
}

/// A `TimeSeries` written by hand so that fields may interleave.
fn series(rng: &mut Rng) -> Vec<u8> {
    let mut pairs: Vec<(&[u8], &[u8])> = (0..rng.below(5))
        .map(|_| (rng.pick(NAMES), rng.pick(VALUES)))
        .collect();
    if rng.below(2) == 0 {
        // most likely valid
        pairs.retain(|(n, _)| n.iter().all(u8::is_ascii_lowercase));
        pairs.push((b"__name__", b"up"));
    }
    if rng.below(4) > 0 {
        pairs.sort();
        pairs.dedup_by(|a, b| a.0 == b.0);
    }
    let mut parts: Vec<(u8, Vec<u8>)> = pairs.iter().map(|(n, v)| (1, label(n, v))).collect();
    for _ in 0..rng.below(3) {
        let s = v1::Sample {
            value: rng.below(100) as f64 / 3.0,
            timestamp: rng.below(1_000_000) as i64,
        };
        parts.push((2, s.encode_to_vec()));
    }
    if rng.below(5) == 0 {
        parts.push((4, histogram(rng)));
    }
    if rng.below(8) == 0 {
        // A sample between the labels: the key must still be the labels.
        let i = rng.below(parts.len() + 1);
        parts.insert(i, (2, v1::Sample::default().encode_to_vec()));
    }
    let mut out = Vec::new();
    for (f, m) in parts {
        field(&mut out, f, &m);
    }
    out
}

fn request(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(7) {
        field(&mut out, 1, &series(rng));
    }
    if rng.below(3) == 0 {
        let m = v1::MetricMetadata {
            r#type: 1,
            metric_family_name: "up".into(),
            help: "x".repeat(rng.below(40)),
            unit: String::new(),
        };
        field(&mut out, 3, &m.encode_to_vec());
    }
    out
}

fn limits(rng: &mut Rng) -> Limits {
    Limits {
        max_label_names_per_series: 1 + rng.below(4),
        max_label_name_len: 5 + rng.below(20),
        max_label_value_len: 5 + rng.below(40),
        max_samples_per_request: rng.below(20),
        max_metadata_len: 20,
    }
}

type Result = std::result::Result<
    (
        Vec<TimeSeries>,
        Vec<ingest::validate::Rejection>,
        Vec<(String, model::Metadata)>,
    ),
    ingest::DecodeError,
>;

fn keyed(pb: &[u8], limits: &Limits) -> Result {
    let k = KeyedV1::decode(pb, limits)?;
    let mut rejections: Rejections = k.rejections.clone();
    let mut series = Vec::new();
    for s in &k.series {
        if let Some(labels) = s.labels(limits, &mut rejections) {
            series.push(TimeSeries {
                labels,
                samples: k.samples[s.samples.clone()].to_vec(),
                histograms: k.histograms[s.histograms.clone()].to_vec(),
                created_timestamp: 0,
            });
        }
    }
    Ok((series, rejections.into_list(), k.metadata))
}

fn limited(pb: &[u8], limits: &Limits) -> Result {
    let d = decode_limited(Version::V1, pb, limits)?;
    Ok((d.batch.series, d.rejected, d.batch.metadata))
}

fn bits(r: &Result) -> String {
    // Compare NaN payloads too: through the Debug of the bits.
    match r {
        Ok((s, rej, md)) => {
            let s: Vec<_> = s
                .iter()
                .map(|t| {
                    let v: Vec<_> = t.samples.iter().map(|x| (x.t, x.v.to_bits())).collect();
                    format!("{} {v:?} {:?}", t.labels, t.histograms)
                })
                .collect();
            format!("{s:#?}\n{rej:#?}\n{md:?}")
        }
        Err(e) => format!("error {e}"),
    }
}

#[test]
fn keyed_matches_decode_limited() {
    let mut rng = Rng(11);
    let mut kept = 0;
    for i in 0..3000 {
        let pb = request(&mut rng);
        let lim = if i % 2 == 0 {
            Limits::default()
        } else {
            limits(&mut rng)
        };
        let want = limited(&pb, &lim);
        assert_eq!(bits(&keyed(&pb, &lim)), bits(&want), "request {pb:?}");
        kept += want.map_or(0, |w| w.0.len());
        for _ in 0..5 {
            let mut m = pb.clone();
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
            assert_eq!(
                bits(&keyed(&m, &lim)),
                bits(&limited(&m, &lim)),
                "mutated {m:?}"
            );
        }
    }
    assert!(kept > 1000, "too few valid series generated: {kept}");
}

#[test]
fn the_key_is_the_label_fields_as_sent() {
    let (a, b) = (label(b"__name__", b"up"), label(b"job", b"x"));
    let sample = v1::Sample {
        value: 1.0,
        timestamp: 5,
    }
    .encode_to_vec();
    let mut labels_then_sample = Vec::new();
    field(&mut labels_then_sample, 1, &a);
    field(&mut labels_then_sample, 1, &b);
    let key = labels_then_sample.clone();
    field(&mut labels_then_sample, 2, &sample);
    let mut interleaved = Vec::new();
    field(&mut interleaved, 1, &a);
    field(&mut interleaved, 2, &sample);
    field(&mut interleaved, 1, &b);
    // `Label` fields value first: the same labels, other bytes.
    let mut b_reversed = Vec::new();
    field(&mut b_reversed, 2, b"x");
    field(&mut b_reversed, 1, b"job");
    let mut reordered = Vec::new();
    field(&mut reordered, 1, &a);
    field(&mut reordered, 1, &b_reversed);
    field(&mut reordered, 2, &sample);
    let mut pb = Vec::new();
    for s in [&labels_then_sample, &interleaved, &reordered] {
        field(&mut pb, 1, s);
    }
    let lim = Limits::default();
    let k = KeyedV1::decode(&pb, &lim).unwrap();
    assert_eq!(*k.series[0].key, key[..]);
    assert_eq!(*k.series[1].key, key[..]);
    assert!(matches!(k.series[0].key, std::borrow::Cow::Borrowed(_)));
    assert_ne!(*k.series[2].key, key[..]);
    let mut rej = Rejections::default();
    let l: Vec<_> = k
        .series
        .iter()
        .map(|s| s.labels(&lim, &mut rej).unwrap().to_string())
        .collect();
    assert_eq!(l, vec![r#"up{job="x"}"#; 3]);
    assert!(rej.is_empty());
    // Limits that judge labels differently give another salt.
    let tight = Limits {
        max_label_value_len: 1,
        ..Limits::default()
    };
    assert_ne!(KeyedV1::salt(&lim), KeyedV1::salt(&tight));
    let loose = Limits {
        max_samples_per_request: 7,
        ..Limits::default()
    };
    assert_eq!(KeyedV1::salt(&lim), KeyedV1::salt(&loose));
}
