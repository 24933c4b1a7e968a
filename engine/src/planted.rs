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
    /// Raft: release a vote (or term change) before it is persisted.
    #[cfg(feature = "planted-bugs")]
    pub vote_without_persist: bool,
    /// Raft: a follower acknowledges entries it has written but not fsynced.
    #[cfg(feature = "planted-bugs")]
    pub follower_ack_before_fsync: bool,
    /// Raft: the leader advances the high watermark on a minority (itself).
    #[cfg(feature = "planted-bugs")]
    pub commit_on_minority: bool,
    /// Raft: a follower appends over a divergent suffix without truncating it.
    #[cfg(feature = "planted-bugs")]
    pub skip_truncation: bool,
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
    pub fn vote_without_persist(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.vote_without_persist;
        #[cfg(not(feature = "planted-bugs"))]
        false
    }
    pub fn follower_ack_before_fsync(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.follower_ack_before_fsync;
        #[cfg(not(feature = "planted-bugs"))]
        false
    }
    pub fn commit_on_minority(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.commit_on_minority;
        #[cfg(not(feature = "planted-bugs"))]
        false
    }
    pub fn skip_truncation(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.skip_truncation;
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
