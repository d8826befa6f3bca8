//! [`DecodeError`]: why a whole request body was refused.
//!
//! Per-series problems (an invalid label name, a malformed histogram) are
//! not errors of the request: decoders return them as
//! [`crate::validate::Rejection`]s next to the series they kept. A `DecodeError` means nothing of the body
//! can be used. Each variant names the HTTP status a server should answer
//! with ([`DecodeError::http_status`]), so the mapping lives in one place.

/// A request body that cannot be used at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body (compressed or, more often, decompressed) is larger than the
    /// configured limit. HTTP 413.
    #[error(
        "request body is larger than {limit} bytes after decompression; send smaller batches \
         (e.g. lower remote_write queue_config.max_samples_per_send) or raise the limit"
    )]
    BodyTooLarge { limit: usize },
    /// The bytes do not parse as the announced format. HTTP 400.
    #[error("malformed request: {what}")]
    Malformed { what: String },
    /// A `Content-Type` this receiver does not speak. HTTP 415.
    #[error(
        "unsupported Content-Type {content_type:?}: send application/x-protobuf \
         (optionally ;proto=prometheus.WriteRequest or ;proto=io.prometheus.write.v2.Request), \
         or for OTLP application/x-protobuf or application/json"
    )]
    UnsupportedMediaType { content_type: String },
    /// A `Content-Encoding` this receiver does not speak. HTTP 415.
    #[error(
        "unsupported Content-Encoding {encoding:?}: remote write must use snappy (block format), \
         OTLP may use gzip or none"
    )]
    UnsupportedEncoding { encoding: String },
    /// More samples in one request than the per-request limit. HTTP 413.
    #[error(
        "request has {count} samples, limit max_samples_per_request={limit}; send smaller \
         batches (e.g. lower remote_write queue_config.max_samples_per_send)"
    )]
    TooManySamples { count: usize, limit: usize },
}

impl DecodeError {
    pub(crate) fn malformed(what: impl Into<String>) -> Self {
        DecodeError::Malformed { what: what.into() }
    }

    /// The HTTP status a server answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            DecodeError::BodyTooLarge { .. } | DecodeError::TooManySamples { .. } => 413,
            DecodeError::Malformed { .. } => 400,
            DecodeError::UnsupportedMediaType { .. } | DecodeError::UnsupportedEncoding { .. } => {
                415
            }
        }
    }
}
