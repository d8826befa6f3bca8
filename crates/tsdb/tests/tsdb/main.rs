//! Integration tests of the metric store, one module per area (one test
//! binary keeps link time down).

mod blocks;
mod common;
mod crash;
mod histograms;
mod keyed;
mod reference;
mod wal_and_head;
