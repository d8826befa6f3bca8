//! `flightdeck agent`: collects this host's metrics (node exporter's names)
//! and its own `process_*` metrics every interval and pushes them over
//! Prometheus remote write to a Flightdeck (or any remote-write receiver),
//! labelled `job`/`instance` as a scrape would be. Batches that fail to
//! send (receiver down, 5xx) are kept, up to a bound, and sent first on the
//! next round, so a short outage loses nothing.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Batches kept while the receiver is unreachable (one per interval).
const MAX_PENDING: usize = 240;

#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Remote write URL, e.g. http://flightdeck.example:9464/api/v1/write.
    #[arg(long, env = "FLIGHTDECK_AGENT_PUSH")]
    push: String,
    /// A token with `metrics:write` in the project the metrics belong to.
    #[arg(long, env = "FLIGHTDECK_AGENT_TOKEN", hide_env_values = true)]
    token: String,
    /// Collection interval [default: 15s].
    #[arg(long, default_value = "15s")]
    interval: String,
    /// The `instance` label [default: this host's name].
    #[arg(long)]
    instance: Option<String>,
    /// The `job` label.
    #[arg(long, default_value = "flightdeck")]
    job: String,
    /// Collect and push once, then exit (exit 1 if the push failed).
    #[arg(long)]
    once: bool,
}

pub fn run(a: AgentArgs) -> anyhow::Result<ExitCode> {
    let Some(interval) = crate::config::parse_duration(&a.interval).filter(|d| !d.is_zero()) else {
        bail!(
            "--interval: '{}' is not a positive duration (e.g. 15s, 1m)",
            a.interval
        );
    };
    if !(a.push.starts_with("http://") || a.push.starts_with("https://")) {
        bail!("--push: '{}' is not an http(s) URL", a.push);
    }
    let instance = a.instance.clone().unwrap_or_else(|| {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    });
    let mut pusher = agent::push::Pusher::new(&a.push, &a.token, Duration::from_secs(30));
    if a.once {
        pusher.attempts = 3;
    }
    let host = agent::host::HostCollector::default();
    let process = agent::process::ProcessCollector::default();
    let mut pending: VecDeque<model::WriteBatch> = VecDeque::new();
    loop {
        let started = Instant::now();
        let now = time::OffsetDateTime::now_utc();
        let mut c = host.collect(now.unix_timestamp_nanos() as f64 / 1e9);
        if let Ok(p) = process.collect() {
            c.extend(p);
        }
        let t_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
        let batch = c.into_target_batch(t_ms, &a.job, &instance);
        let series = batch.series.len();
        pending.push_back(batch);
        while pending.len() > MAX_PENDING {
            pending.pop_front();
            tracing::warn!("receiver unreachable for too long: dropped the oldest unsent batch");
        }
        while let Some(b) = pending.front() {
            match pusher.push(b) {
                Ok(()) => {
                    pending.pop_front();
                }
                Err(e @ agent::push::PushError::Refused { .. }) => {
                    // Retrying a refused batch cannot help.
                    pending.pop_front();
                    if a.once {
                        return Err(e).context("push refused");
                    }
                    tracing::error!(error = %e, "batch refused; dropped");
                }
                Err(e) => {
                    if a.once {
                        return Err(e).context("push failed");
                    }
                    tracing::warn!(error = %e, pending = pending.len(), "push failed; will retry next round");
                    break;
                }
            }
        }
        if a.once {
            println!("pushed {series} series to {}", a.push);
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}
