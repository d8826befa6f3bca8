//! Shared plumbing for the tests that drive real third-party clients
//! (Debian's `prometheus` and `prometheus-node-exporter`, the OpenTelemetry
//! Python SDK, Python's `prometheus-client`): finding them, the
//! missing-tool rule, child processes that are always reaped, polling
//! with a deadline, and Prometheus query answers in a comparable form.
//!
//! Missing-tool rule: a test whose client is not installed prints
//! `REAL CLIENT MISSING: <name>` and fails when `CI=true` (CI installs
//! them, see `.ci/run`); elsewhere it passes with that message, so a
//! developer without the tools can still run the suite.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Applies the missing-tool rule: panics under CI, else prints and
/// returns `None` so the caller can return early.
pub fn missing<T>(name: &str, hint: &str) -> Option<T> {
    eprintln!("REAL CLIENT MISSING: {name} ({hint})");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("REAL CLIENT MISSING: {name} ({hint}); CI must install it (.ci/run)");
    }
    None
}

/// A program given by `env_var`, else found on `PATH` as `name`.
pub fn program(name: &str, env_var: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Some(p)
        } else {
            missing(name, &format!("{env_var}={} does not exist", p.display()))
        };
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.or_else(|| {
        missing(
            name,
            &format!("not on PATH and {env_var} unset; apt-get install {name}"),
        )
    })
}

/// The Python with the pip packages the client tests need
/// (`FLIGHTDECK_PYTHON`, else `python3`), checked by importing `modules`.
pub fn python(modules: &[&str]) -> Option<PathBuf> {
    let py = std::env::var_os("FLIGHTDECK_PYTHON")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from("python3"), PathBuf::from);
    let imports = format!("import {}", modules.join(", "));
    let ok = Command::new(&py)
        .args(["-c", &imports])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Some(py)
    } else {
        missing(
            &format!("python packages for `{imports}`"),
            &format!(
                "{} cannot import them; set FLIGHTDECK_PYTHON to the venv .ci/run makes",
                py.display()
            ),
        )
    }
}

/// A test script of ours under `tests/e2e/clients/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e/clients")
        .join(name)
}

/// A port that was free a moment ago (for programs that cannot be told
/// to pick one and report it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process whose output goes to a log file; killed and reaped on
/// drop. [`Proc::log`] shows the output in failure messages.
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Proc {
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// The last 4 KB of the process' output.
    pub fn log(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = s.len().saturating_sub(4096);
        let start = (start..s.len())
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(0);
        format!("--- {} output ---\n{}", self.name, &s[start..])
    }

    /// Panics with the output if the process has exited.
    pub fn check_running(&mut self) {
        if let Some(st) = self.child.try_wait().unwrap() {
            panic!("{} exited ({st}):\n{}", self.name, self.log());
        }
    }

    /// Waits for the process to exit by itself; panics with its output on
    /// a failure exit or after `timeout`.
    pub fn wait_success(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "{} failed ({st}):\n{}", self.name, self.log());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {timeout:?}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 200 ms until it returns `Some`; panics after `timeout`
/// with `what` and the last `Err` explanation.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(why) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}: {why}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Series labels, sorted by name.
pub type SeriesKey = BTreeMap<String, String>;

/// One series' points as the Prometheus API renders them: timestamp in ms
/// and the value string (floats) or the histogram object as JSON text.
pub type Points = Vec<(i64, String)>;

/// The `data.result` of a Prometheus `/api/v1/query` answer (vector or
/// matrix), keyed by labels. Panics on an error answer.
pub fn result_by_series(answer: &Value) -> BTreeMap<SeriesKey, Points> {
    assert_eq!(answer["status"], "success", "{answer}");
    let mut out = BTreeMap::new();
    for r in answer["data"]["result"].as_array().expect("result array") {
        let key: SeriesKey = r["metric"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let mut points = Points::new();
        let mut push = |p: &Value, histogram: bool| {
            let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
            let v = if histogram {
                p[1].to_string()
            } else {
                p[1].as_str().unwrap().to_string()
            };
            points.push((t, v));
        };
        if let Some(v) = r.get("value") {
            push(v, false);
        }
        if let Some(h) = r.get("histogram") {
            push(h, true);
        }
        for v in r["values"].as_array().into_iter().flatten() {
            push(v, false);
        }
        for h in r["histograms"].as_array().into_iter().flatten() {
            push(h, true);
        }
        points.sort_by_key(|p| p.0);
        assert!(
            out.insert(key.clone(), points).is_none(),
            "series twice in one answer: {key:?}"
        );
    }
    out
}

/// The labels of a series, from `name{a="b",…}` pairs.
pub fn key(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
    let mut k: SeriesKey = labels
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    k.insert("__name__".into(), name.into());
    k
}

/// Percent-encodes a query parameter value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// GET `path` on Flightdeck as `token`; the answer must be 200 JSON.
pub fn fd_get(s: &crate::harness::Server, token: &str, path: &str) -> Value {
    let r = s.get_as(token, path);
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    r.json()
}

/// An instant query on Flightdeck now, by series.
pub fn fd_instant(
    s: &crate::harness::Server,
    token: &str,
    query: &str,
) -> BTreeMap<SeriesKey, Points> {
    result_by_series(&fd_get(
        s,
        token,
        &format!("/api/v1/query?query={}", enc(query)),
    ))
}
