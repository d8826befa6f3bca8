//! One target's scrapes: from a fetched body (or a failure) to the batch
//! the sink gets, with Prometheus' rules for labels, limits and staleness.
//!
//! Per scrape, at time `t` (the scrape's start, in ms):
//! 1. Parse the body; a parse error fails the scrape.
//! 2. Each sample gets the target's labels. With `honor_labels = false` a
//!    target label wins and the scraped value moves to `exported_<name>`
//!    (`exported_exported_<name>` if that is taken too, shortest names
//!    first); with `honor_labels = true` the scraped labels win.
//! 3. `metric_relabel_configs` run; dropped samples are not counted.
//!    A series without `__name__` or with an invalid name fails the scrape,
//!    and so does one over `label_limit`. A second sample of the same
//!    series in one scrape is ignored.
//! 4. More than `sample_limit` samples fail the scrape (Prometheus keeps
//!    counting, so `scrape_samples_scraped` stays right).
//! 5. Timestamps: the line's own with `honor_timestamps` (such series get
//!    no stale markers, as in Prometheus), otherwise `t`.
//! 6. A failed scrape writes no samples; every series of the last
//!    successful scrape gets a stale marker (`model::stale_nan()`) at `t`.
//!    A successful one marks stale the series that disappeared since.
//! 7. Always: `up` (1/0), `scrape_duration_seconds`,
//!    `scrape_samples_scraped`, `scrape_samples_post_metric_relabeling`,
//!    `scrape_series_added`, with the target's labels.
//!
//! When the target goes away ([`TargetScraper::end_of_run`]) its series
//! and its report series all get stale markers.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingest::exposition;
use model::{Labels, METRIC_NAME, Sample, TimeSeries, WriteBatch, stale_nan};

use super::config::ScrapeJob;
use super::http::{Client, Fetched};
use super::target::Target;

/// `health` of `/api/v1/targets`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// What `/api/v1/targets` shows for one active target.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetState {
    pub job: String,
    pub project: String,
    pub scrape_url: String,
    /// Labels attached to the target's samples (no `__` labels).
    pub labels: Labels,
    /// Labels before relabeling.
    pub discovered_labels: Labels,
    pub interval: Duration,
    pub timeout: Duration,
    pub health: Health,
    /// Start of the last scrape, ms since the epoch.
    pub last_scrape_ms: Option<i64>,
    pub last_scrape_duration: Option<Duration>,
    /// Why the last scrape failed (`None` after a success).
    pub last_error: Option<String>,
    /// Samples written by the last scrape (after metric relabeling).
    pub last_samples: u64,
}

/// The report series' names.
pub const REPORT_SERIES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// Scrapes one target. Not thread-safe by design: the manager runs one
/// scrape of a target at a time.
pub struct TargetScraper {
    job: Arc<ScrapeJob>,
    client: Arc<Client>,
    target: Target,
    /// The target's labels without `__` ones: what samples get.
    public: Labels,
    /// Series written by the last successful scrape with the scrape's
    /// timestamp (those with their own timestamps are not tracked).
    prev: HashSet<Labels>,
    /// True once report series were written (they need stale markers at
    /// the end).
    reported: bool,
    state: TargetState,
}

/// Counts of one scrape, for the report series.
#[derive(Default)]
struct Counts {
    total: u64,
    added: u64,
    series_added: u64,
}

impl TargetScraper {
    pub fn new(job: Arc<ScrapeJob>, client: Arc<Client>, target: Target) -> TargetScraper {
        let public = target.public_labels();
        let state = TargetState {
            job: job.job_name.clone(),
            project: job.project.clone(),
            scrape_url: target.url.clone(),
            labels: public.clone(),
            discovered_labels: target.discovered_labels.clone(),
            interval: target.interval,
            timeout: target.timeout,
            health: Health::Unknown,
            last_scrape_ms: None,
            last_scrape_duration: None,
            last_error: None,
            last_samples: 0,
        };
        TargetScraper {
            job,
            client,
            target,
            public,
            prev: HashSet::new(),
            reported: false,
            state,
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn state(&self) -> &TargetState {
        &self.state
    }

    /// The project the batches belong to.
    pub fn project(&self) -> &str {
        &self.job.project
    }

    /// Fetches the target now (`now_ms` is the samples' timestamp) and
    /// returns the batch for the sink.
    pub fn scrape(&mut self, now_ms: i64) -> WriteBatch {
        let started = Instant::now();
        let fetched = self.client.fetch(&self.target.url, self.target.timeout);
        self.process(fetched, now_ms, started.elapsed())
    }

    /// The part of [`TargetScraper::scrape`] after the HTTP exchange.
    pub fn process(
        &mut self,
        fetched: Result<Fetched, String>,
        t: i64,
        duration: Duration,
    ) -> WriteBatch {
        let mut counts = Counts::default();
        let mut batch = WriteBatch::default();
        let result = fetched.and_then(|f| {
            let scraped =
                exposition::parse(&f.body, f.content_type.as_deref()).map_err(|e| e.to_string())?;
            self.append(scraped, t, &mut counts)
        });
        let error = match result {
            Ok((series, cur, metadata)) => {
                counts.series_added = cur.difference(&self.prev).count() as u64;
                for gone in self.prev.difference(&cur) {
                    batch.series.push(one(gone.clone(), t, stale_nan()));
                }
                batch.series.extend(series);
                batch.metadata = metadata;
                self.prev = cur;
                None
            }
            Err(e) => {
                for gone in self.prev.drain() {
                    batch.series.push(one(gone, t, stale_nan()));
                }
                counts.series_added = 0;
                Some(e)
            }
        };
        let up = if error.is_none() { 1.0 } else { 0.0 };
        let values = [
            up,
            duration.as_secs_f64(),
            counts.total as f64,
            counts.added as f64,
            counts.series_added as f64,
        ];
        for (name, v) in REPORT_SERIES.iter().zip(values) {
            batch.series.push(one(self.report_labels(name), t, v));
        }
        self.reported = true;
        self.state.health = if error.is_none() {
            Health::Up
        } else {
            Health::Down
        };
        self.state.last_scrape_ms = Some(t);
        self.state.last_scrape_duration = Some(duration);
        self.state.last_samples = if error.is_none() { counts.added } else { 0 };
        self.state.last_error = error;
        batch
    }

    /// Marks the sink's refusal of the last batch in the state.
    pub fn record_sink_error(&mut self, e: &str) {
        self.state.health = Health::Down;
        self.state.last_error = Some(format!("writing the scrape failed: {e}"));
    }

    /// Stale markers at `t` for every series this target wrote, report
    /// series included: the target is going away.
    pub fn end_of_run(&mut self, t: i64) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for gone in self.prev.drain() {
            batch.series.push(one(gone, t, stale_nan()));
        }
        if self.reported {
            for name in REPORT_SERIES {
                batch
                    .series
                    .push(one(self.report_labels(name), t, stale_nan()));
            }
            self.reported = false;
        }
        batch
    }

    fn report_labels(&self, name: &str) -> Labels {
        let mut b = self.public.builder();
        b.set(METRIC_NAME, name);
        b.build()
    }

    /// Steps 2–5 of the module doc. `Err` fails the scrape.
    #[allow(clippy::type_complexity)]
    fn append(
        &self,
        scraped: exposition::Scraped,
        t: i64,
        counts: &mut Counts,
    ) -> Result<
        (
            Vec<TimeSeries>,
            HashSet<Labels>,
            Vec<(String, model::Metadata)>,
        ),
        String,
    > {
        let job = &*self.job;
        let mut out = Vec::with_capacity(scraped.samples.len());
        let mut cur = HashSet::with_capacity(scraped.samples.len());
        let mut seen = HashSet::with_capacity(scraped.samples.len());
        let mut over_limit = false;
        for s in scraped.samples {
            counts.total += 1;
            let labels = self.target_labels_onto(&s.labels);
            let Some(labels) = ingest::relabel::process(&labels, &job.metric_relabel) else {
                continue;
            };
            let Some(name) = labels.metric_name() else {
                return Err(format!(
                    "missing metric name (__name__ label) after metric relabeling: {labels}"
                ));
            };
            if !model::is_valid_metric_name(name)
                || labels
                    .iter()
                    .any(|l| l.name != METRIC_NAME && !model::is_valid_label_name(&l.name))
            {
                return Err(format!("invalid metric name or label names: {labels}"));
            }
            if job.label_limit > 0 && labels.len() as u64 > job.label_limit {
                let short: String = name.chars().take(50).collect();
                return Err(format!(
                    "label_limit exceeded (metric: {short}, number of labels: {}, limit: {})",
                    labels.len(),
                    job.label_limit
                ));
            }
            if !seen.insert(labels.clone()) {
                continue; // duplicate sample for this timestamp: first wins
            }
            counts.added += 1;
            if job.sample_limit > 0 && counts.added > job.sample_limit {
                over_limit = true;
                continue;
            }
            if over_limit {
                continue;
            }
            let ts = match s.timestamp_ms {
                Some(own) if job.honor_timestamps => own,
                _ => {
                    cur.insert(labels.clone());
                    t
                }
            };
            out.push(one(labels, ts, s.value));
        }
        if over_limit {
            return Err(format!(
                "sample limit exceeded ({} samples after metric relabeling, sample_limit {})",
                counts.added, job.sample_limit
            ));
        }
        Ok((out, cur, scraped.metadata))
    }

    /// Step 2 of the module doc: the target's labels onto a sample's.
    fn target_labels_onto(&self, sample: &Labels) -> Labels {
        if self.public.is_empty() {
            return sample.clone();
        }
        let mut b = sample.builder();
        if self.job.honor_labels {
            for l in self.public.iter() {
                if sample.get(&l.name).is_none() {
                    b.set(l.name.clone(), l.value.clone());
                }
            }
            return b.build();
        }
        let mut conflicts = Vec::new();
        for l in self.public.iter() {
            if let Some(v) = sample.get(&l.name) {
                conflicts.push((l.name.as_str(), v));
            }
            b.set(l.name.clone(), l.value.clone());
        }
        conflicts.sort_by_key(|(n, _)| n.len());
        for (name, value) in conflicts {
            let mut new = name.to_owned();
            loop {
                new = format!("exported_{new}");
                if b.get(&new).is_none_or(str::is_empty) {
                    b.set(new, value);
                    break;
                }
            }
        }
        b.build()
    }
}

fn one(labels: Labels, t: i64, v: f64) -> TimeSeries {
    TimeSeries {
        labels,
        samples: vec![Sample { t, v }],
        histograms: Vec::new(),
        created_timestamp: 0,
    }
}
