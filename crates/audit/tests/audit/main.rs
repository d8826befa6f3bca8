//! Integration tests of the audit log: one test binary, a module per area
//! (keeps link time down on a 2-core machine).

mod append;
mod crash;
mod faults;
mod monitor;
mod personal;
mod proofs;
mod recovery;
mod retention;
mod search;
mod support;
mod tlog;
mod verify;
mod witness;
