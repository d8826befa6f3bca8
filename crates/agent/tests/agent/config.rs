//! `scrape_configs` validation: defaults, durations, target labels and
//! URLs, and bad configurations kept as data with the error they produce.

use std::time::Duration;

use agent::scrape::{
    ScrapeConfig, ScrapeDefaults, compile_scrape_configs, format_duration, parse_duration,
};

use crate::jobs;

#[test]
fn durations_parse_as_prometheus_does() {
    let ok = [
        ("0", 0),
        ("15s", 15_000),
        ("1m", 60_000),
        ("1h30m", 5_400_000),
        ("500ms", 500),
        ("1m500ms", 60_500),
        ("2d", 172_800_000),
        ("1w", 604_800_000),
        ("1y", 31_536_000_000),
        ("1h0m5s", 3_605_000),
    ];
    for (s, ms) in ok {
        assert_eq!(parse_duration(s), Some(Duration::from_millis(ms)), "{s}");
    }
    for bad in [
        "", "15", "s", "1m1h", "1s1s", "1.5s", "-1s", "1 s", "1mm", "1S", "5sec",
    ] {
        assert_eq!(parse_duration(bad), None, "{bad:?}");
    }
}

#[test]
fn durations_format_as_prometheus_does() {
    let cases = [
        (0, "0s"),
        (15_000, "15s"),
        (60_000, "1m"),
        (5_400_000, "1h30m"),
        (60_500, "1m500ms"),
        (604_800_000, "1w"),
        (691_200_000, "8d"),
        (31_536_000_000, "1y"),
    ];
    for (ms, s) in cases {
        assert_eq!(format_duration(Duration::from_millis(ms)), s);
    }
}

#[test]
fn defaults_are_prometheus_ones() {
    let j = jobs(
        "[[scrape_configs]]\njob_name = \"a\"\nstatic_configs = [{ targets = [\"h:1\"] }]\n",
        "",
    )
    .remove(0);
    assert_eq!(j.project, "default");
    assert_eq!(j.interval, Duration::from_secs(60));
    assert_eq!(j.timeout, Duration::from_secs(10));
    assert_eq!(j.metrics_path, "/metrics");
    assert!(j.honor_timestamps);
    assert!(!j.honor_labels);
    let t = &j.targets[0];
    assert_eq!(t.url, "http://h:1/metrics");
    assert_eq!(
        t.public_labels().to_string(),
        "{instance=\"h:1\", job=\"a\"}"
    );
    assert_eq!(
        t.discovered_labels.to_string(),
        "{__address__=\"h:1\", __metrics_path__=\"/metrics\", __scheme__=\"http\", __scrape_interval__=\"1m\", __scrape_timeout__=\"10s\", job=\"a\"}"
    );
}

#[test]
fn timeout_defaults_to_the_interval_when_shorter() {
    let j = jobs(
        "[[scrape_configs]]\njob_name = \"a\"\nscrape_interval = \"5s\"\n",
        "",
    )
    .remove(0);
    assert_eq!(j.timeout, Duration::from_secs(5));
}

#[test]
fn global_defaults_apply() {
    let cfg: ScrapeConfig = toml::from_str("job_name = \"a\"").unwrap();
    let d = ScrapeDefaults {
        scrape_interval: Duration::from_secs(15),
        scrape_timeout: Duration::from_secs(3),
    };
    let j = compile_scrape_configs(&[cfg], &d).unwrap().remove(0);
    assert_eq!(
        (j.interval, j.timeout),
        (Duration::from_secs(15), Duration::from_secs(3))
    );
}

#[test]
fn relabel_configs_shape_targets() {
    let js = jobs(
        r#"
[[scrape_configs]]
job_name = "blackbox"
metrics_path = "/probe"
params = { module = ["http_2xx"] }
static_configs = [{ targets = ["https://example.org", "https://drop.me"], labels = { team = "web" } }]
relabel_configs = [
  { action = "drop", source_labels = ["__address__"], regex = ".*drop.*" },
  { source_labels = ["__address__"], target_label = "__param_target" },
  { source_labels = ["__param_target"], target_label = "instance" },
  { target_label = "__address__", replacement = "127.0.0.1:9115" },
  { target_label = "__scheme__", replacement = "https" },
  { target_label = "__scrape_interval__", replacement = "30s" },
]
"#,
        "",
    );
    let j = &js[0];
    assert_eq!(j.targets.len(), 1);
    let t = &j.targets[0];
    assert_eq!(
        t.url,
        "https://127.0.0.1:9115/probe?module=http_2xx&target=https%3A%2F%2Fexample.org"
    );
    assert_eq!(
        t.public_labels().to_string(),
        "{instance=\"https://example.org\", job=\"blackbox\", team=\"web\"}"
    );
    assert_eq!(t.interval, Duration::from_secs(30));
    assert_eq!(j.dropped.len(), 1);
    assert_eq!(
        j.dropped[0].discovered_labels.get("__address__"),
        Some("https://drop.me")
    );
}

#[test]
fn identical_targets_are_scraped_once() {
    let j = jobs(
        "[[scrape_configs]]\njob_name = \"a\"\nstatic_configs = [{ targets = [\"h:1\", \"h:1\"] }, { targets = [\"h:1\"] }]\n",
        "",
    )
    .remove(0);
    assert_eq!(j.targets.len(), 1);
}

/// Bad configurations and the message each must produce.
const ERRORS: &[(&str, &str)] = &[
    (
        "job_name = \"\"",
        "scrape_configs[0] (job \"\"), `job_name`: job_name must not be empty",
    ),
    (
        "job_name = \"a\"\nscrape_interval = \"1 minute\"",
        "scrape_configs[0] (job \"a\"), `scrape_interval`: \"1 minute\" is not a duration (use e.g. 15s, 1m, 1h30m, 500ms; units y w d h m s ms)",
    ),
    (
        "job_name = \"a\"\nscrape_interval = \"0s\"",
        "scrape_configs[0] (job \"a\"), `scrape_interval`: must be greater than 0",
    ),
    (
        "job_name = \"a\"\nscrape_interval = \"15s\"\nscrape_timeout = \"20s\"",
        "scrape_configs[0] (job \"a\"), `scrape_timeout`: scrape_timeout 20s is greater than scrape_interval 15s",
    ),
    (
        "job_name = \"a\"\nscheme = \"ftp\"",
        "scrape_configs[0] (job \"a\"), `scheme`: \"ftp\" is not a scheme (use \"http\" or \"https\")",
    ),
    (
        "job_name = \"a\"\nmetrics_path = \"metrics\"",
        "scrape_configs[0] (job \"a\"), `metrics_path`: \"metrics\" must start with '/'",
    ),
    (
        "job_name = \"a\"\nproject = \"my project\"",
        "scrape_configs[0] (job \"a\"), `project`: \"my project\" is not a project name (use 1 to 100 characters: letters, digits, '-', '_', '.')",
    ),
    (
        "job_name = \"a\"\nbearer_token = \"t\"\nbasic_auth = { username = \"u\", password = \"p\" }",
        "scrape_configs[0] (job \"a\"), `basic_auth`: set only one of basic_auth, authorization and bearer_token/bearer_token_file",
    ),
    (
        "job_name = \"a\"\nbasic_auth = { username = \"u\" }",
        "scrape_configs[0] (job \"a\"), `basic_auth`: set exactly one of password and password_file",
    ),
    (
        "job_name = \"a\"\nauthorization = { type = \"Basic\", credentials = \"x\" }",
        "scrape_configs[0] (job \"a\"), `authorization.type`: set exactly one of a single word other than Basic (use basic_auth for Basic)",
    ),
    (
        "job_name = \"a\"\nrelabel_configs = [{ action = \"keep\" }, { action = \"hashmod\", target_label = \"x\" }]",
        "scrape_configs[0] (job \"a\"), `relabel_configs`: relabel rule 1, `modulus`: the hashmod action needs a modulus greater than 0",
    ),
    (
        "job_name = \"a\"\nmetric_relabel_configs = [{ regex = \"(\", target_label = \"x\" }]",
        "scrape_configs[0] (job \"a\"), `metric_relabel_configs`: relabel rule 0, `regex`: invalid regular expression \"(\"",
    ),
    (
        "job_name = \"a\"\nstatic_configs = [{ targets = [\"h/x:1\"] }]",
        "scrape_configs[0] (job \"a\"), `static_configs[0].targets[0]`: \"h/x:1\" is not a valid host:port address (no scheme, path or '/')",
    ),
    (
        "job_name = \"a\"\nstatic_configs = [{ targets = [\"h:1\"] }]\nrelabel_configs = [{ target_label = \"__address__\", replacement = \"\" }]",
        "scrape_configs[0] (job \"a\"), `static_configs[0].targets[0]`: no __address__ label after relabeling",
    ),
    (
        "job_name = \"a\"\nstatic_configs = [{ targets = [\"h:1\"], labels = { \"bad-name\" = \"x\" } }]",
        "scrape_configs[0] (job \"a\"), `static_configs[0].labels`: \"bad-name\" is not a label name (use letters, digits and '_', not starting with a digit)",
    ),
    (
        "job_name = \"a\"\nstatic_configs = [{ targets = [\"h:1\"] }]\nrelabel_configs = [{ target_label = \"__scrape_timeout__\", replacement = \"2m\" }]",
        "scrape_configs[0] (job \"a\"), `static_configs[0].targets[0]`: scrape timeout 2m is greater than scrape interval 1m after relabeling",
    ),
    (
        "job_name = \"a\"\nbody_size_limit = 100000000",
        "scrape_configs[0] (job \"a\"), `body_size_limit`: must be at most 67108864 bytes, got 100000000",
    ),
];

#[test]
fn bad_configs_name_the_entry_and_key() {
    let mut bad = 0;
    for (src, expected) in ERRORS {
        let cfg: ScrapeConfig = toml::from_str(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        match compile_scrape_configs(&[cfg], &ScrapeDefaults::default()) {
            Ok(_) => {
                eprintln!("accepted: {src}");
                bad += 1;
            }
            Err(e) if !e.to_string().starts_with(expected) => {
                eprintln!("{src}\n  got  {e}\n  want {expected}");
                bad += 1;
            }
            Err(_) => {}
        }
    }
    assert_eq!(bad, 0, "{bad} of {} cases differ", ERRORS.len());
}

#[test]
fn duplicate_job_names_are_rejected() {
    let a: ScrapeConfig = toml::from_str("job_name = \"a\"").unwrap();
    let err = compile_scrape_configs(&[a.clone(), a], &ScrapeDefaults::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "scrape_configs[1] (job \"a\"), `job_name`: another scrape config already has this job_name (names must be unique)"
    );
}

#[test]
fn unknown_keys_are_rejected() {
    let err =
        toml::from_str::<ScrapeConfig>("job_name = \"a\"\nscrape_intervall = \"1m\"").unwrap_err();
    assert!(
        err.to_string().contains("unknown field `scrape_intervall`"),
        "{err}"
    );
}
