//! Metadata store: the organization, its projects, users, project
//! memberships, API tokens and UI sessions, in one SQLite file.
//!
//! This crate owns identity and tenancy *data*: rows, secrets hashing
//! (argon2 for passwords, SHA-256 for high-entropy tokens), and the rules
//! that keep it consistent (unique slugs, one role per user and project).
//! It does not know HTTP, JSON or the audit log: the server decides who may
//! do what, and passes a *commit gate* to [`Meta::write`] so that a change
//! is committed only once its audit event is durable (fail closed).
//!
//! Concurrency: one writer connection behind a `std::sync::Mutex` (writes
//! are rare management actions, and SQLite allows one writer anyway) and a
//! small pool of reader connections (WAL mode lets them read while a write
//! is in progress). A std mutex, not tokio's: callers run on blocking
//! threads, never across an `.await`.

mod schema;
pub mod secrets;
mod store;

pub use store::*;

use thiserror::Error;

/// Everything that can go wrong in the metadata store.
#[derive(Debug, Error)]
pub enum MetaError {
    /// A named thing does not exist (or is not visible to the caller).
    #[error("{kind} '{name}' not found")]
    NotFound { kind: &'static str, name: String },
    /// A unique name is taken.
    #[error("{kind} '{name}' already exists")]
    Conflict { kind: &'static str, name: String },
    /// Input that passed the HTTP layer but breaks a store rule.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The SQLite file could not be read or written.
    #[error("metadata database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// Password hashing failed (never for valid input; reported, not panicked).
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// What [`Meta::write`] returns when the change or its gate failed.
#[derive(Debug, Error)]
pub enum WriteError<G> {
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// The commit gate (the audit append) refused: nothing was committed.
    #[error("commit gate failed")]
    Gate(G),
}
