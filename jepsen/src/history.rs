//! The history model (JEPSEN.md §2): one [`Op`] per line of a JSON Lines file, invocations
//! and completions in the order the harness observed them. Worker processes (id ≥ 0) run
//! one op at a time and never issue again after an `info`; the nemesis is process -1.
//! [`History::validate`] checks those rules; [`History::pairs`] matches each invocation
//! with its completion. Both the real-cluster harness and the simulator produce this type.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, Write};

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Maps one-to-one to a topic-partition (the harness decides how).
pub type Key = u64;
/// Unique per key.
pub type Value = u64;
pub type Offset = i64;

/// The process id of the nemesis.
pub const NEMESIS: i64 = -1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    /// Took effect.
    Ok,
    /// Definitely did not take effect.
    Fail,
    /// Unknown.
    Info,
}

/// A micro-op. On the wire: `["send", key, value, offset|null]` and
/// `["poll", [[key, value, offset], ...]]`. An invocation's sends carry `offset: None`; a
/// completion's carry the acked offset, or `None` if unknown. A poll's records are in the
/// order the client returned them (empty in an invocation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mop {
    Send {
        key: Key,
        value: Value,
        offset: Option<Offset>,
    },
    Poll(Vec<(Key, Value, Offset)>),
}

impl Serialize for Mop {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Mop::Send { key, value, offset } => {
                let mut seq = s.serialize_seq(Some(4))?;
                seq.serialize_element("send")?;
                seq.serialize_element(key)?;
                seq.serialize_element(value)?;
                seq.serialize_element(offset)?;
                seq.end()
            }
            Mop::Poll(records) => {
                let mut seq = s.serialize_seq(Some(2))?;
                seq.serialize_element("poll")?;
                seq.serialize_element(records)?;
                seq.end()
            }
        }
    }
}

struct MopVisitor;

impl<'de> Visitor<'de> for MopVisitor {
    type Value = Mop;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"a mop: ["send", key, value, offset|null] or ["poll", [[key, value, offset], ...]]"#)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Mop, A::Error> {
        let tag: String = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let mop = match tag.as_str() {
            "send" => {
                let key = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let value = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(2, &self))?;
                let offset = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(3, &self))?;
                Mop::Send { key, value, offset }
            }
            "poll" => Mop::Poll(
                seq.next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?,
            ),
            other => return Err(de::Error::unknown_variant(other, &["send", "poll"])),
        };
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(format!("too many elements in a {tag} mop")));
        }
        Ok(mop)
    }
}

impl<'de> Deserialize<'de> for Mop {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Mop, D::Error> {
        d.deserialize_seq(MopVisitor)
    }
}

/// An op's `value`. JSON cannot tell an empty mop list from an empty key list, so `[]`
/// parses as `Mops([])`; deserializing an [`Op`] turns it back into `Keys([])` for
/// `assign`, `subscribe` and `debug`. `Other` holds nemesis events, debug info and `null`
/// (an array that parses as mops or keys does not survive a round trip as `Other`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OpValue {
    Mops(Vec<Mop>),
    Keys(Vec<Key>),
    Other(serde_json::Value),
}

impl Default for OpValue {
    fn default() -> Self {
        OpValue::Other(serde_json::Value::Null)
    }
}

/// A rebalance event a consumer saw during an op.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebalance {
    /// `"assigned"`, `"revoked"` or `"lost"`.
    pub kind: String,
    pub keys: Vec<Key>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpError {
    pub kind: String,
    pub msg: String,
}

/// One line of the history. Deserializing checks that `send`/`poll`/`txn` hold mops (an
/// untagged [`OpValue`] would otherwise take a malformed mop list as `Other`) and turns an
/// empty `assign`/`subscribe`/`debug` value into `Keys([])`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawOp")]
pub struct Op {
    /// Dense, increasing.
    pub index: u64,
    /// Nanoseconds since the test started (monotonic clock).
    pub time: u64,
    /// ≥ 0 for workers, [`NEMESIS`] for the nemesis.
    pub process: i64,
    #[serde(rename = "type")]
    pub kind: OpType,
    /// Workers: `send` `poll` `txn` `assign` `subscribe` `crash` `debug`; nemesis: `kill`
    /// `start` `pause` `resume` `partition` `heal` ...
    pub f: String,
    #[serde(default)]
    pub value: OpValue,
    /// `assign` / `subscribe` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seek_to_beginning: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rebalance: Vec<Rebalance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<OpError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_ms: Option<u64>,
}

/// [`Op`] as parsed, before [`Op::try_from`] checks its value.
#[derive(Deserialize)]
struct RawOp {
    index: u64,
    time: u64,
    process: i64,
    #[serde(rename = "type")]
    kind: OpType,
    f: String,
    #[serde(default)]
    value: OpValue,
    #[serde(default)]
    seek_to_beginning: Option<bool>,
    #[serde(default)]
    rebalance: Vec<Rebalance>,
    #[serde(default)]
    error: Option<OpError>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    poll_ms: Option<u64>,
}

impl TryFrom<RawOp> for Op {
    type Error = String;

    fn try_from(r: RawOp) -> Result<Op, String> {
        let mut value = r.value;
        let worker = r.process >= 0;
        match r.f.as_str() {
            "send" | "poll" | "txn" if worker && !matches!(value, OpValue::Mops(_)) => {
                let json = serde_json::to_value(&value).map_err(|e| e.to_string())?;
                // Names the broken mop; a list of keys parses as mops only if it is empty.
                serde_json::from_value::<Vec<Mop>>(json)
                    .map_err(|e| format!("value of a {} op: {e}", r.f))?;
                return Err(format!("value of a {} op must be a list of mops", r.f));
            }
            "assign" | "subscribe" | "debug" if matches!(&value, OpValue::Mops(m) if m.is_empty()) => {
                value = OpValue::Keys(Vec::new());
            }
            _ => {}
        }
        Ok(Op {
            index: r.index,
            time: r.time,
            process: r.process,
            kind: r.kind,
            f: r.f,
            value,
            seek_to_beginning: r.seek_to_beginning,
            rebalance: r.rebalance,
            error: r.error,
            node: r.node,
            poll_ms: r.poll_ms,
        })
    }
}

impl Op {
    /// A bare op (no optional fields); set the rest with struct update syntax.
    pub fn new(index: u64, time: u64, process: i64, kind: OpType, f: &str, value: OpValue) -> Op {
        Op {
            index,
            time,
            process,
            kind,
            f: f.to_string(),
            value,
            seek_to_beginning: None,
            rebalance: Vec::new(),
            error: None,
            node: None,
            poll_ms: None,
        }
    }

    /// One JSON line, without the newline.
    pub fn line(&self) -> String {
        // Serializing this type cannot fail: every map key is a string and no value is a
        // non-finite float (serde_json::Value holds only finite numbers).
        serde_json::to_string(self).expect("an Op always serializes")
    }

    /// The mops, or an empty slice if the value holds none.
    pub fn mops(&self) -> &[Mop] {
        match &self.value {
            OpValue::Mops(m) => m,
            _ => &[],
        }
    }

    /// The key list of an `assign` / `subscribe` / `debug`, or an empty slice.
    pub fn keys(&self) -> &[Key] {
        match &self.value {
            OpValue::Keys(k) => k,
            _ => &[],
        }
    }

    /// `(key, value)` of every send, in order.
    pub fn sends(&self) -> impl Iterator<Item = (Key, Value, Option<Offset>)> + '_ {
        self.mops().iter().filter_map(|m| match m {
            Mop::Send { key, value, offset } => Some((*key, *value, *offset)),
            Mop::Poll(_) => None,
        })
    }

    /// Every record polled, in order.
    pub fn polled(&self) -> impl Iterator<Item = (Key, Value, Offset)> + '_ {
        self.mops()
            .iter()
            .flat_map(|m| match m {
                Mop::Poll(r) => r.as_slice(),
                Mop::Send { .. } => &[],
            })
            .copied()
    }

    pub fn is_worker(&self) -> bool {
        self.process >= 0
    }

    /// Whether `f` names an op the queue checker reads (`send`, `poll`, `txn`).
    pub fn is_queue_op(&self) -> bool {
        matches!(self.f.as_str(), "send" | "poll" | "txn")
    }
}

/// A problem found while reading or validating a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryError {
    /// 1-based line of the JSONL input, when reading.
    pub line: Option<usize>,
    /// The op's `index`, when validating.
    pub index: Option<u64>,
    pub msg: String,
}

impl HistoryError {
    fn at_op(index: u64, msg: String) -> HistoryError {
        HistoryError {
            line: None,
            index: Some(index),
            msg,
        }
    }
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.index) {
            (Some(l), _) => write!(f, "history line {l}: {}", self.msg),
            (None, Some(i)) => write!(f, "history op {i}: {}", self.msg),
            (None, None) => write!(f, "history: {}", self.msg),
        }
    }
}

impl std::error::Error for HistoryError {}

/// An invocation and its completion (`None`: the history ended first, which the checker
/// treats as `info`).
#[derive(Clone, Copy, Debug)]
pub struct OpPair<'a> {
    pub invoke: &'a Op,
    pub completion: Option<&'a Op>,
}

impl<'a> OpPair<'a> {
    /// The completion's type; `Info` if there is none.
    pub fn outcome(&self) -> OpType {
        self.completion.map_or(OpType::Info, |c| c.kind)
    }

    /// The completion if there is one, else the invocation (whose sends have no offsets).
    pub fn last(&self) -> &'a Op {
        self.completion.unwrap_or(self.invoke)
    }
}

/// A whole history.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub ops: Vec<Op>,
}

impl History {
    /// Parses JSON Lines (blank lines are skipped). Does not [`validate`](Self::validate).
    pub fn read_jsonl(r: impl BufRead) -> Result<History, HistoryError> {
        let mut ops = Vec::new();
        for (i, line) in r.lines().enumerate() {
            let err = |msg: String| HistoryError {
                line: Some(i + 1),
                index: None,
                msg,
            };
            let line = line.map_err(|e| err(format!("read error: {e}")))?;
            if line.trim().is_empty() {
                continue;
            }
            ops.push(serde_json::from_str(&line).map_err(|e| err(e.to_string()))?);
        }
        Ok(History { ops })
    }

    pub fn write_jsonl(&self, mut w: impl Write) -> std::io::Result<()> {
        for op in &self.ops {
            w.write_all(op.line().as_bytes())?;
            w.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Checks the rules of JEPSEN.md §2: indices strictly increase; a worker has at most
    /// one op in flight and issues nothing after an `info`; each completion follows an
    /// invocation of its process with the same `f` and the same sends `(key, value)` in the
    /// same order; invocations' sends carry no offset. Nemesis events are not paired.
    pub fn validate(&self) -> Result<(), HistoryError> {
        let mut in_flight: BTreeMap<i64, &Op> = BTreeMap::new();
        let mut retired: BTreeMap<i64, u64> = BTreeMap::new();
        let mut prev: Option<u64> = None;
        for op in &self.ops {
            let bad = |msg: String| Err(HistoryError::at_op(op.index, msg));
            if prev.is_some_and(|p| op.index <= p) {
                return bad(format!(
                    "index does not increase (previous {})",
                    prev.unwrap_or(0)
                ));
            }
            prev = Some(op.index);
            if op.process < NEMESIS {
                return bad(format!("process {} (workers are ≥ 0, nemesis -1)", op.process));
            }
            if !op.is_worker() {
                continue;
            }
            if op.kind == OpType::Invoke {
                if let Some(at) = retired.get(&op.process) {
                    return bad(format!(
                        "process {} invokes after its info at op {at}",
                        op.process
                    ));
                }
                if let Some(inv) = in_flight.get(&op.process) {
                    return bad(format!(
                        "process {} invokes while op {} is in flight",
                        op.process, inv.index
                    ));
                }
                if op.sends().any(|(_, _, off)| off.is_some()) {
                    return bad("an invocation's send carries an offset".to_string());
                }
                in_flight.insert(op.process, op);
                continue;
            }
            let Some(inv) = in_flight.remove(&op.process) else {
                return bad(format!(
                    "{:?} completion of process {} with no invocation in flight",
                    op.kind, op.process
                ));
            };
            if inv.f != op.f {
                return bad(format!(
                    "completion f {:?} does not match invocation {} f {:?}",
                    op.f, inv.index, inv.f
                ));
            }
            let sent = |o: &Op| o.sends().map(|(k, v, _)| (k, v)).collect::<Vec<_>>();
            if sent(inv) != sent(op) {
                return bad(format!(
                    "completion's sends {:?} differ from invocation {}'s {:?}",
                    sent(op),
                    inv.index,
                    sent(inv)
                ));
            }
            if op.kind == OpType::Info {
                retired.insert(op.process, op.index);
            }
        }
        Ok(())
    }

    /// Worker ops as (invocation, completion) in invocation order. A completion is paired
    /// with the invocation in flight for its process; completions with none are dropped
    /// (run [`validate`](Self::validate) to reject them). Nemesis events are left out.
    pub fn pairs(&self) -> Vec<OpPair<'_>> {
        let mut out: Vec<OpPair<'_>> = Vec::new();
        let mut in_flight: BTreeMap<i64, usize> = BTreeMap::new();
        for op in self.ops.iter().filter(|o| o.is_worker()) {
            if op.kind == OpType::Invoke {
                in_flight.insert(op.process, out.len());
                out.push(OpPair {
                    invoke: op,
                    completion: None,
                });
            } else if let Some(i) = in_flight.remove(&op.process) {
                out[i].completion = Some(op);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXAMPLES: &str = r#"{"index":0,"time":1200345,"process":3,"type":"invoke","f":"txn","value":[["send",7,42,null],["poll",[]]]}
{"index":5,"time":9800123,"process":3,"type":"ok","f":"txn","value":[["send",7,42,118],["poll",[[7,40,115],[7,41,116],[9,3,20]]]],"rebalance":[{"kind":"revoked","keys":[9]}]}
{"index":6,"time":9900000,"process":4,"type":"ok","f":"assign","value":[7,9],"seek_to_beginning":true}
{"index":7,"time":9900100,"process":-1,"type":"info","f":"kill","value":{"nodes":["n2"]}}
"#;

    fn roundtrip(op: &Op) {
        let line = op.line();
        assert!(!line.contains('\n'));
        let back: Op = serde_json::from_str(&line).unwrap();
        assert_eq!(&back, op, "{line}");
        let h = History {
            ops: vec![op.clone()],
        };
        let mut buf = Vec::new();
        h.write_jsonl(&mut buf).unwrap();
        assert_eq!(History::read_jsonl(buf.as_slice()).unwrap(), h);
    }

    #[test]
    fn the_examples_of_section_2_parse_and_write_back_byte_for_byte() {
        let h = History::read_jsonl(EXAMPLES.as_bytes()).unwrap();
        assert_eq!(h.ops.len(), 4);
        assert_eq!(
            h.ops[1].mops(),
            &[
                Mop::Send {
                    key: 7,
                    value: 42,
                    offset: Some(118)
                },
                Mop::Poll(vec![(7, 40, 115), (7, 41, 116), (9, 3, 20)]),
            ]
        );
        assert_eq!(h.ops[1].rebalance[0].keys, vec![9]);
        assert_eq!(h.ops[2].value, OpValue::Keys(vec![7, 9]));
        assert_eq!(h.ops[2].seek_to_beginning, Some(true));
        assert_eq!(h.ops[3].value, OpValue::Other(json!({"nodes": ["n2"]})));
        assert_eq!(h.ops[3].process, NEMESIS);
        let mut out = Vec::new();
        h.write_jsonl(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), EXAMPLES);
    }

    #[test]
    fn every_shape_round_trips() {
        let send = |offset| {
            OpValue::Mops(vec![Mop::Send {
                key: 1,
                value: 2,
                offset,
            }])
        };
        roundtrip(&Op::new(0, 1, 0, OpType::Invoke, "send", send(None)));
        roundtrip(&Op::new(1, 2, 0, OpType::Ok, "send", send(Some(-1))));
        roundtrip(&Op::new(1, 2, 0, OpType::Info, "send", send(None)));
        roundtrip(&Op::new(
            2,
            3,
            5,
            OpType::Fail,
            "poll",
            OpValue::Mops(vec![Mop::Poll(vec![])]),
        ));
        roundtrip(&Op::new(2, 3, 5, OpType::Ok, "poll", OpValue::Mops(vec![])));
        roundtrip(&Op::new(3, 4, 1, OpType::Ok, "assign", OpValue::Keys(vec![])));
        roundtrip(&Op::new(
            3,
            4,
            1,
            OpType::Ok,
            "subscribe",
            OpValue::Keys(vec![u64::MAX]),
        ));
        roundtrip(&Op::new(
            4,
            5,
            1,
            OpType::Info,
            "crash",
            OpValue::Other(json!(null)),
        ));
        roundtrip(&Op::new(
            5,
            6,
            -1,
            OpType::Invoke,
            "partition",
            OpValue::Other(json!({"groups": [["n1"], ["n2", "n3"]]})),
        ));
        roundtrip(&Op {
            seek_to_beginning: Some(false),
            rebalance: vec![Rebalance {
                kind: "lost".into(),
                keys: vec![3, 4],
            }],
            error: Some(OpError {
                kind: "timeout".into(),
                msg: "request timed out".into(),
            }),
            node: Some("n3".into()),
            poll_ms: Some(100),
            ..Op::new(6, 7, 2, OpType::Info, "txn", send(Some(9)))
        });
    }

    #[test]
    fn a_missing_value_is_null_and_optional_fields_are_omitted() {
        let op: Op =
            serde_json::from_str(r#"{"index":1,"time":2,"process":-1,"type":"info","f":"heal"}"#).unwrap();
        assert_eq!(op.value, OpValue::Other(json!(null)));
        assert_eq!(
            op.line(),
            r#"{"index":1,"time":2,"process":-1,"type":"info","f":"heal","value":null}"#
        );
    }

    #[test]
    fn read_errors_name_the_line() {
        let text = format!(
            "{}\n\n{}",
            EXAMPLES.lines().next().unwrap(),
            r#"{"index":1,"time":2,"process":0,"type":"ok","f":"send","value":[["send",1]]}"#
        );
        let e = History::read_jsonl(text.as_bytes()).unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.to_string().starts_with("history line 3:"), "{e}");
        let e = History::read_jsonl(r#"[1]"#.as_bytes()).unwrap_err();
        assert_eq!(e.line, Some(1));
        let e = History::read_jsonl(
            r#"{"index":0,"time":0,"process":0,"type":"done","f":"send","value":null}"#.as_bytes(),
        )
        .unwrap_err();
        assert!(e.msg.contains("done"), "{e}");
        let e = History::read_jsonl(
            r#"{"index":0,"time":0,"process":0,"type":"ok","f":"poll","value":[1,2]}"#.as_bytes(),
        )
        .unwrap_err();
        assert!(e.msg.contains("value of a poll op"), "{e}");
    }

    fn op(index: u64, process: i64, kind: OpType, f: &str, sends: &[(Key, Value)]) -> Op {
        let mops = sends
            .iter()
            .map(|&(key, value)| Mop::Send {
                key,
                value,
                offset: None,
            })
            .collect();
        Op::new(index, index, process, kind, f, OpValue::Mops(mops))
    }

    fn validate(ops: Vec<Op>) -> Result<(), HistoryError> {
        History { ops }.validate()
    }

    #[test]
    fn validate_accepts_interleaved_processes_and_the_nemesis() {
        use OpType::*;
        let nem = Op::new(2, 2, -1, Info, "kill", OpValue::default());
        let h = History {
            ops: vec![
                op(0, 0, Invoke, "send", &[(1, 1)]),
                op(1, 1, Invoke, "poll", &[]),
                nem,
                op(3, 0, Info, "send", &[(1, 1)]),
                op(4, 1, Ok, "poll", &[]),
                op(5, 2, Invoke, "send", &[(1, 2), (1, 3)]),
            ],
        };
        h.validate().unwrap();
        let pairs = h.pairs();
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[0].completion.map(|c| c.index), Some(3));
        assert_eq!(pairs[1].completion.map(|c| c.index), Some(4));
        assert!(pairs[2].completion.is_none());
        assert_eq!(pairs[2].outcome(), Info);
        assert_eq!(pairs[2].last().index, 5);
    }

    #[test]
    fn validate_rejects_each_broken_rule() {
        use OpType::*;
        let cases: Vec<(Vec<Op>, &str)> = vec![
            (
                vec![op(1, 0, Invoke, "poll", &[]), op(1, 0, Ok, "poll", &[])],
                "index",
            ),
            (
                vec![op(0, 0, Invoke, "poll", &[]), op(1, 0, Invoke, "poll", &[])],
                "in flight",
            ),
            (vec![op(0, 0, Ok, "poll", &[])], "no invocation"),
            (
                vec![op(0, 0, Invoke, "poll", &[]), op(1, 0, Ok, "send", &[])],
                "does not match",
            ),
            (
                vec![
                    op(0, 0, Invoke, "send", &[(1, 1), (1, 2)]),
                    op(1, 0, Ok, "send", &[(1, 2), (1, 1)]),
                ],
                "differ",
            ),
            (
                vec![op(0, 0, Invoke, "send", &[(1, 1)]), op(1, 0, Fail, "send", &[])],
                "differ",
            ),
            (
                vec![
                    op(0, 0, Invoke, "poll", &[]),
                    op(1, 0, Info, "poll", &[]),
                    op(2, 0, Invoke, "poll", &[]),
                ],
                "after its info",
            ),
            (vec![op(0, -2, Invoke, "poll", &[])], "process -2"),
        ];
        for (ops, needle) in cases {
            let e = validate(ops).unwrap_err();
            assert!(e.to_string().contains(needle), "{e} should mention {needle}");
        }
        let mut with_offset = op(0, 0, Invoke, "send", &[(1, 1)]);
        with_offset.value = OpValue::Mops(vec![Mop::Send {
            key: 1,
            value: 1,
            offset: Some(0),
        }]);
        assert!(validate(vec![with_offset]).unwrap_err().msg.contains("offset"));
    }
}
