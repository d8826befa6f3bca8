//! `agent`: collectors that produce metrics for the ingest path.
//!
//! - [`host`]: the local host's metrics under node-exporter's names and
//!   labels (`node_cpu_seconds_total{cpu,mode}`, `node_memory_*_bytes`,
//!   `node_network_*_total{device}`, `node_filesystem_*{device,fstype,mountpoint}`,
//!   `node_disk_*{device}`, `node_load1`, …), read from `/proc` and `statvfs`;
//! - [`process`]: the running process' own `process_*` metrics;
//! - [`Collected`]: what a collection pass yields, turned into a
//!   [`model::WriteBatch`]; [`text`] renders it as text exposition;
//! - [`push`]: a remote write 1.0 client with retries (`flightdeck agent`);
//! - [`scrape`]: pulls Prometheus targets (`scrape_configs`): schedules each
//!   target, fetches its exposition over HTTP, parses and relabels it with
//!   `ingest`, adds `up` and the other scrape series, writes staleness
//!   markers, and hands every scrape to a [`scrape::Sink`];
//! - [`logs`]: host logs — files tailed by glob pattern with rotation,
//!   truncation and saved positions ([`logs::files`]), the systemd journal
//!   through `journalctl` ([`logs::journal`]), handed to a [`logs::LogSink`]
//!   that acknowledges durable lines.
//!
//! It is *not* storage and not an HTTP server: what it collects goes to
//! whoever runs it (`flightdeck serve` writes into the metric store through
//! the same validation as a remote write, `flightdeck agent` pushes over
//! remote write), and the target list it keeps is exposed as plain values
//! for the `server` crate to render.

pub mod collected;
pub mod host;
pub mod logs;
pub mod process;
pub mod push;
pub mod scrape;
pub mod text;

pub use collected::Collected;
