"""Does a learned retrieval head (training/head.py) beat the frozen embedder, and which query mode is best?

synthesize a LookBook-framed training world (default 5,000 products x 4 photos, 64 px, seed 3100, used for
nothing else) -> split it (`rtd data split`, 10 % test, unused here) -> export the committed demo generator
(models/pretrained/rtdgan-demo-64.pt, wrapped as a run folder as the demo does) with EfficientNet-Lite0 at
embed level 0 (full resolution) -> `rtd fit-head` for each query mode (photo, generated, fused; settings chosen
on a validation part of the training split) -> a held-out shop (seed 3200, 300 products x 4 photos,
LookBook framing), gallery = the whole shop, every photo a query: Recall@1/10 of the frozen features and of
each head (its exported ONNX files, through onnxruntime).

Every stage is skipped when its output exists (the features are cached by training/head.py), so a rerun
prints the table again in minutes; the seconds of each stage are printed and kept in ROOT/results.json.
The fused head is fitted last, so it is the one left in ROOT/artifacts.

    .venv/bin/python bench/experiments/head_probe.py --root /tmp/rtd-head-probe
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bench.common

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import export_demo_generator, say, synth_world  # noqa: E402
from rtdgan.index.runtime.artifacts import read_artifacts  # noqa: E402
from rtdgan.index.runtime.head import read_head  # noqa: E402
from rtdgan.training.data import load_records  # noqa: E402
from rtdgan.training.head import FitHeadConfig, cached_features, fit_head, recall  # noqa: E402
from rtdgan.training.split import SplitConfig, make_split  # noqa: E402

MODES = ("photo", "generated", "fused")


def step(times: dict, name: str, start: float) -> None:
    times[name] = round(time.perf_counter() - start, 1)
    say(f"{name}: {times[name]} s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("/tmp/rtd-head-probe"))
    p.add_argument("--train-products", type=int, default=5000)
    p.add_argument("--photos", type=int, default=4)
    p.add_argument("--train-seed", type=int, default=3100)
    p.add_argument("--shop-products", type=int, default=300)
    p.add_argument("--shop-seed", type=int, default=3200)
    p.add_argument("--workers", type=int, default=1, help="synthesis processes")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime and torch threads")
    p.add_argument("--modes", default=",".join(MODES), help="heads to fit, comma-separated (fused last is best)")
    p.add_argument("--head-config", type=Path, default=None,
                   help="JSON of FitHeadConfig fields to override (grid, epochs, ...); default: its defaults")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    root = a.root
    root.mkdir(parents=True, exist_ok=True)
    results_path = root / "results.json"
    previous = json.loads(results_path.read_text()) if results_path.is_file() else {}
    times: dict = {}

    t = time.perf_counter()
    train_data, shop = root / "train-data", root / "shop"
    if synth_world(train_data, a.train_products, a.train_seed, photos=a.photos, workers=a.workers):
        step(times, f"synth training world ({a.train_products} x {a.photos})", t)
    t = time.perf_counter()
    if synth_world(shop, a.shop_products, a.shop_seed, photos=a.photos, workers=a.workers):
        step(times, f"synth shop ({a.shop_products} x {a.photos})", t)
    t = time.perf_counter()
    split = root / "split.json"
    if not split.is_file():
        make_split(SplitConfig(data=train_data, out=split, test_fraction=0.1, seed=0))
        step(times, "split", t)
    t = time.perf_counter()
    fresh = not (root / "artifacts" / "model.json").is_file()
    artifacts = export_demo_generator(root, shop)
    if fresh:
        step(times, "export (generator + efficientnet_lite0, level 0)", t)

    overrides = json.loads(a.head_config.read_text()) if a.head_config else {}
    base = FitHeadConfig(artifacts=artifacts, data=train_data, split=split, threads=a.threads)
    base = replace(base, **overrides)
    heads: dict[str, dict] = {}
    shop_records = load_records(shop).records
    rows: dict[str, dict] = {}
    for mode in a.modes.split(","):
        t = time.perf_counter()
        doc = fit_head(replace(base, mode=mode))
        step(times, f"fit-head {mode} (features cached after the first)", t)
        heads[mode] = {k: doc[k] for k in ("chosen", "validation", "embedding_dim", "training")}
        t = time.perf_counter()
        feats, _, reused = cached_features(artifacts, shop_records, root / "head-cache", threads=a.threads,
                                           desc="shop features")
        if not reused:
            step(times, "shop features", t)
        info = read_head(read_artifacts(artifacts))
        query, catalog = info.sessions()
        rows[f"head {mode}"] = recall(query(feats.query(info.query_inputs)), feats.owner, catalog(feats.products))
    rows["frozen generated"] = recall(feats.generated, feats.owner, feats.products)
    rows["frozen photo"] = recall(feats.photos, feats.owner, feats.products)

    print(f"\nHeld-out shop: seed {a.shop_seed}, {len(feats.products)} products (the gallery), {len(feats.owner)} "
          f"photos (queries); training world: {a.train_products} products x {a.photos} photos, seed {a.train_seed}; "
          f"committed demo generator, efficientnet_lite0 at embed level 0.\n")
    print("| query | R@1 | R@5 | R@10 | chosen on validation (T, E, hidden, epochs) | validation R@1 / R@10 |")
    print("|---|---|---|---|---|---|")
    order = ["frozen photo", "frozen generated"] + [f"head {m}" for m in MODES if f"head {m}" in rows]
    for name in order:
        r = rows[name]
        mode = name.split()[-1]
        extra = " | |"
        if name.startswith("head"):
            c, v = heads[mode]["chosen"], heads[mode]["validation"]["recall"]
            extra = (f" | {c['temperature']:g}, {c['out_dim']}, {c['hidden']}, {c['epochs']} | "
                     f"{v['1']:.3f} / {v['10']:.3f} |")
        print(f"| {name} | {r['1']:.3f} | {r['5']:.3f} | {r['10']:.3f}{extra}")
    if "head fused" in rows and "head photo" in rows:
        gain = rows["head fused"]["10"] - rows["head photo"]["10"]
        print(f"\nfused - photo-only learned, R@10: {gain:+.3f} (the target: >= +0.10)")
    print("\nseconds per stage (this run): " + json.dumps(times))
    doc = {"args": {k: str(v) for k, v in vars(a).items()}, "shop": rows, "heads": heads,
           "times": previous.get("times", {}) | times, "gallery": len(feats.products), "queries": len(feats.owner),
           "numpy": np.__version__, "torch": torch.__version__}
    results_path.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
