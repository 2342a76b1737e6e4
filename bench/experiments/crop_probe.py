"""Street framing: does the learned person crop (`rtd fit-crop`, index/crop.py) before the generator
reach R@10 >= 0.60 on a street shop, and does it leave LookBook framing alone?

    artifacts: a copy of bench/experiments/street_probe.py's mixed fused head (the committed LookBook-trained demo generator,
        efficientnet_lite0 at embed level 0, a fused head fitted on 2,500 street + 2,500 LookBook products, no
        crop) into which `rtd fit-crop` wrote crop.onnx (trained on --crop-data: a street-framed and a
        LookBook-framed synthetic world with their boxes.csv, seeds 6100/6101; its validation IoU is read back)
    shops (seeds used for nothing else, 300 products x 4 photos, gallery = the whole shop, every photo a query,
        the catalog images always the 64 px shop's): street (seed 6300) with its photos rendered at 256 px
        (source resolution for the crop) and at 64 px; LookBook (seed 6301) at 64 px and 256 px
    rows: (a) no crop (`Pipeline.open(..., crop=False)`: today's query), (b) the predicted crop, the same head (no
        refit), (c) the oracle crop (the synthesizer's own person box, squared the same way, cut from the same
        source photo; bench/common.py `crop_shop`), the same head; the crop's mean IoU on the shop's boxes
    features go through the pipeline's own stages (training/head.py `cached_features`: the crop stage, the
        generator, the embedder), the head's ONNX sides rank the gallery, as bench/experiments/street_probe.py does

Every step is cached (features by training/head.py); the results are written to ROOT/crop-results.json and a
table is printed. Nothing is chosen on these shops: the crop's settings were chosen on its validation photos.

    .venv/bin/python bench/experiments/crop_probe.py --root /tmp/rtd-crop --artifacts /tmp/rtd-crop/artifacts-crop --threads 2
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bench.common

import numpy as np  # noqa: E402

from bench.common import crop_shop, ms_since, say, synth_world  # noqa: E402
from rtdgan.index.images import decode_image  # noqa: E402
from rtdgan.index.runtime.artifacts import read_artifacts  # noqa: E402
from rtdgan.index.runtime.crop import CROP_SOURCE_SIDE, Cropper, read_crop  # noqa: E402
from rtdgan.index.runtime.head import read_head  # noqa: E402
from rtdgan.training.crop import mean_iou  # noqa: E402
from rtdgan.training.data import ProductRecord, load_records  # noqa: E402
from rtdgan.training.head import cached_features, recall  # noqa: E402
from rtdgan.training.synth import BOXES_CSV  # noqa: E402


def with_products_of(records: list[ProductRecord], catalog: Path) -> list[ProductRecord]:
    """The records with the product images of the 64 px shop (the same products): one catalog for every row."""
    by_id = {r.product_id: r.product_image for r in load_records(catalog).records}
    return [replace(r, product_image=by_id[r.product_id]) for r in records]


def crop_iou(cropper: Cropper, folder: Path) -> float:
    """Mean IoU of the predicted boxes and the synthesizer's (boxes.csv), in the letterboxed square (= the photo)."""
    with (folder / BOXES_CSV).open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    truth = np.array([[float(r[c]) for c in ("x0", "y0", "x1", "y1")] for r in rows], np.float32)
    pred = np.concatenate([cropper.boxes([decode_image(folder / r["photo"], reduce_to=CROP_SOURCE_SIDE)
                                          for r in rows[i:i + 256]]) for i in range(0, len(rows), 256)])
    return mean_iou(pred, truth)


def stage_ms(art: Path, photos: list[Path], threads: int | None) -> dict[str, float]:
    """Median milliseconds per photo, one photo at a time, of each query stage before the search, side by side:
    decode (`prepare`) and crop with the crop; preprocess without; generate; embed (photo + generated)."""
    from rtdgan.index.pipeline import Pipeline

    with_crop, without = Pipeline.open(art, threads=threads), Pipeline.open(art, threads=threads, crop=False)
    times: dict[str, list[float]] = {}

    def timed(name: str, fn, *args):  # noqa: ANN001, ANN202 - a local stopwatch
        t = time.perf_counter()
        out = fn(*args)
        times.setdefault(name, []).append(ms_since(t))
        return out

    for path in photos:
        timed("preprocess (no crop)", without.preprocess, path)
        decoded = timed("decode (with crop)", with_crop.prepare, path)
        x = timed("crop stage", with_crop.crop, [decoded])
        g = timed("generate", with_crop.generate, x)
        timed("embed (photo + generated)", with_crop.embed, np.concatenate([g, x]))
    return {k: round(float(np.median(v)), 2) for k, v in times.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("/tmp/rtd-crop"))
    p.add_argument("--artifacts", type=Path, default=Path("/tmp/rtd-crop/artifacts-crop"),
                   help="artifacts with a fused head and crop.onnx")
    p.add_argument("--shop-products", type=int, default=300)
    p.add_argument("--shop-seeds", default="6300,6301", help="street shop, LookBook shop")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads")
    p.add_argument("--results", type=Path, default=None, help="results file (default ROOT/crop-results.json)")
    a = p.parse_args()
    root, art = a.root, a.artifacts
    out = a.results or root / "crop-results.json"
    doc = json.loads(out.read_text()) if out.is_file() else {}
    doc |= {"args": {k: str(v) for k, v in vars(a).items()}}
    doc.setdefault("shops", {})
    times = doc.setdefault("times", {})
    info = read_artifacts(art)
    crop = read_crop(info)
    head = read_head(info)
    doc["crop"] = {k: crop.doc[k] for k in ("input_size", "onnx_sha256", "training", "validation", "model")}
    doc["crop"]["validation"] = {k: v for k, v in crop.doc["validation"].items() if k != "history"}
    doc["head"] = {k: head.doc[k] for k in ("mode", "chosen", "training")}
    street_seed, lookbook_seed = map(int, a.shop_seeds.split(","))
    shops = {"street-256": (street_seed, "street", 256), "street-64": (street_seed, "street", 64),
             "lookbook-64": (lookbook_seed, "lookbook", 64), "lookbook-256": (lookbook_seed, "lookbook", 256)}
    cache = root / "crop-cache"
    query, catalog = head.sessions(threads=a.threads)
    cropper = Cropper(crop, threads=a.threads)
    for name, (seed, framing, size) in shops.items():
        folder = root / f"shop-{seed}-{framing}-{size}"
        small = root / f"shop-{seed}-{framing}-64"
        for f, s in ((folder, size), (small, 64)):
            t = time.perf_counter()
            if synth_world(f, a.shop_products, seed, framing, size=s):
                times[f"synth {f.name}"] = round(time.perf_counter() - t, 1)
        records = with_products_of(load_records(folder).records, small)
        oracle = root / f"oracle-{seed}-{framing}-{size}"
        crop_shop(folder, small, oracle, seed)
        rows = doc["shops"].setdefault(name, {})
        rows["crop IoU"] = crop_iou(cropper, folder)  # predicted vs the synthesizer's box
        for row, recs, use_crop in (("(a) no crop", records, False), ("(b) predicted crop", records, True),
                                    ("(c) oracle crop", load_records(oracle).records, False)):
            t = time.perf_counter()
            feats, _, reused = cached_features(art, recs, cache, threads=a.threads, desc=f"{name} {row}",
                                               crop=use_crop)
            if not reused:
                times[f"features {name} {row}"] = round(time.perf_counter() - t, 1)
            rows[row] = recall(query(feats.query(head.query_inputs)), feats.owner, catalog(feats.products))
            say(f"{name} {row}: R@1 {rows[row]['1']:.3f} R@10 {rows[row]['10']:.3f}")
            out.write_text(json.dumps(doc, indent=1) + "\n")
        rows["_size"] = {"gallery": len(feats.products), "queries": len(feats.owner)}
        out.write_text(json.dumps(doc, indent=1) + "\n")

    street = sorted((root / f"shop-{street_seed}-street-256").glob("*_CLEAN0_*.jpg"))[:60]
    doc["stage_ms_256px_source"] = stage_ms(art, street, a.threads)
    out.write_text(json.dumps(doc, indent=1) + "\n")

    v = doc["crop"]["validation"]
    print(f"\nPerson crop: validation IoU {v['iou']:.3f} (a constant centre box: {v['centre_box_iou']:.3f}) on "
          f"{v['photos']} held-out photos of {', '.join(Path(d).name for d in doc['crop']['training']['data'])}. "
          f"Head: mixed fused (no refit). Shops: {a.shop_products} products x 4 photos, gallery = the whole shop.\n")
    names = list(doc["shops"])
    print("| query | " + " | ".join(f"{s} R@1 | {s} R@10" for s in names) + " |")
    print("|---|" + "---|---|" * len(names))
    for row in ("(a) no crop", "(b) predicted crop", "(c) oracle crop"):
        cells = []
        for s in names:
            r = doc["shops"][s].get(row)
            cells += [f"{r['1']:.3f}", f"{r['10']:.3f}"] if r else ["", ""]
        print(f"| {row} | " + " | ".join(cells) + " |")
    print("| crop IoU (predicted vs the synthesizer's box) | " + " | ".join(f" | {doc['shops'][s]['crop IoU']:.3f}"
                                                                        for s in names) + " |")
    print("\nmedian ms per photo, one at a time (256 px street photos): " + json.dumps(doc["stage_ms_256px_source"]))
    print("seconds per step: " + json.dumps(times))
    return 0


if __name__ == "__main__":
    sys.exit(main())
