//! One classic group: its state machine (Empty → PreparingRebalance → CompletingRebalance →
//! Stable, and Dead), members, static-member map, protocol selection, leader, and the
//! offsets it has committed. Pure bookkeeping: answering parked requests, timers and writes
//! are the coordinator's ([`super::rebalance`]).
//!
//! Invariants ([`ClassicGroup::check`]): the leader is a member, and there is a leader
//! whenever there are members; the static map and the members' instance ids agree; pending
//! (KIP-394) members are not members; pending-sync members are members; an Empty group has
//! no members; outside PreparingRebalance no member waits in JoinGroup except a static
//! member whose rejoin is being written; outside CompletingRebalance no member waits in
//! SyncGroup.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, Bytes};
use kafka_protocol::messages::ConsumerProtocolSubscription;
use kafka_protocol::protocol::Decodable;

use super::code;
use super::member::{Member, Protocol};
use super::records::{GroupMetadataValue, MemberMetadata, OffsetCommitValue};

/// Kafka's classic group states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka reports (DescribeGroups, ListGroups).
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    /// Kafka's valid transitions (a deletion's Empty → Dead → Empty is
    /// [`ClassicGroup::mark_deleting`] / [`ClassicGroup::unmark_deleting`]).
    fn can_follow(self, from: GroupState) -> bool {
        use GroupState::*;
        match self {
            Empty => from == PreparingRebalance,
            PreparingRebalance => matches!(from, Stable | CompletingRebalance | Empty),
            CompletingRebalance => from == PreparingRebalance,
            Stable => from == CompletingRebalance,
            Dead => true,
        }
    }
}

/// A (topic, partition) a group has committed an offset for.
pub(crate) type TopicPartition = (String, i32);

/// The protocol type of consumers (as opposed to Connect workers and others).
pub(crate) const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

#[derive(Clone, Debug)]
pub(crate) struct ClassicGroup {
    pub id: String,
    /// The `__consumer_offsets` partition that owns the group.
    pub partition: i32,
    pub state: GroupState,
    pub previous_state: GroupState,
    /// Wall-clock time of the last transition (Kafka's `currentStateTimestamp`), if known.
    pub state_since_wall_ms: Option<i64>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// group.instance.id → member id.
    pub static_members: BTreeMap<String, String>,
    /// Member ids handed out by MEMBER_ID_REQUIRED that have not joined yet (KIP-394).
    pub pending_members: BTreeSet<String>,
    /// Members of the current generation that have not sent SyncGroup yet.
    pub pending_sync: BTreeSet<String>,
    /// A member joined during the initial rebalance delay, which then extends.
    pub new_member_added: bool,
    /// During an initial rebalance: (this delay, time left to extend by), ms.
    pub initial_delay: Option<(u64, u64)>,
    /// Topics the members subscribe to, when the group speaks the consumer protocol and
    /// every subscription decodes.
    pub subscribed_topics: Option<BTreeSet<String>>,
    /// Committed offsets: exactly those of the acknowledged log.
    pub offsets: BTreeMap<TopicPartition, OffsetCommitValue>,
}

impl ClassicGroup {
    pub fn new(id: &str, partition: i32, now_wall_ms: i64) -> ClassicGroup {
        ClassicGroup {
            id: id.to_string(),
            partition,
            state: GroupState::Empty,
            previous_state: GroupState::Dead,
            state_since_wall_ms: Some(now_wall_ms),
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeSet::new(),
            pending_sync: BTreeSet::new(),
            new_member_added: false,
            initial_delay: None,
            subscribed_topics: None,
            offsets: BTreeMap::new(),
        }
    }

    /// A group as its last GroupMetadata record describes it: Stable with its members, or
    /// Empty.
    pub fn from_record(id: &str, partition: i32, value: GroupMetadataValue) -> ClassicGroup {
        let mut g = ClassicGroup::new(id, partition, 0);
        g.state = if value.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        g.state_since_wall_ms = Some(value.current_state_timestamp_ms).filter(|&t| t != -1);
        g.generation = value.generation;
        g.protocol_type = Some(value.protocol_type).filter(|t| !t.is_empty());
        g.protocol_name = value.protocol;
        let protocol = g.protocol_name.clone().unwrap_or_default();
        for m in value.members {
            if let Some(instance) = &m.group_instance_id {
                g.static_members.insert(instance.clone(), m.member_id.clone());
            }
            let member = Member {
                id: m.member_id.clone(),
                instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                protocols: vec![Protocol {
                    name: protocol.clone(),
                    metadata: m.subscription,
                }],
                assignment: m.assignment,
                awaiting_join: None,
                awaiting_sync: None,
                is_new: false,
            };
            g.members.insert(m.member_id, member);
        }
        // A record names its leader; an unknown one (a corrupt record) falls back to any.
        g.leader = value
            .leader
            .filter(|l| g.members.contains_key(l))
            .or_else(|| g.members.keys().next().cloned());
        g.subscribed_topics = g.compute_subscribed_topics();
        g
    }

    /// The GroupMetadata record for this group with `assignment` (members missing from it
    /// get an empty assignment).
    pub fn to_record(&self, assignment: &BTreeMap<String, Bytes>) -> GroupMetadataValue {
        let protocol = self.protocol_name.as_deref().unwrap_or("");
        GroupMetadataValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol_name.clone(),
            leader: self.leader.clone(),
            current_state_timestamp_ms: self.state_since_wall_ms.unwrap_or(-1),
            members: self
                .members
                .values()
                .map(|m| MemberMetadata {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(protocol).cloned().unwrap_or_default(),
                    assignment: assignment.get(&m.id).cloned().unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// The current assignment of every member.
    pub fn assignment(&self) -> BTreeMap<String, Bytes> {
        self.members
            .iter()
            .map(|(id, m)| (id.clone(), m.assignment.clone()))
            .collect()
    }

    pub fn is(&self, state: GroupState) -> bool {
        self.state == state
    }

    pub fn transition(&mut self, to: GroupState, now_wall_ms: i64) {
        assert!(
            to.can_follow(self.state),
            "group {}: invalid transition {:?} -> {:?}",
            self.id,
            self.state,
            to
        );
        self.previous_state = self.state;
        self.state = to;
        self.state_since_wall_ms = Some(now_wall_ms);
    }

    /// An Empty group whose tombstones are being written: Dead, keeping its state timestamp
    /// so that a failed deletion does not restart its retention.
    pub fn mark_deleting(&mut self) {
        assert!(
            self.is(GroupState::Empty),
            "group {}: deleting a {:?} group",
            self.id,
            self.state
        );
        self.previous_state = self.state;
        self.state = GroupState::Dead;
    }

    /// The deletion failed: back to Empty, as before it.
    pub fn unmark_deleting(&mut self) {
        assert!(
            self.is(GroupState::Dead),
            "group {}: undeleting a {:?} group",
            self.id,
            self.state
        );
        self.previous_state = GroupState::Dead;
        self.state = GroupState::Empty;
    }

    pub fn can_rebalance(&self) -> bool {
        GroupState::PreparingRebalance.can_follow(self.state)
    }

    pub fn add(&mut self, member: Member) {
        assert!(!self.members.contains_key(&member.id), "member added twice");
        if let Some(instance) = &member.instance_id {
            let previous = self.static_members.insert(instance.clone(), member.id.clone());
            assert!(previous.is_none(), "static member {instance} added twice");
        }
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(member.id.clone());
        }
        self.pending_members.remove(&member.id);
        self.members.insert(member.id.clone(), member);
    }

    /// Removes a member (its parked requests are the caller's to answer).
    pub fn remove(&mut self, member_id: &str) -> Option<Member> {
        let removed = self.members.remove(member_id);
        if let Some(m) = &removed {
            if let Some(instance) = &m.instance_id {
                self.static_members.remove(instance);
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
        self.pending_members.remove(member_id);
        self.pending_sync.remove(member_id);
        removed
    }

    /// Gives a static member a new member id, keeping everything else; returns the member
    /// as it was (its parked requests are the caller's to fence).
    pub fn replace_static(&mut self, instance: &str, old_id: &str, new_id: &str) -> Member {
        let old = self.members.remove(old_id).expect("replacing a known member");
        debug_assert_eq!(old.instance_id.as_deref(), Some(instance));
        let mut member = old.clone();
        member.id = new_id.to_string();
        member.awaiting_join = None;
        member.awaiting_sync = None;
        self.members.insert(new_id.to_string(), member);
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.to_string());
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.to_string());
        }
        self.static_members
            .insert(instance.to_string(), new_id.to_string());
        old
    }

    pub fn num_awaiting_join(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.awaiting_join.is_some())
            .count()
    }

    pub fn has_all_members_joined(&self) -> bool {
        self.members.len() == self.num_awaiting_join() && self.pending_members.is_empty()
    }

    /// The largest rebalance timeout of the members (Kafka's group rebalance timeout).
    pub fn rebalance_timeout_ms(&self) -> u64 {
        self.members
            .values()
            .map(Member::rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    /// Protocols every member supports, in name order.
    fn candidate_protocols(&self) -> Vec<&str> {
        let Some(first) = self.members.values().next() else {
            return Vec::new();
        };
        let mut names: Vec<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| self.members.values().all(|m| m.supports(name)))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The protocol with most votes among those every member supports; each member votes
    /// for its most preferred candidate. Ties go to the name that sorts first.
    pub fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(name) = m.vote(&candidates) {
                *votes.entry(name).or_default() += 1;
            }
        }
        let best = votes.values().copied().max()?;
        votes
            .into_iter()
            .find(|&(_, n)| n == best)
            .map(|(name, _)| name.to_string())
    }

    /// Whether a member of `protocol_type` offering `names` may join (Kafka's
    /// `supportsProtocols`).
    pub fn supports_protocols(&self, protocol_type: &str, names: &[&str]) -> bool {
        if self.is(GroupState::Empty) {
            return !protocol_type.is_empty() && !names.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && names
                .iter()
                .any(|name| self.members.values().all(|m| m.supports(name)))
    }

    /// Keeps the leader if it rejoined, else elects the first member that did. False when
    /// no member rejoined (or there are none).
    pub fn maybe_elect_new_joined_leader(&mut self) -> bool {
        let Some(leader) = &self.leader else {
            return false;
        };
        if self
            .members
            .get(leader)
            .is_some_and(|m| m.awaiting_join.is_some())
        {
            return true;
        }
        match self.members.values().find(|m| m.awaiting_join.is_some()) {
            Some(m) => {
                self.leader = Some(m.id.clone());
                true
            }
            None => false,
        }
    }

    /// Kafka's `validateMember`: a given instance id must map to this member id, and the
    /// member must exist.
    pub fn validate_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), i16> {
        if let Some(instance) = instance_id {
            match self.static_members.get(instance) {
                None => return Err(code::UNKNOWN_MEMBER_ID),
                Some(existing) if existing != member_id => return Err(code::FENCED_INSTANCE_ID),
                Some(_) => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(code::UNKNOWN_MEMBER_ID);
        }
        Ok(())
    }

    pub fn uses_consumer_protocol(&self) -> bool {
        self.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE)
    }

    /// The union of the members' subscribed topics, read as ConsumerProtocolSubscription
    /// version 0 (the prefix of every version), as Kafka does; `None` when unknown.
    pub fn compute_subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if !self.uses_consumer_protocol() {
            return None;
        }
        if self.members.is_empty() {
            return Some(BTreeSet::new());
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = BTreeSet::new();
        for m in self.members.values() {
            let mut buf = m.metadata(protocol)?.clone();
            if buf.remaining() < 2 || buf.get_i16() < 0 {
                return None;
            }
            let sub = ConsumerProtocolSubscription::decode(&mut buf, 0).ok()?;
            topics.extend(sub.topics.into_iter().map(|t| t.as_str().to_string()));
        }
        Some(topics)
    }

    /// Whether the group consumes `topic` (unknown subscriptions count as "yes" for
    /// consumer groups, as in Kafka).
    pub fn is_subscribed_to(&self, topic: &str) -> bool {
        match &self.subscribed_topics {
            Some(topics) => topics.contains(topic),
            None => self.uses_consumer_protocol(),
        }
    }

    /// Checks the invariants in the module docs; O(members).
    pub fn check(&self) {
        assert_eq!(
            self.leader.is_some(),
            !self.members.is_empty(),
            "group {}: leader",
            self.id
        );
        if let Some(leader) = &self.leader {
            assert!(
                self.members.contains_key(leader),
                "group {}: leader not a member",
                self.id
            );
        }
        for (instance, id) in &self.static_members {
            let m = self.members.get(id).expect("static member is a member");
            assert_eq!(m.instance_id.as_deref(), Some(instance.as_str()));
        }
        let statics = self.members.values().filter(|m| m.instance_id.is_some()).count();
        assert_eq!(
            statics,
            self.static_members.len(),
            "group {}: static map",
            self.id
        );
        for (id, m) in &self.members {
            assert_eq!(&m.id, id);
            assert!(!self.pending_members.contains(id), "pending member is a member");
            if !self.is(GroupState::PreparingRebalance) {
                assert!(
                    m.awaiting_join.is_none() || m.instance_id.is_some(),
                    "group {}: {id} waits in JoinGroup in {:?}",
                    self.id,
                    self.state
                );
            }
            if !self.is(GroupState::CompletingRebalance) {
                assert!(
                    m.awaiting_sync.is_none(),
                    "group {}: {id} waits in SyncGroup",
                    self.id
                );
            }
        }
        assert!(self.pending_sync.iter().all(|id| self.members.contains_key(id)));
        if self.is(GroupState::Empty) {
            assert!(self.members.is_empty(), "group {}: Empty with members", self.id);
        }
        if self.is(GroupState::Stable) || self.is(GroupState::CompletingRebalance) {
            assert!(self.protocol_name.is_some(), "group {}: no protocol", self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn member(id: &str, protocols: &[&str]) -> Member {
        Member {
            id: id.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            rebalance_timeout_ms: 100,
            session_timeout_ms: 100,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|n| Protocol {
                    name: n.to_string(),
                    metadata: subscription(&["t1"]),
                })
                .collect(),
            assignment: Bytes::new(),
            awaiting_join: None,
            awaiting_sync: None,
            is_new: false,
        }
    }

    pub(crate) fn subscription(topics: &[&str]) -> Bytes {
        let mut sub = ConsumerProtocolSubscription::default();
        sub.topics = topics
            .iter()
            .map(|t| StrBytes::from_string(t.to_string()))
            .collect();
        let mut buf = bytes::BytesMut::new();
        bytes::BufMut::put_i16(&mut buf, 1);
        sub.encode(&mut buf, 1).unwrap();
        buf.freeze()
    }

    #[test]
    fn protocol_vote_picks_the_majority_among_common_protocols() {
        let mut g = ClassicGroup::new("g", 0, 0);
        g.add(member("a", &["roundrobin", "range"]));
        g.add(member("b", &["range", "roundrobin"]));
        g.add(member("c", &["range", "roundrobin", "sticky"]));
        assert_eq!(g.select_protocol().as_deref(), Some("range"));
        // A tie (one vote each) goes to the name that sorts first.
        g.remove("c");
        assert_eq!(g.select_protocol().as_deref(), Some("range"));
        g.remove("b");
        assert_eq!(g.select_protocol().as_deref(), Some("roundrobin"));
    }

    #[test]
    fn leader_moves_on_removal_and_supports_checks_all_members() {
        let mut g = ClassicGroup::new("g", 0, 0);
        g.state = GroupState::Stable;
        g.add(member("b", &["range"]));
        g.add(member("a", &["range", "sticky"]));
        assert_eq!(g.leader.as_deref(), Some("b"));
        assert!(g.supports_protocols("consumer", &["range"]));
        assert!(!g.supports_protocols("consumer", &["sticky"]));
        assert!(!g.supports_protocols("connect", &["range"]));
        g.remove("b");
        assert_eq!(g.leader.as_deref(), Some("a"));
        g.remove("a");
        assert_eq!(g.leader, None);
    }

    #[test]
    fn subscribed_topics_come_from_the_selected_protocol() {
        let mut g = ClassicGroup::new("g", 0, 0);
        g.add(member("a", &["range"]));
        g.protocol_name = Some("range".into());
        assert_eq!(
            g.compute_subscribed_topics(),
            Some(BTreeSet::from(["t1".to_string()]))
        );
        g.members.get_mut("a").unwrap().protocols[0].metadata = Bytes::from_static(&[0, 0, 0]);
        assert_eq!(g.compute_subscribed_topics(), None, "garbage subscription");
        assert!(g.is_subscribed_to("anything"), "unknown counts as subscribed");
    }

    #[test]
    #[should_panic(expected = "invalid transition")]
    fn invalid_transitions_are_refused() {
        let mut g = ClassicGroup::new("g", 0, 0);
        g.transition(GroupState::Stable, 1);
    }
}
