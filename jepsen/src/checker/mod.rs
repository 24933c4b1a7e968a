//! The queue checker (JEPSEN.md §3, §4, §6): turns a [`History`] into a [`Verdict`]. It
//! builds the shared structures once ([`context`]), runs each anomaly check over them, and
//! judges every anomaly kind seen against one table ([`allowed`]). Deterministic: the same
//! history gives the same verdict, byte for byte.
//!
//! Kinds beyond JEPSEN.md: `generator-bug` (one `(key, value)` sent twice; the harness,
//! not the broker, is wrong) and `malformed-history` (`History::validate` failed; nothing
//! else is checked). Both fail the run. `realtime-lag` is not computed; the transactional
//! cycle classes (G0, G1c, G-single, G2-item) have their place in [`cycles`].

mod context;
pub mod cycles;
mod log;
mod order;
mod txn;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::history::{History, Key, OpType};
use context::Context;

/// At most this many anomalies are kept per kind (the counts are exact), and at most this
/// many values in one anomaly's lists.
pub const LIST_MAX: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOptions {
    /// `subscribe` was used: consumers may lose or regain partitions at any time, so
    /// `poll-skip` and `nonmonotonic-poll` are allowed.
    pub subscribe_allowed: bool,
    /// ww edges are inferred from offset order (Jepsen's `--ww-deps`, on by default), which
    /// makes G1c an expected consequence of unisolated writes.
    pub ww_deps: bool,
    /// Every send/poll/txn op is a transaction (enables `precommitted-read` and cycles).
    pub transactions: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            subscribe_allowed: false,
            ww_deps: true,
            transactions: false,
        }
    }
}

/// Whether an anomaly kind is allowed under `opts` (JEPSEN.md §3 verdict table; the only
/// place that decides). Kinds not named here fail the run.
pub fn allowed(kind: &str, opts: &CheckOptions) -> bool {
    match kind {
        // Other producers' records land between a transaction's sends: Kafka does not
        // isolate writes.
        "int-send-skip" => true,
        // Across a rebalance the consumer resumes from the group's committed offset.
        "poll-skip" | "nonmonotonic-poll" => opts.subscribe_allowed,
        // Write cycles follow from unisolated writes.
        k if k == "G0" || k.starts_with("G0-") => true,
        // With ww edges, t1 -ww-> t2 -wr-> t1 follows from the same; wr-only is real.
        k if k == "G1c" || k.starts_with("G1c-") => opts.ww_deps,
        // Extension: Kafka promises no atomic visibility across partitions.
        k if k.starts_with("G-single") || k.starts_with("G2-item") => true,
        _ => false,
    }
}

/// One anomaly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    pub kind: String,
    pub key: Option<Key>,
    /// What JEPSEN.md §3 says to report for this kind (values, offsets, dense indices,
    /// bound, delta, ...).
    pub detail: serde_json::Value,
    /// History indices of the ops that show it (completions where there are some).
    pub ops: Vec<u64>,
}

/// ok / fail / info counts for one `f` (`info` includes ops the history never completed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcomes {
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Lines in the history.
    pub events: usize,
    /// Worker invocations.
    pub ops: usize,
    pub nemesis_events: usize,
    pub by_f: BTreeMap<String, Outcomes>,
    /// Send mops of `ok` / `info` / `fail` ops.
    pub sends_acked: usize,
    pub sends_info: usize,
    pub sends_failed: usize,
    /// Distinct (key, value) pairs read by `ok` ops.
    pub values_read: usize,
    /// Keys sent to or read from.
    pub keys: usize,
    /// Values sent by `ok` ops that no `ok` op read, at the end.
    pub unseen: usize,
    /// `f`s other than crash/debug that never completed `ok` (Jepsen's stats checker
    /// fails on these; here they are informational).
    pub never_ok: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub valid: bool,
    /// Every anomaly kind seen, sorted.
    pub error_types: Vec<String>,
    /// The kinds [`allowed`] rejects; the run is valid iff this is empty.
    pub bad_error_types: Vec<String>,
    /// At most [`LIST_MAX`] per kind.
    pub anomalies: BTreeMap<String, Vec<Anomaly>>,
    pub anomaly_counts: BTreeMap<String, usize>,
    pub stats: Stats,
}

/// Collects anomalies, keeping at most [`LIST_MAX`] per kind and counting all.
#[derive(Default)]
pub(crate) struct Anomalies {
    kept: BTreeMap<String, Vec<Anomaly>>,
    counts: BTreeMap<String, usize>,
}

impl Anomalies {
    /// Records one anomaly; `detail` is only built if it is kept.
    pub fn add(
        &mut self,
        kind: &str,
        key: Option<Key>,
        ops: Vec<u64>,
        detail: impl FnOnce() -> serde_json::Value,
    ) {
        self.add_with(kind, key, || (ops, detail()));
    }

    /// Records one anomaly whose ops and detail are only worked out if it is kept.
    pub fn add_with(
        &mut self,
        kind: &str,
        key: Option<Key>,
        build: impl FnOnce() -> (Vec<u64>, serde_json::Value),
    ) {
        let count = self.counts.entry(kind.to_string()).or_insert(0);
        *count += 1;
        let kept = self.kept.entry(kind.to_string()).or_default();
        if kept.len() < LIST_MAX {
            let (ops, detail) = build();
            kept.push(Anomaly {
                kind: kind.to_string(),
                key,
                detail,
                ops,
            });
        }
        debug_assert!(kept.len() <= *count);
    }
}

/// Checks a history. A history that fails [`History::validate`] gets the single anomaly
/// `malformed-history`; the rest is then not checked.
pub fn check(history: &History, opts: &CheckOptions) -> Verdict {
    let mut out = Anomalies::default();
    let mut stats = Stats {
        events: history.ops.len(),
        nemesis_events: history.ops.iter().filter(|o| !o.is_worker()).count(),
        ..Stats::default()
    };
    if let Err(e) = history.validate() {
        out.add(
            "malformed-history",
            None,
            e.index.into_iter().collect(),
            || json!({"error": e.to_string()}),
        );
        return verdict(out, stats, opts);
    }
    let cx = Context::build(history.pairs(), &mut out);
    fill_stats(&cx, &mut stats);
    let completed_queue_ops = (0..cx.ops.len()).any(|id| cx.is_queue(id) && cx.ops[id].completion.is_some());
    if !completed_queue_ops {
        out.add(
            "empty-transaction-graph",
            None,
            Vec::new(),
            || json!({"msg": "no completed send, poll or txn op: nothing to check"}),
        );
    }
    log::inconsistent_offsets(&cx, &mut out);
    log::duplicate(&cx, &mut out);
    log::lost_write(&cx, &mut out);
    stats.unseen = log::unseen(&cx, &mut out);
    order::internal(&cx, &mut out);
    order::across_ops(&cx, &mut out);
    txn::aborted_read(&cx, &mut out);
    if opts.transactions {
        txn::precommitted_read(&cx, &mut out);
        cycles::check(&cx, opts, &mut out);
    }
    verdict(out, stats, opts)
}

fn verdict(out: Anomalies, stats: Stats, opts: &CheckOptions) -> Verdict {
    let error_types: Vec<String> = out.counts.keys().cloned().collect();
    let bad_error_types: Vec<String> = error_types
        .iter()
        .filter(|k| !allowed(k, opts))
        .cloned()
        .collect();
    Verdict {
        valid: bad_error_types.is_empty(),
        error_types,
        bad_error_types,
        anomalies: out.kept,
        anomaly_counts: out.counts,
        stats,
    }
}

fn fill_stats(cx: &Context, stats: &mut Stats) {
    stats.ops = cx.ops.len();
    for pair in &cx.ops {
        let o = stats.by_f.entry(pair.invoke.f.clone()).or_default();
        let sends = pair.invoke.sends().count();
        match pair.outcome() {
            OpType::Ok => {
                o.ok += 1;
                stats.sends_acked += sends;
            }
            OpType::Fail => {
                o.fail += 1;
                stats.sends_failed += sends;
            }
            OpType::Info | OpType::Invoke => {
                o.info += 1;
                stats.sends_info += sends;
            }
        }
    }
    stats.values_read = cx.reads_ok.values().map(|s| s.len()).sum();
    let mut keys: Vec<Key> = cx.writer_of.keys().chain(cx.versions.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    stats.keys = keys.len();
    stats.never_ok = stats
        .by_f
        .iter()
        .filter(|(f, o)| o.ok == 0 && !matches!(f.as_str(), "crash" | "debug"))
        .map(|(f, _)| f.clone())
        .collect();
}

/// `12345` → `12,345`.
fn thousands(n: usize) -> String {
    let digits: Vec<char> = n.to_string().chars().collect();
    let groups: Vec<String> = digits.rchunks(3).rev().map(|g| g.iter().collect()).collect();
    groups.join(",")
}

/// `kind ×count, ...`, most frequent first.
fn counted(v: &Verdict, kinds: &[String]) -> String {
    let mut list: Vec<(usize, &String)> = kinds
        .iter()
        .map(|k| (v.anomaly_counts.get(k).copied().unwrap_or(0), k))
        .collect();
    list.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let parts: Vec<String> = list
        .iter()
        .map(|(n, k)| format!("{k} ×{}", thousands(*n)))
        .collect();
    parts.join(", ")
}

/// One line for a terminal: `valid: 12,345 ops (6,001 sends acked, 5,998 values read), no
/// anomalies`, `valid: ... ; allowed: int-send-skip ×4`, or `INVALID: lost-write ×3,
/// duplicate ×1`.
pub fn summary_line(v: &Verdict) -> String {
    let s = &v.stats;
    let size = format!(
        "{} ops ({} sends acked, {} values read)",
        thousands(s.ops),
        thousands(s.sends_acked),
        thousands(s.values_read)
    );
    if !v.valid {
        return format!("INVALID: {} in {size}", counted(v, &v.bad_error_types));
    }
    if v.error_types.is_empty() {
        format!("valid: {size}, no anomalies")
    } else {
        format!("valid: {size}; allowed: {}", counted(v, &v.error_types))
    }
}

#[cfg(test)]
mod tests;
