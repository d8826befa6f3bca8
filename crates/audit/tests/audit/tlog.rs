//! The transparency logs on disk: tiles, entry bundles and signed
//! checkpoints written by the checkpointer, checked with `merkle` and with
//! the independent `tlog_tiles` / `signed_note` crates, across append
//! batches and reopens; write-once files never change.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use audit::*;
use merkle::tiles::{self, TilePath};
use merkle::{VerifierKey, Verifiers, open_checkpoint};
use signed_note::{Note as TheirNote, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint as TheirCheckpoint, Hash as TheirHash, TileHashReader, TileReader};

use crate::support::draft;

pub fn options() -> Options {
    Options {
        checkpoint_interval: Duration::from_millis(20),
        ..Options::default()
    }
}

fn key(project: Option<&str>) -> LogKey {
    LogKey::of(project)
}

/// Appends `n` events to `project`'s log, returning their ids in order.
pub fn append_n(log: &AuditLog, project: Option<&str>, n: usize, ids: &mut Vec<String>) {
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..n {
        let tx = tx.clone();
        log.append_with(
            draft(project, "iam.token.create", i),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
    }
    drop(tx);
    let mut got: Vec<Event> = rx.iter().map(|r| r.expect("append")).collect();
    assert_eq!(got.len(), n);
    got.sort_by_key(|e| e.log_index);
    ids.extend(got.into_iter().map(|e| e.id));
}

/// Waits (bounded) for `log`'s checkpoint to reach `size`.
pub fn wait_for_size(log: &AuditLog, k: &LogKey, size: u64) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(cp) = log.checkpoint(k) {
            let text = merkle::Note::parse(&cp).expect("note");
            let c = merkle::Checkpoint::parse(text.text()).expect("checkpoint");
            if c.size() == size {
                return cp;
            }
            assert!(c.size() < size, "checkpoint ran past {size}: {}", c.size());
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint of size {size} for {k:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Serves a log's tiles to `tlog_tiles` (its paths carry the height).
struct Served<'a>(&'a AuditLog, LogKey);

impl TileReader for Served<'_> {
    fn height(&self) -> u8 {
        8
    }
    fn read_tiles(&self, ts: &[tlog_tiles::Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        ts.iter()
            .map(|t| {
                let path = t.path().replacen("tile/8/", "tile/", 1);
                self.0
                    .tlog_file(&self.1, &path)
                    .ok()
                    .flatten()
                    .ok_or(tlog_tiles::Error::InvalidTile)
            })
            .collect()
    }
    fn save_tiles(&self, _: &[tlog_tiles::Tile], _: &[Vec<u8>]) {}
}

/// Checks everything a verifier can check about `k`'s log at the checkpoint
/// covering `ids`: signature (ours and theirs), origin, every tile byte for
/// byte, every bundle against the root and the appended events.
fn check_log(log: &AuditLog, k: &LogKey, ids: &[String]) {
    let size = ids.len() as u64;
    let signed = wait_for_size(log, k, size);
    let vkey = log.verifier_key();
    let origin = audit::tlog::origin("flightdeck", k);

    // merkle
    let ours = VerifierKey::parse(&vkey).expect("vkey");
    let (cp, _) = open_checkpoint(&signed, &Verifiers::new([ours]), &origin).expect("open");
    assert_eq!(cp.size(), size);
    // signed_note + tlog_tiles
    let theirs = StandardVerifier::new(&vkey).expect("they parse our vkey");
    let note = TheirNote::from_bytes(&signed).expect("they parse our note");
    note.verify(&VerifierList::new(vec![Box::new(theirs)]))
        .expect("they verify our signature");
    let their_cp = TheirCheckpoint::from_bytes(note.text()).expect("they parse our checkpoint");
    assert_eq!(
        (their_cp.origin(), their_cp.size()),
        (origin.as_str(), size)
    );
    assert_eq!(their_cp.hash().0, cp.root().0);

    // Entry bundles: the events, in log_index order, hashing to the root.
    let mut entries: Vec<Vec<u8>> = Vec::new();
    for b in tiles::bundles_for_size(size) {
        let data = log
            .tlog_file(k, &b.path())
            .expect("read")
            .unwrap_or_else(|| panic!("bundle {} missing", b.path()));
        let got = tiles::decode_entry_bundle(&data).expect("bundle decodes");
        assert_eq!(got.len() as u64, b.width(), "{}", b.path());
        entries.extend(got.into_iter().map(<[u8]>::to_vec));
    }
    for (i, (e, id)) in entries.iter().zip(ids).enumerate() {
        let v: serde_json::Value = serde_json::from_slice(e).expect("entry is JSON");
        assert_eq!(v["log_index"], i as u64);
        assert_eq!(v["id"], id.as_str());
    }
    assert_eq!(merkle::tree_hash(&entries), *cp.root());

    // Hash tiles: byte for byte what merkle builds from the leaves...
    let leaves: Vec<merkle::Hash> = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
    for (t, bytes) in tiles::build_tiles(&leaves) {
        assert_eq!(
            log.tlog_file(k, &t.path()).expect("read").as_deref(),
            Some(bytes.as_slice()),
            "{}",
            t.path()
        );
    }
    // ... and what tlog_tiles authenticates and proves from.
    let served = Served(log, k.clone());
    let reader = TileHashReader::new(size, TheirHash(cp.root().0), &served);
    assert_eq!(
        tlog_tiles::tree_hash(size, &reader)
            .expect("their tree hash")
            .0,
        cp.root().0
    );
    for i in [0, size / 2, size - 1] {
        let proof = tlog_tiles::prove_record(size, i, &reader).expect("they prove");
        tlog_tiles::check_record(
            &proof,
            size,
            TheirHash(cp.root().0),
            i,
            TheirHash(leaves[i as usize].0),
        )
        .expect("they verify inclusion");
    }
}

/// Every file under the tlog directory but the checkpoints.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(p: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(p).expect("read_dir") {
            let path = e.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.file_name().is_some_and(|n| n != "checkpoint") {
                out.insert(path.clone(), std::fs::read(&path).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&dir.join("tlog"), &mut out);
    out
}

/// Files seen before still hold the same bytes, except partial tiles and
/// bundles whose full file was written since: those are gone from disk but
/// still read (as the full file's prefix) with the same bytes. Returns the
/// new snapshot.
fn assert_write_once(
    dir: &Path,
    before: &BTreeMap<PathBuf, Vec<u8>>,
) -> BTreeMap<PathBuf, Vec<u8>> {
    let now = snapshot(dir);
    for (p, b) in before {
        if now.contains_key(p) {
            assert_eq!(now.get(p), Some(b), "{} changed", p.display());
            continue;
        }
        let s = p.to_string_lossy();
        let (full, _) = s
            .split_once(".p/")
            .unwrap_or_else(|| panic!("{} vanished (not a partial file)", p.display()));
        assert!(
            Path::new(full).is_file(),
            "{} vanished before its full file {full} was written",
            p.display()
        );
        let (log_dir, rel) = s.split_once("/tile/").unwrap();
        let served = audit::tlog::read_log_file(Path::new(log_dir), &format!("tile/{rel}"))
            .unwrap()
            .unwrap_or_else(|| panic!("{} is no longer served", p.display()));
        assert_eq!(&served, b, "{} is served with other bytes", p.display());
    }
    // And none is left beside its full file (they would pile up forever).
    for p in now.keys() {
        if let Some((full, _)) = p.to_string_lossy().split_once(".p/") {
            assert!(
                !Path::new(full).exists(),
                "{} is kept although {full} was written",
                p.display()
            );
        }
    }
    now
}

#[test]
fn tiles_bundles_and_checkpoints_verify_across_batches_and_reopen() {
    let d = tempfile::tempdir().unwrap();
    let logs = [None, Some("alpha"), Some("beta")];
    let mut ids: HashMap<Option<&str>, Vec<String>> = HashMap::new();
    let mut files = BTreeMap::new();
    let batches: [(usize, [usize; 3]); 5] = [
        (0, [1, 1, 0]),
        (1, [2, 250, 3]),
        (2, [0, 4, 0]),
        (3, [3, 300, 1]),
        (4, [0, 1, 0]),
    ];
    let mut log = AuditLog::open(d.path(), options()).unwrap();
    let vkey = log.verifier_key();
    for (round, counts) in batches {
        if round == 3 {
            // Reopen in the middle: same key, trees rebuilt, nothing rewritten.
            log.shutdown();
            drop(log);
            log = AuditLog::open(d.path(), options()).unwrap();
            assert_eq!(log.verifier_key(), vkey);
        }
        for (p, n) in logs.iter().zip(counts) {
            append_n(&log, *p, n, ids.entry(*p).or_default());
        }
        for p in logs {
            let v = ids.get(&p).cloned().unwrap_or_default();
            if !v.is_empty() {
                check_log(&log, &key(p), &v);
            } else {
                assert_eq!(log.checkpoint(&key(p)), None);
            }
        }
        files = assert_write_once(d.path(), &files);
    }
    // alpha grew past two full tiles: its partial bundles and tiles became
    // full ones, and the old partial files are still there, unchanged.
    let alpha = key(Some("alpha"));
    assert_eq!(ids[&Some("alpha")].len(), 556);
    for p in [
        "tile/entries/000",
        "tile/entries/001",
        "tile/entries/002.p/44",
        "tile/0/000",
        "tile/0/001",
        "tile/0/002.p/44",
        "tile/1/000.p/2",
        "tile/entries/000.p/1",
        "tile/0/000.p/251",
    ] {
        assert!(log.tlog_file(&alpha, p).unwrap().is_some(), "{p}");
    }
    // A read-only open serves the same.
    let ro = AuditLog::open_read_only(d.path()).unwrap();
    assert_eq!(ro.verifier_key(), vkey);
    assert_eq!(ro.checkpoint(&alpha), log.checkpoint(&alpha));
}

#[test]
fn reopen_rewrites_missing_tiles_identically() {
    let d = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    let k = key(Some("p1"));
    {
        let log = AuditLog::open(d.path(), options()).unwrap();
        append_n(&log, Some("p1"), 300, &mut ids);
        check_log(&log, &k, &ids);
        log.shutdown();
    }
    let before = snapshot(d.path());
    let base = d.path().join("tlog/p/p1");
    std::fs::remove_file(base.join("tile/0/000")).unwrap();
    std::fs::remove_dir_all(base.join("tile/entries")).unwrap();
    let log = AuditLog::open(d.path(), options()).unwrap();
    let after = snapshot(d.path());
    // Every full tile and bundle comes back byte for byte, and nothing new
    // appears; partial files of older checkpoints are not re-created
    // (only the latest checkpoint's partials, which check_log fetches).
    let differ: Vec<_> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .filter(|k| after.contains_key(*k) || !k.to_string_lossy().contains(".p/"))
        .collect();
    assert!(differ.is_empty(), "rewritten differently: {differ:?}");
    check_log(&log, &k, &ids);
}

#[test]
fn tile_paths_are_validated() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(d.path(), options()).unwrap();
    let k = key(Some("p1"));
    append_n(&log, Some("p1"), 3, &mut Vec::new());
    wait_for_size(&log, &k, 3);
    assert!(log.tlog_file(&k, "tile/0/000.p/3").unwrap().is_some());
    // The checkpoint is served (with its cosignatures: none yet).
    assert_eq!(log.tlog_file(&k, "checkpoint").unwrap(), log.checkpoint(&k));
    for bad in [
        "checkpoint.1",
        "witnessed/0000000",
        "witnessed/0000000g",
        "witnessed/ABCDEF01",
        "witnessed/00000000/../../../signing-key",
        "cosigned/3",
        "../signing-key",
        "tile/0/../../../signing-key",
        "tile/0/0.p/3",
        "tile/0/000.p/03",
        "/etc/passwd",
        "",
    ] {
        assert!(matches!(log.tlog_file(&k, bad), Ok(None)), "{bad}");
        assert!(!matches!(
            tiles::parse_tile_path(bad),
            Ok(TilePath::Hash(_) | TilePath::Entries(_))
        ));
    }
    // Another project's name cannot reach this one's tiles.
    assert_eq!(
        log.tlog_file(&key(Some("..")), "tile/0/000.p/3").unwrap(),
        None
    );
}

#[test]
fn signing_key_is_private_and_stable() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let vkey = AuditLog::open(d.path(), options()).unwrap().verifier_key();
    let meta = std::fs::metadata(d.path().join("signing-key")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let parsed = VerifierKey::parse(&vkey).expect("verifier key parses");
    assert_eq!(parsed.name(), "flightdeck");
    assert_eq!(
        audit::tlog::read_verifier_key(d.path()).unwrap(),
        Some(vkey.clone())
    );
    assert_eq!(
        AuditLog::open(d.path(), options()).unwrap().verifier_key(),
        vkey
    );
}

#[test]
fn a_file_with_other_bytes_is_never_replaced() {
    let d = tempfile::tempdir().unwrap();
    let k = key(Some("p1"));
    let log = AuditLog::open(d.path(), options()).unwrap();
    let mut ids = Vec::new();
    append_n(&log, Some("p1"), 3, &mut ids);
    check_log(&log, &k, &ids);
    // Squat the file the next flush needs.
    let squatted = d.path().join("tlog/p/p1/tile/entries/000.p/4");
    std::fs::create_dir_all(squatted.parent().unwrap()).unwrap();
    std::fs::write(&squatted, b"not a bundle").unwrap();
    append_n(&log, Some("p1"), 1, &mut ids);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read(&squatted).unwrap(), b"not a bundle");
    // No checkpoint names a size whose files are wrong.
    let cp = log.checkpoint(&k).unwrap();
    let note = merkle::Note::parse(&cp).unwrap();
    assert_eq!(merkle::Checkpoint::parse(note.text()).unwrap().size(), 3);
    // Once the bad file is gone, the checkpointer catches up.
    std::fs::remove_file(&squatted).unwrap();
    check_log(&log, &k, &ids);
}

#[test]
fn a_log_that_lost_acknowledged_entries_signs_no_fork() {
    let d = tempfile::tempdir().unwrap();
    let k = key(Some("p1"));
    let mut ids = Vec::new();
    {
        let log = AuditLog::open(d.path(), options()).unwrap();
        append_n(&log, Some("p1"), 5, &mut ids);
        check_log(&log, &k, &ids);
        log.shutdown();
    }
    let before = std::fs::read(d.path().join("tlog/p/p1/checkpoint")).unwrap();
    // Lose the last record behind the log's back.
    let seg = d.path().join("00000000000000000001.seg");
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 20)
        .unwrap();
    let log = AuditLog::open(d.path(), options()).unwrap();
    append_n(&log, Some("p1"), 2, &mut Vec::new());
    // The organization log still works...
    let mut org = Vec::new();
    append_n(&log, None, 1, &mut org);
    check_log(&log, &key(None), &org);
    // ... while p1's checkpoint stays the old one: no smaller or other tree is signed.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(log.checkpoint(&k).unwrap(), before);
}
