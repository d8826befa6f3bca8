//! A stream's head: recent entries in memory, the newest in an open
//! buffer, older ones in compressed blocks.
//!
//! The open buffer keeps append order (entries may be out of order); it is
//! sorted when it is sealed into a block or read.

use std::sync::Arc;

use crate::block::{self, MemBlock};
use crate::{Entry, Options};

/// What a head holds; also what a flush freezes and writes.
#[derive(Debug, Default)]
pub struct HeadData {
    pub blocks: Vec<Arc<MemBlock>>,
    /// Entries not yet in a block, in append order.
    pub open: Vec<Entry>,
    /// Sum of the open entries' line lengths.
    pub open_bytes: usize,
}

impl HeadData {
    /// Adds entries; seals the open buffer into a block when it is full.
    /// Returns the line bytes added.
    pub fn push(&mut self, entries: &[Entry], opts: &Options) -> usize {
        let mut added = 0;
        for e in entries {
            self.open_bytes += e.line.len();
            added += e.line.len();
            self.open.push(e.clone());
            if self.open_bytes >= opts.block_bytes || self.open.len() >= opts.block_entries {
                self.seal(opts);
            }
        }
        added
    }

    /// Compresses the open buffer into a block (no-op when empty).
    pub fn seal(&mut self, opts: &Options) {
        if self.open.is_empty() {
            return;
        }
        let open = std::mem::take(&mut self.open);
        self.open_bytes = 0;
        let b = block::build(&open, opts.zstd_level, opts.bloom_bits_per_trigram);
        self.blocks.push(Arc::new(b));
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty() && self.open.is_empty()
    }

    /// Line bytes held (blocks and open buffer).
    pub fn line_bytes(&self) -> u64 {
        self.blocks.iter().map(|b| b.meta.line_bytes).sum::<u64>() + self.open_bytes as u64
    }
}
