//! The OpenAPI 3 document of the management API, generated from the
//! handlers' annotations (utoipa) so it cannot drift from the code, and
//! served at `/api/flightdeck/v1/openapi.json`.
//!
//! Error answers are added to every operation here, in one place, since
//! every endpoint shares the one error shape.

use std::sync::OnceLock;

use axum::Json;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};

use crate::api::{audit_api, iam, metrics_admin, privacy, proof_api, session, tlog_api};
use crate::auth::SESSION_COOKIE;
use crate::error::{ErrorBody, ErrorDetail};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Flightdeck management API",
        description = "Projects, users, memberships, API tokens, sessions and the audit trail. \
            Authenticate with `Authorization: Bearer <token>`, basic auth with the token as password, \
            or a session cookie from /auth/login (then send X-CSRF-Token on changes).",
    ),
    paths(
        session::login, session::logout, session::whoami,
        iam::list_projects, iam::create_project, iam::get_project, iam::update_project,
        iam::list_tokens, iam::create_token, iam::get_token, iam::revoke_token,
        iam::list_members, iam::set_member, iam::remove_member,
        iam::list_users, iam::create_user, iam::get_user, iam::update_user, iam::delete_user,
        audit_api::search_project, audit_api::search_org, audit_api::get_project_event,
        audit_api::get_org_event, audit_api::export_project, audit_api::export_org,
        audit_api::ingest_project, tlog_api::project_log, tlog_api::org_log,
        privacy::erase, privacy::list_holds, privacy::create_hold, privacy::release_hold,
        privacy::get_retention, privacy::set_retention, privacy::run_retention,
        proof_api::project_inclusion, proof_api::org_inclusion,
        proof_api::project_consistency, proof_api::org_consistency,
        proof_api::project_receipt, proof_api::org_receipt,
        tlog_api::project_cosign, tlog_api::org_cosign, tlog_api::rotate_key,
        metrics_admin::flush,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    security(("bearer" = []), ("basic" = []), ("session" = [])),
)]
struct ApiDoc;

/// Statuses any operation may answer with the error shape, and why.
const ERRORS: [(&str, &str); 10] = [
    (
        "400",
        "Malformed or invalid input; the message names the field",
    ),
    ("401", "Missing, invalid, expired or revoked credentials"),
    ("403", "Authenticated, but lacking the scope or role"),
    ("404", "No such resource, or not visible to the caller"),
    ("405", "Method not allowed on this path"),
    (
        "409",
        "Conflicts with the current state (name taken, already revoked)",
    ),
    ("413", "Request body larger than the configured limit"),
    ("415", "Content-Type is not application/json"),
    ("429", "Too many failed logins; wait"),
    (
        "503",
        "The audit log cannot record the action, so it was refused; or (wait=checkpoint) the action was recorded but no signed checkpoint covered it in time",
    ),
];

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        let comps = doc.components.get_or_insert_with(Default::default);
        comps.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        comps.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
        comps.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(SESSION_COOKIE))),
        );
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                for (code, why) in ERRORS {
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| {
                            RefOr::T(
                                ResponseBuilder::new()
                                    .description(why)
                                    .content(
                                        "application/json",
                                        ContentBuilder::new()
                                            .schema(Some(RefOr::Ref(
                                                utoipa::openapi::Ref::from_schema_name("ErrorBody"),
                                            )))
                                            .build(),
                                    )
                                    .build(),
                            )
                        });
                }
            }
        }
        doc
    })
}

/// `GET /api/flightdeck/v1/openapi.json`.
pub async fn serve() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use audit::{Change, Event, EventDraft, Outcome, Resource, Status};
    use serde_json::{Value, json};

    fn doc() -> Value {
        serde_json::to_value(super::document()).unwrap()
    }

    /// Checks the parts of JSON Schema the fuzzer trips on most: required
    /// properties present, no undeclared ones where they are closed, and
    /// the basic type of each value.
    fn conforms(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
        if let Some(r) = schema["$ref"].as_str() {
            let name = r.rsplit('/').next().unwrap();
            return conforms(doc, &doc["components"]["schemas"][name], v, at);
        }
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let actual = match v {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_f64() => "number",
            Value::Number(_) => "integer",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let documented = types.is_empty()
            || types.contains(&actual)
            || (actual == "integer" && types.contains(&"number"));
        if !documented {
            return Err(format!("{at}: {actual}, documented {types:?}"));
        }
        if let Value::Object(m) = v {
            for r in schema["required"].as_array().into_iter().flatten() {
                let r = r.as_str().unwrap();
                if !m.contains_key(r) {
                    return Err(format!("{at}: required '{r}' missing"));
                }
            }
            let props = schema["properties"].as_object();
            for (k, x) in m {
                match props.and_then(|p| p.get(k)) {
                    Some(s) => conforms(doc, s, x, &format!("{at}.{k}"))?,
                    None if props.is_some() => {
                        return Err(format!("{at}: '{k}' is not documented"));
                    }
                    None => {}
                }
            }
        }
        if let (Value::Array(xs), Some(items)) = (v, schema.get("items")) {
            for (i, x) in xs.iter().enumerate() {
                conforms(doc, items, x, &format!("{at}[{i}]"))?;
            }
        }
        Ok(())
    }

    fn check_event(draft: EventDraft) {
        let e = Event::from_draft(
            draft,
            "id".into(),
            1,
            0,
            audit::format_time(audit::time_from_ns(0)),
        );
        let d = doc();
        let v = serde_json::to_value(&e).unwrap();
        conforms(
            &d,
            &json!({"$ref": "#/components/schemas/Event"}),
            &v,
            "event",
        )
        .unwrap();
    }

    fn minimal() -> EventDraft {
        let mut d = crate::bootstrap::system_draft(
            "org",
            None,
            "iam.token.expire",
            audit::Resource {
                kind: "token".into(),
                id: None,
                name: None,
            },
        );
        d.resource = None;
        d
    }

    #[test]
    fn minimal_event_matches_the_documented_schema() {
        check_event(minimal());
    }

    #[test]
    fn full_event_matches_the_documented_schema() {
        check_event(EventDraft {
            project: Some("default".into()),
            source_ip: Some("127.0.0.1".into()),
            user_agent: Some("curl".into()),
            resource: Some(Resource {
                kind: "token".into(),
                id: Some("t".into()),
                name: Some("n".into()),
            }),
            request_id: Some("r".into()),
            result: Outcome {
                status: Status::Failure,
                http_status: Some(400),
                error_code: Some("invalid_field".into()),
                error_message: Some("bad".into()),
            },
            request_parameters: Some(json!({"a": 1})),
            response_elements: Some(json!({"id": "x"})),
            changes: vec![
                Change {
                    field: "status".into(),
                    before: "active".into(),
                    after: "revoked".into(),
                },
                Change {
                    field: "role".into(),
                    before: Value::Null,
                    after: json!(["any", 1, true]),
                },
            ],
            event_time: Some("2026-01-01T00:00:00Z".into()),
            external_id: Some("x".into()),
            ..minimal()
        });
    }

    #[test]
    fn scopes_document_every_known_scope() {
        let d = doc();
        let documented: Vec<&str> = d["components"]["schemas"]["Scope"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        let known: Vec<&str> = meta::Scope::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(documented, known);
    }

    #[test]
    fn ingest_documents_both_answers() {
        let d = doc();
        let ok = &d["paths"]["/api/flightdeck/v1/projects/{project}/audit/events"]["post"]["responses"]
            ["201"]["content"]["application/json"]["schema"];
        let r = ok["$ref"].as_str().unwrap();
        let s = &d["components"]["schemas"][r.rsplit('/').next().unwrap()];
        let refs: Vec<&str> = s["oneOf"]
            .as_array()
            .unwrap_or_else(|| panic!("{s}"))
            .iter()
            .map(|v| v["$ref"].as_str().unwrap())
            .collect();
        assert_eq!(
            refs,
            [
                "#/components/schemas/Event",
                "#/components/schemas/CheckpointedEvent",
                "#/components/schemas/StoredBatch",
                "#/components/schemas/CheckpointedBatch"
            ]
        );
    }

    #[test]
    fn ingest_documents_one_event_or_a_batch_of_up_to_100() {
        let d = doc();
        let body = &d["paths"]["/api/flightdeck/v1/projects/{project}/audit/events"]["post"]["requestBody"]
            ["content"]["application/json"]["schema"];
        let r = body["$ref"].as_str().unwrap();
        let s = &d["components"]["schemas"][r.rsplit('/').next().unwrap()];
        let refs: Vec<&str> = s["oneOf"]
            .as_array()
            .unwrap_or_else(|| panic!("{s}"))
            .iter()
            .map(|v| v["$ref"].as_str().unwrap())
            .collect();
        assert_eq!(
            refs,
            [
                "#/components/schemas/IngestEvent",
                "#/components/schemas/IngestBatch"
            ]
        );
        let events = &d["components"]["schemas"]["IngestBatch"]["properties"]["events"];
        assert_eq!(
            (events["minItems"].as_u64(), events["maxItems"].as_u64()),
            (Some(1), Some(100)),
            "{events}"
        );
        assert_eq!(
            d["components"]["schemas"]["IngestBatch"]["additionalProperties"],
            false
        );
    }

    #[test]
    fn search_and_export_document_only_what_they_accept() {
        let d = doc();
        let names = |path: &str| -> Vec<String> {
            d["paths"][path]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect()
        };
        let search = names("/api/flightdeck/v1/audit/events");
        let export = names("/api/flightdeck/v1/audit/export");
        assert!(search.contains(&"limit".into()) && !search.contains(&"format".into()));
        assert!(export.contains(&"format".into()) && !export.contains(&"limit".into()));
    }
}
