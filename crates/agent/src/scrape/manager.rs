//! Runs every target at its interval: one scheduler thread and a small pool
//! of worker threads that do the (blocking) HTTP scrapes.
//!
//! Why threads and not tokio: a scrape is a blocking `ureq` call bounded by
//! its timeout, the number of targets is small (static configs), and the
//! agent must also run standalone without the server's runtime.
//!
//! Scheduling follows Prometheus: each target has a fixed phase inside its
//! interval, derived from a stable hash of its labels and URL, so targets
//! spread over the interval and keep their slot across restarts. A target
//! still being scraped when its next slot comes skips that slot. On
//! [`Manager::stop`] the threads finish their current scrape, then every
//! target's series get stale markers.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::config::ScrapeJob;
use super::http::Client;
use super::scraper::{TargetScraper, TargetState};
use super::target::DroppedTarget;
use super::{Clock, Sink, SystemClock};

/// Most worker threads, whatever the number of targets.
const MAX_WORKERS: usize = 8;

struct Slot {
    /// Locked by the one worker scraping this target (`busy` keeps it one).
    scraper: Mutex<TargetScraper>,
    /// A copy of the scraper's state after each scrape, so readers never
    /// wait for a scrape in flight.
    state: Mutex<TargetState>,
    /// Set by the scheduler when it hands the target to a worker, cleared
    /// by the worker when done.
    busy: AtomicBool,
}

struct Shared {
    slots: Vec<Slot>,
    dropped: Vec<DroppedTarget>,
    sink: Arc<dyn Sink>,
    clock: Arc<dyn Clock>,
    /// Set once by `stop`; the scheduler waits on `wake` between slots.
    stopping: Mutex<bool>,
    wake: Condvar,
}

/// The running scrapes of a set of jobs.
pub struct Manager {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Manager {
    /// Starts scraping every target of `jobs`, with the system clock.
    pub fn start(jobs: Vec<ScrapeJob>, sink: Arc<dyn Sink>) -> Manager {
        Manager::start_with_clock(jobs, sink, Arc::new(SystemClock))
    }

    /// As [`Manager::start`], with sample timestamps from `clock`
    /// (scheduling uses the monotonic clock).
    pub fn start_with_clock(
        jobs: Vec<ScrapeJob>,
        sink: Arc<dyn Sink>,
        clock: Arc<dyn Clock>,
    ) -> Manager {
        let mut slots = Vec::new();
        let mut dropped = Vec::new();
        for job in jobs {
            let client = Arc::new(Client::new(&job));
            let mut job = job;
            let targets = std::mem::take(&mut job.targets);
            dropped.append(&mut job.dropped);
            let job = Arc::new(job);
            for t in targets {
                let scraper = TargetScraper::new(job.clone(), client.clone(), t);
                slots.push(Slot {
                    state: Mutex::new(scraper.state().clone()),
                    scraper: Mutex::new(scraper),
                    busy: AtomicBool::new(false),
                });
            }
        }
        let shared = Arc::new(Shared {
            slots,
            dropped,
            sink,
            clock,
            stopping: Mutex::new(false),
            wake: Condvar::new(),
        });
        let mut threads = Vec::new();
        if !shared.slots.is_empty() {
            let (tx, rx) = mpsc::channel::<usize>();
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..shared.slots.len().min(MAX_WORKERS) {
                let (shared, rx) = (shared.clone(), rx.clone());
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("scrape-worker-{i}"))
                        .spawn(move || worker(&shared, &rx))
                        .unwrap_or_else(|e| panic!("cannot start a scrape thread: {e}")),
                );
            }
            let s = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("scrape-scheduler".into())
                    .spawn(move || scheduler(&s, tx))
                    .unwrap_or_else(|e| panic!("cannot start the scrape scheduler: {e}")),
            );
        }
        Manager { shared, threads }
    }

    /// The active targets and their last scrape, in configuration order.
    pub fn targets(&self) -> Vec<TargetState> {
        self.shared
            .slots
            .iter()
            .map(|s| lock(&s.state).clone())
            .collect()
    }

    /// The targets relabeling dropped.
    pub fn dropped_targets(&self) -> Vec<DroppedTarget> {
        self.shared.dropped.clone()
    }

    /// Stops scheduling, waits for scrapes in flight, then writes stale
    /// markers for every series of every target.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        *lock(&self.shared.stopping) = true;
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            // A panicked scrape thread is a bug already reported on stderr;
            // the stale markers below are still worth writing.
            let _ = t.join();
        }
        let now = self.shared.clock.now_ms();
        for slot in &self.shared.slots {
            let mut s = lock(&slot.scraper);
            let batch = s.end_of_run(now);
            if !batch.series.is_empty() {
                // Nobody is left to show this error to.
                let _ = self.shared.sink.write(s.project(), batch);
            }
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.shutdown();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a scrape panicked (a bug); the data is still a
    // consistent snapshot, so keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Time from `now_ms` to the target's next slot: the phase is
/// `hash % interval` in wall-clock time.
fn first_delay(hash: u64, interval: Duration, now_ms: i64) -> Duration {
    let iv = (interval.as_millis() as u64).max(1);
    let phase = hash % iv;
    let now = now_ms.rem_euclid(iv as i64) as u64;
    Duration::from_millis((phase + iv - now) % iv)
}

fn target_hash(s: &TargetScraper) -> u64 {
    let mut h = s.target().labels.stable_hash();
    for b in s.target().url.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn scheduler(shared: &Shared, tx: mpsc::Sender<usize>) {
    let start = Instant::now();
    let now_ms = shared.clock.now_ms();
    let mut heap: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let mut intervals = Vec::with_capacity(shared.slots.len());
    for (i, slot) in shared.slots.iter().enumerate() {
        let s = lock(&slot.scraper);
        let iv = s.target().interval;
        intervals.push(iv);
        heap.push(Reverse((
            start + first_delay(target_hash(&s), iv, now_ms),
            i,
        )));
    }
    let mut stopping = lock(&shared.stopping);
    while !*stopping {
        let Some(&Reverse((due, i))) = heap.peek() else {
            break;
        };
        let now = Instant::now();
        if due > now {
            stopping = shared
                .wake
                .wait_timeout(stopping, due - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            continue;
        }
        heap.pop();
        if !shared.slots[i].busy.swap(true, Ordering::AcqRel) && tx.send(i).is_err() {
            break;
        }
        let mut next = due + intervals[i];
        while next <= now {
            next += intervals[i];
        }
        heap.push(Reverse((next, i)));
    }
    // Dropping `tx` ends the workers once the queue is drained.
}

fn worker(shared: &Shared, rx: &Mutex<mpsc::Receiver<usize>>) {
    loop {
        let next = lock(rx).recv();
        let Ok(i) = next else { return };
        let slot = &shared.slots[i];
        if !*lock(&shared.stopping) {
            let mut s = lock(&slot.scraper);
            let batch = s.scrape(shared.clock.now_ms());
            if let Err(e) = shared.sink.write(s.project(), batch) {
                s.record_sink_error(&e);
            }
            *lock(&slot.state) = s.state().clone();
        }
        slot.busy.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_slot_is_the_hash_phase_of_wall_time() {
        let iv = Duration::from_secs(10);
        // Phase 3 s of 10 s: slots at 3 s, 13 s, 23 s … of wall time.
        assert_eq!(first_delay(3_000, iv, 12_000), Duration::from_millis(1_000));
        assert_eq!(first_delay(3_000, iv, 13_000), Duration::ZERO);
        assert_eq!(first_delay(3_000, iv, 14_000), Duration::from_millis(9_000));
        assert_eq!(
            first_delay(13_000, iv, 14_000),
            Duration::from_millis(9_000)
        );
    }
}
