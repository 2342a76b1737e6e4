"""The product catalog: embeddings in FAISS, product metadata in SQLite, one index folder. No torch.

Search is inner product over unit vectors, i.e. cosine. Kinds:
  flat  exact search, `IndexFlatIP` in an `IndexIDMap2` (the default; exact up to a few million products)
  hnsw  `IndexHNSWFlat` (inner product) in an `IndexIDMap2`; approximate, `ef_search` trades speed for recall
  ivf   `IndexIVFFlat` (inner product), nlist ~ 4 sqrt(n) lists trained on the first add; `nprobe` of them
        are scanned per query
Approximate kinds can measure their recall@k against exact search (`check_recall`, stored in index.json).

FAISS ids are the SQLite rowids of the products (AUTOINCREMENT, never reused), so string product ids map to
int64 ids in one place. `add` is an upsert. A removed product leaves a tombstone, whatever the kind: its id is
excluded from every search with an IDSelector, and its vector is dropped for good at compaction or once
tombstones exceed a fifth of the index. HNSW cannot delete (its graph is rebuilt from the live vectors); flat
and IVF can, but `remove_ids` scans the whole index (about 0.2 s per delete at 1M products, stalling searches
that wait for the catalog's lock: docs/benchmarks.md), so a delete only records the tombstone.

Index folder and atomic saves. Three files must always agree, and a crash must never leave a mix:

    index.json             the commit record: names the current generation's two data files, plus the
                           embedder (name, sha256), count, dim, kind, search params, measured recall
    catalog-000007.faiss   the FAISS index of generation 7
    catalog-000007.sqlite  the products table (product id, title, category, image path, added time)

`save` writes the next generation's data files under new names, fsyncs them, writes `index.json.tmp`,
fsyncs it, and `os.replace`s it over `index.json` (atomic on POSIX), then fsyncs the folder. Only then are
the older generations deleted. A crash before the replace leaves the previous index.json naming the
previous, untouched files; a crash after it leaves the new ones. Uncommitted files are cleaned up by the
next save. Generation files are never modified after they are written, so any number of readers (service
replicas on a shared folder) can open the index while a writer saves; an `fcntl` lock on `.lock` keeps two
writers apart. A reader that loses a race with the cleanup simply re-reads index.json.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np

from index import catalog_log
from index.catalog_log import LogRecord
from index.errors import UserError
from index.files import fsync_path as _fsync

FORMAT_VERSION = 1
KINDS = ("flat", "hnsw", "ivf")
MANIFEST = "index.json"
GENERATION_FILE = re.compile(r"^catalog-(\d{6})\.(faiss|sqlite|log)$")
COMPACT_LOCK = ".compact.lock"  # one compaction at a time per folder (writers only take `.lock`)
HNSW_M = 32  # graph degree: 32 is FAISS's usual choice for 1e5..1e7 vectors of a few hundred dims and up
HNSW_EF_CONSTRUCTION = 80
DEFAULT_EF_SEARCH = 128  # >= the service's largest k (60) so a top-60 query explores enough of the graph
DEFAULT_NPROBE = 32
IVF_MIN_POINTS_PER_LIST = 39  # FAISS's k-means warns below this
TOMBSTONE_FRACTION = 0.2  # purge removed vectors (HNSW: rebuild the graph) once this fraction of the index is tombstones
CRASH_ENV = "RTD_CATALOG_CRASH_AT"  # tests only: os._exit at a named point of `save` to prove atomicity

SCHEMA = """
CREATE TABLE products (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the FAISS id
    product_id TEXT NOT NULL UNIQUE,
    title TEXT, category TEXT, image_path TEXT,
    added_at TEXT NOT NULL                 -- ISO 8601, UTC
);
CREATE INDEX products_category ON products(category);
CREATE TABLE tombstones (id INTEGER PRIMARY KEY);  -- removed ids whose vectors are still in the FAISS index
"""


@dataclass(frozen=True)
class ProductMeta:
    """A catalog product's metadata (everything but its vector)."""

    product_id: str
    title: str | None = None
    category: str | None = None
    image_path: str | None = None
    added_at: str | None = None  # set by the catalog


@dataclass(frozen=True)
class Hit:
    """One search result; score is the cosine similarity of query and product."""

    product_id: str
    score: float
    title: str | None
    category: str | None
    image_path: str | None


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os._exit(17)


@contextmanager
def _writer_lock(folder: Path) -> Iterator[None]:
    with (folder / ".lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_manifest(folder: Path) -> dict:
    """index.json of an index folder, or a UserError saying why it is not one."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise UserError(f"not an index folder (no {MANIFEST}): {folder}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: unsupported index format {manifest.get('format_version')!r} "
                        f"(this code reads {FORMAT_VERSION}); rebuild with `rtd index build`")
    return manifest


def check_space(manifest: dict, folder: Path, embedder_sha256: str, head_sha256: str | None) -> None:
    """UserError unless the index's vectors are in the artifacts' space: the same embedder, and the same
    retrieval head's catalog side (or no head on both sides)."""
    emb = manifest["embedder"]
    if emb["sha256"] != embedder_sha256:
        raise UserError(f"index {folder} was built with another embedder ({emb['name']}, sha256 {emb['sha256'][:12]}) "
                        f"than the artifacts' (sha256 {embedder_sha256[:12]}); rebuild it with `rtd index build`")
    built = (manifest.get("head") or {}).get("sha256")
    if built == head_sha256:
        return
    if built is None:
        why = f"without a retrieval head, but the artifacts have one (head.json sha256 {str(head_sha256)[:12]})"
    elif head_sha256 is None:
        why = f"through a retrieval head (head.json sha256 {built[:12]}) that the artifacts do not have"
    else:
        why = f"through another retrieval head (head.json sha256 {built[:12]}, artifacts {head_sha256[:12]})"
    raise UserError(f"index {folder} was built {why}; rebuild it with `rtd index build`")


def _unit_rows(vectors: np.ndarray, dim: int) -> np.ndarray:
    """(Q, D) float32 C-contiguous unit vectors, or ValueError."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected vectors of shape (N, {dim}), got {np.shape(vectors)}")
    norms = np.linalg.norm(x, axis=1)
    if not np.all(np.isfinite(norms)) or np.any(np.abs(norms - 1.0) > 1e-3):
        raise ValueError("vectors must be finite and L2-normalised (the embedder's output is)")
    return x


def _new_ivf(dim: int, nlist: int) -> faiss.IndexIVFFlat:
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.own_fields = True  # the IVF index frees its quantizer, not Python
    quantizer.this.disown()
    return ivf


def _new_index(kind: str, dim: int) -> faiss.Index:
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return faiss.IndexIDMap2(hnsw)
    if kind == "ivf":
        return _new_ivf(dim, 1)  # a placeholder: trained with the right nlist on the first add
    raise UserError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")


class Catalog:
    """Products (metadata in SQLite, vectors in FAISS), searchable by cosine; see the module docstring."""

    def __init__(self, index: faiss.Index, db: sqlite3.Connection, manifest: dict) -> None:
        self.index = index
        self.db = db  # in memory: saved by `save`, never written in place
        self.dim: int = manifest["dim"]
        self.kind: str = manifest["kind"]
        self.embedder_name: str = manifest["embedder"]["name"]
        self.embedder_sha256: str = manifest["embedder"]["sha256"]
        # The learned retrieval head whose catalog side embedded the products ({mode, sha256, ...}), or None:
        # the embedder's own space (index/head.py).
        self.head: dict | None = manifest.get("head")
        params = manifest.get("params", {})
        self.nprobe: int = params.get("nprobe", DEFAULT_NPROBE)
        self.ef_search: int = params.get("ef_search", DEFAULT_EF_SEARCH)
        self.nlist: int | None = params.get("nlist")
        self.recall: dict | None = manifest.get("recall")
        self.catalog_root: str | None = manifest.get("catalog_root")  # relative image paths are under it (build)
        self.generation: int = manifest.get("generation", 0)
        self.folder: Path | None = None  # the index folder it was opened from (writes and refreshes go there)
        self.log_offset = 0  # how far into this generation's log the in-memory state has applied
        self._count = db.execute("SELECT COUNT(*) FROM products").fetchone()[0]
        self._lock = threading.RLock()  # FAISS indexes and sqlite3 connections are not thread-safe

    # ---- construction ------------------------------------------------------------------------------

    @classmethod
    def create(cls, dim: int, embedder_name: str, embedder_sha256: str, kind: str = "flat", *,
               nprobe: int = DEFAULT_NPROBE, ef_search: int = DEFAULT_EF_SEARCH, head: dict | None = None) -> Catalog:
        """An empty in-memory catalog for embeddings of size dim (in the space of `head`, when given)."""
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        if nprobe < 1 or ef_search < 1:
            raise UserError(f"nprobe and ef_search must be >= 1, got {nprobe} and {ef_search}")
        db = sqlite3.connect(":memory:", check_same_thread=False)
        db.executescript(SCHEMA)
        manifest = {"dim": dim, "kind": kind, "embedder": {"name": embedder_name, "sha256": embedder_sha256},
                    "params": {"nprobe": nprobe, "ef_search": ef_search}, "head": head}
        return cls(_new_index(kind, dim), db, manifest)

    @classmethod
    def open(cls, path: Path, expect_embedder_sha256: str | None = None, expect_head_sha256: str | None = None) -> Catalog:
        """Load an index folder. With `expect_embedder_sha256`, refuse one built with another embedder, or
        through another retrieval head than `expect_head_sha256` (None: built without a head)."""
        folder = Path(path)
        for _ in range(3):  # a concurrent save may delete the generation we just read about
            manifest = read_manifest(folder)
            if expect_embedder_sha256 is not None:
                check_space(manifest, folder, expect_embedder_sha256, expect_head_sha256)
            faiss_path, sqlite_path = folder / manifest["files"]["faiss"], folder / manifest["files"]["sqlite"]
            try:
                db = sqlite3.connect(":memory:", check_same_thread=False)
                # immutable=1: generation files never change, so no locks and no journal (read-only mounts)
                uri = f"file:{urllib.parse.quote(str(sqlite_path.resolve(strict=True)))}?mode=ro&immutable=1"
                with closing(sqlite3.connect(uri, uri=True)) as source:
                    source.backup(db)
                index = faiss.read_index(str(faiss_path.resolve(strict=True)))
            except FileNotFoundError:
                continue
            except (RuntimeError, sqlite3.DatabaseError) as e:  # FAISS reports a vanished file this way too
                if not (faiss_path.exists() and sqlite_path.exists()):
                    continue
                raise UserError(f"index {folder} is damaged ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                                f"rebuild it") from e
            catalog = cls(index, db, manifest)
            expected = catalog._count + catalog._tombstone_count()
            if index.ntotal != expected or index.d != catalog.dim:
                raise UserError(f"index {folder} is inconsistent: {index.ntotal} vectors of dim {index.d}, "
                                f"{expected} products of dim {catalog.dim}; rebuild it")
            catalog.folder = folder
            catalog._apply_log()  # the writes since this generation's base files
            return catalog
        raise UserError(f"index {folder}: {MANIFEST} names files that do not exist; rebuild it")

    # ---- reading -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def get(self, product_id: str) -> ProductMeta | None:
        """A product's metadata, or None."""
        with self._lock:
            row = self.db.execute("SELECT product_id, title, category, image_path, added_at FROM products "
                                  "WHERE product_id = ?", (product_id,)).fetchone()
        return ProductMeta(*row) if row else None

    def categories(self) -> dict[str, int]:
        """Category -> number of products."""
        with self._lock:
            rows = self.db.execute("SELECT category, COUNT(*) FROM products WHERE category IS NOT NULL "
                                   "GROUP BY category ORDER BY category").fetchall()
        return dict(rows)

    def products(self) -> list[ProductMeta]:
        """Every product's metadata, in insertion order."""
        with self._lock:
            rows = self.db.execute("SELECT product_id, title, category, image_path, added_at FROM products "
                                   "ORDER BY id").fetchall()
        return [ProductMeta(*row) for row in rows]

    def page(self, limit: int, offset: int = 0, category: str | None = None) -> tuple[list[ProductMeta], int]:
        """Products in insertion order, `limit` from `offset` (only `category` when given), and the total."""
        where, args = ("WHERE category = ?", (category,)) if category is not None else ("", ())
        with self._lock:
            total = self.db.execute(f"SELECT COUNT(*) FROM products {where}", args).fetchone()[0]
            rows = self.db.execute(f"SELECT product_id, title, category, image_path, added_at FROM products {where} "
                                   "ORDER BY id LIMIT ? OFFSET ?", (*args, limit, offset)).fetchall()
        return [ProductMeta(*row) for row in rows], total

    def has_category(self, category: str) -> bool:
        """Whether any product has this category (an indexed lookup, cheap at any catalog size)."""
        with self._lock:
            return self.db.execute("SELECT 1 FROM products WHERE category = ? LIMIT 1", (category,)).fetchone() is not None

    def search(self, vectors: np.ndarray, k: int, category: str | None = None) -> list[list[Hit]]:
        """Top-k products by cosine for each query row (Q, D); only `category` if given."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = _unit_rows(vectors, self.dim)  # (Q, D)
        with self._lock:
            ids, scores = self._search_ids(queries, k, category)
            return [self._hits(row_ids, row_scores) for row_ids, row_scores in zip(ids, scores, strict=True)]

    def _search_ids(self, queries: np.ndarray, k: int, category: str | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """FAISS ids and scores per query, each row as long as min(k, eligible products)."""
        if category is not None:
            eligible = np.array([r[0] for r in self.db.execute(
                "SELECT id FROM products WHERE category = ?", (category,))], dtype=np.int64)
            selector = faiss.IDSelectorBatch(eligible)
        else:
            eligible = None
            tombstones = self._tombstone_ids()
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(tombstones)) if len(tombstones) else None
        n_eligible = len(eligible) if eligible is not None else self._count
        want = min(k, n_eligible)
        if want == 0:
            return [np.empty(0, np.int64)] * len(queries), [np.empty(0, np.float32)] * len(queries)
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, want))  # ef < k is meaningless
        elif self.kind == "ivf":
            params = faiss.SearchParametersIVF(nprobe=self.nprobe)
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        scores, ids = self.index.search(queries, want, params=params)  # (Q, want) each
        out_ids, out_scores = [], []
        for q, (row_ids, row_scores) in enumerate(zip(ids, scores, strict=True)):
            found = row_ids >= 0
            if found.sum() < want:
                # Filtered HNSW and IVF can run out of candidates; fall back to exact search over the
                # eligible products so a query always gets min(k, eligible) hits.
                row_ids, row_scores = self._exact(queries[q], want, eligible)
            else:
                row_ids, row_scores = row_ids[found], row_scores[found]
            out_ids.append(row_ids)
            out_scores.append(row_scores)
        return out_ids, out_scores

    def _exact(self, query: np.ndarray, k: int, ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Brute-force top-k over the given ids (all live products when None)."""
        if ids is None:
            ids = self._live_ids()
        vectors = self.index.reconstruct_batch(ids)  # (n, D)
        scores = vectors @ query  # (n,)
        top = np.argsort(-scores, kind="stable")[:k]
        return ids[top], scores[top]

    def _hits(self, ids: np.ndarray, scores: np.ndarray) -> list[Hit]:
        if len(ids) == 0:
            return []
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(f"SELECT id, product_id, title, category, image_path FROM products "
                               f"WHERE id IN ({marks})", [int(i) for i in ids]).fetchall()
        meta = {r[0]: r[1:] for r in rows}
        return [Hit(meta[int(i)][0], float(s), *meta[int(i)][1:]) for i, s in zip(ids, scores, strict=True)]

    def _live_ids(self) -> np.ndarray:
        return np.array([r[0] for r in self.db.execute("SELECT id FROM products ORDER BY id")], dtype=np.int64)

    def _tombstone_ids(self) -> np.ndarray:
        return np.array([r[0] for r in self.db.execute("SELECT id FROM tombstones")], dtype=np.int64)

    def _tombstone_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM tombstones").fetchone()[0]

    def check_recall(self, k: int = 10, queries: int = 500, seed: int = 0) -> dict:
        """Recall@k of this index against exact search, on perturbed stored vectors; kept for index.json."""
        with self._lock:
            ids = self._live_ids()
            if len(ids) == 0:
                raise ValueError("cannot measure recall of an empty catalog")
            rng = np.random.default_rng(seed)
            picked = ids[rng.choice(len(ids), size=min(queries, len(ids)), replace=False)]
            q = self.index.reconstruct_batch(picked)  # (Q, D)
            # A query is near, not at, a stored product (a generated image vs the catalog image): cos ~0.9.
            q = q + rng.standard_normal(q.shape).astype(np.float32) * (0.5 / math.sqrt(self.dim))
            q /= np.linalg.norm(q, axis=1, keepdims=True)
            exact = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
            exact.add_with_ids(self.index.reconstruct_batch(ids), ids)
            want = min(k, len(ids))
            _, truth = exact.search(q, want)
            got, _ = self._search_ids(q, k, None)
            recall = float(np.mean([len(set(g.tolist()) & set(t.tolist())) / want for g, t in zip(got, truth, strict=True)]))
        self.recall = {"k": k, "queries": len(picked), "recall": recall}
        return self.recall

    # ---- writing -----------------------------------------------------------------------------------

    def add(self, products: Sequence[ProductMeta], vectors: np.ndarray) -> None:
        """Add products with their embeddings (N, D); an existing product id is replaced (upsert)."""
        x = _unit_rows(vectors, self.dim) if len(products) else np.empty((0, self.dim), np.float32)
        if len(products) != len(x):
            raise ValueError(f"{len(products)} products but {len(x)} vectors")
        if not products:
            return
        pids = [p.product_id for p in products]
        if any(not isinstance(p, str) or not p for p in pids):
            raise UserError("every product needs a non-empty string product_id")
        if len(set(pids)) != len(pids):
            dup = next(p for p in pids if pids.count(p) > 1)
            raise UserError(f"product id {dup!r} appears twice in one add")
        with self._lock:
            self.remove(pids)
            start = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'products'").fetchone()
            ids = np.arange(len(pids), dtype=np.int64) + (start[0] if start else 0) + 1
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            if self.kind == "ivf" and not self.index.is_trained:
                self._train_ivf(x)
            with self.db:  # rolled back if FAISS refuses the vectors
                self.db.executemany(
                    "INSERT INTO products (id, product_id, title, category, image_path, added_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(int(i), p.product_id, p.title, p.category, p.image_path, p.added_at or now)
                     for i, p in zip(ids, products, strict=True)])
                self.index.add_with_ids(x, ids)
            self._count += len(pids)

    def _train_ivf(self, x: np.ndarray) -> None:
        # nlist ~ 4 sqrt(n) (FAISS's guideline), but k-means wants >= 39 points per list, which caps it
        # for small catalogs (2k products: 51 lists, not 179).
        self.nlist = max(1, min(round(4 * math.sqrt(len(x))), len(x) // IVF_MIN_POINTS_PER_LIST))
        ivf = _new_ivf(self.dim, self.nlist)
        ivf.cp.min_points_per_centroid = 1  # the cap above already holds; silences FAISS's warning for n < 39
        # k-means on at most 64 points per list (FAISS samples; its default is 256): at 1M products that is
        # 256k training vectors instead of all 1M, which keeps a CPU build to minutes at equal recall.
        ivf.cp.max_points_per_centroid = 64
        ivf.train(x)
        # A hash-table direct map lets IVF reconstruct and remove by our (sparse) ids.
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        self.index = ivf

    def remove(self, product_ids: Sequence[str]) -> int:
        """Remove products by id; returns how many existed."""
        with self._lock:
            rows = []
            for start in range(0, len(product_ids), 500):  # SQLite caps the number of bound parameters
                chunk = list(product_ids[start:start + 500])
                rows += self.db.execute(f"SELECT id FROM products WHERE product_id IN ({','.join('?' * len(chunk))})",
                                        chunk).fetchall()
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            if len(ids) == 0:
                return 0
            with self.db:
                self.db.executemany("INSERT INTO tombstones (id) VALUES (?)", [(int(i),) for i in ids])
                self.db.executemany("DELETE FROM products WHERE id = ?", [(int(i),) for i in ids])
            self._count -= len(ids)
            if self._tombstone_count() > TOMBSTONE_FRACTION * self.index.ntotal:
                self._purge()
            return len(ids)

    def _purge(self) -> None:
        """Drop tombstoned vectors for good (HNSW: rebuild the graph from the live vectors; flat and IVF:
        `remove_ids`, one scan for all of them)."""
        with self._lock:
            if not self._tombstone_count():
                return
            if self.kind == "hnsw":
                self._rebuild_hnsw()
                return
            with self.db:
                self.index.remove_ids(self._tombstone_ids())
                self.db.execute("DELETE FROM tombstones")

    def _rebuild_hnsw(self) -> None:
        """Build a fresh HNSW graph from the live vectors and forget the tombstones."""
        ids = self._live_ids()
        index = _new_index("hnsw", self.dim)
        if len(ids):
            index.add_with_ids(self.index.reconstruct_batch(ids), ids)
        self.index = index
        with self.db:
            self.db.execute("DELETE FROM tombstones")

    def manifest(self) -> dict:
        """What index.json says about this catalog (without the generation's file names)."""
        params = {"nprobe": self.nprobe, "ef_search": self.ef_search}
        if self.kind == "hnsw":
            params |= {"hnsw_m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION}
        if self.kind == "ivf":
            params["nlist"] = self.nlist
        return {"format_version": FORMAT_VERSION, "embedder": {"name": self.embedder_name, "sha256": self.embedder_sha256},
                "head": self.head, "count": self._count, "dim": self.dim, "kind": self.kind, "params": params, "recall": self.recall,
                "catalog_root": self.catalog_root}

    def save(self, path: Path) -> Path:
        """Write the catalog as the next generation of the index folder, atomically (module docstring).

        Saving back into the folder it was opened from never overwrites writes this catalog has not seen
        (another process's log records, or a newer generation): that is a StaleCatalog error."""
        folder = Path(path)
        if folder.exists() and not folder.is_dir():
            raise UserError(f"index output is a file, not a folder: {folder}")
        folder.mkdir(parents=True, exist_ok=True)
        with _writer_lock(folder), self._lock:  # the same order as write(): no deadlock
            if self.folder is not None and folder.resolve() == self.folder.resolve():
                self._check_current(folder)
            on_disk = [int(m.group(1)) for p in folder.iterdir() if (m := GENERATION_FILE.match(p.name))]
            committed = read_manifest(folder)["generation"] if (folder / MANIFEST).exists() else 0
            generation = max([committed, *on_disk]) + 1
            files = {"faiss": f"catalog-{generation:06d}.faiss", "sqlite": f"catalog-{generation:06d}.sqlite"}

            faiss.write_index(self.index, str(folder / files["faiss"]))
            _fsync(folder / files["faiss"])
            _crash_point("faiss_written")
            with closing(sqlite3.connect(folder / files["sqlite"])) as target:
                self.db.backup(target)
            _fsync(folder / files["sqlite"])
            _crash_point("sqlite_written")

            manifest = self.manifest() | {"generation": generation, "files": files,
                                          "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            tmp = folder / (MANIFEST + ".tmp")
            tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
            _fsync(tmp)
            _crash_point("manifest_written")
            os.replace(tmp, folder / MANIFEST)  # the commit
            _fsync(folder)
            _crash_point("committed")

            for p in folder.iterdir():  # older generations and the leftovers of crashed saves
                m = GENERATION_FILE.match(p.name)
                if m and int(m.group(1)) != generation:
                    p.unlink(missing_ok=True)
            self.generation = generation
            self.log_offset = 0  # the new generation starts with an empty log
        return folder

    # ---- the write-ahead log: O(1) writes, shared by every process serving the folder ---------------

    def _log_path(self, folder: Path | None = None, generation: int | None = None) -> Path:
        folder = folder or self.folder
        assert folder is not None, "catalog not opened from a folder"
        return folder / f"catalog-{self.generation if generation is None else generation:06d}.log"

    def _apply(self, records: list[LogRecord]) -> None:
        """Replay logged writes in order: every process reaches the same state (FAISS ids included)."""
        for r in records:
            if r.op == "add":
                f = r.fields
                self.add([ProductMeta(f["product_id"], f.get("title"), f.get("category"), f.get("image_path"),
                                      f.get("added_at"))], r.vector[None])
            elif r.op == "remove":
                self.remove([r.fields["product_id"]])

    def _apply_log(self) -> int:
        """Apply this generation's log records not yet applied; returns how many."""
        with self._lock:
            records, self.log_offset = catalog_log.read(self._log_path(), self.log_offset)
            self._apply(records)
            return len(records)

    def _check_current(self, folder: Path) -> None:
        committed = read_manifest(folder).get("generation", 0) if (folder / MANIFEST).exists() else self.generation
        _, end = catalog_log.read(self._log_path(folder), self.log_offset)
        if committed != self.generation or end != self.log_offset:
            raise StaleCatalog(f"index {folder} has changed since this catalog was loaded (generation "
                               f"{committed}, log at {end} bytes; this copy: generation {self.generation}, "
                               f"{self.log_offset} bytes): refresh it before saving, or the newer writes "
                               f"would be lost")

    def write(self, products: Sequence[ProductMeta] = (), vectors: np.ndarray | None = None,
              removed: Sequence[str] = ()) -> dict[str, ProductMeta | None]:
        """Durably add (upsert) and/or remove products in the folder this catalog was opened from.

        O(1) in the catalog's size: one fsynced log record per product, under the folder's writer lock,
        after applying any records other processes appended first (so no acknowledged write is lost and
        every process assigns the same ids). Returns each touched product's metadata before the write (None:
        it did not exist)."""
        assert self.folder is not None, "write() needs a catalog opened from an index folder"
        vectors = np.empty((0, self.dim), np.float32) if vectors is None else _unit_rows(vectors, self.dim)
        if len(products) != len(vectors):
            raise ValueError(f"{len(products)} products but {len(vectors)} vectors")
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        records = [LogRecord("remove", {"product_id": pid}) for pid in removed]
        records += [LogRecord("add", {"product_id": p.product_id, "title": p.title, "category": p.category,
                                      "image_path": p.image_path, "added_at": p.added_at or now}, v)
                    for p, v in zip(products, vectors, strict=True)]
        with _writer_lock(self.folder):  # one writer at a time, across threads and processes
            committed = read_manifest(self.folder).get("generation", 0)
            if committed != self.generation:
                raise StaleCatalog(f"index {self.folder} moved to generation {committed} (this copy has "
                                   f"{self.generation}); refresh and try again")
            with self._lock:
                self._apply_log()  # other processes' writes first, in log order
                before = {pid: self.get(pid) for pid in [*removed, *(p.product_id for p in products)]}
                offset = self.log_offset
            # The fsync happens outside the lock that searches take: a slow disk delays this write, not them.
            new_file = not self._log_path().exists()
            catalog_log.append(self._log_path(), records, offset)
            if new_file:
                _fsync(self.folder)
            # Applied from the log like any other process's records (a concurrent `refresh` may have done it).
            self._apply_log()
        return before

    def log_size(self) -> int:
        """Bytes of this generation's log applied so far (compaction folds the log into new base files)."""
        return self.log_offset

    def refresh(self) -> bool:
        """Follow the folder: apply new log records in place; True when a newer generation needs a reload
        (`Catalog.open` again: base files are never modified, a newer generation has new ones)."""
        assert self.folder is not None, "refresh() needs a catalog opened from an index folder"
        committed = read_manifest(self.folder).get("generation", 0)
        if committed != self.generation:
            return True
        self._apply_log()
        return False


class StaleCatalog(UserError):
    """The index folder holds writes this in-memory catalog has not seen; refresh before writing."""


def compact(folder: Path) -> int | None:
    """Fold the folder's log into the next generation's base files; returns it (None if another compaction
    runs). Off the request path: the snapshot is loaded and written without the writer lock, which is held
    only to carry over the log records appended meanwhile and to commit, so adds keep their O(1) latency."""
    folder = Path(folder)
    with (folder / COMPACT_LOCK).open("a") as guard:
        try:
            fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        snapshot = Catalog.open(folder)
        base, offset = snapshot.generation, snapshot.log_offset
        snapshot._purge()  # tombstones and removed vectors do not survive into the new base
        generation = base + 1
        files = {"faiss": f"catalog-{generation:06d}.faiss", "sqlite": f"catalog-{generation:06d}.sqlite"}
        faiss.write_index(snapshot.index, str(folder / files["faiss"]))
        _fsync(folder / files["faiss"])
        with closing(sqlite3.connect(folder / files["sqlite"])) as target:
            snapshot.db.backup(target)
        _fsync(folder / files["sqlite"])
        with _writer_lock(folder):
            if read_manifest(folder).get("generation") != base:  # a full save replaced the folder meanwhile
                for name in files.values():
                    (folder / name).unlink(missing_ok=True)
                return None
            tail, _ = catalog_log.read(snapshot._log_path(folder, base), offset)
            (folder / f"catalog-{generation:06d}.log").unlink(missing_ok=True)
            if tail:
                catalog_log.append(folder / f"catalog-{generation:06d}.log", tail, 0)
            snapshot._apply(tail)  # for the manifest's count only: the files hold the snapshot, the log the tail
            manifest = snapshot.manifest() | {"generation": generation, "files": files,
                                              "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            tmp = folder / (MANIFEST + ".tmp")
            tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
            _fsync(tmp)
            os.replace(tmp, folder / MANIFEST)
            _fsync(folder)
        for p in folder.iterdir():
            m = GENERATION_FILE.match(p.name)
            if m and int(m.group(1)) < generation:
                p.unlink(missing_ok=True)
        return generation
