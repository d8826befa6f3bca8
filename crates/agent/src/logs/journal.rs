//! Follows the systemd journal through `journalctl -o json -f` as a child
//! process (no libsystemd binding: the journal's file format is
//! systemd's business, `journalctl` its stable reader).
//!
//! Each output line is one JSON object ([`parse_line`]); field values are
//! strings, or arrays of byte values for binary fields, or arrays of those
//! for repeated fields (the first is used). Lines are batched (at most
//! [`JournalConfig::batch_lines`] or [`JournalConfig::batch_wait`]) and
//! handed to the [`LogSink`]; the `__CURSOR` of the last acknowledged entry
//! is then saved (atomically) to [`JournalConfig::cursor`]. The next start
//! resumes with `--after-cursor=<cursor> --no-tail`; without a cursor it
//! starts with `--since=now` (the past of the journal is not imported).
//!
//! A refused batch is offered again every [`JournalConfig::retry`] until
//! accepted; meanwhile `journalctl` blocks on its full pipe. If the child
//! ends, it is started again from the saved cursor.
//!
//! Labels: `job="systemd-journal"`, `host`, `unit` (`_SYSTEMD_UNIT`, absent
//! for kernel and some system messages), `level` (from `PRIORITY`:
//! emerg, alert, crit, error, warning, notice, info, debug). Timestamp:
//! `__REALTIME_TIMESTAMP` (µs) in ns. Line: `MESSAGE`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diskio::Faults;
use model::Labels;
use serde_json::Value;

use super::{LogEntry, LogSink, LogStream, Running, positions};

/// The `job` label of journal streams.
pub const JOB: &str = "systemd-journal";

/// syslog priority keywords, indexed by `PRIORITY`.
pub const LEVELS: [&str; 8] = [
    "emerg", "alert", "crit", "error", "warning", "notice", "info", "debug",
];

/// One journal entry, as far as the labels and the line need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    pub cursor: String,
    /// Nanoseconds since the Unix epoch.
    pub ts: i64,
    pub unit: Option<String>,
    pub priority: Option<u8>,
    pub message: String,
}

/// Why a `journalctl -o json` line was not understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("not a JSON object: {0}")]
    Json(String),
    #[error("journal entry without {0}")]
    Missing(&'static str),
    #[error("journal field {field} has an unexpected value: {value}")]
    Bad { field: &'static str, value: String },
}

/// A field as text: a string, an array of byte values (lossy UTF-8), or
/// the first of a repeated field's values. `null` (journalctl's value for
/// a field too large to show) is `None`.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) if items.iter().all(Value::is_u64) => {
            let bytes: Vec<u8> = items
                .iter()
                .map(|b| b.as_u64().unwrap_or(0).min(255) as u8)
                .collect();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        Value::Array(items) => items.first().and_then(text),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parses one line of `journalctl -o json` output.
pub fn parse_line(line: &str) -> Result<JournalEntry, ParseError> {
    let v: Value = serde_json::from_str(line).map_err(|e| ParseError::Json(e.to_string()))?;
    let Value::Object(o) = v else {
        return Err(ParseError::Json(
            "a JSON value that is not an object".into(),
        ));
    };
    let cursor = o
        .get("__CURSOR")
        .and_then(text)
        .ok_or(ParseError::Missing("__CURSOR"))?;
    let rt = o
        .get("__REALTIME_TIMESTAMP")
        .and_then(text)
        .ok_or(ParseError::Missing("__REALTIME_TIMESTAMP"))?;
    let us: i64 = rt.parse().map_err(|_| ParseError::Bad {
        field: "__REALTIME_TIMESTAMP",
        value: rt.clone(),
    })?;
    let priority = match o.get("PRIORITY").and_then(text) {
        None => None,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n < 8 => Some(n),
            _ => {
                return Err(ParseError::Bad {
                    field: "PRIORITY",
                    value: p,
                });
            }
        },
    };
    Ok(JournalEntry {
        cursor,
        ts: us.saturating_mul(1000),
        unit: o.get("_SYSTEMD_UNIT").and_then(text),
        priority,
        message: o.get("MESSAGE").and_then(text).unwrap_or_default(),
    })
}

/// The stream labels of an entry.
pub fn labels(e: &JournalEntry, host: &str) -> Labels {
    let mut pairs = vec![("job", JOB.to_owned()), ("host", host.to_owned())];
    if let Some(u) = &e.unit {
        pairs.push(("unit", u.clone()));
    }
    if let Some(p) = e.priority {
        pairs.push(("level", LEVELS[p as usize].to_owned()));
    }
    Labels::from_pairs(pairs)
}

/// Groups entries into streams (entries keep their order in a stream).
pub fn to_streams(entries: &[JournalEntry], host: &str) -> Vec<LogStream> {
    let mut by: BTreeMap<Labels, Vec<LogEntry>> = BTreeMap::new();
    for e in entries {
        by.entry(labels(e, host)).or_default().push(LogEntry {
            ts: e.ts,
            line: e.message.clone(),
        });
    }
    by.into_iter()
        .map(|(labels, entries)| LogStream { labels, entries })
        .collect()
}

/// The follower's settings; [`JournalConfig::new`] fills in the defaults.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// The `journalctl` program (looked up in `PATH` without a `/`).
    pub command: PathBuf,
    /// Where the cursor of the last acknowledged entry is kept.
    pub cursor: PathBuf,
    pub host: String,
    pub batch_lines: usize,
    pub batch_wait: Duration,
    /// Pause before offering a refused batch again, or restarting a child
    /// that ended.
    pub retry: Duration,
    pub faults: Faults,
}

impl JournalConfig {
    pub fn new(cursor: PathBuf) -> JournalConfig {
        JournalConfig {
            command: PathBuf::from("journalctl"),
            cursor,
            host: super::hostname(),
            batch_lines: 1000,
            batch_wait: Duration::from_millis(500),
            retry: Duration::from_secs(1),
            faults: Faults::disabled(),
        }
    }
}

/// Whether the journal can be followed here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    Available,
    /// Why not, in words for a log line.
    Absent(String),
}

/// Checks that `command` runs and shows at least one entry (`-n 1`).
pub fn detect(command: &Path) -> Availability {
    let out = Command::new(command)
        .args(["-n", "1", "-q", "-o", "json", "--no-pager"])
        .stdin(Stdio::null())
        .output();
    match out {
        Err(e) => Availability::Absent(format!("{} cannot run: {e}", command.display())),
        Ok(o) if !o.status.success() => Availability::Absent(format!(
            "{} failed ({}): {}",
            command.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(o) if o.stdout.iter().all(u8::is_ascii_whitespace) => Availability::Absent(format!(
            "{} shows no entries (no journal files, or this user may not read them: add it to the systemd-journal group)",
            command.display()
        )),
        Ok(_) => Availability::Available,
    }
}

/// The arguments `journalctl` is started with, given the saved cursor.
pub fn args(cursor: Option<&str>) -> Vec<String> {
    let mut a: Vec<String> = ["-o", "json", "-f", "-q", "--all", "--no-pager"]
        .into_iter()
        .map(String::from)
        .collect();
    match cursor {
        Some(c) => {
            a.push(format!("--after-cursor={c}"));
            a.push("--no-tail".into());
        }
        None => a.push("--since=now".into()),
    }
    a
}

/// Why the follower could not start.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot read the journal cursor file {path}: {source}")]
    Cursor {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the journal follower thread: {0}")]
    Thread(std::io::Error),
}

/// Follows the journal on a thread until the handle is stopped. `warn`
/// gets what goes wrong (unparsable lines, refusals, a child that ended).
pub fn start(
    cfg: JournalConfig,
    sink: Arc<dyn LogSink>,
    warn: Arc<dyn Fn(String) + Send + Sync>,
) -> Result<Running, JournalError> {
    if let Some(dir) = cfg.cursor.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| JournalError::Cursor {
            path: cfg.cursor.clone(),
            source,
        })?;
    }
    let cursor = positions::load_cursor(&cfg.cursor).map_err(|source| JournalError::Cursor {
        path: cfg.cursor.clone(),
        source,
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let child: Arc<Mutex<Option<Child>>> = Arc::new(Mutex::new(None));
    let (flag, slot) = (stop.clone(), child.clone());
    let thread = std::thread::Builder::new()
        .name("log-journal".into())
        .spawn(move || follow(cfg, cursor, sink.as_ref(), warn.as_ref(), &flag, &slot))
        .map_err(JournalError::Thread)?;
    let kill = Box::new(move || {
        if let Some(c) = child.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            let _ = c.kill();
        }
    });
    Ok(Running::new(stop, thread, Some(kill)))
}

fn follow(
    cfg: JournalConfig,
    mut cursor: Option<String>,
    sink: &dyn LogSink,
    warn: &(dyn Fn(String) + Send + Sync),
    stop: &AtomicBool,
    slot: &Mutex<Option<Child>>,
) {
    let lock = || slot.lock().unwrap_or_else(|p| p.into_inner());
    while !stop.load(Ordering::SeqCst) {
        let spawned = Command::new(&cfg.command)
            .args(args(cursor.as_deref()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut c = match spawned {
            Ok(c) => c,
            Err(e) => {
                warn(format!("cannot start {}: {e}", cfg.command.display()));
                if super::sleep_unless_stopped(stop, cfg.retry) {
                    return;
                }
                continue;
            }
        };
        let out = c.stdout.take().expect("bug: stdout was piped");
        *lock() = Some(c);
        if stop.load(Ordering::SeqCst) {
            // Stopped between the spawn and storing the child.
            if let Some(c) = lock().as_mut() {
                let _ = c.kill();
            }
        }
        let (tx, rx) = sync_channel::<String>(cfg.batch_lines.max(1) * 2);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        pump(&cfg, &rx, &mut cursor, sink, warn, stop);
        if let Some(mut c) = lock().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        drop(rx);
        let _ = reader.join();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        warn(format!(
            "{} ended; starting it again from the saved cursor",
            cfg.command.display()
        ));
        if super::sleep_unless_stopped(stop, cfg.retry) {
            return;
        }
    }
}

/// Reads lines until the child's output ends (or stop), pushing batches
/// and saving the cursor after each acknowledged one.
fn pump(
    cfg: &JournalConfig,
    rx: &Receiver<String>,
    cursor: &mut Option<String>,
    sink: &dyn LogSink,
    warn: &(dyn Fn(String) + Send + Sync),
    stop: &AtomicBool,
) {
    let mut batch: Vec<JournalEntry> = Vec::new();
    let mut started = Instant::now();
    loop {
        let ended = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                match parse_line(&line) {
                    Ok(e) => {
                        if batch.is_empty() {
                            started = Instant::now();
                        }
                        batch.push(e);
                    }
                    Err(e) => warn(format!("skipping a journal line: {e}")),
                }
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        let full = batch.len() >= cfg.batch_lines.max(1);
        let due = !batch.is_empty() && started.elapsed() >= cfg.batch_wait;
        if full || due || (ended && !batch.is_empty()) {
            let streams = to_streams(&batch, &cfg.host);
            let mut warned = false;
            loop {
                match sink.push(&streams) {
                    Ok(()) => break,
                    Err(e) => {
                        if !warned {
                            warn(format!("log store refused journal lines (retrying): {e}"));
                            warned = true;
                        }
                        if super::sleep_unless_stopped(stop, cfg.retry) {
                            return;
                        }
                    }
                }
            }
            let last = batch.last().map(|e| e.cursor.clone());
            batch.clear();
            if let Some(c) = last {
                if let Err(e) = positions::save_cursor(&cfg.cursor, &c, &cfg.faults) {
                    warn(format!(
                        "cannot save the journal cursor to {}: {e}",
                        cfg.cursor.display()
                    ));
                }
                *cursor = Some(c);
            }
        }
        if ended || stop.load(Ordering::SeqCst) {
            return;
        }
    }
}
