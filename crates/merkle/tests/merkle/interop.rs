//! Interop with independent implementations from crates.io: `tlog_tiles`
//! (Cloudflare's port of Go's sumdb/tlog, c2sp tlog-tiles and
//! tlog-checkpoint) and `signed_note` (Cloudflare's c2sp signed-note). They
//! must verify our checkpoints, notes, tiles and proofs, and we theirs.

use std::collections::HashMap;

use merkle::tiles::{self, TileId};
use merkle::{
    Checkpoint, Hash, MemoryTree, Note, SignerKey, Verifiers, consistency_proof, inclusion_proof,
    open_checkpoint, verify_consistency, verify_inclusion,
};
use signed_note::{
    Note as TheirNote, Signer as _, StandardSigner, StandardVerifier, Verifier as _, VerifierList,
};
use tlog_tiles::{Checkpoint as TheirCheckpoint, Hash as TheirHash, TileHashReader, TileReader};

use crate::common::{Rng, leaf_n_hashes};

const ORIGIN: &str = "flightdeck.example/interop";

fn our_signer() -> SignerKey {
    SignerKey::from_seed(ORIGIN, &[42; 32]).expect("signer")
}

#[test]
fn signed_note_crate_verifies_our_notes_and_keys() {
    let signer = our_signer();
    let vkey = signer.verifier().to_string();
    let theirs = StandardVerifier::new(&vkey).expect("they parse our vkey");
    assert_eq!(theirs.name(), ORIGIN);
    assert_eq!(theirs.key_id(), signer.key_id());
    let mut material = vec![1u8];
    material.extend_from_slice(&signer.verifier().public_key());
    assert_eq!(signed_note::key_id(ORIGIN, &material), signer.key_id());

    let witness = SignerKey::from_seed("witness.example/w", &[9; 32]).expect("witness");
    let cp = Checkpoint::new(ORIGIN, 1234, Hash([7; 32]))
        .expect("cp")
        .with_extension("ext")
        .expect("ext");
    let signed = cp.sign(&[&signer, &witness]).expect("sign");
    let note = TheirNote::from_bytes(&signed).expect("they parse our note");
    let list = VerifierList::new(vec![Box::new(theirs.clone())]);
    let (verified, unverified) = note.verify(&list).expect("they verify our signature");
    assert_eq!((verified.len(), unverified.len()), (1, 1));
    assert_eq!(note.text(), cp.to_text().as_bytes());

    // Tampering is caught by them too.
    let mut bad = signed.clone();
    bad[3] ^= 1;
    let rejected = TheirNote::from_bytes(&bad)
        .map(|n| n.verify(&list).is_err())
        .unwrap_or(true);
    assert!(rejected, "signed_note accepted a tampered note");
}

#[test]
fn we_verify_notes_signed_by_signed_note_crate() {
    let signer = our_signer();
    let their_signer = StandardSigner::new(&signer.to_skey_string()).expect("they parse our skey");
    assert_eq!(their_signer.key_id(), signer.key_id());
    let text = Checkpoint::new(ORIGIN, 5, Hash([1; 32]))
        .expect("cp")
        .to_text();
    let mut note = TheirNote::new(text.as_bytes(), &[]).expect("note");
    note.add_sigs(&[&their_signer]).expect("they sign");
    let bytes = note.to_bytes();

    let (cp, opened) = open_checkpoint(&bytes, &Verifiers::new([signer.verifier()]), ORIGIN)
        .expect("we open theirs");
    assert_eq!(cp.size(), 5);
    assert_eq!(opened.verified.len(), 1);
    // Ed25519 is deterministic: the same key signs the same bytes.
    let mut ours = Note::new(&text).expect("note");
    ours.sign(&signer);
    assert_eq!(ours.to_bytes(), bytes);

    // Their verifier-key encoding of our public key is our string.
    let dalek =
        ed25519_dalek::VerifyingKey::from_bytes(&signer.verifier().public_key()).expect("key");
    assert_eq!(
        signed_note::new_ed25519_verifier_key(ORIGIN, &dalek),
        signer.verifier().to_string()
    );
}

#[test]
fn tlog_tiles_crate_parses_our_checkpoints_and_we_theirs() {
    let root = merkle::root_from_leaf_hashes(&leaf_n_hashes(70000));
    let cp = Checkpoint::new(ORIGIN, 70000, root)
        .expect("cp")
        .with_extension("x y")
        .expect("ext");
    let theirs = TheirCheckpoint::from_bytes(cp.to_text().as_bytes()).expect("they parse ours");
    assert_eq!(theirs.origin(), ORIGIN);
    assert_eq!(theirs.size(), 70000);
    assert_eq!(theirs.hash().0, root.0);
    assert_eq!(theirs.extension(), "x y\n");
    let back = Checkpoint::parse(std::str::from_utf8(&theirs.to_bytes()).expect("utf8"))
        .expect("we parse theirs");
    assert_eq!(back, cp);
}

/// Our tiles, served to `tlog_tiles` (whose paths carry the height: `tile/8/…`).
struct OurTiles(HashMap<String, Vec<u8>>);

impl TileReader for OurTiles {
    fn height(&self) -> u8 {
        8
    }

    fn read_tiles(&self, tiles: &[tlog_tiles::Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        tiles
            .iter()
            .map(|t| {
                let path = t.path().replacen("tile/8/", "tile/", 1);
                self.0
                    .get(&path)
                    .cloned()
                    .ok_or(tlog_tiles::Error::InvalidTile)
            })
            .collect()
    }

    fn save_tiles(&self, _tiles: &[tlog_tiles::Tile], _data: &[Vec<u8>]) {}
}

#[test]
fn tlog_tiles_crate_verifies_our_tiles_and_proofs_and_we_theirs() {
    let leaves = leaf_n_hashes(70000);
    let tree = MemoryTree::from_leaf_hashes(&leaves);
    let mut rng = Rng(2024);
    let mut checked = 0;
    for size in [1u64, 2, 255, 256, 257, 1000, 65536, 70000] {
        let built = OurTiles(
            tiles::build_tiles(&leaves[..size as usize])
                .into_iter()
                .map(|(t, b): (TileId, _)| (t.path(), b))
                .collect(),
        );
        let root = tree.root_at(size).expect("root");
        // Their reader authenticates every tile it reads against our root.
        let reader = TileHashReader::new(size, TheirHash(root.0), &built);
        assert_eq!(
            tlog_tiles::tree_hash(size, &reader)
                .expect("their tree hash over our tiles")
                .0,
            root.0
        );
        let mut src = &tree;
        for _ in 0..12 {
            let i = rng.range(0, size);
            let ours = inclusion_proof(i, size, &mut src).expect("prove");
            let theirs =
                tlog_tiles::prove_record(size, i, &reader).expect("they prove from our tiles");
            assert_eq!(
                theirs.iter().map(|h| h.0).collect::<Vec<_>>(),
                ours.iter().map(|h| h.0).collect::<Vec<_>>()
            );
            let ours_t: Vec<TheirHash> = ours.iter().map(|h| TheirHash(h.0)).collect();
            tlog_tiles::check_record(
                &ours_t,
                size,
                TheirHash(root.0),
                i,
                TheirHash(leaves[i as usize].0),
            )
            .expect("they verify our inclusion proof");
            let theirs_ours: Vec<Hash> = theirs.iter().map(|h| Hash(h.0)).collect();
            verify_inclusion(i, size, &leaves[i as usize], &theirs_ours, &root)
                .expect("we verify theirs");

            let s1 = rng.range(1, size + 1);
            let r1 = tree.root_at(s1).expect("root1");
            let ours = consistency_proof(s1, size, &mut src).expect("prove");
            let theirs = tlog_tiles::prove_tree(size, s1, &reader).expect("they prove consistency");
            assert_eq!(
                theirs.iter().map(|h| h.0).collect::<Vec<_>>(),
                ours.iter().map(|h| h.0).collect::<Vec<_>>()
            );
            let ours_t: Vec<TheirHash> = ours.iter().map(|h| TheirHash(h.0)).collect();
            tlog_tiles::check_tree(&ours_t, size, TheirHash(root.0), s1, TheirHash(r1.0))
                .expect("they verify our consistency proof");
            let theirs_ours: Vec<Hash> = theirs.iter().map(|h| Hash(h.0)).collect();
            verify_consistency(s1, size, &theirs_ours, &r1, &root).expect("we verify theirs");
            checked += 1;
        }
        // A replaced tile is caught by their authenticating reader.
        if size >= 256 {
            let mut forged = OurTiles(built.0.clone());
            if let Some(t) = forged.0.get_mut("tile/0/000") {
                t[32] ^= 1; // leaf 1's hash: part of leaf 0's proof
            }
            let reader = TileHashReader::new(size, TheirHash(root.0), &forged);
            let caught = match tlog_tiles::prove_record(size, 0, &reader) {
                Err(_) => true,
                Ok(p) => {
                    tlog_tiles::check_record(&p, size, TheirHash(root.0), 0, TheirHash(leaves[0].0))
                        .is_err()
                }
            };
            assert!(caught, "forged tile accepted at {size}");
        }
    }
    println!("interop tlog_tiles: {checked} inclusion + {checked} consistency proofs both ways");
}

/// c2sp.org/tlog-cosignature written here from the spec on `ed25519-dalek`
/// and `signed_note::key_id` alone (neither crate knows cosignatures), and
/// plugged into the `signed_note` crate's note framing: an implementation
/// independent of `merkle::cosignature`.
struct SpecCosigner {
    name: String,
    key: ed25519_dalek::SigningKey,
    timestamp: u64,
}

fn spec_key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut material = vec![0x04u8];
    material.extend_from_slice(public);
    signed_note::key_id(name, &material)
}

fn spec_message(timestamp: u64, msg: &[u8]) -> Vec<u8> {
    let mut m = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    m.extend_from_slice(msg);
    m
}

impl signed_note::Signer for SpecCosigner {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        spec_key_id(&self.name, self.key.verifying_key().as_bytes())
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        use ed25519_dalek::Signer as _;
        let mut out = self.timestamp.to_be_bytes().to_vec();
        out.extend_from_slice(&self.key.sign(&spec_message(self.timestamp, msg)).to_bytes());
        Ok(out)
    }
}

struct SpecCosigVerifier(SpecCosigner);

impl signed_note::Verifier for SpecCosigVerifier {
    fn name(&self) -> &str {
        &self.0.name
    }
    fn key_id(&self) -> u32 {
        signed_note::Signer::key_id(&self.0)
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        use ed25519_dalek::Verifier as _;
        if sig.len() != 72 {
            return false;
        }
        let ts = u64::from_be_bytes(sig[..8].try_into().expect("8 bytes"));
        let Ok(s) = ed25519_dalek::Signature::from_slice(&sig[8..]) else {
            return false;
        };
        self.0
            .key
            .verifying_key()
            .verify(&spec_message(ts, msg), &s)
            .is_ok()
    }
}

#[test]
fn cosignatures_interoperate_with_a_spec_implementation_on_signed_note() {
    use base64::Engine as _;
    let seed = [77u8; 32];
    let name = "witness.example/interop";
    let timestamp = 1_767_225_600;
    let spec = SpecCosigner {
        name: name.into(),
        key: ed25519_dalek::SigningKey::from_bytes(&seed),
        timestamp,
    };
    let ours = merkle::CosignatureSigner::from_seed(name, &seed).expect("cosigner");
    assert_eq!(ours.key_id(), signed_note::Signer::key_id(&spec));
    let log = our_signer();
    let text = Checkpoint::new(ORIGIN, 4242, Hash([5; 32]))
        .expect("cp")
        .to_text();

    // Ours, read by signed_note with the spec verifier (our log line is unknown to it).
    let mut note = Note::new(&text).expect("note");
    note.sign(&log);
    note.add_signature(ours.cosign(&text, timestamp).expect("cosign"))
        .expect("add");
    let bytes = note.to_bytes();
    let theirs = TheirNote::from_bytes(&bytes).expect("they parse our cosigned note");
    let list = VerifierList::new(vec![Box::new(SpecCosigVerifier(SpecCosigner {
        name: name.into(),
        key: ed25519_dalek::SigningKey::from_bytes(&seed),
        timestamp: 0,
    }))]);
    let (verified, unverified) = theirs.verify(&list).expect("they verify our cosignature");
    assert_eq!((verified.len(), unverified.len()), (1, 1));
    // And the log's own key, through signed_note, ignores the cosignature line.
    let log_list = VerifierList::new(vec![Box::new(
        StandardVerifier::new(&log.verifier().to_string()).expect("vkey"),
    )]);
    let (verified, unverified) = theirs.verify(&log_list).expect("log key still opens it");
    assert_eq!((verified.len(), unverified.len()), (1, 1));

    // Theirs, verified by us from a vkey string built by hand.
    let mut their_note = TheirNote::new(text.as_bytes(), &[]).expect("note");
    their_note.add_sigs(&[&spec]).expect("they cosign");
    let their_bytes = their_note.to_bytes();
    let mut material = vec![0x04u8];
    material.extend_from_slice(spec.key.verifying_key().as_bytes());
    let vkey = format!(
        "{name}+{:08x}+{}",
        signed_note::key_id(name, &material),
        base64::engine::general_purpose::STANDARD.encode(&material)
    );
    let v = merkle::CosignatureVerifier::parse(&vkey).expect("we parse the hand-built vkey");
    assert_eq!(v, ours.verifier());
    let got = merkle::verify_cosignatures(&Note::parse(&their_bytes).expect("parse"), &[v])
        .expect("we verify theirs");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].timestamp, timestamp);
    // Ed25519 is deterministic: the same line, byte for byte.
    assert!(bytes.ends_with(&their_bytes[text.len() + 1..]));
}
