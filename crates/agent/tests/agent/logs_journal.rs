//! The journal follower: parsing `journalctl -o json` lines (a fixture
//! written for these tests), labels, and the follower run against a fake
//! `journalctl` script that records its arguments, so the cursor saved
//! after each acknowledged batch is checked on a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agent::logs::journal::{self, Availability, JournalConfig, JournalEntry, ParseError};

use super::logs_files::Sink;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/agent/fixtures/journal.jsonl")
}

fn parsed() -> Vec<JournalEntry> {
    std::fs::read_to_string(fixture())
        .unwrap()
        .lines()
        .map(|l| journal::parse_line(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// What a parsed entry is compared by: cursor, ts, unit, priority, message.
type Parsed<'a> = (&'a str, i64, Option<&'a str>, Option<u8>, &'a str);

fn check_parse(line: &str, expected: Result<Parsed<'_>, ParseError>) {
    let got = journal::parse_line(line);
    let got = got.as_ref().map(|e| {
        (
            e.cursor.as_str(),
            e.ts,
            e.unit.as_deref(),
            e.priority,
            e.message.as_str(),
        )
    });
    assert_eq!(got, expected.as_ref().copied(), "{line}");
}

#[test]
fn parses_the_fixture() {
    let e = parsed();
    let got: Vec<(i64, Option<&str>, Option<u8>, &str)> = e
        .iter()
        .map(|e| (e.ts, e.unit.as_deref(), e.priority, e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                1732665600000001000,
                Some("nginx.service"),
                Some(6),
                "started worker 1"
            ),
            (
                1732665600000002000,
                Some("nginx.service"),
                Some(3),
                "upstream timed out"
            ),
            (1732665600000003000, None, Some(4), "eth0: link down"),
            (
                1732665600000004000,
                Some("app.service"),
                Some(6),
                "bin\u{fffd}!"
            ),
            (
                1732665600000005000,
                Some("first.service"),
                None,
                "no priority"
            ),
            (1732665600000006000, Some("app.service"), Some(7), ""),
        ]
    );
    assert_eq!(e[0].cursor, "s=1a;i=1;b=b1;m=10;t=5f0;x=aa");
}

#[test]
fn parse_errors() {
    check_parse(
        r#"{"__REALTIME_TIMESTAMP":"1","MESSAGE":"x"}"#,
        Err(ParseError::Missing("__CURSOR")),
    );
    check_parse(
        r#"{"__CURSOR":"c","MESSAGE":"x"}"#,
        Err(ParseError::Missing("__REALTIME_TIMESTAMP")),
    );
    check_parse(
        r#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"soon"}"#,
        Err(ParseError::Bad {
            field: "__REALTIME_TIMESTAMP",
            value: "soon".into(),
        }),
    );
    check_parse(
        r#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"5","PRIORITY":"9"}"#,
        Err(ParseError::Bad {
            field: "PRIORITY",
            value: "9".into(),
        }),
    );
    check_parse(
        r#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"5","PRIORITY":"0","MESSAGE":"m"}"#,
        Ok(("c", 5000, None, Some(0), "m")),
    );
    assert!(matches!(
        journal::parse_line("[1]"),
        Err(ParseError::Json(_))
    ));
    assert!(matches!(journal::parse_line("{"), Err(ParseError::Json(_))));
}

#[test]
fn labels_job_host_unit_level() {
    let e = parsed();
    let streams = journal::to_streams(&e, "h1");
    let got: Vec<(String, Vec<String>)> = streams
        .iter()
        .map(|s| {
            (
                s.labels.to_string(),
                s.entries.iter().map(|e| e.line.clone()).collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                r#"{host="h1", job="systemd-journal", level="debug", unit="app.service"}"#.into(),
                vec!["".into()]
            ),
            (
                r#"{host="h1", job="systemd-journal", level="error", unit="nginx.service"}"#.into(),
                vec!["upstream timed out".into()]
            ),
            (
                r#"{host="h1", job="systemd-journal", level="info", unit="app.service"}"#.into(),
                vec!["bin\u{fffd}!".into()]
            ),
            (
                r#"{host="h1", job="systemd-journal", level="info", unit="nginx.service"}"#.into(),
                vec!["started worker 1".into()]
            ),
            (
                r#"{host="h1", job="systemd-journal", level="warning"}"#.into(),
                vec!["eth0: link down".into()]
            ),
            (
                r#"{host="h1", job="systemd-journal", unit="first.service"}"#.into(),
                vec!["no priority".into()]
            ),
        ]
    );
}

#[test]
fn arguments_follow_the_cursor() {
    assert_eq!(
        journal::args(None).join(" "),
        "-o json -f -q --all --no-pager --since=now"
    );
    assert_eq!(
        journal::args(Some("s=1;i=2")).join(" "),
        "-o json -f -q --all --no-pager --after-cursor=s=1;i=2 --no-tail"
    );
}

/// A fake `journalctl` that appends its arguments to `args.txt` and prints
/// the fixture lines after the cursor it was given (all of them without
/// one), then waits like `-f` does.
fn fake_journalctl(dir: &Path) -> PathBuf {
    let script = dir.join("journalctl");
    let body = format!(
        r#"#!/bin/sh
echo "$*" >> '{args}'
after=""
for a in "$@"; do
  case "$a" in --after-cursor=*) after="${{a#--after-cursor=}}";; esac
done
if [ -z "$after" ]; then
  cat '{fixture}'
else
  awk -v c="$after" 'found {{ print }} index($0, "\"__CURSOR\":\"" c "\"") {{ found = 1 }}' '{fixture}'
fi
exec sleep 30
"#,
        args = dir.join("args.txt").display(),
        fixture = dir.join("fixture.jsonl").display(),
    );
    std::fs::write(&script, body).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn config(dir: &Path) -> JournalConfig {
    let mut c = JournalConfig::new(dir.join("state/journal.cursor"));
    c.command = fake_journalctl(dir);
    c.host = "h1".into();
    c.batch_lines = 2;
    c.batch_wait = Duration::from_millis(50);
    c.retry = Duration::from_millis(50);
    c
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn quiet() -> Arc<dyn Fn(String) + Send + Sync> {
    Arc::new(|_| {})
}

#[test]
fn follower_saves_the_cursor_after_ack_and_resumes_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = std::fs::read_to_string(fixture())
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    // First run: the journal has the first three entries.
    std::fs::write(
        dir.path().join("fixture.jsonl"),
        lines[..3].join("\n") + "\n",
    )
    .unwrap();
    let cfg = config(dir.path());
    let sink = Arc::new(Sink::default());
    let run = journal::start(cfg.clone(), sink.clone(), quiet()).unwrap();
    wait_for("3 lines", || sink.lines().len() == 3);
    wait_for("the cursor", || {
        std::fs::read_to_string(&cfg.cursor)
            .unwrap_or_default()
            .trim()
            == "s=1a;i=3;b=b1;m=12;t=5f2;x=ac"
    });
    run.stop();
    // Second run: three more entries arrived; only those are read.
    std::fs::write(dir.path().join("fixture.jsonl"), lines.join("\n") + "\n").unwrap();
    let sink2 = Arc::new(Sink::default());
    let run = journal::start(cfg.clone(), sink2.clone(), quiet()).unwrap();
    wait_for("3 more lines", || sink2.lines().len() == 3);
    wait_for("the last cursor", || {
        std::fs::read_to_string(&cfg.cursor)
            .unwrap_or_default()
            .trim()
            == "s=1a;i=6;b=b1;m=15;t=5f5;x=af"
    });
    run.stop();
    // Sorted: a batch groups entries by stream.
    let mut first = sink.texts();
    first.sort();
    let mut second = sink2.texts();
    second.sort();
    assert_eq!(
        first,
        ["eth0: link down", "started worker 1", "upstream timed out"]
    );
    assert_eq!(second, ["", "bin\u{fffd}!", "no priority"]);
    let args = std::fs::read_to_string(dir.path().join("args.txt")).unwrap();
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(args[0], "-o json -f -q --all --no-pager --since=now");
    assert_eq!(
        args[1],
        "-o json -f -q --all --no-pager --after-cursor=s=1a;i=3;b=b1;m=12;t=5f2;x=ac --no-tail"
    );
}

#[test]
fn a_refusing_sink_saves_no_cursor() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture(), dir.path().join("fixture.jsonl")).unwrap();
    let cfg = config(dir.path());
    let sink = Arc::new(Sink::default());
    sink.refuse.store(true, Ordering::SeqCst);
    let warned = Arc::new(AtomicBool::new(false));
    let w = warned.clone();
    let run = journal::start(
        cfg.clone(),
        sink.clone(),
        Arc::new(move |m: String| {
            if m.contains("refused") {
                w.store(true, Ordering::SeqCst);
            }
        }),
    )
    .unwrap();
    wait_for("a refusal", || sink.attempts() >= 2);
    assert!(warned.load(Ordering::SeqCst));
    assert!(!cfg.cursor.exists(), "cursor saved for refused lines");
    // Accepting again: the held batch goes through, then the cursor.
    sink.refuse.store(false, Ordering::SeqCst);
    wait_for("all lines", || sink.lines().len() == 6);
    wait_for("the cursor", || cfg.cursor.exists());
    run.stop();
    assert_eq!(sink.lines().len(), 6, "a line was delivered twice");
}

#[test]
fn detection() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        journal::detect(&dir.path().join("no-such-journalctl")),
        Availability::Absent(m) if m.contains("cannot run")
    ));
    // A journalctl that shows nothing: absent, with the reason.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "#!/bin/sh\nexit 0\n").unwrap();
    let failing = dir.path().join("failing");
    std::fs::write(&failing, "#!/bin/sh\necho 'No journal files' >&2\nexit 1\n").unwrap();
    let showing = dir.path().join("showing");
    std::fs::write(&showing, "#!/bin/sh\necho '{\"MESSAGE\":\"x\"}'\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    for p in [&empty, &failing, &showing] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert!(matches!(journal::detect(&empty), Availability::Absent(m) if m.contains("no entries")));
    assert!(
        matches!(journal::detect(&failing), Availability::Absent(m) if m.contains("No journal files"))
    );
    assert_eq!(journal::detect(&showing), Availability::Available);
}
