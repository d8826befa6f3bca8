//! OTLP metrics: the shared examples, the name translation table, and each
//! point type.

use crate::common::{conformance_file, render};
use ingest::otlp::{
    NameKind, OtlpDecoded, decode_metrics_json, decode_metrics_protobuf, label_name, metric_name,
    translate,
};
use model::{CounterResetHint, Histogram, HistogramValue, Metadata, MetricType, Span};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::metrics::v1::{self as pb, metric::Data};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// The labels every series of the shared example carries.
const EX: &str = r#"job="my.service", "#;
const SCOPE: &str = r#"otel_scope_name="my.library", otel_scope_version="1.0.0""#;

#[test]
fn conformance_examples_json_and_protobuf() {
    let json = decode_metrics_json(&conformance_file("otlp/metrics.json")).unwrap();
    let binpb = decode_metrics_protobuf(&conformance_file("otlp/metrics.binpb")).unwrap();
    for (enc, d) in [("json", &json), ("protobuf", &binpb)] {
        assert_eq!(d.rejected_data_points, 0, "{enc}: {:?}", d.messages);
        // All points are at 1544712660300000000 ns. The example's sums and
        // histograms have aggregationTemporality 1 = DELTA: stored as sent,
        // without created timestamps, typed unknown (see the otlp module doc).
        let t = "@1544712660300";
        let expected = [
            format!(r#"my_counter_total{{{EX}my_counter_attr="some value", {SCOPE}}} {t} = 5.0"#),
            // unit "1" on a gauge: _ratio
            format!(r#"my_gauge_ratio{{{EX}my_gauge_attr="some value", {SCOPE}}} {t} = 10.0"#),
            format!(r#"my_histogram_sum{{{EX}my_histogram_attr="some value", {SCOPE}}} {t} = 2.0"#),
            format!(
                r#"my_histogram_count{{{EX}my_histogram_attr="some value", {SCOPE}}} {t} = 2.0"#
            ),
            format!(
                r#"my_histogram_bucket{{{EX}le="1", my_histogram_attr="some value", {SCOPE}}} {t} = 1.0"#
            ),
            format!(
                r#"my_histogram_bucket{{{EX}le="+Inf", my_histogram_attr="some value", {SCOPE}}} {t} = 2.0"#
            ),
            format!(
                r#"my_exponential_histogram{{{EX}my_exponential_histogram_attr="some value", {SCOPE}}} {t} = int histogram"#
            ),
        ];
        assert_eq!(render(&d.batch), expected, "{enc}");
        // scale 0, zero count 1, positive offset 1 with counts [0, 2]: OTLP
        // bucket 2 = (2, 4] is Prometheus bucket 3; the empty one is left out.
        assert_eq!(
            d.batch.series[6].histograms[0].h,
            HistogramValue::Int(Histogram {
                counter_reset_hint: CounterResetHint::Gauge,
                schema: 0,
                zero_threshold: 1e-128,
                zero_count: 1,
                count: 3,
                sum: 10.0,
                positive_spans: vec![Span {
                    offset: 3,
                    length: 1
                }],
                positive_buckets: vec![2],
                ..Default::default()
            }),
            "{enc}"
        );
        let md = |t, h: &str| Metadata {
            metric_type: t,
            help: h.into(),
            unit: "".into(),
        };
        assert_eq!(
            d.batch.metadata,
            [
                (
                    "my_counter_total".to_string(),
                    md(MetricType::Unknown, "I am a Counter")
                ),
                (
                    "my_gauge_ratio".to_string(),
                    md(MetricType::Gauge, "I am a Gauge")
                ),
                (
                    "my_histogram".to_string(),
                    md(MetricType::Unknown, "I am a Histogram")
                ),
                (
                    "my_exponential_histogram".to_string(),
                    md(MetricType::Unknown, "I am an Exponential Histogram")
                ),
            ],
            "{enc}"
        );
    }
    // no target_info: the only resource attribute is service.name (→ job)
    assert_eq!(json, binpb);
}

#[test]
fn name_translation_table() {
    use NameKind::*;
    let check = |name, unit, kind, expected: &str| {
        assert_eq!(
            metric_name(name, unit, kind),
            expected,
            "{name:?} {unit:?} {kind:?}"
        );
    };
    check(
        "http.server.duration",
        "s",
        Other,
        "http_server_duration_seconds",
    );
    check(
        "http.server.duration",
        "ms",
        Other,
        "http_server_duration_milliseconds",
    );
    check(
        "system.memory.usage",
        "By",
        Gauge,
        "system_memory_usage_bytes",
    );
    check(
        "system.network.io",
        "By",
        Counter,
        "system_network_io_bytes_total",
    );
    check("net.rate", "By/s", Gauge, "net_rate_bytes_per_second");
    check("requests", "{requests}", Counter, "requests_total");
    check("packets", "{packets}/s", Gauge, "packets_per_second");
    check("cpu.utilization", "1", Gauge, "cpu_utilization_ratio");
    check("cpu.utilization", "1", Other, "cpu_utilization");
    check("items", "1", Counter, "items_total");
    check("ratio.of.things", "1", Gauge, "of_things_ratio");
    check("total.requests", "", Counter, "requests_total");
    check("requests_total", "", Counter, "requests_total");
    check("duration_seconds", "s", Other, "duration_seconds");
    check("temp", "Cel", Gauge, "temp_celsius");
    check("disk", "GiBy", Gauge, "disk_gibibytes");
    check("load", "%", Gauge, "load_percent");
    check(
        "odd",
        "furlongs/fortnight",
        Gauge,
        "odd_furlongs_per_fortnight",
    );
    check("weird..name__x", "", Gauge, "weird_name_x");
    check("_leading", "", Gauge, "leading");
    check("2xx.responses", "", Counter, "_2xx_responses_total");
    check("http:requests", "", Gauge, "http:requests");
    check("métrique", "", Gauge, "m_trique");
    check("a", "m/s", Gauge, "a_meters_per_second");
}

#[test]
fn label_name_table() {
    let check = |key, expected: &str| assert_eq!(label_name(key), expected, "{key:?}");
    check("http.method", "http_method");
    check("service.instance.id", "service_instance_id");
    check("2xx", "key_2xx");
    check("_private", "key_private");
    check("__reserved", "__reserved");
    check("ok_name", "ok_name");
    check("a-b c", "a_b_c");
    check("é", "key_"); // "_", then the single-underscore rule
}

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

const NS: u64 = 1_700_000_000_000_000_000;
const MS: i64 = 1_700_000_000_000;

fn number(attrs: Vec<KeyValue>, v: f64, flags: u32) -> pb::NumberDataPoint {
    pb::NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: NS - 60_000_000_000,
        time_unix_nano: NS,
        value: Some(pb::number_data_point::Value::AsDouble(v)),
        flags,
        ..Default::default()
    }
}

fn metric(name: &str, unit: &str, data: Data) -> pb::Metric {
    pb::Metric {
        name: name.into(),
        unit: unit.into(),
        description: format!("about {name}"),
        data: Some(data),
        ..Default::default()
    }
}

fn request(resource: Vec<KeyValue>, metrics: Vec<pb::Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![pb::ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_metrics: vec![pb::ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn cumulative_sum(monotonic: bool, points: Vec<pb::NumberDataPoint>) -> Data {
    Data::Sum(pb::Sum {
        data_points: points,
        aggregation_temporality: pb::AggregationTemporality::Cumulative as i32,
        is_monotonic: monotonic,
    })
}

#[test]
fn resource_to_job_instance_and_target_info() {
    let req = request(
        vec![
            kv("service.name", s("api")),
            kv("service.namespace", s("shop")),
            kv("service.instance.id", s("pod-1")),
            kv("host.name", s("node-7")),
            kv("k8s.pod.uid", s("abc")),
        ],
        vec![metric(
            "http.requests",
            "",
            cumulative_sum(true, vec![number(vec![kv("code", s("200"))], 3.0, 0)]),
        )],
    );
    let d = translate(&req);
    assert_eq!(
        render(&d.batch),
        [
            format!(
                r#"http_requests_total{{code="200", instance="pod-1", job="shop/api", otel_scope_name="lib"}} @{MS} = 3.0 ct={}"#,
                MS - 60_000
            ),
            format!(
                r#"target_info{{host_name="node-7", instance="pod-1", job="shop/api", k8s_pod_uid="abc"}} @{MS} = 1.0"#
            ),
        ]
    );
    assert_eq!(
        d.batch.metadata[0],
        (
            "http_requests_total".to_string(),
            Metadata {
                metric_type: MetricType::Counter,
                help: "about http.requests".into(),
                unit: "".into()
            }
        )
    );
}

#[test]
fn attribute_values_and_collisions() {
    let attrs = vec![
        kv("b.x", s("second")),
        kv("b_x", s("first")),
        kv("int", Value::IntValue(-3)),
        kv("bool", Value::BoolValue(true)),
        kv("dbl", Value::DoubleValue(0.25)),
        kv("bytes", Value::BytesValue(vec![1, 2, 3])),
        kv(
            "arr",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(s("a")),
                    },
                    AnyValue {
                        value: Some(Value::IntValue(1)),
                    },
                ],
            }),
        ),
        kv(
            "map",
            Value::KvlistValue(KeyValueList {
                values: vec![kv("k", s("v"))],
            }),
        ),
        kv("empty", s("")),
    ];
    let req = request(
        vec![],
        vec![metric(
            "g",
            "",
            Data::Gauge(pb::Gauge {
                data_points: vec![number(attrs, 1.0, 0)],
            }),
        )],
    );
    let d = translate(&req);
    // "b.x" and "b_x" both become b_x: joined with ";" in key order
    assert_eq!(
        render(&d.batch),
        [format!(
            r#"g{{arr="[\"a\",1]", b_x="second;first", bool="true", bytes="AQID", dbl="0.25", int="-3", map="{{\"k\":\"v\"}}", otel_scope_name="lib"}} @{MS} = 1.0"#
        )]
    );
}

#[test]
fn point_types() {
    let hist = pb::HistogramDataPoint {
        start_time_unix_nano: NS - 1_000_000,
        time_unix_nano: NS,
        count: 6,
        sum: Some(7.5),
        bucket_counts: vec![1, 2, 3],
        explicit_bounds: vec![0.005, 1e21],
        ..Default::default()
    };
    let summary = pb::SummaryDataPoint {
        time_unix_nano: NS,
        count: 4,
        sum: 9.0,
        quantile_values: vec![
            pb::summary_data_point::ValueAtQuantile {
                quantile: 0.5,
                value: 2.0,
            },
            pb::summary_data_point::ValueAtQuantile {
                quantile: 0.99,
                value: 5.0,
            },
        ],
        ..Default::default()
    };
    let mut int_point = number(vec![], 0.0, 0);
    int_point.value = Some(pb::number_data_point::Value::AsInt(42));
    let req = request(
        vec![],
        vec![
            metric(
                "queue",
                "",
                cumulative_sum(false, vec![number(vec![], -2.0, 0)]),
            ),
            metric(
                "gone",
                "",
                Data::Gauge(pb::Gauge {
                    data_points: vec![number(vec![], 5.0, 1)],
                }),
            ),
            metric(
                "ints",
                "",
                Data::Gauge(pb::Gauge {
                    data_points: vec![int_point],
                }),
            ),
            metric(
                "nan",
                "",
                Data::Gauge(pb::Gauge {
                    data_points: vec![number(vec![], f64::NAN, 0)],
                }),
            ),
            metric(
                "lat",
                "s",
                Data::Histogram(pb::Histogram {
                    data_points: vec![hist],
                    aggregation_temporality: pb::AggregationTemporality::Cumulative as i32,
                }),
            ),
            metric(
                "rpc",
                "ms",
                Data::Summary(pb::Summary {
                    data_points: vec![summary],
                }),
            ),
        ],
    );
    let d = translate(&req);
    let ct = MS - 1;
    assert_eq!(
        render(&d.batch),
        [
            // non-monotonic sum: a gauge, no _total, no created timestamp
            format!(r#"queue{{otel_scope_name="lib"}} @{MS} = -2.0"#),
            // no_recorded_value: the stale marker
            format!(r#"gone{{otel_scope_name="lib"}} @{MS} = STALE"#),
            format!(r#"ints{{otel_scope_name="lib"}} @{MS} = 42.0"#),
            format!(r#"nan{{otel_scope_name="lib"}} @{MS} = NaN"#),
            format!(r#"lat_seconds_sum{{otel_scope_name="lib"}} @{MS} = 7.5 ct={ct}"#),
            format!(r#"lat_seconds_count{{otel_scope_name="lib"}} @{MS} = 6.0 ct={ct}"#),
            format!(
                r#"lat_seconds_bucket{{le="0.005", otel_scope_name="lib"}} @{MS} = 1.0 ct={ct}"#
            ),
            format!(
                r#"lat_seconds_bucket{{le="1000000000000000000000", otel_scope_name="lib"}} @{MS} = 3.0 ct={ct}"#
            ),
            format!(
                r#"lat_seconds_bucket{{le="+Inf", otel_scope_name="lib"}} @{MS} = 6.0 ct={ct}"#
            ),
            format!(r#"rpc_milliseconds{{otel_scope_name="lib", quantile="0.5"}} @{MS} = 2.0"#),
            format!(r#"rpc_milliseconds{{otel_scope_name="lib", quantile="0.99"}} @{MS} = 5.0"#),
            format!(r#"rpc_milliseconds_sum{{otel_scope_name="lib"}} @{MS} = 9.0"#),
            format!(r#"rpc_milliseconds_count{{otel_scope_name="lib"}} @{MS} = 4.0"#),
        ]
    );
    let types: Vec<_> = d
        .batch
        .metadata
        .iter()
        .map(|(n, m)| (n.as_str(), m.metric_type, m.unit.as_str()))
        .collect();
    assert_eq!(
        types,
        [
            ("queue", MetricType::Gauge, ""),
            ("gone", MetricType::Gauge, ""),
            ("ints", MetricType::Gauge, ""),
            ("nan", MetricType::Gauge, ""),
            ("lat_seconds", MetricType::Histogram, "seconds"),
            ("rpc_milliseconds", MetricType::Summary, "milliseconds"),
        ]
    );
}

fn exp_point(
    scale: i32,
    offset: i32,
    counts: Vec<u64>,
    zero: u64,
) -> pb::ExponentialHistogramDataPoint {
    let total: u64 = counts.iter().sum::<u64>() + zero;
    pb::ExponentialHistogramDataPoint {
        time_unix_nano: NS,
        start_time_unix_nano: NS - 5_000_000,
        count: total,
        sum: Some(1.0),
        scale,
        zero_count: zero,
        positive: Some(pb::exponential_histogram_data_point::Buckets {
            offset,
            bucket_counts: counts,
        }),
        ..Default::default()
    }
}

fn exp(points: Vec<pb::ExponentialHistogramDataPoint>) -> OtlpDecoded {
    translate(&request(
        vec![],
        vec![metric(
            "e",
            "",
            Data::ExponentialHistogram(pb::ExponentialHistogram {
                data_points: points,
                aggregation_temporality: pb::AggregationTemporality::Cumulative as i32,
            }),
        )],
    ))
}

fn native(d: &OtlpDecoded) -> &Histogram {
    match &d.batch.series[0].histograms[0].h {
        HistogramValue::Int(h) => h,
        HistogramValue::Float(_) => panic!("expected an integer histogram"),
    }
}

#[test]
fn exponential_histograms() {
    // small gaps are filled with zeros, long gaps start a new span
    let d = exp(vec![exp_point(2, -2, vec![1, 0, 0, 2, 0, 0, 0, 0, 5], 3)]);
    let h = native(&d);
    assert_eq!(h.schema, 2);
    assert_eq!(h.counter_reset_hint, CounterResetHint::Unknown);
    assert_eq!(h.zero_count, 3);
    assert_eq!(
        h.positive_spans,
        [
            Span {
                offset: -1,
                length: 4
            },
            Span {
                offset: 4,
                length: 1
            }
        ]
    );
    assert_eq!(h.positive_buckets, [1, -1, 0, 2, 3]);
    assert_eq!(d.batch.series[0].created_timestamp, MS - 5);
    // scale 10 merges 4 buckets into one at schema 8: OTLP indexes 0..=3
    // go to 0, 4..=7 to 1, then +1
    let d = exp(vec![exp_point(10, 0, vec![1, 1, 1, 1, 2, 0, 0, 0], 0)]);
    let h = native(&d);
    assert_eq!(h.schema, 8);
    assert_eq!(
        h.positive_spans,
        [Span {
            offset: 1,
            length: 2
        }]
    );
    assert_eq!(h.positive_buckets, [4, -2]);
    // scale below -4: rejected, the rest kept
    let d = exp(vec![
        exp_point(-5, 0, vec![1], 0),
        exp_point(0, 0, vec![1], 0),
    ]);
    assert_eq!(d.rejected_data_points, 1);
    assert_eq!(
        d.messages,
        [
            "metric \"e\": exponential histogram scale -5 is below -4, the smallest native histogram schema"
        ]
    );
    assert_eq!(d.batch.series[0].histograms.len(), 1);
    // count that does not match the buckets: rejected with model's message
    let mut bad = exp_point(0, 0, vec![1], 0);
    bad.count = 5;
    let d = exp(vec![bad]);
    assert_eq!(
        d.messages,
        [
            "metric \"e\": invalid exponential histogram: 1 observations found in buckets, but the Count field is 5"
        ]
    );
}

#[test]
fn unspecified_temporality_is_rejected() {
    let d = translate(&request(
        vec![],
        vec![metric(
            "c",
            "",
            Data::Sum(pb::Sum {
                data_points: vec![number(vec![], 1.0, 0), number(vec![], 2.0, 0)],
                aggregation_temporality: 0,
                is_monotonic: true,
            }),
        )],
    ));
    assert!(d.batch.series.is_empty());
    assert_eq!(d.rejected_data_points, 2);
    assert_eq!(
        d.messages,
        [
            "metric \"c\": aggregation temporality 0 is neither cumulative (2) nor delta (1); 2 data points dropped"
        ]
    );
}

#[test]
fn json_variants() {
    let body = |point: &str| {
        format!(
            r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"g","gauge":{{"dataPoints":[{point}]}}}}]}}]}}]}}"#
        )
    };
    let one = |point: &str| {
        let d = decode_metrics_json(body(point).as_bytes()).unwrap();
        render(&d.batch)
    };
    // int64 as a string or a number, unknown keys ignored
    assert_eq!(
        one(r#"{"timeUnixNano":"1000000","asInt":"7","unknownKey":{"x":1}}"#),
        ["g{} @1 = 7.0"]
    );
    assert_eq!(
        one(r#"{"timeUnixNano":1000000,"asDouble":1.5}"#),
        ["g{} @1 = 1.5"]
    );
    // proto3 JSON special doubles as strings
    assert_eq!(
        one(r#"{"timeUnixNano":"1000000","asDouble":"NaN"}"#),
        ["g{} @1 = NaN"]
    );
    assert_eq!(
        one(r#"{"timeUnixNano":"1000000","asDouble":"-Infinity"}"#),
        ["g{} @1 = -inf"]
    );
    // snake_case keys are not the fields: the point has no time and no value
    let d = decode_metrics_json(body(r#"{"time_unix_nano":"1000000","as_double":1}"#).as_bytes())
        .unwrap();
    assert_eq!(d.rejected_data_points, 1);
    // not JSON at all: 400
    let e = decode_metrics_json(b"{nope").unwrap_err();
    assert_eq!(e.http_status(), 400);
}
