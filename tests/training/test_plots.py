"""The report plots (training/plots.py): matplotlib PNG + SVG, interval bands, the chance line beneath the data."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rtdgan.training.plots import CHANCE_COLOUR, Curve, recall_plot, report_curve

KS = [1, 5, 10, 20, 60]
ROW = {"method": "generated", "label": "rtdGAN (N=3)", "recall": {"1": 0.1, "5": 0.3, "10": 0.45, "20": 0.6, "60": 0.9},
       "recall_ci": {"1": [0.05, 0.15], "5": [0.22, 0.38], "10": [0.36, 0.52], "20": [0.5, 0.7], "60": [0.84, 0.95]}}
PHOTO = {"method": "photo", "label": "photo (no generation)", "recall": {str(k): min(1.0, k / 80) for k in KS}}
CHANCE = Curve("chance (K / 100)", KS, [k / 100 for k in KS], kind="chance")


def _grey_pixels(path: Path) -> int:
    """Pixels of the chance line's grey."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    grey = round(float(CHANCE_COLOUR) * 255)
    return int((np.abs(rgb - grey).max(axis=2) <= 6).sum())


def test_a_hand_made_report_draws_as_png_and_svg(tmp_path: Path) -> None:
    written = recall_plot([report_curve(ROW), report_curve(PHOTO), CHANCE], tmp_path / "recall.png", "Recall@K (test)")
    assert written == [tmp_path / "recall.png", tmp_path / "recall.svg"]
    with Image.open(written[0]) as im:
        im.verify()  # a whole, valid PNG
    with Image.open(written[0]) as im:
        assert im.format == "PNG" and im.size == (880, 480)
    svg = ET.parse(written[1]).getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    text = written[1].read_text()
    assert text.count("PolyCollection_") == 1  # one interval band: the row with recall_ci; the photo row has none
    assert "Recall@K" in text and "rtdGAN (N=3)" in text and "chance (K / 100)" in text


def test_the_chance_line_is_drawn_beneath_the_data(tmp_path: Path) -> None:
    """A method exactly at chance must hide the dashed chance line (the PIL plot drew chance over it)."""
    alone = recall_plot([CHANCE], tmp_path / "alone.png", "")[0]
    at_chance = Curve("at chance", KS, [k / 100 for k in KS])
    covered = recall_plot([at_chance, CHANCE], tmp_path / "covered.png", "")[0]
    # What grey remains is the legend's sample of the dashed line.
    assert _grey_pixels(covered) < 0.4 * _grey_pixels(alone)


def test_report_curve_reads_rows_without_intervals_and_refuses_nothing_to_draw(tmp_path: Path) -> None:
    curve = report_curve(PHOTO | {"recall": {"10": 0.2, "1": 0.05}})
    assert curve.ks == [1, 10] and curve.values == [0.05, 0.2] and curve.low is None and curve.kind == "baseline"
    with pytest.raises(ValueError, match="at least one curve"):
        recall_plot([], tmp_path / "x.png", "")
