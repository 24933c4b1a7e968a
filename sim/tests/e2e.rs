//! End-to-end runs of the simulator against the real engine: determinism of the trace
//! hash, a handful of seeds with faults, and a fault-free baseline that must make progress.

use gregor_sim::{run_seed, RunSettings};

fn assert_ok(r: &gregor_sim::RunResult) {
    assert!(r.ok(), "{}", r.failure_report(usize::MAX));
}

#[test]
fn a_seed_replays_bit_for_bit() {
    let s = RunSettings::default();
    for seed in [3, 17] {
        let a = run_seed(seed, &s);
        let b = run_seed(seed, &s);
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
        assert_eq!(a.steps, b.steps);
        assert_eq!(a.json_line(), b.json_line());
        assert_eq!(a.history.to_json_lines(), b.history.to_json_lines());
    }
}

#[test]
fn different_seeds_give_different_traces() {
    let s = RunSettings::default();
    let hashes: std::collections::BTreeSet<u64> = (1..=6).map(|seed| run_seed(seed, &s).trace_hash).collect();
    assert_eq!(hashes.len(), 6);
}

#[test]
fn seeds_with_faults_pass() {
    let s = RunSettings::default();
    let (mut crashes, mut acked) = (0, 0);
    for seed in 1..=12 {
        let r = run_seed(seed, &s);
        assert_ok(&r);
        crashes += r.crashes;
        acked += r.acked;
    }
    assert!(
        crashes > 10 && acked > 1_000,
        "too little happened: {crashes} crashes, {acked} acked"
    );
}

#[test]
fn without_faults_every_seed_acknowledges_and_reads_back() {
    let s = RunSettings {
        no_faults: true,
        safety_ms: Some(1_000),
        ..RunSettings::default()
    };
    for seed in 1..=5 {
        let r = run_seed(seed, &s);
        assert_ok(&r);
        assert!(r.acked > 0, "seed {seed} acknowledged nothing");
        assert_eq!(r.crashes, 0);
    }
}

#[test]
fn steps_bound_the_safety_phase() {
    let short = run_seed(
        4,
        &RunSettings {
            steps_max: Some(200),
            ..RunSettings::default()
        },
    );
    let long = run_seed(4, &RunSettings::default());
    assert_ok(&short);
    assert!(short.steps < long.steps, "{} vs {}", short.steps, long.steps);
}
