//! LogQL: a hand-written parser for the whole language as Grafana documents it, and an
//! evaluator for log queries and metric queries over any [`LogStorage`].
//!
//! How a query runs: [`parse`] turns the text into an [`Expr`] and checks it (selectors,
//! aggregation rules, regexes, patterns, templates). [`Engine::eval`] then compiles each log
//! pipeline once ([`pipeline::Pipeline`]) and reads each selector from the store **once** for
//! the whole query range: log queries merge the streams' cursors by time and stop at the
//! limit; range aggregations keep one value per kept line and aggregate each step's window
//! `(t - offset - range, t - offset]`; vector aggregations, binary operators and
//! `label_replace` then work step by step.
//!
//! The crate also holds the runner for Loki's `.logqltest` scripts ([`logqltest`]) and an
//! in-memory store ([`MemStorage`]).
//!
//! What this crate is **not**: it knows no storage engine (never depends on `logstore`), no
//! HTTP, no JSON rendering; it does no I/O.
//!
//! Labels: a line's labels are its stream's, then its structured metadata, then what parsers
//! extract; a name taken by an earlier source sends the later value to `<name>_extracted`.
//! Results use [`LabelPairs`] rather than `model::Labels` because LogQL keeps labels with an
//! empty value (`logfmt --keep-empty` gives `name=""`, distinct from an absent label);
//! stream labels from the store are `model::Labels` and selectors are `model::Matcher`s.
//!
//! Conformance: all 99 lines of `queries.txt` are classified as Loki does and all 1,095
//! evals of Loki's `.logqltest` scripts pass (`tests/conformance.rs`); our own scripts in
//! `tests/testdata/` cover log queries too.
//!
//! Not supported (yet): Go templates' `{{define}}`/`{{template}}`/`{{block}}`; `approx_topk` is an exact `topk` (no count-min sketch); the experimental `| distinct`,
//! `| limit` and pattern-matching `|>` with named captures in filters (rejected, as in Loki);
//! query splitting/sharding and query statistics (a server concern).
//!
//! Performance: line filters search bytes with `memchr`'s memmem and drop a line before any
//! label work; the JSON and logfmt parsers borrow from the line; label strings are pooled
//! across lines; under a `by` grouping parsers extract only the labels the query reads
//! (Loki's label hints), and `sum` over count/rate/bytes/sum_over_time merges series while
//! reading; range aggregations keep one summary per series and window segment.

pub mod ast;
pub mod duration;
mod error;
pub mod eval;
mod lexer;
pub mod logqltest;
mod parser;
pub mod pipeline;
mod storage;
mod tail;
pub mod template;

pub use ast::Expr;
pub use error::Error;
pub use eval::{
    Engine, EngineOptions, LogEntry, QueryParams, QueryResult, Sample, Series, Stream,
    align_to_step, format_labels,
};
pub use parser::parse;
pub use pipeline::LabelPairs;
pub use storage::{
    Direction, EntryRef, LogStorage, MemEntry, MemStorage, SelectRequest, StorageError,
    StreamCursor,
};
pub use tail::{TailQuery, TailedEntry};

#[cfg(test)]
mod tests;
