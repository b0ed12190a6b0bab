"""The records every client produces and the checks every client's reads must pass.

Record i of a run goes to partition i % 3 with key `key-i`, a value derived from i, two headers and
the timestamp BASE_TS + i, so that partition p holds records p, p + 3, p + 6, ... at offsets
0, 1, 2, ... and every read can be checked exactly.
"""
from dataclasses import dataclass

PARTITIONS = 3
RECORDS = int(__import__("os").environ.get("INTEROP_RECORDS", "100000"))
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
BASE_TS = 1_700_000_000_000


def key(i: int) -> bytes:
    return f"key-{i}".encode()


def value(i: int) -> bytes:
    return (f"v{i:08d}-" + "lorem ipsum dolor " * (i % 17 + 3)).encode()


def headers(i: int, client: str):
    return [("idx", str(i).encode()), ("client", client.encode())]


def timestamp(i: int) -> int:
    return BASE_TS + i


@dataclass
class Consumed:
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: list  # [(str, bytes)]
    timestamp: int


def index_of(partition: int, offset: int) -> int:
    return offset * PARTITIONS + partition


def count_in_partition(partition: int, total: int = RECORDS) -> int:
    return len(range(partition, total, PARTITIONS))


def check_records(records, partition: int, start_offset: int, client: str, total: int = RECORDS, check_ts=True,
                  expected_headers=None):
    """The records read from `partition` starting at `start_offset` are exactly the expected ones."""
    expected_headers = expected_headers or (lambda i: headers(i, client))
    expected = count_in_partition(partition, total) - start_offset
    assert len(records) == expected, f"p{partition} from {start_offset}: {len(records)} records, expected {expected}"
    for n, r in enumerate(records):
        off = start_offset + n
        i = index_of(partition, off)
        assert r.partition == partition
        assert r.offset == off, f"p{partition}: offset {r.offset} where {off} was expected"
        assert r.key == key(i), (r.key, key(i))
        assert r.value == value(i), f"p{partition}@{off}: value differs"
        assert list(r.headers) == expected_headers(i), (r.headers, expected_headers(i))
        if check_ts:
            assert r.timestamp == timestamp(i), (r.timestamp, timestamp(i))


def middle_offset(partition: int, total: int = RECORDS) -> int:
    return count_in_partition(partition, total) // 2


def offset_for_timestamp(partition: int, ts: int, total: int = RECORDS) -> int:
    """The first offset in `partition` whose record has a timestamp at or after `ts`."""
    for off in range(count_in_partition(partition, total)):
        if timestamp(index_of(partition, off)) >= ts:
            return off
    return -1


# A timestamp that falls between records of every partition.
SEEK_TS = BASE_TS + (RECORDS * 2) // 3 + 1


def verify_reads(bootstrap, topic, client, consume, offset_for_time):
    """Reads every partition from offset 0, from the middle, and from SEEK_TS, and checks each.

    `consume(bootstrap, topic, partition, start_offset, count)` returns Consumed records;
    `offset_for_time(bootstrap, topic, partition, ts)` returns an offset (ListOffsets)."""
    for p in range(PARTITIONS):
        n = count_in_partition(p)
        check_records(consume(bootstrap, topic, p, 0, n), p, 0, client)
        mid = middle_offset(p)
        check_records(consume(bootstrap, topic, p, mid, n - mid), p, mid, client)
        ts_offset = offset_for_time(bootstrap, topic, p, SEEK_TS)
        assert ts_offset == offset_for_timestamp(p, SEEK_TS)
        check_records(consume(bootstrap, topic, p, ts_offset, n - ts_offset), p, ts_offset, client)


def verify_driver_reads(client, run):
    """Reads every partition from offset 0, from the middle and from SEEK_TS through a driver
    program (tests/interop/java, tests/interop/go) and checks each. `run(specs)` runs the driver's
    consume mode on specs `PARTITION:START:COUNT` (START an offset or tTIMESTAMP) and returns what
    it printed: "# PARTITION START" before each read, then per record its offset, key, value,
    headers (k=v,) and timestamp, tab-separated."""
    specs = []
    for p in range(PARTITIONS):
        n = count_in_partition(p)
        mid = middle_offset(p)
        specs += [f"{p}:0:{n}", f"{p}:{mid}:{n - mid}", f"{p}:t{SEEK_TS}:{n}"]
    reads = []
    for line in run(specs).splitlines():
        if line.startswith("# "):
            _, partition, start = line.split()
            reads.append((int(partition), int(start), []))
            continue
        offset, k, v, hs, ts = line.split("\t")
        pairs = [tuple(h.split("=", 1)) for h in hs.split(",") if h]
        partition = reads[-1][0]
        reads[-1][2].append(Consumed(partition, int(offset), k.encode(), v.encode(),
                                     [(a, b.encode()) for a, b in pairs], int(ts)))
    assert len(reads) == len(specs)
    for n, (p, start, records) in enumerate(reads):
        if n % 3 == 2:
            assert start == offset_for_timestamp(p, SEEK_TS)
        check_records(records, p, start, client)
