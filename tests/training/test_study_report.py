"""`rtd study report`: average human rank, the two-way bootstrap interval, win rates and Kendall's W against
hand-computed cases; the report files on a partly answered study of simulated raters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rtdgan.service.cli import main
from rtdgan.service.study.simulate import simulate
from rtdgan.training.study_report import (
    bootstrap_interval,
    build_report,
    kendall_w,
    resample_means,
    to_arrays,
    win_rates,
)
from tests.service.study_world import make_study

METHODS = ("a", "b", "c")


def row(rater: str, item: str, *ranking: str) -> dict:
    return {"rater": rater, "item": item, "ranking": list(ranking), "simulated": False, "task": "realism"}


# Two raters x two items; method a's ranks: r1/i1 1, r1/i2 2, r2/i1 1, r2/i2 3.
ROWS = [row("r1", "i1", "a", "b", "c"), row("r1", "i2", "b", "a", "c"),
        row("r2", "i1", "a", "c", "b"), row("r2", "i2", "b", "c", "a")]


def test_average_rank_and_resampled_means_by_hand() -> None:
    data = to_arrays(ROWS, METHODS)
    assert data.ranks.tolist() == [[1, 2, 3], [2, 1, 3], [1, 3, 2], [3, 1, 2]]
    assert data.ranks.mean(axis=0).tolist() == [7 / 4, 7 / 4, 10 / 4]
    # Draw 1: rater r1 twice, each item once -> r1's two responses, each weight 2: a = (1 + 2) / 2.
    # Draw 2: both raters once, item i2 twice -> the two i2 responses: a = (2 + 3) / 2, b = 1, c = (3 + 2) / 2.
    # Draw 3: r2 once, i1 once (r1 and i2 not drawn) -> r2/i1 alone; draw 4 weighs nothing -> NaN.
    means = resample_means(data, np.array([[2, 0], [1, 1], [0, 1], [0, 0]]), np.array([[1, 1], [0, 2], [1, 0], [1, 1]]))
    assert means[:3].tolist() == [[1.5, 1.5, 3.0], [2.5, 1.0, 2.5], [1.0, 3.0, 2.0]]
    assert np.isnan(means[3]).all()


def test_bootstrap_interval_by_hand() -> None:
    # One rater, two items, a first on one and second on the other: the item resamples give a's mean 1 (both
    # draws i1, p = 1/4), 1.5 (p = 1/2) or 2 (p = 1/4); the 2.5th and 97.5th percentiles are 1 and 2.
    data = to_arrays([row("r", "i1", "a", "b"), row("r", "i2", "b", "a")], ("a", "b"))
    low, high = bootstrap_interval(data, draws=2000, seed=0)
    assert low.tolist() == [1.0, 1.0] and high.tolist() == [2.0, 2.0]
    # Everyone agrees: every resample has the same means, the interval is the point.
    same = to_arrays([row(r, i, "c", "a", "b") for r in ("r1", "r2", "r3") for i in ("i1", "i2")], METHODS)
    low, high = bootstrap_interval(same, draws=500, seed=1)
    assert low.tolist() == high.tolist() == [2.0, 3.0, 1.0]


def test_win_rates_and_kendalls_w_by_hand() -> None:
    wins = win_rates(to_arrays(ROWS, METHODS).ranks)
    assert wins[0, 1] == 0.5 and wins[1, 0] == 0.5  # a above b in r1/i1 and r2/i1
    assert wins[0, 2] == 0.75 and wins[2, 0] == 0.25 and wins[1, 2] == 0.75
    assert kendall_w(np.array([[1, 2, 3]] * 4)) == 1.0
    assert kendall_w(np.array([[1, 2, 3], [3, 2, 1]])) == 0.0
    # Rank sums 4, 6, 8 (mean 6): S = 8, W = 12 * 8 / (3^2 * (3^3 - 3)) = 96 / 216.
    assert kendall_w(np.array([[1, 2, 3], [1, 3, 2], [2, 1, 3]])) == pytest.approx(96 / 216)
    assert np.isnan(kendall_w(np.array([[1, 2, 3]])))


def test_build_report_with_partial_data() -> None:
    manifest = {"methods": [{"name": m} for m in METHODS], "tasks": [{"key": "realism"}, {"key": "similarity"}],
                "items": [{"id": "i1"}, {"id": "i2"}, {"id": "i3"}]}
    report = build_report(manifest, ROWS, draws=200)
    realism = report["tasks"]["realism"]
    assert (report["raters"], report["responses"], report["simulated_raters"]) == (2, 4, 0)
    assert realism["methods"]["c"]["average_rank"] == 2.5 and realism["items"] == 2
    assert realism["kendall_w"]["items_with_2_raters"] == 2
    assert report["tasks"]["similarity"] == {"responses": 0, "raters": 0, "items": 0, "methods": {}}


@pytest.mark.slow  # matplotlib's import and two PNG + SVG figures: about 3 s here
def test_report_files_of_a_running_study_of_simulated_raters(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    study = make_study(tmp_path, items=5)
    assert main(["study", "report", str(study.folder), "--bootstrap", "200"]) == 0  # no rater yet
    simulate(study.folder, 4, complete=0.6, seed=2)
    assert main(["study", "report", str(study.folder), "--out", str(tmp_path / "report"), "--bootstrap", "300"]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["raters"] == 4 and report["simulated_raters"] == 4 and report["responses"] == 24
    for task in ("realism", "similarity"):
        ranks = report["tasks"][task]["methods"]
        assert ranks["identity"]["average_rank"] < ranks["swap"]["average_rank"]
        assert all(v["ci95"][0] <= v["average_rank"] <= v["ci95"][1] for v in ranks.values())
    assert "SIMULATED" in (tmp_path / "report" / "report.md").read_text()
    lines = (tmp_path / "report" / "responses.csv").read_text().splitlines()
    assert len(lines) == 25 and "rank_identity" in lines[0]
    for suffix in ("png", "svg"):
        assert (tmp_path / "report" / f"human-rank.{suffix}").stat().st_size > 1000
    assert "simulated" in capsys.readouterr().err
