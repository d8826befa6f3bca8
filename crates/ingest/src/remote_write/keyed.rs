//! Remote write 1.0 decoded for a store that caches series by the raw
//! bytes of their labels (`tsdb::Db::append_keyed`): each series comes with
//! the bytes of its label fields as they are on the wire, and its labels
//! are decoded and validated only when asked for — which a store does only
//! for series it does not know.
//!
//! [`KeyedV1::decode`] reads the whole body first (all or nothing, as
//! [`decode_limited`](super::decode_limited)): every wire error, the
//! per-request sample limit, invalid native histograms and metadata limits
//! are found before anything is handed out. Label rules (UTF-8, names,
//! order, duplicates, `__name__`) and per-series limits are checked by
//! [`RawSeries::labels`], and [`Rejections::into_list`] gives the rejections
//! in the order `decode_limited` gives them. With every series' labels
//! asked for, the outcome is `decode_limited`'s exactly (checked in
//! `tests/ingest/keyed.rs`).
//!
//! **The key.** [`RawSeries::key`] is the concatenation of the series'
//! `labels` fields (field 1 of `prometheus.TimeSeries`: key, length,
//! `Label` message), in wire order, usually one slice of the body. The
//! labels and their validity are a function of these bytes and of the
//! label limits, which [`KeyedV1::salt`] covers: equal (salt, key) means
//! equal labels and an equal verdict. Series with equal labels but
//! differently encoded fields (another field order inside a `Label`, an
//! empty label present or not) have different keys.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

use model::{HistogramSample, Label, Labels, Metadata, Sample};
use prost::Message;

use super::{
    check_labels, histograms, label_v1, metric_type, not_protobuf, proto, push_metadata, sample_v1,
    wire_error,
};
use crate::DecodeError;
use crate::validate::{self, Limits, RejectReason, Rejection, series_text};
use crate::wire::{Reader, Value};

/// One series of a [`KeyedV1`] whose histograms (if any) are valid; its
/// labels are not checked yet.
#[derive(Clone, Debug, PartialEq)]
pub struct RawSeries<'a> {
    /// The series' label fields as on the wire (see the module doc).
    pub key: Cow<'a, [u8]>,
    /// Its samples in [`KeyedV1::samples`].
    pub samples: Range<usize>,
    /// Its native histograms in [`KeyedV1::histograms`].
    pub histograms: Range<usize>,
    /// Its position among the request's `TimeSeries`.
    ordinal: usize,
}

/// A decoded 1.0 request whose series are keyed by their raw label bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyedV1<'a> {
    pub series: Vec<RawSeries<'a>>,
    pub samples: Vec<Sample>,
    pub histograms: Vec<HistogramSample>,
    /// Metadata within the limits, one entry per metric name.
    pub metadata: Vec<(String, Metadata)>,
    /// Rejections found while decoding (invalid histograms, long metadata).
    pub rejections: Rejections,
}

/// The rejections of a [`KeyedV1`], kept apart by kind so that
/// [`Rejections::into_list`] can give `decode_limited`'s order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rejections {
    /// Label rules and histograms, by series position.
    rules: Vec<(usize, Rejection)>,
    /// Per-series limits, by series position.
    limits: Vec<(usize, Rejection)>,
    metadata: Vec<Rejection>,
}

impl Rejections {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.limits.is_empty() && self.metadata.is_empty()
    }

    /// Label-rule and histogram rejections in series order, then limit
    /// rejections in series order, then metadata: `decode_limited`'s order.
    pub fn into_list(mut self) -> Vec<Rejection> {
        self.rules.sort_by_key(|(i, _)| *i);
        self.limits.sort_by_key(|(i, _)| *i);
        let mut out: Vec<Rejection> = self.rules.into_iter().map(|(_, r)| r).collect();
        out.extend(self.limits.into_iter().map(|(_, r)| r));
        out.extend(self.metadata);
        out
    }
}

impl<'a> KeyedV1<'a> {
    /// What a store mixes into its keys besides [`RawSeries::key`]: the
    /// protocol and the label limits (the others do not decide whether a
    /// series' labels are accepted).
    pub fn salt(limits: &Limits) -> Vec<u8> {
        let mut s = b"prometheus.WriteRequest/labels/1".to_vec();
        for n in [
            limits.max_label_names_per_series,
            limits.max_label_name_len,
            limits.max_label_value_len,
        ] {
            s.extend_from_slice(&(n as u64).to_le_bytes());
        }
        s
    }

    /// Decodes a `prometheus.WriteRequest`, applying the per-request
    /// sample limit and the metadata limit; fails as `decode_limited`
    /// would (the same errors, before anything is handed out).
    pub fn decode(proto: &'a [u8], limits: &Limits) -> Result<KeyedV1<'a>, DecodeError> {
        let mut out = KeyedV1 {
            series: Vec::with_capacity(proto.len() / 128),
            samples: Vec::with_capacity(proto.len() / 128),
            ..Default::default()
        };
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut total = 0usize;
        let mut ordinal = 0usize;
        let mut r = Reader::new(proto, 0);
        while let Some((field, _, v)) = r.next().map_err(wire_error)? {
            match (field, v) {
                (1, Value::Len(ts, base)) => {
                    total += out.series(ordinal, ts, base)?;
                    ordinal += 1;
                }
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
        let max = limits.max_samples_per_request;
        if max > 0 && total > max {
            return Err(DecodeError::TooManySamples {
                count: total,
                limit: max,
            });
        }
        validate::apply_metadata(&mut out.metadata, limits, &mut out.rejections.metadata);
        Ok(out)
    }

    /// One `prometheus.TimeSeries`, read as `series_v1` reads it (the same
    /// errors at the same bytes); returns its sample and histogram count.
    fn series(&mut self, ordinal: usize, ts: &'a [u8], base: usize) -> Result<usize, DecodeError> {
        let samples_start = self.samples.len();
        let mut raw_histograms: Vec<proto::Histogram> = Vec::new();
        // The label fields: one range of `ts` while they are adjacent, else
        // copied (an encoder that interleaves fields; never seen in practice).
        let mut span: Option<Range<usize>> = None;
        let mut copied: Option<Vec<u8>> = None;
        let mut r = Reader::new(ts, base);
        loop {
            let start = r.pos();
            let Some((field, _, v)) = r.next().map_err(wire_error)? else {
                break;
            };
            match (field, v) {
                (1, Value::Len(l, at)) => {
                    label_v1(l, at)?;
                    let end = r.pos();
                    match (&mut span, &mut copied) {
                        (_, Some(c)) => c.extend_from_slice(&ts[start..end]),
                        (None, None) => span = Some(start..end),
                        (Some(s), None) if s.end == start => s.end = end,
                        (Some(s), None) => {
                            let mut c = ts[s.clone()].to_vec();
                            c.extend_from_slice(&ts[start..end]);
                            copied = Some(c);
                        }
                    }
                }
                (2, Value::Len(b, at)) => self.samples.push(sample_v1(b, at)?),
                (3, Value::Len(b, _)) => {
                    proto::v1::Exemplar::decode(b)
                        .map_err(|e| not_protobuf("prometheus.WriteRequest exemplar", e))?;
                }
                (4, Value::Len(b, _)) => raw_histograms.push(
                    proto::Histogram::decode(b)
                        .map_err(|e| not_protobuf("prometheus.WriteRequest histogram", e))?,
                ),
                (1..=4, _) => return Err(wire_error(r.wrong_type())),
                _ => {}
            }
        }
        let key: Cow<'a, [u8]> = match (copied, span) {
            (Some(c), _) => Cow::Owned(c),
            (None, Some(s)) => Cow::Borrowed(&ts[s]),
            (None, None) => Cow::Borrowed(&[]),
        };
        let n = self.samples.len() - samples_start + raw_histograms.len();
        let hist_start = self.histograms.len();
        if !raw_histograms.is_empty() {
            match histograms(raw_histograms) {
                Ok(h) => self.histograms.extend(h),
                Err(e) => {
                    // As `series_v1`: a label rule broken wins over the
                    // histogram.
                    self.samples.truncate(samples_start);
                    let mut pairs = Vec::new();
                    label_pairs(&key, &mut pairs);
                    let mut checked = Vec::new();
                    let rejection = match check_labels(&pairs, &mut checked) {
                        Err((reason, what)) => {
                            Rejection::new(reason, what, series_text(pairs.iter().copied()), n)
                        }
                        Ok(()) => Rejection::new(
                            RejectReason::InvalidHistogram,
                            e,
                            series_text(pairs.iter().copied()),
                            n,
                        ),
                    };
                    self.rejections.rules.push((ordinal, rejection));
                    return Ok(n);
                }
            }
        }
        self.series.push(RawSeries {
            key,
            samples: samples_start..self.samples.len(),
            histograms: hist_start..self.histograms.len(),
            ordinal,
        });
        Ok(n)
    }
}

impl RawSeries<'_> {
    /// The series' labels, checked against Prometheus' rules and `limits`
    /// (which must be those [`KeyedV1::salt`] was given): sorted, without
    /// empty values. `None` when the series breaks one; the rejection is
    /// recorded in `rejections`, as `decode_limited` words it.
    pub fn labels(&self, limits: &Limits, rejections: &mut Rejections) -> Option<Labels> {
        let s = self;
        let n = s.samples.len() + s.histograms.len();
        let mut pairs = Vec::new();
        label_pairs(&s.key, &mut pairs);
        let mut checked: Vec<(&str, &str)> = Vec::with_capacity(pairs.len());
        if let Err((reason, what)) = check_labels(&pairs, &mut checked) {
            let text = series_text(pairs.iter().copied());
            rejections
                .rules
                .push((s.ordinal, Rejection::new(reason, what, text, n)));
            return None;
        }
        if let Some((reason, what)) = validate::check_labels(&checked, limits) {
            let text = series_text(checked.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
            rejections
                .limits
                .push((s.ordinal, Rejection::new(reason, what, text, n)));
            return None;
        }
        Some(Labels::from_sorted_unchecked(
            checked
                .iter()
                .map(|(n, v)| Label {
                    name: (*n).to_owned(),
                    value: (*v).to_owned(),
                })
                .collect(),
        ))
    }
}

/// The (name, value) pairs of a [`RawSeries::key`], in wire order.
fn label_pairs<'k>(key: &'k [u8], out: &mut Vec<(&'k [u8], &'k [u8])>) {
    let mut r = Reader::new(key, 0);
    // The key holds label fields that `KeyedV1::series` read without error.
    while let Some((_, _, v)) = r
        .next()
        .expect("bug: a keyed series' label bytes do not parse")
    {
        if let Value::Len(l, at) = v {
            out.push(label_v1(l, at).expect("bug: a keyed series' label does not parse"));
        }
    }
}
