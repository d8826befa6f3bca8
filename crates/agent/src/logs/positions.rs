//! The saved read positions of the file tailer (like promtail's
//! `positions.yaml`): one JSON document,
//!
//! ```json
//! {"version":1,"files":[{"path":"/var/log/syslog","dev":2049,"inode":1234,"offset":5678}]}
//! ```
//!
//! A file is known by its identity (device and inode), not its path, so a
//! file renamed by rotation keeps its offset. `offset` is the first byte
//! not yet acknowledged by the sink. The document is replaced atomically
//! (temporary file, fsync, rename, directory fsync): after a crash it holds
//! the old positions or the new ones, never a mix.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use diskio::Faults;
use serde::{Deserialize, Serialize};

/// A file's identity: (device, inode).
pub type FileId = (u64, u64);

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FilePos {
    pub path: String,
    pub dev: u64,
    pub inode: u64,
    pub offset: u64,
}

#[derive(Serialize, Deserialize, Default)]
struct Doc {
    version: u32,
    files: Vec<FilePos>,
}

/// Why the positions file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PositionsError {
    #[error("cannot read positions file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "positions file {path} is not valid ({source}); move it away to start over (files are then read according to read_from)"
    )]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Loads the positions; `Ok(None)` when the file does not exist yet (a
/// first start).
pub fn load(path: &Path) -> Result<Option<BTreeMap<FileId, FilePos>>, PositionsError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PositionsError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let doc: Doc = serde_json::from_slice(&bytes).map_err(|source| PositionsError::Corrupt {
        path: path.to_owned(),
        source,
    })?;
    Ok(Some(
        doc.files
            .into_iter()
            .map(|p| ((p.dev, p.inode), p))
            .collect(),
    ))
}

/// Replaces the positions file with `files`.
pub fn save<'a>(
    path: &Path,
    files: impl IntoIterator<Item = &'a FilePos>,
    faults: &Faults,
) -> io::Result<()> {
    let doc = Doc {
        version: 1,
        files: files.into_iter().cloned().collect(),
    };
    let bytes = serde_json::to_vec(&doc).map_err(io::Error::other)?;
    diskio::atomic_write(path, &bytes, faults)
}

/// Loads a saved journal cursor (`None` when there is none yet).
pub fn load_cursor(path: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim().is_empty() => Ok(None),
        Ok(s) => Ok(Some(s.trim().to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces the saved journal cursor, atomically.
pub fn save_cursor(path: &Path, cursor: &str, faults: &Faults) -> io::Result<()> {
    diskio::atomic_write(path, format!("{cursor}\n").as_bytes(), faults)
}
