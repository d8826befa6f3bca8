//! Appends keyed by the raw bytes a client encoded a series' labels in:
//! the fast path for series the head already holds.
//!
//! A remote write client sends every series' labels again with every
//! sample, byte for byte the same. [`Db::append`](crate::Db::append) takes
//! decoded, validated, owned labels and hashes and compares them in the
//! head; [`Db::append_keyed`](crate::Db::append_keyed) takes instead, per
//! series, a *key* — bytes that determine the label set completely (for
//! remote write 1.0, the `TimeSeries`' label fields as they are on the
//! wire) — and looks it up in a per-project [`Cache`] of key → series ref.
//! A known series costs one keyed hash of its key and one map lookup: its
//! labels are never decoded, validated, allocated, hashed or compared.
//! Only on a miss does the store ask the caller for the labels (the
//! caller decodes and validates them then, and may refuse the series).
//!
//! Semantics are exactly [`Db::append`]'s: the same series, the same
//! per-sample checks in the same order (shard by shard, batch order within
//! a shard), the same [`AppendReport`], the same WAL records, the same
//! fsync before returning.
//!
//! **Keys.** A map key is SipHash-1-3 (128-bit output) of the caller's
//! `salt` (length-prefixed) and key bytes, under a secret key drawn once per process: an
//! attacker who does not know it cannot make two keys collide (a 2⁻¹²⁸
//! chance per pair otherwise), so the cache stores no key bytes. The salt
//! separates key spaces: a caller puts in it everything besides the bytes
//! that decides whether a series is valid (its limits) and how the bytes
//! are read (the protocol), so a hit implies the same labels *and* the same
//! validation outcome as when the entry was made.
//!
//! **Invalidation.** An entry names a head shard and a local ref. The
//! head garbage-collects series at a block cut (under the shard's lock);
//! the cut then empties the cache and bumps its epoch ([`Cache::invalidate`],
//! still under that lock, in that order). An append reads the epoch before
//! its lookups and again *under each head shard's lock*: if it moved, an
//! entry it found may predate the collection, and every series it found
//! is resolved by its labels instead, like a miss. (An entry is only ever
//! made under the lock of the shard it names, while its ref is live, so an
//! unchanged epoch proves the ref still is.)
//!
//! **Memory.** 16 bytes per entry (64 bits of the key as the map key, 32
//! more bits checked on a hit — 96 in all — and the ref) plus the hash
//! table's spare capacity: 18–37 bytes per active series.
//!
//! **Lock order.** Head shard → cache shard (entries are made under the
//! head's lock); lookups take a cache shard alone.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use model::{HistogramSample, HistogramValue, Labels, Metadata, Sample};
use siphasher::sip128::{Hasher128, SipHasher13};

use crate::db::Project;
use crate::head::{Head, IdMap, MAX_LISTED_REJECTIONS, SHARDS, key_hash, series_key};
use crate::wal::{self, SamplesEncoder, Wal};
use crate::{AppendReport, Error, RejectReason, Rejection};

/// One series of a [`KeyedBatch`].
#[derive(Clone, Copy, Debug)]
pub struct KeyedSeries<'a> {
    /// Bytes that determine the series' label set (and, with the batch's
    /// salt, whether it is valid): equal keys must mean equal labels.
    /// Different keys may name the same series (e.g. labels encoded in
    /// another order): the cache then holds an entry for each.
    pub key: &'a [u8],
    pub samples: &'a [Sample],
    pub histograms: &'a [HistogramSample],
}

/// A batch for [`Db::append_keyed`](crate::Db::append_keyed).
#[derive(Clone, Debug, Default)]
pub struct KeyedBatch<'a> {
    /// Separates key spaces: keys under different salts never match. Put
    /// in it the protocol and everything that decides a series' validity
    /// besides its key (e.g. a hash of the project's label limits).
    pub salt: &'a [u8],
    pub series: Vec<KeyedSeries<'a>>,
    /// Metric metadata, stored as [`Db::append`](crate::Db::append) does.
    pub metadata: Vec<(String, Metadata)>,
}

/// A series' keyed hash: the two halves of a 128-bit SipHash. `.0` is the
/// map key (the map's identity hasher takes it as is); the low 32 bits of
/// `.1` are checked on a hit, the high ones pick the cache shard.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Key(u64, u64);

#[derive(Clone, Copy, Debug)]
struct Entry {
    check: u32,
    /// `local ref × SHARDS + shard`, as in WAL records.
    wal_ref: u32,
}

/// Cache shards (by key), so concurrent appends of a project rarely meet.
const CACHE_SHARDS: usize = 16;

/// One project's key → series cache. See the module doc.
pub(crate) struct Cache {
    /// Bumped at every garbage collection of any of the project's head
    /// shards, under that shard's lock, after the maps were emptied.
    epoch: AtomicU32,
    maps: Box<[Mutex<IdMap<u64, Entry>>]>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            epoch: AtomicU32::new(0),
            maps: (0..CACHE_SHARDS)
                .map(|_| Mutex::new(IdMap::default()))
                .collect(),
        }
    }
}

/// The process' secret SipHash key, drawn once from std's random source
/// (each `RandomState` is seeded from the OS; two of its outputs give 128
/// unpredictable bits).
fn secret() -> (u64, u64) {
    static K: OnceLock<(u64, u64)> = OnceLock::new();
    *K.get_or_init(|| {
        let s = std::collections::hash_map::RandomState::new();
        (
            s.hash_one(0x6b65_7965_6430_u64),
            s.hash_one(0x6b65_7965_6431_u64),
        )
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cache {
    /// The hasher state after `salt` (its length first, so that no
    /// (salt, key) pair feeds the same bytes as another).
    fn salted(salt: &[u8]) -> SipHasher13 {
        let (k0, k1) = secret();
        let mut h = SipHasher13::new_with_keys(k0, k1);
        h.write(&(salt.len() as u64).to_le_bytes());
        h.write(salt);
        h
    }

    fn key(salted: &SipHasher13, bytes: &[u8]) -> Key {
        let mut h = *salted;
        h.write(bytes);
        let x = h.finish128();
        Key(x.h1, x.h2)
    }

    fn map(&self, k: Key) -> MutexGuard<'_, IdMap<u64, Entry>> {
        lock(&self.maps[((k.1 >> 32) % CACHE_SHARDS as u64) as usize])
    }

    /// The WAL ref cached for `k`.
    fn get(&self, k: Key) -> Option<u32> {
        self.map(k)
            .get(&k.0)
            .filter(|e| e.check == k.1 as u32)
            .map(|e| e.wal_ref)
    }

    /// Caches `wal_ref` for `k`. Only with the lock of the ref's head shard
    /// held, while the ref is live.
    fn insert(&self, k: Key, wal_ref: u32) {
        let e = Entry {
            check: k.1 as u32,
            wal_ref,
        };
        self.map(k).insert(k.0, e);
    }

    pub fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Forgets every entry. Call with the lock of the head shard whose
    /// series were collected held, right after collecting.
    pub fn invalidate(&self) {
        for m in self.maps.iter() {
            *lock(m) = IdMap::default();
        }
        // After the maps are empty: see the module doc.
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.maps.iter().map(|m| lock(m).len()).sum()
    }
}

/// What phase 1 (no head lock) found for a series.
enum Found {
    /// In the cache: the shard's local ref, valid if the epoch still is.
    Cached { local: u32 },
    /// Not cached: the caller's labels, their head key and hash.
    Labels {
        labels: Labels,
        key: Vec<u8>,
        hash: u64,
    },
    /// The caller refused it (it recorded why).
    Refused,
}

/// [`crate::Db::append_keyed`] once the project is resolved.
pub(crate) fn append(
    p: &Project,
    wal: &Wal,
    batch: &KeyedBatch<'_>,
    labels_of: &mut dyn FnMut(usize) -> Option<Labels>,
) -> Result<AppendReport, Error> {
    // Phase 1, no head lock: keys hashed, cache consulted, labels of the
    // misses asked for (in batch order) and checked as `append` checks.
    let mut keys = Vec::with_capacity(batch.series.len());
    let mut found = Vec::with_capacity(batch.series.len());
    let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); SHARDS as usize];
    let salted = Cache::salted(batch.salt);
    // Before any lookup (see the module doc).
    let start_epoch = p.keyed.epoch();
    for (i, s) in batch.series.iter().enumerate() {
        let k = Cache::key(&salted, s.key);
        keys.push(k);
        let (f, shard) = match p.keyed.get(k) {
            Some(wal_ref) => (
                Found::Cached {
                    local: wal_ref / SHARDS,
                },
                (wal_ref % SHARDS) as usize,
            ),
            None => match labels_of(i) {
                None => (Found::Refused, usize::MAX),
                Some(labels) => {
                    check_labels(i, &labels)?;
                    let mut key = Vec::new();
                    series_key(&labels, &mut key);
                    let hash = key_hash(&key);
                    (Found::Labels { labels, key, hash }, Project::shard_of(hash))
                }
            },
        };
        if shard != usize::MAX {
            by_shard[shard].push(i);
        }
        found.push(f);
    }

    // Phase 2, shard by shard in order (as `append`), batch order within.
    let mut report = AppendReport::default();
    let mut framed = Vec::new();
    let mut ticket = None;
    for (shard, indexes) in by_shard.iter().enumerate() {
        if indexes.is_empty() {
            continue;
        }
        let mut head = p.shard(shard);
        // Read under the shard's lock: a collection of this shard bumps it
        // under the same lock (see the module doc).
        let unchanged = p.keyed.epoch() == start_epoch;
        let mut new_series: Vec<u32> = Vec::new();
        let mut samples = SamplesEncoder::default();
        let mut hists: Vec<(u32, i64, &HistogramValue)> = Vec::new();
        for &i in indexes {
            let s = &batch.series[i];
            // The ref, and whether the cache lacks a valid entry for it.
            let (r, make_entry) = match &found[i] {
                Found::Cached { local } if unchanged && head.has_series(*local) => (*local, false),
                Found::Cached { .. } => {
                    // Maybe made before a collection: resolve by labels (the
                    // caller validated these bytes under this salt before,
                    // so it gives them again).
                    let Some(labels) = labels_of(i) else { continue };
                    if check_labels(i, &labels).is_err() {
                        // Cannot happen (they passed when the entry was
                        // made); never fail half-way through the shards.
                        continue;
                    }
                    let mut key = Vec::new();
                    series_key(&labels, &mut key);
                    let hash = key_hash(&key);
                    let found = (&labels, &key[..], hash);
                    match resolve(p, &mut head, found, s, &mut report, &mut new_series) {
                        Some(r) => (r, true),
                        None => continue,
                    }
                }
                Found::Labels { labels, key, hash } => {
                    let found = (labels, &key[..], *hash);
                    match resolve(p, &mut head, found, s, &mut report, &mut new_series) {
                        Some(r) => (r, true),
                        None => continue,
                    }
                }
                Found::Refused => continue,
            };
            if make_entry {
                let wal_ref = head.wal_ref(r);
                p.keyed.insert(keys[i], wal_ref);
            }
            append_samples(&mut head, r, s, &mut report, &mut samples, &mut hists);
        }
        encode_wal(&head, &new_series, samples, &hists, &mut framed);
        // Queued under the shard's lock, as `append` does.
        if !framed.is_empty() {
            ticket = Some(wal.submit(&framed)?);
            framed.clear();
        }
    }
    if let Some(t) = p.store_metadata(wal, &batch.metadata)? {
        ticket = Some(t);
    }
    let ticket = match ticket {
        Some(t) => t,
        None => wal.barrier()?,
    };
    wal.wait(ticket)?;
    Ok(report)
}

/// The checks `append` makes on a batch's labels.
fn check_labels(i: usize, labels: &Labels) -> Result<(), Error> {
    if labels.is_empty() {
        return Err(Error::InvalidInput(format!(
            "series {i} of the batch has no labels; every series needs at least a metric name"
        )));
    }
    if let Some(l) = labels.iter().find(|l| l.name.is_empty()) {
        return Err(Error::InvalidInput(format!(
            "series {i} ({labels}) has a label with an empty name (value {:?})",
            l.value
        )));
    }
    Ok(())
}

/// Finds or creates the series (as `Head::append_batch` does); `None`
/// when the project is at its series limit (every sample rejected).
fn resolve(
    p: &Project,
    head: &mut Head,
    (labels, key, hash): (&Labels, &[u8], u64),
    s: &KeyedSeries<'_>,
    report: &mut AppendReport,
    new_series: &mut Vec<u32>,
) -> Option<u32> {
    if let Some(r) = head.lookup(hash, key) {
        return Some(r);
    }
    if p.series_total.fetch_add(1, Ordering::Relaxed) >= head.max_series() {
        p.series_total.fetch_sub(1, Ordering::Relaxed);
        for x in s.samples {
            report.reject(RejectReason::SeriesLimit, labels, x.t);
        }
        for h in s.histograms {
            report.reject(RejectReason::SeriesLimit, labels, h.t);
        }
        return None;
    }
    let r = head.create(head.next_ref(), hash, key);
    new_series.push(r);
    report.new_series += 1;
    Some(r)
}

/// A rejection whose labels are read from the head only if it is listed.
fn reject(report: &mut AppendReport, head: &Head, r: u32, reason: RejectReason, t: i64) {
    let i = RejectReason::ALL
        .iter()
        .position(|x| *x == reason)
        .unwrap_or(0);
    report.rejected_counts[i] += 1;
    if report.rejected.len() < MAX_LISTED_REJECTIONS {
        report.rejected.push(Rejection {
            reason,
            labels: head.labels(r),
            t,
        });
    }
}

/// The per-sample part of `Head::append_batch`.
fn append_samples<'b>(
    head: &mut Head,
    r: u32,
    s: &KeyedSeries<'b>,
    report: &mut AppendReport,
    samples: &mut SamplesEncoder,
    hists: &mut Vec<(u32, i64, &'b HistogramValue)>,
) {
    let mut begun = false;
    for x in s.samples {
        match head.append_float(r, x.t, x.v) {
            Ok(stored) => {
                report.accepted_samples += 1;
                if stored {
                    if !begun {
                        samples.begin_series(head.wal_ref(r));
                        begun = true;
                    }
                    samples.push(x.t, x.v);
                }
            }
            Err(reason) => reject(report, head, r, reason, x.t),
        }
    }
    for h in s.histograms {
        match head.append_hist(r, h.t, &h.h) {
            Ok(stored) => {
                report.accepted_histograms += 1;
                if stored {
                    hists.push((head.wal_ref(r), h.t, &h.h));
                }
            }
            Err(reason) => reject(report, head, r, reason, h.t),
        }
    }
}

/// The WAL records of `Head::append_batch`: new series, samples,
/// histograms, each framed.
fn encode_wal(
    head: &Head,
    new_series: &[u32],
    samples: SamplesEncoder,
    hists: &[(u32, i64, &HistogramValue)],
    wal_out: &mut Vec<u8>,
) {
    let mut payload = Vec::new();
    let mut frame = |payload: &mut Vec<u8>| {
        diskio::encode_record(wal_out, payload).expect("bug: WAL record empty or over 4 GiB");
        payload.clear();
    };
    if !new_series.is_empty() {
        let labels: Vec<(u32, Labels)> = new_series
            .iter()
            .map(|r| (head.wal_ref(*r), head.labels(*r)))
            .collect();
        wal::encode_series(
            &mut payload,
            head.project_id,
            labels.iter().map(|(r, l)| {
                (
                    *r,
                    l.iter()
                        .map(|l| (l.name.as_str(), l.value.as_str()))
                        .collect(),
                )
            }),
        );
        frame(&mut payload);
    }
    if !samples.is_empty() {
        samples.finish(head.project_id, &mut payload);
        frame(&mut payload);
    }
    if !hists.is_empty() {
        wal::encode_histograms(&mut payload, head.project_id, hists);
        frame(&mut payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_salt_and_every_byte() {
        let key = |salt: &[u8], b: &[u8]| Cache::key(&Cache::salted(salt), b);
        let a = key(b"s", b"abc");
        assert_eq!(a, key(b"s", b"abc"));
        assert_ne!(a, key(b"t", b"abc"));
        assert_ne!(a, key(b"sa", b"bc"));
        assert_ne!(a, key(b"s", b"abd"));
        assert_ne!(a, key(b"s", b"abc\0"));
        assert_ne!(key(b"", b""), key(b"", b"\0"));
    }

    #[test]
    fn invalidate_empties_and_bumps_the_epoch() {
        let c = Cache::default();
        let k = Cache::key(&Cache::salted(b""), b"x");
        c.insert(k, 9);
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(k), Some(9));
        // The same map key with other check bits is not a hit.
        assert_eq!(c.get(Key(k.0, k.1 ^ 1)), None);
        c.invalidate();
        assert_eq!(c.len(), 0);
        assert_eq!(c.epoch(), 1);
    }
}
