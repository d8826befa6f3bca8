//! The command line: help, configuration errors (exit 2 naming the key),
//! and `flightdeck audit search|export|tail` on a data directory and a URL.

use std::process::Command;

use serde_json::json;

use crate::harness::{API, Server, bin};

#[test]
fn help_documents_commands_and_settings() {
    let out = Command::new(bin()).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("serve") && text.contains("audit"), "{text}");
    let out = Command::new(bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for env in [
        "FLIGHTDECK_DATA_DIR",
        "FLIGHTDECK_LISTEN",
        "FLIGHTDECK_CONFIG",
        "FLIGHTDECK_MAX_BODY_BYTES",
    ] {
        assert!(text.contains(env), "{env} missing from serve --help");
    }
}

#[test]
fn bad_configuration_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("listen = \"not-an-address\"\n", "listen"),
        ("[auth]\nsession_ttl = \"forever\"\n", "auth.session_ttl"),
        ("colour = \"blue\"\n", "colour"),
        ("[limits]\nmax_body_bytes = -1\n", "max_body_bytes"),
    ];
    for (text, key) in cases {
        let f = dir.path().join("c.toml");
        std::fs::write(&f, text).unwrap();
        let out = Command::new(bin())
            .args(["serve", "--data-dir"])
            .arg(dir.path().join("d"))
            .arg("--config")
            .arg(&f)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{text}: {err}");
        assert!(
            !dir.path().join("d").join("meta.sqlite").exists(),
            "bad config must not start anything"
        );
    }
    // Environment variables are settings too.
    let out = Command::new(bin())
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("d"))
        .env("FLIGHTDECK_LISTEN", "nowhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn audit_cli_reads_a_data_dir_and_a_server() {
    let s = Server::binary();
    let (_, w) = s.token_in("default", &["audit:write", "audit:read"]);
    for i in 0..3 {
        let r = s.send_as(&w, "POST", &format!("{API}/projects/default/audit/events"),
            json!({"action": "ci.deploy.start", "event_source": "cli-test", "external_id": format!("x{i}")}));
        assert_eq!(r.status, 201);
    }
    // From the data directory, while the server runs.
    let out = Command::new(bin())
        .args(["audit", "search", "--data-dir"])
        .arg(&s.data_dir)
        .args(["--project", "default", "--action", "ci.deploy.start"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["external_id"], "x2", "newest first");
    let out = Command::new(bin())
        .args(["audit", "tail", "--no-follow", "--limit", "2", "--data-dir"])
        .arg(&s.data_dir)
        .args(["--project", "default", "--action", "ci.deploy.start"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let ids: Vec<&str> = text
        .lines()
        .map(|l| {
            if l.contains("\"x1\"") {
                "x1"
            } else if l.contains("\"x2\"") {
                "x2"
            } else {
                "?"
            }
        })
        .collect();
    assert_eq!(
        ids,
        ["x1", "x2"],
        "tail prints the last events oldest first"
    );
    // From the server, CSV export.
    let out = Command::new(bin())
        .args([
            "audit",
            "export",
            "--format",
            "csv",
            "--project",
            "default",
            "--url",
            &s.url,
            "--token",
            &w,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("seq,id,time,"));
    assert!(
        text.lines()
            .filter(|l| l.contains("ci.deploy.start"))
            .count()
            == 3,
        "{text}"
    );
    // A bad token is an error, not an empty result.
    let out = Command::new(bin())
        .args([
            "audit",
            "search",
            "--project",
            "default",
            "--url",
            &s.url,
            "--token",
            "fd_wrong",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}
