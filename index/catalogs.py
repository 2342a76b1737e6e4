"""The catalog engines (issue #17): one interface, two implementations, chosen by the index location. No torch.

    a folder path                              the file catalog (index/catalog.py: FAISS + SQLite, embedded, the
                                               default: nothing to run; replicas follow its write-ahead log)
    milvus:///abs/path/catalog.db[/COLLECTION] Milvus Lite (index/milvus.py): a local database in this process
    milvus://host[:19530][/COLLECTION]         a Milvus server (Standalone or a cluster); COLLECTION defaults to
                                               "products"; $RTD_MILVUS_TOKEN ("user:password" or an API key)

`rtd index build --out`, `rtd index search --index`, `rtd eval --gallery` and `rtd serve` (RTD_INDEX) take any
of them. A location may arrive through `pathlib.Path`, which folds `//` into `/` ("milvus:/abs/path/catalog.db"):
both spellings parse the same. Milvus Lite is told apart from a server the way pymilvus does it: its path ends
in ".db" (a Milvus collection name cannot contain a dot).

Every engine offers `CatalogEngine`: the same build, upsert, remove, search with a category filter, the
embedder/head check (`check_space`, refusing a catalog built in another space), product metadata and image
path, count / categories / page. What differs is where the state lives: the file catalog holds a copy in each
process, and other processes' writes arrive through its log (`refresh`); Milvus holds one copy on its server,
so a write is seen by every replica at once and `refresh` has nothing to do.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from index.catalog import Catalog, Hit, ProductMeta, is_milvus
from index.errors import UserError

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


def open_catalog(location: str | Path, expect_embedder_sha256: str | None = None,
                 expect_head_sha256: str | None = None) -> CatalogEngine:
    """Open the catalog at any location; with `expect_embedder_sha256`, refuse one built in another space."""
    return Catalog.open(location, expect_embedder_sha256, expect_head_sha256)  # hands `milvus:` to index/milvus.py


def build_catalog(location: str | Path, products: Sequence[ProductMeta], vectors: np.ndarray, *, embedder_name: str,
                  embedder_sha256: str, head: dict | None, factory: str, nprobe: int, ef_search: int,
                  catalog_root: str | None, recall_k: int | None, embedder_backend: dict | None = None) -> CatalogEngine:
    """Write a whole catalog to `location`, replacing what is there (a folder: atomically, as a new generation;
    Milvus: a new collection that takes the old one's name once complete). With `recall_k`, recall@k against
    exact search is measured on the finished index and recorded with it, unless the index is exact."""
    where = parse_location(location)
    if where.engine != "file":
        from index.milvus import MilvusCatalog

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
