//! A slow reference written straight from the recursive definitions (RFC
//! 6962 §2.1: MTH, PATH, PROOF/SUBPROOF; Merkle Tree Certificates:
//! SUBTREE_SUBPROOF), and the fast code compared with it for every size
//! 1..=300 and random larger ones.

use std::collections::HashMap;

use merkle::{
    CompactRange, Hash, MemoryTree, NodeId, TileNodes, consistency_proof, empty_root,
    inclusion_proof, is_valid_subtree, leaf_hash, node_hash, root_at, root_from_leaf_hashes,
    subtree_consistency_proof, subtree_hash, subtree_inclusion_proof, tiles, verify_consistency,
    verify_inclusion, verify_subtree_consistency, verify_subtree_inclusion,
};

use crate::common::Rng;

/// The reference tree: leaf hashes and a memo of MTH(D[a:b]) so that the
/// recursive definitions stay fast enough to run on every size.
struct Reference {
    leaves: Vec<Hash>,
    memo: HashMap<(usize, usize), Hash>,
}

/// Largest power of two strictly smaller than n (n >= 2).
fn k_of(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

impl Reference {
    fn new(n: usize) -> Self {
        let leaves = (0..n)
            .map(|i| leaf_hash(format!("entry {i}").as_bytes()))
            .collect();
        Reference {
            leaves,
            memo: HashMap::new(),
        }
    }

    /// MTH(D[a:b]).
    fn mth(&mut self, a: usize, b: usize) -> Hash {
        if let Some(h) = self.memo.get(&(a, b)) {
            return *h;
        }
        let h = match b - a {
            0 => empty_root(),
            1 => self.leaves[a],
            n => {
                let k = k_of(n);
                let l = self.mth(a, a + k);
                let r = self.mth(a + k, b);
                node_hash(&l, &r)
            }
        };
        self.memo.insert((a, b), h);
        h
    }

    /// PATH(m, D[a:b]) with m relative to a.
    fn path(&mut self, m: usize, a: usize, b: usize) -> Vec<Hash> {
        let n = b - a;
        if n == 1 {
            return vec![];
        }
        let k = k_of(n);
        if m < k {
            let mut p = self.path(m, a, a + k);
            p.push(self.mth(a + k, b));
            p
        } else {
            let mut p = self.path(m - k, a + k, b);
            p.push(self.mth(a, a + k));
            p
        }
    }

    /// SUBPROOF(m, D[a:b], known).
    fn subproof(&mut self, m: usize, a: usize, b: usize, known: bool) -> Vec<Hash> {
        let n = b - a;
        if m == n {
            return if known { vec![] } else { vec![self.mth(a, b)] };
        }
        let k = k_of(n);
        if m <= k {
            let mut p = self.subproof(m, a, a + k, known);
            p.push(self.mth(a + k, b));
            p
        } else {
            let mut p = self.subproof(m - k, a + k, b, false);
            p.push(self.mth(a, a + k));
            p
        }
    }

    /// SUBTREE_SUBPROOF(start, end, D[lo:hi], known), absolute indices.
    fn subtree_subproof(
        &mut self,
        start: usize,
        end: usize,
        lo: usize,
        hi: usize,
        known: bool,
    ) -> Vec<Hash> {
        if start == lo && end == hi {
            return if known {
                vec![]
            } else {
                vec![self.mth(lo, hi)]
            };
        }
        let split = lo + k_of(hi - lo);
        if end <= split {
            let mut p = self.subtree_subproof(start, end, lo, split, known);
            p.push(self.mth(split, hi));
            p
        } else if split <= start {
            let mut p = self.subtree_subproof(start, end, split, hi, known);
            p.push(self.mth(lo, split));
            p
        } else {
            let mut p = self.subtree_subproof(split, end, split, hi, false);
            p.push(self.mth(lo, split));
            p
        }
    }
}

fn check_size(r: &mut Reference, tree: &MemoryTree, n: usize, all_pairs: bool, rng: &mut Rng) {
    let mut src = tree;
    let root = r.mth(0, n);
    assert_eq!(root_from_leaf_hashes(&r.leaves[..n]), root, "root of {n}");
    assert_eq!(
        tree.root_at(n as u64).unwrap(),
        root,
        "memory tree root of {n}"
    );
    assert_eq!(root_at(n as u64, &mut src).unwrap(), root);

    let indexes: Vec<usize> = if all_pairs {
        (0..n).collect()
    } else {
        (0..20)
            .map(|_| rng.range(0, n as u64) as usize)
            .chain([0, n - 1])
            .collect()
    };
    for &m in &indexes {
        let want = r.path(m, 0, n);
        let got = inclusion_proof(m as u64, n as u64, &mut src).unwrap();
        assert_eq!(got, want, "inclusion proof of {m} in {n}");
        verify_inclusion(m as u64, n as u64, &r.leaves[m], &got, &root).unwrap();
        if !got.is_empty() {
            let mut bad = got.clone();
            bad[rng.range(0, got.len() as u64) as usize].0[0] ^= 1;
            assert!(verify_inclusion(m as u64, n as u64, &r.leaves[m], &bad, &root).is_err());
        }
        assert!(
            verify_inclusion(m as u64 + 1, n as u64, &r.leaves[m], &got, &root).is_err()
                || n == 1
                || got.is_empty()
        );
    }
    for &m in &indexes {
        let m = m + 1; // sizes 1..=n
        let want = r.subproof(m, 0, n, true);
        let got = consistency_proof(m as u64, n as u64, &mut src).unwrap();
        assert_eq!(got, want, "consistency proof {m} -> {n}");
        let old = r.mth(0, m);
        verify_consistency(m as u64, n as u64, &got, &old, &root).unwrap();
        if !got.is_empty() {
            let mut bad = got.clone();
            bad[rng.range(0, got.len() as u64) as usize].0[31] ^= 0x80;
            assert!(verify_consistency(m as u64, n as u64, &bad, &old, &root).is_err());
        }
    }
}

#[test]
fn fast_code_matches_reference_for_sizes_1_to_300() {
    let mut r = Reference::new(300);
    let mut tree = MemoryTree::new();
    let mut rng = Rng(0x5eed);
    let mut range = CompactRange::new(0);
    for n in 1..=300usize {
        tree.push(r.leaves[n - 1]);
        range.append(r.leaves[n - 1]);
        assert_eq!(range.root().unwrap(), r.mth(0, n));
        check_size(&mut r, &tree, n, true, &mut rng);
    }
}

#[test]
fn fast_code_matches_reference_for_random_larger_sizes() {
    let mut rng = Rng(0xfeed_beef);
    let mut r = Reference::new(5000);
    let tree = MemoryTree::from_leaf_hashes(&r.leaves);
    for _ in 0..40 {
        let n = rng.range(301, 5001) as usize;
        check_size(&mut r, &tree, n, false, &mut rng);
    }
}

#[test]
fn subtree_proofs_match_reference() {
    let mut r = Reference::new(70);
    let tree = MemoryTree::from_leaf_hashes(&r.leaves);
    let mut src = &tree;
    let mut checked = 0;
    for size in 1..=70usize {
        for start in 0..size {
            for end in start + 1..=size {
                if !is_valid_subtree(start as u64, end as u64) {
                    continue;
                }
                let sub = r.mth(start, end);
                let root = r.mth(0, size);
                assert_eq!(
                    subtree_hash(start as u64, end as u64, &mut src).unwrap(),
                    sub
                );
                let want = r.subtree_subproof(start, end, 0, size, true);
                let got =
                    subtree_consistency_proof(start as u64, end as u64, size as u64, &mut src)
                        .unwrap();
                assert_eq!(got, want, "subtree consistency [{start}, {end}) in {size}");
                verify_subtree_consistency(
                    start as u64,
                    end as u64,
                    size as u64,
                    &got,
                    &sub,
                    &root,
                )
                .unwrap();
                let mut wrong = sub;
                wrong.0[5] ^= 4;
                assert!(
                    verify_subtree_consistency(
                        start as u64,
                        end as u64,
                        size as u64,
                        &got,
                        &wrong,
                        &root
                    )
                    .is_err()
                );
                if end == size {
                    for index in start..end {
                        let want = r.path(index - start, start, end);
                        let got = subtree_inclusion_proof(
                            index as u64,
                            start as u64,
                            end as u64,
                            &mut src,
                        )
                        .unwrap();
                        assert_eq!(got, want);
                        verify_subtree_inclusion(
                            index as u64,
                            start as u64,
                            end as u64,
                            &r.leaves[index],
                            &got,
                            &sub,
                        )
                        .unwrap();
                    }
                }
                checked += 1;
            }
        }
    }
    println!("subtree proofs checked against the reference: {checked}");
}

#[test]
fn compact_ranges_merge_and_report_every_perfect_node() {
    let mut rng = Rng(7);
    let r = Reference::new(600);
    let tree = MemoryTree::from_leaf_hashes(&r.leaves);
    for _ in 0..300 {
        let a = rng.range(0, 600);
        let b = rng.range(a, 601);
        let c = rng.range(b, 601);
        let mut left = CompactRange::new(a);
        let mut right = CompactRange::new(b);
        let mut seen = Vec::new();
        for i in a..b {
            left.append_with(r.leaves[i as usize], |id, h| seen.push((id, *h)))
                .unwrap();
        }
        for i in b..c {
            right
                .append_with(r.leaves[i as usize], |id, h| seen.push((id, *h)))
                .unwrap();
        }
        let mut rebuilt = CompactRange::new(a);
        for i in a..c {
            rebuilt.append(r.leaves[i as usize]);
        }
        left.merge_with(&right, |id, h| seen.push((id, *h)))
            .unwrap();
        assert_eq!(left, rebuilt, "merge [{a},{b}) + [{b},{c})");
        assert_eq!(left.node_ids(), merkle::range_nodes(a, c).as_slice());
        for (id, h) in &seen {
            assert_eq!(tree.get(*id), Some(*h), "visited node {id:?}");
        }
        // Every perfect node inside [a, c) was reported exactly once.
        let mut expected = 0;
        for level in 0..10u8 {
            for index in 0..(600u64 >> level) {
                let id = NodeId::new(level, index);
                if id.begin().unwrap() >= a && id.end().unwrap() <= c {
                    expected += 1;
                }
            }
        }
        assert_eq!(seen.len(), expected, "nodes reported for [{a}, {c})");
    }
}

#[test]
fn proofs_from_tiles_equal_proofs_from_memory() {
    let mut rng = Rng(99);
    let leaves = crate::common::leaf_n_hashes(70000);
    let tree = MemoryTree::from_leaf_hashes(&leaves);
    for size in [1u64, 255, 256, 257, 65535, 65536, 65537, 70000] {
        let built: HashMap<String, Vec<u8>> = tiles::build_tiles(&leaves[..size as usize])
            .into_iter()
            .map(|(t, b)| (t.path(), b))
            .collect();
        let mut fetches = 0;
        let mut src = TileNodes::new(size, |t: tiles::TileId| {
            fetches += 1;
            built.get(&t.path()).cloned().ok_or(t.path())
        });
        let mut mem = &tree;
        assert_eq!(
            root_at(size, &mut src).unwrap(),
            tree.root_at(size).unwrap()
        );
        for _ in 0..30 {
            let i = rng.range(0, size);
            assert_eq!(
                inclusion_proof(i, size, &mut src).unwrap(),
                inclusion_proof(i, size, &mut mem).unwrap()
            );
            let s1 = rng.range(1, size + 1);
            assert_eq!(
                consistency_proof(s1, size, &mut src).unwrap(),
                consistency_proof(s1, size, &mut mem).unwrap()
            );
        }
        drop(src);
        assert!(fetches <= built.len(), "each tile is fetched once");
    }
}
