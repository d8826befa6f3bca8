//! `agent`: metric collection.
//!
//! [`scrape`] pulls Prometheus targets (`scrape_configs`): it schedules each
//! target, fetches its exposition over HTTP, parses and relabels it with
//! `ingest`, adds `up` and the other scrape series, writes staleness
//! markers, and hands every scrape to a [`scrape::Sink`].
//!
//! It is *not* storage and not an HTTP server: what it collects goes to the
//! sink the caller gives it (the `tsdb` write path in `flightdeck serve`, a
//! remote-write client in `flightdeck agent`), and the target list it keeps
//! is exposed as plain values for the `server` crate to render.

pub mod scrape;
