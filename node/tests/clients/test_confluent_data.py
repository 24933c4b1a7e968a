"""confluent-kafka (librdkafka): produce with every compression and acks setting, consume
with assign() and check every field exactly, seek, offsets_for_times, watermarks.

Every topic here is new, so offset 0 of each partition is the leader's no-op (a control
batch the client skips) and data starts at FIRST_DATA_OFFSET; one producer's records to one
partition take consecutive offsets from there (no leader change, so no further no-op)."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import (OFFSET_BEGINNING, TIMESTAMP_CREATE_TIME, KafkaError, TopicPartition)

import rawkafka
from helpers import (FIRST_DATA_OFFSET, LEADER_NOOP_OFFSETS, consume, consumer, create_topic,
                     produce_and_wait, producer, unique_topic, watermarks)

COMPRESSIONS = ["none", "gzip", "snappy", "lz4", "zstd"]
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
TS_BASE_MS = 1_700_000_000_000


def make_records(n: int, ts_base: int = TS_BASE_MS, step_ms: int = 1000) -> list[dict]:
    """Records that exercise every field: keys (some null), values (one null, some large and
    compressible), headers (repeated keys, a null value, none at all), explicit timestamps."""
    records = []
    for i in range(n):
        rec = {
            "key": None if i % 7 == 3 else f"key-{i}".encode(),
            "value": None if i == n - 2 else (f"value-{i}-" + "abcdefgh" * (i % 5 * 40)).encode(),
            "timestamp": ts_base + i * step_ms,
        }
        if i % 3 == 0:
            rec["headers"] = [("h", f"one-{i}".encode()), ("h", b"two"), ("nullable", None)]
        elif i % 3 == 1:
            rec["headers"] = [("only", bytes([i % 256]) * 3)]
        records.append(rec)
    return records


def check_exact(msgs, records, first_offset: int = FIRST_DATA_OFFSET, partition: int = 0):
    assert len(msgs) == len(records)
    for i, (m, rec) in enumerate(zip(msgs, records)):
        where = f"record {i} (offset {m.offset()})"
        assert m.partition() == partition, where
        assert m.offset() == first_offset + i, where
        assert m.key() == rec.get("key"), where
        assert m.value() == rec.get("value"), where
        assert m.timestamp() == (TIMESTAMP_CREATE_TIME, rec["timestamp"]), where
        want_headers = rec.get("headers")
        got_headers = m.headers()
        if want_headers is None:
            assert not got_headers, f"{where}: unexpected headers {got_headers}"
        else:
            assert got_headers == want_headers, where


@pytest.mark.parametrize("acks", ["1", "all"])
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_produce_consume_exact(broker, compression, acks):
    """60 records acknowledged at consecutive offsets after the no-op, read back from the
    beginning field by field; the raw log is the no-op then the producer's batches, dense,
    in the producer's codec."""
    topic = unique_topic(f"c-{compression}-{acks}")
    create_topic(broker.bootstrap, topic)
    records = make_records(60)
    p = producer(broker.bootstrap, acks=acks, compression_type=compression, linger_ms=20,
                 batch_num_messages=25)
    delivered = produce_and_wait(p, topic, [dict(r, partition=0) for r in records])
    assert [d.offset for d in delivered] == [FIRST_DATA_OFFSET + i for i in range(60)], \
        "acknowledged offsets not consecutive from the first data offset"
    msgs = consume(broker.bootstrap, topic, 0, OFFSET_BEGINNING, len(records))
    check_exact(msgs, records)
    # The broker keeps the producer's batches as sent: same codec, offsets dense, and the
    # only control batch is the no-op at offset 0.
    batches, hw = rawkafka.walk_partition("127.0.0.1", broker.port, topic, 0)
    assert rawkafka.dense_problems(batches, 0, hw) == []
    assert hw == FIRST_DATA_OFFSET + 60
    assert rawkafka.control_offsets(batches) == [(0, 1)] * LEADER_NOOP_OFFSETS
    codecs = {b.attributes & 0x7 for b in batches if not b.is_control}
    assert CODEC_IDS[compression] in codecs, f"stored codecs {codecs}, produced {compression}"


def test_acks_zero_fire_and_forget_then_read(broker):
    """acks=0 records all arrive, in order, at consecutive offsets after the no-op."""
    topic = unique_topic("c-acks0")
    create_topic(broker.bootstrap, topic)
    p = producer(broker.bootstrap, acks="0", linger_ms=1)
    values = [f"fire-{i}".encode() for i in range(40)]
    for v in values:
        p.produce(topic, value=v, partition=0)
    assert p.flush(10) == 0
    # acks=0 gets no answer: the records become visible whenever the broker wrote them.
    msgs = consume(broker.bootstrap, topic, 0, OFFSET_BEGINNING, len(values), timeout_s=20)
    assert [m.value() for m in msgs] == values
    assert [m.offset() for m in msgs] == [FIRST_DATA_OFFSET + i for i in range(len(values))]


def test_many_batches_many_partitions(broker):
    """1200 records interleaved over 4 partitions in small batches: each partition has its
    own no-op at 0 and its 300 records at consecutive offsets after it, in send order."""
    topic = unique_topic("c-parts")
    create_topic(broker.bootstrap, topic, partitions=4)
    p = producer(broker.bootstrap, acks="all", linger_ms=0, batch_num_messages=7)
    per_part = {part: [{"value": f"{part}:{i}".encode(), "partition": part,
                        "timestamp": TS_BASE_MS + i} for i in range(300)] for part in range(4)}
    interleaved = [per_part[i % 4][i // 4] for i in range(1200)]
    delivered = produce_and_wait(p, topic, interleaved)
    for part in range(4):
        offs = [d.offset for d in delivered if d.partition == part]
        want = [FIRST_DATA_OFFSET + i for i in range(300)]
        assert offs == want, f"partition {part}: offsets {offs[:10]}..."
        msgs = consume(broker.bootstrap, topic, part, OFFSET_BEGINNING, 300)
        assert [m.value() for m in msgs] == [r["value"] for r in per_part[part]]
        assert [m.offset() for m in msgs] == want


@pytest.mark.gregor_only
def test_many_batches_many_partitions_on_three_network_threads(broker_factory):
    """The same with `num.network.threads = 3`: connections and the driver on a
    multi-threaded runtime instead of the default single thread."""
    test_many_batches_many_partitions(broker_factory(config={"num.network.threads": 3}))


def test_assign_and_seek_to_middle(broker):
    """Record i is at FIRST_DATA_OFFSET + i: reading from the middle of the log, from offset 0
    (the no-op, which the client skips) and after a seek returns exactly the records there."""
    topic = unique_topic("c-seek")
    create_topic(broker.bootstrap, topic)
    records = [{"value": f"v{i}".encode(), "partition": 0, "timestamp": TS_BASE_MS + i}
               for i in range(100)]
    p = producer(broker.bootstrap, acks="all")
    # Several produce requests so that offsets fall inside and at the edges of batches.
    for chunk in range(0, 100, 13):
        produce_and_wait(p, topic, records[chunk:chunk + 13])

    base = FIRST_DATA_OFFSET
    msgs = consume(broker.bootstrap, topic, 0, base + 42, 58)
    assert [m.offset() for m in msgs] == list(range(base + 42, base + 100))
    assert [m.value() for m in msgs] == [r["value"] for r in records[42:]]

    c = consumer(broker.bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        first = []
        deadline = time.monotonic() + 15
        while len(first) < 5 and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                first.append(m.offset())
        assert first == [base + i for i in range(5)]
        c.seek(TopicPartition(topic, 0, base + 77))
        after = None
        deadline = time.monotonic() + 15
        while after is None and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                after = m
        assert after is not None, "nothing after seek"
        assert (after.offset(), after.value()) == (base + 77, b"v77")
    finally:
        c.close()


def test_offsets_for_times(broker):
    """ListOffsets by timestamp finds the first data record at or after it. The no-op at
    offset 0 carries the broker's wall-clock time, later than every record here; lookups
    skip control batches, so it neither answers the early queries nor the late one."""
    topic = unique_topic("c-oft")
    create_topic(broker.bootstrap, topic)
    records = [{"value": f"v{i}".encode(), "partition": 0, "timestamp": TS_BASE_MS + i * 1000}
               for i in range(50)]
    p = producer(broker.bootstrap, acks="all", linger_ms=50)
    produce_and_wait(p, topic, records[:30])  # likely one batch: lookups inside a batch
    produce_and_wait(p, topic, records[30:])
    c = consumer(broker.bootstrap)
    try:
        queries = {  # timestamp -> index of the record found
            TS_BASE_MS - 5000: 0,  # before everything: the first record
            TS_BASE_MS: 0,
            TS_BASE_MS + 5500: 6,  # between two records of one batch: the later one
            TS_BASE_MS + 29_000: 29,
            TS_BASE_MS + 29_001: 30,  # across a batch boundary
            TS_BASE_MS + 49_000: 49,
        }
        for ts, index in queries.items():
            want = FIRST_DATA_OFFSET + index
            got = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)
            assert got[0].error is None, got[0].error
            assert got[0].offset == want, f"offsets_for_times({ts - TS_BASE_MS:+}) = {got[0].offset}"
        # After the newest timestamp there is no such record: Kafka answers -1.
        got = c.offsets_for_times([TopicPartition(topic, 0, TS_BASE_MS + 60_000)], timeout=10)
        assert got[0].offset == -1, got[0]
    finally:
        c.close()


def test_watermarks(broker):
    """Low watermark 0; the high watermark counts the no-op: (0, 1) for a new partition
    (once the no-op commits), (0, 1 + 17) after 17 records, and producing to one partition
    leaves the other alone."""
    topic = unique_topic("c-wm")
    create_topic(broker.bootstrap, topic, partitions=2)
    c = consumer(broker.bootstrap)
    try:
        empty = (0, LEADER_NOOP_OFFSETS)
        assert watermarks(c, topic, 0) == empty
        p = producer(broker.bootstrap, acks="all")
        produce_and_wait(p, topic, [{"value": b"x", "partition": 1}] * 17)
        assert watermarks(c, topic, 0) == empty
        assert watermarks(c, topic, 1) == (0, LEADER_NOOP_OFFSETS + 17)
    finally:
        c.close()


def test_consume_past_end_is_offset_out_of_range(broker):
    topic = unique_topic("c-oor")
    create_topic(broker.bootstrap, topic)
    produce_and_wait(producer(broker.bootstrap), topic, [{"value": b"x", "partition": 0}] * 3)
    c = consumer(broker.bootstrap)  # auto.offset.reset=error: the error reaches us
    try:
        c.assign([TopicPartition(topic, 0, 1000)])
        deadline = time.monotonic() + 15
        err = None
        while err is None and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error() and m.error().code() != KafkaError._PARTITION_EOF:
                err = m.error()
            elif m is not None and not m.error():
                raise AssertionError(f"got a message at {m.offset()} past the end")
        assert err is not None, "no error for an offset past the end"
        assert err.code() in (KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET), err
    finally:
        c.close()
