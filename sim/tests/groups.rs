//! Group consumers in the simulator (`--groups`): seeds on one node and on a 3-node cluster
//! pass the group invariants (no partition owned twice in a generation, committed offsets
//! read back as acknowledged, a stable generation soon after the heal) with members that
//! join, leave, crash and pause; a seed replays bit for bit; and the checker reports a
//! split-brain assignment and a lost acknowledged commit planted in a hand-made history.

use gregor_sim::group_check::{
    check_group_history, CommitOutcome, CommitRecord, GroupCheckParams, GroupHistory, ReadRecord, SyncRecord,
};
use gregor_sim::{run_seed, RunResult, RunSettings};

fn with_groups(nodes: usize) -> RunSettings {
    RunSettings {
        nodes,
        groups: true,
        ..RunSettings::default()
    }
}

fn assert_ok(r: &RunResult) {
    assert!(r.ok(), "{}", r.failure_report(usize::MAX));
}

/// Sums a counter of the runs' group summaries.
fn total(runs: &[RunResult], key: &str) -> u64 {
    runs.iter()
        .filter_map(|r| r.group_summary.as_ref())
        .filter_map(|g| g[key].as_u64())
        .sum()
}

fn run_range(settings: &RunSettings, seeds: std::ops::RangeInclusive<u64>) -> Vec<RunResult> {
    let runs: Vec<RunResult> = seeds.map(|s| run_seed(s, settings)).collect();
    for r in &runs {
        assert_ok(r);
        let g = r.group_summary.as_ref().expect("a group summary");
        assert!(
            !g["stable_after_heal_ms"].is_null(),
            "seed {}: no stable generation after the heal: {g}",
            r.seed
        );
    }
    runs
}

#[test]
fn one_node_seeds_with_group_consumers_pass() {
    let runs = run_range(&with_groups(1), 1..=16);
    let churned = runs
        .iter()
        .filter(|r| {
            r.options
                .groups
                .as_ref()
                .is_some_and(|g| g.churn_interval_ms_mean.is_some())
        })
        .count();
    assert!(churned >= 4, "too few seeds with churn: {churned}");
    assert!(total(&runs, "generations") > 20, "too few rebalances");
    assert!(total(&runs, "acked") > 300, "too few acknowledged commits");
    assert!(total(&runs, "reads") > 100, "too few committed offsets read back");
}

#[test]
fn three_node_seeds_with_group_consumers_pass() {
    let runs = run_range(&with_groups(3), 1..=10);
    assert!(total(&runs, "generations") > 15, "too few rebalances");
    assert!(total(&runs, "acked") > 200, "too few acknowledged commits");
}

#[test]
fn a_group_seed_replays_bit_for_bit() {
    for nodes in [1, 3] {
        let s = with_groups(nodes);
        let (a, b) = (run_seed(7, &s), run_seed(7, &s));
        assert_eq!(a.trace_hash, b.trace_hash);
        assert_eq!(a.json_line(), b.json_line());
        assert!(a.json_line().contains("\"group\""), "{}", a.json_line());
        assert!(a.replay_command().contains("--groups"), "{}", a.replay_command());
    }
}

#[test]
fn the_checker_reports_a_split_brain_and_a_lost_commit() {
    let sync = |member: &str, partitions: Vec<i32>| SyncRecord {
        at_ms: 10,
        process: 1,
        member_id: member.to_string(),
        generation: 5,
        partitions,
    };
    let mut h = GroupHistory::default();
    h.syncs.push(sync("a", vec![0, 1]));
    h.syncs.push(sync("b", vec![1, 2]));
    h.commits.push(CommitRecord {
        process: 1,
        generation: 5,
        partition: 2,
        offset: 40,
        metadata: "m1.1".to_string(),
        sent_ms: 20,
        outcome: CommitOutcome::Acked { at_ms: 25, node: 0 },
    });
    // Read back after the acknowledgement: an older offset nobody committed, then nothing.
    let read = |value: Option<(i64, String)>| ReadRecord {
        process: 2,
        node: 0,
        sent_ms: 30,
        answered_ms: 31,
        partition: 2,
        value,
        final_read: true,
    };
    h.reads.push(read(Some((12, "m1.0".to_string()))));
    h.reads.push(read(None));
    let params = GroupCheckParams {
        partitions: 3,
        cluster: false,
        end_ms: 100,
    };
    let kinds: Vec<&str> = check_group_history(&h, &params).iter().map(|v| v.kind).collect();
    assert_eq!(
        kinds,
        vec!["group-lost-commit", "group-phantom-commit", "group-split-brain"]
    );
}
