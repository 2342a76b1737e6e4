"""`rtd demo` (training/demo.py, training/demo_cli.py) end to end at a tiny size: synth -> train -> export ->
index -> the real service."""

from __future__ import annotations

import io
import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from index.artifacts import read_artifacts
from service import cli
from service.settings import Settings
from tests.service.conftest import running_client
from training.checkpoint import load_checkpoint
from training.demo import DemoConfig, run_demo


def tiny_config(root: Path, **kw: object) -> DemoConfig:
    base = dict(root=root, products=12, photos_per_product=2, size=32, stages=2, width=4, epochs_fade=1,
                epochs_stab=1, epochs_extra=0, batch_sizes=(8, 8), train_products=16, workers=1, build_only=True, weights=None)
    return DemoConfig(**(base | kw))  # type: ignore[arg-type]


def test_demo_builds_every_stage_then_serves_it(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "demo")
    assert run_demo(cfg) == 0
    root = cfg.root
    for path in ("data/products.csv", "train-data/products.csv", "sheet.png", "run/checkpoints/stage_2.pt",
                 "artifacts/model.json", "index/index.json"):
        assert (root / path).is_file(), path
    assert read_artifacts(root / "artifacts").folder.parent == root / "artifacts"  # `rtd export`'s versioned layout
    model = json.loads((root / "artifacts" / "model.json").read_text())
    assert model["embedder"]["backbone"] == "efficientnet_lite0" and model["preprocessing"]["size"] == 32
    # The shop and the training world share no product: every shop photo is held out.
    shop = (root / "data" / "products.csv").read_text().splitlines()[1:]
    world = (root / "train-data" / "products.csv").read_text().splitlines()[1:]
    assert not set(shop) & set(world)
    samples = sorted((root / "samples").iterdir())
    assert len(samples) == 12 and all("_CLEAN0_" in p.name for p in samples)  # one street photo per product
    check = json.loads((root / "check.json").read_text())
    assert check["queries"] == 24 and check["catalog"] == 12 and 0.0 <= check["hit_rate"] <= 1.0

    # A second run finds everything built and does nothing but (here) return.
    stamp = (root / "artifacts" / "model.json").stat().st_mtime_ns
    start = time.perf_counter()
    assert run_demo(cfg) == 0
    assert time.perf_counter() - start < 10
    assert (root / "artifacts" / "model.json").stat().st_mtime_ns == stamp

    # Another comparison scale: the artifacts are exported again, and the index and the check follow them.
    assert model["embedder"]["level"] == 2 and check["embed_level"] == 2  # DemoConfig's, 8 px at this size
    assert run_demo(replace(cfg, embed_level=0)) == 0
    model = json.loads((root / "artifacts" / "model.json").read_text())
    index = json.loads((root / "index" / "index.json").read_text())
    assert model["embedder"]["level"] == 0 and index["embedder"]["sha256"] == model["embedder"]["onnx_sha256"]
    assert json.loads((root / "check.json").read_text())["embed_level"] == 0

    # The service runs on what the demo built: a held-out photo gets products back.
    settings = Settings(artifacts=root / "artifacts", index=root / "index", demo_samples=root / "samples")
    with running_client(settings) as client:
        photo = samples[0].read_bytes()
        r = client.post("/search", files={"image": ("p.jpg", photo, "image/jpeg")}, data={"k": "5"})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert len(results) == 5 and all(h["product_id"] for h in results)
        g = client.post("/generate", files={"image": ("p.jpg", photo, "image/jpeg")})
        assert g.status_code == 200 and Image.open(io.BytesIO(g.content)).size == (32, 32)


def test_retrain_writes_weights_that_a_fresh_demo_uses_without_training(tmp_path: Path) -> None:
    weights = tmp_path / "pretrained" / "g.pt"
    first = tiny_config(tmp_path / "a", weights=weights, retrain=True)
    assert run_demo(first) == 0
    card = json.loads(weights.with_suffix(".json").read_text())
    assert card["recipe"]["width"] == 4 and card["check"]["catalog"] == 12 and weights.stat().st_size < 15e6

    # A fresh demo with the weights file trains nothing: no training world, no run; same generator graph.
    second = tiny_config(tmp_path / "b", weights=weights)
    assert run_demo(second) == 0
    assert not (second.root / "train-data").exists() and not (second.root / "run").exists()
    a, b = (json.loads((c.root / "artifacts" / "model.json").read_text()) for c in (first, second))
    assert a["generator"]["onnx_sha256"] == b["generator"]["onnx_sha256"]
    assert json.loads((second.root / "check.json").read_text())["hit_rate"] == card["check"]["hit_rate"]

    # Weights from another recipe are not used: the demo trains instead of serving a mismatched model.
    third = tiny_config(tmp_path / "c", weights=weights, width=8)
    assert run_demo(third) == 0
    assert (third.root / "run" / "checkpoints" / "stage_2.pt").is_file()

    # More extra epochs in the recipe continue that finished run rather than starting again (16 items at
    # batch 8 with 2 photos each: 4 steps per epoch; 2 stages of 1 + 1 epochs = 16 steps, then 4 more).
    assert load_checkpoint(third.root / "run" / "checkpoints" / "stage_2.pt")["step"] == 16
    fourth = tiny_config(tmp_path / "c", weights=tmp_path / "pretrained" / "g2.pt", width=8, epochs_extra=1,
                         retrain=True)
    assert run_demo(fourth) == 0
    assert load_checkpoint(third.root / "run" / "checkpoints" / "stage_2.pt")["step"] == 20
    steps = [json.loads(line)["step"] for line in (third.root / "run" / "stats.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 20  # one run, continued: no step trained twice
    assert json.loads(fourth.weights.with_suffix(".json").read_text())["recipe"]["epochs_extra"] == 1


def test_the_committed_generator_finds_most_held_out_products(tmp_path: Path) -> None:
    """`make demo`'s first run as shipped: the committed weights, the real 300-product shop, no training.

    /search's path (ONNX generator -> ONNX embedder -> FAISS) must put the true product of a held-out
    street photo in the top 10 for at least half of the photos (the issue's bar), far above chance
    (3.3 %) and the photo itself as the query. The committed generator, compared at the demo's embed
    level 2, measures 65 % (photo: 7 %); at the paper's full resolution (level 0) 39 % (photo: 15 %)."""
    cfg = DemoConfig(root=tmp_path / "demo", build_only=True)
    assert cfg.weights is not None and cfg.weights.is_file() and cfg.weights.stat().st_size < 15e6
    assert run_demo(cfg) == 0
    assert not (cfg.root / "run").exists() and not (cfg.root / "train-data").exists()  # nothing was trained
    check = json.loads((cfg.root / "check.json").read_text())
    assert check["catalog"] == 300 and check["queries"] == 1200
    assert check["embed_level"] == 2 and check["hit_rate"] >= 0.5, check
    assert check["hit_rate"] > 4 * check["photo_query_hit_rate"], check
    card = json.loads(cfg.weights.with_suffix(".json").read_text())
    assert abs(card["check"]["hit_rate"] - check["hit_rate"]) < 0.02  # the card's figure is what we get here


def test_an_embed_level_too_coarse_stops_before_anything_is_built(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--root", str(tmp_path / "demo"), "--build-only", "--embed-level", "4"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "rtd demo: error: embed level 4 does not fit 64 px images: each level halves the side and at least 8 px "
        "must remain (0 to 3)")
    assert not (tmp_path / "demo").exists()
