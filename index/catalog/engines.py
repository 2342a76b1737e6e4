"""The one place that chooses a catalog engine by the index location (index/catalog/base.py lists them). No torch.

`rtd index build --out`, `rtd index search --index`, `rtd eval --gallery` and `rtd serve` (RTD_INDEX) take any
location; the pipeline, the service and the CLI open, build and read catalogs through these three functions,
so "file or Milvus?" is decided here and nowhere else.

Every engine offers `CatalogEngine` (index/catalog/base.py): the same build, upsert, remove, search with a
category filter, the embedder/head check (`check_space`, refusing a catalog built in another space), product
metadata and image path, count / categories / page. What differs is where the state lives: the file catalog
holds a copy in each process, and other processes' writes arrive through its log (`refresh`); Milvus holds one
copy on its server, so a write is seen by every replica at once and `refresh` has nothing to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rtdgan.index.catalog.base import CatalogEngine, ProductMeta, parse_location
from rtdgan.index.catalog.file import Catalog, read_folder_manifest


def read_manifest(location: str | Path) -> dict:
    """What a catalog records about itself (a folder's index.json, or a Milvus collection's `rtd.manifest`), or a
    UserError saying why the location holds none."""
    where = parse_location(location)
    if where.engine == "file":
        return read_folder_manifest(where.path)  # type: ignore[arg-type]
    from rtdgan.index.catalog.milvus import (
        read_milvus_manifest,  # pymilvus only when a Milvus location is used
    )

    return read_milvus_manifest(where)


def open_catalog(location: str | Path, expect_embedder_sha256: str | None = None,
                 expect_head_sha256: str | None = None) -> CatalogEngine:
    """Open the catalog at any location; with `expect_embedder_sha256`, refuse one built in another space (and
    through another retrieval head than `expect_head_sha256`; None: built without a head)."""
    where = parse_location(location)
    if where.engine == "file":
        return Catalog.open(where.path, expect_embedder_sha256, expect_head_sha256)  # type: ignore[arg-type]
    from rtdgan.index.catalog.milvus import MilvusCatalog

    return MilvusCatalog.open(where, expect_embedder_sha256, expect_head_sha256)


def build_catalog(location: str | Path, products: Sequence[ProductMeta], vectors: np.ndarray, *, embedder_name: str,
                  embedder_sha256: str, head: dict | None, factory: str, nprobe: int, ef_search: int,
                  catalog_root: str | None, recall_k: int | None, embedder_backend: dict | None = None) -> CatalogEngine:
    """Write a whole catalog to `location`, replacing what is there (a folder: atomically, as a new generation;
    Milvus: a new collection that takes the old one's name once complete). With `recall_k`, recall@k against
    exact search is measured on the finished index and recorded with it, unless the index is exact."""
    where = parse_location(location)
    if where.engine != "file":
        from rtdgan.index.catalog.milvus import MilvusCatalog

        return MilvusCatalog.build(where, products, vectors, embedder_name=embedder_name,
                                   embedder_sha256=embedder_sha256, head=head, factory=factory, nprobe=nprobe,
                                   ef_search=ef_search, catalog_root=catalog_root, recall_k=recall_k,
                                   embedder_backend=embedder_backend)
    catalog = Catalog.create(vectors.shape[1], embedder_name, embedder_sha256, factory, nprobe=nprobe,
                             ef_search=ef_search, head=head, embedder_backend=embedder_backend)
    catalog.catalog_root = catalog_root
    catalog.add(products, vectors)
    if recall_k is not None and catalog.factory != "Flat":
        catalog.check_recall(k=recall_k, vectors=vectors)
    catalog.save(where.path)  # type: ignore[arg-type]
    return catalog
