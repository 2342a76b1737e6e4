"""The catalog's write-ahead log: one append-only file per generation of an index folder. No torch.

An admin add or delete appends one record (the product's metadata and its vector, or the id to delete)
and fsyncs it: O(1) in the catalog's size, where rewriting the index would be O(n). Every process serving
the folder replays the same records in the same order, so all of them reach the same catalog (the same
FAISS ids included); compaction folds the log into the next generation's base files.

A record is `<u32 length><u32 crc32><payload>`, payload = `<u32 header length><JSON header><float32
vector bytes>`. A crash mid-append leaves a torn tail; a reader stops at the first record that is short or
fails its checksum, and the next writer cuts that tail off (under the folder's lock) before appending.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_FRAME = struct.Struct("<II")  # length, crc32 of the payload
_HEADER = struct.Struct("<I")  # length of the JSON header inside the payload


@dataclass(frozen=True)
class LogRecord:
    """One logged write: op "add" (product fields + vector) or "remove" (product_id only)."""

    op: str
    fields: dict
    vector: np.ndarray | None = None  # (D,) float32 for "add"


def encode(record: LogRecord) -> bytes:
    """The bytes of one record, framed and checksummed."""
    header = json.dumps({"op": record.op, **record.fields}, separators=(",", ":")).encode("utf-8")
    vector = b"" if record.vector is None else np.ascontiguousarray(record.vector, dtype="<f4").tobytes()
    payload = _HEADER.pack(len(header)) + header + vector
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def read(path: Path, offset: int = 0) -> tuple[list[LogRecord], int]:
    """Whole records from `offset` to the end (or to a torn tail) and the offset just after the last one.

    A missing file is an empty log."""
    try:
        with Path(path).open("rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    records, pos = [], 0
    while pos + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, pos)
        payload = data[pos + _FRAME.size:pos + _FRAME.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break  # torn or damaged tail: not (yet) a record
        (header_len,) = _HEADER.unpack_from(payload)
        header = json.loads(payload[_HEADER.size:_HEADER.size + header_len])
        raw = payload[_HEADER.size + header_len:]
        vector = np.frombuffer(raw, dtype="<f4").astype(np.float32) if raw else None
        records.append(LogRecord(header.pop("op"), header, vector))
        pos += _FRAME.size + length
    return records, offset + pos


def append(path: Path, records: list[LogRecord], valid_end: int) -> int:
    """Append records durably after `valid_end` (cutting off any torn tail); returns the new end offset.

    The caller holds the folder's writer lock and has read the log up to `valid_end`."""
    data = b"".join(encode(r) for r in records)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size != valid_end:
            os.ftruncate(fd, valid_end)  # a crash mid-append left a partial record
        os.lseek(fd, valid_end, os.SEEK_SET)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return valid_end + len(data)
