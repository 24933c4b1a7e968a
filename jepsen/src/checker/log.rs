//! Checks on the version order itself (JEPSEN.md §3): `inconsistent-offsets`,
//! `duplicate`, `lost-write` and `unseen`.

use std::collections::BTreeMap;

use serde_json::json;

use super::context::{Context, OpId, Versions};
use super::{Anomalies, LIST_MAX};
use crate::history::{Key, OpType, Value};

/// An offset of `log[k]` holds two or more values.
pub(crate) fn inconsistent_offsets(cx: &Context, out: &mut Anomalies) {
    for (&k, vs) in &cx.versions {
        for (i, &offset) in vs.offsets.iter().enumerate() {
            let at = vs.at(i);
            if at.len() < 2 {
                continue;
            }
            let ops = at.iter().map(|e| cx.hindex(e.2)).collect();
            out.add("inconsistent-offsets", Some(k), ops, || {
                let values: Vec<Value> = at.iter().map(|e| e.1).collect();
                json!({"key": k, "offset": offset, "index": i, "values": values})
            });
        }
    }
}

/// Every `(value, dense index, witness)` of a key's log, sorted: each value's entries
/// are one run, from its first index to its last.
fn placements(vs: &Versions) -> Vec<(Value, usize, OpId)> {
    let mut out: Vec<(Value, usize, OpId)> = (0..vs.offsets.len())
        .flat_map(|i| vs.at(i).iter().map(move |e| (e.1, i, e.2)))
        .collect();
    out.sort_unstable();
    out
}

/// The runs of `placements`: one slice per value.
fn runs(p: &[(Value, usize, OpId)]) -> impl Iterator<Item = &[(Value, usize, OpId)]> {
    p.chunk_by(|a, b| a.0 == b.0)
}

/// A value occurs at more than one offset of `log[k]`.
pub(crate) fn duplicate(cx: &Context, out: &mut Anomalies) {
    for (&k, vs) in &cx.versions {
        for places in runs(&placements(vs)).filter(|r| r.len() > 1) {
            let v = places[0].0;
            let ops = places.iter().map(|p| cx.hindex(p.2)).collect();
            out.add("duplicate", Some(k), ops, || {
                json!({
                    "key": k, "value": v, "count": places.len(),
                    "offsets": places.iter().map(|p| vs.offsets[p.1]).collect::<Vec<_>>(),
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
    for (&k, vs) in &cx.versions {
        let placed = placements(vs);
        // (value, first index, last index)
        let spans: Vec<(Value, usize, usize)> = runs(&placed)
            .map(|r| (r[0].0, r[0].1, r[r.len() - 1].1))
            .collect();
        // (bound, the read value that sets it)
        let Some((bound, bound_value)) = spans
            .iter()
            .filter(|s| cx.read_ok(k, s.0))
            .map(|s| (s.1, s.0))
            .max()
        else {
            continue;
        };
        for &(v, _, i) in spans.iter().filter(|s| s.2 <= bound) {
            if cx.read_ok(k, v) {
                continue;
            }
            let Some(writer) = cx.writer(k, v).filter(|&w| cx.committed[w]) else {
                continue;
            };
            out.add_with("lost-write", Some(k), || {
                let reader = cx.readers(k, bound_value).find(|&r| cx.outcome(r) == OpType::Ok);
                let ops = std::iter::once(writer)
                    .chain(reader)
                    .map(|id| cx.hindex(id))
                    .collect();
                let detail = json!({
                    "key": k, "value": v, "index": i, "offset": vs.offsets[i],
                    "bound": bound, "bound_value": bound_value,
                    "writer": cx.hindex(writer), "reader": reader.map(|r| cx.hindex(r)),
                });
                (ops, detail)
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
    let mut total = 0;
    for (k, values) in sent {
        let missing: Vec<(Value, OpId)> = values.into_iter().filter(|&(v, _)| !cx.read_ok(k, v)).collect();
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
