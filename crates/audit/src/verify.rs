//! The outside-in verifier behind `flightdeck audit verify`: checks one
//! audit transparency log using only its public tlog-tiles read format
//! (`checkpoint`, `tile/<L>/<N>[.p/<W>]`, `tile/entries/<N>[.p/<W>]`, see
//! `docs/format/audit-tlog.md`), never the segments, the index or the
//! writer's code paths. The caller supplies a fetch function from a
//! relative path to bytes, so the same code reads a data directory
//! ([`dir_fetcher`]) or a server (the binary fetches over HTTP: no HTTP
//! client in this crate).
//!
//! # Checks, in order
//!
//! 1. The checkpoint: a signed note with a signature by the given verifier
//!    key that verifies, the expected origin, a well-formed body.
//! 2. With a saved checkpoint (`--since-checkpoint`): it verifies with the
//!    same key and origin; the current size is not smaller (rollback), and
//!    at the same size the root is the same (fork).
//! 3. Every file the size implies exists and has the right length / number
//!    of entries (a missing, truncated or padded file is named).
//! 4. The root: the leaf hashes of the level-0 tiles and the leaf hashes of
//!    the entries are both compared with the checkpoint root; whichever
//!    side gives the root is authentic, and the first place where the
//!    other side differs is named (an entry, or a level-0 tile slot).
//!    Neither giving the root means a tree other than the signed one.
//! 5. Every hash tile above level 0, partial ones too, is recomputed from
//!    the authentic leaves and compared byte for byte.
//! 6. Every entry parses as an [`Event`] of this log (its `project`) with
//!    `log_index` equal to its position; `seq` strictly increases and
//!    `time` never decreases.
//! 7. The saved checkpoint's root is the root of the first `size` leaves
//!    of the authentic tree (consistency: else a fork).
//! 8. With a witness policy (`--witness`, `--witness-quorum N`): for each
//!    given witness, the checkpoint's own cosignature by it, or else
//!    `witnessed/<its key ID>` (the newest checkpoint it cosigned), which
//!    must be signed by the log, carry a valid cosignature by it, be no
//!    larger than the verified tree (else a rollback) and have the root of
//!    that tree's first `size` leaves (else a fork). At least N witnesses
//!    must have one; the log is witnessed up to the N-th largest of their
//!    sizes, which the report gives. A line of a given witness that does
//!    not verify fails the check. (Witnesses cosign at their own pace and
//!    every push moves the log on, so they seldom share a checkpoint; each
//!    one's statement covers the prefix it cosigned.)
//!
//! Cost: one read of every file, O(entries) hashing and JSON parsing, and
//! 64 bytes of memory per entry (two leaf-hash arrays).

use std::path::{Path, PathBuf};

use merkle::tiles::{
    BundleId, TileId, bundles_for_size, decode_entry_bundle, encode_tile, tiles_for_size,
};
use merkle::{
    Checkpoint, CosignatureVerifier, Hash, Note, NoteError, VerifierKey, Verifiers, leaf_hash,
};

use crate::event::{Event, LogKey, parse_time_ns};

/// What a fetch function answers: the bytes, `None` when the file does not
/// exist, or an error (I/O, HTTP) that stops the verification.
pub type Fetched = Result<Option<Vec<u8>>, String>;

/// What verification needs besides the files.
#[derive(Debug, Clone)]
pub struct Expect {
    /// The log's verifier keys: the checkpoint (and a saved one) must be
    /// signed by one of them. Several after a key rotation: the current
    /// key for new checkpoints, older ones for saved checkpoints.
    pub keys: Vec<VerifierKey>,
    /// The origin line the checkpoint must carry.
    pub origin: String,
    /// A previously saved signed checkpoint of the same log: the current
    /// one must extend it (no rollback, no fork).
    pub since: Option<Vec<u8>>,
    /// The log this is: every entry's `project` must name it. `None`
    /// skips the check.
    pub log: Option<LogKey>,
    /// The witness policy: at least `quorum` of these witnesses must have
    /// cosigned the checkpoint (or a checkpoint it extends). No check when
    /// `quorum` is 0.
    pub witnesses: Vec<CosignatureVerifier>,
    pub quorum: usize,
}

impl Expect {
    /// The expectation for one log: signed by `keys`, with `origin`; no
    /// saved checkpoint, no witness policy.
    pub fn new(keys: Vec<VerifierKey>, origin: impl Into<String>, log: Option<LogKey>) -> Expect {
        Expect {
            keys,
            origin: origin.into(),
            since: None,
            log,
            witnesses: Vec::new(),
            quorum: 0,
        }
    }

    fn key_list(&self) -> String {
        self.keys
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Up to where a log is witnessed: `quorum` of the given witnesses each
/// cosigned a checkpoint of at least `size` that the verified tree
/// extends; `cosigners` of the `given` witnesses cosigned one at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witnessed {
    pub size: u64,
    pub cosigners: usize,
    pub given: usize,
    pub quorum: usize,
}

/// A log that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Entries parsed and checked.
    pub entries: u64,
    /// Hash tiles and entry bundles read and checked.
    pub tiles: u64,
    /// Entries below this index were removed by retention (their bundles
    /// are gone; their hashes are checked through the tiles).
    pub retained_from: u64,
    /// Set when a witness policy was checked.
    pub witnessed: Option<Witnessed>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OK: {} size {} root {}, {} entries, {} tiles verified",
            self.origin,
            self.size,
            self.root.to_base64(),
            self.entries,
            self.tiles
        )?;
        if self.retained_from > 0 {
            write!(
                f,
                " (entries below {} removed by retention)",
                self.retained_from
            )?;
        }
        if let Some(w) = &self.witnessed {
            write!(f, "; {w}")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Witnessed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "witnessed up to size {} (quorum {}; {} of {} given witnesses cosigned)",
            self.size, self.quorum, self.cosigners, self.given
        )
    }
}

/// The first bad place found: `place` is a relative path (or `checkpoint`,
/// `entry <i> (<bundle path>)`), `reason` says what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {reason}")]
pub struct Failure {
    pub place: String,
    pub reason: String,
}

pub(crate) fn fail<T>(place: impl Into<String>, reason: impl Into<String>) -> Result<T, Failure> {
    Err(Failure {
        place: place.into(),
        reason: reason.into(),
    })
}

/// A fetch function over a log directory on disk (`<data>/audit/tlog/org`,
/// `<data>/audit/tlog/p/<slug>`), answering exactly what the server serves
/// for the same relative paths ([`crate::tlog::read_log_file`]).
pub fn dir_fetcher(dir: PathBuf) -> impl FnMut(&str) -> Fetched {
    move |rel: &str| crate::tlog::read_log_file(&dir, rel).map_err(|e| e.to_string())
}

/// The log directories under `<data>/audit/tlog/` that hold a checkpoint,
/// as (relative name such as `org` or `p/<slug>`, path), org first.
pub fn log_dirs(tlog_dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let org = tlog_dir.join("org");
    if org.join(crate::files::CHECKPOINT).is_file() {
        out.push(("org".to_string(), org));
    }
    let p = tlog_dir.join("p");
    if p.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(&p)?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(crate::files::CHECKPOINT).is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            out.push((format!("p/{n}"), p.join(&n)));
        }
    }
    Ok(out)
}

/// The log of a tree directory name under `tlog/` (`org`, `p/<slug>`,
/// `p/~<hex>`): the inverse of [`crate::files::tlog_log_dir`].
pub fn log_of_dir(name: &str) -> Option<LogKey> {
    if name == "org" {
        return Some(LogKey::Organization);
    }
    let slug = name.strip_prefix("p/")?;
    match slug.strip_prefix('~') {
        Some(h) => String::from_utf8(hex::decode(h).ok()?)
            .ok()
            .map(LogKey::Project),
        None => Some(LogKey::Project(slug.to_string())),
    }
}

pub(crate) fn get(fetch: &mut impl FnMut(&str) -> Fetched, path: &str) -> Result<Vec<u8>, Failure> {
    match fetch(path) {
        Ok(Some(b)) => Ok(b),
        Ok(None) => fail(path, "missing"),
        Err(e) => fail(path, format!("cannot be read: {e}")),
    }
}

/// Opens a signed checkpoint with `expect.keys` and checks its origin.
pub(crate) fn open(bytes: &[u8], expect: &Expect, place: &str) -> Result<Checkpoint, Failure> {
    open_note(bytes, expect, place).map(|(cp, _)| cp)
}

/// [`open`], also returning the parsed note (for its cosignatures).
pub(crate) fn open_note(
    bytes: &[u8],
    expect: &Expect,
    place: &str,
) -> Result<(Checkpoint, Note), Failure> {
    let note = Note::parse(bytes).or_else(|e| fail(place, format!("not a signed note: {e}")))?;
    match note.verify(&Verifiers::new(expect.keys.iter().cloned())) {
        Ok(_) => {}
        Err(NoteError::InvalidSignature { name, key_id }) => {
            return fail(
                place,
                format!(
                    "signature does not verify with key {}",
                    expect
                        .keys
                        .iter()
                        .find(|k| k.name() == name && k.key_id() == key_id)
                        .map_or_else(|| expect.key_list(), |k| k.to_string())
                ),
            );
        }
        Err(NoteError::UnknownSigner) => {
            let by: Vec<String> = note
                .signatures()
                .iter()
                .map(|s| format!("{}+{:08x}", s.name, s.key_id))
                .collect();
            return fail(
                place,
                format!(
                    "signature does not verify with key {}: no signature by it (signed by {})",
                    expect.key_list(),
                    by.join(", ")
                ),
            );
        }
        Err(e) => return fail(place, e.to_string()),
    }
    let cp = Checkpoint::parse(note.text())
        .or_else(|e| fail(place, format!("not a tlog checkpoint: {e}")))?;
    if cp.origin() != expect.origin {
        return fail(
            place,
            format!(
                "origin {:?}, expected {:?}",
                cp.origin(),
                expect.origin.as_str()
            ),
        );
    }
    Ok((cp, note))
}

/// Checks the witness policy of `expect` (see the module documentation,
/// check 8) for the verified checkpoint `cp` (its note `note`).
/// `consistent(fetch, m, root)` must tell whether the verified tree's
/// first `m` leaves (`m <= cp.size()`) have root `root`.
pub(crate) fn check_witnesses<F: FnMut(&str) -> Fetched>(
    cp: &Checkpoint,
    note: &Note,
    expect: &Expect,
    fetch: &mut F,
    mut consistent: impl FnMut(&mut F, u64, &Hash) -> Result<bool, Failure>,
) -> Result<Option<Witnessed>, Failure> {
    let quorum = expect.quorum;
    if quorum == 0 {
        return Ok(None);
    }
    let cosigned_by =
        |note: &Note, w: &[CosignatureVerifier], place: &str| match merkle::verify_cosignatures(
            note, w,
        ) {
            Ok(c) => Ok(c),
            Err(NoteError::InvalidSignature { name, key_id }) => fail(
                place,
                format!("the cosignature by witness {name}+{key_id:08x} does not verify"),
            ),
            Err(e) => fail(place, e.to_string()),
        };
    // Per given witness, the largest size it cosigned that this tree extends.
    let here = cosigned_by(note, &expect.witnesses, "checkpoint")?;
    let mut sizes: Vec<u64> = Vec::new();
    for w in &expect.witnesses {
        if here
            .iter()
            .any(|c| c.name == w.name() && c.key_id == w.key_id())
        {
            sizes.push(cp.size());
            continue;
        }
        let path = format!("{}{:08x}", crate::tlog::WITNESSED_PREFIX, w.key_id());
        let Some(bytes) = fetch(&path).or_else(|e| fail(&path, format!("cannot be read: {e}")))?
        else {
            continue;
        };
        let (wcp, wnote) = open_note(&bytes, expect, &path)?;
        if cosigned_by(&wnote, std::slice::from_ref(w), &path)?.is_empty() {
            return fail(
                &path,
                format!("no cosignature by witness {} on it", w.name()),
            );
        }
        if wcp.size() > cp.size() {
            return fail(
                "checkpoint",
                format!(
                    "size {} is smaller than the checkpoint witness {} cosigned (size {}): rollback",
                    cp.size(),
                    w.name(),
                    wcp.size()
                ),
            );
        }
        if !consistent(fetch, wcp.size(), wcp.root())? {
            return fail(
                &path,
                format!(
                    "the checkpoint witness {} cosigned (size {}, root {}) is not a prefix of the verified tree: fork",
                    w.name(),
                    wcp.size(),
                    wcp.root().to_base64()
                ),
            );
        }
        sizes.push(wcp.size());
    }
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    if sizes.len() < quorum {
        return fail(
            "checkpoint",
            format!(
                "{} of the {} given witnesses cosigned this log, quorum {quorum}: not witnessed",
                sizes.len(),
                expect.witnesses.len()
            ),
        );
    }
    Ok(Some(Witnessed {
        size: sizes[quorum - 1],
        cosigners: sizes.len(),
        given: expect.witnesses.len(),
        quorum,
    }))
}

/// Where a leaf hash lives: the level-0 tile path and slot.
fn leaf_place(size: u64, i: u64) -> (String, u64) {
    let n = i / 256;
    let width = (size - n * 256).min(256);
    let path = TileId::new(0, n, width)
        .map(|t| t.path())
        .unwrap_or_default();
    (path, i % 256)
}

fn bundle_path(size: u64, i: u64) -> String {
    let n = i / 256;
    BundleId::new(n, (size - n * 256).min(256))
        .map(|b| b.path())
        .unwrap_or_default()
}

/// Verifies one log through `fetch`. See the module documentation for the
/// checks and their order.
pub fn verify(mut fetch: impl FnMut(&str) -> Fetched, expect: &Expect) -> Result<Report, Failure> {
    let cp_bytes = get(&mut fetch, crate::files::CHECKPOINT)?;
    let (cp, cp_note) = open_note(&cp_bytes, expect, "checkpoint")?;
    let size = cp.size();
    let since = match &expect.since {
        None => None,
        Some(b) => {
            let old = open(b, expect, "--since-checkpoint")?;
            if old.size() > size {
                return fail(
                    "checkpoint",
                    format!(
                        "older than --since-checkpoint (size {size} < {}): rollback",
                        old.size()
                    ),
                );
            }
            if old.size() == size && old.root() != cp.root() {
                return fail(
                    "checkpoint",
                    format!(
                        "same size {size} as --since-checkpoint but root {} instead of {}: fork",
                        cp.root().to_base64(),
                        old.root().to_base64()
                    ),
                );
            }
            Some(old)
        }
    };
    let mut report = Report {
        origin: cp.origin().to_string(),
        size,
        root: *cp.root(),
        entries: 0,
        tiles: 0,
        retained_from: 0,
        witnessed: None,
    };
    if size == 0 {
        report.witnessed = check_witnesses(&cp, &cp_note, expect, &mut fetch, |_, _, r| {
            Ok(*r == merkle::empty_root())
        })?;
        return Ok(report);
    }
    // Retention: bundles below the floor are gone on purpose; the log
    // itself must record that (an `audit.retention.apply` event covering
    // the floor), checked below.
    let floor = match fetch(crate::files::RETAINED) {
        Ok(None) => 0,
        Ok(Some(b)) => {
            let f = std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.trim_end().parse::<u64>().ok());
            match f {
                Some(f) if f % 256 == 0 && f <= size => f,
                _ => {
                    return fail(
                        crate::files::RETAINED,
                        "not a retention floor (a multiple of 256 within the tree)",
                    );
                }
            }
        }
        Err(e) => return fail(crate::files::RETAINED, format!("cannot be read: {e}")),
    };
    report.retained_from = floor;
    let mut retention_covers = 0u64;

    // Every hash tile the size implies, by level; lengths checked.
    let mut levels: Vec<Vec<(TileId, Vec<u8>)>> = Vec::new();
    for t in tiles_for_size(size) {
        let data = get(&mut fetch, &t.path())?;
        if data.len() != t.byte_len() {
            return fail(
                t.path(),
                format!(
                    "{} bytes, expected {} ({} hashes)",
                    data.len(),
                    t.byte_len(),
                    t.width()
                ),
            );
        }
        let l = usize::from(t.level());
        if levels.len() <= l {
            levels.resize_with(l + 1, Vec::new);
        }
        levels[l].push((t, data));
        report.tiles += 1;
    }
    let tile_leaves: Vec<Hash> = levels
        .first()
        .into_iter()
        .flatten()
        .flat_map(|(_, d)| {
            d.chunks_exact(32)
                .map(|c| Hash(c.try_into().unwrap_or([0; 32])))
        })
        .collect();

    // Every entry bundle: decoded, counted, hashed; content problems kept
    // until the entries are known to be authentic.
    let mut entry_leaves: Vec<Hash> = Vec::with_capacity(tile_leaves.len());
    let mut content: Option<Failure> = None;
    let mut last: Option<(u64, i64)> = None;
    for b in bundles_for_size(size) {
        let path = b.path();
        if b.first_leaf() < floor {
            // Removed by retention: the tiles' hashes stand in.
            let from = b.first_leaf() as usize;
            let to = from + b.width() as usize;
            entry_leaves.extend_from_slice(tile_leaves.get(from..to).unwrap_or(&[]));
            continue;
        }
        let data = get(&mut fetch, &path)?;
        let entries = decode_entry_bundle(&data)
            .or_else(|e| fail(&path, format!("not an entry bundle: {e}")))?;
        if entries.len() as u64 != b.width() {
            return fail(
                &path,
                format!("{} entries, expected {}", entries.len(), b.width()),
            );
        }
        report.tiles += 1;
        for (k, e) in entries.iter().enumerate() {
            let i = b.first_leaf() + k as u64;
            entry_leaves.push(leaf_hash(e));
            if floor > 0 {
                retention_covers = retention_covers.max(retention_to(e));
            }
            if content.is_none() {
                content = check_entry(e, i, expect.log.as_ref(), &mut last)
                    .err()
                    .map(|reason| Failure {
                        place: format!("entry {i} ({path})"),
                        reason,
                    });
            }
        }
    }

    // Which side gives the signed root?
    let root = *cp.root();
    let tiles_ok = merkle::root_from_leaf_hashes(&tile_leaves) == root;
    let entries_ok = tiles_ok || merkle::root_from_leaf_hashes(&entry_leaves) == root;
    let mismatch = tile_leaves
        .iter()
        .zip(&entry_leaves)
        .position(|(a, b)| a != b);
    if (tiles_ok || !entries_ok)
        && let Some(i) = mismatch
    {
        let (tile, slot) = leaf_place(size, i as u64);
        return fail(
            format!("entry {i} ({})", bundle_path(size, i as u64)),
            format!("leaf hash differs from {tile} slot {slot}"),
        );
    }
    if !tiles_ok && !entries_ok {
        return fail(
            "checkpoint",
            format!(
                "root {} is not the root of the {size} entries and level-0 tiles ({}): a different tree of the same size (fork), or the log was rewritten",
                root.to_base64(),
                merkle::root_from_leaf_hashes(&entry_leaves).to_base64()
            ),
        );
    }
    let leaves = if tiles_ok {
        &tile_leaves
    } else {
        &entry_leaves
    };

    // Every tile, level 0 too (when the entries are the authentic side),
    // recomputed from the authentic leaves and compared byte for byte.
    let mut row: Vec<Hash> = leaves.clone();
    for stored in &levels {
        let mut next = Vec::with_capacity(row.len() / 256);
        for (t, data) in stored {
            let from = (t.index() * 256) as usize;
            let want = row.get(from..from + t.width() as usize).unwrap_or(&[]);
            let want_bytes = encode_tile(want);
            if want_bytes != *data {
                let slot = want_bytes
                    .chunks(32)
                    .zip(data.chunks(32))
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                return fail(t.path(), format!("hash at slot {slot} differs"));
            }
            if t.is_full() {
                next.push(merkle::perfect_subtree_hash(want).unwrap_or(Hash([0; 32])));
            }
        }
        row = next;
    }

    if let Some(f) = content {
        return Err(f);
    }
    if floor > retention_covers {
        return fail(
            crate::files::RETAINED,
            format!(
                "entries below {floor} are gone, but no audit.retention.apply event in the log covers them (only up to {retention_covers}): deleted outside retention"
            ),
        );
    }
    report.entries = size - floor;

    if let Some(old) = since {
        let m = old.size() as usize;
        let prefix = leaves.get(..m).unwrap_or(leaves);
        if m > 0 && merkle::root_from_leaf_hashes(prefix) != *old.root() {
            return fail(
                "checkpoint",
                format!(
                    "not consistent with --since-checkpoint (size {m}, root {}): the first {m} entries of this tree have another root: fork",
                    old.root().to_base64()
                ),
            );
        }
    }
    report.witnessed = check_witnesses(&cp, &cp_note, expect, &mut fetch, |_, m, r| {
        Ok(merkle::root_from_leaf_hashes(leaves.get(..m as usize).unwrap_or(leaves)) == *r)
    })?;
    Ok(report)
}

/// The floor an `audit.retention.apply` entry records (`entries_to` of its
/// request parameters); 0 for any other entry.
fn retention_to(bytes: &[u8]) -> u64 {
    const ACTION: &[u8] = b"\"action\":\"audit.retention.apply\"";
    if !bytes.windows(ACTION.len()).any(|w| w == ACTION) {
        return 0;
    }
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v["request_parameters"]["entries_to"].as_u64())
        .unwrap_or(0)
}

/// Checks one entry's content: an [`Event`] at `log_index` `i`, after the
/// previous entry (`last`: its seq and time) in seq and time.
pub(crate) fn check_entry(
    bytes: &[u8],
    i: u64,
    log: Option<&LogKey>,
    last: &mut Option<(u64, i64)>,
) -> Result<(), String> {
    let e: Event =
        serde_json::from_slice(bytes).map_err(|err| format!("not an audit event: {err}"))?;
    if e.log_index != i {
        return Err(format!("log_index {}, expected {i}", e.log_index));
    }
    if let Some(log) = log
        && *log != LogKey::of(e.project.as_deref())
    {
        let name = |p: Option<&str>| p.map_or("(organization)".to_string(), |p| format!("{p:?}"));
        let want = match log {
            LogKey::Organization => None,
            LogKey::Project(p) => Some(p.as_str()),
        };
        return Err(format!(
            "project {}, expected {}: an event of another log",
            name(e.project.as_deref()),
            name(want)
        ));
    }
    let t = parse_time_ns(&e.time).ok_or_else(|| format!("time {:?} is not RFC 3339", e.time))?;
    if let Some((seq, time)) = *last {
        if e.seq <= seq {
            return Err(format!(
                "seq {} after seq {seq}: not strictly increasing",
                e.seq
            ));
        }
        if t < time {
            return Err(format!("time {} is before the previous entry's", e.time));
        }
    }
    *last = Some((e.seq, t));
    Ok(())
}
