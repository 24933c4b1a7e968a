//! Per-step Raft invariants over every node of a run, read from the engines through
//! [`Engine::replica_status`](gregor_engine::Engine::replica_status) after each step of the
//! node that stepped, plus checks of the peer messages that step sent. What it owns: a memory
//! of the whole run (every incarnation of every node), so a violation that spans a crash is
//! still seen. The invariants:
//!
//! 1. `two-leaders`: at most one leader per (group, term), over the whole run.
//! 2. `committed-diverge`: committed prefixes agree. Every replica's log, below its commit
//!    end, has the same epoch at every offset as the longest committed prefix seen so far.
//! 3. `hw-past-quorum`: a leader's commit end never passes what a majority of its voters hold
//!    durably in a prefix that matches its log (down voters count with their last status).
//! 4. `durable-term-regress` / `durable-vote-changed`: a node's durable (term, vote) for a
//!    group never goes back, across its restarts.
//! 5. `commit-regress`: a replica's commit end never goes down while it is up (a crash, or a
//!    halt to rewind its log, starts it afresh).
//!
//! And for each Raft message a step sent: `sent-before-persist` (a message carries a term
//! its sender has not made durable), `vote-before-persist` (a granted vote not yet durable),
//! `ack-before-fsync` (a follower acknowledges past its durable end).

use std::collections::BTreeMap;

use gregor_engine::raft::{AppendResult, RaftMsg, Role};
use gregor_engine::replica::{Envelope, GroupId, ReplicaStatus};

/// A broker id.
pub type NodeId = i32;

/// One broken invariant: its class and what shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broken {
    pub kind: &'static str,
    pub detail: String,
}

/// The epoch of the entry at `offset` from an epoch history `(epoch, first offset)`
/// (ascending); `None` below the first entry.
pub fn epoch_at(epochs: &[(i32, u64)], offset: u64) -> Option<i32> {
    let i = epochs.partition_point(|&(_, start)| start <= offset);
    i.checked_sub(1).map(|i| epochs[i].0)
}

/// The end of the longest prefix below `end_max` on which two epoch histories agree (the
/// first offset whose epoch differs, or `end_max`). The epoch changes only at the starts
/// listed, so comparing there is enough.
pub fn agreed_end(a: &[(i32, u64)], b: &[(i32, u64)], end_max: u64) -> u64 {
    let mut points: Vec<u64> = a
        .iter()
        .chain(b.iter())
        .map(|&(_, start)| start)
        .filter(|&s| s < end_max)
        .collect();
    points.push(0);
    points.sort_unstable();
    points.dedup();
    points
        .into_iter()
        .find(|&o| o < end_max && epoch_at(a, o) != epoch_at(b, o))
        .unwrap_or(end_max)
}

/// What a replica treats as committed: below its commit end, and below its log end (a
/// halted replica's log may have rewound under its commit end).
fn committed_end(s: &ReplicaStatus) -> u64 {
    s.commit_end.min(s.log_end)
}

/// The term a replica's disk pins down: its durable hard state, or the epoch of its last
/// durable entry (a restart derives its term from that, without rewriting the state file).
fn durable_term_effective(s: &ReplicaStatus) -> i32 {
    let log_term = s
        .durable_end
        .checked_sub(1)
        .and_then(|last| epoch_at(&s.epochs, last))
        .unwrap_or(0);
    s.durable_term.max(log_term)
}

/// The longest committed prefix seen for a group: its end, its epochs, who had it.
#[derive(Clone, Debug)]
struct Committed {
    end: u64,
    epochs: Vec<(i32, u64)>,
    node: NodeId,
}

/// The run-long memory the invariants need.
#[derive(Clone, Debug, Default)]
pub struct Invariants {
    /// (group, term) -> the node seen leading it.
    leaders: BTreeMap<(GroupId, i32), NodeId>,
    /// Per group, the longest committed prefix seen.
    committed: BTreeMap<GroupId, Committed>,
    /// Per (group, node): its last status (kept when it goes down: its durable data stays).
    last: BTreeMap<(GroupId, NodeId), ReplicaStatus>,
    /// Per (group, node): the highest durable (term, vote) seen, over its incarnations.
    durable: BTreeMap<(GroupId, NodeId), (i32, Option<NodeId>)>,
    /// Per (group, node): the commit end seen in this incarnation of the replica.
    commit: BTreeMap<(GroupId, NodeId), u64>,
    /// Statuses observed (for the run summary and tests).
    pub observed: u64,
}

impl Invariants {
    /// Node `node` crashed (or stopped): its replicas start afresh when it comes back.
    pub fn on_crash(&mut self, node: NodeId) {
        self.commit.retain(|&(_, n), _| n != node);
    }

    /// Checks `node`'s replicas as they are after one of its steps.
    pub fn observe(&mut self, node: NodeId, statuses: &[ReplicaStatus]) -> Vec<Broken> {
        let mut out = Vec::new();
        for s in statuses {
            self.observed += 1;
            self.check_leader(node, s, &mut out);
            self.check_committed(node, s, &mut out);
            self.check_durable_state(node, s, &mut out);
            self.check_commit_monotonic(node, s, &mut out);
            self.last.insert((s.group, node), s.clone());
            self.check_quorum(node, s, &mut out);
        }
        out
    }

    fn check_leader(&mut self, node: NodeId, s: &ReplicaStatus, out: &mut Vec<Broken>) {
        if s.role != Role::Leader {
            return;
        }
        let first = *self.leaders.entry((s.group, s.term)).or_insert(node);
        if first != node {
            out.push(Broken {
                kind: "two-leaders",
                detail: format!("{}: nodes {first} and {node} both lead term {}", name(s), s.term),
            });
        }
    }

    fn check_committed(&mut self, node: NodeId, s: &ReplicaStatus, out: &mut Vec<Broken>) {
        let end = committed_end(s);
        match self.committed.get(&s.group) {
            Some(c) => {
                let m = end.min(c.end);
                let agreed = agreed_end(&s.epochs, &c.epochs, m);
                if agreed < m {
                    out.push(Broken {
                        kind: "committed-diverge",
                        detail: format!(
                            "{}: node {node} (commit end {}, epochs {:?}) has epoch {:?} at offset {agreed}, \
                             node {} committed epoch {:?} there (commit end {}, epochs {:?})",
                            name(s),
                            s.commit_end,
                            s.epochs,
                            epoch_at(&s.epochs, agreed),
                            c.node,
                            epoch_at(&c.epochs, agreed),
                            c.end,
                            c.epochs
                        ),
                    });
                    return;
                }
                if end <= c.end {
                    return;
                }
            }
            None if end == 0 => return,
            None => {}
        }
        let epochs = s
            .epochs
            .iter()
            .copied()
            .filter(|&(_, start)| start < end)
            .collect();
        self.committed.insert(s.group, Committed { end, epochs, node });
    }

    fn check_durable_state(&mut self, node: NodeId, s: &ReplicaStatus, out: &mut Vec<Broken>) {
        let now = (s.durable_term, s.durable_vote);
        let Some(&(term, vote)) = self.durable.get(&(s.group, node)) else {
            self.durable.insert((s.group, node), now);
            return;
        };
        if s.durable_term < term {
            out.push(Broken {
                kind: "durable-term-regress",
                detail: format!(
                    "{}: node {node}'s durable term went from {term} to {}",
                    name(s),
                    s.durable_term
                ),
            });
            return;
        }
        if s.durable_term == term && vote.is_some() && s.durable_vote != vote {
            out.push(Broken {
                kind: "durable-vote-changed",
                detail: format!(
                    "{}: node {node}'s durable vote in term {term} went from {vote:?} to {:?}",
                    name(s),
                    s.durable_vote
                ),
            });
            return;
        }
        self.durable.insert((s.group, node), now);
    }

    fn check_commit_monotonic(&mut self, node: NodeId, s: &ReplicaStatus, out: &mut Vec<Broken>) {
        let key = (s.group, node);
        if s.halted {
            // It restarts its core from disk once its log has rewound: a new life.
            self.commit.remove(&key);
            return;
        }
        let prev = self.commit.insert(key, s.commit_end);
        if let Some(prev) = prev.filter(|&p| s.commit_end < p) {
            out.push(Broken {
                kind: "commit-regress",
                detail: format!(
                    "{}: node {node}'s commit end went from {prev} to {} while up",
                    name(s),
                    s.commit_end
                ),
            });
        }
    }

    /// A voter's durable end within the prefix it shares with `leader`'s log.
    fn matched_durable(&self, group: GroupId, voter: NodeId, leader: &ReplicaStatus) -> u64 {
        let Some(v) = self.last.get(&(group, voter)) else {
            return 0;
        };
        let m = v.durable_end.min(leader.log_end);
        agreed_end(&v.epochs, &leader.epochs, m)
    }

    fn check_quorum(&self, node: NodeId, s: &ReplicaStatus, out: &mut Vec<Broken>) {
        // A halted leader's log may have rewound under a commit end its followers hold; it
        // leads nothing until its core restarts.
        if s.role != Role::Leader || s.voters.is_empty() || s.halted {
            return;
        }
        let mut ends: Vec<(u64, NodeId)> = s
            .voters
            .iter()
            .map(|&v| {
                let end = if v == node {
                    s.durable_end
                } else {
                    self.matched_durable(s.group, v, s)
                };
                (end, v)
            })
            .collect();
        ends.sort_unstable_by(|a, b| b.cmp(a));
        let majority = s.voters.len() / 2 + 1;
        let quorum_end = ends[majority - 1].0;
        if s.commit_end > quorum_end {
            out.push(Broken {
                kind: "hw-past-quorum",
                detail: format!(
                    "{}: leader {node} (term {}) has commit end {}, but a majority holds only up to {quorum_end} \
                     durably (durable end per voter: {ends:?})",
                    name(s),
                    s.term,
                    s.commit_end
                ),
            });
        }
    }

    /// Checks the Raft messages `node` sent to `to` in one step against its replicas as
    /// they are after that step.
    pub fn check_sent(
        &self,
        node: NodeId,
        to: NodeId,
        env: &Envelope,
        statuses: &[ReplicaStatus],
    ) -> Vec<Broken> {
        let mut out = Vec::new();
        for (group, msg) in &env.raft {
            let Some(s) = statuses.iter().find(|s| s.group == *group) else {
                continue;
            };
            check_message(node, to, s, msg, &mut out);
        }
        out
    }
}

fn check_message(node: NodeId, to: NodeId, s: &ReplicaStatus, msg: &RaftMsg, out: &mut Vec<Broken>) {
    let durable_term = durable_term_effective(s);
    let pre_vote = matches!(msg, RaftMsg::PreVote { .. } | RaftMsg::PreVoteResp { .. });
    if !pre_vote && msg.term() > durable_term {
        out.push(Broken {
            kind: "sent-before-persist",
            detail: format!(
                "{}: node {node} sent {} to {to} in term {} with durable term {}",
                name(s),
                msg_name(msg),
                msg.term(),
                s.durable_term
            ),
        });
    }
    match *msg {
        RaftMsg::VoteResp { term, granted: true } => {
            let durable = s.durable_term > term || (s.durable_term == term && s.durable_vote == Some(to));
            if !durable {
                out.push(Broken {
                    kind: "vote-before-persist",
                    detail: format!(
                        "{}: node {node} granted its term-{term} vote to {to}; durable (term, vote) is ({}, {:?})",
                        name(s),
                        s.durable_term,
                        s.durable_vote
                    ),
                });
            }
        }
        RaftMsg::AppendResp {
            result: AppendResult::Ok { durable_end, .. },
            ..
        }
        | RaftMsg::HeartbeatResp { durable_end, .. }
            if durable_end > s.durable_end =>
        {
            out.push(Broken {
                kind: "ack-before-fsync",
                detail: format!(
                    "{}: node {node} told leader {to} it holds up to {durable_end} durably; its durable end is {}",
                    name(s),
                    s.durable_end
                ),
            });
        }
        _ => {}
    }
}

fn msg_name(msg: &RaftMsg) -> &'static str {
    match msg {
        RaftMsg::PreVote { .. } => "PreVote",
        RaftMsg::PreVoteResp { .. } => "PreVoteResp",
        RaftMsg::Vote { .. } => "Vote",
        RaftMsg::VoteResp { .. } => "VoteResp",
        RaftMsg::Append { .. } => "Append",
        RaftMsg::AppendResp { .. } => "AppendResp",
        RaftMsg::Heartbeat { .. } => "Heartbeat",
        RaftMsg::HeartbeatResp { .. } => "HeartbeatResp",
    }
}

/// `topic-partition` of a status, for messages.
fn name(s: &ReplicaStatus) -> String {
    format!("{}-{}", s.topic, s.partition)
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: GroupId = GroupId {
        topic_id: 7,
        partition: 0,
    };

    /// A healthy replica of G on a 3-voter group: everything durable and committed.
    fn status(role: Role, term: i32, end: u64) -> ReplicaStatus {
        ReplicaStatus {
            group: G,
            topic: "sim".to_string(),
            partition: 0,
            voters: vec![1, 2, 3],
            role,
            term,
            leader: None,
            durable_term: term,
            durable_vote: None,
            commit_end: end,
            log_start: 0,
            log_end: end,
            durable_end: end,
            epochs: vec![(1, 0)],
            halted: false,
        }
    }

    fn kinds(v: &[Broken]) -> Vec<&'static str> {
        v.iter().map(|b| b.kind).collect()
    }

    #[test]
    fn epoch_lookup_and_agreement() {
        let a = [(1, 0), (3, 10), (4, 20)];
        assert_eq!(epoch_at(&a, 0), Some(1));
        assert_eq!(epoch_at(&a, 9), Some(1));
        assert_eq!(epoch_at(&a, 10), Some(3));
        assert_eq!(epoch_at(&a, 100), Some(4));
        assert_eq!(epoch_at(&[(2, 5)], 4), None);
        assert_eq!(epoch_at(&[], 0), None);
        let b = [(1, 0), (3, 10), (5, 15)];
        assert_eq!(agreed_end(&a, &b, 30), 15);
        assert_eq!(agreed_end(&a, &b, 12), 12);
        assert_eq!(agreed_end(&a, &a, 30), 30);
        assert_eq!(agreed_end(&[(2, 0)], &b, 30), 0);
        assert_eq!(agreed_end(&[], &[], 0), 0);
    }

    #[test]
    fn a_healthy_cluster_breaks_nothing() {
        let mut inv = Invariants::default();
        for round in 1..=5u64 {
            let end = round * 10;
            let mut leader = status(Role::Leader, 1, end);
            leader.leader = Some(1);
            let follower = status(Role::Follower, 1, end);
            assert_eq!(inv.observe(2, std::slice::from_ref(&follower)), vec![]);
            assert_eq!(inv.observe(3, std::slice::from_ref(&follower)), vec![]);
            assert_eq!(inv.observe(1, &[leader]), vec![]);
        }
        inv.on_crash(2);
        let mut restarted = status(Role::Follower, 1, 50);
        restarted.commit_end = 0;
        assert_eq!(
            inv.observe(2, &[restarted]),
            vec![],
            "a restart starts commit afresh"
        );
    }

    #[test]
    fn two_leaders_in_one_term_are_caught_across_a_crash() {
        let mut inv = Invariants::default();
        assert!(inv.observe(1, &[status(Role::Leader, 4, 0)]).is_empty());
        inv.on_crash(1);
        assert!(inv.observe(2, &[status(Role::Leader, 5, 0)]).is_empty());
        assert_eq!(
            kinds(&inv.observe(3, &[status(Role::Leader, 4, 0)])),
            vec!["two-leaders"]
        );
    }

    #[test]
    fn diverging_committed_prefixes_are_caught() {
        let mut inv = Invariants::default();
        let mut a = status(Role::Follower, 3, 20);
        a.epochs = vec![(1, 0), (2, 10)];
        assert!(inv.observe(1, &[a]).is_empty());
        let mut b = status(Role::Follower, 3, 20);
        b.epochs = vec![(1, 0), (2, 10), (3, 12)];
        b.commit_end = 12; // agrees below 12
        assert!(inv.observe(2, &[b.clone()]).is_empty());
        b.commit_end = 13; // epoch 3 at offset 12, where epoch 2 was committed
        let broken = inv.observe(2, &[b]);
        assert_eq!(kinds(&broken), vec!["committed-diverge"]);
        assert!(broken[0].detail.contains("offset 12"), "{}", broken[0].detail);
    }

    #[test]
    fn commit_beyond_a_quorums_durable_end_is_caught() {
        let mut inv = Invariants::default();
        let mut f2 = status(Role::Follower, 1, 10);
        f2.log_end = 20;
        let mut f3 = f2.clone();
        f3.durable_end = 5;
        f2.durable_end = 8;
        assert!(inv.observe(2, &[f2]).is_empty());
        assert!(inv.observe(3, &[f3]).is_empty());
        let mut leader = status(Role::Leader, 1, 20);
        leader.commit_end = 8; // itself and node 2 hold 8
        assert!(inv.observe(1, std::slice::from_ref(&leader)).is_empty());
        leader.commit_end = 9;
        let broken = inv.observe(1, std::slice::from_ref(&leader));
        assert_eq!(kinds(&broken), vec!["hw-past-quorum"]);
        // A halted leader whose own unsynced write failed rewinds below what it committed.
        leader.commit_end = 8;
        leader.log_end = 7;
        leader.durable_end = 7;
        leader.halted = true;
        assert!(inv.observe(1, &[leader]).is_empty());
    }

    #[test]
    fn a_durable_suffix_that_diverges_from_the_leader_does_not_count() {
        let mut inv = Invariants::default();
        let mut f2 = status(Role::Follower, 2, 20);
        f2.epochs = vec![(1, 0), (2, 10)]; // 10..20 from a deposed term-2 leader
        f2.commit_end = 10;
        assert!(inv.observe(2, &[f2]).is_empty());
        let mut leader = status(Role::Leader, 3, 20);
        leader.epochs = vec![(1, 0), (3, 10)];
        leader.commit_end = 15;
        assert_eq!(kinds(&inv.observe(1, &[leader])), vec!["hw-past-quorum"]);
    }

    #[test]
    fn durable_term_and_vote_never_go_back() {
        let mut inv = Invariants::default();
        let mut s = status(Role::Follower, 5, 0);
        s.durable_vote = Some(2);
        assert!(inv.observe(1, std::slice::from_ref(&s)).is_empty());
        inv.on_crash(1);
        let mut other_vote = s.clone();
        other_vote.durable_vote = Some(3);
        assert_eq!(
            kinds(&inv.observe(1, &[other_vote])),
            vec!["durable-vote-changed"]
        );
        let mut older = s.clone();
        older.durable_term = 4;
        older.term = 4;
        assert_eq!(kinds(&inv.observe(1, &[older])), vec!["durable-term-regress"]);
        s.durable_term = 6;
        s.durable_vote = None;
        assert!(inv.observe(1, &[s]).is_empty());
    }

    #[test]
    fn commit_going_down_while_up_is_caught_but_not_after_a_crash_or_halt() {
        let mut inv = Invariants::default();
        assert!(inv.observe(1, &[status(Role::Follower, 1, 10)]).is_empty());
        let mut lower = status(Role::Follower, 1, 10);
        lower.commit_end = 7;
        assert_eq!(
            kinds(&inv.observe(1, std::slice::from_ref(&lower))),
            vec!["commit-regress"]
        );
        inv.on_crash(1);
        lower.commit_end = 3;
        assert!(inv.observe(1, std::slice::from_ref(&lower)).is_empty());
        let mut halted = lower.clone();
        halted.halted = true;
        assert!(inv.observe(1, &[halted]).is_empty());
        lower.commit_end = 1;
        assert!(inv.observe(1, &[lower]).is_empty());
    }

    fn env(msg: RaftMsg) -> Envelope {
        Envelope {
            raft: vec![(G, msg)],
            control: vec![],
        }
    }

    #[test]
    fn messages_must_follow_durable_state() {
        let inv = Invariants::default();
        let mut s = status(Role::Follower, 4, 10);
        s.durable_end = 8;
        s.durable_vote = Some(2);
        let ok = [
            RaftMsg::VoteResp {
                term: 4,
                granted: true,
            },
            RaftMsg::HeartbeatResp {
                term: 4,
                durable_end: 8,
                log_end: 10,
            },
            RaftMsg::PreVote {
                term: 5,
                last_end: 10,
                last_epoch: 1,
            },
        ];
        for m in ok {
            assert_eq!(inv.check_sent(1, 2, &env(m), std::slice::from_ref(&s)), vec![]);
        }
        let vote_to_3 = RaftMsg::VoteResp {
            term: 4,
            granted: true,
        };
        assert_eq!(
            kinds(&inv.check_sent(1, 3, &env(vote_to_3), std::slice::from_ref(&s))),
            vec!["vote-before-persist"]
        );
        let ahead = RaftMsg::AppendResp {
            term: 4,
            result: AppendResult::Ok {
                durable_end: 9,
                match_end: 10,
            },
        };
        assert_eq!(
            kinds(&inv.check_sent(1, 2, &env(ahead), std::slice::from_ref(&s))),
            vec!["ack-before-fsync"]
        );
        let future = RaftMsg::Vote {
            term: 5,
            last_end: 10,
            last_epoch: 1,
        };
        assert_eq!(
            kinds(&inv.check_sent(1, 2, &env(future), std::slice::from_ref(&s))),
            vec!["sent-before-persist"]
        );
        // A term the durable log pins down counts as durable.
        let mut restarted = s.clone();
        restarted.epochs = vec![(1, 0), (5, 6)];
        restarted.durable_term = 4;
        let resp = RaftMsg::AppendResp {
            term: 5,
            result: AppendResult::StaleTerm,
        };
        assert_eq!(inv.check_sent(1, 2, &env(resp), &[restarted]), vec![]);
    }
}
