"""File helpers with one home each: crash-safe writes, the image suffixes we read, `products.csv`. No torch.

Atomic writes are what keep "a crash mid-write leaves the previous state intact" true everywhere: the
service's admin adds, the catalog, checkpoints and exported ONNX files all go through `write_atomic` /
`replace_atomic`.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from rtdgan.index.errors import UserError

# Every image suffix we read (PIL decodes them all); a folder scan keeps only these.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
PRODUCTS_CSV = "products.csv"  # product metadata beside a LookBook folder (the synthetic set writes one)


def is_image_file(path: Path) -> bool:
    """A regular file with one of IMAGE_SUFFIXES."""
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def fsync_path(path: Path) -> None:
    """fsync a file, or a folder (which makes a rename or a new file in it durable on POSIX)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def replace_atomic(path: Path) -> Iterator[BinaryIO]:
    """Open a temporary file beside `path`; on a clean exit fsync it, rename it over `path`, fsync the folder.

    A reader sees the old file or the new one, never half a file; on an exception the old file stays."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(path.parent)


def write_atomic(path: Path, data: bytes | Callable[[BinaryIO], object]) -> None:
    """Write bytes (or whatever `data(f)` writes) to `path` atomically and durably."""
    with replace_atomic(path) as f:
        if isinstance(data, bytes):
            f.write(data)
        else:
            data(f)


# Paced write-back: a large file is synced every this many bytes as it is written (`PacedWriter`).
WRITE_PACE = 16 << 20


class PacedWriter:
    """Writes to an open binary file, fdatasync-ing every `pace` bytes, so at most `pace` bytes of it wait in the
    page cache at any time.

    A multi-GB file written in one go (a catalog's FAISS index at a save or a compaction) leaves gigabytes dirty,
    and every small fsync on the same disk meanwhile — the catalog log's, that is, each admin write's — queues
    behind their write-back: hundreds of ms. Synced as it goes, the file costs the same disk time and the small
    fsyncs wait for at most `pace` bytes (bench/bench_fsync.py --pace-mb; docs/benchmarks.md)."""

    def __init__(self, f: BinaryIO, pace: int = WRITE_PACE) -> None:
        self.f, self.pace, self.unsynced = f, pace, 0

    def write(self, data: bytes) -> int:
        n = self.f.write(data)
        self.unsynced += n
        if self.unsynced >= self.pace:
            self.sync()
        return n

    def sync(self) -> None:
        """The data written so far to disk (fdatasync)."""
        self.f.flush()
        os.fdatasync(self.f.fileno())
        self.unsynced = 0


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """A UTF-8 CSV with a header as a list of dicts; UserError when it is not UTF-8."""
    try:
        with Path(path).open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not a UTF-8 CSV file ({e.reason})") from e


def read_products_csv(path: Path) -> dict[str, dict[str, str]]:
    """product_id -> its row of a `products.csv` (category, colour, pattern, title, ...); {} when absent."""
    if not Path(path).is_file():
        return {}
    return {row["product_id"]: row for row in read_csv_rows(path) if row.get("product_id")}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
