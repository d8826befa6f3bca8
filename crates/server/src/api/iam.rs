//! Identity and tenancy endpoints: projects, API tokens, users and project
//! memberships. Each handler: authorize, validate completely, then change
//! through [`AppState::mutate`] (audited, fail closed).

use audit::{Change, Resource};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use meta::{Role, Scope};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::{JsonBody, ListParams, Params, PathParams, ProjectPath, page, rfc3339};
use crate::AppState;
use crate::auth::{Caller, Described, Who, blocking, token_resource};
use crate::error::ApiError;

// ---- shapes -----------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct ProjectOut {
    pub id: String,
    /// The project's slug; how paths address it.
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub created_at: String,
}

impl From<&meta::Project> for ProjectOut {
    fn from(p: &meta::Project) -> Self {
        ProjectOut {
            id: p.id.clone(),
            name: p.name.clone(),
            display_name: p.display_name.clone(),
            description: p.description.clone(),
            created_at: rfc3339(p.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ProjectList {
    pub projects: Vec<ProjectOut>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// Slug: 1–63 lower-case letters, digits and inner dashes.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// No control characters.
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub display_name: Option<String>,
    /// No control characters (no line breaks either).
    #[schema(max_length = 2000, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub description: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProject {
    /// No control characters.
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub display_name: Option<String>,
    /// No control characters (no line breaks either).
    #[schema(max_length = 2000, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub description: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenOut {
    pub id: String,
    pub project: String,
    pub name: String,
    #[schema(value_type = Vec<ScopeDoc>)]
    pub scopes: Vec<String>,
    pub org_admin: bool,
    pub created_at: String,
    pub created_by: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub first_used_at: Option<String>,
    /// `active`, `expired` or `revoked`.
    pub status: String,
}

impl TokenOut {
    fn new(t: &meta::Token, now: i64) -> TokenOut {
        TokenOut {
            id: t.id.clone(),
            project: t.project.clone(),
            name: t.name.clone(),
            scopes: t.scopes.iter().map(|s| s.as_str().to_string()).collect(),
            org_admin: t.org_admin,
            created_at: rfc3339(t.created_at),
            created_by: t.created_by.clone(),
            expires_at: t.expires_at.map(rfc3339),
            revoked_at: t.revoked_at.map(rfc3339),
            first_used_at: t.first_used_at.map(rfc3339),
            status: if t.revoked_at.is_some() {
                "revoked"
            } else if !t.is_active(now) {
                "expired"
            } else {
                "active"
            }
            .into(),
        }
    }
}

/// A token scope (documentation of `meta::Scope`'s names).
#[derive(Serialize, ToSchema)]
#[schema(as = Scope)]
#[allow(dead_code)]
pub enum ScopeDoc {
    #[serde(rename = "metrics:write")]
    MetricsWrite,
    #[serde(rename = "metrics:read")]
    MetricsRead,
    #[serde(rename = "logs:write")]
    LogsWrite,
    #[serde(rename = "logs:read")]
    LogsRead,
    #[serde(rename = "alerts:manage")]
    AlertsManage,
    #[serde(rename = "audit:read")]
    AuditRead,
    #[serde(rename = "audit:write")]
    AuditWrite,
    #[serde(rename = "admin")]
    Admin,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    pub token: TokenOut,
    /// The token's secret. Shown this once; only its hash is stored.
    pub secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenOut>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Not blank; no control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: String,
    /// Any of `metrics:write`, `metrics:read`, `logs:write`, `logs:read`,
    /// `alerts:manage`, `audit:read`, `audit:write`, `admin`.
    #[schema(min_items = 1, value_type = Vec<ScopeDoc>)]
    pub scopes: Vec<String>,
    /// RFC 3339 time after which the token stops working; must be in the
    /// future. Times after 2262-04-11T23:47:16Z are kept as that instant.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserOut {
    pub id: String,
    pub name: String,
    pub org_admin: bool,
    pub created_at: String,
}

impl From<&meta::User> for UserOut {
    fn from(u: &meta::User) -> Self {
        UserOut {
            id: u.id.clone(),
            name: u.name.clone(),
            org_admin: u.org_admin,
            created_at: rfc3339(u.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserOut>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub name: String,
    #[schema(min_length = 8, max_length = 1024)]
    pub password: String,
    #[serde(default)]
    pub org_admin: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[schema(min_length = 8, max_length = 1024)]
    pub password: Option<String>,
    pub org_admin: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct MemberOut {
    pub user_id: String,
    pub user: String,
    pub project: String,
    /// `viewer`, `editor` or `admin`.
    pub role: String,
    pub created_at: String,
}

impl From<&meta::Membership> for MemberOut {
    fn from(m: &meta::Membership) -> Self {
        MemberOut {
            user_id: m.user_id.clone(),
            user: m.user_name.clone(),
            project: m.project.clone(),
            role: m.role.as_str().into(),
            created_at: rfc3339(m.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct MemberList {
    pub members: Vec<MemberOut>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMember {
    /// `viewer`, `editor` or `admin`.
    #[schema(pattern = "^(viewer|editor|admin)$")]
    pub role: String,
}

// ---- validation helpers -----------------------------------------------------

/// At most `max` characters (as JSON Schema's `maxLength` counts them), no
/// control characters.
fn check_len(field: &str, s: &str, max: usize) -> Result<(), ApiError> {
    if s.chars().count() > max {
        return Err(ApiError::bad_field(
            field,
            format!("at most {max} characters"),
        ));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(ApiError::bad_field(
            field,
            "control characters are not allowed",
        ));
    }
    Ok(())
}

fn slug(field: &'static str, s: &str) -> Result<(), ApiError> {
    meta::check_slug(field, s).map_err(ApiError::from)
}

/// Path parameters are checked like body fields: a malformed one is a 400
/// naming it (except that an unknown but well-formed name is a 404).
fn path_slug(s: &str) -> Result<(), ApiError> {
    slug("project", s)
}

// ---- projects ---------------------------------------------------------------

/// List the projects the caller can see.
#[utoipa::path(get, path = "/api/flightdeck/v1/projects", tag = "projects", params(ListParams),
    responses((status = 200, body = ProjectList)))]
pub async fn list_projects(
    State(st): State<AppState>,
    caller: Caller,
    Params(q): Params<ListParams>,
) -> Result<Json<ProjectList>, ApiError> {
    let limit = q.limit()?;
    let after = q.after()?;
    let c = caller.clone();
    let rows = blocking(&st, move |m| {
        m.read(|tx| {
            let mut out = Vec::new();
            let mut cursor = after;
            // Filter visibility page by page; stop once limit+1 are found.
            loop {
                let batch = tx.projects(cursor.as_deref(), 500)?;
                let done = batch.len() < 500;
                cursor = batch.last().map(|p| p.name.clone());
                for p in batch {
                    if crate::auth::can_see(tx, &c, &p)? {
                        out.push(p);
                    }
                }
                if done || out.len() > limit {
                    return Ok(out);
                }
            }
        })
    })
    .await?;
    let (rows, next_cursor) = page(rows, limit, |p| p.name.clone());
    Ok(Json(ProjectList {
        projects: rows.iter().map(ProjectOut::from).collect(),
        next_cursor,
    }))
}

/// Create a project (organization admins).
#[utoipa::path(post, path = "/api/flightdeck/v1/projects", tag = "projects", request_body = CreateProject,
    responses((status = 201, body = ProjectOut)))]
pub async fn create_project(
    State(st): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateProject>,
) -> Result<(StatusCode, Json<ProjectOut>), ApiError> {
    st.org_access(&caller, Scope::Admin).await?;
    let params = json!({"name": body.name, "display_name": body.display_name, "description": body.description});
    let resource = Resource {
        kind: "project".into(),
        id: None,
        name: Some(body.name.chars().take(100).collect()),
    };
    let valid = slug("name", &body.name)
        .and_then(|_| {
            check_len(
                "display_name",
                body.display_name.as_deref().unwrap_or(""),
                200,
            )
        })
        .and_then(|_| {
            check_len(
                "description",
                body.description.as_deref().unwrap_or(""),
                2000,
            )
        });
    if let Err(e) = valid {
        return Err(st.fail(&caller, None, Some(resource), e).await);
    }
    let now = st.now();
    let display = body
        .display_name
        .clone()
        .unwrap_or_else(|| body.name.clone());
    let desc = body.description.clone().unwrap_or_default();
    let name = body.name.clone();
    let p = st
        .mutate(
            &caller,
            None,
            resource,
            Some(params),
            StatusCode::CREATED,
            move |tx| tx.create_project(&name, &display, &desc, now),
            |p| Described {
                resource: Resource {
                    kind: "project".into(),
                    id: Some(p.id.clone()),
                    name: Some(p.name.clone()),
                },
                changes: vec![],
                response: Some(json!({"id": p.id})),
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(ProjectOut::from(&p))))
}

/// Get one project.
#[utoipa::path(get, path = "/api/flightdeck/v1/projects/{project}", tag = "projects",
    params(ProjectPath),
    responses((status = 200, body = ProjectOut)))]
pub async fn get_project(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
) -> Result<Json<ProjectOut>, ApiError> {
    let p = visible_project(&st, &caller, &project).await?;
    Ok(Json(ProjectOut::from(&p)))
}

/// Any scope in the project will do for reading its description.
async fn visible_project(
    st: &AppState,
    caller: &Caller,
    project: &str,
) -> Result<meta::Project, ApiError> {
    path_slug(project)?;
    for scope in [
        Scope::Admin,
        Scope::MetricsRead,
        Scope::LogsRead,
        Scope::AuditRead,
    ] {
        if let Ok(p) = quiet_access(st, caller, project, scope).await {
            return Ok(p);
        }
    }
    // None matched: let the audited check give the precise answer.
    st.project_access(caller, project, Scope::MetricsRead).await
}

/// Access check without recording a denial (used to probe alternatives).
async fn quiet_access(
    st: &AppState,
    caller: &Caller,
    project: &str,
    scope: Scope,
) -> Result<meta::Project, ()> {
    let name = project.to_string();
    let c = caller.clone();
    let r = blocking(st, move |m| {
        m.read(|tx| {
            let p = tx.project(&name)?;
            let ok = crate::auth::has_scope(tx, &c, &p, scope)?;
            Ok(ok.then_some(p))
        })
    })
    .await;
    match r {
        Ok(Some(p)) => Ok(p),
        _ => Err(()),
    }
}

/// Change a project's display name or description (project admins).
#[utoipa::path(patch, path = "/api/flightdeck/v1/projects/{project}", tag = "projects",
    params(ProjectPath),
    request_body = UpdateProject, responses((status = 200, body = ProjectOut)))]
pub async fn update_project(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
    JsonBody(body): JsonBody<UpdateProject>,
) -> Result<Json<ProjectOut>, ApiError> {
    path_slug(&project)?;
    let p = st.project_access(&caller, &project, Scope::Admin).await?;
    let resource = Resource {
        kind: "project".into(),
        id: Some(p.id.clone()),
        name: Some(p.name.clone()),
    };
    let valid = check_len(
        "display_name",
        body.display_name.as_deref().unwrap_or(""),
        200,
    )
    .and_then(|_| {
        check_len(
            "description",
            body.description.as_deref().unwrap_or(""),
            2000,
        )
    });
    if let Err(e) = valid {
        return Err(st.fail(&caller, Some(p.name), Some(resource), e).await);
    }
    let params = json!({"display_name": body.display_name, "description": body.description});
    let name = p.name.clone();
    let (_, after) = st
        .mutate(
            &caller,
            Some(p.name.clone()),
            resource.clone(),
            Some(params),
            StatusCode::OK,
            move |tx| {
                tx.update_project(
                    &name,
                    body.display_name.as_deref(),
                    body.description.as_deref(),
                )
            },
            move |(before, after)| {
                let mut changes = vec![];
                if before.display_name != after.display_name {
                    changes.push(Change {
                        field: "display_name".into(),
                        before: before.display_name.clone().into(),
                        after: after.display_name.clone().into(),
                    });
                }
                if before.description != after.description {
                    changes.push(Change {
                        field: "description".into(),
                        before: before.description.clone().into(),
                        after: after.description.clone().into(),
                    });
                }
                Described {
                    resource,
                    changes,
                    response: None,
                }
            },
        )
        .await?;
    Ok(Json(ProjectOut::from(&after)))
}

// ---- tokens -----------------------------------------------------------------

/// List a project's tokens (never their secrets).
#[utoipa::path(get, path = "/api/flightdeck/v1/projects/{project}/tokens", tag = "tokens",
    params(ProjectPath, ListParams),
    responses((status = 200, body = TokenList)))]
pub async fn list_tokens(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
    Params(q): Params<ListParams>,
) -> Result<Json<TokenList>, ApiError> {
    path_slug(&project)?;
    let limit = q.limit()?;
    let after = q.after()?;
    let p = st.project_access(&caller, &project, Scope::Admin).await?;
    let rows = blocking(&st, move |m| {
        m.read(|tx| tx.tokens(&p.name, after.as_deref(), limit + 1))
    })
    .await?;
    let now = st.now();
    let (rows, next_cursor) = page(rows, limit, |t| t.id.clone());
    Ok(Json(TokenList {
        tokens: rows.iter().map(|t| TokenOut::new(t, now)).collect(),
        next_cursor,
    }))
}

/// Create a token; its secret is in the answer, once.
#[utoipa::path(post, path = "/api/flightdeck/v1/projects/{project}/tokens", tag = "tokens",
    params(ProjectPath),
    request_body = CreateToken, responses((status = 201, body = CreatedToken)))]
pub async fn create_token(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
    JsonBody(body): JsonBody<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    path_slug(&project)?;
    let p = st.project_access(&caller, &project, Scope::Admin).await?;
    let now = st.now();
    let resource = Resource {
        kind: "token".into(),
        id: None,
        name: Some(body.name.chars().take(100).collect()),
    };
    let params = json!({"name": body.name, "scopes": body.scopes, "expires_at": body.expires_at});
    let valid = (|| {
        if body.name.trim().is_empty() {
            return Err(ApiError::bad_field("name", "must not be empty"));
        }
        check_len("name", &body.name, 100)?;
        if body.scopes.is_empty() {
            return Err(ApiError::bad_field("scopes", "give at least one scope"));
        }
        let mut scopes = Vec::new();
        for (i, s) in body.scopes.iter().enumerate() {
            let sc = Scope::parse(s).ok_or_else(|| {
                ApiError::bad_field(
                    format!("scopes[{i}]"),
                    format!(
                        "unknown scope '{}'; known: {}",
                        s.chars().take(64).collect::<String>(),
                        Scope::ALL.map(|s| s.as_str()).join(", ")
                    ),
                )
            })?;
            scopes.push(sc);
        }
        let expires = match &body.expires_at {
            None => None,
            Some(t) => {
                let ns = super::parse_time_ns_clamped(t).ok_or_else(|| {
                    ApiError::bad_field(
                        "expires_at",
                        "not an RFC 3339 time (e.g. 2030-01-01T00:00:00Z)",
                    )
                })?;
                if ns <= now {
                    return Err(ApiError::bad_field("expires_at", "must be in the future"));
                }
                Some(ns)
            }
        };
        Ok((scopes, expires))
    })();
    let (scopes, expires) = match valid {
        Ok(v) => v,
        Err(e) => return Err(st.fail(&caller, Some(p.name), Some(resource), e).await),
    };
    let name = body.name.clone();
    let by = caller.actor_label();
    let pname = p.name.clone();
    let (t, secret) = st
        .mutate(
            &caller,
            Some(p.name.clone()),
            resource,
            Some(params),
            StatusCode::CREATED,
            move |tx| tx.create_token(&pname, &name, &scopes, false, expires, &by, now),
            |(t, _secret)| Described {
                resource: token_resource(t),
                changes: vec![],
                // The secret never enters the audit log; only the id does.
                response: Some(json!({"id": t.id})),
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: TokenOut::new(&t, now),
            secret,
        }),
    ))
}

/// Get one token.
#[utoipa::path(get, path = "/api/flightdeck/v1/projects/{project}/tokens/{token_id}", tag = "tokens",
    params(ProjectPath, ("token_id" = String, Path, description = "token id")),
    responses((status = 200, body = TokenOut)))]
pub async fn get_token(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, token_id)): PathParams<(String, String)>,
) -> Result<Json<TokenOut>, ApiError> {
    path_slug(&project)?;
    let p = st.project_access(&caller, &project, Scope::Admin).await?;
    let t = blocking(&st, move |m| m.read(|tx| tx.token(&p.name, &token_id))).await?;
    Ok(Json(TokenOut::new(&t, st.now())))
}

/// Revoke a token; it stops working at once.
#[utoipa::path(delete, path = "/api/flightdeck/v1/projects/{project}/tokens/{token_id}", tag = "tokens",
    params(ProjectPath, ("token_id" = String, Path, description = "token id")),
    responses((status = 200, body = TokenOut)))]
pub async fn revoke_token(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, token_id)): PathParams<(String, String)>,
) -> Result<Json<TokenOut>, ApiError> {
    path_slug(&project)?;
    let p = st.project_access(&caller, &project, Scope::Admin).await?;
    let now = st.now();
    let resource = Resource {
        kind: "token".into(),
        id: Some(token_id.chars().take(100).collect()),
        name: None,
    };
    let pname = p.name.clone();
    let t = st
        .mutate(
            &caller,
            Some(p.name.clone()),
            resource,
            None,
            StatusCode::OK,
            move |tx| tx.revoke_token(&pname, &token_id, now),
            |t| Described {
                resource: token_resource(t),
                changes: vec![Change {
                    field: "status".into(),
                    before: "active".into(),
                    after: "revoked".into(),
                }],
                response: None,
            },
        )
        .await?;
    Ok(Json(TokenOut::new(&t, now)))
}

// ---- members ----------------------------------------------------------------

/// List a project's members and their roles.
#[utoipa::path(get, path = "/api/flightdeck/v1/projects/{project}/members", tag = "members",
    params(ProjectPath),
    responses((status = 200, body = MemberList)))]
pub async fn list_members(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
) -> Result<Json<MemberList>, ApiError> {
    path_slug(&project)?;
    let p = st.project_access(&caller, &project, Scope::Admin).await?;
    let rows = blocking(&st, move |m| m.read(|tx| tx.memberships(&p.name))).await?;
    Ok(Json(MemberList {
        members: rows.iter().map(MemberOut::from).collect(),
    }))
}

/// Give a user a role in a project (or change it).
#[utoipa::path(put, path = "/api/flightdeck/v1/projects/{project}/members/{user}", tag = "members",
    params(ProjectPath, ("user" = String, Path, description = "user name")),
    request_body = SetMember, responses((status = 200, body = MemberOut)))]
pub async fn set_member(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, user)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<SetMember>,
) -> Result<Json<MemberOut>, ApiError> {
    path_slug(&project)?;
    let p = st.project_access(&caller, &project, Scope::Admin).await?;
    let resource = Resource {
        kind: "membership".into(),
        id: None,
        name: Some(user.chars().take(100).collect()),
    };
    let Some(role) = Role::parse(&body.role) else {
        let e = ApiError::bad_field("role", "must be one of viewer, editor, admin");
        return Err(st.fail(&caller, Some(p.name), Some(resource), e).await);
    };
    let now = st.now();
    let pname = p.name.clone();
    let (_, m) = st
        .mutate(
            &caller,
            Some(p.name.clone()),
            resource,
            Some(json!({"role": body.role})),
            StatusCode::OK,
            move |tx| tx.set_membership(&pname, &user, role, now),
            |(before, m)| Described {
                resource: Resource {
                    kind: "membership".into(),
                    id: Some(m.user_id.clone()),
                    name: Some(m.user_name.clone()),
                },
                changes: vec![Change {
                    field: "role".into(),
                    before: before.map(|r| r.as_str()).into(),
                    after: m.role.as_str().into(),
                }],
                response: None,
            },
        )
        .await?;
    Ok(Json(MemberOut::from(&m)))
}

/// Remove a user from a project.
#[utoipa::path(delete, path = "/api/flightdeck/v1/projects/{project}/members/{user}", tag = "members",
    params(ProjectPath, ("user" = String, Path, description = "user name")),
    responses((status = 200, body = MemberOut)))]
pub async fn remove_member(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, user)): PathParams<(String, String)>,
) -> Result<Json<MemberOut>, ApiError> {
    path_slug(&project)?;
    let p = st.project_access(&caller, &project, Scope::Admin).await?;
    let pname = p.name.clone();
    let m = st
        .mutate(
            &caller,
            Some(p.name.clone()),
            Resource {
                kind: "membership".into(),
                id: None,
                name: Some(user.chars().take(100).collect()),
            },
            None,
            StatusCode::OK,
            move |tx| tx.remove_membership(&pname, &user),
            |m| Described {
                resource: Resource {
                    kind: "membership".into(),
                    id: Some(m.user_id.clone()),
                    name: Some(m.user_name.clone()),
                },
                changes: vec![Change {
                    field: "role".into(),
                    before: m.role.as_str().into(),
                    after: serde_json::Value::Null,
                }],
                response: None,
            },
        )
        .await?;
    Ok(Json(MemberOut::from(&m)))
}

// ---- users ------------------------------------------------------------------

/// List users (organization admins).
#[utoipa::path(get, path = "/api/flightdeck/v1/users", tag = "users", params(ListParams),
    responses((status = 200, body = UserList)))]
pub async fn list_users(
    State(st): State<AppState>,
    caller: Caller,
    Params(q): Params<ListParams>,
) -> Result<Json<UserList>, ApiError> {
    let limit = q.limit()?;
    let after = q.after()?;
    st.org_access(&caller, Scope::Admin).await?;
    let rows = blocking(&st, move |m| {
        m.read(|tx| tx.users(after.as_deref(), limit + 1))
    })
    .await?;
    let (rows, next_cursor) = page(rows, limit, |u| u.name.clone());
    Ok(Json(UserList {
        users: rows.iter().map(UserOut::from).collect(),
        next_cursor,
    }))
}

/// Create a user (organization admins).
#[utoipa::path(post, path = "/api/flightdeck/v1/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = UserOut)))]
pub async fn create_user(
    State(st): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateUser>,
) -> Result<(StatusCode, Json<UserOut>), ApiError> {
    st.org_access(&caller, Scope::Admin).await?;
    let resource = Resource {
        kind: "user".into(),
        id: None,
        name: Some(body.name.chars().take(100).collect()),
    };
    let valid =
        meta::check_user_name(&body.name).and_then(|_| meta::check_password(&body.password));
    if let Err(e) = valid {
        return Err(st.fail(&caller, None, Some(resource), e.into()).await);
    }
    // The password itself never reaches the audit log.
    // The user name is personal: `resource.name` carries it, sealed.
    let params = json!({"password": "[REDACTED]", "org_admin": body.org_admin});
    let now = st.now();
    let u = st
        .mutate(
            &caller,
            None,
            resource,
            Some(params),
            StatusCode::CREATED,
            move |tx| tx.create_user(&body.name, &body.password, body.org_admin, now),
            |u| Described {
                resource: Resource {
                    kind: "user".into(),
                    id: Some(u.id.clone()),
                    name: Some(u.name.clone()),
                },
                changes: vec![],
                response: Some(json!({"id": u.id})),
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(UserOut::from(&u))))
}

/// Get one user (organization admins, or the user themself).
#[utoipa::path(get, path = "/api/flightdeck/v1/users/{user}", tag = "users",
    params(("user" = String, Path, description = "user name")),
    responses((status = 200, body = UserOut)))]
pub async fn get_user(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(user): PathParams<String>,
) -> Result<Json<UserOut>, ApiError> {
    let is_self = matches!(&caller.who, Who::User { user: u, .. } if u.name == user);
    if !is_self {
        st.org_access(&caller, Scope::Admin).await?;
    }
    let u = blocking(&st, move |m| m.read(|tx| tx.user(&user))).await?;
    Ok(Json(UserOut::from(&u)))
}

/// Change a user's password (the user themself, or an org admin) or org-admin flag (org admins).
#[utoipa::path(patch, path = "/api/flightdeck/v1/users/{user}", tag = "users",
    params(("user" = String, Path, description = "user name")),
    request_body = UpdateUser, responses((status = 200, body = UserOut)))]
pub async fn update_user(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(user): PathParams<String>,
    JsonBody(body): JsonBody<UpdateUser>,
) -> Result<Json<UserOut>, ApiError> {
    let is_self = matches!(&caller.who, Who::User { user: u, .. } if u.name == user);
    if !is_self || body.org_admin.is_some() {
        st.org_access(&caller, Scope::Admin).await?;
    }
    let resource = Resource {
        kind: "user".into(),
        id: None,
        name: Some(user.chars().take(100).collect()),
    };
    if let Some(p) = &body.password
        && let Err(e) = meta::check_password(p)
    {
        return Err(st.fail(&caller, None, Some(resource), e.into()).await);
    }
    let params = json!({
        "password": body.password.as_ref().map(|_| "[REDACTED]"),
        "org_admin": body.org_admin,
    });
    let pw_changed = body.password.is_some();
    let (_, after) = st
        .mutate(
            &caller,
            None,
            resource,
            Some(params),
            StatusCode::OK,
            move |tx| tx.update_user(&user, body.password.as_deref(), body.org_admin),
            move |(before, after)| {
                let mut changes = vec![];
                if pw_changed {
                    changes.push(Change {
                        field: "password".into(),
                        before: "[REDACTED]".into(),
                        after: "[REDACTED]".into(),
                    });
                }
                if before.org_admin != after.org_admin {
                    changes.push(Change {
                        field: "org_admin".into(),
                        before: before.org_admin.into(),
                        after: after.org_admin.into(),
                    });
                }
                Described {
                    resource: Resource {
                        kind: "user".into(),
                        id: Some(after.id.clone()),
                        name: Some(after.name.clone()),
                    },
                    changes,
                    response: None,
                }
            },
        )
        .await?;
    Ok(Json(UserOut::from(&after)))
}

/// Delete a user (organization admins); their sessions and memberships go too.
#[utoipa::path(delete, path = "/api/flightdeck/v1/users/{user}", tag = "users",
    params(("user" = String, Path, description = "user name")),
    responses((status = 200, body = UserOut)))]
pub async fn delete_user(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(user): PathParams<String>,
) -> Result<Json<UserOut>, ApiError> {
    st.org_access(&caller, Scope::Admin).await?;
    let resource = Resource {
        kind: "user".into(),
        id: None,
        name: Some(user.chars().take(100).collect()),
    };
    if matches!(&caller.who, Who::User { user: u, .. } if u.name == user) {
        let e = ApiError::bad_field("user", "you cannot delete yourself");
        return Err(st.fail(&caller, None, Some(resource), e).await);
    }
    let u = st
        .mutate(
            &caller,
            None,
            resource,
            None,
            StatusCode::OK,
            move |tx| tx.delete_user(&user),
            |u| Described {
                resource: Resource {
                    kind: "user".into(),
                    id: Some(u.id.clone()),
                    name: Some(u.name.clone()),
                },
                changes: vec![],
                response: None,
            },
        )
        .await?;
    Ok(Json(UserOut::from(&u)))
}
