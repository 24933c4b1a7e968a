"""confluent-kafka AdminClient: create/delete topics and partitions, describe configs and
the cluster, auto topic creation on and off, CLI flags that show in metadata."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError
from confluent_kafka.admin import ConfigResource, ConfigSource, NewPartitions, NewTopic, ResourceType

from helpers import (FIRST_DATA_OFFSET, admin, consume, create_topic, kafka_error_code,
                     produce_and_wait, producer, topic_exists, unique_topic, wait_for_topic)

DEFAULT_MESSAGE_MAX_BYTES = "1048588"
DEFAULT_RETENTION_MS = str(7 * 24 * 3600 * 1000)


def create_error(bootstrap: str, new_topic: NewTopic, validate_only: bool = False) -> int:
    futures = admin(bootstrap).create_topics([new_topic], validate_only=validate_only,
                                             operation_timeout=10)
    return kafka_error_code(futures[new_topic.topic])


def test_create_topic_and_its_errors(broker):
    b = broker.bootstrap
    name = unique_topic("adm-create")
    assert create_error(b, NewTopic(name, num_partitions=2, replication_factor=1)) == 0
    wait_for_topic(b, name, 2)
    assert create_error(b, NewTopic(name, num_partitions=2, replication_factor=1)) == \
        KafkaError.TOPIC_ALREADY_EXISTS
    # -1 partitions means the broker's num.partitions (1 by default).
    dflt = unique_topic("adm-default")
    assert create_error(b, NewTopic(dflt, num_partitions=-1, replication_factor=-1)) == 0
    wait_for_topic(b, dflt, 1)

    for bad in ["has space", "x" * 250, "..", "slash/name", ""]:
        assert create_error(b, NewTopic(bad, num_partitions=1, replication_factor=1)) == \
            KafkaError.TOPIC_EXCEPTION, f"topic name {bad!r}"
    refused = [unique_topic("adm-0p"), unique_topic("adm-rf")]
    assert create_error(b, NewTopic(refused[0], num_partitions=0,
                                    replication_factor=1)) == KafkaError.INVALID_PARTITIONS
    assert create_error(b, NewTopic(refused[1], num_partitions=1,
                                    replication_factor=3)) == KafkaError.INVALID_REPLICATION_FACTOR
    for config in [{"segment.bytes": "not-a-number"}, {"no.such.config": "1"},
                   {"cleanup.policy": "sideways"}]:
        refused.append(unique_topic("adm-cfg"))
        assert create_error(b, NewTopic(refused[-1], num_partitions=1,
                                        replication_factor=1, config=config)) == \
            KafkaError.INVALID_CONFIG, f"config {config}"
    assert topic_exists(b, name) and topic_exists(b, dflt)
    assert [t for t in refused if topic_exists(b, t)] == []


def test_list_all_topics(broker):
    b = broker.bootstrap
    made = {unique_topic("adm-list"): n for n in (1, 2, 5)}
    for name, n in made.items():
        create_topic(b, name, partitions=n)
    md = admin(b).list_topics(timeout=10)  # Metadata with topics = null: every topic
    listed = {name: len(t.partitions) for name, t in md.topics.items() if name in made}
    assert listed == made
    assert {i: (m.host, m.port) for i, m in md.brokers.items()} == {1: ("127.0.0.1", broker.port)}


def test_create_topic_validate_only(broker):
    b = broker.bootstrap
    name = unique_topic("adm-validate")
    assert create_error(b, NewTopic(name, num_partitions=3, replication_factor=1),
                        validate_only=True) == 0
    time.sleep(0.5)
    assert not topic_exists(b, name)
    assert broker.partition_dirs(name) == []
    assert create_error(b, NewTopic(name, num_partitions=0, replication_factor=1),
                        validate_only=True) == KafkaError.INVALID_PARTITIONS
    assert create_error(b, NewTopic(name, num_partitions=1, replication_factor=1,
                                    config={"segment.bytes": "x"}),
                        validate_only=True) == KafkaError.INVALID_CONFIG
    # Validation only: the real create still works afterwards.
    create_topic(b, name, partitions=3)


@pytest.mark.gregor_only
def test_delete_topic_removes_its_directories(broker):
    """DeleteTopics removes every partition directory; deleting again is UNKNOWN_TOPIC_OR_PART;
    a topic re-created under the name starts afresh (its no-op, then the first record)."""
    b = broker.bootstrap
    name = unique_topic("adm-del")
    create_topic(b, name, partitions=3)
    produce_and_wait(producer(b, acks="all"), name,
                     [{"value": b"data", "partition": i % 3} for i in range(30)])
    dirs = broker.partition_dirs(name)
    assert [d.name for d in dirs] == [f"{name}-{p}" for p in range(3)], dirs
    futures = admin(b).delete_topics([name], operation_timeout=10)
    assert kafka_error_code(futures[name]) == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (topic_exists(b, name) or broker.partition_dirs(name)):
        time.sleep(0.1)
    assert not topic_exists(b, name)
    assert broker.partition_dirs(name) == []
    # Gone for good: deleting again is an unknown topic.
    futures = admin(b).delete_topics([name], operation_timeout=10)
    assert kafka_error_code(futures[name]) == KafkaError.UNKNOWN_TOPIC_OR_PART
    # The name can be reused, and the new topic starts empty: its first record lands right
    # after the new partition's no-op, as in any new topic.
    create_topic(b, name, partitions=1)
    delivered = produce_and_wait(producer(b, acks="all"), name, [{"value": b"new", "partition": 0}])
    assert delivered[0].offset == FIRST_DATA_OFFSET
    msgs = consume(b, name, 0, OFFSET_BEGINNING, 1)
    assert msgs[0].value() == b"new"


def test_create_partitions_then_produce_to_new_one(broker):
    """CreatePartitions 1 -> 3: the new partition takes records after its own no-op, the old
    one keeps its data, the count cannot shrink, an unknown topic is UNKNOWN_TOPIC_OR_PART."""
    b = broker.bootstrap
    name = unique_topic("adm-parts")
    create_topic(b, name, partitions=1)
    produce_and_wait(producer(b), name, [{"value": b"p0", "partition": 0}] * 5)
    futures = admin(b).create_partitions([NewPartitions(name, 3)], operation_timeout=10)
    assert kafka_error_code(futures[name]) == 0
    wait_for_topic(b, name, 3)
    delivered = produce_and_wait(producer(b, acks="all"), name,
                                 [{"value": f"new-{i}".encode(), "partition": 2} for i in range(4)])
    # The new partition is new like a new topic's: its no-op first, then the records.
    assert [(d.partition, d.offset) for d in delivered] == \
        [(2, FIRST_DATA_OFFSET + i) for i in range(4)]
    msgs = consume(b, name, 2, OFFSET_BEGINNING, 4)
    assert [m.value() for m in msgs] == [f"new-{i}".encode() for i in range(4)]
    # Partition 0 kept its data, at its offsets.
    kept = consume(b, name, 0, OFFSET_BEGINNING, 5)
    assert [m.offset() for m in kept] == [FIRST_DATA_OFFSET + i for i in range(5)]
    # The count can only grow.
    for count in (3, 2):
        futures = admin(b).create_partitions([NewPartitions(name, count)], operation_timeout=10)
        assert kafka_error_code(futures[name]) == KafkaError.INVALID_PARTITIONS, count
    futures = admin(b).create_partitions([NewPartitions(unique_topic("nope"), 2)])
    assert kafka_error_code(next(iter(futures.values()))) == KafkaError.UNKNOWN_TOPIC_OR_PART


def describe(bootstrap: str, rtype: ResourceType, name: str) -> dict:
    futures = admin(bootstrap).describe_configs([ConfigResource(rtype, name)])
    return next(iter(futures.values())).result(timeout=15)


def test_describe_topic_configs(broker):
    b = broker.bootstrap
    name = unique_topic("adm-cfg")
    create_topic(b, name, config={"segment.bytes": "1048576", "retention.ms": "3600000"})
    entries = describe(b, ResourceType.TOPIC, name)
    seg = entries["segment.bytes"]
    assert (seg.value, seg.source) == ("1048576", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
    assert not seg.is_default
    ret = entries["retention.ms"]
    assert (ret.value, ret.source) == ("3600000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
    mmb = entries["max.message.bytes"]
    assert (mmb.value, mmb.source) == (DEFAULT_MESSAGE_MAX_BYTES, ConfigSource.DEFAULT_CONFIG.value)
    assert mmb.is_default
    assert entries["cleanup.policy"].value == "delete"

    other = unique_topic("adm-cfg-dflt")
    create_topic(b, other)
    entries = describe(b, ResourceType.TOPIC, other)
    seg = entries["segment.bytes"]
    assert (seg.value, seg.source) == (str(1024 ** 3), ConfigSource.DEFAULT_CONFIG.value)
    assert entries["retention.ms"].value == DEFAULT_RETENTION_MS

    futures = admin(b).describe_configs([ConfigResource(ResourceType.TOPIC, unique_topic("no"))])
    assert kafka_error_code(next(iter(futures.values()))) == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_describe_broker_configs(broker):
    entries = describe(broker.bootstrap, ResourceType.BROKER, "1")
    assert entries["num.partitions"].value == "1"
    assert entries["message.max.bytes"].value == DEFAULT_MESSAGE_MAX_BYTES
    assert entries["auto.create.topics.enable"].value == "true"
    assert entries["num.partitions"].source == ConfigSource.DEFAULT_CONFIG.value


@pytest.mark.gregor_only
def test_broker_config_file_is_static_broker_config(broker_factory):
    broker = broker_factory(config={"num.partitions": 3, "log.segment.bytes": 4 * 1024 * 1024})
    entries = describe(broker.bootstrap, ResourceType.BROKER, "1")
    assert (entries["num.partitions"].value, entries["num.partitions"].source) == \
        ("3", ConfigSource.STATIC_BROKER_CONFIG.value)
    name = unique_topic("adm-static")
    # num.partitions from the file applies to a CreateTopics that asks for -1 partitions.
    assert create_error(broker.bootstrap, NewTopic(name, num_partitions=-1,
                                                   replication_factor=-1)) == 0
    wait_for_topic(broker.bootstrap, name, 3)
    seg = describe(broker.bootstrap, ResourceType.TOPIC, name)["segment.bytes"]
    assert (seg.value, seg.source) == (str(4 * 1024 * 1024), ConfigSource.STATIC_BROKER_CONFIG.value)


def test_describe_cluster(broker):
    result = admin(broker.bootstrap).describe_cluster(request_timeout=10).result(timeout=15)
    assert result.cluster_id, "empty cluster id"
    assert [(n.id, n.host, n.port) for n in result.nodes] == [(1, "127.0.0.1", broker.port)]
    assert result.controller is not None and result.controller.id == 1


@pytest.mark.gregor_only
def test_node_id_and_advertised_listener_flags(broker_factory):
    from broker import free_port
    port = free_port()
    broker = broker_factory(port=port, extra_args=["--node-id", "7", "--advertised-listener",
                                                   f"localhost:{port}"])
    name = unique_topic("adm-node7")
    create_topic(broker.bootstrap, name)
    md = admin(broker.bootstrap).list_topics(topic=name, timeout=10)
    assert {i: (m.host, m.port) for i, m in md.brokers.items()} == {7: ("localhost", port)}
    assert md.controller_id == 7
    assert md.topics[name].partitions[0].leader == 7


@pytest.mark.gregor_only
def test_auto_create_uses_num_partitions(broker_factory):
    broker = broker_factory(config={"num.partitions": 3})
    name = unique_topic("auto")
    assert not topic_exists(broker.bootstrap, name)
    delivered = produce_and_wait(producer(broker.bootstrap, acks="all"), name,
                                 [{"key": f"k{i}".encode(), "value": b"v"} for i in range(30)])
    assert all(d.offset >= 0 for d in delivered)
    t = wait_for_topic(broker.bootstrap, name, 3)
    assert sorted(t.partitions) == [0, 1, 2]


@pytest.mark.gregor_only
def test_auto_create_disabled(broker_factory):
    broker = broker_factory(config={"auto.create.topics.enable": False})
    name = unique_topic("noauto")
    p = producer(broker.bootstrap, topic_metadata_propagation_max_ms=1000,
                 message_timeout_ms=8000)
    errors = []
    p.produce(name, value=b"v", on_delivery=lambda err, msg: errors.append(err))
    p.flush(15)
    assert len(errors) == 1 and errors[0] is not None, errors
    assert errors[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC), errors
    md = admin(broker.bootstrap).list_topics(topic=name, timeout=10)
    assert md.topics[name].error is not None
    assert md.topics[name].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert not topic_exists(broker.bootstrap, name)
    # Explicit creation still works.
    create_topic(broker.bootstrap, name)
