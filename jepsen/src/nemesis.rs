//! The nemesis: which faults a run injects (`NemesisKind`, parsed from the CLI), when and
//! where (`Schedule`, deterministic for a seed), and the thread that carries them out on a
//! `FaultTarget` (the real `Cluster`, or a fake in tests), reporting each step as a
//! `NemesisEvent` for the history.
//!
//! Invariants: at most one fault per slot (kill, pause, partition) at a time; every fault is
//! undone; and the final heal-all (heal partitions, resume everyone, restart the dead) runs
//! whatever happens — at the time limit, when the stop flag is raised, or after a panic.

mod run;
mod schedule;
mod shapes;

use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, ClusterError, Grudge};

pub use run::{Nemesis, NemesisReport};
pub use schedule::{node_list, Action, FaultOp, Schedule, Slot};
pub use shapes::Shape;

/// The default mean gap between fault starts (Jepsen's 15 s).
pub const MEAN_INTERVAL_S_DEFAULT: f64 = 15.0;

/// Which leader a leader-targeted fault aims at; the harness resolves it at fault time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaderTarget {
    /// The leader of the workload's hot partition.
    PartitionLeader,
    /// The metadata controller (leader of `__cluster_metadata`).
    Controller,
}

impl LeaderTarget {
    pub fn name(self) -> &'static str {
        match self {
            LeaderTarget::PartitionLeader => "partition-leader",
            LeaderTarget::Controller => "controller",
        }
    }
}

/// A kind of fault the run may inject. `Partition(None)` picks a shape per fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum NemesisKind {
    None,
    Kill,
    Pause,
    Partition(Option<Shape>),
    KillLeader,
    PauseLeader,
    IsolateLeader,
}

impl NemesisKind {
    /// What `all` means: every kind but `none`, partitions of any shape.
    pub const ALL: [NemesisKind; 6] = [
        NemesisKind::Kill,
        NemesisKind::Pause,
        NemesisKind::Partition(None),
        NemesisKind::KillLeader,
        NemesisKind::PauseLeader,
        NemesisKind::IsolateLeader,
    ];

    pub fn slot(self) -> Slot {
        match self {
            NemesisKind::Kill | NemesisKind::KillLeader => Slot::Kill,
            NemesisKind::Pause | NemesisKind::PauseLeader => Slot::Pause,
            // None occupies nothing; it is filtered out before scheduling.
            NemesisKind::None | NemesisKind::Partition(_) | NemesisKind::IsolateLeader => Slot::Partition,
        }
    }

    fn names() -> Vec<String> {
        let mut names: Vec<String> = ["none", "all"].iter().map(|s| s.to_string()).collect();
        names.extend(NemesisKind::ALL.iter().map(|k| k.to_string()));
        names.extend(Shape::ALL.iter().map(|s| format!("partition-{}", s.name())));
        names
    }
}

impl fmt::Display for NemesisKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NemesisKind::None => write!(f, "none"),
            NemesisKind::Kill => write!(f, "kill"),
            NemesisKind::Pause => write!(f, "pause"),
            NemesisKind::Partition(None) => write!(f, "partition"),
            NemesisKind::Partition(Some(shape)) => write!(f, "partition-{}", shape.name()),
            NemesisKind::KillLeader => write!(f, "kill-leader"),
            NemesisKind::PauseLeader => write!(f, "pause-leader"),
            NemesisKind::IsolateLeader => write!(f, "isolate-leader"),
        }
    }
}

impl FromStr for NemesisKind {
    type Err = String;
    /// One kind's name (not `all`; see `parse_kinds`).
    fn from_str(name: &str) -> Result<NemesisKind, String> {
        let kind = match name {
            "none" => NemesisKind::None,
            "kill" => NemesisKind::Kill,
            "pause" => NemesisKind::Pause,
            "partition" => NemesisKind::Partition(None),
            "kill-leader" => NemesisKind::KillLeader,
            "pause-leader" => NemesisKind::PauseLeader,
            "isolate-leader" => NemesisKind::IsolateLeader,
            other => {
                let shape = other
                    .strip_prefix("partition-")
                    .and_then(|s| Shape::ALL.into_iter().find(|shape| shape.name() == s));
                match shape {
                    Some(shape) => NemesisKind::Partition(Some(shape)),
                    None => {
                        return Err(format!(
                            "unknown nemesis {other:?}; known: {}",
                            NemesisKind::names().join(", ")
                        ))
                    }
                }
            }
        };
        Ok(kind)
    }
}

impl From<NemesisKind> for String {
    fn from(k: NemesisKind) -> String {
        k.to_string()
    }
}

impl TryFrom<String> for NemesisKind {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// Parses a comma-separated list like `kill,partition,pause,kill-leader,none` (`all` = every
/// kind but none), deduplicated, in the order first named.
pub fn parse_kinds(spec: &str) -> Result<Vec<NemesisKind>, String> {
    let mut kinds: Vec<NemesisKind> = Vec::new();
    for name in spec.split(',').map(str::trim) {
        if name.is_empty() {
            return Err(format!("empty nemesis name in {spec:?}"));
        }
        let named = if name == "all" {
            NemesisKind::ALL.to_vec()
        } else {
            vec![name.parse()?]
        };
        for k in named {
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
    }
    Ok(kinds)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Start,
    Done,
}

/// One step of the nemesis, for the history: `f` is one of kill, start, pause, resume,
/// partition, heal; `value` says on what (`{"nodes":["n2"]}`,
/// `{"grudge":{...},"shape":"halves"}`, plus `"leader"` for leader-targeted faults).
/// A `Done` with `error` set means the step failed (or partly failed).
#[derive(Debug, Clone, PartialEq)]
pub struct NemesisEvent {
    pub time: Instant,
    pub phase: Phase,
    pub f: &'static str,
    pub value: serde_json::Value,
    pub error: Option<String>,
}

/// What the nemesis acts on. Every operation is idempotent: killing a dead node, resuming
/// a running one or healing a healed network succeeds and changes nothing.
pub trait FaultTarget: Send + Sync {
    /// Nodes are 1..=node_count().
    fn node_count(&self) -> usize;
    fn kill(&self, node: usize) -> Result<(), ClusterError>;
    /// Starts every node of `nodes` that is not running, together.
    fn start_nodes(&self, nodes: &[usize]) -> Result<(), ClusterError>;
    fn pause(&self, node: usize) -> Result<(), ClusterError>;
    fn resume(&self, node: usize) -> Result<(), ClusterError>;
    /// Replaces the partition with `grudge`.
    fn partition(&self, grudge: &Grudge) -> Result<(), ClusterError>;
    fn heal(&self) -> Result<(), ClusterError>;
    fn is_alive(&self, node: usize) -> bool;
}

impl FaultTarget for Cluster {
    fn node_count(&self) -> usize {
        self.nodes()
    }
    fn kill(&self, node: usize) -> Result<(), ClusterError> {
        Cluster::kill(self, node)
    }
    fn start_nodes(&self, nodes: &[usize]) -> Result<(), ClusterError> {
        Cluster::start_nodes(self, nodes)
    }
    fn pause(&self, node: usize) -> Result<(), ClusterError> {
        Cluster::pause(self, node)
    }
    fn resume(&self, node: usize) -> Result<(), ClusterError> {
        Cluster::resume(self, node)
    }
    fn partition(&self, grudge: &Grudge) -> Result<(), ClusterError> {
        Cluster::partition(self, grudge)
    }
    fn heal(&self) -> Result<(), ClusterError> {
        Cluster::heal(self)
    }
    fn is_alive(&self, node: usize) -> bool {
        Cluster::is_alive(self, node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_all_and_shapes() {
        assert_eq!(
            parse_kinds("kill,partition,pause,kill-leader,isolate-leader,none").unwrap(),
            vec![
                NemesisKind::Kill,
                NemesisKind::Partition(None),
                NemesisKind::Pause,
                NemesisKind::KillLeader,
                NemesisKind::IsolateLeader,
                NemesisKind::None
            ]
        );
        assert_eq!(parse_kinds("all").unwrap(), NemesisKind::ALL.to_vec());
        assert_eq!(parse_kinds("kill, all ,kill").unwrap().len(), 6);
        assert_eq!(
            parse_kinds("partition-majority-ring").unwrap(),
            vec![NemesisKind::Partition(Some(Shape::MajorityRing))]
        );
        for name in NemesisKind::names() {
            assert!(parse_kinds(&name).is_ok(), "{name}");
        }
    }

    #[test]
    fn unknown_names_are_named_with_the_known_ones() {
        let e = parse_kinds("kill,clock").unwrap_err();
        assert!(
            e.contains("\"clock\"") && e.contains("kill-leader") && e.contains("partition-bridge"),
            "{e}"
        );
        assert!(parse_kinds("kill,,pause").unwrap_err().contains("empty"));
        assert!(parse_kinds("").is_err());
        assert!(parse_kinds("partition-triangle").is_err());
    }

    #[test]
    fn kinds_round_trip_through_their_names_and_json() {
        for k in NemesisKind::ALL.into_iter().chain([NemesisKind::None]) {
            assert_eq!(k.to_string().parse::<NemesisKind>().unwrap(), k);
        }
        let json = serde_json::to_string(&NemesisKind::Partition(Some(Shape::OneWay))).unwrap();
        assert_eq!(json, "\"partition-one-way\"");
        assert_eq!(
            serde_json::to_string(&LeaderTarget::PartitionLeader).unwrap(),
            "\"partition-leader\""
        );
    }
}
