//! Node addressing and the "give me the hash of node (level, index)" contract
//! that proof generation reads through.
//!
//! A node `(level, index)` is the root of the *perfect* subtree over leaves
//! `[index · 2^level, (index + 1) · 2^level)`. Logs store exactly these nodes
//! (a tlog-tiles log stores them in hash tiles); the nodes on the ragged right
//! edge of a tree whose size is not a power of two are never stored, and this
//! crate recomputes them from perfect nodes. A [`NodeSource`] is therefore
//! only ever asked for perfect nodes that lie entirely inside the tree size a
//! proof is generated for.

use crate::hash::{Hash, node_hash};

/// Address of a perfect subtree: `level` 0 holds the leaf hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// Height above the leaves (0 = leaf hash). At most 63.
    pub level: u8,
    /// Position among the nodes of this level, from the left, 0-based.
    pub index: u64,
}

impl NodeId {
    /// The node at `level` and `index`.
    pub const fn new(level: u8, index: u64) -> Self {
        NodeId { level, index }
    }

    /// The leaf hash of leaf `index`.
    pub const fn leaf(index: u64) -> Self {
        NodeId { level: 0, index }
    }

    /// First leaf covered by the node, or `None` if that does not fit a u64.
    pub fn begin(&self) -> Option<u64> {
        if self.level >= 64 {
            return None;
        }
        self.index
            .checked_mul(1u64 << self.level)
            .filter(|b| b >> self.level == self.index)
    }

    /// One past the last leaf covered by the node, or `None` on overflow.
    pub fn end(&self) -> Option<u64> {
        let width = 1u64.checked_shl(u32::from(self.level))?;
        self.begin()?.checked_add(width)
    }

    /// The parent node.
    pub fn parent(&self) -> NodeId {
        NodeId::new(self.level.saturating_add(1), self.index >> 1)
    }

    /// The other child of this node's parent.
    pub fn sibling(&self) -> NodeId {
        NodeId::new(self.level, self.index ^ 1)
    }
}

/// Where proof generation gets node hashes from: a tile store, a database, or
/// an in-memory tree.
///
/// Contract: [`NodeSource::node_hash`] is only called for perfect nodes that
/// lie entirely inside the tree size being proven (see the module docs), so a
/// store that keeps every perfect node, or tiles holding them, can answer
/// every call. Returning an error aborts proof generation with
/// [`crate::ProveError::Source`].
///
/// Any `FnMut(NodeId) -> Result<Hash, E>` closure is a `NodeSource`.
pub trait NodeSource {
    /// The storage layer's error type.
    type Error;

    /// The hash of node `id`.
    fn node_hash(&mut self, id: NodeId) -> Result<Hash, Self::Error>;
}

impl<F, E> NodeSource for F
where
    F: FnMut(NodeId) -> Result<Hash, E>,
{
    type Error = E;

    fn node_hash(&mut self, id: NodeId) -> Result<Hash, E> {
        self(id)
    }
}

/// The minimal list of perfect nodes covering leaves `[begin, end)`, left to
/// right: sizes first grow (left part) and then shrink (right part). Empty
/// when `begin >= end`. At most 128 nodes.
pub fn range_nodes(begin: u64, end: u64) -> Vec<NodeId> {
    let mut nodes = Vec::new();
    let mut b = begin;
    while b < end {
        let mut level = if b == 0 { 63 } else { b.trailing_zeros() };
        while level > 0 && (1u64 << level) > end - b {
            level -= 1;
        }
        nodes.push(NodeId::new(level as u8, b >> level));
        b += 1u64 << level;
    }
    nodes
}

/// The hash of leaves `[begin, end)` as the right fold of its
/// [`range_nodes`], read from `source`. For `begin == 0` this is the tree
/// root of size `end`; more generally it is the subtree hash whenever
/// [`crate::is_valid_subtree`] holds. `None` when the range is empty.
pub(crate) fn fold_range<S: NodeSource>(
    begin: u64,
    end: u64,
    source: &mut S,
) -> Result<Option<Hash>, S::Error> {
    let mut acc: Option<Hash> = None;
    for id in range_nodes(begin, end).into_iter().rev() {
        let h = source.node_hash(id)?;
        acc = Some(match acc {
            None => h,
            Some(right) => node_hash(&h, &right),
        });
    }
    Ok(acc)
}

/// An in-memory tree that keeps every perfect node: a reference
/// [`NodeSource`] for tests, tools and small logs. Memory is about 2 × 32
/// bytes per leaf.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    /// `levels[l][i]` is node `(l, i)`; only complete nodes are kept.
    levels: Vec<Vec<Hash>>,
}

/// A [`MemoryTree`] was asked for a node it does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node (level {}, index {}) is not in the tree of size {size}", .node.level, .node.index)]
pub struct MissingNode {
    /// The node that was asked for.
    pub node: NodeId,
    /// The tree size at the time.
    pub size: u64,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree of the given leaf hashes.
    pub fn from_leaf_hashes(leaves: &[Hash]) -> Self {
        let mut t = Self::new();
        for l in leaves {
            t.push(*l);
        }
        t
    }

    /// Appends a leaf hash and every perfect node it completes.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(h);
            let row = &self.levels[level];
            if row.len() % 2 == 1 {
                break;
            }
            h = node_hash(&row[row.len() - 2], &row[row.len() - 1]);
            level += 1;
        }
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// The leaf hashes.
    pub fn leaf_hashes(&self) -> &[Hash] {
        self.levels.first().map_or(&[], |l| l.as_slice())
    }

    /// The stored hash of a perfect node, if present.
    pub fn get(&self, id: NodeId) -> Option<Hash> {
        let row = self.levels.get(usize::from(id.level))?;
        row.get(usize::try_from(id.index).ok()?).copied()
    }

    /// The root of the tree at its current size.
    pub fn root(&self) -> Hash {
        self.root_at(self.size())
            .unwrap_or_else(|_| crate::empty_root())
    }

    /// The root of the tree at an earlier (or the current) size.
    pub fn root_at(&self, size: u64) -> Result<Hash, MissingNode> {
        if size > self.size() {
            return Err(MissingNode {
                node: NodeId::leaf(size - 1),
                size: self.size(),
            });
        }
        let mut src = self;
        Ok(fold_range(0, size, &mut src)?.unwrap_or_else(crate::empty_root))
    }
}

impl NodeSource for &MemoryTree {
    type Error = MissingNode;

    fn node_hash(&mut self, id: NodeId) -> Result<Hash, MissingNode> {
        self.get(id).ok_or(MissingNode {
            node: id,
            size: self.size(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_nodes_examples() {
        let ids = |v: &[(u8, u64)]| {
            v.iter()
                .map(|&(l, i)| NodeId::new(l, i))
                .collect::<Vec<_>>()
        };
        assert_eq!(range_nodes(0, 0), vec![]);
        assert_eq!(range_nodes(0, 7), ids(&[(2, 0), (1, 2), (0, 6)]));
        assert_eq!(range_nodes(3, 8), ids(&[(0, 3), (2, 1)]));
        assert_eq!(range_nodes(5, 13), ids(&[(0, 5), (1, 3), (2, 2), (0, 12)]));
        assert_eq!(range_nodes(0, u64::MAX).len(), 64);
        assert_eq!(range_nodes(1, u64::MAX).len(), 126);
    }

    #[test]
    fn node_bounds_do_not_overflow() {
        assert_eq!(NodeId::new(63, 1).begin(), Some(1 << 63));
        assert_eq!(NodeId::new(63, 1).end(), None);
        assert_eq!(NodeId::new(63, 2).begin(), None);
        assert_eq!(NodeId::new(64, 0).begin(), None);
    }
}
