//! Tails files chosen by glob patterns, like promtail's file target.
//!
//! Each [`Tailer::poll`] rescans the patterns (new files are picked up),
//! reads what was appended to every tracked file, hands the complete lines
//! to the [`LogSink`] in one call, and — only when the sink acknowledged
//! them — advances the files' offsets and rewrites the positions file
//! ([`super::positions`]). A refused push changes nothing: the same bytes
//! are read again at the next poll.
//!
//! - A file is tracked by identity (device, inode) through an open handle.
//!   **Rotation by rename**: the path now names a new file, which is read
//!   from its start, while the old handle is read to its end; a file no
//!   pattern matches any more is dropped once it has not grown for
//!   [`FilesConfig::rotate_grace`] and is read completely.
//! - **Truncation** (copytruncate): a file shorter than its offset is read
//!   again from 0. (Lines written between the copy and the truncation, or a
//!   file refilled beyond the old offset before the next poll, cannot be
//!   told apart; promtail has the same limit.)
//! - Lines end at `\n` (a `\r` before it is dropped). An incomplete last
//!   line is held until its newline arrives, or sent as it is once it has
//!   not changed for [`FilesConfig::partial_timeout`]. A line longer than
//!   [`FilesConfig::max_line_bytes`] is cut there, [`TRUNCATED_MARKER`] is
//!   appended, and the rest up to the newline is skipped. Bytes that are
//!   not UTF-8 become U+FFFD.
//! - Labels: `job` (of the pattern's group), `host`, `filename` (the path
//!   that matched). The timestamp is the read time, made strictly
//!   increasing per file so that equal lines read together stay distinct.
//! - A file found on a *first start* (no positions file yet) is read from
//!   its end or its beginning as [`FilesConfig::read_from`] says; any file
//!   found later (created while running, or while stopped) from its
//!   beginning. Positions are written once right after the first scan.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use diskio::Faults;
use model::Labels;

use super::positions::{self, FileId, FilePos, PositionsError};
use super::{LogEntry, LogSink, LogStream, Running};

/// Appended to a line cut at [`FilesConfig::max_line_bytes`].
pub const TRUNCATED_MARKER: &str = " [truncated]";

/// Files whose lines get the same `job` label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileGroup {
    /// Glob patterns (`*`, `?`, `[...]`, `**`) of absolute paths.
    pub include: Vec<String>,
    pub job: String,
}

/// Where to start in a file found on a first start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    Beginning,
    End,
}

/// The tailer's settings; [`FilesConfig::new`] fills in the defaults.
#[derive(Clone, Debug)]
pub struct FilesConfig {
    pub groups: Vec<FileGroup>,
    /// The positions file (created with its directory if missing).
    pub positions: PathBuf,
    pub read_from: ReadFrom,
    /// Longest line kept, in bytes, before [`TRUNCATED_MARKER`].
    pub max_line_bytes: usize,
    /// An incomplete last line unchanged this long is sent as it is.
    pub partial_timeout: Duration,
    /// A file no pattern matches any more is still read until it has not
    /// grown for this long (writers that reopen late after a rotation).
    pub rotate_grace: Duration,
    /// Most bytes read from one file per poll.
    pub max_read_bytes: usize,
    /// Pause between polls of [`start`]'s thread.
    pub poll_interval: Duration,
    /// The `host` label.
    pub host: String,
    pub faults: Faults,
}

impl FilesConfig {
    pub fn new(groups: Vec<FileGroup>, positions: PathBuf) -> FilesConfig {
        FilesConfig {
            groups,
            positions,
            read_from: ReadFrom::End,
            max_line_bytes: 64 << 10,
            partial_timeout: Duration::from_secs(2),
            rotate_grace: Duration::from_secs(5),
            max_read_bytes: 1 << 20,
            poll_interval: Duration::from_millis(250),
            host: super::hostname(),
            faults: Faults::disabled(),
        }
    }
}

/// Checks a glob pattern's syntax (for configuration errors).
pub fn check_pattern(p: &str) -> Result<(), String> {
    glob::Pattern::new(p)
        .map(|_| ())
        .map_err(|e| format!("invalid glob pattern at byte {}: {}", e.pos, e.msg))
}

/// Why the tailer could not start.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("logs.sources.files: invalid glob pattern {pattern:?}: {msg}")]
    Pattern { pattern: String, msg: String },
    #[error(transparent)]
    Positions(#[from] PositionsError),
    #[error("cannot start the file tailer thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot create the directory of the positions file {path}: {source}")]
    PositionsDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What one poll did.
#[derive(Debug, Default, Clone)]
pub struct PollReport {
    /// Lines acknowledged by the sink.
    pub lines: usize,
    /// Bytes of the files consumed (acknowledged).
    pub bytes: u64,
    /// Files tracked after the poll.
    pub files: usize,
    /// Files found shorter than their offset (read again from 0).
    pub truncated: usize,
    /// The sink's refusal, if it refused (nothing advanced).
    pub refused: Option<String>,
    /// Files that could not be opened or read, and a failed positions write.
    pub errors: Vec<String>,
}

struct Tracked {
    path: PathBuf,
    labels: Labels,
    file: File,
    /// First byte not yet acknowledged by the sink.
    acked: u64,
    /// At `acked` we are inside an over-long line whose head was sent.
    skipping: bool,
    /// Length of an incomplete last line seen at the end, and since when.
    partial: Option<(usize, Instant)>,
    /// A pattern matched it in the last scan.
    live: bool,
    size: u64,
    last_change: Instant,
    /// Timestamp of the last acknowledged line.
    last_ts: i64,
}

/// What reading a file produced, committed only when the sink agrees.
struct Pending {
    id: FileId,
    lines: Vec<String>,
    acked: u64,
    skipping: bool,
}

/// The file tailer. [`Tailer::poll`] does one pass; [`start`] runs passes
/// on a thread.
pub struct Tailer {
    cfg: FilesConfig,
    patterns: Vec<(glob::Pattern, usize)>,
    tracked: BTreeMap<FileId, Tracked>,
    /// Positions loaded at start, used when a file is first seen.
    saved: BTreeMap<FileId, FilePos>,
    first_start: bool,
    scanned: bool,
    dirty: bool,
    /// Paths already reported as unreadable (reported again once readable).
    warned: HashSet<PathBuf>,
}

impl Tailer {
    /// Checks the patterns and loads the positions file.
    pub fn new(cfg: FilesConfig) -> Result<Tailer, TailError> {
        let mut patterns = Vec::new();
        for (i, g) in cfg.groups.iter().enumerate() {
            for p in &g.include {
                let pat = glob::Pattern::new(p).map_err(|e| TailError::Pattern {
                    pattern: p.clone(),
                    msg: e.msg.to_string(),
                })?;
                patterns.push((pat, i));
            }
        }
        if let Some(dir) = cfg.positions.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| TailError::PositionsDir {
                path: cfg.positions.clone(),
                source,
            })?;
        }
        let loaded = positions::load(&cfg.positions)?;
        Ok(Tailer {
            first_start: loaded.is_none(),
            saved: loaded.unwrap_or_default(),
            cfg,
            patterns,
            tracked: BTreeMap::new(),
            scanned: false,
            dirty: false,
            warned: HashSet::new(),
        })
    }

    /// The acknowledged offset of the file at `path`, if tracked.
    pub fn offset(&self, path: &Path) -> Option<u64> {
        self.tracked
            .values()
            .find(|t| t.path == path)
            .map(|t| t.acked)
    }

    /// Number of files tracked (live and draining).
    pub fn tracked(&self) -> usize {
        self.tracked.len()
    }

    /// One pass at the real clock.
    pub fn poll(&mut self, sink: &dyn LogSink) -> PollReport {
        self.poll_at(sink, Instant::now(), super::now_ns())
    }

    /// One pass: rescan, read, push, and on acknowledgement advance and
    /// save. `now` drives the partial-line and rotation timers, `wall_ns`
    /// stamps the lines (tests choose both).
    pub fn poll_at(&mut self, sink: &dyn LogSink, now: Instant, wall_ns: i64) -> PollReport {
        let mut report = PollReport::default();
        self.scan(now, &mut report);
        let mut pending = Vec::new();
        for (id, t) in self.tracked.iter_mut() {
            match read_file(&self.cfg, t, now) {
                Ok((p, truncated)) => {
                    if truncated {
                        report.truncated += 1;
                        self.dirty = true;
                    }
                    if p.acked != t.acked || p.skipping != t.skipping {
                        pending.push(Pending { id: *id, ..p });
                    }
                }
                Err(e) => report
                    .errors
                    .push(format!("cannot read {}: {e}", t.path.display())),
            }
        }
        if !pending.is_empty() {
            let mut streams = Vec::new();
            let mut stamps = Vec::new();
            for p in &pending {
                let t = &self.tracked[&p.id];
                let mut ts = t.last_ts;
                let entries: Vec<LogEntry> = p
                    .lines
                    .iter()
                    .map(|l| {
                        ts = wall_ns.max(ts.saturating_add(1));
                        LogEntry {
                            ts,
                            line: l.clone(),
                        }
                    })
                    .collect();
                stamps.push(ts);
                if !entries.is_empty() {
                    streams.push(LogStream {
                        labels: t.labels.clone(),
                        entries,
                    });
                }
            }
            let pushed = if streams.is_empty() {
                Ok(())
            } else {
                sink.push(&streams)
            };
            match pushed {
                Ok(()) => {
                    for (p, ts) in pending.into_iter().zip(stamps) {
                        let t = self
                            .tracked
                            .get_mut(&p.id)
                            .expect("bug: pending file vanished");
                        report.lines += p.lines.len();
                        report.bytes += p.acked.saturating_sub(t.acked);
                        t.acked = p.acked;
                        t.skipping = p.skipping;
                        t.last_ts = ts;
                    }
                    self.dirty = true;
                }
                Err(e) => report.refused = Some(e),
            }
        }
        // Rotated-away or deleted files, read completely and quiet: done.
        let grace = self.cfg.rotate_grace;
        let before = self.tracked.len();
        self.tracked
            .retain(|_, t| t.live || t.acked < t.size || now.duration_since(t.last_change) < grace);
        if self.tracked.len() != before {
            self.dirty = true;
        }
        if self.dirty {
            match self.save() {
                Ok(()) => self.dirty = false,
                Err(e) => report.errors.push(format!(
                    "cannot write positions file {}: {e}",
                    self.cfg.positions.display()
                )),
            }
        }
        report.files = self.tracked.len();
        report
    }

    fn save(&self) -> std::io::Result<()> {
        let list: Vec<FilePos> = self
            .tracked
            .iter()
            .map(|(id, t)| FilePos {
                path: t.path.to_string_lossy().into_owned(),
                dev: id.0,
                inode: id.1,
                offset: t.acked,
            })
            .collect();
        positions::save(&self.cfg.positions, &list, &self.cfg.faults)
    }

    /// Expands the patterns, opens new files, marks which are still matched.
    fn scan(&mut self, now: Instant, report: &mut PollReport) {
        let first_scan = !self.scanned;
        self.scanned = true;
        for t in self.tracked.values_mut() {
            t.live = false;
        }
        let mut seen: HashMap<FileId, ()> = HashMap::new();
        for (pat, group) in &self.patterns {
            let paths = match glob::glob(pat.as_str()) {
                Ok(p) => p,
                Err(e) => {
                    report.errors.push(format!("pattern {}: {e}", pat.as_str()));
                    continue;
                }
            };
            for path in paths.flatten() {
                let meta = match std::fs::metadata(&path) {
                    Ok(m) if m.is_file() => m,
                    Ok(_) => continue,
                    Err(e) => {
                        warn_once(&mut self.warned, report, &path, &e);
                        continue;
                    }
                };
                let id = (meta.dev(), meta.ino());
                if seen.insert(id, ()).is_some() {
                    continue;
                }
                if let Some(t) = self.tracked.get_mut(&id) {
                    t.live = true;
                    if t.path != path {
                        t.labels = labels(&self.cfg, *group, &path);
                        t.path = path;
                        self.dirty = true;
                    }
                    continue;
                }
                let file = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) => {
                        warn_once(&mut self.warned, report, &path, &e);
                        continue;
                    }
                };
                self.warned.remove(&path);
                let size = meta.len();
                let start = match self.saved.get(&id) {
                    Some(p) if p.offset <= size => p.offset,
                    Some(_) => 0,
                    None if self.first_start
                        && first_scan
                        && self.cfg.read_from == ReadFrom::End =>
                    {
                        size
                    }
                    None => 0,
                };
                self.tracked.insert(
                    id,
                    Tracked {
                        labels: labels(&self.cfg, *group, &path),
                        path,
                        file,
                        acked: start,
                        skipping: false,
                        partial: None,
                        live: true,
                        size,
                        last_change: now,
                        last_ts: 0,
                    },
                );
                self.dirty = true;
            }
        }
        if first_scan {
            // A first start's decisions (read from the end) must survive a
            // restart before any line arrives.
            self.dirty = true;
        }
    }
}

fn warn_once(
    warned: &mut HashSet<PathBuf>,
    report: &mut PollReport,
    path: &Path,
    e: &std::io::Error,
) {
    if warned.insert(path.to_owned()) {
        report
            .errors
            .push(format!("cannot open {}: {e}", path.display()));
    }
}

fn labels(cfg: &FilesConfig, group: usize, path: &Path) -> Labels {
    Labels::from_pairs([
        ("job", cfg.groups[group].job.as_str()),
        ("host", cfg.host.as_str()),
        ("filename", &path.to_string_lossy()),
    ])
}

/// Reads what follows `t.acked` and splits it into lines. Updates the
/// file's size and partial-line observation; the offsets are returned, not
/// stored (the caller commits them on acknowledgement). The bool says the
/// file was found truncated (then `t` was reset to offset 0).
fn read_file(cfg: &FilesConfig, t: &mut Tracked, now: Instant) -> std::io::Result<(Pending, bool)> {
    let size = t.file.metadata()?.len();
    if size != t.size {
        t.size = size;
        t.last_change = now;
    }
    let mut truncated = false;
    if size < t.acked {
        t.acked = 0;
        t.skipping = false;
        t.partial = None;
        truncated = true;
    }
    let max_line = cfg.max_line_bytes.max(1);
    let want = (size - t.acked).min(cfg.max_read_bytes.max(max_line + 1) as u64) as usize;
    let mut buf = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match t.file.read_at(&mut buf[got..], t.acked + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    buf.truncate(got);
    let mut lines = Vec::new();
    let mut skipping = t.skipping;
    let mut i = 0;
    while i < buf.len() {
        let nl = memchr_nl(&buf[i..]).map(|j| i + j);
        if skipping {
            match nl {
                Some(j) => {
                    skipping = false;
                    i = j + 1;
                }
                None => i = buf.len(),
            }
            continue;
        }
        match nl {
            Some(j) => {
                let mut line = &buf[i..j];
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                lines.push(render(line, max_line));
                i = j + 1;
            }
            None => {
                let rest = &buf[i..];
                if rest.len() > max_line {
                    lines.push(render(rest, max_line));
                    skipping = true;
                    i = buf.len();
                    continue;
                }
                // Incomplete last line: hold it until it stops changing.
                let at_end = t.acked + buf.len() as u64 == size;
                let since = match t.partial {
                    Some((len, since)) if len == rest.len() && at_end => since,
                    _ => now,
                };
                t.partial = Some((rest.len(), since));
                if at_end && now.duration_since(since) >= cfg.partial_timeout {
                    lines.push(render(rest, max_line));
                    t.partial = None;
                    i = buf.len();
                    continue;
                }
                break;
            }
        }
    }
    if i == buf.len() && !skipping {
        t.partial = None;
    }
    Ok((
        Pending {
            id: (0, 0),
            lines,
            acked: t.acked + i as u64,
            skipping,
        },
        truncated,
    ))
}

fn memchr_nl(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// A line as text: cut at `max` bytes (with the marker), lossy UTF-8.
fn render(line: &[u8], max: usize) -> String {
    if line.len() > max {
        let mut s = String::from_utf8_lossy(&line[..max]).into_owned();
        s.push_str(TRUNCATED_MARKER);
        s
    } else {
        String::from_utf8_lossy(line).into_owned()
    }
}

/// Runs [`Tailer::poll`] every [`FilesConfig::poll_interval`] on a thread
/// until the returned handle is stopped. `warn` receives the errors of a
/// poll and a sink's refusal (once, until the sink accepts again).
pub fn start(
    cfg: FilesConfig,
    sink: Arc<dyn LogSink>,
    warn: Arc<dyn Fn(String) + Send + Sync>,
) -> Result<Running, TailError> {
    let interval = cfg.poll_interval;
    let mut tailer = Tailer::new(cfg)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("log-files".into())
        .spawn(move || {
            let mut refusing = false;
            loop {
                let r = tailer.poll(sink.as_ref());
                for e in r.errors {
                    warn(e);
                }
                match r.refused {
                    Some(e) if !refusing => {
                        refusing = true;
                        warn(format!("log store refused tailed lines (retrying): {e}"));
                    }
                    Some(_) => {}
                    None => refusing = false,
                }
                if super::sleep_unless_stopped(&flag, interval) {
                    break;
                }
            }
        })
        .map_err(TailError::Thread)?;
    Ok(Running::new(stop, thread, None))
}
