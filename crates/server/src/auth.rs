//! Authentication, authorization and the audit plumbing every request uses.
//!
//! * [`layer`] runs once per API request: it stamps a request id,
//!   authenticates (Bearer token, basic auth with the token as password, or
//!   the session cookie plus CSRF header), records a token's first use, and
//!   afterwards writes a catch-all audit event for any mutating request
//!   whose handler did not record one (malformed JSON, unknown routes…).
//! * [`AppState::project_access`] and [`AppState::org_access`] are the one
//!   place where "may this caller do that here" is decided; a denial is
//!   audited before it is answered. Projects a caller cannot see answer 404,
//!   exactly like projects that do not exist.
//! * [`AppState::mutate`] commits a metadata change only once its audit
//!   event is durable, and records failures too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use audit::{AuthMethod, Change, EventDraft, Outcome, Principal, PrincipalKind, Resource, Status};
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, OriginalUri, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use meta::{MetaError, Scope, Tx, WriteError};

use crate::error::{ApiError, ErrorBody, Kind};
use crate::{AppState, AuditRecorded};

/// Name of the UI session cookie.
pub const SESSION_COOKIE: &str = "fd_session";
/// Header carrying the CSRF token on state-changing session requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Header carrying the request id on every answer.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Prefix of the management API.
pub const API_PREFIX: &str = "/api/flightdeck/v1";

/// Facts about the request that every audit event repeats.
#[derive(Clone, Debug)]
pub struct RequestMeta {
    pub request_id: String,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub method: Method,
    /// The route template, e.g. `/api/flightdeck/v1/projects/{project}`.
    pub route: Option<String>,
    /// The action this route performs, e.g. `iam.token.create`.
    pub action: String,
    /// The `{project}` path segment, if the route has one.
    pub path_project: Option<String>,
    /// Set once a handler has written this request's audit event.
    pub recorded: Arc<AtomicBool>,
}

/// Who is calling.
#[derive(Clone, Debug)]
pub enum Who {
    Anonymous,
    User {
        user: meta::User,
        method: AuthMethod,
        /// The session's CSRF token (session callers only).
        csrf: Option<String>,
    },
    Token {
        token: meta::Token,
        method: AuthMethod,
    },
}

/// The authenticated caller of a request; handlers take it as an extractor.
#[derive(Clone, Debug)]
pub struct Caller {
    pub who: Who,
    pub req: RequestMeta,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::internal("bug: route outside the auth layer"))
    }
}

impl Caller {
    /// The caller as an audit principal.
    pub fn principal(&self) -> Principal {
        match &self.who {
            Who::Anonymous => Principal {
                kind: PrincipalKind::Anonymous,
                id: "anonymous".into(),
                name: "anonymous".into(),
                token_id: None,
                auth_method: Some(AuthMethod::None),
            },
            Who::User { user, method, .. } => Principal {
                kind: PrincipalKind::User,
                id: user.id.clone(),
                name: user.name.clone(),
                token_id: None,
                auth_method: Some(*method),
            },
            Who::Token { token, method } => Principal {
                kind: PrincipalKind::Token,
                id: token.id.clone(),
                name: token.name.clone(),
                token_id: Some(token.id.clone()),
                auth_method: Some(*method),
            },
        }
    }

    /// An org admin: a user flagged so, or an org-admin token with the `admin` scope.
    pub fn is_org_admin(&self) -> bool {
        match &self.who {
            Who::User { user, .. } => user.org_admin,
            Who::Token { token, .. } => token.org_admin && token.scopes.contains(&Scope::Admin),
            Who::Anonymous => false,
        }
    }

    /// A display string for `created_by` columns.
    pub fn actor_label(&self) -> String {
        match &self.who {
            Who::Anonymous => "anonymous".into(),
            Who::User { user, .. } => format!("user:{}", user.name),
            Who::Token { token, .. } => format!("token:{}", token.id),
        }
    }
}

fn is_mutating(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// The action name of a route (`service.resource.verb`).
pub fn action_of(method: &Method, route: Option<&str>) -> String {
    let p = route.and_then(|r| r.strip_prefix(API_PREFIX)).unwrap_or("");
    let a = match (method.as_str(), p) {
        ("POST", "/auth/login") => "iam.session.login",
        ("POST", "/auth/logout") => "iam.session.logout",
        ("GET", "/auth/whoami") => "iam.session.whoami",
        ("GET", "/openapi.json") => "api.openapi.get",
        ("GET", "/projects") => "iam.project.list",
        ("POST", "/projects") => "iam.project.create",
        ("GET", "/projects/{project}") => "iam.project.get",
        ("PATCH", "/projects/{project}") => "iam.project.update",
        ("GET", "/projects/{project}/tokens") => "iam.token.list",
        ("POST", "/projects/{project}/tokens") => "iam.token.create",
        ("GET", "/projects/{project}/tokens/{token_id}") => "iam.token.get",
        ("DELETE", "/projects/{project}/tokens/{token_id}") => "iam.token.revoke",
        ("GET", "/projects/{project}/members") => "iam.membership.list",
        ("PUT", "/projects/{project}/members/{user}") => "iam.membership.set",
        ("DELETE", "/projects/{project}/members/{user}") => "iam.membership.delete",
        ("GET", "/users") => "iam.user.list",
        ("POST", "/users") => "iam.user.create",
        ("GET", "/users/{user}") => "iam.user.get",
        ("PATCH", "/users/{user}") => "iam.user.update",
        ("DELETE", "/users/{user}") => "iam.user.delete",
        ("GET", "/projects/{project}/audit/events") | ("GET", "/audit/events") => {
            "audit.event.search"
        }
        ("POST", "/projects/{project}/audit/events") => "audit.event.ingest",
        ("GET", "/projects/{project}/audit/events/{id}") | ("GET", "/audit/events/{id}") => {
            "audit.event.get"
        }
        ("GET", "/projects/{project}/audit/export") | ("GET", "/audit/export") => {
            "audit.event.export"
        }
        ("GET", "/projects/{project}/audit/log/{*path}") | ("GET", "/audit/log/{*path}") => {
            "audit.log.read"
        }
        ("POST", "/audit/erasures") => "audit.person.erase",
        ("POST", "/audit/retention/run") => "audit.retention.run",
        ("GET", "/projects/{project}/audit/retention") => "audit.retention.get",
        ("PUT", "/projects/{project}/audit/retention") => "audit.retention.set",
        ("GET", "/projects/{project}/audit/holds") => "audit.legal_hold.list",
        ("POST", "/projects/{project}/audit/holds") => "audit.legal_hold.create",
        ("DELETE", "/projects/{project}/audit/holds/{hold_id}") => "audit.legal_hold.release",
        ("GET", "/projects/{project}/audit/proofs/inclusion")
        | ("GET", "/audit/proofs/inclusion") => "audit.proof.inclusion",
        ("GET", "/projects/{project}/audit/proofs/consistency")
        | ("GET", "/audit/proofs/consistency") => "audit.proof.consistency",
        ("GET", "/projects/{project}/audit/receipts/{entry}")
        | ("GET", "/audit/receipts/{entry}") => "audit.receipt.get",
        ("POST", "/projects/{project}/audit/log/cosignature")
        | ("POST", "/audit/log/cosignature") => "audit.log.cosign",
        ("POST", "/audit/log/rotate-key") => "audit.key.rotate",
        ("POST", "/metrics/flush") => "metrics.store.flush",
        _ => return format!("api.request.{}", method.as_str().to_ascii_lowercase()),
    };
    a.to_string()
}

fn is_public(method: &Method, route: Option<&str>) -> bool {
    let p = route.and_then(|r| r.strip_prefix(API_PREFIX));
    matches!(
        (method.as_str(), p),
        ("POST", Some("/auth/login")) | ("GET", Some("/openapi.json"))
    )
}

/// The `{project}` segment of a request path, if its route has one.
fn project_segment(route: Option<&str>, path: &str) -> Option<String> {
    let route = route?;
    let r: Vec<&str> = route.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    let i = r.iter().position(|s| *s == "{project}")?;
    p.get(i).map(|s| s.to_string())
}

fn header_str(h: &HeaderMap, name: impl axum::http::header::AsHeaderName) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(512).collect())
}

/// Reads the session cookie out of a Cookie header.
pub fn session_cookie(h: &HeaderMap) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

enum Credential {
    None,
    Token(String, AuthMethod),
    Session(String),
    Malformed(&'static str),
}

fn credential(h: &HeaderMap) -> Credential {
    if let Some(v) = h.get(header::AUTHORIZATION) {
        let Ok(v) = v.to_str() else {
            return Credential::Malformed("the Authorization header is not valid text");
        };
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return Credential::Token(rest.trim().to_string(), AuthMethod::Bearer);
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(rest.trim()) else {
                return Credential::Malformed("basic credentials are not valid base64");
            };
            let Ok(text) = String::from_utf8(raw) else {
                return Credential::Malformed("basic credentials are not valid UTF-8");
            };
            let Some((_, pass)) = text.split_once(':') else {
                return Credential::Malformed("basic credentials need the form user:token");
            };
            return Credential::Token(pass.to_string(), AuthMethod::Basic);
        }
        return Credential::Malformed(
            "unsupported Authorization scheme: use 'Bearer <token>' or basic auth with the token as password",
        );
    }
    match session_cookie(h) {
        Some(s) => Credential::Session(s),
        None => Credential::None,
    }
}

/// The per-request middleware of the management API (see the module doc).
pub async fn layer(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let method = req.method().clone();
    let action = action_of(&method, route.as_deref());
    let meta = request_meta(&req, action);
    let request_id = meta.request_id.clone();
    let authenticated = authenticate(
        &st,
        req.headers(),
        meta,
        is_public(&method, route.as_deref()),
    )
    .await;
    let mut resp = match authenticated {
        Err(e) => e.into_response(),
        Ok(caller) => {
            req.extensions_mut().insert(caller.clone());
            let resp = next.run(req).await;
            if is_mutating(&method)
                && resp.extensions().get::<AuditRecorded>().is_none()
                && !caller.req.recorded.load(Ordering::SeqCst)
            {
                catch_all(&st, &caller, resp).await
            } else {
                resp
            }
        }
    };
    if let Ok(v) = request_id.parse() {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

/// The audit facts of a request: a fresh request id, source IP, user
/// agent, route and the `{project}` path segment.
pub(crate) fn request_meta(req: &Request, action: String) -> RequestMeta {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let method = req.method().clone();
    let source_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    RequestMeta {
        // UUIDv7 from the thread-local CSPRNG: no `getrandom` per request.
        request_id: audit::rng::uuid_v7(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        )
        .to_string(),
        source_ip,
        user_agent: header_str(req.headers(), header::USER_AGENT),
        action,
        // The full path: under `nest`, `req.uri()` has the prefix stripped
        // while the matched route keeps it.
        path_project: project_segment(
            route.as_deref(),
            req.extensions()
                .get::<OriginalUri>()
                .map_or(req.uri().path(), |u| u.0.path()),
        ),
        method,
        route,
        recorded: Arc::new(AtomicBool::new(false)),
    }
}

pub(crate) async fn authenticate(
    st: &AppState,
    headers: &HeaderMap,
    meta: RequestMeta,
    public: bool,
) -> Result<Caller, ApiError> {
    let anonymous = Caller {
        who: Who::Anonymous,
        req: meta,
    };
    let cred = credential(headers);
    let now = st.now();
    let who = match cred {
        Credential::None if public => return Ok(anonymous),
        Credential::None => Err(
            "authentication required: send 'Authorization: Bearer <token>', basic auth with the token as password, or log in",
        ),
        Credential::Malformed(m) => Err(m),
        Credential::Token(secret, method) => {
            let t = st.token_by_secret(&secret).await?;
            match t {
                None => Err("invalid token"),
                Some(t) if t.revoked_at.is_some() => Err("token revoked"),
                Some(t) if !t.is_active(now) => Err("token expired"),
                Some(token) => Ok(Who::Token { token, method }),
            }
        }
        Credential::Session(secret) => {
            let s = blocking(st, move |m| m.read(|tx| tx.session(&secret, now))).await?;
            match s {
                None => Err("session expired or logged out: log in again"),
                Some(s) => Ok(Who::User {
                    user: s.user,
                    method: AuthMethod::Session,
                    csrf: Some(s.csrf_token),
                }),
            }
        }
    };
    let who = match who {
        Ok(w) => w,
        Err(_) if public => return Ok(anonymous),
        Err(msg) => {
            let err = ApiError::unauthorized(msg);
            let d = st.draft(&anonymous, None, None, None, Err(&err));
            st.record(d).await?;
            return Err(err.audited());
        }
    };
    let caller = Caller {
        who,
        req: anonymous.req,
    };
    // CSRF: a session may change state only with the token it was given.
    if let Who::User {
        csrf: Some(expected),
        ..
    } = &caller.who
        && is_mutating(&caller.req.method)
        && header_str(headers, CSRF_HEADER).as_deref() != Some(expected.as_str())
    {
        let mut err = ApiError::forbidden(format!(
            "missing or wrong {CSRF_HEADER} header: send the csrf_token returned at login"
        ));
        err.code = "csrf_failed";
        let d = st.draft(&caller, None, None, None, Err(&err));
        st.record(d).await?;
        return Err(err.audited());
    }
    if let Who::Token { token, .. } = &caller.who
        && token.first_used_at.is_none()
    {
        record_first_use(st, &caller, token.clone()).await?;
    }
    Ok(caller)
}

async fn record_first_use(
    st: &AppState,
    caller: &Caller,
    token: meta::Token,
) -> Result<(), ApiError> {
    let now = st.now();
    let mut first = Caller {
        who: caller.who.clone(),
        req: caller.req.clone(),
    };
    first.req.action = "iam.token.first_use".into();
    let d = st.draft(
        &first,
        Some(token.project.clone()),
        Some(token_resource(&token)),
        None,
        Ok(StatusCode::OK),
    );
    let audit = st.audit.clone();
    let id = token.id.clone();
    let m = st.meta.clone();
    let r = tokio::task::spawn_blocking(move || {
        m.write(
            |tx| tx.mark_first_use(&id, now),
            |marked| match marked {
                Ok(true) => audit.append(d).map(|_| ()),
                _ => Ok(()),
            },
        )
        .map_err(|e| match e {
            WriteError::Meta(e) => ApiError::from(e),
            WriteError::Gate(a) => ApiError::from(a),
        })
    })
    .await;
    match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.audited()),
        Err(e) => Err(ApiError::internal(e)),
    }
}

pub(crate) fn token_resource(t: &meta::Token) -> Resource {
    Resource {
        kind: "token".into(),
        id: Some(t.id.clone()),
        name: Some(t.name.clone()),
    }
}

/// Records the audit event of a mutating request that no handler recorded.
async fn catch_all(st: &AppState, caller: &Caller, resp: Response) -> Response {
    let status = resp.status();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let err = if status.is_success() {
        tracing::warn!(action = %caller.req.action, "bug: a successful change recorded no audit event; recording a generic one");
        None
    } else {
        let parsed: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
        let code = parsed
            .as_ref()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
        let message = parsed
            .as_ref()
            .and_then(|v| v["error"]["message"].as_str().map(cap_message));
        Some((code, message))
    };
    // Only name a project whose existence the caller may learn.
    let project = match &caller.req.path_project {
        Some(p) => st.visible_project(caller, p).await,
        None => None,
    };
    let mut d = st.draft(caller, project, None, None, Ok(status));
    if let Some((code, message)) = err {
        d.result = Outcome {
            status: Status::Failure,
            http_status: Some(status.as_u16()),
            error_code: code,
            error_message: message,
        };
    }
    match st.record(d).await {
        Ok(_) => Response::from_parts(parts, axum::body::Body::from(bytes)),
        Err(e) => e.into_response(),
    }
}

/// Longest `result.error_message` an audit event carries, in characters
/// (the documented `maxLength`). Error messages may quote the input (an
/// unknown field name, say), which must not make the event too large to
/// record.
pub const MAX_ERROR_MESSAGE_CHARS: usize = 2000;

/// An error message cut to [`MAX_ERROR_MESSAGE_CHARS`].
pub fn cap_message(m: &str) -> String {
    m.chars().take(MAX_ERROR_MESSAGE_CHARS).collect()
}

/// Runs metadata work on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&meta::Meta) -> Result<T, MetaError> + Send + 'static,
) -> Result<T, ApiError> {
    let m = st.meta.clone();
    match tokio::task::spawn_blocking(move || f(&m)).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// What a successful change reports for its audit event.
pub struct Described {
    pub resource: Resource,
    pub changes: Vec<Change>,
    pub response: Option<serde_json::Value>,
}

impl AppState {
    /// Builds an audit event draft for the caller's action.
    pub fn draft(
        &self,
        caller: &Caller,
        project: Option<String>,
        resource: Option<Resource>,
        params: Option<serde_json::Value>,
        result: Result<StatusCode, &ApiError>,
    ) -> EventDraft {
        let result = match result {
            Ok(s) => Outcome {
                status: Status::Success,
                http_status: Some(s.as_u16()),
                error_code: None,
                error_message: None,
            },
            Err(e) => Outcome {
                status: Status::Failure,
                http_status: Some(e.status().as_u16()),
                error_code: Some(e.code.to_string()),
                error_message: Some(cap_message(&e.message)),
            },
        };
        EventDraft {
            organization: self.organization.clone(),
            project,
            principal: caller.principal(),
            source_ip: caller.req.source_ip.clone(),
            user_agent: caller.req.user_agent.clone(),
            action: caller.req.action.clone(),
            resource,
            request_id: Some(caller.req.request_id.clone()),
            result,
            request_parameters: params
                .map(|p| audit::cap_freeform(crate::api::audit_api::redact(p))),
            response_elements: None,
            changes: Vec::new(),
            event_source: "flightdeck".into(),
            event_time: None,
            external_id: None,
        }
    }

    /// Appends an event and waits until it is durable. A failure to record
    /// is a 503: the caller must not report success for the action.
    pub async fn record(&self, draft: EventDraft) -> Result<audit::Event, ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.audit.append_with(
            draft,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        match rx.await {
            Ok(Ok(e)) => Ok(e),
            // Too large to record: nothing was written, and a smaller
            // event saying so still can be (the error is not "audited").
            Ok(Err(e @ audit::AuditError::EventTooLarge { .. })) => Err(ApiError::from(e)),
            Ok(Err(e)) => Err(ApiError::from(e).audited()),
            Err(_) => Err(ApiError::audit_unavailable("the audit writer stopped").audited()),
        }
    }

    /// Appends the event of `caller`'s request and notes that it has one
    /// (unless it could not be written and another may still be).
    pub async fn record_for(
        &self,
        caller: &Caller,
        draft: EventDraft,
    ) -> Result<audit::Event, ApiError> {
        let r = self.record(draft).await;
        if r.as_ref().map_or_else(|e| e.audited, |_| true) {
            caller.req.recorded.store(true, Ordering::SeqCst);
        }
        r
    }

    /// Appends the events of one request of `caller` (batch ingest) and
    /// waits until each is durable; they share group commits. All or none
    /// is admitted: if one cannot be (too large, say), nothing is written
    /// and the error names it as `events[i]`. A failure after admission (a
    /// failed fsync) is a 503 even though earlier events may be durable.
    pub async fn record_all_for(
        &self,
        caller: &Caller,
        drafts: Vec<EventDraft>,
    ) -> Result<Vec<audit::Acked>, ApiError> {
        // One callback (and one wake-up) for the whole batch.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done: audit::BatchDone = Box::new(move |r| {
            let _ = tx.send(r);
        });
        let r = match self.audit.append_batch_with(drafts, done) {
            Err((i, e)) => {
                let audited = !matches!(e, audit::AuditError::EventTooLarge { .. });
                let mut err = ApiError::from(e);
                err.message = format!("events[{i}]: {}", err.message);
                err.field = Some(format!("events[{i}]"));
                Err(if audited { err.audited() } else { err })
            }
            Ok(()) => match rx.await {
                Ok(Ok(events)) => Ok(events),
                Ok(Err(e)) => Err(ApiError::from(e).audited()),
                Err(_) => Err(ApiError::audit_unavailable("the audit writer stopped").audited()),
            },
        };
        if r.as_ref().map_or_else(|e| e.audited, |_| true) {
            caller.req.recorded.store(true, Ordering::SeqCst);
        }
        r
    }

    /// Records a failed action and returns the error marked as audited.
    pub async fn fail(
        &self,
        caller: &Caller,
        project: Option<String>,
        resource: Option<Resource>,
        err: ApiError,
    ) -> ApiError {
        if err.audited {
            return err;
        }
        let d = self.draft(caller, project, resource, None, Err(&err));
        match self.record_for(caller, d).await {
            Ok(_) => err.audited(),
            Err(e) => e,
        }
    }

    /// The project, if it exists and the caller may know it does.
    async fn visible_project(&self, caller: &Caller, name: &str) -> Option<String> {
        let name = name.to_string();
        let c = caller.clone();
        blocking(self, move |m| {
            m.read(|tx| {
                let p = tx.project(&name)?;
                Ok(can_see(tx, &c, &p)?.then_some(p.name))
            })
        })
        .await
        .ok()
        .flatten()
    }

    /// The token whose secret this is (active or not), through the
    /// verified-token cache ([`crate::cache`]).
    async fn token_by_secret(&self, secret: &str) -> Result<Option<meta::Token>, ApiError> {
        let hash = meta::secrets::hash_secret(secret);
        // Loaded before the read: a change committed meanwhile makes the
        // entry stale at once.
        let generation = self.meta.generation();
        if let Some(t) = self.cache.token(&hash, generation) {
            return Ok(Some(t));
        }
        let h = hash.clone();
        let t = blocking(self, move |m| m.read(|tx| tx.token_by_secret_hash(&h))).await?;
        if let Some(t) = &t {
            self.cache.put_token(hash, generation, t.clone());
        }
        Ok(t)
    }

    /// Resolves `{project}` and checks that the caller holds `scope` there.
    /// Unknown and invisible projects are 404; a visible project without
    /// the scope is 403. Denials are audited. Grants are remembered while
    /// the metadata is unchanged ([`crate::cache`]).
    pub async fn project_access(
        &self,
        caller: &Caller,
        project: &str,
        scope: Scope,
    ) -> Result<meta::Project, ApiError> {
        let key = match &caller.who {
            Who::Token { token, .. } => Some(format!("t:{}", token.id)),
            Who::User { user, .. } => Some(format!("u:{}", user.id)),
            Who::Anonymous => None,
        }
        .map(|caller| crate::cache::AccessKey {
            caller,
            project: project.to_string(),
            scope,
        });
        let generation = self.meta.generation();
        if let Some(p) = key.as_ref().and_then(|k| self.cache.access(k, generation)) {
            return Ok(p);
        }
        let name = project.to_string();
        let c = caller.clone();
        let decision = blocking(self, move |m| {
            m.read(|tx| {
                let p = match tx.project(&name) {
                    Ok(p) => p,
                    Err(MetaError::NotFound { .. }) => return Ok(Err(None)),
                    Err(e) => return Err(e),
                };
                if !can_see(tx, &c, &p)? {
                    // Audited in the project's own log: its auditors see the probe.
                    return Ok(Err(Some((p.name, false))));
                }
                if has_scope(tx, &c, &p, scope)? {
                    Ok(Ok(p))
                } else {
                    Ok(Err(Some((p.name, true))))
                }
            })
        })
        .await?;
        match decision {
            Ok(p) => {
                if let Some(k) = key {
                    self.cache.put_access(k, generation, p.clone());
                }
                Ok(p)
            }
            Err(None) => Err(self
                .fail(
                    caller,
                    None,
                    None,
                    ApiError::not_found(format!("project '{project}'")),
                )
                .await),
            Err(Some((p, false))) => Err(self
                .fail(
                    caller,
                    Some(p),
                    None,
                    ApiError::not_found(format!("project '{project}'")),
                )
                .await),
            Err(Some((p, true))) => Err(self
                .fail(
                    caller,
                    Some(p),
                    None,
                    ApiError::forbidden(format!(
                        "this needs the '{}' scope in project '{project}'",
                        scope.as_str()
                    )),
                )
                .await),
        }
    }

    /// Checks an organization-level permission: org admins only (tokens
    /// also need `admin`, or `audit:read` for reading the org audit log).
    pub async fn org_access(&self, caller: &Caller, scope: Scope) -> Result<(), ApiError> {
        let ok = match &caller.who {
            Who::User { user, .. } => user.org_admin,
            Who::Token { token, .. } => token.org_admin && token.scopes.contains(&scope),
            Who::Anonymous => false,
        };
        if ok {
            return Ok(());
        }
        Err(self
            .fail(
                caller,
                None,
                None,
                ApiError::forbidden(format!(
                    "this needs organization admin rights (and the '{}' scope for tokens)",
                    scope.as_str()
                )),
            )
            .await)
    }

    /// Applies a metadata change and records its audit event; commits only
    /// once the event is durable. Failures of the change are recorded too.
    #[allow(clippy::too_many_arguments)]
    pub async fn mutate<T: Send + 'static>(
        &self,
        caller: &Caller,
        project: Option<String>,
        resource: Resource,
        params: Option<serde_json::Value>,
        ok_status: StatusCode,
        change: impl FnOnce(&Tx) -> Result<T, MetaError> + Send + 'static,
        describe: impl FnOnce(&T) -> Described + Send + 'static,
    ) -> Result<T, ApiError> {
        caller.req.recorded.store(true, Ordering::SeqCst);
        let base = self.draft(caller, project, Some(resource), params, Ok(ok_status));
        let audit = self.audit.clone();
        let r = blocking(self, move |m| {
            Ok(m.write(change, move |outcome| {
                let mut d = base;
                match outcome {
                    Ok(v) => {
                        let desc = describe(v);
                        d.resource = Some(desc.resource);
                        d.changes = desc.changes;
                        d.response_elements = desc.response.map(audit::cap_freeform);
                    }
                    Err(e) => {
                        let api = ApiError::from_meta_ref(e);
                        d.result = Outcome {
                            status: Status::Failure,
                            http_status: Some(api.status().as_u16()),
                            error_code: Some(api.code.to_string()),
                            error_message: Some(cap_message(&api.message)),
                        };
                    }
                }
                audit.append(d).map(|_| ())
            }))
        })
        .await?;
        match r {
            Ok(v) => Ok(v),
            Err(WriteError::Meta(e)) => Err(ApiError::from(e).audited()),
            Err(WriteError::Gate(a @ audit::AuditError::EventTooLarge { .. })) => {
                // Nothing was written: let the catch-all record a smaller event.
                caller.req.recorded.store(false, Ordering::SeqCst);
                Err(ApiError::from(a))
            }
            Err(WriteError::Gate(a)) => Err(ApiError::from(a).audited()),
        }
    }
}

/// May the caller learn that project `p` exists?
pub(crate) fn can_see(tx: &Tx, c: &Caller, p: &meta::Project) -> Result<bool, MetaError> {
    Ok(match &c.who {
        Who::Anonymous => false,
        Who::User { user, .. } => user.org_admin || tx.role_of(&user.id, &p.id)?.is_some(),
        Who::Token { token, .. } => token.project_id == p.id || c.is_org_admin(),
    })
}

/// Does the caller hold `scope` in project `p`? Org-admin tokens manage
/// every project (`admin`, `audit:read`) but read or write data only in
/// their own.
pub(crate) fn has_scope(
    tx: &Tx,
    c: &Caller,
    p: &meta::Project,
    scope: Scope,
) -> Result<bool, MetaError> {
    Ok(match &c.who {
        Who::Anonymous => false,
        Who::User { user, .. } => {
            user.org_admin
                || tx
                    .role_of(&user.id, &p.id)?
                    .is_some_and(|r| r.scopes().contains(&scope))
        }
        Who::Token { token, .. } => {
            if token.project_id == p.id {
                token.scopes.contains(&scope)
            } else {
                c.is_org_admin() && matches!(scope, Scope::Admin | Scope::AuditRead)
            }
        }
    })
}

/// Records `iam.token.expire` (principal `system`) for every token whose
/// expiry passed, once each; runs for the life of the server.
pub async fn expiry_sweeper(st: AppState) {
    let mut tick = tokio::time::interval(st.opts.expiry_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep_expired_tokens(&st).await {
            tracing::warn!(error = %e.message, "token expiry sweep failed; will retry");
        }
    }
}

/// One pass of the expiry sweep.
pub async fn sweep_expired_tokens(st: &AppState) -> Result<usize, ApiError> {
    let now = st.now();
    let expired = blocking(st, move |m| m.read(|tx| tx.newly_expired_tokens(now))).await?;
    let n = expired.len();
    for t in expired {
        let mut d = crate::bootstrap::system_draft(
            &st.organization,
            Some(&t.project),
            "iam.token.expire",
            token_resource(&t),
        );
        d.changes = vec![Change {
            field: "active".into(),
            before: true.into(),
            after: false.into(),
        }];
        let audit = st.audit.clone();
        let id = t.id.clone();
        let m = st.meta.clone();
        tokio::task::spawn_blocking(move || {
            m.write(
                |tx| tx.mark_expiry_recorded(&id),
                |_| audit.append(d).map(|_| ()),
            )
            .map_err(|e| match e {
                WriteError::Meta(e) => ApiError::from(e),
                WriteError::Gate(a) => ApiError::from(a),
            })
        })
        .await
        .map_err(ApiError::internal)??;
    }
    Ok(n)
}

/// An error body in the documented shape, for handlers that build responses by hand.
pub fn error_json(kind: Kind, code: &str, message: &str) -> Response {
    (
        kind.status(),
        axum::Json(ErrorBody {
            error: crate::error::ErrorDetail {
                code: code.into(),
                message: message.into(),
                field: None,
            },
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_segment_reads_the_full_path() {
        let route = Some("/api/flightdeck/v1/projects/{project}/tokens");
        assert_eq!(
            project_segment(route, "/api/flightdeck/v1/projects/shop/tokens").as_deref(),
            Some("shop")
        );
        assert_eq!(
            project_segment(Some("/api/flightdeck/v1/users"), "/api/flightdeck/v1/users"),
            None
        );
    }

    #[test]
    fn long_error_messages_are_capped() {
        assert_eq!(
            cap_message(&"é".repeat(5000)).chars().count(),
            MAX_ERROR_MESSAGE_CHARS
        );
        assert_eq!(cap_message("short"), "short");
    }
}
