//! The audit transparency log over HTTP, checked with tools we did not
//! write: events appended through the API show up, within the checkpoint
//! interval, in a signed checkpoint that `signed_note` verifies against the
//! served key, whose tiles `tlog_tiles` authenticates, and whose entry
//! bundles hold the events; caching headers, access and 404s; `flightdeck
//! audit pubkey`.

use std::time::{Duration, Instant};

use serde_json::json;
use signed_note::{Note, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint, TileHashReader, TileReader};

use crate::harness::{API, Server, call};

/// A GET whose body is kept as bytes (tiles are binary).
fn get_bytes(url: &str, token: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let r = call(
        "GET",
        url,
        &[("authorization", &format!("Bearer {token}"))],
        None,
    );
    (r.status, r.headers, r.bytes)
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map_or("", |(_, v)| v.as_str())
}

/// A tlog-tiles client of one log base URL.
struct Remote {
    base: String,
    token: String,
}

impl Remote {
    fn get(&self, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
        get_bytes(&format!("{}{path}", self.base), &self.token)
    }
}

impl TileReader for Remote {
    fn height(&self) -> u8 {
        8
    }
    fn read_tiles(&self, ts: &[tlog_tiles::Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        ts.iter()
            .map(|t| {
                // tlog_tiles names tiles with their height: tile/8/<L>/...
                let (status, _, body) = self.get(&t.path().replacen("tile/8/", "tile/", 1));
                if status == 200 {
                    Ok(body)
                } else {
                    Err(tlog_tiles::Error::InvalidTile)
                }
            })
            .collect()
    }
    fn save_tiles(&self, _: &[tlog_tiles::Tile], _: &[Vec<u8>]) {}
}

/// The entries of a tlog-tiles entry bundle (big-endian u16 length, bytes).
fn decode_bundle(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
        out.push(data[2..2 + len].to_vec());
        data = &data[2 + len..];
    }
    out
}

/// `<N>` of a tile path: groups of three digits, `x`-prefixed but the last.
fn tile_index(n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    let mut rest = n / 1000;
    while rest > 0 {
        groups.push(format!("x{:03}", rest % 1000));
        rest /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

/// Polls (bounded) until the checkpoint covers at least `size` entries;
/// returns the verified checkpoint.
fn verified_checkpoint(remote: &Remote, vkey: &str, size: u64) -> Checkpoint {
    let verifier = StandardVerifier::new(vkey).expect("signed_note parses the served key");
    let list = VerifierList::new(vec![Box::new(verifier)]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, headers, body) = remote.get("checkpoint");
        if status == 200 {
            assert_eq!(
                header(&headers, "content-type"),
                "text/plain; charset=utf-8"
            );
            assert_eq!(header(&headers, "cache-control"), "no-cache");
            let note = Note::from_bytes(&body).expect("signed_note parses the checkpoint");
            note.verify(&list)
                .expect("signed_note verifies the signature");
            let cp = Checkpoint::from_bytes(note.text()).expect("tlog_tiles parses it");
            if cp.size() >= size {
                return cp;
            }
        } else {
            assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint covering {size} entries"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn appended_events_are_in_a_verifiable_tlog_served_over_http() {
    let s = Server::binary();
    let (_, w) = s.token_in("default", &["audit:write", "audit:read"]);
    let mut ids = Vec::new();
    let mut top = 0;
    for i in 0..300 {
        let r = s.send_as(
            &w,
            "POST",
            &format!("{API}/projects/default/audit/events"),
            json!({"action": "ci.deploy.start", "event_source": "tlog-test", "external_id": format!("x{i}")}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let e = r.json();
        ids.push(e["id"].as_str().unwrap().to_string());
        top = top.max(e["log_index"].as_u64().unwrap());
    }

    let remote = Remote {
        base: s.url(&format!("{API}/projects/default/audit/log/")),
        token: w.clone(),
    };
    let (status, headers, key) = remote.get("key");
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        "text/plain; charset=utf-8"
    );
    let vkey = String::from_utf8(key).unwrap();
    assert!(vkey.starts_with("flightdeck+"), "{vkey}");
    let cp = verified_checkpoint(&remote, &vkey, top + 1);
    assert_eq!(cp.origin(), "flightdeck/p/default");
    let size = cp.size();

    // tlog_tiles authenticates every tile it reads against the root.
    let reader = TileHashReader::new(size, *cp.hash(), &remote);
    assert_eq!(tlog_tiles::tree_hash(size, &reader).unwrap(), *cp.hash());

    // The entry bundles hold the events; each one is proven in the tree.
    let mut entries = Vec::new();
    for n in 0..size.div_ceil(256) {
        let width = (size - n * 256).min(256);
        let path = if width == 256 {
            format!("tile/entries/{}", tile_index(n))
        } else {
            format!("tile/entries/{}.p/{width}", tile_index(n))
        };
        let (status, headers, body) = remote.get(&path);
        assert_eq!(status, 200, "{path}");
        assert_eq!(header(&headers, "content-type"), "application/octet-stream");
        let want_cache = if width == 256 {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        assert_eq!(header(&headers, "cache-control"), want_cache, "{path}");
        let got = decode_bundle(&body);
        assert_eq!(got.len() as u64, width, "{path}");
        entries.extend(got);
    }
    for (i, e) in entries.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_slice(e).expect("entry is the event JSON");
        assert_eq!(v["log_index"], i as u64);
        let proof = tlog_tiles::prove_record(size, i as u64, &reader).unwrap();
        tlog_tiles::check_record(
            &proof,
            size,
            *cp.hash(),
            i as u64,
            tlog_tiles::record_hash(e),
        )
        .unwrap_or_else(|err| panic!("entry {i} not in the tree: {err:?}"));
    }
    let in_log: Vec<String> = entries
        .iter()
        .filter_map(|e| {
            let v: serde_json::Value = serde_json::from_slice(e).ok()?;
            v["id"].as_str().map(str::to_string)
        })
        .collect();
    for id in &ids {
        assert!(in_log.contains(id), "event {id} missing from the bundles");
    }

    // Full hash tile: immutable; partial: no-cache; absent or bad: 404.
    let (status, headers, body) = remote.get("tile/0/000");
    assert_eq!((status, body.len()), (200, 8192));
    assert_eq!(
        header(&headers, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(header(&headers, "content-type"), "application/octet-stream");
    let (status, headers, _) = remote.get(&format!("tile/1/000.p/{}", size / 256));
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "cache-control"), "no-cache");
    for bad in [
        "tile/0/999",
        "tile/0/../../signing-key",
        "signing-key",
        "tile/0/0.p/1",
    ] {
        assert_eq!(remote.get(bad).0, 404, "{bad}");
    }

    // The organization log: organization admins only.
    let org = Remote {
        base: s.url(&format!("{API}/audit/log/")),
        token: s.token.clone(),
    };
    let org_cp = verified_checkpoint(&org, &vkey, 1);
    assert_eq!(org_cp.origin(), "flightdeck/org");
    assert_eq!(
        get_bytes(&org.base.replace("log/", "log/checkpoint"), &w).0,
        403
    );

    // Another project's auditor cannot see this log (404, as for a
    // project that does not exist); a token without audit:read is refused.
    s.project("other");
    let (_, other) = s.token_in("other", &["audit:read"]);
    let r = call(
        "GET",
        &format!("{}checkpoint", remote.base),
        &[("authorization", &format!("Bearer {other}"))],
        None,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let (_, weak) = s.token_in("default", &["metrics:write"]);
    assert_eq!(
        get_bytes(&format!("{}checkpoint", remote.base), &weak).0,
        403
    );
}

#[test]
fn audit_pubkey_prints_the_served_verifier_key() {
    let s = Server::binary();
    let (status, _, key) = get_bytes(&s.url(&format!("{API}/audit/log/key")), &s.token);
    assert_eq!(status, 200);
    let out = std::process::Command::new(crate::harness::bin())
        .args(["audit", "pubkey", "--data-dir"])
        .arg(&s.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{}\n", String::from_utf8(key).unwrap())
    );
    // No key is ever created by the command, and its absence is an error.
    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::harness::bin())
        .args(["audit", "pubkey", "--data-dir"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no audit signing key"));
    assert!(!empty.path().join("audit/signing-key").exists());
}
