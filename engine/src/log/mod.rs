//! Partition logs: segments, indexes, the tail cache, reads and recovery.
pub mod epochs;
pub mod index;
pub mod partition;
#[cfg(test)]
mod partition_tests;
pub mod producers;
pub mod read;
pub mod recovery;
pub mod segment;
pub mod stored;
pub mod tail;
