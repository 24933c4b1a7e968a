"""A consumer far behind the log end. Its fetches read the part of the log that the page
cache no longer holds (Gregor keeps each log file's last 8 MiB cached). Those reads use
O_DIRECT and Gregor's own read-ahead (net/src/disk/readahead.rs). Every record must come
back in order and intact, whether the consumer reads from the start in small or in default
fetches, or starts in the middle, where no read-ahead expected it. A wrong byte read from
disk would not reach the client: the broker checks each batch's CRC as it reads and fails
that fetch (the client then fetches again). So the broker's log must show no failed read."""

from __future__ import annotations

from confluent_kafka import OFFSET_BEGINNING

from helpers import consume, create_topic, produce_and_wait, producer, unique_topic

RECORDS = 48_000
SIZE = 1024  # about 50 MB in all: some 40 MiB of it lies before the cached tail
TIMEOUT_S = 120


def value(i: int) -> bytes:
    return i.to_bytes(8, "big") * (SIZE // 8)


def check(msgs: list, first: int, start: int) -> None:
    for k, m in enumerate(msgs):
        i = start + k
        assert m.offset() == first + i, (k, m.offset(), first + i)
        assert m.value() == value(i), f"record {i} (offset {m.offset()}) came back changed"


def test_a_consumer_catching_up_reads_every_record_intact(broker):
    topic = unique_topic("catch-up")
    create_topic(broker.bootstrap, topic)
    p = producer(broker.bootstrap, acks="all", linger_ms=20, batch_size=1_000_000,
                 compression_type="none")
    delivered = produce_and_wait(p, topic, [{"value": value(i), "partition": 0}
                                            for i in range(RECORDS)], timeout_s=TIMEOUT_S)
    first = delivered[0].offset
    assert [d.offset for d in delivered] == list(range(first, first + RECORDS))
    # From the start: in fetches of at most 1 MiB (many catch-up reads in a row), then with
    # the client's defaults.
    for conf in ({"max_partition_fetch_bytes": 1 << 20}, {}):
        msgs = consume(broker.bootstrap, topic, 0, OFFSET_BEGINNING, RECORDS,
                       timeout_s=TIMEOUT_S, check_crcs=True, **conf)
        check(msgs, first, 0)
    # From the middle of the recycled part, on to the end.
    mid = RECORDS // 3
    msgs = consume(broker.bootstrap, topic, 0, first + mid, RECORDS - mid, timeout_s=TIMEOUT_S,
                   check_crcs=True, max_partition_fetch_bytes=1 << 20)
    check(msgs, first, mid)
    log = broker.log_path.read_text(errors="replace")
    assert "fetch read failed" not in log, broker.log_tail()
