#!/usr/bin/env python3
"""Side-by-side broker benchmark: Gregor (release, data on disk, fsync per acked batch)
and Tansu (in memory), driven by librdkafka through confluent-kafka.

Measures produce throughput (1 and 8 partitions x 100 B and 1 KiB records x acks=1 and
acks=all), consume throughput, synchronous produce latency (one record at a time, p50/p99),
broker CPU time per record (utime+stime from /proc/<pid>/stat), and the machine's own
limits: loopback bandwidth, fsync'd sequential write throughput, and the client's ceiling
(how fast this Python loop can hand records to librdkafka with no broker at all), so a
reader can tell a broker limit from a client or machine limit.

With --cluster, a third column, gregor-3: three Gregor processes on loopback forming one
cluster, topics with replication factor 3, CPU and RSS summed over the three processes. A
node of it dying (or a step on it failing) marks its remaining rows failed, says why (exit
status, the node log's last WARN/ERROR lines), and the other brokers carry on.

Run through ci/bench.sh; prints a markdown table and writes bench-results/bench-<date>.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
READY_LINE = re.compile(r"^gregor listening on ")
MiB = 1024 * 1024


# ----------------------------------------------------------------------------- brokers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BrokerProc:
    """A broker process we started; killed on exit whatever happens."""

    live: list["BrokerProc"] = []
    replication_factor = 1

    def __init__(self, name: str, cmd: list[str], port: int, ready_line: bool, log: Path,
                 wait: bool = True):
        """With wait=False, returns once the process is started: `got_ready_line` is set
        when it prints its listening line (a cluster node does once the quorum formed)."""
        self.name = name
        self.port = port
        self.log = log
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(log, "wb"),
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        BrokerProc.live.append(self)
        deadline = time.monotonic() + 30
        if ready_line:
            got = self.got_ready_line = threading.Event()

            def pump():
                for raw in self.proc.stdout:
                    if READY_LINE.match(raw.decode(errors="replace")):
                        got.set()
            threading.Thread(target=pump, daemon=True).start()
            if not wait:
                return
            while not got.wait(0.05):
                self._check_alive(deadline)
        else:
            threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
            while not self._port_open():
                self._check_alive(deadline)
                time.sleep(0.05)

    def _check_alive(self, deadline: float):
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{self.name} not ready after 30 s; see {self.log}")

    def port_open(self) -> bool:
        return self._port_open()

    def _port_open(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        if self in BrokerProc.live:
            BrokerProc.live.remove(self)

    @classmethod
    def stop_all(cls):
        for b in list(cls.live):
            b.stop()


def start_gregor(binary: Path, data_root: Path, logs: Path) -> BrokerProc:
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="gregor-bench-", dir=data_root))
    return BrokerProc("gregor", [str(binary), "--listen", f"127.0.0.1:{port}", "--data-dir",
                                 str(data)], port, True, logs / "gregor.log")


def start_tansu(binary: Path, logs: Path) -> BrokerProc:
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    return BrokerProc("tansu", [str(binary), "broker", "--listener-url", url,
                                "--advertised-listener-url", url, "--storage-engine",
                                "memory://tansu/"], port, False, logs / "tansu.log")


def log_excerpt(log: Path, lines: int = 5) -> str:
    """The last WARN/ERROR/panic lines of a node's log (else its last line), one string."""
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"(cannot read {log}: {e})"
    hits = [l.strip() for l in text
            if re.search(r"\b(WARN|ERROR)\b|panicked|^gregor: ", l)][-lines:]
    if hits:
        return f"its last WARN/ERROR lines: {' / '.join(hits)}"
    return ("no WARN/ERROR in its log; its last line: " + text[-1].strip()) if text else \
        "its log is empty"


def exit_status(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class GregorCluster:
    """Three gregor processes on loopback forming one cluster, used as one broker (the
    gregor-3 column): bootstrap is all three Kafka addresses, topics get replication factor
    3, CPU and RSS are the sums over the three processes.

    A watchdog thread notices a node exiting while we did not stop it: `failure` then says
    which node, its exit status and the last WARN/ERROR lines of its log; the other nodes
    are stopped, a client working on the cluster is killed (RustClient._run and the latency
    loop check `failure`), and bench_brokers skips the cluster's remaining rows."""

    name = "gregor-3"
    replication_factor = 3
    READY_TIMEOUT_S = 60.0

    def __init__(self, binary: Path, data_root: Path, logs: Path, note, n: int = 3):
        self.note = note
        self.failure: str | None = None
        self._stopping = False
        self._lock = threading.Lock()
        ports: list[int] = []
        while len(ports) < 2 * n:  # Kafka and peer listener of each node, all distinct
            p = free_port()
            if p not in ports:
                ports.append(p)
        self.kafka_ports, peer_ports = ports[:n], ports[n:]
        peers = ",".join(f"{i + 1}@127.0.0.1:{peer_ports[i]}" for i in range(n))
        self.dir = Path(tempfile.mkdtemp(prefix="gregor3-bench-", dir=data_root))
        self.nodes: list[BrokerProc] = []
        # The last CPU time and peak RSS read from each node, for a node that is gone.
        self._cpu = [0.0] * n
        self._rss = [0.0] * n
        try:
            for i in range(n):
                self.nodes.append(BrokerProc(
                    f"gregor-3 node {i + 1}",
                    [str(binary), "--node-id", str(i + 1), "--listen",
                     f"127.0.0.1:{self.kafka_ports[i]}", "--peer-listen",
                     f"127.0.0.1:{peer_ports[i]}", "--peers", peers, "--data-dir",
                     str(self.dir / f"n{i + 1}")],
                    self.kafka_ports[i], True, logs / f"gregor-3-n{i + 1}.log", wait=False))
            self._wait_ready()
        except BaseException:
            self.stop()
            shutil.rmtree(self.dir, ignore_errors=True)  # the logs stay
            raise
        threading.Thread(target=self._watch, daemon=True).start()

    def _wait_ready(self):
        """Until every node printed its listening line and accepts Kafka connections; any
        node exiting, or a node not ready in READY_TIMEOUT_S, is an error naming it."""
        deadline = time.monotonic() + self.READY_TIMEOUT_S
        pending = list(self.nodes)
        while pending:
            for node in self.nodes:
                if node.proc.poll() is not None:
                    raise RuntimeError(f"while the cluster was forming, {self._node_gone(node)}")
            pending = [b for b in pending
                       if not (b.got_ready_line.is_set() and b.port_open())]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "; ".join(f"{b.name} not ready after {self.READY_TIMEOUT_S:g} s (see "
                              f"{b.log}: {log_excerpt(b.log)})" for b in pending))
            time.sleep(0.1)

    def _node_gone(self, node: BrokerProc) -> str:
        return (f"{node.name} (pid {node.proc.pid}) {exit_status(node.proc.returncode)} at "
                f"{time.strftime('%H:%M:%S')}; log {node.log}, {log_excerpt(node.log)}")

    def _watch(self):
        while not self._stopping:
            for i, node in enumerate(self.nodes):
                self._sample(i)
                if node.proc.poll() is not None and not self._stopping:
                    with self._lock:
                        if self._stopping:
                            return
                        self.failure = self._node_gone(node)
                    self.note(f"gregor-3 FAILED: {self.failure}")
                    self.note("gregor-3: stopping its other nodes; its remaining rows are skipped")
                    self.stop()
                    return
            time.sleep(0.2)

    def _sample(self, i: int):
        node = self.nodes[i]
        try:  # a reaped node has no /proc entry, a zombie no VmHWM: keep the last reading
            cpu, rss = node.cpu_s(), node.rss_mib()
        except (OSError, ValueError, IndexError):
            return
        self._cpu[i] = max(self._cpu[i], cpu)
        if rss == rss:  # not nan
            self._rss[i] = max(self._rss[i], rss)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.kafka_ports)

    def cpu_s(self) -> float:
        for i in range(len(self.nodes)):
            self._sample(i)
        return sum(self._cpu)

    def rss_mib(self) -> float:
        """The sum of the nodes' peak RSS (each VmHWM; not the peak of the sum)."""
        for i in range(len(self.nodes)):
            self._sample(i)
        return sum(self._rss)

    def rss_parts(self) -> list[float]:
        return list(self._rss)

    def stop(self):
        with self._lock:
            self._stopping = True
            for i, node in enumerate(self.nodes):
                self._sample(i)
                node.stop()


# ----------------------------------------------------------------------------- clients

def client_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def create_topic(bootstrap: str, topic: str, partitions: int, replication_factor: int = 1):
    a = AdminClient({"bootstrap.servers": bootstrap})
    a.create_topics([NewTopic(topic, num_partitions=partitions,
                              replication_factor=replication_factor)])[topic].result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        t = a.list_topics(topic=topic, timeout=10).topics.get(topic)
        if t and t.error is None and len(t.partitions) == partitions and all(
                p.leader >= 0 and (replication_factor == 1 or
                                   len(p.replicas) == replication_factor)
                for p in t.partitions.values()):
            return
        time.sleep(0.1)
    raise RuntimeError(f"topic {topic} not ready")


def delete_topics(bootstrap: str, topics: list):
    """Deletes a row group's topics, so that every row starts on an empty broker: without it
    the gigabytes earlier rows wrote stay in the page cache (Gregor) or the heap (Tansu) and a
    later row pays for reclaiming them."""
    a = AdminClient({"bootstrap.servers": bootstrap})
    for t, f in a.delete_topics(topics, operation_timeout=30).items():
        try:
            f.result(60)
        except Exception as e:  # noqa: BLE001 - a broker that cannot delete keeps the data
            print(f"warning: deleting {t}: {e}", file=sys.stderr)


def producer_conf(bootstrap: str, acks: str) -> dict:
    return {
        "bootstrap.servers": bootstrap,
        "acks": acks,
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "batch.num.messages": 100_000,
        "queue.buffering.max.messages": 2_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "compression.type": "none",
        "enable.idempotence": False,
        "delivery.report.only.error": True,
        "message.timeout.ms": 60_000,
    }


def broker_failure(broker) -> str | None:
    """Why a broker (so far only a GregorCluster) can no longer be measured, or None."""
    return getattr(broker, "failure", None)


class BrokerFailed(RuntimeError):
    pass


class Errors:
    def __init__(self):
        self.count = 0
        self.first = None

    def __call__(self, err, _msg):
        if err is not None:
            self.count += 1
            self.first = self.first or str(err)


def produce_run(bootstrap: str, topic: str, partitions: int, size: int, acks: str,
                duration_s: float, broker: BrokerProc | None) -> dict:
    errors = Errors()
    p = Producer(dict(producer_conf(bootstrap, acks), on_delivery=errors))
    payload = os.urandom(size)
    # Warm up: metadata, connections.
    p.produce(topic, payload, partition=0)
    p.flush(30)
    produce, poll = p.produce, p.poll
    n = 0
    cpu0, bcpu0 = client_cpu_s(), broker.cpu_s() if broker else 0.0
    t0 = time.perf_counter()
    stop_at = t0 + duration_s
    while True:
        for _ in range(1000):
            try:
                produce(topic, payload, partition=n % partitions)
            except BufferError:
                poll(0.005)
                continue
            n += 1
        poll(0)
        if time.perf_counter() >= stop_at:
            break
    left = p.flush(120)
    elapsed = time.perf_counter() - t0
    cpu1, bcpu1 = client_cpu_s(), broker.cpu_s() if broker else 0.0
    ok = n - errors.count - left
    return {"records": ok, "errors": errors.count + left, "first_error": errors.first,
            "elapsed_s": elapsed, "rps": ok / elapsed, "mbps": ok * size / elapsed / MiB,
            "broker_us": (bcpu1 - bcpu0) / max(ok, 1) * 1e6,
            "client_cpu_pct": (cpu1 - cpu0) / elapsed * 100}


def consumer_cpu() -> int | None:
    """The CPU the consume rows' client runs on: the highest one this process may use, or
    None with only one. librdkafka's consumer keeps two threads busy (its broker thread
    parses each response into one malloc'd op per record; the poll loop frees them). On two
    CPUs they run at once and contend for the glibc malloc arena the ops come from, and the
    contention grows as the broker answers faster: on this 2-vCPU machine the client spent
    0.7-1.3 µs of CPU per 100 B record unpinned against 0.37-0.45 µs on one CPU, against
    either broker (session 15). Pinned, the two threads take turns and the client stops
    measuring itself. Both brokers' consume rows are run the same way."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[-1] if len(cpus) > 1 else None


@contextlib.contextmanager
def on_cpu(cpu: int | None):
    """Runs the calling thread on `cpu` alone (if not None) inside the block, then gives it
    back the CPUs it had. Threads and processes it starts inside keep that one CPU."""
    allowed = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def consume_run(bootstrap: str, topic: str, partitions: int, size: int, expect: int,
                broker: BrokerProc, timeout_s: float = 120, cpu: int | None = None) -> dict:
    """With `cpu`, this thread and the consumer's librdkafka threads (created here, so they
    inherit it) run on that CPU only, until the consumer is closed."""
    with on_cpu(cpu):
        return _consume_run(bootstrap, topic, partitions, size, expect, broker, timeout_s)


def _consume_run(bootstrap: str, topic: str, partitions: int, size: int, expect: int,
                 broker: BrokerProc, timeout_s: float) -> dict:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-assign-only",
                  "enable.auto.commit": False, "fetch.max.bytes": 52_428_800,
                  "max.partition.fetch.bytes": 10_485_760, "fetch.wait.max.ms": 100,
                  "queued.min.messages": 200_000, "enable.partition.eof": False})
    c.assign([TopicPartition(topic, i, -2) for i in range(partitions)])
    n = 0
    cpu0, bcpu0 = client_cpu_s(), broker.cpu_s()
    t0 = time.perf_counter()
    last_t = t0
    deadline = t0 + timeout_s
    idle_since = time.perf_counter()
    while n < expect and time.perf_counter() < deadline:
        if broker_failure(broker):
            c.close()
            raise BrokerFailed(broker_failure(broker))
        msgs = c.consume(num_messages=10_000, timeout=0.2)
        got = 0
        for m in msgs:
            if m.error() is None:
                got += 1
        if got:
            n += got
            last_t = time.perf_counter()
            idle_since = last_t
        elif time.perf_counter() - idle_since > 10:
            break
    elapsed = last_t - t0
    cpu1, bcpu1 = client_cpu_s(), broker.cpu_s()
    c.close()
    return {"records": n, "expected": expect, "elapsed_s": elapsed,
            "rps": n / elapsed if elapsed else 0.0, "mbps": n * size / elapsed / MiB if elapsed else 0,
            "broker_us": (bcpu1 - bcpu0) / max(n, 1) * 1e6,
            "client_cpu_pct": (cpu1 - cpu0) / max(elapsed, 1e-9) * 100}


def latency_run(bootstrap: str, topic: str, acks: str, count: int, cap_s: float,
                broker=None) -> dict:
    """With a broker that can fail (a GregorCluster), gives up when it does, or when a record
    waits 60 s for its delivery report."""
    watch = hasattr(broker, "failure")
    p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 0,
                  "enable.idempotence": False})
    payload = os.urandom(100)
    samples = []
    done = []
    cb = lambda err, _m: done.append(err)  # noqa: E731
    p.produce(topic, payload, partition=0, on_delivery=cb)
    p.flush(30)
    done.clear()
    stop_at = time.perf_counter() + cap_s
    while len(samples) < count and time.perf_counter() < stop_at:
        t0 = time.perf_counter()
        p.produce(topic, payload, partition=0, on_delivery=cb)
        while not done:
            p.poll(1.0)
            if watch and not done:
                if broker_failure(broker):
                    raise BrokerFailed(broker_failure(broker))
                if time.perf_counter() - t0 > 60:
                    raise RuntimeError(f"latency: no delivery report in 60 s (acks={acks})")
        samples.append(time.perf_counter() - t0)
        err = done.pop()
        if err is not None:
            raise RuntimeError(f"latency produce failed: {err}")
    return summarize_latency(samples)


class RustClient:
    """ci/bench-client (rdkafka crate, BaseProducer/BaseConsumer) as a subprocess; its CPU
    time comes from RUSAGE_CHILDREN."""

    def __init__(self, binary: Path, consume_cpu: int | None = None):
        self.binary = binary
        self.consume_cpu = consume_cpu

    def _run(self, *argv, broker=None, cpu: int | None = None) -> tuple[dict, float]:
        """Runs one bench-client command (at most 600 s), on CPU `cpu` alone if given; killed
        early when `broker` fails."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            # The child inherits the CPU mask of the thread that forks it (a preexec_fn
            # would run Python in the child, unsafe with threads).
            with on_cpu(cpu):
                proc = subprocess.Popen([str(self.binary), *map(str, argv)], stdout=out,
                                        stderr=err, stdin=subprocess.DEVNULL, text=True)
            deadline = time.monotonic() + 600
            while True:
                try:
                    proc.wait(0.2)
                    break
                except subprocess.TimeoutExpired:
                    failure = broker_failure(broker)
                    if failure or time.monotonic() > deadline:
                        proc.kill()
                        proc.wait()
                        if failure:
                            raise BrokerFailed(failure) from None
                        raise RuntimeError(f"bench-client {argv[0]} still running after 600 s")
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(f"bench-client {argv[0]} failed: {stderr[-2000:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return json.loads(stdout.strip().splitlines()[-1]), cpu

    def produce(self, bootstrap, topic, partitions, size, acks, seconds, broker):
        bcpu0 = broker.cpu_s()
        r, cpu = self._run("produce", bootstrap, topic, partitions, size, acks, seconds,
                           broker=broker)
        bcpu1 = broker.cpu_s()
        ok, elapsed = r["records"], r["elapsed_s"]
        return {"records": ok, "errors": r["sent"] - ok, "first_error": None if r["errors"] == 0
                else "see bench-client stderr", "elapsed_s": elapsed, "rps": ok / elapsed,
                "mbps": ok * size / elapsed / MiB, "broker_us": (bcpu1 - bcpu0) / max(ok, 1) * 1e6,
                "client_cpu_pct": cpu / elapsed * 100}

    def consume(self, bootstrap, topic, partitions, size, expect, broker, timeout_s=120):
        bcpu0 = broker.cpu_s()
        r, cpu = self._run("consume", bootstrap, topic, partitions, expect, timeout_s,
                           broker=broker, cpu=self.consume_cpu)
        bcpu1 = broker.cpu_s()
        n, elapsed = r["records"], max(r["elapsed_s"], 1e-9)
        return {"records": n, "expected": expect, "elapsed_s": elapsed, "rps": n / elapsed,
                "mbps": r["bytes"] / elapsed / MiB, "broker_us": (bcpu1 - bcpu0) / max(n, 1) * 1e6,
                "client_cpu_pct": cpu / elapsed * 100}

    def latency(self, bootstrap, topic, acks, count, cap_s, broker=None):
        # rdkafka's BaseProducer::poll waits out its whole timeout, which would quantise
        # round trips; confluent-kafka's poll() returns on the delivery report itself.
        return latency_run(bootstrap, topic, acks, count, cap_s, broker)

    def ceiling(self, size, seconds=3.0):
        r, _ = self._run("ceiling", size, seconds)
        return r["records"] / r["elapsed_s"]


class PythonClient:
    """confluent-kafka in this process: a tight produce() loop."""

    def __init__(self, consume_cpu: int | None = None):
        self.consume_cpu = consume_cpu

    def produce(self, bootstrap, topic, partitions, size, acks, seconds, broker):
        return produce_run(bootstrap, topic, partitions, size, acks, seconds, broker)

    def consume(self, bootstrap, topic, partitions, size, expect, broker, timeout_s=120):
        return consume_run(bootstrap, topic, partitions, size, expect, broker, timeout_s,
                           self.consume_cpu)

    def latency(self, bootstrap, topic, acks, count, cap_s, broker=None):
        return latency_run(bootstrap, topic, acks, count, cap_s, broker)

    def ceiling(self, size, seconds=3.0):
        return client_ceiling(size, seconds)


def summarize_latency(samples: list[float]) -> dict:
    samples = sorted(samples)
    q = lambda f: samples[min(len(samples) - 1, int(f * len(samples)))] * 1e3  # noqa: E731
    return {"n": len(samples), "p50_ms": q(0.50), "p99_ms": q(0.99), "max_ms": samples[-1] * 1e3,
            "mean_ms": statistics.fmean(samples) * 1e3}


# ----------------------------------------------------------------------------- machine

def loopback_gbps(seconds: float = 2.0) -> float:
    """Bytes per second through one loopback TCP connection (threads; send/recv drop the GIL)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    total = [0]

    def sink():
        conn, _ = srv.accept()
        buf = bytearray(4 * MiB)
        view = memoryview(buf)
        while True:
            k = conn.recv_into(view)
            if not k:
                break
            total[0] += k
        conn.close()

    t = threading.Thread(target=sink, daemon=True)
    t.start()
    cli = socket.create_connection(srv.getsockname())
    chunk = b"\0" * (4 * MiB)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        cli.sendall(chunk)
    cli.close()
    t.join(10)
    elapsed = time.perf_counter() - t0
    srv.close()
    return total[0] / elapsed / 1e9


def fsync_write(directory: Path) -> dict:
    """Sequential 64 KiB writes, each made durable before the next (fio --fsync=1 or dd dsync)."""
    size_mib = 64
    if shutil.which("fio"):
        out = subprocess.run(
            ["fio", "--name=seqsync", f"--directory={directory}", "--rw=write", "--bs=64k",
             f"--size={size_mib}m", "--fsync=1", "--ioengine=sync", "--output-format=json"],
            capture_output=True, text=True, check=True).stdout
        job = json.loads(out)["jobs"][0]["write"]
        mbps = job["bw_bytes"] / MiB
        tool = "fio --rw=write --bs=64k --fsync=1"
    else:
        path = directory / "dd-dsync.bin"
        out = subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=64k",
                              f"count={size_mib * 16}", "oflag=dsync"],
                             capture_output=True, text=True, check=True).stderr
        secs = float(re.search(r"copied, ([\d.]+) s", out).group(1))
        mbps = size_mib / secs
        tool = "dd bs=64k oflag=dsync"
    for f in directory.glob("seqsync*"):
        f.unlink()
    (directory / "dd-dsync.bin").unlink(missing_ok=True)
    return {"mbps": mbps, "syncs_per_s": mbps * 16, "tool": tool}


def client_ceiling(size: int, seconds: float = 3.0) -> float:
    """Records/s this Python loop hands to librdkafka when no broker exists (enqueue only)."""
    port = free_port()  # nothing listens there
    p = Producer({"bootstrap.servers": f"127.0.0.1:{port}", "linger.ms": 5,
                  "queue.buffering.max.messages": 10_000_000,
                  "queue.buffering.max.kbytes": 2_097_151, "message.timeout.ms": 300_000,
                  "log_level": 0})
    payload = os.urandom(size)
    produce = p.produce
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(1000):
            produce("ceiling", payload, partition=n & 7)
            n += 1
    rate = n / (time.perf_counter() - t0)
    p.purge()
    return rate


def fs_type(path: Path) -> str:
    try:
        out = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True).stdout
        return out.splitlines()[1].split()[1]
    except Exception:  # noqa: BLE001 - informational only
        return "?"


# ----------------------------------------------------------------------------- main

def bench_brokers(brokers: list, args, results: list, note):
    """Every row runs on each broker in turn (one broker idle while the other is measured),
    `--repeat` times, so the brokers see the same machine load; the table shows medians.

    A step that fails on the cluster (gregor-3) is recorded as a "failure" result and the
    benchmark carries on; once a node of it has died, its remaining steps are skipped. On
    the single-process brokers a failure ends the benchmark, as it always has."""
    def attempt(broker, what, step):
        if not isinstance(broker, GregorCluster):
            return step()
        if broker.failure:
            results.append({"kind": "failure", "broker": broker.name, "step": what,
                            "error": "skipped: the cluster failed earlier", "skipped": True})
            note(f"{broker.name}: {what}: skipped (the cluster failed earlier)")
            return None
        try:
            return step()
        except Exception as e:  # noqa: BLE001 - recorded and reported in the table
            time.sleep(0.5)  # let the watchdog see a node that died under this step
            error = broker.failure or f"{type(e).__name__}: {e}"
            results.append({"kind": "failure", "broker": broker.name, "step": what,
                            "error": error})
            note(f"{broker.name}: {what} FAILED: {error}")
            return None

    def produce_row(broker, partitions, size, acks, topic, rnd):
        note(f"{broker.name}: produce {partitions}p x {size} B, acks={acks}")
        r = args.client.produce(broker.bootstrap, topic, partitions, size, acks, args.seconds,
                                broker)
        r.update(kind="produce", broker=broker.name, partitions=partitions, size=size, acks=acks,
                 round=rnd)
        results.append(r)
        note(f"  {r['rps']:,.0f} rec/s, {r['mbps']:.1f} MiB/s, "
             f"broker {r['broker_us']:.2f} us/rec, client CPU {r['client_cpu_pct']:.0f}%"
             + (f", {r['errors']} errors ({r['first_error']})" if r["errors"] else ""))
        return r

    for rep in range(args.repeat):
        if args.repeat > 1:
            note(f"--- round {rep + 1} of {args.repeat}")
        for partitions in args.partitions:
            for size in args.sizes:
                produced = {}
                topics = [f"bench-p{partitions}-s{size}-a{acks}" for acks in ("1", "all")]
                for acks, topic in zip(("1", "all"), topics):
                    for broker in brokers:
                        def produce_step(broker=broker, acks=acks, topic=topic):
                            create_topic(broker.bootstrap, topic, partitions,
                                         broker.replication_factor)
                            return produce_row(broker, partitions, size, acks, topic, rep)
                        r = attempt(broker, f"produce {partitions}p x {size} B, acks={acks}",
                                    produce_step)
                        if acks == "1" and r is not None:
                            produced[broker.name] = r["records"] + 1
                for broker in brokers:
                    def consume_step(broker=broker, rep=rep):
                        expect = produced[broker.name]
                        note(f"{broker.name}: consume {partitions}p x {size} B "
                             f"({expect:,} records)")
                        r = args.client.consume(broker.bootstrap, topics[0], partitions, size,
                                                expect, broker)
                        r.update(kind="consume", broker=broker.name, partitions=partitions,
                                 size=size, round=rep)
                        results.append(r)
                        note(f"  {r['rps']:,.0f} rec/s, {r['mbps']:.1f} MiB/s, "
                             f"got {r['records']:,}/{expect:,}")
                    what = f"consume {partitions}p x {size} B"
                    if broker.name in produced:
                        attempt(broker, what, consume_step)
                    else:  # only a cluster's failed produce row gets here
                        results.append({"kind": "failure", "broker": broker.name, "step": what,
                                        "error": "skipped: its acks=1 produce row failed",
                                        "skipped": True})
                    attempt(broker, f"delete the {partitions}p x {size} B topics",
                            lambda broker=broker: delete_topics(broker.bootstrap, topics))
    for acks in ("1", "all") if args.latency else ():
        topic = f"bench-latency-a{acks}"
        for broker in brokers:
            def latency_step(broker=broker, acks=acks, topic=topic):
                create_topic(broker.bootstrap, topic, 1, broker.replication_factor)
                note(f"{broker.name}: latency acks={acks}")
                r = args.client.latency(broker.bootstrap, topic, acks, args.latency_count,
                                        args.seconds * 2, broker)
                r.update(kind="latency", broker=broker.name, acks=acks)
                results.append(r)
                note(f"  p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms over {r['n']}")
            attempt(broker, f"latency acks={acks}", latency_step)
    for broker in brokers:
        r = {"kind": "rss", "broker": broker.name, "rss_mib": broker.rss_mib()}
        if isinstance(broker, GregorCluster):
            r["rss_parts_mib"] = broker.rss_parts()
        results.append(r)


def broker_pct(r: dict) -> float:
    """Broker CPU as a percentage of one core during the row."""
    return r["broker_us"] * r["rps"] / 1e4


def paired_ratios(results: list, repeat: int) -> list:
    """Gregor over Tansu for every throughput row, round by round. A round runs each row on
    Gregor and then on Tansu, back to back, so the two see the same machine; the ratio of
    that pair is the fair comparison. (The tables above pick each broker's median run on
    its own, which can pair a good round of one with a bad round of the other.)"""
    def run(kind, broker, rnd, **kw):
        for r in results:
            if (r["kind"] == kind and r["broker"] == broker and r.get("round") == rnd
                    and all(r.get(k) == v for k, v in kw.items())):
                return r
        return None

    rows = [("produce", p, s, a) for p in (1, 8) for s in (100, 1024) for a in ("1", "all")]
    rows += [("consume", p, s, None) for p in (1, 8) for s in (100, 1024)]
    out = ["## Gregor / Tansu, round by round", "",
           f"Each round ran the row on Gregor, then on Tansu ({repeat} round(s)). Targets: "
           "rec/s ratio >= 1, broker CPU per record ratio <= 0.5; **met** when the median "
           "of the rounds' ratios meets it.", "",
           "| row | rec/s ratio, median | rounds | CPU/rec ratio, median | rounds | targets |",
           "|---|---|---|---|---|---|"]
    shown = 0
    for kind, p, s, a in rows:
        kw = {"partitions": p, "size": s} | ({"acks": a} if a else {})
        pairs = []
        for rnd in range(repeat):
            g, t = run(kind, "gregor", rnd, **kw), run(kind, "tansu", rnd, **kw)
            if g and t and t["rps"] > 0 and t["broker_us"] > 0:
                pairs.append((g["rps"] / t["rps"], g["broker_us"] / t["broker_us"]))
        if not pairs:
            continue
        shown += 1
        rps = statistics.median(x for x, _ in pairs)
        cpu = statistics.median(y for _, y in pairs)
        met = ("met" if rps >= 1 and cpu <= 0.5 else
               "missed: " + ", ".join(w for w, bad in (("rec/s", rps < 1), ("CPU", cpu > 0.5)) if bad))
        name = f"{kind} {p}p x {s} B" + (f", acks={a}" if a else "")
        out.append(f"| {name} | {rps:.2f} | {' '.join(f'{x:.2f}' for x, _ in pairs)} | "
                   f"{cpu:.2f} | {' '.join(f'{y:.2f}' for _, y in pairs)} | {met} |")
    return out + [""] if shown else []


def render(results: list, machine: dict, args) -> str:
    brokers = [b for b in ("gregor", "tansu", "gregor-3")
               if any(r.get("broker") == b for r in results)]
    cluster = "gregor-3" in brokers
    lines = [f"# Broker benchmark, {machine['date']}", "",
             f"Machine: {machine['cores']} cores, {machine['kernel']}, Python {machine['python']}, "
             f"load average (1 min) {machine['load_start']:.2f} at the start and "
             f"{machine['load_end']:.2f} at the end (anything above ~0.1 is someone else's work "
             "competing for the cores), "
             f"librdkafka {machine['librdkafka']} (confluent-kafka {machine['confluent']}).",
             f"Gregor: {machine['gregor_version']}, data dir on {machine['data_fs']} "
             f"({machine['data_root']}), fsync before every acknowledgement. "
             f"Tansu: {machine['tansu_version']}, storage memory:// (no disk at all).",
             (f"Client: ci/bench-client (Rust, rdkafka crate = librdkafka {machine['librdkafka_rust']}, "
              "BaseProducer/BaseConsumer), one process per row" if args.client_name == "rust" else
              "Client: one Python process (confluent-kafka), tight produce() loop")
             + f"; linger.ms=5, no compression, {args.seconds:g} s per produce row, records "
               "spread round-robin over the partitions; each group of rows (partitions x size) "
               "deletes its topics when done, so every group starts on an empty broker. "
             + ("Both brokers run throughout and each row runs on one, then the other, so they "
                if not cluster else
                "All brokers run throughout and each row runs on each in turn, so they ")
             + f"see the same machine load; rows ran {args.repeat} time(s), the table shows the "
               "run with the median broker CPU per record."]
    if cluster:
        lines.append(
            "gregor-3: a 3-node Gregor cluster (the same binary, three processes on this "
            "machine, on loopback, data dirs on the same file system), bootstrap = all three Kafka "
            "addresses, topics with replication factor 3 (the gregor column's have 1), "
            "partition leaders spread over the nodes; acks=all is answered once 2 of the 3 "
            "replicas have the batch fsynced, acks=1 once the leader has. **Its CPU columns "
            "(µs/rec and %) and its RSS are the sums over its three processes**, so its CPU % "
            "can pass 100%.")
    lines += ["",
             "## Machine limits", "",
             "| what | value |", "|---|---|",
             f"| loopback TCP, one connection | {machine['loopback_gbps']:.2f} GB/s |",
             f"| fsync'd sequential write, 64 KiB blocks ({machine['fsync']['tool']}) | "
             f"{machine['fsync']['mbps']:.1f} MiB/s = {machine['fsync']['syncs_per_s']:.0f} fsyncs/s |",
             f"| {args.client_name} client ceiling, 100 B (enqueue only, no broker) | {machine['ceiling_100']:,.0f} rec/s |",
             f"| {args.client_name} client ceiling, 1 KiB (enqueue only, no broker) | {machine['ceiling_1k']:,.0f} rec/s |",
             f"| python (confluent-kafka) client ceiling, 100 B, for comparison | {machine['ceiling_py_100']:,.0f} rec/s |",
             "", "## Produce throughput", "",
             "| partitions | record | acks | " + " | ".join(
                 f"{b} rec/s | {b} MiB/s | {b} CPU µs/rec | {b} CPU | client CPU" for b in brokers)
             + " |",
             "|---|---|---|" + "---|---|---|---|---|" * len(brokers)]

    def missing(b: str, width: int, step: str) -> str:
        """The cells of a row that has no result: failed, skipped, or not run (–)."""
        f = [r for r in results if r["kind"] == "failure" and r["broker"] == b
             and r["step"] in (step, "start")]
        word = ("skipped" if f[-1].get("skipped") else "failed") if f else "–"
        return " | ".join([word] + ["–"] * (width - 1))

    def find(**kw):
        """The run of this row with the median broker CPU per record (rows run --repeat times)."""
        runs = [r for r in results if all(r.get(k) == v for k, v in kw.items())]
        if not runs:
            return None
        return sorted(runs, key=lambda r: r.get("broker_us", 0))[len(runs) // 2]

    for partitions in (1, 8):
        for size in (100, 1024):
            for acks in ("1", "all"):
                cells = []
                for b in brokers:
                    r = find(kind="produce", broker=b, partitions=partitions, size=size, acks=acks)
                    if r is None:
                        cells.append(missing(b, 5, f"produce {partitions}p x {size} B, acks={acks}"))
                        continue
                    err = f" ({r['errors']} err)" if r["errors"] else ""
                    cells.append(f"{r['rps']:,.0f}{err} | {r['mbps']:.1f} | {r['broker_us']:.2f} | "
                                 f"{broker_pct(r):.0f}% | {r['client_cpu_pct']:.0f}%")
                lines.append(f"| {partitions} | {size} B | {acks} | " + " | ".join(cells) + " |")
    pinned = machine.get("consumer_cpu")
    lines += ["", "## Consume throughput (from the beginning, assign, all partitions)", "",
              (f"The consuming client runs on CPU {pinned} alone, for every broker (librdkafka's "
               "fetch thread and poll loop otherwise contend for one malloc arena on two CPUs; "
               "see consumer_cpu in ci/bench.py); the brokers may use every CPU." if pinned is
               not None else "The consuming client may use every CPU."), "",
              "| partitions | record | " + " | ".join(
                  f"{b} rec/s | {b} MiB/s | {b} CPU µs/rec | {b} CPU | client CPU | {b} read/expected"
                  for b in brokers) + " |",
              "|---|---|" + "---|---|---|---|---|---|" * len(brokers)]
    for partitions in (1, 8):
        for size in (100, 1024):
            cells = []
            for b in brokers:
                r = find(kind="consume", broker=b, partitions=partitions, size=size)
                cells.append(missing(b, 6, f"consume {partitions}p x {size} B") if r is None else
                             f"{r['rps']:,.0f} | {r['mbps']:.1f} | {r['broker_us']:.2f} | "
                             f"{broker_pct(r):.0f}% | {r['client_cpu_pct']:.0f}% | "
                             f"{r['records']:,}/{r['expected']:,}")
            lines.append(f"| {partitions} | {size} B | " + " | ".join(cells) + " |")
    lines += ["", "## Synchronous produce latency (100 B, one record in flight, confluent-kafka "
              "produce() then poll() until its delivery report, linger.ms=0)", "",
              "| acks | " + " | ".join(f"{b} p50 ms | {b} p99 ms | {b} max ms" for b in brokers) + " |",
              "|---|" + "---|---|---|" * len(brokers)]
    for acks in ("1", "all"):
        cells = []
        for b in brokers:
            r = find(kind="latency", broker=b, acks=acks)
            cells.append(missing(b, 3, f"latency acks={acks}") if r is None else
                         f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['max_ms']:.2f}")
        lines.append(f"| {acks} | " + " | ".join(cells) + " |")
    rss = [f"{r['broker']} {r['rss_mib']:.0f} MiB" + (
        " (sum of its nodes' peaks: " + " + ".join(f"{x:.0f}" for x in r["rss_parts_mib"]) + ")"
        if r.get("rss_parts_mib") else "") for r in results if r["kind"] == "rss"]
    lines += ["", f"Peak broker RSS: {', '.join(rss) or '–'}.", ""]
    lines += paired_ratios(results, args.repeat)
    failures = [r for r in results if r["kind"] == "failure" and not r.get("skipped")]
    skipped = [r for r in results if r["kind"] == "failure" and r.get("skipped")]
    # The cluster's consume rows read the acks=1 topic back: fewer records than were
    # acknowledged means acknowledged records were lost (or never became readable).
    short = [r for r in results if r["kind"] == "consume" and r["broker"] == "gregor-3"
             and r["records"] < r["expected"]]
    if failures or skipped or short:
        lines += ["## Failures", "",
                  "A row that failed shows `failed` (or `skipped`) in its broker's columns.", ""]
        lines += [f"- {r['broker']}, {r['step']}: {r['error']}" for r in failures]
        if skipped:
            lines.append(f"- {skipped[0]['broker']}: {len(skipped)} later step(s) skipped "
                         f"(from {skipped[0]['step']} on)")
        lines += [f"- gregor-3, consume {r['partitions']}p x {r['size']} B: read "
                  f"{r['records']:,} of the {r['expected']:,} records its acks=1 produce row "
                  "had acknowledged (the consume gives up after 10 s without a record)"
                  for r in short]
        if machine.get("logs"):
            lines.append(f"- broker logs: {machine['logs']}")
        lines.append("")
    lines += ["CPU columns are CPU time over wall time (100% = one core busy): the broker's from "
              "/proc/<pid>/stat, the client's (its loop plus librdkafka's threads) from rusage. "
              "Broker and client share the machine's cores: a row whose broker + client CPU is "
              "near 100% x cores is machine-bound; a row where neither is near a core's worth is "
              "bound by waiting (fsync, round trips, fetch sizing).", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--render", type=Path, metavar="JSON",
                    help="only re-render the table of an earlier run's .json, then exit")
    ap.add_argument("--gregor-bin", type=Path)
    ap.add_argument("--tansu-bin", type=Path)
    ap.add_argument("--data-root", type=Path, default=Path("/var/tmp"))
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each produce row")
    ap.add_argument("--latency-count", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=1,
                    help="run every throughput row this many times; the table shows medians")
    ap.add_argument("--only", choices=["gregor", "tansu", "gregor-3"],
                    help="bench one broker (with --cluster: that one and gregor-3)")
    ap.add_argument("--cluster", action="store_true",
                    help="add gregor-3: a 3-node Gregor cluster on loopback, replication factor 3")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "bench-results")
    ap.add_argument("--rust-client", type=Path,
                    help="ci/bench-client binary; without it the Python client drives the load")
    # The tables have rows for these values only, so others are refused rather than run
    # and left out of the report.
    ap.add_argument("--partitions", type=int, nargs="+", default=[1, 8], choices=[1, 8],
                    metavar="N", help="only the throughput rows with these partition counts "
                                      "(1, 8; default both)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1024], choices=[100, 1024],
                    metavar="BYTES", help="only the throughput rows with these record sizes "
                                          "(100, 1024; default both)")
    ap.add_argument("--no-latency", dest="latency", action="store_false",
                    help="skip the latency rows")
    ap.add_argument("--no-pin-consumer", action="store_true",
                    help="let the consume rows' client use every CPU (by default it runs on one: "
                         "see consumer_cpu)")
    args = ap.parse_args()
    if args.render:
        saved = json.loads(args.render.read_text())
        args.seconds = saved.get("seconds", 5.0)
        args.client_name = saved.get("client", "rust" if saved["machine"].get("librdkafka_rust")
                                     else "python")
        print(render(saved["results"], saved["machine"], args))
        return
    if args.gregor_bin is None:
        ap.error("--gregor-bin is required")
    if args.only == "gregor-3":
        args.cluster = True
    args.client_name = "rust" if args.rust_client else "python"
    consume_cpu = None if args.no_pin_consumer else consumer_cpu()
    args.client = (RustClient(args.rust_client, consume_cpu) if args.rust_client
                   else PythonClient(consume_cpu))

    def note(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: (BrokerProc.stop_all(), sys.exit(130)))

    import confluent_kafka
    args.data_root.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    machine = {
        "logs": str(logs),
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cores": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
        "librdkafka": confluent_kafka.libversion()[0], "librdkafka_rust": subprocess.run(
            [str(args.rust_client), "version"], capture_output=True, text=True).stdout.strip()
        if args.rust_client else None, "confluent": confluent_kafka.__version__,
        "data_root": str(args.data_root), "data_fs": fs_type(args.data_root),
        "consumer_cpu": consume_cpu,
        "gregor_version": subprocess.run([str(args.gregor_bin), "--version"], capture_output=True,
                                         text=True).stdout.strip(),
        "tansu_version": subprocess.run([str(args.tansu_bin), "--version"], capture_output=True,
                                        text=True).stdout.strip() if args.tansu_bin else "not run",
    }
    note("machine limits: loopback, fsync'd writes, client ceiling")
    machine["loopback_gbps"] = loopback_gbps()
    fsync_dir = Path(tempfile.mkdtemp(prefix="fsync-", dir=args.data_root))
    machine["fsync"] = fsync_write(fsync_dir)
    shutil.rmtree(fsync_dir, ignore_errors=True)
    machine["ceiling_100"] = args.client.ceiling(100)
    machine["ceiling_1k"] = args.client.ceiling(1024)
    machine["ceiling_py_100"] = client_ceiling(100) if args.rust_client else machine["ceiling_100"]
    note(f"  loopback {machine['loopback_gbps']:.2f} GB/s, fsync'd 64 KiB writes "
         f"{machine['fsync']['mbps']:.1f} MiB/s, client ceiling {machine['ceiling_100']:,.0f} rec/s")

    machine["load_start"] = os.getloadavg()[0]
    if machine["load_start"] > 0.5:
        note(f"warning: load average {machine['load_start']:.2f}: other work will skew the numbers")
    results: list = []
    try:
        brokers = []
        if args.only in (None, "gregor"):
            brokers.append(start_gregor(args.gregor_bin, args.data_root, logs))
        if args.only in (None, "tansu") and args.tansu_bin:
            brokers.append(start_tansu(args.tansu_bin, logs))
        cluster_dirs = []
        if args.cluster:
            note("gregor-3: starting 3 nodes, waiting for the quorum and every Kafka port")
            try:
                cluster = GregorCluster(args.gregor_bin, args.data_root, logs, note)
                cluster_dirs.append(cluster.dir)
                brokers.append(cluster)
                note(f"gregor-3: up, bootstrap {cluster.bootstrap}")
            except Exception as e:  # noqa: BLE001 - reported in the table, others carry on
                note(f"gregor-3 FAILED to start: {e}")
                results.append({"kind": "failure", "broker": "gregor-3", "step": "start",
                                "error": str(e)})
        try:
            bench_brokers(brokers, args, results, note)
        finally:
            for b in brokers:
                b.stop()
                if isinstance(b, GregorCluster):
                    continue
                for d in (Path(a) for a in b.proc.args if "gregor-bench-" in str(a)):
                    shutil.rmtree(d, ignore_errors=True)
            for d in cluster_dirs:
                shutil.rmtree(d, ignore_errors=True)
    finally:
        BrokerProc.stop_all()

    machine["load_end"] = os.getloadavg()[0]
    table = render(results, machine, args)
    print(table)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"bench-{dt.datetime.now().strftime('%Y-%m-%d-%H%M')}.md"
    out.write_text(table)
    (out.with_suffix(".json")).write_text(json.dumps({"machine": machine, "results": results,
                                                      "seconds": args.seconds,
                                                      "client": args.client_name},
                                                     indent=1, default=str))
    note(f"wrote {out} (and .json); broker logs in {logs}")
    failed = [r for r in results if r["kind"] == "failure" and not r.get("skipped")]
    if failed:
        note(f"{failed[0]['broker']} FAILED ({len(failed)} step(s)): {failed[0]['error']}")
        sys.exit(1)


if __name__ == "__main__":
    main()
