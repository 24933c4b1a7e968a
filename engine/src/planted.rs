//! Planted bugs: known-bad behaviours the simulator must be able to catch.
//!
//! Each switch exists only when the crate is built with the `planted-bugs` feature; in any
//! other build every accessor returns `false` and the switches cannot be set, so no release
//! binary can carry them.

/// Which planted bugs are active (test-only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// Answer acks=1/all produces as soon as the append is written, before its fsync.
    #[cfg(feature = "planted-bugs")]
    pub ack_before_fsync: bool,
    /// Accept batches with a bad CRC while recovering a segment's tail.
    #[cfg(feature = "planted-bugs")]
    pub skip_recovery_crc: bool,
    /// Offset index lookups return the entry after the right one.
    #[cfg(feature = "planted-bugs")]
    pub index_off_by_one: bool,
}

impl PlantedBugs {
    pub fn ack_before_fsync(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.ack_before_fsync;
        #[cfg(not(feature = "planted-bugs"))]
        false
    }
    pub fn skip_recovery_crc(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.skip_recovery_crc;
        #[cfg(not(feature = "planted-bugs"))]
        false
    }
    pub fn index_off_by_one(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.index_off_by_one;
        #[cfg(not(feature = "planted-bugs"))]
        false
    }
}
