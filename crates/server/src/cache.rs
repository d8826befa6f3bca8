//! The verified-credential cache: what every API request would otherwise
//! read from SQLite on a blocking thread — the token behind a secret, and
//! "may this caller use this scope in that project" — kept in memory.
//!
//! # Why it cannot serve stale permissions
//!
//! Every entry is tagged with [`meta::Meta::generation`] as loaded *before*
//! the read that produced it, and is used only while the generation is
//! unchanged. Every committed metadata change (a revocation, a new
//! membership, a token's first use, an expiry being recorded…) bumps the
//! generation before its API call answers, so after that answer no request
//! is decided from an entry older than the change. Time-based rules are not
//! cached: a token's expiry is checked against the clock on every request
//! (the cached row carries `expires_at`). Only positive facts are kept (a
//! found token, a granted scope): unknown tokens and denials are read and
//! audited each time, and cannot fill the cache.
//!
//! Bounded: a map that reaches [`MAX_ENTRIES`] is emptied (simple, and
//! always correct: a miss only costs a read). A std mutex, not tokio's:
//! it is held for a map lookup, never across an `.await`.

use std::collections::HashMap;
use std::sync::Mutex;

/// Largest number of entries in each map before it is emptied.
pub const MAX_ENTRIES: usize = 4096;

struct Tagged<T> {
    generation: u64,
    value: T,
}

/// Who may do what, as the key of a granted project access.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct AccessKey {
    /// `t:<token id>` or `u:<user id>`.
    pub caller: String,
    pub project: String,
    pub scope: meta::Scope,
}

/// See the module documentation.
#[derive(Default)]
pub struct MetaCache {
    /// SHA-256 (hex) of a token secret → the token row.
    tokens: Mutex<HashMap<String, Tagged<meta::Token>>>,
    /// A granted `project_access` → the project.
    access: Mutex<HashMap<AccessKey, Tagged<meta::Project>>>,
}

fn get<K, V>(map: &Mutex<HashMap<K, Tagged<V>>>, key: &K, generation: u64) -> Option<V>
where
    K: std::hash::Hash + Eq,
    V: Clone,
{
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    match m.get(key) {
        Some(t) if t.generation == generation => Some(t.value.clone()),
        Some(_) => {
            m.remove(key);
            None
        }
        None => None,
    }
}

fn put<K, V>(map: &Mutex<HashMap<K, Tagged<V>>>, key: K, generation: u64, value: V)
where
    K: std::hash::Hash + Eq,
{
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    if m.len() >= MAX_ENTRIES {
        m.clear();
    }
    m.insert(key, Tagged { generation, value });
}

impl MetaCache {
    /// The token whose secret hashes to `secret_hash`, if cached at `generation`.
    pub fn token(&self, secret_hash: &str, generation: u64) -> Option<meta::Token> {
        get(&self.tokens, &secret_hash.to_string(), generation)
    }

    /// Remembers a token read after loading `generation`.
    pub fn put_token(&self, secret_hash: String, generation: u64, token: meta::Token) {
        put(&self.tokens, secret_hash, generation, token);
    }

    pub(crate) fn access(&self, key: &AccessKey, generation: u64) -> Option<meta::Project> {
        get(&self.access, key, generation)
    }

    pub(crate) fn put_access(&self, key: AccessKey, generation: u64, project: meta::Project) {
        put(&self.access, key, generation, project);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: &str) -> meta::Token {
        meta::Token {
            id: id.into(),
            project_id: "p1".into(),
            project: "default".into(),
            name: "t".into(),
            scopes: vec![meta::Scope::AuditWrite],
            org_admin: false,
            created_at: 0,
            created_by: "test".into(),
            expires_at: None,
            revoked_at: None,
            first_used_at: None,
        }
    }

    #[test]
    fn an_entry_serves_only_its_generation() {
        let c = MetaCache::default();
        c.put_token("h1".into(), 7, token("a"));
        assert_eq!(c.token("h1", 7).map(|t| t.id), Some("a".into()));
        assert!(c.token("h1", 8).is_none());
        // A stale entry is gone, even for its old generation.
        assert!(c.token("h1", 7).is_none());
        assert!(c.token("h2", 7).is_none());
    }

    #[test]
    fn a_full_map_is_emptied() {
        let c = MetaCache::default();
        for i in 0..MAX_ENTRIES {
            c.put_token(format!("h{i}"), 1, token("a"));
        }
        assert!(c.token("h0", 1).is_some());
        c.put_token("new".into(), 1, token("b"));
        assert!(c.token("h0", 1).is_none());
        assert!(c.token("new", 1).is_some());
    }
}
