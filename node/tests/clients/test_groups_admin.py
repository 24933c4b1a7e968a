"""Consumer-group administration with real clients: confluent-kafka's AdminClient and
kafka-python's KafkaAdminClient list, describe and delete groups, and list, alter and
delete committed offsets, with Kafka's error codes for what may not be done (deleting a
non-empty or unknown group, altering the offsets of a group with members, deleting the
offsets of a topic a member is subscribed to, ...).

Every topic is new, so partition p's record i is at FIRST_DATA_OFFSET + i."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import (OFFSET_INVALID, ConsumerGroupState, ConsumerGroupTopicPartitions,
                             KafkaError, TopicPartition)
from kafka import KafkaAdminClient
from kafka import TopicPartition as KTopicPartition
from kafka.admin import MemberToRemove
from kafka.errors import (GroupIdNotFoundError, GroupSubscribedToTopicError, NoError,
                          OffsetMetadataTooLargeError, UnknownMemberIdError)
from kafka.structs import OffsetAndMetadata

from group_helpers import (COORDINATOR_LOAD_IN_PROGRESS, GROUP_BROKER_CONFIG, WAIT_S, Member,
                           RawConn, by_partition, check_description, describe, restart_broker,
                           wait_coordinator_ready, wait_split, wait_until)
from helpers import (FIRST_DATA_OFFSET, admin, create_topic, kafka_error_code, produce_and_wait,
                     producer, unique_topic)

F = FIRST_DATA_OFFSET


@pytest.fixture
def gbroker(broker_factory):
    return broker_factory(config=GROUP_BROKER_CONFIG)


@pytest.fixture
def kadmin(gbroker):
    a = KafkaAdminClient(bootstrap_servers=gbroker.bootstrap, request_timeout_ms=15000)
    yield a
    a.close()


def fill(bootstrap: str, topic: str, partitions: int, per_partition: int) -> None:
    produce_and_wait(producer(bootstrap, acks="all"), topic,
                     [{"value": f"v-{p}-{i}".encode(), "partition": p}
                      for i in range(per_partition) for p in range(partitions)])


def consume_all(m: Member, n: int) -> None:
    wait_until(lambda: len(m.consumed()) >= n, f"{m.name} to consume {n} records")
    assert m.errors == []


def list_groups_once(bootstrap: str, states=None):
    kw = {"states": set(states)} if states else {}
    return admin(bootstrap).list_consumer_groups(request_timeout=WAIT_S, **kw).result(
        timeout=WAIT_S)


def listed(bootstrap: str, states=None) -> dict:
    """{group id: (state, is_simple_consumer_group)} from ListGroups, asked again while the
    broker says COORDINATOR_LOAD_IN_PROGRESS (as Kafka's own admin client does; librdkafka
    hands that error to the application)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        result = list_groups_once(bootstrap, states)
        codes = {e.code() for e in result.errors}
        if codes != {KafkaError.COORDINATOR_LOAD_IN_PROGRESS} or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert result.errors == []
    return {g.group_id: (g.state, g.is_simple_consumer_group) for g in result.valid}


def list_offsets(bootstrap: str, group: str, partitions: list[tuple[str, int]] | None = None):
    """{(topic, partition): (offset, metadata)} of OffsetFetch, through the AdminClient."""
    tps = None if partitions is None else [TopicPartition(t, p) for t, p in partitions]
    req = ConsumerGroupTopicPartitions(group, tps)
    got = admin(bootstrap).list_consumer_group_offsets([req])[group].result(timeout=WAIT_S)
    assert got.group_id == group
    assert all(tp.error is None for tp in got.topic_partitions), got.topic_partitions
    return {(tp.topic, tp.partition): (tp.offset, tp.metadata) for tp in got.topic_partitions}


def alter_offsets(bootstrap: str, group: str, offsets: dict) -> dict:
    """AlterConsumerGroupOffsets (an OffsetCommit with no member): {(topic, partition):
    error code}, NO_ERROR where it was stored."""
    tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
    got = admin(bootstrap).alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, tps)])[group].result(timeout=WAIT_S)
    return {(tp.topic, tp.partition): tp.error.code() if tp.error else KafkaError.NO_ERROR
            for tp in got.topic_partitions}


def delete_group_error(bootstrap: str, group: str) -> int:
    return kafka_error_code(admin(bootstrap).delete_consumer_groups(
        [group], request_timeout=WAIT_S)[group])


# -- confluent-kafka AdminClient ------------------------------------------------------------


def test_confluent_list_and_describe_groups(gbroker):
    """Three groups: `stable` (two members, roundrobin), `empty` (a member committed and
    left), `simple` (offsets committed by the admin only, never a member). ListGroups shows
    each with its state and whether it is a simple (protocol-less) group, filters by state;
    DescribeGroups shows the members, assignments, assignor and coordinator; an unknown
    group is Dead with no members."""
    b = gbroker.bootstrap
    topic = unique_topic("ga-desc")
    create_topic(b, topic, partitions=4)
    fill(b, topic, 4, 3)
    stable, empty, simple = (unique_topic(n) for n in ("stable", "empty", "simple"))
    wait_coordinator_ready(gbroker.port, [stable, empty, simple])

    leaver = Member(b, empty, [topic], "leaver").start()
    consume_all(leaver, 12)
    leaver.commit()
    leaver.close()
    assert alter_offsets(b, simple, {(topic, 0): F + 2}) == {(topic, 0): KafkaError.NO_ERROR}

    members = [Member(b, stable, [topic], n, "roundrobin") for n in ("m1", "m2")]
    try:
        for m in members:
            m.start()
        wait_split(members, topic, 4, [2, 2])
        d = check_description(b, stable, members, "roundrobin")
        assert (d.coordinator.id, d.coordinator.host, d.coordinator.port) == \
            (1, "127.0.0.1", gbroker.port)

        S, E = ConsumerGroupState.STABLE, ConsumerGroupState.EMPTY
        assert listed(b) == {stable: (S, False), empty: (E, False), simple: (E, True)}
        assert listed(b, [S]) == {stable: (S, False)}
        assert listed(b, [E]) == {empty: (E, False), simple: (E, True)}
        assert listed(b, [ConsumerGroupState.PREPARING_REBALANCING]) == {}

        d = describe(b, empty)
        assert (d.state, d.is_simple_consumer_group, d.members, d.partition_assignor) == \
            (E, False, [], "")
        d = describe(b, simple)
        assert (d.state, d.is_simple_consumer_group, d.members) == (E, True, [])
        # DescribeGroups v0-v5 (what Gregor serves) answer an unknown group as Dead, no error.
        d = describe(b, unique_topic("unknown"))
        assert (d.state, d.members) == (ConsumerGroupState.DEAD, [])
    finally:
        for m in members:
            m.close()
    assert listed(b)[stable] == (ConsumerGroupState.EMPTY, False)


def test_confluent_delete_groups(gbroker):
    """DeleteGroups: a group with a member is NON_EMPTY_GROUP, an unknown group
    GROUP_ID_NOT_FOUND; an empty group goes, with its offsets (a new member starts from
    auto.offset.reset), and is GROUP_ID_NOT_FOUND the second time."""
    b = gbroker.bootstrap
    topic = unique_topic("ga-del")
    create_topic(b, topic, partitions=2)
    fill(b, topic, 2, 5)
    busy, idle = unique_topic("busy"), unique_topic("idle")

    m = Member(b, idle, [topic], "idle").start()
    consume_all(m, 10)
    assert m.commit() == {(topic, 0): F + 5, (topic, 1): F + 5}
    m.close()

    active = Member(b, busy, [topic], "busy").start()
    try:
        wait_split([active], topic, 2, [2])
        assert delete_group_error(b, busy) == KafkaError.NON_EMPTY_GROUP
        assert delete_group_error(b, unique_topic("never")) == KafkaError.GROUP_ID_NOT_FOUND
        assert listed(b)[busy] == (ConsumerGroupState.STABLE, False)

        assert list_offsets(b, idle) == {(topic, 0): (F + 5, None), (topic, 1): (F + 5, None)}
        assert delete_group_error(b, idle) == KafkaError.NO_ERROR
        assert idle not in listed(b)
        assert list_offsets(b, idle) == {}
        assert describe(b, idle).state == ConsumerGroupState.DEAD
        assert delete_group_error(b, idle) == KafkaError.GROUP_ID_NOT_FOUND
    finally:
        active.close()
    assert delete_group_error(b, busy) == KafkaError.NO_ERROR
    assert listed(b) == {}

    # The deleted group's offsets are gone: a new member reads from the beginning.
    again = Member(b, idle, [topic], "again").start()
    try:
        consume_all(again, 10)
        time.sleep(0.3)
        assert by_partition(again.consumed()) == {(topic, p): list(range(F, F + 5))
                                                  for p in range(2)}
    finally:
        again.close()


@pytest.mark.gregor_only
def test_deleted_group_stays_deleted_after_restart(gbroker):
    """The tombstones of a deleted group are in __consumer_offsets: after a broker restart
    (SIGKILL) the deleted group is still gone and the other group's offsets are intact."""
    b = gbroker.bootstrap
    topic = unique_topic("ga-delrs")
    create_topic(b, topic, partitions=1)
    gone, kept = unique_topic("gone"), unique_topic("kept")
    wait_coordinator_ready(gbroker.port, [gone, kept])
    assert alter_offsets(b, gone, {(topic, 0): 7}) == {(topic, 0): KafkaError.NO_ERROR}
    assert alter_offsets(b, kept, {(topic, 0): 9}) == {(topic, 0): KafkaError.NO_ERROR}
    assert delete_group_error(b, gone) == KafkaError.NO_ERROR
    restart_broker(gbroker)
    wait_coordinator_ready(gbroker.port, [gone, kept])
    assert listed(b) == {kept: (ConsumerGroupState.EMPTY, True)}
    assert list_offsets(b, gone) == {}
    assert list_offsets(b, kept) == {(topic, 0): (9, None)}


def test_confluent_list_and_alter_offsets(gbroker):
    """Committed offsets with metadata are listed exactly (all, or the partitions asked, an
    uncommitted one as OFFSET_INVALID); the admin alters an empty group's offsets and a new
    member resumes from them; altering while the group has a member is UNKNOWN_MEMBER_ID."""
    b = gbroker.bootstrap
    topic, group = unique_topic("ga-off"), unique_topic("grp")
    create_topic(b, topic, partitions=3)
    fill(b, topic, 3, 10)

    m = Member(b, group, [topic], "committer").start()
    wait_split([m], topic, 3, [3])
    m.commit_offsets({(topic, 0): (F + 4, "meta-0"), (topic, 1): (F + 7, "meta-1")})
    m.close()
    assert list_offsets(b, group) == {(topic, 0): (F + 4, "meta-0"),
                                      (topic, 1): (F + 7, "meta-1")}
    assert list_offsets(b, group, [(topic, 0), (topic, 2)]) == \
        {(topic, 0): (F + 4, "meta-0"), (topic, 2): (OFFSET_INVALID, None)}

    assert alter_offsets(b, group, {(topic, 0): F + 1, (topic, 2): F + 9}) == \
        {(topic, 0): KafkaError.NO_ERROR, (topic, 2): KafkaError.NO_ERROR}
    assert list_offsets(b, group) == {(topic, 0): (F + 1, None), (topic, 1): (F + 7, "meta-1"),
                                      (topic, 2): (F + 9, None)}

    resumed = Member(b, group, [topic], "resumed").start()
    try:
        consume_all(resumed, 9 + 3 + 1)
        time.sleep(0.3)
        assert by_partition(resumed.consumed()) == {
            (topic, 0): list(range(F + 1, F + 10)), (topic, 1): list(range(F + 7, F + 10)),
            (topic, 2): [F + 9]}
        # A group with members takes commits from its members only.
        assert alter_offsets(b, group, {(topic, 0): F, (topic, 1): F}) == \
            {(topic, 0): KafkaError.UNKNOWN_MEMBER_ID, (topic, 1): KafkaError.UNKNOWN_MEMBER_ID}
        assert list_offsets(b, group)[(topic, 0)] == (F + 1, None)
    finally:
        resumed.close()


def test_confluent_alter_offsets_of_unknown_topic(gbroker):
    """Kafka's OffsetCommit answers UNKNOWN_TOPIC_OR_PARTITION for a topic the broker does
    not know and stores nothing for it; the known topic's partition is committed."""
    b = gbroker.bootstrap
    topic, group = unique_topic("ga-unk"), unique_topic("grp")
    create_topic(b, topic, partitions=1)
    missing = unique_topic("missing")
    wait_coordinator_ready(gbroker.port, [group])
    assert alter_offsets(b, group, {(topic, 0): 3, (missing, 0): 5}) == \
        {(topic, 0): KafkaError.NO_ERROR, (missing, 0): KafkaError.UNKNOWN_TOPIC_OR_PART}
    assert list_offsets(b, group) == {(topic, 0): (3, None)}


# The two tests below look for a window of tens of milliseconds after a broker start, so
# each probes many groups per request on one connection, and tries again after another
# restart (up to RESTARTS) until it sees the fault once.
RESTARTS = 5


@pytest.mark.gregor_only
def test_list_groups_right_after_restart(gbroker):
    """Ten groups with committed offsets; the broker restarts and ListGroups is asked as fast
    as possible: every answer either lists all ten groups or carries the retriable
    COORDINATOR_LOAD_IN_PROGRESS (Kafka answers that while it loads any __consumer_offsets
    partition it leads); an answer without error and without some groups is wrong."""
    b = gbroker.bootstrap
    topic = unique_topic("ga-lgrs")
    create_topic(b, topic, partitions=1)
    groups = {unique_topic(f"g{i}") for i in range(10)}
    wait_coordinator_ready(gbroker.port, sorted(groups))
    for g in groups:
        assert alter_offsets(b, g, {(topic, 0): 1}) == {(topic, 0): KafkaError.NO_ERROR}
    assert set(listed(b)) == groups
    incomplete = []
    for attempt in range(1, RESTARTS + 1):
        restart_broker(gbroker)
        seen = []
        deadline = time.monotonic() + WAIT_S
        with RawConn(gbroker.port) as conn:
            while True:
                error, found = conn.list_groups()
                if not seen or seen[-1] != (error, len(found & groups)):
                    seen.append((error, len(found & groups)))
                if error == 0 and found >= groups:
                    break
                if error == 0:
                    incomplete.append((attempt, len(found & groups)))
                assert time.monotonic() < deadline, seen
        print(f"\nrestart {attempt}: ListGroups (error, of our 10 groups listed) went {seen}")
        if incomplete:
            break
    assert incomplete == [], \
        f"ListGroups answered without error but listed only {incomplete[0][1]} of 10 groups"


@pytest.mark.gregor_only
def test_coordinator_answers_once_found(gbroker):
    """Once FindCoordinator names a broker as a group's coordinator, that broker answers the
    group's requests, or says COORDINATOR_LOAD_IN_PROGRESS while it loads the partition; it
    does not say NOT_COORDINATOR (which sends a client back to FindCoordinator, which names
    the same broker). Probed for 100 groups (spread over the 50 partitions) on the first use
    of groups (which creates __consumer_offsets) and after restarts (which reload it)."""
    groups = [unique_topic("grp") for _ in range(100)]
    bad = []
    for phase in ["first use"] + [f"restart {i}" for i in range(1, RESTARTS + 1)]:
        if phase != "first use":
            restart_broker(gbroker)
        probes = 0
        deadline = time.monotonic() + WAIT_S
        with RawConn(gbroker.port) as conn:
            while True:
                found = conn.find_coordinators(groups)
                fetched = conn.offset_fetch_errors(groups)
                probes += 1
                wrong = [(g, fetched[g]) for g in groups if found[g][0] == 0
                         and fetched[g] not in (0, COORDINATOR_LOAD_IN_PROGRESS)]
                if wrong:
                    bad.append((phase, len(wrong), wrong[0][1]))
                    break
                if all(found[g][0] == 0 and fetched[g] == 0 for g in groups):
                    break
                assert time.monotonic() < deadline, f"{phase}: coordinators never ready"
        print(f"\n{phase}: {probes} probes, found named-but-refusing groups: {bad}")
        if bad:
            break
    assert bad == [], (f"{bad[0][0]}: {bad[0][1]} groups answered error {bad[0][2]} right after "
                       "FindCoordinator named their coordinator")


# -- kafka-python KafkaAdminClient ----------------------------------------------------------


def test_kafka_python_admin_groups_and_offsets(gbroker, kadmin):
    """kafka-python's admin on a group with a member subscribed to `sub` that also committed
    offsets of `other`: list and describe (decoded subscription and assignment); list
    offsets; OffsetDelete of `sub` is GROUP_SUBSCRIBED_TO_TOPIC, of `other` fine; an unknown
    group's OffsetDelete is GROUP_ID_NOT_FOUND; DeleteGroups says NON_EMPTY_GROUP /
    GROUP_ID_NOT_FOUND; altering is UNKNOWN_MEMBER_ID. Once the member leaves: OffsetDelete
    of `sub`, alter and DeleteGroups all succeed."""
    b = gbroker.bootstrap
    sub, other, group = unique_topic("ga-sub"), unique_topic("ga-other"), unique_topic("grp")
    create_topic(b, sub, partitions=2)
    create_topic(b, other, partitions=1)
    fill(b, sub, 2, 4)
    tp_s0, tp_s1 = KTopicPartition(sub, 0), KTopicPartition(sub, 1)
    tp_o0 = KTopicPartition(other, 0)
    unknown = unique_topic("never")

    m = Member(b, group, [sub], "kp-admin-member").start()
    try:
        consume_all(m, 8)
        assert m.commit() == {(sub, 0): F + 4, (sub, 1): F + 4}
        # (No metadata: confluent-kafka 2.16 sends a metadata string with its C NUL.)
        m.commit_offsets({(other, 0): (2, None)})

        assert kadmin.list_groups() == [
            {"group_id": group, "protocol_type": "consumer", "group_state": "Stable"}]
        assert kadmin.list_groups(states_filter=["Empty"]) == []
        d = kadmin.describe_groups([group])[group]
        assert (d["error"], d["group_state"], d["protocol_type"], d["protocol_data"]) == \
            (None, "Stable", "consumer", "range")
        assert [(x["member_id"], x["client_id"], x["member_metadata"]["topics"],
                 x["member_assignment"]["assigned_partitions"]) for x in d["members"]] == \
            [(m.member_id(), "kp-admin-member", [sub], [{"topic": sub, "partitions": [0, 1]}])]

        assert kadmin.list_group_offsets(group)[group] == {
            tp_s0: OffsetAndMetadata(F + 4, "", 1), tp_s1: OffsetAndMetadata(F + 4, "", 1),
            tp_o0: OffsetAndMetadata(2, "", -1)}

        assert kadmin.delete_group_offsets(group, [tp_s0]) == {tp_s0: GroupSubscribedToTopicError}
        assert kadmin.delete_group_offsets(group, [tp_o0]) == {tp_o0: NoError}
        assert set(kadmin.list_group_offsets(group)[group]) == {tp_s0, tp_s1}
        with pytest.raises(GroupIdNotFoundError):
            kadmin.delete_group_offsets(unknown, [tp_s0])

        assert kadmin.delete_groups([group, unknown]) == {
            group: "NonEmptyGroupError", unknown: "GroupIdNotFoundError"}
        assert kadmin.alter_group_offsets(group, {tp_s0: OffsetAndMetadata(1, "", -1)}) == \
            {tp_s0: UnknownMemberIdError}
    finally:
        m.close()

    assert kadmin.list_groups(states_filter=["Empty"]) == [
        {"group_id": group, "protocol_type": "consumer", "group_state": "Empty"}]
    assert kadmin.delete_group_offsets(group, [tp_s0]) == {tp_s0: NoError}
    assert kadmin.list_group_offsets(group)[group] == {tp_s1: OffsetAndMetadata(F + 4, "", 1)}
    assert kadmin.alter_group_offsets(group, {tp_s0: OffsetAndMetadata(F + 1, "x", -1)}) == \
        {tp_s0: NoError}
    assert kadmin.list_group_offsets(group)[group] == {
        tp_s0: OffsetAndMetadata(F + 1, "x", -1), tp_s1: OffsetAndMetadata(F + 4, "", 1)}
    # offset.metadata.max.bytes (4096 by default) bounds the metadata string.
    assert kadmin.alter_group_offsets(group, {tp_s1: OffsetAndMetadata(3, "m" * 4096, -1)}) == \
        {tp_s1: NoError}
    assert kadmin.alter_group_offsets(group, {tp_s1: OffsetAndMetadata(2, "m" * 4097, -1)}) == \
        {tp_s1: OffsetMetadataTooLargeError}
    assert kadmin.list_group_offsets(group)[group][tp_s1] == OffsetAndMetadata(3, "m" * 4096, -1)
    assert kadmin.delete_groups([group]) == {group: "OK"}
    assert kadmin.list_group_offsets(group)[group] == {}
    assert kadmin.list_groups() == []


def test_kafka_python_remove_static_member(gbroker, kadmin):
    """A static member that closed (static members send no LeaveGroup) would keep its
    partitions until its session times out (30 s here); removing it by group.instance.id
    (LeaveGroup v3+) rebalances at once, and removing it again is UNKNOWN_MEMBER_ID."""
    b = gbroker.bootstrap
    topic, group = unique_topic("ga-static"), unique_topic("grp")
    create_topic(b, topic, partitions=4)
    slow = {"session.timeout.ms": 30000}
    stay = Member(b, group, [topic], "stay", **{"group.instance.id": "i-stay"}, **slow)
    gone = Member(b, group, [topic], "gone", **{"group.instance.id": "i-gone"}, **slow)
    try:
        stay.start()
        gone.start()
        wait_split([stay, gone], topic, 4, [2, 2])
        gone.close()
        time.sleep(0.5)
        assert len(describe(b, group).members) == 2
        removed = time.monotonic()
        result = kadmin.remove_group_members(group, [MemberToRemove(group_instance_id="i-gone")])
        assert result == {"i-gone": NoError}
        wait_split([stay], topic, 4, [4], timeout_s=10)
        assert time.monotonic() - removed < 10
        d = check_description(b, group, [stay], "range")
        assert [m.group_instance_id for m in d.members] == ["i-stay"]
        assert kadmin.remove_group_members(
            group, [MemberToRemove(group_instance_id="i-gone")]) == {"i-gone": UnknownMemberIdError}
    finally:
        stay.close()
        gone.close()
