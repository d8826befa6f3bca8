//! The audit transparency logs, served read-only as C2SP tlog-tiles logs:
//! a project's at `/projects/{project}/audit/log/`, the organization's at
//! `/audit/log/`. Under each base: `checkpoint` (the signed note), `key`
//! (the verifier key string), `retained` (the retention floor, when
//! retention removed entries) and the tiles `tile/<L>/<N>[.p/<W>]` and
//! entry bundles `tile/entries/<N>[.p/<W>]`, exactly at the spec's relative
//! paths, so that standard tlog clients can use the base URL as is.
//!
//! Access is `audit:read`, decided like the other audit reads. Full tiles
//! and bundles never change, so they are cacheable for a year; partial
//! tiles, the checkpoint and the key are `no-cache`. The files come from
//! `audit` ([`audit::AuditLog::tlog_file`] validates the path).

use audit::LogKey;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use meta::Scope;

use super::PathParams;
use super::audit_api::audit_read;
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const NO_CACHE: &str = "no-cache";
const TEXT: &str = "text/plain; charset=utf-8";
const BINARY: &str = "application/octet-stream";

/// A file of a project's audit transparency log (tlog-tiles).
#[utoipa::path(get, path = "/api/flightdeck/v1/projects/{project}/audit/log/{path}", tag = "audit",
    params(super::ProjectPath, ("path" = String, Path,
        description = "`checkpoint`, `key`, `retained`, `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`")),
    responses((status = 200,
        content((String = "text/plain"), (Vec<u8> = "application/octet-stream")),
        description = "The signed checkpoint or verifier key (text), or a hash tile or entry bundle (binary)")))]
pub async fn project_log(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, path)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    meta::check_slug("project", &project)?;
    audit_read(&st, &caller, &project).await?;
    serve(&st, LogKey::Project(project), path).await
}

/// A file of the organization's audit transparency log (organization admins).
#[utoipa::path(get, path = "/api/flightdeck/v1/audit/log/{path}", tag = "audit",
    params(("path" = String, Path,
        description = "`checkpoint`, `key`, `retained`, `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`")),
    responses((status = 200,
        content((String = "text/plain"), (Vec<u8> = "application/octet-stream")),
        description = "The signed checkpoint or verifier key (text), or a hash tile or entry bundle (binary)")))]
pub async fn org_log(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(path): PathParams<String>,
) -> Result<Response, ApiError> {
    st.org_access(&caller, Scope::AuditRead).await?;
    serve(&st, LogKey::Organization, path).await
}

async fn serve(st: &AppState, log: LogKey, path: String) -> Result<Response, ApiError> {
    let audit = st.audit.clone();
    let shown: String = path.chars().take(120).collect();
    let (bytes, content_type, cache) = match path.as_str() {
        "key" => (Some(audit.verifier_key().into_bytes()), TEXT, NO_CACHE),
        "retained" => {
            let floor = tokio::task::spawn_blocking(move || audit.retained_from(&log))
                .await
                .map_err(ApiError::internal)??;
            (
                (floor > 0).then(|| format!("{floor}\n").into_bytes()),
                TEXT,
                NO_CACHE,
            )
        }
        "checkpoint" => {
            let cp = tokio::task::spawn_blocking(move || audit.checkpoint(&log))
                .await
                .map_err(ApiError::internal)?;
            (cp, TEXT, NO_CACHE)
        }
        _ => {
            // Only canonical tile paths get here: a partial one carries `.p/`.
            let cache = if path.contains(".p/") {
                NO_CACHE
            } else {
                IMMUTABLE
            };
            let file = tokio::task::spawn_blocking(move || audit.tlog_file(&log, &path))
                .await
                .map_err(ApiError::internal)??;
            (file, BINARY, cache)
        }
    };
    let bytes = bytes
        .filter(|b| !b.is_empty())
        .ok_or_else(|| ApiError::not_found(format!("audit log file '{shown}'")))?;
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
        ],
        Body::from(bytes),
    )
        .into_response())
}
