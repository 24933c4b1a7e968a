//! Partition shapes (Jepsen's `nemesis.clj`), each a grudge over nodes 1..=n built from a
//! shuffled node order, so the seed picks who ends up where.
//! - halves: two sides (⌊n/2⌋ and the rest) that cannot talk;
//! - isolate: one node alone, both ways;
//! - majority ring: every node hears a majority (itself included), and no two nodes hear
//!   the same majority — "majorities-ring-perfect", drops may be one-way;
//! - bridge: two halves that cannot talk, joined by one node that hears and is heard by all;
//! - one way: node A drops packets from B (or from everyone) while they still hear A.

use rand::seq::SliceRandom as _;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::cluster::Grudge;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    Halves,
    Isolate,
    MajorityRing,
    Bridge,
    OneWay,
}

impl Shape {
    pub const ALL: [Shape; 5] = [
        Shape::Halves,
        Shape::Isolate,
        Shape::MajorityRing,
        Shape::Bridge,
        Shape::OneWay,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Halves => "halves",
            Shape::Isolate => "isolate",
            Shape::MajorityRing => "majority-ring",
            Shape::Bridge => "bridge",
            Shape::OneWay => "one-way",
        }
    }

    /// A grudge of this shape over nodes 1..=nodes, placement chosen by `rng`.
    pub fn grudge(self, nodes: usize, rng: &mut impl Rng) -> Grudge {
        assert!(nodes >= 1);
        let mut order: Vec<usize> = (1..=nodes).collect();
        order.shuffle(rng);
        match self {
            Shape::Halves => halves(&order),
            Shape::Isolate => Grudge::isolate(order[0], nodes),
            Shape::MajorityRing => majority_ring(&order),
            Shape::Bridge => bridge(&order),
            Shape::OneWay => {
                let everyone = rng.gen_bool(0.5);
                one_way(&order, everyone)
            }
        }
    }
}

/// The first ⌊n/2⌋ nodes of `order` against the rest.
pub fn halves(order: &[usize]) -> Grudge {
    let (a, b) = order.split_at(order.len() / 2);
    let mut g = Grudge::new();
    g.cut(a, b);
    g
}

/// Windows of a majority `m` of consecutive nodes around the ring `order`; the node in the
/// middle of each window hears only that window. Each node is the middle of exactly one.
pub fn majority_ring(order: &[usize]) -> Grudge {
    let n = order.len();
    let m = n / 2 + 1;
    let mut g = Grudge::new();
    for start in 0..n {
        let window: Vec<usize> = (0..m).map(|j| order[(start + j) % n]).collect();
        let middle = window[m / 2];
        for &other in order.iter().filter(|o| !window.contains(o)) {
            g.drop_from(middle, other);
        }
    }
    g
}

/// Halves as in `halves`, except that the first node of the second half (the bridge) keeps
/// talking to everyone.
pub fn bridge(order: &[usize]) -> Grudge {
    let (a, b) = order.split_at(order.len() / 2);
    let mut g = Grudge::new();
    if let Some((_bridge, rest)) = b.split_first() {
        g.cut(a, rest);
    }
    g
}

/// `order[0]` drops packets from `order[1]`, or from every other node when `everyone`;
/// nobody drops packets from it.
pub fn one_way(order: &[usize], everyone: bool) -> Grudge {
    let mut g = Grudge::new();
    let Some((&a, others)) = order.split_first() else {
        return g;
    };
    let from = if everyone {
        others
    } else {
        &others[..others.len().min(1)]
    };
    for &b in from {
        g.drop_from(a, b);
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;
    use rand_chacha::ChaCha8Rng;
    use std::collections::BTreeSet;

    fn majority(n: usize) -> usize {
        n / 2 + 1
    }

    #[test]
    fn majority_ring_every_node_hears_a_distinct_majority() {
        for n in [3, 5] {
            for seed in 0..20 {
                let g = Shape::MajorityRing.grudge(n, &mut ChaCha8Rng::seed_from_u64(seed));
                let views: BTreeSet<BTreeSet<usize>> = (1..=n).map(|x| g.heard_by(x, n)).collect();
                assert_eq!(views.len(), n, "n={n}: two nodes hear the same majority: {g:?}");
                for x in 1..=n {
                    assert_eq!(g.heard_by(x, n).len(), majority(n), "n={n} node {x}: {g:?}");
                }
                assert!(!g.is_empty());
            }
        }
    }

    #[test]
    fn majority_ring_for_three_is_a_cycle_of_one_way_drops() {
        let g = majority_ring(&[1, 2, 3]);
        // windows [1,2] [2,3] [3,1]: middles 2, 3, 1 drop 3, 1, 2
        assert_eq!(g.drops_of(2), BTreeSet::from([3]));
        assert_eq!(g.drops_of(3), BTreeSet::from([1]));
        assert_eq!(g.drops_of(1), BTreeSet::from([2]));
    }

    #[test]
    fn halves_split_into_a_minority_and_a_majority_that_cannot_talk() {
        for n in [3, 5] {
            let g = Shape::Halves.grudge(n, &mut ChaCha8Rng::seed_from_u64(7));
            let small: Vec<usize> = (1..=n).filter(|&x| g.heard_by(x, n).len() == n / 2).collect();
            let big: Vec<usize> = (1..=n).filter(|&x| g.heard_by(x, n).len() == n - n / 2).collect();
            assert_eq!((small.len(), big.len()), (n / 2, n - n / 2), "{g:?}");
            for &s in &small {
                for &b in &big {
                    assert!(!g.hears(s, b) && !g.hears(b, s));
                }
            }
        }
        assert_eq!(halves(&[2, 1, 3]), Grudge::isolate(2, 3));
    }

    #[test]
    fn bridge_node_hears_and_is_heard_by_all() {
        let g = bridge(&[4, 1, 5, 2, 3]);
        // halves [4,1] and [5,2,3]; 5 is the bridge.
        assert_eq!(g.heard_by(5, 5).len(), 5);
        for x in [1, 2, 3, 4] {
            assert!(g.hears(x, 5), "{x} must hear the bridge");
        }
        assert_eq!(g.heard_by(4, 5), BTreeSet::from([1, 4, 5]));
        assert_eq!(g.heard_by(2, 5), BTreeSet::from([2, 3, 5]));
        let g3 = bridge(&[3, 1, 2]);
        assert_eq!(g3.drops_of(3), BTreeSet::from([2]));
        assert_eq!(g3.drops_of(2), BTreeSet::from([3]));
        assert!(g3.drops_of(1).is_empty());
    }

    #[test]
    fn one_way_drops_only_on_one_side() {
        let g = one_way(&[2, 3, 1], false);
        assert!(!g.hears(2, 3) && g.hears(3, 2));
        assert_eq!(g.iter().count(), 1);
        let all = one_way(&[2, 3, 1], true);
        assert_eq!(all.drops_of(2), BTreeSet::from([1, 3]));
        assert!(all.hears(1, 2) && all.hears(3, 2));
    }

    #[test]
    fn isolate_leaves_one_node_alone() {
        let g = Shape::Isolate.grudge(5, &mut ChaCha8Rng::seed_from_u64(1));
        let alone: Vec<usize> = (1..=5).filter(|&x| g.heard_by(x, 5).len() == 1).collect();
        assert_eq!(alone.len(), 1);
    }
}
