#!/usr/bin/env python3
"""What durability costs in CPU on this machine's disk, per produce request, three ways.

Run by hand (not in CI): `python3 ci/fsync_cost.py [--dir D] [--files 8] [--bytes 150000]
[--rounds 400]`. One "round" stands for one produce request that carries `--bytes` for each
of `--files` partitions:

* per-file: what Gregor does now. Each partition file gets its bytes appended and
  fdatasynced, all files at once, one thread per file (like the disk writer threads).
* per-file, preallocated: the same, but over files that were zero-filled and synced
  beforehand, so each fdatasync writes data only (no block allocation, no new size).
* one shared file: what a node-wide write-ahead log would do. The round's bytes for every
  partition go to one file with one pwritev and one fdatasync.
* per-file, one syncfs: each partition file gets its bytes appended (one thread), then one
  syncfs(2) makes the whole file system durable: one journal commit and one device flush
  for every file, instead of one each. (Tried under the real broker in session 15: the
  partitions' syncs do not arrive together there, see docs/fsync-cost.md.)

It prints the process CPU (user + system, from getrusage) and the wall time per round.
The bytes are random and nothing else runs. The per-file rows include waking the threads
each round (a barrier), as Gregor's writer threads are woken for each op. Defaults match the 8 partitions x 100 B
bench row: about 150 KB per partition per fsync. The files go under --dir (default
/var/tmp, a real disk, not tmpfs) and are removed at the end.
"""

import argparse
import ctypes
import os
import resource
import shutil
import tempfile
import threading
import time


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def per_file(d: str, files: int, data: bytes, rounds: int, prealloc: bool) -> tuple:
    fds = [os.open(os.path.join(d, f"{'q' if prealloc else 'p'}{i}"),
                   os.O_CREAT | os.O_TRUNC | os.O_WRONLY) for i in range(files)]
    if prealloc:
        zeros = bytes(len(data) * rounds)
        for fd in fds:
            os.pwrite(fd, zeros, 0)
            os.fdatasync(fd)
    start = threading.Barrier(files)

    def writer(fd: int):
        position = 0
        for _ in range(rounds):
            start.wait()
            os.pwrite(fd, data, position)
            os.fdatasync(fd)
            position += len(data)

    threads = [threading.Thread(target=writer, args=(fd,)) for fd in fds]
    c, t = cpu_s(), time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    c, t = cpu_s() - c, time.monotonic() - t
    for fd in fds:
        os.close(fd)
    return c, t


def shared(d: str, files: int, data: bytes, rounds: int) -> tuple:
    fd = os.open(os.path.join(d, "wal"), os.O_CREAT | os.O_TRUNC | os.O_WRONLY)
    position = 0
    c, t = cpu_s(), time.monotonic()
    for _ in range(rounds):
        os.pwritev(fd, [data] * files, position)
        os.fdatasync(fd)
        position += len(data) * files
    c, t = cpu_s() - c, time.monotonic() - t
    os.close(fd)
    return c, t


def per_file_syncfs(d: str, files: int, data: bytes, rounds: int) -> tuple:
    fds = [os.open(os.path.join(d, f"s{i}"), os.O_CREAT | os.O_TRUNC | os.O_WRONLY)
           for i in range(files)]
    libc = ctypes.CDLL(None, use_errno=True)
    position = 0
    c, t = cpu_s(), time.monotonic()
    for _ in range(rounds):
        for fd in fds:
            os.pwrite(fd, data, position)
        if libc.syncfs(fds[0]) != 0:
            raise OSError(ctypes.get_errno(), "syncfs failed")
        position += len(data)
    c, t = cpu_s() - c, time.monotonic() - t
    for fd in fds:
        os.close(fd)
    return c, t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--bytes", type=int, default=150_000)
    ap.add_argument("--rounds", type=int, default=400)
    args = ap.parse_args()
    if args.files < 1 or args.bytes < 1 or args.rounds < 1:
        ap.error("--files, --bytes and --rounds must be at least 1")
    d = tempfile.mkdtemp(prefix="fsync-cost-", dir=args.dir)
    data = os.urandom(args.bytes)
    try:
        print(f"{args.files} files x {args.bytes:,} B per round, {args.rounds} rounds, in {d}")
        for _ in range(2):  # twice: the first pass of each also warms the disk
            for name, run in (
                ("per-file", lambda: per_file(d, args.files, data, args.rounds, False)),
                ("per-file, preallocated", lambda: per_file(d, args.files, data, args.rounds, True)),
                ("one shared file", lambda: shared(d, args.files, data, args.rounds)),
                ("per-file, one syncfs", lambda: per_file_syncfs(d, args.files, data, args.rounds)),
            ):
                c, t = run()
                print(f"  {name:24} CPU {c * 1e6 / args.rounds:7.0f} us/round   "
                      f"wall {t * 1e6 / args.rounds:7.0f} us/round")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
