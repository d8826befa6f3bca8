//! The store: [`Meta`] (connections) and [`Tx`] (every query, inside one
//! transaction), plus the row types they return.
//!
//! Times are unix nanoseconds (`i64`) throughout; the server formats them.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::secrets::{hash_password, hash_secret, new_session_secret, new_token, verify_password};
use crate::{MetaError, WriteError, schema};

/// Name of the project every new installation starts with.
pub const DEFAULT_PROJECT: &str = "default";
/// Name of the first user.
pub const ADMIN_USER: &str = "admin";

/// What a token (or a role) allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    MetricsWrite,
    MetricsRead,
    LogsWrite,
    LogsRead,
    AlertsManage,
    AuditRead,
    AuditWrite,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 8] = [
        Scope::MetricsWrite,
        Scope::MetricsRead,
        Scope::LogsWrite,
        Scope::LogsRead,
        Scope::AlertsManage,
        Scope::AuditRead,
        Scope::AuditWrite,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::MetricsWrite => "metrics:write",
            Scope::MetricsRead => "metrics:read",
            Scope::LogsWrite => "logs:write",
            Scope::LogsRead => "logs:read",
            Scope::AlertsManage => "alerts:manage",
            Scope::AuditRead => "audit:read",
            Scope::AuditWrite => "audit:write",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// A user's role in one project.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Viewer,
    Editor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Viewer, Role::Editor, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == s)
    }

    /// The scopes a role grants in its project.
    pub fn scopes(self) -> &'static [Scope] {
        use Scope::*;
        match self {
            Role::Viewer => &[MetricsRead, LogsRead],
            Role::Editor => &[MetricsRead, LogsRead, MetricsWrite, LogsWrite, AlertsManage],
            Role::Admin => &Scope::ALL,
        }
    }
}

/// Checks a project slug: lower-case letters, digits and inner dashes, 1–63 long.
pub fn check_slug(field: &'static str, s: &str) -> Result<(), MetaError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(MetaError::Invalid {
            field,
            message: format!(
                "'{}' is not a valid slug: use 1-63 lower-case letters, digits and inner dashes",
                s.chars().take(80).collect::<String>()
            ),
        })
    }
}

/// Checks a user name: letters, digits, `.`, `_`, `-`, 1–64 long, starting with a letter or digit.
pub fn check_user_name(s: &str) -> Result<(), MetaError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && s.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(MetaError::Invalid {
            field: "name",
            message: "user names are 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit".into(),
        })
    }
}

/// Checks a new password's length: 8–1024 characters (Unicode scalar
/// values, as the API's JSON Schema `minLength`/`maxLength` count them; a
/// byte count would let four two-byte characters pass as "8 long").
pub fn check_password(p: &str) -> Result<(), MetaError> {
    let n = p.chars().count();
    if !(8..=1024).contains(&n) {
        return Err(MetaError::Invalid {
            field: "password",
            message: "passwords are 8 to 1024 characters long".into(),
        });
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub name: String,
    pub org_admin: bool,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub project: String,
    pub user_id: String,
    pub user_name: String,
    pub role: Role,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub id: String,
    pub project_id: String,
    pub project: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub org_admin: bool,
    pub created_at: i64,
    pub created_by: String,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub first_used_at: Option<i64>,
}

impl Token {
    /// Usable at `now`: neither revoked nor expired.
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// A logged-in UI session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub user: User,
    pub csrf_token: String,
    pub expires_at: i64,
}

/// What the very first start creates; the secrets are shown once.
#[derive(Clone, Debug)]
pub struct Bootstrap {
    pub organization: Organization,
    pub project: Project,
    pub user: User,
    pub password: String,
    pub token: Token,
    pub token_secret: String,
}

/// The metadata database.
pub struct Meta {
    path: PathBuf,
    /// The one writer; held for the whole of [`Meta::write`], including the
    /// commit gate, so changes and their audit events are ordered alike.
    writer: Mutex<Connection>,
    /// Idle reader connections; a reader is taken out for one [`Meta::read`].
    readers: Mutex<Vec<Connection>>,
    /// Number of committed [`Meta::write`]s since open; bumped after each
    /// commit, read without a lock. See [`Meta::generation`].
    generation: AtomicU64,
}

fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a committed change survives a power cut, like the audit event
    // that records it.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

impl Meta {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Meta, MetaError> {
        let mut conn = open_conn(path)?;
        schema::migrate(&mut conn)?;
        Ok(Meta {
            path: path.to_path_buf(),
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
        })
    }

    /// A number that changes whenever a [`Meta::write`] commits (it is
    /// bumped after the commit, before `write` returns). A value read from
    /// the store after loading generation `g` is still current while
    /// `generation()` is `g`: caches of rows (the server's verified-token
    /// cache) tag entries with it. It covers changes made through this
    /// `Meta`; the data directory has no other writer.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Runs `f` in a read transaction (a consistent snapshot).
    pub fn read<T>(&self, f: impl FnOnce(&Tx) -> Result<T, MetaError>) -> Result<T, MetaError> {
        let taken = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match taken {
            Some(c) => c,
            None => open_conn(&self.path)?,
        };
        let result = (|| {
            let tx = conn.transaction()?;
            let out = f(&Tx { conn: &tx });
            tx.finish()?;
            out
        })();
        let mut idle = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < 8 {
            idle.push(conn);
        }
        result
    }

    /// Runs `change` in a write transaction, then `gate` with its outcome
    /// (success or failure); commits only if both succeed.
    ///
    /// The gate is where the caller makes the change's audit event durable.
    /// If the gate fails, nothing is committed, and the gate's error is
    /// returned even when the change itself had failed.
    pub fn write<T, G>(
        &self,
        change: impl FnOnce(&Tx) -> Result<T, MetaError>,
        gate: impl FnOnce(Result<&T, &MetaError>) -> Result<(), G>,
    ) -> Result<T, WriteError<G>> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(MetaError::from)?;
        let out = change(&Tx { conn: &tx });
        match gate(out.as_ref()) {
            Err(g) => Err(WriteError::Gate(g)),
            Ok(()) => {
                let value = out?;
                let committed = tx.commit().map_err(MetaError::from);
                // Bumped even if the commit reported an error: the change
                // may have landed, and a stale cache is the worse mistake.
                self.generation.fetch_add(1, Ordering::SeqCst);
                committed?;
                Ok(value)
            }
        }
    }
}

/// All queries, run inside one transaction opened by [`Meta::read`] or [`Meta::write`].
pub struct Tx<'a> {
    conn: &'a Connection,
}

const TOKEN_COLS: &str = "t.id, t.project_id, p.name, t.name, t.scopes, t.org_admin, t.created_at, t.created_by, t.expires_at, t.revoked_at, t.first_used_at";

fn token_row(r: &Row) -> rusqlite::Result<Token> {
    let scopes: String = r.get(4)?;
    Ok(Token {
        id: r.get(0)?,
        project_id: r.get(1)?,
        project: r.get(2)?,
        name: r.get(3)?,
        scopes: scopes.split(' ').filter_map(Scope::parse).collect(),
        org_admin: r.get(5)?,
        created_at: r.get(6)?,
        created_by: r.get(7)?,
        expires_at: r.get(8)?,
        revoked_at: r.get(9)?,
        first_used_at: r.get(10)?,
    })
}

fn project_row(r: &Row) -> rusqlite::Result<Project> {
    Ok(Project {
        id: r.get(0)?,
        name: r.get(1)?,
        display_name: r.get(2)?,
        description: r.get(3)?,
        created_at: r.get(4)?,
    })
}

fn user_row(r: &Row) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        name: r.get(1)?,
        org_admin: r.get(2)?,
        created_at: r.get(3)?,
    })
}

/// A legal hold on a project's audit log: while active (not released),
/// neither retention nor erasure touches that log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegalHold {
    pub id: String,
    pub project: String,
    pub reason: String,
    pub created_at: i64,
    /// Principal id of who placed it.
    pub created_by: String,
    pub released_at: Option<i64>,
    pub released_by: Option<String>,
}

const HOLD_COLS: &str =
    "h.id, p.name, h.reason, h.created_at, h.created_by, h.released_at, h.released_by";

fn hold_row(r: &Row) -> rusqlite::Result<LegalHold> {
    Ok(LegalHold {
        id: r.get(0)?,
        project: r.get(1)?,
        reason: r.get(2)?,
        created_at: r.get(3)?,
        created_by: r.get(4)?,
        released_at: r.get(5)?,
        released_by: r.get(6)?,
    })
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn not_found(kind: &'static str, name: &str) -> MetaError {
    MetaError::NotFound {
        kind,
        name: name.to_string(),
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

impl Tx<'_> {
    // ---- organization and first start -------------------------------------

    /// The organization, if the installation has been bootstrapped.
    pub fn organization(&self) -> Result<Option<Organization>, MetaError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, name, created_at FROM organization LIMIT 1",
                [],
                |r| {
                    Ok(Organization {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        created_at: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Creates the organization, the `default` project, the `admin` user
    /// (org admin, random password) and an admin token with every scope.
    /// Fails with Conflict if the installation already exists.
    pub fn bootstrap(&self, org_name: &str, now: i64) -> Result<Bootstrap, MetaError> {
        if self.organization()?.is_some() {
            return Err(MetaError::Conflict {
                kind: "organization",
                name: org_name.into(),
            });
        }
        let organization = Organization {
            id: new_id(),
            name: org_name.into(),
            created_at: now,
        };
        self.conn.execute(
            "INSERT INTO organization (id, name, created_at) VALUES (?1, ?2, ?3)",
            params![organization.id, organization.name, now],
        )?;
        let project = self.create_project(DEFAULT_PROJECT, "Default project", "", now)?;
        let password = crate::secrets::new_password();
        let user = self.create_user(ADMIN_USER, &password, true, now)?;
        self.set_membership(DEFAULT_PROJECT, ADMIN_USER, Role::Admin, now)?;
        let (token, token_secret) = self.create_token(
            DEFAULT_PROJECT,
            "admin",
            &Scope::ALL,
            true,
            None,
            "system",
            now,
        )?;
        Ok(Bootstrap {
            organization,
            project,
            user,
            password,
            token,
            token_secret,
        })
    }

    // ---- projects ----------------------------------------------------------

    pub fn create_project(
        &self,
        name: &str,
        display_name: &str,
        description: &str,
        now: i64,
    ) -> Result<Project, MetaError> {
        check_slug("name", name)?;
        let p = Project {
            id: new_id(),
            name: name.into(),
            display_name: display_name.into(),
            description: description.into(),
            created_at: now,
        };
        match self.conn.execute(
            "INSERT INTO projects (id, name, display_name, description, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![p.id, p.name, p.display_name, p.description, now],
        ) {
            Ok(_) => Ok(p),
            Err(e) if is_unique_violation(&e) => Err(MetaError::Conflict { kind: "project", name: name.into() }),
            Err(e) => Err(e.into()),
        }
    }

    pub fn project(&self, name: &str) -> Result<Project, MetaError> {
        self.conn
            .prepare_cached(
                "SELECT id, name, display_name, description, created_at FROM projects WHERE name = ?1",
            )?
            .query_row([name], project_row)
            .optional()?
            .ok_or_else(|| not_found("project", name))
    }

    /// Projects ordered by name, after `after`, at most `limit`.
    pub fn projects(&self, after: Option<&str>, limit: usize) -> Result<Vec<Project>, MetaError> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, name, display_name, description, created_at FROM projects WHERE name > ?1 ORDER BY name LIMIT ?2",
        )?;
        let rows = st.query_map(params![after.unwrap_or(""), limit as i64], project_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Updates display name and/or description; returns (before, after).
    pub fn update_project(
        &self,
        name: &str,
        display_name: Option<&str>,
        description: Option<&str>,
    ) -> Result<(Project, Project), MetaError> {
        let before = self.project(name)?;
        let mut after = before.clone();
        if let Some(d) = display_name {
            after.display_name = d.into();
        }
        if let Some(d) = description {
            after.description = d.into();
        }
        self.conn.execute(
            "UPDATE projects SET display_name = ?1, description = ?2 WHERE id = ?3",
            params![after.display_name, after.description, after.id],
        )?;
        Ok((before, after))
    }

    // ---- users and memberships ----------------------------------------------

    pub fn create_user(
        &self,
        name: &str,
        password: &str,
        org_admin: bool,
        now: i64,
    ) -> Result<User, MetaError> {
        check_user_name(name)?;
        check_password(password)?;
        let u = User {
            id: new_id(),
            name: name.into(),
            org_admin,
            created_at: now,
        };
        let hash = hash_password(password)?;
        match self.conn.execute(
            "INSERT INTO users (id, name, password_hash, org_admin, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![u.id, u.name, hash, org_admin, now],
        ) {
            Ok(_) => Ok(u),
            Err(e) if is_unique_violation(&e) => Err(MetaError::Conflict { kind: "user", name: name.into() }),
            Err(e) => Err(e.into()),
        }
    }

    pub fn user(&self, name: &str) -> Result<User, MetaError> {
        self.conn
            .query_row(
                "SELECT id, name, org_admin, created_at FROM users WHERE name = ?1",
                [name],
                user_row,
            )
            .optional()?
            .ok_or_else(|| not_found("user", name))
    }

    pub fn user_by_id(&self, id: &str) -> Result<User, MetaError> {
        self.conn
            .query_row(
                "SELECT id, name, org_admin, created_at FROM users WHERE id = ?1",
                [id],
                user_row,
            )
            .optional()?
            .ok_or_else(|| not_found("user", id))
    }

    pub fn users(&self, after: Option<&str>, limit: usize) -> Result<Vec<User>, MetaError> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, name, org_admin, created_at FROM users WHERE name > ?1 ORDER BY name LIMIT ?2",
        )?;
        let rows = st.query_map(params![after.unwrap_or(""), limit as i64], user_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Checks a login; `None` for an unknown user or a wrong password. The
    /// argon2 check runs even for unknown users so timing does not reveal
    /// which names exist.
    pub fn check_login(&self, name: &str, password: &str) -> Result<Option<User>, MetaError> {
        let row: Option<(User, String)> = self
            .conn
            .query_row(
                "SELECT id, name, org_admin, created_at, password_hash FROM users WHERE name = ?1",
                [name],
                |r| Ok((user_row(r)?, r.get(4)?)),
            )
            .optional()?;
        match row {
            Some((u, hash)) => Ok(verify_password(password, &hash).then_some(u)),
            None => {
                let _ = verify_password(password, dummy_hash());
                Ok(None)
            }
        }
    }

    /// Changes a user's password and/or org-admin flag; returns (before, after).
    pub fn update_user(
        &self,
        name: &str,
        password: Option<&str>,
        org_admin: Option<bool>,
    ) -> Result<(User, User), MetaError> {
        let before = self.user(name)?;
        let mut after = before.clone();
        if let Some(p) = password {
            check_password(p)?;
            self.conn.execute(
                "UPDATE users SET password_hash = ?1 WHERE id = ?2",
                params![hash_password(p)?, before.id],
            )?;
            // A new password ends every session of the user.
            self.conn
                .execute("DELETE FROM sessions WHERE user_id = ?1", [&before.id])?;
        }
        if let Some(a) = org_admin {
            after.org_admin = a;
            self.conn.execute(
                "UPDATE users SET org_admin = ?1 WHERE id = ?2",
                params![a, before.id],
            )?;
        }
        Ok((before, after))
    }

    pub fn delete_user(&self, name: &str) -> Result<User, MetaError> {
        let u = self.user(name)?;
        self.conn
            .execute("DELETE FROM users WHERE id = ?1", [&u.id])?;
        Ok(u)
    }

    /// Sets a user's role in a project; returns the previous role, if any.
    pub fn set_membership(
        &self,
        project: &str,
        user: &str,
        role: Role,
        now: i64,
    ) -> Result<(Option<Role>, Membership), MetaError> {
        let p = self.project(project)?;
        let u = self.user(user)?;
        let before = self.role_of(&u.id, &p.id)?;
        self.conn.execute(
            "INSERT INTO memberships (user_id, project_id, role, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role",
            params![u.id, p.id, role.as_str(), now],
        )?;
        let m = self
            .memberships(project)?
            .into_iter()
            .find(|m| m.user_id == u.id)
            .ok_or_else(|| not_found("membership", user))?;
        Ok((before, m))
    }

    pub fn remove_membership(&self, project: &str, user: &str) -> Result<Membership, MetaError> {
        let m = self
            .memberships(project)?
            .into_iter()
            .find(|m| m.user_name == user)
            .ok_or_else(|| not_found("membership", user))?;
        let p = self.project(project)?;
        self.conn.execute(
            "DELETE FROM memberships WHERE project_id = ?1 AND user_id = ?2",
            params![p.id, m.user_id],
        )?;
        Ok(m)
    }

    pub fn memberships(&self, project: &str) -> Result<Vec<Membership>, MetaError> {
        let p = self.project(project)?;
        let mut st = self.conn.prepare_cached(
            "SELECT u.id, u.name, m.role, m.created_at FROM memberships m JOIN users u ON u.id = m.user_id
             WHERE m.project_id = ?1 ORDER BY u.name",
        )?;
        let rows = st.query_map([&p.id], |r| {
            let role: String = r.get(2)?;
            Ok(Membership {
                project: p.name.clone(),
                user_id: r.get(0)?,
                user_name: r.get(1)?,
                role: Role::parse(&role).unwrap_or(Role::Viewer),
                created_at: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The role of a user in a project (by ids), if a member.
    pub fn role_of(&self, user_id: &str, project_id: &str) -> Result<Option<Role>, MetaError> {
        let role: Option<String> = self
            .conn
            .query_row(
                "SELECT role FROM memberships WHERE user_id = ?1 AND project_id = ?2",
                params![user_id, project_id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(role.and_then(|r| Role::parse(&r)))
    }

    // ---- tokens --------------------------------------------------------------

    /// Creates a token in a project; returns it and its secret (shown once).
    #[allow(clippy::too_many_arguments)]
    pub fn create_token(
        &self,
        project: &str,
        name: &str,
        scopes: &[Scope],
        org_admin: bool,
        expires_at: Option<i64>,
        created_by: &str,
        now: i64,
    ) -> Result<(Token, String), MetaError> {
        let p = self.project(project)?;
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        let secret = new_token();
        let t = Token {
            id: new_id(),
            project_id: p.id.clone(),
            project: p.name.clone(),
            name: name.into(),
            scopes,
            org_admin,
            created_at: now,
            created_by: created_by.into(),
            expires_at,
            revoked_at: None,
            first_used_at: None,
        };
        let scope_text = t
            .scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        self.conn.execute(
            "INSERT INTO tokens (id, project_id, name, secret_hash, scopes, org_admin, created_at, created_by, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![t.id, p.id, t.name, hash_secret(&secret), scope_text, org_admin, now, created_by, expires_at],
        )?;
        Ok((t, secret))
    }

    /// Tokens of a project ordered by id (creation order), after `after`.
    pub fn tokens(
        &self,
        project: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Token>, MetaError> {
        let p = self.project(project)?;
        let sql = format!(
            "SELECT {TOKEN_COLS} FROM tokens t JOIN projects p ON p.id = t.project_id
             WHERE t.project_id = ?1 AND t.id > ?2 ORDER BY t.id LIMIT ?3"
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map(params![p.id, after.unwrap_or(""), limit as i64], token_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One token of a project (NotFound if it belongs to another project).
    pub fn token(&self, project: &str, id: &str) -> Result<Token, MetaError> {
        let sql = format!(
            "SELECT {TOKEN_COLS} FROM tokens t JOIN projects p ON p.id = t.project_id
             WHERE p.name = ?1 AND t.id = ?2"
        );
        self.conn
            .query_row(&sql, params![project, id], token_row)
            .optional()?
            .ok_or_else(|| not_found("token", id))
    }

    /// The token whose secret this is, active or not.
    pub fn token_by_secret(&self, secret: &str) -> Result<Option<Token>, MetaError> {
        self.token_by_secret_hash(&hash_secret(secret))
    }

    /// The token whose secret has this [`hash_secret`], active or not.
    pub fn token_by_secret_hash(&self, secret_hash: &str) -> Result<Option<Token>, MetaError> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {TOKEN_COLS} FROM tokens t JOIN projects p ON p.id = t.project_id WHERE t.secret_hash = ?1"
        ))?;
        Ok(st.query_row([secret_hash], token_row).optional()?)
    }

    /// Revokes a token; Conflict if it already was.
    pub fn revoke_token(&self, project: &str, id: &str, now: i64) -> Result<Token, MetaError> {
        let mut t = self.token(project, id)?;
        if t.revoked_at.is_some() {
            return Err(MetaError::Conflict {
                kind: "revoked token",
                name: id.into(),
            });
        }
        self.conn.execute(
            "UPDATE tokens SET revoked_at = ?1 WHERE id = ?2",
            params![now, id],
        )?;
        t.revoked_at = Some(now);
        Ok(t)
    }

    /// Places a legal hold on a project's audit log.
    pub fn create_hold(
        &self,
        project: &str,
        reason: &str,
        by: &str,
        now: i64,
    ) -> Result<LegalHold, MetaError> {
        let p = self.project(project)?;
        let id = new_id();
        self.conn.execute(
            "INSERT INTO legal_holds (id, project_id, reason, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, p.id, reason, now, by],
        )?;
        self.hold(project, &id)
    }

    /// One hold of a project (active or released).
    pub fn hold(&self, project: &str, id: &str) -> Result<LegalHold, MetaError> {
        let sql = format!(
            "SELECT {HOLD_COLS} FROM legal_holds h JOIN projects p ON p.id = h.project_id
             WHERE p.name = ?1 AND h.id = ?2"
        );
        self.conn
            .query_row(&sql, params![project, id], hold_row)
            .optional()?
            .ok_or_else(|| not_found("legal hold", id))
    }

    /// A project's holds, oldest first (released ones too).
    pub fn holds(&self, project: &str) -> Result<Vec<LegalHold>, MetaError> {
        self.project(project)?;
        let sql = format!(
            "SELECT {HOLD_COLS} FROM legal_holds h JOIN projects p ON p.id = h.project_id
             WHERE p.name = ?1 ORDER BY h.created_at, h.id"
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map([project], hold_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A project's audit retention in days; `None` = the default.
    pub fn retention_days(&self, project: &str) -> Result<Option<u32>, MetaError> {
        self.conn
            .query_row(
                "SELECT audit_retention_days FROM projects WHERE name = ?1",
                [project],
                |r| r.get::<_, Option<u32>>(0),
            )
            .optional()?
            .ok_or_else(|| not_found("project", project))
    }

    /// Sets (or with `None` clears) a project's audit retention; returns
    /// the value before.
    pub fn set_retention_days(
        &self,
        project: &str,
        days: Option<u32>,
    ) -> Result<Option<u32>, MetaError> {
        let before = self.retention_days(project)?;
        self.conn.execute(
            "UPDATE projects SET audit_retention_days = ?1 WHERE name = ?2",
            params![days, project],
        )?;
        Ok(before)
    }

    /// Every project's name and retention override, by name.
    pub fn retention_overrides(&self) -> Result<Vec<(String, Option<u32>)>, MetaError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT name, audit_retention_days FROM projects ORDER BY name")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Names of the projects with at least one active hold.
    pub fn held_projects(&self) -> Result<Vec<String>, MetaError> {
        let mut st = self.conn.prepare_cached(
            "SELECT DISTINCT p.name FROM legal_holds h JOIN projects p ON p.id = h.project_id
             WHERE h.released_at IS NULL ORDER BY p.name",
        )?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Releases an active hold; Conflict if it already was.
    pub fn release_hold(
        &self,
        project: &str,
        id: &str,
        by: &str,
        now: i64,
    ) -> Result<LegalHold, MetaError> {
        let h = self.hold(project, id)?;
        if h.released_at.is_some() {
            return Err(MetaError::Conflict {
                kind: "released legal hold",
                name: id.into(),
            });
        }
        self.conn.execute(
            "UPDATE legal_holds SET released_at = ?1, released_by = ?2 WHERE id = ?3",
            params![now, by, id],
        )?;
        self.hold(project, id)
    }

    /// Records a token's first use; true only for the call that did it.
    pub fn mark_first_use(&self, id: &str, now: i64) -> Result<bool, MetaError> {
        Ok(self.conn.execute(
            "UPDATE tokens SET first_used_at = ?1 WHERE id = ?2 AND first_used_at IS NULL",
            params![now, id],
        )? == 1)
    }

    /// Tokens that expired at or before `now` and whose expiry has not been recorded.
    pub fn newly_expired_tokens(&self, now: i64) -> Result<Vec<Token>, MetaError> {
        let sql = format!(
            "SELECT {TOKEN_COLS} FROM tokens t JOIN projects p ON p.id = t.project_id
             WHERE t.expires_at IS NOT NULL AND t.expires_at <= ?1 AND t.expiry_recorded = 0 AND t.revoked_at IS NULL"
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map([now], token_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn mark_expiry_recorded(&self, id: &str) -> Result<(), MetaError> {
        self.conn
            .execute("UPDATE tokens SET expiry_recorded = 1 WHERE id = ?1", [id])?;
        Ok(())
    }

    // ---- sessions --------------------------------------------------------------

    /// Starts a session; returns (session secret for the cookie, CSRF token).
    pub fn create_session(
        &self,
        user_id: &str,
        now: i64,
        ttl_ns: i64,
    ) -> Result<(String, String), MetaError> {
        let secret = new_session_secret();
        let csrf = new_session_secret();
        self.conn.execute(
            "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![hash_secret(&secret), user_id, csrf, now, now.saturating_add(ttl_ns)],
        )?;
        self.conn
            .execute("DELETE FROM sessions WHERE expires_at <= ?1", [now])?;
        Ok((secret, csrf))
    }

    /// The live session for a cookie value.
    pub fn session(&self, secret: &str, now: i64) -> Result<Option<Session>, MetaError> {
        let row: Option<(String, String, i64)> = self
            .conn
            .query_row(
                "SELECT user_id, csrf_token, expires_at FROM sessions WHERE id_hash = ?1 AND expires_at > ?2",
                params![hash_secret(secret), now],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        match row {
            None => Ok(None),
            Some((uid, csrf_token, expires_at)) => Ok(Some(Session {
                user: self.user_by_id(&uid)?,
                csrf_token,
                expires_at,
            })),
        }
    }

    /// Ends a session; true if there was one.
    pub fn delete_session(&self, secret: &str) -> Result<bool, MetaError> {
        Ok(self.conn.execute(
            "DELETE FROM sessions WHERE id_hash = ?1",
            [hash_secret(secret)],
        )? == 1)
    }
}

/// An argon2id hash of a random string, checked against for unknown users
/// so that a login for a missing name costs as much as a wrong password.
fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| hash_password(&crate::secrets::new_password()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Meta) {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(&dir.path().join("meta.sqlite")).unwrap();
        (dir, m)
    }

    fn w<T>(m: &Meta, f: impl FnOnce(&Tx) -> Result<T, MetaError>) -> Result<T, MetaError> {
        m.write(f, |_| Ok::<(), ()>(())).map_err(|e| match e {
            WriteError::Meta(e) => e,
            WriteError::Gate(()) => unreachable!("gate never fails here"),
        })
    }

    #[test]
    fn generation_changes_with_every_commit_and_only_then() {
        let (_d, m) = open();
        let g0 = m.generation();
        let b = w(&m, |tx| tx.bootstrap("acme", 1)).unwrap();
        let g1 = m.generation();
        assert_ne!(g1, g0);
        // Reads, a failed change and a refused gate commit nothing.
        m.read(|tx| tx.token_by_secret(&b.token_secret)).unwrap();
        assert!(w(&m, |tx| tx.bootstrap("acme", 2)).is_err());
        assert!(
            m.write(|tx| tx.revoke_token("default", &b.token.id, 3), |_| Err(()))
                .is_err()
        );
        assert_eq!(m.generation(), g1);
        w(&m, |tx| tx.revoke_token("default", &b.token.id, 3)).unwrap();
        assert_ne!(m.generation(), g1);
        let t = m
            .read(|tx| tx.token_by_secret_hash(&hash_secret(&b.token_secret)))
            .unwrap()
            .unwrap();
        assert_eq!(t.revoked_at, Some(3));
    }

    #[test]
    fn bootstrap_once_then_conflict() {
        let (_d, m) = open();
        let b = w(&m, |tx| tx.bootstrap("acme", 1)).unwrap();
        assert_eq!(b.project.name, "default");
        assert!(b.token_secret.starts_with("fd_"));
        assert_eq!(b.token.scopes.len(), 8);
        assert!(matches!(
            w(&m, |tx| tx.bootstrap("acme", 2)),
            Err(MetaError::Conflict { .. })
        ));
        let t = m
            .read(|tx| tx.token_by_secret(&b.token_secret))
            .unwrap()
            .unwrap();
        assert_eq!(t.id, b.token.id);
        assert!(
            m.read(|tx| tx.check_login("admin", &b.password))
                .unwrap()
                .is_some()
        );
        assert!(
            m.read(|tx| tx.check_login("admin", "wrong-password"))
                .unwrap()
                .is_none()
        );
        assert!(
            m.read(|tx| tx.check_login("nobody", "wrong-password"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn failed_gate_commits_nothing() {
        let (_d, m) = open();
        let r = m.write(
            |tx| tx.create_project("p1", "P1", "", 1),
            |_| Err::<(), _>("audit down"),
        );
        assert!(matches!(r, Err(WriteError::Gate("audit down"))));
        assert!(matches!(
            m.read(|tx| tx.project("p1")),
            Err(MetaError::NotFound { .. })
        ));
    }

    #[test]
    fn tokens_are_per_project_and_revocable() {
        let (_d, m) = open();
        w(&m, |tx| tx.bootstrap("acme", 1)).unwrap();
        w(&m, |tx| tx.create_project("b", "B", "", 1)).unwrap();
        let (t, _s) = w(&m, |tx| {
            tx.create_token("b", "ci", &[Scope::MetricsWrite], false, Some(10), "x", 1)
        })
        .unwrap();
        assert!(m.read(|tx| tx.token("default", &t.id)).is_err());
        assert!(t.is_active(9) && !t.is_active(10));
        w(&m, |tx| tx.revoke_token("b", &t.id, 5)).unwrap();
        assert!(matches!(
            w(&m, |tx| tx.revoke_token("b", &t.id, 6)),
            Err(MetaError::Conflict { .. })
        ));
        assert_eq!(m.read(|tx| tx.tokens("b", None, 10)).unwrap().len(), 1);
    }

    #[test]
    fn slugs_are_checked() {
        for bad in ["", "A", "-a", "a-", "a_b", &"a".repeat(64)] {
            assert!(check_slug("name", bad).is_err(), "{bad}");
        }
        for good in ["a", "shop-1", "default"] {
            assert!(check_slug("name", good).is_ok(), "{good}");
        }
    }

    #[test]
    fn password_length_counts_characters() {
        for bad in ["1234567", "éééé", &"é".repeat(1025)] {
            assert!(check_password(bad).is_err(), "{bad}");
        }
        for good in ["12345678", &"é".repeat(8), &"é".repeat(1024)] {
            assert!(check_password(good).is_ok(), "{good}");
        }
    }
}
