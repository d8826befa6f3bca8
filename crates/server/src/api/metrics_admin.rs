//! Management of the metric store: `POST /metrics/flush` cuts every
//! project's head into blocks now (benchmarks measure bytes on disk after
//! it; operators use it before a backup). Organization admins only,
//! audited as `metrics.store.flush`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meta::Scope;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::{ApiError, AppState, AuditRecorded, Kind};

#[derive(Serialize, ToSchema)]
pub struct FlushOut {
    /// Blocks on disk after the flush, over all projects.
    pub blocks: usize,
    /// Bytes of those blocks.
    pub block_bytes: u64,
}

/// Cut the metric store's head into blocks now.
///
/// Every acknowledged sample is durable already (in the write-ahead log);
/// this writes the in-memory head as immutable, compressed blocks and
/// truncates the log, as the store does on its own every two hours.
#[utoipa::path(post, path = "/api/flightdeck/v1/metrics/flush", tag = "metrics",
    responses((status = 200, body = FlushOut)))]
pub async fn flush(State(st): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    st.org_access(&caller, Scope::Admin).await?;
    let Some(m) = st.metrics.clone() else {
        return Err(ApiError::new(
            Kind::Unavailable,
            "unavailable",
            "the metric store is not enabled on this server",
        ));
    };
    let r = tokio::task::spawn_blocking(move || {
        m.db.flush()?;
        let projects = m.db.projects();
        let (mut blocks, mut bytes) = (0, 0);
        for p in projects {
            let s = m.db.stats(&p);
            blocks += s.blocks;
            bytes += s.block_bytes;
        }
        Ok::<_, tsdb::Error>(FlushOut {
            blocks,
            block_bytes: bytes,
        })
    })
    .await
    .map_err(ApiError::internal)?;
    let out = match r {
        Ok(o) => o,
        Err(e) => {
            let err = ApiError::new(
                Kind::Unavailable,
                "store_failed",
                format!("flushing the metric store failed: {e}"),
            );
            return Err(st.fail(&caller, None, None, err).await);
        }
    };
    let d = st.draft(
        &caller,
        None,
        Some(audit::Resource {
            kind: "metric_store".into(),
            id: None,
            name: None,
        }),
        Some(serde_json::json!({"blocks": out.blocks, "block_bytes": out.block_bytes})),
        Ok(StatusCode::OK),
    );
    st.record(d).await?;
    let mut resp = Json(out).into_response();
    resp.extensions_mut().insert(AuditRecorded);
    Ok(resp)
}
