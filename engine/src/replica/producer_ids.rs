//! Producer ids for idempotent producers, unique across the cluster and across restarts
//! without a clock or randomness (Kafka KRaft's scheme): a broker asks the controller for a
//! block ([`Control::AllocateProducerIds`]); the controller appends a
//! [`MetaRecord::ProducerIds`] giving it the next [`PRODUCER_ID_BLOCK_SIZE`] ids; once the
//! broker's image applies that record it hands the ids out one by one.
//!
//! Invariants: blocks never overlap (the image accepts a block only at or past its
//! `next_producer_id`); a broker takes a block only from a record at or past the metadata
//! offset `after` it chose when it asked — one past everything its image had applied and
//! its log held — so a block it may have used before a restart (which its image applied,
//! so its log holds) is never taken again; ids a broker held when it stopped are lost, not
//! reused.

use super::Control;
use crate::cluster::{MetaRecord, NodeId};
use crate::engine::Engine;

/// Ids per block (Kafka's `ProducerIdManager` block size).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// A broker asks for its next block once fewer ids than this are left.
const PRODUCER_ID_LOW_WATER: i64 = 100;

#[derive(Debug, Default)]
pub(crate) struct ProducerIdAlloc {
    /// The unused ids of the current block: `[next, end)`.
    next: i64,
    end: i64,
    /// The metadata offset of the record the current block came from.
    taken_offset: Option<u64>,
    /// A block is asked for, from a record at or past this offset.
    asked_after: Option<u64>,
}

impl Engine {
    /// A producer id never given out before, or `None` while this node waits for a block
    /// (asked for here; [`Engine::producer_ids_progress`] takes it).
    pub(crate) fn take_producer_id(&mut self) -> Option<i64> {
        let a = &mut self.producer_ids;
        let id = (a.next < a.end).then(|| {
            a.next += 1;
            a.next - 1
        });
        assert!(a.next <= a.end || a.end == 0);
        if a.end - a.next < PRODUCER_ID_LOW_WATER {
            self.ask_producer_ids();
        }
        id
    }

    fn ask_producer_ids(&mut self) {
        if self.producer_ids.asked_after.is_none() {
            let log_end = self
                .meta_log
                .and_then(|id| self.logs.get(&id))
                .map_or(0, |l| l.log_end_offset());
            self.producer_ids.asked_after = Some(log_end.max(self.image.applied_end));
        }
        self.send_producer_ids_ask();
    }

    /// Sends the pending ask to the controller (on the controller: proposes the block).
    /// Resent every heartbeat interval until a block arrives.
    pub(crate) fn send_producer_ids_ask(&mut self) {
        let Some(after) = self.producer_ids.asked_after else {
            return;
        };
        let me = self.config.node_id;
        if self.is_controller() {
            self.grant_producer_ids(me, after);
            return;
        }
        if let Some(leader) = self.metadata_leader().filter(|&l| l != me) {
            self.outbox
                .entry(leader)
                .or_default()
                .control
                .push(Control::AllocateProducerIds { after });
        }
    }

    /// On the controller: gives `broker` a block unless its image already shows one from
    /// at or past `after`, or one is in flight for it.
    pub(crate) fn grant_producer_ids(&mut self, broker: NodeId, after: u64) {
        if self
            .image
            .producer_blocks
            .get(&broker)
            .is_some_and(|b| b.offset >= after)
        {
            return;
        }
        let term = self.metadata_term();
        self.controller.proposed.keep_term(term);
        let mut start = self.image.next_producer_id;
        let mut pending = false;
        for r in self.controller.proposed.iter() {
            if let MetaRecord::ProducerIds { broker: b, end, .. } = r {
                // Blocks in flight come first: this one follows them.
                start = start.max(*end);
                pending |= *b == broker;
            }
        }
        if pending {
            return;
        }
        let end = start.saturating_add(PRODUCER_ID_BLOCK_SIZE);
        tracing::debug!(broker, start, end, "granting producer ids");
        self.propose(vec![MetaRecord::ProducerIds {
            broker,
            start,
            end,
            after,
        }]);
    }

    /// The image changed: take the block the controller gave this node for its ask.
    pub(crate) fn producer_ids_progress(&mut self) {
        let me = self.config.node_id;
        let Some(after) = self.producer_ids.asked_after else {
            return;
        };
        let Some(block) = self.image.producer_blocks.get(&me).copied() else {
            return;
        };
        let a = &mut self.producer_ids;
        if block.offset < after || a.taken_offset.is_some_and(|t| t >= block.offset) {
            return;
        }
        assert!(block.start < block.end && block.start >= a.end);
        a.next = block.start;
        a.end = block.end;
        a.taken_offset = Some(block.offset);
        a.asked_after = None;
        tracing::info!(start = block.start, end = block.end, "producer id block taken");
        self.init_producer_id_progress();
    }
}
