//! A grudge says, for each node, the set of nodes it drops packets FROM (Jepsen's term).
//! A symmetric partition lists both directions; a one-way partition lists one. Nodes are
//! 1-based ids (the broker ids); the harness's own address is never part of a grudge.
//! JSON form: `{"n1": ["n2", "n3"], "n2": ["n1"], ...}` (nodes that drop nothing omitted).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, Vec<String>>",
    into = "BTreeMap<String, Vec<String>>"
)]
pub struct Grudge {
    drops: BTreeMap<usize, BTreeSet<usize>>,
}

/// `n3` for node 3.
pub fn node_name(node: usize) -> String {
    format!("n{node}")
}

/// Node 3 for `n3` (or `3`).
pub fn parse_node_name(name: &str) -> Result<usize, String> {
    let digits = name.strip_prefix('n').unwrap_or(name);
    digits
        .parse::<usize>()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| format!("bad node name {name:?} (expected n1, n2, ...)"))
}

impl Grudge {
    pub fn new() -> Grudge {
        Grudge::default()
    }

    /// Node `node` drops every packet from `from`.
    pub fn drop_from(&mut self, node: usize, from: usize) {
        assert!(node >= 1 && from >= 1, "nodes are 1-based");
        assert_ne!(node, from, "a node cannot drop its own packets");
        self.drops.entry(node).or_default().insert(from);
    }

    /// Every node in `a` drops from every node in `b` and vice versa.
    pub fn cut(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.drop_from(x, y);
                self.drop_from(y, x);
            }
        }
    }

    /// Node `node` cut off from every other node of 1..=nodes, both ways.
    pub fn isolate(node: usize, nodes: usize) -> Grudge {
        assert!((1..=nodes).contains(&node));
        let rest: Vec<usize> = (1..=nodes).filter(|&n| n != node).collect();
        let mut g = Grudge::new();
        g.cut(&[node], &rest);
        g
    }

    /// The nodes `node` drops packets from.
    pub fn drops_of(&self, node: usize) -> BTreeSet<usize> {
        self.drops.get(&node).cloned().unwrap_or_default()
    }

    /// Does `node` receive packets from `from`? (A node always hears itself.)
    pub fn hears(&self, node: usize, from: usize) -> bool {
        node == from || !self.drops.get(&node).is_some_and(|d| d.contains(&from))
    }

    /// The nodes of 1..=nodes that `node` receives from, itself included.
    pub fn heard_by(&self, node: usize, nodes: usize) -> BTreeSet<usize> {
        (1..=nodes).filter(|&f| self.hears(node, f)).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.drops.values().all(BTreeSet::is_empty)
    }

    /// Every node named is within 1..=nodes.
    pub fn check(&self, nodes: usize) -> Result<(), String> {
        for (&node, from) in &self.drops {
            for &f in std::iter::once(&node).chain(from) {
                if !(1..=nodes).contains(&f) {
                    return Err(format!("grudge names node {f}, the cluster has 1..={nodes}"));
                }
            }
        }
        Ok(())
    }

    /// (node, nodes it drops from), nodes that drop nothing left out.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &BTreeSet<usize>)> {
        self.drops
            .iter()
            .filter(|(_, d)| !d.is_empty())
            .map(|(&n, d)| (n, d))
    }
}

impl From<Grudge> for BTreeMap<String, Vec<String>> {
    fn from(g: Grudge) -> Self {
        g.iter()
            .map(|(n, from)| (node_name(n), from.iter().map(|&f| node_name(f)).collect()))
            .collect()
    }
}

impl TryFrom<BTreeMap<String, Vec<String>>> for Grudge {
    type Error = String;
    fn try_from(map: BTreeMap<String, Vec<String>>) -> Result<Self, String> {
        let mut g = Grudge::new();
        for (node, from) in map {
            let node = parse_node_name(&node)?;
            for f in from {
                let f = parse_node_name(&f)?;
                if f == node {
                    return Err(format!("n{node} cannot drop its own packets"));
                }
                g.drop_from(node, f);
            }
        }
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolate_is_symmetric_and_json_round_trips() {
        let g = Grudge::isolate(2, 3);
        assert_eq!(g.drops_of(2), BTreeSet::from([1, 3]));
        assert_eq!(g.drops_of(1), BTreeSet::from([2]));
        assert!(g.hears(1, 3) && !g.hears(3, 2) && g.hears(2, 2));
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(json, r#"{"n1":["n2"],"n2":["n1","n3"],"n3":["n2"]}"#);
        assert_eq!(serde_json::from_str::<Grudge>(&json).unwrap(), g);
        assert!(serde_json::from_str::<Grudge>(r#"{"n1":["n1"]}"#).is_err());
        assert!(g.check(3).is_ok() && g.check(2).is_err());
    }
}
