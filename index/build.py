"""`rtd index build`: catalog images -> preprocess -> embedder.onnx -> the index folder. No torch.

A catalog is one of
  - a LookBook folder: its `PID%06d_CLEAN1_IID%06d.jpg` product images (the product id is the six digits,
    as in training/data.py), with category and title from a `products.csv` inside or beside it if present;
  - a CSV file with `product_id` (or `id`) and `image` (or `product_image`) columns, optional `title`,
    `category`, `colour`, `pattern`; image paths are relative to the CSV's folder;
  - a plain folder of images: the product id is the file name without its extension.
Images are preprocessed with the one shared `rtdgan.index.images.preprocess` at the artifacts' resolution S.
When the artifacts have a retrieval head (head.json, index/head.py), every image's features go through its
catalog side, and index.json records the head (`head`: mode, sha256): searching it needs the same head.

The index is written to any catalog engine (index/catalogs.py): an index folder (FAISS + SQLite), or a Milvus
collection (`--out milvus:///abs/path/catalog.db` for Milvus Lite, `--out milvus://host:19530/products` for a
server). Its FAISS index is a factory string (`--factory "IVF4096,Flat"`, index/factory.py) or one of the old
kinds (`--kind flat|hnsw|ivf`); by default it is chosen by the catalog's size. Recall@10 against exact search
is measured on the finished index, unless it is exact, and stored with it.

The index stores each image's path relative to the catalog root (the `--catalog` folder, or the CSV's
folder) and records that root in index.json (`catalog_root`), so an index built on one machine serves on
another with the catalog mounted elsewhere (the service's RTD_CATALOG, service/engine.py `image_file`).
An image outside the root (a CSV row with `../` or an absolute path) keeps its absolute path.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from tqdm import tqdm

from rtdgan.index.catalog import factory as factories
from rtdgan.index.catalog.base import DEFAULT_EF_SEARCH, DEFAULT_NPROBE, ProductMeta, parse_location
from rtdgan.index.catalog.engines import build_catalog
from rtdgan.index.catalog.file import KINDS
from rtdgan.index.configs import opt
from rtdgan.index.errors import ImageError, UserError
from rtdgan.index.files import PRODUCTS_CSV, is_image_file, read_csv_rows, read_products_csv, sha256_file
from rtdgan.index.images import preprocess
from rtdgan.index.lookbook import lookbook_product_id
from rtdgan.index.runtime.artifacts import current_artifacts, read_artifacts
from rtdgan.index.runtime.backends import PRECISION_HELP, Backend, from_env
from rtdgan.index.runtime.head import HEAD_JSON, read_head
from rtdgan.index.runtime.onnx import OnnxEmbedder

log = logging.getLogger(__name__)
RECALL_K = 10  # approximate kinds report recall@10 against exact search at build time
DECODE_THREADS = 4  # PIL decodes and resizes with the GIL released

Kind = Literal["auto", "flat", "hnsw", "ivf"]
assert get_args(Kind) == (factories.AUTO, *KINDS), "rtdgan.index.catalog.file.KINDS and rtdgan.index.build.Kind must list the same kinds"


@dataclass(frozen=True)
class BuildConfig:
    """`rtd index build`: its flags are derived from these fields (index/configs.py); see `build_index`."""

    artifacts: Path = opt(help="folder with embedder.onnx and model.json")
    catalog: Path = opt(help="LookBook folder, catalog CSV (product_id,image[,title,category]) or folder of images")
    out: str = opt(help="where to write the catalog, replacing it atomically: an index folder, or a Milvus location "
                        "(milvus:///abs/path/catalog.db[/collection]: Milvus Lite; milvus://host:19530/collection)")
    kind: Kind = opt("auto", "auto: chosen by catalog size (index/factory.py); flat: exact; hnsw / ivf: approximate "
                             "(aliases of the factory strings Flat, HNSW32,Flat, IVF{4 sqrt n},Flat)")
    factory: str | None = opt(None, "any FAISS index-factory string, inner product (e.g. IVF4096,Flat, "
                                    "IVF65536_HNSW32,Flat, OPQ64,IVF4096,PQ64x4fs,RFlat); overrides --kind")
    batch_size: int = opt(32, "images per embedder call")
    size: int | None = opt(None, "image size S when the artifacts have no model.json (otherwise it must agree)")
    nprobe: int = opt(DEFAULT_NPROBE, "IVF: inverted lists scanned per query (recorded; `rtd index search` can override)")
    ef_search: int = opt(DEFAULT_EF_SEARCH, "HNSW (and an IVF's HNSW quantizer): search breadth per query")
    backend: str | None = opt(None, "inference backend, onnxruntime or openvino (index/backends.py); none: "
                                    "$RTD_BACKEND, else onnxruntime. The query side must run the same embedder")
    precision: str | None = opt(None, f"{PRECISION_HELP}; none: $RTD_PRECISION, else auto")


def _title(row: dict[str, str]) -> str | None:
    """The CSV's title, else 'colour pattern category' (the synthetic set's products.csv), else None."""
    if (row.get("title") or "").strip():
        return row["title"].strip()
    words = [(row.get(c) or "").strip() for c in ("colour", "pattern", "category")]
    return " ".join(w for w in words if w) or None


def _scan_csv(path: Path) -> tuple[list[ProductMeta], list[str]]:
    rows = read_csv_rows(path)
    columns = set(rows[0]) if rows else set()
    id_col = next((c for c in ("product_id", "id") if c in columns), None)
    image_col = next((c for c in ("image", "product_image") if c in columns), None)
    if id_col is None or image_col is None:
        raise UserError(f"{path}: a catalog CSV needs a product_id (or id) and an image (or product_image) column")
    products, skipped, seen = [], [], set()
    for line, row in enumerate(rows, start=2):
        pid, image = (row[id_col] or "").strip(), (row[image_col] or "").strip()
        if not pid or not image:
            skipped.append(f"{path.name}:{line}: empty {id_col} or {image_col}")
        elif pid in seen:
            skipped.append(f"{path.name}:{line}: product {pid} listed again; kept the first")
        else:
            seen.add(pid)
            category = (row.get("category") or "").strip() or None
            products.append(ProductMeta(pid, _title(row), category, str((path.parent / image).resolve())))
    return products, skipped


def _scan_lookbook(folder: Path, files: list[Path]) -> tuple[list[ProductMeta], list[str]]:
    info: dict[str, dict[str, str]] = {}
    for csv_path in (folder / PRODUCTS_CSV, folder.parent / PRODUCTS_CSV):
        if csv_path.is_file():
            info = read_products_csv(csv_path)
            break
    products, skipped, seen = [], [], set()
    for path in files:
        pid = lookbook_product_id(path.name)
        if pid in seen:
            skipped.append(f"{path.name}: a second product image of product {pid}; kept the first")
            continue
        seen.add(pid)
        row = info.get(pid, {})
        category = (row.get("category") or "").strip() or None
        products.append(ProductMeta(pid, _title(row), category, str(path.resolve())))
    return products, skipped


def scan_catalog(catalog: Path) -> tuple[list[ProductMeta], list[str]]:
    """The products of a catalog (LookBook folder, CSV, or image folder) and the entries skipped, with why."""
    catalog = Path(catalog)
    if not catalog.exists():
        raise UserError(f"catalog not found: {catalog}")
    if catalog.is_file():
        if catalog.suffix.lower() != ".csv":
            raise UserError(f"{catalog}: expected a folder of images or a .csv file")
        products, skipped = _scan_csv(catalog)
    else:
        files = sorted(p for p in catalog.iterdir() if p.is_file())
        lookbook = [p for p in files if lookbook_product_id(p.name)]
        if lookbook:
            products, skipped = _scan_lookbook(catalog, lookbook)
        else:
            images = [p for p in files if is_image_file(p)]
            products = [ProductMeta(p.stem, None, None, str(p.resolve())) for p in images]
            skipped = []
            stems = [p.product_id for p in products]
            if len(set(stems)) != len(stems):  # a.jpg and a.png: the first (sorted) wins
                first: dict[str, ProductMeta] = {}
                for p in products:
                    if p.product_id in first:
                        skipped.append(f"{Path(p.image_path).name}: product id {p.product_id} already taken")
                    first.setdefault(p.product_id, p)
                products = list(first.values())
    if not products:
        raise UserError(f"{catalog}: no catalog images found (LookBook *_CLEAN1_* files, a CSV, or image files)")
    return products, skipped


def catalog_root(catalog: Path) -> Path:
    """The folder a catalog's image paths are stored relative to: the catalog folder, or the CSV's folder."""
    catalog = Path(catalog).resolve()
    return catalog.parent if catalog.is_file() else catalog


def relative_image_path(image_path: str, root: Path) -> str:
    """An image's path relative to the catalog root (POSIX separators), or the absolute path when outside it."""
    path = Path(image_path).resolve()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _try_preprocess(path: str, size: int) -> np.ndarray | str:
    """(3, S, S) in [-1, 1], or the reason the image cannot be used."""
    try:
        return preprocess(path, size)
    except ImageError as e:
        return e.reason


def build_index(artifacts: Path, catalog: Path, out: str | Path, kind: str = factories.AUTO, batch_size: int = 32,
                size: int | None = None, *, factory: str | None = None, nprobe: int = DEFAULT_NPROBE,
                ef_search: int = DEFAULT_EF_SEARCH, backend: Backend | None = None) -> dict:
    """Embed every catalog image with ARTIFACTS/embedder.onnx (then the head's catalog side, when the artifacts
    have a head) and write the catalog to OUT (an index folder or a Milvus location); a summary."""
    start = time.perf_counter()
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    if kind not in (factories.AUTO, *KINDS):
        raise UserError(f"unknown index kind {kind!r}; choose one of {factories.AUTO}, {', '.join(KINDS)} "
                        f"(or --factory STRING)")
    if factory is not None and kind != factories.AUTO:
        raise UserError(f"--kind {kind} and --factory {factory!r} both name the index: give one")
    spec = factory if factory is not None else kind
    where = parse_location(out)  # a malformed location fails before anything is embedded
    if where.engine == "file" and where.path.exists() and not where.path.is_dir():  # type: ignore[union-attr]
        raise UserError(f"index output is a file, not a folder: {where.path}")
    found = current_artifacts(artifacts)  # the current version of an exported folder (index/artifacts.py)
    folder, model = found if found is not None else (Path(artifacts), {})
    onnx_path = folder / "embedder.onnx"
    if not onnx_path.is_file():
        raise UserError(f"no embedder.onnx in {artifacts} (run `rtd export` first)")
    sha256 = sha256_file(onnx_path)
    model_spec = model.get("embedder", {})
    if model_spec.get("onnx_sha256") not in (None, sha256):
        raise UserError(f"{onnx_path} is not the embedder model.json describes (sha256 differs); re-run `rtd export`")
    model_size = model.get("preprocessing", {}).get("size")
    if model_size is not None and size is not None and size != model_size:
        raise UserError(f"--size {size} contradicts the artifacts' preprocessing size {model_size}")
    backend = backend if backend is not None else from_env()  # $RTD_BACKEND, else onnxruntime fp32
    embedder = OnnxEmbedder(onnx_path, backend=backend)
    log.info("embedding the catalog on %s %s", backend.name, backend.precision)
    size = model_size or size or embedder.size
    if size is None:
        raise UserError("cannot tell the image size: no model.json in the artifacts and no --size")
    if embedder.size is not None and embedder.size != size:
        raise UserError(f"{onnx_path} takes {embedder.size} px images but the preprocessing size is {size}")
    head = read_head(read_artifacts(artifacts)) if (folder / HEAD_JSON).is_file() else None
    head_catalog = head.sessions(backend=backend)[1] if head is not None else None
    dim = int(head.doc["embedding_dim"]) if head is not None else embedder.dim
    if dim:
        factories.check(spec, dim)  # a bad factory string fails before the catalog is embedded

    def embed(batch: np.ndarray) -> np.ndarray:
        features = embedder(batch)
        return head_catalog(features) if head_catalog is not None else features

    products, skipped = scan_catalog(catalog)
    kept: list[ProductMeta] = []
    vectors: list[np.ndarray] = []
    with ThreadPoolExecutor(DECODE_THREADS) as pool, tqdm(total=len(products), desc="embedding catalog", unit="img") as bar:
        for first in range(0, len(products), batch_size):
            chunk = products[first:first + batch_size]
            arrays = list(pool.map(_try_preprocess, [p.image_path for p in chunk], [size] * len(chunk)))
            good = [(p, a) for p, a in zip(chunk, arrays, strict=True) if isinstance(a, np.ndarray)]
            skipped += [f"{p.product_id}: {a}" for p, a in zip(chunk, arrays, strict=True) if isinstance(a, str)]
            if good:
                kept += [p for p, _ in good]
                vectors.append(embed(np.stack([a for _, a in good])))  # (b, D), or (b, E) through the head
            bar.update(len(chunk))
    if not kept:
        raise UserError(f"{catalog}: none of the {len(products)} catalog images could be read ({skipped[0]})")
    matrix = np.concatenate(vectors)  # (N, D)
    norms = np.linalg.norm(matrix, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-3):
        raise UserError(f"{head.folder / 'head_catalog.onnx' if head else onnx_path} does not output unit vectors (norms {norms.min():.3f}..{norms.max():.3f})")

    name = model_spec.get("backbone") or "unknown"
    root = catalog_root(catalog)
    index = build_catalog(out, [replace(p, image_path=relative_image_path(p.image_path, root)) if p.image_path else p
                                for p in kept], matrix, embedder_name=name, embedder_sha256=sha256,
                          head=head.describe() if head is not None else None, factory=spec, nprobe=nprobe,
                          ef_search=ef_search, catalog_root=str(root), recall_k=RECALL_K,
                          embedder_backend=backend.describe())
    manifest = index.manifest()
    return {"out": str(where), "engine": where.engine, "count": manifest["count"], "kind": manifest["kind"],
            "factory": manifest["factory"], "dim": index.dim, "size": size, "embedder": {"name": name, "sha256": sha256},
            "head": index.head, "params": manifest["params"], "catalog_root": str(root), "recall": index.recall,
            "backend": backend.describe(), "skipped": skipped, "seconds": round(time.perf_counter() - start, 2)}
