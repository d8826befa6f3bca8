//! Tenancy: a token of project A never reads or writes project B, and
//! learns nothing about B's existence (404, as for a missing project).

use serde_json::json;

use crate::harness::{API, Server};

#[test]
fn tokens_are_confined_to_their_project() {
    let s = Server::binary();
    s.project("alpha");
    s.project("beta");
    let (_, a) = s.token_in("alpha", &["admin", "audit:read", "audit:write"]);
    let (_, b) = s.token_in("beta", &["audit:write", "audit:read"]);
    let r = s.send_as(
        &b,
        "POST",
        &format!("{API}/projects/beta/audit/events"),
        json!({"action": "beta.secret.thing", "event_source": "beta-ci"}),
    );
    assert_eq!(r.status, 201);

    // Everything of beta looks exactly like a project that does not exist.
    for path in [
        format!("{API}/projects/beta"),
        format!("{API}/projects/beta/audit/events"),
        format!("{API}/projects/beta/tokens"),
        format!("{API}/projects/beta/members"),
        format!("{API}/projects/beta/audit/export"),
    ] {
        let r = s.get_as(&a, &path);
        assert_eq!(r.status, 404, "{path}: {}", r.body);
        let missing = s.get_as(&a, &path.replace("beta", "gamma"));
        assert_eq!(missing.status, 404);
        assert_eq!(r.code(), missing.code());
    }
    let r = s.send_as(
        &a,
        "POST",
        &format!("{API}/projects/beta/tokens"),
        json!({"name": "x", "scopes": ["admin"]}),
    );
    assert_eq!(r.status, 404);
    let r = s.send_as(
        &a,
        "POST",
        &format!("{API}/projects/beta/audit/events"),
        json!({"action": "a.b.c", "event_source": "x"}),
    );
    assert_eq!(r.status, 404);

    // A's project list shows only alpha; A's search never returns beta's events.
    let list = s.get_as(&a, &format!("{API}/projects")).json();
    let names: Vec<&str> = list["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha"]);
    let mine = s
        .get_as(&a, &format!("{API}/projects/alpha/audit/events?limit=1000"))
        .body;
    assert!(!mine.contains("beta.secret.thing"));
    // Org-level search needs org admin.
    assert_eq!(s.get_as(&a, &format!("{API}/audit/events")).status, 403);

    // The probes are audited in beta's own log, so its auditors see them.
    let denied = s.events(Some("beta"), "result=failure&action=iam.token.create");
    assert!(!denied.is_empty(), "cross-project attempt not audited");
    assert_eq!(denied[0]["result"]["http_status"], 404);
    // ...and none of it reached alpha's log as a success.
    assert!(
        s.events(Some("alpha"), "action=beta.secret.thing")
            .is_empty()
    );
}

#[test]
fn scopes_are_enforced_with_403_inside_the_project() {
    let s = Server::binary();
    s.project("gamma");
    let (_, ro) = s.token_in("gamma", &["metrics:read"]);
    let r = s.get_as(&ro, &format!("{API}/projects/gamma/audit/events"));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("audit:read")
    );
    let r = s.send_as(
        &ro,
        "POST",
        &format!("{API}/projects/gamma/tokens"),
        json!({"name": "x", "scopes": ["admin"]}),
    );
    assert_eq!(r.status, 403);
    let r = s.send_as(
        &ro,
        "POST",
        &format!("{API}/projects"),
        json!({"name": "delta"}),
    );
    assert_eq!(r.status, 403);
    assert_eq!(
        s.get(&format!("{API}/projects/delta")).status,
        404,
        "denied create must change nothing"
    );
    // Each denial is an audited failure.
    let e = s.last_event(Some("gamma"), "audit.event.search");
    assert_eq!(e["result"]["status"], "failure");
    assert_eq!(e["result"]["http_status"], 403);
    let e = s.last_event(None, "iam.project.create");
    assert_eq!(e["result"]["http_status"], 403);
}

#[test]
fn users_see_only_projects_they_are_members_of() {
    let s = Server::binary();
    s.project("one");
    s.project("two");
    let r = s.send(
        "POST",
        &format!("{API}/users"),
        json!({"name": "ana", "password": "correct horse battery"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s.send(
        "PUT",
        &format!("{API}/projects/one/members/ana"),
        json!({"role": "viewer"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let e = s.last_event(Some("one"), "iam.membership.set");
    assert_eq!(e["changes"][0]["before"], serde_json::Value::Null);
    assert_eq!(e["changes"][0]["after"], "viewer");

    let sess = crate::sessions::login(&s, "ana", "correct horse battery");
    let list = sess.get(&s, &format!("{API}/projects"));
    let list = list.json();
    let names: Vec<&str> = list["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["one"]);
    assert_eq!(sess.get(&s, &format!("{API}/projects/two")).status, 404);
    // A viewer may not read the audit trail (admin role or audit:read only).
    assert_eq!(
        sess.get(&s, &format!("{API}/projects/one/audit/events"))
            .status,
        403
    );
    let r = s.send(
        "PUT",
        &format!("{API}/projects/one/members/ana"),
        json!({"role": "admin"}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        sess.get(&s, &format!("{API}/projects/one/audit/events"))
            .status,
        200
    );
}
