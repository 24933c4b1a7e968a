//! The classic rebalance protocol: JoinGroup (with KIP-394's member-id round and KIP-345's
//! static members), SyncGroup, Heartbeat, LeaveGroup, and the timers that drive a rebalance
//! (session expiry, rebalance timeout, initial delay, sync deadline). Follows Kafka's
//! `GroupMetadataManager` (classic part) step by step; departures are in the module docs
//! of [`super`].
//!
//! Invariants: a JoinGroup is either answered or parked in its member's `awaiting_join`; a
//! SyncGroup in `awaiting_sync` (only in CompletingRebalance); a member that leaves the
//! group (expiry, leave, fencing) has its parked requests answered first.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::{HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest};

use super::classic::{ClassicGroup, GroupState};
use super::coordinator::{Cx, Purpose, StaticRejoin};
use super::member::{Member, Parked, Protocol};
use super::records::{encode_group_key, encode_group_value};
use super::timers::TimerKey;
use super::{code, respond, GroupCoordinator, RequestCtx};
use crate::Time;

/// A JoinGroup, as the protocol logic needs it.
struct Join {
    member_id: String,
    instance_id: Option<String>,
    protocol_type: String,
    protocols: Vec<Protocol>,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    client_id: String,
    client_host: String,
    parked: Parked,
}

impl Join {
    fn names(&self) -> Vec<&str> {
        self.protocols.iter().map(|p| p.name.as_str()).collect()
    }

    fn error(&self, member_id: &str, error: i16) -> kafka_protocol::messages::ResponseKind {
        respond::join_error(self.parked.version, member_id, error)
    }
}

fn heartbeat_key(group: &str, member: &str) -> TimerKey {
    TimerKey::Heartbeat {
        group: group.to_string(),
        member: member.to_string(),
    }
}

fn join_key(group: &str) -> TimerKey {
    TimerKey::Join {
        group: group.to_string(),
    }
}

fn sync_key(group: &str) -> TimerKey {
    TimerKey::Sync {
        group: group.to_string(),
    }
}

impl GroupCoordinator {
    pub(super) fn join_group(&mut self, now: Time, ctx: &RequestCtx, req: JoinGroupRequest) {
        let join = Join {
            member_id: req.member_id.to_string(),
            instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
            protocol_type: req.protocol_type.to_string(),
            protocols: req
                .protocols
                .iter()
                .map(|p| Protocol {
                    name: p.name.to_string(),
                    metadata: p.metadata.clone(),
                })
                .collect(),
            session_timeout_ms: req.session_timeout_ms,
            // v0 has no rebalance timeout: Kafka uses the session timeout.
            rebalance_timeout_ms: if ctx.version == 0 {
                req.session_timeout_ms
            } else {
                req.rebalance_timeout_ms
            },
            client_id: ctx.client_id.clone(),
            client_host: ctx.client_host.clone(),
            parked: Parked {
                waiter: ctx.waiter,
                version: ctx.version,
            },
        };
        let group_id = req.group_id.as_str();
        let cfg = &self.config;
        let error = if group_id.is_empty() {
            Some(code::INVALID_GROUP_ID)
        } else if join.session_timeout_ms < cfg.session_timeout_ms_min
            || join.session_timeout_ms > cfg.session_timeout_ms_max
        {
            Some(code::INVALID_SESSION_TIMEOUT)
        } else {
            self.route(group_id).err()
        };
        if let Some(error) = error {
            let r = join.error(&join.member_id, error);
            self.io.respond(ctx.waiter, r);
            return;
        }
        let partition = self.partition_for(group_id);
        let (mut cx, shard) = self.split(now, partition).expect("routed to an active shard");
        if !shard.groups.contains_key(group_id) {
            if !join.member_id.is_empty() {
                let r = join.error(&join.member_id, code::UNKNOWN_MEMBER_ID);
                cx.respond(ctx.waiter, r);
                return;
            }
            let group = ClassicGroup::new(group_id, partition, now.wall_ms);
            shard.groups.insert(group_id.to_string(), group);
        }
        let group = shard.groups.get_mut(group_id).expect("inserted above");
        cx.join(group, join);
    }

    pub(super) fn sync_group(&mut self, now: Time, ctx: &RequestCtx, req: SyncGroupRequest) {
        let group_id = req.group_id.as_str();
        let early = self.named_route_error(group_id);
        if let Some(error) = early {
            self.io.respond(ctx.waiter, respond::sync_error(error));
            return;
        }
        let Some((mut cx, g)) = self.group_mut(now, group_id) else {
            self.io
                .respond(ctx.waiter, respond::sync_error(code::UNKNOWN_MEMBER_ID));
            return;
        };
        let parked = Parked {
            waiter: ctx.waiter,
            version: ctx.version,
        };
        cx.sync(g, parked, req);
    }

    pub(super) fn heartbeat(&mut self, now: Time, ctx: &RequestCtx, req: HeartbeatRequest) {
        let group_id = req.group_id.as_str();
        let early = self.named_route_error(group_id);
        let error = match early {
            Some(e) => e,
            None => match self.group_mut(now, group_id) {
                None => code::UNKNOWN_MEMBER_ID,
                Some((mut cx, g)) => cx.heartbeat(g, &req),
            },
        };
        self.io.respond(ctx.waiter, respond::heartbeat(error));
    }

    pub(super) fn leave_group(&mut self, now: Time, ctx: &RequestCtx, req: LeaveGroupRequest) {
        let version = ctx.version;
        let leaving: Vec<(String, Option<String>)> = if version < 3 {
            vec![(req.member_id.to_string(), None)]
        } else {
            req.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.group_instance_id.as_ref().map(|s| s.to_string()),
                    )
                })
                .collect()
        };
        let group_id = req.group_id.as_str();
        let early = self.named_route_error(group_id);
        let response = match early {
            Some(e) => respond::leave(version, e, Vec::new()),
            None => match self.group_mut(now, group_id) {
                None => respond::leave(version, code::UNKNOWN_MEMBER_ID, Vec::new()),
                Some((mut cx, g)) => cx.leave(g, version, &leaving),
            },
        };
        self.io.respond(ctx.waiter, response);
    }

    pub(super) fn on_heartbeat_timer(&mut self, now: Time, group_id: &str, member_id: &str) {
        if let Some((mut cx, g)) = self.group_mut(now, group_id) {
            cx.heartbeat_expired(g, member_id);
        }
    }

    pub(super) fn on_join_timer(&mut self, now: Time, group_id: &str) {
        if let Some((mut cx, g)) = self.group_mut(now, group_id) {
            if !g.is(GroupState::PreparingRebalance) {
                return;
            }
            match g.initial_delay {
                Some((delay_ms, remaining_ms)) => {
                    cx.try_complete_initial_rebalance(g, delay_ms, remaining_ms)
                }
                None => cx.complete_join(g),
            }
        }
    }

    pub(super) fn on_sync_timer(&mut self, now: Time, group_id: &str) {
        if let Some((mut cx, g)) = self.group_mut(now, group_id) {
            cx.sync_expired(g);
        }
    }

    /// The leader's assignment was written (or not).
    pub(super) fn group_sync_written(
        &mut self,
        now: Time,
        partition: i32,
        group_id: &str,
        generation: i32,
        assignment: BTreeMap<String, Bytes>,
        error: i16,
    ) {
        let Some((mut cx, shard)) = self.split(now, partition) else {
            return;
        };
        let Some(g) = shard.groups.get_mut(group_id) else {
            return;
        };
        // Another member may have joined meanwhile: then this generation is over.
        if !g.is(GroupState::CompletingRebalance) || g.generation != generation {
            return;
        }
        if error != code::NONE {
            cx.reset_and_propagate_assignment(g, error);
            cx.maybe_prepare_rebalance_or_complete_join(g);
        } else {
            for m in g.members.values_mut() {
                m.assignment = assignment.get(&m.id).cloned().unwrap_or_default();
            }
            cx.propagate_assignment(g, code::NONE);
            g.transition(GroupState::Stable, cx.wall_ms());
            tracing::info!(group = %g.id, generation, members = g.members.len(), "group stable");
        }
    }

    /// A static member's new member id was written (or not).
    pub(super) fn static_rejoin_written(&mut self, now: Time, partition: i32, s: StaticRejoin, error: i16) {
        let Some((mut cx, shard)) = self.split(now, partition) else {
            return;
        };
        let Some(g) = shard.groups.get_mut(&s.group) else {
            return;
        };
        let Some(parked) = g.members.get(&s.new_id).and_then(|m| m.awaiting_join) else {
            return; // answered by a rebalance meanwhile, or gone
        };
        if error != code::NONE {
            let m = g.members.get_mut(&s.new_id).expect("looked up above");
            m.awaiting_join = None;
            m.protocols = s.old_protocols;
            m.rebalance_timeout_ms = s.old_rebalance_timeout_ms;
            m.session_timeout_ms = s.old_session_timeout_ms;
            let _ = g.replace_static(&s.instance, &s.new_id, &s.old_id);
            cx.cancel(&heartbeat_key(&g.id, &s.new_id));
            cx.reschedule_heartbeat(g, &s.old_id);
            let r = respond::join(
                parked.version,
                error,
                g.generation,
                g.protocol_type.as_deref(),
                g.protocol_name.as_deref(),
                s.leader_before.as_deref().unwrap_or(""),
                "",
                Vec::new(),
                false,
            );
            cx.respond(parked.waiter, r);
            return;
        }
        g.members
            .get_mut(&s.new_id)
            .expect("looked up above")
            .awaiting_join = None;
        if parked.version >= 9 {
            // The leader learns it leads, but keeps the assignment it has.
            let is_leader = g.leader.as_deref() == Some(s.new_id.as_str());
            cx.answer_join(g, &s.new_id, parked, is_leader, is_leader);
        } else {
            let r = respond::join(
                parked.version,
                code::NONE,
                g.generation,
                g.protocol_type.as_deref(),
                g.protocol_name.as_deref(),
                s.leader_before.as_deref().unwrap_or(""),
                &s.new_id,
                Vec::new(),
                false,
            );
            cx.respond(parked.waiter, r);
        }
    }
}

impl Cx<'_> {
    fn join(&mut self, g: &mut ClassicGroup, join: Join) {
        if !self.accept_joining_member(g, &join.member_id) {
            if g.members.contains_key(&join.member_id) {
                self.remove_member(g, &join.member_id, code::GROUP_MAX_SIZE_REACHED);
                self.maybe_complete_join_phase(g);
            }
            let r = join.error("", code::GROUP_MAX_SIZE_REACHED);
            self.respond(join.parked.waiter, r);
        } else if join.member_id.is_empty() {
            self.join_new_member(g, join);
        } else {
            self.join_existing_member(g, join);
        }
    }

    /// Kafka's `acceptJoiningMember`: `group.max.size` counts members awaiting join during
    /// PreparingRebalance, members otherwise.
    fn accept_joining_member(&self, g: &ClassicGroup, member_id: &str) -> bool {
        let max = self.cfg.group_size_max;
        match g.state {
            GroupState::Empty | GroupState::Dead => true,
            GroupState::PreparingRebalance => {
                g.members
                    .get(member_id)
                    .is_some_and(|m| m.awaiting_join.is_some())
                    || g.num_awaiting_join() < max
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                g.members.contains_key(member_id) || g.members.len() < max
            }
        }
    }

    fn join_new_member(&mut self, g: &mut ClassicGroup, join: Join) {
        if g.is(GroupState::Dead) {
            let r = join.error("", code::COORDINATOR_NOT_AVAILABLE);
            return self.respond(join.parked.waiter, r);
        }
        if !g.supports_protocols(&join.protocol_type, &join.names()) {
            let r = join.error("", code::INCONSISTENT_GROUP_PROTOCOL);
            return self.respond(join.parked.waiter, r);
        }
        let prefix = join.instance_id.as_deref().unwrap_or(&join.client_id).to_string();
        let new_id = self.io.new_member_id(&prefix, g);
        if let Some(instance) = join.instance_id.clone() {
            match g.static_members.get(&instance).cloned() {
                Some(old_id) => self.replace_static_member(g, join, &instance, &old_id, &new_id),
                None => self.add_member_then_rebalance(g, join, new_id),
            }
        } else if join.parked.version >= 4 {
            // KIP-394: hand out the id and wait for the member to come back with it.
            g.pending_members.insert(new_id.clone());
            let session_ms = u64::try_from(join.session_timeout_ms).unwrap_or(0);
            self.schedule(heartbeat_key(&g.id, &new_id), session_ms);
            let r = join.error(&new_id, code::MEMBER_ID_REQUIRED);
            self.respond(join.parked.waiter, r);
        } else {
            self.add_member_then_rebalance(g, join, new_id);
        }
    }

    fn join_existing_member(&mut self, g: &mut ClassicGroup, join: Join) {
        let member_id = join.member_id.clone();
        if g.is(GroupState::Dead) {
            let r = join.error(&member_id, code::COORDINATOR_NOT_AVAILABLE);
            return self.respond(join.parked.waiter, r);
        }
        if !g.supports_protocols(&join.protocol_type, &join.names()) {
            let r = join.error(&member_id, code::INCONSISTENT_GROUP_PROTOCOL);
            return self.respond(join.parked.waiter, r);
        }
        if g.pending_members.contains(&member_id) {
            if join.instance_id.is_some() {
                // Pending ids go to dynamic members only (Kafka: IllegalStateException).
                let r = join.error(&member_id, code::UNKNOWN_SERVER_ERROR);
                return self.respond(join.parked.waiter, r);
            }
            return self.add_member_then_rebalance(g, join, member_id);
        }
        if let Err(e) = g.validate_member(&member_id, join.instance_id.as_deref()) {
            let r = join.error(&member_id, e);
            return self.respond(join.parked.waiter, r);
        }
        let member = &g.members[&member_id];
        let same_protocols = member.protocols == join.protocols;
        match g.state {
            GroupState::PreparingRebalance => self.update_member_then_rebalance(g, join),
            GroupState::CompletingRebalance if same_protocols => {
                // It missed the JoinGroup answer: send this generation's again.
                let with_members = g.leader.as_deref() == Some(member_id.as_str());
                self.answer_join(g, &member_id, join.parked, with_members, false);
            }
            GroupState::CompletingRebalance => self.update_member_then_rebalance(g, join),
            GroupState::Stable => {
                // A rejoining leader forces a rebalance (e.g. its topic metadata changed).
                if g.leader.as_deref() == Some(member_id.as_str()) || !same_protocols {
                    self.update_member_then_rebalance(g, join);
                } else {
                    self.answer_join(g, &member_id, join.parked, false, false);
                }
            }
            GroupState::Empty | GroupState::Dead => {
                let r = join.error(&member_id, code::UNKNOWN_MEMBER_ID);
                self.respond(join.parked.waiter, r);
            }
        }
    }

    /// Replaces a member's protocols and timeouts and parks its JoinGroup (answering one
    /// it had parked already).
    fn update_member(&mut self, g: &mut ClassicGroup, member_id: &str, join: Join) {
        let m = g.members.get_mut(member_id).expect("updating a member");
        m.protocols = join.protocols;
        m.rebalance_timeout_ms = join.rebalance_timeout_ms;
        m.session_timeout_ms = join.session_timeout_ms;
        if let Some(old) = m.awaiting_join.replace(join.parked) {
            let r = respond::join_error(old.version, member_id, code::REBALANCE_IN_PROGRESS);
            self.respond(old.waiter, r);
        }
    }

    fn update_member_then_rebalance(&mut self, g: &mut ClassicGroup, join: Join) {
        let member_id = join.member_id.clone();
        self.update_member(g, &member_id, join);
        self.maybe_prepare_rebalance_or_complete_join(g);
    }

    fn add_member_then_rebalance(&mut self, g: &mut ClassicGroup, join: Join, member_id: String) {
        let member = Member {
            id: member_id.clone(),
            instance_id: join.instance_id,
            client_id: join.client_id,
            client_host: join.client_host,
            rebalance_timeout_ms: join.rebalance_timeout_ms,
            session_timeout_ms: join.session_timeout_ms,
            protocol_type: join.protocol_type,
            protocols: join.protocols,
            assignment: Bytes::new(),
            awaiting_join: Some(join.parked),
            awaiting_sync: None,
            is_new: true,
        };
        if g.is(GroupState::PreparingRebalance) && g.previous_state == GroupState::Empty {
            g.new_member_added = true;
        }
        g.add(member);
        // A new member cannot heartbeat before it has a generation; if its client went
        // away, this deadline removes it.
        let timeout_ms = self.cfg.new_member_join_timeout_ms;
        self.schedule(heartbeat_key(&g.id, &member_id), timeout_ms);
        self.maybe_prepare_rebalance_or_complete_join(g);
    }

    /// A known static member rejoined with an unknown member id: it takes over the
    /// instance's membership under `new_id`, fencing the old id.
    fn replace_static_member(
        &mut self,
        g: &mut ClassicGroup,
        join: Join,
        instance: &str,
        old_id: &str,
        new_id: &str,
    ) {
        let leader_before = g.leader.clone();
        let old = g.replace_static(instance, old_id, new_id);
        if let Some(p) = old.awaiting_join {
            let r = respond::join_error(p.version, old_id, code::FENCED_INSTANCE_ID);
            self.respond(p.waiter, r);
        }
        if let Some(p) = old.awaiting_sync {
            self.respond(p.waiter, respond::sync_error(code::FENCED_INSTANCE_ID));
        }
        self.cancel(&heartbeat_key(&g.id, old_id));
        self.reschedule_heartbeat(g, new_id);
        let mut join = join;
        join.member_id = new_id.to_string();
        self.update_member(g, new_id, join);
        match g.state {
            GroupState::Stable if g.select_protocol() == g.protocol_name => {
                // Same protocol: no rebalance, only the new member id to persist.
                let value = g.to_record(&g.assignment());
                let records = vec![(encode_group_key(&g.id), Some(encode_group_value(&value)))];
                let purpose = Purpose::StaticRejoin(StaticRejoin {
                    group: g.id.clone(),
                    instance: instance.to_string(),
                    old_id: old_id.to_string(),
                    new_id: new_id.to_string(),
                    old_protocols: old.protocols,
                    old_rebalance_timeout_ms: old.rebalance_timeout_ms,
                    old_session_timeout_ms: old.session_timeout_ms,
                    leader_before,
                });
                self.io.append(g.partition, records, purpose);
            }
            GroupState::Stable => self.maybe_prepare_rebalance_or_complete_join(g),
            // The leader may be assigning to the old id: start over.
            GroupState::CompletingRebalance => self.prepare_rebalance(g),
            GroupState::PreparingRebalance => self.maybe_complete_join_phase(g),
            GroupState::Empty | GroupState::Dead => {
                unreachable!("a group with a static member is neither Empty nor Dead")
            }
        }
    }

    pub(super) fn maybe_prepare_rebalance_or_complete_join(&mut self, g: &mut ClassicGroup) {
        if g.can_rebalance() {
            self.prepare_rebalance(g);
        } else {
            self.maybe_complete_join_phase(g);
        }
    }

    pub(super) fn prepare_rebalance(&mut self, g: &mut ClassicGroup) {
        assert!(
            g.can_rebalance(),
            "group {} cannot rebalance from {:?}",
            g.id,
            g.state
        );
        if g.is(GroupState::CompletingRebalance) {
            self.reset_and_propagate_assignment(g, code::REBALANCE_IN_PROGRESS);
        }
        g.pending_sync.clear();
        self.cancel(&sync_key(&g.id));
        let initial = g.is(GroupState::Empty);
        if initial {
            // A new group: give more members time to join before the first generation.
            let delay_ms = self.cfg.initial_rebalance_delay_ms;
            let remaining_ms = g.rebalance_timeout_ms().saturating_sub(delay_ms);
            g.initial_delay = Some((delay_ms, remaining_ms));
            g.new_member_added = false;
            self.schedule(join_key(&g.id), delay_ms);
        }
        g.transition(GroupState::PreparingRebalance, self.wall_ms());
        tracing::debug!(group = %g.id, generation = g.generation, "preparing rebalance");
        if !initial {
            if g.has_all_members_joined() {
                self.complete_join(g);
            } else {
                let timeout_ms = g.rebalance_timeout_ms();
                self.schedule(join_key(&g.id), timeout_ms);
            }
        }
    }

    /// Completes the join phase if every member has rejoined, except during the initial
    /// delay (its timer completes it).
    pub(super) fn maybe_complete_join_phase(&mut self, g: &mut ClassicGroup) {
        if g.is(GroupState::PreparingRebalance)
            && g.previous_state != GroupState::Empty
            && g.has_all_members_joined()
        {
            self.complete_join(g);
        }
    }

    fn try_complete_initial_rebalance(&mut self, g: &mut ClassicGroup, delay_ms: u64, remaining_ms: u64) {
        if g.new_member_added && remaining_ms != 0 {
            g.new_member_added = false;
            let next_delay_ms = self.cfg.initial_rebalance_delay_ms.min(remaining_ms);
            g.initial_delay = Some((next_delay_ms, remaining_ms.saturating_sub(delay_ms)));
            self.schedule(join_key(&g.id), next_delay_ms);
        } else {
            self.complete_join(g);
        }
    }

    /// Ends the join phase: drops dynamic members that did not rejoin, elects a leader among
    /// those who did, and starts the next generation (answering every parked JoinGroup).
    pub(super) fn complete_join(&mut self, g: &mut ClassicGroup) {
        self.cancel(&join_key(&g.id));
        g.initial_delay = None;
        let gone: Vec<String> = g
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in &gone {
            self.remove_member(g, id, code::UNKNOWN_MEMBER_ID);
        }
        if !gone.is_empty() {
            tracing::info!(group = %g.id, ?gone, "removed members that did not rejoin");
        }
        if g.is(GroupState::Dead) {
            return;
        }
        if !g.maybe_elect_new_joined_leader() && !g.members.is_empty() {
            // Only static members that did not rejoin are left: wait for them (or for their
            // sessions to expire).
            let timeout_ms = g.rebalance_timeout_ms();
            self.schedule(join_key(&g.id), timeout_ms);
            return;
        }
        self.init_next_generation(g);
        if g.is(GroupState::Empty) {
            let value = g.to_record(&BTreeMap::new());
            let records = vec![(encode_group_key(&g.id), Some(encode_group_value(&value)))];
            self.io.append(g.partition, records, Purpose::GroupEmpty);
            return;
        }
        let ids: Vec<String> = g.members.keys().cloned().collect();
        for id in &ids {
            let parked = {
                let m = g.members.get_mut(id).expect("listed above");
                m.is_new = false;
                m.awaiting_join.take()
            };
            if let Some(parked) = parked {
                let is_leader = g.leader.as_deref() == Some(id.as_str());
                self.answer_join(g, id, parked, is_leader, false);
            }
            self.reschedule_heartbeat(g, id);
            g.pending_sync.insert(id.clone());
        }
        let timeout_ms = g.rebalance_timeout_ms();
        self.schedule(sync_key(&g.id), timeout_ms);
        tracing::debug!(group = %g.id, generation = g.generation, members = ids.len(), "join phase complete");
    }

    fn init_next_generation(&mut self, g: &mut ClassicGroup) {
        g.generation += 1;
        if g.members.is_empty() {
            g.protocol_name = None;
            g.subscribed_topics = g.compute_subscribed_topics();
            g.transition(GroupState::Empty, self.wall_ms());
        } else {
            let protocol = g.select_protocol();
            assert!(protocol.is_some(), "group {}: members share no protocol", g.id);
            g.protocol_name = protocol;
            g.subscribed_topics = g.compute_subscribed_topics();
            g.transition(GroupState::CompletingRebalance, self.wall_ms());
        }
        g.pending_sync.clear();
    }

    /// Answers a parked JoinGroup with the current generation; the leader's answer lists
    /// the members and their metadata for the selected protocol.
    pub(super) fn answer_join(
        &mut self,
        g: &ClassicGroup,
        member_id: &str,
        parked: Parked,
        with_members: bool,
        skip_assignment: bool,
    ) {
        let protocol = g.protocol_name.as_deref().unwrap_or("");
        let members = if with_members {
            g.members
                .values()
                .map(|m| {
                    let metadata = m.metadata(protocol).cloned().unwrap_or_default();
                    respond::join_member(&m.id, m.instance_id.as_deref(), metadata)
                })
                .collect()
        } else {
            Vec::new()
        };
        let r = respond::join(
            parked.version,
            code::NONE,
            g.generation,
            g.protocol_type.as_deref(),
            g.protocol_name.as_deref(),
            g.leader.as_deref().unwrap_or(""),
            member_id,
            members,
            skip_assignment,
        );
        self.respond(parked.waiter, r);
    }

    fn reset_and_propagate_assignment(&mut self, g: &mut ClassicGroup, error: i16) {
        assert!(
            g.is(GroupState::CompletingRebalance),
            "group {}: {:?}",
            g.id,
            g.state
        );
        for m in g.members.values_mut() {
            m.assignment = Bytes::new();
        }
        self.propagate_assignment(g, error);
    }

    /// Answers every parked SyncGroup with the member's assignment (or `error`).
    fn propagate_assignment(&mut self, g: &mut ClassicGroup, error: i16) {
        let (protocol_type, protocol_name) = if error == code::NONE {
            (g.protocol_type.clone(), g.protocol_name.clone())
        } else {
            (None, None)
        };
        let ids: Vec<String> = g.members.keys().cloned().collect();
        for id in ids {
            let m = g.members.get_mut(&id).expect("listed above");
            if let Some(parked) = m.awaiting_sync.take() {
                let assignment = m.assignment.clone();
                let r = respond::sync(
                    error,
                    protocol_type.as_deref(),
                    protocol_name.as_deref(),
                    assignment,
                );
                self.respond(parked.waiter, r);
                self.reschedule_heartbeat(g, &id);
            }
        }
    }

    pub(super) fn reschedule_heartbeat(&mut self, g: &ClassicGroup, member_id: &str) {
        if let Some(m) = g.members.get(member_id) {
            self.schedule(heartbeat_key(&g.id, member_id), m.session_timeout_ms());
        }
    }

    /// Removes a member, answering its parked requests with `error`.
    fn remove_member(&mut self, g: &mut ClassicGroup, member_id: &str, error: i16) {
        self.cancel(&heartbeat_key(&g.id, member_id));
        if let Some(m) = g.remove(member_id) {
            if let Some(p) = m.awaiting_join {
                self.respond(p.waiter, respond::join_error(p.version, "", error));
            }
            if let Some(p) = m.awaiting_sync {
                self.respond(p.waiter, respond::sync_error(error));
            }
        }
    }

    fn heartbeat_expired(&mut self, g: &mut ClassicGroup, member_id: &str) {
        if g.is(GroupState::Dead) {
            return;
        }
        if g.pending_members.remove(member_id) {
            tracing::debug!(group = %g.id, member_id, "pending member expired");
            if g.is(GroupState::PreparingRebalance) && g.has_all_members_joined() {
                self.complete_join(g);
            }
            return;
        }
        let Some(m) = g.members.get(member_id) else {
            return;
        };
        if m.has_satisfied_heartbeat() {
            return;
        }
        tracing::info!(group = %g.id, member_id, "member session expired");
        self.remove_member(g, member_id, code::UNKNOWN_MEMBER_ID);
        match g.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance_or_complete_join(g)
            }
            GroupState::PreparingRebalance if g.has_all_members_joined() => self.complete_join(g),
            _ => {}
        }
    }

    /// Members that did not send SyncGroup within the rebalance timeout are removed.
    fn sync_expired(&mut self, g: &mut ClassicGroup) {
        let syncing = g.is(GroupState::CompletingRebalance) || g.is(GroupState::Stable);
        if !syncing || g.pending_sync.is_empty() {
            return;
        }
        let late: Vec<String> = g.pending_sync.iter().cloned().collect();
        tracing::info!(group = %g.id, ?late, "members did not sync in time");
        for id in &late {
            self.remove_member(g, id, code::UNKNOWN_MEMBER_ID);
        }
        self.prepare_rebalance(g);
    }

    fn sync(&mut self, g: &mut ClassicGroup, parked: Parked, req: SyncGroupRequest) {
        let member_id = req.member_id.as_str();
        let inconsistent = |ours: &Option<String>, theirs: &Option<kafka_protocol::protocol::StrBytes>| matches!((ours, theirs), (Some(a), Some(b)) if a.as_str() != b.as_str());
        let error = if g.is(GroupState::Empty) {
            Some(code::UNKNOWN_MEMBER_ID)
        } else if g.is(GroupState::Dead) {
            Some(code::COORDINATOR_NOT_AVAILABLE)
        } else if let Err(e) = g.validate_member(member_id, req.group_instance_id.as_deref()) {
            Some(e)
        } else if req.generation_id != g.generation {
            Some(code::ILLEGAL_GENERATION)
        } else if inconsistent(&g.protocol_type, &req.protocol_type)
            || inconsistent(&g.protocol_name, &req.protocol_name)
        {
            Some(code::INCONSISTENT_GROUP_PROTOCOL)
        } else if g.is(GroupState::PreparingRebalance) {
            Some(code::REBALANCE_IN_PROGRESS)
        } else {
            None
        };
        if let Some(error) = error {
            return self.respond(parked.waiter, respond::sync_error(error));
        }
        if g.is(GroupState::Stable) {
            self.remove_pending_sync(g, member_id);
            let m = &g.members[member_id];
            let r = respond::sync(
                code::NONE,
                g.protocol_type.as_deref(),
                g.protocol_name.as_deref(),
                m.assignment.clone(),
            );
            return self.respond(parked.waiter, r);
        }
        assert!(g.is(GroupState::CompletingRebalance));
        let m = g.members.get_mut(member_id).expect("validated");
        if let Some(old) = m.awaiting_sync.replace(parked) {
            self.respond(old.waiter, respond::sync_error(code::REBALANCE_IN_PROGRESS));
        }
        self.remove_pending_sync(g, member_id);
        if g.leader.as_deref() != Some(member_id) {
            return;
        }
        // The leader's assignment: persist it, then hand it out.
        let mut given: BTreeMap<String, Bytes> = req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect();
        let assignment: BTreeMap<String, Bytes> = g
            .members
            .keys()
            .map(|id| (id.clone(), given.remove(id).unwrap_or_default()))
            .collect();
        let value = g.to_record(&assignment);
        let records = vec![(encode_group_key(&g.id), Some(encode_group_value(&value)))];
        let purpose = Purpose::GroupSync {
            group: g.id.clone(),
            generation: g.generation,
            assignment,
        };
        self.io.append(g.partition, records, purpose);
    }

    fn remove_pending_sync(&mut self, g: &mut ClassicGroup, member_id: &str) {
        g.pending_sync.remove(member_id);
        if g.pending_sync.is_empty() {
            self.cancel(&sync_key(&g.id));
        }
    }

    fn heartbeat(&mut self, g: &mut ClassicGroup, req: &HeartbeatRequest) -> i16 {
        let member_id = req.member_id.as_str();
        if g.is(GroupState::Dead) {
            return code::COORDINATOR_NOT_AVAILABLE;
        }
        if let Err(e) = g.validate_member(member_id, req.group_instance_id.as_deref()) {
            return e;
        }
        if req.generation_id != g.generation {
            return code::ILLEGAL_GENERATION;
        }
        match g.state {
            GroupState::Empty | GroupState::Dead => code::UNKNOWN_MEMBER_ID,
            GroupState::PreparingRebalance => {
                self.reschedule_heartbeat(g, member_id);
                code::REBALANCE_IN_PROGRESS
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.reschedule_heartbeat(g, member_id);
                code::NONE
            }
        }
    }

    fn leave(
        &mut self,
        g: &mut ClassicGroup,
        version: i16,
        leaving: &[(String, Option<String>)],
    ) -> kafka_protocol::messages::ResponseKind {
        if g.is(GroupState::Dead) {
            return respond::leave(version, code::COORDINATOR_NOT_AVAILABLE, Vec::new());
        }
        let mut answers = Vec::with_capacity(leaving.len());
        let mut left = 0usize;
        for (member_id, instance) in leaving {
            let error = if member_id.is_empty() {
                // Removal by instance id (an administrator's LeaveGroup).
                match instance.as_ref().and_then(|i| g.static_members.get(i)).cloned() {
                    Some(id) => {
                        self.remove_member(g, &id, code::UNKNOWN_MEMBER_ID);
                        code::NONE
                    }
                    None => code::UNKNOWN_MEMBER_ID,
                }
            } else if g.pending_members.remove(member_id) {
                self.cancel(&heartbeat_key(&g.id, member_id));
                code::NONE
            } else {
                match g.validate_member(member_id, instance.as_deref()) {
                    Ok(()) => {
                        self.remove_member(g, member_id, code::UNKNOWN_MEMBER_ID);
                        code::NONE
                    }
                    Err(e) => e,
                }
            };
            if error == code::NONE {
                left += 1;
            }
            answers.push(respond::leave_member(member_id, instance.as_deref(), error));
        }
        if left > 0 {
            tracing::debug!(group = %g.id, left, "members left");
            match g.state {
                GroupState::Stable | GroupState::CompletingRebalance => {
                    self.maybe_prepare_rebalance_or_complete_join(g)
                }
                GroupState::PreparingRebalance => self.maybe_complete_join_phase(g),
                _ => {}
            }
        }
        respond::leave(version, code::NONE, answers)
    }
}
