"""`rtd eval`: RMSE, SSIM and Recall@K of exported artifacts over a test split (Sec. 5, Tables 1 and 2).

Runs exactly what the service runs: the one search pipeline (index/pipeline.py) — the shared preprocessing
at the artifacts' size S, generator.onnx and embedder.onnx (CUDA when onnxruntime has it), and a real
`Catalog` (exact FAISS + SQLite, in memory) as the gallery. No torch.

Protocol (Sec. 5): the gallery is the test split's product images; every test photo is a query, in every
kind the artifacts answer, side by side in one run (`--query all`):
  generated  the generated product image (the paper's method), frozen embedder features;
  photo      the photo itself (the no-generation baseline), frozen embedder features;
  head       with a retrieval head (issue #13, `rtd fit-head`), the head's query (fused, generated or photo).
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

Writes into OUT: report.json, report.md (Table 1's form, intervals, categories), recall.png and recall.svg
(Recall@K curves with their intervals, training/plots.py), samples.png (photo | generated | ground truth | top-5 of the default kind, the true product framed
in green, its rank and score written under the row) and queries.csv. `compare_reports` merges several
report.json files into one table and one plot (recall.png, recall.svg).
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from rtdgan.index.catalog.base import CatalogEngine, ProductMeta, catalog_image, check_space
from rtdgan.index.catalog.engines import open_catalog
from rtdgan.index.catalog.file import Catalog
from rtdgan.index.configs import opt
from rtdgan.index.errors import ImageError, UserError
from rtdgan.index.images import preprocess, preprocess_many, to_image
from rtdgan.index.pipeline import FROZEN_KINDS, Pipeline
from rtdgan.index.runtime.artifacts import Artifacts
from rtdgan.index.runtime.crop import Cropper, has_crop, query_photos, read_crop
from rtdgan.index.runtime.head import HeadInfo
from rtdgan.index.runtime.onnx import OnnxGenerator
from rtdgan.training import registry
from rtdgan.training.data import ProductRecord, load_records, load_split
from rtdgan.training.metrics import bootstrap_recall, recall_at_k, rmse, ssim, true_ranks
from rtdgan.training.plots import Curve, recall_plot, report_curve

REPORT_FORMAT = 1
TOP_SHOWN = 5  # retrieved products per row of the sample grid
DECODE_THREADS = 4  # PIL decodes with the GIL released
HIT, MISS = (0, 160, 60), (200, 200, 200)
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


def _u8(batch: np.ndarray) -> np.ndarray:
    """[-1, 1] -> uint8; lossless for preprocess() output, which comes from 8-bit pixels."""
    return np.clip(np.rint((batch + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _f32(batch: np.ndarray) -> np.ndarray:
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
            self.tiles.append(_u8(tile[None])[0])
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


def evaluate(cfg: EvalConfig) -> dict:
    """Evaluate the artifacts on the split's test photos; writes the report files and returns report.json."""
    validate(cfg)
    test = test_records(cfg)
    kinds = open_kinds(cfg)
    catalog, kinds = catalog_kinds(cfg, kinds) if cfg.catalog is not None else (None, kinds)
    depth = max(*cfg.ks, *CATEGORY_KS)  # with --catalog, how far down each query's ranking is read
    pipelines = list({id(k.pipeline): k.pipeline for k in kinds}.values())  # one gallery per vector space
    art = pipelines[0].artifacts
    S, model = art.size, art.model
    head = next((k.pipeline.head for k in kinds if k.method == "head"), None)
    shown_kind = kinds[-1] if head is not None else kinds[0]  # the default query: the head's, else generated
    cropper = person_crop(art)  # every kind sees the photo as `/search` does: cut once, here
    backbone = model["embedder"].get("backbone", "unknown")
    skipped: list[str] = []
    start = time.perf_counter()

    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        # ---- gallery: the test products, embedded once per pipeline; kept as uint8 (lossless) for RMSE/SSIM and the grid
        products, gallery = [], []
        vectors: list[list[np.ndarray]] = [[] for _ in pipelines]
        for first in range(0, len(test), cfg.batch_size):
            chunk = test[first:first + cfg.batch_size]
            arrays = preprocess_many(pool, [r.product_image for r in chunk], S)
            good = [(r, a) for r, a in zip(chunk, arrays, strict=True) if isinstance(a, np.ndarray)]
            skipped += [f"product {r.product_id}: {a}" for r, a in zip(chunk, arrays, strict=True) if isinstance(a, str)]
            if good:
                batch = np.stack([a for _, a in good])  # (b, 3, S, S)
                products += [r for r, _ in good]
                gallery.append(_u8(batch))
                for p, pipeline in enumerate(pipelines):
                    if catalog is None:  # with --catalog the gallery is the catalog's, embedded already
                        vectors[p].append(pipeline.embed_catalog(batch))  # (b, D), or (b, E) through a head
        if not products:
            raise UserError(f"none of the {len(test)} test product images could be read")
        gallery_u8 = np.concatenate(gallery)  # (P, 3, S, S)
        if catalog is None:
            for pipeline, vecs in zip(pipelines, vectors, strict=True):
                pipeline.catalog = gallery_catalog(pipeline, products, np.concatenate(vecs))
        else:
            missing_products(catalog, products, str(cfg.catalog))
        column = {r.product_id: i for i, r in enumerate(products)}
        tiles = CatalogTiles(catalog, S, len(products)) if catalog is not None else None

        # ---- queries: every test photo, in every kind (the generator runs once per batch for all of them)
        queries = query_list(products, cfg.limit)
        kept: list[tuple[Path, int]] = []
        per = {k.method: {"rank": [], "rmse": [], "ssim": []} for k in kinds}
        shown: list[dict] = []  # the first cfg.samples queries, for the grid
        t_queries = time.perf_counter()
        with tqdm(total=len(queries), desc="eval", unit="query", dynamic_ncols=True) as bar:
            for first in range(0, len(queries), cfg.batch_size):
                chunk = queries[first:first + cfg.batch_size]
                arrays = query_photos(pool, [p for p, _ in chunk], S, cropper)  # cut to the person, as /search
                skipped += [a for a in arrays if isinstance(a, str)]
                good = [(q, a) for q, a in zip(chunk, arrays, strict=True) if isinstance(a, np.ndarray)]
                bar.update(len(chunk))
                if not good:
                    continue
                kept += [q for q, _ in good]
                photos = np.stack([a for _, a in good])  # (b, 3, S, S)
                truth = np.array([i for (_, i), _ in good])  # (b,)
                target = _f32(gallery_u8[truth])  # (b, 3, S, S) ground-truth product images
                images = {"photo": photos}
                quality: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # image name -> (RMSE, SSIM), (b,) each
                for kind in kinds:
                    # Without --catalog every product is ranked (ranks and ties all known); with it, the top `depth`.
                    found = kind.pipeline.query(photos, len(products) if catalog is None else depth, query=kind.query)
                    if found.generated is not None:
                        images["generated"] = found.generated  # (b, 3, S, S)
                    if kind.image not in quality:
                        quality[kind.image] = rmse(images[kind.image], target), ssim(images[kind.image], target)
                    if catalog is None:
                        scores = score_matrix(found.hits, column)  # (b, P) cosine
                        ranks = true_ranks(scores, truth)
                    else:
                        ranks = hit_ranks(found.hits, [products[i].product_id for i in truth], depth)
                    per[kind.method]["rank"].append(ranks)
                    per[kind.method]["rmse"].append(quality[kind.image][0])
                    per[kind.method]["ssim"].append(quality[kind.image][1])
                    if kind is shown_kind:
                        for j in range(min(len(good), cfg.samples - len(shown))):
                            if tiles is None:
                                top = np.argsort(-scores[j], kind="stable")[:TOP_SHOWN]
                                top_ids, top_scores = top.tolist(), scores[j, top].tolist()
                                score = float(scores[j, truth[j]])
                            else:  # catalog products outside the test set get tiles of their own
                                row = found.hits[j][:TOP_SHOWN]
                                top_ids = [column[h.product_id] if h.product_id in column else tiles(h.product_id)
                                           for h in row]
                                top_scores = [h.score for h in row]
                                own = [h.score for h in found.hits[j] if h.product_id == products[truth[j]].product_id]
                                score = float(own[0]) if own else float("nan")
                            shown.append({"path": str(good[j][0][0]), "photo": photos[j],
                                          "generated": images.get("generated", photos)[j],
                                          "truth": int(truth[j]), "top": top_ids, "top_scores": top_scores,
                                          "rank": int(ranks[j]), "score": score})
        seconds = time.perf_counter() - t_queries
    if not kept:
        raise UserError(f"none of the {len(queries)} test photos could be read")
    qps = len(kept) / max(seconds, 1e-9)
    providers = pipelines[0].providers
    generates = any(p.generator is not None for p in pipelines)
    print(f"rtd eval: {len(kept)} queries x {len(kinds)} kind(s) in {seconds:.1f} s = {qps:.1f} queries/s "
          f"({'generator + ' if generates else ''}embedder on {providers[0]})", file=sys.stderr)

    grid_ids = [r.product_id for r in products] + (tiles.ids if tiles is not None else [])
    grid_u8 = np.concatenate([gallery_u8, np.stack(tiles.tiles)]) if tiles is not None and tiles.tiles else gallery_u8
    owners = np.array([i for _, i in kept])  # (Q,) each query's true product
    category = np.array([category_of(products[i]) for i in owners])  # (Q,)
    names = sorted({str(c) for c in category})
    columns = {k: {m: np.concatenate(v) for m, v in per[k].items()} for k in per}
    known = catalog is None  # every rank known; with --catalog only those up to `depth` (depth + 1: beyond)
    results = []
    for kind in kinds:
        c = columns[kind.method]
        ci = bootstrap_recall(c["rank"], owners, cfg.ks, cfg.bootstrap, cfg.seed, CONFIDENCE)
        median = float(np.median(c["rank"]))
        results.append({
            "method": kind.method, "query": kind.query, "label": kind.label, "embedder": backbone,
            "head": kind.pipeline.head.describe() if kind.pipeline.head is not None else None,
            "rmse": float(c["rmse"].mean()), "ssim": float(c["ssim"].mean()),
            "recall": {str(k): v for k, (v, _, _) in ci.items()},
            "recall_ci": {str(k): [lo, hi] for k, (_, lo, hi) in ci.items()},
            "median_rank": median if known or median <= depth else None,  # None: beyond the ranks read
            "mean_rank": float(c["rank"].mean()) if known else None,
            "by_category": {name: {str(k): v for k, v in recall_at_k(c["rank"][category == name], CATEGORY_KS).items()}
                            for name in names},
        })
    report = {
        "format_version": REPORT_FORMAT,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "model": model,
        "embedder": {"backbone": backbone, "onnx_sha256": art.embedder_sha256,
                     "dim": pipelines[0].embedder.dim or model["embedder"].get("dim")},  # the frozen features' D
        "head": head.describe() if head is not None else None,
        "test_set": {"split": str(cfg.split) if cfg.split is not None else f"all of {cfg.data}",
                     "products": len(products), "queries": len(kept),
                     "crop": cropper.info.describe() if cropper is not None else None,
                     "gallery": gallery_doc(catalog, cfg.catalog, len(products), depth),
                     "skipped": skipped,
                     "chance_recall": chance_recall(len(catalog) if catalog is not None else len(products), cfg.ks),
                     "categories": {name: {"products": sum(category_of(r) == name for r in products),
                                           "queries": int((category == name).sum())} for name in names}},
        "ks": list(cfg.ks),
        "bootstrap": {"unit": "product", "resamples": cfg.bootstrap, "seed": cfg.seed, "confidence": CONFIDENCE,
                      "interval": "percentile"},
        "samples": {"method": shown_kind.method, "label": shown_kind.label,  # samples.png's rows, as drawn
                    "rows": [{"photo": s["path"], "product": products[s["truth"]].product_id,
                              "rank": s["rank"] if s["rank"] <= depth or known else None,
                              "score": round(s["score"], 6) if s["score"] == s["score"] else None,
                              "top": [grid_ids[i] for i in s["top"]]}
                             for s in shown]},
        "results": results,
        "throughput": {"queries": len(kept), "seconds": round(seconds, 3), "queries_per_s": round(qps, 2),
                       "kinds": len(kinds), "providers": providers,
                       "total_seconds": round(time.perf_counter() - start, 3)},
    }
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (out / "report.md").write_text(report_markdown(report), encoding="utf-8")
    write_queries_csv(out / "queries.csv", kept, products, columns, None if known else depth)
    recall_plot([*map(report_curve, results), chance_curve(report)], out / "recall.png",
                f"Recall@K ({backbone} embeddings, {len(kept)} queries, {len(products)} products)")
    if shown:
        draw_samples(shown, grid_u8, out / "samples.png",
                     f"ranked by: {shown_kind.label}; under the ground truth its rank, under each tile its cosine"
                     + (f" (catalog {cfg.catalog})" if catalog is not None else ""), None if known else depth)
    return report


def chance_recall(products: int, ks: tuple[int, ...]) -> dict[str, float]:
    """Recall@K of a random ranking of `products` gallery items: K / P (a floor to read the others against)."""
    return {str(k): min(1.0, k / products) for k in ks}


def gallery_size(test_set: dict) -> int:
    """How many products were ranked: the test products, or the whole --catalog."""
    return int(test_set.get("gallery", {}).get("products", test_set["products"]))


def chance_curve(report: dict) -> Curve:
    """The chance line of a report's plot."""
    chance = report["test_set"]["chance_recall"]
    return Curve(f"chance (K / {gallery_size(report['test_set'])})", [int(k) for k in chance], list(chance.values()),
                 kind="chance")


def rank_text(rank: int, depth: int | None) -> str:
    """A rank as written: '7', or '>60' past the deepest rank read (`depth`, with --catalog)."""
    return f">{depth}" if depth is not None and rank > depth else str(int(rank))


def write_queries_csv(path: Path, queries: list[tuple[Path, int]], products: list[ProductRecord],
                      columns: dict[str, dict[str, np.ndarray]], depth: int | None = None) -> None:
    """One row per query: photo, product id, category, and per kind the true product's rank ('>K' past the
    deepest rank read, with --catalog), RMSE and SSIM."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["photo", "product", "category"] + [f"{m}_{k}" for k in columns for m in ("rank", "rmse", "ssim")])
        for q, (photo, i) in enumerate(queries):
            row = [str(photo), products[i].product_id, products[i].category or ""]
            for c in columns.values():
                row += [rank_text(c["rank"][q], depth), f"{c['rmse'][q]:.6f}", f"{c['ssim'][q]:.6f}"]
            w.writerow(row)


def _table(rows: list[dict], ks: list[int], embedder_column: bool) -> list[str]:
    head = ["Method", "RMSE", "SSIM"] + [f"Recall@{k}" for k in ks] + (["Embedder", "Queries"] if embedder_column else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["label"], f"{r['rmse']:.4f}", f"{r['ssim']:.4f}"]
        cells += [f"{r['recall'][str(k)]:.4f}" if str(k) in r["recall"] else "" for k in ks]
        cells += [r["embedder"], str(r.get("queries", ""))] if embedder_column else []
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _interval(r: dict, k: int, digits: int = 3) -> str:
    """'0.412 [0.371, 0.455]': Recall@K with its bootstrap interval (a report without intervals: the value)."""
    value, ci = r["recall"][str(k)], r.get("recall_ci", {}).get(str(k))
    return f"{value:.3f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else f"{value:.3f}"


def category_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """The per-category table: header and rows (category, products, queries, then R@1 / R@10 per kind)."""
    results, cats = report["results"], report["test_set"].get("categories", {})
    head = ["Category", "Products", "Queries"] + [f"{r['label']} R@{'/'.join(map(str, CATEGORY_KS))}" for r in results]
    rows = [[name, str(c["products"]), str(c["queries"])]
            + [" / ".join(f"{r['by_category'][name][str(k)]:.2f}" for k in CATEGORY_KS) for r in results]
            for name, c in cats.items()]
    return head, rows


def has_categories(report: dict) -> bool:
    """Whether the test products carry categories (products.csv or the manifest's column) worth a table."""
    return any(name != NO_CATEGORY for name in report["test_set"].get("categories", {}))


def summary_text(report: dict) -> str:
    """The compact table `rtd eval` prints: Recall@K with 95 % intervals per kind, then per category."""
    t, b, ks = report["test_set"], report["bootstrap"], report["ks"]
    width = max(len(r["label"]) for r in report["results"]) + 2
    lines = [f"Recall@K [95 % interval, {b['resamples']} bootstrap resamples of the products]: {t['queries']} "
             f"queries, {t['products']} products",
             "".ljust(width) + "".join(f"R@{k}".ljust(20) for k in ks)]
    lines += [r["label"].ljust(width) + "".join(_interval(r, k, 2).ljust(20) for k in ks) for r in report["results"]]
    if has_categories(report):
        head, rows = category_rows(report)
        widths = [max(len(x) for x in column) + 2 for column in zip(head, *rows, strict=True)]
        lines += ["", "R@1 / R@10 by category"]
        lines += ["".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [head, *rows]]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def report_markdown(report: dict) -> str:
    """report.md: the results in the form of the paper's Table 1, with intervals, per category, and what produced them."""
    t, g = report["test_set"], report["model"].get("generator", {})
    b, ks = report["bootstrap"], report["ks"]
    intervals = ["| Method | " + " | ".join(f"Recall@{k}" for k in ks) + " | Median rank |", "|" + "---|" * (len(ks) + 2)]
    deepest = f">{max(*ks, *CATEGORY_KS)}"  # a median past the ranks read (--catalog)
    intervals += ["| " + " | ".join([r["label"], *(_interval(r, k) for k in ks),
                                     deepest if r["median_rank"] is None else f"{r['median_rank']:g}"]) + " |"
                  for r in report["results"]]
    categories: list[str] = []
    if has_categories(report):
        head, rows = category_rows(report)
        categories = ["", f"Recall@{' / Recall@'.join(map(str, CATEGORY_KS))} by the true product's category:", "",
                      "| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]
    head_note = ""
    if report.get("head"):
        h = report["head"]
        head_note = (f" The head rows query through the retrieval head (`rtd fit-head`, mode {h['mode']}, head.json "
                     f"sha256 {h['sha256'][:12]}) against a gallery embedded through its catalog side; the other rows "
                     "use the frozen embedder's features (the paper's protocol). A head row's RMSE and SSIM are those of the "
                     "image its query uses (the generated one when it uses it).")
    gallery = t.get("gallery", {})
    ranked = (f"{t['products']} products (the gallery)" if gallery.get("kind") != "catalog" else
              f"{t['products']} products, ranked among the {gallery['products']} of the catalog `{gallery['location']}` "
              f"({gallery['index']}; ranks read: {gallery['ranks']})")
    lines = [f"# Evaluation of {report['config']['artifacts']}", "",
             f"Test split `{t['split']}`: {ranked}, {t['queries']} query photos, "
             f"{len(t['skipped'])} unreadable files skipped. Images at S = {report['model']['preprocessing']['size']} px.",
             f"Generator: {g.get('architecture')} (stages {g.get('stages')}, exported stage {g.get('stage')}, native "
             f"{g.get('native_size')} px, {g.get('training_steps')} training steps).", "",
             *_table(report["results"], report["ks"], False), "",
             f"Recall@K: retrieval features from **{report['embedder']['backbone']}** (the paper used DenseNet-121); "
             f"ties count against the query; a random ranking would score K / {gallery_size(t)}. RMSE: per image on a [0, 1] scale, averaged. SSIM: grayscale "
             "(ITU-R BT.601 luma), Wang et al. 2004 via scikit-image, 11x11 Gaussian window, sigma 1.5. The photo "
             "row compares the street photo itself with the product image." + head_note, "",
             f"Recall@K with 95 % intervals ({b['resamples']} bootstrap resamples of the test products, seed "
             f"{b['seed']}, percentile; a product's photos are resampled together):", "", *intervals, *categories, "",
             f"Throughput: {report['throughput']['queries_per_s']} queries/s on {report['throughput']['providers'][0]}.", ""]
    return "\n".join(lines)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the bitmap font
        return ImageFont.load_default()


def draw_samples(shown: list[dict], gallery_u8: np.ndarray, path: Path, title: str = "",
                 depth: int | None = None) -> None:
    """Rows: photo | generated | ground truth | top-5 retrieved; the true product framed in green. Under the
    ground truth its rank and cosine score, under each retrieved product its score (the kind named in `title`)."""
    S = gallery_u8.shape[-1]
    cell, pad, border, caption = max(S, 96), 6, 4, 16
    cols = 3 + TOP_SHOWN
    header = 38 if title else 22
    img = Image.new("RGB", (cols * (cell + pad) + pad, header + len(shown) * (cell + caption + pad) + pad), "white")
    d = ImageDraw.Draw(img)
    font = _font(12)
    if title:
        d.text((pad, 10), title, fill="black", font=_font(13), anchor="lm")
    for c, name in enumerate(["photo", "generated", "ground truth"] + [f"top {i + 1}" for i in range(TOP_SHOWN)]):
        d.text((pad + c * (cell + pad) + cell / 2, header - 11), name, fill="black", font=_font(13), anchor="mm")
    for r, row in enumerate(shown):
        y = header + pad + r * (cell + caption + pad)
        tiles = [row["photo"], row["generated"], _f32(gallery_u8[row["truth"]])] + [_f32(gallery_u8[i]) for i in row["top"]]
        for c, tile in enumerate(tiles):
            x = pad + c * (cell + pad)
            img.paste(to_image(tile).resize((cell, cell), Image.Resampling.NEAREST), (x, y))
            if c >= 3:
                hit = row["top"][c - 3] == row["truth"]
                d.rectangle([x, y, x + cell - 1, y + cell - 1], outline=HIT if hit else MISS, width=border if hit else 1)
                text, colour = f"{row['top_scores'][c - 3]:.3f}", HIT if hit else "black"
            elif c == 2:
                score = f", {row['score']:.3f}" if row["score"] == row["score"] else ""  # NaN: not retrieved
                text, colour = f"rank {rank_text(row['rank'], depth)}{score}", HIT if row["rank"] == 1 else "black"
            else:
                continue
            d.text((x + cell / 2, y + cell + caption / 2), text, fill=colour, font=font, anchor="mm")
    img.save(path)


def compare_reports(paths: list[Path], out: Path) -> dict:
    """Several report.json files -> OUT/compare.md (Tables 1 and 2 of the paper), recall.png, compare.json."""
    if not paths:
        raise UserError("rtd eval compare needs at least one report.json")
    rows, seen_baselines, ks = [], set(), set()
    chance: dict[int, dict] = {}  # one chance line per gallery size
    for path in paths:
        path = Path(path)
        path = path / "report.json" if path.is_dir() else path
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: not a readable report.json ({e})") from e
        if report.get("format_version") != REPORT_FORMAT:
            raise UserError(f"{path}: not a report written by `rtd eval`")
        ks |= set(report["ks"])
        if "chance_recall" in report["test_set"]:
            chance.setdefault(gallery_size(report["test_set"]), report)
        g = report["model"].get("generator", {})
        for r in report["results"]:
            # One photo baseline per (embedder, test set, queries): every report over the same split has it.
            key = (report["embedder"]["onnx_sha256"], report["test_set"]["split"], report["test_set"]["queries"])
            if r["method"] == "photo":
                if key in seen_baselines:
                    continue
                seen_baselines.add(key)
            rows.append(r | {"queries": report["test_set"]["queries"], "report": str(path),
                             "architecture": "photo" if r["method"] == "photo" else g.get("architecture"),
                             "stages": g.get("stages"), "stage": g.get("stage")})
    ks_sorted = sorted(ks)

    def staged(r: dict) -> bool:  # an rtdGAN row of the paper's protocol (a head's row is not one of Table 2's)
        return registry.is_staged(r["architecture"]) and r["method"] != "head"

    rtd = sorted(filter(staged, rows), key=lambda r: (r["stages"], r["stage"]))
    best = rtd[-1] if rtd else None  # the deepest N, final stage: the paper's "Ours (3 stages)"
    others = [r for r in rows if not staged(r)]
    table1 = (sorted((r for r in others if r["method"] != "head"), key=lambda r: r["architecture"] != "photo")
              + ([best] if best else []) + [r for r in others if r["method"] == "head"])
    lines = ["# rtd eval compare", "", "## Methods (the paper's Table 1)", "", *_table(table1, ks_sorted, True), ""]
    if rtd:
        lines += ["## rtdGAN with N stages (the paper's Table 2)", "", *_table(rtd, ks_sorted, True), ""]
    for products, report in chance.items():
        values = ", ".join(f"R@{k} {v:.4f}" for k, v in report["test_set"]["chance_recall"].items())
        lines += [f"Chance level with a {products}-product gallery (a random ranking, K / {products}): {values}.", ""]
    lines += ["Reports: " + ", ".join(f"`{p}`" for p in paths), ""]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text("\n".join(lines), encoding="utf-8")
    backbones = sorted({r["embedder"] for r in rows})
    recall_plot([*map(report_curve, rows), *(chance_curve(r) for r in chance.values())], out / "recall.png",
                f"Recall@K ({', '.join(backbones)} embeddings)")
    merged = {"format_version": REPORT_FORMAT, "ks": ks_sorted, "rows": rows}
    (out / "compare.json").write_text(json.dumps(merged, indent=1) + "\n", encoding="utf-8")
    return merged
