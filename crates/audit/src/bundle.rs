//! Auditor export bundles behind `flightdeck audit bundle`: one audit
//! transparency log copied, through the same "relative path → bytes"
//! fetch function as [`crate::verify`] (a data directory or a server),
//! into a folder laid out exactly as a tlog-tiles log — `checkpoint`,
//! `tile/<L>/<N>[.p/<W>]`, `tile/entries/<N>[.p/<W>]` — plus `key` (the
//! verifier key string) and a `README.md` the caller supplies. Any static
//! web server can serve the folder as a tlog-tiles log, and
//! `flightdeck audit verify --dir` or a standard tlog-tiles client checks
//! it offline.
//!
//! The checkpoint is read first and the files are those its size implies
//! (full tiles and bundles, and the partial ones at exactly that size):
//! the writer never signs a size whose files are not on disk and never
//! rewrites a file, so copying beside a running server gives a consistent
//! log. Nothing is verified here; the caller runs [`crate::verify`] on
//! the written folder (a copy taken from a tampered source is written as
//! found, and then fails verification).

use std::path::{Path, PathBuf};

use merkle::tiles::{bundles_for_size, tiles_for_size};
use merkle::{Checkpoint, Note};

use crate::files;
use crate::verify::Fetched;

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The checkpoint's origin line (not yet verified).
    pub origin: String,
    pub size: u64,
    /// Hash tiles and entry bundles copied.
    pub tiles: u64,
    /// Bytes of all files written.
    pub bytes: u64,
}

/// Why a bundle could not be written: the source or the folder.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{place}: {reason}")]
    Source { place: String, reason: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: the output folder exists and is not empty; give a new or empty one",
        path.display()
    )]
    NotEmpty { path: PathBuf },
}

fn io(path: &Path, source: std::io::Error) -> BundleError {
    BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn get(fetch: &mut impl FnMut(&str) -> Fetched, path: &str) -> Result<Vec<u8>, BundleError> {
    match fetch(path) {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err(BundleError::Source {
            place: path.to_string(),
            reason: "missing".into(),
        }),
        Err(e) => Err(BundleError::Source {
            place: path.to_string(),
            reason: format!("cannot be read: {e}"),
        }),
    }
}

/// Copies one log through `fetch` into `out` (created; it must not exist
/// or be empty), with `key` (a verifier key string) as `key` and `readme`
/// as `README.md`. The checkpoint is written after the tiles it covers, the
/// README last.
pub fn write_bundle(
    mut fetch: impl FnMut(&str) -> Fetched,
    out: &Path,
    key: &str,
    readme: &str,
) -> Result<Written, BundleError> {
    match std::fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BundleError::NotEmpty {
                    path: out.to_path_buf(),
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(out, e)),
    }
    let cp_bytes = get(&mut fetch, files::CHECKPOINT)?;
    let bad = |reason: String| BundleError::Source {
        place: files::CHECKPOINT.into(),
        reason,
    };
    let note = Note::parse(&cp_bytes).map_err(|e| bad(format!("not a signed note: {e}")))?;
    let cp =
        Checkpoint::parse(note.text()).map_err(|e| bad(format!("not a tlog checkpoint: {e}")))?;
    let mut written = Written {
        origin: cp.origin().to_string(),
        size: cp.size(),
        tiles: 0,
        bytes: 0,
    };
    let mut put = |rel: &str, bytes: &[u8]| -> Result<(), BundleError> {
        let path = out.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| io(&path, e))?;
        written.bytes += bytes.len() as u64;
        Ok(())
    };
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    let paths = tiles_for_size(cp.size())
        .into_iter()
        .map(|t| t.path())
        .chain(bundles_for_size(cp.size()).into_iter().map(|b| b.path()));
    let mut tiles = 0;
    for rel in paths {
        let data = get(&mut fetch, &rel)?;
        put(&rel, &data)?;
        tiles += 1;
    }
    put(
        files::BUNDLE_KEY,
        format!("{}\n", key.trim_end()).as_bytes(),
    )?;
    put(files::CHECKPOINT, &cp_bytes)?;
    put(files::BUNDLE_README, readme.as_bytes())?;
    written.tiles = tiles;
    Ok(written)
}
