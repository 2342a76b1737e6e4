"""The demo's check on any freshly drawn shop: R@1/5/10 of the served query and of the frozen kinds.

Synthesizes a shop (300 products x 4 photos at 64 px, the given seed and framing; skipped when it exists),
embeds its catalog into an index through the artifacts (`index.build.build_index`: the head's catalog side when
there is one), then runs `training.demo.measure` — `/search`'s own pipeline, every photo a query, the whole shop
the gallery. Issue #13 reports its held-out figures with it (use a seed used for nothing else).

    .venv/bin/python bench/shop_check.py --artifacts demo/artifacts --root /tmp/shops --seed 7100
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from index.build import build_index  # noqa: E402
from training.demo import measure  # noqa: E402
from training.synth import SynthConfig, synthesize  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--artifacts", type=Path, required=True, help="artifacts folder (`rtd export`, `rtd demo`)")
    p.add_argument("--root", type=Path, required=True, help="folder for the shop and its index")
    p.add_argument("--seed", type=int, required=True, help="the shop's seed (one used for nothing else)")
    p.add_argument("--framing", choices=("lookbook", "street"), default="lookbook")
    p.add_argument("--products", type=int, default=300)
    a = p.parse_args()
    data = a.root / f"shop-{a.framing}-{a.seed}"
    marker = data / "synth.json"
    if not (marker.is_file() and json.loads(marker.read_text()).get("complete")):
        synthesize(SynthConfig(out=data, products=a.products, photos_per_product=4, size=64, seed=a.seed, workers=2,
                               framing=a.framing))
    index = a.root / f"index-{a.framing}-{a.seed}"
    if not (index / "index.json").is_file():
        build_index(a.artifacts, data, index)
    t = time.perf_counter()
    m = measure(a.artifacts, index, data)
    print(json.dumps({"seed": a.seed, "framing": a.framing, "queries": m["queries"], "catalog": m["catalog"],
                      "recall": m["recall"], "seconds": round(time.perf_counter() - t, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
