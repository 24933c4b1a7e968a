//! `--planted NAME`: switches on one of the engine's planted bugs in a real broker, so the
//! Jepsen harness can show that it finds them (see `engine/src/planted.rs`). Only a build
//! with `--features planted-bugs` accepts the flag; any other build refuses it by name, so
//! a release binary cannot run with a planted bug.

use gregor_engine::planted::PlantedBugs;

/// Every planted bug's flag name (the simulator's `--planted` uses the same names).
pub const NAMES: [&str; 7] = [
    "ack-before-fsync",
    "skip-recovery-crc",
    "index-off-by-one",
    "vote-without-persist",
    "follower-ack-before-fsync",
    "commit-on-minority",
    "skip-truncation",
];

/// Switches on each named bug in `bugs`.
pub fn apply(names: &[String], bugs: &mut PlantedBugs) -> Result<(), String> {
    for name in names {
        if !NAMES.contains(&name.as_str()) {
            return Err(format!(
                "--planted: unknown planted bug '{name}'; one of {}",
                NAMES.join(", ")
            ));
        }
        set(name, bugs)?;
    }
    Ok(())
}

#[cfg(feature = "planted-bugs")]
fn set(name: &str, bugs: &mut PlantedBugs) -> Result<(), String> {
    match name {
        "ack-before-fsync" => bugs.ack_before_fsync = true,
        "skip-recovery-crc" => bugs.skip_recovery_crc = true,
        "index-off-by-one" => bugs.index_off_by_one = true,
        "vote-without-persist" => bugs.vote_without_persist = true,
        "follower-ack-before-fsync" => bugs.follower_ack_before_fsync = true,
        "commit-on-minority" => bugs.commit_on_minority = true,
        "skip-truncation" => bugs.skip_truncation = true,
        _ => unreachable!("checked against NAMES"),
    }
    Ok(())
}

#[cfg(not(feature = "planted-bugs"))]
fn set(name: &str, _bugs: &mut PlantedBugs) -> Result<(), String> {
    Err(format!(
        "--planted {name}: this gregor was built without planted bugs \
         (build it with `cargo build --release --bin gregor --features planted-bugs`)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_name_is_refused_by_name() {
        let err = apply(&["no-such-bug".into()], &mut PlantedBugs::default()).unwrap_err();
        assert!(
            err.contains("'no-such-bug'") && err.contains("commit-on-minority"),
            "{err}"
        );
    }

    #[cfg(not(feature = "planted-bugs"))]
    #[test]
    fn a_build_without_the_feature_refuses_every_bug() {
        for name in NAMES {
            let err = apply(&[name.into()], &mut PlantedBugs::default()).unwrap_err();
            assert!(err.contains("without planted bugs"), "{err}");
        }
    }

    #[cfg(feature = "planted-bugs")]
    #[test]
    fn a_planted_build_switches_the_bug_on() {
        let mut bugs = PlantedBugs::default();
        apply(&["commit-on-minority".into()], &mut bugs).unwrap();
        assert!(bugs.commit_on_minority() && !bugs.ack_before_fsync());
    }
}
