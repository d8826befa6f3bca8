//! Byte-level helpers of the WAL, chunk and block formats: `diskio::enc` (LEB128 varints,
//! zigzag, length-prefixed strings, a bounds-checked reader), shared with the other stores.

pub use diskio::enc::*;
