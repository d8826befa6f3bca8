//! `audit.log_name`: the name given to the checkpoint signing key when it
//! is created, and so the prefix of every log's origin; an invalid name
//! stops the program with exit code 2 naming the key; a later change of
//! the setting leaves the existing key (and its origins) alone.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{API, bin, call, spawn_binary};

fn admin_token(lines: &[String]) -> String {
    lines
        .iter()
        .find_map(|l| l.strip_prefix("admin token: "))
        .expect("first start prints the admin token")
        .to_string()
}

fn checkpoint_origin(dir: &std::path::Path) -> String {
    let cp = dir.join("audit/tlog/p/default/checkpoint");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(b) = std::fs::read_to_string(&cp) {
            return b.lines().next().unwrap_or_default().to_string();
        }
        assert!(Instant::now() < deadline, "no checkpoint");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn log_name_names_the_key_and_origins_and_bad_names_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (mut child, url, lines) = spawn_binary(&dir, &["--audit-log-name", "audit.example.com"]);
    let token = admin_token(&lines);
    let r = call(
        "POST",
        &format!("{url}{API}/projects/default/audit/events"),
        &[("authorization", &format!("Bearer {token}"))],
        Some((
            "application/json",
            json!({"action": "ci.deploy.start", "event_source": "t"})
                .to_string()
                .into_bytes(),
        )),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(checkpoint_origin(&dir), "audit.example.com/p/default");
    let key = std::process::Command::new(bin())
        .args(["audit", "pubkey", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let key = String::from_utf8(key.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("audit.example.com+"), "{key}");
    // verify derives the expected origin from the key's name.
    let v = std::process::Command::new(bin())
        .args([
            "audit",
            "verify",
            "--project",
            "default",
            "--key",
            &key,
            "--data-dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    child.kill().unwrap();
    child.wait().unwrap();

    // Restarted with another name (environment this time): the key keeps
    // its name, and the server says so.
    let out = std::process::Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env("FLIGHTDECK_AUDIT_LOG_NAME", "other.example.com")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = out;
    let stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("listening") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        seen.contains(
            "audit.log_name differs from the name of the existing checkpoint signing key"
        ),
        "{seen}"
    );
    let again = std::process::Command::new(bin())
        .args(["audit", "pubkey", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(again.stdout).unwrap().trim(), key);

    // Invalid names: exit 2, the key named, nothing created.
    let empty = tempfile::tempdir().unwrap();
    for (flag, env) in [(Some("bad name"), None), (None, Some("a+b"))] {
        let mut cmd = std::process::Command::new(bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(empty.path().join("d"));
        if let Some(f) = flag {
            cmd.args(["--audit-log-name", f]);
        }
        if let Some(e) = env {
            cmd.env("FLIGHTDECK_AUDIT_LOG_NAME", e);
        }
        let o = cmd.output().unwrap();
        assert_eq!(o.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("`audit.log_name`"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!empty.path().join("d").exists());
    }
}
