//! The host-log keys of the configuration: `logs.self_logs` and
//! `[logs.sources]` (files tailed, the journal), parsed loosely, then
//! validated into [`HostLogSettings`]. Documented in README "Host logs".
//!
//! ```toml
//! [logs]
//! self_logs = true            # Flightdeck's own log events, job="flightdeck"
//!
//! [logs.sources]
//! read_from = "end"           # files found on the very first start: "end" or "beginning"
//! max_line_bytes = 65536      # longer lines are cut, " [truncated]" appended
//! poll_interval = "250ms"
//! # files = []                # no file tailing at all
//!
//! [[logs.sources.files]]      # default: the one group below
//! include = ["/var/log/*.log", "/var/log/syslog"]
//! job = "varlogs"
//!
//! [logs.sources.journal]
//! enabled = true              # followed only when journalctl shows entries
//! command = "journalctl"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use agent::logs::files::{FileGroup, ReadFrom};
use serde::Deserialize;

use crate::config::{ConfigError, Overrides, parse_duration};

/// `[logs]`, as far as host logs are concerned.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileLogs {
    pub self_logs: Option<bool>,
    #[serde(default)]
    pub sources: FileSources,
}

/// `[logs.sources]`.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileSources {
    /// `None`: the default group; `Some([])`: no file tailing.
    pub files: Option<Vec<FileFileGroup>>,
    pub read_from: Option<String>,
    pub max_line_bytes: Option<usize>,
    pub poll_interval: Option<String>,
    #[serde(default)]
    pub journal: FileJournal,
}

/// One `[[logs.sources.files]]`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileFileGroup {
    pub include: Vec<String>,
    pub job: Option<String>,
}

/// `[logs.sources.journal]`.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileJournal {
    pub enabled: Option<bool>,
    pub command: Option<String>,
}

/// What `serve` collects into the `default` project's logs.
#[derive(Debug, Clone, PartialEq)]
pub struct HostLogSettings {
    pub self_logs: bool,
    /// Empty: no file tailing.
    pub files: Vec<FileGroup>,
    pub read_from: ReadFrom,
    pub max_line_bytes: usize,
    pub poll_interval: Duration,
    pub journal: bool,
    pub journal_command: PathBuf,
}

/// The default file patterns (files that do not exist are simply not
/// matched).
pub const DEFAULT_FILES: [&str; 2] = ["/var/log/*.log", "/var/log/syslog"];
/// The default `job` of tailed files (promtail's example config's).
pub const DEFAULT_JOB: &str = "varlogs";

pub fn host_log_settings(o: &Overrides, f: FileLogs) -> Result<HostLogSettings, ConfigError> {
    let s = f.sources;
    let groups = match s.files {
        None => vec![FileGroup {
            include: DEFAULT_FILES.iter().map(|p| p.to_string()).collect(),
            job: DEFAULT_JOB.into(),
        }],
        Some(list) => {
            let mut out = Vec::new();
            for (i, g) in list.into_iter().enumerate() {
                let key = format!("logs.sources.files[{i}]");
                if g.include.is_empty() {
                    return Err(ConfigError(format!(
                        "config key `{key}.include`: give at least one glob pattern"
                    )));
                }
                for p in &g.include {
                    if !p.starts_with('/') {
                        return Err(ConfigError(format!(
                            "config key `{key}.include`: '{p}' is not an absolute path pattern"
                        )));
                    }
                    agent::logs::files::check_pattern(p).map_err(|e| {
                        ConfigError(format!("config key `{key}.include`: '{p}': {e}"))
                    })?;
                }
                let job = g.job.unwrap_or_else(|| DEFAULT_JOB.into());
                if job.is_empty() {
                    return Err(ConfigError(format!(
                        "config key `{key}.job`: must not be empty"
                    )));
                }
                out.push(FileGroup {
                    include: g.include,
                    job,
                });
            }
            out
        }
    };
    let files = if o.logs_files == Some(false) {
        Vec::new()
    } else {
        groups
    };
    let read_from = match s.read_from.as_deref().unwrap_or("end") {
        "end" => ReadFrom::End,
        "beginning" => ReadFrom::Beginning,
        other => {
            return Err(ConfigError(format!(
                "config key `logs.sources.read_from`: '{other}' is neither \"end\" nor \"beginning\""
            )));
        }
    };
    let max_line_bytes = s.max_line_bytes.unwrap_or(64 << 10);
    if !(256..=(256 << 10) - 64).contains(&max_line_bytes) {
        return Err(ConfigError(format!(
            "config key `logs.sources.max_line_bytes`: {max_line_bytes} is out of range (256 to 262080, below the log store's line limit)"
        )));
    }
    let poll_interval = match s.poll_interval {
        None => Duration::from_millis(250),
        Some(v) => parse_duration(&v).filter(|d| !d.is_zero()).ok_or_else(|| {
            ConfigError(format!(
                "config key `logs.sources.poll_interval`: '{v}' is not a duration like 250ms or 1s"
            ))
        })?,
    };
    let journal_command = s.journal.command.unwrap_or_else(|| "journalctl".into());
    if journal_command.is_empty() {
        return Err(ConfigError(
            "config key `logs.sources.journal.command`: must not be empty".into(),
        ));
    }
    Ok(HostLogSettings {
        self_logs: o.logs_self_logs.or(f.self_logs).unwrap_or(true),
        files,
        read_from,
        max_line_bytes,
        poll_interval,
        journal: o.logs_journal.or(s.journal.enabled).unwrap_or(true),
        journal_command: PathBuf::from(journal_command),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml_src: &str, o: &Overrides) -> Result<HostLogSettings, ConfigError> {
        #[derive(Deserialize)]
        struct F {
            #[serde(default)]
            logs: FileLogs,
        }
        let f: F = toml::from_str(toml_src).map_err(|e| ConfigError(e.to_string()))?;
        host_log_settings(o, f.logs)
    }

    fn check_err(toml_src: &str, needle: &str) {
        let e = settings(toml_src, &Overrides::default()).unwrap_err().0;
        assert!(e.contains(needle), "{e}");
    }

    #[test]
    fn defaults() {
        let s = settings("", &Overrides::default()).unwrap();
        assert!(s.self_logs && s.journal);
        assert_eq!(s.files.len(), 1);
        assert_eq!(s.files[0].include, DEFAULT_FILES);
        assert_eq!(s.files[0].job, "varlogs");
        assert_eq!(s.read_from, ReadFrom::End);
        assert_eq!(s.poll_interval, Duration::from_millis(250));
    }

    #[test]
    fn keys_and_switches() {
        let s = settings(
            r#"
            [logs]
            self_logs = false
            [logs.sources]
            read_from = "beginning"
            max_line_bytes = 1024
            poll_interval = "1s"
            [[logs.sources.files]]
            include = ["/srv/app/*.log"]
            job = "app"
            [[logs.sources.files]]
            include = ["/var/log/nginx/*.log"]
            [logs.sources.journal]
            enabled = false
            "#,
            &Overrides::default(),
        )
        .unwrap();
        assert!(!s.self_logs && !s.journal);
        assert_eq!(s.files.len(), 2);
        assert_eq!(
            (s.files[0].job.as_str(), s.files[1].job.as_str()),
            ("app", "varlogs")
        );
        assert_eq!(s.read_from, ReadFrom::Beginning);
        assert_eq!(s.max_line_bytes, 1024);
        let off = settings("[logs.sources]\nfiles = []\n", &Overrides::default()).unwrap();
        assert!(off.files.is_empty());
        // Flags and environment win over the file.
        let o = Overrides {
            logs_files: Some(false),
            logs_journal: Some(true),
            logs_self_logs: Some(true),
            ..Default::default()
        };
        let s = settings(
            "[logs]\nself_logs = false\n[logs.sources.journal]\nenabled = false\n",
            &o,
        )
        .unwrap();
        assert!(s.files.is_empty() && s.journal && s.self_logs);
    }

    #[test]
    fn errors_name_the_key() {
        check_err(
            "[[logs.sources.files]]\ninclude = []\n",
            "logs.sources.files[0].include",
        );
        check_err(
            "[[logs.sources.files]]\ninclude = [\"var/*.log\"]\n",
            "absolute",
        );
        check_err(
            "[[logs.sources.files]]\ninclude = [\"/var/[\"]\n",
            "logs.sources.files[0].include",
        );
        check_err(
            "[[logs.sources.files]]\ninclude = [\"/a\"]\njob = \"\"\n",
            "job",
        );
        check_err("[logs.sources]\nread_from = \"middle\"\n", "read_from");
        check_err("[logs.sources]\nmax_line_bytes = 10\n", "max_line_bytes");
        check_err(
            "[logs.sources]\npoll_interval = \"soon\"\n",
            "poll_interval",
        );
        check_err("[logs.sources]\nbogus = 1\n", "bogus");
    }
}
