//! Remote write 1.0 and 2.0: round trips, per-series rejections, content
//! negotiation, and the shared conformance request bodies.

use crate::common::{conformance_file, render};
use ingest::DecodeError;
use ingest::decompress;
use ingest::remote_write::proto::{self, v1, v2};
use ingest::remote_write::{Stats, Version, decode_v1, decode_v2};
use ingest::validate::RejectReason;
use model::{
    CounterResetHint, FloatHistogram, Histogram, HistogramValue, Metadata, MetricType, Span,
};
use prost::Message;

const T0: i64 = 1_767_225_600_000;

fn l(name: &str, value: &str) -> v1::Label {
    v1::Label {
        name: name.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    }
}

fn ts(labels: Vec<v1::Label>, samples: &[(i64, f64)]) -> v1::TimeSeries {
    v1::TimeSeries {
        labels,
        samples: samples
            .iter()
            .map(|(t, v)| v1::Sample {
                timestamp: *t,
                value: *v,
            })
            .collect(),
        ..Default::default()
    }
}

fn v1_body(series: Vec<v1::TimeSeries>) -> Vec<u8> {
    v1::WriteRequest {
        timeseries: series,
        metadata: vec![],
    }
    .encode_to_vec()
}

#[test]
fn v1_round_trip() {
    let req = v1::WriteRequest {
        timeseries: vec![
            ts(
                vec![l("__name__", "up"), l("instance", "a:1"), l("job", "node")],
                &[(T0, 1.0), (T0 + 15_000, model::stale_nan())],
            ),
            ts(
                vec![l("__name__", "temp"), l("empty", ""), l("x", "y")],
                &[
                    (T0, f64::NAN),
                    (T0 + 1, f64::INFINITY),
                    (T0 + 2, f64::NEG_INFINITY),
                ],
            ),
        ],
        metadata: vec![v1::MetricMetadata {
            r#type: 1,
            metric_family_name: "up".into(),
            help: "is it up".into(),
            unit: "".into(),
        }],
    };
    let d = decode_v1(&req.encode_to_vec()).unwrap();
    assert!(d.rejected.is_empty(), "{:?}", d.rejected);
    assert_eq!(
        render(&d.batch),
        [
            r#"up{instance="a:1", job="node"} @1767225600000 = 1.0"#,
            r#"up{instance="a:1", job="node"} @1767225615000 = STALE"#,
            // the empty label is dropped; NaN and ±Inf kept (−0.0 is checked
            // with the conformance body: prost's encoder drops it)
            r#"temp{x="y"} @1767225600000 = NaN"#,
            r#"temp{x="y"} @1767225600001 = inf"#,
            r#"temp{x="y"} @1767225600002 = -inf"#,
        ]
    );
    assert_eq!(
        d.batch.metadata,
        [(
            "up".to_string(),
            Metadata {
                metric_type: MetricType::Counter,
                help: "is it up".into(),
                unit: "".into()
            }
        )]
    );
    assert_eq!(
        d.stats,
        Stats {
            samples: 5,
            histograms: 0,
            exemplars: 0
        }
    );
}

/// One series that breaks a rule next to a valid one: the bad one is
/// rejected with `message`, the valid one kept.
fn check_v1(labels: Vec<v1::Label>, reason: RejectReason, message: &str) {
    let body = v1_body(vec![
        ts(vec![l("__name__", "ok")], &[(T0, 1.0)]),
        ts(labels, &[(T0, 2.0), (T0 + 1, 3.0)]),
    ]);
    let d = decode_v1(&body).unwrap();
    assert_eq!(d.rejected.len(), 1, "{:?}", d.batch);
    assert_eq!(d.rejected[0].message, message);
    assert_eq!(d.rejected[0].reason, reason);
    assert_eq!(d.rejected[0].samples, 2);
    assert_eq!(render(&d.batch), ["ok{} @1767225600000 = 1.0"]);
    assert_eq!(d.stats.samples, 1);
}

#[test]
fn v1_rejections_name_the_series() {
    use RejectReason::*;
    check_v1(
        vec![l("job", "x")],
        MissingMetricName,
        r#"series has no metric name (__name__): {job="x"}"#,
    );
    check_v1(
        vec![l("__name__", ""), l("job", "x")],
        MissingMetricName,
        r#"series has an empty metric name (__name__): {job="x"}"#,
    );
    check_v1(
        vec![l("__name__", "my.metric")],
        InvalidMetricName,
        r#"invalid metric name "my.metric" (must match [a-zA-Z_:][a-zA-Z0-9_:]*): my.metric{}"#,
    );
    check_v1(
        vec![l("__name__", "up"), l("a-b", "1")],
        InvalidLabelName,
        r#"invalid label name "a-b" (must match [a-zA-Z_][a-zA-Z0-9_]*): up{a-b="1"}"#,
    );
    check_v1(
        vec![l("", "1"), l("__name__", "up")],
        InvalidLabelName,
        r#"invalid label name "" (must match [a-zA-Z_][a-zA-Z0-9_]*): up{="1"}"#,
    );
    check_v1(
        vec![l("__name__", "up"), l("a", "1"), l("a", "2")],
        DuplicateLabelNames,
        r#"duplicate label name "a": up{a="1", a="2"}"#,
    );
    check_v1(
        vec![l("__name__", "up"), l("b", "1"), l("a", "2")],
        LabelsNotSorted,
        r#"labels are not sorted by name ("b" before "a"): up{b="1", a="2"}"#,
    );
    check_v1(
        vec![
            l("__name__", "up"),
            v1::Label {
                name: b"a".to_vec(),
                value: vec![b'x', 0xff],
            },
        ],
        InvalidUtf8,
        "value of label \"a\" is not valid UTF-8: up{a=\"x\u{FFFD}\"}",
    );
}

fn int_histogram() -> proto::Histogram {
    proto::Histogram {
        count: Some(proto::histogram::Count::CountInt(7)),
        sum: 12.5,
        schema: 0,
        zero_threshold: 1e-128,
        zero_count: Some(proto::histogram::ZeroCount::ZeroCountInt(1)),
        positive_spans: vec![proto::BucketSpan {
            offset: 0,
            length: 3,
        }],
        positive_deltas: vec![2, -1, 2],
        reset_hint: 2,
        timestamp: T0,
        ..Default::default()
    }
}

#[test]
fn v1_histograms_convert_and_validate() {
    let float = proto::Histogram {
        count: Some(proto::histogram::Count::CountFloat(8.0)),
        sum: 3.2,
        schema: -53,
        positive_spans: vec![proto::BucketSpan {
            offset: 0,
            length: 4,
        }],
        positive_counts: vec![3.0, 4.0, 0.0, 1.0],
        custom_values: vec![0.1, 0.5, 1.0],
        timestamp: T0 + 1,
        reset_hint: 3,
        ..Default::default()
    };
    let mut bad = int_histogram();
    bad.count = Some(proto::histogram::Count::CountInt(8));
    let req = v1::WriteRequest {
        timeseries: vec![
            v1::TimeSeries {
                labels: vec![l("__name__", "h")],
                histograms: vec![int_histogram(), float],
                ..Default::default()
            },
            v1::TimeSeries {
                labels: vec![l("__name__", "bad")],
                histograms: vec![bad],
                ..Default::default()
            },
        ],
        metadata: vec![],
    };
    let d = decode_v1(&req.encode_to_vec()).unwrap();
    let hs = &d.batch.series[0].histograms;
    assert_eq!(
        hs[0].h,
        HistogramValue::Int(Histogram {
            counter_reset_hint: CounterResetHint::NotCounterReset,
            schema: 0,
            zero_threshold: 1e-128,
            zero_count: 1,
            count: 7,
            sum: 12.5,
            positive_spans: vec![Span {
                offset: 0,
                length: 3
            }],
            positive_buckets: vec![2, -1, 2],
            ..Default::default()
        })
    );
    assert_eq!(hs[0].t, T0);
    assert_eq!(
        hs[1].h,
        HistogramValue::Float(FloatHistogram {
            counter_reset_hint: CounterResetHint::Gauge,
            schema: -53,
            count: 8.0,
            sum: 3.2,
            positive_spans: vec![Span {
                offset: 0,
                length: 4
            }],
            positive_buckets: vec![3.0, 4.0, 0.0, 1.0],
            custom_values: vec![0.1, 0.5, 1.0],
            ..Default::default()
        })
    );
    assert_eq!(d.stats.histograms, 2);
    assert_eq!(d.rejected.len(), 1);
    assert_eq!(d.rejected[0].reason, RejectReason::InvalidHistogram);
    assert_eq!(
        d.rejected[0].message,
        "7 observations found in buckets, but the Count field is 8: bad{}"
    );
}

fn v2_request(symbols: &[&str], series: Vec<v2::TimeSeries>) -> Vec<u8> {
    v2::Request {
        symbols: symbols.iter().map(|s| s.as_bytes().to_vec()).collect(),
        timeseries: series,
    }
    .encode_to_vec()
}

#[test]
fn v2_round_trip_with_symbols_metadata_and_created_timestamps() {
    let syms = [
        "",
        "__name__",
        "reqs_total",
        "job",
        "api",
        "help text",
        "trace_id",
        "abc",
        "seconds",
        "lat",
    ];
    let body = v2_request(
        &syms,
        vec![
            v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4],
                samples: vec![
                    v2::Sample {
                        value: 1.0,
                        timestamp: T0,
                        start_timestamp: T0 - 3_600_000,
                    },
                    v2::Sample {
                        value: 2.0,
                        timestamp: T0 + 15_000,
                        start_timestamp: T0 - 3_600_000,
                    },
                ],
                exemplars: vec![v2::Exemplar {
                    labels_refs: vec![6, 7],
                    value: 1.0,
                    timestamp: T0,
                }],
                metadata: Some(v2::Metadata {
                    r#type: 1,
                    help_ref: 5,
                    unit_ref: 0,
                }),
                ..Default::default()
            },
            v2::TimeSeries {
                labels_refs: vec![1, 9, 3, 4],
                histograms: vec![int_histogram()],
                metadata: Some(v2::Metadata {
                    r#type: 3,
                    help_ref: 0,
                    unit_ref: 8,
                }),
                ..Default::default()
            },
        ],
    );
    let d = decode_v2(&body).unwrap();
    assert!(d.rejected.is_empty(), "{:?}", d.rejected);
    assert_eq!(
        render(&d.batch),
        [
            r#"reqs_total{job="api"} @1767225600000 = 1.0 ct=1767222000000"#,
            r#"reqs_total{job="api"} @1767225615000 = 2.0 ct=1767222000000"#,
            r#"lat{job="api"} @1767225600000 = int histogram"#,
        ]
    );
    assert_eq!(
        d.stats,
        Stats {
            samples: 2,
            histograms: 1,
            exemplars: 1
        }
    );
    assert_eq!(
        d.batch.metadata,
        [
            (
                "reqs_total".to_string(),
                Metadata {
                    metric_type: MetricType::Counter,
                    help: "help text".into(),
                    unit: "".into()
                }
            ),
            (
                "lat".to_string(),
                Metadata {
                    metric_type: MetricType::Histogram,
                    help: "".into(),
                    unit: "seconds".into()
                }
            )
        ]
    );
}

#[test]
fn v2_symbols_after_series_and_unpacked_refs() {
    // Concatenated protobuf messages merge: series first, symbols after.
    // The series' labels_refs are written unpacked (one varint field each),
    // which a decoder must accept as well as the packed form.
    let sample = v2::Sample {
        value: 4.0,
        timestamp: T0,
        start_timestamp: 0,
    }
    .encode_to_vec();
    let mut ts = vec![0x08, 1, 0x08, 2, 0x12, sample.len() as u8];
    ts.extend_from_slice(&sample);
    let mut body = vec![0x2a, ts.len() as u8]; // field 5, LEN
    body.extend_from_slice(&ts);
    body.extend(v2_request(&["", "__name__", "up"], vec![]));
    let d = decode_v2(&body).unwrap();
    assert_eq!(render(&d.batch), ["up{} @1767225600000 = 4.0"]);
}

fn check_v2_malformed(symbols: &[&str], refs: Vec<u32>, message: &str) {
    let body = v2_request(
        symbols,
        vec![v2::TimeSeries {
            labels_refs: refs,
            samples: vec![v2::Sample {
                value: 1.0,
                timestamp: T0,
                start_timestamp: 0,
            }],
            ..Default::default()
        }],
    );
    let e = decode_v2(&body).unwrap_err();
    assert_eq!(e.http_status(), 400);
    assert_eq!(e.to_string(), message);
}

#[test]
fn v2_broken_references_refuse_the_request() {
    check_v2_malformed(
        &["", "__name__", "up"],
        vec![1, 7],
        "malformed request: timeseries[0].labels_refs: symbol reference 7 is out of range \
         (the request has 3 symbols)",
    );
    check_v2_malformed(
        &["", "__name__", "up"],
        vec![1, 2, 1],
        "malformed request: timeseries[0].labels_refs has odd length 3 (it holds name, value \
         pairs)",
    );
    check_v2_malformed(
        &["x", "__name__", "up"],
        vec![1, 2],
        "malformed request: symbols[0] must be the empty string, got \"x\"",
    );
}

#[test]
fn v2_invalid_series_is_rejected_others_kept() {
    let body = v2_request(
        &["", "__name__", "up", "b", "a", "1"],
        vec![
            v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 5, 4, 5],
                samples: vec![v2::Sample {
                    value: 1.0,
                    timestamp: T0,
                    start_timestamp: 0,
                }],
                ..Default::default()
            },
            v2::TimeSeries {
                labels_refs: vec![1, 2],
                samples: vec![v2::Sample {
                    value: 1.0,
                    timestamp: T0,
                    start_timestamp: 0,
                }],
                ..Default::default()
            },
        ],
    );
    let d = decode_v2(&body).unwrap();
    assert_eq!(render(&d.batch), ["up{} @1767225600000 = 1.0"]);
    assert_eq!(
        d.rejected[0].message,
        r#"labels are not sorted by name ("b" before "a"): up{b="1", a="1"}"#
    );
}

#[test]
fn limits_applied_while_decoding() {
    use ingest::remote_write::decode_limited;
    use ingest::validate::Limits;
    let long = "v".repeat(30);
    let body = v1_body(vec![
        ts(vec![l("__name__", "ok"), l("a", "1")], &[(T0, 1.0)]),
        ts(vec![l("__name__", "long"), l("a", &long)], &[(T0, 2.0)]),
        ts(vec![l("job", "no_name")], &[(T0, 3.0), (T0 + 1, 4.0)]),
    ]);
    let limits = Limits {
        max_label_value_len: 20,
        ..Limits::default()
    };
    let d = decode_limited(Version::V1, &body, &limits).unwrap();
    assert_eq!(render(&d.batch), [r#"ok{a="1"} @1767225600000 = 1.0"#]);
    let msgs: Vec<&str> = d.rejected.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(
        msgs,
        [
            r#"series has no metric name (__name__): {job="no_name"}"#,
            r#"value of label "a" is 30 bytes, limit max_label_value_len=20: long{a="vvvvvvvvvvvvvvvvvvvvvvvvvvvvvv"}"#,
        ]
    );
    assert_eq!(d.stats.samples, 1);
    // the same as decode + validate::apply
    let mut plain = decode_v1(&body).unwrap();
    let more = ingest::validate::apply(&mut plain.batch, &limits).unwrap();
    assert_eq!(plain.batch, d.batch);
    assert_eq!(plain.rejected.len() + more.len(), d.rejected.len());
    // every sample of the request counts towards max_samples_per_request
    let tight = Limits {
        max_samples_per_request: 3,
        ..Limits::default()
    };
    assert_eq!(
        decode_limited(Version::V1, &body, &tight),
        Err(DecodeError::TooManySamples { count: 4, limit: 3 })
    );
    let enough = Limits {
        max_samples_per_request: 4,
        ..Limits::default()
    };
    assert!(decode_limited(Version::V1, &body, &enough).is_ok());
}

#[test]
fn content_negotiation() {
    let check = |ct: Option<&str>, expected: Result<Version, u16>| {
        let got = Version::from_content_type(ct).map_err(|e| e.http_status());
        assert_eq!(got, expected, "{ct:?}");
    };
    check(None, Ok(Version::V1));
    check(Some("application/x-protobuf"), Ok(Version::V1));
    check(
        Some("application/x-protobuf;proto=prometheus.WriteRequest"),
        Ok(Version::V1),
    );
    check(
        Some("application/x-protobuf;proto=io.prometheus.write.v2.Request"),
        Ok(Version::V2),
    );
    check(
        Some("Application/X-Protobuf; proto=\"io.prometheus.write.v2.Request\""),
        Ok(Version::V2),
    );
    check(
        Some("application/x-protobuf;proto=io.prometheus.write.v3.Request"),
        Err(415),
    );
    check(Some("application/json"), Err(415));
    check(Some("image/png"), Err(415));
}

#[test]
fn conformance_v1_sample() {
    let body = conformance_file("remote-write/samples/v1_write_request.snappy");
    let pb = decompress::content_decode(Some("snappy"), &body, 1 << 20).unwrap();
    assert_eq!(
        pb,
        conformance_file("remote-write/samples/v1_write_request.pb")
    );
    let d = decode_v1(&pb).unwrap();
    assert!(d.rejected.is_empty(), "{:?}", d.rejected);
    assert_eq!(
        render(&d.batch),
        [
            r#"http_requests_total{code="200", instance="host-a:9100", job="api", method="GET"} @1767225600000 = 10.0"#,
            r#"http_requests_total{code="200", instance="host-a:9100", job="api", method="GET"} @1767225615000 = 12.0"#,
            r#"http_requests_total{code="200", instance="host-a:9100", job="api", method="GET"} @1767225630000 = 17.0"#,
            r#"http_requests_total{code="500", instance="host-a:9100", job="api", method="POST"} @1767225600000 = 1.0"#,
            r#"http_requests_total{code="500", instance="host-a:9100", job="api", method="POST"} @1767225615000 = 1.0"#,
            r#"http_requests_total{code="500", instance="host-a:9100", job="api", method="POST"} @1767225630000 = 2.0"#,
            r#"up{instance="host-a:9100", job="api"} @1767225600000 = 1.0"#,
            r#"up{instance="host-a:9100", job="api"} @1767225615000 = 1.0"#,
            r#"up{instance="host-a:9100", job="api"} @1767225630000 = 1.0"#,
            r#"up{instance="host-b:9100", job="api"} @1767225600000 = 1.0"#,
            r#"up{instance="host-b:9100", job="api"} @1767225615000 = STALE"#,
            r#"node_temperature_celsius{instance="host-a:9100", job="node", sensor="cpu"} @1767225600000 = 41.5"#,
            r#"node_temperature_celsius{instance="host-a:9100", job="node", sensor="cpu"} @1767225615000 = NaN"#,
            r#"node_temperature_celsius{instance="host-a:9100", job="node", sensor="cpu"} @1767225630000 = inf"#,
            r#"node_temperature_celsius{instance="host-a:9100", job="node", sensor="cpu"} @1767225645000 = -0.0"#,
        ]
    );
    let md: Vec<_> = d
        .batch
        .metadata
        .iter()
        .map(|(n, m)| (n.as_str(), m.metric_type, m.help.as_str()))
        .collect();
    assert_eq!(
        md,
        [
            (
                "http_requests_total",
                MetricType::Counter,
                "Total HTTP requests."
            ),
            ("up", MetricType::Gauge, "1 if the target is up."),
        ]
    );
    // The framed format is not what remote write sends: refused as 400.
    let framed = conformance_file("remote-write/samples/v1_write_request.framed-snappy");
    let e = decompress::content_decode(Some("snappy"), &framed, 1 << 20).unwrap_err();
    assert_eq!(e.http_status(), 400, "{e}");
}

#[test]
fn conformance_v2_sample() {
    let body = conformance_file("remote-write/samples/v2_request.snappy");
    let v = Version::from_content_type(Some(
        "application/x-protobuf;proto=io.prometheus.write.v2.Request",
    ))
    .unwrap();
    let pb = decompress::content_decode(Some("snappy"), &body, 1 << 20).unwrap();
    let d = ingest::remote_write::decode(v, &pb).unwrap();
    assert!(d.rejected.is_empty(), "{:?}", d.rejected);
    // the headers the README expects
    assert_eq!(
        d.stats,
        Stats {
            samples: 8,
            histograms: 2,
            exemplars: 1
        }
    );
    assert_eq!(
        render(&d.batch),
        [
            r#"http_requests_total{code="200", instance="host-a:9100", job="api", method="GET"} @1767225600000 = 10.0 ct=1767222000000"#,
            r#"http_requests_total{code="200", instance="host-a:9100", job="api", method="GET"} @1767225615000 = 12.0 ct=1767222000000"#,
            r#"http_requests_total{code="200", instance="host-a:9100", job="api", method="GET"} @1767225630000 = 17.0 ct=1767222000000"#,
            r#"up{instance="host-a:9100", job="api"} @1767225600000 = 1.0"#,
            r#"up{instance="host-a:9100", job="api"} @1767225615000 = 1.0"#,
            r#"up{instance="host-a:9100", job="api"} @1767225630000 = 1.0"#,
            r#"up{instance="host-b:9100", job="api"} @1767225600000 = 1.0"#,
            r#"up{instance="host-b:9100", job="api"} @1767225615000 = STALE"#,
            r#"rpc_duration_seconds{instance="host-a:9100", job="api"} @1767225630000 = int histogram ct=1767222000000"#,
            r#"http_request_duration_seconds{instance="host-a:9100", job="api"} @1767225630000 = float histogram"#,
        ]
    );
    let HistogramValue::Int(h) = &d.batch.series[3].histograms[0].h else {
        panic!("expected an integer histogram");
    };
    assert_eq!(
        *h,
        Histogram {
            counter_reset_hint: CounterResetHint::NotCounterReset,
            schema: 0,
            zero_threshold: 1e-128,
            zero_count: 1,
            count: 7,
            sum: 12.5,
            positive_spans: vec![Span {
                offset: 0,
                length: 3
            }],
            positive_buckets: vec![2, -1, 2],
            ..Default::default()
        }
    );
    let HistogramValue::Float(f) = &d.batch.series[4].histograms[0].h else {
        panic!("expected a float histogram");
    };
    assert_eq!(
        *f,
        FloatHistogram {
            schema: -53,
            count: 8.0,
            sum: 3.2,
            positive_spans: vec![Span {
                offset: 0,
                length: 4
            }],
            positive_buckets: vec![3.0, 4.0, 0.0, 1.0],
            custom_values: vec![0.1, 0.5, 1.0],
            ..Default::default()
        }
    );
    let md: Vec<_> = d
        .batch
        .metadata
        .iter()
        .map(|(n, m)| (n.as_str(), m.metric_type, m.help.as_str(), m.unit.as_str()))
        .collect();
    assert_eq!(
        md,
        [
            (
                "http_requests_total",
                MetricType::Counter,
                "Total HTTP requests.",
                ""
            ),
            ("up", MetricType::Gauge, "1 if the target is up.", ""),
            (
                "rpc_duration_seconds",
                MetricType::Histogram,
                "RPC latency.",
                "seconds"
            ),
            (
                "http_request_duration_seconds",
                MetricType::Histogram,
                "Request latency (custom buckets).",
                "seconds"
            ),
        ]
    );
    // corrupt body: 400
    let bad = conformance_file("remote-write/samples/v2_request.corrupt-snappy");
    let e = decompress::content_decode(Some("snappy"), &bad, 1 << 20)
        .and_then(|pb| decode_v2(&pb))
        .unwrap_err();
    assert_eq!(e.http_status(), 400, "{e}");
    // A 2.0 body read as 1.0 (a receiver that ignores Content-Type) gives
    // an empty request, which is why the version must come from the header.
    assert!(decode_v1(&pb).unwrap().batch.series.is_empty());
}

#[test]
fn broken_protobuf_is_400() {
    let e = decode_v1(b"\x0a\xff\xff\xff\xff\x0f").unwrap_err();
    assert!(matches!(e, DecodeError::Malformed { .. }), "{e}");
    assert!(e.to_string().contains("prometheus.WriteRequest"), "{e}");
}
