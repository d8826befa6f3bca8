//! RFC 6962 hashing: the [`Hash`] type, leaf and interior-node hashes, and the
//! Merkle Tree Hash (MTH) of any number of leaves.
//!
//! Everything else in the crate is built on [`leaf_hash`] and [`node_hash`]:
//! `leaf = SHA-256(0x00 ‖ entry)`, `node = SHA-256(0x01 ‖ left ‖ right)`, and
//! a tree of `n > 1` leaves splits at the largest power of two smaller than
//! `n` (RFC 6962 §2.1, RFC 9162 §2.1.1).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};

/// Length of a SHA-256 hash in bytes.
pub const HASH_LEN: usize = 32;

/// A SHA-256 hash: a leaf hash, an interior node hash or a tree root.
///
/// `Debug` and `Display` print lowercase hex; [`Hash::to_base64`] gives the
/// standard padded base64 used by checkpoints.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; HASH_LEN]);

/// A byte string that should have been a 32-byte hash but was not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// The input had the wrong number of bytes.
    #[error("a hash is {HASH_LEN} bytes, got {0} bytes")]
    Length(usize),
    /// The input was not standard padded base64.
    #[error("hash {0:?} is not standard padded base64")]
    Base64(String),
}

impl Hash {
    /// Builds a hash from a slice, which must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, HashError> {
        <[u8; HASH_LEN]>::try_from(bytes)
            .map(Hash)
            .map_err(|_| HashError::Length(bytes.len()))
    }

    /// Parses standard padded base64 (RFC 4648 §4) of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, HashError> {
        let bytes = BASE64
            .decode(text)
            .map_err(|_| HashError::Base64(text.to_owned()))?;
        Self::from_slice(&bytes)
    }

    /// Standard padded base64 of the 32 bytes.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }
}

impl AsRef<[u8]> for Hash {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<[u8; HASH_LEN]> for Hash {
    fn from(bytes: [u8; HASH_LEN]) -> Self {
        Hash(bytes)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

/// The root of the empty tree: `SHA-256("")` (RFC 6962 §2.1).
///
/// Beware: Go's `sumdb/tlog.TreeHash(0, …)` returns 32 zero bytes instead.
pub fn empty_root() -> Hash {
    Hash(Sha256::digest([]).into())
}

/// The leaf hash of an entry: `SHA-256(0x00 ‖ entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(entry);
    Hash(h.finalize().into())
}

/// The hash of an interior node: `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

/// The Merkle Tree Hash of a list of entries (hashes each entry first).
pub fn tree_hash<E: AsRef<[u8]>>(entries: &[E]) -> Hash {
    let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e.as_ref())).collect();
    root_from_leaf_hashes(&leaves)
}

/// The Merkle Tree Hash of a tree whose leaf hashes are given, for any number
/// of leaves (the empty list gives [`empty_root`]).
///
/// Runs in O(n) hashing and O(log n) extra memory, by appending to a
/// [`crate::CompactRange`].
pub fn root_from_leaf_hashes(leaves: &[Hash]) -> Hash {
    let mut range = crate::CompactRange::new(0);
    for leaf in leaves {
        range.append(*leaf);
    }
    // A range that starts at 0 is a tree: the right fold of its nodes
    // (largest first) is the RFC 6962 root.
    let mut nodes = range.hashes().iter().rev();
    let Some(last) = nodes.next() else {
        return empty_root();
    };
    nodes.fold(*last, |acc, h| node_hash(h, &acc))
}

/// The hash of a perfect subtree (2^k hashes at one level): pairs are hashed
/// level by level until one hash is left. Used for tile contents.
///
/// Returns `None` when `hashes` is empty or its length is not a power of two.
pub fn perfect_subtree_hash(hashes: &[Hash]) -> Option<Hash> {
    if hashes.is_empty() || !hashes.len().is_power_of_two() {
        return None;
    }
    let mut level: Vec<Hash> = hashes.to_vec();
    while level.len() > 1 {
        level = level
            .chunks_exact(2)
            .map(|pair| node_hash(&pair[0], &pair[1]))
            .collect();
    }
    level.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            empty_root().to_base64(),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn hash_from_wrong_length_is_an_error() {
        assert_eq!(Hash::from_slice(&[0; 31]), Err(HashError::Length(31)));
        assert!(Hash::from_base64("V3JvbmdMZWFm").is_err());
    }

    #[test]
    fn perfect_subtree_hash_rejects_non_powers_of_two() {
        assert_eq!(perfect_subtree_hash(&[]), None);
        assert_eq!(perfect_subtree_hash(&[Hash::default(); 3]), None);
        let h = leaf_hash(b"a");
        assert_eq!(perfect_subtree_hash(&[h]), Some(h));
        assert_eq!(perfect_subtree_hash(&[h, h]), Some(node_hash(&h, &h)));
    }
}
