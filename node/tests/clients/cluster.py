"""Starts and stops a real 3-node `gregor` cluster on loopback for the real-client tests.

A `Cluster` is `n` `broker.Broker`s (node ids 1..n), each with its own free Kafka port,
free peer port and fresh data dir under pytest's tmp dir (`node<id>/data`, log in
`node<id>/broker.log`), all given the same `--peers`. Nodes are spawned together and then
waited for, because a node prints its `gregor listening on …` line only once a majority
of the voters is up. `kill(id)` SIGKILLs one node (its data stays), `restart(id)` starts it
again on the same ports and data dir and waits for it to rejoin, `stop()` SIGTERMs all.

The `gregor_cluster` fixture starts one and always kills every node at teardown, printing
the tail of each node's log when the test failed. Like the Rust cluster tests
(`node/tests/support/cluster.rs`), it holds an exclusive lock on
`$TMPDIR/gregor-node-cluster-tests.lock` while the cluster runs: three nodes per test is
all two cores can take, so cluster tests run one at a time, Rust and Python alike.
"""

from __future__ import annotations

import fcntl
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from broker import START_TIMEOUT_S, STOP_TIMEOUT_S, Broker

SERIAL_LOCK = Path(tempfile.gettempdir()) / "gregor-node-cluster-tests.lock"
SERIAL_WAIT_S = 120.0


def free_ports(n: int) -> list[int]:
    """`n` distinct ports that were free a moment ago (all bound together, then released)."""
    held = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            held.append(s)
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


class Cluster:
    """`n` gregor nodes forming one cluster; see the module doc."""

    def __init__(self, workdir: Path, n: int = 3, config: dict | None = None):
        ports = free_ports(2 * n)
        self.ids = list(range(1, n + 1))
        self.kafka_ports = {i: ports[i - 1] for i in self.ids}
        self.peer_ports = {i: ports[n + i - 1] for i in self.ids}
        self.peers_flag = ",".join(f"{i}@127.0.0.1:{self.peer_ports[i]}" for i in self.ids)
        self.nodes: dict[int, Broker] = {}
        for i in self.ids:
            extra = ["--node-id", str(i), "--peer-listen", f"127.0.0.1:{self.peer_ports[i]}",
                     "--peers", self.peers_flag]
            self.nodes[i] = Broker(workdir / f"node{i}", config=config,
                                   port=self.kafka_ports[i], extra_args=extra)

    @property
    def bootstrap(self) -> str:
        """Every node's Kafka address, for `bootstrap.servers`."""
        return ",".join(self.nodes[i].bootstrap for i in self.ids)

    def node(self, node_id: int) -> Broker:
        return self.nodes[node_id]

    def start(self, timeout_s: float = START_TIMEOUT_S) -> "Cluster":
        """Spawns every node, then waits for each one's listening line."""
        for i in self.ids:
            self.nodes[i].spawn()
        for i in self.ids:
            self.nodes[i].wait_ready(timeout_s)
        return self

    def running(self) -> list[int]:
        return [i for i in self.ids if self.nodes[i].running()]

    def kill(self, node_id: int) -> None:
        """SIGKILL one node and reap it; its data dir stays."""
        self.nodes[node_id].kill()

    def restart(self, node_id: int, timeout_s: float = START_TIMEOUT_S) -> Broker:
        """Starts a killed (or running: it is killed first) node again on its ports and data
        dir, and waits until it has rejoined (its listening line)."""
        b = self.nodes[node_id]
        b.kill()
        return b.start(timeout_s)

    def stop(self) -> dict[int, int]:
        """SIGTERM every running node, in parallel; their exit codes."""
        live = [i for i in self.ids if self.nodes[i].running()]
        for i in live:
            self.nodes[i].proc.send_signal(signal.SIGTERM)
        codes = {}
        for i in live:
            try:
                codes[i] = self.nodes[i].proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.nodes[i].kill()
                raise AssertionError(f"node {i} ignored SIGTERM for {STOP_TIMEOUT_S}s\n"
                                     f"{self.nodes[i].log_tail()}")
        return codes

    def kill_all(self) -> None:
        for b in self.nodes.values():
            b.kill()

    def log_text(self, node_id: int) -> str:
        try:
            return self.nodes[node_id].log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def grep_logs(self, needle: str) -> list[str]:
        """`node<id>: <line>` for every log line of every node that contains `needle`."""
        return [f"node{i}: {line}" for i in self.ids
                for line in self.log_text(i).splitlines() if needle in line]

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(f"==== node {i} ({self.nodes[i].log_path})\n"
                         f"{self.nodes[i].log_tail(lines)}" for i in self.ids)


class _SerialLock:
    """The cross-process, cross-language lock described in the module doc."""

    def __init__(self):
        self.file = open(SERIAL_LOCK, "a")
        deadline = time.monotonic() + SERIAL_WAIT_S
        while True:
            try:
                fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    print(f"{SERIAL_LOCK} still held after {SERIAL_WAIT_S}s; running anyway",
                          file=sys.stderr)
                    return
                time.sleep(0.2)

    def release(self):
        self.file.close()


@pytest.fixture
def gregor_cluster(tmp_path, request):
    """A started 3-node cluster; every node is killed at teardown (logs kept in tmp_path,
    their tails printed when the test failed). Broker keys for every node come from
    indirect parametrization: `@pytest.mark.parametrize("gregor_cluster", [{key: value}],
    indirect=True)`."""
    lock = _SerialLock()
    cluster = Cluster(tmp_path, 3, config=getattr(request, "param", None))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.kill_all()
        failed = getattr(request.node, "rep_call", None)
        if failed is None or failed.failed:
            print(f"\n{cluster.log_tails()}", file=sys.stderr)
        lock.release()
