//! The read trait the evaluator needs from a log store, and an in-memory implementation
//! (for tests and the logqltest runner).
//!
//! A store answers one [`SelectRequest`] with one [`StreamCursor`] per matching stream. A
//! cursor hands out borrowed entries one at a time (a lending iterator), so a store can
//! decompress block by block without holding every line, and the evaluator copies only the
//! lines it keeps.

use model::{Labels, Matcher};

/// Which end of the time range comes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Direction {
    /// Oldest first.
    Forward,
    /// Newest first (Loki's default for log queries).
    #[default]
    Backward,
}

/// What to read.
#[derive(Clone, Debug)]
pub struct SelectRequest<'a> {
    /// Every returned stream's labels match all of these.
    pub matchers: &'a [Matcher],
    /// Entries with `start_ns <= ts < end_ns`.
    pub start_ns: i64,
    pub end_ns: i64,
    /// Order of entries within each stream.
    pub direction: Direction,
    /// Substrings every line the query keeps contains (from leading `|= "…"` filters).
    /// Advisory: a store may skip blocks that cannot contain them, and may also return
    /// lines without them (the evaluator applies the real filters).
    pub line_hints: &'a [String],
}

/// One log entry, borrowed from the cursor.
#[derive(Clone, Copy, Debug)]
pub struct EntryRef<'a> {
    pub ts_ns: i64,
    pub line: &'a str,
    /// Structured metadata (`name`, `value`).
    pub metadata: &'a [(String, String)],
}

/// A store's failure, passed through to the caller.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StorageError(pub String);

/// The entries of one stream, in the requested direction.
pub trait StreamCursor {
    /// The stream's labels (no empty values).
    fn labels(&self) -> &Labels;
    /// The next entry, or `None` at the end.
    fn next_entry(&mut self) -> Result<Option<EntryRef<'_>>, StorageError>;
}

/// What the evaluator reads from.
pub trait LogStorage: Send + Sync {
    /// One cursor per stream whose labels match all `req.matchers`, each yielding that
    /// stream's entries in `[start_ns, end_ns)` in `req.direction` order.
    fn select<'s>(
        &'s self,
        req: &SelectRequest<'_>,
    ) -> Result<Vec<Box<dyn StreamCursor + 's>>, StorageError>;
}

/// One stored entry of [`MemStorage`].
#[derive(Clone, Debug)]
pub struct MemEntry {
    pub ts_ns: i64,
    pub line: String,
    pub metadata: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
struct MemStream {
    labels: Labels,
    entries: Vec<MemEntry>,
    sorted: bool,
}

/// An in-memory store: streams keyed by their labels (empty values dropped, as on ingest),
/// entries kept sorted by timestamp (ties in insertion order).
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    streams: Vec<MemStream>,
    index: std::collections::HashMap<Labels, usize>,
}

impl MemStorage {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn clear(&mut self) {
        self.streams.clear();
        self.index.clear();
    }

    /// Appends one entry to the stream with these labels.
    pub fn push(
        &mut self,
        labels: &Labels,
        ts_ns: i64,
        line: &str,
        metadata: Vec<(String, String)>,
    ) {
        let idx = match self.index.get(labels) {
            Some(i) => *i,
            None => {
                self.streams.push(MemStream {
                    labels: labels.clone(),
                    entries: Vec::new(),
                    sorted: true,
                });
                self.index.insert(labels.clone(), self.streams.len() - 1);
                self.streams.len() - 1
            }
        };
        let s = &mut self.streams[idx];
        if s.entries.last().is_some_and(|e| e.ts_ns > ts_ns) {
            s.sorted = false;
        }
        s.entries.push(MemEntry {
            ts_ns,
            line: line.to_string(),
            metadata,
        });
    }

    fn sort(&mut self) {
        for s in &mut self.streams {
            if !s.sorted {
                s.entries.sort_by_key(|e| e.ts_ns);
                s.sorted = true;
            }
        }
    }

    /// Sorts out-of-order pushes; call before querying (the runner does).
    pub fn seal(&mut self) {
        self.sort();
    }

    /// Total number of entries.
    pub fn len(&self) -> usize {
        self.streams.iter().map(|s| s.entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct MemCursor<'s> {
    labels: &'s Labels,
    entries: &'s [MemEntry],
    next: usize,
    backward: bool,
}

impl StreamCursor for MemCursor<'_> {
    fn labels(&self) -> &Labels {
        self.labels
    }
    fn next_entry(&mut self) -> Result<Option<EntryRef<'_>>, StorageError> {
        if self.next >= self.entries.len() {
            return Ok(None);
        }
        let i = if self.backward {
            self.entries.len() - 1 - self.next
        } else {
            self.next
        };
        self.next += 1;
        let e = &self.entries[i];
        Ok(Some(EntryRef {
            ts_ns: e.ts_ns,
            line: &e.line,
            metadata: &e.metadata,
        }))
    }
}

impl LogStorage for MemStorage {
    fn select<'s>(
        &'s self,
        req: &SelectRequest<'_>,
    ) -> Result<Vec<Box<dyn StreamCursor + 's>>, StorageError> {
        let mut out: Vec<Box<dyn StreamCursor + 's>> = Vec::new();
        for s in &self.streams {
            if !s.sorted {
                return Err(StorageError(
                    "MemStorage: call seal() after out-of-order pushes".into(),
                ));
            }
            if !req
                .matchers
                .iter()
                .all(|m| m.matches(s.labels.get(&m.name).unwrap_or("")))
            {
                continue;
            }
            let lo = s.entries.partition_point(|e| e.ts_ns < req.start_ns);
            let hi = s.entries.partition_point(|e| e.ts_ns < req.end_ns);
            if lo >= hi {
                continue;
            }
            out.push(Box::new(MemCursor {
                labels: &s.labels,
                entries: &s.entries[lo..hi],
                next: 0,
                backward: req.direction == Direction::Backward,
            }));
        }
        Ok(out)
    }
}
