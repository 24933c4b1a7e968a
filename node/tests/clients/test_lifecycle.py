"""The process itself: the ready line, SIGTERM exits 0, data survives a restart, and the
log on disk is dense (every offset below the high watermark is in exactly one batch).

Every start elects each partition's leader again, and the new leader appends a no-op (a
one-record control batch) before anything else: a restart costs each partition exactly one
offset, which the raw log shows and clients skip."""

from __future__ import annotations

import pytest
from confluent_kafka import OFFSET_BEGINNING

import rawkafka
from helpers import (FIRST_DATA_OFFSET, consume, create_topic, produce_and_wait, producer,
                     unique_topic)

pytestmark = pytest.mark.gregor_only


def test_sigterm_exits_zero_and_data_survives_restart(broker):
    """SIGTERM exits 0; after a clean restart both partitions hold their 20 records at their
    offsets; after a dirty one (SIGKILL) the next record lands right after the two restarts'
    no-ops; the raw log shows the three no-ops and is dense."""
    topic = unique_topic("life")
    create_topic(broker.bootstrap, topic, partitions=2)
    records = [{"key": f"k{i}".encode(), "value": f"v{i}".encode(), "partition": i % 2}
               for i in range(40)]
    produce_and_wait(producer(broker.bootstrap, acks="all"), topic, records)
    assert broker.terminate() == 0, broker.log_tail()
    broker.start()
    data_offsets = [FIRST_DATA_OFFSET + i for i in range(20)]
    for part in range(2):
        msgs = consume(broker.bootstrap, topic, part, OFFSET_BEGINNING, 20)
        assert [m.value() for m in msgs] == [r["value"] for r in records if r["partition"] == part]
        assert [m.offset() for m in msgs] == data_offsets
    # The reads above needed this start's no-ops committed, so the SIGKILL cannot lose them.
    # Appends continue after the recovered end, on a clean and a dirty restart.
    broker.restart()  # SIGKILL
    more = produce_and_wait(producer(broker.bootstrap, acks="all"), topic,
                            [{"value": b"after", "partition": 0}])
    # One no-op per partition per restart: the clean one's, then the dirty one's.
    noops = [FIRST_DATA_OFFSET + 20, FIRST_DATA_OFFSET + 21]
    assert more[0].offset == noops[-1] + 1
    msgs = consume(broker.bootstrap, topic, 0, OFFSET_BEGINNING, 21)
    assert [m.offset() for m in msgs] == data_offsets + [more[0].offset]
    assert msgs[-1].value() == b"after"
    for part, data_end in ((0, more[0].offset + 1), (1, noops[-1] + 1)):
        batches, hw = rawkafka.walk_partition("127.0.0.1", broker.port, topic, part)
        assert rawkafka.dense_problems(batches, 0, hw) == [], f"partition {part}"
        assert hw == data_end, f"partition {part}"
        assert rawkafka.control_offsets(batches) == [(0, 1)] + [(o, 1) for o in noops], \
            f"partition {part}"
    assert broker.terminate() == 0, broker.log_tail()


def test_raw_log_is_dense_with_valid_crcs(broker):
    """500 records, a SIGKILL restart, 10 more: the raw log is the creation no-op, the 500,
    the restart's no-op, the 10, with no hole or overlap and every CRC valid."""
    topic = unique_topic("dense")
    create_topic(broker.bootstrap, topic)
    p = producer(broker.bootstrap, acks="all", compression_type="lz4", linger_ms=2)
    before = produce_and_wait(p, topic, [{"value": f"r{i}".encode() * 10, "partition": 0}
                                         for i in range(500)])
    assert [d.offset for d in before] == [FIRST_DATA_OFFSET + i for i in range(500)]
    broker.restart()
    after = produce_and_wait(producer(broker.bootstrap, acks="1"), topic,
                             [{"value": b"post-restart", "partition": 0}] * 10)
    restart_noop = FIRST_DATA_OFFSET + 500
    assert [d.offset for d in after] == [restart_noop + 1 + i for i in range(10)]
    batches, hw = rawkafka.walk_partition("127.0.0.1", broker.port, topic, 0)
    assert rawkafka.dense_problems(batches, 0, hw) == []
    data_records = sum(b.record_count for b in batches if not b.is_control)
    assert data_records == 510
    assert rawkafka.control_offsets(batches) == [(0, 1), (restart_noop, 1)]
    assert hw == after[-1].offset + 1
