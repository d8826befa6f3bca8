//! The Prometheus-compatible data plane: remote write and OTLP ingest, and
//! the Prometheus HTTP API read paths, each at its canonical path so that
//! Prometheus, the OpenTelemetry Collector and Grafana work unchanged.
//!
//! Routes here authenticate like the management API (Bearer, or basic
//! auth with the token as password; failures are audited), but a data
//! request acts in exactly one project: a project token's own project
//! (tokens never reach another project's data, org admins included), or
//! for a logged-in user the project named by the `X-Scope-OrgID` header
//! (the tenant header Mimir and Loki clients already send). A token may
//! send the header too; naming another project is then refused like any
//! access to that project. Successful data-plane requests are not audit
//! events (they are counted in `flightdeck_*` metrics); denials are.

pub mod api;
pub mod engine;
pub mod expr;
pub mod gzip;
pub mod read;
pub mod select;
pub mod status;
pub mod write;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use meta::Scope;

use crate::AppState;
use crate::auth::{self, Caller, Who};
use api::{ErrorType, PromError};

/// The tenant header naming a project (as Mimir and Loki use it).
pub const PROJECT_HEADER: &str = "x-scope-orgid";

/// The metric store and its ingest settings, shared by the handlers.
#[derive(Clone)]
pub struct MetricsStore {
    pub db: Arc<tsdb::Db>,
    /// Limits of projects without their own entry in `project_limits`.
    pub limits: ingest::validate::Limits,
    pub project_limits: HashMap<String, ingest::validate::Limits>,
    /// `tsdb::Options::max_series_per_project`, named in refusals.
    pub max_series_per_project: usize,
    /// Projects with a series limit of their own (set in the store too).
    pub project_series: HashMap<String, usize>,
    /// Largest request body, compressed and after decompression.
    pub max_request_bytes: usize,
    /// The scrape manager, for `/api/v1/targets` (set once at start).
    pub scrape: Option<Arc<agent::scrape::Manager>>,
    /// The project of each scrape job (dropped targets carry only the job).
    pub scrape_jobs: HashMap<String, String>,
    /// Lookback of instant selectors (Prometheus' `--query.lookback-delta`).
    pub lookback_ms: i64,
    /// The effective settings shown at `/api/v1/status/flags`, under
    /// Prometheus' flag names where one exists (the binary builds it from
    /// its configuration; see [`status`]).
    pub flags: BTreeMap<String, String>,
    /// PromQL limits: max samples per query, timeout (the lookback above wins).
    pub query: promql::EngineOptions,
}

impl MetricsStore {
    pub fn series_limit_for(&self, project: &str) -> usize {
        self.project_series
            .get(project)
            .copied()
            .unwrap_or(self.max_series_per_project)
    }

    pub fn job_project(&self, job: &str) -> Option<&str> {
        self.scrape_jobs.get(job).map(String::as_str)
    }

    pub fn limits_for(&self, project: &str) -> &ingest::validate::Limits {
        self.project_limits.get(project).unwrap_or(&self.limits)
    }
}

/// The caller of a data-plane request and the one project it acts in.
#[derive(Clone, Debug)]
pub struct DataCaller {
    pub caller: Caller,
    pub project: meta::Project,
}

/// What a path does: its audit action and the scope it needs.
fn classify(method: &Method, route: Option<&str>) -> (&'static str, Scope) {
    match (method.as_str(), route) {
        ("POST", Some("/api/v1/write")) | ("POST", Some("/v1/metrics")) => {
            ("metrics.write", Scope::MetricsWrite)
        }
        ("POST", Some("/loki/api/v1/push")) | ("POST", Some("/v1/logs")) => {
            ("logs.write", Scope::LogsWrite)
        }
        (_, Some(r)) if r.starts_with("/loki/") => ("logs.read", Scope::LogsRead),
        _ => ("metrics.read", Scope::MetricsRead),
    }
}

/// Authenticates, picks the project and checks the scope; then runs the
/// handler with a [`DataCaller`] in the request's extensions.
pub async fn data_layer(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let (action, scope) = classify(req.method(), route.as_deref());
    let meta = auth::request_meta(&req, action.to_string());
    let caller = match auth::authenticate(&st, req.headers(), meta, false).await {
        Ok(c) => c,
        Err(e) => return PromError::from(e).into_response(),
    };
    let header = req
        .headers()
        .get(PROJECT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let slug = match (&caller.who, header) {
        // `/metrics` is the default project's host and server metrics.
        _ if route.as_deref() == Some("/metrics") => meta::DEFAULT_PROJECT.to_string(),
        (_, Some(h)) => h,
        (Who::Token { token, .. }, None) => token.project.clone(),
        (_, None) => {
            return PromError::bad_data(format!(
                "name the project in the {PROJECT_HEADER} header (session callers act in no project by default)"
            ))
            .into_response();
        }
    };
    let project = match st.project_access(&caller, &slug, scope).await {
        Ok(p) => p,
        Err(e) => return PromError::from(e).into_response(),
    };
    req.extensions_mut().insert(DataCaller { caller, project });
    next.run(req).await
}

/// Records `flightdeck_http_request_duration_seconds` for every routed request.
pub async fn timing_layer(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().clone();
    let start = Instant::now();
    let resp = next.run(req).await;
    st.telemetry.observe(
        crate::telemetry::HTTP_DURATION,
        &[&route, method.as_str(), resp.status().as_str()],
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// The store, or 503 when the server runs without one.
pub(crate) fn store(st: &AppState) -> Result<Arc<MetricsStore>, PromError> {
    st.metrics.clone().ok_or_else(|| {
        PromError::new(
            ErrorType::Unavailable,
            "the metric store is not enabled on this server",
        )
    })
}

/// The data-plane routes, behind [`data_layer`].
pub fn routes(st: AppState) -> Router<AppState> {
    let max = st
        .metrics
        .as_ref()
        .map_or(st.opts.max_body_bytes, |m| m.max_request_bytes);
    Router::new()
        .route("/api/v1/write", post(write::remote_write))
        .route("/v1/metrics", post(write::otlp_metrics))
        .route("/api/v1/query", get(read::query).post(read::query))
        .route(
            "/api/v1/query_range",
            get(read::query_range).post(read::query_range),
        )
        .route("/api/v1/series", get(read::series).post(read::series))
        .route("/api/v1/labels", get(read::labels).post(read::labels))
        .route("/api/v1/label/{name}/values", get(read::label_values))
        .route("/api/v1/metadata", get(read::metadata))
        .route(
            "/api/v1/query_exemplars",
            get(expr::query_exemplars).post(expr::query_exemplars),
        )
        .route(
            "/api/v1/format_query",
            get(expr::format_query).post(expr::format_query),
        )
        .route(
            "/api/v1/parse_query",
            get(expr::parse_query).post(expr::parse_query),
        )
        .route("/api/v1/status/buildinfo", get(read::buildinfo))
        .route("/api/v1/status/runtimeinfo", get(status::runtimeinfo))
        .route("/api/v1/status/flags", get(status::flags))
        .route("/api/v1/status/tsdb", get(read::tsdb_status))
        .route("/api/v1/targets", get(read::targets))
        .route("/metrics", get(read::self_metrics))
        .layer(axum::middleware::from_fn_with_state(st.clone(), data_layer))
        // Outside authentication, so that refusals are compressed too.
        .layer(axum::middleware::from_fn(gzip::layer))
        .layer(DefaultBodyLimit::max(max))
}

/// A form body, if the request carries one (`POST` of the query API).
pub(crate) fn is_form(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .starts_with("application/x-www-form-urlencoded")
        })
}

/// Hands scraped batches to the store through [`write::ingest_batch`]
/// (the same validation and limits as a remote write).
pub struct StoreSink(pub AppState);

impl agent::scrape::Sink for StoreSink {
    fn write(&self, project: &str, batch: model::WriteBatch) -> Result<(), String> {
        let exists = self
            .0
            .meta
            .read(|tx| tx.project(project).map(|_| ()))
            .is_ok();
        if !exists {
            return Err(format!(
                "project '{project}' does not exist: create it, or change the job's `project`"
            ));
        }
        write::ingest_batch(&self.0, project, "scrape", batch).map_err(|e| e.message)
    }
}
