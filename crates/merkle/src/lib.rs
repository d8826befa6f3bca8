//! `merkle`: the pure mathematics of Flightdeck's verifiable audit log.
//!
//! - [`hash`]: RFC 6962 leaf / node hashes and the Merkle tree hash of any
//!   number of leaves;
//! - [`compact`]: compact ranges, to append leaves and get roots without the
//!   whole tree, and to merge adjacent ranges;
//! - [`proof`]: inclusion and consistency proofs (RFC 6962 / RFC 9162) and the
//!   subtree proofs of Merkle Tree Certificates — generated through a
//!   [`NodeSource`] ("give me node (level, index)"), verified without panics;
//! - [`tiles`]: C2SP tlog-tiles names and contents (hash tiles, entry
//!   bundles, which tile holds a node) and [`TileNodes`], which serves proof
//!   generation from tiles;
//! - [`checkpoint`] and [`note`]: C2SP tlog-checkpoint bodies and C2SP
//!   signed-note with Ed25519 (key IDs, verifier / signer key strings);
//! - [`tlog_proof`]: the C2SP tlog-proof text (index, inclusion proof,
//!   checkpoint, extra data), the shape of offline-verifiable receipts.
//! - [`cosignature`]: C2SP tlog-cosignature, the Ed25519 `cosignature/v1`
//!   lines witnesses add to a checkpoint (key type 0x04, timestamped).
//!
//! What it is *not*: no I/O (it never opens a file or a socket, and takes
//! randomness for keys from the caller), no async, no JSON, no clock. It does
//! not store tiles, decide when to checkpoint, or know what an audit event
//! is: that is the `audit` crate, which feeds bytes in and writes bytes out.
//! The invariant "`merkle` depends on neither tokio nor serde_json" is
//! checked in CI with `cargo tree -e normal -p merkle -i <crate>`.

pub mod checkpoint;
pub mod compact;
pub mod cosignature;
pub mod hash;
pub mod node;
pub mod note;
pub mod proof;
pub mod tiles;
pub mod tlog_proof;

pub use checkpoint::{Checkpoint, CheckpointError, MAX_TREE_SIZE, open_checkpoint};
pub use compact::{CompactRange, RangeError};
pub use cosignature::{
    ALG_COSIGNATURE_V1, CosignError, Cosignature, CosignatureSigner, CosignatureVerifier,
    verify_cosignatures,
};
pub use hash::{
    HASH_LEN, Hash, HashError, empty_root, leaf_hash, node_hash, perfect_subtree_hash,
    root_from_leaf_hashes, tree_hash,
};
pub use node::{MemoryTree, MissingNode, NodeId, NodeSource, range_nodes};
pub use note::{
    KeyError, Note, NoteError, NoteSignature, OpenedNote, SignerKey, VerifierKey, Verifiers, key_id,
};
pub use proof::{
    ProveError, RootKind, VerifyError, consistency_proof, inclusion_proof, is_valid_subtree,
    root_at, root_from_consistency_proof, root_from_inclusion_proof, subtree_consistency_proof,
    subtree_hash, subtree_inclusion_proof, verify_consistency, verify_consistency_bytes,
    verify_inclusion, verify_inclusion_bytes, verify_subtree_consistency,
    verify_subtree_consistency_bytes, verify_subtree_inclusion, verify_subtree_inclusion_bytes,
};
pub use tiles::{BundleId, TileError, TileId, TileNodes, TilePath, TileSourceError};
pub use tlog_proof::{TlogProof, TlogProofError};
