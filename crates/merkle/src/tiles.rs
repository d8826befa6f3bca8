//! C2SP tlog-tiles math: which tiles and entry bundles exist at a tree size,
//! their paths, which hash tile holds a node, tile contents built from leaf
//! hashes, and the length-prefixed entry-bundle encoding.
//!
//! Layout (c2sp.org/tlog-tiles, tile height 8, no height in the path):
//! level-`L` hash tiles hold the hashes of nodes at tree level `8·L`, 256 to
//! a full tile (`tile/<L>/<N>`, 8192 bytes) and fewer in a partial tile
//! (`tile/<L>/<N>.p/<W>`). A tree of size `s` has `⌊s / 256^L⌋` hashes at
//! level `L`. Entry bundles mirror level 0 (`tile/entries/<N>[.p/<W>]`),
//! each entry as a big-endian u16 length and the bytes. `<N>` is written in
//! groups of three digits, all but the last prefixed with `x`:
//! 1234067 → `x001/x234/067`.
//!
//! This module only computes names and bytes; reading and writing them is
//! the storage layer's job.

use std::collections::HashMap;

use crate::hash::{HASH_LEN, Hash, perfect_subtree_hash};
use crate::node::{NodeId, NodeSource};

/// Tree levels per tile.
pub const TILE_HEIGHT: u32 = 8;
/// Hashes (or entries) in a full tile.
pub const TILE_WIDTH: u64 = 256;
/// Largest entry an entry bundle can hold (u16 length prefix).
pub const MAX_ENTRY_LEN: usize = u16::MAX as usize;
/// Highest tile level a path may name (tree levels stay below 64).
pub const MAX_TILE_LEVEL: u8 = 7;

/// Why a tile path, tile or bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    /// The path is not a tlog-tiles path in canonical form.
    #[error("{path:?} is not a tlog-tiles path: {reason}")]
    BadPath {
        /// The path given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A tile width outside 1..=256.
    #[error("tile width {0} is outside 1..=256")]
    BadWidth(u64),
    /// A tile level above [`MAX_TILE_LEVEL`].
    #[error("tile level {0} is above {MAX_TILE_LEVEL}")]
    BadLevel(u8),
    /// Tile data whose length is not the width times 32 bytes.
    #[error("tile {path} must be {want} bytes, got {got}")]
    TileLength {
        /// The tile's path.
        path: String,
        /// Bytes expected.
        want: usize,
        /// Bytes given.
        got: usize,
    },
    /// Tile data that does not hold the hashes a node needs.
    #[error("node (level {}, index {}) is not in tile {path}", .node.level, .node.index)]
    NodeNotInTile {
        /// The node asked for.
        node: NodeId,
        /// The tile given.
        path: String,
    },
    /// The node is not complete at this tree size, so no tile holds it.
    #[error("node (level {}, index {}) is not complete in a tree of size {size}", .node.level, .node.index)]
    NodeNotInTree {
        /// The node asked for.
        node: NodeId,
        /// The tree size.
        size: u64,
    },
    /// An entry longer than 65535 bytes.
    #[error("entry {index} is {len} bytes; entry bundles hold at most 65535 bytes per entry")]
    EntryTooLong {
        /// Position in the bundle.
        index: usize,
        /// Its length.
        len: usize,
    },
    /// More than 256 entries for one bundle.
    #[error("{0} entries do not fit one bundle of at most 256")]
    TooManyEntries(usize),
    /// A bundle that ends inside a length prefix or an entry.
    #[error("entry bundle truncated in entry {index} at byte {offset}")]
    TruncatedBundle {
        /// Entry being read.
        index: usize,
        /// Byte offset where it started.
        offset: usize,
    },
}

/// A hash tile: tile level, index within the level, and width (256 = full).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    level: u8,
    index: u64,
    width: u16,
}

impl TileId {
    /// A tile; `width` must be 1..=256 and `level` at most [`MAX_TILE_LEVEL`].
    pub fn new(level: u8, index: u64, width: u64) -> Result<Self, TileError> {
        if level > MAX_TILE_LEVEL {
            return Err(TileError::BadLevel(level));
        }
        if !(1..=TILE_WIDTH).contains(&width) {
            return Err(TileError::BadWidth(width));
        }
        Ok(TileId {
            level,
            index,
            width: width as u16,
        })
    }

    /// Tile level (tree level / 8).
    pub fn level(&self) -> u8 {
        self.level
    }

    /// Index of the tile within its level.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Number of hashes (256 for a full tile).
    pub fn width(&self) -> u64 {
        u64::from(self.width)
    }

    /// Whether the tile holds 256 hashes.
    pub fn is_full(&self) -> bool {
        u64::from(self.width) == TILE_WIDTH
    }

    /// Expected byte length of the tile's data.
    pub fn byte_len(&self) -> usize {
        usize::from(self.width) * HASH_LEN
    }

    /// The path relative to the log prefix, e.g. `tile/1/x001/234.p/17`.
    pub fn path(&self) -> String {
        format!(
            "tile/{}/{}{}",
            self.level,
            encode_index(self.index),
            partial_suffix(self.width())
        )
    }

    /// The node `(8·level, index·256 + i)` for the i-th hash of the tile;
    /// `None` if `i` is not below the width or the index overflows.
    pub fn node(&self, i: u64) -> Option<NodeId> {
        if i >= self.width() {
            return None;
        }
        let index = self.index.checked_mul(TILE_WIDTH)?.checked_add(i)?;
        Some(NodeId::new(self.level * TILE_HEIGHT as u8, index))
    }
}

/// An entry bundle: index within level 0 and width (256 = full).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BundleId {
    index: u64,
    width: u16,
}

impl BundleId {
    /// A bundle; `width` must be 1..=256.
    pub fn new(index: u64, width: u64) -> Result<Self, TileError> {
        if !(1..=TILE_WIDTH).contains(&width) {
            return Err(TileError::BadWidth(width));
        }
        Ok(BundleId {
            index,
            width: width as u16,
        })
    }

    /// Index of the bundle.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Number of entries (256 for a full bundle).
    pub fn width(&self) -> u64 {
        u64::from(self.width)
    }

    /// Whether the bundle holds 256 entries.
    pub fn is_full(&self) -> bool {
        u64::from(self.width) == TILE_WIDTH
    }

    /// First leaf index in the bundle.
    pub fn first_leaf(&self) -> u64 {
        self.index.saturating_mul(TILE_WIDTH)
    }

    /// The path relative to the log prefix, e.g. `tile/entries/x001/234`.
    pub fn path(&self) -> String {
        format!(
            "tile/entries/{}{}",
            encode_index(self.index),
            partial_suffix(self.width())
        )
    }
}

fn partial_suffix(width: u64) -> String {
    if width == TILE_WIDTH {
        String::new()
    } else {
        format!(".p/{width}")
    }
}

/// A parsed tlog-tiles resource path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TilePath {
    /// `tile/<L>/<N>[.p/<W>]`.
    Hash(TileId),
    /// `tile/entries/<N>[.p/<W>]`.
    Entries(BundleId),
}

/// Writes a tile index in the tlog-tiles form: groups of three digits, all
/// but the last prefixed with `x` (5 → `005`, 1234067 → `x001/x234/067`).
pub fn encode_index(n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    let mut rest = n / 1000;
    while rest > 0 {
        groups.push(format!("x{:03}", rest % 1000));
        rest /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

/// Parses a path relative to the log prefix; only the canonical spelling
/// (the one [`TileId::path`] / [`BundleId::path`] write) is accepted.
pub fn parse_tile_path(path: &str) -> Result<TilePath, TileError> {
    let bad = |reason| TileError::BadPath {
        path: path.to_owned(),
        reason,
    };
    if path.len() > 100 {
        return Err(bad("too long"));
    }
    let rest = path
        .strip_prefix("tile/")
        .ok_or(bad("must start with tile/"))?;
    let (kind, rest) = rest.split_once('/').ok_or(bad("missing index"))?;
    let (index_part, width) = match rest.split_once(".p/") {
        Some((idx, w)) => {
            let width = parse_decimal(w).ok_or(bad("partial width is not a decimal number"))?;
            if width == 0 || width >= TILE_WIDTH {
                return Err(bad("partial width must be 1..=255"));
            }
            (idx, width)
        }
        None => (rest, TILE_WIDTH),
    };
    let mut index: u64 = 0;
    let groups: Vec<&str> = index_part.split('/').collect();
    for (i, g) in groups.iter().enumerate() {
        let last = i + 1 == groups.len();
        let digits = if last {
            *g
        } else {
            g.strip_prefix('x')
                .ok_or(bad("index groups before the last need an x prefix"))?
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("index groups are three digits"));
        }
        let v = u64::from(digits.parse::<u16>().map_err(|_| bad("bad digits"))?);
        index = index
            .checked_mul(1000)
            .and_then(|x| x.checked_add(v))
            .ok_or(bad("index overflows 64 bits"))?;
    }
    if encode_index(index) != index_part {
        return Err(bad("index is not in canonical form (leading zero groups)"));
    }
    if kind == "entries" {
        return Ok(TilePath::Entries(BundleId::new(index, width)?));
    }
    let level = parse_decimal(kind).ok_or(bad("level is not a decimal number"))?;
    if level > u64::from(MAX_TILE_LEVEL) {
        return Err(bad("level too high"));
    }
    Ok(TilePath::Hash(TileId::new(level as u8, index, width)?))
}

/// A decimal number without sign or leading zeros.
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// Number of hashes at tile level `level` for a tree of `size` leaves.
fn hashes_at_level(size: u64, level: u8) -> u64 {
    size.checked_shr(TILE_HEIGHT * u32::from(level))
        .unwrap_or(0)
}

/// The hash tiles that change when the tree grows from `old` to `new` leaves
/// (all of them for `old == 0`), level by level, full tiles before the
/// partial one. Partial tiles of `old` are not listed: they stay valid files.
pub fn changed_tiles(old: u64, new: u64) -> Vec<TileId> {
    let mut out = Vec::new();
    for level in 0..=MAX_TILE_LEVEL {
        let new_n = hashes_at_level(new, level);
        if new_n == 0 {
            break;
        }
        let old_n = hashes_at_level(old.min(new), level);
        if old_n == new_n {
            continue;
        }
        for index in old_n / TILE_WIDTH..new_n / TILE_WIDTH {
            out.push(TileId {
                level,
                index,
                width: TILE_WIDTH as u16,
            });
        }
        let w = new_n % TILE_WIDTH;
        if w > 0 {
            out.push(TileId {
                level,
                index: new_n / TILE_WIDTH,
                width: w as u16,
            });
        }
    }
    out
}

/// Every hash tile a log of `size` leaves serves (none for 0).
pub fn tiles_for_size(size: u64) -> Vec<TileId> {
    changed_tiles(0, size)
}

/// The entry bundles that change when the tree grows from `old` to `new`.
pub fn changed_bundles(old: u64, new: u64) -> Vec<BundleId> {
    changed_tiles(old, new)
        .into_iter()
        .filter(|t| t.level == 0)
        .map(|t| BundleId {
            index: t.index,
            width: t.width,
        })
        .collect()
}

/// Every entry bundle a log of `size` leaves serves.
pub fn bundles_for_size(size: u64) -> Vec<BundleId> {
    changed_bundles(0, size)
}

/// Where a node lives in the hash tiles: which tile, and which run of its
/// hashes to combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSlot {
    /// The tile, with the width it has at the tree size asked for.
    pub tile: TileId,
    /// Position of the first hash in the tile.
    pub first: u64,
    /// Number of hashes: `2^(level mod 8)`, so 1 for a node stored as such.
    pub count: u64,
}

/// Which stored hash tile holds node `node` in a tree of `size` leaves, and
/// which of its hashes make the node: a node at tree level `l` is the
/// perfect subtree over `2^(l mod 8)` hashes of tile level `⌊l / 8⌋`.
///
/// Fails when the node is not complete at `size` (right-edge nodes are not
/// stored; [`crate::inclusion_proof`] never asks for them).
pub fn node_slot(node: NodeId, size: u64) -> Result<NodeSlot, TileError> {
    let not_in_tree = TileError::NodeNotInTree { node, size };
    let end = node.end().ok_or(not_in_tree.clone())?;
    if end > size || node.level > 63 {
        return Err(not_in_tree);
    }
    let tile_level = node.level / TILE_HEIGHT as u8;
    let sub = u32::from(node.level) % TILE_HEIGHT;
    let first_in_row = node.index << sub; // cannot overflow: end fits in u64
    let tile_index = first_in_row / TILE_WIDTH;
    let hashes = hashes_at_level(size, tile_level);
    let width = (hashes - tile_index * TILE_WIDTH).min(TILE_WIDTH);
    Ok(NodeSlot {
        tile: TileId {
            level: tile_level,
            index: tile_index,
            width: width as u16,
        },
        first: first_in_row % TILE_WIDTH,
        count: 1u64 << sub,
    })
}

/// Splits tile data into its hashes; the length must be `tile.width() × 32`.
pub fn tile_hashes(tile: &TileId, data: &[u8]) -> Result<Vec<Hash>, TileError> {
    if data.len() != tile.byte_len() {
        return Err(TileError::TileLength {
            path: tile.path(),
            want: tile.byte_len(),
            got: data.len(),
        });
    }
    Ok(data
        .chunks_exact(HASH_LEN)
        .filter_map(|c| Hash::from_slice(c).ok())
        .collect())
}

/// The hash of the node a [`NodeSlot`] describes, from that tile's data.
/// The data may be of a wider tile than the slot's (any width that covers it).
pub fn node_from_tile(node: NodeId, slot: &NodeSlot, data: &[u8]) -> Result<Hash, TileError> {
    let from = usize::try_from(slot.first).unwrap_or(usize::MAX) * HASH_LEN;
    let to = from.saturating_add(usize::try_from(slot.count).unwrap_or(usize::MAX) * HASH_LEN);
    let not_there = || TileError::NodeNotInTile {
        node,
        path: slot.tile.path(),
    };
    if !data.len().is_multiple_of(HASH_LEN) {
        return Err(TileError::TileLength {
            path: slot.tile.path(),
            want: slot.tile.byte_len(),
            got: data.len(),
        });
    }
    let bytes = data.get(from..to).ok_or_else(not_there)?;
    let hashes: Vec<Hash> = bytes
        .chunks_exact(HASH_LEN)
        .filter_map(|c| Hash::from_slice(c).ok())
        .collect();
    perfect_subtree_hash(&hashes).ok_or_else(not_there)
}

/// Concatenates hashes into tile bytes.
pub fn encode_tile(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.0).collect()
}

/// Every hash tile of the tree with these leaf hashes, with its exact bytes,
/// level by level in index order (what [`tiles_for_size`] lists).
pub fn build_tiles(leaf_hashes: &[Hash]) -> Vec<(TileId, Vec<u8>)> {
    let mut out = Vec::new();
    let mut row: Vec<Hash> = leaf_hashes.to_vec();
    let mut level: u8 = 0;
    while !row.is_empty() && level <= MAX_TILE_LEVEL {
        let mut next = Vec::with_capacity(row.len() / TILE_WIDTH as usize);
        for (index, chunk) in row.chunks(TILE_WIDTH as usize).enumerate() {
            out.push((
                TileId {
                    level,
                    index: index as u64,
                    width: chunk.len() as u16,
                },
                encode_tile(chunk),
            ));
            if chunk.len() as u64 == TILE_WIDTH
                && let Some(h) = perfect_subtree_hash(chunk)
            {
                next.push(h);
            }
        }
        row = next;
        level += 1;
    }
    out
}

/// Encodes an entry bundle: each entry as a big-endian u16 length and bytes.
pub fn encode_entry_bundle<E: AsRef<[u8]>>(entries: &[E]) -> Result<Vec<u8>, TileError> {
    if entries.len() as u64 > TILE_WIDTH {
        return Err(TileError::TooManyEntries(entries.len()));
    }
    let mut out = Vec::new();
    for (index, e) in entries.iter().enumerate() {
        let e = e.as_ref();
        let len = u16::try_from(e.len()).map_err(|_| TileError::EntryTooLong {
            index,
            len: e.len(),
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(e);
    }
    Ok(out)
}

/// Decodes an entry bundle into its entries (borrowing from `data`).
pub fn decode_entry_bundle(data: &[u8]) -> Result<Vec<&[u8]>, TileError> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let offset = data.len() - rest.len();
        let truncated = TileError::TruncatedBundle {
            index: out.len(),
            offset,
        };
        let (len, tail) = rest.split_first_chunk::<2>().ok_or(truncated.clone())?;
        let len = usize::from(u16::from_be_bytes(*len));
        let entry = tail.get(..len).ok_or(truncated)?;
        out.push(entry);
        rest = &tail[len..];
        if out.len() as u64 > TILE_WIDTH {
            return Err(TileError::TooManyEntries(out.len()));
        }
    }
    Ok(out)
}

/// A [`NodeSource`] that answers from hash tiles fetched by a closure, for a
/// tree of a fixed size: the bridge from tile storage to proof generation.
/// Fetched tiles are cached for the life of the value.
pub struct TileNodes<F> {
    size: u64,
    fetch: F,
    cache: HashMap<TileId, Vec<u8>>,
}

/// Why [`TileNodes`] could not produce a node hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileSourceError<E> {
    /// The fetch closure failed.
    #[error("fetching a tile: {0}")]
    Fetch(#[source] E),
    /// The tile was missing the node or had the wrong length.
    #[error(transparent)]
    Tile(TileError),
}

impl<F, E> TileNodes<F>
where
    F: FnMut(TileId) -> Result<Vec<u8>, E>,
{
    /// Serves nodes of the tree of `size` leaves from tiles `fetch` returns.
    /// `fetch` receives the tile with the width it has at `size` and must
    /// return exactly that tile's bytes.
    pub fn new(size: u64, fetch: F) -> Self {
        TileNodes {
            size,
            fetch,
            cache: HashMap::new(),
        }
    }
}

impl<F, E> NodeSource for TileNodes<F>
where
    F: FnMut(TileId) -> Result<Vec<u8>, E>,
{
    type Error = TileSourceError<E>;

    fn node_hash(&mut self, id: NodeId) -> Result<Hash, Self::Error> {
        let slot = node_slot(id, self.size).map_err(TileSourceError::Tile)?;
        if !self.cache.contains_key(&slot.tile) {
            let data = (self.fetch)(slot.tile).map_err(TileSourceError::Fetch)?;
            if data.len() != slot.tile.byte_len() {
                return Err(TileSourceError::Tile(TileError::TileLength {
                    path: slot.tile.path(),
                    want: slot.tile.byte_len(),
                    got: data.len(),
                }));
            }
            self.cache.insert(slot.tile, data);
        }
        let data = self.cache.get(&slot.tile).map(Vec::as_slice).unwrap_or(&[]);
        node_from_tile(id, &slot, data).map_err(TileSourceError::Tile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_encoding() {
        assert_eq!(encode_index(5), "005");
        assert_eq!(encode_index(1234), "x001/234");
        assert_eq!(encode_index(1234067), "x001/x234/067");
        assert_eq!(encode_index(u64::MAX), "x018/x446/x744/x073/x709/x551/615");
    }

    #[test]
    fn paths_round_trip_and_reject_non_canonical() {
        for p in [
            "tile/0/000",
            "tile/1/x001/234.p/17",
            "tile/entries/x001/x234/067.p/1",
            "tile/7/x018/x446/x744/x073/x709/x551/615",
        ] {
            let parsed = parse_tile_path(p).unwrap();
            let back = match parsed {
                TilePath::Hash(t) => t.path(),
                TilePath::Entries(b) => b.path(),
            };
            assert_eq!(back, p);
        }
        for p in [
            "tile/0/0",
            "tile/0/x000/001",
            "tile/00/000",
            "tile/8/000",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/007",
            "tile/0/001/002",
            "tile/0/x018/x446/x744/x073/x709/x551/616",
            "tile/data/000",
            "tiles/0/000",
            "tile/0/",
            "tile/-1/000",
            "tile/0/+01",
        ] {
            assert!(parse_tile_path(p).is_err(), "{p}");
        }
    }

    #[test]
    fn tiles_for_70000_match_the_spec_example() {
        let tiles = tiles_for_size(70000);
        let paths: Vec<String> = tiles.iter().skip(273).map(TileId::path).collect();
        assert_eq!(
            paths,
            [
                "tile/0/273.p/112",
                "tile/1/000",
                "tile/1/001.p/17",
                "tile/2/000.p/1"
            ]
        );
    }

    #[test]
    fn node_slots() {
        let s = node_slot(NodeId::new(8, 3), 70000).unwrap();
        assert_eq!(
            (s.tile.path(), s.first, s.count),
            ("tile/1/000".to_owned(), 3, 1)
        );
        let s = node_slot(NodeId::new(3, 5), 70000).unwrap();
        assert_eq!(
            (s.tile.path(), s.first, s.count),
            ("tile/0/000".to_owned(), 40, 8)
        );
        let s = node_slot(NodeId::new(0, 69999), 70000).unwrap();
        assert_eq!(s.tile.path(), "tile/0/273.p/112");
        assert!(node_slot(NodeId::new(0, 70000), 70000).is_err());
        assert!(node_slot(NodeId::new(63, 1), u64::MAX).is_err());
    }

    #[test]
    fn bundles_round_trip_and_reject_truncation() {
        let b = encode_entry_bundle(&[&b"leaf-0"[..], b"", b"x"]).unwrap();
        assert_eq!(&b[..8], b"\x00\x06leaf-0");
        assert_eq!(
            decode_entry_bundle(&b).unwrap(),
            vec![&b"leaf-0"[..], b"", b"x"]
        );
        assert!(decode_entry_bundle(&b[..b.len() - 1]).is_err());
        assert!(decode_entry_bundle(&[0]).is_err());
        assert!(encode_entry_bundle(&[vec![0u8; 65536]]).is_err());
    }
}
