//! Login rate limiting: failed attempts counted per source IP and per user
//! name in a fixed window; past the limit, logins answer 429 without
//! checking the password (so guessing costs the attacker, not our CPU).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) struct LoginLimiter {
    max: u32,
    window: Duration,
    /// key ("ip:1.2.3.4" or "user:name") → (window start, failures in it).
    /// A std mutex: held for a map lookup only, never across an await.
    failures: Mutex<HashMap<String, (Instant, u32)>>,
}

impl LoginLimiter {
    pub(crate) fn new(max: u32, window: Duration) -> LoginLimiter {
        LoginLimiter {
            max,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// True when any of the keys is over its limit.
    pub(crate) fn blocked(&self, keys: &[String]) -> bool {
        let now = Instant::now();
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter().any(|k| {
            map.get(k).is_some_and(|(start, n)| {
                now.duration_since(*start) < self.window && *n >= self.max
            })
        })
    }

    pub(crate) fn record_failure(&self, keys: &[String]) {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            let window = self.window;
            map.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        for k in keys {
            let e = map.entry(k.clone()).or_insert((now, 0));
            if now.duration_since(e.0) >= self.window {
                *e = (now, 0);
            }
            e.1 += 1;
        }
    }

    pub(crate) fn record_success(&self, user_key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(user_key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_per_key() {
        let l = LoginLimiter::new(2, Duration::from_secs(60));
        let k = vec!["ip:a".to_string(), "user:x".to_string()];
        assert!(!l.blocked(&k));
        l.record_failure(&k);
        assert!(!l.blocked(&k));
        l.record_failure(&k);
        assert!(l.blocked(&k));
        assert!(l.blocked(&["user:x".to_string()]));
        assert!(!l.blocked(&["user:y".to_string()]));
    }
}
