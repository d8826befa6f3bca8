//! The Prometheus-compatible data plane: remote write and OTLP ingest, and
//! the Prometheus HTTP API read paths, each at its canonical path so that
//! Prometheus, the OpenTelemetry Collector and Grafana work unchanged.
//!
//! Routes here authenticate like the management API (Bearer, or basic
//! auth with the token as password; failures are audited), but a data
//! request acts in exactly one project: a project token's own project
//! (tokens never reach another project's data, org admins included), or
//! for a logged-in user the project named by the `X-Scope-OrgID` header.
//! Successful data-plane requests are not audit events (they are counted
//! in `flightdeck_*` metrics); denials are.

pub mod api;
pub mod select;
