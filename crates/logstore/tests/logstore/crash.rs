//! Crash safety: a child process appending from several threads (with
//! flushes racing them) is killed with SIGKILL; every acknowledged entry
//! must be readable after reopening, none twice.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use logstore::{Entry, StreamBatch};

use crate::common::*;

const CHILD_ENV: &str = "LOGSTORE_CRASH_CHILD_DIR";
const WRITERS: usize = 4;
const STREAMS: usize = 5;

/// Not a test of its own: the body of the child process that
/// `kill9_loses_no_acknowledged_entry` starts and kills. Without the
/// environment variable it returns at once.
#[test]
fn crash_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let s = Arc::new(open(Path::new(&dir)));
    let start: i64 = std::env::var("LOGSTORE_CRASH_START")
        .unwrap()
        .parse()
        .unwrap();
    {
        let s = s.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(5));
                s.flush().unwrap();
            }
        });
    }
    let hs: Vec<_> = (0..WRITERS)
        .map(|w| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut t = start;
                loop {
                    t += 1;
                    let batches: Vec<StreamBatch> = (0..STREAMS)
                        .map(|k| StreamBatch {
                            labels: labels(&[("w", &w.to_string()), ("s", &k.to_string())]),
                            entries: vec![Entry::new(
                                t,
                                format!("writer {w} stream {k} entry {t}"),
                            )],
                        })
                        .collect();
                    s.append("crash", &batches).unwrap();
                    println!("ack {w} {t}");
                }
            })
        })
        .collect();
    for h in hs {
        let _ = h.join();
    }
}

fn parse_ack(line: &str) -> Option<(usize, i64)> {
    let mut it = line.strip_prefix("ack ")?.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

#[test]
fn kill9_loses_no_acknowledged_entry() {
    let d = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut start = 0i64;
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    for cycle in 0..5 {
        let err_path = d.path().join(format!("child-{cycle}.stderr"));
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash::crash_child_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, d.path().join("store"))
            .env("LOGSTORE_CRASH_START", start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut acked: HashMap<usize, i64> = HashMap::new();
        let want = 100 + cycle * 41;
        let mut n = 0;
        let mut line = String::new();
        while n < want {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                let err = std::fs::read_to_string(&err_path).unwrap_or_default();
                panic!("child ended early (cycle {cycle}); stderr:\n{err}");
            }
            if let Some((w, t)) = parse_ack(&line) {
                acked.insert(w, t);
                n += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
        for l in out.lines() {
            if let Some((w, t)) = parse_ack(&l.unwrap()) {
                let e = acked.entry(w).or_insert(t);
                *e = (*e).max(t);
            }
        }
        child.wait().unwrap();
        let s = open(&d.path().join("store"));
        let mut max_seen = start;
        for w in 0..WRITERS {
            let got = times(&s, "crash", &[eq("w", &w.to_string())]);
            let acked_t = acked.get(&w).copied().unwrap_or(start);
            for k in 0..STREAMS {
                let name = format!(r#"{{s="{k}", w="{w}"}}"#);
                let ts = got
                    .iter()
                    .find(|(l, _)| *l == name)
                    .map(|x| x.1.clone())
                    .unwrap_or_default();
                // What the last check saw is still there, then every
                // timestamp this cycle acknowledged, once (strictly
                // increasing: a replay never re-adds what a segment holds).
                let last = ts.last().copied().unwrap_or(0);
                assert!(
                    last >= acked_t,
                    "cycle {cycle}: {name} ends at {last}, {acked_t} was acknowledged"
                );
                let before = seen.get(&name).cloned().unwrap_or_default();
                assert!(
                    ts.starts_with(&before),
                    "cycle {cycle}: {name} lost entries of earlier cycles"
                );
                assert!(
                    ts.windows(2).all(|p| p[0] < p[1]),
                    "cycle {cycle}: {name} has duplicates"
                );
                let missing: Vec<i64> = (start + 1..=acked_t)
                    .filter(|t| ts.binary_search(t).is_err())
                    .collect();
                assert!(
                    missing.is_empty(),
                    "cycle {cycle}: {name} lacks acknowledged {missing:?}"
                );
                seen.insert(name, ts);
                max_seen = max_seen.max(last);
            }
        }
        s.close().unwrap();
        start = max_seen;
    }
}
