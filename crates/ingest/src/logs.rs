//! The log path's decoded shape and Loki's per-stream and per-entry checks.
//!
//! Decoders ([`crate::loki`], [`crate::otlp_logs`]) turn a request body into
//! [`LogStream`]s; [`validate`] then applies a project's [`LogLimits`] the
//! way Loki's distributor does: a stream whose labels break a rule is left
//! out whole, an entry whose line is too long or whose timestamp is too old
//! or too far in the future is left out alone, and everything else is kept.
//! Each left-out stream or entry becomes a [`LogRejection`] naming the limit
//! (Loki's reason names, e.g. `line_too_long`), so the server can store the
//! rest and answer 400 with an example. Out-of-order entries are accepted
//! (Loki ≥ 2.4).
//!
//! Labels follow Prometheus' legacy rules (`[a-zA-Z_][a-zA-Z0-9_]*`); labels
//! with an empty value are dropped (as in Prometheus, an empty value means
//! "no such label"), and a stream needs at least one label left.

use model::Labels;
use std::fmt::Write as _;

/// One log entry as decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Nanoseconds since the Unix epoch.
    pub ts: i64,
    pub line: String,
    /// Structured metadata, in the order sent.
    pub metadata: Vec<(String, String)>,
}

/// A stream's label pairs as sent (not yet validated) and its entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogStream {
    /// The pairs in the order sent (duplicates and invalid names possible
    /// until [`validate`] checked them).
    pub labels: Vec<(String, String)>,
    pub entries: Vec<LogEntry>,
}

/// A validated stream: its sorted label set and its accepted entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidStream {
    pub labels: Labels,
    pub entries: Vec<LogEntry>,
}

/// Limits of a project's log writes. Defaults are Loki's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLimits {
    /// Label names per stream (Loki `max_label_names_per_series`: 15).
    pub max_label_names_per_stream: usize,
    /// Bytes in a label name (Loki `max_label_name_length`: 1024).
    pub max_label_name_length: usize,
    /// Bytes in a label value (Loki `max_label_value_length`: 2048).
    pub max_label_value_length: usize,
    /// Bytes in a line (Loki `max_line_size`: 256 KiB); 0 = unlimited.
    pub max_line_size: usize,
    /// Entries older than this before "now" are refused (Loki
    /// `reject_old_samples_max_age`: 168h); `None` = accept any age.
    pub reject_old_samples_max_age_ns: Option<i64>,
    /// Entries further than this after "now" are refused (Loki
    /// `creation_grace_period`: 10m).
    pub creation_grace_period_ns: i64,
}

const HOUR_NS: i64 = 3_600_000_000_000;

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_label_names_per_stream: 15,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            max_line_size: 256 << 10,
            reject_old_samples_max_age_ns: Some(168 * HOUR_NS),
            creation_grace_period_ns: HOUR_NS / 6,
        }
    }
}

/// Why a stream or an entry was left out. [`LogRejectReason::as_str`] is
/// Loki's name for it (`loki_discarded_samples_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogRejectReason {
    /// No label left (or none sent).
    MissingLabels,
    /// A label name breaks `[a-zA-Z_][a-zA-Z0-9_]*`, or appears twice.
    InvalidLabels,
    MaxLabelNamesPerStream,
    LabelNameTooLong,
    LabelValueTooLong,
    LineTooLong,
    /// Older than `reject_old_samples_max_age`.
    TooOld,
    /// Newer than now + `creation_grace_period`.
    TooFarInFuture,
}

impl LogRejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LogRejectReason::MissingLabels => "missing_labels",
            LogRejectReason::InvalidLabels => "invalid_labels",
            LogRejectReason::MaxLabelNamesPerStream => "max_label_names_per_series",
            LogRejectReason::LabelNameTooLong => "label_name_too_long",
            LogRejectReason::LabelValueTooLong => "label_value_too_long",
            LogRejectReason::LineTooLong => "line_too_long",
            LogRejectReason::TooOld => "greater_than_max_sample_age",
            LogRejectReason::TooFarInFuture => "too_far_in_future",
        }
    }
}

/// A stream or entries left out, with a message naming the limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRejection {
    pub reason: LogRejectReason,
    /// Entries dropped.
    pub entries: usize,
    /// Bytes of their lines.
    pub bytes: usize,
    pub message: String,
}

/// The outcome of [`validate`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validated {
    /// Streams with at least one accepted entry, in request order; streams
    /// sent twice with the same label set are merged.
    pub streams: Vec<ValidStream>,
    /// Per stream or per (stream, reason): what was left out. Kept short:
    /// one rejection per stream and reason.
    pub rejected: Vec<LogRejection>,
}

impl Validated {
    pub fn accepted_entries(&self) -> usize {
        self.streams.iter().map(|s| s.entries.len()).sum()
    }

    pub fn accepted_bytes(&self) -> usize {
        self.streams
            .iter()
            .flat_map(|s| &s.entries)
            .map(entry_bytes)
            .sum()
    }

    pub fn rejected_entries(&self) -> usize {
        self.rejected.iter().map(|r| r.entries).sum()
    }
}

/// Bytes an entry counts for in rate limits: its line plus its metadata
/// names and values (as Loki counts structured metadata).
pub fn entry_bytes(e: &LogEntry) -> usize {
    e.line.len()
        + e.metadata
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum::<usize>()
}

/// Longest label value shown in a message.
const SHOW: usize = 100;

/// `{a="b", c="d"}` of the pairs as sent, long values shortened.
pub fn pairs_text(pairs: &[(String, String)]) -> String {
    let mut s = String::from("{");
    for (i, (n, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{}={:?}", shorten(n), shorten(v));
    }
    s.push('}');
    s
}

/// `s`, or its first 100 bytes and its length when longer.
pub(crate) fn shorten(s: &str) -> String {
    if s.len() <= SHOW {
        return s.to_string();
    }
    let mut cut = SHOW;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…({} bytes)", &s[..cut], s.len())
}

/// Checks a stream's labels; the label set, or why it is refused.
pub fn check_labels(
    pairs: &[(String, String)],
    limits: &LogLimits,
) -> Result<Labels, (LogRejectReason, String)> {
    let kept: Vec<&(String, String)> = pairs.iter().filter(|(_, v)| !v.is_empty()).collect();
    if kept.is_empty() {
        return Err((
            LogRejectReason::MissingLabels,
            "stream has no labels (at least one label with a non-empty value is required)".into(),
        ));
    }
    if kept.len() > limits.max_label_names_per_stream {
        return Err((
            LogRejectReason::MaxLabelNamesPerStream,
            format!(
                "stream has {} label names, limit max_label_names_per_stream={}",
                kept.len(),
                limits.max_label_names_per_stream
            ),
        ));
    }
    for (n, v) in &kept {
        if !model::is_valid_label_name(n) {
            return Err((
                LogRejectReason::InvalidLabels,
                format!(
                    "invalid label name {:?} (must match [a-zA-Z_][a-zA-Z0-9_]*)",
                    shorten(n)
                ),
            ));
        }
        if n.len() > limits.max_label_name_length {
            return Err((
                LogRejectReason::LabelNameTooLong,
                format!(
                    "label name of {} bytes, limit max_label_name_length={}",
                    n.len(),
                    limits.max_label_name_length
                ),
            ));
        }
        if v.len() > limits.max_label_value_length {
            return Err((
                LogRejectReason::LabelValueTooLong,
                format!(
                    "value of label {n} has {} bytes, limit max_label_value_length={}",
                    v.len(),
                    limits.max_label_value_length
                ),
            ));
        }
    }
    let mut sorted: Vec<(&str, &str)> =
        kept.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    if let Some(w) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err((
            LogRejectReason::InvalidLabels,
            format!("duplicate label name {:?}", w[0].0),
        ));
    }
    Ok(Labels::from_pairs(sorted))
}

/// Applies `limits` at time `now_ns` (unix ns): see the module doc.
pub fn validate(streams: Vec<LogStream>, limits: &LogLimits, now_ns: i64) -> Validated {
    let mut out = Validated::default();
    let mut index: std::collections::HashMap<Labels, usize> = Default::default();
    let oldest = limits
        .reject_old_samples_max_age_ns
        .map_or(i64::MIN, |age| now_ns.saturating_sub(age));
    let newest = now_ns.saturating_add(limits.creation_grace_period_ns);
    for s in streams {
        let labels = match check_labels(&s.labels, limits) {
            Ok(l) => l,
            Err((reason, what)) => {
                out.rejected.push(LogRejection {
                    reason,
                    entries: s.entries.len(),
                    bytes: s.entries.iter().map(|e| e.line.len()).sum(),
                    message: format!("{what}: stream {}", pairs_text(&s.labels)),
                });
                continue;
            }
        };
        // (reason, entries, bytes, first offending entry's detail)
        let mut dropped: Vec<(LogRejectReason, usize, usize, String)> = Vec::new();
        let mut drop =
            |reason: LogRejectReason, e: &LogEntry, detail: &dyn Fn() -> String| match dropped
                .iter_mut()
                .find(|d| d.0 == reason)
            {
                Some(d) => {
                    d.1 += 1;
                    d.2 += e.line.len();
                }
                None => dropped.push((reason, 1, e.line.len(), detail())),
            };
        let mut kept = Vec::with_capacity(s.entries.len());
        for e in s.entries {
            if limits.max_line_size > 0 && e.line.len() > limits.max_line_size {
                drop(LogRejectReason::LineTooLong, &e, &|| {
                    format!(
                        "line of {} bytes at {}, limit max_line_size={}",
                        e.line.len(),
                        e.ts,
                        limits.max_line_size
                    )
                });
            } else if e.ts < oldest {
                drop(LogRejectReason::TooOld, &e, &|| {
                    format!(
                        "entry at {} ns is older than reject_old_samples_max_age={}h",
                        e.ts,
                        limits.reject_old_samples_max_age_ns.unwrap_or(0) / HOUR_NS
                    )
                });
            } else if e.ts > newest {
                drop(LogRejectReason::TooFarInFuture, &e, &|| {
                    format!(
                        "entry at {} ns is more than creation_grace_period={}s in the future",
                        e.ts,
                        limits.creation_grace_period_ns / 1_000_000_000
                    )
                });
            } else {
                kept.push(e);
            }
        }
        for (reason, entries, bytes, detail) in dropped {
            out.rejected.push(LogRejection {
                reason,
                entries,
                bytes,
                message: format!("{detail}: stream {labels}"),
            });
        }
        if kept.is_empty() {
            continue;
        }
        match index.get(&labels) {
            Some(&i) => out.streams[i].entries.extend(kept),
            None => {
                index.insert(labels.clone(), out.streams.len());
                out.streams.push(ValidStream {
                    labels,
                    entries: kept,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000_000_000;

    fn stream(labels: &[(&str, &str)], ts: &[i64]) -> LogStream {
        LogStream {
            labels: labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            entries: ts
                .iter()
                .map(|&t| LogEntry {
                    ts: t,
                    line: format!("line at {t}"),
                    metadata: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn valid_streams_pass_sorted_and_merged_out_of_order_kept() {
        let v = validate(
            vec![
                stream(
                    &[("job", "a"), ("app", "x"), ("empty", "")],
                    &[NOW, NOW - 5],
                ),
                stream(&[("app", "x"), ("job", "a")], &[NOW - 10]),
            ],
            &LogLimits::default(),
            NOW,
        );
        assert!(v.rejected.is_empty(), "{:?}", v.rejected);
        assert_eq!(v.streams.len(), 1);
        assert_eq!(v.streams[0].labels.to_string(), r#"{app="x", job="a"}"#);
        let ts: Vec<i64> = v.streams[0].entries.iter().map(|e| e.ts).collect();
        assert_eq!(ts, vec![NOW, NOW - 5, NOW - 10]);
    }

    #[test]
    fn label_rules() {
        let l = LogLimits {
            max_label_names_per_stream: 2,
            max_label_name_length: 5,
            max_label_value_length: 4,
            ..LogLimits::default()
        };
        let cases: Vec<(Vec<(&str, &str)>, LogRejectReason)> = vec![
            (vec![], LogRejectReason::MissingLabels),
            (vec![("a", "")], LogRejectReason::MissingLabels),
            (
                vec![("a", "1"), ("b", "2"), ("c", "3")],
                LogRejectReason::MaxLabelNamesPerStream,
            ),
            (vec![("a.b", "1")], LogRejectReason::InvalidLabels),
            (vec![("1a", "1")], LogRejectReason::InvalidLabels),
            (vec![("a", "1"), ("a", "2")], LogRejectReason::InvalidLabels),
            (vec![("abcdef", "1")], LogRejectReason::LabelNameTooLong),
            (vec![("a", "12345")], LogRejectReason::LabelValueTooLong),
        ];
        for (labels, reason) in cases {
            let v = validate(vec![stream(&labels, &[NOW, NOW])], &l, NOW);
            assert!(v.streams.is_empty());
            assert_eq!(v.rejected.len(), 1, "{labels:?}");
            assert_eq!(v.rejected[0].reason, reason, "{labels:?}");
            assert_eq!(v.rejected[0].entries, 2);
            let limit_named = match reason {
                LogRejectReason::MaxLabelNamesPerStream => "max_label_names_per_stream=2",
                LogRejectReason::LabelNameTooLong => "max_label_name_length=5",
                LogRejectReason::LabelValueTooLong => "max_label_value_length=4",
                _ => "stream {",
            };
            assert!(
                v.rejected[0].message.contains(limit_named),
                "{}",
                v.rejected[0].message
            );
        }
    }

    #[test]
    fn entry_rules_are_per_entry() {
        let l = LogLimits {
            max_line_size: 12,
            ..LogLimits::default()
        };
        let mut s = stream(
            &[("job", "a")],
            &[
                NOW,                           // ok ("line at …" is long: see below)
                NOW - 169 * HOUR_NS,           // too old
                NOW - 167 * HOUR_NS,           // ok
                NOW + 11 * 60 * 1_000_000_000, // too far ahead
                NOW + 9 * 60 * 1_000_000_000,  // ok
                NOW - 170 * HOUR_NS,           // too old
            ],
        );
        for e in &mut s.entries {
            e.line = "short".into();
        }
        s.entries[0].line = "x".repeat(13); // too long
        let v = validate(vec![s], &l, NOW);
        assert_eq!(v.streams.len(), 1);
        assert_eq!(v.streams[0].entries.len(), 2);
        let r: Vec<(&str, usize)> = v
            .rejected
            .iter()
            .map(|r| (r.reason.as_str(), r.entries))
            .collect();
        assert_eq!(
            r,
            vec![
                ("line_too_long", 1),
                ("greater_than_max_sample_age", 2),
                ("too_far_in_future", 1)
            ]
        );
        assert!(v.rejected[0].message.contains("max_line_size=12"));
        assert!(
            v.rejected[1]
                .message
                .contains("reject_old_samples_max_age=168h")
        );
        assert!(v.rejected[2].message.contains("creation_grace_period=600s"));
        assert!(v.rejected[2].message.ends_with(r#"stream {job="a"}"#));
        assert_eq!(v.rejected_entries(), 4);
        // no age limit
        let l = LogLimits {
            reject_old_samples_max_age_ns: None,
            ..LogLimits::default()
        };
        let v = validate(vec![stream(&[("job", "a")], &[0])], &l, NOW);
        assert_eq!(v.accepted_entries(), 1);
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let big = "v".repeat(5000);
        let v = validate(
            vec![stream(&[("a", &big), ("b.c", "1")], &[NOW])],
            &LogLimits {
                max_label_value_length: 10_000,
                ..LogLimits::default()
            },
            NOW,
        );
        assert!(v.rejected[0].message.contains("…(5000 bytes)"));
        assert!(v.rejected[0].message.len() < 400);
    }
}
