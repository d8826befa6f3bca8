//! Host logs through the real binary: a tailed file and Flightdeck's own
//! events land in the `default` project of the log store, and a `kill -9`
//! with lines appended before and while it is down neither loses nor
//! repeats a line. The store is read directly once the process is gone.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::spawn_binary;

fn append(p: &Path, s: &str) {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .unwrap()
        .write_all(s.as_bytes())
        .unwrap();
}

/// Waits until the positions file records `path` read to its end.
fn wait_caught_up(data: &Path, path: &Path) {
    let want = format!("\"path\":\"{}\",\"dev\"", path.display());
    let size = std::fs::metadata(path).unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text =
            std::fs::read_to_string(data.join("hostlogs/positions.json")).unwrap_or_default();
        if text.contains(&want) && text.contains(&format!("\"offset\":{size}}}")) {
            return;
        }
        assert!(Instant::now() < deadline, "tailer did not catch up: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn lines(store: &logstore::Store, job: &str) -> Vec<(String, String)> {
    let m = [model::Matcher::equal("job", job)];
    let q = logstore::Query {
        matchers: &m,
        start: 0,
        end: i64::MAX,
        direction: logstore::Direction::Forward,
        limit: 0,
        required: &[],
    };
    store
        .query("default", &q)
        .unwrap()
        .into_iter()
        .flat_map(|(l, e)| {
            let l = l.to_string();
            e.into_iter().map(move |e| (l.clone(), e.line))
        })
        .collect()
}

#[test]
fn tailed_lines_and_own_events_survive_kill9_once_each() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let app = logs.join("app.log");
    append(&app, "l1\nl2\n");
    let cfg = tmp.path().join("flightdeck.toml");
    std::fs::write(
        &cfg,
        format!(
            "[logs.sources]\nread_from = \"beginning\"\npoll_interval = \"50ms\"\n\
             [[logs.sources.files]]\ninclude = [\"{}/*.log\"]\njob = \"e2e\"\n\
             [logs.sources.journal]\nenabled = false\n",
            logs.display()
        ),
    )
    .unwrap();
    let extra = ["--config", cfg.to_str().unwrap()];
    let (mut child, _, _) = spawn_binary(&data, &extra);
    wait_caught_up(&data, &app);
    append(&app, "l3\n");
    child.kill().unwrap();
    child.wait().unwrap();
    append(&app, "l4\n");
    let (mut child, _, _) = spawn_binary(&data, &extra);
    wait_caught_up(&data, &app);
    // Own events are written by a background thread within ~200 ms.
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();

    let store = logstore::Store::open(&data.join("logs"), logstore::Options::default()).unwrap();
    let labels = format!(
        r#"{{filename="{}", host="{}", job="e2e"}}"#,
        app.display(),
        agent::logs::hostname()
    );
    let got = lines(&store, "e2e");
    assert_eq!(
        got,
        ["l1", "l2", "l3", "l4"]
            .map(|l| (labels.clone(), l.to_string()))
            .to_vec()
    );
    let own = lines(&store, "flightdeck");
    assert!(
        own.iter().any(|(l, line)| l.contains(r#"level="info""#)
            && line.starts_with("level=info target=flightdeck msg=\"flightdeck listening\"")),
        "{own:?}"
    );
}
