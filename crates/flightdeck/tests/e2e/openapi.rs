//! The served OpenAPI document describes every route of the management
//! API, with the shared error shape on every operation.

use crate::harness::{API, Server, call};

#[test]
fn openapi_document_covers_every_route() {
    let s = Server::binary();
    let r = call("GET", &s.url(&format!("{API}/openapi.json")), &[], None);
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("post", "/auth/login"),
        ("post", "/auth/logout"),
        ("get", "/auth/whoami"),
        ("get", "/projects"),
        ("post", "/projects"),
        ("get", "/projects/{project}"),
        ("patch", "/projects/{project}"),
        ("get", "/projects/{project}/tokens"),
        ("post", "/projects/{project}/tokens"),
        ("get", "/projects/{project}/tokens/{token_id}"),
        ("delete", "/projects/{project}/tokens/{token_id}"),
        ("get", "/projects/{project}/members"),
        ("put", "/projects/{project}/members/{user}"),
        ("delete", "/projects/{project}/members/{user}"),
        ("get", "/users"),
        ("post", "/users"),
        ("get", "/users/{user}"),
        ("patch", "/users/{user}"),
        ("delete", "/users/{user}"),
        ("get", "/projects/{project}/audit/events"),
        ("post", "/projects/{project}/audit/events"),
        ("get", "/projects/{project}/audit/events/{id}"),
        ("get", "/projects/{project}/audit/export"),
        ("get", "/audit/events"),
        ("get", "/audit/events/{id}"),
        ("get", "/audit/export"),
        ("get", "/projects/{project}/audit/log/{path}"),
        ("get", "/audit/log/{path}"),
        ("post", "/audit/erasures"),
        ("get", "/projects/{project}/audit/holds"),
        ("post", "/projects/{project}/audit/holds"),
        ("delete", "/projects/{project}/audit/holds/{hold_id}"),
        ("post", "/audit/retention/run"),
        ("get", "/projects/{project}/audit/retention"),
        ("put", "/projects/{project}/audit/retention"),
        ("get", "/projects/{project}/audit/proofs/inclusion"),
        ("get", "/projects/{project}/audit/proofs/consistency"),
        ("get", "/projects/{project}/audit/receipts/{entry}"),
        ("get", "/audit/proofs/inclusion"),
        ("get", "/audit/proofs/consistency"),
        ("get", "/audit/receipts/{entry}"),
        ("post", "/projects/{project}/audit/log/cosignature"),
        ("post", "/audit/log/cosignature"),
        ("post", "/audit/log/rotate-key"),
        ("post", "/metrics/flush"),
    ];
    let mut documented = 0;
    for (_, item) in paths {
        documented += item
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
            .count();
    }
    assert_eq!(
        documented,
        expected.len(),
        "undocumented or stale operations"
    );
    for (method, path) in expected {
        let full = format!("{API}{path}");
        let op = &paths
            .get(&full)
            .unwrap_or_else(|| panic!("{full} not documented"))[method];
        assert!(op.is_object(), "{method} {full} not documented");
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|k| k.starts_with('2')),
            "{method} {full}: no success response"
        );
        for code in ["400", "401", "403", "404", "503"] {
            assert_eq!(
                responses[code]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{method} {full} {code}"
            );
        }
        // And the route really exists: it does not answer "no such path".
        let probe = call(
            &method.to_uppercase(),
            &s.url(
                &full
                    .replace("{project}", "default")
                    .replace("{token_id}", "x")
                    .replace("{user}", "x")
                    .replace("{id}", "x")
                    .replace("{path}", "key")
                    .replace("{entry}", "0"),
            ),
            &[],
            None,
        );
        assert_ne!(
            probe.status, 404,
            "{method} {full} documented but not routed: {}",
            probe.body
        );
        assert_ne!(
            probe.status, 405,
            "{method} {full} documented but not routed"
        );
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "ErrorBody",
        "Event",
        "ProjectOut",
        "CreatedToken",
        "EventPage",
        "InclusionProofOut",
        "ConsistencyProofOut",
        "CheckpointedEvent",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
}
