//! Audit retention over HTTP: a project's window, a legal hold that
//! suspends it, the sweep recording `audit.retention.apply` before bundles
//! go, and the trimmed log still verifying with `flightdeck audit verify`
//! (over HTTP and, with the store check, from the data directory).

use std::sync::atomic::Ordering;

use serde_json::json;

use crate::harness::{API, Server, bin};

const DAY_NS: i64 = 86_400 * 1_000_000_000;

fn ingest(s: &Server, token: &str, project: &str, n: usize) {
    for i in 0..n {
        let r = s.send_as(
            token,
            "POST",
            &format!("{API}/projects/{project}/audit/events"),
            json!({"action": "ci.deploy.finish", "event_source": "ci", "external_id": format!("run-{i}")}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
}

fn verify(args: &[&str]) -> String {
    let out = std::process::Command::new(bin())
        .args(["audit", "verify"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn retention_trims_old_bundles_except_under_hold_and_the_log_verifies() {
    let s = Server::in_process_with(
        audit::Options {
            max_segment_bytes: 64 << 10,
            ..Default::default()
        },
        Default::default(),
    );
    for p in ["old", "kept"] {
        s.project(p);
        let (_, token) = s.token_in(p, &["audit:write", "audit:read"]);
        ingest(&s, &token, p, 300);
    }
    // A project's own window; bad values change nothing.
    let r = s.send(
        "PUT",
        &format!("{API}/projects/old/audit/retention"),
        json!({"days": 0}),
    );
    assert_eq!(
        (r.status, r.json()["error"]["field"].as_str()),
        (400, Some("days"))
    );
    let r = s.send(
        "PUT",
        &format!("{API}/projects/old/audit/retention"),
        json!({"days": 30}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.json()["days"].as_u64(), r.json()["default"].as_bool()),
        (Some(30), Some(false))
    );
    let e = s.last_event(Some("old"), "audit.retention.set");
    assert_eq!(e["changes"][0]["after"], 30);
    for p in ["old", "kept"] {
        let r = s.send(
            "PUT",
            &format!("{API}/projects/{p}/audit/retention"),
            json!({"days": 30}),
        );
        assert_eq!(r.status, 200);
    }
    let r = s.send(
        "POST",
        &format!("{API}/projects/kept/audit/holds"),
        json!({"reason": "litigation"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);

    // Nothing is 30 days old yet.
    let r = s.send("POST", &format!("{API}/audit/retention/run"), json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.json()["logs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["removed"] == 0)
    );

    // 40 days later.
    s.clock.fetch_add(40 * DAY_NS, Ordering::SeqCst);
    // The sweep plans from what the index has flushed and the checkpoint
    // covers (both within about a second): run it until it has acted.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (logs, removed) = {
        let mut removed = 0;
        loop {
            let r = s.send("POST", &format!("{API}/audit/retention/run"), json!({}));
            assert_eq!(r.status, 200, "{}", r.body);
            let logs = r.json()["logs"].as_array().unwrap().clone();
            let old = logs.iter().find(|l| l["log"] == "old").unwrap().clone();
            removed += old["removed"].as_u64().unwrap();
            if old["retained_from"] == 256 || std::time::Instant::now() > deadline {
                break (logs, removed);
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    let of = |name: &str| logs.iter().find(|l| l["log"] == name).unwrap().clone();
    assert_eq!(
        (removed, of("old")["retained_from"].as_u64()),
        (256, Some(256))
    );
    assert_eq!(
        (of("kept")["held"].as_bool(), of("kept")["removed"].as_u64()),
        (Some(true), Some(0))
    );
    assert_eq!(
        of("org")["removed"],
        0,
        "the org log keeps its 400-day default"
    );

    // The removal is recorded by `system` in the project's own log.
    let e = s.last_event(Some("old"), "audit.retention.apply");
    assert_eq!(e["principal"]["type"], "system");
    assert_eq!(e["request_parameters"]["entries_to"], 256);
    // Old events are gone from search; kept ones stay.
    let oldest = s
        .get(&format!(
            "{API}/projects/old/audit/events?order=oldest&limit=1"
        ))
        .json();
    assert_eq!(oldest["events"][0]["log_index"], 256);
    let kept = s
        .get(&format!(
            "{API}/projects/kept/audit/events?order=oldest&limit=1"
        ))
        .json();
    assert_eq!(kept["events"][0]["log_index"], 0);
    assert_eq!(
        s.get(&format!("{API}/projects/old/audit/log/retained"))
            .body,
        "256\n"
    );
    assert_eq!(
        s.get(&format!("{API}/projects/old/audit/log/tile/entries/000"))
            .status,
        404
    );
    assert_eq!(
        s.get(&format!("{API}/projects/kept/audit/log/retained"))
            .status,
        404
    );

    // A removed entry has no receipt (404 naming retention), but its
    // inclusion proof still works: its hash stays in the tree.
    let r = s.get(&format!("{API}/projects/old/audit/receipts/3"));
    assert_eq!(
        (r.status, r.code()),
        (404, "retained".to_string()),
        "{}",
        r.body
    );
    let r = s.get(&format!(
        "{API}/projects/old/audit/proofs/inclusion?index=3"
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        s.get(&format!("{API}/projects/old/audit/receipts/300"))
            .status,
        200
    );

    // Still verifies: over HTTP, and from the data directory with the store check.
    let key = s.get(&format!("{API}/audit/log/key")).body;
    let out = verify(&[
        "--url",
        &s.url(""),
        "--token",
        &s.token,
        "--project",
        "old",
        "--key",
        key.trim(),
    ]);
    assert!(
        out.contains("(entries below 256 removed by retention)"),
        "{out}"
    );
    let data = s.data_dir.to_string_lossy().into_owned();
    let out = verify(&["--data-dir", &data, "--all", "--key", key.trim()]);
    assert!(out.contains("OK store: "), "{out}");
    let r = s.get(&format!("{API}/projects/old/audit/retention")).json();
    assert_eq!(r["retained_from"], 256);
}
