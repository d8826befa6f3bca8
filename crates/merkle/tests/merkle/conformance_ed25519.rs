//! C2SP CCTV Ed25519 edge cases (`ed25519/`), applied the way note
//! verification uses Ed25519: a verifier key from the raw public key, then
//! [`merkle::VerifierKey::verify`]. Expected verdict: Go's
//! `crypto/ed25519.Verify`, which rejects exactly the vectors flagged
//! `low_order_residue` or `non_canonical_R` (see the folder's README).

use merkle::VerifierKey;

use crate::common::{Tally, conformance_dir, read_json, s};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn verification_agrees_with_go_on_every_vector() {
    let v = read_json(&conformance_dir("ed25519").join("ed25519vectors.json"));
    let mut tally = Tally::new("ed25519");
    let mut accepted = 0;
    for case in v.as_array().expect("array") {
        let flags: Vec<&str> = case["flags"]
            .as_array()
            .map(|a| a.iter().filter_map(|f| f.as_str()).collect())
            .unwrap_or_default();
        let go_accepts =
            !flags.contains(&"low_order_residue") && !flags.contains(&"non_canonical_R");
        let key: [u8; 32] = hex(s(case, "key")).try_into().expect("32-byte key");
        let sig = hex(s(case, "sig"));
        let ours = VerifierKey::from_public_key("cctv", &key)
            .map(|k| k.verify(s(case, "msg").as_bytes(), &sig))
            .unwrap_or(false);
        accepted += usize::from(ours);
        tally.check(ours == go_accepts, || {
            format!(
                "vector {}: flags {flags:?}: go accepts {go_accepts}, we {ours}",
                case["number"]
            )
        });
    }
    println!(
        "ed25519: we accept {accepted} of {} (Go: 208)",
        tally.passed + tally.failures.len()
    );
    tally.finish();
}
