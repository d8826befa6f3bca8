//! Flightdeck's HTTP face: axum routers, authentication, tenancy checks,
//! JSON shapes, the one mapping from errors to HTTP status, and the
//! OpenAPI document.
//!
//! This is the only crate that knows HTTP or JSON request shapes. It is not
//! where data lives: identity rows are in `meta`, audit events in `audit`.
//!
//! Every request under `/api/flightdeck/v1/` passes [`auth::layer`] once:
//! it authenticates, stamps a request id, and after the handler makes sure
//! every mutating call left an audit event (a catch-all for failures that
//! never reached a handler, like malformed JSON). Handlers that change state
//! go through [`AppState::mutate`], which commits only once the change's
//! audit event is durable.

pub mod api;
pub mod auth;
pub mod bootstrap;
pub mod cache;
pub mod error;
pub mod hostlogs;
pub mod listen;
pub mod loki;
pub mod openapi;
pub mod prom;
mod ratelimit;
pub mod retention;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

pub use error::{ApiError, Kind};

/// Marks a response whose audit event has been written already.
#[derive(Clone, Copy, Debug)]
pub struct AuditRecorded;

/// Server settings that come from the configuration.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Largest request body accepted (after decompression), in bytes.
    pub max_body_bytes: usize,
    /// Lifetime of a UI session.
    pub session_ttl: Duration,
    /// Failed logins allowed per source IP, and per user name, in
    /// `login_window` before answers become 429.
    pub login_max_failures: u32,
    pub login_window: Duration,
    /// How often the expiry of tokens is checked and recorded.
    pub expiry_check_interval: Duration,
    /// Set the `Secure` attribute on the session cookie (behind TLS).
    pub secure_cookies: bool,
    /// Audit retention in days for projects without their own setting
    /// (and for the organization log).
    pub audit_retention_days: u32,
    /// How often the retention sweep runs.
    pub retention_check_interval: Duration,
    /// How long `POST .../audit/events?wait=checkpoint` waits for a signed
    /// checkpoint covering the event (they come within the audit log's
    /// checkpoint interval, 1 s, unless the tlog cannot be written) before
    /// answering 503. Not a configuration key; tests shorten it.
    pub checkpoint_wait: Duration,
    /// Witness keys whose cosignatures of the audit logs' checkpoints are
    /// accepted (`audit.witnesses`); none: every push is refused.
    pub witnesses: Vec<merkle::CosignatureVerifier>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_body_bytes: 1 << 20,
            session_ttl: Duration::from_secs(12 * 3600),
            login_max_failures: 10,
            login_window: Duration::from_secs(300),
            expiry_check_interval: Duration::from_secs(10),
            secure_cookies: false,
            audit_retention_days: 400,
            retention_check_interval: Duration::from_secs(3600),
            checkpoint_wait: Duration::from_secs(30),
            witnesses: Vec::new(),
        }
    }
}

/// A clock returning unix nanoseconds; injected so tests never sleep.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap_or(i64::MAX)
    })
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub meta: Arc<meta::Meta>,
    pub audit: audit::AuditLog,
    pub organization: String,
    pub opts: Arc<ServerOptions>,
    pub clock: Clock,
    pub(crate) limiter: Arc<ratelimit::LoginLimiter>,
    /// Verified tokens and granted accesses, valid while the metadata is
    /// unchanged (see [`cache`]).
    pub cache: Arc<cache::MetaCache>,
    /// The metric store (none: the data-plane routes answer 503).
    pub metrics: Option<Arc<prom::MetricsStore>>,
    /// The log store and its ingest settings (none: the log routes answer
    /// 503). `logs.store` is the `logstore::Store` itself.
    pub logs: Option<Arc<loki::Logs>>,
    /// `flightdeck_*` metrics.
    pub telemetry: Arc<telemetry::Telemetry>,
    /// When this state was made (the server's start), unix ns from `clock`.
    pub started_ns: i64,
}

impl AppState {
    pub fn new(
        meta: Arc<meta::Meta>,
        audit: audit::AuditLog,
        organization: String,
        opts: ServerOptions,
        clock: Clock,
    ) -> AppState {
        let limiter = Arc::new(ratelimit::LoginLimiter::new(
            opts.login_max_failures,
            opts.login_window,
        ));
        let started_ns = clock();
        AppState {
            started_ns,
            meta,
            audit,
            organization,
            opts: Arc::new(opts),
            clock,
            limiter,
            cache: Arc::new(cache::MetaCache::default()),
            metrics: None,
            logs: None,
            telemetry: Arc::new(telemetry::Telemetry::default()),
        }
    }

    /// The same state with the scrape manager shown at `/api/v1/targets`.
    pub fn with_scrape(mut self, m: Arc<agent::scrape::Manager>) -> AppState {
        if let Some(store) = self.metrics.take() {
            // A copy: the scrape sink already holds the state without it.
            let mut store = (*store).clone();
            store.scrape = Some(m);
            self.metrics = Some(Arc::new(store));
        }
        self
    }

    /// The same state with a metric store.
    pub fn with_metrics(mut self, m: prom::MetricsStore) -> AppState {
        self.metrics = Some(Arc::new(m));
        self
    }

    /// The same state with a log store.
    pub fn with_logs(mut self, l: loki::Logs) -> AppState {
        self.logs = Some(Arc::new(l));
        self
    }

    pub fn now(&self) -> i64 {
        (self.clock)()
    }
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let api = api::routes(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::layer,
        ))
        .layer(DefaultBodyLimit::max(state.opts.max_body_bytes));
    Router::new()
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .nest(auth::API_PREFIX, api)
        .merge(prom::routes(state.clone()))
        .merge(loki::routes(state.clone()))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            prom::timing_layer,
        ))
        .fallback(not_found)
        .with_state(state)
}

async fn healthy() -> &'static str {
    "Flightdeck is Healthy.\n"
}

async fn ready(axum::extract::State(st): axum::extract::State<AppState>) -> impl IntoResponse {
    if st.audit.is_poisoned() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Flightdeck is not ready: the audit log failed and refuses writes; see the server log.\n",
        )
    } else {
        (StatusCode::OK, "Flightdeck is Ready.\n")
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("path {}", uri.path()))
}

/// Serves until `shutdown` resolves, then drains connections. Request
/// heads must arrive within [`listen::HEADER_READ_TIMEOUT`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tokio::spawn(auth::expiry_sweeper(state.clone()));
    tokio::spawn(retention::sweeper(state.clone()));
    tokio::spawn(loki::maintenance_loop(state.clone()));
    listen::serve_router(
        listener,
        router(state),
        listen::HEADER_READ_TIMEOUT,
        shutdown,
    )
    .await
}
