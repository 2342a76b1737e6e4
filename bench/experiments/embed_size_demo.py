"""A smaller embedder input for the demo's head (the fused query's cost on /search): validation recall and model time.

The fused query embeds two images where the frozen protocol embeds one, and EfficientNet-Lite0 resizes each 64 px
image to 224 px first. Two 160 px embeddings cost about one 224 px one, so `rtd export --embed-input-size 160`
would bring the head's path near the +15 % bound. This probe measures what that costs in recall, on VALIDATION
data only: it exports the committed demo generator with the embedder at `--input-size`, copies the person crop
from the demo's artifacts, fits a fused head on the demo's own head world (`rtd demo`'s head-world/: train-data,
split.json; features cached in its head-cache/) at the committed head's grid point, and prints the head's
validation recall beside the committed head card's at the same grid point (224 px). Then it times the model
path of one /search request side by side (onnxruntime, 2 threads, interleaved, medians): the frozen protocol's
path (generator, one 224 px embedding) against crop + generator + two embeddings + head, at 224 px and at the size.

    .venv/bin/python bench/experiments/embed_size_demo.py --world demo/head-world --demo-artifacts demo/artifacts --input-size 160
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bench.common

import numpy as np  # noqa: E402

from bench.common import ROOT, export_demo_generator, interleaved_ms  # noqa: E402
from rtdgan.index.runtime.artifacts import read_artifacts  # noqa: E402
from rtdgan.index.runtime.backends import make_session  # noqa: E402
from rtdgan.index.runtime.crop import CROP_JSON, CROP_ONNX  # noqa: E402
from rtdgan.index.runtime.head import QUERY_ONNX  # noqa: E402
from rtdgan.training.head import FitHeadConfig, train_fitted_head  # noqa: E402

CARD = ROOT / "models" / "pretrained" / "head-demo-64.json"


def model_ms(graphs: dict[str, Path], size: int, dim: int, repeats: int) -> dict[str, float]:
    """Median ms of each path's graph calls, the paths interleaved."""
    sessions = {name: make_session(path, threads=2) for name, path in graphs.items()}
    photo = np.random.default_rng(0).uniform(-1, 1, (2, 3, size, size)).astype(np.float32)
    paths = {"frozen: generator + embedder(1)": [("generator", photo[:1]), ("embedder-224", photo[:1])],
             "crop + generator + embedder-224(2) + head": [("crop", photo[:1]), ("generator", photo[:1]),
                                                           ("embedder-224", photo), ("head", None)],
             "crop + generator + embedder-small(2) + head": [("crop", photo[:1]), ("generator", photo[:1]),
                                                             ("embedder-small", photo), ("head", None)]}
    features = np.random.default_rng(1).standard_normal((1, 2 * dim)).astype(np.float32)

    def path_of(calls: list) -> None:
        for graph, x in calls:
            s = sessions[graph]
            s.run(None, {s.get_inputs()[0].name: features if x is None else x})

    times = interleaved_ms({name: (lambda c=calls: path_of(c)) for name, calls in paths.items()}, repeats, warmup=0)
    return {name: round(float(np.median(v[5:])), 2) for name, v in times.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", type=Path, required=True, help="the demo's head world (DEMO/head-world)")
    p.add_argument("--demo-artifacts", type=Path, required=True, help="the demo's artifacts (224 px, crop, head)")
    p.add_argument("--root", type=Path, default=Path("/tmp/rtd-embed-size-demo"))
    p.add_argument("--input-size", type=int, default=160)
    p.add_argument("--repeats", type=int, default=60)
    a = p.parse_args()
    card = json.loads(CARD.read_text())
    point = card["chosen"]  # the committed head's grid point: the comparison is at the same one
    demo = read_artifacts(a.demo_artifacts)
    small = export_demo_generator(a.root, a.world / "lookbook", a.input_size, name=f"artifacts-{a.input_size}")
    folder = read_artifacts(small).folder
    for name in (CROP_JSON, CROP_ONNX):
        shutil.copy(demo.folder / name, folder / name)
    fitted = train_fitted_head(FitHeadConfig(
        artifacts=small, data=a.world / "train-data", split=a.world / "split.json", mode="fused", seed=0,
        temperatures=(point["temperature"],), widths=(point["out_dim"],), hidden=(point["hidden"],),
        epochs=tuple(sorted({3, 6, point["epochs"]})), refit=False, cache=a.world / "head-cache"))
    print(f"\nvalidation part of {a.world / 'train-data'} ({fitted.doc['validation']['products']} products), "
          f"efficientnet_lite0, fused head at T {point['temperature']}, E {point['out_dim']}\n")
    print("| embedder input | epochs | R@1 | R@5 | R@10 |\n|---|---|---|---|---|")
    for size, grid in (("224 (committed card)", card["validation"]["grid"]), (a.input_size, fitted.doc["validation"]["grid"])):
        for row in grid:
            if row["temperature"] == point["temperature"]:
                r = row["recall"]
                print(f"| {size} | {row['epochs']} | {r['1']:.3f} | {r['5']:.3f} | {r['10']:.3f} |")
    graphs = {"generator": demo.folder / "generator.onnx", "crop": demo.folder / CROP_ONNX,
              "embedder-224": demo.folder / "embedder.onnx", "embedder-small": folder / "embedder.onnx",
              "head": demo.folder / QUERY_ONNX}
    ms = model_ms(graphs, demo.size, int(demo.model["embedder"]["dim"]), a.repeats)
    base = next(iter(ms.values()))
    print("\n| model path of one /search (batch 1) | ms | ratio |\n|---|---|---|")
    for name, value in ms.items():
        print(f"| {name.replace('small', str(a.input_size))} | {value} | {value / base:.2f} |")
    (a.root / "results.json").write_text(json.dumps({"validation": fitted.doc["validation"], "model_ms": ms,
                                                      "input_size": a.input_size}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
