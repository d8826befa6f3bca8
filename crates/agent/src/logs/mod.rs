//! Host logs: tailing files ([`files`]), following the systemd journal
//! ([`journal`]), and the vocabulary they share with whoever stores the
//! lines ([`LogSink`], [`LogStream`], [`LogEntry`]).
//!
//! Both sources hand their lines to a [`LogSink`] and advance their saved
//! position (file offsets, journal cursor) only after the sink returned
//! `Ok`: a sink that acknowledges only durable lines makes a restart lose
//! nothing and repeat nothing. The sink is a trait so that this crate stays
//! free of the log store and of any async runtime: `flightdeck serve`
//! adapts it to `logstore::Store::append`.
//!
//! Plain threads, not tasks: reading files and a child's pipe blocks, and
//! the sink (a durable append) blocks too.

pub mod files;
pub mod journal;
mod positions;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use model::Labels;

/// One log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Nanoseconds since the Unix epoch.
    pub ts: i64,
    pub line: String,
}

/// Entries of one stream (one label set), oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogStream {
    pub labels: Labels,
    pub entries: Vec<LogEntry>,
}

/// Where collected lines go. `push` returns `Ok` only once the lines are
/// kept for good (for the log store: durable); on `Err` the caller keeps
/// its position and offers the same lines again later.
pub trait LogSink: Send + Sync {
    fn push(&self, streams: &[LogStream]) -> Result<(), String>;
}

impl<F> LogSink for F
where
    F: Fn(&[LogStream]) -> Result<(), String> + Send + Sync,
{
    fn push(&self, streams: &[LogStream]) -> Result<(), String> {
        self(streams)
    }
}

/// This host's name (`uname` nodename), the `host` label of every source.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A background source thread and its stop flag; stopping joins it.
pub struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Called by [`Running::stop`] before joining, to unblock the thread
    /// (the journal follower kills its child here).
    on_stop: Option<Box<dyn FnOnce() + Send>>,
}

impl Running {
    pub fn new(
        stop: Arc<AtomicBool>,
        thread: JoinHandle<()>,
        on_stop: Option<Box<dyn FnOnce() + Send>>,
    ) -> Running {
        Running {
            stop,
            thread: Some(thread),
            on_stop,
        }
    }

    /// Asks the thread to stop and waits for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(f) = self.on_stop.take() {
            f();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Sleeps `total` in short steps, returning early (true) once `stop` is set.
pub(crate) fn sleep_unless_stopped(stop: &AtomicBool, total: Duration) -> bool {
    let step = Duration::from_millis(50);
    let mut left = total;
    while !left.is_zero() {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        let d = left.min(step);
        std::thread::sleep(d);
        left -= d;
    }
    stop.load(Ordering::SeqCst)
}
