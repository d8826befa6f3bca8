//! End-to-end tests: the real server over real HTTP on an ephemeral port.
//! One test binary with a module per area keeps link time down.

mod harness;

mod batch;
mod bundle;
mod cli;
mod crash;
mod credential_cache;
mod failures;
mod grafana;
mod hostlogs;
mod isolation;
mod log_name;
mod logs;
mod logs_clients;
mod loki_read;
mod metrics;
mod monitor;
mod openapi;
mod otel_sdk;
mod privacy;
mod prom_api;
mod prometheus_interop;
mod promql_side_by_side;
mod proofs;
mod python_scrape;
mod real_clients;
mod redaction;
mod retention;
mod sessions;
mod tlog;
mod verify;
mod walkthrough;

/// A file of the shared conformance data: `$FLIGHTDECK_CONFORMANCE/<rel>`,
/// else `<workspace>/../shared/conformance/<rel>`. Fails the test when it is
/// missing, so that a missing suite never looks like a pass.
pub fn conformance_file(rel: &str) -> std::path::PathBuf {
    let base = match std::env::var_os("FLIGHTDECK_CONFORMANCE") {
        Some(p) => std::path::PathBuf::from(p),
        None => {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance")
        }
    };
    let p = base.join(rel);
    assert!(
        p.is_file(),
        "CONFORMANCE SUITE MISSING: {} does not exist. Put the shared conformance data at \
         ../shared/conformance relative to the workspace root, or set FLIGHTDECK_CONFORMANCE.",
        p.display()
    );
    p
}
