//! transparency-dev/merkle vectors (`merkle/`): RFC 6962 inclusion and
//! consistency probes, including every corrupted variant, and the subtree
//! probes of Merkle Tree Certificates. Raw bytes go through the `*_bytes`
//! verifiers so that wrong-length hashes are exercised, never pre-filtered.

use std::path::Path;

use merkle::{
    verify_consistency_bytes, verify_inclusion_bytes, verify_subtree_consistency_bytes,
    verify_subtree_inclusion_bytes,
};

use crate::common::{Tally, b64, b64_list, conformance_dir, json_files, read_json, s, u};

fn run(folder: &str, check: impl Fn(&serde_json::Value) -> Result<(), merkle::VerifyError>) {
    let dir = conformance_dir("merkle").join(folder);
    let files = json_files(&dir);
    assert!(!files.is_empty(), "no vectors in {}", dir.display());
    let mut tally = Tally::new(&format!("merkle/{folder}"));
    for f in &files {
        let v = read_json(f);
        let want_err = v["wantErr"].as_bool().expect("wantErr");
        let got = check(&v);
        tally.check(got.is_err() == want_err, || {
            format!(
                "{} ({}): wantErr={want_err}, got {got:?}",
                rel(f),
                s(&v, "desc")
            )
        });
    }
    tally.finish();
}

fn rel(p: &Path) -> String {
    let s = p.display().to_string();
    s.split("conformance/").last().unwrap_or(&s).to_owned()
}

#[test]
fn inclusion_vectors() {
    run("inclusion", |v| {
        verify_inclusion_bytes(
            u(v, "leafIdx"),
            u(v, "treeSize"),
            &b64(s(v, "leafHash")),
            &b64_list(v, "proof"),
            &b64(s(v, "root")),
        )
    });
}

#[test]
fn consistency_vectors() {
    run("consistency", |v| {
        verify_consistency_bytes(
            u(v, "size1"),
            u(v, "size2"),
            &b64_list(v, "proof"),
            &b64(s(v, "root1")),
            &b64(s(v, "root2")),
        )
    });
}

#[test]
fn subtree_inclusion_vectors() {
    run("subtreeinclusion", |v| {
        verify_subtree_inclusion_bytes(
            u(v, "leafIdx"),
            u(v, "start"),
            u(v, "end"),
            &b64(s(v, "leafHash")),
            &b64_list(v, "proof"),
            &b64(s(v, "root")),
        )
    });
}

#[test]
fn subtree_consistency_vectors() {
    run("subtreeconsistency", |v| {
        verify_subtree_consistency_bytes(
            u(v, "start"),
            u(v, "end"),
            u(v, "size"),
            &b64_list(v, "proof"),
            &b64(s(v, "root1")),
            &b64(s(v, "root2")),
        )
    });
}
