"""Shared client-side helpers: topic names, topic creation, exact produce and consume."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from broker import tansu_bin

OP_TIMEOUT_S = 15.0
# Every time a partition gets a leader (topic creation, each broker restart) Gregor's Raft
# leader appends a no-op first: a Kafka control batch (KRaft's LEADER_CHANGE record) of one
# record at one offset. Clients skip control batches, so consumers see a gap where each
# no-op sits; the low watermark stays 0 and the high watermark counts the no-ops. A new
# partition's first data record is therefore at offset 1. A reference broker has no no-op.
LEADER_NOOP_OFFSETS = 0 if tansu_bin() is not None else 1
FIRST_DATA_OFFSET = LEADER_NOOP_OFFSETS  # of a new partition
# librdkafka's log lines go through Python logging (pytest shows them for failed tests)
# instead of straight to fd 2, where clients that outlive their test would spam them.
RDKAFKA_LOG = logging.getLogger("rdkafka")


def unique_topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


_ADMINS: dict[str, AdminClient] = {}


def admin(bootstrap: str) -> AdminClient:
    """One AdminClient per broker address, kept alive: a client that is garbage-collected
    fails its pending futures with _DESTROY. `forget_admins()` drops them after a test."""
    if bootstrap not in _ADMINS:
        _ADMINS[bootstrap] = AdminClient({"bootstrap.servers": bootstrap}, logger=RDKAFKA_LOG)
    return _ADMINS[bootstrap]


def forget_admins() -> None:
    _ADMINS.clear()


def topic_exists(bootstrap: str, topic: str) -> bool:
    """Asks Metadata about one topic from a consumer handle, which (unlike a producer or admin
    handle) never asks the broker to auto-create it."""
    c = consumer(bootstrap, allow_auto_create_topics=False)
    try:
        t = c.list_topics(topic=topic, timeout=10).topics.get(topic)
    finally:
        c.close()
    if t is None or (t.error is not None and t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
        return False
    assert t.error is None, f"metadata for {topic}: {t.error}"
    return True


def wait_for_topic(bootstrap: str, topic: str, partitions: int, timeout_s: float = OP_TIMEOUT_S):
    """Waits until Metadata shows `topic` with `partitions` partitions, each with a leader."""
    a = admin(bootstrap)
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        md = a.list_topics(topic=topic, timeout=5)
        t = md.topics.get(topic)
        last = t
        if t is not None and t.error is None and len(t.partitions) == partitions and all(
                p.leader >= 0 for p in t.partitions.values()):
            return t
        time.sleep(0.1)
    raise AssertionError(f"topic {topic} not ready with {partitions} partitions: {last!r}")


def create_topic(bootstrap: str, topic: str, partitions: int = 1, config: dict | None = None):
    a = admin(bootstrap)
    futures = a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                        config=config or {})], operation_timeout=10)
    futures[topic].result(timeout=OP_TIMEOUT_S)
    return wait_for_topic(bootstrap, topic, partitions)


def producer(bootstrap: str, **conf) -> Producer:
    base = {"bootstrap.servers": bootstrap, "linger.ms": 5, "message.timeout.ms": 15000}
    base.update({k.replace("_", "."): v for k, v in conf.items()})
    return Producer(base, logger=RDKAFKA_LOG)


@dataclass
class Delivered:
    key: bytes | None
    value: bytes | None
    headers: list | None
    timestamp: int | None
    partition: int
    offset: int


def produce_and_wait(p: Producer, topic: str, records: list[dict],
                     timeout_s: float = OP_TIMEOUT_S) -> list[Delivered]:
    """Produces `records` (dicts of produce() kwargs) in order; every one must be delivered.
    Returns the delivery reports in the order of `records`."""
    reports: list = [None] * len(records)

    def on_delivery(i):
        def cb(err, msg):
            reports[i] = (err, msg)
        return cb

    for i, rec in enumerate(records):
        p.produce(topic, on_delivery=on_delivery(i), **rec)
        p.poll(0)
    remaining = p.flush(timeout_s)
    assert remaining == 0, f"{remaining} records not delivered within {timeout_s}s"
    out = []
    for i, (rec, rep) in enumerate(zip(records, reports)):
        assert rep is not None, f"record {i}: no delivery report"
        err, msg = rep
        assert err is None, f"record {i}: delivery failed: {err}"
        out.append(Delivered(rec.get("key"), rec.get("value"), rec.get("headers"),
                             rec.get("timestamp"), msg.partition(), msg.offset()))
    return out


def consumer(bootstrap: str, **conf) -> Consumer:
    """A consumer for assign() only: group.id is required by the Python client, but no group
    is joined and nothing is committed."""
    base = {
        "bootstrap.servers": bootstrap,
        "group.id": "gregor-client-tests-assign-only",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "error",
    }
    base.update({k.replace("_", "."): v for k, v in conf.items()})
    return Consumer(base, logger=RDKAFKA_LOG)


def consume(bootstrap: str, topic: str, partition: int, start_offset: int, count: int,
            timeout_s: float = OP_TIMEOUT_S, **conf) -> list:
    """Reads exactly `count` messages of one partition from `start_offset` (which may be
    OFFSET_BEGINNING), failing on any consumer error or on the timeout. After the last
    one it polls a little longer to catch extra, unexpected messages."""
    c = consumer(bootstrap, **conf)
    try:
        c.assign([TopicPartition(topic, partition, start_offset)])
        msgs = []
        deadline = time.monotonic() + timeout_s
        while len(msgs) < count and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"consumer error: {m.error()}")
            msgs.append(m)
        assert len(msgs) == count, (
            f"consumed {len(msgs)} of {count} from {topic}-{partition}@{start_offset} "
            f"in {timeout_s}s")
        extra_deadline = time.monotonic() + 0.5
        while time.monotonic() < extra_deadline:
            m = c.poll(0.1)
            if m is not None and not m.error():
                raise AssertionError(f"unexpected extra message at offset {m.offset()}")
        return msgs
    finally:
        c.close()


def watermarks(c: Consumer, topic: str, partition: int,
               timeout_s: float = OP_TIMEOUT_S) -> tuple[int, int]:
    """(low, high) watermarks of one partition. A new leader answers ListOffsets with
    NOT_LEADER_OR_FOLLOWER until its no-op commits (a few ms after topic creation or a
    restart), and librdkafka's one-shot watermark query does not retry, so this retries
    that error, and only that one, until `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.NOT_LEADER_FOR_PARTITION or \
                    time.monotonic() >= deadline:
                raise
        time.sleep(0.02)


def kafka_error_code(future, timeout_s: float = OP_TIMEOUT_S) -> int:
    """The error code an admin future failed with, or NO_ERROR when it succeeded."""
    try:
        future.result(timeout=timeout_s)
    except KafkaException as e:
        return e.args[0].code()
    return KafkaError.NO_ERROR
