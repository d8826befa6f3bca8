//! Inclusion and consistency proofs (RFC 6962 §2.1.1–2.1.2, RFC 9162
//! §2.1.3–2.1.4): generation from a [`NodeSource`] and verification.
//!
//! Also the *subtree* proofs of draft-ietf-plants-merkle-tree-certs (Merkle
//! Tree Certificates): a subtree `[start, end)` is a range whose `start` is a
//! multiple of the smallest power of two `>= end - start`
//! ([`is_valid_subtree`]); its hash is `MTH(D[start:end])`. A subtree
//! inclusion proof is the inclusion proof of `index - start` in that subtree;
//! a subtree consistency proof shows that a subtree's hash is part of a tree
//! of size `size` (for `start == 0` it is exactly an RFC 9162 consistency
//! proof from `end` to `size`).
//!
//! Proof order is the RFC's: the hash nearest the leaf comes first.
//! Verification never panics: wrong sizes, indexes, proof lengths or hash
//! lengths (the `*_bytes` variants take raw bytes from the wire) are
//! [`VerifyError`]s.

use crate::hash::{Hash, empty_root, node_hash};
use crate::node::{NodeId, NodeSource, fold_range};

/// Which root a [`VerifyError::RootMismatch`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    /// The tree root the proof was checked against (the newer one for
    /// consistency proofs).
    Tree,
    /// The older root of a consistency proof.
    Old,
    /// The subtree hash of a subtree proof.
    Subtree,
}

/// Why a proof did not verify. Every malformed input ends here; nothing in
/// verification panics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// Leaf index given.
        index: u64,
        /// Tree size given.
        size: u64,
    },
    /// A consistency proof from a larger to a smaller tree.
    #[error("consistency proof from size {size1} to the smaller size {size2}")]
    SizeOrder {
        /// Older size.
        size1: u64,
        /// Newer size.
        size2: u64,
    },
    /// A consistency proof from the empty tree (RFC 9162 defines none; a
    /// client that accepts "every tree extends the empty tree" must decide
    /// that itself, before proof verification).
    #[error("a consistency proof from the empty tree is meaningless")]
    FromEmptyTree,
    /// The proof has the wrong number of hashes for these sizes.
    #[error("proof has {got} hashes, these sizes need {want}")]
    ProofLength {
        /// Hashes in the proof.
        got: usize,
        /// Hashes expected.
        want: usize,
    },
    /// The proof is valid in shape but leads to another root.
    #[error("{which:?} root mismatch: computed {computed}, expected {expected}")]
    RootMismatch {
        /// Which root did not match.
        which: RootKind,
        /// The root the caller gave.
        expected: Hash,
        /// The root the proof leads to.
        computed: Hash,
    },
    /// Raw bytes given as equal-size roots differ.
    #[error("sizes are equal but the roots differ")]
    EqualSizeRootsDiffer,
    /// A hash from the wire is not 32 bytes long.
    #[error("{what} is {len} bytes, a hash is 32")]
    HashLength {
        /// Which input ("leaf hash", "root", "proof[3]", ...).
        what: String,
        /// Its length.
        len: usize,
    },
    /// `[start, end)` is not a subtree (see [`is_valid_subtree`]).
    #[error(
        "[{start}, {end}) is not a subtree: start must be a multiple of the smallest power of two >= end - start"
    )]
    InvalidSubtree {
        /// Subtree start.
        start: u64,
        /// Subtree end.
        end: u64,
    },
    /// The leaf index is outside the subtree.
    #[error("leaf index {index} is not in subtree [{start}, {end})")]
    IndexNotInSubtree {
        /// Leaf index.
        index: u64,
        /// Subtree start.
        start: u64,
        /// Subtree end.
        end: u64,
    },
    /// The subtree reaches past the tree.
    #[error("subtree [{start}, {end}) is not inside a tree of size {size}")]
    SubtreeOutsideTree {
        /// Subtree start.
        start: u64,
        /// Subtree end.
        end: u64,
        /// Tree size.
        size: u64,
    },
    /// An empty subtree's hash must be the empty-tree hash, with an empty proof.
    #[error("the empty subtree's hash must be SHA-256(\"\") and its proof empty")]
    BadEmptySubtree,
}

/// Why a proof could not be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProveError<E> {
    /// The [`NodeSource`] failed.
    #[error("reading a node hash: {0}")]
    Source(#[source] E),
    /// The request itself is impossible (index beyond size, sizes reversed,
    /// not a subtree, ...). Carries the same description verification uses.
    #[error("cannot prove: {0}")]
    Request(VerifyError),
}

/// Whether `[start, end)` is a subtree in the sense of Merkle Tree
/// Certificates: `start <= end`, and `start` is a multiple of the smallest
/// power of two `>= end - start`. The empty range is a subtree. Every range
/// `[0, n)` is one.
pub fn is_valid_subtree(start: u64, end: u64) -> bool {
    if start > end {
        return false;
    }
    if start == end {
        return true;
    }
    match (end - start).checked_next_power_of_two() {
        Some(ceil) => start.is_multiple_of(ceil),
        // end - start > 2^63: only start == 0 fits below 2^64.
        None => start == 0,
    }
}

/// Number of bits needed to write `x` (0 for 0).
fn bit_len(x: u64) -> u32 {
    64 - x.leading_zeros()
}

/// Inclusion path for local leaf `index` in a (sub)tree of `size` leaves
/// whose first leaf is global leaf `start` (`start` aligned as a subtree),
/// skipping levels below `from_level`. Requires `index < size`.
fn path<S: NodeSource>(
    index: u64,
    size: u64,
    start: u64,
    from_level: u32,
    src: &mut S,
) -> Result<Vec<Hash>, S::Error> {
    let inner = bit_len(index ^ (size - 1));
    let mut out = Vec::new();
    for l in from_level..inner {
        let sib = (index >> l) ^ 1;
        let sib_begin = u128::from(sib) << l;
        let sib_end = (u128::from(sib) + 1) << l;
        let global = (start >> l) + sib;
        if sib_end <= u128::from(size) {
            out.push(src.node_hash(NodeId::new(l as u8, global))?);
        } else {
            // The sibling is on the tree's ragged right edge: not stored,
            // recompute it from the perfect nodes it is made of.
            let begin = start + sib_begin as u64;
            let h = fold_range(begin, start + size, src)?;
            out.push(h.unwrap_or_else(empty_root));
        }
    }
    for l in inner.max(from_level)..64 {
        if (index >> l) & 1 == 1 {
            let sib = (index >> l) ^ 1;
            out.push(src.node_hash(NodeId::new(l as u8, (start >> l) + sib))?);
        }
    }
    Ok(out)
}

/// The tree root at `size`, from perfect nodes ([`crate::empty_root`] for 0).
pub fn root_at<S: NodeSource>(size: u64, src: &mut S) -> Result<Hash, S::Error> {
    Ok(fold_range(0, size, src)?.unwrap_or_else(empty_root))
}

/// The inclusion proof (audit path) of leaf `index` in the tree of `size`
/// leaves (RFC 9162 §2.1.3.1).
pub fn inclusion_proof<S: NodeSource>(
    index: u64,
    size: u64,
    src: &mut S,
) -> Result<Vec<Hash>, ProveError<S::Error>> {
    if index >= size {
        return Err(ProveError::Request(VerifyError::IndexOutOfRange {
            index,
            size,
        }));
    }
    path(index, size, 0, 0, src).map_err(ProveError::Source)
}

/// The consistency proof from tree size `size1` to `size2` (RFC 9162
/// §2.1.4.1). Empty when `size1 == size2` or `size1 == 0` (no proof is
/// needed, or none exists; verification of the latter always fails).
pub fn consistency_proof<S: NodeSource>(
    size1: u64,
    size2: u64,
    src: &mut S,
) -> Result<Vec<Hash>, ProveError<S::Error>> {
    if size1 > size2 {
        return Err(ProveError::Request(VerifyError::SizeOrder { size1, size2 }));
    }
    if size1 == 0 || size1 == size2 {
        return Ok(Vec::new());
    }
    let shift = size1.trailing_zeros();
    let mut out = Vec::new();
    if size1 != 1u64 << shift {
        // The root of the perfect subtree ending at size1 seeds the proof,
        // unless size1 itself is that power of two (the verifier has it).
        let seed = NodeId::new(shift as u8, (size1 - 1) >> shift);
        out.push(src.node_hash(seed).map_err(ProveError::Source)?);
    }
    out.extend(path(size1 - 1, size2, 0, shift, src).map_err(ProveError::Source)?);
    Ok(out)
}

/// The inclusion proof of leaf `index` in subtree `[start, end)`.
pub fn subtree_inclusion_proof<S: NodeSource>(
    index: u64,
    start: u64,
    end: u64,
    src: &mut S,
) -> Result<Vec<Hash>, ProveError<S::Error>> {
    check_subtree_index(index, start, end).map_err(ProveError::Request)?;
    path(index - start, end - start, start, 0, src).map_err(ProveError::Source)
}

/// The hash of subtree `[start, end)` ([`crate::empty_root`] when empty).
pub fn subtree_hash<S: NodeSource>(
    start: u64,
    end: u64,
    src: &mut S,
) -> Result<Hash, ProveError<S::Error>> {
    if !is_valid_subtree(start, end) {
        return Err(ProveError::Request(VerifyError::InvalidSubtree {
            start,
            end,
        }));
    }
    Ok(fold_range(start, end, src)
        .map_err(ProveError::Source)?
        .unwrap_or_else(empty_root))
}

fn check_subtree_index(index: u64, start: u64, end: u64) -> Result<(), VerifyError> {
    if start >= end || !is_valid_subtree(start, end) {
        return Err(VerifyError::InvalidSubtree { start, end });
    }
    if index < start || index >= end {
        return Err(VerifyError::IndexNotInSubtree { index, start, end });
    }
    Ok(())
}

/// One step of the SUBTREE_SUBPROOF recursion, seen from the top.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// The subtree is in the left child; the sibling (right child) is in the proof.
    Left,
    /// The subtree is in the right child; the sibling (left child) is in the proof.
    Right,
    /// The subtree spans both children (so it starts at the window's start);
    /// the left child is in the proof and the subtree hash is no longer known.
    Span,
}

/// The recursion of SUBTREE_SUBPROOF(start, end, D[0:size], true), as the
/// steps from the top, each with the sibling window `[lo, hi)` it adds to the
/// proof, plus the final window and whether its hash is known to the
/// verifier. Requires a non-empty valid subtree inside the tree.
fn subtree_steps(start: u64, end: u64, size: u64) -> SubtreeWalk {
    let (mut start, mut lo, mut hi, mut known) = (start, 0u64, size, true);
    let mut steps = Vec::new();
    while !(start == lo && end == hi) {
        // hi - lo >= 2 here: the window strictly contains a non-empty subtree.
        let k = 1u64 << (bit_len(hi - lo - 1) - 1);
        let split = lo + k;
        if end <= split {
            steps.push((Step::Left, split, hi));
            hi = split;
        } else if split <= start {
            steps.push((Step::Right, lo, split));
            lo = split;
        } else {
            steps.push((Step::Span, lo, split));
            lo = split;
            start = split;
            known = false;
        }
    }
    SubtreeWalk {
        steps,
        bottom: (lo, hi),
        known,
    }
}

/// The result of [`subtree_steps`].
struct SubtreeWalk {
    /// Steps from the top, each with the sibling window it adds to the proof.
    steps: Vec<(Step, u64, u64)>,
    /// The window the recursion ends on.
    bottom: (u64, u64),
    /// Whether the verifier knows the bottom window's hash (it is the subtree).
    known: bool,
}

fn check_subtree_in_tree(start: u64, end: u64, size: u64) -> Result<(), VerifyError> {
    if start > end || !is_valid_subtree(start, end) {
        return Err(VerifyError::InvalidSubtree { start, end });
    }
    if end > size {
        return Err(VerifyError::SubtreeOutsideTree { start, end, size });
    }
    Ok(())
}

/// The subtree consistency proof that subtree `[start, end)` is part of the
/// tree of `size` leaves (Merkle Tree Certificates, SUBTREE_PROOF). Empty
/// for the empty subtree.
pub fn subtree_consistency_proof<S: NodeSource>(
    start: u64,
    end: u64,
    size: u64,
    src: &mut S,
) -> Result<Vec<Hash>, ProveError<S::Error>> {
    check_subtree_in_tree(start, end, size).map_err(ProveError::Request)?;
    if start == end {
        return Ok(Vec::new());
    }
    let SubtreeWalk {
        steps,
        bottom: (lo, hi),
        known,
    } = subtree_steps(start, end, size);
    let mut fold = |b: u64, e: u64| -> Result<Hash, ProveError<S::Error>> {
        Ok(fold_range(b, e, src)
            .map_err(ProveError::Source)?
            .unwrap_or_else(empty_root))
    };
    let mut out = Vec::with_capacity(steps.len() + 1);
    if !known {
        out.push(fold(lo, hi)?);
    }
    for &(_, b, e) in steps.iter().rev() {
        out.push(fold(b, e)?);
    }
    Ok(out)
}

/// The root that an inclusion proof leads to (RFC 9162 §2.1.3.2).
pub fn root_from_inclusion_proof(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
) -> Result<Hash, VerifyError> {
    if index >= size {
        return Err(VerifyError::IndexOutOfRange { index, size });
    }
    let inner = bit_len(index ^ (size - 1)) as usize;
    let border = index.checked_shr(inner as u32).unwrap_or(0).count_ones() as usize;
    if proof.len() != inner + border {
        return Err(VerifyError::ProofLength {
            got: proof.len(),
            want: inner + border,
        });
    }
    let (inner_part, border_part) = proof.split_at(inner);
    let mut h = *leaf;
    for (i, p) in inner_part.iter().enumerate() {
        h = if (index >> i) & 1 == 0 {
            node_hash(&h, p)
        } else {
            node_hash(p, &h)
        };
    }
    for p in border_part {
        h = node_hash(p, &h);
    }
    Ok(h)
}

/// Verifies that `leaf` is leaf `index` of the tree of `size` with `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), VerifyError> {
    let computed = root_from_inclusion_proof(index, size, leaf, proof)?;
    matches(RootKind::Tree, root, &computed)
}

fn matches(which: RootKind, expected: &Hash, computed: &Hash) -> Result<(), VerifyError> {
    if expected == computed {
        Ok(())
    } else {
        Err(VerifyError::RootMismatch {
            which,
            expected: *expected,
            computed: *computed,
        })
    }
}

/// Checks the old root and returns the new root a consistency proof leads to
/// (RFC 9162 §2.1.4.2). Requires `0 < size1 <= size2`.
pub fn root_from_consistency_proof(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
) -> Result<Hash, VerifyError> {
    if size2 < size1 {
        return Err(VerifyError::SizeOrder { size1, size2 });
    }
    if size1 == 0 {
        return Err(VerifyError::FromEmptyTree);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(VerifyError::ProofLength {
                got: proof.len(),
                want: 0,
            });
        }
        return Ok(*root1);
    }
    let inner_full = bit_len((size1 - 1) ^ (size2 - 1)) as usize;
    let shift = size1.trailing_zeros() as usize;
    // shift < inner_full because size1 < size2.
    let inner = inner_full.saturating_sub(shift);
    let border = (size1 - 1)
        .checked_shr(inner_full as u32)
        .unwrap_or(0)
        .count_ones() as usize;
    let seeded = size1 != 1u64 << shift;
    let want = usize::from(seeded) + inner + border;
    if proof.is_empty() || proof.len() != want {
        return Err(VerifyError::ProofLength {
            got: proof.len(),
            want,
        });
    }
    let (seed, rest) = if seeded {
        (proof[0], &proof[1..])
    } else {
        (*root1, proof)
    };
    let (inner_part, border_part) = rest.split_at(inner);
    let mask = (size1 - 1) >> shift;
    // hash1 uses only the left siblings: the older tree; hash2 all of them.
    let (mut h1, mut h2) = (seed, seed);
    for (i, p) in inner_part.iter().enumerate() {
        if (mask >> i) & 1 == 1 {
            h1 = node_hash(p, &h1);
            h2 = node_hash(p, &h2);
        } else {
            h2 = node_hash(&h2, p);
        }
    }
    for p in border_part {
        h1 = node_hash(p, &h1);
        h2 = node_hash(p, &h2);
    }
    matches(RootKind::Old, root1, &h1)?;
    Ok(h2)
}

/// Verifies that the tree of `size1` with `root1` is a prefix of the tree of
/// `size2` with `root2`. Fails for `size1 == 0` (see
/// [`VerifyError::FromEmptyTree`]).
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), VerifyError> {
    let computed = root_from_consistency_proof(size1, size2, proof, root1)?;
    matches(RootKind::Tree, root2, &computed)
}

/// The subtree hash that a subtree inclusion proof leads to.
pub fn root_from_subtree_inclusion_proof(
    index: u64,
    start: u64,
    end: u64,
    leaf: &Hash,
    proof: &[Hash],
) -> Result<Hash, VerifyError> {
    check_subtree_index(index, start, end)?;
    root_from_inclusion_proof(index - start, end - start, leaf, proof)
}

/// Verifies that `leaf` is leaf `index` of subtree `[start, end)` whose hash
/// is `subtree_root`.
pub fn verify_subtree_inclusion(
    index: u64,
    start: u64,
    end: u64,
    leaf: &Hash,
    proof: &[Hash],
    subtree_root: &Hash,
) -> Result<(), VerifyError> {
    let computed = root_from_subtree_inclusion_proof(index, start, end, leaf, proof)?;
    matches(RootKind::Subtree, subtree_root, &computed)
}

/// Checks the subtree hash and returns the tree root a subtree consistency
/// proof leads to; `None` for the empty subtree, which is consistent with
/// every tree.
pub fn root_from_subtree_consistency_proof(
    start: u64,
    end: u64,
    size: u64,
    proof: &[Hash],
    subtree_root: &Hash,
) -> Result<Option<Hash>, VerifyError> {
    check_subtree_in_tree(start, end, size)?;
    if start == end {
        if !proof.is_empty() || *subtree_root != empty_root() {
            return Err(VerifyError::BadEmptySubtree);
        }
        return Ok(None);
    }
    let SubtreeWalk { steps, known, .. } = subtree_steps(start, end, size);
    let want = steps.len() + usize::from(!known);
    if proof.len() != want {
        return Err(VerifyError::ProofLength {
            got: proof.len(),
            want,
        });
    }
    let mut it = proof.iter();
    // Known: the recursion ended on the subtree itself, which the verifier
    // has. Unknown: it ended on a window the proof supplies first.
    let (mut s, mut t) = if known {
        (*subtree_root, *subtree_root)
    } else {
        match it.next() {
            Some(p) => (*p, *p),
            None => return Err(VerifyError::ProofLength { got: 0, want }),
        }
    };
    for ((step, _, _), p) in steps.iter().rev().zip(it) {
        match step {
            Step::Left => t = node_hash(&t, p),
            Step::Right => t = node_hash(p, &t),
            Step::Span => {
                t = node_hash(p, &t);
                s = node_hash(p, &s);
            }
        }
    }
    matches(RootKind::Subtree, subtree_root, &s)?;
    Ok(Some(t))
}

/// Verifies that subtree `[start, end)` with hash `subtree_root` is part of
/// the tree of `size` with `root`. The empty subtree must have the empty-tree
/// hash and an empty proof; `root` is then not constrained.
pub fn verify_subtree_consistency(
    start: u64,
    end: u64,
    size: u64,
    proof: &[Hash],
    subtree_root: &Hash,
    root: &Hash,
) -> Result<(), VerifyError> {
    match root_from_subtree_consistency_proof(start, end, size, proof, subtree_root)? {
        None => Ok(()),
        Some(computed) => matches(RootKind::Tree, root, &computed),
    }
}

fn hash_arg(what: &str, bytes: &[u8]) -> Result<Hash, VerifyError> {
    Hash::from_slice(bytes).map_err(|_| VerifyError::HashLength {
        what: what.to_owned(),
        len: bytes.len(),
    })
}

fn proof_arg<P: AsRef<[u8]>>(proof: &[P]) -> Result<Vec<Hash>, VerifyError> {
    proof
        .iter()
        .enumerate()
        .map(|(i, p)| hash_arg(&format!("proof[{i}]"), p.as_ref()))
        .collect()
}

/// [`verify_inclusion`] on raw bytes from the wire: every hash must be 32
/// bytes, else [`VerifyError::HashLength`].
pub fn verify_inclusion_bytes<P: AsRef<[u8]>>(
    index: u64,
    size: u64,
    leaf: &[u8],
    proof: &[P],
    root: &[u8],
) -> Result<(), VerifyError> {
    if index >= size {
        return Err(VerifyError::IndexOutOfRange { index, size });
    }
    verify_inclusion(
        index,
        size,
        &hash_arg("leaf hash", leaf)?,
        &proof_arg(proof)?,
        &hash_arg("root", root)?,
    )
}

/// [`verify_consistency`] on raw bytes from the wire. For equal sizes the
/// roots are compared as bytes (as the transparency-dev/merkle verifier
/// does), so equal roots of any length pass.
pub fn verify_consistency_bytes<P: AsRef<[u8]>>(
    size1: u64,
    size2: u64,
    proof: &[P],
    root1: &[u8],
    root2: &[u8],
) -> Result<(), VerifyError> {
    if size2 < size1 {
        return Err(VerifyError::SizeOrder { size1, size2 });
    }
    if size1 == 0 {
        return Err(VerifyError::FromEmptyTree);
    }
    if size1 == size2 && proof.is_empty() {
        return if root1 == root2 {
            Ok(())
        } else {
            Err(VerifyError::EqualSizeRootsDiffer)
        };
    }
    verify_consistency(
        size1,
        size2,
        &proof_arg(proof)?,
        &hash_arg("root1", root1)?,
        &hash_arg("root2", root2)?,
    )
}

/// [`verify_subtree_inclusion`] on raw bytes from the wire.
pub fn verify_subtree_inclusion_bytes<P: AsRef<[u8]>>(
    index: u64,
    start: u64,
    end: u64,
    leaf: &[u8],
    proof: &[P],
    subtree_root: &[u8],
) -> Result<(), VerifyError> {
    check_subtree_index(index, start, end)?;
    verify_subtree_inclusion(
        index,
        start,
        end,
        &hash_arg("leaf hash", leaf)?,
        &proof_arg(proof)?,
        &hash_arg("subtree root", subtree_root)?,
    )
}

/// [`verify_subtree_consistency`] on raw bytes from the wire. As in
/// [`verify_consistency_bytes`], a subtree equal to the whole tree with an
/// empty proof compares the two roots as bytes; for the empty subtree the
/// tree root is not looked at.
pub fn verify_subtree_consistency_bytes<P: AsRef<[u8]>>(
    start: u64,
    end: u64,
    size: u64,
    proof: &[P],
    subtree_root: &[u8],
    root: &[u8],
) -> Result<(), VerifyError> {
    check_subtree_in_tree(start, end, size)?;
    if start == end {
        let ok = proof.is_empty() && subtree_root == empty_root().as_bytes();
        return if ok {
            Ok(())
        } else {
            Err(VerifyError::BadEmptySubtree)
        };
    }
    if start == 0 && end == size && proof.is_empty() {
        return if subtree_root == root {
            Ok(())
        } else {
            Err(VerifyError::EqualSizeRootsDiffer)
        };
    }
    verify_subtree_consistency(
        start,
        end,
        size,
        &proof_arg(proof)?,
        &hash_arg("subtree root", subtree_root)?,
        &hash_arg("root", root)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtree_validity() {
        assert!(is_valid_subtree(0, 0));
        assert!(is_valid_subtree(5, 5));
        assert!(is_valid_subtree(0, 7));
        assert!(is_valid_subtree(4, 7));
        assert!(is_valid_subtree(4, 8));
        assert!(!is_valid_subtree(2, 5));
        assert!(!is_valid_subtree(1, 3));
        assert!(!is_valid_subtree(3, 2));
        assert!(!is_valid_subtree(1, (1 << 63) + 2));
        assert!(is_valid_subtree(0, u64::MAX));
    }

    #[test]
    fn huge_sizes_do_not_panic() {
        let h = Hash::default();
        for (index, size) in [(0, u64::MAX), (u64::MAX - 1, u64::MAX), (1 << 63, u64::MAX)] {
            let _ = root_from_inclusion_proof(index, size, &h, &[h; 64]);
            let _ = root_from_inclusion_proof(index, size, &h, &[]);
        }
        for (s1, s2) in [
            (1, u64::MAX),
            (u64::MAX - 1, u64::MAX),
            (1 << 63, u64::MAX),
            (3, 1 << 63),
        ] {
            let _ = root_from_consistency_proof(s1, s2, &[h; 64], &h);
            let _ = root_from_consistency_proof(s1, s2, &[h; 3], &h);
        }
        let _ = root_from_subtree_consistency_proof(0, u64::MAX, u64::MAX, &[], &h);
        let _ = root_from_subtree_consistency_proof(1 << 62, 1 << 63, u64::MAX, &[h; 3], &h);
    }
}
