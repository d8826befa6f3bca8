//! The audit retention sweep: for the organization log and every project
//! without an active legal hold, removes entries older than the project's
//! window (`audit_retention_days`, else the configured default) in whole
//! bundles below the signed checkpoint (`audit::retention`).
//!
//! Order, per log: plan; record `audit.retention.apply` (principal
//! `system`, the range in `request_parameters.entries_from/entries_to`);
//! wait until a signed checkpoint covers that event, so that a verifier
//! that sees the removed bundles gone also sees the event that removed
//! them; then apply. A log whose plan is empty still gets
//! `complete_retention`, which finishes work a crash interrupted.

use std::time::{Duration, Instant};

use audit::{LogKey, Resource};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::blocking;
use crate::error::ApiError;

const DAY_NS: i64 = 86_400 * 1_000_000_000;
/// Longest wait for the checkpoint covering a retention event.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(10);

/// What the sweep did to one log.
#[derive(Serialize, ToSchema, Debug, Clone)]
pub struct LogRetention {
    /// `org` or a project name.
    pub log: String,
    pub days: u32,
    /// An active legal hold suspended retention here.
    pub held: bool,
    /// Entries below this index are removed (0: none).
    pub retained_from: u64,
    /// Entries removed by this sweep.
    pub removed: u64,
}

/// Runs the sweep every `retention_check_interval`.
pub async fn sweeper(st: AppState) {
    let mut tick = tokio::time::interval(st.opts.retention_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep(&st).await {
            tracing::warn!(error = %e.message, "audit retention sweep failed; will retry");
        }
    }
}

/// One pass over every log.
pub async fn sweep(st: &AppState) -> Result<Vec<LogRetention>, ApiError> {
    let default = st.opts.audit_retention_days;
    let (overrides, held) = blocking(st, |m| {
        m.read(|tx| Ok((tx.retention_overrides()?, tx.held_projects()?)))
    })
    .await?;
    let mut logs = vec![(LogKey::Organization, default, false)];
    for (name, days) in overrides {
        let h = held.contains(&name);
        logs.push((LogKey::Project(name), days.unwrap_or(default), h));
    }
    let now = st.now();
    let mut out = Vec::new();
    for (log, days, held) in logs {
        let name = match &log {
            LogKey::Organization => "org".to_string(),
            LogKey::Project(p) => p.clone(),
        };
        let mut r = LogRetention {
            log: name,
            days,
            held,
            retained_from: 0,
            removed: 0,
        };
        if !held {
            r.removed = one_log(st, &log, now - i64::from(days) * DAY_NS, days).await?;
        }
        let audit = st.audit.clone();
        let l = log.clone();
        r.retained_from = tokio::task::spawn_blocking(move || audit.retained_from(&l))
            .await
            .map_err(ApiError::internal)??;
        out.push(r);
    }
    Ok(out)
}

async fn one_log(st: &AppState, log: &LogKey, before_ns: i64, days: u32) -> Result<u64, ApiError> {
    let audit = st.audit.clone();
    let l = log.clone();
    let plan = tokio::task::spawn_blocking(move || audit.retention_plan(&l, before_ns))
        .await
        .map_err(ApiError::internal)??;
    let Some(plan) = plan else {
        let audit = st.audit.clone();
        let l = log.clone();
        tokio::task::spawn_blocking(move || audit.complete_retention(&l))
            .await
            .map_err(ApiError::internal)??;
        return Ok(0);
    };
    let project = match log {
        LogKey::Project(p) => Some(p.as_str()),
        LogKey::Organization => None,
    };
    let mut d = crate::bootstrap::system_draft(
        &st.organization,
        project,
        "audit.retention.apply",
        Resource {
            kind: "audit_log".into(),
            id: Some(project.unwrap_or("org").to_string()),
            name: None,
        },
    );
    d.request_parameters = Some(serde_json::json!({
        "entries_from": plan.from,
        "entries_to": plan.to,
        "before": audit::format_time_ns(before_ns),
        "days": days,
    }));
    let e = st.record(d).await?;
    // The event must be under a signed checkpoint before bundles go.
    let deadline = Instant::now() + CHECKPOINT_WAIT;
    loop {
        let audit = st.audit.clone();
        let l = log.clone();
        let size = tokio::task::spawn_blocking(move || audit.checkpoint(&l))
            .await
            .map_err(ApiError::internal)?
            .and_then(|b| merkle::Note::parse(&b).ok())
            .and_then(|n| merkle::Checkpoint::parse(n.text()).ok())
            .map_or(0, |c| c.size());
        if size > e.log_index {
            break;
        }
        if Instant::now() > deadline {
            tracing::warn!(log = ?log, "no checkpoint covers the retention event yet; retention deferred to the next sweep");
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let audit = st.audit.clone();
    let removed = plan.to - plan.from;
    tokio::task::spawn_blocking(move || audit.apply_retention(&plan))
        .await
        .map_err(ApiError::internal)??;
    Ok(removed)
}
