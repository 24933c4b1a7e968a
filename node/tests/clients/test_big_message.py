"""Records near and over message.max.bytes: the broker, not the client, draws the line.

The client's own message.max.bytes is raised well above the broker's, so librdkafka sends
the oversized batch and the broker must answer MESSAGE_TOO_LARGE (and store nothing)."""

from __future__ import annotations

from confluent_kafka import OFFSET_BEGINNING, KafkaError

from helpers import (FIRST_DATA_OFFSET, consume, create_topic, produce_and_wait, producer,
                     unique_topic)

BROKER_MESSAGE_MAX_BYTES = 1_048_588  # Kafka's default, Gregor's default
BATCH_OVERHEAD_BYTES = 61 + 30  # v2 batch header + one record's framing, rounded up
CLIENT_MAX_BYTES = 8 * 1024 * 1024


def big_producer(bootstrap: str):
    return producer(bootstrap, acks="all", message_max_bytes=CLIENT_MAX_BYTES,
                    batch_size=CLIENT_MAX_BYTES, linger_ms=0, compression_type="none",
                    message_send_max_retries=0)


def send_one(p, topic: str, value: bytes):
    reports = []
    p.produce(topic, value=value, key=b"big", partition=0,
              on_delivery=lambda err, msg: reports.append((err, msg)))
    assert p.flush(30) == 0
    assert len(reports) == 1
    return reports[0]


def test_record_just_under_the_limit_round_trips(broker):
    topic = unique_topic("big-ok")
    create_topic(broker.bootstrap, topic)
    value = bytes(range(256)) * ((BROKER_MESSAGE_MAX_BYTES - BATCH_OVERHEAD_BYTES - 16) // 256)
    assert len(value) > 1_000_000
    p = big_producer(broker.bootstrap)
    err, msg = send_one(p, topic, value)
    assert err is None, err
    assert msg.offset() == FIRST_DATA_OFFSET  # the first after the new partition's no-op
    got = consume(broker.bootstrap, topic, 0, OFFSET_BEGINNING, 1, timeout_s=20,
                  fetch_message_max_bytes=CLIENT_MAX_BYTES)
    assert got[0].value() == value


def test_record_over_the_limit_is_message_too_large(broker):
    topic = unique_topic("big-no")
    create_topic(broker.bootstrap, topic)
    p = big_producer(broker.bootstrap)
    err, _ = send_one(p, topic, b"y" * (BROKER_MESSAGE_MAX_BYTES + 1000))
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err
    # Nothing was stored, and the partition still takes normal records at its first data
    # offset (right after the no-op).
    delivered = produce_and_wait(producer(broker.bootstrap), topic, [{"value": b"ok", "partition": 0}])
    assert delivered[0].offset == FIRST_DATA_OFFSET


def test_topic_max_message_bytes_override(broker):
    topic = unique_topic("big-topic")
    create_topic(broker.bootstrap, topic, config={"max.message.bytes": "20000"})
    p = big_producer(broker.bootstrap)
    err, msg = send_one(p, topic, b"s" * 15_000)
    assert err is None and msg.offset() == FIRST_DATA_OFFSET, err
    err, _ = send_one(p, topic, b"s" * 25_000)
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err
