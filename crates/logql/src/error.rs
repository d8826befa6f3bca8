//! The crate's one error type. Messages follow Loki's where users and tests quote them
//! (`parse error at line 1, col 5: syntax error: unexpected RANGE`, `pipeline error: …`).

/// Why a query could not be parsed or evaluated.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum Error {
    /// The query text is not valid LogQL (HTTP 400).
    #[error("parse error at line {line}, col {col}: {message}")]
    Parse {
        line: usize,
        col: usize,
        message: String,
    },
    /// The query parses but is not allowed (wrong aggregation, bad parameter…) (HTTP 400).
    #[error("{0}")]
    BadQuery(String),
    /// Evaluation failed (pipeline error, many-to-many matching…) (HTTP 422/400).
    #[error("{0}")]
    Execution(String),
    /// A configured limit was hit (max series, max entries) (HTTP 400).
    #[error("{0}")]
    Limit(String),
    /// The deadline passed (HTTP 503).
    #[error("query timed out")]
    Timeout,
    /// The cancel flag was raised (HTTP 499).
    #[error("query canceled")]
    Canceled,
    /// The storage failed.
    #[error("storage error: {0}")]
    Storage(String),
}

impl Error {
    pub(crate) fn parse_at(pos: (usize, usize), message: impl Into<String>) -> Self {
        Error::Parse {
            line: pos.0,
            col: pos.1,
            message: message.into(),
        }
    }
}
