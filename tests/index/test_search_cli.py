"""`rtd index search` (index/search_cli.py): `rtd index build` over a small catalog, then queries. No torch.

The artifacts are the tiny average-pool embedder of conftest.py plus a hand-written generator.onnx that
negates the photo. The embedder is odd (embed(-x) = -embed(x)), which makes the generator's presence on
the path visible: a catalog image searched with --no-generate finds itself at rank 1 with cosine 1 (the
embedding path, generator bypassed); the same image through the generator finds itself last, at cosine -1.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from rtdgan.index import index_cli, search_cli
from rtdgan.index.errors import UserError
from rtdgan.index.files import sha256_file
from rtdgan.index.pipeline import Pipeline
from tests.helpers import make_lookbook

SIZE = 32  # conftest.TINY_SIZE
CATEGORIES = ("top", "top", "skirt", "top", "skirt", "dress")


def add_negating_generator(artifacts: Path) -> Path:
    """Write generator.onnx (product = -photo) into the artifacts and name it in model.json."""
    graph = helper.make_graph(
        [helper.make_node("Neg", ["photo"], ["product"])], "negate",
        [helper.make_tensor_value_info("photo", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("product", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(artifacts / "generator.onnx"))
    doc = json.loads((artifacts / "model.json").read_text())
    doc["generator"] = {"architecture": "rtdgan", "onnx_sha256": sha256_file(artifacts / "generator.onnx")}
    (artifacts / "model.json").write_text(json.dumps(doc))
    return artifacts


@pytest.fixture
def setup(tmp_path: Path, artifacts: Path) -> tuple[Path, Path, Path]:
    """(artifacts, index folder, catalog folder): 6 products with categories, indexed by `rtd index build`."""
    catalog = make_lookbook(tmp_path / "catalog", products=6, photos=1, size=SIZE, seed=7)
    with (catalog / "products.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["product_id", "category", "colour", "pattern"])
        w.writerows([f"{i:06d}", c, "red", "plain"] for i, c in enumerate(CATEGORIES))
    add_negating_generator(artifacts)
    parser = argparse.ArgumentParser()
    index_cli.add_arguments_build(parser)
    assert index_cli.run_build(parser.parse_args(["--artifacts", str(artifacts), "--catalog", str(catalog),
                                                  "--out", str(tmp_path / "index")])) == 0
    return artifacts, tmp_path / "index", catalog


def search(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    parser = argparse.ArgumentParser()
    search_cli.add_arguments(parser)
    capsys.readouterr()
    assert search_cli.run(parser.parse_args(list(argv))) == 0
    return json.loads(capsys.readouterr().out)


def test_catalog_image_finds_itself_at_rank_1(setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture) -> None:
    artifacts, index, catalog = setup
    for image in sorted(catalog.glob("*_CLEAN1_*")):
        out = search(capsys, "--artifacts", str(artifacts), "--index", str(index), "--image", str(image), "-k", "3",
                     "--no-generate")
        assert out["generated"] is False and len(out["results"]) == 3
        top = out["results"][0]
        assert (top["rank"], top["product_id"]) == (1, image.name[3:9])
        assert top["score"] == pytest.approx(1.0, abs=1e-5)
        assert top["category"] == CATEGORIES[int(image.name[3:9])]


def test_the_generator_is_on_the_default_path(setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture) -> None:
    artifacts, index, catalog = setup
    image = sorted(catalog.glob("*_CLEAN1_*"))[2]
    out = search(capsys, "--artifacts", str(artifacts), "--index", str(index), "--image", str(image), "-k", "6")
    assert out["generated"] is True and len(out["results"]) == 6
    last = out["results"][-1]
    assert last["product_id"] == image.name[3:9] and last["score"] == pytest.approx(-1.0, abs=1e-5)


def test_category_filter(setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture) -> None:
    artifacts, index, catalog = setup
    image = sorted(catalog.glob("*_CLEAN0_*"))[0]
    out = search(capsys, "--artifacts", str(artifacts), "--index", str(index), "--image", str(image), "-k", "10",
                 "--category", "skirt")
    assert sorted(r["product_id"] for r in out["results"]) == ["000002", "000004"]


def test_mismatched_folders_are_refused(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    artifacts, index, catalog = setup
    image = next(catalog.glob("*_CLEAN1_*"))
    with pytest.raises(UserError, match="-k must be"):
        Pipeline.open(artifacts, index).search_image(image, k=0)
    (artifacts / "generator.onnx").write_bytes(b"another file")
    with pytest.raises(UserError, match="does not match model.json"):
        Pipeline.open(artifacts, index)
    add_negating_generator(artifacts)
    manifest = json.loads((index / "index.json").read_text())
    manifest["embedder"]["sha256"] = "0" * 64  # an index built with another embedder
    (index / "index.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="another embedder|not the artifacts' embedder"):
        Pipeline.open(artifacts, index)
    (artifacts / "model.json").unlink()
    with pytest.raises(UserError, match="no model.json"):
        Pipeline.open(artifacts, index)
