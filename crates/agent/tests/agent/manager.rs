//! The manager end to end: real threads scraping a real local target on a
//! short interval, the targets snapshot, and the stale markers at stop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::scrape::{Clock, Health, Manager};
use model::is_stale_nan;

use crate::{Collect, Reply, TestTarget, jobs};

struct FixedClock;
impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        1_700_000_000_000
    }
}

/// Polls `cond` until it holds or 10 s pass (the manager runs on its own
/// threads; this waits for them, it does not time anything).
fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn manager_scrapes_at_the_interval_and_marks_stale_at_stop() {
    let up = TestTarget::start(Reply::text("a 1\n"));
    let down = TestTarget::start(Reply {
        status: 503,
        ..Reply::text("")
    });
    let cfg = format!(
        r#"
[[scrape_configs]]
job_name = "fast"
project = "p1"
scrape_interval = "50ms"
static_configs = [{{ targets = ["{}", "{}"] }}]
relabel_configs = [{{ action = "drop", source_labels = ["__address__"], regex = "nowhere.*" }}]

[[scrape_configs]]
job_name = "gone"
static_configs = [{{ targets = ["nowhere:1"] }}]
relabel_configs = [{{ action = "drop", source_labels = ["__address__"], regex = "nowhere.*" }}]
"#,
        up.addr, down.addr
    );
    let sink = Arc::new(Collect::default());
    let m = Manager::start_with_clock(jobs(&cfg, ""), sink.clone(), Arc::new(FixedClock));

    let ok = wait_for(|| up.requests().len() >= 3 && down.requests().len() >= 3);
    assert!(ok, "targets were not scraped 3 times within 10 s");
    let ok = wait_for(|| m.targets().iter().all(|t| t.health != Health::Unknown));
    assert!(ok, "target states were not updated");
    let states = m.targets();
    assert_eq!(states.len(), 2);
    assert_eq!(states[0].health, Health::Up);
    assert_eq!(states[0].last_scrape_ms, Some(1_700_000_000_000));
    assert_eq!(states[0].project, "p1");
    assert_eq!(states[1].health, Health::Down);
    assert_eq!(
        states[1].last_error.as_deref(),
        Some("server returned HTTP status 503 Service Unavailable")
    );
    let dropped = m.dropped_targets();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].job, "gone");

    m.stop();
    let batches = sink.0.lock().unwrap();
    assert!(batches.iter().all(|(p, _)| p == "p1"));
    // The last batches are the end-of-run ones: every series stale.
    let ups: Vec<f64> = batches
        .iter()
        .flat_map(|(_, b)| b.series.iter())
        .filter(|s| s.labels.metric_name() == Some("up"))
        .map(|s| s.samples[0].v)
        .collect();
    assert!(ups.contains(&1.0) && ups.contains(&0.0));
    let last_two = &batches[batches.len() - 2..];
    for (_, b) in last_two {
        assert!(!b.series.is_empty());
        assert!(b.series.iter().all(|s| is_stale_nan(s.samples[0].v)));
    }
    let stale_a = last_two
        .iter()
        .flat_map(|(_, b)| b.series.iter())
        .filter(|s| s.labels.metric_name() == Some("a"))
        .count();
    assert_eq!(stale_a, 1);
}

#[test]
fn manager_without_targets_starts_and_stops() {
    let sink = Arc::new(Collect::default());
    let m = Manager::start(Vec::new(), sink.clone());
    assert!(m.targets().is_empty());
    m.stop();
    assert!(sink.0.lock().unwrap().is_empty());
}
