//! Per-series work on two threads with results in order: [`ordered`].
//!
//! A query's cost is mostly per-series work that needs nothing from the other series
//! (decoding chunks, a range function's value at every step), followed by work that must
//! see the series in label order (aggregation, output). [`ordered`] cuts the series into
//! batches that this thread and one helper thread claim in turn, and hands every result to
//! the in-order consumer on the calling thread, so the answer is the one a single thread
//! computes, bit for bit.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

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

/// Marks the helper gone when it ends, also by a panic, so the consumer never waits for it.
struct Gone<'a, T, R>(&'a Shared<T, R>);

impl<T, R> Drop for Gone<'_, T, R> {
    fn drop(&mut self) {
        self.0.lock().helper_gone = true;
        self.0.cv.notify_all();
    }
}

/// `work` applied to every item (each thread with its own `S`), `emit` called with the
/// results in item order on this thread. Fewer than two batches of items, or one core:
/// all on this thread. An error from `emit` stops the work and is returned.
pub fn ordered<T, R, S>(
    items: Vec<T>,
    batch: usize,
    work: impl Fn(&mut S, T) -> R + Sync,
    mut emit: impl FnMut(R) -> Result<(), Error>,
) -> Result<(), Error>
where
    T: Send,
    R: Send,
    S: Default,
{
    let batch = batch.max(1);
    if items.len() < 2 * batch || !parallel() || ONE_THREAD.get() {
        let mut st = S::default();
        for x in items {
            emit(work(&mut st, x))?;
        }
        return Ok(());
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
    let n = batches.len();
    let shared = Shared {
        state: Mutex::new(State {
            batches,
            next: 0,
            consumed: 0,
            done: BTreeMap::new(),
            stop: false,
            helper_gone: false,
        }),
        cv: Condvar::new(),
    };
    let run = |st: &mut S, b: Vec<T>| -> Vec<R> { b.into_iter().map(|x| work(st, x)).collect() };
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("query-worker".into())
            .spawn_scoped(scope, || {
                let _gone = Gone(&shared);
                let mut st = S::default();
                loop {
                    let (k, b) = {
                        let mut g = shared.lock();
                        loop {
                            if g.stop || g.next >= n {
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
            });
        if helper.is_err() {
            // No thread to be had: this thread claims every batch below.
            shared.lock().helper_gone = true;
        }
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
                    // The helper claimed batch k and ended without it: it panicked; the
                    // panic surfaces when the scope joins it.
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
    })
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
            |calls: &mut u64, x| {
                *calls += 1;
                // Uneven work so the two threads finish batches out of order.
                let spin = if (x / 64) % 3 == 0 { 2_000 } else { 10 };
                let mut h = x;
                for _ in 0..spin {
                    h = h.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                (x, h, *calls)
            },
            |r| {
                got.push(r);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), items);
        // Each thread's own state counts its own calls, so no count passes the total.
        assert!(got.iter().all(|r| r.2 >= 1 && r.2 <= items.len() as u64));

        let mut seen = 0;
        let r = ordered(
            items,
            64,
            |_: &mut (), x| x,
            |x| {
                seen += 1;
                if x == 500 {
                    return Err(Error::Execution("stop here".into()));
                }
                Ok(())
            },
        );
        assert!(matches!(r, Err(Error::Execution(m)) if m == "stop here"));
        assert_eq!(seen, 501);
    }

    /// Few items stay on this thread.
    #[test]
    fn few_items_run_here() {
        let me = std::thread::current().id();
        let mut ids = Vec::new();
        ordered(
            (0..10).collect::<Vec<u32>>(),
            64,
            |_: &mut (), _| std::thread::current().id(),
            |id| {
                ids.push(id);
                Ok(())
            },
        )
        .unwrap();
        assert!(ids.iter().all(|&id| id == me));
    }
}
