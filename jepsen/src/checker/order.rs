//! Order checks (JEPSEN.md §3): within one op (`int-nonmonotonic-send`, `int-send-skip`,
//! `int-poll-skip`, `int-nonmonotonic-poll`) and across the ops of one process
//! (`nonmonotonic-send`, `poll-skip`, `nonmonotonic-poll`). Every comparison is a
//! dense-index delta from [`Versions::delta`]; an unknown index gives no verdict.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::context::{Context, OpId, Versions};
use super::{Anomalies, LIST_MAX};
use crate::history::{Key, Offset, OpType, Value};

/// One send or read: its value and, where known, its offset (see [`Versions::pos`]).
type Item = (Key, Value, Option<Offset>);

/// An op's sends or reads, grouped by key (sorted), in op order within a key; walk the
/// groups with `chunk_by`. One allocation per op: this runs for every op.
fn per_key(items: impl Iterator<Item = Item>) -> Vec<Item> {
    let mut v: Vec<Item> = items.collect();
    v.sort_by_key(|e| e.0);
    v
}

fn groups(v: &[Item]) -> impl Iterator<Item = (Key, &[Item])> {
    v.chunk_by(|a, b| a.0 == b.0).map(|g| (g[0].0, g))
}

fn sent_by(cx: &Context, id: OpId) -> Vec<Item> {
    per_key(cx.ops[id].last().sends())
}

fn read_by(cx: &Context, id: OpId) -> Vec<Item> {
    match cx.ops[id].completion {
        Some(done) => per_key(done.polled().map(|(k, v, o)| (k, v, Some(o)))),
        None => Vec::new(),
    }
}

/// What an adjacent pair `(from, to)` of one key looks like in the version order.
fn pair_detail(vs: &Versions, k: Key, from: Item, to: Item, delta: i64) -> serde_json::Value {
    let (a, b) = (vs.pos(from.1, from.2), vs.pos(to.1, to.2));
    json!({
        "key": k, "values": [from.1, to.1], "offsets": [from.2, to.2], "indices": [a, b],
        "delta": delta, "skipped": vs.between_pos(a, b, LIST_MAX),
    })
}

/// The dense-index delta from `a` to `b`.
fn delta(vs: &Versions, a: Item, b: Item) -> i64 {
    vs.pos_delta(vs.pos(a.1, a.2), vs.pos(b.1, b.2))
}

/// Successive sends (`sends == true`) or reads of one key inside every op.
pub(crate) fn internal(cx: &Context, out: &mut Anomalies) {
    for id in (0..cx.ops.len()).filter(|&id| cx.is_queue(id)) {
        let h = cx.hindex(id);
        for (k, values) in groups(&sent_by(cx, id)) {
            let vs = cx.versions(k);
            for w in values.windows(2) {
                let (a, b) = (w[0], w[1]);
                let delta = delta(vs, a, b);
                let kind = match delta {
                    d if d < 1 => "int-nonmonotonic-send",
                    d if d > 1 => "int-send-skip",
                    _ => continue,
                };
                out.add(kind, Some(k), vec![h], || pair_detail(vs, k, a, b, delta));
            }
        }
        let exempt: BTreeSet<Key> = cx.ops[id]
            .completion
            .map(|c| c.rebalance.iter().flat_map(|r| r.keys.iter().copied()).collect())
            .unwrap_or_default();
        for (k, values) in groups(&read_by(cx, id)) {
            if exempt.contains(&k) {
                continue;
            }
            let vs = cx.versions(k);
            for w in values.windows(2) {
                let (a, b) = (w[0], w[1]);
                let delta = delta(vs, a, b);
                let kind = match delta {
                    d if d < 1 => "int-nonmonotonic-poll",
                    d if d > 1 => "int-poll-skip",
                    _ => continue,
                };
                out.add(kind, Some(k), vec![h], || pair_detail(vs, k, a, b, delta));
            }
        }
    }
}

/// Per process: the last thing it sent / read per key, with the op.
type Positions = BTreeMap<i64, BTreeMap<Key, (Item, OpId)>>;

/// An `ok`/`info` assign or subscribe keeps only the keys it names.
fn on_assign(cx: &Context, id: OpId, state: &mut Positions) -> bool {
    let pair = &cx.ops[id];
    if !matches!(pair.invoke.f.as_str(), "assign" | "subscribe") {
        return false;
    }
    if matches!(pair.outcome(), OpType::Ok | OpType::Info) {
        let keep: BTreeSet<Key> = pair.invoke.keys().iter().copied().collect();
        if let Some(m) = state.get_mut(&pair.invoke.process) {
            m.retain(|k, _| keep.contains(k));
        }
    }
    true
}

/// Across one process's ops: `nonmonotonic-send` (ok/info ops: the first value this op
/// sends to a key must come after the last value an earlier op sent to it) and
/// `poll-skip` / `nonmonotonic-poll` (every completed op is compared with the last `ok`
/// read, but only `ok` ops move that position, since a consumer rewinds after failure).
pub(crate) fn across_ops(cx: &Context, out: &mut Anomalies) {
    let mut sent: Positions = BTreeMap::new();
    let mut read: Positions = BTreeMap::new();
    for id in 0..cx.ops.len() {
        if on_assign(cx, id, &mut sent) {
            on_assign(cx, id, &mut read);
            continue;
        }
        if !cx.is_queue(id) {
            continue;
        }
        let process = cx.ops[id].invoke.process;
        let outcome = cx.outcome(id);
        if matches!(outcome, OpType::Ok | OpType::Info) {
            let last = sent.entry(process).or_default();
            for (k, values) in groups(&sent_by(cx, id)) {
                compare(
                    cx,
                    id,
                    k,
                    values,
                    last,
                    ["nonmonotonic-send", "nonmonotonic-send"],
                    out,
                );
            }
        }
        let last = read.entry(process).or_default();
        for (k, values) in groups(&read_by(cx, id)) {
            let before = last.get(&k).copied();
            compare(cx, id, k, values, last, ["poll-skip", "nonmonotonic-poll"], out);
            if outcome != OpType::Ok {
                match before {
                    Some(b) => last.insert(k, b),
                    None => last.remove(&k),
                };
            }
        }
    }
}

/// Compares `last[k]` with the first of `values` (`kinds`: [delta > 1, delta < 1]; a
/// `nonmonotonic-send` ignores skips), then sets `last[k]` to the last of `values`.
fn compare(
    cx: &Context,
    id: OpId,
    k: Key,
    values: &[Item],
    last: &mut BTreeMap<Key, (Item, OpId)>,
    kinds: [&'static str; 2],
    out: &mut Anomalies,
) {
    let (Some(&first), Some(&final_item)) = (values.first(), values.last()) else {
        return;
    };
    if let Some(&(prev, prev_op)) = last.get(&k) {
        let vs = cx.versions(k);
        let delta = delta(vs, prev, first);
        let kind = match delta {
            d if d > 1 && kinds[0] != kinds[1] => Some(kinds[0]),
            d if d < 1 => Some(kinds[1]),
            _ => None,
        };
        if let Some(kind) = kind {
            let ops = vec![cx.hindex(prev_op), cx.hindex(id)];
            out.add(kind, Some(k), ops, || pair_detail(vs, k, prev, first, delta));
        }
    }
    last.insert(k, (final_item, id));
}
