//! `ingest`: the decoders of the metric path.
//!
//! Each module turns bytes that a client or a scraped target sent into the
//! shared types of `model` ([`model::Labels`], [`model::Metadata`], …):
//!
//! - [`exposition`]: the Prometheus text exposition format 0.0.4 and
//!   OpenMetrics 1.0 text, as a scrape returns them;
//! - [`relabel`]: Prometheus' `relabel_config` rules, compiled once and
//!   applied to label sets (targets and scraped samples).
//!
//! It is *not* a network or storage layer: no sockets, no HTTP, no async
//! runtime, no files. Callers (the `server` handlers, the `agent` scraper)
//! hand it bytes and get values back; what to do with them is theirs.

pub mod exposition;
pub mod relabel;
