//! Memo tables keyed by label-set identity, so that work that depends only on a series'
//! labels (its aggregation group, its matching signature, its output label set) is done
//! once per series and query instead of once per series and step.
//!
//! Every intermediate sample carries its labels as an `Arc<Labels>` shared by all steps of
//! its series, so the `Arc`'s address names the series cheaply. A table keeps a clone of
//! each `Arc` it has seen, which keeps the address from being reused by another label set
//! while the table lives: a hit is always the same labels.

use model::Labels;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// Hashes one address: a 128-bit multiply folded to 64 bits, so that the always-zero low
/// bits of an aligned pointer still spread over the table.
#[derive(Default)]
pub(crate) struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        let p = (self.0 as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        (p as u64) ^ ((p >> 64) as u64)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = self.0.rotate_left(29) ^ n as u64;
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(29) ^ n;
    }
}

/// A hash map keyed by addresses (or tuples of them).
pub(crate) type AddrHashMap<K, V> = HashMap<K, V, BuildHasherDefault<AddrHasher>>;

type AddrMap<V> = AddrHashMap<usize, (Arc<Labels>, V)>;

/// A value computed once per label set (by `Arc` identity).
///
/// Steps of one sub-expression usually list the same series in the same order, so
/// [`ByLabels::get_at`] first checks what was at the same position in the previous round
/// (one address comparison) before it hashes. Every address remembered there is also a key
/// of the map, which keeps its `Arc` alive: an equal address is the same label set.
pub(crate) struct ByLabels<V> {
    map: AddrMap<V>,
    prev: Vec<(usize, V)>,
    cur: Vec<(usize, V)>,
}

impl<V> Default for ByLabels<V> {
    fn default() -> Self {
        ByLabels {
            map: HashMap::default(),
            prev: Vec::new(),
            cur: Vec::new(),
        }
    }
}

impl<V: Copy> ByLabels<V> {
    /// Starts a new round (step) for [`ByLabels::get_at`].
    pub fn next_round(&mut self) {
        std::mem::swap(&mut self.prev, &mut self.cur);
        self.cur.clear();
    }

    /// How many label sets this round has seen (the next `pos`).
    pub fn round_len(&self) -> usize {
        self.cur.len()
    }

    /// The value for `m`, the `pos`-th label set of this round; call with `pos` = 0, 1, 2…
    pub fn get_at(&mut self, pos: usize, m: &Arc<Labels>, f: impl FnOnce(&Labels) -> V) -> V {
        let key = Arc::as_ptr(m) as usize;
        let v = match self.prev.get(pos) {
            Some(&(k, v)) if k == key => v,
            _ => *self.get_or_insert_with(m, f),
        };
        debug_assert_eq!(self.cur.len(), pos);
        self.cur.push((key, v));
        v
    }
}

impl<V> ByLabels<V> {
    /// The value for `m`, computing it with `f` the first time this label set is seen.
    pub fn get_or_insert_with(&mut self, m: &Arc<Labels>, f: impl FnOnce(&Labels) -> V) -> &V {
        let key = Arc::as_ptr(m) as usize;
        &self.map.entry(key).or_insert_with(|| (m.clone(), f(m))).1
    }
}

/// Interns values (label sets, signatures) into dense ids, so that per-step bookkeeping can
/// use plain vectors instead of hash maps.
pub(crate) struct Interner<K> {
    ids: HashMap<K, u32>,
    keys: Vec<K>,
}

impl<K> Default for Interner<K> {
    fn default() -> Self {
        Interner {
            ids: HashMap::new(),
            keys: Vec::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Interner<K> {
    pub fn intern(&mut self, k: K) -> u32 {
        if let Some(&id) = self.ids.get(&k) {
            return id;
        }
        let id = self.keys.len() as u32;
        self.keys.push(k.clone());
        self.ids.insert(k, id);
        id
    }

    pub fn get(&self, id: u32) -> &K {
        &self.keys[id as usize]
    }
}

/// Marks dense ids as seen in the current round (one round per step) without clearing a
/// vector each round: a slot is "seen" when it holds the current round number.
#[derive(Default)]
pub(crate) struct Stamps {
    round: u32,
    slots: Vec<(u32, u32)>,
}

impl Stamps {
    /// Starts a new round: every id is unseen again.
    pub fn next_round(&mut self) {
        self.round += 1;
    }

    /// The payload stored for `id` in this round, if any.
    pub fn get(&self, id: u32) -> Option<u32> {
        match self.slots.get(id as usize) {
            Some(&(r, v)) if r == self.round => Some(v),
            _ => None,
        }
    }

    /// Stores `v` for `id` in this round; returns the earlier payload of this round, if any.
    pub fn set(&mut self, id: u32, v: u32) -> Option<u32> {
        let i = id as usize;
        if self.slots.len() <= i {
            self.slots.resize(i + 1, (0, 0));
        }
        let prev = self.get(id);
        self.slots[i] = (self.round, v);
        prev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_arc_hits_and_equal_labels_in_another_arc_do_not() {
        let a = Arc::new(Labels::from_pairs([("a", "1")]));
        let b = Arc::new(Labels::from_pairs([("a", "1")]));
        let mut m: ByLabels<u32> = ByLabels::default();
        let mut calls = 0;
        for (x, want) in [(&a, 1), (&a, 1), (&b, 2), (&a, 1)] {
            let v = *m.get_or_insert_with(x, |_| {
                calls += 1;
                calls
            });
            assert_eq!(v, want);
        }
        assert_eq!(calls, 2);
    }

    #[test]
    fn positional_hits_agree_with_the_map() {
        let a = Arc::new(Labels::from_pairs([("a", "1")]));
        let b = Arc::new(Labels::from_pairs([("b", "1")]));
        let mut m: ByLabels<u32> = ByLabels::default();
        let mut calls = 0;
        let mut f = |l: &Labels| {
            calls += 1;
            l.get("a").map_or(2, |_| 1)
        };
        for round in [[&a, &b], [&a, &b], [&b, &a]] {
            m.next_round();
            let got: Vec<u32> = round
                .iter()
                .enumerate()
                .map(|(i, x)| m.get_at(i, x, &mut f))
                .collect();
            let want: Vec<u32> = round
                .iter()
                .map(|x| if Arc::ptr_eq(x, &a) { 1 } else { 2 })
                .collect();
            assert_eq!(got, want);
        }
        assert_eq!(calls, 2);
    }

    #[test]
    fn stamps_forget_at_each_round() {
        let mut s = Stamps::default();
        s.next_round();
        assert_eq!(s.set(3, 7), None);
        assert_eq!(s.set(3, 8), Some(7));
        assert_eq!(s.get(0), None);
        s.next_round();
        assert_eq!(s.get(3), None);
        assert_eq!(s.set(3, 1), None);
    }

    #[test]
    fn interner_gives_dense_stable_ids() {
        let mut i: Interner<String> = Interner::default();
        assert_eq!(i.intern("x".into()), 0);
        assert_eq!(i.intern("y".into()), 1);
        assert_eq!(i.intern("x".into()), 0);
        assert_eq!(i.get(1), "y");
        assert_eq!(i.get(0), "x");
    }
}
