//! Privacy controls of the audit trail: erasure of a person's personal
//! values (crypto-shredding, see `audit::personal`), retention windows
//! (`crate::retention`), and legal holds on a project's audit log, which
//! suspend erasure and retention there.
//!
//! Both are organization-admin operations (`admin` scope for tokens) and
//! both are audited. An erasure is recorded *before* the keys are deleted,
//! so there is never an unaudited erasure; the recorded event names the
//! person only by `SHA-256` of the identifier given (the event must not
//! itself keep the personal data it erases).

use audit::{LogKey, Resource};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use meta::{LegalHold, Scope};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{JsonBody, PathParams, ProjectPath};
use crate::AppState;
use crate::auth::{Caller, Described, blocking};
use crate::error::ApiError;

/// Whose personal values to erase.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasureRequest {
    /// A user name, user id or token id; also erases failed logins that
    /// claimed this name.
    pub principal: String,
    /// Addresses of the person's anonymous requests (failed
    /// authentication) to erase too.
    #[serde(default)]
    pub source_ips: Vec<String>,
}

/// What an erasure did.
#[derive(Serialize, ToSchema)]
pub struct ErasureOut {
    /// Subject keys deleted (one per log the person appears in).
    pub keys_deleted: u64,
    /// Logs whose events now read `[erased]`: `org` or a project name.
    pub logs: Vec<String>,
    /// Logs left alone because of an active legal hold.
    pub held: Vec<String>,
}

fn log_name(text: &str) -> String {
    text.strip_prefix("p:").unwrap_or("org").to_string()
}

/// Erase a person's personal values from the audit trail (crypto-shredding).
///
/// Their events stay and keep verifying; `principal.name`, `source_ip`,
/// `user_agent` (and a failed login's claimed name) read `[erased]`.
/// Projects under a legal hold are skipped and listed in `held`.
#[utoipa::path(post, path = "/api/flightdeck/v1/audit/erasures", tag = "audit",
    request_body = ErasureRequest, responses((status = 200, body = ErasureOut)))]
pub async fn erase(
    State(st): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<ErasureRequest>,
) -> Result<Json<ErasureOut>, ApiError> {
    st.org_access(&caller, Scope::Admin).await?;
    let check = || -> Result<(), ApiError> {
        let p = body.principal.trim();
        if p.is_empty() || p.chars().count() > 256 {
            return Err(ApiError::bad_field("principal", "1 to 256 characters"));
        }
        if body.source_ips.len() > 100 {
            return Err(ApiError::bad_field("source_ips", "at most 100 addresses"));
        }
        for (i, ip) in body.source_ips.iter().enumerate() {
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(ApiError::bad_field(
                    format!("source_ips[{i}]"),
                    "not an IP address",
                ));
            }
        }
        Ok(())
    };
    if let Err(e) = check() {
        return Err(st.fail(&caller, None, None, e).await);
    }
    let principal = body.principal.trim().to_string();
    // A user name also names the user's id; both are erased.
    let name = principal.clone();
    let user_id = blocking(&st, move |m| {
        m.read(|tx| match tx.user(&name) {
            Ok(u) => Ok(Some(u.id)),
            Err(meta::MetaError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        })
    })
    .await?;
    let held = blocking(&st, |m| m.read(|tx| tx.held_projects())).await?;
    let person = hex::encode(Sha256::digest(principal.as_bytes()));
    let resource = Resource {
        kind: "person".into(),
        id: Some(format!("sha256:{person}")),
        name: None,
    };
    let params = serde_json::json!({
        "principal_sha256": person,
        "source_ips": body.source_ips.len(),
    });
    let d = st.draft(
        &caller,
        None,
        Some(resource),
        Some(params),
        Ok(StatusCode::OK),
    );
    st.record_for(&caller, d).await?;

    let audit = st.audit.clone();
    let held_logs: Vec<LogKey> = held.into_iter().map(LogKey::Project).collect();
    let ips = body.source_ips;
    let report = tokio::task::spawn_blocking(move || {
        let mut total = audit.erase(&principal, &ips, &held_logs)?;
        if let Some(id) = user_id {
            let r = audit.erase(&id, &[], &held_logs)?;
            total.keys += r.keys;
            total.logs.extend(r.logs);
            total.held.extend(r.held);
        }
        Ok::<_, audit::AuditError>(total)
    })
    .await
    .map_err(ApiError::internal)??;
    let mut logs: Vec<String> = report.logs.iter().map(|l| log_name(l)).collect();
    let mut held: Vec<String> = report.held.iter().map(|l| log_name(l)).collect();
    logs.sort();
    logs.dedup();
    held.sort();
    held.dedup();
    Ok(Json(ErasureOut {
        keys_deleted: report.keys,
        logs,
        held,
    }))
}

/// A legal hold on a project's audit log.
#[derive(Serialize, ToSchema)]
pub struct HoldOut {
    pub id: String,
    pub project: String,
    pub reason: String,
    pub active: bool,
    /// Unix seconds.
    pub created_at: i64,
    pub created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,
}

impl From<&LegalHold> for HoldOut {
    fn from(h: &LegalHold) -> HoldOut {
        HoldOut {
            id: h.id.clone(),
            project: h.project.clone(),
            reason: h.reason.clone(),
            active: h.released_at.is_none(),
            created_at: h.created_at,
            created_by: h.created_by.clone(),
            released_at: h.released_at,
            released_by: h.released_by.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct HoldList {
    pub holds: Vec<HoldOut>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewHold {
    /// Why (case number, request reference): 1 to 500 characters.
    pub reason: String,
}

fn hold_resource(h: &LegalHold) -> Resource {
    Resource {
        kind: "legal_hold".into(),
        id: Some(h.id.clone()),
        name: None,
    }
}

/// Checks organization admin rights and that the project exists.
async fn hold_access(st: &AppState, caller: &Caller, project: &str) -> Result<(), ApiError> {
    meta::check_slug("project", project)?;
    st.org_access(caller, Scope::Admin).await?;
    let p = project.to_string();
    blocking(st, move |m| m.read(|tx| tx.project(&p))).await?;
    Ok(())
}

/// List a project's legal holds (active and released).
#[utoipa::path(get, path = "/api/flightdeck/v1/projects/{project}/audit/holds", tag = "audit",
    params(ProjectPath), responses((status = 200, body = HoldList)))]
pub async fn list_holds(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
) -> Result<Json<HoldList>, ApiError> {
    hold_access(&st, &caller, &project).await?;
    let holds = blocking(&st, move |m| m.read(|tx| tx.holds(&project))).await?;
    Ok(Json(HoldList {
        holds: holds.iter().map(HoldOut::from).collect(),
    }))
}

/// Place a legal hold on a project's audit log: erasure (and retention)
/// skip the project until every hold is released.
#[utoipa::path(post, path = "/api/flightdeck/v1/projects/{project}/audit/holds", tag = "audit",
    params(ProjectPath), request_body = NewHold, responses((status = 201, body = HoldOut)))]
pub async fn create_hold(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
    JsonBody(body): JsonBody<NewHold>,
) -> Result<(StatusCode, Json<HoldOut>), ApiError> {
    hold_access(&st, &caller, &project).await?;
    let reason = body.reason.trim().to_string();
    if reason.is_empty() || reason.chars().count() > 500 {
        let e = ApiError::bad_field("reason", "1 to 500 characters");
        return Err(st.fail(&caller, Some(project), None, e).await);
    }
    let by = caller.principal().id;
    let now = st.now();
    let p = project.clone();
    let params = serde_json::json!({ "reason": reason });
    let h = st
        .mutate(
            &caller,
            Some(project),
            Resource {
                kind: "legal_hold".into(),
                id: None,
                name: None,
            },
            Some(params),
            StatusCode::CREATED,
            move |tx| tx.create_hold(&p, &reason, &by, now),
            |h| Described {
                resource: hold_resource(h),
                changes: vec![],
                response: None,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(HoldOut::from(&h))))
}

/// Release a legal hold.
#[utoipa::path(delete, path = "/api/flightdeck/v1/projects/{project}/audit/holds/{hold_id}", tag = "audit",
    params(ProjectPath, ("hold_id" = String, Path, description = "legal hold id")),
    responses((status = 200, body = HoldOut)))]
pub async fn release_hold(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, hold_id)): PathParams<(String, String)>,
) -> Result<Json<HoldOut>, ApiError> {
    hold_access(&st, &caller, &project).await?;
    let by = caller.principal().id;
    let now = st.now();
    let p = project.clone();
    let resource = Resource {
        kind: "legal_hold".into(),
        id: Some(hold_id.chars().take(100).collect()),
        name: None,
    };
    let h = st
        .mutate(
            &caller,
            Some(project),
            resource,
            None,
            StatusCode::OK,
            move |tx| tx.release_hold(&p, &hold_id, &by, now),
            |h| Described {
                resource: hold_resource(h),
                changes: vec![audit::Change {
                    field: "status".into(),
                    before: "active".into(),
                    after: "released".into(),
                }],
                response: None,
            },
        )
        .await?;
    Ok(Json(HoldOut::from(&h)))
}

/// A project's audit retention.
#[derive(Serialize, ToSchema)]
pub struct RetentionOut {
    /// Entries older than this many days are removed (whole bundles of 256).
    pub days: u32,
    /// `days` is the configured default (no setting of the project's own).
    pub default: bool,
    /// Entries below this log index were removed.
    pub retained_from: u64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRetention {
    /// 1 to 36500 days; `null` returns to the configured default.
    pub days: Option<u32>,
}

async fn retention_out(st: &AppState, project: String) -> Result<RetentionOut, ApiError> {
    let p = project.clone();
    let days = blocking(st, move |m| m.read(|tx| tx.retention_days(&p))).await?;
    let audit = st.audit.clone();
    let retained_from =
        tokio::task::spawn_blocking(move || audit.retained_from(&LogKey::Project(project)))
            .await
            .map_err(ApiError::internal)??;
    Ok(RetentionOut {
        days: days.unwrap_or(st.opts.audit_retention_days),
        default: days.is_none(),
        retained_from,
    })
}

/// A project's audit retention window.
#[utoipa::path(get, path = "/api/flightdeck/v1/projects/{project}/audit/retention", tag = "audit",
    params(ProjectPath), responses((status = 200, body = RetentionOut)))]
pub async fn get_retention(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
) -> Result<Json<RetentionOut>, ApiError> {
    hold_access(&st, &caller, &project).await?;
    Ok(Json(retention_out(&st, project).await?))
}

/// Set a project's audit retention window (organization admins).
#[utoipa::path(put, path = "/api/flightdeck/v1/projects/{project}/audit/retention", tag = "audit",
    params(ProjectPath), request_body = SetRetention, responses((status = 200, body = RetentionOut)))]
pub async fn set_retention(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
    JsonBody(body): JsonBody<SetRetention>,
) -> Result<Json<RetentionOut>, ApiError> {
    hold_access(&st, &caller, &project).await?;
    if body.days.is_some_and(|d| !(1..=36_500).contains(&d)) {
        let e = ApiError::bad_field("days", "1 to 36500, or null for the default");
        return Err(st.fail(&caller, Some(project), None, e).await);
    }
    let p = project.clone();
    let days = body.days;
    st.mutate(
        &caller,
        Some(project.clone()),
        Resource {
            kind: "audit_retention".into(),
            id: Some(project.clone()),
            name: None,
        },
        Some(serde_json::json!({ "days": days })),
        StatusCode::OK,
        move |tx| tx.set_retention_days(&p, days),
        move |before| Described {
            resource: Resource {
                kind: "audit_retention".into(),
                id: None,
                name: None,
            },
            changes: vec![audit::Change {
                field: "days".into(),
                before: serde_json::json!(before),
                after: serde_json::json!(days),
            }],
            response: None,
        },
    )
    .await?;
    Ok(Json(retention_out(&st, project).await?))
}

#[derive(Serialize, ToSchema)]
pub struct SweepOut {
    pub logs: Vec<crate::retention::LogRetention>,
}

/// Run the audit retention sweep now (it also runs on a timer).
///
/// Each removal is recorded as `audit.retention.apply` by the `system`
/// principal in the log concerned, under a signed checkpoint, before any
/// entry bundle is deleted. Projects under a legal hold are skipped.
#[utoipa::path(post, path = "/api/flightdeck/v1/audit/retention/run", tag = "audit",
    responses((status = 200, body = SweepOut)))]
pub async fn run_retention(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<SweepOut>, ApiError> {
    st.org_access(&caller, Scope::Admin).await?;
    Ok(Json(SweepOut {
        logs: crate::retention::sweep(&st).await?,
    }))
}
