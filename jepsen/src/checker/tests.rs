//! One hand-made history per anomaly class (the examples of JEPSEN.md §3), a valid history
//! with every legal oddity, and the edge cases (empty, malformed, generator bug, caps).

use super::*;
use crate::history::{Mop, Offset, Op, OpValue, Rebalance, Value};
use OpType::{Fail, Info, Ok as OkT};

const X: Key = 0;
const Y: Key = 1;
const A: Value = 1;
const B: Value = 2;
const C: Value = 3;
const D: Value = 4;
const E: Value = 5;
const F: Value = 6;
const G: Value = 7;

fn s(key: Key, value: Value, offset: Option<Offset>) -> Mop {
    Mop::Send { key, value, offset }
}

fn pl(records: &[(Key, Value, Offset)]) -> Mop {
    Mop::Poll(records.to_vec())
}

/// A history builder: each call appends an invocation and (unless `invoke`) its completion.
#[derive(Default)]
struct H {
    h: History,
}

impl H {
    fn push(&mut self, mut op: Op) {
        op.index = self.h.ops.len() as u64;
        op.time = 1_000 * op.index;
        self.h.ops.push(op);
    }

    /// The invocation of `mops`: sends without offsets, empty polls.
    fn invoke(&mut self, p: i64, f: &str, mops: &[Mop]) -> &mut Self {
        let bare = mops
            .iter()
            .map(|m| match m {
                Mop::Send { key, value, .. } => s(*key, *value, None),
                Mop::Poll(_) => pl(&[]),
            })
            .collect();
        self.push(Op::new(0, 0, p, OpType::Invoke, f, OpValue::Mops(bare)));
        self
    }

    fn op_rb(&mut self, kind: OpType, p: i64, f: &str, mops: &[Mop], rebalance: &[Key]) -> &mut Self {
        self.invoke(p, f, mops);
        let mut done = Op::new(0, 0, p, kind, f, OpValue::Mops(mops.to_vec()));
        if !rebalance.is_empty() {
            done.rebalance = vec![Rebalance {
                kind: "revoked".into(),
                keys: rebalance.to_vec(),
            }];
        }
        self.push(done);
        self
    }

    fn op(&mut self, kind: OpType, p: i64, f: &str, mops: &[Mop]) -> &mut Self {
        self.op_rb(kind, p, f, mops, &[])
    }

    fn send(&mut self, p: i64, k: Key, v: Value, off: Option<Offset>) -> &mut Self {
        self.op(OkT, p, "send", &[s(k, v, off)])
    }

    fn send_as(&mut self, kind: OpType, p: i64, k: Key, v: Value, off: Option<Offset>) -> &mut Self {
        self.op(kind, p, "send", &[s(k, v, off)])
    }

    fn poll(&mut self, p: i64, records: &[(Key, Value, Offset)]) -> &mut Self {
        self.op(OkT, p, "poll", &[pl(records)])
    }

    fn poll_as(&mut self, kind: OpType, p: i64, records: &[(Key, Value, Offset)]) -> &mut Self {
        self.op(kind, p, "poll", &[pl(records)])
    }

    fn txn(&mut self, kind: OpType, p: i64, mops: &[Mop]) -> &mut Self {
        self.op(kind, p, "txn", mops)
    }

    fn keys_op(&mut self, kind: OpType, p: i64, f: &str, keys: &[Key]) -> &mut Self {
        let keys = OpValue::Keys(keys.to_vec());
        self.push(Op::new(0, 0, p, OpType::Invoke, f, keys.clone()));
        self.push(Op::new(0, 0, p, kind, f, keys));
        self
    }

    fn assign(&mut self, p: i64, keys: &[Key]) -> &mut Self {
        self.keys_op(OkT, p, "assign", keys)
    }

    fn nemesis(&mut self, f: &str) -> &mut Self {
        self.push(Op::new(0, 0, -1, Info, f, OpValue::default()));
        self
    }

    fn check_with(&self, opts: CheckOptions) -> Verdict {
        check(&self.h, &opts)
    }

    fn check(&self) -> Verdict {
        self.check_with(CheckOptions::default())
    }
}

fn kinds(v: &Verdict) -> Vec<&str> {
    v.error_types.iter().map(String::as_str).collect()
}

fn only(v: &Verdict, kind: &str) -> Vec<Anomaly> {
    v.anomalies.get(kind).cloned().unwrap_or_default()
}

#[test]
fn inconsistent_offsets_two_acks_for_one_offset() {
    let mut h = H::default();
    h.send(0, X, A, Some(5))
        .send(1, X, B, Some(5))
        .poll(2, &[(X, A, 5)]);
    let v = h.check();
    assert!(!v.valid);
    let a = only(&v, "inconsistent-offsets");
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].key, Some(X));
    assert_eq!(a[0].detail["offset"], 5);
    assert_eq!(a[0].detail["index"], 0);
    assert_eq!(a[0].detail["values"], serde_json::json!([A, B]));
    assert_eq!(a[0].ops, vec![1, 3]);
}

#[test]
fn an_info_send_that_collides_is_ignored_unless_proven() {
    let mut h = H::default();
    h.send(0, X, A, Some(5))
        .send_as(Info, 1, X, B, Some(5))
        .poll(2, &[(X, A, 5)]);
    assert_eq!(kinds(&h.check()), Vec::<&str>::new());
    // Proven committed: someone read b (elsewhere), so its acked offset counts.
    h.poll(3, &[(X, B, 6)]);
    let v = h.check();
    assert!(kinds(&v).contains(&"inconsistent-offsets"), "{:?}", v.error_types);
}

#[test]
fn duplicate_one_value_at_two_offsets() {
    let mut h = H::default();
    h.send(0, X, A, Some(1)).poll(1, &[(X, B, 2), (X, A, 3)]);
    let v = h.check();
    let d = only(&v, "duplicate");
    assert_eq!(d.len(), 1, "{:?}", v.error_types);
    assert_eq!(d[0].detail["value"], A);
    assert_eq!(d[0].detail["offsets"], serde_json::json!([1, 3]));
    assert_eq!(d[0].detail["count"], 2);
    assert!(!v.valid);
}

/// A producer retry stores A twice (offsets 1 and 2). A consumer that reads the first copy,
/// the second and then B is in order, and so is the producer: positions come from offsets,
/// so only the duplicate is reported (the value alone names only its last copy, which made
/// the first read look like a skip back in a 30-minute real-cluster run).
#[test]
fn a_duplicated_value_is_no_skip_or_step_back_for_its_readers_and_writer() {
    let mut h = H::default();
    h.send(0, X, A, Some(1))
        .send(0, X, B, Some(3))
        .poll(1, &[(X, A, 1)])
        .poll(1, &[(X, A, 2), (X, B, 3)])
        .poll(2, &[(X, A, 1), (X, A, 2), (X, B, 3)]);
    let v = h.check();
    assert_eq!(v.error_types, vec!["duplicate".to_string()], "{:?}", v.anomalies);
}

#[test]
fn lost_write_everything_before_a_read_value_must_have_been_read() {
    let mut h = H::default();
    h.send(0, X, A, Some(0))
        .send(0, X, B, Some(1))
        .send_as(Info, 2, X, C, None)
        .poll(1, &[(X, C, 2)]);
    let v = h.check();
    let lost = only(&v, "lost-write");
    let values: Vec<_> = lost.iter().map(|a| a.detail["value"].clone()).collect();
    assert_eq!(values, vec![serde_json::json!(A), serde_json::json!(B)]);
    assert_eq!(lost[0].detail["bound"], 2);
    assert_eq!(lost[0].detail["bound_value"], C);
    assert_eq!(lost[0].detail["writer"], 1);
    assert_eq!(lost[0].detail["reader"], 7);
    assert!(v.bad_error_types.contains(&"lost-write".to_string()));
}

#[test]
fn an_unproven_info_write_is_never_lost() {
    let mut h = H::default();
    h.send_as(Info, 0, X, A, Some(0))
        .send(1, X, B, Some(1))
        .poll(2, &[(X, B, 1)]);
    let v = h.check();
    assert!(v.valid, "{:?}", v.anomalies);
}

#[test]
fn a_read_of_one_write_of_an_info_transaction_commits_all_of_it() {
    let mut h = H::default();
    // The txn's two sends; only y's is read, and x's (offset known) lies before a read value.
    h.txn(Info, 0, &[s(X, A, Some(0)), s(Y, C, Some(0))])
        .send(1, X, B, Some(1))
        .poll(2, &[(X, B, 1), (Y, C, 0)]);
    let lost = only(&h.check(), "lost-write");
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].detail["value"], A);
}

#[test]
fn unseen_acked_values_nobody_read() {
    let mut h = H::default();
    h.send(0, X, A, Some(0))
        .send(0, X, B, Some(1))
        .poll(1, &[(X, A, 0)])
        .poll(1, &[]);
    let v = h.check();
    let u = only(&v, "unseen");
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].detail["count"], 1);
    assert_eq!(u[0].detail["values"], serde_json::json!([B]));
    assert_eq!(v.stats.unseen, 1);
    assert!(!v.valid);
}

#[test]
fn nonmonotonic_send_a_later_send_lands_earlier() {
    let mut h = H::default();
    h.send(0, X, D, Some(4))
        .send(0, X, A, Some(1))
        .poll(1, &[(X, A, 1), (X, D, 4)]);
    let v = h.check();
    let a = only(&v, "nonmonotonic-send");
    assert_eq!(a.len(), 1, "{:?}", v.error_types);
    assert_eq!(a[0].detail["delta"], -1);
    assert_eq!(a[0].detail["values"], serde_json::json!([D, A]));
    assert_eq!(a[0].ops, vec![1, 3]);
    assert_eq!(kinds(&v), vec!["nonmonotonic-send"]);
}

#[test]
fn nonmonotonic_send_forgets_keys_an_assign_drops() {
    let mut h = H::default();
    h.send(0, X, D, Some(4))
        .assign(0, &[Y])
        .send(0, X, A, Some(1))
        .poll(1, &[(X, A, 1), (X, D, 4)]);
    assert!(h.check().valid);
}

#[test]
fn int_nonmonotonic_send_within_one_txn() {
    let mut h = H::default();
    h.txn(OkT, 0, &[s(X, C, Some(3)), s(X, A, Some(1))])
        .poll(1, &[(X, A, 1), (X, C, 3)]);
    let v = h.check();
    assert_eq!(kinds(&v), vec!["int-nonmonotonic-send"]);
    assert_eq!(only(&v, "int-nonmonotonic-send")[0].detail["delta"], -1);
}

#[test]
fn int_send_skip_is_allowed() {
    let mut h = H::default();
    h.txn(OkT, 0, &[s(X, A, Some(1)), s(X, C, Some(3))])
        .send(1, X, B, Some(2))
        .poll(2, &[(X, A, 1), (X, B, 2), (X, C, 3)]);
    let v = h.check();
    assert_eq!(kinds(&v), vec!["int-send-skip"]);
    assert_eq!(
        only(&v, "int-send-skip")[0].detail["skipped"],
        serde_json::json!([B])
    );
    assert!(v.valid);
}

#[test]
fn int_poll_skip_and_its_rebalance_exemption() {
    let mut h = H::default();
    h.send(9, X, A, Some(1))
        .send(9, X, B, Some(2))
        .send(9, X, D, Some(4))
        .poll(0, &[(X, A, 1), (X, D, 4)])
        .poll(1, &[(X, B, 2)]);
    let v = h.check();
    assert_eq!(kinds(&v), vec!["int-poll-skip"]);
    let a = &only(&v, "int-poll-skip")[0];
    assert_eq!(a.detail["skipped"], serde_json::json!([B]));
    assert_eq!(a.detail["delta"], 2);

    let mut h = H::default();
    h.send(9, X, A, Some(1))
        .send(9, X, B, Some(2))
        .send(9, X, D, Some(4))
        .op_rb(OkT, 0, "poll", &[pl(&[(X, A, 1), (X, D, 4)])], &[X])
        .poll(1, &[(X, B, 2)]);
    assert!(h.check().valid);
}

#[test]
fn int_nonmonotonic_poll_within_one_op() {
    let mut h = H::default();
    h.send(9, X, A, Some(1))
        .send(9, X, C, Some(3))
        .poll(0, &[(X, C, 3), (X, A, 1)]);
    let v = h.check();
    assert_eq!(kinds(&v), vec!["int-nonmonotonic-poll"]);
    assert_eq!(only(&v, "int-nonmonotonic-poll")[0].detail["delta"], -1);
}

#[test]
fn poll_skip_across_ops_of_one_consumer() {
    let mut h = H::default();
    h.assign(0, &[X])
        .poll(0, &[(X, A, 1), (X, B, 2)])
        .poll(1, &[(X, C, 3)])
        .poll(0, &[(X, D, 4)]);
    let v = h.check();
    assert_eq!(kinds(&v), vec!["poll-skip"]);
    let a = &only(&v, "poll-skip")[0];
    assert_eq!(a.detail["skipped"], serde_json::json!([C]));
    assert_eq!(a.ops, vec![3, 7]);
    assert!(!v.valid);
    let sub = h.check_with(CheckOptions {
        subscribe_allowed: true,
        ..CheckOptions::default()
    });
    assert!(sub.valid);
    assert_eq!(sub.bad_error_types, Vec::<String>::new());
}

#[test]
fn nonmonotonic_poll_across_ops_of_one_consumer() {
    let mut h = H::default();
    h.poll(0, &[(X, A, 1), (X, B, 2), (X, C, 3)])
        .poll(0, &[(X, B, 2), (X, C, 3), (X, D, 4)]);
    let v = h.check();
    assert_eq!(kinds(&v), vec!["nonmonotonic-poll"]);
    assert_eq!(only(&v, "nonmonotonic-poll")[0].detail["delta"], -1);
}

#[test]
fn an_assign_that_drops_a_key_and_failed_polls_do_not_move_the_position() {
    let mut h = H::default();
    h.poll(0, &[(X, A, 1), (X, B, 2), (X, C, 3)])
        .assign(0, &[Y])
        .poll(0, &[(X, A, 1)]);
    assert!(h.check().valid);

    let mut h = H::default();
    h.poll(0, &[(X, A, 1)])
        .poll_as(Fail, 0, &[(X, B, 2), (X, C, 3)])
        .poll(0, &[(X, B, 2)])
        .poll(1, &[(X, C, 3)]);
    assert!(h.check().valid, "{:?}", h.check().anomalies);
    // ... but they are still checked against it.
    h.poll_as(Info, 0, &[(X, A, 1)]);
    assert_eq!(kinds(&h.check()), vec!["nonmonotonic-poll"]);
}

#[test]
fn g1a_an_ok_poll_reads_a_failed_write() {
    let mut h = H::default();
    h.txn(Fail, 0, &[s(X, A, Some(0))]).poll(1, &[(X, A, 0)]);
    let v = h.check();
    assert_eq!(kinds(&v), vec!["G1a"]);
    let a = &only(&v, "G1a")[0];
    assert_eq!(a.detail["writer"], 1);
    assert_eq!(a.detail["readers"], serde_json::json!([3]));
    assert_eq!(a.ops, vec![1, 3]);
    // A failed send's offset never enters the version order.
    assert!(!v.anomalies.contains_key("inconsistent-offsets"));
}

#[test]
fn precommitted_read_only_with_transactions() {
    let mut h = H::default();
    h.txn(OkT, 0, &[s(X, A, Some(0)), pl(&[(X, A, 0)])]);
    assert!(h.check().valid);
    let v = h.check_with(CheckOptions {
        transactions: true,
        ..CheckOptions::default()
    });
    assert_eq!(kinds(&v), vec!["precommitted-read"]);
    assert!(!v.valid);
}

#[test]
fn an_empty_history_is_invalid() {
    let v = check(&History::default(), &CheckOptions::default());
    assert!(!v.valid);
    assert_eq!(kinds(&v), vec!["empty-transaction-graph"]);
    assert!(summary_line(&v).starts_with("INVALID: empty-transaction-graph ×1"));

    let mut h = H::default();
    h.nemesis("kill")
        .assign(0, &[X])
        .invoke(1, "send", &[s(X, A, None)]);
    assert_eq!(kinds(&h.check()), vec!["empty-transaction-graph"]);
}

#[test]
fn one_value_sent_twice_is_a_generator_bug() {
    let mut h = H::default();
    h.send(0, X, A, Some(0))
        .send(1, X, A, Some(1))
        .poll(2, &[(X, A, 0)]);
    let v = h.check();
    assert!(!v.valid);
    assert!(kinds(&v).contains(&"generator-bug"), "{:?}", v.error_types);
    assert_eq!(only(&v, "generator-bug")[0].ops, vec![1, 3]);
}

#[test]
fn a_malformed_history_is_reported_not_checked() {
    let mut h = H::default();
    h.send(0, X, A, Some(0));
    h.h.ops.swap(0, 1);
    let v = h.check();
    assert_eq!(kinds(&v), vec!["malformed-history"]);
    assert!(!v.valid);
}

/// Info sends never read, reads of info writes, sparse offsets, an unfinished op, nemesis
/// events, and a subscribe run whose poll-skip is allowed.
fn valid_history() -> H {
    let mut h = H::default();
    h.nemesis("start")
        .assign(3, &[X])
        .send(0, X, A, Some(0))
        .send(0, X, B, Some(2)) // offset 1: a transaction marker
        .send_as(Info, 1, X, C, None) // never read
        .send_as(Info, 2, X, D, Some(5)) // read below
        .nemesis("kill")
        .send_as(Fail, 4, X, 99, None)
        .poll(3, &[(X, A, 0), (X, B, 2)])
        .poll(3, &[(X, D, 5)])
        .poll(3, &[])
        .keys_op(OkT, 5, "subscribe", &[Y])
        .txn(OkT, 6, &[s(Y, E, Some(0)), s(Y, F, Some(1)), s(Y, G, Some(3))])
        .poll(5, &[(Y, E, 0)])
        .poll(7, &[(Y, F, 1)])
        .poll(5, &[(Y, G, 3)]) // skipped f across a rebalance: allowed under subscribe
        .invoke(8, "send", &[s(Y, 100, None)]);
    h
}

#[test]
fn a_valid_history_passes() {
    let h = valid_history();
    h.h.validate().unwrap();
    let opts = CheckOptions {
        subscribe_allowed: true,
        ..CheckOptions::default()
    };
    let v = h.check_with(opts);
    assert!(v.valid, "{v:#?}");
    assert_eq!(kinds(&v), vec!["poll-skip"]);
    assert_eq!(v.stats.unseen, 0);
    assert_eq!(v.stats.sends_acked, 5);
    assert_eq!(v.stats.sends_info, 3);
    assert_eq!(v.stats.sends_failed, 1);
    assert_eq!(v.stats.values_read, 6);
    assert_eq!(v.stats.keys, 2);
    assert_eq!(v.stats.nemesis_events, 2);
    assert_eq!(
        v.stats.by_f["poll"],
        Outcomes {
            ok: 6,
            fail: 0,
            info: 0
        }
    );
    assert_eq!(
        summary_line(&v),
        "valid: 15 ops (5 sends acked, 6 values read); allowed: poll-skip ×1"
    );
    assert!(!h.check().valid, "assign-only judging rejects the poll-skip");
}

#[test]
fn checking_is_deterministic_and_serializes() {
    let h = valid_history();
    let a = serde_json::to_string(&h.check()).unwrap();
    let b = serde_json::to_string(&h.check()).unwrap();
    assert_eq!(a, b);
    let back: Verdict = serde_json::from_str(&a).unwrap();
    assert_eq!(back, h.check());
}

#[test]
fn anomaly_lists_are_capped_and_counted() {
    let mut h = H::default();
    for k in 0..40 {
        h.send(0, k, A, Some(0));
    }
    h.poll(1, &[]);
    let v = h.check();
    assert_eq!(v.anomaly_counts["unseen"], 40);
    assert_eq!(v.anomalies["unseen"].len(), LIST_MAX);
    assert_eq!(v.stats.unseen, 40);
    assert_eq!(
        summary_line(&v),
        "INVALID: unseen ×40 in 41 ops (40 sends acked, 0 values read)"
    );
}

#[test]
fn summary_lines() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(12_345), "12,345");
    assert_eq!(thousands(1_234_567), "1,234,567");
    let mut h = H::default();
    h.send(0, X, A, Some(0)).poll(1, &[(X, A, 0)]);
    assert_eq!(
        summary_line(&h.check()),
        "valid: 2 ops (1 sends acked, 1 values read), no anomalies"
    );
}

#[test]
fn the_verdict_table() {
    let strict = CheckOptions::default();
    let sub = CheckOptions {
        subscribe_allowed: true,
        ww_deps: false,
        transactions: true,
    };
    for k in [
        "int-send-skip",
        "G0",
        "G0-realtime",
        "G-single",
        "G2-item-process",
    ] {
        assert!(allowed(k, &strict) && allowed(k, &sub), "{k}");
    }
    for k in ["poll-skip", "nonmonotonic-poll"] {
        assert!(!allowed(k, &strict) && allowed(k, &sub), "{k}");
    }
    assert!(allowed("G1c-process", &strict) && !allowed("G1c", &sub));
    for k in [
        "lost-write",
        "duplicate",
        "inconsistent-offsets",
        "unseen",
        "nonmonotonic-send",
        "int-nonmonotonic-send",
        "int-poll-skip",
        "int-nonmonotonic-poll",
        "G1a",
        "precommitted-read",
        "empty-transaction-graph",
        "generator-bug",
        "malformed-history",
    ] {
        assert!(!allowed(k, &strict) && !allowed(k, &sub), "{k}");
    }
}
