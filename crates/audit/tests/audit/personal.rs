//! Personal data: kept out of the leaves, sealed per subject, revealed on
//! read, and erased by deleting the subject's keys — with every tile,
//! bundle and checkpoint unchanged and still verifying.

use std::path::Path;

use audit::personal::ERASED;
use audit::*;

use crate::support::draft;
use crate::tlog::{options, wait_for_size};

fn by(project: Option<&str>, user: &str, ip: &str, n: usize) -> EventDraft {
    let mut d = draft(project, "iam.token.create", n);
    d.principal.kind = PrincipalKind::User;
    d.principal.id = user.into();
    d.principal.name = format!("{user}@example.com");
    d.source_ip = Some(ip.into());
    d.user_agent = Some(format!("agent-of-{user}"));
    d
}

fn failed_login(claimed: &str, ip: &str) -> EventDraft {
    let mut d = draft(None, "auth.session.create", 0);
    d.principal = Principal {
        kind: PrincipalKind::Anonymous,
        id: claimed.into(),
        name: claimed.into(),
        token_id: None,
        auth_method: Some(AuthMethod::Password),
    };
    d.source_ip = Some(ip.into());
    d
}

fn get(log: &AuditLog, e: &Event) -> Event {
    log.get(&e.log_key(), &e.id).unwrap().expect("event")
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

fn verify_all(dir: &Path) {
    for (name, path) in verify::log_dirs(&dir.join("tlog")).unwrap() {
        let vkey = AuditLog::open_read_only(dir).unwrap().verifier_key();
        let expect = verify::Expect::new(
            vec![merkle::VerifierKey::parse(&vkey).unwrap()],
            format!("flightdeck/{name}"),
            verify::log_of_dir(&name),
        );
        verify::verify(verify::dir_fetcher(path), &expect)
            .unwrap_or_else(|f| panic!("{name} does not verify: {f}"));
    }
}

#[test]
fn personal_values_are_sealed_revealed_and_erased_without_touching_the_tree() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(d.path(), options()).unwrap();
    let a1 = log
        .append(by(Some("p1"), "u-alice", "192.0.2.7", 1))
        .unwrap();
    let a2 = log
        .append(by(Some("p2"), "u-alice", "192.0.2.7", 2))
        .unwrap();
    let b1 = log
        .append(by(Some("p1"), "u-bob", "198.51.100.9", 3))
        .unwrap();
    let anon = log
        .append(failed_login("alice@example.com", "192.0.2.7"))
        .unwrap();
    for e in [&a1, &a2, &b1, &anon] {
        assert_eq!(get(&log, e), *e, "read back as acknowledged");
    }
    assert_eq!(anon.principal.id, "alice@example.com");
    // Nothing personal in clear anywhere on disk (segments, tiles, index).
    for needle in [
        "u-alice@example.com",
        "192.0.2.7",
        "agent-of-u-alice",
        "alice@example.com",
    ] {
        let found = files_containing(d.path(), needle.as_bytes());
        assert!(found.is_empty(), "{needle:?} in clear in {found:?}");
    }
    // The source_ip filter works on revealed values.
    let q = Query {
        source_ip: Some("192.0.2.7".into()),
        ..Query::default()
    };
    assert_eq!(log.search(&q).unwrap().events.len(), 3);

    for (k, n) in [
        (LogKey::Project("p1".into()), 2),
        (LogKey::Project("p2".into()), 1),
        (LogKey::Organization, 1),
    ] {
        wait_for_size(&log, &k, n);
    }
    let tlog_before = std::fs::read_dir(d.path().join("tlog/p/p1/tile/entries"))
        .unwrap()
        .count();
    let cps: Vec<_> = ["p1", "p2"]
        .iter()
        .map(|p| log.checkpoint(&LogKey::Project(p.to_string())))
        .collect();

    // Erase alice everywhere but the held project p2, incl. her failed
    // login (the name she claimed) and her anonymous address.
    let report = log
        .erase("u-alice", &[], &[LogKey::Project("p2".into())])
        .unwrap();
    assert_eq!(report.keys, 1, "{report:?}");
    assert_eq!(report.logs, ["p:p1"]);
    assert_eq!(report.held, ["p:p2"]);
    let r2 = log.erase("alice@example.com", &[], &[]).unwrap();
    assert_eq!(
        (r2.keys, r2.logs.clone()),
        (1, vec!["o".to_string()]),
        "{r2:?}"
    );

    let e = get(&log, &a1);
    assert_eq!(
        (
            e.principal.name.as_str(),
            e.source_ip.as_deref(),
            e.user_agent.as_deref()
        ),
        (ERASED, Some(ERASED), Some(ERASED))
    );
    assert_eq!(
        (e.action.as_str(), e.principal.id.as_str()),
        ("iam.token.create", "u-alice")
    );
    assert_eq!(get(&log, &a2), a2, "held project keeps its values");
    assert_eq!(get(&log, &b1), b1, "other people keep theirs");
    let e = get(&log, &anon);
    assert_eq!(
        (e.principal.id.as_str(), e.principal.name.as_str()),
        (ERASED, ERASED)
    );
    assert_eq!(
        log.search(&q).unwrap().events.len(),
        1,
        "only the held event still matches"
    );

    // The tree did not change and still verifies.
    let cps_after: Vec<_> = ["p1", "p2"]
        .iter()
        .map(|p| log.checkpoint(&LogKey::Project(p.to_string())))
        .collect();
    assert_eq!(cps, cps_after);
    verify_all(d.path());

    // New events of the erased person are sealed under a new key.
    let a3 = log
        .append(by(Some("p1"), "u-alice", "192.0.2.8", 4))
        .unwrap();
    assert_eq!(get(&log, &a3), a3);
    log.shutdown();
    drop(log);

    // The erasure survives a reopen and shows in read-only opens too.
    let ro = AuditLog::open_read_only(d.path()).unwrap();
    assert_eq!(get(&ro, &a1).principal.name, ERASED);
    assert_eq!(get(&ro, &a3), a3);
    drop(ro);
    let log = AuditLog::open(d.path(), options()).unwrap();
    assert_eq!(get(&log, &a1).source_ip.as_deref(), Some(ERASED));
    assert_eq!(get(&log, &a2), a2);
    assert!(
        std::fs::read_dir(d.path().join("tlog/p/p1/tile/entries"))
            .unwrap()
            .count()
            >= tlog_before
    );
    // The keystore (which names subjects by hash) no longer names an
    // erased subject; a live one is still there.
    log.shutdown();
    drop(log);
    let named = |who: &str| {
        use sha2::Digest;
        let h = hex::encode(sha2::Sha256::digest(who.as_bytes()));
        files_containing(d.path(), h.as_bytes())
    };
    assert!(named("name:alice@example.com").is_empty());
    assert!(!named("user:u-bob").is_empty());
    verify_all(d.path());
}

/// New subject keys are stored in one commit per batch, by the writer,
/// before the batch is written: when an event is acknowledged its key is on
/// disk, so a fresh read-only open (the CLI's) reveals its values while the
/// writer is still running.
#[test]
fn new_subject_keys_are_on_disk_when_their_events_are_acknowledged() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(d.path(), Options::default()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    for n in 0..200 {
        let tx = tx.clone();
        log.append_with(
            by(Some("default"), &format!("user-{n}"), "192.0.2.9", n),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
    }
    drop(tx);
    let acked: Vec<Event> = rx.iter().map(|r| r.unwrap()).collect();
    assert_eq!(acked.len(), 200);
    let ro = AuditLog::open_read_only(d.path()).unwrap();
    for e in &acked {
        let got = ro
            .get(&LogKey::Project("default".into()), &e.id)
            .unwrap()
            .unwrap();
        assert_eq!(got.principal.name, e.principal.name, "{}", e.principal.id);
        assert_eq!(got.source_ip.as_deref(), Some("192.0.2.9"));
    }
    log.shutdown();
}
