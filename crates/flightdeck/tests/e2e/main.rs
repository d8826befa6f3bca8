//! End-to-end tests: the real server over real HTTP on an ephemeral port.
//! One test binary with a module per area keeps link time down.

mod harness;

mod cli;
mod crash;
mod failures;
mod isolation;
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
