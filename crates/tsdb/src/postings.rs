//! Resolving label matchers against a postings index (the head's and a
//! block's share this code through [`Index`]).
//!
//! Prometheus' semantics: an absent label matches as `""`. A matcher that
//! does not match the empty string selects the union of the postings of
//! the values it matches; one that does (`{a=""}`, `{a!="x"}`,
//! `{a=~"x|"}`) removes the series that carry a value it does *not* match.
//! A query made only of the latter starts from every series.

use model::{MatchOp, Matcher};
use std::collections::{HashMap, HashSet};

/// A postings index: series ids (sorted, unique) per label name and value.
pub(crate) trait Index {
    /// Every series id, sorted.
    fn all(&self) -> Vec<u32>;
    /// The postings of `name="value"` (empty if absent).
    fn exact(&self, name: &str, value: &str) -> Vec<u32>;
    /// The values of `name` for which `pred` holds, as symbol ids (those
    /// [`Index::value_id`] gives), each with the length of its postings list.
    fn values_where(&self, name: &str, pred: &dyn Fn(&str) -> bool) -> Vec<(u32, usize)>;
    /// The postings of `name` = each of `values` (symbol ids from
    /// [`Index::values_where`]), one sorted list per value found.
    fn postings_of(&self, name: &str, values: &[u32]) -> Vec<Vec<u32>>;
    /// [`Index::values_where`] for the values whose series `m` keeps (when it does not
    /// match `""`) or drops (when it does). An index may remember the answer.
    fn values_for(&self, m: &Matcher) -> Vec<(u32, usize)> {
        let empty = m.matches_empty();
        self.values_where(&m.name, &|v| m.matches(v) != empty)
    }
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

/// The values of a label that a regex matcher matched, remembered per matcher while the
/// label gets no new value: dashboards run the same `=~` over a label with thousands of
/// values on every refresh, and the pass over the values (a string each, scattered in
/// memory) was most of such a query. Only which values match is kept, never series or
/// samples: postings are read afresh each time. An entry holds the count of the label's
/// values when it was made and is used only while that count is the same (values are only
/// added between [`MatchCache::clear`]s, which the owner calls whenever it renumbers or
/// drops values).
#[derive(Default)]
pub(crate) struct MatchCache {
    map: std::sync::Mutex<HashMap<MatcherKey, (usize, Vec<u32>)>>,
}

/// A matcher as a cache key: label name, operator, pattern.
type MatcherKey = (String, MatchOp, String);

impl MatchCache {
    /// Entries at most (then emptied), and the longest value list kept.
    const MAX_ENTRIES: usize = 512;
    const MAX_VALUES: usize = 100_000;

    /// `compute()`'s value ids for `m` over a label with `values` values, remembered.
    pub(crate) fn get_or(
        &self,
        m: &Matcher,
        values: usize,
        compute: impl FnOnce() -> Vec<u32>,
    ) -> Vec<u32> {
        if !matches!(m.op, MatchOp::Regex | MatchOp::NotRegex) {
            return compute();
        }
        let key = (m.name.clone(), m.op, m.value.clone());
        let lock = || self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((n, ids)) = lock().get(&key)
            && *n == values
        {
            return ids.clone();
        }
        let ids = compute();
        if ids.len() <= Self::MAX_VALUES {
            let mut map = lock();
            if map.len() >= Self::MAX_ENTRIES {
                map.clear();
            }
            map.insert(key, (values, ids.clone()));
        }
        ids
    }

    /// Forgets every entry (the label values were renumbered or dropped).
    pub(crate) fn clear(&self) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Whether `n` candidates are few enough to check one by one whatever the postings hold.
fn few(rule: Check, n: usize) -> bool {
    match rule {
        Check::ByCost => n <= CHECK_ALWAYS_UP_TO,
        #[cfg(test)]
        Check::Never => false,
        #[cfg(test)]
        Check::Always => true,
    }
}

/// Whether checking `n` candidates costs less than a union of `union` ids.
fn by_candidates(rule: Check, n: usize, union: usize) -> bool {
    match rule {
        Check::ByCost => n.saturating_mul(CHECK_COST) <= union,
        #[cfg(test)]
        Check::Never => false,
        #[cfg(test)]
        Check::Always => true,
    }
}

/// Whether looking the `listed` ids up among the candidates `p` (a bit set over them:
/// about an id each, plus the set's making: a bit per candidate, and zeroed words up to the
/// largest id, a memset at about eight words an id's cost) costs less than both the union
/// (`union`, counted per merge round) and a check of each candidate's value.
fn by_probing(rule: Check, p: &[u32], listed: usize, union: usize) -> bool {
    let n = p.len();
    match rule {
        Check::ByCost => {
            let words = p.last().map_or(0, |&m| m as usize / 64 + 1) / 8;
            let cost = listed.saturating_add(n).saturating_add(words);
            cost <= union && cost <= n.saturating_mul(CHECK_COST)
        }
        #[cfg(test)]
        Check::Never => false,
        #[cfg(test)]
        Check::Always => n.is_multiple_of(2),
    }
}

/// The candidates `p` (sorted) that appear in some list (`hits`), or in none.
fn probe(p: &[u32], lists: &[Vec<u32>], hits: bool) -> Vec<u32> {
    let Some(&max) = p.last() else {
        return Vec::new();
    };
    let words = max as usize / 64 + 1;
    let mut cand = vec![0u64; words];
    for &id in p {
        cand[id as usize / 64] |= 1 << (id % 64);
    }
    let mut seen = vec![0u64; words];
    for &id in lists.iter().flatten() {
        if let Some(&w) = cand.get(id as usize / 64) {
            seen[id as usize / 64] |= w & (1 << (id % 64));
        }
    }
    p.iter()
        .copied()
        .filter(|&id| (seen[id as usize / 64] >> (id % 64) & 1 == 1) == hits)
        .collect()
}

/// `list`, or its intersection with the candidates so far.
fn narrow(pos: Option<Vec<u32>>, list: Vec<u32>) -> Vec<u32> {
    match pos {
        None => list,
        Some(p) => intersect(&p, &list),
    }
}

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
        let op = m.op;
        if op == MatchOp::Equal && !m.matches_empty() {
            pos = Some(narrow(pos, ix.exact(&m.name, &m.value)));
        } else if let Some(p) = &pos
            && op != MatchOp::Equal
            && few(rule, p.len())
        {
            // A handful of candidates: each distinct value among them matched once.
            let mut seen: HashMap<Option<u32>, bool> = HashMap::new();
            let keep = p
                .iter()
                .copied()
                .filter(|&id| {
                    let v = ix.value_id(id, &m.name);
                    *seen
                        .entry(v)
                        .or_insert_with(|| m.matches(v.map_or("", |v| ix.symbol(v))))
                })
                .collect();
            pos = Some(keep);
        } else if let (Some(set), false) = (m.set_matches(), m.matches_empty()) {
            let lists: Vec<Vec<u32>> = set.iter().map(|v| ix.exact(&m.name, v)).collect();
            pos = Some(narrow(pos, union_all(lists)));
        } else {
            // One pass over the label's values: those whose series the matcher keeps (it
            // does not match "") or drops (it does), with their postings' lengths.
            let empty = m.matches_empty();
            let values = ix.values_for(m);
            // A union merges its lists two by two: each id is moved once per round.
            let rounds = values.len().max(2).next_power_of_two().trailing_zeros() as usize;
            let union: usize = values.iter().map(|v| v.1).sum::<usize>() * rounds;
            let ids_in_lists: usize = values.iter().map(|v| v.1).sum();
            match &pos {
                Some(p) if by_probing(rule, p, ids_in_lists, union) => {
                    // Each listed id looked up among the candidates (a bit per id): no
                    // merge, no walk over the candidates' labels.
                    let ids: Vec<u32> = values.iter().map(|v| v.0).collect();
                    pos = Some(probe(p, &ix.postings_of(&m.name, &ids), !empty));
                }
                Some(p) if by_candidates(rule, p.len(), union) => {
                    // Checking each candidate's own value against the values found costs
                    // less than merging their postings.
                    let ids: HashSet<u32> = values.iter().map(|v| v.0).collect();
                    let keep = p
                        .iter()
                        .copied()
                        .filter(|&id| match ix.value_id(id, &m.name) {
                            Some(v) => ids.contains(&v) != empty,
                            None => empty,
                        })
                        .collect();
                    pos = Some(keep);
                }
                _ => {
                    let ids: Vec<u32> = values.iter().map(|v| v.0).collect();
                    let list = union_all(ix.postings_of(&m.name, &ids));
                    if empty {
                        neg.push(list);
                    } else {
                        pos = Some(narrow(pos, list));
                    }
                }
            }
        }
        if pos.as_ref().is_some_and(|p| p.is_empty()) {
            return Vec::new();
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
            (0..self.0.len() as u32)
                .filter(|i| self.0[*i as usize].get(name) == Some(&value))
                .collect()
        }
        fn values_where(&self, name: &str, pred: &dyn Fn(&str) -> bool) -> Vec<(u32, usize)> {
            (0..SYMS.len() as u32)
                .filter(|&s| pred(SYMS[s as usize]))
                .map(|s| (s, self.exact(name, SYMS[s as usize]).len()))
                .filter(|v| v.1 > 0)
                .collect()
        }
        fn postings_of(&self, name: &str, values: &[u32]) -> Vec<Vec<u32>> {
            values
                .iter()
                .map(|&s| self.exact(name, SYMS[s as usize]))
                .collect()
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

    /// Random series and matcher sets: every rule for checking candidates gives the
    /// series the matchers select by definition.
    #[test]
    fn random_matchers_agree_with_the_definition() {
        use MatchOp::*;
        let mut rng = model::XorShift64::new(0x9e37_79b9_7f4a_7c15);
        let mut rnd = move || rng.next_u64();
        let names = ["__name__", "job", "x"];
        let pool = [
            ("__name__", Equal, "up"),
            ("job", Equal, ""),
            ("job", NotEqual, "a"),
            ("job", Regex, "a|b"),
            ("job", Regex, "a|"),
            ("job", NotRegex, "b.*"),
            ("x", Regex, "1|up"),
            ("x", NotEqual, ""),
            ("x", NotRegex, ""),
            ("__name__", Regex, "d.*"),
            ("job", Regex, ".*"),
        ];
        for _ in 0..300 {
            let series: Vec<BTreeMap<&'static str, &'static str>> = (0..1 + rnd() % 120)
                .map(|_| {
                    let mut s = BTreeMap::new();
                    for n in names {
                        let r = rnd();
                        if r % 4 != 0 {
                            s.insert(n, SYMS[(r / 4 % SYMS.len() as u64) as usize]);
                        }
                    }
                    s
                })
                .collect();
            let ix = Naive(series);
            let ms: Vec<Matcher> = (0..1 + rnd() % 3)
                .map(|_| {
                    let (n, op, v) = pool[(rnd() % pool.len() as u64) as usize];
                    Matcher::new(op, n, v).unwrap()
                })
                .collect();
            let brute: Vec<u32> = (0..ix.0.len() as u32)
                .filter(|i| {
                    ms.iter()
                        .all(|m| m.matches(ix.0[*i as usize].get(m.name.as_str()).unwrap_or(&"")))
                })
                .collect();
            for rule in [Check::ByCost, Check::Never, Check::Always] {
                assert_eq!(resolve_with(&ix, &ms, rule), brute, "{ms:?} {rule:?}");
            }
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
