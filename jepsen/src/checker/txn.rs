//! Read-visibility checks (JEPSEN.md §3): `G1a` (an `ok` op read a value whose send
//! definitely failed) and, with transactions on, `precommitted-read` (an op read a value
//! it sent itself, which `read_committed` must hide until the commit).

use serde_json::json;

use super::context::Context;
use super::Anomalies;
use crate::history::OpType;

pub(crate) fn aborted_read(cx: &Context, out: &mut Anomalies) {
    for (&k, failed) in &cx.writes_fail {
        let Some(readers) = cx.readers_of.get(&k) else {
            continue;
        };
        for &v in failed {
            let Some(writer) = cx.writer(k, v) else {
                continue;
            };
            for &r in readers.get(&v).into_iter().flatten() {
                if cx.outcome(r) != OpType::Ok || r == writer {
                    continue;
                }
                let ops = vec![cx.hindex(writer), cx.hindex(r)];
                out.add(
                    "G1a",
                    Some(k),
                    ops,
                    || json!({"key": k, "value": v, "writer": cx.hindex(writer), "reader": cx.hindex(r)}),
                );
            }
        }
    }
}

pub(crate) fn precommitted_read(cx: &Context, out: &mut Anomalies) {
    for (&k, readers) in &cx.readers_of {
        for (&v, ids) in readers {
            let Some(writer) = cx.writer(k, v) else {
                continue;
            };
            if ids.contains(&writer) {
                let h = cx.hindex(writer);
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
