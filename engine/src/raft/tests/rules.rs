//! Scripted tests of the individual rules: some drive one core by hand, the others a calm
//! simulated cluster (every invariant of `cluster.rs` is still checked after each event).

use std::collections::BTreeSet;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::cluster::{Cluster, SimConfig};
use super::model_log::{batch_bytes, batch_id, ModelLog};
use crate::raft::{
    AppendResult, Entry, HardState, NodeId, RaftAction, RaftConfig, RaftCore, RaftLog, RaftMsg, Role,
};

// ---- one core by hand -----------------------------------------------------------------

fn ids(v: &[NodeId]) -> BTreeSet<NodeId> {
    v.iter().copied().collect()
}

fn core(me: NodeId, voters: &[NodeId], hard: HardState, log: &ModelLog) -> (RaftCore, ChaCha8Rng) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let core = RaftCore::new(
        me,
        ids(voters),
        BTreeSet::new(),
        hard,
        RaftConfig::default(),
        log,
        0,
        &mut rng,
    );
    (core, rng)
}

fn sends(out: &[RaftAction]) -> Vec<(NodeId, RaftMsg)> {
    out.iter()
        .filter_map(|a| match a {
            RaftAction::Send { to, msg } => Some((*to, msg.clone())),
            _ => None,
        })
        .collect()
}

fn entry(base: u64, last: u64, epoch: i32, id: u64) -> Entry {
    Entry {
        base,
        last,
        epoch,
        bytes: batch_bytes(id, 4),
    }
}

#[test]
fn single_voter_elects_itself_at_first_tick_and_commits_durable_entries() {
    let mut log = ModelLog::new();
    let (mut c, mut rng) = core(1, &[1], HardState::default(), &log);
    let mut out = Vec::new();
    c.tick(1, &log, &mut rng, &mut out);
    let hard = HardState {
        term: 1,
        voted_for: Some(1),
    };
    assert_eq!(
        out[0],
        RaftAction::Persist(hard),
        "the term and self-vote are persisted first"
    );
    assert!(
        !out.iter().any(|a| matches!(a, RaftAction::BecameLeader { .. })),
        "not before the persist"
    );
    assert_eq!(c.role(), Role::Candidate);

    out.clear();
    c.on_persisted(hard, &mut out);
    assert_eq!(c.role(), Role::Leader);
    assert!(out.contains(&RaftAction::BecameLeader { term: 1 }));

    // The engine appends the no-op: written, not yet durable, so nothing commits.
    log.append_new(1, 1, 1, 0);
    out.clear();
    c.on_log_changed(2, &log, &mut out);
    assert_eq!(c.commit_end(), 0);
    assert!(!out.iter().any(|a| matches!(a, RaftAction::CommitAdvanced { .. })));
    log.fsync();
    c.on_log_changed(3, &log, &mut out);
    assert_eq!(out, vec![RaftAction::CommitAdvanced { commit_end: 1 }]);

    // A client batch commits once durable.
    log.append_new(1, 3, 2, 0);
    out.clear();
    c.on_log_changed(4, &log, &mut out);
    assert!(out.is_empty());
    log.fsync();
    c.on_log_changed(5, &log, &mut out);
    assert_eq!(out, vec![RaftAction::CommitAdvanced { commit_end: 4 }]);
    assert!(c.has_quorum_contact(5));
    assert_eq!(c.live_replicas(5), 1);
}

#[test]
fn votes_are_held_until_persisted() {
    let log = ModelLog::new();
    let (mut c, mut rng) = core(1, &[1, 2, 3], HardState::default(), &log);
    let mut out = Vec::new();
    c.step(
        1,
        2,
        RaftMsg::Vote {
            term: 1,
            last_end: 0,
            last_epoch: 0,
        },
        &log,
        &mut rng,
        &mut out,
    );
    let hard = HardState {
        term: 1,
        voted_for: Some(2),
    };
    assert!(out.contains(&RaftAction::Persist(hard)));
    assert!(
        sends(&out).is_empty(),
        "nothing leaves before the vote is durable"
    );
    // A second candidate in the same term is refused, and that answer waits too.
    c.step(
        2,
        3,
        RaftMsg::Vote {
            term: 1,
            last_end: 9,
            last_epoch: 0,
        },
        &log,
        &mut rng,
        &mut out,
    );
    assert!(sends(&out).is_empty());
    out.clear();
    c.on_persisted(
        HardState {
            term: 1,
            voted_for: None,
        },
        &mut out,
    );
    assert!(
        sends(&out).is_empty(),
        "an older hard state does not release them"
    );
    c.on_persisted(hard, &mut out);
    assert_eq!(
        sends(&out),
        vec![
            (
                2,
                RaftMsg::VoteResp {
                    term: 1,
                    granted: true
                }
            ),
            (
                3,
                RaftMsg::VoteResp {
                    term: 1,
                    granted: false
                }
            )
        ]
    );
}

#[test]
fn votes_need_an_up_to_date_log() {
    let mut log = ModelLog::new();
    log.append_new(2, 3, 1, 0);
    log.fsync();
    let (mut c, mut rng) = core(
        1,
        &[1, 2, 3],
        HardState {
            term: 2,
            voted_for: None,
        },
        &log,
    );
    let mut out = Vec::new();
    c.step(
        1,
        2,
        RaftMsg::Vote {
            term: 3,
            last_end: 10,
            last_epoch: 1,
        },
        &log,
        &mut rng,
        &mut out,
    );
    c.step(
        1,
        3,
        RaftMsg::Vote {
            term: 3,
            last_end: 2,
            last_epoch: 2,
        },
        &log,
        &mut rng,
        &mut out,
    );
    c.on_persisted(c.hard_state(), &mut out);
    let answers = sends(&out);
    assert!(
        answers.contains(&(
            2,
            RaftMsg::VoteResp {
                term: 3,
                granted: false
            }
        )),
        "older last epoch"
    );
    assert!(
        answers.contains(&(
            3,
            RaftMsg::VoteResp {
                term: 3,
                granted: false
            }
        )),
        "same epoch, shorter"
    );
    assert_eq!(
        c.hard_state(),
        HardState {
            term: 3,
            voted_for: None
        }
    );
}

#[test]
fn stale_terms_are_answered_with_the_current_term() {
    let log = ModelLog::new();
    let (mut c, mut rng) = core(
        1,
        &[1, 2, 3],
        HardState {
            term: 5,
            voted_for: None,
        },
        &log,
    );
    let mut out = Vec::new();
    let append = RaftMsg::Append {
        term: 3,
        prev_end: 0,
        prev_epoch: 0,
        commit_end: 0,
        entries: vec![],
    };
    c.step(1, 2, append, &log, &mut rng, &mut out);
    c.step(
        1,
        2,
        RaftMsg::Heartbeat {
            term: 3,
            commit_end: 0,
        },
        &log,
        &mut rng,
        &mut out,
    );
    c.step(
        1,
        3,
        RaftMsg::Vote {
            term: 4,
            last_end: 0,
            last_epoch: 0,
        },
        &log,
        &mut rng,
        &mut out,
    );
    assert_eq!(
        sends(&out),
        vec![
            (
                2,
                RaftMsg::AppendResp {
                    term: 5,
                    result: AppendResult::StaleTerm
                }
            ),
            (
                2,
                RaftMsg::HeartbeatResp {
                    term: 5,
                    durable_end: 0,
                    log_end: 0
                }
            ),
            (
                3,
                RaftMsg::VoteResp {
                    term: 5,
                    granted: false
                }
            ),
        ]
    );
    assert_eq!((c.term(), c.leader()), (5, None));
}

#[test]
fn pre_votes_never_change_terms() {
    let log = ModelLog::new();
    let (mut c, mut rng) = core(
        1,
        &[1, 2, 3],
        HardState {
            term: 4,
            voted_for: None,
        },
        &log,
    );
    let mut out = Vec::new();
    c.step(
        1,
        2,
        RaftMsg::PreVote {
            term: 9,
            last_end: 0,
            last_epoch: 0,
        },
        &log,
        &mut rng,
        &mut out,
    );
    c.step(
        1,
        3,
        RaftMsg::PreVoteResp {
            term: 12,
            granted: false,
        },
        &log,
        &mut rng,
        &mut out,
    );
    assert_eq!(c.term(), 4);
    assert_eq!(
        sends(&out),
        vec![(
            2,
            RaftMsg::PreVoteResp {
                term: 9,
                granted: true
            }
        )]
    );
    assert!(!out.iter().any(|a| matches!(a, RaftAction::Persist(_))));
}

#[test]
fn followers_acknowledge_only_durable_entries() {
    let mut log = ModelLog::new();
    let (mut c, mut rng) = core(1, &[1, 2, 3], HardState::default(), &log);
    let mut out = Vec::new();
    let e = entry(0, 2, 1, 1);
    let append = RaftMsg::Append {
        term: 1,
        prev_end: 0,
        prev_epoch: 0,
        commit_end: 0,
        entries: vec![e.clone()],
    };
    c.step(1, 2, append, &log, &mut rng, &mut out);
    c.on_persisted(c.hard_state(), &mut out);
    assert!(out.contains(&RaftAction::Append {
        entries: vec![e.clone()]
    }));
    let ok = |d, m| {
        (
            2,
            RaftMsg::AppendResp {
                term: 1,
                result: AppendResult::Ok {
                    durable_end: d,
                    match_end: m,
                },
            },
        )
    };
    assert_eq!(sends(&out), vec![ok(0, 3)]);

    out.clear();
    log.append(e);
    c.on_log_changed(2, &log, &mut out);
    assert!(sends(&out).is_empty(), "written is not durable");
    log.fsync();
    c.on_log_changed(3, &log, &mut out);
    assert_eq!(sends(&out), vec![ok(3, 3)]);
}

#[test]
fn appends_pipeline_over_pending_writes() {
    let mut log = ModelLog::new();
    let (mut c, mut rng) = core(
        1,
        &[1, 2, 3],
        HardState {
            term: 1,
            voted_for: None,
        },
        &log,
    );
    let mut out = Vec::new();
    let (a, b) = (entry(0, 2, 1, 1), entry(3, 4, 1, 2));
    let m1 = RaftMsg::Append {
        term: 1,
        prev_end: 0,
        prev_epoch: 0,
        commit_end: 0,
        entries: vec![a.clone()],
    };
    let m2 = RaftMsg::Append {
        term: 1,
        prev_end: 3,
        prev_epoch: 1,
        commit_end: 3,
        entries: vec![b.clone()],
    };
    c.step(1, 2, m1.clone(), &log, &mut rng, &mut out);
    c.step(1, 2, m2, &log, &mut rng, &mut out);
    // A duplicate of the first is recognised as already (being) appended.
    c.step(1, 2, m1, &log, &mut rng, &mut out);
    let appends: Vec<&RaftAction> = out
        .iter()
        .filter(|x| matches!(x, RaftAction::Append { .. }))
        .collect();
    assert_eq!(
        appends,
        vec![
            &RaftAction::Append {
                entries: vec![a.clone()]
            },
            &RaftAction::Append {
                entries: vec![b.clone()]
            }
        ]
    );
    assert_eq!(
        c.commit_end(),
        0,
        "the high watermark waits for the entries to be written"
    );
    log.append(a);
    log.append(b);
    log.fsync();
    out.clear();
    c.on_log_changed(2, &log, &mut out);
    assert_eq!(c.commit_end(), 3);
    let ok = RaftMsg::AppendResp {
        term: 1,
        result: AppendResult::Ok {
            durable_end: 5,
            match_end: 5,
        },
    };
    assert_eq!(sends(&out), vec![(2, ok)]);
}

#[test]
fn a_divergent_suffix_is_truncated_at_the_first_differing_batch() {
    // Ours: [0..3) e1, [3..5) e1, [5..8) e2, [8..9) e2. The leader's: [0..3) e1, [3..5) e1, [5..7) e3.
    let mut log = ModelLog::new();
    log.append_new(1, 3, 1, 0);
    log.append_new(1, 2, 2, 0);
    log.append_new(2, 3, 3, 0);
    log.append_new(2, 1, 4, 0);
    log.fsync();
    let (mut c, mut rng) = core(
        1,
        &[1, 2, 3],
        HardState {
            term: 3,
            voted_for: None,
        },
        &log,
    );
    let mut out = Vec::new();
    // The leader probes at its end: our entry at 6 has epoch 2, not 3. The hint is our end
    // for epoch <= 3, capped at the probe.
    let probe = RaftMsg::Append {
        term: 3,
        prev_end: 7,
        prev_epoch: 3,
        commit_end: 5,
        entries: vec![],
    };
    c.step(1, 2, probe, &log, &mut rng, &mut out);
    let hint = AppendResult::Mismatch {
        prev_end: 7,
        diverging_epoch: 2,
        diverging_end: 7,
        log_end: 9,
    };
    assert_eq!(
        sends(&out),
        vec![(
            2,
            RaftMsg::AppendResp {
                term: 3,
                result: hint
            }
        )]
    );
    // From the leader's end for epoch 2 (5), it sends from 5: we match the first two batches
    // and cut at 5.
    out.clear();
    let e = entry(5, 6, 3, 9);
    let append = RaftMsg::Append {
        term: 3,
        prev_end: 5,
        prev_epoch: 1,
        commit_end: 5,
        entries: vec![e.clone()],
    };
    c.step(2, 2, append, &log, &mut rng, &mut out);
    assert_eq!(out[0], RaftAction::Truncate { from: 5 });
    assert_eq!(out[1], RaftAction::Append { entries: vec![e] });
    let ok = RaftMsg::AppendResp {
        term: 3,
        result: AppendResult::Ok {
            durable_end: 5,
            match_end: 7,
        },
    };
    assert_eq!(sends(&out), vec![(2, ok)]);
    assert_eq!(c.commit_end(), 5);
}

#[test]
fn a_truncation_waits_for_pending_writes() {
    let mut log = ModelLog::new();
    let (mut c, mut rng) = core(
        1,
        &[1, 2, 3],
        HardState {
            term: 1,
            voted_for: None,
        },
        &log,
    );
    let mut out = Vec::new();
    let old = entry(0, 2, 1, 1);
    let m1 = RaftMsg::Append {
        term: 1,
        prev_end: 0,
        prev_epoch: 0,
        commit_end: 0,
        entries: vec![old.clone()],
    };
    c.step(1, 2, m1, &log, &mut rng, &mut out);
    // A new leader's entry conflicts with the pending one: dropped (it will retry).
    let new = entry(0, 0, 2, 2);
    let m2 = RaftMsg::Append {
        term: 2,
        prev_end: 0,
        prev_epoch: 0,
        commit_end: 0,
        entries: vec![new.clone()],
    };
    out.clear();
    c.step(2, 3, m2.clone(), &log, &mut rng, &mut out);
    c.on_persisted(c.hard_state(), &mut out);
    assert!(!out
        .iter()
        .any(|a| matches!(a, RaftAction::Truncate { .. } | RaftAction::Append { .. })));
    assert!(sends(&out).is_empty());
    log.append(old);
    c.on_log_changed(3, &log, &mut out);
    out.clear();
    c.step(4, 3, m2, &log, &mut rng, &mut out);
    assert_eq!(out[0], RaftAction::Truncate { from: 0 });
    assert_eq!(out[1], RaftAction::Append { entries: vec![new] });
}

// ---- calm clusters --------------------------------------------------------------------

fn calm(voters: usize, learners: usize) -> Cluster {
    let mut c = Cluster::new(SimConfig::calm(11, voters, learners));
    c.record_actions = true;
    c
}

fn elect(c: &mut Cluster) -> NodeId {
    assert!(
        c.run_until_pred(5_000, |c| c.leader().is_some()).unwrap(),
        "a leader within 5 s"
    );
    c.leader().unwrap()
}

/// Every node's log holds the same batches.
fn logs_converged(c: &Cluster) -> bool {
    let first: Vec<u64> = c.nodes[0].log.batches().iter().map(batch_id).collect();
    c.nodes
        .iter()
        .all(|n| n.log.batches().iter().map(batch_id).collect::<Vec<_>>() == first)
}

fn sent_by(c: &Cluster, from: NodeId, pred: impl Fn(NodeId, &RaftMsg) -> bool) -> usize {
    c.node(from)
        .actions
        .iter()
        .filter(|(_, a)| matches!(a, RaftAction::Send { to, msg } if pred(*to, msg)))
        .count()
}

#[test]
fn pre_vote_does_not_disturb_a_healthy_leader() {
    let mut c = calm(3, 0);
    c.start().unwrap();
    let leader = elect(&mut c);
    let term = c.node_core(leader).term();
    let f = (1..=3).find(|&id| id != leader).unwrap();
    c.block(leader, f); // f stops hearing the leader; the others still do
    let seen = c.node(f).actions.len();
    c.run_for(3_000).unwrap();
    assert!(
        sent_by(&c, f, |_, m| matches!(m, RaftMsg::PreVote { .. })) > 0,
        "f ran pre-votes"
    );
    assert_eq!(c.leader(), Some(leader));
    for id in 1..=3 {
        assert_eq!(c.node_core(id).term(), term, "nobody's term moved");
    }
    let since = &c.node(f).actions[seen..];
    assert!(
        !since.iter().any(|(_, a)| matches!(a, RaftAction::Persist(_))),
        "f never campaigned"
    );
    c.unblock_all();
    c.propose(leader, 1).unwrap();
    assert!(c
        .run_until_pred(2_000, |c| c.node_core(f).leader() == Some(leader)
            && logs_converged(c))
        .unwrap());
}

#[test]
fn a_partitioned_leader_steps_down_via_check_quorum() {
    let mut c = calm(3, 0);
    c.start().unwrap();
    let old = elect(&mut c);
    let term = c.node_core(old).term();
    c.isolate(old);
    let t0 = c.now_ms;
    let min_ms = c.cfg.raft.election_timeout_min_ms;
    assert!(c
        .run_until_pred(2 * min_ms, |c| c.node_core(old).role() != Role::Leader)
        .unwrap());
    assert!(
        c.now_ms - t0 <= min_ms + 20,
        "steps down one election timeout after losing the quorum"
    );
    assert_eq!(
        (c.node_core(old).role(), c.node_core(old).term()),
        (Role::Follower, term)
    );
    assert!(!c.node_core(old).has_quorum_contact(c.now_ms));
    // The majority side elects a new leader in a later term.
    assert!(c
        .run_until_pred(5_000, |c| c.leader().is_some_and(|l| l != old))
        .unwrap());
    assert!(c.node_core(c.leader().unwrap()).term() > term);
}

#[test]
fn a_rejoining_old_leader_is_truncated_at_the_right_batch_boundary() {
    let mut c = calm(3, 0);
    c.start().unwrap();
    let old = elect(&mut c);
    c.propose(old, 3).unwrap();
    assert!(c
        .run_until_pred(2_000, |c| logs_converged(c)
            && c.committed_end == c.node(old).log.end())
        .unwrap());
    let cut = c.node(old).log.end();
    c.isolate(old);
    c.propose(old, 4).unwrap(); // never committed: only the old leader has them
    assert!(c
        .run_until_pred(5_000, |c| c.leader().is_some_and(|l| l != old))
        .unwrap());
    let new = c.leader().unwrap();
    c.propose(new, 2).unwrap();
    c.run_for(500).unwrap();
    c.unblock_all();
    assert!(c.run_until_pred(3_000, logs_converged).unwrap());
    let truncations: Vec<u64> = c
        .node(old)
        .actions
        .iter()
        .filter_map(|(_, a)| match a {
            RaftAction::Truncate { from } => Some(*from),
            _ => None,
        })
        .collect();
    assert_eq!(
        truncations,
        vec![cut],
        "cut exactly where its uncommitted batches began"
    );
    assert_eq!(c.node_core(old).leader(), Some(new));
}

#[test]
fn a_probe_walks_back_by_epoch_and_truncates_once() {
    // Nodes 1 and 3: [0..3) e1, [3..5) e1, [5..7) e3. Node 2: [0..3) e1, [3..5) e1,
    // [5..8) e2, [8..9) e2. Node 2 cannot win; the leader must cut node 2 at 5.
    let mut c = calm(3, 0);
    let mut winner = ModelLog::new();
    winner.append_new(1, 3, 1, 0);
    winner.append_new(1, 2, 2, 0);
    let mut loser = winner.clone();
    winner.append_new(3, 2, 3, 0);
    loser.append_new(2, 3, 4, 0);
    loser.append_new(2, 1, 5, 0);
    winner.fsync();
    loser.fsync();
    let hard = HardState {
        term: 3,
        voted_for: None,
    };
    c.preload(1, winner.clone(), hard);
    c.preload(2, loser, hard);
    c.preload(3, winner, hard);
    c.start().unwrap();
    let leader = elect(&mut c);
    assert_ne!(leader, 2);
    assert!(c.run_until_pred(3_000, logs_converged).unwrap());
    let cuts: Vec<u64> = c
        .node(2)
        .actions
        .iter()
        .filter_map(|(_, a)| match a {
            RaftAction::Truncate { from } => Some(*from),
            _ => None,
        })
        .collect();
    assert_eq!(cuts, vec![5]);
}

#[test]
fn empty_followers_catch_up_within_the_inflight_bound() {
    let mut cfg = SimConfig::calm(5, 3, 1);
    cfg.raft.inflight_bytes_max = 200;
    cfg.raft.append_bytes_max = 64;
    cfg.faults.delay_min_ms = 10;
    cfg.faults.delay_max_ms = 30;
    let mut c = Cluster::new(cfg);
    c.record_actions = true;
    // Nodes 1 and 2 hold 120 batches (committed on a majority); node 3 and learner 4 are empty.
    let mut full = ModelLog::new();
    for id in 1..=120 {
        full.append_new(1, 1 + id % 3, id, (id % 20) as usize);
    }
    full.fsync();
    let hard = HardState {
        term: 1,
        voted_for: None,
    };
    c.preload(1, full.clone(), hard);
    c.preload(2, full.clone(), hard);
    c.start().unwrap();
    let leader = elect(&mut c);
    assert!(leader == 1 || leader == 2, "an empty log cannot win");
    assert!(c
        .run_until_pred(10_000, |c| logs_converged(c)
            && c.nodes.iter().all(|n| n.log.durable_end() == n.log.end()))
        .unwrap());
    let end = c.node(leader).log.end();
    assert!(end > full.end());
    assert!(c
        .run_until_pred(1_000, |c| c.nodes.iter().all(|n| n
            .core
            .as_ref()
            .unwrap()
            .commit_end()
            == end))
        .unwrap());
    // Pipelining used more than one Append's worth, and never more than the bound.
    assert!(
        c.stats.max_inflight_bytes > 64,
        "max in flight {}",
        c.stats.max_inflight_bytes
    );
    assert!(c.stats.max_inflight_bytes <= 200);
    let appends_to_learner = sent_by(&c, leader, |to, m| to == 4 && matches!(m, RaftMsg::Append { .. }));
    assert!(
        appends_to_learner > 10,
        "the learner was fed in many bounded Appends"
    );
}

#[test]
fn learners_never_count_toward_commit() {
    let mut c = calm(3, 1);
    c.start().unwrap();
    let leader = elect(&mut c);
    c.propose(leader, 1).unwrap();
    assert!(c.run_until_pred(2_000, logs_converged).unwrap());
    let committed = c.node_core(leader).commit_end();
    for id in 1..=3 {
        if id != leader {
            c.crash((id - 1) as usize);
        }
    }
    c.propose(leader, 1).unwrap();
    let end = c.node(leader).log.end();
    assert!(
        c.run_until_pred(1_000, |c| c.node(4).log.durable_end() == end)
            .unwrap(),
        "the learner has it durably"
    );
    c.run_for(300).unwrap();
    assert_eq!(
        c.node_core(leader).commit_end(),
        committed,
        "leader + learner is no majority of voters"
    );
    assert_eq!(c.node_core(4).commit_end(), committed);
}

#[test]
fn commit_needs_an_entry_of_the_current_term() {
    // Nodes 1 and 2 hold [0..2) e1, [2..4) e2 durably, but it was never committed. A new
    // leader commits it only together with its own no-op.
    let mut c = calm(3, 0);
    let mut two = ModelLog::new();
    two.append_new(1, 2, 1, 0);
    let mut one = two.clone();
    two.append_new(2, 2, 2, 0);
    two.fsync();
    one.fsync();
    c.preload(
        1,
        two.clone(),
        HardState {
            term: 2,
            voted_for: None,
        },
    );
    c.preload(
        2,
        two,
        HardState {
            term: 2,
            voted_for: None,
        },
    );
    c.preload(
        3,
        one,
        HardState {
            term: 2,
            voted_for: None,
        },
    );
    c.start().unwrap();
    let leader = elect(&mut c);
    assert!(c
        .run_until_pred(2_000, |c| c.node_core(leader).commit_end() > 0)
        .unwrap());
    let advances: Vec<u64> = c
        .node(leader)
        .actions
        .iter()
        .filter_map(|(_, a)| match a {
            RaftAction::CommitAdvanced { commit_end } => Some(*commit_end),
            _ => None,
        })
        .collect();
    assert_eq!(
        advances,
        vec![5],
        "never 2 or 4: those entries are of older terms"
    );
}

#[test]
fn a_follower_below_the_leaders_log_start_does_not_loop() {
    // Nodes 1 and 2 dropped everything below 10; node 3 is empty and would need a snapshot.
    let mut c = calm(3, 0);
    let mut trimmed = ModelLog::starting_at(10, 1);
    for id in 1..=5 {
        trimmed.append_new(1, 2, id, 0);
    }
    trimmed.fsync();
    let hard = HardState {
        term: 1,
        voted_for: None,
    };
    c.preload(1, trimmed.clone(), hard);
    c.preload(2, trimmed, hard);
    c.start().unwrap();
    let leader = elect(&mut c);
    c.run_for(3_000).unwrap();
    assert!(c.node_core(leader).needs_snapshot(3));
    assert!(c.node(3).log.end() == 0, "nothing can be sent");
    let appends = sent_by(&c, leader, |to, m| to == 3 && matches!(m, RaftMsg::Append { .. }));
    let heartbeats = sent_by(&c, leader, |to, m| {
        to == 3 && matches!(m, RaftMsg::Heartbeat { .. })
    });
    let needs = c
        .node(leader)
        .actions
        .iter()
        .filter(|(_, a)| matches!(a, RaftAction::NeedEntries { to: 3, .. }))
        .count();
    assert!(
        appends <= 2 && needs == 0,
        "{appends} Appends, {needs} NeedEntries to node 3"
    );
    assert!(heartbeats > 20, "it still gets heartbeats");
    // The others commit normally.
    assert_eq!(c.node_core(leader).commit_end(), c.node(leader).log.end());
    assert_eq!(c.node_core(leader).role(), Role::Leader);
    assert!(c.node(leader).log.start() == 10 && c.node(leader).log.epoch_at(10) == Some(1));
}

#[test]
fn a_restarted_follower_relearns_the_commit_point_from_an_idle_leader() {
    let mut c = calm(3, 0);
    c.start().unwrap();
    let leader = elect(&mut c);
    c.propose(leader, 3).unwrap();
    let end = c.node(leader).log.end();
    assert!(c
        .run_until_pred(2_000, |c| c.nodes.iter().all(|n| n
            .core
            .as_ref()
            .unwrap()
            .commit_end()
            == end))
        .unwrap());
    let f = (1..=3).find(|&id| id != leader).unwrap();
    c.crash((f - 1) as usize);
    c.run_for(100).unwrap();
    c.restart((f - 1) as usize);
    assert_eq!(c.node_core(f).commit_end(), 0, "the commit point is not durable");
    // No new writes: heartbeats alone must let it match again and learn the commit point.
    assert!(c
        .run_until_pred(1_000, |c| c.node_core(f).commit_end() == end)
        .unwrap());
}

#[test]
fn a_refused_append_is_forgotten_and_asked_for_again() {
    let mut log = ModelLog::new();
    let (mut c, mut rng) = core(
        1,
        &[1, 2, 3],
        HardState {
            term: 1,
            voted_for: None,
        },
        &log,
    );
    let mut out = Vec::new();
    let e = entry(0, 2, 1, 1);
    let m1 = RaftMsg::Append {
        term: 1,
        prev_end: 0,
        prev_epoch: 0,
        commit_end: 0,
        entries: vec![e.clone()],
    };
    c.step(1, 2, m1.clone(), &log, &mut rng, &mut out);
    assert!(out.contains(&RaftAction::Append {
        entries: vec![e.clone()]
    }));
    // The engine refused the batch: the log did not move.
    c.on_log_settled(2, &log, &mut out);
    out.clear();
    let m2 = RaftMsg::Append {
        term: 1,
        prev_end: 3,
        prev_epoch: 1,
        commit_end: 0,
        entries: vec![entry(3, 4, 1, 2)],
    };
    c.step(3, 2, m2, &log, &mut rng, &mut out);
    let mismatch = AppendResult::Mismatch {
        prev_end: 3,
        diverging_epoch: 0,
        diverging_end: 0,
        log_end: 0,
    };
    assert_eq!(
        sends(&out),
        vec![(
            2,
            RaftMsg::AppendResp {
                term: 1,
                result: mismatch
            }
        )]
    );
    // The leader resends from 0; this time it is written and made durable.
    out.clear();
    c.step(4, 2, m1, &log, &mut rng, &mut out);
    assert!(out.contains(&RaftAction::Append {
        entries: vec![e.clone()]
    }));
    log.append(e);
    log.fsync();
    out.clear();
    c.on_log_settled(5, &log, &mut out);
    let ok = RaftMsg::AppendResp {
        term: 1,
        result: AppendResult::Ok {
            durable_end: 3,
            match_end: 3,
        },
    };
    assert_eq!(sends(&out), vec![(2, ok)]);
}
