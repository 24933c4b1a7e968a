"""A minimal, independent Kafka wire client: ApiVersions and Fetch, batch headers only.

Real clients hide control batches (transaction markers, Raft's leader no-op) from the
application, so they cannot tell a control batch from a hole in the log. This module
walks a partition batch by batch and reports every batch header, so tests can check
that offsets are dense: every offset below the high watermark belongs to exactly one
batch, data or control, and every stored batch carries a valid CRC32C.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

API_FETCH = 1
API_VERSIONS = 18
# Fetch versions we can encode (non-flexible); we use the lowest the broker offers.
FETCH_VERSIONS = range(4, 12)
BATCH_HEADER_BYTES = 61
ATTR_CONTROL = 0x20
ATTR_TRANSACTIONAL = 0x10
NOT_LEADER_OR_FOLLOWER = 6
# A new leader answers Fetch with NOT_LEADER_OR_FOLLOWER until its no-op commits (a few ms
# after a restart or topic creation); real clients retry, and so does walk_partition.
NOT_LEADER_RETRY_S = 10.0


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


@dataclass
class Batch:
    base_offset: int
    last_offset: int
    leader_epoch: int
    magic: int
    attributes: int
    record_count: int
    crc_ok: bool
    size_bytes: int

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & ATTR_CONTROL)


class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ValueError(f"response truncated at {self.pos} (+{size} of {len(self.data)})")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values[0] if len(values) == 1 else values

    def string(self) -> str | None:
        n = self.take(">h")
        if n < 0:
            return None
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        return raw.decode()

    def bytes_(self) -> bytes | None:
        n = self.take(">i")
        if n < 0:
            return None
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        return raw


def _string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


class Connection:
    """One TCP connection speaking request header v1 / response header v0."""

    def __init__(self, host: str, port: int, timeout_s: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.correlation = 0

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _recv_exact(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self.sock.recv(min(n, 1 << 20))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def request(self, api_key: int, api_version: int, body: bytes) -> Reader:
        self.correlation += 1
        header = struct.pack(">hhi", api_key, api_version, self.correlation) + _string("rawkafka")
        frame = header + body
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", self._recv_exact(4))[0]
        reader = Reader(self._recv_exact(size))
        correlation = reader.take(">i")
        assert correlation == self.correlation, f"correlation {correlation} != {self.correlation}"
        return reader

    def api_versions(self) -> dict[int, tuple[int, int]]:
        r = self.request(API_VERSIONS, 0, b"")
        error = r.take(">h")
        assert error == 0, f"ApiVersions v0 error {error}"
        out = {}
        for _ in range(r.take(">i")):
            key, lo, hi = r.take(">hhh")
            out[key] = (lo, hi)
        return out

    def fetch_version(self) -> int:
        lo, hi = self.api_versions().get(API_FETCH, (-1, -1))
        usable = [v for v in FETCH_VERSIONS if lo <= v <= hi]
        assert usable, f"broker offers Fetch v{lo}..v{hi}; this checker needs one of v4..v11"
        return usable[0]

    def fetch(self, version: int, topic: str, partition: int, offset: int,
              max_bytes: int = 4 << 20) -> tuple[int, int, bytes]:
        """One Fetch of one partition: (error_code, high_watermark, records bytes)."""
        body = struct.pack(">iiii", -1, 500, 1, max_bytes) + struct.pack(">b", 0)
        if version >= 7:
            body += struct.pack(">ii", 0, -1)  # no fetch session
        body += struct.pack(">i", 1) + _string(topic) + struct.pack(">i", 1)
        body += struct.pack(">i", partition)
        if version >= 9:
            body += struct.pack(">i", -1)
        body += struct.pack(">q", offset)
        if version >= 5:
            body += struct.pack(">q", -1)
        body += struct.pack(">i", max_bytes)
        if version >= 7:
            body += struct.pack(">i", 0)  # forgotten topics
        if version >= 11:
            body += _string("")
        r = self.request(API_FETCH, version, body)
        r.take(">i")  # throttle
        if version >= 7:
            top_error, _session = r.take(">hi")
            assert top_error == 0, f"Fetch top-level error {top_error}"
        result = None
        for _ in range(r.take(">i")):
            name = r.string()
            for _ in range(r.take(">i")):
                index, error, hw = r.take(">ihq")
                r.take(">q")  # last stable offset
                if version >= 5:
                    r.take(">q")
                aborted = r.take(">i")
                for _ in range(max(aborted, 0)):
                    r.take(">qq")
                if version >= 11:
                    r.take(">i")
                records = r.bytes_() or b""
                if name == topic and index == partition:
                    result = (error, hw, records)
        assert result is not None, "Fetch response does not name the partition asked for"
        return result


def parse_batches(records: bytes, check_crc: bool = True) -> list[Batch]:
    """Whole batches in a Fetch response; a partial batch at the end is dropped."""
    out = []
    pos = 0
    while pos + BATCH_HEADER_BYTES <= len(records):
        base, length, epoch, magic, crc, attrs, last_delta = struct.unpack_from(
            ">qiibIhi", records, pos)
        end = pos + 12 + length
        if end > len(records):
            break
        assert magic == 2, f"batch at offset {base} has magic {magic}"
        count = struct.unpack_from(">i", records, pos + 57)[0]
        crc_ok = crc32c(records[pos + 21:end]) == crc if check_crc else True
        out.append(Batch(base, base + last_delta, epoch, magic, attrs, count, crc_ok, 12 + length))
        pos = end
    return out


def walk_partition(host: str, port: int, topic: str, partition: int,
                   start: int = 0, check_crc: bool = True) -> tuple[list[Batch], int]:
    """Every batch from `start` up to the high watermark, and that high watermark.
    NOT_LEADER_OR_FOLLOWER is retried for up to NOT_LEADER_RETRY_S; any other error fails."""
    batches: list[Batch] = []
    with Connection(host, port) as conn:
        version = conn.fetch_version()
        offset = start
        hw = None
        retry_deadline = time.monotonic() + NOT_LEADER_RETRY_S
        for _ in range(100_000):
            error, hw, records = conn.fetch(version, topic, partition, offset)
            if error == NOT_LEADER_OR_FOLLOWER and time.monotonic() < retry_deadline:
                time.sleep(0.02)
                continue
            assert error == 0, f"Fetch {topic}-{partition}@{offset}: error {error}"
            if offset >= hw:
                break
            got = parse_batches(records, check_crc)
            assert got, f"Fetch {topic}-{partition}@{offset} < hw {hw} returned no whole batch"
            # A batch that starts before the fetch offset (the one containing it) is legal.
            for b in got:
                if b.last_offset >= offset:
                    batches.append(b)
            offset = got[-1].last_offset + 1
        return batches, hw


def control_offsets(batches: list[Batch]) -> list[tuple[int, int]]:
    """(base offset, record count) of every control batch, in log order."""
    return [(b.base_offset, b.record_count) for b in batches if b.is_control]


def dense_problems(batches: list[Batch], start: int, hw: int) -> list[str]:
    """Why `batches` do not tile [start, hw) exactly; empty when they do."""
    problems = []
    expect = start
    for b in batches:
        if b.base_offset > expect:
            problems.append(f"hole: offsets {expect}..{b.base_offset - 1} belong to no batch")
        elif b.base_offset < expect:
            problems.append(f"overlap: batch {b.base_offset}..{b.last_offset} starts before {expect}")
        if b.last_offset < b.base_offset:
            problems.append(f"batch at {b.base_offset} has a negative last offset delta")
        if not b.crc_ok:
            problems.append(f"batch {b.base_offset}..{b.last_offset} fails its CRC32C")
        expect = b.last_offset + 1
    if expect != hw:
        problems.append(f"batches end at {expect}, high watermark is {hw}")
    return problems
