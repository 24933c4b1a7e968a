//! Partition logs: segments, indexes, recovery.
pub mod index;
