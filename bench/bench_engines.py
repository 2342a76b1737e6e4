"""Catalog engines and FAISS factory strings side by side: latency, recall@60, build time, memory.

    nice -n 5 .venv/bin/python bench/bench_engines.py --sizes 100000 --dim 256
    nice -n 5 .venv/bin/python bench/bench_engines.py --sizes 1000000 --dim 256 --queries 256

For each catalog size n, on clustered unit vectors (bench/common.py `make_data`: ~100 products per
centre, queries near a stored product), it builds, from the same vectors:
  exact                 the file catalog with "Flat" (the ground truth for recall)
  default               the file catalog with the factory string `rtd index build` picks for n (index/factory.py)
  alternatives          other factory strings (`--alternatives`; {K} is the default's number of IVF lists)
  Milvus Lite           index/milvus.py through its in-process server, with the index Milvus gets by default
and times each one's `search` (what the service calls: FAISS or Milvus plus the metadata of the hits) for
single queries and for batches of 64, the candidates taking turns query by query so load from other
processes hits them alike. Recall@k is against the exact catalog's results of the same run. Memory is the
process's resident-set growth while building each candidate (for Milvus Lite: its server's copy and index).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
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
from rtdgan.index.catalog.engines import build_catalog  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_search_arguments(parser, "100000", 256, "D: 256 the demo head's space, 1280 EfficientNet-Lite0")
    parser.add_argument("--alternatives", default="IVF{K},SQ8;HNSW32,Flat;IVF{K}_HNSW32,Flat",
                        help="other factory strings, ';'-separated; {K} = the default's IVF lists")
    parser.add_argument("--no-milvus", action="store_true", help="leave Milvus Lite out")
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
        results = time_searches(catalogs, queries, args.k)
        exact = results["exact (Flat)"]
        for name, r in results.items():
            recall = recall_against(r["ids"], exact["ids"])
            row = {"n": n, "index": name, "build_s": round(build_s[name], 1), "rss_mb": round(memory[name]),
                   "p50_ms": round(r["p50"], 3), "p95_ms": round(r["p95"], 3), "batch64_ms": round(r["batched"], 3),
                   f"recall@{args.k}": round(recall, 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        del catalogs
        tmp.cleanup()
    print(f"\nD={args.dim}, clustered unit vectors, {args.queries} queries, k={args.k}, {args.threads} FAISS threads, "
          f"nprobe {args.nprobe}, efSearch {args.ef_search}")
    print(f"| n | index | build s | memory MB | 1 query p50 ms | p95 ms | batch-64 ms/query | recall@{args.k} |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']:,} | {r['index']} | {r['build_s']} | {r['rss_mb']} | {r['p50_ms']} | {r['p95_ms']} | "
              f"{r['batch64_ms']} | {r[f'recall@{args.k}']:.3f} |")


if __name__ == "__main__":
    main()
