//! Test harness: a Flightdeck server on an ephemeral port, either the real
//! binary in a child process (first-start output, kill -9) or the same
//! server wired in-process (fault injection, an injected clock), and a
//! small blocking HTTP client over ureq.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub const API: &str = "/api/flightdeck/v1";

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy for binary bodies; see `bytes`).
    pub body: String,
    pub bytes: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The error code of an error answer.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// One request; never fails on HTTP error statuses.
pub fn call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
) -> Resp {
    try_call(method, url, headers, body)
        .unwrap_or_else(|e| panic!("{method} {url}: transport error {e}"))
}

/// One request; `Err` only for transport errors (refused, reset).
pub fn try_call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
) -> Result<Resp, ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let result = match body {
        Some((ct, bytes)) => {
            let req = b.header("content-type", ct).body(bytes).unwrap();
            agent.run(req)
        }
        None => agent.run(b.body(()).unwrap()),
    };
    let resp = result?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = resp
        .into_body()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap_or_default();
    Ok(Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        bytes: body,
    })
}

enum Kind {
    Process(Child),
    InProcess {
        shutdown: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
        state: server::AppState,
    },
    Stopped,
}

/// A running server and the admin credentials of its first start.
pub struct Server {
    pub url: String,
    pub token: String,
    pub password: String,
    pub data_dir: PathBuf,
    /// The in-process server's clock (unix ns), settable by tests.
    pub clock: Arc<AtomicI64>,
    kind: Kind,
    _tmp: Option<tempfile::TempDir>,
}

pub fn now_ns() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap()
}

/// The real binary's path.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_flightdeck")
}

/// Starts the binary on `dir`; returns the child, its address and the
/// admin lines it printed (empty after the first start).
pub fn spawn_binary(dir: &Path, extra: &[&str]) -> (Child, String, Vec<String>) {
    let first_start = !dir.join("meta.sqlite").exists();
    let mut child = Command::new(bin())
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--log-level", "info"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flightdeck");
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("address=") {
                let addr = line[i + 8..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let _ = tx.send(addr);
            }
        }
    });
    let stdout = child.stdout.take().unwrap();
    let (ltx, lrx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = ltx.send(line);
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server did not report its address");
    // The admin lines are printed before the listener starts; on a first
    // start, wait until the reader thread has both.
    let mut lines: Vec<String> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        lines.extend(lrx.try_iter());
        let done = lines.iter().any(|l| l.starts_with("admin token: "));
        if done || std::time::Instant::now() > deadline {
            break;
        }
        if !first_start {
            // Give a restart a moment to (wrongly) print credentials.
            std::thread::sleep(Duration::from_millis(100));
            lines.extend(lrx.try_iter());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (child, format!("http://{addr}"), lines)
}

fn admin_value(lines: &[String], key: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key).map(str::to_string))
        .unwrap_or_default()
}

impl Server {
    /// The real binary on a fresh data directory.
    pub fn binary() -> Server {
        Server::binary_with(&[])
    }

    /// The real binary on a fresh data directory, with extra `serve` flags.
    pub fn binary_with(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let (child, url, lines) = spawn_binary(&dir, extra);
        Server {
            url,
            token: admin_value(&lines, "admin token: "),
            password: admin_value(&lines, "admin password: "),
            data_dir: dir,
            clock: Arc::new(AtomicI64::new(0)),
            kind: Kind::Process(child),
            _tmp: Some(tmp),
        }
    }

    /// The server wired in-process, with fault injection and a settable clock.
    pub fn in_process(faults: diskio::Faults, opts: server::ServerOptions) -> Server {
        Server::in_process_with(
            audit::Options {
                faults,
                ..Default::default()
            },
            opts,
        )
    }

    /// [`Server::in_process`] with the audit log's options given.
    pub fn in_process_with(audit_opts: audit::Options, opts: server::ServerOptions) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(&dir).unwrap();
        let clock = Arc::new(AtomicI64::new(now_ns()));
        let c2 = clock.clone();
        let server_clock: server::Clock = Arc::new(move || c2.load(Ordering::SeqCst));
        let audit = audit::AuditLog::open(&dir.join("audit"), audit_opts).unwrap();
        let meta = Arc::new(meta::Meta::open(&dir.join("meta.sqlite")).unwrap());
        let (password, token) =
            server::bootstrap::first_start(&meta, &audit, "acme", clock.load(Ordering::SeqCst))
                .unwrap()
                .unwrap();
        let state = server::AppState::new(meta, audit, "acme".into(), opts, server_clock);
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", std_listener.local_addr().unwrap());
        let (stx, srx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                server::serve(listener, st, async {
                    let _ = srx.await;
                })
                .await
                .unwrap();
            });
        });
        Server {
            url,
            token,
            password,
            data_dir: dir,
            clock,
            kind: Kind::InProcess {
                shutdown: Some(stx),
                thread: Some(thread),
                state,
            },
            _tmp: Some(tmp),
        }
    }

    pub fn state(&self) -> &server::AppState {
        match &self.kind {
            Kind::InProcess { state, .. } => state,
            _ => panic!("bug in test: state() needs an in-process server"),
        }
    }

    /// Sends SIGKILL to the child process and waits for it.
    pub fn kill9(&mut self) {
        if let Kind::Process(c) = &mut self.kind {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        self.kind = Kind::Stopped;
    }

    /// Restarts the binary on the same data directory (after kill9).
    pub fn restart(&mut self) -> Vec<String> {
        let (child, url, lines) = spawn_binary(&self.data_dir, &[]);
        self.url = url;
        self.kind = Kind::Process(child);
        lines
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    pub fn get(&self, path: &str) -> Resp {
        self.get_as(&self.token, path)
    }

    pub fn get_as(&self, token: &str, path: &str) -> Resp {
        call(
            "GET",
            &self.url(path),
            &[("authorization", &format!("Bearer {token}"))],
            None,
        )
    }

    pub fn send(&self, method: &str, path: &str, body: Value) -> Resp {
        let a = self.auth();
        self.send_as_raw(method, path, &a, body)
    }

    pub fn send_as(&self, token: &str, method: &str, path: &str, body: Value) -> Resp {
        self.send_as_raw(method, path, &format!("Bearer {token}"), body)
    }

    fn send_as_raw(&self, method: &str, path: &str, auth: &str, body: Value) -> Resp {
        call(
            method,
            &self.url(path),
            &[("authorization", auth)],
            Some(("application/json", body.to_string().into_bytes())),
        )
    }

    /// Creates a project as admin.
    pub fn project(&self, name: &str) {
        let r = self.send(
            "POST",
            &format!("{API}/projects"),
            serde_json::json!({"name": name}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }

    /// Creates a token in a project as admin; returns (id, secret).
    pub fn token_in(&self, project: &str, scopes: &[&str]) -> (String, String) {
        let r = self.send(
            "POST",
            &format!("{API}/projects/{project}/tokens"),
            serde_json::json!({"name": "t", "scopes": scopes}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let v = r.json();
        (
            v["token"]["id"].as_str().unwrap().to_string(),
            v["secret"].as_str().unwrap().to_string(),
        )
    }

    /// Audit events of a project (or the org with `None`), newest first.
    pub fn events(&self, project: Option<&str>, query: &str) -> Vec<Value> {
        let path = match project {
            Some(p) => format!("{API}/projects/{p}/audit/events?limit=1000&{query}"),
            None => format!("{API}/audit/events?limit=1000&{query}"),
        };
        let r = self.get(&path);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["events"].as_array().unwrap().clone()
    }

    /// The newest event with this action, in a project's or the org's log.
    pub fn last_event(&self, project: Option<&str>, action: &str) -> Value {
        self.events(project, &format!("action={action}"))
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no {action} event in {project:?}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.kind, Kind::Stopped) {
            Kind::Process(mut c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Kind::InProcess {
                mut shutdown,
                mut thread,
                state,
            } => {
                if let Some(s) = shutdown.take() {
                    let _ = s.send(());
                }
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
                state.audit.shutdown();
            }
            Kind::Stopped => {}
        }
    }
}
