//! Personal data in the audit trail over HTTP: a person's values are
//! erased (crypto-shredding) by an organization admin, skipping projects
//! under a legal hold; everything is audited, the erasure event does not
//! name the person, and the logs still verify.

use serde_json::{Value, json};

use crate::harness::{API, Server, bin};
use crate::sessions::{login, try_login};

const ERASED: &str = "[erased]";

fn by_user<'a>(events: &'a [Value], user_id: &str, action: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["principal"]["id"] == user_id && e["action"] == action)
        .collect()
}

fn verify_over_http(s: &Server, project: &str) {
    // Wait (bounded) for the checkpoint to cover every event of the log.
    let want = s.events(Some(project), "").len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = s.get(&format!("{API}/projects/{project}/audit/log/checkpoint"));
        let size = r.body.lines().nth(1).and_then(|l| l.parse::<usize>().ok());
        if r.status == 200 && size == Some(want) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint of {want} in {project}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let key = s.get(&format!("{API}/audit/log/key")).body;
    let out = std::process::Command::new(bin())
        .args([
            "audit",
            "verify",
            "--url",
            &s.url(""),
            "--token",
            &s.token,
            "--project",
            project,
            "--key",
            key.trim(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{project} does not verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn erasure_crypto_shreds_a_person_except_under_legal_hold() {
    let s = Server::binary();
    s.project("shop");
    s.project("held");
    let r = s.send(
        "POST",
        &format!("{API}/users"),
        json!({"name": "alice", "password": "correct horse battery"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let alice_id = r.json()["id"].as_str().unwrap().to_string();
    for p in ["shop", "held"] {
        let r = s.send(
            "PUT",
            &format!("{API}/projects/{p}/members/alice"),
            json!({"role": "admin"}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Alice acts in both projects; someone fails to log in as her.
    let sess = login(&s, "alice", "correct horse battery");
    for p in ["shop", "held"] {
        let r = sess.send(
            &s,
            "POST",
            &format!("{API}/projects/{p}/tokens"),
            json!({"name": "ci", "scopes": ["audit:read"]}),
            Some(&sess.csrf),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    assert_eq!(try_login(&s, "alice", "wrong password!").status, 401);
    let shop = s.events(Some("shop"), "action=iam.token.create");
    let mine = by_user(&shop, &alice_id, "iam.token.create");
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["principal"]["name"], "alice");
    assert_eq!(mine[0]["source_ip"], "127.0.0.1");
    let failed = s.last_event(None, "iam.session.login");
    assert_eq!(
        (
            failed["principal"]["type"].as_str(),
            failed["principal"]["id"].as_str()
        ),
        (Some("anonymous"), Some("alice"))
    );

    // A legal hold on "held": listed, audited.
    let r = s.send(
        "POST",
        &format!("{API}/projects/held/audit/holds"),
        json!({"reason": "case 2026-42"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let hold = r.json();
    assert_eq!(hold["active"], true);
    let list = s.get(&format!("{API}/projects/held/audit/holds")).json();
    assert_eq!(list["holds"][0]["reason"], "case 2026-42");
    let e = s.last_event(Some("held"), "audit.legal_hold.create");
    assert_eq!(e["resource"]["id"], hold["id"]);

    // Bad requests change nothing and say what is wrong.
    let r = s.send(
        "POST",
        &format!("{API}/audit/erasures"),
        json!({"principal": ""}),
    );
    assert_eq!(
        (r.status, r.json()["error"]["field"].as_str()),
        (400, Some("principal"))
    );
    let r = s.send(
        "POST",
        &format!("{API}/audit/erasures"),
        json!({"principal": "alice", "source_ips": ["not-an-ip"]}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = sess.send(
        &s,
        "POST",
        &format!("{API}/audit/erasures"),
        json!({"principal": "alice"}),
        Some(&sess.csrf),
    );
    assert_eq!(r.status, 403, "a project admin cannot erase: {}", r.body);
    assert_eq!(
        by_user(&s.events(Some("shop"), ""), &alice_id, "iam.token.create")[0]["principal"]["name"],
        "alice"
    );

    // Erase alice.
    let r = s.send(
        "POST",
        &format!("{API}/audit/erasures"),
        json!({"principal": "alice"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let out = r.json();
    assert_eq!(out["logs"], json!(["org", "shop"]), "{out}");
    assert_eq!(out["held"], json!(["held"]), "{out}");

    let shop = s.events(Some("shop"), "");
    let e = by_user(&shop, &alice_id, "iam.token.create")[0];
    assert_eq!(e["principal"]["name"], ERASED);
    assert_eq!(e["source_ip"], ERASED);
    assert_eq!(e["user_agent"], ERASED);
    assert_eq!(e["result"]["status"], "success", "the event itself stays");
    let held = s.events(Some("held"), "");
    assert_eq!(
        by_user(&held, &alice_id, "iam.token.create")[0]["principal"]["name"],
        "alice",
        "held project keeps its values"
    );
    let org = s.events(None, "action=iam.session.login");
    assert!(
        org.iter().any(|e| e["principal"]["id"] == ERASED),
        "failed login erased"
    );
    assert!(
        org.iter().all(|e| e["principal"]["name"] != "alice"),
        "no login of alice keeps her name"
    );
    // The admin's own values are untouched; the erasure is recorded
    // without naming alice.
    let e = s.last_event(None, "audit.person.erase");
    assert_eq!(e["principal"]["name"], "admin");
    assert!(e["resource"]["id"].as_str().unwrap().starts_with("sha256:"));
    assert!(!e.to_string().contains("alice"), "{e}");
    // Search by address no longer finds her erased events; export shows the marker.
    let r = s.get(&format!("{API}/projects/shop/audit/export?format=ndjson"));
    assert!(r.body.contains(ERASED));
    verify_over_http(&s, "shop");
    verify_over_http(&s, "held");

    // Releasing the hold lets a second erasure reach "held".
    let hold_id = hold["id"].as_str().unwrap();
    let r = s.send(
        "DELETE",
        &format!("{API}/projects/held/audit/holds/{hold_id}"),
        json!({}),
    );
    assert_eq!(
        (r.status, r.json()["active"].clone()),
        (200, json!(false)),
        "{}",
        r.body
    );
    let r = s.send(
        "DELETE",
        &format!("{API}/projects/held/audit/holds/{hold_id}"),
        json!({}),
    );
    assert_eq!(r.status, 409);
    let r = s.send(
        "POST",
        &format!("{API}/audit/erasures"),
        json!({"principal": "alice"}),
    );
    assert_eq!(r.json()["logs"], json!(["held"]), "{}", r.body);
    let held = s.events(Some("held"), "");
    assert_eq!(
        by_user(&held, &alice_id, "iam.token.create")[0]["principal"]["name"],
        ERASED
    );
    verify_over_http(&s, "held");

    // Now nothing of alice's name is left anywhere in the audit trail: not
    // in any event (logins, her user's creation, memberships, her own
    // actions), not in any file of the audit directory.
    for log in [None, Some("shop"), Some("held")] {
        for e in s.events(log, "") {
            let text = e.to_string();
            assert!(!text.contains("\"alice\""), "{log:?}: {text}");
        }
    }
    let mut stack = vec![s.data_dir.join("audit")];
    while let Some(d) = stack.pop() {
        for f in std::fs::read_dir(&d).unwrap() {
            let p = f.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let b = std::fs::read(&p).unwrap();
                assert!(
                    !b.windows(5).any(|w| w == b"alice"),
                    "alice in {}",
                    p.display()
                );
            }
        }
    }

    // The data-directory CLI refuses to run beside the server (lock).
    let out = std::process::Command::new(bin())
        .args(["audit", "erase", "--principal", "alice", "--data-dir"])
        .arg(&s.data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("locked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
