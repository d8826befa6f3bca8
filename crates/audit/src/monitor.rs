//! The incremental verifier behind `flightdeck audit monitor`: checks what
//! changed in one audit transparency log since the last run, from the same
//! public read format and fetch function as [`crate::verify`], and keeps
//! what it needs for the next run in a small state file.
//!
//! # Checks, in order
//!
//! 1. The checkpoint: signed by one of the given keys, the expected origin
//!    ([`crate::verify`]'s check).
//! 2. Against the saved state: not smaller (rollback), and at the same size
//!    the same root (fork).
//! 3. Every entry since the saved size, from the entry bundles: its leaf
//!    hashes extend the saved compact range (the right edge of the saved
//!    tree) to the checkpoint's root. That proves both that the new
//!    entries are the signed ones and that the new tree extends the saved
//!    one.
//! 4. A consistency proof from the saved size to the new one, built from
//!    the served hash tiles (what any tlog client would be given),
//!    verifies. With check 3 this tells a fork (both fail), a bad entry
//!    (named by comparing the entries with the level-0 tiles) and a bad
//!    hash tile (only the proof fails) apart.
//! 5. Each new entry's content, with `verify.rs`'s check: an audit event of
//!    this log, `log_index` its position, `seq` strictly increasing and
//!    `time` never decreasing, continuing from the last entry of the
//!    previous run.
//! 6. The witness policy, as `verify` checks it (a witnessed checkpoint's
//!    consistency is proven from the tiles).
//!
//! The first run (no state) checks every entry from 0. Cost per run: the
//! new entry bundles and O(log n) proof tiles, O(new entries) hashing and
//! parsing, 32 bytes of memory per new entry; the state is about 3 KB.

use std::path::Path;

use merkle::tiles::{BundleId, TileId, TileNodes, decode_entry_bundle};
use merkle::{CompactRange, Hash, leaf_hash};
use serde::{Deserialize, Serialize};

use crate::verify::{
    Expect, Failure, Fetched, Witnessed, check_entry, check_witnesses, fail, get, open_note,
};

/// Version of the state file format.
pub const STATE_VERSION: u32 = 1;

/// What a monitor keeps between runs (JSON, see
/// `docs/format/audit-tlog.md`): the last verified checkpoint, the right
/// edge of its tree, and the last entry's `seq` and `time`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub version: u32,
    pub origin: String,
    pub size: u64,
    /// Root hash, standard base64.
    pub root: String,
    /// The verified checkpoint as it was served (with its cosignatures).
    pub checkpoint: String,
    /// The compact range `[0, size)`: hashes of its perfect subtrees, left
    /// to right, standard base64 (at most 64).
    pub range: Vec<String>,
    /// `seq` and `time` (unix ns) of the last entry, `None` for size 0.
    pub last_seq: Option<u64>,
    pub last_time_ns: Option<i64>,
    /// Size up to which the log was witnessed at the last run, if a
    /// witness policy was given.
    pub witnessed_size: Option<u64>,
}

/// Why a state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the state file {}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the state file {} is not a monitor state: {reason}", path.display())]
    Invalid {
        path: std::path::PathBuf,
        reason: String,
    },
}

impl State {
    /// Reads a state file; `Ok(None)` when it does not exist (first run).
    /// The saved compact range must give the saved root.
    pub fn load(path: &Path) -> Result<Option<State>, StateError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    path: path.into(),
                    source,
                });
            }
        };
        let invalid = |reason: String| StateError::Invalid {
            path: path.into(),
            reason,
        };
        let s: State = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        if s.version != STATE_VERSION {
            return Err(invalid(format!(
                "version {}, this program reads {STATE_VERSION}",
                s.version
            )));
        }
        let root = s.range_root().map_err(invalid)?;
        if root.to_base64() != s.root {
            return Err(invalid(
                "its compact range does not give its root (edited or damaged)".into(),
            ));
        }
        Ok(Some(s))
    }

    /// Writes the state atomically (temp file, fsync, rename, directory
    /// fsync): a crash leaves the old state or the new one.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        text.push(b'\n');
        diskio::atomic_write(path, &text, &diskio::Faults::disabled())
    }

    fn range(&self) -> Result<CompactRange, String> {
        let hashes = self
            .range
            .iter()
            .map(|h| Hash::from_base64(h).map_err(|e| format!("bad hash in range: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        CompactRange::from_parts(0, self.size, hashes).map_err(|e| e.to_string())
    }

    fn range_root(&self) -> Result<Hash, String> {
        self.range()?.root().map_err(|e| e.to_string())
    }
}

/// A run that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorReport {
    pub origin: String,
    /// Size of the saved state (0 on the first run).
    pub old_size: u64,
    pub size: u64,
    pub root: Hash,
    /// Hash tiles and entry bundles fetched.
    pub tiles: u64,
    pub witnessed: Option<Witnessed>,
}

impl std::fmt::Display for MonitorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OK: {} size {} root {}, {} new entries verified since size {}, {} tiles read",
            self.origin,
            self.size,
            self.root.to_base64(),
            self.size - self.old_size,
            self.old_size,
            self.tiles
        )?;
        if let Some(w) = &self.witnessed {
            write!(f, "; {w}")?;
        }
        Ok(())
    }
}

/// A consistency proof from `m` to `n` built from the served tiles, and
/// whether it links `old_root` to `new_root`. `Err` when a tile cannot be
/// fetched.
fn tiles_prove_consistency(
    fetch: &mut impl FnMut(&str) -> Fetched,
    tiles: &mut u64,
    m: u64,
    n: u64,
    old_root: &Hash,
    new_root: &Hash,
) -> Result<bool, Failure> {
    if m == n {
        return Ok(old_root == new_root);
    }
    if m == 0 {
        return Ok(*old_root == merkle::empty_root());
    }
    let mut missing: Option<Failure> = None;
    let mut src = TileNodes::new(n, |t: TileId| -> Result<Vec<u8>, ()> {
        *tiles += 1;
        match get(fetch, &t.path()) {
            Ok(b) => Ok(b),
            Err(f) => {
                missing = Some(f);
                Err(())
            }
        }
    });
    let proof = merkle::consistency_proof(m, n, &mut src);
    drop(src);
    if let Some(f) = missing {
        return Err(f);
    }
    Ok(match proof {
        Ok(p) => merkle::verify_consistency(m, n, &p, old_root, new_root).is_ok(),
        // A tile of the wrong length: the tiles prove nothing.
        Err(_) => false,
    })
}

/// Verifies what changed in a log since `state` (everything on the first
/// run) and returns the report and the state to save. See the module
/// documentation for the checks; `expect.since` is not used (the state
/// takes its place).
pub fn monitor(
    mut fetch: impl FnMut(&str) -> Fetched,
    expect: &Expect,
    state: Option<&State>,
) -> Result<(MonitorReport, State), Failure> {
    let cp_bytes = get(&mut fetch, crate::files::CHECKPOINT)?;
    let (cp, note) = open_note(&cp_bytes, expect, "checkpoint")?;
    let (n, root) = (cp.size(), *cp.root());

    let (m, old_root, mut range, mut last) = match state {
        None => (0, merkle::empty_root(), CompactRange::new(0), None),
        Some(s) => {
            if s.origin != expect.origin {
                return fail(
                    "state",
                    format!(
                        "the state file is for origin {:?}, not {:?}",
                        s.origin, expect.origin
                    ),
                );
            }
            let range = s.range().or_else(|e| fail("state", e))?;
            let old_root = range.root().or_else(|e| fail("state", e.to_string()))?;
            let last = s.last_seq.zip(s.last_time_ns);
            (s.size, old_root, range, last)
        }
    };
    if n < m {
        return fail(
            "checkpoint",
            format!("size {n} is smaller than the saved checkpoint's {m}: rollback"),
        );
    }
    if n == m && root != old_root {
        return fail(
            "checkpoint",
            format!(
                "same size {n} as the saved checkpoint but root {} instead of {}: fork",
                root.to_base64(),
                old_root.to_base64()
            ),
        );
    }

    // The new entries, hashed onto the saved right edge; their content is
    // checked on the way, and the first problem kept until they are known
    // to be the signed ones (as `verify` does).
    let mut tiles = 0u64;
    let mut leaves: Vec<Hash> = Vec::new();
    let mut content: Option<Failure> = None;
    let bundle_of = |i: u64| BundleId::new(i / 256, (n - i / 256 * 256).min(256));
    let mut k = m / 256;
    while m < n && k * 256 < n {
        let b = bundle_of(k * 256).or_else(|e| fail("checkpoint", e.to_string()))?;
        let path = b.path();
        let data = get(&mut fetch, &path)?;
        tiles += 1;
        let decoded = decode_entry_bundle(&data)
            .or_else(|e| fail(&path, format!("not an entry bundle: {e}")))?;
        if decoded.len() as u64 != b.width() {
            return fail(
                &path,
                format!("{} entries, expected {}", decoded.len(), b.width()),
            );
        }
        for (j, e) in decoded.iter().enumerate() {
            let i = b.first_leaf() + j as u64;
            if i < m {
                continue;
            }
            leaves.push(leaf_hash(e));
            if content.is_none() {
                content = check_entry(e, i, expect.log.as_ref(), &mut last)
                    .err()
                    .map(|reason| Failure {
                        place: format!("entry {i} ({path})"),
                        reason,
                    });
            }
        }
        k += 1;
    }
    for h in &leaves {
        range.append(*h);
    }
    let entries_ok = range.root().ok() == Some(root);
    let proof_ok = tiles_prove_consistency(&mut fetch, &mut tiles, m, n, &old_root, &root)?;
    match (entries_ok, proof_ok) {
        (true, true) => {}
        (true, false) => {
            return fail(
                "checkpoint",
                format!(
                    "the new entries extend the saved tree (size {m}) to this root, but the consistency proof built from the served hash tiles does not verify: a served hash tile is wrong (`flightdeck audit verify` names it)"
                ),
            );
        }
        (false, true) => {
            // The tree is consistent; name the first entry its tile disagrees with.
            let mut tile: Option<(TileId, Vec<u8>)> = None;
            for (idx, leaf) in leaves.iter().enumerate() {
                let i = m + idx as u64;
                let t = TileId::new(0, i / 256, (n - i / 256 * 256).min(256))
                    .or_else(|e| fail("checkpoint", e.to_string()))?;
                if tile.as_ref().is_none_or(|(have, _)| *have != t) {
                    tile = Some((t, get(&mut fetch, &t.path())?));
                }
                let data = tile.as_ref().map(|(_, d)| d.as_slice()).unwrap_or(&[]);
                let slot = (i % 256) as usize;
                if data.get(slot * 32..slot * 32 + 32) != Some(&leaf.0[..]) {
                    let bundle = bundle_of(i).map(|b| b.path()).unwrap_or_default();
                    return fail(
                        format!("entry {i} ({bundle})"),
                        format!("leaf hash differs from {} slot {slot}", t.path()),
                    );
                }
            }
            return fail(
                "checkpoint",
                format!(
                    "root {} is not the root of the saved tree extended by the new entries",
                    root.to_base64()
                ),
            );
        }
        (false, false) => {
            return fail(
                "checkpoint",
                format!(
                    "size {n} root {} does not extend the saved checkpoint (size {m}, root {}): neither the new entries nor a consistency proof from the served tiles link them: fork",
                    root.to_base64(),
                    old_root.to_base64()
                ),
            );
        }
    }
    if let Some(f) = content {
        return Err(f);
    }

    let witnessed = check_witnesses(&cp, &note, expect, &mut fetch, |fetch, w, wroot| {
        tiles_prove_consistency(fetch, &mut tiles, w, n, wroot, &root)
    })?;

    let note_text = String::from_utf8(cp_bytes)
        .or_else(|_| fail("checkpoint", "not UTF-8 (cannot happen after parsing)"))?;
    let new_state = State {
        version: STATE_VERSION,
        origin: cp.origin().to_string(),
        size: n,
        root: root.to_base64(),
        checkpoint: note_text,
        range: range.hashes().iter().map(Hash::to_base64).collect(),
        last_seq: last.map(|(s, _)| s),
        last_time_ns: last.map(|(_, t)| t),
        witnessed_size: witnessed.as_ref().map(|w| w.size),
    };
    Ok((
        MonitorReport {
            origin: new_state.origin.clone(),
            old_size: m,
            size: n,
            root,
            tiles,
            witnessed,
        },
        new_state,
    ))
}
