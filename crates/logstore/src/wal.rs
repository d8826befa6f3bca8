//! The write-ahead log: every accepted entry is written and fsynced here
//! before its append is acknowledged.
//!
//! # Crash contract
//!
//! When [`Wal::wait`] returns `Ok` for a ticket, the records submitted
//! under that ticket and every earlier one are on disk (`fdatasync`
//! returned). After a crash, replay yields a prefix of the submitted
//! records that holds at least every acknowledged one; a record is replayed
//! whole or not at all (each is a checksummed [`diskio::frame`]). A torn
//! tail of the last segment is truncated on open; damage followed by a
//! valid record is [`Error::Corrupt`] and nothing is repaired.
//!
//! A failed write or fsync poisons the log: every later submission fails
//! with [`Error::Poisoned`] (after a failed fsync the kernel may have
//! dropped the dirty pages; a retry could report success for lost data).
//!
//! # Group commit
//!
//! Appenders [`Wal::submit`] (copy framed bytes into a shared buffer under
//! a mutex, get a ticket) then [`Wal::wait`]. One writer thread takes all
//! that is pending, writes it with one `write` and calls `fdatasync` once,
//! then wakes every waiter it covered; the next group gathers meanwhile.
//! A dedicated thread (not leader/follower among appenders) keeps the
//! appenders' threads free of fsync latency spikes and the code simple.
//!
//! # Files
//!
//! `wal/00000001`, `wal/00000002`, …: an 8-byte magic then framed records
//! (docs/format/logstore.md). A new segment starts at open, past
//! [`SEGMENT_BYTES`], and on [`Wal::rotate`]; it is created under a `.tmp`
//! name and renamed once its magic is fsynced. Segments are deleted whole
//! ([`Wal::delete_before`]) once their entries are in project segments.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use diskio::{Faults, ScanEnd};
use model::{Label, Labels};

use crate::enc::{Reader, put_bytes, put_uvarint, put_varint};
use crate::error::IoContext;
use crate::{Entry, Error, StreamBatch, files};

/// A segment is closed and a new one started past this size.
pub const SEGMENT_BYTES: u64 = 128 << 20;
/// The first bytes of every WAL segment.
pub const SEGMENT_MAGIC: &[u8; 8] = b"FDLOGWL1";
/// Largest record payload accepted on replay.
pub const MAX_RECORD: usize = 1 << 30;

const REC_APPEND: u8 = 1;

/// Encodes an append record: the project and its stream batches.
pub fn encode_append(out: &mut Vec<u8>, project: &str, batches: &[StreamBatch]) {
    out.push(REC_APPEND);
    put_bytes(out, project.as_bytes());
    put_uvarint(out, batches.len() as u64);
    for b in batches {
        put_uvarint(out, b.labels.len() as u64);
        for l in b.labels.iter() {
            put_bytes(out, l.name.as_bytes());
            put_bytes(out, l.value.as_bytes());
        }
        put_uvarint(out, b.entries.len() as u64);
        for e in &b.entries {
            put_varint(out, e.ts);
            put_bytes(out, e.line.as_bytes());
            put_uvarint(out, e.metadata.len() as u64);
            for (k, v) in &e.metadata {
                put_bytes(out, k.as_bytes());
                put_bytes(out, v.as_bytes());
            }
        }
    }
}

/// Decodes an append record into its project and batches.
pub fn decode_append(payload: &[u8]) -> Result<(String, Vec<StreamBatch>), String> {
    let mut r = Reader::new(payload);
    let kind = r.u8("record type")?;
    if kind != REC_APPEND {
        return Err(format!("unknown record type {kind}"));
    }
    let project = r.str("project")?.to_string();
    let n = r.usize_bounded(r.remaining(), "stream count")?;
    let mut batches = Vec::with_capacity(n);
    for _ in 0..n {
        let nl = r.usize_bounded(r.remaining(), "label count")?;
        let mut labels = Vec::with_capacity(nl);
        for _ in 0..nl {
            let name = r.str("label name")?.to_string();
            let value = r.str("label value")?.to_string();
            labels.push(Label { name, value });
        }
        let labels = Labels::from_sorted_checked(labels).map_err(|e| e.to_string())?;
        let ne = r.usize_bounded(r.remaining(), "entry count")?;
        let mut entries = Vec::with_capacity(ne);
        for _ in 0..ne {
            let ts = r.varint("timestamp")?;
            let line = r.str("line")?.to_string();
            let nm = r.usize_bounded(r.remaining(), "metadata count")?;
            let mut metadata = Vec::with_capacity(nm);
            for _ in 0..nm {
                let k = r.str("metadata name")?.to_string();
                let v = r.str("metadata value")?.to_string();
                metadata.push((k, v));
            }
            entries.push(Entry { ts, line, metadata });
        }
        batches.push(StreamBatch { labels, entries });
    }
    if !r.is_empty() {
        return Err(format!("{} trailing bytes after record", r.remaining()));
    }
    Ok((project, batches))
}

/// A ticket from [`Wal::submit`]: wait on it for durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

/// Shared between appenders and the writer thread; every field is
/// protected by the mutex around it.
struct State {
    /// Framed records submitted and not yet taken by the writer.
    pending: Vec<u8>,
    /// Ticket of the last submission.
    next: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    poisoned: Option<String>,
    shutdown: bool,
    rotate_asked: u64,
    rotate_done: u64,
    /// Current segment number (updated by the writer).
    segment: u64,
    /// Group commits (write + fdatasync) done.
    syncs: u64,
}

struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    /// Wakes the writer.
    work: Condvar,
    /// Wakes waiters after a group commit or a rotation.
    done: Condvar,
    faults: Faults,
}

/// The log; see the module doc for its crash contract.
pub struct Wal {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock is a bug elsewhere; the state itself
    // stays consistent (every update is a plain assignment).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Segment numbers in `dir`, ascending.
fn list_segments(dir: &Path) -> Result<Vec<u64>, Error> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.len() == 8
            && let Ok(n) = name.parse::<u64>()
        {
            v.push(n);
        }
    }
    v.sort_unstable();
    Ok(v)
}

/// Replays one segment; `last` allows (and truncates) a torn tail.
fn read_segment(
    path: &Path,
    last: bool,
    apply: &mut impl FnMut(&[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    let bytes = fs::read(path).at(path)?;
    if bytes.len() < SEGMENT_MAGIC.len() {
        return Err(Error::corrupt(path, "WAL segment shorter than its magic"));
    }
    if &bytes[..8] != SEGMENT_MAGIC {
        return Err(Error::corrupt(path, "bad WAL segment magic"));
    }
    let mut it = diskio::scan(&bytes[8..], MAX_RECORD);
    for rec in it.by_ref() {
        apply(rec.payload)?;
    }
    match it.finish() {
        ScanEnd::Clean => Ok(()),
        ScanEnd::Torn { good_end, reason } if last => {
            let f = OpenOptions::new().write(true).open(path).at(path)?;
            f.set_len((8 + good_end) as u64).at(path)?;
            f.sync_all().at(path)?;
            let _ = reason;
            Ok(())
        }
        ScanEnd::Torn { good_end, reason } => Err(Error::corrupt(
            path,
            format!(
                "bad record at byte {} ({reason}) in a WAL segment that is not the last",
                8 + good_end
            ),
        )),
        ScanEnd::Corrupt {
            offset,
            next_valid,
            reason,
        } => Err(Error::corrupt(
            path,
            format!(
                "bad record at byte {} ({reason}) followed by a valid one at byte {}: damage, not a torn write",
                8 + offset,
                8 + next_valid
            ),
        )),
    }
}

impl Wal {
    /// Opens the log in `dir` (created if missing): hands every record to
    /// `apply(segment, payload)` in order, truncates a torn tail, starts a
    /// fresh segment (numbered at least `min_next`, so numbers never go
    /// back below a cut that segments recorded, even if every WAL file is
    /// gone) and the writer thread.
    pub fn open(
        dir: &Path,
        faults: Faults,
        min_next: u64,
        mut apply: impl FnMut(u64, &[u8]) -> Result<(), Error>,
    ) -> Result<Wal, Error> {
        fs::create_dir_all(dir).at(dir)?;
        for e in fs::read_dir(dir).at(dir)? {
            let e = e.at(dir)?;
            if e.file_name().to_string_lossy().ends_with(files::TMP_SUFFIX) {
                fs::remove_file(e.path()).at(&e.path())?;
            }
        }
        let mut segs = list_segments(dir)?;
        // A segment holding a prefix of its magic holds no record (the
        // magic is fsynced before the rename; a file system may still show
        // less after a power cut): drop it.
        let mut removed = false;
        segs.retain(|&s| {
            let p = dir.join(files::wal_segment_name(s));
            if !fs::metadata(&p).is_ok_and(|m| m.len() < SEGMENT_MAGIC.len() as u64) {
                return true;
            }
            match fs::read(&p) {
                Ok(b) if SEGMENT_MAGIC.starts_with(&b) => {
                    removed |= fs::remove_file(&p).is_ok();
                    false
                }
                _ => true,
            }
        });
        if removed {
            diskio::fsync_dir(dir).at(dir)?;
        }
        for (i, &s) in segs.iter().enumerate() {
            let p = dir.join(files::wal_segment_name(s));
            read_segment(&p, i + 1 == segs.len(), &mut |payload| apply(s, payload))?;
        }
        let segment = (segs.last().copied().unwrap_or(0) + 1).max(min_next);
        let file = create_segment(dir, segment)?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                pending: Vec::with_capacity(1 << 20),
                next: 0,
                durable: 0,
                poisoned: None,
                shutdown: false,
                rotate_asked: 0,
                rotate_done: 0,
                segment,
                syncs: 0,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            faults,
        });
        let s2 = shared.clone();
        let handle = std::thread::Builder::new()
            .name("logstore-wal".into())
            .spawn(move || writer(s2, file, segment))
            .map_err(|e| Error::io(dir, e))?;
        Ok(Wal {
            shared,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Queues framed records (as built by [`diskio::encode_record`]) and
    /// returns the ticket to wait on.
    pub fn submit(&self, bytes: &[u8]) -> Result<Ticket, Error> {
        let mut st = lock(&self.shared.state);
        if let Some(p) = &st.poisoned {
            return Err(Error::Poisoned(p.clone()));
        }
        if st.shutdown {
            return Err(Error::Closed);
        }
        st.pending.extend_from_slice(bytes);
        st.next += 1;
        let t = Ticket(st.next);
        drop(st);
        self.shared.work.notify_one();
        Ok(t)
    }

    /// Blocks until the ticket's records are fsynced.
    pub fn wait(&self, t: Ticket) -> Result<(), Error> {
        let mut st = lock(&self.shared.state);
        loop {
            if st.durable >= t.0 {
                return Ok(());
            }
            if let Some(p) = &st.poisoned {
                return Err(Error::Poisoned(p.clone()));
            }
            st = self.shared.done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Writes and fsyncs what is pending, closes the current segment and
    /// starts a new one; returns the new segment's number. Everything
    /// submitted before the call is durable in segments before it.
    pub fn rotate(&self) -> Result<u64, Error> {
        let mut st = lock(&self.shared.state);
        st.rotate_asked += 1;
        let want = st.rotate_asked;
        self.shared.work.notify_one();
        loop {
            if let Some(p) = &st.poisoned {
                return Err(Error::Poisoned(p.clone()));
            }
            if st.rotate_done >= want {
                return Ok(st.segment);
            }
            st = self.shared.done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Deletes every segment numbered below `before` (their entries are
    /// durable elsewhere), then fsyncs the directory.
    pub fn delete_before(&self, before: u64) -> Result<(), Error> {
        let dir = &self.shared.dir;
        let mut any = false;
        for s in list_segments(dir)? {
            if s < before {
                let p = dir.join(files::wal_segment_name(s));
                fs::remove_file(&p).at(&p)?;
                any = true;
            }
        }
        if any {
            diskio::fsync_dir(dir).at(dir)?;
        }
        Ok(())
    }

    /// Group commits done so far (far fewer than appends under load).
    pub fn syncs(&self) -> u64 {
        lock(&self.shared.state).syncs
    }

    /// Bytes of WAL segments on disk.
    pub fn disk_bytes(&self) -> u64 {
        let dir = &self.shared.dir;
        fs::read_dir(dir)
            .map(|it| {
                it.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Writes what is pending and stops the writer thread.
    pub fn close(&self) -> Result<(), Error> {
        lock(&self.shared.state).shutdown = true;
        self.shared.work.notify_one();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
        match lock(&self.shared.state).poisoned.clone() {
            Some(p) => Err(Error::Poisoned(p)),
            None => Ok(()),
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Creates segment `n` holding only its magic, under a temporary name
/// renamed once durable, so no segment ever lacks its magic.
fn create_segment(dir: &Path, n: u64) -> Result<File, Error> {
    let p = dir.join(files::wal_segment_name(n));
    let tmp = dir.join(format!(
        "{}{}",
        files::wal_segment_name(n),
        files::TMP_SUFFIX
    ));
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp)
        .at(&tmp)?;
    std::io::Write::write_all(&mut f, SEGMENT_MAGIC).at(&tmp)?;
    f.sync_all().at(&tmp)?;
    fs::rename(&tmp, &p).at(&p)?;
    diskio::fsync_dir(dir).at(dir)?;
    Ok(f)
}

fn writer(shared: Arc<Shared>, mut file: File, mut segment: u64) {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut size: u64 = 0;
    loop {
        let (upto, rotate) = {
            let mut st = lock(&shared.state);
            while st.pending.is_empty() && !st.shutdown && st.rotate_asked == st.rotate_done {
                st = shared.work.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.poisoned.is_some() {
                st.pending.clear();
                if st.shutdown {
                    return;
                }
                st.rotate_done = st.rotate_asked;
                shared.done.notify_all();
                continue;
            }
            if st.pending.is_empty() && st.shutdown && st.rotate_asked == st.rotate_done {
                return;
            }
            std::mem::swap(&mut buf, &mut st.pending);
            (st.next, st.rotate_asked)
        };
        let what = "wal segment";
        let mut result = Ok(());
        if !buf.is_empty() {
            result = diskio::write_all(&shared.faults, &mut file, &buf, what)
                .and_then(|()| diskio::sync_file(&shared.faults, &file, what));
            size += buf.len() as u64;
        }
        let mut rotated = false;
        let want_rotate = rotate != lock(&shared.state).rotate_done;
        if result.is_ok() && (size >= SEGMENT_BYTES || want_rotate) {
            match create_segment(&shared.dir, segment + 1) {
                Ok(f) => {
                    file = f;
                    segment += 1;
                    size = 0;
                    rotated = true;
                }
                Err(e) => result = Err(std::io::Error::other(e.to_string())),
            }
        }
        buf.clear();
        if buf.capacity() > 16 << 20 {
            buf = Vec::with_capacity(1 << 20);
        }
        let mut st = lock(&shared.state);
        match result {
            Ok(()) => {
                st.durable = upto;
                st.syncs += 1;
                if rotated {
                    st.segment = segment;
                    st.rotate_done = rotate;
                }
            }
            Err(e) => {
                st.poisoned = Some(format!("{} segment {segment}: {e}", shared.dir.display()));
            }
        }
        drop(st);
        shared.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_records_round_trip_and_reject_every_cut() {
        let batches = vec![
            StreamBatch {
                labels: Labels::from_pairs([("app", "api"), ("env", "prod")]),
                entries: vec![
                    Entry {
                        ts: 5,
                        line: "hello".into(),
                        metadata: vec![("trace_id".into(), "t1".into())],
                    },
                    Entry {
                        ts: -3,
                        line: "".into(),
                        metadata: vec![],
                    },
                ],
            },
            StreamBatch {
                labels: Labels::new(),
                entries: vec![],
            },
        ];
        let mut b = Vec::new();
        encode_append(&mut b, "acme", &batches);
        let (p, got) = decode_append(&b).unwrap();
        assert_eq!(p, "acme");
        assert_eq!(got, batches);
        for cut in 0..b.len() {
            assert!(decode_append(&b[..cut]).is_err(), "cut {cut}");
        }
    }
}
