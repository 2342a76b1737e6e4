"""Draw Figures 3 and 6 of docs/results-synthetic.md from the experiment's committed generators.

Figure 3: photos of the held-out shop, what rtdGAN N = 3, N = 1, pix2pix and PLDT generate from them, and the
ground truth; Figure 6: the N = 3 generator's image at each stage (training/figures.py says how and its caveat).
Reproducible: the same photos (seeded) and weights give the same PNG files.

    .venv/bin/python bench/experiments/figures_synthetic.py            # writes docs/results-synthetic/figure{3,6}.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bench.common

from bench.common import PRETRAINED, ROOT, say  # noqa: E402

RESULTS = ROOT / "docs" / "results-synthetic"


def weights_files() -> dict[str, Path]:
    """The experiment's generators: N = 3 is the committed demo generator, the others their carried runs."""
    return {"rtdgan-n3": PRETRAINED, **{name: RESULTS / "carry" / f"{name}.pt" for name in ("rtdgan-n1", "pix2pix", "pldt")}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for figure3.png and figure6.png")
    p.add_argument("--rows", type=int, default=6, help="photos (rows) per figure")
    p.add_argument("--seed", type=int, default=0, help="which of the shop's 1,000 products are shown")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    a = p.parse_args()
    import torch

    from rtdgan.training.figures import draw_figures

    missing = [str(path) for path in weights_files().values() if not path.is_file()]
    if missing:
        say(f"error: missing weights {missing}")
        return 1
    torch.set_num_threads(a.threads)
    for path in draw_figures(a.out, weights_files(), rows=a.rows, seed=a.seed):
        say(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
