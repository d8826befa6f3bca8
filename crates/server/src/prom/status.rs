//! `/api/v1/status/runtimeinfo` and `/api/v1/status/flags` in Prometheus'
//! shapes, filled with Flightdeck's own values.
//!
//! `runtimeinfo` keeps Prometheus' field names (Grafana and tools read
//! them) but says what is true here: the Go runtime fields are mapped to
//! their nearest tokio equivalent (`goroutineCount`: live tokio tasks,
//! `GOMAXPROCS`: runtime worker threads), `GOMEMLIMIT` is Go's "no limit"
//! value since none is set, and `GOGC`/`GODEBUG` are empty (Go leaves
//! them empty when the variables are unset). Flightdeck reads its
//! configuration once at start, so the last configuration time is the
//! start time and it never failed to reload.
//!
//! `flags` is the map of effective settings the binary hands over in
//! [`super::MetricsStore::flags`], named like Prometheus' flags where one
//! exists (`storage.tsdb.retention.time`, `query.lookback-delta`, …).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::api::{PromError, json_str, success};
use super::store;
use crate::AppState;

/// The flag naming the retention time (Prometheus' name).
pub const RETENTION_TIME_FLAG: &str = "storage.tsdb.retention.time";
/// The flag naming the retention size (Prometheus' name; `0B`: none).
pub const RETENTION_SIZE_FLAG: &str = "storage.tsdb.retention.size";

/// Go's `math.MaxInt64`, `GOMEMLIMIT` when no limit is set.
const NO_MEMORY_LIMIT: i64 = i64::MAX;

/// Bytes as Prometheus prints a size flag (`units.Base2Bytes`): every
/// binary unit that has a non-zero part, largest first (`1GiB512MiB`,
/// `0B` for none).
pub fn format_bytes(n: u64) -> String {
    if n == 0 {
        return "0B".into();
    }
    const UNITS: [(&str, u32); 6] = [
        ("EiB", 60),
        ("PiB", 50),
        ("TiB", 40),
        ("GiB", 30),
        ("MiB", 20),
        ("KiB", 10),
    ];
    let mut rest = n;
    let mut out = String::new();
    for (unit, shift) in UNITS {
        let v = rest >> shift;
        if v > 0 {
            out.push_str(&format!("{v}{unit}"));
            rest -= v << shift;
        }
    }
    if rest > 0 {
        out.push_str(&format!("{rest}B"));
    }
    out
}

/// Prometheus' `storageRetention` string: the time, the size, or
/// `"<time> or <size>"` when both limit the store.
pub fn storage_retention(flags: &BTreeMap<String, String>) -> String {
    let time = flags
        .get(RETENTION_TIME_FLAG)
        .filter(|s| !s.is_empty() && *s != "0s");
    let size = flags
        .get(RETENTION_SIZE_FLAG)
        .filter(|s| !s.is_empty() && *s != "0B");
    match (time, size) {
        (Some(t), Some(s)) => format!("{t} or {s}"),
        (Some(t), None) => t.clone(),
        (None, Some(s)) => s.clone(),
        (None, None) => String::new(),
    }
}

/// Unix nanoseconds as Go's `time.Time` JSON (RFC 3339 with fraction).
fn go_time(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

/// The `data` of `runtimeinfo`.
pub fn runtime_info(st: &AppState) -> Result<String, PromError> {
    let m = store(st)?;
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let (tasks, workers) = match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            let rm = h.metrics();
            (rm.num_alive_tasks(), rm.num_workers())
        }
        Err(_) => (0, 0),
    };
    let started = go_time(st.started_ns);
    let mut out = String::from("{\"startTime\":");
    json_str(&mut out, &started);
    out.push_str(",\"CWD\":");
    json_str(&mut out, &cwd);
    out.push_str(",\"reloadConfigSuccess\":true,\"lastConfigTime\":");
    json_str(&mut out, &started);
    out.push_str(&format!(
        ",\"corruptionCount\":0,\"goroutineCount\":{tasks},\"GOMAXPROCS\":{workers},\
         \"GOMEMLIMIT\":{NO_MEMORY_LIMIT},\"GOGC\":\"\",\"GODEBUG\":\"\",\"storageRetention\":"
    ));
    json_str(&mut out, &storage_retention(&m.flags));
    out.push('}');
    Ok(out)
}

/// `GET /api/v1/status/runtimeinfo`
pub async fn runtimeinfo(State(st): State<AppState>) -> Response {
    match runtime_info(&st) {
        Ok(d) => success(&d, &[]),
        Err(e) => e.into_response(),
    }
}

/// The `data` of `flags`: an object of strings, keys sorted.
pub fn flags_json(flags: &BTreeMap<String, String>) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in flags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(&mut out, k);
        out.push(':');
        json_str(&mut out, v);
    }
    out.push('}');
    out
}

/// `GET /api/v1/status/flags`
pub async fn flags(State(st): State<AppState>) -> Response {
    match store(&st) {
        Ok(m) => success(&flags_json(&m.flags), &[]),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_like_prometheus() {
        for (n, want) in [
            (0, "0B"),
            (1, "1B"),
            (1024, "1KiB"),
            (512 << 20, "512MiB"),
            ((1 << 30) + (512 << 20), "1GiB512MiB"),
            ((10 << 30) + 5, "10GiB5B"),
        ] {
            assert_eq!(format_bytes(n), want, "{n}");
        }
    }

    #[test]
    fn retention_string() {
        let mut f = BTreeMap::new();
        assert_eq!(storage_retention(&f), "");
        f.insert(RETENTION_TIME_FLAG.to_string(), "15d".to_string());
        f.insert(RETENTION_SIZE_FLAG.to_string(), "0B".to_string());
        assert_eq!(storage_retention(&f), "15d");
        f.insert(RETENTION_SIZE_FLAG.to_string(), "1GiB".to_string());
        assert_eq!(storage_retention(&f), "15d or 1GiB");
    }

    #[test]
    fn flags_are_a_sorted_string_map() {
        let f: BTreeMap<String, String> = [("b", "2"), ("a", "x\"y")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(flags_json(&f), r#"{"a":"x\"y","b":"2"}"#);
    }

    #[test]
    fn go_times() {
        assert_eq!(go_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            go_time(1_435_781_451_781_000_000),
            "2015-07-01T20:10:51.781Z"
        );
    }
}
