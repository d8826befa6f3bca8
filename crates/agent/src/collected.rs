//! [`Collected`]: samples and metadata gathered by one collection pass.

use model::{Labels, Metadata, MetricType, Sample, TimeSeries, WriteBatch};

/// Series and metadata from one pass, all stamped with the same time when
/// turned into a batch.
#[derive(Debug, Default)]
pub struct Collected {
    pub series: Vec<(Labels, f64)>,
    pub metadata: Vec<(String, Metadata)>,
}

impl Collected {
    /// Adds one sample of `name{labels}`; the first call for a name also
    /// records its type and help.
    pub fn add(
        &mut self,
        name: &str,
        kind: MetricType,
        help: &str,
        labels: &[(&str, &str)],
        v: f64,
    ) {
        if !self.metadata.iter().any(|(n, _)| n == name) {
            self.metadata.push((
                name.to_string(),
                Metadata {
                    metric_type: kind,
                    help: help.to_string(),
                    unit: String::new(),
                },
            ));
        }
        let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(labels.len() + 1);
        pairs.push((model::METRIC_NAME, name));
        pairs.extend_from_slice(labels);
        self.series.push((Labels::from_pairs(pairs), v));
    }

    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], v: f64) {
        self.add(name, MetricType::Gauge, help, labels, v);
    }

    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], v: f64) {
        self.add(name, MetricType::Counter, help, labels, v);
    }

    /// Appends another pass' series and metadata.
    pub fn extend(&mut self, other: Collected) {
        for (n, m) in other.metadata {
            if !self.metadata.iter().any(|(x, _)| *x == n) {
                self.metadata.push((n, m));
            }
        }
        self.series.extend(other.series);
    }

    /// The value of `name{labels}` if collected (for tests and checks).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.series
            .iter()
            .find(|(l, _)| {
                l.metric_name() == Some(name) && labels.iter().all(|(k, v)| l.get(k) == Some(*v))
            })
            .map(|(_, v)| *v)
    }

    /// Like [`Collected::into_batch`], with the target labels a scrape
    /// would add (`job`, `instance`) set on every series.
    pub fn into_target_batch(self, t_ms: i64, job: &str, instance: &str) -> WriteBatch {
        let mut b = self.into_batch(t_ms);
        for ts in &mut b.series {
            let mut l = ts.labels.builder();
            l.set("job", job).set("instance", instance);
            ts.labels = l.build();
        }
        b
    }

    /// One sample per series at `t_ms`, plus the metadata.
    pub fn into_batch(self, t_ms: i64) -> WriteBatch {
        WriteBatch {
            series: self
                .series
                .into_iter()
                .map(|(labels, v)| TimeSeries {
                    labels,
                    samples: vec![Sample { t: t_ms, v }],
                    ..Default::default()
                })
                .collect(),
            metadata: self.metadata,
        }
    }
}
