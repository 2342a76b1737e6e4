"""Catalog search benchmark: exact (flat) vs HNSW vs IVF on random unit vectors, measured side by side.

    python bench/bench_search.py --sizes 10000,100000            # D = 1280 (EfficientNet-Lite0)
    python bench/bench_search.py --sizes 10000 --dim 1024 --data clustered

For each catalog size n it builds the three kinds of `rtdgan.index.catalog.file.Catalog` from the same vectors, then
times `Catalog.search` (FAISS + the SQLite metadata lookup, what the service pays) for single queries and
for batches of 64, the kinds taking turns query by query, and measures recall@k of each kind against the
exact results of the same run. Uniform random unit vectors are the worst case for approximate search (no
cluster structure, all neighbours nearly equidistant); `--data clustered` draws vectors around n/100
centres, closer to real image embeddings, with queries near stored products.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

# On a shared machine spinning OpenMP workers fight other processes for the cores and single-query
# latencies swing 10x between runs; sleeping workers give repeatable numbers. Must be set before FAISS loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from rtdgan.index.catalog.base import DEFAULT_EF_SEARCH, DEFAULT_NPROBE, ProductMeta  # noqa: E402
from rtdgan.index.catalog.file import KINDS, Catalog  # noqa: E402

BATCH = 64


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_data(kind: str, n: int, queries: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(n, D) catalog vectors and (Q, D) queries, all unit norm."""
    if kind == "random":
        return unit(rng.standard_normal((n, dim), dtype=np.float32)), unit(rng.standard_normal((queries, dim), dtype=np.float32))
    # ~100 products per centre (a garment type in a colour), so a top-60 mostly stays in one cluster.
    centres = rng.standard_normal((max(10, n // 100), dim), dtype=np.float32)
    base = unit(centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, dim), dtype=np.float32))
    picked = base[rng.integers(0, n, queries)]
    noise = rng.standard_normal(picked.shape, dtype=np.float32)
    return base, unit(picked + 0.5 * unit(noise))  # near a stored product, cosine ~0.9


def time_searches(catalogs: dict[str, Catalog], queries: np.ndarray, k: int) -> dict[str, dict]:
    """Per kind: result ids, single-query p50/p95 ms, batched ms per query.

    The kinds take turns query by query, so a load spike from another process hits all of them alike and
    the ratios stay fair on a shared machine.
    """
    single: dict[str, list[float]] = {kind: [] for kind in catalogs}
    batched: dict[str, list[float]] = {kind: [] for kind in catalogs}
    ids: dict[str, list[list[str]]] = {kind: [] for kind in catalogs}
    for catalog in catalogs.values():
        catalog.search(queries[:1], k)  # warm-up
    for q in queries:
        for kind, catalog in catalogs.items():
            start = time.perf_counter()
            hits = catalog.search(q[None], k)[0]
            single[kind].append((time.perf_counter() - start) * 1e3)
            ids[kind].append([h.product_id for h in hits])
    for first in range(0, len(queries) - BATCH + 1, BATCH):
        for kind, catalog in catalogs.items():
            start = time.perf_counter()
            catalog.search(queries[first:first + BATCH], k)
            batched[kind].append((time.perf_counter() - start) * 1e3 / BATCH)
    return {kind: {"ids": ids[kind], "p50": statistics.median(single[kind]),
                   "p95": float(np.percentile(single[kind], 95)), "batched": statistics.median(batched[kind])}
            for kind in catalogs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="catalog sizes, comma-separated")
    parser.add_argument("--dim", type=int, default=1280, help="D: 1280 EfficientNet-Lite0, 1024 DenseNet-121")
    parser.add_argument("--queries", type=int, default=256, help="queries per measurement (a multiple of 64)")
    parser.add_argument("--k", type=int, default=60, help="top-k (recall@k)")
    parser.add_argument("--threads", type=int, default=2, help="FAISS OpenMP threads")
    parser.add_argument("--data", choices=("random", "clustered"), default="random")
    parser.add_argument("--nprobe", type=int, default=DEFAULT_NPROBE)
    parser.add_argument("--ef-search", type=int, default=DEFAULT_EF_SEARCH)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help="index kinds to compare, comma-separated (flat is always included: recall is against it)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    faiss.omp_set_num_threads(args.threads)
    print("bench_search config: " + json.dumps(vars(args) | {"OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"]}), flush=True)
    header = (f"{'n':>8} {'kind':>5} {'build s':>8} {'1q p50 ms':>10} {'1q p95 ms':>10} {'x exact':>8} "
              f"{'b64 ms/q':>9} {'x exact':>8} {f'recall@{args.k}':>10}")
    rows = []
    kinds = ["flat"] + [k for k in args.kinds.split(",") if k in KINDS and k != "flat"]
    for n in sizes:
        rng = np.random.default_rng(args.seed)
        base, queries = make_data(args.data, n, args.queries, args.dim, rng)
        products = [ProductMeta(f"p{i}", category=f"c{i % 10}") for i in range(n)]
        catalogs, build_s = {}, {}
        for kind in kinds:
            start = time.perf_counter()
            catalogs[kind] = Catalog.create(args.dim, "bench", "bench", kind, nprobe=args.nprobe, ef_search=args.ef_search)
            catalogs[kind].add(products, base)
            build_s[kind] = time.perf_counter() - start
            print(f"built {kind} for n={n} in {build_s[kind]:.1f} s", flush=True)
        results = time_searches(catalogs, queries, args.k)
        exact = results["flat"]
        for kind, r in results.items():
            recall = float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(r["ids"], exact["ids"], strict=True)]))
            catalog = catalogs[kind]
            extra = f" nlist={catalog.nlist} nprobe={catalog.nprobe}" if kind == "ivf" else ""
            extra += f" ef_search={catalog.ef_search}" if kind == "hnsw" else ""
            row = (f"{n:>8} {kind:>5} {build_s[kind]:>8.1f} {r['p50']:>10.3f} {r['p95']:>10.3f} "
                   f"{exact['p50'] / r['p50']:>7.1f}x {r['batched']:>9.3f} {exact['batched'] / r['batched']:>7.1f}x "
                   f"{recall:>10.3f}{extra}")
            rows.append(row)
            print(row, flush=True)
        del catalogs
    print(f"\nD={args.dim}, {args.data} unit vectors, {args.queries} queries, k={args.k}, "
          f"{args.threads} FAISS threads; 'x exact' = flat latency / this kind's latency")
    print(header)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
