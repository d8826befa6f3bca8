//! The engine's one error type, with Prometheus' error kinds (the `errorType` of its API).

/// Prometheus' API error kinds; the server maps each to an HTTP status in one `match`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The query or its parameters are wrong (HTTP 400).
    BadData,
    /// The query is valid but failed while running (HTTP 422).
    Execution,
    /// The query ran past its deadline (HTTP 503).
    Timeout,
    /// The caller went away (HTTP 499-ish; Prometheus answers 503).
    Canceled,
    /// A bug or a storage failure (HTTP 500).
    Internal,
}

impl ErrorKind {
    /// The `errorType` string of Prometheus' JSON envelope.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadData => "bad_data",
            ErrorKind::Execution => "execution",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Canceled => "canceled",
            ErrorKind::Internal => "internal",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum Error {
    /// The query text does not parse; `message` is the parser's and names the position.
    #[error("{message} (in query {query:?}; fix the syntax at that position)")]
    Parse { query: String, message: String },
    /// A valid query that is wrong for this use (e.g. a range vector as a range query's result).
    #[error("{0}")]
    BadData(String),
    /// Evaluation failed with one of Prometheus' messages (many-to-many matching, duplicate
    /// label sets, invalid function arguments…).
    #[error("{0}")]
    Execution(String),
    /// More than `max_samples` samples would be held at once.
    #[error("query processing would load too many samples into memory in query execution")]
    TooManySamples { max_samples: usize },
    #[error("query timed out in query execution")]
    Timeout,
    #[error("query was canceled in query execution")]
    Canceled,
    /// Storage failed; `0` is its message.
    #[error("storage error: {0}")]
    Storage(String),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Parse { .. } | Error::BadData(_) => ErrorKind::BadData,
            Error::Execution(_) | Error::TooManySamples { .. } => ErrorKind::Execution,
            Error::Timeout => ErrorKind::Timeout,
            Error::Canceled => ErrorKind::Canceled,
            Error::Storage(_) => ErrorKind::Internal,
        }
    }
}
