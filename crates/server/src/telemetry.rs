//! Flightdeck's own metrics (`flightdeck_*`): what was ingested and
//! rejected, per project and protocol, WAL fsync latency, HTTP request
//! durations by route and code.
//!
//! A small registry, not a client library: counters and fixed-bucket
//! histograms keyed by label values, behind one `std::sync::Mutex` each
//! (held for a map lookup and an add; never across an `.await`). It is
//! read two ways, both through [`Telemetry::collect`]: `GET /metrics`
//! renders it as text, and the host-metrics loop stores it in the default
//! project like any other sample.

use std::collections::BTreeMap;
use std::sync::Mutex;

use agent::Collected;
use model::MetricType;

/// Upper bounds of the latency histograms, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A counter family: name, help, label names.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

pub const INGESTED_SAMPLES: Family = Family {
    name: "flightdeck_ingested_samples_total",
    help: "Samples (float and histogram) accepted into storage, by project and protocol.",
    labels: &["project", "protocol"],
};
pub const REJECTED_SAMPLES: Family = Family {
    name: "flightdeck_rejected_samples_total",
    help: "Samples refused at ingest, by project, protocol and reason.",
    labels: &["project", "protocol", "reason"],
};
pub const HTTP_DURATION: Family = Family {
    name: "flightdeck_http_request_duration_seconds",
    help: "HTTP request durations by route template, method and status code.",
    labels: &["route", "method", "code"],
};
pub const WAL_FSYNC: Family = Family {
    name: "flightdeck_wal_fsync_duration_seconds",
    help: "Duration of the metric WAL's write + fdatasync per group commit.",
    labels: &[],
};
pub const SCRAPES: Family = Family {
    name: "flightdeck_collector_runs_total",
    help: "Runs of the built-in host-metrics collector, by result.",
    labels: &["result"],
};

#[derive(Debug, Clone)]
struct Hist {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The registry; share it in an `Arc`.
#[derive(Debug, Default)]
pub struct Telemetry {
    counters: Mutex<BTreeMap<(&'static str, Vec<String>), f64>>,
    histograms: Mutex<BTreeMap<(&'static str, Vec<String>), Hist>>,
    families: Mutex<Vec<(Family, MetricType)>>,
}

impl Telemetry {
    fn register(&self, f: Family, t: MetricType) {
        let mut fams = self.families.lock().unwrap_or_else(|e| e.into_inner());
        if !fams.iter().any(|(x, _)| x.name == f.name) {
            fams.push((f, t));
        }
    }

    /// Adds `v` to the counter `f{values}` (values in `f.labels` order).
    pub fn add(&self, f: Family, values: &[&str], v: f64) {
        debug_assert_eq!(
            values.len(),
            f.labels.len(),
            "bug: wrong label count for {}",
            f.name
        );
        self.register(f, MetricType::Counter);
        let key = (f.name, values.iter().map(|s| s.to_string()).collect());
        *self
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert(0.0) += v;
    }

    /// Records one observation (seconds) in the histogram `f{values}`.
    pub fn observe(&self, f: Family, values: &[&str], secs: f64) {
        self.register(f, MetricType::Histogram);
        let key = (f.name, values.iter().map(|s| s.to_string()).collect());
        let mut h = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
        let e = h.entry(key).or_insert(Hist {
            buckets: [0; LATENCY_BUCKETS.len()],
            count: 0,
            sum: 0.0,
        });
        for (i, ub) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *ub {
                e.buckets[i] += 1;
            }
        }
        e.count += 1;
        e.sum += secs;
    }

    /// The current value of a counter (tests, usage figures).
    pub fn counter(&self, f: Family, values: &[&str]) -> f64 {
        let key = (
            f.name,
            values.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        );
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied()
            .unwrap_or(0.0)
    }

    /// Every series, with metadata; histograms as `_bucket{le}`, `_sum`, `_count`.
    pub fn collect(&self) -> Collected {
        let fams = self
            .families
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let fam = |name: &str| fams.iter().find(|(f, _)| f.name == name).map(|(f, _)| *f);
        let mut out = Collected::default();
        for ((name, values), v) in self
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let Some(f) = fam(name) else { continue };
            let labels: Vec<(&str, &str)> = f
                .labels
                .iter()
                .copied()
                .zip(values.iter().map(String::as_str))
                .collect();
            out.counter(name, f.help, &labels, *v);
        }
        for ((name, values), h) in self
            .histograms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let Some(f) = fam(name) else { continue };
            let labels: Vec<(&str, &str)> = f
                .labels
                .iter()
                .copied()
                .zip(values.iter().map(String::as_str))
                .collect();
            out.add(name, MetricType::Histogram, f.help, &[], 0.0);
            out.series.pop(); // only the family's metadata
            let les: Vec<String> = LATENCY_BUCKETS.iter().map(|b| format!("{b}")).collect();
            for (i, le) in les.iter().enumerate() {
                let mut l = labels.clone();
                l.push(("le", le));
                push(&mut out, &format!("{name}_bucket"), &l, h.buckets[i] as f64);
            }
            let mut l = labels.clone();
            l.push(("le", "+Inf"));
            push(&mut out, &format!("{name}_bucket"), &l, h.count as f64);
            push(&mut out, &format!("{name}_sum"), &labels, h.sum);
            push(&mut out, &format!("{name}_count"), &labels, h.count as f64);
        }
        out
    }
}

/// Everything `GET /metrics` shows and the host-metrics loop stores: the
/// host (node-exporter names), this process, `flightdeck_*` counters and
/// histograms, and the metric store's head series per project.
pub fn collect_all(st: &crate::AppState) -> Collected {
    let now = st.now() as f64 / 1e9;
    let mut c = agent::host::HostCollector::default().collect(now);
    if let Ok(p) = agent::process::ProcessCollector::default().collect() {
        c.extend(p);
    }
    c.extend(st.telemetry.collect());
    if let Some(m) = &st.metrics {
        let h = m.db.wal_sync_histogram();
        c.add(
            WAL_FSYNC.name,
            MetricType::Histogram,
            WAL_FSYNC.help,
            &[],
            0.0,
        );
        c.series.pop(); // only the family's metadata
        let mut cumulative = 0u64;
        for (ub, n) in tsdb::SYNC_BUCKETS.iter().zip(h.buckets.iter()) {
            cumulative += n;
            let le = format!("{ub}");
            push(
                &mut c,
                &format!("{}_bucket", WAL_FSYNC.name),
                &[("le", &le)],
                cumulative as f64,
            );
        }
        push(
            &mut c,
            &format!("{}_bucket", WAL_FSYNC.name),
            &[("le", "+Inf")],
            h.count as f64,
        );
        push(
            &mut c,
            &format!("{}_sum", WAL_FSYNC.name),
            &[],
            h.sum_seconds,
        );
        push(
            &mut c,
            &format!("{}_count", WAL_FSYNC.name),
            &[],
            h.count as f64,
        );
        for project in m.db.projects() {
            let s = m.db.stats(&project);
            c.gauge(
                "flightdeck_head_series",
                "Active series in the metric store's head, by project.",
                &[("project", &project)],
                s.head_series as f64,
            );
            c.counter(
                "flightdeck_store_samples_appended_total",
                "Samples accepted into the metric store since the process started (WAL replay included), by project.",
                &[("project", &project)],
                s.samples_appended as f64,
            );
            for (metric, n) in s.top_metrics.iter().take(10) {
                c.gauge(
                    "flightdeck_series_by_metric",
                    "Active series of the project's ten largest metric names (usage and cardinality).",
                    &[("project", &project), ("metric", metric)],
                    *n as f64,
                );
            }
            c.gauge(
                "flightdeck_stored_bytes",
                "Bytes of the project's metric blocks on disk.",
                &[("project", &project)],
                s.block_bytes as f64,
            );
        }
    }
    c
}

/// A series without metadata of its own (a histogram's parts).
fn push(out: &mut Collected, name: &str, labels: &[(&str, &str)], v: f64) {
    let mut pairs = vec![(model::METRIC_NAME, name)];
    pairs.extend_from_slice(labels);
    out.series.push((model::Labels::from_pairs(pairs), v));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render() {
        let t = Telemetry::default();
        t.add(INGESTED_SAMPLES, &["p1", "remote_write"], 10.0);
        t.add(INGESTED_SAMPLES, &["p1", "remote_write"], 5.0);
        t.observe(HTTP_DURATION, &["/api/v1/write", "POST", "204"], 0.003);
        t.observe(HTTP_DURATION, &["/api/v1/write", "POST", "204"], 20.0);
        assert_eq!(t.counter(INGESTED_SAMPLES, &["p1", "remote_write"]), 15.0);
        let text = agent::text::render(&t.collect());
        assert!(
            text.contains(
                "flightdeck_ingested_samples_total{project=\"p1\",protocol=\"remote_write\"} 15\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE flightdeck_http_request_duration_seconds histogram\n"),
            "{text}"
        );
        assert!(text.contains("flightdeck_http_request_duration_seconds_bucket{code=\"204\",le=\"0.005\",method=\"POST\",route=\"/api/v1/write\"} 1\n"), "{text}");
        assert!(text.contains("flightdeck_http_request_duration_seconds_bucket{code=\"204\",le=\"+Inf\",method=\"POST\",route=\"/api/v1/write\"} 2\n"), "{text}");
        assert!(text.contains("flightdeck_http_request_duration_seconds_count{code=\"204\",method=\"POST\",route=\"/api/v1/write\"} 2\n"), "{text}");
    }
}
