//! Read-visibility checks (JEPSEN.md §3): `G1a` (an `ok` op read a value whose send
//! definitely failed) and, with transactions on, `precommitted-read` (an op read a value
//! it sent itself, which `read_committed` must hide until the commit).

use serde_json::json;

use super::context::Context;
use super::Anomalies;
use crate::history::{Key, OpType, Value};

/// One anomaly per failed value that `ok` ops read, naming every such reader.
pub(crate) fn aborted_read(cx: &Context, out: &mut Anomalies) {
    for (&k, failed) in &cx.writes_fail {
        for &v in failed.iter().filter(|&&v| cx.read_ok(k, v)) {
            let Some(writer) = cx.writer(k, v) else {
                continue;
            };
            out.add_with("G1a", Some(k), || {
                let readers: Vec<u64> = cx
                    .readers(k, v)
                    .filter(|&r| cx.outcome(r) == OpType::Ok)
                    .map(|r| cx.hindex(r))
                    .collect();
                let ops = std::iter::once(cx.hindex(writer))
                    .chain(readers.iter().copied())
                    .collect();
                let detail = json!({"key": k, "value": v, "writer": cx.hindex(writer), "readers": readers});
                (ops, detail)
            });
        }
    }
}

/// An op polled a value it sent itself.
pub(crate) fn precommitted_read(cx: &Context, out: &mut Anomalies) {
    for (id, pair) in cx.ops.iter().enumerate() {
        let Some(done) = pair.completion.filter(|_| cx.is_queue(id)) else {
            continue;
        };
        let mut sent: Vec<(Key, Value)> = done.sends().map(|(k, v, _)| (k, v)).collect();
        if sent.is_empty() {
            continue;
        }
        sent.sort_unstable();
        for (k, v, _) in done.polled() {
            if sent.binary_search(&(k, v)).is_ok() {
                let h = done.index;
                out.add(
                    "precommitted-read",
                    Some(k),
                    vec![h],
                    || json!({"key": k, "value": v, "op": h}),
                );
            }
        }
    }
}
