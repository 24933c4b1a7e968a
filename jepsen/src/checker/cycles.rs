//! The transactional dependency-graph checks of JEPSEN.md §3 ("Dependency graph and
//! cycles"): G0, G1c and the G-single / G2-item extension. **Not implemented yet**; this
//! module is where they go, and everything around it is ready for them:
//!
//! - Nodes are the completed `send`/`poll`/`txn` ops ([`Context::ops`] ids, filtered by
//!   `is_queue`).
//! - ww edges (only when [`CheckOptions::ww_deps`]): per key, for each dense index
//!   `i > 0`, `writer_of[by_index[i-1]] → writer_of[by_index[i]]`, no self-edges
//!   ([`Context::versions`], [`Context::writer_of`]).
//! - wr edges: `writer_of[v] → readers_of[v]` (every read, not only the highest).
//! - rw edges (G-single / G2-item only): each `ok` reader's highest read `v` per key →
//!   the writer of `by_index[idx(v) + 1]`.
//! - realtime edges: A completed before B was invoked (history indices).
//!
//! Then Tarjan's SCCs, a short-cycle search in each, and [`CycleClass::of`] names each
//! cycle; report it with [`CycleClass::name`] through [`Anomalies::add`], with the cycle
//! and a step-by-step explanation in `detail`. The verdict table in `super::allowed`
//! already knows every name this produces.

use super::context::Context;
use super::{Anomalies, CheckOptions};

/// The edge kinds a cycle can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Edge {
    Ww,
    Wr,
    Rw,
    Realtime,
    Process,
}

/// Elle's classification (`elle` `src/elle/txn.clj`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CycleClass {
    /// Write cycle: only ww edges (always allowed: Kafka does not isolate writes).
    G0,
    /// Circular information flow: some wr edge, no rw (allowed only with ww deps).
    G1c,
    /// Exactly one rw edge (informational).
    GSingle,
    /// Two or more rw edges (informational).
    G2Item,
}

impl CycleClass {
    /// The class of a cycle with these edges.
    pub fn of(edges: &[Edge]) -> CycleClass {
        let rw = edges.iter().filter(|&&e| e == Edge::Rw).count();
        match rw {
            1 => CycleClass::GSingle,
            n if n > 1 => CycleClass::G2Item,
            _ if edges.contains(&Edge::Wr) => CycleClass::G1c,
            _ => CycleClass::G0,
        }
    }

    /// The anomaly kind: the class, with `-realtime` if a realtime edge is used, else
    /// `-process` if a process edge is.
    pub fn name(self, edges: &[Edge]) -> String {
        let base = match self {
            CycleClass::G0 => "G0",
            CycleClass::G1c => "G1c",
            CycleClass::GSingle => "G-single",
            CycleClass::G2Item => "G2-item",
        };
        if edges.contains(&Edge::Realtime) {
            format!("{base}-realtime")
        } else if edges.contains(&Edge::Process) {
            format!("{base}-process")
        } else {
            base.to_string()
        }
    }
}

/// The cycle search (called only when `opts.transactions` is set; `opts.ww_deps` decides
/// whether ww edges are built). Currently finds nothing: the search described in the
/// module docs goes here.
pub(crate) fn check(_cx: &Context, _opts: &CheckOptions, _out: &mut Anomalies) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_are_classified_as_elle_does() {
        use Edge::*;
        assert_eq!(CycleClass::of(&[Ww, Ww]).name(&[Ww, Ww]), "G0");
        assert_eq!(CycleClass::of(&[Ww, Wr]), CycleClass::G1c);
        assert_eq!(
            CycleClass::of(&[Wr, Rw, Realtime]).name(&[Wr, Rw, Realtime]),
            "G-single-realtime"
        );
        assert_eq!(
            CycleClass::of(&[Rw, Rw, Process]).name(&[Rw, Rw, Process]),
            "G2-item-process"
        );
    }
}
