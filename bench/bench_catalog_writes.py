"""Admin write latency and search stalls on a large catalog: the write-ahead log against a full save.

    python bench/bench_catalog_writes.py --sizes 100000 --kind ivf          # D = 1280 (EfficientNet-Lite0)
    python bench/bench_catalog_writes.py --sizes 100000,1000000 --kind ivf --writes 50

For each size n it builds a catalog of n clustered unit vectors, saves it as an index folder and opens it
the way the service does. Then, side by side in one run:
  - `Catalog.write` (what an admin add or delete does now: one fsynced log record) for --writes adds and
    deletes, and, for reference, one full `Catalog.save` (what every admin write would cost without the log);
  - a search thread querying (k = 10) without pause while the writes run, against the same thread with no
    writes: the longest search latency in each, and their difference, the longest stall a write caused.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.common

from bench.common import clustered, machine, ms_since, passive_openmp  # noqa: E402

passive_openmp()  # before FAISS loads

import numpy as np  # noqa: E402

from rtdgan.index.catalog.base import ProductMeta  # noqa: E402
from rtdgan.index.catalog.file import KINDS, Catalog  # noqa: E402
from rtdgan.index.files import WRITE_PACE  # noqa: E402


def search_latencies(catalog: Catalog, queries: np.ndarray, stop: threading.Event, out: list[float]) -> None:
    i = 0
    while not stop.is_set():
        start = time.perf_counter()
        catalog.search(queries[i % len(queries)], 10)
        out.append(ms_since(start))
        i += 1


def with_searches(catalog: Catalog, queries: np.ndarray, work, seconds: float | None = None) -> list[float]:
    """Search latencies (ms) of a thread searching while `work()` runs (or for `seconds` with no work)."""
    stop, latencies = threading.Event(), []
    thread = threading.Thread(target=search_latencies, args=(catalog, queries, stop, latencies))
    thread.start()
    if work is None:
        time.sleep(seconds)
    else:
        work()
    stop.set()
    thread.join()
    return latencies


class Phases:
    """--phases: where each write's time goes. Wraps the write path's steps (the log append with its fsync, each
    `_apply_log` including its wait for the lock searches hold, the writer lock) and keeps the time of each step
    per write, so the slowest writes can be taken apart."""

    def __init__(self) -> None:
        import rtdgan.index.catalog.file as C

        self.current: dict[str, float] = {}
        self.writes: list[dict[str, float]] = []
        for owner, name in ((C.catalog_log, "append"), (C.Catalog, "_apply_log"), (C, "read_folder_manifest")):
            setattr(owner, name, self._timed(getattr(owner, name), name))
        lock = C._writer_lock

        @contextlib.contextmanager
        def timed_lock(folder: Path):  # noqa: ANN202
            start = time.perf_counter()
            with lock(folder):
                self._add("writer_lock_wait", start)
                yield
        C._writer_lock = timed_lock

    def _add(self, name: str, start: float) -> None:
        self.current[name] = self.current.get(name, 0.0) + ms_since(start)

    def _timed(self, fn, name: str):  # noqa: ANN001, ANN202
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if threading.current_thread() is threading.main_thread():  # the writes, not the search thread
                    self._add(name, start)
        return wrapper

    def done(self, total_ms: float, what: str) -> None:
        other = total_ms - sum(self.current.values())  # the wait for the search lock before the first apply, get()
        self.writes.append({"write": what, "total": round(total_ms, 2)} | {k: round(v, 2) for k, v in self.current.items()}
                           | {"other (search-lock wait, reads)": round(other, 2)})
        self.current = {}


def during_compaction(folder: Path, vectors: np.ndarray, pace: int, first: int) -> dict:
    """Adds one after another (20 ms apart) while `compact` folds the folder's log into new base files in a
    thread, as the service does once the log passes RTD_COMPACT_LOG_BYTES; the base files written with a sync
    every `pace` bytes (rtdgan.index.files.WRITE_PACE). Returns the adds' latencies and the compaction's time."""
    import rtdgan.index.files as files
    from rtdgan.index.catalog.file import StaleCatalog, compact

    files.WRITE_PACE = pace
    os.sync()  # each round starts with a clean page cache
    catalog = Catalog.open(folder)
    done: dict = {}
    thread = threading.Thread(target=lambda: done.setdefault("generation", compact(folder)))
    latencies: list[float] = []
    start = time.perf_counter()
    thread.start()
    i = first
    while thread.is_alive():
        time.sleep(0.02)
        t0 = time.perf_counter()
        try:
            catalog.write([ProductMeta(f"c{i}", category="c0")], vectors[i % len(vectors)][None])
        except StaleCatalog:  # the compaction committed: a service reloads here
            break
        latencies.append(ms_since(t0))
        i += 1
    thread.join()
    seconds = time.perf_counter() - start
    del catalog
    latencies.sort()
    return {"pace_mb": pace >> 20 if pace < 1 << 40 else None, "compaction_s": round(seconds, 1), "adds": len(latencies),
            "add_ms_p50": round(statistics.median(latencies), 2) if latencies else None,
            "add_ms_p90": round(latencies[int(0.9 * (len(latencies) - 1))], 2) if latencies else None,
            "add_ms_max": round(latencies[-1], 2) if latencies else None, "next_id": i}


def run(n: int, dim: int, kind: str, writes: int, seed: int = 0, phases: Phases | None = None,
        settle: bool = True, compaction_rounds: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    vectors = clustered(rng, n + writes, dim, noise=0.3)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "index"
        t = time.perf_counter()
        built = Catalog.create(dim, "bench", "sha", kind)
        for start in range(0, n, 100_000):
            chunk = range(start, min(n, start + 100_000))
            built.add([ProductMeta(f"p{i}", category=f"c{i % 20}") for i in chunk], vectors[chunk.start:chunk.stop])
        built.save(folder)
        build_s = time.perf_counter() - t
        if settle:  # a service starts on an index written earlier: flush the build's gigabytes of dirty pages first,
            os.sync()  # or every write's fsync below waits for them (ext4 commits them in the same journal)
        del built
        queries = vectors[rng.integers(0, n, 200)]
        vectors = vectors[n:].copy()  # only the writes' vectors from here on (memory: 1M x 1280 is 5 GB)
        catalog = Catalog.open(folder)
        idle = with_searches(catalog, queries, None, seconds=5.0)
        add_ms: list[float] = []
        delete_ms: list[float] = []

        def do_writes() -> None:
            for i in range(writes):
                time.sleep(0.02)  # writes arrive one by one between searches, as admin adds do
                t0 = time.perf_counter()
                catalog.write([ProductMeta(f"new{i}", category="c0")], vectors[i:i + 1])
                add_ms.append(ms_since(t0))
                if phases is not None:
                    phases.done(add_ms[-1], f"add {i}")
                t0 = time.perf_counter()
                catalog.write(removed=[f"p{i}"])
                delete_ms.append(ms_since(t0))
                if phases is not None:
                    phases.done(delete_ms[-1], f"delete {i}")

        busy = with_searches(catalog, queries, do_writes)
        t = time.perf_counter()
        catalog.save(folder)  # what an admin write would cost without the log
        save_s = time.perf_counter() - t
        catalog = None  # its memory back before each compaction loads a snapshot of its own
        compactions, next_id = [], 0
        for _ in range(compaction_rounds):  # unpaced (every base file left to the page cache) and paced
            for pace in (1 << 62, WRITE_PACE):
                compactions.append(during_compaction(folder, vectors, pace, next_id))
                next_id = compactions[-1].pop("next_id")
    return {"n": n, "dim": dim, "kind": kind, "build_s": round(build_s, 1),
            "add_ms_p50": round(statistics.median(add_ms), 2), "add_ms_max": round(max(add_ms), 2),
            "delete_ms_p50": round(statistics.median(delete_ms), 2), "delete_ms_max": round(max(delete_ms), 2),
            "search_ms_p50_idle": round(statistics.median(idle), 2), "search_ms_max_idle": round(max(idle), 2),
            "search_ms_max_during_writes": round(max(busy), 2),
            "longest_stall_ms": round(max(0.0, max(busy) - max(idle)), 2),
            "full_save_s (without the log: every write)": round(save_s, 2)} | (
            {"during_compaction": compactions} if compactions else {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000", help="comma-separated catalog sizes")
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--kind", choices=KINDS, default="ivf")
    parser.add_argument("--writes", type=int, default=50, help="adds (and as many deletes) per size")
    parser.add_argument("--phases", action="store_true", help="also print where the 5 slowest writes spent their time")
    parser.add_argument("--no-settle", dest="settle", action="store_false", help="measure the writes while the "
                        "build's files are still being written back (by default the build is synced first, as a "
                        "service starts on an index written earlier)")
    parser.add_argument("--compaction-rounds", type=int, default=0, help="then this many rounds of adds during a "
                        "compaction, its base files written unpaced and paced (rtdgan.index.files.PacedWriter), side by side")
    args = parser.parse_args()
    if args.compaction_rounds < 0 or args.writes < 1:
        parser.error("--writes must be >= 1 and --compaction-rounds >= 0")
    print(machine(), flush=True)
    for n in (int(s) for s in args.sizes.split(",")):
        phases = Phases() if args.phases else None
        print(run(n, args.dim, args.kind, args.writes, phases=phases, settle=args.settle,
                  compaction_rounds=args.compaction_rounds), flush=True)
        if phases is not None:
            for row in sorted(phases.writes, key=lambda r: -r["total"])[:5]:
                print("  slow write:", row, flush=True)


if __name__ == "__main__":
    main()
