//! Ingest benchmark (written below).
fn main() {}
