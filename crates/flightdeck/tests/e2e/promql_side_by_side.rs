//! Side by side with the real Prometheus (Debian's `prometheus`, 2.42 in
//! CI): the same synthetic data is remote-written into both, then every
//! query of `promql_queries.txt` is evaluated by both — as instant queries
//! at two times and as a range query — and the answers must agree: the
//! same result type, the same series with exactly the same labels, the
//! same timestamps, and values equal within promqltest's tolerance
//! (relative 1e-6, see [`almost_equal`]); two refusals agree when their
//! `errorType` is the same. A disagreement fails the test unless the query
//! is listed, with a reason, in `promql_expected_differences.txt`; a listed
//! query that agrees fails it too, so the list only shrinks.
//!
//! `promql_side_by_side_selectors` compares the bare selectors of the list
//! (what Flightdeck answers before the PromQL engine lands) and proves the
//! harness; `promql_side_by_side_full` compares all of them and needs the
//! engine.
//!
//! The data (see [`dataset`]): three hours ending a few minutes ago,
//! one sample per 15 s per series, counters (one with a reset), gauges
//! (negative values, integer random walks), a classic histogram, a series
//! with staleness markers that comes back, one that just stops, and a
//! sparse one. Every series' samples sit at an odd millisecond phase and
//! the evaluation times at `.500` s, so no sample is ever exactly on a
//! window's edge: Prometheus 2 includes a range's left edge and
//! Prometheus 3 (whose semantics the engine follows) excludes it, and
//! that must not decide any comparison.
//!
//! Prometheus accepts remote-written samples in time order and no older
//! than an hour before its newest sample (its head's append window), so
//! the data goes out in 10-minute slices, oldest first, to both servers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use ingest::remote_write::proto::v1;
use prost::Message;
use serde_json::Value;

use crate::harness::{Server, call, now_ns};
use crate::real_clients::{Proc, SeriesKey, enc, free_port, program, wait_for};

const QUERIES: &str = include_str!("promql_queries.txt");
const EXPECTED_DIFFERENCES: &str = include_str!("promql_expected_differences.txt");

/// Sample interval of every series but the sparse one.
const STEP_MS: i64 = 15_000;
/// Length of the data.
const SPAN_MS: i64 = 3 * 3600 * 1000;
/// Step of the compared range queries, and their length.
const RANGE_STEP_S: i64 = 60;
const RANGE_LEN_MS: i64 = 2 * 3600 * 1000;

/// One query of the list.
#[derive(Debug, Clone)]
pub struct Query {
    pub text: String,
    /// Instant queries only (range-vector or string results).
    pub instant_only: bool,
}

/// The queries of `promql_queries.txt`.
pub fn queries() -> Vec<Query> {
    QUERIES
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.strip_prefix("instant:") {
            Some(q) => Query {
                text: q.trim().to_string(),
                instant_only: true,
            },
            None => Query {
                text: l.to_string(),
                instant_only: false,
            },
        })
        .collect()
}

/// The expected differences: query text → reason.
pub fn expected_differences() -> BTreeMap<String, String> {
    EXPECTED_DIFFERENCES
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (q, why) = l.split_once('\t').unwrap_or_else(|| {
                panic!("promql_expected_differences.txt: want QUERY<TAB>REASON, got {l:?}")
            });
            assert!(
                !why.trim().is_empty(),
                "promql_expected_differences.txt: {q:?} has no reason"
            );
            (q.trim().to_string(), why.trim().to_string())
        })
        .collect()
}

/// Whether `q` is a bare selector: `name{…}` or `{…}`, optionally with a
/// `[range]`, `offset` and `@` — what Flightdeck evaluates without the
/// engine.
pub fn is_bare_selector(q: &str) -> bool {
    // Drop the matcher braces (quoted strings may hold anything).
    let mut rest = String::new();
    let mut chars = q.chars();
    while let Some(c) = chars.next() {
        if c == '{' {
            let mut quote = None;
            for d in chars.by_ref() {
                match (quote, d) {
                    (None, '"' | '\'' | '`') => quote = Some(d),
                    (Some(qc), _) if d == qc => quote = None,
                    (None, '}') => break,
                    _ => {}
                }
            }
            rest.push(' ');
        } else {
            rest.push(c);
        }
    }
    let rest = rest.replace("@ end()", "@ 0").replace("@ start()", "@ 0");
    let mut tokens = rest.split_whitespace().peekable();
    let ident = |t: &str| {
        let mut cs = t.chars();
        cs.next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let duration = |t: &str| {
        let t = t.strip_prefix('-').unwrap_or(t);
        !t.is_empty()
            && t.chars().next().is_some_and(|c| c.is_ascii_digit())
            && t.chars().all(|c| c.is_ascii_alphanumeric())
    };
    // The name, with a range glued on (`x[5m]`) or not.
    let mut first = tokens.next().unwrap_or("");
    if let Some(i) = first.find('[') {
        let range = &first[i..];
        if !(range.ends_with(']') && duration(&range[1..range.len() - 1])) {
            return false;
        }
        first = &first[..i];
    }
    let literal = ["inf", "nan"].contains(&first.to_ascii_lowercase().as_str());
    if !first.is_empty() && (!ident(first) || literal) {
        return false;
    }
    if first.is_empty() && !q.trim_start().starts_with('{') {
        return false;
    }
    while let Some(t) = tokens.next() {
        let ok = match t {
            "offset" => tokens.next().is_some_and(duration),
            "@" => tokens.next().is_some_and(|n| n.parse::<f64>().is_ok()),
            r if r.starts_with('[') && r.ends_with(']') => duration(&r[1..r.len() - 1]),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// One series of a data set: labels and samples in time order.
pub struct Series {
    pub labels: Vec<(String, String)>,
    pub samples: Vec<(i64, f64)>,
}

use model::stale_nan;

/// A small deterministic PRNG (SplitMix64), so both servers and every run
/// get the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The synthetic data: [`SPAN_MS`] ending at `end`.
fn dataset(end: i64) -> Vec<Series> {
    let start = end - SPAN_MS;
    let mut rng = Rng(0x5eed);
    let mut out: Vec<Series> = Vec::new();
    let mut n = 0i64;
    // The phase of each series: an odd number of ms, never .000 or .500 s.
    let mut phase = || {
        n += 1;
        let mut p = (137 + n * 211) % STEP_MS;
        if p % 500 == 0 {
            p += 1;
        }
        p
    };
    let times = |p: i64| {
        (0..)
            .map(move |i| start + p + i * STEP_MS)
            .take_while(move |t| *t <= end)
    };
    let l = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let instances = ["host-0:9100", "host-1:9100", "host-2:9100"];
    let jobs = ["api", "web"];
    for job in jobs {
        for inst in instances {
            for method in ["GET", "POST"] {
                for code in ["200", "500"] {
                    let rate = (if code == "200" { 5.0 } else { 0.2 }) * rng.f64().max(0.1);
                    let reset = job == "api" && inst == "host-1:9100" && method == "POST";
                    let mut v = (rng.f64() * 1000.0).floor();
                    let p = phase();
                    let samples = times(p)
                        .enumerate()
                        .map(|(i, t)| {
                            if reset && i == 480 {
                                v = 3.0;
                            } else {
                                v += (rate * 15.0 * (0.5 + rng.f64())).round();
                            }
                            (t, v)
                        })
                        .collect();
                    out.push(Series {
                        labels: l(&[
                            ("__name__", "http_requests_total"),
                            ("job", job),
                            ("instance", inst),
                            ("method", method),
                            ("code", code),
                        ]),
                        samples,
                    });
                }
            }
            let p = phase();
            let mut v = 100.0 * rng.f64();
            let samples = times(p)
                .map(|t| {
                    v += 0.37 * rng.f64();
                    (t, v)
                })
                .collect();
            out.push(Series {
                labels: l(&[
                    ("__name__", "process_cpu_seconds_total"),
                    ("job", job),
                    ("instance", inst),
                ]),
                samples,
            });
            let version = if job == "api" { "1.2.3" } else { "2.0.0" };
            let p = phase();
            out.push(Series {
                labels: l(&[
                    ("__name__", "build_info"),
                    ("job", job),
                    ("instance", inst),
                    ("version", version),
                ]),
                samples: times(p).map(|t| (t, 1.0)).collect(),
            });
            // queue_length: an integer random walk that touches zero.
            let p = phase();
            let mut q = 3.0f64;
            let samples = times(p)
                .map(|t| {
                    q = (q + (rng.next() % 5) as f64 - 2.0).max(0.0);
                    (t, q)
                })
                .collect();
            out.push(Series {
                labels: l(&[
                    ("__name__", "queue_length"),
                    ("job", job),
                    ("instance", inst),
                ]),
                samples,
            });
            // The latency histogram: cumulative buckets, _sum and _count.
            let les = ["0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"];
            let p = phase();
            let mut counts = [0.0f64; 7];
            let mut sum = 0.0;
            let mut rows: Vec<(i64, [f64; 7], f64)> = Vec::new();
            for t in times(p) {
                let reqs = 1 + rng.next() % 20;
                for _ in 0..reqs {
                    let d = rng.f64().powi(3) * 3.0;
                    sum += d;
                    for (i, le) in les.iter().enumerate() {
                        let bound: f64 = le.parse().unwrap_or(f64::INFINITY);
                        if d <= bound {
                            counts[i] += 1.0;
                        }
                    }
                }
                rows.push((t, counts, sum));
            }
            for (i, le) in les.iter().enumerate() {
                out.push(Series {
                    labels: l(&[
                        ("__name__", "http_request_duration_seconds_bucket"),
                        ("job", job),
                        ("instance", inst),
                        ("le", le),
                    ]),
                    samples: rows.iter().map(|(t, c, _)| (*t, c[i])).collect(),
                });
            }
            out.push(Series {
                labels: l(&[
                    ("__name__", "http_request_duration_seconds_sum"),
                    ("job", job),
                    ("instance", inst),
                ]),
                samples: rows.iter().map(|(t, _, s)| (*t, *s)).collect(),
            });
            out.push(Series {
                labels: l(&[
                    ("__name__", "http_request_duration_seconds_count"),
                    ("job", job),
                    ("instance", inst),
                ]),
                samples: rows.iter().map(|(t, c, _)| (*t, c[6])).collect(),
            });
        }
    }
    for (k, inst) in instances.iter().enumerate() {
        for cpu in ["0", "1"] {
            for mode in ["idle", "user", "system"] {
                let share = match mode {
                    "idle" => 0.7,
                    "user" => 0.2,
                    _ => 0.1,
                };
                let p = phase();
                let mut v = 1e4 * rng.f64();
                let samples = times(p)
                    .map(|t| {
                        v += 15.0 * share * (0.8 + 0.4 * rng.f64());
                        (t, v)
                    })
                    .collect();
                out.push(Series {
                    labels: l(&[
                        ("__name__", "node_cpu_seconds_total"),
                        ("job", "node"),
                        ("instance", inst),
                        ("cpu", cpu),
                        ("mode", mode),
                    ]),
                    samples,
                });
            }
        }
        let p = phase();
        let mut v = 4e9 + 1e9 * k as f64;
        let samples = times(p)
            .map(|t| {
                v += 1e6 * (rng.f64() - 0.55);
                (t, v.round())
            })
            .collect();
        out.push(Series {
            labels: l(&[
                ("__name__", "node_memory_free_bytes"),
                ("job", "node"),
                ("instance", inst),
            ]),
            samples,
        });
        for (r, room) in ["kitchen", "cellar", "attic"].iter().enumerate() {
            let p = phase();
            let base = [21.0, -3.0, 12.0][r];
            let samples = times(p)
                .map(|t| {
                    let x = (t - start) as f64 / 3.6e6;
                    let v = base + 6.0 * (x * 2.1 + k as f64).sin() + rng.f64() - 0.5;
                    (t, (v * 100.0).round() / 100.0)
                })
                .collect();
            out.push(Series {
                labels: l(&[
                    ("__name__", "temperature_celsius"),
                    ("job", "sensors"),
                    ("instance", inst),
                    ("room", room),
                ]),
                samples,
            });
        }
        // `up`: every job; api on host-2 is down for 20 minutes.
        for job in ["api", "web", "node"] {
            let p = phase();
            let samples = times(p)
                .map(|t| {
                    let down = job == "api"
                        && k == 2
                        && (start + 100 * 60_000..start + 120 * 60_000).contains(&t);
                    (t, if down { 0.0 } else { 1.0 })
                })
                .collect();
            out.push(Series {
                labels: l(&[("__name__", "up"), ("job", job), ("instance", inst)]),
                samples,
            });
        }
    }
    // flappy_gauge: a staleness marker at 72 min, back at 108 min.
    let p = phase();
    let mut samples = Vec::new();
    let mut marked = false;
    for t in times(p) {
        let m = (t - start) / 60_000;
        if (72..108).contains(&m) {
            if !marked {
                samples.push((t, stale_nan()));
                marked = true;
            }
            continue;
        }
        samples.push((t, (m % 17) as f64));
    }
    out.push(Series {
        labels: l(&[("__name__", "flappy_gauge"), ("instance", "f")]),
        samples,
    });
    // ended_gauge: stops at 81 min without a marker.
    let p = phase();
    out.push(Series {
        labels: l(&[("__name__", "ended_gauge"), ("instance", "e")]),
        samples: times(p)
            .take_while(|t| *t < start + 81 * 60_000)
            .map(|t| (t, ((t - start) / 60_000) as f64 * 0.5))
            .collect(),
    });
    // sparse_gauge: one sample per 10 minutes.
    let p = phase();
    out.push(Series {
        labels: l(&[("__name__", "sparse_gauge"), ("instance", "s")]),
        samples: times(p)
            .step_by(40)
            .map(|t| (t, ((t - start) / 600_000) as f64))
            .collect(),
    });
    out
}

/// The data as snappy-compressed remote write 1.0 bodies, one per
/// 10-minute slice, oldest first.
pub fn write_bodies(data: &[Series]) -> Vec<Vec<u8>> {
    let first = data
        .iter()
        .filter_map(|s| s.samples.first().map(|x| x.0))
        .min()
        .unwrap_or(0);
    let slice = 600_000;
    let mut slices: BTreeMap<i64, Vec<v1::TimeSeries>> = BTreeMap::new();
    for s in data {
        let mut labels: Vec<v1::Label> = s
            .labels
            .iter()
            .map(|(n, v)| v1::Label {
                name: n.as_bytes().to_vec(),
                value: v.as_bytes().to_vec(),
            })
            .collect();
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        let mut by_slice: BTreeMap<i64, Vec<v1::Sample>> = BTreeMap::new();
        for (t, v) in &s.samples {
            by_slice
                .entry((t - first) / slice)
                .or_default()
                .push(v1::Sample {
                    value: *v,
                    timestamp: *t,
                });
        }
        for (k, samples) in by_slice {
            slices.entry(k).or_default().push(v1::TimeSeries {
                labels: labels.clone(),
                samples,
                ..Default::default()
            });
        }
    }
    slices
        .into_values()
        .map(|ts| {
            let raw = v1::WriteRequest {
                timeseries: ts,
                ..Default::default()
            }
            .encode_to_vec();
            snap::raw::Encoder::new().compress_vec(&raw).unwrap()
        })
        .collect()
}

/// An answer, normalized for comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A refusal: its `errorType` and message.
    Error { error_type: String, message: String },
    /// `resultType` and the series in answer order (a scalar or string
    /// is one series with no labels).
    Data {
        result_type: String,
        series: Vec<(SeriesKey, Vec<(i64, String)>)>,
    },
}

/// Normalizes a Prometheus API answer.
pub fn normalize(status: u16, body: &str) -> Answer {
    let v: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => {
            return Answer::Error {
                error_type: format!("not JSON (HTTP {status})"),
                message: format!("{e}: {body}"),
            };
        }
    };
    if v["status"] != "success" {
        return Answer::Error {
            error_type: v["errorType"].as_str().unwrap_or("?").to_string(),
            message: v["error"].as_str().unwrap_or("").to_string(),
        };
    }
    let d = &v["data"];
    let result_type = d["resultType"].as_str().unwrap_or("?").to_string();
    let point = |p: &Value| -> (i64, String) {
        let t = (p[0].as_f64().unwrap_or(f64::NAN) * 1000.0).round() as i64;
        let v = match &p[1] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        (t, v)
    };
    let series = match result_type.as_str() {
        "scalar" | "string" => vec![(SeriesKey::new(), vec![point(&d["result"])])],
        _ => d["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let key: SeriesKey = r["metric"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect();
                let mut pts = Vec::new();
                if let Some(p) = r.get("value") {
                    pts.push(point(p));
                }
                for p in r["values"].as_array().into_iter().flatten() {
                    pts.push(point(p));
                }
                if let Some(h) = r.get("histogram") {
                    pts.push(point(h));
                }
                for h in r["histograms"].as_array().into_iter().flatten() {
                    pts.push(point(h));
                }
                pts.sort_by_key(|p| p.0);
                (key, pts)
            })
            .collect(),
    };
    Answer::Data {
        result_type,
        series,
    }
}

/// promqltest's float comparison (`almost.Equal` with its default
/// epsilon 1e-6): relative, with an absolute floor near zero; NaN equals
/// NaN, infinities equal themselves.
pub fn almost_equal(a: f64, b: f64) -> bool {
    const EPSILON: f64 = 1e-6;
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    let abs_sum = a.abs() + b.abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < EPSILON * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < EPSILON
}

fn values_agree(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => almost_equal(x, y),
        _ => false,
    }
}

/// Compares Prometheus' answer with Flightdeck's; `ordered` when the
/// series order is part of the answer (`sort`, `sort_desc`).
pub fn compare(prom: &Answer, fd: &Answer, ordered: bool) -> Result<(), String> {
    match (prom, fd) {
        (Answer::Error { error_type: a, .. }, Answer::Error { error_type: b, .. }) => {
            if a == b {
                Ok(())
            } else {
                Err(format!("errorType {a:?} vs {b:?}"))
            }
        }
        (
            Answer::Error {
                error_type,
                message,
            },
            Answer::Data { .. },
        ) => Err(format!(
            "Prometheus refused ({error_type}: {message}), Flightdeck answered"
        )),
        (
            Answer::Data { .. },
            Answer::Error {
                error_type,
                message,
            },
        ) => Err(format!(
            "Flightdeck refused ({error_type}: {message}), Prometheus answered"
        )),
        (
            Answer::Data {
                result_type: ta,
                series: sa,
            },
            Answer::Data {
                result_type: tb,
                series: sb,
            },
        ) => {
            if ta != tb {
                return Err(format!("resultType {ta} vs {tb}"));
            }
            if ordered {
                let ka: Vec<_> = sa.iter().map(|s| &s.0).collect();
                let kb: Vec<_> = sb.iter().map(|s| &s.0).collect();
                if ka != kb {
                    return Err(format!("series order {ka:?} vs {kb:?}"));
                }
            }
            let ma: BTreeMap<_, _> = sa.iter().map(|(k, v)| (k, v)).collect();
            let mb: BTreeMap<_, _> = sb.iter().map(|(k, v)| (k, v)).collect();
            if ma.len() != sa.len() || mb.len() != sb.len() {
                return Err("a series appears twice in one answer".into());
            }
            let only_a: Vec<_> = ma.keys().filter(|k| !mb.contains_key(*k)).collect();
            let only_b: Vec<_> = mb.keys().filter(|k| !ma.contains_key(*k)).collect();
            if !only_a.is_empty() || !only_b.is_empty() {
                return Err(format!(
                    "series only in Prometheus: {}; only in Flightdeck: {}",
                    show_keys(&only_a),
                    show_keys(&only_b)
                ));
            }
            for (k, pa) in &ma {
                let pb = mb[k];
                let ta: Vec<i64> = pa.iter().map(|p| p.0).collect();
                let tb: Vec<i64> = pb.iter().map(|p| p.0).collect();
                if ta != tb {
                    return Err(format!(
                        "{}: {} points at {} vs {} points at {}",
                        show_key(k),
                        ta.len(),
                        show_times(&ta),
                        tb.len(),
                        show_times(&tb)
                    ));
                }
                for (x, y) in pa.iter().zip(pb.iter()) {
                    if !values_agree(&x.1, &y.1) {
                        return Err(format!("{} at {}: {} vs {}", show_key(k), x.0, x.1, y.1));
                    }
                }
            }
            Ok(())
        }
    }
}

fn show_key(k: &SeriesKey) -> String {
    let mut s = String::from("{");
    for (i, (a, b)) in k.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{a}={b:?}");
    }
    s.push('}');
    s
}

fn show_keys(ks: &[&&SeriesKey]) -> String {
    let mut v: Vec<String> = ks.iter().take(5).map(|k| show_key(k)).collect();
    if ks.len() > 5 {
        v.push(format!("… ({} in all)", ks.len()));
    }
    format!("[{}]", v.join(", "))
}

fn show_times(ts: &[i64]) -> String {
    match ts {
        [] => "-".into(),
        [a] => a.to_string(),
        [a, .., b] => format!("{a}..{b}"),
    }
}

/// One evaluation of a query: instant at a time, or a range.
#[derive(Debug, Clone, Copy)]
enum Eval {
    Instant(i64),
    Range { start: i64, end: i64 },
}

impl Eval {
    fn path_and_form(self, query: &str) -> (&'static str, String) {
        let secs = |ms: i64| format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000));
        match self {
            Eval::Instant(t) => (
                "/api/v1/query",
                format!("query={}&time={}", enc(query), secs(t)),
            ),
            Eval::Range { start, end } => (
                "/api/v1/query_range",
                format!(
                    "query={}&start={}&end={}&step={RANGE_STEP_S}",
                    enc(query),
                    secs(start),
                    secs(end)
                ),
            ),
        }
    }
}

/// Flightdeck and Prometheus, loaded with the same data.
struct Pair {
    fd: Server,
    token: String,
    prom: Proc,
    prom_url: String,
    /// The instant evaluation times: the end, and inside the staleness gap.
    instants: [i64; 2],
    _tmp: tempfile::TempDir,
}

impl Pair {
    /// Starts both and loads the data; `None` when Prometheus is missing.
    fn start() -> Option<Pair> {
        let prometheus = program("prometheus", "FLIGHTDECK_PROMETHEUS")?;
        let fd = Server::binary_with(&["--host-metrics", "false"]);
        fd.project("sbs");
        let (_, token) = fd.token_in("sbs", &["metrics:write", "metrics:read"]);
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("prometheus.yml"),
            "global:\n  evaluation_interval: 1m\n",
        )
        .unwrap();
        let port = free_port();
        let mut cmd = Command::new(prometheus);
        cmd.arg(format!(
            "--config.file={}",
            tmp.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            tmp.path().join("prom-data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver");
        let mut prom = Proc::spawn("prometheus", cmd, tmp.path());
        let prom_url = format!("http://127.0.0.1:{port}");
        wait_for("Prometheus to be ready", Duration::from_secs(60), || {
            prom.check_running();
            match crate::harness::try_call("GET", &format!("{prom_url}/-/ready"), &[], None) {
                Ok(r) if r.status == 200 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });

        // The data ends a few minutes ago, on a whole minute.
        let now_ms = now_ns() / 1_000_000;
        let end = (now_ms / 60_000) * 60_000 - 5 * 60_000;
        let data = dataset(end);
        let bodies = write_bodies(&data);
        let samples: usize = data.iter().map(|s| s.samples.len()).sum();
        eprintln!(
            "side by side: {} series, {samples} samples in {} requests",
            data.len(),
            bodies.len()
        );
        let fd_auth = format!("Bearer {token}");
        for body in &bodies {
            for (url, auth) in [
                (fd.url("/api/v1/write"), Some(fd_auth.as_str())),
                (format!("{prom_url}/api/v1/write"), None),
            ] {
                let mut h = vec![
                    ("content-encoding", "snappy"),
                    ("x-prometheus-remote-write-version", "0.1.0"),
                ];
                if let Some(a) = auth {
                    h.push(("authorization", a));
                }
                let r = call(
                    "POST",
                    &url,
                    &h,
                    Some(("application/x-protobuf", body.clone())),
                );
                assert!(
                    r.status == 204 || r.status == 200,
                    "remote write to {url}: {} {}\n{}",
                    r.status,
                    r.body,
                    prom.log()
                );
            }
        }
        let start = end - SPAN_MS;
        let pair = Pair {
            fd,
            token,
            prom,
            prom_url,
            instants: [end - 42_500, start + 90 * 60_000 + 17_500],
            _tmp: tmp,
        };
        // Both hold every sample: count them the same way on both sides.
        for (name, want) in [
            (
                "flappy_gauge",
                data.iter().find(|s| s.labels[0].1 == "flappy_gauge"),
            ),
            (
                "sparse_gauge",
                data.iter().find(|s| s.labels[0].1 == "sparse_gauge"),
            ),
        ] {
            let n = want.map_or(0, |s| s.samples.len());
            for (who, a) in pair.both(&format!("{name}[4h]"), Eval::Instant(end)) {
                match a {
                    Answer::Data { series, .. } => {
                        let got: usize = series.iter().map(|s| s.1.len()).sum();
                        // The staleness marker is stored but never shown.
                        let shown = if name == "flappy_gauge" { n - 1 } else { n };
                        assert_eq!(got, shown, "{who}: {name}[4h] has {got} samples");
                    }
                    other => panic!("{who}: {name}[4h]: {other:?}"),
                }
            }
        }
        Some(pair)
    }

    fn ask(&self, prometheus: bool, query: &str, e: Eval) -> Answer {
        let (path, form) = e.path_and_form(query);
        let fd_auth = format!("Bearer {}", self.token);
        let (url, headers): (String, Vec<(&str, &str)>) = if prometheus {
            (format!("{}{path}", self.prom_url), vec![])
        } else {
            (self.fd.url(path), vec![("authorization", fd_auth.as_str())])
        };
        let r = call(
            "POST",
            &url,
            &headers,
            Some(("application/x-www-form-urlencoded", form.into_bytes())),
        );
        normalize(r.status, &r.body)
    }

    fn both(&self, query: &str, e: Eval) -> [(&'static str, Answer); 2] {
        [
            ("Prometheus", self.ask(true, query, e)),
            ("Flightdeck", self.ask(false, query, e)),
        ]
    }

    fn evals(&self, q: &Query) -> Vec<Eval> {
        let mut v: Vec<Eval> = self.instants.iter().map(|t| Eval::Instant(*t)).collect();
        if !q.instant_only {
            let end = self.instants[0];
            v.push(Eval::Range {
                start: end - RANGE_LEN_MS,
                end,
            });
        }
        v
    }
}

/// Runs the comparison over the selected queries and fails on any
/// unexpected difference (or expected one that went away).
fn run(select: impl Fn(&Query) -> bool, min_queries: usize) {
    let Some(mut pair) = Pair::start() else {
        return;
    };
    let expected = expected_differences();
    let all = queries();
    let chosen: Vec<&Query> = all.iter().filter(|q| select(q)).collect();
    assert!(
        chosen.len() >= min_queries,
        "only {} queries selected, want at least {min_queries}",
        chosen.len()
    );
    for q in expected.keys() {
        assert!(
            all.iter().any(|x| &x.text == q),
            "promql_expected_differences.txt lists {q:?}, which is not in promql_queries.txt"
        );
    }
    let (mut evals, mut agreed, mut listed) = (0usize, 0usize, 0usize);
    let mut failures: Vec<String> = Vec::new();
    for q in &chosen {
        let ordered_instant = q.text.starts_with("sort(") || q.text.starts_with("sort_desc(");
        let mut diffs = Vec::new();
        for e in pair.evals(q) {
            evals += 1;
            let p = pair.ask(true, &q.text, e);
            let f = pair.ask(false, &q.text, e);
            let ordered = ordered_instant && matches!(e, Eval::Instant(_));
            if let Err(why) = compare(&p, &f, ordered) {
                diffs.push(format!("{e:?}: {why}"));
            }
        }
        match (diffs.is_empty(), expected.get(&q.text)) {
            (true, None) => agreed += 1,
            (false, Some(_)) => listed += 1,
            (true, Some(why)) => failures.push(format!(
                "{}\n    agrees now; remove it from promql_expected_differences.txt (was: {why})",
                q.text
            )),
            (false, None) => failures.push(format!("{}\n    {}", q.text, diffs.join("\n    "))),
        }
        pair.prom.check_running();
    }
    eprintln!(
        "side by side: {} queries, {evals} evaluations: {agreed} agree, {listed} listed as \
         expected differences, {} fail",
        chosen.len(),
        failures.len()
    );
    if !failures.is_empty() {
        let shown: Vec<&String> = failures.iter().take(40).collect();
        panic!(
            "{} of {} queries differ from Prometheus:\n{}",
            failures.len(),
            chosen.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// The bare selectors of the list (instant and range selectors, offsets,
/// `@`, regex matchers, staleness): Flightdeck answers these today.
#[test]
fn promql_side_by_side_selectors() {
    run(|q| is_bare_selector(&q.text), 30);
}

/// Every query of the list; needs the PromQL engine (issue #6).
#[test]
fn promql_side_by_side_full() {
    run(|_| true, 200);
}

/// Queries whose `format_query` text differs from Prometheus 2.42's, and
/// why: `promql-parser`'s printer writes number literals as Rust does.
const FORMAT_DIFFERENCES: [(&str, &str); 5] = [
    ("Inf", "Prometheus prints +Inf"),
    (
        "minute(sparse_gauge * 0 + 1700000000)",
        "Prometheus prints 1.7e+09",
    ),
    (
        "days_in_month(vector(951782400))",
        "Prometheus prints 9.517824e+08",
    ),
    (
        "holt_winters(temperature_celsius[20m], 0.5, 0.5)",
        "unknown to promql-parser 0.11",
    ),
    (
        "holt_winters(queue_length[30m], 0.1, 0.9)",
        "unknown to promql-parser 0.11",
    ),
];

/// `/api/v1/format_query` of every query of the list, byte for byte
/// against Prometheus' answer (the refusals by `errorType`).
#[test]
fn format_query_side_by_side() {
    let Some(pair) = Pair::start() else {
        return;
    };
    let (mut same, mut listed, mut failures) = (0, 0, Vec::new());
    for q in queries() {
        let form = format!("query={}", enc(&q.text));
        let p = call(
            "POST",
            &format!("{}/api/v1/format_query", pair.prom_url),
            &[],
            Some((
                "application/x-www-form-urlencoded",
                form.clone().into_bytes(),
            )),
        );
        let f = call(
            "POST",
            &pair.fd.url("/api/v1/format_query"),
            &[("authorization", &format!("Bearer {}", pair.token))],
            Some(("application/x-www-form-urlencoded", form.into_bytes())),
        );
        let agree = if p.status == 200 {
            p.body == f.body
        } else {
            f.status == p.status && f.json()["errorType"] == p.json()["errorType"]
        };
        let known = FORMAT_DIFFERENCES.iter().any(|(k, _)| *k == q.text);
        match (agree, known) {
            (true, false) => same += 1,
            (false, true) => listed += 1,
            (true, true) => failures.push(format!("{}: agrees now, unlist it", q.text)),
            (false, false) => failures.push(format!("{}:\n  {}\n  {}", q.text, p.body, f.body)),
        }
    }
    eprintln!("format_query side by side: {same} identical, {listed} listed differences");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_query_list_is_diverse_and_well_formed() {
    let qs = queries();
    assert!(qs.len() >= 200, "{} queries", qs.len());
    let mut seen = std::collections::BTreeSet::new();
    for q in &qs {
        assert!(seen.insert(&q.text), "listed twice: {}", q.text);
    }
    for needle in [
        "rate(",
        "irate(",
        "increase(",
        "histogram_quantile(",
        "topk(",
        "bottomk(",
        "quantile(",
        "count_values(",
        "label_replace(",
        "label_join(",
        "group_left",
        "group_right",
        "ignoring",
        " unless ",
        " and ",
        " or ",
        "bool",
        "offset",
        "@ ",
        ":1m]",
        "absent(",
        "absent_over_time(",
        "holt_winters(",
        "predict_linear(",
        "quantile_over_time(",
        "last_over_time(",
        "stddev(",
        "stdvar(",
        "clamp(",
        "sort_desc(",
        "timestamp(",
        "day_of_week(",
        "scalar(",
        "vector(",
        "time()",
    ] {
        assert!(
            qs.iter().any(|q| q.text.contains(needle)),
            "no query uses {needle:?}"
        );
    }
    let selectors = qs.iter().filter(|q| is_bare_selector(&q.text)).count();
    assert!(selectors >= 30, "{selectors} bare selectors");
    let _ = expected_differences();
}

#[test]
fn bare_selectors_are_told_apart() {
    for q in [
        "up",
        "up{job=\"a(b)+c\"}",
        "{__name__=~\"x|y\"}",
        "x offset 5m",
        "x offset -30s",
        "x @ end()",
        "x[5m]",
        "x{a=\"}\"}[1h] offset 1m @ 100",
        "node:rule:rate5m",
    ] {
        assert!(is_bare_selector(q), "{q}");
    }
    for q in [
        "rate(x[5m])",
        "x + 1",
        "sum(x)",
        "x[5m:1m]",
        "1",
        "\"s\"",
        "x and y",
        "-x",
        "x > 1",
        "time()",
        "Inf",
        "NaN",
    ] {
        assert!(!is_bare_selector(q), "{q}");
    }
}

#[test]
fn answers_compare_like_promqltest() {
    let a = |body: &str| normalize(200, body);
    let vec = |v: &str| {
        a(&format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"a":"1"}},"value":[10.5,"{v}"]}}]}}}}"#
        ))
    };
    assert!(compare(&vec("1"), &vec("1.0000000001"), false).is_ok());
    assert!(compare(&vec("1"), &vec("1.01"), false).is_err());
    assert!(compare(&vec("NaN"), &vec("NaN"), false).is_ok());
    assert!(compare(&vec("+Inf"), &vec("+Inf"), false).is_ok());
    assert!(compare(&vec("+Inf"), &vec("-Inf"), false).is_err());
    assert!(compare(&vec("0"), &vec("1e-300"), false).is_err());
    let other_labels = a(
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"2"},"value":[10.5,"1"]}]}}"#,
    );
    assert!(compare(&vec("1"), &other_labels, false).is_err());
    let err = |t: &str| {
        a(&format!(
            r#"{{"status":"error","errorType":"{t}","error":"x"}}"#
        ))
    };
    assert!(compare(&err("bad_data"), &err("bad_data"), false).is_ok());
    assert!(compare(&err("bad_data"), &err("execution"), false).is_err());
    assert!(compare(&err("bad_data"), &vec("1"), false).is_err());
    let scalar = a(r#"{"status":"success","data":{"resultType":"scalar","result":[10.5,"2"]}}"#);
    assert!(compare(&scalar, &vec("2"), false).is_err());
    let two = |x: &str, y: &str| {
        a(&format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"a":"{x}"}},"value":[1,"1"]}},{{"metric":{{"a":"{y}"}},"value":[1,"1"]}}]}}}}"#
        ))
    };
    assert!(compare(&two("1", "2"), &two("2", "1"), false).is_ok());
    assert!(compare(&two("1", "2"), &two("2", "1"), true).is_err());
}
