//! The simulator must catch known-bad engine behaviour: each planted bug (built only with
//! the `planted-bugs` feature) must make some seed of a small range fail that passes with
//! the switch off, and the range must pass with every switch off. The Raft bugs are hunted
//! in three-node clusters.
#![cfg(feature = "planted-bugs")]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use gregor_sim::{run_seed, Planted, RunSettings};

const SEEDS: std::ops::RangeInclusive<u64> = 1..=50;

/// Per seed: the first few violations (empty = passed).
fn violations(planted: Vec<Planted>) -> BTreeMap<u64, Vec<String>> {
    let s = RunSettings {
        planted,
        ..RunSettings::default()
    };
    SEEDS
        .map(|seed| {
            let r = run_seed(seed, &s);
            (seed, r.violations.iter().take(3).map(|v| v.to_string()).collect())
        })
        .collect()
}

fn baseline() -> &'static BTreeMap<u64, Vec<String>> {
    static BASELINE: OnceLock<BTreeMap<u64, Vec<String>>> = OnceLock::new();
    BASELINE.get_or_init(|| violations(vec![]))
}

fn assert_caught(p: Planted) {
    let with = violations(vec![p]);
    let caught: Vec<(&u64, &Vec<String>)> = with
        .iter()
        .filter(|(seed, v)| !v.is_empty() && baseline()[*seed].is_empty())
        .collect();
    assert!(
        !caught.is_empty(),
        "no seed in {SEEDS:?} caught planted bug {}",
        p.name()
    );
    eprintln!(
        "{}: {} seeds caught it, e.g. {:?}",
        p.name(),
        caught.len(),
        caught.first()
    );
}

#[test]
fn the_range_passes_without_planted_bugs() {
    let failed: Vec<_> = baseline().iter().filter(|(_, v)| !v.is_empty()).collect();
    assert!(
        failed.is_empty(),
        "seeds fail without any planted bug: {failed:?}"
    );
}

#[test]
fn ack_before_fsync_is_caught() {
    assert_caught(Planted::AckBeforeFsync);
}

#[test]
fn skip_recovery_crc_is_caught() {
    assert_caught(Planted::SkipRecoveryCrc);
}

#[test]
fn index_off_by_one_is_caught() {
    assert_caught(Planted::IndexOffByOne);
}

/// Cluster seeds the Raft bugs are hunted in (each hunt stops at its first catch).
const CLUSTER_SEEDS: std::ops::RangeInclusive<u64> = 1..=200;

fn cluster(planted: Vec<Planted>) -> RunSettings {
    RunSettings {
        nodes: 3,
        planted,
        ..RunSettings::default()
    }
}

/// Runs cluster seeds with `p` on until one fails that passes with `p` off. A seed that
/// fails either way proves nothing about `p` and is skipped (and counted).
fn assert_caught_in_cluster(p: Planted) {
    let mut failing_anyway = Vec::new();
    for seed in CLUSTER_SEEDS {
        let with = run_seed(seed, &cluster(vec![p]));
        if with.ok() {
            continue;
        }
        if !run_seed(seed, &cluster(vec![])).ok() {
            failing_anyway.push(seed);
            continue;
        }
        let shown: Vec<String> = with.violations.iter().take(3).map(|v| v.to_string()).collect();
        eprintln!(
            "{}: caught by seed {seed} ({}), which passes without it; skipped {} seeds that fail \
             without it too {failing_anyway:?}: {shown:?}",
            p.name(),
            with.replay_command(),
            failing_anyway.len()
        );
        return;
    }
    panic!(
        "no cluster seed in {CLUSTER_SEEDS:?} caught planted bug {} (seeds failing without it: {failing_anyway:?})",
        p.name()
    );
}

#[test]
fn vote_without_persist_is_caught() {
    assert_caught_in_cluster(Planted::VoteWithoutPersist);
}

#[test]
fn follower_ack_before_fsync_is_caught() {
    assert_caught_in_cluster(Planted::FollowerAckBeforeFsync);
}

#[test]
fn commit_on_minority_is_caught() {
    assert_caught_in_cluster(Planted::CommitOnMinority);
}

#[test]
fn skip_truncation_is_caught() {
    assert_caught_in_cluster(Planted::SkipTruncation);
}
