"""What `rtd eval` measures (Sec. 5, Tables 1 and 2): the query kinds, the test set, the gallery and the ranks.

Protocol (Sec. 5): the gallery is the test split's product images; every test photo is a query, in every
kind the artifacts answer, side by side in one run (`--query all`):
  generated  the generated product image (the paper's method), frozen embedder features;
  photo      the photo itself (the no-generation baseline), frozen embedder features;
  head       with a retrieval head (`rtd fit-head`), the head's query (fused, generated or photo).
The frozen kinds are the paper's Table 1 protocol: a pipeline opened without the head, its gallery the
embedder's features. The head's kind has its own pipeline and its own gallery, embedded through the head's
catalog side (`Pipeline.embed_catalog`), as `rtd index build` does. A query is a hit at K when its true
product is in the top K by cosine; the catalog ranks the whole gallery, so every rank (and its ties) is
known. Recall@K comes with a 95 % bootstrap interval over products (training/metrics.py
`bootstrap_recall`: a product's photos are not independent queries) and per product category (R@1, R@10).
RMSE and SSIM compare a query image with the true product image at S (the generated image for the kinds
that use it, else the photo).

With `--catalog LOCATION` (an index folder or a Milvus location) the gallery is that prebuilt catalog instead,
searched with its own index (exact or approximate) among all its products: it must hold every test product,
only the kinds in its vector space are evaluated, and only the first max(K) hits of each query are read, so a
true product past them ranks ">K" (a miss at every K reported; its median rank is then unknown).
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from rtdgan.index.catalog.base import CatalogEngine, ProductMeta, catalog_image, check_space
from rtdgan.index.catalog.engines import open_catalog
from rtdgan.index.catalog.file import Catalog
from rtdgan.index.configs import opt
from rtdgan.index.errors import ImageError, UserError
from rtdgan.index.images import preprocess
from rtdgan.index.pipeline import FROZEN_KINDS, Pipeline
from rtdgan.index.runtime.artifacts import Artifacts
from rtdgan.index.runtime.crop import Cropper, has_crop, read_crop
from rtdgan.index.runtime.head import HeadInfo
from rtdgan.index.runtime.onnx import OnnxGenerator
from rtdgan.training import registry
from rtdgan.training.data import ProductRecord, load_records, load_split

EVAL_KINDS = ("generated", "photo", "head")  # a report's row order; "head" is the retrieval head's query
QUERY_CHOICES = ("all", *EVAL_KINDS, "both")  # both: generated and photo (the frozen pair, the former default)
CATEGORY_KS = (1, 10)  # the per-category table's cut-offs
NO_CATEGORY = "(none)"  # a product without a category (no products.csv / manifest column)
CONFIDENCE = 0.95


@dataclass(frozen=True)
class EvalConfig:
    """`rtd eval`: which artifacts, which test split, where to write, which K and queries."""

    artifacts: Path = opt(help="folder from `rtd export` (generator.onnx, embedder.onnx, model.json)")
    data: Path = opt(help="data folder (the split was made from it)")
    out: Path = opt(help="report folder (report.json, report.md, recall.png, samples.png, queries.csv)")
    split: Path | None = opt(None, "split file from `rtd data split`; its test part is evaluated (default: every "
                             "product of --data, e.g. a held-out shop)")
    catalog: str | None = opt(None, "rank against this prebuilt catalog (an index folder, milvus:///abs.db[/coll] "
                              "or milvus://host:19530/coll) instead of the test products alone: its index, exact or "
                              "approximate, and its other products are what is measured; it must hold every test "
                              "product. Only ranks up to the largest K are known there", metavar="LOCATION")
    ks: tuple[int, ...] = opt((1, 5, 10, 20, 60, 100), "Recall@K cut-offs, e.g. 1,5,10,20,60,100", flag="--k")
    query: Literal["all", "generated", "photo", "head", "both"] = opt(
        "all", "all: every kind the artifacts answer, side by side (generated and photo with the frozen embedder, "
        "and the retrieval head's query when there is one); generated: the paper's method; photo: the "
        "no-generation baseline; head: the head's query only; both: generated and photo")
    limit: int | None = opt(None, "evaluate the first N query photos only (spread over products)")
    batch_size: int = opt(32, "images per onnxruntime call")
    samples: int = opt(8, "rows of the sample grid (samples.png)")
    bootstrap: int = opt(1000, "product resamples for the 95 % intervals of Recall@K")
    seed: int = opt(0, "seed of the bootstrap resampling")


def validate(cfg: EvalConfig) -> None:
    """UserError (one line) for options that cannot run."""
    if cfg.query not in QUERY_CHOICES:
        raise UserError(f"--query must be one of {', '.join(QUERY_CHOICES)}, got {cfg.query!r}")
    if not cfg.ks or min(cfg.ks) < 1:
        raise UserError(f"--k needs positive integers, got {cfg.ks}")
    if cfg.batch_size < 1 or cfg.samples < 0 or cfg.bootstrap < 1 or (cfg.limit is not None and cfg.limit < 1):
        raise UserError("--batch-size, --bootstrap and --limit must be >= 1, --samples >= 0")


def method_label(model: dict, kind: str, head: HeadInfo | None = None) -> str:
    """Table row name: 'rtdGAN (N=3)', 'pix2pix', 'PLDT' (training/registry.py), the photo baseline, or the
    head's query: 'head fused, rtdGAN (N=3)' (the generator named when the query uses its image), 'head photo'."""
    generator = registry.report_label(model.get("generator", {}))
    if kind == "photo":
        return "photo (no generation)"
    if kind == "head":
        assert head is not None
        return f"head {head.mode}, {generator}" if "generated" in head.query_inputs else f"head {head.mode}"
    return generator


class GenerateOnce:
    """The generator session, remembering its last batch: each photo batch is generated once, however many
    kinds' pipelines (the frozen generated query, a fused or generated head) query with it."""

    def __init__(self, session: OnnxGenerator) -> None:
        self.session = session
        self._last: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, photos: np.ndarray) -> np.ndarray:
        if self._last is None or self._last[0] is not photos:
            self._last = (photos, self.session(photos))
        return self._last[1]


@dataclass(frozen=True)
class EvalKind:
    """One row of the report: the pipeline that answers it and how it is asked."""

    method: str  # "generated", "photo" or "head" (report.json's "method")
    pipeline: Pipeline
    query: str  # the pipeline's query kind (index/pipeline.py QUERY_KINDS)
    image: str  # the query image RMSE and SSIM compare with the true product: "generated" or "photo"
    label: str


def open_kinds(cfg: EvalConfig) -> list[EvalKind]:
    """The kinds `cfg.query` asks for, each with its pipeline; UserError (one line) for a head that is not there.

    generated and photo share a pipeline without the head (the paper's protocol, even when the artifacts have
    one); the head's kind has its own. Both use the same embedder and generator sessions, and the generator
    remembers its last batch (`GenerateOnce`), so a photo batch is generated once for all kinds."""
    base = Pipeline.open(cfg.artifacts, generator=cfg.query != "photo", head=cfg.query in ("all", "head"), crop=False)
    art, head = base.artifacts, base.head
    if cfg.query == "head" and head is None:
        raise UserError(f"--query head: {cfg.artifacts} has no retrieval head (head.json); train one with "
                        "`rtd fit-head`, or evaluate generated or photo")
    names = {"all": (*FROZEN_KINDS, "head") if head else FROZEN_KINDS, "both": FROZEN_KINDS}.get(cfg.query, (cfg.query,))
    generates = "generated" in names or ("head" in names and head is not None and "generated" in head.query_inputs)
    generator = GenerateOnce(base.generator) if generates and base.generator is not None else None
    kinds: list[EvalKind] = []
    if set(names) & set(FROZEN_KINDS):
        frozen = Pipeline(art, generator, base.embedder)  # type: ignore[arg-type]  # GenerateOnce: a generator session
        kinds += [EvalKind(n, frozen, n, n, method_label(art.model, n)) for n in FROZEN_KINDS if n in names]
    if "head" in names and head is not None:
        headed = Pipeline(art, generator, base.embedder, None, head,  # type: ignore[arg-type]
                          (base.head_query, base.head_catalog))  # type: ignore[arg-type]
        image = "generated" if "generated" in head.query_inputs else "photo"
        kinds.append(EvalKind("head", headed, head.mode, image, method_label(art.model, "head", head)))
    return kinds


def test_records(cfg: EvalConfig) -> list[ProductRecord]:
    """The products evaluated: the split's test part, or every product of --data without a split."""
    if cfg.split is None:
        return load_records(cfg.data).records
    split = load_split(cfg.split)
    if split.data.resolve() != Path(cfg.data).resolve():
        raise UserError(f"{cfg.split} was made from {split.data}, not from --data {cfg.data}")
    if not split.test:
        raise UserError(f"{cfg.split}: the test split is empty")
    return split.test


def person_crop(art: Artifacts) -> Cropper | None:
    """The artifacts' person crop (crop.json), which cuts each query photo before every kind; None without one.
    (The kinds' pipelines have no crop stage of their own, so no photo is cut twice.)"""
    return Cropper(read_crop(art)) if has_crop(art) else None


def query_list(products: list[ProductRecord], limit: int | None) -> list[tuple[Path, int]]:
    """(photo, product index) for every test photo, round-robin over products so --limit spans many."""
    depth = max(len(r.photos) for r in products)
    queries = [(r.photos[j], i) for j in range(depth) for i, r in enumerate(products) if j < len(r.photos)]
    return queries[:limit] if limit else queries


def to_u8(batch: np.ndarray) -> np.ndarray:
    """[-1, 1] -> uint8; lossless for preprocess() output, which comes from 8-bit pixels."""
    return np.clip(np.rint((batch + 1.0) * 127.5), 0, 255).astype(np.uint8)


def from_u8(batch: np.ndarray) -> np.ndarray:
    """uint8 -> [-1, 1] float32, the inverse of `to_u8`."""
    return batch.astype(np.float32) / 127.5 - 1.0


def gallery_catalog(pipeline: Pipeline, products: list[ProductRecord], vectors: np.ndarray) -> Catalog:
    """The test products as a real, exact, in-memory catalog: the service's search path over the gallery.

    `vectors` come from this pipeline's `embed_catalog` (through its head's catalog side when it has one)."""
    art = pipeline.artifacts
    head = pipeline.head.describe() if pipeline.head is not None else None
    catalog = Catalog.create(vectors.shape[1], art.embedder_name, art.embedder_sha256, "flat", head=head)
    catalog.add([ProductMeta(r.product_id, category=r.category) for r in products], vectors)
    return catalog


def catalog_kinds(cfg: EvalConfig, kinds: list[EvalKind]) -> tuple[CatalogEngine, list[EvalKind]]:
    """--catalog: the prebuilt catalog, set as the gallery of the kinds whose vectors live in its space (the
    frozen embedder's, or the head's catalog side: `rtd index build` recorded which); UserError when none do."""
    assert cfg.catalog is not None
    catalog = open_catalog(cfg.catalog)  # checked per kind below: a catalog holds one space
    manifest = catalog.manifest()
    fits, why = [], []
    for kind in kinds:
        head = kind.pipeline.head
        try:
            check_space(manifest, Path(cfg.catalog), kind.pipeline.artifacts.embedder_sha256,
                        head.sha256 if head is not None else None)
            fits.append(kind)
        except UserError as e:
            why.append(str(e))
    if not fits:
        raise UserError(f"--catalog: no query of {cfg.artifacts} is in its space ({why[0]})")
    if len(fits) < len(kinds):
        print(f"rtd eval: --catalog {cfg.catalog} holds {'head' if manifest.get('head') else 'frozen embedder'} "
              f"vectors: evaluating {', '.join(k.method for k in fits)} only", file=sys.stderr)
    for pipeline in {id(k.pipeline): k.pipeline for k in fits}.values():
        pipeline.catalog = catalog  # type: ignore[assignment]  # any engine answers search()
    return catalog, fits


def missing_products(catalog: CatalogEngine, products: list[ProductRecord], where: str) -> None:
    """UserError unless the catalog holds every test product (a missing one could never be found: recall
    would count it as a miss of the model)."""
    missing = [r.product_id for r in products if catalog.get(r.product_id) is None]
    if missing:
        raise UserError(f"--catalog {where}: {len(missing)} of the {len(products)} test products are not in it "
                        f"(e.g. {', '.join(missing[:3])}); build it from a catalog that has them, or evaluate "
                        f"without --catalog")


def hit_ranks(hits: list[list], truth_ids: list[str], depth: int) -> np.ndarray:
    """1-based rank of each query's true product in its hit list (the catalog's order), or depth + 1 when it is
    not among the first `depth`: beyond the deepest K, ranks are not known (the catalog ranked only those)."""
    ranks = np.full(len(hits), depth + 1, np.int64)
    for q, (row, pid) in enumerate(zip(hits, truth_ids, strict=True)):
        for position, hit in enumerate(row[:depth]):
            if hit.product_id == pid:
                ranks[q] = position + 1
                break
    return ranks


class CatalogTiles:
    """The sample grid's tiles of catalog products that are not test products, read from the catalog's
    image files (rtdgan.index.catalog.engines.catalog_image); a grey tile when the file is not on this machine."""

    def __init__(self, catalog: CatalogEngine, size: int, first: int) -> None:
        self.catalog, self.size, self.first = catalog, size, first
        self.index: dict[str, int] = {}
        self.ids: list[str] = []  # the product of each tile
        self.tiles: list[np.ndarray] = []

    def __call__(self, product_id: str) -> int:
        """The tile's row in the grid's image array (after the `first` test products)."""
        if product_id not in self.index:
            meta = self.catalog.get(product_id)
            root = Path(self.catalog.catalog_root) if self.catalog.catalog_root else None
            file = catalog_image(meta, root, self.catalog.folder) if meta is not None else None
            tile = np.zeros((3, self.size, self.size), np.float32)  # mid grey in [-1, 1]
            if file is not None:
                with contextlib.suppress(ImageError):
                    tile = preprocess(file, self.size)
            self.index[product_id] = self.first + len(self.tiles)
            self.ids.append(product_id)
            self.tiles.append(to_u8(tile[None])[0])
        return self.index[product_id]


def gallery_doc(catalog: CatalogEngine | None, location: str | None, products: int, depth: int) -> dict:
    """report.json's account of what was ranked: the test products (exact, every rank known), or a catalog."""
    if catalog is None:
        return {"kind": "test products", "products": products, "index": "Flat (exact, in memory)", "ranks": "all"}
    manifest = catalog.manifest()
    return {"kind": "catalog", "location": location, "products": len(catalog), "index": manifest.get("factory"),
            "params": manifest.get("params"), "recall_at_build": manifest.get("recall"),
            "ranks": f"first {depth} (beyond: unknown, counted as misses at every K up to {depth})"}


def score_matrix(hits: list[list], column: dict[str, int]) -> np.ndarray:
    """(Q, P) cosine scores from full-gallery hit lists (every product ranked), for ranks with ties."""
    scores = np.full((len(hits), len(column)), -np.inf, np.float32)
    for q, row in enumerate(hits):
        for hit in row:
            scores[q, column[hit.product_id]] = hit.score
    return scores


def category_of(record: ProductRecord) -> str:
    return record.category or NO_CATEGORY



def chance_recall(products: int, ks: tuple[int, ...]) -> dict[str, float]:
    """Recall@K of a random ranking of `products` gallery items: K / P (a floor to read the others against)."""
    return {str(k): min(1.0, k / products) for k in ks}

