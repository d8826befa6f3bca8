//! The API's one error type and the one mapping from domain errors to HTTP.
//!
//! Every failure leaves the server as `{"error": {"code", "message", "field"}}`
//! with the status chosen here, and nowhere else. Client mistakes are 4xx
//! with a message that says what to fix; 5xx is kept for the server's own
//! faults (503 when the audit log cannot record, so the action is refused).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AuditRecorded;

/// The kinds of failure, each with exactly one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    TooManyRequests,
    Unavailable,
    Internal,
}

impl Kind {
    pub fn status(self) -> StatusCode {
        match self {
            Kind::BadRequest => StatusCode::BAD_REQUEST,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answer.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub kind: Kind,
    /// Stable machine-readable code, e.g. `not_found`, `invalid_field`.
    pub code: &'static str,
    pub message: String,
    /// The offending field or parameter, when there is one.
    pub field: Option<String>,
    /// An audit event for this failure has already been written.
    pub audited: bool,
}

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: String,
    /// What went wrong and how to fix it.
    pub message: String,
    /// The offending field or parameter, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(kind: Kind, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            code,
            message: message.into(),
            field: None,
            audited: false,
        }
    }

    pub fn bad_field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        let field = field.into();
        ApiError {
            kind: Kind::BadRequest,
            code: "invalid_field",
            message: format!("{field}: {}", message.into()),
            field: Some(field),
            audited: false,
        }
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(
            Kind::NotFound,
            "not_found",
            format!("{} not found", what.into()),
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(Kind::Unauthorized, "unauthenticated", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(Kind::Forbidden, "forbidden", message)
    }

    pub fn audit_unavailable(detail: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            Kind::Unavailable,
            "audit_unavailable",
            format!("the audit log cannot record this action, so it was refused: {detail}"),
        )
    }

    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "internal error");
        ApiError::new(Kind::Internal, "internal", "internal server error")
    }

    pub fn audited(mut self) -> ApiError {
        self.audited = true;
        self
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }
}

impl ApiError {
    /// The answer for a metadata error, without consuming it.
    pub fn from_meta_ref(e: &meta::MetaError) -> ApiError {
        use meta::MetaError as M;
        match e {
            M::NotFound { .. } => ApiError::new(Kind::NotFound, "not_found", e.to_string()),
            M::Conflict { .. } => ApiError::new(Kind::Conflict, "conflict", e.to_string()),
            M::Invalid { field, .. } => {
                let mut a = ApiError::new(Kind::BadRequest, "invalid_field", e.to_string());
                a.field = Some(field.to_string());
                a
            }
            M::Db(_) | M::Hash(_) => ApiError::internal(e),
        }
    }
}

impl From<meta::MetaError> for ApiError {
    fn from(e: meta::MetaError) -> ApiError {
        ApiError::from_meta_ref(&e)
    }
}

impl From<audit::AuditError> for ApiError {
    fn from(e: audit::AuditError) -> ApiError {
        use audit::AuditError as A;
        match e {
            A::BadCursor(_) => {
                let mut a = ApiError::new(Kind::BadRequest, "invalid_field", e.to_string());
                a.field = Some("cursor".into());
                a
            }
            A::EventTooLarge { .. } => {
                ApiError::new(Kind::PayloadTooLarge, "event_too_large", e.to_string())
            }
            other => ApiError::audit_unavailable(other),
        }
    }
}

impl From<audit::ProofError> for ApiError {
    fn from(e: audit::ProofError) -> ApiError {
        use audit::ProofError as P;
        let field = |e: &P, field: &str| {
            let mut a = ApiError::new(Kind::BadRequest, "invalid_field", e.to_string());
            a.field = Some(field.to_string());
            a
        };
        match e {
            P::TreeSizeTooLarge { param, .. } | P::EmptyTree { param } => field(&e, param),
            P::SizeOrder { .. } => field(&e, "from"),
            P::IndexBeyondTree { ref id, .. } => {
                field(&e, if id.is_some() { "id" } else { "index" })
            }
            P::NoCheckpoint { .. } => ApiError::new(Kind::NotFound, "no_checkpoint", e.to_string()),
            P::Retained { .. } => ApiError::new(Kind::NotFound, "retained", e.to_string()),
            P::NoSuchIndex { .. } | P::NoSuchEvent { .. } => {
                ApiError::new(Kind::NotFound, "not_found", e.to_string())
            }
            P::NotYetCheckpointed { .. } => {
                ApiError::new(Kind::Conflict, "not_checkpointed", e.to_string())
            }
            P::Audit(a) => ApiError::from(a),
            P::Corrupt { .. } | P::Io { .. } => ApiError::internal(e),
        }
    }
}

impl From<audit::witness::CosignRefusal> for ApiError {
    fn from(e: audit::witness::CosignRefusal) -> ApiError {
        use audit::witness::CosignRefusal as C;
        match e {
            C::Malformed(_) => ApiError::new(Kind::BadRequest, "malformed_note", e.to_string()),
            C::UnknownCheckpoint { .. } => {
                ApiError::new(Kind::Conflict, "unknown_checkpoint", e.to_string())
            }
            C::NoWitnessesConfigured | C::UnknownWitness { .. } => {
                ApiError::new(Kind::Forbidden, "unknown_witness", e.to_string())
            }
            C::InvalidCosignature { .. } | C::FutureTimestamp { .. } => {
                ApiError::new(Kind::BadRequest, "invalid_cosignature", e.to_string())
            }
            C::Storage(a) => ApiError::from(a),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                field: self.field,
            },
        };
        let mut resp = (self.kind.status(), axum::Json(body)).into_response();
        if self.audited {
            resp.extensions_mut().insert(AuditRecorded);
        }
        if self.kind == Kind::Unauthorized {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"flightdeck\""),
            );
        }
        resp
    }
}
