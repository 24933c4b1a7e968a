//! Judges a run with the Jepsen-style queue checker (`gregor_jepsen::checker`), next to the
//! simulator's own end checks: converts the sim [`History`] into a
//! `gregor_jepsen::history::History` and turns every anomaly kind that fails the check into
//! a [`Violation`] named `jepsen-<kind>`.
//!
//! The mapping, and what it relies on:
//! - key = partition (one topic), value = record id (unique per run), time = sim ms × 10⁶.
//! - A Produce is one `send` op with a send mop per record, which is sound for `committed`
//!   because a batch is appended whole or not at all. Its completion is `ok` only where the
//!   ack promises durability (acks=all; acks=1 on a single broker); an acks=1 ack on a
//!   replicated cluster may be truncated away, so it is `info` (keeping its offsets, which
//!   count once some read proves the batch committed). acks=0 and unanswered produces are
//!   `info`; a produce error is `fail` only for the codes after which nothing was appended
//!   ([`DEFINITE_PRODUCE_ERRORS`]), else `info`.
//! - A Fetch is one `poll` op with one poll mop. A fetch that fails or is lost read nothing.
//!   Records below the asked offset (Kafka returns the whole first batch) are dropped, as
//!   a Kafka consumer drops them; records nobody sent and control batches are left out.
//! - Processes: a sim client runs one op at a time, so its ops form one Jepsen process
//!   until one ends `info` (or overlaps, which it should not); then it continues as a new
//!   process, as a Jepsen worker would after rebuilding its clients.
//! - Fetchers are not all consumers: plain consumers seek at random, group consumers take
//!   positions from committed offsets, and OFFSET_OUT_OF_RANGE resets to 0. So a fetch is
//!   a consumer's next poll on its partition only if it asks for the offset where the
//!   previous `ok` fetch of that process left off (`max(asked, last offset read + 1)`, the
//!   client's own rule). Any other fetch offset is a seek: the conversion inserts an `ok`
//!   `assign` of every other partition just before it, which drops the partition's
//!   position in the checker (JEPSEN.md §3). `poll-skip` / `nonmonotonic-poll` are thus
//!   judged strictly (assign mode) but only across fetches that really continue a read.
//! - `empty-transaction-graph` is not reported: a run that did nothing is the liveness
//!   checks' business.

use std::collections::BTreeMap;

use gregor_jepsen::checker::{check, CheckOptions, Verdict};
use gregor_jepsen::history::{self as jh, Mop, OpType, OpValue};

use crate::check::{CheckParams, Violation, DEFINITE_PRODUCE_ERRORS};
use crate::history::{History, OkValue, OpId, OpKind, Outcome, ProcessId, ReadRef};

const NS_PER_MS: u64 = 1_000_000;

/// Where one sim client stands as a Jepsen process.
#[derive(Default)]
struct ClientState {
    process: i64,
    in_flight: bool,
    retired: bool,
    /// Per partition: where the last `ok` fetch of this process left off.
    next_offset: BTreeMap<i32, i64>,
}

struct Converter<'a> {
    h: &'a History,
    params: &'a CheckParams,
    out: Vec<jh::Op>,
    clients: BTreeMap<ProcessId, ClientState>,
    /// The Jepsen process of each sim op (set at its invocation).
    process_of: BTreeMap<OpId, i64>,
    next_process: i64,
}

/// The sim history as a Jepsen history (Produce and Fetch ops only).
pub fn to_jepsen(h: &History, params: &CheckParams) -> jh::History {
    let mut events: Vec<(u64, usize, OpId, bool)> = Vec::new();
    for (id, op) in h.ops.iter().enumerate() {
        if !matches!(op.kind, OpKind::Produce { .. } | OpKind::Fetch { .. }) {
            continue;
        }
        events.push((op.invoke_ms, 2 * id, id, false));
        if let Some(t) = op.complete_ms.filter(|_| !matches!(op.outcome, Outcome::Pending)) {
            events.push((t, 2 * id + 1, id, true));
        }
    }
    events.sort_unstable();
    let mut c = Converter {
        h,
        params,
        out: Vec::with_capacity(events.len()),
        clients: BTreeMap::new(),
        process_of: BTreeMap::new(),
        next_process: 0,
    };
    for (_, _, id, completion) in events {
        if completion {
            c.complete(id);
        } else {
            c.invoke(id);
        }
    }
    debug_assert!(c.out.windows(2).all(|w| w[0].index < w[1].index));
    jh::History { ops: c.out }
}

impl Converter<'_> {
    fn push(&mut self, time_ms: u64, process: i64, kind: OpType, f: &str, value: OpValue) {
        let index = self.out.len() as u64;
        let op = jh::Op::new(index, time_ms * NS_PER_MS, process, kind, f, value);
        self.out.push(op);
    }

    /// The Jepsen process for a new op of sim client `client`: its current one, or a fresh
    /// one after an `info` (or if an op is somehow still in flight).
    fn process_for(&mut self, client: ProcessId) -> &mut ClientState {
        let next = &mut self.next_process;
        let st = self.clients.entry(client).or_insert_with(|| ClientState {
            retired: true,
            ..ClientState::default()
        });
        if st.in_flight || st.retired {
            *st = ClientState {
                process: *next,
                ..ClientState::default()
            };
            *next += 1;
        }
        st.in_flight = true;
        st
    }

    fn invoke(&mut self, id: OpId) {
        let op = &self.h.ops[id];
        let st = self.process_for(op.process);
        let process = st.process;
        // A fetch that does not continue the last one on its partition is a seek.
        let seek = match &op.kind {
            OpKind::Fetch { partition, offset } => {
                let seek = st.next_offset.get(partition).is_some_and(|o| o != offset);
                if seek {
                    st.next_offset.remove(partition);
                }
                seek
            }
            _ => false,
        };
        self.process_of.insert(id, process);
        match &op.kind {
            OpKind::Produce {
                partition, records, ..
            } => {
                let mops = records.iter().map(|&r| send(*partition, r, None)).collect();
                self.push(op.invoke_ms, process, OpType::Invoke, "send", OpValue::Mops(mops));
            }
            OpKind::Fetch { partition, .. } => {
                if seek {
                    let others: Vec<u64> = (0..self.params.partitions)
                        .filter(|p| p != partition)
                        .map(|p| p as u64)
                        .collect();
                    for kind in [OpType::Invoke, OpType::Ok] {
                        let keys = OpValue::Keys(others.clone());
                        self.push(op.invoke_ms, process, kind, "assign", keys);
                    }
                }
                let mops = vec![Mop::Poll(Vec::new())];
                self.push(op.invoke_ms, process, OpType::Invoke, "poll", OpValue::Mops(mops));
            }
            OpKind::CreateTopic | OpKind::ListOffsets { .. } => {
                unreachable!("only produces and fetches are converted")
            }
        }
    }

    fn complete(&mut self, id: OpId) {
        let op = &self.h.ops[id];
        let process = self.process_of[&id];
        let at_ms = op.complete_ms.unwrap_or(op.invoke_ms);
        let (kind, f, mops) = match &op.kind {
            OpKind::Produce {
                partition,
                acks,
                records,
            } => {
                let (kind, base) = self.produce_outcome(*acks, &op.outcome);
                let mops = records
                    .iter()
                    .enumerate()
                    .map(|(i, &r)| send(*partition, r, base.map(|b| b + i as i64)))
                    .collect();
                (kind, "send", mops)
            }
            OpKind::Fetch { partition, offset } => {
                let (kind, read) = fetch_outcome(*partition, *offset, &op.outcome);
                if let (OpType::Ok, OkValue::Fetched { records, .. }) = (kind, ok_value(&op.outcome)) {
                    let end = records.iter().map(|(o, _)| o + 1).max().unwrap_or(*offset);
                    if let Some(st) = self.clients.get_mut(&op.process) {
                        st.next_offset.insert(*partition, end.max(*offset));
                    }
                }
                (kind, "poll", vec![Mop::Poll(read)])
            }
            OpKind::CreateTopic | OpKind::ListOffsets { .. } => {
                unreachable!("only produces and fetches are converted")
            }
        };
        if let Some(st) = self.clients.get_mut(&op.process).filter(|s| s.process == process) {
            st.in_flight = false;
            st.retired |= kind == OpType::Info;
        }
        self.push(at_ms, process, kind, f, OpValue::Mops(mops));
    }

    /// The completion type of a produce and the base offset its sends report.
    fn produce_outcome(&self, acks: i16, outcome: &Outcome) -> (OpType, Option<i64>) {
        match outcome {
            Outcome::Ok(OkValue::Produced { base_offset }) => {
                let durable = acks == -1 || (acks == 1 && self.params.acks1_durable);
                let kind = if durable { OpType::Ok } else { OpType::Info };
                (kind, (acks != 0).then_some(*base_offset))
            }
            Outcome::Fail { code } if DEFINITE_PRODUCE_ERRORS.contains(code) => (OpType::Fail, None),
            _ => (OpType::Info, None),
        }
    }
}

fn send(partition: i32, record: usize, offset: Option<i64>) -> Mop {
    Mop::Send {
        key: partition as u64,
        value: record as u64,
        offset,
    }
}

fn ok_value(o: &Outcome) -> &OkValue {
    match o {
        Outcome::Ok(v) => v,
        _ => &OkValue::Unit,
    }
}

/// A fetch's completion type and the records a consumer would take from it.
fn fetch_outcome(partition: i32, asked: i64, o: &Outcome) -> (OpType, Vec<(u64, u64, i64)>) {
    match o {
        Outcome::Ok(OkValue::Fetched { records, .. }) => {
            let read = records
                .iter()
                .filter(|(off, _)| *off >= asked)
                .filter_map(|(off, r)| match r {
                    ReadRef::Known(id) => Some((partition as u64, *id as u64, *off)),
                    ReadRef::Unknown { .. } | ReadRef::Control => None,
                })
                .collect();
            (OpType::Ok, read)
        }
        Outcome::Ok(_) => (OpType::Ok, Vec::new()),
        Outcome::Fail { .. } => (OpType::Fail, Vec::new()),
        Outcome::Info { .. } | Outcome::Pending => (OpType::Info, Vec::new()),
    }
}

/// `jepsen-<kind>` as a static name (a sim [`Violation`] kind is `&'static str`).
fn violation_kind(kind: &str) -> &'static str {
    match kind {
        "inconsistent-offsets" => "jepsen-inconsistent-offsets",
        "duplicate" => "jepsen-duplicate",
        "lost-write" => "jepsen-lost-write",
        "unseen" => "jepsen-unseen",
        "nonmonotonic-send" => "jepsen-nonmonotonic-send",
        "int-nonmonotonic-send" => "jepsen-int-nonmonotonic-send",
        "int-send-skip" => "jepsen-int-send-skip",
        "int-poll-skip" => "jepsen-int-poll-skip",
        "int-nonmonotonic-poll" => "jepsen-int-nonmonotonic-poll",
        "poll-skip" => "jepsen-poll-skip",
        "nonmonotonic-poll" => "jepsen-nonmonotonic-poll",
        "G1a" => "jepsen-G1a",
        "precommitted-read" => "jepsen-precommitted-read",
        "generator-bug" => "jepsen-generator-bug",
        "malformed-history" => "jepsen-malformed-history",
        _ => "jepsen-other",
    }
}

/// The options the sim's histories are judged with: assign mode (strict poll checks), no
/// transactions.
pub fn check_options() -> CheckOptions {
    CheckOptions {
        subscribe_allowed: false,
        ww_deps: true,
        transactions: false,
    }
}

/// Converts and checks; one violation per kept anomaly of each failing kind.
pub fn check_jepsen(h: &History, params: &CheckParams) -> (Verdict, Vec<Violation>) {
    let verdict = check(&to_jepsen(h, params), &check_options());
    let mut out = Vec::new();
    for kind in verdict
        .bad_error_types
        .iter()
        .filter(|k| *k != "empty-transaction-graph")
    {
        let total = verdict.anomaly_counts.get(kind).copied().unwrap_or(0);
        for a in verdict.anomalies.get(kind).into_iter().flatten() {
            out.push(Violation {
                kind: violation_kind(kind),
                at_ms: params.end_ms,
                detail: format!(
                    "{kind} ({total} in all): {} (jepsen history ops {:?})",
                    a.detail, a.ops
                ),
            });
        }
    }
    (verdict, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn params() -> CheckParams {
        CheckParams {
            partitions: 2,
            acks1_durable: false,
            end_ms: 100,
        }
    }

    /// A produce of `n` records by client 1 at `t`, completed with `outcome`.
    fn produce(h: &mut History, t: u64, p: i32, acks: i16, n: usize, outcome: Outcome) -> Vec<usize> {
        let op = h.invoke(
            1,
            t,
            OpKind::Produce {
                partition: p,
                acks,
                records: vec![],
            },
        );
        let ids: Vec<usize> = (0..n)
            .map(|i| {
                let value = format!("{}x", crate::history::value_prefix(h.next_record_id()));
                h.add_sent(op, p, i as u32, None, Bytes::from(value))
            })
            .collect();
        h.set_produce_records(op, ids.clone());
        h.complete(op, t + 1, outcome);
        ids
    }

    fn fetch(h: &mut History, client: u32, t: u64, p: i32, offset: i64, records: &[(i64, usize)]) {
        let op = h.invoke(client, t, OpKind::Fetch { partition: p, offset });
        let records = records.iter().map(|&(o, id)| (o, ReadRef::Known(id))).collect();
        let hw = 100;
        h.complete(
            op,
            t + 1,
            Outcome::Ok(OkValue::Fetched {
                high_watermark: hw,
                records,
            }),
        );
    }

    fn acked(base_offset: i64) -> Outcome {
        Outcome::Ok(OkValue::Produced { base_offset })
    }

    fn kinds(h: &History) -> Vec<&'static str> {
        check_jepsen(h, &params()).1.iter().map(|v| v.kind).collect()
    }

    #[test]
    fn a_clean_run_converts_to_a_valid_history() {
        let mut h = History::default();
        let a = produce(&mut h, 0, 0, -1, 3, acked(0));
        let b = produce(&mut h, 2, 0, 1, 1, acked(3)); // acks=1 on a cluster: info
        let c = produce(
            &mut h,
            4,
            1,
            0,
            1,
            Outcome::Info {
                reason: "acks=0".into(),
            },
        );
        let d = produce(&mut h, 6, 0, -1, 1, Outcome::Fail { code: 6 }); // indefinite
        fetch(&mut h, 2, 10, 0, 1, &[(0, a[0]), (1, a[1]), (2, a[2])]); // first batch starts early
        fetch(&mut h, 2, 12, 0, 3, &[(3, b[0])]); // continues
        fetch(&mut h, 2, 14, 0, 1, &[(1, a[1])]); // a seek back
        fetch(&mut h, 3, 20, 0, 0, &[(0, a[0]), (1, a[1]), (2, a[2]), (3, b[0])]);
        fetch(&mut h, 3, 22, 1, 0, &[]);
        let _ = (c, d);
        let j = to_jepsen(&h, &params());
        j.validate().unwrap();
        let assigns: Vec<_> = j.ops.iter().filter(|o| o.f == "assign").collect();
        assert_eq!(assigns.len(), 2, "one seek, as invoke + ok");
        assert_eq!(assigns[0].value, OpValue::Keys(vec![1]));
        let polled: Vec<u64> = j
            .ops
            .iter()
            .filter(|o| o.f == "poll")
            .flat_map(|o| o.polled().map(|r| r.1))
            .collect();
        assert_eq!(
            polled[..3],
            [a[1] as u64, a[2] as u64, b[0] as u64],
            "records below the asked offset are dropped"
        );
        let (verdict, violations) = check_jepsen(&h, &params());
        assert!(verdict.valid, "{verdict:#?}");
        assert_eq!(violations, vec![]);
        // Process per sim client until an info: client 1's acks=1 and acks=0 sends retire it.
        let senders: Vec<i64> = j
            .ops
            .iter()
            .filter(|o| o.f == "send")
            .map(|o| o.process)
            .collect();
        assert_eq!(senders, vec![0, 0, 0, 0, 1, 1, 2, 2]);
    }

    #[test]
    fn a_lost_acked_write_and_a_skipping_fetch_are_caught() {
        let mut h = History::default();
        let a = produce(&mut h, 0, 0, -1, 1, acked(0));
        let b = produce(&mut h, 2, 0, -1, 1, acked(1));
        let c = produce(&mut h, 4, 0, -1, 1, acked(2));
        fetch(&mut h, 2, 10, 0, 0, &[(0, a[0])]);
        fetch(&mut h, 2, 12, 0, 1, &[(2, c[0])]); // continues at 1, yet starts at 2
        let _ = b;
        assert_eq!(
            kinds(&h),
            vec!["jepsen-lost-write", "jepsen-poll-skip", "jepsen-unseen"]
        );
    }
}
