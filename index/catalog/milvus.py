"""The Milvus catalog engine: one collection per catalog, through pymilvus's `MilvusClient`. No torch.

The same client talks to Milvus Lite (a local database, pip `milvus-lite`: `milvus:///abs/path/catalog.db`) and
to a Milvus Standalone or Distributed server (`milvus://host:19530/products`); index/catalog/base.py parses the
location. Behaviour is the file catalog's (index/catalog/file.py) — upsert, remove, search with a category
filter, the embedder/head check, metadata and image path, count / categories / page — with the state on the
server: every replica sees a write as soon as it is acknowledged, and there is nothing to follow or reload.

Servers. Supported: Milvus 2.3 to 2.6 servers and Milvus Lite (tested against the 2.3.5 server of the PyPI
package `milvus` and Milvus Lite 3.2; the docker-compose profile runs 2.6). What differs between them is read
from the version the server reports (`server_features`) and from the collection's own schema:
  - the category field's scalar index: INVERTED (2.4+, Lite; https://milvus.io/docs/scalar_index.md), Trie on
    2.3, which has no INVERTED;
  - nullable fields (2.5+, Lite): a product without title, category or image path stores null there; on older
    servers it stores "" (which the product fields never hold: index/build.py and the service turn "" into
    none), and `category is not null` is `category != ""`. A collection keeps the form it was built with, so a
    catalog built on 2.3 still reads right once the server is upgraded;
  - older than 2.3 (no upsert) or a version it cannot read: refused in one line.
Index types are FLAT, HNSW and IVF_FLAT on every supported server.

The collection. Fields: `product_id` (VARCHAR primary key, so an insert of a known id is Milvus's upsert),
`vector` (FLOAT_VECTOR, metric IP: the vectors are unit length, so inner product is cosine), `title`,
`category`, `image_path` (VARCHARs), `added_at`. A category search is a filtered search (`category == "..."`,
https://milvus.io/docs/filtered-search.md).

Consistency. The collection's level is Strong: a search or read issued after an acknowledged write sees it,
whichever replica wrote it (https://milvus.io/docs/consistency.md). On a 2.3 server that costs a wait for the
server's next time tick in every search (proxy.timeTickInterval, 200 ms by default: docs/benchmarks.md);
$RTD_MILVUS_CONSISTENCY=Session reads at once and still sees this process's own writes at once (pymilvus
keeps each collection's last write timestamp), another replica's within a time tick; Bounded and Eventually
are Milvus's others. Milvus Lite, one process, has nothing to wait for.

Faults. Every call carries a timeout (CALL_TIMEOUT_S), so a server that stops answering makes a call fail,
not hang; a failed call after the catalog is open is `MilvusFailed` (a `CatalogUnavailable`: the service
answers 503 with Retry-After, the CLI one line). The client reconnects by itself once the server is back.

What index.json records for a folder — format version, embedder (name, sha256), retrieval head, dim, index,
search parameters, recall at build, catalog root — is the collection's property `rtd.manifest` (JSON), and
`open` refuses a collection built in another space with the same `check_space` as the file catalog.

Builds. `rtd index build --out milvus://...` writes a new collection NAME_g<ms>, and only once it is complete
(inserted, flushed, recall measured) points the alias NAME at it and drops the previous one: Milvus's way of
swapping a collection under its readers (https://milvus.io/docs/manage-aliases.md). Every read and write goes
through the alias.

The vector index is the build's factory string mapped to Milvus's own (https://milvus.io/docs/index.md):
"Flat" -> FLAT, "HNSW{M},Flat" -> HNSW (M, efConstruction 80), "IVF{nlist},Flat" -> IVF_FLAT; `auto` is FLAT up
to 10,000 products, else HNSW M = 32 (Milvus's usual choice where memory allows: high recall at low latency).
Other FAISS strings have no Milvus equivalent here and are refused. `nprobe` and `ef_search` are its search
parameters `nprobe` and `ef`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from rtdgan.index.catalog import factory as factories
from rtdgan.index.catalog.base import (
    DEFAULT_EF_SEARCH,
    DEFAULT_NPROBE,
    FORMAT_VERSION,
    Hit,
    Location,
    ProductMeta,
    check_space,
    embedder_doc,
    exact_truth,
    milvus_token,
    parse_location,
    product_ids,
    unit_rows,
)
from rtdgan.index.errors import CatalogUnavailable, UserError

log = logging.getLogger(__name__)

MANIFEST_PROPERTY = "rtd.manifest"
FIELDS = ("product_id", "title", "category", "image_path", "added_at")  # what a hit or a product carries
# VARCHAR limits: Milvus needs a max_length per field (at most 65,535 bytes)
MAX_LENGTH = {"product_id": 512, "title": 2048, "category": 512, "image_path": 4096, "added_at": 64}
MAX_WINDOW = 16_384  # Milvus caps a query's offset + limit (and a search's topk) at this
MAX_DISTINCT_QUERIES = 64  # categories() finds this many distinct categories by query, then scans for the rest
INSERT_BYTES = 8 << 20  # rows per insert call: about 8 MB of vectors (the server's gRPC limit is 64 MB+)
CONNECT_TIMEOUT_S = 10.0
CALL_TIMEOUT_S = 10.0  # any one call, retries included (pymilvus retries an unreachable server until then)
BUILD_TIMEOUT_S = 3600.0  # a build's flush, indexing and load, and a load at open (minutes at millions of rows)
GENERATION = re.compile(r"^(?P<alias>[A-Za-z_][A-Za-z0-9_]*)_g\d+$")
CONSISTENCY_ENV = "RTD_MILVUS_CONSISTENCY"
CONSISTENCY_LEVELS = ("Strong", "Session", "Bounded", "Eventually")
OLDEST, NEWEST = (2, 3), (2, 6)  # the server versions supported (module docstring, "Servers")
SUPPORTED = "Milvus 2.3 to 2.6 servers and Milvus Lite"


@dataclass(frozen=True)
class ServerFeatures:
    """What a Milvus server supports that the catalog chooses by (module docstring, "Servers")."""

    version: str  # as the server reports it: "v2.3.5-lite", "v2.6.9", "milvus_lite-3.2.2"
    scalar_index: str  # the category field's index: "INVERTED" (2.4+, Lite) or "Trie" (2.3)
    nullable: bool  # nullable fields and `is null` filters (2.5+, Lite)
    newer_than_tested: bool = False


def server_features(version: str, where: object = "milvus") -> ServerFeatures:
    """The features of a server reporting `version`; UserError (one line) for one this catalog does not support."""
    if version.startswith("milvus_lite"):
        return ServerFeatures(version, "INVERTED", True)
    m = re.search(r"(\d+)\.(\d+)", version)
    if m is None:
        raise UserError(f"{where}: the server reports version {version!r}, not a Milvus version this catalog "
                        f"knows ({SUPPORTED})")
    found = (int(m.group(1)), int(m.group(2)))
    if found < OLDEST:
        raise UserError(f"{where}: Milvus {version} is not supported: the catalog needs upsert, new in Milvus 2.3 "
                        f"({SUPPORTED}); upgrade the server")
    return ServerFeatures(version, "INVERTED" if found >= (2, 4) else "Trie", found >= (2, 5), found > NEWEST)


def consistency_level() -> str | None:
    """$RTD_MILVUS_CONSISTENCY for every read (None: the collection's own, Strong); UserError if not a level."""
    raw = os.environ.get(CONSISTENCY_ENV, "").strip()
    if not raw:
        return None
    level = {name.lower(): name for name in CONSISTENCY_LEVELS}.get(raw.lower())
    if level is None:
        raise UserError(f"{CONSISTENCY_ENV}={raw!r}: choose one of {', '.join(CONSISTENCY_LEVELS)}")
    return level


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """pymilvus logs every failed call (with a traceback); the failure is raised to the caller anyway."""
    loggers = [logging.getLogger(name) for name in ("pymilvus", "milvus_lite", "milvus_lite.server_manager")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _first_line(e: BaseException) -> str:
    text = getattr(e, "message", None) or str(e) or type(e).__name__
    return str(text).strip().splitlines()[0][:300]


def connect(where: Location, *, create: bool = False) -> tuple[Any, ServerFeatures]:
    """A MilvusClient for the location and its server's features; UserError (one line) when pymilvus is missing,
    the Milvus Lite file or its folder does not exist, the server cannot be reached or its version is not
    supported."""
    try:
        from pymilvus import MilvusClient
    except ImportError as e:
        raise UserError(f"{where}: a milvus: location needs pymilvus (and milvus-lite for a .db file): "
                        f"pip install 'rtdgan[milvus]'") from e
    if where.engine == "milvus-lite":
        assert where.path is not None
        if not where.path.parent.is_dir():
            raise UserError(f"{where}: folder {where.path.parent} does not exist")
        if not create and not where.path.exists():
            raise UserError(f"{where}: no Milvus Lite database at {where.path} (build one with "
                            f"`rtd index build --out {where}`)")
        uri = str(where.path)
    else:
        uri = where.uri
    try:
        with _quiet():
            client = MilvusClient(uri=uri, token=milvus_token(), timeout=CONNECT_TIMEOUT_S)
            version = str(client.get_server_version(timeout=CONNECT_TIMEOUT_S))
    except Exception as e:  # noqa: BLE001 - pymilvus raises MilvusException, gRPC and OS errors alike
        if where.engine == "milvus-lite":
            raise UserError(f"{where}: cannot open Milvus Lite database {where.path} ({_first_line(e)}); Milvus Lite "
                            f"serves one process: to share it, run `milvus-lite server --data-dir {where.path}` and "
                            f"use milvus://127.0.0.1:PORT/{where.collection}") from e
        raise UserError(f"{where}: cannot reach Milvus at {where.uri} ({_first_line(e)})") from e
    features = server_features(version, where)
    if features.newer_than_tested:
        log.warning("%s: Milvus %s is newer than the versions tested (%s); using 2.6's features", where, version,
                    SUPPORTED)
    return client, features


def _index_params(spec: str, n: int) -> tuple[str, str, dict]:
    """The build's factory string -> (resolved factory string, Milvus index type, its build params)."""
    factory = ("Flat" if n <= factories.EXACT_MAX else f"HNSW{factories.HNSW_M},Flat") if spec == factories.AUTO \
        else factories.resolve(spec, n)
    if factory == "Flat":
        return factory, "FLAT", {}
    if m := re.fullmatch(r"HNSW(\d+)(,Flat)?", factory):
        return factory, "HNSW", {"M": int(m.group(1)), "efConstruction": factories.HNSW_EF_CONSTRUCTION}
    if m := re.fullmatch(r"IVF(\d+),Flat", factory):
        return factory, "IVF_FLAT", {"nlist": int(m.group(1))}
    raise UserError(f"the Milvus engine builds Flat (FLAT), HNSW{{M}},Flat (HNSW) or IVF{{nlist}},Flat (IVF_FLAT); "
                    f"{spec!r} is a FAISS-only index: build it into an index folder instead")


def read_milvus_manifest(location: object) -> dict:
    """What the collection records (its `rtd.manifest` property), as index.json's dict; UserError when the
    collection does not exist or was not built by `rtd index build`."""
    where = parse_location(str(location))
    return _manifest(_describe(connect(where)[0], where), where)


def _describe(client: Any, where: Location) -> dict:
    """The collection's description (schema, properties); UserError when there is none."""
    try:
        with _quiet():
            if not client.has_collection(where.collection, timeout=CALL_TIMEOUT_S):
                raise UserError(f"{where}: no catalog collection {where.collection!r} (build one with "
                                f"`rtd index build --out {where}`)")
            return client.describe_collection(where.collection, timeout=CALL_TIMEOUT_S)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{where}: {_first_line(e)}") from e


def _manifest(description: dict, where: Location) -> dict:
    """The collection's `rtd.manifest`, checked."""
    properties = description.get("properties") or {}
    if MANIFEST_PROPERTY not in properties:
        raise UserError(f"{where}: collection {where.collection!r} was not built by `rtd index build` "
                        f"(no {MANIFEST_PROPERTY} property)")
    manifest = json.loads(properties[MANIFEST_PROPERTY])
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{where}: unsupported catalog format {manifest.get('format_version')!r} (this code reads "
                        f"{FORMAT_VERSION}); rebuild with `rtd index build`")
    return manifest


class MilvusFailed(CatalogUnavailable):
    """A Milvus call failed after the catalog was opened (the server went away, a timeout, ...)."""


def _literal(value: str) -> str:
    """A Milvus filter string literal: double-quoted with backslash escapes (JSON's are a subset it reads)."""
    return json.dumps(value)


class MilvusCatalog:
    """A catalog in a Milvus collection (module docstring); the interface of index/catalogs.py `CatalogEngine`."""

    def __init__(self, client: Any, where: Location, manifest: dict, features: ServerFeatures, nullable: bool) -> None:
        self.client = client
        self.where = where
        self.features = features
        self.nullable = nullable  # the collection's VARCHARs hold null for none; else "" (module docstring)
        self.consistency = consistency_level()  # None: the collection's own (Strong)
        self.name: str = where.collection  # type: ignore[assignment]  # the alias every call goes through
        self.dim: int = manifest["dim"]
        self.embedder_name: str = manifest["embedder"]["name"]
        self.embedder_sha256: str = manifest["embedder"]["sha256"]
        self.embedder_backend: dict | None = manifest["embedder"].get("backend")
        self.head: dict | None = manifest.get("head")
        self.factory: str = manifest["factory"]
        self.index_type: str = manifest.get("milvus_index", {}).get("type", "FLAT")
        params = manifest.get("params", {})
        self.nprobe: int = params.get("nprobe", DEFAULT_NPROBE)
        self.ef_search: int = params.get("ef_search", DEFAULT_EF_SEARCH)
        self.recall: dict | None = manifest.get("recall")
        self.catalog_root: str | None = manifest.get("catalog_root")
        self.folder = None  # no index folder: nothing to follow, no log, admin images under the catalog root
        self._manifest = manifest
        self._write_lock = threading.Lock()  # this process's writes, one at a time (a read-then-write returns `before`)
        self._added: Sequence[ProductMeta] = ()  # the build's products, in order (recall maps hits to rows with it)

    @property
    def kind(self) -> str:
        return factories.kind_of(self.factory)

    def __repr__(self) -> str:
        return f"MilvusCatalog({self.where}, {self.index_type}, Milvus {self.features.version})"

    # ---- construction ------------------------------------------------------------------------------

    @classmethod
    def open(cls, location: object, expect_embedder_sha256: str | None = None,
             expect_head_sha256: str | None = None) -> MilvusCatalog:
        """Connect to the location's collection; with `expect_embedder_sha256`, refuse one built in another space."""
        where = parse_location(str(location))
        client, features = connect(where)
        description = _describe(client, where)
        manifest = _manifest(description, where)
        if expect_embedder_sha256 is not None:
            check_space(manifest, str(where), expect_embedder_sha256, expect_head_sha256)  # type: ignore[arg-type]
        category = next(f for f in description["fields"] if f["name"] == "category")
        catalog = cls(client, where, manifest, features, nullable=bool(category.get("nullable")))
        from pymilvus.client.types import LoadState

        # Loaded already (by a build, another replica or an operator with the replica count of its choice on a
        # cluster): left as it is; else loaded here with the server's default.
        if catalog._call("get_load_state", where.collection)["state"] != LoadState.Loaded:
            catalog._call("load_collection", where.collection, timeout=BUILD_TIMEOUT_S)
        return catalog

    @classmethod
    def build(cls, where: Location, products: Sequence[ProductMeta], vectors: np.ndarray, *, embedder_name: str,
              embedder_sha256: str, head: dict | None, factory: str, nprobe: int, ef_search: int,
              catalog_root: str | None, recall_k: int | None, embedder_backend: dict | None = None) -> MilvusCatalog:
        """A new collection with every product, then the alias swapped onto it (module docstring, "Builds")."""
        from pymilvus import DataType, MilvusClient

        x = unit_rows(vectors, vectors.shape[1])
        if nprobe < 1 or ef_search < 1:
            raise UserError(f"nprobe and ef_search must be >= 1, got {nprobe} and {ef_search}")
        resolved, index_type, index_build = _index_params(factory, len(x))
        client, features = connect(where, create=True)
        alias = where.collection
        with _quiet():
            aliases = set(client.list_aliases(timeout=CALL_TIMEOUT_S).get("aliases", []))
            if alias not in aliases and client.has_collection(alias, timeout=CALL_TIMEOUT_S):
                raise UserError(f"{where}: collection {alias!r} exists and is not a catalog built by `rtd index build`; "
                                f"choose another collection name")
        generation = f"{alias}_g{time.time_ns() // 1_000_000}"
        manifest = {"format_version": FORMAT_VERSION, "engine": "milvus",
                    "embedder": embedder_doc(embedder_name, embedder_sha256, embedder_backend), "head": head,
                    "dim": int(x.shape[1]), "kind": factories.kind_of(resolved), "factory": resolved,
                    "milvus_index": {"type": index_type, "params": index_build},
                    "params": {"nprobe": nprobe, "ef_search": ef_search}, "recall": None,
                    "catalog_root": catalog_root, "collection": generation,
                    "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("product_id", DataType.VARCHAR, is_primary=True, max_length=MAX_LENGTH["product_id"])
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(x.shape[1]))
        for name in ("title", "category", "image_path"):
            schema.add_field(name, DataType.VARCHAR, max_length=MAX_LENGTH[name],
                             **({"nullable": True} if features.nullable else {}))
        schema.add_field("added_at", DataType.VARCHAR, max_length=MAX_LENGTH["added_at"])
        index_params = client.prepare_index_params()
        index_params.add_index("vector", index_type=index_type, metric_type="IP", params=index_build)
        index_params.add_index("category", index_type=features.scalar_index)
        catalog = cls(client, Location(where.engine, where.path, where.uri, generation), manifest, features,
                      nullable=features.nullable)
        catalog._call("create_collection", generation, schema=schema, index_params=index_params,
                      consistency_level="Strong", properties={MANIFEST_PROPERTY: json.dumps(manifest)},
                      timeout=BUILD_TIMEOUT_S)
        try:
            catalog.add(products, x)
            catalog._added = products
            catalog._call("flush", generation, timeout=BUILD_TIMEOUT_S)
            catalog._wait_indexed(generation)
            if recall_k is not None and index_type != "FLAT":
                catalog.check_recall(k=recall_k, vectors=x)
                manifest["recall"] = catalog.recall
                catalog._call("alter_collection_properties", generation,
                              properties={MANIFEST_PROPERTY: json.dumps(manifest)})
            if alias in set(catalog._call("list_aliases").get("aliases", [])):
                catalog._call("alter_alias", generation, alias)
            else:
                catalog._call("create_alias", generation, alias)
        except BaseException:
            with contextlib.suppress(Exception), _quiet():
                client.drop_collection(generation, timeout=CALL_TIMEOUT_S)
            raise
        with _quiet():  # the generations the alias no longer names (the previous one, crashed builds)
            for name in client.list_collections(timeout=CALL_TIMEOUT_S):
                m = GENERATION.match(name)
                if m and m.group("alias") == alias and name != generation:
                    with contextlib.suppress(Exception):
                        client.drop_collection(name, timeout=CALL_TIMEOUT_S)
        catalog.where, catalog.name = where, alias
        return catalog

    # ---- plumbing ----------------------------------------------------------------------------------

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A MilvusClient call, bounded by CALL_TIMEOUT_S; its failure as MilvusFailed naming the location (a server
        lost mid-request is not the caller's bad input: the service answers 503 with Retry-After, the CLI one
        line)."""
        kwargs.setdefault("timeout", CALL_TIMEOUT_S)
        try:
            with _quiet():
                return getattr(self.client, method)(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            raise MilvusFailed(f"{self.where}: Milvus {method} failed: {_first_line(e)}") from e

    def _wait_indexed(self, collection: str) -> None:
        """Wait until the server has indexed every flushed segment it indexes (a server builds the index of sealed
        segments in the background, and its query nodes load each one as it is done): a build is complete only
        once its index is, so its recall is the index's and its first search as fast as the later ones."""
        deadline = time.monotonic() + BUILD_TIMEOUT_S
        while True:  # every row in an indexed segment, or nothing left to index (segments too small to index)
            state = self._call("describe_index", collection, "vector")
            pending, indexed = state.get("pending_index_rows", 0), state.get("indexed_rows", 0)
            if pending == 0 or indexed >= state.get("total_rows", 0):  # (compaction's new segments count pending)
                return
            if time.monotonic() > deadline:
                raise MilvusFailed(f"{self.where}: {pending} rows still not indexed after {BUILD_TIMEOUT_S:.0f} s")
            time.sleep(0.5)

    @staticmethod
    def _meta(row: dict) -> ProductMeta:
        return ProductMeta(row["product_id"], row.get("title") or None, row.get("category") or None,
                           row.get("image_path") or None, row.get("added_at"))

    def _read(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A read at the chosen consistency level (module docstring, "Consistency")."""
        if self.consistency is not None:
            kwargs["consistency_level"] = self.consistency
        return self._call(method, *args, **kwargs)

    def _has_category(self) -> str:
        """The filter for "has a category" in this collection's form of none."""
        return "category is not null" if self.nullable else 'category != ""'

    def _count(self, where: str = "") -> int:
        rows = self._read("query", self.name, filter=where, output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def _iterate(self, where: str, fields: list[str], batch: int = 4096) -> Iterator[dict]:
        it = self._read("query_iterator", self.name, batch_size=batch, filter=where, output_fields=fields)
        try:
            while rows := it.next():
                yield from rows
        finally:
            it.close()

    # ---- reading -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count()

    def get(self, product_id: str) -> ProductMeta | None:
        rows = self._read("get", self.name, ids=[product_id], output_fields=list(FIELDS))
        return self._meta(rows[0]) if rows else None

    def categories(self) -> dict[str, int]:
        """Category -> number of products. Milvus has no GROUP BY; rather than reading every product's category,
        each distinct one is found by a one-row query excluding those found so far, then counted server-side
        (count(*)): 2 D + 1 small queries for D categories. Past MAX_DISTINCT_QUERIES categories (a filter that
        long is slow itself), the rest are read by a scan of the category field."""
        counts: dict[str, int] = {}
        while len(counts) < MAX_DISTINCT_QUERIES:
            seen = f" and category not in [{', '.join(map(_literal, counts))}]" if counts else ""
            rows = self._read("query", self.name, filter=f"{self._has_category()}{seen}", output_fields=["category"],
                              limit=1)
            if not rows:
                return dict(sorted(counts.items()))
            category = rows[0]["category"]
            counts[category] = self._count(f"category == {_literal(category)}")
        seen = f" and category not in [{', '.join(map(_literal, counts))}]"
        for row in self._iterate(f"{self._has_category()}{seen}", ["category"]):
            counts[row["category"]] = counts.get(row["category"], 0) + 1
        return dict(sorted(counts.items()))

    def products(self) -> list[ProductMeta]:
        """Every product's metadata (Milvus's order)."""
        return [self._meta(row) for row in self._iterate("", list(FIELDS))]

    def page(self, limit: int, offset: int = 0, category: str | None = None) -> tuple[list[ProductMeta], int]:
        """Products `limit` from `offset` (only `category` when given) in Milvus's order (insertion order in Milvus
        Lite), and the total. Past Milvus's 16,384-row window the page is read with an iterator."""
        where = f"category == {_literal(category)}" if category is not None else ""
        total = self._count(where)
        if offset + limit <= MAX_WINDOW:
            rows = self._read("query", self.name, filter=where, output_fields=list(FIELDS), limit=limit, offset=offset)
        else:
            rows = []
            for i, row in enumerate(self._iterate(where, list(FIELDS))):
                if i >= offset + limit:
                    break
                if i >= offset:
                    rows.append(row)
        return [self._meta(r) for r in rows], total

    def has_category(self, category: str) -> bool:
        return bool(self._read("query", self.name, filter=f"category == {_literal(category)}",
                               output_fields=["product_id"], limit=1))

    def search(self, vectors: np.ndarray, k: int, category: str | None = None) -> list[list[Hit]]:
        """Top-k products by cosine for each query row (Q, D); only `category` if given."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = unit_rows(vectors, self.dim)
        params = {"nprobe": self.nprobe} if self.index_type.startswith("IVF") else \
            {"ef": max(self.ef_search, k)} if self.index_type == "HNSW" else {}
        found = self._read("search", self.name, data=queries.tolist(), limit=min(k, MAX_WINDOW),
                           filter=f"category == {_literal(category)}" if category is not None else "",
                           output_fields=[f for f in FIELDS if f not in ("product_id", "added_at")],
                           search_params={"metric_type": "IP", "params": params})
        return [[Hit(h["product_id"] if "product_id" in h else h["id"], float(h["distance"]),
                     h["entity"].get("title") or None, h["entity"].get("category") or None,
                     h["entity"].get("image_path") or None)
                 for h in row] for row in found]

    def check_recall(self, k: int = 10, queries: int = 500, seed: int = 0, vectors: np.ndarray | None = None) -> dict:
        """Recall@k against exact search over `vectors` (every product's, in the order they were added), on the
        same perturbed queries as the file catalog (index/catalog.py `exact_truth`)."""
        if vectors is None or not len(vectors):
            raise ValueError("the Milvus engine measures recall against the vectors it was built from")
        q, truth = exact_truth(np.asarray(vectors, np.float32), k, queries, seed)
        rows = {p.product_id: i for i, p in enumerate(self._added)}
        got = self.search(q, k)
        recall = float(np.mean([len({rows[h.product_id] for h in g} & set(t.tolist())) / len(t)
                                for g, t in zip(got, truth, strict=True)]))
        self.recall = {"k": k, "queries": len(q), "recall": recall}
        return self.recall

    def manifest(self) -> dict:
        return self._manifest | {"count": len(self), "recall": self.recall,
                                 "params": {"nprobe": self.nprobe, "ef_search": self.ef_search}}

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        if (nprobe is not None and nprobe < 1) or (ef_search is not None and ef_search < 1):
            raise UserError(f"nprobe and ef_search must be >= 1, got {nprobe} and {ef_search}")
        self.nprobe = nprobe or self.nprobe
        self.ef_search = ef_search or self.ef_search

    # ---- writing -----------------------------------------------------------------------------------

    def add(self, products: Sequence[ProductMeta], vectors: np.ndarray) -> None:
        """Upsert products with their embeddings (N, D)."""
        x = unit_rows(vectors, self.dim) if len(products) else np.empty((0, self.dim), np.float32)
        if len(products) != len(x):
            raise ValueError(f"{len(products)} products but {len(x)} vectors")
        product_ids(products)  # checked as every engine checks them
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        rows = []
        for p in products:
            row = {"product_id": p.product_id, "title": p.title, "category": p.category, "image_path": p.image_path,
                   "added_at": p.added_at or now}
            for name, value in row.items():
                if value is not None and len(value.encode("utf-8")) > MAX_LENGTH[name]:
                    raise UserError(f"product {p.product_id[:64]!r}: {name} longer than the Milvus field's "
                                    f"{MAX_LENGTH[name]} bytes")
                if value is None and not self.nullable:
                    row[name] = ""  # this collection's none (module docstring, "Servers")
            rows.append(row)
        step = max(1, INSERT_BYTES // (4 * self.dim))
        for first in range(0, len(rows), step):
            chunk = rows[first:first + step]
            for row, v in zip(chunk, x[first:first + step], strict=True):
                row["vector"] = v.tolist()
            self._call("upsert", self.name, chunk)
            for row in chunk:
                del row["vector"]

    def remove(self, product_ids: Sequence[str]) -> int:
        """Remove products by id; returns how many existed."""
        if not product_ids:
            return 0
        existing = self._read("get", self.name, ids=list(product_ids), output_fields=["product_id"])
        if existing:
            self._call("delete", self.name, ids=[r["product_id"] for r in existing])
        return len(existing)

    def write(self, products: Sequence[ProductMeta] = (), vectors: np.ndarray | None = None,
              removed: Sequence[str] = ()) -> dict[str, ProductMeta | None]:
        """Add (upsert) and/or remove products: acknowledged by Milvus, hence seen by every replica. Returns each
        touched product's metadata before the write (None: it did not exist)."""
        vectors = np.empty((0, self.dim), np.float32) if vectors is None else unit_rows(vectors, self.dim)
        if len(products) != len(vectors):
            raise ValueError(f"{len(products)} products but {len(vectors)} vectors")
        with self._write_lock:
            before = {pid: self.get(pid) for pid in [*removed, *(p.product_id for p in products)]}
            self.remove(list(removed))
            if len(products):
                self.add(products, vectors)
        return before

    def refresh(self) -> bool:
        """Nothing to follow: every process reads the server's one copy."""
        return False

    def log_size(self) -> int:
        """No write-ahead log of ours (Milvus keeps its own): never a compaction."""
        return 0
