//! Fault injection: switches that make the next (or every) write or fsync
//! fail with an `io::Error`, so tests can exercise crash and failure paths.
//!
//! Writing code calls [`Faults::check_write`] / [`Faults::check_fsync`]
//! right before the real system call (or uses [`crate::write_all`] and
//! [`crate::sync_file`], which do it). Production code passes
//! [`Faults::disabled`], which costs one `Option` check per call.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// A cheap-to-clone handle on a set of fault switches. Clones share state:
/// a test keeps one clone and flips switches while the store holds another.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    state: Option<Arc<State>>,
}

#[derive(Debug, Default)]
struct State {
    fail_next_write: AtomicBool,
    fail_next_fsync: AtomicBool,
    fail_all_writes: AtomicBool,
    fail_all_fsyncs: AtomicBool,
    /// When non-zero, the next write persists only this many bytes, then fails.
    tear_next_write: AtomicUsize,
    writes_failed: AtomicU64,
    fsyncs_failed: AtomicU64,
}

impl Faults {
    /// No faults, ever (what production code uses).
    pub fn disabled() -> Faults {
        Faults { state: None }
    }

    /// A handle whose switches start off and can be flipped.
    pub fn enabled() -> Faults {
        Faults {
            state: Some(Arc::new(State::default())),
        }
    }

    fn state(&self) -> Option<&State> {
        self.state.as_deref()
    }

    /// The next write fails (nothing written).
    pub fn fail_next_write(&self) {
        self.switch(|s| s.fail_next_write.store(true, Ordering::SeqCst));
    }

    /// The next fsync fails (the data may already be in the page cache).
    pub fn fail_next_fsync(&self) {
        self.switch(|s| s.fail_next_fsync.store(true, Ordering::SeqCst));
    }

    /// Every write fails until [`Faults::clear`].
    pub fn fail_all_writes(&self) {
        self.switch(|s| s.fail_all_writes.store(true, Ordering::SeqCst));
    }

    /// Every fsync fails until [`Faults::clear`].
    pub fn fail_all_fsyncs(&self) {
        self.switch(|s| s.fail_all_fsyncs.store(true, Ordering::SeqCst));
    }

    /// The next write through [`crate::write_all`] writes only the first
    /// `bytes` bytes, then fails: a torn write.
    pub fn tear_next_write(&self, bytes: usize) {
        self.switch(|s| s.tear_next_write.store(bytes, Ordering::SeqCst));
    }

    /// Turns every switch off.
    pub fn clear(&self) {
        self.switch(|s| {
            s.fail_next_write.store(false, Ordering::SeqCst);
            s.fail_next_fsync.store(false, Ordering::SeqCst);
            s.fail_all_writes.store(false, Ordering::SeqCst);
            s.fail_all_fsyncs.store(false, Ordering::SeqCst);
            s.tear_next_write.store(0, Ordering::SeqCst);
        });
    }

    /// How many writes and fsyncs were made to fail so far.
    pub fn injected(&self) -> (u64, u64) {
        self.state().map_or((0, 0), |s| {
            (
                s.writes_failed.load(Ordering::SeqCst),
                s.fsyncs_failed.load(Ordering::SeqCst),
            )
        })
    }

    fn switch(&self, f: impl FnOnce(&State)) {
        // Flipping a switch on a disabled handle does nothing: production
        // handles cannot be armed.
        if let Some(s) = self.state() {
            f(s);
        }
    }

    /// Called before a write: `Err` if a write fault is armed.
    pub fn check_write(&self, what: &str) -> io::Result<()> {
        let Some(s) = self.state() else { return Ok(()) };
        if s.fail_all_writes.load(Ordering::SeqCst)
            || s.fail_next_write.swap(false, Ordering::SeqCst)
        {
            s.writes_failed.fetch_add(1, Ordering::SeqCst);
            return Err(injected("write", what));
        }
        Ok(())
    }

    /// Called before an fsync: `Err` if an fsync fault is armed.
    pub fn check_fsync(&self, what: &str) -> io::Result<()> {
        let Some(s) = self.state() else { return Ok(()) };
        if s.fail_all_fsyncs.load(Ordering::SeqCst)
            || s.fail_next_fsync.swap(false, Ordering::SeqCst)
        {
            s.fsyncs_failed.fetch_add(1, Ordering::SeqCst);
            return Err(injected("fsync", what));
        }
        Ok(())
    }

    /// Takes the armed torn-write length, if any (0 = none).
    pub(crate) fn take_tear(&self) -> usize {
        self.state()
            .map_or(0, |s| s.tear_next_write.swap(0, Ordering::SeqCst))
    }

    pub(crate) fn count_write_failure(&self) {
        if let Some(s) = self.state() {
            s.writes_failed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn injected(op: &str, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::StorageFull,
        format!("injected fault: {op} of {what} failed"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_fire_once_or_always() {
        let f = Faults::enabled();
        let g = f.clone();
        assert!(f.check_write("x").is_ok());
        g.fail_next_write();
        let e = f.check_write("seg").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert!(e.to_string().contains("injected fault"), "{e}");
        assert!(f.check_write("x").is_ok());
        g.fail_all_fsyncs();
        assert!(f.check_fsync("a").is_err());
        assert!(f.check_fsync("b").is_err());
        g.clear();
        assert!(f.check_fsync("c").is_ok());
        assert_eq!(f.injected(), (1, 2));
    }

    #[test]
    fn disabled_never_fails() {
        let f = Faults::disabled();
        assert!(f.check_write("x").is_ok());
        assert!(f.check_fsync("x").is_ok());
        assert_eq!(f.take_tear(), 0);
    }
}
