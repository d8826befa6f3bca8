//! Wiring of host logs in `serve`: the file tailer and the journal
//! follower (`agent::logs`) and the self-log writer
//! (`server::hostlogs::selflog`), all writing into the `default` project of
//! the log store through `server::hostlogs::StoreSink`. Their state (file
//! positions, journal cursor) lives in `<data_dir>/hostlogs/`.
//!
//! A source that cannot start is reported in the log and left out; the
//! server runs without it.

use std::path::Path;
use std::sync::Arc;

use agent::logs::Running;
use agent::logs::files::FilesConfig;
use agent::logs::journal::{self, Availability, JournalConfig};
use server::hostlogs::StoreSink;
use server::hostlogs::selflog::{SelfLogWriter, SelfLogs};

use crate::hostlogs_config::HostLogSettings;

/// The project host logs go to.
pub const PROJECT: &str = "default";
/// Directory of the sources' state, under the data directory.
pub const STATE_DIR: &str = "hostlogs";

/// The running sources; dropping stops them (the self-log writer last, so
/// the others' last words are stored).
pub struct HostLogs {
    files: Option<Running>,
    journal: Option<Running>,
    self_logs: Option<SelfLogWriter>,
}

impl HostLogs {
    pub fn stop(mut self) {
        if let Some(f) = self.files.take() {
            f.stop();
        }
        if let Some(j) = self.journal.take() {
            j.stop();
        }
        if let Some(s) = self.self_logs.take() {
            s.stop();
        }
    }
}

pub fn start(
    s: &HostLogSettings,
    data_dir: &Path,
    store: Arc<logstore::Store>,
    self_logs: Option<SelfLogs>,
    telemetry: Arc<server::telemetry::Telemetry>,
) -> HostLogs {
    let sink: Arc<dyn agent::logs::LogSink> = Arc::new(StoreSink::new(store, PROJECT));
    let host = agent::logs::hostname();
    let state = data_dir.join(STATE_DIR);
    let warn: Arc<dyn Fn(String) + Send + Sync> =
        Arc::new(|m: String| tracing::warn!(target: "flightdeck::hostlogs", "{m}"));
    let self_logs = self_logs.and_then(|l| {
        l.start(sink.clone(), host.clone(), Some(telemetry))
            .map_err(|e| tracing::warn!(error = %e, "cannot start the self-log writer"))
            .ok()
    });
    let files = if s.files.is_empty() {
        None
    } else {
        let mut cfg = FilesConfig::new(s.files.clone(), state.join("positions.json"));
        cfg.read_from = s.read_from;
        cfg.max_line_bytes = s.max_line_bytes;
        cfg.poll_interval = s.poll_interval;
        cfg.host = host.clone();
        match agent::logs::files::start(cfg, sink.clone(), warn.clone()) {
            Ok(r) => {
                let patterns: Vec<&str> = s
                    .files
                    .iter()
                    .flat_map(|g| g.include.iter().map(String::as_str))
                    .collect();
                tracing::info!(patterns = %patterns.join(","), "tailing log files into the default project");
                Some(r)
            }
            Err(e) => {
                tracing::warn!(error = %e, "file tailing not started");
                None
            }
        }
    };
    let journal = if !s.journal {
        None
    } else {
        match journal::detect(&s.journal_command) {
            Availability::Absent(why) => {
                tracing::info!(reason = %why, "systemd journal not found; not following it");
                None
            }
            Availability::Available => {
                let mut cfg = JournalConfig::new(state.join("journal.cursor"));
                cfg.command = s.journal_command.clone();
                cfg.host = host;
                match journal::start(cfg, sink, warn) {
                    Ok(r) => {
                        tracing::info!("following the systemd journal into the default project");
                        Some(r)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "journal following not started");
                        None
                    }
                }
            }
        }
    };
    HostLogs {
        files,
        journal,
        self_logs,
    }
}
