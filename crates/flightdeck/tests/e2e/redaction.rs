//! Secrets never reach disk in clear: passwords, token secrets and
//! Authorization headers are absent from every file in the data directory.

use serde_json::json;

use crate::harness::{API, Server};

fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn no_secret_appears_in_any_file_of_the_data_directory() {
    let s = Server::binary();
    let user_pw = "user-password-7f3k2";
    let wrong_pw = "wrong-password-9q8w7";
    let ingest_pw = "ingested-password-5t6y";
    let r = s.send(
        "POST",
        &format!("{API}/users"),
        json!({"name": "carol", "password": user_pw}),
    );
    assert_eq!(r.status, 201);
    let r = s.send(
        "PATCH",
        &format!("{API}/users/carol"),
        json!({"password": format!("{user_pw}-2")}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        crate::sessions::try_login(&s, "carol", wrong_pw).status,
        401
    );
    crate::sessions::login(&s, "carol", &format!("{user_pw}-2"));
    crate::sessions::login(&s, "admin", &s.password);
    let (_, secret) = s.token_in("default", &["audit:write", "audit:read"]);
    // A client that pastes secrets into an ingested event gets them redacted.
    let r = s.send_as(&secret, "POST", &format!("{API}/projects/default/audit/events"), json!({
        "action": "ci.deploy.start", "event_source": "ci",
        "request_parameters": {"db_password": ingest_pw, "note": format!("used {secret}"), "Authorization": format!("Bearer {secret}")}
    }));
    assert_eq!(r.status, 201, "{}", r.body);
    // Failed auth with a token-looking secret is recorded without it.
    let bogus = format!("fd_{}", "Z".repeat(43));
    assert_eq!(s.get_as(&bogus, &format!("{API}/projects")).status, 401);

    let mut files = Vec::new();
    files_under(&s.data_dir, &mut files);
    assert!(
        files.iter().any(|f| f.to_string_lossy().contains("audit")),
        "{files:?}"
    );
    let secrets = [
        s.token.as_str(),
        s.password.as_str(),
        secret.as_str(),
        &secret[3..],
        user_pw,
        wrong_pw,
        ingest_pw,
        bogus.as_str(),
    ];
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for sec in secrets {
            assert!(
                !contains(&bytes, sec),
                "secret {sec:?} found in {}",
                f.display()
            );
        }
    }
    // The events are there, with their redaction markers.
    let e = s.last_event(Some("default"), "ci.deploy.start");
    assert_eq!(e["request_parameters"]["db_password"], "[REDACTED]");
    assert_eq!(e["request_parameters"]["note"], "[REDACTED]");
    assert_eq!(e["request_parameters"]["Authorization"], "[REDACTED]");
    let e = s.last_event(None, "iam.user.update");
    assert_eq!(e["changes"][0]["field"], "password");
    assert_eq!(e["changes"][0]["after"], "[REDACTED]");
}
