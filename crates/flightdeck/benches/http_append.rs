//! End-to-end HTTP append benchmark: N concurrent writers (default 256)
//! post audit events to `POST /api/flightdeck/v1/projects/{project}/audit/events`
//! over keep-alive HTTP/1.1 connections; a separate task polls the
//! project's `GET …/audit/log/checkpoint` every 20 ms.
//!
//! Two ways to load the server:
//!
//! - **Closed loop** (default): each writer has one connection and sends
//!   its next request when the previous `201` is back. Throughput is what
//!   the server manages; latency is measured from the actual send.
//! - **Open loop** (`--rate EVENTS_PER_S`): the writers together *offer* a
//!   fixed rate on a fixed schedule — writer `w` sends its k-th request at
//!   `start + (w / writers + k) · period`, `period = writers · batch / rate`,
//!   whatever became of the earlier ones. Each writer has `--inflight K`
//!   connections (default 4), so up to K of its requests are outstanding;
//!   a slot whose connections are all busy waits, and that wait counts:
//!   latency runs from the *scheduled* send time, not from when the
//!   request finally left (no coordinated omission). Every request
//!   scheduled in the window is counted, however late its answer.
//!
//! Why the open loop is the reading of "≥ 50,000 events/s at 256 concurrent
//! writers, p99 ≤ 50 ms": in a closed loop the 256 writers hold 256 · batch
//! events in flight at all times, so by Little's law the mean latency *is*
//! 256 · batch / throughput — at 50k events/s, 51 ms for batches of 10
//! whatever the server does, and with single events the bare HTTP floor of
//! this machine is itself ~50k requests/s. A latency target at a given
//! throughput is a statement about a server *offered* that throughput:
//! p99 of the durable ack while 256 writers together send 50k events/s,
//! which is what `--rate 50000` measures. (Throughput capacity is still
//! read from the closed loop.)
//!
//! Measured per run: events/s (acknowledgements inside the measurement
//! window, after a warm-up), p50/p99/max latency of the `201` (send, or
//! scheduled send, → whole answer read), and checkpoint lag: for each
//! acknowledged event, the time from its `201` until a polled checkpoint's
//! tree size covers its `log_index` (answer read; 0 when the checkpoint was
//! there first). Poll granularity (20 ms plus one request) is part of the
//! lag.
//!
//! The server is either the release binary in a child process
//! (`--server binary`, the default: the program as deployed, and its CPU
//! time is reported apart from the load generator's; `--server-bin PATH`
//! runs another build of it, for before/after comparisons) or the same
//! router started in this process on port 0 (`--server in-process`: one
//! process to profile, and the audit writer's counters). Either way it is a
//! fresh data directory per run (under `--data-parent DIR`, by default
//! `target/release/bench-data`, see [`data_parent`]) and the load
//! generator shares the machine's cores with it.
//!
//! `--batch N` (default 1) makes each request carry N events as
//! `{"events": [...]}` (N = 1 keeps the single-event body); latency is then
//! that of the request, counted once per event, and throughput counts
//! events.
//!
//! Run: `cargo bench -p flightdeck --bench http_append [-- --runs 5
//! --writers 256 --batch 1 --seconds 10 --warmup 2 --server binary|in-process
//! --label after] [--rate 50000 --inflight 4] [--server-log audit=debug]
//! [--floor]`. Prints one Markdown row per run and a median row (the
//! server's log lines and the CPU time per event of each server thread go
//! to stderr); `--out FILE` appends the rows to FILE. `--floor` sends
//! `GET /-/healthy` instead: the same connections without authentication,
//! audit or disk, i.e. what HTTP alone costs on this machine.

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

const API: &str = "/api/flightdeck/v1";
const PROJECT: &str = "bench";

#[derive(Clone)]
struct Args {
    runs: usize,
    writers: usize,
    /// Events per request (`{"events": [...]}` above 1).
    batch: usize,
    seconds: f64,
    warmup: f64,
    in_process: bool,
    label: String,
    out: Option<String>,
    /// Extra tracing filter for the binary server (its log goes to stderr).
    server_log: String,
    /// `GET /-/healthy` instead of appends: the HTTP floor of this machine
    /// (no authentication, no audit, no disk), for comparison.
    floor: bool,
    /// Open loop: events per second offered by all writers together, on a
    /// fixed schedule (`None`: closed loop).
    rate: Option<f64>,
    /// Open loop: connections (so requests in flight) per writer.
    inflight: usize,
    /// The server binary (`--server binary`); default: the one cargo built.
    server_bin: Option<String>,
    /// Where each run's data directory is made (see [`data_parent`]).
    data_parent: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        runs: 1,
        writers: 256,
        batch: 1,
        seconds: 10.0,
        warmup: 2.0,
        in_process: false,
        label: String::new(),
        out: None,
        server_log: String::new(),
        floor: false,
        rate: None,
        inflight: 4,
        server_bin: None,
        data_parent: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_default();
        match arg.as_str() {
            "--runs" => a.runs = val().parse().expect("--runs N"),
            "--writers" => a.writers = val().parse().expect("--writers N"),
            "--batch" => a.batch = val().parse().expect("--batch N (1 to 100)"),
            "--seconds" => a.seconds = val().parse().expect("--seconds S"),
            "--warmup" => a.warmup = val().parse().expect("--warmup S"),
            "--server" => {
                a.in_process = match val().as_str() {
                    "binary" => false,
                    "in-process" => true,
                    o => panic!("--server binary|in-process, not {o:?}"),
                }
            }
            "--label" => a.label = val(),
            "--out" => a.out = Some(val()),
            "--server-log" => a.server_log = val(),
            "--floor" => a.floor = true,
            "--rate" => a.rate = Some(val().parse().expect("--rate EVENTS_PER_S")),
            "--inflight" => a.inflight = val().parse().expect("--inflight K (at least 1)"),
            "--server-bin" => a.server_bin = Some(val()),
            "--data-parent" => a.data_parent = Some(val()),
            _ => {} // `cargo bench` passes `--bench`.
        }
    }
    assert!(a.inflight >= 1, "--inflight K needs K >= 1");
    assert!(
        a.rate.is_none_or(|r| r > 0.0),
        "--rate EVENTS_PER_S needs a positive rate"
    );
    a
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    send: SendRequest<String>,
    host: String,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the server");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Conn {
            send,
            host: addr.to_string(),
        }
    }

    /// One request; the status and the whole body.
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<String>,
    ) -> (u16, Vec<u8>) {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("authorization", format!("Bearer {token}"));
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let req = b.body(body.unwrap_or_default()).expect("a valid request");
        self.send.ready().await.expect("connection ready");
        let resp = self.send.send_request(req).await.expect("an answer");
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .expect("the answer's body")
            .to_bytes()
            .to_vec();
        (status, bytes)
    }
}

/// Every `"log_index":N` of a returned event or batch, in order, without
/// a JSON parse (no submitted field is named `log_index`).
fn log_indexes(body: &[u8]) -> Vec<u64> {
    let key = b"\"log_index\":";
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.windows(key.len()).position(|w| w == key) {
        rest = &rest[at + key.len()..];
        out.push(
            rest.iter()
                .take_while(|b| b.is_ascii_digit())
                .fold(0, |n, b| n * 10 + u64::from(b - b'0')),
        );
    }
    assert!(
        !out.is_empty(),
        "no log_index in {}",
        String::from_utf8_lossy(body)
    );
    out
}

/// The tree size line of a checkpoint.
fn checkpoint_size(body: &[u8]) -> Option<u64> {
    std::str::from_utf8(body).ok()?.lines().nth(1)?.parse().ok()
}

fn event_body(writer: usize, i: u64) -> String {
    format!(
        concat!(
            r#"{{"action":"ci.deploy.finish","event_source":"ci.pipeline","external_id":"w{}-{}","#,
            r#""resource":{{"type":"service","id":"api-{}","name":"checkout api"}},"#,
            r#""result":{{"status":"success","http_status":200}},"#,
            r#""request_parameters":{{"version":"4.2.{}","commit":"{:040x}","environment":"production","replicas":3}}}}"#
        ),
        writer,
        i,
        writer % 16,
        i,
        (writer as u128) << 64 | u128::from(i)
    )
}

/// The directory the runs' data directories are made in: `--data-parent`,
/// else `bench-data/` beside the bench executable's profile directory
/// (`target/release/bench-data`), not `/tmp`. Why: ext4 without a journal
/// (this machine's disk) skips inodes freed in the last 5–10 s when it
/// allocates one (60 s, 360 s while the inode table block is dirty),
/// testing each with a buffer-cache lookup (`recently_deleted`); a file
/// created in a block group where thousands of files were just deleted
/// (`/tmp` on a machine where compilers churn temporary files) pays for
/// every one of them: 11–14 % of the server's CPU here, in the tile files'
/// `open(O_CREAT)`. A deployed server's data directory is not a shared
/// scratch directory either. For the same reason a run's files are emptied
/// rather than removed ([`empty_files`]).
fn data_parent(a: &Args) -> std::path::PathBuf {
    let dir = match &a.data_parent {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join("bench-data")))
            .unwrap_or_else(std::env::temp_dir),
    };
    std::fs::create_dir_all(&dir).expect("the bench data directory");
    dir
}

/// A server for one run, and how to stop it.
enum Running {
    Child(Child),
    InProcess {
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
        audit: audit::AuditLog,
    },
}

struct Server {
    addr: SocketAddr,
    admin_token: String,
    running: Running,
    /// Emptied, not removed, when the run ends (see [`empty_files`]).
    dir: Option<tempfile::TempDir>,
}

impl Server {
    fn binary(parent: &Path, bin: Option<&str>, log_level: &str) -> Server {
        let log_level = format!("warn,flightdeck=info,{log_level}");
        let dir = tempfile::tempdir_in(parent).expect("tempdir");
        let mut child = Command::new(bin.unwrap_or(env!("CARGO_BIN_EXE_flightdeck")))
            .args(["serve", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0", "--log-level", &log_level])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn flightdeck");
        let mut token = String::new();
        for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
            let line = line.expect("stdout line");
            if let Some(t) = line.strip_prefix("admin token: ") {
                token = t.to_string();
                break;
            }
        }
        let stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if let Some(i) = line.find("address=") {
                    let a = line[i + 8..].split_whitespace().next().unwrap_or("");
                    let _ = tx.send(a.to_string());
                } else if !line.contains("flightdeck listening") {
                    eprintln!("server: {line}");
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server printed its address");
        Server {
            addr: addr.parse().expect("a socket address"),
            admin_token: token,
            running: Running::Child(child),
            dir: Some(dir),
        }
    }

    fn in_process(parent: &Path) -> Server {
        let dir = tempfile::tempdir_in(parent).expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let audit = audit::AuditLog::open(&data.join("audit"), audit::Options::default())
            .expect("open the audit log");
        let meta = Arc::new(meta::Meta::open(&data.join("meta.sqlite")).expect("open meta"));
        let clock = server::system_clock();
        let (_, token) = server::bootstrap::first_start(&meta, &audit, "acme", clock())
            .expect("first start")
            .expect("a fresh directory");
        let state = server::AppState::new(
            meta,
            audit.clone(),
            "acme".into(),
            server::ServerOptions::default(),
            clock,
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("server")
                .build()
                .expect("server runtime");
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).expect("listener");
                server::serve(l, state, async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
            });
        });
        Server {
            addr,
            admin_token: token,
            running: Running::InProcess {
                stop: Some(stop),
                thread: Some(thread),
                audit,
            },
            dir: Some(dir),
        }
    }

    fn pid(&self) -> Option<u32> {
        match &self.running {
            Running::Child(c) => Some(c.id()),
            Running::InProcess { .. } => None,
        }
    }

    fn stats(&self) -> Option<audit::Stats> {
        match &self.running {
            Running::InProcess { audit, .. } => Some(audit.stats()),
            Running::Child(_) => None,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        match &mut self.running {
            Running::Child(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Running::InProcess {
                stop,
                thread,
                audit,
            } => {
                if let Some(s) = stop.take() {
                    let _ = s.send(());
                }
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
                audit.shutdown();
            }
        }
        if let Some(d) = self.dir.take() {
            empty_files(&d.keep());
        }
    }
}

/// Truncates every file under `dir` to nothing, leaving the (empty) files
/// and directories in place: the disk space comes back, the inodes stay
/// allocated. Removing a run's thousands of tile files would make every
/// file the next runs create within the following 1–6 minutes slower:
/// ext4 without a journal (this machine's disk) does not reuse an inode
/// freed less than 60 s ago (360 s while its inode table block is dirty)
/// and checks each such free inode of the group with a buffer-cache lookup
/// on every allocation (`recently_deleted`). Measured: 11–26 % of the
/// server's CPU went there in runs started right after a removal. Remove
/// `bench-data/` by hand once done.
fn empty_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => empty_files(&e.path()),
            Ok(t) if t.is_file() => {
                if let Ok(f) = std::fs::OpenOptions::new().write(true).open(e.path()) {
                    let _ = f.set_len(0);
                }
            }
            _ => {}
        }
    }
}

/// User + system CPU seconds of a process (`/proc/<pid>/stat`).
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesized command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// CPU seconds per thread name of a process (`/proc/<pid>/task/*/stat`):
/// where the server's time goes (runtime workers, audit threads…).
fn cpu_by_thread(pid: &str) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let tid = t.file_name().to_string_lossy().into_owned();
        let name = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        *out.entry(name).or_insert(0.0) += cpu_seconds(&format!("{pid}/task/{tid}"));
    }
    out
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// One acknowledged event.
struct Ack {
    sent: Instant,
    acked: Instant,
    log_index: u64,
}

struct Run {
    load: String,
    events: usize,
    events_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
    lag_max_ms: f64,
    server_cpu: Option<f64>,
    client_cpu: f64,
    per_fsync: Option<f64>,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn setup(addr: SocketAddr, admin: &str) -> String {
    let mut c = Conn::open(addr).await;
    let (s, b) = c
        .call(
            "POST",
            &format!("{API}/projects"),
            admin,
            Some(format!(r#"{{"name":"{PROJECT}"}}"#)),
        )
        .await;
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
    let (s, b) = c
        .call(
            "POST",
            &format!("{API}/projects/{PROJECT}/tokens"),
            admin,
            Some(r#"{"name":"bench","scopes":["audit:write","audit:read"]}"#.into()),
        )
        .await;
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
    let v: serde_json::Value = serde_json::from_slice(&b).expect("JSON");
    v["secret"].as_str().expect("a secret").to_string()
}

/// The request body of events `i..i + batch` of writer `w`.
fn request_body(w: usize, i: u64, batch: usize) -> String {
    if batch == 1 {
        event_body(w, i)
    } else {
        let events: Vec<String> = (0..batch as u64).map(|k| event_body(w, i + k)).collect();
        format!(r#"{{"events":[{}]}}"#, events.join(","))
    }
}

/// Posts one request and turns its `201` into one [`Ack`] per event, all
/// with latency counted from `sent` (the scheduled time in the open loop).
async fn append(
    conn: &mut Conn,
    path: &str,
    token: &str,
    body: String,
    sent: Instant,
    batch: usize,
    acks: &mut Vec<Ack>,
) {
    let (status, resp) = conn.call("POST", path, token, Some(body)).await;
    let acked = Instant::now();
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&resp));
    let indexes = log_indexes(&resp);
    assert_eq!(indexes.len(), batch, "one log_index per event");
    for log_index in indexes {
        acks.push(Ack {
            sent,
            acked,
            log_index,
        });
    }
}

/// Runs the writers and the checkpoint poller; returns when the load
/// started (connections open), every acknowledged event, and the polled
/// checkpoint sizes with when they were seen.
async fn drive(
    addr: SocketAddr,
    token: String,
    a: &Args,
) -> (Instant, Vec<Ack>, Vec<(Instant, u64)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let token = Arc::new(token);
    // Open every connection first, so that the run measures appends.
    let per_writer = if a.rate.is_some() { a.inflight } else { 1 };
    let mut conns = Vec::with_capacity(a.writers * per_writer);
    for _ in 0..a.writers * per_writer {
        conns.push(Conn::open(addr).await);
    }
    let path = format!("{API}/projects/{PROJECT}/audit/events");
    let mut tasks = Vec::new();
    let floor = a.floor;
    let batch = a.batch.max(1);
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(a.warmup + a.seconds);
    if let Some(rate) = a.rate {
        // Open loop: writer w sends its k-th request at
        // started + (w / writers + k) * period, whatever happened to the
        // earlier ones (the writers' schedules are staggered evenly over
        // one period). Each of its `inflight` connections takes the next
        // unsent slot when it is free; latency runs from the slot's
        // scheduled time, so a request that waited for a connection counts
        // that wait (no coordinated omission).
        let period = Duration::from_secs_f64(a.writers as f64 * batch as f64 / rate);
        let mut conns = conns.into_iter();
        for w in 0..a.writers {
            let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let offset = period.mul_f64(w as f64 / a.writers as f64);
            for mut conn in conns.by_ref().take(per_writer) {
                let (next, token, path) = (next.clone(), token.clone(), path.clone());
                tasks.push(tokio::spawn(async move {
                    let mut acks = Vec::with_capacity(1 << 10);
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let at = started + offset + period.mul_f64(k as f64);
                        if at >= end {
                            break;
                        }
                        tokio::time::sleep_until(at.into()).await;
                        if floor {
                            let (status, _) = conn.call("GET", "/-/healthy", &token, None).await;
                            assert_eq!(status, 200);
                            acks.push(Ack {
                                sent: at,
                                acked: Instant::now(),
                                log_index: 0,
                            });
                            continue;
                        }
                        let body = request_body(w, k * batch as u64, batch);
                        append(&mut conn, &path, &token, body, at, batch, &mut acks).await;
                    }
                    acks
                }));
            }
        }
    } else {
        // Closed loop: each writer sends its next request when the previous
        // one is answered.
        for (w, mut conn) in conns.into_iter().enumerate() {
            let (stop, token, path) = (stop.clone(), token.clone(), path.clone());
            tasks.push(tokio::spawn(async move {
                let mut acks = Vec::with_capacity(1 << 12);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    if floor {
                        let (status, _) = conn.call("GET", "/-/healthy", &token, None).await;
                        assert_eq!(status, 200);
                        acks.push(Ack {
                            sent,
                            acked: Instant::now(),
                            log_index: 0,
                        });
                        continue;
                    }
                    append(
                        &mut conn,
                        &path,
                        &token,
                        request_body(w, i, batch),
                        sent,
                        batch,
                        &mut acks,
                    )
                    .await;
                    i += batch as u64;
                }
                acks
            }));
        }
    }
    // The checkpoint poller: its own connection, every 20 ms.
    let poll_stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (poll_stop, token) = (poll_stop.clone(), token.clone());
        let mut conn = Conn::open(addr).await;
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let path = format!("{API}/projects/{PROJECT}/audit/log/checkpoint");
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !poll_stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let (status, body) = conn.call("GET", &path, &token, None).await;
                if status == 200 {
                    let size = checkpoint_size(&body).expect("a checkpoint");
                    seen.push((Instant::now(), size));
                }
            }
            seen
        })
    };
    tokio::time::sleep_until(end.into()).await;
    stop.store(true, Ordering::Relaxed);
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await.expect("writer"));
    }
    // Let the poller see the last acknowledged event covered (or give up).
    let top = acks.iter().map(|a| a.log_index).max().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut c = Conn::open(addr).await;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (s, b) = c
            .call(
                "GET",
                &format!("{API}/projects/{PROJECT}/audit/log/checkpoint"),
                &token,
                None,
            )
            .await;
        if s == 200 && checkpoint_size(&b).is_some_and(|n| n > top) {
            tokio::time::sleep(Duration::from_millis(40)).await;
            break;
        }
    }
    poll_stop.store(true, Ordering::Relaxed);
    let seen = poller.await.expect("poller");
    (started, acks, seen)
}

fn run_once(a: &Args) -> Run {
    let load = loadavg();
    let server = if a.in_process {
        Server::in_process(&data_parent(a))
    } else {
        Server::binary(&data_parent(a), a.server_bin.as_deref(), &a.server_log)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("load")
        .build()
        .expect("client runtime");
    let token = rt.block_on(setup(server.addr, &server.admin_token));
    let spid = server.pid().map(|p| p.to_string());
    let (s_cpu0, c_cpu0) = (spid.as_deref().map(cpu_seconds), cpu_seconds("self"));
    let stats0 = server.stats();
    let self_pid = std::process::id().to_string();
    let threads0 = cpu_by_thread(spid.as_deref().unwrap_or(&self_pid));
    let (start, acks, seen) = rt.block_on(drive(server.addr, token, a));
    let threads1 = cpu_by_thread(spid.as_deref().unwrap_or(&self_pid));
    let (s_cpu1, c_cpu1) = (spid.as_deref().map(cpu_seconds), cpu_seconds("self"));
    let stats1 = server.stats();
    drop(rt);
    drop(server);

    let from = start + Duration::from_secs_f64(a.warmup);
    let to = from + Duration::from_secs_f64(a.seconds);
    // Closed loop: requests sent and answered inside the window. Open loop:
    // every request scheduled inside it, however late its answer (leaving
    // out the late ones would hide exactly what the open loop measures).
    let window: Vec<&Ack> = acks
        .iter()
        .filter(|x| x.sent >= from && (a.rate.is_some() || x.acked <= to) && x.sent < to)
        .collect();
    let mut lat: Vec<f64> = window
        .iter()
        .map(|x| (x.acked - x.sent).as_secs_f64() * 1e3)
        .collect();
    lat.sort_by(f64::total_cmp);
    let mut lag: Vec<f64> = window
        .iter()
        .filter(|_| !a.floor)
        .map(|x| {
            let k = seen.partition_point(|(_, size)| *size <= x.log_index);
            match seen.get(k) {
                Some((t, _)) => t.saturating_duration_since(x.acked).as_secs_f64() * 1e3,
                None => f64::INFINITY,
            }
        })
        .collect();
    lag.sort_by(f64::total_cmp);
    let acked_in_window = acks
        .iter()
        .filter(|x| x.acked >= from && x.acked <= to)
        .count();
    let total_events = acks.len().max(1) as f64;
    let by_thread: Vec<String> = threads1
        .iter()
        .map(|(name, t1)| (name, t1 - threads0.get(name).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d >= 0.05)
        .map(|(name, d)| format!("{name} {:.0}", d * 1e6 / total_events))
        .collect();
    eprintln!(
        "CPU µs per event by {} thread: {}",
        if a.in_process { "process" } else { "server" },
        by_thread.join(", ")
    );
    let per_fsync = match (stats0, stats1) {
        (Some(s0), Some(s1)) if s1.batches > s0.batches => {
            Some((s1.events - s0.events) as f64 / (s1.batches - s0.batches) as f64)
        }
        _ => None,
    };
    Run {
        load,
        events: acked_in_window,
        events_per_s: acked_in_window as f64 / a.seconds,
        p50_ms: pct(&lat, 0.50),
        p99_ms: pct(&lat, 0.99),
        max_ms: lat.last().copied().unwrap_or(f64::NAN),
        lag_p50_ms: pct(&lag, 0.50),
        lag_p99_ms: pct(&lag, 0.99),
        lag_max_ms: lag.last().copied().unwrap_or(f64::NAN),
        server_cpu: s_cpu1.zip(s_cpu0).map(|(b, a)| b - a),
        client_cpu: c_cpu1 - c_cpu0,
        per_fsync,
    }
}

fn row(label: &str, a: &Args, r: &Run) -> String {
    let opt = |v: Option<f64>, digits: usize| v.map_or("".to_string(), |v| format!("{v:.digits$}"));
    format!(
        "| {label} | {} | {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.1} | {:.0} | {:.0} | {:.0} | {} | {:.1} | {} |",
        if a.in_process { "in-process" } else { "binary" },
        a.writers,
        a.batch,
        a.rate.map_or("closed".to_string(), |r| format!("{r:.0}")),
        r.load,
        r.events,
        r.events_per_s,
        r.p50_ms,
        r.p99_ms,
        r.max_ms,
        r.lag_p50_ms,
        r.lag_p99_ms,
        r.lag_max_ms,
        opt(r.server_cpu, 1),
        r.client_cpu,
        opt(r.per_fsync, 1),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn main() {
    let a = parse_args();
    let header = "| run | server | writers | events/request | offered events/s | load avg (1/5/15) | events | events/s | p50 ack ms | p99 ack ms | max ack ms | lag p50 ms | lag p99 ms | lag max ms | server CPU s | client CPU s | events/fsync |\n| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |";
    println!("{header}");
    let mut runs = Vec::new();
    let mut lines = Vec::new();
    for i in 0..a.runs {
        let r = run_once(&a);
        let label = format!(
            "{}{}",
            a.label,
            if a.runs > 1 {
                format!(" #{}", i + 1)
            } else {
                String::new()
            }
        );
        let line = row(label.trim(), &a, &r);
        println!("{line}");
        lines.push(line);
        runs.push(r);
    }
    if a.runs > 1 {
        let m = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
        let med = Run {
            load: "".into(),
            events: m(|r| r.events as f64) as usize,
            events_per_s: m(|r| r.events_per_s),
            p50_ms: m(|r| r.p50_ms),
            p99_ms: m(|r| r.p99_ms),
            max_ms: m(|r| r.max_ms),
            lag_p50_ms: m(|r| r.lag_p50_ms),
            lag_p99_ms: m(|r| r.lag_p99_ms),
            lag_max_ms: m(|r| r.lag_max_ms),
            server_cpu: runs[0]
                .server_cpu
                .map(|_| m(|r| r.server_cpu.unwrap_or(0.0))),
            client_cpu: m(|r| r.client_cpu),
            per_fsync: runs[0].per_fsync.map(|_| m(|r| r.per_fsync.unwrap_or(0.0))),
        };
        let line = row(&format!("**{} median of {}**", a.label, a.runs), &a, &med);
        println!("{line}");
        lines.push(line);
    }
    if let Some(path) = &a.out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open --out");
        for l in &lines {
            writeln!(f, "{l}").expect("write --out");
        }
    }
}
