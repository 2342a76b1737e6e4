"""Simulated raters, for testing the study's tools and showing what a report looks like. Never a result.

A simulated rater ranks an item's generated images by their RMSE against the item's true product image (STUDY/truth,
never served to people) plus Gaussian noise of `noise` per judgement, for both tasks alike: a stand-in with a
known answer, not a model of human perception (Sec. 5.3 asks people precisely because such measures fall short).
Their raters are marked `simulated` in the store, and `rtd study report` says so on every figure and table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from rtdgan.index.errors import UserError
from rtdgan.service.study.store import Store
from rtdgan.service.study.study import IMAGES, TRUTH, read_study


def _pixels(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0


def simulate(folder: Path, raters: int, *, noise: float = 0.05, complete: float = 1.0, seed: int = 0,
             responses: Path | None = None) -> dict[str, int]:
    """Add `raters` simulated raters to the study's store, each answering the first `complete` share of their
    plan; returns the store's counts."""
    if raters < 1 or not 0.0 < complete <= 1.0 or noise < 0:
        raise UserError(f"need --raters >= 1, 0 < --complete <= 1, --noise >= 0; got {raters}, {complete}, {noise}")
    study = read_study(folder)
    rmse: dict[tuple[str, str], float] = {}
    for item in study.items:
        truth_path = study.folder / TRUTH / f"{item.id}.png"
        with Image.open(truth_path) as product:
            size = max(16, min(product.size))  # compared at the true product image's size
        truth = _pixels(truth_path, size)
        for method, image in item.images.items():
            rmse[item.id, method] = float(np.sqrt(np.mean((_pixels(study.folder / IMAGES / f"{image}.png", size)
                                                           - truth) ** 2)))
    rng = np.random.default_rng(seed)
    store = Store(responses or study.responses)
    try:
        for r in range(raters):
            rater = store.add_rater(study, f"simulated-{r + 1}", rng=rng, simulated=True)
            steps = 0
            total = store.progress(rater)[1]
            while (step := store.next_step(rater)) is not None and steps < round(complete * total):
                scores = {m: rmse[step.item, m] + noise * rng.standard_normal() for m in study.methods}
                store.submit(rater, step, sorted(study.methods, key=scores.__getitem__))  # lowest error first
                steps += 1
        return store.counts()
    finally:
        store.close()
