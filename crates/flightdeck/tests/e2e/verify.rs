//! `flightdeck audit verify` against the real server: the same logs verify
//! from the data directory and over HTTP (with the served key), `--all`,
//! `--since-checkpoint`; a rollback, a flipped byte on disk and a flipped
//! byte served over HTTP exit 1 and name the place. The full tamper suite
//! is `crates/audit/tests/audit/verify.rs`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{API, Server, bin};

pub(crate) fn flightdeck(args: &[&str]) -> Output {
    std::process::Command::new(bin())
        .args(args)
        .output()
        .unwrap()
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn checkpoints(data: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let tlog = data.join("audit/tlog");
    audit::verify::log_dirs(&tlog)
        .unwrap()
        .into_iter()
        .map(|(_, d)| {
            let cp = std::fs::read(d.join("checkpoint")).unwrap();
            (d, cp)
        })
        .collect()
}

/// Waits until no checkpoint of `data` changed for 1.5 s (the server
/// writes one at most 1 s after an append).
pub(crate) fn settle(data: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = checkpoints(data);
    loop {
        std::thread::sleep(Duration::from_millis(1500));
        let now = checkpoints(data);
        if now == last {
            return;
        }
        assert!(Instant::now() < deadline, "checkpoints never settled");
        last = now;
    }
}

pub(crate) fn post(s: &Server, token: &str, project: &str, n: usize) {
    for i in 0..n {
        let r = s.send_as(
            token,
            "POST",
            &format!("{API}/projects/{project}/audit/events"),
            json!({"action": "ci.deploy.start", "event_source": "verify-test", "external_id": format!("v{i}")}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
}

pub(crate) fn pubkey(data: &Path) -> String {
    let o = flightdeck(&["audit", "pubkey", "--data-dir", data.to_str().unwrap()]);
    assert!(o.status.success());
    stdout(&o).trim().to_string()
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
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

pub(crate) fn size_of(cp: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(cp);
    text.lines().nth(1).unwrap().parse().unwrap()
}

#[test]
fn verify_passes_from_the_data_dir_and_over_http() {
    let s = Server::binary();
    s.project("other");
    let (_, w) = s.token_in("default", &["audit:write", "audit:read"]);
    let (_, o) = s.token_in("other", &["audit:write", "audit:read"]);
    post(&s, &w, "default", 300);
    post(&s, &o, "other", 40);
    settle(&s.data_dir);
    let data = s.data_dir.to_str().unwrap();
    let vkey = pubkey(&s.data_dir);

    let local = flightdeck(&[
        "audit",
        "verify",
        "--data-dir",
        data,
        "--project",
        "default",
        "--key",
        &vkey,
    ]);
    assert!(local.status.success(), "{}", stdout(&local));
    let line = stdout(&local);
    assert!(
        line.starts_with("OK: flightdeck/p/default size 3"),
        "{line}"
    );
    let mut lines = line.lines();
    let first = lines.next().unwrap();
    assert!(first.contains(" entries, ") && first.ends_with(" tiles verified"));
    // On a data directory the private copies are checked against the trees too.
    let store = lines.next().unwrap_or_default();
    assert!(store.starts_with("OK store: "), "{line}");
    assert!(!line.contains("trusts the data directory"));

    // Over HTTP with the project's auditor token: the same answer.
    let remote = flightdeck(&[
        "audit",
        "verify",
        "--url",
        &s.url,
        "--token",
        &w,
        "--project",
        "default",
        "--key",
        &vkey,
    ]);
    assert!(remote.status.success(), "{}", stdout(&remote));
    assert_eq!(stdout(&remote), format!("{first}\n"));
    let org = flightdeck(&[
        "audit", "verify", "--url", &s.url, "--token", &s.token, "--org", "--key", &vkey,
    ]);
    assert!(org.status.success(), "{}", stdout(&org));
    assert!(stdout(&org).starts_with("OK: flightdeck/org size "));
    // --url without --key is refused (the server's own key is no anchor).
    let nokey = flightdeck(&["audit", "verify", "--url", &s.url, "--token", &w]);
    assert_eq!(nokey.status.code(), Some(1));

    // Without --key: the data directory's key, and the output says so.
    let trusting = flightdeck(&["audit", "verify", "--data-dir", data, "--org"]);
    assert!(trusting.status.success(), "{}", stdout(&trusting));
    assert!(stdout(&trusting).contains("trusts the data directory"));

    // --all: every log.
    let all = flightdeck(&[
        "audit",
        "verify",
        "--data-dir",
        data,
        "--all",
        "--key",
        &vkey,
    ]);
    assert!(all.status.success(), "{}", stdout(&all));
    let text = stdout(&all);
    let oks: Vec<&str> = text.lines().filter(|l| l.starts_with("OK: ")).collect();
    assert_eq!(oks.len(), 3, "{text}");
    assert!(oks[0].starts_with("OK: flightdeck/org "));
    assert!(oks[1].starts_with("OK: flightdeck/p/default "));
    assert!(oks[2].starts_with("OK: flightdeck/p/other size 4"));

    // A key other than the log's: exit 1, the checkpoint named.
    let k = merkle::SignerKey::from_seed("flightdeck", &[9; 32])
        .unwrap()
        .verifier()
        .to_string();
    let bad = flightdeck(&["audit", "verify", "--data-dir", data, "--org", "--key", &k]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stdout(&bad).contains("checkpoint: signature does not verify with key"),
        "{}",
        stdout(&bad)
    );
}

#[test]
fn verify_exits_1_on_rollback_and_tampering() {
    let s = Server::binary();
    let (_, w) = s.token_in("default", &["audit:write", "audit:read"]);
    post(&s, &w, "default", 100);
    settle(&s.data_dir);
    let vkey = pubkey(&s.data_dir);
    let log = s.data_dir.join("audit/tlog/p/default");
    let saved = tempfile::tempdir().unwrap();
    let old_cp = saved.path().join("old-checkpoint");
    std::fs::copy(log.join("checkpoint"), &old_cp).unwrap();
    post(&s, &w, "default", 200);
    settle(&s.data_dir);
    let new_cp = saved.path().join("new-checkpoint");
    std::fs::copy(log.join("checkpoint"), &new_cp).unwrap();
    let (old_size, new_size) = (
        size_of(&std::fs::read(&old_cp).unwrap()),
        size_of(&std::fs::read(&new_cp).unwrap()),
    );
    assert!(old_size >= 100 && new_size >= old_size + 200);

    // The live log extends the saved checkpoint.
    let data = s.data_dir.to_str().unwrap();
    let ok = flightdeck(&[
        "audit",
        "verify",
        "--data-dir",
        data,
        "--project",
        "default",
        "--key",
        &vkey,
        "--since-checkpoint",
        old_cp.to_str().unwrap(),
    ]);
    assert!(ok.status.success(), "{}", stdout(&ok));

    // A copy rolled back to the old checkpoint, checked against the new one.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(
        &s.data_dir.join("audit/tlog"),
        &copy.path().join("audit/tlog"),
    );
    let clog = copy.path().join("audit/tlog/p/default");
    std::fs::copy(&old_cp, clog.join("checkpoint")).unwrap();
    let cdata = copy.path().to_str().unwrap();
    let rolled = flightdeck(&[
        "audit",
        "verify",
        "--data-dir",
        cdata,
        "--project",
        "default",
        "--key",
        &vkey,
        "--since-checkpoint",
        new_cp.to_str().unwrap(),
    ]);
    assert_eq!(rolled.status.code(), Some(1));
    assert_eq!(
        stdout(&rolled),
        format!(
            "FAIL: flightdeck/p/default: checkpoint: older than --since-checkpoint (size {old_size} < {new_size}): rollback\n"
        )
    );

    // A flipped byte in an entry of the copy.
    std::fs::copy(&new_cp, clog.join("checkpoint")).unwrap();
    let bundle = clog.join("tile/entries/000");
    let mut b = std::fs::read(&bundle).unwrap();
    b[100] ^= 0x01;
    std::fs::write(&bundle, &b).unwrap();
    let flipped = flightdeck(&[
        "audit",
        "verify",
        "--data-dir",
        cdata,
        "--project",
        "default",
        "--key",
        &vkey,
    ]);
    assert_eq!(flipped.status.code(), Some(1));
    assert!(
        stdout(&flipped)
            .contains("entry 0 (tile/entries/000): leaf hash differs from tile/0/000 slot 0"),
        "{}",
        stdout(&flipped)
    );

    // The same flip in the live data directory, seen over HTTP.
    std::fs::write(log.join("tile/entries/000"), &b).unwrap();
    let remote = flightdeck(&[
        "audit",
        "verify",
        "--url",
        &s.url,
        "--token",
        &w,
        "--project",
        "default",
        "--key",
        &vkey,
    ]);
    assert_eq!(remote.status.code(), Some(1));
    assert!(
        stdout(&remote).contains("entry 0 (tile/entries/000): leaf hash differs"),
        "{}",
        stdout(&remote)
    );
}
