//! What a decoder hands to storage: a [`WriteBatch`] of [`TimeSeries`].

use crate::{FloatHistogram, Histogram, Labels, Metadata, Sample};

/// An integer or a float native histogram.
#[derive(Clone, Debug, PartialEq)]
pub enum HistogramValue {
    Int(Histogram),
    Float(FloatHistogram),
}

#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSample {
    pub t: i64,
    pub h: HistogramValue,
}

/// One series and its new samples, each list in the order received.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TimeSeries {
    pub labels: Labels,
    pub samples: Vec<Sample>,
    pub histograms: Vec<HistogramSample>,
    /// Remote write 2.0 / OTLP start time of a cumulative series, in ms (0 = unknown).
    pub created_timestamp: i64,
}

/// One write request's content, decoded and validated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteBatch {
    pub series: Vec<TimeSeries>,
    /// Metadata by metric family name.
    pub metadata: Vec<(String, Metadata)>,
}

impl WriteBatch {
    pub fn float_samples(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }

    pub fn histogram_samples(&self) -> usize {
        self.series.iter().map(|s| s.histograms.len()).sum()
    }
}
