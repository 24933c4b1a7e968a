//! Elections: election timeouts, pre-vote, votes, and becoming leader; plus check-quorum,
//! the leader's side of the election timer.
//!
//! Invariants: a replica grants at most one vote per term (persisted before the answer
//! leaves); it grants a vote or pre-vote only to a voter whose log is at least as up to date
//! as its own (last epoch, then last end); a pre-vote never changes any term; a candidate
//! becomes leader only once its own term and vote are persisted.

use rand::RngCore;

use super::core::RaftCore;
use super::msg::RaftMsg;
use super::progress::Progress;
use super::{quorum, NodeId, RaftAction, RaftLog, Role};

impl RaftCore {
    pub(super) fn tick_election(
        &mut self,
        log: &impl RaftLog,
        rng: &mut impl RngCore,
        out: &mut Vec<RaftAction>,
    ) {
        if self.role == Role::Leader {
            if !self.has_quorum_contact(self.now_ms) {
                tracing::info!(
                    me = self.me,
                    term = self.term,
                    "leader lost contact with a quorum; stepping down"
                );
                self.become_follower(self.term, None, rng, out);
            }
            return;
        }
        if !self.is_voter(self.me) {
            return; // learners never campaign
        }
        if self.voters.len() == 1 {
            // Nobody else can vote: campaign at once (the term is still persisted first).
            if self.role != Role::Candidate {
                self.campaign(log, rng, out);
            }
            return;
        }
        if self.now_ms >= self.election_deadline_ms {
            self.start_pre_vote(log, rng, out);
        }
    }

    /// Asks the other voters whether they would vote for us at `term + 1`.
    fn start_pre_vote(&mut self, log: &impl RaftLog, rng: &mut impl RngCore, out: &mut Vec<RaftAction>) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.me, true);
        self.progress.clear();
        self.reset_election_deadline(rng);
        let v = self.vlog(log);
        let (last_end, last_epoch) = (v.end(), v.last_epoch());
        let term = self.term + 1;
        tracing::debug!(me = self.me, term, "pre-vote");
        for to in self.other_voters() {
            self.send(
                to,
                RaftMsg::PreVote {
                    term,
                    last_end,
                    last_epoch,
                },
                out,
            );
        }
    }

    /// Starts an election at `term + 1`, voting for ourselves.
    fn campaign(&mut self, log: &impl RaftLog, rng: &mut impl RngCore, out: &mut Vec<RaftAction>) {
        self.drop_stale_held();
        self.term += 1;
        self.voted_for = Some(self.me);
        self.role = Role::Candidate;
        self.leader = None;
        self.matched_end = 0;
        self.leader_commit_end = 0;
        self.acked_end = 0;
        self.progress.clear();
        self.votes.clear();
        self.votes.insert(self.me, true);
        self.persist(out);
        self.reset_election_deadline(rng);
        let v = self.vlog(log);
        let (last_end, last_epoch) = (v.end(), v.last_epoch());
        let term = self.term;
        tracing::info!(me = self.me, term, "campaigning");
        for to in self.other_voters() {
            self.send(
                to,
                RaftMsg::Vote {
                    term,
                    last_end,
                    last_epoch,
                },
                out,
            );
        }
        if self.won_election() && self.durable_ok() {
            self.become_leader(out);
        }
    }

    pub(super) fn on_pre_vote(
        &mut self,
        from: NodeId,
        term: i32,
        last_end: u64,
        last_epoch: i32,
        log: &impl RaftLog,
        out: &mut Vec<RaftAction>,
    ) {
        let min_ms = self.config.election_timeout_min_ms;
        let leader_alive = self.role == Role::Leader
            || self
                .leader_contact_ms
                .is_some_and(|t| self.now_ms < t.saturating_add(min_ms));
        // The term is not compared: granting a pre-vote to a candidate with an old term is
        // harmless (its Vote would be refused with our term, which it then adopts), and
        // refusing it could deadlock a cluster whose most up-to-date voter has the lowest term.
        let granted = self.is_voter(self.me)
            && self.is_voter(from)
            && !leader_alive
            && self.log_up_to_date(last_epoch, last_end, log);
        self.send(from, RaftMsg::PreVoteResp { term, granted }, out);
    }

    pub(super) fn on_pre_vote_resp(
        &mut self,
        from: NodeId,
        term: i32,
        granted: bool,
        log: &impl RaftLog,
        rng: &mut impl RngCore,
        out: &mut Vec<RaftAction>,
    ) {
        if self.role != Role::PreCandidate || term != self.term + 1 || !self.is_voter(from) {
            return;
        }
        self.votes.insert(from, granted);
        if self.won_election() {
            self.campaign(log, rng, out);
        }
    }

    #[allow(clippy::too_many_arguments)] // one input message's fields plus the core's context
    pub(super) fn on_vote(
        &mut self,
        from: NodeId,
        term: i32,
        last_end: u64,
        last_epoch: i32,
        log: &impl RaftLog,
        rng: &mut impl RngCore,
        out: &mut Vec<RaftAction>,
    ) {
        if term < self.term {
            self.send(
                from,
                RaftMsg::VoteResp {
                    term: self.term,
                    granted: false,
                },
                out,
            );
            return;
        }
        assert_eq!(term, self.term, "higher terms are adopted before");
        let free = self.voted_for.is_none() || self.voted_for == Some(from);
        let granted = free
            && self.is_voter(self.me)
            && self.is_voter(from)
            && self.log_up_to_date(last_epoch, last_end, log);
        if granted {
            if self.voted_for.is_none() {
                self.voted_for = Some(from);
                self.persist(out);
            }
            self.reset_election_deadline(rng);
            tracing::debug!(me = self.me, term, candidate = from, "vote granted");
        }
        assert!(!granted || self.voted_for == Some(from), "one vote per term");
        self.send(
            from,
            RaftMsg::VoteResp {
                term: self.term,
                granted,
            },
            out,
        );
    }

    pub(super) fn on_vote_resp(&mut self, from: NodeId, term: i32, granted: bool, out: &mut Vec<RaftAction>) {
        if self.role != Role::Candidate || term != self.term || !self.is_voter(from) {
            return;
        }
        self.votes.insert(from, granted);
        if self.won_election() && self.durable_ok() {
            self.become_leader(out);
        }
    }

    /// A majority of voters granted this round (our own vote included).
    pub(super) fn won_election(&self) -> bool {
        let granted = self
            .votes
            .iter()
            .filter(|(id, &g)| g && self.voters.contains(id))
            .count();
        granted >= quorum(&self.voters)
    }

    /// The candidate's log (`last_epoch`, `last_end`) is at least as up to date as ours.
    fn log_up_to_date(&self, last_epoch: i32, last_end: u64, log: &impl RaftLog) -> bool {
        let v = self.vlog(log);
        (last_epoch, last_end) >= (v.last_epoch(), v.end())
    }

    fn other_voters(&self) -> Vec<NodeId> {
        self.voters.iter().copied().filter(|&id| id != self.me).collect()
    }

    /// Won the election (and our vote is durable): start leading. The engine appends the
    /// leader no-op; each follower is probed at our log end.
    pub(super) fn become_leader(&mut self, out: &mut Vec<RaftAction>) {
        assert_eq!(self.role, Role::Candidate);
        assert!(self.durable_ok(), "a leader's term and vote are durable");
        self.role = Role::Leader;
        self.leader = Some(self.me);
        self.votes.clear();
        let (next, prev_epoch) = (self.cached_end, self.cached_last_epoch);
        let now_ms = self.now_ms;
        self.progress = self
            .voters
            .iter()
            .chain(&self.learners)
            .filter(|&&id| id != self.me)
            .map(|&id| (id, Progress::new(next, now_ms)))
            .collect();
        tracing::info!(me = self.me, term = self.term, log_end = next, "became leader");
        out.push(RaftAction::BecameLeader { term: self.term });
        let ids: Vec<NodeId> = self.progress.keys().copied().collect();
        for to in ids {
            self.send_probe_at_end(to, next, prev_epoch, out);
        }
    }
}
