//! The history of one run as the simulated clients observed it: every operation's
//! invocation and completion (ok / fail / info), the records each produce sent and each
//! fetch returned, and the nemesis's fault events. Record values are unique per produce
//! attempt, so a read maps back to exactly one sent record (or to none: a phantom).
//! Ops are appended in invocation order; an op completes at most once.

use bytes::Bytes;
use serde_json::json;

/// A client process (one producer, consumer, admin or final reader).
pub type ProcessId = u32;
/// Index into [`History::ops`].
pub type OpId = usize;
/// Index into [`History::sent`].
pub type RecordId = usize;

/// How every sent value starts: `r<record id>.`, so a read maps back to its record directly.
pub fn value_prefix(id: RecordId) -> String {
    format!("r{id}.")
}

fn parse_value_id(v: &[u8]) -> Option<RecordId> {
    let rest = v.strip_prefix(b"r")?;
    let dot = rest.iter().position(|&b| b == b'.')?;
    std::str::from_utf8(&rest[..dot]).ok()?.parse().ok()
}

/// One record a producer sent.
#[derive(Clone, Debug)]
pub struct SentRecord {
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub partition: i32,
    /// The produce op that carried it.
    pub op: OpId,
    /// Its position inside that op's batch.
    pub index: u32,
}

/// What an operation asked for.
#[derive(Clone, Debug)]
pub enum OpKind {
    CreateTopic,
    Produce {
        partition: i32,
        acks: i16,
        records: Vec<RecordId>,
    },
    Fetch {
        partition: i32,
        offset: i64,
    },
    ListOffsets {
        partition: i32,
        timestamp: i64,
    },
}

/// A record as a fetch returned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadRef {
    /// A record some producer sent (key and value both match).
    Known(RecordId),
    /// Bytes no producer sent, or a sent value under the wrong key.
    Unknown {
        key: Option<Bytes>,
        value: Option<Bytes>,
    },
    /// An offset taken by a control batch (clients skip it; it is not a gap).
    Control,
}

/// What an `ok` completion returned.
#[derive(Clone, Debug)]
pub enum OkValue {
    Unit,
    Produced {
        base_offset: i64,
    },
    Fetched {
        high_watermark: i64,
        records: Vec<(i64, ReadRef)>,
    },
    Offset(i64),
}

/// How an operation ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    Pending,
    Ok(OkValue),
    /// The broker answered with an error code. For produces this is still indeterminate in
    /// general (a storage error after the append may or may not survive), so the checker
    /// treats it like `Info` for durability and never as proof of absence.
    Fail {
        code: i16,
    },
    /// Unknown outcome: timeout, dropped connection, crash, or acks=0.
    Info {
        reason: String,
    },
}

/// One operation.
#[derive(Clone, Debug)]
pub struct Op {
    pub process: ProcessId,
    pub invoke_ms: u64,
    pub complete_ms: Option<u64>,
    pub kind: OpKind,
    pub outcome: Outcome,
    /// Part of the final read (after healing), which the end checks rely on.
    pub final_read: bool,
}

/// The whole history of a run.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub ops: Vec<Op>,
    pub sent: Vec<SentRecord>,
    /// `(time, what)` for every fault the nemesis injected or healed.
    pub nemesis: Vec<(u64, String)>,
}

impl History {
    pub fn invoke(&mut self, process: ProcessId, now_ms: u64, kind: OpKind) -> OpId {
        self.ops.push(Op {
            process,
            invoke_ms: now_ms,
            complete_ms: None,
            kind,
            outcome: Outcome::Pending,
            final_read: false,
        });
        self.ops.len() - 1
    }

    /// The id the next [`History::add_sent`] returns.
    pub fn next_record_id(&self) -> RecordId {
        self.sent.len()
    }

    /// Registers a record about to be sent by `op`. Its value must start with
    /// [`value_prefix`] of its id (which makes values unique and reads cheap to identify).
    pub fn add_sent(
        &mut self,
        op: OpId,
        partition: i32,
        index: u32,
        key: Option<Bytes>,
        value: Bytes,
    ) -> RecordId {
        let id = self.sent.len();
        assert!(
            value.starts_with(value_prefix(id).as_bytes()),
            "generator bug: value without its id"
        );
        self.sent.push(SentRecord {
            key,
            value,
            partition,
            op,
            index,
        });
        id
    }

    /// Attaches the records to a produce op created before them.
    pub fn set_produce_records(&mut self, op: OpId, ids: Vec<RecordId>) {
        if let OpKind::Produce { records, .. } = &mut self.ops[op].kind {
            *records = ids;
        }
    }

    pub fn complete(&mut self, op: OpId, now_ms: u64, outcome: Outcome) {
        let o = &mut self.ops[op];
        assert!(matches!(o.outcome, Outcome::Pending), "op {op} completed twice");
        o.complete_ms = Some(now_ms);
        o.outcome = outcome;
    }

    pub fn is_pending(&self, op: OpId) -> bool {
        matches!(self.ops[op].outcome, Outcome::Pending)
    }

    /// Maps a record read back to the record sent (key and value must both match).
    pub fn identify(&self, key: &Option<Bytes>, value: &Option<Bytes>) -> ReadRef {
        if let Some(v) = value {
            if let Some(id) = parse_value_id(v) {
                if self.sent.get(id).is_some_and(|s| s.value == *v && s.key == *key) {
                    return ReadRef::Known(id);
                }
            }
        }
        ReadRef::Unknown {
            key: key.clone(),
            value: value.clone(),
        }
    }

    pub fn nemesis(&mut self, now_ms: u64, what: String) {
        self.nemesis.push((now_ms, what));
    }

    /// Acknowledged produces: `(op, partition, acks, base_offset)`.
    pub fn acked_produces(&self) -> impl Iterator<Item = (OpId, i32, i16, i64)> + '_ {
        self.ops
            .iter()
            .enumerate()
            .filter_map(|(id, o)| match (&o.kind, &o.outcome) {
                (OpKind::Produce { partition, acks, .. }, Outcome::Ok(OkValue::Produced { base_offset })) => {
                    Some((id, *partition, *acks, *base_offset))
                }
                _ => None,
            })
    }

    /// The history as JSON lines (one event per invocation and per completion, ordered by
    /// time), in the spirit of JEPSEN.md section 2, for reading and for later checkers.
    pub fn to_json_lines(&self) -> String {
        let mut events: Vec<(u64, usize, serde_json::Value)> = Vec::new();
        for (id, o) in self.ops.iter().enumerate() {
            let (f, value) = self.op_json(o);
            events.push((o.invoke_ms, 2 * id, json!({"time_ms": o.invoke_ms, "process": o.process, "op": id, "type": "invoke", "f": f, "value": value})));
            if let Some(t) = o.complete_ms {
                let (ty, extra) = match &o.outcome {
                    Outcome::Ok(v) => ("ok", self.ok_json(v)),
                    Outcome::Fail { code } => ("fail", json!({"error_code": code})),
                    Outcome::Info { reason } => ("info", json!({"reason": reason})),
                    Outcome::Pending => ("pending", json!(null)),
                };
                events.push((t, 2 * id + 1, json!({"time_ms": t, "process": o.process, "op": id, "type": ty, "f": f, "value": extra, "final": o.final_read})));
            }
        }
        for (i, (t, what)) in self.nemesis.iter().enumerate() {
            events.push((
                *t,
                usize::MAX / 2 + i,
                json!({"time_ms": t, "process": -1, "type": "info", "f": "nemesis", "value": what}),
            ));
        }
        events.sort_by_key(|(t, order, _)| (*t, *order));
        let mut out = String::new();
        for (_, _, e) in events {
            out.push_str(&e.to_string());
            out.push('\n');
        }
        out
    }

    fn op_json(&self, o: &Op) -> (&'static str, serde_json::Value) {
        match &o.kind {
            OpKind::CreateTopic => ("create-topic", json!(null)),
            OpKind::Produce {
                partition,
                acks,
                records,
            } => (
                "send",
                json!({"partition": partition, "acks": acks, "values": records.iter().map(|&r| String::from_utf8_lossy(&self.sent[r].value).into_owned()).collect::<Vec<_>>()}),
            ),
            OpKind::Fetch { partition, offset } => {
                ("poll", json!({"partition": partition, "offset": offset}))
            }
            OpKind::ListOffsets { partition, timestamp } => (
                "list-offsets",
                json!({"partition": partition, "timestamp": timestamp}),
            ),
        }
    }

    fn ok_json(&self, v: &OkValue) -> serde_json::Value {
        match v {
            OkValue::Unit => json!(null),
            OkValue::Produced { base_offset } => json!({"base_offset": base_offset}),
            OkValue::Offset(o) => json!({"offset": o}),
            OkValue::Fetched {
                high_watermark,
                records,
            } => json!({
                "high_watermark": high_watermark,
                "records": records.iter().map(|(off, r)| match r {
                    ReadRef::Known(id) => json!([off, String::from_utf8_lossy(&self.sent[*id].value)]),
                    ReadRef::Unknown { value, .. } => json!([off, format!("UNKNOWN:{:?}", value)]),
                    ReadRef::Control => json!([off, "CONTROL"]),
                }).collect::<Vec<_>>(),
            }),
        }
    }
}
