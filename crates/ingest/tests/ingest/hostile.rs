//! Hostile input: every decoder gets truncated, bit-flipped and random
//! bytes and must return (an error or a result), never panic. A small
//! deterministic generator keeps runs reproducible; a failure prints the
//! input that caused it.

use crate::common::Rng;
use crate::common::conformance_file;
use ingest::{decompress, otlp, remote_write};

/// Runs every decoder on `input`; any panic fails the test with the input.
fn feed(input: &[u8]) {
    let r = std::panic::catch_unwind(|| {
        let _ = remote_write::decode_v1(input);
        let _ = remote_write::decode_v2(input);
        let tiny = ingest::validate::Limits {
            max_samples_per_request: 3,
            max_label_value_len: 4,
            ..Default::default()
        };
        let _ = remote_write::decode_limited(remote_write::Version::V1, input, &tiny);
        let _ = remote_write::decode_limited(remote_write::Version::V2, input, &tiny);
        let _ = otlp::decode_metrics_protobuf(input);
        let _ = otlp::decode_metrics_json(input);
        let _ = decompress::snappy_block(input, 1 << 20);
        let _ = decompress::snappy_framed(input, 1 << 20);
        let _ = decompress::gzip(input, 1 << 20);
    });
    assert!(r.is_ok(), "a decoder panicked on input {input:02x?}");
}

/// Every prefix, and many random byte flips, of each seed.
fn mutate(seed: &[u8], rng: &mut Rng, flips: usize) {
    for n in 0..seed.len() {
        feed(&seed[..n]);
    }
    for _ in 0..flips {
        let mut m = seed.to_vec();
        for _ in 0..1 + rng.below(4) {
            if m.is_empty() {
                break;
            }
            let i = rng.below(m.len());
            m[i] = rng.next() as u8;
        }
        feed(&m);
    }
}

#[test]
fn truncated_and_flipped_conformance_bodies() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for f in [
        "remote-write/samples/v1_write_request.pb",
        "remote-write/samples/v2_request.pb",
        "remote-write/samples/v1_write_request.snappy",
        "otlp/metrics.binpb",
        "otlp/metrics.json",
    ] {
        mutate(&conformance_file(f), &mut rng, 3000);
    }
}

#[test]
fn random_bytes() {
    let mut rng = Rng(42);
    for _ in 0..20_000 {
        let len = rng.below(200);
        let v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        feed(&v);
    }
}

#[test]
fn adversarial_histograms_do_not_panic() {
    use ingest::remote_write::proto::{self, v1};
    use prost::Message;
    // extreme offsets, lengths and counts: validation errors, no overflow panic
    for (offset, length, deltas) in [
        (i32::MAX, 2u32, vec![1i64, 1]),
        (i32::MIN, 1, vec![i64::MAX]),
        (0, u32::MAX, vec![1]),
        (0, 2, vec![i64::MAX, i64::MAX]),
        (0, 1, vec![i64::MIN]),
    ] {
        let h = proto::Histogram {
            count: Some(proto::histogram::Count::CountInt(u64::MAX)),
            schema: 0,
            positive_spans: vec![
                proto::BucketSpan { offset, length },
                proto::BucketSpan {
                    offset: -5,
                    length: 1,
                },
            ],
            positive_deltas: deltas,
            ..Default::default()
        };
        let req = v1::WriteRequest {
            timeseries: vec![v1::TimeSeries {
                labels: vec![v1::Label {
                    name: b"__name__".to_vec(),
                    value: b"h".to_vec(),
                }],
                histograms: vec![h],
                ..Default::default()
            }],
            metadata: vec![],
        };
        let d = remote_write::decode_v1(&req.encode_to_vec()).unwrap();
        assert_eq!(d.rejected.len(), 1, "{offset} {length}");
    }
}
