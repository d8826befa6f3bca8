//! The verified-credential cache (`server::cache`) never outlives a change:
//! a token whose row is cached (checked through the server's state) is
//! refused the moment its revocation has answered, and an expired one the
//! moment the clock passes its expiry, with the refusal audited.

use std::sync::atomic::Ordering;

use serde_json::json;

use crate::harness::{API, Server};

fn ingest(s: &Server, secret: &str, i: usize) -> u16 {
    s.send_as(
        secret,
        "POST",
        &format!("{API}/projects/default/audit/events"),
        json!({"action": "ci.deploy.start", "event_source": "cache-test", "external_id": format!("c{i}")}),
    )
    .status
}

/// The token row cached for `secret` at the current metadata generation.
fn cached(s: &Server, secret: &str) -> Option<meta::Token> {
    let st = s.state();
    st.cache
        .token(&meta::secrets::hash_secret(secret), st.meta.generation())
}

#[test]
fn a_cached_token_is_refused_right_after_revocation_and_expiry() {
    let s = Server::in_process(diskio::Faults::disabled(), Default::default());
    let now = s.clock.load(Ordering::SeqCst);
    let expires = audit::format_time(audit::time_from_ns(now + 60_000_000_000));
    let mut secrets = Vec::new();
    for name in ["revoked", "expiring"] {
        let r = s.send(
            "POST",
            &format!("{API}/projects/default/tokens"),
            json!({"name": name, "scopes": ["audit:write"], "expires_at": expires}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let v = r.json();
        secrets.push((
            v["token"]["id"].as_str().unwrap().to_string(),
            v["secret"].as_str().unwrap().to_string(),
        ));
    }
    let (id, revoked) = &secrets[0];
    let expiring = &secrets[1].1;
    // First uses (a metadata write each), then uses served from the cache.
    for i in 0..3 {
        assert_eq!(ingest(&s, revoked, i), 201);
        assert_eq!(ingest(&s, expiring, i), 201);
    }
    assert!(cached(&s, revoked).is_some(), "the token is not cached");
    assert!(cached(&s, expiring).is_some(), "the token is not cached");

    let r = s.send(
        "DELETE",
        &format!("{API}/projects/default/tokens/{id}"),
        json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(cached(&s, revoked).is_none());
    let r = s.send_as(
        revoked,
        "POST",
        &format!("{API}/projects/default/audit/events"),
        json!({"action": "ci.deploy.start", "event_source": "cache-test"}),
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("token revoked"), "{}", r.body);

    // The other token is still cached (the revocation bumped the
    // generation, so it is read once more), then expires by the clock alone.
    assert_eq!(ingest(&s, expiring, 10), 201);
    assert!(cached(&s, expiring).is_some());
    s.clock.store(now + 120_000_000_000, Ordering::SeqCst);
    let r = s.send_as(
        expiring,
        "POST",
        &format!("{API}/projects/default/audit/events"),
        json!({"action": "ci.deploy.start", "event_source": "cache-test"}),
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("token expired"), "{}", r.body);

    // Both refusals are in the organization's log (anonymous callers).
    let failures = s.events(None, "result=failure&action=audit.event.ingest");
    assert!(failures.len() >= 2, "{failures:?}");
}
