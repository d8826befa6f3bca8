//! Host logs into the log store: the adapter from the `agent` crate's
//! [`agent::logs::LogSink`] to [`logstore::Store::append`] ([`StoreSink`]),
//! and Flightdeck's own `tracing` events as log lines ([`selflog`]).
//!
//! The collectors (file tailer, journal follower) live in `agent` and know
//! no store; they advance their saved positions only when
//! [`StoreSink::push`] returned, i.e. when the store's WAL fsync covering
//! the lines returned. Host lines do not pass the push API's per-project
//! limits (they are the server's own); a line longer than the store
//! accepts is cut with [`agent::logs::files::TRUNCATED_MARKER`] rather than
//! refused, because a refused line would be offered again forever.

pub mod selflog;

use std::sync::Arc;

use agent::logs::files::TRUNCATED_MARKER;
use agent::logs::{LogSink, LogStream};

/// Writes host log lines into one project of the log store.
pub struct StoreSink {
    pub store: Arc<logstore::Store>,
    pub project: String,
    /// The store's longest line ([`logstore::Options::max_line_bytes`]).
    pub max_line_bytes: usize,
}

impl StoreSink {
    pub fn new(store: Arc<logstore::Store>, project: impl Into<String>) -> StoreSink {
        StoreSink {
            store,
            project: project.into(),
            max_line_bytes: logstore::Options::default().max_line_bytes,
        }
    }
}

/// Cuts `line` to at most `max` bytes (marker included) on a character
/// boundary.
fn cut(line: &str, max: usize) -> String {
    if line.len() <= max {
        return line.to_owned();
    }
    let mut end = max.saturating_sub(TRUNCATED_MARKER.len());
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    let mut s = line[..end].to_owned();
    s.push_str(TRUNCATED_MARKER);
    s
}

impl LogSink for StoreSink {
    fn push(&self, streams: &[LogStream]) -> Result<(), String> {
        let batches: Vec<logstore::StreamBatch> = streams
            .iter()
            .map(|s| logstore::StreamBatch {
                labels: s.labels.clone(),
                entries: s
                    .entries
                    .iter()
                    .map(|e| logstore::Entry::new(e.ts, cut(&e.line, self.max_line_bytes)))
                    .collect(),
            })
            .collect();
        self.store
            .append(&self.project, &batches)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent::logs::LogEntry;
    use logstore::{Direction, Query};

    /// Lines of the project's streams with `job`, oldest first, per stream.
    pub(crate) fn read_lines(
        store: &logstore::Store,
        project: &str,
        job: &str,
    ) -> Vec<(model::Labels, Vec<String>)> {
        let m = [model::Matcher::equal("job", job)];
        let q = Query {
            matchers: &m,
            start: 0,
            end: i64::MAX,
            direction: Direction::Forward,
            limit: 0,
            required: &[],
        };
        store
            .query(project, &q)
            .unwrap()
            .into_iter()
            .map(|(l, e)| (l, e.into_iter().map(|e| e.line).collect()))
            .collect()
    }

    #[test]
    fn cut_keeps_char_boundaries_and_the_limit() {
        assert_eq!(cut("short", 100), "short");
        let long = "é".repeat(20); // 40 bytes
        let c = cut(&long, 20);
        assert!(c.len() <= 20, "{c}");
        assert!(c.ends_with(TRUNCATED_MARKER));
        assert_eq!(c, format!("{}{TRUNCATED_MARKER}", "é".repeat(4)));
    }

    #[test]
    fn pushes_become_durable_entries_of_the_project() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(logstore::Store::open(dir.path(), logstore::Options::default()).unwrap());
        let mut sink = StoreSink::new(store.clone(), "default");
        sink.max_line_bytes = 16;
        let labels = model::Labels::from_pairs([("job", "varlogs"), ("host", "h")]);
        sink.push(&[LogStream {
            labels: labels.clone(),
            entries: vec![
                LogEntry {
                    ts: 10,
                    line: "a".into(),
                },
                LogEntry {
                    ts: 11,
                    line: "x".repeat(40),
                },
            ],
        }])
        .unwrap();
        let got: Vec<String> = read_lines(&store, "default", "varlogs")
            .into_iter()
            .flat_map(|(_, l)| l)
            .collect();
        assert_eq!(got, ["a".to_string(), format!("xxxx{TRUNCATED_MARKER}")]);
        // A slug the store refuses is an error for the caller to retry.
        let bad = StoreSink::new(store, "Not A Slug");
        assert!(
            bad.push(&[LogStream {
                labels,
                entries: vec![LogEntry {
                    ts: 1,
                    line: "a".into()
                }]
            }])
            .is_err()
        );
    }
}
