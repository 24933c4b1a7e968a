//! The fault schedule: a deterministic (ChaCha8, seeded) list of timed fault actions.
//! Faults start on average every `mean_interval_s` (a uniform gap in [0, 2·mean], Jepsen's
//! `stagger`) and each lasts between a couple of seconds and `mean_interval_s`. Faults fall
//! into three slots — kill, pause, partition — and a slot holds at most one fault at a time,
//! so a kill, a pause and a partition may overlap but two kills may not. Every fault's
//! undo action is in the schedule (no later than `time_limit_s`), and the last action is
//! always a heal-all at `time_limit_s`.

use std::collections::BTreeMap;

use rand::seq::SliceRandom as _;
use rand::{Rng, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{LeaderTarget, NemesisKind, Shape};
use crate::cluster::Grudge;

/// Faults are at most this many seconds shorter than `mean_interval_s` allows.
const DURATION_S_MIN: f64 = 2.0;
/// Times are rounded to milliseconds so the JSON stays readable and replays exactly.
const TIME_QUANTUM_S: f64 = 0.001;
const QUANTA_PER_S: f64 = 1000.0;

/// One fault action, as it appears in `nemesis.json`. Node lists are names ("n1").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum FaultOp {
    /// SIGKILL these nodes.
    Kill {
        #[serde(with = "node_list")]
        nodes: Vec<usize>,
    },
    /// SIGKILL the node the leader lookup names at that moment.
    KillLeader {
        leader: LeaderTarget,
    },
    /// Restart the nodes the active kill fault took down.
    RestartKilled,
    /// SIGSTOP these nodes.
    Pause {
        #[serde(with = "node_list")]
        nodes: Vec<usize>,
    },
    PauseLeader {
        leader: LeaderTarget,
    },
    /// SIGCONT the nodes the active pause fault stopped.
    ResumePaused,
    /// Replace the partition with this grudge.
    Partition {
        shape: Shape,
        grudge: Grudge,
    },
    /// Cut the node the leader lookup names off from every other node.
    IsolateLeader {
        leader: LeaderTarget,
    },
    /// Remove every partition rule.
    Heal,
    /// End of the run: heal partitions, resume every node, restart every dead node.
    HealAll,
}

/// Which fault slot a kind occupies; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Slot {
    Kill,
    Pause,
    Partition,
}

impl FaultOp {
    /// The action that ends a fault begun in `slot`.
    fn undo(slot: Slot) -> FaultOp {
        match slot {
            Slot::Kill => FaultOp::RestartKilled,
            Slot::Pause => FaultOp::ResumePaused,
            Slot::Partition => FaultOp::Heal,
        }
    }

    /// Ends a fault (sorted before a start at the same instant)?
    pub fn is_undo(&self) -> bool {
        matches!(
            self,
            FaultOp::RestartKilled | FaultOp::ResumePaused | FaultOp::Heal
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// Seconds after the nemesis starts.
    pub at_s: f64,
    #[serde(flatten)]
    pub op: FaultOp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub seed: u64,
    pub nodes: usize,
    /// The kinds asked for, sorted and deduplicated.
    pub kinds: Vec<NemesisKind>,
    pub time_limit_s: f64,
    pub mean_interval_s: f64,
    actions: Vec<Action>,
}

/// Rounds to whole milliseconds; dividing the integer count gives the double nearest the
/// decimal, so the JSON prints it short ("10.761") and parses it back exactly.
fn quantize(t_s: f64) -> f64 {
    (t_s * QUANTA_PER_S).round() / QUANTA_PER_S
}

impl Schedule {
    /// The schedule for `kinds` on nodes 1..=nodes; the same arguments always give the same
    /// actions. `None` kinds contribute no faults (only the final heal-all).
    pub fn new(
        kinds: &[NemesisKind],
        nodes: usize,
        seed: u64,
        time_limit_s: f64,
        mean_interval_s: f64,
    ) -> Result<Schedule, String> {
        if !(1..=crate::cluster::NODES_MAX).contains(&nodes) {
            return Err(format!(
                "nodes = {nodes}, must be 1..={}",
                crate::cluster::NODES_MAX
            ));
        }
        if !(time_limit_s.is_finite() && time_limit_s > 0.0) {
            return Err(format!("time limit {time_limit_s} s must be positive"));
        }
        if !(mean_interval_s.is_finite() && mean_interval_s > 0.0) {
            return Err(format!("mean interval {mean_interval_s} s must be positive"));
        }
        let mut kinds = kinds.to_vec();
        kinds.sort();
        kinds.dedup();
        let enabled: Vec<NemesisKind> = kinds
            .iter()
            .copied()
            .filter(|k| *k != NemesisKind::None)
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let duration_s_min = DURATION_S_MIN.min(mean_interval_s / 2.0);
        let mut busy_until_s: BTreeMap<Slot, f64> = BTreeMap::new();
        let mut actions = Vec::new();
        let mut t_s = 0.0;
        // About time_limit/mean_interval steps are expected; the bound is a safety net
        // against a pathological gap sequence.
        let steps_max = (time_limit_s / mean_interval_s * 100.0).ceil() as usize + 1000;
        for _ in 0..steps_max {
            t_s = quantize(t_s + rng.gen_range(0.0..=2.0 * mean_interval_s));
            if t_s >= time_limit_s || enabled.is_empty() {
                break;
            }
            let free: Vec<NemesisKind> = enabled
                .iter()
                .copied()
                .filter(|k| busy_until_s.get(&k.slot()).is_none_or(|&u| u <= t_s))
                .collect();
            let Some(&kind) = free.choose(&mut rng) else {
                continue;
            };
            let duration_s = rng.gen_range(duration_s_min..=mean_interval_s);
            let end_s = quantize((t_s + duration_s).min(time_limit_s));
            actions.push(Action {
                at_s: t_s,
                op: start_op(kind, nodes, &mut rng),
            });
            actions.push(Action {
                at_s: end_s,
                op: FaultOp::undo(kind.slot()),
            });
            busy_until_s.insert(kind.slot(), end_s);
        }
        // Undos before starts at the same instant, heal-all last; otherwise creation order.
        actions.sort_by(|a, b| {
            let rank = |x: &Action| if x.op.is_undo() { 0 } else { 1 };
            a.at_s.total_cmp(&b.at_s).then(rank(a).cmp(&rank(b)))
        });
        actions.push(Action {
            at_s: quantize(time_limit_s),
            op: FaultOp::HealAll,
        });
        let schedule = Schedule {
            seed,
            nodes,
            kinds,
            time_limit_s,
            mean_interval_s,
            actions,
        };
        schedule.check();
        Ok(schedule)
    }

    pub fn actions(&self) -> &[Action] {
        &self.actions
    }

    /// Invariants of every schedule: times ordered and within the limit, heal-all last
    /// and only last, and each slot alternates start, undo.
    fn check(&self) {
        let (last, body) = self.actions.split_last().expect("heal-all is always there");
        assert_eq!(last.op, FaultOp::HealAll);
        let mut open: BTreeMap<Slot, bool> = BTreeMap::new();
        let mut prev_s = 0.0;
        for a in body {
            assert!(
                a.at_s >= prev_s && a.at_s <= self.time_limit_s + TIME_QUANTUM_S,
                "{a:?}"
            );
            prev_s = a.at_s;
            let slot = slot_of(&a.op).expect("heal-all only at the end");
            let was_open = open.insert(slot, !a.op.is_undo()).unwrap_or(false);
            assert_eq!(was_open, a.op.is_undo(), "slot {slot:?} out of order at {a:?}");
        }
        assert!(open.values().all(|&o| !o), "a fault without its undo");
    }
}

fn slot_of(op: &FaultOp) -> Option<Slot> {
    match op {
        FaultOp::Kill { .. } | FaultOp::KillLeader { .. } | FaultOp::RestartKilled => Some(Slot::Kill),
        FaultOp::Pause { .. } | FaultOp::PauseLeader { .. } | FaultOp::ResumePaused => Some(Slot::Pause),
        FaultOp::Partition { .. } | FaultOp::IsolateLeader { .. } | FaultOp::Heal => Some(Slot::Partition),
        FaultOp::HealAll => None,
    }
}

/// Jepsen's targets `one`, `majority`, `all`, weighted 3:1:1.
fn pick_nodes(nodes: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let count = match rng.gen_range(0..5) {
        0..=2 => 1,
        3 => nodes / 2 + 1,
        _ => nodes,
    };
    let mut all: Vec<usize> = (1..=nodes).collect();
    all.shuffle(rng);
    let mut picked = all[..count].to_vec();
    picked.sort_unstable();
    picked
}

fn pick_leader(rng: &mut ChaCha8Rng) -> LeaderTarget {
    if rng.gen_bool(0.5) {
        LeaderTarget::PartitionLeader
    } else {
        LeaderTarget::Controller
    }
}

fn start_op(kind: NemesisKind, nodes: usize, rng: &mut ChaCha8Rng) -> FaultOp {
    match kind {
        NemesisKind::None => unreachable!("None kinds are filtered out before scheduling"),
        NemesisKind::Kill => FaultOp::Kill {
            nodes: pick_nodes(nodes, rng),
        },
        NemesisKind::Pause => FaultOp::Pause {
            nodes: pick_nodes(nodes, rng),
        },
        NemesisKind::Partition(shape) => {
            let shape = shape.unwrap_or_else(|| *Shape::ALL.choose(rng).expect("ALL is not empty"));
            FaultOp::Partition {
                shape,
                grudge: shape.grudge(nodes, rng),
            }
        }
        NemesisKind::KillLeader => FaultOp::KillLeader {
            leader: pick_leader(rng),
        },
        NemesisKind::PauseLeader => FaultOp::PauseLeader {
            leader: pick_leader(rng),
        },
        NemesisKind::IsolateLeader => FaultOp::IsolateLeader {
            leader: pick_leader(rng),
        },
    }
}

/// Node ids as names in JSON: `[2, 3]` ⇄ `["n2", "n3"]`.
pub mod node_list {
    use serde::{Deserialize as _, Deserializer, Serialize as _, Serializer};

    use crate::cluster::{node_name, parse_node_name};

    pub fn serialize<S: Serializer>(nodes: &[usize], s: S) -> Result<S::Ok, S::Error> {
        nodes
            .iter()
            .map(|&n| node_name(n))
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<usize>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|n| parse_node_name(n).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nemesis::parse_kinds;

    fn all() -> Vec<NemesisKind> {
        parse_kinds("all").unwrap()
    }

    #[test]
    fn same_seed_same_schedule_other_seed_other_schedule() {
        let a = Schedule::new(&all(), 5, 42, 300.0, 15.0).unwrap();
        let b = Schedule::new(&all(), 5, 42, 300.0, 15.0).unwrap();
        let c = Schedule::new(&all(), 5, 43, 300.0, 15.0).unwrap();
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        assert_ne!(a.actions(), c.actions());
        assert!(a.actions().len() > 10, "300 s at 15 s should hold many faults");
        // The order kinds are named in does not matter.
        let mut rev = all();
        rev.reverse();
        assert_eq!(Schedule::new(&rev, 5, 42, 300.0, 15.0).unwrap(), a);
    }

    #[test]
    fn ends_with_one_heal_all_at_the_time_limit() {
        for seed in 0..50 {
            let s = Schedule::new(&all(), 3, seed, 60.0, 5.0).unwrap();
            let last = s.actions().last().unwrap();
            assert_eq!((last.at_s, &last.op), (60.0, &FaultOp::HealAll));
            let heal_alls = s.actions().iter().filter(|a| a.op == FaultOp::HealAll).count();
            assert_eq!(heal_alls, 1);
        }
        let none = Schedule::new(&[NemesisKind::None], 3, 1, 60.0, 5.0).unwrap();
        assert_eq!(none.actions().len(), 1);
    }

    #[test]
    fn every_kill_is_followed_by_a_restart_and_slots_never_overlap() {
        for seed in 0..200 {
            let s = Schedule::new(&all(), 3, seed, 120.0, 10.0).unwrap();
            // check() asserts the slot discipline; here the kill/restart pairing explicitly.
            let mut killed = false;
            for a in s.actions() {
                match a.op {
                    FaultOp::Kill { .. } | FaultOp::KillLeader { .. } => {
                        assert!(!killed, "seed {seed}: two kills at once");
                        killed = true;
                    }
                    FaultOp::RestartKilled => {
                        assert!(killed);
                        killed = false;
                    }
                    _ => {}
                }
            }
            assert!(!killed, "seed {seed}: a kill without its restart");
        }
    }

    #[test]
    fn faults_are_spaced_about_the_mean_interval_and_last_up_to_it() {
        let s = Schedule::new(&[NemesisKind::Kill], 3, 9, 3000.0, 15.0).unwrap();
        let starts: Vec<f64> = s
            .actions()
            .iter()
            .filter(|a| !a.op.is_undo())
            .map(|a| a.at_s)
            .collect();
        // one slot: gaps are at least the previous fault's length; mean within reason
        let mean_gap = starts.last().unwrap() / (starts.len() - 1) as f64;
        assert!((12.0..=30.0).contains(&mean_gap), "mean gap {mean_gap}");
        for pair in s.actions()[..s.actions().len() - 1].chunks(2) {
            let length = pair[1].at_s - pair[0].at_s;
            assert!((0.0..=15.0 + 1e-9).contains(&length), "{pair:?}");
        }
    }

    #[test]
    fn targets_stay_inside_the_cluster_and_json_names_nodes() {
        for seed in 0..50 {
            let s = Schedule::new(&all(), 5, seed, 200.0, 5.0).unwrap();
            for a in s.actions() {
                match &a.op {
                    FaultOp::Kill { nodes } | FaultOp::Pause { nodes } => {
                        assert!(!nodes.is_empty() && nodes.iter().all(|n| (1..=5).contains(n)));
                    }
                    FaultOp::Partition { grudge, .. } => grudge.check(5).unwrap(),
                    _ => {}
                }
            }
        }
        let a = Action {
            at_s: 1.5,
            op: FaultOp::Kill { nodes: vec![2, 3] },
        };
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"{"at_s":1.5,"op":"kill","nodes":["n2","n3"]}"#);
        assert_eq!(serde_json::from_str::<Action>(&json).unwrap(), a);
        let s = Schedule::new(&all(), 3, 1, 100.0, 5.0).unwrap();
        let back: Schedule = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn bad_arguments_are_named() {
        assert!(Schedule::new(&all(), 0, 1, 10.0, 1.0)
            .unwrap_err()
            .contains("nodes"));
        assert!(Schedule::new(&all(), 3, 1, 0.0, 1.0)
            .unwrap_err()
            .contains("time limit"));
        assert!(Schedule::new(&all(), 3, 1, 10.0, -1.0)
            .unwrap_err()
            .contains("interval"));
    }
}
