//! The `ingest` integration tests: one binary, a module per area.
//!
//! - `remote_write`: 1.0 and 2.0 round trips through the public protobuf
//!   structs, one `check` per rejection rule, content negotiation, and the
//!   shared conformance request bodies (`../shared/conformance/remote-write/samples`);
//! - `otlp`: the shared OTLP examples (`../shared/conformance/otlp`) in both
//!   encodings with every expected series written out, the name translation
//!   table, and each point type;
//! - `reference`: the hand-written wire decoders against a naive prost
//!   reference on random and mutated requests;
//! - `keyed`: `remote_write::keyed` against `decode_limited` on random and
//!   mutated requests;
//! - `hostile`: truncated, flipped and random bytes into every decoder:
//!   errors, never panics.
//!
//! Conformance files are read in place (`FLIGHTDECK_CONFORMANCE` overrides
//! the path); a missing suite fails the test, it never passes silently.

mod common;
mod hostile;
mod keyed;
mod otlp;
mod reference;
mod remote_write;
