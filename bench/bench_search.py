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
import sys
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

from rtdgan.index.catalog.file import KINDS, Catalog  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_search_arguments(parser, "10000,100000,1000000", 1280, "D: 1280 EfficientNet-Lite0, 1024 DenseNet-121")
    parser.add_argument("--data", choices=("random", "clustered"), default="random")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help="index kinds to compare, comma-separated (flat is always included: recall is against it)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    faiss.omp_set_num_threads(args.threads)
    print("bench_search config: " + json.dumps(vars(args) | {"OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"],
                                                             "machine": machine()}), flush=True)
    header = (f"{'n':>8} {'kind':>5} {'build s':>8} {'1q p50 ms':>10} {'1q p95 ms':>10} {'x exact':>8} "
              f"{'b64 ms/q':>9} {'x exact':>8} {f'recall@{args.k}':>10}")
    rows = []
    kinds = ["flat"] + [k for k in args.kinds.split(",") if k in KINDS and k != "flat"]
    for n in sizes:
        rng = np.random.default_rng(args.seed)
        base, queries = make_data(args.data, n, args.queries, args.dim, rng)
        products = numbered_products(n)
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
            recall = recall_against(r["ids"], exact["ids"])
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
