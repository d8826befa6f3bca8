//! Proofs and receipts made from the tiles on disk: inclusion and
//! consistency proofs at many sizes (through the append path, and on a
//! 70,000-entry log written with the checkpointer's code), checked with
//! `merkle`'s verifier, against `merkle::MemoryTree` (a naive in-memory
//! tree) and with the independent `tlog_tiles` and `signed_note` crates;
//! typed errors; receipts and their tamper suite; checkpoint waiters.

use std::sync::mpsc;
use std::time::Duration;

use audit::*;
use merkle::{Hash, MemoryTree, SignerKey, VerifierKey, leaf_hash};
use signed_note::{Note as TheirNote, StandardVerifier, VerifierList};
use tlog_tiles::Hash as TheirHash;

use crate::support::draft;
use crate::tlog::{append_n, options, wait_for_size};

fn theirs(h: &[Hash]) -> Vec<TheirHash> {
    h.iter().map(|h| TheirHash(h.0)).collect()
}

/// Checks an inclusion proof with merkle and with tlog_tiles.
fn check_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) {
    merkle::verify_inclusion(index, size, leaf, proof, root)
        .unwrap_or_error(|e| format!("merkle: entry {index} in {size}: {e}"));
    tlog_tiles::check_record(
        &theirs(proof),
        size,
        TheirHash(root.0),
        index,
        TheirHash(leaf.0),
    )
    .unwrap_or_error(|e| format!("tlog_tiles: entry {index} in {size}: {e:?}"));
}

/// Checks a consistency proof with merkle and with tlog_tiles.
fn check_consistency(from: u64, to: u64, proof: &[Hash], old: &Hash, new: &Hash) {
    merkle::verify_consistency(from, to, proof, old, new)
        .unwrap_or_error(|e| format!("merkle: {from} -> {to}: {e}"));
    tlog_tiles::check_tree(&theirs(proof), to, TheirHash(new.0), from, TheirHash(old.0))
        .unwrap_or_error(|e| format!("tlog_tiles: {from} -> {to}: {e:?}"));
}

trait OrError<E> {
    fn unwrap_or_error(self, msg: impl FnOnce(E) -> String);
}

impl<E> OrError<E> for Result<(), E> {
    fn unwrap_or_error(self, msg: impl FnOnce(E) -> String) {
        if let Err(e) = self {
            panic!("{}", msg(e));
        }
    }
}

/// The signed checkpoint of `log`, opened with both note verifiers.
fn opened(log: &AuditLog, k: &LogKey) -> SignedCheckpoint {
    let cp = log.log_files(k).latest().expect("checkpoint");
    let vkey = log.verifier_key();
    let v = StandardVerifier::new(&vkey).unwrap();
    TheirNote::from_bytes(&cp.note)
        .unwrap()
        .verify(&VerifierList::new(vec![Box::new(v)]))
        .expect("signed_note verifies the checkpoint");
    let (c, _) = merkle::open_checkpoint(
        &cp.note,
        &merkle::Verifiers::new([VerifierKey::parse(&vkey).unwrap()]),
        &cp.origin,
    )
    .expect("merkle opens the checkpoint");
    assert_eq!((c.size(), *c.root()), (cp.size, cp.root));
    cp
}

#[test]
fn proofs_through_the_append_path_at_every_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(d.path(), options()).unwrap();
    let k = LogKey::of(Some("p1"));
    let mut ids = Vec::new();
    let mut leaves: Vec<Hash> = Vec::new();
    // Signed checkpoints seen so far, each the latest when saved.
    let mut saved: Vec<SignedCheckpoint> = Vec::new();
    for step in [1usize, 1, 1, 252, 1, 1, 254, 2, 45, 300] {
        append_n(&log, Some("p1"), step, &mut ids);
        wait_for_size(&log, &k, ids.len() as u64);
        let cp = opened(&log, &k);
        // The entries, for the leaf hashes and the naive tree.
        leaves.clear();
        for i in 0..cp.size {
            let r = log.receipt(&k, &EntryRef::Index(i)).unwrap();
            leaves.push(leaf_hash(&r.entry));
        }
        let naive = MemoryTree::from_leaf_hashes(&leaves);
        assert_eq!(naive.root(), cp.root);
        // Every entry in the latest tree, by index and by id.
        for i in 0..cp.size {
            let p = log.inclusion_proof(&k, &EntryRef::Index(i), None).unwrap();
            assert_eq!((p.index, p.tree_size), (i, cp.size));
            assert_eq!(p.leaf_hash, leaves[i as usize]);
            assert_eq!(p.checkpoint.as_ref(), Some(&cp));
            let want = merkle::inclusion_proof(i, cp.size, &mut &naive).unwrap();
            assert_eq!(p.hashes, want, "entry {i} in {}", cp.size);
            check_inclusion(i, cp.size, &p.leaf_hash, &p.hashes, &cp.root);
        }
        let by_id = log
            .inclusion_proof(&k, &EntryRef::Id(ids[ids.len() / 2].clone()), None)
            .unwrap();
        assert_eq!(by_id.index, ids.len() as u64 / 2);
        // Every older checkpoint: inclusion at its size, and consistency to now.
        for old in &saved {
            for i in [0, old.size / 2, old.size - 1] {
                let p = log
                    .inclusion_proof(&k, &EntryRef::Index(i), Some(old.size))
                    .unwrap();
                assert_eq!(p.checkpoint, None);
                check_inclusion(i, old.size, &p.leaf_hash, &p.hashes, &old.root);
            }
            let c = log.consistency_proof(&k, old.size, None).unwrap();
            assert_eq!((c.from, c.to), (old.size, cp.size));
            assert_eq!(c.checkpoint.as_ref(), Some(&cp));
            check_consistency(old.size, cp.size, &c.hashes, &old.root, &cp.root);
        }
        saved.push(cp);
    }
}

#[test]
fn proofs_at_many_sizes_of_a_70000_entry_log() {
    let d = tempfile::tempdir().unwrap();
    let n = 70_000u64;
    let entry = |i: u64| format!("{{\"entry\":{i}}}").into_bytes();
    let signer = SignerKey::from_seed("flightdeck", &[7; 32]).unwrap();
    let k = LogKey::of(Some("big"));
    let cp =
        audit::tlog::write_log(d.path(), "flightdeck", &signer, &k, (0..n).map(entry)).unwrap();
    assert_eq!((cp.size, cp.origin.as_str()), (n, "flightdeck/p/big"));
    let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&entry(i))).collect();
    let naive = MemoryTree::from_leaf_hashes(&leaves);
    assert_eq!(naive.root(), cp.root);
    let files = LogFiles::new(d.path().join("tlog/p/big"), "p/big");

    let sizes = [
        1u64, 2, 3, 7, 255, 256, 257, 511, 512, 4097, 65535, 65536, 65537, 69_888, 69_999, 70_000,
    ];
    for &s in &sizes {
        let root = naive.root_at(s).unwrap();
        for i in [
            0,
            1,
            s / 3,
            s / 2,
            s.saturating_sub(257),
            s.saturating_sub(2),
            s - 1,
        ] {
            if i >= s {
                continue;
            }
            let p = files.inclusion(i, None, Some(s)).unwrap();
            assert_eq!(p.leaf_hash, leaves[i as usize]);
            assert_eq!(
                p.hashes,
                merkle::inclusion_proof(i, s, &mut &naive).unwrap()
            );
            check_inclusion(i, s, &p.leaf_hash, &p.hashes, &root);
        }
        for &t in sizes.iter().filter(|&&t| t >= s) {
            let c = files.consistency(s, Some(t)).unwrap();
            assert_eq!(
                c.hashes,
                merkle::consistency_proof(s, t, &mut &naive).unwrap()
            );
            if s < t {
                check_consistency(s, t, &c.hashes, &root, &naive.root_at(t).unwrap());
            }
        }
    }
    // A receipt against the latest checkpoint verifies offline.
    let r = files.receipt(69_000, None).unwrap();
    let v = verify_receipt(&r.to_bytes(), &signer.verifier(), None).unwrap();
    assert_eq!((v.index, v.tree_size, v.entry), (69_000, n, entry(69_000)));
    assert_eq!(v.event, None);
}

#[test]
fn proof_requests_fail_with_typed_errors() {
    let d = tempfile::tempdir().unwrap();
    let k = LogKey::of(Some("p1"));
    {
        let log = AuditLog::open(d.path(), options()).unwrap();
        assert!(matches!(
            log.inclusion_proof(&k, &EntryRef::Index(0), None),
            Err(ProofError::NoCheckpoint { log }) if log == "p/p1"
        ));
        append_n(&log, Some("p1"), 10, &mut Vec::new());
        wait_for_size(&log, &k, 10);
        log.shutdown();
    }
    // Reopened with checkpoints an hour apart: the next event stays unsigned.
    let log = AuditLog::open(
        d.path(),
        Options {
            checkpoint_interval: Duration::from_secs(3600),
            ..Options::default()
        },
    )
    .unwrap();
    let id_late = log
        .append(draft(Some("p1"), "ci.deploy.start", 1))
        .unwrap()
        .id;

    let incl = |e: EntryRef, s: Option<u64>| log.inclusion_proof(&k, &e, s).unwrap_err();
    let msg = |e: ProofError| e.to_string();
    assert!(matches!(
        incl(EntryRef::Index(0), Some(11)),
        ProofError::TreeSizeTooLarge {
            param: "tree_size",
            requested: 11,
            latest: 10
        }
    ));
    assert!(matches!(
        incl(EntryRef::Index(0), Some(0)),
        ProofError::EmptyTree { param: "tree_size" }
    ));
    assert_eq!(
        msg(incl(EntryRef::Index(5), Some(5))),
        "log entry 5 is not in the tree of size 5: pick a tree_size above it"
    );
    assert!(matches!(
        incl(EntryRef::Index(10), None),
        ProofError::NoSuchIndex {
            index: 10,
            size: 10
        }
    ));
    assert!(matches!(
        incl(EntryRef::Id("0190-nope".into()), None),
        ProofError::NoSuchEvent { .. }
    ));
    match incl(EntryRef::Id(id_late.clone()), None) {
        ProofError::NotYetCheckpointed { id, index, size } => {
            assert_eq!((id, index, size), (id_late.clone(), 10, 10));
        }
        other => panic!("{other}"),
    }
    // An id of another log is not found in this one.
    let org_id = log.append(draft(None, "ci.deploy.start", 2)).unwrap().id;
    assert!(matches!(
        incl(EntryRef::Id(org_id), None),
        ProofError::NoSuchEvent { .. }
    ));
    let cons = |a: u64, b: Option<u64>| log.consistency_proof(&k, a, b).unwrap_err();
    assert!(matches!(
        cons(0, None),
        ProofError::EmptyTree { param: "from" }
    ));
    assert!(matches!(
        cons(5, Some(4)),
        ProofError::SizeOrder { from: 5, to: 4 }
    ));
    assert!(matches!(
        cons(5, Some(12)),
        ProofError::TreeSizeTooLarge {
            param: "to",
            requested: 12,
            latest: 10
        }
    ));
    assert!(matches!(
        log.receipt(&k, &EntryRef::Id(id_late)),
        Err(ProofError::NotYetCheckpointed { .. })
    ));
    // Equal sizes: an empty proof.
    assert!(
        log.consistency_proof(&k, 10, None)
            .unwrap()
            .hashes
            .is_empty()
    );

    // A damaged tile is named, never turned into a bad proof.
    let tile = d.path().join("tlog/p/p1/tile/0/000.p/10");
    let mut b = std::fs::read(&tile).unwrap();
    b[32 * 3] ^= 1;
    std::fs::write(&tile, &b).unwrap();
    match log.inclusion_proof(&k, &EntryRef::Index(2), None) {
        Err(ProofError::Corrupt { path, reason }) => {
            assert!(path.ends_with("tlog/p/p1"), "{}", path.display());
            assert!(reason.contains("entry 2"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    std::fs::remove_file(&tile).unwrap();
    match log.receipt(&k, &EntryRef::Index(2)) {
        Err(ProofError::Corrupt { path, reason }) => {
            assert!(path.ends_with("tile/0/000.p/10"), "{}", path.display());
            assert!(reason.contains("missing"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

/// A receipt of entry `i` of project `p`'s log, and the log's verifier key.
fn receipt_of(log: &AuditLog, p: Option<&str>, i: u64) -> Receipt {
    log.receipt(&LogKey::of(p), &EntryRef::Index(i)).unwrap()
}

fn check_rejected(bytes: &[u8], key: &VerifierKey, want: &str) {
    match verify_receipt(bytes, key, None) {
        Ok(v) => panic!("accepted: {v}"),
        Err(e) => assert!(e.to_string().contains(want), "{e}\nwant: {want}"),
    }
}

#[test]
fn receipts_verify_offline_and_tampering_is_named() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(d.path(), options()).unwrap();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    append_n(&log, Some("p1"), 300, &mut a);
    append_n(&log, None, 20, &mut b);
    wait_for_size(&log, &LogKey::of(Some("p1")), 300);
    wait_for_size(&log, &LogKey::Organization, 20);
    let key = VerifierKey::parse(&log.verifier_key()).unwrap();

    let r = receipt_of(&log, Some("p1"), 257);
    let bytes = r.to_bytes();
    assert!(bytes.starts_with(b"c2sp.org/tlog-proof@v1\nextra "));
    let v = verify_receipt(&bytes, &key, None).unwrap();
    assert_eq!((v.index, v.tree_size), (257, 300));
    assert_eq!(v.origin, "flightdeck/p/p1");
    let e = v.event.clone().expect("the entry is an audit event");
    assert_eq!((e.id.as_str(), e.log_index), (a[257].as_str(), 257));
    assert_eq!(v.entry, e.canonical_bytes());
    assert!(
        v.to_string()
            .starts_with("OK: entry 257 of flightdeck/p/p1 is in its signed tree of size 300"),
        "{v}"
    );
    // With the expected origin given, too.
    verify_receipt(&bytes, &key, Some("flightdeck/p/p1")).unwrap();
    // The independent crates agree on the checkpoint and the proof.
    let cp = merkle::Checkpoint::parse(merkle::Note::parse(&r.checkpoint).unwrap().text()).unwrap();
    TheirNote::from_bytes(&r.checkpoint)
        .unwrap()
        .verify(&VerifierList::new(vec![Box::new(
            StandardVerifier::new(&log.verifier_key()).unwrap(),
        )]))
        .unwrap();
    check_inclusion(257, 300, &leaf_hash(&r.entry), &r.hashes, cp.root());

    // A flipped byte of the entry (inside its id, so it still parses).
    let mut t = r.clone();
    let at = t.entry.windows(6).position(|w| w == b"\"id\":\"").unwrap() + 8;
    t.entry[at] ^= 0x01;
    check_rejected(
        &t.to_bytes(),
        &key,
        "inclusion proof does not lead to the checkpoint's root",
    );
    // A flipped byte that breaks the JSON: still an inclusion failure.
    let mut t = r.clone();
    t.entry[0] ^= 0x01;
    check_rejected(
        &t.to_bytes(),
        &key,
        "inclusion proof does not lead to the checkpoint's root",
    );
    // Wrong index: the entry says otherwise.
    let mut t = r.clone();
    t.index = 258;
    check_rejected(
        &t.to_bytes(),
        &key,
        "index 258 in the receipt, but the entry's log_index is 257",
    );
    // Wrong index on an entry that is no event: the proof fails.
    let mut t = r.clone();
    t.entry = b"opaque".to_vec();
    t.index = 258;
    check_rejected(
        &t.to_bytes(),
        &key,
        "does not lead to the checkpoint's root",
    );
    // A bad proof hash, or one too few.
    let mut t = r.clone();
    t.hashes[2].0[7] ^= 0x80;
    check_rejected(
        &t.to_bytes(),
        &key,
        "inclusion proof does not lead to the checkpoint's root",
    );
    let mut t = r.clone();
    t.hashes.pop();
    check_rejected(
        &t.to_bytes(),
        &key,
        "inclusion proof has 6 hashes, but index 257 in a tree of size 300 needs 7",
    );
    // Another key.
    let other = SignerKey::from_seed("flightdeck", &[9; 32])
        .unwrap()
        .verifier();
    check_rejected(
        &bytes,
        &other,
        "checkpoint: no signature by key flightdeck+",
    );
    // A checkpoint of another log, same key.
    let mut t = r.clone();
    t.checkpoint = log.checkpoint(&LogKey::Organization).unwrap();
    check_rejected(
        &t.to_bytes(),
        &key,
        "checkpoint is of log \"flightdeck/org\", but the entry is an event of \"flightdeck/p/p1\": a checkpoint of another log",
    );
    assert!(matches!(
        verify_receipt(&t.to_bytes(), &key, Some("flightdeck/p/p1")),
        Err(ReceiptError::OtherLog { .. })
    ));
    // A checkpoint whose text was changed under its signature.
    let mut t = r.clone();
    let text = String::from_utf8(t.checkpoint.clone()).unwrap();
    t.checkpoint = text.replacen("\n300\n", "\n301\n", 1).into_bytes();
    check_rejected(&t.to_bytes(), &key, "checkpoint: signature does not verify");
    // An index beyond the tree.
    let mut t = r.clone();
    t.entry = b"opaque".to_vec();
    t.index = 300;
    check_rejected(
        &t.to_bytes(),
        &key,
        "index 300 is not in the checkpoint's tree of size 300",
    );
    // Not a receipt at all, or a tlog-proof without the entry.
    check_rejected(
        b"hello\n",
        &key,
        "not a receipt: malformed tlog-proof, line 1",
    );
    let bare = merkle::TlogProof {
        extra: None,
        index: r.index,
        hashes: r.hashes.clone(),
        checkpoint: r.checkpoint.clone(),
    };
    check_rejected(&bare.to_bytes(), &key, "no `extra` line");
    // A receipt of the organization log verifies too.
    verify_receipt(&receipt_of(&log, None, 19).to_bytes(), &key, None).unwrap();
}

#[test]
fn two_hundred_fifty_six_waiters_get_their_checkpoint_without_a_thread_each() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(
        d.path(),
        Options {
            checkpoint_interval: Duration::from_millis(1500),
            ..Options::default()
        },
    )
    .unwrap();
    let k = LogKey::of(Some("p1"));
    let registered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads = || {
        std::fs::read_dir("/proc/self/task")
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let before = threads();
    let (tx, rx) = mpsc::channel();
    for i in 0..256 {
        let tx = tx.clone();
        let l2 = log.clone();
        let k2 = k.clone();
        let n = registered.clone();
        // Each append's acknowledgement registers a waiter for its checkpoint.
        log.append_with(
            draft(Some("p1"), "ci.deploy.start", i),
            Box::new(move |r| {
                let e = r.expect("append");
                l2.when_checkpointed(
                    &k2,
                    e.log_index + 1,
                    Box::new(move |cp| {
                        let _ = tx.send((e.log_index, cp));
                    }),
                );
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }),
        );
    }
    drop(tx);
    while registered.load(std::sync::atomic::Ordering::SeqCst) < 256 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Other tests of this binary run (and open logs, 4 threads each) in
    // parallel: the bound says "not one per waiter" (256), not "none".
    assert!(
        threads() < before + 64,
        "waiting must not take a thread per waiter: {before} -> {}",
        threads()
    );
    let got: Vec<(u64, Result<SignedCheckpoint, AuditError>)> = rx.iter().collect();
    assert_eq!(got.len(), 256);
    let key = VerifierKey::parse(&log.verifier_key()).unwrap();
    for (index, cp) in got {
        let cp = cp.expect("a checkpoint");
        assert!(
            cp.size > index,
            "checkpoint {} does not cover {index}",
            cp.size
        );
        merkle::open_checkpoint(&cp.note, &merkle::Verifiers::new([key.clone()]), &cp.origin)
            .expect("signed");
        // The receipt against exactly that checkpoint verifies.
        let r = log.receipt_at(&k, index, &cp).unwrap();
        verify_receipt(&r.to_bytes(), &key, None).unwrap();
    }
    // A size already covered is answered at once, on this thread.
    let (tx, rx) = mpsc::channel();
    log.when_checkpointed(
        &k,
        1,
        Box::new(move |r| tx.send(r.map(|c| c.size)).unwrap()),
    );
    assert_eq!(rx.try_recv().unwrap().unwrap(), 256);
    // One that never comes fails with Closed at shutdown.
    let (tx, rx) = mpsc::channel();
    log.when_checkpointed(
        &k,
        10_000,
        Box::new(move |r| tx.send(r.map(|c| c.size)).unwrap()),
    );
    assert!(rx.try_recv().is_err());
    log.shutdown();
    assert!(matches!(rx.recv().unwrap(), Err(AuditError::Closed)));
    // After shutdown: what is signed is still answered, nothing more will be.
    let (tx, rx) = mpsc::channel();
    log.when_checkpointed(
        &k,
        256,
        Box::new(move |r| tx.send(r.map(|c| c.size)).unwrap()),
    );
    assert_eq!(rx.recv().unwrap().unwrap(), 256);
    let (tx, rx) = mpsc::channel();
    log.when_checkpointed(
        &k,
        257,
        Box::new(move |r| tx.send(r.map(|c| c.size)).unwrap()),
    );
    assert!(matches!(rx.recv().unwrap(), Err(AuditError::Closed)));
    // A read-only open cannot wait.
    let ro = AuditLog::open_read_only(d.path()).unwrap();
    let (tx, rx) = mpsc::channel();
    ro.when_checkpointed(
        &k,
        1,
        Box::new(move |r| tx.send(r.map(|c| c.size)).unwrap()),
    );
    assert!(matches!(rx.recv().unwrap(), Err(AuditError::ReadOnly)));
}

#[test]
fn a_frozen_log_refuses_waiters() {
    let d = tempfile::tempdir().unwrap();
    let k = LogKey::of(Some("p1"));
    {
        let log = AuditLog::open(d.path(), options()).unwrap();
        append_n(&log, Some("p1"), 5, &mut Vec::new());
        wait_for_size(&log, &k, 5);
        log.shutdown();
    }
    let seg = d.path().join("00000000000000000001.seg");
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 20)
        .unwrap();
    let log = AuditLog::open(d.path(), options()).unwrap();
    let (tx, rx) = mpsc::channel();
    log.when_checkpointed(
        &k,
        1,
        Box::new(move |r| tx.send(r.map(|c| c.size)).unwrap()),
    );
    match rx.recv().unwrap() {
        Err(AuditError::LogFrozen { log }) => assert_eq!(log, "p/p1"),
        other => panic!("{other:?}"),
    }
}
