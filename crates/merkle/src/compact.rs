//! Compact ranges: the minimal set of perfect-subtree roots covering leaves
//! `[begin, end)`.
//!
//! A log appends leaves to a compact range starting at 0 and gets the tree
//! root at every size from at most 64 hashes, without holding the tree. Two
//! adjacent ranges merge into one, so leaves can be hashed in parallel
//! batches. The append visitor reports every perfect node as it is completed,
//! which is exactly what a tile writer has to store. See
//! transparency-dev/merkle `docs/compact_ranges.md` for the idea.

use crate::hash::{Hash, empty_root, node_hash};
use crate::node::{NodeId, range_nodes};
use crate::proof::is_valid_subtree;

/// A compact range `[begin, end)`: the hashes of [`range_nodes`]`(begin, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactRange {
    begin: u64,
    end: u64,
    /// Node ids, parallel to `hashes`, always equal to `range_nodes(begin, end)`.
    ids: Vec<NodeId>,
    hashes: Vec<Hash>,
}

/// Why a compact range operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// `merge` was given a range that does not start where this one ends.
    #[error(
        "cannot merge [{begin}, {end}) after a range ending at {expected}: ranges must be adjacent"
    )]
    NotAdjacent {
        /// Where the range to merge should have started.
        expected: u64,
        /// Its actual begin.
        begin: u64,
        /// Its end.
        end: u64,
    },
    /// `from_parts` got the wrong number of hashes for `[begin, end)`.
    #[error("range [{begin}, {end}) has {want} nodes, got {got} hashes")]
    WrongHashCount {
        /// Range begin.
        begin: u64,
        /// Range end.
        end: u64,
        /// Hashes given.
        got: usize,
        /// Nodes the range has.
        want: usize,
    },
    /// `begin > end` in `from_parts`.
    #[error("range begin {begin} is after its end {end}")]
    Reversed {
        /// Range begin.
        begin: u64,
        /// Range end.
        end: u64,
    },
    /// `root` was called on a range that is not a subtree (RFC 6962 hashes
    /// only exist for ranges from 0, or aligned as [`is_valid_subtree`] says).
    #[error(
        "[{begin}, {end}) is not a subtree, so it has no Merkle tree hash; start ranges at 0 to get tree roots"
    )]
    NotASubtree {
        /// Range begin.
        begin: u64,
        /// Range end.
        end: u64,
    },
    /// Appending would go past leaf index `u64::MAX`.
    #[error("the range is full: no leaf index after {end}")]
    Full {
        /// Range end.
        end: u64,
    },
}

impl CompactRange {
    /// The empty range `[begin, begin)`.
    pub fn new(begin: u64) -> Self {
        CompactRange {
            begin,
            end: begin,
            ids: Vec::new(),
            hashes: Vec::new(),
        }
    }

    /// A range from stored parts: `hashes` must be the hashes of
    /// [`range_nodes`]`(begin, end)`, left to right (as [`Self::hashes`] gives).
    pub fn from_parts(begin: u64, end: u64, hashes: Vec<Hash>) -> Result<Self, RangeError> {
        if begin > end {
            return Err(RangeError::Reversed { begin, end });
        }
        let ids = range_nodes(begin, end);
        if ids.len() != hashes.len() {
            return Err(RangeError::WrongHashCount {
                begin,
                end,
                got: hashes.len(),
                want: ids.len(),
            });
        }
        Ok(CompactRange {
            begin,
            end,
            ids,
            hashes,
        })
    }

    /// First leaf index in the range.
    pub fn begin(&self) -> u64 {
        self.begin
    }

    /// One past the last leaf index in the range.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The node hashes, left to right.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// The node ids of [`Self::hashes`], left to right.
    pub fn node_ids(&self) -> &[NodeId] {
        &self.ids
    }

    /// Appends one leaf hash.
    pub fn append(&mut self, leaf: Hash) {
        // A range ending at u64::MAX cannot grow; that is 2^64 leaves, which
        // no log reaches, so we saturate rather than return an error here.
        let _ = self.append_with(leaf, |_, _| {});
    }

    /// Appends one leaf hash and calls `visit` for the leaf and every perfect
    /// node it completes, bottom-up (e.g. to write them into tiles).
    pub fn append_with(
        &mut self,
        leaf: Hash,
        mut visit: impl FnMut(NodeId, &Hash),
    ) -> Result<(), RangeError> {
        if self.end == u64::MAX {
            return Err(RangeError::Full { end: self.end });
        }
        let id = NodeId::leaf(self.end);
        visit(id, &leaf);
        self.push_node(id, leaf, &mut visit);
        self.end += 1;
        Ok(())
    }

    /// Appends the range `other`, which must start at `self.end()`. Calls
    /// `visit` for every node the merge creates.
    pub fn merge_with(
        &mut self,
        other: &CompactRange,
        mut visit: impl FnMut(NodeId, &Hash),
    ) -> Result<(), RangeError> {
        if other.begin != self.end {
            return Err(RangeError::NotAdjacent {
                expected: self.end,
                begin: other.begin,
                end: other.end,
            });
        }
        for (id, h) in other.ids.iter().zip(&other.hashes) {
            self.push_node(*id, *h, &mut visit);
        }
        self.end = other.end;
        Ok(())
    }

    /// Appends the range `other`, which must start at `self.end()`.
    pub fn merge(&mut self, other: &CompactRange) -> Result<(), RangeError> {
        self.merge_with(other, |_, _| {})
    }

    /// Pushes a node to the right end and merges it with its left sibling
    /// while that sibling is the last node: greedy merging keeps the node
    /// list equal to `range_nodes(begin, end)`.
    fn push_node(&mut self, id: NodeId, hash: Hash, visit: &mut impl FnMut(NodeId, &Hash)) {
        let (mut id, mut hash) = (id, hash);
        while let (Some(&last_id), Some(last_hash)) = (self.ids.last(), self.hashes.last()) {
            if id.index % 2 == 1 && last_id == id.sibling() {
                hash = node_hash(last_hash, &hash);
                id = id.parent();
                self.ids.pop();
                self.hashes.pop();
                visit(id, &hash);
            } else {
                break;
            }
        }
        self.ids.push(id);
        self.hashes.push(hash);
    }

    /// The Merkle tree hash of the leaves in the range: the tree root of size
    /// `end` when `begin == 0` ([`crate::empty_root`] when also empty), or the
    /// subtree hash when `[begin, end)` is a valid subtree.
    pub fn root(&self) -> Result<Hash, RangeError> {
        if self.begin == self.end {
            return Ok(empty_root());
        }
        if !is_valid_subtree(self.begin, self.end) {
            return Err(RangeError::NotASubtree {
                begin: self.begin,
                end: self.end,
            });
        }
        let mut iter = self.hashes.iter().rev();
        let mut acc = *iter.next().unwrap_or(&empty_root());
        for h in iter {
            acc = node_hash(h, &acc);
        }
        Ok(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;

    #[test]
    fn nodes_stay_canonical_while_appending() {
        for begin in 0..40u64 {
            let mut r = CompactRange::new(begin);
            for end in begin..begin + 70 {
                assert_eq!(r.node_ids(), range_nodes(begin, end).as_slice());
                r.append(leaf_hash(&end.to_be_bytes()));
            }
        }
    }

    #[test]
    fn merge_rejects_gaps() {
        let mut a = CompactRange::new(0);
        let b = CompactRange::new(3);
        assert!(matches!(a.merge(&b), Err(RangeError::NotAdjacent { .. })));
    }

    #[test]
    fn root_of_unaligned_range_is_refused() {
        let mut r = CompactRange::new(1);
        r.append(leaf_hash(b"a"));
        r.append(leaf_hash(b"b"));
        assert!(matches!(r.root(), Err(RangeError::NotASubtree { .. })));
    }
}
