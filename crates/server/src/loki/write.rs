//! Log push handlers: `POST /loki/api/v1/push` (Loki JSON, gzip JSON,
//! protobuf + snappy) and `POST /v1/logs` (OTLP/HTTP protobuf or JSON,
//! optionally gzip).
//!
//! Each decodes the body with `ingest` on tokio's blocking pool, applies
//! the project's limits, and appends what is left to the `logstore`
//! (durable when `append` returns). In order:
//!
//! 1. a body that cannot be decoded refuses the request (400, 413 or 415;
//!    nothing stored);
//! 2. streams and entries that break a limit (`ingest::logs::validate`)
//!    are left out and counted;
//! 3. if the accepted bytes do not fit the project's token bucket
//!    (`ingestion_rate_mb`, `ingestion_burst_size_mb`), the whole request
//!    is refused with 429 (nothing stored; the client retries later);
//! 4. new streams beyond `max_streams_per_project` are left out;
//! 5. the rest is stored.
//!
//! Loki push answers 204 when everything was stored. When something was
//! left out (the rest is stored) it names each reason with a count and an
//! example, with Loki's status: 429 when a stream was refused for
//! `max_streams_per_project` (the limit counts *active* streams, so a retry
//! may pass once some go idle), else 400 (a line too long or too old fails
//! the same way on every retry). See [`Outcome::status`]. OTLP answers 200
//! with `partial_success` in either case, as the OTLP spec asks.

use std::fmt::Write as _;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ingest::logs::{LogStream, Validated};

use super::{INGESTED_BYTES, INGESTED_LINES, Logs, REJECTED_LINES};
use crate::AppState;
use crate::prom::DataCaller;

/// A refusal: status and plain-text message (Loki answers text).
#[derive(Debug)]
pub struct PushError {
    pub status: StatusCode,
    pub message: String,
}

impl PushError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        PushError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for PushError {
    fn into_response(self) -> Response {
        let mut m = self.message;
        m.push('\n');
        (self.status, m).into_response()
    }
}

fn decode_error(e: ingest::DecodeError) -> PushError {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    PushError::new(status, e.to_string())
}

fn store_error(e: logstore::Error) -> PushError {
    match e {
        logstore::Error::InvalidInput(m) => PushError::new(StatusCode::BAD_REQUEST, m),
        logstore::Error::Corrupt { .. } => {
            PushError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
        _ => PushError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

fn logs(st: &AppState) -> Result<std::sync::Arc<Logs>, PushError> {
    st.logs.clone().ok_or_else(|| {
        PushError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the log store is not enabled on this server",
        )
    })
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Loki's reason name for a stream refused by `max_streams_per_project`.
pub const STREAM_LIMIT: &str = "stream_limit";

/// What one push stored and left out.
#[derive(Debug, Default)]
pub struct Outcome {
    pub stored_lines: usize,
    pub stored_bytes: usize,
    /// Lines per reason.
    pub rejected: Vec<(&'static str, usize)>,
    /// One example message per reason.
    pub examples: Vec<String>,
}

impl Outcome {
    pub fn rejected_total(&self) -> usize {
        self.rejected.iter().map(|(_, n)| n).sum()
    }

    fn add(&mut self, reason: &'static str, n: usize, message: &str) {
        match self.rejected.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, c)) => *c += n,
            None => {
                self.rejected.push((reason, n));
                self.examples.push(message.to_string());
            }
        }
    }

    /// The status of a Loki push that left something out: 429 (Too Many
    /// Requests) when any stream was refused for the stream limit, as Loki
    /// answers its per-tenant stream limit; 400 when only validation failed.
    ///
    /// When both happened, 429 wins. Loki does the same: its distributor keeps
    /// the validation error aside, sends the valid streams to the ingesters,
    /// returns the ingester's 429 for the stream limit if there is one, and
    /// the 400 only when the valid streams went through. It is also the
    /// useful answer: a 429 says a retry may succeed later, and the message
    /// still counts every reason.
    pub fn status(&self) -> StatusCode {
        if self.rejected.iter().any(|(r, _)| *r == STREAM_LIMIT) {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::BAD_REQUEST
        }
    }

    /// `3 log lines rejected (line_too_long: 2, stream_limit: 1); e.g. …; …`
    pub fn message(&self) -> String {
        let mut m = format!("{} log lines rejected (", self.rejected_total());
        for (i, (r, n)) in self.rejected.iter().enumerate() {
            let _ = write!(m, "{}{r}: {n}", if i > 0 { ", " } else { "" });
        }
        let _ = write!(m, "); e.g. {}", self.examples.join("; "));
        m
    }
}

/// Validates and stores decoded streams for `project` (blocking): the
/// steps 2–5 of the module doc. Also counts them in the self-metrics.
pub fn ingest_streams(
    st: &AppState,
    l: &Logs,
    project: &str,
    protocol: &str,
    streams: Vec<LogStream>,
) -> Result<Outcome, PushError> {
    let limits = l.limits_for(project);
    let now = st.now();
    let Validated {
        streams: valid,
        rejected,
    } = ingest::logs::validate(streams, &limits.entries, now);
    let mut out = Outcome::default();
    for r in &rejected {
        out.add(r.reason.as_str(), r.entries, &r.message);
    }
    let bytes: usize = valid
        .iter()
        .flat_map(|s| &s.entries)
        .map(ingest::logs::entry_bytes)
        .sum();
    let lines: usize = valid.iter().map(|s| s.entries.len()).sum();
    if lines > 0 && !l.rate.take(project, bytes, limits, now) {
        st.telemetry.add(
            REJECTED_LINES,
            &[project, protocol, "rate_limited"],
            lines as f64,
        );
        return Err(PushError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "ingestion rate limit exceeded for project {project} (limit ingestion_rate_mb={} \
                 with ingestion_burst_size_mb={}) while attempting to ingest {lines} lines \
                 totaling {bytes} bytes; nothing was stored: reduce the log volume, send \
                 smaller batches, or raise the limit",
                limits.rate_bytes / super::limits::MB,
                limits.burst_bytes / super::limits::MB,
            ),
        ));
    }
    let labels: Vec<&model::Labels> = valid.iter().map(|s| &s.labels).collect();
    let admitted = l.streams.admit(project, &labels, limits.max_streams, || {
        l.store.series(project, &[], i64::MIN, i64::MAX)
    });
    let mut batches = Vec::with_capacity(valid.len());
    for (s, ok) in valid.into_iter().zip(admitted) {
        if !ok {
            out.add(
                STREAM_LIMIT,
                s.entries.len(),
                &format!(
                    "new stream refused, the project holds the most streams allowed \
                     (limit max_streams_per_project={}): stream {}",
                    limits.max_streams, s.labels
                ),
            );
            continue;
        }
        batches.push(logstore::StreamBatch {
            labels: s.labels,
            entries: s
                .entries
                .into_iter()
                .map(|e| logstore::Entry {
                    ts: e.ts,
                    line: e.line,
                    metadata: e.metadata,
                })
                .collect(),
        });
    }
    if !batches.is_empty() {
        l.store.append(project, &batches).map_err(store_error)?;
        out.stored_lines = batches.iter().map(|b| b.entries.len()).sum();
        out.stored_bytes = batches
            .iter()
            .flat_map(|b| &b.entries)
            .map(|e| {
                e.line.len()
                    + e.metadata
                        .iter()
                        .map(|(n, v)| n.len() + v.len())
                        .sum::<usize>()
            })
            .sum();
    }
    st.telemetry.add(
        INGESTED_LINES,
        &[project, protocol],
        out.stored_lines as f64,
    );
    st.telemetry.add(
        INGESTED_BYTES,
        &[project, protocol],
        out.stored_bytes as f64,
    );
    for (reason, n) in &out.rejected {
        st.telemetry
            .add(REJECTED_LINES, &[project, protocol, reason], *n as f64);
    }
    Ok(out)
}

/// `POST /loki/api/v1/push`.
pub async fn push(
    State(st): State<AppState>,
    Extension(dc): Extension<DataCaller>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let l = match logs(&st) {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    let format = match ingest::loki::PushFormat::from_content_type(header_str(
        &headers,
        header::CONTENT_TYPE,
    )) {
        Ok(f) => f,
        Err(e) => return decode_error(e).into_response(),
    };
    let encoding = header_str(&headers, header::CONTENT_ENCODING).map(str::to_string);
    let project = dc.project.name.clone();
    let st2 = st.clone();
    let r = tokio::task::spawn_blocking(move || {
        let max = l.config.max_request_bytes;
        let raw = ingest::decompress::content_decode(encoding.as_deref(), &body, max)
            .map_err(decode_error)?;
        let streams = match format {
            ingest::loki::PushFormat::Json => ingest::loki::decode_push_json(&raw),
            // Loki's protobuf body is always snappy-compressed (block
            // format), under any Content-Encoding.
            ingest::loki::PushFormat::Protobuf => ingest::decompress::snappy_block(&raw, max)
                .and_then(|pb| ingest::loki::decode_push_protobuf(&pb)),
        }
        .map_err(decode_error)?;
        ingest_streams(&st2, &l, &project, "loki", streams)
    })
    .await;
    match r {
        Ok(Ok(out)) if out.rejected_total() == 0 => StatusCode::NO_CONTENT.into_response(),
        Ok(Ok(out)) => PushError::new(out.status(), out.message()).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => PushError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `POST /v1/logs`: OTLP/HTTP logs. The answer is an
/// `ExportLogsServiceResponse` in the request's encoding, with
/// `partial_success` (`rejected_log_records`, `error_message`) when lines
/// were left out.
pub async fn otlp_logs(
    State(st): State<AppState>,
    Extension(dc): Extension<DataCaller>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let l = match logs(&st) {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    let ct = header_str(&headers, header::CONTENT_TYPE).unwrap_or("");
    let json = match ingest::otlp::content_is_json(ct) {
        Ok(json) => json,
        Err(msg) => {
            return PushError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, msg).into_response();
        }
    };
    let encoding = header_str(&headers, header::CONTENT_ENCODING).map(str::to_string);
    let project = dc.project.name.clone();
    let st2 = st.clone();
    let r = tokio::task::spawn_blocking(move || {
        let raw = ingest::decompress::content_decode(
            encoding.as_deref(),
            &body,
            l.config.max_request_bytes,
        )
        .map_err(decode_error)?;
        let now = st2.now();
        let streams = if json {
            ingest::otlp_logs::decode_logs_json(&raw, now)
        } else {
            ingest::otlp_logs::decode_logs_protobuf(&raw, now)
        }
        .map_err(decode_error)?;
        ingest_streams(&st2, &l, &project, "otlp", streams)
    })
    .await;
    let out = match r {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return e.into_response(),
        Err(e) => {
            return PushError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                .into_response();
        }
    };
    let rejected = out.rejected_total() as i64;
    let message = if rejected > 0 {
        out.message()
    } else {
        String::new()
    };
    let (body, ct) = if json {
        (
            crate::prom::write::otlp_response_json_named(rejected, &message, "rejectedLogRecords"),
            "application/json",
        )
    } else {
        (
            crate::prom::write::otlp_response_protobuf(rejected, &message),
            "application/x-protobuf",
        )
    };
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_message_names_reasons_with_examples() {
        let mut o = Outcome::default();
        o.add("line_too_long", 2, "line of 9 bytes, limit max_line_size=8");
        o.add("stream_limit", 1, "limit max_streams_per_project=1");
        o.add("line_too_long", 1, "another");
        assert_eq!(o.rejected_total(), 4);
        assert_eq!(
            o.message(),
            "4 log lines rejected (line_too_long: 3, stream_limit: 1); e.g. line of 9 bytes, \
             limit max_line_size=8; limit max_streams_per_project=1"
        );
        assert_eq!(o.status(), StatusCode::TOO_MANY_REQUESTS, "429 wins");
    }

    #[test]
    fn validation_alone_is_a_400_and_the_stream_limit_a_429() {
        let mut o = Outcome::default();
        o.add("line_too_long", 1, "limit max_line_size=8");
        o.add("greater_than_max_sample_age", 1, "too old");
        assert_eq!(o.status(), StatusCode::BAD_REQUEST);
        let mut o = Outcome::default();
        o.add(STREAM_LIMIT, 3, "limit max_streams_per_project=1");
        assert_eq!(o.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}
