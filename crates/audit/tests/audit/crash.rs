//! SIGKILL crash test: a child process (this test binary, re-executed)
//! appends from 16 threads and prints every acknowledged event; the parent
//! kills it at a random moment, reopens, and checks nothing acknowledged
//! was lost and seqs have no gaps. Repeated on the same directory.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audit::*;

use crate::support::*;

const CHILD_ENV: &str = "AUDIT_CRASH_CHILD_DIR";
const TEST_NAME: &str = "crash::sigkill_never_loses_an_acknowledged_event";
const CYCLES: usize = 20;

#[test]
fn sigkill_never_loses_an_acknowledged_event() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
    }
    let d = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Rng(seed ^ 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut parent_appends = 0;
    for cycle in 0..CYCLES {
        let mut proc = Command::new(std::env::current_exe().unwrap())
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, d.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = proc.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line);
                }
            })
        };
        std::thread::sleep(Duration::from_millis(50 + rng.next() % 351));
        proc.kill().unwrap();
        proc.wait().unwrap();
        reader.join().unwrap();
        for line in lines.lock().unwrap().iter() {
            if let Some(rest) = line.strip_prefix("ACK ") {
                let (id, seq) = rest.split_once(' ').unwrap();
                acked.insert(id.to_string(), seq.parse().unwrap());
            }
        }

        let log = open(d.path());
        let events = all(&log);
        assert_gap_free(&events);
        assert_eq!(log.last_seq(), events.len() as u64);
        let by_id: HashMap<&str, u64> = events.iter().map(|e| (e.id.as_str(), e.seq)).collect();
        for (id, seq) in &acked {
            assert_eq!(
                by_id.get(id.as_str()),
                Some(seq),
                "cycle {cycle}: acknowledged event {id} (seq {seq}) lost"
            );
        }
        let e = log.append(simple(cycle)).unwrap();
        assert_eq!(e.seq, events.len() as u64 + 1);
        acked.insert(e.id, e.seq);
        parent_appends += 1;
        log.shutdown();
    }
    assert!(
        acked.len() > parent_appends,
        "the children never acknowledged anything"
    );
    eprintln!(
        "crash test: {CYCLES} cycles, {} acknowledged events checked in {:?}",
        acked.len(),
        started.elapsed()
    );
}

/// The child: append forever from 16 threads, printing each ack.
fn child(dir: &Path) -> ! {
    let log = AuditLog::open(
        dir,
        Options {
            max_segment_bytes: 256 << 10,
            ..Options::default()
        },
    )
    .expect("child: open");
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    let e = log
                        .append(draft(Some(["a", "b", "c"][t % 3]), "crash.test", i))
                        .expect("child: append");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {} {}", e.id, e.seq).unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    std::process::exit(0);
}

/// xorshift64*: enough randomness for kill timing without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}
