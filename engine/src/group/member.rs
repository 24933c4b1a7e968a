//! A member of a classic group: its identity, timeouts, protocols, assignment, and the
//! JoinGroup/SyncGroup it has parked, if any.
//!
//! Invariant: a member has at most one parked JoinGroup and one parked SyncGroup; whoever
//! replaces or drops one answers it first.

use bytes::Bytes;

use super::Waiter;

/// A parked request: who to answer, in which API version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Parked {
    pub waiter: Waiter,
    pub version: i16,
}

/// One protocol a member supports (e.g. "range" with its subscription bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocol_type: String,
    /// In the member's order of preference.
    pub protocols: Vec<Protocol>,
    pub assignment: Bytes,
    pub awaiting_join: Option<Parked>,
    pub awaiting_sync: Option<Parked>,
    /// Joined in the current rebalance and not yet in a generation: its session deadline is
    /// the new-member join timeout, and waiting does not count as a heartbeat.
    pub is_new: bool,
}

impl Member {
    /// Whether the member's liveness is vouched for without a heartbeat: it has a request
    /// parked in the rebalance (Kafka's `hasSatisfiedHeartbeat`).
    pub fn has_satisfied_heartbeat(&self) -> bool {
        !self.is_new && (self.awaiting_join.is_some() || self.awaiting_sync.is_some())
    }

    pub fn metadata(&self, protocol: &str) -> Option<&Bytes> {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| &p.metadata)
    }

    pub fn supports(&self, protocol: &str) -> bool {
        self.metadata(protocol).is_some()
    }

    /// The member's most preferred protocol among `candidates`.
    pub fn vote<'a>(&'a self, candidates: &[&str]) -> Option<&'a str> {
        self.protocols
            .iter()
            .map(|p| p.name.as_str())
            .find(|name| candidates.contains(name))
    }

    pub fn rebalance_timeout_ms(&self) -> u64 {
        u64::try_from(self.rebalance_timeout_ms).unwrap_or(0)
    }

    pub fn session_timeout_ms(&self) -> u64 {
        u64::try_from(self.session_timeout_ms).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(protocols: &[&str]) -> Member {
        Member {
            id: "m".into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            rebalance_timeout_ms: 1,
            session_timeout_ms: 1,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|n| Protocol {
                    name: n.to_string(),
                    metadata: Bytes::new(),
                })
                .collect(),
            assignment: Bytes::new(),
            awaiting_join: None,
            awaiting_sync: None,
            is_new: false,
        }
    }

    #[test]
    fn votes_by_preference() {
        let m = member(&["cooperative-sticky", "range"]);
        assert_eq!(
            m.vote(&["range", "cooperative-sticky"]),
            Some("cooperative-sticky")
        );
        assert_eq!(m.vote(&["range"]), Some("range"));
        assert_eq!(m.vote(&["roundrobin"]), None);
    }

    #[test]
    fn heartbeat_satisfied_only_while_parked_and_not_new() {
        let mut m = member(&["range"]);
        assert!(!m.has_satisfied_heartbeat());
        m.awaiting_join = Some(Parked {
            waiter: 1,
            version: 5,
        });
        assert!(m.has_satisfied_heartbeat());
        m.is_new = true;
        assert!(!m.has_satisfied_heartbeat());
    }
}
