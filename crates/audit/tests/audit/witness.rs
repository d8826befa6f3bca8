//! A running log's witness cosignatures (`AuditLog::add_cosignatures`:
//! current and recent checkpoints accepted, the rest refused, stored and
//! served) and its signing keys (`AuditLog::rotate_key` live, and
//! `keys::rotate_offline` on a stopped directory): new checkpoints are
//! signed with the new key, every log's checkpoint is re-signed, old saved
//! checkpoints keep verifying with the old public key, which stays listed.

use std::path::Path;
use std::time::{Duration, Instant};

use audit::verify::{Expect, dir_fetcher, verify};
use audit::witness::CosignRefusal;
use audit::*;
use merkle::{Checkpoint, CosignatureSigner, Hash, Note, VerifierKey};

use crate::tlog::{append_n, options, wait_for_size};

fn cosigned(cp: &[u8], w: &CosignatureSigner, ts: u64) -> Vec<u8> {
    let mut n = Note::parse(cp).unwrap();
    n.add_signature(w.cosign(n.text(), ts).unwrap()).unwrap();
    n.to_bytes()
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn now_ns() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap()
}

#[test]
fn cosignatures_of_current_and_recent_checkpoints_are_stored_and_served() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(d.path(), options()).unwrap();
    let k = LogKey::of(Some("p1"));
    let w1 = CosignatureSigner::from_seed("w1.example", &[1; 32]).unwrap();
    let w2 = CosignatureSigner::from_seed("w2.example", &[2; 32]).unwrap();
    let stranger = CosignatureSigner::from_seed("w9.example", &[9; 32]).unwrap();
    let ws = [w1.verifier(), w2.verifier()];
    append_n(&log, Some("p1"), 5, &mut Vec::new());
    let cp5 = wait_for_size(&log, &k, 5);

    let r = log
        .add_cosignatures(&k, &cosigned(&cp5, &w1, now_s()), &ws, now_s())
        .unwrap();
    assert_eq!((r.origin.as_str(), r.size), ("flightdeck/p/p1", 5));
    assert_eq!(r.cosignatures.len(), 1);
    let served = log.tlog_file(&k, "checkpoint").unwrap().unwrap();
    assert!(served.starts_with(&cp5) && served.len() > cp5.len());
    let by = |w: &CosignatureSigner| format!("witnessed/{:08x}", w.key_id());
    assert_eq!(log.tlog_file(&k, &by(&w1)).unwrap(), Some(served));
    assert_eq!(log.tlog_file(&k, &by(&w2)).unwrap(), None);

    // The log moves on; the checkpoint at 5 is still recent: w2 cosigns it.
    append_n(&log, Some("p1"), 3, &mut Vec::new());
    let cp8 = wait_for_size(&log, &k, 8);
    assert_eq!(log.tlog_file(&k, "checkpoint").unwrap(), Some(cp8.clone()));
    let r = log
        .add_cosignatures(&k, &cosigned(&cp5, &w2, now_s()), &ws, now_s())
        .unwrap();
    assert_eq!((r.size, r.cosignatures.len()), (5, 2));
    let two = log.tlog_file(&k, &by(&w2)).unwrap().unwrap();
    assert!(two.starts_with(&cp5));
    assert_eq!(Note::parse(&two).unwrap().signatures().len(), 3);

    // Refused: a checkpoint this log never signed, another log's, an
    // unknown witness, nothing but the log's signature, garbage.
    let forged = Checkpoint::new("flightdeck/p/p1", 8, Hash([7; 32]))
        .unwrap()
        .to_text();
    let mut n = Note::new(&forged).unwrap();
    n.add_signature(w1.cosign(&forged, now_s()).unwrap())
        .unwrap();
    assert!(matches!(
        log.add_cosignatures(&k, &n.to_bytes(), &ws, now_s()),
        Err(CosignRefusal::UnknownCheckpoint { .. })
    ));
    assert!(matches!(
        log.add_cosignatures(
            &LogKey::Organization,
            &cosigned(&cp8, &w1, now_s()),
            &ws,
            now_s()
        ),
        Err(CosignRefusal::UnknownCheckpoint { .. })
    ));
    assert!(matches!(
        log.add_cosignatures(&k, &cosigned(&cp8, &stranger, now_s()), &ws, now_s()),
        Err(CosignRefusal::UnknownWitness { .. })
    ));
    assert!(matches!(
        log.add_cosignatures(&k, &cp8, &ws, now_s()),
        Err(CosignRefusal::UnknownWitness { .. })
    ));
    assert!(matches!(
        log.add_cosignatures(&k, b"hello", &ws, now_s()),
        Err(CosignRefusal::Malformed(_))
    ));
    assert!(matches!(
        log.add_cosignatures(&k, &cosigned(&cp8, &w1, now_s()), &[], now_s()),
        Err(CosignRefusal::NoWitnessesConfigured)
    ));

    // Stored durably: a reopened log serves them.
    log.shutdown();
    drop(log);
    let log = AuditLog::open(d.path(), options()).unwrap();
    let two_again = log.tlog_file(&k, &by(&w1)).unwrap().unwrap();
    assert_eq!(two_again, two);
}

/// Waits until every checkpoint of `audit_dir` is signed by `key`.
fn wait_signed_by(audit_dir: &Path, key: &VerifierKey) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = audit::verify::log_dirs(&audit_dir.join("tlog")).unwrap();
        let done = all.iter().all(|(_, d)| {
            let n = Note::parse(&std::fs::read(d.join("checkpoint")).unwrap()).unwrap();
            n.signatures().iter().any(|s| s.key_id == key.key_id())
        });
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "checkpoints not re-signed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn verifies(dir: &Path, keys: &[&VerifierKey], since: Option<&[u8]>) -> Result<u64, String> {
    let mut e = Expect::new(
        keys.iter().map(|k| (*k).clone()).collect(),
        "flightdeck/p/p1",
        Some(LogKey::of(Some("p1"))),
    );
    e.since = since.map(<[u8]>::to_vec);
    verify(dir_fetcher(dir.join("tlog/p/p1")), &e)
        .map(|r| r.size)
        .map_err(|f| f.to_string())
}

#[test]
fn key_rotation_live_and_offline_keeps_old_checkpoints_verifiable() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(d.path(), options()).unwrap();
    let k = LogKey::of(Some("p1"));
    append_n(&log, None, 2, &mut Vec::new());
    append_n(&log, Some("p1"), 4, &mut Vec::new());
    let old_cp = wait_for_size(&log, &k, 4);
    let k1 = VerifierKey::parse(&log.verifier_key()).unwrap();
    assert_eq!(log.signing_keys().unwrap().len(), 1);

    // Live: the new key signs; both checkpoints are re-signed.
    let rec = log.rotate_key(now_ns()).unwrap();
    let k2 = rec.vkey.clone();
    assert_ne!(k1, k2);
    assert_eq!(k2.name(), k1.name());
    assert_eq!(log.verifier_key(), k2.to_string());
    let keys = log.signing_keys().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].vkey, k1);
    assert_eq!(keys[0].last_use_ns, Some(rec.first_use_ns));
    assert_eq!(keys[1].last_use_ns, None);
    wait_signed_by(d.path(), &k2);
    // Same text, new signature: the tree did not change.
    let resigned = log.checkpoint(&k).unwrap();
    assert_eq!(
        Note::parse(&resigned).unwrap().text(),
        Note::parse(&old_cp).unwrap().text()
    );
    append_n(&log, Some("p1"), 3, &mut Vec::new());
    let cp7 = wait_for_size(&log, &k, 7);
    log.shutdown();
    drop(log);

    // The old saved checkpoint verifies with the old key next to the new.
    assert_eq!(verifies(d.path(), &[&k1, &k2], Some(&old_cp)), Ok(7));
    assert!(verifies(d.path(), &[&k1], None).is_err());
    assert_eq!(verifies(d.path(), &[&k2], None), Ok(7));
    assert!(
        verifies(d.path(), &[&k2], Some(&old_cp))
            .unwrap_err()
            .starts_with("--since-checkpoint: signature does not verify")
    );
    assert_eq!(audit::keys::read_public(d.path()).unwrap(), keys);

    // Offline: refused while a writer holds the directory, fine once stopped.
    let running = AuditLog::open(d.path(), options()).unwrap();
    assert!(matches!(
        audit::keys::rotate_offline(d.path(), now_ns()),
        Err(AuditError::Locked { .. })
    ));
    running.shutdown();
    drop(running);
    let rec3 = audit::keys::rotate_offline(d.path(), now_ns()).unwrap();
    let k3 = rec3.vkey;
    assert_eq!(audit::keys::read_public(d.path()).unwrap().len(), 3);
    let log = AuditLog::open(d.path(), options()).unwrap();
    assert_eq!(log.verifier_key(), k3.to_string());
    wait_signed_by(d.path(), &k3);
    log.shutdown();
    assert_eq!(verifies(d.path(), &[&k1, &k2, &k3], Some(&cp7)), Ok(7));
    assert_eq!(verifies(d.path(), &[&k3], None), Ok(7));
}
