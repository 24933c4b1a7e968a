"""SIGKILL the partition leader of a 3-node cluster under a librdkafka producer, again and
again: every acknowledged record survives at its offset, the consumer carries on across
the leader changes with no gap, and the failover is timed.

Three `gregor` processes on loopback (`cluster.Cluster`), one topic with one partition and
replication factor 3, created with the AdminClient. A confluent-kafka producer (acks=all,
librdkafka's default retries, idempotence off because Gregor has no InitProducerId yet)
sends the numbered stream "0", "1", ... and records every delivery report (value,
partition, offset, error, time). A confluent-kafka consumer, `assign()`ed at the beginning
(no group: none is joined, nothing is committed), reads concurrently and records every
message and every error event (`msg.error()`, `error_cb`, and librdkafka's log lines).

Each round: find the partition leader from Metadata (`list_topics`), confirmed by probing
every node with a raw Fetch (only the leader answers without NOT_LEADER_OR_FOLLOWER);
SIGKILL it; wait for the first record acknowledged by the new leader, which is the first
record acknowledged at an offset past the new leader's no-op (the first batch of a higher
leader epoch, found by a raw Fetch); the time from the kill to that delivery report is the
failover time (target 2 s, asserted below 5 s). On the way it notes when a node first
answers Fetch as leader (elected, no-op committed) and when Metadata first names it, which
splits the failover into the broker's part and the client's (librdkafka re-queries a
leader about once a second). Then restart the killed node and wait until it has caught up
(its log on disk reaches the high watermark the leader had after the restart).

Client settings are librdkafka's defaults except where said: acks=all, idempotence off,
one request in flight, a 30 s delivery timeout, and `reconnect.backoff.max.ms=1000` (see
RECONNECT_BACKOFF_MAX_MS for why; CLUSTER_CRASH_RECONNECT_BACKOFF_MAX_MS=default runs
without it). Both clients' log lines go to `rdkafka-producer.log` and
`rdkafka-consumer.log` in the test's tmp dir, interleaved with the kills;
CLUSTER_CRASH_RDKAFKA_DEBUG=broker,metadata,topic adds librdkafka's debug lines.

At the end, with the raw log walked from the leader:

* the log is dense (every offset below the high watermark in exactly one batch, CRCs
  valid), leader epochs never go back, every control batch is one no-op record, and each
  new leader's first batch after a kill is its no-op;
* the concurrent consumer and a fresh one read exactly the same (offset, value) list, in
  strictly increasing offsets, and their offsets together with the control batches' tile
  [0, high watermark): no data offset was skipped;
* the consumer reported no error that means a gap, truncation or data loss
  (`_AUTO_OFFSET_RESET` — `auto.offset.reset` is `error` so a reset cannot be silent —,
  OFFSET_OUT_OF_RANGE, `_LOG_TRUNCATION`, log lines about truncation, offset resets or
  out-of-range offsets); transient errors (`_TRANSPORT`, NOT_LEADER_OR_FOLLOWER, ...) are
  allowed, counted and reported;
* no node log has a panic or a fatal error, and all three nodes run at the end;
* every acknowledged value is at exactly the offset its delivery report gave; no two
  acknowledged values share an offset; acknowledged values are in increasing offset order
  (the producer has `max.in.flight.requests.per.connection=1`, so librdkafka's retries keep
  the order); every value read was sent.

Duplicates. Without idempotence a retried send can be stored twice: the old leader stores
and replicates a batch, dies before answering, and librdkafka sends it again to the new
leader, which acknowledges the second copy. That is Kafka's at-least-once behaviour, not a
broker fault, so extra copies are counted and reported, not failed on. What is failed on is
what a correct broker plus this producer cannot produce: an extra copy of an acknowledged
value at an offset *after* its acknowledged one (the producer never sends a record again
once it has been acknowledged), and two different values at one offset (the two readers
must agree on every offset).

CLUSTER_CRASH_SEED=<n> replays the schedule (run and downtime lengths; which node leads
next is up to the cluster); it is printed. Run with `-s` to see each round and the summary
line (failover times, consumer errors, duplicates); the failure message carries the same.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, \
    TopicPartition
from confluent_kafka.admin import NewTopic

import rawkafka
from cluster import Cluster, gregor_cluster  # noqa: F401  (the fixture)
from helpers import OP_TIMEOUT_S, admin, unique_topic, wait_for_topic

pytestmark = pytest.mark.gregor_only

KILLS = 4
RUN_BEFORE_KILL_S = (0.5, 1.5)  # producing on a stable leader before each kill
DOWN_S = (0.0, 0.5)  # after the failover, before the killed node is restarted
SETTLE_S = 1.0  # producing after the last restart
RECORDS_PER_S = 1000
ACKED_MIN = 1000
FAILOVER_BOUND_S = 5.0  # loose bound asserted; the target is 2 s
FAILOVER_TARGET_S = 2.0
WAIT_S = 30.0  # generous bound of every wait (leader, failover, catch-up, final read)
POLL_S = 0.05
TOPIC_PARTITION = 0
NOT_LEADER_OR_FOLLOWER = 6
# librdkafka's reconnect backoff doubles from reconnect.backoff.ms (100 ms) up to
# reconnect.backoff.max.ms (default 10 s) with each failed connect to a broker, and starts
# again from 100 ms only once the last attempt is older than that maximum. This test kills
# a node every few seconds, so a node that was down twice within ~10 s is, to the client,
# 5-10 s away when it becomes the leader next: a failover then measures the client's
# backoff. 1 s keeps the measurement on the broker; set CLUSTER_CRASH_RECONNECT_BACKOFF_MAX_MS
# to "default" to run with librdkafka's own value (and see 5-7 s failovers in those rounds).
RECONNECT_BACKOFF_MAX_MS = os.environ.get("CLUSTER_CRASH_RECONNECT_BACKOFF_MAX_MS", "1000")
# librdkafka debug contexts for both clients (e.g. "broker,metadata,topic"); every client
# log line is kept in the test's tmp dir (rdkafka-producer.log, rdkafka-consumer.log).
RDKAFKA_DEBUG = os.environ.get("CLUSTER_CRASH_RDKAFKA_DEBUG", "")


def client_settings() -> dict:
    """The settings both clients get on top of their own."""
    out = {}
    if RECONNECT_BACKOFF_MAX_MS != "default":
        out["reconnect.backoff.max.ms"] = int(RECONNECT_BACKOFF_MAX_MS)
    if RDKAFKA_DEBUG:
        out["debug"] = RDKAFKA_DEBUG
    return out

# Consumer errors that mean the consumer lost its place: a gap, a truncation, data loss.
GAP_ERRORS = {
    KafkaError._AUTO_OFFSET_RESET,
    KafkaError.OFFSET_OUT_OF_RANGE,
    KafkaError._LOG_TRUNCATION,
}
# ... and the log lines that say so (at info level or above: debug contexts, when turned on,
# talk about offsets and truncation checks routinely).
GAP_LOG_LINE = re.compile(r"truncat|offset reset|out of range|reset.{0,40}offset", re.I)


class CapturingLogger(logging.Logger):
    """A logger for one librdkafka client that keeps every line (and passes it on to the
    "rdkafka" logger, which pytest shows for failed tests)."""

    def __init__(self, name: str):
        super().__init__(name, logging.DEBUG)
        self.lines: list[tuple[float, int, str]] = []
        self.parent = logging.getLogger("rdkafka")
        self._lock = threading.Lock()

    def handle(self, record: logging.LogRecord) -> None:
        with self._lock:
            self.lines.append((time.monotonic(), record.levelno, record.getMessage()))
        super().handle(record)

    def save(self, path, rounds, t0: float) -> None:
        """Writes the lines with the kills interleaved, times in seconds since `t0`."""
        events = [(at, msg) for at, _, msg in self.lines]
        events += [(r.killed_at, f"==== SIGKILL node {r.killed}") for r in rounds]
        events.sort(key=lambda e: e[0])
        with open(path, "w") as f:
            for at, msg in events:
                print(f"{at - t0:9.3f} {msg}", file=f)


@dataclass
class Delivery:
    value: int
    partition: int
    offset: int
    error: str | None
    at: float  # time.monotonic() when the report was served


class NumberedProducer:
    """One thread producing "0", "1", ... to partition 0 at RECORDS_PER_S."""

    def __init__(self, bootstrap: str, topic: str):
        self.topic = topic
        self.sent = 0
        self.deliveries: list[Delivery] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.log = CapturingLogger("rdkafka.producer")
        self.producer = Producer({
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": False,
            # librdkafka's default retries (message.send.max.retries=INT32_MAX, backoffs,
            # metadata refresh) are kept. One request in flight keeps the order across
            # retries without idempotence.
            "max.in.flight.requests.per.connection": 1,
            # A bound on one record's delivery, so a stuck send fails within the test
            # (the default is 300 s); it does not change how failover proceeds.
            "message.timeout.ms": 30000,
            **client_settings(),
        }, logger=self.log)
        self.thread = threading.Thread(target=self._run, name="numbered-producer", daemon=True)

    def _on_delivery(self, err, msg):
        self.deliveries.append(Delivery(int(msg.value()), msg.partition(), msg.offset(),
                                        None if err is None else err.name(), time.monotonic()))

    def _run(self):
        try:
            period_s = 1.0 / RECORDS_PER_S
            next_at = time.monotonic()
            while not self.stop.is_set():
                while True:
                    try:
                        self.producer.produce(self.topic, value=str(self.sent).encode(),
                                              partition=TOPIC_PARTITION,
                                              on_delivery=self._on_delivery)
                        break
                    except BufferError:
                        self.producer.poll(0.05)
                self.sent += 1
                self.producer.poll(0)
                next_at += period_s
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -0.5:  # fell behind (a loaded machine): do not burst
                    next_at = time.monotonic()
            remaining = self.producer.flush(60)
            assert remaining == 0, f"{remaining} records still undelivered after flush(60)"
        except BaseException as e:  # surfaced by the test
            self.error = e

    def successes(self) -> list[Delivery]:
        return [d for d in list(self.deliveries) if d.error is None]


@dataclass
class ConsumerEvent:
    at: float
    source: str  # "message" (msg.error()) or "error_cb"
    code: int
    name: str
    text: str


class ConcurrentConsumer:
    """One thread reading partition 0 from the beginning while the kills happen."""

    def __init__(self, bootstrap: str, topic: str):
        self.records: list[tuple[int, int, float]] = []  # (offset, value, at)
        self.events: list[ConsumerEvent] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.log = CapturingLogger("rdkafka.consumer")
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": "gregor-cluster-crash-assign-only",  # required; never joined
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "error",  # a reset is an error event, never silent
            "error_cb": self._on_error,
            **client_settings(),
        }, logger=self.log)
        self.consumer.assign([TopicPartition(topic, TOPIC_PARTITION, OFFSET_BEGINNING)])
        self.thread = threading.Thread(target=self._run, name="concurrent-consumer", daemon=True)

    def _on_error(self, err: KafkaError):
        self.events.append(ConsumerEvent(time.monotonic(), "error_cb", err.code(), err.name(),
                                         err.str()))

    def _run(self):
        try:
            while not self.stop.is_set():
                m = self.consumer.poll(0.1)
                if m is None:
                    continue
                if m.error():
                    e = m.error()
                    self.events.append(ConsumerEvent(time.monotonic(), "message", e.code(),
                                                     e.name(), e.str()))
                    continue
                self.records.append((m.offset(), int(m.value()), time.monotonic()))
        except BaseException as e:  # surfaced by the test
            self.error = e
        finally:
            self.consumer.close()

    def last_offset(self) -> int:
        return self.records[-1][0] if self.records else -1


@dataclass
class Round:
    killed: int
    killed_at: float
    acked_before: int  # highest offset acknowledged before the kill
    old_epoch: int
    new_leader: int = -1
    new_epoch: int = -1
    noop_offset: int = -1  # the new leader's first batch (its no-op)
    failover_s: float = -1.0
    first_new_offset: int = -1
    consumer_resumed_s: float | None = None
    serving_s: float | None = None  # a node answers Fetch as leader
    metadata_s: float | None = None  # Metadata (the test's AdminClient) names a live leader
    restart_s: float = -1.0
    restarted_at: float = -1.0
    catch_up_s: float = -1.0
    notes: list[str] = field(default_factory=list)


def wait_until(what: str, fn, timeout_s: float = WAIT_S, every_s: float = POLL_S):
    """Calls `fn` until it returns something other than None; fails after `timeout_s` with
    the last exception or value it gave."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        try:
            out = fn()
            if out is not None:
                return out
        except (OSError, AssertionError, KafkaException, ValueError) as e:
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not done within {timeout_s}s (last: {last!r})")
        time.sleep(every_s)


def raw_fetch(port: int, topic: str, offset: int, max_bytes: int = 64 * 1024):
    """(error, high watermark, batches) of one raw Fetch at `offset` from one node."""
    with rawkafka.Connection("127.0.0.1", port, timeout_s=5.0) as conn:
        error, hw, records = conn.fetch(conn.fetch_version(), topic, TOPIC_PARTITION, offset,
                                        max_bytes)
    return error, hw, rawkafka.parse_batches(records, check_crc=False)


def walk_range(port: int, topic: str, start: int, end: int) -> list[rawkafka.Batch]:
    """The batches holding offsets [start, end) on a node that leads the partition (a bounded
    `rawkafka.walk_partition`, which would chase the high watermark of a partition still
    being written)."""
    out: list[rawkafka.Batch] = []
    with rawkafka.Connection("127.0.0.1", port, timeout_s=5.0) as conn:
        version = conn.fetch_version()
        offset = start
        while offset < end:
            error, hw, records = conn.fetch(version, topic, TOPIC_PARTITION, offset)
            assert error == 0, f"Fetch {topic}-0@{offset}: error {error}"
            if offset >= hw:
                break
            got = [b for b in rawkafka.parse_batches(records, check_crc=False)
                   if b.last_offset >= offset]
            assert got, f"Fetch {topic}-0@{offset} < hw {hw} returned no whole batch"
            out += got
            offset = got[-1].last_offset + 1
    return out


def find_leader(cluster: Cluster, topic: str) -> int:
    """The partition leader named by Metadata (`list_topics`), once it is a running node that
    answers Fetch as leader while every other running node answers NOT_LEADER_OR_FOLLOWER."""
    a = admin(cluster.bootstrap)

    def attempt():
        t = a.list_topics(topic=topic, timeout=5).topics.get(topic)
        if t is None or t.error is not None or TOPIC_PARTITION not in t.partitions:
            return None
        leader = t.partitions[TOPIC_PARTITION].leader
        if leader not in cluster.running():
            return None
        for node in cluster.running():
            error, _hw, _ = raw_fetch(cluster.kafka_ports[node], topic, 0, 1024)
            if (error == 0) != (node == leader):
                return None
            if node != leader and error != NOT_LEADER_OR_FOLLOWER:
                return None
        return leader

    return wait_until(f"a confirmed leader of {topic}-0", attempt)


def batch_at(cluster: Cluster, node: int, topic: str, offset: int) -> rawkafka.Batch:
    error, _hw, batches = raw_fetch(cluster.kafka_ports[node], topic, offset)
    assert error == 0, f"Fetch {topic}-0@{offset} from node {node}: error {error}"
    for b in batches:
        if b.base_offset <= offset <= b.last_offset:
            return b
    raise AssertionError(f"node {node}: no batch holds offset {offset}")


def disk_log_end(cluster: Cluster, node: int, topic: str) -> int:
    """One past the last whole batch in the node's newest segment of partition 0 (the
    segment files hold the batches exactly as Fetch returns them)."""
    dirs = [d for d in cluster.node(node).partition_dirs(topic)
            if d.name == f"{topic}-{TOPIC_PARTITION}"]
    assert len(dirs) == 1, f"node {node}: partition dirs {dirs}"
    segments = sorted(dirs[0].glob("*.log"))
    assert segments, f"node {node}: no segment in {dirs[0]}"
    batches = rawkafka.parse_batches(segments[-1].read_bytes(), check_crc=False)
    return batches[-1].last_offset + 1 if batches else int(segments[-1].stem)


def create_replicated_topic(cluster: Cluster, topic: str) -> None:
    """CreateTopics with replication factor 3, retried while the controller has not yet
    registered all three brokers (INVALID_REPLICATION_FACTOR, see docs/cluster.md)."""
    a = admin(cluster.bootstrap)

    def attempt():
        f = a.create_topics([NewTopic(topic, num_partitions=1, replication_factor=3)],
                            operation_timeout=10)[topic]
        try:
            f.result(timeout=OP_TIMEOUT_S)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # (a retry that did)
                raise
        return True

    wait_until(f"create {topic} with replication factor 3", attempt, every_s=0.2)
    t = wait_for_topic(cluster.bootstrap, topic, 1)
    replicas = t.partitions[TOPIC_PARTITION].replicas
    assert sorted(replicas) == cluster.ids, f"{topic}-0 replicas {replicas}"


def read_fresh(bootstrap: str, topic: str, count: int, last_offset: int):
    """A fresh consumer reads partition 0 from the beginning until it has `last_offset`;
    returns ([(offset, value)], [error names])."""
    log = CapturingLogger("rdkafka.fresh")
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "gregor-cluster-crash-fresh-assign-only",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
    }, logger=log)
    out: list[tuple[int, int]] = []
    errors: list[str] = []
    try:
        c.assign([TopicPartition(topic, TOPIC_PARTITION, OFFSET_BEGINNING)])
        deadline = time.monotonic() + WAIT_S
        while (not out or out[-1][0] < last_offset) and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                errors.append(m.error().name())
                continue
            out.append((m.offset(), int(m.value())))
        assert out and out[-1][0] >= last_offset, (
            f"fresh consumer: {len(out)} of {count} records by {WAIT_S}s, "
            f"last offset {out[-1][0] if out else None} < {last_offset}; errors {errors}")
        extra_until = time.monotonic() + 0.5
        while time.monotonic() < extra_until:
            m = c.poll(0.1)
            if m is not None and not m.error():
                out.append((m.offset(), int(m.value())))
    finally:
        c.close()
    errors += [f"log: {line}" for _, level, line in log.lines
               if level >= logging.INFO and GAP_LOG_LINE.search(line)]
    return out, errors


def gap_events(events: list[ConsumerEvent], log_lines) -> list[str]:
    found = [f"{e.source}: {e.name}: {e.text}" for e in events if e.code in GAP_ERRORS]
    found += [f"log: {line}" for _, level, line in log_lines
              if level >= logging.INFO and GAP_LOG_LINE.search(line)]
    return found


def ms(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds * 1000:.0f} ms"


def stats(values: list[float]) -> str:
    if not values:
        return "none"
    s = sorted(values)
    return (f"min {s[0]:.3f} s, median {s[len(s) // 2]:.3f} s, max {s[-1]:.3f} s "
            f"over {len(s)}")


@pytest.mark.timeout(240)
def test_leader_sigkill_under_librdkafka_producer_and_consumer(gregor_cluster: Cluster, tmp_path):
    cluster = gregor_cluster
    seed = int(os.environ.get("CLUSTER_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"\nCLUSTER_CRASH_SEED={seed}")
    t_start = time.monotonic()

    topic = unique_topic("failover")
    create_replicated_topic(cluster, topic)

    consumer = ConcurrentConsumer(cluster.bootstrap, topic)
    producer = NumberedProducer(cluster.bootstrap, topic)
    consumer.thread.start()
    producer.thread.start()
    rounds: list[Round] = []
    try:
        wait_until("first acknowledgements", lambda: True if len(producer.successes()) >= 50
                   else None)
        for r in range(KILLS):
            time.sleep(rng.uniform(*RUN_BEFORE_KILL_S))
            leader = find_leader(cluster, topic)
            acked = producer.successes()
            assert acked, "nothing acknowledged before the kill"
            acked_before = max(d.offset for d in acked)
            old_epoch = batch_at(cluster, leader, topic, acked_before).leader_epoch
            killed_at = time.monotonic()
            cluster.kill(leader)
            rnd = Round(leader, killed_at, acked_before, old_epoch)
            rounds.append(rnd)

            def failed_over():
                since = time.monotonic() - killed_at
                # Milestones on the way, for the report: a node serves the partition (it
                # won the election and its no-op committed), Metadata names it.
                if rnd.serving_s is None and any(
                        raw_fetch(cluster.kafka_ports[n], topic, 0, 1024)[0] == 0
                        for n in cluster.running()):
                    rnd.serving_s = since
                if rnd.metadata_s is None:
                    t = admin(cluster.bootstrap).list_topics(topic=topic, timeout=5).topics[topic]
                    if t.partitions[TOPIC_PARTITION].leader in cluster.running():
                        rnd.metadata_s = since
                late = [d for d in producer.successes()
                        if d.at > killed_at and d.offset > acked_before]
                if not late:
                    return None
                # Who leads now, and where its term starts: its no-op, the first batch of
                # a higher epoch past what the old leader had acknowledged.
                new_leader = find_leader(cluster, topic)
                batches = walk_range(cluster.kafka_ports[new_leader], topic, acked_before + 1,
                                     max(d.offset for d in late) + 1)
                newer = [b for b in batches if b.leader_epoch > old_epoch]
                if not newer:
                    return None
                noop = newer[0]
                on_new = [d for d in late if d.offset > noop.last_offset]
                if not on_new:
                    return None
                first = min(on_new, key=lambda d: d.at)
                return new_leader, noop, first

            new_leader, noop, first = wait_until(
                f"round {r + 1}: a record acknowledged by a new leader after node {leader} "
                "was killed", failed_over)
            rnd.new_leader = new_leader
            rnd.new_epoch = noop.leader_epoch
            rnd.noop_offset = noop.base_offset
            rnd.failover_s = first.at - killed_at
            rnd.first_new_offset = first.offset
            if not noop.is_control:
                rnd.notes.append(f"first batch of epoch {noop.leader_epoch} at "
                                 f"{noop.base_offset} is not a control batch")
            print(f"round {r + 1}: killed node {leader} (epoch {old_epoch}, acked up to "
                  f"{acked_before}); node {new_leader} leads in epoch {noop.leader_epoch} "
                  f"(no-op at {noop.base_offset}); after the kill: serving at "
                  f"{ms(rnd.serving_s)}, in Metadata at {ms(rnd.metadata_s)}, first ack on it "
                  f"(offset {first.offset}) at {ms(rnd.failover_s)}")

            time.sleep(rng.uniform(*DOWN_S))
            t0 = time.monotonic()
            cluster.restart(leader)
            rnd.restarted_at = time.monotonic()
            rnd.restart_s = rnd.restarted_at - t0
            t0 = time.monotonic()
            current = find_leader(cluster, topic)
            target = raw_fetch(cluster.kafka_ports[current], topic, 0, 1024)[1]
            wait_until(f"round {r + 1}: node {leader} catches up to {target}",
                       lambda: True if disk_log_end(cluster, leader, topic) >= target else None)
            rnd.catch_up_s = time.monotonic() - t0
        time.sleep(SETTLE_S)
    finally:
        producer.stop.set()
        producer.thread.join(90)
    assert not producer.thread.is_alive(), "producer thread hung"
    assert producer.error is None, f"producer thread failed: {producer.error!r}"

    # The final log, walked batch by batch from the leader.
    leader = find_leader(cluster, topic)
    batches, hw = rawkafka.walk_partition("127.0.0.1", cluster.kafka_ports[leader], topic,
                                          TOPIC_PARTITION)
    data_batches = [b for b in batches if not b.is_control]
    data_count = sum(b.record_count for b in data_batches)
    last_data_offset = data_batches[-1].last_offset if data_batches else -1
    try:
        wait_until(f"concurrent consumer reaches offset {last_data_offset}",
                   lambda: True if consumer.last_offset() >= last_data_offset else None)
        time.sleep(0.5)  # anything past the end would show up now
    finally:
        consumer.stop.set()
        consumer.thread.join(30)
    assert not consumer.thread.is_alive(), "consumer thread hung"
    assert consumer.error is None, f"consumer thread failed: {consumer.error!r}"
    fresh, fresh_errors = read_fresh(cluster.bootstrap, topic, data_count, last_data_offset)

    # ---- everything measured; now the checks ----
    deliveries = list(producer.deliveries)
    acked = [d for d in deliveries if d.error is None]
    failed = [d for d in deliveries if d.error is not None]
    seen = [(o, v) for o, v, _ in consumer.records]
    by_offset = dict(fresh)
    stored = Counter(v for _, v in fresh)
    duplicated = {v: n for v, n in stored.items() if n > 1}
    control = rawkafka.control_offsets(batches)
    control_offsets = {o for b in batches if b.is_control
                       for o in range(b.base_offset, b.last_offset + 1)}

    for rnd in rounds:
        resumed = [at for o, _, at in consumer.records if o > rnd.noop_offset]
        rnd.consumer_resumed_s = (min(resumed) - rnd.killed_at) if resumed else None
    failovers = [rnd.failover_s for rnd in rounds]
    consumer_errors = Counter(f"{e.source}:{e.name}" for e in consumer.events)
    consumer_log_warnings = sum(1 for _, lvl, _ in consumer.log.lines if lvl >= logging.WARNING)
    backsteps = [(fresh[i - 1], fresh[i]) for i in range(1, len(fresh))
                 if fresh[i][1] <= fresh[i - 1][1]]
    backsteps_at_leader_change = sum(
        1 for (o1, _), (o2, _) in backsteps
        if any(o1 < c < o2 for c in control_offsets))
    summary = {
        "seed": seed,
        "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
        "failovers_ms": [round(f * 1000) for f in failovers],
        "failover": stats(failovers),
        "failovers_over_target": sum(1 for f in failovers if f >= FAILOVER_TARGET_S),
        "serving_ms": [None if r.serving_s is None else round(r.serving_s * 1000)
                       for r in rounds],
        "metadata_ms": [None if r.metadata_s is None else round(r.metadata_s * 1000)
                        for r in rounds],
        "consumer_resumed_ms": [None if r.consumer_resumed_s is None
                                else round(r.consumer_resumed_s * 1000) for r in rounds],
        "kills": [(r.killed, r.new_leader, r.old_epoch, r.new_epoch) for r in rounds],
        "restart_ms": [round(r.restart_s * 1000) for r in rounds],
        "catch_up_ms": [round(r.catch_up_s * 1000) for r in rounds],
        "sent": producer.sent, "acked": len(acked), "failed": len(failed),
        "failed_errors": dict(Counter(d.error for d in failed)),
        "stored": len(fresh), "distinct_stored": len(stored),
        "duplicated_values": len(duplicated),
        "extra_copies": sum(n - 1 for n in duplicated.values()),
        "duplicated_acked": sum(1 for d in acked if d.value in duplicated),
        "value_backsteps": len(backsteps),
        "value_backsteps_at_leader_change": backsteps_at_leader_change,
        "hw": hw, "control_batches": len(control),
        "consumer_errors": dict(consumer_errors),
        "consumer_log_warnings": consumer_log_warnings,
        "fresh_consumer_errors": len(fresh_errors),
        "producer_log_lines": len(producer.log.lines),
        "node_warn_error_lines": len(cluster.grep_logs(" WARN ") + cluster.grep_logs(" ERROR ")),
        "wall_s": round(time.monotonic() - t_start, 1),
    }
    print(f"CLUSTER_CRASH_SEED={seed} summary {summary}")
    for name, log in (("producer", producer.log), ("consumer", consumer.log)):
        log.save(tmp_path / f"rdkafka-{name}.log", rounds, t_start)
    for rnd in rounds:
        if rnd.notes:
            print(f"kill of node {rnd.killed}: {rnd.notes}")
    where = f"(CLUSTER_CRASH_SEED={seed}; {summary})"

    # No node panicked or stopped on a fatal error.
    for needle in ("panicked", "fatal error"):
        hits = cluster.grep_logs(needle)
        assert not hits, f"{needle} in node logs: {hits[:5]} {where}"
    assert sorted(cluster.running()) == cluster.ids, f"nodes down at the end {where}"

    # The producer: one report per record sent, enough acknowledged, all to partition 0.
    assert len(deliveries) == producer.sent, \
        f"{producer.sent} sent, {len(deliveries)} delivery reports {where}"
    reported = Counter(d.value for d in deliveries)
    assert all(n == 1 for n in reported.values()), \
        f"values with two delivery reports: {[v for v, n in reported.items() if n > 1][:10]}"
    assert all(d.partition == TOPIC_PARTITION for d in deliveries)
    assert len(acked) >= ACKED_MIN, f"only {len(acked)} records acknowledged {where}"
    assert any(d.at > rounds[-1].restarted_at for d in acked), \
        f"nothing acknowledged after the last restart {where}"

    # The failovers.
    assert len(rounds) == KILLS
    for rnd in rounds:
        assert rnd.new_leader != rnd.killed and rnd.new_epoch > rnd.old_epoch
        assert not rnd.notes, f"kill of node {rnd.killed}: {rnd.notes} {where}"
    slow = [(r.killed, round(r.failover_s, 3)) for r in rounds if r.failover_s >= FAILOVER_BOUND_S]
    assert not slow, f"failover over {FAILOVER_BOUND_S}s (node, s): {slow} {where}"

    # The raw log: dense, valid, epochs never going back, control batches are no-ops.
    problems = rawkafka.dense_problems(batches, 0, hw)
    assert problems == [], f"log not dense: {problems[:10]} {where}"
    crc_bad = [b.base_offset for b in batches if not b.crc_ok]
    assert not crc_bad, f"batches failing their CRC at {crc_bad[:10]} {where}"
    epochs = [b.leader_epoch for b in batches]
    assert epochs == sorted(epochs), f"leader epochs go back in the log {where}"
    assert control[:1] == [(0, 1)] and all(n == 1 for _, n in control), \
        f"control batches (offset, records) {control} {where}"
    assert len(control) >= 1 + KILLS, f"{len(control)} no-ops for {KILLS} kills {where}"
    for rnd in rounds:
        assert rnd.noop_offset in control_offsets, \
            f"the no-op of node {rnd.new_leader} at {rnd.noop_offset} is not in the log {where}"

    # The consumers: no gap reported, nothing read twice, both read the same, and every data
    # offset below the high watermark was read (the rest are the no-ops).
    gaps = gap_events(consumer.events, consumer.log.lines)
    assert not gaps, f"concurrent consumer reported a gap/truncation/reset: {gaps[:10]} {where}"
    fresh_gaps = [e for e in fresh_errors if e.startswith("log: ") or e in
                  ("_AUTO_OFFSET_RESET", "OFFSET_OUT_OF_RANGE", "_LOG_TRUNCATION")]
    assert not fresh_gaps, f"fresh consumer reported a gap: {fresh_gaps[:10]} {where}"
    offsets = [o for o, _ in seen]
    assert all(a < b for a, b in zip(offsets, offsets[1:])), \
        f"concurrent consumer offsets not strictly increasing: " \
        f"{[(a, b) for a, b in zip(offsets, offsets[1:]) if a >= b][:10]} {where}"
    fresh_offsets = [o for o, _ in fresh]
    assert all(a < b for a, b in zip(fresh_offsets, fresh_offsets[1:])), \
        f"fresh consumer offsets not strictly increasing {where}"
    if seen != fresh:
        differ = [(a, b) for a, b in zip(seen, fresh) if a != b][:10]
        raise AssertionError(
            f"the concurrent and the fresh consumer disagree: {len(seen)} vs {len(fresh)} "
            f"records, first differences (concurrent, fresh) {differ} {where}")
    assert len(fresh) == data_count, f"{len(fresh)} read, {data_count} in the log {where}"
    data_offsets = set(fresh_offsets)
    assert not data_offsets & control_offsets, f"data read at a no-op's offset {where}"
    missing = sorted(set(range(hw)) - data_offsets - control_offsets)
    assert not missing, f"offsets below hw {hw} neither read nor a no-op: {missing[:10]} {where}"

    # The records: every one read was sent; every acknowledged one is at its offset.
    foreign = [(o, v) for o, v in fresh if not 0 <= v < producer.sent]
    assert not foreign, f"values never sent: {foreign[:10]} {where}"
    acked_at: dict[int, int] = {}
    for d in acked:
        assert d.offset not in acked_at, \
            f"values {acked_at[d.offset]} and {d.value} both acknowledged at {d.offset} {where}"
        acked_at[d.offset] = d.value
    lost = [(d.value, d.offset, by_offset.get(d.offset)) for d in acked
            if by_offset.get(d.offset) != d.value]
    assert not lost, f"acknowledged records not at their offset (value, offset, found): " \
                     f"{lost[:10]} ({len(lost)} in all) {where}"
    acked_offsets = [d.offset for d in sorted(acked, key=lambda d: d.value)]
    assert acked_offsets == sorted(acked_offsets), \
        f"acknowledged values are not in increasing offset order {where}"
    copies_at: dict[int, list[int]] = {}
    for o, v in fresh:
        if v in duplicated:
            copies_at.setdefault(v, []).append(o)
    late_copies = [(d.value, d.offset, o) for d in acked
                   for o in copies_at.get(d.value, []) if o > d.offset]
    assert not late_copies, \
        f"copies of acknowledged values after their acknowledged offset (value, acked, copy): " \
        f"{late_copies[:10]} {where}"
    print(f"failover times: {stats(failovers)}; target {FAILOVER_TARGET_S} s, "
          f"{summary['failovers_over_target']} of {len(failovers)} over it")
