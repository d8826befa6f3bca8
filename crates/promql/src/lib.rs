//! The PromQL engine: parses a query with `promql-parser` and evaluates it, as an instant or
//! a range query, over anything that implements [`Storage`].
//!
//! How a query runs: [`Engine::instant`] / [`Engine::range`] parse the text, then the
//! evaluator ([`eval`]) walks the syntax tree once for the whole range. Each selector is
//! selected from storage **once** for the union of all its steps (never once per step), with
//! every loaded sample charged to a [`SampleBudget`] so a query's memory is bounded by
//! `max_samples`; steps are then computed from those in-memory series. Sub-expressions yield
//! one instant vector per step, so binary operators and aggregations work step by step.
//!
//! The crate also holds the runner for Prometheus' `promqltest` script format
//! ([`promqltest`]), with an in-memory [`MemStorage`].
//!
//! What this crate is **not**: it knows no storage engine (it never depends on `tsdb`; the
//! server adapts `tsdb` to [`Storage`]), no HTTP and no JSON (the server renders [`Value`]s),
//! and it caches nothing between queries.

mod error;
pub mod eval;
mod functions;
mod histogram;
mod memo;
pub mod par;
pub mod promqltest;
mod storage;
mod value;

pub use error::{Error, ErrorKind};
pub use eval::{Engine, EngineOptions, QueryOptions, QueryResult};
pub use storage::{MemStorage, SampleBudget, Storage};
pub use value::{Sample, SampleValue, Series, Value, format_labels};

#[cfg(test)]
mod tests;
