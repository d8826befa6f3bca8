//! The search index: a SQLite database derived from the segments.
//!
//! One row per event with a column for every [`crate::Query`] filter, the
//! event's segment and offset, and the canonical bytes themselves. Storing
//! the bytes doubles the disk footprint but lets one query return a whole
//! page (no file handles, no extra reads) and lets the case-insensitive text
//! filter run inside SQLite next to the other filters.
//!
//! The index is *derived data*: it runs with `synchronous=OFF` and is never
//! trusted over the segments. `meta.watermark` is the highest seq it holds,
//! committed in the same transaction as the rows, so after a crash it is
//! behind (recovery indexes the rest) but never ahead. A missing, corrupt or
//! inconsistent index is deleted and rebuilt from the segments.
//!
//! Time is non-decreasing in seq (the writer guarantees it), so a time range
//! is first turned into a seq range through `ev_time`; every query is then
//! an equality-prefix + seq-range scan on one composite index, walked in seq
//! order, stopping after `limit + 1` rows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::functions::FunctionFlags;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::error::AuditError;
use crate::event::{Event, LogKey};
use crate::query::{Cursor, Order, Page, Query};

/// Bumped whenever the schema changes; an index of another version is rebuilt.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logs (log TEXT PRIMARY KEY, next_index INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    log TEXT NOT NULL,
    log_index INTEGER NOT NULL,
    id TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    principal_id TEXT NOT NULL,
    principal_type TEXT NOT NULL,
    action TEXT NOT NULL,
    resource_type TEXT,
    resource_id TEXT,
    status TEXT NOT NULL,
    source_ip TEXT,
    segment INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS ev_id ON events(id);
CREATE INDEX IF NOT EXISTS ev_time ON events(time_ns);
CREATE INDEX IF NOT EXISTS ev_log ON events(log, seq);
CREATE INDEX IF NOT EXISTS ev_log_action ON events(log, action, seq);
CREATE INDEX IF NOT EXISTS ev_action ON events(action, seq);
CREATE INDEX IF NOT EXISTS ev_principal ON events(principal_id, seq);
CREATE INDEX IF NOT EXISTS ev_resource ON events(resource_id, seq);
INSERT OR IGNORE INTO meta(key, value) VALUES ('watermark', 0), ('last_time_ns', -9223372036854775808);
";

/// Name of the SQL function behind [`Query::text`].
const ICONTAINS: &str = "fd_icontains";

/// The text a [`LogKey`] is stored as (`o` = organization, `p:<slug>`).
pub fn log_text(log: &LogKey) -> String {
    match log {
        LogKey::Organization => "o".to_string(),
        LogKey::Project(p) => format!("p:{p}"),
    }
}

fn parse_log_text(s: &str) -> Option<LogKey> {
    if s == "o" {
        Some(LogKey::Organization)
    } else {
        s.strip_prefix("p:").map(|p| LogKey::Project(p.to_string()))
    }
}

/// One row to index.
pub struct Row<'a> {
    pub event: &'a Event,
    pub bytes: &'a [u8],
    pub time_ns: i64,
    pub segment: u64,
    pub offset: u64,
}

/// The writing side: one connection, used by one thread at a time.
pub struct IndexWriter {
    conn: Connection,
}

/// The sequencer state the index remembers for recovery.
pub struct Counters {
    pub watermark: u64,
    pub last_time_ns: i64,
    pub next_index: HashMap<LogKey, u64>,
}

impl IndexWriter {
    /// Opens (creating) the index file; any error means "rebuild it".
    pub fn open(path: &Path) -> Result<IndexWriter, rusqlite::Error> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Checkpoint less often (every ~40 MiB of WAL): each checkpoint
        // copies every page the WAL holds back into the database file.
        conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
        Self::init(conn)
    }

    /// A private in-memory index (read-only opens that cannot use the file).
    pub fn in_memory() -> Result<IndexWriter, rusqlite::Error> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<IndexWriter, rusqlite::Error> {
        // Derived data: durability comes from the segments, not from here.
        conn.pragma_update(None, "synchronous", "OFF")?;
        conn.pragma_update(None, "cache_size", -65536)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if tables > 0 && version != SCHEMA_VERSION {
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "index schema version {version}, expected {SCHEMA_VERSION}"
            )));
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        register_functions(&conn)?;
        Ok(IndexWriter { conn })
    }

    pub fn counters(&self) -> Result<Counters, rusqlite::Error> {
        let meta = |k: &str| -> Result<i64, rusqlite::Error> {
            self.conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
        };
        let watermark = u64::try_from(meta("watermark")?).unwrap_or(0);
        let last_time_ns = meta("last_time_ns")?;
        let mut next_index = HashMap::new();
        let mut stmt = self.conn.prepare("SELECT log, next_index FROM logs")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (log, next) = row?;
            if let Some(key) = parse_log_text(&log) {
                next_index.insert(key, u64::try_from(next).unwrap_or(0));
            }
        }
        Ok(Counters {
            watermark,
            last_time_ns,
            next_index,
        })
    }

    /// Inserts rows (in seq order) and moves the watermark, in one transaction.
    pub fn insert(&mut self, rows: &[Row<'_>]) -> Result<(), rusqlite::Error> {
        let Some(last) = rows.last() else {
            return Ok(());
        };
        let tx = self.conn.transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO events (seq, log, log_index, id, time_ns, principal_id, principal_type, action,
                                     resource_type, resource_id, status, source_ip, segment, offset, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?;
            let mut next: HashMap<String, u64> = HashMap::new();
            for r in rows {
                let e = r.event;
                let log = log_text(&e.log_key());
                ins.execute(params![
                    to_i64(e.seq),
                    log,
                    to_i64(e.log_index),
                    e.id,
                    r.time_ns,
                    e.principal.id,
                    e.principal.kind.as_str(),
                    e.action,
                    e.resource.as_ref().map(|x| x.kind.as_str()),
                    e.resource.as_ref().and_then(|x| x.id.as_deref()),
                    e.result.status.as_str(),
                    e.source_ip,
                    to_i64(r.segment),
                    to_i64(r.offset),
                    r.bytes,
                ])?;
                next.insert(log, e.log_index + 1);
            }
            let mut up = tx.prepare_cached(
                "INSERT INTO logs(log, next_index) VALUES (?1, ?2)
                 ON CONFLICT(log) DO UPDATE SET next_index = max(next_index, excluded.next_index)",
            )?;
            for (log, n) in &next {
                up.execute(params![log, to_i64(*n)])?;
            }
            let mut meta = tx.prepare_cached("UPDATE meta SET value = ?2 WHERE key = ?1")?;
            meta.execute(params!["watermark", to_i64(last.event.seq)])?;
            meta.execute(params!["last_time_ns", last.time_ns])?;
        }
        tx.commit()
    }

    /// Gives up the connection for reading (the in-memory index).
    pub fn into_connection(self) -> Connection {
        self.conn
    }
}

fn to_i64(v: u64) -> i64 {
    // Seqs, indexes and offsets stay far below 2^63 (a log would need
    // centuries of appends at millions per second to get there).
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn register_functions(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.create_scalar_function(
        ICONTAINS,
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let hay = ctx.get_raw(0).as_bytes_or_null()?.unwrap_or(&[]);
            let needle = ctx.get_raw(1).as_str_or_null()?.unwrap_or("");
            Ok(icontains(hay, needle))
        },
    )
}

/// Case-insensitive substring test of `needle_lower` (already lowercased
/// with [`str::to_lowercase`]) in `hay` (UTF-8). Equivalent to
/// `hay.to_lowercase().contains(needle_lower)`, with an allocation-free
/// path when both sides are ASCII (the common case).
pub fn icontains(hay: &[u8], needle_lower: &str) -> bool {
    let needle = needle_lower.as_bytes();
    if needle.is_empty() {
        return true;
    }
    if hay.is_ascii() && needle.is_ascii() {
        if needle.len() > hay.len() {
            return false;
        }
        let first = needle[0];
        let first_upper = first.to_ascii_uppercase();
        return (0..=hay.len() - needle.len()).any(|i| {
            (hay[i] == first || hay[i] == first_upper)
                && hay[i..i + needle.len()].eq_ignore_ascii_case(needle)
        });
    }
    String::from_utf8_lossy(hay)
        .to_lowercase()
        .contains(needle_lower)
}

/// Where readers get their connections.
pub enum Readers {
    /// A pool of read-only connections to the index file (WAL: readers do
    /// not block the writer, and see only committed batches).
    File {
        path: PathBuf,
        pool: Mutex<Vec<Connection>>,
    },
    /// One private in-memory index, used under a lock.
    Memory(Mutex<Connection>),
}

/// Pooled connections kept around; more are opened on demand and closed
/// when the pool is full.
const POOL_MAX: usize = 8;

impl Readers {
    pub fn file(path: PathBuf) -> Readers {
        Readers::File {
            path,
            pool: Mutex::new(Vec::new()),
        }
    }

    fn with<R>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, AuditError>,
    ) -> Result<R, AuditError> {
        match self {
            Readers::Memory(conn) => {
                let conn = conn
                    .lock()
                    .map_err(|_| AuditError::Index("index lock poisoned by a panic".into()))?;
                f(&conn)
            }
            Readers::File { path, pool } => {
                let pooled = pool.lock().ok().and_then(|mut p| p.pop());
                let conn = match pooled {
                    Some(c) => c,
                    None => open_reader(path)?,
                };
                let out = f(&conn);
                if let Ok(mut p) = pool.lock()
                    && p.len() < POOL_MAX
                {
                    p.push(conn);
                }
                out
            }
        }
    }

    /// Runs a query; see the module doc for the plan.
    pub fn search(&self, q: &Query) -> Result<Page, AuditError> {
        let cursor = q
            .cursor
            .as_deref()
            .map(|c| Cursor::parse(c, q.order))
            .transpose()?;
        let limit = q.effective_limit();
        self.with(|conn| {
            let tx = conn.unchecked_transaction()?;
            let page = search_in(&tx, q, cursor, limit);
            tx.finish()?;
            page
        })
    }

    pub fn get(&self, log: &LogKey, id: &str) -> Result<Option<Event>, AuditError> {
        self.with(|conn| {
            let body: Option<Vec<u8>> = conn
                .prepare_cached("SELECT body FROM events WHERE id = ?1 AND log = ?2")?
                .query_row(params![id, log_text(log)], |r| r.get(0))
                .optional()?;
            body.map(|b| parse_body(&b)).transpose()
        })
    }

    /// The query plan SQLite picks for `q` (for tests and the bench).
    pub fn explain(&self, q: &Query) -> Result<String, AuditError> {
        self.with(|conn| {
            let (sql, args) = build_sql(q, None, q.effective_limit(), Some((1, i64::MAX)));
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            let rows =
                stmt.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r?);
            }
            Ok(out.join("; "))
        })
    }
}

fn open_reader(path: &Path) -> Result<Connection, AuditError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.pragma_update(None, "cache_size", -16384)?;
    register_functions(&conn)?;
    Ok(conn)
}

/// Opens the index file read-only and returns its watermark; `None` if it
/// cannot be used.
pub fn read_only_watermark(path: &Path) -> Option<u64> {
    if !path.exists() {
        return None;
    }
    let conn = open_reader(path).ok()?;
    let v: i64 = conn
        .query_row("SELECT value FROM meta WHERE key = 'watermark'", [], |r| {
            r.get(0)
        })
        .ok()?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .ok()?;
    (version == SCHEMA_VERSION).then(|| u64::try_from(v).unwrap_or(0))
}

fn parse_body(b: &[u8]) -> Result<Event, AuditError> {
    Event::from_bytes(b).map_err(|e| {
        AuditError::Index(format!(
            "an indexed event does not parse ({e}); delete the index to rebuild it"
        ))
    })
}

/// Converts the query's time range into an inclusive seq range; `None`
/// when no event can match.
fn seq_range(conn: &Connection, q: &Query) -> Result<Option<(i64, i64)>, AuditError> {
    let mut lo = 1i64;
    let mut hi = i64::MAX;
    if let Some(from) = q.from_ns {
        let s: Option<i64> = conn
            .prepare_cached(
                "SELECT seq FROM events WHERE time_ns >= ?1 ORDER BY time_ns, seq LIMIT 1",
            )?
            .query_row([from], |r| r.get(0))
            .optional()?;
        match s {
            Some(s) => lo = s,
            None => return Ok(None),
        }
    }
    if let Some(to) = q.to_ns {
        let s: Option<i64> = conn
            .prepare_cached(
                "SELECT seq FROM events WHERE time_ns < ?1 ORDER BY time_ns DESC, seq DESC LIMIT 1",
            )?
            .query_row([to], |r| r.get(0))
            .optional()?;
        match s {
            Some(s) => hi = s,
            None => return Ok(None),
        }
    }
    Ok((lo <= hi).then_some((lo, hi)))
}

/// The smallest string greater than every string starting with `prefix`,
/// or `None` if there is none (all chars are `char::MAX`).
fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(c) = next {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn build_sql(
    q: &Query,
    cursor: Option<Cursor>,
    limit: usize,
    range: Option<(i64, i64)>,
) -> (String, Vec<Value>) {
    let mut conds: Vec<String> = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    let mut eq = |col: &str, v: Option<String>, conds: &mut Vec<String>| {
        if let Some(v) = v {
            args.push(Value::Text(v));
            conds.push(format!("{col} = ?{}", args.len()));
        }
    };
    eq("log", q.log.as_ref().map(log_text), &mut conds);
    eq("action", q.action.clone(), &mut conds);
    eq("principal_id", q.principal_id.clone(), &mut conds);
    eq(
        "principal_type",
        q.principal_type.map(|k| k.as_str().to_string()),
        &mut conds,
    );
    eq("resource_type", q.resource_type.clone(), &mut conds);
    eq("resource_id", q.resource_id.clone(), &mut conds);
    eq(
        "status",
        q.status.map(|s| s.as_str().to_string()),
        &mut conds,
    );
    eq("source_ip", q.source_ip.clone(), &mut conds);
    if let Some(p) = q.action_prefix.as_deref().filter(|p| !p.is_empty()) {
        args.push(Value::Text(p.to_string()));
        conds.push(format!("action >= ?{}", args.len()));
        if let Some(up) = prefix_upper_bound(p) {
            args.push(Value::Text(up));
            conds.push(format!("action < ?{}", args.len()));
        }
    }
    if let Some((lo, hi)) = range {
        if lo > 1 {
            args.push(Value::Integer(lo));
            conds.push(format!("seq >= ?{}", args.len()));
        }
        if hi < i64::MAX {
            args.push(Value::Integer(hi));
            conds.push(format!("seq <= ?{}", args.len()));
        }
    }
    if let Some(c) = cursor {
        args.push(Value::Integer(c.seq));
        let op = match q.order {
            Order::NewestFirst => "<",
            Order::OldestFirst => ">",
        };
        conds.push(format!("seq {op} ?{}", args.len()));
    }
    if let Some(t) = q.text.as_deref().filter(|t| !t.is_empty()) {
        args.push(Value::Text(t.to_lowercase()));
        conds.push(format!("{ICONTAINS}(body, ?{})", args.len()));
    }
    let wh = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    let dir = match q.order {
        Order::NewestFirst => "DESC",
        Order::OldestFirst => "ASC",
    };
    args.push(Value::Integer(i64::try_from(limit + 1).unwrap_or(i64::MAX)));
    let sql = format!(
        "SELECT seq, body FROM events {wh} ORDER BY seq {dir} LIMIT ?{}",
        args.len()
    );
    (sql, args)
}

fn search_in(
    conn: &Connection,
    q: &Query,
    cursor: Option<Cursor>,
    limit: usize,
) -> Result<Page, AuditError> {
    let Some(range) = seq_range(conn, q)? else {
        return Ok(Page::default());
    };
    let (sql, args) = build_sql(q, cursor, limit, Some(range));
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    let mut events = Vec::with_capacity(limit.min(1024));
    let mut more = false;
    while let Some(row) = rows.next()? {
        if events.len() == limit {
            more = true;
            break;
        }
        let body = row.get_ref(1)?.as_bytes().map_err(rusqlite::Error::from)?;
        events.push(parse_body(body)?);
    }
    let next_cursor = match (more, events.last()) {
        (true, Some(last)) => Some(Cursor::new(last.seq, q.order).encode()),
        _ => None,
    };
    Ok(Page {
        events,
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(hay: &str, needle: &str) -> bool {
        hay.to_lowercase().contains(&needle.to_lowercase())
    }

    #[test]
    fn icontains_matches_the_naive_reference() {
        let hays = [
            "Hello World",
            "ÄRGER über Straße",
            "abc",
            "",
            "KELVIN \u{212A}",
            "x\"y\\z",
        ];
        let needles = [
            "", "hello", "WORLD", "o w", "ärger", "ÜBER", "strasse", "straße", "abcd", "k", "\"y",
            "zz",
        ];
        for h in hays {
            for n in needles {
                assert_eq!(
                    icontains(h.as_bytes(), &n.to_lowercase()),
                    naive(h, n),
                    "{h:?} {n:?}"
                );
            }
        }
    }

    #[test]
    fn prefix_bounds() {
        assert_eq!(prefix_upper_bound("iam."), Some("iam/".into()));
        assert_eq!(prefix_upper_bound("a\u{10FFFF}"), Some("b".into()));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
        assert_eq!(prefix_upper_bound("\u{D7FF}"), Some("\u{E000}".into()));
    }
}
