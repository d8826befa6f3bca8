//! OTLP/HTTP metrics (`ExportMetricsServiceRequest`, protobuf or JSON)
//! translated to Prometheus series, following the OpenTelemetry
//! "Prometheus and OpenMetrics compatibility" spec and Prometheus' own OTLP
//! receiver (`otlptranslator`, with metric-name suffixes on and UTF-8
//! names off).
//!
//! Messages are `opentelemetry-proto`'s prost types; its serde derive reads
//! OTLP/JSON (camelCase keys, 64-bit integers as strings or numbers, hex
//! trace ids, integer enums, unknown keys ignored). Where it departs from
//! the spec we work around it: it does not accept the proto3 JSON spellings
//! `"NaN"`, `"Infinity"`, `"-Infinity"` for some doubles (`asDouble`,
//! histogram `sum`/`min`/`max`, `explicitBounds`; worse, a flattened
//! `"asDouble": "NaN"` silently reads as "no value"), so a body that
//! contains those strings is read through `serde_json::Value` with them
//! rewritten first ([`decode_metrics_json`]).
//!
//! What each point becomes (times are converted from ns to ms):
//!
//! | OTLP | Prometheus |
//! | --- | --- |
//! | gauge | gauge `name` |
//! | sum, monotonic, cumulative | counter `name_total`, created timestamp = start time |
//! | sum, non-monotonic, cumulative | gauge `name` |
//! | histogram, cumulative | classic `name_bucket{le}` (cumulative, `+Inf` = count), `name_sum` (when set), `name_count` |
//! | exponential histogram, cumulative | integer native histogram `name`: scale → schema (scales above 8 merge buckets down to 8, below −4 are rejected), offsets +1 (OTLP buckets are lower-exclusive at `base^i`, Prometheus' upper-inclusive at `base^i`), zero count and threshold (threshold 0 → 1e-128, as Prometheus), reset hint unknown |
//! | summary | `name{quantile}`, `name_sum`, `name_count` |
//! | **delta** sum, histogram, exponential histogram | **stored as sent**, as Prometheus' `otlp-native-delta-ingestion` does: same names (`_total` for monotonic sums), each point holds the increase over its own interval, metadata type `unknown`, no created timestamp; exponential deltas become *gauge* native histograms. Query them with `sum_over_time`/`increase`-free functions, not `rate`. Converting deltas to cumulative needs state across requests (a sans-IO decoder has none); senders that want counters can use the Collector's `deltatocumulative` processor |
//! | unspecified temporality | rejected with a message |
//!
//! * Names: characters outside `[a-zA-Z0-9_:]` split the name into tokens
//!   joined by `_` (so runs of `_` collapse); the unit is appended
//!   (`s`→`seconds`, `By`→`bytes`, `By/s`→`bytes_per_second`, …; `{…}`
//!   annotations dropped; `1` → nothing, but `_ratio` for gauges) unless a
//!   name token already equals it; `_total` is appended to counters (an
//!   existing `total` token moved to the end); a leading digit gets `_`.
//! * Label names: invalid characters → `_`, a leading digit gets `key_`,
//!   a single leading `_` gets `key`; attributes that collide after that
//!   are joined with `;` in the order of their original keys.
//! * Resource: `service.namespace`/`service.name` → `job` (`ns/name`, or
//!   `name`), `service.instance.id` → `instance`; the other resource
//!   attributes go to one `target_info` series (value 1, at the resource's
//!   latest point) when `job` or `instance` is set. Scope name and version
//!   → `otel_scope_name`, `otel_scope_version` (scope attributes are not
//!   promoted).
//! * The `no_recorded_value` flag → the stale marker (every series of the
//!   point); NaN and ±Inf values are kept.
//! * Exemplars are ignored; `min`/`max` are ignored (Prometheus has no place
//!   for them).
//! * Metadata: type, help = description, unit = the translated unit, by
//!   the Prometheus family name.
//!
//! A point that cannot be translated counts in
//! [`OtlpDecoded::rejected_data_points`] with a message; the server answers
//! 200 with `partial_success`, as the OTLP spec asks.

use crate::DecodeError;
use model::{
    HistogramSample, HistogramValue, Label, Labels, Metadata, MetricType, Sample, Span, TimeSeries,
    WriteBatch,
};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1 as pb;
use std::collections::{BTreeMap, HashMap};

/// A translated OTLP request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OtlpDecoded {
    pub batch: WriteBatch,
    /// Data points left out (OTLP's `partial_success.rejected_data_points`).
    pub rejected_data_points: u64,
    /// Why, one message per rejected point (at most [`MAX_MESSAGES`]).
    pub messages: Vec<String>,
}

/// Messages kept per request; the count stays exact beyond it.
pub const MAX_MESSAGES: usize = 100;

/// Whether an OTLP/HTTP body is JSON (`true`) or protobuf (`false`), from its
/// `Content-Type` (parameters ignored); any other type is refused with the message to
/// answer (415). Metrics and logs decide alike.
pub fn content_is_json(content_type: &str) -> Result<bool, String> {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" => Ok(true),
        "application/x-protobuf" | "application/protobuf" => Ok(false),
        _ => Err(format!(
            "unsupported Content-Type {content_type:?}: OTLP/HTTP takes application/x-protobuf or application/json"
        )),
    }
}

/// Decodes an OTLP/HTTP protobuf body.
pub fn decode_metrics_protobuf(body: &[u8]) -> Result<OtlpDecoded, DecodeError> {
    use prost::Message;
    let req = ExportMetricsServiceRequest::decode(body).map_err(|e| {
        DecodeError::malformed(format!(
            "body is not a protobuf ExportMetricsServiceRequest: {e}"
        ))
    })?;
    Ok(translate(&req))
}

/// Decodes an OTLP/HTTP JSON body.
pub fn decode_metrics_json(body: &[u8]) -> Result<OtlpDecoded, DecodeError> {
    let bad = |e: serde_json::Error| {
        DecodeError::malformed(format!(
            "body is not an OTLP/JSON ExportMetricsServiceRequest: {e}"
        ))
    };
    // The spellings "NaN"/"Infinity" would make some fields fail and others
    // (the flattened `asDouble`) silently read as "no value": bodies that
    // contain them take the slower path that rewrites them first.
    let special = |pat: &[u8]| body.windows(pat.len()).any(|w| w == pat);
    let req = if special(b"\"NaN\"") || special(b"Infinity\"") {
        let mut v: serde_json::Value = serde_json::from_slice(body).map_err(bad)?;
        fix_special_floats(&mut v);
        let mut req: ExportMetricsServiceRequest = serde_json::from_value(v).map_err(bad)?;
        unmark_request(&mut req);
        req
    } else {
        serde_json::from_slice::<ExportMetricsServiceRequest>(body).map_err(bad)?
    };
    Ok(translate(&req))
}

/// Rewrites the proto3 JSON strings for special doubles to numbers that
/// serde_json can carry (`NaN` cannot be a JSON number, so it becomes a
/// marker value restored by [`unmark_request`]). Returns whether anything
/// changed.
fn fix_special_floats(v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    const DOUBLE_KEYS: [&str; 8] = [
        "asDouble",
        "sum",
        "min",
        "max",
        "explicitBounds",
        "value",
        "quantile",
        "zeroThreshold",
    ];
    fn special(s: &str) -> Option<f64> {
        match s {
            "NaN" => Some(NAN_MARKER),
            "Infinity" => Some(f64::MAX),
            "-Infinity" => Some(f64::MIN),
            _ => None,
        }
    }
    let mut changed = false;
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if DOUBLE_KEYS.contains(&k.as_str()) {
                    match x {
                        Value::String(s) => {
                            if let Some(f) = special(s)
                                && let Some(n) = serde_json::Number::from_f64(f)
                            {
                                *x = Value::Number(n);
                                changed = true;
                            }
                        }
                        Value::Array(a) => {
                            for e in a.iter_mut() {
                                if let Value::String(s) = e
                                    && let Some(f) = special(s)
                                    && let Some(n) = serde_json::Number::from_f64(f)
                                {
                                    *e = Value::Number(n);
                                    changed = true;
                                }
                            }
                        }
                        _ => changed |= fix_special_floats(x),
                    }
                } else {
                    changed |= fix_special_floats(x);
                }
            }
        }
        Value::Array(a) => {
            for e in a {
                changed |= fix_special_floats(e);
            }
        }
        _ => {}
    }
    changed
}

/// Stands for NaN while a JSON body passes through `serde_json::Value`
/// (which cannot hold NaN or ±Inf); `f64::MAX`/`MIN` stand for ±Inf. Only
/// bodies that spelled a special double as a string take this path; in
/// them, a literal `f64::MAX` would read back as +Inf.
const NAN_MARKER: f64 = -5.992_310_449_541_053e307;

/// Undoes [`fix_special_floats`] on every double of the request's points.
fn unmark_request(req: &mut ExportMetricsServiceRequest) {
    use pb::metric::Data;
    let fix_opt = |o: &mut Option<f64>| {
        if let Some(v) = o {
            *v = unmark(*v);
        }
    };
    for m in req
        .resource_metrics
        .iter_mut()
        .flat_map(|r| r.scope_metrics.iter_mut())
        .flat_map(|s| s.metrics.iter_mut())
    {
        match &mut m.data {
            Some(Data::Gauge(pb::Gauge { data_points }))
            | Some(Data::Sum(pb::Sum { data_points, .. })) => {
                for p in data_points {
                    if let Some(pb::number_data_point::Value::AsDouble(d)) = &mut p.value {
                        *d = unmark(*d);
                    }
                }
            }
            Some(Data::Histogram(h)) => {
                for p in &mut h.data_points {
                    fix_opt(&mut p.sum);
                    fix_opt(&mut p.min);
                    fix_opt(&mut p.max);
                    p.explicit_bounds.iter_mut().for_each(|b| *b = unmark(*b));
                }
            }
            Some(Data::ExponentialHistogram(h)) => {
                for p in &mut h.data_points {
                    fix_opt(&mut p.sum);
                    fix_opt(&mut p.min);
                    fix_opt(&mut p.max);
                }
            }
            Some(Data::Summary(s)) => {
                for p in &mut s.data_points {
                    p.sum = unmark(p.sum);
                    for q in &mut p.quantile_values {
                        q.value = unmark(q.value);
                    }
                }
            }
            None => {}
        }
    }
}

fn unmark(v: f64) -> f64 {
    if v == NAN_MARKER {
        f64::NAN
    } else if v == f64::MAX {
        f64::INFINITY
    } else if v == f64::MIN {
        f64::NEG_INFINITY
    } else {
        v
    }
}

/// What kind of Prometheus metric a name is built for (it decides the
/// `_total` and `_ratio` suffixes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    /// Monotonic cumulative sum: `_total`.
    Counter,
    /// Gauge: `_ratio` for unit `1`.
    Gauge,
    /// Everything else (non-monotonic sums, histograms, summaries).
    Other,
}

fn unit_word(u: &str) -> Option<&'static str> {
    Some(match u {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tebibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        _ => return None,
    })
}

fn per_unit_word(u: &str) -> Option<&'static str> {
    Some(match u {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

/// Keeps letters and digits, other runs become one `_` (no leading or
/// trailing `_`).
fn clean_word(s: &str) -> String {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

/// The Prometheus unit words for an OTLP unit (`By/s` → `bytes_per_second`,
/// `1` → ``, `{packets}` → ``): the main unit and the `per_…` part.
fn unit_parts(unit: &str) -> (String, String) {
    let mut it = unit.splitn(2, '/');
    let main = it.next().unwrap_or("").trim();
    let per = it.next().unwrap_or("").trim();
    let main = if main.is_empty() || main.contains(['{', '}']) {
        String::new()
    } else {
        clean_word(unit_word(main).unwrap_or(main))
    };
    let per = if per.is_empty() || per.contains(['{', '}']) {
        String::new()
    } else {
        clean_word(per_unit_word(per).unwrap_or(per))
    };
    (main, per)
}

/// The unit as Prometheus metadata carries it (`seconds`,
/// `bytes_per_second`, empty for `1`).
pub fn prometheus_unit(unit: &str) -> String {
    match unit_parts(unit) {
        (m, p) if p.is_empty() => m,
        (m, p) if m.is_empty() => format!("per_{p}"),
        (m, p) => format!("{m}_per_{p}"),
    }
}

/// Translates an OTLP metric name and unit to a Prometheus metric name
/// (see the module doc for the rules).
pub fn metric_name(name: &str, unit: &str, kind: NameKind) -> String {
    let mut tokens: Vec<&str> = name
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
        .filter(|t| !t.is_empty())
        .collect();
    let (main, per) = unit_parts(unit);
    let mut owned: Vec<String> = Vec::new();
    if !main.is_empty() && !tokens.contains(&main.as_str()) {
        owned.push(main);
    }
    if !per.is_empty() && !tokens.contains(&per.as_str()) {
        owned.push("per".into());
        owned.push(per);
    }
    let mut all: Vec<String> = tokens.drain(..).map(str::to_string).collect();
    all.extend(owned);
    if kind == NameKind::Counter {
        all.retain(|t| t != "total");
        all.push("total".into());
    }
    if kind == NameKind::Gauge && unit == "1" {
        all.retain(|t| t != "ratio");
        all.push("ratio".into());
    }
    let joined = all.join("_");
    if joined.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{joined}")
    } else {
        joined
    }
}

/// Translates an attribute key to a Prometheus label name.
pub fn label_name(key: &str) -> String {
    if key.is_empty() {
        return String::new();
    }
    let s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        format!("key_{s}")
    } else if s.starts_with('_') && !s.starts_with("__") {
        format!("key{s}")
    } else {
        s
    }
}

/// An attribute value as text, as the OpenTelemetry Collector's
/// `Value.AsString` writes it (arrays and maps as JSON, bytes as base64).
pub(crate) fn value_text(v: Option<&AnyValue>) -> String {
    use any_value::Value as V;
    match v.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(V::StringValue(s)) => s.clone(),
        Some(V::BoolValue(b)) => b.to_string(),
        Some(V::IntValue(i)) => i.to_string(),
        Some(V::DoubleValue(d)) => attribute_float_text(*d),
        Some(V::BytesValue(b)) => base64_text(b),
        Some(other @ (V::ArrayValue(_) | V::KvlistValue(_))) => json_value(Some(other)).to_string(),
        // a profiles-only reference into a string table metrics do not have
        Some(V::StringValueStrindex(_)) => String::new(),
    }
}

/// A double attribute as the Collector's `Value.AsString` writes it: the
/// ECMAScript number form (`0.25`, `1e-7`, `1.5e+21`).
fn attribute_float_text(f: f64) -> String {
    let abs = f.abs();
    if f.is_finite() && abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let e = format!("{f:e}");
        match e.split_once('e') {
            Some((m, x)) if !x.starts_with('-') => format!("{m}e+{x}"),
            _ => e,
        }
    } else {
        float_text(f)
    }
}

pub(crate) fn json_value(v: Option<&any_value::Value>) -> serde_json::Value {
    use any_value::Value as V;
    use serde_json::Value as J;
    match v {
        None | Some(V::StringValueStrindex(_)) => J::Null,
        Some(V::StringValue(s)) => J::String(s.clone()),
        Some(V::BoolValue(b)) => J::Bool(*b),
        Some(V::IntValue(i)) => J::from(*i),
        Some(V::DoubleValue(d)) => serde_json::Number::from_f64(*d).map_or(J::Null, J::Number),
        Some(V::BytesValue(b)) => J::String(base64_text(b)),
        Some(V::ArrayValue(a)) => J::Array(
            a.values
                .iter()
                .map(|x| json_value(x.value.as_ref()))
                .collect(),
        ),
        Some(V::KvlistValue(kv)) => J::Object(
            kv.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        json_value(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                    )
                })
                .collect(),
        ),
    }
}

fn base64_text(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A float as Go's `strconv.FormatFloat(f, 'f', -1, 64)` writes it (the
/// form Prometheus uses for `le` and `quantile`), with `+Inf`, `-Inf` and
/// `NaN` spelled as Prometheus does.
pub fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f == f64::INFINITY {
        "+Inf".into()
    } else if f == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        // Rust's shortest round-trip form, never in exponent notation
        format!("{f}")
    }
}

fn ns_to_ms(ns: u64) -> i64 {
    // u64 ns / 1e6 always fits an i64
    (ns / 1_000_000) as i64
}

/// Labels shared by every point of a resource + scope.
struct Context {
    job: Option<String>,
    instance: Option<String>,
    scope_name: String,
    scope_version: String,
}

#[derive(Default)]
struct Translator {
    out: OtlpDecoded,
    index: HashMap<Labels, usize>,
    meta_index: HashMap<String, usize>,
}

const NO_RECORDED_VALUE: u32 = 1;

impl Translator {
    fn reject(&mut self, points: u64, msg: String) {
        self.out.rejected_data_points += points;
        if self.out.messages.len() < MAX_MESSAGES {
            self.out.messages.push(msg);
        }
    }

    /// Builds a label set from point attributes, the context and the extra
    /// labels (`__name__`, `le`, `quantile`), later ones winning as in
    /// Prometheus' `createAttributes`.
    fn labels(ctx: &Context, attrs: &[KeyValue], extras: &[(&str, &str)]) -> Labels {
        let mut sorted: Vec<&KeyValue> = attrs.iter().collect();
        sorted.sort_by(|a, b| a.key.cmp(&b.key));
        let mut m: BTreeMap<String, String> = BTreeMap::new();
        for kv in sorted {
            let name = label_name(&kv.key);
            if name.is_empty() {
                continue;
            }
            let value = value_text(kv.value.as_ref());
            m.entry(name)
                .and_modify(|v| {
                    v.push(';');
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        if !ctx.scope_name.is_empty() {
            m.insert("otel_scope_name".into(), ctx.scope_name.clone());
        }
        if !ctx.scope_version.is_empty() {
            m.insert("otel_scope_version".into(), ctx.scope_version.clone());
        }
        if let Some(j) = &ctx.job {
            m.insert("job".into(), j.clone());
        }
        if let Some(i) = &ctx.instance {
            m.insert("instance".into(), i.clone());
        }
        for (n, v) in extras {
            m.insert((*n).to_string(), (*v).to_string());
        }
        Labels::from_sorted_unchecked(
            m.into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(name, value)| Label { name, value })
                .collect(),
        )
    }

    fn series(&mut self, labels: Labels, created: i64) -> &mut TimeSeries {
        let i = match self.index.get(&labels) {
            Some(&i) => i,
            None => {
                let i = self.out.batch.series.len();
                self.index.insert(labels.clone(), i);
                self.out.batch.series.push(TimeSeries {
                    labels,
                    ..Default::default()
                });
                i
            }
        };
        let s = &mut self.out.batch.series[i];
        if created != 0 {
            s.created_timestamp = created;
        }
        s
    }

    fn sample(&mut self, labels: Labels, t: i64, v: f64, created: i64) {
        self.series(labels, created).samples.push(Sample { t, v });
    }

    fn metadata(&mut self, name: &str, metric_type: MetricType, m: &pb::Metric) {
        let md = Metadata {
            metric_type,
            help: m.description.clone(),
            unit: prometheus_unit(&m.unit),
        };
        match self.meta_index.get(name) {
            Some(&i) => self.out.batch.metadata[i].1 = md,
            None => {
                self.meta_index
                    .insert(name.to_string(), self.out.batch.metadata.len());
                self.out.batch.metadata.push((name.to_string(), md));
            }
        }
    }

    fn metric(&mut self, ctx: &Context, m: &pb::Metric, latest: &mut Option<i64>) {
        use pb::metric::Data;
        let Some(data) = &m.data else {
            // no data: nothing to translate, nothing to reject
            return;
        };
        let cumulative = pb::AggregationTemporality::Cumulative as i32;
        let (kind, temporality, points, mtype) = match data {
            Data::Gauge(g) => (
                NameKind::Gauge,
                cumulative,
                g.data_points.len(),
                MetricType::Gauge,
            ),
            Data::Sum(s) if s.is_monotonic => (
                NameKind::Counter,
                s.aggregation_temporality,
                s.data_points.len(),
                MetricType::Counter,
            ),
            Data::Sum(s) => (
                NameKind::Other,
                s.aggregation_temporality,
                s.data_points.len(),
                MetricType::Gauge,
            ),
            Data::Histogram(h) => (
                NameKind::Other,
                h.aggregation_temporality,
                h.data_points.len(),
                MetricType::Histogram,
            ),
            Data::ExponentialHistogram(h) => (
                NameKind::Other,
                h.aggregation_temporality,
                h.data_points.len(),
                MetricType::Histogram,
            ),
            Data::Summary(s) => (
                NameKind::Other,
                cumulative,
                s.data_points.len(),
                MetricType::Summary,
            ),
        };
        if points == 0 {
            return;
        }
        let delta = temporality == pb::AggregationTemporality::Delta as i32;
        if temporality != cumulative && !delta {
            self.reject(
                points as u64,
                format!(
                    "metric {:?}: aggregation temporality {temporality} is neither cumulative (2) \
                     nor delta (1); {points} data points dropped",
                    m.name
                ),
            );
            return;
        }
        // Deltas are stored as they come (see the module doc), typed
        // unknown as Prometheus' native delta ingestion does.
        let mtype = if delta { MetricType::Unknown } else { mtype };
        let name = metric_name(&m.name, &m.unit, kind);
        if name.is_empty() {
            self.reject(
                points as u64,
                format!(
                    "metric {:?} has no characters usable in a Prometheus name; {points} data \
                     points dropped",
                    m.name
                ),
            );
            return;
        }
        self.metadata(&name, mtype, m);
        let mut seen = |t: i64| {
            *latest = Some(latest.map_or(t, |l: i64| l.max(t)));
        };
        match data {
            Data::Gauge(pb::Gauge { data_points }) | Data::Sum(pb::Sum { data_points, .. }) => {
                for p in data_points {
                    let t = ns_to_ms(p.time_unix_nano);
                    seen(t);
                    let v = if p.flags & NO_RECORDED_VALUE != 0 {
                        model::stale_nan()
                    } else {
                        match p.value {
                            Some(pb::number_data_point::Value::AsDouble(d)) => d,
                            Some(pb::number_data_point::Value::AsInt(i)) => i as f64,
                            None => {
                                self.reject(
                                    1,
                                    format!("metric {:?}: data point without a value", m.name),
                                );
                                continue;
                            }
                        }
                    };
                    let created = if kind == NameKind::Counter && !delta {
                        ns_to_ms(p.start_time_unix_nano)
                    } else {
                        0
                    };
                    let labels = Self::labels(ctx, &p.attributes, &[("__name__", &name)]);
                    self.sample(labels, t, v, created);
                }
            }
            Data::Histogram(h) => {
                for p in &h.data_points {
                    let t = ns_to_ms(p.time_unix_nano);
                    seen(t);
                    self.classic_histogram(ctx, &name, &m.name, p, t, delta);
                }
            }
            Data::ExponentialHistogram(h) => {
                for p in &h.data_points {
                    let t = ns_to_ms(p.time_unix_nano);
                    seen(t);
                    match exponential_to_native(p, delta) {
                        Ok(h) => {
                            let labels = Self::labels(ctx, &p.attributes, &[("__name__", &name)]);
                            let created = if delta {
                                0
                            } else {
                                ns_to_ms(p.start_time_unix_nano)
                            };
                            self.series(labels, created)
                                .histograms
                                .push(HistogramSample {
                                    t,
                                    h: HistogramValue::Int(h),
                                });
                        }
                        Err(e) => self.reject(1, format!("metric {:?}: {e}", m.name)),
                    }
                }
            }
            Data::Summary(s) => {
                for p in &s.data_points {
                    let t = ns_to_ms(p.time_unix_nano);
                    seen(t);
                    let stale = p.flags & NO_RECORDED_VALUE != 0;
                    let val = |v: f64| if stale { model::stale_nan() } else { v };
                    let created = ns_to_ms(p.start_time_unix_nano);
                    for q in &p.quantile_values {
                        let qs = float_text(q.quantile);
                        let labels = Self::labels(
                            ctx,
                            &p.attributes,
                            &[("__name__", &name), ("quantile", &qs)],
                        );
                        self.sample(labels, t, val(q.value), created);
                    }
                    let sum = format!("{name}_sum");
                    let l = Self::labels(ctx, &p.attributes, &[("__name__", &sum)]);
                    self.sample(l, t, val(p.sum), created);
                    let count = format!("{name}_count");
                    let l = Self::labels(ctx, &p.attributes, &[("__name__", &count)]);
                    self.sample(l, t, val(p.count as f64), created);
                }
            }
        }
    }

    fn classic_histogram(
        &mut self,
        ctx: &Context,
        name: &str,
        otel_name: &str,
        p: &pb::HistogramDataPoint,
        t: i64,
        delta: bool,
    ) {
        let has_buckets = !p.bucket_counts.is_empty();
        if has_buckets && p.bucket_counts.len() != p.explicit_bounds.len() + 1 {
            self.reject(
                1,
                format!(
                    "metric {otel_name:?}: histogram point has {} bucket counts for {} \
                     explicit bounds (must be bounds + 1)",
                    p.bucket_counts.len(),
                    p.explicit_bounds.len()
                ),
            );
            return;
        }
        let stale = p.flags & NO_RECORDED_VALUE != 0;
        let val = |v: f64| if stale { model::stale_nan() } else { v };
        let created = if delta {
            0
        } else {
            ns_to_ms(p.start_time_unix_nano)
        };
        if let Some(sum) = p.sum {
            let n = format!("{name}_sum");
            let l = Self::labels(ctx, &p.attributes, &[("__name__", &n)]);
            self.sample(l, t, val(sum), created);
        }
        let n = format!("{name}_count");
        let l = Self::labels(ctx, &p.attributes, &[("__name__", &n)]);
        self.sample(l, t, val(p.count as f64), created);
        let bucket = format!("{name}_bucket");
        let mut cumulative: u64 = 0;
        if has_buckets {
            for (bound, c) in p.explicit_bounds.iter().zip(&p.bucket_counts) {
                cumulative = cumulative.saturating_add(*c);
                let le = float_text(*bound);
                let l = Self::labels(ctx, &p.attributes, &[("__name__", &bucket), ("le", &le)]);
                self.sample(l, t, val(cumulative as f64), created);
            }
        }
        let l = Self::labels(ctx, &p.attributes, &[("__name__", &bucket), ("le", "+Inf")]);
        self.sample(l, t, val(p.count as f64), created);
    }
}

/// Converts an OTLP exponential histogram point to an integer native
/// histogram and validates it. A delta point becomes a gauge histogram
/// (the counts of one interval, no counter semantics).
pub fn exponential_to_native(
    p: &pb::ExponentialHistogramDataPoint,
    delta: bool,
) -> Result<model::Histogram, String> {
    if p.scale < -4 {
        return Err(format!(
            "exponential histogram scale {} is below -4, the smallest native histogram schema",
            p.scale
        ));
    }
    let (schema, down) = if p.scale > 8 {
        (8, (p.scale - 8) as u32)
    } else {
        (p.scale, 0)
    };
    let side = |b: &Option<pb::exponential_histogram_data_point::Buckets>| match b {
        None => Ok((Vec::new(), Vec::new())),
        Some(b) => buckets_layout(b.offset, &b.bucket_counts, down),
    };
    let (positive_spans, positive_buckets) = side(&p.positive)?;
    let (negative_spans, negative_buckets) = side(&p.negative)?;
    let stale = p.flags & NO_RECORDED_VALUE != 0;
    let h = model::Histogram {
        counter_reset_hint: if delta {
            model::CounterResetHint::Gauge
        } else {
            model::CounterResetHint::Unknown
        },
        schema,
        zero_threshold: if p.zero_threshold > 0.0 {
            p.zero_threshold
        } else {
            1e-128
        },
        zero_count: p.zero_count,
        // Prometheus marks a histogram stale through its sum.
        count: if stale {
            model::STALE_NAN_BITS
        } else {
            p.count
        },
        sum: if stale {
            model::stale_nan()
        } else {
            p.sum.unwrap_or(0.0)
        },
        positive_spans,
        positive_buckets,
        negative_spans,
        negative_buckets,
        custom_values: Vec::new(),
    };
    h.validate()
        .map_err(|e| format!("invalid exponential histogram: {e}"))?;
    Ok(h)
}

/// OTLP bucket `offset + i` covers `(base^(offset+i), base^(offset+i+1)]`;
/// Prometheus bucket `k` covers `(base^(k-1), base^k]`: so `k = index + 1`.
/// Scaling down by `down` merges `2^down` buckets (`index >> down`). Empty
/// buckets are left out; gaps of up to two buckets are filled with zeros
/// and longer ones start a new span (what Prometheus' client does).
fn buckets_layout(offset: i32, counts: &[u64], down: u32) -> Result<(Vec<Span>, Vec<i64>), String> {
    let mut merged: Vec<(i64, u64)> = Vec::new();
    for (i, c) in counts.iter().enumerate() {
        let idx = ((i64::from(offset) + i as i64) >> down) + 1;
        match merged.last_mut() {
            Some((last, n)) if *last == idx => *n = n.saturating_add(*c),
            _ => merged.push((idx, *c)),
        }
    }
    let mut spans: Vec<Span> = Vec::new();
    let mut deltas: Vec<i64> = Vec::new();
    let mut prev_idx: i64 = 0;
    let mut prev_count: i64 = 0;
    for (idx, c) in merged.into_iter().filter(|(_, c)| *c > 0) {
        let c = i64::try_from(c).map_err(|_| format!("bucket count {c} is too large"))?;
        let too_far = || format!("bucket index {idx} is out of range");
        if spans.is_empty() {
            spans.push(Span {
                offset: i32::try_from(idx).map_err(|_| too_far())?,
                length: 0,
            });
        } else {
            let gap = idx - prev_idx - 1;
            if gap > 2 {
                spans.push(Span {
                    offset: i32::try_from(gap).map_err(|_| too_far())?,
                    length: 0,
                });
            } else {
                for _ in 0..gap {
                    deltas.push(-prev_count);
                    prev_count = 0;
                    if let Some(s) = spans.last_mut() {
                        s.length += 1;
                    }
                }
            }
        }
        deltas.push(c - prev_count);
        prev_count = c;
        prev_idx = idx;
        if let Some(s) = spans.last_mut() {
            s.length += 1;
        }
    }
    Ok((spans, deltas))
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a KeyValue> {
    attrs.iter().find(|kv| kv.key == key)
}

const SERVICE_NAME: &str = "service.name";
const SERVICE_NAMESPACE: &str = "service.namespace";
const SERVICE_INSTANCE_ID: &str = "service.instance.id";

/// Translates a decoded request.
pub fn translate(req: &ExportMetricsServiceRequest) -> OtlpDecoded {
    let mut tr = Translator::default();
    for rm in &req.resource_metrics {
        let res_attrs: &[KeyValue] = rm.resource.as_ref().map_or(&[], |r| &r.attributes[..]);
        let text = |k| attr(res_attrs, k).map(|kv| value_text(kv.value.as_ref()));
        let job = match (text(SERVICE_NAMESPACE), text(SERVICE_NAME)) {
            (Some(ns), Some(n)) if !ns.is_empty() => Some(format!("{ns}/{n}")),
            (_, Some(n)) => Some(n),
            _ => None,
        };
        let instance = text(SERVICE_INSTANCE_ID);
        let mut latest: Option<i64> = None;
        for sm in &rm.scope_metrics {
            let ctx = Context {
                job: job.clone(),
                instance: instance.clone(),
                scope_name: sm
                    .scope
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default(),
                scope_version: sm
                    .scope
                    .as_ref()
                    .map(|s| s.version.clone())
                    .unwrap_or_default(),
            };
            for m in &sm.metrics {
                tr.metric(&ctx, m, &mut latest);
            }
        }
        // target_info: the other resource attributes, when there is an
        // identifying label and at least one point to date it.
        let rest: Vec<KeyValue> = res_attrs
            .iter()
            .filter(|kv| {
                ![SERVICE_NAME, SERVICE_NAMESPACE, SERVICE_INSTANCE_ID].contains(&kv.key.as_str())
            })
            .cloned()
            .collect();
        if let Some(t) = latest
            && !rest.is_empty()
            && (job.is_some() || instance.is_some())
        {
            let ctx = Context {
                job: job.clone(),
                instance: instance.clone(),
                scope_name: String::new(),
                scope_version: String::new(),
            };
            let l = Translator::labels(&ctx, &rest, &[("__name__", "target_info")]);
            tr.sample(l, t, 1.0, 0);
        }
    }
    tr.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_picks_the_encoding_or_refuses() {
        assert_eq!(content_is_json("application/json; charset=utf-8"), Ok(true));
        assert_eq!(content_is_json("Application/X-Protobuf"), Ok(false));
        assert_eq!(content_is_json("application/protobuf"), Ok(false));
        assert!(
            content_is_json("text/plain")
                .unwrap_err()
                .contains("text/plain")
        );
        assert!(content_is_json("").is_err());
    }

    #[test]
    fn float_texts() {
        let check = |f: f64, le: &str, attr: &str| {
            assert_eq!(float_text(f), le, "{f}");
            assert_eq!(attribute_float_text(f), attr, "{f}");
        };
        check(1.0, "1", "1");
        check(0.25, "0.25", "0.25");
        check(-2.5, "-2.5", "-2.5");
        check(1e-7, "0.0000001", "1e-7");
        check(1.5e21, "1500000000000000000000", "1.5e+21");
        check(123456.0, "123456", "123456");
        check(f64::INFINITY, "+Inf", "+Inf");
        check(f64::NEG_INFINITY, "-Inf", "-Inf");
        check(f64::NAN, "NaN", "NaN");
    }

    #[test]
    fn prometheus_units() {
        let check = |u: &str, expected: &str| assert_eq!(prometheus_unit(u), expected, "{u}");
        check("s", "seconds");
        check("By/s", "bytes_per_second");
        check("1", "");
        check("{requests}", "");
        check("{packets}/s", "per_second");
        check("widgets", "widgets");
    }
}
