//! The audit transparency logs, served read-only as C2SP tlog-tiles logs:
//! a project's at `/projects/{project}/audit/log/`, the organization's at
//! `/audit/log/`. Under each base: `checkpoint` (the signed note, with the
//! witness cosignatures accepted for it), `witnessed/<key id>` (the newest
//! checkpoint that witness cosigned), `key` (the current verifier
//! key string), `retained` (the retention floor, when retention removed
//! entries), `keys` (every signing key the log used, JSON) and the
//! tiles `tile/<L>/<N>[.p/<W>]` and entry bundles
//! `tile/entries/<N>[.p/<W>]`, exactly at the spec's relative paths, so
//! that standard tlog clients can use the base URL as is.
//!
//! Access is `audit:read`, decided like the other audit reads. Full tiles
//! and bundles never change, so they are cacheable for a year; everything
//! else is `no-cache`. The files come from `audit`
//! ([`audit::AuditLog::tlog_file`] validates the path).
//!
//! Two writes: witnesses push cosigned checkpoints to `<base>cosignature`
//! (`audit:write`, or `admin`, which implies it; see
//! [`audit::witness`] for what is accepted), and an organization admin
//! rotates the signing key with `POST /audit/log/rotate-key`. Both are
//! audited by their handlers.

use audit::LogKey;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use meta::Scope;
use serde::Serialize;
use utoipa::ToSchema;

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
        description = "`checkpoint`, `witnessed/<witness key id>`, `key`, `keys`, `retained`, `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`")),
    responses((status = 200,
        content((String = "text/plain"), (Vec<u8> = "application/octet-stream"), (SigningKeys = "application/json")),
        description = "The signed checkpoint (with witness cosignatures) or verifier key (text), the signing keys (JSON), or a hash tile or entry bundle (binary)")))]
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
        description = "`checkpoint`, `witnessed/<witness key id>`, `key`, `keys`, `retained`, `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`")),
    responses((status = 200,
        content((String = "text/plain"), (Vec<u8> = "application/octet-stream"), (SigningKeys = "application/json")),
        description = "The signed checkpoint (with witness cosignatures) or verifier key (text), the signing keys (JSON), or a hash tile or entry bundle (binary)")))]
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
        "keys" => {
            let keys = tokio::task::spawn_blocking(move || audit.signing_keys())
                .await
                .map_err(ApiError::internal)??;
            let body = SigningKeys::of(&keys);
            return Ok(([(header::CACHE_CONTROL, NO_CACHE)], Json(body)).into_response());
        }
        _ => {
            // Only canonical tile paths are immutable: a partial one carries `.p/`.
            let text =
                path == audit::files::CHECKPOINT || path.starts_with(audit::tlog::WITNESSED_PREFIX);
            let (content_type, cache) = if text {
                (TEXT, NO_CACHE)
            } else if path.contains(".p/") {
                (BINARY, NO_CACHE)
            } else {
                (BINARY, IMMUTABLE)
            };
            let file = tokio::task::spawn_blocking(move || audit.tlog_file(&log, &path))
                .await
                .map_err(ApiError::internal)??;
            (file, content_type, cache)
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

/// The signing keys of the audit logs (`<base>keys`), oldest first.
#[derive(Serialize, ToSchema)]
pub struct SigningKeys {
    pub keys: Vec<SigningKeyOut>,
}

/// One signing key and when it was the signer: every checkpoint it signed
/// was signed between `first_use` and `last_use`.
#[derive(Serialize, ToSchema)]
pub struct SigningKeyOut {
    /// Verifier key string `<name>+<hex key id>+<base64(0x01 ‖ key)>`.
    pub vkey: String,
    /// When it became the signing key (RFC 3339).
    pub first_use: String,
    /// When it was replaced (RFC 3339); null for the current key.
    pub last_use: Option<String>,
    pub current: bool,
}

impl SigningKeys {
    fn of(keys: &[audit::keys::KeyRecord]) -> SigningKeys {
        SigningKeys {
            keys: keys
                .iter()
                .map(|k| SigningKeyOut {
                    vkey: k.vkey.to_string(),
                    first_use: super::rfc3339(k.first_use_ns),
                    last_use: k.last_use_ns.map(super::rfc3339),
                    current: k.last_use_ns.is_none(),
                })
                .collect(),
        }
    }
}

/// The body of a cosignature push: a checkpoint note (origin, size, root,
/// an empty line) with the log's signature and one or more C2SP
/// tlog-cosignature lines, each `— <name> <base64>`.
#[derive(ToSchema)]
#[schema(
    pattern = "^[!-~]{1,64}\n(0|[1-9][0-9]{0,17})\n[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=\n\n(— [!-*,-~]{1,64} ([A-Za-z0-9+/]{4}){2,24}\n){1,8}$",
    example = "flightdeck/p/default\n120\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n— flightdeck KmMFWnltcvzO\n— w1.example 8/M1kAAAAABrCCFJ\n"
)]
#[allow(dead_code)]
pub struct CosignedNote(String);

/// What a cosignature push stored.
#[derive(Serialize, ToSchema)]
pub struct CosignedOut {
    /// Origin of the cosigned checkpoint.
    pub origin: String,
    /// Its tree size.
    pub size: u64,
    /// Every cosignature by a configured witness now on that checkpoint.
    pub cosignatures: Vec<CosignatureOut>,
}

/// One witness cosignature.
#[derive(Serialize, ToSchema)]
pub struct CosignatureOut {
    /// Witness key name.
    pub witness: String,
    /// Witness key ID, 8 hex digits.
    pub key_id: String,
    /// When the witness cosigned (RFC 3339, from its POSIX seconds).
    pub time: String,
}

fn cosignature_out(c: &merkle::Cosignature) -> CosignatureOut {
    let ns = i64::try_from(c.timestamp)
        .ok()
        .and_then(|s| s.checked_mul(1_000_000_000))
        .unwrap_or(i64::MAX);
    CosignatureOut {
        witness: c.name.clone(),
        key_id: format!("{:08x}", c.key_id),
        time: super::rfc3339(ns),
    }
}

/// `audit:write` in the project, or `admin` there (which implies it).
async fn audit_write(st: &AppState, caller: &Caller, project: &str) -> Result<(), ApiError> {
    let implied = match &caller.who {
        crate::auth::Who::Token { token, .. } => {
            !token.scopes.contains(&Scope::AuditWrite) && token.scopes.contains(&Scope::Admin)
        }
        _ => false,
    };
    let scope = if implied {
        Scope::Admin
    } else {
        Scope::AuditWrite
    };
    st.project_access(caller, project, scope).await.map(|_| ())
}

/// Pushes a witness cosignature of a project's checkpoint.
///
/// The body is the checkpoint note as the log served it with the
/// witness's C2SP tlog-cosignature line(s) appended. Accepted only for the
/// current checkpoint or one signed in the last 10 minutes, and only from
/// witness keys in the server's `audit.witnesses`; then served on
/// `checkpoint` (while current) and `witnessed/<witness key id>`.
#[utoipa::path(post, path = "/api/flightdeck/v1/projects/{project}/audit/log/cosignature", tag = "audit",
    params(super::ProjectPath),
    request_body(content = CosignedNote, content_type = "text/plain",
        description = "A checkpoint note with one or more cosignature lines"),
    responses((status = 200, body = CosignedOut, description = "The cosignatures were stored")))]
pub async fn project_cosign(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
    body: Bytes,
) -> Result<Json<CosignedOut>, ApiError> {
    meta::check_slug("project", &project)?;
    audit_write(&st, &caller, &project).await?;
    cosign(&st, &caller, LogKey::Project(project), body).await
}

/// Pushes a witness cosignature of the organization log's checkpoint
/// (organization admins; tokens need `audit:write`).
#[utoipa::path(post, path = "/api/flightdeck/v1/audit/log/cosignature", tag = "audit",
    request_body(content = CosignedNote, content_type = "text/plain",
        description = "A checkpoint note with one or more cosignature lines"),
    responses((status = 200, body = CosignedOut, description = "The cosignatures were stored")))]
pub async fn org_cosign(
    State(st): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<CosignedOut>, ApiError> {
    st.org_access(&caller, Scope::AuditWrite).await?;
    cosign(&st, &caller, LogKey::Organization, body).await
}

async fn cosign(
    st: &AppState,
    caller: &Caller,
    log: LogKey,
    body: Bytes,
) -> Result<Json<CosignedOut>, ApiError> {
    let project = match &log {
        LogKey::Project(p) => Some(p.clone()),
        LogKey::Organization => None,
    };
    let origin = audit::tlog::origin(&tlog_name(st), &log);
    let resource = audit::Resource {
        kind: "tlog_checkpoint".into(),
        id: None,
        name: Some(origin),
    };
    let audit = st.audit.clone();
    let witnesses = st.opts.witnesses.clone();
    let now_s = u64::try_from(st.now() / 1_000_000_000).unwrap_or(0);
    let r =
        tokio::task::spawn_blocking(move || audit.add_cosignatures(&log, &body, &witnesses, now_s))
            .await
            .map_err(ApiError::internal)?;
    let done = match r {
        Ok(c) => c,
        Err(e) => return Err(st.fail(caller, project, Some(resource), e.into()).await),
    };
    let mut d = st.draft(
        caller,
        project,
        Some(audit::Resource {
            id: Some(done.size.to_string()),
            ..resource
        }),
        Some(serde_json::json!({
            "size": done.size,
            "witnesses": done
                .added
                .iter()
                .map(|c| format!("{}+{:08x}", c.name, c.key_id))
                .collect::<Vec<_>>(),
        })),
        Ok(StatusCode::OK),
    );
    d.response_elements = Some(serde_json::json!({ "cosignatures": done.cosignatures.len() }));
    st.record_for(caller, d).await?;
    Ok(Json(CosignedOut {
        origin: done.origin,
        size: done.size,
        cosignatures: done.cosignatures.iter().map(cosignature_out).collect(),
    }))
}

/// The key name of the logs' origins (`<name>/org`, `<name>/p/<slug>`).
fn tlog_name(st: &AppState) -> String {
    let vkey = st.audit.verifier_key();
    vkey.split('+').next().unwrap_or("flightdeck").to_string()
}

/// Rotates the audit log signing key (organization admins; tokens need
/// `admin`).
///
/// A new Ed25519 key with the same name signs every checkpoint from now
/// on; each log's current checkpoint is re-signed with it within a second.
/// The old public key stays listed at `<base>keys`, so checkpoints saved
/// earlier keep verifying with it. Answers the keys after the rotation.
#[utoipa::path(post, path = "/api/flightdeck/v1/audit/log/rotate-key", tag = "audit",
    responses((status = 200, body = SigningKeys, description = "The signing keys, the new one last")))]
pub async fn rotate_key(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<SigningKeys>, ApiError> {
    st.org_access(&caller, Scope::Admin).await?;
    let audit = st.audit.clone();
    let now = st.now();
    let old = st.audit.verifier_key();
    let r = tokio::task::spawn_blocking(move || {
        audit.rotate_key(now)?;
        audit.signing_keys()
    })
    .await
    .map_err(ApiError::internal)?;
    let resource = |vkey: &str| audit::Resource {
        kind: "signing_key".into(),
        id: vkey.split('+').nth(1).map(str::to_string),
        name: Some(vkey.to_string()),
    };
    let keys = match r {
        Ok(k) => k,
        Err(e) => {
            return Err(st.fail(&caller, None, Some(resource(&old)), e.into()).await);
        }
    };
    let new = st.audit.verifier_key();
    let mut d = st.draft(
        &caller,
        None,
        Some(resource(&new)),
        None,
        Ok(StatusCode::OK),
    );
    d.changes = vec![audit::Change {
        field: "signing_key".into(),
        before: old.into(),
        after: new.into(),
    }];
    // The rotation is on disk before this event: if the event cannot be
    // written the caller gets 503, and `keys` shows the rotation with its time.
    st.record_for(&caller, d).await?;
    Ok(Json(SigningKeys::of(&keys)))
}
