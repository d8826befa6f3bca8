//! Audit log benchmark: durable append throughput and latency at 1, 16 and
//! 256 concurrent writers, and search latency on a large log.
//!
//! A *writer* appends, waits for the acknowledgement, and appends again.
//! Writers are driven either by one OS thread each (blocking `append`), or,
//! like the server does it (async tasks bridged onto `append_with`), by a
//! few client threads that each keep their writers' appends in flight and
//! submit a writer's next event as soon as its previous one is
//! acknowledged. Latency is from submit to acknowledgement either way.
//!
//! Run: `cargo bench -p audit --bench audit [-- --events N] [--quick]`.
//! Writes `bench/results/audit-<date>.md` at the workspace root.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use audit::*;

const T0: i64 = 1_767_225_600_000_000_000;
const PROJECTS: usize = 20;
const ACTIONS: [&str; 36] = [
    "iam.token.create",
    "iam.token.delete",
    "iam.token.rotate",
    "iam.user.login",
    "iam.user.logout",
    "iam.user.create",
    "iam.user.delete",
    "iam.user.update",
    "iam.membership.add",
    "iam.membership.remove",
    "project.create",
    "project.delete",
    "project.update",
    "rules.group.create",
    "rules.group.update",
    "rules.group.delete",
    "alerts.silence.create",
    "alerts.silence.expire",
    "contact.create",
    "contact.update",
    "contact.delete",
    "dashboard.create",
    "dashboard.update",
    "dashboard.delete",
    "audit.ingest",
    "audit.export",
    "metrics.retention.run",
    "logs.retention.run",
    "settings.update",
    "session.create",
    "session.revoke",
    "ci.deploy",
    "ci.rollback",
    "k8s.scale",
    "k8s.restart",
    "db.migrate",
];

struct Args {
    events: usize,
    quick: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        events: 1_000_000,
        quick: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => {
                a.quick = true;
                a.events = 100_000;
            }
            "--events" => {
                if let Some(n) = it.next().and_then(|v| v.parse().ok()) {
                    a.events = n;
                }
            }
            _ => {} // `cargo bench` passes `--bench`; ignore what we do not know.
        }
    }
    a
}

/// Small deterministic generator (no extra dependency).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A realistic event: 400–700 bytes in canonical form.
fn draft(rng: &mut Rng) -> EventDraft {
    let project = rng.below(PROJECTS);
    let action = ACTIONS[rng.below(ACTIONS.len())];
    let user = rng.below(200);
    let pad = rng.below(220);
    EventDraft {
        organization: "acme".into(),
        project: Some(format!("project-{project:02}")),
        principal: Principal {
            kind: if user.is_multiple_of(4) {
                PrincipalKind::Token
            } else {
                PrincipalKind::User
            },
            id: format!("usr_{user:06}"),
            name: format!("user{user}@example.com"),
            token_id: (user.is_multiple_of(4)).then(|| format!("tok_{user:06}")),
            auth_method: Some(AuthMethod::Bearer),
        },
        source_ip: Some(format!("10.{}.{}.{}", user % 7, user % 13, user % 251)),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) flightdeck-cli/0.1".into()),
        action: action.into(),
        resource: Some(Resource {
            kind: action.split('.').nth(1).unwrap_or("thing").into(),
            id: Some(format!("res_{:08x}", rng.next() as u32)),
            name: Some(format!("resource {}", rng.below(1000))),
        }),
        request_id: Some(format!("req_{:016x}", rng.next())),
        result: Outcome {
            status: if rng.below(20) == 0 {
                Status::Failure
            } else {
                Status::Success
            },
            http_status: Some(200),
            error_code: None,
            error_message: None,
        },
        request_parameters: Some(
            serde_json::json!({ "comment": "x".repeat(pad), "dry_run": false }),
        ),
        response_elements: None,
        changes: vec![],
        event_source: "flightdeck".into(),
        event_time: None,
        external_id: None,
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct AppendResult {
    writers: usize,
    /// OS threads driving the writers.
    threads: usize,
    events: usize,
    secs: f64,
    p50: Duration,
    p99: Duration,
    fsyncs: u64,
    avg_event_bytes: f64,
}

fn bench_append(writers: usize, events: usize) -> AppendResult {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = AuditLog::open(dir.path(), Options::default()).expect("open");
    let per = events.div_ceil(writers);
    let start = Instant::now();
    let lat: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let log = log.clone();
                s.spawn(move || {
                    let mut rng = Rng(0x1234_5678 + w as u64);
                    let mut lat = Vec::with_capacity(per);
                    for _ in 0..per {
                        let d = draft(&mut rng);
                        let t = Instant::now();
                        log.append(d).expect("append");
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer thread"))
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut lat = lat;
    lat.sort_unstable();
    let st = log.stats();
    log.shutdown();
    AppendResult {
        writers,
        threads: writers,
        events: lat.len(),
        secs,
        p50: pct(&lat, 0.50),
        p99: pct(&lat, 0.99),
        fsyncs: st.fsyncs,
        avg_event_bytes: st.bytes_written as f64 / st.events.max(1) as f64,
    }
}

/// `writers` writers driven by `threads` client threads with `append_with`.
fn bench_append_async(writers: usize, threads: usize, events: usize) -> AppendResult {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = AuditLog::open(dir.path(), Options::default()).expect("open");
    let per = events.div_ceil(writers);
    let start = Instant::now();
    let lat: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let log = log.clone();
                s.spawn(move || {
                    let mine: Vec<usize> = (t..writers).step_by(threads).collect();
                    let mut rngs: Vec<Rng> =
                        mine.iter().map(|w| Rng(0x1234_5678 + *w as u64)).collect();
                    let mut left = vec![per; mine.len()];
                    let (tx, rx) = mpsc::channel::<(usize, Duration)>();
                    let submit = |slot: usize, rng: &mut Rng| {
                        let d = draft(rng);
                        let tx = tx.clone();
                        let t0 = Instant::now();
                        log.append_with(
                            d,
                            Box::new(move |r| {
                                r.expect("append");
                                let _ = tx.send((slot, t0.elapsed()));
                            }),
                        );
                    };
                    for (slot, rng) in rngs.iter_mut().enumerate() {
                        submit(slot, rng);
                    }
                    let mut lat = Vec::with_capacity(per * mine.len());
                    let mut inflight = mine.len();
                    while inflight > 0 {
                        let Ok((slot, d)) = rx.recv() else { break };
                        lat.push(d);
                        left[slot] -= 1;
                        if left[slot] > 0 {
                            submit(slot, &mut rngs[slot]);
                        } else {
                            inflight -= 1;
                        }
                    }
                    lat
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("client thread"))
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut lat = lat;
    lat.sort_unstable();
    let st = log.stats();
    log.shutdown();
    AppendResult {
        writers,
        threads,
        events: lat.len(),
        secs,
        p50: pct(&lat, 0.50),
        p99: pct(&lat, 0.99),
        fsyncs: st.fsyncs,
        avg_event_bytes: st.bytes_written as f64 / st.events.max(1) as f64,
    }
}

struct SearchResult {
    events: usize,
    load_secs: f64,
    queries: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    avg_hits: f64,
    plan: String,
    text_p50: Duration,
    disk_mib: f64,
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn bench_search(n: usize) -> SearchResult {
    let dir = tempfile::tempdir().expect("tempdir");
    // One event per millisecond of injected time.
    let tick = Arc::new(AtomicI64::new(T0));
    let clock = tick.clone();
    let opts = Options {
        clock: Some(Arc::new(move || {
            clock.fetch_add(1_000_000, Ordering::Relaxed)
        })),
        ..Options::default()
    };
    let log = AuditLog::open(dir.path(), opts).expect("open");
    let start = Instant::now();
    let loaders = 64;
    let done = Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        for w in 0..loaders {
            let log = log.clone();
            let done = done.clone();
            s.spawn(move || {
                let mut rng = Rng(0xfeed + w as u64);
                let (tx, rx) = mpsc::sync_channel::<()>(64);
                let share = n / loaders + usize::from(w < n % loaders);
                // Keep up to 64 appends in flight per loader.
                let mut inflight = 0;
                for _ in 0..share {
                    if inflight == 64 {
                        let _ = rx.recv();
                        inflight -= 1;
                    }
                    let tx = tx.clone();
                    let done = done.clone();
                    log.append_with(
                        draft(&mut rng),
                        Box::new(move |r| {
                            r.expect("append");
                            done.fetch_add(1, Ordering::Relaxed);
                            let _ = tx.send(());
                        }),
                    );
                    inflight += 1;
                }
                for _ in 0..inflight {
                    let _ = rx.recv();
                }
            });
        }
    });
    let load_secs = start.elapsed().as_secs_f64();
    assert_eq!(log.last_seq(), n as u64);
    let span = n as i64 * 1_000_000;

    let mut rng = Rng(42);
    let mut lat = Vec::new();
    let mut hits = 0usize;
    let queries = 200;
    let mut plan = String::new();
    for i in 0..queries {
        // A window of 5–30% of the log's time span.
        let width = span * (5 + rng.below(26) as i64) / 100;
        let from = T0 + (rng.next() % (span - width).max(1) as u64) as i64;
        let q = Query {
            log: Some(LogKey::Project(format!(
                "project-{:02}",
                rng.below(PROJECTS)
            ))),
            action: Some(ACTIONS[rng.below(ACTIONS.len())].into()),
            from_ns: Some(from),
            to_ns: Some(from + width),
            limit: 50,
            ..Query::default()
        };
        if i == 0 {
            plan = log.explain(&q).unwrap_or_default();
        }
        let t = Instant::now();
        let page = log.search(&q).expect("search");
        lat.push(t.elapsed());
        hits += page.events.len();
    }
    lat.sort_unstable();
    let mut text_lat = Vec::new();
    for _ in 0..5 {
        let q = Query {
            log: Some(LogKey::Project(format!(
                "project-{:02}",
                rng.below(PROJECTS)
            ))),
            text: Some("USR_0001".into()),
            limit: 50,
            ..Query::default()
        };
        let t = Instant::now();
        log.search(&q).expect("text search");
        text_lat.push(t.elapsed());
    }
    text_lat.sort_unstable();
    let disk_mib = dir_size(dir.path()) as f64 / (1 << 20) as f64;
    log.shutdown();
    SearchResult {
        events: n,
        load_secs,
        queries,
        p50: pct(&lat, 0.5),
        p99: pct(&lat, 0.99),
        max: lat.last().copied().unwrap_or_default(),
        avg_hits: hits as f64 / queries as f64,
        plan,
        text_p50: pct(&text_lat, 0.5),
        disk_mib,
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or("unknown".into(), |kb| {
            format!("{:.1} GiB", kb / 1024.0 / 1024.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("unknown".into(), |s| s.trim().to_string());
    format!("nproc {cores}, memory {mem}, kernel {kernel}")
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

fn main() {
    let args = parse_args();
    let append_events = if args.quick {
        [500, 20_000, 50_000]
    } else {
        [2_000, 100_000, 300_000]
    };
    let mut appends = Vec::new();
    // One OS thread per writer (blocking `append`), then the same writer
    // counts driven by 4 client threads (`append_with`, as the server does).
    let runs = [(1, 1), (16, 16), (256, 256), (16, 4), (256, 4)];
    for (writers, threads) in runs {
        let events = append_events[match writers {
            1 => 0,
            16 => 1,
            _ => 2,
        }];
        let r = if threads == writers {
            bench_append(writers, events)
        } else {
            bench_append_async(writers, threads, events)
        };
        eprintln!(
            "append {:>3} writers on {:>3} threads: {:>8.0} events/s, p50 {:.2} ms, p99 {:.2} ms, {:.0} fsyncs/s",
            r.writers,
            r.threads,
            r.events as f64 / r.secs,
            ms(r.p50),
            ms(r.p99),
            r.fsyncs as f64 / r.secs
        );
        appends.push(r);
    }
    let s = bench_search(args.events);
    eprintln!(
        "search on {} events (loaded in {:.1} s): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {:.1} hits/page",
        s.events,
        s.load_secs,
        ms(s.p50),
        ms(s.p99),
        ms(s.max),
        s.avg_hits
    );

    let date = time::OffsetDateTime::now_utc().date();
    let command = format!(
        "cargo bench -p audit --bench audit --{}",
        std::env::args()
            .skip(1)
            .filter(|a| a != "--bench")
            .map(|a| format!(" {a}"))
            .collect::<String>()
    );
    let mut md = String::new();
    let _ = writeln!(md, "# Audit log benchmark, {date}\n");
    let _ = writeln!(md, "- machine: {}", machine());
    let _ = writeln!(md, "- command: `{}`", command.trim_end_matches(" --"));
    let _ = writeln!(
        md,
        "- storage: temp dir on the machine's root file system; every append waits for fsync + index\n"
    );
    let _ = writeln!(md, "## Durable append\n");
    let _ = writeln!(
        md,
        "| writers | client threads | events | events/s | p50 ack | p99 ack | fsyncs/s | events/fsync | avg frame bytes |"
    );
    let _ = writeln!(
        md,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in &appends {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.0} | {:.1} | {:.0} |",
            r.writers,
            r.threads,
            r.events,
            r.events as f64 / r.secs,
            ms(r.p50),
            ms(r.p99),
            r.fsyncs as f64 / r.secs,
            r.events as f64 / r.fsyncs.max(1) as f64,
            r.avg_event_bytes
        );
    }
    let _ = writeln!(md);
    for top in appends.iter().filter(|r| r.writers == 256) {
        let tput = top.events as f64 / top.secs;
        let _ = writeln!(
            md,
            "Target at 256 writers on {} threads: ≥ 50,000 events/s ({:.0}: {}) with p99 ≤ 50 ms ({:.2} ms: {}).",
            top.threads,
            tput,
            verdict(tput >= 50_000.0),
            ms(top.p99),
            verdict(ms(top.p99) <= 50.0)
        );
    }
    let _ = writeln!(md);
    let _ = writeln!(md, "## Search\n");
    let _ = writeln!(
        md,
        "{} events over {PROJECTS} projects and {} actions, loaded through the append path in {:.1} s ({:.0} events/s); audit dir {:.0} MiB (segments + index).\n",
        s.events,
        ACTIONS.len(),
        s.load_secs,
        s.events as f64 / s.load_secs,
        s.disk_mib
    );
    let _ = writeln!(md, "| query | runs | p50 | p99 | max | avg hits |");
    let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: |");
    let _ = writeln!(
        md,
        "| project + 5–30% time range + action, 50/page, newest first | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.1} |",
        s.queries,
        ms(s.p50),
        ms(s.p99),
        ms(s.max),
        s.avg_hits
    );
    let _ = writeln!(
        md,
        "| project + text `USR_0001` (case-insensitive), 50/page | 5 | {:.2} ms | | | |",
        ms(s.text_p50)
    );
    let _ = writeln!(
        md,
        "\nTarget: p99 ≤ 50 ms ({:.2} ms: {}). Plan: `{}`.",
        ms(s.p99),
        verdict(ms(s.p99) <= 50.0),
        s.plan
    );

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out_dir = root.join("bench/results");
    let path = out_dir.join(format!("audit-{date}.md"));
    if let Err(e) = std::fs::create_dir_all(&out_dir).and_then(|()| std::fs::write(&path, &md)) {
        eprintln!("cannot write {}: {e}", path.display());
    } else {
        eprintln!("wrote {}", path.display());
    }
    print!("{md}");
}
