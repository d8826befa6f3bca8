//! `ingest`: sans-IO decoders of the metric write protocols.
//!
//! Each module turns the bytes of one request body into a
//! [`model::WriteBatch`] plus an account of what was rejected and why:
//!
//! * [`decompress`]: `Content-Encoding` (snappy block, gzip, identity) with a
//!   hard cap on the decompressed size, checked before memory is spent;
//! * [`remote_write`]: Prometheus remote write 1.0 and 2.0 (protobuf), with
//!   `Content-Type` negotiation and Prometheus' per-series label checks;
//! * [`otlp`]: OTLP/HTTP metrics (protobuf and JSON) translated to
//!   Prometheus series as Prometheus' own OTLP receiver does;
//! * [`validate`]: per-project limits (label counts and lengths, samples per
//!   request) applied to a decoded batch;
//! * [`error`]: [`DecodeError`], whose variants map to HTTP statuses.
//!
//! It is *not* a server and not a store: no sockets, no tokio, no axum, no
//! files. The server reads the body (bounded), calls a decoder here and
//! hands the batch to `tsdb`; statuses are chosen in the server from
//! [`DecodeError`] and the rejections returned here.

pub mod decompress;
pub mod error;
pub mod otlp;
pub mod remote_write;
pub mod validate;
mod wire;

pub use error::DecodeError;
