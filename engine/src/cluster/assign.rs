//! Replica placement for new partitions, as Kafka's controller does it without racks:
//! partition `p` gets the `rf` brokers that follow a start position on the ring of broker
//! ids, shifted by one per partition, so that both replicas and preferred leaders (the
//! first replica) spread evenly over the brokers.

use super::records::NodeId;

/// Why replicas cannot be placed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AssignError {
    /// Kafka's INVALID_REPLICATION_FACTOR.
    #[error("replication factor {rf} is larger than the {brokers} available brokers")]
    TooFewBrokers { rf: usize, brokers: usize },
    #[error("replication factor must be at least 1, not {0}")]
    BadFactor(i32),
}

/// Replicas for partitions `first..first + count`, from the distinct `brokers`, starting
/// the ring at `start` (the controller draws it at random per topic, like Kafka).
pub fn assign(
    brokers: &[NodeId],
    first: i32,
    count: i32,
    rf: i32,
    start: usize,
) -> Result<Vec<Vec<NodeId>>, AssignError> {
    let mut ring = brokers.to_vec();
    ring.sort_unstable();
    ring.dedup();
    let rf_usize = usize::try_from(rf)
        .ok()
        .filter(|&r| r >= 1)
        .ok_or(AssignError::BadFactor(rf))?;
    if rf_usize > ring.len() {
        return Err(AssignError::TooFewBrokers {
            rf: rf_usize,
            brokers: ring.len(),
        });
    }
    let n = ring.len();
    Ok((first..first + count.max(0))
        .map(|p| {
            let at = start + p as usize;
            (0..rf_usize).map(|k| ring[(at + k) % n]).collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn replicas_are_distinct_and_spread_evenly() {
        let brokers = [3, 1, 2, 5, 4];
        let a = assign(&brokers, 0, 10, 3, 2).unwrap();
        assert_eq!(a.len(), 10);
        let mut leaders = BTreeMap::new();
        let mut replicas = BTreeMap::new();
        for r in &a {
            let mut d = r.clone();
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), 3, "{r:?} repeats a broker");
            *leaders.entry(r[0]).or_insert(0) += 1;
            for b in r {
                *replicas.entry(*b).or_insert(0) += 1;
            }
        }
        assert!(leaders.values().all(|&c| c == 2), "{leaders:?}");
        assert!(replicas.values().all(|&c| c == 6), "{replicas:?}");
        assert_eq!(
            assign(&brokers, 3, 1, 3, 2).unwrap()[0],
            a[3],
            "later partitions continue the ring"
        );
    }

    #[test]
    fn impossible_factors_are_refused() {
        assert_eq!(
            assign(&[1, 2], 0, 1, 3, 0),
            Err(AssignError::TooFewBrokers { rf: 3, brokers: 2 })
        );
        assert_eq!(
            assign(&[1, 1, 1], 0, 1, 2, 0),
            Err(AssignError::TooFewBrokers { rf: 2, brokers: 1 })
        );
        assert_eq!(assign(&[1], 0, 1, 0, 0), Err(AssignError::BadFactor(0)));
        assert_eq!(assign(&[1], 0, 2, 1, 7).unwrap(), vec![vec![1], vec![1]]);
    }
}
