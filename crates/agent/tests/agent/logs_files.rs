//! The file tailer on real files in temporary directories: appends, new
//! files, rotation by rename mid-stream, copytruncate, restarts with saved
//! positions, partial and over-long lines, a sink that refuses. Time is
//! passed to `poll_at`, never slept on.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agent::logs::files::{FileGroup, FilesConfig, ReadFrom, TRUNCATED_MARKER, Tailer};
use agent::logs::{LogSink, LogStream};

/// A sink that keeps what it acknowledged and can be told to refuse.
#[derive(Default)]
pub struct Sink {
    pub got: Mutex<Vec<LogStream>>,
    pub refuse: AtomicBool,
    attempts: AtomicUsize,
}

impl Sink {
    /// `(filename label or labels, line)` in acknowledgement order.
    pub fn lines(&self) -> Vec<(String, String)> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .flat_map(|s| {
                let name = s
                    .labels
                    .get("filename")
                    .map(|f| {
                        Path::new(f)
                            .file_name()
                            .unwrap()
                            .to_string_lossy()
                            .into_owned()
                    })
                    .unwrap_or_else(|| s.labels.to_string());
                s.entries
                    .iter()
                    .map(move |e| (name.clone(), e.line.clone()))
            })
            .collect()
    }

    pub fn texts(&self) -> Vec<String> {
        self.lines().into_iter().map(|(_, l)| l).collect()
    }

    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    fn take(&self) -> Vec<String> {
        let t = self.texts();
        self.got.lock().unwrap().clear();
        t
    }
}

impl LogSink for Sink {
    fn push(&self, streams: &[LogStream]) -> Result<(), String> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.refuse.load(Ordering::SeqCst) {
            return Err("store is full".into());
        }
        self.got.lock().unwrap().extend_from_slice(streams);
        Ok(())
    }
}

struct Fx {
    dir: tempfile::TempDir,
    cfg: FilesConfig,
    t0: Instant,
}

impl Fx {
    fn new(patterns: &[&str]) -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let include = patterns
            .iter()
            .map(|p| dir.path().join(p).to_string_lossy().into_owned())
            .collect();
        let mut cfg = FilesConfig::new(
            vec![FileGroup {
                include,
                job: "varlogs".into(),
            }],
            dir.path().join("state/positions.json"),
        );
        cfg.read_from = ReadFrom::Beginning;
        cfg.host = "h1".into();
        Fx {
            dir,
            cfg,
            t0: Instant::now(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn tailer(&self) -> Tailer {
        Tailer::new(self.cfg.clone()).unwrap()
    }

    fn append(&self, name: &str, bytes: &[u8]) {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(name))
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }

    /// A poll at `t0 + secs`, asserting it went through.
    fn poll(&self, t: &mut Tailer, sink: &Sink, secs: u64) -> Vec<String> {
        let r = t.poll_at(
            sink,
            self.t0 + Duration::from_secs(secs),
            1_000 + secs as i64,
        );
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        sink.take()
    }
}

fn v(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|s| s.to_string()).collect()
}

#[test]
fn appended_lines_are_picked_up_with_labels() {
    let fx = Fx::new(&["*.log"]);
    fx.append("app.log", b"one\ntwo\n");
    let mut t = fx.tailer();
    let sink = Sink::default();
    t.poll_at(&sink, fx.t0, 500);
    let got = sink.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].labels.to_string(),
        format!(
            r#"{{filename="{}", host="h1", job="varlogs"}}"#,
            fx.path("app.log").display()
        )
    );
    // Lines read together get distinct, increasing timestamps.
    let ts: Vec<i64> = got[0].entries.iter().map(|e| e.ts).collect();
    assert_eq!(ts, [500, 501]);
    sink.take();
    fx.append("app.log", b"three\r\n");
    assert_eq!(fx.poll(&mut t, &sink, 1), v(&["three"]));
    assert_eq!(fx.poll(&mut t, &sink, 2), Vec::<String>::new());
    assert_eq!(t.offset(&fx.path("app.log")), Some(15));
}

#[test]
fn identical_lines_keep_distinct_timestamps() {
    let fx = Fx::new(&["*.log"]);
    fx.append("a.log", b"same\nsame\nsame\n");
    let mut t = fx.tailer();
    let sink = Sink::default();
    t.poll_at(&sink, fx.t0, 7);
    fx.append("a.log", b"same\n");
    // The wall clock went backwards: still after the last line.
    t.poll_at(&sink, fx.t0, 3);
    let ts: Vec<i64> = sink
        .got
        .lock()
        .unwrap()
        .iter()
        .flat_map(|s| s.entries.iter().map(|e| e.ts))
        .collect();
    assert_eq!(ts, [7, 8, 9, 10]);
}

#[test]
fn a_new_file_matching_the_glob_is_picked_up() {
    let fx = Fx::new(&["*.log"]);
    fx.append("a.log", b"a1\n");
    let mut t = fx.tailer();
    let sink = Sink::default();
    assert_eq!(fx.poll(&mut t, &sink, 0), v(&["a1"]));
    fx.append("b.log", b"b1\nb2\n");
    fx.append("c.txt", b"not matched\n");
    std::fs::create_dir(fx.path("d.log")).unwrap();
    t.poll_at(&sink, fx.t0, 1);
    assert_eq!(
        sink.lines(),
        [
            ("b.log".to_string(), "b1".to_string()),
            ("b.log".into(), "b2".into())
        ]
    );
    assert_eq!(t.tracked(), 2);
}

#[test]
fn rotation_by_rename_mid_stream_loses_and_repeats_nothing() {
    let mut fx = Fx::new(&["app.log"]);
    fx.cfg.rotate_grace = Duration::from_secs(5);
    let mut writer = OpenOptions::new()
        .create(true)
        .append(true)
        .open(fx.path("app.log"))
        .unwrap();
    writer.write_all(b"l1\nl2\n").unwrap();
    let mut t = fx.tailer();
    let sink = Sink::default();
    assert_eq!(fx.poll(&mut t, &sink, 0), v(&["l1", "l2"]));
    // Written before the rename, not yet read.
    writer.write_all(b"l3\nl4-part").unwrap();
    std::fs::rename(fx.path("app.log"), fx.path("app.log.1")).unwrap();
    // The writer has not reopened yet: its next line still goes to the old file.
    writer.write_all(b"ial\nl5\n").unwrap();
    let mut writer2 = File::create(fx.path("app.log")).unwrap();
    writer2.write_all(b"n1\n").unwrap();
    let got = fx.poll(&mut t, &sink, 1);
    assert_eq!(sorted(got), v(&["l3", "l4-partial", "l5", "n1"]));
    assert_eq!(
        t.tracked(),
        2,
        "the rotated file is still read during the grace"
    );
    writer.write_all(b"l6\n").unwrap();
    writer2.write_all(b"n2\n").unwrap();
    assert_eq!(sorted(fx.poll(&mut t, &sink, 3)), v(&["l6", "n2"]));
    // Quiet for longer than the grace: the old file is dropped.
    assert_eq!(fx.poll(&mut t, &sink, 9), Vec::<String>::new());
    assert_eq!(t.tracked(), 1);
    writer2.write_all(b"n3\n").unwrap();
    assert_eq!(fx.poll(&mut t, &sink, 10), v(&["n3"]));
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn copytruncate_starts_over_at_zero() {
    let fx = Fx::new(&["app.log"]);
    fx.append("app.log", b"a\nb\n");
    let mut t = fx.tailer();
    let sink = Sink::default();
    assert_eq!(fx.poll(&mut t, &sink, 0), v(&["a", "b"]));
    std::fs::copy(fx.path("app.log"), fx.path("app.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(fx.path("app.log"))
        .unwrap()
        .set_len(0)
        .unwrap();
    fx.append("app.log", b"c\n");
    let r = t.poll_at(&sink, fx.t0 + Duration::from_secs(1), 1);
    assert_eq!(r.truncated, 1);
    assert_eq!(sink.take(), v(&["c"]));
    assert_eq!(t.offset(&fx.path("app.log")), Some(2));
}

#[test]
fn restart_resumes_from_saved_positions() {
    let fx = Fx::new(&["*.log"]);
    let all: Vec<String> = (0..300).map(|i| format!("line {i}")).collect();
    for l in &all[..100] {
        fx.append("a.log", format!("{l}\n").as_bytes());
    }
    let sink = Sink::default();
    let mut got = Vec::new();
    let poll = |t: &mut Tailer, secs| {
        t.poll_at(&sink, fx.t0 + Duration::from_secs(secs), 1);
        let lines = sink.lines();
        sink.got.lock().unwrap().clear();
        lines
    };
    {
        let mut t = fx.tailer();
        got.extend(poll(&mut t, 0));
        for l in &all[100..200] {
            fx.append("a.log", format!("{l}\n").as_bytes());
        }
        got.extend(poll(&mut t, 1));
        // Appended, then the tailer stops before reading it.
        for l in &all[200..250] {
            fx.append("a.log", format!("{l}\n").as_bytes());
        }
    }
    // While stopped: more lines, and a file that did not exist before.
    for l in &all[250..] {
        fx.append("a.log", format!("{l}\n").as_bytes());
    }
    fx.append("b.log", b"written while stopped\n");
    let mut t = fx.tailer();
    got.extend(poll(&mut t, 2));
    let of = |f: &str| -> Vec<String> {
        got.iter()
            .filter(|(n, _)| n == f)
            .map(|(_, l)| l.clone())
            .collect()
    };
    assert_eq!(of("a.log"), all);
    assert_eq!(of("b.log"), v(&["written while stopped"]));
    assert_eq!(got.len(), 301);
    let text = std::fs::read_to_string(fx.path("state/positions.json")).unwrap();
    assert!(text.contains("\"offset\":"), "{text}");
}

#[test]
fn first_start_reads_existing_files_from_the_end_when_asked() {
    let mut fx = Fx::new(&["*.log"]);
    fx.cfg.read_from = ReadFrom::End;
    fx.append("old.log", b"history\n");
    let sink = Sink::default();
    {
        let mut t = fx.tailer();
        assert_eq!(fx.poll(&mut t, &sink, 0), Vec::<String>::new());
        fx.append("new.log", b"fresh\n");
        assert_eq!(fx.poll(&mut t, &sink, 1), v(&["fresh"]));
    }
    // Not a first start any more: what was appended while stopped is read.
    fx.append("old.log", b"after\n");
    let mut t = fx.tailer();
    assert_eq!(fx.poll(&mut t, &sink, 2), v(&["after"]));
}

#[test]
fn first_start_from_the_end_survives_a_restart_without_lines() {
    let mut fx = Fx::new(&["*.log"]);
    fx.cfg.read_from = ReadFrom::End;
    fx.append("old.log", b"history\n");
    let sink = Sink::default();
    {
        let mut t = fx.tailer();
        assert_eq!(fx.poll(&mut t, &sink, 0), Vec::<String>::new());
    }
    fx.append("old.log", b"while stopped\n");
    let mut t = fx.tailer();
    assert_eq!(fx.poll(&mut t, &sink, 1), v(&["while stopped"]));
}

#[test]
fn a_partial_line_waits_for_its_newline_or_the_timeout() {
    let mut fx = Fx::new(&["app.log"]);
    fx.cfg.partial_timeout = Duration::from_secs(2);
    fx.append("app.log", b"first\nhal");
    let mut t = fx.tailer();
    let sink = Sink::default();
    assert_eq!(fx.poll(&mut t, &sink, 0), v(&["first"]));
    fx.append("app.log", b"f a line");
    assert_eq!(fx.poll(&mut t, &sink, 1), Vec::<String>::new());
    // It changed at 1 s: at 2 s it has waited 1 s only.
    assert_eq!(fx.poll(&mut t, &sink, 2), Vec::<String>::new());
    fx.append("app.log", b"\n");
    assert_eq!(fx.poll(&mut t, &sink, 3), v(&["half a line"]));
    fx.append("app.log", b"no newline ever");
    assert_eq!(fx.poll(&mut t, &sink, 4), Vec::<String>::new());
    assert_eq!(fx.poll(&mut t, &sink, 5), Vec::<String>::new());
    assert_eq!(fx.poll(&mut t, &sink, 6), v(&["no newline ever"]));
    // first\n + half a line\n + no newline ever
    assert_eq!(t.offset(&fx.path("app.log")), Some(6 + 12 + 15));
}

#[test]
fn a_partial_line_is_not_acknowledged_across_a_restart() {
    let fx = Fx::new(&["app.log"]);
    fx.append("app.log", b"a\nbeg");
    let sink = Sink::default();
    {
        let mut t = fx.tailer();
        assert_eq!(fx.poll(&mut t, &sink, 0), v(&["a"]));
    }
    fx.append("app.log", b"inning\n");
    let mut t = fx.tailer();
    assert_eq!(fx.poll(&mut t, &sink, 1), v(&["beginning"]));
}

#[test]
fn long_lines_are_cut_with_a_marker_and_bad_utf8_replaced() {
    let mut fx = Fx::new(&["app.log"]);
    fx.cfg.max_line_bytes = 10;
    fx.append("app.log", b"0123456789abcdef\nshort\ncaf\xe9\n");
    let mut t = fx.tailer();
    let sink = Sink::default();
    assert_eq!(
        fx.poll(&mut t, &sink, 0),
        v(&[
            &format!("0123456789{TRUNCATED_MARKER}"),
            "short",
            "caf\u{fffd}"
        ])
    );
    // An over-long line still being written: cut at once, rest skipped.
    fx.append("app.log", b"ABCDEFGHIJKLMNOP");
    assert_eq!(
        fx.poll(&mut t, &sink, 1),
        v(&[&format!("ABCDEFGHIJ{TRUNCATED_MARKER}")])
    );
    fx.append("app.log", b"QRSTUVWXYZ");
    assert_eq!(fx.poll(&mut t, &sink, 2), Vec::<String>::new());
    fx.append("app.log", b"xyz\nnext\n");
    assert_eq!(fx.poll(&mut t, &sink, 3), v(&["next"]));
}

#[test]
fn reads_are_bounded_per_poll() {
    let mut fx = Fx::new(&["app.log"]);
    fx.cfg.max_line_bytes = 8;
    fx.cfg.max_read_bytes = 16;
    fx.append("app.log", b"aaaa\nbbbb\ncccc\ndddd\neeee\n");
    let mut t = fx.tailer();
    let sink = Sink::default();
    assert_eq!(fx.poll(&mut t, &sink, 0), v(&["aaaa", "bbbb", "cccc"]));
    assert_eq!(fx.poll(&mut t, &sink, 1), v(&["dddd", "eeee"]));
}

#[test]
fn a_refusing_sink_advances_nothing() {
    let fx = Fx::new(&["app.log"]);
    fx.append("app.log", b"a\nb\n");
    let sink = Sink::default();
    sink.refuse.store(true, Ordering::SeqCst);
    {
        let mut t = fx.tailer();
        let r = t.poll_at(&sink, fx.t0, 1);
        assert_eq!(r.refused.as_deref(), Some("store is full"));
        assert_eq!(r.lines, 0);
        assert_eq!(t.offset(&fx.path("app.log")), Some(0));
        fx.append("app.log", b"c\n");
        assert!(t.poll_at(&sink, fx.t0, 2).refused.is_some());
    }
    // Neither in memory nor on disk: a restart reads them all, once.
    sink.refuse.store(false, Ordering::SeqCst);
    let mut t = fx.tailer();
    assert_eq!(fx.poll(&mut t, &sink, 3), v(&["a", "b", "c"]));
    assert_eq!(fx.poll(&mut t, &sink, 4), Vec::<String>::new());
    assert_eq!(sink.attempts(), 3);
}

#[test]
fn a_failed_positions_write_is_reported_and_retried() {
    let mut fx = Fx::new(&["app.log"]);
    fx.cfg.faults = diskio::Faults::enabled();
    fx.append("app.log", b"a\n");
    let mut t = fx.tailer();
    let sink = Sink::default();
    fx.cfg.faults.fail_all_writes();
    let r = t.poll_at(&sink, fx.t0, 1);
    assert_eq!(r.lines, 1);
    assert!(
        r.errors.iter().any(|e| e.contains("positions")),
        "{:?}",
        r.errors
    );
    fx.cfg.faults.clear();
    let r = t.poll_at(&sink, fx.t0, 2);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let text = std::fs::read_to_string(fx.path("state/positions.json")).unwrap();
    assert!(text.contains("\"offset\":2"), "{text}");
}

#[test]
fn bad_patterns_and_positions_are_errors() {
    let mut fx = Fx::new(&["app.log"]);
    fx.cfg.groups[0].include = vec!["/var/log/[".into()];
    assert!(Tailer::new(fx.cfg.clone()).is_err());
    let fx = Fx::new(&["app.log"]);
    std::fs::create_dir_all(fx.path("state")).unwrap();
    std::fs::write(fx.path("state/positions.json"), b"{not json").unwrap();
    let e = Tailer::new(fx.cfg.clone())
        .err()
        .expect("corrupt positions accepted");
    assert!(e.to_string().contains("move it away"), "{e}");
}
