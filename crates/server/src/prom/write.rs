//! Metric ingest handlers: Prometheus remote write 1.0/2.0 at
//! `POST /api/v1/write` and OTLP/HTTP metrics at `POST /v1/metrics`.
//!
//! Each is a few lines around the `ingest` decoders and `tsdb::Db::append`
//! (remote write 1.0: `tsdb::Db::append_keyed`, keyed by the raw label
//! bytes, so known series skip label decoding),
//! run on tokio's blocking pool (decoding is CPU work, the append waits for
//! the WAL's fsync). Mimir's partial semantics: series that fail
//! validation or storage checks are left out, the rest is stored, and the
//! answer is a 400 naming the first offender and the count per reason, so
//! a client does not retry what can never succeed. A request that cannot
//! be decoded at all changes nothing.

use std::fmt::Write as _;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ingest::remote_write::Version;

use super::api::{ErrorType, PromError};
use super::{DataCaller, MetricsStore, store};
use crate::AppState;
use crate::telemetry::{INGESTED_SAMPLES, REJECTED_SAMPLES};

fn header(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Maps a decoding error to its one status.
fn decode_error(e: ingest::DecodeError) -> PromError {
    let kind = match e.http_status() {
        413 => ErrorType::TooLarge,
        415 => ErrorType::UnsupportedMediaType,
        _ => ErrorType::BadData,
    };
    PromError::new(kind, e.to_string())
}

/// Maps a store error: a poisoned or failing disk is 503 (retry later,
/// nothing was acknowledged), damage is 500.
fn store_error(e: tsdb::Error) -> PromError {
    match e {
        tsdb::Error::InvalidInput(m) => PromError::bad_data(m),
        tsdb::Error::Corrupt { .. } => PromError::internal(e),
        _ => PromError::new(ErrorType::Unavailable, e.to_string()),
    }
}

/// Rejection messages quoted in an answer, one per reason at most.
const EXAMPLES: usize = 5;

/// What one write stored and left out.
struct Outcome {
    stored_samples: usize,
    stored_histograms: usize,
    /// Count per reason (ingest validation and storage checks together).
    rejected: Vec<(&'static str, usize)>,
    /// The first rejections' messages (at most [`EXAMPLES`]).
    examples: Vec<String>,
}

impl Outcome {
    fn rejected_total(&self) -> usize {
        self.rejected.iter().map(|(_, n)| n).sum()
    }

    fn add(&mut self, reason: &'static str, n: usize, message: impl FnOnce() -> String) {
        if n == 0 {
            return;
        }
        let new_reason = !self.rejected.iter().any(|(r, _)| *r == reason);
        if new_reason && self.examples.len() < EXAMPLES {
            self.examples.push(message());
        }
        match self.rejected.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, c)) => *c += n,
            None => self.rejected.push((reason, n)),
        }
    }

    /// `3 samples rejected (out_of_order: 2, label_invalid: 1); e.g. …; …`
    fn message(&self) -> String {
        let mut m = format!("{} samples rejected (", self.rejected_total());
        for (i, (r, n)) in self.rejected.iter().enumerate() {
            let _ = write!(m, "{}{r}: {n}", if i > 0 { ", " } else { "" });
        }
        let _ = write!(m, "); e.g. {}", self.examples.join("; "));
        m
    }
}

/// Validates and stores a decoded batch for `project`.
fn store_batch(
    m: &MetricsStore,
    project: &str,
    mut batch: model::WriteBatch,
    out: &mut Outcome,
) -> Result<(), PromError> {
    let limits = m.limits_for(project);
    let rejections = ingest::validate::apply(&mut batch, limits).map_err(decode_error)?;
    for r in &rejections {
        out.add(r.reason.as_str(), r.samples.max(1), || r.message.clone());
    }
    let report = m.db.append(project, &batch).map_err(store_error)?;
    add_report(m, project, &report, out);
    Ok(())
}

/// Remote write 1.0 through the store's raw-key cache
/// (`tsdb::Db::append_keyed`): a series the project already holds is
/// stored without its labels being decoded, validated or compared. The
/// same answer as [`ingest::remote_write::decode_limited`] followed by
/// [`store_batch`] (decoding errors, rejections and their order, report).
fn store_v1_keyed(
    m: &MetricsStore,
    project: &str,
    raw: &[u8],
    out: &mut Outcome,
) -> Result<(), PromError> {
    use ingest::remote_write::keyed::{KeyedV1, Rejections};
    let limits = m.limits_for(project);
    let KeyedV1 {
        series,
        samples,
        histograms,
        metadata,
        rejections: decoded,
    } = KeyedV1::decode(raw, limits).map_err(decode_error)?;
    let salt = KeyedV1::salt(limits);
    let batch = tsdb::KeyedBatch {
        salt: &salt,
        series: series
            .iter()
            .map(|s| tsdb::KeyedSeries {
                key: &s.key,
                samples: &samples[s.samples.clone()],
                histograms: &histograms[s.histograms.clone()],
            })
            .collect(),
        metadata,
    };
    let mut rejections: Rejections = decoded;
    let report =
        m.db.append_keyed(project, &batch, &mut |i| {
            series[i].labels(limits, &mut rejections)
        })
        .map_err(store_error)?;
    for r in &rejections.into_list() {
        out.add(r.reason.as_str(), r.samples.max(1), || r.message.clone());
    }
    add_report(m, project, &report, out);
    Ok(())
}

/// Adds the store's rejections to `out`.
fn add_report(m: &MetricsStore, project: &str, report: &tsdb::AppendReport, out: &mut Outcome) {
    out.stored_samples += report.accepted_samples;
    out.stored_histograms += report.accepted_histograms;
    for reason in tsdb::RejectReason::ALL {
        let n = report.rejected_count(reason);
        let first = report.rejected.iter().find(|r| r.reason == reason);
        out.add(reason.as_str(), n, || match first {
            Some(r) => format!(
                "{}: sample at {} of series {}{}",
                reason_text(reason),
                super::api::rfc3339_ms(r.t),
                r.labels,
                if reason == tsdb::RejectReason::SeriesLimit {
                    format!(
                        " (limit max_series_per_project={})",
                        m.series_limit_for(project)
                    )
                } else {
                    String::new()
                }
            ),
            None => reason_text(reason).to_string(),
        });
    }
}

fn reason_text(r: tsdb::RejectReason) -> &'static str {
    match r {
        tsdb::RejectReason::OutOfOrder => {
            "out of order sample (older than the series' newest sample, outside the out-of-order window)"
        }
        tsdb::RejectReason::TooOld => {
            "sample too old (before the oldest time the head still accepts)"
        }
        tsdb::RejectReason::DuplicateTimestamp => {
            "duplicate sample for timestamp (same time, different value)"
        }
        tsdb::RejectReason::SeriesLimit => "per-project series limit exceeded: new series refused",
        tsdb::RejectReason::InvalidHistogram => "invalid native histogram",
    }
}

/// Validates and stores a batch that did not come over HTTP (the host
/// metrics loop, scrapes), counting it under `protocol`. Blocking.
pub fn ingest_batch(
    st: &AppState,
    project: &str,
    protocol: &str,
    batch: model::WriteBatch,
) -> Result<(), PromError> {
    let m = store(st)?;
    let mut out = Outcome {
        stored_samples: 0,
        stored_histograms: 0,
        rejected: Vec::new(),
        examples: Vec::new(),
    };
    store_batch(&m, project, batch, &mut out)?;
    count(st, project, protocol, &out);
    if out.rejected_total() > 0 {
        return Err(PromError::bad_data(out.message()));
    }
    Ok(())
}

/// Every `interval`, stores the host's, the process' and Flightdeck's own
/// metrics (what `GET /metrics` shows) in the default project, through the
/// same validation and store as a remote write, labelled as a scrape would
/// be (`job="flightdeck"`, `instance="<host name>"`). Runs for the
/// server's life.
pub async fn host_metrics_loop(st: AppState, interval: std::time::Duration) {
    let host = std::sync::Arc::new(
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned(),
    );
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let st2 = st.clone();
        let host = host.clone();
        let r = tokio::task::spawn_blocking(move || {
            let t_ms = st2.now() / 1_000_000;
            let batch =
                crate::telemetry::collect_all(&st2).into_target_batch(t_ms, "flightdeck", &host);
            ingest_batch(&st2, meta::DEFAULT_PROJECT, "agent", batch)
        })
        .await;
        let ok = matches!(r, Ok(Ok(())));
        if let Ok(Err(e)) = &r {
            tracing::warn!(error = %e.message, "host metrics collection was not stored completely");
        }
        st.telemetry.add(
            crate::telemetry::SCRAPES,
            &[if ok { "success" } else { "failure" }],
            1.0,
        );
    }
}

fn count(st: &AppState, project: &str, protocol: &str, out: &Outcome) {
    st.telemetry.add(
        INGESTED_SAMPLES,
        &[project, protocol],
        (out.stored_samples + out.stored_histograms) as f64,
    );
    for (reason, n) in &out.rejected {
        st.telemetry
            .add(REJECTED_SAMPLES, &[project, protocol, reason], *n as f64);
    }
}

/// `POST /api/v1/write`: remote write 1.0, or 2.0 when the Content-Type asks.
pub async fn remote_write(
    State(st): State<AppState>,
    Extension(dc): Extension<DataCaller>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let m = match store(&st) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let version = match Version::from_content_type(header(&headers, header::CONTENT_TYPE)) {
        Ok(v) => v,
        Err(e) => return decode_error(e).into_response(),
    };
    // Remote write bodies are always snappy; a missing header means snappy.
    let encoding = header(&headers, header::CONTENT_ENCODING)
        .unwrap_or("snappy")
        .to_string();
    let project = dc.project.name.clone();
    let st2 = st.clone();
    let r = tokio::task::spawn_blocking(move || {
        let raw = ingest::decompress::content_decode(Some(&encoding), &body, m.max_request_bytes)
            .map_err(decode_error)?;
        let mut out = Outcome {
            stored_samples: 0,
            stored_histograms: 0,
            rejected: Vec::new(),
            examples: Vec::new(),
        };
        if version == Version::V1 {
            store_v1_keyed(&m, &project, &raw, &mut out)?;
        } else {
            let decoded =
                ingest::remote_write::decode_limited(version, &raw, m.limits_for(&project))
                    .map_err(decode_error)?;
            for r in &decoded.rejected {
                out.add(r.reason.as_str(), r.samples.max(1), || r.message.clone());
            }
            store_batch(&m, &project, decoded.batch, &mut out)?;
        }
        count(&st2, &project, "remote_write", &out);
        Ok::<_, PromError>(out)
    })
    .await;
    let out = match r {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return e.into_response(),
        Err(e) => return PromError::internal(e).into_response(),
    };
    let mut resp = if out.rejected_total() == 0 {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (StatusCode::BAD_REQUEST, out.message()).into_response()
    };
    if version == Version::V2 {
        let h = resp.headers_mut();
        let n = |x: usize| {
            HeaderValue::from_str(&x.to_string()).unwrap_or(HeaderValue::from_static("0"))
        };
        h.insert(
            "x-prometheus-remote-write-samples-written",
            n(out.stored_samples),
        );
        h.insert(
            "x-prometheus-remote-write-histograms-written",
            n(out.stored_histograms),
        );
        // Exemplars are decoded but not stored (yet): none written.
        h.insert("x-prometheus-remote-write-exemplars-written", n(0));
    }
    resp
}

/// `POST /v1/metrics`: OTLP/HTTP, protobuf or JSON (optionally gzip). The
/// answer is an `ExportMetricsServiceResponse` in the request's encoding,
/// with `partial_success` when points were left out (OTLP answers 200 then).
pub async fn otlp_metrics(
    State(st): State<AppState>,
    Extension(dc): Extension<DataCaller>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let m = match store(&st) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let ct = header(&headers, header::CONTENT_TYPE).unwrap_or("");
    let json = match ingest::otlp::content_is_json(ct) {
        Ok(json) => json,
        Err(msg) => {
            return PromError::new(ErrorType::UnsupportedMediaType, msg).into_response();
        }
    };
    let encoding = header(&headers, header::CONTENT_ENCODING).map(str::to_string);
    let project = dc.project.name.clone();
    let st2 = st.clone();
    let r = tokio::task::spawn_blocking(move || {
        let raw =
            ingest::decompress::content_decode(encoding.as_deref(), &body, m.max_request_bytes)
                .map_err(decode_error)?;
        let decoded = if json {
            ingest::otlp::decode_metrics_json(&raw)
        } else {
            ingest::otlp::decode_metrics_protobuf(&raw)
        }
        .map_err(decode_error)?;
        let mut out = Outcome {
            stored_samples: 0,
            stored_histograms: 0,
            rejected: Vec::new(),
            examples: Vec::new(),
        };
        if decoded.rejected_data_points > 0 {
            let first = decoded.messages.first().cloned().unwrap_or_default();
            out.add(
                "unsupported_data_point",
                decoded.rejected_data_points as usize,
                || first,
            );
        }
        store_batch(&m, &project, decoded.batch, &mut out)?;
        count(&st2, &project, "otlp", &out);
        Ok::<_, PromError>(out)
    })
    .await;
    let out = match r {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return e.into_response(),
        Err(e) => return PromError::internal(e).into_response(),
    };
    let rejected = out.rejected_total() as i64;
    let message = if rejected > 0 {
        out.message()
    } else {
        String::new()
    };
    let (body, ct) = if json {
        (otlp_response_json(rejected, &message), "application/json")
    } else {
        (
            otlp_response_protobuf(rejected, &message),
            "application/x-protobuf",
        )
    };
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    resp
}

/// `ExportMetricsServiceResponse` as protobuf: field 1 `partial_success`
/// { 1: int64 `rejected_data_points`, 2: string `error_message` }, empty
/// when everything was accepted. `ExportLogsServiceResponse` has the same
/// layout (`rejected_log_records`).
pub(crate) fn otlp_response_protobuf(rejected: i64, message: &str) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    if rejected == 0 && message.is_empty() {
        return Vec::new();
    }
    let mut inner = Vec::new();
    if rejected != 0 {
        inner.push(0x08); // field 1, varint
        varint(&mut inner, rejected as u64);
    }
    if !message.is_empty() {
        inner.push(0x12); // field 2, length-delimited
        varint(&mut inner, message.len() as u64);
        inner.extend_from_slice(message.as_bytes());
    }
    let mut out = vec![0x0a]; // field 1, length-delimited
    varint(&mut out, inner.len() as u64);
    out.extend_from_slice(&inner);
    out
}

/// The same in OTLP's JSON mapping (int64 as a string, camelCase).
fn otlp_response_json(rejected: i64, message: &str) -> Vec<u8> {
    otlp_response_json_named(rejected, message, "rejectedDataPoints")
}

/// The same with the count's field named `count_field` (logs:
/// `rejectedLogRecords`).
pub(crate) fn otlp_response_json_named(rejected: i64, message: &str, count_field: &str) -> Vec<u8> {
    if rejected == 0 && message.is_empty() {
        return b"{}".to_vec();
    }
    let mut s =
        format!("{{\"partialSuccess\":{{\"{count_field}\":\"{rejected}\",\"errorMessage\":");
    super::api::json_str(&mut s, message);
    s.push_str("}}");
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_partial_success_encodings() {
        assert!(otlp_response_protobuf(0, "").is_empty());
        assert_eq!(
            otlp_response_protobuf(3, "x"),
            vec![0x0a, 5, 0x08, 3, 0x12, 1, b'x']
        );
        assert_eq!(otlp_response_json(0, ""), b"{}".to_vec());
        assert_eq!(
            String::from_utf8(otlp_response_json(2, "a\"b")).unwrap(),
            r#"{"partialSuccess":{"rejectedDataPoints":"2","errorMessage":"a\"b"}}"#
        );
    }
}
