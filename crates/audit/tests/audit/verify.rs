//! The outside-in verifier (`audit::verify`) on a populated log: the happy
//! path on every log, then a tamper suite where each case changes the
//! files of one log (a copy) and asserts that verification fails and names
//! the exact place. Every case asserts the full message, so removing the
//! check that catches it makes the case fail.

use std::path::{Path, PathBuf};

use audit::verify::{Expect, Failure, Report, dir_fetcher, log_dirs, verify};
use audit::*;
use merkle::tiles::{self, BundleId};
use merkle::{Checkpoint, Hash, Note, SignerKey, VerifierKey};

use crate::tlog::{append_n, options, wait_for_size};

/// A populated data directory: org 300 events, alpha 600 (a checkpoint
/// saved at 300), beta 100.
pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub audit: PathBuf,
    pub signer: SignerKey,
    pub vkey: VerifierKey,
    /// alpha's checkpoints at 300 and 600.
    pub cp300: Vec<u8>,
    pub cp600: Vec<u8>,
}

pub(crate) fn populate() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit");
    let log = AuditLog::open(&audit, options()).unwrap();
    let mut ids = Vec::new();
    let alpha = LogKey::of(Some("alpha"));
    append_n(&log, None, 150, &mut ids);
    append_n(&log, Some("alpha"), 300, &mut ids);
    let cp300 = wait_for_size(&log, &alpha, 300);
    append_n(&log, Some("beta"), 100, &mut ids);
    append_n(&log, None, 150, &mut ids);
    append_n(&log, Some("alpha"), 300, &mut ids);
    let cp600 = wait_for_size(&log, &alpha, 600);
    wait_for_size(&log, &LogKey::Organization, 300);
    wait_for_size(&log, &LogKey::of(Some("beta")), 100);
    log.shutdown();
    drop(log);
    let text = std::fs::read_to_string(audit.join("signing-key")).unwrap();
    let signer = SignerKey::parse(text.trim_end()).unwrap();
    let vkey = signer.verifier();
    Fixture {
        _dir: dir,
        audit,
        signer,
        vkey,
        cp300,
        cp600,
    }
}

impl Fixture {
    pub(crate) fn expect(&self, log: &str) -> Expect {
        Expect::new(
            vec![self.vkey.clone()],
            format!("flightdeck/{log}"),
            audit::verify::log_of_dir(log),
        )
    }

    pub(crate) fn alpha(&self) -> PathBuf {
        self.audit.join("tlog/p/alpha")
    }
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

fn run(dir: &Path, expect: &Expect) -> Result<Report, Failure> {
    verify(dir_fetcher(dir.to_path_buf()), expect)
}

pub(crate) fn entries(dir: &Path, bundle: &str) -> Vec<Vec<u8>> {
    // As served: a partial bundle whose full bundle exists is read from it.
    let data = audit::tlog::read_log_file(dir, bundle).unwrap().unwrap();
    tiles::decode_entry_bundle(&data)
        .unwrap()
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect()
}

pub(crate) fn put_entries(dir: &Path, bundle: &str, entries: &[Vec<u8>]) {
    std::fs::write(
        dir.join(bundle),
        tiles::encode_entry_bundle(entries).unwrap(),
    )
    .unwrap();
}

/// Every entry of a log directory of `size` entries, in order.
pub(crate) fn all_entries(dir: &Path, size: u64) -> Vec<Vec<u8>> {
    tiles::bundles_for_size(size)
        .into_iter()
        .flat_map(|b| entries(dir, &b.path()))
        .collect()
}

/// Replaces the log in `dir` by a consistent tree over `entries`, signed by
/// `signer` (what someone holding the signing key can do).
pub(crate) fn rewrite(
    dir: &Path,
    signer: &SignerKey,
    origin: &str,
    entries: &[Vec<u8>],
) -> Vec<u8> {
    std::fs::remove_dir_all(dir.join("tile")).unwrap();
    let leaves: Vec<Hash> = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
    let mut files: Vec<(String, Vec<u8>)> = tiles::build_tiles(&leaves)
        .into_iter()
        .map(|(t, b)| (t.path(), b))
        .collect();
    for (n, chunk) in entries.chunks(256).enumerate() {
        let b = BundleId::new(n as u64, chunk.len() as u64).unwrap();
        files.push((b.path(), tiles::encode_entry_bundle(chunk).unwrap()));
    }
    for (rel, bytes) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    let root = merkle::root_from_leaf_hashes(&leaves);
    let cp = Checkpoint::new(origin, entries.len() as u64, root)
        .unwrap()
        .sign(&[signer])
        .unwrap();
    std::fs::write(dir.join("checkpoint"), &cp).unwrap();
    cp
}

pub(crate) fn edit(entry: &[u8], f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(entry).unwrap();
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn every_log_of_a_populated_data_dir_verifies() {
    let fx = populate();
    let tlog = fx.audit.join("tlog");
    let logs = log_dirs(&tlog).unwrap();
    let names: Vec<&str> = logs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["org", "p/alpha", "p/beta"]);
    assert_eq!(
        audit::verify::log_of_dir("p/~2f61"),
        Some(LogKey::of(Some("/a")))
    );
    assert_eq!(audit::verify::log_of_dir("org"), Some(LogKey::Organization));
    assert_eq!(audit::verify::log_of_dir("x"), None);
    let alpha = run(&fx.alpha(), &fx.expect("p/alpha")).unwrap();
    assert_eq!(alpha.size, 600);
    assert_eq!(alpha.entries, 600);
    // tile/0/000, 001, 002.p/88, tile/1/000.p/2 and three bundles.
    assert_eq!(alpha.tiles, 7);
    let cp = Checkpoint::parse(Note::parse(&fx.cp600).unwrap().text()).unwrap();
    assert_eq!(alpha.root, *cp.root());
    assert_eq!(
        alpha.to_string(),
        format!(
            "OK: flightdeck/p/alpha size 600 root {}, 600 entries, 7 tiles verified",
            cp.root().to_base64()
        )
    );
    assert_eq!(run(&tlog.join("org"), &fx.expect("org")).unwrap().size, 300);
    assert_eq!(
        run(&tlog.join("p/beta"), &fx.expect("p/beta"))
            .unwrap()
            .size,
        100
    );
    // Consistent with the saved checkpoint at 300, and with itself.
    for since in [&fx.cp300, &fx.cp600] {
        let mut e = fx.expect("p/alpha");
        e.since = Some(since.clone());
        assert_eq!(run(&fx.alpha(), &e).unwrap().size, 600);
    }
}

type Tamper = fn(&Fixture, &Path, &mut Expect);

#[test]
fn tamper_suite_names_the_first_bad_place() {
    let fx = populate();
    let cases: Vec<(&str, Tamper, String)> = vec![
        (
            "flip one byte in an entry",
            |_, d, _| {
                let mut es = entries(d, "tile/entries/001");
                let at = es[44].len() / 2;
                es[44][at] ^= 0x01;
                put_entries(d, "tile/entries/001", &es);
            },
            "entry 300 (tile/entries/001): leaf hash differs from tile/0/001 slot 44".into(),
        ),
        (
            "flip one byte in the partial bundle",
            |_, d, _| {
                let p = d.join("tile/entries/002.p/88");
                let mut b = std::fs::read(&p).unwrap();
                let n = b.len();
                b[n - 3] ^= 0x20;
                std::fs::write(p, b).unwrap();
            },
            "entry 599 (tile/entries/002.p/88): leaf hash differs from tile/0/002.p/88 slot 87"
                .into(),
        ),
        (
            "delete an entry",
            |_, d, _| {
                let mut es = entries(d, "tile/entries/001");
                es.remove(10);
                put_entries(d, "tile/entries/001", &es);
            },
            "tile/entries/001: 255 entries, expected 256".into(),
        ),
        (
            "swap two entries",
            |_, d, _| {
                let mut es = entries(d, "tile/entries/000");
                es.swap(3, 7);
                put_entries(d, "tile/entries/000", &es);
            },
            "entry 3 (tile/entries/000): leaf hash differs from tile/0/000 slot 3".into(),
        ),
        (
            "truncate the last hash tile",
            |_, d, _| {
                let p = d.join("tile/0/002.p/88");
                let b = std::fs::read(&p).unwrap();
                std::fs::write(p, &b[..b.len() - 1]).unwrap();
            },
            "tile/0/002.p/88: 2815 bytes, expected 2816 (88 hashes)".into(),
        ),
        (
            "truncate the last entry bundle",
            |_, d, _| {
                let p = d.join("tile/entries/002.p/88");
                let b = std::fs::read(&p).unwrap();
                std::fs::write(p, &b[..b.len() - 5]).unwrap();
            },
            "tile/entries/002.p/88: not an entry bundle: ".into(),
        ),
        (
            "delete a hash tile",
            |_, d, _| std::fs::remove_file(d.join("tile/0/001")).unwrap(),
            "tile/0/001: missing".into(),
        ),
        (
            "replace a level-0 hash tile with another's bytes",
            |_, d, _| {
                std::fs::copy(d.join("tile/0/000"), d.join("tile/0/001")).unwrap();
            },
            "tile/0/001: hash at slot 0 differs".into(),
        ),
        (
            "replace the level-1 hash tile",
            |_, d, _| {
                let other = std::fs::read(d.join("tile/0/000")).unwrap();
                std::fs::write(d.join("tile/1/000.p/2"), &other[..64]).unwrap();
            },
            "tile/1/000.p/2: hash at slot 0 differs".into(),
        ),
        (
            "roll the checkpoint back to an older saved one",
            |fx, d, e| {
                std::fs::write(d.join("checkpoint"), &fx.cp300).unwrap();
                e.since = Some(fx.cp600.clone());
            },
            "checkpoint: older than --since-checkpoint (size 300 < 600): rollback".into(),
        ),
        (
            "checkpoint over a different root of the same size",
            |fx, d, _| {
                let cp = Checkpoint::new("flightdeck/p/alpha", 600, Hash([7; 32]))
                    .unwrap()
                    .sign(&[&fx.signer])
                    .unwrap();
                std::fs::write(d.join("checkpoint"), cp).unwrap();
            },
            format!(
                "checkpoint: root {} is not the root of the 600 entries and level-0 tiles",
                Hash([7; 32]).to_base64()
            ),
        ),
        (
            "a consistent fork of the same size, against the saved checkpoint",
            |fx, d, e| {
                let mut es = all_entries(d, 600);
                es[100] = edit(&es[100], |v| v["action"] = "iam.token.delete".into());
                rewrite(d, &fx.signer, "flightdeck/p/alpha", &es);
                e.since = Some(fx.cp600.clone());
            },
            "checkpoint: same size 600 as --since-checkpoint but root ".into(),
        ),
        (
            "a consistent fork, against an older saved checkpoint",
            |fx, d, e| {
                let mut es = all_entries(d, 600);
                es[100] = edit(&es[100], |v| v["action"] = "iam.token.delete".into());
                rewrite(d, &fx.signer, "flightdeck/p/alpha", &es);
                e.since = Some(fx.cp300.clone());
            },
            "checkpoint: not consistent with --since-checkpoint (size 300, ".into(),
        ),
        (
            "forge a signature with another key",
            |_, d, _| {
                let other = SignerKey::from_seed("flightdeck", &[9; 32]).unwrap();
                let cp = Note::parse(&std::fs::read(d.join("checkpoint")).unwrap()).unwrap();
                let forged = Checkpoint::parse(cp.text())
                    .unwrap()
                    .sign(&[&other])
                    .unwrap();
                std::fs::write(d.join("checkpoint"), forged).unwrap();
            },
            "checkpoint: signature does not verify with key flightdeck+".into(),
        ),
        (
            "a signature by the right key id over other bytes",
            |_, d, _| {
                // Same text with another size: sign the real body, then move the
                // signature onto a text that claims 599 entries.
                let cp = std::fs::read(d.join("checkpoint")).unwrap();
                let note = Note::parse(&cp).unwrap();
                let real = Checkpoint::parse(note.text()).unwrap();
                let sig_line = String::from_utf8(cp[note.text().len()..].to_vec()).unwrap();
                let fake = Checkpoint::new(real.origin(), 599, *real.root()).unwrap();
                std::fs::write(
                    d.join("checkpoint"),
                    format!("{}{sig_line}", fake.to_text()),
                )
                .unwrap();
            },
            "checkpoint: signature does not verify with key flightdeck+".into(),
        ),
        (
            "a checkpoint of another log (origin)",
            |fx, d, _| {
                let beta = std::fs::read(fx.audit.join("tlog/p/beta/checkpoint")).unwrap();
                std::fs::write(d.join("checkpoint"), beta).unwrap();
            },
            "checkpoint: origin \"flightdeck/p/beta\", expected \"flightdeck/p/alpha\"".into(),
        ),
        (
            "a signed entry that is not an event",
            |fx, d, _| {
                let mut es = all_entries(d, 600);
                es[2] = b"not json".to_vec();
                rewrite(d, &fx.signer, "flightdeck/p/alpha", &es);
            },
            "entry 2 (tile/entries/000): not an audit event: ".into(),
        ),
        (
            "signed entries out of log_index order",
            |fx, d, _| {
                let mut es = all_entries(d, 600);
                es.swap(3, 7);
                rewrite(d, &fx.signer, "flightdeck/p/alpha", &es);
            },
            "entry 3 (tile/entries/000): log_index 7, expected 3".into(),
        ),
        (
            "a signed entry whose seq repeats",
            |fx, d, _| {
                let mut es = all_entries(d, 600);
                let prev: serde_json::Value = serde_json::from_slice(&es[4]).unwrap();
                es[5] = edit(&es[5], |v| v["seq"] = prev["seq"].clone());
                rewrite(d, &fx.signer, "flightdeck/p/alpha", &es);
            },
            "entry 5 (tile/entries/000): seq ".into(),
        ),
        (
            "a signed entry whose time goes back",
            |fx, d, _| {
                let mut es = all_entries(d, 600);
                es[5] = edit(&es[5], |v| v["time"] = "2001-01-01T00:00:00.000000000Z".into());
                rewrite(d, &fx.signer, "flightdeck/p/alpha", &es);
            },
            "entry 5 (tile/entries/000): time 2001-01-01T00:00:00.000000000Z is before the previous entry's".into(),
        ),
        (
            "a signed entry of another log",
            |fx, d, _| {
                let mut es = all_entries(d, 600);
                es[5] = edit(&es[5], |v| v["project"] = "beta".into());
                rewrite(d, &fx.signer, "flightdeck/p/alpha", &es);
            },
            "entry 5 (tile/entries/000): project \"beta\", expected \"alpha\": an event of another log".into(),
        ),
    ];
    let mut detected = 0;
    for (name, tamper, want) in &cases {
        let case = tempfile::tempdir().unwrap();
        copy_dir(&fx.alpha(), case.path());
        let mut expect = fx.expect("p/alpha");
        assert!(
            run(case.path(), &expect).is_ok(),
            "{name}: the copy verifies"
        );
        tamper(&fx, case.path(), &mut expect);
        match run(case.path(), &expect) {
            Ok(r) => panic!("{name}: not detected: {r}"),
            Err(f) => {
                let got = f.to_string();
                eprintln!("TAMPER {name}: {got}");
                assert!(
                    got.starts_with(want.as_str()),
                    "{name}: got {got:?}, want {want:?}…"
                );
                detected += 1;
            }
        }
    }
    assert_eq!(detected, cases.len());
}

#[test]
fn a_consistent_fork_alone_verifies_and_a_rollback_alone_verifies() {
    // What the verifier cannot know without a saved checkpoint: a tree
    // rewritten and re-signed with the real key, and an older checkpoint.
    let fx = populate();
    let case = tempfile::tempdir().unwrap();
    copy_dir(&fx.alpha(), case.path());
    std::fs::write(case.path().join("checkpoint"), &fx.cp300).unwrap();
    assert_eq!(run(case.path(), &fx.expect("p/alpha")).unwrap().size, 300);
    let mut es = all_entries(&fx.alpha(), 600);
    es[100] = edit(&es[100], |v| v["action"] = "iam.token.delete".into());
    rewrite(case.path(), &fx.signer, "flightdeck/p/alpha", &es);
    assert_eq!(run(case.path(), &fx.expect("p/alpha")).unwrap().size, 600);
}

/// Tamper with the private copies (search index, subject keystore,
/// segments) of a populated store: `fsck::check_store` names each place;
/// a legitimate erasure is not a failure.
#[test]
fn store_check_catches_an_edited_index_keystore_or_segment() {
    use audit::fsck::check_store;
    let f = populate();
    let clean = check_store(&f.audit).expect("a clean store checks");
    assert_eq!(clean.events, 1000);
    assert_eq!(clean.leaves_checked, 1000);
    assert_eq!(clean.index_rows, 1000);
    assert_eq!(clean.envelopes_opened, 1000);

    let case = |name: &str, tamper: &dyn Fn(&Path), place: &str, reason: &str| {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(&f.audit, copy.path());
        tamper(copy.path());
        let err = check_store(copy.path()).expect_err(name);
        assert!(
            err.place.contains(place) && err.reason.contains(reason),
            "{name}: got {err}"
        );
    };
    let sql = |file: &'static str, stmt: &'static str| {
        move |dir: &Path| {
            let c = rusqlite::Connection::open(dir.join(file)).unwrap();
            assert_eq!(c.execute(stmt, []).unwrap(), 1, "{stmt}");
        }
    };
    case(
        "index action edited",
        &sql(
            "index.sqlite",
            "UPDATE events SET action = 'iam.nothing.happened' WHERE seq = 42",
        ),
        "row seq 42",
        "column action",
    );
    case(
        "index pointing at another record",
        &sql(
            "index.sqlite",
            "UPDATE events SET offset = offset + 1 WHERE seq = 7",
        ),
        "row seq 7",
        "column offset",
    );
    case(
        "index row for an event that does not exist",
        &sql(
            "index.sqlite",
            "UPDATE events SET seq = 5000 WHERE seq = 1000",
        ),
        "row seq 5000",
        "do not hold",
    );
    case(
        "index row deleted",
        &sql("index.sqlite", "DELETE FROM events WHERE seq = 500"),
        "row seq 500",
        "missing from the index",
    );
    case(
        "a subject key replaced",
        &sql(
            "subjects.sqlite",
            "UPDATE subject_keys SET key = randomblob(32) WHERE rowid = 1",
        ),
        "event seq",
        "cannot be opened",
    );
    case(
        "a subject key deleted outside erasure",
        &sql(
            "subjects.sqlite",
            "DELETE FROM subject_keys WHERE rowid = 2",
        ),
        "event seq",
        "cannot be opened",
    );
    case(
        "a segment record rewritten with a valid checksum",
        &|dir: &Path| {
            let seg = crate::support::segments(dir)[0].clone();
            let mut b = std::fs::read(&seg).unwrap();
            // Record 10 (seq 10, org log index 9).
            let mut at = audit::segment::HEADER_LEN;
            for _ in 0..9 {
                let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
                at += 8 + len;
            }
            let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
            let payload = &mut b[at + 8..at + 8 + len];
            let i = payload.windows(6).position(|w| w == b"Needle").unwrap();
            payload[i..i + 6].copy_from_slice(b"Noodle");
            let crc = diskio::frame::checksum(payload);
            b[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
            std::fs::write(&seg, b).unwrap();
        },
        "tlog/org entry 9",
        "not the entry the signed tree holds",
    );
    // An erased key is expected, not a failure.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&f.audit, copy.path());
    sql(
        "subjects.sqlite",
        "UPDATE subject_keys SET key = NULL, erased_ns = 1 WHERE rowid = 1",
    )(copy.path());
    let r = check_store(copy.path()).unwrap();
    assert!(r.envelopes_erased > 0 && r.envelopes_opened + r.envelopes_erased == 1000);
}
