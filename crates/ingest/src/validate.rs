//! Per-project limits on a decoded batch, and the shape of a per-series
//! rejection that every decoder in this crate returns.
//!
//! The rules follow Mimir's documented behaviour: a series that breaks a
//! per-series limit (too many label names, a name or value too long) is
//! removed and reported — naming the limit and the series — while the other
//! series of the request are kept; the server answers 400 with the
//! messages once the rest is stored. A request with more samples than
//! `max_samples_per_request` is refused whole
//! ([`DecodeError::TooManySamples`], 413) before any series is looked at.
//! Metadata whose name, help or unit is longer than `max_metadata_len` is
//! dropped with a rejection (the samples are kept).

use crate::DecodeError;
use model::WriteBatch;
use std::fmt;

/// Limits a project's writes are held to. Defaults are Mimir's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Label names per series, `__name__` included (Mimir: 30).
    pub max_label_names_per_series: usize,
    /// Bytes in one label name (Mimir: 1024).
    pub max_label_name_len: usize,
    /// Bytes in one label value (Mimir: 2048).
    pub max_label_value_len: usize,
    /// Float and histogram samples in one request; 0 = unlimited. The
    /// default (100 000) is 50 times Prometheus' default
    /// `max_samples_per_send` of 2000.
    pub max_samples_per_request: usize,
    /// Bytes in a metadata's metric name, help or unit (Mimir: 1024).
    pub max_metadata_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_label_names_per_series: 30,
            max_label_name_len: 1024,
            max_label_value_len: 2048,
            max_samples_per_request: 100_000,
            max_metadata_len: 1024,
        }
    }
}

/// Why a series (or a metadata entry) was not accepted. The names are
/// stable: use [`RejectReason::as_str`] as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// No `__name__` label, or an empty one.
    MissingMetricName,
    /// `__name__` does not match `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    InvalidMetricName,
    /// A label name does not match `[a-zA-Z_][a-zA-Z0-9_]*`.
    InvalidLabelName,
    /// A label value (or name) is not valid UTF-8.
    InvalidUtf8,
    DuplicateLabelNames,
    LabelsNotSorted,
    /// A native histogram fails Prometheus' validation.
    InvalidHistogram,
    /// OTLP: a data point that cannot be translated (e.g. delta temporality).
    UnsupportedDataPoint,
    MaxLabelNamesPerSeries,
    LabelNameTooLong,
    LabelValueTooLong,
    MetadataTooLong,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MissingMetricName => "missing_metric_name",
            RejectReason::InvalidMetricName => "metric_name_invalid",
            RejectReason::InvalidLabelName => "label_invalid",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::DuplicateLabelNames => "duplicate_label_names",
            RejectReason::LabelsNotSorted => "labels_not_sorted",
            RejectReason::InvalidHistogram => "invalid_native_histogram",
            RejectReason::UnsupportedDataPoint => "unsupported_data_point",
            RejectReason::MaxLabelNamesPerSeries => "max_label_names_per_series",
            RejectReason::LabelNameTooLong => "label_name_too_long",
            RejectReason::LabelValueTooLong => "label_value_too_long",
            RejectReason::MetadataTooLong => "metadata_too_long",
        }
    }
}

/// One series (or metadata entry) that was left out of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    /// The series as text (`name{a="b", …}`, long values shortened), or the
    /// metric family name for metadata.
    pub series: String,
    /// What is wrong and which limit or rule, ending with the series.
    pub message: String,
    /// Float and histogram samples dropped with it.
    pub samples: usize,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Rejection {
    pub(crate) fn new(
        reason: RejectReason,
        what: impl fmt::Display,
        series: String,
        samples: usize,
    ) -> Self {
        Rejection {
            reason,
            message: format!("{what}: {series}"),
            series,
            samples,
        }
    }
}

/// Longest label value shown in a rejection message.
const SHOW_VALUE: usize = 120;

/// Formats a label list as Prometheus text, in the order given, invalid
/// UTF-8 replaced, long values shortened (`…(5000 bytes)`), so a message
/// about a 1 MB label is not itself 1 MB.
pub(crate) fn series_text<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> String {
    let mut out = String::new();
    let short = |b: &[u8]| -> String {
        let s = String::from_utf8_lossy(b);
        if s.len() <= SHOW_VALUE {
            s.into_owned()
        } else {
            let mut cut = SHOW_VALUE;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}…({} bytes)", &s[..cut], b.len())
        }
    };
    if let Some((_, v)) = pairs
        .clone()
        .find(|(n, _)| *n == model::METRIC_NAME.as_bytes())
    {
        out.push_str(&short(v));
    }
    out.push('{');
    let mut first = true;
    for (n, v) in pairs.filter(|(n, _)| *n != model::METRIC_NAME.as_bytes()) {
        if !first {
            out.push_str(", ");
        }
        first = false;
        out.push_str(&short(n));
        out.push_str("=\"");
        for c in short(v).chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

fn labels_text(l: &model::Labels) -> String {
    series_text(l.iter().map(|l| (l.name.as_bytes(), l.value.as_bytes())))
}

/// Applies `limits` to `batch`: removes each series that breaks a
/// per-series limit and each over-long metadata entry, and returns what was
/// removed. Refuses the whole request (nothing removed) when it has more
/// samples than `max_samples_per_request`.
pub fn apply(batch: &mut WriteBatch, limits: &Limits) -> Result<Vec<Rejection>, DecodeError> {
    let count = batch.float_samples() + batch.histogram_samples();
    if limits.max_samples_per_request > 0 && count > limits.max_samples_per_request {
        return Err(DecodeError::TooManySamples {
            count,
            limit: limits.max_samples_per_request,
        });
    }
    let mut rejected = Vec::new();
    batch
        .series
        .retain(|s| match check_series(&s.labels, limits) {
            None => true,
            Some((reason, what)) => {
                rejected.push(Rejection::new(
                    reason,
                    what,
                    labels_text(&s.labels),
                    s.samples.len() + s.histograms.len(),
                ));
                false
            }
        });
    apply_metadata(&mut batch.metadata, limits, &mut rejected);
    Ok(rejected)
}

/// Drops metadata entries whose name, help or unit is longer than
/// `max_metadata_len`, recording a rejection for each.
pub(crate) fn apply_metadata(
    metadata: &mut Vec<(String, model::Metadata)>,
    limits: &Limits,
    rejected: &mut Vec<Rejection>,
) {
    let max = limits.max_metadata_len;
    metadata.retain(|(name, m)| {
        let too_long = [("metric name", name), ("help", &m.help), ("unit", &m.unit)]
            .into_iter()
            .find(|(_, s)| s.len() > max);
        match too_long {
            None => true,
            Some((field, s)) => {
                let shown = series_text(std::iter::once((
                    model::METRIC_NAME.as_bytes(),
                    name.as_bytes(),
                )));
                rejected.push(Rejection {
                    reason: RejectReason::MetadataTooLong,
                    message: format!(
                        "metadata {field} is {} bytes, limit max_metadata_len={max}: {shown}",
                        s.len()
                    ),
                    series: shown,
                    samples: 0,
                });
                false
            }
        }
    });
}

fn check_series(labels: &model::Labels, limits: &Limits) -> Option<(RejectReason, String)> {
    check_pairs(
        labels.len(),
        labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
        limits,
    )
}

/// The per-series limits over borrowed labels, so a decoder can apply them
/// before it allocates anything for the series. Returns the broken limit
/// and the rule as text.
pub fn check_labels<'a>(
    labels: &[(&'a str, &'a str)],
    limits: &Limits,
) -> Option<(RejectReason, String)> {
    check_pairs(labels.len(), labels.iter().copied(), limits)
}

fn check_pairs<'a>(
    count: usize,
    labels: impl Iterator<Item = (&'a str, &'a str)>,
    limits: &Limits,
) -> Option<(RejectReason, String)> {
    if count > limits.max_label_names_per_series {
        return Some((
            RejectReason::MaxLabelNamesPerSeries,
            format!(
                "series has {count} label names, limit max_label_names_per_series={}",
                limits.max_label_names_per_series
            ),
        ));
    }
    for (name, value) in labels {
        if name.len() > limits.max_label_name_len {
            return Some((
                RejectReason::LabelNameTooLong,
                format!(
                    "label name is {} bytes, limit max_label_name_len={}",
                    name.len(),
                    limits.max_label_name_len
                ),
            ));
        }
        if value.len() > limits.max_label_value_len {
            return Some((
                RejectReason::LabelValueTooLong,
                format!(
                    "value of label {name:?} is {} bytes, limit max_label_value_len={}",
                    value.len(),
                    limits.max_label_value_len
                ),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Labels, Metadata, Sample, TimeSeries};

    fn series(pairs: &[(&str, &str)]) -> TimeSeries {
        TimeSeries {
            labels: Labels::from_pairs(pairs.iter().copied()),
            samples: vec![Sample { t: 1, v: 1.0 }],
            ..Default::default()
        }
    }

    fn check(pairs: &[(&str, &str)], limits: &Limits, expected: Option<&str>) {
        let mut b = WriteBatch {
            series: vec![series(&[("__name__", "ok")]), series(pairs)],
            ..Default::default()
        };
        let r = apply(&mut b, limits).unwrap();
        match expected {
            None => {
                assert!(r.is_empty(), "{r:?}");
                assert_eq!(b.series.len(), 2);
            }
            Some(msg) => {
                assert_eq!(r.len(), 1, "{r:?}");
                assert_eq!(r[0].message, msg);
                assert_eq!(r[0].samples, 1);
                assert_eq!(b.series.len(), 1, "the valid series is kept");
                assert_eq!(b.series[0].labels.metric_name(), Some("ok"));
            }
        }
    }

    #[test]
    fn label_count() {
        let mut pairs: Vec<(String, String)> = (0..30)
            .map(|i| (format!("l{i:02}"), "v".to_string()))
            .collect();
        pairs.push(("__name__".into(), "up".into()));
        let p: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let msg = format!(
            "series has 31 label names, limit max_label_names_per_series=30: up{{{}}}",
            (0..30)
                .map(|i| format!("l{i:02}=\"v\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        check(&p, &Limits::default(), Some(&msg));
        check(&p[1..], &Limits::default(), None);
    }

    #[test]
    fn name_and_value_length() {
        let lim = Limits {
            max_label_name_len: 8, // `__name__` counts too
            max_label_value_len: 8,
            ..Limits::default()
        };
        check(&[("__name__", "up"), ("abcdefgh", "12345678")], &lim, None);
        check(
            &[("__name__", "up"), ("abcdefghi", "1")],
            &lim,
            Some(r#"label name is 9 bytes, limit max_label_name_len=8: up{abcdefghi="1"}"#),
        );
        check(
            &[("__name__", "up"), ("a", "123456789")],
            &lim,
            Some(
                r#"value of label "a" is 9 bytes, limit max_label_value_len=8: up{a="123456789"}"#,
            ),
        );
        // the metric name is a label value too
        check(
            &[("__name__", "way_too_long")],
            &lim,
            Some(
                r#"value of label "__name__" is 12 bytes, limit max_label_value_len=8: way_too_long{}"#,
            ),
        );
    }

    #[test]
    fn huge_values_are_shortened_in_messages() {
        let big = "x".repeat(5000);
        let mut b = WriteBatch {
            series: vec![series(&[("__name__", "up"), ("a", &big)])],
            ..Default::default()
        };
        let r = apply(&mut b, &Limits::default()).unwrap();
        assert!(r[0].message.len() < 300, "{}", r[0].message);
        assert!(
            r[0].message.ends_with("…(5000 bytes)\"}"),
            "{}",
            r[0].message
        );
    }

    #[test]
    fn too_many_samples_refuses_the_request() {
        let mut b = WriteBatch {
            series: vec![series(&[("__name__", "a")]), series(&[("__name__", "b")])],
            ..Default::default()
        };
        let lim = Limits {
            max_samples_per_request: 1,
            ..Limits::default()
        };
        let e = apply(&mut b, &lim).unwrap_err();
        assert_eq!(e, DecodeError::TooManySamples { count: 2, limit: 1 });
        assert_eq!(e.http_status(), 413);
        assert!(e.to_string().contains("max_samples_per_request=1"), "{e}");
        assert_eq!(b.series.len(), 2, "nothing removed");
        let unlimited = Limits {
            max_samples_per_request: 0,
            ..Limits::default()
        };
        assert!(apply(&mut b, &unlimited).unwrap().is_empty());
    }

    #[test]
    fn long_metadata_is_dropped() {
        let mut b = WriteBatch {
            metadata: vec![
                (
                    "up".into(),
                    Metadata {
                        help: "h".repeat(2000),
                        ..Default::default()
                    },
                ),
                ("ok".into(), Metadata::default()),
            ],
            ..Default::default()
        };
        let r = apply(&mut b, &Limits::default()).unwrap();
        assert_eq!(
            r[0].message,
            "metadata help is 2000 bytes, limit max_metadata_len=1024: up{}"
        );
        assert_eq!(r[0].reason, RejectReason::MetadataTooLong);
        assert_eq!(b.metadata.len(), 1);
    }
}
