//! Query results: [`Value`] (scalar, string, instant vector, range vector) and its parts.

use model::{FloatHistogram, Labels, Sample as FloatSample};
use std::sync::Arc;

/// One sample value: a float or a (float) native histogram.
#[derive(Clone, Debug, PartialEq)]
pub enum SampleValue {
    Float(f64),
    Histogram(Arc<FloatHistogram>),
}

impl SampleValue {
    /// The float, or `None` for a histogram.
    pub fn float(&self) -> Option<f64> {
        match self {
            SampleValue::Float(f) => Some(*f),
            SampleValue::Histogram(_) => None,
        }
    }
}

/// One element of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub metric: Labels,
    pub t: i64,
    pub value: SampleValue,
}

/// A series with float and histogram samples, each list in time order. This is both what
/// [`crate::Storage::select`] returns and one element of a range-vector result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub metric: Labels,
    pub floats: Vec<FloatSample>,
    pub histograms: Vec<(i64, Arc<FloatHistogram>)>,
}

/// The result of a query, as Prometheus' API types it (`resultType`).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar {
        t: i64,
        v: f64,
    },
    String {
        t: i64,
        v: String,
    },
    /// An instant vector; in the order Prometheus would return it (only `sort*`, `topk`…
    /// give a meaningful order).
    Vector(Vec<Sample>),
    /// A range vector, series sorted by labels.
    Matrix(Vec<Series>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar { .. } => "scalar",
            Value::String { .. } => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// Prometheus' `Labels.String()`: `{a="b", c="d"}`.
pub fn format_labels(l: &Labels) -> String {
    let parts: Vec<String> = l
        .iter()
        .map(|l| format!("{}={}", l.name, go_quote(&l.value)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// Go's `strconv.Quote` for the characters label values hold in practice.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
