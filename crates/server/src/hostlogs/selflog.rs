//! Flightdeck's own log events into its own log store: a
//! `tracing_subscriber` [`Layer`] that turns each event into a line of the
//! `default` project with labels `job="flightdeck"`, `host` and `level`
//! (`error`, `warn`, `info`, `debug`, `trace`: tracing's names).
//!
//! The line is logfmt: `level=… target=… msg="…"` followed by the event's
//! fields in the order they were given (`key=value`, quoted when needed),
//! so LogQL's `| logfmt` extracts them. Span fields are not included.
//!
//! The layer never blocks its caller: it formats the event and offers it
//! to a bounded channel (`try_send`); when the channel is full the event
//! is dropped and counted ([`SelfLogStats::dropped`], and the
//! `flightdeck_self_logs_dropped_total` counter). A writer thread
//! ([`SelfLogs::start`]) drains the channel in batches into a
//! [`LogSink`]. Nothing is re-ingested: events raised on the writer
//! thread (by the store while appending, or by the writer itself) and
//! events raised while an event is being formatted are skipped here (they
//! still reach the other layers, e.g. stderr), so a log line never causes
//! another one.
//!
//! The layer exists from the start of the process (installed with the
//! stderr layer), before the store is open: what it catches before
//! [`SelfLogs::start`] waits in the channel, up to its capacity.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use agent::logs::{LogEntry, LogSink, LogStream};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::telemetry::{Family, Telemetry};

/// The `job` label of Flightdeck's own lines.
pub const JOB: &str = "flightdeck";

/// Events dropped because the channel was full (or the writer gone).
pub const DROPPED: Family = Family {
    name: "flightdeck_self_logs_dropped_total",
    help: "Flightdeck's own log events not stored because the self-log queue was full.",
    labels: &[],
};

/// Most records the writer hands to the sink in one call.
const BATCH: usize = 1024;

thread_local! {
    /// Set on the writer thread for good, and on any thread while one of
    /// its events is being formatted: events raised then are not taken.
    static SUPPRESSED: Cell<bool> = const { Cell::new(false) };
}

/// Counters of the self-log path.
#[derive(Debug, Default)]
pub struct SelfLogStats {
    dropped: AtomicU64,
    written: AtomicU64,
    failed: AtomicU64,
}

impl SelfLogStats {
    /// Events dropped because the channel was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    /// Events the sink acknowledged.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
    /// Events lost because the sink refused them (the store failed).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

struct Record {
    ts: i64,
    level: &'static str,
    line: String,
}

/// The layer; install it beside the stderr layer.
pub struct SelfLogLayer {
    tx: SyncSender<Record>,
    stats: Arc<SelfLogStats>,
}

/// The receiving end, started once the store is open.
pub struct SelfLogs {
    rx: Receiver<Record>,
    stats: Arc<SelfLogStats>,
}

/// A layer and its receiving end, with room for `capacity` events.
pub fn self_logs(capacity: usize) -> (SelfLogLayer, SelfLogs) {
    let (tx, rx) = sync_channel(capacity.max(1));
    let stats = Arc::new(SelfLogStats::default());
    (
        SelfLogLayer {
            tx,
            stats: stats.clone(),
        },
        SelfLogs { rx, stats },
    )
}

fn level_name(l: &Level) -> &'static str {
    match *l {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// Appends `v` as a logfmt value: bare when it is a plain token, else
/// double-quoted with `\`, `"` and control characters escaped.
fn logfmt_value(out: &mut String, v: &str) {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '=' && c != '\\');
    if plain {
        out.push_str(v);
        return;
    }
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Collects the message and the other fields of an event.
#[derive(Default)]
struct Fields {
    msg: Option<String>,
    rest: String,
}

impl Fields {
    fn add(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = Some(value.to_owned());
        } else {
            self.rest.push(' ');
            self.rest.push_str(field.name());
            self.rest.push('=');
            logfmt_value(&mut self.rest, value);
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.add(field, value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.add(field, &format!("{value:?}"));
    }
}

/// The logfmt line of an event.
fn format_event(event: &Event<'_>) -> String {
    let meta = event.metadata();
    let mut f = Fields::default();
    event.record(&mut f);
    let mut line = String::with_capacity(64 + f.rest.len());
    line.push_str("level=");
    line.push_str(level_name(meta.level()));
    line.push_str(" target=");
    logfmt_value(&mut line, meta.target());
    if let Some(m) = &f.msg {
        line.push_str(" msg=");
        logfmt_value(&mut line, m);
    }
    line.push_str(&f.rest);
    line
}

/// Clears the formatting guard even if formatting panics.
struct Unsuppress;
impl Drop for Unsuppress {
    fn drop(&mut self) {
        SUPPRESSED.with(|s| s.set(false));
    }
}

impl<S: Subscriber> Layer<S> for SelfLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if SUPPRESSED.with(|s| s.replace(true)) {
            return;
        }
        let _guard = Unsuppress;
        let rec = Record {
            ts: agent::logs::now_ns(),
            level: level_name(event.metadata().level()),
            line: format_event(event),
        };
        match self.tx.try_send(rec) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl SelfLogLayer {
    pub fn stats(&self) -> Arc<SelfLogStats> {
        self.stats.clone()
    }
}

/// The running writer; stopping it drains what is queued first.
pub struct SelfLogWriter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SelfLogWriter {
    pub fn stop(mut self) {
        self.halt();
    }
    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SelfLogWriter {
    fn drop(&mut self) {
        self.halt();
    }
}

impl SelfLogs {
    pub fn stats(&self) -> Arc<SelfLogStats> {
        self.stats.clone()
    }

    /// Starts the writer thread: lines go to `sink` with labels
    /// `job="flightdeck"`, `host`, `level`. The thread runs under the
    /// caller's `tracing` dispatcher (so its own warnings reach stderr) with
    /// self-log capture off.
    pub fn start(
        self,
        sink: Arc<dyn LogSink>,
        host: String,
        telemetry: Option<Arc<Telemetry>>,
    ) -> std::io::Result<SelfLogWriter> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let thread = std::thread::Builder::new()
            .name("self-logs".into())
            .spawn(move || {
                SUPPRESSED.with(|s| s.set(true));
                tracing::dispatcher::with_default(&dispatch, || {
                    self.run(sink.as_ref(), &host, telemetry.as_deref(), &flag)
                });
            })?;
        Ok(SelfLogWriter {
            stop,
            thread: Some(thread),
        })
    }

    fn run(
        &self,
        sink: &dyn LogSink,
        host: &str,
        telemetry: Option<&Telemetry>,
        stop: &AtomicBool,
    ) {
        let mut last_ts: BTreeMap<&'static str, i64> = BTreeMap::new();
        let mut failing = false;
        let mut dropped_seen = 0;
        loop {
            // Once stopping, one last pass over what is queued, then out.
            let stopping = stop.load(Ordering::SeqCst);
            let first = match self.rx.recv_timeout(Duration::from_millis(200)) {
                Ok(r) => Some(r),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut batch: Vec<Record> = first.into_iter().collect();
            while batch.len() < BATCH {
                match self.rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            if let Some(t) = telemetry {
                let d = self.stats.dropped();
                if d > dropped_seen {
                    t.add(DROPPED, &[], (d - dropped_seen) as f64);
                    dropped_seen = d;
                }
            }
            if batch.is_empty() {
                if stopping {
                    return;
                }
                continue;
            }
            let n = batch.len() as u64;
            let streams = to_streams(batch, host, &mut last_ts);
            match sink.push(&streams) {
                Ok(()) => {
                    self.stats.written.fetch_add(n, Ordering::Relaxed);
                    failing = false;
                }
                Err(e) => {
                    self.stats.failed.fetch_add(n, Ordering::Relaxed);
                    if !failing {
                        // Goes to stderr only: this thread is suppressed.
                        tracing::warn!(error = %e, "cannot store Flightdeck's own log lines; dropping them until the log store accepts again");
                        failing = true;
                    }
                }
            }
            if stopping {
                return;
            }
        }
    }
}

/// Groups records by level; timestamps made strictly increasing per stream.
fn to_streams(
    batch: Vec<Record>,
    host: &str,
    last_ts: &mut BTreeMap<&'static str, i64>,
) -> Vec<LogStream> {
    let mut by: BTreeMap<&'static str, Vec<LogEntry>> = BTreeMap::new();
    for r in batch {
        let last = last_ts.entry(r.level).or_insert(i64::MIN);
        let ts = r.ts.max(last.saturating_add(1));
        *last = ts;
        by.entry(r.level)
            .or_default()
            .push(LogEntry { ts, line: r.line });
    }
    by.into_iter()
        .map(|(level, entries)| LogStream {
            labels: model::Labels::from_pairs([("job", JOB), ("host", host), ("level", level)]),
            entries,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Default)]
    struct Collect {
        got: Mutex<Vec<LogStream>>,
        /// Emit an event from inside `push`, as a store might.
        chatty: bool,
    }

    impl LogSink for Collect {
        fn push(&self, streams: &[LogStream]) -> Result<(), String> {
            if self.chatty {
                tracing::info!(n = streams.len(), "sink writing");
            }
            self.got.lock().unwrap().extend_from_slice(streams);
            Ok(())
        }
    }

    impl Collect {
        fn lines(&self) -> Vec<(String, String)> {
            self.got
                .lock()
                .unwrap()
                .iter()
                .flat_map(|s| {
                    let l = s.labels.to_string();
                    s.entries.iter().map(move |e| (l.clone(), e.line.clone()))
                })
                .collect()
        }
    }

    fn wait_for(mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn logfmt_quoting() {
        let check = |v: &str, want: &str| {
            let mut s = String::new();
            logfmt_value(&mut s, v);
            assert_eq!(s, want, "{v:?}");
        };
        check("plain", "plain");
        check("127.0.0.1:9090", "127.0.0.1:9090");
        check("", "\"\"");
        check("two words", "\"two words\"");
        check("a=b", "\"a=b\"");
        check("say \"hi\"\nnow\\", "\"say \\\"hi\\\"\\nnow\\\\\"");
        check("bell\u{7}", "\"bell\\u{7}\"");
    }

    #[test]
    fn events_become_lines_with_labels_and_no_recursion() {
        let (layer, logs) = self_logs(64);
        let stats = logs.stats();
        let sink = Arc::new(Collect {
            chatty: true,
            ..Collect::default()
        });
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let writer = logs.start(sink.clone(), "h1".into(), None).unwrap();
            tracing::info!(address = "127.0.0.1:1", n = 3, "flightdeck listening");
            tracing::warn!(error = %"disk full", "cannot flush");
            wait_for(|| stats.written() >= 2);
            // The sink's own events (raised on the writer thread) never
            // come back: give them time to, then stop.
            std::thread::sleep(Duration::from_millis(300));
            writer.stop();
        });
        let mut got = sink.lines();
        got.sort();
        let t = "server::hostlogs::selflog::tests";
        assert_eq!(
            got,
            vec![
                (
                    r#"{host="h1", job="flightdeck", level="info"}"#.to_string(),
                    format!(
                        r#"level=info target={t} msg="flightdeck listening" address=127.0.0.1:1 n=3"#
                    )
                ),
                (
                    r#"{host="h1", job="flightdeck", level="warn"}"#.to_string(),
                    format!(r#"level=warn target={t} msg="cannot flush" error="disk full""#)
                ),
            ]
        );
        assert_eq!(stats.written(), 2);
        assert_eq!(stats.dropped(), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (layer, logs) = self_logs(4);
        let stats = logs.stats();
        let subscriber = tracing_subscriber::registry().with(layer);
        let sink = Arc::new(Collect::default());
        let telemetry = Arc::new(Telemetry::default());
        tracing::subscriber::with_default(subscriber, || {
            // No writer yet: the queue holds 4, the rest are dropped.
            for i in 0..10 {
                tracing::info!(i, "event");
            }
            assert_eq!(stats.dropped(), 6);
            let writer = logs
                .start(sink.clone(), "h1".into(), Some(telemetry.clone()))
                .unwrap();
            wait_for(|| stats.written() == 4);
            writer.stop();
        });
        let lines: Vec<String> = sink.lines().into_iter().map(|(_, l)| l).collect();
        let t = "server::hostlogs::selflog::tests";
        assert_eq!(
            lines,
            (0..4)
                .map(|i| format!("level=info target={t} msg=event i={i}"))
                .collect::<Vec<_>>()
        );
        assert_eq!(telemetry.counter(DROPPED, &[]), 6.0);
    }

    #[test]
    fn into_the_log_store() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(logstore::Store::open(dir.path(), logstore::Options::default()).unwrap());
        let (layer, logs) = self_logs(16);
        let stats = logs.stats();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let writer = logs
                .start(
                    Arc::new(super::super::StoreSink::new(store.clone(), "default")),
                    "h1".into(),
                    None,
                )
                .unwrap();
            tracing::error!("same");
            tracing::error!("same");
            wait_for(|| stats.written() == 2);
            writer.stop();
        });
        let got = super::super::tests::read_lines(&store, "default", JOB);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].0.to_string(),
            r#"{host="h1", job="flightdeck", level="error"}"#
        );
        // Equal lines at the same instant are not merged by the store.
        assert_eq!(got[0].1.len(), 2);
    }
}
