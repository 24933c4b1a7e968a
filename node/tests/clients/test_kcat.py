"""kcat (Debian's build, its own librdkafka): metadata, produce with keys, consume exactly.

Each topic is new: offset 0 is the leader's no-op (kcat skips it), and the records of one
partition take consecutive offsets from FIRST_DATA_OFFSET."""

from __future__ import annotations

import re
import shutil
import subprocess


from helpers import FIRST_DATA_OFFSET, create_topic, unique_topic

KCAT = shutil.which("kcat") or shutil.which("kafkacat")


def kcat(*args: str, input_text: str | None = None, timeout_s: float = 30) -> str:
    assert KCAT is not None, "kcat is not installed (apt-get install -y kcat)"
    proc = subprocess.run([KCAT, *args], input=input_text, capture_output=True, text=True,
                          timeout=timeout_s)
    assert proc.returncode == 0, f"kcat {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
    return proc.stdout


def test_kcat_lists_the_broker(broker):
    topic = unique_topic("kcat-meta")
    create_topic(broker.bootstrap, topic, partitions=3)
    out = kcat("-L", "-b", broker.bootstrap, "-m", "10")
    assert re.search(r"^\s*1 brokers?:", out, re.M), out
    assert re.search(rf"broker \d+ at 127\.0\.0\.1:{broker.port}\b", out), out
    assert re.search(rf'topic "{re.escape(topic)}" with 3 partitions', out), out
    for p in range(3):
        assert re.search(rf"partition {p}, leader \d+, replicas: \d+, isrs: \d+", out), out


def test_kcat_produce_and_consume_exactly(broker):
    """Two kcat producer runs (per-line keys, then a fixed key) read back from the beginning:
    every key, value and offset, the second run right after the first."""
    topic = unique_topic("kcat-pc")
    create_topic(broker.bootstrap, topic, partitions=1)
    # Per-line keys (-K), then a fixed key for a whole run (-k).
    lines = [f"key-{i}\tvalue number {i}" for i in range(20)]
    kcat("-P", "-b", broker.bootstrap, "-t", topic, "-p", "0", "-K", "\t",
         input_text="\n".join(lines) + "\n")
    kcat("-P", "-b", broker.bootstrap, "-t", topic, "-p", "0", "-k", "fixed",
         input_text="a\nb\nc\n")
    out = kcat("-C", "-b", broker.bootstrap, "-t", topic, "-p", "0", "-e", "-o", "beginning",
               "-f", "%k %s %o\n")
    base = FIRST_DATA_OFFSET
    expected = [f"key-{i} value number {i} {base + i}" for i in range(20)]
    expected += [f"fixed {v} {base + 20 + i}" for i, v in enumerate("abc")]
    assert out.splitlines() == expected


def test_kcat_consume_from_offset_and_count(broker):
    """-o <offset of m4> -c 3 reads exactly m4, m5, m6 at their offsets."""
    topic = unique_topic("kcat-off")
    create_topic(broker.bootstrap, topic, partitions=1)
    kcat("-P", "-b", broker.bootstrap, "-t", topic, "-p", "0",
         input_text="".join(f"m{i}\n" for i in range(10)))
    base = FIRST_DATA_OFFSET
    out = kcat("-C", "-b", broker.bootstrap, "-t", topic, "-p", "0", "-o", str(base + 4),
               "-c", "3", "-e", "-f", "%s@%o\n")
    assert out.splitlines() == [f"m{i}@{base + i}" for i in (4, 5, 6)]
