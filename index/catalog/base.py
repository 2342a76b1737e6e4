"""What every catalog engine shares (docs/architecture.md, "The index contract"). No torch.

The engine-neutral types (`ProductMeta`, `Hit`), the interface every engine offers (`CatalogEngine`), index
locations (`parse_location`: a folder, Milvus Lite or a Milvus server), the manifest's constants and the rules
both engines apply the same way: product ids, unit vectors, the embedder/head space check, the recall queries.
The engines are index/catalog/file.py (FAISS + SQLite) and index/catalog/milvus.py; index/catalog/engines.py is
the one place that chooses between them.

Index locations:

    a folder path                              the file catalog (FAISS + SQLite, embedded, the default: nothing
                                               to run; replicas follow its write-ahead log)
    milvus:///abs/path/catalog.db[/COLLECTION] Milvus Lite: a local database in this process
    milvus://host[:19530][/COLLECTION]         a Milvus server (Standalone or a cluster); COLLECTION defaults to
                                               "products"; $RTD_MILVUS_TOKEN ("user:password" or an API key)

A location may arrive through `pathlib.Path`, which folds `//` into `/` ("milvus:/abs/path/catalog.db"): both
spellings parse the same. Milvus Lite is told apart from a server the way pymilvus does it: its path ends in
".db" (a Milvus collection name cannot contain a dot).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from rtdgan.index.catalog import factory as factories
from rtdgan.index.errors import UserError

FORMAT_VERSION = 1

MANIFEST = "index.json"

DEFAULT_EF_SEARCH = 128  # >= the service's largest k (60) so a top-60 query explores enough of the graph

DEFAULT_NPROBE = 32

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

def product_ids(products: Sequence[ProductMeta]) -> list[str]:
    """The ids of one add's products, checked (every engine's rule): non-empty strings, none twice."""
    pids = [p.product_id for p in products]
    if any(not isinstance(p, str) or not p for p in pids):
        raise UserError("every product needs a non-empty string product_id")
    if len(set(pids)) != len(pids):
        dup = next(p for p in pids if pids.count(p) > 1)
        raise UserError(f"product id {dup!r} appears twice in one add")
    return pids

def unit_rows(vectors: np.ndarray, dim: int) -> np.ndarray:
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

def is_milvus(location: object) -> bool:
    """Whether an index location names a Milvus collection (index/catalogs.py) rather than an index folder."""
    return str(location).startswith("milvus:")

def embedder_doc(name: str, sha256: str, backend: dict | None = None) -> dict:
    """index.json's "embedder": the model that embedded the catalog, and the backend it ran on when known."""
    return {"name": name, "sha256": sha256} | ({"backend": dict(backend)} if backend else {})

def manifest_factory(manifest: dict) -> str | None:
    """The factory string index.json records; for a folder from before factory strings, its kind's expansion
    (None: not known until the first add)."""
    if manifest.get("factory"):
        return manifest["factory"]
    kind = manifest.get("kind", "flat")
    if kind == "ivf":
        nlist = manifest.get("params", {}).get("nlist")
        return f"IVF{nlist},Flat" if nlist else None
    return None if factories.is_deferred(kind) else factories.resolve(kind, 0)

def exact_truth(stored: np.ndarray, k: int, queries: int = 500, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Recall queries and their exact top-k: `queries` stored vectors picked at random, each perturbed to a cosine of
    about 0.9 (a generated image vs the catalog image); the rows of `stored` nearest each. Every engine's recall
    at build is measured on these (index/milvus.py too)."""
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(stored), size=min(queries, len(stored)), replace=False)
    dim = stored.shape[1]
    q = stored[picked] + rng.standard_normal((len(picked), dim)).astype(np.float32) * (0.5 / math.sqrt(dim))
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    exact = faiss.IndexFlatIP(dim)
    exact.add(np.ascontiguousarray(stored, dtype=np.float32))
    _, truth = exact.search(q, min(k, len(stored)))
    return q, list(truth)

MILVUS_PORT = 19530

DEFAULT_COLLECTION = "products"

TOKEN_ENV = "RTD_MILVUS_TOKEN"  # a Milvus server's credentials, never part of the location (it is logged)

COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")  # Milvus's rule for collection names

@dataclass(frozen=True)
class Location:
    """Where a catalog lives: `engine` "file" (`path` a folder), "milvus-lite" (`path` the .db) or "milvus"
    (`uri` http://host:port); `collection` for Milvus."""

    engine: str
    path: Path | None = None
    uri: str | None = None
    collection: str | None = None

    def __str__(self) -> str:
        if self.engine == "file":
            return str(self.path)
        if self.engine == "milvus-lite":
            return f"milvus://{self.path}/{self.collection}"
        return f"milvus://{self.uri.split('://', 1)[1]}/{self.collection}"  # type: ignore[union-attr]

def parse_location(location: str | Path) -> Location:
    """An index location (module docstring) -> Location; UserError, in one line, when it is malformed."""
    text = str(location)
    if not is_milvus(text):
        return Location("file", path=Path(text))
    rest = text[len("milvus:"):].lstrip("/")
    parts = [p for p in rest.split("/") if p]
    db = [i for i, p in enumerate(parts) if p.endswith(".db")]
    if db:  # Milvus Lite: an absolute path to NAME.db, then optionally the collection
        i = db[-1]
        if len(parts) - i > 2:
            raise UserError(f"{text}: a Milvus Lite location is milvus:///ABSOLUTE/PATH/NAME.db[/COLLECTION]")
        collection = parts[i + 1] if len(parts) == i + 2 else DEFAULT_COLLECTION
        found = Location("milvus-lite", path=Path("/" + "/".join(parts[:i + 1])), collection=collection)
    else:  # a server: host[:port][/collection]
        if not parts or len(parts) > 2:
            raise UserError(f"{text}: a Milvus location is milvus://HOST[:PORT][/COLLECTION] (a server) or "
                            f"milvus:///ABSOLUTE/PATH/NAME.db[/COLLECTION] (Milvus Lite)")
        host, _, port = parts[0].partition(":")
        if not host or (port and not port.isdigit()):
            raise UserError(f"{text}: expected milvus://HOST[:PORT][/COLLECTION], e.g. milvus://milvus:19530/products")
        collection = parts[1] if len(parts) == 2 else DEFAULT_COLLECTION
        found = Location("milvus", uri=f"http://{host}:{port or MILVUS_PORT}", collection=collection)
    if not COLLECTION_NAME.match(found.collection or ""):
        raise UserError(f"{text}: {found.collection!r} is not a Milvus collection name (letters, digits and "
                        f"underscores, not starting with a digit)")
    return found

def milvus_token() -> str:
    """The Milvus server's credentials from $RTD_MILVUS_TOKEN ("" = none)."""
    return os.environ.get(TOKEN_ENV, "")

class CatalogEngine(Protocol):
    """What the pipeline, the service, `rtd index` and `rtd eval` use of a catalog, whichever engine holds it."""

    dim: int
    embedder_name: str
    embedder_sha256: str
    head: dict | None  # the retrieval head whose catalog side made the vectors ({mode, sha256, ...}), or None
    catalog_root: str | None  # relative image paths are under it
    recall: dict | None  # recall@k against exact search, measured at build
    folder: Path | None  # the index folder of a file catalog (its log and admin images); None for Milvus
    nprobe: int
    ef_search: int

    def __len__(self) -> int: ...
    def get(self, product_id: str) -> ProductMeta | None: ...
    def categories(self) -> dict[str, int]: ...
    def products(self) -> list[ProductMeta]: ...
    def page(self, limit: int, offset: int = 0, category: str | None = None) -> tuple[list[ProductMeta], int]: ...
    def has_category(self, category: str) -> bool: ...
    def search(self, vectors: np.ndarray, k: int, category: str | None = None) -> list[list[Hit]]: ...
    def add(self, products: Sequence[ProductMeta], vectors: np.ndarray) -> None: ...
    def remove(self, product_ids: Sequence[str]) -> int: ...
    def write(self, products: Sequence[ProductMeta] = (), vectors: np.ndarray | None = None,
              removed: Sequence[str] = ()) -> dict[str, ProductMeta | None]: ...
    def refresh(self) -> bool: ...
    def log_size(self) -> int: ...
    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None: ...
    def manifest(self) -> dict: ...

IMAGES_DIR = "images"  # admin-added product images live under INDEX/images/ (Milvus: under the catalog root)

def catalog_image(product: ProductMeta, root: Path | None, images_home: Path | None) -> Path | None:
    """The catalog image of a product on disk, if present. An absolute path is used as stored; an admin-added
    image (images/...) is under `images_home` (the index folder; with Milvus, the catalog root); any other
    relative path is under `root` (the catalog root). Never a path outside them ("..")."""
    if not product.image_path:
        return None
    path = Path(product.image_path)
    if ".." in path.parts:
        return None  # index/build.py stores no such path
    if path.is_absolute():
        file = path
    elif path.parts[:1] == (IMAGES_DIR,) and images_home is not None and (images_home / path).is_file():
        file = images_home / path
    elif root is not None:
        file = root / path
    else:
        return None
    return file if file.is_file() else None
