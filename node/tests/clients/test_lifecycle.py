"""The process itself: the ready line, SIGTERM exits 0, data survives a restart, and the
log on disk is dense (every offset below the high watermark is in exactly one batch)."""

from __future__ import annotations

import pytest
from confluent_kafka import OFFSET_BEGINNING

import rawkafka
from helpers import consume, create_topic, produce_and_wait, producer, unique_topic

pytestmark = pytest.mark.gregor_only


def test_sigterm_exits_zero_and_data_survives_restart(broker):
    topic = unique_topic("life")
    create_topic(broker.bootstrap, topic, partitions=2)
    records = [{"key": f"k{i}".encode(), "value": f"v{i}".encode(), "partition": i % 2}
               for i in range(40)]
    produce_and_wait(producer(broker.bootstrap, acks="all"), topic, records)
    assert broker.terminate() == 0, broker.log_tail()
    broker.start()
    for part in range(2):
        msgs = consume(broker.bootstrap, topic, part, OFFSET_BEGINNING, 20)
        assert [m.value() for m in msgs] == [r["value"] for r in records if r["partition"] == part]
    # Appends continue after the recovered end, on a clean and a dirty restart.
    broker.restart()  # SIGKILL
    more = produce_and_wait(producer(broker.bootstrap, acks="all"), topic,
                            [{"value": b"after", "partition": 0}])
    assert more[0].offset >= 20
    msgs = consume(broker.bootstrap, topic, 0, OFFSET_BEGINNING, 21)
    assert msgs[-1].value() == b"after" and msgs[-1].offset() == more[0].offset
    assert broker.terminate() == 0, broker.log_tail()


def test_raw_log_is_dense_with_valid_crcs(broker):
    topic = unique_topic("dense")
    create_topic(broker.bootstrap, topic)
    p = producer(broker.bootstrap, acks="all", compression_type="lz4", linger_ms=2)
    produce_and_wait(p, topic, [{"value": f"r{i}".encode() * 10, "partition": 0} for i in range(500)])
    broker.restart()
    produce_and_wait(producer(broker.bootstrap, acks="1"), topic,
                     [{"value": b"post-restart", "partition": 0}] * 10)
    batches, hw = rawkafka.walk_partition("127.0.0.1", broker.port, topic, 0)
    assert rawkafka.dense_problems(batches, 0, hw) == []
    data_records = sum(b.record_count for b in batches if not b.is_control)
    assert data_records == 510
    assert hw >= 510
