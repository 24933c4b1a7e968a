"""Starts and stops a real `gregor` process for the real-client tests.

A `Broker` owns one process on one port and one data dir. It can be SIGKILLed and
restarted on the same port and data dir (the crash test does that), stopped with
SIGTERM (which must exit 0), and it always dies with the test that started it.

The binary is `$GREGOR_BIN` if set, else `<repo>/target/release/gregor`
(`ci/test.sh` builds it). For comparing behaviour, `$GREGOR_TEST_TANSU_BIN` runs the
suite against a Tansu binary instead; tests marked `gregor_only` are then skipped.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
READY_LINE = re.compile(r"^gregor listening on 127\.0\.0\.1:(\d+) \(data in (.+)\)$")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


def gregor_bin() -> Path:
    env = os.environ.get("GREGOR_BIN")
    if env:
        return Path(env)
    target = os.environ.get("CARGO_TARGET_DIR")
    base = Path(target) if target else REPO_ROOT / "target"
    return base / "release" / "gregor"


def tansu_bin() -> Path | None:
    env = os.environ.get("GREGOR_TEST_TANSU_BIN")
    return Path(env) if env else None


def _die_with_parent() -> None:
    """Child side of fork: SIGKILL this broker when the thread that started it dies, so a
    test runner killed from outside leaves no broker behind (start brokers from the main
    thread only)."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    """A port that was free a moment ago (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def write_toml(path: Path, settings: dict) -> Path:
    """Writes Kafka-named broker keys as quoted TOML keys (`"num.partitions" = 3`)."""
    lines = [f'"{k}" = {toml_value(v)}' for k, v in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class BrokerStartError(RuntimeError):
    pass


class Broker:
    """One broker process; see the module doc."""

    def __init__(self, workdir: Path, config: dict | None = None, port: int | None = None,
                 extra_args: list[str] | None = None):
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config_path = write_toml(workdir / "gregor.toml", config) if config else None
        self.extra_args = list(extra_args or [])
        self.log_path = workdir / "broker.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.tansu = tansu_bin()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.tansu is not None:
            url = f"tcp://127.0.0.1:{self.port}"
            return [str(self.tansu), "broker", "--listener-url", url,
                    "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
        cmd = [str(gregor_bin()), "--listen", self.bootstrap, "--data-dir", str(self.data_dir)]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        return cmd + self.extra_args

    def start(self, timeout_s: float = START_TIMEOUT_S) -> "Broker":
        """Starts the process and waits for its listening line."""
        self.spawn()
        return self.wait_ready(timeout_s)

    def spawn(self) -> "Broker":
        """Starts the process without waiting for it to be ready (a cluster node prints its
        listening line only once a majority of the voters is up, so a cluster spawns every
        node first and then waits for each)."""
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        assert threading.current_thread() is threading.main_thread(), "start brokers from the main thread"
        binary = Path(self.command()[0])
        if not binary.exists():
            raise BrokerStartError(
                f"broker binary {binary} not found: build it with "
                "`cargo build --release --bin gregor` or set GREGOR_BIN")
        log = open(self.log_path, "ab")
        log.write(f"\n===== start #{self.starts + 1}: {' '.join(self.command())}\n".encode())
        log.flush()
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=log,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        log.close()
        self.starts += 1
        self._ready = threading.Event()
        self._lines: list[str] = []
        threading.Thread(target=self._pump_stdout, args=(self.proc, self._ready, self._lines),
                         daemon=True).start()
        return self

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> "Broker":
        """Waits for the listening line of the process `spawn` started."""
        ready, lines = self._ready, self._lines
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready.wait(0.05):
                break
            if self.proc.poll() is not None:
                raise BrokerStartError(
                    f"broker exited with {self.proc.returncode} before it was ready; "
                    f"stdout={lines!r}\n{self.log_tail()}")
            if self.tansu is not None and self._port_open():
                break
        else:
            self.kill()
            raise BrokerStartError(f"broker not ready after {timeout_s}s; stdout={lines!r}\n"
                                   f"{self.log_tail()}")
        if self.tansu is None:
            match = READY_LINE.match(lines[0])
            assert match, f"unexpected ready line {lines[0]!r}"
            assert int(match.group(1)) == self.port, f"listening on the wrong port: {lines[0]!r}"
            assert Path(match.group(2)) == self.data_dir, f"wrong data dir: {lines[0]!r}"
        return self

    def _port_open(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def _pump_stdout(self, proc: subprocess.Popen, ready: threading.Event, lines: list[str]):
        """Reads stdout for the whole life of the process so the pipe never fills."""
        with open(self.workdir / "broker.stdout", "ab") as out:
            for raw in proc.stdout:
                out.write(raw)
                out.flush()
                line = raw.decode(errors="replace").rstrip("\n")
                lines.append(line)
                if READY_LINE.match(line):
                    ready.set()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL and reap; a no-op when the process is gone already."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=STOP_TIMEOUT_S)

    def terminate(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait for the exit and return its code (SIGKILL after the timeout)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"broker ignored SIGTERM for {timeout_s}s\n{self.log_tail()}")
        return self.proc.returncode

    def restart(self) -> "Broker":
        self.kill()
        return self.start()

    def cpu_seconds(self) -> float:
        """utime + stime of the broker process so far, from /proc/<pid>/stat."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no broker log)"
        return "---- broker log (tail) ----\n" + "\n".join(text[-lines:])

    def partition_dirs(self, topic: str) -> list[Path]:
        """Directories named `<topic>-<partition>` anywhere under the data dir."""
        pattern = re.compile(re.escape(topic) + r"-\d+$")
        found = []
        for root, dirs, _files in os.walk(self.data_dir):
            found += [Path(root) / d for d in dirs if pattern.match(d)]
        return sorted(found)
