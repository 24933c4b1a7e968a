//! FindCoordinator: served, and honest about having no coordinators yet. Group and
//! transaction coordinators come with their own issues; until then every key gets
//! COORDINATOR_NOT_AVAILABLE (a retriable error). Advertising the API matters on its own:
//! librdkafka only enables LZ4 compression for brokers that advertise FindCoordinator.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, ResponseKind};

use super::{code, str_bytes, Ctx};
use crate::engine::Engine;

const WHY: &str = "this broker has no group or transaction coordinator yet";

impl Engine {
    pub(crate) fn handle_find_coordinator(&self, ctx: &Ctx, req: FindCoordinatorRequest) -> ResponseKind {
        let mut r = FindCoordinatorResponse::default();
        if ctx.version >= 4 {
            r.coordinators = req
                .coordinator_keys
                .into_iter()
                .map(|key| {
                    Coordinator::default()
                        .with_key(key)
                        .with_node_id(BrokerId(-1))
                        .with_host(str_bytes(""))
                        .with_port(-1)
                        .with_error_code(code::COORDINATOR_NOT_AVAILABLE)
                        .with_error_message(Some(str_bytes(WHY)))
                })
                .collect();
        } else {
            r.error_code = code::COORDINATOR_NOT_AVAILABLE;
            if ctx.version >= 1 {
                r.error_message = Some(str_bytes(WHY));
            }
            r.node_id = BrokerId(-1);
            r.port = -1;
        }
        ResponseKind::FindCoordinator(r)
    }
}
