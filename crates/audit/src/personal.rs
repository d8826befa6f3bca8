//! Personal data in audit events: salted commitments in the leaf, values
//! sealed under per-subject keys, erasure by deleting the keys
//! (crypto-shredding).
//!
//! # Model (event schema version 2)
//!
//! The fields listed in [`PERSONAL_FIELDS`] never enter a Merkle leaf in
//! clear. For each one an event carries, the leaf holds
//! `personal.<field> = base64(SHA-256(salt ‖ value))` with a fresh 16-byte
//! random salt, and the field itself is left out of the leaf. The values
//! and salts are sealed (XChaCha20-Poly1305) under the key of their
//! *subject* — the acting person, or the user a resource names, per log —
//! into envelopes stored next to the leaf in the segment record (`leaf ‖
//! 0x0A ‖ (u16 len ‖ envelope)+`, see `docs/format/audit-segment.md`). The keys live in `subjects.sqlite`
//! (this module's [`Keystore`]), the only place they exist.
//!
//! Erasing a person deletes their keys: every envelope sealed under them
//! becomes unreadable, so the values and salts are gone, while the leaves
//! (and therefore every tile, checkpoint and proof) stay byte-identical and
//! keep verifying. Reads show [`ERASED`] in place of an erased value.
//!
//! Why a sealed envelope in the segment rather than a mutable side table:
//! the segment record stays the one write and the one fsync of the
//! acknowledgement path; only a batch holding some subject's first event
//! costs a key write (one SQLite commit for all its new keys, made by the
//! audit writer before the batch, see [`Keystore`]).
//!
//! # Subjects
//!
//! A subject is `(log, who)`: `who` is `user:<id>` or `token:<id>` for an
//! authenticated principal, `name:<claimed>` for a failed login that
//! claimed a user name, `ip:<address>` for other anonymous requests. Keys
//! are per log so that a legal hold on one project keeps that project's
//! values while the person is erased everywhere else. The `system`
//! principal has no personal data; its events carry no envelope.
//!
//! This module knows nothing of HTTP; the search index never stores a
//! personal value (the `source_ip` filter is applied after revealing).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Mutex, RwLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::error::AuditError;
use crate::event::{Event, EventDraft, PrincipalKind};

/// The fields of the schema that are personal, as `personal` map keys.
pub const PERSONAL_FIELDS: [&str; 4] =
    ["principal.id", "principal.name", "source_ip", "user_agent"];

/// Shown in place of a value whose subject was erased.
pub const ERASED: &str = "[erased]";
/// Shown in place of a value whose envelope cannot be opened (no key for
/// it in `subjects.sqlite`, or it fails authentication).
pub const UNAVAILABLE: &str = "[unavailable]";

/// The id a leaf carries for an anonymous principal whose claimed name is
/// personal.
const ANONYMOUS_ID: &str = "anonymous";

/// Envelope format version (first byte).
const ENVELOPE_V1: u8 = 1;
const KEY_ID_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const SALT_LEN: usize = 16;

/// Separates the leaf from the envelope in a segment record. Canonical
/// JSON never contains a raw newline, so the first one ends the leaf.
pub const SEPARATOR: u8 = b'\n';

/// Splits a segment record payload into the leaf (the canonical event,
/// what the Merkle tree hashes) and the sealed envelope, if any.
pub fn split_payload(payload: &[u8]) -> (&[u8], Option<&[u8]>) {
    match payload.iter().position(|&b| b == SEPARATOR) {
        Some(i) => (&payload[..i], Some(&payload[i + 1..])),
        None => (payload, None),
    }
}

/// `base64(SHA-256(salt ‖ value))`: the commitment a leaf holds.
pub fn commitment(salt: &[u8], value: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(value.as_bytes());
    B64.encode(h.finalize())
}

/// A draft split for storage: what the leaf shows, and what is sealed.
pub(crate) struct Sealed {
    /// `personal` map of the leaf: field → commitment.
    pub commitments: BTreeMap<String, String>,
    /// The envelope to store after the leaf (None: nothing personal).
    pub envelope: Option<Vec<u8>>,
    /// The principal id the leaf shows (anonymous claimed names hidden).
    pub leaf_principal_id: String,
}

/// The subject `who` of a draft; `None` for the system principal.
pub fn subject_of(kind: PrincipalKind, id: &str, source_ip: Option<&str>) -> Option<String> {
    match kind {
        PrincipalKind::System => None,
        PrincipalKind::User => Some(format!("user:{id}")),
        PrincipalKind::Token => Some(format!("token:{id}")),
        PrincipalKind::Anonymous if id != ANONYMOUS_ID && !id.is_empty() => {
            Some(format!("name:{id}"))
        }
        PrincipalKind::Anonymous => Some(format!("ip:{}", source_ip.unwrap_or("-"))),
    }
}

/// Whether a resource's `name` names a person (a user, a user's session,
/// or a user's membership of a project).
pub fn resource_name_is_personal(kind: &str) -> bool {
    matches!(kind, "user" | "membership" | "session")
}

/// The personal values a draft carries, each with the subject it belongs
/// to: the actor's fields belong to the actor; a user resource's name to
/// that user (`user:<id>`, or `name:<name>` before the user has an id).
/// Subjects are listed once each (at most two), values point at them.
struct Values<'a> {
    subjects: Vec<String>,
    /// (field, index into `subjects`, value).
    items: Vec<(&'static str, usize, &'a str)>,
}

fn values_of(d: &EventDraft) -> Values<'_> {
    let mut v = Values {
        subjects: Vec::new(),
        items: Vec::new(),
    };
    if let Some(who) = subject_of(d.principal.kind, &d.principal.id, d.source_ip.as_deref()) {
        v.subjects.push(who);
        if d.principal.kind == PrincipalKind::Anonymous
            && d.principal.id != ANONYMOUS_ID
            && !d.principal.id.is_empty()
        {
            v.items.push(("principal.id", 0, d.principal.id.as_str()));
        }
        if !d.principal.name.is_empty() {
            v.items
                .push(("principal.name", 0, d.principal.name.as_str()));
        }
        if let Some(ip) = &d.source_ip {
            v.items.push(("source_ip", 0, ip.as_str()));
        }
        if let Some(ua) = &d.user_agent {
            v.items.push(("user_agent", 0, ua.as_str()));
        }
    }
    if let Some(r) = &d.resource
        && resource_name_is_personal(&r.kind)
        && let Some(name) = &r.name
    {
        let who = match &r.id {
            Some(id) => format!("user:{id}"),
            None => format!("name:{name}"),
        };
        let at = match v.subjects.iter().position(|s| *s == who) {
            Some(i) => i,
            None => {
                v.subjects.push(who);
                v.subjects.len() - 1
            }
        };
        v.items.push(("resource.name", at, name.as_str()));
    }
    v
}

fn random<const N: usize>() -> Result<[u8; N], AuditError> {
    let mut b = [0u8; N];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut b)
        .map_err(|e| AuditError::Index(format!("OS randomness failed: {e}")))?;
    Ok(b)
}

/// One subject key.
#[derive(Clone, Copy)]
struct Key {
    id: [u8; KEY_ID_LEN],
    key: [u8; 32],
}

/// What became of a key id.
enum KeyState {
    Live([u8; 32]),
    Erased,
}

/// The subject keys (`subjects.sqlite`): made durable before the first
/// event sealed under them is written; deleted by erasure.
///
/// Subjects are stored as `hex(SHA-256(who))`. Readers take `state` (read
/// lock). A new key is created in memory (`state` write lock) and queued in
/// `new_keys`; the audit writer calls [`Keystore::flush_new_keys`] before it
/// writes a batch of events, which inserts every queued key in one SQLite
/// transaction (`synchronous=FULL`: one fsync for all of them) — so a key is
/// on disk before any envelope sealed under it, and new subjects cost one
/// fsync per batch instead of one each, serialized, on the caller's thread.
/// Flushing and erasing hold `conn` (serializing them), and drain
/// `new_keys` under it, so a second flusher waits for the first's commit.
/// Every key is kept in memory (about 100 bytes each).
pub struct Keystore {
    /// `None` for a read-only keystore whose file does not exist.
    conn: Option<Mutex<Connection>>,
    read_only: bool,
    state: RwLock<State>,
    /// Keys created since the last flush, not yet in `subjects.sqlite`.
    new_keys: Mutex<Vec<NewKey>>,
}

/// A key waiting for [`Keystore::flush_new_keys`].
struct NewKey {
    log: String,
    /// `who_key(who)`.
    who: String,
    key: Key,
    created_ns: i64,
}

#[derive(Default)]
struct State {
    /// Live key per `(log, who)`.
    active: HashMap<(String, String), Key>,
    /// Every key id ever issued.
    by_id: HashMap<[u8; KEY_ID_LEN], KeyState>,
    /// Cache of `active` by log and subject in clear: spares the SHA-256 of
    /// `who` and the key strings per sealed event. Memory only, filled on
    /// use; an erasure empties it (so no erased subject stays named here).
    by_subject: HashMap<String, HashMap<String, Key>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS subject_keys (
    key_id BLOB PRIMARY KEY,
    log TEXT NOT NULL,
    who TEXT NOT NULL,
    key BLOB,
    created_ns INTEGER NOT NULL,
    erased_ns INTEGER
);
CREATE INDEX IF NOT EXISTS subject_keys_who ON subject_keys(who, log);
";

/// What an erasure did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Erasure {
    /// Keys deleted (one per subject and log).
    pub keys: u64,
    /// Logs (`index::log_text`) where keys were deleted.
    pub logs: Vec<String>,
    /// Logs skipped because they are held.
    pub held: Vec<String>,
}

impl Keystore {
    /// Opens (creating) the keystore of a writable log.
    pub fn open(path: &Path) -> Result<Keystore, AuditError> {
        let db = |e: rusqlite::Error| AuditError::Keystore(format!("{}: {e}", path.display()));
        let conn = Connection::open(path).map_err(db)?;
        // FULL: a key must be on disk before an envelope sealed under it
        // is acknowledged. secure_delete: an erased key's bytes are
        // overwritten in the file, not left in a free page.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA secure_delete=ON;",
        )
        .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        let state = load(&conn).map_err(db)?;
        Ok(Keystore {
            conn: Some(Mutex::new(conn)),
            read_only: false,
            state: RwLock::new(state),
            new_keys: Mutex::new(Vec::new()),
        })
    }

    /// Opens the keystore for reading only; a missing file is an empty
    /// keystore (every envelope then reads as unavailable).
    pub fn open_read_only(path: &Path) -> Result<Keystore, AuditError> {
        if !path.exists() {
            return Ok(Keystore {
                conn: None,
                read_only: true,
                state: RwLock::new(State::default()),
                new_keys: Mutex::new(Vec::new()),
            });
        }
        let db = |e: rusqlite::Error| AuditError::Keystore(format!("{}: {e}", path.display()));
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(db)?;
        let state = load(&conn).map_err(db)?;
        Ok(Keystore {
            conn: Some(Mutex::new(conn)),
            read_only: true,
            state: RwLock::new(state),
            new_keys: Mutex::new(Vec::new()),
        })
    }

    fn live_key(&self, log: &str, who: &str, now_ns: i64) -> Result<Key, AuditError> {
        if let Some(key) = self
            .state
            .read()
            .map_err(poisoned)?
            .by_subject
            .get(log)
            .and_then(|m| m.get(who))
        {
            return Ok(*key);
        }
        let hashed = who_key(who);
        let k = (log.to_string(), hashed.clone());
        let remember = |st: &mut State, key: Key| {
            st.by_subject
                .entry(log.to_string())
                .or_default()
                .insert(who.to_string(), key);
        };
        // A miss in the cache happens once per subject (and after an
        // erasure): the rest is done under the write lock, so that an
        // erasure cannot come between finding a key and caching it.
        let mut st = self.state.write().map_err(poisoned)?;
        if let Some(key) = st.active.get(&k).copied() {
            remember(&mut st, key);
            return Ok(key);
        }
        if self.read_only || self.conn.is_none() {
            return Err(AuditError::ReadOnly);
        }
        let key = Key {
            id: random()?,
            key: random()?,
        };
        // Queued before anything is sealed under it: the writer flushes
        // it before writing the event (see the type's doc).
        self.new_keys.lock().map_err(poisoned)?.push(NewKey {
            log: log.to_string(),
            who: hashed,
            key,
            created_ns: now_ns,
        });
        st.by_id.insert(key.id, KeyState::Live(key.key));
        st.active.insert(k, key);
        remember(&mut st, key);
        Ok(key)
    }

    /// Makes every key created since the last call durable, in one
    /// transaction. The audit writer calls it before writing each batch.
    /// On failure the keys stay queued (the caller poisons the log).
    pub(crate) fn flush_new_keys(&self) -> Result<(), AuditError> {
        if self.new_keys.lock().map_err(poisoned)?.is_empty() {
            return Ok(());
        }
        let Some(conn) = &self.conn else {
            return Err(AuditError::ReadOnly);
        };
        let mut conn = conn.lock().map_err(poisoned)?;
        flush_locked(&mut conn, &self.new_keys)
    }

    /// Splits a draft's personal values out of the leaf: commitments for
    /// the leaf; the values and salts sealed under each subject's key, one
    /// envelope per subject.
    pub(crate) fn seal(
        &self,
        log: &str,
        d: &EventDraft,
        now_ns: i64,
    ) -> Result<Sealed, AuditError> {
        let values = values_of(d);
        let leaf_principal_id = if values.items.iter().any(|(f, _, _)| *f == "principal.id") {
            ANONYMOUS_ID.to_string()
        } else {
            d.principal.id.clone()
        };
        if values.items.is_empty() {
            return Ok(Sealed {
                commitments: BTreeMap::new(),
                envelope: None,
                leaf_principal_id,
            });
        }
        let mut commitments = BTreeMap::new();
        // (field, subject, value, base64 salt), sorted by subject, then
        // field: one envelope per subject, its fields in key order.
        let mut salted: Vec<(&'static str, usize, &str, [u8; 24])> =
            Vec::with_capacity(values.items.len());
        for &(field, who, value) in &values.items {
            // Thread-local CSPRNG, not a syscall per salt (see `rng`).
            let salt: [u8; SALT_LEN] = crate::rng::bytes();
            commitments.insert(field.to_string(), commitment(&salt, value));
            let mut b64 = [0u8; 24];
            let n = B64
                .encode_slice(salt, &mut b64)
                .expect("bug: 16 bytes are 24 base64 characters");
            debug_assert_eq!(n, 24);
            salted.push((field, who, value, b64));
        }
        salted.sort_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)));
        // Each envelope: `u16 len ‖ 0x01 ‖ key id ‖ nonce ‖ ciphertext ‖
        // tag`, whose plaintext is `{"<field>": {"salt": "<base64>",
        // "value": "<value>"}, ...}` (keys sorted; what `open_envelope`
        // reads), written and encrypted in place in `out`.
        let mut out = Vec::with_capacity(256);
        let mut rest = &salted[..];
        while let Some(&(_, who, _, _)) = rest.first() {
            let n = rest.iter().take_while(|v| v.1 == who).count();
            let (mine, later) = rest.split_at(n);
            rest = later;
            let key = self.live_key(log, &values.subjects[who], now_ns)?;
            let nonce: [u8; NONCE_LEN] = crate::rng::bytes();
            let at = out.len();
            out.extend_from_slice(&[0, 0, ENVELOPE_V1]);
            out.extend_from_slice(&key.id);
            out.extend_from_slice(&nonce);
            let plain_at = out.len();
            out.push(b'{');
            for (i, (field, _, value, salt)) in mine.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                crate::canonical::write_str(&mut out, field);
                out.extend_from_slice(b":{\"salt\":\"");
                out.extend_from_slice(salt);
                out.extend_from_slice(b"\",\"value\":");
                crate::canonical::write_str(&mut out, value);
                out.push(b'}');
            }
            out.push(b'}');
            let cipher = XChaCha20Poly1305::new((&key.key).into());
            let tag = cipher
                .encrypt_in_place_detached(
                    XNonce::from_slice(&nonce),
                    &key.id,
                    &mut out[plain_at..],
                )
                .map_err(|_| AuditError::Keystore("sealing personal values failed".into()))?;
            out.extend_from_slice(&tag);
            let len16 = u16::try_from(out.len() - at - 2)
                .map_err(|_| AuditError::Keystore("personal values too large to seal".into()))?;
            out[at..at + 2].copy_from_slice(&len16.to_le_bytes());
        }
        Ok(Sealed {
            commitments,
            envelope: Some(out),
            leaf_principal_id,
        })
    }

    /// Opens every envelope of a record's sealed part (`u16 len ‖
    /// envelope`, repeated): field → its salt and value, or why not
    /// ([`ERASED`] or [`UNAVAILABLE`]).
    pub fn open_all(
        &self,
        sealed: &[u8],
    ) -> BTreeMap<String, Result<(Vec<u8>, String), &'static str>> {
        let mut out = BTreeMap::new();
        let mut rest = sealed;
        while let Some(len) = rest.get(..2) {
            let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
            let Some(env) = rest.get(2..2 + len) else {
                break;
            };
            rest = &rest[2 + len..];
            match self.open_envelope(env) {
                Ok(m) => {
                    for (f, v) in m {
                        out.insert(f, Ok(v));
                    }
                }
                Err(why) => {
                    // Which fields it held is sealed too: the caller marks
                    // every committed field it cannot find.
                    out.insert(format!("\u{0}{}", out.len()), Err(why));
                }
            }
        }
        out
    }

    /// Opens an envelope: field → (salt, value); `Err` says why not
    /// ([`ERASED`] or [`UNAVAILABLE`]).
    pub fn open_envelope(
        &self,
        env: &[u8],
    ) -> Result<BTreeMap<String, (Vec<u8>, String)>, &'static str> {
        let (Some(&ENVELOPE_V1), Some(id), Some(nonce), Some(ct)) = (
            env.first(),
            env.get(1..1 + KEY_ID_LEN),
            env.get(1 + KEY_ID_LEN..1 + KEY_ID_LEN + NONCE_LEN),
            env.get(1 + KEY_ID_LEN + NONCE_LEN..),
        ) else {
            return Err(UNAVAILABLE);
        };
        let Ok(id) = <[u8; KEY_ID_LEN]>::try_from(id) else {
            return Err(UNAVAILABLE);
        };
        let key = match self.state.read().ok().and_then(|s| match s.by_id.get(&id) {
            Some(KeyState::Live(k)) => Some(Ok(*k)),
            Some(KeyState::Erased) => Some(Err(ERASED)),
            None => None,
        }) {
            Some(Ok(k)) => k,
            Some(Err(e)) => return Err(e),
            None => return Err(UNAVAILABLE),
        };
        let cipher = XChaCha20Poly1305::new((&key).into());
        let plain = cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &id })
            .map_err(|_| UNAVAILABLE)?;
        let map: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(&plain).map_err(|_| UNAVAILABLE)?;
        let mut out = BTreeMap::new();
        for (field, v) in map {
            let (Some(salt), Some(value)) = (
                v["salt"].as_str().and_then(|s| B64.decode(s).ok()),
                v["value"].as_str(),
            ) else {
                return Err(UNAVAILABLE);
            };
            out.insert(field, (salt, value.to_string()));
        }
        Ok(out)
    }

    /// Puts the personal values back into an event parsed from its leaf:
    /// each field listed in `personal` gets its value, or [`ERASED`] /
    /// [`UNAVAILABLE`]. A revealed value whose commitment does not match
    /// the leaf is never shown ([`UNAVAILABLE`]).
    pub fn reveal(&self, e: &mut Event, sealed: Option<&[u8]>) {
        if e.personal.is_empty() {
            return;
        }
        let opened = sealed.map(|s| self.open_all(s)).unwrap_or_default();
        // A field not found: erased if some envelope was erased, else unavailable.
        let missing = if opened.values().any(|v| *v == Err(ERASED)) {
            ERASED
        } else {
            UNAVAILABLE
        };
        let fields: Vec<String> = e.personal.keys().cloned().collect();
        for field in fields {
            let value = match opened.get(&field) {
                Some(Ok((salt, v))) if commitment(salt, v) == e.personal[&field] => v.clone(),
                Some(Ok(_)) => UNAVAILABLE.to_string(),
                _ => missing.to_string(),
            };
            match field.as_str() {
                "principal.id" => e.principal.id = value,
                "principal.name" => e.principal.name = value,
                "source_ip" => e.source_ip = Some(value),
                "user_agent" => e.user_agent = Some(value),
                "resource.name" => {
                    if let Some(r) = e.resource.as_mut() {
                        r.name = Some(value);
                    }
                }
                _ => {}
            }
        }
    }

    /// Deletes the keys of `who` (any of the subject strings) in every log
    /// but the `held` ones. The key bytes are overwritten in the file and
    /// the `who` string is cleared, so that nothing of the person remains.
    pub fn erase(
        &self,
        who: &[String],
        held: &[String],
        now_ns: i64,
    ) -> Result<Erasure, AuditError> {
        let Some(conn) = &self.conn else {
            return Err(AuditError::ReadOnly);
        };
        if self.read_only {
            return Err(AuditError::ReadOnly);
        }
        let db = |e: rusqlite::Error| AuditError::Keystore(format!("erasing subject keys: {e}"));
        let mut conn = conn.lock().map_err(poisoned)?;
        // Keys still queued are written first, so that they are found (and
        // erased) like every other.
        flush_locked(&mut conn, &self.new_keys)?;
        let tx = conn.transaction().map_err(db)?;
        let mut out = Erasure::default();
        let mut erased_ids = Vec::new();
        let who: Vec<String> = who.iter().map(|w| who_key(w)).collect();
        {
            let mut find = tx
                .prepare("SELECT key_id, log FROM subject_keys WHERE who = ?1 AND key IS NOT NULL")
                .map_err(db)?;
            for w in &who {
                let rows = find
                    .query_map([w], |r| {
                        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
                    })
                    .map_err(db)?;
                for row in rows {
                    let (id, log) = row.map_err(db)?;
                    if held.contains(&log) {
                        if !out.held.contains(&log) {
                            out.held.push(log);
                        }
                        continue;
                    }
                    erased_ids.push(id);
                    if !out.logs.contains(&log) {
                        out.logs.push(log);
                    }
                }
            }
        }
        for id in &erased_ids {
            tx.execute(
                "UPDATE subject_keys SET key = NULL, who = '', erased_ns = ?2 WHERE key_id = ?1",
                params![id, now_ns],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        // Move the change out of the WAL and truncate it, so the old page
        // images holding the keys do not linger there.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .optional()
            .map_err(db)?;
        let mut st = self.state.write().map_err(poisoned)?;
        for id in &erased_ids {
            if let Ok(id) = <[u8; KEY_ID_LEN]>::try_from(id.as_slice()) {
                st.by_id.insert(id, KeyState::Erased);
            }
        }
        st.active
            .retain(|(log, w), _| !who.contains(w) || held.contains(log));
        st.by_subject.clear();
        out.keys = erased_ids.len() as u64;
        out.logs.sort();
        out.held.sort();
        Ok(out)
    }
}

/// Inserts the queued keys in one transaction, `conn` held. The queue's
/// own lock is held only to take the keys (not across the fsync: creating
/// a key holds `state` while it queues one); on failure they are put back.
fn flush_locked(conn: &mut Connection, queue: &Mutex<Vec<NewKey>>) -> Result<(), AuditError> {
    let keys = std::mem::take(&mut *queue.lock().map_err(poisoned)?);
    if keys.is_empty() {
        return Ok(());
    }
    let db = |e: rusqlite::Error| AuditError::Keystore(format!("storing new subject keys: {e}"));
    let insert_all = |conn: &mut Connection| -> Result<(), AuditError> {
        let tx = conn.transaction().map_err(db)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO subject_keys (key_id, log, who, key, created_ns) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db)?;
            for k in &keys {
                insert
                    .execute(params![
                        &k.key.id[..],
                        k.log,
                        k.who,
                        &k.key.key[..],
                        k.created_ns
                    ])
                    .map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    };
    let r = insert_all(conn);
    if r.is_err() {
        queue.lock().map_err(poisoned)?.splice(0..0, keys);
    }
    r
}

/// How the keystore names a subject: `hex(SHA-256(who))`, so that the file
/// holds no user name or address in clear.
fn who_key(who: &str) -> String {
    hex::encode(Sha256::digest(who.as_bytes()))
}

fn poisoned<T>(_: T) -> AuditError {
    AuditError::Keystore("keystore lock poisoned by a panic".into())
}

fn load(conn: &Connection) -> Result<State, rusqlite::Error> {
    let mut st = State::default();
    let mut stmt =
        conn.prepare("SELECT key_id, log, who, key FROM subject_keys ORDER BY created_ns")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<Vec<u8>>>(3)?,
        ))
    })?;
    for row in rows {
        let (id, log, who, key) = row?;
        let Ok(id) = <[u8; KEY_ID_LEN]>::try_from(id.as_slice()) else {
            continue;
        };
        match key.and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok()) {
            Some(key) => {
                st.by_id.insert(id, KeyState::Live(key));
                st.active.insert((log, who), Key { id, key });
            }
            None => {
                st.by_id.insert(id, KeyState::Erased);
            }
        }
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AuthMethod, Outcome, Principal, Status};

    fn draft(ip: &str) -> EventDraft {
        let mut d = EventDraft::system("acme", Some("p1"), "iam.token.create");
        d.principal = Principal {
            kind: PrincipalKind::User,
            id: "u1".into(),
            name: "alice@example.com".into(),
            token_id: None,
            auth_method: Some(AuthMethod::Session),
        };
        d.source_ip = Some(ip.into());
        d.result = Outcome {
            status: Status::Success,
            http_status: Some(201),
            error_code: None,
            error_message: None,
        };
        d
    }

    /// The event as parsed from its leaf: commitments, no values.
    fn leaf_event(d: &EventDraft, s: &Sealed) -> Event {
        let mut e = Event::from_draft(d.clone(), "id".into(), 1, 0, "t".into());
        e.personal = s.commitments.clone();
        e.principal.name.clear();
        e.source_ip = None;
        e
    }

    #[test]
    fn only_values_matching_the_leaf_commitments_are_revealed() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::open(&dir.path().join("subjects.sqlite")).unwrap();
        let (d1, d2) = (draft("192.0.2.1"), draft("192.0.2.2"));
        let s1 = ks.seal("p:p1", &d1, 0).unwrap();
        let s2 = ks.seal("p:p1", &d2, 0).unwrap();

        let mut e = leaf_event(&d1, &s1);
        ks.reveal(&mut e, s1.envelope.as_deref());
        assert_eq!(e.source_ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(e.principal.name, "alice@example.com");

        // The same person's envelope of another event opens with the same
        // key, but its values do not match this leaf: never shown.
        let mut e = leaf_event(&d1, &s1);
        ks.reveal(&mut e, s2.envelope.as_deref());
        assert_eq!(e.source_ip.as_deref(), Some(UNAVAILABLE));
        assert_eq!(e.principal.name, UNAVAILABLE);

        // No envelope at all.
        let mut e = leaf_event(&d1, &s1);
        ks.reveal(&mut e, None);
        assert_eq!(e.source_ip.as_deref(), Some(UNAVAILABLE));
    }

    /// The envelopes written in place are what the map-and-serde_json
    /// encoding wrote before: one per subject, in the subject's fields in
    /// key order, each opening to its salt and value (escapes included),
    /// with salts matching the leaf's commitments.
    #[test]
    fn envelopes_hold_each_subjects_values_as_sorted_json() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::open(&dir.path().join("subjects.sqlite")).unwrap();
        let mut d = draft("192.0.2.1");
        d.user_agent = Some("curl/8 \"quoted\" \\ \u{1}\u{7f} é".into());
        d.resource = Some(crate::Resource {
            kind: "user".into(),
            id: Some("u2".into()),
            name: Some("bob@example.com".into()),
        });
        let s = ks.seal("p:p1", &d, 0).unwrap();
        let env = s.envelope.as_deref().unwrap();
        let mut plains = Vec::new();
        let mut rest = env;
        while rest.len() >= 2 {
            let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
            let e = &rest[2..2 + len];
            rest = &rest[2 + len..];
            let id: [u8; KEY_ID_LEN] = e[1..1 + KEY_ID_LEN].try_into().unwrap();
            let key = match ks.state.read().unwrap().by_id.get(&id) {
                Some(KeyState::Live(k)) => *k,
                _ => panic!("no live key for an envelope"),
            };
            let nonce = &e[1 + KEY_ID_LEN..1 + KEY_ID_LEN + NONCE_LEN];
            let plain = XChaCha20Poly1305::new((&key).into())
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: &e[1 + KEY_ID_LEN + NONCE_LEN..],
                        aad: &id,
                    },
                )
                .unwrap();
            // Byte for byte the serde_json form of the sorted map.
            let parsed: BTreeMap<String, BTreeMap<String, String>> =
                serde_json::from_slice(&plain).unwrap();
            assert_eq!(serde_json::to_vec(&parsed).unwrap(), plain);
            plains.push(parsed);
        }
        assert!(rest.is_empty());
        assert_eq!(plains.len(), 2, "one envelope per subject");
        let fields: Vec<Vec<&str>> = plains
            .iter()
            .map(|m| m.keys().map(String::as_str).collect())
            .collect();
        assert_eq!(
            fields,
            [
                vec!["principal.name", "source_ip", "user_agent"],
                vec!["resource.name"]
            ]
        );
        let opened = ks.open_all(env);
        for (field, value) in [
            ("principal.name", "alice@example.com"),
            ("source_ip", "192.0.2.1"),
            ("user_agent", d.user_agent.as_deref().unwrap()),
            ("resource.name", "bob@example.com"),
        ] {
            let (salt, v) = opened[field].clone().unwrap();
            assert_eq!(v, value, "{field}");
            assert_eq!(commitment(&salt, &v), s.commitments[field], "{field}");
        }
        assert_eq!(s.commitments.len(), 4);
    }
}
