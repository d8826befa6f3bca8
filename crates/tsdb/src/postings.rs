//! Resolving label matchers against a postings index (the head's and a
//! block's share this code through [`Index`]).
//!
//! Prometheus' semantics: an absent label matches as `""`. A matcher that
//! does not match the empty string selects the union of the postings of
//! the values it matches; one that does (`{a=""}`, `{a!="x"}`,
//! `{a=~"x|"}`) removes the series that carry a value it does *not* match.
//! A query made only of the latter starts from every series.

use model::{MatchOp, Matcher};

/// A postings index: series ids (sorted, unique) per label name and value.
pub(crate) trait Index {
    /// Every series id, sorted.
    fn all(&self) -> Vec<u32>;
    /// The postings of `name="value"` (empty if absent).
    fn exact(&self, name: &str, value: &str) -> Vec<u32>;
    /// The union of the postings of every value of `name` for which `pred`
    /// holds, sorted and unique.
    fn union_where(&self, name: &str, pred: &dyn Fn(&str) -> bool) -> Vec<u32>;
}

/// Series ids matching all `matchers`, sorted.
pub(crate) fn resolve(ix: &impl Index, matchers: &[Matcher]) -> Vec<u32> {
    let mut pos: Option<Vec<u32>> = None;
    let mut neg: Vec<Vec<u32>> = Vec::new();
    for m in matchers {
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

/// Union of sorted lists.
pub(crate) fn union_all(mut lists: Vec<Vec<u32>>) -> Vec<u32> {
    match lists.len() {
        0 => Vec::new(),
        1 => lists.pop().unwrap_or_default(),
        _ => {
            let mut all: Vec<u32> = lists.concat();
            all.sort_unstable();
            all.dedup();
            all
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

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
        assert_eq!(brute, want);
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
