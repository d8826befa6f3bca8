//! `flightdeck audit monitor`, witnesses and key rotation against the real
//! server: a first and a second (incremental) run; a server restored from
//! an old copy (rollback) that then goes its own way (fork); a bad
//! signature and a bad entry on disk; a witness that cosigns, its push
//! audited and served, a token without `audit:write` and an unknown witness
//! key refused; `verify` and `monitor` with a witness quorum; and signing
//! key rotation (API and offline) that keeps old checkpoints verifiable.
//! The message of every case is checked in `crates/audit/tests/audit/monitor.rs`.

use std::path::Path;
use std::process::Output;

use merkle::{CosignatureVerifier, Note, VerifierKey, Verifiers};
use serde_json::json;

use crate::harness::{API, Server, call, spawn_binary};
use crate::verify::{copy_dir, flightdeck, post, pubkey, settle, stdout};

fn monitor(url: &str, token: &str, vkeys: &[&str], state: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "audit",
        "monitor",
        "--url",
        url,
        "--token",
        token,
        "--project",
        "default",
        "--state",
        state.to_str().unwrap(),
    ];
    for k in vkeys {
        args.extend(["--key", k]);
    }
    args.extend(extra);
    flightdeck(&args)
}

fn state_size(state: &Path) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(state).unwrap()).unwrap();
    v["size"].as_u64().unwrap()
}

fn one_ok_line(o: &Output) -> String {
    let text = stdout(o);
    assert!(
        o.status.success(),
        "exit {:?}: {text}{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(text.lines().count(), 1, "one summary line: {text}");
    assert!(text.starts_with("OK: flightdeck/p/default size "), "{text}");
    text
}

fn fails_with(o: &Output, what: &str) -> String {
    let text = stdout(o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("FAIL: flightdeck/p/default: ") && text.contains(what),
        "wanted {what:?} in {text:?}"
    );
    text
}

fn post_to(url: &str, token: &str, n: usize, tag: &str) {
    for i in 0..n {
        let r = call(
            "POST",
            &format!("{url}{API}/projects/default/audit/events"),
            &[("authorization", &format!("Bearer {token}"))],
            Some((
                "application/json",
                json!({"action": "ci.deploy.start", "event_source": "monitor-test", "external_id": format!("{tag}{i}")})
                    .to_string()
                    .into_bytes(),
            )),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
}

#[test]
fn monitor_runs_incrementally_and_detects_rollback_and_fork() {
    let mut s = Server::binary();
    let (_, w) = s.token_in("default", &["audit:read", "audit:write"]);
    post(&s, &w, "default", 40);
    settle(&s.data_dir);
    let vkey = pubkey(&s.data_dir);
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("default.state");

    // First run: everything from entry 0.
    let first = one_ok_line(&monitor(&s.url, &w, &[&vkey], &state, &[]));
    assert!(
        first.contains(" new entries verified since size 0, "),
        "{first}"
    );
    let n1 = state_size(&state);
    assert!(n1 >= 40);

    // An old copy of the data directory (server stopped for a clean copy).
    s.kill9();
    let old = tmp.path().join("old-data");
    copy_dir(&s.data_dir, &old);
    s.restart();

    // Second run: only what is new.
    post(&s, &w, "default", 30);
    settle(&s.data_dir);
    let second = one_ok_line(&monitor(&s.url, &w, &[&vkey], &state, &[]));
    assert!(
        second.contains(&format!(" new entries verified since size {n1}, ")),
        "{second}"
    );
    let n2 = state_size(&state);
    assert!(n2 >= n1 + 30);
    let saved = std::fs::read(&state).unwrap();

    // The server is restored from the old copy: a rollback. The state is kept.
    s.kill9();
    let (mut restored, url, _) = spawn_binary(&old, &[]);
    fails_with(&monitor(&url, &w, &[&vkey], &state, &[]), "rollback");
    assert_eq!(std::fs::read(&state).unwrap(), saved);

    // ...and goes on with other events past the saved size: a fork.
    post_to(&url, &w, (n2 - n1) as usize + 5, "fork");
    settle(&old);
    fails_with(&monitor(&url, &w, &[&vkey], &state, &[]), ": fork");
    assert_eq!(std::fs::read(&state).unwrap(), saved);
    restored.kill().unwrap();
    restored.wait().unwrap();
}

#[test]
fn monitor_detects_a_bad_signature_and_a_bad_entry() {
    let s = Server::binary();
    let (_, w) = s.token_in("default", &["audit:read", "audit:write"]);
    post(&s, &w, "default", 20);
    settle(&s.data_dir);
    let vkey = pubkey(&s.data_dir);
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("default.state");
    one_ok_line(&monitor(&s.url, &w, &[&vkey], &state, &[]));
    let n = state_size(&state);
    post(&s, &w, "default", 10);
    settle(&s.data_dir);
    let saved = std::fs::read(&state).unwrap();
    let log = s.data_dir.join("audit/tlog/p/default");

    // A flipped byte in a new entry, on the server's disk.
    let size = n + 10;
    let bundle = log.join(format!("tile/entries/000.p/{size}"));
    let good = std::fs::read(&bundle).unwrap();
    let mut bad = good.clone();
    let at = bad.len() - 20;
    bad[at] ^= 0x01;
    std::fs::write(&bundle, &bad).unwrap();
    fails_with(
        &monitor(&s.url, &w, &[&vkey], &state, &[]),
        &format!("(tile/entries/000.p/{size}): leaf hash differs from tile/0/000.p/{size}"),
    );
    std::fs::write(&bundle, &good).unwrap();

    // A checkpoint whose signature does not verify.
    let cp_path = log.join("checkpoint");
    let cp = std::fs::read_to_string(&cp_path).unwrap();
    let sig_at = cp.rfind(' ').unwrap() + 10;
    let mut forged = cp.clone().into_bytes();
    forged[sig_at] = if forged[sig_at] == b'A' { b'B' } else { b'A' };
    std::fs::write(&cp_path, &forged).unwrap();
    fails_with(
        &monitor(&s.url, &w, &[&vkey], &state, &[]),
        "checkpoint: signature does not verify with key flightdeck+",
    );
    assert_eq!(
        std::fs::read(&state).unwrap(),
        saved,
        "failures keep the state"
    );
    std::fs::write(&cp_path, &cp).unwrap();
    let ok = one_ok_line(&monitor(&s.url, &w, &[&vkey], &state, &[]));
    assert!(
        ok.contains(&format!("10 new entries verified since size {n}, ")),
        "{ok}"
    );
}

fn keygen(dir: &Path, name: &str) -> (String, String) {
    let path = dir.join(format!("{name}.key"));
    let o = flightdeck(&[
        "audit",
        "witness-keygen",
        "--name",
        name,
        "--out",
        path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (
        path.to_str().unwrap().to_string(),
        stdout(&o).trim().to_string(),
    )
}

fn verify_remote(url: &str, token: &str, vkeys: &[&str], extra: &[&str]) -> Output {
    let mut args = vec![
        "audit",
        "verify",
        "--url",
        url,
        "--token",
        token,
        "--project",
        "default",
    ];
    for k in vkeys {
        args.extend(["--key", k]);
    }
    args.extend(extra);
    flightdeck(&args)
}

#[test]
fn witnesses_cosign_and_the_quorum_policy_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let (w1_key, w1) = keygen(tmp.path(), "w1.example");
    let (w2_key, w2) = keygen(tmp.path(), "w2.example");
    let (w3_key, w3) = keygen(tmp.path(), "w3.example");
    let s = Server::binary_with(&["--audit-witness", &w1, "--audit-witness", &w2]);
    let (_, token) = s.token_in("default", &["audit:read", "audit:write"]);
    let (_, reader) = s.token_in("default", &["audit:read"]);
    post(&s, &token, "default", 20);
    settle(&s.data_dir);
    let vkey = pubkey(&s.data_dir);
    let state = |n: &str| tmp.path().join(n);

    // Witness 1 verifies, cosigns and pushes.
    let out = one_ok_line(&monitor(
        &s.url,
        &token,
        &[&vkey],
        &state("w1.state"),
        &["--witness-key", &w1_key],
    ));
    let size = state_size(&state("w1.state"));
    assert!(
        out.trim_end().ends_with(&format!(
            "; cosigned as w1.example (1 cosignatures on size {size})"
        )),
        "{out}"
    );
    // The push is an audit event of the project's log.
    let ev = s.last_event(Some("default"), "audit.log.cosign");
    assert_eq!(ev["result"]["status"], "success");
    assert_eq!(ev["resource"]["name"], "flightdeck/p/default");
    assert!(
        ev["request_parameters"]["witnesses"][0]
            .as_str()
            .unwrap()
            .starts_with("w1.example+")
    );

    // Served: the log's note with the cosignature as an extra signature line.
    let v1 = CosignatureVerifier::parse(&w1).unwrap();
    let log_key = VerifierKey::parse(&vkey).unwrap();
    let base = format!("{API}/projects/default/audit/log");
    let r = s.get_as(&reader, &format!("{base}/witnessed/{:08x}", v1.key_id()));
    assert_eq!(r.status, 200, "{}", r.body);
    let note = Note::parse(&r.bytes).unwrap();
    note.verify(&Verifiers::new([log_key.clone()])).unwrap();
    let cos = merkle::verify_cosignatures(&note, std::slice::from_ref(&v1)).unwrap();
    assert_eq!(cos.len(), 1);
    let cp = merkle::Checkpoint::parse(note.text()).unwrap();
    assert_eq!(cp.size(), size);
    // `checkpoint` carries it while it is current; the push itself moves
    // the log on within a second, after which it has none yet.
    let current = s.get_as(&reader, &format!("{base}/checkpoint"));
    let cur = Note::parse(&current.bytes).unwrap();
    let cur_size = merkle::Checkpoint::parse(cur.text()).unwrap().size();
    let on_current = merkle::verify_cosignatures(&cur, std::slice::from_ref(&v1))
        .unwrap()
        .len();
    assert!(
        (cur_size == size && on_current == 1) || (cur_size > size && on_current == 0),
        "size {cur_size}, {on_current} cosignatures"
    );

    // Refused with 4xx (and audited): a token without audit:write, an
    // unknown witness key.
    let o = monitor(
        &s.url,
        &reader,
        &[&vkey],
        &state("r.state"),
        &["--witness-key", &w1_key],
    );
    fails_with(&o, "the cosignature was not accepted: server answered 403");
    let o = monitor(
        &s.url,
        &token,
        &[&vkey],
        &state("w3.state"),
        &["--witness-key", &w3_key],
    );
    fails_with(&o, "server answered 403 Forbidden");
    assert!(stdout(&o).contains("unknown_witness"), "{}", stdout(&o));
    let refused = s.last_event(Some("default"), "audit.log.cosign");
    assert_eq!(refused["result"]["status"], "failure");
    assert_eq!(refused["result"]["error_code"], "unknown_witness");

    // Quorum 1 of w1: passes; 2 of w1, w2: only w1 cosigned yet.
    settle(&s.data_dir);
    let ok = verify_remote(
        &s.url,
        &token,
        &[&vkey],
        &["--witness", &w1, "--witness-quorum", "1"],
    );
    assert!(ok.status.success(), "{}", stdout(&ok));
    assert!(
        stdout(&ok).contains(&format!(
            "; witnessed up to size {size} (quorum 1; 1 of 1 given witnesses cosigned)"
        )),
        "{}",
        stdout(&ok)
    );
    let short = verify_remote(
        &s.url,
        &token,
        &[&vkey],
        &["--witness", &w1, "--witness", &w2],
    );
    assert_eq!(short.status.code(), Some(1));
    assert!(
        stdout(&short)
            .contains("1 of the 2 given witnesses cosigned this log, quorum 2: not witnessed"),
        "{}",
        stdout(&short)
    );

    // Witness 2 cosigns a later checkpoint: both together witness up to
    // witness 1's size.
    one_ok_line(&monitor(
        &s.url,
        &token,
        &[&vkey],
        &state("w2.state"),
        &["--witness-key", &w2_key],
    ));
    settle(&s.data_dir);
    let both = verify_remote(
        &s.url,
        &token,
        &[&vkey],
        &["--witness", &w1, "--witness", &w2],
    );
    assert!(both.status.success(), "{}", stdout(&both));
    assert!(
        stdout(&both).contains(&format!(
            "; witnessed up to size {size} (quorum 2; 2 of 2 given witnesses cosigned)"
        )),
        "{}",
        stdout(&both)
    );
    // A witness nobody configured has cosigned nothing.
    let none = verify_remote(&s.url, &token, &[&vkey], &["--witness", &w3]);
    assert_eq!(none.status.code(), Some(1), "{}", stdout(&none));
    // The monitor applies the same policy; the data directory says the same.
    let m = one_ok_line(&monitor(
        &s.url,
        &token,
        &[&vkey],
        &state("policy.state"),
        &["--witness", &w1, "--witness", &w2, "--witness-quorum", "2"],
    ));
    assert!(
        m.contains(&format!("witnessed up to size {size} (quorum 2")),
        "{m}"
    );
    let local = flightdeck(&[
        "audit",
        "verify",
        "--data-dir",
        s.data_dir.to_str().unwrap(),
        "--project",
        "default",
        "--key",
        &vkey,
        "--witness",
        &w1,
        "--witness",
        &w2,
    ]);
    assert!(local.status.success(), "{}", stdout(&local));
    assert!(stdout(&local).contains(&format!("witnessed up to size {size} (quorum 2")));
}

#[test]
fn key_rotation_keeps_old_checkpoints_verifiable() {
    let mut s = Server::binary();
    let (_, w) = s.token_in("default", &["audit:read", "audit:write"]);
    post(&s, &w, "default", 10);
    settle(&s.data_dir);
    let k1 = pubkey(&s.data_dir);
    let tmp = tempfile::tempdir().unwrap();
    let old_cp = tmp.path().join("old.checkpoint");
    let log = s.data_dir.join("audit/tlog/p/default");
    std::fs::copy(log.join("checkpoint"), &old_cp).unwrap();
    let state = tmp.path().join("default.state");
    one_ok_line(&monitor(&s.url, &w, &[&k1], &state, &[]));

    // Rotation through the API (organization admin), audited.
    let r = s.send("POST", &format!("{API}/audit/log/rotate-key"), json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let keys = r.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["vkey"], k1.as_str());
    assert_eq!(keys[0]["current"], false);
    assert!(keys[0]["last_use"].is_string());
    let k2 = keys[1]["vkey"].as_str().unwrap().to_string();
    let ev = s.last_event(None, "audit.key.rotate");
    assert_eq!(ev["result"]["status"], "success");
    assert_eq!(ev["changes"][0]["before"], k1.as_str());
    assert_eq!(ev["changes"][0]["after"], k2.as_str());
    // A project token cannot rotate.
    let denied = s.send_as(
        &w,
        "POST",
        &format!("{API}/audit/log/rotate-key"),
        json!({}),
    );
    assert_eq!(denied.status, 403);
    // `key` is the new key, `keys` lists both, for every log.
    let base = format!("{API}/projects/default/audit/log");
    assert_eq!(s.get_as(&w, &format!("{base}/key")).body, k2);
    let served = s.get_as(&w, &format!("{base}/keys")).json();
    assert_eq!(served["keys"].as_array().unwrap().len(), 2);

    post(&s, &w, "default", 5);
    settle(&s.data_dir);
    let since = ["--since-checkpoint", old_cp.to_str().unwrap()];
    let new_only = verify_remote(&s.url, &w, &[&k2], &since);
    assert_eq!(new_only.status.code(), Some(1));
    assert!(
        stdout(&new_only).contains("--since-checkpoint: signature does not verify"),
        "{}",
        stdout(&new_only)
    );
    let both = verify_remote(&s.url, &w, &[&k2, &k1], &since);
    assert!(both.status.success(), "{}", stdout(&both));
    // The monitor's state was saved under the old key: it needs both.
    fails_with(
        &monitor(&s.url, &w, &[&k1], &state, &[]),
        "signature does not verify with key",
    );
    one_ok_line(&monitor(&s.url, &w, &[&k1, &k2], &state, &[]));

    // Offline rotation: refused while the server runs, fine once stopped.
    let data = s.data_dir.to_str().unwrap().to_string();
    let busy = flightdeck(&["audit", "rotate-key", "--data-dir", &data]);
    assert_eq!(busy.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("in use by a running server"));
    s.kill9();
    let rot = flightdeck(&["audit", "rotate-key", "--data-dir", &data]);
    assert!(
        rot.status.success(),
        "{}",
        String::from_utf8_lossy(&rot.stderr)
    );
    let k3 = stdout(&rot).trim().to_string();
    assert_eq!(pubkey(&s.data_dir), k3);
    s.restart();
    settle(&s.data_dir);
    // Every checkpoint is re-signed with the new key at start.
    let all = verify_remote(&s.url, &w, &[&k3, &k2, &k1], &since);
    assert!(all.status.success(), "{}", stdout(&all));
    assert!(verify_remote(&s.url, &w, &[&k3], &[]).status.success());
    // From the data directory without --key: every key it ever had.
    let local = flightdeck(&[
        "audit",
        "verify",
        "--data-dir",
        &data,
        "--project",
        "default",
        "--since-checkpoint",
        old_cp.to_str().unwrap(),
    ]);
    assert!(local.status.success(), "{}", stdout(&local));
    assert!(stdout(&local).contains("trusts the data directory"));
}
