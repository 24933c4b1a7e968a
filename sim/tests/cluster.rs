//! End-to-end cluster runs (`--nodes 3` / `5`): determinism, seeds with every fault (peer
//! network, pauses, crashes, disk faults) passing the per-step Raft invariants and the
//! history checks, and a fault-free baseline that must make progress. The seed ranges are
//! small; CI runs 300 cluster seeds through the binary (ci/test.sh).

use gregor_sim::{run_seed, RunResult, RunSettings};

fn cluster(nodes: usize) -> RunSettings {
    RunSettings {
        nodes,
        ..RunSettings::default()
    }
}

fn assert_ok(r: &RunResult) {
    assert!(r.ok(), "{}", r.failure_report(usize::MAX));
}

#[test]
fn a_cluster_seed_replays_bit_for_bit() {
    let s = cluster(3);
    let a = run_seed(5, &s);
    let b = run_seed(5, &s);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.json_line(), b.json_line());
    assert_eq!(a.history.to_json_lines(), b.history.to_json_lines());
    assert!(
        a.replay_command().ends_with("--seed 5 --nodes 3"),
        "{}",
        a.replay_command()
    );
    assert_ne!(a.trace_hash, run_seed(5, &RunSettings::default()).trace_hash);
}

#[test]
fn three_node_seeds_with_faults_pass() {
    let s = cluster(3);
    let (mut crashes, mut acked) = (0, 0);
    for seed in 1..=8 {
        let r = run_seed(seed, &s);
        assert_ok(&r);
        crashes += r.crashes;
        acked += r.acked;
    }
    assert!(
        crashes > 10 && acked > 500,
        "too little happened: {crashes} crashes, {acked} acked"
    );
}

#[test]
fn five_node_seeds_with_faults_pass() {
    for seed in 1..=4 {
        assert_ok(&run_seed(seed, &cluster(5)));
    }
}

#[test]
fn a_healthy_cluster_acknowledges_and_reads_back() {
    let s = RunSettings {
        no_faults: true,
        safety_ms: Some(3_000),
        ..cluster(3)
    };
    for seed in 1..=3 {
        let r = run_seed(seed, &s);
        assert_ok(&r);
        assert!(r.acked > 0, "seed {seed} acknowledged nothing");
        assert_eq!(r.crashes, 0);
    }
}
