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

pub mod ast;
pub mod duration;
mod error;
pub mod eval;
mod lexer;
pub mod logqltest;
mod parser;
pub mod pipeline;
mod storage;
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

#[cfg(test)]
mod tests;
