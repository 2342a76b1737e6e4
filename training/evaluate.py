"""`rtd eval`: RMSE, SSIM and Recall@K of exported artifacts over a test split (Sec. 5, Tables 1 and 2).

Runs exactly what the service runs: the one search pipeline (index/pipeline.py) — the shared preprocessing
at the artifacts' size S, generator.onnx and embedder.onnx (CUDA when onnxruntime has it), and a real
`Catalog` (exact FAISS + SQLite, in memory) as the gallery. No torch.

Protocol (Sec. 5): the gallery is the test split's product images, embedded with the artifacts' embedder;
every test photo is a query, in two kinds: the generated product image (the paper's method) and the photo
itself (the no-generation baseline). A query is a hit at K when its true product is in the top K by
cosine; the catalog ranks the whole gallery, so every rank (and its ties) is known. RMSE and SSIM compare a query image with the true product image at S (training/metrics.py).

Writes into OUT: report.json, report.md (Table 1's form), recall.png (Recall@K curves), samples.png
(photo | generated | ground truth | top-5, the true product framed in green) and queries.csv.
`compare_reports` merges several report.json files into one table and one plot.
"""

from __future__ import annotations

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

from index.catalog import Catalog, ProductMeta
from index.configs import opt
from index.errors import UserError
from index.images import preprocess_many, to_image
from index.pipeline import FROZEN_KINDS as QUERY_KINDS
from index.pipeline import Pipeline
from training import registry
from training.data import ProductRecord, load_split
from training.metrics import recall_at_k, rmse, ssim, true_ranks

REPORT_FORMAT = 1
TOP_SHOWN = 5  # retrieved products per row of the sample grid
DECODE_THREADS = 4  # PIL decodes with the GIL released
HIT, MISS = (0, 160, 60), (200, 200, 200)
PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (23, 190, 207)]
PHOTO_COLOUR, CHANCE_COLOUR = (127, 127, 127), (200, 200, 200)


@dataclass(frozen=True)
class EvalConfig:
    """`rtd eval`: which artifacts, which test split, where to write, which K and queries."""

    artifacts: Path = opt(help="folder from `rtd export` (generator.onnx, embedder.onnx, model.json)")
    data: Path = opt(help="data folder the split was made from")
    split: Path = opt(help="split file from `rtd data split`; its test part is evaluated")
    out: Path = opt(help="report folder (report.json, report.md, recall.png, samples.png, queries.csv)")
    ks: tuple[int, ...] = opt((1, 5, 10, 20, 60, 100), "Recall@K cut-offs, e.g. 1,5,10,20,60,100", flag="--k")
    query: Literal["generated", "photo", "both"] = opt(
        "both", "generated: the paper's method; photo: the no-generation baseline; both")
    limit: int | None = opt(None, "evaluate the first N query photos only (spread over products)")
    batch_size: int = opt(32, "images per onnxruntime call")
    samples: int = opt(8, "rows of the sample grid (samples.png)")


def validate(cfg: EvalConfig) -> None:
    """UserError (one line) for options that cannot run."""
    if cfg.query not in (*QUERY_KINDS, "both"):
        raise UserError(f"--query must be generated, photo or both, got {cfg.query!r}")
    if not cfg.ks or min(cfg.ks) < 1:
        raise UserError(f"--k needs positive integers, got {cfg.ks}")
    if cfg.batch_size < 1 or cfg.samples < 0 or (cfg.limit is not None and cfg.limit < 1):
        raise UserError("--batch-size and --limit must be >= 1, --samples >= 0")


def method_label(model: dict, kind: str) -> str:
    """Table row name: 'rtdGAN (N=3)', 'pix2pix', 'PLDT', or the photo baseline (training/registry.py)."""
    if kind == "photo":
        return "photo (no generation)"
    return registry.report_label(model.get("generator", {}))


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
    """The test products as a real, exact, in-memory catalog: the service's search path over the gallery."""
    art = pipeline.artifacts
    catalog = Catalog.create(vectors.shape[1], art.embedder_name, art.embedder_sha256, "flat")
    catalog.add([ProductMeta(r.product_id) for r in products], vectors)
    return catalog


def score_matrix(hits: list[list], column: dict[str, int]) -> np.ndarray:
    """(Q, P) cosine scores from full-gallery hit lists (every product ranked), for ranks with ties."""
    scores = np.full((len(hits), len(column)), -np.inf, np.float32)
    for q, row in enumerate(hits):
        for hit in row:
            scores[q, column[hit.product_id]] = hit.score
    return scores


def evaluate(cfg: EvalConfig) -> dict:
    """Evaluate the artifacts on the split's test photos; writes the report files and returns report.json."""
    validate(cfg)
    kinds = QUERY_KINDS if cfg.query == "both" else (cfg.query,)
    pipeline = Pipeline.open(cfg.artifacts, generator="generated" in kinds)
    art = pipeline.artifacts
    S, model = art.size, art.model
    split = load_split(cfg.split)
    if split.data.resolve() != Path(cfg.data).resolve():
        raise UserError(f"{cfg.split} was made from {split.data}, not from --data {cfg.data}")
    if not split.test:
        raise UserError(f"{cfg.split}: the test split is empty")
    backbone = model["embedder"].get("backbone", "unknown")
    skipped: list[str] = []
    start = time.perf_counter()

    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        # ---- gallery: the test products, embedded once; kept as uint8 (lossless) for RMSE/SSIM and the grid
        products, gallery, vectors = [], [], []
        for first in range(0, len(split.test), cfg.batch_size):
            chunk = split.test[first:first + cfg.batch_size]
            arrays = preprocess_many(pool, [r.product_image for r in chunk], S)
            good = [(r, a) for r, a in zip(chunk, arrays, strict=True) if isinstance(a, np.ndarray)]
            skipped += [f"product {r.product_id}: {a}" for r, a in zip(chunk, arrays, strict=True) if isinstance(a, str)]
            if good:
                batch = np.stack([a for _, a in good])  # (b, 3, S, S)
                products += [r for r, _ in good]
                gallery.append(_u8(batch))
                vectors.append(pipeline.embed(batch))  # (b, D)
        if not products:
            raise UserError(f"none of the {len(split.test)} test product images could be read")
        gallery_u8, gallery_vecs = np.concatenate(gallery), np.concatenate(vectors)  # (P, 3, S, S), (P, D)
        pipeline.catalog = gallery_catalog(pipeline, products, gallery_vecs)
        column = {r.product_id: i for i, r in enumerate(products)}

        # ---- queries: every test photo, through the generator and/or as itself
        queries = query_list(products, cfg.limit)
        kept: list[tuple[Path, int]] = []
        per = {k: {"rank": [], "rmse": [], "ssim": []} for k in kinds}
        shown: list[dict] = []  # the first cfg.samples queries, for the grid
        t_queries = time.perf_counter()
        with tqdm(total=len(queries), desc="eval", unit="query", dynamic_ncols=True) as bar:
            for first in range(0, len(queries), cfg.batch_size):
                chunk = queries[first:first + cfg.batch_size]
                arrays = preprocess_many(pool, [p for p, _ in chunk], S)
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
                for kind in kinds:
                    found = pipeline.query(photos, len(products), query=kind)  # every product ranked
                    if found.generated is not None:
                        images["generated"] = found.generated  # (b, 3, S, S)
                    scores = score_matrix(found.hits, column)  # (b, P) cosine
                    per[kind]["rank"].append(true_ranks(scores, truth))
                    per[kind]["rmse"].append(rmse(images[kind], target))
                    per[kind]["ssim"].append(ssim(images[kind], target))
                    if kind == kinds[0]:
                        for j in range(min(len(good), cfg.samples - len(shown))):
                            top = np.argsort(-scores[j], kind="stable")[:TOP_SHOWN]
                            shown.append({"photo": photos[j], "generated": images.get("generated", photos)[j],
                                          "truth": int(truth[j]), "top": top.tolist()})
        seconds = time.perf_counter() - t_queries
    if not kept:
        raise UserError(f"none of the {len(queries)} test photos could be read")
    qps = len(kept) / max(seconds, 1e-9)
    providers = pipeline.providers
    print(f"rtd eval: {len(kept)} queries in {seconds:.1f} s = {qps:.1f} queries/s "
          f"({'generator + ' if 'generated' in kinds else ''}embedder on {providers[0]})", file=sys.stderr)

    columns = {k: {m: np.concatenate(v) for m, v in per[k].items()} for k in kinds}
    results = [{
        "method": kind, "label": method_label(model, kind), "embedder": backbone,
        "rmse": float(c["rmse"].mean()), "ssim": float(c["ssim"].mean()),
        "recall": {str(k): v for k, v in recall_at_k(c["rank"], cfg.ks).items()},
        "median_rank": float(np.median(c["rank"])), "mean_rank": float(c["rank"].mean()),
    } for kind, c in columns.items()]
    report = {
        "format_version": REPORT_FORMAT,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "model": model,
        "embedder": {"backbone": backbone, "onnx_sha256": art.embedder_sha256, "dim": int(gallery_vecs.shape[1])},
        "test_set": {"split": str(cfg.split), "products": len(products), "queries": len(kept),
                     "skipped": skipped, "chance_recall": chance_recall(len(products), cfg.ks)},
        "ks": list(cfg.ks),
        "results": results,
        "throughput": {"queries": len(kept), "seconds": round(seconds, 3), "queries_per_s": round(qps, 2),
                       "providers": providers, "total_seconds": round(time.perf_counter() - start, 3)},
    }
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (out / "report.md").write_text(report_markdown(report), encoding="utf-8")
    write_queries_csv(out / "queries.csv", kept, products, columns)
    curves = [(r["label"], cfg.ks, [r["recall"][str(k)] for k in cfg.ks]) for r in results]
    draw_curves(curves + [chance_curve(report)], out / "recall.png", f"Recall@K ({backbone} embeddings, {len(kept)} queries, {len(products)} products)")
    if shown:
        draw_samples(shown, gallery_u8, out / "samples.png")
    return report


def chance_recall(products: int, ks: tuple[int, ...]) -> dict[str, float]:
    """Recall@K of a random ranking of `products` gallery items: K / P (a floor to read the others against)."""
    return {str(k): min(1.0, k / products) for k in ks}


def chance_curve(report: dict) -> tuple[str, list[int], list[float]]:
    """The chance line of a report's plot."""
    chance = report["test_set"]["chance_recall"]
    return (f"chance (K / {report['test_set']['products']})", [int(k) for k in chance], list(chance.values()))


def write_queries_csv(path: Path, queries: list[tuple[Path, int]], products: list[ProductRecord],
                      columns: dict[str, dict[str, np.ndarray]]) -> None:
    """One row per query: photo, product id, and per kind the true product's rank, RMSE and SSIM."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["photo", "product"] + [f"{m}_{k}" for k in columns for m in ("rank", "rmse", "ssim")])
        for q, (photo, i) in enumerate(queries):
            row = [str(photo), products[i].product_id]
            for c in columns.values():
                row += [int(c["rank"][q]), f"{c['rmse'][q]:.6f}", f"{c['ssim'][q]:.6f}"]
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


def report_markdown(report: dict) -> str:
    """report.md: the results in the form of the paper's Table 1, with what produced them."""
    t, g = report["test_set"], report["model"].get("generator", {})
    lines = [f"# Evaluation of {report['config']['artifacts']}", "",
             f"Test split `{t['split']}`: {t['products']} products (the gallery), {t['queries']} query photos, "
             f"{len(t['skipped'])} unreadable files skipped. Images at S = {report['model']['preprocessing']['size']} px.",
             f"Generator: {g.get('architecture')} (stages {g.get('stages')}, exported stage {g.get('stage')}, native "
             f"{g.get('native_size')} px, {g.get('training_steps')} training steps).", "",
             *_table(report["results"], report["ks"], False), "",
             f"Recall@K: retrieval features from **{report['embedder']['backbone']}** (the paper used DenseNet-121); "
             f"ties count against the query; a random ranking would score K / {t['products']}. RMSE: per image on a [0, 1] scale, averaged. SSIM: grayscale "
             "(ITU-R BT.601 luma), Wang et al. 2004 via scikit-image, 11x11 Gaussian window, sigma 1.5. The photo "
             "row compares the street photo itself with the product image.",
             f"Throughput: {report['throughput']['queries_per_s']} queries/s on {report['throughput']['providers'][0]}.", ""]
    return "\n".join(lines)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the bitmap font
        return ImageFont.load_default()


def draw_curves(curves: list[tuple[str, list[int] | tuple[int, ...], list[float]]], path: Path, title: str) -> None:
    """A Recall@K plot (log-scaled K axis, recall 0..1) drawn with PIL: one line per (label, ks, values)."""
    W, H, left, right, top, bottom = 880, 480, 60, 270, 40, 50
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    font, small = _font(14), _font(12)
    all_k = sorted({k for _, ks, _ in curves for k in ks})
    lo, hi = np.log(all_k[0]), np.log(all_k[-1])

    def xy(k: float, r: float) -> tuple[float, float]:
        fx = 0.5 if hi == lo else (np.log(k) - lo) / (hi - lo)
        return left + fx * (W - left - right), top + (1.0 - r) * (H - top - bottom)

    for r in np.linspace(0, 1, 6):  # recall grid
        y = xy(all_k[0], r)[1]
        d.line([(left, y), (W - right, y)], fill=(225, 225, 225))
        d.text((left - 8, y), f"{r:.1f}", fill="black", font=small, anchor="rm")
    for k in all_k:
        x = xy(k, 0)[0]
        d.line([(x, top), (x, H - bottom)], fill=(240, 240, 240))
        d.text((x, H - bottom + 6), str(k), fill="black", font=small, anchor="mt")
    d.rectangle([left, top, W - right, H - bottom], outline="black")
    d.text((left + (W - left - right) / 2, H - 14), "K", fill="black", font=font, anchor="mm")
    d.text((left, top / 2), title, fill="black", font=font, anchor="lm")
    colours = iter(PALETTE * 4)
    for n, (label, ks, values) in enumerate(curves):
        colour = PHOTO_COLOUR if label.startswith("photo") else CHANCE_COLOUR if label.startswith("chance") else next(colours)
        points = [xy(k, v) for k, v in sorted(zip(ks, values, strict=True))]
        if len(points) > 1:
            d.line(points, fill=colour, width=3)
        for x, y in points:
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
        ly = top + 12 + 22 * n
        d.line([(W - right + 14, ly), (W - right + 40, ly)], fill=colour, width=3)
        d.text((W - right + 46, ly), label[:32], fill="black", font=small, anchor="lm")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def draw_samples(shown: list[dict], gallery_u8: np.ndarray, path: Path) -> None:
    """Rows: photo | generated | ground truth | top-5 retrieved; the true product framed in green."""
    S = gallery_u8.shape[-1]
    cell, pad, border = max(S, 96), 6, 4
    cols = 3 + TOP_SHOWN
    header = 22
    img = Image.new("RGB", (cols * (cell + pad) + pad, header + len(shown) * (cell + pad) + pad), "white")
    d = ImageDraw.Draw(img)
    for c, name in enumerate(["photo", "generated", "ground truth"] + [f"top {i + 1}" for i in range(TOP_SHOWN)]):
        d.text((pad + c * (cell + pad) + cell / 2, header / 2), name, fill="black", font=_font(13), anchor="mm")
    for r, row in enumerate(shown):
        y = header + pad + r * (cell + pad)
        tiles = [row["photo"], row["generated"], _f32(gallery_u8[row["truth"]])] + [_f32(gallery_u8[i]) for i in row["top"]]
        for c, tile in enumerate(tiles):
            x = pad + c * (cell + pad)
            img.paste(to_image(tile).resize((cell, cell), Image.Resampling.NEAREST), (x, y))
            if c >= 3:
                hit = row["top"][c - 3] == row["truth"]
                d.rectangle([x, y, x + cell - 1, y + cell - 1], outline=HIT if hit else MISS, width=border if hit else 1)
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
            chance.setdefault(report["test_set"]["products"], report)
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
    table1 = [r for r in rows if not registry.is_staged(r["architecture"])]
    rtd = sorted((r for r in rows if registry.is_staged(r["architecture"])), key=lambda r: (r["stages"], r["stage"]))
    best = rtd[-1] if rtd else None  # the deepest N, final stage: the paper's "Ours (3 stages)"
    table1 = sorted(table1, key=lambda r: r["architecture"] != "photo") + ([best] if best else [])
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
    curves = [(r["label"], [int(k) for k in r["recall"]], list(r["recall"].values())) for r in rows]
    draw_curves(curves + [chance_curve(r) for r in chance.values()], out / "recall.png",
                f"Recall@K ({', '.join(backbones)} embeddings)")
    merged = {"format_version": REPORT_FORMAT, "ks": ks_sorted, "rows": rows}
    (out / "compare.json").write_text(json.dumps(merged, indent=1) + "\n", encoding="utf-8")
    return merged
