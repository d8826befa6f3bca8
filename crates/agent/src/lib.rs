//! `agent`: collectors that produce metrics for the ingest path.
//!
//! - [`host`]: the local host's metrics under node-exporter's names and
//!   labels (`node_cpu_seconds_total{cpu,mode}`, `node_memory_*_bytes`,
//!   `node_network_*_total{device}`, `node_filesystem_*{device,fstype,mountpoint}`,
//!   `node_disk_*{device}`, `node_load1`, …), read from `/proc` and `statvfs`;
//! - [`process`]: the running process' own `process_*` metrics;
//! - [`Collected`]: what a collection pass yields, turned into a
//!   [`model::WriteBatch`] for storage or for remote write.
//!
//! It is *not* storage and not a server: it hands batches to whoever runs it
//! (`flightdeck serve` writes them into the default project, `flightdeck
//! agent` pushes them over remote write), through the same ingest path as
//! any client.

pub mod collected;
pub mod host;
pub mod process;
pub mod text;

pub use collected::Collected;
