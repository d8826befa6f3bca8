//! The store's error type: typed, with the offending path or input.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the log store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file is damaged in a way that truncating a torn WAL tail cannot
    /// fix. Nothing was repaired: restore the file from a backup, or move it
    /// away and accept the loss of its entries.
    #[error("corrupt log store file {}: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("i/o error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A WAL write or fsync failed earlier; every write since is refused,
    /// because what reached the disk is unknown. Restart the process (replay
    /// keeps what was durable).
    #[error("the log store is poisoned by an earlier write failure ({0}); restart to recover")]
    Poisoned(String),
    /// The caller's input breaks a limit or a rule; the message says which.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("the log store directory is locked: {0}")]
    Locked(#[from] diskio::LockError),
    #[error("the log store is closed")]
    Closed,
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, detail: impl Into<String>) -> Error {
        Error::Corrupt {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

/// Attaches a path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T, Error>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T, Error> {
        self.map_err(|e| Error::io(path, e))
    }
}
