//! The end-of-run checker: judges a [`History`] after the final read (faults healed, every
//! partition read from offset 0 to its high watermark). It reports lost acknowledged
//! writes, offsets that held two different records, records read at two offsets
//! (duplicates), records nobody sent (phantoms), gaps in the final log, and batches that
//! became visible only in part. Per-step invariants live in the runner and the clients;
//! both report through [`Violation`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::history::{History, OkValue, OpId, OpKind, Outcome, ReadRef, RecordId};

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    /// A short class name: `lost-write`, `duplicate`, `inconsistent-offsets`, `phantom`,
    /// `gap`, `torn-batch`, `corrupt-batch`, `hw-regress`, `fetch-skip`, `liveness`, ...
    pub kind: &'static str,
    /// Simulated time it was detected (end checks: the end of the run).
    pub at_ms: u64,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}ms: {}", self.kind, self.at_ms, self.detail)
    }
}

/// What the end checks need besides the history.
#[derive(Clone, Debug)]
pub struct CheckParams {
    pub partitions: i32,
    /// Whether acks=1 promises durability (true on a single node; with replication a
    /// leader change may legitimately drop acks=1 writes).
    pub acks1_durable: bool,
    pub end_ms: u64,
}

fn value_text(h: &History, id: RecordId) -> String {
    String::from_utf8_lossy(&h.sent[id].value)
        .chars()
        .take(40)
        .collect()
}

/// Runs every end check.
pub fn check_history(h: &History, params: &CheckParams) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut v = |kind: &'static str, detail: String| {
        out.push(Violation {
            kind,
            at_ms: params.end_ms,
            detail,
        })
    };
    let reads = all_reads(h);
    // offset -> every distinct thing read there.
    for ((p, offset), seen) in &reads.by_offset {
        if seen.len() > 1 {
            let what: Vec<String> = seen.iter().map(|r| describe(h, r)).collect();
            v(
                "inconsistent-offsets",
                format!("partition {p} offset {offset} held {}", what.join(" and ")),
            );
        }
    }
    for (id, offsets) in &reads.by_record {
        if offsets.len() > 1 {
            v(
                "duplicate",
                format!("value {} read at offsets {:?}", value_text(h, *id), offsets),
            );
        }
    }
    for r in &reads.phantoms {
        v(
            "phantom",
            format!("read {} which no producer sent", describe(h, r)),
        );
    }
    let final_logs = final_logs(h, params.partitions);
    for (p, log) in final_logs.iter().enumerate() {
        match log {
            None => v("liveness", format!("partition {p} has no final read")),
            Some(log) => check_dense(&mut v, p as i32, log),
        }
    }
    check_acked(h, params, &final_logs, &reads, &mut v);
    check_committed(h, &final_logs, &reads, &mut v);
    check_batches_whole(h, &reads, &mut v);
    check_failed_invisible(h, &reads, &mut v);
    out.sort();
    out
}

fn describe(h: &History, r: &ReadRef) -> String {
    match r {
        ReadRef::Known(id) => format!("value {}", value_text(h, *id)),
        ReadRef::Unknown { key, value } => format!(
            "unknown record (key {:?}, value {:?})",
            key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
            value
                .as_ref()
                .map(|x| String::from_utf8_lossy(x).chars().take(40).collect::<String>())
        ),
        ReadRef::Control => "a control batch".to_string(),
    }
}

/// Every record any fetch returned, indexed both ways.
#[derive(Default)]
struct Reads {
    by_offset: BTreeMap<(i32, i64), BTreeSet<ReadRef>>,
    by_record: BTreeMap<RecordId, BTreeSet<(i32, i64)>>,
    phantoms: BTreeSet<ReadRef>,
}

impl PartialOrd for ReadRef {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ReadRef {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        fn rank(r: &ReadRef) -> (u8, usize, Option<&[u8]>, Option<&[u8]>) {
            match r {
                ReadRef::Known(id) => (0, *id, None, None),
                ReadRef::Control => (1, 0, None, None),
                ReadRef::Unknown { key, value } => (2, 0, key.as_deref(), value.as_deref()),
            }
        }
        rank(self).cmp(&rank(other))
    }
}

fn all_reads(h: &History) -> Reads {
    let mut reads = Reads::default();
    for op in &h.ops {
        let (OpKind::Fetch { partition, .. }, Outcome::Ok(OkValue::Fetched { records, .. })) =
            (&op.kind, &op.outcome)
        else {
            continue;
        };
        for (offset, r) in records {
            reads
                .by_offset
                .entry((*partition, *offset))
                .or_default()
                .insert(r.clone());
            match r {
                ReadRef::Known(id) => {
                    reads
                        .by_record
                        .entry(*id)
                        .or_default()
                        .insert((*partition, *offset));
                }
                ReadRef::Unknown { .. } => {
                    reads.phantoms.insert(r.clone());
                }
                ReadRef::Control => {}
            }
        }
    }
    reads
}

/// The final log of one partition, from the final reader's ListOffsets and fetches.
#[derive(Clone, Debug)]
struct FinalLog {
    /// ListOffsets(latest) when the final read began: it reads at least up to here.
    target: i64,
    /// The highest high watermark the final reader saw (an acks=0 send still in flight
    /// at healing may land after its ListOffsets).
    end: i64,
    records: BTreeMap<i64, ReadRef>,
}

/// `None` for a partition whose final ListOffsets never succeeded.
fn final_logs(h: &History, partitions: i32) -> Vec<Option<FinalLog>> {
    let mut logs: Vec<Option<FinalLog>> = vec![None; partitions.max(0) as usize];
    for op in h.ops.iter().filter(|o| o.final_read) {
        if let (OpKind::ListOffsets { partition, .. }, Outcome::Ok(OkValue::Offset(target))) =
            (&op.kind, &op.outcome)
        {
            if let Some(slot) = logs.get_mut(*partition as usize) {
                *slot = Some(FinalLog {
                    target: *target,
                    end: *target,
                    records: BTreeMap::new(),
                });
            }
        }
    }
    for op in h.ops.iter().filter(|o| o.final_read) {
        if let (
            OpKind::Fetch { partition, .. },
            Outcome::Ok(OkValue::Fetched {
                records,
                high_watermark,
            }),
        ) = (&op.kind, &op.outcome)
        {
            if let Some(Some(log)) = logs.get_mut(*partition as usize) {
                log.end = log.end.max(*high_watermark);
                for (offset, r) in records {
                    log.records.insert(*offset, r.clone());
                }
            }
        }
    }
    logs
}

fn check_dense(v: &mut impl FnMut(&'static str, String), p: i32, log: &FinalLog) {
    let (target, records) = (&log.target, &log.records);
    let mut expected = 0i64;
    for &offset in records.keys().take_while(|&&o| o < *target) {
        if offset != expected {
            v(
                "gap",
                format!(
                    "partition {p}: final read jumps from offset {} to {offset}",
                    expected - 1
                ),
            );
        }
        expected = offset + 1;
    }
    if expected < *target {
        v(
            "gap",
            format!("partition {p}: final read ends at offset {expected}, high watermark is {target}"),
        );
    }
}

fn check_acked(
    h: &History,
    params: &CheckParams,
    final_logs: &[Option<FinalLog>],
    reads: &Reads,
    v: &mut impl FnMut(&'static str, String),
) {
    for (op, partition, acks, base_offset) in h.acked_produces() {
        if acks == 0 || (acks == 1 && !params.acks1_durable) {
            continue;
        }
        let OpKind::Produce { records, .. } = &h.ops[op].kind else {
            continue;
        };
        let Some(Some(log)) = final_logs.get(partition as usize) else {
            continue;
        };
        for (i, &id) in records.iter().enumerate() {
            let offset = base_offset + i as i64;
            match log.records.get(&offset) {
                Some(ReadRef::Known(found)) if *found == id => {}
                found => v(
                    "lost-write",
                    format!(
                        "value {} acked (acks={acks}) at partition {partition} offset {offset} at {}ms; final read has {}",
                        value_text(h, id),
                        h.ops[op].complete_ms.unwrap_or(0),
                        found.map(|r| describe(h, r)).unwrap_or_else(|| "nothing".to_string())
                    ),
                ),
            }
            if let Some(at) = reads.by_record.get(&id) {
                for &(p, o) in at.iter().filter(|&&(p, o)| (p, o) != (partition, offset)) {
                    v(
                        "inconsistent-offsets",
                        format!(
                            "value {} acked at {partition}/{offset} but read at {p}/{o}",
                            value_text(h, id)
                        ),
                    );
                }
            }
        }
    }
}

/// Everything a fetch returned lay below the high watermark, so it was committed (fsynced):
/// it must still be there at the end. And no high watermark seen may pass the final one,
/// since after healing the final one covers every durable record.
fn check_committed(
    h: &History,
    final_logs: &[Option<FinalLog>],
    reads: &Reads,
    v: &mut impl FnMut(&'static str, String),
) {
    for (p, log) in final_logs.iter().enumerate() {
        let Some(FinalLog { end: target, .. }) = log else {
            continue;
        };
        let p = p as i32;
        let beyond: Vec<i64> = reads
            .by_offset
            .range((p, *target)..(p, i64::MAX))
            .map(|((_, o), _)| *o)
            .collect();
        if let (Some(first), Some(last)) = (beyond.first(), beyond.last()) {
            v(
                "lost-committed",
                format!("partition {p}: offsets {first}..={last} were read below a high watermark, final one is {target}"),
            );
        }
        let hw_max =
            h.ops
                .iter()
                .filter_map(|o| match (&o.kind, &o.outcome) {
                    (
                        OpKind::Fetch { partition, .. },
                        Outcome::Ok(OkValue::Fetched { high_watermark, .. }),
                    ) if *partition == p => Some(*high_watermark),
                    _ => None,
                })
                .max();
        if let Some(hw) = hw_max.filter(|hw| hw > target) {
            v(
                "hw-beyond-durable",
                format!("partition {p}: a fetch saw high watermark {hw}, the final one is {target}"),
            );
        }
    }
}

/// Kafka error codes after which a produce definitely did not append. (Storage errors,
/// timeouts and leadership errors leave the outcome unknown.)
pub(crate) const DEFINITE_PRODUCE_ERRORS: &[i16] = &[2, 3, 10, 17, 18, 21, 35, 87];

/// A produce that failed definitely must never become visible.
fn check_failed_invisible(h: &History, reads: &Reads, v: &mut impl FnMut(&'static str, String)) {
    for (&id, at) in &reads.by_record {
        let op = &h.ops[h.sent[id].op];
        if let Outcome::Fail { code } = op.outcome {
            if DEFINITE_PRODUCE_ERRORS.contains(&code) {
                v(
                    "failed-write-visible",
                    format!(
                        "value {} failed with error {code} yet was read at {at:?}",
                        value_text(h, id)
                    ),
                );
            }
        }
    }
}

/// A batch is appended whole or not at all: if any record of a produce was read, all were,
/// at consecutive offsets in send order.
fn check_batches_whole(h: &History, reads: &Reads, v: &mut impl FnMut(&'static str, String)) {
    let mut seen_ops: BTreeSet<OpId> = BTreeSet::new();
    for &id in reads.by_record.keys() {
        let op = h.sent[id].op;
        if !seen_ops.insert(op) {
            continue;
        }
        let OpKind::Produce {
            partition, records, ..
        } = &h.ops[op].kind
        else {
            continue;
        };
        let positions: Vec<Option<i64>> = records
            .iter()
            .map(|r| {
                reads
                    .by_record
                    .get(r)
                    .and_then(|s| s.iter().next())
                    .map(|&(_, o)| o)
            })
            .collect();
        let Some(Some(first)) = positions.first().copied() else {
            v(
                "torn-batch",
                format!("partition {partition}: produce op {op} is visible without its first record"),
            );
            continue;
        };
        for (i, pos) in positions.iter().enumerate() {
            if *pos != Some(first + i as i64) {
                v(
                    "torn-batch",
                    format!(
                        "partition {partition}: record {i} of produce op {op} is at {pos:?}, expected {}",
                        first + i as i64
                    ),
                );
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn produce(h: &mut History, partition: i32, acks: i16, values: &[&str]) -> (OpId, Vec<RecordId>) {
        let op = h.invoke(
            1,
            0,
            OpKind::Produce {
                partition,
                acks,
                records: vec![],
            },
        );
        let ids: Vec<RecordId> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let value = format!("{}{v}", crate::history::value_prefix(h.next_record_id()));
                h.add_sent(
                    op,
                    partition,
                    i as u32,
                    Some(Bytes::from_static(b"k")),
                    Bytes::from(value),
                )
            })
            .collect();
        h.set_produce_records(op, ids.clone());
        (op, ids)
    }

    fn final_read(h: &mut History, partition: i32, records: Vec<(i64, ReadRef)>) {
        let target = records.last().map(|(o, _)| o + 1).unwrap_or(0);
        let lo = h.invoke(
            9,
            5,
            OpKind::ListOffsets {
                partition,
                timestamp: -1,
            },
        );
        h.ops[lo].final_read = true;
        h.complete(lo, 6, Outcome::Ok(OkValue::Offset(target)));
        let f = h.invoke(9, 7, OpKind::Fetch { partition, offset: 0 });
        h.ops[f].final_read = true;
        h.complete(
            f,
            8,
            Outcome::Ok(OkValue::Fetched {
                high_watermark: target,
                records,
            }),
        );
    }

    fn params() -> CheckParams {
        CheckParams {
            partitions: 1,
            acks1_durable: true,
            end_ms: 100,
        }
    }

    fn kinds(v: &[Violation]) -> Vec<&'static str> {
        v.iter().map(|x| x.kind).collect()
    }

    #[test]
    fn a_clean_history_passes() {
        let mut h = History::default();
        let (op, ids) = produce(&mut h, 0, -1, &["a", "b"]);
        h.complete(op, 3, Outcome::Ok(OkValue::Produced { base_offset: 0 }));
        final_read(
            &mut h,
            0,
            vec![(0, ReadRef::Known(ids[0])), (1, ReadRef::Known(ids[1]))],
        );
        assert_eq!(check_history(&h, &params()), vec![]);
    }

    #[test]
    fn lost_acked_write_is_caught() {
        let mut h = History::default();
        let (op, ids) = produce(&mut h, 0, 1, &["a", "b"]);
        h.complete(op, 3, Outcome::Ok(OkValue::Produced { base_offset: 0 }));
        final_read(&mut h, 0, vec![(0, ReadRef::Known(ids[0]))]);
        assert_eq!(
            kinds(&check_history(&h, &params())),
            vec!["lost-write", "torn-batch"]
        );
        let lenient = CheckParams {
            acks1_durable: false,
            ..params()
        };
        assert_eq!(kinds(&check_history(&h, &lenient)), vec!["torn-batch"]);
    }

    #[test]
    fn duplicates_phantoms_and_gaps_are_caught() {
        let mut h = History::default();
        let (op, ids) = produce(&mut h, 0, 0, &["a"]);
        h.complete(
            op,
            3,
            Outcome::Info {
                reason: "acks=0".into(),
            },
        );
        let phantom = ReadRef::Unknown {
            key: None,
            value: Some(Bytes::from_static(b"zz")),
        };
        final_read(
            &mut h,
            0,
            vec![
                (0, ReadRef::Known(ids[0])),
                (2, ReadRef::Known(ids[0])),
                (3, phantom),
            ],
        );
        assert_eq!(
            kinds(&check_history(&h, &params())),
            vec!["duplicate", "gap", "phantom"]
        );
    }

    #[test]
    fn two_records_at_one_offset_is_inconsistent() {
        let mut h = History::default();
        let (op, ids) = produce(&mut h, 0, 0, &["a", "b"]);
        h.complete(
            op,
            3,
            Outcome::Info {
                reason: "acks=0".into(),
            },
        );
        let f = h.invoke(
            2,
            4,
            OpKind::Fetch {
                partition: 0,
                offset: 0,
            },
        );
        h.complete(
            f,
            5,
            Outcome::Ok(OkValue::Fetched {
                high_watermark: 1,
                records: vec![(0, ReadRef::Known(ids[1]))],
            }),
        );
        final_read(
            &mut h,
            0,
            vec![(0, ReadRef::Known(ids[0])), (1, ReadRef::Known(ids[1]))],
        );
        let k = kinds(&check_history(&h, &params()));
        assert!(
            k.contains(&"inconsistent-offsets") && k.contains(&"duplicate"),
            "{k:?}"
        );
    }
}
