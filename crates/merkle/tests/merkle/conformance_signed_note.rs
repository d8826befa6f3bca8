//! C2SP signed-note vectors (`signed-note/vectors.json`): verifier-key
//! parsing, byte-exact signing, and opening notes with the expected failure
//! class (`invalid_signature`, `unknown_signer`, `malformed`).

use std::collections::HashMap;

use merkle::{Note, NoteError, NoteSignature, SignerKey, VerifierKey, Verifiers};
use serde_json::Value;

use crate::common::{Tally, b64, conformance_dir, read_json, s};

fn vectors() -> Value {
    read_json(&conformance_dir("signed-note").join("vectors.json"))
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn vkey_cases() {
    let v = vectors();
    let mut tally = Tally::new("signed-note vkey_cases");
    for c in v["vkey_cases"].as_array().expect("vkey_cases") {
        let parsed = VerifierKey::parse(s(c, "vkey"));
        let valid = c["valid"].as_bool().expect("valid");
        let ok = match (&parsed, valid) {
            (Ok(k), true) => {
                k.name() == s(c, "name")
                    && format!("{:08x}", k.key_id()) == s(c, "key_id_hex")
                    && to_hex(&k.public_key()) == s(c, "public_key_hex")
                    && k.to_string() == s(c, "vkey")
            }
            (Err(_), false) => true,
            _ => false,
        };
        tally.check(ok, || {
            format!("{}: valid={valid}, got {parsed:?}", s(c, "id"))
        });
    }
    tally.finish();
}

#[test]
fn sign_cases() {
    let v = vectors();
    let signers: HashMap<&str, SignerKey> = v["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter(|k| k["skey"].is_string())
        .map(|k| {
            let signer = SignerKey::parse(s(k, "skey")).expect("skey parses");
            assert_eq!(
                signer.verifier().to_string(),
                s(k, "vkey"),
                "skey and vkey agree"
            );
            assert_eq!(signer.to_skey_string(), s(k, "skey"), "skey round trip");
            (s(k, "label"), signer)
        })
        .collect();
    let mut tally = Tally::new("signed-note sign_cases");
    for c in v["sign_cases"].as_array().expect("sign_cases") {
        let mut note = Note::new(s(c, "text")).expect("valid text");
        for label in c["signer_labels"].as_array().expect("labels") {
            note.sign(&signers[label.as_str().expect("label")]);
        }
        let got = String::from_utf8(note.to_bytes()).expect("utf8");
        tally.check(got == s(c, "expected_note"), || {
            format!("{}: got {got:?}", s(c, "id"))
        });
    }
    tally.finish();
}

fn sig_list(v: &Value) -> Vec<(String, String, String)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    (
                        s(x, "name").to_owned(),
                        s(x, "key_id_hex").to_owned(),
                        s(x, "signature_base64").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn ours(list: &[NoteSignature]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|x| (x.name.clone(), format!("{:08x}", x.key_id), x.to_base64()))
        .collect()
}

#[test]
fn open_cases() {
    let v = vectors();
    let mut tally = Tally::new("signed-note open_cases");
    for c in v["open_cases"].as_array().expect("open_cases") {
        let msg = b64(s(c, "note_base64"));
        let trusted = Verifiers::new(
            c["trusted_vkeys"]
                .as_array()
                .expect("trusted_vkeys")
                .iter()
                .map(|k| {
                    VerifierKey::parse(k.as_str().expect("vkey")).expect("trusted keys are valid")
                }),
        );
        let got = Note::open(&msg, &trusted);
        let expect = s(c, "expect");
        let ok = match (&got, expect) {
            (Ok(opened), "ok") => {
                opened.text == s(c, "expected_text")
                    && ours(&opened.verified) == sig_list(&c["expected_verified_signatures"])
                    && ours(&opened.unverified) == sig_list(&c["expected_unverified_signatures"])
            }
            (Err(NoteError::InvalidSignature { .. }), "invalid_signature") => true,
            (Err(NoteError::UnknownSigner), "unknown_signer") => true,
            (Err(NoteError::Malformed(_)), "malformed") => true,
            _ => false,
        };
        tally.check(ok, || {
            format!(
                "{} ({}): expected {expect}, got {got:?}",
                s(c, "id"),
                s(c, "requirement")
            )
        });
    }
    tally.finish();
}
