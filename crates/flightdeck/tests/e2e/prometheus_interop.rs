//! The real Prometheus (Debian's 2.42) scraping real targets and
//! remote-writing to Flightdeck with basic auth: everything Prometheus
//! stored must be in Flightdeck unchanged — every series with the same
//! labels, every sample with the same timestamp and the same value string —
//! as shown by asking both the same range-selector query and comparing the
//! answers exactly.
//!
//! The targets: a fixture of ours serving fixed exposition text with the
//! awkward cases (escaped and non-ASCII label values, an empty label
//! value, NaN/±Inf/-0/1e-300, explicit timestamps, a classic histogram and a
//! summary, an untyped metric), Prometheus itself (its own histograms and
//! summaries), and `prometheus-node-exporter` (about a thousand real
//! series). Prometheus' own metadata is compared too, and its remote-write
//! queue must report no failed or dropped samples.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Server, call};
use crate::real_clients::{
    Proc, SeriesKey, enc, free_port, key, program, result_by_series, wait_for,
};

/// The range of the compared query.
const WINDOW_S: i64 = 8;

#[test]
fn prometheus_remote_write_arrives_intact() {
    let Some(prometheus) = program("prometheus", "FLIGHTDECK_PROMETHEUS") else {
        return;
    };
    let node_exporter = program("prometheus-node-exporter", "FLIGHTDECK_NODE_EXPORTER");
    let s = Server::binary_with(&["--host-metrics", "false"]);
    s.project("interop");
    let (_, token) = s.token_in("interop", &["metrics:write", "metrics:read"]);
    let tmp = tempfile::tempdir().unwrap();
    let fixture = Fixture::start();

    let mut node = node_exporter.map(|bin| {
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"));
        (Proc::spawn("node-exporter", cmd, tmp.path()), port)
    });
    let prom_port = free_port();
    let mut jobs = format!(
        "  - job_name: fixture\n    static_configs: [{{targets: ['127.0.0.1:{}']}}]\n\
         \x20 - job_name: prometheus\n    static_configs: [{{targets: ['127.0.0.1:{prom_port}']}}]\n",
        fixture.port
    );
    if let Some((_, port)) = &node {
        jobs.push_str(&format!(
            "  - job_name: node\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
        ));
    }
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
         scrape_configs:\n{jobs}\
         remote_write:\n  - url: {url}/api/v1/write\n    basic_auth: {{username: prometheus, password: '{token}'}}\n\
         \x20   queue_config: {{batch_send_deadline: 1s}}\n    metadata_config: {{send_interval: 1s}}\n",
        url = s.url
    );
    std::fs::write(tmp.path().join("prometheus.yml"), &config).unwrap();
    let mut cmd = Command::new(&prometheus);
    cmd.arg(format!(
        "--config.file={}",
        tmp.path().join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        tmp.path().join("prom-data").display()
    ))
    .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"));
    let mut prom = Proc::spawn("prometheus", cmd, tmp.path());
    let prom_url = format!("http://127.0.0.1:{prom_port}");
    wait_for("Prometheus to be ready", Duration::from_secs(60), || {
        prom.check_running();
        let r = crate::harness::try_call("GET", &format!("{prom_url}/-/ready"), &[], None);
        match r {
            Ok(r) if r.status == 200 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let started_ms = now_ms();

    // Let Prometheus collect a full window after its start, plus margin.
    let fd = |query: &str, t_ms: i64| -> Value {
        let r = call(
            "GET",
            &s.url(&format!(
                "/api/v1/query?query={}&time={}",
                enc(query),
                secs(t_ms)
            )),
            &[("authorization", &format!("Bearer {token}"))],
            None,
        );
        assert_eq!(r.status, 200, "Flightdeck {query}: {}", r.body);
        r.json()
    };
    let pq = |query: &str, t_ms: i64| -> Value {
        let r = call(
            "GET",
            &format!(
                "{prom_url}/api/v1/query?query={}&time={}",
                enc(query),
                secs(t_ms)
            ),
            &[],
            None,
        );
        assert_eq!(r.status, 200, "Prometheus {query}: {}", r.body);
        r.json()
    };
    wait_for(
        "a full window of fixture scrapes in Flightdeck",
        Duration::from_secs(60),
        || {
            prom.check_running();
            if let Some((p, _)) = &mut node {
                p.check_running();
            }
            let now = now_ms();
            let got = result_by_series(&fd("fixture_scrapes_total[1m]", now));
            let n = got.values().next().map_or(0, Vec::len);
            if now - started_ms > (WINDOW_S + 4) * 1000 && n >= WINDOW_S as usize {
                Ok(())
            } else {
                Err(format!("{n} samples so far\n{}", prom.log()))
            }
        },
    );

    // One instant in the recent past, the same query to both. Samples on
    // the window's left edge are dropped from both sides: Prometheus 2
    // includes that instant in a range, Prometheus 3 does not.
    let t_end = now_ms() - 3000;
    let query = format!("{{__name__=~\".+\"}}[{WINDOW_S}s]");
    let in_window = |m: BTreeMap<SeriesKey, Vec<(i64, String)>>| {
        m.into_iter()
            .filter_map(|(k, pts)| {
                let pts: Vec<_> = pts
                    .into_iter()
                    .filter(|(t, _)| *t > t_end - WINDOW_S * 1000)
                    .collect();
                (!pts.is_empty()).then_some((k, pts))
            })
            .collect::<BTreeMap<_, _>>()
    };
    // -0 cannot cross remote write: Prometheus' protobuf encoder leaves a
    // double out when it `== 0` (the proto3 default), so -0 arrives as 0.
    let want: BTreeMap<_, _> = in_window(result_by_series(&pq(&query, t_end)))
        .into_iter()
        .map(|(k, pts)| {
            let pts = pts
                .into_iter()
                .map(|(t, v)| (t, if v == "-0" { "0".to_string() } else { v }))
                .collect::<Vec<_>>();
            (k, pts)
        })
        .collect();
    let jobs_seen: std::collections::BTreeSet<&str> = want
        .keys()
        .filter_map(|k| k.get("job").map(String::as_str))
        .collect();
    let expected_jobs: &[&str] = if node.is_some() {
        &["fixture", "node", "prometheus"]
    } else {
        &["fixture", "prometheus"]
    };
    assert_eq!(
        jobs_seen.into_iter().collect::<Vec<_>>(),
        expected_jobs,
        "Prometheus did not scrape every job"
    );
    let samples: usize = want.values().map(Vec::len).sum();
    assert!(
        want.len() > 150,
        "too few series to mean much: {}",
        want.len()
    );
    eprintln!(
        "prometheus interop: comparing {} series, {samples} samples in ({}, {}] ms",
        want.len(),
        t_end - WINDOW_S * 1000,
        t_end
    );

    // Flightdeck gets there within a few batch deadlines.
    let mut last = BTreeMap::new();
    let equal = (0..60).any(|_| {
        last = in_window(result_by_series(&fd(&query, t_end)));
        let same = last == want;
        if !same {
            std::thread::sleep(Duration::from_millis(500));
        }
        same
    });
    if !equal {
        panic!(
            "Flightdeck's samples differ from Prometheus' after 30 s:\n{}\n{}",
            describe_diff(&want, &last),
            prom.log()
        );
    }

    // The fixture's awkward cases, as the exposition had them.
    let inst = format!("127.0.0.1:{}", fixture.port);
    let fixture_labels = [("job", "fixture"), ("instance", inst.as_str())];
    let with = |name: &str, extra: &[(&str, &str)]| {
        let mut l: Vec<(&str, &str)> = fixture_labels.to_vec();
        l.extend_from_slice(extra);
        key(name, &l)
    };
    let values = |k: &SeriesKey| -> Vec<String> {
        want.get(k)
            .unwrap_or_else(|| panic!("no series {k:?}"))
            .iter()
            .map(|p| p.1.clone())
            .collect()
    };
    let expect_all = |k: SeriesKey, v: &str| {
        let got = values(&k);
        assert!(got.iter().all(|x| x == v), "{k:?}: {got:?}, want all {v}");
    };
    expect_all(
        with(
            "fixture_temperature_celsius",
            &[("room", "kitchen"), ("note", NOTE)],
        ),
        "21.5",
    );
    // An empty label value is the absence of the label.
    expect_all(
        with("fixture_temperature_celsius", &[("room", "cellar")]),
        "-0.25",
    );
    for (kind, v) in [
        ("nan", "NaN"),
        ("pinf", "+Inf"),
        ("ninf", "-Inf"),
        ("negzero", "0"),
        ("huge", "1.5e+21"),
        ("tiny", "1e-300"),
        ("maxint", "9007199254740992"),
    ] {
        expect_all(with("fixture_special", &[("kind", kind)]), v);
    }
    expect_all(
        with("fixture_latency_seconds_bucket", &[("le", "0.25")]),
        "7",
    );
    expect_all(with("fixture_rpc_seconds", &[("quantile", "0.99")]), "0.3");
    expect_all(with("fixture_untyped", &[("a", "1"), ("b", "2")]), "7");
    // The counter grows by one per scrape, one sample per scrape.
    let scrapes = &want[&with("fixture_scrapes_total", &[("path", "/metrics")])];
    for w in scrapes.windows(2) {
        let (a, b): (f64, f64) = (w[0].1.parse().unwrap(), w[1].1.parse().unwrap());
        assert_eq!(b, a + 1.0, "{scrapes:?}");
        assert!((800..=1200).contains(&(w[1].0 - w[0].0)), "{scrapes:?}");
    }
    // Explicit timestamps are kept (they are 500 ms before the scrape).
    let stamped = &want[&with("fixture_stamped", &[])];
    assert!(
        stamped.iter().all(|(t, v)| v == &(t * 3).to_string()),
        "{stamped:?}"
    );

    // Metadata: what Prometheus learned from the fixture's exposition.
    let meta_want = call("GET", &format!("{prom_url}/api/v1/metadata"), &[], None).json();
    let meta = wait_for("metadata in Flightdeck", Duration::from_secs(20), || {
        let got = call(
            "GET",
            &s.url("/api/v1/metadata"),
            &[("authorization", &format!("Bearer {token}"))],
            None,
        )
        .json();
        let mismatched: Vec<_> = FIXTURE_FAMILIES
            .iter()
            .filter(|f| got["data"][**f] != meta_want["data"][**f])
            .collect();
        if mismatched.is_empty() {
            Ok(got)
        } else {
            Err(format!("{mismatched:?}: {got} vs {meta_want}"))
        }
    });
    assert_eq!(
        meta["data"]["fixture_latency_seconds"][0]["type"],
        "histogram"
    );

    // Prometheus itself saw no rejections.
    let own = call("GET", &format!("{prom_url}/metrics"), &[], None).body;
    for counter in [
        "prometheus_remote_storage_samples_failed_total",
        "prometheus_remote_storage_samples_dropped_total",
        "prometheus_remote_storage_metadata_failed_total",
    ] {
        let total: f64 = own
            .lines()
            .filter(|l| l.starts_with(counter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(total, 0.0, "{counter} = {total}\n{}", prom.log());
    }
    drop(fixture);
}

/// Families whose metadata is compared.
const FIXTURE_FAMILIES: &[&str] = &[
    "fixture_scrapes_total",
    "fixture_temperature_celsius",
    "fixture_latency_seconds",
    "fixture_rpc_seconds",
];

/// A label value with escapes, a newline and non-ASCII characters.
const NOTE: &str = "quote \" backslash \\ newline \n ünïcødé ✓";

fn now_ms() -> i64 {
    crate::harness::now_ns() / 1_000_000
}

/// Milliseconds as the API's decimal seconds.
fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

fn describe_diff(
    want: &BTreeMap<SeriesKey, Vec<(i64, String)>>,
    got: &BTreeMap<SeriesKey, Vec<(i64, String)>>,
) -> String {
    let mut out = String::new();
    let mut shown = 0;
    for (k, v) in want {
        match got.get(k) {
            None => out.push_str(&format!("missing in Flightdeck: {k:?}\n")),
            Some(g) if g != v => {
                out.push_str(&format!("{k:?}:\n  prometheus {v:?}\n  flightdeck {g:?}\n"))
            }
            _ => continue,
        }
        shown += 1;
        if shown >= 15 {
            break;
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)).take(10) {
        out.push_str(&format!("only in Flightdeck: {k:?}\n"));
    }
    format!(
        "{} series in Prometheus, {} in Flightdeck\n{out}",
        want.len(),
        got.len()
    )
}

/// A scrape target serving fixed exposition text (format 0.0.4) whose
/// counter grows by one per scrape.
struct Fixture {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Fixture {
    fn start() -> Fixture {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let scrapes = AtomicU64::new(0);
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let n = scrapes.fetch_add(1, Ordering::SeqCst) + 1;
                let _ = answer(conn, n);
            }
        });
        Fixture {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(conn: TcpStream, n: u64) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let stamp = now_ms() - 500;
    let note = NOTE
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    let body = format!(
        "# HELP fixture_scrapes_total Scrapes of this fixture, one more each time.\n\
         # TYPE fixture_scrapes_total counter\n\
         fixture_scrapes_total{{path=\"/metrics\"}} {n}\n\
         # HELP fixture_temperature_celsius A gauge with awkward label values.\n\
         # TYPE fixture_temperature_celsius gauge\n\
         fixture_temperature_celsius{{room=\"kitchen\",note=\"{note}\"}} 21.5\n\
         fixture_temperature_celsius{{room=\"cellar\",note=\"\"}} -0.25\n\
         # TYPE fixture_special gauge\n\
         fixture_special{{kind=\"nan\"}} NaN\n\
         fixture_special{{kind=\"pinf\"}} +Inf\n\
         fixture_special{{kind=\"ninf\"}} -Inf\n\
         fixture_special{{kind=\"tiny\"}} 1e-300\n\
         fixture_special{{kind=\"huge\"}} 1.5e+21\n\
         fixture_special{{kind=\"negzero\"}} -0\n\
         fixture_special{{kind=\"maxint\"}} 9007199254740993\n\
         # HELP fixture_latency_seconds A classic histogram.\n\
         # TYPE fixture_latency_seconds histogram\n\
         fixture_latency_seconds_bucket{{le=\"0.05\"}} 3\n\
         fixture_latency_seconds_bucket{{le=\"0.25\"}} 7\n\
         fixture_latency_seconds_bucket{{le=\"1\"}} 9\n\
         fixture_latency_seconds_bucket{{le=\"+Inf\"}} 10\n\
         fixture_latency_seconds_sum 3.1415\n\
         fixture_latency_seconds_count 10\n\
         # HELP fixture_rpc_seconds A summary.\n\
         # TYPE fixture_rpc_seconds summary\n\
         fixture_rpc_seconds{{quantile=\"0.5\"}} 0.012\n\
         fixture_rpc_seconds{{quantile=\"0.99\"}} 0.3\n\
         fixture_rpc_seconds_sum 12.5\n\
         fixture_rpc_seconds_count 400\n\
         # TYPE fixture_stamped gauge\n\
         fixture_stamped {v} {stamp}\n\
         fixture_untyped{{a=\"1\",b=\"2\"}} 7\n",
        v = stamp * 3,
    );
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}
