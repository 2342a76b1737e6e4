"""The demo's check on any freshly drawn shop: R@1/5/10 of the served query and of the frozen kinds.

Synthesizes a shop (300 products x 4 LookBook-framed photos at 64 px, the given seed; skipped when it exists),
embeds its catalog into an index through the artifacts (`rtdgan.index.build.build_index`: the head's catalog side when
there is one), then runs `rtdgan.training.demo_check.measure` — `/search`'s own pipeline (the person crop too, when the
artifacts have one), every photo a query, the whole shop the gallery. `--framing street` queries with
street-framed photos of the same products instead (the same seed, photos at --photo-size px), as the demo's check
does. The held-out figures of the retrieval head and the crop are measured with it (use a seed used for
nothing else).

    .venv/bin/python bench/shop_check.py --artifacts demo/artifacts --root /tmp/shops --seed 7100
    .venv/bin/python bench/shop_check.py --artifacts demo/artifacts --root /tmp/shops --seed 7300 --framing street
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.common

from bench.common import synth_world  # noqa: E402
from rtdgan.index.build import build_index  # noqa: E402
from rtdgan.training.demo_check import measure  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--artifacts", type=Path, required=True, help="artifacts folder (`rtd export`, `rtd demo`)")
    p.add_argument("--root", type=Path, required=True, help="folder for the shop and its index")
    p.add_argument("--seed", type=int, required=True, help="the shop's seed (one used for nothing else)")
    p.add_argument("--framing", choices=("lookbook", "street"), default="lookbook")
    p.add_argument("--products", type=int, default=300)
    p.add_argument("--photo-size", type=int, default=256, help="street photos' side (the crop cuts from it)")
    a = p.parse_args()

    def shop(framing: str, size: int) -> Path:
        data = a.root / (f"shop-{framing}-{a.seed}" + (f"-{size}" if framing == "street" else ""))
        synth_world(data, a.products, a.seed, framing, size=size, workers=2)
        return data

    data = shop("lookbook", 64)  # the catalog (and the LookBook-framed queries)
    queries = shop("street", a.photo_size) if a.framing == "street" else None
    index = a.root / f"index-lookbook-{a.seed}"
    if not (index / "index.json").is_file():
        build_index(a.artifacts, data, index)
    t = time.perf_counter()
    m = measure(a.artifacts, index, data, queries_from=queries)
    print(json.dumps({"seed": a.seed, "framing": a.framing, "photo_size": a.photo_size if queries else 64,
                      "crop": m["crop"], "queries": m["queries"], "catalog": m["catalog"], "recall": m["recall"],
                      "seconds": round(time.perf_counter() - t, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
