//! UI sessions: login with password (rate-limited per source IP and per
//! user), logout, and whoami. The session cookie is `HttpOnly`,
//! `SameSite=Strict`; state-changing session requests must echo the CSRF
//! token returned here in the `X-CSRF-Token` header.

use audit::{AuthMethod, Principal, PrincipalKind, Resource};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::JsonBody;
use super::iam::UserOut;
use crate::AppState;
use crate::auth::{Caller, SESSION_COOKIE, Who, blocking, session_cookie};
use crate::error::{ApiError, Kind};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    #[schema(max_length = 64)]
    pub username: String,
    #[schema(max_length = 1024)]
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct LoginOut {
    pub user: UserOut,
    /// Send this in `X-CSRF-Token` on every state-changing request of the session.
    pub csrf_token: String,
    pub expires_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    /// `user` or `token`.
    pub principal_type: String,
    pub id: String,
    pub name: String,
    /// `session`, `bearer` or `basic`.
    pub auth_method: String,
    pub org_admin: bool,
    /// The token's project (tokens only).
    pub project: Option<String>,
    /// The token's scopes (tokens only).
    #[schema(value_type = Vec<super::iam::ScopeDoc>)]
    pub scopes: Vec<String>,
    /// The session's CSRF token (sessions only).
    pub csrf_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LoggedOut {
    pub logged_out: bool,
}

/// Log in with user name and password; sets the session cookie.
#[utoipa::path(post, path = "/api/flightdeck/v1/auth/login", tag = "auth", request_body = Login,
    security(()), responses((status = 200, body = LoginOut)))]
pub async fn login(
    State(st): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<Login>,
) -> Result<Response, ApiError> {
    let claimed: String = body.username.chars().take(64).collect();
    let keys = vec![
        format!("ip:{}", caller.req.source_ip.clone().unwrap_or_default()),
        format!("user:{claimed}"),
    ];
    let mut c = caller.clone();
    // Until proven, the principal is whoever the name claims to be.
    let anon = Principal {
        kind: PrincipalKind::Anonymous,
        id: claimed.clone(),
        name: claimed.clone(),
        token_id: None,
        auth_method: Some(AuthMethod::Password),
    };
    let resource = Resource {
        kind: "session".into(),
        id: None,
        name: Some(claimed.clone()),
    };
    // The claimed name is personal: it is in the (sealed) principal, not
    // in the parameters, which the leaf holds in clear.
    let params = json!({"password": "[REDACTED]"});
    if st.limiter.blocked(&keys) {
        let e = ApiError::new(
            Kind::TooManyRequests,
            "rate_limited",
            "too many failed logins from this address or for this user; wait and try again",
        );
        let mut d = st.draft(&c, None, Some(resource), Some(params), Err(&e));
        d.principal = anon;
        st.record_for(&c, d).await?;
        return Err(e.audited());
    }
    let now = st.now();
    let ttl = i64::try_from(st.opts.session_ttl.as_nanos()).unwrap_or(i64::MAX);
    let (name, pw) = (body.username.clone(), body.password.clone());
    let user = blocking(&st, move |m| m.read(|tx| tx.check_login(&name, &pw))).await?;
    let Some(user) = user else {
        st.limiter.record_failure(&keys);
        let e = ApiError::unauthorized("wrong user name or password");
        let mut d = st.draft(&c, None, Some(resource), Some(params), Err(&e));
        d.principal = anon;
        st.record_for(&c, d).await?;
        return Err(e.audited());
    };
    st.limiter.record_success(&keys[1]);
    c.who = Who::User {
        user: user.clone(),
        method: AuthMethod::Password,
        csrf: None,
    };
    let uid = user.id.clone();
    let uname = user.name.clone();
    let (secret, csrf) = st
        .mutate(
            &c,
            None,
            resource,
            Some(params),
            StatusCode::OK,
            move |tx| tx.create_session(&uid, now, ttl),
            move |_| crate::auth::Described {
                resource: Resource {
                    kind: "session".into(),
                    id: None,
                    name: Some(uname),
                },
                changes: vec![],
                response: None,
            },
        )
        .await?;
    let max_age = st.opts.session_ttl.as_secs();
    let cookie = format!(
        "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if st.opts.secure_cookies {
            "; Secure"
        } else {
            ""
        }
    );
    let out = LoginOut {
        user: UserOut::from(&match c.who {
            Who::User { user, .. } => user,
            _ => unreachable!("bug: caller was just set to the user"),
        }),
        csrf_token: csrf,
        expires_at: super::rfc3339(now.saturating_add(ttl)),
    };
    let mut resp = Json(out).into_response();
    resp.extensions_mut().insert(crate::AuditRecorded);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// End the current session. Only a session (cookie plus `X-CSRF-Token`)
/// can be logged out; other credentials get 401.
#[utoipa::path(post, path = "/api/flightdeck/v1/auth/logout", tag = "auth",
    security(("session" = [])), responses((status = 200, body = LoggedOut)))]
pub async fn logout(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let resource = Resource {
        kind: "session".into(),
        id: None,
        name: None,
    };
    let Some(secret) = session_cookie(&headers).filter(|_| matches!(caller.who, Who::User { .. }))
    else {
        // The credential this operation needs (the session cookie) is
        // missing: 401, as for any other missing credential.
        let e = ApiError::new(
            Kind::Unauthorized,
            "no_session",
            "logout ends a UI session; this request was not made with one (send the session cookie)",
        );
        return Err(st.fail(&caller, None, Some(resource), e).await);
    };
    st.mutate(
        &caller,
        None,
        resource.clone(),
        None,
        StatusCode::OK,
        move |tx| tx.delete_session(&secret),
        move |_| crate::auth::Described {
            resource,
            changes: vec![],
            response: None,
        },
    )
    .await?;
    let mut resp = Json(LoggedOut { logged_out: true }).into_response();
    resp.extensions_mut().insert(crate::AuditRecorded);
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("fd_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(resp)
}

/// Who the request is authenticated as.
#[utoipa::path(get, path = "/api/flightdeck/v1/auth/whoami", tag = "auth",
    responses((status = 200, body = WhoAmI)))]
pub async fn whoami(caller: Caller) -> Result<Json<WhoAmI>, ApiError> {
    let method = |m: &AuthMethod| {
        match m {
            AuthMethod::Session => "session",
            AuthMethod::Bearer => "bearer",
            AuthMethod::Basic => "basic",
            AuthMethod::Password => "password",
            AuthMethod::None => "none",
        }
        .to_string()
    };
    Ok(Json(match &caller.who {
        Who::User {
            user,
            method: m,
            csrf,
        } => WhoAmI {
            principal_type: "user".into(),
            id: user.id.clone(),
            name: user.name.clone(),
            auth_method: method(m),
            org_admin: user.org_admin,
            project: None,
            scopes: vec![],
            csrf_token: csrf.clone(),
        },
        Who::Token { token, method: m } => WhoAmI {
            principal_type: "token".into(),
            id: token.id.clone(),
            name: token.name.clone(),
            auth_method: method(m),
            org_admin: token.org_admin,
            project: Some(token.project.clone()),
            scopes: token.scopes.iter().map(|s| s.as_str().into()).collect(),
            csrf_token: None,
        },
        Who::Anonymous => return Err(ApiError::unauthorized("not authenticated")),
    }))
}
