"""Does a smaller embedder input keep the fused head's recall? (The fused query's cost on /search.)

The fused query embeds two images (the generated one and the photo) where the frozen protocol embeds one; at
the demo's size the embedder dominates /search's model time, and EfficientNet-Lite0 resizes every 64 px image
to 224 px first. This probe exports the committed demo generator with the embedder resizing to
`--input-size` instead (rtd export --embed-input-size), fits a fused head on the same training world as
bench/experiments/head_probe.py (its ROOT is reused read-only: train-data, split.json, and the 224 px artifacts with their
fused head), and scores both heads on a VALIDATION shop drawn with its own seed (default 5200, used for
nothing else), gallery = the whole shop, every photo a query. It also times the two embedders side by side
(batch 1 and 2, this process, median of interleaved runs).

    .venv/bin/python bench/experiments/embed_size_probe.py --probe-root /tmp/rtd-head-probe --root /tmp/rtd-embed-size
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bench.common

import numpy as np  # noqa: E402

from bench.common import export_demo_generator, interleaved_ms, synth_world  # noqa: E402
from rtdgan.index.runtime.artifacts import read_artifacts  # noqa: E402
from rtdgan.index.runtime.head import read_head  # noqa: E402
from rtdgan.index.runtime.onnx import OnnxEmbedder  # noqa: E402
from rtdgan.training.data import load_records  # noqa: E402
from rtdgan.training.head import FitHeadConfig, cached_features, fit_head, recall  # noqa: E402


def embedder_ms(paths: dict[str, Path], size: int, repeats: int = 40) -> dict[str, dict[int, float]]:
    """Median ms of each embedder at batch 1 and 2, the calls interleaved."""
    sessions = {name: OnnxEmbedder(read_artifacts(p).folder / "embedder.onnx", threads=2) for name, p in paths.items()}
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, size, size)).astype(np.float32)
    calls = {(name, b): (lambda s=session, b=b: s(x[:b])) for name, session in sessions.items() for b in (1, 2)}
    times = interleaved_ms(calls, repeats, warmup=0)
    return {name: {b: round(float(np.median(times[name, b])), 2) for b in (1, 2)} for name in sessions}


def head_recall(artifacts: Path, shop: Path, cache: Path) -> dict:
    feats, _, _ = cached_features(artifacts, load_records(shop).records, cache, desc="shop features")
    info = read_head(read_artifacts(artifacts))
    query, catalog = info.sessions()
    return {"head fused": recall(query(feats.query(info.query_inputs)), feats.owner, catalog(feats.products)),
            "frozen generated": recall(feats.generated, feats.owner, feats.products),
            "frozen photo": recall(feats.photos, feats.owner, feats.products)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--probe-root", type=Path, default=Path("/tmp/rtd-head-probe"))
    p.add_argument("--root", type=Path, default=Path("/tmp/rtd-embed-size"))
    p.add_argument("--input-size", type=int, default=128)
    p.add_argument("--val-shop-seed", type=int, default=5200)
    a = p.parse_args()
    a.root.mkdir(parents=True, exist_ok=True)
    shop = a.root / f"val-shop-{a.val_shop_seed}"
    synth_world(shop, 300, a.val_shop_seed)
    small = export_demo_generator(a.root, shop, a.input_size, name=f"artifacts-{a.input_size}")
    train, split = a.probe_root / "train-data", a.probe_root / "split.json"
    if not (read_artifacts(small).folder / "head.json").is_file():
        fit_head(FitHeadConfig(artifacts=small, data=train, split=split, mode="fused", cache=a.root / "head-cache"))
    big = a.probe_root / "artifacts"
    rows = {"224": head_recall(big, shop, a.root / "head-cache"),
            str(a.input_size): head_recall(small, shop, a.root / "head-cache")}
    timing = embedder_ms({"224": big, str(a.input_size): small}, read_artifacts(small).size)
    chosen = {size: read_head(read_artifacts(path)).doc["chosen"] for size, path in (("224", big), (str(a.input_size), small))}
    print(f"\nvalidation shop seed {a.val_shop_seed} (300 products x 4 photos, gallery = whole shop); efficientnet_lite0, "
          f"level 0; fused head fitted on {train} (validation grid)\n")
    print("| embedder input | frozen generated R@1 / R@10 | frozen photo R@10 | head fused R@1 / R@5 / R@10 | "
          "embedder ms, batch 1 / batch 2 |")
    print("|---|---|---|---|---|")
    for size, r in rows.items():
        g, ph, h = r["frozen generated"], r["frozen photo"], r["head fused"]
        print(f"| {size} px | {g['1']:.3f} / {g['10']:.3f} | {ph['10']:.3f} | {h['1']:.3f} / {h['5']:.3f} / {h['10']:.3f} | "
              f"{timing[size][1]} / {timing[size][2]} |")
    (a.root / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "rows": rows,
                                                      "embedder_ms": timing, "chosen": chosen}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
