//! The `flightdeck` binary: command line, configuration, wiring of the
//! stores into the server, first-start bootstrap, signals. No business
//! logic lives here; `anyhow` is used only in this crate.

mod agent_cmd;
mod audit_cmd;
mod config;
mod hostlogs;
mod hostlogs_config;
mod promqltest_cmd;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: with glibc's malloc, 20–30 %
/// of the server's CPU under many concurrent requests went to malloc/free
/// (arena contention and `malloc_consolidate`; see
/// bench/results/http-append-2026-11-26.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Flightdeck: metrics, logs, dashboards and alerts (the cockpit) and a
/// tamper-evident audit trail (the flight recorder), in one binary.
///
/// Every configuration key can be set in the TOML file (--config), as a
/// FLIGHTDECK_* environment variable, or as a flag; flags and environment
/// win over the file.
#[derive(Parser)]
#[command(name = "flightdeck", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server. On the very first start it creates the organization,
    /// the `default` project, the `admin` user and an admin API token, and
    /// prints the password and token once.
    Serve(config::Overrides),
    /// Read the audit trail from a data directory or a server.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// Collect this host's metrics and push them by remote write to a
    /// Flightdeck (standalone agent).
    Agent(agent_cmd::AgentArgs),
    /// Run PromQL test scripts (Prometheus' promqltest format: load, clear,
    /// eval) against the built-in engine; prints a line per failure and ends
    /// with `promqltest: N passed, M failed, K skipped`.
    Promqltest(promqltest_cmd::PromqltestArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(o) => {
            let cfg = match config::load(&o) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("flightdeck: bad configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            // The self-log layer catches events from the start; its
            // receiving end is started once the log store is open.
            let (layer, self_logs) = if cfg.host_logs.self_logs {
                let (l, r) = server::hostlogs::selflog::self_logs(SELF_LOG_QUEUE);
                (Some(l), Some(r))
            } else {
                (None, None)
            };
            init_tracing_with(&cfg.log_level, layer);
            match serve(cfg, self_logs) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("flightdeck: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Agent(a) => {
            init_tracing("info");
            match agent_cmd::run(a) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("flightdeck agent: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Promqltest(a) => promqltest_cmd::run(a),
        Command::Audit(cmd) => match audit_cmd::run(cmd) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("flightdeck audit: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Flightdeck's own log events queued for the log store at most; more are
/// dropped and counted (`flightdeck_self_logs_dropped_total`).
const SELF_LOG_QUEUE: usize = 8192;

fn init_tracing(filter: &str) {
    init_tracing_with(filter, None);
}

/// stderr, plus the self-log layer when given; the filter applies to both.
fn init_tracing_with(filter: &str, self_logs: Option<server::hostlogs::selflog::SelfLogLayer>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(filter))
        .with(fmt)
        .with(self_logs)
        .try_init();
}

fn now_ns() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

/// Opens the stores in the data directory.
pub fn open_stores(
    data_dir: &Path,
    audit_opts: audit::Options,
) -> anyhow::Result<(Arc<meta::Meta>, audit::AuditLog)> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let name = audit_opts.tlog_name.clone();
    let audit = audit::AuditLog::open(&data_dir.join("audit"), audit_opts)
        .with_context(|| format!("cannot open the audit log in {}", data_dir.display()))?;
    // The key keeps the name it was created with (its id is derived from it).
    let key_name = audit
        .verifier_key()
        .split('+')
        .next()
        .unwrap_or("")
        .to_string();
    if key_name != name {
        tracing::warn!(
            configured = %name,
            key = %key_name,
            "audit.log_name differs from the name of the existing checkpoint signing key; the key's name stays in use (it applies only when the key is first created)"
        );
    }
    let meta = meta::Meta::open(&data_dir.join("meta.sqlite"))
        .with_context(|| format!("cannot open metadata in {}", data_dir.display()))?;
    Ok((Arc::new(meta), audit))
}

fn serve(
    cfg: config::Config,
    self_logs: Option<server::hostlogs::selflog::SelfLogs>,
) -> anyhow::Result<()> {
    let (meta, audit) = open_stores(
        &cfg.data_dir,
        audit::Options {
            tlog_name: cfg.audit.log_name.clone(),
            checkpoint_interval: cfg.audit.checkpoint_interval,
            ..Default::default()
        },
    )?;
    let organization =
        match server::bootstrap::first_start(&meta, &audit, &cfg.organization, now_ns())? {
            Some((password, token)) => {
                // Shown once, never again: only hashes are stored.
                let mut out = std::io::stdout().lock();
                writeln!(out, "admin password: {password}")?;
                writeln!(out, "admin token: {token}")?;
                out.flush()?;
                cfg.organization.clone()
            }
            None => meta
                .read(|tx| tx.organization())?
                .map(|o| o.name)
                .unwrap_or(cfg.organization.clone()),
        };
    let tsdb_dir = cfg.data_dir.join("tsdb");
    let db = Arc::new(
        tsdb::Db::open(&tsdb_dir, cfg.metrics.tsdb.clone())
            .with_context(|| format!("cannot open the metric store in {}", tsdb_dir.display()))?,
    );
    for (project, n) in &cfg.metrics.project_series {
        db.set_series_limit(project, *n);
    }
    // One log store serves the Loki/OTLP push and read APIs and the host logs
    // (files, journal, own events); its directory is locked while open.
    let logs_dir = cfg.data_dir.join("logs");
    let logs = server::loki::Logs::open(&logs_dir, cfg.logs.clone())
        .with_context(|| format!("cannot open the log store in {}", logs_dir.display()))?;
    let log_store = logs.store.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        tracing::info!(
            address = %listener.local_addr()?,
            data_dir = %cfg.data_dir.display(),
            "flightdeck listening"
        );
        let scrape_jobs: std::collections::HashMap<String, String> = cfg
            .metrics
            .scrape_jobs
            .iter()
            .map(|j| (j.job_name.clone(), j.project.clone()))
            .collect();
        let state = server::AppState::new(
            meta,
            audit.clone(),
            organization,
            cfg.server.clone(),
            server::system_clock(),
        )
        .with_metrics(server::prom::MetricsStore {
            db: db.clone(),
            limits: cfg.metrics.limits.clone(),
            project_limits: cfg.metrics.project_limits.clone(),
            max_series_per_project: cfg.metrics.tsdb.max_series_per_project,
            project_series: cfg.metrics.project_series.clone(),
            max_request_bytes: cfg.metrics.max_request_bytes,
            lookback_ms: cfg.metrics.lookback.as_millis() as i64,
            flags: prometheus_flags(&cfg),
            query: promql::EngineOptions {
                lookback_delta_ms: cfg.metrics.lookback.as_millis() as i64,
                max_samples: cfg.metrics.query_max_samples,
                timeout: cfg.metrics.query_timeout,
                ..promql::EngineOptions::default()
            },
            scrape: None,
            scrape_jobs,
        })
        .with_logs(logs);
        // Scrapes write through the state, and the state shows the targets:
        // the manager starts once the state exists, then joins it.
        let state = if cfg.metrics.scrape_jobs.is_empty() {
            state
        } else {
            let manager = Arc::new(agent::scrape::Manager::start(
                cfg.metrics.scrape_jobs.clone(),
                Arc::new(server::prom::StoreSink(state.clone())),
            ));
            state.with_scrape(manager)
        };
        if cfg.metrics.host_metrics {
            tokio::spawn(server::prom::write::host_metrics_loop(
                state.clone(),
                cfg.metrics.host_metrics_interval,
            ));
        }
        let host_logs = Some(log_store.clone()).map(|store| {
            hostlogs::start(
                &cfg.host_logs,
                &cfg.data_dir,
                store,
                self_logs,
                state.telemetry.clone(),
            )
        });
        let served = server::serve(listener, state, shutdown_signal())
            .await
            .context("server failed");
        if let Some(h) = host_logs {
            h.stop();
        }
        served
    });
    audit.shutdown();
    // Acknowledged lines are in the WAL already; closing writes what is
    // pending and stops the WAL writer.
    if let Err(e) = log_store.close() {
        tracing::warn!(error = %e, "closing the log store failed");
    }
    // Every acknowledged sample is already durable; closing cleanly only
    // spares the next start a WAL replay.
    match Arc::try_unwrap(db) {
        Ok(db) => {
            if let Err(e) = db.close() {
                tracing::warn!(error = %e, "closing the metric store failed");
            }
        }
        Err(_) => tracing::debug!("metric store still shared at exit; left to the OS"),
    }
    result
}

/// The effective settings for `/api/v1/status/flags`: Prometheus' flag
/// names where Prometheus has the setting, `flightdeck.*` otherwise.
fn prometheus_flags(cfg: &config::Config) -> std::collections::BTreeMap<String, String> {
    use agent::scrape::format_duration;
    use server::prom::status::{RETENTION_SIZE_FLAG, RETENTION_TIME_FLAG, format_bytes};
    let m = &cfg.metrics;
    let ms = |v: i64| format_duration(std::time::Duration::from_millis(v.max(0) as u64));
    [
        (RETENTION_TIME_FLAG, format_duration(m.tsdb.retention)),
        (
            RETENTION_SIZE_FLAG,
            format_bytes(m.tsdb.max_bytes.unwrap_or(0)),
        ),
        (
            "storage.tsdb.min-block-duration",
            ms(m.tsdb.block_duration_ms),
        ),
        (
            "storage.tsdb.path",
            cfg.data_dir.join("tsdb").display().to_string(),
        ),
        ("query.lookback-delta", format_duration(m.lookback)),
        ("web.listen-address", cfg.listen.to_string()),
        ("web.enable-remote-write-receiver", "true".into()),
        ("web.enable-otlp-receiver", "true".into()),
        ("log.level", cfg.log_level.clone()),
        (
            "flightdeck.metrics.out-of-order-time-window",
            ms(m.tsdb.ooo_window_ms),
        ),
        (
            "flightdeck.metrics.max-series-per-project",
            m.tsdb.max_series_per_project.to_string(),
        ),
        (
            "flightdeck.metrics.max-request-bytes",
            m.max_request_bytes.to_string(),
        ),
        (
            "flightdeck.metrics.host-metrics",
            m.host_metrics.to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
