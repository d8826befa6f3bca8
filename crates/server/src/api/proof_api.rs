//! Proofs and receipts of the audit transparency logs: a project's under
//! `/projects/{project}/audit/...`, the organization's under `/audit/...`:
//!
//! - `proofs/inclusion?index=N|id=UUID[&tree_size=S]`: RFC 9162 inclusion
//!   proof of one entry (JSON);
//! - `proofs/consistency?from=A[&to=B]`: consistency proof between two sizes;
//! - `receipts/{index or id}`: a receipt, the C2SP tlog-proof text with the
//!   entry bytes, verifiable offline (`flightdeck audit verify-receipt`).
//!
//! Not under `.../audit/log/`: that prefix is exactly the tlog-tiles layout.
//! Access is `audit:read`, decided like every other audit read. The proofs
//! are made by `audit` from the tiles on disk (see `audit::proof`); this
//! module only parses parameters and shapes answers.

use audit::{EntryRef, LogKey};
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use meta::Scope;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::audit_api::audit_read;
use super::{Params, PathParams, ProjectPath};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// Parameters of an inclusion proof.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InclusionParams {
    /// The entry's `log_index` (give this or `id`).
    #[param(minimum = 0)]
    pub index: Option<u64>,
    /// The event id (give this or `index`).
    pub id: Option<String>,
    /// The tree size to prove in, at most the latest signed checkpoint's
    /// (default: that one's).
    #[param(minimum = 1)]
    pub tree_size: Option<u64>,
}

/// Parameters of a consistency proof.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyParams {
    /// The older tree size (at least 1).
    // Optional in Rust only so that its absence gets a message naming it.
    #[param(minimum = 1, required = true)]
    pub from: Option<u64>,
    /// The newer tree size, at most the latest signed checkpoint's
    /// (default: that one's).
    #[param(minimum = 1)]
    pub to: Option<u64>,
}

/// An RFC 9162 inclusion proof. Check it with the leaf hash of the entry's
/// bytes (as in its entry bundle), `log_index`, `tree_size` and the root of
/// a signed checkpoint of that size.
#[derive(Serialize, ToSchema)]
pub struct InclusionProofOut {
    /// The entry's position in its log.
    pub log_index: u64,
    /// The tree size the proof is for.
    pub tree_size: u64,
    /// `SHA-256(0x00 ‖ entry)`, standard base64.
    pub leaf_hash: String,
    /// The audit path, standard base64 hashes, the leaf's sibling first.
    pub hashes: Vec<String>,
    /// The signed checkpoint (C2SP signed note) of size `tree_size` when
    /// that is the latest one; absent for an older size (verify against a
    /// checkpoint you saved).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub checkpoint: Option<String>,
}

/// An RFC 9162 consistency proof: the tree of size `from` is a prefix of
/// the tree of size `to`.
#[derive(Serialize, ToSchema)]
pub struct ConsistencyProofOut {
    /// The older size.
    pub from: u64,
    /// The newer size.
    pub to: u64,
    /// The proof, standard base64 hashes (empty when `from` = `to`).
    pub hashes: Vec<String>,
    /// The signed checkpoint of size `to` when that is the latest one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub checkpoint: Option<String>,
}

fn b64(hashes: &[audit::Hash]) -> Vec<String> {
    hashes.iter().map(|h| h.to_base64()).collect()
}

impl InclusionParams {
    fn entry(&self) -> Result<EntryRef, ApiError> {
        match (&self.index, &self.id) {
            (Some(i), None) => Ok(EntryRef::Index(*i)),
            (None, Some(id)) => Ok(EntryRef::Id(id.clone())),
            (Some(_), Some(_)) => Err(ApiError::bad_field(
                "id",
                "give either index or id, not both",
            )),
            (None, None) => Err(ApiError::bad_field(
                "index",
                "give the entry's index (log_index) or the event's id",
            )),
        }
    }
}

/// `{entry}` of a receipt path: digits are a `log_index`, anything else an
/// event id.
fn entry_of_path(entry: &str) -> Result<EntryRef, ApiError> {
    if !entry.is_empty() && entry.bytes().all(|b| b.is_ascii_digit()) {
        entry.parse().map(EntryRef::Index).map_err(|_| {
            ApiError::bad_field(
                "entry",
                "an index must fit in 64 bits (or give an event id)",
            )
        })
    } else {
        Ok(EntryRef::Id(entry.to_string()))
    }
}

async fn inclusion(
    st: &AppState,
    log: LogKey,
    p: InclusionParams,
) -> Result<Json<InclusionProofOut>, ApiError> {
    let entry = p.entry()?;
    let audit = st.audit.clone();
    let proof =
        tokio::task::spawn_blocking(move || audit.inclusion_proof(&log, &entry, p.tree_size))
            .await
            .map_err(ApiError::internal)??;
    Ok(Json(InclusionProofOut {
        log_index: proof.index,
        tree_size: proof.tree_size,
        leaf_hash: proof.leaf_hash.to_base64(),
        hashes: b64(&proof.hashes),
        checkpoint: proof.checkpoint.map(|c| c.note_text()),
    }))
}

async fn consistency(
    st: &AppState,
    log: LogKey,
    p: ConsistencyParams,
) -> Result<Json<ConsistencyProofOut>, ApiError> {
    let from = p
        .from
        .ok_or_else(|| ApiError::bad_field("from", "required: the older tree size (at least 1)"))?;
    let audit = st.audit.clone();
    let proof = tokio::task::spawn_blocking(move || audit.consistency_proof(&log, from, p.to))
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(ConsistencyProofOut {
        from: proof.from,
        to: proof.to,
        hashes: b64(&proof.hashes),
        checkpoint: proof.checkpoint.map(|c| c.note_text()),
    }))
}

async fn receipt(st: &AppState, log: LogKey, entry: String) -> Result<Response, ApiError> {
    let entry = entry_of_path(&entry)?;
    let audit = st.audit.clone();
    let r = tokio::task::spawn_blocking(move || audit.receipt(&log, &entry))
        .await
        .map_err(ApiError::internal)??;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        r.to_bytes(),
    )
        .into_response())
}

/// Inclusion proof of one entry of a project's audit log.
#[utoipa::path(get, path = "/api/flightdeck/v1/projects/{project}/audit/proofs/inclusion", tag = "audit",
    params(ProjectPath, InclusionParams),
    responses((status = 200, body = InclusionProofOut)))]
pub async fn project_inclusion(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
    Params(p): Params<InclusionParams>,
) -> Result<Json<InclusionProofOut>, ApiError> {
    meta::check_slug("project", &project)?;
    audit_read(&st, &caller, &project).await?;
    inclusion(&st, LogKey::Project(project), p).await
}

/// Inclusion proof of one entry of the organization's audit log (organization admins).
#[utoipa::path(get, path = "/api/flightdeck/v1/audit/proofs/inclusion", tag = "audit",
    params(InclusionParams),
    responses((status = 200, body = InclusionProofOut)))]
pub async fn org_inclusion(
    State(st): State<AppState>,
    caller: Caller,
    Params(p): Params<InclusionParams>,
) -> Result<Json<InclusionProofOut>, ApiError> {
    st.org_access(&caller, Scope::AuditRead).await?;
    inclusion(&st, LogKey::Organization, p).await
}

/// Consistency proof between two sizes of a project's audit log.
#[utoipa::path(get, path = "/api/flightdeck/v1/projects/{project}/audit/proofs/consistency", tag = "audit",
    params(ProjectPath, ConsistencyParams),
    responses((status = 200, body = ConsistencyProofOut)))]
pub async fn project_consistency(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
    Params(p): Params<ConsistencyParams>,
) -> Result<Json<ConsistencyProofOut>, ApiError> {
    meta::check_slug("project", &project)?;
    audit_read(&st, &caller, &project).await?;
    consistency(&st, LogKey::Project(project), p).await
}

/// Consistency proof between two sizes of the organization's audit log (organization admins).
#[utoipa::path(get, path = "/api/flightdeck/v1/audit/proofs/consistency", tag = "audit",
    params(ConsistencyParams),
    responses((status = 200, body = ConsistencyProofOut)))]
pub async fn org_consistency(
    State(st): State<AppState>,
    caller: Caller,
    Params(p): Params<ConsistencyParams>,
) -> Result<Json<ConsistencyProofOut>, ApiError> {
    st.org_access(&caller, Scope::AuditRead).await?;
    consistency(&st, LogKey::Organization, p).await
}

/// A receipt for one entry of a project's audit log: C2SP tlog-proof text
/// with the entry bytes, verifiable offline with `flightdeck audit verify-receipt`.
#[utoipa::path(get, path = "/api/flightdeck/v1/projects/{project}/audit/receipts/{entry}", tag = "audit",
    params(ProjectPath, ("entry" = String, Path,
        description = "The entry's `log_index` (digits) or the event id")),
    responses((status = 200, content((String = "text/plain")),
        description = "The receipt (c2sp.org/tlog-proof@v1 with the entry as extra data)")))]
pub async fn project_receipt(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, entry)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    meta::check_slug("project", &project)?;
    audit_read(&st, &caller, &project).await?;
    receipt(&st, LogKey::Project(project), entry).await
}

/// A receipt for one entry of the organization's audit log (organization admins).
#[utoipa::path(get, path = "/api/flightdeck/v1/audit/receipts/{entry}", tag = "audit",
    params(("entry" = String, Path,
        description = "The entry's `log_index` (digits) or the event id")),
    responses((status = 200, content((String = "text/plain")),
        description = "The receipt (c2sp.org/tlog-proof@v1 with the entry as extra data)")))]
pub async fn org_receipt(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(entry): PathParams<String>,
) -> Result<Response, ApiError> {
    st.org_access(&caller, Scope::AuditRead).await?;
    receipt(&st, LogKey::Organization, entry).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_paths_are_indexes_or_ids() {
        assert_eq!(entry_of_path("42").unwrap(), EntryRef::Index(42));
        assert_eq!(
            entry_of_path("0190a-b").unwrap(),
            EntryRef::Id("0190a-b".into())
        );
        assert_eq!(
            entry_of_path("99999999999999999999").unwrap_err().status(),
            400
        );
    }
}
