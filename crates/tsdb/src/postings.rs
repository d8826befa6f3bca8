//! Resolving label matchers against a postings index (the head's and a
//! block's share this code through [`Index`]).
//!
//! Prometheus' semantics: an absent label matches as `""`. A matcher that
//! does not match the empty string selects the union of the postings of
//! the values it matches; one that does (`{a=""}`, `{a!="x"}`,
//! `{a=~"x|"}`) removes the series that carry a value it does *not* match.
//! A query made only of the latter starts from every series.

use model::{MatchOp, Matcher};
use std::collections::HashMap;

/// A postings index: series ids (sorted, unique) per label name and value.
pub(crate) trait Index {
    /// Every series id, sorted.
    fn all(&self) -> Vec<u32>;
    /// The postings of `name="value"` (empty if absent).
    fn exact(&self, name: &str, value: &str) -> Vec<u32>;
    /// The union of the postings of every value of `name` for which `pred`
    /// holds, sorted and unique.
    fn union_where(&self, name: &str, pred: &dyn Fn(&str) -> bool) -> Vec<u32>;
    /// How many ids the postings of the values of `name` for which `pred` holds hold in
    /// all (repeats across values counted), read from the lists' lengths.
    fn postings_len_where(&self, name: &str, pred: &dyn Fn(&str) -> bool) -> usize;
    /// The symbol id of series `id`'s value of `name`, `None` when it has none.
    fn value_id(&self, id: u32, name: &str) -> Option<u32>;
    /// The text of a symbol id [`Index::value_id`] returned.
    fn symbol(&self, sym: u32) -> &str;
}

/// When a further matcher is checked on each candidate's own value instead of through the
/// postings of every value it matches (a regex over a label with many values, or
/// `{mode!="idle"}`, unions thousands of ids).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Check {
    /// When the candidates are few, or cost less than the postings: a candidate's check
    /// (a walk over its labels) costs about [`CHECK_COST`] ids of a union.
    ByCost,
    #[cfg(test)]
    Never,
    #[cfg(test)]
    Always,
}

/// A candidate's check against one id merged into a union, roughly.
const CHECK_COST: usize = 8;
/// Candidates checked whatever the postings hold.
const CHECK_ALWAYS_UP_TO: usize = 64;

/// Series ids matching all `matchers`, sorted.
pub(crate) fn resolve(ix: &impl Index, matchers: &[Matcher]) -> Vec<u32> {
    resolve_with(ix, matchers, Check::ByCost)
}

/// [`resolve`], with the given rule for checking candidates one by one.
fn resolve_with(ix: &impl Index, matchers: &[Matcher], rule: Check) -> Vec<u32> {
    let mut pos: Option<Vec<u32>> = None;
    let mut neg: Vec<Vec<u32>> = Vec::new();
    // Exact matchers first (one postings list each, usually the smallest), so an empty
    // intersection stops before any regex is run over a label's values.
    let mut order: Vec<&Matcher> = matchers.iter().collect();
    order.sort_by_key(|m| m.op != MatchOp::Equal);
    for m in order {
        let check = |p: &[u32]| match rule {
            Check::ByCost => {
                m.op != MatchOp::Equal
                    && (p.len() <= CHECK_ALWAYS_UP_TO || {
                        let union = if m.matches_empty() {
                            ix.postings_len_where(&m.name, &|v| !m.matches(v))
                        } else {
                            ix.postings_len_where(&m.name, &|v| m.matches(v))
                        };
                        p.len().saturating_mul(CHECK_COST) <= union
                    })
            }
            #[cfg(test)]
            Check::Never => false,
            #[cfg(test)]
            Check::Always => true,
        };
        if let Some(p) = &pos
            && check(p)
        {
            // A label has few distinct values among the candidates: each is matched once.
            let mut seen: HashMap<Option<u32>, bool> = HashMap::new();
            let keep: Vec<u32> = p
                .iter()
                .copied()
                .filter(|&id| {
                    let v = ix.value_id(id, &m.name);
                    *seen
                        .entry(v)
                        .or_insert_with(|| m.matches(v.map_or("", |v| ix.symbol(v))))
                })
                .collect();
            if keep.is_empty() {
                return keep;
            }
            pos = Some(keep);
            continue;
        }
        if !m.matches_empty() {
            let list = if m.op == MatchOp::Equal {
                ix.exact(&m.name, &m.value)
            } else if let Some(set) = m.set_matches() {
                let lists: Vec<Vec<u32>> = set.iter().map(|v| ix.exact(&m.name, v)).collect();
                union_all(lists)
            } else {
                ix.union_where(&m.name, &|v| m.matches(v))
            };
            pos = Some(match pos {
                None => list,
                Some(p) => intersect(&p, &list),
            });
            if pos.as_ref().is_some_and(|p| p.is_empty()) {
                return Vec::new();
            }
        } else {
            neg.push(ix.union_where(&m.name, &|v| !m.matches(v)));
        }
    }
    let mut base = pos.unwrap_or_else(|| ix.all());
    for n in neg {
        base = subtract(&base, &n);
    }
    base
}

pub(crate) fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

pub(crate) fn subtract(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut j, mut out) = (0, Vec::with_capacity(a.len()));
    for &x in a {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        if j >= b.len() || b[j] != x {
            out.push(x);
        }
    }
    out
}

/// Union of sorted lists (each without repeats), merged two by two: O(n log k) for k
/// lists of n ids in all, in sequential passes (a regex over a label with many values
/// unions many lists; sorting their concatenation was a tenth of a small query).
pub(crate) fn union_all(mut lists: Vec<Vec<u32>>) -> Vec<u32> {
    while lists.len() > 1 {
        let mut next = Vec::with_capacity(lists.len().div_ceil(2));
        let mut it = lists.into_iter();
        while let Some(a) = it.next() {
            next.push(match it.next() {
                Some(b) => union2(&a, &b),
                None => a,
            });
        }
        lists = next;
    }
    lists.pop().unwrap_or_default()
}

/// Union of two sorted lists without repeats.
fn union2(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j, mut out) = (0, 0, Vec::with_capacity(a.len() + b.len()));
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Every label value the naive index holds, as its symbol table.
    const SYMS: &[&str] = &["a", "b", "1", "up", "down"];

    /// A naive index: series as label maps.
    struct Naive(Vec<BTreeMap<&'static str, &'static str>>);

    impl Index for Naive {
        fn all(&self) -> Vec<u32> {
            (0..self.0.len() as u32).collect()
        }
        fn exact(&self, name: &str, value: &str) -> Vec<u32> {
            self.union_where(name, &|v| v == value)
        }
        fn union_where(&self, name: &str, pred: &dyn Fn(&str) -> bool) -> Vec<u32> {
            (0..self.0.len() as u32)
                .filter(|i| self.0[*i as usize].get(name).is_some_and(|v| pred(v)))
                .collect()
        }
        fn postings_len_where(&self, name: &str, pred: &dyn Fn(&str) -> bool) -> usize {
            self.union_where(name, pred).len()
        }
        fn value_id(&self, id: u32, name: &str) -> Option<u32> {
            let v = self.0[id as usize].get(name)?;
            SYMS.iter().position(|s| s == v).map(|i| i as u32)
        }
        fn symbol(&self, sym: u32) -> &str {
            SYMS[sym as usize]
        }
    }

    fn check(ms: &[(&str, MatchOp, &str)], want: &[u32]) {
        let ix = Naive(vec![
            BTreeMap::from([("__name__", "up"), ("job", "a")]),
            BTreeMap::from([("__name__", "up"), ("job", "b"), ("x", "1")]),
            BTreeMap::from([("__name__", "down")]),
        ]);
        let ms: Vec<Matcher> = ms
            .iter()
            .map(|(n, op, v)| Matcher::new(*op, *n, *v).unwrap())
            .collect();
        // Also against the definition: every matcher on every series.
        let brute: Vec<u32> = (0..3u32)
            .filter(|i| {
                ms.iter()
                    .all(|m| m.matches(ix.0[*i as usize].get(m.name.as_str()).unwrap_or(&"")))
            })
            .collect();
        assert_eq!(resolve(&ix, &ms), want);
        // The same through postings only, and through candidate checks as early as can be.
        assert_eq!(resolve_with(&ix, &ms, Check::Never), want);
        assert_eq!(resolve_with(&ix, &ms, Check::Always), want);
        assert_eq!(brute, want);
    }

    /// The pairwise merge gives the sorted, repeat-free union, for any number of lists.
    #[test]
    fn union_all_is_the_sorted_union() {
        let mut rng = model::XorShift64::new(0x2545_f491_4f6c_dd1d);
        let mut rnd = move || rng.next_u64();
        for k in 0..9 {
            let lists: Vec<Vec<u32>> = (0..k)
                .map(|_| {
                    let mut l: Vec<u32> = (0..rnd() % 50).map(|_| (rnd() % 200) as u32).collect();
                    l.sort_unstable();
                    l.dedup();
                    l
                })
                .collect();
            let mut want: Vec<u32> = lists.concat();
            want.sort_unstable();
            want.dedup();
            assert_eq!(union_all(lists), want);
        }
    }

    #[test]
    fn matchers() {
        use MatchOp::*;
        check(&[("__name__", Equal, "up")], &[0, 1]);
        check(&[("job", Equal, "")], &[2]);
        check(&[("x", NotEqual, "1")], &[0, 2]);
        check(&[("job", Regex, "a|b")], &[0, 1]);
        check(&[("job", Regex, "a|")], &[0, 2]);
        check(&[("job", NotRegex, ".+")], &[2]);
        check(&[("__name__", Equal, "up"), ("job", NotEqual, "a")], &[1]);
        check(&[("job", Regex, ".*")], &[0, 1, 2]);
        check(&[("nope", Equal, "v")], &[]);
    }
}
