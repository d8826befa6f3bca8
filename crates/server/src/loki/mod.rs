//! The log data plane: Loki's push API (`POST /loki/api/v1/push`) and
//! OTLP/HTTP logs (`POST /v1/logs`) into the `logstore`, with Loki's
//! per-project limits ([`write`], [`limits`]); Loki's query API ([`read`],
//! and [`patterns`] over the [`drain`] clustering);
//! and the store's upkeep (flush, retention, compaction) on timers.
//!
//! Authentication and the choice of project are the metric data plane's
//! ([`crate::prom::data_layer`]): the scope needed is `logs:write` for the
//! push routes and `logs:read` for every other `/loki/…` route; a
//! project token writes to its own project only.

pub mod drain;
pub mod limits;
pub mod patterns;
pub mod read;
pub mod write;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::AppState;
use crate::telemetry::Family;
use limits::{ProjectLimits, RateLimiter, StreamTracker};

/// `flightdeck_ingested_log_lines_total`.
pub const INGESTED_LINES: Family = Family {
    name: "flightdeck_ingested_log_lines_total",
    help: "Log lines accepted into storage, by project and protocol.",
    labels: &["project", "protocol"],
};
/// `flightdeck_ingested_log_bytes_total`.
pub const INGESTED_BYTES: Family = Family {
    name: "flightdeck_ingested_log_bytes_total",
    help: "Bytes of log lines and structured metadata accepted, by project and protocol.",
    labels: &["project", "protocol"],
};
/// `flightdeck_rejected_log_lines_total`.
pub const REJECTED_LINES: Family = Family {
    name: "flightdeck_rejected_log_lines_total",
    help: "Log lines refused at ingest, by project, protocol and reason (Loki's reason names).",
    labels: &["project", "protocol", "reason"],
};

/// Settings of the log path (`[logs]` in the configuration).
#[derive(Clone, Debug)]
pub struct LogsConfig {
    /// Limits of projects without their own `[logs.projects.<slug>]`.
    pub defaults: ProjectLimits,
    pub projects: HashMap<String, ProjectLimits>,
    /// Largest push body, compressed and after decompression.
    pub max_request_bytes: usize,
    /// Heads holding an entry older than this are flushed into a segment.
    pub flush_age: Duration,
    /// How often retention and compaction run.
    pub maintenance_interval: Duration,
    /// Segments smaller than this are merged by compaction.
    pub compact_target_bytes: u64,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            defaults: ProjectLimits::default(),
            projects: HashMap::new(),
            max_request_bytes: 64 << 20,
            flush_age: Duration::from_secs(300),
            maintenance_interval: Duration::from_secs(600),
            compact_target_bytes: 64 << 20,
        }
    }
}

/// The log store and what the push handlers share.
pub struct Logs {
    pub store: Arc<logstore::Store>,
    pub config: LogsConfig,
    pub(crate) rate: RateLimiter,
    pub(crate) streams: StreamTracker,
}

impl Logs {
    pub fn new(store: Arc<logstore::Store>, config: LogsConfig) -> Logs {
        Logs {
            store,
            config,
            rate: RateLimiter::default(),
            streams: StreamTracker::default(),
        }
    }

    /// Opens the store in `dir` (`<data dir>/logs`) with the production
    /// options; the longest line it takes is the largest `max_line_size`
    /// configured (0, unlimited, means the store's own cap of 16 MiB).
    pub fn open(dir: &std::path::Path, config: LogsConfig) -> Result<Logs, logstore::Error> {
        let longest = std::iter::once(&config.defaults)
            .chain(config.projects.values())
            .map(|l| match l.entries.max_line_size {
                0 => 16 << 20,
                n => n,
            })
            .max()
            .unwrap_or(256 << 10);
        let store = logstore::Store::open(
            dir,
            logstore::Options {
                max_line_bytes: longest,
                ..logstore::Options::default()
            },
        )?;
        Ok(Logs::new(Arc::new(store), config))
    }

    pub fn limits_for(&self, project: &str) -> &ProjectLimits {
        self.config
            .projects
            .get(project)
            .unwrap_or(&self.config.defaults)
    }
}

/// The log routes, behind [`crate::prom::data_layer`].
pub fn routes(st: AppState) -> Router<AppState> {
    let max = st
        .logs
        .as_ref()
        .map_or(st.opts.max_body_bytes, |l| l.config.max_request_bytes);
    Router::new()
        .route("/loki/api/v1/push", post(write::push))
        .route("/v1/logs", post(write::otlp_logs))
        .route(
            "/loki/api/v1/query_range",
            get(read::query_range).post(read::query_range),
        )
        .route("/loki/api/v1/query", get(read::query).post(read::query))
        .route("/loki/api/v1/labels", get(read::labels).post(read::labels))
        .route(
            "/loki/api/v1/label/{name}/values",
            get(read::label_values).post(read::label_values),
        )
        .route("/loki/api/v1/series", get(read::series).post(read::series))
        .route(
            "/loki/api/v1/index/stats",
            get(read::index_stats).post(read::index_stats),
        )
        .route("/loki/api/v1/detected_labels", get(read::detected_labels))
        .route(
            "/loki/api/v1/patterns",
            get(patterns::patterns).post(patterns::patterns),
        )
        .route("/loki/api/v1/status/buildinfo", get(read::buildinfo))
        .route("/loki/api/v1/tail", get(read::tail))
        .layer(axum::middleware::from_fn_with_state(
            st.clone(),
            crate::prom::data_layer,
        ))
        .layer(DefaultBodyLimit::max(max))
        // Loki's readiness probe, unauthenticated like `/-/ready`.
        .route("/ready", get(read::ready))
}

/// Flushes due heads every 10 s (or `flush_age`, if shorter), and every
/// `maintenance_interval` applies each project's retention and merges small
/// segments. Runs for the server's life; failures are logged (a failed
/// flush poisons the store, and appends then answer 503).
pub async fn maintenance_loop(st: AppState) {
    let Some(logs) = st.logs.clone() else {
        return;
    };
    let tick = logs.config.flush_age.min(Duration::from_secs(10));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_maintenance = tokio::time::Instant::now();
    loop {
        interval.tick().await;
        let l = logs.clone();
        let now_ns = st.now();
        let maintain = last_maintenance.elapsed() >= logs.config.maintenance_interval;
        if maintain {
            last_maintenance = tokio::time::Instant::now();
        }
        let r = tokio::task::spawn_blocking(move || {
            if let Err(e) = l.store.flush_if_due(l.config.flush_age) {
                tracing::error!(error = %e, "flushing the log store failed");
            }
            if maintain {
                maintain_once(&l, now_ns);
            }
        })
        .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "log store upkeep panicked");
        }
    }
}

/// Retention then compaction of every project (blocking).
pub fn maintain_once(l: &Logs, now_ns: i64) {
    for project in l.store.projects() {
        let policy = l.limits_for(&project).retention;
        match l.store.apply_retention(&project, &policy, now_ns) {
            Ok(r) if r.segments > 0 => tracing::info!(
                project = %project,
                segments = r.segments,
                bytes = r.bytes,
                "log retention deleted segments"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(project = %project, error = %e, "log retention failed"),
        }
        if let Err(e) = l.store.compact(&project, l.config.compact_target_bytes) {
            tracing::error!(project = %project, error = %e, "log compaction failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(job: &str, ts: i64) -> logstore::StreamBatch {
        logstore::StreamBatch {
            labels: model::Labels::from_pairs([("job", job)]),
            entries: vec![logstore::Entry::new(ts, format!("line at {ts}"))],
        }
    }

    #[test]
    fn maintenance_applies_each_projects_retention() {
        let dir = tempfile::tempdir().unwrap();
        let day = 86_400_000_000_000i64;
        let now = 100 * day;
        let mut config = LogsConfig::default();
        config.defaults.retention.max_age_ns = Some(10 * day);
        let mut keep_all = config.defaults.clone();
        keep_all.retention.max_age_ns = None;
        config.projects.insert("keep".into(), keep_all);
        let l = Logs::open(dir.path(), config).unwrap();
        for p in ["short", "keep"] {
            l.store.append(p, &[batch("old", now - 20 * day)]).unwrap();
            l.store.flush().unwrap();
            l.store.append(p, &[batch("new", now - day)]).unwrap();
            l.store.flush().unwrap();
        }
        maintain_once(&l, now);
        let jobs = |p: &str| -> Vec<String> {
            l.store
                .series(p, &[], i64::MIN, i64::MAX)
                .iter()
                .map(|s| s.get("job").unwrap().to_string())
                .collect()
        };
        assert_eq!(jobs("short"), vec!["new"]);
        assert_eq!(jobs("keep"), vec!["new", "old"]);
        l.store.close().unwrap();
    }

    #[test]
    fn the_store_takes_the_longest_configured_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = LogsConfig::default();
        let mut big = config.defaults.clone();
        big.entries.max_line_size = 1 << 20;
        config.projects.insert("big".into(), big);
        let l = Logs::open(dir.path(), config).unwrap();
        let line = "x".repeat(1 << 20);
        let b = logstore::StreamBatch {
            labels: model::Labels::from_pairs([("job", "a")]),
            entries: vec![logstore::Entry::new(1, line)],
        };
        l.store.append("big", &[b]).unwrap();
        assert_eq!(l.limits_for("big").entries.max_line_size, 1 << 20);
        assert_eq!(l.limits_for("other").entries.max_line_size, 256 << 10);
        l.store.close().unwrap();
    }
}
