//! The OpenAPI 3 document of the management API, generated from the
//! handlers' annotations (utoipa) so it cannot drift from the code, and
//! served at `/api/flightdeck/v1/openapi.json`.
//!
//! Error answers are added to every operation here, in one place, since
//! every endpoint shares the one error shape.

use std::sync::OnceLock;

use axum::Json;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};

use crate::api::{audit_api, iam, session};
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
        audit_api::ingest_project,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    security(("bearer" = []), ("basic" = [])),
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
        "The audit log cannot record the action, so it was refused",
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
