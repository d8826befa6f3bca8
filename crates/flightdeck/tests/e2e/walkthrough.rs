//! The README's walk-through, run against the real binary: first start,
//! create a project and a token, see the audit events of those actions.

use serde_json::json;

use crate::harness::{API, Server, call};

#[test]
fn first_start_prints_credentials_once_and_they_work() {
    let mut s = Server::binary();
    assert!(
        s.token.starts_with("fd_"),
        "token line missing: {:?}",
        s.token
    );
    assert!(s.password.len() >= 16, "password line missing");
    assert_eq!(call("GET", &s.url("/-/healthy"), &[], None).status, 200);
    assert_eq!(call("GET", &s.url("/-/ready"), &[], None).status, 200);
    let me = s.get(&format!("{API}/auth/whoami")).json();
    assert_eq!(me["principal_type"], "token");
    assert_eq!(me["project"], "default");
    assert_eq!(me["org_admin"], true);
    assert_eq!(me["scopes"].as_array().unwrap().len(), 8);
    // A second start on the same data prints no credentials.
    s.kill9();
    let lines = s.restart();
    assert!(
        lines.iter().all(|l| !l.starts_with("admin")),
        "credentials printed again: {lines:?}"
    );
    assert_eq!(s.get(&format!("{API}/auth/whoami")).status, 200);
    // The bootstrap is in the audit trail, done by `system`.
    let org = s.events(None, "principal_type=system");
    let actions: Vec<&str> = org.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"iam.organization.create"), "{actions:?}");
    assert!(actions.contains(&"iam.user.create"), "{actions:?}");
}

#[test]
fn create_project_and_token_then_see_their_audit_events() {
    let s = Server::binary();
    let r = s.send("POST", &format!("{API}/projects"), json!({"name": "shop"}));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["name"], "shop");
    let r = s.send(
        "POST",
        &format!("{API}/projects/shop/tokens"),
        json!({"name": "deployer", "scopes": ["metrics:write", "audit:read"], "expires_at": "2099-01-01T00:00:00Z"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    let secret = created["secret"].as_str().unwrap().to_string();
    let token_id = created["token"]["id"].as_str().unwrap().to_string();
    assert!(secret.starts_with("fd_"));
    assert_eq!(
        created["token"]["expires_at"],
        "2099-01-01T00:00:00.000000000Z"
    );

    // Listing never shows secrets.
    let list = s.get(&format!("{API}/projects/shop/tokens"));
    assert_eq!(list.status, 200);
    assert!(!list.body.contains(&secret));
    assert_eq!(list.json()["tokens"][0]["id"], token_id.as_str());

    // The project creation is an org-level event, the token's a project event.
    let e = s.last_event(None, "iam.project.create");
    assert_eq!(e["resource"]["name"], "shop");
    assert_eq!(e["result"]["status"], "success");
    assert_eq!(e["principal"]["type"], "token");
    assert_eq!(e["source_ip"], "127.0.0.1");
    assert!(e["user_agent"].as_str().unwrap().starts_with("ureq"));
    let e = s.last_event(Some("shop"), "iam.token.create");
    assert_eq!(e["resource"]["id"], token_id.as_str());
    assert_eq!(e["result"]["http_status"], 201);
    assert_eq!(e["schema_version"], 2);
    assert!(
        e["personal"]["source_ip"]
            .as_str()
            .is_some_and(|c| c.len() == 44)
    );
    assert!(e["time"].as_str().unwrap().ends_with('Z'));

    // The new token reads its project's audit log; its first use is recorded.
    let r = s.get_as(&secret, &format!("{API}/projects/shop/audit/events"));
    assert_eq!(r.status, 200, "{}", r.body);
    let e = s.last_event(Some("shop"), "iam.token.first_use");
    assert_eq!(e["principal"]["token_id"], token_id.as_str());

    // Revocation: recorded, and the token stops working.
    let r = s.send(
        "DELETE",
        &format!("{API}/projects/shop/tokens/{token_id}"),
        json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "revoked");
    assert_eq!(
        s.get_as(&secret, &format!("{API}/projects/shop/audit/events"))
            .status,
        401
    );
    let e = s.last_event(Some("shop"), "iam.token.revoke");
    assert_eq!(e["changes"][0]["after"], "revoked");
    let again = s.send(
        "DELETE",
        &format!("{API}/projects/shop/tokens/{token_id}"),
        json!({}),
    );
    assert_eq!(again.status, 409);
}

#[test]
fn search_filters_order_pagination_and_export() {
    let s = Server::binary();
    s.project("p1");
    let (_, w) = s.token_in("p1", &["audit:write", "audit:read"]);
    for i in 0..25 {
        let r = s.send_as(
            &w,
            "POST",
            &format!("{API}/projects/p1/audit/events"),
            json!({"action": if i % 2 == 0 {"ci.deploy.start"} else {"ci.deploy.finish"},
                   "event_source": "ci.pipeline", "external_id": format!("run-{i}"),
                   "resource": {"type": "service", "id": "api"},
                   "request_parameters": {"version": format!("4.{i}"), "password": "hunter2"}}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let e = r.json();
        assert_eq!(e["principal"]["type"], "token");
        assert_eq!(e["request_parameters"]["password"], "[REDACTED]");
    }
    // Exact action, newest first, pages of 5 with no overlap or gap.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => {
                format!("{API}/projects/p1/audit/events?action=ci.deploy.start&limit=5&cursor={c}")
            }
            None => format!("{API}/projects/p1/audit/events?action=ci.deploy.start&limit=5"),
        };
        let page = s.get(&q).json();
        for e in page["events"].as_array().unwrap() {
            seen.push(e["seq"].as_u64().unwrap());
        }
        // An append between pages must not disturb the pages still to come.
        s.send_as(
            &w,
            "POST",
            &format!("{API}/projects/p1/audit/events"),
            json!({"action": "ci.deploy.noise", "event_source": "ci"}),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 13);
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "{seen:?}");
    // Prefix, oldest first, text search.
    let asc = s.events(Some("p1"), "action_prefix=ci.deploy.f&order=oldest");
    assert_eq!(asc.len(), 12);
    assert!(asc[0]["seq"].as_u64() < asc[1]["seq"].as_u64());
    let hit = s.events(Some("p1"), "q=RUN-7");
    assert_eq!(hit.len(), 1);
    assert_eq!(hit[0]["external_id"], "run-7");
    // Time range: nothing before the epoch of the log, everything up to now.
    assert!(s.events(Some("p1"), "to=2000-01-01T00:00:00Z").is_empty());
    // One event by id; other projects' ids are 404 here.
    let id = hit[0]["id"].as_str().unwrap();
    assert_eq!(
        s.get(&format!("{API}/projects/p1/audit/events/{id}"))
            .json()["id"],
        id
    );
    assert_eq!(
        s.get(&format!("{API}/projects/default/audit/events/{id}"))
            .status,
        404
    );
    // Export streams NDJSON and CSV.
    let nd = s.get(&format!(
        "{API}/projects/p1/audit/export?action_prefix=ci.deploy."
    ));
    assert_eq!(nd.status, 200);
    assert_eq!(nd.header("content-type"), Some("application/x-ndjson"));
    assert!(nd.body.lines().count() >= 25);
    for line in nd.body.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["action"].as_str().unwrap().starts_with("ci.deploy."));
    }
    let csv = s.get(&format!(
        "{API}/projects/p1/audit/export?format=csv&action=ci.deploy.start"
    ));
    assert_eq!(csv.status, 200);
    let mut lines = csv.body.lines();
    assert!(lines.next().unwrap().starts_with("seq,id,time,"));
    assert_eq!(lines.count(), 13);
    // The export itself is recorded.
    s.last_event(Some("p1"), "audit.event.export");
}
