//! An exclusive lock on a store directory, held through a lock file.
//!
//! The lock is an OS advisory lock (`flock` on Unix) on `<dir>/<name>`: it is
//! released when the [`DirLock`] is dropped or the process dies (even by
//! SIGKILL), so a crashed writer never leaves a stale lock behind. The lock
//! file itself is left in place; its presence means nothing.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct DirLock {
    path: PathBuf,
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{} is locked by another process or handle (is another Flightdeck writing this data directory?)",
        path.display()
    )]
    Locked { path: PathBuf },
    #[error("cannot lock {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl DirLock {
    /// Takes the lock `<dir>/<file_name>` without waiting.
    pub fn try_acquire(dir: &Path, file_name: &str) -> Result<DirLock, LockError> {
        let path = dir.join(file_name);
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { path, _file: file }),
            Err(TryLockError::WouldBlock) => Err(LockError::Locked { path }),
            Err(TryLockError::Error(e)) => Err(io_err(e)),
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_until_first_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let a = DirLock::try_acquire(d.path(), "LOCK").unwrap();
        match DirLock::try_acquire(d.path(), "LOCK") {
            Err(LockError::Locked { path }) => assert_eq!(path, d.path().join("LOCK")),
            other => panic!("{other:?}"),
        }
        drop(a);
        DirLock::try_acquire(d.path(), "LOCK").unwrap();
    }
}
