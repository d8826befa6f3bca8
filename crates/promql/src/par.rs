//! Per-series work on two threads with results in order: [`ordered`], whose helper is a
//! thread kept for the process.
//!
//! A query's cost is mostly per-series work that needs nothing from the other series
//! (decoding chunks, a range function's value at every step), followed by work that must
//! see the series in label order (aggregation, output). [`ordered`] cuts the series into
//! batches that this thread and one helper thread claim in turn, and hands every result to
//! the in-order consumer on the calling thread, so the answer is the one a single thread
//! computes, bit for bit.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use crate::Error;

/// How many batches past the last one consumed may be worked on: bounds what waits.
const AHEAD: usize = 4;

/// Whether a second core is there (read once).
pub fn parallel() -> bool {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get())) > 1
}

thread_local! {
    static ONE_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every [`ordered`] it calls kept on this thread (to compare both ways).
pub fn one_thread<R>(f: impl FnOnce() -> R) -> R {
    let before = ONE_THREAD.replace(true);
    let r = f();
    ONE_THREAD.set(before);
    r
}

struct State<T, R> {
    batches: Vec<Option<Vec<T>>>,
    /// Next batch to claim.
    next: usize,
    /// Batches consumed so far.
    consumed: usize,
    done: BTreeMap<usize, Vec<R>>,
    /// The consumer stopped (an error): the helper stops too.
    stop: bool,
    /// The helper thread has ended (normally or by a panic).
    helper_gone: bool,
}

struct Shared<T, R> {
    state: Mutex<State<T, R>>,
    cv: Condvar,
}

impl<T, R> Shared<T, R> {
    fn lock(&self) -> MutexGuard<'_, State<T, R>> {
        // A panic while the lock is held is a bug that propagates anyway; the state itself
        // stays consistent (each update is a single assignment), so carry on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn wait<'a>(&self, g: MutexGuard<'a, State<T, R>>) -> MutexGuard<'a, State<T, R>> {
        self.cv.wait(g).unwrap_or_else(|p| p.into_inner())
    }
}

/// Stops the helper when the consumer ends, also by a panic.
struct StopOnDrop<'a, T, R>(&'a Shared<T, R>);

impl<T, R> Drop for StopOnDrop<'_, T, R> {
    fn drop(&mut self) {
        self.0.lock().stop = true;
        self.0.cv.notify_all();
    }
}

/// Marks the helper gone when it ends, also by a panic, so the consumer never waits for it.
struct Gone<'a, T, R>(&'a Shared<T, R>);

impl<T, R> Drop for Gone<'_, T, R> {
    fn drop(&mut self) {
        self.0.lock().helper_gone = true;
        self.0.cv.notify_all();
    }
}

/// Per-item work a kept thread can hold: owns (or shares) all it uses.
pub type OwnedWork<S, T, R> = Arc<dyn Fn(&mut S, T) -> R + Send + Sync>;

/// `work` applied to every item (each thread with its own `S`), `emit` called with the
/// results in item order on this thread. Fewer than two batches of items, or one core:
/// all on this thread. An error from `emit` stops the work and is returned.
///
/// The work owns what it needs (`'static` items, results and `work`), since the second
/// share goes to a thread kept for the process, which needs no start (a thread
/// started per call cost ~35 µs, and on a virtual machine often began hundreds of µs
/// late) and is never waited for: if it has not begun when this thread has done every
/// batch, the call returns and the helper, when it runs, finds nothing left.
pub fn ordered<T, R, S>(
    items: Vec<T>,
    batch: usize,
    work: OwnedWork<S, T, R>,
    mut emit: impl FnMut(R) -> Result<(), Error>,
) -> Result<(), Error>
where
    T: Send + 'static,
    R: Send + 'static,
    S: Default + 'static,
{
    let Some(shared) = split(items, batch, &*work, &mut emit)? else {
        return Ok(());
    };
    let shared = Arc::new(shared);
    let run =
        move |st: &mut S, b: Vec<T>| -> Vec<R> { b.into_iter().map(|x| work(st, x)).collect() };
    let run = Arc::new(run);
    let job = {
        let (shared, run) = (shared.clone(), run.clone());
        Box::new(move || help(&shared, &*run))
    };
    if !pool::submit(job) {
        shared.lock().helper_gone = true;
    }
    consume(&shared, &*run, emit)
}

/// The batches of `items`, shared with a helper; `None` when they are too few to share (or
/// there is one core), in which case `work` and `emit` have run here already.
fn split<T, R, S: Default>(
    items: Vec<T>,
    batch: usize,
    work: &(impl Fn(&mut S, T) -> R + ?Sized),
    emit: &mut impl FnMut(R) -> Result<(), Error>,
) -> Result<Option<Shared<T, R>>, Error> {
    let batch = batch.max(1);
    if items.len() < 2 * batch || !parallel() || ONE_THREAD.get() {
        let mut st = S::default();
        for x in items {
            emit(work(&mut st, x))?;
        }
        return Ok(None);
    }
    let mut batches = Vec::with_capacity(items.len().div_ceil(batch));
    let mut it = items.into_iter();
    loop {
        let b: Vec<T> = it.by_ref().take(batch).collect();
        if b.is_empty() {
            break;
        }
        batches.push(Some(b));
    }
    Ok(Some(Shared {
        state: Mutex::new(State {
            batches,
            next: 0,
            consumed: 0,
            done: BTreeMap::new(),
            stop: false,
            helper_gone: false,
        }),
        cv: Condvar::new(),
    }))
}

/// The helper's part: claims batches (at most [`AHEAD`] past the last consumed) until
/// none is left or the consumer stopped.
fn help<T, R, S: Default>(
    shared: &Shared<T, R>,
    run: &(impl Fn(&mut S, Vec<T>) -> Vec<R> + ?Sized),
) {
    let _gone = Gone(shared);
    let mut st = S::default();
    loop {
        let (k, b) = {
            let mut g = shared.lock();
            loop {
                if g.stop || g.next >= g.batches.len() {
                    return;
                }
                if g.next < g.consumed + AHEAD {
                    break;
                }
                g = shared.wait(g);
            }
            let k = g.next;
            g.next += 1;
            (k, g.batches[k].take())
        };
        let out = run(&mut st, b.unwrap_or_default());
        shared.lock().done.insert(k, out);
        shared.cv.notify_all();
    }
}

/// The calling thread's part: every batch's results to `emit` in order, working ahead on
/// unclaimed batches while the one it needs is with the helper.
fn consume<T, R, S: Default>(
    shared: &Shared<T, R>,
    run: &(impl Fn(&mut S, Vec<T>) -> Vec<R> + ?Sized),
    mut emit: impl FnMut(R) -> Result<(), Error>,
) -> Result<(), Error> {
    // However this ends (also by a panic here), the helper stops: one that has not begun
    // finds nothing to do, one that waits for room ahead is woken, never left waiting.
    let _stop = StopOnDrop(shared);
    let n = shared.lock().batches.len();
    let mut st = S::default();
    let stop = |e: Error| {
        shared.lock().stop = true;
        shared.cv.notify_all();
        Err(e)
    };
    for k in 0..n {
        let out = loop {
            let mut g = shared.lock();
            if let Some(out) = g.done.remove(&k) {
                break out;
            }
            if g.next < n && (g.next < k + AHEAD || g.helper_gone) {
                // Batch k is with the helper (or next): work ahead meanwhile.
                let j = g.next;
                g.next += 1;
                let b = g.batches[j].take();
                drop(g);
                let out = run(&mut st, b.unwrap_or_default());
                if j == k {
                    break out;
                }
                shared.lock().done.insert(j, out);
                continue;
            }
            if g.helper_gone {
                // The helper claimed batch k and ended without it: it panicked.
                drop(g);
                return stop(Error::Storage("a query worker thread failed".into()));
            }
            drop(shared.wait(g));
        };
        for r in out {
            if let Err(e) = emit(r) {
                return stop(e);
            }
        }
        shared.lock().consumed = k + 1;
        shared.cv.notify_all();
    }
    Ok(())
}

/// The threads [`ordered`] hands work to: one fewer than the cores, started on first
/// use and kept.
mod pool {
    use std::collections::VecDeque;
    use std::sync::{Condvar, Mutex, OnceLock};

    type Job = Box<dyn FnOnce() + Send>;

    struct Pool {
        queue: Mutex<VecDeque<Job>>,
        ready: Condvar,
    }

    fn pool() -> Option<&'static Pool> {
        static POOL: OnceLock<Option<&'static Pool>> = OnceLock::new();
        *POOL.get_or_init(|| {
            let threads = std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .saturating_sub(1)
                .max(1);
            // As long-lived as its threads: the process.
            let p: &'static Pool = Box::leak(Box::new(Pool {
                queue: Mutex::new(VecDeque::new()),
                ready: Condvar::new(),
            }));
            let started = (0..threads)
                .filter(|_| {
                    std::thread::Builder::new()
                        .name("query-worker".into())
                        .spawn(move || serve(p))
                        .is_ok()
                })
                .count();
            (started > 0).then_some(p)
        })
    }

    /// Queues `job` for a pool thread; `false` when there is none.
    pub(super) fn submit(job: Job) -> bool {
        let Some(p) = pool() else {
            return false;
        };
        p.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(job);
        p.ready.notify_one();
        true
    }

    fn serve(p: &'static Pool) {
        loop {
            let job = {
                let mut q = p.queue.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if let Some(j) = q.pop_front() {
                        break j;
                    }
                    q = p.ready.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            };
            // A panic ends that job's share (its caller sees the helper gone); the thread
            // lives on for the next.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Results arrive in item order whatever thread computed them, per-thread state is
    /// per thread, and an error from the consumer stops the work early.
    #[test]
    fn results_in_order_and_errors_stop() {
        let items: Vec<u64> = (0..10_000).collect();
        let mut got = Vec::new();
        ordered(
            items.clone(),
            64,
            Arc::new(|calls: &mut u64, x: u64| {
                *calls += 1;
                // Uneven work so the two threads finish batches out of order.
                let spin = if (x / 64).is_multiple_of(3) {
                    2_000
                } else {
                    10
                };
                let mut h = x;
                for _ in 0..spin {
                    h = h.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                (x, h, *calls)
            }),
            |r| {
                got.push(r);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), items);
        // Each thread's own state counts its own calls, so no count passes the total.
        assert!(got.iter().all(|r| r.2 >= 1 && r.2 <= items.len() as u64));

        stops_at_500(|emit| ordered(items, 64, Arc::new(|_: &mut (), x: u64| x), emit));
    }

    /// `call` with a consumer that fails at item 500: that error comes back, and nothing
    /// after it is consumed.
    fn stops_at_500(
        call: impl FnOnce(&mut dyn FnMut(u64) -> Result<(), Error>) -> Result<(), Error>,
    ) {
        let mut seen = 0;
        let r = call(&mut |x| {
            seen += 1;
            if x == 500 {
                return Err(Error::Execution("stop here".into()));
            }
            Ok(())
        });
        assert!(matches!(r, Err(Error::Execution(m)) if m == "stop here"));
        assert_eq!(seen, 501);
    }

    /// A panic on the kept helper fails the call with an error, and one in the consumer
    /// does not leave the helper waiting: the thread takes part in later calls.
    #[test]
    fn panics_fail_the_call_and_the_helper_lives_on() {
        let items: Vec<u64> = (0..20_000).collect();
        stops_at_500(|emit| ordered(items.clone(), 64, Arc::new(|_: &mut (), x: u64| x), emit));
        // Work that panics only on the helper: slow batches here, so the helper gets some.
        let on_helper = Arc::new(|_: &mut (), x: u64| {
            if std::thread::current().name() == Some("query-worker") {
                panic!("helper fails on {x}");
            }
            std::thread::sleep(std::time::Duration::from_micros(20));
            x
        });
        let r = ordered(items.clone(), 16, on_helper, |_| Ok(()));
        assert!(matches!(r, Err(Error::Storage(_))), "{r:?}");
        // A panic in the consumer does not leave the helper waiting for room ahead.
        let r = std::panic::catch_unwind(|| {
            ordered(items.clone(), 16, Arc::new(|_: &mut (), x: u64| x), |x| {
                assert!(x < 100, "consumer fails");
                Ok(())
            })
        });
        assert!(r.is_err());
        // ... and takes part in the next call (slow items, so that it surely wakes).
        let mut on_helper = 0;
        ordered(
            (0..2_000u64).collect(),
            16,
            Arc::new(|_: &mut (), _x: u64| {
                std::thread::sleep(std::time::Duration::from_micros(50));
                std::thread::current().name() == Some("query-worker")
            }),
            |h| {
                on_helper += usize::from(h);
                Ok(())
            },
        )
        .unwrap();
        assert!(on_helper > 0);
        // The pool thread is still there for the next call.
        let mut n = 0;
        ordered(items, 64, Arc::new(|_: &mut (), x: u64| x), |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 20_000);
    }

    /// Few items stay on this thread.
    #[test]
    fn few_items_run_here() {
        let me = std::thread::current().id();
        let mut ids = Vec::new();
        ordered(
            (0..10).collect::<Vec<u32>>(),
            64,
            Arc::new(|_: &mut (), _: u32| std::thread::current().id()),
            |id| {
                ids.push(id);
                Ok(())
            },
        )
        .unwrap();
        assert!(ids.iter().all(|&id| id == me));
    }
}
