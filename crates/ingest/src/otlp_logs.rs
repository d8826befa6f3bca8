//! OTLP/HTTP logs (`ExportLogsServiceRequest`, protobuf or JSON) mapped to
//! Loki streams, following Loki's documented OTLP mapping.
//!
//! * **Stream labels**: the resource attributes in [`INDEX_LABELS`] (Loki's
//!   default list), the name translated (`.` and other characters outside
//!   `[a-zA-Z0-9_]` → `_`, e.g. `service.name` → `service_name`) and the
//!   value as text. Without `service.name` the stream gets
//!   `service_name="unknown_service"`.
//! * **Structured metadata** of each entry, names translated the same way:
//!   the other resource attributes, then `scope_name`, `scope_version`
//!   (when set) and the scope attributes, then the log record's attributes;
//!   then `severity_text`, `severity_number` (when set), `level` (below),
//!   `trace_id`, `span_id` (lower-case hex, when set), `flags`,
//!   `dropped_attributes_count` (when not 0), `observed_timestamp` (unix ns,
//!   when set) and `event_name` (when set). Map values are flattened
//!   (`{"a":{"b":"c"}}` → `a_b="c"`); arrays are written as JSON, booleans,
//!   integers and doubles as text, bytes as base64. An attribute whose name
//!   is already taken by an earlier one is dropped.
//! * **`level`** (metadata, not a label): from `severity_number` by the OTLP
//!   ranges 1–4 `trace`, 5–8 `debug`, 9–12 `info`, 13–16 `warn`, 17–20
//!   `error`, 21–24 `fatal`; when the number is 0 (unset), from
//!   `severity_text` lower-cased if it starts with one of those words
//!   (`WARNING` → `warn`, `Information` → `info`, `err` → `error`, …);
//!   otherwise no `level`.
//! * **Line**: a string body as is; any other body as JSON (`{"a":1}`,
//!   `[1,"x"]`, `true`, `3.5`); no body → empty line.
//! * **Time**: `time_unix_nano`, else `observed_time_unix_nano`, else the
//!   receiver's clock (`now_ns`).
//!
//! Records are grouped into streams per resource; records of different
//! resources with the same label set end up in one stream after
//! [`crate::logs::validate`].

use crate::DecodeError;
use crate::logs::{LogEntry, LogStream};
use crate::otlp::{json_value, label_name, value_text};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

/// Resource attributes that become stream labels (Loki's default
/// `default_resource_attributes_as_index_labels`).
pub const INDEX_LABELS: [&str; 18] = [
    "service.name",
    "service.namespace",
    "service.instance.id",
    "deployment.environment",
    "deployment.environment.name",
    "cloud.region",
    "cloud.availability_zone",
    "k8s.cluster.name",
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.container.name",
    "container.name",
    "k8s.replicaset.name",
    "k8s.deployment.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "k8s.cronjob.name",
    "k8s.job.name",
];

/// Decodes an OTLP/HTTP protobuf logs body.
pub fn decode_logs_protobuf(body: &[u8], now_ns: i64) -> Result<Vec<LogStream>, DecodeError> {
    use prost::Message;
    let req = ExportLogsServiceRequest::decode(body).map_err(|e| {
        DecodeError::malformed(format!(
            "body is not a protobuf ExportLogsServiceRequest: {e}"
        ))
    })?;
    Ok(translate(&req, now_ns))
}

/// Decodes an OTLP/HTTP JSON logs body.
pub fn decode_logs_json(body: &[u8], now_ns: i64) -> Result<Vec<LogStream>, DecodeError> {
    let req: ExportLogsServiceRequest = serde_json::from_slice(body).map_err(|e| {
        DecodeError::malformed(format!(
            "body is not an OTLP/JSON ExportLogsServiceRequest: {e}"
        ))
    })?;
    Ok(translate(&req, now_ns))
}

/// Appends `key` (translated) → `v` to `out`, flattening maps; skips names
/// already present.
fn push_attr(out: &mut Vec<(String, String)>, key: &str, v: Option<&AnyValue>) {
    if let Some(any_value::Value::KvlistValue(kv)) = v.and_then(|v| v.value.as_ref()) {
        for e in &kv.values {
            push_attr(out, &format!("{key}.{}", e.key), e.value.as_ref());
        }
        return;
    }
    let name = label_name(key);
    if name.is_empty() || out.iter().any(|(n, _)| *n == name) {
        return;
    }
    out.push((name, value_text(v)));
}

fn push(out: &mut Vec<(String, String)>, name: &str, value: String) {
    if !out.iter().any(|(n, _)| n == name) {
        out.push((name.to_string(), value));
    }
}

/// The `level` of a record: see the module doc.
pub fn level(severity_number: i32, severity_text: &str) -> Option<&'static str> {
    const NAMES: [&str; 6] = ["trace", "debug", "info", "warn", "error", "fatal"];
    if (1..=24).contains(&severity_number) {
        return Some(NAMES[((severity_number - 1) / 4) as usize]);
    }
    let t = severity_text.trim().to_ascii_lowercase();
    let prefixes: [(&str, &str); 8] = [
        ("trace", "trace"),
        ("debug", "debug"),
        ("info", "info"),
        ("warn", "warn"),
        ("err", "error"),
        ("fatal", "fatal"),
        ("crit", "fatal"),
        ("panic", "fatal"),
    ];
    prefixes
        .iter()
        .find(|(p, _)| t.starts_with(p))
        .map(|(_, l)| *l)
}

fn body_line(body: Option<&AnyValue>) -> String {
    match body.and_then(|b| b.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(v) => json_value(Some(v)).to_string(),
    }
}

fn translate(req: &ExportLogsServiceRequest, now_ns: i64) -> Vec<LogStream> {
    let mut out = Vec::new();
    for rl in &req.resource_logs {
        let attrs: &[KeyValue] = rl.resource.as_ref().map_or(&[], |r| &r.attributes);
        let mut labels: Vec<(String, String)> = Vec::new();
        let mut resource_meta: Vec<(String, String)> = Vec::new();
        for kv in attrs {
            if INDEX_LABELS.contains(&kv.key.as_str()) {
                let text = value_text(kv.value.as_ref());
                push(&mut labels, &label_name(&kv.key), text);
            } else {
                push_attr(&mut resource_meta, &kv.key, kv.value.as_ref());
            }
        }
        if !labels
            .iter()
            .any(|(n, v)| n == "service_name" && !v.is_empty())
        {
            labels.retain(|(n, _)| n != "service_name");
            labels.push(("service_name".into(), "unknown_service".into()));
        }
        let mut entries = Vec::new();
        for sl in &rl.scope_logs {
            let mut scope_meta = resource_meta.clone();
            if let Some(scope) = &sl.scope {
                if !scope.name.is_empty() {
                    push(&mut scope_meta, "scope_name", scope.name.clone());
                }
                if !scope.version.is_empty() {
                    push(&mut scope_meta, "scope_version", scope.version.clone());
                }
                for kv in &scope.attributes {
                    push_attr(&mut scope_meta, &kv.key, kv.value.as_ref());
                }
            }
            for r in &sl.log_records {
                let mut meta = scope_meta.clone();
                for kv in &r.attributes {
                    push_attr(&mut meta, &kv.key, kv.value.as_ref());
                }
                if !r.severity_text.is_empty() {
                    push(&mut meta, "severity_text", r.severity_text.clone());
                }
                if r.severity_number != 0 {
                    push(&mut meta, "severity_number", r.severity_number.to_string());
                }
                if let Some(l) = level(r.severity_number, &r.severity_text) {
                    push(&mut meta, "level", l.to_string());
                }
                if !r.trace_id.is_empty() {
                    push(&mut meta, "trace_id", hex(&r.trace_id));
                }
                if !r.span_id.is_empty() {
                    push(&mut meta, "span_id", hex(&r.span_id));
                }
                if r.flags != 0 {
                    push(&mut meta, "flags", r.flags.to_string());
                }
                if r.dropped_attributes_count != 0 {
                    push(
                        &mut meta,
                        "dropped_attributes_count",
                        r.dropped_attributes_count.to_string(),
                    );
                }
                if r.observed_time_unix_nano != 0 {
                    push(
                        &mut meta,
                        "observed_timestamp",
                        r.observed_time_unix_nano.to_string(),
                    );
                }
                if !r.event_name.is_empty() {
                    push(&mut meta, "event_name", r.event_name.clone());
                }
                let t = if r.time_unix_nano != 0 {
                    r.time_unix_nano
                } else {
                    r.observed_time_unix_nano
                };
                let ts = if t == 0 {
                    now_ns
                } else {
                    i64::try_from(t).unwrap_or(i64::MAX)
                };
                entries.push(LogEntry {
                    ts,
                    line: body_line(r.body.as_ref()),
                    metadata: meta,
                });
            }
        }
        out.push(LogStream {
            labels: labels.clone(),
            entries,
        });
    }
    out
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope, KeyValueList};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;

    fn s(v: &str) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        })
    }

    fn kv(k: &str, v: Option<AnyValue>) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: v,
            ..Default::default()
        }
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// The shared conformance sample: `$FLIGHTDECK_CONFORMANCE/otlp/logs.json`,
    /// else `<workspace>/../shared/conformance/otlp/logs.json`. Missing:
    /// fails under CI=true, else says so and skips.
    fn conformance(rel: &str) -> Option<Vec<u8>> {
        let base = match std::env::var_os("FLIGHTDECK_CONFORMANCE") {
            Some(p) => std::path::PathBuf::from(p),
            None => {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance")
            }
        };
        let path = base.join(rel);
        match std::fs::read(&path) {
            Ok(b) => Some(b),
            Err(e) => {
                let msg = format!("CONFORMANCE SUITE MISSING: {} ({e})", path.display());
                assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
                eprintln!("{msg}");
                None
            }
        }
    }

    #[test]
    fn conformance_logs_json() {
        let Some(body) = conformance("otlp/logs.json") else {
            return;
        };
        let streams = decode_logs_json(&body, 0).unwrap();
        assert_eq!(streams.len(), 1);
        assert_eq!(streams[0].labels, pairs(&[("service_name", "my.service")]));
        assert_eq!(
            streams[0].entries,
            vec![LogEntry {
                ts: 1_544_712_660_300_000_000,
                line: "Example log record".into(),
                metadata: pairs(&[
                    ("scope_name", "my.library"),
                    ("scope_version", "1.0.0"),
                    ("my_scope_attribute", "some scope attribute"),
                    ("string_attribute", "some string"),
                    ("boolean_attribute", "true"),
                    ("int_attribute", "10"),
                    ("double_attribute", "637.704"),
                    ("array_attribute", r#"["many","values"]"#),
                    ("map_attribute_some_map_key", "some value"),
                    ("severity_text", "Information"),
                    ("severity_number", "10"),
                    ("level", "info"),
                    ("trace_id", "5b8efff798038103d269b633813fc60c"),
                    ("span_id", "eee19b7ec3c1b174"),
                    ("observed_timestamp", "1544712660300000000"),
                ]),
            }]
        );
        // and it is accepted by validation at its own time
        let v = crate::logs::validate(
            streams,
            &crate::logs::LogLimits::default(),
            1_544_712_660_300_000_000,
        );
        assert_eq!(v.accepted_entries(), 1);
        assert!(v.rejected.is_empty());
    }

    #[test]
    fn protobuf_mapping() {
        let req = ExportLogsServiceRequest {
            resource_logs: vec![
                ResourceLogs {
                    resource: Some(Resource {
                        attributes: vec![
                            kv("service.name", s("checkout")),
                            kv("k8s.pod.name", s("pod-1")),
                            kv("deployment.environment", s("prod")),
                            kv("host.name", s("node7")),
                            kv(
                                "process.pid",
                                Some(AnyValue {
                                    value: Some(any_value::Value::IntValue(42)),
                                }),
                            ),
                        ],
                        ..Default::default()
                    }),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(InstrumentationScope {
                            name: "lib".into(),
                            ..Default::default()
                        }),
                        log_records: vec![
                            LogRecord {
                                time_unix_nano: 5,
                                severity_number: 17,
                                severity_text: "ERROR".into(),
                                body: Some(AnyValue {
                                    value: Some(any_value::Value::KvlistValue(KeyValueList {
                                        values: vec![kv("msg", s("boom"))],
                                    })),
                                }),
                                attributes: vec![
                                    kv(
                                        "http.status",
                                        Some(AnyValue {
                                            value: Some(any_value::Value::IntValue(500)),
                                        }),
                                    ),
                                    // collides with the resource's host_name: dropped
                                    kv("host.name", s("other")),
                                ],
                                trace_id: vec![0xab; 16],
                                span_id: vec![0x01; 8],
                                flags: 1,
                                ..Default::default()
                            },
                            LogRecord {
                                observed_time_unix_nano: 7,
                                severity_text: "Warning".into(),
                                body: Some(AnyValue {
                                    value: Some(any_value::Value::ArrayValue(ArrayValue {
                                        values: vec![s("a").unwrap()],
                                    })),
                                }),
                                ..Default::default()
                            },
                            LogRecord::default(),
                        ],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                // no service.name
                ResourceLogs {
                    resource: None,
                    scope_logs: vec![ScopeLogs {
                        log_records: vec![LogRecord {
                            time_unix_nano: 9,
                            body: s("plain"),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        };
        let streams = decode_logs_protobuf(&req.encode_to_vec(), 1000).unwrap();
        assert_eq!(streams.len(), 2);
        assert_eq!(
            streams[0].labels,
            pairs(&[
                ("service_name", "checkout"),
                ("k8s_pod_name", "pod-1"),
                ("deployment_environment", "prod")
            ])
        );
        let e = &streams[0].entries;
        assert_eq!(e.len(), 3);
        assert_eq!((e[0].ts, e[0].line.as_str()), (5, r#"{"msg":"boom"}"#));
        assert_eq!(
            e[0].metadata,
            pairs(&[
                ("host_name", "node7"),
                ("process_pid", "42"),
                ("scope_name", "lib"),
                ("http_status", "500"),
                ("severity_text", "ERROR"),
                ("severity_number", "17"),
                ("level", "error"),
                ("trace_id", "abababababababababababababababab"),
                ("span_id", "0101010101010101"),
                ("flags", "1"),
            ])
        );
        assert_eq!((e[1].ts, e[1].line.as_str()), (7, r#"["a"]"#));
        assert!(e[1].metadata.contains(&("level".into(), "warn".into())));
        // no time at all: the receiver's clock; no body: empty line
        assert_eq!((e[2].ts, e[2].line.as_str()), (1000, ""));
        assert!(!e[2].metadata.iter().any(|(n, _)| n == "level"));
        assert_eq!(
            streams[1].labels,
            pairs(&[("service_name", "unknown_service")])
        );
        assert_eq!(streams[1].entries[0].line, "plain");
        assert_eq!(
            decode_logs_protobuf(b"\xff\xff", 0)
                .unwrap_err()
                .http_status(),
            400
        );
        assert_eq!(
            decode_logs_json(b"{\"resourceLogs\":7}", 0)
                .unwrap_err()
                .http_status(),
            400
        );
    }

    #[test]
    fn levels() {
        for (n, t, want) in [
            (1, "", Some("trace")),
            (4, "", Some("trace")),
            (5, "", Some("debug")),
            (9, "x", Some("info")),
            (13, "", Some("warn")),
            (20, "", Some("error")),
            (24, "", Some("fatal")),
            (0, "WARNING", Some("warn")),
            (0, "Information", Some("info")),
            (0, "err", Some("error")),
            (0, "CRITICAL", Some("fatal")),
            (0, "notice", None),
            (0, "", None),
            (99, "", None),
        ] {
            assert_eq!(level(n, t), want, "{n} {t}");
        }
    }
}
