//! The management API under `/api/flightdeck/v1/`: routes, and the request
//! extractors that turn malformed input into precise 4xx answers.
//!
//! JSON shapes: resources are objects with snake_case fields and RFC 3339
//! times; lists are `{"<things>": [...], "next_cursor": "..."}` ordered by a
//! stable key, with `?limit=` (1–1000, default 100) and `?cursor=`.

pub mod audit_api;
pub mod iam;
pub mod metrics_admin;
pub mod privacy;
pub mod proof_api;
pub mod session;
pub mod tlog_api;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::routing::{get, post};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::{ApiError, Kind};

/// Every route of the management API.
pub fn routes(_state: AppState) -> Router<AppState> {
    // Paths relative to API_PREFIX: the router is nested there.
    let p = "";
    Router::new()
        .route(&format!("{p}/openapi.json"), get(crate::openapi::serve))
        .route(&format!("{p}/auth/login"), post(session::login))
        .route(&format!("{p}/auth/logout"), post(session::logout))
        .route(&format!("{p}/auth/whoami"), get(session::whoami))
        .route(
            &format!("{p}/projects"),
            get(iam::list_projects).post(iam::create_project),
        )
        .route(
            &format!("{p}/projects/{{project}}"),
            get(iam::get_project).patch(iam::update_project),
        )
        .route(
            &format!("{p}/projects/{{project}}/tokens"),
            get(iam::list_tokens).post(iam::create_token),
        )
        .route(
            &format!("{p}/projects/{{project}}/tokens/{{token_id}}"),
            get(iam::get_token).delete(iam::revoke_token),
        )
        .route(
            &format!("{p}/projects/{{project}}/members"),
            get(iam::list_members),
        )
        .route(
            &format!("{p}/projects/{{project}}/members/{{user}}"),
            axum::routing::put(iam::set_member).delete(iam::remove_member),
        )
        .route(
            &format!("{p}/users"),
            get(iam::list_users).post(iam::create_user),
        )
        .route(
            &format!("{p}/users/{{user}}"),
            get(iam::get_user)
                .patch(iam::update_user)
                .delete(iam::delete_user),
        )
        .route(
            &format!("{p}/projects/{{project}}/audit/events"),
            get(audit_api::search_project).post(audit_api::ingest_project),
        )
        .route(
            &format!("{p}/projects/{{project}}/audit/events/{{id}}"),
            get(audit_api::get_project_event),
        )
        .route(
            &format!("{p}/projects/{{project}}/audit/export"),
            get(audit_api::export_project),
        )
        .route(&format!("{p}/audit/events"), get(audit_api::search_org))
        .route(
            &format!("{p}/audit/events/{{id}}"),
            get(audit_api::get_org_event),
        )
        .route(&format!("{p}/audit/export"), get(audit_api::export_org))
        .route(
            &format!("{p}/projects/{{project}}/audit/log/{{*path}}"),
            get(tlog_api::project_log),
        )
        .route(&format!("{p}/audit/log/{{*path}}"), get(tlog_api::org_log))
        .route(&format!("{p}/audit/erasures"), post(privacy::erase))
        .route(&format!("{p}/metrics/flush"), post(metrics_admin::flush))
        .route(
            &format!("{p}/audit/retention/run"),
            post(privacy::run_retention),
        )
        .route(
            &format!("{p}/projects/{{project}}/audit/retention"),
            get(privacy::get_retention).put(privacy::set_retention),
        )
        .route(
            &format!("{p}/projects/{{project}}/audit/holds"),
            get(privacy::list_holds).post(privacy::create_hold),
        )
        .route(
            &format!("{p}/projects/{{project}}/audit/holds/{{hold_id}}"),
            axum::routing::delete(privacy::release_hold),
        )
        .route(
            &format!("{p}/projects/{{project}}/audit/proofs/inclusion"),
            get(proof_api::project_inclusion),
        )
        .route(
            &format!("{p}/projects/{{project}}/audit/proofs/consistency"),
            get(proof_api::project_consistency),
        )
        .route(
            &format!("{p}/projects/{{project}}/audit/receipts/{{entry}}"),
            get(proof_api::project_receipt),
        )
        .route(
            &format!("{p}/audit/proofs/inclusion"),
            get(proof_api::org_inclusion),
        )
        .route(
            &format!("{p}/audit/proofs/consistency"),
            get(proof_api::org_consistency),
        )
        .route(
            &format!("{p}/audit/receipts/{{entry}}"),
            get(proof_api::org_receipt),
        )
        .route(
            &format!("{p}/projects/{{project}}/audit/log/cosignature"),
            post(tlog_api::project_cosign),
        )
        .route(
            &format!("{p}/audit/log/cosignature"),
            post(tlog_api::org_cosign),
        )
        .route(
            &format!("{p}/audit/log/rotate-key"),
            post(tlog_api::rotate_key),
        )
        .fallback(api_not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn api_not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("path {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        Kind::MethodNotAllowed,
        "method_not_allowed",
        format!("method {method} is not allowed on this path"),
    )
}

/// A JSON body: `Content-Type: application/json`, within the body limit,
/// no unknown fields; errors name the offending field.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !(mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")) {
            return Err(ApiError::new(
                Kind::UnsupportedMediaType,
                "unsupported_media_type",
                format!("expected Content-Type: application/json, got '{ct}'"),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    Kind::PayloadTooLarge,
                    "payload_too_large",
                    "request body is larger than the configured limit (max_body_bytes)",
                )
            } else {
                ApiError::new(
                    Kind::BadRequest,
                    "bad_body",
                    format!("could not read the request body: {e}"),
                )
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses a JSON object, naming the path of the first offending field.
///
/// Every request body of this API is an object; serde would also build a
/// struct from an array of its fields in order, which the API does not
/// document, so arrays are refused up front.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.trim_ascii_start().starts_with(b"[") {
        return Err(ApiError::new(
            Kind::BadRequest,
            "invalid_field",
            "invalid JSON body: expected an object, got an array",
        ));
    }
    // The common case, a valid body, parses without tracking the path;
    // only a failure is parsed again to name the offending field.
    if let Ok(v) = serde_json::from_slice(bytes) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let mut err = ApiError::new(
            Kind::BadRequest,
            if inner.is_syntax() || inner.is_eof() {
                "malformed_json"
            } else {
                "invalid_field"
            },
            if path == "." {
                format!("invalid JSON body: {inner}")
            } else {
                format!("{path}: {inner}")
            },
        );
        if path != "." {
            err.field = Some(path);
        }
        err
    })
}

/// Query parameters; unknown parameters and bad values are 400s naming the parameter.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Params)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let mut err = ApiError::new(
                    Kind::BadRequest,
                    "invalid_parameter",
                    if path == "." {
                        format!("invalid query string: {inner}")
                    } else {
                        format!("query parameter {path}: {inner}")
                    },
                );
                if path != "." {
                    err.field = Some(path);
                }
                err
            })
    }
}

/// Path parameters. axum's own `Path` answers a malformed segment (say,
/// percent-encoded bytes that are not UTF-8) in plain text; this answers it
/// in the error shape, naming the problem.
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(PathParams(v)),
            Err(e) if e.status().is_client_error() => Err(ApiError::new(
                Kind::BadRequest,
                "invalid_path",
                e.body_text(),
            )),
            Err(e) => Err(ApiError::internal(format!(
                "bug: path parameters do not fit the route: {}",
                e.body_text()
            ))),
        }
    }
}

/// Parses an RFC 3339 time (a JSON Schema `date-time`, years 0000–9999).
pub fn parse_time(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// An RFC 3339 time as unix nanoseconds, clamped to what an `i64` holds
/// (1677-09-21 to 2262-04-11): no event or expiry lies beyond those, so a
/// bound outside them means "unbounded".
pub fn parse_time_ns_clamped(s: &str) -> Option<i64> {
    let ns = parse_time(s)?.unix_timestamp_nanos();
    Some(ns.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
}

/// Formats unix nanoseconds as RFC 3339 (UTC, nanoseconds).
pub fn rfc3339(ns: i64) -> String {
    audit::format_time(audit::time_from_ns(ns))
}

/// The `{project}` path segment, documented once for every route that has it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct ProjectPath {
    /// Project slug: 1–63 lower-case letters, digits and inner dashes.
    #[param(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    project: String,
}

/// Common list parameters.
#[derive(serde::Deserialize, utoipa::IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Opaque cursor from a previous page's `next_cursor` (empty: the first page).
    pub cursor: Option<String>,
}

impl ListParams {
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(100),
            Some(n @ 1..=1000) => Ok(n as usize),
            Some(_) => Err(ApiError::bad_field("limit", "must be between 1 and 1000")),
        }
    }

    /// The cursor decoded back into the key it stands for.
    pub fn after(&self) -> Result<Option<String>, ApiError> {
        match self.cursor.as_deref() {
            None | Some("") => Ok(None),
            Some(c) => decode_cursor(c)
                .map(Some)
                .ok_or_else(|| ApiError::bad_field("cursor", "not a cursor this API issued")),
        }
    }
}

/// Cursors are the last key of a page, base64url-encoded with a tag, so
/// that clients treat them as opaque.
pub fn encode_cursor(key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("k:{key}"))
}

fn decode_cursor(c: &str) -> Option<String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()?;
    String::from_utf8(raw)
        .ok()?
        .strip_prefix("k:")
        .map(str::to_string)
}

/// `next_cursor` for a page fetched with `limit + 1` rows: trims the extra
/// row and returns the cursor of the last kept one.
pub fn page<T>(
    mut rows: Vec<T>,
    limit: usize,
    key: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(|r| encode_cursor(&key(r)));
        (rows, next)
    } else {
        (rows, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_time(input: &str, expected: Option<i64>) {
        assert_eq!(parse_time_ns_clamped(input), expected, "{input}");
    }

    #[test]
    fn times_in_range() {
        check_time("1970-01-01T00:00:01Z", Some(1_000_000_000));
        check_time("1970-01-01T01:00:00+01:00", Some(0));
        check_time("1970-01-01t00:00:00z", Some(0));
    }

    #[test]
    fn times_beyond_i64_nanoseconds_clamp() {
        check_time("8504-03-29T09:37:58.27Z", Some(i64::MAX));
        check_time("0091-12-03T17:48:24.578Z", Some(i64::MIN));
        check_time("0016-08-31T07:21:15-09:40", Some(i64::MIN));
    }

    #[test]
    fn times_malformed() {
        check_time("", None);
        check_time("yesterday", None);
        check_time("2026-13-01T00:00:00Z", None);
    }

    #[test]
    fn empty_cursor_is_the_first_page() {
        let p = |c: &str| ListParams {
            limit: None,
            cursor: Some(c.into()),
        };
        assert_eq!(p("").after().unwrap(), None);
        assert_eq!(
            p(&encode_cursor("b")).after().unwrap().as_deref(),
            Some("b")
        );
        assert_eq!(p("junk!").after().unwrap_err().status(), 400);
    }
}
