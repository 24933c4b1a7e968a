"""kafka-python (pure Python, its own protocol code): producer with acks=all and gzip,
consumer with assign/seek_to_beginning, admin create/delete, end_offsets, offsets_for_times."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from helpers import FIRST_DATA_OFFSET, LEADER_NOOP_OFFSETS, unique_topic

TS_BASE_MS = 1_700_000_000_000


def make_admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)


def make_consumer(bootstrap: str) -> KafkaConsumer:
    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="none", request_timeout_ms=15000,
                         consumer_timeout_ms=10000)


def poll_n(c: KafkaConsumer, n: int, timeout_s: float = 15) -> list:
    out = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        for records in c.poll(timeout_ms=200).values():
            out.extend(records)
    assert len(out) >= n, f"got {len(out)} of {n} records"
    return out


@pytest.fixture
def kadmin(broker):
    a = make_admin(broker.bootstrap)
    yield a
    a.close()


def test_admin_create_and_delete(broker, kadmin):
    name = unique_topic("kp-admin")
    kadmin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])
    deadline = time.monotonic() + 10
    while name not in kadmin.list_topics() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert name in kadmin.list_topics()
    described = kadmin.describe_topics([name])
    assert len(described) == 1 and len(described[0]["partitions"]) == 2, described
    with pytest.raises(TopicAlreadyExistsError):
        kadmin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])
    kadmin.delete_topics([name])
    deadline = time.monotonic() + 10
    while name in kadmin.list_topics() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert name not in kadmin.list_topics()
    with pytest.raises(UnknownTopicOrPartitionError):
        kadmin.delete_topics([name])


def test_produce_gzip_acks_all_then_consume(broker, kadmin):
    """100 gzip records acked at consecutive offsets after the new partition's no-op, read
    back exactly from the beginning; end offset counts the no-op, beginning offset is 0,
    offsets_for_times and seek land on the right records."""
    name = unique_topic("kp-data")
    kadmin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    # kafka-python 3 defaults to an idempotent producer (InitProducerId); Gregor does not
    # implement idempotence yet, so this test asks for a plain producer.
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", compression_type="gzip",
                      linger_ms=10, request_timeout_ms=15000, enable_idempotence=False)
    futures = [p.send(name, key=f"k{i}".encode(), value=(f"value-{i}-" + "z" * i).encode(),
                      headers=[("n", str(i).encode())], partition=0,
                      timestamp_ms=TS_BASE_MS + i * 10)
               for i in range(100)]
    p.flush(15)
    offsets = [f.get(timeout=15).offset for f in futures]
    p.close()
    base = FIRST_DATA_OFFSET
    assert offsets == [base + i for i in range(100)]

    tp = TopicPartition(name, 0)
    c = make_consumer(broker.bootstrap)
    try:
        c.assign([tp])
        c.seek_to_beginning(tp)
        got = poll_n(c, 100)
        assert len(got) == 100
        for i, r in enumerate(got):
            assert (r.offset, r.key, r.timestamp) == \
                (base + i, f"k{i}".encode(), TS_BASE_MS + i * 10)
            assert r.value == (f"value-{i}-" + "z" * i).encode()
            assert list(r.headers) == [("n", str(i).encode())]
        assert c.end_offsets([tp]) == {tp: LEADER_NOOP_OFFSETS + 100}
        assert c.beginning_offsets([tp]) == {tp: 0}
        found = c.offsets_for_times({tp: TS_BASE_MS + 555})  # record 56 is the first at or after
        assert found[tp] is not None and found[tp].offset == base + 56, found
        found = c.offsets_for_times({tp: TS_BASE_MS + 10_000})
        assert found[tp] is None, found
        c.seek(tp, base + 90)
        tail = poll_n(c, 10)
        assert [r.offset for r in tail] == [base + i for i in range(90, 100)]
        assert [r.key for r in tail] == [f"k{i}".encode() for i in range(90, 100)]
    finally:
        c.close()
