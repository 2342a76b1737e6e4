"""The disk under the catalog's write-ahead log: one record's append + sync, three ways, with and without a large
file being written back at the same time (where the slowest admin writes on a 1M catalog spend their time).

    .venv/bin/python bench/bench_fsync.py --dir /path/on/the/index/disk [--writes 60] [--load-mb 256]

Each way appends `--record-bytes` (an add's record at D = 1280 is about 5.2 KB) and syncs, `--writes` times,
`--gap-ms` apart, the ways taking turns write by write so background load hits them alike:
  fsync        what index/catalog_log.py does: append, fsync (data and the file's new size)
  fdatasync    append, fdatasync (skips metadata the data does not need; the new size is still needed)
  prealloc     the log's space written and synced once ahead (zeros), then overwrite + fdatasync: no size change,
               so no journal commit on ext4/xfs (what PostgreSQL does with its WAL segments)
With `--load-mb` > 0 a thread writes that many MB at a time, without syncing, in a loop for the whole run (the
page cache's write-back of a catalog build or a compaction, as in the 1M benchmark); `--pace-mb M` makes it sync
every M MB instead (paced write-back: little dirty data ever waits in the cache). Prints p50 / p90 / max in ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.common

from bench.common import machine, ms_since  # noqa: E402

WAYS = ("fsync", "fdatasync", "prealloc")


def _load(folder: Path, mb: int, pace_mb: int, stop: threading.Event) -> None:
    block = os.urandom(1 << 20)
    path = folder / "load.bin"
    while not stop.is_set():
        with path.open("wb") as f:
            for i in range(1, mb + 1):
                if stop.is_set():
                    break
                f.write(block)
                if pace_mb and i % pace_mb == 0:  # paced write-back: never more than pace_mb dirty
                    f.flush()
                    os.fdatasync(f.fileno())
    path.unlink(missing_ok=True)


def run(folder: Path, writes: int, record_bytes: int, gap_ms: float, load_mb: int,
        pace_mb: int = 0) -> dict[str, list[float]]:
    record = os.urandom(record_bytes)
    fds, offsets = {}, {}
    for way in WAYS:
        fd = os.open(folder / f"{way}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        if way == "prealloc":
            os.write(fd, bytes(writes * record_bytes))
            os.fsync(fd)
        fds[way], offsets[way] = fd, 0
    stop = threading.Event()
    loader = threading.Thread(target=_load, args=(folder, load_mb, pace_mb, stop), daemon=True) if load_mb else None
    if loader:
        loader.start()
        time.sleep(2.0)  # let dirty pages pile up
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    try:
        for _ in range(writes):
            for way in WAYS:
                fd = fds[way]
                start = time.perf_counter()
                os.pwrite(fd, record, offsets[way])
                (os.fsync if way == "fsync" else os.fdatasync)(fd)
                times[way].append(ms_since(start))
                offsets[way] += record_bytes
                time.sleep(gap_ms / 1000)
    finally:
        stop.set()
        if loader:
            loader.join()
        for fd in fds.values():
            os.close(fd)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, default=None, help="a folder on the disk to measure (default: a temp folder)")
    p.add_argument("--writes", type=int, default=60)
    p.add_argument("--record-bytes", type=int, default=5200)
    p.add_argument("--gap-ms", type=float, default=50.0, help="pause after each write")
    p.add_argument("--load-mb", type=int, default=0, help="background write-back load: MB per file rewrite (0: none)")
    p.add_argument("--pace-mb", type=int, default=0, help="the background writer syncs every this many MB (0: never, "
                                                          "the page cache decides)")
    a = p.parse_args()
    if a.writes < 1 or a.record_bytes < 1 or a.load_mb < 0 or a.pace_mb < 0 or a.gap_ms < 0:
        sys.exit("bench_fsync: --writes and --record-bytes must be >= 1, --load-mb, --pace-mb and --gap-ms >= 0")
    if a.dir is not None and not a.dir.is_dir():
        sys.exit(f"bench_fsync: --dir {a.dir} is not a folder")
    with tempfile.TemporaryDirectory(prefix="bench_fsync_", dir=a.dir) as tmp:
        times = run(Path(tmp), a.writes, a.record_bytes, a.gap_ms, a.load_mb, a.pace_mb)
    load = f"{a.load_mb} MB rewritten in a loop" if a.load_mb else "none"
    if a.load_mb and a.pace_mb:
        load += f", fdatasync every {a.pace_mb} MB"
    print(f"{a.writes} appends of {a.record_bytes} B each way, {a.gap_ms:g} ms apart; background write-back: {load}; "
          f"{machine()}")
    print("| way | p50 ms | p90 ms | max ms |")
    print("|---|---|---|---|")
    for way, t in times.items():
        t = sorted(t)
        print(f"| {way} | {statistics.median(t):.1f} | {t[int(0.9 * (len(t) - 1))]:.1f} | {t[-1]:.1f} |")


if __name__ == "__main__":
    main()
