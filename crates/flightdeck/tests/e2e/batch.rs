//! Batch ingest: `POST …/audit/events` with `{"events": [...]}` records up
//! to 100 events in one request, all or nothing; the single-event form is
//! unchanged. Checked against what search and the signed log then hold.

use serde_json::{Value, json};

use crate::harness::{API, Resp, Server};

fn event(tag: &str, i: usize) -> Value {
    json!({
        "action": "ci.deploy.finish",
        "event_source": "batch-test",
        "external_id": format!("{tag}-{i}"),
        "resource": {"type": "service", "id": format!("svc-{i}")},
        "request_parameters": {"n": i, "password": "hunter2"},
    })
}

fn post(s: &Server, token: &str, query: &str, body: Value) -> Resp {
    s.send_as(
        token,
        "POST",
        &format!("{API}/projects/default/audit/events{query}"),
        body,
    )
}

/// External ids of the ingested events whose id starts with `tag-`.
fn recorded(s: &Server, tag: &str) -> Vec<String> {
    s.events(Some("default"), "action=ci.deploy.finish")
        .iter()
        .filter_map(|e| e["external_id"].as_str())
        .filter(|x| x.starts_with(&format!("{tag}-")))
        .map(String::from)
        .collect()
}

#[test]
fn a_batch_of_100_is_recorded_in_order_and_answered_as_stored() {
    let s = Server::in_process(diskio::Faults::disabled(), Default::default());
    let (_, w) = s.token_in("default", &["audit:write", "audit:read"]);
    let events: Vec<Value> = (0..100).map(|i| event("b", i)).collect();
    let r = post(&s, &w, "", json!({ "events": events }));
    assert_eq!(r.status, 201, "{}", r.body);
    let got = r.json()["events"].as_array().unwrap().clone();
    assert_eq!(got.len(), 100);
    let mut last_index = None;
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e["external_id"], format!("b-{i}"));
        assert_eq!(e["request_parameters"]["password"], "[REDACTED]");
        let idx = e["log_index"].as_u64().unwrap();
        assert!(
            last_index.is_none_or(|l| idx > l),
            "log_index not increasing at {i}"
        );
        last_index = Some(idx);
        // Each answered event is the stored one, byte for byte through JSON.
        let stored = s.get_as(
            &w,
            &format!(
                "{API}/projects/default/audit/events/{}",
                e["id"].as_str().unwrap()
            ),
        );
        assert_eq!(stored.status, 200, "{}", stored.body);
        assert_eq!(&stored.json(), e);
    }
    // The answer is canonical JSON: `{"events":[` then the events' own bytes.
    assert!(
        r.body
            .starts_with(r#"{"events":[{"action":"ci.deploy.finish""#),
        "{}",
        &r.body[..80]
    );
    assert_eq!(recorded(&s, "b").len(), 100);
}

#[test]
fn one_invalid_event_refuses_the_whole_batch_and_is_audited() {
    let s = Server::in_process(diskio::Faults::disabled(), Default::default());
    let (_, w) = s.token_in("default", &["audit:write", "audit:read"]);
    let mut events: Vec<Value> = (0..100).map(|i| event("bad", i)).collect();
    events[57]["action"] = json!("Not An Action");
    let r = post(&s, &w, "", json!({ "events": events }));
    assert_eq!(r.status, 400, "{}", r.body);
    let err = &r.json()["error"];
    assert_eq!(err["field"], "events[57].action", "{}", r.body);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .starts_with("events[57].action: "),
        "{}",
        r.body
    );
    assert!(
        recorded(&s, "bad").is_empty(),
        "part of a refused batch was recorded"
    );
    // The refusal itself is an audit event, like every 400.
    let fail = s.last_event(Some("default"), "audit.event.ingest");
    assert_eq!(fail["result"]["status"], "failure");
    assert_eq!(fail["result"]["http_status"], 400);
    assert!(
        fail["result"]["error_message"]
            .as_str()
            .unwrap()
            .contains("events[57].action")
    );

    // A type error inside the batch names its path too, and records nothing.
    let mut events: Vec<Value> = (0..3).map(|i| event("typed", i)).collect();
    events[1]["result"] = json!({"status": 7});
    let r = post(&s, &w, "", json!({ "events": events }));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.json()["error"]["field"],
        "events[1].result.status",
        "{}",
        r.body
    );
    assert!(recorded(&s, "typed").is_empty());
}

#[test]
fn more_than_100_or_no_events_are_refused() {
    let s = Server::in_process(diskio::Faults::disabled(), Default::default());
    let (_, w) = s.token_in("default", &["audit:write", "audit:read"]);
    let events: Vec<Value> = (0..101).map(|i| event("many", i)).collect();
    let r = post(&s, &w, "", json!({ "events": events }));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["field"], "events", "{}", r.body);
    assert!(r.body.contains("at most 100"), "{}", r.body);
    assert!(recorded(&s, "many").is_empty());
    let r = post(&s, &w, "", json!({ "events": [] }));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["field"], "events", "{}", r.body);
    let fail = s.last_event(Some("default"), "audit.event.ingest");
    assert_eq!(fail["result"]["http_status"], 400);
}

#[test]
fn the_single_event_form_is_unchanged() {
    let s = Server::in_process(diskio::Faults::disabled(), Default::default());
    let (_, w) = s.token_in("default", &["audit:write", "audit:read"]);
    let r = post(&s, &w, "", event("one", 0));
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    assert!(v.get("events").is_none(), "{}", r.body);
    assert_eq!(v["external_id"], "one-0");
    assert_eq!(v["action"], "ci.deploy.finish");
    // An invalid single event still names the bare field.
    let mut bad = event("one", 1);
    bad["action"] = json!("nope");
    let r = post(&s, &w, "", bad);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["field"], "action", "{}", r.body);
    assert_eq!(recorded(&s, "one"), ["one-0"]);
}

#[test]
fn a_batch_can_wait_for_the_checkpoint_covering_its_last_event() {
    let s = Server::in_process(diskio::Faults::disabled(), Default::default());
    let (_, w) = s.token_in("default", &["audit:write", "audit:read"]);
    let events: Vec<Value> = (0..10).map(|i| event("cp", i)).collect();
    let r = post(&s, &w, "?wait=checkpoint", json!({ "events": events }));
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    let evs = v["events"].as_array().unwrap();
    let receipts = v["receipts"].as_array().unwrap();
    assert_eq!((evs.len(), receipts.len()), (10, 10));
    let size = v["tree_size"].as_u64().unwrap();
    let note = v["checkpoint"].as_str().unwrap();
    assert_eq!(
        note.lines().nth(1),
        Some(size.to_string().as_str()),
        "{note}"
    );
    for (e, rec) in evs.iter().zip(receipts) {
        assert!(e["log_index"].as_u64().unwrap() < size);
        let rec = audit::Receipt::parse(rec.as_str().unwrap().as_bytes()).unwrap();
        assert_eq!(rec.index, e["log_index"].as_u64().unwrap());
    }
}
