//! Checkpoint and tlog-tiles vectors (`tlog-tiles/`): roots, checkpoint
//! texts and signatures byte for byte, split-view detection, the checkpoint
//! parser, proofs (verified and regenerated), and every tile and entry
//! bundle at eight tree sizes — in both directions (we render theirs; we
//! serve proofs from theirs).

use std::collections::{BTreeMap, HashMap};

use merkle::tiles::{self, TileId, TilePath};
use merkle::{
    Checkpoint, CompactRange, Hash, MemoryTree, SignerKey, TileNodes, VerifierKey, Verifiers,
    consistency_proof, inclusion_proof, open_checkpoint, root_at, verify_consistency,
    verify_consistency_bytes, verify_inclusion, verify_inclusion_bytes,
};
use serde_json::Value;

use crate::common::{Tally, b64, b64_list, conformance_dir, leaf_n_hashes, read_json, s, u};

fn file(name: &str) -> Value {
    read_json(&conformance_dir("tlog-tiles").join(name))
}

#[test]
fn checkpoints_roots_signatures_and_forks() {
    let v = file("checkpoints.json");
    let origin = s(&v, "origin");
    let signer = SignerKey::parse(s(&v, "skey")).expect("skey");
    let vkey = VerifierKey::parse(s(&v, "vkey")).expect("vkey");
    assert_eq!(signer.verifier(), vkey);
    let trusted = Verifiers::new([vkey]);
    let leaves = leaf_n_hashes(70000);
    let tree = MemoryTree::from_leaf_hashes(&leaves);
    let mut tally = Tally::checks("tlog-tiles/checkpoints.json");
    let mut heads: Vec<(u64, Hash)> = Vec::new();
    for c in v["checkpoints"].as_array().expect("checkpoints") {
        let n = u(c, "tree_size");
        let mut range = CompactRange::new(0);
        for l in &leaves[..n as usize] {
            range.append(*l);
        }
        let root = range.root().expect("root");
        tally.check(root.to_base64() == s(c, "root_hash_base64"), || {
            format!("root of {n}")
        });
        let cp = Checkpoint::new(origin, n, root).expect("checkpoint");
        tally.check(cp.to_text() == s(c, "checkpoint_text"), || {
            format!("text of {n}")
        });
        let signed = cp.sign(&[&signer]).expect("sign");
        tally.check(signed == s(c, "signed_checkpoint").as_bytes(), || {
            format!("signed checkpoint of {n}")
        });
        let opened = open_checkpoint(s(c, "signed_checkpoint").as_bytes(), &trusted, origin);
        tally.check(opened.as_ref().is_ok_and(|(p, _)| *p == cp), || {
            format!("open {n}: {opened:?}")
        });
        heads.push((n, root));
    }
    // Every checkpoint is provably consistent with every larger one.
    let mut src = &tree;
    for &(n1, r1) in &heads {
        for &(n2, r2) in &heads {
            if n1 == 0 || n1 > n2 {
                continue;
            }
            let p = consistency_proof(n1, n2, &mut src).expect("proof");
            tally.check(verify_consistency(n1, n2, &p, &r1, &r2).is_ok(), || {
                format!("consistency {n1} -> {n2}")
            });
        }
    }
    // Forked checkpoints: signatures verify, consistency with the main tree fails.
    for f in v["forked_checkpoints"].as_array().expect("forked") {
        let (cp, _) = open_checkpoint(s(f, "signed_checkpoint").as_bytes(), &trusted, origin)
            .expect("forked opens");
        for &(n, r) in &heads {
            if n <= 100 {
                continue;
            }
            let forked_detected = if n == cp.size() {
                r != *cp.root()
            } else if n < cp.size() {
                let p = consistency_proof(n, cp.size(), &mut src).expect("proof");
                verify_consistency(n, cp.size(), &p, &r, cp.root()).is_err()
            } else {
                let p = consistency_proof(cp.size(), n, &mut src).expect("proof");
                verify_consistency(cp.size(), n, &p, cp.root(), &r).is_err()
            };
            tally.check(forked_detected, || {
                format!("fork of size {} vs main {n} not detected", cp.size())
            });
        }
    }
    tally.finish();
}

#[test]
fn checkpoint_parse_cases() {
    let v = file("checkpoint-parse.json");
    let trusted = Verifiers::new([VerifierKey::parse(s(&v, "vkey")).expect("vkey")]);
    let mut tally = Tally::checks("tlog-tiles/checkpoint-parse.json");
    for c in v["cases"].as_array().expect("cases") {
        let valid = c["valid"].as_bool().expect("valid");
        let got = Checkpoint::parse(s(c, "text"));
        let ok = match (&got, valid) {
            (Ok(cp), true) => {
                let ext: Vec<String> = c["extensions"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|e| e.as_str().expect("ext").to_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                cp.origin() == s(c, "origin")
                    && cp.size() == u(c, "tree_size")
                    && cp.root().to_base64() == s(c, "root_hash_base64")
                    && cp.extensions() == ext.as_slice()
                    && cp.to_text() == s(c, "text")
            }
            (Err(_), false) => true,
            _ => false,
        };
        tally.check(ok, || format!("{}: valid={valid}, got {got:?}", s(c, "id")));
        // Through the full verify-then-parse path, where a signed note exists.
        if let Some(signed) = c["signed_note"].as_str() {
            let expected_origin = if valid {
                s(c, "origin")
            } else {
                "flightdeck.example/audit"
            };
            let got = open_checkpoint(signed.as_bytes(), &trusted, expected_origin);
            tally.check(got.is_ok() == valid, || {
                format!("{} signed: valid={valid}, got {got:?}", s(c, "id"))
            });
        }
    }
    tally.finish();
}

#[test]
fn proof_probes_verify_and_regenerate() {
    let v = file("proofs.json");
    let leaves = leaf_n_hashes(70000);
    let tree = MemoryTree::from_leaf_hashes(&leaves);
    let mut src = &tree;
    let mut tally = Tally::checks("tlog-tiles/proofs.json");
    for p in v["inclusion"].as_array().expect("inclusion") {
        let want_err = p["wantErr"].as_bool().expect("wantErr");
        let (idx, size, proof) = (u(p, "leafIdx"), u(p, "treeSize"), b64_list(p, "proof"));
        let got = verify_inclusion_bytes(
            idx,
            size,
            &b64(s(p, "leafHash")),
            &proof,
            &b64(s(p, "root")),
        );
        tally.check(got.is_err() == want_err, || {
            format!("inclusion {idx}/{size} {}: {got:?}", s(p, "desc"))
        });
        if !want_err {
            let ours = inclusion_proof(idx, size, &mut src).expect("prove");
            let theirs: Vec<Hash> = proof
                .iter()
                .map(|b| Hash::from_slice(b).expect("hash"))
                .collect();
            tally.check(ours == theirs, || {
                format!("regenerated inclusion {idx}/{size} differs")
            });
            tally.check(
                merkle::leaf_hash(s(p, "leaf").as_bytes()).as_bytes()
                    == b64(s(p, "leafHash")).as_slice(),
                || format!("leaf hash of {}", s(p, "leaf")),
            );
        }
    }
    for p in v["consistency"].as_array().expect("consistency") {
        let want_err = p["wantErr"].as_bool().expect("wantErr");
        let (s1, s2, proof) = (u(p, "size1"), u(p, "size2"), b64_list(p, "proof"));
        let got =
            verify_consistency_bytes(s1, s2, &proof, &b64(s(p, "root1")), &b64(s(p, "root2")));
        tally.check(got.is_err() == want_err, || {
            format!("consistency {s1}->{s2} {}: {got:?}", s(p, "desc"))
        });
        if !want_err {
            let ours = consistency_proof(s1, s2, &mut src).expect("prove");
            let theirs: Vec<Hash> = proof
                .iter()
                .map(|b| Hash::from_slice(b).expect("hash"))
                .collect();
            tally.check(ours == theirs, || {
                format!("regenerated consistency {s1}->{s2} differs")
            });
        }
    }
    tally.finish();
}

#[test]
fn tiles_and_bundles_byte_exact_both_ways() {
    let dir = conformance_dir("tlog-tiles").join("tiles");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tiles dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 8,
        "expected 8 size-N.json files in {}",
        dir.display()
    );
    let all_leaves = leaf_n_hashes(70000);
    let trusted_key = |v: &Value| Verifiers::new([VerifierKey::parse(s(v, "vkey")).expect("vkey")]);
    let mut tally = Tally::checks("tlog-tiles/tiles");
    for f in &files {
        let v = read_json(f);
        let n = u(&v, "tree_size");
        let name = f
            .file_name()
            .map(|x| x.to_string_lossy().into_owned())
            .unwrap_or_default();
        let leaves = &all_leaves[..n as usize];
        let want_tiles: BTreeMap<String, Vec<u8>> = v["tiles"]
            .as_object()
            .expect("tiles")
            .iter()
            .map(|(k, x)| (k.clone(), b64(x.as_str().expect("b64"))))
            .collect();
        let want_bundles: BTreeMap<String, Vec<u8>> = v["entry_bundles"]
            .as_object()
            .expect("bundles")
            .iter()
            .map(|(k, x)| (k.clone(), b64(x.as_str().expect("b64"))))
            .collect();
        assert_eq!(want_tiles.len() as u64, u(&v, "tile_count"));
        assert_eq!(want_bundles.len() as u64, u(&v, "entry_bundle_count"));

        // Ours, rendered from the leaves.
        let built: BTreeMap<String, Vec<u8>> = tiles::build_tiles(leaves)
            .into_iter()
            .map(|(t, b)| (t.path(), b))
            .collect();
        tally.check(built.keys().eq(want_tiles.keys()), || {
            format!(
                "{name}: tile paths differ: ours {:?}",
                built.keys().collect::<Vec<_>>()
            )
        });
        let listed: Vec<String> = tiles::tiles_for_size(n).iter().map(TileId::path).collect();
        tally.check(listed.iter().eq(want_tiles.keys()), || {
            format!("{name}: tiles_for_size differs")
        });
        for (path, bytes) in &want_tiles {
            tally.check(built.get(path) == Some(bytes), || {
                format!("{name}: tile {path} bytes differ")
            });
            let parsed = tiles::parse_tile_path(path);
            tally.check(
                matches!(parsed, Ok(TilePath::Hash(t)) if t.path() == *path && t.byte_len() == bytes.len()),
                || format!("{name}: parse {path}: {parsed:?}"),
            );
        }
        let bundles = tiles::bundles_for_size(n);
        tally.check(
            bundles
                .iter()
                .map(|b| b.path())
                .eq(want_bundles.keys().cloned()),
            || format!("{name}: bundle paths differ"),
        );
        for b in &bundles {
            let entries: Vec<String> = (b.first_leaf()..b.first_leaf() + b.width())
                .map(|i| format!("leaf-{i}"))
                .collect();
            let ours = tiles::encode_entry_bundle(&entries).expect("encode");
            let theirs = &want_bundles[&b.path()];
            tally.check(ours == *theirs, || {
                format!("{name}: bundle {} bytes differ", b.path())
            });
            let decoded = tiles::decode_entry_bundle(theirs).expect("decode");
            tally.check(
                decoded
                    .iter()
                    .zip(&entries)
                    .all(|(d, e)| *d == e.as_bytes())
                    && decoded.len() == entries.len(),
                || format!("{name}: decode {}", b.path()),
            );
            let parsed = tiles::parse_tile_path(&b.path());
            tally.check(
                matches!(parsed, Ok(TilePath::Entries(x)) if x == *b),
                || format!("parse {}", b.path()),
            );
        }

        // Theirs, served as a read-only tile source: checkpoint, root, proofs.
        let (cp, _) = open_checkpoint(
            s(&v, "checkpoint").as_bytes(),
            &trusted_key(&v),
            s(&v, "origin"),
        )
        .expect("checkpoint opens");
        let theirs: HashMap<String, Vec<u8>> = want_tiles.clone().into_iter().collect();
        let mut src = TileNodes::new(n, |t: TileId| {
            theirs.get(&t.path()).cloned().ok_or(t.path())
        });
        let root = root_at(n, &mut src).expect("root from their tiles");
        tally.check(
            root == *cp.root() && root.to_base64() == s(&v, "root_hash_base64"),
            || format!("{name}: root from tiles"),
        );
        for i in [0, n / 2, n - 1] {
            let p = inclusion_proof(i, n, &mut src).expect("prove from their tiles");
            tally.check(
                verify_inclusion(i, n, &all_leaves[i as usize], &p, &root).is_ok(),
                || format!("{name}: inclusion {i}"),
            );
        }
        for s1 in [1, n / 3 + 1, n] {
            let p = consistency_proof(s1, n, &mut src).expect("prove");
            let r1 = merkle::root_from_leaf_hashes(&all_leaves[..s1 as usize]);
            tally.check(verify_consistency(s1, n, &p, &r1, &root).is_ok(), || {
                format!("{name}: consistency {s1}")
            });
        }
    }
    tally.finish();
}
