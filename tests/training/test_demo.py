"""`rtd demo` (training/demo*.py, training/demo_cli.py) end to end at a tiny size: synth -> train -> export ->
head -> index -> the real service."""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rtdgan.index.catalog.base import ProductMeta
from rtdgan.index.catalog.file import Catalog
from rtdgan.index.files import sha256_file
from rtdgan.index.parity import CheckConfig, run_check
from rtdgan.index.pipeline import Pipeline
from rtdgan.index.runtime.artifacts import read_artifacts
from rtdgan.index.runtime.crop import CROP_JSON, read_crop
from rtdgan.index.runtime.head import HEAD_JSON
from rtdgan.service import cli
from rtdgan.service.settings import Settings
from rtdgan.training.checkpoint import load_checkpoint
from rtdgan.training.data import load_records
from rtdgan.training.demo import run_demo
from rtdgan.training.demo_check import frozen_version
from rtdgan.training.demo_config import CROP_RECIPE, HEAD_RECIPE, TUNE_RECIPE, DemoConfig, recipe
from rtdgan.training.demo_crop import crop_onnx_sha256
from rtdgan.training.demo_head import _head_card_problem
from tests.helpers import absolute_paths
from tests.service.conftest import CHROMIUM, run_chromium, running_client, uvicorn_server

HEAD_ROWS = {"head fused", "frozen generated", "frozen photo"}
TUNED_ROWS = {"fine-tuned head fused"} | HEAD_ROWS


def tiny_config(root: Path, **kw: object) -> DemoConfig:
    """A demo that trains a tiny generator (weights None) and fits a tiny head (16 LookBook-framed + 8 street-framed
    products x 2 photos); street photos at 64 px; no person crop unless asked (crop=True fits a tiny one); the
    frozen embedder unless asked (tune=True fine-tunes a tiny one at a 32 px input)."""
    base = dict(root=root, products=12, photos_per_product=2, size=32, stages=2, width=4, epochs_fade=1,
                epochs_stab=1, epochs_extra=0, batch_sizes=(8, 8), train_products=16, workers=1, build_only=True,
                weights=None, head_weights=None, head_products=16, head_photos_per_product=2, head_street_products=8,
                head_street_size=64, street_size=64, crop=False, crop_weights=None, crop_products=16, crop_epochs=1,
                crop_input=32, tune=False, tune_weights=None, tune_input_size=32, tune_epochs=2, tune_batch=4)
    return DemoConfig(**(base | kw))  # type: ignore[arg-type]


def direct_recall(root: Path, queries_from: str = "data") -> dict[str, float]:
    """R@10 of each check row recomputed the plain way, one `pipeline.query(photos, query=kind)` per kind (the
    check records the served query's embedder output instead of embedding twice): a cross-check of check.json.
    The photos are ROOT/queries_from's, prepared as /search prepares them (decoded for a person crop)."""
    records = load_records(root / "data").records
    served = Pipeline.open(root / "artifacts", root / "index")
    frozen = Pipeline.open(root / "artifacts", head=False)
    if served.head is None:
        frozen.catalog = served.catalog
    else:
        vectors = frozen.embed_catalog(np.stack([frozen.preprocess(r.product_image) for r in records]))
        frozen.catalog = Catalog.create(vectors.shape[1], "e", frozen.artifacts.embedder_sha256)
        frozen.catalog.add([ProductMeta(r.product_id) for r in records], vectors)
    queries = load_records(root / queries_from).records
    prepared = [served.prepare(p) for r in queries for p in r.photos]
    photos = prepared if served.cropper is not None else np.stack(prepared)
    truths = [r.product_id for r in queries for _ in r.photos]
    rows = {f"frozen {kind}": frozen.query(photos, 10, query=kind).hits for kind in ("generated", "photo")}
    if served.head is not None:
        rows[f"head {served.default_query}"] = served.query(photos, 10).hits
    return {name: round(sum(t in {h.product_id for h in found} for t, found in zip(truths, hits, strict=True))
                        / len(truths), 4) for name, hits in rows.items()}


def head_doc(root: Path) -> dict | None:
    folder = read_artifacts(root / "artifacts").folder
    return json.loads((folder / HEAD_JSON).read_text()) if (folder / HEAD_JSON).is_file() else None


@pytest.mark.slow
def test_demo_builds_every_stage_then_serves_it(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "demo", crop=True)
    assert run_demo(cfg) == 0
    root = cfg.root
    for path in ("data/products.csv", "train-data/products.csv", "sheet.png", "run/checkpoints/stage_2.pt",
                 "artifacts/model.json", "index/index.json", "head-world/train-data/pairs.csv",
                 "head-world/lookbook/products.csv", "head-world/street/products.csv", "head-world/split.json",
                 "crop-world/street/boxes.csv", "crop-world/lookbook/boxes.csv", "street-data/products.csv"):
        assert (root / path).is_file(), path
    assert read_artifacts(root / "artifacts").folder.parent == root / "artifacts"  # `rtd export`'s versioned layout
    model = json.loads((root / "artifacts" / "model.json").read_text())
    assert model["embedder"]["backbone"] == "efficientnet_lite0" and model["preprocessing"]["size"] == 32
    # The shop, the generator's training world and the head's share no product: every shop photo is held out.
    # (Compared by the product images themselves: products.csv lists only category, colour and pattern, which
    # two different garments of two worlds may share.)
    def garments(folder: Path) -> set[str]:
        return {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*_CLEAN1_*")}

    shop = garments(root / "data")
    assert len(shop) == cfg.products
    assert not shop & garments(root / "train-data") and not shop & garments(root / "head-world" / "lookbook")
    assert not shop & garments(root / "head-world" / "street-products")
    # The head learns from both framings (ids prefixed by world); the street check photographs the shop's products.
    ids = {r.product_id[0] for r in load_records(root / "head-world" / "train-data").records}
    assert ids == {"l", "s"}
    assert ([r.product_id for r in load_records(root / "street-data").records]
            == [r.product_id for r in load_records(root / "data").records])
    # The person crop, fitted from its (tiny) recipe, is in the artifacts; the head was fitted on cropped photos.
    crop = read_crop(read_artifacts(root / "artifacts"))
    assert crop.doc["demo"] == {"fitted": recipe(cfg, CROP_RECIPE)} and crop.input_size == 32
    samples = sorted((root / "samples").iterdir())
    assert len(samples) == 12 and all("_CLEAN0_" in p.name for p in samples)  # one street photo per product

    # Full resolution with a fused head fitted from the (tiny) recipe: no committed head file here.
    assert model["embedder"]["level"] == 0
    head = head_doc(root)
    assert head is not None and head["mode"] == "fused" and head["trained_with"]["embed_level"] == 0
    assert head["demo"] == {"fitted": recipe(cfg, HEAD_RECIPE), "generator_weights_sha256": None,
                            "crop": crop.doc["onnx_sha256"]}
    assert crop_onnx_sha256(root / "artifacts") == crop.doc["onnx_sha256"]
    index = json.loads((root / "index" / "index.json").read_text())
    assert index["head"]["mode"] == "fused"  # the catalog went through the head's catalog side
    check = json.loads((root / "check.json").read_text())
    assert check["queries"] == 24 and check["catalog"] == 12 and check["embed_level"] == 0
    assert set(check["recall"]) == HEAD_ROWS and check["served"] == "head fused" and check["head"]["mode"] == "fused"
    assert check["hit_rate"] == check["recall"]["head fused"]["10"]
    assert check["photo_query_hit_rate"] == check["recall"]["frozen photo"]["10"]
    assert check["chance"] == 10 / 12 and check["chance_recall"]["1"] == 1 / 12
    for row in check["recall"].values():
        assert 0.0 <= row["1"] <= row["5"] <= row["10"] <= 1.0
    assert {name: row["10"] for name, row in check["recall"].items()} == direct_recall(root)
    assert check["crop"] == crop.describe()
    street = check["street"]  # street-framed photos of the same products, through the same path
    assert street["queries"] == 24 and street["catalog"] == 12 and street["photos"] == {"framing": "street", "size": 64}
    assert set(street["recall"]) == HEAD_ROWS and street["crop"] == crop.describe()
    assert {name: row["10"] for name, row in street["recall"].items()} == direct_recall(root, "street-data")

    # A second run finds everything built and does nothing but (here) return.
    folder = read_artifacts(root / "artifacts").folder
    stamps = [(root / "artifacts" / "model.json").stat().st_mtime_ns, (folder / HEAD_JSON).stat().st_mtime_ns,
              (folder / CROP_JSON).stat().st_mtime_ns]
    start = time.perf_counter()
    assert run_demo(cfg) == 0
    assert time.perf_counter() - start < 10
    assert stamps == [(root / "artifacts" / "model.json").stat().st_mtime_ns, (folder / HEAD_JSON).stat().st_mtime_ns,
                      (folder / CROP_JSON).stat().st_mtime_ns]

    # Where things came from, recorded so that it means something on another machine: paths relative to the
    # artifacts (the shop's photos, the generator's world and run beside them) and the world's recipe, never an
    # absolute path of this one; so `rtd check-backend` finds the shop's photos with no --photos.
    generator = model["generator"]
    assert (generator["data"], generator["run"], model["parity_photos"]) == ("../train-data", "../run", "../data")
    assert generator["data_world"] == {"products": 16, "photos_per_product": 2, "size": 32, "seed": cfg.train_seed,
                                       "framing": "lookbook"}
    for doc in (model, json.loads((folder / CROP_JSON).read_text()), head_doc(root)):
        assert absolute_paths(doc) == []
    pytest.importorskip("openvino", reason="check-backend measures a backend besides the reference")
    docs = run_check(CheckConfig(artifacts=root / "artifacts", backend="openvino", precision="fp32", limit=8))
    assert [d["passed"] for d in docs] == [True] and docs[0]["inputs"]["photos_from"] == "../data"

    # The service runs on what the demo built, with the head: a held-out photo gets products back, the ones the
    # pipeline's fused query finds.
    settings = Settings(artifacts=root / "artifacts", index=root / "index", demo_samples=root / "samples")
    with running_client(settings) as client:
        ready = client.get("/health/ready").json()
        assert ready["query"] == "fused" and ready["head"]["mode"] == "fused", ready
        assert ready["crop"] == crop.describe(), ready
        photo = samples[0].read_bytes()
        r = client.post("/search", files={"image": ("p.jpg", photo, "image/jpeg")}, data={"k": "5"})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert len(results) == 5 and all(h["product_id"] for h in results)
        expected = Pipeline.open(root / "artifacts", root / "index").search_image(photo, 5)
        assert [h["product_id"] for h in results] == [h.product_id for h in expected]
        g = client.post("/generate", files={"image": ("p.jpg", photo, "image/jpeg")})
        assert g.status_code == 200 and Image.open(io.BytesIO(g.content)).size == (32, 32)
    if CHROMIUM.exists():  # the demo page searches with one of its samples through the head (test_demo_page.py)
        with uvicorn_server(settings) as base:
            dom = run_chromium(["--dump-dom", f"{base}/?sample=0"], tmp_path / "profile")
        assert dom.returncode == 0 and 'data-state="done"' in dom.stdout, dom.stdout[-3000:]
        assert len(re.findall(r'<li class="result"><img src="products/', dom.stdout)) == 10

    # Another comparison scale: the artifacts are exported again, and the index and the check follow them; the
    # head is fitted at level 0, so at level 2 the demo serves the frozen embedder.
    assert run_demo(replace(cfg, embed_level=2)) == 0
    model = json.loads((root / "artifacts" / "model.json").read_text())
    index = json.loads((root / "index" / "index.json").read_text())
    assert model["embedder"]["level"] == 2 and index["embedder"]["sha256"] == model["embedder"]["onnx_sha256"]
    assert head_doc(root) is None and index["head"] is None
    check = json.loads((root / "check.json").read_text())
    assert check["embed_level"] == 2 and check["head"] is None and check["served"] == "frozen generated"
    assert set(check["recall"]) == {"frozen generated", "frozen photo"}
    assert check["hit_rate"] == check["recall"]["frozen generated"]["10"]
    assert {name: row["10"] for name, row in check["recall"].items()} == direct_recall(root)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_demo_serves_a_fine_tuned_embedder_and_checks_it_against_the_frozen_one(tmp_path: Path) -> None:
    """--retrain-tune fits the (tiny) recipe and writes weights and card; the artifacts' current version is the
    fine-tuned embedder with its head, the head on the frozen embedder the version before; the check measures
    both; a later run keeps it; --no-tune exports the frozen embedder again."""
    weights = tmp_path / "pretrained" / "t.pt"  # with a committed (tiny) generator: the card names its weights
    cfg = tiny_config(tmp_path / "demo", tune=True, tune_weights=weights, weights=tmp_path / "pretrained" / "g.pt",
                      retrain=True)
    assert run_demo(cfg) == 0
    root = cfg.root
    art = read_artifacts(root / "artifacts")
    tuned = art.model["embedder"]["tuned"]
    assert tuned["blocks"] == cfg.tune_blocks and art.model["embedder"]["input_size"] == 32
    card = json.loads(weights.with_suffix(".json").read_text())
    assert card["sha256"] == sha256_file(weights) and card["recipe"] == recipe(cfg, TUNE_RECIPE)
    assert tuned["demo"] == {"committed_sha256": card["sha256"], "crop": None}
    assert weights.stat().st_size < 20e6 and card["check"]["served"] == "fine-tuned head fused"
    frozen = frozen_version(root / "artifacts")
    assert frozen is not None and (frozen / HEAD_JSON).is_file() and frozen != art.folder
    index = json.loads((root / "index" / "index.json").read_text())
    assert index["embedder"]["sha256"] == art.embedder_sha256
    check = json.loads((root / "check.json").read_text())
    assert check["served"] == "fine-tuned head fused" and set(check["recall"]) == TUNED_ROWS, check
    assert set(check["street"]["recall"]) == TUNED_ROWS and check["tuned"] == cfg.tune_blocks

    # A second run keeps the published version (its source is the written weights) and fits nothing.
    stamp = (root / "artifacts" / "model.json").stat().st_mtime_ns
    start = time.perf_counter()
    assert run_demo(replace(cfg, retrain=False)) == 0
    assert time.perf_counter() - start < 15 and (root / "artifacts" / "model.json").stat().st_mtime_ns == stamp

    # --no-tune: the frozen embedder again, with the head fitted for it.
    assert run_demo(replace(cfg, tune=False, retrain=False)) == 0
    art = read_artifacts(root / "artifacts")
    assert "tuned" not in art.model["embedder"] and (art.folder / HEAD_JSON).is_file()
    assert json.loads((root / "check.json").read_text())["served"] == "head fused"


@pytest.mark.slow
@pytest.mark.timeout(600)  # four tiny demos: about 2 minutes on 2 quiet cores
def test_retrain_writes_weights_that_a_fresh_demo_uses_without_training(tmp_path: Path) -> None:
    weights, head = tmp_path / "pretrained" / "g.pt", tmp_path / "pretrained" / "h.pt"
    first = tiny_config(tmp_path / "a", weights=weights, head_weights=head, retrain=True)
    assert run_demo(first) == 0
    card = json.loads(weights.with_suffix(".json").read_text())
    assert card["recipe"]["width"] == 4 and card["check"]["catalog"] == 12 and weights.stat().st_size < 15e6
    # A new generator needs a new head: --retrain refits it too and writes its card (the generator it is for).
    head_card = json.loads(head.with_suffix(".json").read_text())
    assert head_card["sha256"] == sha256_file(head) and head.stat().st_size < 5e6
    assert head_card["generator_weights_sha256"] == card["sha256"] == sha256_file(weights)
    assert head_card["embedder"]["backbone"] == "efficientnet_lite0" and head_card["embedder"]["level"] == 0
    assert head_card["recipe"] == recipe(first, HEAD_RECIPE) and head_card["head"]["mode"] == "fused"
    assert head_card["reproduce"] == "rtd demo --build-only --retrain-head"
    assert 0.0 <= head_card["validation"]["recall"]["10"] <= 1.0 and head_card["check"]["served"] == "head fused"

    # A fresh demo with both files trains and fits nothing: no training worlds, no run; the same generator graph,
    # the committed head exported into it, and the same check.
    second = tiny_config(tmp_path / "b", weights=weights, head_weights=head)
    assert run_demo(second) == 0
    for name in ("train-data", "run", "head-world"):
        assert not (second.root / name).exists(), name
    a, b = (json.loads((c.root / "artifacts" / "model.json").read_text()) for c in (first, second))
    assert a["generator"]["onnx_sha256"] == b["generator"]["onnx_sha256"]
    doc = head_doc(second.root)
    assert doc is not None and doc["demo"] == {"committed_sha256": head_card["sha256"], "crop": None}
    assert doc["trained_with"]["generator_weights_sha256"] == card["sha256"]
    check = json.loads((second.root / "check.json").read_text())
    assert check["hit_rate"] == card["check"]["hit_rate"] and check["recall"] == head_card["check"]["recall"]

    # Weights from another recipe are not used: the demo trains instead of serving a mismatched model, and the
    # committed head's card does not match that generator, so the demo fits its own head (and keeps the file).
    third = tiny_config(tmp_path / "c", weights=weights, head_weights=head, width=8)
    assert run_demo(third) == 0
    assert (third.root / "run" / "checkpoints" / "stage_2.pt").is_file()
    assert (third.root / "head-world" / "split.json").is_file()
    doc = head_doc(third.root)
    assert doc is not None and doc["demo"] == {"fitted": recipe(third, HEAD_RECIPE), "generator_weights_sha256": None,
                                               "crop": None}
    assert sha256_file(head) == head_card["sha256"]

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


def test_a_head_card_is_used_only_for_its_generator_embedder_level_and_recipe(tmp_path: Path) -> None:
    head = tmp_path / "h.pt"
    head.write_bytes(b"weights")
    cfg = tiny_config(tmp_path / "demo", head_weights=head)
    model = {"embedder": {"backbone": "efficientnet_lite0", "level": 0, "weights_sha256": "e" * 64}}
    card = {"sha256": sha256_file(head), "recipe": recipe(cfg, HEAD_RECIPE), "generator_weights_sha256": "g" * 64,
            "embedder": {"backbone": "efficientnet_lite0", "level": 0, "weights_sha256": "e" * 64}}

    def problem(**changes: object) -> str | None:
        head.with_suffix(".json").write_text(json.dumps(card | changes))
        return _head_card_problem(cfg, "g" * 64, model)

    assert problem() is None
    assert "another generator" in str(problem(generator_weights_sha256="x" * 64))
    assert "another generator" in str(_head_card_problem(cfg, None, model))  # the demo trained its own generator
    assert "does not match its card" in str(problem(sha256="0" * 64))
    assert "another recipe" in str(problem(recipe=recipe(replace(cfg, head_seed=7), HEAD_RECIPE)))
    assert "another embedder" in str(problem(embedder={"backbone": "efficientnet_lite0", "level": 2}))
    assert "another embedder" in str(problem(embedder={"backbone": "densenet121", "level": 0}))
    assert _head_card_problem(replace(cfg, head_weights=tmp_path / "none.pt"), "g" * 64, model) == "absent"
    # A head fitted on photos cut by a person crop serves that crop, or none (whole photos); not another crop.
    head.with_suffix(".json").write_text(json.dumps(card))  # no crop recorded (whole photos), one in use
    assert "another person crop" in str(_head_card_problem(cfg, "g" * 64, model, "c" * 64))
    head.with_suffix(".json").write_text(json.dumps(card | {"crop_onnx_sha256": "c" * 64}))
    assert _head_card_problem(cfg, "g" * 64, model, "c" * 64) is None
    assert _head_card_problem(cfg, "g" * 64, model, None) is None
    assert "another person crop" in str(_head_card_problem(cfg, "g" * 64, model, "d" * 64))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_committed_demo_finds_most_held_out_products(tmp_path: Path) -> None:
    """`make demo`'s first run as shipped: the committed generator, person crop, head and fine-tuned embedder,
    the real 300-product shop, nothing trained or fitted.

    /search's path (ONNX generator -> the fine-tuned ONNX embedder -> its fused head -> FAISS) must put the true
    product of a held-out photo first for most photos and in the top 10 for nearly all (LookBook framing), more
    often than the head on the frozen embedder (the version before it, measured beside it), far above the frozen
    embedder's generated-image and photo queries and chance; the figures are the cards' own."""
    cfg = DemoConfig(root=tmp_path / "demo", build_only=True)
    for weights in (cfg.weights, cfg.head_weights, cfg.crop_weights, cfg.tune_weights):
        assert weights is not None and weights.is_file()
    assert cfg.weights.stat().st_size < 15e6 and cfg.head_weights.stat().st_size < 5e6  # type: ignore[union-attr]
    assert cfg.tune_weights.stat().st_size < 20e6  # type: ignore[union-attr]
    assert run_demo(cfg) == 0
    for name in ("run", "train-data", "head-world", "crop-world"):  # nothing was trained or fitted
        assert not (cfg.root / name).exists(), name
    check = json.loads((cfg.root / "check.json").read_text())
    assert check["catalog"] == 300 and check["queries"] == 1200 and check["embed_level"] == 0, check
    assert check["served"] == "fine-tuned head fused" and set(check["recall"]) == TUNED_ROWS, check
    tuned, fused, generated, photo = (check["recall"][name] for name in
                                      ("fine-tuned head fused", "head fused", "frozen generated", "frozen photo"))
    assert check["hit_rate"] == tuned["10"] >= 0.95 and tuned["1"] >= 0.6, check
    assert tuned["1"] > fused["1"] and tuned["10"] >= fused["10"], check
    assert fused["10"] > 1.5 * generated["10"] and generated["10"] > photo["10"] > check["chance"], check
    head_card = json.loads(cfg.head_weights.with_suffix(".json").read_text())  # type: ignore[union-attr]
    tune_card = json.loads(cfg.tune_weights.with_suffix(".json").read_text())  # type: ignore[union-attr]
    for card in (head_card, tune_card):
        assert card["generator_weights_sha256"] == sha256_file(cfg.weights)  # type: ignore[arg-type]
    # The cards' figures are what we get here: the head's for the frozen embedder, the tune card's for all rows.
    assert abs(head_card["check"]["recall"]["head fused"]["10"] - fused["10"]) < 0.02, (head_card["check"], check)
    for name, row in check["recall"].items():
        assert abs(tune_card["check"]["recall"][name]["10"] - row["10"]) < 0.02, (name, tune_card["check"], check)
    # Street-framed photos of the same products (256 px, the person anywhere): through the person crop, the
    # fine-tuned fused query finds the product in the top 10 for most, more often than the frozen embedder's head.
    street = check["street"]
    assert street["queries"] == 1200 and street["crop"] is not None and street["served"] == "fine-tuned head fused"
    tuned = street["recall"]["fine-tuned head fused"]
    assert tuned["10"] >= 0.7 and tuned["10"] > street["recall"]["head fused"]["10"], street
    assert tuned["10"] > 3 * street["recall"]["frozen generated"]["10"], street
    assert abs(tune_card["check"]["street"]["recall"]["fine-tuned head fused"]["10"] - tuned["10"]) < 0.02, street


def test_an_embed_level_too_coarse_stops_before_anything_is_built(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--root", str(tmp_path / "demo"), "--build-only", "--embed-level", "4"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "rtd demo: error: embed level 4 does not fit 64 px images: each level halves the side and at least 8 px "
        "must remain (0 to 3)")
    assert not (tmp_path / "demo").exists()


def test_retrain_head_needs_the_heads_level(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["demo", "--root", str(tmp_path / "demo"), "--build-only", "--retrain-head"]
    assert cli.main([*args, "--embed-level", "2"]) == cli.EXIT_USAGE
    assert "--retrain-head fits the head at embed level 0" in capsys.readouterr().err
    assert cli.main([*args, "--no-head"]) == cli.EXIT_USAGE
    assert "--retrain-head and --no-head" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
