"""Consumer groups with real clients: confluent-kafka (librdkafka) with the range,
roundrobin and cooperative-sticky assignors, kafka-python and aiokafka group consumers.

Subscribe, consume, commit (manually and automatically), restart (the consumer, and the
broker), resume from the committed offsets; a Stable group carries on through a broker
restart, and a member lost with the broker expires after it; two and three members rebalance as members join, leave, and crash (the session
expires), and as a pattern subscription grows; a static member restarts without a
rebalance, and is fenced by a twin; joins refused with Kafka's error codes (group.max.size,
session timeout, no common assignor); the join-to-stable time of a third member (printed
with -s).

Every topic is new, so partition p's record i is at FIRST_DATA_OFFSET + i."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaError
from confluent_kafka.admin import NewPartitions
from kafka import KafkaConsumer
from kafka import TopicPartition as KTopicPartition

from group_helpers import (GROUP_BROKER_CONFIG, HEARTBEAT_MS, WAIT_S, Member, all_partitions,
                           by_partition, check_description, describe, restart_broker, split_ok,
                           wait_coordinator_ready, wait_split, wait_until)
from helpers import (FIRST_DATA_OFFSET, LEADER_NOOP_OFFSETS, admin, create_topic,
                     produce_and_wait, producer, unique_topic)

F = FIRST_DATA_OFFSET
ASSIGNORS = ["range", "roundrobin", "cooperative-sticky"]


@pytest.fixture
def gbroker(broker_factory):
    return broker_factory(config=GROUP_BROKER_CONFIG)


def produce_spread(bootstrap: str, topic: str, partitions: int, per_partition: int,
                   tag: str) -> None:
    """`per_partition` records to each partition, valued `{tag}-{p}-{i}`."""
    records = [{"value": f"{tag}-{p}-{i}".encode(), "partition": p}
               for i in range(per_partition) for p in range(partitions)]
    produce_and_wait(producer(bootstrap, acks="all"), topic, records)


def expect_spread(topic: str, partitions: int, start: int, count: int) -> dict:
    return {(topic, p): list(range(start, start + count)) for p in range(partitions)}


def wait_consumed(m: Member, n: int, settle_s: float = 0.5) -> list:
    """Waits for `n` messages, then a little longer so extra (duplicate) ones show up."""
    wait_until(lambda: len(m.consumed()) >= n or m.errors,
               f"{m.name} to consume {n} messages (has {len(m.consumed())})")
    time.sleep(settle_s)
    assert m.errors == [], f"{m.name}: consumer errors {m.errors}"
    return m.consumed()


# -- confluent-kafka: commit, restart, resume ----------------------------------------------


@pytest.mark.parametrize("assignor", ASSIGNORS)
def test_confluent_commit_restart_resume(gbroker, assignor):
    """One member reads 3 x 20 records, commits (next offset per partition, exactly),
    reads its commits back, closes; a new member of the group resumes at the committed
    offsets: it reads exactly the 3 x 10 records produced since, nothing older."""
    b = gbroker.bootstrap
    topic, group = unique_topic("g-resume"), unique_topic("grp")
    create_topic(b, topic, partitions=3)
    produce_spread(b, topic, 3, 20, "a")

    first = Member(b, group, [topic], "first", assignor).start()
    try:
        got = wait_consumed(first, 60)
        assert by_partition(got) == expect_spread(topic, 3, F, 20)
        assert first.owned() == all_partitions(topic, 3)
        tps = sorted(all_partitions(topic, 3))
        assert first.commit() == {tp: F + 20 for tp in tps}
        assert first.committed(tps) == {tp: F + 20 for tp in tps}
    finally:
        first.close()
    assert describe(b, group).state == ConsumerGroupState.EMPTY

    produce_spread(b, topic, 3, 10, "b")
    second = Member(b, group, [topic], "second", assignor).start()
    try:
        assert second.committed(tps) == {tp: F + 20 for tp in tps}
        got = wait_consumed(second, 30)
        assert by_partition(got) == expect_spread(topic, 3, F + 20, 10)
        assert sorted(v for *_, v in got) == sorted(
            f"b-{p}-{i}".encode() for p in range(3) for i in range(10))
        assert second.commit() == {tp: F + 30 for tp in tps}
    finally:
        second.close()


@pytest.mark.gregor_only
def test_committed_offsets_survive_broker_restart(gbroker):
    """Offsets committed (acknowledged) before a SIGKILL of the broker are there after its
    restart (the coordinator replays __consumer_offsets), and so is the group; a new member
    resumes exactly there. The restart adds one no-op to each data partition, at the
    committed offset, so the records produced afterwards start one offset later."""
    b = gbroker.bootstrap
    topic, group = unique_topic("g-restart"), unique_topic("grp")
    create_topic(b, topic, partitions=2)
    produce_spread(b, topic, 2, 15, "a")
    m = Member(b, group, [topic], "before").start()
    tps = sorted(all_partitions(topic, 2))
    try:
        wait_consumed(m, 30, settle_s=0.2)
        assert m.commit() == {tp: F + 15 for tp in tps}
        old_member = m.member_id()
    finally:
        m.close()

    restart_broker(gbroker)
    wait_coordinator_ready(gbroker.port, [group])
    d = describe(b, group)
    # The group's Empty state (written once the member has left, after LeaveGroup is
    # answered, as in Kafka) may not have reached the disk before the SIGKILL: then the
    # group comes back Stable with its old member, until that member's session expires.
    assert (d.state, d.is_simple_consumer_group, [x.member_id for x in d.members]) in [
        (ConsumerGroupState.EMPTY, False, []),
        (ConsumerGroupState.STABLE, False, [old_member])]
    produce_spread(b, topic, 2, 5, "b")
    after = Member(b, group, [topic], "after").start()
    try:
        assert after.committed(tps) == {tp: F + 15 for tp in tps}
        got = wait_consumed(after, 10)
        check_description(b, group, [after], "range")
        assert by_partition(got) == expect_spread(topic, 2, F + 15 + LEADER_NOOP_OFFSETS, 5)
        assert {v for *_, v in got} == {f"b-{p}-{i}".encode() for p in range(2) for i in range(5)}
    finally:
        after.close()


@pytest.mark.gregor_only
def test_stable_group_survives_broker_restart(gbroker):
    """Two members consume; the broker is SIGKILLed and restarted under them. The group
    comes back from __consumer_offsets with its members and generation, so they carry on
    without a rebalance (same member ids, no rebalance callbacks, same partitions) and read
    every record exactly once (the restart's no-op leaves a one-offset gap)."""
    b = gbroker.bootstrap
    topic, group = unique_topic("g-brestart"), unique_topic("grp")
    create_topic(b, topic, partitions=4)
    ms = [Member(b, group, [topic], n) for n in ("a", "b")]
    try:
        for m in ms:
            m.start()
        owned = wait_split(ms, topic, 4, [2, 2])
        produce_spread(b, topic, 4, 10, "a")
        wait_until(lambda: sum(len(m.consumed()) for m in ms) >= 40, "40 records")
        ids, events = [m.member_id() for m in ms], [m.event_log() for m in ms]

        restarted = time.monotonic()
        restart_broker(gbroker)
        produce_spread(b, topic, 4, 10, "b")
        wait_until(lambda: sum(len(m.consumed()) for m in ms) >= 80, "80 records")
        print(f"\nbroker restart: the group consumed again {time.monotonic() - restarted:.2f}s "
              "after the SIGKILL")
        time.sleep(1.0)  # heartbeats: a rebalance would show by now
        assert [m.owned() for m in ms] == owned
        assert [m.member_id() for m in ms] == ids
        assert [m.event_log() for m in ms] == events, "a rebalance happened"
        second = F + 10 + LEADER_NOOP_OFFSETS
        for m, mine in zip(ms, owned):
            assert m.errors == []
            assert by_partition(m.consumed()) == {
                tp: list(range(F, F + 10)) + list(range(second, second + 10)) for tp in mine}
        d = describe(b, group)
        assert (d.state, sorted(x.member_id for x in d.members)) == \
            (ConsumerGroupState.STABLE, sorted(ids))
    finally:
        for m in ms:
            m.close()


# -- confluent-kafka: rebalances -----------------------------------------------------------


def changes_since(m: Member, mark: int) -> tuple[frozenset, frozenset]:
    """(everything revoked or lost, everything assigned) in `m`'s callbacks after event `mark`."""
    revoked, assigned = frozenset(), frozenset()
    for kind, parts in m.event_log()[mark:]:
        if kind == "assign":
            assigned |= parts
        else:
            revoked |= parts
    return revoked, assigned


def check_callbacks(m: Member, mark: int, old: frozenset, new: frozenset, assignor: str):
    """Eager assignors revoke everything a member owned and hand it a whole new assignment;
    cooperative-sticky revokes only what moves away and adds only what moves in."""
    revoked, assigned = changes_since(m, mark)
    if assignor == "cooperative-sticky":
        assert (revoked, assigned) == (old - new, new - old), (m.name, m.event_log()[mark:])
    else:
        assert revoked >= old and assigned >= new, (m.name, m.event_log()[mark:])


@pytest.mark.parametrize("assignor", ASSIGNORS)
def test_confluent_rebalance_as_members_join_and_leave(gbroker, assignor):
    """6 partitions: one member owns all; a second joins (3 + 3), a third (2 + 2 + 2), each
    time every partition owned exactly once, the callbacks revoking and assigning what the
    protocol says, DescribeGroups agreeing; then members leave (close) and the rest take
    their partitions back (3 + 3, then 6)."""
    b = gbroker.bootstrap
    topic, group = unique_topic("g-rebal"), unique_topic("grp")
    create_topic(b, topic, partitions=6)
    a = Member(b, group, [topic], "a", assignor)
    bm = Member(b, group, [topic], "b", assignor)
    c = Member(b, group, [topic], "c", assignor)
    try:
        a.start()
        wait_split([a], topic, 6, [6])
        check_description(b, group, [a], assignor)

        a_old, mark_a = a.owned(), len(a.event_log())
        bm.start()
        a1, b1 = wait_split([a, bm], topic, 6, [3, 3])
        check_description(b, group, [a, bm], assignor)
        check_callbacks(a, mark_a, a_old, a1, assignor)
        if assignor == "cooperative-sticky":
            assert a1 < a_old

        marks = [len(a.event_log()), len(bm.event_log())]
        c.start()
        a2, b2, c2 = wait_split([a, bm, c], topic, 6, [2, 2, 2])
        check_description(b, group, [a, bm, c], assignor)
        check_callbacks(a, marks[0], a1, a2, assignor)
        check_callbacks(bm, marks[1], b1, b2, assignor)
        if assignor == "cooperative-sticky":
            assert a2 < a1 and b2 < b1

        marks = [len(a.event_log()), len(bm.event_log())]
        c.close()
        a3, b3 = wait_split([a, bm], topic, 6, [3, 3])
        check_description(b, group, [a, bm], assignor)
        check_callbacks(a, marks[0], a2, a3, assignor)
        check_callbacks(bm, marks[1], b2, b3, assignor)
        if assignor == "cooperative-sticky":
            assert a3 > a2 and b3 > b2

        mark_a = len(a.event_log())
        bm.close()
        (a4,) = wait_split([a], topic, 6, [6])
        check_description(b, group, [a], assignor)
        check_callbacks(a, mark_a, a3, a4, assignor)
        a.close()
        d = describe(b, group)
        assert (d.state, len(d.members)) == (ConsumerGroupState.EMPTY, 0)
    finally:
        for m in (a, bm, c):
            m.close()


def test_confluent_new_partitions_and_topics_are_assigned(gbroker):
    """Members subscribed by pattern rebalance when the subscription grows: partitions added
    to a subscribed topic, then a new topic matching the pattern, end up owned, each exactly
    once, split evenly."""
    b = gbroker.bootstrap
    prefix, group = unique_topic("g-pat"), unique_topic("grp")
    first, later = f"{prefix}-a", f"{prefix}-b"
    create_topic(b, first, partitions=2)
    ms = [Member(b, group, [f"^{prefix}-.*"], n, "roundrobin",
                 topic_metadata_refresh_interval_ms=300) for n in ("a", "b")]

    def wait_owned(expected: frozenset, sizes: list[int]):
        def ok():
            owned = [m.owned() for m in ms]
            return (frozenset().union(*owned) == expected
                    and sum(len(o) for o in owned) == len(expected)
                    and sorted(len(o) for o in owned) == sizes)
        wait_until(ok, f"{sorted(expected)} split as {sizes}")

    try:
        for m in ms:
            m.start()
        wait_owned(all_partitions(first, 2), [1, 1])
        kafka_admin = admin(b)
        kafka_admin.create_partitions([NewPartitions(first, 4)])[first].result(timeout=WAIT_S)
        wait_owned(all_partitions(first, 4), [2, 2])
        create_topic(b, later, partitions=2)
        wait_owned(all_partitions(first, 4) | all_partitions(later, 2), [3, 3])
        check_description(b, group, ms, "roundrobin")
    finally:
        for m in ms:
            m.close()


def test_confluent_members_share_the_work(gbroker):
    """Three members of a group consume a topic with 6 partitions together: every record is
    read exactly once, each partition by the member that owns it."""
    b = gbroker.bootstrap
    topic, group = unique_topic("g-share"), unique_topic("grp")
    create_topic(b, topic, partitions=6)
    members = [Member(b, group, [topic], n, "roundrobin") for n in ("a", "b", "c")]
    try:
        for m in members:
            m.start()
        owned = wait_split(members, topic, 6, [2, 2, 2])
        produce_spread(b, topic, 6, 25, "w")
        wait_until(lambda: sum(len(m.consumed()) for m in members) >= 150,
                   "the group to consume 150 records")
        time.sleep(0.5)
        assert [m.owned() for m in members] == owned, "a rebalance happened"
        for m, mine in zip(members, owned):
            assert m.errors == []
            assert by_partition(m.consumed()) == {tp: list(range(F, F + 25)) for tp in mine}
    finally:
        for m in members:
            m.close()


CRASHING_MEMBER = textwrap.dedent("""
    import sys, time
    from confluent_kafka import Consumer
    bootstrap, group, topic, session_ms = sys.argv[1:5]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "client.id": "victim",
                  "session.timeout.ms": int(session_ms), "heartbeat.interval.ms": %d,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    last = None
    while True:
        c.poll(0.05)
        owned = sorted(p.partition for p in c.assignment())
        if owned != last:
            print("owned", *owned, flush=True)
            last = owned
""" % HEARTBEAT_MS)


def start_victim(bootstrap: str, group: str, topic: str, session_ms: int) -> subprocess.Popen:
    """A confluent-kafka member in its own process (to be SIGKILLed: no LeaveGroup)."""
    return subprocess.Popen(
        [sys.executable, "-c", CRASHING_MEMBER, bootstrap, group, topic, str(session_ms)],
        stdout=subprocess.PIPE, text=True, start_new_session=True)


def wait_victim_owns(victim: subprocess.Popen, count: int) -> list[int]:
    """Reads the victim's `owned ...` lines until it owns `count` partitions."""
    owned: list[int] = []

    def owns():
        line = victim.stdout.readline()
        if line.startswith("owned"):
            owned[:] = [int(p) for p in line.split()[1:]]
        return len(owned) == count
    wait_until(owns, f"the victim to own {count} partitions", interval_s=0)
    return owned


def kill_victim(victim: subprocess.Popen) -> None:
    if victim.poll() is None:
        os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)


@pytest.mark.gregor_only  # a 3 s session needs group.min.session.timeout.ms below Kafka's 6 s
def test_member_lost_with_the_broker_expires_after_restart(gbroker):
    """The broker and a member (another process) are SIGKILLed together. The restarted broker
    loads the group Stable with that member, whose session then runs from the load: a new
    member's join completes once it expires (3 s), not before, and not after the rebalance
    timeout (max.poll.interval.ms, 5 minutes)."""
    b = gbroker.bootstrap
    topic, group = unique_topic("g-lost"), unique_topic("grp")
    create_topic(b, topic, partitions=2)
    victim = start_victim(b, group, topic, session_ms=3000)
    try:
        wait_victim_owns(victim, 2)
        victim_id = describe(b, group).members[0].member_id
        gbroker.kill()
        kill_victim(victim)
        restart_broker(gbroker)
        wait_coordinator_ready(gbroker.port, [group])
        restarted = time.monotonic()
        d = describe(b, group)
        assert (d.state, [(m.member_id, m.client_id) for m in d.members]) == \
            (ConsumerGroupState.STABLE, [(victim_id, "victim")])
        newcomer = Member(b, group, [topic], "newcomer").start()
        try:
            wait_split([newcomer], topic, 2, [2])
            took = time.monotonic() - restarted
            assert took >= 3.0 - 0.5, f"the lost member was removed after only {took:.2f}s"
            check_description(b, group, [newcomer], "range")
        finally:
            newcomer.close()
    finally:
        kill_victim(victim)


@pytest.mark.gregor_only  # a 2 s session needs group.min.session.timeout.ms below Kafka's 6 s
def test_confluent_crashed_member_expires_and_survivor_takes_over(gbroker):
    """A member in another process is SIGKILLed (no LeaveGroup): after its 2 s session
    timeout, and not before, the coordinator removes it and the survivor owns every
    partition; DescribeGroups then shows one member."""
    b = gbroker.bootstrap
    topic, group = unique_topic("g-crash"), unique_topic("grp")
    create_topic(b, topic, partitions=4)
    survivor = Member(b, group, [topic], "survivor").start()
    wait_split([survivor], topic, 4, [4])
    victim = start_victim(b, group, topic, session_ms=2000)
    try:
        victim_owned = wait_victim_owns(victim, 2)
        victim_set = frozenset((topic, p) for p in victim_owned)
        wait_until(lambda: survivor.owned() == all_partitions(topic, 4) - victim_set,
                   "the survivor to own the other 2 partitions")
        assert len(describe(b, group).members) == 2

        kill_victim(victim)
        killed = time.monotonic()
        wait_split([survivor], topic, 4, [4])
        took = time.monotonic() - killed
        # The session (2 s from the victim's last heartbeat, <= HEARTBEAT_MS before the
        # kill) must expire first; then the survivor rejoins on its next heartbeat.
        assert took >= 2.0 - HEARTBEAT_MS / 1000 - 0.1, f"taken over after only {took:.2f}s"
        d = describe(b, group)
        assert (d.state, [m.member_id for m in d.members]) == \
            (ConsumerGroupState.STABLE, [survivor.member_id()])
        print(f"\nsession expiry: survivor owned everything {took:.2f}s after the kill "
              f"(session.timeout.ms=2000)")
    finally:
        kill_victim(victim)
        survivor.close()


@pytest.mark.gregor_only  # a 4 s session needs group.min.session.timeout.ms below Kafka's 6 s
def test_confluent_static_member_restarts_without_rebalance(gbroker):
    """Static members (group.instance.id) a and b split 4 partitions. b closes (a static
    member sends no LeaveGroup) and comes back under the same instance id within its session
    timeout: it gets the same partitions under a new member id, a sees no rebalance at all,
    and the group stays Stable with the two instance ids. When b then stays away longer than
    its session timeout, it is removed and a gets everything."""
    b = gbroker.bootstrap
    topic, group = unique_topic("g-static"), unique_topic("grp")
    create_topic(b, topic, partitions=4)
    static = {"session.timeout.ms": 4000}
    a = Member(b, group, [topic], "a", **{"group.instance.id": "inst-a"}, **static)
    m_b = Member(b, group, [topic], "b", **{"group.instance.id": "inst-b"}, **static)
    m_b2 = Member(b, group, [topic], "b", **{"group.instance.id": "inst-b"}, **static)
    try:
        a.start()
        wait_split([a], topic, 4, [4])
        m_b.start()
        a_owned, b_owned = wait_split([a, m_b], topic, 4, [2, 2])
        check_description(b, group, [a, m_b], "range")
        old_b_id = m_b.member_id()
        a_events = a.event_log()

        m_b.close()
        d = describe(b, group)
        assert (d.state, sorted(m.group_instance_id for m in d.members)) == \
            (ConsumerGroupState.STABLE, ["inst-a", "inst-b"]), "b left on close"
        m_b2.start()
        wait_until(lambda: m_b2.owned() == b_owned, "the restarted b to own its partitions")
        new_b_id = m_b2.member_id()
        assert new_b_id != old_b_id
        time.sleep(1.0)  # a heartbeat or four: a would hear of a rebalance by now
        assert a.event_log() == a_events, "a saw a rebalance"
        assert (a.owned(), m_b2.owned()) == (a_owned, b_owned)
        check_description(b, group, [a, m_b2], "range")

        m_b2.close()
        closed = time.monotonic()
        wait_split([a], topic, 4, [4])
        took = time.monotonic() - closed
        assert took >= 4.0 - HEARTBEAT_MS / 1000 - 0.1, f"b removed after only {took:.2f}s"
        d = check_description(b, group, [a], "range")
        assert [m.group_instance_id for m in d.members] == ["inst-a"]
    finally:
        for m in (a, m_b, m_b2):
            m.close()


def test_confluent_static_member_fenced_by_its_twin(gbroker):
    """A second consumer with a live member's group.instance.id takes its place: the first
    gets the fatal FENCED_INSTANCE_ID, the second owns everything, the group has one member."""
    b = gbroker.bootstrap
    topic, group = unique_topic("g-fence"), unique_topic("grp")
    create_topic(b, topic, partitions=2)
    first = Member(b, group, [topic], "first", **{"group.instance.id": "twin"})
    second = Member(b, group, [topic], "second", **{"group.instance.id": "twin"})
    try:
        first.start()
        wait_split([first], topic, 2, [2])
        second.start()
        wait_until(lambda: first.errors, "the first twin to be fenced")
        assert {e.code() for e in first.errors} == {KafkaError._FATAL}
        # The fatal error names the broker's error (librdkafka keeps it as the fatal cause).
        assert "Static consumer fenced" in first.errors[0].str()
        wait_split([second], topic, 2, [2])
        d = describe(b, group)
        assert (d.state, [(m.member_id, m.group_instance_id) for m in d.members]) == \
            (ConsumerGroupState.STABLE, [(second.member_id(), "twin")])
        assert second.errors == []
    finally:
        first.close()
        second.close()


@pytest.mark.gregor_only  # group.max.size from the broker's config file
def test_confluent_join_errors(broker_factory):
    """A member beyond group.max.size gets GROUP_MAX_SIZE_REACHED and the group carries on
    with the others; a session timeout below group.min.session.timeout.ms is
    INVALID_SESSION_TIMEOUT and the member never joins."""
    broker = broker_factory(config={**GROUP_BROKER_CONFIG, "group.max.size": 2})
    b = broker.bootstrap
    topic, group, other = unique_topic("g-joinerr"), unique_topic("grp"), unique_topic("grp")
    create_topic(b, topic, partitions=4)
    ms = [Member(b, group, [topic], n) for n in ("a", "b", "c")]
    short = Member(b, other, [topic], "short", session_timeout_ms=500, heartbeat_interval_ms=100)
    try:
        ms[0].start()
        ms[1].start()
        owned = wait_split(ms[:2], topic, 4, [2, 2])
        ms[2].start()
        wait_until(lambda: ms[2].errors, "the third member's join error")
        assert {e.code() for e in ms[2].errors} == {KafkaError.GROUP_MAX_SIZE_REACHED}
        assert ms[2].owned() == frozenset()
        assert [m.owned() for m in ms[:2]] == owned
        d = describe(b, group)
        assert (d.state, sorted(m.client_id for m in d.members)) == \
            (ConsumerGroupState.STABLE, ["a", "b"])

        short.start()
        wait_until(lambda: short.errors, "the short-session member's join error")
        assert {e.code() for e in short.errors} == {KafkaError.INVALID_SESSION_TIMEOUT}
        assert short.owned() == frozenset()
        assert describe(b, other).state == ConsumerGroupState.DEAD  # never created
    finally:
        for m in ms + [short]:
            m.close()


def test_confluent_assignor_negotiation(gbroker):
    """The group's protocol is one every member supports: a roundrobin-only member cannot
    join a range group (INCONSISTENT_GROUP_PROTOCOL), a member offering roundrobin and range
    joins it, and range is what the group uses."""
    b = gbroker.bootstrap
    topic, group = unique_topic("g-proto"), unique_topic("grp")
    create_topic(b, topic, partitions=4)
    ranged = Member(b, group, [topic], "range-only", "range")
    rr = Member(b, group, [topic], "rr-only", "roundrobin")
    both = Member(b, group, [topic], "both", "roundrobin,range")
    try:
        ranged.start()
        wait_split([ranged], topic, 4, [4])
        rr.start()
        wait_until(lambda: rr.errors, "the roundrobin-only member's join error")
        assert {e.code() for e in rr.errors} == {KafkaError.INCONSISTENT_GROUP_PROTOCOL}
        both.start()
        wait_split([ranged, both], topic, 4, [2, 2])
        check_description(b, group, [ranged, both], "range")
        assert rr.owned() == frozenset()
    finally:
        for m in (ranged, rr, both):
            m.close()


def test_confluent_auto_commit(gbroker):
    """enable.auto.commit: the positions are committed every auto.commit.interval.ms while
    the member runs, and a new member resumes after them."""
    b = gbroker.bootstrap
    topic, group = unique_topic("g-auto"), unique_topic("grp")
    create_topic(b, topic, partitions=2)
    produce_spread(b, topic, 2, 10, "a")
    tps = sorted(all_partitions(topic, 2))
    m = Member(b, group, [topic], "auto", enable_auto_commit=True, auto_commit_interval_ms=200)
    try:
        m.start()
        wait_consumed(m, 20, settle_s=0)
        wait_until(lambda: list_committed(b, group) == {tp: F + 10 for tp in tps},
                   "the auto-commit of the positions")
    finally:
        m.close()
    produce_spread(b, topic, 2, 3, "b")
    again = Member(b, group, [topic], "again").start()
    try:
        assert by_partition(wait_consumed(again, 6)) == expect_spread(topic, 2, F + 10, 3)
    finally:
        again.close()


def list_committed(bootstrap: str, group: str) -> dict:
    """{(topic, partition): committed offset} of `group`, from the AdminClient."""
    got = admin(bootstrap).list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)])[group].result(timeout=WAIT_S)
    return {(tp.topic, tp.partition): tp.offset for tp in got.topic_partitions}


@pytest.mark.timeout(90)
def test_confluent_three_member_rebalance_time(gbroker):
    """Measures join to stable: from a third member's subscribe until all three own a
    non-empty share (each partition exactly once), with group.initial.rebalance.delay.ms=0.
    The two members already in hear of the rebalance on their next heartbeat, so the figure
    is about one heartbeat interval: measured with HEARTBEAT_MS (range twice, and
    cooperative-sticky, whose second round waits for librdkafka's one JoinGroup a second)
    and with librdkafka's default 3 s. Prints the figures (-s)."""
    b = gbroker.bootstrap
    topic = unique_topic("g-time")
    create_topic(b, topic, partitions=6)
    runs = [(HEARTBEAT_MS, "range")] * 2 + [(HEARTBEAT_MS, "cooperative-sticky"), (3000, "range")]
    report = []
    for heartbeat_ms, assignor in runs:
        group = unique_topic("grp")
        ms = [Member(b, group, [topic], n, assignor, heartbeat_interval_ms=heartbeat_ms,
                     session_timeout_ms=10000) for n in ("a", "b", "c")]
        try:
            ms[0].start()
            ms[1].start()
            wait_split(ms[:2], topic, 6, [3, 3])
            ms[2].start()
            wait_split(ms, topic, 6, [2, 2, 2], timeout_s=4 * heartbeat_ms / 1000 + WAIT_S,
                       interval_s=0.005)
            took = time.monotonic() - ms[2].subscribed_at
            report.append((heartbeat_ms, assignor, took))
            # The bound: a heartbeat interval for the old members to hear of the rebalance
            # (cooperative: plus a second round, up to 1 s later), and slack for a busy machine.
            bound = heartbeat_ms / 1000 + (1.0 if assignor == "cooperative-sticky" else 0) + 5.0
            assert took < bound, report
        finally:
            for m in ms:
                m.close()
    print("\n3-member rebalance, third member's subscribe -> all three assigned "
          "(group.initial.rebalance.delay.ms=0):")
    for heartbeat_ms, assignor, took in report:
        print(f"  heartbeat.interval.ms={heartbeat_ms:5d} {assignor:19s} {took * 1000:7.0f} ms")


# -- kafka-python ---------------------------------------------------------------------------


def kp_consumer(bootstrap: str, group: str, topic: str, name: str) -> KafkaConsumer:
    """A kafka-python member subscribed to `topic`, which knows the topic's partitions before
    its first JoinGroup.

    Without that, kafka-python 3.0.12 can wedge: a leader that joins before the topic's
    metadata arrives assigns nothing, then rejoins because the metadata changed; if a poll's
    timeout ends while that second JoinGroup/SyncGroup is in flight, the leader's own
    assignment makes the snapshots equal, `need_rejoin()` turns false, and later polls never
    collect the finished join: no assignment, no heartbeats, session expiry (seen 4 times in
    12 runs on a loaded machine; the broker answered every request, see the client's DEBUG
    log). Fetching the metadata first means the first join assigns the partitions."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, client_id=name,
                      enable_auto_commit=False, auto_offset_reset="earliest",
                      heartbeat_interval_ms=HEARTBEAT_MS, session_timeout_ms=6000,
                      request_timeout_ms=15000)
    deadline = time.monotonic() + WAIT_S
    while not c.partitions_for_topic(topic):
        assert time.monotonic() < deadline, f"{name}: no metadata for {topic}"
        time.sleep(0.05)
    c.subscribe([topic])
    return c


def kp_poll(consumers: list[KafkaConsumer], until, what: str, timeout_s: float = WAIT_S) -> dict:
    """Polls every consumer in turn until `until(got)`; got: {consumer index: [records]}."""
    got = {i: [] for i in range(len(consumers))}
    deadline = time.monotonic() + timeout_s
    while not until(got):
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {got}"
        for i, c in enumerate(consumers):
            for records in c.poll(timeout_ms=50).values():
                got[i].extend(records)
    return got


def kp_owned(c: KafkaConsumer) -> frozenset:
    return frozenset((tp.topic, tp.partition) for tp in c.assignment())


def test_kafka_python_commit_restart_resume(gbroker):
    """kafka-python: a member reads 2 x 20 records, commits, reads its commits back, closes;
    a new member resumes at the commits and reads exactly the 2 x 7 records produced since."""
    b = gbroker.bootstrap
    topic, group = unique_topic("g-kp"), unique_topic("grp")
    create_topic(b, topic, partitions=2)
    produce_spread(b, topic, 2, 20, "a")
    tps = [KTopicPartition(topic, p) for p in range(2)]
    c = kp_consumer(b, group, topic, "kp-first")
    try:
        got = kp_poll([c], lambda g: len(g[0]) >= 40, "40 records")[0]
        assert by_partition((r.topic, r.partition, r.offset, r.value) for r in got) == \
            expect_spread(topic, 2, F, 20)
        c.commit()
        assert {tp.partition: c.committed(tp) for tp in tps} == {0: F + 20, 1: F + 20}
    finally:
        c.close()
    produce_spread(b, topic, 2, 7, "b")
    c = kp_consumer(b, group, topic, "kp-second")
    try:
        got = kp_poll([c], lambda g: len(g[0]) >= 14, "14 records")[0]
        for records in c.poll(timeout_ms=500).values():
            got.extend(records)  # anything extra fails the comparison
        assert by_partition((r.topic, r.partition, r.offset, r.value) for r in got) == \
            expect_spread(topic, 2, F + 20, 7)
        assert {tp.partition: c.committed(tp) for tp in tps} == {0: F + 20, 1: F + 20}
    finally:
        c.close()


class KpMember:
    """A kafka-python group member polled by its own thread, as applications run it. (Two
    members polled in turn by one thread with short timeouts make kafka-python 3.0.12 loop:
    a poll that times out while its JoinGroup waits for the other member leaves the join
    task behind, and the next poll, finding it done, sends a new JoinGroup instead of taking
    its result: the leader rejoins, which starts another rebalance, and so on.)"""

    def __init__(self, bootstrap: str, group: str, topic: str, name: str):
        self.name = name
        self.consumer = kp_consumer(bootstrap, group, topic, name)
        self.lock = threading.Lock()
        self.assigned: frozenset = frozenset()
        self.records: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"kp-{name}", daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            got = self.consumer.poll(timeout_ms=300)
            owned = kp_owned(self.consumer)
            with self.lock:
                self.assigned = owned
                for records in got.values():
                    self.records.extend(records)

    def owned(self) -> frozenset:
        with self.lock:
            return self.assigned

    def close(self):
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(timeout=WAIT_S)
            self.consumer.close()


def test_kafka_python_two_members_rebalance(gbroker):
    """kafka-python members: one owns all 4 partitions, a second joins (2 + 2, disjoint),
    then leaves and the first owns all 4 again."""
    b = gbroker.bootstrap
    topic, group = unique_topic("g-kp2"), unique_topic("grp")
    create_topic(b, topic, partitions=4)
    c1 = KpMember(b, group, topic, "kp-1")
    c2 = None
    try:
        wait_until(lambda: c1.owned() == all_partitions(topic, 4), "kp-1 to own all")
        c2 = KpMember(b, group, topic, "kp-2")
        wait_until(lambda: split_ok([c1.owned(), c2.owned()], topic, 4, [2, 2]),
                   "kp-1 and kp-2 to split 4 partitions")
        d = describe(b, group)
        assert d.state == ConsumerGroupState.STABLE
        assert sorted(m.client_id for m in d.members) == ["kp-1", "kp-2"]
        assert {m.client_id: {(tp.topic, tp.partition) for tp in m.assignment.topic_partitions}
                for m in d.members} == {"kp-1": set(c1.owned()), "kp-2": set(c2.owned())}
        c2.close()
        wait_until(lambda: c1.owned() == all_partitions(topic, 4), "kp-1 to own all again")
    finally:
        c1.close()
        if c2 is not None:
            c2.close()


def test_mixed_clients_in_one_group(gbroker):
    """A kafka-python member and a librdkafka member agree on the range assignor and split
    the partitions between them."""
    b = gbroker.bootstrap
    topic, group = unique_topic("g-mixed"), unique_topic("grp")
    create_topic(b, topic, partitions=4)
    kp = KpMember(b, group, topic, "kp")
    rd = Member(b, group, [topic], "rd", "range")
    try:
        wait_until(lambda: kp.owned() == all_partitions(topic, 4), "kp to own all")
        rd.start()
        wait_until(lambda: split_ok([kp.owned(), rd.owned()], topic, 4, [2, 2]),
                   "kp and rd to split 4 partitions")
        d = describe(b, group)
        assert (d.state, d.partition_assignor) == (ConsumerGroupState.STABLE, "range")
        assert {m.client_id: {(tp.topic, tp.partition) for tp in m.assignment.topic_partitions}
                for m in d.members} == {"kp": set(kp.owned()), "rd": set(rd.owned())}
    finally:
        rd.close()
        kp.close()


# -- aiokafka -------------------------------------------------------------------------------


def test_aiokafka_commit_restart_resume_and_rebalance(gbroker):
    """aiokafka: a member reads, commits, stops; the next resumes at the commits; then a
    second member joins and the two split the partitions."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition as ATopicPartition

    b = gbroker.bootstrap
    topic, group = unique_topic("g-aio"), unique_topic("grp")
    create_topic(b, topic, partitions=2)
    produce_spread(b, topic, 2, 12, "a")
    tps = [ATopicPartition(topic, p) for p in range(2)]

    def make(name):
        return AIOKafkaConsumer(topic, bootstrap_servers=b, group_id=group, client_id=name,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                heartbeat_interval_ms=HEARTBEAT_MS, session_timeout_ms=6000,
                                request_timeout_ms=15000)

    async def read(c, n):
        got = []
        deadline = time.monotonic() + WAIT_S
        while len(got) < n:
            assert time.monotonic() < deadline, f"got {len(got)} of {n}"
            for records in (await c.getmany(timeout_ms=200)).values():
                got.extend(records)
        for records in (await c.getmany(timeout_ms=500)).values():
            got.extend(records)  # anything extra fails the comparison
        return by_partition((r.topic, r.partition, r.offset, r.value) for r in got)

    async def run():
        c = make("aio-first")
        await c.start()
        try:
            assert await read(c, 24) == expect_spread(topic, 2, F, 12)
            await c.commit()
            assert [await c.committed(tp) for tp in tps] == [F + 12, F + 12]
        finally:
            await c.stop()
        produce_spread(b, topic, 2, 5, "b")
        c1 = make("aio-second")
        await c1.start()
        c2 = make("aio-third")
        try:
            assert await read(c1, 10) == expect_spread(topic, 2, F + 12, 5)
            await c1.commit()
            await c2.start()
            deadline = time.monotonic() + WAIT_S

            def owned(c):
                return frozenset((tp.topic, tp.partition) for tp in c.assignment())
            while not split_ok([owned(c1), owned(c2)], topic, 2, [1, 1]):
                assert time.monotonic() < deadline, (owned(c1), owned(c2))
                await asyncio.gather(c1.getmany(timeout_ms=50), c2.getmany(timeout_ms=50))
            for c in (c1, c2):
                assert [await c.committed(tp) for tp in tps] == [F + 17, F + 17]
        finally:
            await c2.stop()
            await c1.stop()

    asyncio.run(run())
