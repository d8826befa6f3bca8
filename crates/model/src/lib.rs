//! `model`: the shared vocabulary of the metric path.
//!
//! Label sets ([`Labels`]), label matchers ([`Matcher`]), float samples
//! ([`Sample`]) with Prometheus' staleness marker, native histograms
//! ([`Histogram`], [`FloatHistogram`]), per-metric [`Metadata`], and the unit
//! a decoder hands to storage: a [`WriteBatch`] of [`TimeSeries`].
//!
//! The decoders in `ingest` produce these types, `tsdb` stores them, the
//! query engine reads them back; none of those crates needs to know the
//! others' types.
//!
//! It is *not* a place for I/O, async, JSON or wire formats: no tokio, no
//! serde_json (an architecture invariant checked by `.ci/run`).

pub mod civil;
pub mod histogram;
pub mod labels;
pub mod matcher;
pub mod metadata;
pub mod rng;
pub mod sample;
pub mod series;

pub use histogram::{
    CUSTOM_BUCKETS_SCHEMA, CounterResetHint, FloatHistogram, Histogram, HistogramError, Span,
};
pub use labels::{
    Label, Labels, LabelsBuilder, LabelsError, METRIC_NAME, is_valid_label_name,
    is_valid_metric_name,
};
pub use matcher::{MatchOp, Matcher, MatcherError};
pub use metadata::{Metadata, MetricType};
pub use rng::XorShift64;
pub use sample::{STALE_NAN_BITS, Sample, is_stale_nan, stale_nan};
pub use series::{HistogramSample, HistogramValue, TimeSeries, WriteBatch};
