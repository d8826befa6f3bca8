//! Scraping Prometheus targets, as Prometheus' `scrape` package does it.
//!
//! - [`config`]: `scrape_configs` as written in the TOML file
//!   ([`ScrapeConfig`]) and their validated form ([`ScrapeJob`]), with
//!   Prometheus' defaults and durations.
//! - [`target`]: a static target's labels: `job`, `instance`, the group's
//!   labels, `relabel_configs` over `__address__`, `__scheme__`,
//!   `__metrics_path__`, `__param_*`, and the URL they make.
//! - [`scraper`]: one target's scrape: fetch, parse, label, relabel, limits,
//!   staleness, the `up`/`scrape_*` series, the state shown by
//!   `/api/v1/targets`. Sans-time: the caller passes "now".
//! - [`http`]: the HTTP GET (headers as Prometheus sends them, auth,
//!   timeout, gzip, capped body).
//! - [`manager`]: threads that run every target at its interval, with a
//!   stable per-target offset.
//!
//! Life of a scrape: the manager's scheduler finds a target due and hands
//! it to a worker thread; [`TargetScraper::scrape`] reads the clock, GETs
//! the URL, parses the body ([`ingest::exposition`]), turns each sample
//! into a series (target labels, `honor_labels`,
//! `metric_relabel_configs`), checks `sample_limit`/`label_limit`, adds
//! stale markers for series gone since the last scrape, appends `up` and
//! the other report series, and calls [`Sink::write`] once with the whole
//! batch.

pub mod config;
pub mod http;
pub mod manager;
pub mod scraper;
pub mod target;

pub use config::{
    Auth, Authorization, BasicAuth, ConfigProblem, Scheme, ScrapeConfig, ScrapeConfigError,
    ScrapeDefaults, ScrapeJob, Secret, StaticConfig, compile_scrape_configs, format_duration,
    parse_duration,
};
pub use manager::Manager;
pub use scraper::{Health, TargetScraper, TargetState};
pub use target::{DroppedTarget, Target, TargetError};

/// Where scraped samples go. Called from the scrape worker threads, once
/// per scrape (and once per target at [`Manager::stop`] with its staleness
/// markers); an error is shown as the target's last error.
pub trait Sink: Send + Sync {
    fn write(&self, project: &str, batch: model::WriteBatch) -> Result<(), String>;
}

/// Wall-clock time in milliseconds since the Unix epoch; injected so tests
/// can choose sample timestamps.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}
