"""What `rtd eval` writes: report.json, report.md and the printed summary (Table 1's form, intervals, the
per-category table), queries.csv, the plots' glue, the sample grid, and `rtd eval compare`.

Writes into OUT: report.json, report.md, recall.png and recall.svg (Recall@K curves with their intervals,
training/plots.py), samples.png (photo | generated | ground truth | top-5 of the default kind, the true product
framed in green, its rank and score written under the row) and queries.csv. `compare_reports` merges several
report.json files into one table and one plot (recall.png, recall.svg).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from rtdgan.index.errors import UserError
from rtdgan.index.images import to_image
from rtdgan.training import registry
from rtdgan.training.data import ProductRecord
from rtdgan.training.eval_protocol import CATEGORY_KS, NO_CATEGORY, from_u8
from rtdgan.training.plots import Curve, recall_plot, report_curve

REPORT_FORMAT = 1
TOP_SHOWN = 5  # retrieved products per row of the sample grid
HIT, MISS = (0, 160, 60), (200, 200, 200)


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
        tiles = [row["photo"], row["generated"], from_u8(gallery_u8[row["truth"]])] + [from_u8(gallery_u8[i]) for i in row["top"]]
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



def write_report(out: Path, report: dict, queries: list[tuple[Path, int]], products: list[ProductRecord],
                 columns: dict[str, dict[str, np.ndarray]], shown: list[dict], grid_u8: np.ndarray,
                 depth: int | None) -> None:
    """Write a report's files into `out`: report.json, report.md, queries.csv, recall.png/.svg and, when rows are
    shown, samples.png. `depth`: with --catalog, the deepest rank read (None: every rank known)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (out / "report.md").write_text(report_markdown(report), encoding="utf-8")
    write_queries_csv(out / "queries.csv", queries, products, columns, depth)
    t, catalog = report["test_set"], report["config"]["catalog"]
    recall_plot([*map(report_curve, report["results"]), chance_curve(report)], out / "recall.png",
                f"Recall@K ({report['embedder']['backbone']} embeddings, {t['queries']} queries, {t['products']} products)")
    if shown:
        draw_samples(shown, grid_u8, out / "samples.png",
                     f"ranked by: {report['samples']['label']}; under the ground truth its rank, under each tile its cosine"
                     + (f" (catalog {catalog})" if catalog is not None else ""), depth)


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
