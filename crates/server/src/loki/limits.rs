//! Per-project log limits that need state across requests: the ingestion
//! rate (a token bucket of bytes per second with a burst, as Loki's
//! `ingestion_rate_mb` / `ingestion_burst_size_mb`) and the number of
//! streams (`max_streams_per_project`, counting active streams as Loki does).
//!
//! Both are kept in memory. The active streams of a project are seeded from
//! the store the first time the project writes after a start (as if pushed
//! then); a stream stops counting once it has had no push for
//! [`STREAM_ACTIVE_FOR`] (Loki's default `chunk_idle_period`).

use std::collections::HashMap;
use std::sync::Mutex;

use ingest::logs::LogLimits;
use model::Labels;

/// Everything that limits one project's log writes.
#[derive(Clone, Debug)]
pub struct ProjectLimits {
    /// Checks on each stream and entry (`ingest::logs::validate`).
    pub entries: LogLimits,
    /// Sustained ingestion rate, bytes per second (lines + metadata).
    pub rate_bytes: f64,
    /// Bucket size: the most bytes accepted at once.
    pub burst_bytes: f64,
    /// Distinct streams a project may hold.
    pub max_streams: usize,
    /// Retention of the project's segments.
    pub retention: logstore::Retention,
}

impl Default for ProjectLimits {
    fn default() -> Self {
        ProjectLimits {
            entries: LogLimits::default(),
            rate_bytes: 4.0 * MB,
            burst_bytes: 6.0 * MB,
            max_streams: 10_000,
            retention: logstore::Retention {
                max_age_ns: Some(744 * 3_600_000_000_000),
                max_bytes: None,
            },
        }
    }
}

/// Loki's "MB" in `ingestion_rate_mb`: 2^20 bytes.
pub const MB: f64 = 1024.0 * 1024.0;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last_ns: i64,
}

/// Token buckets, one per project.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Takes `bytes` from `project`'s bucket at `now_ns`, or refuses (and
    /// takes nothing) when the bucket holds fewer: the whole request is then
    /// refused, as Loki's distributor does.
    pub fn take(&self, project: &str, bytes: usize, l: &ProjectLimits, now_ns: i64) -> bool {
        let mut m = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = m.entry(project.to_string()).or_insert(Bucket {
            tokens: l.burst_bytes,
            last_ns: now_ns,
        });
        let dt = (now_ns - b.last_ns).max(0) as f64 / 1e9;
        b.tokens = (b.tokens + dt * l.rate_bytes).min(l.burst_bytes);
        b.last_ns = b.last_ns.max(now_ns);
        let need = bytes as f64;
        if need <= b.tokens {
            b.tokens -= need;
            true
        } else {
            false
        }
    }
}

/// How long a stream counts against `max_streams_per_project` after its last push: Loki's
/// limit is on *active* streams, those its ingesters hold, and an ingester lets a stream go
/// once it has been idle for `chunk_idle_period` (30 m by default).
pub const STREAM_ACTIVE_FOR: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// The active streams of each project (hashes of their label sets, with the time of their
/// last push).
#[derive(Debug, Default)]
pub struct StreamTracker {
    projects: Mutex<HashMap<String, HashMap<u64, std::time::Instant>>>,
}

impl StreamTracker {
    /// Splits `labels` into the ones `project` may write: streams active already, and new
    /// ones while fewer than `max` are active. Returns a flag per label set: allowed or
    /// not. `seed` lists the project's existing streams the first time (counted as pushed
    /// now).
    pub fn admit(
        &self,
        project: &str,
        labels: &[&Labels],
        max: usize,
        seed: impl FnOnce() -> Vec<Labels>,
    ) -> Vec<bool> {
        self.admit_at(project, labels, max, seed, std::time::Instant::now())
    }

    /// [`StreamTracker::admit`] at `now`. Streams idle for [`STREAM_ACTIVE_FOR`] are let go
    /// when the limit is reached.
    pub fn admit_at(
        &self,
        project: &str,
        labels: &[&Labels],
        max: usize,
        seed: impl FnOnce() -> Vec<Labels>,
        now: std::time::Instant,
    ) -> Vec<bool> {
        let mut m = self.projects.lock().unwrap_or_else(|e| e.into_inner());
        let active = m
            .entry(project.to_string())
            .or_insert_with(|| seed().iter().map(|l| (l.stable_hash(), now)).collect());
        let mut swept = false;
        labels
            .iter()
            .map(|l| {
                let h = l.stable_hash();
                if let Some(last) = active.get_mut(&h) {
                    *last = now;
                    return true;
                }
                if active.len() >= max && !swept {
                    active
                        .retain(|_, last| now.saturating_duration_since(*last) < STREAM_ACTIVE_FOR);
                    swept = true;
                }
                if active.len() < max {
                    active.insert(h, now);
                    true
                } else {
                    false
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_the_rate_up_to_the_burst() {
        let l = ProjectLimits {
            rate_bytes: 1000.0,
            burst_bytes: 1500.0,
            ..ProjectLimits::default()
        };
        let r = RateLimiter::default();
        let s = 1_000_000_000;
        assert!(r.take("p", 1500, &l, 0));
        assert!(!r.take("p", 1, &l, 0));
        assert!(r.take("other", 1000, &l, 0), "per project");
        assert!(!r.take("p", 600, &l, s / 2)); // 500 there
        assert!(r.take("p", 500, &l, s / 2));
        // a long pause refills only up to the burst
        assert!(!r.take("p", 1501, &l, 100 * s));
        assert!(r.take("p", 1500, &l, 100 * s));
        // a request larger than the burst never passes
        assert!(!r.take("q", 2000, &l, 0));
    }

    #[test]
    fn streams_are_limited_per_project() {
        let t = StreamTracker::default();
        let a = Labels::from_pairs([("job", "a")]);
        let b = Labels::from_pairs([("job", "b")]);
        let c = Labels::from_pairs([("job", "c")]);
        assert_eq!(
            t.admit("p", &[&a, &b], 2, || vec![a.clone()]),
            vec![true, true]
        );
        assert_eq!(
            t.admit("p", &[&c, &a, &b], 2, Vec::new),
            vec![false, true, true]
        );
        assert_eq!(t.admit("q", &[&c], 1, Vec::new), vec![true]);
    }

    /// Like Loki's active-stream limit: a stream idle for `STREAM_ACTIVE_FOR` stops
    /// counting, one pushed to within it keeps counting.
    #[test]
    fn idle_streams_stop_counting() {
        let t = StreamTracker::default();
        let [a, b, c] = ["a", "b", "c"].map(|j| Labels::from_pairs([("job", j)]));
        let t0 = std::time::Instant::now();
        let at = |m: u64| t0 + std::time::Duration::from_secs(60 * m);
        assert_eq!(t.admit_at("p", &[&a, &b], 2, Vec::new, at(0)), [true, true]);
        assert_eq!(t.admit_at("p", &[&b], 2, Vec::new, at(20)), [true]);
        assert_eq!(
            t.admit_at("p", &[&c], 2, Vec::new, at(29)),
            [false],
            "a is 29 m idle"
        );
        assert_eq!(
            t.admit_at("p", &[&c], 2, Vec::new, at(31)),
            [true],
            "a let go"
        );
        assert_eq!(
            t.admit_at("p", &[&a], 2, Vec::new, at(31)),
            [false],
            "b and c active"
        );
        // Seeded streams count from the first push after a start.
        let t = StreamTracker::default();
        assert_eq!(
            t.admit_at("p", &[&c], 1, || vec![a.clone()], at(0)),
            [false]
        );
        assert_eq!(t.admit_at("p", &[&c], 1, Vec::new, at(30)), [true]);
    }
}
