//! The audit crate's one error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong reading or writing the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log I/O error on {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },

    /// A file holds bytes that are neither a valid record nor a torn tail.
    /// Nothing is repaired automatically: inspect or restore the file.
    #[error("audit log file {} is corrupt at byte offset {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// An earlier write, fsync or index update failed; the log accepts no
    /// more appends until the process reopens it (fail closed, no retry).
    #[error(
        "the audit log is poisoned by an earlier write failure and accepts no more events; restart to recover"
    )]
    Poisoned,

    #[error("audit log directory is locked by another writer ({})", path.display())]
    Locked { path: PathBuf },

    #[error("invalid pagination cursor: {0} (use the next_cursor of a previous page, unchanged)")]
    BadCursor(String),

    #[error(
        "audit event is {bytes} bytes in canonical form, over the {max}-byte limit; shrink its free-form fields"
    )]
    EventTooLarge { bytes: usize, max: usize },

    /// The SQLite search index failed.
    #[error("audit search index: {0}")]
    Index(String),

    /// The subject keystore (`subjects.sqlite`) failed. A failure to
    /// create a key fails that append; nothing unsealed is written.
    #[error("audit subject keystore: {0}")]
    Keystore(String),

    #[error("the audit log is shut down")]
    Closed,

    #[error("the audit log was opened read-only; it cannot append")]
    ReadOnly,

    /// A log whose signed checkpoint covers entries the segments no longer
    /// hold: no newer checkpoint is signed for it (that would be a fork).
    #[error(
        "the audit transparency log {log} is frozen: its signed checkpoint covers events the segments lost, so no new checkpoint is signed until they are restored"
    )]
    LogFrozen { log: String },
}

impl AuditError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> AuditError {
        AuditError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> AuditError {
        AuditError::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// A copy for fanning one batch failure out to every caller of the batch.
    pub(crate) fn duplicate(&self) -> AuditError {
        match self {
            AuditError::Io { path, source } => AuditError::Io {
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            AuditError::Corrupt {
                path,
                offset,
                reason,
            } => AuditError::Corrupt {
                path: path.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            AuditError::Poisoned => AuditError::Poisoned,
            AuditError::Locked { path } => AuditError::Locked { path: path.clone() },
            AuditError::BadCursor(s) => AuditError::BadCursor(s.clone()),
            AuditError::EventTooLarge { bytes, max } => AuditError::EventTooLarge {
                bytes: *bytes,
                max: *max,
            },
            AuditError::Index(s) => AuditError::Index(s.clone()),
            AuditError::Keystore(s) => AuditError::Keystore(s.clone()),
            AuditError::Closed => AuditError::Closed,
            AuditError::ReadOnly => AuditError::ReadOnly,
            AuditError::LogFrozen { log } => AuditError::LogFrozen { log: log.clone() },
        }
    }
}

impl From<rusqlite::Error> for AuditError {
    fn from(e: rusqlite::Error) -> AuditError {
        AuditError::Index(e.to_string())
    }
}
