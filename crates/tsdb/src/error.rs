//! The store's error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the store. Per-sample rejections are not
/// errors: they are reported in [`crate::AppendReport`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file's content is damaged in a way that truncating a torn tail
    /// cannot fix. Nothing was repaired; restore the file from a backup or
    /// move it away and accept the loss.
    #[error("corrupt tsdb file {}: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("i/o error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A write or fsync of the WAL failed earlier; the store refuses every
    /// write since, because it cannot know what reached the disk. Restart
    /// the process (replay keeps what was durable).
    #[error("the metric store is poisoned by an earlier write failure ({0}); restart to recover")]
    Poisoned(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("the metric store directory is locked: {0}")]
    Locked(#[from] diskio::LockError),
    #[error("the metric store is closed")]
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

/// Extension to attach a path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T, Error>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T, Error> {
        self.map_err(|e| Error::io(path, e))
    }
}
