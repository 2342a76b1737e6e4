"""`rtd eval`: RMSE, SSIM and Recall@K of exported artifacts over a test split (Sec. 5, Tables 1 and 2).

Runs exactly what the service runs: the one search pipeline (index/pipeline.py) — the shared preprocessing
at the artifacts' size S, generator.onnx and embedder.onnx (CUDA when onnxruntime has it), and a real
`Catalog` (exact FAISS + SQLite, in memory) as the gallery. No torch.

`evaluate` is the run, top to bottom: the gallery embedded once per pipeline, every test photo queried in every
kind, the results per kind, then the report's files. What is measured (the kinds, the test set, the gallery, the
ranks) is training/eval_protocol.py; what is written (report.json, report.md, queries.csv, the plot and the
sample grid) is training/eval_report.py.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rtdgan.index.errors import UserError
from rtdgan.index.images import preprocess_many
from rtdgan.index.runtime.crop import query_photos
from rtdgan.training.eval_protocol import (
    CATEGORY_KS,
    CONFIDENCE,
    CatalogTiles,
    EvalConfig,
    catalog_kinds,
    category_of,
    chance_recall,
    from_u8,
    gallery_catalog,
    gallery_doc,
    hit_ranks,
    missing_products,
    open_kinds,
    person_crop,
    query_list,
    score_matrix,
    test_records,
    to_u8,
    validate,
)
from rtdgan.training.eval_report import REPORT_FORMAT, TOP_SHOWN, write_report
from rtdgan.training.metrics import bootstrap_recall, recall_at_k, rmse, ssim, true_ranks

DECODE_THREADS = 4  # PIL decodes with the GIL released


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
                gallery.append(to_u8(batch))
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
                target = from_u8(gallery_u8[truth])  # (b, 3, S, S) ground-truth product images
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
    write_report(Path(cfg.out), report, kept, products, columns, shown, grid_u8, None if known else depth)
    return report
