//! The audit log (placeholder root; the storage half is being written).
pub mod event;
pub use event::*;
