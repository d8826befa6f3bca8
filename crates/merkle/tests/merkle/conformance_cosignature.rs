//! C2SP tlog-cosignature (`cosignature/v1`, Ed25519, key type 0x04).
//!
//! The shared conformance suite has no cosignature vectors of its own, so
//! this module uses what it has and what the public witness network
//! publishes:
//!
//! - a real checkpoint of the `arche2025h1.staging.ct.transparency.dev` log
//!   as served with its cosignatures (one by the public witness
//!   `remora.n621.de`, whose verifier key is published), so our verifier
//!   is checked against a cosignature made by someone else's code;
//! - verifier keys and a cosignature timestamp from the test data of Go's
//!   `github.com/transparency-dev/formats/note` (BSD-3-Clause);
//! - `../shared/conformance/signed-note/vectors.json`: the `witness` key's
//!   seed used as a cosigner, the `ok-unknown-cosignature-shape` note;
//! - `../shared/conformance/tlog-tiles/checkpoints.json`: every signed
//!   checkpoint cosigned, still opened by the log key, and the forked
//!   checkpoints refused with the main tree's cosignatures.

use merkle::cosignature::{COSIGNATURE_LEN, cosignature_timestamp};
use merkle::{
    CosignatureSigner, CosignatureVerifier, KeyError, Note, NoteError, NoteSignature, VerifierKey,
    Verifiers, open_checkpoint, verify_cosignatures,
};

use crate::common::{Tally, b64, conformance_dir, read_json, s, u};

/// `arche2025h1.staging.ct.transparency.dev` at size 1432088532, with the
/// signature lines it was served with: an RFC 6962 STH signature (type
/// 0x05), the log's Ed25519 note signature, and four witness cosignatures.
const ARCHE: &str = "arche2025h1.staging.ct.transparency.dev
1432088532
U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=

— arche2025h1.staging.ct.transparency.dev zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoGREPMHbdQ3urbllzalApkptQIgIpwtEroeW2BXaHAI4kJXFbon5Ch9MNL5zRNZ55lvGt0=
— arche2025h1.staging.ct.transparency.dev ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkzbC3NygNI75MdhL1bfTW9g8Ei59RA23oHP7Ry1k3ZFWwQ=
— transparency.dev/DEV:witness-little-garden 2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KYTzwZ2rhIgcqoXHAwVkjZr4AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ==
— witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/iEcxZ75W3u5hNI7TOQtmJbqmNWVuE0tgh0XwzdZsDsUAQ==
— remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/zZ0WBxtqB0DrAWfBw==
— witness.stagemole.eu Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvVr+AJmIY/2TUFucgKi7lI7cUiOvKFYe/TmN9DAg==
";
const ARCHE_LOG_KEY: &str =
    "arche2025h1.staging.ct.transparency.dev+ba2f06c0+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f";
const REMORA: &str = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2";

#[test]
fn a_real_witness_cosignature_verifies() {
    let remora = CosignatureVerifier::parse(REMORA).expect("remora's vkey parses");
    assert_eq!(remora.key_id(), 0xda77ade7);
    assert_eq!(remora.to_string(), REMORA);
    let note = Note::parse(ARCHE.as_bytes()).expect("the served note parses");
    let got = verify_cosignatures(&note, std::slice::from_ref(&remora)).expect("verifies");
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].name.as_str(), got[0].timestamp),
        ("remora.n621.de", 1779573024)
    );
    // The log's own key opens the same note: cosignatures are unknown lines to it.
    let log = VerifierKey::parse(ARCHE_LOG_KEY).expect("log vkey");
    let (cp, opened) = open_checkpoint(
        ARCHE.as_bytes(),
        &Verifiers::new([log]),
        "arche2025h1.staging.ct.transparency.dev",
    )
    .expect("the log signature verifies");
    assert_eq!(cp.size(), 1432088532);
    assert_eq!(opened.unverified.len(), 5);
    // Another size under the same lines: remora's cosignature no longer verifies.
    let clobbered = ARCHE.replace("1432088532", "42");
    let note = Note::parse(clobbered.as_bytes()).expect("parses");
    assert!(matches!(
        verify_cosignatures(&note, &[remora]),
        Err(NoteError::InvalidSignature { .. })
    ));
}

#[test]
fn go_formats_keys_and_timestamps() {
    // transparency-dev/formats note_cosigv1_test.go: a native 0x04 key is
    // accepted; the 0x01 key that Go converts is refused here on purpose
    // (a witness key must say it is one); malformed keys are refused.
    assert!(CosignatureVerifier::parse(REMORA).is_ok());
    assert_eq!(
        CosignatureVerifier::parse("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6"),
        Err(KeyError::WrongKeyType {
            found: 1,
            expected: 4
        })
    );
    for bad in [
        "bananas.sigstore.dev+12344556",
        "rekor.sigstore.dev+12345678+THIS_IS_NOT_BASE64!",
        "rekor.sigstore.dev+12345678+AwEB",
        "remora.n621.de+00000000+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
    ] {
        assert!(CosignatureVerifier::parse(bad).is_err(), "{bad}");
    }
    // TestCosignatureTimestamp: timestamp 1727964367; a 64-byte note
    // signature is not cosignature-shaped.
    let line = |b: &str| {
        let raw = b64(b);
        NoteSignature {
            name: "w".into(),
            key_id: u32::from_be_bytes(raw[..4].try_into().unwrap()),
            signature: raw[4..].to_vec(),
        }
    };
    let ts = line(
        "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA==",
    );
    assert_eq!(ts.signature.len(), COSIGNATURE_LEN);
    assert_eq!(cosignature_timestamp(&ts), Some(1727964367));
    let plain = line(
        "eQjRQm6eSKzFoiYalgwCPXu2y3ijtg68is9M46JKxuZB+dRfTmeQeDBoXnvxZx2ugnkyV+MUMLXpWs1hPb/W/4xkNQY=",
    );
    assert_eq!(cosignature_timestamp(&plain), None);
}

/// The conformance `witness` key (`witness.example/w1`), as a cosigner.
fn conformance_witness() -> CosignatureSigner {
    let v = read_json(&conformance_dir("signed-note").join("vectors.json"));
    let k = v["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["label"] == "witness")
        .expect("a key labelled witness");
    let seed: [u8; 32] = hex_bytes(s(k, "seed_hex")).try_into().expect("32 bytes");
    let signer = CosignatureSigner::from_seed(s(k, "name"), &seed).expect("signer");
    // Its skey string (type 0x01) names the same key in the cosigner role.
    let from_skey = CosignatureSigner::parse(s(k, "skey")).expect("0x01 skey as cosigner");
    assert_eq!(from_skey.verifier(), signer.verifier());
    assert_ne!(
        format!("{:08x}", signer.key_id()),
        s(k, "key_id_hex"),
        "the 0x04 key ID differs from the 0x01 one"
    );
    signer
}

fn hex_bytes(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn every_conformance_checkpoint_cosigned() {
    let w = conformance_witness();
    let witnesses = [w.verifier()];
    let v = read_json(&conformance_dir("tlog-tiles").join("checkpoints.json"));
    let log = VerifierKey::parse(s(&v, "vkey")).expect("log vkey");
    let origin = s(&v, "origin");
    let mut tally = Tally::checks("tlog-tiles checkpoints, cosigned");
    let mut by_size = std::collections::HashMap::new();
    for c in v["checkpoints"].as_array().expect("checkpoints") {
        let signed = s(c, "signed_checkpoint");
        let mut note = Note::parse(signed.as_bytes()).expect("parses");
        let ts = 1_700_000_000 + u(c, "tree_size");
        let line = w.cosign(note.text(), ts).expect("cosign");
        by_size.insert(u(c, "tree_size"), line.clone());
        note.add_signature(line).expect("add");
        let bytes = note.to_bytes();
        tally.check(bytes.starts_with(signed.as_bytes()), || {
            format!("size {}: the cosignature is appended", u(c, "tree_size"))
        });
        let opened = open_checkpoint(&bytes, &Verifiers::new([log.clone()]), origin);
        tally.check(opened.is_ok(), || {
            format!("size {}: the log key still opens it", u(c, "tree_size"))
        });
        let got = verify_cosignatures(&Note::parse(&bytes).expect("parses"), &witnesses);
        tally.check(
            matches!(&got, Ok(c) if c.len() == 1 && c[0].timestamp == ts),
            || format!("size {}: cosignature verifies: {got:?}", u(c, "tree_size")),
        );
    }
    // A fork of the same size does not carry the main tree's cosignature.
    for c in v["forked_checkpoints"].as_array().expect("forked") {
        let mut note = Note::parse(s(c, "signed_checkpoint").as_bytes()).expect("parses");
        let Some(line) = by_size.get(&u(c, "tree_size")) else {
            continue;
        };
        note.add_signature(line.clone()).expect("add");
        let got = verify_cosignatures(&note, &witnesses);
        tally.check(
            matches!(got, Err(NoteError::InvalidSignature { .. })),
            || format!("forked size {}: {got:?}", u(c, "tree_size")),
        );
    }
    tally.finish();
}

#[test]
fn an_unknown_cosignature_shaped_line_is_not_a_witness_of_ours() {
    let v = read_json(&conformance_dir("signed-note").join("vectors.json"));
    let case = v["open_cases"]
        .as_array()
        .expect("open_cases")
        .iter()
        .find(|c| c["id"] == "ok-unknown-cosignature-shape")
        .expect("the case exists");
    let note = Note::parse(&b64(s(case, "note_base64"))).expect("parses");
    let w = conformance_witness();
    // The 72-byte line is a cosignature in shape only (another name and key).
    assert_eq!(verify_cosignatures(&note, &[w.verifier()]), Ok(vec![]));
    let shaped = &note.signatures()[1];
    assert_eq!(shaped.signature.len(), COSIGNATURE_LEN);
    assert_eq!(cosignature_timestamp(shaped), Some(0));
}
