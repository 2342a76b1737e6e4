"""The learned retrieval head: it learns, its ONNX matches PyTorch, the feature cache is reused, and
a head is refused on artifacts whose generator or embedder it was not trained with. CPU, tiny sizes."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from rtdgan.index.errors import UserError
from rtdgan.index.parity import require_parity
from rtdgan.index.runtime.artifacts import read_artifacts
from rtdgan.index.runtime.backends import make_backend
from rtdgan.index.runtime.head import read_head
from rtdgan.models.head import HeadConfig, RetrievalHead
from rtdgan.training import head as H
from rtdgan.training import head_cli
from rtdgan.training.data import load_records, write_split
from tests.helpers import make_lookbook

SIZE, DIM = 16, 8


# ---- a tiny, torch-free artifacts folder (as tests/service/conftest.py builds one) ------------------------

def _save(model: onnx.ModelProto, path: Path) -> str:
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _generator(path: Path, swap: bool = True) -> str:
    """`photo` -> `product`: R and B swapped (or left as they are), a 1x1 Conv."""
    w = np.zeros((3, 3, 1, 1), np.float32)
    if swap:
        w[0, 2] = w[1, 1] = w[2, 0] = 1.0
    else:
        w[0, 0] = w[1, 1] = w[2, 2] = 1.0
    graph = helper.make_graph(
        [helper.make_node("Conv", ["photo", "w"], ["product"])], "g",
        [helper.make_tensor_value_info("photo", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("product", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [numpy_helper.from_array(w, "w")])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def _embedder(path: Path, seed: int = 0) -> str:
    """`image` -> 4x4 average pool -> (B, 48) @ W (48, D) -> L2 norm."""
    w = np.random.default_rng(seed).standard_normal((48, DIM)).astype(np.float32)
    cell = SIZE // 4
    nodes = [helper.make_node("AveragePool", ["image"], ["p"], kernel_shape=[cell, cell], strides=[cell, cell]),
             helper.make_node("Flatten", ["p"], ["f"], axis=1),
             helper.make_node("MatMul", ["f", "w"], ["m"]),
             helper.make_node("LpNormalization", ["m"], ["embedding"], axis=1, p=2)]
    graph = helper.make_graph(
        nodes, "e", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", DIM])],
        [numpy_helper.from_array(w, "w")])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def make_artifacts(folder: Path, swap: bool = True, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model = {"format_version": 1,
             "generator": {"architecture": "tiny", "resolution": SIZE, "onnx_sha256": _generator(folder / "generator.onnx", swap)},
             "embedder": {"backbone": "tiny", "dim": DIM, "level": 0, "onnx_sha256": _embedder(folder / "embedder.onnx", seed)},
             "preprocessing": {"size": SIZE, "letterbox": "white", "range": [-1, 1]}}
    (folder / "model.json").write_text(json.dumps(model), encoding="utf-8")
    return folder


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(artifacts, data, split.json): 12 products x 2 photos at 32 px, all in the train split."""
    data = make_lookbook(tmp_path / "data", products=12, photos=2, size=32, seed=3)
    records = load_records(data).records
    write_split(tmp_path / "split.json", {"data": str(data), "seed": 0}, records, [])
    return make_artifacts(tmp_path / "artifacts"), data, tmp_path / "split.json"


def tiny_config(artifacts: Path, data: Path, split: Path, **kw: object) -> H.FitHeadConfig:
    values = dict(artifacts=artifacts, data=data, split=split, val_fraction=0.25, temperatures=(0.1,), widths=(8,),
                  epochs=(2, 4), batch_size=8, embed_batch=5, threads=1) | kw
    return H.FitHeadConfig(**values)  # type: ignore[arg-type]


# ---- learning ----------------------------------------------------------------------------------------

def shifted_world(products: int, photos: int = 3, dim: int = 16, seed: int = 0) -> H.Features:
    """Features where each query is a product's vector seen through a fixed unknown linear map plus noise:
    the raw cosine is poor at telling products apart, a learned linear map is not."""
    rng = np.random.default_rng(seed)

    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    prods = unit(rng.standard_normal((products, dim)))
    owner = np.repeat(np.arange(products), photos)
    maps = {k: rng.standard_normal((dim, dim)) for k in ("generated", "photo")}
    noise = {"generated": 0.3, "photo": 0.6}
    feats = {k: unit(prods[owner] @ maps[k] + noise[k] * rng.standard_normal((len(owner), dim)) / np.sqrt(dim))
             for k in maps}
    return H.Features(np.array([f"P{i}" for i in range(products)]), prods, owner, feats["photo"], feats["generated"])


@pytest.mark.parametrize("mode", ["fused", "generated", "photo"])
def test_head_beats_the_frozen_features_on_held_out_products(mode: str) -> None:
    feats = shifted_world(120)
    train, held_out = feats.subset(np.arange(80)), feats.subset(np.arange(80, 120))
    cfg = HeadConfig(mode=mode, dim=16, out_dim=16)
    head, kept = H.train_head(train, cfg, H.Setting(0.1, 16, 0), (30,), lr=1e-2, weight_decay=0.0, batch_size=64,
                              seed=0, val=held_out)
    learned = kept[30][0]
    q, c = H.embed_sides(head, held_out.query(cfg.query_inputs), held_out.products)
    assert H.recall(q, held_out.owner, c) == learned  # the kept score is the returned head's
    frozen = H.frozen_recall(held_out, cfg.query_inputs)
    assert learned["1"] >= frozen["1"] + 0.2, (learned, frozen)
    assert learned["10"] > frozen["10"], (learned, frozen)


def test_info_nce_counts_every_photo_of_a_product_as_a_positive() -> None:
    catalog = torch.nn.functional.normalize(torch.eye(4)[:3], dim=1)  # 3 products
    queries = catalog[[0, 0, 1]]  # two photos of product 0, one of product 1: all perfect
    perfect = H.info_nce(queries, catalog, torch.tensor([0, 0, 1]), 0.05)
    wrong = H.info_nce(queries, catalog, torch.tensor([1, 0, 0]), 0.05)
    assert float(perfect) < 0.01 < float(wrong)


def test_validation_split_is_seeded_and_disjoint() -> None:
    feats = shifted_world(40)
    a = H.validation_split(feats, 0.15, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, H.validation_split(feats, 0.15, seed=1), strict=True))
    train, val = a
    assert len(val) == 6 and not set(train) & set(val) and len(train) + len(val) == 40
    sub = feats.subset(val)
    assert sub.products.shape == (6, 16) and len(sub.owner) == 18 and sub.owner.max() == 5


# ---- ONNX --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("hidden", [0, 12])
def test_exported_sides_match_pytorch(hidden: int) -> None:
    torch.manual_seed(0)
    head = RetrievalHead(HeadConfig(mode="fused", dim=8, out_dim=6, hidden=hidden))
    sample = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    data, parity = H.export_side(head.query, sample)
    assert parity["max_abs_error"] < 1e-5 and parity["min_cosine"] > 0.9999
    session = onnx.load_from_string(data)
    assert [i.name for i in session.graph.input] == ["features"] and [o.name for o in session.graph.output] == ["embedding"]
    other = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)  # another batch size
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"head-side-{os.getpid()}-{hidden}.onnx"
    path.write_bytes(data)
    try:
        got = H.OnnxHead(path, providers=["CPUExecutionProvider"])(other)
    finally:
        path.unlink()
    with torch.no_grad():
        expected = head.query.eval()(torch.from_numpy(other)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


# ---- the job: features through the artifacts, cache, export, refusal ---------------------------------

@pytest.mark.slow
def test_fit_head_writes_a_checked_head_and_reuses_the_feature_cache(world: tuple[Path, Path, Path],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    artifacts, data, split = world
    doc = H.fit_head(tiny_config(artifacts, data, split))
    assert {p.name for p in artifacts.iterdir()} >= {"head.json", "head_query.onnx", "head_catalog.onnx"}
    assert doc["mode"] == "fused" and doc["query"]["inputs"] == ["generated", "photo"]
    assert doc["query"]["dim"] == 2 * DIM and doc["catalog"]["dim"] == DIM and doc["embedding_dim"] == 8
    model = json.loads((artifacts / "model.json").read_text())
    assert doc["trained_with"]["generator_sha256"] == model["generator"]["onnx_sha256"]
    assert doc["trained_with"]["embedder_sha256"] == model["embedder"]["onnx_sha256"]
    assert doc["training"]["products"] == 12 and doc["validation"]["products"] == 3
    assert doc["chosen"]["epochs"] in (2, 4) and len(doc["validation"]["grid"]) == 2
    assert doc["parity"]["query"]["max_abs_error"] < 1e-4 and doc["parity"]["catalog"]["min_cosine"] > 0.9999
    assert json.loads((artifacts / "head.json").read_text()) == doc

    # The head read back through onnxruntime gives the same vectors as the features through PyTorch would.
    info = read_head(read_artifacts(artifacts))
    if importlib.util.find_spec("openvino") is not None:  # the parity gate ran on the graphs with this head
        record = require_parity(artifacts, make_backend("openvino", "fp32"))
        assert record["passed"] and record["artifacts"]["head_sha256"] == info.sha256
    query, catalog = info.sessions(providers=["CPUExecutionProvider"])
    feats, cache_file, reused = H.cached_features(artifacts, load_records(data).records, split.parent / "head-cache")
    assert reused and cache_file.is_file()
    q, c = query(feats.query(info.query_inputs)), catalog(feats.products)
    assert q.shape == (24, 8) and c.shape == (12, 8)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)

    # A rerun extracts nothing: the cache holds the features of these artifacts and this data.
    def no_extraction(*args: object, **kwargs: object) -> None:
        raise AssertionError("features extracted again")

    monkeypatch.setattr(H, "extract_features", no_extraction)
    assert H.fit_head(tiny_config(artifacts, data, split, mode="photo"))["query"]["inputs"] == ["photo"]


def test_cache_key_follows_the_generator_and_the_images(world: tuple[Path, Path, Path], tmp_path: Path) -> None:
    artifacts, data, _ = world
    records = load_records(data).records
    key = H.features_key(read_artifacts(artifacts), records)
    assert H.features_key(read_artifacts(artifacts), records[:-1]) != key
    other = make_artifacts(tmp_path / "other", swap=False)
    assert H.features_key(read_artifacts(other), records) != key
    photo = records[0].photos[0]
    os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 10**9))
    assert H.features_key(read_artifacts(artifacts), records) != key


def _replace_generator(artifacts: Path, swap: bool) -> None:
    model = json.loads((artifacts / "model.json").read_text())
    model["generator"]["onnx_sha256"] = _generator(artifacts / "generator.onnx", swap)
    (artifacts / "model.json").write_text(json.dumps(model))


@pytest.mark.slow
def test_a_head_for_another_generator_or_embedder_is_refused(world: tuple[Path, Path, Path]) -> None:
    artifacts, data, split = world
    H.fit_head(tiny_config(artifacts, data, split, epochs=(1,)))
    read_head(read_artifacts(artifacts))
    _replace_generator(artifacts, swap=False)  # re-exported with another generator: same embedder
    with pytest.raises(UserError, match="another generator"):
        read_head(read_artifacts(artifacts))
    _replace_generator(artifacts, swap=True)  # the original generator again (same bytes, same sha256)
    read_head(read_artifacts(artifacts))
    model = json.loads((artifacts / "model.json").read_text())
    model["embedder"]["onnx_sha256"] = _embedder(artifacts / "embedder.onnx", seed=5)
    (artifacts / "model.json").write_text(json.dumps(model))
    with pytest.raises(UserError, match="another embedder"):
        read_head(read_artifacts(artifacts))


@pytest.mark.slow
def test_a_photo_head_does_not_depend_on_the_generator(world: tuple[Path, Path, Path]) -> None:
    artifacts, data, split = world
    H.fit_head(tiny_config(artifacts, data, split, mode="photo", epochs=(1,)))
    _replace_generator(artifacts, swap=False)
    assert read_head(read_artifacts(artifacts)).query_inputs == ("photo",)


@pytest.mark.slow
def test_a_damaged_head_is_refused(world: tuple[Path, Path, Path]) -> None:
    artifacts, data, split = world
    with pytest.raises(UserError, match="no head.json.*rtd fit-head"):
        read_head(read_artifacts(artifacts))
    H.fit_head(tiny_config(artifacts, data, split, epochs=(1,)))
    (artifacts / "head_catalog.onnx").write_bytes((artifacts / "head_catalog.onnx").read_bytes()[:-5])
    with pytest.raises(UserError, match="does not match head.json"):
        read_head(read_artifacts(artifacts))


# ---- the command line --------------------------------------------------------------------------------

def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    head_cli.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.slow
def test_cli_flags_come_from_the_config_and_bad_input_is_one_line(world: tuple[Path, Path, Path], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    artifacts, data, split = world
    base = ["--artifacts", str(artifacts), "--data", str(data), "--split", str(split)]
    assert head_cli.run(parse(base + ["--mode", "generated", "--val-fraction", "0.25", "--temperatures", "0.1",
                                      "--widths", "4", "--epochs", "1", "--batch-size", "8", "--threads", "1"])) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["mode"] == "generated" and out["chosen"]["out_dim"] == 4
    with pytest.raises(SystemExit):
        parse(base + ["--mode", "both"])
    other = make_lookbook(tmp_path / "other", products=4, photos=1, size=32)
    bad = {
        "--val-fraction": (base + ["--val-fraction", "0"], "val-fraction"),
        "--widths": (base + ["--widths", "0"], "widths"),
        "other data": (["--artifacts", str(artifacts), "--data", str(other), "--split", str(split)], "was made from"),
        "no artifacts": (["--artifacts", str(tmp_path), "--data", str(data), "--split", str(split)], "model.json"),
        "missing flag": (["--data", str(data), "--split", str(split)], "missing --artifacts"),
    }
    for name, (argv, message) in bad.items():
        with pytest.raises(UserError, match=message):
            head_cli.run(parse(argv))
        assert name
