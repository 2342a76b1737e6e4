"""Test helpers shared by every test package: tiny image folders made on the spot (no data is committed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def random_picture(rng: np.random.Generator, size: int) -> Image.Image:
    """A random, structured picture (blobs on a gradient): distinct perceptual hashes per call."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(0, 255, 3) * (0.5 + 0.5 * np.stack([xx, yy, 1 - xx], -1))
    img = Image.fromarray(base.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(size // 6, size // 2, 2)
        draw.ellipse([int(x0), int(y0), int(x0 + w), int(y0 + h)], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return img


def make_lookbook(folder: Path, products: int = 10, photos: int = 3, size: int = 32, seed: int = 0) -> Path:
    """Write a tiny LookBook-layout folder of random pictures; returns the folder."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    iid = 0
    for pid in range(products):
        random_picture(rng, size).save(folder / f"PID{pid:06d}_CLEAN1_IID{iid:06d}.jpg", quality=95)
        iid += 1
        for _ in range(photos):
            random_picture(rng, size).save(folder / f"PID{pid:06d}_CLEAN0_IID{iid:06d}.jpg", quality=95)
            iid += 1
    return folder
