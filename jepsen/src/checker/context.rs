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
    /// The raw log: every `(offset, value, witness)` observed, sorted, one entry per
    /// `(offset, value)` (the witness is the earliest-invoked op that showed it there).
    pub entries: Vec<(Offset, Value, OpId)>,
    /// Dense index → offset (offsets with no value are never recorded).
    pub offsets: Vec<Offset>,
    /// Dense index → where its values start in `entries` (plus an end sentinel).
    starts: Vec<usize>,
    /// Dense index → representative value (the smallest at that offset).
    pub by_index: Vec<Value>,
    /// Value → the last dense index where it is the representative, sorted by value (a
    /// sorted vector: looked up for every adjacent pair of reads).
    by_value: Vec<(Value, usize)>,
}

impl Versions {
    fn finish(&mut self) {
        debug_assert!(self.offsets.is_empty(), "finish runs once");
        // Stable sort: polls add offset-sorted runs, which it merges cheaply.
        self.entries.sort();
        self.entries.dedup_by_key(|e| (e.0, e.1));
        for (i, &(offset, value, _)) in self.entries.iter().enumerate() {
            if self.offsets.last() != Some(&offset) {
                self.by_value.push((value, self.by_index.len()));
                self.offsets.push(offset);
                self.starts.push(i);
                self.by_index.push(value);
            }
        }
        self.starts.push(self.entries.len());
        // Sorted by (value, index): of a value's indices, keep the last.
        self.by_value.sort_unstable();
        self.by_value.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                earlier.1 = later.1;
            }
            same
        });
        assert_eq!(self.offsets.len(), self.by_index.len());
        assert_eq!(self.starts.len(), self.offsets.len() + 1);
    }

    /// The `(offset, value, witness)` entries at dense index `i`, by value.
    pub fn at(&self, i: usize) -> &[(Offset, Value, OpId)] {
        &self.entries[self.starts[i]..self.starts[i + 1]]
    }

    pub fn index(&self, v: Value) -> Option<usize> {
        self.by_value
            .binary_search_by_key(&v, |e| e.0)
            .ok()
            .map(|i| self.by_value[i].1)
    }

    /// Where a value seen at `offset` sits: the dense index of that offset when the offset
    /// is in the version order (a poll's or an acknowledged send's offset is a fact), else
    /// the value's index. Offsets keep a duplicated value's two copies apart, where the
    /// value alone would name only its last copy and make a consumer that read the first
    /// copy look as if it skipped or went back.
    pub fn pos(&self, v: Value, offset: Option<Offset>) -> Option<usize> {
        offset
            .and_then(|o| self.offsets.binary_search(&o).ok())
            .or_else(|| self.index(v))
    }

    /// [`Self::pos`] difference `to - from`; 1 (no verdict) if either has no index.
    pub fn pos_delta(&self, from: Option<usize>, to: Option<usize>) -> i64 {
        match (from, to) {
            (Some(a), Some(b)) => b as i64 - a as i64,
            _ => 1,
        }
    }

    /// The representatives strictly between dense indices `from` and `to` (at most `max`).
    pub fn between_pos(&self, from: Option<usize>, to: Option<usize>, max: usize) -> Vec<Value> {
        match (from, to) {
            (Some(a), Some(b)) if b > a + 1 => self.by_index[a + 1..b].iter().take(max).copied().collect(),
            _ => Vec::new(),
        }
    }
}

/// Everything the checks share. Reads are kept as sorted vectors rather than nested maps,
/// and `readers_of` is not indexed at all ([`Context::readers`] scans, for the few
/// anomalies that are reported in full): a history holds many re-reads, and this is the
/// simulator's per-seed hot path.
pub(crate) struct Context<'a> {
    /// Every worker op (invocation + completion), in invocation order.
    pub ops: Vec<OpPair<'a>>,
    pub writer_of: BTreeMap<Key, BTreeMap<Value, OpId>>,
    /// Per key, the values `ok` ops read, sorted, without repeats.
    pub reads_ok: BTreeMap<Key, Vec<Value>>,
    pub writes_fail: BTreeMap<Key, BTreeSet<Value>>,
    /// By [`OpId`]: `ok`, or `info` with a send that an `ok` op read.
    pub committed: Vec<bool>,
    pub versions: BTreeMap<Key, Versions>,
}

static NO_VERSIONS: Versions = Versions {
    entries: Vec::new(),
    offsets: Vec::new(),
    starts: Vec::new(),
    by_index: Vec::new(),
    by_value: Vec::new(),
};

impl<'a> Context<'a> {
    /// Builds the shared structures. Two sends of one `(key, value)` are a generator bug:
    /// each is reported as `generator-bug` and the first sender stays the writer.
    pub fn build(ops: Vec<OpPair<'a>>, out: &mut Anomalies) -> Context<'a> {
        let mut cx = Context {
            ops,
            writer_of: BTreeMap::new(),
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

    /// `readers_of[k][v]`: every completed op that polled `v` from `k`, in invocation
    /// order. A scan of the whole history: call it only for anomalies kept in full.
    pub fn readers(&self, k: Key, v: Value) -> impl Iterator<Item = OpId> + '_ {
        (0..self.ops.len()).filter(move |&id| {
            self.is_queue(id)
                && self.ops[id]
                    .completion
                    .is_some_and(|c| c.polled().any(|r| (r.0, r.1) == (k, v)))
        })
    }

    pub fn read_ok(&self, k: Key, v: Value) -> bool {
        self.reads_ok.get(&k).is_some_and(|r| r.binary_search(&v).is_ok())
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
        let mut reads_ok: BTreeMap<Key, Vec<Value>> = BTreeMap::new();
        for id in self.queue_ids() {
            let Some(done) = self.ops[id].completion.filter(|c| c.kind == OpType::Ok) else {
                continue;
            };
            for (k, v, _) in done.polled() {
                reads_ok.entry(k).or_default().push(v);
            }
        }
        for values in reads_ok.values_mut() {
            // Stable sort: reads arrive as sorted runs, which it merges cheaply.
            values.sort();
            values.dedup();
        }
        self.reads_ok = reads_ok;
    }

    fn is_committed(&self, id: OpId) -> bool {
        match self.outcome(id) {
            OpType::Ok => true,
            OpType::Info => self.ops[id].invoke.sends().any(|(k, v, _)| self.read_ok(k, v)),
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
                    versions.entry(k).or_default().entries.push((off, v, id));
                }
            }
            if self.committed[id] {
                for (k, v, off) in pair.last().sends() {
                    if let Some(off) = off {
                        versions.entry(k).or_default().entries.push((off, v, id));
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
