"""Idempotent producers (KIP-98 without transactions) with real clients.

* librdkafka (`enable.idempotence=True`: InitProducerId, sequence numbers, up to five
  requests in flight) on one node: every record stored exactly once, in order.
* kafka-python and aiokafka with their idempotence switches on.
* A 3-node cluster under an idempotent librdkafka producer while partition leaders are
  SIGKILLed and restarted (the schedule of `test_cluster_crash.py`, whose helpers are
  reused): no acknowledged record lost and no record stored twice. The same run with
  idempotence off counts the extra copies that at-least-once retries leave (reported, not
  failed on: that is Kafka's behaviour without idempotence). Run with `-s` for the counts.
* A transactional producer gets a clear fatal error (transactions are not implemented).
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

import test_cluster_crash as cc
from cluster import Cluster, gregor_cluster  # noqa: F401  (the fixture)
from helpers import FIRST_DATA_OFFSET, consume, create_topic, unique_topic

N_SINGLE = 20_000


def test_librdkafka_idempotent_producer_stores_each_record_once(broker):
    topic = unique_topic("idem")
    create_topic(broker.bootstrap, topic)
    p = Producer({
        "bootstrap.servers": broker.bootstrap,
        "enable.idempotence": True,
        "linger.ms": 2,
        "batch.num.messages": 200,
    })
    acked: list[tuple[int, int]] = []
    errors: list[str] = []

    def report(err, msg):
        if err is not None:
            errors.append(err.name())
        else:
            acked.append((int(msg.value()), msg.offset()))

    for i in range(N_SINGLE):
        while True:
            try:
                p.produce(topic, value=str(i).encode(), partition=0, on_delivery=report)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0
    assert not errors, errors[:10]
    assert len(acked) == N_SINGLE
    # In order, one offset each, right after the leader's no-op.
    assert sorted(acked, key=lambda a: a[1]) == [(i, FIRST_DATA_OFFSET + i) for i in range(N_SINGLE)]
    got = consume(broker.bootstrap, topic, 0, FIRST_DATA_OFFSET, N_SINGLE, timeout_s=60)
    values = [int(m.value()) for m in got]
    assert values == list(range(N_SINGLE))


def test_transactional_producer_fails_clearly(broker):
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "tx-1"})
    with pytest.raises(KafkaException) as e:
        p.init_transactions(10)
    # A coordinator error (FindCoordinator for transactions) or the fatal
    # UNSUPPORTED_VERSION from InitProducerId; never a hang past the timeout.
    assert e.value.args[0].code() in (KafkaError._TIMED_OUT, KafkaError.COORDINATOR_NOT_AVAILABLE,
                                      KafkaError.UNSUPPORTED_VERSION, KafkaError._FATAL), e.value


def test_kafka_python_idempotent_producer(broker):
    from kafka import KafkaProducer
    topic = unique_topic("idem-kp")
    create_topic(broker.bootstrap, topic)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True, acks="all",
                      request_timeout_ms=15000)
    try:
        futs = [p.send(topic, value=f"v{i}".encode(), partition=0) for i in range(500)]
        offsets = [f.get(timeout=30).offset for f in futs]
    finally:
        p.close()
    assert offsets == [FIRST_DATA_OFFSET + i for i in range(500)]
    got = consume(broker.bootstrap, topic, 0, FIRST_DATA_OFFSET, 500)
    assert [m.value() for m in got] == [f"v{i}".encode() for i in range(500)]


def test_aiokafka_idempotent_producer(broker):
    from aiokafka import AIOKafkaProducer
    topic = unique_topic("idem-aio")
    create_topic(broker.bootstrap, topic)

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True,
                             request_timeout_ms=15000)
        await p.start()
        try:
            futs = [await p.send(topic, value=f"a{i}".encode(), partition=0) for i in range(500)]
            return [(await f).offset for f in futs]
        finally:
            await p.stop()

    offsets = asyncio.run(run())
    assert offsets == [FIRST_DATA_OFFSET + i for i in range(500)]
    got = consume(broker.bootstrap, topic, 0, FIRST_DATA_OFFSET, 500)
    assert [m.value() for m in got] == [f"a{i}".encode() for i in range(500)]


KILLS = int(os.environ.get("IDEMPOTENCE_KILLS", "4"))
RATE_PER_S = 1000


class StreamProducer:
    """Produces "0", "1", ... to partition 0 from a thread, recording delivery reports."""

    def __init__(self, bootstrap: str, topic: str, idempotent: bool):
        self.topic = topic
        self.sent = 0
        self.acked: list[tuple[int, int]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        conf = {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": idempotent,
            "message.timeout.ms": 60000,
            **cc.client_settings(),
        }
        if not idempotent:
            # As test_cluster_crash: order kept across retries without idempotence.
            conf["max.in.flight.requests.per.connection"] = 1
        self.producer = Producer(conf, logger=cc.CapturingLogger("rdkafka.idem"))
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _report(self, err, msg):
        if err is not None:
            self.errors.append(err.name())
        else:
            self.acked.append((int(msg.value()), msg.offset()))

    def _run(self):
        try:
            next_at = time.monotonic()
            while not self.stop.is_set():
                try:
                    self.producer.produce(self.topic, value=str(self.sent).encode(), partition=0,
                                          on_delivery=self._report)
                except BufferError:
                    self.producer.poll(0.05)
                    continue
                self.sent += 1
                self.producer.poll(0)
                next_at += 1.0 / RATE_PER_S
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -0.5:
                    next_at = time.monotonic()
            remaining = self.producer.flush(90)
            assert remaining == 0, f"{remaining} records undelivered after flush(90)"
        except BaseException as e:  # surfaced by the test
            self.error = e


def kill_leaders(cluster: Cluster, topic: str, rng: random.Random, kills: int) -> None:
    for _ in range(kills):
        time.sleep(rng.uniform(0.5, 1.5))
        leader = cc.find_leader(cluster, topic)
        cluster.kill(leader)
        cc.wait_until("a new leader", lambda: cc.find_leader(cluster, topic) != leader)
        time.sleep(rng.uniform(0.0, 0.5))
        cluster.restart(leader)
    time.sleep(1.0)


@pytest.mark.gregor_only
@pytest.mark.timeout(300)
@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "at-least-once"])
def test_leader_sigkills_lose_nothing_and_store_nothing_twice(gregor_cluster: Cluster, idempotent):
    cluster = gregor_cluster
    seed = int(os.environ.get("IDEMPOTENCE_SEED", random.randrange(1 << 30)))
    print(f"\nIDEMPOTENCE_SEED={seed}")
    rng = random.Random(seed)
    topic = unique_topic("idem-crash")
    cc.create_replicated_topic(cluster, topic)
    cc.find_leader(cluster, topic)
    prod = StreamProducer(cluster.bootstrap, topic, idempotent)
    prod.thread.start()
    try:
        kill_leaders(cluster, topic, rng, KILLS)
    finally:
        prod.stop.set()
        prod.thread.join(120)
    assert prod.error is None, f"producer: {prod.error!r}"
    assert not prod.errors, f"delivery errors: {prod.errors[:10]}"
    assert len(prod.acked) == prod.sent, f"{len(prod.acked)} of {prod.sent} acknowledged"
    last = max(o for _, o in prod.acked)
    stored, errors = cc.read_fresh(cluster.bootstrap, topic, prod.sent, last)
    assert not errors, errors
    values = [v for _, v in stored]
    counts: dict[int, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    extra = sum(n - 1 for n in counts.values())
    missing = [v for v, _ in prod.acked if v not in counts]
    at = dict(stored)
    misplaced = [(v, o) for v, o in prod.acked if at.get(o) != v]
    print(f"IDEMPOTENCE_SEED={seed} idempotent={idempotent} sent={prod.sent} "
          f"stored={len(values)} extra_copies={extra} duplicated_values="
          f"{sum(1 for n in counts.values() if n > 1)} missing={len(missing)}")
    assert not missing, f"acknowledged but not stored: {missing[:10]} (seed {seed})"
    assert not misplaced, f"not at the acknowledged offset: {misplaced[:10]} (seed {seed})"
    assert set(counts) <= set(range(prod.sent)), "a value that was never sent"
    if idempotent:
        assert extra == 0, f"{extra} extra copies with idempotence on (seed {seed})"
        # Idempotence keeps the producer's order even with five requests in flight.
        assert values == sorted(values), f"out of order (seed {seed})"
