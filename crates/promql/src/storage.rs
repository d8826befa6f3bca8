//! The read trait the engine evaluates over, the sample budget that bounds a query's
//! memory, and an in-memory implementation (for tests and the promqltest runner).

use crate::{Error, Series};
use model::{CounterResetHint, FloatHistogram, Labels, Matcher, Sample as FloatSample};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What the engine reads. The contract:
///
/// * `select_each` hands `f` every series whose labels satisfy **all** `matchers` and that
///   has at least one sample in `[mint_ms, maxt_ms]` (both bounds **inclusive**), with
///   only the samples inside those bounds, in time order, stale markers included, one
///   series at a time (so a query need not hold every selected series at once), together
///   with how many series this call delivers at most (a size hint for the caller);
/// * series come sorted by label set and each label set appears once;
/// * every loaded sample is charged with [`SampleBudget::take`] while loading, and the error
///   it returns is passed on at once, so a query can never hold more than its budget;
///   an error returned by `f` ends the call with that error.
pub trait Storage {
    fn select_each(
        &self,
        matchers: &[Matcher],
        mint_ms: i64,
        maxt_ms: i64,
        budget: &Arc<SampleBudget>,
        f: &mut dyn FnMut(usize, Series) -> Result<(), Error>,
    ) -> Result<(), Error>;

    /// Every series `select_each` would deliver, collected.
    fn select(
        &self,
        matchers: &[Matcher],
        mint_ms: i64,
        maxt_ms: i64,
        budget: &Arc<SampleBudget>,
    ) -> Result<Vec<Series>, Error> {
        let mut out = Vec::new();
        self.select_each(matchers, mint_ms, maxt_ms, budget, &mut |n, s| {
            out.reserve(n.saturating_sub(out.len()));
            out.push(s);
            Ok(())
        })?;
        Ok(out)
    }
}

/// How many more samples a query may load (Prometheus' `query.max-samples`).
#[derive(Debug)]
pub struct SampleBudget {
    max: usize,
    used: AtomicUsize,
}

impl SampleBudget {
    pub fn new(max: usize) -> Self {
        SampleBudget {
            max,
            used: AtomicUsize::new(0),
        }
    }

    /// Charges `n` samples; fails with [`Error::TooManySamples`] past the limit.
    pub fn take(&self, n: usize) -> Result<(), Error> {
        let used = self.used.fetch_add(n, Ordering::Relaxed) + n;
        if used > self.max {
            return Err(Error::TooManySamples {
                max_samples: self.max,
            });
        }
        Ok(())
    }

    /// Gives back `n` samples once they are no longer held.
    pub fn release(&self, n: usize) {
        self.used.fetch_sub(n.min(self.used()), Ordering::Relaxed);
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// One stored series: float samples and histogram samples, each in time order.
type Stored = (Vec<FloatSample>, Vec<(i64, Arc<FloatHistogram>)>);

/// Series kept in memory, sorted by labels.
#[derive(Debug, Default, Clone)]
pub struct MemStorage {
    series: BTreeMap<Labels, Stored>,
}

impl MemStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a float sample (a later sample at the same time replaces the earlier one).
    pub fn add_float(&mut self, labels: Labels, t: i64, v: f64) {
        let floats = &mut self.series.entry(labels).or_default().0;
        match floats.binary_search_by_key(&t, |s| s.t) {
            Ok(i) => floats[i].v = v,
            Err(i) => floats.insert(i, FloatSample { t, v }),
        }
    }

    /// Adds a histogram sample (a later sample at the same time replaces the earlier one).
    ///
    /// Like a Prometheus chunk, a counter histogram without a hint that continues the previous
    /// sample of its series (a histogram of the same layout, no float in between, no reset)
    /// is stored as `NotCounterReset`.
    pub fn add_histogram(&mut self, labels: Labels, t: i64, mut h: FloatHistogram) {
        let (floats, hs) = self.series.entry(labels).or_default();
        if h.counter_reset_hint == CounterResetHint::Unknown {
            let i = hs.partition_point(|s| s.0 < t);
            if let Some((pt, prev)) = i.checked_sub(1).and_then(|j| hs.get(j)) {
                let float_between = floats.iter().any(|f| f.t > *pt && f.t < t);
                let same_layout = prev.schema == h.schema
                    && prev.zero_threshold == h.zero_threshold
                    && prev.custom_values == h.custom_values;
                if !float_between
                    && same_layout
                    && prev.counter_reset_hint != CounterResetHint::Gauge
                    && !crate::histogram::is_reset(prev, &h)
                {
                    h.counter_reset_hint = CounterResetHint::NotCounterReset;
                }
            }
        }
        match hs.binary_search_by_key(&t, |s| s.0) {
            Ok(i) => hs[i].1 = Arc::new(h),
            Err(i) => hs.insert(i, (t, Arc::new(h))),
        }
    }

    pub fn clear(&mut self) {
        self.series.clear();
    }
}

impl Storage for MemStorage {
    fn select_each(
        &self,
        matchers: &[Matcher],
        mint_ms: i64,
        maxt_ms: i64,
        budget: &Arc<SampleBudget>,
        f: &mut dyn FnMut(usize, Series) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let matching: Vec<(&Labels, &Stored)> = self
            .series
            .iter()
            .filter(|(labels, _)| {
                matchers
                    .iter()
                    .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
            })
            .collect();
        let n = matching.len();
        for (labels, (floats, hists)) in matching {
            let floats: Vec<FloatSample> = floats
                .iter()
                .filter(|s| s.t >= mint_ms && s.t <= maxt_ms)
                .copied()
                .collect();
            let histograms: Vec<(i64, Arc<FloatHistogram>)> = hists
                .iter()
                .filter(|s| s.0 >= mint_ms && s.0 <= maxt_ms)
                .cloned()
                .collect();
            if floats.is_empty() && histograms.is_empty() {
                continue;
            }
            budget.take(floats.len() + histograms.len())?;
            f(
                n,
                Series {
                    metric: labels.clone(),
                    floats,
                    histograms,
                },
            )?;
        }
        Ok(())
    }
}
