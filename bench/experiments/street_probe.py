"""Street framing: what retrieval does the committed LookBook-trained generator reach on street-framed photos
with a learned head trained on a mixed-framing world, and would a person crop step help?

    training world (mixed framing): two synthetic worlds of 64 px, 4 photos per product, --half products each,
        one street-framed (seed 4100: a person 40-95 % of the height, anywhere) and one LookBook-framed
        (seed 4101: 80-95 %, centred), joined by a pairs manifest (ROOT/train-mixed/pairs.csv; product ids
        prefixed s/l) -> `rtd data split` (10 % test, unused here)
    generator: the committed demo generator (models/pretrained/rtdgan-demo-64.pt, trained on LookBook framing
        only), exported as bench/experiments/head_probe.py does, EfficientNet-Lite0 at embed level 0 (full resolution)
    heads: `rtd fit-head` (training/head.py, its default validation grid, chosen on validation products of the
        training split only) in modes photo and fused, each into its own copy of the export
    held-out shops (seeds used for nothing else, 300 products x 4 photos, gallery = the whole shop, every photo
        a query): street (seed 4200), LookBook (seed 4201), and two oracle crops of the street shop: each street
        photo cropped to the person's box (known to the synthesizer: the upper bound of a person detector +
        crop step), squared to LookBook's framing (person ~87.5 % of the side) and resized to 64 px, cut from
        the 64 px photo itself (crop64: the pixels the service has today) or from the same photo rendered at
        256 px (crop256: a detector on the full-size upload, before the 64 px preprocessing)
    compared: frozen features (photo, generated, fused = summed cosines), the mixed heads, and the
        LookBook-only fused head of bench/experiments/head_probe.py (--lookbook-head, default /tmp/rtd-head-probe/artifacts,
        copied, read only)

Every stage is skipped when its output exists (features are cached by training/head.py); the results are
written to ROOT/results.json after each stage and a table is printed.

    .venv/bin/python bench/experiments/street_probe.py --root /tmp/rtd-street-probe --threads 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bench.common

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import crop_shop, export_demo_generator, say, synth_world  # noqa: E402
from rtdgan.index.runtime.artifacts import read_artifacts  # noqa: E402
from rtdgan.index.runtime.head import read_head  # noqa: E402
from rtdgan.training.data import load_records, write_pairs_manifest  # noqa: E402
from rtdgan.training.head import FitHeadConfig, cached_features, fit_head, frozen_recall, recall  # noqa: E402
from rtdgan.training.split import SplitConfig, make_split  # noqa: E402

MODES = ("photo", "fused")


class Results:
    """ROOT/results.json, rewritten after each stage."""

    def __init__(self, path: Path, args: dict) -> None:
        self.path = path
        old = json.loads(path.read_text()) if path.is_file() else {}
        self.doc = {"args": args, "times": old.get("times", {}), "shops": old.get("shops", {}),
                    "heads": old.get("heads", {}), "numpy": np.__version__, "torch": torch.__version__}

    def time(self, name: str, start: float) -> None:
        self.doc["times"][name] = round(time.perf_counter() - start, 1)
        say(f"{name}: {self.doc['times'][name]} s")
        self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps(self.doc, indent=1) + "\n")


def head_copy(base: Path, out: Path) -> Path:
    """A copy of the export without any head files, for one fit (fit-head writes into its artifacts)."""
    if not out.exists():
        shutil.copytree(base, out, ignore=shutil.ignore_patterns("head*"))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("/tmp/rtd-street-probe"))
    p.add_argument("--half", type=int, default=2500, help="training products per framing")
    p.add_argument("--train-seeds", default="4100,4101", help="street world, LookBook world")
    p.add_argument("--shop-products", type=int, default=300)
    p.add_argument("--shop-seeds", default="4200,4201", help="street shop, LookBook shop")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime and torch threads")
    p.add_argument("--modes", default=",".join(MODES), help="mixed heads to fit, comma-separated")
    p.add_argument("--lookbook-head", type=Path, default=Path("/tmp/rtd-head-probe/artifacts"),
                   help="artifacts with head_probe.py's LookBook-only head (copied; skipped if missing)")
    p.add_argument("--no-crop", action="store_true", help="skip the oracle crop shops")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    root = a.root
    root.mkdir(parents=True, exist_ok=True)
    res = Results(root / "results.json", {k: str(v) for k, v in vars(a).items()})
    street_seed, lookbook_seed = map(int, a.train_seeds.split(","))
    shop_street_seed, shop_lookbook_seed = map(int, a.shop_seeds.split(","))

    # ---- data -------------------------------------------------------------------------------------------
    worlds = {"s": root / "train-street", "l": root / "train-lookbook"}
    for (prefix, folder), seed in zip(worlds.items(), (street_seed, lookbook_seed), strict=True):
        t = time.perf_counter()
        framing = "street" if prefix == "s" else "lookbook"
        if synth_world(folder, a.half, seed, framing):
            res.time(f"synth {folder.name} ({a.half} x 4, seed {seed})", t)
    shops = {"street": (root / "shop-street", shop_street_seed, "street"),
             "lookbook": (root / "shop-lookbook", shop_lookbook_seed, "lookbook")}
    for folder, seed, framing in shops.values():
        t = time.perf_counter()
        if synth_world(folder, a.shop_products, seed, framing):
            res.time(f"synth {folder.name} ({a.shop_products} x 4, seed {seed})", t)
    shop_folders = {name: folder for name, (folder, _, _) in shops.items()}
    if not a.no_crop:
        t = time.perf_counter()
        big = root / "shop-street-256"
        if synth_world(big, a.shop_products, shop_street_seed, "street", size=256):
            res.time(f"synth {big.name} ({a.shop_products} x 4, seed {shop_street_seed}, 256 px)", t)
        for name, source in (("street-crop64", root / "shop-street"), ("street-crop256", big)):
            t = time.perf_counter()
            out = root / f"shop-{name}"
            if crop_shop(source, root / "shop-street", out, shop_street_seed):
                res.time(f"oracle crop {name}", t)
            shop_folders[name] = out
    mixed = root / "train-mixed"
    if not (mixed / "pairs.csv").is_file():
        write_pairs_manifest(mixed, [(prefix, folder, None) for prefix, folder in worlds.items()])
    split = root / "split.json"
    t = time.perf_counter()
    if not split.is_file():
        make_split(SplitConfig(data=mixed, out=split, test_fraction=0.1, seed=0))
        res.time("split (mixed world)", t)

    # ---- export and heads -------------------------------------------------------------------------------
    t = time.perf_counter()
    fresh = not (root / "artifacts" / "model.json").is_file()
    base = export_demo_generator(root, root / "shop-lookbook")
    if fresh:
        res.time("export (committed generator + efficientnet_lite0, level 0)", t)
    cache = root / "head-cache"
    heads: dict[str, Path] = {}
    for mode in a.modes.split(","):
        folder = head_copy(base, root / f"artifacts-{mode}")
        heads[f"mixed head {mode}"] = folder
        try:
            read_head(read_artifacts(folder))
            continue  # fitted already
        except Exception:  # noqa: BLE001 - no head (yet): fit it
            pass
        t = time.perf_counter()
        doc = fit_head(FitHeadConfig(artifacts=folder, data=mixed, split=split, mode=mode, threads=a.threads,
                                     cache=cache))
        res.time(f"fit-head {mode} (mixed world; features cached after the first)", t)
        res.doc["heads"][f"mixed head {mode}"] = {k: doc[k] for k in ("chosen", "validation", "training")}
        res.save()
    if a.lookbook_head.is_dir():
        lb = root / "lookbook-head"
        if not lb.exists():
            shutil.copytree(a.lookbook_head, lb)
        heads["lookbook-only head fused"] = lb
        doc = read_head(read_artifacts(lb)).doc
        res.doc["heads"]["lookbook-only head fused"] = {k: doc[k] for k in ("chosen", "validation", "training")}

    # ---- evaluation -------------------------------------------------------------------------------------
    for shop, folder in shop_folders.items():
        records = load_records(folder).records
        rows = res.doc["shops"].setdefault(shop, {})
        t = time.perf_counter()
        feats, _, reused = cached_features(base, records, cache, threads=a.threads, desc=f"{shop} features")
        if not reused:
            res.time(f"features {shop}", t)
        rows["frozen photo"] = frozen_recall(feats, ("photo",))
        rows["frozen generated"] = frozen_recall(feats, ("generated",))
        rows["frozen fused (summed cosines)"] = frozen_recall(feats, ("generated", "photo"))
        for name, art in heads.items():
            info = read_head(read_artifacts(art))
            t = time.perf_counter()
            hf, _, reused = cached_features(art, records, cache, threads=a.threads, desc=f"{shop} features")
            if not reused:
                res.time(f"features {shop} ({name}'s artifacts)", t)
            query, catalog = info.sessions(threads=a.threads)
            rows[name] = recall(query(hf.query(info.query_inputs)), hf.owner, catalog(hf.products))
        rows["_size"] = {"gallery": len(feats.products), "queries": len(feats.owner)}
        res.save()

    print(f"\nTraining world: {a.half} street (seed {street_seed}) + {a.half} LookBook (seed {lookbook_seed}) "
          f"products x 4 photos, 64 px, split 90/10; committed LookBook-trained demo generator, "
          f"efficientnet_lite0 at embed level 0. Shops: {a.shop_products} products x 4 photos, gallery = the "
          f"whole shop, every photo a query.\n")
    names = list(next(iter(res.doc["shops"].values())).keys())
    names = [n for n in names if not n.startswith("_")]
    shops_done = list(res.doc["shops"])
    print("| query | " + " | ".join(f"{s} R@1 | {s} R@10" for s in shops_done) + " |")
    print("|---|" + "---|---|" * len(shops_done))
    for n in names:
        cells = []
        for s in shops_done:
            r = res.doc["shops"][s].get(n)
            cells += [f"{r['1']:.3f}", f"{r['10']:.3f}"] if r else ["", ""]
        print(f"| {n} | " + " | ".join(cells) + " |")
    print("\nchosen on validation (mixed world's validation products):")
    for name, h in res.doc["heads"].items():
        c, v = h["chosen"], h["validation"]["recall"]
        print(f"  {name}: T {c['temperature']:g}, E {c['out_dim']}, hidden {c['hidden']}, {c['epochs']} epochs; "
              f"validation R@1 {v['1']:.3f} R@10 {v['10']:.3f} ({h['training']['products']} products)")
    print("\nseconds per stage: " + json.dumps(res.doc["times"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
