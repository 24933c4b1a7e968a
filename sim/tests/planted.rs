//! The simulator must catch known-bad engine behaviour: each planted bug (built only with
//! the `planted-bugs` feature) must make some seed of a small range fail that passes with
//! the switch off, and the range must pass with every switch off.
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
