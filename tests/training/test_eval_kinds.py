"""`rtd eval` with a retrieval head: every query kind side by side, per category, one-line refusals.

The service tests' torch-free world (tests/service/conftest.py): a 16 px generator that swaps red and blue, a
random-projection embedder, and a fused head whose query side reads the generated image's features through
its catalog side's projection. A photo that is its product image with red and blue swapped is generated back
into exactly that image, so the head finds it first with score 1; the other photos are random pictures,
ranked as the head's space ranks them (computed here without `evaluate`).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rtdgan.index.errors import UserError
from rtdgan.index.images import preprocess
from rtdgan.index.pipeline import Pipeline
from rtdgan.index.runtime.onnx import OnnxGenerator
from rtdgan.training import eval_cli
from rtdgan.training.data import ProductRecord, load_split, write_split
from rtdgan.training.eval_protocol import EvalConfig
from rtdgan.training.eval_report import compare_reports
from rtdgan.training.evaluate import evaluate
from rtdgan.training.metrics import true_ranks
from tests.helpers import random_picture
from tests.service.conftest import make_artifacts, make_head, swap_red_blue

CATEGORIES = ("dress", "top")
GEN = "tiny-channel-swap"  # the generator's architecture, named as written (not in training/registry.py)


@pytest.fixture(scope="module")
def headed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(artifacts with a fused head, data, split): 6 test products of two categories (alternating), each with
    two photos: its image with red and blue swapped (PNG: lossless), then a random picture."""
    root = tmp_path_factory.mktemp("eval-head")
    rng = np.random.default_rng(3)
    data = root / "data"
    data.mkdir()
    records = []
    for i in range(6):
        product, photos = data / f"PID{i:06d}_CLEAN1_IID{3 * i:06d}.png", []
        picture = random_picture(rng, 32)
        picture.save(product)
        for j, photo in enumerate((swap_red_blue(picture), random_picture(rng, 32)), start=1):
            photos.append(data / f"PID{i:06d}_CLEAN0_IID{3 * i + j:06d}.png")
            photo.save(photos[-1])
        records.append(ProductRecord(f"{i:06d}", product, tuple(photos), CATEGORIES[i % 2]))
    write_split(root / "split.json", {"data": str(data), "seed": 0}, [], records)
    return make_head(make_artifacts(root / "artifacts")), data, root / "split.json"


def config(world: tuple[Path, Path, Path], out: Path, **kw: object) -> EvalConfig:
    artifacts, data, split = world
    return EvalConfig(artifacts=artifacts, data=data, split=split, out=out, ks=(1, 5, 10, 20, 60), batch_size=5,
                      bootstrap=200, **kw)  # type: ignore[arg-type]


def expected_head_ranks(world: tuple[Path, Path, Path]) -> np.ndarray:
    """The head's ranks computed here, without evaluate: the head's query vectors of every test photo (in
    evaluate's round-robin order) against the test products embedded through the head's catalog side."""
    pipeline = Pipeline.open(world[0], providers=["CPUExecutionProvider"])
    test = load_split(world[2]).test
    products = np.stack([preprocess(r.product_image, pipeline.size) for r in test])
    order = [(r.photos[j], i) for j in range(2) for i, r in enumerate(test)]
    photos = np.stack([preprocess(p, pipeline.size) for p, _ in order])
    features = pipeline.embed(np.concatenate([pipeline.generate(photos), photos]))
    queries = pipeline.apply_head(features, ("generated", "photo"))
    return true_ranks(queries @ pipeline.embed_catalog(products).T, np.array([i for _, i in order]))


def test_all_kinds_side_by_side_with_the_head(headed: tuple[Path, Path, Path], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    run = OnnxGenerator.__call__

    def counted(self: OnnxGenerator, batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return run(self, batch)

    monkeypatch.setattr(OnnxGenerator, "__call__", counted)
    report = evaluate(config(headed, tmp_path / "rep"))
    assert calls == [5, 5, 2]  # 12 photos in batches of 5: generated once per batch for the frozen and fused rows
    head_doc = json.loads((headed[0] / "head.json").read_text())
    assert [r["method"] for r in report["results"]] == ["generated", "photo", "head"]
    assert [r["label"] for r in report["results"]] == [GEN, "photo (no generation)", f"head fused, {GEN}"]
    frozen, photo, head = report["results"]
    assert (frozen["query"], photo["query"], head["query"]) == ("generated", "photo", "fused")
    assert frozen["head"] is None and head["head"] == report["head"] and report["head"]["mode"] == "fused"
    assert report["head"]["embedding_dim"] == head_doc["embedding_dim"]

    # The head's row is the head's space: query side against a gallery through the catalog side. The swapped
    # photos (the first of each product, the first 6 queries) are generated back into their product: rank 1.
    ranks = expected_head_ranks(headed)
    assert ranks[:6].tolist() == [1] * 6
    assert head["recall"]["1"] == pytest.approx(float((ranks <= 1).mean()))
    assert head["median_rank"] == float(np.median(ranks))
    rows = list(csv.DictReader((tmp_path / "rep" / "queries.csv").open()))
    assert [int(r["rank_head"]) for r in rows] == ranks.tolist()
    assert [r["rank_head"] for r in rows] != [r["rank_generated"] for r in rows]  # another space than the frozen one
    assert head["rmse"] == frozen["rmse"] and head["ssim"] == frozen["ssim"]  # both score the generated image

    # The frozen rows are the paper's protocol whatever the head: the same as without it.
    both = evaluate(config(headed, tmp_path / "both", query="both"))
    assert [r["recall"] for r in both["results"]] == [frozen["recall"], photo["recall"]]

    # Intervals for every K, per category R@1 and R@10, in report.json and report.md.
    for r in report["results"]:
        assert list(r["recall_ci"]) == ["1", "5", "10", "20", "60"]
        assert all(lo <= r["recall"][k] <= hi for k, (lo, hi) in r["recall_ci"].items())
        assert r["recall_ci"]["60"] == [1.0, 1.0]  # 6 products: every rank is within 60
        assert set(r["by_category"]) == set(CATEGORIES)
    assert report["test_set"]["categories"] == {"dress": {"products": 3, "queries": 6}, "top": {"products": 3, "queries": 6}}
    dress = [int(r["rank_head"]) for r in rows if r["category"] == "dress"]
    assert head["by_category"]["dress"]["1"] == pytest.approx(np.mean(np.array(dress) <= 1))
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "by the true product's category" in md and "| dress | 3 | 6 |" in md and f"head fused, {GEN}" in md
    assert report["bootstrap"] == {"unit": "product", "resamples": 200, "seed": 0, "confidence": 0.95,
                                   "interval": "percentile"}
    # samples.png: the head's query (the default), each row captioned with the true product's rank and score.
    samples = report["samples"]
    assert (samples["method"], len(samples["rows"])) == ("head", 8)
    assert [r["rank"] for r in samples["rows"]] == ranks[:8].tolist()
    assert [r["score"] for r in samples["rows"][:6]] == pytest.approx([1.0] * 6, abs=1e-5)
    assert all(r["top"][0] == r["product"] for r in samples["rows"][:6])
    grid = Image.open(tmp_path / "rep" / "samples.png")
    assert grid.size[1] > 38 + 8 * 96  # 8 rows with their captions


def test_query_head_alone_and_refused_without_a_head(headed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    report = evaluate(config(headed, tmp_path / "rep", query="head", samples=0))
    assert [r["method"] for r in report["results"]] == ["head"]
    assert not (tmp_path / "rep" / "samples.png").exists()
    plain = make_artifacts(tmp_path / "plain")
    with pytest.raises(UserError, match="--query head: .* no retrieval head") as e:
        evaluate(config((plain, *headed[1:]), tmp_path / "rep2", query="head"))
    assert "\n" not in str(e.value)
    report = evaluate(config((plain, *headed[1:]), tmp_path / "rep3"))  # all: what these artifacts answer
    assert [r["method"] for r in report["results"]] == ["generated", "photo"] and report["head"] is None


def test_cli_prints_the_kinds_and_compare_keeps_the_head_row(headed: tuple[Path, Path, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    eval_cli.add_arguments(parser)
    base = ["--artifacts", str(headed[0]), "--data", str(headed[1]), "--split", str(headed[2]), "--k", "1,10"]
    args = parser.parse_args(base + ["--out", str(tmp_path / "rep"), "--bootstrap", "50", "--seed", "3"])
    assert args.query == "all"
    assert eval_cli.run(args) == 0
    out = capsys.readouterr().out
    assert "R@1 / R@10 by category" in out and f"head fused, {GEN}" in out and "[" in out
    assert json.loads(out.strip().splitlines()[-1])["kinds"] == ["generated", "photo", "head"]
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["bootstrap"]["seed"] == 3
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--out", str(tmp_path), "--query", "fused"])
    merged = compare_reports([tmp_path / "rep"], tmp_path / "cmp")
    assert [r["method"] for r in merged["rows"]] == ["generated", "photo", "head"]
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert md.index("photo (no generation)") < md.index(f"| {GEN} |") < md.index(f"head fused, {GEN}")
