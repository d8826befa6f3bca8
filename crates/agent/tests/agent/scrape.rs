//! One target's scrapes against a real local HTTP target, with chosen
//! timestamps: labels, values, relabeling, `up`, staleness, honor_labels,
//! honor_timestamps, limits, formats, headers.

use std::sync::Arc;
use std::time::Duration;

use agent::scrape::http::{ACCEPT, Client};
use agent::scrape::{Health, TargetScraper};

use crate::{Reply, TestTarget, jobs, render};

fn scraper(toml_src: &str, addr: &str) -> TargetScraper {
    let mut js = jobs(toml_src, addr);
    let mut job = js.remove(0);
    let target = job.targets.remove(0);
    let client = Arc::new(Client::new(&job));
    TargetScraper::new(Arc::new(job), client, target)
}

const BASIC: &str = r#"
[[scrape_configs]]
job_name = "app"
scrape_interval = "15s"
static_configs = [{ targets = ["{ADDR}"], labels = { env = "prod" } }]
"#;

/// The report series of a scrape, as `render` shows them.
fn report(addr: &str, t: i64, up: u8, scraped: u64, post: u64, added: u64) -> String {
    let l = format!("env=\"prod\", instance=\"{addr}\", job=\"app\"");
    format!(
        "scrape_duration_seconds{{{l}}} D @{t}\nscrape_samples_post_metric_relabeling{{{l}}} {post} @{t}\nscrape_samples_scraped{{{l}}} {scraped} @{t}\nscrape_series_added{{{l}}} {added} @{t}\nup{{{l}}} {up} @{t}"
    )
}

fn sorted(s: String) -> String {
    let mut v: Vec<&str> = s.lines().collect();
    v.sort();
    v.join("\n")
}

#[test]
fn scrape_local_target_with_labels_values_and_up() {
    let t = TestTarget::start(Reply::text(
        "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\nhttp_requests_total{code=\"200\"} 1027\nhttp_requests_total{code=\"500\"} 3\ntemperature -1.5\n",
    ));
    let mut s = scraper(BASIC, &t.addr);
    let b = s.scrape(1_000);
    let a = &t.addr;
    let l = format!("env=\"prod\", instance=\"{a}\", job=\"app\"");
    let expected = sorted(format!(
        "http_requests_total{{code=\"200\", {l}}} 1027 @1000\nhttp_requests_total{{code=\"500\", {l}}} 3 @1000\ntemperature{{{l}}} -1.5 @1000\n{}",
        report(a, 1000, 1, 3, 3, 3)
    ));
    assert_eq!(render(&b), expected);
    assert_eq!(b.metadata.len(), 1);
    assert_eq!(b.metadata[0].0, "http_requests_total");
    assert_eq!(b.metadata[0].1.help, "Requests.");
    let st = s.state();
    assert_eq!(st.health, Health::Up);
    assert_eq!(st.last_scrape_ms, Some(1000));
    assert_eq!(st.last_error, None);
    assert_eq!(st.last_samples, 3);
    assert_eq!(st.scrape_url, format!("http://{a}/metrics"));
}

#[test]
fn request_headers_are_prometheus_ones() {
    let t = TestTarget::start(Reply::text("a 1\n"));
    let mut s = scraper(
        r#"
[[scrape_configs]]
job_name = "app"
scrape_interval = "30s"
scrape_timeout = "5s"
metrics_path = "/probe"
params = { module = ["http_2xx"], "target x" = ["a&b"] }
basic_auth = { username = "u", password = "p:w" }
static_configs = [{ targets = ["{ADDR}"] }]
"#,
        &t.addr,
    );
    s.scrape(1);
    let r = &t.requests()[0];
    assert_eq!(r.line, "GET /probe?module=http_2xx&target+x=a%26b HTTP/1.1");
    assert_eq!(r.header("accept"), Some(ACCEPT));
    assert_eq!(r.headers.iter().filter(|(n, _)| n == "accept").count(), 1);
    assert_eq!(r.header("x-prometheus-scrape-timeout-seconds"), Some("5"));
    assert_eq!(r.header("authorization"), Some("Basic dTpwOnc="));
    assert!(
        r.header("accept-encoding")
            .is_some_and(|v| v.contains("gzip")),
        "{r:?}"
    );
    assert!(
        r.header("user-agent")
            .is_some_and(|v| v.starts_with("Flightdeck/"))
    );
}

#[test]
fn bearer_token_from_file_is_sent() {
    let dir = std::env::temp_dir().join(format!("agent-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("token");
    std::fs::write(&f, "s3cret\n").unwrap();
    let t = TestTarget::start(Reply::text("a 1\n"));
    let cfg = format!(
        "[[scrape_configs]]\njob_name = \"app\"\nauthorization = {{ credentials_file = {:?} }}\nstatic_configs = [{{ targets = [\"{{ADDR}}\"] }}]\n",
        f.display().to_string()
    );
    let mut s = scraper(&cfg, &t.addr);
    s.scrape(1);
    assert_eq!(
        t.requests()[0].header("authorization"),
        Some("Bearer s3cret")
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn metric_relabel_configs_apply_to_samples() {
    let t = TestTarget::start(Reply::text(
        "go_goroutines 8\nhttp_requests_total{path=\"/a\",secret=\"x\"} 5\n",
    ));
    let mut s = scraper(
        r#"
[[scrape_configs]]
job_name = "app"
static_configs = [{ targets = ["{ADDR}"], labels = { env = "prod" } }]
metric_relabel_configs = [
  { action = "drop", source_labels = ["__name__"], regex = "go_.*" },
  { action = "labeldrop", regex = "secret" },
  { source_labels = ["path"], target_label = "route", replacement = "route:$1" },
]
"#,
        &t.addr,
    );
    let b = s.scrape(7);
    let a = &t.addr;
    let expected = sorted(format!(
        "http_requests_total{{env=\"prod\", instance=\"{a}\", job=\"app\", path=\"/a\", route=\"route:/a\"}} 5 @7\n{}",
        report(a, 7, 1, 2, 1, 1)
    ));
    assert_eq!(render(&b), expected);
}

#[test]
fn target_down_gives_up_0_and_stale_markers_for_its_last_series() {
    let t = TestTarget::start(Reply::text("a 1\nb{x=\"y\"} 2\n"));
    let mut s = scraper(BASIC, &t.addr);
    s.scrape(1_000);
    t.set(Reply {
        status: 500,
        ..Reply::text("oops")
    });
    let b = s.scrape(16_000);
    let a = &t.addr;
    let l = format!("env=\"prod\", instance=\"{a}\", job=\"app\"");
    let expected = sorted(format!(
        "a{{{l}}} STALE @16000\nb{{{l}, x=\"y\"}} STALE @16000\n{}",
        report(a, 16000, 0, 0, 0, 0)
    ));
    assert_eq!(render(&b), expected);
    let st = s.state();
    assert_eq!(st.health, Health::Down);
    assert_eq!(
        st.last_error.as_deref(),
        Some("server returned HTTP status 500 Internal Server Error")
    );
    // Still down: nothing left to mark stale, up stays 0.
    let b = s.scrape(31_000);
    assert_eq!(render(&b), report(a, 31000, 0, 0, 0, 0));
}

#[test]
fn unreachable_target_is_down() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut s = scraper(BASIC, &addr);
    let b = s.scrape(5);
    assert_eq!(render(&b), report(&addr, 5, 0, 0, 0, 0));
    assert_eq!(s.state().health, Health::Down);
    assert!(s.state().last_error.is_some());
}

#[test]
fn series_that_disappear_get_a_stale_marker() {
    let t = TestTarget::start(Reply::text("a 1\nb 2\n"));
    let mut s = scraper(BASIC, &t.addr);
    s.scrape(1_000);
    t.set_body("a 3\nc 4\n");
    let b = s.scrape(16_000);
    let a = &t.addr;
    let l = format!("env=\"prod\", instance=\"{a}\", job=\"app\"");
    let expected = sorted(format!(
        "a{{{l}}} 3 @16000\nb{{{l}}} STALE @16000\nc{{{l}}} 4 @16000\n{}",
        report(a, 16000, 1, 2, 2, 1)
    ));
    assert_eq!(render(&b), expected);
}

#[test]
fn honor_labels_false_moves_conflicts_to_exported() {
    let t = TestTarget::start(Reply::text(
        "m{job=\"pushed\",instance=\"other\"} 1\nn{job=\"a\",exported_job=\"b\"} 2\n",
    ));
    let mut s = scraper(BASIC, &t.addr);
    let b = s.scrape(1);
    let a = &t.addr;
    let got: Vec<String> = render(&b)
        .lines()
        .filter(|l| l.starts_with("m{") || l.starts_with("n{"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        got,
        [
            format!(
                "m{{env=\"prod\", exported_instance=\"other\", exported_job=\"pushed\", instance=\"{a}\", job=\"app\"}} 1 @1"
            ),
            format!(
                "n{{env=\"prod\", exported_exported_job=\"a\", exported_job=\"b\", instance=\"{a}\", job=\"app\"}} 2 @1"
            ),
        ]
    );
}

#[test]
fn honor_labels_true_keeps_scraped_labels() {
    let t = TestTarget::start(Reply::text("m{job=\"pushed\",instance=\"other\"} 1\n"));
    let mut s = scraper(
        r#"
[[scrape_configs]]
job_name = "app"
honor_labels = true
static_configs = [{ targets = ["{ADDR}"], labels = { env = "prod" } }]
"#,
        &t.addr,
    );
    let b = s.scrape(1);
    assert!(
        render(&b)
            .lines()
            .any(|l| l == "m{env=\"prod\", instance=\"other\", job=\"pushed\"} 1 @1"),
        "{}",
        render(&b)
    );
}

#[test]
fn sample_limit_exceeded_fails_the_whole_scrape() {
    let t = TestTarget::start(Reply::text("a 1\n"));
    let mut s = scraper(
        r#"
[[scrape_configs]]
job_name = "app"
sample_limit = 2
static_configs = [{ targets = ["{ADDR}"], labels = { env = "prod" } }]
"#,
        &t.addr,
    );
    s.scrape(1_000);
    t.set_body("a 1\nb 2\nc 3\n");
    let b = s.scrape(2_000);
    let a = &t.addr;
    let l = format!("env=\"prod\", instance=\"{a}\", job=\"app\"");
    let expected = sorted(format!(
        "a{{{l}}} STALE @2000\n{}",
        report(a, 2000, 0, 3, 3, 0)
    ));
    assert_eq!(render(&b), expected);
    assert_eq!(
        s.state().last_error.as_deref(),
        Some("sample limit exceeded (3 samples after metric relabeling, sample_limit 2)")
    );
    // Back under the limit: up again, `a` is a new series again.
    t.set_body("a 1\nb 2\n");
    let b = s.scrape(3_000);
    assert!(render(&b).contains(&format!("up{{{l}}} 1 @3000")));
}

#[test]
fn label_limit_exceeded_fails_the_scrape() {
    let t = TestTarget::start(Reply::text("a{x=\"1\",y=\"2\"} 1\n"));
    let mut s = scraper(
        r#"
[[scrape_configs]]
job_name = "app"
label_limit = 4
static_configs = [{ targets = ["{ADDR}"] }]
"#,
        &t.addr,
    );
    s.scrape(1);
    assert_eq!(
        s.state().last_error.as_deref(),
        Some("label_limit exceeded (metric: a, number of labels: 5, limit: 4)")
    );
}

#[test]
fn honor_timestamps_uses_the_lines_own_time_and_skips_staleness() {
    let t = TestTarget::start(Reply::text("a 1 500\nb 2\n"));
    let mut s = scraper(BASIC, &t.addr);
    let b = s.scrape(1_000);
    let r = render(&b);
    assert!(
        r.lines()
            .any(|l| l.starts_with("a{") && l.ends_with(" 1 @500")),
        "{r}"
    );
    assert!(
        r.lines()
            .any(|l| l.starts_with("b{") && l.ends_with(" 2 @1000")),
        "{r}"
    );
    t.set_body("");
    let r = render(&s.scrape(2_000));
    assert!(
        r.lines()
            .any(|l| l.starts_with("b{") && l.ends_with("STALE @2000")),
        "{r}"
    );
    assert!(
        !r.lines().any(|l| l.starts_with("a{")),
        "series with own timestamps get no stale marker: {r}"
    );
}

#[test]
fn honor_timestamps_false_uses_scrape_time() {
    let t = TestTarget::start(Reply::text("a 1 500\n"));
    let mut s = scraper(
        r#"
[[scrape_configs]]
job_name = "app"
honor_timestamps = false
static_configs = [{ targets = ["{ADDR}"] }]
"#,
        &t.addr,
    );
    let r = render(&s.scrape(1_000));
    assert!(
        r.lines()
            .any(|l| l.starts_with("a{") && l.ends_with(" 1 @1000")),
        "{r}"
    );
}

#[test]
fn openmetrics_by_content_type() {
    let t = TestTarget::start(Reply {
        content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ..Reply::text("# TYPE c counter\nc_total 5 1.5\n# EOF\n")
    });
    let mut s = scraper(BASIC, &t.addr);
    let r = render(&s.scrape(9_000));
    assert!(
        r.lines()
            .any(|l| l.starts_with("c_total{") && l.ends_with(" 5 @1500")),
        "{r}"
    );
}

#[test]
fn gzip_body_is_decompressed() {
    let t = TestTarget::start(Reply {
        gzip: true,
        ..Reply::text("zipped 42\n")
    });
    let mut s = scraper(BASIC, &t.addr);
    let r = render(&s.scrape(1));
    assert!(
        r.lines()
            .any(|l| l.starts_with("zipped{") && l.ends_with(" 42 @1")),
        "{r}"
    );
}

#[test]
fn body_over_the_limit_fails_even_when_compressed_small() {
    // 10 000 bytes of exposition, a few dozen bytes gzipped.
    let body = format!("a 1\n{}\n", "#".repeat(10_000));
    let t = TestTarget::start(Reply {
        gzip: true,
        ..Reply::text(&body)
    });
    let mut s = scraper(
        r#"
[[scrape_configs]]
job_name = "app"
body_size_limit = 1000
static_configs = [{ targets = ["{ADDR}"] }]
"#,
        &t.addr,
    );
    s.scrape(1);
    let err = s.state().last_error.clone().unwrap_or_default();
    assert!(err.starts_with("body size limit exceeded"), "{err}");
}

#[test]
fn parse_error_fails_the_scrape_with_its_position() {
    let t = TestTarget::start(Reply::text("a 1\nb{c=\"d\" 2\n"));
    let mut s = scraper(BASIC, &t.addr);
    s.scrape(1);
    assert_eq!(
        s.state().last_error.as_deref(),
        Some(
            "text format parsing error in line 2, column 9: expected ',' or '}' after label value, found '2'"
        )
    );
}

#[test]
fn slow_target_times_out() {
    let t = TestTarget::start(Reply {
        delay: Duration::from_millis(1500),
        ..Reply::text("a 1\n")
    });
    let mut s = scraper(
        r#"
[[scrape_configs]]
job_name = "app"
scrape_interval = "1s"
scrape_timeout = "200ms"
static_configs = [{ targets = ["{ADDR}"] }]
"#,
        &t.addr,
    );
    let started = std::time::Instant::now();
    s.scrape(1);
    assert!(started.elapsed() < Duration::from_millis(1200));
    let err = s.state().last_error.clone().unwrap_or_default();
    assert!(err.contains("deadline exceeded"), "{err}");
    assert_eq!(
        t.requests()[0].header("x-prometheus-scrape-timeout-seconds"),
        Some("0.2")
    );
}

#[test]
fn end_of_run_marks_everything_stale() {
    let t = TestTarget::start(Reply::text("a 1\n"));
    let mut s = scraper(BASIC, &t.addr);
    s.scrape(1_000);
    let b = s.end_of_run(2_000);
    let a = &t.addr;
    let l = format!("env=\"prod\", instance=\"{a}\", job=\"app\"");
    let expected = sorted(format!(
        "a{{{l}}} STALE @2000\nscrape_duration_seconds{{{l}}} STALE @2000\nscrape_samples_post_metric_relabeling{{{l}}} STALE @2000\nscrape_samples_scraped{{{l}}} STALE @2000\nscrape_series_added{{{l}}} STALE @2000\nup{{{l}}} STALE @2000"
    ));
    assert_eq!(render(&b), expected);
    assert!(s.end_of_run(3_000).series.is_empty());
}

#[test]
fn duplicate_series_in_one_scrape_keep_the_first() {
    let t = TestTarget::start(Reply::text("a 1\na 2\n"));
    let mut s = scraper(BASIC, &t.addr);
    let r = render(&s.scrape(1));
    let a_lines: Vec<&str> = r.lines().filter(|l| l.starts_with("a{")).collect();
    assert_eq!(a_lines.len(), 1, "{r}");
    assert!(a_lines[0].ends_with(" 1 @1"));
}
