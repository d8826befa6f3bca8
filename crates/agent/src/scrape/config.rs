//! `scrape_configs`: the raw TOML shape ([`ScrapeConfig`]) and the validated
//! job the scraper runs ([`ScrapeJob`]).
//!
//! The keys are Prometheus' (`job_name`, `scrape_interval`, …) so a
//! Prometheus scrape config translates line by line from YAML to TOML;
//! `project` is Flightdeck's (which project the samples are written to).
//! Defaults are Prometheus': interval 1m, timeout 10s (never above the
//! interval when not given), `/metrics`, `http`, `honor_timestamps = true`.
//! Static targets are resolved here, so a target that relabeling leaves
//! without an address is a configuration error, not a log line.
//!
//! ```toml
//! [[scrape_configs]]
//! job_name = "node"
//! scrape_interval = "15s"
//! static_configs = [{ targets = ["localhost:9100"], labels = { env = "prod" } }]
//! metric_relabel_configs = [{ action = "drop", source_labels = ["__name__"], regex = "go_.*" }]
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use ingest::relabel::{self, RelabelConfig, RelabelConfigError, Relabeler};
use serde::Deserialize;

use super::target::{self, DroppedTarget, Target, TargetError};

/// One `[[scrape_configs]]` entry as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    pub job_name: String,
    /// Flightdeck: the project the samples belong to (default `default`).
    pub project: Option<String>,
    pub scrape_interval: Option<String>,
    pub scrape_timeout: Option<String>,
    pub metrics_path: Option<String>,
    pub scheme: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, Vec<String>>,
    pub basic_auth: Option<BasicAuth>,
    pub authorization: Option<Authorization>,
    /// Prometheus 2's shorthand for `authorization.credentials`.
    pub bearer_token: Option<String>,
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
    #[serde(default)]
    pub relabel_configs: Vec<RelabelConfig>,
    #[serde(default)]
    pub metric_relabel_configs: Vec<RelabelConfig>,
    pub honor_labels: Option<bool>,
    pub honor_timestamps: Option<bool>,
    /// Most samples a scrape may have after metric relabeling (0: no limit).
    pub sample_limit: Option<u64>,
    /// Most labels a series may have after metric relabeling (0: no limit).
    pub label_limit: Option<u64>,
    /// Largest uncompressed body accepted, in bytes (default and maximum 64 MiB).
    pub body_size_limit: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// The scheme word of the `Authorization` header (default `Bearer`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub credentials: Option<String>,
    pub credentials_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    pub targets: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Defaults for jobs that do not set their own (Prometheus' `global`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScrapeDefaults {
    pub scrape_interval: Duration,
    pub scrape_timeout: Duration,
}

impl Default for ScrapeDefaults {
    fn default() -> Self {
        ScrapeDefaults {
            scrape_interval: Duration::from_secs(60),
            scrape_timeout: Duration::from_secs(10),
        }
    }
}

/// Largest body a scrape may return, after decompression.
pub const MAX_BODY_BYTES: u64 = 64 << 20;

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A secret given inline or read from a file at every scrape (so rotated
/// files take effect, as in Prometheus). Debug never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Inline(String),
    File(PathBuf),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Secret(<inline>)"),
            Secret::File(p) => write!(f, "Secret(file {})", p.display()),
        }
    }
}

impl Secret {
    /// The value; a file's content is trimmed of surrounding whitespace.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .map_err(|e| format!("cannot read secret file {}: {e}", p.display())),
        }
    }
}

/// How a job authenticates to its targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    Basic {
        username: String,
        password: Secret,
    },
    /// `Authorization: <kind> <credentials>`.
    Header {
        kind: String,
        credentials: Secret,
    },
}

/// A validated scrape job: what the scraper runs.
#[derive(Clone, Debug)]
pub struct ScrapeJob {
    pub job_name: String,
    pub project: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub metrics_path: String,
    pub scheme: Scheme,
    pub params: BTreeMap<String, Vec<String>>,
    pub auth: Option<Auth>,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    /// 0: no limit.
    pub sample_limit: u64,
    /// 0: no limit.
    pub label_limit: u64,
    pub body_size_limit: u64,
    pub relabel: Vec<Relabeler>,
    pub metric_relabel: Vec<Relabeler>,
    /// The targets relabeling kept, in configuration order, duplicates
    /// (same labels) removed.
    pub targets: Vec<Target>,
    /// The targets relabeling dropped.
    pub dropped: Vec<DroppedTarget>,
}

/// A `scrape_configs` entry that cannot run: which one, which key, why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("scrape_configs[{index}] (job {job:?}), `{key}`: {problem}")]
pub struct ScrapeConfigError {
    pub index: usize,
    pub job: String,
    pub key: String,
    pub problem: ConfigProblem,
}

/// Why a scrape config is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    #[error("job_name must not be empty")]
    EmptyJobName,
    #[error("another scrape config already has this job_name (names must be unique)")]
    DuplicateJobName,
    #[error("{0:?} is not a duration (use e.g. 15s, 1m, 1h30m, 500ms; units y w d h m s ms)")]
    BadDuration(String),
    #[error("must be greater than 0")]
    Zero,
    #[error("scrape_timeout {timeout} is greater than scrape_interval {interval}")]
    TimeoutAboveInterval { timeout: String, interval: String },
    #[error("{0:?} is not a scheme (use \"http\" or \"https\")")]
    BadScheme(String),
    #[error("{0:?} must start with '/'")]
    BadMetricsPath(String),
    #[error(
        "{0:?} is not a project name (use 1 to 100 characters: letters, digits, '-', '_', '.')"
    )]
    BadProject(String),
    #[error("set only one of basic_auth, authorization and bearer_token/bearer_token_file")]
    AuthConflict,
    #[error("set exactly one of {0}")]
    OneOf(&'static str),
    #[error("{0:?} is not a label name (use letters, digits and '_', not starting with a digit)")]
    BadLabelName(String),
    #[error("{0}")]
    Relabel(Box<RelabelConfigError>),
    #[error("{0}")]
    Target(Box<TargetError>),
    #[error("must be at most {max} bytes, got {got}")]
    TooLarge { max: u64, got: u64 },
}

/// Validates every entry and resolves its static targets. Errors name the
/// entry, its job and the key.
pub fn compile_scrape_configs(
    configs: &[ScrapeConfig],
    defaults: &ScrapeDefaults,
) -> Result<Vec<ScrapeJob>, ScrapeConfigError> {
    let mut names = HashSet::new();
    let mut jobs = Vec::with_capacity(configs.len());
    for (index, c) in configs.iter().enumerate() {
        let fail = |key: &str, problem: ConfigProblem| ScrapeConfigError {
            index,
            job: c.job_name.clone(),
            key: key.to_owned(),
            problem,
        };
        if !names.insert(c.job_name.as_str()) {
            return Err(fail("job_name", ConfigProblem::DuplicateJobName));
        }
        jobs.push(compile_one(c, defaults).map_err(|(k, p)| fail(&k, p))?);
    }
    Ok(jobs)
}

type Fail = (String, ConfigProblem);

fn duration_key(key: &str, v: &Option<String>) -> Result<Option<Duration>, Fail> {
    match v {
        None => Ok(None),
        Some(s) => match parse_duration(s) {
            None => Err((key.into(), ConfigProblem::BadDuration(s.clone()))),
            Some(d) if d.is_zero() => Err((key.into(), ConfigProblem::Zero)),
            Some(d) => Ok(Some(d)),
        },
    }
}

fn valid_project(p: &str) -> bool {
    (1..=100).contains(&p.len())
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn compile_one(c: &ScrapeConfig, defaults: &ScrapeDefaults) -> Result<ScrapeJob, Fail> {
    if c.job_name.is_empty() {
        return Err(("job_name".into(), ConfigProblem::EmptyJobName));
    }
    let project = c.project.clone().unwrap_or_else(|| "default".into());
    if !valid_project(&project) {
        return Err(("project".into(), ConfigProblem::BadProject(project)));
    }
    let interval =
        duration_key("scrape_interval", &c.scrape_interval)?.unwrap_or(defaults.scrape_interval);
    let timeout = match duration_key("scrape_timeout", &c.scrape_timeout)? {
        Some(t) => t,
        None => defaults.scrape_timeout.min(interval),
    };
    if timeout > interval {
        return Err((
            "scrape_timeout".into(),
            ConfigProblem::TimeoutAboveInterval {
                timeout: format_duration(timeout),
                interval: format_duration(interval),
            },
        ));
    }
    let metrics_path = c.metrics_path.clone().unwrap_or_else(|| "/metrics".into());
    if !metrics_path.starts_with('/') {
        return Err((
            "metrics_path".into(),
            ConfigProblem::BadMetricsPath(metrics_path),
        ));
    }
    let scheme = match c.scheme.as_deref() {
        None | Some("http") => Scheme::Http,
        Some("https") => Scheme::Https,
        Some(other) => return Err(("scheme".into(), ConfigProblem::BadScheme(other.into()))),
    };
    let auth = compile_auth(c)?;
    let body_size_limit = match c.body_size_limit {
        None | Some(0) => MAX_BODY_BYTES,
        Some(n) if n > MAX_BODY_BYTES => {
            return Err((
                "body_size_limit".into(),
                ConfigProblem::TooLarge {
                    max: MAX_BODY_BYTES,
                    got: n,
                },
            ));
        }
        Some(n) => n,
    };
    let relabel = relabel::compile(&c.relabel_configs).map_err(|e| {
        (
            "relabel_configs".to_owned(),
            ConfigProblem::Relabel(Box::new(e)),
        )
    })?;
    let metric_relabel = relabel::compile(&c.metric_relabel_configs).map_err(|e| {
        (
            "metric_relabel_configs".to_owned(),
            ConfigProblem::Relabel(Box::new(e)),
        )
    })?;

    let mut job = ScrapeJob {
        job_name: c.job_name.clone(),
        project,
        interval,
        timeout,
        metrics_path,
        scheme,
        params: c.params.clone(),
        auth,
        honor_labels: c.honor_labels.unwrap_or(false),
        honor_timestamps: c.honor_timestamps.unwrap_or(true),
        sample_limit: c.sample_limit.unwrap_or(0),
        label_limit: c.label_limit.unwrap_or(0),
        body_size_limit,
        relabel,
        metric_relabel,
        targets: Vec::new(),
        dropped: Vec::new(),
    };
    let mut seen = HashSet::new();
    for (gi, group) in c.static_configs.iter().enumerate() {
        if let Some(bad) = group.labels.keys().find(|k| !model::is_valid_label_name(k)) {
            return Err((
                format!("static_configs[{gi}].labels"),
                ConfigProblem::BadLabelName(bad.clone()),
            ));
        }
        for (ti, address) in group.targets.iter().enumerate() {
            match target::populate(&job, &group.labels, address) {
                Ok(Ok(t)) => {
                    if seen.insert(t.labels.clone()) {
                        job.targets.push(t);
                    }
                }
                Ok(Err(dropped)) => job.dropped.push(dropped),
                Err(e) => {
                    return Err((
                        format!("static_configs[{gi}].targets[{ti}]"),
                        ConfigProblem::Target(Box::new(e)),
                    ));
                }
            }
        }
    }
    Ok(job)
}

fn compile_auth(c: &ScrapeConfig) -> Result<Option<Auth>, Fail> {
    let bearer = c.bearer_token.is_some() || c.bearer_token_file.is_some();
    let count = [c.basic_auth.is_some(), c.authorization.is_some(), bearer]
        .iter()
        .filter(|b| **b)
        .count();
    if count > 1 {
        return Err(("basic_auth".into(), ConfigProblem::AuthConflict));
    }
    let secret = |key: &str,
                  what: &'static str,
                  inline: &Option<String>,
                  file: &Option<PathBuf>|
     -> Result<Secret, Fail> {
        match (inline, file) {
            (Some(s), None) => Ok(Secret::Inline(s.clone())),
            (None, Some(p)) => Ok(Secret::File(p.clone())),
            _ => Err((key.into(), ConfigProblem::OneOf(what))),
        }
    };
    if let Some(b) = &c.basic_auth {
        let password = secret(
            "basic_auth",
            "password and password_file",
            &b.password,
            &b.password_file,
        )?;
        return Ok(Some(Auth::Basic {
            username: b.username.clone(),
            password,
        }));
    }
    if let Some(a) = &c.authorization {
        let credentials = secret(
            "authorization",
            "credentials and credentials_file",
            &a.credentials,
            &a.credentials_file,
        )?;
        let kind = a.kind.clone().unwrap_or_else(|| "Bearer".into());
        if kind.is_empty()
            || kind.eq_ignore_ascii_case("basic")
            || kind.contains(char::is_whitespace)
        {
            return Err((
                "authorization.type".into(),
                ConfigProblem::OneOf("a single word other than Basic (use basic_auth for Basic)"),
            ));
        }
        return Ok(Some(Auth::Header { kind, credentials }));
    }
    if bearer {
        let credentials = secret(
            "bearer_token",
            "bearer_token and bearer_token_file",
            &c.bearer_token,
            &c.bearer_token_file,
        )?;
        return Ok(Some(Auth::Header {
            kind: "Bearer".into(),
            credentials,
        }));
    }
    Ok(None)
}

const MS: u64 = 1;
const SEC: u64 = 1000 * MS;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;
const WEEK: u64 = 7 * DAY;
const YEAR: u64 = 365 * DAY;
const UNITS: [(&str, u64); 7] = [
    ("y", YEAR),
    ("w", WEEK),
    ("d", DAY),
    ("h", HOUR),
    ("m", MIN),
    ("s", SEC),
    ("ms", MS),
];

/// Parses a Prometheus duration: `0`, or number-unit pairs with units
/// `y w d h m s ms`, each at most once and largest first (`1h30m`, `15s`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total: u64 = 0;
    let mut next_unit = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // "ms" before "m", so try the longer unit at this position first.
        let (ui, unit_len) = UNITS
            .iter()
            .enumerate()
            .skip(next_unit)
            .filter(|(_, (u, _))| rest.starts_with(u))
            .map(|(i, (u, _))| (i, u.len()))
            .max_by_key(|&(_, len)| len)?;
        if rest[unit_len..].starts_with(|c: char| c.is_ascii_alphabetic()) {
            return None;
        }
        total = total.checked_add(n.checked_mul(UNITS[ui].1)?)?;
        rest = &rest[unit_len..];
        next_unit = ui + 1;
    }
    Some(Duration::from_millis(total))
}

/// Formats a duration as Prometheus does (`1m`, `1h30m`, `0s`; years and
/// weeks only when exact).
pub fn format_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, mult) in UNITS {
        let exact_only = mult >= WEEK;
        if exact_only && ms % mult != 0 {
            continue;
        }
        let v = ms / mult;
        if v > 0 {
            out += &format!("{v}{unit}");
            ms -= v * mult;
        }
    }
    out
}
