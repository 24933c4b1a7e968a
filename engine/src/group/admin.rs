//! Group administration: DescribeGroups, ListGroups (with the v4 state and v5 type
//! filters) and DeleteGroups (answered once every partition's tombstones are committed).
//!
//! Invariant: a DeleteGroups request is answered exactly once, when the last of its
//! appends settles (acknowledged, failed, or abandoned by an unload).

use std::collections::BTreeMap;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, GroupId,
    ListGroupsRequest, ListGroupsResponse, ResponseKind,
};

use super::classic::{ClassicGroup, GroupState, TopicPartition};
use super::coordinator::{PendingDelete, Purpose, Shard};
use super::records::{encode_group_key, encode_offset_key};
use super::respond::sb;
use super::{code, GroupCoordinator, OffsetsRecord, RequestCtx};
use crate::Time;

/// The only group type this coordinator has (ListGroups v5's `group_type`).
const GROUP_TYPE: &str = "classic";

impl GroupCoordinator {
    pub(super) fn describe_groups(&mut self, ctx: &RequestCtx, req: DescribeGroupsRequest) {
        let mut r = DescribeGroupsResponse::default();
        r.groups = req
            .groups
            .iter()
            .map(|id| self.describe_group(id, ctx.version))
            .collect();
        self.io.respond(ctx.waiter, ResponseKind::DescribeGroups(r));
    }

    fn describe_group(&self, id: &GroupId, version: i16) -> DescribedGroup {
        let mut d = DescribedGroup::default();
        d.group_id = id.clone();
        let group_id = id.as_str();
        let routed = if group_id.is_empty() {
            Err(code::INVALID_GROUP_ID)
        } else {
            self.route(group_id)
        };
        if let Err(e) = routed {
            d.error_code = e;
            return d;
        }
        let group = match self.shards.get(&self.partition_for(group_id)) {
            Some(Shard::Active(s)) => s.groups.get(group_id).filter(|g| !g.is(GroupState::Dead)),
            _ => None,
        };
        let Some(g) = group else {
            d.group_state = sb(GroupState::Dead.as_str());
            if version >= 6 {
                d.error_code = code::GROUP_ID_NOT_FOUND;
                d.error_message = Some(sb(&format!("Group {group_id} not found.")));
            }
            return d;
        };
        d.group_state = sb(g.state.as_str());
        d.protocol_type = sb(g.protocol_type.as_deref().unwrap_or(""));
        // Member metadata and the protocol only once the generation is settled.
        let stable = g.is(GroupState::Stable);
        let protocol = g.protocol_name.as_deref().unwrap_or("");
        if stable {
            d.protocol_data = sb(protocol);
        }
        d.members = g
            .members
            .values()
            .map(|m| {
                let mut dm = DescribedGroupMember::default();
                dm.member_id = sb(&m.id);
                dm.group_instance_id = m.instance_id.as_deref().map(sb);
                dm.client_id = sb(&m.client_id);
                dm.client_host = sb(&m.client_host);
                dm.member_assignment = m.assignment.clone();
                if stable {
                    dm.member_metadata = m.metadata(protocol).cloned().unwrap_or_default();
                }
                dm
            })
            .collect();
        d
    }

    pub(super) fn list_groups(&mut self, ctx: &RequestCtx, req: ListGroupsRequest) {
        let states: Vec<String> = if ctx.version >= 4 {
            req.states_filter
                .iter()
                .map(|s| s.trim().to_lowercase())
                .collect()
        } else {
            Vec::new()
        };
        let types_ok = ctx.version < 5
            || req.types_filter.is_empty()
            || req
                .types_filter
                .iter()
                .any(|t| t.trim().eq_ignore_ascii_case(GROUP_TYPE));
        let mut r = ListGroupsResponse::default();
        for shard in self.shards.values() {
            let groups = match shard {
                Shard::Loading => {
                    r.error_code = code::COORDINATOR_LOAD_IN_PROGRESS;
                    continue;
                }
                Shard::Active(s) => &s.groups,
            };
            if !types_ok {
                continue;
            }
            for g in groups.values().filter(|g| !g.is(GroupState::Dead)) {
                let state = g.state.as_str();
                if !states.is_empty() && !states.contains(&state.to_lowercase()) {
                    continue;
                }
                let mut lg = ListedGroup::default();
                lg.group_id = GroupId(sb(&g.id));
                lg.protocol_type = sb(g.protocol_type.as_deref().unwrap_or(""));
                if ctx.version >= 4 {
                    lg.group_state = sb(state);
                }
                if ctx.version >= 5 {
                    lg.group_type = sb(GROUP_TYPE);
                }
                r.groups.push(lg);
            }
        }
        r.groups
            .sort_by(|a, b| a.group_id.as_str().cmp(b.group_id.as_str()));
        self.io.respond(ctx.waiter, ResponseKind::ListGroups(r));
    }

    pub(super) fn delete_groups(&mut self, now: Time, ctx: &RequestCtx, req: DeleteGroupsRequest) {
        let mut results: Vec<(String, i16)> = Vec::with_capacity(req.groups_names.len());
        // Per partition: (records, groups, offsets).
        let mut batches: BTreeMap<i32, Batch> = BTreeMap::new();
        for id in &req.groups_names {
            let group_id = id.as_str();
            let error = self.delete_one(now, group_id, &mut batches);
            results.push((group_id.to_string(), error));
        }
        if batches.is_empty() {
            return self.io.respond(ctx.waiter, delete_response(&results));
        }
        let req_id = self.io.new_delete(PendingDelete {
            waiter: ctx.waiter,
            results,
            outstanding: batches.len(),
        });
        for (partition, batch) in batches {
            let purpose = Purpose::Tombstones {
                groups: batch.groups,
                offsets: batch.offsets,
                delete: Some(req_id),
                sweep: false,
            };
            self.io.append(partition, batch.records, purpose);
        }
    }

    /// Checks one group for deletion and, if it may go, adds its tombstones to `batches`
    /// and marks it Dead. Returns the group's error (NONE: pending its tombstones).
    fn delete_one(&mut self, now: Time, group_id: &str, batches: &mut BTreeMap<i32, Batch>) -> i16 {
        if group_id.is_empty() {
            return code::INVALID_GROUP_ID;
        }
        if let Err(e) = self.route(group_id) {
            return e;
        }
        let Some((_, g)) = self.group_mut(now, group_id) else {
            return code::GROUP_ID_NOT_FOUND;
        };
        match g.state {
            GroupState::Dead => return code::GROUP_ID_NOT_FOUND,
            GroupState::Empty => {}
            GroupState::Stable | GroupState::PreparingRebalance | GroupState::CompletingRebalance => {
                return code::NON_EMPTY_GROUP
            }
        }
        let batch = batches.entry(g.partition).or_default();
        add_group_tombstones(g, batch);
        g.mark_deleting();
        code::NONE
    }

    /// One partition's tombstones for DeleteGroups request `req` settled with `error`.
    pub(super) fn delete_groups_done(&mut self, req: u64, groups: &[String], error: i16) {
        let Some(pending) = self.io.deletes.get_mut(&req) else {
            unreachable!("DeleteGroups request {req} settled twice");
        };
        if error != code::NONE {
            for (id, e) in pending.results.iter_mut() {
                if *e == code::NONE && groups.contains(id) {
                    *e = error;
                }
            }
        }
        assert!(pending.outstanding > 0);
        pending.outstanding -= 1;
        if pending.outstanding == 0 {
            let pending = self.io.deletes.remove(&req).expect("looked up above");
            self.io.respond(pending.waiter, delete_response(&pending.results));
        }
    }
}

#[derive(Default)]
struct Batch {
    records: Vec<OffsetsRecord>,
    groups: Vec<String>,
    offsets: Vec<(String, TopicPartition)>,
}

fn add_group_tombstones(g: &ClassicGroup, batch: &mut Batch) {
    for (topic, p) in g.offsets.keys() {
        batch.records.push((encode_offset_key(&g.id, topic, *p), None));
        batch.offsets.push((g.id.clone(), (topic.clone(), *p)));
    }
    batch.records.push((encode_group_key(&g.id), None));
    batch.groups.push(g.id.clone());
}

fn delete_response(results: &[(String, i16)]) -> ResponseKind {
    let mut r = DeleteGroupsResponse::default();
    r.results = results
        .iter()
        .map(|(id, e)| {
            let mut d = DeletableGroupResult::default();
            d.group_id = GroupId(sb(id));
            d.error_code = *e;
            d
        })
        .collect();
    ResponseKind::DeleteGroups(r)
}
