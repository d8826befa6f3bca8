//! The incremental monitor (`audit::monitor`) and the witness policy of
//! `audit::verify`, on the verify fixture's `alpha` log (checkpoints at
//! 300 and 600): first and second runs, then one case per failure the
//! monitor must report (rollback, forks, bad signature, bad entry, bad
//! hash tile, bad content, a state of another log), each asserting the
//! message; then witness quorums through `checkpoint` and
//! `witnessed/<key id>`, for `monitor` and `verify` alike.

use std::path::Path;

use audit::monitor::{State, monitor};
use audit::verify::{Expect, dir_fetcher, verify};
use merkle::{CosignatureSigner, Note, SignerKey};

use crate::verify::{
    Fixture, all_entries, copy_dir, edit, entries, populate, put_entries, rewrite,
};

const ORIGIN: &str = "flightdeck/p/alpha";

/// A copy of alpha whose `checkpoint` is `cp`.
fn copy_at(fx: &Fixture, cp: &[u8]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    copy_dir(&fx.alpha(), d.path());
    std::fs::write(d.path().join("checkpoint"), cp).unwrap();
    d
}

fn run(dir: &Path, e: &Expect, state: Option<&State>) -> Result<State, String> {
    monitor(dir_fetcher(dir.to_path_buf()), e, state)
        .map(|(_, s)| s)
        .map_err(|f| f.to_string())
}

fn state_at_300(fx: &Fixture) -> State {
    let d = copy_at(fx, &fx.cp300);
    run(d.path(), &fx.expect("p/alpha"), None).unwrap()
}

#[test]
fn first_run_then_incremental_run_and_state_file() {
    let fx = populate();
    let e = fx.expect("p/alpha");
    let d = copy_at(&fx, &fx.cp300);
    let (r1, s1) = monitor(dir_fetcher(d.path().to_path_buf()), &e, None).unwrap();
    assert_eq!((r1.old_size, r1.size), (0, 300));
    assert_eq!(s1.size, 300);
    assert!(
        r1.to_string()
            .starts_with("OK: flightdeck/p/alpha size 300 root ")
    );
    assert!(
        r1.to_string()
            .contains(", 300 new entries verified since size 0, ")
    );

    // The state file round-trips, and a damaged one is refused.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    assert_eq!(State::load(&path).unwrap(), None);
    s1.save(&path).unwrap();
    let loaded = State::load(&path).unwrap().unwrap();
    assert_eq!(loaded, s1);
    let mut damaged = s1.clone();
    damaged.range[0] = merkle::Hash([1; 32]).to_base64();
    damaged.save(&path).unwrap();
    assert!(State::load(&path).is_err());
    std::fs::write(&path, "{}").unwrap();
    assert!(State::load(&path).is_err());

    // Second run: only the 300 new entries (bundles 1 and 2).
    std::fs::write(d.path().join("checkpoint"), &fx.cp600).unwrap();
    let (r2, s2) = monitor(dir_fetcher(d.path().to_path_buf()), &e, Some(&loaded)).unwrap();
    assert_eq!((r2.old_size, r2.size), (300, 600));
    assert!(
        r2.to_string()
            .contains(", 300 new entries verified since size 300, ")
    );
    assert!(r2.tiles < 10, "{r2}");
    assert_eq!(s2.last_seq, {
        let last = entries(d.path(), "tile/entries/002.p/88").pop().unwrap();
        serde_json::from_slice::<serde_json::Value>(&last).unwrap()["seq"].as_u64()
    });
    // The same state from scratch (first run at 600).
    let (_, fresh) = monitor(dir_fetcher(d.path().to_path_buf()), &e, None).unwrap();
    assert_eq!(fresh, s2);
    // Nothing new: still OK.
    let (r3, _) = monitor(dir_fetcher(d.path().to_path_buf()), &e, Some(&s2)).unwrap();
    assert_eq!(r3.old_size, r3.size);
}

type Case = (&'static str, fn(&Fixture, &Path) -> State, &'static str);

#[test]
fn every_failure_is_reported_and_named() {
    let fx = populate();
    let e = fx.expect("p/alpha");
    let cases: Vec<Case> = vec![
        (
            "rollback: the server serves an older checkpoint",
            |fx, d| {
                std::fs::write(d.join("checkpoint"), &fx.cp300).unwrap();
                let c = copy_at(fx, &fx.cp600);
                run(c.path(), &fx.expect("p/alpha"), None).unwrap()
            },
            "checkpoint: size 300 is smaller than the saved checkpoint's 600: rollback",
        ),
        (
            "fork of the same size",
            |fx, d| {
                let mut es = all_entries(d, 600);
                es[100] = edit(&es[100], |v| v["action"] = "iam.token.delete".into());
                rewrite(d, &fx.signer, ORIGIN, &es);
                let c = copy_at(fx, &fx.cp600);
                run(c.path(), &fx.expect("p/alpha"), None).unwrap()
            },
            "checkpoint: same size 600 as the saved checkpoint but root ",
        ),
        (
            "fork of a larger size",
            |fx, d| {
                let mut es = all_entries(d, 600);
                es[100] = edit(&es[100], |v| v["action"] = "iam.token.delete".into());
                rewrite(d, &fx.signer, ORIGIN, &es);
                state_at_300(fx)
            },
            "checkpoint: size 600 root ",
        ),
        (
            "bad signature",
            |fx, d| {
                let other = SignerKey::from_seed("flightdeck", &[9; 32]).unwrap();
                let cp = Note::parse(&fx.cp600).unwrap();
                let forged = merkle::Checkpoint::parse(cp.text())
                    .unwrap()
                    .sign(&[&other])
                    .unwrap();
                std::fs::write(d.join("checkpoint"), forged).unwrap();
                state_at_300(fx)
            },
            "checkpoint: signature does not verify with key flightdeck+",
        ),
        (
            "a flipped byte in a new entry",
            |fx, d| {
                let mut es = entries(d, "tile/entries/001");
                es[144][10] ^= 0x01;
                put_entries(d, "tile/entries/001", &es);
                state_at_300(fx)
            },
            "entry 400 (tile/entries/001): leaf hash differs from tile/0/001 slot 144",
        ),
        (
            "a missing entry bundle",
            |fx, d| {
                std::fs::remove_file(d.join("tile/entries/002.p/88")).unwrap();
                state_at_300(fx)
            },
            "tile/entries/002.p/88: missing",
        ),
        (
            "every hash tile corrupted, entries intact",
            |fx, d| {
                for t in merkle::tiles::tiles_for_size(600) {
                    let p = d.join(t.path());
                    let mut b = std::fs::read(&p).unwrap();
                    for x in b.iter_mut().step_by(32) {
                        *x ^= 0x80;
                    }
                    std::fs::write(p, b).unwrap();
                }
                state_at_300(fx)
            },
            "checkpoint: the new entries extend the saved tree (size 300) to this root, but the consistency proof built from the served hash tiles does not verify",
        ),
        (
            "a signed new entry whose seq repeats",
            |fx, d| {
                let mut es = all_entries(d, 600);
                let prev: serde_json::Value = serde_json::from_slice(&es[399]).unwrap();
                es[400] = edit(&es[400], |v| v["seq"] = prev["seq"].clone());
                rewrite(d, &fx.signer, ORIGIN, &es);
                state_at_300(fx)
            },
            "entry 400 (tile/entries/001): seq ",
        ),
        (
            "a signed new entry whose time goes back",
            |fx, d| {
                let mut es = all_entries(d, 600);
                es[300] = edit(&es[300], |v| {
                    v["time"] = "2001-01-01T00:00:00.000000000Z".into()
                });
                rewrite(d, &fx.signer, ORIGIN, &es);
                state_at_300(fx)
            },
            "entry 300 (tile/entries/001): time 2001-01-01T00:00:00.000000000Z is before the previous entry's",
        ),
        (
            "a state file of another log",
            |fx, _| {
                let mut s = state_at_300(fx);
                s.origin = "flightdeck/p/beta".into();
                s
            },
            "state: the state file is for origin \"flightdeck/p/beta\", not \"flightdeck/p/alpha\"",
        ),
    ];
    for (name, setup, want) in cases {
        let d = copy_at(&fx, &fx.cp600);
        let state = setup(&fx, d.path());
        match run(d.path(), &e, Some(&state)) {
            Ok(_) => panic!("{name}: not detected"),
            Err(got) => {
                eprintln!("MONITOR {name}: {got}");
                assert!(got.starts_with(want), "{name}: got {got:?}, want {want:?}…");
            }
        }
    }
}

/// Writes `cosigned/<size>`: the checkpoint `cp` with cosignatures by `ws`
/// (the stored format of `audit::witness`).
fn cosign_into(dir: &Path, cp: &[u8], ws: &[&CosignatureSigner]) {
    let mut note = Note::parse(cp).unwrap();
    let size = merkle::Checkpoint::parse(note.text()).unwrap().size();
    for w in ws {
        let line = w.cosign(note.text(), 1_800_000_000).unwrap();
        note.add_signature(line).unwrap();
    }
    std::fs::create_dir_all(dir.join("cosigned")).unwrap();
    std::fs::write(dir.join(format!("cosigned/{size}")), note.to_bytes()).unwrap();
}

fn with_policy(fx: &Fixture, ws: &[&CosignatureSigner], quorum: usize) -> Expect {
    let mut e = fx.expect("p/alpha");
    e.witnesses = ws.iter().map(|w| w.verifier()).collect();
    e.quorum = quorum;
    e
}

/// Runs `verify` and `monitor` (first run) and checks they agree.
fn both(dir: &Path, e: &Expect) -> Result<String, String> {
    let v = verify(dir_fetcher(dir.to_path_buf()), e).map_err(|f| f.to_string());
    let m = monitor(dir_fetcher(dir.to_path_buf()), e, None)
        .map(|(r, _)| r)
        .map_err(|f| f.to_string());
    match (v, m) {
        (Ok(v), Ok(m)) => {
            assert_eq!(v.witnessed, m.witnessed);
            Ok(v.witnessed.map(|w| w.to_string()).unwrap_or_default())
        }
        (Err(v), Err(m)) => {
            assert_eq!(v, m, "verify and monitor disagree on the failure");
            Err(v)
        }
        (v, m) => panic!("verify {v:?}, monitor {m:?}"),
    }
}

#[test]
fn witness_quorums() {
    let fx = populate();
    let w1 = CosignatureSigner::from_seed("w1.example", &[1; 32]).unwrap();
    let w2 = CosignatureSigner::from_seed("w2.example", &[2; 32]).unwrap();
    let stranger = CosignatureSigner::from_seed("w3.example", &[3; 32]).unwrap();
    let ok = |size: u64, quorum: usize, cosigners: usize, given: usize| {
        Ok(format!(
            "witnessed up to size {size} (quorum {quorum}; {cosigners} of {given} given witnesses cosigned)"
        ))
    };

    // The current checkpoint cosigned by both: served with its cosignatures.
    let d = copy_at(&fx, &fx.cp600);
    cosign_into(d.path(), &fx.cp600, &[&w1, &w2]);
    assert_eq!(
        both(d.path(), &with_policy(&fx, &[&w1, &w2], 2)),
        ok(600, 2, 2, 2)
    );
    // Cosigners the policy does not name do not count.
    assert_eq!(
        both(d.path(), &with_policy(&fx, &[&w1, &stranger], 2)),
        Err(
            "checkpoint: 1 of the 2 given witnesses cosigned this log, quorum 2: not witnessed"
                .into()
        )
    );
    assert_eq!(
        both(d.path(), &with_policy(&fx, &[&w1, &stranger], 1)),
        ok(600, 1, 1, 2)
    );

    // w1 cosigned the checkpoint at 300, w2 the one at 600: each fetched
    // from witnessed/<key id>; with both required, witnessed up to 300.
    let d = copy_at(&fx, &fx.cp600);
    cosign_into(d.path(), &fx.cp300, &[&w1]);
    cosign_into(d.path(), &fx.cp600, &[&w2]);
    assert_eq!(
        both(d.path(), &with_policy(&fx, &[&w1], 1)),
        ok(300, 1, 1, 1)
    );
    assert_eq!(
        both(d.path(), &with_policy(&fx, &[&w1, &w2], 2)),
        ok(300, 2, 2, 2)
    );
    assert_eq!(
        both(d.path(), &with_policy(&fx, &[&w1, &w2], 1)),
        ok(600, 1, 2, 2)
    );

    // The server rolled back below what a witness saw.
    let d = copy_at(&fx, &fx.cp300);
    cosign_into(d.path(), &fx.cp600, &[&w1]);
    assert_eq!(
        both(d.path(), &with_policy(&fx, &[&w1], 1)),
        Err("checkpoint: size 300 is smaller than the checkpoint witness w1.example cosigned (size 600): rollback".into())
    );

    // The witness saw a different tree at 300: a split view, caught.
    let d = copy_at(&fx, &fx.cp600);
    let forked = {
        let f = tempfile::tempdir().unwrap();
        copy_dir(&fx.alpha(), f.path());
        let mut es = all_entries(f.path(), 300);
        es[7] = edit(&es[7], |v| v["action"] = "iam.token.delete".into());
        rewrite(f.path(), &fx.signer, ORIGIN, &es)
    };
    cosign_into(d.path(), &forked, &[&w1]);
    assert_eq!(
        both(d.path(), &with_policy(&fx, &[&w1], 1)).unwrap_err(),
        format!(
            "witnessed/{:08x}: the checkpoint witness w1.example cosigned (size 300, root {}) is not a prefix of the verified tree: fork",
            w1.key_id(),
            merkle::Checkpoint::parse(Note::parse(&forked).unwrap().text())
                .unwrap()
                .root()
                .to_base64()
        )
    );

    // A bad line of a given witness.
    let d = copy_at(&fx, &fx.cp600);
    cosign_into(d.path(), &fx.cp600, &[&w1]);
    let p = d.path().join("cosigned/600");
    let note = Note::parse(&std::fs::read(&p).unwrap()).unwrap();
    let mut bad = note.signatures()[1].clone();
    bad.signature[40] ^= 1;
    let mut note2 = Note::new(note.text()).unwrap();
    note2.sign(&fx.signer);
    note2.add_signature(bad).unwrap();
    std::fs::write(&p, note2.to_bytes()).unwrap();
    assert_eq!(
        both(d.path(), &with_policy(&fx, &[&w1], 1)).unwrap_err(),
        format!(
            "checkpoint: the cosignature by witness w1.example+{:08x} does not verify",
            w1.key_id()
        )
    );
}
