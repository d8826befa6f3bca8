//! Configuration: a TOML file (`--config`), overridden by `FLIGHTDECK_*`
//! environment variables and flags (clap reads both), validated into
//! [`Config`]. Raw input is parsed into loose structs first, then checked
//! key by key, so every error names the key and what is wrong with it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where a bad configuration was found; printed, then exit code 2.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The file's shape. Unknown keys are rejected.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub organization: Option<String>,
    pub log_level: Option<String>,
    #[serde(default)]
    pub limits: FileLimits,
    #[serde(default)]
    pub auth: FileAuth,
    #[serde(default)]
    pub audit: FileAudit,
    #[serde(default)]
    pub metrics: FileMetrics,
    /// `[logs]`: the log store's limits and upkeep, and host logs
    /// (`logs.self_logs`, `[logs.sources]`).
    #[serde(default)]
    pub logs: FileLogs,
    /// Prometheus' `scrape_configs` (a subset; see `agent::scrape`).
    #[serde(default)]
    pub scrape_configs: Vec<agent::scrape::ScrapeConfig>,
}

/// `[metrics]`: the metric store, ingest limits, host metrics, scraping.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileMetrics {
    pub retention: Option<String>,
    pub max_bytes: Option<u64>,
    pub block_duration: Option<String>,
    pub out_of_order_window: Option<String>,
    pub lookback_delta: Option<String>,
    /// Most samples one PromQL query may load (Prometheus' `--query.max-samples`).
    pub query_max_samples: Option<usize>,
    /// Longest a PromQL query may run (Prometheus' `--query.timeout`).
    pub query_timeout: Option<String>,
    pub max_request_bytes: Option<u64>,
    pub host_metrics: Option<bool>,
    pub host_metrics_interval: Option<String>,
    /// Defaults of scrape jobs (Prometheus' `global.scrape_interval`).
    pub scrape_interval: Option<String>,
    pub scrape_timeout: Option<String>,
    pub max_series_per_project: Option<usize>,
    pub max_label_names_per_series: Option<usize>,
    pub max_label_name_length: Option<usize>,
    pub max_label_value_length: Option<usize>,
    pub max_samples_per_request: Option<usize>,
    /// Per-project overrides of the ingest limits: `[metrics.projects.<slug>]`.
    #[serde(default)]
    pub projects: std::collections::BTreeMap<String, FileIngestLimits>,
}

/// `[logs]`: the log store and Loki's ingest limits.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileLogs {
    /// Largest push body, compressed and after decompression (bytes).
    pub max_request_bytes: Option<u64>,
    /// Heads holding a line older than this are written to a segment.
    pub flush_age: Option<String>,
    /// How often retention and compaction run.
    pub maintenance_interval: Option<String>,
    // The defaults of every project: the keys of [`FileLogLimits`] (serde's
    // `flatten` would disable `deny_unknown_fields`).
    pub retention: Option<String>,
    pub max_bytes: Option<u64>,
    pub max_label_names_per_series: Option<usize>,
    pub max_label_name_length: Option<usize>,
    pub max_label_value_length: Option<usize>,
    pub max_line_size: Option<usize>,
    pub reject_old_samples_max_age: Option<String>,
    pub creation_grace_period: Option<String>,
    pub ingestion_rate_mb: Option<f64>,
    pub ingestion_burst_size_mb: Option<f64>,
    pub max_streams_per_project: Option<usize>,
    /// Flightdeck's own log events into the default project (`logs.self_logs`).
    pub self_logs: Option<bool>,
    /// Host log sources, `[logs.sources]` (read in `hostlogs_config`).
    #[serde(default)]
    pub sources: crate::hostlogs_config::FileSources,
    /// Per-project overrides: `[logs.projects.<slug>]`.
    #[serde(default)]
    pub projects: std::collections::BTreeMap<String, FileLogLimits>,
}

/// The per-project log limits (the same keys under `[logs]` and
/// `[logs.projects.<slug>]`; Loki's names).
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileLogLimits {
    pub retention: Option<String>,
    /// Size retention of the project's segments, bytes (0: none).
    pub max_bytes: Option<u64>,
    pub max_label_names_per_series: Option<usize>,
    pub max_label_name_length: Option<usize>,
    pub max_label_value_length: Option<usize>,
    /// Bytes; 0 = unlimited.
    pub max_line_size: Option<usize>,
    /// A duration, or "0" to accept any age.
    pub reject_old_samples_max_age: Option<String>,
    pub creation_grace_period: Option<String>,
    pub ingestion_rate_mb: Option<f64>,
    pub ingestion_burst_size_mb: Option<f64>,
    pub max_streams_per_project: Option<usize>,
}

/// The per-project ingest limits (the same keys as under `[metrics]`).
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileIngestLimits {
    /// Only under `[metrics.projects.<slug>]` (the default is `[metrics]`'s).
    pub max_series_per_project: Option<usize>,
    pub max_label_names_per_series: Option<usize>,
    pub max_label_name_length: Option<usize>,
    pub max_label_value_length: Option<usize>,
    pub max_samples_per_request: Option<usize>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub max_body_bytes: Option<u64>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileAuth {
    pub session_ttl: Option<String>,
    pub login_max_failures: Option<u32>,
    pub login_window: Option<String>,
    pub token_expiry_check_interval: Option<String>,
    pub secure_cookies: Option<bool>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileAudit {
    pub log_name: Option<String>,
    pub checkpoint_interval: Option<String>,
    pub witnesses: Option<Vec<String>>,
    pub retention_days: Option<u32>,
    pub retention_check_interval: Option<String>,
}

/// Values given as flags or environment variables (clap merges the two).
#[derive(clap::Args, Debug, Default, Clone)]
pub struct Overrides {
    /// TOML configuration file.
    #[arg(long, env = "FLIGHTDECK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (metadata, audit log, later metrics and logs) [default: ./data].
    #[arg(long, env = "FLIGHTDECK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:9464].
    #[arg(long, env = "FLIGHTDECK_LISTEN")]
    pub listen: Option<String>,
    /// Organization name, used on first start [default: flightdeck].
    #[arg(long, env = "FLIGHTDECK_ORGANIZATION")]
    pub organization: Option<String>,
    /// Log filter (tracing syntax), e.g. info or server=debug [default: info].
    #[arg(long, env = "FLIGHTDECK_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Largest accepted request body in bytes (`limits.max_body_bytes`) [default: 1048576].
    #[arg(long, env = "FLIGHTDECK_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<u64>,
    /// UI session lifetime, e.g. 12h (`auth.session_ttl`) [default: 12h].
    #[arg(long, env = "FLIGHTDECK_SESSION_TTL")]
    pub session_ttl: Option<String>,
    /// Failed logins per IP and per user before 429 (`auth.login_max_failures`) [default: 10].
    #[arg(long, env = "FLIGHTDECK_LOGIN_MAX_FAILURES")]
    pub login_max_failures: Option<u32>,
    /// Window for counting failed logins (`auth.login_window`) [default: 5m].
    #[arg(long, env = "FLIGHTDECK_LOGIN_WINDOW")]
    pub login_window: Option<String>,
    /// How often token expiry is checked and audited (`auth.token_expiry_check_interval`) [default: 10s].
    #[arg(long, env = "FLIGHTDECK_TOKEN_EXPIRY_CHECK_INTERVAL")]
    pub token_expiry_check_interval: Option<String>,
    /// Mark the session cookie Secure (serve behind TLS) (`auth.secure_cookies`) [default: false].
    #[arg(long, env = "FLIGHTDECK_SECURE_COOKIES")]
    pub secure_cookies: Option<bool>,
    /// Audit retention in days for projects without their own (`audit.retention_days`) [default: 400].
    #[arg(long, env = "FLIGHTDECK_AUDIT_RETENTION_DAYS")]
    pub audit_retention_days: Option<u32>,
    /// How often audit retention runs (`audit.retention_check_interval`) [default: 1h].
    #[arg(long, env = "FLIGHTDECK_AUDIT_RETENTION_CHECK_INTERVAL")]
    pub audit_retention_check_interval: Option<String>,
    /// Witness verifier key whose cosignatures of the audit log checkpoints
    /// are accepted (`<name>+<hex id>+<base64>`, type 0x04, as printed by
    /// `flightdeck audit witness-keygen`); repeat the flag, or separate them
    /// with commas in the variable. Replaces `audit.witnesses` of the file
    /// [default: none].
    #[arg(
        long = "audit-witness",
        env = "FLIGHTDECK_AUDIT_WITNESSES",
        value_delimiter = ','
    )]
    pub audit_witnesses: Option<Vec<String>>,
    /// Name of the audit checkpoint signing key and prefix of every audit
    /// log's origin (`<name>/org`, `<name>/p/<slug>`), e.g. audit.example.com;
    /// used when the key is first created, which keeps it (`audit.log_name`) [default: flightdeck].
    #[arg(long, env = "FLIGHTDECK_AUDIT_LOG_NAME")]
    pub audit_log_name: Option<String>,
    /// Longest time from an audit append to the signed checkpoint covering it,
    /// plus the time to write the tiles (`audit.checkpoint_interval`) [default: 500ms].
    #[arg(long, env = "FLIGHTDECK_AUDIT_CHECKPOINT_INTERVAL")]
    pub audit_checkpoint_interval: Option<String>,
    /// Collect this host's metrics (node-exporter names) into the default
    /// project every `metrics.host_metrics_interval` (`metrics.host_metrics`) [default: true].
    #[arg(long, env = "FLIGHTDECK_HOST_METRICS")]
    pub host_metrics: Option<bool>,
    /// How long metric samples are kept (`metrics.retention`) [default: 15d].
    #[arg(long, env = "FLIGHTDECK_METRICS_RETENTION")]
    pub metrics_retention: Option<String>,
    /// Store Flightdeck's own log events in the default project under
    /// job="flightdeck" (`logs.self_logs`) [default: true].
    #[arg(long, env = "FLIGHTDECK_LOGS_SELF_LOGS")]
    pub logs_self_logs: Option<bool>,
    /// Tail the files of `[[logs.sources.files]]` (default /var/log/*.log,
    /// /var/log/syslog) into the default project; false turns tailing off [default: true].
    #[arg(long, env = "FLIGHTDECK_LOGS_FILES")]
    pub logs_files: Option<bool>,
    /// Follow the systemd journal when present (`logs.sources.journal.enabled`) [default: true].
    #[arg(long, env = "FLIGHTDECK_LOGS_JOURNAL")]
    pub logs_journal: Option<bool>,
}

/// The metric store's settings (`[metrics]`).
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    pub tsdb: tsdb::Options,
    pub limits: ingest::validate::Limits,
    pub project_limits: std::collections::HashMap<String, ingest::validate::Limits>,
    /// Series limits of projects with their own (`[metrics.projects.<slug>]`).
    pub project_series: std::collections::HashMap<String, usize>,
    pub lookback: Duration,
    pub query_max_samples: usize,
    pub query_timeout: Duration,
    pub max_request_bytes: usize,
    /// Collect the host's metrics into the default project.
    pub host_metrics: bool,
    pub host_metrics_interval: Duration,
    /// The `[[scrape_configs]]`, validated.
    pub scrape_jobs: Vec<agent::scrape::ScrapeJob>,
}

/// The validated configuration the program runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub organization: String,
    pub log_level: String,
    pub server: server::ServerOptions,
    pub audit: AuditSettings,
    pub metrics: MetricsSettings,
    pub logs: server::loki::LogsConfig,
    pub host_logs: crate::hostlogs_config::HostLogSettings,
}

/// The audit log settings of the configuration (`[audit]`).
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// `audit::Options::tlog_name`.
    pub log_name: String,
    /// `audit::Options::checkpoint_interval`.
    pub checkpoint_interval: Duration,
}

/// A valid `audit.log_name`: 1 to 100 printable ASCII characters, no
/// space and no `+` (a signed-note key name; it also starts every origin
/// line, so something like `audit.example.com` reads best).
pub fn valid_log_name(name: &str) -> bool {
    (1..=100).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic() && b != b'+')
}

/// Parses durations like `500ms`, `10s`, `5m`, `12h`, `7d`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

fn duration(key: &str, v: Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => match parse_duration(&s) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(ConfigError(format!(
                "config key `{key}`: '{s}' is not a positive duration (use e.g. 500ms, 10s, 5m, 12h, 7d)"
            ))),
        },
    }
}

/// Reads the file (if any), applies overrides, and validates every key.
pub fn load(o: &Overrides) -> Result<Config, ConfigError> {
    let file = match &o.config {
        None => FileConfig::default(),
        Some(p) => read_file(p)?,
    };
    let defaults = server::ServerOptions::default();
    let listen_raw = o
        .listen
        .clone()
        .or(file.listen)
        .unwrap_or_else(|| "127.0.0.1:9464".into());
    let listen: SocketAddr = listen_raw.parse().map_err(|_| {
        ConfigError(format!(
            "config key `listen`: '{listen_raw}' is not a HOST:PORT socket address (e.g. 127.0.0.1:9464)"
        ))
    })?;
    let organization = o
        .organization
        .clone()
        .or(file.organization)
        .unwrap_or_else(|| "flightdeck".into());
    if organization.trim().is_empty() || organization.len() > 100 {
        return Err(ConfigError(
            "config key `organization`: must be 1 to 100 characters".into(),
        ));
    }
    let max_body = o
        .max_body_bytes
        .or(file.limits.max_body_bytes)
        .unwrap_or(defaults.max_body_bytes as u64);
    if !(1024..=(1 << 30)).contains(&max_body) {
        return Err(ConfigError(format!(
            "config key `limits.max_body_bytes`: {max_body} is out of range (1024 to 1073741824)"
        )));
    }
    let login_max_failures = o
        .login_max_failures
        .or(file.auth.login_max_failures)
        .unwrap_or(defaults.login_max_failures);
    if login_max_failures == 0 {
        return Err(ConfigError(
            "config key `auth.login_max_failures`: must be at least 1".into(),
        ));
    }
    let retention_days = o
        .audit_retention_days
        .or(file.audit.retention_days)
        .unwrap_or(defaults.audit_retention_days);
    if !(1..=36_500).contains(&retention_days) {
        return Err(ConfigError(format!(
            "config key `audit.retention_days`: {retention_days} is out of range (1 to 36500)"
        )));
    }
    let log_level = o
        .log_level
        .clone()
        .or(file.log_level)
        .unwrap_or_else(|| "info".into());
    let witnesses = o
        .audit_witnesses
        .clone()
        .or(file.audit.witnesses)
        .unwrap_or_default()
        .iter()
        .map(|w| {
            merkle::CosignatureVerifier::parse(w.trim()).map_err(|e| {
                ConfigError(format!(
                    "config key `audit.witnesses`: '{w}' is not a witness verifier key ({e}); use the line printed by `flightdeck audit witness-keygen`"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
        return Err(ConfigError(format!(
            "config key `log_level`: '{log_level}' is not a valid filter (e.g. info, debug, server=debug)"
        )));
    }
    let audit_defaults = audit::Options::default();
    let log_name = o
        .audit_log_name
        .clone()
        .or(file.audit.log_name)
        .unwrap_or(audit_defaults.tlog_name);
    if !valid_log_name(&log_name) {
        return Err(ConfigError(format!(
            "config key `audit.log_name`: {log_name:?} is not a valid name (1 to 100 printable ASCII characters, no spaces, no '+'; e.g. audit.example.com)"
        )));
    }
    let checkpoint_interval = duration(
        "audit.checkpoint_interval",
        o.audit_checkpoint_interval
            .clone()
            .or(file.audit.checkpoint_interval),
        audit_defaults.checkpoint_interval,
    )?;
    if checkpoint_interval > Duration::from_secs(3600) {
        return Err(ConfigError(
            "config key `audit.checkpoint_interval`: at most 1h".into(),
        ));
    }
    let metrics = metrics_settings(o, file.metrics, &file.scrape_configs)?;
    let mut file_logs = file.logs;
    let host_logs = crate::hostlogs_config::host_log_settings(
        o,
        crate::hostlogs_config::FileLogs {
            self_logs: file_logs.self_logs.take(),
            sources: std::mem::take(&mut file_logs.sources),
        },
    )?;
    let logs = logs_settings(file_logs)?;
    Ok(Config {
        metrics,
        logs,
        audit: AuditSettings {
            log_name,
            checkpoint_interval,
        },
        data_dir: o
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data")),
        listen,
        organization,
        log_level,
        host_logs,
        server: server::ServerOptions {
            max_body_bytes: max_body as usize,
            session_ttl: duration(
                "auth.session_ttl",
                o.session_ttl.clone().or(file.auth.session_ttl),
                defaults.session_ttl,
            )?,
            login_max_failures,
            login_window: duration(
                "auth.login_window",
                o.login_window.clone().or(file.auth.login_window),
                defaults.login_window,
            )?,
            expiry_check_interval: duration(
                "auth.token_expiry_check_interval",
                o.token_expiry_check_interval
                    .clone()
                    .or(file.auth.token_expiry_check_interval),
                defaults.expiry_check_interval,
            )?,
            secure_cookies: o
                .secure_cookies
                .or(file.auth.secure_cookies)
                .unwrap_or(false),
            audit_retention_days: retention_days,
            retention_check_interval: duration(
                "audit.retention_check_interval",
                o.audit_retention_check_interval
                    .clone()
                    .or(file.audit.retention_check_interval),
                defaults.retention_check_interval,
            )?,
            checkpoint_wait: defaults.checkpoint_wait,
            witnesses,
        },
    })
}

/// Validates one set of ingest limits over `base`.
fn ingest_limits(
    prefix: &str,
    f: &FileIngestLimits,
    base: &ingest::validate::Limits,
) -> Result<ingest::validate::Limits, ConfigError> {
    let pick = |key: &str, v: Option<usize>, d: usize, min: usize| -> Result<usize, ConfigError> {
        match v {
            None => Ok(d),
            Some(x) if x >= min => Ok(x),
            Some(x) => Err(ConfigError(format!(
                "config key `{prefix}.{key}`: {x} is too small (at least {min})"
            ))),
        }
    };
    Ok(ingest::validate::Limits {
        max_label_names_per_series: pick(
            "max_label_names_per_series",
            f.max_label_names_per_series,
            base.max_label_names_per_series,
            1,
        )?,
        max_label_name_len: pick(
            "max_label_name_length",
            f.max_label_name_length,
            base.max_label_name_len,
            1,
        )?,
        max_label_value_len: pick(
            "max_label_value_length",
            f.max_label_value_length,
            base.max_label_value_len,
            1,
        )?,
        max_samples_per_request: pick(
            "max_samples_per_request",
            f.max_samples_per_request,
            base.max_samples_per_request,
            0,
        )?,
        ..base.clone()
    })
}

fn metrics_settings(
    o: &Overrides,
    f: FileMetrics,
    scrape: &[agent::scrape::ScrapeConfig],
) -> Result<MetricsSettings, ConfigError> {
    let d = tsdb::Options::default();
    let sd = agent::scrape::ScrapeDefaults::default();
    let prom_duration = |key: &str, v: &Option<String>, default: Duration| match v {
        None => Ok(default),
        Some(s) => agent::scrape::parse_duration(s)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                ConfigError(format!(
                    "config key `{key}`: '{s}' is not a positive duration (e.g. 15s, 1m, 1h30m)"
                ))
            }),
    };
    let defaults = agent::scrape::ScrapeDefaults {
        scrape_interval: prom_duration(
            "metrics.scrape_interval",
            &f.scrape_interval,
            sd.scrape_interval,
        )?,
        scrape_timeout: prom_duration(
            "metrics.scrape_timeout",
            &f.scrape_timeout,
            sd.scrape_timeout,
        )?,
    };
    let scrape_jobs = agent::scrape::compile_scrape_configs(scrape, &defaults)
        .map_err(|e| ConfigError(format!("config key {e}")))?;
    let retention = duration(
        "metrics.retention",
        o.metrics_retention.clone().or(f.retention),
        d.retention,
    )?;
    let block = duration(
        "metrics.block_duration",
        f.block_duration,
        Duration::from_millis(d.block_duration_ms as u64),
    )?;
    if block < Duration::from_secs(60) || block > Duration::from_secs(7 * 86_400) {
        return Err(ConfigError(
            "config key `metrics.block_duration`: between 1m and 7d".into(),
        ));
    }
    let ooo = match f.out_of_order_window {
        None => Duration::from_millis(d.ooo_window_ms as u64),
        Some(s) if s.trim() == "0" || s.trim() == "0s" => Duration::ZERO,
        Some(s) => duration("metrics.out_of_order_window", Some(s), Duration::ZERO)?,
    };
    let lookback = duration(
        "metrics.lookback_delta",
        f.lookback_delta,
        Duration::from_secs(300),
    )?;
    let query_timeout = duration(
        "metrics.query_timeout",
        f.query_timeout,
        Duration::from_secs(120),
    )?;
    let query_max_samples = f.query_max_samples.unwrap_or(50_000_000);
    if query_max_samples == 0 {
        return Err(ConfigError(
            "config key `metrics.query_max_samples`: must be at least 1".into(),
        ));
    }
    let max_request_bytes = f.max_request_bytes.unwrap_or(64 << 20);
    if !(1024..=(1 << 32)).contains(&max_request_bytes) {
        return Err(ConfigError(format!(
            "config key `metrics.max_request_bytes`: {max_request_bytes} is out of range (1024 to 4294967296)"
        )));
    }
    let max_series = f.max_series_per_project.unwrap_or(d.max_series_per_project);
    if max_series == 0 {
        return Err(ConfigError(
            "config key `metrics.max_series_per_project`: must be at least 1".into(),
        ));
    }
    let top = FileIngestLimits {
        max_series_per_project: None,
        max_label_names_per_series: f.max_label_names_per_series,
        max_label_name_length: f.max_label_name_length,
        max_label_value_length: f.max_label_value_length,
        max_samples_per_request: f.max_samples_per_request,
    };
    let limits = ingest_limits("metrics", &top, &ingest::validate::Limits::default())?;
    let mut project_limits = std::collections::HashMap::new();
    let mut project_series = std::collections::HashMap::new();
    for (p, l) in &f.projects {
        match l.max_series_per_project {
            Some(0) => {
                return Err(ConfigError(format!(
                    "config key `metrics.projects.{p}.max_series_per_project`: must be at least 1"
                )));
            }
            Some(n) => {
                project_series.insert(p.clone(), n);
            }
            None => {}
        }
        project_limits.insert(
            p.clone(),
            ingest_limits(&format!("metrics.projects.{p}"), l, &limits)?,
        );
    }
    Ok(MetricsSettings {
        tsdb: tsdb::Options {
            retention,
            max_bytes: f.max_bytes.filter(|b| *b > 0),
            block_duration_ms: block.as_millis() as i64,
            ooo_window_ms: ooo.as_millis() as i64,
            max_series_per_project: max_series,
            ..d
        },
        limits,
        project_limits,
        project_series,
        lookback,
        query_max_samples,
        query_timeout,
        max_request_bytes: max_request_bytes as usize,
        scrape_jobs,
        host_metrics: o.host_metrics.or(f.host_metrics).unwrap_or(true),
        host_metrics_interval: duration(
            "metrics.host_metrics_interval",
            f.host_metrics_interval,
            Duration::from_secs(15),
        )?,
    })
}

/// Validates one set of log limits over `base` (`prefix`: `logs` or
/// `logs.projects.<slug>`).
fn log_limits(
    prefix: &str,
    f: &FileLogLimits,
    base: &server::loki::limits::ProjectLimits,
) -> Result<server::loki::limits::ProjectLimits, ConfigError> {
    use server::loki::limits::MB;
    let key = |k: &str| format!("{prefix}.{k}");
    let at_least = |k: &str, v: Option<usize>, d: usize, min: usize| match v {
        None => Ok(d),
        Some(x) if x >= min => Ok(x),
        Some(x) => Err(ConfigError(format!(
            "config key `{}`: {x} is too small (at least {min})",
            key(k)
        ))),
    };
    let ns = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    let positive_mb = |k: &str, v: Option<f64>, d: f64| match v {
        None => Ok(d),
        Some(x) if x.is_finite() && x > 0.0 => Ok(x * MB),
        Some(x) => Err(ConfigError(format!(
            "config key `{}`: {x} is not a positive number of MB",
            key(k)
        ))),
    };
    let mut l = base.clone();
    if let Some(r) = &f.retention {
        l.retention.max_age_ns = Some(ns(duration(
            &key("retention"),
            Some(r.clone()),
            Duration::ZERO,
        )?));
    }
    if let Some(b) = f.max_bytes {
        l.retention.max_bytes = (b > 0).then_some(b);
    }
    l.entries.max_label_names_per_stream = at_least(
        "max_label_names_per_series",
        f.max_label_names_per_series,
        l.entries.max_label_names_per_stream,
        1,
    )?;
    l.entries.max_label_name_length = at_least(
        "max_label_name_length",
        f.max_label_name_length,
        l.entries.max_label_name_length,
        1,
    )?;
    l.entries.max_label_value_length = at_least(
        "max_label_value_length",
        f.max_label_value_length,
        l.entries.max_label_value_length,
        1,
    )?;
    l.entries.max_line_size =
        at_least("max_line_size", f.max_line_size, l.entries.max_line_size, 0)?;
    if l.entries.max_line_size > 16 << 20 {
        return Err(ConfigError(format!(
            "config key `{}`: at most 16777216 (16 MiB)",
            key("max_line_size")
        )));
    }
    match f.reject_old_samples_max_age.as_deref().map(str::trim) {
        None => {}
        Some("0" | "0s") => l.entries.reject_old_samples_max_age_ns = None,
        Some(s) => {
            l.entries.reject_old_samples_max_age_ns = Some(ns(duration(
                &key("reject_old_samples_max_age"),
                Some(s.to_string()),
                Duration::ZERO,
            )?))
        }
    }
    if let Some(s) = &f.creation_grace_period {
        l.entries.creation_grace_period_ns = ns(duration(
            &key("creation_grace_period"),
            Some(s.clone()),
            Duration::ZERO,
        )?);
    }
    l.rate_bytes = positive_mb("ingestion_rate_mb", f.ingestion_rate_mb, l.rate_bytes)?;
    l.burst_bytes = positive_mb(
        "ingestion_burst_size_mb",
        f.ingestion_burst_size_mb,
        l.burst_bytes,
    )?;
    l.max_streams = at_least(
        "max_streams_per_project",
        f.max_streams_per_project,
        l.max_streams,
        1,
    )?;
    Ok(l)
}

fn logs_settings(f: FileLogs) -> Result<server::loki::LogsConfig, ConfigError> {
    let d = server::loki::LogsConfig::default();
    let max_request_bytes = f.max_request_bytes.unwrap_or(d.max_request_bytes as u64);
    if !(1024..=(1 << 32)).contains(&max_request_bytes) {
        return Err(ConfigError(format!(
            "config key `logs.max_request_bytes`: {max_request_bytes} is out of range (1024 to 4294967296)"
        )));
    }
    let top = FileLogLimits {
        retention: f.retention,
        max_bytes: f.max_bytes,
        max_label_names_per_series: f.max_label_names_per_series,
        max_label_name_length: f.max_label_name_length,
        max_label_value_length: f.max_label_value_length,
        max_line_size: f.max_line_size,
        reject_old_samples_max_age: f.reject_old_samples_max_age,
        creation_grace_period: f.creation_grace_period,
        ingestion_rate_mb: f.ingestion_rate_mb,
        ingestion_burst_size_mb: f.ingestion_burst_size_mb,
        max_streams_per_project: f.max_streams_per_project,
    };
    let defaults = log_limits("logs", &top, &d.defaults)?;
    let mut projects = std::collections::HashMap::new();
    for (p, l) in &f.projects {
        projects.insert(
            p.clone(),
            log_limits(&format!("logs.projects.{p}"), l, &defaults)?,
        );
    }
    Ok(server::loki::LogsConfig {
        defaults,
        projects,
        max_request_bytes: max_request_bytes as usize,
        flush_age: duration("logs.flush_age", f.flush_age, d.flush_age)?,
        maintenance_interval: duration(
            "logs.maintenance_interval",
            f.maintenance_interval,
            d.maintenance_interval,
        )?,
        compact_target_bytes: d.compact_target_bytes,
    })
}

fn read_file(p: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(p)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", p.display())))?;
    toml::from_str(&text).map_err(|e| {
        ConfigError(format!(
            "config file {}: {}",
            p.display(),
            e.to_string().trim_end()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.toml");
        std::fs::write(&p, text).unwrap();
        load(&Overrides {
            config: Some(p),
            ..Default::default()
        })
    }

    #[test]
    fn defaults_apply() {
        let c = load(&Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9464");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn logs_section() {
        let c = with_file("").unwrap();
        assert_eq!(c.logs.defaults.entries.max_label_names_per_stream, 15);
        assert_eq!(c.logs.defaults.entries.max_line_size, 256 << 10);
        assert_eq!(c.logs.defaults.rate_bytes, 4.0 * 1024.0 * 1024.0);
        assert_eq!(c.logs.defaults.burst_bytes, 6.0 * 1024.0 * 1024.0);
        assert_eq!(
            c.logs.defaults.retention.max_age_ns,
            Some(744 * 3_600_000_000_000)
        );
        let c = with_file(
            "[logs]\nretention = \"7d\"\nmax_line_size = 1000\ningestion_rate_mb = 1.5\n\
             reject_old_samples_max_age = \"0\"\nmax_streams_per_project = 5\n\
             [logs.projects.p1]\nmax_streams_per_project = 9\nmax_bytes = 1000000",
        )
        .unwrap();
        let l = &c.logs.defaults;
        assert_eq!(l.retention.max_age_ns, Some(7 * 86_400_000_000_000));
        assert_eq!(l.entries.max_line_size, 1000);
        assert_eq!(l.rate_bytes, 1.5 * 1024.0 * 1024.0);
        assert_eq!(l.entries.reject_old_samples_max_age_ns, None);
        assert_eq!(l.max_streams, 5);
        let p = &c.logs.projects["p1"];
        assert_eq!(
            (p.max_streams, p.entries.max_line_size),
            (9, 1000),
            "inherits [logs]"
        );
        assert_eq!(p.retention.max_bytes, Some(1_000_000));
        for (text, key) in [
            ("[logs]\nbogus = 1", "bogus"),
            ("[logs]\ningestion_rate_mb = 0", "logs.ingestion_rate_mb"),
            ("[logs]\nretention = \"x\"", "logs.retention"),
            (
                "[logs.projects.p]\nmax_label_names_per_series = 0",
                "logs.projects.p.max_label_names_per_series",
            ),
            ("[logs.projects.p]\nnope = 0", "nope"),
            ("[logs]\nmax_request_bytes = 10", "logs.max_request_bytes"),
        ] {
            let e = with_file(text).unwrap_err().0;
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let e = with_file("listen = \"nope\"").unwrap_err().0;
        assert!(e.contains("`listen`"), "{e}");
        let e = with_file("bogus = 1").unwrap_err().0;
        assert!(e.contains("bogus"), "{e}");
        let e = with_file("[auth]\nsession_ttl = \"soon\"").unwrap_err().0;
        assert!(e.contains("auth.session_ttl"), "{e}");
        let e = with_file("[limits]\nmax_body_bytes = \"big\"")
            .unwrap_err()
            .0;
        assert!(e.contains("max_body_bytes"), "{e}");
        let e = with_file("[metrics]\nmax_label_names_per_series = 0")
            .unwrap_err()
            .0;
        assert!(e.contains("metrics.max_label_names_per_series"), "{e}");
        let e = with_file("[metrics.projects.p1]\nmax_label_value_length = 0")
            .unwrap_err()
            .0;
        assert!(
            e.contains("metrics.projects.p1.max_label_value_length"),
            "{e}"
        );
        let c = with_file("[metrics]\nmax_samples_per_request = 10\nretention = \"30d\"\n[metrics.projects.p1]\nmax_label_names_per_series = 5").unwrap();
        assert_eq!(c.metrics.project_limits["p1"].max_label_names_per_series, 5);
        assert_eq!(
            c.metrics.project_limits["p1"].max_samples_per_request, 10,
            "inherits [metrics]"
        );
        assert_eq!(c.metrics.tsdb.retention, Duration::from_secs(30 * 86_400));
        let c = with_file("[metrics]\nmax_series_per_project = 10\n[metrics.projects.big]\nmax_series_per_project = 99").unwrap();
        assert_eq!(c.metrics.tsdb.max_series_per_project, 10);
        assert_eq!(c.metrics.project_series["big"], 99);
        let e = with_file("[metrics]\nbogus = 1").unwrap_err().0;
        assert!(e.contains("bogus"), "{e}");
        let e = with_file("[audit]\nretention_days = 0").unwrap_err().0;
        assert!(e.contains("audit.retention_days"), "{e}");
        let c =
            with_file("[audit]\nretention_days = 30\nretention_check_interval = \"5m\"").unwrap();
        assert_eq!(c.server.audit_retention_days, 30);
        assert_eq!(c.server.retention_check_interval, Duration::from_secs(300));
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.toml");
        std::fs::write(
            &p,
            "listen = \"127.0.0.1:1\"\n[auth]\nlogin_window = \"1m\"",
        )
        .unwrap();
        let c = load(&Overrides {
            config: Some(p),
            listen: Some("127.0.0.1:2".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.listen.port(), 2);
        assert_eq!(c.server.login_window, Duration::from_secs(60));
    }

    #[test]
    fn witnesses_are_validated_and_flags_replace_the_file() {
        let w = |seed: u8| {
            merkle::CosignatureSigner::from_seed("w.example", &[seed; 32])
                .unwrap()
                .verifier()
                .to_string()
        };
        let c = with_file(&format!(
            "[audit]\nwitnesses = [\"{}\", \"{}\"]",
            w(1),
            w(2)
        ))
        .unwrap();
        assert_eq!(c.server.witnesses.len(), 2);
        let e = with_file("[audit]\nwitnesses = [\"nope\"]").unwrap_err().0;
        assert!(e.contains("`audit.witnesses`") && e.contains("nope"), "{e}");
        // A log (0x01) key is not a witness key.
        let log_key = merkle::SignerKey::from_seed("w.example", &[1; 32])
            .unwrap()
            .verifier()
            .to_string();
        let e = with_file(&format!("[audit]\nwitnesses = [\"{log_key}\"]"))
            .unwrap_err()
            .0;
        assert!(e.contains("0x04"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.toml");
        std::fs::write(&p, format!("[audit]\nwitnesses = [\"{}\"]", w(1))).unwrap();
        let c = load(&Overrides {
            config: Some(p),
            audit_witnesses: Some(vec![w(2), w(3)]),
            ..Default::default()
        })
        .unwrap();
        let got: Vec<String> = c.server.witnesses.iter().map(|v| v.to_string()).collect();
        assert_eq!(got, [w(2), w(3)]);
        assert!(
            load(&Overrides::default())
                .unwrap()
                .server
                .witnesses
                .is_empty()
        );
    }

    #[test]
    fn audit_log_name_file_env_flag() {
        assert_eq!(
            load(&Overrides::default()).unwrap().audit.log_name,
            "flightdeck"
        );
        let c = with_file("[audit]\nlog_name = \"audit.example.com\"").unwrap();
        assert_eq!(c.audit.log_name, "audit.example.com");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.toml");
        std::fs::write(&p, "[audit]\nlog_name = \"from-file\"").unwrap();
        let c = load(&Overrides {
            config: Some(p),
            audit_log_name: Some("from-flag".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.audit.log_name, "from-flag");
        for bad in ["", "a b", "a+b", "tab\there", "é", &"x".repeat(101)] {
            let e = load(&Overrides {
                audit_log_name: Some(bad.into()),
                ..Default::default()
            })
            .unwrap_err()
            .0;
            assert!(e.contains("`audit.log_name`"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn audit_checkpoint_interval() {
        assert_eq!(
            load(&Overrides::default())
                .unwrap()
                .audit
                .checkpoint_interval,
            Duration::from_millis(500)
        );
        let c = with_file("[audit]\ncheckpoint_interval = \"2s\"").unwrap();
        assert_eq!(c.audit.checkpoint_interval, Duration::from_secs(2));
        for bad in ["0s", "soon", "2h"] {
            let e = with_file(&format!("[audit]\ncheckpoint_interval = \"{bad}\""))
                .unwrap_err()
                .0;
            assert!(e.contains("`audit.checkpoint_interval`"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("12h"), Some(Duration::from_secs(43200)));
        assert_eq!(parse_duration("12"), None);
        assert_eq!(parse_duration("h"), None);
    }
}
