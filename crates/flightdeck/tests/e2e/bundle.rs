//! `flightdeck audit bundle` against the real server: bundles written from
//! the data directory (beside the running server) and over HTTP are
//! tlog-tiles folders that `flightdeck audit verify --dir` accepts and that
//! the independent `signed_note` and `tlog_tiles` crates verify entry by
//! entry; a tampered bundle fails both.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::json;
use signed_note::{Note, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint, TileHashReader, TileReader};

use crate::harness::{API, Server, bin};

fn flightdeck(args: &[&str]) -> Output {
    std::process::Command::new(bin())
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Waits until the project's checkpoint covers `size` entries.
fn wait_for_size(data: &Path, project: &str, size: u64) {
    let cp = data.join(format!("audit/tlog/p/{project}/checkpoint"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(b) = std::fs::read(&cp) {
            let text = String::from_utf8_lossy(&b).into_owned();
            if text.lines().nth(1).and_then(|l| l.parse::<u64>().ok()) >= Some(size) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "no checkpoint of size {size}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn copy_dir(from: &Path, to: &Path) {
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

/// A `tlog_tiles` reader of a bundle folder.
struct Folder(PathBuf);

impl TileReader for Folder {
    fn height(&self) -> u8 {
        8
    }
    fn read_tiles(&self, ts: &[tlog_tiles::Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        ts.iter()
            .map(|t| {
                // tlog_tiles names tiles with their height: tile/8/<L>/...
                std::fs::read(self.0.join(t.path().replacen("tile/8/", "tile/", 1)))
                    .map_err(|_| tlog_tiles::Error::InvalidTile)
            })
            .collect()
    }
    fn save_tiles(&self, _: &[tlog_tiles::Tile], _: &[Vec<u8>]) {}
}

/// Every entry of a bundle folder, in order (entry bundle framing:
/// big-endian u16 length, then the bytes).
fn entries(dir: &Path, size: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for n in 0..size.div_ceil(256) {
        let width = (size - n * 256).min(256);
        let rel = if width == 256 {
            format!("tile/entries/{n:03}")
        } else {
            format!("tile/entries/{n:03}.p/{width}")
        };
        let data = std::fs::read(dir.join(&rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let mut rest = &data[..];
        while !rest.is_empty() {
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            out.push(rest[2..2 + len].to_vec());
            rest = &rest[2 + len..];
        }
    }
    out
}

/// Verifies a bundle with `signed_note` and `tlog_tiles` only: the
/// checkpoint's signature by `key`, its origin, the tiles against the root,
/// and an inclusion proof of every entry. Returns the entries, or the
/// first failure.
fn independent_check(dir: &Path, key: &str, origin: &str) -> Result<Vec<Vec<u8>>, String> {
    let verifier = StandardVerifier::new(key).map_err(|e| format!("key: {e:?}"))?;
    let note = Note::from_bytes(&std::fs::read(dir.join("checkpoint")).unwrap())
        .map_err(|e| format!("note: {e:?}"))?;
    note.verify(&VerifierList::new(vec![Box::new(verifier)]))
        .map_err(|e| format!("signature: {e:?}"))?;
    let cp = Checkpoint::from_bytes(note.text()).map_err(|e| format!("checkpoint: {e:?}"))?;
    if cp.origin() != origin {
        return Err(format!("origin {}", cp.origin()));
    }
    let folder = Folder(dir.to_path_buf());
    let reader = TileHashReader::new(cp.size(), *cp.hash(), &folder);
    let root = tlog_tiles::tree_hash(cp.size(), &reader).map_err(|e| format!("tiles: {e:?}"))?;
    if root != *cp.hash() {
        return Err("tree hash differs".into());
    }
    let all = entries(dir, cp.size());
    if all.len() as u64 != cp.size() {
        return Err(format!("{} entries for size {}", all.len(), cp.size()));
    }
    for (i, e) in all.iter().enumerate() {
        let i = i as u64;
        let proof = tlog_tiles::prove_record(cp.size(), i, &reader)
            .map_err(|err| format!("entry {i}: no proof: {err:?}"))?;
        tlog_tiles::check_record(&proof, cp.size(), *cp.hash(), i, tlog_tiles::record_hash(e))
            .map_err(|err| format!("entry {i}: not in the tree: {err:?}"))?;
    }
    Ok(all)
}

#[test]
fn bundles_verify_with_flightdeck_and_independent_crates_and_tampering_fails() {
    let s = Server::binary();
    let (_, w) = s.token_in("default", &["audit:write", "audit:read"]);
    let mut top = 0;
    for i in 0..300 {
        let r = s.send_as(
            &w,
            "POST",
            &format!("{API}/projects/default/audit/events"),
            json!({"action": "ci.deploy.start", "event_source": "bundle-test", "external_id": format!("b{i}")}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        // The 201 is the stored event: its bytes are the log's leaf.
        top = top.max(r.json()["log_index"].as_u64().unwrap());
    }
    wait_for_size(&s.data_dir, "default", top + 1);
    let data = s.data_dir.to_str().unwrap();
    let o = flightdeck(&["audit", "pubkey", "--data-dir", data]);
    assert!(o.status.success());
    let vkey = stdout(&o).trim().to_string();
    let tmp = tempfile::tempdir().unwrap();

    // From the data directory, beside the running server, and over HTTP.
    let local = tmp.path().join("local");
    let o = flightdeck(&[
        "audit",
        "bundle",
        "--data-dir",
        data,
        "--project",
        "default",
        "--out",
        local.to_str().unwrap(),
        "--key",
        &vkey,
    ]);
    assert!(
        o.status.success(),
        "{}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout(&o).contains("OK: flightdeck/p/default size "),
        "{}",
        stdout(&o)
    );
    let remote = tmp.path().join("remote");
    let o = flightdeck(&[
        "audit",
        "bundle",
        "--url",
        &s.url,
        "--token",
        &w,
        "--project",
        "default",
        "--out",
        remote.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "{}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout(&o).contains("compare it with a copy you trust"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        std::fs::read_to_string(remote.join("key")).unwrap(),
        format!("{vkey}\n")
    );
    let readme = std::fs::read_to_string(remote.join("README.md")).unwrap();
    assert!(readme.contains("flightdeck audit verify --dir BUNDLE --project default --key"));
    assert!(readme.contains("tlog_tiles::check_record"));
    let org = tmp.path().join("org");
    let o = flightdeck(&[
        "audit",
        "bundle",
        "--url",
        &s.url,
        "--token",
        &s.token,
        "--org",
        "--out",
        org.to_str().unwrap(),
        "--key",
        &vkey,
    ]);
    assert!(o.status.success(), "{}", stdout(&o));
    // An existing, non-empty folder is never written into.
    let again = flightdeck(&[
        "audit",
        "bundle",
        "--data-dir",
        data,
        "--org",
        "--out",
        org.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    // `flightdeck audit verify --dir`: the log named explicitly or taken
    // from the signed origin; without --key, the bundle's key (and it says so).
    for (dir, which) in [(&local, "--project"), (&remote, ""), (&org, "--org")] {
        let mut args = vec![
            "audit",
            "verify",
            "--dir",
            dir.to_str().unwrap(),
            "--key",
            &vkey,
        ];
        if which == "--project" {
            args.extend(["--project", "default"]);
        } else if which == "--org" {
            args.push("--org");
        }
        let o = flightdeck(&args);
        assert!(o.status.success(), "{}", stdout(&o));
        let want = if dir == &org {
            "OK: flightdeck/org size "
        } else {
            "OK: flightdeck/p/default size "
        };
        assert!(stdout(&o).starts_with(want), "{}", stdout(&o));
    }
    let o = flightdeck(&["audit", "verify", "--dir", local.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("which trusts the bundle"));
    // Both bundles hold the same log (same size at least up to top).
    assert_eq!(
        std::fs::read(local.join("tile/0/000")).unwrap(),
        std::fs::read(remote.join("tile/0/000")).unwrap()
    );

    // The independent crates: signature, tiles, every entry proven.
    for dir in [&local, &remote] {
        let all = independent_check(dir, &vkey, "flightdeck/p/default").unwrap();
        assert!(all.len() as u64 > top);
        for (i, e) in all.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_slice(e).unwrap();
            assert_eq!(v["log_index"], i as u64);
        }
    }
    independent_check(&org, &vkey, "flightdeck/org").unwrap();

    // Tampering: one flipped byte in an entry, and a checkpoint signed by
    // another key. Both verifiers refuse.
    let tampered = tmp.path().join("tampered");
    copy_dir(&local, &tampered);
    let bundle = tampered.join("tile/entries/000");
    let mut b = std::fs::read(&bundle).unwrap();
    b[50] ^= 0x01;
    std::fs::write(&bundle, &b).unwrap();
    let o = flightdeck(&[
        "audit",
        "verify",
        "--dir",
        tampered.to_str().unwrap(),
        "--key",
        &vkey,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("entry 0 (tile/entries/000): leaf hash differs from tile/0/000 slot 0"),
        "{}",
        stdout(&o)
    );
    let err = independent_check(&tampered, &vkey, "flightdeck/p/default").unwrap_err();
    assert!(err.starts_with("entry 0: not in the tree"), "{err}");

    let forged = tmp.path().join("forged");
    copy_dir(&local, &forged);
    let other = merkle::SignerKey::from_seed("flightdeck", &[7; 32]).unwrap();
    let text = String::from_utf8(std::fs::read(local.join("checkpoint")).unwrap()).unwrap();
    let body = &text[..text.find("\n\n").unwrap() + 1];
    let cp = merkle::Checkpoint::parse(body).unwrap();
    std::fs::write(forged.join("checkpoint"), cp.sign(&[&other]).unwrap()).unwrap();
    let o = flightdeck(&[
        "audit",
        "verify",
        "--dir",
        forged.to_str().unwrap(),
        "--key",
        &vkey,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("checkpoint: signature does not verify"),
        "{}",
        stdout(&o)
    );
    let err = independent_check(&forged, &vkey, "flightdeck/p/default").unwrap_err();
    assert!(err.starts_with("signature"), "{err}");
}
