//! Native histograms, as Prometheus models them.
//!
//! Buckets are laid out by *spans*: each span skips `offset` bucket indexes
//! after the previous span's end (the first span's offset is the index of
//! its first bucket) and then covers `length` consecutive buckets. Schemas
//! −4…8 are exponential (bucket `i` has upper bound `2^(i·2^-schema)`);
//! schema −53 means custom bucket bounds listed in `custom_values`.
//!
//! [`Histogram`] has integer counts stored as deltas between consecutive
//! buckets (the wire form of remote write and of Prometheus' chunks);
//! [`FloatHistogram`] has absolute float counts (what queries compute with).

/// Custom-bucket schema (classic buckets carried as a native histogram).
pub const CUSTOM_BUCKETS_SCHEMA: i32 = -53;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CounterResetHint {
    /// The producer does not know; storage decides from the previous sample.
    #[default]
    Unknown,
    CounterReset,
    NotCounterReset,
    /// A gauge histogram: no counter semantics at all.
    Gauge,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    pub offset: i32,
    pub length: u32,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub counter_reset_hint: CounterResetHint,
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: u64,
    pub count: u64,
    pub sum: f64,
    pub positive_spans: Vec<Span>,
    /// Deltas: the first is an absolute count, each next is the difference
    /// to the previous bucket.
    pub positive_buckets: Vec<i64>,
    pub negative_spans: Vec<Span>,
    pub negative_buckets: Vec<i64>,
    /// Upper bounds of the custom buckets (schema −53 only).
    pub custom_values: Vec<f64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct FloatHistogram {
    pub counter_reset_hint: CounterResetHint,
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: f64,
    pub count: f64,
    pub sum: f64,
    pub positive_spans: Vec<Span>,
    /// Absolute counts.
    pub positive_buckets: Vec<f64>,
    pub negative_spans: Vec<Span>,
    pub negative_buckets: Vec<f64>,
    pub custom_values: Vec<f64>,
}

/// Why a histogram is malformed; the messages follow Prometheus'.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HistogramError {
    #[error("histogram schema {0} is out of range (−4…8, or −53 for custom buckets)")]
    Schema(i32),
    #[error("{side} side: spans need {spans} buckets, have {buckets} buckets")]
    SpansBucketsMismatch {
        side: &'static str,
        spans: usize,
        buckets: usize,
    },
    #[error("{side} side: span number {index} has a negative offset {offset}")]
    NegativeOffset {
        side: &'static str,
        index: usize,
        offset: i32,
    },
    #[error("{side} side: bucket number {index} has observation count of {count}")]
    NegativeBucket {
        side: &'static str,
        index: usize,
        count: f64,
    },
    #[error("{buckets} observations found in buckets, but the Count field is {count}")]
    CountMismatch { buckets: f64, count: f64 },
    #[error("{buckets} observations found in buckets, but the Count field is only {count}")]
    CountNotBigEnough { buckets: f64, count: f64 },
    #[error("custom buckets: {0}")]
    CustomBuckets(&'static str),
}

fn check_spans(side: &'static str, spans: &[Span], buckets: usize) -> Result<(), HistogramError> {
    let mut need = 0usize;
    for (i, s) in spans.iter().enumerate() {
        if i > 0 && s.offset < 0 {
            return Err(HistogramError::NegativeOffset {
                side,
                index: i,
                offset: s.offset,
            });
        }
        need += s.length as usize;
    }
    if need != buckets {
        return Err(HistogramError::SpansBucketsMismatch {
            side,
            spans: need,
            buckets,
        });
    }
    Ok(())
}

fn check_schema(schema: i32, custom: &[f64], negative_spans: usize) -> Result<(), HistogramError> {
    if schema == CUSTOM_BUCKETS_SCHEMA {
        if negative_spans > 0 {
            return Err(HistogramError::CustomBuckets(
                "a custom-bucket histogram has no negative buckets",
            ));
        }
        if custom.windows(2).any(|w| w[0] >= w[1]) {
            return Err(HistogramError::CustomBuckets(
                "bounds must be strictly increasing",
            ));
        }
        return Ok(());
    }
    if !(-4..=8).contains(&schema) {
        return Err(HistogramError::Schema(schema));
    }
    Ok(())
}

fn check_count(bucket_total: f64, count: f64, sum: f64) -> Result<(), HistogramError> {
    if sum.is_nan() {
        if bucket_total > count {
            return Err(HistogramError::CountNotBigEnough {
                buckets: bucket_total,
                count,
            });
        }
    } else if bucket_total != count {
        return Err(HistogramError::CountMismatch {
            buckets: bucket_total,
            count,
        });
    }
    Ok(())
}

impl Histogram {
    /// Prometheus' validation: schema, spans against buckets, no negative
    /// bucket, and the bucket total against `count`.
    pub fn validate(&self) -> Result<(), HistogramError> {
        check_schema(self.schema, &self.custom_values, self.negative_spans.len())?;
        check_spans(
            "negative",
            &self.negative_spans,
            self.negative_buckets.len(),
        )?;
        check_spans(
            "positive",
            &self.positive_spans,
            self.positive_buckets.len(),
        )?;
        let mut total = self.zero_count as f64;
        for (side, deltas) in [
            ("negative", &self.negative_buckets),
            ("positive", &self.positive_buckets),
        ] {
            let mut cur: i64 = 0;
            for (i, d) in deltas.iter().enumerate() {
                cur = cur.wrapping_add(*d);
                if cur < 0 {
                    return Err(HistogramError::NegativeBucket {
                        side,
                        index: i,
                        count: cur as f64,
                    });
                }
                total += cur as f64;
            }
        }
        check_count(total, self.count as f64, self.sum)
    }

    /// Absolute float counts.
    pub fn to_float(&self) -> FloatHistogram {
        let abs = |d: &[i64]| {
            let mut cur = 0i64;
            d.iter()
                .map(|x| {
                    cur = cur.wrapping_add(*x);
                    cur as f64
                })
                .collect()
        };
        FloatHistogram {
            counter_reset_hint: self.counter_reset_hint,
            schema: self.schema,
            zero_threshold: self.zero_threshold,
            zero_count: self.zero_count as f64,
            count: self.count as f64,
            sum: self.sum,
            positive_spans: self.positive_spans.clone(),
            positive_buckets: abs(&self.positive_buckets),
            negative_spans: self.negative_spans.clone(),
            negative_buckets: abs(&self.negative_buckets),
            custom_values: self.custom_values.clone(),
        }
    }
}

impl FloatHistogram {
    pub fn validate(&self) -> Result<(), HistogramError> {
        check_schema(self.schema, &self.custom_values, self.negative_spans.len())?;
        check_spans(
            "negative",
            &self.negative_spans,
            self.negative_buckets.len(),
        )?;
        check_spans(
            "positive",
            &self.positive_spans,
            self.positive_buckets.len(),
        )?;
        let mut total = self.zero_count;
        for (side, b) in [
            ("negative", &self.negative_buckets),
            ("positive", &self.positive_buckets),
        ] {
            for (i, c) in b.iter().enumerate() {
                if *c < 0.0 {
                    return Err(HistogramError::NegativeBucket {
                        side,
                        index: i,
                        count: *c,
                    });
                }
                total += c;
            }
        }
        check_count(total, self.count, self.sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h() -> Histogram {
        Histogram {
            schema: 0,
            zero_count: 1,
            count: 5,
            sum: 10.0,
            positive_spans: vec![
                Span {
                    offset: 0,
                    length: 2,
                },
                Span {
                    offset: 1,
                    length: 1,
                },
            ],
            positive_buckets: vec![1, 1, -1], // 1, 2, 1
            ..Default::default()
        }
    }

    #[test]
    fn valid_and_to_float() {
        h().validate().unwrap();
        let f = h().to_float();
        assert_eq!(f.positive_buckets, vec![1.0, 2.0, 1.0]);
        f.validate().unwrap();
    }

    #[test]
    fn invalid_cases_name_the_problem() {
        let mut x = h();
        x.count = 6;
        assert!(matches!(
            x.validate(),
            Err(HistogramError::CountMismatch { .. })
        ));
        x.sum = f64::NAN; // a NaN sum only needs count >= buckets
        x.validate().unwrap();
        let mut x = h();
        x.positive_buckets.push(0);
        assert!(matches!(
            x.validate(),
            Err(HistogramError::SpansBucketsMismatch { .. })
        ));
        let mut x = h();
        x.positive_buckets = vec![1, -2, 3];
        assert!(matches!(
            x.validate(),
            Err(HistogramError::NegativeBucket { .. })
        ));
        let mut x = h();
        x.schema = 9;
        assert_eq!(x.validate(), Err(HistogramError::Schema(9)));
    }
}
