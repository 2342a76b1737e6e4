"""The product catalog: embeddings in FAISS, product metadata in SQLite, one index folder. No torch.

Search is inner product over unit vectors, i.e. cosine. The FAISS index is any index-factory string
(index/factory.py: "Flat" exact, "HNSW32,Flat", "IVF4096,Flat", ...; the aliases flat / hnsw / ivf, and `auto`:
chosen by catalog size at the first add); an untrained index (IVF, PQ) is trained on the first add. `nprobe`
(IVF lists scanned per query) and `ef_search` (HNSW search breadth) trade speed for recall. Approximate indexes
can measure their recall@k against exact search (`check_recall`, stored in index.json).

This is the file engine, the default; the engine-neutral types and the interface are in index/catalog/base.py,
the Milvus engine in index/catalog/milvus.py, and index/catalog/engines.py chooses between them.

FAISS ids are the SQLite rowids of the products (AUTOINCREMENT, never reused), so string product ids map to
int64 ids in one place. `add` is an upsert. A removed product leaves a tombstone, whatever the index: its id is
excluded from every search with an IDSelector (and from the results, for indexes that ignore one), and its
vector is dropped for good at compaction or once tombstones exceed a fifth of the index. HNSW cannot delete
(its graph is rebuilt from the live vectors, as is any index FAISS cannot remove from); flat and IVF can, but `remove_ids` scans the whole index (about 0.2 s per delete at 1M products, stalling searches
that wait for the catalog's lock: docs/benchmarks.md), so a delete only records the tombstone.

Index folder and atomic saves. Three files must always agree, and a crash must never leave a mix:

    index.json             the commit record: names the current generation's two data files, plus the
                           embedder (name, sha256), count, dim, factory string (and its alias as `kind`),
                           search params, measured recall
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
import os
import re
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np

from rtdgan.index import files as _files
from rtdgan.index.catalog import factory as factories
from rtdgan.index.catalog import writelog as catalog_log
from rtdgan.index.catalog.base import (
    DEFAULT_EF_SEARCH,
    DEFAULT_NPROBE,
    FORMAT_VERSION,
    MANIFEST,
    Hit,
    ProductMeta,
    check_space,
    embedder_doc,
    exact_truth,
    manifest_factory,
    product_ids,
    unit_rows,
)
from rtdgan.index.catalog.writelog import LogRecord
from rtdgan.index.errors import UserError
from rtdgan.index.files import PacedWriter
from rtdgan.index.files import fsync_path as _fsync

KINDS = factories.ALIASES  # the original kinds, now aliases of factory strings (index/factory.py)
GENERATION_FILE = re.compile(r"^catalog-(\d{6})\.(faiss|sqlite|log)$")
COMPACT_LOCK = ".compact.lock"  # one compaction at a time per folder (writers only take `.lock`)
HNSW_M, HNSW_EF_CONSTRUCTION = factories.HNSW_M, factories.HNSW_EF_CONSTRUCTION
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


def read_folder_manifest(folder: Path) -> dict:
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














class Catalog:
    """Products (metadata in SQLite, vectors in FAISS), searchable by cosine; see the module docstring."""

    def __init__(self, index: faiss.Index, db: sqlite3.Connection, manifest: dict) -> None:
        self.index = index
        self.db = db  # in memory: saved by `save`, never written in place
        self.dim: int = manifest["dim"]
        # The FAISS index-factory string (index/factory.py); `spec` is what was asked for (an alias, `auto` or a
        # string), resolved to `factory` by the first add when it depends on the catalog's size.
        self.spec: str = manifest.get("factory") or manifest["kind"]
        self.factory: str | None = manifest_factory(manifest)
        if self.factory is None:
            self.index = None  # an empty catalog whose index the first add makes (a placeholder in the file)
        self.embedder_name: str = manifest["embedder"]["name"]
        self.embedder_sha256: str = manifest["embedder"]["sha256"]
        # What the vectors were embedded on ({"backend", "precision"}, index/backends.py), None in indexes from
        # before it was recorded; a service on another one warns (rtdgan.index.pipeline.backend_mismatch).
        self.embedder_backend: dict | None = manifest["embedder"].get("backend")
        # The learned retrieval head whose catalog side embedded the products ({mode, sha256, ...}), or None:
        # the embedder's own space (index/head.py).
        self.head: dict | None = manifest.get("head")
        params = manifest.get("params", {})
        self.nprobe: int = params.get("nprobe", DEFAULT_NPROBE)
        self.ef_search: int = params.get("ef_search", DEFAULT_EF_SEARCH)
        self.recall: dict | None = manifest.get("recall")
        self.catalog_root: str | None = manifest.get("catalog_root")  # relative image paths are under it (build)
        self.generation: int = manifest.get("generation", 0)
        self.folder: Path | None = None  # the index folder it was opened from (writes and refreshes go there)
        self.log_offset = 0  # how far into this generation's log the in-memory state has applied
        self._count = db.execute("SELECT COUNT(*) FROM products").fetchone()[0]
        self._lock = threading.RLock()  # FAISS indexes and sqlite3 connections are not thread-safe

    # ---- construction ------------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """The alias of the factory string (flat, hnsw, ivf), "factory" for any other, or the pending spec."""
        return factories.kind_of(self.factory) if self.factory else self.spec

    @property
    def nlist(self) -> int | None:
        """The IVF index's number of lists, or None (not IVF, or not trained yet)."""
        ivf = faiss.try_extract_index_ivf(self.index) if self.index is not None else None
        return int(ivf.nlist) if ivf is not None else None

    @classmethod
    def create(cls, dim: int, embedder_name: str, embedder_sha256: str, factory: str = "flat", *,
               nprobe: int = DEFAULT_NPROBE, ef_search: int = DEFAULT_EF_SEARCH, head: dict | None = None,
               embedder_backend: dict | None = None) -> Catalog:
        """An empty in-memory catalog for embeddings of size dim (in the space of `head`, when given); `factory`:
        an alias (flat, hnsw, ivf), `auto` (by size at the first add) or any FAISS index-factory string."""
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        if nprobe < 1 or ef_search < 1:
            raise UserError(f"nprobe and ef_search must be >= 1, got {nprobe} and {ef_search}")
        factories.check(factory, dim)
        db = sqlite3.connect(":memory:", check_same_thread=False)
        db.executescript(SCHEMA)
        concrete = None if factories.is_deferred(factory) else factories.resolve(factory, 0)
        manifest = {"dim": dim, "kind": factory, "factory": concrete,
                    "embedder": embedder_doc(embedder_name, embedder_sha256, embedder_backend),
                    "params": {"nprobe": nprobe, "ef_search": ef_search}, "head": head}
        catalog = cls(None, db, manifest)  # type: ignore[arg-type]
        catalog.spec, catalog.factory = factory, concrete
        # An index whose string depends on the catalog's size is made by the first add (`_first_add`).
        catalog.index = factories.new_index(concrete, dim) if concrete else None  # type: ignore[assignment]
        return catalog

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change how hard a search looks (IVF lists scanned, HNSW breadth) for this process; index.json keeps
        the values of the build."""
        if (nprobe is not None and nprobe < 1) or (ef_search is not None and ef_search < 1):
            raise UserError(f"nprobe and ef_search must be >= 1, got {nprobe} and {ef_search}")
        with self._lock:
            self.nprobe = nprobe or self.nprobe
            self.ef_search = ef_search or self.ef_search

    @classmethod
    def open(cls, path: Path, expect_embedder_sha256: str | None = None, expect_head_sha256: str | None = None) -> Catalog:
        """Load an index folder. With `expect_embedder_sha256`, refuse one built with another embedder, or
        through another retrieval head than `expect_head_sha256` (None: built without a head)."""
        folder = Path(path)
        for _ in range(3):  # a concurrent save may delete the generation we just read about
            manifest = read_folder_manifest(folder)
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
        queries = unit_rows(vectors, self.dim)  # (Q, D)
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
        # ef < k is meaningless; the parameters' types match the index chain (index/factory.py)
        params = factories.SearchParams(self.index, self.nprobe, max(self.ef_search, want), selector)
        try:
            scores, ids = self.index.search(queries, want, params=params.params)  # (Q, want) each
        except RuntimeError as e:
            if "params" not in str(e):
                raise
            # An index that takes no search parameters (PQ, ...): ask for enough extra results to drop the
            # ineligible ones below (at worst a scan of every code, still through the index).
            excluded = self.index.ntotal - (len(eligible) if eligible is not None else self._count)
            scores, ids = self.index.search(queries, min(self.index.ntotal, want + excluded))
        # An index that ignores the selector somewhere in its chain (a refine step) must not leak removed or
        # other-category products: only eligible ids count.
        if eligible is not None:
            ok = np.isin(ids, eligible)
        else:
            ok = ids >= 0
            if selector is not None:
                ok &= ~np.isin(ids, tombstones)
        out_ids, out_scores = [], []
        for q, (row_ids, row_scores) in enumerate(zip(ids, scores, strict=True)):
            found = ok[q] & (np.cumsum(ok[q]) <= want)  # the best `want` eligible ones (rows are sorted)
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

    def check_recall(self, k: int = 10, queries: int = 500, seed: int = 0, vectors: np.ndarray | None = None) -> dict:
        """Recall@k of this index against exact search, on perturbed stored vectors; kept for index.json.

        `vectors`: every live product's original vector, in insertion order (what `rtd index build` added). A
        compressed index (PQ, SQ) only gives back approximations, which must not be the ground truth."""
        with self._lock:
            ids = self._live_ids()
            if len(ids) == 0:
                raise ValueError("cannot measure recall of an empty catalog")
            stored = self.index.reconstruct_batch(ids) if vectors is None else unit_rows(vectors, self.dim)
            if len(stored) != len(ids):
                raise ValueError(f"{len(stored)} vectors for {len(ids)} products")
            q, truth = exact_truth(stored, k, queries, seed)
            got, _ = self._search_ids(q, k, None)
            got_rows = [np.searchsorted(ids, g) for g in got]  # FAISS ids -> rows of `stored` (ids are sorted)
            recall = float(np.mean([len(set(g.tolist()) & set(t.tolist())) / len(t)
                                    for g, t in zip(got_rows, truth, strict=True)]))
        self.recall = {"k": k, "queries": len(q), "recall": recall}
        return self.recall

    # ---- writing -----------------------------------------------------------------------------------

    def add(self, products: Sequence[ProductMeta], vectors: np.ndarray) -> None:
        """Add products with their embeddings (N, D); an existing product id is replaced (upsert)."""
        x = unit_rows(vectors, self.dim) if len(products) else np.empty((0, self.dim), np.float32)
        if len(products) != len(x):
            raise ValueError(f"{len(products)} products but {len(x)} vectors")
        if not products:
            return
        pids = product_ids(products)
        with self._lock:
            self.remove(pids)
            start = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'products'").fetchone()
            ids = np.arange(len(pids), dtype=np.int64) + (start[0] if start else 0) + 1
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            if self.index is None or not self.index.is_trained:
                self._first_add(x)
            with self.db:  # rolled back if FAISS refuses the vectors
                self.db.executemany(
                    "INSERT INTO products (id, product_id, title, category, image_path, added_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(int(i), p.product_id, p.title, p.category, p.image_path, p.added_at or now)
                     for i, p in zip(ids, products, strict=True)])
                self.index.add_with_ids(x, ids)
            self._count += len(pids)

    def _first_add(self, x: np.ndarray) -> None:
        """Make the index a size-dependent spec (`auto`, `ivf`) names, and train an index that needs it, on the
        first add's vectors."""
        if self.index is None:
            self.factory = factories.resolve(self.spec, len(x))
            self.index = factories.new_index(self.factory, self.dim)
        if not self.index.is_trained:
            ivf = faiss.try_extract_index_ivf(self.index)
            if ivf is not None and self.spec == "ivf":
                ivf.cp.min_points_per_centroid = 1  # the alias's nlist already keeps >= 39 points per list when it can
            factories.train(self.index, x)

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
        """Drop tombstoned vectors for good (flat, IVF: `remove_ids`, one scan for all of them; HNSW, or any index
        FAISS cannot remove from: rebuild it from the live vectors)."""
        with self._lock:
            if not self._tombstone_count():
                return
            if factories.hnsw_of(self.index) is None:
                try:
                    with self.db:
                        self.index.remove_ids(self._tombstone_ids())
                        self.db.execute("DELETE FROM tombstones")
                    return
                except RuntimeError:  # "not implemented" for this index type
                    pass
            self._rebuild()

    def _rebuild(self) -> None:
        """The index again from the live vectors (trained parts kept), and forget the tombstones."""
        ids = self._live_ids()
        index = factories.new_index(self.factory, self.dim)
        if not index.is_trained:  # keep the trained quantizer / codebooks: an empty copy of this index
            index = faiss.clone_index(self.index)
            index.reset()
        if len(ids):
            index.add_with_ids(self.index.reconstruct_batch(ids), ids)
        self.index = index
        with self.db:
            self.db.execute("DELETE FROM tombstones")

    def _index_for_file(self) -> faiss.Index:
        """The index to write: an empty placeholder while the first add has not made it yet."""
        return self.index if self.index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def manifest(self) -> dict:
        """What index.json says about this catalog (without the generation's file names)."""
        params = {"nprobe": self.nprobe, "ef_search": self.ef_search}
        hnsw = factories.hnsw_of(self.index) if self.index is not None else None
        if hnsw is not None:
            params |= {"hnsw_m": hnsw.hnsw.nb_neighbors(1), "ef_construction": hnsw.hnsw.efConstruction}
        if self.nlist is not None:
            params["nlist"] = self.nlist
        return {"format_version": FORMAT_VERSION,
                "embedder": embedder_doc(self.embedder_name, self.embedder_sha256, self.embedder_backend),
                "head": self.head, "count": self._count, "dim": self.dim, "kind": self.kind,
                "factory": self.factory, "params": params, "recall": self.recall,
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
            committed = read_folder_manifest(folder)["generation"] if (folder / MANIFEST).exists() else 0
            generation = max([committed, *on_disk]) + 1
            files = {"faiss": f"catalog-{generation:06d}.faiss", "sqlite": f"catalog-{generation:06d}.sqlite"}

            write_faiss(self._index_for_file(), folder / files["faiss"])
            _crash_point("faiss_written")
            write_sqlite(self.db, folder / files["sqlite"])
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
        committed = read_folder_manifest(folder).get("generation", 0) if (folder / MANIFEST).exists() else self.generation
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
        vectors = np.empty((0, self.dim), np.float32) if vectors is None else unit_rows(vectors, self.dim)
        if len(products) != len(vectors):
            raise ValueError(f"{len(products)} products but {len(vectors)} vectors")
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        records = [LogRecord("remove", {"product_id": pid}) for pid in removed]
        records += [LogRecord("add", {"product_id": p.product_id, "title": p.title, "category": p.category,
                                      "image_path": p.image_path, "added_at": p.added_at or now}, v)
                    for p, v in zip(products, vectors, strict=True)]
        with _writer_lock(self.folder):  # one writer at a time, across threads and processes
            committed = read_folder_manifest(self.folder).get("generation", 0)
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
        committed = read_folder_manifest(self.folder).get("generation", 0)
        if committed != self.generation:
            return True
        self._apply_log()
        return False


def write_faiss(index: faiss.Index, path: Path, pace: int | None = None) -> None:
    """A FAISS index to a new file, durably, with paced write-back every `pace` bytes (default rtdgan.index.files.WRITE_PACE;
    PacedWriter: a catalog's gigabytes never sit dirty in the page cache in front of the log's fsyncs)."""
    pace = _files.WRITE_PACE if pace is None else pace  # read at call time: a benchmark varies it
    with open(path, "wb") as f:
        paced = PacedWriter(f, pace)
        faiss.write_index(index, faiss.PyCallbackIOWriter(paced.write, min(pace, 1 << 20)))  # chunks <= pace
        f.flush()
        os.fsync(f.fileno())


def write_sqlite(db: sqlite3.Connection, path: Path, pace: int | None = None) -> None:
    """An SQLite database copied to a new file, durably, synced every `pace` bytes (default rtdgan.index.files.WRITE_PACE) as the
    backup goes."""
    pace = _files.WRITE_PACE if pace is None else pace  # read at call time: a benchmark varies it
    with closing(sqlite3.connect(path)) as target:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        fd = os.open(path, os.O_RDONLY)
        try:
            steps = max(1, pace // page_size)  # pages per step; -1: all in one
            db.backup(target, pages=steps if steps < 1 << 31 else -1, progress=lambda *_: os.fdatasync(fd))
        finally:
            os.close(fd)
    _fsync(path)




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
        write_faiss(snapshot._index_for_file(), folder / files["faiss"])
        write_sqlite(snapshot.db, folder / files["sqlite"])
        with _writer_lock(folder):
            if read_folder_manifest(folder).get("generation") != base:  # a full save replaced the folder meanwhile
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
