//! Byte-level helpers of the WAL, block and segment formats: `diskio::enc` (LEB128 varints,
//! zigzag, length-prefixed strings, a bounds-checked reader), shared with the other stores.

pub use diskio::enc::*;
