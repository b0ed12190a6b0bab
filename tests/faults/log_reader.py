"""Reads a replica's records straight from its segment files, for the checker's `replica` events:
what each broker's disk holds, independent of any broker or client code.

A segment (`<log.dirs>/<topic>-<partition>/<base offset>.log`) is a run of Kafka record batches
(magic 2). Each batch header gives its base offset and length; its records carry offset deltas,
keys and values as varints and bytes. The segments are preallocated, so a zero batch length ends
the data. Control batches (transaction markers) hold no data records and are skipped.

Invariants: nothing past a torn batch (a length running off the file) is read; a compressed batch
is not guessed at (it raises, since the harness's producers send uncompressed data); offsets come
out strictly increasing within a replica, or `read_replica` raises.
"""
import struct
from pathlib import Path

BATCH_HEADER_BYTES = 61  # base offset (8) through record count (4), magic 2
CONTROL_BIT = 0x20
COMPRESSION_MASK = 0x07


def _varint(buf: bytes, pos: int):
    """A zigzag varint at `pos`: (value, next position)."""
    shift = result = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("varint runs off the record")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def _bytes_field(buf: bytes, pos: int):
    """A varint length and that many bytes (None for length -1): (bytes or None, next position)."""
    length, pos = _varint(buf, pos)
    if length < 0:
        return None, pos
    if pos + length > len(buf):
        raise ValueError("a key or value runs off the record")
    return buf[pos:pos + length], pos + length


def _records(base_offset: int, body: bytes, count: int):
    """The (offset, key, value) of `count` records in an uncompressed batch's record area."""
    pos = 0
    for _ in range(count):
        length, pos = _varint(body, pos)
        record = body[pos:pos + length]
        pos += length
        r = 1  # attributes
        _, r = _varint(record, r)  # timestamp delta
        delta, r = _varint(record, r)
        key, r = _bytes_field(record, r)
        value, r = _bytes_field(record, r)
        yield base_offset + delta, key, value


def segment_records(path: Path):
    """Every data record of one segment: (offset, key bytes or None, value bytes or None)."""
    data = path.read_bytes()
    pos = 0
    while pos + 12 <= len(data):
        base_offset, length = struct.unpack_from(">qi", data, pos)
        if length <= 0 or pos + 12 + length > len(data):
            return
        batch = data[pos:pos + 12 + length]
        pos += 12 + length
        magic = batch[16]
        if magic != 2:
            raise ValueError(f"{path}: batch at {base_offset} has magic {magic}")
        attributes, = struct.unpack_from(">h", batch, 21)
        if attributes & CONTROL_BIT:
            continue
        if attributes & COMPRESSION_MASK:
            raise ValueError(f"{path}: batch at {base_offset} is compressed")
        count, = struct.unpack_from(">i", batch, BATCH_HEADER_BYTES - 4)
        yield from _records(base_offset, batch[BATCH_HEADER_BYTES:], count)


def _text(b):
    return None if b is None else b.decode(errors="replace")


def read_replica(data_dir: Path, topic: str, partition: int, below_offset: int):
    """One replica's records of a partition below `below_offset` (its high watermark), in offset
    order, as (offset, key str or None, value str or None)."""
    d = data_dir / f"{topic}-{partition}"
    out = []
    for segment in sorted(d.glob("*.log"), key=lambda p: int(p.stem)):
        for offset, key, value in segment_records(segment):
            if offset >= below_offset:
                return out
            if out and offset <= out[-1][0]:
                raise ValueError(f"{segment}: offset {offset} after {out[-1][0]}")
            out.append((offset, _text(key), _text(value)))
    return out
