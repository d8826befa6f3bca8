//! Integration tests of the log store, one module per area (one test
//! binary keeps link time down).

mod common;
mod crash;
mod durability;
mod reads;
mod reference;
mod retention;
