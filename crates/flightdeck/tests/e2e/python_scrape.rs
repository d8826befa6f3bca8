//! Flightdeck scraping a real exporter: Python's `prometheus-client`
//! (pinned in `.ci/run`) serving a counter, gauge with unit, histogram,
//! summary, info and enum, scraped through a `[[scrape_configs]]` job in a
//! config file given with `--config`, into the project the job names.
//! The series must be what the library exposes (names, labels, values),
//! with target labels, `up` and the scrape's own series, metadata, and the
//! target listed as up in `/api/v1/targets`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::Server;
use crate::real_clients::{SeriesKey, fd_get, fd_instant, key, python, script, wait_for};

#[test]
fn flightdeck_scrapes_python_prometheus_client() {
    let Some(py) = python(&["prometheus_client"]) else {
        return;
    };
    let mut target = Command::new(py)
        .arg(script("prom_client_target.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start prom_client_target.py");
    let stdout = target.stdout.take().unwrap();
    let _reap = KillOnDrop(&mut target);
    let mut port = String::new();
    BufReader::new(stdout).read_line(&mut port).unwrap();
    let port: u16 = port.trim().parse().expect("the target printed its port");
    let addr = format!("127.0.0.1:{port}");

    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("flightdeck.toml");
    std::fs::write(
        &config,
        format!(
            "[metrics]\nhost_metrics = false\n\n\
             [[scrape_configs]]\njob_name = \"pyapp\"\nproject = \"pyapp\"\n\
             scrape_interval = \"1s\"\n\
             static_configs = [{{ targets = [\"{addr}\"], labels = {{ env = \"e2e\" }} }}]\n"
        ),
    )
    .unwrap();
    let s = Server::binary_with(&["--config", config.to_str().unwrap()]);
    s.project("pyapp");
    let (_, token) = s.token_in("pyapp", &["metrics:read"]);

    let id = [
        ("job", "pyapp"),
        ("instance", addr.as_str()),
        ("env", "e2e"),
    ];
    let with = |name: &str, extra: &[(&str, &str)]| -> SeriesKey {
        let mut l = id.to_vec();
        l.extend_from_slice(extra);
        key(name, &l)
    };
    let value = |query: &str| -> Vec<(SeriesKey, String)> {
        fd_instant(&s, &token, query)
            .into_iter()
            .map(|(k, p)| (k, p.last().unwrap().1.clone()))
            .collect()
    };
    wait_for("a scrape stored with up=1", Duration::from_secs(30), || {
        let up = value("up");
        if up == [(with("up", &[]), "1".to_string())] {
            Ok(())
        } else {
            Err(format!("up = {up:?}"))
        }
    });

    assert_eq!(
        value("fd_jobs_total"),
        [
            (with("fd_jobs_total", &[("queue", "fast")]), "3".into()),
            (with("fd_jobs_total", &[("queue", "slow")]), "0.5".into()),
        ]
    );
    assert_eq!(
        value("fd_temperature_celsius"),
        [(with("fd_temperature_celsius", &[]), "21.5".into())]
    );
    let mut buckets = value("fd_job_seconds_bucket");
    buckets.sort_by_key(|(_, v)| v.parse::<u32>().unwrap());
    assert_eq!(
        buckets,
        [("0.1", "1"), ("1.0", "2"), ("10.0", "3"), ("+Inf", "4")]
            .map(|(le, n)| (with("fd_job_seconds_bucket", &[("le", le)]), n.to_string()))
    );
    assert_eq!(
        value("fd_job_seconds_sum"),
        [(with("fd_job_seconds_sum", &[]), "55.55".into())]
    );
    // 0.2 + 0.4 in binary floating point, to the last digit.
    assert_eq!(
        value("fd_request_seconds_sum"),
        [(
            with("fd_request_seconds_sum", &[]),
            "0.6000000000000001".into()
        )]
    );
    assert_eq!(
        value("fd_request_seconds_count"),
        [(with("fd_request_seconds_count", &[]), "2".into())]
    );
    assert_eq!(
        value("fd_build_info"),
        [(
            with("fd_build_info", &[("version", "1.2.3"), ("commit", "abc")]),
            "1".into()
        )]
    );
    assert_eq!(
        value("fd_state"),
        [
            (with("fd_state", &[("fd_state", "running")]), "1".into()),
            (with("fd_state", &[("fd_state", "starting")]), "0".into()),
            (with("fd_state", &[("fd_state", "stopped")]), "0".into()),
        ]
    );
    // The library's default collectors came along.
    assert_eq!(value("process_cpu_seconds_total").len(), 1);
    // The scrape's own series.
    let scraped = value("scrape_samples_scraped");
    assert_eq!(scraped.len(), 1, "{scraped:?}");
    let n: f64 = scraped[0].1.parse().unwrap();
    assert!(n >= 20.0, "scrape_samples_scraped = {n}");
    assert_eq!(value("scrape_duration_seconds").len(), 1);

    // Metadata from the exposition's HELP/TYPE lines.
    let md = fd_get(&s, &token, "/api/v1/metadata?metric=fd_job_seconds");
    assert_eq!(md["data"]["fd_job_seconds"][0]["type"], "histogram", "{md}");
    assert_eq!(md["data"]["fd_job_seconds"][0]["help"], "Job time.", "{md}");

    // The target as Prometheus' targets API shows it. The state is
    // updated once the scrape's write is acknowledged (after its fsync),
    // which may be a moment after its samples became queryable.
    let targets = wait_for("the target shown as up", Duration::from_secs(10), || {
        let t = fd_get(&s, &token, "/api/v1/targets");
        if t["data"]["activeTargets"][0]["health"] == "up" {
            Ok(t)
        } else {
            Err(t.to_string())
        }
    });
    let active = targets["data"]["activeTargets"].as_array().unwrap();
    assert_eq!(active.len(), 1, "{targets}");
    assert_eq!(active[0]["labels"]["job"], "pyapp", "{targets}");
    assert_eq!(active[0]["scrapeUrl"], format!("http://{addr}/metrics"));

    // The default project got none of it.
    let other = fd_instant(&s, &s.token, "{job=\"pyapp\"}");
    assert!(
        other.is_empty(),
        "leaked into the default project: {other:?}"
    );
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
