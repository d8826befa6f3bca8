//! `ingest`: sans-IO decoders of the metric and log paths.
//!
//! Each module turns the bytes a client sent (or a scraped target
//! returned) into the shared types of `model` — a [`model::WriteBatch`]
//! plus an account of what was rejected and why:
//!
//! * [`decompress`]: `Content-Encoding` (snappy block, gzip, identity) with a
//!   hard cap on the decompressed size, checked before memory is spent;
//! * [`remote_write`]: Prometheus remote write 1.0 and 2.0 (protobuf), with
//!   `Content-Type` negotiation and Prometheus' per-series label checks;
//! * [`otlp`]: OTLP/HTTP metrics (protobuf and JSON) translated to
//!   Prometheus series as Prometheus' own OTLP receiver does;
//! * [`exposition`]: the Prometheus text exposition format 0.0.4 and
//!   OpenMetrics 1.0 text, as a scrape returns them;
//! * [`relabel`]: Prometheus' `relabel_config` rules, compiled once and
//!   applied to label sets (targets and scraped samples);
//! * [`validate`]: per-project limits (label counts and lengths, samples per
//!   request) applied to a decoded batch;
//! * [`error`]: [`DecodeError`], whose variants map to HTTP statuses;
//! * the log path: [`loki`] (Loki push API, JSON and protobuf) and
//!   [`otlp_logs`] (OTLP/HTTP logs) decode into [`logs::LogStream`]s, and
//!   [`logs::validate`] applies Loki's per-project limits.
//!
//! It is *not* a server and not a store: no sockets, no tokio, no axum, no
//! files. The server reads the body (bounded), calls a decoder here and
//! hands the batch to `tsdb`; statuses are chosen in the server from
//! [`DecodeError`] and the rejections returned here.

pub mod decompress;
pub mod error;
pub mod exposition;
pub mod logs;
pub mod loki;
pub mod otlp;
pub mod otlp_logs;
pub mod relabel;
pub mod remote_write;
pub mod validate;
mod wire;

pub use error::DecodeError;
