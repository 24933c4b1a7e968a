//! The shared structures of JEPSEN.md §3, built once per check in the order the spec
//! gives: `writer_of`, `readers_of` / `reads_ok` / `writes_fail`, `committed`, then the
//! version order of every key. Everything is a `BTreeMap` or `Vec`, so every walk (and so
//! every report) is deterministic.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::Anomalies;
use crate::history::{Key, Offset, OpPair, OpType, Value};

/// Index into [`Context::ops`] (every worker op, in invocation order).
pub(crate) type OpId = usize;

/// The version order of one key (JEPSEN.md §3, shared structure 4).
#[derive(Debug, Default)]
pub(crate) struct Versions {
    /// Offset → the values seen there → the first op that showed it (a witness).
    pub log: BTreeMap<Offset, BTreeMap<Value, OpId>>,
    /// Dense index → offset (offsets with no value are dropped).
    pub offsets: Vec<Offset>,
    /// Dense index → representative value (the smallest at that offset).
    pub by_index: Vec<Value>,
    /// Value → the last dense index where it is the representative.
    pub by_value: BTreeMap<Value, usize>,
}

impl Versions {
    fn finish(&mut self) {
        debug_assert!(self.offsets.is_empty(), "finish runs once");
        for (&offset, values) in &self.log {
            let Some((&rep, _)) = values.first_key_value() else {
                continue;
            };
            self.by_value.insert(rep, self.by_index.len());
            self.offsets.push(offset);
            self.by_index.push(rep);
        }
        assert_eq!(self.offsets.len(), self.by_index.len());
    }

    pub fn index(&self, v: Value) -> Option<usize> {
        self.by_value.get(&v).copied()
    }

    /// Dense-index difference `to - from`; 1 (no verdict) if either has no index.
    pub fn delta(&self, from: Value, to: Value) -> i64 {
        match (self.index(from), self.index(to)) {
            (Some(a), Some(b)) => b as i64 - a as i64,
            _ => 1,
        }
    }

    /// The representatives strictly between `from` and `to` (at most `max`).
    pub fn between(&self, from: Value, to: Value, max: usize) -> Vec<Value> {
        match (self.index(from), self.index(to)) {
            (Some(a), Some(b)) if b > a + 1 => self.by_index[a + 1..b].iter().take(max).copied().collect(),
            _ => Vec::new(),
        }
    }
}

/// Everything the checks share.
pub(crate) struct Context<'a> {
    /// Every worker op (invocation + completion), in invocation order.
    pub ops: Vec<OpPair<'a>>,
    pub writer_of: BTreeMap<Key, BTreeMap<Value, OpId>>,
    /// Every completed op that polled the value (any outcome), in invocation order.
    pub readers_of: BTreeMap<Key, BTreeMap<Value, Vec<OpId>>>,
    pub reads_ok: BTreeMap<Key, BTreeSet<Value>>,
    pub writes_fail: BTreeMap<Key, BTreeSet<Value>>,
    /// By [`OpId`]: `ok`, or `info` with a send that an `ok` op read.
    pub committed: Vec<bool>,
    pub versions: BTreeMap<Key, Versions>,
}

static NO_VERSIONS: Versions = Versions {
    log: BTreeMap::new(),
    offsets: Vec::new(),
    by_index: Vec::new(),
    by_value: BTreeMap::new(),
};

impl<'a> Context<'a> {
    /// Builds the shared structures. Two sends of one `(key, value)` are a generator bug:
    /// each is reported as `generator-bug` and the first sender stays the writer.
    pub fn build(ops: Vec<OpPair<'a>>, out: &mut Anomalies) -> Context<'a> {
        let mut cx = Context {
            ops,
            writer_of: BTreeMap::new(),
            readers_of: BTreeMap::new(),
            reads_ok: BTreeMap::new(),
            writes_fail: BTreeMap::new(),
            committed: Vec::new(),
            versions: BTreeMap::new(),
        };
        cx.index_writers(out);
        cx.index_readers();
        cx.committed = (0..cx.ops.len()).map(|id| cx.is_committed(id)).collect();
        cx.build_versions();
        cx
    }

    pub fn outcome(&self, id: OpId) -> OpType {
        self.ops[id].outcome()
    }

    /// The history index that stands for op `id` in reports (its completion's, if any).
    pub fn hindex(&self, id: OpId) -> u64 {
        self.ops[id].last().index
    }

    pub fn is_queue(&self, id: OpId) -> bool {
        self.ops[id].invoke.is_queue_op()
    }

    pub fn versions(&self, k: Key) -> &Versions {
        self.versions.get(&k).unwrap_or(&NO_VERSIONS)
    }

    pub fn writer(&self, k: Key, v: Value) -> Option<OpId> {
        self.writer_of.get(&k).and_then(|m| m.get(&v)).copied()
    }

    fn queue_ids(&self) -> impl Iterator<Item = OpId> + '_ {
        (0..self.ops.len()).filter(|&id| self.is_queue(id))
    }

    fn index_writers(&mut self, out: &mut Anomalies) {
        for id in self.queue_ids().collect::<Vec<_>>() {
            let op = self.ops[id].last();
            for (k, v, _) in op.sends() {
                let slot = self.writer_of.entry(k).or_default();
                if let Some(&first) = slot.get(&v) {
                    let ops = vec![self.hindex(first), op.index];
                    out.add(
                        "generator-bug",
                        Some(k),
                        ops,
                        || json!({"key": k, "value": v, "msg": "one (key, value) sent twice"}),
                    );
                    continue;
                }
                slot.insert(v, id);
                if self.ops[id].outcome() == OpType::Fail {
                    self.writes_fail.entry(k).or_default().insert(v);
                }
            }
        }
    }

    fn index_readers(&mut self) {
        for id in self.queue_ids().collect::<Vec<_>>() {
            let Some(done) = self.ops[id].completion else {
                continue;
            };
            for (k, v, _) in done.polled() {
                let readers = self.readers_of.entry(k).or_default().entry(v).or_default();
                if readers.last() != Some(&id) {
                    readers.push(id);
                }
                if done.kind == OpType::Ok {
                    self.reads_ok.entry(k).or_default().insert(v);
                }
            }
        }
    }

    fn is_committed(&self, id: OpId) -> bool {
        match self.outcome(id) {
            OpType::Ok => true,
            OpType::Info => self.ops[id]
                .invoke
                .sends()
                .any(|(k, v, _)| self.reads_ok.get(&k).is_some_and(|r| r.contains(&v))),
            OpType::Fail | OpType::Invoke => false,
        }
    }

    /// Polls of every completed op, and known-offset sends of committed ops.
    fn build_versions(&mut self) {
        let mut versions: BTreeMap<Key, Versions> = BTreeMap::new();
        for id in self.queue_ids() {
            let pair = self.ops[id];
            if let Some(done) = pair.completion {
                for (k, v, off) in done.polled() {
                    let at = versions.entry(k).or_default().log.entry(off).or_default();
                    at.entry(v).or_insert(id);
                }
            }
            if self.committed[id] {
                for (k, v, off) in pair.last().sends() {
                    if let Some(off) = off {
                        let at = versions.entry(k).or_default().log.entry(off).or_default();
                        at.entry(v).or_insert(id);
                    }
                }
            }
        }
        for vs in versions.values_mut() {
            vs.finish();
        }
        self.versions = versions;
    }
}
