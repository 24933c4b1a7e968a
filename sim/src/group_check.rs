//! What the simulated group members saw ([`GroupHistory`]: every SyncGroup answer, every
//! offset commit and its outcome, every committed offset read back) and the three group
//! invariants, reported as [`Violation`]s:
//!
//! 1. `group-split-brain`: within one generation no partition is assigned to two members
//!    (and one member gets one assignment per generation: `group-assignment-changed`).
//! 2. `group-lost-commit` / `group-stale-commit` / `group-phantom-commit`: a committed offset
//!    read back is one a commit could have left there (the rule is below).
//! 3. `group-liveness`: after the heal, the live members reach a stable generation within
//!    [`GROUP_LIVENESS_MS`] ([`stable_generation`] says when they have).
//!
//! The read-back rule (2). Commits of one group go to one `__consumer_offsets` partition, so
//! the coordinator applies them in one order (the log's), and a read returns the latest
//! applied. Clients do not see that order, only real time: commit `W` precedes commit `V` for
//! sure when `W`'s acknowledgement reached its client before `V` was sent. Commits by
//! different members and generations may overwrite each other legitimately; the rule only
//! uses that real-time order. A read `R` of partition `p` that returned `(offset, metadata)`
//! is explained by a commit `C` of `p` with that value that
//!   - was sent before `R` completed,
//!   - was not rejected outright (an error the coordinator gives before it writes anything:
//!     `REBALANCE_IN_PROGRESS`, `ILLEGAL_GENERATION`, `UNKNOWN_MEMBER_ID`, ...; every other
//!     failure, a timeout or a lost connection leaves the commit in doubt: its write may
//!     still commit, even much later under a new leader, so a doubtful commit is never
//!     overwritten for sure), and
//!   - is not overwritten for sure before `R`: there is no acknowledged commit `V` of `p`
//!     sent after `C`'s acknowledgement arrived whose own acknowledgement arrived before `R`
//!     was sent.
//!
//! A read of "nothing committed" is wrong once any commit of `p` was acknowledged before it
//! was sent. Every member's metadata string is unique per commit (now and then a member
//! repeats its last commit exactly, which the coordinator may acknowledge without a write),
//! so a read names the commits it can come from. In a cluster, a coordinator deposed without
//! knowing it may answer reads from memory for a while (Kafka allows that read, as it allows
//! a deposed leader's high watermark): reads during the fault phase are checked only against
//! acknowledgements by the broker that answered them; the final read, after the heal once the
//! cluster has settled, against every acknowledgement.

use std::collections::{BTreeMap, BTreeSet};

use crate::check::Violation;
use crate::history::ProcessId;

/// After the heal, the live members must reach a stable generation within this (liveness
/// bound of invariant 3). It covers electing the `__consumer_offsets` leaders and loading the
/// group, the session timeout of members that crashed before the heal (at most 3 s here),
/// a rebalance (members rejoin within a heartbeat interval of learning of it) and a retry of
/// each after a lost answer (request timeout 5 s).
pub const GROUP_LIVENESS_MS: u64 = 20_000;

/// Kafka error codes the group clients and this checker name.
pub mod code {
    pub const NONE: i16 = 0;
    pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const MEMBER_ID_REQUIRED: i16 = 79;

    /// Errors the coordinator gives before it writes anything: such a commit never lands.
    pub fn rejects_commit_outright(code: i16) -> bool {
        matches!(
            code,
            OFFSET_METADATA_TOO_LARGE
                | COORDINATOR_LOAD_IN_PROGRESS
                | ILLEGAL_GENERATION
                | UNKNOWN_MEMBER_ID
                | REBALANCE_IN_PROGRESS
                | GROUP_ID_NOT_FOUND
        )
    }

    /// Errors that send a client to FindCoordinator again.
    pub fn coordinator_moved(code: i16) -> bool {
        matches!(
            code,
            NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE | COORDINATOR_LOAD_IN_PROGRESS
        )
    }
}

/// One SyncGroup answered without error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRecord {
    pub at_ms: u64,
    pub process: ProcessId,
    pub member_id: String,
    pub generation: i32,
    /// The partitions of the topic it was assigned, sorted.
    pub partitions: Vec<i32>,
}

/// How a commit of one partition ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    Pending,
    /// Acknowledged (error 0) by broker `node`; the answer arrived at `at_ms`.
    Acked {
        at_ms: u64,
        node: usize,
    },
    /// Refused before anything was written.
    Rejected {
        code: i16,
    },
    /// Any other error, a timeout or a lost connection: it may or may not land.
    InDoubt,
}

/// One partition of one OffsetCommit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitRecord {
    pub process: ProcessId,
    pub generation: i32,
    pub partition: i32,
    pub offset: i64,
    pub metadata: String,
    pub sent_ms: u64,
    pub outcome: CommitOutcome,
}

/// One partition of one OffsetFetch answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRecord {
    pub process: ProcessId,
    /// The broker that answered.
    pub node: usize,
    pub sent_ms: u64,
    pub answered_ms: u64,
    pub partition: i32,
    /// `(offset, metadata)`; `None`: nothing committed (offset -1).
    pub value: Option<(i64, String)>,
    /// The final read (faults healed, cluster settled): checked against every broker's
    /// acknowledgements.
    pub final_read: bool,
}

/// Everything the group members saw.
#[derive(Clone, Debug, Default)]
pub struct GroupHistory {
    pub syncs: Vec<SyncRecord>,
    pub commits: Vec<CommitRecord>,
    pub reads: Vec<ReadRecord>,
}

impl GroupHistory {
    /// Registers a commit about to be sent; returns its index for [`GroupHistory::settle`].
    pub fn commit_sent(&mut self, c: CommitRecord) -> usize {
        self.commits.push(c);
        self.commits.len() - 1
    }

    /// Records how commit `i` ended (once; later calls are ignored).
    pub fn settle(&mut self, i: usize, outcome: CommitOutcome) {
        if let Some(c) = self.commits.get_mut(i) {
            if c.outcome == CommitOutcome::Pending {
                c.outcome = outcome;
            }
        }
    }
}

/// What the checks need besides the history.
#[derive(Clone, Copy, Debug)]
pub struct GroupCheckParams {
    pub partitions: i32,
    /// More than one broker: fault-phase reads are checked per answering broker.
    pub cluster: bool,
    pub end_ms: u64,
}

/// Invariants 1 and 2 over a whole run.
pub fn check_group_history(h: &GroupHistory, params: &GroupCheckParams) -> Vec<Violation> {
    let mut out = Vec::new();
    check_assignments(h, params, &mut out);
    for r in &h.reads {
        if let Some(detail) = check_read(h, r, params.cluster) {
            let kind = detail.0;
            out.push(Violation {
                kind,
                at_ms: r.answered_ms,
                detail: detail.1,
            });
        }
    }
    out.sort();
    out
}

/// Invariant 1: per generation, each partition has at most one owner, and each member one
/// assignment.
fn check_assignments(h: &GroupHistory, params: &GroupCheckParams, out: &mut Vec<Violation>) {
    // generation -> partition -> members; (generation, member) -> first assignment.
    let mut owners: BTreeMap<i32, BTreeMap<i32, BTreeSet<&str>>> = BTreeMap::new();
    let mut first: BTreeMap<(i32, &str), &SyncRecord> = BTreeMap::new();
    let mut v = |kind: &'static str, at_ms: u64, detail: String| out.push(Violation { kind, at_ms, detail });
    for s in &h.syncs {
        match first.get(&(s.generation, s.member_id.as_str())) {
            Some(f) if f.partitions != s.partitions => v(
                "group-assignment-changed",
                s.at_ms,
                format!(
                    "generation {}: member {} was assigned {:?} at {}ms, then {:?}",
                    s.generation, s.member_id, f.partitions, f.at_ms, s.partitions
                ),
            ),
            Some(_) => {}
            None => {
                first.insert((s.generation, s.member_id.as_str()), s);
            }
        }
        for &p in &s.partitions {
            if !(0..params.partitions).contains(&p) {
                let detail = format!(
                    "generation {}: member {} assigned partition {p} of a topic with {}",
                    s.generation, s.member_id, params.partitions
                );
                v("group-bad-assignment", s.at_ms, detail);
            }
            owners
                .entry(s.generation)
                .or_default()
                .entry(p)
                .or_default()
                .insert(s.member_id.as_str());
        }
    }
    for (generation, parts) in owners {
        for (p, members) in parts.into_iter().filter(|(_, m)| m.len() > 1) {
            let at_ms = h
                .syncs
                .iter()
                .filter(|s| s.generation == generation && s.partitions.contains(&p))
                .map(|s| s.at_ms)
                .max()
                .unwrap_or(params.end_ms);
            v(
                "group-split-brain",
                at_ms,
                format!("generation {generation}: partition {p} assigned to members {members:?}"),
            );
        }
    }
}

/// Invariant 2 for one read: `None` if some commit explains it, else the violation.
fn check_read(h: &GroupHistory, r: &ReadRecord, cluster: bool) -> Option<(&'static str, String)> {
    let p = r.partition;
    // Acknowledged commits of `p` whose answer arrived before the read was sent (and, in a
    // fault-phase cluster read, that the answering broker acknowledged).
    let before: Vec<(&CommitRecord, u64)> = h
        .commits
        .iter()
        .filter(|c| c.partition == p)
        .filter_map(|c| match c.outcome {
            CommitOutcome::Acked { at_ms, node } if at_ms < r.sent_ms => {
                (r.final_read || !cluster || node == r.node).then_some((c, at_ms))
            }
            _ => None,
        })
        .collect();
    let latest = before.iter().max_by_key(|(c, at)| (*at, c.sent_ms));
    let Some((offset, metadata)) = &r.value else {
        return latest.map(|(c, at)| {
            (
                "group-lost-commit",
                format!(
                    "{}: partition {p} has no committed offset, but {} was acknowledged at {at}ms",
                    describe_read(r),
                    describe_commit(c)
                ),
            )
        });
    };
    let same: Vec<&CommitRecord> = h
        .commits
        .iter()
        .filter(|c| c.partition == p && c.offset == *offset && c.metadata == *metadata)
        .filter(|c| c.sent_ms <= r.answered_ms)
        .collect();
    let landable: Vec<&&CommitRecord> = same
        .iter()
        .filter(|c| !matches!(c.outcome, CommitOutcome::Rejected { .. }))
        .collect();
    if landable.is_empty() {
        let why = if same.is_empty() {
            "no commit sent before the answer carried it".to_string()
        } else {
            format!("its only commit was rejected: {}", describe_commit(same[0]))
        };
        return Some((
            "group-phantom-commit",
            format!(
                "{}: partition {p} reads offset {offset} ({metadata:?}); {why}",
                describe_read(r)
            ),
        ));
    }
    let overwritten = |c: &CommitRecord| match c.outcome {
        CommitOutcome::Acked { at_ms, .. } => before.iter().any(|(v, _)| v.sent_ms > at_ms),
        _ => false,
    };
    if landable.iter().all(|c| overwritten(c)) {
        let (c, at) = latest.expect("an overwriting commit exists");
        return Some((
            "group-stale-commit",
            format!(
                "{}: partition {p} reads offset {offset} ({metadata:?}), overwritten by {} acknowledged at {at}ms",
                describe_read(r),
                describe_commit(c)
            ),
        ));
    }
    None
}

fn describe_read(r: &ReadRecord) -> String {
    format!(
        "{}OffsetFetch by process {} sent {}ms, answered {}ms by broker {}",
        if r.final_read { "final " } else { "" },
        r.process,
        r.sent_ms,
        r.answered_ms,
        r.node + 1
    )
}

fn describe_commit(c: &CommitRecord) -> String {
    format!(
        "commit of offset {} ({:?}) by process {} in generation {} sent {}ms ({:?})",
        c.offset, c.metadata, c.process, c.generation, c.sent_ms, c.outcome
    )
}

/// A live member as the liveness check sees it: `Some((generation, partitions))` once its
/// last SyncGroup answered and nothing since told it to rejoin; `None` otherwise.
pub type MemberView = Option<(i32, Vec<i32>)>;

/// Invariant 3's goal: every live member is synced in one generation, and their assignments
/// cover each partition exactly once (each non-empty when there are no more members than
/// partitions). Returns that generation.
pub fn stable_generation(members: &[MemberView], partitions: i32) -> Option<i32> {
    let synced: Vec<&(i32, Vec<i32>)> = members.iter().flatten().collect();
    if synced.is_empty() || synced.len() < members.len() {
        return None;
    }
    let generation = synced[0].0;
    if synced.iter().any(|(g, _)| *g != generation) {
        return None;
    }
    let mut all: Vec<i32> = synced.iter().flat_map(|(_, ps)| ps.iter().copied()).collect();
    all.sort_unstable();
    let each_some = members.len() > partitions as usize || synced.iter().all(|(_, ps)| !ps.is_empty());
    (all == (0..partitions).collect::<Vec<_>>() && each_some).then_some(generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(at_ms: u64, member: &str, generation: i32, partitions: &[i32]) -> SyncRecord {
        SyncRecord {
            at_ms,
            process: 0,
            member_id: member.to_string(),
            generation,
            partitions: partitions.to_vec(),
        }
    }

    fn commit(offset: i64, metadata: &str, sent_ms: u64, outcome: CommitOutcome) -> CommitRecord {
        CommitRecord {
            process: 1,
            generation: 1,
            partition: 0,
            offset,
            metadata: metadata.to_string(),
            sent_ms,
            outcome,
        }
    }

    fn read(sent_ms: u64, value: Option<(i64, &str)>, node: usize, final_read: bool) -> ReadRecord {
        ReadRecord {
            process: 2,
            node,
            sent_ms,
            answered_ms: sent_ms + 2,
            partition: 0,
            value: value.map(|(o, m)| (o, m.to_string())),
            final_read,
        }
    }

    fn acked(at_ms: u64) -> CommitOutcome {
        CommitOutcome::Acked { at_ms, node: 0 }
    }

    const ONE_NODE: GroupCheckParams = GroupCheckParams {
        partitions: 3,
        cluster: false,
        end_ms: 100,
    };

    fn kinds(h: &GroupHistory, params: &GroupCheckParams) -> Vec<&'static str> {
        check_group_history(h, params).iter().map(|v| v.kind).collect()
    }

    #[test]
    fn two_owners_of_a_partition_in_one_generation_are_reported() {
        let mut h = GroupHistory::default();
        h.syncs.push(sync(10, "a", 3, &[0, 1]));
        h.syncs.push(sync(11, "b", 3, &[2]));
        h.syncs.push(sync(12, "a", 4, &[2]));
        h.syncs.push(sync(13, "b", 4, &[0, 1]));
        assert_eq!(
            kinds(&h, &ONE_NODE),
            Vec::<&str>::new(),
            "new generation, new owners"
        );
        h.syncs.push(sync(14, "c", 4, &[1]));
        let v = check_group_history(&h, &ONE_NODE);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].kind, "group-split-brain");
        assert!(
            v[0].detail.contains("generation 4: partition 1"),
            "{}",
            v[0].detail
        );
        h.syncs.push(sync(15, "a", 4, &[0]));
        assert!(kinds(&h, &ONE_NODE).contains(&"group-assignment-changed"));
    }

    #[test]
    fn a_lost_acknowledged_commit_is_reported() {
        let mut h = GroupHistory::default();
        h.commits.push(commit(5, "m1", 10, acked(12)));
        h.commits.push(commit(9, "m2", 20, acked(22)));
        h.reads.push(read(30, Some((9, "m2")), 0, false));
        assert_eq!(kinds(&h, &ONE_NODE), Vec::<&str>::new());
        // m1 was overwritten by m2 (sent after m1's answer, answered before the read).
        h.reads.push(read(40, Some((5, "m1")), 0, false));
        assert_eq!(kinds(&h, &ONE_NODE), vec!["group-stale-commit"]);
        h.reads.pop();
        h.reads.push(read(40, None, 0, true));
        assert_eq!(kinds(&h, &ONE_NODE), vec!["group-lost-commit"]);
        h.reads.pop();
        h.reads.push(read(40, Some((7, "m9")), 0, true));
        assert_eq!(kinds(&h, &ONE_NODE), vec!["group-phantom-commit"]);
    }

    #[test]
    fn concurrent_and_doubtful_commits_may_win() {
        let mut h = GroupHistory::default();
        // Two commits in flight together: either may be last.
        h.commits.push(commit(5, "a", 10, acked(20)));
        h.commits.push(commit(6, "b", 12, acked(18)));
        h.reads.push(read(30, Some((5, "a")), 0, false));
        h.reads.push(read(31, Some((6, "b")), 0, false));
        // A commit that timed out may land at any time, even after later acknowledged ones.
        h.commits.push(commit(1, "c", 5, CommitOutcome::InDoubt));
        h.reads.push(read(32, Some((1, "c")), 0, false));
        // An overlapping read may see the value before or after a commit.
        h.commits.push(commit(8, "d", 40, acked(45)));
        h.reads.push(read(42, Some((5, "a")), 0, false));
        h.reads.push(read(43, Some((8, "d")), 0, false));
        assert_eq!(kinds(&h, &ONE_NODE), Vec::<&str>::new());
        // A commit rejected outright never shows.
        h.commits
            .push(commit(3, "e", 50, CommitOutcome::Rejected { code: 27 }));
        h.reads.push(read(60, Some((3, "e")), 0, false));
        assert_eq!(kinds(&h, &ONE_NODE), vec!["group-phantom-commit"]);
    }

    #[test]
    fn in_a_cluster_fault_phase_reads_answer_for_their_own_broker_only() {
        let cluster = GroupCheckParams {
            cluster: true,
            ..ONE_NODE
        };
        let mut h = GroupHistory::default();
        h.commits
            .push(commit(5, "a", 10, CommitOutcome::Acked { at_ms: 12, node: 0 }));
        h.commits
            .push(commit(9, "b", 20, CommitOutcome::Acked { at_ms: 22, node: 1 }));
        // Broker 1 (node 0), deposed without knowing it, has not seen b.
        h.reads.push(read(30, Some((5, "a")), 0, false));
        assert_eq!(kinds(&h, &cluster), Vec::<&str>::new());
        assert_eq!(kinds(&h, &ONE_NODE), vec!["group-stale-commit"]);
        h.reads[0].final_read = true;
        assert_eq!(kinds(&h, &cluster), vec!["group-stale-commit"]);
    }

    #[test]
    fn stable_means_one_generation_covering_every_partition_once() {
        let m = |g: i32, ps: &[i32]| Some((g, ps.to_vec()));
        assert_eq!(stable_generation(&[m(2, &[0, 2]), m(2, &[1])], 3), Some(2));
        assert_eq!(stable_generation(&[m(2, &[0, 2]), m(1, &[1])], 3), None);
        assert_eq!(stable_generation(&[m(2, &[0, 2]), None], 3), None);
        assert_eq!(stable_generation(&[m(2, &[0, 1]), m(2, &[1, 2])], 3), None);
        assert_eq!(stable_generation(&[m(2, &[0, 1]), m(2, &[])], 3), None);
        assert_eq!(stable_generation(&[m(2, &[0]), m(2, &[])], 1), Some(2));
        assert_eq!(stable_generation(&[], 1), None);
    }
}
