//! Shared helpers: draft builders, openers, an injectable clock.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use audit::*;

pub const T0: i64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z

/// A draft whose fields are all derived from `n`, so every filter has
/// something to select on.
pub fn draft(project: Option<&str>, action: &str, n: usize) -> EventDraft {
    EventDraft {
        organization: "acme".into(),
        project: project.map(str::to_string),
        principal: Principal {
            kind: if n.is_multiple_of(3) {
                PrincipalKind::Token
            } else {
                PrincipalKind::User
            },
            id: format!("u{}", n % 5),
            name: format!("User {}", n % 5),
            token_id: None,
            auth_method: Some(AuthMethod::Bearer),
        },
        source_ip: Some(format!("10.0.0.{}", n % 4)),
        user_agent: Some("curl/8".into()),
        action: action.into(),
        resource: Some(Resource {
            kind: if n.is_multiple_of(2) {
                "token".into()
            } else {
                "project".into()
            },
            id: Some(format!("r{}", n % 7)),
            name: Some(if n.is_multiple_of(11) {
                "Größe Ärger".into()
            } else {
                format!("name-{n}")
            }),
        }),
        request_id: Some(format!("req-{n}")),
        result: Outcome {
            status: if n % 4 == 3 {
                Status::Failure
            } else {
                Status::Success
            },
            http_status: Some(200),
            error_code: None,
            error_message: None,
        },
        request_parameters: Some(serde_json::json!({ "n": n, "note": "Needle" })),
        response_elements: None,
        changes: vec![],
        event_source: "flightdeck".into(),
        event_time: None,
        external_id: None,
    }
}

pub fn simple(n: usize) -> EventDraft {
    draft(Some("default"), "iam.token.create", n)
}

/// A clock the test moves by hand.
#[derive(Clone)]
pub struct TestClock(pub Arc<AtomicI64>);

impl TestClock {
    pub fn new(start: i64) -> TestClock {
        TestClock(Arc::new(AtomicI64::new(start)))
    }
    pub fn set(&self, ns: i64) {
        self.0.store(ns, Ordering::SeqCst);
    }
    pub fn advance(&self, ns: i64) {
        self.0.fetch_add(ns, Ordering::SeqCst);
    }
    pub fn options(&self) -> Options {
        let c = self.0.clone();
        Options {
            clock: Some(Arc::new(move || c.load(Ordering::SeqCst))),
            ..Options::default()
        }
    }
}

pub fn open(dir: &Path) -> AuditLog {
    AuditLog::open(dir, Options::default()).expect("open audit log")
}

/// Every event in the log, oldest first.
pub fn all(log: &AuditLog) -> Vec<Event> {
    log.export(Query {
        order: Order::OldestFirst,
        ..Query::default()
    })
    .collect::<Result<Vec<_>, _>>()
    .expect("export")
}

/// Asserts seqs are exactly 1..=n and each log's indexes are 0.. without gaps.
pub fn assert_gap_free(events: &[Event]) {
    let mut per_log = std::collections::HashMap::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "seq gap at position {i}");
        let next = per_log.entry(e.log_key()).or_insert(0u64);
        assert_eq!(
            e.log_index,
            *next,
            "log_index gap in {:?} at seq {}",
            e.log_key(),
            e.seq
        );
        *next += 1;
    }
}

pub fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}
