"""Figures 3 and 6 (training/figures.py): the committed PNGs are what the command draws from the committed weights."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.experiments.figures_synthetic import RESULTS, weights_files  # noqa: E402
from rtdgan.training.figures import draw_figures  # noqa: E402


@pytest.mark.slow  # five generators and twelve photos on the CPU: about 10 s on 2 cores
def test_the_committed_figures_are_redrawn_byte_for_byte(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    written = draw_figures(tmp_path, weights_files())
    for path in written:
        with Image.open(path) as img:
            assert img.size[0] > 600 and img.size[1] > 700
        assert path.read_bytes() == (RESULTS / path.name).read_bytes(), f"{path.name} differs from the committed one"
    assert "figures_synthetic.py" in (ROOT / "docs" / "results-synthetic.md").read_text()
