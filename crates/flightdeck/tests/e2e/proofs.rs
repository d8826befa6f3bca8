//! Proofs and receipts over HTTP, checked with tools we did not write:
//! inclusion and consistency proofs verified by `tlog_tiles` against a
//! checkpoint `signed_note` verified; every bad parameter a 400 naming it;
//! access like every audit read; `?wait=checkpoint` answering with a
//! checkpoint that covers the event (256 at once), and 503 (after
//! recording) when none comes; `flightdeck audit receipt` and
//! `flightdeck audit verify-receipt`, with its tamper suite.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use signed_note::{Note, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint, Hash as TheirHash, TileHashReader, TileReader};

use crate::harness::{API, Resp, Server, bin, call};

/// Reads a log's tiles over HTTP for `tlog_tiles`.
struct Remote<'a> {
    s: &'a Server,
    base: String,
    token: String,
}

impl Remote<'_> {
    fn get(&self, rel: &str) -> Resp {
        self.s.get_as(&self.token, &format!("{}{rel}", self.base))
    }
}

impl TileReader for Remote<'_> {
    fn height(&self) -> u8 {
        8
    }
    fn read_tiles(&self, ts: &[tlog_tiles::Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        ts.iter()
            .map(|t| {
                let r = self.get(&t.path().replacen("tile/8/", "tile/", 1));
                if r.status == 200 {
                    Ok(r.bytes)
                } else {
                    Err(tlog_tiles::Error::InvalidTile)
                }
            })
            .collect()
    }
    fn save_tiles(&self, _: &[tlog_tiles::Tile], _: &[Vec<u8>]) {}
}

/// Opens a signed checkpoint with `signed_note` and parses it with `tlog_tiles`.
fn open_checkpoint(note: &[u8], vkey: &str) -> Checkpoint {
    let v = StandardVerifier::new(vkey).unwrap();
    let n = Note::from_bytes(note).expect("a signed note");
    n.verify(&VerifierList::new(vec![Box::new(v)]))
        .expect("signed_note verifies it");
    Checkpoint::from_bytes(n.text()).expect("a tlog checkpoint")
}

fn hashes(v: &Value) -> Vec<TheirHash> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| TheirHash::parse_hash(h.as_str().unwrap()).unwrap())
        .collect()
}

fn post(s: &Server, token: &str, query: &str, i: usize) -> Resp {
    s.send_as(
        token,
        "POST",
        &format!("{API}/projects/default/audit/events{query}"),
        json!({"action": "ci.deploy.start", "event_source": "proof-test", "external_id": format!("p{i}")}),
    )
}

fn flightdeck(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A 400 naming `field`.
fn check_400(r: &Resp, field: &str) {
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["field"], field, "{}", r.body);
}

#[test]
fn proof_endpoints_verify_with_tlog_tiles_and_refuse_bad_input() {
    let s = Server::in_process(diskio::Faults::disabled(), Default::default());
    let (_, w) = s.token_in("default", &["audit:write", "audit:read"]);
    let mut ids = Vec::new();
    for i in 0..299 {
        let r = post(&s, &w, "", i);
        assert_eq!(r.status, 201, "{}", r.body);
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    let r = post(&s, &w, "?wait=checkpoint", 299);
    assert_eq!(r.status, 201, "{}", r.body);
    let last = r.json();
    let top = last["log_index"].as_u64().unwrap();
    let p = format!("{API}/projects/default/audit");
    let remote = Remote {
        s: &s,
        base: format!("{p}/log/"),
        token: w.clone(),
    };
    let vkey = remote.get("key").body;

    // Inclusion at the latest checkpoint, by index and by id.
    let r = s.get_as(&w, &format!("{p}/proofs/inclusion?index=0"));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let size = v["tree_size"].as_u64().unwrap();
    assert!(size > top, "{size} <= {top}");
    let cp = open_checkpoint(v["checkpoint"].as_str().unwrap().as_bytes(), &vkey);
    assert_eq!((cp.origin(), cp.size()), ("flightdeck/p/default", size));
    let reader = TileHashReader::new(size, *cp.hash(), &remote);
    for i in [0, 1, 255, 256, size / 2, size - 1] {
        let r = s.get_as(&w, &format!("{p}/proofs/inclusion?index={i}"));
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(
            (v["log_index"].as_u64(), v["tree_size"].as_u64()),
            (Some(i), Some(size))
        );
        let leaf = TheirHash::parse_hash(v["leaf_hash"].as_str().unwrap()).unwrap();
        tlog_tiles::check_record(&hashes(&v["hashes"]), size, *cp.hash(), i, leaf)
            .unwrap_or_else(|e| panic!("entry {i}: {e:?}"));
        // The leaf is the entry's: the receipt carries the same bytes.
        let rec = s.get_as(&w, &format!("{p}/receipts/{i}"));
        assert_eq!(rec.status, 200, "{}", rec.body);
        let receipt = audit::Receipt::parse(&rec.bytes).unwrap();
        assert_eq!(tlog_tiles::record_hash(&receipt.entry), leaf);
    }
    let id = &ids[123];
    let v = s
        .get_as(&w, &format!("{p}/proofs/inclusion?id={id}"))
        .json();
    let i = v["log_index"].as_u64().unwrap();
    let leaf = TheirHash::parse_hash(v["leaf_hash"].as_str().unwrap()).unwrap();
    tlog_tiles::check_record(&hashes(&v["hashes"]), size, *cp.hash(), i, leaf).unwrap();

    // An older size: no checkpoint in the answer; verified against the
    // root tlog_tiles derives for that size from the authenticated tiles.
    let old = 100u64;
    let old_root = tlog_tiles::tree_hash(old, &reader).unwrap();
    let v = s
        .get_as(
            &w,
            &format!("{p}/proofs/inclusion?index=42&tree_size={old}"),
        )
        .json();
    assert!(v.get("checkpoint").is_none(), "{v}");
    let leaf = TheirHash::parse_hash(v["leaf_hash"].as_str().unwrap()).unwrap();
    tlog_tiles::check_record(&hashes(&v["hashes"]), old, old_root, 42, leaf).unwrap();
    // Consistency from that size to the latest, and between two sizes.
    let v = s
        .get_as(&w, &format!("{p}/proofs/consistency?from={old}"))
        .json();
    assert_eq!(
        (v["from"].as_u64(), v["to"].as_u64()),
        (Some(old), Some(size))
    );
    assert!(v["checkpoint"].is_string());
    tlog_tiles::check_tree(&hashes(&v["hashes"]), size, *cp.hash(), old, old_root).unwrap();
    let mid = 257u64;
    let v = s
        .get_as(&w, &format!("{p}/proofs/consistency?from={old}&to={mid}"))
        .json();
    assert!(v.get("checkpoint").is_none());
    let mid_root = tlog_tiles::tree_hash(mid, &reader).unwrap();
    tlog_tiles::check_tree(&hashes(&v["hashes"]), mid, mid_root, old, old_root).unwrap();

    // Bad input: 400 naming the parameter; absent things: 404.
    let get = |q: &str| s.get_as(&w, &format!("{p}/{q}"));
    check_400(&get("proofs/inclusion"), "index");
    check_400(&get(&format!("proofs/inclusion?index=1&id={id}")), "id");
    check_400(
        &get(&format!("proofs/inclusion?index=1&tree_size={}", size + 1)),
        "tree_size",
    );
    assert!(
        get(&format!("proofs/inclusion?index=1&tree_size={}", size + 1)).json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "larger than the latest signed checkpoint of this log (size {size})"
            ))
    );
    check_400(&get("proofs/inclusion?index=1&tree_size=0"), "tree_size");
    check_400(&get("proofs/inclusion?index=5&tree_size=5"), "index");
    check_400(&get("proofs/inclusion?index=-1"), "index");
    check_400(&get("proofs/inclusion?index=abc"), "index");
    check_400(&get("proofs/inclusion?index=99999999999999999999"), "index");
    assert_eq!(get("proofs/inclusion?index=1&colour=blue").status, 400);
    let r = get(&format!("proofs/inclusion?index={size}"));
    assert_eq!(
        (r.status, r.code()),
        (404, "not_found".to_string()),
        "{}",
        r.body
    );
    let r = get("proofs/inclusion?id=0190-no-such-event");
    assert_eq!(r.status, 404, "{}", r.body);
    check_400(&get("proofs/consistency"), "from");
    check_400(&get("proofs/consistency?from=0"), "from");
    check_400(&get("proofs/consistency?from=9&to=8"), "from");
    check_400(
        &get(&format!("proofs/consistency?from=1&to={}", size + 1)),
        "to",
    );
    check_400(&get("receipts/99999999999999999999"), "entry");
    assert_eq!(get("receipts/no-such-event").status, 404);
    assert_eq!(get(&format!("receipts/{size}")).status, 404);

    // Access: like every audit read.
    s.project("other");
    let (_, other) = s.token_in("other", &["audit:read"]);
    let (_, weak) = s.token_in("default", &["metrics:write"]);
    for q in [
        "proofs/inclusion?index=0",
        "proofs/consistency?from=1",
        "receipts/0",
    ] {
        assert_eq!(s.get_as(&other, &format!("{p}/{q}")).status, 404, "{q}");
        assert_eq!(s.get_as(&weak, &format!("{p}/{q}")).status, 403, "{q}");
        assert_eq!(s.get_as(&w, &format!("{API}/audit/{q}")).status, 403, "{q}");
        let r = s.get(&format!("{API}/audit/{q}"));
        assert_eq!(r.status, 200, "org {q}: {}", r.body);
        let r = call("GET", &s.url(&format!("{p}/{q}")), &[], None);
        assert_eq!(r.status, 401, "{q}");
    }
    // The organization log's receipt verifies with the same key.
    let rec = s.get(&format!("{API}/audit/receipts/0"));
    let key = merkle::VerifierKey::parse(&vkey).unwrap();
    let v = audit::verify_receipt(&rec.bytes, &key, None).unwrap();
    assert_eq!(v.origin, "flightdeck/org");
}

#[test]
fn wait_checkpoint_answers_with_a_checkpoint_covering_the_event_256_at_once() {
    let s = Server::in_process(diskio::Faults::disabled(), Default::default());
    let (_, w) = s.token_in("default", &["audit:write", "audit:read"]);
    let vkey = s
        .get_as(&w, &format!("{API}/projects/default/audit/log/key"))
        .body;
    let key = merkle::VerifierKey::parse(&vkey).unwrap();

    let r = post(&s, &w, "?wait=checkpoint", 0);
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    let index = v["log_index"].as_u64().unwrap();
    assert_eq!(v["event"]["log_index"].as_u64(), Some(index));
    assert_eq!(v["event"]["action"], "ci.deploy.start");
    let cp = open_checkpoint(v["checkpoint"].as_str().unwrap().as_bytes(), &vkey);
    assert!(cp.size() > index && cp.size() == v["tree_size"].as_u64().unwrap());
    let receipt = v["receipt"].as_str().unwrap();
    let ok = audit::verify_receipt(receipt.as_bytes(), &key, None).unwrap();
    assert_eq!(ok.index, index);
    assert_eq!(ok.event.unwrap().id, v["event"]["id"].as_str().unwrap());

    // Any other value is refused, and the refusal is audited.
    let r = post(&s, &w, "?wait=yes", 1);
    check_400(&r, "wait");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'checkpoint'")
    );
    let failed = s.last_event(Some("default"), "audit.event.ingest");
    assert_eq!(failed["result"]["error_code"], "invalid_field");
    assert_eq!(post(&s, &w, "?wait=", 2).status, 400);

    // 256 at once: every answer's checkpoint covers its event.
    let t = Instant::now();
    let threads: Vec<_> = (0..256)
        .map(|i| {
            let url = s.url(&format!("{API}/projects/default/audit/events?wait=checkpoint"));
            let auth = format!("Bearer {w}");
            std::thread::spawn(move || {
                call(
                    "POST",
                    &url,
                    &[("authorization", &auth)],
                    Some((
                        "application/json",
                        json!({"action": "ci.deploy.finish", "event_source": "proof-test", "external_id": format!("c{i}")})
                            .to_string()
                            .into_bytes(),
                    )),
                )
            })
        })
        .collect();
    let mut indexes = Vec::new();
    for t in threads {
        let r = t.join().unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        let v = r.json();
        let i = v["log_index"].as_u64().unwrap();
        let size = v["tree_size"].as_u64().unwrap();
        assert!(size > i, "checkpoint {size} does not cover {i}");
        let cp = open_checkpoint(v["checkpoint"].as_str().unwrap().as_bytes(), &vkey);
        assert_eq!(cp.size(), size);
        let ok =
            audit::verify_receipt(v["receipt"].as_str().unwrap().as_bytes(), &key, None).unwrap();
        assert_eq!(ok.index, i);
        indexes.push(i);
    }
    indexes.sort();
    indexes.dedup();
    assert_eq!(indexes.len(), 256);
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "256 waits took {:?}",
        t.elapsed()
    );
}

/// Squats every file the next checkpoint of `log_dir` could need for its
/// last entry bundle, so that no new checkpoint can be written.
fn squat_next_bundle(log_dir: &Path, size: u64) -> Vec<std::path::PathBuf> {
    let n = size / 256;
    let base = log_dir.join(format!("tile/entries/{}", merkle::tiles::encode_index(n)));
    let mut paths = vec![base.clone()];
    for w in (size % 256 + 1)..256 {
        paths.push(base.with_file_name(format!(
            "{}.p/{w}",
            base.file_name().unwrap().to_string_lossy()
        )));
    }
    for p in &paths {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"squatted").unwrap();
    }
    paths
}

#[test]
fn wait_checkpoint_without_a_checkpoint_is_a_503_after_recording() {
    let s = Server::in_process(
        diskio::Faults::disabled(),
        server::ServerOptions {
            checkpoint_wait: Duration::from_secs(3),
            ..Default::default()
        },
    );
    let (_, w) = s.token_in("default", &["audit:write", "audit:read"]);
    let r = post(&s, &w, "?wait=checkpoint", 0);
    assert_eq!(r.status, 201, "{}", r.body);
    let size = r.json()["tree_size"].as_u64().unwrap();
    let squats = squat_next_bundle(&s.data_dir.join("audit/tlog/p/default"), size);

    let r = post(&s, &w, "?wait=checkpoint", 1);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.code(), "checkpoint_unavailable");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains(&format!("was recorded at log_index {size}"))
            && msg.contains("within 3 s")
            && msg.contains("do not send it again"),
        "{msg}"
    );
    // It was recorded, once.
    let id = msg.split_whitespace().nth(1).unwrap().to_string();
    let e = s.get_as(&w, &format!("{API}/projects/default/audit/events/{id}"));
    assert_eq!(e.status, 200, "{}", e.body);
    assert_eq!(s.events(Some("default"), "action=ci.deploy.start").len(), 2);
    let r = s.get_as(&w, &format!("{API}/projects/default/audit/receipts/{id}"));
    assert_eq!(
        (r.status, r.code()),
        (409, "not_checkpointed".to_string()),
        "{}",
        r.body
    );

    // Once the files can be written, the checkpointer catches up.
    for p in squats {
        std::fs::remove_file(p).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = s.get_as(&w, &format!("{API}/projects/default/audit/receipts/{id}"));
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no receipt: {}", r.body);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn receipt_cli_fetches_and_verify_receipt_names_every_tampering() {
    let s = Server::in_process(diskio::Faults::disabled(), Default::default());
    let (_, w) = s.token_in("default", &["audit:write", "audit:read"]);
    for i in 0..40 {
        assert_eq!(post(&s, &w, "", i).status, 201);
    }
    let r = post(&s, &w, "?wait=checkpoint", 40);
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    let id = v["event"]["id"].as_str().unwrap().to_string();
    let index = v["log_index"].as_u64().unwrap();
    let vkey = s
        .get_as(&w, &format!("{API}/projects/default/audit/log/key"))
        .body;
    let dir = tempfile::tempdir().unwrap();
    let data = s.data_dir.to_str().unwrap();

    // Fetched over HTTP (by id) and from the data directory (by index): the same receipt.
    let http = flightdeck(&[
        "audit",
        "receipt",
        "--url",
        &s.url,
        "--token",
        &w,
        "--project",
        "default",
        "--id",
        &id,
    ]);
    assert!(
        http.status.success(),
        "{}",
        String::from_utf8_lossy(&http.stderr)
    );
    let local = flightdeck(&[
        "audit",
        "receipt",
        "--data-dir",
        data,
        "--project",
        "default",
        "--index",
        &index.to_string(),
    ]);
    assert!(
        local.status.success(),
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );
    assert_eq!(http.stdout, local.stdout);
    let good = dir.path().join("r.tlog-proof");
    std::fs::write(&good, &http.stdout).unwrap();

    let verify = |file: &Path, key: &str| {
        flightdeck(&[
            "audit",
            "verify-receipt",
            file.to_str().unwrap(),
            "--key",
            key,
        ])
    };
    let ok = verify(&good, &vkey);
    assert!(ok.status.success(), "{}", stdout(&ok));
    let text = stdout(&ok);
    let mut lines = text.lines();
    assert!(
        lines.next().unwrap().starts_with(&format!(
            "OK: entry {index} of flightdeck/p/default is in its signed tree of size "
        )),
        "{text}"
    );
    let event: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(event["id"], id.as_str());

    let receipt = audit::Receipt::parse(&http.stdout).unwrap();
    let check_fails = |name: &str, r: &audit::Receipt, key: &str, want: &str| {
        let f = dir.path().join(format!("{name}.tlog-proof"));
        std::fs::write(&f, r.to_bytes()).unwrap();
        let o = verify(&f, key);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", stdout(&o));
        let out = stdout(&o);
        assert!(
            out.starts_with(&format!("FAIL: {}: ", f.display())) && out.contains(want),
            "{name}: {out}\nwant: {want}"
        );
    };
    // A flipped entry byte (inside the external id, so it still parses).
    let mut t = receipt.clone();
    let at = t.entry.windows(4).position(|w| w == b"\"p40").unwrap() + 2;
    t.entry[at] ^= 0x01;
    check_fails(
        "flipped",
        &t,
        &vkey,
        "does not lead to the checkpoint's root",
    );
    // Another index.
    let mut t = receipt.clone();
    t.index -= 1;
    check_fails(
        "index",
        &t,
        &vkey,
        &format!(
            "index {} in the receipt, but the entry's log_index is {index}",
            index - 1
        ),
    );
    // A bad proof hash.
    let mut t = receipt.clone();
    t.hashes[0].0[0] ^= 0x01;
    check_fails("hash", &t, &vkey, "does not lead to the checkpoint's root");
    // Another key.
    let other = merkle::SignerKey::from_seed("flightdeck", &[3; 32])
        .unwrap()
        .verifier()
        .to_string();
    check_fails("key", &receipt, &other, "checkpoint: no signature by key");
    // The organization log's checkpoint, signed by the same key.
    let mut t = receipt.clone();
    t.checkpoint = s.get(&format!("{API}/audit/log/checkpoint")).bytes;
    check_fails(
        "other-log",
        &t,
        &vkey,
        "checkpoint is of log \"flightdeck/org\", but the entry is an event of \"flightdeck/p/default\": a checkpoint of another log",
    );
    // Not a receipt; a bad key string.
    let junk = dir.path().join("junk");
    std::fs::write(&junk, "hello\n").unwrap();
    let o = verify(&junk, &vkey);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("not a receipt"), "{}", stdout(&o));
    let o = verify(&good, "nonsense");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--key"));
}
