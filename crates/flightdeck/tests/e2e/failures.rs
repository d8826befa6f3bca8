//! Failure paths: every client mistake is a precise 4xx that changes
//! nothing and leaves an audit event; an audit log that cannot write makes
//! the server refuse changes with 503 (fail closed); token expiry is
//! recorded by `system`.

use std::sync::atomic::Ordering;

use serde_json::json;

use crate::harness::{API, Server, call};

/// (method, path, content type, body, expected status, expected error code)
type Case = (
    &'static str,
    String,
    &'static str,
    Vec<u8>,
    u16,
    &'static str,
);

#[test]
fn bad_input_is_a_precise_4xx_that_changes_nothing_and_is_audited() {
    let s = Server::in_process(
        diskio::Faults::disabled(),
        server::ServerOptions {
            max_body_bytes: 4096,
            ..Default::default()
        },
    );
    let projects = format!("{API}/projects");
    let tokens = format!("{API}/projects/default/tokens");
    let cases: Vec<Case> = vec![
        (
            "POST",
            projects.clone(),
            "application/json",
            b"{\"name\": ".to_vec(),
            400,
            "malformed_json",
        ),
        (
            "POST",
            projects.clone(),
            "application/json",
            b"[]".to_vec(),
            400,
            "invalid_field",
        ),
        (
            "POST",
            projects.clone(),
            "application/json",
            br#"{"name": "ok", "extra": 1}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            "POST",
            projects.clone(),
            "application/json",
            br#"{"name": 5}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            "POST",
            projects.clone(),
            "application/json",
            br#"{}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            "POST",
            projects.clone(),
            "application/json",
            br#"{"name": "Not A Slug"}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            "POST",
            projects.clone(),
            "text/plain",
            br#"{"name": "ok"}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            projects.clone(),
            "application/json",
            format!("{{\"name\": \"{}\"}}", "a".repeat(10_000)).into_bytes(),
            413,
            "payload_too_large",
        ),
        (
            "POST",
            projects.clone(),
            "application/json",
            br#"{"name": "default"}"#.to_vec(),
            409,
            "conflict",
        ),
        (
            "POST",
            tokens.clone(),
            "application/json",
            br#"{"name": "x", "scopes": ["root"]}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            "POST",
            tokens.clone(),
            "application/json",
            br#"{"name": "x", "scopes": []}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            "POST",
            tokens.clone(),
            "application/json",
            br#"{"name": "x", "scopes": ["admin"], "expires_at": "tomorrow"}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            "POST",
            tokens.clone(),
            "application/json",
            br#"{"name": "x", "scopes": ["admin"], "expires_at": "2001-01-01T00:00:00Z"}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            "DELETE",
            format!("{tokens}/no-such-token"),
            "application/json",
            b"{}".to_vec(),
            404,
            "not_found",
        ),
        (
            "PATCH",
            format!("{API}/users/nobody"),
            "application/json",
            br#"{"org_admin": true}"#.to_vec(),
            404,
            "not_found",
        ),
        (
            "POST",
            format!("{API}/users"),
            "application/json",
            br#"{"name": "bob", "password": "short"}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            "PUT",
            format!("{API}/projects/default/members/admin"),
            "application/json",
            br#"{"role": "owner"}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            "POST",
            format!("{API}/projects/default/audit/events"),
            "application/json",
            br#"{"action": "deploy", "event_source": "ci"}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            "POST",
            format!("{API}/no/such/route"),
            "application/json",
            b"{}".to_vec(),
            404,
            "not_found",
        ),
        (
            "PUT",
            projects.clone(),
            "application/json",
            b"{}".to_vec(),
            405,
            "method_not_allowed",
        ),
    ];
    let before_projects = s.get(&projects).body;
    let before_tokens = s.get(&tokens).body;
    let before_users = s.get(&format!("{API}/users")).body;
    for (method, path, ct, body, status, code) in cases {
        let seq_before = s.state().audit.last_seq();
        let r = call(
            method,
            &s.url(&path),
            &[("authorization", &format!("Bearer {}", s.token))],
            Some((ct, body)),
        );
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
        assert_eq!(r.code(), code, "{method} {path}: {}", r.body);
        assert!(!r.json()["error"]["message"].as_str().unwrap().is_empty());
        // Exactly one new audit event, a failure with this status.
        assert_eq!(
            s.state().audit.last_seq(),
            seq_before + 1,
            "{method} {path}: no audit event"
        );
        let q = audit::Query {
            limit: 1,
            ..Default::default()
        };
        let last = s
            .state()
            .audit
            .search(&audit::Query { log: None, ..q })
            .unwrap()
            .events
            .remove(0);
        assert_eq!(
            last.result.status,
            audit::Status::Failure,
            "{method} {path}"
        );
        assert_eq!(last.result.http_status, Some(status), "{method} {path}");
        assert_eq!(
            last.result.error_code.as_deref(),
            Some(code),
            "{method} {path}"
        );
    }
    // Nothing changed.
    assert_eq!(s.get(&projects).body, before_projects);
    assert_eq!(s.get(&tokens).body, before_tokens);
    assert_eq!(s.get(&format!("{API}/users")).body, before_users);
    // Query parameters are checked too (reads are not audited unless denied).
    for q in [
        "limit=0",
        "limit=abc",
        "order=sideways",
        "from=yesterday",
        "bogus=1",
        "cursor=zzz",
    ] {
        let r = s.get(&format!("{API}/projects/default/audit/events?{q}"));
        assert_eq!(r.status, 400, "{q}: {}", r.body);
    }
}

#[test]
fn unauthenticated_requests_are_401_and_audited() {
    let s = Server::binary();
    for auth in [
        None,
        Some("Bearer fd_not_a_real_token"),
        Some("Basic !!!"),
        Some("Digest abc"),
    ] {
        let mut h = vec![];
        if let Some(a) = auth {
            h.push(("authorization", a));
        }
        let r = call("GET", &s.url(&format!("{API}/projects")), &h, None);
        assert_eq!(r.status, 401, "{auth:?}: {}", r.body);
        assert_eq!(r.code(), "unauthenticated");
    }
    // Basic auth with the token as password is accepted (Prometheus, Grafana).
    let basic = format!("Basic {}", base64_encode(&format!("anyone:{}", s.token)));
    assert_eq!(
        call(
            "GET",
            &s.url(&format!("{API}/projects")),
            &[("authorization", &basic)],
            None
        )
        .status,
        200
    );
    let fails = s.events(None, "principal_type=anonymous&action=iam.project.list");
    assert_eq!(fails.len(), 4);
    assert!(
        fails
            .iter()
            .all(|e| e["result"]["http_status"] == 401 && e["source_ip"] == "127.0.0.1")
    );
}

fn base64_encode(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn audit_failure_refuses_changes_with_503() {
    let faults = diskio::Faults::enabled();
    let s = Server::in_process(faults.clone(), Default::default());
    // Warm up: the admin token's first use is recorded while the log works.
    assert_eq!(s.get(&format!("{API}/projects")).status, 200);
    let before = s.get(&format!("{API}/projects")).body;
    faults.fail_next_fsync();
    let r = s.send(
        "POST",
        &format!("{API}/projects"),
        json!({"name": "doomed"}),
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.code(), "audit_unavailable");
    // Nothing changed, and the log stays closed: later changes are refused too.
    faults.clear();
    assert_eq!(s.get(&format!("{API}/projects")).body, before);
    let r = s.send("POST", &format!("{API}/projects"), json!({"name": "later"}));
    assert_eq!(r.status, 503);
    // Even a denied read answers 503 now: its denial could not be recorded.
    assert_eq!(s.get(&format!("{API}/projects/later")).status, 503);
    assert!(!s.get(&format!("{API}/projects")).body.contains("later"));
    assert_eq!(call("GET", &s.url("/-/ready"), &[], None).status, 503);
    assert_eq!(call("GET", &s.url("/-/healthy"), &[], None).status, 200);
}

#[test]
fn token_expiry_is_enforced_and_recorded_by_system() {
    let s = Server::in_process(diskio::Faults::disabled(), Default::default());
    let now = s.clock.load(Ordering::SeqCst);
    let expires = audit::format_time(audit::time_from_ns(now + 60_000_000_000));
    let r = s.send(
        "POST",
        &format!("{API}/projects/default/tokens"),
        json!({"name": "short", "scopes": ["audit:read"], "expires_at": expires}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let secret = r.json()["secret"].as_str().unwrap().to_string();
    assert_eq!(
        s.get_as(&secret, &format!("{API}/projects/default/audit/events"))
            .status,
        200
    );
    // Two minutes later (injected clock) the token is expired.
    s.clock.store(now + 120_000_000_000, Ordering::SeqCst);
    let r = s.get_as(&secret, &format!("{API}/projects/default/audit/events"));
    assert_eq!(r.status, 401);
    assert!(r.body.contains("expired"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let n = rt
        .block_on(server::auth::sweep_expired_tokens(s.state()))
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        rt.block_on(server::auth::sweep_expired_tokens(s.state()))
            .unwrap(),
        0,
        "expiry recorded twice"
    );
    let e = s.last_event(Some("default"), "iam.token.expire");
    assert_eq!(e["principal"]["type"], "system");
    assert_eq!(e["resource"]["name"], "short");
    let listed = s.get(&format!("{API}/projects/default/tokens")).json();
    assert!(
        listed["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["status"] == "expired")
    );
}
