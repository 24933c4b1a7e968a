"""aiokafka (asyncio): send_and_wait, assign + seek, getmany.

Each topic is new: offset 0 is the leader's no-op (skipped by the client), and record i
of the producer's run is at FIRST_DATA_OFFSET + i."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from helpers import FIRST_DATA_OFFSET, create_topic, unique_topic

TS_BASE_MS = 1_700_000_000_000


async def produce(bootstrap: str, topic: str, n: int, compression: str | None) -> list[int]:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type=compression,
                         request_timeout_ms=15000)
    await p.start()
    try:
        offsets = []
        for i in range(n):
            md = await p.send_and_wait(topic, value=f"a{i}".encode(), key=f"k{i}".encode(),
                                       partition=0, timestamp_ms=TS_BASE_MS + i,
                                       headers=[("i", str(i).encode())])
            assert md.partition == 0
            offsets.append(md.offset)
        # A burst of un-awaited sends goes out batched.
        futs = [await p.send(topic, value=f"a{i}".encode(), key=f"k{i}".encode(), partition=0,
                             timestamp_ms=TS_BASE_MS + i, headers=[("i", str(i).encode())])
                for i in range(n, 2 * n)]
        offsets += [(await f).offset for f in futs]
        return offsets
    finally:
        await p.stop()


async def consume(bootstrap: str, topic: str, start: int, count: int, timeout_s: float = 15):
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="none", request_timeout_ms=15000)
    await c.start()
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek(tp, start)
        got = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count and time.monotonic() < deadline:
            batch = await c.getmany(tp, timeout_ms=300, max_records=50)
            got += batch.get(tp, [])
        return got
    finally:
        await c.stop()


def run(coro, timeout_s: float = 45):
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


def check(records, first_index: int, n_total: int):
    """`records` are exactly records first_index..n_total-1 of the run, each at its offset."""
    assert [r.offset for r in records] == \
        [FIRST_DATA_OFFSET + i for i in range(first_index, n_total)]
    for r in records:
        i = r.offset - FIRST_DATA_OFFSET
        assert (r.key, r.value, r.timestamp) == (f"k{i}".encode(), f"a{i}".encode(), TS_BASE_MS + i)
        assert list(r.headers) == [("i", str(i).encode())]


def test_aiokafka_produce_seek_getmany(broker):
    """80 records acked at consecutive offsets after the no-op; reading from offset 0 (the
    no-op) returns all of them, reading from record 33's offset the rest."""
    topic = unique_topic("aio")
    create_topic(broker.bootstrap, topic)
    offsets = run(produce(broker.bootstrap, topic, 40, None))
    assert offsets == [FIRST_DATA_OFFSET + i for i in range(80)]
    check(run(consume(broker.bootstrap, topic, 0, 80)), 0, 80)
    check(run(consume(broker.bootstrap, topic, FIRST_DATA_OFFSET + 33, 47)), 33, 80)


def test_aiokafka_compressed(broker):
    """The same with gzip: offsets consecutive after the no-op, a read from record 17."""
    topic = unique_topic("aio-gz")
    create_topic(broker.bootstrap, topic)
    offsets = run(produce(broker.bootstrap, topic, 20, "gzip"))
    assert offsets == [FIRST_DATA_OFFSET + i for i in range(40)]
    check(run(consume(broker.bootstrap, topic, FIRST_DATA_OFFSET + 17, 23)), 17, 40)
