"""SIGKILL the broker at random moments under a producer load; nothing acknowledged is lost.

Two confluent-kafka producers send numbered streams (one with acks=1, one with acks=all)
while the broker is SIGKILLed and restarted on the same port and data dir, again and
again. Every delivery report is recorded with its offset. At the end:

* every acknowledged record is present exactly once, at its acknowledged offset;
* no record is present twice (acknowledged or not), and records appear in send order;
* the offsets are dense: walking the raw log, every offset below the high watermark
  belongs to exactly one batch (data, or a control batch such as Raft's leader no-op);
* each start of the broker elects the partition's leader once, and each election appends
  one no-op: the log holds exactly one one-record control batch per start, the first at 0.
  Consumers skip them, so data offsets have a gap at each (acked offsets increase, but
  are not consecutive across a restart).

The producers run with retries off and idempotence off: a record is sent at most once,
so a duplicate in the log can only be the broker's doing. (Gregor acks=1 also waits for
the leader's fsync, so even acks=1 records must survive SIGKILL.)

CRASH_SEED=<n> replays a kill schedule; the seed is printed on failure.
"""

from __future__ import annotations

import os
import random
import threading
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Producer

import rawkafka
from helpers import RDKAFKA_LOG, consume, create_topic, unique_topic

pytestmark = pytest.mark.gregor_only

KILLS = 6
RUN_BEFORE_KILL_S = (0.3, 1.8)
DOWN_S = (0.0, 0.4)
SETTLE_S = 2.0
RECORDS_PER_S = 1500  # per stream, so the log stays small enough to verify quickly
ACKED_MIN = 500  # per stream: below this the test did not test much


class Stream:
    """One producer thread sending `<acks>-<seq>` values to one single-partition topic."""

    def __init__(self, bootstrap: str, acks: str, topic: str):
        self.acks = acks
        self.topic = topic
        self.sent = 0
        self.sent_at_last_start = 0
        self.acked: dict[int, int] = {}  # seq -> offset
        self.failed: dict[int, str] = {}  # seq -> error
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.producer = Producer({
            "bootstrap.servers": bootstrap,
            "acks": acks,
            "enable.idempotence": False,
            "message.send.max.retries": 0,
            "linger.ms": 2,
            "message.timeout.ms": 10000,
            "request.timeout.ms": 4000,
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 200,
            "socket.connection.setup.timeout.ms": 3000,
        }, logger=RDKAFKA_LOG)
        self.thread = threading.Thread(target=self._run, name=f"stream-acks{acks}", daemon=True)

    def value(self, seq: int) -> bytes:
        return f"{self.acks}-{seq:08d}".encode()

    def _on_delivery(self, err, msg):
        seq = int(msg.value().split(b"-")[1])
        if err is None:
            assert seq not in self.acked, f"two delivery reports for seq {seq}"
            self.acked[seq] = msg.offset()
        else:
            self.failed[seq] = str(err)

    def _run(self):
        try:
            period_s = 1.0 / RECORDS_PER_S
            next_at = time.monotonic()
            while not self.stop.is_set():
                while True:
                    try:
                        self.producer.produce(self.topic, value=self.value(self.sent), partition=0,
                                              on_delivery=self._on_delivery)
                        break
                    except BufferError:
                        self.producer.poll(0.05)
                self.sent += 1
                self.producer.poll(0)
                next_at += period_s
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            self.producer.flush(30)
        except BaseException as e:  # surfaced by the test
            self.error = e


def verify(stream: Stream, bootstrap_port: int, bootstrap: str, starts: int) -> dict:
    name = f"acks={stream.acks}"
    assert stream.error is None, f"{name}: producer thread failed: {stream.error!r}"
    reported = len(stream.acked) + len(stream.failed)
    assert reported == stream.sent, f"{name}: {stream.sent} sent, {reported} delivery reports"
    assert len(stream.acked) >= ACKED_MIN, f"{name}: only {len(stream.acked)} acked"
    assert any(seq >= stream.sent_at_last_start for seq in stream.acked), \
        f"{name}: nothing sent after the last restart was acknowledged"

    batches, hw = rawkafka.walk_partition("127.0.0.1", bootstrap_port, stream.topic, 0)
    problems = rawkafka.dense_problems(batches, 0, hw)
    assert problems == [], f"{name}: log not dense: {problems[:10]}"
    noops = rawkafka.control_offsets(batches)
    assert len(noops) == starts and noops[:1] == [(0, 1)] and all(n == 1 for _, n in noops), \
        f"{name}: {starts} starts, control batches (offset, records) {noops}"
    data_count = sum(b.record_count for b in batches if not b.is_control)

    msgs = consume(bootstrap, stream.topic, 0, OFFSET_BEGINNING, data_count, timeout_s=30)
    seen: dict[int, int] = {}  # seq -> offset
    prev_seq, prev_offset = -1, -1
    for m in msgs:
        seq = int(m.value().split(b"-")[1])
        assert m.value() == stream.value(seq), f"{name}: foreign value {m.value()!r}"
        assert seq not in seen, f"{name}: seq {seq} twice, at {seen[seq]} and {m.offset()}"
        assert seq > prev_seq, f"{name}: seq {seq} at {m.offset()} after seq {prev_seq}"
        assert m.offset() > prev_offset
        seen[seq] = m.offset()
        prev_seq, prev_offset = seq, m.offset()

    lost = [s for s in stream.acked if s not in seen]
    assert not lost, f"{name}: {len(lost)} acknowledged records lost, e.g. {sorted(lost)[:10]}"
    moved = [(s, o, seen[s]) for s, o in stream.acked.items() if seen[s] != o]
    assert not moved, f"{name}: acked at one offset, found at another (seq, acked, found): {moved[:10]}"
    acked_in_seq_order = [stream.acked[s] for s in sorted(stream.acked)]
    assert acked_in_seq_order == sorted(acked_in_seq_order), f"{name}: acked offsets out of order"
    return {"sent": stream.sent, "acked": len(stream.acked), "failed": len(stream.failed),
            "stored": len(seen), "hw": hw, "control_batches": sum(b.is_control for b in batches)}


@pytest.mark.timeout(150)
def test_sigkill_loses_no_acknowledged_record(broker_factory):
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"CRASH_SEED={seed}")
    broker = broker_factory()
    streams = []
    for acks in ("1", "all"):
        topic = unique_topic(f"crash-acks{acks}")
        create_topic(broker.bootstrap, topic)
        streams.append(Stream(broker.bootstrap, acks, topic))
    for s in streams:
        s.thread.start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(*RUN_BEFORE_KILL_S))
            broker.kill()
            time.sleep(rng.uniform(*DOWN_S))
            broker.start()
        for s in streams:
            s.sent_at_last_start = s.sent
        time.sleep(SETTLE_S)
    finally:
        for s in streams:
            s.stop.set()
        for s in streams:
            s.thread.join(45)
    assert broker.starts == KILLS + 1
    summary = {}
    for s in streams:
        assert not s.thread.is_alive(), f"acks={s.acks}: producer thread hung"
        summary[s.acks] = verify(s, broker.port, broker.bootstrap, broker.starts)
    print(f"CRASH_SEED={seed} {summary}")
