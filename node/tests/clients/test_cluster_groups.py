"""SIGKILL the group coordinator of a 3-node cluster while two confluent-kafka members
consume and commit: the members move to the new coordinator and no acknowledged commit is
lost.

Three `gregor` processes on loopback (`cluster.Cluster`, every node with
`group.initial.rebalance.delay.ms=0`), one topic with PARTITIONS partitions and replication
factor 3, PRODUCED_UP_FRONT records per partition produced up front and PRODUCE_PER_S a
second by a producer thread (acks=all) for the whole test. Two confluent-kafka consumers
(`Committer`) in one group `subscribe` to it (range assignor, `enable.auto.commit=False`).
Each is polled by its own thread, which also makes its commits (a synchronous commit from
another thread while one polls hangs in confluent-kafka 2.16): every COMMIT_EVERY_S, a
synchronous `commit(offsets=...)` of the next offset of one owned partition it has read
past its last commit (the one tried longest ago; one partition per commit, so that a commit
in flight when the coordinator dies overwrites one partition, not all). Every attempt is
recorded (member, offsets, start, end, errors); one that returned with no error is
*acknowledged*.

The coordinator is the leader of `__consumer_offsets` partition `partition_for(group)`
(Kafka's `Utils.abs(groupId.hashCode) % 50`): `find_coordinator` waits until the
AdminClient's `describe_consumer_groups` names that leader (from Metadata), a running node,
with the group Stable.

Each round (ROUNDS; no new one after BUDGET_S), seeded:
1. the members consume and commit for RUN_BEFORE_KILL_S; in half the rounds the kill then
   waits for a member to have a commit in flight;
2. SIGKILL the coordinator, and at once one member (the *frozen* one, picked by the seed)
   stops starting commits (one in flight completes);
3. wait until the other member has a commit acknowledged that it started after the kill:
   the *kill-to-first-commit* time (asserted below FAILOVER_BOUND_S);
4. read the committed offsets from the new coordinator (`list_consumer_group_offsets`):
   the frozen member's partitions must hold their last acknowledged commit, which is
   usually one the killed coordinator acknowledged moments before it died (reported as
   `read_back_at_once`: partition -> ms between that acknowledgement and the kill). Without
   the freeze the members' next commits would overwrite a lost one before anyone saw it;
5. the frozen member commits again; `find_coordinator` must name another node;
6. restart the killed node, wait until it has caught up on the group's partition, and ask
   every node directly (`raw_probe`: FindCoordinator v1 and OffsetFetch v3 on the wire,
   since librdkafka retries coordinator errors out of sight): all name the same
   coordinator, it serves the offsets, every other node (the restarted one included)
   answers NOT_COORDINATOR and serves none;
7. *drain*: both members commit what they have read and stop; the committed offsets must be
   the last acknowledged commits (`check_committed`); then commits resume.

At the end: a record produced to every partition after the last restart is consumed; the
group is described Stable with both members, each partition assigned to exactly one of
them (as the members themselves see it too); after a final drain, a fresh AdminClient's
`list_consumer_group_offsets`, a fresh consumer's `committed()` and a raw OffsetFetch of
the coordinator (while every other node answers NOT_COORDINATOR) each return exactly the
last acknowledged commit of every partition, past the records produced last.

`check_committed`: the committed offset of a partition is its last acknowledged commit; an
attempt that overlapped it in time, or failed after it started, may have been stored
instead and is accepted; anything lower than the last acknowledged commit is a LOST
commit. Also checked over the whole run: each time a member is assigned a partition, the
first record it reads is at or past the last commit acknowledged before the assignment
(the new owner starts from the committed offset), and no commit names an offset past what
its member had read.

Counted and reported, not failed on (except fatal errors): consumer errors (poll,
`error_cb`), failed commits by error, rebalance callbacks (in the rounds and in all), and
the members' librdkafka log lines by coordinator error (debug context "cgrp" is on by
default to show what librdkafka retries: NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE,
COORDINATOR_LOAD_IN_PROGRESS, ...). No node log may have a panic; all nodes run at the end.

CLUSTER_GROUPS_SEED=<n> replays the schedule (topic and group names, hence the group's
`__consumer_offsets` partition; run and down times; the frozen member; which kills wait for
a commit in flight); which node leads what is up to the cluster. Run with `-s` to see each
round and the summary line; a failure message carries both. The members' librdkafka lines,
with the kills and restarts interleaved, are kept in `rdkafka-members.log` in the test's
tmp dir (times are when Python received them), the nodes' logs in `node<id>/broker.log`;
CLUSTER_GROUPS_RDKAFKA_DEBUG sets other debug contexts (`none`: off).
"""

from __future__ import annotations

import logging
import os
import random
import re
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
from confluent_kafka import (Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions,
                             KafkaError, KafkaException, Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic

import rawkafka
from cluster import Cluster, gregor_cluster  # noqa: F401  (the fixture)

pytestmark = pytest.mark.gregor_only

BROKER_CONFIG = {"group.initial.rebalance.delay.ms": 0}
PARTITIONS = 4
PRODUCED_UP_FRONT = 100  # per partition
PRODUCE_PER_S = 100  # by the producer thread, spread over the partitions
OFFSETS_TOPIC = "__consumer_offsets"
OFFSETS_PARTITIONS = 50  # offsets.topic.num.partitions (the default)
ROUNDS = 3
BUDGET_S = 40.0  # no new round starts after this long (the whole test: ~60 s at most)
RUN_BEFORE_KILL_S = (0.5, 1.5)  # consuming and committing on a settled coordinator
DOWN_S = (0.0, 0.5)  # after the members moved, before the killed node is restarted
COMMIT_EVERY_S = 0.05
MID_COMMIT_KILLS = 0.5  # the share of kills made just after a member sent a commit
FAILOVER_BOUND_S = 10.0  # kill to a commit acknowledged by the new coordinator, per member
WAIT_S = 30.0  # generous bound of every other wait
POLL_S = 0.05
HEARTBEAT_MS = 500
SESSION_MS = 10000
# librdkafka doubles its reconnect backoff up to this; its default (10 s) makes a node that
# was killed a few seconds ago look unreachable long after it is back (see
# test_cluster_crash.py).
RECONNECT_BACKOFF_MAX_MS = 1000
# librdkafka debug contexts of the members: "cgrp" logs the coordinator errors it retries out
# of sight (counted in the summary); CLUSTER_GROUPS_RDKAFKA_DEBUG=none turns it off.
RDKAFKA_DEBUG = os.environ.get("CLUSTER_GROUPS_RDKAFKA_DEBUG", "cgrp")
# Member errors are counted, not failed on (a moving coordinator or partition leader
# causes many), except fatal ones.
FATAL = re.compile(r"fatal", re.I)
# What the members' librdkafka log lines (debug "cgrp" included) are counted by: the
# coordinator and group errors it answers by retrying, and the lost connections.
LOG_PATTERNS = {name: re.compile(pattern, re.I) for name, pattern in {
    "NOT_COORDINATOR": r"NOT_COORDINATOR|Broker: Not coordinator",
    "COORDINATOR_NOT_AVAILABLE": r"COORDINATOR_NOT_AVAILABLE|Broker: Coordinator not available",
    "COORDINATOR_LOAD_IN_PROGRESS":
        r"COORDINATOR_LOAD_IN_PROGRESS|Broker: Coordinator load in progress",
    "REBALANCE_IN_PROGRESS": r"REBALANCE_IN_PROGRESS|Broker: Group rebalance in progress",
    "ILLEGAL_GENERATION": r"ILLEGAL_GENERATION|generation id is not valid",
    "UNKNOWN_MEMBER_ID": r"UNKNOWN_MEMBER_ID|Broker: Unknown member",
    "MEMBER_ID_REQUIRED": r"MEMBER_ID_REQUIRED|needs a valid member ID",
    "disconnected/refused": r"Disconnected|Connection refused",
    "commit waiting for the coordinator": r"unable to OffsetCommit",
}.items()}


def java_string_hash(s: str) -> int:
    """Java's String.hashCode over UTF-16 code units, as a signed 32-bit int."""
    h = 0
    units = s.encode("utf-16-be")
    for i in range(0, len(units), 2):
        h = (31 * h + int.from_bytes(units[i:i + 2], "big")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def partition_for(group: str, partitions: int = OFFSETS_PARTITIONS) -> int:
    """Kafka's `Utils.abs(groupId.hashCode) % partitions` (Utils.abs maps MIN_VALUE to 0)."""
    h = java_string_hash(group)
    return (0 if h == -(1 << 31) else abs(h)) % partitions


def test_partition_for_matches_kafka():
    """Known values of Java's String.hashCode, and Utils.abs's MIN_VALUE edge."""
    assert java_string_hash("") == 0
    assert java_string_hash("ab") == 97 * 31 + 98
    assert java_string_hash("hello") == 99162322
    assert java_string_hash("hello world") == 1794106052  # wraps
    assert java_string_hash("\U0001F600") == 0xD83D * 31 + 0xDE00  # two UTF-16 units
    assert java_string_hash("polygenelubricants") == -(1 << 31)
    assert partition_for("polygenelubricants") == 0
    assert partition_for("hello") == 99162322 % 50
    neg = java_string_hash("my-group")
    assert neg < 0 and partition_for("my-group") == -neg % 50


def wait_until(what: str, attempt, timeout_s: float = WAIT_S, every_s: float = POLL_S):
    """Calls `attempt()` until it returns something other than None (which is returned);
    KafkaExceptions and socket errors count as None. Fails after `timeout_s`, naming the
    last exception."""
    deadline = time.monotonic() + timeout_s
    last_exc = None
    while True:
        try:
            got = attempt()
            if got is not None:
                return got
        except (KafkaException, OSError) as e:
            last_exc = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}"
                                 + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(every_s)


class CapturingLogger(logging.Logger):
    """Keeps every librdkafka log line of the members (time, level, text) and passes
    it on to the "rdkafka" logger (pytest shows it for failed tests)."""

    def __init__(self):
        super().__init__("rdkafka.members", logging.DEBUG)
        self.parent = logging.getLogger("rdkafka")
        self.lines: list[tuple[float, int, str]] = []
        self._lock = threading.Lock()

    def handle(self, record: logging.LogRecord) -> None:
        with self._lock:
            self.lines.append((time.monotonic(), record.levelno, record.getMessage()))
        super().handle(record)

    def save(self, path, marks: list[tuple[float, str]], t0: float) -> None:
        with self._lock:
            events = [(at, msg) for at, _, msg in self.lines] + marks
        events.sort(key=lambda e: e[0])
        with open(path, "w") as f:
            for at, msg in events:
                print(f"{at - t0:9.3f} {msg}", file=f)


_ADMINS: list[AdminClient] = []  # every one made; a collected client fails its futures


def admin(bootstrap: str, renew: bool = False) -> AdminClient:
    """The current AdminClient; `renew` makes a new one (done after each kill and restart:
    librdkafka 2.16 may keep an admin request on the handle of a killed broker until it
    times out). Old ones are kept until the test ends."""
    if renew or not _ADMINS:
        _ADMINS.append(AdminClient({"bootstrap.servers": bootstrap,
                                    "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS},
                                   logger=logging.getLogger("rdkafka")))
    return _ADMINS[-1]


@dataclass
class Attempt:
    """One synchronous commit: what it asked, when, and how each partition fared."""
    member: str
    offsets: dict[int, int]  # partition -> next offset to read
    start: float
    end: float = 0.0
    error: str | None = None  # the exception's error name, if commit() raised
    partition_errors: dict[int, str] = field(default_factory=dict)

    def acked(self, p: int) -> bool:
        return self.error is None and p in self.offsets and p not in self.partition_errors


class Committer:
    """One group member polled by its own thread, which also makes its commits (a
    synchronous commit from another thread while one polls hangs in confluent-kafka 2.16).

    `timeline` holds, in the order the thread saw them, ("assign"|"revoke"|"lost",
    partitions), ("msg", partition, offset), ("commit", Attempt) and ("error", name) with
    their times. `mode` is set by the test: "open" (commit as you go), "drain" (commit what
    was read when the drain began, then go "closed"), "closed" (read, do not commit)."""

    def __init__(self, name: str, bootstrap: str, group: str, topic: str,
                 log: CapturingLogger):
        self.name = name
        self.topic = topic
        self.errors: list[tuple[float, str, str]] = []  # (time, source, error name)
        conf = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": name,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "range",
            "heartbeat.interval.ms": HEARTBEAT_MS,
            "session.timeout.ms": SESSION_MS,
            "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
            "error_cb": lambda e: self._error("error_cb", e),
        }
        if RDKAFKA_DEBUG not in ("", "none"):
            conf["debug"] = RDKAFKA_DEBUG
        self.consumer = Consumer(conf, logger=log)
        self.lock = threading.Lock()
        self.timeline: list[tuple] = []
        self.owned: frozenset[int] = frozenset()
        self.position: dict[int, int] = {}  # owned partition -> next offset after the last read
        self.acked_mine: dict[int, int] = {}  # owned partition -> my last acknowledged commit
        self.mode = "open"
        self.drain_target: dict[int, int] = {}
        self.committing = False
        self.last_tried: dict[int, float] = {}  # partition -> start of its last attempt
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"member-{name}", daemon=True)

    # -- the member's thread -------------------------------------------------------------

    def _error(self, source: str, err: KafkaError) -> None:
        with self.lock:
            self.errors.append((time.monotonic(), source, err.name()))
            self.timeline.append((time.monotonic(), "error", f"{source}:{err.name()}"))

    def _rebalanced(self, kind: str):
        def cb(_consumer, partitions):
            parts = frozenset(tp.partition for tp in partitions)
            with self.lock:
                self.timeline.append((time.monotonic(), kind, parts))
                if kind == "assign":
                    self.owned = self.owned | parts
                else:
                    self.owned = self.owned - parts
                for p in parts:
                    self.position.pop(p, None)
                    self.acked_mine.pop(p, None)
                    self.drain_target.pop(p, None)
        return cb

    def _run(self) -> None:
        try:
            c = self.consumer
            c.subscribe([self.topic], on_assign=self._rebalanced("assign"),
                        on_revoke=self._rebalanced("revoke"), on_lost=self._rebalanced("lost"))
            last_commit = 0.0
            while not self.stop.is_set():
                m = c.poll(POLL_S)
                now = time.monotonic()
                if m is not None:
                    if m.error():
                        self._error("poll", m.error())
                    else:
                        with self.lock:
                            self.timeline.append((now, "msg", m.partition(), m.offset()))
                            if m.partition() in self.owned:
                                self.position[m.partition()] = m.offset() + 1
                if now - last_commit >= COMMIT_EVERY_S:
                    todo = self._to_commit()
                    if todo:
                        self._commit(todo)
                        last_commit = time.monotonic()
        except BaseException as e:  # noqa: BLE001  (reported by the test)
            self.failure = e

    def _to_commit(self) -> dict[int, int]:
        with self.lock:
            if self.mode == "open":
                want = {p: o for p, o in self.position.items() if p in self.owned}
            elif self.mode == "drain":
                want = {p: o for p, o in self.drain_target.items() if p in self.owned}
            else:
                return {}
            todo = {p: o for p, o in want.items() if self.acked_mine.get(p) != o}
            if self.mode == "drain" and not todo:
                self.mode = "closed"
            if not todo:
                return {}
            # One partition per commit, the one tried longest ago: a commit in flight when
            # the coordinator dies then overwrites one partition, and the others still show
            # what the old coordinator acknowledged last.
            p = min(todo, key=lambda q: (self.last_tried.get(q, 0.0), q))
            self.last_tried[p] = time.monotonic()
            self.committing = True
            return {p: todo[p]}

    def _commit(self, offsets: dict[int, int]) -> None:
        attempt = Attempt(self.name, dict(offsets), time.monotonic())
        tps = [TopicPartition(self.topic, p, o) for p, o in sorted(offsets.items())]
        try:
            result = self.consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as e:
            attempt.error = e.args[0].name()
            result = []
        attempt.end = time.monotonic()
        for tp in result:
            if tp.error is not None:
                attempt.partition_errors[tp.partition] = tp.error.name()
            elif tp.offset != offsets.get(tp.partition):
                attempt.partition_errors[tp.partition] = f"returned offset {tp.offset}"
        missing = set(offsets) - {tp.partition for tp in result}
        if attempt.error is None and missing:
            attempt.error = f"no result for partitions {sorted(missing)}"
        with self.lock:
            self.timeline.append((attempt.end, "commit", attempt))
            for p, o in offsets.items():
                if attempt.acked(p) and p in self.owned:
                    self.acked_mine[p] = o
            self.committing = False

    # -- the test's side -------------------------------------------------------------------

    def start(self) -> "Committer":
        self.thread.start()
        return self

    def assignment(self) -> frozenset[int]:
        with self.lock:
            return self.owned

    def attempts(self) -> list[Attempt]:
        with self.lock:
            return [e[2] for e in self.timeline if e[1] == "commit"]

    def events(self) -> list[tuple]:
        with self.lock:
            return list(self.timeline)

    def begin_drain(self) -> None:
        with self.lock:
            self.drain_target = {p: o for p, o in self.position.items() if p in self.owned}
            self.mode = "drain"

    def drained(self) -> bool:
        """Closed, and no commit in flight."""
        with self.lock:
            return self.mode == "closed" and not self.committing

    def in_commit(self) -> bool:
        with self.lock:
            return self.committing

    def freeze(self) -> None:
        """Starts no more commits (one in flight completes)."""
        with self.lock:
            self.mode = "closed"

    def owned_since(self, since: float) -> frozenset[int]:
        """The partitions owned now and not revoked, lost or assigned since `since`."""
        with self.lock:
            moved = {p for at, kind, *rest in self.timeline
                     if at >= since and kind in ("assign", "revoke", "lost") for p in rest[0]}
            return self.owned - moved

    def reopen(self) -> None:
        with self.lock:
            self.mode = "open"

    def close(self) -> None:
        self.stop.set()
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), f"member {self.name}: poll thread hung"
        self.consumer.close()


class NumberedProducer:
    """A thread producing "0", "1", ... round-robin over the partitions at PRODUCE_PER_S
    (acks=all); counts delivery reports."""

    def __init__(self, bootstrap: str, topic: str):
        self.topic = topic
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                                  "linger.ms": 5, "message.timeout.ms": 30000,
                                  "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS},
                                 logger=logging.getLogger("rdkafka"))
        self.sent = 0
        self.reports: Counter = Counter()
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="producer", daemon=True)

    def _report(self, err, _msg):
        self.reports["ok" if err is None else err.name()] += 1

    def _run(self):
        try:
            t0 = time.monotonic()
            while not self.stop.is_set():
                due = int((time.monotonic() - t0) * PRODUCE_PER_S)
                while self.sent < due:
                    self.producer.produce(self.topic, str(self.sent).encode(),
                                          partition=self.sent % PARTITIONS,
                                          on_delivery=self._report)
                    self.sent += 1
                self.producer.poll(0.01)
            self.producer.flush(WAIT_S)
        except BaseException as e:  # noqa: BLE001
            self.failure = e


def produce_sync(bootstrap: str, topic: str, values_by_partition: dict[int, list[bytes]]):
    """Produces and waits for every record (acks=all); {partition: [offsets]}."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "message.timeout.ms": int(WAIT_S * 1000),
                  "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS},
                 logger=logging.getLogger("rdkafka"))
    out: dict[int, list[int]] = {}
    errors = []

    def report(err, msg):
        if err is not None:
            errors.append(err.name())
        else:
            out.setdefault(msg.partition(), []).append(msg.offset())

    for part, values in values_by_partition.items():
        for v in values:
            p.produce(topic, v, partition=part, on_delivery=report)
            p.poll(0)
    assert p.flush(WAIT_S) == 0, "records not delivered in time"
    assert not errors, f"delivery errors {errors}"
    return out


def create_topic_rf3(bootstrap: str, topic: str) -> None:
    """CreateTopics with replication factor 3, retried while the controller has not yet
    registered all three brokers (INVALID_REPLICATION_FACTOR)."""
    def attempt():
        f = admin(bootstrap).create_topics(
            [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=3)],
            operation_timeout=10)[topic]
        try:
            f.result(timeout=WAIT_S)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        return True

    wait_until(f"create {topic}", attempt, every_s=0.2)

    def ready():
        t = admin(bootstrap).list_topics(topic=topic, timeout=5).topics.get(topic)
        if t is None or t.error is not None or len(t.partitions) != PARTITIONS:
            return None
        if not all(p.leader >= 0 and len(p.replicas) == 3 for p in t.partitions.values()):
            return None
        return t

    wait_until(f"{topic} with {PARTITIONS} partitions and leaders", ready)


def offsets_leader(cluster: Cluster, partition: int) -> int | None:
    """The leader Metadata names for `__consumer_offsets` partition `partition`."""
    md = admin(cluster.bootstrap).list_topics(topic=OFFSETS_TOPIC, timeout=5)
    t = md.topics.get(OFFSETS_TOPIC)
    if t is None or t.error is not None or partition not in t.partitions:
        return None
    return t.partitions[partition].leader


def describe(cluster: Cluster, group: str):
    return admin(cluster.bootstrap).describe_consumer_groups(
        [group], request_timeout=10)[group].result(timeout=15)


def find_coordinator(cluster: Cluster, group: str, not_node: int | None = None) -> int:
    """The coordinator `describe_consumer_groups` names, once it is a running node (other
    than `not_node`), the leader Metadata names for the group's `__consumer_offsets`
    partition, and the group is described Stable there."""
    part = partition_for(group)

    def attempt():
        d = describe(cluster, group)
        node = d.coordinator.id if d.coordinator is not None else None
        if node not in cluster.running() or node == not_node:
            return None
        if offsets_leader(cluster, part) != node or d.state != ConsumerGroupState.STABLE:
            return None
        return node

    return wait_until(f"the coordinator of {group} ({OFFSETS_TOPIC}-{part}'s leader)", attempt,
                      every_s=0.2)


def offsets_partition_caught_up(cluster: Cluster, node: int, part: int) -> bool:
    """Whether `node` has on disk every batch of `__consumer_offsets`-`part` below the high
    watermark its leader reports (read from the newest segment's batch headers)."""
    leader = offsets_leader(cluster, part)
    if leader not in cluster.running():
        return False
    with rawkafka.Connection("127.0.0.1", cluster.kafka_ports[leader]) as conn:
        error, hw, _ = conn.fetch(conn.fetch_version(), OFFSETS_TOPIC, part, 0)
    if error != 0:
        return False
    dirs = [d for d in cluster.node(node).partition_dirs(OFFSETS_TOPIC)
            if d.name == f"{OFFSETS_TOPIC}-{part}"]
    if len(dirs) != 1:
        return False
    segments = sorted(dirs[0].glob("*.log"))
    if not segments:
        return False
    batches = rawkafka.parse_batches(segments[-1].read_bytes(), check_crc=False)
    end = batches[-1].last_offset + 1 if batches else int(segments[-1].stem)
    return end >= hw


NOT_COORDINATOR = 16


def raw_probe(port: int, group: str, topic: str) -> tuple[int, int, int, dict[int, int]]:
    """Asks one node directly, on the wire (librdkafka retries coordinator errors out of
    sight): FindCoordinator v1 for `group` and OffsetFetch v3 for the topic's partitions.
    (FindCoordinator error, its node id, OffsetFetch group error, {partition: offset} of the
    partitions answered without error)."""
    with rawkafka.Connection("127.0.0.1", port) as conn:
        r = conn.request(10, 1, rawkafka._string(group) + struct.pack(">b", 0))
        r.take(">i")  # throttle_time_ms
        find_error = r.take(">h")
        r.string()  # error_message
        node = r.take(">i")
        body = rawkafka._string(group) + struct.pack(">i", 1) + rawkafka._string(topic) + \
            struct.pack(">i", PARTITIONS) + b"".join(struct.pack(">i", p)
                                                      for p in range(PARTITIONS))
        r = conn.request(9, 3, body)
        r.take(">i")  # throttle_time_ms
        offsets = {}
        for _ in range(r.take(">i")):
            r.string()
            for _ in range(r.take(">i")):
                p, offset = r.take(">iq")
                r.string()  # metadata
                if r.take(">h") == 0:
                    offsets[p] = offset
        fetch_error = r.take(">h")
    return find_error, node, fetch_error, offsets


def coordinator_answers(cluster: Cluster, group: str, topic: str, part: int):
    """Every running node asked directly, while Metadata names one leader of the group's
    `__consumer_offsets` partition before and after: that leader, and the problems (every
    node must name it in FindCoordinator; it must serve OffsetFetch, every other node must
    answer NOT_COORDINATOR and serve no offset). (leader, {node: answer}, problems), or
    None when the leader moved meanwhile."""
    before = offsets_leader(cluster, part)
    answers = {n: raw_probe(cluster.kafka_ports[n], group, topic) for n in cluster.running()}
    if offsets_leader(cluster, part) != before or before not in answers:
        return None
    problems = []
    for n, (find_error, node, fetch_error, offsets) in sorted(answers.items()):
        if find_error != 0 or node != before:
            problems.append(f"node {n}: FindCoordinator answers error {find_error}, node {node}")
        if n == before and (fetch_error != 0 or sorted(offsets) != list(range(PARTITIONS))):
            problems.append(f"node {n} (coordinator): OffsetFetch error {fetch_error}, "
                            f"offsets {offsets}")
        if n != before and (fetch_error != NOT_COORDINATOR or offsets):
            problems.append(f"node {n} (not the coordinator): OffsetFetch error "
                            f"{fetch_error}, offsets {offsets}")
    return before, answers, problems


def check_coordinator_answers(cluster: Cluster, group: str, topic: str, part: int, what: str):
    """`coordinator_answers` until it has no problems; fails with the last ones. Returns the
    coordinator's offsets."""
    last = []

    def attempt():
        try:
            got = coordinator_answers(cluster, group, topic, part)
        except OSError as e:  # a node not listening yet (or any more)
            last[:] = [repr(e)]
            return None
        if got is None:
            return None
        leader, answers, problems = got
        last[:] = problems
        return None if problems else answers[leader][3]

    try:
        return wait_until(what, attempt)
    except AssertionError as e:
        raise AssertionError(f"{e}: {last}") from None


def committed_by_admin(cluster: Cluster, group: str, topic: str) -> dict[int, int]:
    req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p)
                                               for p in range(PARTITIONS)])
    got = admin(cluster.bootstrap).list_consumer_group_offsets(
        [req], request_timeout=10)[group].result(timeout=15)
    errors = [(tp.partition, tp.error) for tp in got.topic_partitions if tp.error is not None]
    assert not errors, f"list_consumer_group_offsets errors {errors}"
    return {tp.partition: tp.offset for tp in got.topic_partitions}


def committed_by_consumer(cluster: Cluster, group: str, topic: str) -> dict[int, int]:
    """A fresh consumer of the group (not subscribed: it does not join) asks `committed()`."""
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group,
                  "enable.auto.commit": False,
                  "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS},
                 logger=logging.getLogger("rdkafka"))
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=15)
    finally:
        c.close()
    errors = [(tp.partition, tp.error) for tp in got if tp.error is not None]
    assert not errors, f"committed() errors {errors}"
    return {tp.partition: tp.offset for tp in got}


def expected_committed(attempts: list[Attempt]) -> dict[int, tuple[int, set[int]]]:
    """Per partition: (the last acknowledged commit, the offsets a correct coordinator may
    hold): the last acknowledged one (latest end), plus those of attempts that overlapped
    it in time, plus those of failed attempts made after it (their write may have happened
    before the failure was reported)."""
    out = {}
    for p in range(PARTITIONS):
        acked = [a for a in attempts if a.acked(p)]
        if not acked:
            continue
        last = max(acked, key=lambda a: a.end)
        allowed = {last.offsets[p]}
        for a in attempts:
            if a is last or p not in a.offsets:
                continue
            overlaps = a.start < last.end and a.end > last.start
            failed_after = not a.acked(p) and a.start >= last.start
            if overlaps or failed_after:
                allowed.add(a.offsets[p])
        out[p] = (last.offsets[p], allowed)
    return out


def check_committed(got: dict[int, int], attempts: list[Attempt], how: str,
                    only: list[int] | None = None) -> list[str]:
    """Problems with the committed offsets `got` (read by `how`) against the attempts (of
    the partitions in `only`, if given)."""
    problems = []
    for p, (last, allowed) in sorted(expected_committed(attempts).items()):
        if only is not None and p not in only:
            continue
        have = got.get(p)
        if have in allowed:
            continue
        if have is None or have < 0:
            problems.append(f"{how}: partition {p}: no committed offset, last acknowledged "
                            f"commit {last} (LOST)")
        elif have < last:
            problems.append(f"{how}: partition {p}: committed {have} < last acknowledged "
                            f"commit {last} (LOST)")
        else:
            problems.append(f"{how}: partition {p}: committed {have}, last acknowledged "
                            f"{last}, allowed {sorted(allowed)}")
    return problems


def drain(members: list[Committer]) -> None:
    """Every member commits what it has read and then stops committing."""
    for m in members:
        m.begin_drain()
    wait_until("the members to commit what they read and stop committing",
               lambda: True if all(m.drained() for m in members) else None)


def assignment_problems(members: list[Committer]) -> tuple[list[str], int]:
    """Every assignment's first read against the commits acknowledged before it; also
    acknowledged commits past what the member had read. (problems, assignments checked)."""
    attempts = sorted((a for m in members for a in m.attempts()), key=lambda a: a.end)
    problems = []
    checked = 0
    for m in members:
        read_to: dict[int, int] = {}
        waiting: dict[int, tuple[float, int]] = {}  # partition -> (assigned at, floor)
        for ev in m.events():
            at, kind = ev[0], ev[1]
            if kind == "assign":
                for p in ev[2]:
                    acked = [a for a in attempts if a.acked(p) and a.end < at]
                    floor = max(acked, key=lambda a: a.end).offsets[p] if acked else -1
                    waiting[p] = (at, floor)
            elif kind in ("revoke", "lost"):
                for p in ev[2]:
                    waiting.pop(p, None)
            elif kind == "msg":
                p, off = ev[2], ev[3]
                read_to[p] = max(read_to.get(p, -1), off + 1)
                if p in waiting:
                    assigned_at, floor = waiting.pop(p)
                    checked += 1
                    if off < floor:
                        problems.append(
                            f"{m.name} assigned partition {p} at {assigned_at:.3f} first read "
                            f"offset {off} < {floor}, the last commit acknowledged before "
                            f"(LOST commit)")
            elif kind == "commit":
                a = ev[2]
                for p, o in a.offsets.items():
                    if o > read_to.get(p, -1):
                        problems.append(f"{m.name} committed {p}@{o} past what it read "
                                        f"({read_to.get(p)})")
    return problems, checked


@dataclass
class Round:
    killed: int
    killed_at: float
    new_coordinator: int | None = None
    first_commit_s: float | None = None  # kill -> first ack of a commit started after it
    per_member_s: dict[str, float] = field(default_factory=dict)
    leader_in_metadata_s: float | None = None
    restart_s: float | None = None
    catch_up_s: float | None = None
    restarted_at: float | None = None
    frozen: str = ""  # the member that stopped committing at the kill
    checked: list[int] = field(default_factory=list)  # its partitions read back at once
    acked_before_kill: dict[int, float] = field(default_factory=dict)  # of those: p -> age, s
    spanning: list[tuple[str, int, bool]] = field(default_factory=list)  # (member, end ms, ok)


def ms(s: float | None) -> str:
    return "?" if s is None else f"{s * 1000:.0f} ms"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("gregor_cluster", [BROKER_CONFIG], indirect=True,
                         ids=["initial-rebalance-delay-0"])
def test_coordinator_sigkill_under_committing_members(gregor_cluster: Cluster, tmp_path):
    cluster = gregor_cluster
    seed = int(os.environ.get("CLUSTER_GROUPS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"\nCLUSTER_GROUPS_SEED={seed}")
    t_start = time.monotonic()
    topic, group = f"cg-{seed}", f"group-{seed}"
    part = partition_for(group)
    b = cluster.bootstrap

    create_topic_rf3(b, topic)
    produce_sync(b, topic, {p: [f"pre-{p}-{i}".encode() for i in range(PRODUCED_UP_FRONT)]
                            for p in range(PARTITIONS)})
    log = CapturingLogger()
    members = [Committer(f"m{i}", b, group, topic, log) for i in (1, 2)]
    producer = NumberedProducer(b, topic)
    marks: list[tuple[float, str]] = []
    rounds_end = float("inf")
    rounds: list[Round] = []
    markers: dict[int, int] = {}
    final_committed: dict[str, dict[int, int]] = {}
    problems: list[str] = []
    described: dict[str, frozenset] = {}
    aborted: AssertionError | None = None  # a check or wait that failed on the way
    try:
        for m in members:
            m.start()
        producer.thread.start()

        def settled():
            owned = [m.assignment() for m in members]
            if not all(owned) or owned[0] & owned[1] or \
                    owned[0] | owned[1] != frozenset(range(PARTITIONS)):
                return None
            if not all(any(a.error is None for a in m.attempts()) for m in members):
                return None
            return True

        wait_until("both members sharing the partitions and committing", settled)
        coordinator = find_coordinator(cluster, group)
        print(f"group {group}: {OFFSETS_TOPIC}-{part}, coordinator node {coordinator}; "
              f"ready after {time.monotonic() - t_start:.1f} s")

        for r in range(ROUNDS):
            if r > 0 and time.monotonic() - t_start > BUDGET_S:
                break
            time.sleep(rng.uniform(*RUN_BEFORE_KILL_S))
            coordinator = find_coordinator(cluster, group)
            frozen = members[rng.randrange(len(members))]
            others = [m for m in members if m is not frozen]
            if rng.random() < MID_COMMIT_KILLS:
                # Aim at a commit the coordinator is handling (if one starts in time).
                deadline = time.monotonic() + 2.0
                while time.monotonic() < deadline and not any(m.in_commit() for m in members):
                    time.sleep(0.0005)
            killed_at = time.monotonic()
            cluster.kill(coordinator)
            frozen.freeze()
            admin(b, renew=True)
            marks.append((killed_at, f"==== SIGKILL node {coordinator} (coordinator); "
                                     f"{frozen.name} stops committing"))
            rnd = Round(coordinator, killed_at, frozen=frozen.name)
            rounds.append(rnd)

            def moved():
                now = time.monotonic()
                if rnd.leader_in_metadata_s is None:
                    try:
                        leader = offsets_leader(cluster, part)
                    except KafkaException:
                        leader = None
                    if leader is not None and leader != coordinator and leader > 0:
                        rnd.leader_in_metadata_s = now - killed_at
                for m in others:
                    if m.name in rnd.per_member_s:
                        continue
                    after = [a for a in m.attempts() if a.start > killed_at and a.error is None
                             and not a.partition_errors]
                    if after:
                        rnd.per_member_s[m.name] = min(a.end for a in after) - killed_at
                done = len(rnd.per_member_s) == len(others) and frozen.drained()
                return True if done else None

            wait_until(f"round {r + 1}: commits acknowledged after node {coordinator} was "
                       f"killed", moved, timeout_s=WAIT_S, every_s=0.02)
            rnd.first_commit_s = min(rnd.per_member_s.values())

            # The frozen member's partitions, read back from the new coordinator before
            # anything overwrites them: the last commits the old one acknowledged.
            got = wait_until("committed offsets from the new coordinator",
                             lambda: committed_by_admin(cluster, group, topic))
            attempts = [a for m in members for a in m.attempts()]
            rnd.checked = sorted(frozen.owned_since(killed_at))
            found = check_committed({p: got[p] for p in rnd.checked}, attempts,
                                    f"round {r + 1}, {frozen.name}'s partitions right after "
                                    f"the move", only=rnd.checked)
            problems += found
            assert not found, f"{found} (CLUSTER_GROUPS_SEED={seed})"
            for p, (last, _allowed) in expected_committed(attempts).items():
                if p in rnd.checked:
                    ends = [a.end for a in attempts if a.acked(p) and a.offsets[p] == last]
                    if max(ends) < killed_at:
                        rnd.acked_before_kill[p] = killed_at - max(ends)
            rnd.spanning = [(a.member, round((a.end - killed_at) * 1000),
                             a.error is None and not a.partition_errors)
                            for a in attempts if a.start < killed_at < a.end]
            frozen.reopen()
            rnd.new_coordinator = find_coordinator(cluster, group, not_node=coordinator)
            print(f"round {r + 1}: killed coordinator node {coordinator}; node "
                  f"{rnd.new_coordinator} coordinates; after the kill: {OFFSETS_TOPIC}-{part} "
                  f"leader in Metadata at {ms(rnd.leader_in_metadata_s)}, first commit at "
                  f"{ms(rnd.first_commit_s)} ({', '.join(sorted(rnd.per_member_s))}); "
                  f"commits in flight at the kill (member, end ms, ok) {rnd.spanning}; "
                  f"{frozen.name}'s partitions {rnd.checked} read back as acknowledged, "
                  f"acknowledged before the kill (partition: ms before): "
                  f"{ {p: round(a * 1000) for p, a in rnd.acked_before_kill.items()} }")

            time.sleep(rng.uniform(*DOWN_S))
            t0 = time.monotonic()
            cluster.restart(coordinator)
            admin(b, renew=True)
            rnd.restarted_at = time.monotonic()
            rnd.restart_s = rnd.restarted_at - t0
            marks.append((rnd.restarted_at, f"==== node {coordinator} restarted"))
            wait_until(f"round {r + 1}: node {coordinator} catches up on {OFFSETS_TOPIC}-{part}",
                       lambda: True if offsets_partition_caught_up(
                           cluster, coordinator, part) else None,
                       every_s=0.1)
            rnd.catch_up_s = time.monotonic() - rnd.restarted_at
            check_coordinator_answers(
                cluster, group, topic, part,
                f"round {r + 1}: every node naming one coordinator, which alone serves "
                f"{group}'s offsets (the restarted node {coordinator} answers NOT_COORDINATOR)")

            drain(members)
            got = wait_until("committed offsets (list_consumer_group_offsets)",
                             lambda: committed_by_admin(cluster, group, topic))
            attempts = [a for m in members for a in m.attempts()]
            found = check_committed(got, attempts, f"after round {r + 1}")
            problems += found
            assert not found, f"{found} (CLUSTER_GROUPS_SEED={seed})"
            for m in members:
                m.reopen()

        rounds_end = time.monotonic()
        # The members carry on after the last move: a record produced now is consumed.
        markers = {p: offs[0] for p, offs in produce_sync(
            b, topic, {p: [f"marker-{p}".encode()] for p in range(PARTITIONS)}).items()}
        marks.append((time.monotonic(), f"==== markers produced at {markers}"))

        def markers_read():
            read = {(ev[2], ev[3]) for m in members for ev in m.events() if ev[1] == "msg"}
            return True if all((p, o) in read for p, o in markers.items()) else None

        wait_until(f"the members to read the records produced after the last restart "
                   f"{markers}", markers_read)

        # Stable with both members, every partition owned by exactly one.
        def stable():
            d = describe(cluster, group)
            if d.state != ConsumerGroupState.STABLE or len(d.members) != 2:
                return None
            described = {md.client_id: frozenset(tp.partition
                                                  for tp in md.assignment.topic_partitions)
                         for md in d.members}
            owned = {m.name: m.assignment() for m in members}
            if described != owned:
                return None
            return d, described

        _, described = wait_until(f"{group} described Stable with both members", stable)
        coordinator = find_coordinator(cluster, group)
        drain(members)
        admin(b, renew=True)  # a fresh AdminClient
        final_committed["admin"] = wait_until(
            "committed offsets (list_consumer_group_offsets)",
            lambda: committed_by_admin(cluster, group, topic))
        final_committed["consumer"] = wait_until(
            "committed offsets (a fresh consumer's committed())",
            lambda: committed_by_consumer(cluster, group, topic))
        final_committed["raw OffsetFetch"] = check_coordinator_answers(
            cluster, group, topic, part,
            "every node naming one coordinator, which alone serves the group's offsets")
    except AssertionError as e:
        aborted = e  # reported below, with the summary
    finally:
        producer.stop.set()
        producer.thread.join(WAIT_S)
        for m in members:
            try:
                m.close()
            except AssertionError as e:
                problems.append(str(e))
        log.save(tmp_path / "rdkafka-members.log", marks, t_start)
        _ADMINS.clear()

    # ---- everything measured; now the checks ----
    attempts = [a for m in members for a in m.attempts()]
    acked_attempts = [a for a in attempts if a.error is None and not a.partition_errors]
    failed = Counter(a.error or ",".join(sorted(set(a.partition_errors.values())))
                     for a in attempts if a.error is not None or a.partition_errors)
    errors = Counter(f"{src}:{name}" for m in members for _, src, name in m.errors)
    rebalances = Counter(f"{m.name}:{ev[1]}" for m in members for ev in m.events()
                         if ev[1] in ("assign", "revoke", "lost"))
    rebalances_in_rounds = Counter(f"{m.name}:{ev[1]}" for m in members for ev in m.events()
                                   if ev[1] in ("assign", "revoke", "lost") and rounds
                                   and rounds[0].killed_at <= ev[0] <= rounds_end)
    warn_lines = [line for _, lvl, line in log.lines if lvl >= logging.WARNING]
    log_errors = Counter(name for _, _, line in log.lines
                         for name, pattern in LOG_PATTERNS.items() if pattern.search(line))
    first_commits = [r.first_commit_s for r in rounds if r.first_commit_s is not None]
    assign_problems, assignments_checked = assignment_problems(members)
    summary = {
        "seed": seed,
        "group": group, f"{OFFSETS_TOPIC} partition": part,
        "kills": [(r.killed, r.new_coordinator) for r in rounds],
        "kill_to_first_commit_ms": [round(s * 1000) for s in first_commits],
        "kill_to_commit_per_member_ms": [{k: round(v * 1000) for k, v in r.per_member_s.items()}
                                         for r in rounds],
        "offsets_leader_in_metadata_ms": [None if r.leader_in_metadata_s is None
                                          else round(r.leader_in_metadata_s * 1000)
                                          for r in rounds],
        "restart_ms": [None if r.restart_s is None else round(r.restart_s * 1000)
                       for r in rounds],
        "catch_up_ms": [None if r.catch_up_s is None else round(r.catch_up_s * 1000)
                        for r in rounds],
        "commits": len(attempts), "acked_commits": len(acked_attempts),
        "failed_commits": dict(failed),
        "consumer_errors": dict(errors),
        "rebalance_callbacks": dict(rebalances),
        "rebalance_callbacks_during_rounds": dict(rebalances_in_rounds),
        "rdkafka_warnings": len(warn_lines), "rdkafka_lines_by_error": dict(log_errors),
        "assignments_checked": assignments_checked,
        "read_back_at_once": [(r.frozen, r.checked, {p: round(a * 1000)
                                                     for p, a in r.acked_before_kill.items()})
                              for r in rounds],
        "commits_in_flight_at_kill": [r.spanning for r in rounds],
        "produced": producer.sent, "produce_reports": dict(producer.reports),
        "messages_read": sum(1 for m in members for ev in m.events() if ev[1] == "msg"),
        "node_warn_error_lines": len(cluster.grep_logs(" WARN ") + cluster.grep_logs(" ERROR ")),
        "wall_s": round(time.monotonic() - t_start, 1),
    }
    print(f"CLUSTER_GROUPS_SEED={seed} summary {summary}")
    where = f"(CLUSTER_GROUPS_SEED={seed}; {summary})"
    if aborted is not None:
        raise AssertionError(f"{aborted} {where}") from aborted

    for needle in ("panicked", "fatal error"):
        hits = cluster.grep_logs(needle)
        assert not hits, f"{needle} in node logs: {hits[:5]} {where}"
    assert sorted(cluster.running()) == cluster.ids, f"nodes down at the end {where}"
    for m in members:
        assert m.failure is None, f"member {m.name} failed: {m.failure!r} {where}"
    assert producer.failure is None, f"producer thread failed: {producer.failure!r}"
    assert not problems, f"{problems} {where}"
    fatal = [e for e in errors if FATAL.search(e)]
    assert not fatal, f"fatal consumer errors {fatal} {where}"

    # The rounds: at least two, each moved the group to another node, within the bound.
    assert len(rounds) >= 2, f"only {len(rounds)} rounds in the time budget {where}"
    for r in rounds:
        assert r.new_coordinator is not None and r.new_coordinator != r.killed, where
        slow = {k: v for k, v in r.per_member_s.items() if v >= FAILOVER_BOUND_S}
        assert not slow, f"kill of node {r.killed}: commits resumed after {slow} s {where}"

    # No acknowledged commit lost.
    verified = sum(len(r.acked_before_kill) for r in rounds)
    assert verified >= 1, \
        f"no commit acknowledged by a killed coordinator was read back at once {where}"
    assert not assign_problems, f"{assign_problems[:10]} {where}"
    assert assignments_checked >= 2, f"only {assignments_checked} assignments checked {where}"
    expected = expected_committed(attempts)
    assert sorted(expected) == list(range(PARTITIONS)), \
        f"partitions with an acknowledged commit: {sorted(expected)} {where}"
    for how, got in final_committed.items():
        found = check_committed(got, attempts, how)
        assert not found, f"{found} {where}"
        # Drained: where the last attempt was acknowledged, exactly it.
        exact = {p: last for p, (last, _) in expected.items() if max(
            (a for a in attempts if p in a.offsets), key=lambda a: a.start).acked(p)}
        assert len(exact) >= PARTITIONS // 2, f"last attempts not acknowledged {where}"
        assert {p: got.get(p) for p in exact} == exact, \
            f"{how}: committed {got}, last acknowledged {exact} {where}"
        assert all(got[p] > o for p, o in markers.items()), \
            f"{how}: committed {got} not past the markers {markers} {where}"

    # The group at the end: Stable, both members, each partition owned once.
    owned = list(described.values())
    assert len(owned) == 2 and all(owned), f"described assignment {described} {where}"
    assert sum(len(o) for o in owned) == PARTITIONS and \
        frozenset().union(*owned) == frozenset(range(PARTITIONS)), \
        f"described assignment {described} {where}"
    first = sorted(first_commits)
    print(f"kill-to-first-commit: min {first[0]:.3f} s, median {first[len(first) // 2]:.3f} s, "
          f"max {first[-1]:.3f} s over {len(first)} kills")
