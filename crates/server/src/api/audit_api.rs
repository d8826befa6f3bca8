//! Audit endpoints: search (filters, both orders, cursor pagination), one
//! event by id, streamed export (NDJSON or CSV), and ingest of external
//! events (CI/CD deploys, scripts) in the same schema — with
//! `?wait=checkpoint`, answered once a signed checkpoint covers the event,
//! with that checkpoint and the event's receipt.
//!
//! A project's events are served under its path with `audit:read`
//! (or project admin); organization-level events under `/audit/...` to
//! organization admins.

use audit::{Change, Event, EventDraft, LogKey, Order, PrincipalKind, Query, Resource, Status};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use meta::Scope;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{JsonBody, Params, PathParams, ProjectPath};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, Kind};

// ---- shapes (documentation mirrors of audit::Event) --------------------------

/// An audit event (schema version 2; 1 for events written before); see
/// docs/audit-event-schema.md. Personal fields read `[erased]` once their
/// person was erased.
#[derive(Serialize, ToSchema)]
#[schema(as = Event)]
#[allow(dead_code)]
pub struct EventDoc {
    /// UUIDv7.
    id: String,
    schema_version: u32,
    /// Global sequence number (strictly increasing).
    seq: u64,
    /// Position in its own log (the project's, or the organization's).
    log_index: u64,
    /// When the log accepted it: RFC 3339, UTC, nanoseconds.
    time: String,
    organization: String,
    /// Absent for organization-level events.
    #[schema(nullable = false)]
    project: Option<String>,
    /// Schema version 2: `base64(SHA-256(salt ‖ value))` for each personal
    /// field (`principal.name`, `principal.id` of an anonymous caller,
    /// `resource.name` of a user, `source_ip`, `user_agent`): what the
    /// Merkle leaf holds instead of the value. Absent when empty.
    #[schema(nullable = false, required = false)]
    personal: Option<std::collections::BTreeMap<String, String>>,
    principal: PrincipalDoc,
    #[schema(nullable = false)]
    source_ip: Option<String>,
    #[schema(nullable = false)]
    user_agent: Option<String>,
    /// `service.resource.verb`.
    action: String,
    #[schema(nullable = false)]
    resource: Option<ResourceDoc>,
    #[schema(nullable = false)]
    request_id: Option<String>,
    result: OutcomeDoc,
    /// Absent when there were none (like every optional field here).
    #[schema(value_type = Object, nullable = false, required = false)]
    request_parameters: Option<Value>,
    #[schema(value_type = Object, nullable = false, required = false)]
    response_elements: Option<Value>,
    /// Absent when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    changes: Vec<ChangeDoc>,
    /// `flightdeck`, or what an external submitter named itself.
    event_source: String,
    #[schema(nullable = false)]
    event_time: Option<String>,
    #[schema(nullable = false)]
    external_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Principal)]
#[allow(dead_code)]
pub struct PrincipalDoc {
    /// `user`, `token`, `system` or `anonymous`.
    #[serde(rename = "type")]
    kind: String,
    id: String,
    /// Display name; absent when empty.
    #[schema(nullable = false)]
    name: Option<String>,
    #[schema(nullable = false)]
    token_id: Option<String>,
    /// `password`, `session`, `bearer`, `basic` or `none`.
    #[schema(nullable = false)]
    auth_method: Option<String>,
}

/// What an event is about. Events the server records itself may carry any
/// text here (e.g. a rejected name, as sent); see [`IngestResource`] for
/// what submitters may send.
#[derive(Serialize, ToSchema)]
#[schema(as = Resource)]
#[allow(dead_code)]
pub struct ResourceDoc {
    #[serde(rename = "type")]
    #[schema(min_length = 1, max_length = 100)]
    kind: String,
    #[schema(nullable = false, max_length = 200)]
    id: Option<String>,
    #[schema(nullable = false, max_length = 200)]
    name: Option<String>,
}

/// How an action ended.
#[derive(Serialize, ToSchema)]
#[schema(as = Outcome)]
#[allow(dead_code)]
pub struct OutcomeDoc {
    /// `success` or `failure`.
    #[schema(pattern = "^(success|failure)$")]
    status: String,
    #[schema(nullable = false, minimum = 100, maximum = 599)]
    http_status: Option<u16>,
    #[schema(nullable = false, max_length = 100)]
    error_code: Option<String>,
    #[schema(nullable = false, max_length = 2000)]
    error_message: Option<String>,
}

/// The resource of a submitted event: text without control characters.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestResource {
    #[serde(rename = "type")]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    kind: String,
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    id: Option<String>,
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    name: Option<String>,
}

/// The outcome of a submitted event.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestOutcome {
    /// `success` or `failure`.
    #[schema(pattern = "^(success|failure)$")]
    status: String,
    /// An HTTP status, 100–599.
    #[schema(minimum = 100, maximum = 599)]
    #[serde(default, deserialize_with = "http_status")]
    http_status: Option<u16>,
    #[schema(max_length = 100, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    #[serde(default)]
    error_code: Option<String>,
    #[schema(max_length = 2000, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    #[serde(default)]
    error_message: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[schema(as = Change)]
#[serde(deny_unknown_fields)]
pub struct ChangeDoc {
    #[schema(min_length = 1, max_length = 200)]
    field: String,
    /// Any JSON value (absent: null).
    #[serde(default)]
    before: Value,
    /// Any JSON value (absent: null).
    #[serde(default)]
    after: Value,
}

#[derive(Serialize, ToSchema)]
pub struct EventPage {
    #[schema(value_type = Vec<EventDoc>)]
    pub events: Vec<Event>,
    pub next_cursor: Option<String>,
}

/// Declares a query-parameter struct with the filters audit search and
/// export share, plus the given extra fields, so that each endpoint
/// documents (and accepts) exactly the parameters it takes.
macro_rules! audit_params {
    ($(#[$attr:meta])* $name:ident { $($extra:tt)* }) => {
        $(#[$attr])*
        #[derive(Deserialize, IntoParams, Default)]
        #[serde(deny_unknown_fields)]
        #[into_params(parameter_in = Query)]
        pub struct $name {
            /// Principal id (user id, token id, `system`).
            pub principal_id: Option<String>,
            /// `user`, `token`, `system` or `anonymous`.
            #[param(pattern = "^(user|token|system|anonymous)$")]
            pub principal_type: Option<String>,
            /// Exact action, e.g. `iam.token.create`.
            pub action: Option<String>,
            /// Action prefix, e.g. `iam.token.`.
            pub action_prefix: Option<String>,
            pub resource_type: Option<String>,
            pub resource_id: Option<String>,
            /// `success` or `failure`.
            #[param(pattern = "^(success|failure)$")]
            pub result: Option<String>,
            pub source_ip: Option<String>,
            /// RFC 3339 time, inclusive.
            #[param(format = DateTime)]
            pub from: Option<String>,
            /// RFC 3339 time, exclusive.
            #[param(format = DateTime)]
            pub to: Option<String>,
            /// Case-insensitive text anywhere in the event.
            pub q: Option<String>,
            /// `newest` (default) or `oldest` first.
            #[param(pattern = "^(newest|oldest)$")]
            pub order: Option<String>,
            $($extra)*
        }

        impl $name {
            /// The filters as a query of `log`; `cursor` and `limit` are
            /// the page to fetch (search only).
            fn filters(
                &self,
                log: LogKey,
                cursor: Option<String>,
                limit: usize,
            ) -> Result<Query, ApiError> {
                Filters {
                    principal_id: &self.principal_id,
                    principal_type: &self.principal_type,
                    action: &self.action,
                    action_prefix: &self.action_prefix,
                    resource_type: &self.resource_type,
                    resource_id: &self.resource_id,
                    result: &self.result,
                    source_ip: &self.source_ip,
                    from: &self.from,
                    to: &self.to,
                    q: &self.q,
                    order: &self.order,
                }
                .query(log, cursor, limit)
            }
        }
    };
}

audit_params! {
    /// Parameters of audit search.
    SearchParams {
        /// Opaque cursor from a previous page's `next_cursor` (empty: the first page).
        pub cursor: Option<String>,
        /// Page size, 1–1000 (default 100).
        #[param(minimum = 1, maximum = 1000)]
        pub limit: Option<u32>,
    }
}

audit_params! {
    /// Parameters of audit export (which streams every match: no paging).
    ExportParams {
        /// `ndjson` (default) or `csv`.
        #[param(pattern = "^(ndjson|csv)$")]
        pub format: Option<String>,
    }
}

/// The filters both parameter structs share, borrowed.
struct Filters<'a> {
    principal_id: &'a Option<String>,
    principal_type: &'a Option<String>,
    action: &'a Option<String>,
    action_prefix: &'a Option<String>,
    resource_type: &'a Option<String>,
    resource_id: &'a Option<String>,
    result: &'a Option<String>,
    source_ip: &'a Option<String>,
    from: &'a Option<String>,
    to: &'a Option<String>,
    q: &'a Option<String>,
    order: &'a Option<String>,
}

impl Filters<'_> {
    fn query(&self, log: LogKey, cursor: Option<String>, limit: usize) -> Result<Query, ApiError> {
        let time = |field: &str, v: &Option<String>| -> Result<Option<i64>, ApiError> {
            v.as_ref()
                .map(|t| {
                    super::parse_time_ns_clamped(t).ok_or_else(|| {
                        ApiError::bad_field(
                            field,
                            "not an RFC 3339 time (e.g. 2026-11-26T09:00:00Z)",
                        )
                    })
                })
                .transpose()
        };
        let principal_type = match self.principal_type.as_deref() {
            None => None,
            Some("user") => Some(PrincipalKind::User),
            Some("token") => Some(PrincipalKind::Token),
            Some("system") => Some(PrincipalKind::System),
            Some("anonymous") => Some(PrincipalKind::Anonymous),
            Some(_) => {
                return Err(ApiError::bad_field(
                    "principal_type",
                    "must be one of user, token, system, anonymous",
                ));
            }
        };
        let status = match self.result.as_deref() {
            None => None,
            Some("success") => Some(Status::Success),
            Some("failure") => Some(Status::Failure),
            Some(_) => return Err(ApiError::bad_field("result", "must be success or failure")),
        };
        let order = match self.order.as_deref() {
            None | Some("newest") => Order::NewestFirst,
            Some("oldest") => Order::OldestFirst,
            Some(_) => return Err(ApiError::bad_field("order", "must be newest or oldest")),
        };
        let from_ns = time("from", self.from)?;
        let to_ns = time("to", self.to)?;
        if let (Some(f), Some(t)) = (from_ns, to_ns)
            && f > t
        {
            return Err(ApiError::bad_field("to", "must not be before from"));
        }
        Ok(Query {
            log: Some(log),
            principal_id: self.principal_id.clone(),
            principal_type,
            action: self.action.clone(),
            action_prefix: self.action_prefix.clone(),
            resource_type: self.resource_type.clone(),
            resource_id: self.resource_id.clone(),
            status,
            source_ip: self.source_ip.clone(),
            from_ns,
            to_ns,
            text: self.q.clone().filter(|s| !s.is_empty()),
            order,
            cursor,
            limit,
        })
    }
}

impl SearchParams {
    fn query(&self, log: LogKey) -> Result<Query, ApiError> {
        let limit = match self.limit {
            None => 100,
            Some(n @ 1..=1000) => n as usize,
            Some(_) => return Err(ApiError::bad_field("limit", "must be between 1 and 1000")),
        };
        // An empty cursor is the first page, as if none was sent.
        let cursor = self.cursor.clone().filter(|c| !c.is_empty());
        self.filters(log, cursor, limit)
    }
}

// ---- search -------------------------------------------------------------------

async fn search(st: &AppState, q: Query) -> Result<Json<EventPage>, ApiError> {
    let audit = st.audit.clone();
    let page = tokio::task::spawn_blocking(move || audit.search(&q))
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(EventPage {
        events: page.events,
        next_cursor: page.next_cursor,
    }))
}

/// Search a project's audit events (newest first by default).
#[utoipa::path(get, path = "/api/flightdeck/v1/projects/{project}/audit/events", tag = "audit",
    params(ProjectPath, SearchParams),
    responses((status = 200, body = EventPage)))]
pub async fn search_project(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
    Params(p): Params<SearchParams>,
) -> Result<Json<EventPage>, ApiError> {
    meta::check_slug("project", &project)?;
    let q = p.query(LogKey::Project(project.clone()))?;
    audit_read(&st, &caller, &project).await?;
    search(&st, q).await
}

/// Search organization-level audit events (organization admins).
#[utoipa::path(get, path = "/api/flightdeck/v1/audit/events", tag = "audit", params(SearchParams),
    responses((status = 200, body = EventPage)))]
pub async fn search_org(
    State(st): State<AppState>,
    caller: Caller,
    Params(p): Params<SearchParams>,
) -> Result<Json<EventPage>, ApiError> {
    let q = p.query(LogKey::Organization)?;
    st.org_access(&caller, Scope::AuditRead).await?;
    search(&st, q).await
}

/// `audit:read` in the project, or project admin.
pub(super) async fn audit_read(
    st: &AppState,
    caller: &Caller,
    project: &str,
) -> Result<(), ApiError> {
    let implied = match &caller.who {
        crate::auth::Who::Token { token, .. } => {
            !token.scopes.contains(&Scope::AuditRead) && token.scopes.contains(&Scope::Admin)
        }
        _ => false,
    };
    let scope = if implied {
        Scope::Admin
    } else {
        Scope::AuditRead
    };
    st.project_access(caller, project, scope).await.map(|_| ())
}

// ---- one event ------------------------------------------------------------------

async fn get_event(st: &AppState, log: LogKey, id: String) -> Result<Json<Event>, ApiError> {
    let audit = st.audit.clone();
    let shown: String = id.chars().take(64).collect();
    let e = tokio::task::spawn_blocking(move || audit.get(&log, &id))
        .await
        .map_err(ApiError::internal)??;
    e.map(Json)
        .ok_or_else(|| ApiError::not_found(format!("audit event '{shown}'")))
}

/// One audit event of a project, by id.
#[utoipa::path(get, path = "/api/flightdeck/v1/projects/{project}/audit/events/{id}", tag = "audit",
    params(ProjectPath, ("id" = String, Path, description = "event id")),
    responses((status = 200, body = EventDoc)))]
pub async fn get_project_event(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, id)): PathParams<(String, String)>,
) -> Result<Json<Event>, ApiError> {
    meta::check_slug("project", &project)?;
    audit_read(&st, &caller, &project).await?;
    get_event(&st, LogKey::Project(project), id).await
}

/// One organization-level audit event, by id.
#[utoipa::path(get, path = "/api/flightdeck/v1/audit/events/{id}", tag = "audit",
    params(("id" = String, Path, description = "event id")),
    responses((status = 200, body = EventDoc)))]
pub async fn get_org_event(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<Event>, ApiError> {
    st.org_access(&caller, Scope::AuditRead).await?;
    get_event(&st, LogKey::Organization, id).await
}

// ---- export -----------------------------------------------------------------------

/// Columns of the CSV export, in order.
const CSV_COLUMNS: [&str; 19] = [
    "seq",
    "id",
    "time",
    "organization",
    "project",
    "principal_type",
    "principal_id",
    "principal_name",
    "token_id",
    "source_ip",
    "user_agent",
    "action",
    "resource_type",
    "resource_id",
    "resource_name",
    "request_id",
    "status",
    "http_status",
    "error_code",
];

fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

fn csv_row(e: &Event) -> String {
    let r = e.resource.as_ref();
    let fields: [String; 19] = [
        e.seq.to_string(),
        e.id.clone(),
        e.time.clone(),
        e.organization.clone(),
        e.project.clone().unwrap_or_default(),
        e.principal.kind.as_str().into(),
        e.principal.id.clone(),
        e.principal.name.clone(),
        e.principal.token_id.clone().unwrap_or_default(),
        e.source_ip.clone().unwrap_or_default(),
        e.user_agent.clone().unwrap_or_default(),
        e.action.clone(),
        r.map(|r| r.kind.clone()).unwrap_or_default(),
        r.and_then(|r| r.id.clone()).unwrap_or_default(),
        r.and_then(|r| r.name.clone()).unwrap_or_default(),
        e.request_id.clone().unwrap_or_default(),
        e.result.status.as_str().into(),
        e.result
            .http_status
            .map(|s| s.to_string())
            .unwrap_or_default(),
        e.result.error_code.clone().unwrap_or_default(),
    ];
    let mut line = String::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        csv_field(&mut line, f);
    }
    line.push_str("\r\n");
    line
}

async fn export(
    st: &AppState,
    caller: &Caller,
    project: Option<String>,
    p: ExportParams,
    log: LogKey,
) -> Result<Response, ApiError> {
    let csv = match p.format.as_deref() {
        None | Some("ndjson") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::bad_field("format", "must be ndjson or csv")),
    };
    let q = p.filters(log, None, audit::DEFAULT_LIMIT)?;
    // Exports are recorded: who took which slice of the trail out.
    let params = serde_json::json!({
        "format": if csv { "csv" } else { "ndjson" },
        "action": p.action, "action_prefix": p.action_prefix, "from": p.from, "to": p.to,
        "principal_id": p.principal_id, "q": p.q,
    });
    let d = st.draft(caller, project, None, Some(params), Ok(StatusCode::OK));
    st.record_for(caller, d).await?;

    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let audit = st.audit.clone();
    tokio::task::spawn_blocking(move || {
        let mut buf = String::new();
        if csv {
            buf.push_str(&CSV_COLUMNS.join(","));
            buf.push_str("\r\n");
        }
        for item in audit.export(q) {
            match item {
                Ok(e) => {
                    if csv {
                        buf.push_str(&csv_row(&e));
                    } else {
                        buf.push_str(&String::from_utf8_lossy(&e.canonical_bytes()));
                        buf.push('\n');
                    }
                }
                Err(err) => {
                    // Mid-stream failure: cut the body so the client sees an error.
                    let _ = tx.blocking_send(Err(std::io::Error::other(err.to_string())));
                    return;
                }
            }
            if buf.len() >= 64 * 1024
                && tx
                    .blocking_send(Ok(Bytes::from(std::mem::take(&mut buf))))
                    .is_err()
            {
                return;
            }
        }
        if !buf.is_empty() {
            let _ = tx.blocking_send(Ok(Bytes::from(buf)));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let ct = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    Ok(([(header::CONTENT_TYPE, ct)], Body::from_stream(stream)).into_response())
}

/// Export a project's matching events, streamed, as NDJSON (one canonical event per line) or CSV.
#[utoipa::path(get, path = "/api/flightdeck/v1/projects/{project}/audit/export", tag = "audit",
    params(ProjectPath, ExportParams),
    responses((status = 200, content((String = "application/x-ndjson"), (String = "text/csv")),
        description = "NDJSON events (one canonical event per line), or CSV with format=csv")))]
pub async fn export_project(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
    Params(p): Params<ExportParams>,
) -> Result<Response, ApiError> {
    meta::check_slug("project", &project)?;
    audit_read(&st, &caller, &project).await?;
    export(
        &st,
        &caller,
        Some(project.clone()),
        p,
        LogKey::Project(project),
    )
    .await
}

/// Export organization-level events, streamed (organization admins).
#[utoipa::path(get, path = "/api/flightdeck/v1/audit/export", tag = "audit", params(ExportParams),
    responses((status = 200, content((String = "application/x-ndjson"), (String = "text/csv")),
        description = "NDJSON events (one canonical event per line), or CSV with format=csv")))]
pub async fn export_org(
    State(st): State<AppState>,
    caller: Caller,
    Params(p): Params<ExportParams>,
) -> Result<Response, ApiError> {
    st.org_access(&caller, Scope::AuditRead).await?;
    export(&st, &caller, None, p, LogKey::Organization).await
}

// ---- ingest -------------------------------------------------------------------------

/// An event from an external system. The server stamps id, time, sequence,
/// the submitting principal, source IP and user agent.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestEvent {
    /// `service.resource.verb` (lower-case, at least three dot-separated parts).
    #[schema(pattern = "^[a-z0-9_-]{1,64}(\\.[a-z0-9_-]{1,64}){2,5}$")]
    pub action: String,
    /// Who reports it, e.g. `ci.github-actions`.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub event_source: String,
    /// When it happened, per the submitter (RFC 3339).
    #[schema(format = DateTime)]
    pub event_time: Option<String>,
    /// The submitter's own id for the event.
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub external_id: Option<String>,
    pub resource: Option<IngestResource>,
    /// Defaults to success.
    pub result: Option<IngestOutcome>,
    #[schema(value_type = Object, nullable, required = false)]
    pub request_parameters: Option<serde_json::Map<String, Value>>,
    #[schema(value_type = Object, nullable, required = false)]
    pub response_elements: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub changes: Vec<ChangeDoc>,
}

/// Most events one ingest request may carry (like CloudTrail Lake's
/// `PutAuditEvents`).
pub const MAX_BATCH_EVENTS: usize = 100;

/// The body of ingest: one event object (the original form), or
/// `{"events": [...]}` with 1 to [`MAX_BATCH_EVENTS`] of them. The two are
/// told apart by the object's first key: a single event has no `events`
/// field, so an object starting with `events` is a batch; the rest of the
/// object is parsed as it streams (no intermediate JSON tree), and a type
/// error inside a batch is named with its path (`events[3].result.status`).
pub enum IngestBody {
    One(Box<IngestEvent>),
    Batch(Vec<IngestEvent>),
}

impl<'de> Deserialize<'de> for IngestBody {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(IngestBodyVisitor)
    }
}

struct IngestBodyVisitor;

impl<'de> serde::de::Visitor<'de> for IngestBodyVisitor {
    type Value = IngestBody;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "an audit event object, or {{\"events\": [1 to {MAX_BATCH_EVENTS} event objects]}}"
        )
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<IngestBody, A::Error> {
        use serde::de::value::MapAccessDeserializer;
        let first = map.next_key::<String>()?;
        if first.as_deref() == Some("events") {
            let events: Vec<IngestEvent> = map.next_value()?;
            if let Some(k) = map.next_key::<String>()? {
                return Err(serde::de::Error::unknown_field(&k, &["events"]));
            }
            return Ok(IngestBody::Batch(events));
        }
        IngestEvent::deserialize(MapAccessDeserializer::new(Prepend { first, map }))
            .map(|e| IngestBody::One(Box::new(e)))
    }
}

/// A map whose first key was already read (to tell a batch from an event).
struct Prepend<A> {
    first: Option<String>,
    map: A,
}

impl<'de, A: serde::de::MapAccess<'de>> serde::de::MapAccess<'de> for Prepend<A> {
    type Error = A::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        use serde::de::IntoDeserializer;
        match self.first.take() {
            Some(k) => seed.deserialize(k.into_deserializer()).map(Some),
            None => self.map.next_key_seed(seed),
        }
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

/// Batch form of the ingest body (documentation of [`IngestBody`]).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct IngestBatch {
    /// 1 to 100 events, appended in this order; all are validated before
    /// any is recorded.
    #[schema(min_items = 1, max_items = 100)]
    events: Vec<IngestEvent>,
}

/// The ingest body: one event, or a batch (documentation of [`IngestBody`]).
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum IngestRequest {
    Event(Box<IngestEvent>),
    Batch(IngestBatch),
}

/// An HTTP status as a JSON integer. `105.0` is one too (JSON Schema's
/// `integer` is any number without a fraction), which serde's `u16` refuses.
fn http_status<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..=65535.0).contains(f))
            .map(|f| f as u64)
    });
    whole
        .and_then(|u| u16::try_from(u).ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("expected an HTTP status (100 to 599), got {n}")))
}

fn valid_action(a: &str) -> bool {
    let parts: Vec<&str> = a.split('.').collect();
    (3..=6).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 64
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        })
}

/// At most `max` characters (as JSON Schema's `maxLength` counts them), no
/// control characters.
fn bounded(field: &str, v: &Option<String>, max: usize) -> Result<(), ApiError> {
    match v {
        Some(s) if s.chars().count() > max => Err(ApiError::bad_field(
            field,
            format!("at most {max} characters"),
        )),
        Some(s) if s.chars().any(char::is_control) => Err(ApiError::bad_field(
            field,
            "control characters are not allowed",
        )),
        _ => Ok(()),
    }
}

impl IngestEvent {
    fn validate(&self) -> Result<(), ApiError> {
        if !valid_action(&self.action) {
            return Err(ApiError::bad_field(
                "action",
                "use service.resource.verb: 3 to 6 dot-separated parts of a-z, 0-9, '_' or '-'",
            ));
        }
        if self.event_source.is_empty() {
            return Err(ApiError::bad_field("event_source", "must not be empty"));
        }
        bounded("event_source", &Some(self.event_source.clone()), 100)?;
        if let Some(t) = &self.event_time
            && super::parse_time(t).is_none()
        {
            return Err(ApiError::bad_field("event_time", "not an RFC 3339 time"));
        }
        bounded("external_id", &self.external_id, 200)?;
        if let Some(r) = &self.resource {
            if r.kind.is_empty() {
                return Err(ApiError::bad_field("resource.type", "must not be empty"));
            }
            bounded("resource.type", &Some(r.kind.clone()), 100)?;
            bounded("resource.id", &r.id, 200)?;
            bounded("resource.name", &r.name, 200)?;
        }
        if let Some(o) = &self.result {
            if o.status != "success" && o.status != "failure" {
                return Err(ApiError::bad_field(
                    "result.status",
                    "must be success or failure",
                ));
            }
            if o.http_status.is_some_and(|c| !(100..=599).contains(&c)) {
                return Err(ApiError::bad_field(
                    "result.http_status",
                    "an HTTP status, 100 to 599",
                ));
            }
            bounded("result.error_code", &o.error_code, 100)?;
            bounded("result.error_message", &o.error_message, 2000)?;
        }
        for (i, c) in self.changes.iter().enumerate() {
            if c.field.is_empty() || c.field.chars().count() > 200 {
                return Err(ApiError::bad_field(
                    format!("changes[{i}].field"),
                    "1 to 200 characters",
                ));
            }
        }
        Ok(())
    }
}

/// Parameters of ingest.
#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IngestParams {
    /// `checkpoint`: answer only once a signed checkpoint covers the event
    /// (within about 1 s), with that checkpoint and the event's receipt.
    #[param(pattern = "^checkpoint$")]
    pub wait: Option<String>,
}

/// The answer of ingest with `wait=checkpoint`.
#[derive(Serialize, ToSchema)]
pub struct CheckpointedEvent {
    /// The stored event.
    #[schema(value_type = EventDoc)]
    pub event: Event,
    /// The event's position in the project's log (as in `event`).
    pub log_index: u64,
    /// Size of `checkpoint`'s tree (greater than `log_index`).
    pub tree_size: u64,
    /// A signed checkpoint (C2SP signed note) whose tree holds the event.
    pub checkpoint: String,
    /// The event's receipt against `checkpoint` (c2sp.org/tlog-proof@v1
    /// text with the entry bytes), for `flightdeck audit verify-receipt`.
    /// Absent only if it could not be read back (see the server log).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub receipt: Option<String>,
}

/// The answer of a batch ingest with `wait=checkpoint`.
#[derive(Serialize, ToSchema)]
pub struct CheckpointedBatch {
    /// The stored events, in the order sent.
    #[schema(value_type = Vec<EventDoc>)]
    pub events: Vec<Event>,
    /// Size of `checkpoint`'s tree (greater than every event's `log_index`).
    pub tree_size: u64,
    /// A signed checkpoint (C2SP signed note) whose tree holds every event
    /// of the batch: the first one published after the last was recorded.
    pub checkpoint: String,
    /// Each event's receipt against `checkpoint`, in the order of `events`
    /// (c2sp.org/tlog-proof@v1 text with the entry bytes); `null` only
    /// where one could not be read back (see the server log).
    pub receipts: Vec<Option<String>>,
}

/// The answer of a batch ingest: the stored events, in the order sent.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct StoredBatch {
    #[schema(value_type = Vec<EventDoc>)]
    events: Vec<Event>,
}

/// What ingest answers: the event, or with `wait=checkpoint` the event with
/// its checkpoint and receipt; for a batch, `{"events": [...]}`, or with
/// `wait=checkpoint` the events with one checkpoint and their receipts.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum IngestAnswer {
    Event(EventDoc),
    Checkpointed(CheckpointedEvent),
    Batch(StoredBatch),
    CheckpointedBatch(CheckpointedBatch),
}

/// A validation error of the event at `i` of a batch: its field is named
/// `events[i].<field>`.
fn in_batch(mut e: ApiError, i: usize) -> ApiError {
    let prefix = format!("events[{i}]");
    match e.field.take() {
        Some(f) => {
            let rest = e
                .message
                .strip_prefix(&format!("{f}: "))
                .unwrap_or(&e.message)
                .to_string();
            e.message = format!("{prefix}.{f}: {rest}");
            e.field = Some(format!("{prefix}.{f}"));
        }
        None => {
            e.message = format!("{prefix}: {}", e.message);
            e.field = Some(prefix);
        }
    }
    e
}

/// Append external events to a project's audit log (`audit:write`): one
/// event, or `{"events": [...]}` with 1 to 100 of them.
///
/// A batch is all or nothing: every event is validated (and sealed and
/// size-checked) before any is recorded; the first invalid one is a 400
/// naming `events[i].<field>`, and nothing of the batch is recorded (the
/// failed request is, like every 400). Otherwise each event is appended in
/// order (consecutive `log_index`es unless other requests interleave) and
/// fsynced before the answer, sharing group commits. The per-request body
/// limit (`limits.max_body_bytes`) applies to the whole batch.
///
/// With `wait=checkpoint` the answer comes once a signed checkpoint covers
/// the event (for a batch, its last event, hence all of them), and carries
/// it and the receipts.
#[utoipa::path(post, path = "/api/flightdeck/v1/projects/{project}/audit/events", tag = "audit",
    params(ProjectPath, IngestParams),
    request_body = IngestRequest, responses((status = 201, body = IngestAnswer,
        description = "One event: the stored event; with wait=checkpoint, `{event, log_index, tree_size, checkpoint, receipt}`. A batch: `{events}` in the order sent; with wait=checkpoint, `{events, tree_size, checkpoint, receipts}`")))]
pub async fn ingest_project(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
    Params(q): Params<IngestParams>,
    JsonBody(body): JsonBody<IngestBody>,
) -> Result<Response, ApiError> {
    meta::check_slug("project", &project)?;
    let p = st
        .project_access(&caller, &project, Scope::AuditWrite)
        .await?;
    let wait = match q.wait.as_deref() {
        None => false,
        Some("checkpoint") => true,
        Some(other) => {
            let shown: String = other.chars().take(40).collect();
            let e = ApiError::bad_field(
                "wait",
                format!("the only value is 'checkpoint' (got '{shown}')"),
            );
            return Err(st.fail(&caller, Some(p.name), None, e).await);
        }
    };
    let events = match body {
        IngestBody::One(body) => {
            if let Err(e) = body.validate() {
                return Err(st.fail(&caller, Some(p.name), None, e).await);
            }
            let d = ingest_draft(&st, &caller, &p.name, *body);
            let e = st.record_for(&caller, d).await?;
            if !wait {
                return Ok((StatusCode::CREATED, StoredEvent(e)).into_response());
            }
            let answer = wait_for_checkpoint(&st, LogKey::Project(p.name), e).await?;
            return Ok((StatusCode::CREATED, Json(answer)).into_response());
        }
        IngestBody::Batch(events) => events,
    };
    let checked = if events.is_empty() {
        Err(ApiError::bad_field("events", "at least one event"))
    } else if events.len() > MAX_BATCH_EVENTS {
        Err(ApiError::bad_field(
            "events",
            format!(
                "at most {MAX_BATCH_EVENTS} events per request (got {}): split the batch",
                events.len()
            ),
        ))
    } else {
        events
            .iter()
            .enumerate()
            .try_for_each(|(i, e)| e.validate().map_err(|err| in_batch(err, i)))
    };
    if let Err(e) = checked {
        return Err(st.fail(&caller, Some(p.name), None, e).await);
    }
    let drafts = events
        .into_iter()
        .map(|e| ingest_draft(&st, &caller, &p.name, e))
        .collect();
    let events = match st.record_all_for(&caller, drafts).await {
        Ok(events) => events,
        Err(e) if !e.audited => return Err(st.fail(&caller, Some(p.name), None, e).await),
        Err(e) => return Err(e),
    };
    if !wait {
        return Ok((StatusCode::CREATED, StoredEvents(events)).into_response());
    }
    let events = events.into_iter().map(|a| a.event).collect();
    let answer = wait_for_batch_checkpoint(&st, LogKey::Project(p.name), events).await?;
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// The audit event draft of one validated submitted event.
fn ingest_draft(st: &AppState, caller: &Caller, project: &str, body: IngestEvent) -> EventDraft {
    let mut d = st.draft(
        caller,
        Some(project.to_string()),
        None,
        None,
        Ok(StatusCode::CREATED),
    );
    d.action = body.action;
    d.event_source = body.event_source;
    d.event_time = body.event_time;
    d.external_id = body.external_id;
    d.resource = body.resource.map(|r| Resource {
        kind: r.kind,
        id: r.id,
        name: r.name,
    });
    if let Some(o) = body.result {
        d.result = audit::Outcome {
            status: if o.status == "failure" {
                Status::Failure
            } else {
                Status::Success
            },
            http_status: o.http_status,
            error_code: o.error_code,
            error_message: o.error_message,
        };
    }
    d.request_parameters = body
        .request_parameters
        .map(|m| audit::cap_freeform(redact(Value::Object(m))));
    d.response_elements = body
        .response_elements
        .map(|m| audit::cap_freeform(redact(Value::Object(m))));
    d.changes = body
        .changes
        .into_iter()
        .map(|c| Change {
            field: c.field,
            before: redact(c.before),
            after: redact(c.after),
        })
        .collect();
    d
}

/// Waits (without a thread: a oneshot the checkpointer completes) until a
/// signed checkpoint covers the recorded event `e`, then reads its receipt.
/// The event is recorded whatever happens here, so a failure says so and
/// is marked audited.
async fn wait_for_checkpoint(
    st: &AppState,
    log: LogKey,
    e: Event,
) -> Result<CheckpointedEvent, ApiError> {
    let what = format!(
        "event {} was recorded at log_index {}, but {{why}}; do not send it again: fetch its receipt later (GET .../audit/receipts/{})",
        e.id, e.log_index, e.id
    );
    let cp = checkpoint_covering(st, &log, e.log_index, what).await?;
    let mut receipts = receipts(st, log, &[e.log_index], &cp).await;
    Ok(CheckpointedEvent {
        log_index: e.log_index,
        tree_size: cp.size,
        checkpoint: cp.note_text(),
        receipt: receipts.pop().flatten(),
        event: e,
    })
}

/// [`wait_for_checkpoint`] for a batch: the checkpoint covering its last
/// (highest) `log_index` covers them all.
async fn wait_for_batch_checkpoint(
    st: &AppState,
    log: LogKey,
    events: Vec<Event>,
) -> Result<CheckpointedBatch, ApiError> {
    let indexes: Vec<u64> = events.iter().map(|e| e.log_index).collect();
    let last = indexes.iter().copied().max().unwrap_or(0);
    let what = format!(
        "the {} events were recorded (log_index {} to {last}), but {{why}}; do not send them again: fetch their receipts later (GET .../audit/receipts/{{index}})",
        events.len(),
        indexes.iter().copied().min().unwrap_or(0),
    );
    let cp = checkpoint_covering(st, &log, last, what).await?;
    let receipts = receipts(st, log, &indexes, &cp).await;
    Ok(CheckpointedBatch {
        events,
        tree_size: cp.size,
        checkpoint: cp.note_text(),
        receipts,
    })
}

/// The first signed checkpoint of `log` whose tree holds `log_index`, or a
/// 503 (marked audited: the events are recorded) built from `what`, whose
/// `{why}` says what went wrong.
async fn checkpoint_covering(
    st: &AppState,
    log: &LogKey,
    log_index: u64,
    what: String,
) -> Result<audit::proof::SignedCheckpoint, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    st.audit.when_checkpointed(
        log,
        log_index + 1,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    let limit = st.opts.checkpoint_wait;
    let unavailable = |why: String| {
        ApiError::new(
            Kind::Unavailable,
            "checkpoint_unavailable",
            what.replace("{why}", &why),
        )
        .audited()
    };
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(Ok(cp))) => Ok(cp),
        Ok(Ok(Err(err))) => Err(unavailable(format!("no checkpoint will cover it: {err}"))),
        Ok(Err(_)) => Err(unavailable("the checkpointer stopped".into())),
        Err(_) => Err(unavailable(format!(
            "no signed checkpoint covered it within {} s",
            limit.as_secs_f64()
        ))),
    }
}

/// The receipts of `indexes` against `cp`, read on one blocking thread;
/// `None` where one cannot be read back (logged).
async fn receipts(
    st: &AppState,
    log: LogKey,
    indexes: &[u64],
    cp: &audit::proof::SignedCheckpoint,
) -> Vec<Option<String>> {
    let audit = st.audit.clone();
    let (cp, idx) = (cp.clone(), indexes.to_vec());
    let n = idx.len();
    let read = move || {
        idx.iter()
            .map(|&i| match audit.receipt_at(&log, i, &cp) {
                Ok(r) => Some(String::from_utf8_lossy(&r.to_bytes()).into_owned()),
                Err(err) => {
                    tracing::error!(error = %err, log_index = i, "cannot read back the receipt of a checkpointed event");
                    None
                }
            })
            .collect::<Vec<_>>()
    };
    match tokio::task::spawn_blocking(read).await {
        Ok(r) => r,
        Err(err) => {
            tracing::error!(error = %err, "bug: the receipt task failed");
            vec![None; n]
        }
    }
}

/// Events answered as acknowledged: `{"events":[...]}` with each event in
/// RFC 8785 canonical form (as [`StoredEvent`]); the whole answer is
/// canonical JSON too.
pub struct StoredEvents(pub Vec<audit::Acked>);

impl IntoResponse for StoredEvents {
    fn into_response(self) -> Response {
        let mut out = Vec::with_capacity(self.0.len() * 1024 + 16);
        out.extend_from_slice(b"{\"events\":[");
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // The encoding prepared with the leaf: a copy, not a re-encode.
            e.write_canonical(&mut out);
        }
        out.extend_from_slice(b"]}");
        ([(header::CONTENT_TYPE, "application/json")], out).into_response()
    }
}

/// An event answered as acknowledged, in RFC 8785 canonical form written by
/// the audit crate's own encoder (no serde tree). Its Merkle leaf is these
/// bytes without the personal fields listed in `personal`
/// ([`audit::Event::leaf_bytes`]).
pub struct StoredEvent(pub Event);

impl IntoResponse for StoredEvent {
    fn into_response(self) -> Response {
        (
            [(header::CONTENT_TYPE, "application/json")],
            self.0.canonical_bytes(),
        )
            .into_response()
    }
}

/// Replaces values under secret-looking keys, and anything that looks like
/// a Flightdeck token, by `[REDACTED]`.
pub fn redact(mut v: Value) -> Value {
    redact_in_place(&mut v);
    v
}

/// [`redact`] on a value in place: no map is rebuilt, no key lower-cased
/// into a new string.
fn redact_in_place(v: &mut Value) {
    const SECRET_KEYS: [&str; 10] = [
        "password",
        "passwd",
        "secret",
        "token",
        "authorization",
        "api_key",
        "apikey",
        "private_key",
        "credential",
        "cookie",
    ];
    let redacted = || Value::String("[REDACTED]".into());
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if SECRET_KEYS.iter().any(|s| contains_ignore_ascii_case(k, s)) {
                    *v = redacted();
                } else {
                    redact_in_place(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_in_place),
        Value::String(s) if s.contains(meta::secrets::TOKEN_PREFIX) && looks_like_token(s) => {
            *v = redacted();
        }
        _ => {}
    }
}

/// Whether `hay` contains `needle` (lower-case ASCII), ignoring ASCII case.
fn contains_ignore_ascii_case(hay: &str, needle: &str) -> bool {
    hay.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

fn looks_like_token(s: &str) -> bool {
    s.match_indices(meta::secrets::TOKEN_PREFIX).any(|(i, _)| {
        let rest = &s[i + 3..];
        rest.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .count()
            >= 40
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_secret_keys_and_token_lookalikes() {
        let t = meta::secrets::new_token();
        let v = serde_json::json!({"Password": "x", "nested": [{"api_key": 1}], "note": format!("leaked {t}"), "ok": "fd_short"});
        let r = redact(v);
        assert_eq!(r["Password"], "[REDACTED]");
        assert_eq!(r["nested"][0]["api_key"], "[REDACTED]");
        assert_eq!(r["note"], "[REDACTED]");
        assert_eq!(r["ok"], "fd_short");
    }

    #[test]
    fn actions_need_three_parts() {
        assert!(valid_action("ci.deploy.start"));
        assert!(valid_action("ci.k8s.deployment.rollout"));
        assert!(!valid_action("deploy"));
        assert!(!valid_action("ci..start"));
        assert!(!valid_action("CI.Deploy.Start"));
    }

    fn check_status(body: &str, expected: Result<Option<u16>, &str>) {
        let r = crate::api::parse_json::<IngestOutcome>(body.as_bytes());
        match (r, expected) {
            (Ok(o), Ok(want)) => assert_eq!(o.http_status, want, "{body}"),
            (Err(e), Err(want)) => assert!(e.message.contains(want), "{body}: {}", e.message),
            (r, want) => panic!(
                "{body}: got {:?}, want {want:?}",
                r.map(|o| o.http_status).map_err(|e| e.message)
            ),
        }
    }

    #[test]
    fn http_status_is_any_whole_json_number() {
        check_status(r#"{"status":"success"}"#, Ok(None));
        check_status(r#"{"status":"success","http_status":201}"#, Ok(Some(201)));
        check_status(r#"{"status":"success","http_status":105.0}"#, Ok(Some(105)));
        check_status(
            r#"{"status":"success","http_status":105.5}"#,
            Err("HTTP status"),
        );
        check_status(
            r#"{"status":"success","http_status":2147483646}"#,
            Err("HTTP status"),
        );
        check_status(
            r#"{"status":"success","http_status":-1}"#,
            Err("HTTP status"),
        );
    }

    /// What the ingest body parses to: `Ok(Some(n))` a batch of n, `Ok(None)`
    /// one event, `Err(field)` the field a parse error names.
    fn check_body(body: &str, expected: Result<Option<usize>, &str>) {
        let got = match crate::api::parse_json::<IngestBody>(body.as_bytes()) {
            Ok(IngestBody::One(_)) => Ok(None),
            Ok(IngestBody::Batch(v)) => Ok(Some(v.len())),
            Err(e) => Err(e.field.unwrap_or_default()),
        };
        assert_eq!(got, expected.map_err(String::from), "{body}");
    }

    #[test]
    fn ingest_body_is_one_event_or_a_batch() {
        let ev = r#"{"action":"ci.deploy.finish","event_source":"ci"}"#;
        check_body(ev, Ok(None));
        check_body(
            r#"{"event_source":"ci","result":{"status":"success"},"action":"a.b.c"}"#,
            Ok(None),
        );
        check_body(&format!(r#"{{"events":[{ev},{ev},{ev}]}}"#), Ok(Some(3)));
        check_body(r#"{"events":[]}"#, Ok(Some(0)));
        check_body(r#"{"action":5,"event_source":"ci"}"#, Err("action"));
        check_body(r#"{"event_source":"ci","nope":1}"#, Err("nope"));
        check_body(
            &format!(
                r#"{{"events":[{ev},{{"action":"a.b.c","event_source":"x","result":{{"status":7}}}}]}}"#
            ),
            Err("events[1].result.status"),
        );
        // A key beside `events` is refused at the top level ("unknown
        // field `action`, expected `events`"), without a field path.
        check_body(&format!(r#"{{"events":[{ev}],"action":"a.b.c"}}"#), Err(""));
        check_body(r#"{"events":"all"}"#, Err("events"));
    }

    #[test]
    fn batch_errors_name_the_event() {
        let e = in_batch(ApiError::bad_field("action", "bad"), 57);
        assert_eq!(e.field.as_deref(), Some("events[57].action"));
        assert_eq!(e.message, "events[57].action: bad");
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let mut s = String::new();
        csv_field(&mut s, "a,\"b\"");
        assert_eq!(s, "\"a,\"\"b\"\"\"");
    }
}
