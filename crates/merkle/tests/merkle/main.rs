//! The `merkle` integration tests: one binary, a module per area.
//!
//! - `reference`: a slow RFC 6962 reference written straight from the RFC's
//!   recursive definitions, and the fast code checked against it;
//! - `conformance_*`: the third-party vectors in `../shared/conformance/`,
//!   read in place (`FLIGHTDECK_CONFORMANCE` overrides the path); a missing
//!   suite fails the test, it never passes silently;
//! - `conformance_cosignature`: tlog-cosignature against a real witness's
//!   cosignature, Go's test keys, and the shared suite's keys and checkpoints;
//! - `interop`: the independent crates `tlog_tiles` and `signed_note` verify
//!   what we produce, and we verify what they produce (cosignatures through
//!   a spec implementation plugged into `signed_note`, which has none).

mod common;
mod conformance_cosignature;
mod conformance_ed25519;
mod conformance_merkle;
mod conformance_signed_note;
mod conformance_tlog_tiles;
mod interop;
mod reference;
