"""`rtd index build`: catalog layouts, artifacts checks, the index folder it writes, the CLI glue."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rtdgan.index.build import build_index, scan_catalog
from rtdgan.index.catalog.engines import read_manifest
from rtdgan.index.catalog.file import Catalog
from rtdgan.index.errors import UserError
from rtdgan.index.files import sha256_file
from rtdgan.index.images import preprocess
from rtdgan.index.index_cli import add_arguments_build, run_build
from rtdgan.index.runtime.onnx import OnnxEmbedder
from tests.index.conftest import TINY_DIM, TINY_SIZE, write_artifacts


def with_products_csv(lookbook: Path) -> Path:
    """The synthetic set's products.csv beside the images, plus one corrupt product image."""
    rows = ["product_id,category,colour,pattern"]
    rows += [f"{pid:06d},{'shirt' if pid % 2 else 'dress'},red,striped" for pid in range(10)]
    (lookbook / "products.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (lookbook / "PID000077_CLEAN1_IID000999.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return lookbook


def embed(artifacts: Path, image: Path) -> np.ndarray:
    return OnnxEmbedder(artifacts / "embedder.onnx")(preprocess(image, TINY_SIZE)[None])  # (1, D)


def test_build_from_lookbook_folder(artifacts: Path, lookbook: Path, tmp_path: Path) -> None:
    with_products_csv(lookbook)
    summary = build_index(artifacts, lookbook, tmp_path / "index", batch_size=4)
    assert summary["count"] == 10 and summary["dim"] == TINY_DIM and summary["size"] == TINY_SIZE
    assert len(summary["skipped"]) == 1 and summary["skipped"][0].startswith("000077:")
    assert summary["recall"] is None  # exact search needs no recall check
    manifest = read_manifest(tmp_path / "index")
    sha = sha256_file(artifacts / "embedder.onnx")
    fp32 = {"backend": "onnxruntime", "precision": "fp32"}  # what embedded the catalog (its backend and precision)
    assert manifest["embedder"] == {"name": "tiny_avgpool", "sha256": sha, "backend": fp32}
    assert (manifest["count"], manifest["dim"], manifest["kind"]) == (10, TINY_DIM, "flat")
    catalog = Catalog.open(tmp_path / "index", expect_embedder_sha256=sha)
    assert catalog.embedder_backend == fp32 and catalog.manifest()["embedder"]["backend"] == fp32  # kept on save
    product = lookbook / "PID000003_CLEAN1_IID000012.jpg"
    hit = catalog.search(embed(artifacts, product), 3)[0][0]
    assert (hit.product_id, hit.category, hit.title) == ("000003", "shirt", "red striped shirt")
    # Stored relative to the catalog root, which index.json records (the service resolves it, RTD_CATALOG first).
    assert hit.score == pytest.approx(1.0, abs=1e-5) and hit.image_path == product.name
    assert manifest["catalog_root"] == str(lookbook.resolve()) == summary["catalog_root"]


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_build_reports_recall(artifacts: Path, lookbook: Path, tmp_path: Path, kind: str) -> None:
    summary = build_index(artifacts, lookbook, tmp_path / "index", kind=kind, nprobe=3, ef_search=20)
    assert summary["recall"]["k"] == 10 and summary["recall"]["recall"] == pytest.approx(1.0)
    manifest = read_manifest(tmp_path / "index")
    assert manifest["kind"] == kind and manifest["recall"] == summary["recall"]
    assert manifest["params"]["nprobe"] == 3 and manifest["params"]["ef_search"] == 20


def test_build_from_csv_and_from_plain_folder(artifacts: Path, lookbook: Path, tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    shop.mkdir()
    for i, src in enumerate(sorted(lookbook.glob("*_CLEAN1_*"))[:4]):
        Image.open(src).save(shop / f"sku-{i}.png")
    (shop / "notes.txt").write_text("not an image")
    summary = build_index(artifacts, shop, tmp_path / "a")
    assert summary["count"] == 4 and Catalog.open(tmp_path / "a").get("sku-2").image_path == "sku-2.png"

    (tmp_path / "catalog.csv").write_text(
        "id,image,title,category\n"
        "A1,shop/sku-0.png,Blue shirt,shirt\n"
        "A2,shop/sku-1.png,,dress\n"
        "A1,shop/sku-2.png,again,shirt\n"
        "A3,shop/missing.png,gone,shirt\n", encoding="utf-8")
    summary = build_index(artifacts, tmp_path / "catalog.csv", tmp_path / "b")
    assert summary["count"] == 2 and len(summary["skipped"]) == 2
    assert any("listed again" in s for s in summary["skipped"]) and any("no such image" in s for s in summary["skipped"])
    catalog = Catalog.open(tmp_path / "b")
    assert catalog.get("A1").title == "Blue shirt" and catalog.get("A2").title == "dress"
    # CSV paths are relative to the CSV's folder; one outside it stays absolute.
    assert catalog.get("A1").image_path == "shop/sku-0.png" and catalog.catalog_root == str(tmp_path.resolve())
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.csv").write_text(f"id,image\nB1,../shop/sku-3.png\nB2,{shop / 'sku-1.png'}\n")
    build_index(artifacts, tmp_path / "sub" / "c.csv", tmp_path / "c")
    catalog = Catalog.open(tmp_path / "c")
    assert catalog.catalog_root == str((tmp_path / "sub").resolve())
    assert catalog.get("B1").image_path == str((shop / "sku-3.png").resolve())
    assert catalog.get("B2").image_path == str((shop / "sku-1.png").resolve())


def test_scan_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        scan_catalog(tmp_path / "nowhere")
    (tmp_path / "bad.csv").write_text("sku,picture\n1,a.jpg\n")
    with pytest.raises(UserError, match="product_id"):
        scan_catalog(tmp_path / "bad.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no catalog images"):
        scan_catalog(tmp_path / "empty")


def test_artifacts_are_checked(lookbook: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no embedder.onnx"):
        build_index(tmp_path, lookbook, tmp_path / "index")
    # No model.json: S comes from --size, or from the embedder's static input shape.
    bare = write_artifacts(tmp_path / "bare", model_json=False)
    assert build_index(bare, lookbook, tmp_path / "i1", size=TINY_SIZE)["size"] == TINY_SIZE
    assert build_index(bare, lookbook, tmp_path / "i2")["embedder"]["name"] == "unknown"
    with pytest.raises(UserError, match="takes 32 px"):
        build_index(bare, lookbook, tmp_path / "i3", size=64)
    described = write_artifacts(tmp_path / "described")
    with pytest.raises(UserError, match="contradicts"):
        build_index(described, lookbook, tmp_path / "i4", size=64)
    doc = json.loads((described / "model.json").read_text())
    doc["embedder"]["onnx_sha256"] = "0" * 64
    (described / "model.json").write_text(json.dumps(doc))
    with pytest.raises(UserError, match="sha256 differs"):
        build_index(described, lookbook, tmp_path / "i5")
    with pytest.raises(UserError, match="kind"):
        build_index(bare, lookbook, tmp_path / "i6", kind="lsh")


def test_versioned_artifacts_folder_is_followed(artifacts: Path, lookbook: Path, tmp_path: Path) -> None:
    # `rtd export`'s layout: ARTIFACTS/v-NNNNNN/ holds the files, ARTIFACTS/model.json points at it.
    out = tmp_path / "exported"
    version = write_artifacts(out / "v-000002")
    doc = json.loads((version / "model.json").read_text())
    (out / "model.json").write_text(json.dumps(doc | {"current": "v-000002"}))
    summary = build_index(out, lookbook, tmp_path / "index")
    assert summary["embedder"]["sha256"] == sha256_file(version / "embedder.onnx") and summary["count"] == 10
    (out / "model.json").write_text(json.dumps(doc | {"current": "v-000003"}))
    with pytest.raises(UserError, match="points at v-000003"):
        build_index(out, lookbook, tmp_path / "index")


def test_rebuild_replaces_the_index_in_place(artifacts: Path, lookbook: Path, tmp_path: Path) -> None:
    build_index(artifacts, lookbook, tmp_path / "index")
    for extra in sorted(lookbook.glob("*_CLEAN1_*"))[:2]:
        extra.unlink()
    build_index(artifacts, lookbook, tmp_path / "index")
    manifest = read_manifest(tmp_path / "index")
    assert manifest["generation"] == 2 and manifest["count"] == 8
    assert sorted(p.name for p in (tmp_path / "index").glob("catalog-*")) == [
        "catalog-000002.faiss", "catalog-000002.sqlite"]


def test_cli_build(artifacts: Path, lookbook: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser()
    add_arguments_build(parser)
    args = parser.parse_args(["--artifacts", str(artifacts), "--catalog", str(with_products_csv(lookbook)),
                              "--out", str(tmp_path / "index"), "--kind", "ivf", "--batch-size", "3",
                              "--nprobe", "2", "--ef-search", "50"])
    assert run_build(args) == 0
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    config_lines = [line for line in err.splitlines() if line.startswith("rtd index build: config {")]
    assert len(config_lines) == 1  # the effective config: one JSON line on stderr, not on stdout
    config = json.loads(config_lines[0].split("config ", 1)[1])
    assert config["kind"] == "ivf" and config["batch_size"] == 3 and config["size"] is None
    assert config["catalog"] == str(lookbook) and "config" not in out
    assert "indexed 10 products" in out and "1 skipped" in out and "skipped: 000077" in out
    assert "recall@10 against exact search: 1.000" in out
    params = read_manifest(tmp_path / "index")["params"]
    assert (params["nprobe"], params["ef_search"]) == (2, 50)
    with pytest.raises(SystemExit):
        parser.parse_args(["--artifacts", "a", "--catalog", "b", "--out", "c", "--kind", "lsh"])
    with pytest.raises(UserError, match="missing --catalog, --out"):
        run_build(parser.parse_args(["--artifacts", "a"]))
    assert "default: 32" in parser.format_help() and "default: auto" in parser.format_help()


def test_onnx_session_helpers(artifacts: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from onnx import TensorProto, helper, save

    from rtdgan.index.runtime.backends import CPU, default_providers, make_session
    from rtdgan.index.runtime.onnx import OnnxGenerator

    assert default_providers()[-1] == CPU  # CUDA first only where onnxruntime-gpu has it
    with caplog.at_level("INFO", logger="rtdgan.index.runtime.backends"):
        session = make_session(artifacts / "embedder.onnx", providers=[CPU], threads=1)
    assert session.get_providers() == [CPU] and "CPUExecutionProvider" in caplog.text
    with pytest.raises(UserError, match="not found"):
        make_session(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(UserError, match="cannot load"):
        make_session(tmp_path / "junk.onnx")
    with pytest.raises(UserError, match="threads"):
        make_session(artifacts / "embedder.onnx", threads=0)
    # A generator-shaped graph: photo (B, 3, 16, 16) -> product = -photo.
    graph = helper.make_graph(
        [helper.make_node("Neg", ["photo"], ["product"])], "negate",
        [helper.make_tensor_value_info("photo", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("product", TensorProto.FLOAT, ["batch", 3, 16, 16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    save(model, str(tmp_path / "generator.onnx"))
    generator = OnnxGenerator(tmp_path / "generator.onnx")
    photo = np.random.default_rng(0).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    assert generator.size == 16 and np.array_equal(generator(photo), -photo)
    with pytest.raises(ValueError, match="16x16"):
        generator(photo[:, :, :8, :8])
