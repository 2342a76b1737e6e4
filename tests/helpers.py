"""Test helpers shared by every test package: tiny image folders made on the spot (no data is committed)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pytest
from PIL import Image, ImageDraw


def absolute_paths(doc: object) -> list[str]:
    """Every string in a JSON document that is an absolute path (of the machine that wrote it)."""
    if isinstance(doc, dict):
        return [p for value in doc.values() for p in absolute_paths(value)]
    if isinstance(doc, list):
        return [p for value in doc for p in absolute_paths(value)]
    return [doc] if isinstance(doc, str) and (PurePosixPath(doc).is_absolute() or PureWindowsPath(doc).drive) else []


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


def venv_env(venv: Path, base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """A clean environment for the commands of a fresh venv: `base` (e.g. a Dockerfile's ENV), the venv first on
    PATH, pip's settings and proxies kept, nothing of this test run's Python; PIP_FIND_LINKS is unset as the
    Makefile does (a machine's pip config may point it at a CPU torch wheel that torchvision cannot use)."""
    keep = {k: v for k, v in os.environ.items()
            if k in ("HOME", "LANG", "TMPDIR", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE") or k.lower().endswith("_proxy")
            or (k.startswith("PIP_") and k != "PIP_FIND_LINKS")}
    return keep | dict(base or {}) | {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PIP_FIND_LINKS": "",
                                       "PIP_DISABLE_PIP_VERSION_CHECK": "1"} | extra


def fresh_venv(tmp: Path) -> Path:
    """A new venv at tmp/venv made by this Python; the test is skipped, with the reason, when pip reaches no
    package index (PyPI or a mirror in pip's config) to install into it."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    probe = subprocess.run([str(venv / "bin" / "pip"), "download", "--no-deps", "--dest", str(tmp / "probe"),
                            "tqdm>=4.66"], env=venv_env(venv), capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        pytest.skip(f"no package index reachable for pip (PyPI or a configured mirror): {probe.stderr.strip()[-300:]}")
    return venv
