//! A target's labels and URL, as Prometheus' `PopulateLabels` and
//! `Target.URL` make them.
//!
//! Start: the static group's labels and `__address__`. Defaults are added
//! where not set: `job`, `__scheme__`, `__metrics_path__`,
//! `__scrape_interval__`, `__scrape_timeout__`, and `__param_<name>` for
//! the first value of each `params` entry. That set is the target's
//! *discovered labels*. `relabel_configs` run over it (and may drop the
//! target); `__meta_*` labels are removed; `instance` defaults to
//! `__address__`. The remaining `__`-prefixed labels steer the scrape (URL,
//! interval, timeout) and are not attached to samples.

use std::time::Duration;

use ingest::relabel;
use model::{Labels, LabelsBuilder};

use super::config::{ScrapeJob, format_duration, parse_duration};

pub const ADDRESS: &str = "__address__";
pub const SCHEME: &str = "__scheme__";
pub const METRICS_PATH: &str = "__metrics_path__";
pub const SCRAPE_INTERVAL: &str = "__scrape_interval__";
pub const SCRAPE_TIMEOUT: &str = "__scrape_timeout__";
pub const PARAM_PREFIX: &str = "__param_";
pub const META_PREFIX: &str = "__meta_";

/// A target to scrape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The labels after relabeling, `__`-prefixed ones included.
    pub labels: Labels,
    /// The labels before relabeling.
    pub discovered_labels: Labels,
    /// The URL to GET.
    pub url: String,
    pub interval: Duration,
    pub timeout: Duration,
}

impl Target {
    /// The labels samples get: those without the `__` prefix.
    pub fn public_labels(&self) -> Labels {
        public(&self.labels)
    }
}

fn public(l: &Labels) -> Labels {
    Labels::from_sorted_unchecked(
        l.iter()
            .filter(|l| !l.name.starts_with("__"))
            .cloned()
            .collect(),
    )
}

/// A target that relabeling dropped, shown as `droppedTargets`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedTarget {
    pub job: String,
    pub discovered_labels: Labels,
}

/// Why a target's labels cannot be scraped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("no __address__ label after relabeling (discovered labels {0})")]
    NoAddress(Labels),
    #[error("{0:?} is not a valid host:port address (no scheme, path or '/')")]
    BadAddress(String),
    #[error("__scheme__ {0:?} after relabeling is not http or https")]
    BadScheme(String),
    #[error("{label} {value:?} after relabeling is not a positive duration")]
    BadDuration { label: &'static str, value: String },
    #[error("scrape timeout {timeout} is greater than scrape interval {interval} after relabeling")]
    TimeoutAboveInterval { timeout: String, interval: String },
    #[error("label {0:?} after relabeling is not a valid label name")]
    BadLabelName(String),
}

/// Builds a static target. `Ok(Err(_))`: relabeling dropped it.
pub fn populate(
    job: &ScrapeJob,
    group_labels: &std::collections::BTreeMap<String, String>,
    address: &str,
) -> Result<Result<Target, DroppedTarget>, TargetError> {
    let mut b = LabelsBuilder::default();
    for (k, v) in group_labels {
        b.set(k.clone(), v.clone());
    }
    b.set(ADDRESS, address);
    let defaults = [
        ("job", job.job_name.clone()),
        (SCRAPE_INTERVAL, format_duration(job.interval)),
        (SCRAPE_TIMEOUT, format_duration(job.timeout)),
        (METRICS_PATH, job.metrics_path.clone()),
        (SCHEME, job.scheme.as_str().to_owned()),
    ];
    for (k, v) in defaults {
        if b.get(k).is_none_or(str::is_empty) {
            b.set(k, v);
        }
    }
    for (k, vs) in &job.params {
        let name = format!("{PARAM_PREFIX}{k}");
        if let Some(v) = vs.first()
            && b.get(&name).is_none_or(str::is_empty)
        {
            b.set(name, v.clone());
        }
    }
    let discovered = b.build();
    let Some(after) = relabel::process(&discovered, &job.relabel) else {
        return Ok(Err(DroppedTarget {
            job: job.job_name.clone(),
            discovered_labels: discovered,
        }));
    };
    let Some(addr) = after.get(ADDRESS).map(str::to_owned) else {
        return Err(TargetError::NoAddress(discovered));
    };
    if addr.contains('/') || addr.contains('?') || addr.contains('#') || addr.contains('@') {
        return Err(TargetError::BadAddress(addr));
    }
    let scheme = after.get(SCHEME).unwrap_or("http").to_owned();
    if scheme != "http" && scheme != "https" {
        return Err(TargetError::BadScheme(scheme));
    }
    let dur = |label: &'static str, dflt: Duration| match after.get(label) {
        None => Ok(dflt),
        Some(v) => match parse_duration(v) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(TargetError::BadDuration {
                label,
                value: v.to_owned(),
            }),
        },
    };
    let interval = dur(SCRAPE_INTERVAL, job.interval)?;
    let timeout = dur(SCRAPE_TIMEOUT, job.timeout)?;
    if timeout > interval {
        return Err(TargetError::TimeoutAboveInterval {
            timeout: format_duration(timeout),
            interval: format_duration(interval),
        });
    }
    let mut b = after.builder();
    b.retain(|n| !n.starts_with(META_PREFIX));
    if b.get("instance").is_none_or(str::is_empty) {
        b.set("instance", addr.clone());
    }
    let labels = b.build();
    // `__` labels never reach samples (and `__param_<key>` takes any key).
    if let Some(bad) = labels
        .iter()
        .find(|l| !l.name.starts_with("__") && !model::is_valid_label_name(&l.name))
    {
        return Err(TargetError::BadLabelName(bad.name.clone()));
    }
    let url = build_url(&labels, job, &scheme, &addr);
    Ok(Ok(Target {
        labels,
        discovered_labels: discovered,
        url,
        interval,
        timeout,
    }))
}

/// `scheme://address/path?params`, the job's params overridden (first
/// value) by `__param_*` labels; keys sorted as Go's `url.Values.Encode`.
fn build_url(labels: &Labels, job: &ScrapeJob, scheme: &str, addr: &str) -> String {
    let mut params = job.params.clone();
    for l in labels.iter() {
        if let Some(k) = l.name.strip_prefix(PARAM_PREFIX) {
            let vs = params.entry(k.to_owned()).or_default();
            if vs.is_empty() {
                vs.push(l.value.clone());
            } else {
                vs[0] = l.value.clone();
            }
        }
    }
    let path = labels.get(METRICS_PATH).unwrap_or("/metrics");
    let mut url = format!("{scheme}://{addr}{path}");
    let mut first = true;
    for (k, vs) in &params {
        for v in vs {
            url.push(if first { '?' } else { '&' });
            first = false;
            query_escape(&mut url, k);
            url.push('=');
            query_escape(&mut url, v);
        }
    }
    url
}

/// Go's `url.QueryEscape`: unreserved bytes stay, space becomes `+`,
/// everything else `%XX`.
fn query_escape(out: &mut String, s: &str) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}
