//! Checks on the version order itself (JEPSEN.md §3): `inconsistent-offsets`,
//! `duplicate`, `lost-write` and `unseen`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::context::{Context, OpId};
use super::{Anomalies, LIST_MAX};
use crate::history::{Key, Offset, OpType, Value};

/// An offset of `log[k]` holds two or more values.
pub(crate) fn inconsistent_offsets(cx: &Context, out: &mut Anomalies) {
    for (&k, vs) in &cx.versions {
        for (i, &offset) in vs.offsets.iter().enumerate() {
            let at = &vs.log[&offset];
            if at.len() < 2 {
                continue;
            }
            let ops = at.values().map(|&id| cx.hindex(id)).collect();
            out.add(
                "inconsistent-offsets",
                Some(k),
                ops,
                || json!({"key": k, "offset": offset, "index": i, "values": at.keys().collect::<Vec<_>>()}),
            );
        }
    }
}

/// A value occurs at more than one offset of `log[k]`.
pub(crate) fn duplicate(cx: &Context, out: &mut Anomalies) {
    for (&k, vs) in &cx.versions {
        let mut at: BTreeMap<Value, Vec<(Offset, usize, OpId)>> = BTreeMap::new();
        for (i, &offset) in vs.offsets.iter().enumerate() {
            for (&v, &id) in &vs.log[&offset] {
                at.entry(v).or_default().push((offset, i, id));
            }
        }
        for (v, places) in at.into_iter().filter(|(_, p)| p.len() > 1) {
            let ops = places.iter().map(|&(_, _, id)| cx.hindex(id)).collect();
            out.add("duplicate", Some(k), ops, || {
                json!({
                    "key": k, "value": v, "count": places.len(),
                    "offsets": places.iter().map(|p| p.0).collect::<Vec<_>>(),
                    "indices": places.iter().map(|p| p.1).collect::<Vec<_>>(),
                })
            });
        }
    }
}

/// A committed write lies at or before the highest first-appearance of any value an `ok`
/// op read, yet no `ok` op read it. Uses the first/last trick: `bound` is the largest
/// *first* index of a read value, and a value must have been read if its *last* index is
/// at or below `bound`, which stays sound with duplicates and inconsistent offsets.
pub(crate) fn lost_write(cx: &Context, out: &mut Anomalies) {
    let empty = BTreeSet::new();
    for (&k, vs) in &cx.versions {
        let read = cx.reads_ok.get(&k).unwrap_or(&empty);
        let mut first_idx: BTreeMap<Value, usize> = BTreeMap::new();
        let mut last_idx: BTreeMap<Value, usize> = BTreeMap::new();
        for (i, offset) in vs.offsets.iter().enumerate() {
            for &v in vs.log[offset].keys() {
                first_idx.entry(v).or_insert(i);
                last_idx.insert(v, i);
            }
        }
        // (bound, the read value that sets it)
        let Some((bound, bound_value)) = read
            .iter()
            .filter_map(|&v| first_idx.get(&v).map(|&i| (i, v)))
            .max()
        else {
            continue;
        };
        for (&v, &i) in last_idx.iter().filter(|&(_, &i)| i <= bound) {
            if read.contains(&v) {
                continue;
            }
            let Some(writer) = cx.writer(k, v).filter(|&w| cx.committed[w]) else {
                continue;
            };
            let reader = cx.readers_of[&k][&bound_value]
                .iter()
                .copied()
                .find(|&r| cx.outcome(r) == OpType::Ok);
            let ops = std::iter::once(writer)
                .chain(reader)
                .map(|id| cx.hindex(id))
                .collect();
            out.add("lost-write", Some(k), ops, || {
                json!({
                    "key": k, "value": v, "index": i, "offset": vs.offsets[i],
                    "bound": bound, "bound_value": bound_value,
                    "writer": cx.hindex(writer), "reader": reader.map(|r| cx.hindex(r)),
                })
            });
        }
    }
}

/// Values sent by `ok` ops that no `ok` op ever read. Only meaningful after a full final
/// drain; one anomaly per key. Returns the total count (for the stats).
pub(crate) fn unseen(cx: &Context, out: &mut Anomalies) -> usize {
    let mut sent: BTreeMap<Key, Vec<(Value, OpId)>> = BTreeMap::new();
    for (id, pair) in cx.ops.iter().enumerate() {
        if cx.is_queue(id) && pair.outcome() == OpType::Ok {
            for (k, v, _) in pair.last().sends() {
                sent.entry(k).or_default().push((v, id));
            }
        }
    }
    let empty = BTreeSet::new();
    let mut total = 0;
    for (k, values) in sent {
        let read = cx.reads_ok.get(&k).unwrap_or(&empty);
        let missing: Vec<(Value, OpId)> = values.into_iter().filter(|(v, _)| !read.contains(v)).collect();
        if missing.is_empty() {
            continue;
        }
        total += missing.len();
        let ops = missing
            .iter()
            .take(LIST_MAX)
            .map(|&(_, id)| cx.hindex(id))
            .collect();
        out.add("unseen", Some(k), ops, || {
            json!({
                "key": k, "count": missing.len(),
                "values": missing.iter().take(LIST_MAX).map(|m| m.0).collect::<Vec<_>>(),
            })
        });
    }
    total
}
