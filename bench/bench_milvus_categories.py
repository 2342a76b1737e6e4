"""Milvus `categories()`: distinct-category queries + server-side counts, against reading every product's category.

    python bench/bench_milvus_categories.py --products 50000 --db /tmp/rtd-categories.db

Builds a Milvus Lite catalog (random 16-d vectors, the demo's 6 categories round-robin) unless the database
holds it already, then times `MilvusCatalog.categories()` and a scan of every product's category (what it saves),
alternating, --rounds times.
Pass a server location (`--location milvus://host:19530/coll`) to measure a Milvus server instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.common

import numpy as np  # noqa: E402

from bench.common import machine, ms_since, unit  # noqa: E402
from rtdgan.index.catalog.base import ProductMeta  # noqa: E402
from rtdgan.index.catalog.engines import build_catalog, open_catalog  # noqa: E402
from rtdgan.index.errors import UserError  # noqa: E402

CATEGORIES = ("dress", "long-sleeve", "skirt", "sweater", "t-shirt", "trousers")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--products", type=int, default=50_000)
    p.add_argument("--db", type=Path, default=Path("/tmp/rtd-categories.db"), help="Milvus Lite database file")
    p.add_argument("--location", default=None, help="a catalog location instead (e.g. milvus://host:19530/coll)")
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args(argv)
    location = a.location or f"milvus://{a.db.resolve()}/bench{a.products}"
    try:
        catalog = open_catalog(location)
    except UserError:
        rng = np.random.default_rng(0)
        v = unit(rng.standard_normal((a.products, 16)).astype(np.float32))
        products = [ProductMeta(f"p{i}", category=CATEGORIES[i % len(CATEGORIES)]) for i in range(a.products)]
        start = time.perf_counter()
        build_catalog(location, products, v, embedder_name="bench", embedder_sha256="bench", head=None,
                      factory="Flat", nprobe=8, ef_search=16, catalog_root=None, recall_k=None)
        print(f"built {location} ({a.products} products) in {time.perf_counter() - start:.1f} s")
        catalog = open_catalog(location)
    print(machine(), flush=True)
    for _ in range(a.rounds):
        start = time.perf_counter()
        counts: dict[str, int] = {}
        for row in catalog._iterate("category is not null", ["category"]):  # the scan categories() avoids
            counts[row["category"]] = counts.get(row["category"], 0) + 1
        scan = ms_since(start)
        start = time.perf_counter()
        found = catalog.categories()
        queries = ms_since(start)
        assert found == dict(sorted(counts.items())), (found, counts)
        print(f"scan of every product's category {scan:8.0f} ms | distinct queries + count(*) "
              f"{queries:8.0f} ms | {len(found)} categories")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
