"""Catalog engines and FAISS factory strings side by side: latency, recall@60, build time, memory.

    nice -n 5 .venv/bin/python bench/bench_engines.py --sizes 100000 --dim 256
    nice -n 5 .venv/bin/python bench/bench_engines.py --sizes 1000000 --dim 256 --queries 256
    nice -n 5 .venv/bin/python bench/bench_engines.py --sizes 100000 --no-milvus --alternatives "" \
        --milvus-server start            # + a real Milvus server (the `milvus` package's 2.3), HNSW and IVF_FLAT
    nice .venv/bin/python bench/bench_engines.py --sizes 1000000 --no-milvus --alternatives "" --milvus-server start \
        --milvus-indexes "HNSW32,Flat" --milvus-consistency Session --milvus-ef 60,96,128 --settle 120 \
        --milvus-config dataCoord.segment.maxSize=4096 --milvus-config dataCoord.segment.sealProportion=0.5 \
        --milvus-config dataCoord.segment.maxBinlogFileNumber=256    # 1M rows in one segment, ef swept

For each catalog size n, on clustered unit vectors (bench/common.py `make_data`: ~100 products per
centre, queries near a stored product), it builds, from the same vectors:
  exact                 the file catalog with "Flat" (the ground truth for recall)
  default               the file catalog with the factory string `rtd index build` picks for n (index/factory.py)
  alternatives          other factory strings (`--alternatives`; {K} is the default's number of IVF lists)
  Milvus Lite           index/milvus.py through its in-process server, with the index Milvus gets by default
  Milvus server         with `--milvus-server`: a running server (milvus://HOST:PORT) or `start` (one from the
                        `milvus` package, tests/milvus_server.py, in a temporary folder on loopback), each
                        `--milvus-indexes` string built there once and searched through gRPC at each
                        `--milvus-consistency` level (Strong, the catalog's default, waits for the server's next
                        time tick; Session reads at once: index/catalog/milvus.py, "Consistency"), an HNSW one
                        at each `--milvus-ef` (the catalog searches with ef = max(ef, k)); a server started here
                        with `--milvus-config` settings (its milvus.yaml keys, e.g. dataCoord.segment.maxSize in MB)
and times each one's `search` (what the service calls: FAISS or Milvus plus the metadata of the hits) for
single queries and for batches of 64, the candidates taking turns query by query so load from other
processes hits them alike. Recall@k is against the exact catalog's results of the same run. Memory is the
process's resident-set growth while building each candidate (for Milvus Lite: its server's copy and index; for
a server started here: the server process's growth; a server elsewhere: not measured). A server's build time
includes its flush and its index build (`rtd index build` waits for both); `--settle S` waits S seconds after the
server's builds before timing (its background compaction and re-indexing), and each server collection's loaded
segments are printed before the timing.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.common

from bench.common import (  # noqa: E402
    add_search_arguments,
    machine,
    make_data,
    numbered_products,
    passive_openmp,
    recall_against,
    time_searches,
)

passive_openmp()  # before FAISS loads

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from rtdgan.index.catalog import factory as factories  # noqa: E402
from rtdgan.index.catalog.base import milvus_token, parse_location  # noqa: E402
from rtdgan.index.catalog.engines import build_catalog, open_catalog  # noqa: E402


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@contextlib.contextmanager
def milvus_server(spec: str | None, folder: Path, config: dict[str, str] | None = None
                  ) -> Iterator[tuple[str, int | None, str] | None]:
    """(location prefix, server pid or None, version) of the server `--milvus-server` names, one started here with
    `config` (milvus.yaml keys); None without one."""
    if not spec:
        yield None
        return
    if spec != "start":
        from pymilvus import MilvusClient

        client = MilvusClient(uri=parse_location(f"{spec.rstrip('/')}/x").uri)
        yield spec.rstrip("/"), None, str(client.get_server_version())
        return
    from tests.milvus_server import LocalMilvus

    server = LocalMilvus(folder / "milvus-server", config=config)
    server.start()
    try:
        yield f"milvus://127.0.0.1:{server.port}", server.pid, "v2.3.5 (the milvus package, started here)"
    finally:
        server.kill()


def segments(location: str) -> str:
    """A server collection's segments: the flushed ones (data coordinator) and those its query node serves sealed,
    with their rows (pymilvus `list_persistent_segments`, `list_loaded_segments`)."""
    from pymilvus import MilvusClient

    collection = open_catalog(location)._manifest["collection"]
    client = MilvusClient(uri=parse_location(location).uri, token=milvus_token())
    try:
        flushed = sorted((s.num_rows for s in client.list_persistent_segments(collection)), reverse=True)
        loaded = sorted((s.num_rows for s in client.list_loaded_segments(collection)), reverse=True)
    finally:
        client.close()
    return f"{len(flushed)} flushed segments, rows {flushed}; {len(loaded)} loaded sealed, rows {loaded}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_search_arguments(parser, "100000", 256, "D: 256 the demo head's space, 1280 EfficientNet-Lite0")
    parser.add_argument("--alternatives", default="IVF{K},SQ8;HNSW32,Flat;IVF{K}_HNSW32,Flat",
                        help="other factory strings, ';'-separated; {K} = the default's IVF lists")
    parser.add_argument("--no-milvus", action="store_true", help="leave Milvus Lite out")
    parser.add_argument("--milvus-server", default=None,
                        help="also a Milvus server: milvus://HOST:PORT of a running one, or `start` to start one")
    parser.add_argument("--milvus-indexes", default="HNSW32,Flat;IVF{K},Flat",
                        help="factory strings built on the server, ';'-separated; {K} = the default's IVF lists")
    parser.add_argument("--milvus-consistency", default="Strong,Session",
                        help="consistency levels the server's catalogs are searched at, comma-separated")
    parser.add_argument("--milvus-ef", default="",
                        help="ef values an HNSW server catalog is searched at, comma-separated (default: --ef-search)")
    parser.add_argument("--milvus-config", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of the server started here (milvus.yaml key, e.g. "
                             "dataCoord.segment.maxSize=2048); repeatable")
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds to wait after the server's builds before timing (background compaction)")
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    print("bench_engines config: " + json.dumps(vars(args) | {"OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"],
                                                              "machine": machine()}), flush=True)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        rng = np.random.default_rng(args.seed)
        base, queries = make_data("clustered", n, args.queries, args.dim, rng)
        products = numbered_products(n)
        default = factories.default_factory(n)
        lists = default.split(",")[0][3:].split("_")[0] if default.startswith("IVF") else "1024"
        candidates = {"exact (Flat)": "Flat", f"default ({default})": default}
        candidates |= {alt.replace("{K}", lists): alt.replace("{K}", lists) for alt in args.alternatives.split(";") if alt}
        catalogs, build_s, memory = {}, {}, {}
        tmp = tempfile.TemporaryDirectory(prefix="bench_engines_")
        stack = contextlib.ExitStack()
        config = dict(item.split("=", 1) for item in args.milvus_config)
        server = stack.enter_context(milvus_server(args.milvus_server, Path(tmp.name), config))
        for name, spec in candidates.items():
            gc.collect()
            before, start = rss_mb(), time.perf_counter()
            catalogs[name] = build_catalog(Path(tmp.name) / f"i{len(catalogs)}", products, base, embedder_name="bench",
                                           embedder_sha256="bench", head=None, factory=spec, nprobe=args.nprobe,
                                           ef_search=args.ef_search, catalog_root=None, recall_k=None)
            build_s[name], memory[name] = time.perf_counter() - start, rss_mb() - before
            print(f"built {name} for n={n} in {build_s[name]:.1f} s (+{memory[name]:.0f} MB RSS)", flush=True)
        if not args.no_milvus:
            gc.collect()
            before, start = rss_mb(), time.perf_counter()
            name = "Milvus Lite"
            catalogs[name] = build_catalog(f"milvus://{tmp.name}/bench.db/bench", products, base, embedder_name="bench",
                                           embedder_sha256="bench", head=None, factory=factories.AUTO,
                                           nprobe=args.nprobe, ef_search=args.ef_search, catalog_root=None,
                                           recall_k=None)
            build_s[name], memory[name] = time.perf_counter() - start, rss_mb() - before
            print(f"built {name} ({catalogs[name].index_type}) for n={n} in {build_s[name]:.1f} s "
                  f"(+{memory[name]:.0f} MB RSS)", flush=True)
        locations = []
        if server is not None:
            prefix, pid, version = server
            print(f"Milvus server {version} at {prefix}", flush=True)
            for i, spec in enumerate(s.replace("{K}", lists) for s in args.milvus_indexes.split(";") if s):
                gc.collect()
                before, start = rss_mb(pid) if pid else None, time.perf_counter()
                location = f"{prefix}/bench_{n}_{i}"
                built = build_catalog(location, products, base, embedder_name="bench", embedder_sha256="bench",
                                      head=None, factory=spec, nprobe=args.nprobe, ef_search=args.ef_search,
                                      catalog_root=None, recall_k=None)
                seconds, grown = time.perf_counter() - start, rss_mb(pid) - before if pid else None
                print(f"built {spec} ({built.index_type}) on the server for n={n} in {seconds:.1f} s"
                      + (f" (+{grown:.0f} MB server RSS)" if grown is not None else ""), flush=True)
                locations.append(location)
                sweep = [int(ef) for ef in args.milvus_ef.split(",") if ef] if built.index_type == "HNSW" else []
                for level in args.milvus_consistency.split(","):
                    for ef in sweep or [None]:
                        name = f"Milvus server ({spec}, {level}" + (f", ef {ef})" if ef else ")")
                        catalogs[name] = open_catalog(location)
                        catalogs[name].consistency = level
                        catalogs[name].set_search_params(ef_search=ef)
                        build_s[name], memory[name] = seconds, grown
            if args.settle:
                print(f"settling {args.settle:.0f} s", flush=True)
                time.sleep(args.settle)
            for location in locations:
                print(f"{location}: {segments(location)}", flush=True)
        results = time_searches(catalogs, queries, args.k)
        exact = results["exact (Flat)"]
        for name, r in results.items():
            recall = recall_against(r["ids"], exact["ids"])
            row = {"n": n, "index": name, "build_s": round(build_s[name], 1),
                   "rss_mb": round(memory[name]) if memory[name] is not None else None,
                   "p50_ms": round(r["p50"], 3), "p95_ms": round(r["p95"], 3), "batch64_ms": round(r["batched"], 3),
                   f"recall@{args.k}": round(recall, 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        del catalogs
        stack.close()
        tmp.cleanup()
    print(f"\nD={args.dim}, clustered unit vectors, {args.queries} queries, k={args.k}, {args.threads} FAISS threads, "
          f"nprobe {args.nprobe}, efSearch {args.ef_search}")
    print(f"| n | index | build s | memory MB | 1 query p50 ms | p95 ms | batch-64 ms/query | recall@{args.k} |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']:,} | {r['index']} | {r['build_s']} | {'—' if r['rss_mb'] is None else r['rss_mb']} | {r['p50_ms']} | {r['p95_ms']} | "
              f"{r['batch64_ms']} | {r[f'recall@{args.k}']:.3f} |")


if __name__ == "__main__":
    main()
