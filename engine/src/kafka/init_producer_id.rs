//! InitProducerId (key 22) for idempotent producers: a fresh producer id with epoch 0 from
//! this node's block (`replica/producer_ids.rs`). A request that arrives while the node
//! waits for a block is parked until the block is applied, at most
//! [`INIT_PRODUCER_ID_WAIT_MS`], then answered COORDINATOR_LOAD_IN_PROGRESS, which clients
//! retry (librdkafka after 500 ms; the Java client's `RetriableException`).
//!
//! A request with a transactional id is answered UNSUPPORTED_VERSION: transactions are not
//! implemented, and both librdkafka and the Java client treat that code as fatal for
//! `init_transactions()` at once, instead of retrying forever as they would a coordinator
//! error. A request naming a producer id this cluster gave out and its epoch (KIP-360's
//! bump, v3+) gets the same id with the next epoch; when the epoch is exhausted, or the id
//! is unknown, a fresh id. (Kafka itself always gives an idempotent producer a fresh id.)

use std::collections::BTreeSet;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId, ResponseKind};

use super::{code, Ctx, PendingBody};
use crate::engine::Engine;

/// How long an InitProducerId waits for a block of producer ids.
pub const INIT_PRODUCER_ID_WAIT_MS: u64 = 5_000;

/// Requests waiting for a block (Kafka-layer request ids).
#[derive(Debug, Default)]
pub(crate) struct ProducerIdWaits {
    requests: BTreeSet<u64>,
}

impl ProducerIdWaits {
    pub fn retain(&mut self, f: impl Fn(u64) -> bool) {
        self.requests.retain(|&r| f(r));
    }
}

fn answer(error: i16, producer_id: i64, epoch: i16) -> ResponseKind {
    ResponseKind::InitProducerId(
        InitProducerIdResponse::default()
            .with_error_code(error)
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch),
    )
}

impl Engine {
    pub(crate) fn handle_init_producer_id(&mut self, ctx: Ctx, req: InitProducerIdRequest) {
        if req.transactional_id.is_some() {
            let body = answer(code::UNSUPPORTED_VERSION, -1, -1);
            self.respond(&ctx, body);
            return;
        }
        let (id, epoch) = (req.producer_id.0, req.producer_epoch);
        // Kafka moves to a new id when the epoch would reach i16::MAX.
        if id >= 0 && id < self.image.next_producer_id && (0..i16::MAX - 1).contains(&epoch) {
            self.respond(&ctx, answer(code::NONE, id, epoch + 1));
            return;
        }
        if let Some(id) = self.take_producer_id() {
            self.respond(&ctx, answer(code::NONE, id, 0));
            return;
        }
        let request = self.park(ctx, PendingBody::InitProducerId);
        self.kafka.producer_id_waits.requests.insert(request);
        let at = self.now.mono_ms + INIT_PRODUCER_ID_WAIT_MS;
        self.kafka.deadlines.insert((at, request));
    }

    /// A block arrived: answer the parked requests while ids last.
    pub(crate) fn init_producer_id_progress(&mut self) {
        while let Some(&request) = self.kafka.producer_id_waits.requests.iter().next() {
            let Some(id) = self.take_producer_id() else {
                return;
            };
            self.kafka.producer_id_waits.requests.remove(&request);
            self.finish(request, Some(answer(code::NONE, id, 0)));
        }
    }

    /// A parked request waited too long: the client retries.
    pub(crate) fn init_producer_id_deadline(&mut self, request: u64) {
        if self.kafka.producer_id_waits.requests.remove(&request) {
            self.finish(request, Some(answer(code::COORDINATOR_LOAD_IN_PROGRESS, -1, -1)));
        }
    }
}
