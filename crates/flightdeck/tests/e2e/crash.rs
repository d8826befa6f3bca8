//! kill -9 in the middle of concurrent writes, many times: every event and
//! every change acknowledged with 2xx is there after the restart, sequence
//! numbers stay gap-free, and the server keeps accepting writes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{API, Server, try_call};

const CYCLES: usize = 6;
const WRITERS: usize = 8;

#[test]
fn acknowledged_events_survive_sigkill() {
    let mut s = Server::binary();
    let (_, w) = s.token_in("default", &["audit:write", "audit:read"]);
    let acked_events: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let acked_projects: Arc<Mutex<Vec<String>>> = Arc::default();
    // A cheap deterministic spread of kill moments: 150..=650 ms.
    let delays = [420u64, 150, 650, 275, 530, 345];
    for (cycle, delay) in delays.iter().enumerate().take(CYCLES) {
        let stop = Instant::now() + Duration::from_millis(*delay);
        let mut threads = Vec::new();
        for writer in 0..WRITERS {
            let (url, token, admin) = (s.url.clone(), w.clone(), s.token.clone());
            let (ev, pr) = (acked_events.clone(), acked_projects.clone());
            threads.push(std::thread::spawn(move || {
                let mut i = 0;
                // Keep writing through the kill; errors after it are expected.
                while Instant::now() < stop + Duration::from_millis(300) {
                    i += 1;
                    let ext = format!("c{cycle}-w{writer}-{i}");
                    if writer == 0 && i % 10 == 1 {
                        let name = format!("p-{cycle}-{i}");
                        let r = {
                            try_call("POST", &format!("{url}{API}/projects"), &[("authorization", &format!("Bearer {admin}"))],
                                Some(("application/json", json!({"name": name}).to_string().into_bytes())))
                        };
                        match r {
                            Ok(r) if r.status == 201 => pr.lock().unwrap().push(name),
                            _ => break,
                        }
                        continue;
                    }
                    let r = {
                        try_call("POST", &format!("{url}{API}/projects/default/audit/events"), &[("authorization", &format!("Bearer {token}"))],
                            Some(("application/json", json!({"action": "ci.deploy.start", "event_source": "crash", "external_id": ext}).to_string().into_bytes())))
                    };
                    match r {
                        Ok(r) if r.status == 201 => {
                            let id = r.json()["id"].as_str().unwrap().to_string();
                            ev.lock().unwrap().push((id, ext));
                        }
                        _ => break,
                    }
                }
            }));
        }
        std::thread::sleep(stop.saturating_duration_since(Instant::now()));
        s.kill9();
        for t in threads {
            let _ = t.join();
        }
        s.restart();
    }
    let events = acked_events.lock().unwrap().clone();
    eprintln!(
        "crash: {} events and {} projects acknowledged across {CYCLES} kills",
        events.len(),
        acked_projects.lock().unwrap().len()
    );
    assert!(
        events.len() > 100,
        "too few acknowledged writes to mean anything: {}",
        events.len()
    );
    // Every acknowledged event, by id, with its content.
    let mut all = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!(
                "{API}/projects/default/audit/events?action=ci.deploy.start&order=oldest&limit=1000&cursor={c}"
            ),
            None => format!(
                "{API}/projects/default/audit/events?action=ci.deploy.start&order=oldest&limit=1000"
            ),
        };
        let page = s.get(&path).json();
        for e in page["events"].as_array().unwrap() {
            all.insert((
                e["id"].as_str().unwrap().to_string(),
                e["external_id"].as_str().unwrap().to_string(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let lost: Vec<_> = events.iter().filter(|e| !all.contains(*e)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged events lost, e.g. {:?}",
        lost.len(),
        events.len(),
        &lost[..lost.len().min(3)]
    );
    for p in acked_projects.lock().unwrap().iter() {
        assert_eq!(
            s.get(&format!("{API}/projects/{p}")).status,
            200,
            "acknowledged project {p} lost"
        );
    }
    // log_index is gap-free in the project's log.
    let mut idx: Vec<u64> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => {
                format!("{API}/projects/default/audit/events?order=oldest&limit=1000&cursor={c}")
            }
            None => format!("{API}/projects/default/audit/events?order=oldest&limit=1000"),
        };
        let page = s.get(&path).json();
        idx.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["log_index"].as_u64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert!(
        idx.iter().enumerate().all(|(i, x)| *x == i as u64),
        "log_index has gaps"
    );
    // Still writable.
    let r = s.send_as(
        &w,
        "POST",
        &format!("{API}/projects/default/audit/events"),
        json!({"action": "ci.deploy.finish", "event_source": "crash"}),
    );
    assert_eq!(r.status, 201);
}
