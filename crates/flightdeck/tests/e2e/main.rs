//! End-to-end tests: the real server over real HTTP on an ephemeral port.
//! One test binary with a module per area keeps link time down.

mod harness;

mod batch;
mod bundle;
mod cli;
mod crash;
mod credential_cache;
mod failures;
mod isolation;
mod log_name;
mod monitor;
mod openapi;
mod privacy;
mod proofs;
mod redaction;
mod retention;
mod sessions;
mod tlog;
mod verify;
mod walkthrough;
