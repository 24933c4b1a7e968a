"""Helpers for the consumer-group tests (test_groups.py, test_groups_admin.py): a broker
config that keeps rebalances fast, a confluent-kafka group member that polls in its own
thread and records what it owns and what it read, and assignment checks."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import defaultdict

from confluent_kafka import Consumer, ConsumerGroupState, TopicPartition

from helpers import OP_TIMEOUT_S, RDKAFKA_LOG, admin, forget_admins

# Broker keys for the group tests: no initial rebalance delay (Kafka's default, 3 s, holds
# every new group's first join), and a session timeout floor low enough for the tests that
# wait for a session to expire.
GROUP_BROKER_CONFIG = {
    "group.initial.rebalance.delay.ms": 0,
    "group.min.session.timeout.ms": 1000,
}
# Client settings for group members: heartbeats often enough that a member learns of a
# rebalance within a fraction of a second (librdkafka's default is 3 s).
HEARTBEAT_MS = 250
SESSION_MS = 6000
WAIT_S = 30.0  # generous: a busy 2-core machine


def wait_until(pred, what: str, timeout_s: float = WAIT_S, interval_s: float = 0.02):
    """Polls `pred()` until it is truthy (returns its value) or fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


class Member:
    """One confluent-kafka consumer in a group, polled by its own thread.

    Records its current assignment (as (topic, partition) pairs, read after every poll, so
    it is what the consumer owns once its rebalance callbacks have run), every rebalance
    callback in order, every message (topic, partition, offset, value) and every error."""

    def __init__(self, bootstrap: str, group: str, topics: list[str], name: str = "m",
                 assignor: str = "range", **conf):
        self.name = name
        self.topics = topics
        self.conf = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": name,
            "partition.assignment.strategy": assignor,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "heartbeat.interval.ms": HEARTBEAT_MS,
            "session.timeout.ms": SESSION_MS,
        }
        self.conf.update({k.replace("_", "."): v for k, v in conf.items()})
        self.consumer = Consumer(self.conf, logger=RDKAFKA_LOG)
        self.lock = threading.Lock()
        self.assigned: frozenset = frozenset()
        self.events: list[tuple[str, frozenset]] = []
        self.messages: list[tuple[str, int, int, bytes]] = []
        self.errors: list = []
        self.subscribed_at: float | None = None
        self.last_member_id: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.closed = False

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> "Member":
        def record(kind):
            def cb(_consumer, partitions):
                with self.lock:
                    self.events.append((kind, frozenset((p.topic, p.partition)
                                                        for p in partitions)))
            return cb

        self.subscribed_at = time.monotonic()
        self.consumer.subscribe(self.topics, on_assign=record("assign"),
                                on_revoke=record("revoke"), on_lost=record("lost"))
        self.resume_polling()
        return self

    def resume_polling(self):
        assert self._thread is None
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"member-{self.name}",
                                        daemon=True)
        self._thread.start()

    def _run(self):
        c = self.consumer
        while not self._stop.is_set():
            m = c.poll(0.02)
            owned = frozenset((p.topic, p.partition) for p in c.assignment())
            member_id = c.memberid()
            with self.lock:
                self.assigned = owned
                self.last_member_id = member_id
                if m is None:
                    continue
                if m.error():
                    self.errors.append(m.error())
                else:
                    self.messages.append((m.topic(), m.partition(), m.offset(), m.value()))

    def pause_polling(self):
        """Stops the polling thread (the consumer stays open: librdkafka keeps heart-beating
        in its own threads)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=OP_TIMEOUT_S)
            assert not self._thread.is_alive(), f"{self.name}: poll thread did not stop"
        self._thread = None

    def close(self):
        """Stops polling and closes the consumer (a dynamic member leaves the group)."""
        if self.closed:
            return
        self.pause_polling()
        self.consumer.close()
        self.closed = True

    # -- views --------------------------------------------------------------------------

    def owned(self) -> frozenset:
        with self.lock:
            return self.assigned

    def event_log(self) -> list[tuple[str, frozenset]]:
        with self.lock:
            return list(self.events)

    def consumed(self) -> list[tuple[str, int, int, bytes]]:
        with self.lock:
            return list(self.messages)

    def member_id(self) -> str:
        """The member id as of the last poll (read by the poll thread: memberid() called
        from another thread while one polls blocks in confluent-kafka 2.16, as commit does)."""
        with self.lock:
            return self.last_member_id

    def _paused(self, call):
        """Runs `call()` while the poll thread is stopped. (A synchronous commit made while
        another thread polls the same consumer never completes in confluent-kafka 2.16: the
        commit is not even sent. Applications commit from their poll loop anyway.)"""
        polling = self._thread is not None
        if polling:
            self.pause_polling()
        try:
            return call()
        finally:
            if polling:
                self.resume_polling()

    def commit(self) -> dict:
        """Synchronous commit of the consumed positions: {(topic, partition): offset}."""
        result = self._paused(lambda: self.consumer.commit(asynchronous=False))
        assert all(tp.error is None for tp in result), result
        return {(tp.topic, tp.partition): tp.offset for tp in result}

    def commit_offsets(self, offsets: dict) -> None:
        """Synchronous commit of {(topic, partition): (offset, metadata)}."""
        tps = [TopicPartition(t, p, o, metadata=md) if md is not None else TopicPartition(t, p, o)
               for (t, p), (o, md) in offsets.items()]
        result = self._paused(lambda: self.consumer.commit(offsets=tps, asynchronous=False))
        assert all(tp.error is None for tp in result), result

    def committed(self, tps: list[tuple[str, int]]) -> dict:
        got = self._paused(lambda: self.consumer.committed(
            [TopicPartition(t, p) for t, p in tps], timeout=OP_TIMEOUT_S))
        assert all(tp.error is None for tp in got), got
        return {(tp.topic, tp.partition): tp.offset for tp in got}


def all_partitions(topic: str, n: int) -> frozenset:
    return frozenset((topic, p) for p in range(n))


def split_ok(owned: list[frozenset], topic: str, n: int, sizes: list[int] | None = None) -> bool:
    """True when `owned` (one set per member) covers all `n` partitions exactly once, every
    member owns something, and (if given) the sorted sizes are `sizes`."""
    union = frozenset().union(*owned)
    disjoint = sum(len(o) for o in owned) == len(union)
    if union != all_partitions(topic, n) or not disjoint or not all(owned):
        return False
    return sizes is None or sorted(len(o) for o in owned) == sorted(sizes)


def wait_split(members: list[Member], topic: str, n: int, sizes: list[int],
               timeout_s: float = WAIT_S, interval_s: float = 0.02) -> list[frozenset]:
    """Waits until `members` own the `n` partitions of `topic` exactly once, in `sizes`."""
    last = []

    def ok():
        last[:] = [m.owned() for m in members]
        return split_ok(last, topic, n, sizes)

    try:
        wait_until(ok, f"{[m.name for m in members]} to split {topic}'s {n} partitions as "
                       f"{sizes}", timeout_s, interval_s)
    except AssertionError as e:
        raise AssertionError(f"{e}; last seen: {[sorted(p for _, p in o) for o in last]}; "
                             f"errors: {[m.errors for m in members]}") from None
    return last


def by_partition(messages) -> dict:
    """{(topic, partition): [offsets in order]} of (topic, partition, offset, value) tuples."""
    out = defaultdict(list)
    for t, p, o, _v in messages:
        out[(t, p)].append(o)
    return dict(out)


def describe(bootstrap: str, group: str):
    """confluent-kafka's ConsumerGroupDescription of `group`."""
    return admin(bootstrap).describe_consumer_groups([group])[group].result(timeout=WAIT_S)


def check_description(bootstrap: str, group: str, members: list[Member], assignor: str):
    """DescribeGroups agrees with the members: Stable, their ids and client ids, each one's
    assignment as it sees it, the assignor all agreed on."""
    def stable():
        d = describe(bootstrap, group)
        return d if d.state == ConsumerGroupState.STABLE else None

    d = wait_until(stable, f"{group} to be described Stable")
    assert d.partition_assignor == assignor
    assert d.is_simple_consumer_group is False
    described = {m.member_id: ({(tp.topic, tp.partition) for tp in m.assignment.topic_partitions},
                               m.client_id, m.group_instance_id) for m in d.members}
    assert described == {m.member_id(): (set(m.owned()), m.name, m.conf.get("group.instance.id"))
                         for m in members}
    return d


# -- a raw coordinator probe ----------------------------------------------------------------
# librdkafka and kafka-python retry coordinator errors out of sight (or, in some admin
# paths, not at all), so a test cannot see which error a broker answered. These requests,
# encoded by hand, show it: FindCoordinator v4, OffsetFetch v8 and ListGroups v4 (all
# flexible), many groups per request, on one connection, so a probe is quick.

NOT_COORDINATOR = 16
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _compact_str(s: str) -> bytes:
    raw = s.encode()
    return _uvarint(len(raw) + 1) + raw


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def take(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str | None:
        n = self.uvarint()
        if n == 0:
            return None
        raw = self.data[self.pos:self.pos + n - 1]
        self.pos += n - 1
        return raw.decode()

    def skip_tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.pos += self.uvarint()


class RawConn:
    """One connection for hand-encoded flexible requests (request header v2)."""

    def __init__(self, port: int, timeout_s: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.correlation_id = 0

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _recv(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "connection closed"
            data += chunk
        return data

    def request(self, api_key: int, version: int, body: bytes) -> _Reader:
        self.correlation_id += 1
        header = struct.pack(">hhi", api_key, version, self.correlation_id)
        header += struct.pack(">h", 5) + b"probe" + b"\x00"
        frame = header + body
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        (size,) = struct.unpack(">i", self._recv(4))
        r = _Reader(self._recv(size))
        assert r.take(">i") == self.correlation_id
        r.skip_tags()  # response header v1
        return r

    def find_coordinators(self, groups: list[str]) -> dict:
        """{group: (error, node id)} from one FindCoordinator v4."""
        body = b"\x00" + _uvarint(len(groups) + 1) + b"".join(map(_compact_str, groups))
        r = self.request(10, 4, body + b"\x00")
        r.take(">i")  # throttle_time_ms
        out = {}
        for _ in range(r.uvarint() - 1):
            key = r.string()
            node = r.take(">i")
            r.string()  # host
            r.take(">i")  # port
            error = r.take(">h")
            r.string()  # error_message
            r.skip_tags()
            out[key] = (error, node)
        return out

    def offset_fetch_errors(self, groups: list[str]) -> dict:
        """{group: group-level error} from one OffsetFetch v8 asking for no partitions."""
        body = _uvarint(len(groups) + 1)
        for g in groups:
            body += _compact_str(g) + _uvarint(1) + b"\x00"  # topics: [], no tags
        r = self.request(9, 8, body + b"\x00" + b"\x00")  # require_stable false, no tags
        r.take(">i")  # throttle_time_ms
        out = {}
        for _ in range(r.uvarint() - 1):
            group = r.string()
            assert r.uvarint() == 1, "asked for no topics"
            out[group] = r.take(">h")
            r.skip_tags()
        return out

    def list_groups(self) -> tuple[int, set]:
        """(error, {group ids}) from one ListGroups v4 with no state filter."""
        r = self.request(16, 4, _uvarint(1) + b"\x00")
        r.take(">i")  # throttle_time_ms
        error = r.take(">h")
        groups = set()
        for _ in range(r.uvarint() - 1):
            groups.add(r.string())
            r.string()  # protocol_type
            r.string()  # group_state
            r.skip_tags()
        return error, groups


def wait_coordinator_ready(port: int, groups: list[str], timeout_s: float = WAIT_S) -> None:
    """Waits until the coordinator of each group answers OffsetFetch without error: after a
    broker start the __consumer_offsets partitions are loaded first (clients retry the
    coordinator errors of that time, but some admin calls of librdkafka 2.16 hang or fail
    on them: see test_groups_admin.test_coordinator_answers_once_found)."""
    with RawConn(port) as conn:
        def ready():
            found = conn.find_coordinators(groups)
            fetched = conn.offset_fetch_errors(groups)
            return all(found[g][0] == 0 and fetched[g] == 0 for g in groups)

        wait_until(ready, f"the coordinators of {groups} to be ready", timeout_s,
                   interval_s=0.01)


def restart_broker(broker) -> None:
    """SIGKILLs and restarts `broker`, then waits until its group coordinator serves again.
    The shared AdminClient is dropped: after a restart librdkafka 2.16 re-bootstraps, and an
    admin request of the old handle may then sit on a decommissioned broker handle until it
    times out (seen with ListConsumerGroupOffsets)."""
    broker.restart()
    forget_admins()
