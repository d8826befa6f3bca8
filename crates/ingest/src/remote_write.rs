//! Prometheus remote write 1.0 (`prometheus.WriteRequest`) and 2.0
//! (`io.prometheus.write.v2.Request`) decoding into a [`WriteBatch`].
//!
//! The body is already decompressed (see [`crate::decompress`]). The
//! message version comes from `Content-Type` ([`Version::from_content_type`],
//! as the 2.0 spec's content negotiation says). The protobuf structs are in
//! [`proto`], written by hand from the `.proto` files with their field
//! numbers.
//!
//! Entry points: [`decode_limited`] (what a server calls: decode and apply
//! the project's [`Limits`] before allocating), [`decode_v1`]/[`decode_v2`]
//! (an owned [`WriteBatch`]), and [`visit_v1`]/[`visit_v2`] (each valid
//! series borrowed from the body, nothing allocated per label: for a store
//! that needs owned labels only for series it has not seen), and
//! [`keyed::KeyedV1`] (1.0 series keyed by the raw bytes of their labels,
//! labels checked only when asked for). The hot path
//! reads the wire format directly; it is checked against a prost reference
//! on random and mutated requests.
//!
//! What is checked, and what happens (Prometheus' `write_handler.go`
//! semantics, with Mimir's partial-write behaviour):
//!
//! * a body that does not parse as protobuf refuses the whole request
//!   ([`DecodeError::Malformed`], 400); so does a 2.0 symbol reference out
//!   of range, an odd `labels_refs` length or a symbol table that does not
//!   start with `""` (a broken sender, not a bad series);
//! * per series, Prometheus' (pre-UTF-8) rules: a non-empty `__name__`
//!   matching `[a-zA-Z_:][a-zA-Z0-9_:]*`, label names matching
//!   `[a-zA-Z_][a-zA-Z0-9_]*`, names and values valid UTF-8, no duplicate
//!   names, names sorted (the spec's MUST; Prometheus re-sorts silently, we
//!   reject as Mimir does), and every native histogram valid. A series that
//!   breaks one is left out and reported in [`Decoded::rejected`], naming
//!   the series; the others are kept. The server stores them and answers
//!   400 with the messages.
//! * labels with an empty value are dropped (an empty value means "absent");
//! * NaN, ±Inf and the stale marker are kept bit for bit;
//! * exemplars are decoded and counted ([`Stats::exemplars`]) but not kept:
//!   `model` has no place for them yet.
//! * 2.0 `start_timestamp`s become [`TimeSeries::created_timestamp`] (the
//!   last non-zero one of the series); 2.0 metadata and 1.0
//!   `WriteRequest.metadata` go to [`WriteBatch::metadata`], one entry per
//!   metric name.

use crate::DecodeError;
use crate::validate::{self, Limits, RejectReason, Rejection, series_text};
use crate::wire::{Reader, Value, WireError};
use model::{
    CounterResetHint, FloatHistogram, HistogramSample, HistogramValue, Label, Labels, Metadata,
    MetricType, Sample, Span, TimeSeries, WriteBatch,
};
use prost::Message;
use std::collections::HashMap;

pub mod keyed;

/// The remote write message a request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `prometheus.WriteRequest`.
    V1,
    /// `io.prometheus.write.v2.Request`.
    V2,
}

/// `Content-Type` of 1.0 requests (also the default).
pub const CONTENT_TYPE_V1: &str = "application/x-protobuf";
/// `Content-Type` of 2.0 requests.
pub const CONTENT_TYPE_V2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

impl Version {
    /// Content negotiation of the 2.0 spec: `application/x-protobuf` with no
    /// `proto` parameter or `proto=prometheus.WriteRequest` is 1.0,
    /// `proto=io.prometheus.write.v2.Request` is 2.0; any other media type
    /// or `proto` is [`DecodeError::UnsupportedMediaType`] (415). A missing
    /// header is 1.0, as 1.0 receivers never checked it.
    pub fn from_content_type(ct: Option<&str>) -> Result<Version, DecodeError> {
        let Some(raw) = ct else {
            return Ok(Version::V1);
        };
        if raw.trim().is_empty() {
            return Ok(Version::V1);
        }
        let unsupported = || DecodeError::UnsupportedMediaType {
            content_type: raw.to_string(),
        };
        let mut parts = raw.split(';');
        let media = parts.next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case("application/x-protobuf") {
            return Err(unsupported());
        }
        let mut version = Version::V1;
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            if !k.trim().eq_ignore_ascii_case("proto") {
                continue;
            }
            version = match v.trim().trim_matches('"') {
                "prometheus.WriteRequest" => Version::V1,
                "io.prometheus.write.v2.Request" => Version::V2,
                _ => return Err(unsupported()),
            };
        }
        Ok(version)
    }
}

/// Counts of what was accepted (series in [`Decoded::rejected`] excluded);
/// what a 2.0 receiver reports in `X-Prometheus-Remote-Write-*-Written`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub samples: usize,
    pub histograms: usize,
    /// Exemplars of accepted series: decoded, not stored (see module doc).
    pub exemplars: usize,
}

/// A decoded request: the series to store, and the series left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decoded {
    pub batch: WriteBatch,
    pub stats: Stats,
    pub rejected: Vec<Rejection>,
}

/// Decodes a protobuf body by `version`.
pub fn decode(version: Version, proto: &[u8]) -> Result<Decoded, DecodeError> {
    match version {
        Version::V1 => decode_v1(proto),
        Version::V2 => decode_v2(proto),
    }
}

/// Decodes by `version` and applies the per-request and per-series
/// `limits` on the way, before anything is allocated for a series that
/// breaks one: the call a server makes. Equivalent to [`decode`] followed by
/// [`crate::validate::apply`], except that `max_samples_per_request` counts
/// every sample of the request (rejected series included), and that the
/// memory for the series is never spent when the request is refused.
pub fn decode_limited(
    version: Version,
    proto: &[u8],
    limits: &Limits,
) -> Result<Decoded, DecodeError> {
    let max = limits.max_samples_per_request;
    let mut series: Vec<TimeSeries> = Vec::new();
    let mut limited: Vec<Rejection> = Vec::new();
    let mut dropped = Stats::default();
    let mut seen_samples = 0usize;
    let mut over = false;
    let f = |s: SeriesRef<'_, '_>| {
        let n = s.samples.len() + s.histograms.len();
        seen_samples += n;
        if over || (max > 0 && seen_samples > max) {
            if !over {
                over = true;
                series = Vec::new(); // give the memory back now
            }
            return;
        }
        if let Some((reason, what)) = validate::check_labels(s.labels, limits) {
            let text = series_text(s.labels.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
            limited.push(Rejection::new(reason, what, text, n));
            dropped.samples += s.samples.len();
            dropped.histograms += s.histograms.len();
            dropped.exemplars += s.exemplars;
            return;
        }
        series.push(TimeSeries {
            labels: s.to_labels(),
            samples: s.samples.to_vec(),
            histograms: s.histograms,
            created_timestamp: s.created_timestamp,
        });
    };
    let v = match version {
        Version::V1 => visit_v1(proto, f)?,
        Version::V2 => visit_v2(proto, f)?,
    };
    let count = seen_samples + v.rejected.iter().map(|r| r.samples).sum::<usize>();
    if max > 0 && count > max {
        return Err(DecodeError::TooManySamples { count, limit: max });
    }
    let mut rejected = v.rejected;
    rejected.extend(limited);
    let mut metadata = v.metadata;
    validate::apply_metadata(&mut metadata, limits, &mut rejected);
    Ok(Decoded {
        batch: WriteBatch { series, metadata },
        stats: Stats {
            samples: v.stats.samples - dropped.samples,
            histograms: v.stats.histograms - dropped.histograms,
            exemplars: v.stats.exemplars - dropped.exemplars,
        },
        rejected,
    })
}

fn not_protobuf(what: &str, e: prost::DecodeError) -> DecodeError {
    DecodeError::malformed(format!("{what} is not valid protobuf: {e}"))
}

/// A valid series of a 1.0 request, borrowed from the body: what
/// [`visit_v1`] hands to its callback. Labels are sorted, checked, without
/// empty values; nothing per label was allocated.
#[derive(Debug)]
pub struct SeriesRef<'a, 's> {
    pub labels: &'s [(&'a str, &'a str)],
    pub samples: &'s [Sample],
    /// Native histograms, converted and validated (rare: owned).
    pub histograms: Vec<HistogramSample>,
    /// Exemplars of the series (decoded, not kept).
    pub exemplars: usize,
    /// 2.0: the last non-zero `start_timestamp` of the series' histograms,
    /// else of its samples, in ms; 0 when unknown (always 0 for 1.0).
    pub created_timestamp: i64,
}

impl SeriesRef<'_, '_> {
    /// The owned label set.
    pub fn to_labels(&self) -> Labels {
        Labels::from_sorted_unchecked(
            self.labels
                .iter()
                .map(|(n, v)| Label {
                    name: (*n).to_owned(),
                    value: (*v).to_owned(),
                })
                .collect(),
        )
    }
}

/// What [`visit_v1`] returns besides the series it handed out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Visited {
    pub stats: Stats,
    pub rejected: Vec<Rejection>,
    pub metadata: Vec<(String, Metadata)>,
}

/// Decodes a remote write 1.0 `prometheus.WriteRequest` into an owned
/// [`WriteBatch`] (built on [`visit_v1`]).
pub fn decode_v1(proto: &[u8]) -> Result<Decoded, DecodeError> {
    // ~100 bytes of protobuf per series is typical: reserve once
    let mut series: Vec<TimeSeries> = Vec::with_capacity(proto.len() / 128);
    let v = visit_v1(proto, |s| {
        series.push(TimeSeries {
            labels: s.to_labels(),
            samples: s.samples.to_vec(),
            histograms: s.histograms,
            created_timestamp: s.created_timestamp,
        });
    })?;
    Ok(Decoded {
        batch: WriteBatch {
            series,
            metadata: v.metadata,
        },
        stats: v.stats,
        rejected: v.rejected,
    })
}

/// Decodes a remote write 1.0 `prometheus.WriteRequest`, calling `f` with
/// each valid series borrowed from `proto`: the allocation-free path for a
/// store that only needs owned labels for series it has not seen yet.
///
/// The hot path (series, labels, samples) is read straight off the wire
/// (the private `wire` module); histograms, exemplars and metadata go
/// through prost.
/// A malformed body fails with an error after `f` may have seen some
/// series: callers that must be all-or-nothing collect first.
pub fn visit_v1<'a>(
    proto: &'a [u8],
    mut f: impl FnMut(SeriesRef<'a, '_>),
) -> Result<Visited, DecodeError> {
    let mut out = Visited::default();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut scratch = Scratch::default();
    let mut r = Reader::new(proto, 0);
    while let Some((field, _, v)) = r.next().map_err(wire_error)? {
        match (field, v) {
            (1, Value::Len(ts, base)) => series_v1(ts, base, &mut scratch, &mut out, &mut f)?,
            (3, Value::Len(md, _)) => {
                let m = proto::v1::MetricMetadata::decode(md)
                    .map_err(|e| not_protobuf("prometheus.WriteRequest metadata", e))?;
                let md = Metadata {
                    metric_type: metric_type(m.r#type),
                    help: m.help,
                    unit: m.unit,
                };
                push_metadata(&mut out.metadata, &mut seen, m.metric_family_name, md);
            }
            (1 | 3, _) => return Err(wire_error(r.wrong_type())),
            _ => {}
        }
    }
    Ok(out)
}

/// Buffers reused from one series to the next.
#[derive(Default)]
struct Scratch<'a> {
    pairs: Vec<(&'a [u8], &'a [u8])>,
    labels: Vec<(&'a str, &'a str)>,
    samples: Vec<Sample>,
}

fn wire_error(e: WireError) -> DecodeError {
    DecodeError::malformed(format!(
        "prometheus.WriteRequest is not valid protobuf: {} at byte {}",
        e.what, e.at
    ))
}

/// One `prometheus.TimeSeries` (fields: labels = 1, samples = 2,
/// exemplars = 3, histograms = 4).
fn series_v1<'a>(
    ts: &'a [u8],
    base: usize,
    scratch: &mut Scratch<'a>,
    out: &mut Visited,
    f: &mut impl FnMut(SeriesRef<'a, '_>),
) -> Result<(), DecodeError> {
    scratch.pairs.clear();
    scratch.samples.clear();
    let mut raw_histograms: Vec<proto::Histogram> = Vec::new();
    let mut exemplars = 0usize;
    let mut r = Reader::new(ts, base);
    while let Some((field, _, v)) = r.next().map_err(wire_error)? {
        match (field, v) {
            (1, Value::Len(l, at)) => scratch.pairs.push(label_v1(l, at)?),
            (2, Value::Len(b, at)) => scratch.samples.push(sample_v1(b, at)?),
            (3, Value::Len(b, _)) => {
                proto::v1::Exemplar::decode(b)
                    .map_err(|e| not_protobuf("prometheus.WriteRequest exemplar", e))?;
                exemplars += 1;
            }
            (4, Value::Len(b, _)) => raw_histograms.push(
                proto::Histogram::decode(b)
                    .map_err(|e| not_protobuf("prometheus.WriteRequest histogram", e))?,
            ),
            (1..=4, _) => return Err(wire_error(r.wrong_type())),
            _ => {}
        }
    }
    let Some(histograms) = checked_series(scratch, raw_histograms, &mut out.rejected) else {
        return Ok(());
    };
    out.stats.samples += scratch.samples.len();
    out.stats.histograms += histograms.len();
    out.stats.exemplars += exemplars;
    f(SeriesRef {
        labels: &scratch.labels,
        samples: &scratch.samples,
        histograms,
        exemplars,
        created_timestamp: 0,
    });
    Ok(())
}

/// Checks a decoded series' labels and histograms as Prometheus does; a
/// failure rejects the whole series (recorded in `rejected`, with its
/// samples counted) and yields `None`.
fn checked_series(
    scratch: &mut Scratch<'_>,
    raw_histograms: Vec<proto::Histogram>,
    rejected: &mut Vec<Rejection>,
) -> Option<Vec<HistogramSample>> {
    let n_samples = scratch.samples.len() + raw_histograms.len();
    let reject = |reason, what, scratch: &Scratch<'_>, rejected: &mut Vec<Rejection>| {
        rejected.push(Rejection::new(
            reason,
            what,
            series_text(scratch.pairs.iter().copied()),
            n_samples,
        ));
    };
    if let Err((reason, what)) = check_labels(&scratch.pairs, &mut scratch.labels) {
        reject(reason, what, scratch, rejected);
        return None;
    }
    match histograms(raw_histograms) {
        Ok(h) => Some(h),
        Err(e) => {
            reject(
                RejectReason::InvalidHistogram,
                e.to_string(),
                scratch,
                rejected,
            );
            None
        }
    }
}

/// `Label`: name = 1, value = 2 (strings, read as bytes).
#[inline]
fn label_v1(b: &[u8], at: usize) -> Result<(&[u8], &[u8]), DecodeError> {
    let (mut name, mut value): (&[u8], &[u8]) = (b"", b"");
    let mut r = Reader::new(b, at);
    while let Some((field, _, v)) = r.next().map_err(wire_error)? {
        match (field, v) {
            (1, Value::Len(x, _)) => name = x,
            (2, Value::Len(x, _)) => value = x,
            (1 | 2, _) => return Err(wire_error(r.wrong_type())),
            _ => {}
        }
    }
    Ok((name, value))
}

/// `Sample`: value = 1 (double), timestamp = 2 (int64).
#[inline]
fn sample_v1(b: &[u8], at: usize) -> Result<Sample, DecodeError> {
    let mut s = Sample { t: 0, v: 0.0 };
    let mut r = Reader::new(b, at);
    while let Some((field, _, v)) = r.next().map_err(wire_error)? {
        match (field, v) {
            (1, Value::I64(bits)) => s.v = f64::from_bits(bits),
            (2, Value::Varint(t)) => s.t = t as i64,
            (1 | 2, _) => return Err(wire_error(r.wrong_type())),
            _ => {}
        }
    }
    Ok(s)
}

fn push_metadata(
    list: &mut Vec<(String, Metadata)>,
    seen: &mut HashMap<String, usize>,
    name: String,
    md: Metadata,
) {
    if name.is_empty() {
        return;
    }
    match seen.get(&name) {
        Some(&i) => list[i].1 = md,
        None => {
            seen.insert(name.clone(), list.len());
            list.push((name, md));
        }
    }
}

/// Rejection reason and the rule broken.
type LabelError = (RejectReason, String);

/// Checks a series' raw (name, value) pairs, in wire order, against
/// Prometheus' rules, and fills `out` with the checked pairs without the
/// empty values. One pass; nothing is allocated.
fn check_labels<'a>(
    pairs: &[(&'a [u8], &'a [u8])],
    out: &mut Vec<(&'a str, &'a str)>,
) -> Result<(), LabelError> {
    out.clear();
    let mut prev: Option<&[u8]> = None;
    let mut name_seen = false;
    for &(n, v) in pairs {
        let Ok(ns) = std::str::from_utf8(n) else {
            return Err((
                RejectReason::InvalidUtf8,
                "label name is not valid UTF-8".into(),
            ));
        };
        if !model::is_valid_label_name(ns) {
            return Err((
                RejectReason::InvalidLabelName,
                format!("invalid label name {ns:?} (must match [a-zA-Z_][a-zA-Z0-9_]*)"),
            ));
        }
        let Ok(vs) = std::str::from_utf8(v) else {
            return Err((
                RejectReason::InvalidUtf8,
                format!("value of label {ns:?} is not valid UTF-8"),
            ));
        };
        if let Some(p) = prev {
            match p.cmp(n) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => {
                    return Err((
                        RejectReason::DuplicateLabelNames,
                        format!("duplicate label name {ns:?}"),
                    ));
                }
                std::cmp::Ordering::Greater => {
                    return Err((
                        RejectReason::LabelsNotSorted,
                        format!(
                            "labels are not sorted by name ({:?} before {ns:?})",
                            String::from_utf8_lossy(p)
                        ),
                    ));
                }
            }
        }
        prev = Some(n);
        if ns == model::METRIC_NAME {
            name_seen = true;
            if vs.is_empty() {
                return Err((
                    RejectReason::MissingMetricName,
                    "series has an empty metric name (__name__)".into(),
                ));
            }
            if !model::is_valid_metric_name(vs) {
                return Err((
                    RejectReason::InvalidMetricName,
                    format!("invalid metric name {vs:?} (must match [a-zA-Z_:][a-zA-Z0-9_:]*)"),
                ));
            }
        }
        if !vs.is_empty() {
            out.push((ns, vs));
        }
    }
    if !name_seen {
        return Err((
            RejectReason::MissingMetricName,
            "series has no metric name (__name__)".into(),
        ));
    }
    Ok(())
}

fn metric_type(t: i32) -> MetricType {
    // The 1.0 and 2.0 enums share their numbers.
    match t {
        1 => MetricType::Counter,
        2 => MetricType::Gauge,
        3 => MetricType::Histogram,
        4 => MetricType::GaugeHistogram,
        5 => MetricType::Summary,
        6 => MetricType::Info,
        7 => MetricType::StateSet,
        _ => MetricType::Unknown,
    }
}

fn spans(s: &[proto::BucketSpan]) -> Vec<Span> {
    s.iter()
        .map(|s| Span {
            offset: s.offset,
            length: s.length,
        })
        .collect()
}

/// Converts and validates native histograms (shared by 1.0 and 2.0: the
/// messages are the same but for 2.0's `start_timestamp`).
fn histograms(hs: Vec<proto::Histogram>) -> Result<Vec<HistogramSample>, model::HistogramError> {
    hs.into_iter()
        .map(|h| {
            let hint = match h.reset_hint {
                1 => CounterResetHint::CounterReset,
                2 => CounterResetHint::NotCounterReset,
                3 => CounterResetHint::Gauge,
                _ => CounterResetHint::Unknown,
            };
            let value = if let Some(proto::histogram::Count::CountFloat(count)) = h.count {
                let f = FloatHistogram {
                    counter_reset_hint: hint,
                    schema: h.schema,
                    zero_threshold: h.zero_threshold,
                    zero_count: match h.zero_count {
                        Some(proto::histogram::ZeroCount::ZeroCountFloat(z)) => z,
                        _ => 0.0,
                    },
                    count,
                    sum: h.sum,
                    positive_spans: spans(&h.positive_spans),
                    positive_buckets: h.positive_counts,
                    negative_spans: spans(&h.negative_spans),
                    negative_buckets: h.negative_counts,
                    custom_values: h.custom_values,
                };
                f.validate()?;
                HistogramValue::Float(f)
            } else {
                let i = model::Histogram {
                    counter_reset_hint: hint,
                    schema: h.schema,
                    zero_threshold: h.zero_threshold,
                    zero_count: match h.zero_count {
                        Some(proto::histogram::ZeroCount::ZeroCountInt(z)) => z,
                        _ => 0,
                    },
                    count: match h.count {
                        Some(proto::histogram::Count::CountInt(c)) => c,
                        _ => 0,
                    },
                    sum: h.sum,
                    positive_spans: spans(&h.positive_spans),
                    positive_buckets: h.positive_deltas,
                    negative_spans: spans(&h.negative_spans),
                    negative_buckets: h.negative_deltas,
                    custom_values: h.custom_values,
                };
                i.validate()?;
                HistogramValue::Int(i)
            };
            Ok(HistogramSample {
                t: h.timestamp,
                h: value,
            })
        })
        .collect()
}

/// Decodes a remote write 2.0 `io.prometheus.write.v2.Request` into an
/// owned [`WriteBatch`] (built on [`visit_v2`]).
pub fn decode_v2(proto: &[u8]) -> Result<Decoded, DecodeError> {
    let mut series: Vec<TimeSeries> = Vec::with_capacity(proto.len() / 64);
    let v = visit_v2(proto, |s| {
        series.push(TimeSeries {
            labels: s.to_labels(),
            samples: s.samples.to_vec(),
            histograms: s.histograms,
            created_timestamp: s.created_timestamp,
        });
    })?;
    Ok(Decoded {
        batch: WriteBatch {
            series,
            metadata: v.metadata,
        },
        stats: v.stats,
        rejected: v.rejected,
    })
}

fn wire_error_v2(e: WireError) -> DecodeError {
    DecodeError::malformed(format!(
        "io.prometheus.write.v2.Request is not valid protobuf: {} at byte {}",
        e.what, e.at
    ))
}

/// Decodes a remote write 2.0 `io.prometheus.write.v2.Request`, calling
/// `f` with each valid series borrowed from `proto` (see [`visit_v1`]).
/// Symbols are read first (protobuf allows them after the series), then
/// the series; a symbol reference out of range, an odd `labels_refs` or a
/// first symbol that is not `""` refuses the whole request.
pub fn visit_v2<'a>(
    proto: &'a [u8],
    mut f: impl FnMut(SeriesRef<'a, '_>),
) -> Result<Visited, DecodeError> {
    // Request: symbols = 4, timeseries = 5 (1–3 reserved).
    let mut symbols: Vec<&'a [u8]> = Vec::new();
    let mut r = Reader::new(proto, 0);
    while let Some((field, _, v)) = r.next().map_err(wire_error_v2)? {
        match (field, v) {
            (4, Value::Len(s, _)) => symbols.push(s),
            (5, Value::Len(..)) => {}
            (4 | 5, _) => return Err(wire_error_v2(r.wrong_type())),
            _ => {}
        }
    }
    if let Some(first) = symbols.first()
        && !first.is_empty()
    {
        return Err(DecodeError::malformed(format!(
            "symbols[0] must be the empty string, got {:?}",
            String::from_utf8_lossy(first)
        )));
    }
    let mut out = Visited::default();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut scratch = Scratch::default();
    let mut refs: Vec<u32> = Vec::new();
    let mut r = Reader::new(proto, 0);
    let mut i = 0usize;
    while let Some((field, _, v)) = r.next().map_err(wire_error_v2)? {
        if let (5, Value::Len(ts, base)) = (field, v) {
            series_v2(
                i,
                ts,
                base,
                &symbols,
                &mut refs,
                &mut scratch,
                &mut out,
                &mut seen,
                &mut f,
            )?;
            i += 1;
        }
    }
    Ok(out)
}

/// Reads a `repeated uint32` element, packed or not, into `out`.
fn read_u32s(v: Value<'_>, out: &mut Vec<u32>, r: &Reader<'_>) -> Result<(), DecodeError> {
    match v {
        Value::Varint(x) => out.push(x as u32),
        Value::Len(b, at) => {
            let mut p = Reader::new(b, at);
            while let Some(x) = p.varint_packed().map_err(wire_error_v2)? {
                out.push(x as u32);
            }
        }
        _ => return Err(wire_error_v2(r.wrong_type())),
    }
    Ok(())
}

/// One `io.prometheus.write.v2.TimeSeries`: labels_refs = 1, samples = 2,
/// histograms = 3, exemplars = 4, metadata = 5.
#[allow(clippy::too_many_arguments)]
fn series_v2<'a>(
    index: usize,
    ts: &'a [u8],
    base: usize,
    symbols: &[&'a [u8]],
    refs: &mut Vec<u32>,
    scratch: &mut Scratch<'a>,
    out: &mut Visited,
    seen: &mut HashMap<String, usize>,
    f: &mut impl FnMut(SeriesRef<'a, '_>),
) -> Result<(), DecodeError> {
    let sym = |field: &str, r: u32| -> Result<&'a [u8], DecodeError> {
        symbols.get(r as usize).copied().ok_or_else(|| {
            DecodeError::malformed(format!(
                "timeseries[{index}].{field}: symbol reference {r} is out of range \
                 (the request has {} symbols)",
                symbols.len()
            ))
        })
    };
    refs.clear();
    scratch.samples.clear();
    let mut raw_histograms: Vec<proto::Histogram> = Vec::new();
    let mut exemplars = 0usize;
    let mut metadata: Option<proto::v2::Metadata> = None;
    // last non-zero start_timestamp of the samples, else of the histograms
    let (mut created_s, mut created_h) = (0i64, 0i64);
    let mut r = Reader::new(ts, base);
    while let Some((field, _, v)) = r.next().map_err(wire_error_v2)? {
        match (field, v) {
            (1, v) => read_u32s(v, refs, &r)?,
            (2, Value::Len(b, at)) => {
                // Sample: value = 1, timestamp = 2, start_timestamp = 3
                let mut s = Sample { t: 0, v: 0.0 };
                let mut st = 0i64;
                let mut p = Reader::new(b, at);
                while let Some((field, _, v)) = p.next().map_err(wire_error_v2)? {
                    match (field, v) {
                        (1, Value::I64(bits)) => s.v = f64::from_bits(bits),
                        (2, Value::Varint(t)) => s.t = t as i64,
                        (3, Value::Varint(t)) => st = t as i64,
                        (1..=3, _) => return Err(wire_error_v2(p.wrong_type())),
                        _ => {}
                    }
                }
                if st != 0 {
                    created_s = st;
                }
                scratch.samples.push(s);
            }
            (3, Value::Len(b, _)) => {
                let h = proto::Histogram::decode(b)
                    .map_err(|e| not_protobuf("io.prometheus.write.v2.Request histogram", e))?;
                if h.start_timestamp != 0 {
                    created_h = h.start_timestamp;
                }
                raw_histograms.push(h);
            }
            (4, Value::Len(b, _)) => {
                let e = proto::v2::Exemplar::decode(b)
                    .map_err(|e| not_protobuf("io.prometheus.write.v2.Request exemplar", e))?;
                for r in &e.labels_refs {
                    sym("exemplars.labels_refs", *r)?;
                }
                exemplars += 1;
            }
            (5, Value::Len(b, _)) => {
                metadata = Some(
                    proto::v2::Metadata::decode(b)
                        .map_err(|e| not_protobuf("io.prometheus.write.v2.Request metadata", e))?,
                );
            }
            (2..=5, _) => return Err(wire_error_v2(r.wrong_type())),
            _ => {}
        }
    }
    if !refs.len().is_multiple_of(2) {
        return Err(DecodeError::malformed(format!(
            "timeseries[{index}].labels_refs has odd length {} (it holds name, value pairs)",
            refs.len()
        )));
    }
    scratch.pairs.clear();
    for p in refs.chunks_exact(2) {
        scratch
            .pairs
            .push((sym("labels_refs", p[0])?, sym("labels_refs", p[1])?));
    }
    let (help, unit) = match &metadata {
        Some(m) => (
            sym("metadata.help_ref", m.help_ref)?,
            sym("metadata.unit_ref", m.unit_ref)?,
        ),
        None => (&b""[..], &b""[..]),
    };
    let Some(histograms) = checked_series(scratch, raw_histograms, &mut out.rejected) else {
        return Ok(());
    };
    if let Some(m) = metadata
        && let Some(&(_, name)) = scratch
            .labels
            .iter()
            .find(|(n, _)| *n == model::METRIC_NAME)
    {
        let mt = metric_type(m.r#type);
        let known = seen.get(name).map(|&i| &out.metadata[i].1);
        // Every series of a family repeats its metadata: allocate only
        // when it is new or changed.
        let same = known.is_some_and(|k| {
            k.metric_type == mt && k.help.as_bytes() == help && k.unit.as_bytes() == unit
        });
        let empty = mt == MetricType::Unknown && help.is_empty() && unit.is_empty();
        if !same && !empty {
            let md = Metadata {
                metric_type: mt,
                help: String::from_utf8_lossy(help).into_owned(),
                unit: String::from_utf8_lossy(unit).into_owned(),
            };
            push_metadata(&mut out.metadata, seen, name.to_string(), md);
        }
    }
    out.stats.samples += scratch.samples.len();
    out.stats.histograms += histograms.len();
    out.stats.exemplars += exemplars;
    f(SeriesRef {
        labels: &scratch.labels,
        samples: &scratch.samples,
        histograms,
        exemplars,
        created_timestamp: if created_h != 0 { created_h } else { created_s },
    });
    Ok(())
}

/// The remote write protobuf messages, hand-written from
/// `prompb/types.proto`, `prompb/remote.proto` (1.0) and
/// `prompb/io/prometheus/write/v2/types.proto` (2.0), field numbers as
/// there. Label names and values are declared `bytes` (the same wire type
/// as `string`) so that invalid UTF-8 is a per-series rejection, not a
/// failure of the whole request. Public so that senders (the agent) and
/// tests can encode requests.
pub mod proto {
    /// `BucketSpan` (the same message in 1.0 and 2.0).
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct BucketSpan {
        #[prost(sint32, tag = "1")]
        pub offset: i32,
        #[prost(uint32, tag = "2")]
        pub length: u32,
    }

    /// `Histogram`: `prometheus.Histogram` (1.0) and
    /// `io.prometheus.write.v2.Histogram` (2.0) have the same fields 1–16;
    /// 2.0 adds `start_timestamp` = 17, which a 1.0 message never carries.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        #[prost(oneof = "histogram::Count", tags = "1, 2")]
        pub count: Option<histogram::Count>,
        #[prost(double, tag = "3")]
        pub sum: f64,
        #[prost(sint32, tag = "4")]
        pub schema: i32,
        #[prost(double, tag = "5")]
        pub zero_threshold: f64,
        #[prost(oneof = "histogram::ZeroCount", tags = "6, 7")]
        pub zero_count: Option<histogram::ZeroCount>,
        #[prost(message, repeated, tag = "8")]
        pub negative_spans: Vec<BucketSpan>,
        #[prost(sint64, repeated, tag = "9")]
        pub negative_deltas: Vec<i64>,
        #[prost(double, repeated, tag = "10")]
        pub negative_counts: Vec<f64>,
        #[prost(message, repeated, tag = "11")]
        pub positive_spans: Vec<BucketSpan>,
        #[prost(sint64, repeated, tag = "12")]
        pub positive_deltas: Vec<i64>,
        #[prost(double, repeated, tag = "13")]
        pub positive_counts: Vec<f64>,
        /// 0 unknown, 1 yes, 2 no, 3 gauge.
        #[prost(int32, tag = "14")]
        pub reset_hint: i32,
        #[prost(int64, tag = "15")]
        pub timestamp: i64,
        #[prost(double, repeated, tag = "16")]
        pub custom_values: Vec<f64>,
        /// 2.0 only.
        #[prost(int64, tag = "17")]
        pub start_timestamp: i64,
    }

    pub mod histogram {
        #[derive(Clone, Copy, PartialEq, prost::Oneof)]
        pub enum Count {
            #[prost(uint64, tag = "1")]
            CountInt(u64),
            #[prost(double, tag = "2")]
            CountFloat(f64),
        }
        #[derive(Clone, Copy, PartialEq, prost::Oneof)]
        pub enum ZeroCount {
            #[prost(uint64, tag = "6")]
            ZeroCountInt(u64),
            #[prost(double, tag = "7")]
            ZeroCountFloat(f64),
        }
    }

    /// Remote write 1.0, package `prometheus`.
    pub mod v1 {
        use super::Histogram;

        /// `WriteRequest`: `timeseries` = 1, `metadata` = 3 (2 reserved).
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct WriteRequest {
            #[prost(message, repeated, tag = "1")]
            pub timeseries: Vec<TimeSeries>,
            #[prost(message, repeated, tag = "3")]
            pub metadata: Vec<MetricMetadata>,
        }

        #[derive(Clone, PartialEq, prost::Message)]
        pub struct TimeSeries {
            #[prost(message, repeated, tag = "1")]
            pub labels: Vec<Label>,
            #[prost(message, repeated, tag = "2")]
            pub samples: Vec<Sample>,
            #[prost(message, repeated, tag = "3")]
            pub exemplars: Vec<Exemplar>,
            #[prost(message, repeated, tag = "4")]
            pub histograms: Vec<Histogram>,
        }

        /// `Label`: `string name = 1; string value = 2;` (read as bytes).
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Label {
            #[prost(bytes = "vec", tag = "1")]
            pub name: Vec<u8>,
            #[prost(bytes = "vec", tag = "2")]
            pub value: Vec<u8>,
        }

        #[derive(Clone, Copy, PartialEq, prost::Message)]
        pub struct Sample {
            #[prost(double, tag = "1")]
            pub value: f64,
            #[prost(int64, tag = "2")]
            pub timestamp: i64,
        }

        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Exemplar {
            #[prost(message, repeated, tag = "1")]
            pub labels: Vec<Label>,
            #[prost(double, tag = "2")]
            pub value: f64,
            #[prost(int64, tag = "3")]
            pub timestamp: i64,
        }

        /// `MetricMetadata`: type = 1 (`MetricType` enum, same numbers as
        /// 2.0's), metric_family_name = 2, help = 4, unit = 5.
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct MetricMetadata {
            #[prost(int32, tag = "1")]
            pub r#type: i32,
            #[prost(string, tag = "2")]
            pub metric_family_name: String,
            #[prost(string, tag = "4")]
            pub help: String,
            #[prost(string, tag = "5")]
            pub unit: String,
        }
    }

    /// Remote write 2.0, package `io.prometheus.write.v2`.
    pub mod v2 {
        use super::Histogram;

        /// `Request`: fields 1–3 reserved, `symbols` = 4, `timeseries` = 5.
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Request {
            #[prost(bytes = "vec", repeated, tag = "4")]
            pub symbols: Vec<Vec<u8>>,
            #[prost(message, repeated, tag = "5")]
            pub timeseries: Vec<TimeSeries>,
        }

        /// `TimeSeries`: labels_refs = 1, samples = 2, histograms = 3,
        /// exemplars = 4, metadata = 5 (6 reserved).
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct TimeSeries {
            #[prost(uint32, repeated, tag = "1")]
            pub labels_refs: Vec<u32>,
            #[prost(message, repeated, tag = "2")]
            pub samples: Vec<Sample>,
            #[prost(message, repeated, tag = "3")]
            pub histograms: Vec<Histogram>,
            #[prost(message, repeated, tag = "4")]
            pub exemplars: Vec<Exemplar>,
            #[prost(message, optional, tag = "5")]
            pub metadata: Option<Metadata>,
        }

        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Exemplar {
            #[prost(uint32, repeated, tag = "1")]
            pub labels_refs: Vec<u32>,
            #[prost(double, tag = "2")]
            pub value: f64,
            #[prost(int64, tag = "3")]
            pub timestamp: i64,
        }

        #[derive(Clone, Copy, PartialEq, prost::Message)]
        pub struct Sample {
            #[prost(double, tag = "1")]
            pub value: f64,
            #[prost(int64, tag = "2")]
            pub timestamp: i64,
            #[prost(int64, tag = "3")]
            pub start_timestamp: i64,
        }

        /// `Metadata`: type = 1 (`METRIC_TYPE_*`), help_ref = 3, unit_ref = 4.
        #[derive(Clone, Copy, PartialEq, prost::Message)]
        pub struct Metadata {
            #[prost(int32, tag = "1")]
            pub r#type: i32,
            #[prost(uint32, tag = "3")]
            pub help_ref: u32,
            #[prost(uint32, tag = "4")]
            pub unit_ref: u32,
        }
    }
}
