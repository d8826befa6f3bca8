//! Proof benchmark: inclusion proofs, consistency proofs and receipts made
//! by `audit` (through `AuditLog`, exactly as the server calls it) from the
//! tlog-tiles files of one log of N entries (default 10,000,000). The log
//! is written first with the checkpointer's own code
//! (`audit::tlog::write_log`: write-once tiles and bundles, a signed
//! checkpoint) into a directory on `/dev/shm` when it exists (fsync is then
//! free, so building 10M entries takes seconds, not an hour of fsyncs),
//! else a temporary directory. Entries are `--entry-bytes` long (default
//! 100; proofs read only hash tiles, a receipt one entry bundle).
//! Target: p99 ≤ 5 ms per proof at 10M entries.
//!
//! Run: `cargo bench -p audit --bench proof [-- --entries N --entry-bytes B
//! --samples S --dir DIR --keep]`. `--dir` with `--keep` reuses a log built
//! by an earlier run. Writes `bench/results/proof-<date>.md`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use audit::*;
use merkle::SignerKey;

struct Args {
    entries: u64,
    entry_bytes: usize,
    samples: usize,
    dir: Option<PathBuf>,
    keep: bool,
}

fn args() -> Args {
    let mut a = Args {
        entries: 10_000_000,
        entry_bytes: 100,
        samples: 20_000,
        dir: None,
        keep: false,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        let next = || v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--entries" => a.entries = next().parse().expect("--entries N"),
            "--entry-bytes" => a.entry_bytes = next().parse().expect("--entry-bytes B"),
            "--samples" => a.samples = next().parse().expect("--samples S"),
            "--dir" => a.dir = Some(PathBuf::from(next())),
            "--keep" => {
                a.keep = true;
                i += 1;
                continue;
            }
            // cargo bench passes --bench; ignore what is not ours.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// Entry `i`: a small JSON object padded to `len` bytes.
fn entry(i: u64, len: usize) -> Vec<u8> {
    let mut e = format!("{{\"i\":{i},\"pad\":\"").into_bytes();
    let fill = len.saturating_sub(e.len() + 2);
    e.extend(std::iter::repeat_n(b'x', fill));
    e.extend_from_slice(b"\"}");
    e
}

/// A xorshift generator: reproducible sample positions.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

struct Stats {
    name: &'static str,
    lat: Vec<Duration>,
}

impl Stats {
    fn pct(&self, p: f64) -> Duration {
        let mut v = self.lat.clone();
        v.sort();
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        v[i]
    }

    fn row(&self) -> String {
        let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
        let mean = self.lat.iter().sum::<Duration>() / self.lat.len() as u32;
        format!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            self.name,
            self.lat.len(),
            ms(mean),
            ms(self.pct(0.5)),
            ms(self.pct(0.9)),
            ms(self.pct(0.99)),
            ms(self.pct(1.0))
        )
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.1} GiB", kb / 1048576.0));
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    format!("nproc {cores}, memory {mem}, load average at start {load}")
}

fn main() {
    let a = args();
    let n = a.entries;
    assert!(n >= 2, "--entries must be at least 2");
    let machine = machine();
    let tmp;
    let root = match &a.dir {
        Some(d) => d.clone(),
        None => {
            let shm = std::path::Path::new("/dev/shm");
            let mut b = tempfile::Builder::new();
            b.prefix("flightdeck-proof-bench-");
            tmp = if shm.is_dir() {
                b.tempdir_in(shm)
            } else {
                b.tempdir()
            }
            .expect("temporary directory");
            tmp.path().to_path_buf()
        }
    };
    let k = LogKey::of(Some("bench"));
    let signer = SignerKey::from_seed("flightdeck", &[5; 32]).expect("key");
    let log_dir = root.join("tlog/p/bench");

    let reuse = a.keep
        && LogFiles::new(log_dir.clone(), "p/bench")
            .latest()
            .is_ok_and(|c| c.size == n);
    let build = if reuse {
        eprintln!("reusing the {n}-entry log in {}", root.display());
        None
    } else {
        let _ = std::fs::remove_dir_all(root.join("tlog"));
        std::fs::create_dir_all(&root).expect("bench directory");
        eprintln!("writing {n} entries into {} ...", root.display());
        let t = Instant::now();
        let len = a.entry_bytes;
        let cp = audit::tlog::write_log(
            &root,
            "flightdeck",
            &signer,
            &k,
            (0..n).map(|i| entry(i, len)),
        )
        .expect("write_log");
        assert_eq!(cp.size, n);
        let secs = t.elapsed().as_secs_f64();
        eprintln!("wrote {n} entries in {secs:.1} s");
        Some(secs)
    };

    // The production path: the same AuditLog calls the server makes.
    let log = AuditLog::open_read_only(&root).expect("open");
    let cp = log.log_files(&k).latest().expect("checkpoint");
    let key = signer.verifier();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let samples = a.samples.max(1);

    // Warm up (page cache, allocator).
    for _ in 0..1000 {
        let i = rng.below(n);
        log.inclusion_proof(&k, &EntryRef::Index(i), None)
            .expect("proof");
    }

    let mut incl = Stats {
        name: "inclusion, latest size (random index)",
        lat: Vec::with_capacity(samples),
    };
    let mut older = Stats {
        name: "inclusion, random older size",
        lat: Vec::with_capacity(samples),
    };
    let mut cons = Stats {
        name: "consistency, random size → latest",
        lat: Vec::with_capacity(samples),
    };
    let mut rec = Stats {
        name: "receipt (proof + entry bundle), random index",
        lat: Vec::with_capacity(samples),
    };
    let t_all = Instant::now();
    for s in 0..samples {
        let i = rng.below(n);
        let t = Instant::now();
        let p = log
            .inclusion_proof(&k, &EntryRef::Index(i), None)
            .expect("proof");
        incl.lat.push(t.elapsed());
        if s % 100 == 0 {
            merkle::verify_inclusion(i, n, &p.leaf_hash, &p.hashes, &cp.root).expect("verifies");
        }

        let size = 1 + rng.below(n);
        let j = rng.below(size);
        let t = Instant::now();
        let p = log
            .inclusion_proof(&k, &EntryRef::Index(j), Some(size))
            .expect("proof");
        older.lat.push(t.elapsed());
        assert_eq!(p.tree_size, size);

        let from = 1 + rng.below(n);
        let t = Instant::now();
        let c = log.consistency_proof(&k, from, None).expect("proof");
        cons.lat.push(t.elapsed());
        assert_eq!(c.to, n);

        let i = rng.below(n);
        let t = Instant::now();
        let r = log.receipt(&k, &EntryRef::Index(i)).expect("receipt");
        rec.lat.push(t.elapsed());
        if s % 100 == 0 {
            verify_receipt(&r.to_bytes(), &key, None).expect("receipt verifies");
        }
    }
    let total = t_all.elapsed().as_secs_f64();
    let all = [&incl, &older, &cons, &rec];
    let worst_p99 = all.iter().map(|s| s.pct(0.99)).max().unwrap_or_default();
    let met = worst_p99 <= Duration::from_millis(5);

    let date = format_time_ns(
        i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap_or(0),
    )[..10]
        .to_string();
    let build_line = match build {
        Some(s) => format!(
            "built in {s:.1} s with `audit::tlog::write_log` ({:.0} entries/s)",
            n as f64 / s
        ),
        None => "reused from an earlier run (`--dir ... --keep`)".into(),
    };
    let mut md = format!(
        "# Proof benchmark ({date})\n\n\
         - machine: {machine}\n\
         - command: `cargo bench -p audit --bench proof -- --entries {n} --entry-bytes {} --samples {samples}` \
           (`CARGO_TARGET_DIR=/work/target-audit`)\n\
         - log: one project log of {n} entries of {} bytes in `{}`, {build_line}; root {}\n\
         - calls: `AuditLog::inclusion_proof` / `consistency_proof` / `receipt` on a read-only open, one thread, \
           page cache warm (tmpfs); every 100th inclusion proof and receipt verified outside the timing\n\n\
         | operation | calls | mean | p50 | p90 | p99 | max |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        a.entry_bytes,
        a.entry_bytes,
        root.display(),
        cp.root.to_base64(),
    );
    for s in all {
        md.push_str(&s.row());
        md.push('\n');
    }
    md.push_str(&format!(
        "\n{} calls in {total:.1} s. Target: p99 ≤ 5 ms at 10M entries — {} (worst p99 {:.3} ms{}).\n",
        4 * samples,
        if n < 10_000_000 {
            "run with 10M to judge"
        } else if met {
            "**met**"
        } else {
            "**missed**"
        },
        worst_p99.as_secs_f64() * 1e3,
        if n < 10_000_000 {
            format!(", at {n} entries")
        } else {
            String::new()
        }
    ));
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/results");
    let path = out.join(format!("proof-{date}.md"));
    match std::fs::create_dir_all(&out).and_then(|()| std::fs::write(&path, &md)) {
        Ok(()) => eprintln!("wrote {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
    print!("{md}");
}
