//! FindCoordinator: a group's coordinator is the leader of its `__consumer_offsets`
//! partition (Kafka's hash of the group id; the topic is created on first use). Transaction
//! coordinators come with the transactions issue: TRANSACTION keys get
//! COORDINATOR_NOT_AVAILABLE (retriable). v4+ asks for several keys at once.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, ResponseKind};

use super::{code, str_bytes, Ctx};
use crate::engine::Engine;

/// FindCoordinator's key types.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// A coordinator as `(node, host, port)`, or the error and why.
type Found = Result<(i32, String, i32), (i16, String)>;

impl Engine {
    pub(crate) fn handle_find_coordinator(&mut self, ctx: &Ctx, req: FindCoordinatorRequest) -> ResponseKind {
        let keys: Vec<String> = if ctx.version >= 4 {
            req.coordinator_keys.iter().map(|k| k.to_string()).collect()
        } else {
            vec![req.key.to_string()]
        };
        let answers: Vec<(String, Found)> = keys
            .into_iter()
            .map(|key| {
                let answer = self.find_one(req.key_type, &key);
                (key, answer)
            })
            .collect();
        let mut r = FindCoordinatorResponse::default();
        if ctx.version >= 4 {
            r.coordinators = answers
                .into_iter()
                .map(|(key, answer)| {
                    let c = Coordinator::default().with_key(str_bytes(&key));
                    match answer {
                        Ok((node, host, port)) => c
                            .with_node_id(BrokerId(node))
                            .with_host(str_bytes(&host))
                            .with_port(port),
                        Err((error, why)) => c
                            .with_node_id(BrokerId(-1))
                            .with_host(str_bytes(""))
                            .with_port(-1)
                            .with_error_code(error)
                            .with_error_message(Some(str_bytes(&why))),
                    }
                })
                .collect();
        } else {
            match answers.into_iter().next().map(|(_, a)| a) {
                Some(Ok((node, host, port))) => {
                    r.node_id = BrokerId(node);
                    r.host = str_bytes(&host);
                    r.port = port;
                }
                Some(Err((error, why))) => {
                    r.error_code = error;
                    if ctx.version >= 1 {
                        r.error_message = Some(str_bytes(&why));
                    }
                    r.node_id = BrokerId(-1);
                    r.port = -1;
                }
                None => unreachable!("one key below v4"),
            }
        }
        ResponseKind::FindCoordinator(r)
    }

    fn find_one(&mut self, key_type: i8, key: &str) -> Found {
        match key_type {
            KEY_TYPE_GROUP => self.group_coordinator_of(key).map_err(|e| {
                (
                    e,
                    "the group's __consumer_offsets partition has no leader yet".into(),
                )
            }),
            KEY_TYPE_TRANSACTION => Err((
                code::COORDINATOR_NOT_AVAILABLE,
                "this broker has no transaction coordinator yet".into(),
            )),
            other => Err((
                code::INVALID_REQUEST,
                format!("unknown coordinator key type {other}"),
            )),
        }
    }
}
