//! [`RaftCore`]: the state of one Raft group on one replica, its inputs and queries, role
//! transitions, and the hold-back of messages until the hard state they depend on is
//! persisted. Elections live in `election.rs`, the follower side of replication in
//! `follower.rs`, the leader side in `replication.rs`.
//!
//! Invariants: `term` never decreases and `voted_for` is set at most once per term; while
//! the current hard state is not persisted every outgoing message is held back and released
//! in order by `on_persisted`; `commit_end` never decreases.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::{Rng, RngCore};

use super::msg::{AppendResult, Entry, RaftMsg};
use super::progress::Progress;
use super::vlog::{Overlay, VirtualLog};
use super::{quorum, HardState, NodeId, RaftAction, RaftConfig, RaftLog, Role};

/// Messages held back while the hard state is not yet persisted, at most; the oldest are
/// dropped beyond it (Raft tolerates message loss). Persists complete in milliseconds, so
/// this bound is only reached if the engine stalls.
const HELD_SENDS_MAX: usize = 4096;

/// One replica's state in one Raft group. See the module docs of `raft` for the model.
#[derive(Debug)]
pub struct RaftCore {
    pub(super) me: NodeId,
    pub(super) voters: BTreeSet<NodeId>,
    pub(super) learners: BTreeSet<NodeId>,
    pub(super) config: RaftConfig,

    pub(super) term: i32,
    pub(super) voted_for: Option<NodeId>,
    /// The latest hard state the engine reported durable.
    pub(super) persisted: HardState,
    /// Messages waiting for the current hard state to be persisted, in send order.
    held: VecDeque<(NodeId, RaftMsg)>,

    pub(super) role: Role,
    pub(super) leader: Option<NodeId>,
    pub(super) commit_end: u64,

    /// The latest `now_ms` any input carried (inputs without a clock use it).
    pub(super) now_ms: u64,
    pub(super) election_deadline_ms: u64,
    /// When the current leader was last heard from (Append or Heartbeat of our term).
    pub(super) leader_contact_ms: Option<u64>,
    /// (Pre-)candidate: the answers of this round, by voter (true = granted).
    pub(super) votes: BTreeMap<NodeId, bool>,

    /// Our log actions the engine has not applied yet (see `vlog.rs`).
    pub(super) overlay: Overlay,
    /// Follower: our virtual log equals the current term's leader's below this.
    pub(super) matched_end: u64,
    /// Follower: the largest `commit_end` the current term's leader has told us.
    pub(super) leader_commit_end: u64,
    /// Follower: the durable end last acknowledged to the leader of this term.
    pub(super) acked_end: u64,

    /// Leader: one entry per other replica (voters and learners).
    pub(super) progress: BTreeMap<NodeId, Progress>,

    /// The virtual log's end and last epoch as of the last input that carried the log, for
    /// `on_persisted` (which does not).
    pub(super) cached_end: u64,
    pub(super) cached_last_epoch: i32,

    reported_role: (Role, i32, Option<NodeId>),
    reported_commit: u64,
}

impl RaftCore {
    #[allow(clippy::too_many_arguments)] // the contract's constructor: every argument is distinct state
    pub fn new(
        me: NodeId,
        voters: BTreeSet<NodeId>,
        learners: BTreeSet<NodeId>,
        hard: HardState,
        config: RaftConfig,
        log: &impl RaftLog,
        now_ms: u64,
        rng: &mut impl RngCore,
    ) -> Self {
        config.validate();
        assert!(!voters.is_empty(), "a group needs at least one voter");
        assert!(
            voters.is_disjoint(&learners),
            "a replica is a voter or a learner, not both"
        );
        assert!(hard.term >= 0, "terms start at 0");
        let commit_end = log.start();
        let mut core = RaftCore {
            me,
            voters,
            learners,
            config,
            term: hard.term,
            voted_for: hard.voted_for,
            persisted: hard,
            held: VecDeque::new(),
            role: Role::Follower,
            leader: None,
            commit_end,
            now_ms,
            election_deadline_ms: now_ms,
            leader_contact_ms: None,
            votes: BTreeMap::new(),
            overlay: Overlay::default(),
            matched_end: 0,
            leader_commit_end: 0,
            acked_end: 0,
            progress: BTreeMap::new(),
            cached_end: log.end(),
            cached_last_epoch: log.last_epoch(),
            reported_role: (Role::Follower, hard.term, None),
            reported_commit: commit_end,
        };
        core.reset_election_deadline(rng);
        core
    }

    // ---- inputs ---------------------------------------------------------------------

    /// Election timeouts (followers, candidates) and check-quorum (leaders).
    pub fn tick(
        &mut self,
        now_ms: u64,
        log: &impl RaftLog,
        rng: &mut impl RngCore,
        out: &mut Vec<RaftAction>,
    ) {
        self.observe(now_ms, log);
        self.tick_election(log, rng, out);
        self.report(out);
    }

    /// The node-level heartbeat tick: a leader sends a Heartbeat to every follower and
    /// retries stalled replication; other roles do nothing.
    pub fn heartbeat(&mut self, now_ms: u64, log: &impl RaftLog, out: &mut Vec<RaftAction>) {
        self.observe(now_ms, log);
        if self.role == Role::Leader {
            self.leader_heartbeat(log, out);
        }
        self.report(out);
    }

    /// A message from peer `from`.
    pub fn step(
        &mut self,
        now_ms: u64,
        from: NodeId,
        msg: RaftMsg,
        log: &impl RaftLog,
        rng: &mut impl RngCore,
        out: &mut Vec<RaftAction>,
    ) {
        self.observe(now_ms, log);
        if from == self.me || !self.is_member(from) {
            tracing::warn!(me = self.me, from, "raft message from a non-member ignored");
            return;
        }
        let msg_term = msg.term();
        let bumps_term = !matches!(msg, RaftMsg::PreVote { .. } | RaftMsg::PreVoteResp { .. });
        if bumps_term && msg_term > self.term {
            let leader = matches!(msg, RaftMsg::Append { .. } | RaftMsg::Heartbeat { .. }).then_some(from);
            tracing::debug!(me = self.me, from, term = msg_term, "higher term seen");
            self.become_follower(msg_term, leader, rng, out);
        }
        match msg {
            RaftMsg::PreVote {
                term,
                last_end,
                last_epoch,
            } => self.on_pre_vote(from, term, last_end, last_epoch, log, out),
            RaftMsg::PreVoteResp { term, granted } => {
                self.on_pre_vote_resp(from, term, granted, log, rng, out)
            }
            RaftMsg::Vote {
                term,
                last_end,
                last_epoch,
            } => self.on_vote(from, term, last_end, last_epoch, log, rng, out),
            RaftMsg::VoteResp { term, granted } => self.on_vote_resp(from, term, granted, out),
            RaftMsg::Append {
                term,
                prev_end,
                prev_epoch,
                commit_end,
                entries,
            } => {
                if term < self.term {
                    let result = AppendResult::StaleTerm;
                    self.send(
                        from,
                        RaftMsg::AppendResp {
                            term: self.term,
                            result,
                        },
                        out,
                    );
                } else if self.follow(from, term, rng, out) {
                    self.on_append(prev_end, prev_epoch, commit_end, entries, log, out);
                }
            }
            RaftMsg::Heartbeat { term, commit_end } => {
                if term < self.term {
                    let log_end = self.vlog(log).end();
                    let resp = RaftMsg::HeartbeatResp {
                        term: self.term,
                        durable_end: 0,
                        log_end,
                    };
                    self.send(from, resp, out);
                } else if self.follow(from, term, rng, out) {
                    self.on_heartbeat(commit_end, log, out);
                }
            }
            RaftMsg::AppendResp { term, result } => {
                if self.role == Role::Leader && term == self.term {
                    self.on_append_resp(from, result, log, out);
                }
            }
            RaftMsg::HeartbeatResp {
                term,
                durable_end,
                log_end,
            } => {
                if self.role == Role::Leader && term == self.term {
                    self.on_heartbeat_resp(from, durable_end, log_end, log, out);
                }
            }
        }
        self.report(out);
    }

    /// A `Persist` completed durably with `hard`. Releases held messages once the current
    /// hard state is durable (with several outstanding, only the latest matters).
    pub fn on_persisted(&mut self, hard: HardState, out: &mut Vec<RaftAction>) {
        if hard.term < self.persisted.term {
            tracing::warn!(me = self.me, ?hard, "stale persist completion ignored");
            return;
        }
        assert!(hard.term <= self.term, "persisted a term the core never had");
        self.persisted = hard;
        if self.durable_ok() {
            self.release_held(out);
        }
        if self.role == Role::Candidate && self.won_election() && self.durable_ok() {
            self.become_leader(out);
        }
        self.report(out);
    }

    /// The log's `end()` or `durable_end()` moved (a leader's local append, a follower's
    /// append or truncation applied, an fsync done). Idempotent and cheap: calling it when
    /// nothing moved does nothing.
    ///
    /// `Append`/`Truncate` actions the log does not show yet are taken as still being
    /// carried out; an engine that applies them synchronously, or that refused one, calls
    /// [`RaftCore::on_log_settled`] instead.
    pub fn on_log_changed(&mut self, now_ms: u64, log: &impl RaftLog, out: &mut Vec<RaftAction>) {
        self.observe(now_ms, log);
        self.log_changed(log, out);
    }

    /// Like [`RaftCore::on_log_changed`], and every `Append`/`Truncate` emitted so far has
    /// been carried out or refused: what the log does not show will never come. The core
    /// forgets those actions and trusts only the prefix the log really holds (a refused
    /// append is resent by the leader after a mismatch; a refused truncation is asked again).
    pub fn on_log_settled(&mut self, now_ms: u64, log: &impl RaftLog, out: &mut Vec<RaftAction>) {
        self.observe(now_ms, log);
        let held = self.vlog(log).actual_prefix_end();
        if !self.overlay.is_idle() {
            tracing::warn!(
                me = self.me,
                held,
                "log actions refused; trusting only what the log holds"
            );
            self.matched_end = self.matched_end.min(held);
            self.overlay = Overlay::default();
            self.cached_end = log.end();
            self.cached_last_epoch = log.last_epoch();
        }
        self.log_changed(log, out);
    }

    fn log_changed(&mut self, log: &impl RaftLog, out: &mut Vec<RaftAction>) {
        match self.role {
            Role::Leader => self.leader_log_changed(log, out),
            Role::Follower => self.follower_log_changed(log, out),
            Role::PreCandidate | Role::Candidate => {}
        }
        self.report(out);
    }

    /// The engine's answer to `NeedEntries { to, from, .. }`: whole batches starting at the
    /// one containing `from` (possibly empty if the log moved meanwhile).
    pub fn send_entries(
        &mut self,
        to: NodeId,
        entries: Vec<Entry>,
        log: &impl RaftLog,
        out: &mut Vec<RaftAction>,
    ) {
        self.observe(self.now_ms, log);
        if self.role == Role::Leader {
            self.leader_send_entries(to, entries, log, out);
        }
        self.report(out);
    }

    // ---- queries --------------------------------------------------------------------

    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> i32 {
        self.term
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn me(&self) -> NodeId {
        self.me
    }
    /// The high watermark: Raft's commit index + 1.
    pub fn commit_end(&self) -> u64 {
        self.commit_end
    }
    /// The current hard state (possibly not yet persisted).
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            voted_for: self.voted_for,
        }
    }

    /// Leader: a majority of voters (self included) heard from within the minimum election
    /// timeout. False on other roles.
    pub fn has_quorum_contact(&self, now_ms: u64) -> bool {
        if self.role != Role::Leader {
            return false;
        }
        let heard = self
            .voters
            .iter()
            .filter(|&&id| self.heard_recently(id, now_ms))
            .count();
        heard >= quorum(&self.voters)
    }

    /// Leader: replicas (voters and learners, self included) heard from within the minimum
    /// election timeout. 0 on other roles.
    pub fn live_replicas(&self, now_ms: u64) -> usize {
        if self.role != Role::Leader {
            return 0;
        }
        self.voters
            .iter()
            .chain(&self.learners)
            .filter(|&&id| self.heard_recently(id, now_ms))
            .count()
    }

    /// Leader: whether `id` (a voter or learner, or this node) was heard from within the
    /// minimum election timeout. False on other roles.
    pub fn is_live(&self, id: NodeId, now_ms: u64) -> bool {
        self.role == Role::Leader && self.heard_recently(id, now_ms)
    }

    /// Leader: the end below which at least `copies` voters (this one counted at
    /// `own_durable_end`) hold the log durably. 0 on other roles or with too few voters.
    pub fn durable_copies_end(&self, copies: usize, own_durable_end: u64) -> u64 {
        if self.role != Role::Leader || copies == 0 {
            return 0;
        }
        self.nth_durable_end(copies, own_durable_end)
    }

    /// The `k`-th largest durable end among the voters (this one at `own_durable_end`): at
    /// least `k` voters hold the log durably below it. 0 when there are fewer voters.
    pub(super) fn nth_durable_end(&self, k: usize, own_durable_end: u64) -> u64 {
        let mut ends: Vec<u64> = self
            .voters
            .iter()
            .map(|id| {
                if *id == self.me {
                    own_durable_end
                } else {
                    self.progress.get(id).map_or(0, |p| p.durable_end)
                }
            })
            .collect();
        ends.sort_unstable_by(|a, b| b.cmp(a));
        k.checked_sub(1).and_then(|i| ends.get(i)).copied().unwrap_or(0)
    }

    /// Leader: bytes of entries sent to `to` and not yet acknowledged.
    pub fn inflight_bytes(&self, to: NodeId) -> Option<u64> {
        self.progress.get(&to).map(|p| p.inflight_bytes)
    }

    /// Leader: `to` needs entries below our log start (a snapshot, not yet supported).
    pub fn needs_snapshot(&self, to: NodeId) -> bool {
        self.progress.get(&to).is_some_and(|p| p.needs_snapshot)
    }

    // ---- shared helpers -------------------------------------------------------------

    pub(super) fn vlog<'a, L: RaftLog>(&'a self, log: &'a L) -> VirtualLog<'a, L> {
        self.overlay.view(log)
    }

    fn observe(&mut self, now_ms: u64, log: &impl RaftLog) {
        self.now_ms = self.now_ms.max(now_ms);
        self.overlay.sync(log);
        let v = self.overlay.view(log);
        self.cached_end = v.end();
        self.cached_last_epoch = v.last_epoch();
    }

    fn heard_recently(&self, id: NodeId, now_ms: u64) -> bool {
        if id == self.me {
            return true;
        }
        let window_ms = self.config.election_timeout_min_ms;
        self.progress
            .get(&id)
            .is_some_and(|p| now_ms < p.last_heard_ms.saturating_add(window_ms))
    }

    pub(super) fn is_member(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    pub(super) fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// Messages may leave: the current hard state is durable (or the planted bug says so).
    pub(super) fn durable_ok(&self) -> bool {
        self.config.bugs.vote_without_persist() || self.persisted == self.hard_state()
    }

    /// Sends `msg`, or holds it until the current hard state is persisted.
    pub(super) fn send(&mut self, to: NodeId, msg: RaftMsg, out: &mut Vec<RaftAction>) {
        if self.durable_ok() && self.held.is_empty() {
            out.push(RaftAction::Send { to, msg });
            return;
        }
        if self.held.len() == HELD_SENDS_MAX {
            tracing::warn!(
                me = self.me,
                "held raft messages over their bound; dropping the oldest"
            );
            self.held.pop_front();
        }
        self.held.push_back((to, msg));
    }

    /// The term is about to change: messages of the old term still held depend on a hard
    /// state that will never be persisted (a newer one replaces it), so they must not leave.
    pub(super) fn drop_stale_held(&mut self) {
        self.held
            .retain(|(_, m)| matches!(m, RaftMsg::PreVote { .. } | RaftMsg::PreVoteResp { .. }));
    }

    fn release_held(&mut self, out: &mut Vec<RaftAction>) {
        out.extend(self.held.drain(..).map(|(to, msg)| RaftAction::Send { to, msg }));
    }

    /// Asks the engine to persist the current hard state.
    pub(super) fn persist(&mut self, out: &mut Vec<RaftAction>) {
        out.push(RaftAction::Persist(self.hard_state()));
    }

    pub(super) fn reset_election_deadline(&mut self, rng: &mut impl RngCore) {
        let timeout_ms =
            rng.gen_range(self.config.election_timeout_min_ms..self.config.election_timeout_max_ms);
        self.election_deadline_ms = self.now_ms + timeout_ms;
    }

    /// Becomes a follower at `term` (>= ours) of `leader`; a higher term is persisted.
    pub(super) fn become_follower(
        &mut self,
        term: i32,
        leader: Option<NodeId>,
        rng: &mut impl RngCore,
        out: &mut Vec<RaftAction>,
    ) {
        assert!(term >= self.term, "terms never go back");
        if term > self.term {
            self.drop_stale_held();
            self.term = term;
            self.voted_for = None;
            self.matched_end = 0;
            self.leader_commit_end = 0;
            self.acked_end = 0;
            self.persist(out);
        }
        if self.role != Role::Follower || self.leader != leader {
            tracing::debug!(me = self.me, term, ?leader, "follower");
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.reset_election_deadline(rng);
    }

    /// An Append or Heartbeat of our `term` from `from`: makes `from` our leader and
    /// restarts the election timer. True when the message should be processed.
    fn follow(&mut self, from: NodeId, term: i32, rng: &mut impl RngCore, out: &mut Vec<RaftAction>) -> bool {
        assert_eq!(
            term, self.term,
            "higher terms are adopted and lower ones answered before"
        );
        if self.role == Role::Leader {
            // Two leaders in one term would break election safety: a peer bug, not ours.
            tracing::error!(
                me = self.me,
                from,
                term,
                "another leader claims our term; ignored"
            );
            return false;
        }
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(term, Some(from), rng, out);
        }
        self.leader_contact_ms = Some(self.now_ms);
        self.reset_election_deadline(rng);
        true
    }

    /// Publishes role and commit changes made during this input.
    fn report(&mut self, out: &mut Vec<RaftAction>) {
        let now = (self.role, self.term, self.leader);
        if now != self.reported_role {
            self.reported_role = now;
            out.push(RaftAction::RoleChanged {
                role: self.role,
                term: self.term,
                leader: self.leader,
            });
        }
        assert!(
            self.commit_end >= self.reported_commit,
            "commit_end never decreases"
        );
        if self.commit_end > self.reported_commit {
            self.reported_commit = self.commit_end;
            out.push(RaftAction::CommitAdvanced {
                commit_end: self.commit_end,
            });
        }
    }
}
